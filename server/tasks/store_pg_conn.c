/* store_pg_conn.c - the PostgreSQL backend's connections: connecting with spindle's defaults,
 * reconnecting, running statements, the versioned schema, and the LISTEN thread.
 *
 * Design: a PGconn is not thread-safe, so each thread that talks to the database has its own:
 * the store thread one (struct pg_store.conn, every operation of store_pg.c), the LISTEN thread
 * another (struct pg_listen.conn, nothing but LISTEN and reading notifications). Neither is
 * shared and neither is used by the loop thread.
 *
 * Reconnecting: a statement that fails on a broken connection returns -EIO (the store thread
 * rolls the batch back and its requests fail: enqueue answers 503); the next transaction's
 * begin calls pg_ensure, which reconnects. So nothing waits for the database but the store
 * thread, and everything resumes on the first transaction after it came back. TCP keepalives and
 * tcp_user_timeout bound how long a statement can hang on a dead peer; connect_timeout bounds a
 * reconnect. The URI's own settings win over these defaults.
 *
 * Prepared statements: the hot statements (pg_prepared_sql: the claim, a group's inserts,
 * starts and completions, fail, lease renewal, the events poll, the counts) are named
 * server-side prepared statements, "spindle_<i>", prepared on first use on each connection (in
 * the same pipeline as their first execution: no extra round trip) and again after a reconnect
 * (pg_store.prepared is emptied with the connection). Parsing them, and planning them where
 * PostgreSQL's plan cache (plan_cache_mode auto, left as the server has it) settles on a
 * generic plan, was a large share of the server's CPU. The claim is the exception
 * (pg_prepared_custom): on an analyzed table its generic plan is as good as a custom one, but on
 * a new one without statistics the plan cache took a generic plan that ran 9 ms a claim instead
 * of 1 (pg_stat_statements, one instance end to end), so a SET LOCAL plan_cache_mode =
 * force_custom_plan goes in front of it (same round trip; the transaction's end undoes it): it
 * is planned at every call, as before, and parsed once. A prepared statement
 * survives a rollback, so a prepare is recorded when its own result says so, and one that exists
 * already (42P05, should this ever lose track) counts as prepared. With
 * `[tasks] store_prepared = false` (pg_store.prepare unset) every statement is sent unnamed
 * (PQsendQueryParams), for poolers that do not keep prepared statements (PgBouncer in
 * transaction mode before 1.21). Results come back in binary either way.
 *
 * Round trips: a transaction's BEGIN is not sent on its own but in front of its first statement
 * (pg_simple prepends it; pg_exec sends both in one pipeline), and pg_pipeline sends many
 * statements (a group's counts for the tenant cap, its starts and completions) at once with
 * libpq's pipeline mode (libpq >= 14): on a network a round trip costs more than the statement,
 * so a batch of N enqueues takes two or three round trips (BEGIN + the counts, the inserts,
 * COMMIT) instead of N + 2.
 *
 * The schema is versioned by the table spindle_schema; pg_migrate takes a transaction-scoped
 * advisory lock, so instances starting together migrate one after the other, and refuses a
 * version newer than PG_SCHEMA_VERSION (a newer spindle wrote it).
 *
 * The LISTEN thread: blocks in poll() on its connection's socket and an eventfd (its stop);
 * queues every notification under its lock and calls the store thread's wake. When the
 * connection breaks it reconnects every second and, once listening again, queues a "due" event
 * (notifications sent meanwhile are lost; the store thread's poll finds what they said). Behind a
 * pooler in transaction mode LISTEN "succeeds" on some server connection and nothing ever
 * arrives: the poll carries everything then.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "logging/log.h"
#include "server/tasks/internal.h"

#define PG_LISTEN_QUEUE_MAX 4096

/* ---- connections ------------------------------------------------------------------------------
 */

void pg_redact(const char *uri, char *out, size_t size)
{
    const char *scheme = strstr(uri, "://");
    const char *at = scheme != NULL ? strchr(scheme + 3, '@') : NULL;
    const char *slash = scheme != NULL ? strchr(scheme + 3, '/') : NULL;
    const char *colon = scheme != NULL ? strchr(scheme + 3, ':') : NULL;
    if (at == NULL || (slash != NULL && slash < at) || colon == NULL || colon > at) {
        snprintf(out, size, "%s", uri);
        return;
    }
    snprintf(out, size, "%.*s:***%s", (int)(colon - uri), uri, at);
}

/* Server notices ("relation already exists, skipping") are not worth a line on stderr. */
static void pg_notice_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

struct pg_conn *pg_connect(const char *uri, const char *where, char *err, size_t size)
{
    /* Defaults first: the URI (dbname, expanded) comes last, so its own settings win. */
    static const char *const keys[] = {"connect_timeout",
                                       "keepalives_idle",
                                       "keepalives_interval",
                                       "keepalives_count",
                                       "tcp_user_timeout",
                                       "fallback_application_name",
                                       "dbname",
                                       NULL};
    const char *vals[] = {"5", "10", "3", "3", "15000", "spindle", uri, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(err, size, "%s: out of memory", where);
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        snprintf(err, size, "%s: cannot connect to PostgreSQL: %s", where, msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, pg_notice_quiet, NULL);
    return c;
}

int pg_ensure(struct pg_store *p)
{
    if (p->conn != NULL && PQstatus(p->conn) == CONNECTION_OK)
        return 0;
    if (p->conn != NULL)
        PQfinish(p->conn);
    char err[512];
    p->conn = pg_connect(p->uri, p->where, err, sizeof(err));
    if (p->conn == NULL) {
        snprintf(p->errmsg, sizeof(p->errmsg), "%s", err);
        if (!p->down) /* once per outage: every transaction tries again */
            LOG_W("task store: PostgreSQL unreachable", LOG_STR("error", err));
        p->down = true;
        return -EIO;
    }
    LOG_I("task store: connected to PostgreSQL", LOG_STR("store", p->where));
    p->down = false;
    p->prepared = 0; /* a new session: nothing prepared on it yet */
    return 0;
}

/* A negative errno for a failed result. */
static int pg_errno(PGresult *r)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state != NULL && strcmp(state, "53100") == 0)
        return -ENOSPC; /* disk_full */
    if (state != NULL && strcmp(state, "53200") == 0)
        return -ENOMEM; /* out_of_memory */
    return -EIO;
}

static int pg_check(struct pg_store *p, PGresult *r, const char *sql)
{
    ExecStatusType st = r != NULL ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 0;
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(p->conn));
    msg[strcspn(msg, "\n")] = '\0';
    snprintf(p->errmsg, sizeof(p->errmsg), "%s", msg);
    LOG_W("task store: PostgreSQL statement failed", LOG_STR("error", msg),
          LOG_STR("statement", sql));
    return pg_errno(r);
}

/* Read the results of a pipeline up to its sync and leave pipeline mode; false when the
 * connection cannot be brought back to a usable state (it is then closed). */
static bool pg_pipeline_end(struct pg_store *p)
{
    PGconn *c = p->conn;
    for (unsigned nulls = 0; nulls < 2 && PQstatus(c) == CONNECTION_OK;) {
        PGresult *r = PQgetResult(c);
        if (r == NULL) {
            nulls++;
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC)
            break;
    }
    if (PQexitPipelineMode(c) == 1)
        return true;
    PQfinish(c);
    p->conn = NULL;
    p->prepared = 0;
    return false;
}

/* The index of `sql` in pg_prepared_sql when it is sent prepared, else -1. */
static int pg_prep_index(const struct pg_store *p, const char *sql)
{
    if (!p->prepare)
        return -1;
    for (unsigned i = 0; i < pg_prepared_count && i < 32; i++)
        if (pg_prepared_sql[i] == sql)
            return (int)i;
    return -1;
}

/* Send statement `st` into the pipeline: prepared (and first prepared when it is not yet on this
 * connection: *prep gets its index, else -1; after a SET LOCAL of plan_cache_mode when it is
 * one of pg_prepared_custom: *set) or unnamed. false when libpq refused. */
static bool pg_send(struct pg_store *p, const struct pg_stmt *st, int *prep, bool *set)
{
    int fmts[16] = {0};
    for (int k = 0; k < st->n && k < 16; k++)
        fmts[k] = st->bin != NULL && st->bin[k];
    int i = pg_prep_index(p, st->sql);
    *prep = -1;
    *set = false;
    if (i < 0)
        return PQsendQueryParams(p->conn, st->sql, st->n, NULL, st->vals, st->lens, fmts, 1) == 1;
    char name[24];
    snprintf(name, sizeof(name), "spindle_%d", i);
    if (!(p->prepared & (UINT32_C(1) << i))) {
        if (PQsendPrepare(p->conn, name, st->sql, st->n, NULL) != 1)
            return false;
        *prep = i;
    }
    if (pg_prepared_custom & (UINT32_C(1) << i)) {
        if (PQsendQueryParams(p->conn, "SET LOCAL plan_cache_mode = force_custom_plan", 0, NULL,
                              NULL, NULL, NULL, 1) != 1)
            return false;
        *set = true;
    }
    return PQsendQueryPrepared(p->conn, name, st->n, st->vals, st->lens, fmts, 1) == 1;
}

/* Record the result of the prepare of pg_prepared_sql[i]. */
static void pg_prepare_done(struct pg_store *p, PGresult *r, int i)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if ((r != NULL && PQresultStatus(r) == PGRES_COMMAND_OK) ||
        (state != NULL && strcmp(state, "42P05") == 0)) /* duplicate_prepared_statement */
        p->prepared |= UINT32_C(1) << i;
}

int pg_pipeline(struct pg_store *p, struct pg_stmt *stmts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        stmts[i].res = NULL;
    if (p->conn == NULL) {
        snprintf(p->errmsg, sizeof(p->errmsg), "no connection to PostgreSQL");
        return -EIO;
    }
    PGconn *c = p->conn;
    if (n > PG_PIPELINE_MAX || PQenterPipelineMode(c) != 1)
        return pg_check(p, NULL, "pipeline");
    /* The results expected, in order: -1 BEGIN or SET, i >= 0 stmts[i], -2 - k the prepare of
     * pg_prepared_sql[k]. */
    int slots[1 + 3 * PG_PIPELINE_MAX];
    size_t ns = 0;
    bool sent = true;
    if (p->begin_pending) {
        p->begin_pending = false;
        sent = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 1) == 1;
        slots[ns++] = -1;
    }
    for (size_t i = 0; sent && i < n; i++) {
        int prep;
        bool set;
        sent = pg_send(p, &stmts[i], &prep, &set);
        if (prep >= 0)
            slots[ns++] = -2 - prep;
        if (set)
            slots[ns++] = -1;
        slots[ns++] = (int)i;
    }
    if (!sent || PQpipelineSync(c) != 1) {
        int rc = pg_check(p, NULL, "pipeline");
        (void)pg_pipeline_end(p);
        return rc;
    }
    int rc = 0;
    for (size_t k = 0; k < ns; k++) {
        PGresult *r = PQgetResult(c);
        int s = slots[k];
        if (s <= -2) { /* even after a failure: a prepare that succeeded stays */
            pg_prepare_done(p, r, -2 - s);
            if (rc == 0)
                rc = pg_check(p, r, pg_prepared_sql[-2 - s]);
            PQclear(r);
        } else {
            if (rc == 0)
                rc = pg_check(p, r, s < 0 ? "BEGIN or SET" : stmts[s].sql);
            if (rc == 0 && s >= 0)
                stmts[s].res = (struct pg_result *)r;
            else
                PQclear(r);
        }
        if (r != NULL && PQgetResult(c) != NULL) { /* each result ends with a NULL */
            rc = rc != 0 ? rc : pg_check(p, NULL, "pipeline");
            break;
        }
    }
    if (!pg_pipeline_end(p) && rc == 0)
        rc = -EIO;
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            PQclear((PGresult *)stmts[i].res);
            stmts[i].res = NULL;
        }
    }
    return rc;
}

int pg_exec(struct pg_store *p, const char *sql, int n, const char *const *vals, const int *lens,
            const bool *bin, struct pg_result **res)
{
    if (res != NULL)
        *res = NULL;
    if (p->conn == NULL) {
        snprintf(p->errmsg, sizeof(p->errmsg), "no connection to PostgreSQL");
        return -EIO;
    }
    /* BEGIN and the statement in one round trip; a prepared one (and its prepare) likewise */
    if (p->begin_pending || pg_prep_index(p, sql) >= 0) {
        struct pg_stmt st = {sql, n, vals, lens, bin, NULL};
        int rc = pg_pipeline(p, &st, 1);
        if (rc == 0 && res != NULL)
            *res = st.res;
        else
            PQclear((PGresult *)st.res);
        return rc;
    }
    int fmts[16] = {0};
    for (int i = 0; i < n && i < 16; i++)
        fmts[i] = bin != NULL && bin[i];
    PGresult *r = PQexecParams(p->conn, sql, n, NULL, vals, lens, fmts, 1);
    int rc = pg_check(p, r, sql);
    if (rc != 0 || res == NULL)
        PQclear(r);
    else
        *res = (struct pg_result *)r;
    return rc;
}

int pg_simple(struct pg_store *p, const char *sql)
{
    if (p->conn == NULL) {
        snprintf(p->errmsg, sizeof(p->errmsg), "no connection to PostgreSQL");
        return -EIO;
    }
    char *joined = NULL;
    if (p->begin_pending) { /* one simple query may hold several statements */
        size_t len = strlen(sql);
        joined = malloc(len + sizeof("BEGIN;"));
        if (joined == NULL)
            return -ENOMEM;
        memcpy(joined, "BEGIN;", 6);
        memcpy(joined + 6, sql, len + 1);
        p->begin_pending = false;
    }
    PGresult *r = PQexec(p->conn, joined != NULL ? joined : sql);
    int rc = pg_check(p, r, sql);
    PQclear(r);
    free(joined);
    return rc;
}

/* ---- the schema ------------------------------------------------------------------------------ */

/* migrations[v] takes a database from version v to v + 1 (v = 0: a new database). */
static const char *const pg_migrations[PG_SCHEMA_VERSION] = {
    "CREATE TABLE spindle_tasks("
    " id text PRIMARY KEY, tenant text NOT NULL, kind text NOT NULL, state smallint NOT NULL,"
    " attempt integer NOT NULL DEFAULT 0, attempts integer NOT NULL,"
    " backoff_ms bigint NOT NULL, timeout_ms bigint NOT NULL,"
    " interrupted integer NOT NULL DEFAULT 0, created_ms bigint NOT NULL, started_ms bigint,"
    " finished_ms bigint, run_at_ms bigint NOT NULL, lease_until_ms bigint, owner text,"
    " request_id text NOT NULL, trace_id text NOT NULL, idem_key text, spec bytea NOT NULL,"
    " errors text NOT NULL DEFAULT '[]', result bytea, content_type text,"
    " attempt_started boolean NOT NULL DEFAULT false);"
    "CREATE UNIQUE INDEX spindle_tasks_idem ON spindle_tasks(tenant, idem_key)"
    " WHERE idem_key IS NOT NULL;"
    /* claiming: the due tasks of each tenant (state 0 queued, 2 retrying); replaced in 2 */
    "CREATE INDEX spindle_tasks_due ON spindle_tasks(tenant, run_at_ms) WHERE state IN (0,2);"
    "CREATE INDEX spindle_tasks_due_at ON spindle_tasks(run_at_ms) WHERE state IN (0,2);"
    /* leases: expiry and heartbeats (state 1 running) */
    "CREATE INDEX spindle_tasks_lease ON spindle_tasks(lease_until_ms) WHERE state = 1;"
    "CREATE INDEX spindle_tasks_owner ON spindle_tasks(owner) WHERE state = 1;"
    "CREATE INDEX spindle_tasks_tenant ON spindle_tasks(tenant, id);"
    "CREATE INDEX spindle_tasks_finished ON spindle_tasks(finished_ms)"
    " WHERE finished_ms IS NOT NULL;"
    /* schedules: the last tick each one fired (store_pg_sched.c) */
    "CREATE TABLE spindle_schedules(name text PRIMARY KEY, last_tick_ms bigint NOT NULL,"
    " last_task text NOT NULL, fired_ms bigint NOT NULL);",
    /* 2: one index for the due tasks, in the claim's order (tenant, then oldest first, then id),
     * so that every step of the claim reads it in order and stops at its LIMIT. With a second
     * one on run_at_ms alone, a table without statistics yet (a new one fills faster than
     * autovacuum analyzes it) had the planner read and sort the whole backlog at every claim. */
    "DROP INDEX spindle_tasks_due_at;"
    "DROP INDEX spindle_tasks_due;"
    "CREATE INDEX spindle_tasks_due ON spindle_tasks(tenant, run_at_ms, id) WHERE state IN (0,2);",
};

static int pg_fail(struct pg_store *p, char *err, size_t size, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", p->conn != NULL ? PQerrorMessage(p->conn) : "not connected");
    msg[strcspn(msg, "\n")] = '\0';
    snprintf(err, size, "%s: %s: %s", p->where, what, msg);
    return -EIO;
}

int pg_schema_version(struct pg_store *p, unsigned *version, char *err, size_t size)
{
    *version = 0;
    PGresult *r = PQexecParams(p->conn,
                               "SELECT CASE WHEN to_regclass('spindle_schema') IS NULL THEN -1"
                               " ELSE 0 END",
                               0, NULL, NULL, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    bool exists = ok && strcmp(PQgetvalue(r, 0, 0), "0") == 0;
    PQclear(r);
    if (!ok)
        return pg_fail(p, err, size, "cannot read the task store's schema");
    if (!exists)
        return 0;
    r = PQexecParams(p->conn, "SELECT coalesce(max(version), 0) FROM spindle_schema", 0, NULL, NULL,
                     NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        *version = (unsigned)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return ok ? 0 : pg_fail(p, err, size, "cannot read the task store's schema version");
}

int pg_migrate(struct pg_store *p, char *err, size_t size)
{
    unsigned version = 0;
    /* One instance at a time: the others wait here, then find the schema current. */
    if (pg_simple(p, "BEGIN; SELECT pg_advisory_xact_lock(7303374683136150017);"
                     "CREATE TABLE IF NOT EXISTS spindle_schema(version integer NOT NULL)") != 0)
        goto err;
    if (pg_schema_version(p, &version, err, size) != 0)
        goto err_rollback;
    if (version > PG_SCHEMA_VERSION) {
        (void)pg_simple(p, "ROLLBACK");
        snprintf(err, size,
                 "%s: the task store has schema version %u, newer than this spindle's %d: run a "
                 "newer spindle (or another store)",
                 p->where, version, PG_SCHEMA_VERSION);
        return -EPROTO;
    }
    for (unsigned v = version; v < PG_SCHEMA_VERSION; v++) {
        if (pg_simple(p, pg_migrations[v]) != 0)
            goto err;
        LOG_I("task store: schema migrated", LOG_UINT("from", v), LOG_UINT("to", v + 1));
    }
    if (version < PG_SCHEMA_VERSION) {
        char sql[128];
        snprintf(sql, sizeof(sql),
                 "DELETE FROM spindle_schema; INSERT INTO spindle_schema"
                 " VALUES(%d)",
                 PG_SCHEMA_VERSION);
        if (pg_simple(p, sql) != 0)
            goto err;
    }
    if (pg_simple(p, "COMMIT") != 0)
        goto err;
    return 0;

err:
    pg_fail(p, err, size, "cannot create or migrate the task store's schema");
err_rollback:
    (void)pg_simple(p, "ROLLBACK");
    return -EIO;
}

/* ---- the LISTEN thread ----------------------------------------------------------------------- */

struct pg_listen {
    char *uri;
    char where[160];
    srv_task_wake_fn *wake;
    void *wake_arg;
    int stop_fd; /* eventfd: written once to stop */
    pthread_t thread;
    pthread_mutex_t lock;
    struct srv_task_event *q; /* lock */
    size_t nq, capq;          /* lock */
};

static void listen_push(struct pg_listen *l, const struct srv_task_event *ev)
{
    pthread_mutex_lock(&l->lock);
    if (l->nq == l->capq && l->capq < PG_LISTEN_QUEUE_MAX) {
        size_t cap = l->capq ? 2 * l->capq : 16;
        struct srv_task_event *q = realloc(l->q, cap * sizeof(*q));
        if (q != NULL) {
            l->q = q;
            l->capq = cap;
        }
    }
    /* Beyond the bound the event is dropped: the store thread's poll finds it again. */
    if (l->nq < l->capq)
        l->q[l->nq++] = *ev;
    pthread_mutex_unlock(&l->lock);
}

/* A notification's payload as an event; false for one that is not ours. */
static bool listen_parse(const char *s, struct srv_task_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (strcmp(s, "d") == 0) {
        ev->kind = SRV_TASK_EV_DUE;
        return true;
    }
    size_t n = strlen(s);
    if (n < 3 || s[1] != ':')
        return false;
    const char *id = s + 2, *end = strchr(id, ':');
    size_t idlen = end != NULL ? (size_t)(end - id) : strlen(id);
    if (idlen == 0 || idlen > SRV_TASK_ID_LEN)
        return false;
    memcpy(ev->id, id, idlen);
    if (s[0] == 'f' && end == NULL) {
        ev->kind = SRV_TASK_EV_CHANGED;
        return true;
    }
    if (s[0] == 'c' && end != NULL) {
        ev->kind = SRV_TASK_EV_LOST;
        ev->attempt = (unsigned)strtoul(end + 1, NULL, 10);
        return ev->attempt > 0;
    }
    return false;
}

/* Wait up to ms for the stop; true when stopping. */
static bool listen_wait(struct pg_listen *l, int fd, int ms)
{
    struct pollfd pf[2] = {{.fd = l->stop_fd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    int r = poll(pf, fd >= 0 ? 2 : 1, ms);
    return r > 0 && (pf[0].revents & POLLIN);
}

static PGconn *listen_connect(struct pg_listen *l, bool *logged)
{
    char err[512];
    PGconn *c = pg_connect(l->uri, l->where, err, sizeof(err));
    if (c != NULL) {
        PGresult *r = PQexec(c, "LISTEN " PG_CHANNEL);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok) {
            *logged = false;
            return c;
        }
        snprintf(err, sizeof(err), "%s: LISTEN failed: %s", l->where, PQerrorMessage(c));
        PQfinish(c);
    }
    if (!*logged) /* once per outage, not every second */
        LOG_W("task store: notifications unavailable, polling", LOG_STR("error", err));
    *logged = true;
    return NULL;
}

static void *listen_main(void *arg)
{
    struct pg_listen *l = arg;
    log_thread_name_set("tasks-listen");
    PGconn *c = NULL;
    bool logged = false;
    for (;;) {
        if (c == NULL) {
            c = listen_connect(l, &logged);
            if (c == NULL) {
                if (listen_wait(l, -1, 1000))
                    break;
                continue;
            }
            /* Whatever was sent while nobody listened: claim and let the poll find the rest. */
            listen_push(l, &(struct srv_task_event){.kind = SRV_TASK_EV_DUE});
            if (l->wake != NULL)
                l->wake(l->wake_arg);
        }
        if (listen_wait(l, PQsocket(c), 1000))
            break;
        bool any = false;
        if (PQconsumeInput(c) == 1) {
            PGnotify *n;
            while ((n = PQnotifies(c)) != NULL) {
                struct srv_task_event ev;
                if (listen_parse(n->extra, &ev)) {
                    listen_push(l, &ev);
                    any = true;
                }
                PQfreemem(n);
            }
        }
        if (any && l->wake != NULL)
            l->wake(l->wake_arg);
        if (PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = NULL;
        }
    }
    if (c != NULL)
        PQfinish(c);
    return NULL;
}

struct pg_listen *pg_listen_start(const char *uri, const char *where, srv_task_wake_fn *wake,
                                  void *wake_arg)
{
    struct pg_listen *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->uri = strdup(uri);
    snprintf(l->where, sizeof(l->where), "%s", where);
    l->wake = wake;
    l->wake_arg = wake_arg;
    l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->uri == NULL || l->stop_fd < 0)
        goto err_free;
    if (pthread_mutex_init(&l->lock, NULL) != 0)
        goto err_free;
    /* Signals belong to the loop thread: this one blocks them all. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&l->thread, NULL, listen_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        goto err_mutex;
    return l;

err_mutex:
    pthread_mutex_destroy(&l->lock);
err_free:
    if (l->stop_fd >= 0)
        close(l->stop_fd);
    free(l->uri);
    free(l);
    return NULL;
}

void pg_listen_stop(struct pg_listen *l)
{
    if (l == NULL)
        return;
    uint64_t one = 1;
    if (write(l->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
        abort(); /* an eventfd we own that is never full: broken invariant */
    if (pthread_join(l->thread, NULL) != 0)
        abort();
    pthread_mutex_destroy(&l->lock);
    close(l->stop_fd);
    free(l->q);
    free(l->uri);
    free(l);
}

struct srv_task_event *pg_listen_take(struct pg_listen *l, size_t *n)
{
    pthread_mutex_lock(&l->lock);
    struct srv_task_event *q = l->q;
    *n = l->nq;
    l->q = NULL;
    l->nq = l->capq = 0;
    pthread_mutex_unlock(&l->lock);
    return q;
}
