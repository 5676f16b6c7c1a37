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

int suite_server_tasks_store_sqlite(void)
{
    static const struct spindle_test tests[] = {
        TS_CASES(NULL),
        SPINDLE_TEST(test_open_refuses_garbage),
    };
    return SPINDLE_SUITE_ADD("server_tasks_store_sqlite", ts_init, ts_cleanup, tests);
}
