# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled fast path of the JT/T 808 codec.

Exports the same names as the pure-Python reference ``codec.py`` and behaves
identically; any difference is a bug here (the tests drive both with the same
vectors and with hypothesis). What is compiled is what every frame pays for on
the gateway's hot path:

* splitting on 0x7E, scanning with ``memchr``, directly over the caller's
  buffer (no copy of a frame that contains no 0x7D), with the framing check
  (``frame_ok``: escapes, XOR, length bits) that decides whether a suspect
  candidate's closing flag also starts the next one (codec.py,
  "Resynchronising"); the Splitter runs it on every candidate, the decoder
  only on a frame that failed or was decoded leniently;
* unescaping into a module scratch buffer, only when the frame has a 0x7D;
* the XOR checksum, a word at a time;
* the header, both layouts, with the phone string cached per decoder;
* the bodies of 0x0200, 0x0201, 0x0704 (basic block and standard items),
  0x0001/0x8001, 0x0900/0x8900, the 2013 0x0102 and the empty-bodied messages;
* the per-frame 0x8001 (``encode_ack``, ``encode_general_response``), frame
  building and escaping, and the terminal side's 0x0200 body
  (``encode_location``).

Other bodies go to the reference ``messages.decode_body``: they are rare, and
sharing that code keeps the two implementations equal by construction.

Records are the NamedTuple classes of messages.py, allocated here as
tuple_alloc does for tuples and filled in place (see the C block below on
why they start untracked by the cycle collector).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_FromDouble
from cpython.long cimport PyLong_FromLong, PyLong_FromUnsignedLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.list cimport PyList_AsTuple
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_Decode
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from . import messages as _m
from .bits import DEFAULT_PROFILE
from .errors import (
    ChecksumError,
    EscapeError,
    FrameTooLargeError,
    HeaderShortError,
    Jt808LocalError,
    Jt808ProtocolError,
    LengthError,
    TruncatedError,
)

cdef extern from *:
    """
    /* Records are tuple subclasses (messages.py). Most hold only ints, floats,
       str, bytes, None and other such records, so they cannot be part of a
       reference cycle, and keeping them out of the cycle collector matters: a
       decoder makes 3-10 records per frame, and when they were tracked, the
       generation-0 collections walking them cost about half of a decoded frame
       (measured). CPython untracks such exact tuples itself, but only later,
       during a collection (_PyTuple_MaybeUntrack), and never tuple subclasses.

       telacd_new_record allocates a tuple-subclass instance with n NULL items
       the way tuple_alloc does (PyObject_GC_NewVar), so it starts untracked;
       the caller fills every item, then telacd_track_if_needed tracks it if an
       item could be part of a cycle. */
    #ifdef TELACD_DEBUG
    /* debug builds (make debug) check that every item of a record was set */
    static void telacd_check_filled(PyObject* t) {
        Py_ssize_t i;
        for (i = 0; i < Py_SIZE(t); i++)
            if (PyTuple_GET_ITEM(t, i) == NULL) Py_FatalError("telacd: record item left NULL");
    }
    #else
    #define telacd_check_filled(t)
    #endif
    static PyObject* telacd_new_record(PyObject* type, Py_ssize_t n) {
        PyVarObject* o = _PyObject_GC_NewVar((PyTypeObject*)type, n);
        if (o == NULL) return NULL;
        memset(((PyTupleObject*)o)->ob_item, 0, (size_t)n * sizeof(PyObject*));
        return (PyObject*)o;
    }
    static int telacd_atomic(PyObject* e) {
        PyTypeObject* et = Py_TYPE(e);
        if (et == &PyLong_Type || et == &PyFloat_Type || et == &PyUnicode_Type ||
            et == &PyBytes_Type || et == &PyBool_Type || e == Py_None) return 1;
        return PyTuple_Check(e) && !PyObject_GC_IsTracked(e);
    }
    /* A record whose items are atomic except possibly `inner`. */
    static inline void telacd_track_if_tracked(PyObject* t, PyObject* inner) {
        telacd_check_filled(t);
        if (PyTuple_Check(inner) && PyObject_GC_IsTracked(inner)) PyObject_GC_Track(t);
    }
    static void telacd_track_if_needed(PyObject* t) {
        Py_ssize_t i, n = Py_SIZE(t);
        telacd_check_filled(t);
        for (i = 0; i < n; i++) {
            PyObject* e = PyTuple_GET_ITEM(t, i);
            if (e != NULL && !telacd_atomic(e)) { PyObject_GC_Track(t); return; }
        }
    }
    /* Untrack a tuple (or record) created tracked, e.g. by PyTuple_New or by
       Python code, if it holds only atomic items; nested records first. */
    static void telacd_untrack(PyObject* t) {
        Py_ssize_t i, n = Py_SIZE(t);
        for (i = 0; i < n; i++) {
            PyObject* e = PyTuple_GET_ITEM(t, i);
            if (e == NULL || !telacd_atomic(e)) return;
        }
        PyObject_GC_UnTrack(t);
    }
    static void telacd_untrack_deep(PyObject* t, int depth) {
        Py_ssize_t i, n = Py_SIZE(t);
        if (depth > 4) return;
        for (i = 0; i < n; i++) {
            PyObject* e = PyTuple_GET_ITEM(t, i);
            if (e != NULL && PyTuple_Check(e) && PyObject_GC_IsTracked(e))
                telacd_untrack_deep(e, depth + 1);
        }
        telacd_untrack(t);
    }
    static PyObject* telacd_ascii_str(const char* s, Py_ssize_t n) {
        PyObject* u = PyUnicode_New(n, 127);
        if (u != NULL) memcpy(PyUnicode_1BYTE_DATA(u), s, n);
        return u;
    }
    """
    object telacd_ascii_str(const char* s, Py_ssize_t n)
    void telacd_untrack(object t) noexcept
    object telacd_new_record(object type, Py_ssize_t n)
    void telacd_track_if_needed(object t) noexcept
    void telacd_track_if_tracked(object t, object inner) noexcept
    void PyObject_GC_UnTrack(object o) noexcept
    void telacd_untrack_deep(object t, int depth) noexcept

IMPLEMENTATION = "compiled"
DEFAULT_MAX_BUFFER = 4096

cdef object Message = _m.Message
cdef object Header = _m.Header
cdef object Location = _m.Location
cdef object LocationBatch = _m.LocationBatch
cdef object LocationQueryResponse = _m.LocationQueryResponse
cdef object GeneralResponse = _m.GeneralResponse
cdef object Passthrough = _m.Passthrough
cdef object Authenticate = _m.Authenticate
cdef object EMPTY = _m.EMPTY
telacd_untrack(EMPTY)  # the shared empty body: a Message holding it can be untracked too
cdef object py_decode_body = _m.decode_body
cdef object py_item_value = _m.item_value
cdef object py_phone_bcd = _m.phone_bcd

cdef object V2013 = 2013
cdef object V2019 = 2019
cdef int FAULT_CHECKSUM = _m.FAULT_CHECKSUM
cdef int FAULT_LENGTH = _m.FAULT_LENGTH
cdef int FAULT_ESCAPE = _m.FAULT_ESCAPE

cdef const char* HEXDIGITS = b"0123456789abcdef"

# Size of the standard additional items that decode to unsigned ints, by id
# (0 = not such an item); mirrors messages.ITEM_UINT_SIZES.
cdef uint8_t ITEM_UINT[256]
ITEM_UINT[:] = [0] * 256
for _k, _v in _m.ITEM_UINT_SIZES.items():
    ITEM_UINT[_k] = _v

# Items with composite values (tuples, or 30 bytes of tire pressures): rare,
# decoded by the reference function so both implementations agree exactly.
cdef uint8_t ITEM_COMPOSITE[256]
ITEM_COMPOSITE[:] = [0] * 256
for _k in (0x05, 0x11, 0x12, 0x13):
    ITEM_COMPOSITE[_k] = 1

# Scratch buffer for unescaped frames. One per process is enough: a frame is
# decoded start to finish while holding the GIL, and the Python fallback gets
# a bytes copy of the body, never a pointer into the scratch.
cdef unsigned char* _scratch = NULL
cdef Py_ssize_t _scratch_size = 0

cdef unsigned char* scratch(Py_ssize_t n) except NULL:
    global _scratch, _scratch_size
    cdef void* p
    if n > _scratch_size:
        p = realloc(_scratch, n)
        if p == NULL:
            raise MemoryError()
        _scratch = <unsigned char*>p
        _scratch_size = n
    return _scratch


# Interned ints for 16-bit fields (ids, attributes, serials, altitudes,
# directions, WORD items): filled lazily, at most 65536 small ints (~2 MiB) per
# process, like CPython's own cache of -5..256. It saves an allocation and a
# free per field on the hot path.
cdef PyObject* U16_CACHE[65536]

cdef inline object u16obj(unsigned int v):
    cdef PyObject* o = U16_CACHE[v]
    if o != NULL:
        return <object>o
    obj = PyLong_FromLong(v)
    Py_INCREF(obj)  # the cache's reference, never released
    U16_CACHE[v] = <PyObject*>obj
    return obj


# Speeds (WORD, 1/10 km/h) as floats, interned the same way: a vehicle's
# speed takes few distinct values (0.0 whenever it is parked).
cdef PyObject* SPEED_CACHE[65536]

cdef inline object speed_obj(unsigned int raw):
    cdef PyObject* o = SPEED_CACHE[raw]
    if o != NULL:
        return <object>o
    obj = PyFloat_FromDouble(raw / 10.0)
    Py_INCREF(obj)  # the cache's reference, never released
    SPEED_CACHE[raw] = <PyObject*>obj
    return obj


# A small direct-mapped cache for 32-bit alarm/status words: a fleet reports
# the same few status combinations over and over, and these ints are above
# CPython's small-int range, so each would otherwise be a fresh allocation.
cdef PyObject* U32_CACHE[256]
cdef unsigned long U32_KEYS[256]

cdef inline object u32obj(unsigned long v):
    cdef unsigned int slot = (v ^ (v >> 8) ^ (v >> 16) ^ (v >> 24)) & 0xFF
    cdef PyObject* o = U32_CACHE[slot]
    if o != NULL and U32_KEYS[slot] == v:
        return <object>o
    if v < 257:
        return PyLong_FromUnsignedLong(v)  # CPython's own small ints
    obj = PyLong_FromUnsignedLong(v)
    Py_INCREF(obj)
    Py_XDECREF(o)  # the evicted entry
    U32_CACHE[slot] = <PyObject*>obj
    U32_KEYS[slot] = v
    return obj


# The additional-item ids of a device's reports repeat from one report to the
# next, so the bytes object holding them is shared through a small
# direct-mapped cache keyed by content (bytes are immutable).
cdef enum:
    IDS_CACHE_SLOTS = 64
    IDS_MAX = 64

cdef PyObject* IDS_CACHE[IDS_CACHE_SLOTS]

cdef object ids_bytes(const unsigned char* ids, Py_ssize_t count):
    cdef unsigned int h = <unsigned int>count * 31
    cdef Py_ssize_t k
    cdef PyObject* o
    if count > IDS_MAX:
        return PyBytes_FromStringAndSize(<const char*>ids, count)
    for k in range(count):
        h = h * 131 + ids[k]
    h = (h ^ (h >> 7)) % IDS_CACHE_SLOTS
    o = IDS_CACHE[h]
    if o != NULL and PyBytes_GET_SIZE(<object>o) == count and memcmp(PyBytes_AS_STRING(<object>o), ids, count) == 0:
        return <object>o
    obj = PyBytes_FromStringAndSize(<const char*>ids, count)
    Py_INCREF(obj)
    Py_XDECREF(o)
    IDS_CACHE[h] = <PyObject*>obj
    return obj


cdef unsigned char* _scratch2 = NULL
cdef Py_ssize_t _scratch2_size = 0

cdef unsigned char* scratch2(Py_ssize_t n) except NULL:
    """A second scratch buffer (item ids of a very long item list; the first may hold the frame)."""
    global _scratch2, _scratch2_size
    cdef void* p
    if n > _scratch2_size:
        p = realloc(_scratch2, n)
        if p == NULL:
            raise MemoryError()
        _scratch2 = <unsigned char*>p
        _scratch2_size = n
    return _scratch2


# ---------------------------------------------------------------------------
# small inline readers: callers guarantee the bytes exist

cdef inline unsigned int u16(const unsigned char* p) noexcept nogil:
    return (<unsigned int>p[0]) << 8 | p[1]

cdef inline unsigned long u32(const unsigned char* p) noexcept nogil:
    return (<unsigned long>p[0]) << 24 | (<unsigned long>p[1]) << 16 | (<unsigned long>p[2]) << 8 | p[3]

cdef inline void set_item(object t, Py_ssize_t i, object v) noexcept:
    Py_INCREF(v)
    PyTuple_SET_ITEM(t, i, v)


cdef inline int xor_bytes(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t acc = 0, w = 0
    cdef int x
    while n >= 8:
        memcpy(&w, p, 8)
        acc ^= w
        p += 8
        n -= 8
    acc ^= acc >> 32
    acc ^= acc >> 16
    acc ^= acc >> 8
    x = <int>(acc & 0xFF)
    while n > 0:
        x ^= p[0]
        p += 1
        n -= 1
    return x


cdef Py_ssize_t unescape_into(const unsigned char* src, Py_ssize_t n, unsigned char* dst,
                              bint lenient_7d, bint* tolerated) except -2:
    """Unescape src[:n] into dst; returns the length, or -1 on an invalid escape."""
    cdef Py_ssize_t i = 0, j = 0
    cdef unsigned char c
    tolerated[0] = False
    if lenient_7d and n > 0 and src[n - 1] == 0x7D:
        # a lone 0x7D checksum sent unescaped before the end flag (jt808.md §6.2)
        n -= 1
        tolerated[0] = True
    while i < n:
        c = src[i]
        if c == 0x7D:
            if i + 1 >= n:
                return -1
            c = src[i + 1]
            if c == 0x01:
                dst[j] = 0x7D
            elif c == 0x02:
                dst[j] = 0x7E
            else:
                return -1
            i += 2
        else:
            dst[j] = c
            i += 1
        j += 1
    if tolerated[0]:
        dst[j] = 0x7D
        j += 1
    return j


cdef object bcd_time(const unsigned char* p):
    """Same as messages.bcd_time: zone-naive epoch seconds, or None."""
    cdef int v[6]
    cdef int k, hi, lo, year, month, day, dim, y, era, yoe, doy, doe
    for k in range(6):
        hi = p[k] >> 4
        lo = p[k] & 15
        if hi > 9 or lo > 9:
            return None
        v[k] = hi * 10 + lo
    year = 2000 + v[0]
    month = v[1]
    day = v[2]
    if month < 1 or month > 12 or day < 1 or v[3] > 23 or v[4] > 59 or v[5] > 59:
        return None
    if month == 2:
        dim = 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        dim = 30
    else:
        dim = 31
    if day > dim:
        return None
    # days_from_civil (years here are >= 1999, so C division floors like Python's //)
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return PyLong_FromLong((<long>(era * 146097 + doe - 719468)) * 86400 + v[3] * 3600 + v[4] * 60 + v[5])


cdef object item_value(unsigned int item_id, const unsigned char* p, Py_ssize_t n):
    cdef unsigned int size = ITEM_UINT[item_id]
    cdef unsigned int mag
    if size:
        if n == size:
            if size == 4:
                return PyLong_FromUnsignedLong(u32(p))
            if size == 2:
                return u16obj(u16(p))
            return PyLong_FromLong(p[0])
    elif item_id == 0x06 and n == 2:  # cabin temperature, sign-magnitude
        mag = (<unsigned int>(p[0] & 0x7F)) << 8 | p[1]
        return PyLong_FromLong(-<long>mag if p[0] & 0x80 else <long>mag)
    elif ITEM_COMPOSITE[item_id]:
        return py_item_value(item_id, PyBytes_FromStringAndSize(<const char*>p, n))
    return PyBytes_FromStringAndSize(<const char*>p, n)


cdef object pull_location(const unsigned char* b, Py_ssize_t n, bint with_items):
    """A Location from b[:n] (n >= 28 checked by the caller); mirrors messages.pull_location."""
    cdef unsigned long status = u32(b + 4)
    cdef double lat = u32(b + 8) / 1000000.0
    cdef double lon = u32(b + 12) / 1000000.0
    cdef Py_ssize_t i, count = 0, k
    cdef unsigned int item_id, ln
    cdef bint ok = True, composite = False
    cdef object ids, values, value
    cdef unsigned char* idp
    cdef unsigned char idbuf[IDS_MAX]
    if status & 4:  # status bit 2: south latitude
        lat = -lat
    if status & 8:  # status bit 3: west longitude
        lon = -lon
    if with_items and n > 28:
        # first pass counts the items so each sequence is allocated once
        i = 28
        while i < n:
            if n - i < 2:
                break
            count += 1
            i += 2 + b[i + 1]
        values = PyTuple_New(count)
        if count <= IDS_MAX:
            idp = &idbuf[0]
        else:
            idp = scratch2(count)
        i = 28
        k = 0
        while i < n:
            if n - i < 2:  # a dangling id byte without its length
                ok = False
                break
            item_id = b[i]
            ln = b[i + 1]
            i += 2
            if i + ln > n:  # declared length runs past the body: keep what is there
                value = PyBytes_FromStringAndSize(<const char*>(b + i), n - i)
                ok = False
                i = n
            else:
                value = item_value(item_id, b + i, ln)
                composite |= ITEM_COMPOSITE[item_id]
                i += ln
            idp[k] = <unsigned char>item_id
            set_item(values, k, value)
            k += 1
        ids = ids_bytes(idp, count)
        if composite:
            telacd_untrack(values)  # the composite values are tuples made by Python code
        else:
            PyObject_GC_UnTrack(values)  # ints and bytes only
    else:
        ids = b""
        values = ()
    loc = telacd_new_record(Location, 11)
    set_item(loc, 0, u32obj(u32(b)))  # alarm flags
    set_item(loc, 1, u32obj(status))
    set_item(loc, 2, PyFloat_FromDouble(lat))
    set_item(loc, 3, PyFloat_FromDouble(lon))
    set_item(loc, 4, u16obj(u16(b + 16)))  # altitude, m
    set_item(loc, 5, speed_obj(u16(b + 18)))  # speed, 1/10 km/h
    set_item(loc, 6, u16obj(u16(b + 20)))  # direction
    set_item(loc, 7, bcd_time(b + 22))
    set_item(loc, 8, ids)
    set_item(loc, 9, values)
    set_item(loc, 10, ok)
    telacd_track_if_tracked(loc, values)
    return loc


cdef object pull_location_batch(const unsigned char* b, Py_ssize_t n):
    """0x0704; mirrors messages.pull_location_batch."""
    cdef unsigned int count, batch_type, ln
    cdef Py_ssize_t i = 3
    cdef unsigned int k
    cdef bint truncated = False
    cdef object positions, out
    if n < 3:
        raise TruncatedError(f"location batch: body has {n} bytes, needs 3")
    count = u16(b)
    batch_type = b[2]
    positions = []
    for k in range(count):
        if n - i < 2:
            truncated = True
            break
        ln = u16(b + i)
        if ln < 28 or i + 2 + ln > n:
            truncated = True
            break
        positions.append(pull_location(b + i + 2, ln, True))
        i += 2 + ln
    out = telacd_new_record(LocationBatch, 4)
    set_item(out, 0, PyLong_FromLong(batch_type))
    set_item(out, 1, u16obj(count))
    positions = PyList_AsTuple(positions)
    telacd_untrack(positions)
    set_item(out, 2, positions)
    set_item(out, 3, truncated)
    telacd_track_if_needed(out)
    return out


cdef object decode_body(unsigned int msg_id, const unsigned char* b, Py_ssize_t n, object version):
    cdef object r
    if msg_id == 0x0200:
        if n < 28:
            raise TruncatedError(f"location: {n} bytes, the basic block needs 28")
        return pull_location(b, n, True)
    if msg_id == 0x0704:
        return pull_location_batch(b, n)
    if msg_id == 0x0002 or msg_id == 0x0003 or msg_id == 0x8104 or msg_id == 0x8201:
        if n == 0:
            return EMPTY
    elif msg_id == 0x0001 or msg_id == 0x8001:
        if n >= 5:
            r = telacd_new_record(GeneralResponse, 3)
            set_item(r, 0, PyLong_FromLong(u16(b)))
            set_item(r, 1, u16obj(u16(b + 2)))
            set_item(r, 2, PyLong_FromLong(b[4]))
            return r  # atomic fields: never tracked
    elif msg_id == 0x0201:
        if n < 30:
            raise TruncatedError(f"location query response: body has {n} bytes, needs 30")
        r = telacd_new_record(LocationQueryResponse, 2)
        set_item(r, 0, PyLong_FromLong(u16(b)))
        set_item(r, 1, pull_location(b + 2, n - 2, True))
        telacd_track_if_needed(r)
        return r
    elif msg_id == 0x0900 or msg_id == 0x8900:
        if n >= 1:  # passthrough type, then the data (0xF0: the one-key service call)
            r = telacd_new_record(Passthrough, 2)
            set_item(r, 0, PyLong_FromLong(b[0]))
            set_item(r, 1, PyBytes_FromStringAndSize(<const char*>(b + 1), n - 1))
            return r
    elif msg_id == 0x0102 and version is V2013:
        # 2013: the whole body is the auth code (GBK)
        r = telacd_new_record(Authenticate, 3)
        set_item(r, 0, PyUnicode_Decode(<const char*>b, n, "gbk", "replace"))
        set_item(r, 1, None)
        set_item(r, 2, None)
        return r
    r = py_decode_body(msg_id, PyBytes_FromStringAndSize(<const char*>b, n), version)
    if type(r) is not bytes:
        telacd_untrack_deep(r, 0)
    return r


# ---------------------------------------------------------------------------
# public functions (same names and behaviour as codec.py)

def checksum(data):
    """XOR of all bytes (JT/T 808-2013 §1.4.4)."""
    cdef const unsigned char[:] v = data
    if v.shape[0] == 0:
        return 0
    return xor_bytes(&v[0], v.shape[0])


def escape(data):
    """Escape frame content: 0x7D -> 7D 01, 0x7E -> 7D 02."""
    cdef const unsigned char[:] v = data
    cdef Py_ssize_t n = v.shape[0]
    if n == 0:
        return b""
    return escape_raw(&v[0], n, False)


cdef bytes escape_raw(const unsigned char* p, Py_ssize_t n, bint flags):
    cdef Py_ssize_t i, extra = 0, j = 0
    cdef bytes out
    cdef unsigned char* d
    cdef unsigned char c
    for i in range(n):
        if p[i] == 0x7D or p[i] == 0x7E:
            extra += 1
    out = PyBytes_FromStringAndSize(NULL, n + extra + (2 if flags else 0))
    d = <unsigned char*>PyBytes_AS_STRING(out)
    if flags:
        d[0] = 0x7E
        j = 1
    if extra == 0:
        memcpy(d + j, p, n)
        j += n
    else:
        for i in range(n):
            c = p[i]
            if c == 0x7D or c == 0x7E:
                d[j] = 0x7D
                d[j + 1] = 0x01 if c == 0x7D else 0x02
                j += 2
            else:
                d[j] = c
                j += 1
    if flags:
        d[j] = 0x7E
    return out


def unescape(content, lenient_trailing_7d=False):
    """Undo the escapes in frame content (the bytes between the flags)."""
    cdef const unsigned char[:] v = content
    cdef Py_ssize_t n = v.shape[0], m
    cdef bint tolerated = False
    if n == 0:
        return b""
    m = unescape_into(&v[0], n, scratch(n), lenient_trailing_7d, &tolerated)
    if m < 0:
        raise EscapeError("0x7D not followed by 0x01 or 0x02")
    return PyBytes_FromStringAndSize(<const char*>_scratch, m)


cdef bint frame_ok_raw(const unsigned char* c, Py_ssize_t n) noexcept nogil:
    """codec.frame_ok over the escaped bytes c[:n] between two flags, without a copy."""
    cdef Py_ssize_t i = 0, j = 0, spare
    cdef unsigned int attr, hi = 0, lo = 0, b
    cdef int x = 0
    if memchr(c, 0x7D, n) == NULL:
        if n < 13:
            return False
        attr = u16(c + 2)
        x = xor_bytes(c, n)
    else:
        # unescape on the fly: validate the escapes, XOR, keep attribute bytes 2 and 3
        while i < n:
            b = c[i]
            if b == 0x7D:
                if i + 1 >= n:
                    return False
                if c[i + 1] == 0x01:
                    b = 0x7D
                elif c[i + 1] == 0x02:
                    b = 0x7E
                else:
                    return False
                i += 2
            else:
                i += 1
            if j == 2:
                hi = b
            elif j == 3:
                lo = b
            x ^= <int>b
            j += 1
        n = j
        if n < 13:
            return False
        attr = hi << 8 | lo
    spare = n - 13 - (4 if attr & 0x2000 else 0) - <Py_ssize_t>(attr & 0x3FF)  # 0: 2013 layout, 5: 2019
    return x == 0 and (spare == 0 or spare == 5)


def frame_ok(content):
    """Whether the bytes between two flags are a well-formed frame at the framing level. See codec.frame_ok."""
    cdef const unsigned char[:] v = content
    if v.shape[0] == 0:
        return False
    return frame_ok_raw(&v[0], v.shape[0])


cdef inline object shown(bytes pending):
    """pending as reported: a lone flag is held but is not a frame yet (see codec._shown)."""
    if PyBytes_GET_SIZE(pending) == 1:
        return b""
    return pending


cdef Py_ssize_t check_max_buffer(Py_ssize_t max_buffer) except -1:
    if max_buffer < 16:
        raise Jt808LocalError("max_buffer must be at least 16 bytes")
    return max_buffer


cdef inline bytes _joined(bytes pending, object data):
    """The held start of a frame followed by a new read (no copy when nothing is held and it is bytes)."""
    if pending:
        return pending + bytes(data)
    if type(data) is bytes:
        return <bytes>data
    return bytes(data)


cdef class Splitter:
    """Streaming frame splitter: bytes in, candidate wire frames (flags included) out. See codec.Splitter."""

    def __init__(self, Py_ssize_t max_buffer=DEFAULT_MAX_BUFFER):
        self.max_buffer = check_max_buffer(max_buffer)
        self._pending = b""

    def receive_data(self, data):
        """The candidate frames ``data`` completes, as ``bytes``, in stream order. See codec.Splitter.

        Errors are returned, not raised: FrameTooLargeError instances in their
        place among the frames.
        """
        return self._receive(data)

    def feed(self, data):
        """The same as receive_data (the older name)."""
        return self._receive(data)

    cdef list _receive(self, data):
        cdef bytes buf = _joined(self._pending, data)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf), i = 0, s, e, mx = self.max_buffer
        cdef const unsigned char* q
        cdef list out = []
        while True:
            q = <const unsigned char*>memchr(p + i, 0x7E, n - i)
            if q == NULL:
                self._pending = b""
                return out
            s = q - p
            q = <const unsigned char*>memchr(p + s + 1, 0x7E, n - s - 1)
            if q == NULL:
                if n - s >= mx:
                    out.append(FrameTooLargeError(f"no end flag within {mx} bytes"))
                    i = s + mx
                    continue
                self._pending = buf[s:]
                return out
            e = q - p
            if e - s >= mx:
                out.append(FrameTooLargeError(f"no end flag within {mx} bytes"))
                i = s + mx
                continue
            if e == s + 1:
                i = e
                continue
            out.append(buf[s:e + 1])
            # a suspect candidate's closing flag also starts the next one
            i = e + 1 if frame_ok_raw(p + s + 1, e - s - 1) else e

    @property
    def pending(self):
        """The buffered start of an incomplete frame (from its start flag), or b"" (a lone flag is not shown)."""
        return shown(self._pending)


cdef class FrameDecoder:
    """Streaming decoder: bytes in, Message records (or error instances) out. See codec.FrameDecoder."""

    def __init__(self, profile=None, Py_ssize_t max_buffer=DEFAULT_MAX_BUFFER):
        self.profile = profile
        self.max_buffer = check_max_buffer(max_buffer)
        self._pending = b""
        self._phone_len = 0
        self._phone_str = None
        self.wrapped = 0

    @property
    def profile(self):
        return self._profile

    @profile.setter
    def profile(self, value):
        p = DEFAULT_PROFILE if value is None else value
        self._lenient_checksum = p.lenient_checksum
        self._lenient_length = p.lenient_length
        self._lenient_7d = p.lenient_trailing_7d
        self._force_layout = p.force_layout or 0
        self._profile = p

    @property
    def pending(self):
        """The buffered start of an incomplete frame (from its start flag), or b"" (see Splitter)."""
        return shown(self._pending)

    def receive_data(self, data, wrap=None):
        """Decode every frame ``data`` completes. See codec.FrameDecoder.receive_data.

        Returns Messages and Jt808ProtocolError instances in stream order:
        errors are returned, not raised, one per bad candidate in its place.
        Bytes of an incomplete frame are kept for the next call. With ``wrap``
        (a one-field record class), plain 0x0200 reports come back as
        ``wrap(message)``, counted in ``wrapped``.
        """
        return self._receive(data, wrap)

    def feed(self, data, wrap=None):
        """The same as receive_data (the older name, which the connection uses)."""
        return self._receive(data, wrap)

    cdef list _receive(self, data, wrap):
        cdef bytes buf = _joined(self._pending, data)
        cdef object msg, r
        cdef Py_ssize_t wrapped = 0
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buf)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(buf), i = 0, s, e, mx = self.max_buffer
        cdef const unsigned char* q
        cdef list out = []
        while True:
            q = <const unsigned char*>memchr(p + i, 0x7E, n - i)
            if q == NULL:
                self._pending = b""
                self.wrapped = wrapped
                return out
            s = q - p
            q = <const unsigned char*>memchr(p + s + 1, 0x7E, n - s - 1)
            if q == NULL:
                if n - s >= mx:
                    out.append(FrameTooLargeError(f"no end flag within {mx} bytes"))
                    i = s + mx
                    continue
                self._pending = buf[s:]
                self.wrapped = wrapped
                return out
            e = q - p
            if e - s >= mx:
                out.append(FrameTooLargeError(f"no end flag within {mx} bytes"))
                i = s + mx
                continue
            if e == s + 1:
                i = e
                continue
            try:
                msg = self._decode(p + s + 1, e - s - 1)
            except Jt808ProtocolError as exc:
                out.append(exc)
                # a suspect candidate's closing flag also starts the next one
                i = e + 1 if frame_ok_raw(p + s + 1, e - s - 1) else e
                continue
            if wrap is not None and self._last_id == 0x0200 and not self._last_attr & 0x3C00:
                r = telacd_new_record(wrap, 1)
                set_item(r, 0, msg)
                telacd_track_if_tracked(r, msg)
                out.append(r)
                wrapped += 1
            else:
                out.append(msg)
            # no fault: escapes, checksum and length were fine, so the frame is well-formed
            i = e if self._last_faults and not frame_ok_raw(p + s + 1, e - s - 1) else e + 1

    cdef object _phone(self, const unsigned char* p, int n):
        cdef char digits[20]
        cdef int k
        if n == self._phone_len and memcmp(p, self._phone_raw, n) == 0:
            return self._phone_str
        for k in range(n):
            digits[2 * k] = HEXDIGITS[p[k] >> 4]
            digits[2 * k + 1] = HEXDIGITS[p[k] & 15]
        s = telacd_ascii_str(digits, 2 * n)
        memcpy(self._phone_raw, p, n)
        self._phone_len = n
        self._phone_str = s
        return s

    cdef object _decode(self, const unsigned char* content, Py_ssize_t clen):
        """Decode the escaped bytes between the flags; mirrors codec._decode_content."""
        cdef const unsigned char* u = content
        cdef Py_ssize_t ulen = clen, n, hdr, extra
        cdef bint tolerated = False
        cdef int faults = 0, version, x
        cdef unsigned int msg_id, attr, body_len, proto, serial, total = 0, index = 0
        cdef object phone, vobj, body, msg
        if memchr(content, 0x7D, clen) != NULL:
            u = scratch(clen)
            ulen = unescape_into(content, clen, <unsigned char*>u, self._lenient_7d, &tolerated)
            if ulen < 0:
                raise EscapeError("0x7D not followed by 0x01 or 0x02")
            if tolerated:
                faults |= FAULT_ESCAPE
        n = ulen - 1  # bytes before the checksum
        if n < 12:
            raise HeaderShortError(f"{ulen} bytes, a header and checksum need at least 13")
        msg_id = u16(u)
        attr = u16(u + 2)
        self._last_id = msg_id
        self._last_attr = attr
        body_len = attr & 0x3FF
        extra = 4 if attr & 0x2000 else 0
        version = self._force_layout
        if version == 0:
            if attr & 0x4000:
                version = 2013 if n - 12 - extra == body_len else 2019
            else:
                version = 2019 if n - 17 - extra == body_len else 2013
        if version == 2019:
            hdr = 17 + extra
            if n < hdr:
                raise HeaderShortError(f"{ulen} bytes, a 2019 header and checksum need {hdr + 1}")
            proto = u[4]
            phone = self._phone(u + 5, 10)
            serial = u16(u + 15)
            vobj = V2019
        else:
            hdr = 12 + extra
            if n < hdr:
                raise HeaderShortError(f"{ulen} bytes, a 2013 header and checksum need {hdr + 1}")
            proto = 0
            phone = self._phone(u + 4, 6)
            serial = u16(u + 10)
            vobj = V2013
        if extra:
            total = u16(u + hdr - 4)
            index = u16(u + hdr - 2)
        x = xor_bytes(u, ulen)
        if x != 0:
            if not self._lenient_checksum:
                raise ChecksumError(
                    f"checksum 0x{u[n]:02x}, expected 0x{x ^ u[n]:02x}",
                    Header(msg_id, attr, vobj, proto, phone, serial, total, index),
                )
            faults |= FAULT_CHECKSUM
        if n - hdr != body_len:
            if not self._lenient_length:
                raise LengthError(
                    f"body length {body_len} in the header, {n - hdr} bytes present",
                    Header(msg_id, attr, vobj, proto, phone, serial, total, index),
                )
            faults |= FAULT_LENGTH
        if extra or attr & 0x1C00:
            # a packet of a subpackaged message, or an encrypted body: kept raw
            body = PyBytes_FromStringAndSize(<const char*>(u + hdr), n - hdr)
        else:
            try:
                body = decode_body(msg_id, u + hdr, n - hdr, vobj)
            except Jt808ProtocolError as exc:
                exc.header = Header(msg_id, attr, vobj, proto, phone, serial, total, index)
                raise
        self._last_faults = faults
        msg = telacd_new_record(Message, 10)
        set_item(msg, 0, u16obj(msg_id))
        set_item(msg, 1, u16obj(attr))
        set_item(msg, 2, vobj)
        set_item(msg, 3, PyLong_FromLong(proto))
        set_item(msg, 4, phone)
        set_item(msg, 5, PyLong_FromLong(serial))
        set_item(msg, 6, u16obj(total))
        set_item(msg, 7, u16obj(index))
        set_item(msg, 8, PyLong_FromLong(faults))
        set_item(msg, 9, body)
        telacd_track_if_tracked(msg, body)
        return msg


def decode_frame(frame, profile=None):
    """Decode one wire frame (flags included) or raise its Jt808ProtocolError. See codec.decode_frame."""
    dec = FrameDecoder(profile, max(DEFAULT_MAX_BUFFER, len(frame) + 2))
    results = dec.feed(frame)
    if not results:
        raise TruncatedError("no end flag" if dec.pending else "no frame")
    first = results[0]
    if isinstance(first, Jt808ProtocolError):
        raise first
    return first


# ---------------------------------------------------------------------------
# encoders

cdef inline int hexval(Py_UCS4 c) noexcept:
    if 48 <= c <= 57:  # 0-9
        return <int>c - 48
    if 97 <= c <= 102:  # a-f
        return <int>c - 87
    if 65 <= c <= 70:  # A-F
        return <int>c - 55
    return -1


cdef int put_phone(unsigned char* d, object phone, int width) except -1:
    """Write the BCD phone field (width bytes); fast for a str of exactly 2*width hex digits."""
    cdef int k, hi, lo
    cdef str s
    cdef bytes raw
    if type(phone) is str and len(<str>phone) == 2 * width:
        s = <str>phone
        for k in range(width):
            hi = hexval(s[2 * k])
            lo = hexval(s[2 * k + 1])
            if hi < 0 or lo < 0:
                break
            d[k] = <unsigned char>(hi << 4 | lo)
        else:
            return 0
    raw = py_phone_bcd(phone, 2019 if width == 10 else 2013)
    memcpy(d, PyBytes_AS_STRING(raw), width)
    return 0


cdef bytes build_frame(unsigned int msg_id, const unsigned char* body, Py_ssize_t n, object phone,
                       long serial, int version, int proto_version, long pkg_total, long pkg_index,
                       int encrypt):
    cdef unsigned char head[21]
    cdef unsigned char small[64]
    cdef unsigned char* frame
    cdef Py_ssize_t h, total
    cdef unsigned int attr
    if n > 0x3FF:
        raise Jt808LocalError(f"body of {n} bytes exceeds 1023; send it subpackaged")
    attr = <unsigned int>n | (<unsigned int>encrypt) << 10
    if pkg_total:
        attr |= 0x2000
    head[0] = msg_id >> 8
    head[1] = msg_id & 0xFF
    if version == 2019:
        attr |= 0x4000
        head[4] = <unsigned char>proto_version
        put_phone(head + 5, phone, 10)
        h = 15
    else:
        put_phone(head + 4, phone, 6)
        h = 10
    head[2] = attr >> 8
    head[3] = attr & 0xFF
    head[h] = serial >> 8
    head[h + 1] = serial & 0xFF
    h += 2
    if pkg_total:
        head[h] = (pkg_total >> 8) & 0xFF
        head[h + 1] = pkg_total & 0xFF
        head[h + 2] = (pkg_index >> 8) & 0xFF
        head[h + 3] = pkg_index & 0xFF
        h += 4
    total = h + n + 1
    if total <= 64:
        frame = &small[0]
    else:
        frame = scratch(total)
    memcpy(frame, head, h)
    if n:
        memcpy(frame + h, body, n)
    frame[h + n] = <unsigned char>xor_bytes(frame, h + n)
    return escape_raw(frame, total, True)


cdef check_header_fields(msg_id, serial, proto_version, pkg_total, pkg_index, encrypt):
    if not (
        0 <= msg_id <= 0xFFFF
        and 0 <= serial <= 0xFFFF
        and 0 <= proto_version <= 0xFF
        and 0 <= pkg_total <= 0xFFFF
        and 0 <= pkg_index <= 0xFFFF
        and 0 <= encrypt <= 7
    ):
        raise Jt808LocalError("a header field is out of range")


def encode_frame(msg_id, body, phone, serial, version=2013, proto_version=1,
                 pkg_total=0, pkg_index=0, encrypt=0):
    """Build, checksum and escape one frame. See codec.encode_frame."""
    cdef const unsigned char[:] v = body
    cdef Py_ssize_t n = v.shape[0]
    check_header_fields(msg_id, serial, proto_version, pkg_total, pkg_index, encrypt)
    return build_frame(msg_id, &v[0] if n else NULL, n, phone, serial, version, proto_version,
                       pkg_total, pkg_index, encrypt)


def encode_general_response(phone, int version, int proto_version, long serial, long reply_serial,
                            long reply_id, long result, long msg_id=0x8001):
    """A 0x8001 (or, with msg_id=0x0001, 0x0001) general response frame. See codec."""
    return general_response(phone, version, proto_version, serial, reply_serial, reply_id, result, msg_id)


cdef bytes general_response(object phone, int version, int proto_version, long serial, long reply_serial,
                            long reply_id, long result, long msg_id):
    cdef unsigned char body[5]
    if not (0 <= reply_serial <= 0xFFFF and 0 <= reply_id <= 0xFFFF and 0 <= result <= 0xFF):
        raise Jt808LocalError("reply_serial, reply_id or result out of range")
    if not (0 <= msg_id <= 0xFFFF and 0 <= serial <= 0xFFFF and 0 <= proto_version <= 0xFF):
        raise Jt808LocalError("a header field is out of range")
    body[0] = reply_serial >> 8
    body[1] = reply_serial & 0xFF
    body[2] = reply_id >> 8
    body[3] = reply_id & 0xFF
    body[4] = <unsigned char>result
    return build_frame(msg_id, body, 5, phone, serial, version, proto_version, 0, 0, 0)


def encode_ack(event, long serial, long result=0, long msg_id=0x8001):
    """The general response to a Message, or to an event holding one. See codec.encode_ack.

    The gateway's per-frame acknowledgement: the fields are read from the
    record in C, without Python attribute lookups.
    """
    cdef object msg = event
    if type(msg) is not Message:
        if isinstance(msg, tuple) and len(<tuple>msg) and type((<tuple>msg)[0]) is Message:
            msg = (<tuple>msg)[0]
        else:
            msg = event.message
    cdef tuple t = <tuple>msg
    return general_response(t[4], t[2], t[3], serial, t[5], t[0], result, msg_id)


# ---------------------------------------------------------------------------
# the terminal side's hot path: a location report body (what the bench fleet
# sends by the hundred thousand)

cdef object py_push_item = _m.push_item
cdef object py_push_location = _m.push_location

cdef extern from "math.h":
    double nearbyint(double x) nogil  # half to even in the default rounding mode, like round()
    double fabs(double x) nogil


cdef unsigned long long uint_field(object v, unsigned long long top, str what) except? 0xFFFFFFFFFFFFFFFF:
    if type(v) is not int and not isinstance(v, int):
        raise Jt808LocalError(f"{what}: {v!r} is not an int")
    if v < 0 or v > top:
        raise Jt808LocalError(f"{what}: {v} out of range")
    return <unsigned long long>v


cdef unsigned long long rounded(double x, unsigned long long top, str what) except? 0xFFFFFFFFFFFFFFFF:
    cdef double r = nearbyint(x)
    if not (r >= 0.0 and r <= <double>top):  # also rejects NaN
        raise Jt808LocalError(f"{what}: {x} out of range")
    return <unsigned long long>r


cdef inline void put_u32(unsigned char* d, unsigned long long v) noexcept:
    d[0] = (v >> 24) & 0xFF
    d[1] = (v >> 16) & 0xFF
    d[2] = (v >> 8) & 0xFF
    d[3] = v & 0xFF


cdef int put_bcd_time(unsigned char* d, object t) except -1:
    """messages.push_bcd_time: zone-naive epoch seconds -> BCD[6] (None -> zeros)."""
    cdef long long secs, days, z, era, doe, yoe, y, doy, mp, dd, mm, v
    cdef long long parts[6]
    cdef int k
    if t is None:
        memset(d, 0, 6)
        return 0
    if not (946684800 <= t < 4102444800):  # 2000-01-01 .. 2099-12-31
        raise Jt808LocalError(f"time {t} cannot be sent as BCD YY (years 2000-2099)")
    secs = t
    days = secs // 86400
    secs -= days * 86400
    # civil_from_days (H. Hinnant), all values positive here
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    dd = doy - (153 * mp + 2) // 5 + 1
    mm = mp + 3 if mp < 10 else mp - 9
    if mm <= 2:
        y += 1
    parts[0] = y - 2000
    parts[1] = mm
    parts[2] = dd
    parts[3] = secs // 3600
    parts[4] = secs // 60 % 60
    parts[5] = secs % 60
    for k in range(6):
        v = parts[k]
        d[k] = <unsigned char>((v // 10) << 4 | v % 10)
    return 0


def encode_location(loc):
    """A 0x0200 body from a Location (messages.push_location, compiled for the terminal side)."""
    cdef tuple t
    cdef unsigned char head[28]
    cdef unsigned long long status
    cdef double lat, lon
    cdef bytes ids
    cdef tuple values
    cdef Py_ssize_t k, count
    cdef unsigned int item_id, size
    cdef bytearray out
    cdef unsigned char item[6]
    cdef long long iv
    if type(loc) is not Location:
        return py_push_location(loc)
    t = <tuple>loc
    if type(t[8]) is not bytes or type(t[9]) is not tuple or type(t[2]) is not float or type(t[3]) is not float:
        return py_push_location(loc)  # unusual field types: the reference says what is wrong
    lat = t[2]
    lon = t[3]
    status = uint_field(t[1], 0xFFFFFFFF, "status")
    # the sign of lat/lon is carried by status bits 2/3; a negative value sets them
    if lat < 0:
        status |= 4
    if lon < 0:
        status |= 8
    put_u32(head, uint_field(t[0], 0xFFFFFFFF, "alarm"))
    put_u32(head + 4, status)
    put_u32(head + 8, rounded(fabs(lat) * 1000000, 0xFFFFFFFF, "lat"))
    put_u32(head + 12, rounded(fabs(lon) * 1000000, 0xFFFFFFFF, "lon"))
    iv = uint_field(t[4], 0xFFFF, "altitude")
    head[16] = iv >> 8
    head[17] = iv & 0xFF
    iv = rounded(<double>t[5] * 10, 0xFFFF, "speed_kmh")
    head[18] = iv >> 8
    head[19] = iv & 0xFF
    iv = uint_field(t[6], 0xFFFF, "direction")
    head[20] = iv >> 8
    head[21] = iv & 0xFF
    put_bcd_time(head + 22, t[7])
    ids = <bytes>t[8]
    values = <tuple>t[9]
    count = min(PyBytes_GET_SIZE(ids), len(values))
    if count == 0:
        return PyBytes_FromStringAndSize(<const char*>head, 28)
    out = bytearray(PyBytes_FromStringAndSize(<const char*>head, 28))
    for k in range(count):
        item_id = <unsigned char>PyBytes_AS_STRING(ids)[k]
        value = values[k]
        size = ITEM_UINT[item_id]
        if type(value) is int and (size or item_id == 0x06):
            iv = value if -0x8000000000000000 < value < 0x7FFFFFFFFFFFFFFF else -1
            if item_id == 0x06:
                iv = (0x8000 | -iv) if iv < 0 else iv  # sign-magnitude cabin temperature
                size = 2
            if iv < 0 or (size < 4 and iv >> (8 * size)) or iv > 0xFFFFFFFF:
                raise Jt808LocalError(f"item 0x{item_id:02x}: {value} out of range")
            item[0] = item_id
            item[1] = size
            if size == 4:
                put_u32(item + 2, iv)
            elif size == 2:
                item[2] = iv >> 8
                item[3] = iv & 0xFF
            else:
                item[2] = iv & 0xFF
            out += PyBytes_FromStringAndSize(<const char*>item, 2 + size)
        else:
            out += py_push_item(item_id, value)
    return bytes(out)
