/* api.h - the job endpoints: POST /v1/jobs/<kind> for every registered job kind, run on the
 * worker pool and answered from the pool's completion on the loop thread (server/ only).
 *
 * One route per kind of the registry (server/jobs/jobs.h), so adding a kind adds its endpoint.
 * A request is parsed by its kind (400 bad_param), admitted, queued on the pool with its context,
 * run on a worker (with "job start"/"job end" debug lines carrying the request's ids) and answered:
 *
 *   POOL_DONE               the kind's answer (200), Server-Timing: queue;dur=MS, run;dur=MS
 *   POOL_FAILED             500 job_failed (503 out_of_memory when the job ran out of memory)
 *   POOL_CANCELLED_*        nothing when the HTTP layer cancelled the request (client gone: 499,
 *                           deadline: 504 already sent, shutdown: 503 already sent); otherwise
 *                           503 cancelled
 *   POOL_REFUSED_SHUTDOWN   503 shutting_down
 *   admission refused       429 tenant_rate_limited, 429 tenant_concurrency_limited,
 *                           503 queue_full, 503 deadline_unmeetable, 503 too_many_tenants,
 *                           503 out_of_memory, each with Retry-After (seconds) and
 *                           Retry-After-Ms (the precise hint; server/admission/admission.h)
 *   pool_submit refused     503 queue_full + Retry-After (-EAGAIN), 503 shutting_down
 *                           (-ESHUTDOWN), 503 out_of_memory (-ENOMEM)
 *
 * Threads: everything here runs on the loop thread that runs the HTTP server and the pool, except
 * srv_jobroute_overdue (a pool callback, worker or monitor thread).
 */
#ifndef SPINDLE_SRV_JOBROUTE_H
#define SPINDLE_SRV_JOBROUTE_H

#include <stdint.h>

#include "pool/pool.h"
#include "server/config.h"

struct srv_http;
struct srv_jobroute;
struct srv_adm;
struct srv_met_server;

/* Fill *out with the pool settings from `cfg` (borrowed): [pool] workers, queue_capacity,
 * cancel_grace_ms, and srv_jobroute_overdue as the overdue callback. Every job submitted to a pool
 * so configured must be one of these routes' (they embed a struct srv_api_job first:
 * server/api/internal.h). */
void srv_jobroute_pool_config(const struct srv_cfg *cfg, struct pool_config *out);

/* Add POST /v1/jobs/<kind> to `h` (borrowed) for every registered kind, and POST /v1/batch
 * (server/api/batch.h), submitting to `pool` (borrowed). Both must outlive the returned object,
 * and the object must outlive the routes: free it after srv_http_free(h). Loop thread. Returns a
 * new object, or NULL when out of memory or a route could not be added (the reason is logged at
 * error level; routes added before the failure stay in `h` and point at nothing: free `h` without
 * serving). */
struct srv_jobroute *srv_jobroute_new(struct srv_http *h, struct pool *pool);

/* Put `adm` (borrowed; NULL = admit every job) in front of the pool for every later request, and
 * count into `met` (borrowed; NULL = count nothing): answers by route and status, refusals by
 * reason and tenant label, job wait and run times by kind. Both must outlive every job of these
 * routes (free them after srv_http_free and pool_stop). Loop thread. */
void srv_jobroute_admission_set(struct srv_jobroute *jr, struct srv_adm *adm,
                                const struct srv_met_server *met);

/* Free what srv_jobroute_new() made. Call after srv_http_free() of its server (whose handlers
 * have then all answered, so no job of these routes is left in the pool). NULL is a no-op. */
void srv_jobroute_free(struct srv_jobroute *jr);

/* The pool's overdue callback (pool_overdue_fn; `arg` is unused): a job (one of these routes',
 * see srv_jobroute_pool_config) still running `overdue_ns` after its context was cancelled. Logs
 * one warn line "job overdue after cancel" with the job's context current (so its request_id and
 * tenant), the job's kind (a batch item's own kind, "batch_parse" for the parse of a large batch
 * body), the cancel reason and overdue_ms. Any thread. */
void srv_jobroute_overdue(struct pool_job *job, uint64_t overdue_ns, void *arg);

/* ---- health (server/api/health.c) ---- */

/* GET/HEAD /healthz (200 "ok\n") and /readyz (200 "ready\n", 503 `draining` while draining) on
 * `h` (borrowed), open to anyone on every listener (SRV_AUTH_OPEN). Returns 0 or the error of
 * srv_http_route_add(). Loop thread. */
int srv_health_routes_add(struct srv_http *h);

#endif
