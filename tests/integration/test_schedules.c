/* test_schedules.c - [schedule.NAME] end to end with the real binary: a schedule fires at each
 * tick and its tasks run; GET /v1/schedules lists it; one tick never fires twice across a restart
 * on the same store; misfire = once fires the last tick missed while down and misfire = skip does
 * not; a reload adds a schedule, and a reload with a bad one changes nothing; --check-config names
 * FILE:LINE of a schedule whose task would be refused.
 *
 * Schedules use "@every 1s" (ticks on whole seconds since the epoch) so a test sees several ticks
 * within seconds; the downtime of the misfire test is made by writing an old last tick into the
 * stopped server's store (SQLite), not by waiting. Assertions are about what the logs and the
 * store say (ticks distinct and increasing, task counts), never about how long anything took.
 */
#include <CUnit/CUnit.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_schedules(void);

#define SC_WAIT_MS 20000 /* a few ticks, on a loaded machine under a sanitizer */

/* GET `target` as JSON (new reference) or NULL. */
static json_t *sc_get(const struct hs_server *s, const char *target)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    struct hs_resp r = {0};
    json_t *j = NULL;
    if (hs_roundtrip(s, req, &r) == 0 && r.status == 200)
        j = hs_resp_json(&r);
    hs_resp_fini(&r);
    return j;
}

/* The "tick" of every "schedule fired" line of schedule `name` into ticks[] (at most max), in log
 * order. Returns how many. */
static size_t sc_fired(const struct hs_server *s, const char *name, char ticks[][64], size_t max)
{
    json_t *lines = hs_log_lines(s);
    size_t n = 0, i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *msg = hs_json_str(l, "msg"), *sched = hs_json_str(l, "schedule");
        if (msg && sched && strcmp(msg, "schedule fired") == 0 && strcmp(sched, name) == 0 &&
            n < max)
            snprintf(ticks[n++], 64, "%s", hs_json_str(l, "tick"));
    }
    json_decref(lines);
    return n;
}

/* The schedule `name` of GET /v1/schedules (new reference) or NULL. */
static json_t *sc_listed(const struct hs_server *s, const char *name)
{
    json_t *j = sc_get(s, "/v1/schedules"), *found = NULL, *e;
    size_t i;
    json_array_foreach(json_object_get(j, "schedules"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "name")), name) == 0)
            found = json_incref(e);
    }
    json_decref(j);
    return found;
}

static const char *sc_str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static void test_schedule_fires_at_each_tick(void)
{
    const char *ov[] = {"schedule.tick.cron=@every 1s", "schedule.tick.kind=noop",
                        "schedule.tick.tenant=sched-t", NULL};
    struct hs_server *s = hs_start(ov);
    json_t *e = NULL, *task = NULL;
    char ticks[8][64];
    HS_CHECK(s != NULL);
    HS_CHECK(hs_log_wait_count(s, "schedule fired", 3, SC_WAIT_MS) >= 3);
    size_t n = sc_fired(s, "tick", ticks, 8);
    HS_CHECK(n >= 3);
    for (size_t i = 1; i < n; i++)
        CU_ASSERT(strcmp(ticks[i - 1], ticks[i]) < 0); /* distinct, in order (RFC 3339 sorts) */
    json_t *line = hs_log_wait(s, "schedule fired", "tick", ticks[0], 1000);
    HS_CHECK(line != NULL);
    char target[128];
    snprintf(target, sizeof(target), "/v1/tasks/%s?wait_ms=10000", hs_json_str(line, "task_id"));
    json_decref(line);
    /* the task belongs to the schedule's tenant: the default tenant does not see it */
    json_t *other = sc_get(s, target);
    CU_ASSERT_PTR_NULL(other);
    json_decref(other);
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: sched-t\r\n\r\n",
             target);
    struct hs_resp r = {0};
    HS_CHECK(hs_roundtrip(s, req, &r) == 0 && r.status == 200);
    task = hs_resp_json(&r);
    hs_resp_fini(&r);
    CU_ASSERT_STRING_EQUAL(sc_str(task, "state"), "succeeded");
    CU_ASSERT_STRING_EQUAL(sc_str(task, "kind"), "noop");
    e = sc_listed(s, "tick");
    HS_CHECK(e != NULL);
    CU_ASSERT_STRING_EQUAL(sc_str(e, "cron"), "@every 1s");
    CU_ASSERT_STRING_EQUAL(sc_str(e, "tz"), "UTC");
    CU_ASSERT_STRING_EQUAL(sc_str(e, "kind"), "noop");
    CU_ASSERT_STRING_EQUAL(sc_str(e, "tenant"), "sched-t");
    CU_ASSERT_STRING_EQUAL(sc_str(e, "misfire"), "skip");
    CU_ASSERT(strlen(sc_str(e, "last_task")) > 0);
    CU_ASSERT(strlen(sc_str(e, "last_run")) > 0);
    CU_ASSERT(strcmp(sc_str(e, "next_run"), sc_str(e, "last_tick")) > 0);
    HS_CHECK(hs_roundtrip(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(r.body, "spindle_schedule_fires_total{schedule=\"tick\",result=\"fired\"} "));
    hs_resp_fini(&r);
out:
    json_decref(e);
    json_decref(task);
    HS_FINISH(s);
}

/* Every task of `tenant` in the store (follows the pages), or -1. */
static long sc_count_tasks(const struct hs_server *s, const char *tenant)
{
    long n = 0;
    char after[64] = "";
    for (int page = 0; page < 100; page++) {
        char req[512];
        snprintf(req, sizeof(req),
                 "GET /v1/tasks?limit=100%s%s HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: %s\r\n\r\n",
                 after[0] ? "&after=" : "", after, tenant);
        struct hs_resp r = {0};
        if (hs_roundtrip(s, req, &r) != 0 || r.status != 200) {
            hs_resp_fini(&r);
            return -1;
        }
        json_t *j = hs_resp_json(&r);
        hs_resp_fini(&r);
        n += (long)json_array_size(json_object_get(j, "tasks"));
        const char *next = json_string_value(json_object_get(j, "next_after"));
        snprintf(after, sizeof(after), "%s", next ? next : "");
        json_decref(j);
        if (after[0] == '\0')
            return n;
    }
    return -1;
}

static void test_schedule_once_per_tick_across_restart(void)
{
    char *dir = proc_tmpdir_new();
    char store[1100];
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    snprintf(store, sizeof(store), "tasks.store=%s/tasks.db", dir);
    /* once: a restart within a tick would fire that tick again, if the store allowed it */
    const char *ov[] = {store,
                        "schedule.r.cron=@every 1s",
                        "schedule.r.kind=noop",
                        "schedule.r.tenant=restart",
                        "schedule.r.misfire=once",
                        NULL};
    char a[16][64], b[16][64];
    size_t na = 0, nb = 0;
    struct hs_server *s1 = hs_start(ov), *s2 = NULL;
    HS_CHECK(s1 != NULL);
    HS_CHECK(hs_log_wait_count(s1, "schedule fired", 2, SC_WAIT_MS) >= 2);
    CU_ASSERT_EQUAL(hs_stop(s1), 0);
    na = sc_fired(s1, "r", a, 16);
    s2 = hs_start(ov);
    HS_CHECK(s2 != NULL);
    HS_CHECK(hs_log_wait_count(s2, "schedule fired", 2, SC_WAIT_MS) >= 2);
    CU_ASSERT_EQUAL(hs_stop(s2), 0);
    nb = sc_fired(s2, "r", b, 16);
    HS_CHECK(na >= 2 && nb >= 2);
    /* every tick once: the second server's first tick is after the first server's last */
    CU_ASSERT(strcmp(a[na - 1], b[0]) < 0);
    for (size_t i = 1; i < nb; i++)
        CU_ASSERT(strcmp(b[i - 1], b[i]) < 0);
    /* and the store holds exactly one task per fired tick (the third run only reads) */
    hs_free(s2);
    const char *ro[] = {store, NULL};
    s2 = hs_start(ro);
    HS_CHECK(s2 != NULL);
    CU_ASSERT_EQUAL(sc_count_tasks(s2, "restart"), (long)(na + nb));
out:
    hs_free(s1);
    HS_FINISH(s2);
    proc_tmpdir_free(dir);
}

/* Record `tick_ms` as the last tick of schedule `name` in the (stopped) server's store. */
static int sc_store_set(const char *db, const char *name, long long tick_ms)
{
    sqlite3 *h = NULL;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO schedules(name,last_tick_ms,last_task,fired_ms) VALUES('%s',%lld,"
             "'old',%lld) ON CONFLICT(name) DO UPDATE SET last_tick_ms=excluded.last_tick_ms",
             name, tick_ms, tick_ms);
    int rc = sqlite3_open(db, &h);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
    sqlite3_close(h);
    return rc == SQLITE_OK ? 0 : -1;
}

static void test_schedule_misfire_once_and_skip(void)
{
    char *dir = proc_tmpdir_new();
    char store[1200], db[1100];
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    snprintf(db, sizeof(db), "%s/tasks.db", dir);
    snprintf(store, sizeof(store), "tasks.store=%s", db);
    const char *ov[] = {store,
                        "schedule.once.cron=@every 1h",
                        "schedule.once.kind=noop",
                        "schedule.once.misfire=once",
                        "schedule.skip.cron=@every 1h",
                        "schedule.skip.kind=noop",
                        "schedule.skip.misfire=skip",
                        "schedule.fresh.cron=@every 1h",
                        "schedule.fresh.kind=noop",
                        "schedule.fresh.misfire=once",
                        NULL};
    json_t *once = NULL, *skip = NULL, *fresh = NULL, *line = NULL;
    struct hs_server *s = hs_start(ov); /* creates the store */
    HS_CHECK(s != NULL);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    hs_free(s);
    s = NULL;
    /* down for three hours: the last ticks recorded are three hours old */
    long long hour = (long long)time(NULL) / 3600 * 3600;
    HS_CHECK(sc_store_set(db, "once", (hour - 3 * 3600) * 1000) == 0);
    HS_CHECK(sc_store_set(db, "skip", (hour - 3 * 3600) * 1000) == 0);
    s = hs_start(ov);
    HS_CHECK(s != NULL);
    line = hs_log_wait(s, "schedule fired", "schedule", "once", SC_WAIT_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "why"), "misfire_once");
    json_decref(line);
    line =
        hs_log_wait(s, "schedule missed ticks while down: skipped", "schedule", "skip", SC_WAIT_MS);
    HS_CHECK(line != NULL);
    once = sc_listed(s, "once");
    skip = sc_listed(s, "skip");
    fresh = sc_listed(s, "fresh");
    HS_CHECK(once != NULL && skip != NULL && fresh != NULL);
    /* once: the last missed tick (this hour's) fired; skip: its record is untouched */
    char this_hour[64];
    struct tm tm;
    time_t th = (time_t)hour;
    gmtime_r(&th, &tm);
    strftime(this_hour, sizeof(this_hour), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    CU_ASSERT_STRING_EQUAL(sc_str(once, "last_tick"), this_hour);
    CU_ASSERT_STRING_NOT_EQUAL(sc_str(skip, "last_tick"), this_hour);
    CU_ASSERT_STRING_EQUAL(sc_str(skip, "last_task"), "old");
    /* a schedule never fired before has missed nothing */
    CU_ASSERT(json_is_null(json_object_get(fresh, "last_tick")));
    CU_ASSERT(strcmp(sc_str(fresh, "next_run"), this_hour) > 0);
    CU_ASSERT(strcmp(sc_str(skip, "next_run"), this_hour) > 0);
    char ticks[4][64];
    CU_ASSERT_EQUAL(sc_fired(s, "skip", ticks, 4), 0);
    CU_ASSERT_EQUAL(sc_fired(s, "fresh", ticks, 4), 0);
    CU_ASSERT_EQUAL(sc_fired(s, "once", ticks, 4), 1);
    struct hs_resp r = {0};
    HS_CHECK(hs_roundtrip(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(r.body, "spindle_schedule_fires_total{schedule=\"skip\",result=\"skipped\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(r.body, "spindle_schedule_fires_total{schedule=\"once\",result=\"fired\"} 1"));
    hs_resp_fini(&r);
out:
    json_decref(line);
    json_decref(once);
    json_decref(skip);
    json_decref(fresh);
    HS_FINISH(s);
    proc_tmpdir_free(dir);
}

static void test_schedule_reload(void)
{
    struct hs_server *s = hs_start(NULL);
    char *extra = NULL;
    json_t *j = NULL;
    HS_CHECK(s != NULL);
    j = sc_get(s, "/v1/schedules");
    HS_CHECK(j != NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "schedules")), 0);
    HS_CHECK((extra = strdup("[schedule.added]\ncron = @every 1s\nkind = noop\n")) != NULL);
    HS_CHECK(ops_config_rewrite(s, "debug", extra) == 0);
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    HS_CHECK(hs_log_wait_count(s, "schedule fired", 2, SC_WAIT_MS) >= 2);
    /* a schedule whose kind does not exist: the reload changes nothing */
    free(extra);
    extra = NULL;
    /* ops_config_rewrite's lines 1-8 ([server], [log]), then this from line 9 */
    HS_CHECK((extra = strdup("[schedule.bad]\ncron = @every 1s\nkind = nosuchkind\n")) != NULL);
    HS_CHECK(ops_config_rewrite(s, "debug", extra) == 0);
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    json_t *fail =
        hs_log_wait(s, "configuration reload failed: nothing changed", NULL, NULL, SC_WAIT_MS);
    HS_CHECK(fail != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(hs_json_str(fail, "error"), ":11: [schedule.bad] kind: "));
    json_decref(fail);
    size_t before = hs_log_wait_count(s, "schedule fired", 0, 0);
    HS_CHECK(hs_log_wait_count(s, "schedule fired", before + 1, SC_WAIT_MS) > before);
    char ticks[2][64];
    CU_ASSERT_EQUAL(sc_fired(s, "bad", ticks, 2), 0);
out:
    free(extra);
    json_decref(j);
    HS_FINISH(s);
}

static void test_schedule_check_config(void)
{
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char *path = proc_file_write(dir, "s.conf",
                                 "[schedule.x]\n"
                                 "cron = */5 * * * *\n"
                                 "kind = nosuchkind\n");
    char *path2 = proc_file_write(dir, "p.conf",
                                  "[schedule.p]\n"
                                  "cron = @daily\n"
                                  "kind = primes\n"
                                  "params = {\"n\": -5}\n");
    char *out = NULL, *err = NULL;
    int code = -1;
    HS_CHECK(path != NULL && path2 != NULL);
    const char *args[] = {"serve", "-c", path, "--check-config", NULL};
    HS_CHECK(proc_run(args, 20000, &out, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 2);
    char want[1200];
    snprintf(want, sizeof(want), "%s:3: [schedule.x] kind: ", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    free(out);
    free(err);
    out = err = NULL;
    const char *args2[] = {"serve", "-c", path2, "--check-config", NULL};
    HS_CHECK(proc_run(args2, 20000, &out, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 2);
    snprintf(want, sizeof(want), "%s:4: [schedule.p] params: ", path2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
out:
    free(out);
    free(err);
    free(path);
    free(path2);
    proc_tmpdir_free(dir);
}

int suite_integration_schedules(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_schedule_fires_at_each_tick),
        SPINDLE_TEST(test_schedule_once_per_tick_across_restart),
        SPINDLE_TEST(test_schedule_misfire_once_and_skip),
        SPINDLE_TEST(test_schedule_reload),
        SPINDLE_TEST(test_schedule_check_config),
    };
    return SPINDLE_SUITE_ADD("integration_schedules", NULL, NULL, tests);
}
