"""Indexed priority queue: the pure-Python reference (on :mod:`heapq`).

The ACD keeps every ordered collection in one of these: waiting tasks per
bucket, available agents per bucket, timers. What it needs beyond a plain heap:

* a *handle* per entry, returned by :meth:`IndexedHeap.push`, so that an entry
  can be removed (a caller hangs up) or re-keyed (a supervisor raises the
  priority) in O(log n) without searching for it;
* a total order: keys are two floats compared lexicographically, and entries
  with equal keys come out in insertion order (FIFO). :meth:`update` keeps an
  entry's insertion rank, so a re-keyed task does not lose its place among
  equals. The order is therefore fully determined, which is what lets a test
  drive this reference and the compiled ``_queue.IndexedHeap`` with the same
  operations and demand identical output.

Removal here is lazy (a dead entry stays in the heap list until it reaches the
top, and the list is rebuilt when more than half of it is dead); the compiled
version removes in place. Handles are never reused here; the compiled version
reuses slots but tags handles with a generation, so in both a stale handle
raises :class:`KeyError` instead of touching another entry.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from typing import Any

# entry layout: [k1, k2, seq, version, handle, item]; handle None marks a dead
# entry. ``version`` is unique per entry: an update leaves a dead copy with the
# same (k1, k2, seq) behind, and list comparison must never reach the handle.
_K1, _K2, _SEQ, _VERSION, _HANDLE, _ITEM = range(6)


class IndexedHeap:
    """Min-heap on ``(k1, k2, insertion order)`` with handles."""

    __slots__ = ("_dead", "_entries", "_heap", "_next_handle", "_seq", "_version")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._entries: dict[int, list[Any]] = {}
        self._seq = 0
        self._next_handle = 1
        self._version = 0
        self._dead = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __contains__(self, handle: int) -> bool:
        return handle in self._entries

    def push(self, k1: float, k2: float, item: Any) -> int:
        """Insert ``item`` with key ``(k1, k2)``; return its handle."""
        _check_key(k1, k2)
        handle = self._next_handle
        self._next_handle += 1
        entry = [float(k1), float(k2), self._seq, self._version, handle, item]
        self._seq += 1
        self._version += 1
        self._entries[handle] = entry
        heapq.heappush(self._heap, entry)
        return handle

    def _drop_dead_top(self) -> None:
        heap = self._heap
        while heap and heap[0][_HANDLE] is None:
            heapq.heappop(heap)
            self._dead -= 1

    def peek(self) -> Any:
        """The item with the smallest key (IndexError when empty)."""
        self._drop_dead_top()
        if not self._heap:
            raise IndexError("peek from an empty IndexedHeap")
        return self._heap[0][_ITEM]

    def peek_key(self) -> tuple[float, float]:
        self._drop_dead_top()
        if not self._heap:
            raise IndexError("peek from an empty IndexedHeap")
        top = self._heap[0]
        return top[_K1], top[_K2]

    def peek_k1(self) -> float:
        return self.peek_key()[0]

    def peek_k2(self) -> float:
        return self.peek_key()[1]

    def pop(self) -> Any:
        """Remove and return the item with the smallest key."""
        self._drop_dead_top()
        if not self._heap:
            raise IndexError("pop from an empty IndexedHeap")
        entry = heapq.heappop(self._heap)
        del self._entries[entry[_HANDLE]]
        return entry[_ITEM]

    def remove(self, handle: int) -> Any:
        """Remove the entry of ``handle`` and return its item (KeyError if gone)."""
        entry = self._entries.pop(handle)
        entry[_HANDLE] = None
        item = entry[_ITEM]
        entry[_ITEM] = None
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._compact()
        return item

    def update(self, handle: int, k1: float, k2: float) -> None:
        """Re-key an entry; it keeps its insertion rank among equal keys."""
        _check_key(k1, k2)
        old = self._entries[handle]
        new = [float(k1), float(k2), old[_SEQ], self._version, handle, old[_ITEM]]
        self._version += 1
        old[_HANDLE] = None
        old[_ITEM] = None
        self._dead += 1
        self._entries[handle] = new
        heapq.heappush(self._heap, new)
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._compact()

    def item(self, handle: int) -> Any:
        return self._entries[handle][_ITEM]

    def key(self, handle: int) -> tuple[float, float]:
        entry = self._entries[handle]
        return entry[_K1], entry[_K2]

    def items(self) -> list[Any]:
        """All items, in no particular order."""
        return [e[_ITEM] for e in self._entries.values()]

    def ordered(self) -> list[Any]:
        """All items in pop order (O(n log n); for introspection)."""
        live = sorted(self._entries.values(), key=lambda e: (e[_K1], e[_K2], e[_SEQ]))
        return [e[_ITEM] for e in live]

    def clear(self) -> None:
        self._heap.clear()
        self._entries.clear()
        self._dead = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items())

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[_HANDLE] is not None]
        heapq.heapify(self._heap)
        self._dead = 0


def _check_key(k1: float, k2: float) -> None:
    # NaN compares false both ways and would silently break the heap property
    if math.isnan(k1) or math.isnan(k2):
        raise ValueError("IndexedHeap keys must not be NaN")
