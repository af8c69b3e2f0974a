# The argument checks every compiled layer kernel runs before it touches a pointer
# (_kernels.pyx, _cells.pyx): header-only (cdef inline), one source for both modules.
# They compare C integers and build a message only on a mismatch: a kernel call
# checks up to 17 buffers, and tuple-based checks cost ~0.3 us each, which a
# single-sequence predict pays on every layer.
from libc.stdint cimport int64_t


cdef inline int _check(str name, const Py_ssize_t *shape, int ndim, Py_ssize_t e0,
                       Py_ssize_t e1=0, Py_ssize_t e2=0) except -1:
    """ValueError naming the buffer unless its first ndim (1-3) sizes are e0, e1, e2."""
    cdef Py_ssize_t expected[3]
    expected[0], expected[1], expected[2] = e0, e1, e2
    cdef int k
    for k in range(ndim):
        if shape[k] != expected[k]:
            got = tuple([shape[j] for j in range(ndim)])
            want = tuple([expected[j] for j in range(ndim)])
            raise ValueError(f"{name} has shape {got}, expected {want}")
    return 0


cdef inline const int64_t *_lengths_ptr(const int64_t[::1] lengths, Py_ssize_t N,
                                        Py_ssize_t T) except? NULL:
    """Pointer to lengths (N,) of a padded batch, each checked to be in [1, T];
    NULL for lengths=None (every sequence runs all T steps)."""
    if lengths is None:
        return NULL
    _check("lengths", lengths.shape, 1, N)
    cdef Py_ssize_t n
    for n in range(N):
        if lengths[n] < 1 or lengths[n] > T:
            raise ValueError(f"lengths[{n}] = {lengths[n]} is outside [1, {T}]")
    return &lengths[0] if N > 0 else NULL
