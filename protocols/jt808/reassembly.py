"""Sub-package reassembly, bounded and expiring by ``now``.

A message with attribute bit 13 set arrives as ``total`` packets, each with its
index (from 1) and a slice of the body; the body is the concatenation of the
slices in index order, without the 4 subpackage header bytes (jt808.md §5;
zhoyq/spring-boot-starter-jt808 #5 was exactly that bug). Only the first packet
of a 0x0801 carries the media fields and location.

Partial messages are keyed by (phone, msg id, total), not by serial arithmetic:
serials are supposed to be consecutive, but a real 0x0104 capture has 0x04D1
then 0x04E2 (vector group sc-0104).

Memory is bounded per connection: at most ``max_sets`` partial messages and
``max_bytes`` held in total (body bytes plus ``PACKET_OVERHEAD`` per packet); a packet that would exceed either
drops the oldest set (sets) or is refused (bytes). A set with no progress for
``resend_after`` seconds is due a 0x8003 re-request for its missing packets
(once), and one older than ``timeout`` seconds is dropped. The caller drives
time: :meth:`next_deadline` is when :meth:`on_timer` has something to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import messages as m
from .errors import FrameTooLargeError, Jt808ProtocolError
from .messages import Message

PACKET_OVERHEAD = 64  # bytes charged per held packet besides its body


class SubpackageError(Jt808ProtocolError):
    """Subpackage fields that cannot be right: total 0, index 0 or index > total."""

    kind = "subpackage"


@dataclass(slots=True)
class _Partial:
    first: Message  # packet 1 if it has arrived, else the earliest arrival
    created: float
    updated: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    faults: int = 0
    requested: bool = False


@dataclass(slots=True, frozen=True)
class Missing:
    """Packets still missing from one partial message; ``first_serial`` addresses the 0x8003."""

    phone: str
    msg_id: int
    version: int
    proto_version: int
    first_serial: int
    packet_ids: tuple[int, ...]
    total: int
    expired: bool  # True when the set was dropped (timeout), False for a re-request


class Reassembler:
    """Collects subpackaged messages; see the module docstring for the bounds."""

    __slots__ = ("_sets", "_size", "max_bytes", "max_sets", "resend_after", "timeout")

    def __init__(
        self,
        max_sets: int = 4,
        max_bytes: int = 1 << 20,
        resend_after: float = 10.0,
        timeout: float = 60.0,
    ) -> None:
        self.max_sets = max_sets
        self.max_bytes = max_bytes
        self.resend_after = resend_after
        self.timeout = timeout
        self._sets: dict[tuple[str, int, int], _Partial] = {}
        self._size = 0

    def __len__(self) -> int:
        return len(self._sets)

    @property
    def held_bytes(self) -> int:
        return self._size

    def add(self, msg: Message, now: float) -> tuple[Message | None, Missing | None]:
        """Add one packet (its body is the raw slice).

        Returns ``(message, None)`` when this packet completes the set: a
        Message with the decoded full body, the header of packet 1 except the
        serial, which is the completing packet's (the one an 0x8001 answers),
        ``pkg_total`` = total and ``pkg_index`` = 0. Returns ``(None, missing)``
        when the last index has arrived but others are missing (time for a
        0x8003), else ``(None, None)``. Raises SubpackageError for impossible
        fields, FrameTooLargeError past ``max_bytes``, and the body's decode
        error (with the header attached) when the reassembled body is bad.
        """
        total, index = msg.pkg_total, msg.pkg_index
        if total == 0 or index == 0 or index > total:
            raise SubpackageError(f"packet {index} of {total}", msg.header)
        key = (msg.phone, msg.msg_id, total)
        part = self._sets.get(key)
        body = bytes(msg.body)
        if part is None:
            if len(self._sets) >= self.max_sets:
                self._drop(next(iter(self._sets)))  # the oldest set makes room
            part = self._sets[key] = _Partial(msg, now, now)
        old = part.parts.get(index)
        # each packet is charged its bytes plus a fixed overhead, so that a flood of
        # empty packets of a 65535-packet message is bounded too
        grow = len(body) - len(old) if old is not None else len(body) + PACKET_OVERHEAD
        if self._size + grow > self.max_bytes:
            self._drop(key)
            raise FrameTooLargeError(
                f"subpackaged 0x{msg.msg_id:04x} exceeds {self.max_bytes} buffered bytes", msg.header
            )
        part.parts[index] = body  # a retransmitted packet replaces the earlier copy
        part.size += grow
        self._size += grow
        part.updated = now
        part.faults |= msg.faults
        if index == 1:
            part.first = msg
        if len(part.parts) == total:
            return self._complete(key, msg), None
        if index == total:
            part.requested = True
            return None, self._missing(part, total, expired=False)
        return None, None

    def _complete(self, key: tuple[str, int, int], last: Message) -> Message:
        part = self._drop(key)
        body = b"".join(part.parts[i] for i in range(1, key[2] + 1))
        first = part.first
        header = Message(
            first.msg_id,
            first.attr,
            first.version,
            first.proto_version,
            first.phone,
            last.serial,
            key[2],
            0,
            part.faults,
            None,
        )
        if first.attr & 0x1C00:  # encrypted: reported, not decrypted
            return header._replace(body=body)
        try:
            decoded = m.decode_body(first.msg_id, body, first.version)
        except Jt808ProtocolError as exc:
            exc.header = header.header
            raise
        return header._replace(body=decoded)

    def _drop(self, key: tuple[str, int, int]) -> _Partial:
        part = self._sets.pop(key)
        self._size -= part.size
        return part

    @staticmethod
    def _missing(part: _Partial, total: int, expired: bool) -> Missing:
        first = part.first
        # if packet 1 never arrived, assume consecutive serials: the best guess there is
        first_serial = (first.serial - (first.pkg_index - 1)) & 0xFFFF
        ids = tuple(i for i in range(1, total + 1) if i not in part.parts)
        return Missing(
            first.phone, first.msg_id, first.version, first.proto_version, first_serial, ids, total, expired
        )

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` will act, or None."""
        best: float | None = None
        for part in self._sets.values():
            t = part.created + self.timeout
            if not part.requested:
                t = min(t, part.updated + self.resend_after)
            if best is None or t < best:
                best = t
        return best

    def on_timer(self, now: float) -> list[Missing]:
        """Re-requests due (``expired`` False) and sets dropped for age (``expired`` True)."""
        out: list[Any] = []
        for key, part in list(self._sets.items()):
            if now >= part.created + self.timeout:
                self._drop(key)
                out.append(self._missing(part, key[2], expired=True))
            elif not part.requested and now >= part.updated + self.resend_after:
                part.requested = True
                out.append(self._missing(part, key[2], expired=False))
        return out
