/* test_store_sqlite.c - unit tests for server/tasks/store_sqlite.c: the cases every backend
 * passes (store_cases.c) against files in a temporary directory, and a file that is not a
 * database refused.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/tasks/tasks.h"
#include "tests/suite.h"
#include "tests/unit/server/tasks/store_cases.h"

int suite_server_tasks_store_sqlite(void);

static char ts_dir[] = "/tmp/spindle-tasks-XXXXXX";
static unsigned ts_seq;

static int ts_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int sq_fresh(char *loc, size_t size)
{
    snprintf(loc, size, "%s/t%u.db", ts_dir, ts_seq++);
    return 0;
}

static int sq_set_version(const char *loc, int v)
{
    sqlite3 *db = NULL;
    char sql[64];
    snprintf(sql, sizeof(sql), "UPDATE spindle_schema SET version=%d", v);
    int rc =
        sqlite3_open(loc, &db) == SQLITE_OK && sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK
            ? 0
            : -EIO;
    sqlite3_close(db);
    return rc;
}

static const struct ts_backend sq_backend = {
    .ops = &srv_task_store_sqlite,
    .fresh = sq_fresh,
    .set_version = sq_set_version,
    .exclusive = true,
};

static int ts_init(void)
{
    ts_be = &sq_backend;
    return mkdtemp(ts_dir) == NULL ? -1 : 0;
}

static int ts_cleanup(void)
{
    return nftw(ts_dir, ts_rm, 8, FTW_DEPTH | FTW_PHYS);
}

static void test_open_refuses_garbage(void)
{
    char path[300], err[512];
    snprintf(path, sizeof(path), "%s/garbage.db", ts_dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", f);
    fclose(f);
    struct srv_task_store_opts o = {path};
    void *st = NULL;
    CU_ASSERT_EQUAL(srv_task_store_sqlite.open(&o, &st, err, sizeof(err)), -EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
}

/* Run `sql` on the closed store at ts_loc. */
static int sq_exec_at(const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(ts_loc, &db) == SQLITE_OK &&
                     sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK
                 ? 0
                 : -EIO;
    sqlite3_close(db);
    return rc;
}

/* An integer that `sql` answers on the closed store at ts_loc (-1 on failure). */
static long long sq_int_at(const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long v = -1;
    if (sqlite3_open(ts_loc, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* A version 1 file (tenant_unfinished kept by triggers, every task indexed by state) is migrated:
 * the triggers and that index are gone, the
 * counts it had still cap the tenant, and every way a task ends (complete, the last fail, an
 * expired last attempt) frees its place, in the transaction that ends it. */
static void test_unfinished_counts_after_v1(void)
{
    void *st = ts_open();
    struct srv_task t, c[2];
    bool existed;
    for (int i = 0; i < 2; i++) {
        ts_task(&t, "a", "{}", NULL);
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 3, &existed), 0);
        srv_task_fini(&t);
    }
    srv_task_store_sqlite.close(st);
    CU_ASSERT_EQUAL(sq_exec_at("UPDATE spindle_schema SET version=1;"
                               " CREATE TRIGGER tasks_unfinished_ins AFTER INSERT ON tasks"
                               " BEGIN SELECT 1; END;"
                               " CREATE INDEX tasks_state ON tasks(state, owner);"),
                    0);
    st = ts_reopen();
    srv_task_store_sqlite.close(st);
    CU_ASSERT_EQUAL(sq_int_at("SELECT max(version) FROM spindle_schema"), 2);
    CU_ASSERT_EQUAL(sq_int_at("SELECT count(*) FROM sqlite_master WHERE type='trigger'"), 0);
    CU_ASSERT_EQUAL(sq_int_at("SELECT count(*) FROM sqlite_master WHERE name='tasks_state'"), 0);
    CU_ASSERT_EQUAL(sq_int_at("SELECT n FROM tenant_unfinished WHERE tenant='a'"), 2);
    st = ts_reopen();
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 3, &existed), 0);
    srv_task_fini(&t);
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 3, &existed), -EDQUOT);
    srv_task_fini(&t);
    /* two end: one completes, one fails for good */
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL_FATAL(ts_claim(st, "me", now, 2, c), 2);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.begin(st), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.complete(st, c[0].id, 1, now, "x", 1, "text/plain"), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.fail(st, c[1].id, 1, now, "{\"code\":\"x\"}", 0), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.commit(st), 0);
    srv_task_fini(&c[0]);
    srv_task_fini(&c[1]);
    /* the third runs its last attempt and its lease runs out */
    CU_ASSERT_EQUAL_FATAL(ts_claim(st, "me", now, 2, c), 1);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.begin(st), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.start(st, c[0].id, c[0].attempt, now), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.commit(st), 0);
    srv_task_fini(&c[0]);
    srv_task_store_sqlite.close(st);
    CU_ASSERT_EQUAL(sq_exec_at("UPDATE tasks SET attempts=1"), 0);
    st = ts_reopen(); /* a new process: every lease ended */
    unsigned n = 0;
    CU_ASSERT_EQUAL(srv_task_store_sqlite.begin(st), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.expire(st, now, &n), 0);
    CU_ASSERT_EQUAL(srv_task_store_sqlite.commit(st), 0);
    CU_ASSERT_EQUAL(n, 1);
    srv_task_store_sqlite.close(st);
    CU_ASSERT_EQUAL(sq_int_at("SELECT n FROM tenant_unfinished WHERE tenant='a'"), 0);
    CU_ASSERT_EQUAL(sq_int_at("SELECT count(*) FROM tasks WHERE state IN (0,1,2)"), 0);
}

/* A claim takes turns across tenants: a's backlog, older, does not fill it; within a tenant the
 * oldest go first. */
static void test_claim_takes_turns(void)
{
    void *st = ts_open();
    struct srv_task t, c[6];
    bool existed;
    char ids[8][SRV_TASK_ID_LEN + 1];
    const char *tenant[8] = {"a", "a", "a", "a", "a", "b", "c", "b"};
    int64_t now = srv_task_now_ms();
    for (int i = 0; i < 8; i++) {
        ts_task(&t, tenant[i], "{}", NULL);
        t.run_at_ms = now - 1000 + i; /* oldest first, in this order */
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 100, &existed), 0);
        memcpy(ids[i], t.id, sizeof(ids[i]));
        srv_task_fini(&t);
    }
    CU_ASSERT_EQUAL_FATAL(ts_claim(st, "me", now, 6, c), 6);
    /* turn 1: a0 b5 c6; turn 2: a1 b7; turn 3: a2 */
    const int want[6] = {0, 5, 6, 1, 7, 2};
    for (int i = 0; i < 6; i++) {
        CU_ASSERT_STRING_EQUAL(c[i].id, ids[want[i]]);
        srv_task_fini(&c[i]);
    }
    srv_task_store_sqlite.close(st);
}

int suite_server_tasks_store_sqlite(void)
{
    static const struct spindle_test tests[] = {
        TS_CASES(NULL),
        SPINDLE_TEST(test_open_refuses_garbage),
        SPINDLE_TEST(test_unfinished_counts_after_v1),
        SPINDLE_TEST(test_claim_takes_turns),
    };
    return SPINDLE_SUITE_ADD("server_tasks_store_sqlite", ts_init, ts_cleanup, tests);
}
