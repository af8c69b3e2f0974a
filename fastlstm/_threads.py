"""How many threads the kernels use: BLAS's, and the compiled time loops'.

The per-step products of small networks (a batch of 32 by 50 units, say) take a
few microseconds; splitting them across BLAS threads costs more than it saves
(sine training ran 5x slower with OpenBLAS's 2 threads than with 1, and 10x on
a busy machine). So small problems run with one BLAS thread, set through
ctypes on the BLAS libraries threadpoolctl finds (about a microsecond a call),
and large ones keep whatever limit is in force.

Batches with enough work run as slices side by side (_parallel.py) on the
worker threads of run_parallel, each slice on one BLAS thread; smaller batches
from _parallel.MIN_SPLIT_LOOP_WORK on run whole, with the threads handed to the
layers' packed time loops, which split them by samples (_recurrent.h).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

# Per-step recurrent work (batch x 4H x H multiply-adds) below which one BLAS
# thread is faster: sine (32 x 200 x 50) and binadd are far below, the
# medium/charlm/large workloads (8M-67M) above.
SMALL_STEP_WORK = 2**22
# One sequence (a gemv per step, W_hh streamed from cache): two BLAS threads pay
# once W_hh outgrows one core's L2 (forward of one layer, T=100, H=512: 6.9 ms on
# one thread, 3.6 ms on two; H=300 and H=128: no gain, H=50: a loss).
ONE_ROW_STEP_WORK = 2**20
# A product of one row (a single sequence's per-step product, its head) whose
# matrix is below this many elements runs on one BLAS thread whatever the limit:
# OpenBLAS threads a gemv only from 2304 x 4 = 9216 elements (binadd's per-step
# matrix is 64 x 16). Setting and restoring the limit (~2.5 us) is then a tenth
# of such a predict for nothing. (Should a BLAS thread smaller products, they
# only run slower.)
ONE_THREAD_ANYWAY_ROW_WORK = 2**13

_libs = None
_lock = threading.Lock()
_active = 0          # blas_threads blocks running, across Python threads
_saved = []          # the limits in force before the first of them, restored after the last
_in_force = []       # the limits those blocks set
_own = threading.local()   # .threads: n of this Python thread's innermost block, or None


def _blas_libs():
    """[(get_num_threads, set_num_threads)] ctypes functions of each OpenBLAS loaded
    (numpy's and scipy's), found once through threadpoolctl. Called directly, not
    through threadpoolctl's wrappers: those cost ~10 us a call and let only one
    Python thread set limits."""
    global _libs
    if _libs is None:
        _libs = []
        try:
            from threadpoolctl import ThreadpoolController
            for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
                get = lib._get_symbol("openblas_get_num_threads")
                set_ = lib._get_symbol("openblas_set_num_threads")
                if get is not None and set_ is not None:
                    _libs.append((get, set_))
        except Exception:  # no OpenBLAS threadpoolctl can reach: nothing to limit
            _libs = []
    return _libs


class blas_threads:
    """`with blas_threads(n):` runs the block with n BLAS threads.
    Blocks may overlap across Python threads: the first one in saves the limits
    in force, each sets its own n, and the last one out restores the saved ones
    (a limit is process-wide: while blocks of two n overlap, the later one's
    holds; results do not depend on it, as BLAS splits no dot product across
    threads). threadpoolctl's threadpool_limits, entered from two threads at
    once, can restore the other's temporary limit and leave BLAS at one thread.
    A class, not a generator context manager: a single-sequence predict enters
    one, and the generator's machinery cost ~2 us."""
    __slots__ = ("n", "outer")

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        global _active, _saved, _in_force
        self.outer = getattr(_own, "threads", None)
        counted = False
        try:
            with _lock:
                libs = _blas_libs()
                if _active == 0:
                    _restore_saved()   # what a block cut short by Ctrl-C left to restore
                    _saved = [get() for get, _ in libs]
                    _in_force = list(_saved)
                for k, (_, set_) in enumerate(libs):
                    if _in_force[k] != self.n:  # setting OpenBLAS's thread count is not
                        _in_force[k] = self.n   # free, even to itself; noted first: see
                        set_(self.n)            # _restore_saved
                _active += 1
                counted = True
            _own.threads = self.n
        except BaseException:  # Ctrl-C in here: the with-block's __exit__ will not run
            if counted:
                self.__exit__()
            else:
                with _lock:
                    if _active == 0:
                        _restore_saved()
            raise

    def __exit__(self, *exc_info):
        global _active
        _own.threads = self.outer
        with _lock:
            if _active == 0:  # a block a forked child was in (see _forget_pool_in_child)
                return
            _active -= 1
            if _active == 0:
                _restore_saved()


def _restore_saved():
    """Set back the limits the first block in saved where blocks set others; under
    _lock, with no block running. Ctrl-C may cut it short (Python raises
    KeyboardInterrupt after any call): each limit is noted in _in_force before it
    is set and after it is restored, so whatever is left is done by the next call,
    which every block's entry makes, instead of a limit of 1 being taken for the
    one to keep. Nothing to restore: returns before looking for the libraries
    (a forked child calls it, and need not load threadpoolctl there)."""
    if _in_force == _saved:
        return
    for k, ((_, set_), was) in enumerate(zip(_blas_libs(), _saved)):
        if _in_force[k] != was:
            set_(was)
            _in_force[k] = was


def is_small(batch, hidden_sizes):
    """True when the largest layer's per-step product is below SMALL_STEP_WORK
    (ONE_ROW_STEP_WORK for a single sequence)."""
    work = batch * max(4 * h * h for h in hidden_sizes)
    return work < (ONE_ROW_STEP_WORK if batch == 1 else SMALL_STEP_WORK)


def blas_stays_single(products):
    """True when BLAS runs each of these products of one row (matrix sizes in
    elements, see LSTMNetwork.one_sequence_plan) on one thread by itself."""
    return max(products) < ONE_THREAD_ANYWAY_ROW_WORK


def recurrent_threads():
    """Threads for one layer's compiled time loop: the smallest BLAS thread limit
    in force (users cap BLAS with threadpoolctl or OPENBLAS_NUM_THREADS, and the
    layer kernels mix BLAS calls with their own threaded loops, so one limit
    governs both), at most the CPUs this process may run on; 1 at least.

    Inside this thread's own blas_threads block: its n. While another Python
    thread's block holds BLAS at its own limit, the limits in force are those it
    saved: a call's threads (and so its slices and its bits) do not depend on
    what other threads run at the same time."""
    own = getattr(_own, "threads", None)
    if own is not None:
        return max(1, min(own, _cpus()))
    threads = _cpus()
    with _lock:   # blocks set and restore BLAS's limits under it too
        limits = _saved if _active else [get() for get, _ in _blas_libs()]
    for limit in limits:
        if 0 < limit < threads:
            threads = limit
    return max(1, threads)


_cpu_count = None


def _cpus():
    """CPUs this process may run on, read once (the kernels ask on every call)."""
    global _cpu_count
    if _cpu_count is None:
        try:
            _cpu_count = len(os.sched_getaffinity(0))
        except AttributeError:
            _cpu_count = os.cpu_count() or 1
    return _cpu_count


_pool = None         # the worker threads of run_parallel, made on first use
_pool_size = 0


def _forget_pool_in_child():
    """A forked child has none of its parent's worker threads, but would inherit the
    pool object that believes it has them, and wait forever on work queued to it:
    start the child with no pool (and an unheld lock). Nor does it run the
    blas_threads blocks other parent threads were in: its BLAS limits go back to
    those they saved, which no block of the child's would ever restore."""
    global _pool, _pool_size, _lock, _active
    _pool, _pool_size, _lock = None, 0, threading.Lock()
    _active = 0
    _restore_saved()
    _own.threads = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def row_slices(n, parts):
    """`parts` contiguous slices covering range(n), sizes differing by at most one."""
    bounds = [n * p // parts for p in range(parts + 1)]
    return [slice(bounds[p], bounds[p + 1]) for p in range(parts)]


def run_parallel(fn, items):
    """[fn(item) for item in items], the first in the calling thread and the rest
    on a pool of worker threads (fn must release the GIL for this to pay: the
    layer kernels do). Waits for every call before returning or raising, so no
    worker still writes into buffers once the caller moves on."""
    global _pool, _pool_size
    items = list(items)
    if len(items) == 1:
        return [fn(items[0])]
    with _lock:
        if _pool_size < len(items) - 1:   # more threads than ever before: a bigger pool
            if _pool is not None:
                _pool.shutdown(wait=False)  # its threads end once their work is done
            _pool_size = len(items) - 1
            _pool = ThreadPoolExecutor(max_workers=_pool_size, thread_name_prefix="fastlstm")
        # submitted under the lock: no other caller can shut this pool down meanwhile
        futures = [_pool.submit(fn, item) for item in items[1:]]
    try:
        first = fn(items[0])
    finally:
        _wait_all(futures)
    return [first] + [f.result() for f in futures]  # raises a worker's error


def _wait_all(futures):
    """Wait for every future, even through Ctrl-C (re-raised once they are done)."""
    interrupted = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as err:
            interrupted = err
    if interrupted is not None:
        raise interrupted
