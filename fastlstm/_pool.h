/*
 * A tiny thread team for the recurrent time loops: fl_team_run(nt, fn, arg)
 * runs fn(arg, p, nt) for p = 0..nt-1 (p = 0 on the calling thread) and
 * fl_team_barrier() syncs them once per time step; fl_team_run_exact runs on
 * exactly nt threads or not at all.
 *
 * Why not OpenMP: libgomp waits by spinning for ~300k iterations by default.
 * On a busy machine (more runnable threads than cores) a thread spinning at a
 * barrier burns the time slice the late thread needs, and a 10-step layer took
 * 68 ms instead of 0.2 ms. Every wait here spins briefly (a quiet machine
 * passes a barrier in well under a microsecond), then yields the CPU for a
 * while and then sleeps on a futex, so an oversubscribed machine costs a
 * wake-up per step, not a time slice (see FL_SPINS).
 *
 * Workers start on first use and live for the process; after fork() the child
 * starts new ones. One team serves one call at a time: a call that finds it
 * busy (another Python thread predicting) runs on its own thread instead.
 * Linux only (futex); elsewhere every call runs on one thread.
 */
#ifndef FASTLSTM_POOL_H
#define FASTLSTM_POOL_H

#if defined(__linux__) && defined(__GNUC__)
#define FL_HAVE_POOL 1
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <unistd.h>
#else
#define FL_HAVE_POOL 0
#endif

#define FL_MAX_TEAM 16
/* A wait polls FL_SPINS times (~5 us on Zen 4, a pause is ~25 ns), then FL_YIELDS
 * times more, each poll also yielding the CPU (~0.5 us each when no other thread
 * wants it), then sleeps. The yields are for two threads of a team on one CPU,
 * where a polling thread holds up the one it waits for until its time slice
 * ends. That is what yielding points to here: after the process had been idle
 * for 0.1 s or more, calls on 2 threads ran 5-10x slower for a few calls (on 1
 * thread they did not), and yielding mends most of it. Sine's fit on 128
 * samples, 2 threads, right after such a pause: 10-11 ms with polls alone for
 * 0.5 ms (1.1 ms without the pause), 3-4 ms yielding after ~50 us, 1.6-2.7 ms
 * after ~5 us. One sequence's predict 0.2-0.5 s after the last call: medium
 * 5-11 ms (up to 23) -> 0.43 ms, charlm 8-14 ms -> 2-3.3 ms. Calls in a row:
 * level (medium's single-sequence predict 98-99 -> 97 us, sine's training
 * epoch 7.0 ms, medium's and large's batched predict). */
#define FL_SPINS 200
#define FL_YIELDS 1000

typedef void (*fl_team_fn)(void *arg, int p, int nt);

#if FL_HAVE_POOL

static inline void fl_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void fl_futex_wait(atomic_uint *word, unsigned expected)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void fl_futex_wake_all(atomic_uint *word)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

/* Wait until *word != old: spin, then sleep. sleepers counts futex waiters so
 * the waker only makes the syscall when someone sleeps. */
static void fl_wait_change(atomic_uint *word, unsigned old, atomic_uint *sleepers)
{
    for (int i = 0; i < FL_SPINS + FL_YIELDS; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != old) return;
        if (i < FL_SPINS) fl_cpu_relax();
        else sched_yield();
    }
    /* seq_cst here and in fl_bump: either the waker sees sleepers > 0 or the
     * sleeper sees the new value (the futex call rechecks it atomically). */
    atomic_fetch_add(sleepers, 1);
    while (atomic_load(word) == old)
        fl_futex_wait(word, old);
    atomic_fetch_sub(sleepers, 1);
}

static void fl_bump(atomic_uint *word, atomic_uint *sleepers)
{
    atomic_fetch_add(word, 1);
    if (atomic_load(sleepers) > 0) fl_futex_wake_all(word);
}

/* A job word: the job's number above its thread count. A worker reads both in
 * one load: read apart, a worker outside a job (p >= its nt) that was held up
 * between the two reads could take the next job's larger nt for this job's,
 * run the next job's fn, and then run it again when it sees that job posted. */
#define FL_NT_BITS 5                      /* nt <= FL_MAX_TEAM = 16 < 32 */
#define FL_JOB_NT(word) ((int)((word) & ((1u << FL_NT_BITS) - 1)))
_Static_assert(FL_MAX_TEAM < (1 << FL_NT_BITS), "a team's size must fit in a job word");

static struct {
    pthread_mutex_t busy;        /* held by the one call using the team */
    int n_workers;               /* threads started (p = 1..n_workers) */
    atomic_uint job;             /* the job word, changed to start a job */
    unsigned job_at_create;      /* job when the worker was started */
    atomic_uint job_sleepers;
    fl_team_fn fn;               /* the job's, set before its job word */
    void *arg;
    atomic_uint n_done;          /* workers finished with the current job */
    atomic_uint done_gen;        /* bumped when n_done reaches nt - 1 */
    atomic_uint done_sleepers;
    atomic_uint bar_count;       /* barrier: arrivals this round */
    atomic_uint bar_gen;         /* barrier: bumped when a round completes */
    atomic_uint bar_sleepers;
} fl_team = {PTHREAD_MUTEX_INITIALIZER};

/* tests/test_pool.py holds a worker up here, between its read of the job word
 * and its use of it; nothing otherwise */
#ifndef FL_TEST_WORKER_PAUSE
#define FL_TEST_WORKER_PAUSE(p)
#endif

static void *fl_worker(void *arg)
{
    int p = (int)(intptr_t)arg;
    /* not a fresh read of job: the first job may already have been posted */
    unsigned seen = fl_team.job_at_create;
    for (;;) {
        fl_wait_change(&fl_team.job, seen, &fl_team.job_sleepers);
        seen = atomic_load(&fl_team.job);
        FL_TEST_WORKER_PAUSE(p);
        int nt = FL_JOB_NT(seen);
        /* fn and arg stay the job's until every one of its nt threads is done */
        if (p < nt) {
            fl_team.fn(fl_team.arg, p, nt);
            if (atomic_fetch_add(&fl_team.n_done, 1) + 1 == (unsigned)nt - 1)
                fl_bump(&fl_team.done_gen, &fl_team.done_sleepers);
        }
    }
    return NULL;
}

static void fl_team_after_fork(void)
{
    /* The child has none of the parent's threads: start afresh, counters too (a
     * thread forked away halfway through a barrier leaves its arrival counted,
     * and the child's next barrier would then wait for one thread too many). */
    pthread_mutex_init(&fl_team.busy, NULL);
    fl_team.n_workers = 0;
    atomic_store(&fl_team.job_sleepers, 0);
    atomic_store(&fl_team.n_done, 0);
    atomic_store(&fl_team.done_sleepers, 0);
    atomic_store(&fl_team.bar_count, 0);
    atomic_store(&fl_team.bar_sleepers, 0);
}

/* Workers 1..nt-1 running; returns how many threads the team can have. */
static int fl_team_grow(int nt)
{
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, fl_team_after_fork);
        registered = 1;
    }
    fl_team.job_at_create = atomic_load(&fl_team.job);   /* seen by pthread_create */
    while (fl_team.n_workers < nt - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, fl_worker,
                                    (void *)(intptr_t)(fl_team.n_workers + 1));
        pthread_attr_destroy(&attr);
        if (failed) break;
        fl_team.n_workers++;
    }
    return fl_team.n_workers + 1;
}

/* All nt threads of the running job meet here. */
static void fl_team_barrier(int nt)
{
    if (nt <= 1) return;
    unsigned gen = atomic_load_explicit(&fl_team.bar_gen, memory_order_acquire);
    if (atomic_fetch_add(&fl_team.bar_count, 1) + 1 == (unsigned)nt) {
        atomic_store(&fl_team.bar_count, 0);
        fl_bump(&fl_team.bar_gen, &fl_team.bar_sleepers);
    } else {
        fl_wait_change(&fl_team.bar_gen, gen, &fl_team.bar_sleepers);
    }
}

/* Post fn(arg, p, nt) to workers 1..nt-1, run p = 0 here, wait for all; the
 * caller holds fl_team.busy and the team has nt threads. */
static void fl_team_go(int nt, fl_team_fn fn, void *arg)
{
    fl_team.fn = fn;
    fl_team.arg = arg;
    atomic_store(&fl_team.n_done, 0);
    unsigned done = atomic_load(&fl_team.done_gen);
    /* go: the next job number with this nt (only the caller holding busy writes
     * the word; seq_cst, so fn and arg are seen with it) */
    unsigned next = ((atomic_load(&fl_team.job) >> FL_NT_BITS) + 1) << FL_NT_BITS;
    atomic_store(&fl_team.job, next | (unsigned)nt);
    if (atomic_load(&fl_team.job_sleepers) > 0) fl_futex_wake_all(&fl_team.job);
    fn(arg, 0, nt);
    fl_wait_change(&fl_team.done_gen, done, &fl_team.done_sleepers);
    pthread_mutex_unlock(&fl_team.busy);
}

/* fn(arg, p, nt) on nt threads (fewer if the team is busy or cannot grow). */
static void fl_team_run(int nt, fl_team_fn fn, void *arg)
{
    if (nt > FL_MAX_TEAM) nt = FL_MAX_TEAM;
    if (nt <= 1 || pthread_mutex_trylock(&fl_team.busy) != 0) {
        fn(arg, 0, 1);
        return;
    }
    int available = fl_team_grow(nt);
    nt = nt < available ? nt : available;
    if (nt <= 1) {
        pthread_mutex_unlock(&fl_team.busy);
        fn(arg, 0, 1);
        return;
    }
    fl_team_go(nt, fn, arg);
}

/* fn(arg, p, nt) on exactly nt >= 2 threads: 0, or -1 without running fn if the
 * team is busy or cannot grow (for callers whose per-thread state is laid out
 * for nt threads). */
static int fl_team_run_exact(int nt, fl_team_fn fn, void *arg)
{
    if (nt < 2 || nt > FL_MAX_TEAM || pthread_mutex_trylock(&fl_team.busy) != 0)
        return -1;
    if (fl_team_grow(nt) < nt) {
        pthread_mutex_unlock(&fl_team.busy);
        return -1;
    }
    fl_team_go(nt, fn, arg);
    return 0;
}

/* A thread's progress through a time loop, on its own cache line: the steps it
 * has finished. Where a barrier makes every thread wait for the last one, a
 * thread waiting on a flag waits only for the data it needs, and can do work
 * of its own in between (the single-sequence loop of _recurrent.h). */
typedef struct {
    _Alignas(64) atomic_uint steps;
    atomic_uint sleepers;
} fl_step_flag;

static void fl_step_done(fl_step_flag *f)
{
    fl_bump(&f->steps, &f->sleepers);
}

/* Wait until the flag's thread has finished at least `steps` steps. */
static void fl_step_wait(fl_step_flag *f, unsigned steps)
{
    unsigned seen;
    while ((seen = atomic_load_explicit(&f->steps, memory_order_acquire)) < steps)
        fl_wait_change(&f->steps, seen, &f->sleepers);
}

static void fl_team_noop(void *arg, int p, int nt)
{
    (void)arg; (void)p; (void)nt;
}

/* Wake the workers a job of nt threads would use (a job that does nothing), so
 * that the next job starts on threads already spinning, not asleep. */
static void fl_team_wake(int nt)
{
    fl_team_run(nt, fl_team_noop, NULL);
}

#else /* no pool: one thread */

static void fl_team_barrier(int nt) { (void)nt; }

typedef struct { unsigned steps; } fl_step_flag;   /* one thread: nobody waits */
static void fl_step_done(fl_step_flag *f) { f->steps++; }
static void fl_step_wait(fl_step_flag *f, unsigned steps) { (void)f; (void)steps; }

static void fl_team_wake(int nt) { (void)nt; }

static void fl_team_run(int nt, fl_team_fn fn, void *arg)
{
    (void)nt;
    fn(arg, 0, 1);
}

static int fl_team_run_exact(int nt, fl_team_fn fn, void *arg)
{
    (void)nt; (void)fn; (void)arg;
    return -1;
}

#endif /* FL_HAVE_POOL */

#endif /* FASTLSTM_POOL_H */
