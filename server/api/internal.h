/* internal.h - what the job routes (server/api/jobs.c) share with the batch route
 * (server/api/batch.c): the route object, admission of a request of N jobs, the refusal answers,
 * the job-time accounting and the logged run of a kind. server/ only; loop thread unless said.
 */
#ifndef SPINDLE_SRV_JOBROUTE_INTERNAL_H
#define SPINDLE_SRV_JOBROUTE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"
#include "server/admission/admission.h"
#include "server/jobs/jobs.h"

#define JR_PATH_MAX    64 /* "/v1/jobs/" and a kind name */
#define SRV_BATCH_PATH "/v1/batch"

struct srv_http;
struct srv_met_server;
struct srv_req;

struct jr_route {
    struct srv_jobroute *jr;
    const struct srv_job_kind *kind;
    char path[JR_PATH_MAX]; /* the route's path: its label in the request counter */
};

struct srv_jobroute {
    struct srv_http *h;
    struct pool *pool;
    struct srv_adm *adm;              /* NULL: every job is admitted */
    const struct srv_met_server *met; /* NULL: nothing counted */
    size_t nroutes;
    struct jr_route routes[]; /* one per kind, in registry order */
};

/* Admit a request of `jobs` jobs (>= 1) on the tenant of req's context: fills *d (the caller gives
 * it back with srv_adm_release once every job is done; a no-op when nothing was admitted) and,
 * when the tenant's max_timeout_ms is shorter, moves the context's deadline earlier. Returns 0
 * (admitted, or no admission configured: d->weight is 1), -EAGAIN / -ENOMEM with *refused set
 * (d says why: answer with srv_jobroute_adm_refused), -EINVAL for a request admission cannot
 * judge. */
int srv_jobroute_admit(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                       struct srv_adm_decision *d, bool *refused);

/* Answer an admission refusal at once: its status, reason code, message and Retry-After; count it
 * in the metrics. */
void srv_jobroute_adm_refused(struct srv_jobroute *jr, struct srv_req *req,
                              const struct srv_adm_decision *d);

/* Answer a pool_submit refusal `rc` (-EAGAIN 503 queue_full + Retry-After, -ESHUTDOWN 503
 * shutting_down, -ENOMEM 503 out_of_memory, -ECANCELED 503 cancelled, other 500). `label` is the
 * tenant's refusal label. */
void srv_jobroute_submit_refused(struct srv_jobroute *jr, struct srv_req *req, int rc,
                                 const char *label);

/* The job's queue wait and run time as of `now`. A job that never ran queued until now, ran 0. */
void srv_jobroute_times(const struct pool_job *job, uint64_t now, uint64_t *queue, uint64_t *run);

/* Add "Server-Timing: queue;dur=MS, run;dur=MS" (from nanoseconds) to the answer of req. */
void srv_jobroute_timing_header(struct srv_req *req, uint64_t queue, uint64_t run);

/* A job of `kind` (borrowed) completed: feed its times to the admission estimators and the
 * metrics, when it started. */
void srv_jobroute_observe(struct srv_jobroute *jr, const char *kind, const struct pool_job *job);

/* Run `state` with its kind between the debug lines "job start" and "job end" (kind, result,
 * run_ms), written with the current context. Worker thread. Returns what kind->run returned. */
int srv_jobroute_run_kind(const struct srv_job_kind *kind, void *state);

/* ---- the batch route (server/api/batch.c) ------------------------------------------------------
 */

/* The handler of POST /v1/batch; its route arg is the struct srv_jobroute. */
void srv_batch_handle(struct srv_req *req);

/* The kind name of `job` when it is a batch sub-job, else NULL. Any thread (reads immutable
 * fields). */
const char *srv_batch_job_kind(const struct pool_job *job);

#endif
