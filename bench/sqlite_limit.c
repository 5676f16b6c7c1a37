/* sqlite_limit.c - the raw limit of durable enqueues on this machine: plain SQLite inserts with
 * the durability of spindle's task store (WAL, synchronous=FULL: every COMMIT fsyncs the WAL) and
 * nothing else: no server, no HTTP, no thread hand-off.
 *
 *   sqlite_limit [-d SECONDS] [-b ROWS]... [DIR]
 *
 * For each -b ROWS (default: 1, then 16) it inserts rows shaped like a task (a 24-character id,
 * tenant, kind, state, times, a small JSON spec) for SECONDS (default 3), ROWS per transaction
 * (BEGIN IMMEDIATE ... COMMIT), into a new database file in DIR (default: a new directory under
 * /tmp, removed at the end), and prints one line:
 *
 *   rows_per_commit=16 seconds=3.00 commits=1234 commits_per_s=411.3 rows_per_s=6580.8
 *
 * One row per commit is what a store without group commit can do; ROWS per commit is the best a
 * group commit of that size can do. Single-threaded; the file system's fsync is the whole game.
 */
#include <errno.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SL_MAX_RUNS 8

static double sl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int sl_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "sqlite_limit: %s: %s\n", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

static int sl_open(const char *path, sqlite3 **db, sqlite3_stmt **ins)
{
    if (sqlite3_open(path, db) != SQLITE_OK) {
        fprintf(stderr, "sqlite_limit: %s: %s\n", path, sqlite3_errmsg(*db));
        return -1;
    }
    if (sl_exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;") != SQLITE_OK ||
        sl_exec(*db, "CREATE TABLE tasks(id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
                     " kind TEXT NOT NULL, state INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
                     " run_at_ms INTEGER NOT NULL, spec BLOB NOT NULL)") != SQLITE_OK)
        return -1;
    if (sqlite3_prepare_v2(*db,
                           "INSERT INTO tasks(id,tenant,kind,state,created_ms,run_at_ms,spec)"
                           " VALUES(?1,'default','noop',0,?2,?2,'{\"kind\":\"noop\"}')",
                           -1, ins, NULL) != SQLITE_OK) {
        fprintf(stderr, "sqlite_limit: prepare: %s\n", sqlite3_errmsg(*db));
        return -1;
    }
    return 0;
}

/* Insert for `seconds`, `rows` per commit, into a new file in `dir`. */
static int sl_run(const char *dir, unsigned rows, double seconds)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/limit-%u.db", dir, rows);
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    int rc = sl_open(path, &db, &ins);
    unsigned long long commits = 0, n = 0;
    double t0 = sl_now(), t = t0;
    while (rc == 0 && t - t0 < seconds) {
        if (sl_exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
            rc = -1;
            break;
        }
        for (unsigned i = 0; i < rows && rc == 0; i++, n++) {
            char id[32];
            snprintf(id, sizeof(id), "%012llx%012llx", (unsigned long long)(t * 1000), n);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(ins, 2, (sqlite3_int64)(t * 1000));
            if (sqlite3_step(ins) != SQLITE_DONE) {
                fprintf(stderr, "sqlite_limit: insert: %s\n", sqlite3_errmsg(db));
                rc = -1;
            }
            sqlite3_reset(ins);
        }
        if (rc == 0 && sl_exec(db, "COMMIT") != SQLITE_OK)
            rc = -1;
        commits++;
        t = sl_now();
    }
    sqlite3_finalize(ins);
    sqlite3_close(db);
    unlink(path);
    char aux[4200];
    snprintf(aux, sizeof(aux), "%s-wal", path);
    unlink(aux);
    snprintf(aux, sizeof(aux), "%s-shm", path);
    unlink(aux);
    if (rc != 0)
        return rc;
    double dt = t - t0;
    printf("rows_per_commit=%u seconds=%.2f commits=%llu commits_per_s=%.1f rows_per_s=%.1f\n",
           rows, dt, commits, commits / dt, (double)commits * rows / dt);
    return fflush(stdout) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    unsigned rows[SL_MAX_RUNS];
    unsigned nruns = 0;
    double seconds = 3;
    int c;
    while ((c = getopt(argc, argv, "d:b:h")) != -1) {
        char *end;
        if (c == 'd') {
            seconds = strtod(optarg, &end);
            if (*end != '\0' || seconds <= 0 || seconds > 3600)
                c = '?';
        } else if (c == 'b' && nruns < SL_MAX_RUNS) {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end != '\0' || v < 1 || v > 100000)
                c = '?';
            rows[nruns++] = (unsigned)v;
        }
        if (c != 'd' && c != 'b') {
            fprintf(stderr, "usage: sqlite_limit [-d SECONDS] [-b ROWS_PER_COMMIT]... [DIR]\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (nruns == 0) {
        rows[nruns++] = 1;
        rows[nruns++] = 16;
    }
    char tmp[] = "/tmp/spindle-sqlite-limit-XXXXXX";
    const char *dir = optind < argc ? argv[optind] : mkdtemp(tmp);
    if (dir == NULL) {
        fprintf(stderr, "sqlite_limit: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    int rc = 0;
    for (unsigned i = 0; i < nruns && rc == 0; i++)
        rc = sl_run(dir, rows[i], seconds);
    if (optind >= argc)
        rmdir(dir);
    return rc == 0 ? 0 : 1;
}
