/* test_tasks.c - durable tasks over HTTP against the real binary: every state and transition
 * (queued, running, retrying, succeeded, failed, cancelled), validation, Idempotency-Key (also
 * two concurrent POSTs), tenant isolation, the result, pagination, long-polls, the attempt's log
 * lines, retention, a graceful stop giving attempts back, kill -9 during an enqueue storm and
 * during running attempts, a corrupt store stopping the start and a full disk.
 *
 * Waits are long-polls (wait_ms) and log lines (hs_log_wait), never sleeps; bounds are seconds.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_tasks(void);

#define TK_WAIT_MS 20000 /* a state change or log line, under sanitizers on a busy machine */
#define TK_TRACE   "4bf92f3577b34da6a3ce929d0e0e4736"

/* ---- helpers --------------------------------------------------------------------------------- */

/* Send METHOD PATH with `body` (NULL: none) and extra header lines `hdrs` ("" or "K: V\r\n...")
 * on a new connection; *r gets the answer. */
static int tk_do(const struct hs_server *s, const char *method, const char *path, const char *body,
                 const char *hdrs, struct hs_resp *r)
{
    size_t blen = body != NULL ? strlen(body) : 0;
    char *req = malloc(blen + 2048);
    if (req == NULL)
        return -ENOMEM;
    snprintf(req, blen + 2048,
             "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Timeout-Ms: 60000\r\n%s"
             "Content-Length: %zu\r\n\r\n%s",
             method, path, hdrs ? hdrs : "", blen, body ? body : "");
    int rc = hs_roundtrip(s, req, r);
    free(req);
    return rc;
}

/* POST /v1/tasks; returns the status and copies the id (from the JSON) into id. */
static int tk_post(const struct hs_server *s, const char *body, const char *hdrs, char id[64])
{
    struct hs_resp r = {0};
    int status = -1;
    id[0] = '\0';
    if (tk_do(s, "POST", "/v1/tasks", body, hdrs, &r) == 0) {
        status = r.status;
        json_t *j = hs_resp_json(&r);
        const char *v = j != NULL ? hs_json_str(j, "id") : NULL;
        snprintf(id, 64, "%s", v != NULL ? v : "");
        json_decref(j);
    }
    hs_resp_fini(&r);
    return status;
}

/* GET a task (with `query`, "" for none) as tenant `hdrs`; the JSON or NULL; *status. */
static json_t *tk_get(const struct hs_server *s, const char *id, const char *query,
                      const char *hdrs, int *status)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/tasks/%s%s", id, query);
    struct hs_resp r = {0};
    json_t *j = NULL;
    *status = -1;
    if (tk_do(s, "GET", path, NULL, hdrs, &r) == 0) {
        *status = r.status;
        j = hs_resp_json(&r);
    }
    hs_resp_fini(&r);
    return j;
}

/* Long-poll until the task is final (bounded); its JSON, NULL on failure. */
static json_t *tk_final(const struct hs_server *s, const char *id, const char *hdrs)
{
    long long end = hs_now_ms() + TK_WAIT_MS;
    while (hs_now_ms() < end) {
        int status;
        json_t *j = tk_get(s, id, "?wait_ms=5000", hdrs, &status);
        const char *st = j != NULL ? hs_json_str(j, "state") : NULL;
        if (st != NULL && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                           strcmp(st, "cancelled") == 0))
            return j;
        json_decref(j);
        if (status != 200)
            return NULL;
    }
    return NULL;
}

static bool tk_state_is(const json_t *j, const char *state)
{
    const char *st = j != NULL ? hs_json_str(j, "state") : NULL;
    return st != NULL && strcmp(st, state) == 0;
}

/* Wait for the log line `msg` of task `id` with `outcome` (NULL: any). */
static json_t *tk_log_task(const struct hs_server *s, const char *msg, const char *id,
                           const char *outcome)
{
    long long end = hs_now_ms() + TK_WAIT_MS;
    while (hs_now_ms() < end) {
        json_t *lines = hs_log_lines(s);
        size_t i;
        json_t *l;
        json_array_foreach(lines, i, l)
        {
            const char *m = hs_json_str(l, "msg"), *t = hs_json_str(l, "task_id");
            const char *o = hs_json_str(l, "outcome");
            if (m && t && strcmp(m, msg) == 0 && strcmp(t, id) == 0 &&
                (outcome == NULL || (o && strcmp(o, outcome) == 0))) {
                json_incref(l);
                json_decref(lines);
                return l;
            }
        }
        json_decref(lines);
        json_t *w = hs_log_wait(s, msg, "task_id", id, 1000);
        json_decref(w);
    }
    return NULL;
}

/* Lines `msg` of task `id` (with `outcome`, NULL: any) in the log now. */
static size_t tk_log_count(const struct hs_server *s, const char *msg, const char *id,
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

/* Wait until the store records that the task's attempt started (started_at set). */
static bool tk_started(const struct hs_server *s, const char *id)
{
    for (long long end = hs_now_ms() + TK_WAIT_MS; hs_now_ms() < end;) {
        int status;
        json_t *j = tk_get(s, id, "", "", &status);
        bool started = j != NULL && hs_json_str(j, "started_at") != NULL;
        json_decref(j);
        if (started)
            return true;
        json_decref(hs_log_wait(s, "not a line", NULL, NULL, 50)); /* a bounded pause */
    }
    return false;
}

static bool tk_error_is(const struct hs_server *s, const char *method, const char *path,
                        const char *body, const char *hdrs, int status, const char *code)
{
    struct hs_resp r = {0};
    bool ok = tk_do(s, method, path, body, hdrs, &r) == 0 && hs_resp_is_error(&r, status, code);
    if (!ok)
        fprintf(stderr, "\n  %s %s: %d %s\n", method, path, r.status, r.body ? r.body : "");
    hs_resp_fini(&r);
    return ok;
}

/* A server on the store `store` (a path the test owns, so that it outlives the server). */
static struct hs_server *tk_start(const char *store, const char *extra1, const char *extra2)
{
    char spec[1200];
    snprintf(spec, sizeof(spec), "tasks.store=%s", store);
    const char *over[] = {spec, extra1, extra2, NULL};
    return hs_start(over);
}

/* ---- states and transitions ------------------------------------------------------------------ */

static void test_tasks_enqueue_run_result(void)
{
    struct hs_server *s = hs_start(NULL);
    json_t *j = NULL, *line = NULL;
    struct hs_resp r = {0};
    char id[64], loc[128], path[128];
    HS_CHECK(s != NULL);
    HS_CHECK(tk_do(s, "POST", "/v1/tasks", "{\"kind\":\"primes\",\"params\":{\"n\":1000}}",
                   "traceparent: 00-" TK_TRACE "-00f067aa0ba902b7-01\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 202);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL && hs_json_str(j, "id") != NULL);
    snprintf(id, sizeof(id), "%s", hs_json_str(j, "id"));
    CU_ASSERT(tk_state_is(j, "queued") || tk_state_is(j, "running"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempts", 0), 3);
    CU_ASSERT_STRING_EQUAL(hs_json_str(j, "trace_id"), TK_TRACE);
    HS_CHECK(hs_resp_header(&r, "Location", loc, sizeof(loc)));
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    CU_ASSERT_STRING_EQUAL(loc, path);
    json_decref(j);
    j = tk_final(s, id, "");
    HS_CHECK(tk_state_is(j, "succeeded"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 1);
    CU_ASSERT_PTR_NOT_NULL(hs_json_str(j, "started_at"));
    CU_ASSERT_PTR_NOT_NULL(hs_json_str(j, "finished_at"));
    hs_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/tasks/%s/result", id);
    HS_CHECK(tk_do(s, "GET", path, NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"n\":1000,\"count\":168}");
    /* The attempt's lines carry the task, the attempt and the enqueuing trace, in a new span. */
    HS_CHECK((line = tk_log_task(s, "task attempt end", id, "succeeded")) != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "attempt", 0), 1);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "trace_id"), TK_TRACE);
    CU_ASSERT_STRING_NOT_EQUAL(hs_json_str(line, "span_id"), "00f067aa0ba902b7");
    CU_ASSERT_EQUAL(tk_log_count(s, "job end", id, NULL), 1);
    /* Counted: the attempt and the store's fsyncs at once, the task by state within a refresh. */
    bool counted = false;
    for (long long end = hs_now_ms() + TK_WAIT_MS; !counted && hs_now_ms() < end;) {
        hs_resp_fini(&r);
        HS_CHECK(tk_do(s, "GET", "/metrics", NULL, "", &r) == 0 && r.status == 200);
        CU_ASSERT_PTR_NULL(strstr(r.body, "\nspindle_task_attempts_total 0\n"));
        CU_ASSERT_PTR_NULL(strstr(r.body, "\nspindle_task_store_fsyncs_total 0\n"));
        counted = strstr(r.body, "\nspindle_tasks{state=\"succeeded\",kind=\"primes\"} 1\n");
        json_decref(hs_log_wait(s, "not a line", NULL, NULL, 250)); /* a bounded pause */
    }
    CU_ASSERT(counted);
out:
    json_decref(line);
    json_decref(j);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_tasks_validated_whole_first(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    const char *P = "/v1/tasks";
    CU_ASSERT(tk_error_is(s, "POST", P, "{nope", "", 400, "bad_json"));
    CU_ASSERT(tk_error_is(s, "POST", P, "[]", "", 400, "bad_task"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"nope\"}", "", 400, "bad_task"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"spin\",\"params\":{\"ms\":99999999}}", "", 400,
                          "bad_param"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"noop\",\"attempts\":0}", "", 400, "bad_task"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"noop\",\"delay_ms\":1,\"run_at\":\"x\"}", "",
                          400, "bad_task"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"noop\",\"run_at\":\"tomorrow\"}", "", 400,
                          "bad_task"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"noop\",\"extra\":1}", "", 400, "bad_task"));
    CU_ASSERT(tk_error_is(s, "POST", P, "{\"kind\":\"noop\"}", "Idempotency-Key: a b\r\n", 400,
                          "bad_idempotency_key"));
    /* The routes: an id path takes GET and DELETE; the bare prefix is no task. */
    HS_CHECK(tk_do(s, "PUT", "/v1/tasks/abc", NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 405);
    CU_ASSERT(ops_header_is(&r, "Allow", "GET, HEAD, DELETE"));
    hs_resp_fini(&r);
    CU_ASSERT(tk_error_is(s, "GET", "/v1/tasks/", NULL, "", 404, "not_found"));
    CU_ASSERT(tk_error_is(s, "GET", "/v1/tasks/abc/other", NULL, "", 404, "not_found"));
    CU_ASSERT(tk_error_is(s, "GET", "/v1/tasks/abc?wait_ms=x", NULL, "", 400, "bad_param"));
    /* Nothing was stored. */
    HS_CHECK(tk_do(s, "GET", P, NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"tasks\":[],\"next_after\":null}");
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_tasks_idempotency_key(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c1 = NULL, *c2 = NULL;
    struct hs_resp r1 = {0}, r2 = {0};
    json_t *j1 = NULL, *j2 = NULL;
    char a[64], b[64];
    HS_CHECK(s != NULL);
    const char *body = "{\"kind\":\"noop\",\"delay_ms\":60000}";
    CU_ASSERT_EQUAL(tk_post(s, body, "Idempotency-Key: k-1\r\n", a), 202);
    CU_ASSERT_EQUAL(tk_post(s, body, "Idempotency-Key: k-1\r\n", b), 200);
    CU_ASSERT_STRING_EQUAL(a, b);
    CU_ASSERT(tk_error_is(s, "POST", "/v1/tasks", "{\"kind\":\"noop\"}", "Idempotency-Key: k-1\r\n",
                          422, "idempotency_key_reused"));
    /* Another tenant's key is its own. */
    CU_ASSERT_EQUAL(tk_post(s, body, "Idempotency-Key: k-1\r\nX-Tenant-Id: other2\r\n", b), 202);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    /* Two POSTs with one new key at the same time: one task. */
    char req[512];
    snprintf(req, sizeof(req),
             "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nIdempotency-Key: race\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    HS_CHECK((c1 = hs_connect(s)) != NULL && (c2 = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c1, req) == 0 && hs_send_str(c2, req) == 0);
    HS_CHECK(hs_read_response(c1, &r1, false, HS_IO_MS) == 0);
    HS_CHECK(hs_read_response(c2, &r2, false, HS_IO_MS) == 0);
    CU_ASSERT((r1.status == 202 && r2.status == 200) || (r1.status == 200 && r2.status == 202));
    HS_CHECK((j1 = hs_resp_json(&r1)) != NULL && (j2 = hs_resp_json(&r2)) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(j1, "id"), hs_json_str(j2, "id"));
out:
    json_decref(j1);
    json_decref(j2);
    hs_resp_fini(&r1);
    hs_resp_fini(&r2);
    hs_close(c1);
    hs_close(c2);
    HS_FINISH(s);
}

static void test_tasks_tenant_isolation_and_result_codes(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    char id[64], path[128];
    HS_CHECK(s != NULL);
    const char *A = "X-Tenant-Id: alpha\r\n", *B = "X-Tenant-Id: beta\r\n";
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\",\"delay_ms\":60000}", A, id), 202);
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    CU_ASSERT(tk_error_is(s, "GET", path, NULL, B, 404, "task_not_found"));
    CU_ASSERT(tk_error_is(s, "DELETE", path, NULL, B, 404, "task_not_found"));
    snprintf(path, sizeof(path), "/v1/tasks/%s/result", id);
    CU_ASSERT(tk_error_is(s, "GET", path, NULL, B, 404, "task_not_found"));
    CU_ASSERT(tk_error_is(s, "GET", path, NULL, A, 409, "task_not_succeeded"));
    CU_ASSERT(tk_error_is(s, "GET", "/v1/tasks/0000/result", NULL, A, 404, "task_not_found"));
    HS_CHECK(tk_do(s, "GET", "/v1/tasks", NULL, B, &r) == 0);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"tasks\":[],\"next_after\":null}");
    int status;
    json_t *j = tk_get(s, id, "", A, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT(tk_state_is(j, "queued"));
    CU_ASSERT_PTR_NOT_NULL(hs_json_str(j, "next_run_at"));
    json_decref(j);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_tasks_list_pages(void)
{
    struct hs_server *s = hs_start(NULL);
    char id[64], path[128], after[64] = "";
    json_t *j = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(tk_post(s,
                                i == 4
                                    ? "{\"kind\":\"spin\",\"params\":{\"ms\":1},\"delay_ms\":60000}"
                                    : "{\"kind\":\"noop\",\"delay_ms\":60000}",
                                "", id),
                        202);
    size_t total = 0;
    for (int page = 0; page < 5; page++) {
        snprintf(path, sizeof(path), "/v1/tasks?limit=2%s%s", after[0] ? "&after=" : "", after);
        hs_resp_fini(&r);
        HS_CHECK(tk_do(s, "GET", path, NULL, "", &r) == 0 && r.status == 200);
        json_decref(j);
        HS_CHECK((j = hs_resp_json(&r)) != NULL);
        total += json_array_size(json_object_get(j, "tasks"));
        const char *next = hs_json_str(j, "next_after");
        if (next == NULL)
            break;
        snprintf(after, sizeof(after), "%s", next);
    }
    CU_ASSERT_EQUAL(total, 5);
    hs_resp_fini(&r);
    HS_CHECK(tk_do(s, "GET", "/v1/tasks?state=queued&kind=spin", NULL, "", &r) == 0);
    json_decref(j);
    HS_CHECK((j = hs_resp_json(&r)) != NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "tasks")), 1);
    CU_ASSERT(tk_error_is(s, "GET", "/v1/tasks?state=done", NULL, "", 400, "bad_param"));
out:
    json_decref(j);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* A task whose attempts each pass their timeout: retrying twice, then failed with every error. */
static void test_tasks_retry_then_failed(void)
{
    struct hs_server *s = hs_start(NULL);
    json_t *j = NULL;
    char id[64];
    HS_CHECK(s != NULL);
    CU_ASSERT_EQUAL(tk_post(s,
                            "{\"kind\":\"spin\",\"params\":{\"ms\":5000},\"timeout_ms\":30,"
                            "\"attempts\":3,\"backoff_ms\":20}",
                            "", id),
                    202);
    j = tk_final(s, id, "");
    HS_CHECK(tk_state_is(j, "failed"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 3);
    json_t *errors = json_object_get(j, "errors");
    CU_ASSERT_EQUAL(json_array_size(errors), 3);
    for (size_t i = 0; i < json_array_size(errors); i++) {
        CU_ASSERT_STRING_EQUAL(hs_json_str(json_array_get(errors, i), "code"), "deadline_exceeded");
        CU_ASSERT_EQUAL(hs_json_int(json_array_get(errors, i), "attempt", 0), (long long)i + 1);
    }
    json_t *last = tk_log_task(s, "task attempt end", id, "failed");
    CU_ASSERT_PTR_NOT_NULL(last);
    json_decref(last);
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt end", id, "retrying"), 2);
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt end", id, "failed"), 1);
out:
    json_decref(j);
    HS_FINISH(s);
}

/* DELETE of a queued task: it never runs; DELETE again answers the same. */
static void test_tasks_delete_queued_never_runs(void)
{
    struct hs_server *s = hs_start(NULL);
    json_t *j = NULL, *k = NULL;
    char id[64], later[64], path[128];
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\",\"delay_ms\":2000}", "", id), 202);
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    for (int i = 0; i < 2; i++) {
        hs_resp_fini(&r);
        HS_CHECK(tk_do(s, "DELETE", path, NULL, "", &r) == 0 && r.status == 200);
        json_decref(j);
        j = hs_resp_json(&r);
        CU_ASSERT(tk_state_is(j, "cancelled"));
    }
    /* Due after the first one: once it ran, the first one was due too. */
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\",\"delay_ms\":2400}", "", later), 202);
    k = tk_final(s, later, "");
    CU_ASSERT(tk_state_is(k, "succeeded"));
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt start", id, NULL), 0);
    json_decref(j);
    int status;
    j = tk_get(s, id, "", "", &status);
    CU_ASSERT(tk_state_is(j, "cancelled"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", -1), 0);
out:
    hs_resp_fini(&r);
    json_decref(j);
    json_decref(k);
    HS_FINISH(s);
}

/* DELETE of a running spin: its context is cancelled (reason canceled) and the job stops. */
static void test_tasks_delete_running_spin(void)
{
    struct hs_server *s = hs_start(NULL);
    json_t *line = NULL, *j = NULL;
    char id[64], path[128];
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"spin\",\"params\":{\"ms\":60000}}", "", id), 202);
    HS_CHECK((line = tk_log_task(s, "task attempt start", id, NULL)) != NULL);
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    long long t0 = hs_now_ms();
    HS_CHECK(tk_do(s, "DELETE", path, NULL, "", &r) == 0 && r.status == 200);
    j = hs_resp_json(&r);
    CU_ASSERT(tk_state_is(j, "cancelled"));
    json_decref(line);
    HS_CHECK((line = tk_log_task(s, "task attempt end", id, "cancelled")) != NULL);
    CU_ASSERT(hs_now_ms() - t0 < TK_WAIT_MS); /* stopped, not run for a minute */
    json_decref(line);
    HS_CHECK((line = tk_log_task(s, "job end", id, NULL)) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "result"), "cancelled");
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt end", id, "succeeded"), 0);
out:
    hs_resp_fini(&r);
    json_decref(line);
    json_decref(j);
    HS_FINISH(s);
}

/* An answer over [tasks] max_result_bytes fails the task at once (no retry can make it fit). */
static void test_tasks_result_too_large(void)
{
    const char *over[] = {"tasks.max_result_bytes=8", NULL};
    struct hs_server *s = hs_start(over);
    json_t *j = NULL;
    char id[64];
    HS_CHECK(s != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"primes\",\"params\":{\"n\":10}}", "", id), 202);
    j = tk_final(s, id, "");
    HS_CHECK(tk_state_is(j, "failed"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 1);
    CU_ASSERT_STRING_EQUAL(hs_json_str(json_array_get(json_object_get(j, "errors"), 0), "code"),
                           "result_too_large");
out:
    json_decref(j);
    HS_FINISH(s);
}

/* The line index of the first `msg` line of task `id` in `lines`, -1 when none. */
static long tk_line_at(const json_t *lines, const char *msg, const char *id)
{
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *m = hs_json_str(l, "msg"), *t = hs_json_str(l, "task_id");
        if (m && t && strcmp(m, msg) == 0 && strcmp(t, id) == 0)
            return (long)i;
    }
    return -1;
}

/* Attempts pass admission like requests: with max_inflight 1 the tenant's two tasks never run
 * at the same time (the second is refused, given back unused, and runs after the first). */
static void test_tasks_counted_by_admission(void)
{
    const char *over[] = {"limits.max_inflight=1", "pool.workers=2", "tasks.worker_share=100",
                          NULL};
    struct hs_server *s = hs_start(over);
    json_t *a = NULL, *b = NULL, *lines = NULL;
    char ia[64], ib[64];
    HS_CHECK(s != NULL);
    const char *body = "{\"kind\":\"spin\",\"params\":{\"ms\":300},\"attempts\":1}";
    CU_ASSERT_EQUAL(tk_post(s, body, "", ia), 202);
    CU_ASSERT_EQUAL(tk_post(s, body, "", ib), 202);
    a = tk_final(s, ia, "");
    b = tk_final(s, ib, "");
    CU_ASSERT(tk_state_is(a, "succeeded") && tk_state_is(b, "succeeded"));
    CU_ASSERT_EQUAL(hs_json_int(a, "attempt", 0), 1); /* a refusal used no attempt */
    CU_ASSERT_EQUAL(hs_json_int(b, "attempt", 0), 1);
    json_decref(tk_log_task(s, "task attempt end", ia, "succeeded"));
    json_decref(tk_log_task(s, "task attempt end", ib, "succeeded"));
    HS_CHECK((lines = hs_log_lines(s)) != NULL);
    long sa = tk_line_at(lines, "task attempt start", ia), ea = tk_line_at(lines, "job end", ia);
    long sb = tk_line_at(lines, "task attempt start", ib), eb = tk_line_at(lines, "job end", ib);
    CU_ASSERT(sa >= 0 && ea >= 0 && sb >= 0 && eb >= 0);
    CU_ASSERT(ea < sb || eb < sa); /* one ran after the other */
out:
    json_decref(a);
    json_decref(b);
    json_decref(lines);
    HS_FINISH(s);
}

/* [tasks] max_unfinished per tenant: 429 with Retry-After beyond it; other tenants unaffected;
 * an empty [tasks] store turns the routes off. */
static void test_tasks_tenant_cap_and_disabled(void)
{
    const char *over[] = {"tasks.max_unfinished=2", NULL};
    struct hs_server *s = hs_start(over), *off = NULL;
    struct hs_resp r = {0};
    char id[64];
    HS_CHECK(s != NULL);
    const char *body = "{\"kind\":\"noop\",\"delay_ms\":600000}";
    CU_ASSERT_EQUAL(tk_post(s, body, "", id), 202);
    CU_ASSERT_EQUAL(tk_post(s, body, "", id), 202);
    HS_CHECK(tk_do(s, "POST", "/v1/tasks", body, "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_task_limit"));
    CU_ASSERT(ops_header_is(&r, "Retry-After", "1"));
    CU_ASSERT_EQUAL(tk_post(s, body, "X-Tenant-Id: roomy\r\n", id), 202);
    const char *none[] = {"tasks.store=", NULL};
    HS_CHECK((off = hs_start(none)) != NULL);
    CU_ASSERT(tk_error_is(off, "POST", "/v1/tasks", body, "", 503, "tasks_disabled"));
    CU_ASSERT(tk_error_is(off, "GET", "/v1/tasks/x", NULL, "", 503, "tasks_disabled"));
out:
    hs_resp_fini(&r);
    HS_FINISH(off);
    HS_FINISH(s);
}

/* One slot, busy: the next task waits claimed in the ready queue; cancelled there, it never
 * runs, and the slot goes to the task after it. */
static void test_tasks_cancel_while_waiting_for_a_slot(void)
{
    const char *over[] = {"pool.workers=1", "tasks.worker_share=100", NULL};
    struct hs_server *s = hs_start(over);
    json_t *line = NULL, *j = NULL;
    char busy[64], waiting[64], after[64], path[128];
    HS_CHECK(s != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"spin\",\"params\":{\"ms\":60000}}", "", busy), 202);
    HS_CHECK((line = tk_log_task(s, "task attempt start", busy, NULL)) != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\"}", "", waiting), 202);
    snprintf(path, sizeof(path), "/v1/tasks/%s", waiting);
    /* Claimed (leased: "running" in the store) while it waits for the slot. */
    bool claimed = false;
    for (long long end = hs_now_ms() + TK_WAIT_MS; !claimed && hs_now_ms() < end;) {
        int status;
        json_t *w = tk_get(s, waiting, "", "", &status);
        claimed = tk_state_is(w, "running");
        json_decref(w);
        if (!claimed)
            json_decref(hs_log_wait(s, "not a line", NULL, NULL, 50)); /* a bounded pause */
    }
    CU_ASSERT(claimed);
    struct hs_resp r = {0};
    HS_CHECK(tk_do(s, "DELETE", path, NULL, "", &r) == 0 && r.status == 200);
    hs_resp_fini(&r);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\"}", "", after), 202);
    snprintf(path, sizeof(path), "/v1/tasks/%s", busy);
    HS_CHECK(tk_do(s, "DELETE", path, NULL, "", &r) == 0 && r.status == 200);
    hs_resp_fini(&r);
    j = tk_final(s, after, "");
    CU_ASSERT(tk_state_is(j, "succeeded"));
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt start", waiting, NULL), 0);
    json_decref(j);
    int status;
    j = tk_get(s, waiting, "", "", &status);
    CU_ASSERT(tk_state_is(j, "cancelled"));
out:
    json_decref(line);
    json_decref(j);
    HS_FINISH(s);
}

/* ---- stops, crashes, retention, store failures ------------------------------------------------
 */

/* SIGTERM while an attempt runs: at the drain deadline it is given back, not used up; the next
 * start runs it as attempt 1 again although it had only one. */
static void test_tasks_graceful_stop_gives_attempt_back(void)
{
    char *dir = proc_tmpdir_new(), *store = NULL;
    struct hs_server *s = NULL;
    json_t *line = NULL, *j = NULL;
    char id[64];
    HS_CHECK(dir != NULL && (store = ops_path(dir, "tasks.db")) != NULL);
    HS_CHECK((s = tk_start(store, "shutdown.drain_timeout_ms=200", NULL)) != NULL);
    CU_ASSERT_EQUAL(
        tk_post(s, "{\"kind\":\"spin\",\"params\":{\"ms\":60000},\"attempts\":1}", "", id), 202);
    HS_CHECK((line = tk_log_task(s, "task attempt start", id, NULL)) != NULL);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    json_decref(line);
    HS_CHECK((line = tk_log_task(s, "task attempt end", id, "released")) != NULL);
    hs_free(s);
    HS_CHECK((s = tk_start(store, "shutdown.drain_timeout_ms=200", NULL)) != NULL);
    json_decref(line);
    HS_CHECK((line = tk_log_task(s, "task attempt start", id, NULL)) != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "attempt", 0), 1);
    int status;
    j = tk_get(s, id, "", "", &status);
    CU_ASSERT(tk_state_is(j, "running"));
    CU_ASSERT_EQUAL(hs_json_int(j, "interrupted", -1), 0);
out:
    json_decref(line);
    json_decref(j);
    HS_FINISH(s);
    free(store);
    proc_tmpdir_free(dir);
}

/* kill -9 while attempts run: after a restart they run again as a new attempt, marked
 * interrupted; a task that had succeeded before never runs again. */
static void test_tasks_kill9_running_reruns(void)
{
    char *dir = proc_tmpdir_new(), *store = NULL;
    struct hs_server *s = NULL;
    json_t *line = NULL, *j = NULL;
    char done[64], ids[2][64];
    HS_CHECK(dir != NULL && (store = ops_path(dir, "tasks.db")) != NULL);
    HS_CHECK((s = tk_start(store, "pool.workers=2", "tasks.worker_share=100")) != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\"}", "", done), 202);
    j = tk_final(s, done, "");
    HS_CHECK(tk_state_is(j, "succeeded"));
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"spin\",\"params\":{\"ms\":4000}}", "", ids[i]),
                        202);
        json_decref(line);
        HS_CHECK((line = tk_log_task(s, "task attempt start", ids[i], NULL)) != NULL);
        HS_CHECK(tk_started(s, ids[i])); /* the store knows it started: a kill interrupts it */
    }
    HS_CHECK(kill(hs_pid(s), SIGKILL) == 0);
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt end", ids[0], "succeeded") +
                        tk_log_count(s, "task attempt end", ids[1], "succeeded"),
                    0);
    hs_free(s);
    HS_CHECK((s = tk_start(store, "pool.workers=2", "tasks.worker_share=100")) != NULL);
    for (int i = 0; i < 2; i++) {
        json_decref(j);
        j = tk_final(s, ids[i], "");
        HS_CHECK(tk_state_is(j, "succeeded"));
        CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 2);
        CU_ASSERT_EQUAL(hs_json_int(j, "interrupted", 0), 1);
        CU_ASSERT_STRING_EQUAL(hs_json_str(json_array_get(json_object_get(j, "errors"), 0), "code"),
                               "interrupted");
        json_decref(line); /* the line may follow the answer: the log has its own thread */
        HS_CHECK((line = tk_log_task(s, "task attempt end", ids[i], "succeeded")) != NULL);
        CU_ASSERT_EQUAL(tk_log_count(s, "task attempt end", ids[i], "succeeded"), 1);
    }
    json_decref(j);
    int status;
    j = tk_get(s, done, "", "", &status);
    CU_ASSERT(tk_state_is(j, "succeeded"));
    CU_ASSERT_EQUAL(hs_json_int(j, "attempt", 0), 1);
    CU_ASSERT_EQUAL(tk_log_count(s, "task attempt start", done, NULL), 0);
out:
    json_decref(line);
    json_decref(j);
    HS_FINISH(s);
    free(store);
    proc_tmpdir_free(dir);
}

#define TK_CONNS 4

/* kill -9 during an enqueue storm: every task that got its 202 exists after a restart. */
static void test_tasks_kill9_enqueue_storm(void)
{
    char *dir = proc_tmpdir_new(), *store = NULL;
    struct hs_server *s = NULL;
    struct hs_conn *c[TK_CONNS] = {0};
    struct hs_resp r = {0};
    static char ids[400][64];
    size_t n = 0;
    HS_CHECK(dir != NULL && (store = ops_path(dir, "tasks.db")) != NULL);
    HS_CHECK((s = tk_start(store, NULL, NULL)) != NULL);
    const char *body = "{\"kind\":\"noop\",\"delay_ms\":600000}";
    char req[256];
    snprintf(req, sizeof(req),
             "POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s", strlen(body),
             body);
    for (int i = 0; i < TK_CONNS; i++)
        HS_CHECK((c[i] = hs_connect(s)) != NULL);
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < TK_CONNS; i++)
            HS_CHECK(hs_send_str(c[i], req) == 0);
        if (round == 60) { /* the requests are on the wire, some being committed */
            HS_CHECK(kill(hs_pid(s), SIGKILL) == 0);
            break;
        }
        for (int i = 0; i < TK_CONNS; i++) {
            HS_CHECK(hs_read_response(c[i], &r, false, HS_IO_MS) == 0);
            json_t *j = hs_resp_json(&r);
            if (r.status == 202 && j != NULL && hs_json_str(j, "id") != NULL)
                snprintf(ids[n++], 64, "%s", hs_json_str(j, "id"));
            json_decref(j);
        }
    }
    /* Answers that made it out before the kill count too. */
    for (int i = 0; i < TK_CONNS; i++) {
        if (hs_read_response(c[i], &r, false, 2000) == 0 && r.status == 202) {
            json_t *j = hs_resp_json(&r);
            if (j != NULL && hs_json_str(j, "id") != NULL)
                snprintf(ids[n++], 64, "%s", hs_json_str(j, "id"));
            json_decref(j);
        }
    }
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    hs_free(s);
    HS_CHECK((s = tk_start(store, NULL, NULL)) != NULL);
    CU_ASSERT(n >= 60 * TK_CONNS);
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        int status;
        json_t *j = tk_get(s, ids[i], "", "", &status);
        found += status == 200 && tk_state_is(j, "queued");
        json_decref(j);
    }
    CU_ASSERT_EQUAL(found, n);
out:
    for (int i = 0; i < TK_CONNS; i++)
        hs_close(c[i]);
    hs_resp_fini(&r);
    HS_FINISH(s);
    free(store);
    proc_tmpdir_free(dir);
}

/* Finished tasks are purged after retention_ms; unfinished ones stay. */
static void test_tasks_retention_purge(void)
{
    struct hs_server *s = NULL;
    json_t *j = NULL, *line = NULL;
    char id[64], queued[64];
    const char *over[] = {"tasks.retention_ms=200", NULL};
    HS_CHECK((s = hs_start(over)) != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\",\"delay_ms\":600000}", "", queued), 202);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\"}", "", id), 202);
    j = tk_final(s, id, "");
    HS_CHECK(tk_state_is(j, "succeeded"));
    HS_CHECK((line = hs_log_wait(s, "tasks purged", NULL, NULL, TK_WAIT_MS)) != NULL);
    CU_ASSERT(hs_json_int(line, "tasks", 0) >= 1);
    int status;
    json_decref(j);
    j = tk_get(s, id, "", "", &status);
    CU_ASSERT_EQUAL(status, 404);
    json_decref(j);
    j = tk_get(s, queued, "", "", &status);
    CU_ASSERT_EQUAL(status, 200);
out:
    json_decref(j);
    json_decref(line);
    HS_FINISH(s);
}

/* A store file that is not a database stops the start with a message naming it. */
static void test_tasks_corrupt_store_stops_start(void)
{
    char *dir = proc_tmpdir_new(), *store = NULL, *conf = NULL, *out = NULL, *err = NULL;
    char text[1400], junk[8192];
    HS_CHECK(dir != NULL);
    memset(junk, 'x', sizeof(junk) - 1);
    junk[sizeof(junk) - 1] = '\0';
    HS_CHECK((store = proc_file_write(dir, "tasks.db", junk)) != NULL);
    snprintf(text, sizeof(text), "[server]\nlisten = 127.0.0.1:0\n[tasks]\nstore = %s\n", store);
    HS_CHECK((conf = proc_file_write(dir, "spindle.conf", text)) != NULL);
    const char *args[] = {"serve", "-c", conf, "--log-file", "-", NULL};
    int code = -1;
    HS_CHECK(proc_run(args, 10000, &out, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "start-up failed: task store"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a database"));
    CU_ASSERT_PTR_NULL(strstr(err, "\"listening\""));
out:
    free(out);
    free(err);
    free(conf);
    free(store);
    proc_tmpdir_free(dir);
}

/* A full disk: enqueues answer 503 store_unavailable and store nothing; with room again they
 * succeed. */
static void test_tasks_disk_full(void)
{
    char *mnt = proc_tmpdir_new(), *filler = NULL, *store = NULL;
    struct hs_server *s = NULL;
    bool mounted = false;
    char id[64];
    HS_CHECK(mnt != NULL);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=256k") != 0) {
        fprintf(stderr, "\n  skipped: cannot mount a tmpfs here (%s)\n", strerror(errno));
        goto out;
    }
    mounted = true;
    HS_CHECK((filler = ops_path(mnt, "filler")) != NULL && (store = ops_path(mnt, "tasks.db")));
    HS_CHECK((s = tk_start(store, NULL, NULL)) != NULL);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\",\"delay_ms\":600000}", "", id), 202);
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    HS_CHECK(fd >= 0);
    static char block[4096];
    memset(block, 'x', sizeof(block));
    while (write(fd, block, sizeof(block)) > 0) /* until the tmpfs is full (bounded by its size) */
        ;
    close(fd);
    /* Tasks of 500-byte bodies until the WAL needs a page the disk no longer has. */
    int failed = 0;
    for (int i = 0; i < 50 && failed == 0; i++) {
        struct hs_resp r = {0};
        char body[600];
        snprintf(body, sizeof(body),
                 "{\"kind\":\"sha256\",\"params\":{\"rounds\":1},\"body\":\"%0500d\","
                 "\"delay_ms\":600000}",
                 i);
        if (tk_do(s, "POST", "/v1/tasks", body, "", &r) == 0 &&
            hs_resp_is_error(&r, 503, "store_unavailable"))
            failed++;
        hs_resp_fini(&r);
    }
    CU_ASSERT(failed > 0);
    HS_CHECK(unlink(filler) == 0);
    CU_ASSERT_EQUAL(tk_post(s, "{\"kind\":\"noop\",\"delay_ms\":600000}", "", id), 202);
    int status;
    json_t *j = tk_get(s, id, "", "", &status);
    CU_ASSERT_EQUAL(status, 200);
    json_decref(j);
out:
    HS_FINISH(s);
    if (mounted)
        CU_ASSERT_EQUAL(umount(mnt), 0);
    free(filler);
    free(store);
    proc_tmpdir_free(mnt);
}

int suite_integration_tasks(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_tasks_enqueue_run_result),
        SPINDLE_TEST(test_tasks_validated_whole_first),
        SPINDLE_TEST(test_tasks_idempotency_key),
        SPINDLE_TEST(test_tasks_tenant_isolation_and_result_codes),
        SPINDLE_TEST(test_tasks_list_pages),
        SPINDLE_TEST(test_tasks_retry_then_failed),
        SPINDLE_TEST(test_tasks_delete_queued_never_runs),
        SPINDLE_TEST(test_tasks_delete_running_spin),
        SPINDLE_TEST(test_tasks_result_too_large),
        SPINDLE_TEST(test_tasks_counted_by_admission),
        SPINDLE_TEST(test_tasks_cancel_while_waiting_for_a_slot),
        SPINDLE_TEST(test_tasks_tenant_cap_and_disabled),
        SPINDLE_TEST(test_tasks_graceful_stop_gives_attempt_back),
        SPINDLE_TEST(test_tasks_kill9_running_reruns),
        SPINDLE_TEST(test_tasks_kill9_enqueue_storm),
        SPINDLE_TEST(test_tasks_retention_purge),
        SPINDLE_TEST(test_tasks_corrupt_store_stops_start),
        SPINDLE_TEST(test_tasks_disk_full),
    };
    return SPINDLE_SUITE_ADD("integration_tasks", NULL, NULL, tests);
}
