"""The indexed priority queue: compiled vs reference vs a sorted-list model.

One hypothesis state machine drives both implementations and a naive model
(a list sorted on (k1, k2, insertion rank)) with the same pushes, pops,
removes and re-keys, and demands identical items and keys from all three.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from acd_core import impl as _impl
from tests.acd_core.conftest import load_heap

# few distinct keys so that ties (and thus the FIFO rule) are common
KEYS = st.sampled_from([-1.5, 0.0, 0.0, 1.0, 2.0, 1e9])


def test_compiled_queue_loaded():
    if _impl.PURE_PYTHON:
        pytest.skip("TELACD_PURE_PYTHON=1 forces the reference")
    cls = load_heap("compiled")
    assert cls.__module__ == "acd_core._queue"
    assert _impl.is_compiled(__import__("acd_core._queue", fromlist=["x"]))


class HeapMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.heaps = [load_heap("compiled"), load_heap("reference")]
        self.heaps = [cls() for cls in self.heaps]
        self.model: dict[int, tuple[float, float, int, int]] = {}  # id -> (k1, k2, rank, id)
        self.handles: dict[int, list[int]] = {}  # id -> handle in each heap
        self.next_id = 0
        self.stale: list[list[int]] = []

    def _expected_order(self):
        return sorted(self.model.values())

    @rule(k1=KEYS, k2=KEYS)
    def push(self, k1, k2):
        ident = self.next_id
        self.next_id += 1
        self.handles[ident] = [h.push(k1, k2, ident) for h in self.heaps]
        self.model[ident] = (k1, k2, ident, ident)

    @precondition(lambda self: self.model)
    @rule()
    def pop(self):
        expect = self._expected_order()[0]
        for h in self.heaps:
            assert h.peek() == expect[3]
            assert h.peek_key() == (expect[0], expect[1])
            assert h.pop() == expect[3]
        del self.model[expect[3]]
        self.stale.append(self.handles.pop(expect[3]))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data):
        ident = data.draw(st.sampled_from(sorted(self.model)))
        for h, handle in zip(self.heaps, self.handles[ident]):
            assert h.remove(handle) == ident
        del self.model[ident]
        self.stale.append(self.handles.pop(ident))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), k1=KEYS, k2=KEYS)
    def update(self, data, k1, k2):
        ident = data.draw(st.sampled_from(sorted(self.model)))
        for h, handle in zip(self.heaps, self.handles[ident]):
            h.update(handle, k1, k2)
            assert h.key(handle) == (k1, k2)
        # a re-keyed entry keeps its insertion rank
        self.model[ident] = (k1, k2, self.model[ident][2], ident)

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def stale_handle_is_refused(self, data):
        handles = data.draw(st.sampled_from(self.stale))
        for h, handle in zip(self.heaps, handles):
            assert handle not in h
            with pytest.raises(KeyError):
                h.remove(handle)
            with pytest.raises(KeyError):
                h.update(handle, 0.0, 0.0)

    @invariant()
    def same_contents(self):
        order = [v[3] for v in self._expected_order()]
        for h in self.heaps:
            assert len(h) == len(order)
            assert bool(h) == bool(order)
            assert h.ordered() == order
            assert sorted(h.items()) == sorted(order)
            for ident, handle in zip(order, (self.handles[i][self.heaps.index(h)] for i in order)):
                assert handle in h
                assert h.item(handle) == ident


TestHeapMachine = HeapMachine.TestCase


def test_empty_heap_errors(heap_cls):
    h = heap_cls()
    with pytest.raises(IndexError):
        h.pop()
    with pytest.raises(IndexError):
        h.peek()
    with pytest.raises(ValueError):
        h.push(float("nan"), 0.0, "x")


def test_large_drain_is_sorted_and_fifo(heap_cls):
    # 20k entries over 50 distinct keys: pop order must be key order, FIFO inside a key
    import random

    rng = random.Random(7)
    h = heap_cls()
    entries = [(rng.randrange(50), i) for i in range(20000)]
    handles = {}
    for k, i in entries:
        handles[i] = h.push(float(k), 0.0, i)
    for i in range(0, 20000, 3):  # remove a third, then re-key a tenth
        h.remove(handles.pop(i))
    for i in list(handles)[::10]:
        h.update(handles[i], 25.0, 0.0)
    rank = {i: (25 if i in set(list(handles)[::10]) else k, i) for k, i in entries if i in handles}
    out = [h.pop() for _ in range(len(h))]
    assert out == sorted(rank, key=lambda i: rank[i])
