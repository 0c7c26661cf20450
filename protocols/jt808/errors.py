"""Errors: the peer's faults and ours are different exceptions.

Every byte sequence a peer can send either decodes or raises a
:class:`Jt808ProtocolError` subclass, never ``IndexError``, ``struct.error`` or
``UnicodeDecodeError`` (the fuzz tests hold both implementations to that).
Each subclass has a stable ``kind`` string, which ``telacd decode`` prints and
the gateway counts. Misuse of the API by our own code raises
:class:`Jt808LocalError` instead, the split h11 makes between
``RemoteProtocolError`` and ``LocalProtocolError``.
"""

from __future__ import annotations

from typing import Any


class Jt808ProtocolError(Exception):
    """The peer sent bytes that are not valid JT/T 808.

    ``header`` is the frame's :class:`~protocols.jt808.messages.Header` when the
    header could be read (checksum and length errors, bad bodies), so that a
    caller can still answer 0x8001 "message error" to the right serial and
    phone; it is ``None`` when even the header was unreadable.
    """

    kind = "protocol"

    def __init__(self, detail: str, header: Any = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.header = header

    def __eq__(self, other: object) -> bool:
        # Errors of the same class about the same header compare equal, so the
        # cross-implementation tests can compare decode results that contain
        # errors; the detail text is for people and may differ.
        return type(other) is type(self) and other.header == self.header  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.header))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


class ChecksumError(Jt808ProtocolError):
    """The XOR of the unescaped frame is not zero (JT/T 808-2013 §1.4.4)."""

    kind = "checksum"


class EscapeError(Jt808ProtocolError):
    """0x7D followed by anything but 0x01 or 0x02 (JT/T 808-2013 §1.4.2)."""

    kind = "escape"


class LengthError(Jt808ProtocolError):
    """The body-length bits disagree with the bytes present in either header layout."""

    kind = "length"


class TruncatedError(Jt808ProtocolError):
    """The data ended before the structure did: no end flag, or a body too short for its fixed fields."""

    kind = "truncated"


class HeaderShortError(TruncatedError):
    """Fewer bytes than the header (plus the checksum byte) needs."""

    kind = "header_short"


class FrameTooLargeError(Jt808ProtocolError):
    """More buffered bytes without an end flag than the configured bound allows."""

    kind = "too_large"


class Jt808LocalError(Exception):
    """Our side misused the API: a value that cannot be encoded, a call in the wrong state."""


ERROR_KINDS: dict[str, type[Jt808ProtocolError]] = {
    cls.kind: cls
    for cls in (
        ChecksumError,
        EscapeError,
        LengthError,
        TruncatedError,
        HeaderShortError,
        FrameTooLargeError,
    )
}
