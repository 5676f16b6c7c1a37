/* batch.c - POST /v1/batch?mode=all|all_settled|any|race: a JSON array of sub-jobs run in parallel
 * on the worker pool as children of the request's context; the mode decides the answer and the
 * losers are cancelled.
 *
 * Design: the handler validates the mode and the whole body first (server/batch_json.c: nothing
 * runs when one item is bad), refuses a batch larger than the tenant could ever hold, and admits
 * the batch as one request of N jobs (N tokens, N in-flight slots, N queue places: all or
 * nothing; server/admission.h). It then makes a struct bt_batch with one struct bt_item per
 * sub-job: the item embeds its struct pool_job, the kind's state and a child context of the
 * request (same request id, tenant and trace id; its own span id, the request's span as its
 * parent span, and its index, so every log line it causes says which sub-job it is). Each item is
 * submitted with its context current; an item with timeout_ms gets that deadline (never past the
 * request's) and a libev timer that cancels its context when it passes.
 *
 * Deciding: the first item whose outcome decides the mode's answer (srv_batch_settle: the first
 * failure for all, the first success for any, the first to finish for race) claims `decided` with
 * a compare-and-swap and cancels every sibling through its own context (sibling_failed /
 * sibling_won: a queued one never runs, a running one stops at its next check). An item that ran
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
 * Ownership: the batch owns the spec (the parsed JSON, whose strings the states may point at),
 * the states, the item contexts and the admission decision, and frees them all after answering.
 * The request body is not referenced by any state (the items' bodies live in the JSON tree).
 *
 * Threads: everything runs on the loop thread except bt_run (a worker, with the item's context
 * current), which touches its item's state and, to decide, the atomic `decided` and the item
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
#include "server/admission.h"
#include "server/batch.h"
#include "server/jobroute_internal.h"
#include "server/metrics.h"

struct bt_batch;

struct bt_item {
    struct pool_job job; /* borrowed by the pool from submit to done */
    struct bt_batch *b;
    size_t index;
    struct ctx *ctx; /* a child of the request's context (own reference) */
    ev_timer timer;  /* its timeout_ms, when it has one */
    bool timed, submitted;
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
    _Atomic size_t decided; /* the item whose outcome answers, SRV_BATCH_NONE until one does;
                               claimed once, by a worker or the loop (bt_decide) */
    int submit_rc;          /* pool_submit refused an item: the answer */
    bool server_cancelled;  /* the HTTP layer answered or dropped the request already */
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
    size_t d = SRV_BATCH_NONE, none = SRV_BATCH_NONE;
    if (!srv_batch_settle(b->mode, &o, i, &d, why))
        return false;
    return atomic_compare_exchange_strong(&b->decided, &none, i);
}

/* Cancel every item but `except` with `why` (items already done are not affected: their
 * outcome is kept). The contexts are made before the first submit and live as long as the
 * batch, which outlives every running item. */
static void bt_cancel_others(struct bt_batch *b, size_t except, enum ctx_reason why)
{
    for (size_t i = 0; i < b->n; i++) {
        if (i != except && b->items[i].ctx != NULL)
            (void)ctx_cancel(b->items[i].ctx, why); /* -EALREADY: cancelled before */
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
 * this worker (or another) can take a queued sibling that has lost already. */
static int bt_run(struct pool_job *job)
{
    struct bt_item *it = job->data;
    struct bt_batch *b = it->b;
    int rc = srv_jobroute_run_kind(b->spec.items[it->index].kind, b->spec.items[it->index].state);
    enum srv_batch_status s = SRV_BATCH_FAILED;
    if (rc == 0)
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

const char *srv_batch_job_kind(const struct pool_job *job)
{
    if (job->run != bt_run)
        return NULL;
    const struct bt_item *it = job->data;
    return it->b->spec.items[it->index].kind->name;
}

/* ---- finishing (loop thread) ----------------------------------------------------------------- */

static void bt_free(struct bt_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        ctx_unref(b->items[i].ctx);
    srv_batch_spec_fini(&b->spec);
    free(b);
}

/* The access log's queue_ms (the longest wait) and run_ms (first start to last end), and the
 * Server-Timing header with the same. */
static void bt_timing(struct bt_batch *b, bool header)
{
    uint64_t queue = 0, first = 0, last = 0;
    for (size_t i = 0; i < b->n; i++) {
        const struct pool_job *job = &b->items[i].job;
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
    int rc = srv_batch_answer(b->mode, b->outs, b->n, atomic_load(&b->decided),
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
    const struct srv_batch_item *si = &it->b->spec.items[it->index];
    srv_jobroute_times(&it->job, ctx_now_ns(), &o->queue_ns, &o->run_ns);
    o->reason = status == POOL_DONE || status == POOL_FAILED ? CTX_REASON_NONE : it->job.reason;
    if (status == POOL_DONE) {
        srv_batch_outcome_ok(o, si);
        return;
    }
    if (status == POOL_FAILED) {
        char msg[SRV_JOB_ERR_MAX];
        if (it->job.result == -ENOMEM)
            return bt_failed(o, 503, "out_of_memory", "the job ran out of memory");
        snprintf(msg, sizeof(msg), "the %s job failed: %s", si->kind->name,
                 strerror(-it->job.result));
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

/* The item's timeout_ms passed: cancel its context (the pool completes it as cancelled with the
 * deadline reason). */
static void bt_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct bt_item *it = w->data;
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

/* Parse, check and admit. Returns a new batch whose spec holds the states, or NULL after
 * answering. */
static struct bt_batch *bt_prepare(struct srv_jobroute *jr, struct srv_req *req)
{
    enum srv_batch_mode mode;
    if (bt_mode(req, &mode) < 0)
        return NULL;
    struct srv_batch_spec spec;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    size_t len = 0;
    const void *body = srv_req_body(req, &len);
    int rc =
        srv_batch_parse(body, len, srv_http_cfg(srv_req_http(req)), &spec, &code, err, sizeof(err));
    if (rc < 0) {
        (void)srv_req_answer_error(req, rc == -ENOMEM ? 503 : 400, code, err);
        return NULL;
    }
    struct bt_batch *b = NULL;
    if (bt_fits(jr, req, spec.count) < 0)
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
    atomic_init(&b->decided, SRV_BATCH_NONE);
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
    it->job.run = bt_run;
    it->job.done = bt_done;
    it->job.data = it;
    it->job.weight = b->adm.weight;
    it->ctx = ctx_new_child(parent);
    if (it->ctx == NULL)
        return -ENOMEM;
    ctx_span_start(it->ctx);
    ctx_set_index(it->ctx, (unsigned)i);
    if (si->timeout_ms > 0) {
        ctx_set_deadline(it->ctx, ctx_now_ns() + (uint64_t)si->timeout_ms * 1000000u);
        ev_timer_init(&it->timer, bt_timeout_cb, si->timeout_ms / 1000.0, 0.0);
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
    int rc = pool_submit(b->jr->pool, &it->job);
    if (rc == -ECANCELED && atomic_load(&b->decided) != SRV_BATCH_NONE) {
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
    if (it->timed)
        ev_timer_start(b->loop, &it->timer);
    return 0;
}

void srv_batch_handle(struct srv_req *req)
{
    struct srv_jobroute *jr = srv_req_route_arg(req);
    struct bt_batch *b = bt_prepare(jr, req);
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
