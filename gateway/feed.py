"""The subscriber feed: every session event, numbered, in order, replayable.

Downstream contact systems subscribe with ``after`` (the last sequence number
they processed) and receive every later event, then the live ones, with no gap
and no duplicate at the seam between replay and live.

How that holds by construction: a subscriber is not pushed events. It owns a
cursor and a pump that repeatedly asks the hub for "events after my cursor".
The hub answers from an in-memory ring of recent committed events when the
ring still holds the cursor's successor, and from the store otherwise. Replay
and live are the same loop; the only difference is where the rows come from.
Only *committed* events are ever visible (the store numbers them inside the
committing transaction), so the feed can never show an event that a restart
would take back. A subscriber that reads slowly falls behind the ring and is
served from the store; it never makes the gateway buffer without bound.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import logging
from typing import Any

from protocols.agentwire import SUBSCRIBER_MESSAGES, BadMessage, check_client_message

from .channels import Channel, first_message, refuse
from .config import ConfigError, SubscriberSpec, check_filter
from .store import EventRow, Store

log = logging.getLogger("telacd.feed")

BATCH = 500


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_message(row: EventRow) -> dict[str, Any]:
    return {
        "type": "event",
        "seq": row.seq,
        "session": row.session,
        "event": row.event,
        "at": iso(row.at),
        "tenant": row.tenant,
        "queue": row.queue,
        "kind": row.kind,
        "data": row.data,
    }


class FeedHub:
    def __init__(self, store: Store, ring_size: int = 65536) -> None:
        self.store = store
        self._ring: collections.deque[EventRow] = collections.deque(maxlen=ring_size)
        self._pending: dict[int, EventRow] = {}
        self.committed = 0
        self._wakers: set[asyncio.Event] = set()
        self.subscribers: dict[int, dict[str, Any]] = {}  # live subscriptions, for the admin API
        self._channels: set[Channel] = set()
        self._ids = itertools.count(1)
        self.listeners: list = []  # callables(row) told of every committed event in order (dashboard)

    async def start(self) -> None:
        self.committed = await self.store.last_seq()

    def publish(self, rows: list[EventRow]) -> None:
        """Record newly committed events (any order; released in sequence order)."""
        for row in rows:
            self._pending[row.seq] = row
        advanced = False
        while self.committed + 1 in self._pending:
            row = self._pending.pop(self.committed + 1)
            self._ring.append(row)
            self.committed = row.seq
            advanced = True
            for fn in self.listeners:
                fn(row)
        if advanced:
            for w in self._wakers:
                w.set()

    def close_all(self) -> None:
        """Close every subscriber connection (shutdown); they resume by sequence number."""
        for ch in list(self._channels):
            ch.close()

    async def events_after(self, after: int, limit: int = BATCH) -> list[EventRow]:
        ring = self._ring
        if ring and ring[0].seq <= after + 1:
            start = after + 1 - ring[0].seq
            return list(itertools.islice(ring, start, start + limit))
        rows = await self.store.events_after(after, limit)
        return [r for r in rows if r.seq <= self.committed]

    # -- one subscriber ------------------------------------------------------------------------

    async def serve(self, channel: Channel, subscribers: dict[str, SubscriberSpec]) -> None:
        """Run one subscriber connection until it closes."""
        first = await first_message(channel, SUBSCRIBER_MESSAGES, "subscribe")
        if first is None:
            return
        spec = subscribers.get(first["subscriber"])
        if spec is None or spec.token != first["token"]:
            await refuse(channel, "auth", "unknown subscriber or wrong token")
            return
        try:
            wanted = check_filter("subscribe", "filter", first.get("filter") or {})
        except ConfigError as e:
            await refuse(channel, "bad_filter", f"{e.key}: {e.reason}")
            return
        filt = _narrow(spec.filter, wanted)
        last = self.committed
        after = first.get("after")
        cursor = last if after is None else max(0, after)
        channel.send({"type": "subscribed", "seq": last})
        sub_id = next(self._ids)
        self._channels.add(channel)
        info = {
            "subscriber": spec.id,
            "peer": channel.peer,
            "transport": channel.transport_name,
            "cursor": cursor,
        }
        self.subscribers[sub_id] = info
        wake = asyncio.Event()
        self._wakers.add(wake)
        reader = asyncio.get_running_loop().create_task(self._read_loop(channel))
        reader.add_done_callback(lambda _: wake.set())  # the peer left: stop waiting for events
        try:
            while not channel.closed and not reader.done():
                if cursor >= self.committed:
                    wake.clear()
                    await wake.wait()
                    continue
                rows = await self.events_after(cursor, BATCH)
                if not rows:
                    # the store has not caught up with what the ring dropped; try again shortly
                    await asyncio.sleep(0.01)
                    continue
                for row in rows:
                    if _match(filt, row):
                        channel.send(event_message(row))
                    cursor = row.seq
                info["cursor"] = cursor
                await channel.drain()
        finally:
            self._wakers.discard(wake)
            self._channels.discard(channel)
            self.subscribers.pop(sub_id, None)
            reader.cancel()
            await channel.flush_and_close()

    async def _read_loop(self, channel: Channel) -> None:
        """After subscribing, a subscriber may only ping; anything else gets an error."""
        while True:
            msg = await channel.recv()
            if msg is None:
                return
            if isinstance(msg, BadMessage):
                channel.send(msg.to_message())
                continue
            try:
                check_client_message(msg, SUBSCRIBER_MESSAGES)
            except BadMessage as e:
                channel.send(e.to_message())
                continue
            if msg["type"] == "ping":
                channel.send({"type": "pong", **({"id": msg["id"]} if "id" in msg else {})})
            else:
                channel.send({"type": "error", "code": "already_subscribed", "message": "already subscribed"})


def _narrow(configured: dict[str, Any], wanted: dict[str, Any]) -> dict[str, tuple]:
    """A subscriber may narrow its configured filter, never widen it."""
    out = dict(configured)
    for key, values in wanted.items():
        if key in out:
            out[key] = tuple(v for v in values if v in out[key])
        else:
            out[key] = values
    return out


def _match(filt: dict[str, tuple], row: EventRow) -> bool:
    if not filt:
        return True
    t = filt.get("tenants")
    if t is not None and row.tenant not in t and "*" not in t:
        return False
    q = filt.get("queues")
    if q is not None and row.queue not in q:
        return False
    e = filt.get("events")
    if e is not None and row.event not in e:
        return False
    k = filt.get("session_kinds")
    return not (k is not None and row.kind not in k)
