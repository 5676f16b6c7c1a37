/* store.c - the store thread: the one owner of the task store's connection, with group commit,
 * lease renewal and the retention purge; and the helpers of the task record.
 *
 * Design: requests (struct srv_task_req, embedded by their callers on the loop thread) are
 * collected on the loop thread without a lock for the length of one loop iteration; before the loop
 * waits for events again (an ev_prepare), the whole collection goes into the FIFO under `lock` with
 * one wake-up of the thread. So the requests of one iteration (the enqueues of every connection
 * that was readable) always share a transaction, and the loop takes the lock and wakes the thread
 * once per iteration, not once per request. The thread takes the whole FIFO at once, runs it in ONE
 * transaction (so N enqueues that arrived together cost one commit and one fsync), and puts the
 * list on the done list, then wakes the loop with one ev_async; the loop takes the whole done list
 * and runs each done callback with no lock held (libuv's uv__work_done shape). A store failure in
 * the middle (disk full, I/O error) rolls the whole transaction back and fails every request of it
 * with the same error: nothing is half-written, and a client that got no 202 has no task.
 *
 * Between batches the thread wakes on its own every third of lease_ms to renew the leases of
 * this process's running attempts (a heartbeat that does not depend on the loop), end the leases
 * that ran out (a previous process's attempts after a crash: they are retried), and every
 * purge period to delete finished tasks past retention_ms, in batches of purge_batch rows, one
 * transaction each, so that a large purge never holds the store for long.
 *
 * A store shared by several processes (PostgreSQL) also has events (ops->events): what another
 * process did that this one must act on, such as a DELETE of an attempt running here. The thread
 * asks the backend for them when the backend wakes it (a notification arrived on its LISTEN
 * connection) and every poll_ms (the backend then also queries the store: the fallback when
 * notifications do not arrive), and hands them to the loop with the done requests, where
 * cfg.on_event sees each one.
 *
 * Threads: `lock` guards pending, done, events, woken and stopping; `batch` is the loop thread's;
 * stats are atomics; the backend
 * state is the thread's alone (and the starting/stopping thread's before and after it runs). Lock
 * order: only `lock`, never held while calling the backend or a callback.
 */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logging/log.h"
#include "server/tasks/internal.h"

struct srv_task_store {
    struct srv_task_store_config cfg;
    const struct srv_task_store_ops *ops;
    void *st; /* the backend's (the thread's once started) */
    struct ev_loop *loop;
    ev_async async;
    ev_prepare prepare; /* hands `batch` to the thread before the loop waits */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct srv_task_req *batch, *batch_tail;     /* loop thread: submitted this iteration */
    struct srv_task_req *pending, *pending_tail; /* lock */
    struct srv_task_req *done, *done_tail;       /* lock */
    bool stopping;                               /* lock */
    bool woken;                                  /* lock: the backend has events */
    struct srv_task_event *events;               /* lock: for the loop, nevents of them */
    size_t nevents, events_cap;                  /* lock */
    bool thread_started;
    struct srv_task_store_stats stats;
};

/* ---- the task record --------------------------------------------------------------------------
 */

static const char *const task_states[SRV_TASK_STATE__COUNT] = {
    [SRV_TASK_QUEUED] = "queued",     [SRV_TASK_RUNNING] = "running",
    [SRV_TASK_RETRYING] = "retrying", [SRV_TASK_SUCCEEDED] = "succeeded",
    [SRV_TASK_FAILED] = "failed",     [SRV_TASK_CANCELLED] = "cancelled",
};

const char *srv_task_state_name(enum srv_task_state s)
{
    return (unsigned)s < SRV_TASK_STATE__COUNT ? task_states[s] : "unknown";
}

int srv_task_state_parse(const char *s, enum srv_task_state *out)
{
    for (int i = 0; i < SRV_TASK_STATE__COUNT; i++) {
        if (strcmp(task_states[i], s) == 0) {
            *out = (enum srv_task_state)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool srv_task_state_final(enum srv_task_state s)
{
    return s == SRV_TASK_SUCCEEDED || s == SRV_TASK_FAILED || s == SRV_TASK_CANCELLED;
}

int64_t srv_task_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void srv_task_id_new(char id[SRV_TASK_ID_LEN + 1])
{
    /* The calling thread's PRNG, seeded from the kernel (a span id is 8 random bytes): a system
     * call per id would cost more than the rest of an enqueue on the loop. Uniqueness, not
     * secrecy: an id is no credential. */
    uint8_t rnd[8];
    ctx_span_new(rnd);
    snprintf(id, SRV_TASK_ID_LEN + 1, "%012llx%02x%02x%02x%02x%02x%02x",
             (unsigned long long)srv_task_now_ms() & 0xffffffffffffULL, rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5]);
}

void srv_task_fini(struct srv_task *t)
{
    free(t->spec);
    free(t->errors);
    free(t->result);
    t->spec = t->errors = t->result = NULL;
    t->spec_len = t->result_len = 0;
}

void srv_task_req_fini(struct srv_task_req *req)
{
    srv_task_fini(&req->task);
    for (unsigned i = 0; req->tasks != NULL && i < req->n; i++)
        srv_task_fini(&req->tasks[i]);
    free(req->tasks);
    req->tasks = NULL;
    req->n = 0;
}

double srv_task_commit_bucket_s(unsigned i)
{
    return i >= 15 ? 1e300 : 0.000125 * (double)(1u << i);
}

bool srv_task_store_shared(const struct srv_task_store *s)
{
    return s->ops->events != NULL;
}

const struct srv_task_store_stats *srv_task_store_stats(const struct srv_task_store *s)
{
    return &s->stats;
}

/* ---- one request (store thread) ---------------------------------------------------------------
 */

/* A failure of the store itself (as opposed to an answer about one task): it ends the batch. */
static bool store_fatal(int rc)
{
    return rc == -EIO || rc == -ENOSPC || rc == -EBUSY || rc == -ENOMEM;
}

static int store_run_one(struct srv_task_store *s, struct srv_task_req *r, int64_t now)
{
    const struct srv_task_store_ops *o = s->ops;
    struct srv_task *t = &r->task;
    switch (r->op) {
    case SRV_TASK_OP_ENQUEUE:
        return o->enqueue(s->st, t, r->cap, &r->existed);
    case SRV_TASK_OP_CLAIM:
        r->tasks = calloc(r->max ? r->max : 1, sizeof(*r->tasks));
        if (r->tasks == NULL)
            return -ENOMEM;
        return o->claim(s->st, s->cfg.owner, now, now + s->cfg.lease_ms, r->max, r->tasks, &r->n);
    case SRV_TASK_OP_START:
        return o->start(s->st, t->id, t->attempt, now);
    case SRV_TASK_OP_COMPLETE:
        return o->complete(s->st, t->id, t->attempt, now, t->result, t->result_len,
                           t->content_type);
    case SRV_TASK_OP_FAIL:
        return o->fail(s->st, t->id, t->attempt, now, r->error_json, r->retry_at);
    case SRV_TASK_OP_RELEASE:
        return o->release(s->st, t->id, t->attempt);
    case SRV_TASK_OP_CANCEL: {
        char tenant[sizeof(t->tenant)], id[sizeof(t->id)];
        memcpy(tenant, t->tenant, sizeof(tenant));
        memcpy(id, t->id, sizeof(id));
        srv_task_fini(t); /* a repeated request (a long-poll reading again) reuses it */
        return o->cancel(s->st, tenant, id, now, t, &r->existed);
    }
    case SRV_TASK_OP_GET: {
        char tenant[sizeof(t->tenant)], id[sizeof(t->id)];
        memcpy(tenant, t->tenant, sizeof(tenant));
        memcpy(id, t->id, sizeof(id));
        srv_task_fini(t);
        return o->get(s->st, tenant, id, r->with_result, t);
    }
    case SRV_TASK_OP_LIST:
        r->tasks = calloc(r->filter.limit ? r->filter.limit : 1, sizeof(*r->tasks));
        if (r->tasks == NULL)
            return -ENOMEM;
        return o->list(s->st, t->tenant, &r->filter, r->tasks, &r->n);
    case SRV_TASK_OP_COUNTS: {
        int rc = o->counts(s->st, r->count_fn, r->count_arg, now, &r->oldest_queued);
        if (rc == 0 && r->tenant_fn != NULL)
            rc = o->queued(s->st, r->max, r->tenant_fn, r->count_arg);
        return rc;
    }
    case SRV_TASK_OP_SCHEDULE_FIRE: {
        bool fired = false;
        int rc = o->schedule_fire(s->st, r->schedule, r->tick_ms, now, t, r->cap, &fired);
        r->existed = rc == 0 && !fired;
        return rc;
    }
    case SRV_TASK_OP_SCHEDULE_LIST:
        return o->schedule_list(s->st, r->sched_fn, r->sched_arg);
    }
    return -EINVAL;
}

/* Whether the request changed the store (a transaction without changes syncs nothing). */
static bool store_wrote(const struct srv_task_req *r)
{
    switch (r->op) {
    case SRV_TASK_OP_ENQUEUE:
    case SRV_TASK_OP_SCHEDULE_FIRE: /* existed: the tick was taken, nothing written */
        return r->rc == 0 && !r->existed;
    case SRV_TASK_OP_CLAIM:
        return r->rc == 0 && r->n > 0;
    case SRV_TASK_OP_START:
    case SRV_TASK_OP_COMPLETE:
    case SRV_TASK_OP_FAIL:
    case SRV_TASK_OP_RELEASE:
    case SRV_TASK_OP_CANCEL:
        return r->rc == 0;
    default:
        return false;
    }
}

static void store_observe_commit(struct srv_task_store *s, uint64_t ns, bool wrote)
{
    if (!wrote)
        return; /* a read-only transaction writes nothing and syncs nothing */
    unsigned i = 0;
    while (i < 15 && (double)ns / 1e9 > srv_task_commit_bucket_s(i))
        i++;
    atomic_fetch_add(&s->stats.commit_hist[i], 1);
    atomic_fetch_add(&s->stats.commit_sum_ns, ns);
    atomic_fetch_add(&s->stats.commits, 1);
    atomic_fetch_add(&s->stats.fsyncs, 1);
}

/* Note what request r did: *wrote, *enq; its code when it failed the store, else 0. */
static int store_note(const struct srv_task_req *r, bool *wrote, unsigned *enq)
{
    *wrote |= store_wrote(r);
    if (store_fatal(r->rc))
        return r->rc;
    if ((r->op == SRV_TASK_OP_ENQUEUE || r->op == SRV_TASK_OP_SCHEDULE_FIRE) && r->rc == 0 &&
        !r->existed)
        (*enq)++;
    return 0;
}

/* Whether the backend's write_many takes requests of this op. */
static bool store_many(enum srv_task_op op)
{
    return op == SRV_TASK_OP_ENQUEUE || op == SRV_TASK_OP_START || op == SRV_TASK_OP_COMPLETE;
}

/* Such writes in a row from r, when the backend takes them together (0: one at a time). A lone
 * enqueue goes there too: write_many checks the tenant's cap once per group, and may know it
 * without counting. */
static unsigned store_writes(const struct srv_task_store *s, const struct srv_task_req *r)
{
    unsigned n = 0;
    bool enq = r != NULL && r->op == SRV_TASK_OP_ENQUEUE;
    for (; s->ops->write_many != NULL && r != NULL && store_many(r->op); r = r->next)
        n++;
    return n > 1 || (n == 1 && enq) ? n : 0;
}

/* Run the requests of the list (in the open transaction) until one fails the store: its code. */
static int store_run_list(struct srv_task_store *s, struct srv_task_req *r, int64_t now,
                          bool *wrote, unsigned *enq)
{
    int rc = 0;
    while (rc == 0 && r != NULL) {
        unsigned run = store_writes(s, r);
        if (run > 0) { /* in fewer round trips (a remote store) */
            rc = s->ops->write_many(s->st, r, run, now);
            for (unsigned i = 0; rc == 0 && i < run; i++, r = r->next)
                rc = store_note(r, wrote, enq);
            continue;
        }
        r->rc = store_run_one(s, r, now);
        rc = store_note(r, wrote, enq);
        r = r->next;
    }
    return rc;
}

/* Run the list in one transaction. */
static void store_run_batch(struct srv_task_store *s, struct srv_task_req *list)
{
    int64_t now = srv_task_now_ms();
    int rc = s->ops->begin(s->st);
    unsigned enq = 0;
    bool wrote = false;
    if (rc == 0)
        rc = store_run_list(s, list, now, &wrote, &enq);
    uint64_t t0 = ctx_now_ns();
    if (rc == 0)
        rc = s->ops->commit(s->st);
    if (rc == 0) {
        uint64_t dt = ctx_now_ns() - t0;
        store_observe_commit(s, dt, wrote);
        atomic_fetch_add(&s->stats.enqueued, enq);
        for (struct srv_task_req *r = list; r != NULL; r = r->next)
            r->commit_ns = dt;
        list->commit_first = wrote;
        return;
    }
    LOG_E("task store transaction failed: rolled back", LOG_STR("error", strerror(-rc)),
          LOG_STR("detail", s->ops->errmsg(s->st)));
    s->ops->rollback(s->st);
    atomic_fetch_add(&s->stats.errors, 1);
    for (struct srv_task_req *r = list; r != NULL; r = r->next) {
        for (unsigned i = 0; r->tasks != NULL && i < r->n; i++)
            srv_task_fini(&r->tasks[i]);
        r->n = 0;
        r->existed = false;
        r->rc = rc;
    }
}

/* ---- the thread's own work ---------------------------------------------------------------------
 */

static void store_leases(struct srv_task_store *s)
{
    int64_t now = srv_task_now_ms();
    unsigned renewed = 0, expired = 0;
    int rc = s->ops->begin(s->st);
    if (rc == 0)
        rc = s->ops->heartbeat(s->st, s->cfg.owner, now + s->cfg.lease_ms, &renewed);
    if (rc == 0)
        rc = s->ops->expire(s->st, now, &expired);
    if (rc == 0)
        rc = s->ops->commit(s->st);
    if (rc != 0) {
        LOG_E("task lease renewal failed", LOG_STR("error", strerror(-rc)),
              LOG_STR("detail", s->ops->errmsg(s->st)));
        s->ops->rollback(s->st);
        atomic_fetch_add(&s->stats.errors, 1);
        return;
    }
    atomic_fetch_add(&s->stats.heartbeats, renewed);
    atomic_fetch_add(&s->stats.expired, expired);
    if (expired > 0)
        LOG_W("task attempts interrupted: their lease expired; retried",
              LOG_UINT("attempts", expired));
}

static void store_purge(struct srv_task_store *s)
{
    int64_t before = srv_task_now_ms() - (int64_t)s->cfg.retention_ms;
    unsigned batch = s->cfg.purge_batch ? s->cfg.purge_batch : SRV_TASK_PURGE_BATCH, n = batch;
    uint64_t total = 0;
    for (unsigned round = 0; n == batch && round < 100; round++) {
        int rc = s->ops->begin(s->st);
        if (rc == 0)
            rc = s->ops->purge(s->st, before, batch, &n);
        if (rc == 0)
            rc = s->ops->commit(s->st);
        if (rc != 0) {
            LOG_E("task purge failed", LOG_STR("error", strerror(-rc)),
                  LOG_STR("detail", s->ops->errmsg(s->st)));
            s->ops->rollback(s->st);
            break;
        }
        total += n;
        atomic_fetch_add(&s->stats.purged, n);
        pthread_mutex_lock(&s->lock);
        bool busy = s->pending != NULL || s->stopping; /* requests first, purge later */
        pthread_mutex_unlock(&s->lock);
        if (busy)
            break;
    }
    if (total > 0)
        LOG_D("tasks purged", LOG_UINT("tasks", total),
              LOG_UINT("retention_ms", s->cfg.retention_ms));
}

static uint64_t store_purge_period_ns(const struct srv_task_store *s)
{
    uint64_t ms = s->cfg.retention_ms / 4;
    ms = ms < 50 ? 50 : ms > 60000 ? 60000 : ms;
    return ms * 1000000u;
}

/* Events reach the loop at most this many at a time; beyond, the oldest wait for the next call
 * (a LOST event is found again by the next poll). */
#define STORE_EVENTS_MAX 4096

/* ops->events' callback (store thread, no lock held): queue the event for the loop. */
static void store_event_add(const struct srv_task_event *ev, void *arg)
{
    struct srv_task_store *s = arg;
    pthread_mutex_lock(&s->lock);
    if (ev->kind == SRV_TASK_EV_DUE) { /* one is as good as many */
        for (size_t i = 0; i < s->nevents; i++)
            if (s->events[i].kind == SRV_TASK_EV_DUE)
                goto out;
    }
    if (s->nevents == s->events_cap && s->events_cap < STORE_EVENTS_MAX) {
        size_t cap = s->events_cap ? 2 * s->events_cap : 16;
        struct srv_task_event *v = realloc(s->events, cap * sizeof(*v));
        if (v != NULL) {
            s->events = v;
            s->events_cap = cap;
        }
    }
    if (s->nevents < s->events_cap)
        s->events[s->nevents++] = *ev;
out:
    pthread_mutex_unlock(&s->lock);
}

static void store_events(struct srv_task_store *s, bool poll)
{
    int rc = s->ops->events(s->st, s->cfg.owner, srv_task_now_ms(), poll, store_event_add, s);
    if (rc != 0 && poll) /* the backend said why; this repeats every poll_ms while it lasts */
        LOG_D("task store events unavailable", LOG_STR("error", strerror(-rc)));
    pthread_mutex_lock(&s->lock);
    bool any = s->nevents > 0;
    pthread_mutex_unlock(&s->lock);
    if (any)
        ev_async_send(s->loop, &s->async);
}

/* The backend's wake-up (any thread). */
static void store_wake(void *arg)
{
    struct srv_task_store *s = arg;
    pthread_mutex_lock(&s->lock);
    s->woken = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void *store_main(void *arg)
{
    struct srv_task_store *s = arg;
    log_thread_name_set("tasks-store");
    uint64_t lease_period = (uint64_t)s->cfg.lease_ms * 1000000u / 3;
    uint64_t next_lease = 0, next_purge = ctx_now_ns() + store_purge_period_ns(s);
    uint64_t poll_period = (uint64_t)(s->cfg.poll_ms ? s->cfg.poll_ms : 500) * 1000000u;
    uint64_t next_poll = s->ops->events != NULL ? ctx_now_ns() + poll_period : UINT64_MAX;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        uint64_t now = ctx_now_ns();
        if (s->pending == NULL && !s->stopping && !s->woken && now < next_lease &&
            now < next_purge && now < next_poll) {
            uint64_t until = next_lease < next_purge ? next_lease : next_purge;
            until = next_poll < until ? next_poll : until;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wake =
                (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + (until - now);
            ts.tv_sec = (time_t)(wake / 1000000000u);
            ts.tv_nsec = (long)(wake % 1000000000u);
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
            continue;
        }
        struct srv_task_req *list = s->pending;
        s->pending = s->pending_tail = NULL;
        bool stopping = s->stopping, woken = s->woken;
        s->woken = false;
        pthread_mutex_unlock(&s->lock);
        if (list != NULL) {
            store_run_batch(s, list);
            pthread_mutex_lock(&s->lock);
            struct srv_task_req *last = list;
            while (last->next != NULL)
                last = last->next;
            if (s->done_tail != NULL)
                s->done_tail->next = list;
            else
                s->done = list;
            s->done_tail = last;
            pthread_mutex_unlock(&s->lock);
            ev_async_send(s->loop, &s->async);
        }
        now = ctx_now_ns();
        if (!stopping && now >= next_lease) {
            store_leases(s);
            next_lease = now + lease_period;
        }
        if (!stopping && now >= next_purge) {
            store_purge(s);
            next_purge = now + store_purge_period_ns(s);
        }
        if (!stopping && s->ops->events != NULL && (woken || now >= next_poll)) {
            store_events(s, now >= next_poll);
            if (now >= next_poll)
                next_poll = now + poll_period;
        }
        pthread_mutex_lock(&s->lock);
        if (stopping && s->pending == NULL)
            break;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the loop side ------------------------------------------------------------------------------
 */

static void store_done_run(struct srv_task_store *s)
{
    pthread_mutex_lock(&s->lock);
    struct srv_task_req *list = s->done;
    s->done = s->done_tail = NULL;
    struct srv_task_event *events = s->events;
    size_t nevents = s->nevents;
    s->events = NULL;
    s->nevents = s->events_cap = 0;
    pthread_mutex_unlock(&s->lock);
    while (list != NULL) {
        struct srv_task_req *r = list;
        list = r->next;
        r->next = NULL;
        if (r->commit_first && s->cfg.on_commit != NULL)
            s->cfg.on_commit(r->commit_ns, s->cfg.on_commit_arg);
        r->done(r);
    }
    for (size_t i = 0; s->cfg.on_event != NULL && i < nevents; i++)
        s->cfg.on_event(&events[i], s->cfg.event_arg);
    free(events);
}

/* Move the loop's batch to the thread's FIFO and wake the thread (loop thread). */
static void store_batch_flush(struct srv_task_store *s)
{
    struct srv_task_req *list = s->batch;
    if (list == NULL)
        return;
    struct srv_task_req *tail = s->batch_tail;
    s->batch = s->batch_tail = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->pending_tail != NULL)
        s->pending_tail->next = list;
    else
        s->pending = list;
    s->pending_tail = tail;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void store_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    store_batch_flush(w->data);
}

static void store_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    store_done_run(w->data);
}

int srv_task_store_start(struct ev_loop *loop, const struct srv_task_store_config *cfg,
                         struct srv_task_store **out, char *err, size_t size)
{
    *out = NULL;
    struct srv_task_store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, size, "out of memory");
        return -ENOMEM;
    }
    s->cfg = *cfg;
    s->ops = cfg->ops;
    s->loop = loop;
    /* The lock first: a backend may call store_wake from its own thread once open returns. */
    int rc = -ENOMEM;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        snprintf(err, size, "out of memory");
        goto err_free;
    }
    /* store_main's timed waits count on CLOCK_MONOTONIC: with the default (realtime) clock
     * every wait would end at once and the thread spin. */
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        snprintf(err, size, "out of memory");
        goto err_mutex;
    }
    int crc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (crc == 0)
        crc = pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (crc != 0) {
        snprintf(err, size, "out of memory");
        goto err_mutex;
    }
    s->cfg.opts.wake = store_wake;
    s->cfg.opts.wake_arg = s;
    rc = s->ops->open(&s->cfg.opts, &s->st, err, size);
    if (rc != 0)
        goto err_cond;
    ev_async_init(&s->async, store_async_cb);
    s->async.data = s;
    ev_async_start(loop, &s->async);
    ev_prepare_init(&s->prepare, store_prepare_cb);
    s->prepare.data = s;
    ev_prepare_start(loop, &s->prepare);
    ev_unref(loop); /* the prepare watcher alone does not keep the loop running */
    rc = -pthread_create(&s->thread, NULL, store_main, s);
    if (rc != 0) {
        snprintf(err, size, "cannot start the task store thread: %s", strerror(-rc));
        ev_ref(loop);
        ev_prepare_stop(loop, &s->prepare);
        ev_async_stop(loop, &s->async);
        goto err_close;
    }
    s->thread_started = true;
    *out = s;
    return 0;

err_close:
    s->ops->close(s->st);
err_cond:
    pthread_cond_destroy(&s->cond);
err_mutex:
    pthread_mutex_destroy(&s->lock);
err_free:
    free(s);
    return rc;
}

void srv_task_store_stop(struct srv_task_store *s)
{
    if (s == NULL)
        return;
    store_batch_flush(s);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    int rc = pthread_join(s->thread, NULL);
    if (rc != 0)
        abort(); /* a thread we started and never detached: broken invariant */
    /* Done callbacks may submit again (a release after a claim): drain until quiet, on this
     * thread, through the backend directly now that its thread is gone. */
    for (unsigned round = 0; round < 1000; round++) {
        store_done_run(s);
        store_batch_flush(s);
        pthread_mutex_lock(&s->lock);
        struct srv_task_req *list = s->pending;
        s->pending = s->pending_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        if (list == NULL)
            break;
        store_run_batch(s, list);
        pthread_mutex_lock(&s->lock);
        s->done = list;
        while (list->next != NULL)
            list = list->next;
        s->done_tail = list;
        pthread_mutex_unlock(&s->lock);
    }
    ev_ref(s->loop);
    ev_prepare_stop(s->loop, &s->prepare);
    ev_async_stop(s->loop, &s->async);
    s->ops->close(s->st);
    free(s->events);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int srv_task_store_submit(struct srv_task_store *s, struct srv_task_req *req)
{
    req->next = NULL;
    req->rc = 0;
    req->tasks = NULL;
    req->n = 0;
    req->existed = false;
    req->commit_ns = 0;
    req->commit_first = false;
    if (s->batch_tail != NULL) /* the thread gets it before the loop waits: store_prepare_cb */
        s->batch_tail->next = req;
    else
        s->batch = req;
    s->batch_tail = req;
    return 0;
}
