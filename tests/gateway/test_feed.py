"""FeedHub: replay then live with no gap and no duplicate, over a real store."""

from __future__ import annotations

import asyncio
import collections

import pytest

from gateway.channels import Channel
from gateway.config import SubscriberSpec
from gateway.feed import FeedHub
from gateway.store import NewEvent, make_store


class MemoryChannel(Channel):
    """The client side is two queues; the hub sees a Channel."""

    transport_name = "memory"
    peer = "memory"

    def __init__(self) -> None:
        self.to_client: asyncio.Queue = asyncio.Queue()
        self.from_client: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def send(self, msg):
        if not self.closed:
            self.to_client.put_nowait(msg)

    async def drain(self):
        await asyncio.sleep(0)

    async def recv(self):
        if self.closed:
            return None
        return await self.from_client.get()

    def close(self):
        if not self.closed:
            self.closed = True
            self.from_client.put_nowait(None)

    async def flush_and_close(self):
        self.close()


SUBS = {
    "crm": SubscriberSpec("crm", "secret", {}),
    "oem-a": SubscriberSpec("oem-a", "a", {"tenants": ("a",)}),
}


@pytest.fixture
async def hub(tmp_path):
    store = make_store(f"sqlite:///{tmp_path}/feed.db")
    await store.open()
    hub = FeedHub(store, ring_size=8)
    await hub.start()
    yield hub
    await store.close()


async def emit(hub: FeedHub, n: int, tenant: str = "a", start: int = 0) -> None:
    for i in range(start, start + n):
        rows = await hub.store.commit(
            [], [NewEvent(f"s{i}", "created", 1.0 + i, {"i": i}, tenant, "emergency", "crash")]
        )
        hub.publish(rows)


async def read_events(ch: MemoryChannel, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        msg = await asyncio.wait_for(ch.to_client.get(), 5)
        if msg["type"] == "event":
            out.append(msg)
    return out


async def test_replay_from_store_then_live_without_gap_or_duplicate(hub):
    await emit(hub, 30)  # ring holds 8: most of the replay comes from the store
    ch = MemoryChannel()
    ch.from_client.put_nowait({"type": "subscribe", "subscriber": "crm", "token": "secret", "after": 3})
    task = asyncio.create_task(hub.serve(ch, SUBS))
    first = await asyncio.wait_for(ch.to_client.get(), 5)
    assert first == {"type": "subscribed", "seq": 30}
    # more events commit while the subscriber is still replaying
    producer = asyncio.create_task(emit(hub, 40, start=30))
    events = await read_events(ch, 67)
    await producer
    assert [e["seq"] for e in events] == list(range(4, 71))
    assert events[0]["session"] == "s3" and events[0]["data"] == {"i": 3} and events[0]["at"].endswith("Z")
    ch.close()
    await asyncio.wait_for(task, 5)
    assert hub.subscribers == {}


async def test_without_after_only_new_events(hub):
    await emit(hub, 5)
    ch = MemoryChannel()
    ch.from_client.put_nowait({"type": "subscribe", "subscriber": "crm", "token": "secret"})
    task = asyncio.create_task(hub.serve(ch, SUBS))
    assert (await ch.to_client.get())["seq"] == 5
    await emit(hub, 2, start=5)
    assert [e["seq"] for e in await read_events(ch, 2)] == [6, 7]
    ch.close()
    await task


async def test_filters_narrow_but_never_widen(hub):
    await emit(hub, 3, tenant="a")
    await emit(hub, 3, tenant="b", start=3)
    ch = MemoryChannel()
    # asks for tenant b, but is only allowed tenant a: sees nothing of b
    ch.from_client.put_nowait(
        {
            "type": "subscribe",
            "subscriber": "oem-a",
            "token": "a",
            "after": 0,
            "filter": {"tenants": ["a", "b"]},
        }
    )
    task = asyncio.create_task(hub.serve(ch, SUBS))
    await ch.to_client.get()
    got = await read_events(ch, 3)
    assert {e["tenant"] for e in got} == {"a"}
    await emit(hub, 1, tenant="a", start=6)
    (last,) = await read_events(ch, 1)
    assert last["seq"] == 7
    ch.close()
    await task


@pytest.mark.parametrize(
    "first, code",
    [
        ({"type": "subscribe", "subscriber": "crm", "token": "wrong"}, "auth"),
        ({"type": "subscribe", "subscriber": "nobody", "token": "x"}, "auth"),
        ({"type": "ping"}, "bad_message"),
        ({"type": "subscribe", "subscriber": "crm"}, "bad_message"),
        (
            {"type": "subscribe", "subscriber": "crm", "token": "secret", "filter": {"events": ["boom"]}},
            "bad_filter",
        ),
    ],
)
async def test_refusals(hub, first, code):
    ch = MemoryChannel()
    ch.from_client.put_nowait(first)
    await asyncio.wait_for(hub.serve(ch, SUBS), 5)
    reply = ch.to_client.get_nowait()
    assert reply["type"] == "error" and reply["code"] == code
    assert ch.closed


async def test_after_subscribing_ping_works_and_bad_messages_get_errors(hub):
    ch = MemoryChannel()
    ch.from_client.put_nowait({"type": "subscribe", "subscriber": "crm", "token": "secret"})
    task = asyncio.create_task(hub.serve(ch, SUBS))
    await ch.to_client.get()
    ch.from_client.put_nowait({"type": "ping", "id": 7})
    assert await asyncio.wait_for(ch.to_client.get(), 5) == {"type": "pong", "id": 7}
    ch.from_client.put_nowait({"type": "bogus"})
    assert (await asyncio.wait_for(ch.to_client.get(), 5))["code"] == "unknown_type"
    await emit(hub, 1)
    assert (await read_events(ch, 1))[0]["seq"] == 1  # still subscribed
    ch.close()
    await task


async def test_publish_out_of_order_is_released_in_order(hub):
    seen = collections.deque()
    hub.listeners.append(lambda row: seen.append(row.seq))
    rows = []
    for i in range(3):
        rows += await hub.store.commit([], [NewEvent(f"s{i}", "created", 1.0, {}, "a", "q", "k")])
    hub.publish([rows[2]])
    hub.publish([rows[1]])
    assert hub.committed == 0 and list(seen) == []
    hub.publish([rows[0]])
    assert hub.committed == 3 and list(seen) == [1, 2, 3]
