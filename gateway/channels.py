"""One message channel over two transports: WebSocket (JSON text) and TCP (length-prefixed msgpack).

The agent hub and the subscriber feed are written once against :class:`Channel`:

* ``send(msg)`` never blocks the caller: an offer pushed to an agent must not
  wait behind that agent's slow socket. Messages are written at once when the
  transport can take them, otherwise queued; a channel whose backlog passes
  ``max_backlog`` messages is closed (a consumer that stopped reading).
* ``await drain()`` waits until what was sent has been handed to the kernel:
  the feed uses it for backpressure, so a slow subscriber slows only itself.
* ``await recv()`` returns the next message (a dict), a
  :class:`~protocols.agentwire.BadMessage` for a well-framed but invalid one,
  or ``None`` when the peer has gone.
* ``close()`` stops accepting messages and closes the connection *after* what
  was already sent has been written (the ``logged_out``, ``replaced`` or
  ``auth`` error that explains the close), waiting at most ``FLUSH_TIMEOUT_S``
  for a peer that does not read. ``await flush_and_close()`` does the same and
  returns once the connection is closed. Whoever closes first, the peer or the
  gateway, no task of the channel outlives it.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from typing import Any

from aiohttp import WSMsgType, web

from protocols.agentwire import (
    BadMessage,
    FrameDecoder,
    WireError,
    check_client_message,
    decode_json,
    encode_frame,
    encode_json,
)

MAX_BACKLOG = 10000
FLUSH_TIMEOUT_S = 2.0  # how long a closing channel waits for its peer to take what was sent

# closing channels, referenced until they are closed (the loop only keeps weak references to tasks)
_CLOSING: set[asyncio.Task] = set()


class Channel(abc.ABC):
    """What the agent and feed hubs need of a connection, whatever carries it (WebSocket or TCP)."""

    transport_name = "?"
    peer = "?"
    closed = False

    @abc.abstractmethod
    def send(self, msg: dict[str, Any]) -> None:
        """Queue one message; never blocks (a peer too far behind is closed)."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until what was queued has been handed to the transport."""

    @abc.abstractmethod
    async def recv(self) -> dict[str, Any] | BadMessage | None:
        """The next message, a BadMessage for one that does not parse, or None at the end."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close now, flushing what was queued in the background (bounded)."""

    @abc.abstractmethod
    async def flush_and_close(self) -> None:
        """Send what was queued (bounded by FLUSH_TIMEOUT_S), then close."""


class WebSocketChannel(Channel):
    """JSON text frames over an aiohttp WebSocket; binary frames are read as msgpack maps."""

    transport_name = "websocket"
    FLUSH_TIMEOUT_S = FLUSH_TIMEOUT_S

    def __init__(self, ws: web.WebSocketResponse, peer: str, max_backlog: int = MAX_BACKLOG) -> None:
        self.ws = ws
        self.peer = peer
        self._out: collections.deque[str] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._max = max_backlog
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self._closing: asyncio.Task | None = None

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        if len(self._out) >= self._max:
            self._out.clear()  # a consumer that stopped reading: nothing more is worth waiting for
            self.close()
            return
        self._out.append(encode_json(msg))
        self._idle.clear()
        self._wake.set()

    async def _send_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out:
                    await self.ws.send_str(self._out.popleft())
                self._idle.set()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self.closed = True
            self._idle.set()

    async def drain(self) -> None:
        await self._idle.wait()

    async def recv(self) -> dict[str, Any] | BadMessage | None:
        while True:
            if self.closed:
                return None
            msg = await self.ws.receive()
            if msg.type == WSMsgType.TEXT:
                try:
                    return decode_json(msg.data)
                except BadMessage as e:
                    return e
            if msg.type == WSMsgType.BINARY:
                try:
                    import msgpack

                    value = msgpack.unpackb(msg.data, raw=False)
                except Exception:
                    return BadMessage("bad_msgpack", "binary frames must hold one msgpack map")
                return (
                    value if isinstance(value, dict) else BadMessage("bad_message", "a message must be a map")
                )
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                self.closed = True
                return None

    def close(self) -> None:
        """Stop accepting messages; write what is queued (bounded), then close. Idempotent."""
        if self._closing is not None:
            return
        self.closed = True
        self._closing = task = asyncio.get_running_loop().create_task(self._close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.FLUSH_TIMEOUT_S
        try:
            await asyncio.wait_for(self._idle.wait(), self.FLUSH_TIMEOUT_S)  # everything queued written
        except TimeoutError:
            pass
        finally:
            self._sender.cancel()
            await asyncio.wait({self._sender})
        try:
            await asyncio.wait_for(self.ws.close(), max(0.1, deadline - loop.time()))
        except (Exception, asyncio.CancelledError):
            # a dead or silent peer: the transport is closed anyway. (aiohttp shares one drain
            # waiter between writers, so the cancelled sender can make close() raise CancelledError)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise

    async def flush_and_close(self) -> None:
        """Close, and return once what was sent has been written (or the flush timed out)."""
        self.close()
        assert self._closing is not None
        await asyncio.shield(self._closing)


class TcpChannel(asyncio.Protocol, Channel):
    """Length-prefixed msgpack maps over a TCP connection (asyncio Protocol: no stream overhead)."""

    transport_name = "tcp"
    FLUSH_TIMEOUT_S = FLUSH_TIMEOUT_S

    def __init__(self, on_connect, max_backlog: int = MAX_BACKLOG) -> None:
        self._on_connect = on_connect
        self._decoder = FrameDecoder()
        self._inbox: collections.deque = collections.deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._max = max_backlog
        self.transport: asyncio.Transport | None = None
        self._lost = asyncio.Event()
        self._abort: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        transport.set_write_buffer_limits(high=1 << 20)  # type: ignore[attr-defined]
        asyncio.get_running_loop().create_task(self._on_connect(self))

    def data_received(self, data: bytes) -> None:
        try:
            self._inbox.extend(self._decoder.receive_data(data))
        except WireError as e:
            self._inbox.append(BadMessage("frame_too_large", str(e)))
            self._inbox.append(None)
            self.transport.pause_reading()
        self._readable.set()
        if len(self._inbox) > 1000:  # the handler is not keeping up: stop reading until it does
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._inbox.append(None)
        self._readable.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost.set()
        if self._abort is not None:
            self._abort.cancel()
        self._inbox.append(None)
        self._readable.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- Channel -----------------------------------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed or self.transport is None:
            return
        if self.transport.get_write_buffer_size() > self._max * 512:
            self.close()
            return
        self.transport.write(encode_frame(msg))

    async def drain(self) -> None:
        await self._writable.wait()

    async def recv(self) -> dict[str, Any] | BadMessage | None:
        while not self._inbox:
            self._readable.clear()
            await self._readable.wait()
        item = self._inbox.popleft()
        if len(self._inbox) < 100 and self.transport is not None and not self.closed:
            self.transport.resume_reading()
        if item is None:
            self._inbox.appendleft(None)  # stay at end of stream
        return item

    def close(self) -> None:
        """Stop accepting messages and close once the written data is flushed (bounded). Idempotent."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()  # flushes what is buffered, then closes
            if not self._lost.is_set():  # a peer that does not read cannot keep the connection
                self._abort = asyncio.get_running_loop().call_later(
                    self.FLUSH_TIMEOUT_S, self.transport.abort
                )

    async def flush_and_close(self) -> None:
        """Close, and return once the connection is closed (what was sent flushed, or timed out)."""
        self.close()
        if self.transport is not None:
            await self._lost.wait()


async def first_message(channel: Channel, spec: dict[str, Any], expected: str) -> dict[str, Any] | None:
    """The opening message of a connection (``login`` or ``subscribe``), validated against ``spec``.

    Returns None after answering an invalid opening with an error and closing
    the connection (or when the peer left without a word).
    """
    first = await channel.recv()
    if first is None:
        return None
    try:
        if isinstance(first, BadMessage):
            raise first
        check_client_message(first, spec)
        if first["type"] != expected:
            raise BadMessage("bad_message", f"the first message must be '{expected}'")
    except BadMessage as e:
        channel.send(e.to_message())
        await channel.flush_and_close()
        return None
    return first


async def refuse(channel: Channel, code: str, message: str) -> None:
    """Answer with an error and close (authentication failures)."""
    channel.send({"type": "error", "code": code, "message": message})
    await channel.flush_and_close()
