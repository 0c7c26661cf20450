# cython: boundscheck=False, wraparound=False, cdivision=True
"""Indexed priority queue, compiled (the contract is in ``queue.py``).

The heap is an array of C structs and the slot tables are C arrays, so push,
pop, remove and update touch Python objects only to store or hand back the
item. Where this differs from the reference is invisible from outside:
removal is in place rather than lazy, and slots (hence handle low bits) are
reused, tagged with a generation so that a stale handle raises KeyError.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport isnan

cdef Py_ssize_t _SLOT_MASK = 0xFFFFFFFF


cdef inline bint _less(_Entry* a, _Entry* b) noexcept:
    if a.k1 != b.k1:
        return a.k1 < b.k1
    if a.k2 != b.k2:
        return a.k2 < b.k2
    return a.seq < b.seq


cdef class IndexedHeap:
    """Min-heap on ``(k1, k2, insertion order)`` with O(log n) remove/update.

    A 4-ary heap: half the depth of a binary one, and the four children of
    a node share a cache line or two, which is what sift-down (the cost of
    every re-key of a freed agent and every pop) pays for.
    """

    def __cinit__(self):
        self._heap_cap = 16
        self._slot_cap = 16
        self._heap = <_Entry*> PyMem_Malloc(self._heap_cap * sizeof(_Entry))
        self._pos = <Py_ssize_t*> PyMem_Malloc(self._slot_cap * sizeof(Py_ssize_t))
        self._gen = <Py_ssize_t*> PyMem_Malloc(self._slot_cap * sizeof(Py_ssize_t))
        self._free = <Py_ssize_t*> PyMem_Malloc(self._slot_cap * sizeof(Py_ssize_t))
        if not self._heap or not self._pos or not self._gen or not self._free:
            raise MemoryError()
        self._n = 0
        self._nslots = 0
        self._nfree = 0
        self._seq = 0
        self._items = []

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._pos)
        PyMem_Free(self._gen)
        PyMem_Free(self._free)

    def __len__(self):
        return self._n

    def __bool__(self):
        return self._n > 0

    def __contains__(self, Py_ssize_t handle):
        cdef Py_ssize_t slot = handle & _SLOT_MASK
        return (0 <= slot < self._nslots and self._pos[slot] >= 0
                and self._gen[slot] == (handle >> 32))

    def __iter__(self):
        return iter(self.items())

    cdef int _grow_heap(self) except -1:
        cdef Py_ssize_t cap = self._heap_cap * 2
        cdef _Entry* h = <_Entry*> PyMem_Realloc(self._heap, cap * sizeof(_Entry))
        if not h:
            raise MemoryError()
        self._heap = h
        self._heap_cap = cap
        return 0

    cdef Py_ssize_t _new_slot(self) except -1:
        cdef Py_ssize_t slot, cap
        cdef Py_ssize_t* p
        if self._nfree:
            self._nfree -= 1
            return self._free[self._nfree]
        if self._nslots == self._slot_cap:
            cap = self._slot_cap * 2
            p = <Py_ssize_t*> PyMem_Realloc(self._pos, cap * sizeof(Py_ssize_t))
            if not p:
                raise MemoryError()
            self._pos = p
            p = <Py_ssize_t*> PyMem_Realloc(self._gen, cap * sizeof(Py_ssize_t))
            if not p:
                raise MemoryError()
            self._gen = p
            p = <Py_ssize_t*> PyMem_Realloc(self._free, cap * sizeof(Py_ssize_t))
            if not p:
                raise MemoryError()
            self._free = p
            self._slot_cap = cap
        slot = self._nslots
        self._nslots += 1
        self._gen[slot] = 0
        self._items.append(None)
        return slot

    cdef Py_ssize_t _slot_of(self, Py_ssize_t handle) except -1:
        cdef Py_ssize_t slot = handle & _SLOT_MASK
        if handle < 0 or slot >= self._nslots or self._pos[slot] < 0 or self._gen[slot] != (handle >> 32):
            raise KeyError(handle)
        return slot

    cdef void _sift_up(self, Py_ssize_t i) noexcept:
        cdef _Entry e = self._heap[i]
        cdef Py_ssize_t parent
        while i > 0:
            parent = (i - 1) >> 2
            if not _less(&e, &self._heap[parent]):
                break
            self._heap[i] = self._heap[parent]
            self._pos[self._heap[i].slot] = i
            i = parent
        self._heap[i] = e
        self._pos[e.slot] = i

    cdef void _sift_down(self, Py_ssize_t i) noexcept:
        cdef _Entry e = self._heap[i]
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t child, c, last
        while True:
            child = 4 * i + 1
            if child >= n:
                break
            last = child + 4 if child + 4 <= n else n
            c = child + 1
            while c < last:
                if _less(&self._heap[c], &self._heap[child]):
                    child = c
                c += 1
            if not _less(&self._heap[child], &e):
                break
            self._heap[i] = self._heap[child]
            self._pos[self._heap[i].slot] = i
            i = child
        self._heap[i] = e
        self._pos[e.slot] = i

    cpdef Py_ssize_t push(self, double k1, double k2, object item) except -1:
        """Insert ``item`` with key ``(k1, k2)``; return its handle."""
        cdef Py_ssize_t slot, i
        if isnan(k1) or isnan(k2):
            raise ValueError("IndexedHeap keys must not be NaN")
        if self._n == self._heap_cap:
            self._grow_heap()
        slot = self._new_slot()
        self._items[slot] = item
        i = self._n
        self._n += 1
        self._heap[i].k1 = k1
        self._heap[i].k2 = k2
        self._heap[i].seq = self._seq
        self._heap[i].slot = slot
        self._seq += 1
        self._pos[slot] = i
        self._sift_up(i)
        return (self._gen[slot] << 32) | slot

    cpdef object peek(self):
        """The item with the smallest key (IndexError when empty)."""
        if self._n == 0:
            raise IndexError("peek from an empty IndexedHeap")
        return self._items[self._heap[0].slot]

    def peek_key(self):
        if self._n == 0:
            raise IndexError("peek from an empty IndexedHeap")
        return (self._heap[0].k1, self._heap[0].k2)

    cpdef double peek_k1(self) except? -1.0:
        if self._n == 0:
            raise IndexError("peek from an empty IndexedHeap")
        return self._heap[0].k1

    cpdef double peek_k2(self) except? -1.0:
        if self._n == 0:
            raise IndexError("peek from an empty IndexedHeap")
        return self._heap[0].k2

    cdef object _take(self, Py_ssize_t i):
        # remove the entry at heap index i; the last entry fills the hole and
        # moves up or down as its key requires
        cdef Py_ssize_t slot = self._heap[i].slot
        cdef object item = self._items[slot]
        self._items[slot] = None
        self._pos[slot] = -1
        self._gen[slot] = (self._gen[slot] + 1) & 0x7FFFFFFF
        self._free[self._nfree] = slot
        self._nfree += 1
        self._n -= 1
        if i != self._n:
            self._heap[i] = self._heap[self._n]
            self._pos[self._heap[i].slot] = i
            if i > 0 and _less(&self._heap[i], &self._heap[(i - 1) >> 2]):
                self._sift_up(i)
            else:
                self._sift_down(i)
        return item

    cpdef object pop(self):
        """Remove and return the item with the smallest key."""
        if self._n == 0:
            raise IndexError("pop from an empty IndexedHeap")
        return self._take(0)

    cpdef object remove(self, Py_ssize_t handle):
        """Remove the entry of ``handle`` and return its item (KeyError if gone)."""
        return self._take(self._pos[self._slot_of(handle)])

    cpdef update(self, Py_ssize_t handle, double k1, double k2):
        """Re-key an entry; it keeps its insertion rank among equal keys."""
        cdef Py_ssize_t slot = self._slot_of(handle)
        cdef Py_ssize_t i = self._pos[slot]
        if isnan(k1) or isnan(k2):
            raise ValueError("IndexedHeap keys must not be NaN")
        self._heap[i].k1 = k1
        self._heap[i].k2 = k2
        if i > 0 and _less(&self._heap[i], &self._heap[(i - 1) >> 2]):
            self._sift_up(i)
        else:
            self._sift_down(i)

    cpdef object item(self, Py_ssize_t handle):
        return self._items[self._slot_of(handle)]

    def key(self, Py_ssize_t handle):
        cdef Py_ssize_t i = self._pos[self._slot_of(handle)]
        return (self._heap[i].k1, self._heap[i].k2)

    cpdef list items(self):
        """All items, in no particular order."""
        cdef Py_ssize_t i
        return [self._items[self._heap[i].slot] for i in range(self._n)]

    cpdef list ordered(self):
        """All items in pop order (O(n log n); for introspection)."""
        cdef Py_ssize_t i
        keyed = [(self._heap[i].k1, self._heap[i].k2, self._heap[i].seq, self._heap[i].slot)
                 for i in range(self._n)]
        keyed.sort()
        return [self._items[k[3]] for k in keyed]

    cpdef clear(self):
        cdef Py_ssize_t slot
        for slot in range(self._nslots):
            if self._pos[slot] >= 0:
                self._pos[slot] = -1
                self._gen[slot] = (self._gen[slot] + 1) & 0x7FFFFFFF
                self._items[slot] = None
                self._free[self._nfree] = slot
                self._nfree += 1
        self._n = 0
