/* store_sqlite.c - the embedded task store: one SQLite file in WAL mode, owned by one process.
 *
 * Design: every function runs on the store thread (store.c), which owns the one connection;
 * nothing here locks. Durability: WAL with synchronous=FULL, so a transaction is on disk (the WAL
 * fsynced) when COMMIT returns, and a task that got its 202 survives a power loss; NORMAL would
 * only sync the WAL at checkpoints and could lose the last commits on power loss (not on a crash
 * of the process). The store thread puts many requests in one transaction (BEGIN IMMEDIATE: it
 * takes the write lock at once instead of upgrading later), so the cost of that fsync is shared.
 *
 * The file is opened with locking_mode=EXCLUSIVE: one spindle process owns it (a second one is
 * refused at start with a clear error instead of both running the same tasks), and WAL then
 * needs no shared-memory file. Since no other process can hold a lease, every task still
 * "running" when the file is opened belongs to a process that died: open ends those leases, and
 * the store thread's first expire records the interruption and retries them.
 *
 * Schema (store_sqlite_open.c): versioned by the one-row table spindle_schema; open creates version
 * 1 when the file is new and refuses a version it does not know (a newer spindle wrote it). States
 * are stored as their enum values. Errors of an attempt are a JSON array appended with SQLite's
 * json1. Statements are prepared once and kept (sq->stmt[]).
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tasks/internal.h"

#define SQ_COLS                                                                                    \
    "id,tenant,kind,state,attempt,attempts,backoff_ms,timeout_ms,interrupted,created_ms,"          \
    "started_ms,finished_ms,run_at_ms,request_id,trace_id,idem_key,spec,errors,content_type"
#define SQ_NCOLS 19

enum sq_stmt {
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_BY_KEY,
    SQ_UNFINISHED,
    SQ_INSERT,
    SQ_DUE,
    SQ_CLAIM_ONE,
    SQ_START,
    SQ_UNSTARTED,
    SQ_HEARTBEAT,
    SQ_COMPLETE,
    SQ_FAIL,
    SQ_RELEASE,
    SQ_GET,
    SQ_GET_RESULT,
    SQ_CANCEL,
    SQ_LIST,
    SQ_PURGE,
    SQ_EXPIRE,
    SQ_COUNTS,
    SQ_OLDEST,
    SQ_QUEUED,
    SQ_SCHED_LAST,
    SQ_SCHED_SET,
    SQ_SCHED_LIST,
    SQ_UNFINISHED_ADD,
    SQ_TENANT_OF,
    SQ_BY_ID,
    SQ_EXPIRE_FINAL,
    SQ__COUNT
};

_Static_assert(SQ__COUNT <= SRV_SQ_NSTMT, "struct srv_sq_store has a slot per statement");

static const char *const sq_sql[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_BY_KEY] = "SELECT " SQ_COLS " FROM tasks WHERE tenant=?1 AND idem_key=?2",
    [SQ_UNFINISHED] = "SELECT coalesce((SELECT n FROM tenant_unfinished WHERE tenant=?1),0)",
    [SQ_INSERT] = "INSERT INTO tasks(id,tenant,kind,state,attempts,backoff_ms,timeout_ms,"
                  "created_ms,run_at_ms,request_id,trace_id,idem_key,spec)"
                  " VALUES(?1,?2,?3,0,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
    [SQ_DUE] = "SELECT id,tenant FROM tasks INDEXED BY tasks_due"
               " WHERE state IN (0,2) AND run_at_ms<=?1"
               " ORDER BY run_at_ms LIMIT ?2",
    [SQ_CLAIM_ONE] = "UPDATE tasks SET state=1, attempt=attempt+1, attempt_started=0,"
                     " lease_until_ms=?2, owner=?3 WHERE id=?1 AND state IN (0,2)",
    [SQ_START] = "UPDATE tasks SET attempt_started=1, started_ms=?3"
                 " WHERE id=?1 AND attempt=?2 AND state=1",
    [SQ_HEARTBEAT] = "UPDATE tasks SET lease_until_ms=?1 WHERE state=1 AND owner=?2",
    [SQ_COMPLETE] = "UPDATE tasks SET state=3, finished_ms=?3, result=?4, content_type=?5,"
                    " lease_until_ms=NULL, owner=NULL WHERE id=?1 AND attempt=?2 AND state=1",
    [SQ_FAIL] = "UPDATE tasks SET state=CASE WHEN ?5>0 THEN 2 ELSE 4 END,"
                " run_at_ms=CASE WHEN ?5>0 THEN ?5 ELSE run_at_ms END,"
                " finished_ms=CASE WHEN ?5>0 THEN NULL ELSE ?3 END,"
                " errors=json_insert(errors,'$[#]',json(?4)), lease_until_ms=NULL, owner=NULL"
                " WHERE id=?1 AND attempt=?2 AND state=1",
    [SQ_RELEASE] = "UPDATE tasks SET state=0, attempt=attempt-1,"
                   " started_ms=CASE WHEN attempt=1 THEN NULL ELSE started_ms END,"
                   " lease_until_ms=NULL, owner=NULL WHERE id=?1 AND attempt=?2 AND state=1",
    [SQ_GET] = "SELECT " SQ_COLS " FROM tasks WHERE tenant=?1 AND id=?2",
    [SQ_GET_RESULT] = "SELECT " SQ_COLS ",result FROM tasks WHERE tenant=?1 AND id=?2",
    [SQ_CANCEL] = "UPDATE tasks SET state=5, finished_ms=?3, lease_until_ms=NULL, owner=NULL"
                  " WHERE tenant=?1 AND id=?2 AND state IN (0,1,2)",
    [SQ_LIST] = "SELECT " SQ_COLS " FROM tasks WHERE tenant=?1 AND (?2<0 OR state=?2)"
                " AND (?3 IS NULL OR kind=?3) AND (?4 IS NULL OR id>?4) ORDER BY id LIMIT ?5",
    /* only final tasks have finished_ms (so the tenants' unfinished counts stay as they are) */
    [SQ_PURGE] = "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE"
                 " finished_ms IS NOT NULL AND finished_ms<?1 AND state>=3 LIMIT ?2)",
    [SQ_EXPIRE] = "UPDATE tasks SET interrupted=interrupted+1,"
                  " errors=json_insert(errors,'$[#]',json_object('attempt',attempt,"
                  "'code','interrupted','message','the attempt did not finish: the process"
                  " running it stopped (its lease expired)',"
                  "'at',strftime('%Y-%m-%dT%H:%M:%fZ',?1/1000.0,'unixepoch'))),"
                  " state=CASE WHEN attempt>=attempts THEN 4 ELSE 2 END,"
                  " finished_ms=CASE WHEN attempt>=attempts THEN ?1 ELSE NULL END,"
                  " run_at_ms=?1, lease_until_ms=NULL, owner=NULL"
                  " WHERE state=1 AND attempt_started=1 AND lease_until_ms<?1",
    /* Claimed and never started (it waited for a slot when its process died): given back. */
    [SQ_UNSTARTED] = "UPDATE tasks SET state=CASE WHEN attempt>1 THEN 2 ELSE 0 END,"
                     " attempt=attempt-1, run_at_ms=?1, lease_until_ms=NULL, owner=NULL"
                     " WHERE state=1 AND attempt_started=0 AND lease_until_ms<?1",
    [SQ_COUNTS] = "SELECT state,kind,count(*) FROM tasks GROUP BY state,kind",
    [SQ_OLDEST] = "SELECT min(run_at_ms) FROM tasks INDEXED BY tasks_due WHERE state IN (0,2)",
    /* The ?1 tenants with the most waiting tasks, then (tenant NULL) the others' sum. */
    [SQ_QUEUED] = "SELECT CASE WHEN rk<=?1 THEN tenant END, sum(n) FROM (SELECT tenant, count(*)"
                  " AS n, row_number() OVER (ORDER BY count(*) DESC, tenant) AS rk FROM tasks"
                  " WHERE state IN (0,2) GROUP BY tenant) GROUP BY 1 ORDER BY min(rk)",
    [SQ_SCHED_LAST] = "SELECT last_tick_ms FROM schedules WHERE name=?1",
    [SQ_SCHED_SET] = "INSERT INTO schedules(name,last_tick_ms,last_task,fired_ms)"
                     " VALUES(?1,?2,?3,?4) ON CONFLICT(name) DO UPDATE SET"
                     " last_tick_ms=excluded.last_tick_ms, last_task=excluded.last_task,"
                     " fired_ms=excluded.fired_ms",
    [SQ_SCHED_LIST] = "SELECT name,last_tick_ms,last_task,fired_ms FROM schedules ORDER BY name",
    [SQ_UNFINISHED_ADD] = "INSERT INTO tenant_unfinished(tenant,n) VALUES(?1,?2)"
                          " ON CONFLICT(tenant) DO UPDATE SET n=n+excluded.n",
    [SQ_TENANT_OF] = "SELECT tenant FROM tasks WHERE id=?1",
    [SQ_BY_ID] = "SELECT " SQ_COLS " FROM tasks WHERE id=?1",
    /* the attempts SQ_EXPIRE fails for good (their last one), by tenant */
    [SQ_EXPIRE_FINAL] = "SELECT tenant,count(*) FROM tasks INDEXED BY tasks_running WHERE state=1"
                        " AND attempt_started=1 AND lease_until_ms<?1 AND attempt>=attempts"
                        " GROUP BY tenant",
};

/* The prepared statement `i`, reset and unbound; NULL on failure. */
static sqlite3_stmt *sq_stmt(struct srv_sq_store *sq, enum sq_stmt i)
{
    if (sq->stmt[i] == NULL) {
        if (sqlite3_prepare_v3(sq->db, sq_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sq->stmt[i],
                               NULL) != SQLITE_OK)
            return NULL;
    }
    sqlite3_reset(sq->stmt[i]);
    sqlite3_clear_bindings(sq->stmt[i]);
    return sq->stmt[i];
}

/* Run a statement that returns no rows; *changes (may be NULL) gets the rows it changed. */
static int sq_run(struct srv_sq_store *sq, sqlite3_stmt *s, unsigned *changes)
{
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    int rc = sqlite3_step(s);
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return srv_sq_errno(rc);
    if (changes != NULL)
        *changes = (unsigned)sqlite3_changes(sq->db);
    return 0;
}

static void sq_text(sqlite3_stmt *s, int col, char *dst, size_t size)
{
    const unsigned char *v = sqlite3_column_text(s, col);
    snprintf(dst, size, "%s", v != NULL ? (const char *)v : "");
}

static char *sq_dup(sqlite3_stmt *s, int col, size_t *len)
{
    const void *v = sqlite3_column_blob(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n > 0)
        memcpy(p, v, n);
    p[n] = '\0';
    if (len != NULL)
        *len = n;
    return p;
}

/* Fill *t from a row of SQ_COLS (plus the result at column SQ_NCOLS when with_result). */
static int sq_row(sqlite3_stmt *s, struct srv_task *t, bool with_result)
{
    memset(t, 0, sizeof(*t));
    sq_text(s, 0, t->id, sizeof(t->id));
    sq_text(s, 1, t->tenant, sizeof(t->tenant));
    sq_text(s, 2, t->kind, sizeof(t->kind));
    t->state = (enum srv_task_state)sqlite3_column_int(s, 3);
    t->attempt = (unsigned)sqlite3_column_int(s, 4);
    t->attempts = (unsigned)sqlite3_column_int(s, 5);
    t->backoff_ms = (unsigned)sqlite3_column_int64(s, 6);
    t->timeout_ms = (unsigned)sqlite3_column_int64(s, 7);
    t->interrupted = (unsigned)sqlite3_column_int(s, 8);
    t->created_ms = sqlite3_column_int64(s, 9);
    t->started_ms = sqlite3_column_int64(s, 10);
    t->finished_ms = sqlite3_column_int64(s, 11);
    t->run_at_ms = sqlite3_column_int64(s, 12);
    sq_text(s, 13, t->request_id, sizeof(t->request_id));
    sq_text(s, 14, t->trace_id, sizeof(t->trace_id));
    sq_text(s, 15, t->idem_key, sizeof(t->idem_key));
    t->spec = sq_dup(s, 16, &t->spec_len);
    t->errors = sq_dup(s, 17, NULL);
    sq_text(s, 18, t->content_type, sizeof(t->content_type));
    if (with_result && sqlite3_column_type(s, SQ_NCOLS) != SQLITE_NULL)
        t->result = sq_dup(s, SQ_NCOLS, &t->result_len);
    bool oom = t->spec == NULL || t->errors == NULL ||
               (with_result && sqlite3_column_type(s, SQ_NCOLS) != SQLITE_NULL && !t->result);
    if (oom) {
        srv_task_fini(t);
        return -ENOMEM;
    }
    return 0;
}

/* Step a statement expected to give at most one row into *t: 0, -ENOENT (no row), or an error. */
static int sq_one(struct srv_sq_store *sq, sqlite3_stmt *s, struct srv_task *t, bool with_result)
{
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    int rc = sqlite3_step(s);
    int ret = rc == SQLITE_ROW    ? sq_row(s, t, with_result)
              : rc == SQLITE_DONE ? -ENOENT
                                  : srv_sq_errno(rc);
    sqlite3_reset(s);
    return ret;
}

static void sq_close(void *st)
{
    struct srv_sq_store *sq = st;
    if (sq == NULL)
        return;
    for (size_t i = 0; i < SRV_SQ_NSTMT; i++)
        sqlite3_finalize(sq->stmt[i]);
    sqlite3_close(sq->db);
    free(sq->deltas);
    free(sq);
}

static const char *sq_errmsg(void *st)
{
    return sqlite3_errmsg(((struct srv_sq_store *)st)->db);
}

/* ---- the tenants' unfinished counts ---------------------------------------------------------
 * A write that makes a task unfinished (enqueue) or final (complete, the last fail, cancel,
 * expire) notes +1 or -1 for its tenant in sq->deltas; commit writes each tenant's sum to
 * tenant_unfinished with one statement before COMMIT, rollback forgets them. Outside a
 * transaction (autocommit) the change is written at once. */

static int sq_unfinished_write(struct srv_sq_store *sq, const char *tenant, long long n)
{
    sqlite3_stmt *s = sq_stmt(sq, SQ_UNFINISHED_ADD);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, tenant, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, n);
    }
    return sq_run(sq, s, NULL);
}

static struct srv_sq_delta *sq_delta_find(struct srv_sq_store *sq, const char *tenant)
{
    for (size_t i = 0; i < sq->ndeltas; i++)
        if (strcmp(sq->deltas[i].tenant, tenant) == 0)
            return &sq->deltas[i];
    return NULL;
}

static int sq_unfinished_add(struct srv_sq_store *sq, const char *tenant, long long n)
{
    if (sqlite3_get_autocommit(sq->db))
        return sq_unfinished_write(sq, tenant, n);
    struct srv_sq_delta *d = sq_delta_find(sq, tenant);
    if (d == NULL) {
        if (sq->ndeltas == sq->deltas_cap) {
            size_t cap = sq->deltas_cap ? 2 * sq->deltas_cap : 8;
            struct srv_sq_delta *v = realloc(sq->deltas, cap * sizeof(*v));
            if (v == NULL)
                return -ENOMEM;
            sq->deltas = v;
            sq->deltas_cap = cap;
        }
        d = &sq->deltas[sq->ndeltas++];
        snprintf(d->tenant, sizeof(d->tenant), "%s", tenant);
        d->n = 0;
        d->stored_known = false;
    }
    d->n += n;
    return 0;
}

/* The tenant's unfinished tasks now: stored, plus the open transaction's changes. The stored
 * count is read once per transaction and tenant. */
static int sq_unfinished_get(struct srv_sq_store *sq, const char *tenant, long long *n)
{
    struct srv_sq_delta *d = sq_delta_find(sq, tenant);
    if (d == NULL || !d->stored_known) {
        sqlite3_stmt *s = sq_stmt(sq, SQ_UNFINISHED);
        if (s == NULL)
            return srv_sq_errno(sqlite3_errcode(sq->db));
        sqlite3_bind_text(s, 1, tenant, -1, SQLITE_STATIC);
        int rc = sqlite3_step(s);
        long long stored = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
        sqlite3_reset(s);
        if (rc != SQLITE_ROW)
            return srv_sq_errno(rc);
        if (d == NULL && !sqlite3_get_autocommit(sq->db)) {
            int e = sq_unfinished_add(sq, tenant, 0); /* an entry to remember it in */
            if (e != 0)
                return e;
            d = sq_delta_find(sq, tenant);
        }
        if (d == NULL) {
            *n = stored;
            return 0;
        }
        d->stored = stored;
        d->stored_known = true;
    }
    *n = d->stored + d->n;
    return 0;
}

/* -1 for the tenant of task `id` (which just became final). */
static int sq_unfinished_done(struct srv_sq_store *sq, const char *id)
{
    sqlite3_stmt *s = sq_stmt(sq, SQ_TENANT_OF);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    char tenant[CTX_TENANT_MAX + 1];
    if (rc == SQLITE_ROW)
        sq_text(s, 0, tenant, sizeof(tenant));
    sqlite3_reset(s);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? -EIO : srv_sq_errno(rc); /* it was just updated: broken */
    return sq_unfinished_add(sq, tenant, -1);
}

static int sq_begin(void *st)
{
    struct srv_sq_store *sq = st;
    sq->ndeltas = 0;
    return sq_run(sq, sq_stmt(sq, SQ_BEGIN), NULL);
}

static int sq_commit(void *st)
{
    struct srv_sq_store *sq = st;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sq->ndeltas; i++)
        if (sq->deltas[i].n != 0)
            rc = sq_unfinished_write(sq, sq->deltas[i].tenant, sq->deltas[i].n);
    if (rc != 0)
        return rc; /* the caller rolls back */
    sq->ndeltas = 0;
    return sq_run(sq, sq_stmt(sq, SQ_COMMIT), NULL);
}

static void sq_rollback(void *st)
{
    struct srv_sq_store *sq = st;
    sq->ndeltas = 0;
    if (!sqlite3_get_autocommit(sq->db))
        (void)sq_run(sq, sq_stmt(sq, SQ_ROLLBACK), NULL);
}

/* ---- writes ---------------------------------------------------------------------------------- */

static int sq_enqueue(void *st, struct srv_task *t, unsigned cap, bool *existed)
{
    struct srv_sq_store *sq = st;
    sqlite3_stmt *s;
    *existed = false;
    if (t->idem_key[0] != '\0') {
        struct srv_task old;
        s = sq_stmt(sq, SQ_BY_KEY);
        if (s != NULL) {
            sqlite3_bind_text(s, 1, t->tenant, -1, SQLITE_STATIC);
            sqlite3_bind_text(s, 2, t->idem_key, -1, SQLITE_STATIC);
        }
        int rc = sq_one(sq, s, &old, false);
        if (rc == 0) {
            bool same = old.spec_len == t->spec_len && memcmp(old.spec, t->spec, t->spec_len) == 0;
            srv_task_fini(t);
            *t = old;
            *existed = true;
            return same ? 0 : -EEXIST;
        }
        if (rc != -ENOENT)
            return rc;
    }
    long long n = 0;
    int rc = sq_unfinished_get(sq, t->tenant, &n);
    if (rc != 0)
        return rc;
    if (n >= (long long)cap)
        return -EDQUOT;
    s = sq_stmt(sq, SQ_INSERT);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, t->tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, t->kind, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 4, (int)t->attempts);
        sqlite3_bind_int64(s, 5, t->backoff_ms);
        sqlite3_bind_int64(s, 6, t->timeout_ms);
        sqlite3_bind_int64(s, 7, t->created_ms);
        sqlite3_bind_int64(s, 8, t->run_at_ms);
        sqlite3_bind_text(s, 9, t->request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 10, t->trace_id, -1, SQLITE_STATIC);
        if (t->idem_key[0] != '\0')
            sqlite3_bind_text(s, 11, t->idem_key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(s, 12, t->spec, (int)t->spec_len, SQLITE_STATIC);
    }
    rc = sq_run(sq, s, NULL);
    return rc != 0 ? rc : sq_unfinished_add(sq, t->tenant, 1);
}

/* Pick up to max of the n candidate rows (ids[], tenants[]) round-robin by tenant, so that one
 * tenant's backlog does not fill every claim; picked[] gets the indexes. Row i's turn is how many
 * rows of its tenant come before it; rows go by turn, then by their order: a counting sort, linear
 * in n for a few tenants (one tenant's backlog of a large claim must not cost n * max). */
static unsigned sq_fair_pick(char (*tenants)[CTX_TENANT_MAX + 1], unsigned n, unsigned max,
                             unsigned *picked)
{
    unsigned *turn = calloc(n ? n : 1, sizeof(*turn)), *first = calloc(n ? n : 1, sizeof(*first));
    unsigned *seen = calloc(n ? n : 1, sizeof(*seen)), *start = calloc(n + 1, sizeof(*start));
    unsigned k = 0, ntenants = 0;
    if (turn == NULL || first == NULL || seen == NULL || start == NULL) {
        for (k = 0; k < n && k < max; k++)
            picked[k] = k;
        goto out;
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned d = 0; /* tenants are few: a linear search beats hashing here */
        while (d < ntenants && strcmp(tenants[first[d]], tenants[i]) != 0)
            d++;
        if (d == ntenants)
            first[ntenants++] = i;
        turn[i] = seen[d]++;
        start[turn[i] + 1]++;
    }
    for (unsigned r = 1; r <= n; r++)
        start[r] += start[r - 1];
    for (unsigned i = 0; i < n; i++) { /* stable: within a turn, by order */
        unsigned at = start[turn[i]]++;
        if (at < max)
            picked[at] = i;
    }
    k = n < max ? n : max;
out:
    free(turn);
    free(first);
    free(seen);
    free(start);
    return k;
}

static int sq_claim(void *st, const char *owner, int64_t now, int64_t lease_until, unsigned max,
                    struct srv_task *out, unsigned *n)
{
    struct srv_sq_store *sq = st;
    *n = 0;
    unsigned cand_max = max * 4, cn = 0;
    char(*ids)[SRV_TASK_ID_LEN + 1] = calloc(cand_max, sizeof(*ids));
    char(*tenants)[CTX_TENANT_MAX + 1] = calloc(cand_max, sizeof(*tenants));
    unsigned *picked = calloc(max, sizeof(*picked));
    int rc = ids && tenants && picked ? 0 : -ENOMEM;
    sqlite3_stmt *s = rc == 0 ? sq_stmt(sq, SQ_DUE) : NULL;
    if (rc == 0 && s == NULL)
        rc = srv_sq_errno(sqlite3_errcode(sq->db));
    if (rc == 0) {
        sqlite3_bind_int64(s, 1, now);
        sqlite3_bind_int(s, 2, (int)cand_max);
        int r;
        while ((r = sqlite3_step(s)) == SQLITE_ROW && cn < cand_max) {
            sq_text(s, 0, ids[cn], sizeof(ids[cn]));
            sq_text(s, 1, tenants[cn], sizeof(tenants[cn]));
            cn++;
        }
        if (r != SQLITE_ROW && r != SQLITE_DONE)
            rc = srv_sq_errno(r);
        sqlite3_reset(s);
    }
    unsigned np = rc == 0 ? sq_fair_pick(tenants, cn, max, picked) : 0;
    for (unsigned i = 0; rc == 0 && i < np; i++) {
        /* An UPDATE then a SELECT: with RETURNING, SQLite journals the statement (dearer). */
        s = sq_stmt(sq, SQ_CLAIM_ONE);
        if (s != NULL) {
            sqlite3_bind_text(s, 1, ids[picked[i]], -1, SQLITE_STATIC);
            sqlite3_bind_int64(s, 2, lease_until);
            sqlite3_bind_text(s, 3, owner, -1, SQLITE_STATIC);
        }
        unsigned changed = 0;
        rc = sq_run(sq, s, &changed);
        if (rc != 0 || changed == 0)
            continue;
        s = sq_stmt(sq, SQ_BY_ID);
        if (s != NULL)
            sqlite3_bind_text(s, 1, ids[picked[i]], -1, SQLITE_STATIC);
        rc = sq_one(sq, s, &out[*n], false);
        if (rc == 0)
            (*n)++;
        else if (rc == -ENOENT)
            rc = -EIO; /* just claimed, so there: broken */
    }
    if (rc != 0) {
        for (unsigned i = 0; i < *n; i++)
            srv_task_fini(&out[i]);
        *n = 0;
    }
    free(ids);
    free(tenants);
    free(picked);
    return rc;
}

static int sq_heartbeat(void *st, const char *owner, int64_t lease_until, unsigned *n)
{
    sqlite3_stmt *s = sq_stmt(st, SQ_HEARTBEAT);
    if (s != NULL) {
        sqlite3_bind_int64(s, 1, lease_until);
        sqlite3_bind_text(s, 2, owner, -1, SQLITE_STATIC);
    }
    return sq_run(st, s, n);
}

/* An attempt-fenced update: 0 when it changed the task, -ESTALE when the attempt was not the
 * running one. */
static int sq_fenced(struct srv_sq_store *sq, sqlite3_stmt *s)
{
    unsigned changed = 0;
    int rc = sq_run(sq, s, &changed);
    return rc != 0 ? rc : changed == 0 ? -ESTALE : 0;
}

static int sq_complete(void *st, const char *id, unsigned attempt, int64_t now, const void *result,
                       size_t len, const char *content_type)
{
    sqlite3_stmt *s = sq_stmt(st, SQ_COMPLETE);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, (int)attempt);
        sqlite3_bind_int64(s, 3, now);
        sqlite3_bind_blob(s, 4, len > 0 ? result : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_text(s, 5, content_type, -1, SQLITE_STATIC);
    }
    int rc = sq_fenced(st, s);
    return rc != 0 ? rc : sq_unfinished_done(st, id);
}

static int sq_fail_attempt(void *st, const char *id, unsigned attempt, int64_t now,
                           const char *error_json, int64_t retry_at)
{
    sqlite3_stmt *s = sq_stmt(st, SQ_FAIL);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, (int)attempt);
        sqlite3_bind_int64(s, 3, now);
        sqlite3_bind_text(s, 4, error_json, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 5, retry_at);
    }
    int rc = sq_fenced(st, s);
    return rc != 0 || retry_at > 0 ? rc : sq_unfinished_done(st, id);
}

static int sq_release(void *st, const char *id, unsigned attempt)
{
    sqlite3_stmt *s = sq_stmt(st, SQ_RELEASE);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, (int)attempt);
    }
    return sq_fenced(st, s);
}

static int sq_get(void *st, const char *tenant, const char *id, bool with_result,
                  struct srv_task *t)
{
    sqlite3_stmt *s = sq_stmt(st, with_result ? SQ_GET_RESULT : SQ_GET);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
    }
    return sq_one(st, s, t, with_result);
}

static int sq_cancel(void *st, const char *tenant, const char *id, int64_t now, struct srv_task *t,
                     bool *was_running)
{
    int rc = sq_get(st, tenant, id, false, t);
    if (rc != 0)
        return rc;
    *was_running = t->state == SRV_TASK_RUNNING;
    if (srv_task_state_final(t->state))
        return 0;
    srv_task_fini(t);
    sqlite3_stmt *s = sq_stmt(st, SQ_CANCEL);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 3, now);
    }
    rc = sq_run(st, s, NULL);
    if (rc == 0)
        rc = sq_unfinished_add(st, tenant, -1);
    return rc != 0 ? rc : sq_get(st, tenant, id, false, t);
}

static int sq_list(void *st, const char *tenant, const struct srv_task_filter *f,
                   struct srv_task *out, unsigned *n)
{
    struct srv_sq_store *sq = st;
    *n = 0;
    sqlite3_stmt *s = sq_stmt(sq, SQ_LIST);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    sqlite3_bind_text(s, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, f->state);
    if (f->kind != NULL)
        sqlite3_bind_text(s, 3, f->kind, -1, SQLITE_STATIC);
    if (f->after != NULL)
        sqlite3_bind_text(s, 4, f->after, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, (int)f->limit);
    int r = SQLITE_DONE, rc = 0;
    while (rc == 0 && *n < f->limit && (r = sqlite3_step(s)) == SQLITE_ROW) {
        rc = sq_row(s, &out[*n], false);
        if (rc == 0)
            (*n)++;
    }
    if (rc == 0 && *n < f->limit && r != SQLITE_DONE)
        rc = srv_sq_errno(r);
    sqlite3_reset(s);
    if (rc != 0) {
        for (unsigned i = 0; i < *n; i++)
            srv_task_fini(&out[i]);
        *n = 0;
    }
    return rc;
}

static int sq_purge(void *st, int64_t before, unsigned max, unsigned *n)
{
    sqlite3_stmt *s = sq_stmt(st, SQ_PURGE);
    if (s != NULL) {
        sqlite3_bind_int64(s, 1, before);
        sqlite3_bind_int(s, 2, (int)max);
    }
    return sq_run(st, s, n);
}

/* -count for each tenant of the attempts SQ_EXPIRE is about to fail for good. */
static int sq_expire_final(struct srv_sq_store *sq, int64_t now)
{
    sqlite3_stmt *s = sq_stmt(sq, SQ_EXPIRE_FINAL);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    sqlite3_bind_int64(s, 1, now);
    int r, rc = 0;
    while (rc == 0 && (r = sqlite3_step(s)) == SQLITE_ROW) {
        char tenant[CTX_TENANT_MAX + 1];
        sq_text(s, 0, tenant, sizeof(tenant));
        rc = sq_unfinished_add(sq, tenant, -sqlite3_column_int64(s, 1));
    }
    if (rc == 0 && r != SQLITE_DONE)
        rc = srv_sq_errno(r);
    sqlite3_reset(s);
    return rc;
}

static int sq_expire(void *st, int64_t now, unsigned *n)
{
    int rc0 = sq_expire_final(st, now);
    if (rc0 != 0)
        return rc0;
    sqlite3_stmt *s = sq_stmt(st, SQ_UNSTARTED);
    if (s != NULL)
        sqlite3_bind_int64(s, 1, now);
    int rc = sq_run(st, s, NULL);
    if (rc != 0)
        return rc;
    s = sq_stmt(st, SQ_EXPIRE);
    if (s != NULL)
        sqlite3_bind_int64(s, 1, now);
    return sq_run(st, s, n);
}

static int sq_start(void *st, const char *id, unsigned attempt, int64_t now)
{
    sqlite3_stmt *s = sq_stmt(st, SQ_START);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 2, (int)attempt);
        sqlite3_bind_int64(s, 3, now);
    }
    return sq_fenced(st, s);
}

static int sq_counts(void *st, srv_task_count_fn *fn, void *arg, int64_t now,
                     int64_t *oldest_queued)
{
    struct srv_sq_store *sq = st;
    sqlite3_stmt *s = sq_stmt(sq, SQ_COUNTS);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        int state = sqlite3_column_int(s, 0);
        const unsigned char *kind = sqlite3_column_text(s, 1);
        if (state >= 0 && state < SRV_TASK_STATE__COUNT)
            fn((enum srv_task_state)state, kind ? (const char *)kind : "",
               (uint64_t)sqlite3_column_int64(s, 2), arg);
    }
    sqlite3_reset(s);
    if (r != SQLITE_DONE)
        return srv_sq_errno(r);
    s = sq_stmt(sq, SQ_OLDEST);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    r = sqlite3_step(s);
    int64_t oldest = r == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    *oldest_queued = oldest > 0 && oldest <= now ? oldest : 0; /* not due yet: no lag */
    sqlite3_reset(s);
    return r == SQLITE_ROW ? 0 : srv_sq_errno(r);
}

static int sq_queued(void *st, unsigned top, srv_task_tenant_count_fn *fn, void *arg)
{
    struct srv_sq_store *sq = st;
    sqlite3_stmt *s = sq_stmt(sq, SQ_QUEUED);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    sqlite3_bind_int64(s, 1, top);
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *tenant = sqlite3_column_text(s, 0);
        fn((const char *)tenant, (uint64_t)sqlite3_column_int64(s, 1), arg);
    }
    sqlite3_reset(s);
    return r == SQLITE_DONE ? 0 : srv_sq_errno(r);
}

/* ---- schedules --------------------------------------------------------------------------------
 */

static int sq_schedule_fire(void *st, const char *name, int64_t tick_ms, int64_t now,
                            struct srv_task *t, unsigned cap, bool *fired)
{
    struct srv_sq_store *sq = st;
    *fired = false;
    sqlite3_stmt *s = sq_stmt(sq, SQ_SCHED_LAST);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    bool done = rc == SQLITE_ROW && sqlite3_column_int64(s, 0) >= tick_ms;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return srv_sq_errno(rc);
    if (done)
        return 0;
    bool existed = false;
    rc = sq_enqueue(sq, t, cap, &existed);
    if (rc != 0)
        return rc;
    s = sq_stmt(sq, SQ_SCHED_SET);
    if (s != NULL) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, tick_ms);
        sqlite3_bind_text(s, 3, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, now);
    }
    rc = sq_run(sq, s, NULL);
    *fired = rc == 0;
    return rc;
}

static int sq_schedule_list(void *st, srv_task_schedule_fn *fn, void *arg)
{
    struct srv_sq_store *sq = st;
    sqlite3_stmt *s = sq_stmt(sq, SQ_SCHED_LIST);
    if (s == NULL)
        return srv_sq_errno(sqlite3_errcode(sq->db));
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(s, 0);
        const unsigned char *task = sqlite3_column_text(s, 2);
        fn(name ? (const char *)name : "", sqlite3_column_int64(s, 1),
           task ? (const char *)task : "", sqlite3_column_int64(s, 3), arg);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : srv_sq_errno(rc);
}

const struct srv_task_store_ops srv_task_store_sqlite = {
    .name = "sqlite",
    .open = srv_sq_open,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .enqueue = sq_enqueue,
    .claim = sq_claim,
    .heartbeat = sq_heartbeat,
    .start = sq_start,
    .complete = sq_complete,
    .fail = sq_fail_attempt,
    .release = sq_release,
    .cancel = sq_cancel,
    .get = sq_get,
    .list = sq_list,
    .purge = sq_purge,
    .expire = sq_expire,
    .counts = sq_counts,
    .queued = sq_queued,
    .schedule_fire = sq_schedule_fire,
    .schedule_list = sq_schedule_list,
};
