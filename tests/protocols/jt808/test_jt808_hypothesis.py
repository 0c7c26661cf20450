"""Hypothesis: the compiled and reference implementations agree on everything, and no input
raises anything but a Jt808ProtocolError (never IndexError, struct.error, UnicodeDecodeError)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jt808_helpers import IMPLEMENTATIONS

from protocols.jt808 import codec as reference
from protocols.jt808 import messages as m
from protocols.jt808.bits import DeviceProfile
from protocols.jt808.errors import Jt808LocalError, Jt808ProtocolError

IMPLS = [IMPLEMENTATIONS[k] for k in sorted(IMPLEMENTATIONS)]
PROFILES = [
    DeviceProfile(),
    DeviceProfile(lenient_checksum=True, lenient_length=True, lenient_trailing_7d=True),
    DeviceProfile(force_layout=2019),
]

# bytes that matter to the framing are drawn far more often than chance would
wire_bytes = st.lists(
    st.one_of(st.sampled_from([0x7E, 0x7D, 0x01, 0x02, 0x00, 0x40, 0x20]), st.integers(0, 255)),
    max_size=400,
).map(bytes)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def run(codec, chunks: list[bytes], profile: DeviceProfile, max_buffer: int):
    dec = codec.FrameDecoder(profile, max_buffer)
    out = []
    for c in chunks:
        out += dec.feed(c)
        assert len(dec.pending) < max_buffer
    for x in out:
        assert isinstance(x, (m.Message, Jt808ProtocolError)), x
    return out, dec.pending


def assert_same(results):
    (a, pa), (b, pb) = results[0], results[-1]
    assert pa == pb
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert type(x) is type(y)
        assert x == y  # errors: same class and same header


@given(
    wire_bytes,
    st.lists(st.integers(0, 1000), max_size=6),
    st.sampled_from(PROFILES),
    st.sampled_from([16, 64, 4096]),
)
def test_random_bytes_decode_the_same(data, cuts, profile, max_buffer):
    results = [run(c, chunked(data, cuts), profile, max_buffer) for c in IMPLS]
    assert_same(results)
    # and the chunking does not change the result
    whole = run(IMPLS[-1], [data], profile, max_buffer)
    assert_same([results[-1], whole])
    # and decoding each frame the Splitter yields (telacd decode --raw) gives the same
    for c in IMPLS:
        assert_same([split_then_decode(c, chunked(data, cuts), profile, max_buffer), whole])


def split_then_decode(codec, chunks: list[bytes], profile: DeviceProfile, max_buffer: int):
    sp = codec.Splitter(max_buffer)
    out = []
    for chunk in chunks:
        for f in sp.receive_data(chunk):
            if isinstance(f, bytes):
                try:
                    f = codec.decode_frame(f, profile)
                except Jt808ProtocolError as exc:
                    f = exc
            out.append(f)
        assert len(sp.pending) < max_buffer
    return out, sp.pending


def _framed(msg_id: int, body: bytes, version: int, serial: int) -> bytes:
    phone = "00000000013812345678" if version == 2019 else "013812345678"
    return reference.encode_frame(msg_id, body, phone, serial, version)


MSG_IDS = [*sorted(m.BODY_DECODERS), 0x1205, 0x5501]


@given(
    st.sampled_from(MSG_IDS),
    st.binary(max_size=120),
    st.sampled_from([2013, 2019]),
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3),
)
def test_random_bodies_and_mutations_decode_the_same(msg_id, body, version, serial, flips):
    wire = bytearray(_framed(msg_id, body, version, serial))
    for pos, value in flips:  # corrupt a few bytes (flags and escapes included)
        wire[pos % len(wire)] = value
    data = bytes(wire)
    for profile in PROFILES[:2]:
        assert_same([run(c, [data], profile, 4096) for c in IMPLS])


# Streams of valid frames with noise between them: junk (at most 12 bytes, 0x7e included),
# a 2013-layout frame cut off before its end (with at least one content byte missing, so its
# length bits fit neither layout), or a frame with a wrong checksum, with or without its own
# end flag (without: it shares its closing flag with the next frame). None of the noise can be
# a well-formed frame, so by the resynchronising rule no valid frame may be lost.
def _valid_frame(msg_id: int, body: bytes, version: int, serial: int) -> bytes:
    if msg_id == 0x0900:
        body = b"\xf0" + body  # passthrough type, then the data
    elif msg_id == 0x0200:
        body = body + bytes(28)  # any 28+ bytes are a location (items kept raw if odd)
    return _framed(msg_id, body, version, serial)


valid_frame = st.builds(
    _valid_frame,
    st.sampled_from([0x0002, 0x0900, 0x0200]),
    st.binary(max_size=40),
    st.sampled_from([2013, 2019]),
    st.integers(0, 0xFFFF),
)


def _bad_checksum(frame: bytes, delta: int) -> bytes:
    u = reference.unescape(frame[1:-1])
    return b"\x7e" + reference.escape(u[:-1] + bytes([u[-1] ^ delta])) + b"\x7e"


@st.composite
def noise(draw):
    kind = draw(st.sampled_from(["junk", "cut", "bad", "bad_shared"]))
    if kind == "junk":
        return draw(st.binary(max_size=12))
    frame = draw(valid_frame)
    if kind == "cut":
        frame = _framed(0x0900, draw(st.binary(min_size=1, max_size=40)), 2013, 1)
        return frame[: draw(st.integers(1, len(frame) - 2))]
    bad = _bad_checksum(frame, draw(st.integers(1, 255)))
    return bad if kind == "bad" else bad[:-1]


@st.composite
def noisy_streams(draw):
    pieces, frames = [], []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            pieces.append(draw(noise()))
        frame = draw(valid_frame)
        pieces.append(frame)
        frames.append(frame)
    if draw(st.booleans()):
        pieces.append(draw(noise()))
    return b"".join(pieces), frames


@given(noisy_streams(), st.lists(st.integers(0, 1000), max_size=8))
def test_no_valid_frame_is_lost_after_noise(stream, cuts):
    data, frames = stream
    expected = [reference.decode_frame(f) for f in frames]
    for profile in PROFILES[:2]:
        results = [run(c, chunked(data, cuts), profile, 1 << 16) for c in IMPLS]
        results.append(run(IMPLS[-1], [data], profile, 1 << 16))
        results += [split_then_decode(c, chunked(data, cuts), profile, 1 << 16) for c in IMPLS]
        for r in results[1:]:
            assert_same([results[0], r])
        messages = [x for x in results[0][0] if isinstance(x, m.Message)]
        if profile is PROFILES[0]:  # strict: exactly the valid frames
            assert messages == expected
        else:  # lenient: noise may decode too (flagged), the valid frames in order among it
            it = iter(messages)
            assert all(any(x == e for x in it) for e in expected)


def _u(n: int):
    return st.integers(0, (1 << (8 * n)) - 1)


std_item = st.one_of(
    *[st.tuples(st.just(i), _u(size)) for i, size in m.ITEM_UINT_SIZES.items()],
    st.tuples(st.just(0x06), st.integers(-0x7FFF, 0x7FFF)),
    st.tuples(st.just(0x11), st.tuples(st.integers(0, 255), st.none() | _u(4))),
    st.tuples(st.just(0x12), st.tuples(st.integers(0, 255), _u(4), st.integers(0, 255))),
    st.tuples(st.just(0x13), st.tuples(_u(4), _u(2), st.integers(0, 255))),
    st.tuples(st.just(0x05), st.binary(min_size=30, max_size=30)),
)
NON_STANDARD = [
    i for i in range(256) if i not in m.ITEM_UINT_SIZES and i not in (0x05, 0x06, 0x11, 0x12, 0x13)
]
raw_item = st.tuples(st.sampled_from(NON_STANDARD), st.binary(max_size=12))


@st.composite
def locations(draw):
    status = draw(_u(4))
    lat = draw(st.integers(0, 90_000_000)) / 1000000.0
    lon = draw(st.integers(0, 180_000_000)) / 1000000.0
    if status & 4:
        lat = -lat
    if status & 8:
        lon = -lon
    t = draw(st.none() | st.integers(946684800, 4102444799))  # 2000..2099
    items = draw(st.lists(st.one_of(std_item, raw_item), max_size=8))
    return m.Location(
        draw(_u(4)),
        status,
        lat,
        lon,
        draw(_u(2)),
        draw(_u(2)) / 10.0,
        draw(_u(2)),
        t,
        bytes(i for i, _ in items),
        tuple(v for _, v in items),
        True,
    )


@given(st.lists(locations(), min_size=1, max_size=6), st.sampled_from([2013, 2019]), st.integers(0, 0xFFFF))
def test_valid_locations_round_trip_on_both(locs, version, serial):
    frames = b"".join(
        _framed(0x0200, m.push_location(loc), version, (serial + k) & 0xFFFF) for k, loc in enumerate(locs)
    )
    batch = m.LocationBatch(1, len(locs), tuple(locs), False)
    batch_body = m.encode_body(batch, version)
    if len(batch_body) <= 1023:
        frames += _framed(0x0704, batch_body, version, 7)
    results = [run(c, [frames], PROFILES[0], 1 << 16) for c in IMPLS]
    assert_same(results)
    decoded = results[0][0]
    assert [x.body for x in decoded[: len(locs)]] == locs
    if len(decoded) > len(locs):
        assert decoded[-1].body == batch


@given(
    st.integers(0, 0xFFFF),
    st.binary(max_size=300),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.integers(0, 0xFFFF),
    st.sampled_from([2011, 2013, 2019]),
    st.integers(0, 255),
    st.integers(0, 3),
)
def test_encoders_agree(msg_id, body, phone, serial, version, proto, pkg_total):
    outs = []
    for c in IMPLS:
        try:
            outs.append(
                c.encode_frame(msg_id, body, phone, serial, version, proto, pkg_total, min(pkg_total, 1))
            )
        except Jt808LocalError as exc:
            outs.append(type(exc))
    assert outs[0] == outs[-1]
    if isinstance(outs[0], bytes):
        assert reference.checksum(reference.unescape(outs[0][1:-1])) == 0
        acks = [
            c.encode_general_response(phone, version, proto, serial, serial ^ 1, msg_id, 2) for c in IMPLS
        ]
        assert acks[0] == acks[-1]
        assert [c.escape(body) for c in IMPLS] == [reference.escape(body)] * len(IMPLS)
        assert all(c.unescape(c.escape(body)) == body for c in IMPLS)
        assert len({c.checksum(body) for c in IMPLS}) == 1


@given(st.sampled_from(sorted(m.BODY_DECODERS)), st.binary(max_size=200), st.sampled_from([2013, 2019]))
def test_body_decoders_raise_only_protocol_errors(msg_id, body, version):
    try:
        m.decode_body(msg_id, body, version)
    except Jt808ProtocolError:
        pass


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@given(wire_bytes, st.lists(st.integers(0, 1000), max_size=8))
def test_splitter_is_chunking_independent(name, data, cuts):
    c = IMPLEMENTATIONS[name]

    def split(chunks):
        sp = c.Splitter(max_buffer=32)
        out = []
        for ch in chunks:
            out += sp.feed(ch)
        return [x if isinstance(x, bytes) else type(x) for x in out], sp.pending

    assert split(chunked(data, cuts)) == split([data])


@given(locations())
def test_location_encoders_agree(loc):
    # the terminal side's compiled 0x0200 body encoder writes what the reference writes
    expected = m.push_location(loc)
    assert [c.encode_location(loc) for c in IMPLS] == [expected] * len(IMPLS)


@given(
    st.integers(-1, 1 << 33),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-1, 0x10000),
    st.none() | st.integers(0, 5_000_000_000),
    st.lists(st.tuples(st.sampled_from([0x01, 0x06, 0x30, 0xE1]), st.integers(-0x9000, 1 << 33)), max_size=3),
)
def test_location_encoders_refuse_the_same(alarm, lat, altitude, t, items):
    loc = m.Location(
        alarm, 0, lat, 1.0, altitude, 1.0, 0, t, bytes(i for i, _ in items), tuple(v for _, v in items), True
    )
    outs = []
    for c in IMPLS:
        try:
            outs.append(c.encode_location(loc))
        except Jt808LocalError as exc:
            outs.append(type(exc))
    assert outs[0] == outs[-1]
