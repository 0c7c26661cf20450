"""Helpers shared by the JT/T 808 tests: chunkings, the vectors file, and a view of a decoded
message in the vocabulary of the vectors' ``expect`` keys (their ``schema`` defines each key)."""

from __future__ import annotations

import json
import pathlib
from functools import cache
from typing import Any

from protocols.jt808 import impl
from protocols.jt808 import messages as m

# "reference" and, when the extension was built, "compiled"
IMPLEMENTATIONS = impl.implementations()

DATA = pathlib.Path(__file__).resolve().parents[2] / "data"
VECTORS_PATH = DATA / "jt808_public.json"


def hexb(s: str) -> bytes:
    """The one hex-to-bytes function of these tests (spaces allowed)."""
    return bytes.fromhex(s.replace(" ", ""))


@cache
def vectors() -> dict[str, Any]:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def after_junk(data: bytes) -> list[bytes]:
    # junk without a flag before the frame, and a partial junk read after it
    return [b"\x24\x24\x00", data[:3], data[3:] + b"\xde\xad"]


CHUNKINGS = (whole, byte_by_byte, after_junk)


def feed_all(decoder: Any, chunks: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for c in chunks:
        out += decoder.feed(c)
    return out


def fmt_time(t: int | None) -> str | None:
    if t is None:
        return None
    y, mo, d, h, mi, s = m.civil_from_epoch(t)
    return f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"


# schema: the standard items the vectors assert, with their scale
STANDARD_ITEM_KEYS = {
    0x01: ("mileage_km", 10),
    0x02: ("fuel_l", 10),
    0x03: ("speed2_kmh", 10),
    0x04: ("alarm_event_id", None),
    0x25: ("ext_signal", None),
    0x2A: ("io_status", None),
    0x2B: ("analog", None),
    0x30: ("rssi", None),
    0x31: ("sats", None),
}


def location_view(loc: m.Location, with_items: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {
        "alarm": loc.alarm,
        "alarm_bits": [b for b in range(32) if loc.alarm >> b & 1],
        "status": loc.status,
        "lat_raw": round(abs(loc.lat) * 1e6),
        "lon_raw": round(abs(loc.lon) * 1e6),
        "lat": loc.lat,
        "lon": loc.lon,
        "alt_m": loc.altitude,
        "speed_kmh": loc.speed_kmh,
        "course": loc.direction,
        "time": fmt_time(loc.device_time),
    }
    if with_items:
        d["item_ids"] = [f"0x{i:02x}" for i in loc.item_ids]
        d["items_tlv_ok"] = loc.items_ok
        for item_id, (key, scale) in STANDARD_ITEM_KEYS.items():
            value = loc.item(item_id)
            if isinstance(value, int):
                d[key] = value / scale if scale else value
    return d


def body_view(msg_id: int, body: Any) -> dict[str, Any]:
    """The expect keys of one body record."""
    if isinstance(body, m.Location):
        return location_view(body)
    if isinstance(body, m.LocationQueryResponse):
        return {"reply_serial": body.reply_serial, **location_view(body.location)}
    if isinstance(body, m.LocationBatch):
        positions: list[dict[str, Any]] = [location_view(p) for p in body.positions]
        if body.truncated:
            positions.append({"truncated": True})
        return {"count": body.count, "batch_type": body.batch_type, "positions": positions}
    if isinstance(body, m.GeneralResponse):
        return {"reply_serial": body.reply_serial, "reply_id": body.reply_id, "result": body.result}
    if isinstance(body, m.RegisterResponse):
        d = {"reply_serial": body.reply_serial, "result": body.result}
        if body.auth_code is not None:
            d["auth_code"] = body.auth_code
        return d
    if isinstance(body, m.Register):
        return {
            "register_layout": str(body.layout),
            "province": body.province,
            "city": body.city,
            "maker": body.maker,
            "model": body.model,
            "terminal_id": body.terminal_id,
            "plate_color": body.plate_color,
            "plate": body.plate,
        }
    if isinstance(body, m.Authenticate):
        d = {"auth_code": body.auth_code}
        if body.imei is not None:
            d.update(imei=body.imei, sw_version=body.sw_version)
        return d
    if isinstance(body, m.Text):
        d = {"text_flag": body.flag, "text": body.text}
        if body.text_type is not None:
            d["text_type"] = body.text_type
        return d
    if isinstance(body, m.CallBack):
        return {"call_flag": body.flag, "callback_phone": body.phone}
    if isinstance(body, m.TemporaryTracking):
        return {"interval_s": body.interval_s, "validity_s": body.validity_s}
    if isinstance(body, m.AlarmConfirm):
        return {"alarm_serial": body.alarm_serial, "alarm_type": body.alarm_type}
    if isinstance(body, m.TakePhoto):
        return body._asdict()
    if isinstance(body, m.MediaEvent):
        return body._asdict()
    if isinstance(body, m.MediaData):
        d = {k: v for k, v in body._asdict().items() if k not in ("location", "data")}
        if body.location is not None:
            d["location"] = location_view(body.location, with_items=False)
        d["media_data_len"] = len(body.data)
        return d
    return {}


def header_view(msg: m.Message, wire: bytes, codec: Any) -> dict[str, Any]:
    u = codec.unescape(wire[1:-1], lenient_trailing_7d=True)
    sub = bool(msg.attr & 0x2000)
    hdr = (17 if msg.version == 2019 else 12) + (4 if sub else 0)
    d = {
        "flags_ok": True,
        "escape_ok": msg.escape_ok,
        "checksum_ok": msg.checksum_ok,
        "checksum": u[-1],
        "length_ok": msg.length_ok,
        "phone": msg.phone,
        "serial": msg.serial,
        "body_len": len(u) - 1 - hdr,
        "version_flag": msg.version_flag,
        "encrypt": msg.encrypt,
        "subpackage": sub,
    }
    if msg.version == 2019:
        d["proto_version"] = msg.proto_version
    if sub:
        d["pkg_total"] = msg.pkg_total
        d["pkg_index"] = msg.pkg_index
    return d


def message_view(msg: m.Message, wire: bytes, codec: Any) -> dict[str, Any]:
    d = header_view(msg, wire, codec)
    body = msg.body
    if msg.pkg_index == 1 and msg.msg_id == 0x0801:
        # the first packet of a media upload carries the media fields and location
        body = m.decode_body(0x0801, body, msg.version)
    d.update(body_view(msg.msg_id, body))
    return d


def assert_plausible(loc: m.Location) -> None:
    """One plausibility check for every location a test decodes from a realistic frame (Traccar's
    verifyDecodedPosition): coordinates on the globe, a possible speed and direction, a fix time
    in the years a JT/T 808 device can report."""
    assert -90.0 <= loc.lat <= 90.0 and -180.0 <= loc.lon <= 180.0, (loc.lat, loc.lon)
    assert 0.0 <= loc.speed_kmh <= 400.0 and 0 <= loc.direction <= 359
    assert loc.device_time is not None and 946684800 <= loc.device_time < 4102444800
    assert (loc.lat < 0) == bool(loc.status & 4) or loc.lat == 0
    assert (loc.lon < 0) == bool(loc.status & 8) or loc.lon == 0
