/* A worker outside a job, held up between reading the job word and acting on
 * it while the next job (more threads) is posted, must run that next job once:
 * prints how many times each thread ran each job. Built by tests/test_pool.py. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static atomic_int pause_armed, paused;
#define FL_TEST_WORKER_PAUSE(p)                                       \
    do {                                                              \
        if ((p) == 2 && atomic_exchange(&pause_armed, 0)) {           \
            atomic_store(&paused, 1);                                 \
            usleep(200000);                                           \
        }                                                             \
    } while (0)
#include "_pool.h"

static atomic_int calls[3][4];      /* [job][thread] */

static void count(void *arg, int p, int nt)
{
    (void)nt;
    atomic_fetch_add(&calls[(intptr_t)arg][p], 1);
}

int main(void)
{
    fl_team_run(4, count, (void *)0);   /* starts workers 1-3; all run job 0 */
    usleep(50000);                      /* every worker back waiting */
    atomic_store(&pause_armed, 1);
    fl_team_run(2, count, (void *)1);   /* worker 2 is not in it, but wakes and pauses */
    while (!atomic_load(&paused))
        usleep(1000);
    fl_team_run(4, count, (void *)2);   /* posted while worker 2 pauses */
    usleep(400000);                     /* any stray run would have happened by now */
    for (int job = 0; job < 3; job++) {
        for (int p = 0; p < 4; p++)
            printf("%d ", atomic_load(&calls[job][p]));
        printf("\n");
    }
    return 0;
}
