/* tasks.h - durable background tasks over HTTP, and the runner that runs them (server/ only).
 *
 * Routes (server/api/tasks.c), all tenant-isolated (the tenant of the request's context; another
 * tenant's task is 404):
 *
 *   POST   /v1/tasks                 a /v1/batch item + attempts, backoff_ms, delay_ms | run_at:
 *                                    validated whole first (400), stored durably, then 202 with
 *                                    Location and the task's JSON; Idempotency-Key: the same key
 *                                    and body answer 200 with the stored task, another body 422
 *   GET    /v1/tasks/ID[?wait_ms=N]  the task's JSON; wait_ms long-polls until it is final
 *   GET    /v1/tasks/ID/result       the stored answer once succeeded (409 before, 404 unknown)
 *   DELETE /v1/tasks/ID              cancel (a running attempt's context is cancelled); idempotent
 *   GET    /v1/tasks?state=&kind=&limit=&after=   the tenant's tasks by id, a page at a time
 *
 * Store failures answer 503 store_unavailable (nothing of the request is written); a tenant at
 * [tasks] max_unfinished answers 429 tenant_task_limit; with [tasks] store empty every route
 * answers 503 tasks_disabled.
 *
 * The runner (server/api/task_runner.c) claims due tasks from the store thread, runs each attempt
 * on the pool like a /v1/batch item (fair by tenant, admitted by admission, at most [tasks]
 * worker_share of the workers at once), with a context carrying the enqueuing request's id and
 * trace id, a new span, task_id and attempt; then completes, retries (exponential backoff, full
 * jitter) or fails it in the store, fenced by the attempt number.
 *
 * Threads: loop thread only (the store has its own thread, server/tasks/tasks.h).
 */
#ifndef SPINDLE_SRV_API_TASKS_H
#define SPINDLE_SRV_API_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/tasks/tasks.h"

struct pool;
struct srv_cfg;
struct srv_http;
struct srv_jobroute;
struct srv_tasks;

/* Open the task store of `cfg` (borrowed for the call; the live configuration is read from `h`
 * later), start its thread and the runner, and add the routes to `h`. `h`, `jr` (for admission),
 * `pool` and `root` (the server's root context, parent of every attempt's) are borrowed and must
 * outlive the object. Loop thread. Returns a new object, or NULL with err (size bytes) saying why:
 * the store could not be opened (a corrupt or newer file, a store another process holds: the
 * start must stop), out of memory, or a route could not be added. */
struct srv_tasks *srv_tasks_new(struct srv_http *h, struct srv_jobroute *jr, struct pool *pool,
                                struct ctx *root, const struct srv_cfg *cfg, char *err,
                                size_t size);

/* The server began to drain: claim no more tasks, answer every long-poll now. Queued tasks stay
 * stored; running attempts go on until pool_stop cancels them, and those are then given back to
 * the queue without using up an attempt. Loop thread. */
void srv_tasks_drain(struct srv_tasks *t);

/* After pool_stop: write what the last attempts left (releases, completions), stop the store
 * thread and close the store. Loop thread (the loop no longer runs). NULL is a no-op. */
void srv_tasks_stop(struct srv_tasks *t);

/* Free, after srv_tasks_stop and srv_http_free. NULL is a no-op. */
void srv_tasks_free(struct srv_tasks *t);

/* Figures for the metrics (all since start). */
struct srv_tasks_stats {
    uint64_t attempts;                        /* attempts started on the pool */
    uint64_t retries;                         /* attempts failed and scheduled again */
    uint64_t succeeded;                       /* tasks completed by this process */
    uint64_t failed;                          /* tasks failed for good by this process */
    uint64_t released;                        /* attempts given back at a stop (not used up) */
    uint64_t stale;                           /* completions discarded by the attempt fence */
    uint64_t running;                         /* attempts running now */
    uint64_t waiters;                         /* long-polls waiting now */
    const struct srv_task_store_stats *store; /* NULL when disabled */
};

void srv_tasks_stats_get(const struct srv_tasks *t, struct srv_tasks_stats *out);

struct srv_met_server;

/* Count into `met` (borrowed; must outlive t): spindle_tasks{state,kind}, the oldest queued
 * age and spindle_tasks_queued{tenant} (refreshed from the store every 2 s), attempts, retries,
 * lease expiries, stale outcomes, purged tasks, store fsyncs and the commit latency histogram. Loop
 * thread. Returns 0 or the error of srv_met_series_fn (-ENOMEM, -ENOSPC). */
int srv_tasks_metrics_set(struct srv_tasks *t, const struct srv_met_server *met);

/* Call fn for every (state, kind) count of the store, tenant_fn (NULL: none) for the `top`
 * tenants with the most waiting tasks and the others' sum, and give the oldest due task's created
 * time (ms since the epoch, 0 = none): asked of the store thread (fn and tenant_fn run there),
 * answered later on the loop through `done`. Returns 0, or -ENODEV (disabled) / -EBUSY (a count
 * is in flight). */
typedef void srv_tasks_counts_done_fn(int rc, int64_t oldest_queued_ms, void *arg);
int srv_tasks_counts(struct srv_tasks *t, srv_task_count_fn *fn,
                     srv_task_tenant_count_fn *tenant_fn, unsigned top,
                     srv_tasks_counts_done_fn *done, void *arg);

#endif
