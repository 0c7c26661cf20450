"""Body records: both directions, times, items, alarm/status names, device profiles."""

from __future__ import annotations

import datetime as dt

import pytest
from jt808_helpers import hexb

from protocols.jt808 import messages as m
from protocols.jt808.bits import PROFILES, DeviceProfile, get_profile, status_names
from protocols.jt808.errors import Jt808LocalError, TruncatedError

T0 = m.bcd_time(hexb("240315083000"))

# one table for both directions: (msg_id, version, record)
RECORDS = [
    (0x0001, 2013, m.GeneralResponse(7, 0x8300, 0)),
    (0x8001, 2019, m.GeneralResponse(0xFFFF, 0x0200, 4)),
    (0x0002, 2013, m.EMPTY),
    (0x0002, 2013, m.Empty(b"\x01\x02\x03")),  # a vendor heartbeat body is kept
    (0x0100, 2011, m.Register(31, 115, "cd", "www.808.", "7654321", 1, "测A1234", 2011)),
    (0x0100, 2013, m.Register(31, 115, "yzh", "www.jtt808.cn", "7654321", 1, "测A888888", 2013)),
    (0x0100, 2019, m.Register(31, 115, "yzh", "www.jtt808.cn", "0987654321", 2, "粤B12345", 2019)),
    (0x8100, 2013, m.RegisterResponse(100, 0, "123456")),
    (0x8100, 2013, m.RegisterResponse(100, 4, None)),
    (0x0102, 2013, m.Authenticate("456121111")),
    (0x0102, 2019, m.Authenticate("17299841738", "123456789012345", "3.7.15")),
    (0x0104, 2013, m.QueryParamsResponse(3, 2, ((0x0001, b"\0\0\0\x3c"), (0x0013, b"1.2.3.4")), True)),
    (0x0201, 2013, m.LocationQueryResponse(9, m.make_location(31.0, 121.0, device_time=T0))),
    (0x8202, 2013, m.TemporaryTracking(30, 600)),
    (0x8202, 2013, m.TemporaryTracking(0, None)),
    (0x8203, 2019, m.AlarmConfirm(321, 0x10200000)),
    (0x8300, 2013, m.Text(0x0C, None, "前方事故 slow down")),
    (0x8300, 2019, m.Text(0x08, 2, "服务")),
    (0x8400, 2013, m.CallBack(1, "13900001111")),
    (0x0800, 2013, m.MediaEvent(123, 0, 0, 3, 1)),
    (
        0x0801,
        2013,
        m.MediaData(123, 0, 0, 3, 1, m.make_location(1.5, -2.5, device_time=T0), b"\xff\xd8\xff\xd9"),
    ),
    (0x8800, 2013, m.MediaAck(123, ())),
    (0x8800, 2013, m.MediaAck(123, (2, 5))),
    (0x8801, 2013, m.TakePhoto(1, 2, 3, 1, 4, 5, 255, 127, 127, 255)),
    (0x8003, 2013, m.ResendRequest(0x100, (1, 2, 9))),
    (0x0005, 2019, m.ResendRequest(0x100, tuple(range(1, 300)))),
    (0x0900, 2013, m.Passthrough(0xF0, "道路救援 please".encode())),
    (0x8900, 2013, m.Passthrough(0x41, b"\x00\x01")),
    (0x8004, 2019, m.ServerTime(T0)),
]


@pytest.mark.parametrize("msg_id, version, record", RECORDS)
def test_body_round_trip(msg_id, version, record):
    body = m.encode_body(record, version)
    assert m.decode_body(msg_id, body, version) == record


@pytest.mark.parametrize("msg_id, version, record", RECORDS)
def test_body_round_trip_through_frames(codec, msg_id, version, record):
    phone = "00000000013812345678" if version == 2019 else "013812345678"
    body = m.encode_body(record, version)
    if len(body) > 1023:
        return  # only as a reassembled message (tested in the connection tests)
    msg = codec.decode_frame(codec.encode_frame(msg_id, body, phone, 42, version))
    assert msg.body == record


def test_unknown_id_decodes_to_raw_bytes(codec):
    msg = codec.decode_frame(codec.encode_frame(0x5501, b"\x01\x02", "013812345678", 1))
    assert msg.body == b"\x01\x02" and msg.name == "unknown_0x5501"


@pytest.mark.parametrize(
    "msg_id, body",
    [(0x0200, bytes(27)), (0x0201, bytes(29)), (0x0100, bytes(24)), (0x8203, bytes(5)), (0x0704, b"\0\1")],
)
def test_short_bodies_are_truncated_errors(msg_id, body):
    with pytest.raises(TruncatedError):
        m.decode_body(msg_id, body, 2013)


def test_register_layout_by_length():
    # 2019 header but a 2013-sized body: the 2013 layout (devices mix them)
    body = m.encode_body(m.Register(1, 2, "a", "b", "c", 1, "P", 2013), 2013)
    assert m.decode_body(0x0100, body, 2019).layout == 2013


def test_text_gbk_with_invalid_bytes_never_raises():
    text = m.decode_body(0x8300, b"\x01\xb2\xe2\xff\xff\x41", 2013).text
    assert text.startswith("测") and text.endswith("A") and "\ufffd" in text


def test_fixed_strings_strip_nul_padding_keep_zero_padding():
    assert m.fixed_str(b"Koike002\0\0") == "Koike002"
    assert m.fixed_str(b"000Koike002") == "000Koike002"


# ---------------------------------------------------------------------------
# time


@pytest.mark.parametrize(
    "bcd, expected",
    [
        ("240315083000", dt.datetime(2024, 3, 15, 8, 30)),
        ("000101000000", dt.datetime(2000, 1, 1)),
        ("240229235959", dt.datetime(2024, 2, 29, 23, 59, 59)),  # leap day
        ("991231235959", dt.datetime(2099, 12, 31, 23, 59, 59)),
        ("070113120000", dt.datetime(2007, 1, 13, 12)),  # RTC garbage of a device without a fix
    ],
)
def test_bcd_time(bcd, expected):
    t = m.bcd_time(hexb(bcd))
    assert t == int(expected.replace(tzinfo=dt.UTC).timestamp())
    assert m.push_bcd_time(t) == hexb(bcd)


@pytest.mark.parametrize(
    "bcd",
    [
        "230229000000",
        "241301000000",
        "240100000000",
        "240115240000",
        "2401150000a0",
        "ffffffffffff",
        "000000000000",
    ],
)
def test_invalid_bcd_time_is_none(bcd):
    assert m.bcd_time(hexb(bcd)) is None


def test_location_utc_uses_the_device_zone():
    loc = m.make_location(1.0, 2.0, device_time=m.bcd_time(hexb("240315083000")))
    utc = dt.datetime.fromtimestamp(loc.utc(8 * 3600), dt.UTC)
    assert utc == dt.datetime(2024, 3, 15, 0, 30, tzinfo=dt.UTC)
    assert loc.utc(0) == loc.device_time


# ---------------------------------------------------------------------------
# additional items


def _loc_with_items(items: bytes) -> bytes:
    return m.push_location(m.make_location(10.0, 20.0, device_time=T0)) + items


def test_items_standard_raw_and_composite(codec):
    items = hexb(
        "0104000003e8"  # mileage 1000 (100.0 km)
        "020200de"  # fuel 222
        "06028005"  # cabin temperature -5 (sign-magnitude)
        "110101"  # overspeed, position type 1, no area id
        "1206010000000701"  # out of area 7
        "130700000009007801"  # route 9, 120 s, too long
        "0201ff"  # fuel with a vendor length: kept raw
        "e403aabbcc"  # vendor item
        "300117"  # RSSI 23
    )
    loc = codec.decode_frame(codec.encode_frame(0x0200, _loc_with_items(items), "013812345678", 1)).body
    assert loc.items == (
        (0x01, 1000),
        (0x02, 222),
        (0x06, -5),
        (0x11, (1, None)),
        (0x12, (1, 7, 1)),
        (0x13, (9, 120, 1)),
        (0x02, b"\xff"),
        (0xE4, b"\xaa\xbb\xcc"),
        (0x30, 23),
    )
    assert loc.items_ok and loc.item(0x02) == 222 and loc.item(0x99, "none") == "none"
    # and back to the same bytes
    assert m.push_location(loc) == _loc_with_items(items)


@pytest.mark.parametrize(
    "tail, ids, last, ok",
    [
        ("3001", b"\x30", b"", False),  # value missing entirely
        ("30011731", b"\x30", 23, False),  # a dangling id byte
        ("3001170104000001", b"\x30\x01", b"\x00\x00\x01", False),  # declared 4, 3 present
        ("", b"", None, True),
    ],
)
def test_bad_item_lengths_never_over_read(codec, tail, ids, last, ok):
    loc = codec.decode_frame(codec.encode_frame(0x0200, _loc_with_items(hexb(tail)), "013812345678", 1)).body
    assert (loc.item_ids, loc.items_ok) == (ids, ok)
    if ids:
        assert loc.item_values[-1] == last


def test_south_west_signs(codec):
    loc = m.make_location(-33.5, -70.25, device_time=T0)
    assert loc.status & 0b1100 == 0b1100
    back = codec.decode_frame(codec.encode_frame(0x0200, m.push_location(loc), "013812345678", 1)).body
    assert back == loc


# ---------------------------------------------------------------------------
# alarm and status names, profiles


def test_alarm_names_2013_and_2019():
    p = DeviceProfile()
    assert p.alarm_names(1 | 1 << 29 | 1 << 30) == ["emergency", "collision", "rollover"]
    assert p.alarm_names(1 << 15) == ["bit15"]  # reserved in 2013
    assert p.alarm_names(1 << 15 | 1 << 16 | 1 << 17, 2019) == [
        "violation_driving",
        "tire_pressure",
        "right_turn_blind_zone",
    ]
    assert p.mask("emergency", "collision", "rollover") == 1 | 1 << 29 | 1 << 30


def test_profile_overrides_reused_bits():
    g10 = get_profile("g10")
    assert g10.alarm_names(1 << 15 | 1 << 16) == ["low_battery", "vibration"]
    assert g10.mask("collision") == 0  # G10 does not report collisions
    tracker = PROFILES["tracker"]
    assert tracker.mask("collision") == 1 << 29 | 1 << 30
    assert tracker.with_options(zone_offset_s=0).zone_offset_s == 0
    with pytest.raises(KeyError):
        get_profile("no-such-model")
    with pytest.raises(ValueError):
        DeviceProfile(alarm_bits={32: "x"})


def test_status_names():
    assert status_names(0b1111) == ["acc_on", "positioned", "south", "west"]
    assert status_names(0x300 | 1 << 19) == ["beidou", "load_full"]


def test_encoders_refuse_what_does_not_fit():
    with pytest.raises(Jt808LocalError):
        m.encode_body(m.Text(0, None, "x" * 1025), 2013)
    with pytest.raises(Jt808LocalError):
        m.encode_body(m.CallBack(0, "1" * 21), 2013)
    with pytest.raises(Jt808LocalError):
        m.encode_body(m.GeneralResponse(0x10000, 1, 0), 2013)
    with pytest.raises(Jt808LocalError):
        m.encode_body(m.ResendRequest(1, tuple(range(300))), 2013)  # count is a BYTE in 2013
    with pytest.raises(Jt808LocalError):
        m.encode_body(object(), 2013)
