/* jobs.c - POST /v1/jobs/<kind>: parse with the kind, queue on the worker pool, answer from
 * the pool's completion on the loop thread.
 *
 * Design: srv_jobroute_new() (server/api/common.c) adds the pattern route POST /v1/jobs/<kind>,
 * whose arg is the route object. The handler looks the kind up in the current snapshot of the
 * job-kind registry (server/jobs/jobs.h) per request, so a reload adds and removes kinds (an
 * unknown one is 404 not_found, counted under route "other"); a kind's own timeout_ms replaces
 * the default deadline of a request without X-Timeout-Ms, and its max_inflight is checked before
 * admission (503 kind_concurrency_limited with Retry-After). The handler turns the query into
 * the parameter array and prepares the job (srv_job_prepare: the declared parameters, then the
 * kind's parse; 400 bad_param or the kind's own error),
 * admits the job (jr_admit: srv_jobroute_admit_class in common.c decides on the tenant's rate and
 * in-flight limits, the queue capacity and the deadline, the latter by the run-time estimate of
 * the job's kind and size (the kind's cost); a refusal is answered at once with its status,
 * reason, Retry-After and Retry-After-Ms; an admitted job gets its tenant's weight and deadline
 * cap), and submits a struct jr_req: a per-request allocation that embeds the struct srv_api_job
 * (the struct pool_job and the kind's name, first), the kind, the job (struct spindle_job: its
 * parameters, state and answer; it holds a reference to the kind's snapshot) and the admission
 * decision. The pool borrows it until its done callback, which runs exactly once on the loop
 * thread with the request context current, gives the decision back (srv_adm_release), feeds the
 * job's queue and run times to the admission estimators and the metrics, and answers. What the
 * batch route does the same way lives in common.c; this file never calls server/api/batch.c.
 *
 * Metrics (when srv_jobroute_admission_set gave a registry): every answer of these routes is
 * counted by route and status (499, 504 and 503 for requests the HTTP layer cancelled), every
 * refusal by reason and tenant label, every job that ran by kind.
 *
 * Ownership of the body: kinds that use the body (sha256, compress) keep a pointer to the request
 * body in their state, and the request owns those bytes until its answer or release (after which
 * it may be freed at once, even before that call returns). So every path finishes the job
 * (srv_job_fini: the state) BEFORE it answers or releases the request. A finished job's answer
 * bytes are the kind's to say: static ones (noop) are answered with srv_req_answer after the
 * job is finished (its one copy into the head buffer); bytes borrowed from the state are copied
 * into a malloc'd buffer first and handed to srv_req_answer_take (one copy, as before); malloc'd
 * ones the kind gave away go to srv_req_answer_take as they are (no copy).
 *
 * Expect: 100-continue: srv_jobs_continue runs when the head has arrived, before 100 Continue is
 * sent: the kind's max_inflight and admission decide then (by the overall run-time estimate: the
 * job's size comes with its body), a refusal is answered instead of 100 Continue (the body is
 * never sent, the connection closes), and the admission (its token and in-flight slot) is kept
 * with the request (srv_req_hold) until the handler takes it in place of deciding again, or
 * given back when the request ends without it (client gone mid-body, 408, 400).
 *
 * Cancellation: the HTTP layer cancels the request context when the client goes away, at the
 * deadline (after answering 504) and at the end of a drain (after answering 503). The context
 * cancel reaches the pool through its own watch (a queued job never runs, a running one stops at
 * its next check). Our cancel hook only records that the HTTP layer has given up on the request:
 * the job is still borrowed by the pool and its state may still point at the body, so the request
 * is released later, from the done callback. A job cancelled by anything else (pool_stop at the
 * end of a drain) is answered 503 cancelled.
 *
 * Threads: the handler, the cancel hook and the done callback run on the loop thread; jr_run on a
 * worker with the request context current. A jr_req is handed between them by the pool (which
 * orders the accesses); `server_cancelled` and the kinds' in-flight counts are touched by the loop
 * thread only.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "pool/pool.h"
#include "server/admission/admission.h"
#include "server/api/api.h"
#include "server/api/internal.h"
#include "server/http/http.h"
#include "server/http/query.h"
#include "server/http/request.h"
#include "server/http/route.h"
#include "server/jobs/jobs.h"
#include "server/metrics/metrics.h"

#define JR_PARAMS_STACK 16 /* query parameters converted on the stack; more are malloc'd */

/* One job request: from pool_submit until the done callback. */
struct jr_req {
    struct srv_api_job aj; /* first: its pool_job is borrowed by the pool until done */
    struct srv_jobroute *jr;
    const struct srv_kind *kind;   /* borrowed from the snapshot the job holds */
    struct srv_adm_decision adm;   /* admitted: what srv_adm_release gives back */
    bool adm_refused;              /* jr_admit refused it: adm says why */
    bool counted;                  /* counted in the kind's in-flight jobs */
    enum ctx_reason cancel_reason; /* why the HTTP layer gave up (with server_cancelled) */
    uint64_t cost;                 /* the kind's cost of the job: its run-time estimate class */
    struct srv_req *req;           /* valid until our answer/release */
    bool server_cancelled;         /* the HTTP layer answered or dropped it already (loop thread) */
    struct spindle_job job;        /* the kind's job; finished before the request is answered */
};

/* ---- the worker side ------------------------------------------------------------------------- */

/* The pool's run callback. */
static int jr_run(struct pool_job *job)
{
    struct jr_req *r = job->data;
    return srv_jobroute_run_kind(r->kind, &r->job);
}

/* ---- answering (loop thread) ----------------------------------------------------------------- */

/* srv_req_answer_error (requests by route and status are counted by the HTTP layer's observer
 * when the answer is written). */
static void jr_error(struct srv_req *req, int status, const char *code, const char *msg)
{
    (void)srv_req_answer_error(req, status, code, msg);
}

/* Finish the job: the last use of the request body (see the design note). The job's error
 * strings stay readable until r is freed. */
static void jr_job_fini(struct jr_req *r)
{
    /* before srv_job_fini: its reference may be the last one to the kind's snapshot */
    if (r->counted)
        atomic_fetch_sub_explicit(&((struct srv_kind *)r->kind)->inflight, 1, memory_order_relaxed);
    r->counted = false;
    srv_job_fini(&r->job);
}

/* The access log's queue_ms/run_ms and, unless the answer will be discarded, the Server-Timing
 * header "queue;dur=1.234, run;dur=5.678" (ms). A job that never ran (cancelled or refused while
 * queued) queued until now. */
static void jr_timing(struct srv_req *req, const struct pool_job *job, bool header)
{
    uint64_t queue, run;
    srv_jobroute_times(job, ctx_now_ns(), &queue, &run);
    srv_req_set_timing(req, queue, run);
    if (header)
        srv_jobroute_timing_header(req, queue, run);
}

/* Answer the job's outcome (a prepare refusal or a finished run), finishing the job first. */
static void jr_answer_outcome(struct jr_req *r, struct srv_req *req)
{
    struct srv_job_answer ans;
    srv_job_outcome(&r->job, &ans);
    if (ans.code != NULL) {
        jr_job_fini(r);
        jr_error(req, ans.status, ans.code, ans.message);
        return;
    }
    void *copy = ans.owned ? (void *)ans.body : NULL;
    bool borrowed = !ans.owned && !ans.is_static && ans.len > 0;
    if (borrowed) {
        copy = malloc(ans.len);
        if (copy == NULL) {
            jr_job_fini(r);
            jr_error(req, 503, "out_of_memory", "out of memory");
            return;
        }
        memcpy(copy, ans.body, ans.len);
    }
    jr_job_fini(r);
    if (copy != NULL)
        (void)srv_req_answer_take(req, ans.status, ans.content_type, copy, ans.len);
    else
        (void)srv_req_answer(req, ans.status, ans.content_type, ans.body, ans.len);
}

static void jr_answer_failed(struct jr_req *r, struct srv_req *req, int result)
{
    jr_job_fini(r);
    if (result == -ENOMEM) {
        jr_error(req, 503, "out_of_memory", "the job ran out of memory");
        return;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "the %s job failed: %s", r->kind->name, strerror(-result));
    LOG_E("job failed", LOG_STR("kind", r->kind->name), LOG_STR("error", strerror(-result)));
    jr_error(req, 500, "job_failed", msg);
}

/* Give the admission decision back and feed what the job's times say to the estimators and the
 * metrics. */
static void jr_account(struct jr_req *r, const struct pool_job *job, enum pool_status status)
{
    struct srv_jobroute *jr = r->jr;
    if (jr->adm != NULL)
        srv_adm_release(jr->adm, &r->adm, ctx_now_ns());
    srv_jobroute_observe_class(jr, r->kind->name, r->cost, job, status);
}

/* The pool's done callback: loop thread, request context current, exactly once per job. */
static void jr_done(struct pool_job *job, enum pool_status status)
{
    struct jr_req *r = job->data;
    struct srv_req *req = r->req;
    srv_req_on_cancel(req, NULL, NULL);
    jr_timing(req, job, !r->server_cancelled);
    jr_account(r, job, status);
    if (r->server_cancelled) {
        /* Already answered (504/503) or the client is gone (499): only let go. */
        jr_job_fini(r);
        srv_req_release(req);
        goto out;
    }
    switch (status) {
    case POOL_DONE:
        jr_answer_outcome(r, req);
        break;
    case POOL_FAILED:
        jr_answer_failed(r, req, job->result);
        break;
    case POOL_CANCELLED_QUEUED:
    case POOL_CANCELLED_RUNNING: {
        char msg[96];
        jr_job_fini(r);
        if (job->reason == CTX_REASON_DEADLINE) {
            /* The tenant's max_timeout_ms came before the HTTP layer's deadline timer. */
            jr_error(req, 504, "deadline_exceeded", "the request's deadline passed");
            break;
        }
        snprintf(msg, sizeof(msg), "the job was cancelled (%s)", ctx_reason_name(job->reason));
        jr_error(req, 503, "cancelled", msg);
        break;
    }
    case POOL_REFUSED_SHUTDOWN:
    default:
        jr_job_fini(r);
        jr_error(req, 503, "shutting_down", "the server is shutting down");
        break;
    }
out:
    free(r);
}

/* The HTTP layer gave up on the request (client gone, deadline, shutdown): the context is
 * cancelled, so the pool completes the job soon; the release waits for jr_done. */
static void jr_cancel_hook(struct srv_req *req, enum ctx_reason reason, void *arg)
{
    (void)req;
    struct jr_req *r = arg;
    r->server_cancelled = true;
    r->cancel_reason = reason;
}

/* ---- the handler (loop thread) --------------------------------------------------------------- */

/* Admission of one job, judged by the run-time estimate of its kind and size: the decision lives
 * in `r` and is given back in jr_done (or at once when pool_submit refuses). */
static int jr_admit(struct srv_req *req, struct jr_req *r)
{
    r->cost = srv_job_cost(&r->job);
    int rc =
        srv_jobroute_admit_class(r->jr, req, 1, r->kind->name, r->cost, &r->adm, &r->adm_refused);
    r->aj.job.weight = rc == 0 ? r->adm.weight : 1;
    return rc;
}

/* An admission decided before 100 Continue, kept with the request until its handler runs. */
struct jr_early {
    struct srv_jobroute *jr;
    struct srv_adm_decision d;
};

static void jr_early_release(void *obj)
{
    struct jr_early *e = obj;
    srv_adm_release(e->jr->adm, &e->d, ctx_now_ns());
    free(e);
}

bool srv_jobs_continue(struct srv_req *req)
{
    struct srv_jobroute *jr = srv_req_route_arg(req);
    const char *name = srv_req_path(req) + strlen(JR_PATH_PREFIX);
    struct srv_kinds *ks = srv_kinds_current();
    const struct srv_kind *k = ks != NULL ? srv_kinds_find(ks, name, strlen(name)) : NULL;
    bool full = k != NULL && k->max_inflight != 0 &&
                atomic_load_explicit(&k->inflight, memory_order_relaxed) >= k->max_inflight;
    char kind[SRV_CFG_KIND_NAME_MAX + 1];
    snprintf(kind, sizeof(kind), "%s", k != NULL ? k->name : "");
    srv_kinds_unref(ks);
    if (k == NULL || (jr->adm == NULL && !full))
        return true; /* 404 after the body, as always; nothing to decide */
    if (full) {
        srv_jobroute_kind_refused(jr, req, kind);
        return false;
    }
    struct jr_early *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return true; /* decided after the body */
    e->jr = jr;
    bool refused = false;
    int rc = srv_jobroute_admit(jr, req, 1, &e->d, &refused);
    if (refused) {
        struct srv_adm_decision d = e->d;
        free(e);
        srv_jobroute_adm_refused(jr, req, &d);
        return false;
    }
    if (rc < 0) {
        free(e);
        return true;
    }
    srv_req_hold(req, e, jr_early_release);
    return true;
}

/* Admission of the job: the decision kept from before 100 Continue when there is one, else
 * jr_admit's. */
static int jr_admit_or_take(struct srv_req *req, struct jr_req *r)
{
    struct jr_early *e = srv_req_hold_take(req);
    if (e == NULL)
        return jr_admit(req, r);
    r->cost = srv_job_cost(&r->job);
    r->adm = e->d;
    r->aj.job.weight = r->adm.weight;
    free(e);
    return 0;
}

/* Prepare the job from the query and the body. Returns 0, or the negative errno of
 * srv_job_prepare (the job's outcome says what to answer). */
static int jr_prepare(struct jr_req *r, struct srv_req *req)
{
    struct srv_job_param stack[JR_PARAMS_STACK];
    struct srv_job_param *params = stack;
    size_t n = srv_req_query_count(req);
    if (n > JR_PARAMS_STACK) {
        params = calloc(n, sizeof(*params));
        if (params == NULL)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct srv_query_param *q = srv_req_query_at(req, i);
        params[i] = (struct srv_job_param){q->key, q->value, q->key_len, q->value_len};
    }
    size_t body_len = 0;
    const void *body = srv_req_body(req, &body_len);
    int rc = srv_job_prepare(&r->job, r->kind, n > 0 ? params : NULL, n, body, body_len,
                             srv_http_cfg(srv_req_http(req)));
    if (params != stack)
        free(params);
    return rc;
}

/* The kind named by the request's path in the current snapshot, or NULL after answering 404.
 * *ks gets a reference to the snapshot (release it). */
static const struct srv_kind *jr_kind(struct srv_req *req, struct srv_kinds **ks)
{
    const char *name = srv_req_path(req) + strlen(JR_PATH_PREFIX);
    *ks = srv_kinds_current();
    const struct srv_kind *k = *ks != NULL ? srv_kinds_find(*ks, name, strlen(name)) : NULL;
    if (k == NULL) {
        char msg[JR_PATH_MAX + 32];
        snprintf(msg, sizeof(msg), "no route for POST %.*s", JR_PATH_MAX, srv_req_path(req));
        srv_req_route_other(req);
        jr_error(req, 404, "not_found", msg);
    }
    return k;
}

/* Refuse the job at once (its kind at max_inflight, admission, or the pool), its job finished. */
static void jr_refuse(struct jr_req *r, struct srv_req *req, int rc, bool kind_full)
{
    struct srv_jobroute *jr = r->jr;
    struct srv_adm_decision d = r->adm;
    bool adm_refused = r->adm_refused;
    char kind[SRV_CFG_KIND_NAME_MAX + 1];
    snprintf(kind, sizeof(kind), "%s", r->kind->name);
    if (jr->adm != NULL)
        srv_adm_release(jr->adm, &r->adm, ctx_now_ns()); /* no-op unless admitted */
    jr_job_fini(r);
    free(r);
    if (kind_full)
        srv_jobroute_kind_refused(jr, req, kind);
    else if (adm_refused)
        srv_jobroute_adm_refused(jr, req, &d);
    else
        srv_jobroute_submit_refused(jr, req, rc,
                                    d.tenant_label ? d.tenant_label : SRV_ADM_OTHER_LABEL);
}

void srv_jobs_handle(struct srv_req *req)
{
    if (srv_req_streaming(req)) {
        srv_jobs_stream_handle(req); /* jobs_stream.c */
        return;
    }
    struct srv_jobroute *jr = srv_req_route_arg(req);
    struct srv_kinds *ks;
    const struct srv_kind *k = jr_kind(req, &ks);
    struct jr_req *r = k != NULL ? calloc(1, sizeof(*r)) : NULL;
    if (k != NULL && r == NULL)
        jr_error(req, 503, "out_of_memory", "out of memory");
    if (r == NULL) {
        srv_kinds_unref(ks);
        return; /* answered */
    }
    r->jr = jr;
    r->kind = k;
    r->req = req;
    int rc = jr_prepare(r, req); /* the job holds its own reference to the snapshot */
    srv_kinds_unref(ks);
    if (rc < 0) {
        jr_answer_outcome(r, req);
        free(r);
        return;
    }
    if (k->timeout_ms != 0 && !srv_req_timeout_given(req))
        srv_req_deadline_set_ms(req, k->timeout_ms);
    if (k->max_inflight != 0 &&
        atomic_load_explicit(&k->inflight, memory_order_relaxed) >= k->max_inflight) {
        jr_refuse(r, req, -EAGAIN, true);
        return;
    }
    r->aj.kind = k->name;
    r->aj.job.run = jr_run;
    r->aj.job.done = jr_done;
    r->aj.job.data = r;
    rc = jr_admit_or_take(req, r);
    if (rc == 0)
        rc = pool_submit(jr->pool, &r->aj.job); /* the request context is current */
    if (rc < 0) {
        jr_refuse(r, req, rc, false);
        return;
    }
    atomic_fetch_add_explicit(&((struct srv_kind *)k)->inflight, 1, memory_order_relaxed);
    r->counted = true;
    srv_req_on_cancel(req, jr_cancel_hook, r);
}
