"""A sans-IO JT/T 808 connection, usable from both ends.

One :class:`Connection` per TCP connection (or QUIC stream). Bytes go in with
``receive_data(data, now)``, which returns a list of events
(:mod:`protocols.jt808.events`); bytes to send come back from method calls.
There is no socket, loop or clock: time is always an argument.

Roles
=====

``Role.PLATFORM`` is the gateway's side. ``Role.TERMINAL`` is a vehicle's,
what the simulators drive (the bench fleet runs 100,000 of them in one
process, hence ``__slots__`` and no per-connection tables: per-connection
state is a few scalars and one FrameDecoder).

The state machine
=================

JT/T 808 has one conversation: register (optional), authenticate, then
report. The tables below are the whole of it; everything else a connection
does is stateless translation. Two rules shape them.

Rule 1: *a terminal may register at any time.* "The terminal will re-register
every time it is reset; the platform needs to respond to registration messages
at any time" (JT/T 808-2011 §2.5), and many devices never register at all,
authenticating with a fixed code (jt808.md §6.5). So registration never
blocks anything, and authentication is accepted from NEW as well as from
REGISTERED. A re-registration of an online terminal leaves it online: the
connection already proved who it is.

Rule 2: *the platform decides what data before authentication means.* A data
message in a state other than ONLINE is not answered and not dropped: it comes
out wrapped in :class:`DataBeforeAuth`, and the caller either accepts it
implicitly (``authorize()``, the ``open`` auth policy) or refuses it. A failed
authentication returns the connection to NEW.

Persist, then acknowledge
=========================

Registration, authentication, heartbeat and logout are answered by the
connection (events with a ``reply``). Data (locations, batches, media,
passthrough, unknown ids) is *never* answered automatically: the caller stores
it and then calls ``conn.ack(event)``, because an alert must be durable before
the vehicle is told it arrived. Malformed frames become :class:`FrameRejected`
with the 0x8001 "message error" prescribed for them when the header was
readable.

Serial numbers are per direction: replies echo the terminal's serial as
``reply_serial``; every frame this side sends takes the next value of its own
16-bit counter. Replies echo the terminal's phone bytes and header layout.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Protocol

from . import events as ev
from . import ids
from . import impl as _default_codec
from . import messages as m
from .bits import DEFAULT_PROFILE, DeviceProfile
from .errors import Jt808LocalError, Jt808ProtocolError, TruncatedError
from .messages import Message
from .reassembly import Reassembler


class Role(enum.Enum):
    PLATFORM = "platform"
    TERMINAL = "terminal"


class State(enum.Enum):
    NEW = "new"
    REGISTERING = "registering"  # terminal role: 0x0100 sent
    REGISTERED = "registered"
    AUTHENTICATING = "authenticating"  # terminal role: 0x0102 sent
    ONLINE = "online"
    CLOSED = "closed"


NEW, REGISTERING, REGISTERED = State.NEW, State.REGISTERING, State.REGISTERED
AUTHENTICATING, ONLINE, CLOSED = State.AUTHENTICATING, State.ONLINE, State.CLOSED

# (state, what happened) -> next state. A pair missing from a table leaves the
# state unchanged. "register_ok"/"register_failed" and "auth_ok"/"auth_failed"
# are outcomes of the auth policy (platform) or of the platform's answer
# (terminal); "authorize" is the caller accepting data before authentication;
# "logout" is 0x0003 received (platform) or sent (terminal); "eof" the end of
# the byte stream.
PLATFORM_TRANSITIONS: dict[tuple[State, str], State] = {
    (NEW, "register_ok"): REGISTERED,  # Rule 1
    (NEW, "auth_ok"): ONLINE,  # Rule 1: registration is optional
    (REGISTERED, "auth_ok"): ONLINE,
    (NEW, "authorize"): ONLINE,  # Rule 2
    (REGISTERED, "authorize"): ONLINE,
    (REGISTERED, "auth_failed"): NEW,
    (ONLINE, "auth_failed"): NEW,  # a failed re-authentication revokes the earlier one
    **{(s, "logout"): CLOSED for s in (NEW, REGISTERED, ONLINE)},
    **{(s, "eof"): CLOSED for s in (NEW, REGISTERED, ONLINE)},
}
TERMINAL_TRANSITIONS: dict[tuple[State, str], State] = {
    (NEW, "send_register"): REGISTERING,
    (REGISTERED, "send_register"): REGISTERING,
    (REGISTERING, "register_ok"): REGISTERED,
    (REGISTERING, "register_failed"): NEW,
    (NEW, "send_auth"): AUTHENTICATING,
    (REGISTERED, "send_auth"): AUTHENTICATING,
    (REGISTERING, "send_auth"): AUTHENTICATING,
    (AUTHENTICATING, "auth_ok"): ONLINE,
    (AUTHENTICATING, "auth_failed"): NEW,
    **{(s, "logout"): CLOSED for s in State if s is not CLOSED},
    **{(s, "eof"): CLOSED for s in State if s is not CLOSED},
}


class AuthPolicy(Protocol):
    """Decides registrations and authentications (platform role). Calls are synchronous:
    keep the auth codes in memory (the gateway mirrors them in its store)."""

    def register(self, phone: str, request: m.Register) -> tuple[int, str | None]:
        """(0x8100 result, auth code); the code is sent only with result 0."""
        ...

    def authenticate(self, phone: str, request: m.Authenticate) -> bool:
        """Accept (True) or refuse the 0x0102."""
        ...


class OpenAuthPolicy:
    """Accept everyone; the auth code is the phone digits (what Traccar does)."""

    def register(self, phone: str, request: m.Register) -> tuple[int, str | None]:
        return ids.RegisterResult.SUCCESS, phone

    def authenticate(self, phone: str, request: m.Authenticate) -> bool:
        return True


OPEN_AUTH = OpenAuthPolicy()

# platform role: terminal message id -> the data event it becomes
_DATA_EVENT: dict[int, type] = {
    ids.MSG_LOCATION_REPORT: ev.LocationReported,
    ids.MSG_LOCATION_BATCH: ev.LocationBatchReported,
    ids.MSG_MEDIA_EVENT: ev.MediaEventReported,
    ids.MSG_MEDIA_DATA: ev.MediaReceived,
    ids.MSG_UPLINK_PASSTHROUGH: ev.PassthroughReceived,
}
_new = tuple.__new__  # build NamedTuple events without the generated __new__
_LOCATION_REPORTED = ev.LocationReported
_RESULT_OK = 0
_RESULT_FAILURE = int(ids.Result.FAILURE)
_RESULT_MESSAGE_ERROR = int(ids.Result.MESSAGE_ERROR)


class Connection:
    """One JT/T 808 conversation, platform or terminal side. See the module docstring.

    Platform options: ``auth_policy`` (default: accept all), ``profile`` (a
    :class:`DeviceProfile`: leniency, alarm names, zone), ``lenient_checksum``
    (overrides the profile's), ``max_buffer`` (bytes held for an incomplete
    frame, default 4 KiB), ``idle_timeout`` (seconds without data before
    :class:`IdleTimeout`; None = never), ``reassembly`` (keyword arguments of
    :class:`Reassembler`). Terminal options: ``phone`` (digits), ``version``
    (2011, 2013 or 2019: header layout and the 0x0100 body layout),
    ``proto_version`` (2019 header byte). ``codec`` picks the implementation
    module (default: :mod:`protocols.jt808.impl`'s choice).
    """

    __slots__ = (
        "_ack_id",
        "_auth_serial",
        "_codec",
        "_deadline",
        "_decoder",
        "_encode_ack",
        "_encode_gr",
        "_reasm",
        "_reasm_args",
        "_serial",
        "_transitions",
        "auth_code",
        "auth_policy",
        "idle_timeout",
        "phone",
        "profile",
        "proto_version",
        "role",
        "state",
        "version",
    )

    def __init__(
        self,
        role: Role = Role.PLATFORM,
        *,
        auth_policy: AuthPolicy | None = None,
        profile: DeviceProfile | None = None,
        lenient_checksum: bool | None = None,
        max_buffer: int = 4096,
        idle_timeout: float | None = None,
        phone: str | None = None,
        version: int = 2013,
        proto_version: int = 1,
        reassembly: dict[str, Any] | None = None,
        codec: Any = None,
    ) -> None:
        if version not in (2011, 2013, 2019):
            raise Jt808LocalError("version must be 2011, 2013 or 2019")
        profile = DEFAULT_PROFILE if profile is None else profile
        if lenient_checksum is not None and lenient_checksum != profile.lenient_checksum:
            profile = profile.with_options(lenient_checksum=lenient_checksum)
        self.role = role
        self.state = NEW
        self.profile = profile
        self.auth_policy = OPEN_AUTH if auth_policy is None else auth_policy
        self.idle_timeout = idle_timeout
        # a terminal's phone, left-padded to its BCD width once (frames then copy it as is)
        self.phone = None if phone is None else m.phone_bcd(phone, version).hex()
        self.version = version
        self.proto_version = proto_version
        self.auth_code: str | None = None
        codec = _default_codec if codec is None else codec
        self._codec = codec
        self._decoder = codec.FrameDecoder(profile, max_buffer)
        self._encode_gr = codec.encode_general_response
        self._encode_ack = codec.encode_ack
        self._serial = 0
        self._deadline: float | None = None
        self._reasm: Reassembler | None = None  # created on the first subpackaged message
        self._reasm_args = reassembly
        self._auth_serial = -1
        if role is Role.PLATFORM:
            self._transitions = PLATFORM_TRANSITIONS
            self._ack_id = ids.MSG_PLATFORM_GENERAL_RESPONSE
        else:
            self._transitions = TERMINAL_TRANSITIONS
            self._ack_id = ids.MSG_TERMINAL_GENERAL_RESPONSE

    # ------------------------------------------------------------------ plumbing

    def _to(self, what: str) -> None:
        self.state = self._transitions.get((self.state, what), self.state)

    def _next_serial(self) -> int:
        s = self._serial
        self._serial = (s + 1) & 0xFFFF
        return s

    @property
    def next_serial(self) -> int:
        """The serial the next frame this side sends will carry."""
        return self._serial

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame held by the decoder."""
        return self._decoder.pending

    def _frame(self, msg_id: int, body: bytes, serial: int, pkg: tuple[int, int] = (0, 0)) -> bytes:
        if self.phone is None:
            raise Jt808LocalError("the terminal's phone is not known yet")
        return self._codec.encode_frame(
            msg_id, body, self.phone, serial, self.version, self.proto_version, pkg[0], pkg[1]
        )

    def send(self, msg_id: int, body: Any) -> tuple[int, bytes]:
        """Encode any message to the peer: ``body`` is a record of :mod:`messages` or raw bytes.

        Returns (serial, bytes). A body over 1023 bytes goes out subpackaged
        (1000-byte packets, consecutive serials); the serial returned is the
        last packet's, which is the one the peer acknowledges.
        """
        raw = m.encode_body(body, self.version)
        if len(raw) <= 0x3FF:
            serial = self._next_serial()
            return serial, self._frame(msg_id, raw, serial)
        chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
        out = []
        serial = 0
        for k, chunk in enumerate(chunks, 1):
            serial = self._next_serial()
            out.append(self._frame(msg_id, chunk, serial, (len(chunks), k)))
        return serial, b"".join(out)

    def ack(self, event: Any, result: int = 0) -> bytes:
        """The general response to an event's message (or to a Message): 0x8001 from the
        platform, 0x0001 from the terminal, echoing its phone, layout, serial and id."""
        s = self._serial
        self._serial = (s + 1) & 0xFFFF
        return self._encode_ack(event, s, result, self._ack_id)

    def authorize(self) -> None:
        """Accept this terminal without (further) authentication: data flows from now on."""
        self._to("authorize")

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes, now: float) -> list[Any]:
        """Feed bytes from the peer; returns the events they complete, in order.

        ``b""`` means the peer closed: an incomplete frame left in the buffer
        is reported as a truncated FrameRejected, and the state becomes CLOSED.
        Afterwards call :meth:`get_timer` (the deadline may have moved).
        """
        if self.idle_timeout is not None:
            self._deadline = now + self.idle_timeout
        if not data:
            return self._eof()
        platform = self._transitions is PLATFORM_TRANSITIONS
        # The hot path: an online platform's location reports come out of the
        # decoder already wrapped as LocationReported; if that is all the batch
        # holds, there is nothing left to do per frame in Python.
        dec = self._decoder
        decoded = dec.feed(data, _LOCATION_REPORTED if platform and self.state is ONLINE else None)
        if dec.wrapped == len(decoded):
            if self.phone is None and decoded:  # authorized before any frame: learn who it is
                self._learn(decoded[0].message)
            return decoded
        out: list[Any] = []
        for msg in decoded:
            t = type(msg)
            if t is _LOCATION_REPORTED:
                out.append(msg)
            elif t is not Message:
                out.append(self._rejected(msg))
            elif msg.attr & 0x2000:
                self._on_packet(msg, now, out)
            elif platform:
                out.append(self._platform_event(msg))
            else:
                out.append(self._terminal_event(msg))
        return out

    def _eof(self) -> list[Any]:
        out = []
        if self._decoder.pending:
            out.append(ev.FrameRejected(TruncatedError("connection closed inside a frame"), None))
        self._to("eof")
        return out

    def _rejected(self, error: Jt808ProtocolError) -> ev.FrameRejected:
        h = error.header
        reply = None
        if h is not None:
            reply = self._encode_gr(
                h.phone,
                h.version,
                h.proto_version,
                self._next_serial(),
                h.serial,
                h.msg_id,
                _RESULT_MESSAGE_ERROR,
                self._ack_id,
            )
        return ev.FrameRejected(error, reply)

    def _auto_reply(self, msg: Message, result: int) -> bytes:
        return self._encode_gr(
            msg.phone,
            msg.version,
            msg.proto_version,
            self._next_serial(),
            msg.serial,
            msg.msg_id,
            result,
            self._ack_id,
        )

    def _learn(self, msg: Message) -> None:
        self.phone = msg.phone
        self.version = msg.version
        self.proto_version = msg.proto_version

    def _platform_event(self, msg: Message) -> Any:
        mid = msg.msg_id
        if self.phone is None:
            self._learn(msg)
        if mid == ids.MSG_HEARTBEAT:
            return ev.HeartbeatReceived(msg, self._auto_reply(msg, _RESULT_OK))
        if mid == ids.MSG_REGISTER and type(msg.body) is m.Register:
            self._learn(msg)
            result, code = self.auth_policy.register(msg.phone, msg.body)
            result = int(result)
            if result != 0:
                code = None
            elif not code:
                # most devices cannot parse an empty auth code (emqx/emqx PR #14756)
                code = msg.phone
            body = m.push_register_response(m.RegisterResponse(msg.serial, result, code), msg.version)
            reply = self._codec.encode_frame(
                ids.MSG_REGISTER_RESPONSE,
                body,
                msg.phone,
                self._next_serial(),
                msg.version,
                msg.proto_version,
            )
            self._to("register_ok" if result == 0 else "register_failed")
            if result == 0:
                self.auth_code = code
            return ev.Registered(msg, result, code, reply)
        if mid == ids.MSG_AUTHENTICATE and type(msg.body) is m.Authenticate:
            self._learn(msg)
            if self.auth_policy.authenticate(msg.phone, msg.body):
                self.auth_code = msg.body.auth_code
                self._to("auth_ok")
                return ev.Authenticated(msg, self._auto_reply(msg, _RESULT_OK))
            self._to("auth_failed")
            return ev.AuthenticationFailed(msg, self._auto_reply(msg, _RESULT_FAILURE))
        if mid == ids.MSG_LOGOUT:
            reply = self._auto_reply(msg, _RESULT_OK)
            self._to("logout")
            return ev.LoggedOut(msg, reply)
        if mid == ids.MSG_TERMINAL_GENERAL_RESPONSE and type(msg.body) is m.GeneralResponse:
            return ev.CommandAnswered(msg)
        if mid == ids.MSG_LOCATION_QUERY_RESPONSE and type(msg.body) is m.LocationQueryResponse:
            return ev.LocationReplied(msg)
        cls = _DATA_EVENT.get(mid, ev.MessageReceived) if not msg.attr & 0x1C00 else ev.MessageReceived
        event = _new(cls, (msg,))
        if self.state is not ONLINE:
            return ev.DataBeforeAuth(event)
        return event

    def _terminal_event(self, msg: Message) -> Any:
        mid = msg.msg_id
        if mid == ids.MSG_REGISTER_RESPONSE and type(msg.body) is m.RegisterResponse:
            if msg.body.result == 0:
                self.auth_code = msg.body.auth_code
                self._to("register_ok")
            else:
                self._to("register_failed")
            return ev.RegisterAnswered(msg)
        if mid == ids.MSG_PLATFORM_GENERAL_RESPONSE and type(msg.body) is m.GeneralResponse:
            if msg.body.reply_id == ids.MSG_AUTHENTICATE and msg.body.reply_serial == self._auth_serial:
                self._to("auth_ok" if msg.body.result == 0 else "auth_failed")
            return ev.Acknowledged(msg)
        return ev.CommandReceived(msg)

    def _on_packet(self, msg: Message, now: float, out: list[Any]) -> None:
        if self._reasm is None:
            self._reasm = Reassembler(**(self._reasm_args or {}))
        try:
            done, missing = self._reasm.add(msg, now)
        except Jt808ProtocolError as exc:
            out.append(self._rejected(exc))
            return
        if done is not None:
            if self._transitions is PLATFORM_TRANSITIONS:
                out.append(self._platform_event(done))
            else:
                out.append(self._terminal_event(done))
            return
        # an incomplete set: each packet is acknowledged on its own (the G10 terminal expects it)
        out.append(ev.PacketReceived(msg, self._auto_reply(msg, _RESULT_OK)))
        if missing is not None:
            out.append(self._missing_event(missing))

    def _missing_event(self, missing: Any) -> Any:
        if missing.expired:
            return ev.ReassemblyExpired(missing.msg_id, missing.first_serial, missing.packet_ids)
        msg_id = (
            ids.MSG_RESEND_REQUEST
            if self._transitions is PLATFORM_TRANSITIONS
            else ids.MSG_TERMINAL_RESEND_REQUEST
        )
        body = m.push_resend_request(
            m.ResendRequest(missing.first_serial, missing.packet_ids), missing.version
        )
        reply = self._codec.encode_frame(
            msg_id, body, missing.phone, self._next_serial(), missing.version, missing.proto_version
        )
        return ev.PacketsMissing(missing.msg_id, missing.first_serial, missing.packet_ids, reply)

    # ------------------------------------------------------------------ timers

    def get_timer(self) -> float | None:
        """The time at which :meth:`handle_timer` must be called, or None.

        Covers the idle deadline and sub-package re-requests and expiry. Call
        again after every ``receive_data``/``handle_timer``: it moves.
        """
        t = self._deadline
        if self._reasm is not None and len(self._reasm):
            r = self._reasm.next_deadline()
            if r is not None and (t is None or r < t):
                t = r
        return t

    def handle_timer(self, now: float) -> list[Any]:
        """Events due at ``now``: :class:`IdleTimeout` (the caller closes),
        :class:`PacketsMissing` (write its ``reply``), :class:`ReassemblyExpired`."""
        out: list[Any] = []
        if self._reasm is not None and len(self._reasm):
            out += [self._missing_event(x) for x in self._reasm.on_timer(now)]
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            out.append(ev.IdleTimeout(self.idle_timeout))
        return out

    # ------------------------------------------------------------------ platform commands

    def send_text(self, text: str, flag: int = 0x04, text_type: int = 1) -> tuple[int, bytes]:
        """0x8300 (GBK). Flag bits: 0 urgent, 2 display, 3 TTS, 4 ad screen; ``text_type`` (2019)
        1 notice, 2 service."""
        return self.send(ids.MSG_TEXT, m.Text(flag, text_type if self.version == 2019 else None, text))

    def call_back(self, phone: str, monitor: bool = False) -> tuple[int, bytes]:
        """0x8400: make the vehicle call ``phone``; ``monitor`` = one-way listening to the cabin."""
        return self.send(ids.MSG_CALL_BACK, m.CallBack(1 if monitor else 0, phone))

    def locate(self) -> tuple[int, bytes]:
        """0x8201; the terminal answers 0x0201 (:class:`LocationReplied` with this serial)."""
        return self.send(ids.MSG_LOCATION_QUERY, m.EMPTY)

    def track(self, interval_s: int, validity_s: int) -> tuple[int, bytes]:
        """0x8202 temporary tracking; interval 0 stops it."""
        return self.send(
            ids.MSG_TEMPORARY_TRACKING,
            m.TemporaryTracking(interval_s, None if interval_s == 0 else validity_s),
        )

    def confirm_alarm(self, alarm_serial: int, alarm_type: int) -> tuple[int, bytes]:
        """0x8203 manual alarm confirmation (alarm serial 0 = all of that type)."""
        return self.send(ids.MSG_ALARM_CONFIRM, m.AlarmConfirm(alarm_serial, alarm_type))

    def query_params(self) -> tuple[int, bytes]:
        """0x8104; the answer is a 0x0104 (:class:`MessageReceived`)."""
        return self.send(ids.MSG_QUERY_PARAMS, m.EMPTY)

    def media_ack(self, media_id: int, packet_ids: Iterable[int] = ()) -> tuple[int, bytes]:
        """0x8800 after a media upload; empty ``packet_ids`` = all received."""
        return self.send(ids.MSG_MEDIA_ACK, m.MediaAck(media_id, tuple(packet_ids)))

    def request_resend(self, first_serial: int, packet_ids: Iterable[int]) -> tuple[int, bytes]:
        """0x8003 (platform) / 0x0005 (terminal, 2019): resend these packets."""
        msg_id = ids.MSG_RESEND_REQUEST if self.role is Role.PLATFORM else ids.MSG_TERMINAL_RESEND_REQUEST
        return self.send(msg_id, m.ResendRequest(first_serial, tuple(packet_ids)))

    def passthrough(self, ptype: int, data: bytes) -> tuple[int, bytes]:
        """0x8900 (platform) / 0x0900 (terminal) transparent data."""
        msg_id = ids.MSG_DOWNLINK_PASSTHROUGH if self.role is Role.PLATFORM else ids.MSG_UPLINK_PASSTHROUGH
        return self.send(msg_id, m.Passthrough(ptype, bytes(data)))

    # ------------------------------------------------------------------ terminal messages

    def register(
        self,
        province: int = 0,
        city: int = 0,
        maker: str = "",
        model: str = "",
        terminal_id: str = "",
        plate_color: int = 0,
        plate: str = "",
    ) -> tuple[int, bytes]:
        """0x0100 in this connection's layout (2011, 2013 or 2019)."""
        self._to("send_register")
        rec = m.Register(province, city, maker, model, terminal_id, plate_color, plate, self.version)
        return self.send(ids.MSG_REGISTER, rec)

    def authenticate(
        self, auth_code: str | None = None, imei: str = "", sw_version: str = ""
    ) -> tuple[int, bytes]:
        """0x0102 with ``auth_code`` (default: the one the platform's 0x8100 gave)."""
        code = self.auth_code if auth_code is None else auth_code
        if code is None:
            raise Jt808LocalError("no auth code: register first or pass one")
        self.auth_code = code
        self._to("send_auth")
        serial, data = self.send(ids.MSG_AUTHENTICATE, m.Authenticate(code, imei, sw_version))
        self._auth_serial = serial
        return serial, data

    def heartbeat(self) -> tuple[int, bytes]:
        """0x0002."""
        return self.send(ids.MSG_HEARTBEAT, m.EMPTY)

    def logout(self) -> tuple[int, bytes]:
        """0x0003; the state becomes CLOSED."""
        self._to("logout")
        return self.send(ids.MSG_LOGOUT, m.EMPTY)

    def report_location(self, location: m.Location | None = None, **fields: Any) -> tuple[int, bytes]:
        """0x0200 from a Location or from the keyword arguments of :func:`messages.make_location`."""
        loc = location if location is not None else m.make_location(**fields)
        serial = self._next_serial()
        return serial, self._frame(ids.MSG_LOCATION_REPORT, self._codec.encode_location(loc), serial)

    def report_batch(self, positions: Iterable[m.Location], batch_type: int = 0) -> tuple[int, bytes]:
        """0x0704: batch_type 0 normal, 1 blind-area backfill."""
        pos = tuple(positions)
        return self.send(ids.MSG_LOCATION_BATCH, m.LocationBatch(batch_type, len(pos), pos, False))

    def service_call(self, text: str, encoding: str = "utf-8") -> tuple[int, bytes]:
        """The one-key service call: 0x0900 passthrough type 0xF0 with the request text."""
        data = text.encode(encoding)
        return self.passthrough(ids.PassthroughType.ONE_KEY_SERVICE, data)

    def media_event(
        self, media_id: int, media_type: int = 0, media_format: int = 0, event_code: int = 0, channel: int = 1
    ) -> tuple[int, bytes]:
        """0x0800."""
        return self.send(
            ids.MSG_MEDIA_EVENT, m.MediaEvent(media_id, media_type, media_format, event_code, channel)
        )

    def send_media(
        self,
        media_id: int,
        data: bytes,
        location: m.Location | None,
        media_type: int = 0,
        media_format: int = 0,
        event_code: int = 0,
        channel: int = 1,
    ) -> tuple[int, bytes]:
        """0x0801, subpackaged when over 1023 bytes (the location goes in the first packet only)."""
        rec = m.MediaData(media_id, media_type, media_format, event_code, channel, location, bytes(data))
        return self.send(ids.MSG_MEDIA_DATA, rec)

    def reply_location(self, event: Any, location: m.Location) -> bytes:
        """0x0201, the answer to a 0x8201 :class:`CommandReceived`."""
        msg = event if type(event) is Message else event.message
        body = m.LocationQueryResponse(msg.serial, location)
        return self.send(ids.MSG_LOCATION_QUERY_RESPONSE, body)[1]


def pair(
    platform_kwargs: dict[str, Any] | None = None,
    terminal_kwargs: dict[str, Any] | None = None,
) -> tuple[Connection, Connection]:
    """A platform and a terminal connection for in-memory conversations (tests, demos)."""
    return (
        Connection(Role.PLATFORM, **(platform_kwargs or {})),
        Connection(Role.TERMINAL, **(terminal_kwargs or {"phone": "013800000000"})),
    )
