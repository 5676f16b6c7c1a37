/* test_exec_stream.c - `[kind.NAME] stream = true` exec kinds on the real server: a body far
 * beyond max_body_bytes goes through /bin/cat and comes back identical with the server's peak RSS
 * bounded; a program that writes megabytes before it reads its input does not deadlock; a client
 * that leaves mid-stream or a deadline that passes gets the program stopped (no child left);
 * output over max_output_bytes and a non-zero exit after the answer started cut the body with a
 * Spindle-Error trailer; a body that fits max_body_bytes is still answered whole.
 *
 * Design: the full-duplex client of tests/integration/stream.h sends and reads at once and hashes
 * both sides. RSS is asserted only without sanitizers (their allocators keep freed memory). No
 * timing assertions: every wait is bounded and what is checked is bytes, statuses and log lines.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/integration/stream.h"
#include "tests/suite.h"

int suite_integration_exec_stream(void);

#define MIB            (1024ull * 1024ull)
#define XS_TIMEOUT_MS  240000
#define XS_WAIT_MS     10000      /* a program stopped and reaped, on a loaded machine */
#define XS_RSS_KIB     (8 * 1024) /* peak RSS growth allowed during a transfer */
#define XS_LIMITS      "limits.default_timeout_ms=600000", "limits.max_timeout_ms=600000"
#define XS_CAT         "kind.cat.exec=/bin/cat", "kind.cat.stream=true"
#define XS_CAT_NOLIMIT "kind.cat.max_output_bytes=1G"

static bool xs_sanitized(void)
{
    return getenv("ASAN_OPTIONS") != NULL || getenv("TSAN_OPTIONS") != NULL;
}

static void xs_init(struct sx *x, const struct hs_server *s, const char *target, uint64_t total)
{
    memset(x, 0, sizeof(*x));
    x->port = hs_port(s);
    x->target = target;
    x->total = total;
    x->gen = SX_RANDOM;
    x->decode = SX_RAW;
    x->timeout_ms = XS_TIMEOUT_MS;
}

/* Wait (bounded) until the server has no child. */
static bool xs_no_children(const struct hs_server *s)
{
    long long end = hs_now_ms() + XS_WAIT_MS;
    while (proc_children(hs_pid(s)) != 0) {
        if (hs_now_ms() > end)
            return false;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

/* An executable script in `dir` (new path, free it) running `text` under /bin/sh. */
static char *xs_script(const char *dir, const char *name, const char *text)
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

/* 100 MiB (16 under the sanitizers) through cat, Content-Length and chunked: identical bytes,
 * chunked answer, peak RSS bounded by the channels, not the body. */
static void test_exec_stream_cat_roundtrip(void)
{
    const char *const over[] = {XS_LIMITS, XS_CAT, XS_CAT_NOLIMIT, NULL};
    struct hs_server *s = hs_start(over);
    HS_CHECK(s != NULL);
    uint64_t n = xs_sanitized() ? 16 * MIB : 100 * MIB;
    for (int chunked = 0; chunked < 2; chunked++) {
        struct sx x;
        xs_init(&x, s, "/v1/jobs/cat", n);
        x.chunked = chunked != 0;
        long before = sx_vmhwm_kib(hs_pid(s));
        HS_CHECK(sx_run(&x) == 0);
        long after = sx_vmhwm_kib(hs_pid(s));
        CU_ASSERT_EQUAL(x.status, 200);
        CU_ASSERT_TRUE(x.complete);
        CU_ASSERT_EQUAL(x.sent, n);
        CU_ASSERT_EQUAL(x.received, n);
        CU_ASSERT_EQUAL(memcmp(x.in_md, x.out_md, sizeof(x.in_md)), 0);
        CU_ASSERT_STRING_EQUAL(x.te, "chunked");
        if (!xs_sanitized()) {
            if (after - before > XS_RSS_KIB)
                fprintf(stderr, "\n    VmHWM %ld -> %ld KiB\n", before, after);
            CU_ASSERT(after - before <= XS_RSS_KIB);
        }
    }
    CU_ASSERT(xs_no_children(s));
out:
    HS_FINISH(s);
}

/* A body that fits max_body_bytes is read whole and answered with a Content-Length. */
static void test_exec_stream_small_body_whole(void)
{
    const char *const over[] = {XS_LIMITS, XS_CAT, NULL};
    struct hs_server *s = hs_start(over);
    HS_CHECK(s != NULL);
    struct sx x;
    xs_init(&x, s, "/v1/jobs/cat", 1000);
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_EQUAL(x.received, 1000);
    CU_ASSERT_EQUAL(memcmp(x.in_md, x.out_md, sizeof(x.in_md)), 0);
    CU_ASSERT_STRING_EQUAL(x.te, "");
out:
    HS_FINISH(s);
}

/* The program writes 8 MiB (far more than a pipe holds) before it reads any of its 8 MiB of
 * input, then reads it all: the run must take its output while its stdin waits. */
static void test_exec_stream_writes_before_reading(void)
{
    char *dir = proc_tmpdir_new();
    char *script = NULL, *spec = NULL;
    struct hs_server *s = NULL;
    HS_CHECK(dir != NULL);
    script = xs_script(dir, "first.sh", "head -c 8388608 /dev/zero\nwc -c");
    HS_CHECK(script != NULL);
    HS_CHECK(asprintf(&spec, "kind.first.exec=%s", script) > 0);
    const char *const over[] = {XS_LIMITS, spec, "kind.first.stream=true", NULL};
    s = hs_start(over);
    HS_CHECK(s != NULL);
    struct sx x;
    xs_init(&x, s, "/v1/jobs/first", 8 * MIB);
    x.chunked = true;
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_EQUAL(x.sent, 8 * MIB);
    CU_ASSERT_EQUAL(x.received, 8 * MIB + strlen("8388608\n"));
    CU_ASSERT_EQUAL(x.body[0], '\0'); /* the zeros came first */
out:
    HS_FINISH(s);
    free(spec);
    free(script);
    proc_tmpdir_free(dir);
}

/* The client leaves mid-download: the program (cat, its input unfinished) is stopped as
 * cancelled and reaped, the access line says 499. */
static void test_exec_stream_client_gone_stops(void)
{
    const char *const over[] = {XS_LIMITS, XS_CAT, XS_CAT_NOLIMIT, NULL};
    struct hs_server *s = hs_start(over);
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    struct sx x;
    xs_init(&x, s, "/v1/jobs/cat", 256 * MIB);
    x.headers = "X-Request-Id: xs-gone-1\r\n";
    x.abort_after_out = 2 * MIB;
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_TRUE(x.received < x.total);
    line = hs_log_wait(s, "job program stopping", "request_id", "xs-gone-1", XS_WAIT_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "why"), "cancelled");
    json_decref(line);
    line = hs_log_wait(s, "job program ended", "request_id", "xs-gone-1", XS_WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT(xs_no_children(s));
    json_decref(line);
    line = hs_log_wait(s, "access", "request_id", "xs-gone-1", XS_WAIT_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "status", 0), 499);
out:
    json_decref(line);
    HS_FINISH(s);
}

/* The deadline passes mid-stream: the program is stopped and reaped, and a client reading
 * trailers gets Spindle-Error: deadline_exceeded after the part of the body that went out. */
static void test_exec_stream_deadline_stops(void)
{
    const char *const over[] = {XS_LIMITS, XS_CAT, XS_CAT_NOLIMIT, NULL};
    struct hs_server *s = hs_start(over);
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    struct sx x;
    xs_init(&x, s, "/v1/jobs/cat", 64 * MIB);
    x.headers = "X-Timeout-Ms: 1500\r\nTE: trailers\r\nX-Request-Id: xs-dl-1\r\n";
    x.send_gap_ms = 10; /* 64 MiB in 64 KiB pieces: ten seconds at least */
    x.timeout_ms = 60000;
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_STRING_EQUAL(x.trailer, "deadline_exceeded");
    CU_ASSERT_TRUE(x.received < x.total);
    line = hs_log_wait(s, "job program ended", "request_id", "xs-dl-1", XS_WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT(xs_no_children(s));
out:
    json_decref(line);
    HS_FINISH(s);
}

/* 16 MiB through cat with max_output_bytes = 4M: the program is stopped once it wrote more; the
 * answer had started, so a client reading trailers gets the last chunk with Spindle-Error:
 * output_too_large, and one that does not sees the body cut. */
static void test_exec_stream_output_too_large(void)
{
    const char *const over[] = {XS_LIMITS, XS_CAT, "kind.cat.max_output_bytes=4M", NULL};
    struct hs_server *s = hs_start(over);
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    struct sx t, u;
    xs_init(&t, s, "/v1/jobs/cat", 16 * MIB);
    t.headers = "TE: trailers\r\nX-Request-Id: xs-big-1\r\n";
    HS_CHECK(sx_run(&t) == 0);
    CU_ASSERT_EQUAL(t.status, 200);
    CU_ASSERT_TRUE(t.complete);
    CU_ASSERT_STRING_EQUAL(t.trailer, "output_too_large");
    CU_ASSERT_TRUE(t.received > 0);
    CU_ASSERT_TRUE(t.received <= 4 * MIB);
    xs_init(&u, s, "/v1/jobs/cat", 16 * MIB);
    HS_CHECK(sx_run(&u) == 0);
    CU_ASSERT_EQUAL(u.status, 200);
    CU_ASSERT_FALSE(u.complete);
    CU_ASSERT_TRUE(u.closed);
    CU_ASSERT_TRUE(u.received <= 4 * MIB);
    line = hs_log_wait(s, "access", "request_id", "xs-big-1", XS_WAIT_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "stream_error"), "output_too_large");
    CU_ASSERT(xs_no_children(s));
out:
    json_decref(line);
    HS_FINISH(s);
}

/* The program copies its input, then exits with status 3: the answer had started, so the body
 * is cut with Spindle-Error: job_failed (what was still buffered is dropped), and the last stderr
 * line is logged. */
static void test_exec_stream_exit_status_after_start(void)
{
    char *dir = proc_tmpdir_new();
    char *script = NULL, *spec = NULL;
    struct hs_server *s = NULL;
    HS_CHECK(dir != NULL);
    script = xs_script(dir, "fail.sh", "cat\necho 'gave up late' >&2\nexit 3");
    HS_CHECK(script != NULL);
    HS_CHECK(asprintf(&spec, "kind.late.exec=%s", script) > 0);
    const char *const over[] = {XS_LIMITS, spec, "kind.late.stream=true", NULL};
    s = hs_start(over);
    HS_CHECK(s != NULL);
    struct sx x;
    xs_init(&x, s, "/v1/jobs/late", 4 * MIB);
    x.headers = "TE: trailers\r\n";
    HS_CHECK(sx_run(&x) == 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_STRING_EQUAL(x.trailer, "job_failed");
    /* the cut drops what was still buffered (the channel, a piece in flight): the rest came */
    CU_ASSERT_TRUE(x.received <= 4 * MIB);
    CU_ASSERT_TRUE(x.received >= 4 * MIB - 512 * 1024);
    json_t *line = hs_log_wait(s, "job stderr", "line", "gave up late", XS_WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    json_decref(line);
out:
    HS_FINISH(s);
    free(spec);
    free(script);
    proc_tmpdir_free(dir);
}

int suite_integration_exec_stream(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_exec_stream_cat_roundtrip),
        SPINDLE_TEST(test_exec_stream_small_body_whole),
        SPINDLE_TEST(test_exec_stream_writes_before_reading),
        SPINDLE_TEST(test_exec_stream_client_gone_stops),
        SPINDLE_TEST(test_exec_stream_deadline_stops),
        SPINDLE_TEST(test_exec_stream_output_too_large),
        SPINDLE_TEST(test_exec_stream_exit_status_after_start),
    };
    return SPINDLE_SUITE_ADD("integration_exec_stream", NULL, NULL, tests);
}
