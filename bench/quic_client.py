"""The terminal side of JT/T 808 over QUIC, for tests, the bench fleet and the demo.

A vehicle opens one QUIC connection (ALPN ``jt808``) and one bidirectional
stream on it, and speaks on that stream exactly what it would speak on a TCP
socket. :func:`create_connection` mirrors ``loop.create_connection``: it takes
a protocol factory and returns ``(transport, protocol)``, the transport being
the same :class:`~gateway.quic.StreamTransport` the gateway uses, so the fleet's
asyncio Protocols (bench/fleet.py) run over QUIC unchanged, and
:class:`QuicTerminalClient` is bench/terminal.py's step-by-step client over it.

What a cellular terminal does with QUIC, and this client does too:

* keeps the session ticket of its last connection (:class:`TicketJar`) and,
  when it reconnects, sends its first frames (the 0x0102 authentication) as
  0-RTT data in the first flight;
* survives an address change: when the socket's address or port changes under
  it, QUIC carries on (the gateway validates the new path, RFC 9000 §9);
  :meth:`QuicTerminal.rebind` moves to a new local port on purpose (what a NAT
  rebinding looks like from the gateway) and :meth:`QuicTerminal.probe` sends
  at once after the modem reports a new address, rather than at the next
  report or loss timer.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket

from bench.terminal import TerminalClient
from gateway.quic import ALPN, Endpoint, FlowControlledConnection, StreamTransport

_ping_ids = itertools.count(1)


class TicketJar:
    """Session tickets per server (``host:port``), as a terminal keeps them between connections."""

    def __init__(self) -> None:
        self.tickets: dict[str, SessionTicket] = {}

    def get(self, server: str) -> SessionTicket | None:
        ticket = self.tickets.get(server)
        if ticket is not None and not ticket.is_valid:
            del self.tickets[server]
            return None
        return ticket

    def keeper(self, server: str) -> Callable[[SessionTicket], None]:
        """aioquic's ``session_ticket_handler`` for connections to ``server``: keep the newest."""

        def keep(ticket: SessionTicket) -> None:
            self.tickets[server] = ticket

        return keep


class _Socket(asyncio.DatagramProtocol):
    """One UDP socket of a terminal; the terminal may replace it (rebind) and keep its connection."""

    def __init__(self, owner: QuicTerminal) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.owner.socket is self:  # a socket being retired may still deliver a straggler
            self.owner.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable while the link is down: loss recovery copes


class QuicTerminal(Endpoint):
    """A terminal's QUIC connection: the endpoint plus its (replaceable) UDP socket."""

    def __init__(self, quic: FlowControlledConnection, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(quic, loop, self._sendto)
        self.socket: _Socket | None = None
        self.server: Any = None
        self._connected = loop.create_future()

    def _sendto(self, data: bytes, addr: Any) -> None:
        if self.socket is not None and self.socket.transport is not None:
            self.socket.transport.sendto(data, addr)

    async def bind(self, local_addr: tuple[str, int] | None = None) -> Any:
        """Open a UDP socket on ``local_addr`` (default: any address, a free port); returns its address."""
        loop = self.loop
        family = socket.AF_INET6 if self.server and ":" in self.server[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(local_addr or (("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
        except OSError:
            sock.close()
            raise
        _, proto = await loop.create_datagram_endpoint(lambda: _Socket(self), sock=sock)
        old, self.socket = self.socket, proto
        if old is not None and old.transport is not None:
            old.transport.close()
        return proto.transport.get_extra_info("sockname")

    async def rebind(self, local_addr: tuple[str, int] | None = None, *, new_cid: bool = True) -> Any:
        """Move to a new UDP socket (a new local port) mid-connection, as a NAT rebinding does.

        With ``new_cid`` the terminal also switches to a fresh connection ID the
        gateway issued, as RFC 9000 §9.5 asks of a migrating client (so the two
        paths cannot be linked by an observer). Returns the new local address.
        """
        if local_addr is None and self.socket is not None and self.socket.transport is not None:
            local_addr = (self.socket.transport.get_extra_info("sockname")[0], 0)
        addr = await self.bind(local_addr)
        if new_cid:
            try:
                self.quic.change_connection_id()
            except Exception:
                pass  # no spare connection ID yet: keep the current one
        self.probe()
        return addr

    def probe(self) -> None:
        """After a network change: what is in flight goes again now, with a PING, from the new address.

        The gateway learns the new path from the first packet, and the frames
        sent into the blackout do not wait for a probe timeout that doubled
        while the link was dark (see ``Endpoint.retransmit_in_flight``).
        """
        if self.terminated is None:
            self.retransmit_in_flight()
            self.quic.send_ping(next(_ping_ids))
            self.transmit()

    def sockname(self) -> Any:
        if self.socket is None or self.socket.transport is None:
            return None
        return self.socket.transport.get_extra_info("sockname")

    async def wait_connected(self, timeout: float | None = None) -> qe.HandshakeCompleted:
        await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        return self.handshake

    # -- Endpoint hooks ---------------------------------------------------------------------------

    def handshake_completed(self, event: qe.HandshakeCompleted) -> None:
        if not self._connected.done():
            self._connected.set_result(None)

    def connection_ended(self, event: qe.ConnectionTerminated) -> None:
        if not self._connected.done():
            reason = event.reason_phrase or f"error 0x{event.error_code:x}"
            self._connected.set_exception(ConnectionRefusedError(f"QUIC handshake failed: {reason}"))
            self._connected.exception()  # retrieved here: nobody may be waiting any more
        if self.socket is not None and self.socket.transport is not None:
            self.socket.transport.close()


def client_configuration(
    server_name: str,
    *,
    cafile: str | None = None,
    idle_timeout: float = 300.0,
    window: int = 65536,
    ticket: SessionTicket | None = None,
) -> QuicConfiguration:
    """ALPN ``jt808``; the server's certificate checked against ``cafile`` (not checked without one)."""
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        server_name=server_name,
        idle_timeout=idle_timeout,
        max_stream_data=window,
        max_data=4 * window,
        session_ticket=ticket,
    )
    if cafile:
        configuration.load_verify_locations(cafile)
        configuration.verify_mode = ssl.CERT_REQUIRED
    else:
        configuration.verify_mode = ssl.CERT_NONE  # development gateways with a self-signed pair
    return configuration


async def connect(
    host: str,
    port: int,
    *,
    local_addr: tuple[str, int] | None = None,
    tickets: TicketJar | None = None,
    cafile: str | None = None,
    server_name: str | None = None,
    idle_timeout: float = 300.0,
) -> QuicTerminal:
    """Start a QUIC connection to ``host:port`` (an address) and return it before the handshake ends.

    With a ticket in ``tickets`` the connection resumes; streams opened and
    written before :meth:`QuicTerminal.wait_connected` returns go out as
    0-RTT data. Without one, writes wait for the handshake (one round trip).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    server = infos[0][4][:2]
    key = f"{server_name or host}:{port}"
    ticket = tickets.get(key) if tickets is not None else None
    configuration = client_configuration(
        server_name or host, cafile=cafile, idle_timeout=idle_timeout, ticket=ticket
    )
    quic = FlowControlledConnection(
        configuration=configuration,
        session_ticket_handler=tickets.keeper(key) if tickets is not None else None,
        window=configuration.max_stream_data,
    )
    term = QuicTerminal(quic, loop)
    term.server = server
    await term.bind(local_addr)
    quic.connect(server, now=loop.time())
    term.transmit()
    return term


async def create_connection(
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    *,
    local_addr: tuple[str, int] | None = None,
    tickets: TicketJar | None = None,
    cafile: str | None = None,
    server_name: str | None = None,
    idle_timeout: float = 300.0,
    timeout: float = 10.0,
) -> tuple[StreamTransport, asyncio.Protocol]:
    """``loop.create_connection`` over QUIC: one connection, one stream, ``protocol`` on it.

    With a usable session ticket (``tickets``) the protocol is connected at
    once, so what it writes in ``connection_made`` (a 0x0100 or 0x0102) rides
    in 0-RTT; the handshake is still awaited before returning. Raises an
    ``OSError`` (``ConnectionRefusedError``, ``TimeoutError``) if the
    handshake fails, as ``create_connection`` does when a TCP connect fails.
    """
    term = await connect(
        host,
        port,
        local_addr=local_addr,
        tickets=tickets,
        cafile=cafile,
        server_name=server_name,
        idle_timeout=idle_timeout,
    )
    protocol = protocol_factory()
    early = term.quic.configuration.session_ticket is not None
    stream = term.open_stream(protocol) if early else None
    try:
        await term.wait_connected(timeout)
    except BaseException:
        term.close(0x1, "handshake abandoned")
        term.transmit()
        if term.socket is not None and term.socket.transport is not None:
            term.socket.transport.close()
        raise
    if stream is None:
        stream = term.open_stream(protocol)
    term.transmit()
    return stream, protocol


class QuicTerminalClient(TerminalClient):
    """bench/terminal.py's one-vehicle client, over a QUIC stream instead of a TCP socket."""

    quic: QuicTerminal
    transport: StreamTransport

    async def connect(  # type: ignore[override]
        self,
        host: str,
        port: int,
        *,
        tickets: TicketJar | None = None,
        cafile: str | None = None,
        server_name: str | None = None,
        local_addr: tuple[str, int] | None = None,
        early_data: bytes = b"",
    ) -> QuicTerminalClient:
        """Connect; ``early_data`` (e.g. a 0x0102 frame) is written before the handshake completes."""
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(self.reader)
        self.quic = await connect(
            host, port, local_addr=local_addr, tickets=tickets, cafile=cafile, server_name=server_name
        )
        self.transport = self.quic.open_stream(protocol)
        self.writer = asyncio.StreamWriter(self.transport, protocol, self.reader, loop)
        if early_data:
            self.transport.write(early_data)
            self.quic.transmit()
        try:
            await self.quic.wait_connected(10.0)
        except BaseException:
            self.quic.close()
            raise
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.quic.closed.wait(), 5.0)
            except TimeoutError:
                pass


# -- the bench fleet over QUIC ---------------------------------------------------------------------


async def connect_fleet_terminal(fleet: Any, term: asyncio.Protocol, source_ip: str | None) -> None:
    """bench/fleet.py's connector for ``transport="quic"`` (its ``CONNECTORS``): one vehicle, one connection.

    The fleet keeps one :class:`TicketJar`, so a vehicle that reconnects
    resumes with 0-RTT. The port is ``FleetOptions.port`` (the QUIC listener's);
    the certificate is not checked (development gateways are self-signed).
    """
    jar = getattr(fleet, "quic_tickets", None)
    if jar is None:
        jar = fleet.quic_tickets = TicketJar()
    opts = fleet.opts
    await create_connection(
        lambda: term,
        opts.host,
        opts.port,
        local_addr=(source_ip, 0) if source_ip else None,
        tickets=jar,
    )
