/* batch.c - POST /v1/batch?mode=all|all_settled|any|race: a JSON array of sub-jobs run in parallel
 * on the worker pool as children of the request's context; the mode decides the answer and the
 * losers are cancelled.
 *
 * Design: the handler validates the mode and the whole body first (server/api/batch_json.c: nothing
 * runs when one item is bad), refuses a batch larger than the tenant could ever hold, and admits
 * the batch as one request of N jobs (N tokens, N in-flight slots, N queue places: all or
 * nothing; server/admission/admission.h). It then makes a struct bt_batch with one struct bt_item
 * per sub-job: the item embeds its struct pool_job, the kind's state and a child context of the
 * request (same request id, tenant and trace id; its own span id, the request's span as its
 * parent span, and its index, so every log line it causes says which sub-job it is). Each item is
 * submitted with its context current; an item with timeout_ms gets that deadline as an absolute
 * monotonic time (never past the request's), checked three times: by the pool when a worker
 * claims the item, by bt_run when the run returns (a success at or after the deadline is a
 * deadline failure, however late the loop is), and by a libev timer armed from the real time
 * left (the loop's cached time brought up to date first) that cancels the context when it passes.
 *
 * Deciding: the first item whose outcome decides the mode's answer (srv_batch_settle: the first
 * failure for all, the first success for any, the first to finish for race) claims `verdict` with
 * a compare-and-swap and cancels every sibling through its own context (sibling_failed /
 * sibling_won: a queued one never runs, a running one stops at its next check), the ones not
 * started first, so that a worker freed by a stopping loser finds no queued loser; and an item a
 * worker takes after the verdict (between two of those cancels) sees the verdict and does not run
 * its kind. So a queued loser never runs, however the decider is scheduled. An item that ran
 * decides from its worker, right after its run returns, so that no worker can take a queued
 * sibling that has already lost; an item that never ran (cancelled or expired while queued)
 * decides from its done callback on the loop. A sibling cancelled before it could even be queued
 * (the handler is still submitting) is settled as cancelled at once.
 *
 * Completion: each item's done callback (loop thread, the item's context current) turns the pool
 * status into an outcome, logs one "batch job" line and feeds the estimators and the metrics.
 * The answer is written when the last item is done, so it reports what happened to every sub-job
 * and the admission slots are given back only once the pool is really free of them. An item
 * stopped because the request itself was called off (client gone, the request's deadline,
 * shutdown) is "cancelled", not "failed": only its own timeout_ms makes it fail.
 *
 * Cancellation of the whole batch comes from the request's context: the HTTP layer cancels it when
 * the client goes away, at the deadline (after answering 504) and at the end of a drain (after
 * answering 503), and the children follow. Our cancel hook only records that the answer will be
 * discarded; the request is released from the last done callback.
 *
 * Shared: srv_jobroute_new (server/api/common.c) registers this route; admission, the refusal
 * answers, the timings, the estimators' feed and the logged run of a kind come from common.c, as
 * for the job routes, whose file this one never calls. Each item and each body parse embeds a
 * struct srv_api_job first, naming its kind for the pool's overdue callback.
 *
 * Ownership: the batch owns the spec (the parsed JSON, whose strings the states may point at),
 * the states, the item contexts and the admission decision, and frees them all after answering.
 * The request body is not referenced by any state (the items' bodies live in the JSON tree).
 *
 * Threads: everything runs on the loop thread except bt_run (a worker, with the item's context
 * current), which touches its item's state and, to decide, the atomic `verdict` and the item
 * contexts (made before the first submit, freed with the batch; ctx_cancel is thread-safe). The
 * pool orders the hand-offs.
 */
#include <errno.h>
#include <ev.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "pool/pool.h"
#include "server/admission/admission.h"
#include "server/api/batch.h"
#include "server/api/internal.h"
#include "server/http/http.h"
#include "server/http/query.h"
#include "server/http/request.h"
#include "server/metrics/metrics.h"

struct bt_batch;

struct bt_item {
    struct srv_api_job aj; /* first: its pool_job is borrowed by the pool from submit to done */
    struct bt_batch *b;
    size_t index;
    struct ctx *ctx;      /* a child of the request's context (own reference) */
    ev_timer timer;       /* its timeout_ms, when it has one */
    uint64_t deadline_ns; /* its own deadline (ctx_now_ns scale), 0 = none */
    bool timed, submitted;
    _Atomic bool started; /* its run began on a worker (set there, read by a deciding sibling) */
    bool lost_queued; /* a worker took it after a sibling decided: its kind never ran (written by
                         the worker before its run returns, read by the loop in the done) */
    struct srv_batch_outcome *out; /* b->outs[index] */
};

struct bt_batch {
    struct srv_jobroute *jr;
    struct ev_loop *loop;
    struct srv_req *req; /* until the answer or release */
    struct ctx *parent;  /* the request's context (borrowed from req: lives longer than b) */
    enum srv_batch_mode mode;
    struct srv_batch_spec spec;  /* the items' kinds and states */
    struct srv_adm_decision adm; /* N slots, given back when the last item is done */
    size_t n, pending;
    _Atomic uint64_t verdict;       /* 0 until an item decides the answer, then (why << 32) |
                                       (index + 1): claimed once, by a worker or the loop (bt_decide) */
    int submit_rc;                  /* pool_submit refused an item: the answer */
    bool server_cancelled;          /* the HTTP layer answered or dropped the request already */
    struct srv_batch_outcome *outs; /* n, in index order: what the answer reports (tail of b) */
    struct bt_item items[];
};

_Static_assert(_Alignof(struct bt_item) % _Alignof(struct srv_batch_outcome) == 0,
               "the outcomes follow the items in one allocation");

/* ---- deciding (any thread) ------------------------------------------------------------------ */

/* Item i finished as `s`: when that decides the mode's answer and no item decided before, claim
 * the decision and return true with the reason to cancel the others with. */
static bool bt_decide(struct bt_batch *b, size_t i, enum srv_batch_status s, enum ctx_reason *why)
{
    struct srv_batch_outcome o = {.status = s};
    size_t d = SRV_BATCH_NONE;
    uint64_t none = 0;
    if (!srv_batch_settle(b->mode, &o, i, &d, why))
        return false;
    return atomic_compare_exchange_strong(&b->verdict, &none, (uint64_t)*why << 32 | (i + 1));
}

/* The item whose outcome answers, SRV_BATCH_NONE while none has decided. */
static size_t bt_decided(struct bt_batch *b)
{
    uint64_t v = atomic_load(&b->verdict);
    return v != 0 ? (size_t)(v & 0xffffffffu) - 1 : SRV_BATCH_NONE;
}

/* Cancel every item but `except` with `why` (items already done are not affected: their
 * outcome is kept). The items not started yet go first, then the running ones: a running loser
 * that stops frees its worker, and that worker must find no loser still queued to take, or a
 * queued loser would run. An item that a worker claims between the two passes started on a
 * worker that was free already, not on one a cancel freed, and sees its cancel at its first
 * check. The contexts are made before the first submit and live as long as the batch, which
 * outlives every running item. */
static void bt_cancel_others(struct bt_batch *b, size_t except, enum ctx_reason why)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < b->n; i++) {
            struct bt_item *it = &b->items[i];
            if (i == except || it->ctx == NULL || atomic_load(&it->started) != (pass == 1))
                continue;
            (void)ctx_cancel(it->ctx, why); /* -EALREADY: cancelled before */
        }
    }
}

/* True when the item's context was cancelled because the request's was (client gone, the
 * request's deadline, shutdown): the item did not fail, it was called off. */
static bool bt_parent_cancelled(const struct bt_batch *b)
{
    return ctx_cancelled(b->parent);
}

/* ---- the worker side ------------------------------------------------------------------------- */

/* Run the item; when its own outcome decides the batch, cancel the siblings from here, before
 * this worker (or another) can take a queued sibling that has lost already. A success that ends
 * at or after the item's deadline (its own timeout_ms or the request's) is not one: the loop's
 * timer may not have cancelled it yet because the loop was busy, but the deadline is an absolute
 * time, so the item is cancelled here with the deadline reason and fails like one the timer
 * stopped. */
static int bt_run(struct pool_job *job)
{
    struct bt_item *it = job->data;
    struct bt_batch *b = it->b;
    atomic_store(&it->started, true);
    /* A worker took this item after a sibling decided but before the decider's cancel reached
     * it (the decider may be descheduled between two cancels): it lost while queued, so its kind
     * never runs. The decider publishes the verdict before it reads `started`, and this reads the
     * verdict after publishing `started` (both sequentially consistent), so either the item sees
     * the verdict here or the decider sees it started and cancels it as a running loser. */
    uint64_t verdict = atomic_load(&b->verdict);
    if (verdict != 0) {
        (void)ctx_cancel(it->ctx, (enum ctx_reason)(verdict >> 32)); /* -EALREADY: cancelled */
        it->lost_queued = true;
        return -ECANCELED;
    }
    struct srv_batch_item *si = &b->spec.items[it->index];
    int rc = srv_jobroute_run_kind(si->kind, &si->job);
    if (rc == 0 && ctx_expired(it->ctx, ctx_now_ns())) {
        (void)ctx_cancel(it->ctx, CTX_REASON_DEADLINE); /* -EALREADY: another reason came first */
        rc = -ECANCELED;
    }
    enum srv_batch_status s = SRV_BATCH_FAILED;
    if (rc == 0 && si->job.err_status == 0) /* a kind's own error is a failure */
        s = SRV_BATCH_OK;
    else if (rc == -ECANCELED)
        s = ctx_err(it->ctx) == CTX_REASON_DEADLINE && !bt_parent_cancelled(b)
                ? SRV_BATCH_FAILED
                : SRV_BATCH_CANCELLED;
    enum ctx_reason why = CTX_REASON_NONE;
    if (bt_decide(b, it->index, s, &why))
        bt_cancel_others(b, it->index, why);
    return rc;
}

/* ---- finishing (loop thread) ----------------------------------------------------------------- */

static void bt_free(struct bt_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        ctx_unref(b->items[i].ctx);
        free(b->outs[i].owned);
        if (b->spec.items[i].counted)
            atomic_fetch_sub_explicit(&((struct srv_kind *)b->spec.items[i].kind)->inflight, 1,
                                      memory_order_relaxed);
    }
    srv_batch_spec_fini(&b->spec);
    free(b);
}

/* The access log's queue_ms (the longest wait) and run_ms (first start to last end), and the
 * Server-Timing header with the same. */
static void bt_timing(struct bt_batch *b, bool header)
{
    uint64_t queue = 0, first = 0, last = 0;
    for (size_t i = 0; i < b->n; i++) {
        const struct pool_job *job = &b->items[i].aj.job;
        if (!b->items[i].submitted)
            continue;
        queue = b->outs[i].queue_ns > queue ? b->outs[i].queue_ns : queue;
        if (job->t_start_ns != 0 && (first == 0 || job->t_start_ns < first))
            first = job->t_start_ns;
        last = job->t_end_ns > last ? job->t_end_ns : last;
    }
    uint64_t run = first != 0 && last > first ? last - first : 0;
    srv_req_set_timing(b->req, queue, run);
    if (header)
        srv_jobroute_timing_header(b->req, queue, run);
}

static void bt_answer(struct bt_batch *b)
{
    struct srv_req *req = b->req;
    if (b->submit_rc < 0) {
        srv_jobroute_submit_refused(b->jr, req, b->submit_rc,
                                    b->adm.tenant_label ? b->adm.tenant_label
                                                        : SRV_ADM_OTHER_LABEL);
        return;
    }
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    int rc = srv_batch_answer(b->mode, b->outs, b->n, bt_decided(b),
                              ctx_request_id(srv_req_ctx(req)), &status, &body, &len);
    if (rc < 0) {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    (void)srv_req_answer_take(req, status, "application/json", body, len);
}

/* Every item is done: answer (or only let go of a request the HTTP layer gave up on), give the
 * admission slots back, free the batch. */
static void bt_finish(struct bt_batch *b)
{
    srv_req_on_cancel(b->req, NULL, NULL);
    bt_timing(b, !b->server_cancelled);
    if (b->jr->adm != NULL)
        srv_adm_release(b->jr->adm, &b->adm, ctx_now_ns());
    if (b->server_cancelled)
        srv_req_release(b->req);
    else
        bt_answer(b);
    b->req = NULL;
    bt_free(b);
}

/* ---- completion of one item (loop thread, its context current) ------------------------------ */

static void bt_failed(struct srv_batch_outcome *o, int http_status, const char *code,
                      const char *msg)
{
    o->status = SRV_BATCH_FAILED;
    o->http_status = http_status;
    o->code = code;
    snprintf(o->message, sizeof(o->message), "%s", msg);
}

/* The outcome of item `it` from what the pool says. */
static void bt_outcome(struct bt_item *it, enum pool_status status)
{
    struct srv_batch_outcome *o = it->out;
    struct srv_batch_item *si = &it->b->spec.items[it->index];
    srv_jobroute_times(&it->aj.job, ctx_now_ns(), &o->queue_ns, &o->run_ns);
    if (it->lost_queued)
        o->run_ns = 0; /* claimed, but its kind never ran */
    o->reason = status == POOL_DONE || status == POOL_FAILED ? CTX_REASON_NONE : it->aj.job.reason;
    if (status == POOL_DONE) {
        srv_batch_outcome_ok(o, si);
        return;
    }
    if (status == POOL_FAILED) {
        char msg[SRV_JOB_ERR_MAX];
        if (it->aj.job.result == -ENOMEM)
            return bt_failed(o, 503, "out_of_memory", "the job ran out of memory");
        snprintf(msg, sizeof(msg), "the %s job failed: %s", si->kind->name,
                 strerror(-it->aj.job.result));
        return bt_failed(o, 500, "job_failed", msg);
    }
    if (bt_parent_cancelled(it->b)) {
        o->status = SRV_BATCH_CANCELLED; /* the whole request was called off */
        return;
    }
    switch (o->reason) {
    case CTX_REASON_DEADLINE: {
        char msg[64];
        uint64_t own = ctx_deadline(it->ctx), request = ctx_deadline(it->b->parent);
        if (si->timeout_ms == 0 || (request != 0 && own >= request))
            return bt_failed(o, 504, "deadline_exceeded", "the request's deadline passed");
        snprintf(msg, sizeof(msg), "its timeout_ms of %u ms passed", si->timeout_ms);
        return bt_failed(o, 504, "deadline_exceeded", msg);
    }
    case CTX_REASON_SHUTDOWN:
    case CTX_REASON_NONE: /* POOL_REFUSED_SHUTDOWN */
        return bt_failed(o, 503, "shutting_down", "the server is shutting down");
    default:
        o->status = SRV_BATCH_CANCELLED;
        return;
    }
}

/* One info line per finished item, with its context current (its span id and index). */
static void bt_log(const struct bt_item *it)
{
    const struct srv_batch_outcome *o = it->out;
    const char *status = srv_batch_status_name(o->status), *reason = ctx_reason_name(o->reason);
    if (o->status == SRV_BATCH_OK)
        LOG_I("batch job", LOG_STR("kind", o->kind), LOG_STR("status", status),
              LOG_DUR("queue_ms", o->queue_ns), LOG_DUR("run_ms", o->run_ns));
    else if (o->status == SRV_BATCH_CANCELLED)
        LOG_I("batch job", LOG_STR("kind", o->kind), LOG_STR("status", status),
              LOG_STR("reason", reason), LOG_DUR("queue_ms", o->queue_ns),
              LOG_DUR("run_ms", o->run_ns));
    else if (o->reason == CTX_REASON_NONE)
        LOG_I("batch job", LOG_STR("kind", o->kind), LOG_STR("status", status),
              LOG_STR("code", o->code), LOG_DUR("queue_ms", o->queue_ns),
              LOG_DUR("run_ms", o->run_ns));
    else
        LOG_I("batch job", LOG_STR("kind", o->kind), LOG_STR("status", status),
              LOG_STR("code", o->code), LOG_STR("reason", reason), LOG_DUR("queue_ms", o->queue_ns),
              LOG_DUR("run_ms", o->run_ns));
}

static void bt_done(struct pool_job *job, enum pool_status status)
{
    struct bt_item *it = job->data;
    struct bt_batch *b = it->b;
    if (it->timed)
        ev_timer_stop(b->loop, &it->timer);
    bt_outcome(it, status);
    bt_log(it);
    srv_jobroute_observe(b->jr, it->out->kind, job, status);
    if (b->jr->met != NULL)
        srv_met_batch_job(b->jr->met, srv_batch_mode_name(b->mode),
                          srv_batch_status_name(it->out->status));
    /* An item that never ran (cancelled while queued) or whose run did not decide: the loop
     * decides. A no-op when the worker that ran it decided already. */
    enum ctx_reason why = CTX_REASON_NONE;
    if (b->submit_rc == 0 && bt_decide(b, it->index, it->out->status, &why))
        bt_cancel_others(b, it->index, why);
    if (--b->pending == 0)
        bt_finish(b);
}

/* Seconds from now to `deadline_ns`, for an ev_timer. libev counts a timer from its cached loop
 * time, which is stale by whatever this loop iteration did before (parsing a large body, say), so
 * the loop time is brought up to date first: the timer then fires at the absolute deadline, not
 * early by the staleness. */
static double bt_timer_after(struct ev_loop *loop, uint64_t deadline_ns)
{
    ev_now_update(loop);
    uint64_t now = ctx_now_ns();
    return deadline_ns > now ? (double)(deadline_ns - now) / 1e9 : 0.0;
}

/* The item's timeout_ms passed: cancel its context (the pool completes it as cancelled with the
 * deadline reason). Should the timer come early by the clocks' rounding, it is armed again for
 * the rest: the deadline is the absolute time, the timer only a wake-up. */
static void bt_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct bt_item *it = w->data;
    if (ctx_now_ns() < it->deadline_ns) {
        ev_timer_set(w, bt_timer_after(loop, it->deadline_ns), 0.0);
        ev_timer_start(loop, w);
        return;
    }
    (void)ctx_cancel(it->ctx, CTX_REASON_DEADLINE);
}

/* The HTTP layer gave up on the request (client gone, deadline, shutdown): the request's context
 * is cancelled, and with it every item's; the release waits for the last done callback. */
static void bt_cancel_hook(struct srv_req *req, enum ctx_reason reason, void *arg)
{
    (void)req;
    (void)reason;
    struct bt_batch *b = arg;
    b->server_cancelled = true;
}

/* ---- the handler (loop thread) --------------------------------------------------------------- */

/* The mode: `mode` must be the only query parameter. Returns 0, or answers 400 and returns
 * -EINVAL. */
static int bt_mode(struct srv_req *req, enum srv_batch_mode *mode)
{
    const struct srv_query_param *q = srv_req_query_at(req, 0);
    const char *msg = NULL;
    if (q == NULL || srv_req_query_get(req, "mode") == NULL)
        msg = "missing required parameter 'mode' (all, all_settled, any or race)";
    else if (srv_req_query_count(req) > 1)
        msg = "mode is the only parameter of /v1/batch";
    else if (srv_batch_mode_parse(q->value, q->value_len, mode) < 0)
        msg = "mode must be all, all_settled, any or race";
    if (msg == NULL)
        return 0;
    (void)srv_req_answer_error(req, 400, "bad_param", msg);
    return -EINVAL;
}

/* Refuse at once a batch the tenant could never be admitted with. Returns 0, or answers 400
 * batch_too_large and returns -E2BIG. */
static int bt_fits(struct srv_jobroute *jr, struct srv_req *req, size_t n)
{
    const char *tenant = ctx_tenant(srv_req_ctx(req));
    unsigned most = jr->adm != NULL ? srv_adm_max_jobs(jr->adm, tenant) : 0;
    if (most == 0 || n <= most)
        return 0;
    char msg[192];
    snprintf(msg, sizeof(msg),
             "a batch of %zu jobs can never be admitted: tenant %s may have at most %u jobs in "
             "flight, in its burst and in the queue",
             n, tenant, most);
    (void)srv_req_answer_error(req, 400, "batch_too_large", msg);
    return -E2BIG;
}

/* Refuse at once a batch with more jobs of a kind than its max_inflight leaves room for.
 * Returns 0, or answers 503 kind_concurrency_limited and returns -EAGAIN. */
static int bt_kinds_fit(struct srv_jobroute *jr, struct srv_req *req,
                        const struct srv_batch_spec *spec)
{
    for (size_t i = 0; i < spec->count; i++) {
        const struct srv_kind *k = spec->items[i].kind;
        if (k->max_inflight == 0)
            continue;
        unsigned same = 0;
        for (size_t j = 0; j < spec->count; j++)
            same += spec->items[j].kind == k;
        if (atomic_load_explicit(&k->inflight, memory_order_relaxed) + same > k->max_inflight) {
            srv_jobroute_kind_refused(jr, req, k->name);
            return -EAGAIN;
        }
    }
    return 0;
}

/* Check and admit a parsed batch (`spec` taken: freed on error). Returns a new batch that owns
 * the spec, or NULL after answering. */
static struct bt_batch *bt_prepare(struct srv_jobroute *jr, struct srv_req *req,
                                   enum srv_batch_mode mode, struct srv_batch_spec spec)
{
    int rc;
    struct bt_batch *b = NULL;
    if (bt_fits(jr, req, spec.count) < 0 || bt_kinds_fit(jr, req, &spec) < 0)
        goto err_spec;
    /* the items, then the outcomes (aligned: an item's size is a multiple of its alignment,
     * which is at least that of the outcome's 64-bit members) */
    b = calloc(1, sizeof(*b) + spec.count * (sizeof(b->items[0]) + sizeof(b->outs[0])));
    if (b == NULL) {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        goto err_spec;
    }
    bool refused = false;
    rc = srv_jobroute_admit(jr, req, (unsigned)spec.count, &b->adm, &refused);
    if (rc < 0) {
        if (refused)
            srv_jobroute_adm_refused(jr, req, &b->adm);
        else
            (void)srv_req_answer_error(req, 500, "internal_error", "admission failed");
        goto err_batch;
    }
    b->jr = jr;
    b->loop = srv_http_loop(srv_req_http(req));
    b->req = req;
    b->mode = mode;
    b->spec = spec;
    b->n = spec.count;
    b->outs = (struct srv_batch_outcome *)(b->items + b->n);
    b->parent = srv_req_ctx(req);
    atomic_init(&b->verdict, 0);
    return b;

err_batch:
    free(b);
err_spec:
    srv_batch_spec_fini(&spec);
    return NULL;
}

/* Make item i's context and job. Returns 0 or -ENOMEM. */
static int bt_item_init(struct bt_batch *b, size_t i, struct ctx *parent)
{
    struct bt_item *it = &b->items[i];
    const struct srv_batch_item *si = &b->spec.items[i];
    it->b = b;
    it->index = i;
    it->out = &b->outs[i];
    it->out->kind = si->kind->name;
    it->aj.kind = si->kind->name;
    it->aj.job.run = bt_run;
    it->aj.job.done = bt_done;
    it->aj.job.data = it;
    it->aj.job.weight = b->adm.weight;
    it->ctx = ctx_new_child(parent);
    if (it->ctx == NULL)
        return -ENOMEM;
    ctx_span_start(it->ctx);
    ctx_set_index(it->ctx, (unsigned)i);
    atomic_init(&it->started, false);
    if (si->timeout_ms > 0) {
        it->deadline_ns = ctx_now_ns() + (uint64_t)si->timeout_ms * 1000000u;
        ctx_set_deadline(it->ctx, it->deadline_ns);
        ev_timer_init(&it->timer, bt_timeout_cb, 0.0, 0.0);
        it->timer.data = it;
        it->timed = true;
    }
    return 0;
}

/* Submit item i with its context current. An item whose context a deciding sibling cancelled
 * before it could be queued is settled at once as cancelled. */
static int bt_submit(struct bt_batch *b, size_t i)
{
    struct bt_item *it = &b->items[i];
    struct ctx *prev = ctx_enter(it->ctx);
    int rc = pool_submit(b->jr->pool, &it->aj.job);
    if (rc == 0) {
        struct srv_batch_item *si = &b->spec.items[i];
        atomic_fetch_add_explicit(&((struct srv_kind *)si->kind)->inflight, 1,
                                  memory_order_relaxed);
        si->counted = true;
    }
    if (rc == -ECANCELED && bt_decided(b) != SRV_BATCH_NONE) {
        it->out->status = SRV_BATCH_CANCELLED;
        it->out->reason = ctx_err(it->ctx);
        bt_log(it);
        rc = 0;
    }
    ctx_leave(prev);
    if (rc < 0 || it->out->status != SRV_BATCH_PENDING)
        return rc;
    it->submitted = true;
    b->pending++;
    if (it->timed) {
        ev_timer_set(&it->timer, bt_timer_after(b->loop, it->deadline_ns), 0.0);
        ev_timer_start(b->loop, &it->timer);
    }
    return 0;
}

/* Admit a parsed batch and submit its items (`spec` taken). Answers, now or later. */
static void bt_start(struct srv_jobroute *jr, struct srv_req *req, enum srv_batch_mode mode,
                     struct srv_batch_spec spec)
{
    struct bt_batch *b = bt_prepare(jr, req, mode, spec);
    if (b == NULL)
        return; /* answered */
    struct ctx *parent = srv_req_ctx(req);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        rc = bt_item_init(b, i, parent);
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        rc = bt_submit(b, i);
    if (rc < 0) {
        /* The items already queued are cancelled; the refusal is the answer once they are
         * done. */
        b->submit_rc = rc;
        bt_cancel_others(b, SRV_BATCH_NONE, CTX_REASON_CANCELED);
    }
    if (b->pending == 0) {
        bt_finish(b);
        return;
    }
    srv_req_on_cancel(req, bt_cancel_hook, b);
}

/* ---- parsing a large body on a worker -------------------------------------------------------- */

/* A body parse in flight on the pool. The worker reads the body (borrowed from the request, which
 * stays valid until it is answered or released) and its own copy of the configuration (a reload
 * may change the loop's meanwhile); everything else is the loop's. */
struct bt_parse {
    struct srv_api_job aj; /* first: its pool_job is borrowed by the pool from submit to done */
    struct srv_jobroute *jr;
    struct srv_req *req;
    enum srv_batch_mode mode;
    const void *body;
    size_t len;
    struct srv_cfg cfg;
    struct srv_batch_spec spec; /* the worker's result: rc 0 */
    const char *code;           /* rc < 0 */
    int rc;
    bool server_cancelled; /* the HTTP layer answered or dropped the request already */
    char err[SRV_BATCH_ERR_MAX];
};

static int bt_parse_run(struct pool_job *job)
{
    struct bt_parse *p = job->data;
    uint64_t t0 = ctx_now_ns();
    p->rc = srv_batch_parse(p->body, p->len, &p->cfg, &p->spec, &p->code, p->err, sizeof(p->err));
    LOG_D("batch parsed", LOG_UINT("bytes", p->len), LOG_BOOL("ok", p->rc == 0),
          LOG_DUR("parse_ms", ctx_now_ns() - t0));
    return 0; /* a refused body is an answer, not a failed job */
}

/* The parse is done (loop thread, the request's context current): go on as after an inline
 * parse, or answer why not. */
static void bt_parse_done(struct pool_job *job, enum pool_status status)
{
    struct bt_parse *p = job->data;
    struct srv_req *req = p->req;
    srv_req_on_cancel(req, NULL, NULL);
    if (p->server_cancelled) {
        srv_batch_spec_fini(&p->spec);
        srv_req_release(req);
    } else if (status == POOL_DONE && p->rc == 0) {
        bt_start(p->jr, req, p->mode, p->spec); /* takes the spec */
    } else if (status == POOL_DONE) {
        (void)srv_req_answer_error(req, p->rc == -ENOMEM ? 503 : 400, p->code, p->err);
    } else if (status == POOL_REFUSED_SHUTDOWN || job->reason == CTX_REASON_SHUTDOWN) {
        srv_batch_spec_fini(&p->spec);
        (void)srv_req_answer_error(req, 503, "shutting_down", "the server is shutting down");
    } else if (job->reason == CTX_REASON_DEADLINE) {
        srv_batch_spec_fini(&p->spec);
        (void)srv_req_answer_error(req, 504, "deadline_exceeded", "the request's deadline passed");
    } else {
        srv_batch_spec_fini(&p->spec);
        (void)srv_req_answer_error(req, 503, "cancelled", "the request was cancelled");
    }
    free(p);
}

static void bt_parse_cancel_hook(struct srv_req *req, enum ctx_reason reason, void *arg)
{
    (void)req;
    (void)reason;
    struct bt_parse *p = arg;
    p->server_cancelled = true;
}

/* Parse the body on a worker, with the request's context current (it is queued under the
 * request's tenant and never runs when the request is called off while it waits). Answers, now
 * or later. */
static void bt_parse_submit(struct srv_jobroute *jr, struct srv_req *req, enum srv_batch_mode mode,
                            const void *body, size_t len)
{
    struct bt_parse *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    p->jr = jr;
    p->req = req;
    p->mode = mode;
    p->body = body;
    p->len = len;
    p->cfg = *srv_http_cfg(srv_req_http(req));
    p->aj.kind = "batch_parse";
    p->aj.job.run = bt_parse_run;
    p->aj.job.done = bt_parse_done;
    p->aj.job.data = p;
    int rc = pool_submit(jr->pool, &p->aj.job); /* the request's context is current */
    if (rc < 0) {
        free(p);
        srv_jobroute_submit_refused(jr, req, rc, SRV_ADM_OTHER_LABEL);
        return;
    }
    srv_req_on_cancel(req, bt_parse_cancel_hook, p);
}

void srv_batch_handle(struct srv_req *req)
{
    struct srv_jobroute *jr = srv_req_route_arg(req);
    enum srv_batch_mode mode;
    if (bt_mode(req, &mode) < 0)
        return; /* answered */
    size_t len = 0;
    const void *body = srv_req_body(req, &len);
    if (len > SRV_BATCH_INLINE_PARSE_MAX) {
        bt_parse_submit(jr, req, mode, body, len);
        return;
    }
    struct srv_batch_spec spec;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    int rc =
        srv_batch_parse(body, len, srv_http_cfg(srv_req_http(req)), &spec, &code, err, sizeof(err));
    if (rc < 0) {
        (void)srv_req_answer_error(req, rc == -ENOMEM ? 503 : 400, code, err);
        return;
    }
    bt_start(jr, req, mode, spec);
}
