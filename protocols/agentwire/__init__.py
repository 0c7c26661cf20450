"""The agent and subscriber protocol: one message set, two encodings.

Agents (call-centre staff, or the desktop software they use) and subscribers
(downstream contact systems: CRM, ticketing, PBX, wallboards) exchange maps
with the gateway. Over WebSocket each message is one JSON text frame; over TCP
each message is a msgpack map prefixed by its length as a 4-byte big-endian
unsigned integer. The maps are identical in both encodings.

This module is sans-IO: :class:`FrameDecoder` turns received bytes into
messages, :func:`encode_frame` turns a message into bytes, and
:func:`check_client_message` validates what a client sent, raising
:class:`BadMessage` with a machine-readable ``code`` and a human ``message``
(the gateway answers ``{"type": "error", "code": ..., "message": ...}`` and
keeps the connection).

The message reference is docs/agent-protocol.md.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import orjson

MAX_FRAME = 1 << 20  # 1 MiB: far above any message of this protocol

_LEN = struct.Struct(">I")


class WireError(Exception):
    """The byte stream is broken (oversized frame, undecodable msgpack): close the connection."""


class BadMessage(Exception):
    """A well-framed message that is not valid: answer with an error and carry on."""

    def __init__(self, code: str, message: str, *, ref: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref  # the client's "id" (or offer/session) when it had one

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            out["ref"] = self.ref
        return out


def encode_frame(message: dict[str, Any]) -> bytes:
    """One message as a length-prefixed msgpack frame."""
    body = msgpack.packb(message, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def encode_json(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def decode_json(text: str | bytes) -> dict[str, Any]:
    """A WebSocket text frame to a message; BadMessage if it is not a JSON object."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise BadMessage("bad_json", f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadMessage("bad_message", "a message must be a JSON object")
    return value


class FrameDecoder:
    """Split a TCP byte stream into msgpack messages.

    ``receive_data(data)`` returns the complete messages it now holds (possibly
    none). A frame longer than ``max_frame`` raises :class:`WireError` before
    it is buffered, so a peer cannot make the buffer grow past the bound. A
    frame that is not a msgpack map yields a :class:`BadMessage` *instance* in
    the returned list (the stream itself is still in sync, so the connection
    can carry on after an error reply).
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def receive_data(self, data: bytes) -> list[dict[str, Any] | BadMessage]:
        buf = self._buf
        buf += data
        out: list[dict[str, Any] | BadMessage] = []
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > self.max_frame:
                raise WireError(f"frame of {n} bytes exceeds the {self.max_frame}-byte limit")
            if len(buf) - pos - 4 < n:
                break
            body = bytes(buf[pos + 4 : pos + 4 + n])
            pos += 4 + n
            try:
                value = msgpack.unpackb(body, raw=False, strict_map_key=False)
            except Exception as e:  # msgpack raises several types for bad input
                out.append(BadMessage("bad_msgpack", f"not valid msgpack: {type(e).__name__}"))
                continue
            if isinstance(value, dict):
                out.append(value)
            else:
                out.append(BadMessage("bad_message", "a message must be a msgpack map"))
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


# ---------------------------------------------------------------------------
# Client messages and their fields. Each entry: type -> {field: (kind, required)}.
# kinds: "str", "int", "num", "dict", "list", "id" (a string or an integer), "any"

AGENT_STATES = ("available", "break", "logout")
COMMANDS = ("text", "callback", "locate", "track", "confirm_alarm")

AGENT_MESSAGES: dict[str, dict[str, tuple[str, bool]]] = {
    "login": {"agent": ("str", True), "token": ("str", True), "state": ("str", False), "id": ("any", False)},
    "state": {"state": ("str", True), "reason": ("str", False), "id": ("any", False)},
    "accept": {"offer": ("id", True), "id": ("any", False)},
    "reject": {"offer": ("id", True), "reason": ("str", False), "id": ("any", False)},
    "complete": {
        "session": ("str", True),
        "disposition": ("any", False),
        "notes": ("str", False),
        "id": ("any", False),
    },
    "command": {
        "session": ("str", True),
        "command": ("str", True),
        "id": ("any", False),
        "text": ("str", False),
        "flag": ("int", False),
        "text_type": ("int", False),
        "phone": ("str", False),
        "monitor": ("any", False),
        "interval_s": ("int", False),
        "duration_s": ("int", False),
        "alarm_serial": ("int", False),
        "alarm_type": ("int", False),
        "expires_in_s": ("num", False),
    },
    "ping": {"id": ("any", False)},
}

SUBSCRIBER_MESSAGES: dict[str, dict[str, tuple[str, bool]]] = {
    "subscribe": {
        "subscriber": ("str", True),
        "token": ("str", True),
        "after": ("int", False),
        "filter": ("dict", False),
    },
    "ping": {"id": ("any", False)},
}

_KINDS = {
    "str": (str,),
    "int": (int,),
    "num": (int, float),
    "dict": (dict,),
    "list": (list,),
    "id": (str, int),
}


def check_client_message(
    message: dict[str, Any], spec: dict[str, dict[str, tuple[str, bool]]]
) -> dict[str, Any]:
    """Validate a client message against ``spec`` (AGENT_MESSAGES or SUBSCRIBER_MESSAGES).

    Returns the message unchanged when valid; raises BadMessage otherwise.
    Unknown extra fields are allowed (forward compatibility), wrong types are not.
    """
    ref = message.get("id", message.get("offer", message.get("session")))
    mtype = message.get("type")
    if not isinstance(mtype, str):
        raise BadMessage("bad_message", "missing 'type'", ref=ref)
    fields = spec.get(mtype)
    if fields is None:
        raise BadMessage(
            "unknown_type", f"unknown message type {mtype!r} (known: {', '.join(spec)})", ref=ref
        )
    for name, (kind, required) in fields.items():
        if name not in message or message[name] is None:
            if required:
                raise BadMessage("bad_message", f"{mtype}: missing '{name}'", ref=ref)
            continue
        if kind == "any":
            continue
        value = message[name]
        if isinstance(value, bool) or not isinstance(value, _KINDS[kind]):
            raise BadMessage(
                "bad_message", f"{mtype}: '{name}' must be {kind}, got {type(value).__name__}", ref=ref
            )
    return message
