"""The TCU listener over QUIC (ALPN ``jt808``): aioquic on the gateway's own event loop.

A vehicle on a cellular link changes address (tower hand-over, NAT rebinding,
a tunnel) and loses packets. Over TCP every change is a new connection, a new
authentication and an alert that was in flight when the old one died. QUIC
keeps the connection across an address change (RFC 9000 §9) and a vehicle that
did lose it resumes with its session ticket in 0-RTT (RFC 9001 §4.6), its
authentication frame in the first flight. See docs/quic.md for the TCU side.

What rides on QUIC is exactly the JT/T 808 byte stream of a TCP connection:
each bidirectional stream a vehicle opens is one terminal connection, and it
drives the same :class:`~gateway.tcu.TcuProtocol` as a TCP socket does, through
:class:`StreamTransport`, a transport with the TCP transport's shape (write,
close, pause/resume reading, write-buffer limits, peername). Registration,
authentication, sessions, persist-then-acknowledge and downlink commands are
therefore the TCP code, unchanged.

Three pieces, outermost first:

* :class:`QuicListener`: the UDP socket. It routes each datagram to its
  connection by destination connection ID (a short-header packet's DCID is
  the first bytes after the flags, sliced without a full header parse),
  creates connections for Initial packets, and answers unknown versions with
  a version negotiation packet (RFC 9000 §6).
* :class:`Endpoint`: one QUIC connection. It feeds datagrams to aioquic's
  sans-IO ``QuicConnection``, turns its events into stream deliveries, sends
  what aioquic has to send, and keeps one timer. The client side
  (bench/quic_client.py) uses the same class.
* :class:`StreamTransport`: one stream, as seen by the protocol on it.

The budget. aioquic spends tens of microseconds per packet in Python, far more
than the codec spends per frame, so the design avoids packets: a connection
never sends from inside ``datagram_received``; it is marked and all marked
connections are flushed once per loop turn, so the 0x8001 replies to every
frame in every datagram of one read leave in as few packets as possible (the
TcuProtocol already joins the replies of one read into one write).

Flow control. ``pause_reading`` (flood control, write backlog) must push back
on the vehicle as TCP's receive window does. aioquic grants more stream credit
whenever the peer has sent half of it, read or not; here a stream's credit is
what its protocol has consumed plus a fixed window (the TCP listener's receive
buffer), so a paused stream stops its sender after one window, and the data
already received waits in the transport until reading resumes.

Idle timeout. The QUIC idle timeout is tied to the heartbeat policy: a little
longer than ``[terminals] heartbeat_timeout_s``, so that a silent vehicle is
closed by the JT/T 808 rule (and counted as idle) and QUIC only reclaims
connections that never opened a stream. The effective timeout is the smaller
of the two peers' (RFC 9000 §10.1): a TCU must offer at least its heartbeat
interval.

Session tickets live in :class:`TicketStore`, in memory, single use: a 0-RTT
flight replayed by an attacker finds its ticket gone and is answered with a
full handshake (RFC 8446 §8.1). A gateway restart forgets them; vehicles then
make one full handshake.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.tls import SessionTicket

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger("telacd.quic")

ALPN = "jt808"
# application error codes on CONNECTION_CLOSE / RESET_STREAM (RFC 9000 §20.2: ours to define)
ERROR_CLOSED = 0x0  # the terminal connection was closed (logout, idle, duplicate login, malformed)
ERROR_ABORTED = 0x1  # the gateway aborted the stream
ERROR_SHUTDOWN = 0x2  # the gateway is stopping


def idle_timeout_for(heartbeat_timeout_s: float) -> float:
    """The QUIC idle timeout for a heartbeat policy: 10 % (at least 5 s) longer."""
    return heartbeat_timeout_s + max(5.0, 0.1 * heartbeat_timeout_s)


def plain_address(addr: Any) -> Any:
    """``('::ffff:10.0.0.1', port, 0, 0)`` from a dual-stack socket as ``('10.0.0.1', port)``."""
    if addr and len(addr) == 4 and isinstance(addr[0], str) and addr[0].startswith("::ffff:"):
        return (addr[0][7:], addr[1])
    return addr


class TicketStore:
    """Session tickets the gateway issued, for resumption and 0-RTT; single use, bounded.

    ``add`` is aioquic's ``session_ticket_handler``, ``pop`` its
    ``session_ticket_fetcher``. Taking a ticket out when it is presented makes
    each one good for one resumption: a captured 0-RTT flight replayed later
    finds nothing and falls back to a full handshake, so the same alarm frame
    cannot be injected twice through this gateway. The client receives a
    fresh ticket on every connection.
    """

    def __init__(self, max_tickets: int = 200_000) -> None:
        self.max_tickets = max_tickets
        self._tickets: collections.OrderedDict[bytes, SessionTicket] = collections.OrderedDict()
        self.issued = 0
        self.used = 0

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        self.issued += 1
        while len(self._tickets) > self.max_tickets:
            self._tickets.popitem(last=False)  # the oldest: its vehicle has probably reconnected since

    def pop(self, label: bytes) -> SessionTicket | None:
        ticket = self._tickets.pop(label, None)
        if ticket is None or not ticket.is_valid:
            return None
        self.used += 1
        return ticket

    def __len__(self) -> int:
        return len(self._tickets)


class FlowControlledConnection(QuicConnection):
    """aioquic's connection with receive credit that follows consumption, per stream.

    ``consumed[stream_id]`` is kept by the stream's :class:`StreamTransport`
    (bytes handed to its protocol). Streams without an entry keep aioquic's
    own policy.
    """

    def __init__(self, *args: Any, window: int = 65536, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = window
        self.consumed: dict[int, int] = {}

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        consumed = self.consumed.get(stream.stream_id)
        if consumed is None or not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        # RFC 9000 §4.1: a receiver advertises credit as it consumes. Raise the
        # limit to consumed + window, in steps of half a window so that a
        # steady sender costs one MAX_STREAM_DATA per half window, not per packet.
        target = consumed + self.window
        if target - stream.max_stream_data_local >= self.window // 2:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            # the frame exactly as aioquic writes it, so its loss handler re-sends it
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


class StreamTransport(asyncio.Transport):
    """One bidirectional QUIC stream as a byte-stream transport for an asyncio Protocol.

    The shape of a TCP transport, so that :class:`~gateway.tcu.TcuProtocol`
    runs on it unchanged:

    * ``write`` queues bytes on the stream; the endpoint sends them at the end
      of the loop turn, together with everything else written in that turn.
    * ``close`` sends FIN after the queued bytes and calls the protocol's
      ``connection_lost(None)`` soon after, as TCP does; the QUIC connection
      is closed once no stream is left on it and the peer has the data.
    * ``pause_reading``/``resume_reading`` stop and restart delivery; while
      paused, no further flow-control credit is granted (see the module doc).
    * ``set_write_buffer_limits``: the write buffer is the stream data not yet
      acknowledged by the peer; above ``high`` the protocol's
      ``pause_writing`` is called, below ``low`` again its ``resume_writing``.
    * ``get_extra_info('peername')`` is the vehicle's *current* address (it
      changes when the vehicle migrates); ``'socket'`` is None: the UDP socket
      is shared by every vehicle, so per-connection socket options must not
      touch it.
    """

    def __init__(self, endpoint: Endpoint, stream_id: int, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._ep = endpoint
        self.stream_id = stream_id
        self._protocol = protocol
        self._closing = False
        self._eof_sent = False
        self._lost = False
        self.stopped = False  # the peer sent STOP_SENDING
        self._reading = True
        self._held: collections.deque[bytes] = collections.deque()
        self._fin_held = False
        self._high = 65536
        self._low = 16384
        self._writing_paused = False
        endpoint.quic.consumed[stream_id] = 0

    # -- asyncio.Transport -----------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return plain_address(self._ep.peer)
        if name == "sockname":
            return self._ep.sockname()
        if name == "stream_id":
            return self.stream_id
        if name == "quic":
            return self._ep
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof_sent or self.stopped or not data:
            return
        ep = self._ep
        try:
            ep.quic.send_stream_data(self.stream_id, bytes(data))
        except Exception as e:  # the peer reset or stopped the stream, or the connection ended
            log.debug("write on QUIC stream %d dropped: %s", self.stream_id, e)
            return
        ep.transmit_soon()
        if not self._writing_paused and self.get_write_buffer_size() > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._closing:
            self._send_fin()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._send_fin()
        stream = self._ep.quic._streams.get(self.stream_id)
        if stream is not None and not stream.receiver.is_finished:
            # like a closed TCP socket: the peer is told to stop sending (STOP_SENDING)
            self._ep.quic.stop_stream(self.stream_id, ERROR_CLOSED)
        self._ep.stream_closed(self)
        self._ep.loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self._closing = True
        try:
            self._ep.quic.reset_stream(self.stream_id, ERROR_ABORTED)
        except Exception:
            pass
        self._ep.stream_closed(self)
        self._ep.transmit_soon()
        self._ep.loop.call_soon(self._connection_lost, None)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        if self._held or self._fin_held:
            self._ep.loop.call_soon(self._deliver_held)
        self._ep.transmit_soon()  # the credit withheld while paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 65536 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        # aioquic keeps a stream's unacknowledged bytes in its sender's buffer
        # (private attributes; there is no public accessor)
        stream = self._ep.quic._streams.get(self.stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    # -- called by the endpoint --------------------------------------------------------------

    def data(self, data: bytes, fin: bool) -> None:
        """Stream data from the peer, in order."""
        if self._lost:
            return
        if not self._reading or self._held:
            if data:
                self._held.append(data)
            self._fin_held = self._fin_held or fin
            return
        if data:
            self._ep.quic.consumed[self.stream_id] += len(data)
            self._protocol.data_received(data)
        if fin:
            self._eof()

    def check_writing(self) -> None:
        if self._writing_paused and self.get_write_buffer_size() <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    def lost(self, exc: Exception | None) -> None:
        """The stream or the whole connection is gone."""
        self._closing = True
        self._connection_lost(exc)

    # -- helpers ------------------------------------------------------------------------------

    def _deliver_held(self) -> None:
        consumed = self._ep.quic.consumed
        while self._held and self._reading and not self._lost:
            data = self._held.popleft()
            consumed[self.stream_id] += len(data)
            self._protocol.data_received(data)
        if self._fin_held and not self._held and self._reading and not self._lost:
            self._fin_held = False
            self._eof()
        self._ep.transmit_soon()

    def _eof(self) -> None:
        keep_open = self._protocol.eof_received()
        if not keep_open:
            self.close()

    def _send_fin(self) -> None:
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self._ep.quic.send_stream_data(self.stream_id, b"", end_stream=True)
        except Exception:
            pass  # already reset or finished
        self._ep.transmit_soon()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._held.clear()
        self._ep.quic.consumed.pop(self.stream_id, None)
        self._protocol.connection_lost(exc)


class Endpoint:
    """One QUIC connection on the loop: datagrams in, events to streams, datagrams out, one timer.

    Subclasses decide what a new peer-initiated stream is (``stream_opened``)
    and hear about handshakes, migrations and the end of the connection.
    ``send(data, addr)`` puts one datagram on the wire; ``schedule(endpoint)``
    arranges for ``transmit()`` to run at the end of the loop turn.
    """

    def __init__(
        self,
        quic: FlowControlledConnection,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[bytes, Any], None],
        schedule: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.quic = quic
        self.loop = loop
        self.send = send
        self._schedule = schedule
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.streams: dict[int, StreamTransport] = {}
        self.peer: Any = None
        self.migrations = 0
        self.handshake: qe.HandshakeCompleted | None = None
        self.terminated: qe.ConnectionTerminated | None = None
        self.closed = asyncio.Event()  # set when the connection has ended
        self._close_when_idle = False
        self._next_peer_stream = 0

    # -- input ---------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        quic = self.quic
        quic.receive_datagram(data, addr, self.loop.time())
        self.process_events()
        self.transmit_soon()

    def process_events(self) -> None:
        quic = self.quic
        event = quic.next_event()
        while event is not None:
            t = type(event)
            if t is qe.StreamDataReceived:
                stream = self.streams.get(event.stream_id)
                if stream is None:
                    stream = self._open(event.stream_id)
                if stream is not None:
                    stream.data(event.data, event.end_stream)
            elif t is qe.ConnectionIdIssued:
                self.cid_issued(event.connection_id)
            elif t is qe.ConnectionIdRetired:
                self.cid_retired(event.connection_id)
            elif t is qe.HandshakeCompleted:
                self.handshake = event
                self.handshake_completed(event)
            elif t is qe.StreamReset:
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    stream.lost(ConnectionResetError(f"stream reset by the peer (code {event.error_code})"))
            elif t is qe.StopSendingReceived:
                # the peer reads no more (it closed its end); aioquic has reset our sending
                # side, further writes are dropped; its own FIN or reset ends the stream
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.stopped = True
            elif t is qe.ConnectionTerminated:
                self._ended(event)
                return
            event = quic.next_event()
        # RFC 9000 §9.3: the server sends to a new peer address once a
        # non-probing packet arrives from it; aioquic keeps the active path first
        paths = quic._network_paths
        if paths and paths[0].addr != self.peer:
            if self.peer is not None:
                self.migrations += 1
                self.migrated(self.peer, paths[0].addr)
            self.peer = paths[0].addr

    def _open(self, stream_id: int) -> StreamTransport | None:
        if stream_id & 2:  # unidirectional (RFC 9000 §2.1): JT/T 808 needs both directions
            return None
        # stream IDs of one kind are used in order (RFC 9000 §2.1), so data on an ID
        # below the next one expected belongs to a stream already closed here
        if stream_id < self._next_peer_stream:
            return None
        self._next_peer_stream = stream_id + 4
        protocol = self.stream_opened(stream_id)
        if protocol is None:
            return None
        stream = self.streams[stream_id] = StreamTransport(self, stream_id, protocol)
        protocol.connection_made(stream)
        return stream

    # -- output ---------------------------------------------------------------------------------

    def transmit_soon(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        if self._schedule is not None:
            self._schedule(self)
        else:
            self.loop.call_soon(self.transmit)

    def transmit(self) -> None:
        """Send what the connection has to send now, re-arm the timer."""
        self._scheduled = False
        quic = self.quic
        send = self.send
        for data, addr in quic.datagrams_to_send(now=self.loop.time()):
            send(data, addr)
        # One timer, re-armed lazily: aioquic's deadline moves with nearly every
        # packet (ack delay, loss detection, idle), so a timer that would fire
        # earlier than the new deadline is kept; when it fires it only re-arms.
        timer_at = quic.get_timer()
        if timer_at is not None and (self._timer is None or timer_at < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(timer_at, self._on_timer)
            self._timer_at = timer_at
        for stream in self.streams.values():
            if stream._writing_paused:
                stream.check_writing()
        if self._close_when_idle and not self.streams and self._flushed():
            self._close_when_idle = False
            self.close(ERROR_CLOSED, "terminal connection closed")

    def retransmit_in_flight(self) -> None:
        """After a path change, send again at once everything still unacknowledged.

        What was in flight when a vehicle changed address most likely went
        with the old path (a hand-over is a blackout, then a new address).
        Left to loss recovery, it would wait for the probe timeout, which has
        been doubling through the blackout (RFC 9002 §6.2.1) and may be a second
        or more away; declared lost now (not a congestion event), its data
        leaves on the new path in the next packet, and the probe backoff starts
        over. On a mere NAT rebinding without loss this costs one duplicate of
        what was in flight, which the receiver discards by offset.
        """
        if self.handshake is None:
            return  # still handshaking: aioquic's own recovery handles CRYPTO data
        loss = self.quic._loss  # aioquic has no public call for this
        now = self.loop.time()
        for space in loss.spaces:
            packets = tuple(p for p in space.sent_packets.values() if p.is_ack_eliciting)
            if packets:
                loss._on_packets_lost(congestion_event=False, now=now, packets=packets, space=space)
        loss._pto_count = 0
        self.transmit_soon()

    def _on_timer(self) -> None:
        self._timer = None
        now = max(self._timer_at or 0.0, self.loop.time())
        self._timer_at = None
        due = self.quic.get_timer()
        if due is None:
            return
        if due > now:  # armed for an earlier deadline that has since moved
            self._timer = self.loop.call_at(due, self._on_timer)
            self._timer_at = due
            return
        self.quic.handle_timer(now=now)
        self.process_events()
        self.transmit()

    # -- streams and closing ---------------------------------------------------------------------

    def open_stream(self, protocol: asyncio.Protocol) -> StreamTransport:
        """Open a bidirectional stream of ours (the terminal side) and connect ``protocol`` to it."""
        stream_id = self.quic.get_next_available_stream_id()
        stream = self.streams[stream_id] = StreamTransport(self, stream_id, protocol)
        protocol.connection_made(stream)
        return stream

    def stream_closed(self, stream: StreamTransport) -> None:
        """A stream was closed by its protocol; the last one closes the connection once flushed."""
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            self._close_when_idle = True
            # if the peer never acknowledges, give up after a few probe timeouts
            self.loop.call_later(3.0, self._close_anyway)

    def _close_anyway(self) -> None:
        if self._close_when_idle and not self.streams:
            self._close_when_idle = False
            self.close(ERROR_CLOSED, "terminal connection closed")

    def _flushed(self) -> bool:
        """Every byte we sent (and the FIN) acknowledged by the peer."""
        return all(s.sender.is_finished for s in self.quic._streams.values())

    def close(self, error_code: int = ERROR_CLOSED, reason: str = "") -> None:
        if self.terminated is not None:
            return
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit_soon()

    def _ended(self, event: qe.ConnectionTerminated) -> None:
        if self.terminated is not None:
            return
        self.terminated = event
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None
        streams, self.streams = self.streams, {}
        exc = (
            None
            if event.error_code in (QuicErrorCode.NO_ERROR, ERROR_CLOSED)
            else ConnectionError(f"QUIC connection closed: {event.reason_phrase or hex(event.error_code)}")
        )
        for stream in streams.values():
            stream.lost(exc)
        self.closed.set()
        self.connection_ended(event)

    # -- hooks ------------------------------------------------------------------------------------

    def sockname(self) -> Any:
        return None

    def stream_opened(self, stream_id: int) -> asyncio.Protocol | None:
        """A peer-initiated bidirectional stream: its protocol, or None to ignore it."""
        return None

    def cid_issued(self, cid: bytes) -> None:
        pass

    def cid_retired(self, cid: bytes) -> None:
        pass

    def handshake_completed(self, event: qe.HandshakeCompleted) -> None:
        pass

    def migrated(self, old: Any, new: Any) -> None:
        pass

    def connection_ended(self, event: qe.ConnectionTerminated) -> None:
        pass


class QuicStats:
    """Counters of the QUIC listener (exported as ``telacd_quic_*``)."""

    __slots__ = (
        "connections_open",
        "connections_total",
        "early_data",
        "handshakes",
        "migrations",
        "resumed",
        "streams_total",
        "version_negotiations",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


class _ServerEndpoint(Endpoint):
    def __init__(self, listener: QuicListener, quic: FlowControlledConnection) -> None:
        super().__init__(quic, listener.loop, listener.sendto, listener.schedule)
        self.listener = listener
        self.cids: set[bytes] = set()

    def sockname(self) -> Any:
        return self.listener.sockname

    def stream_opened(self, stream_id: int) -> asyncio.Protocol | None:
        self.listener.stats.streams_total += 1
        return self.listener.protocol_factory()

    def cid_issued(self, cid: bytes) -> None:
        self.cids.add(cid)
        self.listener.endpoints[cid] = self

    def cid_retired(self, cid: bytes) -> None:
        self.cids.discard(cid)
        if self.listener.endpoints.get(cid) is self:
            del self.listener.endpoints[cid]

    def handshake_completed(self, event: qe.HandshakeCompleted) -> None:
        st = self.listener.stats
        st.handshakes += 1
        st.resumed += event.session_resumed
        st.early_data += event.early_data_accepted

    def migrated(self, old: Any, new: Any) -> None:
        self.listener.stats.migrations += 1
        log.debug("QUIC peer %s moved to %s", plain_address(old), plain_address(new))
        # replies lost in the hand-over (0x8001s of alerts that arrived just before) go again now
        self.retransmit_in_flight()

    def connection_ended(self, event: qe.ConnectionTerminated) -> None:
        listener = self.listener
        listener.stats.connections_open -= 1
        for cid in self.cids:
            if listener.endpoints.get(cid) is self:
                del listener.endpoints[cid]
        self.cids.clear()


class QuicListener(asyncio.DatagramProtocol):
    """The UDP socket of the QUIC listener: routes datagrams to connections, flushes them once per turn."""

    def __init__(
        self,
        configuration: QuicConfiguration,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        tickets: TicketStore | None = None,
        window: int = 65536,
    ) -> None:
        self.configuration = configuration
        self.protocol_factory = protocol_factory
        self.tickets = tickets if tickets is not None else TicketStore()
        self.window = window
        self.loop = asyncio.get_running_loop()
        self.endpoints: dict[bytes, _ServerEndpoint] = {}
        self.stats = QuicStats()
        self.transport: asyncio.DatagramTransport | None = None
        self.sockname: Any = None
        self.sendto: Callable[[bytes, Any], None] = lambda data, addr: None
        self._cid_length = configuration.connection_id_length
        self._dirty: list[Endpoint] = []

    # -- asyncio.DatagramProtocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sockname = transport.get_extra_info("sockname")
        self.sendto = self.transport.sendto

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not data:
            return
        if not data[0] & 0x80:
            # short header (RFC 9000 §17.3): flags, then our fixed-length DCID
            ep = self.endpoints.get(data[1 : 1 + self._cid_length])
            if ep is not None:
                ep.datagram_received(data, addr)
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cid_length)
        except ValueError:
            return
        ep = self.endpoints.get(header.destination_cid)
        if ep is not None:
            ep.datagram_received(data, addr)
            return
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return  # never answer one (a reflection loop between two spoofed servers)
        if header.version is not None and header.version not in self.configuration.supported_versions:
            self.stats.version_negotiations += 1
            self.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return
        # RFC 9000 §14.1: a client's first Initial fills at least 1200 bytes (anti-amplification)
        if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return
        quic = FlowControlledConnection(
            configuration=self.configuration,
            original_destination_connection_id=header.destination_cid,
            session_ticket_fetcher=self.tickets.pop,
            session_ticket_handler=self.tickets.add,
            window=self.window,
        )
        ep = _ServerEndpoint(self, quic)
        ep.cids.update((header.destination_cid, quic.host_cid))
        self.endpoints[header.destination_cid] = ep
        self.endpoints[quic.host_cid] = ep
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        ep.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for one peer (port unreachable after a vehicle vanished): loss recovery copes
        log.debug("QUIC socket error: %s", exc)

    # -- batching ----------------------------------------------------------------------------------

    def schedule(self, ep: Endpoint) -> None:
        """Queue ``ep`` for the end-of-turn flush."""
        if not self._dirty:
            self.loop.call_soon(self._flush)
        self._dirty.append(ep)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for ep in dirty:
            ep.transmit()

    # -- lifecycle ---------------------------------------------------------------------------------

    def connections(self) -> list[_ServerEndpoint]:
        return list({id(ep): ep for ep in self.endpoints.values()}.values())

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE is sent now) and the socket."""
        for ep in self.connections():
            ep.quic.close(error_code=ERROR_SHUTDOWN, reason_phrase="gateway stopping")
            ep.transmit()
            ep._ended(qe.ConnectionTerminated(error_code=ERROR_SHUTDOWN, frame_type=None, reason_phrase=""))
        self.endpoints.clear()
        if self.transport is not None:
            self.transport.close()


def server_configuration(
    cert: str,
    key: str,
    *,
    idle_timeout: float,
    window: int = 65536,
) -> QuicConfiguration:
    """The listener's QUIC configuration: ALPN ``jt808``, the certificate, the idle timeout, the window."""
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        max_stream_data=window,
        # connection-wide credit: several windows, so one stream never starves another
        max_data=16 * window,
    )
    try:
        configuration.load_cert_chain(cert, key)
    except (OSError, ValueError) as e:
        raise OSError(f"QUIC certificate {cert} / key {key}: {e}") from e
    return configuration


class QuicServer:
    """What ``start_quic_server`` returns: the listener, its counters, ``close()``."""

    def __init__(self, gw: Gateway, listener: QuicListener, transport: asyncio.DatagramTransport) -> None:
        self.gw = gw
        self.listener = listener
        self.transport = transport
        self.stats = listener.stats
        self.tickets = listener.tickets
        self.address = transport.get_extra_info("sockname")
        self._collector = _Collector(listener)
        try:
            gw.registry.register(self._collector)
        except (AttributeError, ValueError):
            self._collector = None

    def close(self) -> None:
        self.listener.close()
        if self._collector is not None:
            try:
                self.gw.registry.unregister(self._collector)
            except KeyError:
                pass
            self._collector = None


async def start_quic_server(gw: Gateway, host: str, port: int) -> QuicServer:
    """Listen for JT/T 808 terminals over QUIC on ``host:port`` (UDP); one TcuProtocol per stream."""
    from .tcu import TcuProtocol

    g = gw.cfg.gateway
    window = gw.tcu_rcvbuf
    configuration = server_configuration(
        g["quic_cert"],
        g["quic_key"],
        idle_timeout=idle_timeout_for(gw.cfg.terminals["heartbeat_timeout_s"]),
        window=window,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # no SO_REUSEADDR: on Linux it lets a second UDP socket bind the same port and
        # silently take the datagrams; a second gateway on this port must fail to start.
        # Many vehicles share this one socket: a larger receive buffer rides out bursts.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    transport, listener = await gw.loop.create_datagram_endpoint(
        lambda: QuicListener(configuration, lambda: TcuProtocol(gw), window=window), sock=sock
    )
    return QuicServer(gw, listener, transport)


class _Collector:
    """Prometheus view of the listener's counters, read at scrape time."""

    def __init__(self, listener: QuicListener) -> None:
        self.listener = listener

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.listener.stats
        counters = (
            ("telacd_quic_connections", "QUIC connections accepted", st.connections_total),
            ("telacd_quic_handshakes", "QUIC handshakes completed", st.handshakes),
            ("telacd_quic_resumed", "handshakes resumed from a session ticket", st.resumed),
            ("telacd_quic_early_data", "handshakes whose 0-RTT data was accepted", st.early_data),
            ("telacd_quic_migrations", "connections that moved to a new peer address", st.migrations),
            ("telacd_quic_streams", "terminal streams opened", st.streams_total),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "telacd_quic_connections_open", "QUIC connections open", value=st.connections_open
        )
        yield GaugeMetricFamily(
            "telacd_quic_tickets", "session tickets held for resumption", value=len(self.listener.tickets)
        )
