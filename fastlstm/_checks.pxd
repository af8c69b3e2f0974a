# The argument checks every compiled layer kernel runs before it touches a pointer
# (_kernels.pyx, _cells.pyx): header-only (cdef inline), one source for both modules.
from libc.stdint cimport int64_t


cdef inline int _check(name, got, expected) except -1:
    """ValueError naming the buffer unless its shape is the expected one."""
    if tuple(got) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(got)}, expected {tuple(expected)}")
    return 0


cdef inline tuple _shape(mv, int ndim):
    return tuple(mv.shape[:ndim])


cdef inline const int64_t *_lengths_ptr(const int64_t[::1] lengths, Py_ssize_t N,
                                        Py_ssize_t T) except? NULL:
    """Pointer to lengths (N,) of a padded batch, each checked to be in [1, T];
    NULL for lengths=None (every sequence runs all T steps)."""
    if lengths is None:
        return NULL
    _check("lengths", _shape(lengths, 1), (N,))
    cdef Py_ssize_t n
    for n in range(N):
        if lengths[n] < 1 or lengths[n] > T:
            raise ValueError(f"lengths[{n}] = {lengths[n]} is outside [1, {T}]")
    return &lengths[0] if N > 0 else NULL
