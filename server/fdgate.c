/* fdgate.c - a loop's closes wait while a program is being started (see fdgate.h for why).
 *
 * Design: one process-wide gate, since the descriptor table it protects is process-wide. `open`
 * counts the spawn windows in progress; `deferred` holds descriptors whose close waits for `open`
 * to reach zero. A close and a window's begin both take the mutex, so a close either happens
 * before a child could copy the descriptor, or is deferred; a deferred descriptor is closed under
 * the mutex too, so no window can begin between the check and the close. The deferred ones are
 * closed on the loop thread (srv_fdgate_flush, woken by the last window's end): until then they
 * are still the loop's, and libev may still issue epoll_ctl on their numbers.
 *
 * What it does not do: it cannot stop a child from copying descriptors (any fork or vfork copies
 * the whole table); it only makes sure no close of a watched descriptor falls inside a copy's
 * lifetime.
 */
#include "server/fdgate.h"

#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

static struct {
    pthread_mutex_t mu;
    unsigned open;                         /* spawn windows in progress; mu */
    unsigned ndeferred;                    /* mu */
    int deferred[SRV_FDGATE_DEFERRED_MAX]; /* closes waiting for open == 0; mu */
    srv_fdgate_wake_fn *wake;              /* mu */
    void *wake_arg;                        /* mu */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

void srv_fdgate_waker_set(srv_fdgate_wake_fn *fn, void *arg)
{
    pthread_mutex_lock(&g.mu);
    g.wake = fn;
    g.wake_arg = arg;
    pthread_mutex_unlock(&g.mu);
}

void srv_fdgate_waker_clear(void *arg)
{
    pthread_mutex_lock(&g.mu);
    if (g.wake_arg == arg) {
        g.wake = NULL;
        g.wake_arg = NULL;
    }
    pthread_mutex_unlock(&g.mu);
}

void srv_fdgate_spawn_begin(void)
{
    pthread_mutex_lock(&g.mu);
    g.open++;
    pthread_mutex_unlock(&g.mu);
}

void srv_fdgate_spawn_end(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.open > 0 && --g.open == 0 && g.ndeferred > 0 && g.wake != NULL)
        g.wake(g.wake_arg);
    pthread_mutex_unlock(&g.mu);
}

/* Close what waits; mu held, open == 0. */
static void gate_close_deferred(void)
{
    for (unsigned i = 0; i < g.ndeferred; i++)
        close(g.deferred[i]);
    g.ndeferred = 0;
}

void srv_fdgate_close(int fd)
{
    if (fd < 0)
        return;
    pthread_mutex_lock(&g.mu);
    if (g.open == 0) {
        gate_close_deferred();
        close(fd);
    } else if (g.ndeferred < SRV_FDGATE_DEFERRED_MAX) {
        g.deferred[g.ndeferred++] = fd;
    } else {
        close(fd); /* bounded: the old behaviour rather than running out of descriptors */
    }
    pthread_mutex_unlock(&g.mu);
}

unsigned srv_fdgate_flush(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.open == 0)
        gate_close_deferred();
    unsigned left = g.ndeferred;
    pthread_mutex_unlock(&g.mu);
    return left;
}
