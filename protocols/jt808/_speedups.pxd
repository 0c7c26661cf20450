# Declarations of the compiled JT/T 808 fast path (_speedups.pyx).
#
# Contracts, which the .pyx relies on and the tests check against the
# pure-Python reference (codec.py, messages.py):
#   * every function here reads only inside [p, p + n): callers pass the exact
#     length of the unescaped data they own, and no helper reads past it, so a
#     hostile length field can never cause an over-read;
#   * functions returning `object` return a new reference built from the
#     shared record classes of messages.py, so compiled and reference results
#     compare equal with ==;
#   * `decode_content` raises a Jt808ProtocolError subclass (never IndexError
#     or a C-level fault) for any input.

cdef class Splitter:
    cdef bytes _pending
    cdef readonly Py_ssize_t max_buffer

    cdef list _receive(self, data)


cdef class FrameDecoder:
    cdef bytes _pending
    cdef readonly Py_ssize_t max_buffer
    cdef object _profile
    cdef bint _lenient_checksum
    cdef bint _lenient_length
    cdef bint _lenient_7d
    cdef int _force_layout
    # one-entry cache of the last phone seen: a connection's frames all carry
    # the same phone, so its str is built once instead of once per frame
    cdef unsigned char _phone_raw[10]
    cdef int _phone_len
    cdef object _phone_str
    cdef unsigned int _last_id
    cdef unsigned int _last_attr
    cdef int _last_faults
    cdef readonly Py_ssize_t wrapped

    cdef list _receive(self, data, wrap)
    cdef object _decode(self, const unsigned char* content, Py_ssize_t n)
    cdef object _phone(self, const unsigned char* p, int n)
