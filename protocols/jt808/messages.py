"""Message records and the body codecs of the pure-Python reference.

Every message is an immutable record. Records are ``NamedTuple`` classes rather
than frozen dataclasses: the compiled fast path has to build two or three of
them per frame inside a ~500 ns budget, and a tuple subclass can be allocated
and filled from C in one step (a frozen dataclass pays a Python ``__init__``
and an ``object.__setattr__`` per field). Both implementations build the same
classes, so their results compare equal with ``==``.

Bodies are read by ``pull_*`` functions and written by ``push_*`` functions
(the pairs of aioquic's ``packet.py``), collected in ``BODY_DECODERS`` and
``BODY_ENCODERS`` by message id. A body decoder gets the unescaped body bytes
and the header layout (2013 or 2019); it raises :class:`TruncatedError` when
fixed fields are missing and never reads past the end. Text is GBK and decodes
with replacement characters, never raising. Ids without a decoder keep their
body as ``bytes``.

Field notes that apply throughout: multi-byte integers are big-endian
(JT/T 808-2013 §1.2); ``BYTE[n]`` strings are NUL-padded on the right, but some
devices pad on the left with ASCII '0', which is kept as sent; times are
``BCD[6]`` YYMMDDhhmmss on the device's clock (GMT+8 by the standard).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from . import ids
from .errors import Jt808LocalError, TruncatedError

# ---------------------------------------------------------------------------
# header and message


class Header(NamedTuple):
    """The readable part of a frame; carried by errors so that a reply can still be addressed."""

    msg_id: int
    attr: int  # body attributes: bits 0-9 length, 10-12 encryption, 13 subpackage, 14 version flag
    version: int  # header layout: 2013 (also 2011) or 2019
    proto_version: int  # the 2019 protocol-version byte; 0 for 2013
    phone: str  # BCD digits exactly as sent (hex of the bytes, leading zeros kept)
    serial: int
    pkg_total: int  # 0 when not subpackaged
    pkg_index: int


# Message.faults bits: what a lenient decode let through.
FAULT_CHECKSUM = 1
FAULT_LENGTH = 2
FAULT_ESCAPE = 4


class Message(NamedTuple):
    """One decoded frame.

    ``body`` is a record of this module for the ids in ``BODY_DECODERS``;
    ``bytes`` for other ids, for encrypted bodies (attr bits 10-12 are reported,
    not decrypted) and for the packets of a subpackaged message before
    reassembly. ``faults`` is 0 unless a lenient profile let a fault through.
    """

    msg_id: int
    attr: int
    version: int
    proto_version: int
    phone: str
    serial: int
    pkg_total: int
    pkg_index: int
    faults: int
    body: Any

    @property
    def header(self) -> Header:
        return Header(*self[:8])

    @property
    def checksum_ok(self) -> bool:
        return not self.faults & FAULT_CHECKSUM

    @property
    def length_ok(self) -> bool:
        return not self.faults & FAULT_LENGTH

    @property
    def escape_ok(self) -> bool:
        return not self.faults & FAULT_ESCAPE

    @property
    def encrypt(self) -> int:
        return self.attr >> 10 & 7

    @property
    def version_flag(self) -> bool:
        return bool(self.attr & 0x4000)

    @property
    def body_len(self) -> int:
        return self.attr & 0x3FF

    @property
    def subpackaged(self) -> bool:
        return self.pkg_total != 0 or bool(self.attr & 0x2000)

    @property
    def name(self) -> str:
        return ids.msg_name(self.msg_id)


# ---------------------------------------------------------------------------
# records


class Empty(NamedTuple):
    """A body the standard leaves empty (0x0002, 0x0003, 0x8104, 0x8201); vendor bytes are kept."""

    extra: bytes = b""


EMPTY = Empty(b"")


class GeneralResponse(NamedTuple):
    """0x0001 (terminal) and 0x8001 (platform) general response."""

    reply_serial: int
    reply_id: int
    result: int


class Register(NamedTuple):
    """0x0100. ``layout`` is 2011, 2013 or 2019, chosen by header version and body length."""

    province: int
    city: int
    maker: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str
    layout: int


class RegisterResponse(NamedTuple):
    """0x8100. ``auth_code`` is None when the result is not success (no code is sent)."""

    reply_serial: int
    result: int
    auth_code: str | None


class Authenticate(NamedTuple):
    """0x0102. 2013: the whole body is the code; 2019 adds IMEI and software version."""

    auth_code: str
    imei: str | None = None
    sw_version: str | None = None


class QueryParamsResponse(NamedTuple):
    """0x0104: ``params`` are (DWORD id, raw value) in wire order; ``complete`` False if cut short."""

    reply_serial: int
    count: int
    params: tuple[tuple[int, bytes], ...]
    complete: bool


class Location(NamedTuple):
    """A 0x0200 location report body (also inside 0x0201, 0x0704 and 0x0801).

    ``lat``/``lon`` are signed degrees (status bit 2 south, bit 3 west);
    ``speed_kmh`` the WORD in 1/10 km/h; ``altitude`` metres (unsigned WORD, as
    the spec says). ``device_time`` is the BCD time read as seconds since
    1970-01-01 on the *device's* clock, with no zone applied (None when the BCD
    is not a valid date); :meth:`utc` applies the zone.

    The additional items are two parallel sequences in wire order, duplicates
    kept: ``item_ids`` (a ``bytes``, one id per byte) and ``item_values``.
    Standard items of the right length decode to ints (tuples for the
    composite 0x11-0x13, bytes for 0x05 tire pressures); anything else stays
    raw ``bytes``. Two flat sequences instead of a tuple of pairs save an
    allocation per item on the hot path; :attr:`items` gives the pairs and
    :meth:`item` looks one up. ``items_ok`` is False when the item list did not
    end exactly at the body's end (the partial last item is kept raw).
    """

    alarm: int
    status: int
    lat: float
    lon: float
    altitude: int
    speed_kmh: float
    direction: int
    device_time: int | None
    item_ids: bytes
    item_values: tuple[Any, ...]
    items_ok: bool

    def utc(self, zone_offset_s: int = 8 * 3600) -> int | None:
        """UTC epoch seconds given the device clock's offset from UTC (GMT+8 by the standard)."""
        return None if self.device_time is None else self.device_time - zone_offset_s

    @property
    def items(self) -> tuple[tuple[int, Any], ...]:
        """The items as (id, value) pairs in wire order."""
        return tuple(zip(self.item_ids, self.item_values))

    def item(self, item_id: int, default: Any = None) -> Any:
        """The value of the first item with this id."""
        k = self.item_ids.find(item_id)
        return default if k < 0 else self.item_values[k]

    @property
    def positioned(self) -> bool:
        return bool(self.status & 2)


class LocationQueryResponse(NamedTuple):
    """0x0201: the answer to 0x8201, reply serial then a location."""

    reply_serial: int
    location: Location


class LocationBatch(NamedTuple):
    """0x0704: batch_type 0 normal, 1 blind-area backfill. ``truncated`` when a
    declared position runs past the body (it is dropped) or fewer positions than
    ``count`` are present."""

    batch_type: int
    count: int
    positions: tuple[Location, ...]
    truncated: bool


class TemporaryTracking(NamedTuple):
    """0x8202: interval 0 stops tracking, and the validity field is then omitted (None)."""

    interval_s: int
    validity_s: int | None


class AlarmConfirm(NamedTuple):
    """0x8203: alarm serial (0 = all of that type) and the mask of confirmed alarm bits."""

    alarm_serial: int
    alarm_type: int


class Text(NamedTuple):
    """0x8300: flag bits 0 urgent, 2 display, 3 TTS, 4 ad screen, 5 CAN code; text type is 2019 only."""

    flag: int
    text_type: int | None
    text: str


class CallBack(NamedTuple):
    """0x8400: flag 0 normal call, 1 listen (one-way monitor of the cabin)."""

    flag: int
    phone: str


class MediaEvent(NamedTuple):
    """0x0800."""

    media_id: int
    media_type: int  # 0 image, 1 audio, 2 video
    media_format: int  # 0 JPEG, 1 TIF, 2 MP3, 3 WAV, 4 WMV
    event_code: int  # 0 platform command, 1 timer, 2 robbery, 3 collision/rollover, ...
    channel: int


class MediaData(NamedTuple):
    """0x0801: the 0x0800 fields, the location block (absent in 2011: None), then the data."""

    media_id: int
    media_type: int
    media_format: int
    event_code: int
    channel: int
    location: Location | None
    data: bytes


class MediaAck(NamedTuple):
    """0x8800: empty ``packet_ids`` means everything was received."""

    media_id: int
    packet_ids: tuple[int, ...]


class TakePhoto(NamedTuple):
    """0x8801."""

    channel: int
    command: int
    interval: int
    save_flag: int
    resolution: int
    quality: int
    brightness: int
    contrast: int
    saturation: int
    chroma: int


class ResendRequest(NamedTuple):
    """0x8003 (platform) / 0x0005 (terminal, 2019): serial of the first packet and the missing indexes."""

    first_serial: int
    packet_ids: tuple[int, ...]


class Passthrough(NamedTuple):
    """0x0900 / 0x8900."""

    ptype: int
    data: bytes


class ServerTime(NamedTuple):
    """0x8004 (2019): the platform's clock as BCD time, read like Location.device_time."""

    time: int | None


# ---------------------------------------------------------------------------
# primitives

_HEX = "0123456789abcdef"


def _u16(b: bytes, i: int) -> int:
    return b[i] << 8 | b[i + 1]


def _u32(b: bytes, i: int) -> int:
    return b[i] << 24 | b[i + 1] << 16 | b[i + 2] << 8 | b[i + 3]


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise TruncatedError(f"{what}: body has {len(body)} bytes, needs {n}")


def gbk(data: bytes) -> str:
    """GBK text (JT/T 808-2013 §1.2 STRING) with replacement characters, never raising."""
    return data.decode("gbk", "replace")


def fixed_str(data: bytes) -> str:
    """A BYTE[n] field: right NUL padding stripped, ASCII, else GBK with replacement."""
    data = data.rstrip(b"\0")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return gbk(data)


_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def bcd_time(b: bytes, i: int = 0) -> int | None:
    """BCD[6] YYMMDDhhmmss at ``b[i:i+6]`` as zone-naive epoch seconds, or None if not a valid time.

    Years are 2000-2099. A device without a fix often sends RTC garbage; an
    invalid digit or date gives None rather than an error, so the rest of the
    report still decodes.
    """
    v = [0] * 6
    for k in range(6):
        x = b[i + k]
        hi, lo = x >> 4, x & 15
        if hi > 9 or lo > 9:
            return None
        v[k] = hi * 10 + lo
    year, month, day, hour, minute, second = 2000 + v[0], v[1], v[2], v[3], v[4], v[5]
    if not 1 <= month <= 12 or day < 1 or hour > 23 or minute > 59 or second > 59:
        return None
    dim = _DAYS[month - 1]
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        dim = 29
    if day > dim:
        return None
    return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second


def civil_from_epoch(t: int) -> tuple[int, int, int, int, int, int]:
    """The inverse of :func:`bcd_time`'s arithmetic: (year, month, day, hour, minute, second)."""
    days, secs = divmod(t, 86400)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (m <= 2), m, d, secs // 3600, secs // 60 % 60, secs % 60)


def push_bcd_time(t: int | None) -> bytes:
    """BCD[6] of zone-naive epoch seconds (None writes six zero bytes)."""
    if t is None:
        return bytes(6)
    y, mo, d, h, mi, s = civil_from_epoch(t)
    if not 2000 <= y <= 2099:
        raise Jt808LocalError(f"year {y} cannot be sent as BCD YY")
    return bytes(((v // 10) << 4 | v % 10) for v in (y - 2000, mo, d, h, mi, s))


def phone_bcd(phone: str | bytes, version: int) -> bytes:
    """The header's phone field: BCD[6] for 2013, BCD[10] for 2019, left-padded with zeros.

    A phone taken from a received frame (hex of the bytes as sent) comes back
    byte for byte, so replies echo what the terminal sent.
    """
    width = 10 if version == 2019 else 6
    if isinstance(phone, (bytes, bytearray, memoryview)):
        raw = bytes(phone)
        if len(raw) > width:
            raise Jt808LocalError(f"phone {raw.hex()} longer than {width} bytes")
        return raw.rjust(width, b"\0")
    if len(phone) > 2 * width:
        raise Jt808LocalError(f"phone {phone!r} longer than {2 * width} digits")
    try:
        return bytes.fromhex(phone.rjust(2 * width, "0"))
    except ValueError:
        raise Jt808LocalError(f"phone {phone!r} is not BCD/hex digits") from None


# ---------------------------------------------------------------------------
# location (0x0200) — the hot path; the compiled module has its own copy of this logic

_BASIC = struct.Struct(">IIIIHHH")

# standard additional items with a fixed length (JT/T 808-2013 table 27, 2019 additions,
# JT/T 1078 0x14-0x18); a different length means vendor use and the value stays raw
ITEM_UINT_SIZES: dict[int, int] = {
    0x01: 4,  # mileage, 1/10 km
    0x02: 2,  # fuel, 1/10 L
    0x03: 2,  # tachograph speed, 1/10 km/h
    0x04: 2,  # id of an alarm event needing manual confirmation
    0x14: 4,  # JT/T 1078 video alarm bits
    0x15: 4,  # video signal loss, channel mask
    0x16: 4,  # video occlusion, channel mask
    0x17: 2,  # storage fault bits
    0x18: 2,  # abnormal driving behaviour bits
    0x25: 4,  # extended vehicle signal status (table 31)
    0x2A: 2,  # IO status (table 32)
    0x2B: 4,  # analog: bits 0-15 AD0, 16-31 AD1
    0x30: 1,  # wireless signal strength
    0x31: 1,  # GNSS satellites used
}

ITEM_NAMES: dict[int, str] = {
    0x01: "mileage_km",
    0x02: "fuel_l",
    0x03: "tacho_speed_kmh",
    0x04: "alarm_event_id",
    0x05: "tire_pressure",
    0x06: "cabin_temp_c",
    0x11: "overspeed",
    0x12: "area_in_out",
    0x13: "route_time",
    0x14: "video_alarm",
    0x15: "video_loss",
    0x16: "video_occlusion",
    0x17: "storage_fault",
    0x18: "abnormal_driving",
    0x25: "ext_signal",
    0x2A: "io_status",
    0x2B: "analog",
    0x30: "rssi",
    0x31: "satellites",
    0xE0: "custom_items_len",  # the length of the custom items that follow (jt808.md §4)
}
# 0xE0's length varies (n bytes), so its value stays raw bytes in the record
ITEM_CUSTOM_LENGTH = 0xE0
# items whose raw value is in tenths
ITEM_TENTHS = frozenset((0x01, 0x02, 0x03))


def item_value(item_id: int, v: bytes) -> Any:
    """Decode one additional item's value; a standard id at a non-standard length stays raw."""
    n = len(v)
    size = ITEM_UINT_SIZES.get(item_id)
    if size is not None:
        return int.from_bytes(v, "big") if n == size else v
    if item_id == 0x06 and n == 2:  # cabin temperature: sign-magnitude, top bit negative
        mag = (v[0] & 0x7F) << 8 | v[1]
        return -mag if v[0] & 0x80 else mag
    if item_id == 0x05 and n == 30:  # tire pressures, one byte each, 0xFF invalid
        return v
    if item_id == 0x11 and n in (1, 5):  # overspeed: position type [+ area id]
        return (v[0], _u32(v, 1) if n == 5 else None)
    if item_id == 0x12 and n == 6:  # in/out area: type, area id, direction (0 in, 1 out)
        return (v[0], _u32(v, 1), v[5])
    if item_id == 0x13 and n == 7:  # route drive time: route id, seconds, result (0 short, 1 long)
        return (_u32(v, 0), _u16(v, 4), v[6])
    return v


def pull_items(b: bytes, i: int, end: int) -> tuple[bytes, tuple[Any, ...], bool]:
    """Walk the TLV items in ``b[i:end]``: (ids, values, ok); never reads past ``end`` (jt808.md §6.7)."""
    ids_ = bytearray()
    values = []
    ok = True
    while i < end:
        if end - i < 2:  # a dangling id byte without its length
            ok = False
            break
        item_id, n = b[i], b[i + 1]
        i += 2
        if i + n > end:  # declared length runs past the body: keep what is there
            ids_.append(item_id)
            values.append(b[i:end])
            ok = False
            break
        ids_.append(item_id)
        values.append(item_value(item_id, b[i : i + n]))
        i += n
    return bytes(ids_), tuple(values), ok


def pull_location(b: bytes, i: int = 0, end: int | None = None, items: bool = True) -> Location:
    """The 28-byte basic block at ``b[i:]`` and, if ``items``, the TLV items up to ``end``."""
    if end is None:
        end = len(b)
    if end - i < 28:
        raise TruncatedError(f"location: {end - i} bytes, the basic block needs 28")
    # alarm flags, status, latitude, longitude (1e-6 degrees), altitude (m),
    # speed (1/10 km/h), direction (0-359 from north); then BCD[6] time
    alarm, status, lat_raw, lon_raw, altitude, speed, direction = _BASIC.unpack_from(b, i)
    lat = lat_raw / 1000000.0
    lon = lon_raw / 1000000.0
    if status & 4:  # status bit 2: south latitude
        lat = -lat
    if status & 8:  # status bit 3: west longitude
        lon = -lon
    if items:
        item_ids, values, ok = pull_items(b, i + 28, end)
    else:
        item_ids, values, ok = b"", (), True
    return Location(
        alarm,
        status,
        lat,
        lon,
        altitude,
        speed / 10.0,
        direction,
        bcd_time(b, i + 22),
        item_ids,
        values,
        ok,
    )


def push_item(item_id: int, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        v = bytes(value)
    elif isinstance(value, int):
        size = ITEM_UINT_SIZES.get(item_id)
        if item_id == 0x06:
            v = ((0x8000 | -value) if value < 0 else value).to_bytes(2, "big")
        elif size is None:
            raise Jt808LocalError(f"item 0x{item_id:02x} takes bytes, not an int")
        else:
            v = value.to_bytes(size, "big")
    elif item_id == 0x11:
        v = bytes([value[0]]) + (b"" if value[1] is None else value[1].to_bytes(4, "big"))
    elif item_id == 0x12:
        v = bytes([value[0]]) + value[1].to_bytes(4, "big") + bytes([value[2]])
    elif item_id == 0x13:
        v = value[0].to_bytes(4, "big") + value[1].to_bytes(2, "big") + bytes([value[2]])
    else:
        raise Jt808LocalError(f"cannot encode item 0x{item_id:02x} value {value!r}")
    if len(v) > 255:
        raise Jt808LocalError(f"item 0x{item_id:02x} longer than 255 bytes")
    return bytes((item_id, len(v))) + v


def push_location(loc: Location) -> bytes:
    status = loc.status
    # the sign of lat/lon is carried by status bits 2/3; a negative value sets them
    if loc.lat < 0:
        status |= 4
    if loc.lon < 0:
        status |= 8
    out = bytearray()
    out += loc.alarm.to_bytes(4, "big")
    out += status.to_bytes(4, "big")
    out += round(abs(loc.lat) * 1000000).to_bytes(4, "big")
    out += round(abs(loc.lon) * 1000000).to_bytes(4, "big")
    out += loc.altitude.to_bytes(2, "big")
    out += round(loc.speed_kmh * 10).to_bytes(2, "big")
    out += loc.direction.to_bytes(2, "big")
    out += push_bcd_time(loc.device_time)
    for item_id, value in zip(loc.item_ids, loc.item_values):
        out += push_item(item_id, value)
    return bytes(out)


def make_location(
    lat: float,
    lon: float,
    *,
    device_time: int | None,
    alarm: int = 0,
    status: int = 0x3,
    altitude: int = 0,
    speed_kmh: float = 0.0,
    direction: int = 0,
    items: tuple[tuple[int, Any], ...] = (),
) -> Location:
    """A Location as a terminal would report it, with the south/west status bits set from the signs
    (so that it compares equal to what a decoder reads back)."""
    if lat < 0:
        status |= 4
    if lon < 0:
        status |= 8
    return Location(
        alarm,
        status,
        lat,
        lon,
        altitude,
        speed_kmh,
        direction,
        device_time,
        bytes(i for i, _ in items),
        tuple(v for _, v in items),
        True,
    )


# ---------------------------------------------------------------------------
# body decoders (pull_*)


def pull_general_response(body: bytes, version: int) -> GeneralResponse:
    _need(body, 5, "general response")
    return GeneralResponse(_u16(body, 0), _u16(body, 2), body[4])


def pull_empty(body: bytes, version: int) -> Empty:
    # 0x0002 with a vendor body (battery, RSSI...) is tolerated: the bytes are kept
    return EMPTY if not body else Empty(bytes(body))


def pull_register(body: bytes, version: int) -> Register:
    # JT/T 808 0x0100 field sizes by layout (jt808.md §4): maker, model, terminal id
    n = len(body)
    if version == 2019 and n >= 76:
        layout, sizes = 2019, (11, 30, 30)
    elif n >= 37:
        layout, sizes = 2013, (5, 20, 7)
    elif n >= 25:
        layout, sizes = 2011, (5, 8, 7)
    else:
        raise TruncatedError(f"register: {n} bytes, the 2011 layout needs 25")
    i = 4
    fields = []
    for size in sizes:
        fields.append(fixed_str(body[i : i + size]))
        i += size
    return Register(
        _u16(body, 0),  # province (GB/T 2260 first two digits)
        _u16(body, 2),  # city / county
        fields[0],
        fields[1],
        fields[2],
        body[i],  # plate colour
        gbk(body[i + 1 :]),  # plate or VIN
        layout,
    )


def pull_register_response(body: bytes, version: int) -> RegisterResponse:
    _need(body, 3, "register response")
    result = body[2]
    # the auth code is sent only on success; a code after a failure result is ignored
    code = gbk(body[3:]) if result == 0 else None
    return RegisterResponse(_u16(body, 0), result, code)


def pull_authenticate(body: bytes, version: int) -> Authenticate:
    if version != 2019:
        return Authenticate(gbk(body))
    _need(body, 1, "authenticate")
    n = body[0]  # 2019: auth code length BYTE, code, IMEI BYTE[15], software version BYTE[20]
    _need(body, 1 + n + 35, "authenticate (2019)")
    return Authenticate(
        gbk(body[1 : 1 + n]),
        fixed_str(body[1 + n : 16 + n]),
        fixed_str(body[16 + n : 36 + n]),
    )


def pull_query_params_response(body: bytes, version: int) -> QueryParamsResponse:
    _need(body, 3, "query params response")
    params = []
    i, end = 3, len(body)
    complete = True
    for _ in range(body[2]):
        if end - i < 5 or i + 5 + body[i + 4] > end:
            complete = False
            break
        n = body[i + 4]
        params.append((_u32(body, i), bytes(body[i + 5 : i + 5 + n])))
        i += 5 + n
    return QueryParamsResponse(_u16(body, 0), body[2], tuple(params), complete)


def pull_location_report(body: bytes, version: int) -> Location:
    return pull_location(body)


def pull_location_query_response(body: bytes, version: int) -> LocationQueryResponse:
    _need(body, 30, "location query response")
    return LocationQueryResponse(_u16(body, 0), pull_location(body, 2))


def pull_location_batch(body: bytes, version: int) -> LocationBatch:
    _need(body, 3, "location batch")
    count, batch_type = _u16(body, 0), body[2]
    positions = []
    i, end = 3, len(body)
    truncated = False
    for _ in range(count):
        if end - i < 2:
            truncated = True
            break
        n = _u16(body, i)
        if n < 28 or i + 2 + n > end:
            truncated = True
            break
        positions.append(pull_location(body, i + 2, i + 2 + n))
        i += 2 + n
    return LocationBatch(batch_type, count, tuple(positions), truncated)


def pull_temporary_tracking(body: bytes, version: int) -> TemporaryTracking:
    _need(body, 2, "temporary tracking")
    interval = _u16(body, 0)
    return TemporaryTracking(interval, _u32(body, 2) if len(body) >= 6 else None)


def pull_alarm_confirm(body: bytes, version: int) -> AlarmConfirm:
    _need(body, 6, "alarm confirm")
    return AlarmConfirm(_u16(body, 0), _u32(body, 2))


def pull_text(body: bytes, version: int) -> Text:
    if version == 2019:
        _need(body, 2, "text (2019)")
        return Text(body[0], body[1], gbk(body[2:]))
    _need(body, 1, "text")
    return Text(body[0], None, gbk(body[1:]))


def pull_call_back(body: bytes, version: int) -> CallBack:
    _need(body, 1, "call back")
    return CallBack(body[0], fixed_str(body[1:]))


def pull_media_event(body: bytes, version: int) -> MediaEvent:
    _need(body, 8, "media event")
    return MediaEvent(_u32(body, 0), body[4], body[5], body[6], body[7])


def pull_media_data(body: bytes, version: int) -> MediaData:
    _need(body, 8, "media data")
    # 2013+: a 28-byte basic location follows the 8 media bytes; 2011 has none.
    # A body too short for it is read as the 2011 layout.
    if len(body) >= 36:
        loc: Location | None = pull_location(body, 8, 36, items=False)
        data = bytes(body[36:])
    else:
        loc, data = None, bytes(body[8:])
    return MediaData(_u32(body, 0), body[4], body[5], body[6], body[7], loc, data)


def pull_media_ack(body: bytes, version: int) -> MediaAck:
    _need(body, 4, "media ack")
    if len(body) < 5:
        return MediaAck(_u32(body, 0), ())
    n = body[4]
    _need(body, 5 + 2 * n, "media ack packet list")
    return MediaAck(_u32(body, 0), tuple(_u16(body, 5 + 2 * k) for k in range(n)))


def pull_take_photo(body: bytes, version: int) -> TakePhoto:
    _need(body, 12, "take photo")
    return TakePhoto(
        body[0], _u16(body, 1), _u16(body, 3), body[5], body[6], body[7], body[8], body[9], body[10], body[11]
    )


def pull_resend_request(body: bytes, version: int) -> ResendRequest:
    # the packet count is a BYTE in 2013 and a WORD in 2019 (jt808.md §5)
    wide = version == 2019
    _need(body, 4 if wide else 3, "resend request")
    n = _u16(body, 2) if wide else body[2]
    i = 4 if wide else 3
    _need(body, i + 2 * n, "resend request packet list")
    return ResendRequest(_u16(body, 0), tuple(_u16(body, i + 2 * k) for k in range(n)))


def pull_passthrough(body: bytes, version: int) -> Passthrough:
    _need(body, 1, "passthrough")
    return Passthrough(body[0], bytes(body[1:]))


def pull_server_time(body: bytes, version: int) -> ServerTime:
    _need(body, 6, "server time")
    return ServerTime(bcd_time(body, 0))


BODY_DECODERS = {
    ids.MSG_TERMINAL_GENERAL_RESPONSE: pull_general_response,
    ids.MSG_PLATFORM_GENERAL_RESPONSE: pull_general_response,
    ids.MSG_HEARTBEAT: pull_empty,
    ids.MSG_LOGOUT: pull_empty,
    ids.MSG_QUERY_PARAMS: pull_empty,
    ids.MSG_LOCATION_QUERY: pull_empty,
    ids.MSG_REGISTER: pull_register,
    ids.MSG_REGISTER_RESPONSE: pull_register_response,
    ids.MSG_AUTHENTICATE: pull_authenticate,
    ids.MSG_QUERY_PARAMS_RESPONSE: pull_query_params_response,
    ids.MSG_LOCATION_REPORT: pull_location_report,
    ids.MSG_LOCATION_QUERY_RESPONSE: pull_location_query_response,
    ids.MSG_LOCATION_BATCH: pull_location_batch,
    ids.MSG_TEMPORARY_TRACKING: pull_temporary_tracking,
    ids.MSG_ALARM_CONFIRM: pull_alarm_confirm,
    ids.MSG_TEXT: pull_text,
    ids.MSG_CALL_BACK: pull_call_back,
    ids.MSG_MEDIA_EVENT: pull_media_event,
    ids.MSG_MEDIA_DATA: pull_media_data,
    ids.MSG_MEDIA_ACK: pull_media_ack,
    ids.MSG_TAKE_PHOTO: pull_take_photo,
    ids.MSG_RESEND_REQUEST: pull_resend_request,
    ids.MSG_TERMINAL_RESEND_REQUEST: pull_resend_request,
    ids.MSG_UPLINK_PASSTHROUGH: pull_passthrough,
    ids.MSG_DOWNLINK_PASSTHROUGH: pull_passthrough,
    ids.MSG_SERVER_TIME: pull_server_time,
}


def decode_body(msg_id: int, body: bytes, version: int = 2013) -> Any:
    """Decode a complete (unescaped, reassembled) body; ids without a decoder return the bytes.

    Raises :class:`TruncatedError` when fixed fields are missing.
    """
    decoder = BODY_DECODERS.get(msg_id)
    return bytes(body) if decoder is None else decoder(body, version)


# ---------------------------------------------------------------------------
# body encoders (push_*)


def _gbk_out(text: str) -> bytes:
    try:
        return text.encode("gbk")
    except UnicodeEncodeError:
        raise Jt808LocalError(f"text {text!r} has characters GBK cannot encode") from None


def _fixed_out(text: str, size: int) -> bytes:
    raw = _gbk_out(text)
    if len(raw) > size:
        raise Jt808LocalError(f"{text!r} longer than {size} bytes")
    return raw.ljust(size, b"\0")


def push_general_response(r: GeneralResponse, version: int) -> bytes:
    return r.reply_serial.to_bytes(2, "big") + r.reply_id.to_bytes(2, "big") + bytes((r.result,))


def push_empty(r: Empty, version: int) -> bytes:
    return bytes(r.extra)


def push_register(r: Register, version: int) -> bytes:
    sizes = {2019: (11, 30, 30), 2013: (5, 20, 7), 2011: (5, 8, 7)}[r.layout]
    return (
        r.province.to_bytes(2, "big")
        + r.city.to_bytes(2, "big")
        + _fixed_out(r.maker, sizes[0])
        + _fixed_out(r.model, sizes[1])
        + _fixed_out(r.terminal_id, sizes[2])
        + bytes((r.plate_color,))
        + _gbk_out(r.plate)
    )


def push_register_response(r: RegisterResponse, version: int) -> bytes:
    head = r.reply_serial.to_bytes(2, "big") + bytes((r.result,))
    return head + (_gbk_out(r.auth_code) if r.result == 0 and r.auth_code is not None else b"")


def push_authenticate(r: Authenticate, version: int) -> bytes:
    code = _gbk_out(r.auth_code)
    if version != 2019:
        return code
    if len(code) > 255:
        raise Jt808LocalError("auth code longer than 255 bytes")
    return bytes((len(code),)) + code + _fixed_out(r.imei or "", 15) + _fixed_out(r.sw_version or "", 20)


def push_query_params_response(r: QueryParamsResponse, version: int) -> bytes:
    if len(r.params) > 255:
        raise Jt808LocalError("more than 255 parameters in one 0x0104")
    out = bytearray(r.reply_serial.to_bytes(2, "big") + bytes((len(r.params),)))
    for pid, value in r.params:
        if len(value) > 255:
            raise Jt808LocalError(f"parameter 0x{pid:04x} longer than 255 bytes")
        out += pid.to_bytes(4, "big") + bytes((len(value),)) + bytes(value)
    return bytes(out)


def push_location_report(r: Location, version: int) -> bytes:
    return push_location(r)


def push_location_query_response(r: LocationQueryResponse, version: int) -> bytes:
    return r.reply_serial.to_bytes(2, "big") + push_location(r.location)


def push_location_batch(r: LocationBatch, version: int) -> bytes:
    out = bytearray(len(r.positions).to_bytes(2, "big") + bytes((r.batch_type,)))
    for loc in r.positions:
        body = push_location(loc)
        out += len(body).to_bytes(2, "big") + body
    return bytes(out)


def push_temporary_tracking(r: TemporaryTracking, version: int) -> bytes:
    head = r.interval_s.to_bytes(2, "big")
    return head if r.validity_s is None else head + r.validity_s.to_bytes(4, "big")


def push_alarm_confirm(r: AlarmConfirm, version: int) -> bytes:
    return r.alarm_serial.to_bytes(2, "big") + r.alarm_type.to_bytes(4, "big")


def push_text(r: Text, version: int) -> bytes:
    text = _gbk_out(r.text)
    if len(text) > 1024:
        raise Jt808LocalError("text longer than 1024 bytes")
    if version == 2019:
        return bytes((r.flag, 1 if r.text_type is None else r.text_type)) + text
    return bytes((r.flag,)) + text


def push_call_back(r: CallBack, version: int) -> bytes:
    phone = _gbk_out(r.phone)
    if len(phone) > 20:
        raise Jt808LocalError("call-back phone longer than 20 bytes")
    return bytes((r.flag,)) + phone


def push_media_event(r: MediaEvent, version: int) -> bytes:
    return r.media_id.to_bytes(4, "big") + bytes((r.media_type, r.media_format, r.event_code, r.channel))


def push_media_data(r: MediaData, version: int) -> bytes:
    head = r.media_id.to_bytes(4, "big") + bytes((r.media_type, r.media_format, r.event_code, r.channel))
    if r.location is not None:
        loc = push_location(r.location._replace(item_ids=b"", item_values=()))
    else:
        # 2013+ always has the block (a decoder cannot tell it is absent); 2011 has none
        loc = b"" if version == 2011 else bytes(28)
    return head + loc + bytes(r.data)


def push_media_ack(r: MediaAck, version: int) -> bytes:
    if len(r.packet_ids) > 255:
        raise Jt808LocalError("more than 255 packet ids in one 0x8800")
    out = r.media_id.to_bytes(4, "big")
    if not r.packet_ids:
        return out + b"\0"
    return out + bytes((len(r.packet_ids),)) + b"".join(p.to_bytes(2, "big") for p in r.packet_ids)


def push_take_photo(r: TakePhoto, version: int) -> bytes:
    return (
        bytes((r.channel,))
        + r.command.to_bytes(2, "big")
        + r.interval.to_bytes(2, "big")
        + bytes((r.save_flag, r.resolution, r.quality, r.brightness, r.contrast, r.saturation, r.chroma))
    )


def push_resend_request(r: ResendRequest, version: int) -> bytes:
    n = len(r.packet_ids)
    if version == 2019:
        count = n.to_bytes(2, "big")
    elif n > 255:
        raise Jt808LocalError("more than 255 packet ids in a 2013 resend request")
    else:
        count = bytes((n,))
    return r.first_serial.to_bytes(2, "big") + count + b"".join(p.to_bytes(2, "big") for p in r.packet_ids)


def push_passthrough(r: Passthrough, version: int) -> bytes:
    return bytes((r.ptype,)) + bytes(r.data)


def push_server_time(r: ServerTime, version: int) -> bytes:
    return push_bcd_time(r.time)


BODY_ENCODERS = {
    GeneralResponse: push_general_response,
    Empty: push_empty,
    Register: push_register,
    RegisterResponse: push_register_response,
    Authenticate: push_authenticate,
    QueryParamsResponse: push_query_params_response,
    Location: push_location_report,
    LocationQueryResponse: push_location_query_response,
    LocationBatch: push_location_batch,
    TemporaryTracking: push_temporary_tracking,
    AlarmConfirm: push_alarm_confirm,
    Text: push_text,
    CallBack: push_call_back,
    MediaEvent: push_media_event,
    MediaData: push_media_data,
    MediaAck: push_media_ack,
    TakePhoto: push_take_photo,
    ResendRequest: push_resend_request,
    Passthrough: push_passthrough,
    ServerTime: push_server_time,
}


def encode_body(record: Any, version: int = 2013) -> bytes:
    """The body bytes of a record (``bytes`` pass through unchanged)."""
    if isinstance(record, (bytes, bytearray, memoryview)):
        return bytes(record)
    encoder = BODY_ENCODERS.get(type(record))
    if encoder is None:
        raise Jt808LocalError(f"no encoder for {type(record).__name__}")
    try:
        return encoder(record, version)
    except OverflowError as exc:  # int.to_bytes of a value outside its field
        raise Jt808LocalError(f"{type(record).__name__}: {exc}") from None
