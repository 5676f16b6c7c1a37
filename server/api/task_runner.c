/* task_runner.c - the runner of durable tasks: claims due tasks from the store and runs each
 * attempt on the worker pool like a /v1/batch item, then writes its outcome back, fenced.
 *
 * Design: at most `slots` attempts ([tasks] worker_share of the workers) run at once, from
 * their start on the pool to the store write of their outcome. Claimed tasks wait in a short
 * ready queue (at most `prefetch`, leased like running ones) so that a slot that frees starts the
 * next attempt at once instead of waiting for a claim's round trip through the store: with short
 * jobs that round trip, not the work, would set the pace. One claim at a time asks the store for
 * as many due tasks as the queue has room for; the runner claims again when an enqueue arrives,
 * when the queue runs low, and every SRV_TASKS_POLL_S on its timer (delayed tasks and retries
 * become due by the clock). A task cancelled while it waits in the queue is dropped from it.
 * On a store other instances share, the queue is sized to about 100 ms of work at the rate
 * attempts started lately (tr_prefetch_adapt): one task per slot for long attempts, so none
 * waits leased here while another instance idles; up to the unshared bound for short ones, so a
 * claim (a query and a commit) is shared by many tasks instead of by one per slot.
 *
 * An attempt (struct task_attempt) parses its stored spec with the batch item parser against
 * the current snapshot of kinds (so every kind can be a task: built-in, module and exec kinds,
 * each attempt with the kind's definition of the moment it starts; the prepared job holds a
 * reference to that snapshot until it is finished, so a reload never pulls the kind from under
 * it), makes a context (a child of the server's root: the task's tenant, the enqueuing request's
 * id and trace id with a new span, task_id and attempt, the task's timeout_ms, else the kind's,
 * as deadline), passes admission like a request (the tenant's in-flight limit and weight, the
 * deadline judged by the kind's cost; a refusal gives the attempt back) and runs the job through
 * srv_jobroute_run_kind, the one place every route runs a kind. A kind at its max_inflight is
 * not started: its ready attempts wait in the queue (attempts of other kinds go first) until a
 * job of the kind ends or the poll timer comes. An attempt counts in its kind's in-flight jobs
 * from its submit to its done callback, which decides:
 *   ran to completion             complete (the answer stored, at most max_result_bytes)
 *   failed, deadline, an error    fail: retried after a backoff with full jitter (a uniform delay
 *   the kind set (4xx: final)     in [0, backoff_ms * 2^(attempt-1)]) while attempts remain
 *   cancelled by DELETE           nothing to write: the store already says cancelled
 *   stopped by shutdown, refused  release: back to queued without using up the attempt
 * Every write names the attempt; a write the store refuses as stale (the task was cancelled, or
 * its lease expired and another attempt took it) is discarded and counted, never applied. If a
 * write fails (store error), the lease lapses and the task runs again: at least once.
 *
 * Threads: loop thread only; attempts run on workers through the pool, which orders the accesses.
 */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logging/log.h"
#include "server/api/batch.h"
#include "server/api/internal.h"
#include "server/http/http.h"
#include "server/jobs/jobs.h"

#define TR_BACKOFF_CAP_MS 86400000ULL /* no retry waits longer than a day */

struct task_attempt {
    struct srv_api_job aj; /* first: the pool job and the kind's name */
    struct srv_tasks *t;
    struct srv_task task;       /* as claimed (owns its spec and errors) */
    void *json;                 /* the parsed spec, which the item's job points into */
    struct srv_batch_item item; /* its job is prepared once the attempt starts */
    struct ctx *ctx;
    ev_timer deadline;
    bool deadline_armed;
    bool started;   /* left the ready queue (else counted in t->ready) */
    bool slot_held; /* counted in t->running: from its start until its outcome is decided */
    struct srv_adm_decision adm;
    uint64_t cost;             /* the kind's cost of the job: its run-time estimate class */
    unsigned timeout_ms;       /* the attempt's deadline from its start (0 = none) */
    struct srv_task_req sr;    /* the outcome's write */
    struct srv_task_req start; /* "it started": a lost lease now means interrupted */
    bool start_pending;        /* `start` is at the store: free only once it is back */
    bool free_wanted;
    char *error_json;
    const char *outcome;
    struct task_attempt *next, *prev;
};

static void tr_claim_done(struct srv_task_req *sr);
static void tr_pump(struct srv_tasks *t);
static void tr_mark_started(struct task_attempt *a);
static void tr_uncount(struct task_attempt *a);

/* ---- attempts -------------------------------------------------------------------------------- */

static struct task_attempt *tr_attempt_new(struct srv_tasks *t, struct srv_task *claimed)
{
    struct task_attempt *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->t = t;
    a->task = *claimed; /* takes the heap members */
    memset(claimed, 0, sizeof(*claimed));
    a->prev = t->attempts_tail; /* at the tail: the ready queue is served from the head */
    if (a->prev != NULL)
        a->prev->next = a;
    else
        t->attempts = a;
    t->attempts_tail = a;
    t->ready++;
    return a;
}

static void tr_attempt_free(struct task_attempt *a)
{
    struct srv_tasks *t = a->t;
    if (a->start_pending) { /* the store still borrows a->start */
        a->free_wanted = true;
        return;
    }
    if (a->prev != NULL)
        a->prev->next = a->next;
    else
        t->attempts = a->next;
    if (a->next != NULL)
        a->next->prev = a->prev;
    else
        t->attempts_tail = a->prev;
    if (a->deadline_armed)
        ev_timer_stop(t->loop, &a->deadline);
    tr_uncount(a);
    srv_job_fini(&a->item.job); /* a no-op when it was never prepared */
    json_decref(a->json);
    ctx_unref(a->ctx);
    srv_task_req_fini(&a->sr);
    srv_task_req_fini(&a->start);
    srv_task_fini(&a->task);
    if (a->slot_held)
        t->running--;
    if (!a->started)
        t->ready--;
    free(a->error_json);
    free(a);
    srv_tasks_runner_poke(t);
}

/* The attempt's job is done: it no longer counts in its kind's in-flight jobs. Before
 * srv_job_fini, whose reference may be the last one to the kind's snapshot. */
static void tr_uncount(struct task_attempt *a)
{
    if (!a->item.counted)
        return;
    a->item.counted = false;
    atomic_fetch_sub_explicit(&((struct srv_kind *)a->item.kind)->inflight, 1,
                              memory_order_relaxed);
}

static void tr_written(struct srv_task_req *sr)
{
    struct task_attempt *a = sr->data;
    struct srv_tasks *t = a->t;
    struct ctx *prev = ctx_enter(a->ctx);
    if (sr->rc == 0) {
        if (a->started) /* a task given back from the ready queue had no attempt */
            LOG_I("task attempt end", LOG_STR("kind", a->task.kind),
                  LOG_STR("outcome", a->outcome));
        if (sr->op == SRV_TASK_OP_COMPLETE)
            t->stats.succeeded++;
        else if (sr->op == SRV_TASK_OP_FAIL && sr->retry_at == 0)
            t->stats.failed++;
        else if (sr->op == SRV_TASK_OP_FAIL)
            t->stats.retries++;
        else if (sr->op == SRV_TASK_OP_RELEASE)
            t->stats.released++;
        srv_tasks_notify(t, a->task.id);
    } else if (sr->rc == -ESTALE) {
        t->stats.stale++;
        LOG_I("task attempt outcome discarded: the attempt is no longer the task's",
              LOG_STR("outcome", a->outcome));
    } else {
        LOG_E("task attempt outcome not stored: the task runs again once its lease ends",
              LOG_STR("outcome", a->outcome), LOG_STR("error", strerror(-sr->rc)));
    }
    ctx_leave(prev);
    tr_attempt_free(a);
}

static void tr_write(struct task_attempt *a, enum srv_task_op op, const char *outcome)
{
    if (a->slot_held) { /* the write is the store thread's work: the slot is free for the next */
        a->slot_held = false;
        a->t->running--;
    }
    a->outcome = outcome;
    a->sr.op = op;
    a->sr.done = tr_written;
    a->sr.data = a;
    memcpy(a->sr.task.id, a->task.id, sizeof(a->task.id));
    a->sr.task.attempt = a->task.attempt;
    (void)srv_task_store_submit(a->t->store, &a->sr);
}

/* Give the attempt back: queued again, the attempt not used up. */
static void tr_release(struct task_attempt *a, const char *why)
{
    tr_write(a, SRV_TASK_OP_RELEASE, why);
}

/* A uniform delay in [0, backoff_ms * 2^(attempt-1)] (full jitter). */
static uint64_t tr_backoff_ms(unsigned backoff_ms, unsigned attempt)
{
    static uint64_t x; /* xorshift64: the loop thread's only */
    if (x == 0)
        x = ctx_now_ns() | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    unsigned shift = attempt > 1 ? attempt - 1 : 0;
    uint64_t cap = (uint64_t)backoff_ms << (shift > 20 ? 20 : shift);
    cap = cap > TR_BACKOFF_CAP_MS ? TR_BACKOFF_CAP_MS : cap;
    return cap == 0 ? 0 : x % (cap + 1);
}

/* The attempt failed with `code`: retry while attempts remain (unless `final`), else failed. */
static void tr_fail(struct task_attempt *a, const char *code, const char *message, bool final)
{
    int64_t now = srv_task_now_ms();
    char at[SRV_TASK_TIME_MAX];
    srv_task_time_format(now, at);
    json_t *e = json_pack("{s:i,s:s,s:s,s:s}", "attempt", (json_int_t)a->task.attempt, "code", code,
                          "message", message, "at", at);
    a->error_json = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    bool retry = !final && a->task.attempt < a->task.attempts;
    a->sr.retry_at = retry ? now + (int64_t)tr_backoff_ms(a->task.backoff_ms, a->task.attempt) : 0;
    a->sr.error_json = a->error_json != NULL ? a->error_json : "{\"code\":\"out_of_memory\"}";
    tr_write(a, SRV_TASK_OP_FAIL, retry ? "retrying" : "failed");
}

/* The job ran: store its answer, or fail the attempt with the error the kind set (a 4xx is the
 * request's fault: no later attempt would do better). */
static void tr_complete(struct task_attempt *a)
{
    struct srv_job_answer ans;
    srv_job_outcome(&a->item.job, &ans);
    if (ans.code != NULL) {
        tr_fail(a, ans.code, ans.message, ans.status >= 400 && ans.status < 500);
        return;
    }
    size_t max = srv_http_cfg(a->t->h)->task_max_result_bytes;
    char *result = ans.len <= max ? malloc(ans.len + 1) : NULL;
    if (result != NULL) {
        if (ans.len > 0)
            memcpy(result, ans.body, ans.len);
        result[ans.len] = '\0';
    }
    if (ans.owned)
        free((void *)ans.body);
    if (ans.len > max) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the answer has %zu bytes, over [tasks] max_result_bytes %zu",
                 ans.len, max);
        tr_fail(a, "result_too_large", msg, true);
        return;
    }
    if (result == NULL) {
        tr_fail(a, "out_of_memory", "out of memory storing the answer", false);
        return;
    }
    a->sr.task.result = result;
    a->sr.task.result_len = ans.len;
    snprintf(a->sr.task.content_type, sizeof(a->sr.task.content_type), "%s",
             ans.content_type != NULL ? ans.content_type : "application/octet-stream");
    tr_write(a, SRV_TASK_OP_COMPLETE, "succeeded");
}

/* ---- on the pool ------------------------------------------------------------------------------
 */

static struct task_attempt *tr_of(struct pool_job *job)
{
    return (struct task_attempt *)(void *)((char *)job - offsetof(struct task_attempt, aj.job));
}

static int tr_run(struct pool_job *job)
{
    struct task_attempt *a = tr_of(job);
    return srv_jobroute_run_kind(a->item.kind, &a->item.job);
}

static void tr_decide(struct task_attempt *a, struct pool_job *job, enum pool_status status);

static void tr_done(struct pool_job *job, enum pool_status status)
{
    struct task_attempt *a = tr_of(job);
    struct srv_tasks *t = a->t;
    tr_uncount(a);
    tr_decide(a, job, status);
    srv_tasks_runner_poke(t); /* its slot is free: start the next ready attempt */
}

static void tr_decide(struct task_attempt *a, struct pool_job *job, enum pool_status status)
{
    struct srv_tasks *t = a->t;
    if (a->deadline_armed) {
        ev_timer_stop(t->loop, &a->deadline);
        a->deadline_armed = false;
    }
    if (t->jr->adm != NULL)
        srv_adm_release(t->jr->adm, &a->adm, ctx_now_ns());
    srv_jobroute_observe_class(t->jr, a->item.kind->name, a->cost, job, status);
    enum ctx_reason why = status == POOL_CANCELLED_RUNNING || status == POOL_CANCELLED_QUEUED
                              ? job->reason
                              : CTX_REASON_NONE;
    switch (status) {
    case POOL_DONE:
        tr_complete(a);
        return;
    case POOL_FAILED: {
        char msg[128];
        snprintf(msg, sizeof(msg), "the %s job failed: %s", a->item.kind->name,
                 strerror(-job->result));
        tr_fail(a, job->result == -ENOMEM ? "out_of_memory" : "job_failed",
                job->result == -ENOMEM ? "the job ran out of memory" : msg, false);
        return;
    }
    case POOL_CANCELLED_QUEUED:
    case POOL_CANCELLED_RUNNING:
        if (why == CTX_REASON_DEADLINE) {
            char msg[96];
            snprintf(msg, sizeof(msg), "its deadline of %u ms passed", a->timeout_ms);
            tr_fail(a, "deadline_exceeded", msg, false);
            return;
        }
        if (why == CTX_REASON_CANCELED) { /* DELETE: the store already says cancelled */
            struct ctx *prev = ctx_enter(a->ctx);
            LOG_I("task attempt end", LOG_STR("kind", a->task.kind),
                  LOG_STR("outcome", "cancelled"));
            ctx_leave(prev);
            tr_attempt_free(a);
            return;
        }
        tr_release(a, "released");
        return;
    case POOL_REFUSED_SHUTDOWN:
    default:
        tr_release(a, "released");
        return;
    }
}

/* Seconds from now to the attempt's deadline, for its timer. libev counts a timer from its cached
 * loop time, stale by whatever this iteration did before, so that time is brought up to date. */
static double tr_timer_after(struct ev_loop *loop, uint64_t deadline_ns)
{
    ev_now_update(loop);
    uint64_t now = ctx_now_ns();
    return deadline_ns > now ? (double)(deadline_ns - now) / 1e9 : 0.0;
}

/* The attempt's deadline passed: cancel its context (the pool completes the job with the deadline
 * reason). A timer early by the clocks' rounding is armed again for the rest. */
static void tr_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct task_attempt *a = w->data;
    uint64_t deadline = ctx_deadline(a->ctx);
    if (ctx_now_ns() < deadline) {
        ev_timer_set(w, tr_timer_after(loop, deadline), 0.0);
        ev_timer_start(loop, w);
        return;
    }
    a->deadline_armed = false;
    (void)ctx_cancel(a->ctx, CTX_REASON_DEADLINE);
}

/* The attempt's context: the task's tenant, the enqueuing request's ids, a new span, and its
 * deadline (a->timeout_ms from now). */
static int tr_ctx(struct task_attempt *a)
{
    const struct srv_task *k = &a->task;
    a->ctx = ctx_new_child(a->t->root);
    if (a->ctx == NULL)
        return -ENOMEM;
    (void)ctx_set_tenant(a->ctx, k->tenant, strlen(k->tenant));
    if (ctx_request_id_valid(k->request_id, strlen(k->request_id)))
        (void)ctx_set_request_id(a->ctx, k->request_id, strlen(k->request_id));
    struct ctx_trace tr;
    char tp[CTX_TRACEPARENT_LEN + 1];
    snprintf(tp, sizeof(tp), "00-%.32s-0000000000000001-01", k->trace_id);
    if (strlen(k->trace_id) != 32 || ctx_trace_parse(tp, strlen(tp), &tr) != 0)
        ctx_trace_new(&tr);
    ctx_span_new(tr.span_id);
    ctx_set_trace(a->ctx, &tr);
    (void)ctx_set_task(a->ctx, k->id, strlen(k->id), k->attempt);
    if (a->timeout_ms > 0)
        ctx_set_deadline(a->ctx, ctx_now_ns() + (uint64_t)a->timeout_ms * 1000000u);
    return 0;
}

/* Admit the attempt like a request of one job of its kind and submit it, its context current.
 * Returns 0, or a negative errno after giving the attempt back. */
static int tr_submit(struct task_attempt *a)
{
    struct srv_tasks *t = a->t;
    const struct srv_kind *k = a->item.kind;
    bool refused = false;
    a->aj.kind = k->name;
    a->cost = srv_job_cost(&a->item.job);
    int rc = srv_jobroute_admit_ctx(t->jr, a->ctx, 1, k->name, a->cost, &a->adm, &refused);
    if (rc != 0) {
        if (refused) /* start nothing before admission's hint: retrying at once only churns */
            t->hold_until_ns =
                ctx_now_ns() + (a->adm.retry_after_ms ? a->adm.retry_after_ms : 100) * 1000000u;
        tr_release(a, refused ? "refused by admission" : "released");
        return rc;
    }
    a->aj.job.run = tr_run;
    a->aj.job.done = tr_done;
    a->aj.job.weight = a->adm.weight;
    struct ctx *prev = ctx_enter(a->ctx);
    LOG_D("task attempt start", LOG_STR("kind", a->task.kind),
          LOG_UINT("attempts", a->task.attempts));
    rc = pool_submit(t->pool, &a->aj.job);
    ctx_leave(prev);
    if (rc != 0) {
        if (t->jr->adm != NULL)
            srv_adm_release(t->jr->adm, &a->adm, ctx_now_ns());
        tr_release(a, "refused by the pool");
        return rc;
    }
    atomic_fetch_add_explicit(&((struct srv_kind *)k)->inflight, 1, memory_order_relaxed);
    a->item.counted = true;
    return 0;
}

static void tr_start(struct task_attempt *a)
{
    struct srv_tasks *t = a->t;
    a->started = true;
    a->slot_held = true;
    t->ready--;
    t->running++;
    const char *code = "bad_task";
    char err[SRV_BATCH_ERR_MAX];
    int rc = srv_task_spec_item(&a->task, srv_http_cfg(t->h), &a->json, &a->item, &code, err);
    if (rc == -EINVAL) { /* the limits or the kinds changed since it was stored: it never runs */
        tr_fail(a, code, err, true);
        return;
    }
    a->timeout_ms = a->item.timeout_ms; /* the task's own, else the kind's */
    if (rc != 0 || tr_ctx(a) != 0) {
        tr_release(a, "released");
        return;
    }
    if (tr_submit(a) != 0)
        return;
    t->stats.attempts++;
    t->rate_starts++;
    tr_mark_started(a);
    uint64_t deadline = ctx_deadline(a->ctx); /* the task's, or admission's earlier one */
    if (deadline != 0) {
        ev_timer_init(&a->deadline, tr_deadline_cb, tr_timer_after(t->loop, deadline), 0.0);
        a->deadline.data = a;
        ev_timer_start(t->loop, &a->deadline);
        a->deadline_armed = true;
    }
}

static void tr_started(struct srv_task_req *sr)
{
    struct task_attempt *a = sr->data;
    a->start_pending = false; /* -ESTALE: cancelled meanwhile; an error: the lease tells */
    if (a->free_wanted)
        tr_attempt_free(a);
}

/* Record that the attempt started, in the next group commit (the attempt does not wait). */
static void tr_mark_started(struct task_attempt *a)
{
    a->start.op = SRV_TASK_OP_START;
    a->start.done = tr_started;
    a->start.data = a;
    memcpy(a->start.task.id, a->task.id, sizeof(a->task.id));
    a->start.task.attempt = a->task.attempt;
    a->start_pending = true;
    (void)srv_task_store_submit(a->t->store, &a->start);
}

/* ---- claiming ---------------------------------------------------------------------------------
 */

static void tr_claim_done(struct srv_task_req *sr)
{
    struct srv_tasks *t = sr->data;
    t->claiming = false;
    if (sr->rc != 0) {
        /* The store fails (a database down, a full disk): claim again only after a pause, and
         * log once per outage rather than once per try. */
        if (t->claim_failures++ == 0)
            LOG_E("task claim failed; trying again every second until the store answers",
                  LOG_STR("error", strerror(-sr->rc)));
        t->claim_hold_until_ns = ctx_now_ns() + SRV_TASKS_CLAIM_RETRY_NS;
    } else if (t->claim_failures > 0) {
        LOG_I("task claims work again", LOG_UINT("failed_claims", t->claim_failures));
        t->claim_failures = 0;
    }
    bool full = sr->rc == 0 && sr->n == sr->max;
    for (unsigned i = 0; sr->rc == 0 && i < sr->n; i++) {
        struct task_attempt *a = tr_attempt_new(t, &sr->tasks[i]);
        if (a == NULL) {
            LOG_E("task attempt: out of memory; the task runs once its lease ends");
            continue;
        }
        if (t->draining)
            tr_release(a, "released");
    }
    srv_task_req_fini(sr);
    /* Claim again at once only when more may be due: the claim came back full, or something
     * poked meanwhile (an enqueue, a free slot). Otherwise the next enqueue, free slot or poll
     * tick claims: an idle runner claiming back to back kept the store thread and the loop busy
     * (about 70 % of a CPU on an idle server). */
    bool again = full || (sr->rc == 0 && t->claim_again);
    t->claim_again = false;
    if (again)
        srv_tasks_runner_poke(t);
    else
        tr_pump(t);
}

/* True when the kind called `name` is at its max_inflight in `ks` (an unknown kind is not: its
 * attempt fails when it starts). */
static bool tr_kind_full(const struct srv_kinds *ks, const char *name)
{
    const struct srv_kind *k = srv_kinds_find(ks, name, strlen(name));
    return k != NULL && k->max_inflight != 0 &&
           atomic_load_explicit(&k->inflight, memory_order_relaxed) >= k->max_inflight;
}

/* The oldest attempt of the ready queue (the attempts list is oldest first, so this is usually
 * one of its first few) whose kind has room for another job in `ks` (NULL: any attempt), NULL
 * when none. */
static struct task_attempt *tr_next_ready(struct srv_tasks *t, const struct srv_kinds *ks)
{
    for (struct task_attempt *a = t->attempts; a != NULL; a = a->next)
        if (!a->started && a->sr.done == NULL && (ks == NULL || !tr_kind_full(ks, a->task.kind)))
            return a;
    return NULL;
}

/* Start ready attempts while slots are free. Not re-entered: a start that ends at once (a
 * refusal) frees its slot through tr_attempt_free, which pokes again. */
static void tr_pump(struct srv_tasks *t)
{
    if (t->pumping)
        return;
    t->pumping = true;
    struct srv_kinds *ks = srv_kinds_current(); /* the one tr_start finds the kinds in */
    struct task_attempt *a;
    while (!t->draining && t->running < t->slots && ctx_now_ns() >= t->hold_until_ns &&
           (a = tr_next_ready(t, ks)) != NULL)
        tr_start(a);
    srv_kinds_unref(ks);
    t->pumping = false;
}

/* On a shared store: size the ready queue to the work of SRV_TASKS_PREFETCH_AHEAD_NS at the rate
 * attempts started in the last window, between one task per slot (long attempts: none leased
 * here while other instances idle) and prefetch_max (short ones: a claim brings enough to keep
 * the slots busy until the next is back, and the claim's cost is shared by many tasks). */
static void tr_prefetch_adapt(struct srv_tasks *t)
{
    uint64_t now = ctx_now_ns(), dt = now - t->rate_t0_ns;
    if (t->prefetch_max <= t->slots || dt < SRV_TASKS_PREFETCH_AHEAD_NS)
        return;
    uint64_t ahead = (uint64_t)t->rate_starts * SRV_TASKS_PREFETCH_AHEAD_NS / dt;
    t->prefetch = ahead < t->slots          ? t->slots
                  : ahead > t->prefetch_max ? t->prefetch_max
                                            : (unsigned)ahead;
    t->rate_starts = 0;
    t->rate_t0_ns = now;
}

void srv_tasks_runner_poke(struct srv_tasks *t)
{
    if (t->store == NULL || t->draining)
        return;
    tr_pump(t);
    if (t->claiming) {
        t->claim_again = true;
        return;
    }
    if (ctx_now_ns() < t->claim_hold_until_ns)
        return; /* the last claim failed: the poll timer tries again after the pause */
    tr_prefetch_adapt(t);
    unsigned queued = t->ready + t->running;
    unsigned room = t->prefetch + t->slots > queued ? t->prefetch + t->slots - queued : 0;
    /* Claim when the queue is at most half full: fewer, larger claims. */
    if (room == 0 || (t->ready > 0 && room < (t->prefetch + 1) / 2))
        return;
    memset(&t->claim, 0, sizeof(t->claim));
    t->claim.op = SRV_TASK_OP_CLAIM;
    t->claim.max = room;
    t->claim.done = tr_claim_done;
    t->claim.data = t;
    t->claiming = true;
    (void)srv_task_store_submit(t->store, &t->claim);
}

static void tr_poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_tasks_runner_poke(w->data);
}

int srv_tasks_runner_start(struct srv_tasks *t)
{
    struct pool_stats ps;
    pool_stats_get(t->pool, &ps);
    unsigned share = srv_http_cfg(t->h)->task_worker_share;
    t->slots = (unsigned)((uint64_t)ps.workers * share / 100);
    t->slots = t->slots > 0 ? t->slots : 1;
    t->prefetch = t->slots * 4 > SRV_TASKS_PREFETCH_MIN ? t->slots * 4 : SRV_TASKS_PREFETCH_MIN;
    /* A store other instances share: one waiting task per slot to begin with, more as short
     * attempts start faster (tr_prefetch_adapt). Tasks waiting here are leased by an instance that
     * cannot run them yet while the others may idle. */
    t->prefetch_max = t->prefetch;
    if (srv_task_store_shared(t->store))
        t->prefetch = t->slots;
    t->rate_t0_ns = ctx_now_ns();
    ev_timer *poll = calloc(1, sizeof(*poll));
    if (poll == NULL)
        return -ENOMEM;
    ev_timer_init(poll, tr_poll_cb, SRV_TASKS_POLL_S, SRV_TASKS_POLL_S);
    poll->data = t;
    ev_timer_start(t->loop, poll);
    t->poll = poll;
    srv_tasks_runner_poke(t);
    return 0;
}

void srv_tasks_runner_cancel(struct srv_tasks *t, const char *id, unsigned attempt)
{
    struct task_attempt *a = t->attempts;
    while (a != NULL) {
        struct task_attempt *next = a->next;
        /* By attempt, not by task: a late word about attempt 1 must not stop attempt 2. */
        if (a->task.attempt == attempt && strcmp(a->task.id, id) == 0) {
            if (!a->started) /* waiting in the ready queue: it never runs */
                tr_attempt_free(a);
            else if (a->ctx != NULL)
                (void)ctx_cancel(a->ctx, CTX_REASON_CANCELED);
        }
        a = next;
    }
}

void srv_tasks_runner_stop(struct srv_tasks *t)
{
    if (t->poll != NULL)
        ev_timer_stop(t->loop, t->poll);
    struct task_attempt *a; /* the ready queue goes back to the store, attempts unused */
    while ((a = tr_next_ready(t, NULL)) != NULL)
        tr_release(a, "released");
}

void srv_tasks_runner_fini(struct srv_tasks *t)
{
    while (t->attempts != NULL) /* none after a full stop; never leak one either */
        tr_attempt_free(t->attempts);
    free(t->poll);
    t->poll = NULL;
}
