# The argument checks every compiled layer kernel runs before it touches a pointer
# (_kernels.pyx, _cells.pyx): header-only (cdef inline), one source for both modules.
# They compare C integers and build a message only on a mismatch: a kernel call
# checks up to 17 buffers, and tuple-based checks cost ~0.3 us each, which a
# single-sequence predict pays on every layer.
from libc.stdint cimport int64_t
cimport numpy as cnp


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


cdef inline bint _plain(object a, int typenum, bint writable=False) noexcept:
    """True if a is an aligned, C-contiguous, native-order ndarray of this type,
    writeable if asked: memory a compiled loop can take as it is."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if writable:
        need |= cnp.NPY_ARRAY_WRITEABLE
    return (cnp.PyArray_TYPE(arr) == typenum and (cnp.PyArray_FLAGS(arr) & need) == need
            and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline cnp.npy_intp *_dims(object a, int ndim) noexcept:
    """a's sizes if a is an ndarray of ndim dimensions, else NULL."""
    if not cnp.PyArray_Check(a) or cnp.PyArray_NDIM(<cnp.ndarray>a) != ndim:
        return NULL
    return cnp.PyArray_DIMS(<cnp.ndarray>a)


cdef inline void *_plain_data(object a, int typenum, int ndim, Py_ssize_t e0,
                              Py_ssize_t e1=0, Py_ssize_t e2=0, bint writable=False) noexcept:
    """The data of a if it is _plain and of exactly this shape (first ndim of e0,
    e1, e2), else NULL. The way in for a kernel's small calls: taking a single-
    sequence layer's 11 buffers as typed memoryviews costs ~1.8 us, 0.1 us this
    way (sine's whole predict is ~20 us). Whatever is not so plain goes the
    memoryview way, which checks it and names what is wrong."""
    cdef cnp.npy_intp *dims = _dims(a, ndim)
    if dims == NULL or not _plain(a, typenum, writable):
        return NULL
    if dims[0] != e0 or (ndim > 1 and dims[1] != e1) or (ndim > 2 and dims[2] != e2):
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)
