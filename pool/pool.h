/* pool.h - worker threads, fair per-tenant queues, completion hand-back to the loop.
 *
 * A job is embedded by the caller (in its request). pool_submit() queues it under its tenant (the
 * tenant of its context) in a bounded queue; N worker threads take jobs round-robin across tenants
 * with weights (deficit round robin), FIFO within a tenant, and run them with the job's context
 * current. When a job ends (or is cancelled before it ran) it is handed back to the loop thread
 * through an MPSC queue and one ev_async; there the done callback runs exactly once, with the
 * context current again. The pool borrows the job from pool_submit() until its done callback.
 *
 * Threads: pool_new/pool_free/pool_stop and every done callback run on the loop thread (the thread
 * that runs `loop`). run callbacks run on workers. pool_submit, pool_close, pool_pending,
 * pool_stats_get and pool_tenant_queued may be called from any thread.
 */
#ifndef SPINDLE_POOL_H
#define SPINDLE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"

struct ev_loop;
struct pool;
struct pool_job;

enum pool_status {
    POOL_DONE = 0,          /* run returned 0 */
    POOL_FAILED,            /* run returned a negative errno other than -ECANCELED */
    POOL_CANCELLED_QUEUED,  /* cancelled (or past its deadline) before a worker started it */
    POOL_CANCELLED_RUNNING, /* its context was cancelled while it ran (run saw it and returned) */
    POOL_REFUSED_SHUTDOWN,  /* still queued when pool_stop() gave up waiting */
};

/* "done", "failed", "cancelled_queued", "cancelled_running", "shutdown". */
const char *pool_status_name(enum pool_status s);

/* Runs on a worker with job->ctx current. Returns 0, -ECANCELED when it saw ctx_cancelled(), or
 * another negative errno for a failure. Must check ctx_cancelled() at least every millisecond. */
typedef int pool_run_fn(struct pool_job *job);

/* Runs once on the loop thread with job->ctx current. The pool no longer touches the job. */
typedef void pool_done_fn(struct pool_job *job, enum pool_status status);

/* Called on a worker thread when a job is still running `cancel_grace_ns` after its context was
 * cancelled (once per job), with the job's context current. For logging and counting. */
typedef void pool_overdue_fn(struct pool_job *job, uint64_t overdue_ns, void *arg);

struct pool_job {
    /* set by the caller before pool_submit() */
    pool_run_fn *run;
    pool_done_fn *done;
    void *data;      /* the caller's */
    unsigned weight; /* the tenant's share in the fair queue (0 = 1) */

    /* set by the pool */
    struct ctx *ctx; /* new reference to the submitter's current context, dropped after done */
    int result;      /* what run returned */
    enum ctx_reason reason; /* cancel reason for CANCELLED_* / REFUSED statuses */
    uint64_t t_submit_ns, t_start_ns, t_end_ns; /* ctx_now_ns(); start/end 0 if it never ran */

    /* private */
    struct pool_job *next, *prev;
    struct pool_job *cnext;
    struct pool_tenant *tenant;
    struct ctx_watch watch;
    int state;
    _Atomic int claimed;
    uint64_t cancel_ns;
    bool overdue_reported;
    bool pinned;
    int status;
    struct pool *pool;
};

struct pool_config {
    unsigned workers;         /* 0 = number of online CPUs */
    size_t queue_capacity;    /* jobs queued (not running) at most; >= 1 */
    uint64_t cancel_grace_ns; /* report a job still running this long after cancel; 0 = never */
    pool_overdue_fn *overdue; /* may be NULL */
    void *overdue_arg;
};

struct pool_stats {
    uint64_t queued;    /* now */
    uint64_t running;   /* now */
    uint64_t submitted; /* totals since start */
    uint64_t completed; /* done + failed */
    uint64_t failed;
    uint64_t cancelled_queued;
    uint64_t cancelled_running;
    uint64_t refused_full;
    uint64_t overdue;
    uint64_t wait_ns_total; /* sum of submit->start over jobs that started */
    uint64_t run_ns_total;  /* sum of start->end */
    unsigned workers;
    size_t capacity;
};

/* Start the workers (named "spindle-w<i>") and attach the completion ev_async to `loop` (borrowed,
 * must outlive the pool). Call from the loop thread with all signals blocked (workers inherit the
 * mask). NULL on failure (out of memory, pthread_create failed). */
struct pool *pool_new(struct ev_loop *loop, const struct pool_config *cfg);

/* Stop the workers and free the pool. Requires that pool_stop() returned (every done callback has
 * run). pool_free(NULL) is a no-op. */
void pool_free(struct pool *p);

/* Queue `job` (borrowed until its done callback) under the tenant of the calling thread's current
 * context, capturing that context. Returns 0, -EAGAIN when the queue is full, -ESHUTDOWN after
 * pool_close(), -ECANCELED when the context is already cancelled, -EINVAL when there is no
 * current context or no run/done callback, -ENOMEM when a new tenant queue cannot be allocated.
 * On error the pool keeps nothing and done never runs. May be called from any thread (the done
 * callback still runs on the loop thread). */
int pool_submit(struct pool *p, struct pool_job *job);

/* Refuse new submissions from now on (-ESHUTDOWN). Queued and running jobs continue. */
void pool_close(struct pool *p);

/* Jobs submitted whose done callback has not run yet. */
size_t pool_pending(const struct pool *p);

/* Close, then wait (running done callbacks on the calling loop thread) until every job is done or
 * `deadline_ns` (ctx_now_ns() scale; 0 = do not wait) passes; then cancel the contexts of jobs
 * still running with `reason`, complete the still queued ones as POOL_REFUSED_SHUTDOWN, wait for
 * the running ones to return, and run every remaining done callback. Returns 0 when all finished
 * in time, -ETIMEDOUT when some had to be cancelled. Blocks the loop thread: call it at the end. */
int pool_stop(struct pool *p, uint64_t deadline_ns, enum ctx_reason reason);

void pool_stats_get(const struct pool *p, struct pool_stats *out);

/* Tenants with at least one job queued now. */
size_t pool_tenants_active(const struct pool *p);

/* Jobs queued now for `tenant` (borrowed). */
size_t pool_tenant_queued(const struct pool *p, const char *tenant);

#endif
