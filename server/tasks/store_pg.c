/* store_pg.c - the shared task store: one PostgreSQL database that many spindle instances feed
 * and drain, the same operations and semantics as the embedded SQLite store.
 *
 * Design: every function runs on the store thread, which owns one connection (store_pg_conn.c
 * has the connections, the schema and the LISTEN thread). A batch of requests is one transaction
 * (group commit: many enqueues, one commit); a committed transaction is durable with the
 * server's synchronous_commit (on by default). The writes of a batch that arrived together
 * (enqueues, the runner's starts and completions: pg_write_many) go to the server in pipelines,
 * each kind as ONE statement over array parameters (parsing and planning a statement per task
 * cost the server more than the writes), so a batch costs a few round trips and a few
 * statements whatever its size (and the frequent statements are prepared once per connection:
 * pg_prepared_sql, store_pg_conn.c); the tenant cap of its enqueues is counted once per tenant, and
 * only near the cap (pg_chunk_count: far below it, the last second's count stands in).
 *
 * Sharing: claiming locks candidate rows with FOR UPDATE SKIP LOCKED, so instances claiming at
 * once never wait for each other nor take the same task; it is fair by tenant across instances:
 * the due tenants are found by a skip scan of an index, each gives its oldest due tasks, and
 * every tenant's first one is taken before any tenant's second (row_number() per tenant). One
 * index serves every step, in the claim's order: the due tasks (tenant, run_at_ms, id), so each
 * step reads a few entries and stops at its LIMIT whatever the planner thinks of the table (a new
 * table without statistics yet included); the oldest due task (metrics, the poll) is found the
 * same way, one index entry per tenant, instead of by a second index. A
 * running attempt holds a lease (lease_until_ms, owner); fencing is by attempt number as in
 * SQLite, so a late completion from an instance that lost its lease (or died and came back)
 * changes nothing. Every instance expires leases that ran out; the UPDATE's row locks make one
 * of them do it.
 *
 * Events: a transaction that makes tasks due sends NOTIFY "d", one that cancels an attempt
 * running elsewhere "c:ID:ATTEMPT", one that ends a task "f:ID" (long-polls elsewhere), all with
 * its COMMIT (one round trip; PostgreSQL delivers them only if it commits). The backend keeps the
 * attempts this process runs (pg_store.running), so events() can tell which cancellations are
 * its own and, when polled, ask the database which of them are no longer its own (cancelled, or
 * lease lost) — the fallback when notifications do not arrive.
 *
 * Not here: clocks. now and lease_until come from the instance's wall clock, so instances need
 * synchronised clocks (NTP); a skew eats into lease_ms.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tasks/internal.h"

#define PG_COLS                                                                                    \
    "id,tenant,kind,state,attempt,attempts,backoff_ms,timeout_ms,interrupted,created_ms,"          \
    "started_ms,finished_ms,run_at_ms,request_id,trace_id,idem_key,spec,errors,content_type"
#define PG_NCOLS 19
#define PG_T_COLS                                                                                  \
    "t.id,t.tenant,t.kind,t.state,t.attempt,t.attempts,t.backoff_ms,t.timeout_ms,t.interrupted,"   \
    "t.created_ms,t.started_ms,t.finished_ms,t.run_at_ms,t.request_id,t.trace_id,t.idem_key,"      \
    "t.spec,t.errors,t.content_type"
/* Append the JSON object $N to the errors array (text, kept as written). */
#define PG_ERRORS_APPEND(obj)                                                                      \
    "errors=CASE WHEN errors='[]' THEN '['||" obj "||']' ELSE left(errors,-1)||','||" obj          \
    "||']' END"

static const char pg_sql_enqueue[] =
    "INSERT INTO spindle_tasks(id,tenant,kind,state,attempts,backoff_ms,timeout_ms,created_ms,"
    "run_at_ms,request_id,trace_id,idem_key,spec)"
    " SELECT $1::text,$2::text,$3::text,0,$4::int,$5::bigint,$6::bigint,$7::bigint,$8::bigint,"
    "$9::text,$10::text,$11::text,$12::bytea WHERE (SELECT count(*) FROM (SELECT 1 FROM"
    " spindle_tasks WHERE tenant=$2::text AND state IN (0,1,2) LIMIT $13::bigint) u)<$13::bigint"
    " ON CONFLICT (tenant,idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING id";

/* The oldest run_at_ms of the queued and retrying tasks (due or not), NULL when none: a skip scan
 * of the tenants in the due index, then each tenant's first entry; it reads a few index pages per
 * tenant instead of the backlog. */
#define PG_SQL_OLDEST                                                                              \
    "WITH RECURSIVE tn(tenant) AS ("                                                               \
    " (SELECT tenant FROM spindle_tasks WHERE state IN (0,2) ORDER BY tenant LIMIT 1)"             \
    " UNION ALL SELECT (SELECT t.tenant FROM spindle_tasks t WHERE t.state IN (0,2)"               \
    "  AND t.tenant>tn.tenant ORDER BY t.tenant LIMIT 1) FROM tn WHERE tn.tenant IS NOT NULL)"     \
    " SELECT min((SELECT t.run_at_ms FROM spindle_tasks t WHERE t.tenant=tn.tenant AND"            \
    " t.state IN (0,2) ORDER BY t.run_at_ms LIMIT 1)) AS m FROM tn WHERE tn.tenant IS NOT NULL"

/* Fair claim: the due tenants by a skip scan (at most 1000 per claim), up to $2 oldest due tasks
 * of each, locked or skipped, ranked within their tenant; rank 1 of every tenant first. The
 * picked ids are updated through = ANY(ARRAY(...)), an index scan of the primary key: joined to
 * the CTE (estimated at the whole backlog) the planner hashed a sequential scan of the table. */
static const char pg_sql_claim[] =
    "WITH RECURSIVE tn(tenant) AS ("
    " (SELECT tenant FROM spindle_tasks WHERE state IN (0,2) AND run_at_ms<=$1::bigint"
    "  ORDER BY tenant LIMIT 1)"
    " UNION ALL SELECT (SELECT t.tenant FROM spindle_tasks t WHERE t.state IN (0,2)"
    "  AND t.run_at_ms<=$1::bigint AND t.tenant>tn.tenant ORDER BY t.tenant LIMIT 1)"
    " FROM tn WHERE tn.tenant IS NOT NULL),"
    " cand AS (SELECT c.id, c.run_at_ms,"
    "  row_number() OVER (PARTITION BY c.tenant ORDER BY c.run_at_ms, c.id) AS rk"
    "  FROM (SELECT tenant FROM tn WHERE tenant IS NOT NULL LIMIT 1000) d,"
    "  LATERAL (SELECT id, tenant, run_at_ms FROM spindle_tasks t WHERE t.tenant=d.tenant"
    "   AND t.state IN (0,2) AND t.run_at_ms<=$1::bigint ORDER BY t.run_at_ms, t.id"
    "   LIMIT $2::int FOR UPDATE SKIP LOCKED) c),"
    " pick AS (SELECT id FROM cand ORDER BY rk, run_at_ms, id LIMIT $2::int)"
    " UPDATE spindle_tasks t SET state=1, attempt=t.attempt+1, attempt_started=false,"
    " lease_until_ms=$3::bigint, owner=$4::text WHERE t.id=ANY(ARRAY(SELECT id FROM pick))"
    " RETURNING " PG_T_COLS;

static const char pg_sql_fail[] =
    "UPDATE spindle_tasks SET state=CASE WHEN $5::bigint>0 THEN 2 ELSE 4 END,"
    " run_at_ms=CASE WHEN $5::bigint>0 THEN $5::bigint ELSE run_at_ms END,"
    " finished_ms=CASE WHEN $5::bigint>0 THEN NULL ELSE $3::bigint END," PG_ERRORS_APPEND(
        "$4::text") ", lease_until_ms=NULL, owner=NULL"
                    " WHERE id=$1::text AND attempt=$2::int AND state=1";

static const char pg_sql_expire[] =
    "UPDATE spindle_tasks SET interrupted=interrupted+1," PG_ERRORS_APPEND(
        "json_build_object('attempt',attempt,'code','interrupted','message','the attempt did"
        " not finish: the process running it stopped (its lease expired)','at_ms',"
        "$1::bigint)::text") ", state=CASE WHEN attempt>=attempts THEN 4 ELSE 2 END,"
                             " finished_ms=CASE WHEN attempt>=attempts THEN $1::bigint ELSE NULL"
                             " END, run_at_ms=$1::bigint, lease_until_ms=NULL, owner=NULL"
                             " WHERE state=1 AND attempt_started AND lease_until_ms<$1::bigint";

static const char pg_sql_start[] =
    "UPDATE spindle_tasks SET attempt_started=true, started_ms=$3::bigint"
    " WHERE id=$1::text AND attempt=$2::int AND state=1";

static const char pg_sql_complete[] =
    "UPDATE spindle_tasks SET state=3, finished_ms=$3::bigint, result=$4::bytea,"
    " content_type=$5::text, lease_until_ms=NULL, owner=NULL"
    " WHERE id=$1::text AND attempt=$2::int AND state=1";

/* Claimed and never started (it waited for a slot when its process died): given back unused. */
static const char pg_sql_unstarted[] =
    "UPDATE spindle_tasks SET state=CASE WHEN attempt>1 THEN 2 ELSE 0 END, attempt=attempt-1,"
    " run_at_ms=$1::bigint, lease_until_ms=NULL, owner=NULL"
    " WHERE state=1 AND NOT attempt_started AND lease_until_ms<$1::bigint";

static const char pg_sql_release[] =
    "UPDATE spindle_tasks SET state=0, attempt=attempt-1,"
    " started_ms=CASE WHEN attempt=1 THEN NULL ELSE started_ms END,"
    " lease_until_ms=NULL, owner=NULL"
    " WHERE id=$1::text AND attempt=$2::int AND state=1";

static const char pg_sql_heartbeat[] =
    "UPDATE spindle_tasks SET lease_until_ms=$1::bigint WHERE state=1 AND owner=$2::text";

static const char pg_sql_counts[] =
    "SELECT state,kind,count(*) FROM spindle_tasks GROUP BY state,kind";

/* The oldest due run_at_ms (NULL when nothing is due), and whether anything is due (the poll). */
static const char pg_sql_oldest_due[] =
    "SELECT CASE WHEN m<=$1::bigint THEN m END FROM (" PG_SQL_OLDEST ") o";
static const char pg_sql_due[] = "SELECT 1 FROM (" PG_SQL_OLDEST ") o WHERE m<=$1::bigint";

/* The attempts among $1/$2 that are no longer owner $3's (cancelled, or the lease lost). */
static const char pg_sql_lost[] =
    "SELECT r.id, r.attempt FROM unnest($1::text[], $2::int[]) AS r(id, attempt)"
    " WHERE NOT EXISTS (SELECT 1 FROM spindle_tasks t WHERE t.id=r.id AND"
    " t.state=1 AND t.attempt=r.attempt AND t.owner=$3::text)";

/* ---- results --------------------------------------------------------------------------------- */

static int64_t pg_int(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    uint64_t x = 0;
    for (int i = 0; i < len && i < 8; i++)
        x = x << 8 | v[i];
    if (len == 2)
        return (int16_t)x;
    if (len == 4)
        return (int32_t)x;
    return (int64_t)x;
}

static void pg_text(const PGresult *r, int row, int col, char *dst, size_t size)
{
    int len = PQgetisnull(r, row, col) ? 0 : PQgetlength(r, row, col);
    snprintf(dst, size, "%.*s", len, PQgetvalue(r, row, col));
}

static char *pg_dup(const PGresult *r, int row, int col, size_t *len)
{
    size_t n = PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n > 0)
        memcpy(p, PQgetvalue(r, row, col), n);
    p[n] = '\0';
    if (len != NULL)
        *len = n;
    return p;
}

/* Fill *t from row `row` of PG_COLS (plus the result after them when with_result). */
static int pg_row(const PGresult *r, int row, struct srv_task *t, bool with_result)
{
    memset(t, 0, sizeof(*t));
    pg_text(r, row, 0, t->id, sizeof(t->id));
    pg_text(r, row, 1, t->tenant, sizeof(t->tenant));
    pg_text(r, row, 2, t->kind, sizeof(t->kind));
    t->state = (enum srv_task_state)pg_int(r, row, 3);
    t->attempt = (unsigned)pg_int(r, row, 4);
    t->attempts = (unsigned)pg_int(r, row, 5);
    t->backoff_ms = (unsigned)pg_int(r, row, 6);
    t->timeout_ms = (unsigned)pg_int(r, row, 7);
    t->interrupted = (unsigned)pg_int(r, row, 8);
    t->created_ms = pg_int(r, row, 9);
    t->started_ms = pg_int(r, row, 10);
    t->finished_ms = pg_int(r, row, 11);
    t->run_at_ms = pg_int(r, row, 12);
    pg_text(r, row, 13, t->request_id, sizeof(t->request_id));
    pg_text(r, row, 14, t->trace_id, sizeof(t->trace_id));
    pg_text(r, row, 15, t->idem_key, sizeof(t->idem_key));
    t->spec = pg_dup(r, row, 16, &t->spec_len);
    t->errors = pg_dup(r, row, 17, NULL);
    pg_text(r, row, 18, t->content_type, sizeof(t->content_type));
    bool has_result = with_result && !PQgetisnull(r, row, PG_NCOLS);
    if (has_result)
        t->result = pg_dup(r, row, PG_NCOLS, &t->result_len);
    if (t->spec == NULL || t->errors == NULL || (has_result && t->result == NULL)) {
        srv_task_fini(t);
        return -ENOMEM;
    }
    return 0;
}

/* Run a query expected to give at most one task row into *t: 0, -ENOENT or an error. */
static int pg_one(struct pg_store *p, const char *sql, int n, const char *const *vals,
                  const int *lens, const bool *bin, struct srv_task *t, bool with_result)
{
    PGresult *r;
    int rc = pg_exec(p, sql, n, vals, lens, bin, &r);
    if (rc != 0)
        return rc;
    rc = PQntuples(r) == 0 ? -ENOENT : pg_row(r, 0, t, with_result);
    PQclear(r);
    return rc;
}

/* Rows affected by a statement without a result set. */
static int pg_changes(struct pg_store *p, const char *sql, int n, const char *const *vals,
                      const int *lens, const bool *bin, unsigned *changes)
{
    PGresult *r;
    int rc = pg_exec(p, sql, n, vals, lens, bin, &r);
    if (rc != 0)
        return rc;
    if (changes != NULL)
        *changes = (unsigned)strtoul(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return 0;
}

#define PG_I64(buf, v) (snprintf((buf), sizeof(buf), "%" PRId64, (int64_t)(v)), (buf))

/* ---- notifications and the attempts this process runs ---------------------------------------- */

/* Queue `payload` (ids and digits only: nothing to quote) for the COMMIT. */
static void pg_notify(struct pg_store *p, const char *payload)
{
    bool due = strcmp(payload, "d") == 0;
    if (due && p->notify_due)
        return;
    size_t need = p->notify_len + strlen(payload) + sizeof("NOTIFY " PG_CHANNEL ",'';") + 1;
    if (need > p->notify_cap) {
        size_t cap = need < 256 ? 256 : 2 * need;
        char *n = realloc(p->notify, cap);
        if (n == NULL)
            return; /* the poll finds what this would have said */
        p->notify = n;
        p->notify_cap = cap;
    }
    p->notify_len +=
        (size_t)sprintf(p->notify + p->notify_len, "NOTIFY " PG_CHANNEL ",'%s';", payload);
    p->notify_due |= due;
}

static void pg_running_add(struct pg_store *p, const char *id, unsigned attempt)
{
    if (p->nrunning == p->running_cap) {
        size_t cap = p->running_cap ? 2 * p->running_cap : 16;
        struct pg_running *v = realloc(p->running, cap * sizeof(*v));
        if (v == NULL)
            return; /* its cancellation elsewhere is then seen at the lease's end only */
        p->running = v;
        p->running_cap = cap;
    }
    struct pg_running *e = &p->running[p->nrunning++];
    snprintf(e->id, sizeof(e->id), "%s", id);
    e->attempt = attempt;
}

/* Forget attempt `attempt` of `id` (0 = any attempt); true when it was there. */
static bool pg_running_del(struct pg_store *p, const char *id, unsigned attempt)
{
    for (size_t i = 0; i < p->nrunning; i++) {
        if (strcmp(p->running[i].id, id) == 0 &&
            (attempt == 0 || p->running[i].attempt == attempt)) {
            /* In order: the attempts claimed by the open transaction stay last (rollback). */
            memmove(&p->running[i], &p->running[i + 1],
                    (p->nrunning - i - 1) * sizeof(*p->running));
            p->nrunning--;
            if (i < p->tx_mark)
                p->tx_mark--;
            return true;
        }
    }
    return false;
}

/* ---- open, close, transactions --------------------------------------------------------------- */

static int pg_open(const struct srv_task_store_opts *o, void **st, char *err, size_t size)
{
    struct pg_store *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->uri = strdup(o->path)) == NULL) {
        free(p);
        snprintf(err, size, "out of memory");
        return -ENOMEM;
    }
    pg_redact(o->path, p->where, sizeof(p->where));
    p->prepare = !o->unprepared;
    int rc = -EIO;
    p->conn = pg_connect(p->uri, p->where, err, size);
    if (p->conn == NULL)
        goto err_free;
    if ((rc = pg_migrate(p, err, size)) != 0)
        goto err_close;
    p->listen = pg_listen_start(p->uri, p->where, o->wake, o->wake_arg);
    if (p->listen == NULL) {
        rc = -ENOMEM;
        snprintf(err, size, "%s: cannot start the LISTEN thread", p->where);
        goto err_close;
    }
    *st = p;
    return 0;

err_close:
    PQfinish(p->conn);
err_free:
    free(p->uri);
    free(p);
    return rc;
}

static void pg_close(void *st)
{
    struct pg_store *p = st;
    if (p == NULL)
        return;
    pg_listen_stop(p->listen);
    if (p->conn != NULL)
        PQfinish(p->conn);
    free(p->notify);
    free(p->running);
    free(p->uri);
    free(p);
}

static const char *pg_errmsg(void *st)
{
    const struct pg_store *p = st;
    return p->errmsg;
}

static int pg_begin(void *st)
{
    struct pg_store *p = st;
    p->notify_len = 0;
    p->notify_due = false;
    p->tx_mark = p->nrunning;
    int rc = pg_ensure(p);
    p->begin_pending = rc == 0; /* sent with the first statement */
    return rc;
}

static int pg_commit(void *st)
{
    struct pg_store *p = st;
    int rc;
    if (p->begin_pending) { /* nothing ran: no transaction to end */
        p->begin_pending = false;
        rc = 0;
    } else if (p->notify_len > 0) { /* the notifications and the COMMIT in one round trip */
        char *sql = malloc(p->notify_len + sizeof("COMMIT"));
        if (sql == NULL)
            return -ENOMEM;
        memcpy(sql, p->notify, p->notify_len);
        memcpy(sql + p->notify_len, "COMMIT", sizeof("COMMIT"));
        rc = pg_simple(p, sql);
        free(sql);
    } else {
        rc = pg_simple(p, "COMMIT");
    }
    p->notify_len = 0;
    p->notify_due = false;
    return rc;
}

static void pg_rollback(void *st)
{
    struct pg_store *p = st;
    p->ncounts = 0; /* they may count inserts that never happened: count again */
    p->notify_len = 0;
    p->notify_due = false;
    p->nrunning = p->tx_mark; /* the claims of this transaction never happened */
    p->begin_pending = false;
    if (p->conn != NULL && PQtransactionStatus(p->conn) != PQTRANS_IDLE)
        (void)pg_simple(p, "ROLLBACK");
}

/* ---- writes ---------------------------------------------------------------------------------- */

static int pg_by_key(struct pg_store *p, const char *tenant, const char *key, struct srv_task *t)
{
    const char *v[] = {tenant, key};
    return pg_one(p, "SELECT " PG_COLS " FROM spindle_tasks WHERE tenant=$1 AND idem_key=$2", 2, v,
                  NULL, NULL, t, false);
}

/* The stored task of t's key replaces *t: 0 (same spec) or -EEXIST; -ENOENT when none. */
static int pg_existing(struct pg_store *p, struct srv_task *t, bool *existed)
{
    struct srv_task old;
    int rc = pg_by_key(p, t->tenant, t->idem_key, &old);
    if (rc != 0)
        return rc;
    bool same = old.spec_len == t->spec_len && memcmp(old.spec, t->spec, t->spec_len) == 0;
    srv_task_fini(t);
    *t = old;
    *existed = true;
    return same ? 0 : -EEXIST;
}

/* The insert of one task: its parameters (pointing into t and the struct itself). */
struct pg_insert {
    char b[6][24];
    const char *v[13];
    int lens[13];
    bool bin[13];
};

static void pg_insert_fill(struct pg_insert *in, const struct srv_task *t, unsigned cap)
{
    memset(in->lens, 0, sizeof(in->lens));
    memset(in->bin, 0, sizeof(in->bin));
    const char *v[] = {t->id,
                       t->tenant,
                       t->kind,
                       PG_I64(in->b[0], t->attempts),
                       PG_I64(in->b[1], t->backoff_ms),
                       PG_I64(in->b[2], t->timeout_ms),
                       PG_I64(in->b[3], t->created_ms),
                       PG_I64(in->b[4], t->run_at_ms),
                       t->request_id,
                       t->trace_id,
                       t->idem_key[0] != '\0' ? t->idem_key : NULL,
                       t->spec,
                       PG_I64(in->b[5], cap)};
    memcpy(in->v, v, sizeof(v));
    in->lens[11] = (int)t->spec_len;
    in->bin[11] = true;
}

/* After the insert of t: `inserted` or not (the key is taken, by an earlier request or another
 * instance, or the tenant is full). The enqueue's code. */
static int pg_inserted(struct pg_store *p, struct srv_task *t, bool inserted, bool *existed)
{
    if (inserted) {
        if (t->run_at_ms <= srv_task_now_ms()) /* a delayed one: the instances' polls find it */
            pg_notify(p, "d");
        return 0;
    }
    int rc = t->idem_key[0] != '\0' ? pg_existing(p, t, existed) : -ENOENT;
    return rc == -ENOENT ? -EDQUOT : rc;
}

static int pg_enqueue(void *st, struct srv_task *t, unsigned cap, bool *existed)
{
    struct pg_store *p = st;
    *existed = false;
    struct pg_insert in;
    pg_insert_fill(&in, t, cap);
    PGresult *r;
    /* The key is checked by the insert (ON CONFLICT): a repeat is found after it, one round
     * trip fewer for a new key. */
    int rc = pg_exec(p, pg_sql_enqueue, 13, in.v, in.lens, in.bin, &r);
    if (rc != 0)
        return rc;
    bool inserted = PQntuples(r) == 1;
    PQclear(r);
    return pg_inserted(p, t, inserted, existed);
}

static const char pg_sql_unfinished[] =
    "SELECT count(*) FROM (SELECT 1 FROM spindle_tasks WHERE tenant=$1::text AND"
    " state IN (0,1,2) LIMIT $2::bigint) u";

/* A one-dimensional array parameter in PostgreSQL's binary format (array_recv): a header, then
 * each element as its length and its bytes (text and bytea as they are, int4 big-endian). */
struct pg_arr {
    char *buf;
    size_t len, cap;
};

#define PG_OID_BYTEA 17
#define PG_OID_INT4  23
#define PG_OID_INT8  20
#define PG_OID_TEXT  25

static void pg_arr_put32(char *at, uint32_t v)
{
    v = htonl(v);
    memcpy(at, &v, 4);
}

/* Append an element of `len` bytes; false when out of memory. */
static bool pg_arr_add(struct pg_arr *a, const void *data, size_t len)
{
    if (a->len + 4 + len > a->cap) {
        size_t cap = 2 * (a->len + 4 + len) + 64;
        char *b = realloc(a->buf, cap);
        if (b == NULL)
            return false;
        a->buf = b;
        a->cap = cap;
    }
    pg_arr_put32(a->buf + a->len, (uint32_t)len);
    if (data != NULL && len > 0)
        memcpy(a->buf + a->len + 4, data, len);
    a->len += 4 + len;
    return true;
}

/* Start an array of `n` elements of type `oid`. */
static bool pg_arr_begin(struct pg_arr *a, uint32_t oid, unsigned n)
{
    a->len = 0;
    if (!pg_arr_add(a, NULL, 16)) /* room for the 20-byte header (this one's 4 included) */
        return false;
    const uint32_t head[] = {1, 0, oid, n, 1}; /* ndim, no nulls, element type, size, lbound */
    for (unsigned i = 0; i < 5; i++)
        pg_arr_put32(a->buf + 4 * i, head[i]);
    return true;
}

static bool pg_arr_int(struct pg_arr *a, uint32_t v)
{
    char b[4];
    pg_arr_put32(b, v);
    return pg_arr_add(a, b, 4);
}

static bool pg_arr_int8(struct pg_arr *a, int64_t v)
{
    char b[8];
    pg_arr_put32(b, (uint32_t)((uint64_t)v >> 32));
    pg_arr_put32(b + 4, (uint32_t)v);
    return pg_arr_add(a, b, 8);
}

static bool pg_arr_str(struct pg_arr *a, const char *s)
{
    return pg_arr_add(a, s, strlen(s));
}

/* Whether row `id` is among the ids `res` returned. */
static bool pg_returned(const PGresult *res, const char *id)
{
    for (int i = 0; res != NULL && i < PQntuples(res); i++)
        if (strcmp(PQgetvalue(res, i, 0), id) == 0)
            return true;
    return false;
}

/* One chunk of pg_enqueue_many: the tenants' unfinished tasks counted once per tenant (one
 * pipeline, with the BEGIN), then the inserts the caps allow (one statement), then, one by one,
 * the lookups of a repeated key or a full tenant. */
struct pg_chunk {
    struct pg_insert in[PG_PIPELINE_MAX];
    struct pg_stmt stmts[PG_PIPELINE_MAX];
    const char *tenant[PG_PIPELINE_MAX]; /* distinct tenants, borrowed from the tasks */
    unsigned nt;                         /* how many */
    char cap[PG_PIPELINE_MAX][24];
    uint64_t used[PG_PIPELINE_MAX]; /* by tenant: unfinished, then + the inserts decided */
    unsigned of[PG_PIPELINE_MAX];   /* by request: its tenant's index */
    bool insert[PG_PIPELINE_MAX];   /* by request: within its tenant's cap */
};

/* A count of `tenant`'s unfinished tasks younger than this may stand in for a new one while the
 * tenant stays under half its cap. */
#define PG_COUNT_FRESH_NS 1000000000ull

static struct pg_tenant_count *pg_count_find(struct pg_store *p, const char *tenant)
{
    for (size_t i = 0; i < p->ncounts; i++)
        if (strcmp(p->counts[i].tenant, tenant) == 0)
            return &p->counts[i];
    return NULL;
}

/* Remember that `tenant` has at most `used` unfinished tasks, counted at `at_ns`. */
static void pg_count_keep(struct pg_store *p, const char *tenant, uint64_t used, uint64_t at_ns)
{
    struct pg_tenant_count *e = pg_count_find(p, tenant);
    if (e == NULL && p->ncounts < PG_COUNTS_MAX)
        e = &p->counts[p->ncounts++];
    if (e == NULL) { /* full: the oldest count goes */
        e = &p->counts[0];
        for (size_t i = 1; i < p->ncounts; i++)
            if (p->counts[i].at_ns < e->at_ns)
                e = &p->counts[i];
    }
    snprintf(e->tenant, sizeof(e->tenant), "%s", tenant);
    e->used = used;
    e->at_ns = at_ns;
}

/* The unfinished tasks of the chunk's tenants into c->used. Counting reads a tenant's
 * unfinished tasks (up to the cap): with a backlog, the largest cost of an enqueue. So a tenant
 * far below its cap is not counted again for a second: its last count plus this store's inserts
 * since is an upper bound of what this store did, and other instances' inserts of that second
 * are all the cap can be off by, and only while the tenant is under half its cap. Near the cap,
 * every chunk counts. */
static int pg_chunk_count(struct pg_store *p, struct pg_chunk *c, struct srv_task_req *r,
                          unsigned k)
{
    unsigned nt = 0, maxcap = 0, nc = 0, want[PG_PIPELINE_MAX] = {0}, count[PG_PIPELINE_MAX];
    for (unsigned i = 0; i < k; i++, r = r->next) {
        unsigned j = 0;
        while (j < nt && strcmp(c->tenant[j], r->task.tenant) != 0)
            j++;
        if (j == nt)
            c->tenant[nt++] = r->task.tenant;
        c->of[i] = j;
        want[j]++;
        maxcap = r->cap > maxcap ? r->cap : maxcap;
    }
    c->nt = nt;
    uint64_t now = ctx_now_ns();
    for (unsigned j = 0; j < nt; j++) {
        const struct pg_tenant_count *e = pg_count_find(p, c->tenant[j]);
        if (e != NULL && now - e->at_ns < PG_COUNT_FRESH_NS && 2 * (e->used + want[j]) <= maxcap) {
            c->used[j] = e->used;
            continue;
        }
        c->in[nc].v[0] = c->tenant[j];
        c->in[nc].v[1] = PG_I64(c->cap[nc], maxcap);
        c->stmts[nc] = (struct pg_stmt){pg_sql_unfinished, 2, c->in[nc].v, NULL, NULL, NULL};
        count[nc++] = j;
    }
    int rc = nc > 0 ? pg_pipeline(p, c->stmts, nc) : 0;
    for (unsigned i = 0; i < nc; i++) {
        if (rc == 0)
            c->used[count[i]] = (uint64_t)pg_int((PGresult *)c->stmts[i].res, 0, 0);
        PQclear((PGresult *)c->stmts[i].res);
        if (rc == 0) /* with the time of this count; pg_chunk_run adds the inserts */
            pg_count_keep(p, c->tenant[count[i]], c->used[count[i]], now);
    }
    return rc;
}

/* The inserts of a chunk, ONE statement over arrays (a statement per task cost PostgreSQL more
 * to parse and plan than to insert); RETURNING gives the ids inserted, the others had their key
 * taken. The arrays, in the order of the columns of PG_INSERT_COLS. */
#define PG_INSERT_COLS                                                                             \
    "id,tenant,kind,attempts,backoff_ms,timeout_ms,created_ms,run_at_ms,request_id,trace_id,"      \
    "idem_key,spec"
static const char pg_sql_inserts[] =
    "INSERT INTO spindle_tasks(" PG_INSERT_COLS ",state)"
    " SELECT id,tenant,kind,attempts,backoff_ms,timeout_ms,created_ms,run_at_ms,request_id,"
    " trace_id,nullif(idem_key,''),spec,0 FROM unnest($1::text[],$2::text[],$3::text[],$4::int[],"
    " $5::bigint[],$6::bigint[],$7::bigint[],$8::bigint[],$9::text[],$10::text[],$11::text[],"
    " $12::bytea[]) AS u(" PG_INSERT_COLS ")"
    " ON CONFLICT (tenant,idem_key) WHERE idem_key IS NOT NULL DO NOTHING RETURNING id";

#define PG_INSERT_NCOLS 12

/* Add task t to the arrays a[0..PG_INSERT_NCOLS). */
static bool pg_insert_add(struct pg_arr *a, const struct srv_task *t)
{
    return pg_arr_str(&a[0], t->id) && pg_arr_str(&a[1], t->tenant) && pg_arr_str(&a[2], t->kind) &&
           pg_arr_int(&a[3], t->attempts) && pg_arr_int8(&a[4], t->backoff_ms) &&
           pg_arr_int8(&a[5], t->timeout_ms) && pg_arr_int8(&a[6], t->created_ms) &&
           pg_arr_int8(&a[7], t->run_at_ms) && pg_arr_str(&a[8], t->request_id) &&
           pg_arr_str(&a[9], t->trace_id) && pg_arr_str(&a[10], t->idem_key) &&
           pg_arr_add(&a[11], t->spec, t->spec_len);
}

/* Decide which of the chunk's enqueues their tenants' caps allow (c->insert) and put those in
 * a[]; how many, or -ENOMEM. */
static int pg_insert_arrays(struct pg_chunk *c, struct pg_arr *a, struct srv_task_req *first,
                            unsigned k)
{
    static const uint32_t oids[PG_INSERT_NCOLS] = {
        PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT, PG_OID_INT4, PG_OID_INT8, PG_OID_INT8,
        PG_OID_INT8, PG_OID_INT8, PG_OID_TEXT, PG_OID_TEXT, PG_OID_TEXT, PG_OID_BYTEA};
    unsigned n = 0;
    struct srv_task_req *r = first;
    for (unsigned i = 0; i < k; i++, r = r->next) {
        r->existed = false;
        c->insert[i] = c->used[c->of[i]] < r->cap;
        if (c->insert[i]) {
            c->used[c->of[i]]++;
            n++;
        }
    }
    bool ok = true;
    for (unsigned j = 0; ok && j < PG_INSERT_NCOLS; j++)
        ok = pg_arr_begin(&a[j], oids[j], n);
    r = first;
    for (unsigned i = 0; ok && i < k; i++, r = r->next)
        ok = !c->insert[i] || pg_insert_add(a, &r->task);
    return ok ? (int)n : -ENOMEM;
}

static int pg_chunk_run(struct pg_store *p, struct pg_chunk *c, struct srv_task_req *first,
                        unsigned k)
{
    int rc = pg_chunk_count(p, c, first, k);
    if (rc != 0)
        return rc;
    struct pg_arr a[PG_INSERT_NCOLS] = {{0}};
    const char *v[PG_INSERT_NCOLS];
    int lens[PG_INSERT_NCOLS];
    bool bin[PG_INSERT_NCOLS];
    int n = pg_insert_arrays(c, a, first, k);
    for (unsigned j = 0; j < PG_INSERT_NCOLS; j++) {
        v[j] = a[j].buf;
        lens[j] = (int)a[j].len;
        bin[j] = true;
    }
    c->stmts[0] = (struct pg_stmt){pg_sql_inserts, PG_INSERT_NCOLS, v, lens, bin, NULL};
    rc = n < 0 ? n : n > 0 ? pg_pipeline(p, c->stmts, 1) : 0;
    for (unsigned j = 0; j < PG_INSERT_NCOLS; j++)
        free(a[j].buf);
    for (unsigned j = 0; rc == 0 && j < c->nt; j++) { /* the inserts decided: an upper bound */
        struct pg_tenant_count *e = pg_count_find(p, c->tenant[j]);
        if (e != NULL && c->used[j] > e->used)
            e->used = c->used[j];
    }
    const PGresult *res = n > 0 && rc == 0 ? (PGresult *)c->stmts[0].res : NULL;
    struct srv_task_req *r = first;
    for (unsigned i = 0; rc == 0 && i < k; i++, r = r->next) {
        bool inserted = c->insert[i] && pg_returned(res, r->task.id);
        r->rc = pg_inserted(p, &r->task, inserted, &r->existed);
        if (r->rc == -EIO || r->rc == -ENOSPC || r->rc == -ENOMEM)
            rc = r->rc;
    }
    if (n > 0)
        PQclear((PGresult *)c->stmts[0].res);
    return rc;
}

/* The runner's starts and completions, each kind as ONE statement over arrays (a statement per
 * task cost PostgreSQL more to parse and plan than to run), starts first: a start and the
 * completion of the same attempt may arrive together. RETURNING says which attempts were still
 * the tasks' (the fence); the others are stale. t.id = ANY($2) keeps them on the primary key in
 * a generic plan too (prepared: one that takes unnest for 10 rows and stale statistics for
 * running tasks looped over both). */
static const char pg_sql_starts[] =
    "UPDATE spindle_tasks t SET attempt_started=true, started_ms=$1::bigint"
    " FROM unnest($2::text[], $3::int[]) AS u(id, attempt)"
    " WHERE t.id=ANY($2::text[]) AND t.id=u.id AND t.attempt=u.attempt AND t.state=1"
    " RETURNING t.id";

static const char pg_sql_completes[] =
    "UPDATE spindle_tasks t SET state=3, finished_ms=$1::bigint, result=u.result,"
    " content_type=u.content_type, lease_until_ms=NULL, owner=NULL"
    " FROM unnest($2::text[], $3::int[], $4::bytea[], $5::text[])"
    " AS u(id, attempt, result, content_type)"
    " WHERE t.id=ANY($2::text[]) AND t.id=u.id AND t.attempt=u.attempt AND t.state=1"
    " RETURNING t.id";

/* The arrays of the requests of op `op` among the k from `first` into a[0..4) (id, attempt, and
 * for completions result and content type); how many. -ENOMEM. */
static int pg_outcome_arrays(struct pg_arr *a, enum srv_task_op op, struct srv_task_req *first,
                             unsigned k)
{
    unsigned n = 0;
    struct srv_task_req *r = first;
    for (unsigned i = 0; i < k; i++, r = r->next)
        n += r->op == op;
    bool done = op == SRV_TASK_OP_COMPLETE,
         ok = pg_arr_begin(&a[0], PG_OID_TEXT, n) && pg_arr_begin(&a[1], PG_OID_INT4, n);
    if (done)
        ok = ok && pg_arr_begin(&a[2], PG_OID_BYTEA, n) && pg_arr_begin(&a[3], PG_OID_TEXT, n);
    r = first;
    for (unsigned i = 0; ok && i < k; i++, r = r->next) {
        const struct srv_task *t = &r->task;
        if (r->op != op)
            continue;
        ok = pg_arr_add(&a[0], t->id, strlen(t->id)) && pg_arr_int(&a[1], t->attempt);
        if (done)
            ok = ok && pg_arr_add(&a[2], t->result, t->result_len) &&
                 pg_arr_add(&a[3], t->content_type, strlen(t->content_type));
    }
    return ok ? (int)n : -ENOMEM;
}

/* Starts and completions that arrived together (the runner's writes), in one pipeline of at most
 * two statements: each answered as pg_start and pg_complete would. */
static int pg_chunk_outcomes(struct pg_store *p, struct pg_chunk *c, struct srv_task_req *first,
                             unsigned k, int64_t now)
{
    struct pg_arr a[6] = {{0}};
    char b[24];
    const char *vs[3], *vc[5];
    int ls[3] = {0}, lc[5] = {0};
    bool bin[5] = {false, true, true, true, true};
    unsigned ns = 0;
    int n = pg_outcome_arrays(&a[0], SRV_TASK_OP_START, first, k), rc = 0;
    if (n > 0) {
        vs[0] = PG_I64(b, now);
        for (unsigned i = 1; i < 3; i++) {
            vs[i] = a[i - 1].buf;
            ls[i] = (int)a[i - 1].len;
        }
        c->stmts[ns++] = (struct pg_stmt){pg_sql_starts, 3, vs, ls, bin, NULL};
    }
    int m = n < 0 ? n : pg_outcome_arrays(&a[2], SRV_TASK_OP_COMPLETE, first, k);
    if (m > 0) {
        vc[0] = PG_I64(b, now);
        for (unsigned i = 1; i < 5; i++) {
            vc[i] = a[i + 1].buf;
            lc[i] = (int)a[i + 1].len;
        }
        c->stmts[ns++] = (struct pg_stmt){pg_sql_completes, 5, vc, lc, bin, NULL};
    }
    rc = n < 0 ? n : m < 0 ? m : pg_pipeline(p, c->stmts, ns);
    const PGresult *started = n > 0 && rc == 0 ? (PGresult *)c->stmts[0].res : NULL;
    const PGresult *completed = m > 0 && rc == 0 ? (PGresult *)c->stmts[ns - 1].res : NULL;
    struct srv_task_req *r = first;
    for (unsigned i = 0; rc == 0 && i < k; i++, r = r->next) {
        bool done = r->op == SRV_TASK_OP_COMPLETE;
        bool changed = pg_returned(done ? completed : started, r->task.id);
        r->rc = changed ? 0 : -ESTALE;
        if (!done)
            continue;
        pg_running_del(p, r->task.id, r->task.attempt); /* no longer this process's either way */
        if (changed) {
            char payload[SRV_TASK_ID_LEN + 3];
            snprintf(payload, sizeof(payload), "f:%s", r->task.id);
            pg_notify(p, payload);
        }
    }
    for (unsigned i = 0; i < ns; i++)
        PQclear((PGresult *)c->stmts[i].res);
    for (unsigned i = 0; i < 6; i++)
        free(a[i].buf);
    return rc;
}

/* Writes that arrived together, PG_PIPELINE_MAX at a time: enqueues (pg_chunk_run: the tenant
 * cap counted once per tenant and chunk instead of once per task, since that count reads the
 * tenant's unfinished tasks, the largest cost of an enqueue once a backlog builds up; the
 * inserts in one pipeline) and the runner's starts and completions (one pipeline). The answers
 * are those of enqueue, start and complete. */
static int pg_write_many(void *st, struct srv_task_req *first, unsigned n, int64_t now)
{
    struct pg_chunk *c = malloc(sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    int rc = 0;
    struct srv_task_req *r = first;
    while (rc == 0 && n > 0) {
        bool enq = r->op == SRV_TASK_OP_ENQUEUE;
        unsigned k = 0;
        struct srv_task_req *q = r;
        while (k < n && k < PG_PIPELINE_MAX && (q->op == SRV_TASK_OP_ENQUEUE) == enq) {
            q = q->next;
            k++;
        }
        rc = enq ? pg_chunk_run(st, c, r, k) : pg_chunk_outcomes(st, c, r, k, now);
        r = q;
        n -= k;
    }
    free(c);
    return rc;
}

/* The statements sent prepared (store_pg_conn.c): those run per claim, per batch of writes
 * and per poll; the rare ones (cancel, list, purge, schedules) go unnamed. */
const char *const pg_prepared_sql[] = {
    pg_sql_claim,  pg_sql_inserts,   pg_sql_unfinished, pg_sql_starts,  pg_sql_completes,
    pg_sql_start,  pg_sql_complete,  pg_sql_fail,       pg_sql_release, pg_sql_heartbeat,
    pg_sql_expire, pg_sql_unstarted, pg_sql_enqueue,    pg_sql_counts,  pg_sql_oldest_due,
    pg_sql_due,    pg_sql_lost,
};
const unsigned pg_prepared_count = sizeof(pg_prepared_sql) / sizeof(pg_prepared_sql[0]);
const uint32_t pg_prepared_custom = UINT32_C(1) << 0; /* the claim */

static int pg_claim(void *st, const char *owner, int64_t now, int64_t lease_until, unsigned max,
                    struct srv_task *out, unsigned *n)
{
    struct pg_store *p = st;
    *n = 0;
    char b[3][24];
    const char *v[] = {PG_I64(b[0], now), PG_I64(b[1], max), PG_I64(b[2], lease_until), owner};
    PGresult *r;
    int rc = pg_exec(p, pg_sql_claim, 4, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    int rows = PQntuples(r);
    for (int i = 0; rc == 0 && i < rows && *n < max; i++) {
        rc = pg_row(r, i, &out[*n], false);
        if (rc == 0) {
            pg_running_add(p, out[*n].id, out[*n].attempt);
            (*n)++;
        }
    }
    PQclear(r);
    if (rc != 0) {
        for (unsigned i = 0; i < *n; i++)
            srv_task_fini(&out[i]);
        *n = 0;
    }
    return rc;
}

static int pg_start(void *st, const char *id, unsigned attempt, int64_t now)
{
    struct pg_store *p = st;
    char b[2][24];
    const char *v[] = {id, PG_I64(b[0], attempt), PG_I64(b[1], now)};
    unsigned changed = 0;
    int rc = pg_changes(p, pg_sql_start, 3, v, NULL, NULL, &changed);
    return rc != 0 ? rc : changed == 0 ? -ESTALE : 0;
}

static int pg_heartbeat(void *st, const char *owner, int64_t lease_until, unsigned *n)
{
    char b[24];
    const char *v[] = {PG_I64(b, lease_until), owner};
    return pg_changes(st, pg_sql_heartbeat, 2, v, NULL, NULL, n);
}

/* An attempt-fenced update: 0 when it changed the task, -ESTALE when the attempt was not the
 * running one. The attempt is no longer this process's either way. */
static int pg_fenced(struct pg_store *p, const char *sql, int nv, const char *const *v,
                     const int *lens, const bool *bin, const char *id, unsigned attempt)
{
    unsigned changed = 0;
    int rc = pg_changes(p, sql, nv, v, lens, bin, &changed);
    if (rc != 0)
        return rc;
    pg_running_del(p, id, attempt);
    return changed == 0 ? -ESTALE : 0;
}

static int pg_complete(void *st, const char *id, unsigned attempt, int64_t now, const void *result,
                       size_t len, const char *content_type)
{
    struct pg_store *p = st;
    char b[2][24];
    const char *v[] = {id, PG_I64(b[0], attempt), PG_I64(b[1], now), len > 0 ? result : "",
                       content_type};
    int lens[5] = {[3] = (int)len};
    bool bin[5] = {[3] = true};
    int rc = pg_fenced(p, pg_sql_complete, 5, v, lens, bin, id, attempt);
    if (rc == 0) {
        char payload[SRV_TASK_ID_LEN + 3];
        snprintf(payload, sizeof(payload), "f:%s", id);
        pg_notify(p, payload);
    }
    return rc;
}

static int pg_fail_attempt(void *st, const char *id, unsigned attempt, int64_t now,
                           const char *error_json, int64_t retry_at)
{
    struct pg_store *p = st;
    char b[3][24];
    const char *v[] = {id, PG_I64(b[0], attempt), PG_I64(b[1], now), error_json,
                       PG_I64(b[2], retry_at)};
    int rc = pg_fenced(p, pg_sql_fail, 5, v, NULL, NULL, id, attempt);
    if (rc == 0 && retry_at <= 0) {
        char payload[SRV_TASK_ID_LEN + 3];
        snprintf(payload, sizeof(payload), "f:%s", id);
        pg_notify(p, payload);
    }
    return rc;
}

static int pg_release(void *st, const char *id, unsigned attempt)
{
    struct pg_store *p = st;
    char b[24];
    const char *v[] = {id, PG_I64(b, attempt)};
    int rc = pg_fenced(p, pg_sql_release, 2, v, NULL, NULL, id, attempt);
    if (rc == 0)
        pg_notify(p, "d"); /* another instance may run it now */
    return rc;
}

static int pg_get(void *st, const char *tenant, const char *id, bool with_result,
                  struct srv_task *t)
{
    const char *v[] = {tenant, id};
    return pg_one(st,
                  with_result ? "SELECT " PG_COLS ",result FROM spindle_tasks WHERE tenant=$1"
                                " AND id=$2"
                              : "SELECT " PG_COLS " FROM spindle_tasks WHERE tenant=$1 AND id=$2",
                  2, v, NULL, NULL, t, with_result);
}

static int pg_cancel(void *st, const char *tenant, const char *id, int64_t now, struct srv_task *t,
                     bool *was_running)
{
    struct pg_store *p = st;
    const char *v[] = {tenant, id};
    PGresult *r;
    /* Lock the row: a claim or completion elsewhere waits for this transaction. */
    int rc = pg_exec(p,
                     "SELECT " PG_COLS ",owner FROM spindle_tasks WHERE tenant=$1 AND id=$2"
                     " FOR UPDATE",
                     2, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return -ENOENT;
    }
    char owner[64];
    pg_text(r, 0, PG_NCOLS, owner, sizeof(owner));
    rc = pg_row(r, 0, t, false);
    PQclear(r);
    if (rc != 0)
        return rc;
    *was_running = t->state == SRV_TASK_RUNNING;
    if (srv_task_state_final(t->state))
        return 0;
    char payload[SRV_TASK_ID_LEN + 16];
    if (*was_running && !pg_running_del(p, id, t->attempt)) { /* it runs elsewhere: tell it */
        snprintf(payload, sizeof(payload), "c:%s:%u", id, t->attempt);
        pg_notify(p, payload);
    }
    srv_task_fini(t);
    char b[24];
    const char *v3[] = {tenant, id, PG_I64(b, now)};
    rc = pg_one(p,
                "UPDATE spindle_tasks SET state=5, finished_ms=$3::bigint, lease_until_ms=NULL,"
                " owner=NULL WHERE tenant=$1 AND id=$2 RETURNING " PG_COLS,
                3, v3, NULL, NULL, t, false);
    if (rc == 0) {
        snprintf(payload, sizeof(payload), "f:%s", id);
        pg_notify(p, payload);
    }
    return rc;
}

static int pg_list(void *st, const char *tenant, const struct srv_task_filter *f,
                   struct srv_task *out, unsigned *n)
{
    *n = 0;
    char b[2][24];
    const char *v[] = {tenant, PG_I64(b[0], f->state), f->kind, f->after, PG_I64(b[1], f->limit)};
    PGresult *r;
    int rc = pg_exec(st,
                     "SELECT " PG_COLS " FROM spindle_tasks WHERE tenant=$1::text AND"
                     " ($2::int<0 OR state=$2::int) AND ($3::text IS NULL OR kind=$3::text) AND"
                     " ($4::text IS NULL OR id>$4::text) ORDER BY id LIMIT $5::int",
                     5, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    int rows = PQntuples(r);
    for (int i = 0; rc == 0 && i < rows && *n < f->limit; i++) {
        rc = pg_row(r, i, &out[*n], false);
        if (rc == 0)
            (*n)++;
    }
    PQclear(r);
    if (rc != 0) {
        for (unsigned i = 0; i < *n; i++)
            srv_task_fini(&out[i]);
        *n = 0;
    }
    return rc;
}

static int pg_purge(void *st, int64_t before, unsigned max, unsigned *n)
{
    char b[2][24];
    const char *v[] = {PG_I64(b[0], before), PG_I64(b[1], max)};
    /* SKIP LOCKED: instances purging at once split the work instead of waiting. */
    return pg_changes(st,
                      "DELETE FROM spindle_tasks WHERE id IN (SELECT id FROM spindle_tasks WHERE"
                      " finished_ms<$1::bigint ORDER BY finished_ms LIMIT $2::int"
                      " FOR UPDATE SKIP LOCKED)",
                      2, v, NULL, NULL, n);
}

static int pg_expire(void *st, int64_t now, unsigned *n)
{
    struct pg_store *p = st;
    char b[24];
    const char *v[] = {PG_I64(b, now)};
    unsigned back = 0;
    int rc = pg_changes(p, pg_sql_unstarted, 1, v, NULL, NULL, &back);
    if (rc == 0)
        rc = pg_changes(p, pg_sql_expire, 1, v, NULL, NULL, n);
    if (rc == 0 && *n + back > 0)
        pg_notify(p, "d"); /* retried at once, by whichever instance claims first */
    return rc;
}

static int pg_counts(void *st, srv_task_count_fn *fn, void *arg, int64_t now,
                     int64_t *oldest_queued)
{
    PGresult *r;
    int rc = pg_exec(st, pg_sql_counts, 0, NULL, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    char kind[SRV_TASK_KIND_MAX + 1];
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t state = pg_int(r, i, 0);
        pg_text(r, i, 1, kind, sizeof(kind));
        if (state >= 0 && state < SRV_TASK_STATE__COUNT)
            fn((enum srv_task_state)state, kind, (uint64_t)pg_int(r, i, 2), arg);
    }
    PQclear(r);
    char b[24];
    const char *v[] = {PG_I64(b, now)};
    rc = pg_exec(st, pg_sql_oldest_due, 1, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    *oldest_queued = PQntuples(r) == 1 ? pg_int(r, 0, 0) : 0;
    PQclear(r);
    return 0;
}

static int pg_queued(void *st, unsigned top, srv_task_tenant_count_fn *fn, void *arg)
{
    char b[24];
    const char *v[] = {PG_I64(b, top)};
    PGresult *r;
    /* The due-tasks index (tenant, run_at_ms, id) WHERE state IN (0,2) covers the count. */
    int rc = pg_exec(st,
                     "SELECT CASE WHEN rk<=$1::bigint THEN tenant END, sum(n)::bigint FROM"
                     " (SELECT tenant, count(*) AS n, row_number() OVER (ORDER BY count(*) DESC,"
                     " tenant) AS rk FROM spindle_tasks WHERE state IN (0,2) GROUP BY tenant) g"
                     " GROUP BY 1 ORDER BY min(rk)",
                     1, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    char tenant[CTX_TENANT_MAX + 1];
    for (int i = 0; i < PQntuples(r); i++) {
        pg_text(r, i, 0, tenant, sizeof(tenant));
        fn(PQgetisnull(r, i, 0) ? NULL : tenant, (uint64_t)pg_int(r, i, 1), arg);
    }
    PQclear(r);
    return 0;
}

/* ---- events ---------------------------------------------------------------------------------- */

/* Ask the database which attempts of `running` are no longer this owner's. */
static int pg_poll_lost(struct pg_store *p, const char *owner, srv_task_event_fn *fn, void *arg)
{
    if (p->nrunning == 0)
        return 0;
    size_t cap = p->nrunning * (SRV_TASK_ID_LEN + 12) + 8;
    char *ids = malloc(cap), *atts = malloc(cap);
    if (ids == NULL || atts == NULL) {
        free(ids);
        free(atts);
        return -ENOMEM;
    }
    size_t il = 0, al = 0;
    for (size_t i = 0; i < p->nrunning; i++) {
        il += (size_t)snprintf(ids + il, cap - il, "%s%s", i ? "," : "{", p->running[i].id);
        al += (size_t)snprintf(atts + al, cap - al, "%s%u", i ? "," : "{", p->running[i].attempt);
    }
    snprintf(ids + il, cap - il, "}");
    snprintf(atts + al, cap - al, "}");
    const char *v[] = {ids, atts, owner};
    PGresult *r;
    int rc = pg_exec(p, pg_sql_lost, 3, v, NULL, NULL, &r);
    free(ids);
    free(atts);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        struct srv_task_event ev = {.kind = SRV_TASK_EV_LOST};
        pg_text(r, i, 0, ev.id, sizeof(ev.id));
        ev.attempt = (unsigned)pg_int(r, i, 1);
        if (pg_running_del(p, ev.id, ev.attempt))
            fn(&ev, arg);
    }
    PQclear(r);
    return 0;
}

static int pg_poll_due(struct pg_store *p, int64_t now, srv_task_event_fn *fn, void *arg)
{
    char b[24];
    const char *v[] = {PG_I64(b, now)};
    PGresult *r;
    int rc = pg_exec(p, pg_sql_due, 1, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    if (PQntuples(r) > 0)
        fn(&(struct srv_task_event){.kind = SRV_TASK_EV_DUE}, arg);
    PQclear(r);
    return 0;
}

static int pg_events(void *st, const char *owner, int64_t now, bool poll, srv_task_event_fn *fn,
                     void *arg)
{
    struct pg_store *p = st;
    size_t n = 0;
    struct srv_task_event *evs = pg_listen_take(p->listen, &n);
    for (size_t i = 0; i < n; i++) {
        /* A cancellation is this process's business only when it runs that attempt. */
        if (evs[i].kind != SRV_TASK_EV_LOST || pg_running_del(p, evs[i].id, evs[i].attempt))
            fn(&evs[i], arg);
    }
    free(evs);
    if (!poll)
        return 0;
    int rc = pg_ensure(p);
    if (rc == 0)
        rc = pg_poll_lost(p, owner, fn, arg);
    if (rc == 0)
        rc = pg_poll_due(p, now, fn, arg);
    return rc;
}

static int pg_schema(const struct srv_task_store_opts *o, unsigned *have, unsigned *want, char *err,
                     size_t size)
{
    struct pg_store p = {0};
    pg_redact(o->path, p.where, sizeof(p.where));
    *want = PG_SCHEMA_VERSION;
    *have = 0;
    p.conn = pg_connect(o->path, p.where, err, size);
    if (p.conn == NULL)
        return -EIO;
    int rc = pg_schema_version(&p, have, err, size);
    PQfinish(p.conn);
    return rc;
}

const struct srv_task_store_ops srv_task_store_pg = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .errmsg = pg_errmsg,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .enqueue = pg_enqueue,
    .write_many = pg_write_many,
    .claim = pg_claim,
    .start = pg_start,
    .heartbeat = pg_heartbeat,
    .complete = pg_complete,
    .fail = pg_fail_attempt,
    .release = pg_release,
    .cancel = pg_cancel,
    .get = pg_get,
    .list = pg_list,
    .purge = pg_purge,
    .expire = pg_expire,
    .counts = pg_counts,
    .queued = pg_queued,
    .schedule_fire = pg_schedule_fire,
    .schedule_list = pg_schedule_list,
    .events = pg_events,
    .schema = pg_schema,
};
