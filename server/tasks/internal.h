/* internal.h - what the files of server/tasks/ share (server/tasks/ only).
 *
 * store.c runs the store thread and the helpers of the task record (names, ids, times);
 * store_sqlite.c is the SQLite backend that thread drives, and store_sqlite_open.c opens it
 * (schema, version, checks); store_pg.c (the operations) and
 * store_pg_conn.c (connections, schema, the LISTEN thread) and store_pg_sched.c (schedules)
 * the PostgreSQL one; backend.c picks
 * one for a [tasks] store value; migrate.c is `spindle tasks migrate`.
 */
#ifndef SPINDLE_SRV_TASKS_INTERNAL_H
#define SPINDLE_SRV_TASKS_INTERNAL_H

#include <sqlite3.h>

#include "server/tasks/tasks.h"

/* Rows deleted per purge transaction when the configuration says 0. */
#define SRV_TASK_PURGE_BATCH 500

/* ---- the SQLite backend ---- */

#define SRV_SQ_NSTMT 32 /* prepared statements kept at most */

/* A change of one tenant's count of unfinished tasks in the open transaction, and the count
 * stored before it (when read: it does not change before the commit). */
struct srv_sq_delta {
    char tenant[CTX_TENANT_MAX + 1];
    long long n;
    long long stored;
    bool stored_known;
};

/* The backend's state: the connection, its prepared statements, and the changes of the tenants'
 * unfinished counts the open transaction made, written to tenant_unfinished just before its
 * COMMIT (store thread only). */
struct srv_sq_store {
    sqlite3 *db;
    sqlite3_stmt *stmt[SRV_SQ_NSTMT];
    struct srv_sq_delta *deltas;
    size_t ndeltas, deltas_cap;
};

/* The negative errno of an SQLite result code: -ENOSPC (full), -EBUSY (locked), -ENOMEM, -EIO. */
int srv_sq_errno(int rc);

/* srv_task_store_ops.open of the SQLite backend (store_sqlite_open.c). */
int srv_sq_open(const struct srv_task_store_opts *o, void **st, char *err, size_t size);

/* ---- the PostgreSQL backend (store_pg.c, store_pg_conn.c) ------------------------------------ */

#define PG_SCHEMA_VERSION 2
#define PG_CHANNEL        "spindle_tasks" /* NOTIFY payloads: "d", "c:ID:ATTEMPT", "f:ID" */

struct pg_conn;   /* libpq's PGconn */
struct pg_result; /* libpq's PGresult */
struct pg_listen; /* the LISTEN thread (store_pg_conn.c) */

/* An attempt this process runs (claimed through this backend and not finished yet). */
struct pg_running {
    char id[SRV_TASK_ID_LEN + 1];
    unsigned attempt;
};

/* A tenant's unfinished tasks as the last count found them, plus this store's inserts since
 * (pg_chunk_count: the cap is counted again only near it). */
struct pg_tenant_count {
    char tenant[CTX_TENANT_MAX + 1];
    uint64_t used;  /* an upper bound for this store's own writes */
    uint64_t at_ns; /* when it was counted (ctx_now_ns) */
};

#define PG_COUNTS_MAX 64 /* tenants remembered; beyond, the oldest count is forgotten */

/* The backend's state: the store thread's alone, but for `listen`, which has its own lock. */
struct pg_store {
    struct pg_conn *conn; /* NULL after a failed reconnect */
    char *uri;
    char where[160];                       /* the URI without its password, for messages */
    char *notify;                          /* NOTIFY statements to send with the COMMIT */
    size_t notify_len, notify_cap;         /* (empty on rollback) */
    bool notify_due;                       /* a "d" is among them */
    struct pg_running *running;            /* attempts this process runs */
    size_t nrunning, running_cap, tx_mark; /* tx_mark: nrunning at begin */
    struct pg_listen *listen;
    char errmsg[512];   /* the last failure's message (ops->errmsg) */
    bool down;          /* a reconnect failed (logged once per outage) */
    bool begin_pending; /* begin was called and BEGIN not sent yet: it goes with the first
                           statement (one round trip saved per transaction) */
    bool prepare;       /* send the statements of pg_prepared_sql as named prepared statements */
    uint32_t prepared;  /* bit i: pg_prepared_sql[i] is prepared on this connection (0 after a
                           reconnect) */
    struct pg_tenant_count counts[PG_COUNTS_MAX]; /* emptied on rollback */
    size_t ncounts;
};

/* One statement of a pipeline (pg_pipeline): in as pg_exec's arguments, out its result. */
struct pg_stmt {
    const char *sql;
    int n;
    const char *const *vals;
    const int *lens;
    const bool *bin;
    struct pg_result *res; /* out: to PQclear (NULL on failure) */
};

/* The statements sent as named server-side prepared statements (parsed once per connection,
 * planned as PostgreSQL's plan cache decides) when pg_store.prepare is set; recognised by their
 * address, so each is a static string. At most 32. */
extern const char *const pg_prepared_sql[];
extern const unsigned pg_prepared_count;
/* Bit i: pg_prepared_sql[i] is planned at every call (plan_cache_mode = force_custom_plan for
 * its transaction), where a generic plan can be much worse than a custom one. */
extern const uint32_t pg_prepared_custom;

/* Statements sent at most in one pipeline: their results (small) must fit in the socket
 * buffers while libpq still writes the statements, or both sides would wait on each other. */
#define PG_PIPELINE_MAX 128

/* Connect to `uri` with spindle's defaults (timeouts, keepalives, application_name); NULL with
 * err filled (naming `where`). */
struct pg_conn *pg_connect(const char *uri, const char *where, char *err, size_t size);
/* Reconnect p->conn when it is broken. 0 or -EIO. */
int pg_ensure(struct pg_store *p);
/* Run `sql` with `n` parameters (vals[i] NUL-terminated text, or bytea of lens[i] bytes when
 * bin[i]; NULL = SQL NULL) and binary results. *res (may be NULL: cleared here) gets the result
 * to PQclear. 0, or -EIO / -ENOSPC / -ENOMEM (the transaction is then aborted). */
int pg_exec(struct pg_store *p, const char *sql, int n, const char *const *vals, const int *lens,
            const bool *bin, struct pg_result **res);
/* Run stmts[0..n) (n <= PG_PIPELINE_MAX) in one round trip (libpq's pipeline mode), after a
 * pending BEGIN. 0 with every stmts[i].res set, or as pg_exec (every res NULL; a connection
 * left in a bad state is closed, and the next pg_ensure reconnects). */
int pg_pipeline(struct pg_store *p, struct pg_stmt *stmts, size_t n);
/* Run a parameterless statement (or several: one round trip). 0 or as pg_exec. */
int pg_simple(struct pg_store *p, const char *sql);
/* The URI without its password into out. */
void pg_redact(const char *uri, char *out, size_t size);
/* Create or migrate the schema to PG_SCHEMA_VERSION under an advisory lock; -EPROTO for a newer
 * one, -EIO; err says why. */
int pg_migrate(struct pg_store *p, char *err, size_t size);
/* The schema version of the database at p->conn (0 = none), without changing anything. */
int pg_schema_version(struct pg_store *p, unsigned *version, char *err, size_t size);

/* Start the LISTEN thread on its own connection to `uri`; notifications are queued and `wake`
 * (may be NULL) is called. NULL when out of memory or the thread cannot start. */
struct pg_listen *pg_listen_start(const char *uri, const char *where, srv_task_wake_fn *wake,
                                  void *wake_arg);
/* Stop and join the thread, free. NULL is a no-op. */
void pg_listen_stop(struct pg_listen *l);
/* Take the queued events (new array of *n, caller frees; NULL when none). */
struct srv_task_event *pg_listen_take(struct pg_listen *l, size_t *n);

/* The schedule operations of srv_task_store_pg (store_pg_sched.c): schedule_fire and
 * schedule_list of the store interface. */
int pg_schedule_fire(void *st, const char *name, int64_t tick_ms, int64_t now, struct srv_task *t,
                     unsigned cap, bool *fired);
int pg_schedule_list(void *st, srv_task_schedule_fn *fn, void *arg);

#endif
