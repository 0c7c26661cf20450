"""Framing and header: the pure-Python reference implementation.

This module and the compiled ``_speedups`` export the same names with the same
behaviour (the tests run everything over both, and a hypothesis test compares
them on random input); :mod:`protocols.jt808.impl` picks one. The reference is
written for clarity; the compiled module for speed.

Receiving, in the order JT/T 808-2013 §1.4 prescribes:

1. *Split* the byte stream on the 0x7E flag. Bytes outside a frame are junk
   and dropped (Traccar does the same). Two flags in a row (``7E 7E``) are the
   end of one frame and the start of the next; if that reading leaves an empty
   frame, the second flag simply starts the frame. A *candidate* is the bytes
   between a start flag and the next flag; see "Resynchronising" below for
   when its closing flag also starts the next candidate.
2. *Unescape* ``7D 02`` -> ``7E`` and ``7D 01`` -> ``7D``; any other byte after
   0x7D is an :class:`EscapeError` (a device quirk, a lone 0x7D checksum sent
   unescaped before the end flag, is tolerated by ``lenient_trailing_7d``).
3. *Checksum*: the XOR of every unescaped byte, checksum included, is zero.
4. *Header*, 2013 or 2019 layout. Bit 14 of the attributes announces 2019, but
   devices get it wrong both ways (jt808.md §2, §6.3), so the layout whose
   header length makes the body-length bits match the bytes present wins; bit
   14 decides only when neither or both match.
5. *Body*, by message id (:mod:`messages`).

Resynchronising. A flag cannot tell a start from an end, so after junk that
holds a single 0x7E (``AA 7E BB``), or after a frame cut off before its end
flag, the next frame's start flag is first read as the end flag of a
candidate made of junk. The rule: a candidate that is *not a frame* — one
that fails at the framing level, checked strictly and without the device
profile: an invalid escape (a lone trailing 0x7D included), fewer than 13
unescaped bytes (a header and the checksum), a non-zero XOR, or body-length
bits that match neither the 2013 nor the 2019 header layout — is still
reported (decoded, or its error returned), and its closing flag *also* starts
the next candidate. A candidate that is a well-formed frame (whatever its
body says: a body-decode error of a frame whose escapes, checksum and length
are fine is not a framing failure) consumes its closing flag as before. So::

    AA 7E BB 7E 00 02 .. 32 7E  ->  header_short (7E BB 7E), then the heartbeat
    7E <cut-off frame> 7E <frame> 7E  ->  an error, then the frame
    7E <bad checksum> 7E <frame> 7E   ->  checksum, then the frame (shared flag)

Well-formed streams (``7E..7E 7E..7E``) are unaffected: the reused flag and
the next start flag form an empty candidate, which is skipped as before.
The decision depends only on the candidate's bytes, so it is the same however
the stream was cut into reads, and the :class:`Splitter` makes it with the
same check (:func:`frame_ok`: unescape, XOR and the length bits, no body
decoding), so it yields the same candidates as :class:`FrameDecoder`.

Lenient profiles do not change the check: a frame decoded leniently
(``lenient_checksum``, ``lenient_length``, ``lenient_trailing_7d``) is still
*suspect*, and its closing flag starts the next candidate too. Reusing a flag
costs at most one extra error for junk (``7E A 7E junk 7E B 7E`` reports the
junk instead of dropping it silently), never a lost frame, and keeps the
Splitter (which has no profile) and every decoder on the same candidates.
What the rule cannot recover is a frame sharing one flag with a preceding
*well-formed* frame (``7E A 7E B 7E`` with both valid): the standard gives
every frame its own two flags, and reading B's bytes as junk is what keeps
junk after a good frame (``7E A 7E DE AD``) from being reported.

``pending`` is the buffered start of an incomplete frame, from its start
flag. A flag with nothing after it yet (typically the closing flag of a
suspect candidate at the end of a read) is held but not reported there: it
is not a frame yet, and may never be one.

The buffer is bounded: a frame longer than ``max_buffer`` bytes on the wire
(flags included, escaped) is a :class:`FrameTooLargeError`, reported as soon as
``max_buffer`` bytes have arrived without an end flag, so a peer cannot make
the buffer grow past the bound. The decision depends only on the byte stream,
never on how it was cut into reads: after the error, scanning resumes
``max_buffer`` bytes after the frame's start flag.

Errors are *returned*, not raised, by the streaming ``receive_data`` (and its
older name ``feed``): they come back as exception instances in stream order
among the frames, so one bad frame never hides the good ones behind it.
``decode_frame`` raises.
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


def frame_ok(content: bytes) -> bool:
    """Whether the bytes between two flags are a well-formed frame at the framing level.

    Checked strictly, whatever a device profile tolerates: every 0x7D starts a
    valid escape, there are at least 13 unescaped bytes (a header and the
    checksum), the XOR is zero, and the body-length bits match the bytes
    present in the 2013 or the 2019 header layout. The body is not decoded.
    A candidate that fails is *suspect*: its closing flag also starts the next
    candidate (see the module docstring, "Resynchronising").
    """
    if ESC in content:
        content = bytes(content)
        if content.count(b"\x7d") != content.count(b"\x7d\x01") + content.count(b"\x7d\x02"):
            return False
        content = content.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
    n = len(content) - 1  # bytes before the checksum
    if n < 12:
        return False
    attr = content[2] << 8 | content[3]
    spare = n - 12 - (4 if attr & 0x2000 else 0) - (attr & 0x3FF)  # 0: 2013 layout, 5: 2019
    return (spare == 0 or spare == 5) and checksum(content) == 0


def _split(buf: bytes, max_buffer: int, out: list[Any], take: Any) -> bytes:
    """Scan ``buf`` (the pending bytes plus a new read) for candidates; returns the new pending.

    ``take(start, end)`` handles the candidate ``buf[start : end + 1]`` (both
    flags included) and returns whether it was suspect, in which case its
    closing flag is also the next candidate's start flag.
    FrameTooLargeError instances are appended to ``out`` in stream order.
    """
    n = len(buf)
    i = 0
    while True:
        s = buf.find(b"\x7e", i)
        if s < 0:
            return b""  # junk outside frames
        e = buf.find(b"\x7e", s + 1)
        if e < 0:
            if n - s >= max_buffer:
                out.append(FrameTooLargeError(f"no end flag within {max_buffer} bytes"))
                i = s + max_buffer
                continue
            return buf[s:]
        if e - s >= max_buffer:
            out.append(FrameTooLargeError(f"no end flag within {max_buffer} bytes"))
            i = s + max_buffer
            continue
        if e == s + 1:
            i = e  # "7E 7E" with nothing between: the second flag starts the frame
            continue
        i = e if take(s, e) else e + 1


def _shown(pending: bytes) -> bytes:
    """``pending`` as reported: a lone flag is held but is not a frame yet."""
    return b"" if pending == b"\x7e" else pending


def _check_max_buffer(max_buffer: int) -> int:
    if max_buffer < 16:
        raise Jt808LocalError("max_buffer must be at least 16 bytes")
    return max_buffer


class Splitter:
    """Streaming frame splitter: bytes in, candidate wire frames (flags included) out.

    It yields every candidate, well-formed or not, as ``bytes`` (a suspect
    one shares its closing flag with the next, see "Resynchronising" in the
    module docstring), so that decoding each one gives exactly what a
    :class:`FrameDecoder` would return for the same stream. It checks the
    framing (:func:`frame_ok`) but never decodes a body.
    """

    __slots__ = ("_pending", "max_buffer")

    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.max_buffer = _check_max_buffer(max_buffer)
        self._pending = b""

    def receive_data(self, data: bytes) -> list[Any]:
        """The candidate frames ``data`` completes, as ``bytes``, in stream order.

        Errors are *returned*, not raised: a frame longer than ``max_buffer``
        comes back as a :class:`FrameTooLargeError` instance in its place
        among the frames. Bytes of an incomplete frame are kept for the next
        call (:attr:`pending`).
        """
        buf = bytes(data)
        if self._pending:
            buf = self._pending + buf
        out: list[Any] = []

        def take(s: int, e: int) -> bool:
            frame = buf[s : e + 1]
            out.append(frame)
            return not frame_ok(frame[1:-1])

        self._pending = _split(buf, self.max_buffer, out, take)
        return out

    def feed(self, data: bytes) -> list[Any]:
        """The same as :meth:`receive_data` (the older name)."""
        return self.receive_data(data)

    @property
    def pending(self) -> bytes:
        """The buffered start of an incomplete frame (from its start flag), or b"".

        A lone flag (e.g. the closing flag of a suspect frame at the end of
        the last read) is kept but not shown: it is not a frame yet.
        """
        return _shown(self._pending)


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

    def receive_data(self, data: bytes, wrap: Any = None) -> list[Any]:
        """Decode every frame ``data`` completes.

        Returns Messages and :class:`Jt808ProtocolError` instances in stream
        order: errors are *returned*, not raised, one per bad candidate in its
        place among the frames, so a bad frame never hides the good ones
        behind it. Bytes of an incomplete frame are kept for the next call.

        ``wrap``, a record class with one field, is the connection's hot path:
        plain 0x0200 reports (neither subpackaged nor encrypted) come back as
        ``wrap(message)`` (e.g. LocationReported events), and ``wrapped`` says
        how many did, so a caller whose whole batch was wrapped has no
        per-frame work left to do in Python.
        """
        buf = bytes(data)
        if self._pending:
            buf = self._pending + buf
        out: list[Any] = []
        profile = self.profile
        wrapped = 0

        def take(s: int, e: int) -> bool:
            nonlocal wrapped
            content = buf[s + 1 : e]
            try:
                msg = _decode_content(content, profile)
            except Jt808ProtocolError as exc:
                out.append(exc)
                return not frame_ok(content)
            if wrap is not None and msg.msg_id == 0x0200 and not msg.attr & 0x3C00:
                out.append(tuple.__new__(wrap, (msg,)))
                wrapped += 1
            else:
                out.append(msg)
            # no fault: escapes, checksum and length were fine, so the frame is well-formed
            return msg.faults != 0 and not frame_ok(content)

        self._pending = _split(buf, self.max_buffer, out, take)
        self.wrapped = wrapped
        return out

    def feed(self, data: bytes, wrap: Any = None) -> list[Any]:
        """The same as :meth:`receive_data` (the older name, which the connection uses)."""
        return self.receive_data(data, wrap)

    @property
    def pending(self) -> bytes:
        """The buffered start of an incomplete frame (from its start flag), or b"" (see Splitter)."""
        return _shown(self._pending)


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
