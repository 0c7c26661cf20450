"""Events a :class:`~protocols.jt808.connection.Connection` returns, named for what happened.

Events are NamedTuples (cheap to build: the gateway makes one per location
report). Most carry the decoded :class:`~protocols.jt808.messages.Message` as
``message``; properties give the common fields.

Events with a ``reply`` field were answered by the connection itself
(registration, authentication, heartbeat, logout, packets of a subpackaged
message, 0x8003 re-requests, malformed frames): the caller writes ``reply``
to the peer as is (it may be ``None``: nothing to send). Events without one are
*data* the caller must persist first and then acknowledge with
``conn.ack(event)`` (platform role: 0x8001) — the connection never answers
them on its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .errors import Jt808ProtocolError
from .messages import GeneralResponse, Location, LocationBatch, Message

# ---------------------------------------------------------------------------
# platform role: what a terminal did


class Registered(NamedTuple):
    """0x0100 answered with 0x8100 (``result`` 0 = success, with ``auth_code``)."""

    message: Message
    result: int
    auth_code: str | None
    reply: bytes


class Authenticated(NamedTuple):
    """0x0102 accepted by the auth policy; the connection is online. ``reply`` is the 0x8001."""

    message: Message
    reply: bytes

    @property
    def auth_code(self) -> str:
        return self.message.body.auth_code


class AuthenticationFailed(NamedTuple):
    """0x0102 refused by the auth policy; ``reply`` is the 0x8001 with result 1 (failure)."""

    message: Message
    reply: bytes


class HeartbeatReceived(NamedTuple):
    """0x0002 (vendor bytes, if any, in ``message.body.extra``); ``reply`` is the 0x8001."""

    message: Message
    reply: bytes


class LoggedOut(NamedTuple):
    """0x0003; ``reply`` is the 0x8001. The terminal will close the connection."""

    message: Message
    reply: bytes


class LocationReported(NamedTuple):
    """0x0200. Persist, then ``conn.ack(event)``."""

    message: Message

    @property
    def location(self) -> Location:
        return self.message.body


class LocationBatchReported(NamedTuple):
    """0x0704 (batch_type 1 = blind-area backfill: late data). Persist, then ack once."""

    message: Message

    @property
    def batch(self) -> LocationBatch:
        return self.message.body


class LocationReplied(NamedTuple):
    """0x0201: the answer to our 0x8201 with serial ``reply_serial``. No ack is due."""

    message: Message

    @property
    def reply_serial(self) -> int:
        return self.message.body.reply_serial

    @property
    def location(self) -> Location:
        return self.message.body.location


class CommandAnswered(NamedTuple):
    """0x0001: the terminal's answer to our command ``reply_id`` with serial ``reply_serial``."""

    message: Message

    @property
    def reply_serial(self) -> int:
        return self.message.body.reply_serial

    @property
    def reply_id(self) -> int:
        return self.message.body.reply_id

    @property
    def result(self) -> int:
        return self.message.body.result


class MediaEventReported(NamedTuple):
    """0x0800. Persist, then ack."""

    message: Message


class MediaReceived(NamedTuple):
    """0x0801, reassembled when it came in packets (``message.body`` is a MediaData with the
    first packet's media fields and location). Persist, ack, then send ``conn.media_ack(...)``."""

    message: Message


class PassthroughReceived(NamedTuple):
    """0x0900 (``message.body``: Passthrough; type 0xF0 is the one-key service call). Persist, then ack."""

    message: Message


class MessageReceived(NamedTuple):
    """Any other message: unknown or vendor ids, 0x0104, encrypted bodies (raw bytes)...
    The caller decides the answer, usually ``conn.ack(event, Result.NOT_SUPPORTED)`` or 0."""

    message: Message


class DataBeforeAuth(NamedTuple):
    """A data message arrived before authentication. ``event`` is what it would have produced.

    The caller applies its policy: accept implicitly (``conn.authorize()`` then
    handle ``event`` as usual) or refuse (``conn.ack(event.message, Result.FAILURE)``).
    """

    event: Any

    @property
    def message(self) -> Message:
        return self.event.message


class PacketReceived(NamedTuple):
    """One packet of a subpackaged message that is not complete yet; ``reply`` acks this packet."""

    message: Message
    reply: bytes


class PacketsMissing(NamedTuple):
    """A subpackaged message lacks packets; ``reply`` is the 0x8003 re-request (platform role)."""

    msg_id: int
    first_serial: int
    packet_ids: tuple[int, ...]
    reply: bytes


class ReassemblyExpired(NamedTuple):
    """A subpackaged message was dropped after its timeout, still missing ``packet_ids``."""

    msg_id: int
    first_serial: int
    packet_ids: tuple[int, ...]


class FrameRejected(NamedTuple):
    """A malformed frame. ``reply`` is the 0x8001 "message error" (result 2) when the header was
    readable, else None. Count these and close the connection after too many."""

    error: Jt808ProtocolError
    reply: bytes | None

    @property
    def kind(self) -> str:
        return self.error.kind


class IdleTimeout(NamedTuple):
    """Nothing received for ``idle_s`` seconds: the caller closes the connection."""

    idle_s: float


# ---------------------------------------------------------------------------
# terminal role: what the platform did


class RegisterAnswered(NamedTuple):
    """0x8100 to our 0x0100. On success the connection keeps ``auth_code`` for authenticate()."""

    message: Message

    @property
    def result(self) -> int:
        return self.message.body.result

    @property
    def auth_code(self) -> str | None:
        return self.message.body.auth_code


class Acknowledged(NamedTuple):
    """0x8001 to one of our messages (``reply_serial``)."""

    message: Message

    @property
    def response(self) -> GeneralResponse:
        return self.message.body

    @property
    def reply_serial(self) -> int:
        return self.message.body.reply_serial

    @property
    def result(self) -> int:
        return self.message.body.result


class CommandReceived(NamedTuple):
    """A platform command (0x8300 text, 0x8400 call back, 0x8201 locate, 0x8202 tracking,
    0x8203 alarm confirmation, 0x8104, 0x8800, 0x8003, 0x8900, or an unknown id):
    ``message.body`` holds it. Answer with ``conn.ack(event)`` (0x0001), or for a
    0x8201 with ``conn.reply_location(event, location)`` (0x0201)."""

    message: Message

    @property
    def msg_id(self) -> int:
        return self.message.msg_id

    @property
    def command(self) -> Any:
        return self.message.body


# the events that were data: they wait for conn.ack()
DATA_EVENTS = (
    LocationReported,
    LocationBatchReported,
    MediaEventReported,
    MediaReceived,
    PassthroughReceived,
    MessageReceived,
)
