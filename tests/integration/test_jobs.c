/* test_jobs.c - the job endpoints end to end: POST /v1/jobs/<kind> through the real binary's
 * worker pool, its answers, status mapping, Server-Timing, deadlines, client close, a full queue,
 * the worker's log lines and a graceful stop with a job running.
 *
 * Design: every test starts its own server (harness.h) and sets the request ids itself
 * (X-Request-Id), so the log lines of one request can be found: the worker's "job start" and
 * "job end" debug lines and the loop's access line. Answers are checked against values computed
 * here (libcrypto's one-shot SHA256, ZSTD_decompress, zlib's inflate), not against constants the
 * server could share. Cancellation is checked on both sides: the answer the client gets (504,
 * 499 in the access line, 503) and the job's own end line (result "cancelled"), or the absence of
 * a "job start" line for a job that must never have run. Waits are bounded polls of the socket or
 * the log file (hs_log_wait); nothing sleeps for synchronisation.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <openssl/sha.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "server/jobs/jobs.h"
#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_jobs(void);

#define TRACE_ID  "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT_ID "00f067aa0ba902b7"
#define LONG_SPIN "/v1/jobs/spin?ms=10000"
#define BOUND_MS  2000 /* a cancelled job must be gone (and a 504 sent) within this */

/* ---- helpers --------------------------------------------------------------------------------- */

/* Send POST `target` with `extra` header lines ("Name: v\r\n"..., may be "") and `len` bytes of
 * `body` on `c`. Returns 0 or what hs_send returned. */
static int job_send(struct hs_conn *c, const char *target, const char *extra, const void *body,
                    size_t len)
{
    char head[1024];
    int n =
        snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n%s\r\n",
                 target, len, extra);
    if (n < 0 || (size_t)n >= sizeof(head))
        return -EINVAL;
    int rc = hs_send(c, head, (size_t)n, HS_IO_MS);
    if (rc == 0 && len > 0)
        rc = hs_send(c, body, len, HS_IO_MS);
    return rc;
}

/* job_send then read the answer. */
static int job_exchange(struct hs_conn *c, const char *target, const char *extra, const void *body,
                        size_t len, struct hs_resp *r)
{
    int rc = job_send(c, target, extra, body, len);
    return rc == 0 ? hs_read_response(c, r, false, HS_IO_MS) : rc;
}

/* strcmp that is false (not a crash) when either side is NULL. */
static bool str_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static bool header_is(const struct hs_resp *r, const char *name, const char *want)
{
    char v[512];
    return hs_resp_header(r, name, v, sizeof(v)) && strcmp(v, want) == 0;
}

/* How many log lines have msg `msg` and request_id `id`. */
static size_t log_count(const struct hs_server *s, const char *msg, const char *id)
{
    json_t *lines = hs_log_lines(s);
    size_t n = 0, i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        const char *m = hs_json_str(line, "msg"), *rid = hs_json_str(line, "request_id");
        if (m != NULL && rid != NULL && strcmp(m, msg) == 0 && strcmp(rid, id) == 0)
            n++;
    }
    json_decref(lines);
    return n;
}

/* The line's "ts" (RFC 3339 UTC with microseconds) in microseconds since the epoch; -1 if bad. */
static long long log_ts_us(const json_t *line)
{
    const char *ts = hs_json_str(line, "ts");
    struct tm tm = {0};
    long us = 0;
    if (ts == NULL || sscanf(ts, "%d-%d-%dT%d:%d:%d.%6ldZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                             &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &us) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000000 + us;
}

static long long realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* True when `v` is "<digits>.<3 digits>"; stores the value in *ms. */
static bool timing_value(const char *v, size_t len, double *ms)
{
    size_t i = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9')
        i++;
    if (i == 0 || i + 4 != len || v[i] != '.')
        return false;
    for (size_t j = i + 1; j < len; j++)
        if (v[j] < '0' || v[j] > '9')
            return false;
    *ms = strtod(v, NULL);
    return true;
}

/* Parse "queue;dur=Q.QQQ, run;dur=R.RRR" exactly. */
static bool server_timing(const struct hs_resp *r, double *queue_ms, double *run_ms)
{
    char v[256];
    if (!hs_resp_header(r, "Server-Timing", v, sizeof(v)))
        return false;
    const char *q = "queue;dur=", *sep = ", run;dur=";
    if (strncmp(v, q, strlen(q)) != 0)
        return false;
    const char *qv = v + strlen(q), *mid = strstr(qv, sep);
    if (mid == NULL)
        return false;
    const char *rv = mid + strlen(sep);
    return timing_value(qv, (size_t)(mid - qv), queue_ms) && timing_value(rv, strlen(rv), run_ms);
}

/* Wait for the job's end line and check it says `result`, from a worker thread. */
static json_t *wait_job_end(const struct hs_server *s, const char *id, const char *result)
{
    /* a bound, not a timing check: a sanitizer build on a busy machine stops a job more slowly */
    json_t *end = hs_log_wait(s, "job end", "request_id", id, HS_STOP_MS);
    CU_ASSERT_PTR_NOT_NULL(end);
    if (end != NULL) {
        const char *res = hs_json_str(end, "result"), *th = hs_json_str(end, "thread");
        CU_ASSERT(res != NULL && strcmp(res, result) == 0);
        CU_ASSERT(th != NULL && strncmp(th, "spindle-w", 9) == 0);
    }
    return end;
}

/* Check the access line of request `id`: `status` and `reason` (NULL: no reason field). */
static void check_access(const struct hs_server *s, const char *id, int status, const char *reason)
{
    json_t *a = hs_log_wait(s, "access", "request_id", id, HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(a);
    if (a == NULL)
        return;
    CU_ASSERT_EQUAL(hs_json_int(a, "status", -1), status);
    const char *got = hs_json_str(a, "reason");
    CU_ASSERT(reason == NULL ? got == NULL : str_eq(got, reason));
    json_decref(a);
}

/* A deterministic, compressible body of `len` bytes (caller frees). */
static unsigned char *text_body(size_t len)
{
    static const char words[] = "spindle runs jobs on worker threads and answers on the loop ";
    unsigned char *b = malloc(len);
    if (b == NULL)
        return NULL;
    unsigned x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (i % 97 == 0) ? (unsigned char)('a' + (x >> 16) % 26)
                             : (unsigned char)words[i % (sizeof(words) - 1)];
    }
    return b;
}

static void hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- each kind's answer ---------------------------------------------------------------------- */

static void test_jobs_noop_spin_primes(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *j = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);

    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"ok\":true}");
    CU_ASSERT(header_is(&r, "Content-Type", "application/json"));
    char rid[256];
    CU_ASSERT(hs_resp_header(&r, "X-Request-Id", rid, sizeof(rid)) && rid[0] != '\0');

    /* noop ignores a body */
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "", "abc", 3, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);

    HS_CHECK(job_exchange(c, "/v1/jobs/spin?ms=5", "", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "ms")), 5);
    CU_ASSERT(json_number_value(json_object_get(j, "spun_ms")) >= 5.0);
    json_decref(j);

    HS_CHECK(job_exchange(c, "/v1/jobs/primes?n=100000", "", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "n")), 100000);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "count")), 9592);
    json_decref(j);
    j = NULL;

    HS_CHECK(job_exchange(c, "/v1/jobs/primes?n=10", "", NULL, 0, &r) == 0);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"n\":10,\"count\":4}");
out:
    json_decref(j);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_jobs_sha256(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *j = NULL;
    size_t len = 200000;
    unsigned char *body = text_body(len);
    unsigned char d1[SHA256_DIGEST_LENGTH], d2[SHA256_DIGEST_LENGTH];
    char h1[2 * SHA256_DIGEST_LENGTH + 1], h2[2 * SHA256_DIGEST_LENGTH + 1];
    HS_CHECK(s != NULL && body != NULL);
    SHA256(body, len, d1);
    SHA256(d1, sizeof(d1), d2);
    hex(d1, sizeof(d1), h1);
    hex(d2, sizeof(d2), h2);
    HS_CHECK((c = hs_connect(s)) != NULL);

    HS_CHECK(job_exchange(c, "/v1/jobs/sha256?rounds=1", "", body, len, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL);
    CU_ASSERT(str_eq(json_string_value(json_object_get(j, "digest")), h1));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bytes")), (json_int_t)len);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "rounds")), 1);
    json_decref(j);

    HS_CHECK(job_exchange(c, "/v1/jobs/sha256?rounds=2", "", body, len, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL);
    CU_ASSERT(str_eq(json_string_value(json_object_get(j, "digest")), h2));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "rounds")), 2);
    json_decref(j);
    j = NULL;

    /* Known answer for the empty body. */
    HS_CHECK(job_exchange(c, "/v1/jobs/sha256?rounds=1", "", NULL, 0, &r) == 0);
    j = hs_resp_json(&r);
    HS_CHECK(j != NULL);
    CU_ASSERT(str_eq(json_string_value(json_object_get(j, "digest")),
                     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
out:
    json_decref(j);
    free(body);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Inflate a gzip member into `out` (cap bytes); returns the length or -1. */
static long gunzip(const void *in, size_t in_len, unsigned char *out, size_t cap)
{
    z_stream z = {0};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return -1;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_FINISH);
    long n = rc == Z_STREAM_END && z.avail_in == 0 ? (long)z.total_out : -1;
    inflateEnd(&z);
    return n;
}

static void test_jobs_compress(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    size_t len = 300000;
    unsigned char *body = text_body(len), *back = malloc(len + 1);
    HS_CHECK(s != NULL && body != NULL && back != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);

    HS_CHECK(job_exchange(c, "/v1/jobs/compress?codec=zstd&level=3", "", body, len, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "Content-Type", "application/zstd"));
    CU_ASSERT(r.body_len > 0 && r.body_len < len / 4);
    CU_ASSERT_EQUAL(ZSTD_getFrameContentSize(r.body, r.body_len), len);
    size_t n = ZSTD_decompress(back, len + 1, r.body, r.body_len);
    CU_ASSERT(!ZSTD_isError(n) && n == len && memcmp(back, body, len) == 0);

    HS_CHECK(job_exchange(c, "/v1/jobs/compress?codec=gzip", "", body, len, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "Content-Type", "application/gzip"));
    CU_ASSERT(r.body_len > 0 && r.body_len < len / 4);
    long gn = gunzip(r.body, r.body_len, back, len + 1);
    CU_ASSERT(gn == (long)len && memcmp(back, body, len) == 0);

    /* An empty body compresses to a valid empty frame / member. */
    HS_CHECK(job_exchange(c, "/v1/jobs/compress?codec=gzip&level=1", "", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(gunzip(r.body, r.body_len, back, len + 1), 0);
out:
    free(body);
    free(back);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- routes and bad parameters --------------------------------------------------------------- */

static void expect_bad_param(struct hs_conn *c, const char *target, const char *needle)
{
    struct hs_resp r = {0};
    HS_CHECK(job_exchange(c, target, "", NULL, 0, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_param"));
    CU_ASSERT(strstr(r.body, needle) != NULL);
    if (!hs_resp_is_error(&r, 400, "bad_param") || strstr(r.body, needle) == NULL)
        fprintf(stderr, "\n    %s: expected 400 bad_param with '%s', got:\n%s\n%s\n", target,
                needle, r.head, r.body);
    CU_ASSERT(!header_is(&r, "Connection", "close"));
out:
    hs_resp_fini(&r);
}

static void test_jobs_bad_params(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    /* All on one keep-alive connection: a 400 closes nothing. */
    expect_bad_param(c, "/v1/jobs/primes", "missing required parameter 'n'");
    expect_bad_param(c, "/v1/jobs/primes?n=abc", "n must be an integer");
    expect_bad_param(c, "/v1/jobs/primes?n=1000000000000", "n must be an integer");
    expect_bad_param(c, "/v1/jobs/primes?n=10&x=1", "unknown parameter 'x'");
    expect_bad_param(c, "/v1/jobs/spin?ms=1&ms=2", "duplicate parameter 'ms'");
    expect_bad_param(c, "/v1/jobs/spin?ms=99999999", "ms must be an integer");
    expect_bad_param(c, "/v1/jobs/sha256?rounds=0", "rounds must be an integer");
    expect_bad_param(c, "/v1/jobs/compress?codec=lz4", "codec must be zstd or gzip");
    expect_bad_param(c, "/v1/jobs/noop?verbose", "unknown parameter 'verbose'");
    /* Still served afterwards. */
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* Unknown kind: 404; a kind's path with GET: 405 with Allow: POST. */
    HS_CHECK(job_exchange(c, "/v1/jobs/nope", "", NULL, 0, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 404, "not_found"));
    HS_CHECK(hs_exchange(c, "GET /v1/jobs/noop HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 405, "method_not_allowed"));
    CU_ASSERT(header_is(&r, "Allow", "POST"));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Every registered kind has its route (answered by the kind: 200 or its own 400). */
static void test_jobs_every_kind_routed(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    const struct srv_kind *k;
    const struct srv_kinds *ks = srv_kinds_builtin();
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    CU_ASSERT(srv_kinds_count(ks) >= 5);
    for (size_t i = 0; (k = srv_kinds_at(ks, i)) != NULL; i++) {
        char target[128];
        snprintf(target, sizeof(target), "/v1/jobs/%s", k->name);
        HS_CHECK(job_exchange(c, target, "", NULL, 0, &r) == 0);
        CU_ASSERT(r.status == 200 || hs_resp_is_error(&r, 400, "bad_param"));
        if (r.status != 200 && !hs_resp_is_error(&r, 400, "bad_param"))
            fprintf(stderr, "\n    %s answered %d\n", target, r.status);
    }
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- Server-Timing and the log lines --------------------------------------------------------- */

static void test_jobs_server_timing(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    double q = -1, run = -1;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(job_exchange(c, "/v1/jobs/spin?ms=20", "X-Request-Id: st-1\r\n", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(hs_resp_header_count(&r, "Server-Timing"), 1);
    CU_ASSERT(server_timing(&r, &q, &run));
    CU_ASSERT(run >= 20.0 && run < 20.0 + BOUND_MS);
    CU_ASSERT(q >= 0.0 && q < BOUND_MS);
    /* The access line shows the same split. */
    json_t *a = hs_log_wait(s, "access", "request_id", "st-1", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(a);
    if (a != NULL) {
        json_t *rm = json_object_get(a, "run_ms");
        CU_ASSERT(rm != NULL && json_number_value(rm) >= 20.0);
        json_decref(a);
    }
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "", NULL, 0, &r) == 0);
    CU_ASSERT(server_timing(&r, &q, &run));
    /* Not on other answers. */
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(hs_resp_header_count(&r, "Server-Timing"), 0);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* The worker's lines carry the request's ids (the context is current on the worker) and the
 * access line written on the loop carries the same ones. */
static void test_jobs_log_lines_carry_context(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *start = NULL, *end = NULL, *acc = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(job_exchange(c, "/v1/jobs/spin?ms=2",
                          "X-Request-Id: ctx-lines-1\r\nX-Tenant-Id: acme\r\n"
                          "traceparent: 00-" TRACE_ID "-" PARENT_ID "-01\r\n",
                          NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK((start = hs_log_wait(s, "job start", "request_id", "ctx-lines-1", HS_IO_MS)) != NULL);
    HS_CHECK((end = wait_job_end(s, "ctx-lines-1", "ok")) != NULL);
    HS_CHECK((acc = hs_log_wait(s, "access", "request_id", "ctx-lines-1", HS_IO_MS)) != NULL);
    CU_ASSERT(str_eq(hs_json_str(start, "level"), "debug"));
    CU_ASSERT(str_eq(hs_json_str(start, "kind"), "spin"));
    CU_ASSERT(str_eq(hs_json_str(end, "kind"), "spin"));
    CU_ASSERT(json_number_value(json_object_get(end, "run_ms")) >= 2.0);
    const char *th = hs_json_str(start, "thread");
    CU_ASSERT(th != NULL && strncmp(th, "spindle-w", 9) == 0);
    CU_ASSERT(str_eq(hs_json_str(acc, "thread"), "loop"));
    const json_t *lines[] = {start, end, acc};
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT(str_eq(hs_json_str(lines[i], "tenant"), "acme"));
        CU_ASSERT(str_eq(hs_json_str(lines[i], "trace_id"), TRACE_ID));
        const char *span = hs_json_str(lines[i], "span_id");
        CU_ASSERT(str_eq(span, hs_json_str(acc, "span_id")));
        CU_ASSERT(span != NULL && strcmp(span, PARENT_ID) != 0); /* the request's own span */
    }
out:
    json_decref(start);
    json_decref(end);
    json_decref(acc);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- deadlines ------------------------------------------------------------------------------- */

/* A running job past X-Timeout-Ms: 504 at the deadline, and the job stops (its end line). */
static void test_jobs_deadline_running(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(job_exchange(c, LONG_SPIN, "X-Request-Id: dl-run\r\nX-Timeout-Ms: 100\r\n", NULL, 0,
                          &r) == 0);
    long long took = hs_now_ms() - t0;
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT(took >= 90 && took < BOUND_MS);
    json_decref(wait_job_end(s, "dl-run", "cancelled"));
    check_access(s, "dl-run", 504, "deadline");
    /* The connection is still good. */
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A job that reads the body throughout (zstd level 19 of 16 MiB that compresses poorly: several
 * seconds of CPU, so a 1.5 s deadline falls while it runs even on a busy machine or under a
 * sanitizer, and the upload has time to arrive and the job to start before it) hits its
 * deadline: 504 at once, the job stops at its next chunk. The request keeps the body alive until
 * the job let go of it (AddressSanitizer would catch a read after the request freed it). */
static void test_jobs_deadline_body_job(void)
{
    const char *const over[] = {"limits.max_body_bytes=16777216", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    size_t len = 16u << 20;
    unsigned char *body = malloc(len);
    HS_CHECK(s != NULL && body != NULL);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned x = 2463534242u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        body[i] = (unsigned char)b64[x & 63];
    }
    HS_CHECK((c = hs_connect(s)) != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(job_exchange(c, "/v1/jobs/compress?codec=zstd&level=19",
                          "X-Request-Id: dl-body\r\nX-Timeout-Ms: 1500\r\n", body, len, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT(hs_now_ms() - t0 < 1500 + BOUND_MS);
    json_decref(wait_job_end(s, "dl-body", "cancelled"));
    check_access(s, "dl-body", 504, "deadline");
out:
    free(body);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A job still queued at its deadline never runs. One worker, busy with a long spin. */
static void test_jobs_deadline_queued(void)
{
    const char *const over[] = {"pool.workers=1", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *busy = NULL, *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((busy = hs_connect(s)) != NULL && (c = hs_connect(s)) != NULL);
    HS_CHECK(job_send(busy, LONG_SPIN, "X-Request-Id: dq-busy\r\n", NULL, 0) == 0);
    HS_CHECK((line = hs_log_wait(s, "job start", "request_id", "dq-busy", HS_IO_MS)) != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(job_exchange(c, "/v1/jobs/spin?ms=1", "X-Request-Id: dq-late\r\nX-Timeout-Ms: 150\r\n",
                          NULL, 0, &r) == 0);
    long long took = hs_now_ms() - t0;
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT(took >= 140 && took < BOUND_MS);
    /* Its access line is written once the pool handed the cancelled job back. */
    check_access(s, "dq-late", 504, "deadline");
    CU_ASSERT_EQUAL(log_count(s, "job start", "dq-late"), 0);
    CU_ASSERT_EQUAL(log_count(s, "job end", "dq-late"), 0);
    /* Free the worker: the client of the long spin leaves. */
    hs_close(busy);
    busy = NULL;
    json_decref(wait_job_end(s, "dq-busy", "cancelled"));
    check_access(s, "dq-busy", 499, "client_closed");
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "X-Request-Id: dq-after\r\n", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(log_count(s, "job start", "dq-late"), 0);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(busy);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- client close ---------------------------------------------------------------------------- */

/* Close (FIN, or RST when `reset`) while the job runs: the job stops, access shows 499. The
 * server runs with cancel_grace_ms=10, so the pool's overdue monitor would log "job overdue after
 * cancel" for this request had the job still run 10 ms after the cancel: its absence is the
 * in-server proof of "stops within 10 ms". The bound seen from the client (close to the end line)
 * is looser: it includes the loop noticing the close and scheduling. */
static void client_leaves_running(struct hs_server *s, const char *id, bool reset)
{
    struct hs_conn *c = hs_connect(s);
    json_t *start = NULL, *end = NULL;
    char hdr[128];
    HS_CHECK(c != NULL);
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %s\r\n", id);
    HS_CHECK(job_send(c, LONG_SPIN, hdr, NULL, 0) == 0);
    HS_CHECK((start = hs_log_wait(s, "job start", "request_id", id, HS_IO_MS)) != NULL);
    long long closed_us = realtime_us();
    if (reset)
        hs_abort(c);
    else
        hs_close(c);
    c = NULL;
    HS_CHECK((end = wait_job_end(s, id, "cancelled")) != NULL);
    long long stop_ms = (log_ts_us(end) - closed_us) / 1000;
    CU_ASSERT(stop_ms < BOUND_MS);
    CU_ASSERT(json_number_value(json_object_get(end, "run_ms")) < 10000.0);
    check_access(s, id, 499, "client_closed");
    CU_ASSERT_EQUAL(log_count(s, "job overdue after cancel", id), 0);
out:
    json_decref(start);
    json_decref(end);
    hs_close(c);
}

static void test_jobs_client_close_cancels(void)
{
    const char *const over[] = {"pool.cancel_grace_ms=10", NULL};
    struct hs_server *s = hs_start(over);
    HS_CHECK(s != NULL);
    client_leaves_running(s, "cc-fin", false);
    client_leaves_running(s, "cc-rst", true);
out:
    HS_FINISH(s);
}

/* ---- a full queue ---------------------------------------------------------------------------- */

/* Index (0 or 1) of the first of two connections with an answer within `ms`, -1 when neither. */
static int first_readable(struct hs_conn *a, struct hs_conn *b, int ms)
{
    struct pollfd p[2] = {{.fd = a->fd, .events = POLLIN}, {.fd = b->fd, .events = POLLIN}};
    if (a->len > 0)
        return 0;
    if (b->len > 0)
        return 1;
    if (poll(p, 2, ms) <= 0)
        return -1;
    return (p[0].revents & POLLIN) ? 0 : (p[1].revents & POLLIN) ? 1 : -1;
}

static void test_jobs_queue_full(void)
{
    const char *const over[] = {"pool.workers=1", "pool.queue_capacity=1", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *run = NULL, *c[2] = {NULL, NULL};
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((run = hs_connect(s)) != NULL);
    HS_CHECK((c[0] = hs_connect(s)) != NULL && (c[1] = hs_connect(s)) != NULL);
    HS_CHECK(job_send(run, LONG_SPIN, "X-Request-Id: qf-run\r\n", NULL, 0) == 0);
    HS_CHECK((line = hs_log_wait(s, "job start", "request_id", "qf-run", HS_IO_MS)) != NULL);
    /* Two more long spins: whichever the server takes first fills the queue, the other is
     * refused at once. */
    HS_CHECK(job_send(c[0], LONG_SPIN, "X-Request-Id: qf-0\r\n", NULL, 0) == 0);
    HS_CHECK(job_send(c[1], LONG_SPIN, "X-Request-Id: qf-1\r\n", NULL, 0) == 0);
    int i = first_readable(c[0], c[1], HS_IO_MS);
    HS_CHECK(i >= 0);
    HS_CHECK(hs_read_response(c[i], &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "queue_full"));
    CU_ASSERT(header_is(&r, "Retry-After", "1"));
    CU_ASSERT(!header_is(&r, "Connection", "close"));
    /* The queued one stays pending. */
    CU_ASSERT_EQUAL(first_readable(c[1 - i], c[1 - i], 200), -1);
    const char *refused = i == 0 ? "qf-0" : "qf-1", *queued = i == 0 ? "qf-1" : "qf-0";
    check_access(s, refused, 503, NULL);
    /* The refused connection is still usable (answer not closing). */
    HS_CHECK(hs_exchange(c[i], "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* The queued client leaves: its job is dropped from the queue without running. */
    hs_close(c[1 - i]);
    c[1 - i] = NULL;
    check_access(s, queued, 499, "client_closed");
    CU_ASSERT_EQUAL(log_count(s, "job start", queued), 0);
    hs_close(run);
    run = NULL;
    json_decref(wait_job_end(s, "qf-run", "cancelled"));
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(run);
    hs_close(c[0]);
    hs_close(c[1]);
    HS_FINISH(s);
}

/* ---- graceful stop --------------------------------------------------------------------------- */

/* SIGTERM while a job runs that ends within the drain period: it is answered (Connection:
 * close), then the server exits 0. */
static void test_jobs_stop_answers_running(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(job_send(c, "/v1/jobs/spin?ms=300", "X-Request-Id: gs-run\r\n", NULL, 0) == 0);
    HS_CHECK((line = hs_log_wait(s, "job start", "request_id", "gs-run", HS_IO_MS)) != NULL);
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "Connection", "close"));
    CU_ASSERT(hs_wait_exit(s, HS_STOP_MS));
    check_access(s, "gs-run", 200, NULL);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s); /* exit code 0 */
}

/* SIGTERM while a job runs longer than the drain period: at its end the job is cancelled and
 * answered 503 shutting_down, then the server exits 0. */
static void test_jobs_stop_cancels_after_drain(void)
{
    const char *const over[] = {"shutdown.drain_timeout_ms=200", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(job_send(c, LONG_SPIN, "X-Request-Id: gs-long\r\n", NULL, 0) == 0);
    HS_CHECK((line = hs_log_wait(s, "job start", "request_id", "gs-long", HS_IO_MS)) != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "shutting_down"));
    CU_ASSERT(hs_now_ms() - t0 >= 150);
    CU_ASSERT(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT(hs_now_ms() - t0 < HS_STOP_MS);
    json_decref(wait_job_end(s, "gs-long", "cancelled"));
    check_access(s, "gs-long", 503, "shutdown");
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_jobs(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_jobs_noop_spin_primes),
        SPINDLE_TEST(test_jobs_sha256),
        SPINDLE_TEST(test_jobs_compress),
        SPINDLE_TEST(test_jobs_bad_params),
        SPINDLE_TEST(test_jobs_every_kind_routed),
        SPINDLE_TEST(test_jobs_server_timing),
        SPINDLE_TEST(test_jobs_log_lines_carry_context),
        SPINDLE_TEST(test_jobs_deadline_running),
        SPINDLE_TEST(test_jobs_deadline_body_job),
        SPINDLE_TEST(test_jobs_deadline_queued),
        SPINDLE_TEST(test_jobs_client_close_cancels),
        SPINDLE_TEST(test_jobs_queue_full),
        SPINDLE_TEST(test_jobs_stop_answers_running),
        SPINDLE_TEST(test_jobs_stop_cancels_after_drain),
    };
    return SPINDLE_SUITE_ADD("integration_jobs", NULL, NULL, tests);
}
