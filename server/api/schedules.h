/* schedules.h - [schedule.NAME]: a durable task enqueued at every tick of a cron expression, and
 * GET /v1/schedules (server/ only).
 *
 * Each configured schedule has a wall-clock timer on the loop (ev_periodic: it follows the system
 * clock, also when it is set) for its next tick. At a tick the schedule's task (its kind, params,
 * body, attempts, backoff_ms, timeout_ms, validated as a POST /v1/tasks body would be) is
 * enqueued for its tenant through the task store, together with the tick, in one transaction: a
 * tick the store has recorded already enqueues nothing (server/tasks/tasks.h, schedule_fire), so
 * a schedule never fires twice for one tick, across restarts and with two processes on one store.
 *
 * At start the store's record of each schedule decides what happened while the server was down:
 * with misfire = skip the ticks missed are dropped (logged) and the next tick fires as usual; with
 * misfire = once the last missed tick fires at once. A schedule never recorded fires from its
 * next tick on. A server that fell behind while running (a stalled loop, a suspended machine)
 * fires the last tick due, once. A tick whose enqueue fails (the store, the tenant's cap) is
 * logged at error level and not retried: the next tick fires as usual.
 *
 * Reload (SIGHUP): srv_sched_check validates the new sections first (a bad one fails the whole
 * reload), then srv_sched_update replaces the schedules: removed ones stop, new and changed ones
 * plan from the recorded ticks as at start (so a reload never fires a tick twice either).
 *
 * GET /v1/schedules answers {"schedules":[{"name","cron","tz","kind","tenant","misfire",
 * "last_run","last_tick","last_task","next_run"}]} (RFC 3339 UTC times, null when none) in
 * configuration order: configuration, not tenant data, so every tenant sees the list.
 *
 * Threads: loop thread only (the store has its own thread).
 */
#ifndef SPINDLE_SRV_API_SCHEDULES_H
#define SPINDLE_SRV_API_SCHEDULES_H

#include <stddef.h>
#include <stdint.h>

#include "server/config.h"

struct srv_http;
struct srv_kinds;
struct srv_tasks;
struct srv_sched;
struct srv_met_server;

/* Check what the configuration file cannot check alone: each schedule's kind exists in `ks` (the
 * snapshot of kinds built from the same configuration, borrowed; NULL: the current one) and takes
 * its params and body (a POST /v1/tasks body built from the section, checked against `cfg`'s
 * limits, the kind's own parse included). err (size bytes) gets "ORIGIN:LINE: [schedule.NAME]
 * kind: what is wrong" for the first bad one (ORIGIN is cfg->source; LINE the kind's, or the
 * section's). Returns 0 or -EINVAL. Pure: also for --check-config. */
int srv_sched_check(const struct srv_cfg *cfg, const struct srv_kinds *ks, char *err, size_t size);

/* Start the schedules of `cfg` (checked with srv_sched_check by the caller) on `h`'s loop, firing
 * through `tasks` (both borrowed, outliving the object), and add GET /v1/schedules to `h`. The
 * records of the store are read first (asynchronously); the timers start when they arrive. With
 * no task store (an empty [tasks] store) the schedules are listed but never fire (a warning says
 * so). Returns a new object or NULL (out of memory, the route; logged). Loop thread. */
struct srv_sched *srv_sched_new(struct srv_http *h, struct srv_tasks *tasks,
                                const struct srv_cfg *cfg);

/* Replace the schedules by those of `cfg` (reload). Returns 0 or -ENOMEM (the old ones stay). */
int srv_sched_update(struct srv_sched *s, const struct srv_cfg *cfg);

/* Stop every timer (the server drains): nothing fires any more. Enqueues in flight complete. */
void srv_sched_stop(struct srv_sched *s);

/* Free, after srv_tasks_stop (which completes the store requests in flight) and srv_http_free.
 * NULL is a no-op. */
void srv_sched_free(struct srv_sched *s);

/* Count every tick into spindle_schedule_fires_total{schedule,result} of `met` (borrowed; it
 * must outlive the object). Loop thread. */
void srv_sched_metrics_set(struct srv_sched *s, const struct srv_met_server *met);

/* Figures for the metrics and the tests. */
struct srv_sched_stats {
    uint64_t fired;   /* ticks that enqueued a task */
    uint64_t already; /* ticks the store had recorded already (nothing enqueued) */
    uint64_t skipped; /* ticks missed while down and dropped (misfire = skip) */
    uint64_t failed;  /* ticks whose enqueue failed */
};
void srv_sched_stats_get(const struct srv_sched *s, struct srv_sched_stats *out);

#endif
