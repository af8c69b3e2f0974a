"""How many threads the compiled recurrent loops use.

The rule: as many as the BLAS may use. Users already cap BLAS threads with
threadpoolctl (`threadpool_limits(1)`) or OPENBLAS_NUM_THREADS, and the layer
kernels mix BLAS calls with their own threaded time loops, so one limit governs
both. The BLAS libraries are found once; reading their limit is a ctypes call
per layer (about a microsecond).
"""
import os

_blas_libs = None


def recurrent_threads():
    """Threads for one layer's time loop: the smallest BLAS thread limit in force
    in this process, at most the CPUs this process may run on; 1 at least."""
    global _blas_libs
    if _blas_libs is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas_libs = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive: CPU count
            _blas_libs = []
    limits = [lib.get_num_threads() for lib in _blas_libs]
    limits = [n for n in limits if n]
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(limits + [cpus]))
