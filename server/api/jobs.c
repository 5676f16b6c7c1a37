/* jobs.c - POST /v1/jobs/<kind>: parse with the kind, queue on the worker pool, answer from
 * the pool's completion on the loop thread.
 *
 * Design: srv_jobroute_new() walks the job-kind registry and adds one route per kind, whose arg is
 * a struct jr_route (the kind and the pool). The handler turns the query into the kind's parameter
 * array, calls the kind's parse (400 bad_param with its message), admits the job (jr_admit:
 * server/admission/admission.h decides on the tenant's rate and in-flight limits, the queue
 * capacity and the deadline, the latter by the run-time estimate of the job's kind and size (the
 * kind's cost); a refusal is answered at once with its status, reason, Retry-After and
 * Retry-After-Ms; an admitted job gets its tenant's weight and deadline cap), and submits a struct
 * jr_req: a per-request allocation that embeds the struct pool_job, the kind, the kind's state and
 * the admission decision. The pool borrows it until its done callback, which runs exactly once on
 * the loop thread with the request context current, gives the decision back (srv_adm_release),
 * feeds the job's queue and run times to the admission estimators and the metrics, and answers.
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

#define JR_PATH_PREFIX    "/v1/jobs/"
#define JR_PARAMS_STACK   16   /* query parameters converted on the stack; more are malloc'd */
#define JR_RETRY_AFTER_MS 1000 /* a full pool queue admission did not see coming */

/* One job request: from pool_submit until the done callback. */
struct jr_req {
    struct pool_job job; /* borrowed by the pool until done */
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

static const char *jr_result_name(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case -ECANCELED:
        return "cancelled";
    case -ENOMEM:
        return "out_of_memory";
    default:
        return "failed";
    }
}

int srv_jobroute_run_kind(const struct srv_job_kind *kind, void *state)
{
    if (!log_enabled(LOG_LEVEL_DEBUG))
        return kind->run(state);
    LOG_D("job start", LOG_STR("kind", kind->name));
    uint64_t t0 = ctx_now_ns();
    int rc = kind->run(state);
    LOG_D("job end", LOG_STR("kind", kind->name), LOG_STR("result", jr_result_name(rc)),
          LOG_DUR("run_ms", ctx_now_ns() - t0));
    return rc;
}

/* The pool's run callback. */
static int jr_run(struct pool_job *job)
{
    struct jr_req *r = job->data;
    return srv_jobroute_run_kind(r->kind, r->state);
}

void srv_jobroute_overdue(struct pool_job *job, uint64_t overdue_ns, void *arg)
{
    (void)arg;
    const struct ctx *c = ctx_current();
    const char *reason = ctx_reason_name(c != NULL ? ctx_err(c) : CTX_REASON_NONE);
    const char *kind = job->run == jr_run ? ((const struct jr_req *)job->data)->kind->name
                                          : srv_batch_job_kind(job);
    if (kind != NULL) {
        LOG_W("job overdue after cancel", LOG_STR("kind", kind), LOG_STR("reason", reason),
              LOG_DUR("overdue_ms", overdue_ns));
    } else {
        LOG_W("job overdue after cancel", LOG_STR("reason", reason),
              LOG_DUR("overdue_ms", overdue_ns));
    }
}

void srv_jobroute_pool_config(const struct srv_cfg *cfg, struct pool_config *out)
{
    memset(out, 0, sizeof(*out));
    out->workers = cfg->workers;
    out->queue_capacity = cfg->queue_capacity;
    out->cancel_grace_ns = (uint64_t)cfg->cancel_grace_ms * 1000000u;
    out->overdue = srv_jobroute_overdue;
    out->overdue_arg = NULL;
}

/* ---- answering (loop thread) ----------------------------------------------------------------- */

/* Free the kind's state: the last use of the request body (see the design note). */
static void jr_state_free(struct jr_req *r)
{
    r->kind->free(r->state);
    r->state = NULL;
}

/* The access log's queue_ms/run_ms and, unless the answer will be discarded, the Server-Timing
 * header "queue;dur=1.234, run;dur=5.678" (ms). A job that never ran (cancelled or refused while
 * queued) queued until now. */
/* srv_req_answer_error (requests by route and status are counted by the HTTP layer's observer
 * when the answer is written). */
static void jr_error(struct srv_req *req, int status, const char *code, const char *msg)
{
    (void)srv_req_answer_error(req, status, code, msg);
}

/* The job's queue wait and run time as of `now`. A job that never ran (cancelled or refused while
 * queued) queued until now and ran 0. */
void srv_jobroute_times(const struct pool_job *job, uint64_t now, uint64_t *queue, uint64_t *run)
{
    uint64_t started = job->t_start_ns != 0 ? job->t_start_ns : now;
    *queue = started > job->t_submit_ns ? started - job->t_submit_ns : 0;
    *run = job->t_end_ns > job->t_start_ns && job->t_start_ns != 0 ? job->t_end_ns - job->t_start_ns
                                                                   : 0;
}

static void jr_timing(struct srv_req *req, const struct pool_job *job, bool header)
{
    uint64_t queue, run;
    srv_jobroute_times(job, ctx_now_ns(), &queue, &run);
    srv_req_set_timing(req, queue, run);
    if (header)
        srv_jobroute_timing_header(req, queue, run);
}

void srv_jobroute_timing_header(struct srv_req *req, uint64_t queue, uint64_t run)
{
    char v[96];
    uint64_t q_us = queue / 1000u, r_us = run / 1000u;
    snprintf(v, sizeof(v), "queue;dur=%llu.%03llu, run;dur=%llu.%03llu",
             (unsigned long long)(q_us / 1000u), (unsigned long long)(q_us % 1000u),
             (unsigned long long)(r_us / 1000u), (unsigned long long)(r_us % 1000u));
    (void)srv_req_header_add(req, "Server-Timing", v); /* -ENOMEM: answer without it */
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
 * metrics (only for a job that started: a job that never ran says nothing about service time). */
/* srv_jobroute_observe, also feeding the run-time estimate of the job's class when `classed`
 * (the kind and cost are known). */
static void jr_observe(struct srv_jobroute *jr, const char *kind, bool classed, uint64_t cost,
                       const struct pool_job *job)
{
    if (job->t_start_ns == 0)
        return;
    uint64_t now = ctx_now_ns(), queue, run;
    srv_jobroute_times(job, now, &queue, &run);
    if (jr->adm != NULL)
        srv_adm_observe_job(jr->adm, classed ? kind : NULL, cost, now, queue, run);
    if (jr->met != NULL)
        srv_met_job_times(jr->met, kind, queue, run);
}

static void jr_account(struct jr_req *r, const struct pool_job *job)
{
    struct srv_jobroute *jr = r->route->jr;
    if (jr->adm != NULL)
        srv_adm_release(jr->adm, &r->adm, ctx_now_ns());
    jr_observe(jr, r->kind->name, true, r->cost, job);
}

void srv_jobroute_observe(struct srv_jobroute *jr, const char *kind, const struct pool_job *job)
{
    jr_observe(jr, kind, false, 0, job); /* a batch's sub-job: its size is not known here */
}

/* The pool's done callback: loop thread, request context current, exactly once per job. */
static void jr_done(struct pool_job *job, enum pool_status status)
{
    struct jr_req *r = job->data;
    struct srv_req *req = r->req;
    srv_req_on_cancel(req, NULL, NULL);
    jr_timing(req, job, !r->server_cancelled);
    jr_account(r, job);
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

/* Admission (server/admission/admission.h): tenant rate, tenant in flight, queue capacity,
 * deadline. The decision lives in `r` and is given back in jr_done (or at once when pool_submit
 * refuses). Returns 0 after setting the job's fair-queue weight and, when the tenant's
 * max_timeout_ms is shorter, the context's deadline; -EAGAIN or -ENOMEM with r->adm_refused set
 * when admission refused (r->adm says why); -EINVAL for a request admission cannot judge. The
 * caller answers once the state is freed (the state may point at the body). */
static int jr_admit_class(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                          const char *kind, uint64_t cost, struct srv_adm_decision *d,
                          bool *refused)
{
    *refused = false;
    memset(d, 0, sizeof(*d));
    d->weight = 1;
    if (jr->adm == NULL)
        return 0;
    struct ctx *c = srv_req_ctx(req);
    struct pool_stats ps;
    pool_stats_get(jr->pool, &ps);
    struct srv_adm_req ar = {.tenant = ctx_tenant(c),
                             .now_ns = ctx_now_ns(),
                             .deadline_ns = ctx_deadline(c),
                             .queue_depth = (size_t)ps.queued,
                             .tenant_queue_depth = pool_tenant_queued(jr->pool, ctx_tenant(c)),
                             .active_tenants = pool_tenants_active(jr->pool),
                             .jobs = jobs,
                             .kind = kind,
                             .cost = cost,
                             .idle_workers =
                                 ps.workers > ps.running ? (size_t)(ps.workers - ps.running) : 0};
    int rc = srv_adm_decide(jr->adm, &ar, d);
    if (rc == -EAGAIN || rc == -ENOMEM)
        *refused = true;
    if (rc != 0)
        return rc;
    if (d->deadline_ns != 0 && (ar.deadline_ns == 0 || d->deadline_ns < ar.deadline_ns))
        ctx_set_deadline(c, d->deadline_ns);
    return 0;
}

int srv_jobroute_admit(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                       struct srv_adm_decision *d, bool *refused)
{
    return jr_admit_class(jr, req, jobs, NULL, 0, d, refused);
}

/* Admission of one job, judged by the run-time estimate of its kind and size: the decision lives
 * in `r` and is given back in jr_done (or at once when pool_submit refuses). */
static int jr_admit(const struct jr_route *route, struct srv_req *req, struct jr_req *r)
{
    r->cost = r->kind->cost != NULL ? r->kind->cost(r->state) : 0;
    int rc = jr_admit_class(route->jr, req, 1, r->kind->name, r->cost, &r->adm, &r->adm_refused);
    r->job.weight = rc == 0 ? r->adm.weight : 1;
    return rc;
}

/* The message of an admission refusal (the code is the reason's name). */
static void jr_adm_message(const struct srv_adm_decision *d, const char *tenant, char *msg,
                           size_t size)
{
    switch (d->reason) {
    case SRV_ADM_TENANT_RATE_LIMITED:
        snprintf(msg, size, "tenant %s is over its request rate", tenant);
        break;
    case SRV_ADM_TENANT_CONCURRENCY_LIMITED:
        snprintf(msg, size, "tenant %s has its maximum of requests in flight", tenant);
        break;
    case SRV_ADM_QUEUE_FULL:
        snprintf(msg, size, "the job queue is full");
        break;
    case SRV_ADM_DEADLINE_UNMEETABLE:
        snprintf(msg, size, "the expected queue wait exceeds the request's deadline");
        break;
    case SRV_ADM_TOO_MANY_TENANTS:
        snprintf(msg, size, "too many tenants are active");
        break;
    default:
        snprintf(msg, size, "out of memory");
        break;
    }
}

/* Retry-After in whole seconds (RFC 9110: rounded up, at least 1) and the precise hint in
 * Retry-After-Ms (at least 1). */
static void jr_retry_headers(struct srv_req *req, uint64_t ms)
{
    char v[24];
    ms = ms > 0 ? ms : 1;
    snprintf(v, sizeof(v), "%llu", (unsigned long long)((ms + 999) / 1000));
    (void)srv_req_header_add(req, "Retry-After", v); /* -ENOMEM: answer without it */
    snprintf(v, sizeof(v), "%llu", (unsigned long long)ms);
    (void)srv_req_header_add(req, "Retry-After-Ms", v);
}

/* Answer an admission refusal at once: its status, reason, Retry-After and Retry-After-Ms. */
void srv_jobroute_adm_refused(struct srv_jobroute *jr, struct srv_req *req,
                              const struct srv_adm_decision *d)
{
    char msg[160];
    const char *reason = srv_adm_reason_name(d->reason);
    jr_retry_headers(req, d->retry_after_ms);
    jr_adm_message(d, ctx_tenant(srv_req_ctx(req)), msg, sizeof(msg));
    if (jr->met != NULL)
        srv_met_refusal(jr->met, reason, d->tenant_label);
    jr_error(req, d->status, reason, msg);
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

/* Answer a job refused by pool_submit (`rc`), after its state was freed. `label` is the
 * tenant's refusal label. The pool's own full queue is a race admission lost (the queue filled
 * between the two checks): answered as admission would. */
void srv_jobroute_submit_refused(struct srv_jobroute *jr, struct srv_req *req, int rc,
                                 const char *label)
{
    switch (rc) {
    case -EAGAIN:
        jr_retry_headers(req, JR_RETRY_AFTER_MS);
        if (jr->met != NULL)
            srv_met_refusal(jr->met, "queue_full", label);
        jr_error(req, 503, "queue_full", "the job queue is full");
        break;
    case -ESHUTDOWN:
        jr_error(req, 503, "shutting_down", "the server is shutting down");
        break;
    case -ENOMEM:
        jr_error(req, 503, "out_of_memory", "out of memory");
        break;
    case -ECANCELED:
        /* The context was cancelled before the job could be queued: when the HTTP layer did
         * it, this answer is discarded. */
        jr_error(req, 503, "cancelled", "the request was cancelled");
        break;
    default:
        LOG_E("job submit failed", LOG_STR("error", strerror(-rc)));
        jr_error(req, 500, "internal_error", "the job could not be queued");
        break;
    }
}

static void jr_handle(struct srv_req *req)
{
    const struct jr_route *route = srv_req_route_arg(req);
    void *state = NULL;
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
    r->job.run = jr_run;
    r->job.done = jr_done;
    r->job.data = r;
    int rc = jr_admit(route, req, r);
    if (rc == 0)
        rc = pool_submit(route->jr->pool, &r->job); /* the request context is current */
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

/* ---- routes ---------------------------------------------------------------------------------- */

struct srv_jobroute *srv_jobroute_new(struct srv_http *h, struct pool *pool)
{
    size_t n = srv_job_kind_count();
    struct srv_jobroute *jr = calloc(1, sizeof(*jr) + n * sizeof(jr->routes[0]));
    if (jr == NULL) {
        LOG_E("job routes", LOG_STR("error", strerror(ENOMEM)));
        return NULL;
    }
    jr->h = h;
    jr->pool = pool;
    for (size_t i = 0; i < n; i++) {
        const struct srv_job_kind *k = srv_job_kind_at(i);
        char path[JR_PATH_MAX];
        int len = snprintf(path, sizeof(path), JR_PATH_PREFIX "%s", k->name);
        int rc = len > 0 && (size_t)len < sizeof(path) ? 0 : -ENAMETOOLONG;
        jr->routes[i] = (struct jr_route){.jr = jr, .kind = k};
        if (rc == 0) {
            memcpy(jr->routes[i].path, path, (size_t)len + 1);
            rc = srv_http_route_add(h, "POST", path, jr_handle, &jr->routes[i]);
        }
        if (rc < 0) {
            LOG_E("job route", LOG_STR("kind", k->name), LOG_STR("error", strerror(-rc)));
            free(jr);
            return NULL;
        }
        jr->nroutes++;
    }
    int rc = srv_http_route_add(h, "POST", SRV_BATCH_PATH, srv_batch_handle, jr);
    if (rc < 0) {
        LOG_E("batch route", LOG_STR("error", strerror(-rc)));
        free(jr);
        return NULL;
    }
    return jr;
}

void srv_jobroute_admission_set(struct srv_jobroute *jr, struct srv_adm *adm,
                                const struct srv_met_server *met)
{
    jr->adm = adm;
    jr->met = met;
}

void srv_jobroute_free(struct srv_jobroute *jr)
{
    free(jr);
}
