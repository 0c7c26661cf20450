# The compiled indexed priority queue (see queue.py for the contract; the two
# must behave identically, and tests/acd_core/test_queue.py checks that they do).
cimport cython

# One heap entry. ``slot`` names the entry's place in the slot tables (item,
# heap position, generation), which is what a handle points at.
cdef struct _Entry:
    double k1
    double k2
    unsigned long long seq
    Py_ssize_t slot


@cython.final
cdef class IndexedHeap:
    cdef _Entry* _heap          # binary min-heap on (k1, k2, seq)
    cdef Py_ssize_t _n          # live entries
    cdef Py_ssize_t _heap_cap
    cdef Py_ssize_t* _pos       # slot -> index in _heap, or -1 when the slot is free
    cdef Py_ssize_t* _gen       # slot -> generation, bumped when the slot is freed
    cdef Py_ssize_t _nslots     # slots ever handed out
    cdef Py_ssize_t _slot_cap
    cdef Py_ssize_t* _free      # stack of free slots
    cdef Py_ssize_t _nfree
    cdef list _items            # slot -> item (None when free)
    cdef unsigned long long _seq

    # A handle is (generation << 32) | slot: a handle kept after its entry left
    # the heap no longer matches the slot's generation and raises KeyError.
    cpdef Py_ssize_t push(self, double k1, double k2, object item) except -1
    cpdef object peek(self)
    cpdef double peek_k1(self) except? -1.0
    cpdef double peek_k2(self) except? -1.0
    cpdef object pop(self)
    cpdef object remove(self, Py_ssize_t handle)
    cpdef update(self, Py_ssize_t handle, double k1, double k2)
    cpdef object item(self, Py_ssize_t handle)
    cpdef list items(self)
    cpdef list ordered(self)
    cpdef clear(self)

    cdef Py_ssize_t _slot_of(self, Py_ssize_t handle) except -1
    cdef void _sift_up(self, Py_ssize_t i) noexcept
    cdef void _sift_down(self, Py_ssize_t i) noexcept
    cdef object _take(self, Py_ssize_t i)
    cdef int _grow_heap(self) except -1
    cdef Py_ssize_t _new_slot(self) except -1
