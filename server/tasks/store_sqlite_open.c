/* store_sqlite_open.c - opening the SQLite task store: the schema, its version, the checks that
 * stop a start on a damaged file, and the recovery of leases a dead process held.
 *
 * Design: see store_sqlite.c for the durability settings. Open runs once, on the starting thread,
 * before the store thread exists: a file that is not a database, fails quick_check, carries a
 * schema version newer than this code's, or is locked by another process is refused with a
 * message naming the file (the start stops; nothing is ever dropped silently). A new file gets
 * the schema and the current version in one transaction; an older version is migrated in the same
 * transaction.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tasks/internal.h"

/* 2: tenant_unfinished is written by the store, no longer by triggers (a trigger made every
 * insert and state change several times dearer); running tasks are indexed, not every state. */
#define SQ_SCHEMA_VERSION 2

static const char sq_schema[] =
    "CREATE TABLE IF NOT EXISTS spindle_schema(version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tasks("
    " id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, state INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL,"
    " backoff_ms INTEGER NOT NULL, timeout_ms INTEGER NOT NULL,"
    " interrupted INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, started_ms INTEGER,"
    " finished_ms INTEGER, run_at_ms INTEGER NOT NULL, lease_until_ms INTEGER, owner TEXT,"
    " request_id TEXT NOT NULL, trace_id TEXT NOT NULL, idem_key TEXT, spec BLOB NOT NULL,"
    " errors TEXT NOT NULL DEFAULT '[]', result BLOB, content_type TEXT,"
    " attempt_started INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks(tenant, idem_key)"
    " WHERE idem_key IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS tasks_due ON tasks(run_at_ms) WHERE state IN (0,2);"
    /* running attempts only: a queued or final task costs this index nothing */
    "CREATE INDEX IF NOT EXISTS tasks_running ON tasks(owner) WHERE state=1;"
    "CREATE INDEX IF NOT EXISTS tasks_tenant ON tasks(tenant, id);"
    "CREATE INDEX IF NOT EXISTS tasks_kind ON tasks(state, kind);"
    "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_ms)"
    " WHERE finished_ms IS NOT NULL;"
    /* Unfinished tasks per tenant, kept by store_sqlite.c in the same transactions (once per
     * transaction and tenant): the tenant cap is one lookup, not a count over a backlog. */
    "CREATE TABLE IF NOT EXISTS tenant_unfinished(tenant TEXT PRIMARY KEY, n INTEGER NOT NULL);"
    /* the last tick each schedule fired (server/api/schedules.c) */
    "CREATE TABLE IF NOT EXISTS schedules("
    " name TEXT PRIMARY KEY, last_tick_ms INTEGER NOT NULL, last_task TEXT NOT NULL,"
    " fired_ms INTEGER NOT NULL);";

/* A negative errno for an SQLite result code. */
int srv_sq_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static int sq_fail(struct srv_sq_store *sq, const char *path, int rc, char *err, size_t size,
                   const char *what)
{
    int e = srv_sq_errno(rc);
    const char *msg = sq->db != NULL ? sqlite3_errmsg(sq->db) : sqlite3_errstr(rc);
    if (e == -EBUSY)
        snprintf(err, size, "%s: %s: %s (another spindle process uses this task store?)", path,
                 what, msg);
    else
        snprintf(err, size, "%s: %s: %s", path, what, msg);
    return e;
}

/* Create or check the schema version, in one transaction. */
static int sq_migrate(struct srv_sq_store *sq, const char *path, char *err, size_t size)
{
    int rc = sqlite3_exec(sq->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(sq, path, rc, err, size, "cannot lock the task store");
    rc = sqlite3_exec(sq->db, sq_schema, NULL, NULL, NULL);
    sqlite3_stmt *s = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(sq->db, "SELECT max(version), count(*) FROM spindle_schema", -1, &s,
                                NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s) == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(sq->db);
    long long version = rc == SQLITE_OK ? sqlite3_column_int64(s, 0) : 0;
    long long rows = rc == SQLITE_OK ? sqlite3_column_int64(s, 1) : 0;
    sqlite3_finalize(s);
    if (rc == SQLITE_OK && rows == 0)
        rc =
            sqlite3_exec(sq->db, "INSERT INTO spindle_schema(version) VALUES(2)", NULL, NULL, NULL);
    /* Version 1 kept tenant_unfinished by triggers, whose counts are right: drop them, and its
     * index of every task by state (tasks_running, made above, holds the running ones only). */
    if (rc == SQLITE_OK && rows > 0 && version == 1)
        rc = sqlite3_exec(sq->db,
                          "DROP TRIGGER IF EXISTS tasks_unfinished_ins;"
                          " DROP TRIGGER IF EXISTS tasks_unfinished_upd;"
                          " DROP TRIGGER IF EXISTS tasks_unfinished_del;"
                          " DROP INDEX IF EXISTS tasks_state;"
                          " UPDATE spindle_schema SET version=2;",
                          NULL, NULL, NULL);
    /* Every lease in a file only this process may open belongs to a process that died. */
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(sq->db, "UPDATE tasks SET lease_until_ms=0 WHERE state=1", NULL, NULL,
                          NULL);
    if (rc != SQLITE_OK) {
        int e = sq_fail(sq, path, rc, err, size, "cannot read the task store");
        sqlite3_exec(sq->db, "ROLLBACK", NULL, NULL, NULL);
        return e;
    }
    if (rows > 0 && version > SQ_SCHEMA_VERSION) {
        sqlite3_exec(sq->db, "ROLLBACK", NULL, NULL, NULL);
        snprintf(err, size,
                 "%s: the task store has schema version %lld, newer than this spindle's %d: "
                 "run a newer spindle (or another store)",
                 path, version, SQ_SCHEMA_VERSION);
        return -EPROTO;
    }
    rc = sqlite3_exec(sq->db, "COMMIT", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sq_fail(sq, path, rc, err, size, "cannot write the task store");
}

/* A file that is not a database, or a damaged one, stops the start: never run on half a queue. */
static int sq_check(struct srv_sq_store *sq, const char *path, char *err, size_t size)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(sq->db, "PRAGMA quick_check(1)", -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(s);
        return sq_fail(sq, path, rc, err, size, "the task store is damaged or not a database");
    }
    const unsigned char *v = sqlite3_column_text(s, 0);
    bool ok = v != NULL && strcmp((const char *)v, "ok") == 0;
    if (!ok)
        snprintf(err, size, "%s: the task store is damaged: %s", path,
                 v != NULL ? (const char *)v : "?");
    sqlite3_finalize(s);
    return ok ? 0 : -EIO;
}

int srv_sq_open(const struct srv_task_store_opts *o, void **st, char *err, size_t size)
{
    struct srv_sq_store *sq = calloc(1, sizeof(*sq));
    if (sq == NULL) {
        snprintf(err, size, "%s: out of memory", o->path);
        return -ENOMEM;
    }
    int rc = sqlite3_open_v2(
        o->path, &sq->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    int e = 0;
    if (rc != SQLITE_OK) {
        e = sq_fail(sq, o->path, rc, err, size, "cannot open the task store");
        goto err_close;
    }
    sqlite3_extended_result_codes(sq->db, 1);
    /* temp_store=MEMORY: a statement that may abort halfway (a RETURNING, a trigger) keeps the
     * pages it changes in a statement journal; in a temporary file that costs a file creation
     * and writes per statement, several times the statement itself. It only undoes a statement
     * within its transaction, so durability is the WAL's alone either way. */
    rc = sqlite3_exec(sq->db,
                      "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL;"
                      " PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY;",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        e = sq_fail(sq, o->path, rc, err, size, "the task store is damaged or not a database");
        goto err_close;
    }
    if ((e = sq_check(sq, o->path, err, size)) != 0 || (e = sq_migrate(sq, o->path, err, size)))
        goto err_close;
    *st = sq;
    return 0;

err_close:
    sqlite3_close(sq->db);
    free(sq);
    return e;
}
