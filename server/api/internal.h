/* internal.h - what the files of the api room share (server/ only; loop thread unless said).
 *
 * server/api/common.c holds everything the job routes (jobs.c) and the batch route (batch.c) both
 * use: the route object and the registration of both kinds of route, admission of a request of N
 * jobs, the refusal answers, the job-time accounting, the logged run of a kind and the pool's
 * overdue callback. jobs.c and batch.c each call common.c only, never each other; common.c reaches
 * them through their handlers.
 *
 * Every job this room submits to the pool (a job request, a batch item, a batch body parse) embeds
 * a struct srv_api_job as its first member, which names its kind for the logs: the overdue
 * callback, given only the struct pool_job, reaches it with container_of (srv_api_job_of) instead
 * of telling the job types apart by their run functions.
 */
#ifndef SPINDLE_SRV_JOBROUTE_INTERNAL_H
#define SPINDLE_SRV_JOBROUTE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool/pool.h"
#include "server/admission/admission.h"
#include "server/api/tasks.h"
#include "server/jobs/jobs.h"
#include "server/tasks/tasks.h"

#define JR_PATH_MAX    64 /* "/v1/jobs/" and a kind name */
#define JR_PATH_PREFIX "/v1/jobs/"
#define SRV_BATCH_PATH "/v1/batch"

struct srv_http;
struct srv_met_server;
struct srv_req;

struct srv_jobroute {
    struct srv_http *h;
    struct pool *pool;
    struct srv_adm *adm;              /* NULL: every job is admitted */
    const struct srv_met_server *met; /* NULL: nothing counted */
};

/* ---- the jobs of the room ---------------------------------------------------------------------
 */

/* The first member of every job of the room. Immutable from submit to done, so any thread may read
 * it while the pool borrows the job. */
struct srv_api_job {
    struct pool_job job; /* borrowed by the pool from submit to done */
    const char *kind;    /* static: the kind name for the logs ("batch_parse" for a body parse) */
};

/* The struct srv_api_job that embeds `job` (container_of). Only for jobs of the room, which are
 * every job of a pool configured by srv_jobroute_pool_config (server/api/api.h). */
static inline const struct srv_api_job *srv_api_job_of(const struct pool_job *job)
{
    return (const struct srv_api_job *)(const void *)((const char *)job -
                                                      offsetof(struct srv_api_job, job));
}

/* ---- shared by the routes (server/api/common.c) ------------------------------------------------
 */

/* Admit a request of `jobs` jobs (>= 1) on the tenant of req's context: fills *d (the caller gives
 * it back with srv_adm_release once every job is done; a no-op when nothing was admitted) and,
 * when the tenant's max_timeout_ms is shorter, moves the context's deadline earlier. Returns 0
 * (admitted, or no admission configured: d->weight is 1), -EAGAIN / -ENOMEM with *refused set
 * (d says why: answer with srv_jobroute_adm_refused), -EINVAL for a request admission cannot
 * judge. */
int srv_jobroute_admit(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                       struct srv_adm_decision *d, bool *refused);

/* srv_jobroute_admit for one class of jobs: `kind` (borrowed; NULL = not known) of run-time
 * estimate class `cost` (the kind's cost of its state), so that the deadline is judged by the
 * estimate of that class. */
int srv_jobroute_admit_class(struct srv_jobroute *jr, struct srv_req *req, unsigned jobs,
                             const char *kind, uint64_t cost, struct srv_adm_decision *d,
                             bool *refused);

/* srv_jobroute_admit_class for work that is not an HTTP request (a durable task's attempt): the
 * tenant, deadline and cost come from `c` (borrowed; its deadline may be moved earlier). */
int srv_jobroute_admit_ctx(struct srv_jobroute *jr, struct ctx *c, unsigned jobs, const char *kind,
                           uint64_t cost, struct srv_adm_decision *d, bool *refused);

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

/* A job of `kind` (borrowed) completed with `status`: feed its times to the metrics when it
 * started, and to the admission estimators when its run also ended by itself (done or failed). A
 * run cut short by a cancel (a deadline, a client gone) says nothing about how long the work
 * takes: counted, such partial runs pulled the service-time estimate down under overload, so
 * admission let in more jobs than could finish before their deadlines, whose cancelled runs
 * pulled it further down. */
void srv_jobroute_observe(struct srv_jobroute *jr, const char *kind, const struct pool_job *job,
                          enum pool_status status);

/* srv_jobroute_observe, also feeding the run-time estimate of the job's class (`kind` of `cost`,
 * as given to srv_jobroute_admit_class). */
void srv_jobroute_observe_class(struct srv_jobroute *jr, const char *kind, uint64_t cost,
                                const struct pool_job *job, enum pool_status status);

/* srv_jobroute_observe_class for a streamed job that spent `blocked_ns` of its run waiting on its
 * client (an empty body channel, a full answer channel): the estimators and the run metric get
 * its service time, the run without those waits, so one slow client does not make the next
 * stream of the kind look unmeetable. */
void srv_jobroute_observe_stream(struct srv_jobroute *jr, const char *kind, uint64_t cost,
                                 const struct pool_job *job, enum pool_status status,
                                 uint64_t blocked_ns);

/* Answer a job refused because its kind has max_inflight jobs in flight: 503
 * kind_concurrency_limited with Retry-After; counted as a refusal. `kind` borrowed. */
void srv_jobroute_kind_refused(struct srv_jobroute *jr, struct srv_req *req, const char *kind);

/* Run the prepared `job` of `kind` between the debug lines "job start" and "job end" (kind,
 * result, run_ms), written with the current context. Worker thread. Returns what srv_job_run
 * returned. */
int srv_jobroute_run_kind(const struct srv_kind *kind, struct spindle_job *job);

/* ---- the handlers, registered by server/api/common.c -------------------------------------------
 */

/* The handler of POST /v1/jobs/<kind> (server/api/jobs.c); its route arg is the struct
 * srv_jobroute. */
void srv_jobs_handle(struct srv_req *req);

/* The route's continue_fn (server/http/route.h) for a whole-body job request that sent
 * `Expect: 100-continue`: the kind's max_inflight and admission decide before the body is sent;
 * a refusal is answered at once (false), an admission is kept with the request for
 * srv_jobs_handle (true). */
bool srv_jobs_continue(struct srv_req *req);

/* Streaming job requests (server/api/jobs_stream.c): the route's stream_fn (true when the
 * request's kind and parameters stream), and the handler srv_jobs_handle hands them to. */
bool srv_jobs_stream_wanted(struct srv_req *req);
void srv_jobs_stream_handle(struct srv_req *req);

/* The handler of POST /v1/batch (server/api/batch.c); its route arg is the struct srv_jobroute. */
void srv_batch_handle(struct srv_req *req);

/* ---- durable tasks (server/api/tasks.c, server/api/task_runner.c) -----------------------------
 */

struct srv_task_store;
struct srv_task_metrics;
struct task_attempt;
struct task_call;

#define SRV_TASKS_PATH           "/v1/tasks"
#define SRV_TASKS_MAX_WAITERS    1024  /* long-polls at once; more are answered at once */
#define SRV_TASKS_MAX_WAIT_MS    60000 /* the longest wait_ms */
#define SRV_TASKS_POLL_S         0.25  /* the runner looks for due tasks at least this often */
#define SRV_TASKS_CLAIM_RETRY_NS 1000000000ull /* after a failed claim, the next no sooner */
/* Ready queue: 4 claimed tasks per slot, at least this many. A claim is a store transaction (an
 * fsync): it must bring enough short tasks to keep the slots busy until the next one is back. */
#define SRV_TASKS_PREFETCH_MIN 256
/* A store other instances share: the ready queue holds about this much work at the rate attempts
 * start (between one task per slot and the bound above), measured over windows of this length. */
#define SRV_TASKS_PREFETCH_AHEAD_NS 100000000ull

struct srv_tasks {
    struct srv_http *h;
    struct srv_jobroute *jr;
    struct pool *pool;
    struct ctx *root;
    struct ev_loop *loop;
    struct srv_task_store *store; /* NULL: [tasks] store is empty */
    bool draining;
    /* the runner */
    unsigned slots;               /* attempts running at once at most */
    unsigned running;             /* attempts between their start and their store write */
    unsigned ready;               /* attempts claimed and not started (the ready queue) */
    unsigned prefetch;            /* the ready queue's bound */
    unsigned prefetch_max;        /* its bound at the fastest start rate (shared store) */
    unsigned rate_starts;         /* attempts started since rate_t0_ns */
    uint64_t rate_t0_ns;          /* the start of the start-rate window (ctx_now_ns) */
    bool claiming;                /* a claim is at the store */
    bool claim_again;             /* poked while claiming: claim again when that claim is back */
    uint64_t claim_hold_until_ns; /* a claim failed: claim none before (ctx_now_ns) */
    unsigned claim_failures;      /* claims failed in a row (logged once per outage) */
    bool pumping;                 /* starting ready attempts (not re-entered) */
    uint64_t hold_until_ns;       /* admission refused an attempt: start none before (ctx_now_ns) */
    void *poll;                   /* ev_timer (task_runner.c) */
    struct srv_task_req claim;
    struct task_attempt *attempts; /* every attempt not yet freed, oldest claim first */
    struct task_attempt *attempts_tail;
    /* the routes */
    struct task_call *waiters; /* long-polls waiting for a change */
    unsigned nwaiters;
    struct srv_task_req counts;
    bool counting;
    srv_tasks_counts_done_fn *counts_done;
    void *counts_arg;
    struct srv_task_metrics *metrics; /* NULL until srv_tasks_metrics_set */
    struct srv_tasks_stats stats;
};

/* ---- metrics (server/api/task_metrics.c) ---- */

/* The store's on_commit hook: observe one transaction's commit time (arg: the struct srv_tasks). */
void srv_tasks_on_commit(uint64_t commit_ns, void *arg);
/* Stop the refresh timer (the store is stopping); free what srv_tasks_metrics_set made. */
void srv_tasks_metrics_stop(struct srv_tasks *t);
void srv_tasks_metrics_free(struct srv_tasks *t);

/* ---- the JSON side (server/api/task_json.c; pure, any thread) ---- */

struct srv_batch_item;
struct srv_cfg;
struct srv_kinds;

#define SRV_TASK_TIME_MAX 64 /* "2026-12-06T15:00:00.123Z" and its NUL, with room */

/* ms since the epoch as RFC 3339 UTC with milliseconds; "" for 0. */
void srv_task_time_format(int64_t ms, char buf[SRV_TASK_TIME_MAX]);
/* An RFC 3339 time (Z or an offset, optional fraction) into ms. Returns 0 or -EINVAL. */
int srv_task_time_parse(const char *s, int64_t *ms);

/* Validate a POST /v1/tasks body (len bytes, borrowed) against `cfg`: a /v1/batch item (through
 * srv_batch_item_parse, its kind found in `ks`, borrowed, NULL: the current snapshot; the kind's
 * parameters checked and its parse run, the job then finished) plus attempts (1..100, default 3),
 * backoff_ms (0..3600000, default 1000), delay_ms (0..30 days) or run_at (RFC 3339). Fills kind,
 * attempts, backoff_ms, timeout_ms (the body's own, 0 when it gives none), run_at_ms (from now_ms)
 * and spec (a copy of the body, owned by *t). Returns 0, or -EINVAL with *code "bad_json",
 * "bad_task" or "bad_param" and err (SRV_BATCH_ERR_MAX bytes), or -ENOMEM. */
int srv_task_body_parse(const void *body, size_t len, const struct srv_kinds *ks,
                        const struct srv_cfg *cfg, int64_t now_ms, struct srv_task *t,
                        const char **code, char *err);

/* Parse the stored spec of `t` (borrowed) into a runnable *item against the current snapshot of
 * kinds: its job is prepared (a reference to that snapshot) and item->timeout_ms is the task's,
 * else the kind's. *json (a json_t) holds what the job's body points into: json_decref it after
 * srv_job_fini(&item->job). Same returns; on error *item needs nothing more. */
int srv_task_spec_item(const struct srv_task *t, const struct srv_cfg *cfg, void **json,
                       struct srv_batch_item *item, const char **code, char *err);

/* The task's JSON (a new json_t reference; no result), NULL when out of memory. */
struct json_t;
struct json_t *srv_task_json(const struct srv_task *t);

/* Start the runner (claim at once, then on its timer). Returns 0 or -ENOMEM. */
int srv_tasks_runner_start(struct srv_tasks *t);
/* Look for due tasks now (after an enqueue, or a slot came free). */
void srv_tasks_runner_poke(struct srv_tasks *t);
/* Attempt `attempt` of task `id` was cancelled in the store (or is no longer this process's)
 * while it ran here: cancel that attempt's context (reason canceled), or drop it from the ready
 * queue. Other attempts of the same task (a later one claimed meanwhile) are left alone. */
void srv_tasks_runner_cancel(struct srv_tasks *t, const char *id, unsigned attempt);
/* Stop the timer, claim nothing more. */
void srv_tasks_runner_stop(struct srv_tasks *t);
/* Free what stop left (every attempt is done by then). */
void srv_tasks_runner_fini(struct srv_tasks *t);
/* The state of task `id` changed in the store: wake its long-polls (server/api/tasks.c). */
void srv_tasks_notify(struct srv_tasks *t, const char *id);

#endif
