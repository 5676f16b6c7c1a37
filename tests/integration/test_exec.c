/* test_exec.c - `[kind.NAME] exec = ...` kinds on the real server: wc answers the count, a failing
 * program answers 500 job_failed with its last stderr line (logged with the request's id), a
 * deadline and a client that leaves both kill `sleep 30`, a batch race kills its sleeping loser,
 * a reload adds and removes kinds while a running job finishes under its old definition, a
 * missing or non-executable program is a FILE:LINE configuration error, and every descriptor of
 * the server is CLOEXEC. After each program is stopped, the server has no child left
 * (/proc/PID/task/x/children).
 */
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_exec(void);

#define EX_WAIT_MS 10000 /* a program stopped and reaped, on a loaded machine under TSan */

/* s, or "" for NULL (for string comparisons on answers that may be missing). */
static const char *ex_str(const char *s)
{
    return s != NULL ? s : "";
}

/* Wait (bounded) until the server has no child. */
static bool ex_no_children(const struct hs_server *s)
{
    long long end = hs_now_ms() + EX_WAIT_MS;
    while (proc_children(hs_pid(s)) != 0) {
        if (hs_now_ms() > end)
            return false;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

/* POST /v1/jobs/<target> with `body` and extra header lines; reads the answer into r. */
static int ex_post(struct hs_conn *c, const char *target, const char *rid, const char *extra,
                   const char *body, struct hs_resp *r)
{
    char *req = NULL;
    if (asprintf(&req,
                 "POST /v1/jobs/%s HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n%s"
                 "Content-Length: %zu\r\n\r\n%s",
                 target, rid, extra != NULL ? extra : "", strlen(body), body) < 0)
        return -1;
    int rc = hs_exchange(c, req, r);
    free(req);
    return rc;
}

/* A script in `dir` (new path, free it) running `text` under /bin/sh. */
static char *ex_script(const char *dir, const char *name, const char *text)
{
    char *body = NULL;
    if (asprintf(&body, "#!/bin/sh\n%s\n", text) < 0)
        return NULL;
    char *path = proc_file_write(dir, name, body);
    free(body);
    if (path != NULL && chmod(path, 0755) != 0) {
        free(path);
        return NULL;
    }
    return path;
}

static void test_exec_wc_answers(void)
{
    const char *const over[] = {"kind.wc.exec=/usr/bin/wc -c", "kind.wc.content_type=text/plain",
                                NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *doc = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(ex_post(c, "wc", "ex-wc-1", NULL, "hello world", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "11\n");
    CU_ASSERT(ops_header_is(&r, "Content-Type", "text/plain"));
    CU_ASSERT(ops_header_is(&r, "X-Request-Id", "ex-wc-1"));
    /* in a batch, with the item's body on stdin; the bytes come back in base64 */
    const char *batch = "[{\"kind\":\"wc\",\"body\":\"abc\"}]";
    char req[256];
    snprintf(req, sizeof(req),
             "POST /v1/batch?mode=all HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(batch), batch);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    doc = hs_resp_json(&r);
    json_t *item = json_array_get(json_object_get(doc, "results"), 0);
    CU_ASSERT_STRING_EQUAL(ex_str(json_string_value(json_object_get(item, "result_base64"))),
                           "Mwo="); /* "3\n" */
    /* an undeclared parameter is refused before anything runs */
    HS_CHECK(ex_post(c, "wc?lines=3", "ex-wc-2", NULL, "x", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_param"));
    CU_ASSERT(ex_no_children(s));
out:
    json_decref(doc);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_exec_failure_and_stderr_log(void)
{
    char *dir = proc_tmpdir_new();
    char *prog = dir != NULL ? ex_script(dir, "fail.sh",
                                         "echo 'reading input' >&2\n"
                                         "echo 'bad input at line 3' >&2\nexit 3")
                             : NULL;
    char spec[1200];
    snprintf(spec, sizeof(spec), "kind.fail.exec=%s", prog != NULL ? prog : "/nonexistent");
    const char *const over[] = {spec, NULL};
    struct hs_server *s = NULL;
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *doc = NULL, *line = NULL;
    HS_CHECK(prog != NULL);
    HS_CHECK((s = hs_start(over)) != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(ex_post(c, "fail", "ex-fail-1", NULL, "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 500, "job_failed"));
    if (!hs_resp_is_error(&r, 500, "job_failed"))
        fprintf(stderr, "\n    answer %d: %s\n", r.status, r.body);
    doc = hs_resp_json(&r);
    const char *msg = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    CU_ASSERT_STRING_EQUAL(ex_str(msg), "exited with status 3: bad input at line 3");
    /* again and again: nothing else in the server reaps the program and takes its status (the
     * SIGCHLD watcher of libev's default loop did, and some of these answered 200) */
    for (int i = 0; i < 10; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "ex-fail-again-%d", i);
        HS_CHECK(ex_post(c, "fail", rid, NULL, "", &r) == 0);
        CU_ASSERT(hs_resp_is_error(&r, 500, "job_failed"));
    }
    line = hs_log_wait(s, "job stderr", "line", "bad input at line 3", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(ex_str(hs_json_str(line, "request_id")), "ex-fail-1");
    CU_ASSERT_STRING_EQUAL(ex_str(hs_json_str(line, "kind")), "fail");
    CU_ASSERT_PTR_NOT_NULL(hs_json_str(line, "trace_id"));
out:
    json_decref(line);
    json_decref(doc);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
    free(prog);
    proc_tmpdir_free(dir);
}

/* X-Timeout-Ms: 504 at once, and sleep 30 is killed and reaped. */
static void test_exec_deadline_kills(void)
{
    const char *const over[] = {"kind.sleepy.exec=/bin/sleep 30", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(ex_post(c, "sleepy", "ex-deadline-1", "X-Timeout-Ms: 300\r\n", "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT(hs_now_ms() - t0 < 20000); /* far from sleep's 30 s */
    line = hs_log_wait(s, "job program ended", "request_id", "ex-deadline-1", EX_WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT(ex_no_children(s));
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* The client leaves while sleep 30 runs: the program is killed, the access line says 499. */
static void test_exec_client_gone_kills(void)
{
    const char *const over[] = {"kind.sleepy.exec=/bin/sleep 30", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /v1/jobs/sleepy HTTP/1.1\r\nHost: t\r\nX-Request-Id: "
                            "ex-gone-1\r\nContent-Length: 0\r\n\r\n") == 0);
    line = hs_log_wait(s, "job program started", "request_id", "ex-gone-1", EX_WAIT_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_EQUAL(proc_children(hs_pid(s)), 1);
    json_decref(line);
    hs_close(c);
    c = NULL;
    line = hs_log_wait(s, "job program ended", "request_id", "ex-gone-1", EX_WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT(ex_no_children(s));
    json_decref(line);
    line = hs_log_wait(s, "access", "request_id", "ex-gone-1", EX_WAIT_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "status", 0), 499);
out:
    json_decref(line);
    hs_close(c);
    HS_FINISH(s);
}

/* A race between noop and sleep 30: noop wins, the sleeping loser is killed. */
static void test_exec_batch_race_kills_loser(void)
{
    const char *const over[] = {"kind.sleepy.exec=/bin/sleep 30", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *doc = NULL;
    const char *body = "[{\"kind\":\"sleepy\"},{\"kind\":\"spin\",\"params\":{\"ms\":300}}]";
    char req[512];
    snprintf(req, sizeof(req),
             "POST /v1/batch?mode=race HTTP/1.1\r\nHost: t\r\nX-Request-Id: ex-race-1\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    doc = hs_resp_json(&r);
    json_t *res = json_object_get(doc, "results");
    CU_ASSERT_STRING_EQUAL(
        ex_str(json_string_value(json_object_get(json_array_get(res, 1), "status"))), "ok");
    CU_ASSERT_STRING_EQUAL(
        ex_str(json_string_value(json_object_get(json_array_get(res, 0), "status"))), "cancelled");
    CU_ASSERT(ex_no_children(s));
out:
    json_decref(doc);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Reload: kind a goes, kind b comes, and kind v changes while one of its jobs runs: that job
 * finishes with the program it started with. */
static void test_exec_reload_adds_removes(void)
{
    char *dir = proc_tmpdir_new();
    char go[600], text[800], spec[1200];
    snprintf(go, sizeof(go), "%s/go", dir != NULL ? dir : "/nonexistent");
    snprintf(text, sizeof(text),
             "i=0\nwhile [ ! -e %s ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\necho v1",
             go);
    char *v1 = dir != NULL ? ex_script(dir, "v1.sh", text) : NULL;
    snprintf(spec, sizeof(spec), "kind.v.exec=%s", v1 != NULL ? v1 : "/nonexistent");
    const char *const over[] = {"kind.a.exec=/bin/echo a", spec, NULL};
    struct hs_server *s = NULL;
    struct hs_conn *c = NULL, *slow = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(v1 != NULL);
    HS_CHECK((s = hs_start(over)) != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(ex_post(c, "a", "ex-rl-1", NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "a\n");
    HS_CHECK(ex_post(c, "b", "ex-rl-2", NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 404);
    /* a job of v under its first definition, running across the reload */
    HS_CHECK((slow = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(slow, "POST /v1/jobs/v HTTP/1.1\r\nHost: t\r\nX-Request-Id: ex-rl-v\r\n"
                               "Content-Length: 0\r\n\r\n") == 0);
    line = hs_log_wait(s, "job program started", "request_id", "ex-rl-v", EX_WAIT_MS);
    HS_CHECK(line != NULL);
    HS_CHECK(ops_config_rewrite(
                 s, "debug", "[kind.b]\nexec = /bin/echo b\n[kind.v]\nexec = /bin/echo v2\n") == 0);
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    json_decref(line);
    line = hs_log_wait(s, "configuration reloaded", NULL, NULL, HS_IO_MS);
    HS_CHECK(line != NULL);
    HS_CHECK(ex_post(c, "b", "ex-rl-3", NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "b\n");
    HS_CHECK(ex_post(c, "a", "ex-rl-4", NULL, "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 404);
    HS_CHECK(ex_post(c, "v", "ex-rl-5", NULL, "", &r) == 0);
    CU_ASSERT_STRING_EQUAL(r.body, "v2\n");
    /* now let the old one finish */
    char *g = proc_file_write(dir, "go", "");
    free(g);
    HS_CHECK(hs_read_response(slow, &r, false, EX_WAIT_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "v1\n");
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    hs_close(slow);
    HS_FINISH(s);
    free(v1);
    proc_tmpdir_free(dir);
}

/* The kind's own limits: max_inflight refuses a second job while one runs, timeout_ms is the
 * deadline without X-Timeout-Ms, max_output_bytes stops a program writing 100 MB. */
static void test_exec_kind_limits(void)
{
    const char *const over[] = {"kind.one.exec=/bin/sleep 30",
                                "kind.one.max_inflight=1",
                                "kind.quick.exec=/bin/sleep 30",
                                "kind.quick.timeout_ms=300",
                                "kind.big.exec=/usr/bin/head -c 100000000 /dev/zero",
                                "kind.big.max_output_bytes=16M",
                                NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL, *first = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK((first = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(first, "POST /v1/jobs/one HTTP/1.1\r\nHost: t\r\nX-Request-Id: "
                                "ex-lim-1\r\nContent-Length: 0\r\n\r\n") == 0);
    line = hs_log_wait(s, "job program started", "request_id", "ex-lim-1", EX_WAIT_MS);
    HS_CHECK(line != NULL);
    HS_CHECK(ex_post(c, "one", "ex-lim-2", NULL, "", &r) == 0);
    CU_ASSERT(r.status == 429 || r.status == 503);
    CU_ASSERT(hs_resp_header(&r, "Retry-After", (char[16]){0}, 16));
    hs_close(first); /* the running one goes with its client */
    first = NULL;
    long long t0 = hs_now_ms();
    HS_CHECK(ex_post(c, "quick", "ex-lim-3", NULL, "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT(hs_now_ms() - t0 < 20000);
    HS_CHECK(ex_post(c, "big", "ex-lim-4", NULL, "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 502, "output_too_large"));
    CU_ASSERT(ex_no_children(s));
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(first);
    hs_close(c);
    HS_FINISH(s);
}

/* SIGTERM while sleep 30 runs: at the end of the drain the job is cancelled (503), the program
 * is killed, and the server exits 0 without leaving it behind. */
static void test_exec_shutdown_kills(void)
{
    const char *const over[] = {"kind.sleepy.exec=/bin/sleep 30", "shutdown.drain_timeout_ms=400",
                                NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /v1/jobs/sleepy HTTP/1.1\r\nHost: t\r\nX-Request-Id: "
                            "ex-stop-1\r\nContent-Length: 0\r\n\r\n") == 0);
    line = hs_log_wait(s, "job program started", "request_id", "ex-stop-1", EX_WAIT_MS);
    HS_CHECK(line != NULL);
    pid_t prog = (pid_t)hs_json_int(line, "pid", 0);
    HS_CHECK(prog > 0 && kill(prog, 0) == 0);
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK(hs_read_response(c, &r, false, EX_WAIT_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "shutting_down"));
    CU_ASSERT(hs_wait_exit(s, HS_STOP_MS));
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)prog);
    CU_ASSERT(access(path, F_OK) != 0); /* gone, not left to init */
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* --check-config names FILE:LINE for a missing program and a non-executable one. */
static void test_exec_config_errors(void)
{
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char *plain = proc_file_write(dir, "plain.sh", "#!/bin/sh\n");
    char text[1400];
    snprintf(text, sizeof(text),
             "[kind.gone]\nexec = /nonexistent/prog -x\n[kind.plain]\nexec = %s\n", plain);
    char *path = proc_file_write(dir, "bad.conf", text);
    const char *args[] = {"serve", "--check-config", "-c", path, NULL};
    char *out = NULL, *err = NULL;
    int code = -1;
    CU_ASSERT_EQUAL(proc_run(args, 30000, &out, &err, &code), 0);
    CU_ASSERT_EQUAL(code, 2);
    char want[1600];
    snprintf(want, sizeof(want), "%s:2: [kind.gone] exec: ", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(err != NULL ? err : "", want));
    CU_ASSERT_PTR_NOT_NULL(strstr(err != NULL ? err : "", "No such file or directory"));
    snprintf(want, sizeof(want), "%s:4: [kind.plain] exec: ", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(err != NULL ? err : "", want));
    CU_ASSERT_PTR_NOT_NULL(strstr(err != NULL ? err : "", "not executable"));
    if (code != 2 || strstr(err != NULL ? err : "", "not executable") == NULL)
        fprintf(stderr, "\n    check-config said: %s\n", err != NULL ? err : "(null)");
    free(out);
    free(err);
    free(path);
    free(plain);
    proc_tmpdir_free(dir);
}

/* Every descriptor of the running server above 2 is close-on-exec (fdinfo flags, octal). */
static void test_exec_server_fds_cloexec(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL); /* a connection's socket too */
    HS_CHECK(hs_send_str(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    struct hs_resp r = {0};
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    hs_resp_fini(&r);
    char pat[64];
    glob_t g;
    snprintf(pat, sizeof(pat), "/proc/%d/fdinfo/*", (int)hs_pid(s));
    HS_CHECK(glob(pat, 0, NULL, &g) == 0);
    size_t checked = 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        int fd = atoi(strrchr(g.gl_pathv[i], '/') + 1);
        FILE *f = fopen(g.gl_pathv[i], "re");
        char line[128];
        unsigned long flags = 0;
        while (f != NULL && fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "flags: %lo", &flags) == 1)
                break;
        if (f != NULL)
            fclose(f);
        if (fd <= 2 || f == NULL)
            continue;
        checked++;
        CU_ASSERT((flags & O_CLOEXEC) != 0);
        if ((flags & O_CLOEXEC) == 0)
            fprintf(stderr, "\n    server fd %d is not CLOEXEC (flags %lo)\n", fd, flags);
    }
    globfree(&g);
    CU_ASSERT(checked >= 3); /* the log, the listener, the connection at least */
out:
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_exec(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_exec_wc_answers),
        SPINDLE_TEST(test_exec_failure_and_stderr_log),
        SPINDLE_TEST(test_exec_deadline_kills),
        SPINDLE_TEST(test_exec_client_gone_kills),
        SPINDLE_TEST(test_exec_batch_race_kills_loser),
        SPINDLE_TEST(test_exec_reload_adds_removes),
        SPINDLE_TEST(test_exec_kind_limits),
        SPINDLE_TEST(test_exec_shutdown_kills),
        SPINDLE_TEST(test_exec_config_errors),
        SPINDLE_TEST(test_exec_server_fds_cloexec),
    };
    return SPINDLE_SUITE_ADD("integration_exec", NULL, NULL, tests);
}
