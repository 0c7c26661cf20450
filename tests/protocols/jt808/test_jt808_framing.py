"""Framing, header and the hand-built vectors, on both implementations (fixture ``codec``)."""

from __future__ import annotations

import pytest
from jt808_helpers import CHUNKINGS, assert_plausible, byte_by_byte, feed_all, hexb

from protocols.jt808 import messages as m
from protocols.jt808.bits import DeviceProfile
from protocols.jt808.errors import (
    ChecksumError,
    EscapeError,
    FrameTooLargeError,
    HeaderShortError,
    Jt808LocalError,
    Jt808ProtocolError,
    LengthError,
)

# (wire, msg_id, serial): hand-built heartbeats, phone 013812345678
HEARTBEATS = [
    ("7e000200000138123456780001327e", 0x0002, 0x0001),
    ("7e00020000013812345678004d7d027e", 0x0002, 0x004D),  # checksum 0x7e sent escaped as 7d 02
]


@pytest.mark.parametrize("wire, msg_id, serial", HEARTBEATS)
def test_heartbeat(codec, wire, msg_id, serial):
    data = hexb(wire)
    for chunking in CHUNKINGS:
        (frame,) = feed_all(codec.FrameDecoder(), chunking(data))
        assert (frame.msg_id, frame.serial, frame.phone, frame.body) == (
            msg_id,
            serial,
            "013812345678",
            m.EMPTY,
        )
    # and the encoder writes exactly these bytes
    assert codec.encode_frame(msg_id, b"", "013812345678", serial) == data


def test_spec_escape_example(codec):
    # JT/T 808-2011 §1.4.2: content 30 7E 08 7D 55 is sent as 7E 30 7D 02 08 7D 01 55 7E
    assert codec.escape(hexb("307e087d55")) == hexb("307d02087d0155")
    assert codec.unescape(hexb("307d02087d0155")) == hexb("307e087d55")


def test_checksum_is_xor(codec):
    assert codec.checksum(b"") == 0
    assert codec.checksum(b"\x01\x02\x04") == 7
    data = bytes(range(256)) * 3 + b"\x55"
    x = 0
    for b in data:
        x ^= b
    assert codec.checksum(data) == x


@pytest.mark.parametrize("content", ["7d03", "7d", "017d", "7d7d01", "7d00"])
def test_invalid_escape(codec, content):
    with pytest.raises(EscapeError):
        codec.unescape(hexb(content))


def test_lenient_trailing_7d(codec):
    # go-jt808's tolerated quirk: a 0x7d checksum sent unescaped before the end flag
    assert codec.unescape(hexb("01027d"), lenient_trailing_7d=True) == hexb("01027d")
    with pytest.raises(EscapeError):
        codec.unescape(hexb("01027d"))
    with pytest.raises(EscapeError):  # a bad escape elsewhere is still bad
        codec.unescape(hexb("7d0301027d"), lenient_trailing_7d=True)


def test_encode_decode_round_trip_2013_and_2019(codec):
    body = hexb("7e7d00ff")  # bytes that must be escaped
    for version, phone in ((2013, "013812345678"), (2019, "00000000013812345678")):
        wire = codec.encode_frame(0x0900, body, phone, 0x7E7D, version, proto_version=1)
        assert wire.count(b"\x7e") == 2
        msg = codec.decode_frame(wire)
        assert (msg.msg_id, msg.version, msg.phone, msg.serial) == (0x0900, version, phone, 0x7E7D)
        assert msg.proto_version == (1 if version == 2019 else 0)
        assert msg.version_flag == (version == 2019)
        assert msg.body == m.Passthrough(0x7E, hexb("7d00ff"))


def test_encode_pads_short_phone_and_accepts_bytes(codec):
    a = codec.encode_frame(2, b"", "13812345678", 1)
    b = codec.encode_frame(2, b"", hexb("013812345678"), 1)
    assert a == b == hexb(HEARTBEATS[0][0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"body": bytes(1024)},
        {"serial": 0x10000},
        {"msg_id": -1},
        {"phone": "0138123456789"},  # 13 digits do not fit BCD[6]
        {"phone": "01381234567x"},
        {"encrypt": 8},
    ],
)
def test_encode_refuses_what_does_not_fit(codec, kwargs):
    args = {"msg_id": 2, "body": b"", "phone": "013812345678", "serial": 1, **kwargs}
    with pytest.raises(Jt808LocalError):
        codec.encode_frame(**args)


def test_subpackage_header_fields(codec):
    wire = codec.encode_frame(0x0801, b"abc", "013812345678", 9, pkg_total=3, pkg_index=2)
    msg = codec.decode_frame(wire)
    assert (msg.pkg_total, msg.pkg_index, msg.subpackaged, msg.body) == (3, 2, True, b"abc")


def test_general_response_encoder(codec):
    wire = codec.encode_general_response("00000000013812345678", 2019, 1, 7, 0x1234, 0x0200, 0)
    msg = codec.decode_frame(wire)
    assert (msg.msg_id, msg.version, msg.serial, msg.phone) == (0x8001, 2019, 7, "00000000013812345678")
    assert msg.body == m.GeneralResponse(0x1234, 0x0200, 0)
    same = codec.encode_frame(0x8001, hexb("1234020000"), "00000000013812345678", 7, 2019, 1)
    assert wire == same
    t = codec.encode_general_response("013812345678", 2013, 0, 1, 2, 0x8300, 0, 0x0001)
    assert codec.decode_frame(t).msg_id == 0x0001
    with pytest.raises(Jt808LocalError):
        codec.encode_general_response("013812345678", 2013, 0, 1, 0x10000, 2, 0)


def _reframe(content: bytes) -> bytes:
    x = 0
    for b in content:
        x ^= b
    content += bytes([x])
    return b"\x7e" + content.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e"


def test_version_detected_by_length_when_bit14_lies(codec):
    # a 2019 header (yz-0002-2019) with bit 14 cleared: only the 2019 layout fits the length
    content = hexb("0002000001123456789012345678900001")
    msg = codec.decode_frame(_reframe(content))
    assert (msg.version, msg.phone, msg.serial, msg.version_flag) == (2019, "12345678901234567890", 1, False)
    # a 2013 header with bit 14 set (SmallChi Demo14): only the 2013 layout fits
    content = hexb("00024000013812345678000a")
    msg = codec.decode_frame(_reframe(content))
    assert (msg.version, msg.phone, msg.serial, msg.version_flag) == (2013, "013812345678", 10, True)
    # forced by the device profile
    forced = codec.decode_frame(_reframe(content), DeviceProfile(force_layout=2013))
    assert forced == msg


def test_header_and_checksum_errors(codec):
    with pytest.raises(HeaderShortError):
        codec.decode_frame(hexb("7e0002000001387e"))
    good = hexb(HEARTBEATS[0][0])
    bad = good[:-2] + bytes([good[-2] ^ 1]) + good[-1:]
    with pytest.raises(ChecksumError) as info:
        codec.decode_frame(bad)
    assert info.value.header == m.Header(2, 0, 2013, 0, "013812345678", 1, 0, 0)
    lenient = codec.decode_frame(bad, DeviceProfile(lenient_checksum=True))
    assert (lenient.checksum_ok, lenient.serial) == (False, 1)
    longer = _reframe(hexb("000200010138123456780001"))  # says 1 body byte, has none
    with pytest.raises(LengthError):
        codec.decode_frame(longer)
    assert codec.decode_frame(longer, DeviceProfile(lenient_length=True)).length_ok is False


def test_body_error_carries_the_header(codec):
    # a 0x0200 with a 4-byte body: truncated, but answerable
    with pytest.raises(m.TruncatedError) as info:
        codec.decode_frame(codec.encode_frame(0x0200, b"\0\0\0\1", "013812345678", 5))
    assert info.value.header.serial == 5 and info.value.kind == "truncated"


# ---------------------------------------------------------------------------
# the buffer bound


def test_frame_too_large_is_reported_and_the_stream_recovers(codec):
    good = hexb(HEARTBEATS[0][0])
    junk_frame = b"\x7e" + b"\x01" * 5000  # no end flag
    data = junk_frame + b"\x7e" + good
    for chunks in ([data], [data[i : i + 7] for i in range(0, len(data), 7)]):
        dec = codec.FrameDecoder(max_buffer=4096)
        out = []
        for c in chunks:
            out += dec.feed(c)
            assert len(dec.pending) < 4096  # the bound holds at every step
        assert [type(x) for x in out] == [FrameTooLargeError, m.Message]
        assert out[1].serial == 1


def test_max_buffer_edge_is_independent_of_chunking(codec):
    # a frame exactly max_buffer bytes long passes; one byte longer is too large
    for size, ok in ((64, True), (65, False)):
        body = b"\x11" * (size - 15)  # 2 flags + 12 header + 1 checksum
        wire = codec.encode_frame(0x0900, body, "013812345678", 1)
        assert len(wire) == size
        for chunking in (lambda d: [d], byte_by_byte):
            (result,) = feed_all(codec.FrameDecoder(max_buffer=64), chunking(wire))
            assert isinstance(result, m.Message) == ok
            if not ok:
                assert isinstance(result, FrameTooLargeError)


def test_malicious_stream_cannot_grow_memory(codec):
    dec = codec.FrameDecoder(max_buffer=1024)
    chunk = b"\x7e" + b"\x55" * 4000
    errors = 0
    for _ in range(50):
        errors += len(dec.feed(chunk))
        assert len(dec.pending) < 1024
    assert errors >= 50


def test_splitter_and_decoder_agree(codec):
    data = b"\x00\x7e\x7e" + hexb(HEARTBEATS[0][0]) + b"\x7e\x7e" + hexb(HEARTBEATS[1][0]) + b"\x01\x7e\x02"
    frames = codec.Splitter().feed(data)
    assert [f.hex() for f in frames] == [HEARTBEATS[0][0], HEARTBEATS[1][0]]
    msgs = codec.FrameDecoder().feed(data)
    assert [x.serial for x in msgs] == [1, 0x4D]


# ---------------------------------------------------------------------------
# hand-built vectors for what the public set lacks. Each was built with Python's
# struct module (big-endian fields as in jt808.md §4), XOR over header+body, then
# escaping 7d -> 7d01 and 7e -> 7d02 (not with this codec), and checked by hand.

# 0x0200, 2013 header, phone 013812345678, serial 0x0031. Alarm 0x20000000 =
# bit 29 collision warning; status 3 (ACC on, positioned); lat 31.230416,
# lon 121.473701; altitude 12 m; speed 562 = 56.2 km/h; direction 90;
# time 24-03-15 08:30:00; items 0x01 mileage 123456 (12345.6 km), 0x30 RSSI 25,
# 0x31 satellites 12.
COLLISION = "7e020000280138123456780031200000000000000301dc89d0073d8aa5000c0232005a24031508300001040001e24030011931010c467e"

# 0x0200, 2019 header (version byte 1, BCD[10] phone 00000000013812345678),
# serial 0x0032. Alarm 0x40000000 = bit 30 rollover warning; lat 22.543096,
# lon 114.057865; altitude 35; speed 0; direction 270; time 24-03-15 08:31:05;
# items 0x02 fuel 456 (45.6 L), 0x25 extended signal 0.
ROLLOVER_2019 = "7e020040260100000000013812345678003240000000000000030157faf806cc628900230000010e240315083105020201c82504000000009a7e"

# 0x0704, 2019 header, serial 0x0033: count 2, type 1 (blind-area backfill).
# Position 1: lat 39.908692, lon 116.397477, alt 50, speed 30.0, dir 10,
# 24-03-15 07:00:00, no items. Position 2: status 7 (bit 2: south), lat
# 33.868820 -> -33.868820, lon 151.209296, alt 5, 24-03-15 07:00:30, item 0x31 = 9.
BATCH_2019 = (
    "7e0704404201000000000138123456780033000201001c00000000000000030260f55406f015a5"
    "0032012c000a240315070000001f00000000000000070204cc14090345500005000000002403150700303101095b7e"
)

# 0x8003 re-request, 2013 (count BYTE): first serial 0x0100, packets 3 and 7.
RESEND_2013 = "7e80030007013812345678000501000200030007b77e"
# the same in 2019 (count WORD), serial 0x0006
RESEND_2019 = "7e80034008010000000001381234567800060100000200030007fa7e"

# 0x0200 with attribute bit 10 set (RSA-encrypted body): 16 opaque bytes 10..1f.
ENCRYPTED = "7e020004100138123456780034101112131415161718191a1b1c1d1e1f137e"


def test_collision_alarm(codec):
    msg = codec.decode_frame(hexb(COLLISION))
    loc = msg.body
    assert_plausible(loc)
    assert (msg.version, msg.serial, loc.alarm) == (2013, 0x31, 1 << 29)
    assert DeviceProfile().alarm_names(loc.alarm) == ["collision"]
    assert (loc.lat, loc.lon, loc.altitude, loc.speed_kmh, loc.direction) == (
        31.230416,
        121.473701,
        12,
        56.2,
        90,
    )
    assert m.civil_from_epoch(loc.device_time) == (2024, 3, 15, 8, 30, 0)
    assert loc.utc() == loc.device_time - 8 * 3600
    assert loc.items == ((0x01, 123456), (0x30, 25), (0x31, 12)) and loc.items_ok


def test_rollover_alarm_2019(codec):
    msg = codec.decode_frame(hexb(ROLLOVER_2019))
    loc = msg.body
    assert_plausible(loc)
    assert (msg.version, msg.proto_version, msg.phone) == (2019, 1, "00000000013812345678")
    assert DeviceProfile().alarm_names(loc.alarm, 2019) == ["rollover"]
    assert DeviceProfile().mask("collision", "rollover", "emergency") & loc.alarm == 1 << 30
    assert (loc.lat, loc.lon, loc.direction) == (22.543096, 114.057865, 270)
    assert loc.items == ((0x02, 456), (0x25, 0))


def test_location_batch_2019(codec):
    msg = codec.decode_frame(hexb(BATCH_2019))
    batch = msg.body
    assert (msg.version, batch.batch_type, batch.count, batch.truncated) == (2019, 1, 2, False)
    p1, p2 = batch.positions
    assert_plausible(p1)
    assert_plausible(p2)
    assert (p1.lat, p1.lon, p1.speed_kmh, p1.items) == (39.908692, 116.397477, 30.0, ())
    assert (p2.lat, p2.lon, p2.items) == (-33.86882, 151.209296, ((0x31, 9),))
    assert m.civil_from_epoch(p2.device_time) == (2024, 3, 15, 7, 0, 30)


def test_resend_request_both_layouts(codec):
    for wire, version in ((RESEND_2013, 2013), (RESEND_2019, 2019)):
        msg = codec.decode_frame(hexb(wire))
        assert msg.version == version
        assert msg.body == m.ResendRequest(0x0100, (3, 7))
        # and our encoder writes the same body for that layout
        assert m.encode_body(msg.body, version) == m.push_resend_request(msg.body, version)
        assert codec.encode_frame(
            0x8003, m.encode_body(msg.body, version), msg.phone, msg.serial, version
        ) == hexb(wire)


def test_encrypted_flag_reported_not_decrypted(codec):
    msg = codec.decode_frame(hexb(ENCRYPTED))
    assert msg.encrypt == 1
    assert msg.body == bytes(range(0x10, 0x20))


def test_wrap_location_reports(codec):
    # the connection's hot path: plain 0x0200 reports come back wrapped in a one-field record
    from protocols.jt808.events import LocationReported

    loc = m.push_location(m.make_location(1.0, 2.0, device_time=None))
    data = (
        codec.encode_frame(0x0200, loc, "013812345678", 1)
        + hexb(HEARTBEATS[0][0])
        + codec.encode_frame(0x0200, loc, "013812345678", 2, encrypt=1)  # encrypted: not wrapped
        + codec.encode_frame(0x0200, loc, "013812345678", 3)
    )
    plain = codec.FrameDecoder().feed(data)
    dec = codec.FrameDecoder()
    wrapped = dec.feed(data, LocationReported)
    assert dec.wrapped == 2
    assert [type(x) for x in wrapped] == [LocationReported, m.Message, m.Message, LocationReported]
    assert [x.message if type(x) is LocationReported else x for x in wrapped] == plain
    assert (
        codec.encode_ack(wrapped[0], 9)
        == codec.encode_ack(plain[0], 9)
        == codec.encode_general_response("013812345678", 2013, 0, 9, 1, 0x0200, 0)
    )


# ---------------------------------------------------------------------------
# resynchronising: a suspect candidate's closing flag also starts the next one
# (codec.py, "Resynchronising"); each stream fed whole, byte by byte and after junk

GOOD = HEARTBEATS[0][0]  # heartbeat, serial 1
# a 0x0200 cut off after 11 content bytes, then a whole 0x0200 (serial 2) and a heartbeat (serial 3)
CUT_OFF_STREAM = (
    "7e0200001c01381234567800"
    "7e0200001c0138123456780002200000000000000301dc89d0073d8aa5000c0232005a240315083000f37e"
    "7e000200000138123456780003307e"
)


def _bad_checksum(wire: str) -> bytes:
    data = hexb(wire)
    return data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]


def _kinds(results):
    return [x.serial if isinstance(x, m.Message) else x.kind for x in results]


def _everywhere(codec, data, profile=None):
    """The decoder's results and pending, the same for every chunking; and the Splitter agrees.

    (``after_junk`` appends two junk bytes, which stay pending after a dangling start flag,
    so only its results are compared.)"""
    outs = []
    for chunking in CHUNKINGS:
        dec = codec.FrameDecoder(profile)
        outs.append((_kinds(feed_all(dec, chunking(data))), dec.pending))
        sp = codec.Splitter()
        frames = feed_all(sp, chunking(data))
        decoded = []
        for f in frames:
            try:
                decoded.append(codec.decode_frame(f, profile))
            except Jt808ProtocolError as exc:
                decoded.append(exc)
        assert (_kinds(decoded), sp.pending) == outs[-1]
    assert outs[0] == outs[1] and outs[2][0] == outs[0][0], outs
    return outs[0]


def test_junk_with_a_flag_before_a_frame(codec):
    # "AA 7E BB" read as a candidate "7E BB 7E": header_short, and the heartbeat is not lost
    data = hexb("aa7ebb") + hexb(GOOD)
    assert _everywhere(codec, data) == (["header_short", 1], b"")
    assert [f.hex() for f in codec.Splitter().receive_data(data)] == ["7ebb7e", GOOD]
    # several junk flags, the last one right before the frame's start flag
    assert _everywhere(codec, hexb("7e7e01027e03") + hexb(GOOD) + hexb(GOOD)) == (
        ["header_short", "header_short", 1, 1],
        b"",
    )


def test_cut_off_frame_before_a_good_one(codec):
    assert _everywhere(codec, hexb(CUT_OFF_STREAM)) == (["header_short", 2, 3], b"")
    # cut off anywhere in its content (even inside an escape): the next frame survives
    whole = codec.encode_frame(0x0900, b"\x7e\x7d" * 10, "013812345678", 7)
    for cut in range(1, len(whole) - 1):
        results, pending = _everywhere(codec, whole[:cut] + hexb(GOOD))
        assert results[-1] == 1 and pending == b"", cut
        assert len(results) <= 2


def test_shared_flag_between_a_bad_and_a_good_frame(codec):
    bad = _bad_checksum(COLLISION)
    data = bad + hexb(GOOD)[1:]  # one flag ends the bad frame and starts the good one
    assert _everywhere(codec, data) == (["checksum", 1], b"")
    # lenient: the bad frame decodes (flagged), and is still suspect, so its flag is reused too
    lenient = DeviceProfile(lenient_checksum=True)
    assert _everywhere(codec, data, lenient) == ([0x31, 1], b"")
    # a body length that fits neither layout, and a lone 0x7D checksum, are framing failures too
    longer = _reframe(hexb("000200010138123456780001"))
    assert _everywhere(codec, longer + hexb(GOOD)[1:]) == (["length", 1], b"")
    both = DeviceProfile(lenient_length=True, lenient_trailing_7d=True)
    assert _everywhere(codec, longer + hexb(GOOD)[1:], both) == ([1, 1], b"")
    lone_7d = hexb("7e00020000013812345678004e7d7e")  # checksum 0x7d sent unescaped
    assert _everywhere(codec, lone_7d + hexb(GOOD)[1:]) == (["escape", 1], b"")
    assert _everywhere(codec, lone_7d + hexb(GOOD)[1:], both) == ([0x4E, 1], b"")


def test_well_formed_frames_keep_their_closing_flag(codec):
    # back-to-back frames: the reused flag and the next start flag make an empty candidate
    data = hexb(GOOD) + _bad_checksum(GOOD) + hexb(GOOD) + hexb(HEARTBEATS[1][0])
    assert _everywhere(codec, data) == ([1, "checksum", 1, 0x4D], b"")
    # junk after a good frame is dropped silently, as before
    assert _everywhere(codec, hexb(GOOD) + hexb("deadbeef")) == ([1], b"")
    # a body error in a well-formed frame is not a framing failure: its flag is not reused,
    # so what follows a single shared flag is junk up to the next flag
    short_body = codec.encode_frame(0x0200, b"\0\0\0\1", "013812345678", 5)
    assert codec.frame_ok(short_body[1:-1])
    assert _everywhere(codec, short_body + hexb(GOOD)[1:]) == (["truncated"], b"")
    assert _everywhere(codec, short_body + hexb(GOOD)) == (["truncated", 1], b"")


def test_frame_ok(codec):
    assert codec.frame_ok(hexb(GOOD)[1:-1])
    assert codec.frame_ok(hexb(HEARTBEATS[1][0])[1:-1])  # escaped checksum
    assert codec.frame_ok(hexb(ROLLOVER_2019)[1:-1])
    assert codec.frame_ok(_reframe(hexb("00024000013812345678000a"))[1:-1])  # flagged 2019, 2013 layout
    assert not codec.frame_ok(b"")
    assert not codec.frame_ok(hexb("bb"))
    assert not codec.frame_ok(_bad_checksum(GOOD)[1:-1])
    assert not codec.frame_ok(hexb("00024000013812345678000a7d03"))  # bad escape
    assert not codec.frame_ok(hexb("7e0200001c01381234567800")[1:])  # cut off
    longer = _reframe(hexb("000200010138123456780001"))
    assert not codec.frame_ok(longer[1:-1])


def test_force_layout_does_not_change_the_split(codec):
    # the framing check ignores the profile: a 2013 frame read with a forced 2019 layout is an
    # error (its header is too short for 2019) but a well-formed frame, whose flag is not reused
    forced = DeviceProfile(force_layout=2019)
    assert _everywhere(codec, hexb(GOOD) + hexb(GOOD), forced) == (["header_short", "header_short"], b"")


def test_receive_data_is_feed(codec):
    data = hexb("aa7ebb") + hexb(GOOD) + hexb("7e0002")
    a, b = codec.Splitter(), codec.Splitter()
    assert a.receive_data(data) == b.feed(data) and a.pending == b.pending == hexb("7e0002")
    c, d = codec.FrameDecoder(), codec.FrameDecoder()
    assert c.receive_data(data) == d.feed(data) and c.pending == d.pending == hexb("7e0002")


def test_a_lone_flag_is_held_but_not_pending(codec):
    # the closing flag of a suspect candidate at the end of a read: held, not reported
    dec, sp = codec.FrameDecoder(), codec.Splitter()
    assert _kinds(dec.receive_data(hexb("7ebb7e"))) == ["header_short"]
    assert [f.hex() for f in sp.receive_data(hexb("7ebb7e"))] == ["7ebb7e"]
    assert dec.pending == sp.pending == b""
    # ...but it still starts the next frame
    rest = hexb(GOOD)[1:]
    assert _kinds(dec.receive_data(rest)) == [1]
    assert [f.hex() for f in sp.receive_data(rest)] == [GOOD]
    with pytest.raises(m.TruncatedError):
        codec.decode_frame(b"\x7e")
