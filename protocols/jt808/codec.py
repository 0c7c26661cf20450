"""Framing and header: the pure-Python reference implementation.

This module and the compiled ``_speedups`` export the same names with the same
behaviour (the tests run everything over both, and a hypothesis test compares
them on random input); :mod:`protocols.jt808.impl` picks one. The reference is
written for clarity; the compiled module for speed.

Receiving, in the order JT/T 808-2013 §1.4 prescribes:

1. *Split* the byte stream on the 0x7E flag. Bytes outside a frame are junk
   and dropped (Traccar does the same). Two flags in a row (``7E 7E``) are the
   end of one frame and the start of the next; if that reading leaves an empty
   frame, the second flag simply starts the frame, which is how the splitter
   resynchronises after junk that ended in a flag.
2. *Unescape* ``7D 02`` -> ``7E`` and ``7D 01`` -> ``7D``; any other byte after
   0x7D is an :class:`EscapeError` (a device quirk, a lone 0x7D checksum sent
   unescaped before the end flag, is tolerated by ``lenient_trailing_7d``).
3. *Checksum*: the XOR of every unescaped byte, checksum included, is zero.
4. *Header*, 2013 or 2019 layout. Bit 14 of the attributes announces 2019, but
   devices get it wrong both ways (jt808.md §2, §6.3), so the layout whose
   header length makes the body-length bits match the bytes present wins; bit
   14 decides only when neither or both match.
5. *Body*, by message id (:mod:`messages`).

The buffer is bounded: a frame longer than ``max_buffer`` bytes on the wire
(flags included, escaped) is a :class:`FrameTooLargeError`, reported as soon as
``max_buffer`` bytes have arrived without an end flag, so a peer cannot make
the buffer grow past the bound. The decision depends only on the byte stream,
never on how it was cut into reads: after the error, scanning resumes
``max_buffer`` bytes after the frame's start flag.

Errors are *returned*, not raised, by the streaming ``feed`` methods: they come
back as exception instances in stream order among the frames, so one bad frame
never hides the good ones behind it. ``decode_frame`` raises.
"""

from __future__ import annotations

from typing import Any

from . import messages as m
from .bits import DEFAULT_PROFILE, DeviceProfile
from .errors import (
    ChecksumError,
    EscapeError,
    FrameTooLargeError,
    HeaderShortError,
    Jt808LocalError,
    Jt808ProtocolError,
    LengthError,
    TruncatedError,
)
from .messages import FAULT_CHECKSUM, FAULT_ESCAPE, FAULT_LENGTH, Header, Message

IMPLEMENTATION = "reference"
DEFAULT_MAX_BUFFER = 4096
FLAG = 0x7E
ESC = 0x7D


def checksum(data: bytes) -> int:
    """XOR of all bytes (JT/T 808-2013 §1.4.4)."""
    # Fold the bytes as one big integer: log2(n) C-level big-int operations
    # instead of one Python-level step per byte.
    n = len(data)
    if n == 0:
        return 0
    v = int.from_bytes(data, "big")
    while n > 1:
        half = n // 2
        v = (v >> (8 * half)) ^ (v & ((1 << (8 * half)) - 1))
        n -= half
    return v


def escape(data: bytes) -> bytes:
    """Escape frame content: 0x7D -> 7D 01 first, then 0x7E -> 7D 02 (order matters)."""
    return bytes(data).replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def _unescape(content: bytes, lenient_trailing_7d: bool) -> tuple[bytes, bool]:
    """Unescape; returns (bytes, whether a lone trailing 0x7D was taken literally)."""
    if ESC not in content:
        return bytes(content), False
    content = bytes(content)
    tolerated = False
    if content[-1] == ESC and lenient_trailing_7d:
        # go-jt808's "兼容部分错误情况": a 0x7D checksum sent unescaped before the end flag
        content, tolerated = content[:-1], True
    # every 0x7D must start a 7D 01 or 7D 02 pair; the pairs cannot overlap
    # because neither 0x01 nor 0x02 is 0x7D
    if content.count(b"\x7d") != content.count(b"\x7d\x01") + content.count(b"\x7d\x02"):
        raise EscapeError("0x7D not followed by 0x01 or 0x02")
    out = content.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
    return (out + b"\x7d", True) if tolerated else (out, False)


def unescape(content: bytes, lenient_trailing_7d: bool = False) -> bytes:
    """Undo the escapes in frame content (the bytes between the flags)."""
    return _unescape(content, lenient_trailing_7d)[0]


def _split(data: bytes, pending: bytes, max_buffer: int) -> tuple[list[Any], bytes]:
    """Split ``pending + data``; returns (frames with flags or FrameTooLargeError, new pending)."""
    if type(data) is not bytes:
        data = bytes(data)
    buf = pending + data if pending else data
    out: list[Any] = []
    n = len(buf)
    i = 0
    while True:
        s = buf.find(b"\x7e", i)
        if s < 0:
            return out, b""  # junk outside frames
        e = buf.find(b"\x7e", s + 1)
        if e < 0:
            if n - s >= max_buffer:
                out.append(FrameTooLargeError(f"no end flag within {max_buffer} bytes"))
                i = s + max_buffer
                continue
            return out, bytes(buf[s:])
        if e - s >= max_buffer:
            out.append(FrameTooLargeError(f"no end flag within {max_buffer} bytes"))
            i = s + max_buffer
            continue
        if e == s + 1:
            i = e  # "7E 7E" with nothing between: the second flag starts the frame
            continue
        out.append(bytes(buf[s : e + 1]))
        i = e + 1


def _check_max_buffer(max_buffer: int) -> int:
    if max_buffer < 16:
        raise Jt808LocalError("max_buffer must be at least 16 bytes")
    return max_buffer


class Splitter:
    """Streaming frame splitter: bytes in, complete wire frames (flags included) out."""

    __slots__ = ("_pending", "max_buffer")

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.max_buffer = _check_max_buffer(max_buffer)
        self._pending = b""

    def feed(self, data: bytes) -> list[Any]:
        """Frames completed by ``data`` (``bytes``), with FrameTooLargeError instances in stream order."""
        out, self._pending = _split(data, self._pending, self.max_buffer)
        return out

    @property
    def pending(self) -> bytes:
        """The buffered start of an incomplete frame (from its start flag), or b""."""
        return self._pending


def _decode_content(content: bytes, profile: DeviceProfile) -> Message:
    """Decode the escaped bytes between the flags of one frame."""
    faults = 0
    u, tolerated = _unescape(content, profile.lenient_trailing_7d)
    if tolerated:
        faults |= FAULT_ESCAPE
    n = len(u) - 1  # bytes before the checksum
    if n < 12:
        raise HeaderShortError(f"{len(u)} bytes, a header and checksum need at least 13")
    msg_id = u[0] << 8 | u[1]
    attr = u[2] << 8 | u[3]
    body_len = attr & 0x3FF
    extra = 4 if attr & 0x2000 else 0  # subpackage total + index
    version = profile.force_layout
    if version is None:
        if attr & 0x4000:  # flagged 2019, unless only the 2013 layout fits the length
            version = 2013 if n - 12 - extra == body_len else 2019
        else:  # 2013, unless only the 2019 layout fits (a 2019 header without the flag)
            version = 2019 if n - 17 - extra == body_len else 2013
    if version == 2019:
        hdr = 17 + extra
        if n < hdr:
            raise HeaderShortError(f"{len(u)} bytes, a 2019 header and checksum need {hdr + 1}")
        proto, phone, serial = u[4], u[5:15].hex(), u[15] << 8 | u[16]
    else:
        hdr = 12 + extra
        if n < hdr:
            raise HeaderShortError(f"{len(u)} bytes, a 2013 header and checksum need {hdr + 1}")
        proto, phone, serial = 0, u[4:10].hex(), u[10] << 8 | u[11]
    total = index = 0
    if extra:
        total = u[hdr - 4] << 8 | u[hdr - 3]
        index = u[hdr - 2] << 8 | u[hdr - 1]
    if checksum(u) != 0:
        if not profile.lenient_checksum:
            header = Header(msg_id, attr, version, proto, phone, serial, total, index)
            raise ChecksumError(f"checksum 0x{u[n]:02x}, expected 0x{checksum(u[:n]):02x}", header)
        faults |= FAULT_CHECKSUM
    if n - hdr != body_len:
        if not profile.lenient_length:
            header = Header(msg_id, attr, version, proto, phone, serial, total, index)
            raise LengthError(f"body length {body_len} in the header, {n - hdr} bytes present", header)
        faults |= FAULT_LENGTH
    body_bytes = u[hdr:n]
    if extra or attr & 0x1C00:
        # a packet of a subpackaged message, or an encrypted body: kept raw
        body: Any = body_bytes
    else:
        try:
            body = m.decode_body(msg_id, body_bytes, version)
        except Jt808ProtocolError as exc:
            exc.header = Header(msg_id, attr, version, proto, phone, serial, total, index)
            raise
    return Message(msg_id, attr, version, proto, phone, serial, total, index, faults, body)


class FrameDecoder:
    """Streaming decoder: bytes in, :class:`Message` records (or error instances) out.

    One per connection. ``profile`` supplies the leniency switches and a forced
    header layout; ``max_buffer`` bounds the bytes held for an incomplete frame.
    """

    __slots__ = ("_pending", "max_buffer", "profile", "wrapped")

    def __init__(self, profile: DeviceProfile | None = None, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.profile = DEFAULT_PROFILE if profile is None else profile
        self.max_buffer = _check_max_buffer(max_buffer)
        self._pending = b""
        self.wrapped = 0

    def feed(self, data: bytes, wrap: Any = None) -> list[Any]:
        """Decode every frame ``data`` completes.

        Returns Messages and :class:`Jt808ProtocolError` instances (not raised)
        in stream order. Bytes of an incomplete frame are kept for the next call.

        ``wrap``, a record class with one field, is the connection's hot path:
        plain 0x0200 reports (neither subpackaged nor encrypted) come back as
        ``wrap(message)`` (e.g. LocationReported events), and ``wrapped`` says
        how many did, so a caller whose whole batch was wrapped has no
        per-frame work left to do in Python.
        """
        frames, self._pending = _split(data, self._pending, self.max_buffer)
        out: list[Any] = []
        profile = self.profile
        wrapped = 0
        for f in frames:
            if type(f) is bytes:
                try:
                    msg = _decode_content(f[1:-1], profile)
                except Jt808ProtocolError as exc:
                    out.append(exc)
                    continue
                if wrap is not None and msg.msg_id == 0x0200 and not msg.attr & 0x3C00:
                    out.append(tuple.__new__(wrap, (msg,)))
                    wrapped += 1
                else:
                    out.append(msg)
            else:
                out.append(f)
        self.wrapped = wrapped
        return out

    @property
    def pending(self) -> bytes:
        return self._pending


def decode_frame(frame: bytes, profile: DeviceProfile | None = None) -> Message:
    """Decode one wire frame (flags included) or raise its :class:`Jt808ProtocolError`.

    Bytes before the first flag are ignored like junk on a stream; a frame
    without its end flag raises :class:`TruncatedError`.
    """
    dec = FrameDecoder(profile, max(DEFAULT_MAX_BUFFER, len(frame) + 2))
    results = dec.feed(frame)
    if not results:
        raise TruncatedError("no end flag" if dec.pending else "no frame")
    first = results[0]
    if isinstance(first, Jt808ProtocolError):
        raise first
    return first


def _check_header_fields(
    msg_id: int, serial: int, proto_version: int, pkg_total: int, pkg_index: int, encrypt: int
) -> None:
    if not (
        0 <= msg_id <= 0xFFFF
        and 0 <= serial <= 0xFFFF
        and 0 <= proto_version <= 0xFF
        and 0 <= pkg_total <= 0xFFFF
        and 0 <= pkg_index <= 0xFFFF
        and 0 <= encrypt <= 7
    ):
        raise Jt808LocalError("a header field is out of range")


def encode_frame(
    msg_id: int,
    body: bytes,
    phone: str | bytes,
    serial: int,
    version: int = 2013,
    proto_version: int = 1,
    pkg_total: int = 0,
    pkg_index: int = 0,
    encrypt: int = 0,
) -> bytes:
    """Build, checksum and escape one frame (JT/T 808-2013 §1.4: build, checksum, escape).

    ``version`` 2019 writes the 2019 header (flag bit 14, version byte, BCD[10]
    phone); 2011 and 2013 write the 2013 header. ``pkg_total`` > 0 adds the
    subpackage fields.
    """
    n = len(body)
    if n > 0x3FF:
        raise Jt808LocalError(f"body of {n} bytes exceeds 1023; send it subpackaged")
    _check_header_fields(msg_id, serial, proto_version, pkg_total, pkg_index, encrypt)
    attr = n | encrypt << 10
    if pkg_total:
        attr |= 0x2000
    head = bytearray(msg_id.to_bytes(2, "big"))
    if version == 2019:
        attr |= 0x4000
        head += attr.to_bytes(2, "big") + bytes((proto_version,)) + m.phone_bcd(phone, 2019)
    else:
        head += attr.to_bytes(2, "big") + m.phone_bcd(phone, 2013)
    head += serial.to_bytes(2, "big")
    if pkg_total:
        head += pkg_total.to_bytes(2, "big") + pkg_index.to_bytes(2, "big")
    head += body
    head.append(checksum(head))
    return b"\x7e" + escape(bytes(head)) + b"\x7e"


def encode_general_response(
    phone: str | bytes,
    version: int,
    proto_version: int,
    serial: int,
    reply_serial: int,
    reply_id: int,
    result: int,
    msg_id: int = 0x8001,
) -> bytes:
    """A 0x8001 (or, with ``msg_id=0x0001``, the terminal's 0x0001) general response frame."""
    if not (0 <= reply_serial <= 0xFFFF and 0 <= reply_id <= 0xFFFF and 0 <= result <= 0xFF):
        raise Jt808LocalError("reply_serial, reply_id or result out of range")
    body = bytes((reply_serial >> 8, reply_serial & 0xFF, reply_id >> 8, reply_id & 0xFF, result))
    return encode_frame(msg_id, body, phone, serial, version, proto_version)


def encode_location(loc: m.Location) -> bytes:
    """A 0x0200 body from a Location (:func:`messages.push_location`); misuse is a Jt808LocalError."""
    try:
        return m.push_location(loc)
    except (OverflowError, ValueError) as exc:
        raise Jt808LocalError(f"location: {exc}") from None


def encode_ack(event: Any, serial: int, result: int = 0, msg_id: int = 0x8001) -> bytes:
    """The general response (0x8001; 0x0001 from a terminal) to a Message or an event holding one,
    echoing its phone, header layout, serial and id; ``serial`` is the sender's own counter."""
    if type(event) is Message:
        msg = event
    elif isinstance(event, tuple) and event and type(event[0]) is Message:
        msg = event[0]
    else:
        msg = event.message
    return encode_general_response(
        msg.phone, msg.version, msg.proto_version, serial, msg.serial, msg.msg_id, result, msg_id
    )
