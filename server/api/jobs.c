/* jobs.c - POST /v1/jobs/<kind>: parse with the kind, queue on the worker pool, answer from
 * the pool's completion on the loop thread.
 *
 * Design: srv_jobroute_new() (server/api/common.c) adds one route per kind of the job-kind
 * registry, whose arg is a struct jr_route (the kind and the route object). The handler turns the
 * query into the kind's parameter array, calls the kind's parse (400 bad_param with its message),
 * admits the job (jr_admit: srv_jobroute_admit_class in common.c decides on the tenant's rate and
 * in-flight limits, the queue capacity and the deadline, the latter by the run-time estimate of
 * the job's kind and size (the kind's cost); a refusal is answered at once with its status,
 * reason, Retry-After and Retry-After-Ms; an admitted job gets its tenant's weight and deadline
 * cap), and submits a struct jr_req: a per-request allocation that embeds the struct srv_api_job
 * (the struct pool_job and the kind's name, first), the kind, the kind's state and the admission
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
 * it may be freed at once, even before that call returns). So every path frees the kind's state
 * BEFORE it answers or releases the request. A finished job's answer bytes belong to the state
 * too: they are copied into a malloc'd buffer, the state is freed, and the copy is handed to
 * srv_req_answer_take() (one copy, the same as srv_req_answer would make into the head buffer).
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
 * orders the accesses); `server_cancelled` is touched by the loop thread only. The route table is
 * immutable after srv_jobroute_new.
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
    const struct jr_route *route;
    const struct srv_job_kind *kind;
    struct srv_adm_decision adm;   /* admitted: what srv_adm_release gives back */
    bool adm_refused;              /* jr_admit refused it: adm says why */
    enum ctx_reason cancel_reason; /* why the HTTP layer gave up (with server_cancelled) */
    void *state;                   /* the kind's, owned; freed before the request is answered */
    uint64_t cost;                 /* the kind's cost of the state: its run-time estimate class */
    struct srv_req *req;           /* valid until our answer/release */
    bool server_cancelled;         /* the HTTP layer answered or dropped it already (loop thread) */
};

/* ---- the worker side ------------------------------------------------------------------------- */

/* The pool's run callback. */
static int jr_run(struct pool_job *job)
{
    struct jr_req *r = job->data;
    return srv_jobroute_run_kind(r->kind, r->state);
}

/* ---- answering (loop thread) ----------------------------------------------------------------- */

/* Free the kind's state: the last use of the request body (see the design note). */
static void jr_state_free(struct jr_req *r)
{
    r->kind->free(r->state);
    r->state = NULL;
}

/* srv_req_answer_error (requests by route and status are counted by the HTTP layer's observer
 * when the answer is written). */
static void jr_error(struct srv_req *req, int status, const char *code, const char *msg)
{
    (void)srv_req_answer_error(req, status, code, msg);
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

/* POOL_DONE: copy the kind's answer out of the state, free the state, answer the copy. */
static void jr_answer_done(struct jr_req *r, struct srv_req *req)
{
    struct srv_job_answer ans;
    r->kind->answer(r->state, &ans);
    char *copy = NULL;
    if (ans.len > 0) {
        copy = malloc(ans.len);
        if (copy == NULL) {
            jr_state_free(r);
            jr_error(req, 503, "out_of_memory", "out of memory");
            return;
        }
        memcpy(copy, ans.body, ans.len);
    }
    int status = ans.status;
    const char *ctype = ans.content_type; /* static */
    size_t len = ans.len;
    jr_state_free(r);
    (void)srv_req_answer_take(req, status, ctype, copy, len);
}

static void jr_answer_failed(struct jr_req *r, struct srv_req *req, int result)
{
    jr_state_free(r);
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
    struct srv_jobroute *jr = r->route->jr;
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
        jr_state_free(r);
        srv_req_release(req);
        goto out;
    }
    switch (status) {
    case POOL_DONE:
        jr_answer_done(r, req);
        break;
    case POOL_FAILED:
        jr_answer_failed(r, req, job->result);
        break;
    case POOL_CANCELLED_QUEUED:
    case POOL_CANCELLED_RUNNING: {
        char msg[96];
        jr_state_free(r);
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
        jr_state_free(r);
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
static int jr_admit(const struct jr_route *route, struct srv_req *req, struct jr_req *r)
{
    r->cost = r->kind->cost != NULL ? r->kind->cost(r->state) : 0;
    int rc = srv_jobroute_admit_class(route->jr, req, 1, r->kind->name, r->cost, &r->adm,
                                      &r->adm_refused);
    r->aj.job.weight = rc == 0 ? r->adm.weight : 1;
    return rc;
}

/* Parse the query and body with the kind. Returns 0 and the state, or answers (400/503) and
 * returns the negative errno. */
static int jr_parse(const struct jr_route *route, struct srv_req *req, void **state)
{
    const struct srv_job_kind *kind = route->kind;
    struct srv_job_param stack[JR_PARAMS_STACK];
    struct srv_job_param *params = stack;
    size_t n = srv_req_query_count(req);
    if (n > JR_PARAMS_STACK) {
        params = calloc(n, sizeof(*params));
        if (params == NULL) {
            jr_error(req, 503, "out_of_memory", "out of memory");
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct srv_query_param *q = srv_req_query_at(req, i);
        params[i] = (struct srv_job_param){q->key, q->value, q->key_len, q->value_len};
    }
    size_t body_len = 0;
    const void *body = srv_req_body(req, &body_len);
    char err[SRV_JOB_ERR_MAX];
    int rc = kind->parse(n > 0 ? params : NULL, n, body, body_len, srv_http_cfg(srv_req_http(req)),
                         state, err, sizeof(err));
    if (params != stack)
        free(params);
    if (rc == -ENOMEM)
        jr_error(req, 503, "out_of_memory", err);
    else if (rc < 0)
        jr_error(req, 400, "bad_param", err);
    return rc;
}

void srv_jobs_handle(struct srv_req *req)
{
    const struct jr_route *route = srv_req_route_arg(req);
    void *state = NULL;
    if (srv_req_streaming(req)) {
        srv_jobs_stream_handle(req); /* jobs_stream.c */
        return;
    }
    if (jr_parse(route, req, &state) < 0)
        return; /* answered */
    struct jr_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        route->kind->free(state);
        jr_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    r->route = route;
    r->kind = route->kind;
    r->state = state;
    r->req = req;
    r->aj.kind = route->kind->name;
    r->aj.job.run = jr_run;
    r->aj.job.done = jr_done;
    r->aj.job.data = r;
    int rc = jr_admit(route, req, r);
    if (rc == 0)
        rc = pool_submit(route->jr->pool, &r->aj.job); /* the request context is current */
    if (rc < 0) {
        struct srv_adm_decision d = r->adm;
        bool adm_refused = r->adm_refused;
        if (route->jr->adm != NULL)
            srv_adm_release(route->jr->adm, &r->adm, ctx_now_ns()); /* no-op unless admitted */
        jr_state_free(r);
        free(r);
        if (adm_refused)
            srv_jobroute_adm_refused(route->jr, req, &d);
        else
            srv_jobroute_submit_refused(route->jr, req, rc,
                                        d.tenant_label ? d.tenant_label : SRV_ADM_OTHER_LABEL);
        return;
    }
    srv_req_on_cancel(req, jr_cancel_hook, r);
}
