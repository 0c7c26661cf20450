"""Conformance: the public vectors (tests/data/jt808_public.json, a copy of
shared/vectors/jt808_public.json) on both implementations.

Every frame decodes to its ``expect`` values; frames whose source bytes are
inconsistent (checksum_ok / length_ok / escape_ok false) are rejected in strict
mode and decoded in lenient mode; error frames raise their ``error_kind``;
every subpackage group reassembles; every stream splits as listed.
"""

from __future__ import annotations

import pytest
from jt808_helpers import CHUNKINGS, feed_all, hexb, location_view, message_view, vectors

from protocols.jt808 import messages as m
from protocols.jt808.bits import DeviceProfile
from protocols.jt808.errors import Jt808ProtocolError, TruncatedError
from protocols.jt808.reassembly import Reassembler

V = vectors()
FRAMES = {f["id"]: f for f in V["frames"]}
STRICT = DeviceProfile()
LENIENT = DeviceProfile(name="lenient", lenient_checksum=True, lenient_length=True, lenient_trailing_7d=True)


def profile_for(frame: dict, lenient: bool) -> DeviceProfile:
    """The vector's decode_hints as a device-model profile."""
    hints = frame.get("decode_hints", {})
    base = LENIENT if lenient else STRICT
    changes = {}
    if "layout" in hints:
        changes["force_layout"] = int(hints["layout"])
    if hints.get("lenient_trailing_7d"):
        changes["lenient_trailing_7d"] = True
    return base.with_options(**changes) if changes else base


def is_inconsistent(expect: dict) -> bool:
    return not all(expect.get(k, True) for k in ("checksum_ok", "length_ok", "escape_ok"))


def test_vector_file_is_complete():
    assert len(V["frames"]) == 107
    assert len(V["groups"]) == 3
    assert len(V["streams"]) == 9


@pytest.mark.parametrize("fid", sorted(f["id"] for f in V["frames"] if "error" not in f["expect"]))
def test_frame_decodes_to_expect(codec, fid):
    frame = FRAMES[fid]
    wire = hexb(frame["hex"])
    expect = frame["expect"]
    lenient = is_inconsistent(expect)
    msg = codec.decode_frame(wire, profile_for(frame, lenient))
    view = message_view(msg, wire, codec)
    missing = set(expect) - set(view)
    assert not missing, f"keys not produced: {missing}"
    assert {k: view[k] for k in expect} == expect
    assert msg.msg_id == int(frame["msg_id"], 16)
    version = 2013 if frame["version"] == "2011" else int(frame["version"])
    assert msg.version == version
    if frame["version"] == "2011":
        assert msg.body.layout == 2011


@pytest.mark.parametrize("fid", sorted(f["id"] for f in V["frames"] if is_inconsistent(f["expect"])))
def test_inconsistent_frame_rejected_in_strict_mode(codec, fid):
    frame = FRAMES[fid]
    expect = frame["expect"]
    kinds = {
        kind
        for kind, key in (("checksum", "checksum_ok"), ("length", "length_ok"), ("escape", "escape_ok"))
        if expect.get(key) is False
    }
    with pytest.raises(Jt808ProtocolError) as info:
        codec.decode_frame(hexb(frame["hex"]), STRICT)
    assert info.value.kind in kinds


@pytest.mark.parametrize("fid", sorted(f["id"] for f in V["frames"] if "error" in f["expect"]))
def test_error_frame_raises_its_kind(codec, fid):
    frame = FRAMES[fid]
    wire = hexb(frame["hex"])
    kind = frame["expect"]["error_kind"]
    with pytest.raises(Jt808ProtocolError) as info:
        codec.decode_frame(wire, STRICT)
    assert info.value.kind == kind
    # on a stream: the same error in stream order, or (no end flag) the bytes stay pending
    for chunking in CHUNKINGS:
        dec = codec.FrameDecoder(STRICT)
        chunks = chunking(wire)
        out = feed_all(dec, chunks)
        if kind == "truncated":  # everything from the start flag on is held, junk included
            assert out == [] and dec.pending == b"".join(chunks)[b"".join(chunks).index(b"\x7e") :]
        else:
            assert [e.kind for e in out] == [kind]


@pytest.mark.parametrize(
    "fid", ["sc-0200-2013", "go-0200-escaped", "sc-0002-escaped-checksum", "hy-0704-2019"]
)
def test_frame_decodes_the_same_however_it_arrives(codec, fid):
    wire = hexb(FRAMES[fid]["hex"])
    reference = codec.decode_frame(wire)
    for chunking in CHUNKINGS:
        (msg,) = feed_all(codec.FrameDecoder(), chunking(wire))
        assert msg == reference


def group_bodies(group_id: str, codec) -> list[m.Message]:
    group = V["groups"][group_id]
    return [codec.decode_frame(hexb(FRAMES[mid]["hex"]), LENIENT) for mid in group["members"]]


@pytest.mark.parametrize("group_id", sorted(V["groups"]))
@pytest.mark.parametrize("order", ["in_order", "reversed"])
def test_group_reassembles(codec, group_id, order):
    group = V["groups"][group_id]
    packets = group_bodies(group_id, codec)
    assert sum(len(p.body) for p in packets) == group["body_len"]
    r = Reassembler(max_bytes=64 * 1024)
    results = []
    for p in packets if order == "in_order" else reversed(packets):
        done, _missing = r.add(p, 0.0)
        results.append(done)
    assert all(x is None for x in results[:-1])
    msg = results[-1]
    assert msg is not None and len(r) == 0 and r.held_bytes == 0
    assert msg.msg_id == int(group["msg_id"], 16)
    assert msg.pkg_total == group["pkg_total"]
    body = msg.body
    if group_id == "sc-0104":
        assert body.reply_serial == group["reply_serial"]
        assert body.count == group["param_count"] == len(body.params)
        assert body.complete
    elif group_id == "sc-0801-demo5":
        assert (body.media_id, body.media_type, body.media_format, body.event_code, body.channel) == (
            group["media_id"],
            group["media_type"],
            group["media_format"],
            group["event_code"],
            group["channel"],
        )
        assert len(body.data) == group["media_data_len"]
        assert body.data[:2] == b"\xff\xd8" and body.data[-2:] == b"\xff\xd9"  # a whole JPEG
        view = location_view(body.location, with_items=False)
        assert {k: view[k] for k in group["location"]} == group["location"]
    else:
        assert isinstance(body, bytes) and len(body) == group["body_len"]


@pytest.mark.parametrize("sid", [s["id"] for s in V["streams"]])
def test_stream_splits(codec, sid):
    stream = next(s for s in V["streams"] if s["id"] == sid)
    chunks = [hexb(c) for c in stream["chunks"]]
    data = b"".join(chunks)
    for feed in (chunks, [data[i : i + 1] for i in range(len(data))]):
        sp = codec.Splitter()
        frames = feed_all(sp, feed)
        assert [f.hex() for f in frames] == [f.lower() for f in stream["expect_frames"]]
        assert sp.pending.hex() == stream["expect_tail"]
    for frame, unescaped in zip(frames, stream.get("expect_unescaped", [])):
        assert (b"\x7e" + codec.unescape(frame[1:-1]) + b"\x7e").hex() == unescaped
    # expect_valid is about the frame (flags, escapes, header, checksum, length), not the body:
    # go-two-complete-plus-half holds a header-only 0x8001, valid as a frame, whose missing
    # body is a TruncatedError that still carries the header (so it can be answered)
    for frame, valid in zip(frames, stream.get("expect_valid", [])):
        try:
            codec.decode_frame(frame)
            frame_ok = True
        except Jt808ProtocolError as exc:
            frame_ok = type(exc) is TruncatedError and exc.header is not None
        assert frame_ok == valid
    # the decoder splits the same way: one result per frame, errors in place
    results = codec.FrameDecoder().feed(data)
    assert len(results) == len(stream["expect_frames"])
