/* lock.h - checked pthread mutex and condition variable calls, for every module.
 *
 * A pthread_mutex_* or pthread_cond_* call that fails on a valid, initialised object means an
 * invariant is broken (unlocking a mutex this thread does not hold, a destroyed object, a
 * corrupted one); going on would turn it into a silent race. These helpers call the pthread
 * function and, on an unexpected error, write one line naming the call and the error to stderr
 * and abort(). The only expected "error" is the timeout of a timed wait, which is returned.
 *
 * Header-only (static inline): pool/ and logging/ may depend on context/ only, and a call costs
 * what the bare pthread call costs. Initialisation and destruction are not wrapped: their errors
 * are handled (or deliberately ignored at teardown) by the caller.
 */
#ifndef SPINDLE_CTX_LOCK_H
#define SPINDLE_CTX_LOCK_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Report `err` (a positive errno returned by the pthread call `what`) and abort. Never returns. */
_Noreturn static inline void ctx_lock_fail(const char *what, int err)
{
    /* strerrorname_np returns a constant string ("EPERM"): nothing to allocate or lock here. */
    const char *name = strerrorname_np(err);
    fprintf(stderr, "spindle: %s failed: %s (%d); aborting\n", what, name ? name : "?", err);
    abort();
}

/* Lock `m` (borrowed). Aborts on any error (EDEADLK, EINVAL, ...). */
static inline void ctx_mutex_lock(pthread_mutex_t *m)
{
    int r = pthread_mutex_lock(m);
    if (r != 0)
        ctx_lock_fail("pthread_mutex_lock", r);
}

/* Unlock `m` (borrowed), held by the caller. Aborts on any error (EPERM: not the owner). */
static inline void ctx_mutex_unlock(pthread_mutex_t *m)
{
    int r = pthread_mutex_unlock(m);
    if (r != 0)
        ctx_lock_fail("pthread_mutex_unlock", r);
}

/* Wait on `cv` with `m` held (both borrowed). Aborts on any error. */
static inline void ctx_cond_wait(pthread_cond_t *cv, pthread_mutex_t *m)
{
    int r = pthread_cond_wait(cv, m);
    if (r != 0)
        ctx_lock_fail("pthread_cond_wait", r);
}

/* Wait on `cv` with `m` held until signalled or the absolute time `until` on the clock `cv` was
 * made with. Returns false when the time passed (ETIMEDOUT), true otherwise (a signal or a
 * spurious wakeup: the caller checks its condition either way). Aborts on any other error. */
static inline bool ctx_cond_timedwait(pthread_cond_t *cv, pthread_mutex_t *m,
                                      const struct timespec *until)
{
    int r = pthread_cond_timedwait(cv, m, until);
    if (r == ETIMEDOUT)
        return false;
    if (r != 0)
        ctx_lock_fail("pthread_cond_timedwait", r);
    return true;
}

/* Wake one waiter of `cv` (borrowed). Aborts on any error. */
static inline void ctx_cond_signal(pthread_cond_t *cv)
{
    int r = pthread_cond_signal(cv);
    if (r != 0)
        ctx_lock_fail("pthread_cond_signal", r);
}

/* Wake every waiter of `cv` (borrowed). Aborts on any error. */
static inline void ctx_cond_broadcast(pthread_cond_t *cv)
{
    int r = pthread_cond_broadcast(cv);
    if (r != 0)
        ctx_lock_fail("pthread_cond_broadcast", r);
}

#endif
