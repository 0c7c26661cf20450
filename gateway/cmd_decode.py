"""``telacd decode``: JT/T 808 frames to JSON, one object per frame.

Input: hex frames as arguments, or one per line on stdin, or ``--raw FILE``
for a captured byte stream (``-`` reads it from stdin). An argument or line
may hold several frames back to back; bytes outside frames are ignored as on
a real link. Output: one JSON object per frame on stdout, in input order::

    {"msg_id": 512, "msg_name": "location_report", "phone": "013812345678",
     "serial": 49, "version": "2013", "subpackage": null, "checksum_ok": true,
     "body": {"alarm": 536870912, "alarms": ["collision"], ..., "items": {...}}}

A frame that fails prints ``{"error": "<kind>", "detail": "...", "hex": "..."}``
(kinds: checksum, escape, length, truncated, header_short, too_large, hex)
and decoding continues; the exit status is 1 if any frame failed, and 2 for
a usage error (a bad option, or a ``--raw`` file that cannot be read: one
line on stderr, no traceback). Frames are found as the gateway finds them
(the codec's ``Splitter``, which resynchronises like ``FrameDecoder``: a
candidate that is not a well-formed frame is reported, and its closing flag
also starts the next one, so a frame after junk or a cut-off frame is kept).

``version`` is the header's layout ("2013" or "2019"), except that a 2013
header carrying the 2011 register body prints "2011" (the two headers are
identical, the body is the only tell); a register body's own layout is
``body.layout``. ``lat``/``lon`` print as plain decimals with 6 places
(``0.000001``, never ``1e-06``), still JSON numbers.
``--lenient`` decodes frames with a bad checksum (``checksum_ok: false``), a
wrong body length or an unescaped trailing 0x7D. ``--zone`` sets the device
clock's offset (``+08:00`` by the standard); ``--model`` applies a device
profile (alarm-bit names, zone, leniency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from protocols.jt808 import ids
from protocols.jt808 import impl as codec
from protocols.jt808 import messages as m
from protocols.jt808.bits import PROFILES, DeviceProfile
from protocols.jt808.errors import Jt808ProtocolError, TruncatedError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "frames", nargs="*", metavar="HEX", help="frames in hex (default: one per line on stdin)"
    )
    parser.add_argument("--raw", metavar="FILE", help="a captured byte stream ('-' for stdin)")
    parser.add_argument(
        "--lenient", action="store_true", help="decode bad-checksum/length frames and flag them"
    )
    parser.add_argument(
        "--zone",
        metavar="+HH:MM",
        help="device clock offset from UTC (default +08:00; write --zone=-05:00 for negative offsets)",
    )
    parser.add_argument("--model", metavar="NAME", help=f"device profile: {', '.join(sorted(PROFILES))}")
    parser.add_argument("--indent", action="store_true", help="indent the JSON (one object spans lines)")


_ZONE = re.compile(r"^([+-])(\d{1,2})(?::?(\d{2}))?$")


def parse_zone(text: str) -> int:
    """'+08:00', '-0530', '+8', 'Z' or 'UTC' -> offset in seconds."""
    if text.upper() in ("Z", "UTC"):
        return 0
    match = _ZONE.match(text.strip())
    if not match or int(match[2]) > 14 or int(match[3] or 0) > 59:
        raise ValueError(f"bad time zone {text!r}; use +HH:MM")
    sign = -1 if match[1] == "-" else 1
    return sign * (int(match[2]) * 3600 + int(match[3] or 0) * 60)


# ---------------------------------------------------------------------------
# records -> JSON-ready objects


def iso_time(device_time: int | None, zone: dt.timezone) -> str | None:
    if device_time is None:
        return None
    naive = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=device_time)
    return naive.replace(tzinfo=zone).isoformat()


def degrees(x: float) -> orjson.Fragment:
    """Signed degrees with 6 decimals, as a JSON number.

    orjson writes the shortest float repr, so 0.000001 would come out as
    ``1e-06`` even after ``round(x, 6)``; a Fragment is written verbatim.
    """
    return orjson.Fragment(b"%.6f" % x)


def item_json(item_id: int, value: Any) -> tuple[str, Any]:
    """(key, value): standard items by name with units applied, anything raw by hex id."""
    name = m.ITEM_NAMES.get(item_id)
    if item_id == m.ITEM_CUSTOM_LENGTH and 1 <= len(value) <= 4:
        # the length of the custom items that follow; the record keeps the bytes (any width)
        return name, int.from_bytes(value, "big")
    tire_pressures = item_id == 0x05 and len(value) == 30
    if name is None or (isinstance(value, (bytes, bytearray)) and not tire_pressures):
        # unknown ids, and standard ids at a vendor's length, stay raw
        return f"0x{item_id:02x}", bytes(value).hex()
    if item_id in m.ITEM_TENTHS:
        return name, value / 10
    if item_id == 0x05:
        return name, list(value)
    if item_id == 0x11:
        return name, {"position_type": value[0], "area_id": value[1]}
    if item_id == 0x12:
        return name, {"position_type": value[0], "area_id": value[1], "direction": value[2]}
    if item_id == 0x13:
        return name, {"route_id": value[0], "seconds": value[1], "result": value[2]}
    return name, value


def location_json(loc: m.Location, version: int, profile: DeviceProfile, zone: dt.timezone) -> dict[str, Any]:
    items: dict[str, Any] = {}
    repeated: set[str] = set()
    for item_id, value in zip(loc.item_ids, loc.item_values):
        key, v = item_json(item_id, value)
        if key not in items:
            items[key] = v
        elif key in repeated:
            items[key].append(v)
        else:  # a repeated id (vendor firmware does this): a list of every value, in order
            items[key] = [items[key], v]
            repeated.add(key)
    out = {
        "alarm": loc.alarm,
        "alarms": profile.alarm_names(loc.alarm, version),
        "status": loc.status,
        "lat": degrees(loc.lat),
        "lon": degrees(loc.lon),
        "altitude_m": loc.altitude,
        "speed_kmh": loc.speed_kmh,
        "direction": loc.direction,
        "time": iso_time(loc.device_time, zone),
        "items": items,
    }
    if not loc.items_ok:
        # the item list did not end at the body's end: an item's declared length ran past
        # it (that item is kept raw, cut short) or a lone id byte was left over (dropped)
        out["items_truncated"] = True
    return out


def _plain(value: Any, version: int, profile: DeviceProfile, zone: dt.timezone) -> Any:
    if isinstance(value, m.Location):
        return location_json(value, version, profile, zone)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _plain(v, version, profile, zone) for k, v in value._asdict().items()}
    if isinstance(value, tuple):
        return [_plain(v, version, profile, zone) for v in value]
    return value


def body_json(msg: m.Message, profile: DeviceProfile, zone: dt.timezone) -> dict[str, Any]:
    body, v = msg.body, msg.version
    if msg.subpackaged:
        out: dict[str, Any] = {"packet": bytes(body).hex()}
        if msg.pkg_index == 1 and msg.msg_id == ids.MSG_MEDIA_DATA and not msg.encrypt:
            # the first packet of a media upload carries the media fields and location
            try:
                media = m.decode_body(msg.msg_id, body, v)
                out["media"] = _plain(media._replace(data=b""), v, profile, zone) | {
                    "data_len": len(media.data)
                }
            except Jt808ProtocolError:
                pass
        return out
    if isinstance(body, (bytes, bytearray)):
        out = {"raw": bytes(body).hex()}
        if msg.encrypt:
            out["encrypted"] = msg.encrypt  # reported, not decrypted
        return out
    if isinstance(body, m.Location):
        return location_json(body, v, profile, zone)
    if isinstance(body, m.LocationBatch):
        return {
            "batch_type": body.batch_type,
            "count": body.count,
            "positions": [location_json(p, v, profile, zone) for p in body.positions],
            "truncated": body.truncated,
        }
    result = _plain(body, v, profile, zone)
    return result if isinstance(result, dict) else {"value": result}


def message_json(msg: m.Message, profile: DeviceProfile, zone: dt.timezone) -> dict[str, Any]:
    version = str(msg.version)  # the header's layout
    if msg.version == 2013 and isinstance(msg.body, m.Register) and msg.body.layout == 2011:
        # 2011 and 2013 headers are identical: the register body is the only tell
        # (a 2019 header with a short body stays "2019"; body.layout says 2011)
        version = "2011"
    return {
        "msg_id": msg.msg_id,
        "msg_name": ids.msg_name(msg.msg_id),
        "phone": msg.phone,
        "serial": msg.serial,
        "version": version,
        "subpackage": {"total": msg.pkg_total, "index": msg.pkg_index} if msg.subpackaged else None,
        "checksum_ok": msg.checksum_ok,
        "body": body_json(msg, profile, zone),
    }


def error_json(kind: str, detail: str, data: bytes | str) -> dict[str, Any]:
    return {"error": kind, "detail": detail, "hex": data if isinstance(data, str) else data.hex()}


# ---------------------------------------------------------------------------
# input -> frames


def frames_of(data: bytes, max_buffer: int) -> Iterator[bytes | dict[str, Any]]:
    """Wire frames of a byte string, and error objects for what cannot be a frame."""
    sp = codec.Splitter(max_buffer)
    found = False
    for f in sp.receive_data(data):
        found = True
        if isinstance(f, Jt808ProtocolError):
            yield error_json(f.kind, f.detail, "")
        else:
            yield f
    if sp.pending:
        yield error_json(TruncatedError.kind, "no end flag", sp.pending)
    elif not found:
        why = "a lone 0x7e flag" if b"\x7e" in data else "no 0x7e flags"
        yield error_json(TruncatedError.kind, f"no frame ({why})", data)


def hex_inputs(args: argparse.Namespace) -> Iterable[str]:
    if args.frames:
        return args.frames
    return (line for line in sys.stdin if line.strip() and not line.lstrip().startswith("#"))


def main(args: argparse.Namespace) -> int:
    profile = PROFILES["default"]
    if args.model:
        if args.model not in PROFILES:
            print(
                f"telacd decode: unknown model {args.model!r}; known: {', '.join(sorted(PROFILES))}",
                file=sys.stderr,
            )
            return 2
        profile = PROFILES[args.model]
    if args.lenient:
        profile = profile.with_options(lenient_checksum=True, lenient_length=True, lenient_trailing_7d=True)
    try:
        offset = parse_zone(args.zone) if args.zone else profile.zone_offset_s
    except ValueError as exc:
        print(f"telacd decode: {exc}", file=sys.stderr)
        return 2
    zone = dt.timezone(dt.timedelta(seconds=offset))
    option = orjson.OPT_APPEND_NEWLINE | (orjson.OPT_INDENT_2 if args.indent else 0)
    out = sys.stdout.buffer
    failed = False

    def emit(obj: dict[str, Any]) -> None:
        out.write(orjson.dumps(obj, option=option))

    def decode_stream(data: bytes) -> None:
        nonlocal failed
        for f in frames_of(data, max(codec.DEFAULT_MAX_BUFFER, len(data) + 2)):
            if isinstance(f, dict):
                failed = True
                emit(f)
                continue
            try:
                emit(message_json(codec.decode_frame(f, profile), profile, zone))
            except Jt808ProtocolError as exc:
                failed = True
                emit(error_json(exc.kind, exc.detail, f))

    if args.raw:
        if args.frames:
            print("telacd decode: give hex frames or --raw, not both", file=sys.stderr)
            return 2
        if args.raw == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                with open(args.raw, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                print(f"telacd decode: cannot read {args.raw}: {exc.strerror or exc}", file=sys.stderr)
                return 2
        decode_stream(data)
    else:
        for text in hex_inputs(args):
            cleaned = re.sub(r"[\s:]", "", text)
            try:
                data = bytes.fromhex(cleaned)
            except ValueError:
                failed = True
                emit(error_json("hex", "not hexadecimal", cleaned))
                continue
            decode_stream(data)
    out.flush()
    return 1 if failed else 0
