/* test_pg.c - many spindle instances on one PostgreSQL task store, against the real binary and
 * a throw-away cluster (pg.h): tasks enqueued on one instance finish on the others (two and
 * three instances) and are read from any; kill -9 of an instance with a running attempt has it
 * run again elsewhere after the lease, with no second success; DELETE on one instance stops the
 * attempt running on another, and a late word about an attempt spares the next one; /metrics of one
 * instance counts the waiting tasks of every tenant enqueued on another; the database stopped
 * during enqueues answers 503 until it is back, and every task that got its 202 is still there; a
 * newer schema stops the start; spindle tasks migrate --check; an "@every 1s" schedule configured
 * on two instances fires each tick once.
 *
 * Waits are long-polls (wait_ms) and log lines, never sleeps; bounds are seconds.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/pg.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_pg(void);

#define PT_WAIT_MS 20000 /* a state change or a log line, under sanitizers on a busy machine */

/* ---- helpers --------------------------------------------------------------------------------- */

/* An instance on the database `uri`, with one more override (NULL: none). */
static struct hs_server *pt_start(const char *uri, const char *extra)
{
    char store[600];
    snprintf(store, sizeof(store), "tasks.store=%s", uri);
    const char *over[] = {store, "pool.workers=1", "tasks.worker_share=100", extra, NULL};
    return hs_start(over);
}

static int pt_do(const struct hs_server *s, const char *method, const char *path, const char *body,
                 struct hs_resp *r)
{
    char req[2048];
    size_t blen = body != NULL ? strlen(body) : 0;
    snprintf(req, sizeof(req),
             "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Timeout-Ms: 60000\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             method, path, blen, body ? body : "");
    return hs_roundtrip(s, req, r);
}

/* POST /v1/tasks: the status, the id into id. */
static int pt_post(const struct hs_server *s, const char *body, char id[64])
{
    struct hs_resp r = {0};
    int status = -1;
    id[0] = '\0';
    if (pt_do(s, "POST", "/v1/tasks", body, &r) == 0) {
        status = r.status;
        json_t *j = hs_resp_json(&r);
        const char *v = j != NULL ? hs_json_str(j, "id") : NULL;
        snprintf(id, 64, "%s", v != NULL ? v : "");
        if (status == 503 && !hs_resp_is_error(&r, 503, "store_unavailable"))
            status = -503; /* a 503 for another reason */
        json_decref(j);
    }
    hs_resp_fini(&r);
    return status;
}

/* GET /v1/tasks/ID with `query`: the JSON (NULL unless 200). */
static json_t *pt_get(const struct hs_server *s, const char *id, const char *query)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/tasks/%s%s", id, query);
    struct hs_resp r = {0};
    json_t *j = NULL;
    if (pt_do(s, "GET", path, NULL, &r) == 0 && r.status == 200)
        j = hs_resp_json(&r);
    hs_resp_fini(&r);
    return j;
}

static bool pt_state_is(const json_t *j, const char *state)
{
    const char *st = j != NULL ? hs_json_str(j, "state") : NULL;
    return st != NULL && strcmp(st, state) == 0;
}

/* Long-poll `s` until the task is final (bounded); its JSON, NULL on failure. */
static json_t *pt_final(const struct hs_server *s, const char *id)
{
    long long end = hs_now_ms() + PT_WAIT_MS;
    while (hs_now_ms() < end) {
        json_t *j = pt_get(s, id, "?wait_ms=2000"); /* well within HS_IO_MS */
        if (j == NULL)
            return NULL;
        if (pt_state_is(j, "succeeded") || pt_state_is(j, "failed") || pt_state_is(j, "cancelled"))
            return j;
        json_decref(j);
    }
    return NULL;
}

/* Log lines `msg` of task `id` with `outcome` (NULL: any) in the log of s now. */
static size_t pt_log_count(const struct hs_server *s, const char *msg, const char *id,
                           const char *outcome)
{
    json_t *lines = hs_log_lines(s);
    size_t i, n = 0;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *m = hs_json_str(l, "msg"), *t = hs_json_str(l, "task_id");
        const char *o = hs_json_str(l, "outcome");
        n += m && t && strcmp(m, msg) == 0 && strcmp(t, id) == 0 &&
             (outcome == NULL || (o && strcmp(o, outcome) == 0));
    }
    json_decref(lines);
    return n;
}

/* Wait up to PT_WAIT_MS for such a line; true when it came. */
static bool pt_log_wait(const struct hs_server *s, const char *msg, const char *id,
                        const char *outcome)
{
    long long end = hs_now_ms() + PT_WAIT_MS;
    while (pt_log_count(s, msg, id, outcome) == 0) {
        if (hs_now_ms() >= end)
            return false;
        json_decref(hs_log_wait(s, msg, "task_id", id, 1000));
    }
    return true;
}

/* Wait until the store has recorded that the attempt of `id` started (started_at is set in the
 * group commit after the attempt began). */
static bool pt_started(const struct hs_server *s, const char *id)
{
    long long end = hs_now_ms() + PT_WAIT_MS;
    while (hs_now_ms() < end) {
        json_t *j = pt_get(s, id, "");
        bool started = j != NULL && json_is_string(json_object_get(j, "started_at"));
        json_decref(j);
        if (started)
            return true;
        json_decref(hs_log_wait(s, "not a line", NULL, NULL, 50)); /* a bounded pause */
    }
    return false;
}

/* ---- sharing --------------------------------------------------------------------------------- */

#define PT_TASKS 6

/* Tasks enqueued on the first of n instances are run by the others too and can be read from
 * any of them; each task succeeds exactly once across all of them. */
static void pt_shared(unsigned n)
{
    char uri[256], ids[PT_TASKS][64];
    struct hs_server *s[3] = {NULL, NULL, NULL};
    json_t *j = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    for (unsigned i = 0; i < n; i++)
        HS_CHECK((s[i] = pt_start(uri, NULL)) != NULL);
    /* One worker each, tasks long enough that the first instance cannot take them all. */
    for (unsigned k = 0; k < PT_TASKS; k++)
        CU_ASSERT_EQUAL(pt_post(s[0], "{\"kind\":\"spin\",\"params\":{\"ms\":400}}", ids[k]), 202);
    for (unsigned k = 0; k < PT_TASKS; k++) {
        json_decref(j);
        j = pt_final(s[k % n], ids[k]); /* read from any instance */
        HS_CHECK(pt_state_is(j, "succeeded"));
        CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 1);
    }
    unsigned ran[3] = {0, 0, 0};
    for (unsigned k = 0; k < PT_TASKS; k++) {
        size_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            size_t c = pt_log_count(s[i], "task attempt end", ids[k], "succeeded");
            ran[i] += (unsigned)c;
            total += c;
        }
        if (total == 0) { /* the line may follow the answer: the log has its own thread */
            for (unsigned i = 0; i < n && total == 0; i++)
                total += pt_log_wait(s[i], "task attempt end", ids[k], "succeeded");
        }
        CU_ASSERT_EQUAL(total, 1);
    }
    for (unsigned i = 1; i < n; i++)
        CU_ASSERT(ran[i] >= 1); /* every other instance ran some of the first one's tasks */
out:
    json_decref(j);
    for (unsigned i = 0; i < n; i++)
        HS_FINISH(s[i]);
}

static void test_pg_two_instances_share_the_queue(void)
{
    pt_shared(2);
}

static void test_pg_three_instances_share_the_queue(void)
{
    pt_shared(3);
}

/* kill -9 of the instance running an attempt: after the lease another runs it again as attempt
 * 2, marked interrupted, and it succeeds once. */
static void test_pg_kill9_reruns_elsewhere(void)
{
    char uri[256], id[64];
    struct hs_server *a = NULL, *b = NULL;
    json_t *j = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    HS_CHECK((a = pt_start(uri, "tasks.lease_ms=1000")) != NULL);
    /* Long enough to be still running once the second instance is up, under sanitizers on a
     * busy machine too. */
    CU_ASSERT_EQUAL(pt_post(a, "{\"kind\":\"spin\",\"params\":{\"ms\":4000}}", id), 202);
    HS_CHECK(pt_log_wait(a, "task attempt start", id, NULL));
    HS_CHECK(pt_started(a, id)); /* the store knows it ran: its loss is an interruption */
    HS_CHECK((b = pt_start(uri, "tasks.lease_ms=1000")) != NULL);
    HS_CHECK(kill(hs_pid(a), SIGKILL) == 0);
    HS_CHECK(hs_wait_exit(a, HS_STOP_MS));
    j = pt_final(b, id);
    HS_CHECK(pt_state_is(j, "succeeded"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 2);
    CU_ASSERT_EQUAL(hs_json_int(j, "interrupted", 0), 1);
    const char *code = hs_json_str(json_array_get(json_object_get(j, "errors"), 0), "code");
    CU_ASSERT(code != NULL && strcmp(code, "interrupted") == 0);
    HS_CHECK(pt_log_wait(b, "task attempt end", id, "succeeded"));
    CU_ASSERT_EQUAL(pt_log_count(a, "task attempt end", id, "succeeded"), 0);
    CU_ASSERT_EQUAL(pt_log_count(b, "task attempt end", id, "succeeded"), 1);
out:
    json_decref(j);
    hs_free(a);
    HS_FINISH(b);
}

/* DELETE on one instance stops the attempt that runs on another (a minute-long spin). */
static void test_pg_delete_cancels_elsewhere(void)
{
    char uri[256], id[64], path[128];
    struct hs_server *a = NULL, *b = NULL;
    struct hs_resp r = {0};
    json_t *j = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    HS_CHECK((b = pt_start(uri, NULL)) != NULL);
    CU_ASSERT_EQUAL(pt_post(b, "{\"kind\":\"spin\",\"params\":{\"ms\":60000}}", id), 202);
    HS_CHECK(pt_log_wait(b, "task attempt start", id, NULL));
    HS_CHECK((a = pt_start(uri, NULL)) != NULL);
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    long long t0 = hs_now_ms();
    HS_CHECK(pt_do(a, "DELETE", path, NULL, &r) == 0 && r.status == 200);
    j = hs_resp_json(&r);
    CU_ASSERT(pt_state_is(j, "cancelled"));
    HS_CHECK(pt_log_wait(b, "task attempt cancelled by another instance", id, NULL));
    HS_CHECK(pt_log_wait(b, "task attempt end", id, "cancelled"));
    CU_ASSERT(hs_now_ms() - t0 < PT_WAIT_MS); /* stopped, not run for a minute */
    CU_ASSERT_EQUAL(pt_log_count(b, "task attempt end", id, "succeeded"), 0);
out:
    hs_resp_fini(&r);
    json_decref(j);
    HS_FINISH(a);
    HS_FINISH(b);
}

/* Lines `msg` of attempt `attempt` of task `id` in the log of s now. */
static size_t pt_log_attempt(const struct hs_server *s, const char *msg, const char *id,
                             unsigned attempt)
{
    json_t *lines = hs_log_lines(s);
    size_t i, n = 0;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *m = hs_json_str(l, "msg"), *t = hs_json_str(l, "task_id");
        n += m && t && strcmp(m, msg) == 0 && strcmp(t, id) == 0 &&
             hs_json_int(l, "attempt", 0) == (long long)attempt;
    }
    json_decref(lines);
    return n;
}

/* A late word that attempt 1 is lost (its lease was taken over) reaches the instance after it
 * claimed the same task again as attempt 2: only attempt 1 stops; attempt 2 runs on and
 * succeeds. Cancelling by task id instead would stop attempt 2 too, and leave the task running
 * in the store (its lease renewed by this very instance) for ever. The takeover is written into
 * the database as an instance that expired the lease would write it; the word is the NOTIFY
 * that instance would send. poll_ms is long so that the notification is what says it. */
static void test_pg_late_lost_event_spares_the_next_attempt(void)
{
    char uri[256], store[300], id[64], sql[256];
    struct hs_server *a = NULL;
    json_t *j = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    snprintf(store, sizeof(store), "tasks.store=%s", uri);
    const char *over[] = {store, "pool.workers=2", "tasks.worker_share=100", "tasks.poll_ms=10000",
                          NULL};
    HS_CHECK((a = hs_start(over)) != NULL);
    /* Attempt 1 must still run when the word about it comes (else its own completion, fenced,
     * takes it off this instance's list and the word is moot): 8 s, on a busy machine too. */
    CU_ASSERT_EQUAL(pt_post(a, "{\"kind\":\"spin\",\"params\":{\"ms\":8000},\"attempts\":3}", id),
                    202);
    HS_CHECK(pt_log_wait(a, "task attempt start", id, NULL));
    HS_CHECK(pt_started(a, id));
    /* Another instance found the lease run out: an interrupted attempt, retried at once. */
    snprintf(sql, sizeof(sql),
             "UPDATE spindle_tasks SET state=2, run_at_ms=0, owner=NULL, lease_until_ms=NULL"
             " WHERE id='%s'; NOTIFY spindle_tasks, 'd'",
             id);
    HS_CHECK(pg_sql(uri, sql) == 0);
    long long end = hs_now_ms() + PT_WAIT_MS;
    while (pt_log_attempt(a, "task attempt start", id, 2) == 0 && hs_now_ms() < end)
        json_decref(hs_log_wait(a, "task attempt start", "task_id", id, 500));
    HS_CHECK(pt_log_attempt(a, "task attempt start", id, 2) == 1);
    /* Now the late word about attempt 1. */
    snprintf(sql, sizeof(sql), "NOTIFY spindle_tasks, 'c:%s:1'", id);
    HS_CHECK(pg_sql(uri, sql) == 0);
    HS_CHECK(pt_log_wait(a, "task attempt cancelled by another instance", id, NULL));
    j = pt_final(a, id);
    HS_CHECK(pt_state_is(j, "succeeded"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 2);
    HS_CHECK(pt_log_wait(a, "task attempt end", id, "succeeded"));
    CU_ASSERT_EQUAL(pt_log_attempt(a, "task attempt end", id, 2), 1);
    CU_ASSERT_EQUAL(pt_log_count(a, "task attempt end", id, "succeeded"), 1);
out:
    json_decref(j);
    HS_FINISH(a);
}

/* POST /v1/tasks as `tenant`: the status. */
static int pt_post_as(const struct hs_server *s, const char *tenant, const char *body)
{
    char req[1024];
    snprintf(req, sizeof(req),
             "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Tenant-Id: %s\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             tenant, strlen(body), body);
    struct hs_resp r = {0};
    int status = hs_roundtrip(s, req, &r) == 0 ? r.status : -1;
    hs_resp_fini(&r);
    return status;
}

/* Whether GET /metrics of s has every line of `want` (NULL-terminated), each whole. */
static bool pt_metrics_have(const struct hs_server *s, const char *const *want)
{
    struct hs_resp r = {0};
    bool all = pt_do(s, "GET", "/metrics", NULL, &r) == 0 && r.status == 200 && r.body != NULL;
    for (size_t i = 0; all && want[i] != NULL; i++) {
        char line[160];
        snprintf(line, sizeof(line), "\n%s\n", want[i]);
        all = strstr(r.body, line) != NULL;
    }
    hs_resp_fini(&r);
    return all;
}

/* The waiting tasks by tenant are the whole queue's: tasks enqueued on one instance show in the
 * /metrics of another that never saw them, each tenant with its own count. */
static void test_pg_queued_by_tenant_across_instances(void)
{
    char uri[256];
    struct hs_server *a = NULL, *b = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    HS_CHECK((a = pt_start(uri, NULL)) != NULL);
    HS_CHECK((b = pt_start(uri, NULL)) != NULL);
    const char *later = "{\"kind\":\"noop\",\"delay_ms\":600000}";
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(pt_post_as(a, "acme", later), 202);
    CU_ASSERT_EQUAL(pt_post_as(a, "zeta", later), 202);
    const char *want[] = {"spindle_tasks_queued{tenant=\"acme\"} 3",
                          "spindle_tasks_queued{tenant=\"zeta\"} 1",
                          "spindle_tasks_queued{tenant=\"other\"} 0", NULL};
    long long end = hs_now_ms() + PT_WAIT_MS; /* refreshed every 2 s */
    bool seen = false;
    while (!(seen = pt_metrics_have(b, want)) && hs_now_ms() < end)
        json_decref(hs_log_wait(b, "not a line", NULL, NULL, 250)); /* a bounded pause */
    CU_ASSERT(seen);
out:
    HS_FINISH(a);
    HS_FINISH(b);
}

/* The database stops during enqueues: 503 store_unavailable while it is down, 202 again once it
 * is back (spindle not restarted), and every task that got a 202 runs. */
static void test_pg_database_restart(void)
{
    char uri[256], ids[16][64], id[64];
    unsigned n = 0, unavailable = 0;
    struct hs_server *s = NULL;
    json_t *j = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    /* An attempt whose outcome could not be written while the database was away runs again
     * once its lease ends: a short lease keeps that within the wait below. */
    HS_CHECK((s = pt_start(uri, "tasks.lease_ms=3000")) != NULL);
    for (int i = 0; i < 4; i++) {
        HS_CHECK(pt_post(s, "{\"kind\":\"noop\"}", ids[n]) == 202);
        n++;
    }
    HS_CHECK(pg_stop() == 0);
    for (int i = 0; i < 3; i++) {
        int status = pt_post(s, "{\"kind\":\"noop\"}", id);
        CU_ASSERT(status == 503 || status == 202);
        unavailable += status == 503;
        if (status == 202 && n < 16) /* accepted before the stop was seen: must survive */
            memcpy(ids[n++], id, sizeof(id));
    }
    CU_ASSERT(unavailable >= 1);
    HS_CHECK(pg_start() == 0);
    long long end = hs_now_ms() + PT_WAIT_MS;
    int status = 503;
    while (status == 503 && hs_now_ms() < end) /* bounded: the next transaction reconnects */
        status = pt_post(s, "{\"kind\":\"noop\"}", id);
    HS_CHECK(status == 202);
    memcpy(ids[n++], id, sizeof(id));
    for (unsigned k = 0; k < n; k++) {
        json_decref(j);
        j = pt_final(s, ids[k]);
        CU_ASSERT(pt_state_is(j, "succeeded"));
    }
    /* The runner's claims failed while the database was away: logged once for the outage (not
     * once per try: a runner that retried at once filled the disk with them), and once more
     * when they work again. */
    json_t *lines = hs_log_lines(s);
    size_t i, failed = 0, again = 0;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *m = hs_json_str(l, "msg");
        failed += m != NULL && strncmp(m, "task claim failed", 17) == 0;
        again += m != NULL && strcmp(m, "task claims work again") == 0;
    }
    json_decref(lines);
    CU_ASSERT(failed <= 1);
    CU_ASSERT(again == failed);
out:
    json_decref(j);
    if (pg_start() != 0)
        CU_FAIL("the cluster did not come back");
    HS_FINISH(s);
}

/* ---- schedules ------------------------------------------------------------------------------- */

#define PT_TICKS 64

/* An instance on `uri` with the schedule "tick": a noop task of tenant sched-t every second. */
static struct hs_server *pt_start_sched(const char *uri)
{
    char store[600];
    snprintf(store, sizeof(store), "tasks.store=%s", uri);
    const char *over[] = {store,
                          "pool.workers=1",
                          "tasks.worker_share=100",
                          "schedule.tick.cron=@every 1s",
                          "schedule.tick.kind=noop",
                          "schedule.tick.tenant=sched-t",
                          NULL};
    return hs_start(over);
}

/* Lines `msg` of schedule "tick" in the log of s; with ticks, their "tick" fields are appended
 * to ticks[*n..PT_TICKS). */
static size_t pt_sched_lines(const struct hs_server *s, const char *msg, char ticks[][64],
                             size_t *n)
{
    json_t *lines = hs_log_lines(s);
    size_t i, count = 0;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *m = hs_json_str(l, "msg"), *sched = hs_json_str(l, "schedule");
        const char *tick = hs_json_str(l, "tick");
        if (m == NULL || sched == NULL || strcmp(m, msg) != 0 || strcmp(sched, "tick") != 0)
            continue;
        count++;
        if (ticks != NULL && *n < PT_TICKS)
            snprintf(ticks[(*n)++], 64, "%s", tick != NULL ? tick : "");
    }
    json_decref(lines);
    return count;
}

/* Two instances with the same schedule on one database: each tick is enqueued by one of them
 * (the other finds it fired already: nothing enqueued), so the database holds one task per tick
 * fired, and the tasks run. */
static void test_pg_schedule_fires_once_across_instances(void)
{
    static const char fired[] = "schedule fired", already[] = "schedule tick fired already: "
                                                              "nothing enqueued";
    char uri[256], ticks[PT_TICKS][64];
    size_t n = 0;
    struct hs_server *a = NULL, *b = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    HS_CHECK((a = pt_start_sched(uri)) != NULL);
    HS_CHECK((b = pt_start_sched(uri)) != NULL);
    /* Both fire every tick from now on: wait for three ticks the other one had taken. */
    long long end = hs_now_ms() + PT_WAIT_MS;
    size_t taken;
    while ((taken = pt_sched_lines(a, already, NULL, NULL) +
                    pt_sched_lines(b, already, NULL, NULL)) < 3 &&
           hs_now_ms() < end)
        json_decref(hs_log_wait(a, "not a line", NULL, NULL, 100)); /* a bounded pause */
    CU_ASSERT(taken >= 3);
    /* The logs are complete once both stopped. */
    CU_ASSERT_EQUAL(hs_stop(a), 0);
    CU_ASSERT_EQUAL(hs_stop(b), 0);
    size_t on_a = pt_sched_lines(a, fired, ticks, &n), on_b = pt_sched_lines(b, fired, ticks, &n);
    HS_CHECK(n == on_a + on_b && n >= 3);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = i + 1; k < n; k++) {
            if (strcmp(ticks[i], ticks[k]) == 0) {
                fprintf(stderr, "\n  tick %s fired twice", ticks[i]);
                CU_FAIL("a tick fired on both instances");
            }
        }
    }
    CU_ASSERT_EQUAL(pg_sql_int(uri, "SELECT count(*) FROM spindle_tasks WHERE tenant='sched-t'"),
                    (long long)n);
    CU_ASSERT_EQUAL(pg_sql_int(uri, "SELECT count(*) FROM spindle_schedules"), 1);
    CU_ASSERT(pg_sql_int(uri, "SELECT count(*) FROM spindle_tasks WHERE tenant='sched-t'"
                              " AND state=3") >= 1); /* succeeded */
out:
    hs_free(a); /* stopped above, or killed after a failed start */
    hs_free(b);
}

/* ---- the schema ------------------------------------------------------------------------------ */

static int pt_migrate(const char *uri, bool check, char **out)
{
    const char *args[] = {"tasks", "migrate", "--store", uri, check ? "--check" : NULL, NULL};
    int code = -1;
    char *err = NULL;
    if (proc_run(args, 30000, out, &err, &code) != 0)
        code = -1;
    if (code < 0)
        fprintf(stderr, "\n  tasks migrate: %s", err ? err : "");
    free(err);
    return code;
}

static void test_pg_migrate_check_and_newer_schema(void)
{
    char uri[256], *out = NULL, *err = NULL, *cfgdir = NULL, *cfg = NULL;
    HS_CHECK(pg_db_new(uri, sizeof(uri)) == 0);
    CU_ASSERT_EQUAL(pt_migrate(uri, true, &out), 1); /* a new database: pending */
    CU_ASSERT_PTR_NOT_NULL(out != NULL ? strstr(out, "migration pending") : NULL);
    free(out);
    out = NULL;
    CU_ASSERT_EQUAL(pt_migrate(uri, false, NULL), 0);
    CU_ASSERT_EQUAL(pt_migrate(uri, true, NULL), 0);
    HS_CHECK(pg_sql(uri, "UPDATE spindle_schema SET version=99") == 0);
    CU_ASSERT_EQUAL(pt_migrate(uri, true, NULL), 2);
    /* serve refuses it: exit 1 with the reason */
    HS_CHECK((cfgdir = proc_tmpdir_new()) != NULL);
    char body[400];
    snprintf(body, sizeof(body), "[tasks]\nstore = %s\n", uri);
    HS_CHECK((cfg = proc_file_write(cfgdir, "spindle.conf", body)) != NULL);
    const char *args[] = {"serve", "-c", cfg, "--listen", "127.0.0.1:0", "--log-file", "-", NULL};
    int code = -1;
    CU_ASSERT_EQUAL(proc_run(args, 30000, NULL, &err, &code), 0);
    CU_ASSERT_EQUAL(code, 1);
    CU_ASSERT_PTR_NOT_NULL(err != NULL ? strstr(err, "newer than this spindle") : NULL);
out:
    free(out);
    free(err);
    free(cfg);
    proc_tmpdir_free(cfgdir);
}

int suite_integration_pg(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST_UNLESS(test_pg_two_instances_share_the_queue, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_three_instances_share_the_queue, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_kill9_reruns_elsewhere, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_delete_cancels_elsewhere, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_late_lost_event_spares_the_next_attempt, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_queued_by_tenant_across_instances, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_database_restart, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_migrate_check_and_newer_schema, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_schedule_fires_once_across_instances, pg_skip),
    };
    return SPINDLE_SUITE_ADD("integration_pg", NULL, NULL, tests);
}
