/* pg_limit.c - the raw limit of durable tasks on one PostgreSQL server: plain libpq inserts and
 * claims with the durability of spindle's task store (every COMMIT waits for the WAL flush when
 * the server runs with synchronous_commit = on) and nothing else: no HTTP, no spindle.
 *
 *   pg_limit [-d SECONDS] [-c CONNS] [-b ROWS]... URI
 *
 * For each -b ROWS (default: 1, then 16) and CONNS connections at once (default 1, one thread
 * each), two phases of SECONDS each (default 3) on a table shaped like spindle_tasks (with its
 * due-tasks index), emptied first:
 *
 *   insert   ROWS inserts per transaction, sent in one pipeline with the BEGIN, then COMMIT
 *   cycle    the life of ROWS tasks, three transactions: insert them; claim ROWS due tasks
 *            (UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING, as spindle claims); mark those
 *            succeeded; so what one instance needs at least per task, with nothing around it
 *
 * and prints one line per phase:
 *
 *   phase=insert conns=1 rows_per_commit=16 seconds=3.00 commits=1234 tasks_per_s=6580.8
 *
 * Group commit of ROWS per transaction is the best a store that batches ROWS requests can do;
 * CONNS connections show what the server does with several instances committing at once.
 */
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PL_MAX_RUNS  8
#define PL_MAX_CONNS 32
#define PL_MAX_ROWS  128

struct pl_worker {
    pthread_t thread;
    const char *uri;
    unsigned rows, index;
    bool cycle;
    double seconds;
    unsigned long commits, tasks;
    int failed;
};

static double pl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool pl_ok(PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return true;
    fprintf(stderr, "pg_limit: %s: %s", what, PQresultErrorMessage(r));
    return false;
}

static bool pl_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = pl_ok(r, sql);
    PQclear(r);
    return ok;
}

/* BEGIN and `rows` inserts in one pipeline; true when all went in. */
static bool pl_insert(PGconn *c, struct pl_worker *w, unsigned long *seq)
{
    if (PQenterPipelineMode(c) != 1)
        return false;
    bool ok = PQsendQueryParams(c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) == 1;
    for (unsigned i = 0; ok && i < w->rows; i++) {
        char id[32], now[24];
        snprintf(id, sizeof(id), "%02u%010lu%012lx", w->index, ++*seq, (unsigned long)getpid());
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(now, sizeof(now), "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        const char *v[] = {id, now};
        ok = PQsendQueryParams(c,
                               "INSERT INTO pg_limit_tasks(id,tenant,kind,state,attempt,attempts,"
                               "created_ms,run_at_ms,request_id,spec) VALUES($1,'default','noop',0,"
                               "0,3,$2::bigint,$2::bigint,'req','{\"kind\":\"noop\"}')",
                               2, NULL, v, NULL, NULL, 0) == 1;
    }
    ok = ok && PQpipelineSync(c) == 1;
    for (unsigned i = 0; ok && i < w->rows + 1; i++) {
        PGresult *r = PQgetResult(c);
        ok = r != NULL && pl_ok(r, "insert");
        PQclear(r);
        ok = ok && PQgetResult(c) == NULL;
    }
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) { /* the sync (or what an error left) */
        bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
        if (sync)
            break;
    }
    ok = PQexitPipelineMode(c) == 1 && ok;
    return ok && pl_exec(c, "COMMIT");
}

/* Claim up to `rows` due tasks and mark them succeeded: two transactions. Tasks done. */
static long pl_claim_complete(PGconn *c, struct pl_worker *w)
{
    char max[16], owner[16];
    snprintf(max, sizeof(max), "%u", w->rows);
    snprintf(owner, sizeof(owner), "w%u", w->index);
    const char *v[] = {max, owner};
    PGresult *r = PQexecParams(c,
                               "UPDATE pg_limit_tasks t SET state=1, attempt=t.attempt+1,"
                               " owner=$2 FROM (SELECT id FROM pg_limit_tasks WHERE state IN (0,2)"
                               " AND run_at_ms<=(extract(epoch from now())*1000)::bigint"
                               " ORDER BY run_at_ms LIMIT $1::int FOR UPDATE SKIP LOCKED) p"
                               " WHERE t.id=p.id RETURNING t.id",
                               2, NULL, v, NULL, NULL, 0);
    if (!pl_ok(r, "claim")) {
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return 0;
    }
    /* {id,id,...} for one UPDATE of them all */
    size_t cap = (size_t)n * 40 + 4, len = 0;
    char *ids = malloc(cap);
    if (ids == NULL) {
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(ids + len, cap - len, "%s%s", i ? "," : "{", PQgetvalue(r, i, 0));
    snprintf(ids + len, cap - len, "}");
    PQclear(r);
    const char *v2[] = {ids};
    r = PQexecParams(c,
                     "UPDATE pg_limit_tasks SET state=3, result='{\"ok\":true}', owner=NULL"
                     " WHERE id=ANY($1::text[]) AND state=1",
                     1, NULL, v2, NULL, NULL, 0);
    free(ids);
    bool ok = pl_ok(r, "complete");
    PQclear(r);
    return ok ? n : -1;
}

static void *pl_main(void *arg)
{
    struct pl_worker *w = arg;
    PGconn *c = PQconnectdb(w->uri);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg_limit: %s", PQerrorMessage(c));
        PQfinish(c);
        w->failed = 1;
        return NULL;
    }
    unsigned long seq = 0;
    double end = pl_now() + w->seconds;
    while (pl_now() < end) {
        if (!pl_insert(c, w, &seq)) {
            w->failed = 1;
            break;
        }
        w->commits++;
        if (!w->cycle) {
            w->tasks += w->rows;
            continue;
        }
        long n = pl_claim_complete(c, w);
        if (n < 0) {
            w->failed = 1;
            break;
        }
        w->commits += 2; /* autocommit: one each */
        w->tasks += (unsigned long)n;
    }
    PQfinish(c);
    return NULL;
}

static int pl_reset(const char *uri)
{
    PGconn *c = PQconnectdb(uri);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg_limit: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    bool ok =
        pl_exec(c, "SET client_min_messages=warning") &&
        pl_exec(c, "DROP TABLE IF EXISTS pg_limit_tasks") &&
        pl_exec(c, "CREATE TABLE pg_limit_tasks(id text PRIMARY KEY, tenant text NOT NULL,"
                   " kind text NOT NULL, state smallint NOT NULL, attempt integer NOT NULL,"
                   " attempts integer NOT NULL, created_ms bigint NOT NULL,"
                   " run_at_ms bigint NOT NULL, request_id text NOT NULL, owner text,"
                   " spec bytea NOT NULL, result bytea)") &&
        pl_exec(c, "CREATE INDEX ON pg_limit_tasks(tenant, run_at_ms) WHERE state IN (0,2)") &&
        pl_exec(c, "CREATE INDEX ON pg_limit_tasks(run_at_ms) WHERE state IN (0,2)");
    PQfinish(c);
    return ok ? 0 : -1;
}

static int pl_run(const char *uri, unsigned conns, unsigned rows, bool cycle, double seconds)
{
    if (pl_reset(uri) != 0)
        return -1;
    struct pl_worker w[PL_MAX_CONNS];
    memset(w, 0, sizeof(w));
    double t0 = pl_now();
    unsigned started = 0;
    for (unsigned i = 0; i < conns; i++) {
        w[i] = (struct pl_worker){
            .uri = uri, .rows = rows, .index = i, .cycle = cycle, .seconds = seconds};
        if (pthread_create(&w[i].thread, NULL, pl_main, &w[i]) != 0)
            break;
        started++;
    }
    unsigned long commits = 0, tasks = 0;
    int failed = started < conns;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        commits += w[i].commits;
        tasks += w[i].tasks;
        failed |= w[i].failed;
    }
    double dt = pl_now() - t0;
    printf("phase=%s conns=%u rows_per_commit=%u seconds=%.2f commits=%lu tasks_per_s=%.1f\n",
           cycle ? "cycle" : "insert", conns, rows, dt, commits, (double)tasks / dt);
    fflush(stdout);
    return failed ? -1 : 0;
}

int main(int argc, char **argv)
{
    double seconds = 3;
    unsigned conns = 1, rows[PL_MAX_RUNS], nrows = 0;
    int opt;
    while ((opt = getopt(argc, argv, "d:c:b:")) != -1) {
        if (opt == 'd') {
            seconds = atof(optarg);
        } else if (opt == 'c') {
            conns = (unsigned)atoi(optarg);
        } else if (opt == 'b' && nrows < PL_MAX_RUNS) {
            rows[nrows++] = (unsigned)atoi(optarg);
        } else {
            fprintf(stderr, "usage: pg_limit [-d SECONDS] [-c CONNS] [-b ROWS]... URI\n");
            return 2;
        }
    }
    if (optind != argc - 1 || seconds <= 0 || conns == 0 || conns > PL_MAX_CONNS) {
        fprintf(stderr, "usage: pg_limit [-d SECONDS] [-c 1..%d] [-b 1..%d]... URI\n", PL_MAX_CONNS,
                PL_MAX_ROWS);
        return 2;
    }
    if (nrows == 0) {
        rows[nrows++] = 1;
        rows[nrows++] = 16;
    }
    for (unsigned i = 0; i < nrows; i++) {
        if (rows[i] == 0 || rows[i] > PL_MAX_ROWS) {
            fprintf(stderr, "pg_limit: -b takes 1..%d\n", PL_MAX_ROWS);
            return 2;
        }
        if (pl_run(argv[optind], conns, rows[i], false, seconds) != 0 ||
            pl_run(argv[optind], conns, rows[i], true, seconds) != 0)
            return 1;
    }
    return 0;
}
