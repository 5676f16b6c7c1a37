/* tasks.h - durable background tasks: the task record, the store interface every backend fills,
 * and the store thread that owns the backend's connection (server/ only).
 *
 * A task is one job of a registered kind (its "spec": the JSON object a client posted, with the
 * kind, params and body a /v1/batch item takes, plus the task options) stored before the client
 * hears 202, then run by the runner (server/api/) as attempts on the worker pool:
 *
 *   queued ──claim──▶ running ──complete──▶ succeeded   (start: the attempt left the ready queue)
 *     ▲                 │ ──fail, attempts left──▶ retrying ──(run_at passes)──▶ claim again
 *     │                 │ ──fail, none left──────▶ failed     (every attempt's error kept)
 *     └──release────────┘ (graceful stop: the attempt is given back, not used up)
 *   queued, retrying, running ──cancel──▶ cancelled (a running attempt's completion is discarded)
 *
 * Fencing: claiming a task increments its attempt number; complete, fail and release name the
 * attempt they finish and change nothing (-ESTALE) unless the task is still running that attempt.
 * So a completion that arrives after the lease was lost, after a cancel, or after the task was
 * claimed again can never overwrite a newer outcome. An attempt whose lease ran out (the process
 * died: kill -9, power loss) is recorded as an "interrupted" error and the task is retried (or
 * failed when that was its last attempt); a succeeded task is final and never claimed again.
 *
 * The store interface (struct srv_task_store_ops) is synchronous and single-threaded: every call
 * runs on the store thread, which owns the backend's connection. Write calls run between begin
 * and commit, and the store thread puts many requests in one transaction (group commit: one fsync
 * for every enqueue that arrived together). A second backend (PostgreSQL) fills the same table.
 *
 * The store thread (struct srv_task_store, store.c): callers on the loop thread submit requests
 * (struct srv_task_req, embedded by the caller); the thread takes every pending request, runs them
 * in one transaction, commits, and hands them back through one ev_async; each request's done
 * callback runs exactly once on the loop thread. On its own it renews the leases of this process's
 * running attempts every third of lease_ms, and purges finished tasks older than retention_ms in
 * bounded batches. The loop thread never does store I/O.
 *
 * Errors (negative errno): -ENOENT no such task (or another tenant's), -ESTALE a fenced attempt,
 * -EEXIST an Idempotency-Key with another body, -EDQUOT the tenant's unfinished cap, -ENOSPC the
 * disk is full, -EIO any other store failure (the transaction is rolled back: nothing of it is
 * written), -ENOMEM, -ESHUTDOWN the store thread is stopping.
 */
#ifndef SPINDLE_SRV_TASKS_H
#define SPINDLE_SRV_TASKS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"

struct ev_loop;

enum srv_task_state {
    SRV_TASK_QUEUED = 0, /* waiting for its run time and a worker */
    SRV_TASK_RUNNING,    /* an attempt holds the lease */
    SRV_TASK_RETRYING,   /* an attempt failed; the next one waits for run_at */
    SRV_TASK_SUCCEEDED,  /* final: the result is stored */
    SRV_TASK_FAILED,     /* final: every attempt failed (or the last was interrupted) */
    SRV_TASK_CANCELLED,  /* final: DELETE /v1/tasks/<id> */
    SRV_TASK_STATE__COUNT
};

/* "queued", "running", ...; "unknown" out of range. */
const char *srv_task_state_name(enum srv_task_state s);
/* The state named `s` (NUL-terminated). Returns 0 or -EINVAL. */
int srv_task_state_parse(const char *s, enum srv_task_state *out);
/* True for succeeded, failed and cancelled. */
bool srv_task_state_final(enum srv_task_state s);

#define SRV_TASK_ID_LEN    24 /* 12 hex digits of creation milliseconds + 12 random */
#define SRV_TASK_KIND_MAX  64
#define SRV_TASK_KEY_MAX   128 /* Idempotency-Key: 1..128 visible ASCII bytes */
#define SRV_TASK_CTYPE_MAX 64

/* Write a new task id (SRV_TASK_ID_LEN characters and a NUL) into id; ids sort by creation. */
void srv_task_id_new(char id[SRV_TASK_ID_LEN + 1]);

/* One task as stored. Times are wall-clock milliseconds since the epoch, 0 = none. The three
 * heap members are owned by the record: release them with srv_task_fini. */
struct srv_task {
    char id[SRV_TASK_ID_LEN + 1];
    char tenant[CTX_TENANT_MAX + 1];
    char kind[SRV_TASK_KIND_MAX + 1];
    char request_id[CTX_REQUEST_ID_MAX + 1]; /* the enqueuing request's */
    char trace_id[33];                       /* the enqueuing request's, "" when none */
    char idem_key[SRV_TASK_KEY_MAX + 1];     /* "" when none */
    enum srv_task_state state;
    unsigned attempt;     /* attempts started so far; the running one's number while running */
    unsigned attempts;    /* attempts at most */
    unsigned backoff_ms;  /* the first retry's backoff cap; doubled for each later one */
    unsigned timeout_ms;  /* each attempt's deadline; 0 = none */
    unsigned interrupted; /* attempts whose lease ran out (the process died running them) */
    int64_t created_ms, started_ms, finished_ms, run_at_ms;
    char *spec; /* the posted JSON (kind, params, body, options); spec_len bytes + NUL */
    size_t spec_len;
    char *errors; /* JSON array of {"attempt","code","message","at_ms"}; NULL = "[]" */
    char *result; /* succeeded: the answer, result_len bytes (+ NUL); else NULL */
    size_t result_len;
    char content_type[SRV_TASK_CTYPE_MAX + 1];
};

/* Free the heap members of t and set them NULL. */
void srv_task_fini(struct srv_task *t);

/* ---- the store interface ----------------------------------------------------------------- */

/* Called by a backend from any thread of its own (a LISTEN connection's) to have the store
 * thread call its `events` soon; `arg` is srv_task_store_opts.wake_arg. */
typedef void srv_task_wake_fn(void *arg);

struct srv_task_store_opts {
    const char *path;       /* the backend's location (a file path for SQLite, a libpq URI for
                               PostgreSQL); borrowed */
    srv_task_wake_fn *wake; /* set by the store thread before open; NULL = nobody to wake */
    void *wake_arg;
    bool unprepared; /* PostgreSQL: no server-side prepared statements (poolers that do not keep
                        them: PgBouncer in transaction mode before 1.21) */
};

/* What another process sharing the store did that this one must act on (PostgreSQL: several
 * instances on one database). Seen on the store thread, handed to the loop thread. */
enum srv_task_event_kind {
    SRV_TASK_EV_DUE,     /* tasks may be due now (enqueued or given back elsewhere): claim */
    SRV_TASK_EV_LOST,    /* attempt `attempt` of `id`, which this process runs, is no longer its
                            own (cancelled elsewhere, or its lease ran out and another took it):
                            cancel it; its completion will be fenced (-ESTALE) anyway */
    SRV_TASK_EV_CHANGED, /* task `id` changed state elsewhere (e.g. became final): wake waiters */
};

struct srv_task_event {
    enum srv_task_event_kind kind;
    char id[SRV_TASK_ID_LEN + 1]; /* LOST, CHANGED */
    unsigned attempt;             /* LOST */
};

/* Receives one event; `ev` is borrowed for the call. */
typedef void srv_task_event_fn(const struct srv_task_event *ev, void *arg);

/* A filter of srv_task_store_ops.list. */
struct srv_task_filter {
    int state;         /* an enum srv_task_state, -1 = any */
    const char *kind;  /* NULL = any */
    const char *after; /* NULL = from the start; else ids greater than this one */
    unsigned limit;    /* 1..1000 */
};

/* One schedule's record (server/api/schedules.c): the last tick it fired, ms since the epoch, the
 * task that tick enqueued (borrowed for the call) and when it fired. */
typedef void srv_task_schedule_fn(const char *name, int64_t last_tick_ms, const char *last_task,
                                  int64_t fired_ms, void *arg);

/* Per-(state, kind) counts for the metrics. */
typedef void srv_task_count_fn(enum srv_task_state s, const char *kind, uint64_t n, void *arg);
/* Waiting tasks (queued or retrying) of one tenant for the metrics; `tenant` NULL: the sum of
 * every tenant beyond the ones named. */
typedef void srv_task_tenant_count_fn(const char *tenant, uint64_t n, void *arg);

struct srv_task_req;

/* A backend. Every function runs on the store thread only; `st` is what open returned. Write
 * functions are called between begin and commit/rollback; get, list and counts may be too. */
struct srv_task_store_ops {
    const char *name; /* "sqlite" */
    /* Open (creating when missing) and migrate the schema to this version; refuse a newer one
     * (-EPROTO), a corrupt one (-EIO) or one another process holds (-EBUSY), with a message in
     * err. Interrupted attempts of a previous run are recovered later by expire. */
    int (*open)(const struct srv_task_store_opts *o, void **st, char *err, size_t size);
    void (*close)(void *st);
    /* The backend's message for its last error (borrowed until the next call), for the logs. */
    const char *(*errmsg)(void *st);
    int (*begin)(void *st);
    int (*commit)(void *st); /* durable when it returns 0 */
    void (*rollback)(void *st);
    /* Insert *t (id, tenant, kind, spec, options and times filled; state queued). When t has an
     * idem_key that the tenant already used: *t is replaced by the stored task and *existed set
     * (-EEXIST when its spec differs). -EDQUOT when the tenant has `cap` unfinished tasks. */
    int (*enqueue)(void *st, struct srv_task *t, unsigned cap, bool *existed);
    /* Optional (NULL: one call per request). The n requests from `first` (linked by next) that
     * arrived together, each an ENQUEUE, START or COMPLETE, each done as enqueue, start or
     * complete does it (at `now`), its code into req->rc (and req->existed); in fewer round trips
     * than one by one. Returns 0, or a failure of the store (-EIO, -ENOSPC, -ENOMEM): the
     * transaction is then rolled back. */
    int (*write_many)(void *st, struct srv_task_req *first, unsigned n, int64_t now);
    /* Move up to `max` due tasks (queued or retrying with run_at <= now, oldest run_at first) to
     * running with attempt + 1, leased to `owner` until lease_until; fill out[0..*n). */
    int (*claim)(void *st, const char *owner, int64_t now, int64_t lease_until, unsigned max,
                 struct srv_task *out, unsigned *n);
    /* Attempt `attempt` of `id` really started (it left the ready queue for a worker): from now
     * on a lost lease counts it as interrupted. -ESTALE. */
    int (*start)(void *st, const char *id, unsigned attempt, int64_t now);
    /* Renew the lease of every task `owner` runs. *n: how many. */
    int (*heartbeat)(void *st, const char *owner, int64_t lease_until, unsigned *n);
    /* Attempt `attempt` of `id` succeeded: store the result, state succeeded. -ESTALE. */
    int (*complete)(void *st, const char *id, unsigned attempt, int64_t now, const void *result,
                    size_t len, const char *content_type);
    /* Attempt `attempt` failed with `error_json` (an object); retry at `retry_at` (0: failed for
     * good). -ESTALE. */
    int (*fail)(void *st, const char *id, unsigned attempt, int64_t now, const char *error_json,
                int64_t retry_at);
    /* Give attempt `attempt` back without using it up: queued, attempt - 1. -ESTALE. */
    int (*release)(void *st, const char *id, unsigned attempt);
    /* Cancel the tenant's task `id`; *t gets the task after it (also when it was final already:
     * idempotent). *was_running says an attempt was running. -ENOENT. */
    int (*cancel)(void *st, const char *tenant, const char *id, int64_t now, struct srv_task *t,
                  bool *was_running);
    /* The tenant's task `id` into *t (with result when `with_result`). -ENOENT. */
    int (*get)(void *st, const char *tenant, const char *id, bool with_result, struct srv_task *t);
    /* The tenant's tasks matching f, by id, into out[0..*n) (at most f->limit; no result). */
    int (*list)(void *st, const char *tenant, const struct srv_task_filter *f, struct srv_task *out,
                unsigned *n);
    /* Delete at most `max` tasks that finished before `before`. *n: how many. */
    int (*purge)(void *st, int64_t before, unsigned max, unsigned *n);
    /* Running tasks whose lease ended before `now`: when their attempt had started, an
     * "interrupted" error, then retrying (run at once) or failed when it was the last attempt
     * (*n: how many); when it had not (claimed, waiting for a slot), given back unused. */
    int (*expire)(void *st, int64_t now, unsigned *n);
    /* Call fn for each (state, kind) with tasks; *oldest_queued: the earliest run_at of a
     * queued or retrying task when it has passed (how long the backlog waits; 0: none). */
    int (*counts)(void *st, srv_task_count_fn *fn, void *arg, int64_t now, int64_t *oldest_queued);
    /* Call fn for the `top` tenants with the most waiting tasks (queued or retrying, due or not;
     * most first, then by name), then once with tenant NULL for the sum of the others when there
     * are others: a bounded answer however many tenants the store holds. */
    int (*queued)(void *st, unsigned top, srv_task_tenant_count_fn *fn, void *arg);
    /* Schedules: enqueue *t (as enqueue, with `cap`) as the task of schedule `name`'s tick
     * `tick_ms` and record the tick with the task's id, both in the caller's transaction; unless
     * the schedule recorded this tick or a later one already: then nothing is written and *fired
     * is false. So one tick never enqueues twice, across restarts and processes. An enqueue
     * error (-EDQUOT, -EEXIST) records nothing. */
    int (*schedule_fire)(void *st, const char *name, int64_t tick_ms, int64_t now,
                         struct srv_task *t, unsigned cap, bool *fired);
    /* Call fn for every schedule ever recorded (also ones no longer configured). */
    int (*schedule_list)(void *st, srv_task_schedule_fn *fn, void *arg);
    /* Optional (NULL: a store no other process shares). Call fn for what other processes did
     * since the last call: notifications received (a LISTEN connection), and when `poll` is set
     * also what a query of the store finds (the fallback when notifications do not arrive: a
     * pooler in transaction mode): attempts of `owner` that are no longer its own (LOST), due
     * tasks (DUE). Outside a transaction. */
    int (*events)(void *st, const char *owner, int64_t now, bool poll, srv_task_event_fn *fn,
                  void *arg);
    /* Optional (NULL: the store migrates itself in open and has nothing to report). Without
     * changing anything, the schema version the store at `o` has (*have, 0 = none yet) and the
     * one this spindle writes (*want). -EIO (err says why) when the store cannot be read. */
    int (*schema)(const struct srv_task_store_opts *o, unsigned *have, unsigned *want, char *err,
                  size_t size);
};

/* The SQLite backend (store_sqlite.c). */
extern const struct srv_task_store_ops srv_task_store_sqlite;
/* The PostgreSQL backend (store_pg.c): many spindle instances on one database. */
extern const struct srv_task_store_ops srv_task_store_pg;

/* The backend for a [tasks] store value: PostgreSQL for "postgresql://..." and "postgres://..."
 * (a libpq connection URI), else the SQLite file. Borrowed, static. */
const struct srv_task_store_ops *srv_task_store_backend(const char *store);

/* A [tasks] store value fit for logs and messages: a URI without its password. */
void srv_task_store_where(const char *store, char *out, size_t size);

/* ---- the store thread ---------------------------------------------------------------------- */

enum srv_task_op {
    SRV_TASK_OP_ENQUEUE,
    SRV_TASK_OP_CLAIM,
    SRV_TASK_OP_START,
    SRV_TASK_OP_COMPLETE,
    SRV_TASK_OP_FAIL,
    SRV_TASK_OP_RELEASE,
    SRV_TASK_OP_CANCEL,
    SRV_TASK_OP_GET,
    SRV_TASK_OP_LIST,
    SRV_TASK_OP_COUNTS,
    SRV_TASK_OP_SCHEDULE_FIRE, /* schedule_fire: task, cap, schedule, tick_ms; out: existed */
    SRV_TASK_OP_SCHEDULE_LIST, /* schedule_list: sched_fn (called on the store thread) */
};

struct srv_task_req;
/* Runs once on the loop thread when the request is done (req->rc says how). */
typedef void srv_task_req_done_fn(struct srv_task_req *req);

/* A request to the store thread, embedded by the caller and borrowed from submit to done. */
struct srv_task_req {
    /* in (by op) */
    enum srv_task_op op;
    srv_task_req_done_fn *done;
    void *data;                          /* the caller's */
    struct srv_task task;                /* ENQUEUE: the new task (out: the stored one); GET/CANCEL
                                            (tenant, id in; the task out); COMPLETE/FAIL/RELEASE (id,
                                            attempt; COMPLETE result/content_type) */
    unsigned cap;                        /* ENQUEUE: the tenant's unfinished cap */
    unsigned max;                        /* CLAIM: tasks at most; COUNTS: tenants at most */
    bool with_result;                    /* GET */
    const char *error_json;              /* FAIL: borrowed until done */
    int64_t retry_at;                    /* FAIL */
    struct srv_task_filter filter;       /* LIST (strings borrowed until done) */
    srv_task_count_fn *count_fn;         /* COUNTS: called on the store thread */
    srv_task_tenant_count_fn *tenant_fn; /* COUNTS: also queued by tenant (NULL: not); the same
                                            thread and count_arg */
    void *count_arg;
    const char *schedule;           /* SCHEDULE_FIRE: the schedule's name, borrowed until done */
    int64_t tick_ms;                /* SCHEDULE_FIRE: the tick */
    srv_task_schedule_fn *sched_fn; /* SCHEDULE_LIST: called on the store thread */
    void *sched_arg;
    /* out */
    int rc;
    bool existed;           /* ENQUEUE: an idempotent repeat; CANCEL: it was running;
                               SCHEDULE_FIRE: the tick was recorded already (nothing written) */
    struct srv_task *tasks; /* CLAIM, LIST: n tasks (owned by the request: srv_task_req_fini) */
    unsigned n;
    int64_t oldest_queued; /* COUNTS */
    uint64_t commit_ns;    /* the transaction's commit time (0: none) */
    bool commit_first;     /* the first request of its transaction (count a commit once) */
    /* private */
    struct srv_task_req *next;
};

/* Release what a finished request holds (its task's heap members, the tasks array). */
void srv_task_req_fini(struct srv_task_req *req);

/* Figures of the store thread (atomics, read from any thread). */
struct srv_task_store_stats {
    _Atomic uint64_t commits;    /* transactions committed with at least one write */
    _Atomic uint64_t fsyncs;     /* = commits that wrote (FULL sync: one fsync of the WAL each) */
    _Atomic uint64_t enqueued;   /* tasks stored */
    _Atomic uint64_t purged;     /* finished tasks deleted by retention */
    _Atomic uint64_t expired;    /* attempts whose lease ran out */
    _Atomic uint64_t heartbeats; /* lease renewals (tasks) */
    _Atomic uint64_t errors;     /* transactions that failed (rolled back) */
    _Atomic uint64_t commit_hist[16]; /* commit latency: bucket i counts <= 2^i * 0.125 ms */
    _Atomic uint64_t commit_sum_ns;
};

struct srv_task_store_config {
    const struct srv_task_store_ops *ops;
    struct srv_task_store_opts opts;
    char owner[40];        /* this process's lease owner name */
    unsigned lease_ms;     /* heartbeats every third */
    unsigned retention_ms; /* purge finished tasks older than this */
    unsigned purge_batch;  /* rows per purge transaction (0 = 500) */
    /* Stores with events (ops->events): how often the store is polled for them besides the
     * notifications (0 = 500 ms); on_event (NULL = ignore them) runs on the loop thread. */
    unsigned poll_ms;
    srv_task_event_fn *on_event;
    void *event_arg;
    /* Called on the loop thread once per transaction of requests that wrote, with its commit
     * time, before the done callbacks of its requests (NULL = none). */
    void (*on_commit)(uint64_t commit_ns, void *arg);
    void *on_commit_arg;
};

struct srv_task_store;

/* Open the backend (on the calling thread, so start-up errors stop the start: err says why) and
 * start the store thread, whose completions run on `loop` (borrowed; must outlive the store).
 * Returns 0, or the open's error / -ENOMEM / -EAGAIN (thread) with err filled. */
int srv_task_store_start(struct ev_loop *loop, const struct srv_task_store_config *cfg,
                         struct srv_task_store **out, char *err, size_t size);

/* Stop: run every request still pending (their done callbacks run here, on the calling loop
 * thread), stop the thread, close the backend, free. NULL is a no-op. Loop thread. */
void srv_task_store_stop(struct srv_task_store *s);

/* Queue `req` (borrowed until its done callback, which always runs: also for a request made by a
 * done callback while srv_task_store_stop drains). The requests of one loop iteration reach the
 * store thread together, before the loop waits for events again, and share a transaction. Loop
 * thread. Returns 0. */
int srv_task_store_submit(struct srv_task_store *s, struct srv_task_req *req);

/* True when other processes share the store (its backend has events: PostgreSQL). */
bool srv_task_store_shared(const struct srv_task_store *s);

/* The thread's counters (borrowed, live as long as the store). */
const struct srv_task_store_stats *srv_task_store_stats(const struct srv_task_store *s);

/* Bucket upper bounds of commit_hist in seconds (16 entries; the last is +Inf). */
double srv_task_commit_bucket_s(unsigned i);

/* The current wall-clock time in milliseconds since the epoch. */
int64_t srv_task_now_ms(void);

#endif
