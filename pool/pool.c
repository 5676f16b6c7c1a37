/* pool.c - worker threads that run queued jobs fairly across tenants and hand them back to the
 * loop.
 *
 * Design. A job goes NEW (pool_submit added its cancel watch) -> QUEUED (in the fair queue,
 * fairq.c) -> RUNNING (claimed by a worker, on the running list) -> FINISHED (on the completion
 * queue). A cancel can cut in at any point: the job's ctx_watch callback, on whichever thread
 * cancels, takes the pool lock and looks at job->state: QUEUED -> unlinked from its tenant in O(1)
 * and finished as CANCELLED_QUEUED; RUNNING -> cancel_ns is recorded for the overdue monitor (the
 * job itself sees ctx_cancelled()); NEW -> ABORTED, so pool_submit returns -ECANCELED. Because the
 * state only changes under the pool lock, a worker claiming a job and a cancel removing it can
 * never both win. A worker that claims a job whose context is already cancelled (the watch has not
 * run yet) or past its deadline finishes it as CANCELLED_QUEUED without running it.
 *
 * Completion: finished jobs are appended to a mutex-protected list; the first append after the
 * list was empty calls ev_async_send(). The loop thread swaps the whole list out and, per job:
 * ctx_watch_remove() (waits for a watch callback still returning on another thread, so nothing
 * else can touch the job afterwards), enter the context, done(), leave, drop the reference. The
 * ev_async only wakes the loop; each wake-up drains everything. pool_stop() drains the same list
 * directly, waiting on a condition variable instead of the loop.
 *
 * Overdue: when the pool has a cancel grace, a monitor thread sleeps until the earliest
 * cancel_ns + grace among running cancelled jobs (woken by the watch callback) and reports those
 * still running. While it calls the overdue callback outside the lock the job is `pinned`: its
 * worker waits on pin_cv before handing it back, so the job cannot be completed and freed under
 * the monitor. A job that returns after its grace but before the monitor woke is reported by its
 * worker. overdue_reported, set under the lock by whoever reports, makes it once per job.
 *
 * Threads and locks: `lock` (the pool lock) guards the fair queue, the running list, every job's
 * state/cancel_ns/overdue_reported/pinned/status/reason, closed and quit. `done_lock` guards the
 * completion list. Counters are relaxed atomics readable from any thread. Lock order: pool lock,
 * then done_lock; no ctx function that can run callbacks (ctx_cancel, ctx_watch_add,
 * ctx_watch_remove) is called with either held, because a watch callback takes the pool lock and
 * ctx_watch_remove waits for a running callback. Under the pool lock only the lock-free readers
 * (ctx_cancelled, ctx_err, ctx_expired, ctx_tenant, ctx_ref) are used. Callbacks (run, done,
 * overdue) run with no pool lock held.
 *
 * Lifetime: the watch callback touches the pool (ev_async_send) after it released the job to the
 * completion list; that is safe because the job's done cannot run before ctx_watch_remove() has
 * waited for the callback, and the pool is only freed after every done ran.
 */
#include <assert.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "context/lock.h"
#include "pool/internal.h"

enum pool_job_state {
    JOB_NEW = 0, /* pool_submit registered the watch, not queued yet */
    JOB_ABORTED, /* the watch fired while NEW: pool_submit returns -ECANCELED */
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_FINISHED, /* on the completion list (or done) */
};

struct pool_worker {
    pthread_t tid;
    struct pool *pool;
    unsigned index;
};

struct pool {
    struct ev_loop *loop; /* borrowed */
    ev_async async;       /* wakes the loop; only ev_async_send from other threads */
    pthread_t loop_thread;
    struct pool_config cfg;
    unsigned nworkers;
    unsigned started; /* workers created */
    struct pool_worker *workers;
    struct ctx **stop_ctxs; /* pool_stop's scratch: running contexts, nworkers slots */
    pthread_t monitor;
    bool has_monitor;

    pthread_mutex_t lock;   /* the pool lock */
    pthread_cond_t work_cv; /* workers: a job was queued, or quit */
    pthread_cond_t mon_cv;  /* monitor (CLOCK_MONOTONIC): a running job was cancelled, or quit */
    pthread_cond_t pin_cv;  /* workers: the monitor unpinned a job */
    struct pool_fairq fq;
    struct pool_job *running; /* through next/prev */
    bool closed, quit;

    pthread_mutex_t done_lock;
    pthread_cond_t done_cv; /* CLOCK_MONOTONIC; pool_stop waits here for completions */
    struct pool_job *done_head, *done_tail;
    bool done_waiting;

    _Atomic size_t pending; /* submitted, done not run yet */
    struct {
        _Atomic uint64_t queued, running, submitted, completed, failed, cancelled_queued,
            cancelled_running, refused_full, overdue, wait_ns, run_ns;
    } st;
};

#define STAT_ADD(p, f, n) atomic_fetch_add_explicit(&(p)->st.f, (n), memory_order_relaxed)
#define STAT_SUB(p, f, n) atomic_fetch_sub_explicit(&(p)->st.f, (n), memory_order_relaxed)
#define STAT_GET(p, f)    atomic_load_explicit(&(p)->st.f, memory_order_relaxed)

static void pool_lock(struct pool *p)
{
    ctx_mutex_lock(&p->lock);
}

static void pool_unlock(struct pool *p)
{
    ctx_mutex_unlock(&p->lock);
}

static inline bool on_loop_thread(const struct pool *p)
{
    return pthread_equal(pthread_self(), p->loop_thread);
}

static struct timespec ns_to_timespec(uint64_t ns)
{
    return (struct timespec){.tv_sec = (time_t)(ns / 1000000000u),
                             .tv_nsec = (long)(ns % 1000000000u)};
}

/* Wait on `cv` (CLOCK_MONOTONIC) until signalled or `deadline_ns` (UINT64_MAX = no deadline). */
static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *m, uint64_t deadline_ns)
{
    if (deadline_ns == UINT64_MAX) {
        ctx_cond_wait(cv, m);
        return;
    }
    struct timespec ts = ns_to_timespec(deadline_ns);
    (void)ctx_cond_timedwait(cv, m, &ts); /* the caller checks its deadline */
}

const char *pool_status_name(enum pool_status s)
{
    switch (s) {
    case POOL_DONE:
        return "done";
    case POOL_FAILED:
        return "failed";
    case POOL_CANCELLED_QUEUED:
        return "cancelled_queued";
    case POOL_CANCELLED_RUNNING:
        return "cancelled_running";
    case POOL_REFUSED_SHUTDOWN:
        return "shutdown";
    }
    return "unknown";
}

/* ---- completion hand-back -------------------------------------------------------------------- */

/* Finish `job` (pool lock held): count it and append it to the completion list. Returns true when
 * the list was empty, i.e. the caller must ev_async_send() once it dropped the lock. */
static bool job_finish_locked(struct pool *p, struct pool_job *job, enum pool_status status,
                              enum ctx_reason reason)
{
    if (atomic_exchange(&job->claimed, 1) != 0)
        abort(); /* a second completion: the exactly-once invariant is broken */
    job->state = JOB_FINISHED;
    job->status = (int)status;
    job->reason = reason;
    switch (status) {
    case POOL_DONE:
        STAT_ADD(p, completed, 1);
        break;
    case POOL_FAILED:
        STAT_ADD(p, completed, 1);
        STAT_ADD(p, failed, 1);
        break;
    case POOL_CANCELLED_QUEUED:
        STAT_ADD(p, cancelled_queued, 1);
        break;
    case POOL_CANCELLED_RUNNING:
        STAT_ADD(p, cancelled_running, 1);
        break;
    case POOL_REFUSED_SHUTDOWN:
        break;
    }
    job->cnext = NULL;
    ctx_mutex_lock(&p->done_lock);
    bool was_empty = p->done_head == NULL;
    if (was_empty)
        p->done_head = job;
    else
        p->done_tail->cnext = job;
    p->done_tail = job;
    if (p->done_waiting)
        ctx_cond_signal(&p->done_cv);
    ctx_mutex_unlock(&p->done_lock);
    return was_empty;
}

static void pool_wake_loop(struct pool *p)
{
    ev_async_send(p->loop, &p->async);
}

/* Loop thread: the job's one done callback, with its context current. */
static void job_complete(struct pool *p, struct pool_job *job)
{
    ctx_watch_remove(&job->watch); /* after this no watch callback touches the job */
    struct ctx *c = job->ctx;
    struct ctx *prev = ctx_enter(c);
    job->done(job, (enum pool_status)job->status);
    ctx_leave(prev);
    ctx_unref(c);
    atomic_fetch_sub(&p->pending, 1);
}

/* Loop thread: run the done callback of every finished job. */
static void pool_drain(struct pool *p)
{
    ctx_mutex_lock(&p->done_lock);
    struct pool_job *job = p->done_head;
    p->done_head = p->done_tail = NULL;
    ctx_mutex_unlock(&p->done_lock);
    while (job) {
        struct pool_job *next = job->cnext; /* done() may free or resubmit the job */
        job_complete(p, job);
        job = next;
    }
}

static void pool_on_async(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pool *p = w->data;
    assert(on_loop_thread(p));
    pool_drain(p);
}

/* Loop thread: drain until nothing is pending (true) or `deadline_ns` passes (false; 0 = do not
 * wait, UINT64_MAX = no deadline). */
static bool pool_wait_pending(struct pool *p, uint64_t deadline_ns)
{
    for (;;) {
        pool_drain(p);
        if (atomic_load(&p->pending) == 0)
            return true;
        if (deadline_ns == 0 || ctx_now_ns() >= deadline_ns)
            return false;
        ctx_mutex_lock(&p->done_lock);
        if (!p->done_head) {
            p->done_waiting = true;
            cond_wait_until(&p->done_cv, &p->done_lock, deadline_ns);
            p->done_waiting = false;
        }
        ctx_mutex_unlock(&p->done_lock);
    }
}

/* ---- cancellation and overdue ---------------------------------------------------------------- */

static void job_on_cancel(struct ctx *c, enum ctx_reason reason, void *arg)
{
    (void)c;
    struct pool_job *job = arg;
    struct pool *p = job->pool;
    bool wake = false;
    pool_lock(p);
    switch (job->state) {
    case JOB_NEW:
        job->state = JOB_ABORTED;
        break;
    case JOB_QUEUED:
        pool_fairq_remove(&p->fq, job);
        STAT_SUB(p, queued, 1);
        wake = job_finish_locked(p, job, POOL_CANCELLED_QUEUED, reason);
        break;
    case JOB_RUNNING:
        job->cancel_ns = ctx_now_ns();
        if (p->has_monitor)
            ctx_cond_signal(&p->mon_cv);
        break;
    default:
        break;
    }
    pool_unlock(p);
    if (wake)
        pool_wake_loop(p);
}

/* Report `job` as overdue (no lock held; the reporter set overdue_reported under the lock). */
static void job_report_overdue(struct pool *p, struct pool_job *job, uint64_t overdue_ns)
{
    STAT_ADD(p, overdue, 1);
    if (!p->cfg.overdue)
        return;
    struct ctx *prev = ctx_enter(job->ctx);
    p->cfg.overdue(job, overdue_ns, p->cfg.overdue_arg);
    ctx_leave(prev);
}

/* Pool lock held: true when `job` is due for its overdue report at `now`. */
static bool job_overdue_due(const struct pool *p, const struct pool_job *job, uint64_t now)
{
    return job->cancel_ns != 0 && !job->overdue_reported && now >= job->cancel_ns &&
           now - job->cancel_ns >= p->cfg.cancel_grace_ns;
}

/* Pool lock held: report one due running job (dropping the lock meanwhile) and return true, or
 * return false and set *next_ns to the earliest future due time (UINT64_MAX when none). */
static bool monitor_report_one(struct pool *p, uint64_t *next_ns)
{
    uint64_t now = ctx_now_ns();
    *next_ns = UINT64_MAX;
    for (struct pool_job *job = p->running; job; job = job->next) {
        if (job->cancel_ns == 0 || job->overdue_reported)
            continue;
        if (job_overdue_due(p, job, now)) {
            job->overdue_reported = true;
            job->pinned = true;
            pool_unlock(p);
            job_report_overdue(p, job, now - job->cancel_ns);
            pool_lock(p);
            job->pinned = false;
            ctx_cond_broadcast(&p->pin_cv);
            return true;
        }
        uint64_t due = job->cancel_ns + p->cfg.cancel_grace_ns;
        if (due < *next_ns)
            *next_ns = due;
    }
    return false;
}

static void *pool_monitor_main(void *arg)
{
    struct pool *p = arg;
    pthread_setname_np(pthread_self(), "spindle-pmon");
    pool_lock(p);
    while (!p->quit) {
        uint64_t next_ns;
        if (monitor_report_one(p, &next_ns))
            continue; /* the list may have changed while unlocked: rescan */
        cond_wait_until(&p->mon_cv, &p->lock, next_ns);
    }
    pool_unlock(p);
    return NULL;
}

/* ---- workers --------------------------------------------------------------------------------- */

/* Pool lock held (dropped and retaken): before a worker goes to sleep on an empty queue it watches
 * the queue for a short while without the lock. Under a steady stream of short jobs the next one
 * usually arrives within that window, which saves the submitter a futex wake and the worker a
 * sleep/wake round trip per job; when nothing comes, the cost is bounded by POOL_SPIN_NS of CPU. */
#ifndef POOL_SPIN_NS
#define POOL_SPIN_NS 20000
#endif

static void worker_spin_unlocked(struct pool *p)
{
    pool_unlock(p);
    uint64_t until = ctx_now_ns() + POOL_SPIN_NS;
    while (atomic_load_explicit(&p->st.queued, memory_order_relaxed) == 0 && ctx_now_ns() < until) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    pool_lock(p);
}

/* Pool lock held: the next job to run, or NULL when quitting. Jobs cancelled or past their
 * deadline are finished here without running. */
static struct pool_job *worker_claim_locked(struct pool *p)
{
    for (;;) {
        if (POOL_SPIN_NS > 0 && !p->quit && p->fq.queued == 0)
            worker_spin_unlocked(p);
        while (!p->quit && p->fq.queued == 0) {
            ctx_cond_wait(&p->work_cv, &p->lock);
        }
        if (p->quit)
            return NULL;
        struct pool_job *job = pool_fairq_pop(&p->fq);
        STAT_SUB(p, queued, 1);
        uint64_t now = ctx_now_ns();
        enum ctx_reason reason = ctx_err(job->ctx);
        if (reason == CTX_REASON_NONE && ctx_expired(job->ctx, now))
            reason = CTX_REASON_DEADLINE;
        if (reason != CTX_REASON_NONE) {
            if (job_finish_locked(p, job, POOL_CANCELLED_QUEUED, reason)) {
                pool_unlock(p);
                pool_wake_loop(p);
                pool_lock(p);
            }
            continue;
        }
        job->state = JOB_RUNNING;
        job->t_start_ns = now;
        job->prev = NULL;
        job->next = p->running;
        if (p->running)
            p->running->prev = job;
        p->running = job;
        STAT_ADD(p, running, 1);
        STAT_ADD(p, wait_ns, now - job->t_submit_ns);
        return job;
    }
}

static enum pool_status job_run_status(struct pool_job *job, enum ctx_reason *reason)
{
    *reason = CTX_REASON_NONE;
    if (job->result == 0)
        return POOL_DONE; /* finished its work, even if a cancel came at the very end */
    enum ctx_reason err = ctx_err(job->ctx);
    if (job->result == -ECANCELED || err != CTX_REASON_NONE) {
        *reason = err != CTX_REASON_NONE ? err : CTX_REASON_CANCELED;
        return POOL_CANCELLED_RUNNING;
    }
    return POOL_FAILED;
}

/* Pool lock held: take a job that returned off the running list and finish it. Returns whether
 * the loop must be woken. */
static bool worker_end_locked(struct pool *p, struct pool_job *job)
{
    while (job->pinned) { /* the monitor is reporting it */
        ctx_cond_wait(&p->pin_cv, &p->lock);
    }
    if (job->prev)
        job->prev->next = job->next;
    else
        p->running = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->next = job->prev = NULL;
    STAT_SUB(p, running, 1);
    STAT_ADD(p, run_ns, job->t_end_ns - job->t_start_ns);
    enum ctx_reason reason;
    enum pool_status status = job_run_status(job, &reason);
    return job_finish_locked(p, job, status, reason);
}

static void worker_run(struct pool_job *job)
{
    struct ctx *prev = ctx_enter(job->ctx);
    job->result = job->run(job);
    job->t_end_ns = ctx_now_ns();
    ctx_leave(prev);
}

static void *pool_worker_main(void *arg)
{
    struct pool_worker *w = arg;
    struct pool *p = w->pool;
    char name[16];
    snprintf(name, sizeof(name), "spindle-w%u", w->index);
    pthread_setname_np(pthread_self(), name);

    pool_lock(p);
    struct pool_job *job;
    while ((job = worker_claim_locked(p)) != NULL) {
        pool_unlock(p);
        worker_run(job);
        pool_lock(p);
        if (p->cfg.cancel_grace_ns && job_overdue_due(p, job, job->t_end_ns)) {
            job->overdue_reported = true; /* it ran past its grace before the monitor woke */
            pool_unlock(p);
            job_report_overdue(p, job, job->t_end_ns - job->cancel_ns);
            pool_lock(p);
        }
        if (worker_end_locked(p, job)) {
            pool_unlock(p);
            pool_wake_loop(p);
            pool_lock(p);
        }
    }
    pool_unlock(p);
    return NULL;
}

/* ---- submit ---------------------------------------------------------------------------------- */

static void job_reset(struct pool *p, struct pool_job *job, struct ctx *c)
{
    job->ctx = c;
    job->result = 0;
    job->reason = CTX_REASON_NONE;
    job->t_submit_ns = ctx_now_ns();
    job->t_start_ns = job->t_end_ns = 0;
    job->next = job->prev = job->cnext = NULL;
    job->tenant = NULL;
    job->state = JOB_NEW;
    atomic_store(&job->claimed, 0);
    job->cancel_ns = 0;
    job->overdue_reported = false;
    job->pinned = false;
    job->status = POOL_DONE;
    job->pool = p;
}

/* Pool lock held: queue a NEW job. Returns 0 or a negative errno (nothing queued). */
static int pool_enqueue_locked(struct pool *p, struct pool_job *job)
{
    if (job->state == JOB_ABORTED)
        return -ECANCELED;
    if (p->closed)
        return -ESHUTDOWN;
    if (p->fq.queued >= p->cfg.queue_capacity) {
        STAT_ADD(p, refused_full, 1);
        return -EAGAIN;
    }
    int r = pool_fairq_push(&p->fq, job, ctx_tenant(job->ctx), job->weight);
    if (r < 0)
        return r;
    job->state = JOB_QUEUED;
    atomic_fetch_add(&p->pending, 1);
    STAT_ADD(p, queued, 1);
    STAT_ADD(p, submitted, 1);
    ctx_cond_signal(&p->work_cv);
    return 0;
}

int pool_submit(struct pool *p, struct pool_job *job)
{
    if (!p || !job || !job->run || !job->done)
        return -EINVAL;
    struct ctx *cur = ctx_current();
    if (!cur)
        return -EINVAL;
    if (ctx_cancelled(cur))
        return -ECANCELED;
    job_reset(p, job, ctx_ref(cur));
    /* The watch goes on before the job is visible to workers, so it is always registered by the
     * time anyone can finish the job and the done path can remove it. */
    if (ctx_watch_add(job->ctx, &job->watch, job_on_cancel, job) < 0) {
        ctx_unref(job->ctx);
        return -ECANCELED;
    }
    pool_lock(p);
    int r = pool_enqueue_locked(p, job);
    pool_unlock(p);
    if (r < 0) {
        ctx_watch_remove(&job->watch); /* also waits for a callback that saw JOB_NEW */
        ctx_unref(job->ctx);
        job->ctx = NULL;
    }
    return r;
}

void pool_close(struct pool *p)
{
    pool_lock(p);
    p->closed = true;
    pool_unlock(p);
}

size_t pool_pending(const struct pool *p)
{
    return atomic_load(&p->pending);
}

/* ---- stop ------------------------------------------------------------------------------------ */

/* Refuse every queued job and collect new references to the running jobs' contexts into
 * p->stop_ctxs; returns how many. */
static size_t pool_stop_collect(struct pool *p, enum ctx_reason reason)
{
    size_t n = 0;
    pool_lock(p);
    struct pool_job *job;
    while ((job = pool_fairq_pop(&p->fq)) != NULL) {
        STAT_SUB(p, queued, 1);
        (void)job_finish_locked(p, job, POOL_REFUSED_SHUTDOWN, reason); /* drained directly */
    }
    for (job = p->running; job && n < p->nworkers; job = job->next)
        p->stop_ctxs[n++] = ctx_ref(job->ctx);
    pool_unlock(p);
    return n;
}

int pool_stop(struct pool *p, uint64_t deadline_ns, enum ctx_reason reason)
{
    assert(on_loop_thread(p));
    if (reason == CTX_REASON_NONE)
        reason = CTX_REASON_SHUTDOWN;
    pool_close(p);
    if (pool_wait_pending(p, deadline_ns))
        return 0;
    size_t n = pool_stop_collect(p, reason);
    for (size_t i = 0; i < n; i++) { /* no lock held: the watch callbacks take the pool lock */
        ctx_cancel(p->stop_ctxs[i], reason);
        ctx_unref(p->stop_ctxs[i]);
    }
    pool_wait_pending(p, UINT64_MAX);
    return -ETIMEDOUT;
}

/* ---- lifetime -------------------------------------------------------------------------------- */

static int pool_sync_init(struct pool *p)
{
    pthread_condattr_t mono;
    if (pthread_condattr_init(&mono) != 0)
        return -ENOMEM;
    int r = pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
    if (r == 0)
        r = pthread_mutex_init(&p->lock, NULL);
    if (r == 0)
        r = pthread_mutex_init(&p->done_lock, NULL);
    if (r == 0)
        r = pthread_cond_init(&p->work_cv, NULL);
    if (r == 0)
        r = pthread_cond_init(&p->pin_cv, NULL);
    if (r == 0)
        r = pthread_cond_init(&p->mon_cv, &mono);
    if (r == 0)
        r = pthread_cond_init(&p->done_cv, &mono);
    pthread_condattr_destroy(&mono);
    return -r; /* glibc's initialisers cannot fail with these attributes */
}

static void pool_sync_fini(struct pool *p)
{
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->mon_cv);
    pthread_cond_destroy(&p->pin_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->done_lock);
    pthread_mutex_destroy(&p->lock);
}

/* Tell every thread to quit and join those that were started. */
static void pool_join(struct pool *p)
{
    pool_lock(p);
    p->quit = true;
    ctx_cond_broadcast(&p->work_cv);
    ctx_cond_broadcast(&p->mon_cv);
    pool_unlock(p);
    for (unsigned i = 0; i < p->started; i++)
        pthread_join(p->workers[i].tid, NULL);
    p->started = 0;
    if (p->has_monitor)
        pthread_join(p->monitor, NULL);
    p->has_monitor = false;
}

static int pool_threads_start(struct pool *p)
{
    if (p->cfg.cancel_grace_ns) {
        if (pthread_create(&p->monitor, NULL, pool_monitor_main, p) != 0)
            return -EAGAIN;
        p->has_monitor = true;
    }
    for (unsigned i = 0; i < p->nworkers; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
        if (pthread_create(&p->workers[i].tid, NULL, pool_worker_main, &p->workers[i]) != 0)
            return -EAGAIN;
        p->started++;
    }
    return 0;
}

static unsigned pool_default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

struct pool *pool_new(struct ev_loop *loop, const struct pool_config *cfg)
{
    if (!loop || !cfg || cfg->queue_capacity == 0)
        return NULL;
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->loop = loop;
    p->loop_thread = pthread_self();
    p->cfg = *cfg;
    p->nworkers = cfg->workers ? cfg->workers : pool_default_workers();
    if (pool_sync_init(p) < 0)
        goto err_free;
    if (pool_fairq_init(&p->fq) < 0)
        goto err_sync;
    p->workers = calloc(p->nworkers, sizeof(*p->workers));
    p->stop_ctxs = calloc(p->nworkers, sizeof(*p->stop_ctxs));
    if (!p->workers || !p->stop_ctxs)
        goto err_arrays;
    ev_async_init(&p->async, pool_on_async);
    p->async.data = p;
    ev_async_start(loop, &p->async);
    if (pool_threads_start(p) < 0)
        goto err_threads;
    return p;

err_threads:
    pool_join(p);
    ev_async_stop(loop, &p->async);
err_arrays:
    free(p->stop_ctxs);
    free(p->workers);
    pool_fairq_fini(&p->fq);
err_sync:
    pool_sync_fini(p);
err_free:
    free(p);
    return NULL;
}

void pool_free(struct pool *p)
{
    if (!p)
        return;
    assert(on_loop_thread(p));
    if (atomic_load(&p->pending) != 0) /* pool_stop() was skipped: still honour every job */
        pool_stop(p, 0, CTX_REASON_SHUTDOWN);
    pool_join(p);
    ev_async_stop(p->loop, &p->async);
    free(p->stop_ctxs);
    free(p->workers);
    pool_fairq_fini(&p->fq);
    pool_sync_fini(p);
    free(p);
}

/* ---- statistics ------------------------------------------------------------------------------ */

void pool_stats_get(const struct pool *p, struct pool_stats *out)
{
    *out = (struct pool_stats){
        .queued = STAT_GET(p, queued),
        .running = STAT_GET(p, running),
        .submitted = STAT_GET(p, submitted),
        .completed = STAT_GET(p, completed),
        .failed = STAT_GET(p, failed),
        .cancelled_queued = STAT_GET(p, cancelled_queued),
        .cancelled_running = STAT_GET(p, cancelled_running),
        .refused_full = STAT_GET(p, refused_full),
        .overdue = STAT_GET(p, overdue),
        .wait_ns_total = STAT_GET(p, wait_ns),
        .run_ns_total = STAT_GET(p, run_ns),
        .workers = p->nworkers,
        .capacity = p->cfg.queue_capacity,
    };
}

/* The lock is part of the pool's mutable state even for read-only queries. */
size_t pool_tenant_queued(const struct pool *p, const char *tenant)
{
    if (!tenant)
        return 0;
    struct pool *mp = (struct pool *)p;
    pool_lock(mp);
    size_t n = pool_fairq_tenant_queued(&mp->fq, tenant);
    pool_unlock(mp);
    return n;
}

size_t pool_tenants_active(const struct pool *p)
{
    struct pool *mp = (struct pool *)p;
    pool_lock(mp);
    size_t n = mp->fq.ntenants;
    pool_unlock(mp);
    return n;
}
