/* test_modules.c - job kinds from C modules, end to end with the real server and the test
 * modules built from tests/modules/ (in $SPINDLE_MODULES): POST /v1/jobs/<kind> and /v1/batch,
 * a module's own error, its log line carrying the request's ids, cancellation reaching a loop
 * in a module (deadline: 504; client gone: 499), the kind's own timeout_ms and max_inflight,
 * `spindle call`, the metrics' kind label, a reload that changes a module (restart_required,
 * the loaded one kept) and one that changes a live key, and the modules `serve` and
 * --check-config refuse (another ABI major, a description too small, no entry point, an init that
 * fails) with FILE:LINE, the path and both versions, exit 2; ABI 1.1 streaming through
 * read_chunk and write_chunk (mod_echo), and a module of ABI 1.0 (mod_v10) still served.
 */
#include <CUnit/CUnit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/integration/stream.h"
#include "tests/suite.h"

int suite_integration_modules(void);

#define TM_RUN_MS 30000 /* one run of the binary (--check-config, call) */

/* "$SPINDLE_MODULES/mod_<name>.so" into buf. */
static const char *tm_mod(char *buf, size_t size, const char *name)
{
    const char *dir = getenv("SPINDLE_MODULES");
    snprintf(buf, size, "%s/mod_%s.so", dir != NULL ? dir : "build/debug/tests/modules", name);
    return buf;
}

/* A server with the kinds modnoop, hello and loop (max_inflight 1, timeout_ms 400), plus
 * `extra` overrides (NULL-terminated, at most 4). */
static struct hs_server *tm_start(const char *const *extra)
{
    char noop[1100], hello[1100], loop[1100], m[3][1024];
    snprintf(noop, sizeof(noop), "kind.modnoop.module=%s", tm_mod(m[0], sizeof(m[0]), "noop"));
    snprintf(hello, sizeof(hello), "kind.hello.module=%s", tm_mod(m[1], sizeof(m[1]), "log"));
    snprintf(loop, sizeof(loop), "kind.loop.module=%s", tm_mod(m[2], sizeof(m[2]), "loop"));
    const char *ov[12] = {noop, hello, loop, "kind.loop.max_inflight=1",
                          "kind.loop.timeout_ms=400"};
    size_t n = 5;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 11; i++)
        ov[n++] = extra[i];
    ov[n] = NULL;
    return hs_start(ov);
}

/* POST `target` with request id `id` and no body on c. Returns the status, -1 on a transport
 * error; *r holds the answer. */
static int tm_post(struct hs_conn *c, const char *target, const char *id, const char *headers,
                   struct hs_resp *r)
{
    char req[512];
    snprintf(req, sizeof(req),
             "POST %s HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n%sContent-Length: 0\r\n\r\n",
             target, id, headers != NULL ? headers : "");
    return hs_exchange(c, req, r) == 0 ? r->status : -1;
}

static void test_modules_jobs(void)
{
    struct hs_server *s = tm_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    char v[128];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(tm_post(c, "/v1/jobs/modnoop", "mod-noop-1", NULL, &r) == 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"ok\":true}");
    CU_ASSERT(hs_resp_header(&r, "Content-Type", v, sizeof(v)) &&
              strcmp(v, "application/json") == 0);
    CU_ASSERT(hs_resp_header(&r, "Server-Timing", v, sizeof(v)) &&
              strncmp(v, "queue;dur=", 10) == 0);
    HS_CHECK(tm_post(c, "/v1/jobs/hello?word=spindle", "mod-hello-1", NULL, &r) == 200);
    CU_ASSERT_STRING_EQUAL(r.body, "spindle");
    /* the module's log line: its fields, the kind, and the request's ids added by the host */
    line = hs_log_wait(s, "module says hello", "request_id", "mod-hello-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "word"), "spindle");
    CU_ASSERT_EQUAL(hs_json_int(line, "count", 0), 3);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "kind"), "hello");
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "tenant"), "default");
    CU_ASSERT_PTR_NOT_NULL(hs_json_str(line, "trace_id"));
    json_decref(line);
    line = NULL;
    /* the debug lines of every kind */
    line = hs_log_wait(s, "job end", "request_id", "mod-hello-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "kind"), "hello");
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "result"), "ok");
    /* the module's own error, answered like the server's */
    HS_CHECK(tm_post(c, "/v1/jobs/hello?word=bad", "mod-hello-2", NULL, &r) == 422);
    CU_ASSERT(hs_resp_is_error(&r, 422, "bad_word"));
    /* the declared parameters, checked by the host */
    HS_CHECK(tm_post(c, "/v1/jobs/hello?wrd=x", "mod-hello-3", NULL, &r) == 400);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_param"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "unknown parameter 'wrd'"));
    HS_CHECK(tm_post(c, "/v1/jobs/loop?ms=x", "mod-loop-0", NULL, &r) == 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "ms must be an integer between 0 and 600000"));
    /* an unknown kind */
    HS_CHECK(tm_post(c, "/v1/jobs/nope", "mod-nope-1", NULL, &r) == 404);
    CU_ASSERT(hs_resp_is_error(&r, 404, "not_found"));
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_modules_batch(void)
{
    struct hs_server *s = tm_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *j = NULL;
    static const char body[] = "[{\"kind\":\"modnoop\"},{\"kind\":\"hello\",\"params\":{\"word\":"
                               "\"hi\"}},{\"kind\":\"primes\",\"params\":{\"n\":10}}]";
    char req[512];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    snprintf(req, sizeof(req),
             "POST /v1/batch?mode=all HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
             sizeof(body) - 1, body);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    HS_CHECK(r.status == 200);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL);
    json_t *res = json_object_get(j, "results");
    HS_CHECK(json_array_size(res) == 3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(res, 0), "kind")),
                           "modnoop");
    CU_ASSERT(
        json_is_true(json_object_get(json_object_get(json_array_get(res, 0), "result"), "ok")));
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_array_get(res, 1), "result_base64")), "aGk=");
    /* a module's parse refusal names the item */
    static const char bad[] = "[{\"kind\":\"hello\",\"params\":{\"word\":\"bad\"}}]";
    snprintf(req, sizeof(req),
             "POST /v1/batch?mode=all HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
             sizeof(bad) - 1, bad);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_param"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "jobs[0] (hello): the word is bad"));
out:
    json_decref(j);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* The loop module stops at its next check when the deadline passes: 504, and its own line. */
/* ABI 1.1: the echo module streams a body far over max_body_bytes in and back out through
 * read_chunk and write_chunk (identical bytes, chunked), counts one (set_answer after a streamed
 * body), and takes a small body whole (write_chunk collected into a Content-Length answer) and a
 * batch item's body; the 1.0 module v10 still loads and reads its body whole, and its stream flag
 * past its size is never seen (a large body is 413, as in 1.0). */
static void test_modules_stream(void)
{
    char echo[1100], v10[1100], m[2][1024];
    snprintf(echo, sizeof(echo), "kind.echo.module=%s", tm_mod(m[0], sizeof(m[0]), "echo"));
    snprintf(v10, sizeof(v10), "kind.v10.module=%s", tm_mod(m[1], sizeof(m[1]), "v10"));
    const char *const ov[] = {echo, v10, "limits.max_body_bytes=65536", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    struct sx x;
    char req[512], v[64];
    HS_CHECK(s != NULL);
    x = (struct sx){.port = hs_port(s),
                    .target = "/v1/jobs/echo",
                    .total = 5u << 20,
                    .gen = SX_RANDOM,
                    .decode = SX_RAW,
                    .chunked = true,
                    .timeout_ms = 120000};
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_STRING_EQUAL(x.te, "chunked");
    CU_ASSERT_EQUAL(x.received, 5u << 20);
    CU_ASSERT_EQUAL(memcmp(x.in_md, x.out_md, sizeof(x.in_md)), 0);
    x = (struct sx){.port = hs_port(s),
                    .target = "/v1/jobs/echo?mode=count",
                    .total = 3u << 20,
                    .gen = SX_ZERO,
                    .decode = SX_RAW,
                    .timeout_ms = 120000};
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_STRING_EQUAL(x.te, "chunked");
    CU_ASSERT_STRING_EQUAL(x.body, "{\"bytes\":3145728}");
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c,
                         "POST /v1/jobs/echo?mode=upper HTTP/1.1\r\nHost: t\r\n"
                         "Content-Length: 11\r\n\r\nhello world",
                         &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "HELLO WORLD");
    CU_ASSERT(hs_resp_header(&r, "Content-Type", v, sizeof(v)) && strcmp(v, "text/plain") == 0);
    static const char batch[] = "[{\"kind\":\"echo\",\"params\":{\"mode\":\"upper\"},"
                                "\"body\":\"abc\"},{\"kind\":\"v10\",\"body\":\"abcd\"}]";
    snprintf(req, sizeof(req),
             "POST /v1/batch?mode=all HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
             sizeof(batch) - 1, batch);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"result_base64\":\"QUJD\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "{\"bytes\":4}"));
    HS_CHECK(hs_exchange(c,
                         "POST /v1/jobs/v10 HTTP/1.1\r\nHost: t\r\n"
                         "Content-Length: 5\r\n\r\nabcde",
                         &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"bytes\":5}");
    HS_CHECK(hs_exchange(c,
                         "POST /v1/jobs/v10 HTTP/1.1\r\nHost: t\r\n"
                         "Content-Length: 1000000\r\n\r\n",
                         &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 413, "body_too_large"));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_modules_cancel_deadline(void)
{
    struct hs_server *s = tm_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(tm_post(c, "/v1/jobs/loop", "mod-dl-1", "X-Timeout-Ms: 300\r\n", &r) == 504);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    line = hs_log_wait(s, "loop cancelled", "request_id", "mod-dl-1", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    json_decref(line);
    /* without X-Timeout-Ms, the kind's own timeout_ms (400) is the deadline */
    HS_CHECK(tm_post(c, "/v1/jobs/loop", "mod-dl-2", NULL, &r) == 504);
    line = hs_log_wait(s, "loop cancelled", "request_id", "mod-dl-2", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* The client goes away while the loop runs: the job is cancelled (access 499), and the kind's
 * max_inflight refuses a second job while the first runs. */
static void test_modules_cancel_disconnect_and_inflight(void)
{
    struct hs_server *s = tm_start((const char *[]){"kind.loop.timeout_ms=60000", NULL});
    struct hs_conn *c = NULL, *c2 = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    char v[32];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK((c2 = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /v1/jobs/loop HTTP/1.1\r\nHost: t\r\nX-Request-Id: mod-gone-1"
                            "\r\nContent-Length: 0\r\n\r\n") == 0);
    line = hs_log_wait(s, "loop started", "request_id", "mod-gone-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    json_decref(line);
    line = NULL;
    HS_CHECK(tm_post(c2, "/v1/jobs/loop", "mod-full-1", NULL, &r) == 503);
    CU_ASSERT(hs_resp_is_error(&r, 503, "kind_concurrency_limited"));
    CU_ASSERT(hs_resp_header(&r, "Retry-After", v, sizeof(v)) && atoi(v) >= 1);
    hs_close(c);
    c = NULL;
    line = hs_log_wait(s, "loop cancelled", "request_id", "mod-gone-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    json_decref(line);
    line = hs_log_wait(s, "access", "request_id", "mod-gone-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "status", 0), 499);
    /* the slot is free again once the job is done */
    HS_CHECK(tm_post(c2, "/v1/jobs/loop?ms=1", "mod-free-1", NULL, &r) == 200);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    hs_close(c2);
    HS_FINISH(s);
}

/* `spindle call NAME` runs a module's kind; the metrics count it under its own kind label, and
 * an unknown kind adds no label. */
static void test_modules_call_and_metrics(void)
{
    struct hs_server *s = tm_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *out = NULL, *err = NULL, url[64];
    int code = -1;
    HS_CHECK(s != NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", hs_port(s));
    const char *args[] = {"call", "--server", url, "hello", "word=called", NULL};
    HS_CHECK(proc_run(args, TM_RUN_MS, &out, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "called"));
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(tm_post(c, "/v1/jobs/modnoop", "mod-met-1", NULL, &r) == 200);
    HS_CHECK(tm_post(c, "/v1/jobs/nosuchkind", "mod-met-2", NULL, &r) == 404);
    HS_CHECK(hs_exchange(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    HS_CHECK(r.status == 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "spindle_job_run_seconds_count{kind=\"modnoop\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "spindle_job_run_seconds_count{kind=\"hello\"} 1"));
    CU_ASSERT_PTR_NULL(strstr(r.body, "nosuchkind"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "route=\"/v1/jobs/modnoop\""));
out:
    free(out);
    free(err);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A reload that points a kind at another module keeps the loaded one and says restart_required;
 * a live key of a module kind (max_inflight) applies. */
static void test_modules_reload(void)
{
    struct hs_server *s = tm_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    char extra[8192], m[4][1024];
    HS_CHECK(s != NULL);
    snprintf(extra, sizeof(extra),
             "[kind.modnoop]\nmodule = %s\n[kind.hello]\nmodule = %s\n"
             "[kind.loop]\nmodule = %s\nmax_inflight = 2\ntimeout_ms = 400\n"
             "[kind.added]\nmodule = %s\n",
             tm_mod(m[0], sizeof(m[0]), "loop"), tm_mod(m[1], sizeof(m[1]), "log"),
             tm_mod(m[2], sizeof(m[2]), "loop"), tm_mod(m[3], sizeof(m[3]), "noop"));
    HS_CHECK(ops_config_rewrite(s, "debug", extra) == 0);
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    line = hs_log_wait(s, "configuration reloaded", NULL, NULL, HS_IO_MS);
    HS_CHECK(line != NULL);
    const char *restart = hs_json_str(line, "restart_required");
    const char *changed = hs_json_str(line, "changed");
    HS_CHECK(restart != NULL && changed != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(restart, "kind.modnoop.module"));
    CU_ASSERT_PTR_NOT_NULL(strstr(restart, "kind.added.module"));
    CU_ASSERT_PTR_NOT_NULL(strstr(changed, "kind.loop.max_inflight"));
    /* modnoop still runs the module loaded at start; "added" waits for a restart */
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(tm_post(c, "/v1/jobs/modnoop", "mod-rl-1", NULL, &r) == 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"ok\":true}");
    HS_CHECK(tm_post(c, "/v1/jobs/added", "mod-rl-2", NULL, &r) == 404);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* `serve` and --check-config refuse a module they cannot use: exit 2 and one FILE:LINE line. */
static void tm_refused(const char *mod, const char *want1, const char *want2)
{
    char *dir = proc_tmpdir_new(), conf[2048], path[1024], *file = NULL;
    char *out = NULL, *err = NULL;
    int code = -1;
    HS_CHECK(dir != NULL);
    snprintf(conf, sizeof(conf), "[server]\nlisten = 127.0.0.1:0\n\n[kind.bad]\nmodule = %s\n",
             tm_mod(path, sizeof(path), mod));
    HS_CHECK((file = proc_file_write(dir, "spindle.conf", conf)) != NULL);
    for (int check = 0; check < 2; check++) {
        const char *args[] = {"serve", "-c", file, check ? "--check-config" : NULL, NULL};
        free(out);
        free(err);
        out = err = NULL;
        HS_CHECK(proc_run(args, TM_RUN_MS, &out, &err, &code) == 0);
        CU_ASSERT_EQUAL(code, 2);
        char where[1200];
        snprintf(where, sizeof(where), "spindle: %s:5: [kind.bad] module: module %s", file, path);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, where));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, want1));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, want2));
        if (strstr(err, where) == NULL || strstr(err, want1) == NULL)
            fprintf(stderr, "\n    stderr: %s\n", err);
    }
out:
    free(out);
    free(err);
    free(file);
    proc_tmpdir_free(dir);
}

static void test_modules_refused(void)
{
    tm_refused("abi2", "built for ABI 2.0", "this server has ABI 1.1");
    tm_refused("small", "kind description of 24 bytes", "this server has ABI 1.1");
    tm_refused("noentry", "(ABI 1.1): no entry point spindle_module_init", "");
    tm_refused("initfail", "its init failed", "no licence key in SPINDLE_TEST_LICENCE");
    tm_refused("missing", "No such file or directory", "");
}

int suite_integration_modules(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_modules_jobs),
        SPINDLE_TEST(test_modules_batch),
        SPINDLE_TEST(test_modules_stream),
        SPINDLE_TEST(test_modules_cancel_deadline),
        SPINDLE_TEST(test_modules_cancel_disconnect_and_inflight),
        SPINDLE_TEST(test_modules_call_and_metrics),
        SPINDLE_TEST(test_modules_reload),
        SPINDLE_TEST(test_modules_refused),
    };
    return SPINDLE_SUITE_ADD("integration_modules", NULL, NULL, tests);
}
