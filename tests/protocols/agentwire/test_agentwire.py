from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.agentwire import (
    AGENT_MESSAGES,
    SUBSCRIBER_MESSAGES,
    BadMessage,
    FrameDecoder,
    WireError,
    check_client_message,
    decode_json,
    encode_frame,
)

MESSAGES = [
    {"type": "login", "agent": "a1", "token": "secret"},
    {"type": "accept", "offer": "o-1"},
    {"type": "command", "session": "s1", "command": "text", "text": "救援已出发"},
]


def test_frames_survive_any_split():
    stream = b"".join(encode_frame(m) for m in MESSAGES)
    for step in (1, 2, 3, 7, len(stream)):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), step):
            got += dec.receive_data(stream[i : i + step])
        assert got == MESSAGES
        assert dec.buffered == 0


def test_oversized_frame_is_refused_before_buffering():
    dec = FrameDecoder(max_frame=100)
    with pytest.raises(WireError):
        dec.receive_data(struct.pack(">I", 101))


def test_bad_body_is_reported_and_the_stream_stays_in_sync():
    dec = FrameDecoder()
    junk = b"\xc1\xc1"  # 0xc1 is never valid msgpack
    not_a_map = msgpack.packb([1, 2])
    data = (
        struct.pack(">I", len(junk))
        + junk
        + struct.pack(">I", len(not_a_map))
        + not_a_map
        + encode_frame(MESSAGES[0])
    )
    got = dec.receive_data(data)
    assert isinstance(got[0], BadMessage) and got[0].code == "bad_msgpack"
    assert isinstance(got[1], BadMessage) and got[1].code == "bad_message"
    assert got[2] == MESSAGES[0]


@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_other_errors(data):
    dec = FrameDecoder(max_frame=1000)
    try:
        for item in dec.receive_data(data):
            assert isinstance(item, dict | BadMessage)
    except WireError:
        pass


@pytest.mark.parametrize(
    "msg, code",
    [
        ({}, "bad_message"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "login", "agent": "a1"}, "bad_message"),
        ({"type": "login", "agent": 5, "token": "t"}, "bad_message"),
        ({"type": "accept", "offer": True}, "bad_message"),
        ({"type": "accept", "offer": 1.5}, "bad_message"),
    ],
)
def test_invalid_agent_messages(msg, code):
    with pytest.raises(BadMessage) as info:
        check_client_message(msg, AGENT_MESSAGES)
    assert info.value.code == code
    reply = info.value.to_message()
    assert reply["type"] == "error" and reply["code"] == code and reply["message"]


def test_valid_messages_pass_and_error_reply_carries_the_ref():
    for m in MESSAGES:
        assert check_client_message(m, AGENT_MESSAGES) is m
    assert check_client_message({"type": "accept", "offer": 7}, AGENT_MESSAGES)  # ids may be sent as numbers
    assert check_client_message(
        {"type": "subscribe", "subscriber": "s", "token": "t", "after": 5}, SUBSCRIBER_MESSAGES
    )
    with pytest.raises(BadMessage) as info:
        check_client_message({"type": "reject", "offer": [3]}, AGENT_MESSAGES)
    assert info.value.to_message()["ref"] == [3]


def test_json_decoding():
    assert decode_json('{"type":"ping"}') == {"type": "ping"}
    with pytest.raises(BadMessage, match="JSON object"):
        decode_json("[1]")
    with pytest.raises(BadMessage) as info:
        decode_json("{nope")
    assert info.value.code == "bad_json"
