/* common.c - what the routes of the api room share: the route object and the registration of
 * every route that runs jobs, admission, the refusal answers, the job-time accounting, the logged
 * run of a kind and the pool's settings and overdue callback.
 *
 * Design: srv_jobroute_new() adds the pattern route POST /v1/jobs/<kind> (server/api/jobs.c's
 * handler, which finds the kind per request in the current snapshot of the job-kind registry),
 * then POST /v1/batch (server/api/batch.c's handler, whose arg is the object). The object holds
 * what both need: the HTTP server, the pool, the admission policy and the metrics. jobs.c and
 * batch.c call the functions here and never each other, so either can change without the other.
 *
 * Admission (server/admission/admission.h) decides on the tenant's rate and in-flight limits, the
 * queue capacity and the deadline, the latter by the run-time estimate of the job's class (its
 * kind and cost, when one job of a known kind is admitted); a refusal is answered at once with its
 * status, reason, Retry-After and Retry-After-Ms. A job that ran feeds its queue and run times back
 * to the estimators and the metrics (srv_jobroute_observe*).
 *
 * Job types: every job the room submits embeds a struct srv_api_job first (server/api/internal.h),
 * which names its kind; the overdue callback, which the pool gives only the struct pool_job,
 * reads the kind from there.
 *
 * Threads: everything runs on the loop thread, except srv_jobroute_run_kind (a worker, with the
 * job's context current) and srv_jobroute_overdue (the pool's worker or monitor thread, reading
 * only the immutable struct srv_api_job). The route table is immutable after srv_jobroute_new.
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
#include "server/http/request.h"
#include "server/http/route.h"
#include "server/jobs/jobs.h"
#include "server/metrics/metrics.h"

#define JR_RETRY_AFTER_MS 1000 /* a full pool queue admission did not see coming */

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

int srv_jobroute_run_kind(const struct srv_kind *kind, struct spindle_job *job)
{
    if (!log_enabled(LOG_LEVEL_DEBUG))
        return srv_job_run(job);
    LOG_D("job start", LOG_STR("kind", kind->name));
    uint64_t t0 = ctx_now_ns();
    int rc = srv_job_run(job);
    LOG_D("job end", LOG_STR("kind", kind->name), LOG_STR("result", jr_result_name(rc)),
          LOG_DUR("run_ms", ctx_now_ns() - t0));
    return rc;
}

void srv_jobroute_overdue(struct pool_job *job, uint64_t overdue_ns, void *arg)
{
    (void)arg;
    const struct ctx *c = ctx_current();
    const char *reason = ctx_reason_name(c != NULL ? ctx_err(c) : CTX_REASON_NONE);
    const char *kind = srv_api_job_of(job)->kind;
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

/* ---- timings and accounting (loop thread) ---------------------------------------------------- */

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

void srv_jobroute_timing_header(struct srv_req *req, uint64_t queue, uint64_t run)
{
    char v[96];
    uint64_t q_us = queue / 1000u, r_us = run / 1000u;
    snprintf(v, sizeof(v), "queue;dur=%llu.%03llu, run;dur=%llu.%03llu",
             (unsigned long long)(q_us / 1000u), (unsigned long long)(q_us % 1000u),
             (unsigned long long)(r_us / 1000u), (unsigned long long)(r_us % 1000u));
    (void)srv_req_header_add(req, "Server-Timing", v); /* -ENOMEM: answer without it */
}

/* Feed what the job's times say to the metrics (only for a job that started: a job that never ran
 * says nothing about service time) and, when its run ended by itself (done or failed), to the
 * estimators, also to the run-time estimate of the job's class when `classed` (the kind and cost
 * are known). */
static void jr_observe(struct srv_jobroute *jr, const char *kind, bool classed, uint64_t cost,
                       const struct pool_job *job, enum pool_status status, uint64_t blocked_ns)
{
    if (job->t_start_ns == 0)
        return;
    uint64_t now = ctx_now_ns(), queue, run;
    srv_jobroute_times(job, now, &queue, &run);
    run = run > blocked_ns ? run - blocked_ns : 0;
    if (jr->adm != NULL && (status == POOL_DONE || status == POOL_FAILED))
        srv_adm_observe_job(jr->adm, classed ? kind : NULL, cost, now, queue, run);
    if (jr->met != NULL)
        srv_met_job_times(jr->met, kind, queue, run);
}

void srv_jobroute_observe(struct srv_jobroute *jr, const char *kind, const struct pool_job *job,
                          enum pool_status status)
{
    jr_observe(jr, kind, false, 0, job, status, 0); /* a batch's sub-job: its size is unknown */
}

void srv_jobroute_observe_class(struct srv_jobroute *jr, const char *kind, uint64_t cost,
                                const struct pool_job *job, enum pool_status status)
{
    jr_observe(jr, kind, true, cost, job, status, 0);
}

void srv_jobroute_observe_stream(struct srv_jobroute *jr, const char *kind, uint64_t cost,
                                 const struct pool_job *job, enum pool_status status,
                                 uint64_t blocked_ns)
{
    jr_observe(jr, kind, true, cost, job, status, blocked_ns);
}

/* ---- admission (loop thread) ----------------------------------------------------------------- */

/* Admission (server/admission/admission.h): tenant rate, tenant in flight, queue capacity,
 * deadline. Returns 0 after filling *d (its fair-queue weight and, when the tenant's
 * max_timeout_ms is shorter, the context's deadline moved earlier); -EAGAIN or -ENOMEM with
 * *refused set when admission refused (d says why); -EINVAL for a request admission cannot judge.
 * The caller answers once any state that points at the body is freed. */
int srv_jobroute_admit_ctx(struct srv_jobroute *jr, struct ctx *c, unsigned jobs, const char *kind,
                           uint64_t cost, struct srv_adm_decision *d, bool *refused)
{
    *refused = false;
    memset(d, 0, sizeof(*d));
    d->weight = 1;
    if (jr->adm == NULL)
        return 0;
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

int srv_jobroute_admit_class(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                             const char *kind, uint64_t cost, struct srv_adm_decision *d,
                             bool *refused)
{
    return srv_jobroute_admit_ctx(jr, srv_req_ctx(req), jobs, kind, cost, d, refused);
}

int srv_jobroute_admit(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                       struct srv_adm_decision *d, bool *refused)
{
    return srv_jobroute_admit_class(jr, req, jobs, NULL, 0, d, refused);
}

/* ---- refusals (loop thread) ------------------------------------------------------------------ */

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

void srv_jobroute_kind_refused(struct srv_jobroute *jr, struct srv_req *req, const char *kind)
{
    char msg[128];
    jr_retry_headers(req, JR_RETRY_AFTER_MS);
    snprintf(msg, sizeof(msg), "the %s kind has its maximum of jobs in flight", kind);
    if (jr->met != NULL)
        srv_met_refusal(jr->met, "kind_concurrency_limited", SRV_ADM_OTHER_LABEL);
    jr_error(req, 503, "kind_concurrency_limited", msg);
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

/* ---- routes ---------------------------------------------------------------------------------- */

struct srv_jobroute *srv_jobroute_new(struct srv_http *h, struct pool *pool)
{
    struct srv_jobroute *jr = calloc(1, sizeof(*jr));
    if (jr == NULL) {
        LOG_E("job routes", LOG_STR("error", strerror(ENOMEM)));
        return NULL;
    }
    jr->h = h;
    jr->pool = pool;
    int rc = srv_http_route_add(h, "POST", JR_PATH_PREFIX "*", srv_jobs_handle, jr);
    if (rc == 0) /* a kind that streams takes a large or chunked body as it arrives */
        rc = srv_http_route_stream(h, "POST", JR_PATH_PREFIX "*", srv_jobs_stream_wanted);
    if (rc == 0) /* admission before 100 Continue: a refused body is never sent */
        rc = srv_http_route_continue(h, "POST", JR_PATH_PREFIX "*", srv_jobs_continue);
    if (rc < 0) {
        LOG_E("job route", LOG_STR("error", strerror(-rc)));
        free(jr);
        return NULL;
    }
    rc = srv_http_route_add(h, "POST", SRV_BATCH_PATH, srv_batch_handle, jr);
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
