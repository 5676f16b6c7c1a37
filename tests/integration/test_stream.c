/* test_stream.c - bodies and answers that stream through jobs: correctness at sizes far beyond
 * max_body_bytes, bounded memory, backpressure both ways, Expect: 100-continue after admission,
 * cuts, disconnects and failures after the answer started.
 *
 * Design: the client of tests/integration/stream.h sends a generated body while it reads and
 * decodes the answer, hashing both sides; a test compares the hashes and reads the server's peak
 * RSS (VmHWM) before and after. Sizes are tens of MiB in every build; the gigabyte tests run only
 * where SPINDLE_TEST_LONG is set (the release build's `make test`), registered inactive elsewhere.
 * RSS is asserted only without sanitizers (their allocators keep freed memory in quarantine).
 * No timing assertions: slow clients are paced by poll() waits, and what is checked is that
 * answers come, bytes match and the log says what happened.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/integration/stream.h"
#include "tests/suite.h"

int suite_integration_stream(void);

#define MIB           (1024ull * 1024ull)
#define ST_TIMEOUT_MS 240000
#define ST_RSS_KIB    (8 * 1024) /* peak RSS growth allowed during a transfer */
#define GET_HEALTHZ   "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"

static const char *const st_over[] = {"limits.default_timeout_ms=600000",
                                      "limits.max_timeout_ms=600000", NULL};

static const char *st_skip_short(void)
{
    return getenv("SPINDLE_TEST_LONG") != NULL ? NULL
                                               : "gigabyte transfers run in the release build only";
}

static bool st_sanitized(void)
{
    return getenv("ASAN_OPTIONS") != NULL || getenv("TSAN_OPTIONS") != NULL;
}

static void st_init(struct sx *x, const struct hs_server *s, const char *target, uint64_t total,
                    enum sx_gen gen, enum sx_decode decode)
{
    memset(x, 0, sizeof(*x));
    x->port = hs_port(s);
    x->target = target;
    x->total = total;
    x->gen = gen;
    x->decode = decode;
    x->timeout_ms = ST_TIMEOUT_MS;
}

/* One transfer that must come back whole and identical after decoding. */
static void st_roundtrip(struct hs_server *s, const char *target, uint64_t total, enum sx_gen gen,
                         enum sx_decode decode, bool chunked)
{
    struct sx x;
    st_init(&x, s, target, total, gen, decode);
    x.chunked = chunked;
    long before = sx_vmhwm_kib(hs_pid(s));
    CU_ASSERT_EQUAL_FATAL(sx_run(&x), 0);
    long after = sx_vmhwm_kib(hs_pid(s));
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_FALSE(x.decode_error);
    CU_ASSERT_EQUAL(x.sent, total);
    CU_ASSERT_EQUAL(x.decoded, total);
    CU_ASSERT_EQUAL(memcmp(x.in_md, x.out_md, sizeof(x.in_md)), 0);
    CU_ASSERT_STRING_EQUAL(x.te, "chunked");
    if (!st_sanitized()) {
        if (after - before > ST_RSS_KIB)
            fprintf(stderr, "\n    VmHWM %ld -> %ld KiB\n", before, after);
        CU_ASSERT(after - before <= ST_RSS_KIB);
    }
}

/* Tens of MiB (48 x max_body_bytes; 16 x under the sanitizers, which are many times slower)
 * through zstd and gzip, Content-Length and chunked. */
static void test_stream_compress_beyond_max_body(void)
{
    struct hs_server *s = hs_start(st_over);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint64_t n = st_sanitized() ? 16 * MIB : 48 * MIB;
    st_roundtrip(s, "/v1/jobs/compress?codec=zstd", n, SX_RANDOM, SX_ZSTD, false);
    st_roundtrip(s, "/v1/jobs/compress?codec=gzip&level=1", n, SX_ZERO, SX_GZIP, true);
    st_roundtrip(s, "/v1/jobs/compress?codec=zstd&level=1", n, SX_ZERO, SX_ZSTD, true);
    HS_FINISH(s);
}

/* sha256 with rounds=1 hashes a body of any size; its digest is the client's. A body that fits
 * max_body_bytes is read whole: its answer has a Content-Length. */
static void test_stream_sha256_rounds_one(void)
{
    struct hs_server *s = hs_start(st_over);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct sx x;
    st_init(&x, s, "/v1/jobs/sha256?rounds=1", 20 * MIB, SX_RANDOM, SX_RAW);
    CU_ASSERT_EQUAL_FATAL(sx_run(&x), 0);
    CU_ASSERT_EQUAL(x.status, 200);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", x.in_md[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(x.body, hex));
    CU_ASSERT_PTR_NOT_NULL(strstr(x.body, "\"bytes\":20971520"));
    st_init(&x, s, "/v1/jobs/sha256?rounds=1", 1000, SX_RANDOM, SX_RAW);
    CU_ASSERT_EQUAL_FATAL(sx_run(&x), 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_STRING_EQUAL(x.te, "");
    CU_ASSERT_PTR_NOT_NULL(strstr(x.body, "\"bytes\":1000"));
    HS_FINISH(s);
}

/* The value of the sample `series` ("name{labels}") in the server's /metrics, 0 when absent. */
static double st_metric(const struct hs_server *s, const char *series)
{
    struct hs_resp r = {0};
    double v = 0;
    if (hs_roundtrip(s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 && r.body != NULL) {
        size_t n = strlen(series);
        for (const char *p = r.body; (p = strstr(p, series)) != NULL; p += n)
            if ((p == r.body || p[-1] == '\n') && p[n] == ' ')
                v = strtod(p + n + 1, NULL);
    }
    hs_resp_fini(&r);
    return v;
}

/* Streamed jobs feed the run-time figures like whole-body ones: the run metric (and with it the
 * admission estimates, fed by the same observation) counts them, and the answers carry
 * Server-Timing: as a header when the head leaves after the job (sha256 answers after the whole
 * body), as a trailer to a client that reads trailers when the answer started before (compress),
 * and not at all to any other client of an answer that started early. */
static void test_stream_timing_and_estimates(void)
{
    struct hs_server *s = hs_start(st_over);
    HS_CHECK(s != NULL);
    double sha0 = st_metric(s, "spindle_job_run_seconds_count{kind=\"sha256\"}");
    double cmp0 = st_metric(s, "spindle_job_run_seconds_count{kind=\"compress\"}");
    struct sx x;
    st_init(&x, s, "/v1/jobs/sha256?rounds=1", 4 * MIB, SX_RANDOM, SX_RAW);
    CU_ASSERT_EQUAL_FATAL(sx_run(&x), 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(x.timing, "queue;dur="));
    CU_ASSERT_PTR_NOT_NULL(strstr(x.timing, "run;dur="));
    st_init(&x, s, "/v1/jobs/compress?codec=zstd&level=1", 4 * MIB, SX_RANDOM, SX_ZSTD);
    x.headers = "TE: trailers\r\n";
    CU_ASSERT_EQUAL_FATAL(sx_run(&x), 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_EQUAL(memcmp(x.in_md, x.out_md, 32), 0);
    CU_ASSERT_STRING_EQUAL(x.timing, ""); /* the head left with the first compressed bytes */
    CU_ASSERT_PTR_NOT_NULL(strstr(x.timing_trailer, "queue;dur="));
    CU_ASSERT_PTR_NOT_NULL(strstr(x.timing_trailer, "run;dur="));
    CU_ASSERT_STRING_EQUAL(x.trailer, "");
    st_init(&x, s, "/v1/jobs/compress?codec=zstd&level=1", 4 * MIB, SX_RANDOM, SX_ZSTD);
    CU_ASSERT_EQUAL_FATAL(sx_run(&x), 0);
    CU_ASSERT_EQUAL(x.status, 200);
    CU_ASSERT_TRUE(x.complete);
    CU_ASSERT_STRING_EQUAL(x.timing, "");
    CU_ASSERT_STRING_EQUAL(x.timing_trailer, "");
    CU_ASSERT_EQUAL(st_metric(s, "spindle_job_run_seconds_count{kind=\"sha256\"}"), sha0 + 1);
    CU_ASSERT_EQUAL(st_metric(s, "spindle_job_run_seconds_count{kind=\"compress\"}"), cmp0 + 2);
out:
    HS_FINISH(s);
}

/* Expect: 100-continue is answered after admission: a refused upload gets its 429 instead of
 * 100 Continue (the body is never sent); an admitted one gets 100 Continue. */
struct st_bg {
    struct sx x;
    pthread_t t;
};

static void *st_bg_main(void *arg)
{
    struct st_bg *b = arg;
    (void)sx_run(&b->x);
    return NULL;
}

static void test_stream_expect_after_admission(void)
{
    const char *const over[] = {"limits.max_inflight=1", "limits.default_timeout_ms=600000",
                                "limits.max_timeout_ms=600000", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    struct st_bg bg;
    bool started = false;
    HS_CHECK(s != NULL);
    /* a slow upload holds the tenant's only slot */
    st_init(&bg.x, s, "/v1/jobs/compress?codec=zstd", 4 * MIB, SX_RANDOM, SX_ZSTD);
    bg.x.headers = "Expect: 100-continue\r\n";
    bg.x.send_piece = 64 * 1024;
    bg.x.send_gap_ms = 20;
    HS_CHECK(pthread_create(&bg.t, NULL, st_bg_main, &bg) == 0);
    started = true;
    json_t *line = hs_log_wait(s, "job start", NULL, NULL, HS_IO_MS * 4);
    json_decref(line);
    HS_CHECK(line != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /v1/jobs/compress?codec=gzip HTTP/1.1\r\nHost: t\r\n"
                            "Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_concurrency_limited"));
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
out:
    if (started) {
        pthread_join(bg.t, NULL);
        CU_ASSERT_TRUE(bg.x.got_continue);
        CU_ASSERT_EQUAL(bg.x.status, 200);
        CU_ASSERT_EQUAL(memcmp(bg.x.in_md, bg.x.out_md, 32), 0);
    }
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Expect: 100-continue on a body read whole is answered after admission too: a refused job's
 * 429 comes instead of 100 Continue and the connection closes (the body is never sent); an
 * admitted one gets 100 Continue, sends its body and gets 200 with the admission decided before
 * 100 (its bucket has one token, which a second decision would not find). */
static void test_stream_expect_whole_body(void)
{
    const char *const over[] = {"limits.max_inflight=1", "limits.rate=0.001", "limits.burst=2",
                                NULL};
    static const char head[] = "POST /v1/jobs/sha256?rounds=1 HTTP/1.1\r\nHost: t\r\n"
                               "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n";
    struct hs_server *s = hs_start(over);
    struct hs_conn *hold = NULL, *c = NULL;
    struct hs_resp r = {0};
    char body[1000], v[32];
    HS_CHECK(s != NULL);
    /* an upload that is never finished holds the tenant's only slot */
    HS_CHECK((hold = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(hold, "POST /v1/jobs/compress?codec=zstd HTTP/1.1\r\nHost: t\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n") == 0);
    json_t *line = hs_log_wait(s, "job start", NULL, NULL, HS_IO_MS * 4);
    json_decref(line);
    HS_CHECK(line != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, head) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0); /* the first bytes: not a 100 */
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_concurrency_limited"));
    CU_ASSERT_TRUE(hs_resp_header(&r, "Retry-After", v, sizeof(v)));
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
    hs_close(c);
    c = NULL;
    hs_abort(hold); /* the slot comes back (access 499) */
    hold = NULL;
    HS_CHECK(hs_log_wait_count(s, "access", 2, HS_IO_MS * 4) == 2);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, head) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 100);
    memset(body, 'x', sizeof(body));
    HS_CHECK(hs_send(c, body, sizeof(body), HS_IO_MS) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS * 4) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"bytes\":1000"));
out:
    hs_resp_fini(&r);
    hs_close(c);
    if (hold != NULL)
        hs_abort(hold);
    HS_FINISH(s);
}

/* A slow sender and a slow reader at once: both come back whole, memory stays bounded, and
 * /healthz from another client is answered meanwhile. */
static void test_stream_slow_clients(void)
{
    struct hs_server *s = hs_start(st_over);
    struct st_bg in, out;
    bool in_started = false, out_started = false;
    HS_CHECK(s != NULL);
    long before = sx_vmhwm_kib(hs_pid(s));
    st_init(&in.x, s, "/v1/jobs/compress?codec=zstd", 3 * MIB, SX_RANDOM, SX_ZSTD);
    in.x.send_piece = 32 * 1024;
    in.x.send_gap_ms = 10;
    st_init(&out.x, s, "/v1/jobs/compress?codec=gzip&level=1", 3 * MIB, SX_RANDOM, SX_GZIP);
    out.x.read_piece = 8 * 1024;
    out.x.read_gap_ms = 5;
    HS_CHECK(pthread_create(&in.t, NULL, st_bg_main, &in) == 0);
    in_started = true;
    HS_CHECK(pthread_create(&out.t, NULL, st_bg_main, &out) == 0);
    out_started = true;
    for (int i = 0; i < 20; i++) {
        struct hs_resp r = {0};
        CU_ASSERT_EQUAL(hs_roundtrip(s, GET_HEALTHZ, &r), 0);
        CU_ASSERT_EQUAL(r.status, 200);
        hs_resp_fini(&r);
    }
out:
    if (in_started)
        pthread_join(in.t, NULL);
    if (out_started)
        pthread_join(out.t, NULL);
    if (in_started && out_started) {
        CU_ASSERT_EQUAL(in.x.status, 200);
        CU_ASSERT_EQUAL(out.x.status, 200);
        CU_ASSERT_EQUAL(memcmp(in.x.in_md, in.x.out_md, 32), 0);
        CU_ASSERT_EQUAL(memcmp(out.x.in_md, out.x.out_md, 32), 0);
        if (!st_sanitized())
            CU_ASSERT(sx_vmhwm_kib(hs_pid(s)) - before <= ST_RSS_KIB);
    }
    HS_FINISH(s);
}

/* A client that stops reading is cut after write_timeout_ms: the job is cancelled, the access
 * line says 499 with stream_error write_timeout. */
static void test_stream_stalled_reader_cut(void)
{
    const char *const over[] = {"server.write_timeout_ms=500", "limits.default_timeout_ms=600000",
                                "limits.max_timeout_ms=600000", NULL};
    struct hs_server *s = hs_start(over);
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    struct sx x;
    st_init(&x, s, "/v1/jobs/compress?codec=zstd&level=1", 256 * MIB, SX_RANDOM, SX_ZSTD);
    x.stop_read_after = 64 * 1024;
    x.timeout_ms = 60000;
    CU_ASSERT_EQUAL(sx_run(&x), 0);
    CU_ASSERT_FALSE(x.timed_out);
    CU_ASSERT_TRUE(x.sent < x.total);
    line = hs_log_wait(s, "access", "stream_error", "write_timeout", HS_IO_MS * 4);
    HS_CHECK(line != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "status", 0), 499);
out:
    json_decref(line);
    HS_FINISH(s);
}

/* A client that goes away mid-upload or mid-download: the job is cancelled (access 499) and the
 * server goes on (and, under the sanitizers, exits without a leak). */
static void test_stream_disconnect_cancels(void)
{
    struct hs_server *s = hs_start(st_over);
    json_t *lines = NULL;
    HS_CHECK(s != NULL);
    struct sx up, down;
    st_init(&up, s, "/v1/jobs/compress?codec=zstd", 256 * MIB, SX_RANDOM, SX_ZSTD);
    up.abort_after_in = 4 * MIB;
    CU_ASSERT_EQUAL(sx_run(&up), 0);
    st_init(&down, s, "/v1/jobs/compress?codec=gzip&level=1", 256 * MIB, SX_RANDOM, SX_GZIP);
    down.abort_after_out = 2 * MIB;
    CU_ASSERT_EQUAL(sx_run(&down), 0);
    HS_CHECK(hs_log_wait_count(s, "access", 2, HS_IO_MS * 4) == 2);
    lines = hs_log_lines(s);
    size_t i, n499 = 0;
    json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *msg = hs_json_str(l, "msg");
        if (msg != NULL && strcmp(msg, "access") == 0 && hs_json_int(l, "status", 0) == 499)
            n499++;
    }
    CU_ASSERT_EQUAL(n499, 2);
    struct hs_resp r = {0};
    CU_ASSERT_EQUAL(hs_roundtrip(s, GET_HEALTHZ, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    hs_resp_fini(&r);
out:
    json_decref(lines);
    HS_FINISH(s);
}

/* A deadline that passes after the answer started: the client that reads trailers gets the last
 * chunk with Spindle-Error; one that does not sees the body cut (no last chunk, closed). The
 * access lines say 504 with stream_error deadline_exceeded. */
static void test_stream_failure_after_start(void)
{
    struct hs_server *s = hs_start(st_over);
    HS_CHECK(s != NULL);
    struct sx t, u;
    st_init(&t, s, "/v1/jobs/compress?codec=zstd&level=1", 64 * MIB, SX_RANDOM, SX_ZSTD);
    t.headers = "X-Timeout-Ms: 1500\r\nTE: trailers\r\n";
    t.send_gap_ms = 10;
    t.timeout_ms = 60000;
    CU_ASSERT_EQUAL(sx_run(&t), 0);
    CU_ASSERT_EQUAL(t.status, 200);
    CU_ASSERT_TRUE(t.complete);
    CU_ASSERT_STRING_EQUAL(t.trailer, "deadline_exceeded");
    CU_ASSERT_TRUE(t.decoded < t.total);
    st_init(&u, s, "/v1/jobs/compress?codec=zstd&level=1", 64 * MIB, SX_RANDOM, SX_ZSTD);
    u.headers = "X-Timeout-Ms: 1500\r\n";
    u.send_gap_ms = 10;
    u.timeout_ms = 60000;
    CU_ASSERT_EQUAL(sx_run(&u), 0);
    CU_ASSERT_EQUAL(u.status, 200);
    CU_ASSERT_FALSE(u.complete);
    CU_ASSERT_TRUE(u.closed);
    CU_ASSERT_STRING_EQUAL(u.trailer, "");
    CU_ASSERT_EQUAL(hs_log_wait_count(s, "stream cut after its answer started", 2, HS_IO_MS), 2);
    json_t *line = hs_log_wait(s, "access", "stream_error", "deadline_exceeded", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT_EQUAL(hs_json_int(line, "status", 0), 504);
    json_decref(line);
out:
    HS_FINISH(s);
}

/* `spindle call --body FILE -o FILE` streams: 24 MiB in, the zstd answer to a file, which
 * decompresses to the same bytes; stderr (not a terminal) has no progress line. */
static void test_stream_call_files(void)
{
    struct hs_server *s = hs_start(st_over);
    char in[256], outp[256], url[64], *out = NULL, *err = NULL;
    unsigned char *a = NULL, *b = NULL;
    int code = -1;
    const size_t len = 24 * MIB;
    HS_CHECK(s != NULL);
    snprintf(in, sizeof(in), "%s/in.bin", hs_dir(s));
    snprintf(outp, sizeof(outp), "%s/out.zst", hs_dir(s));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", hs_port(s));
    a = malloc(len);
    HS_CHECK(a != NULL);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        a[i] = (unsigned char)(i % 4096 < 2048 ? x : 0); /* half random, half zero */
    }
    FILE *f = fopen(in, "wb");
    HS_CHECK(f != NULL);
    bool wrote = fwrite(a, 1, len, f) == len;
    HS_CHECK(fclose(f) == 0 && wrote);
    const char *args[] = {"call", "--server", url,  "compress",     "codec=zstd",    "--body",
                          in,     "-o",       outp, "--request-id", "call-stream-1", NULL};
    HS_CHECK(proc_run(args, ST_TIMEOUT_MS, &out, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    CU_ASSERT_STRING_EQUAL(err, "");
    f = fopen(outp, "rb");
    HS_CHECK(f != NULL);
    b = malloc(len + 1);
    HS_CHECK(b != NULL);
    ZSTD_DCtx *d = ZSTD_createDCtx();
    unsigned char zin[65536];
    size_t got = 0, n;
    while (d != NULL && (n = fread(zin, 1, sizeof(zin), f)) > 0) {
        ZSTD_inBuffer zi = {zin, n, 0};
        while (zi.pos < zi.size && got <= len) {
            ZSTD_outBuffer zo = {b + got, len + 1 - got, 0};
            if (ZSTD_isError(ZSTD_decompressStream(d, &zo, &zi)))
                break;
            got += zo.pos;
            if (zo.pos == 0 && zi.pos < zi.size && got > len)
                break;
        }
    }
    ZSTD_freeDCtx(d);
    fclose(f);
    CU_ASSERT_EQUAL(got, len);
    CU_ASSERT(got == len && memcmp(a, b, len) == 0);
    json_t *line = hs_log_wait(s, "access", "request_id", "call-stream-1", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT_EQUAL(hs_json_int(line, "status", 0), 200);
    json_decref(line);
out:
    free(a);
    free(b);
    free(out);
    free(err);
    HS_FINISH(s);
}

/* Many streams at once, each correct. */
static void st_concurrent(uint64_t each, unsigned n)
{
    struct hs_server *s = hs_start(st_over);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct st_bg *b = calloc(n, sizeof(*b));
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    long before = sx_vmhwm_kib(hs_pid(s));
    unsigned started = 0;
    for (unsigned i = 0; i < n; i++) {
        st_init(&b[i].x, s,
                i % 2 ? "/v1/jobs/compress?codec=gzip&level=1"
                      : "/v1/jobs/compress?codec=zstd&level=1",
                each, SX_RANDOM, i % 2 ? SX_GZIP : SX_ZSTD);
        b[i].x.seed = 1000 + i;
        if (pthread_create(&b[i].t, NULL, st_bg_main, &b[i]) != 0)
            break;
        started++;
    }
    CU_ASSERT_EQUAL(started, n);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(b[i].t, NULL);
        CU_ASSERT_EQUAL(b[i].x.status, 200);
        CU_ASSERT_EQUAL(b[i].x.decoded, each);
        CU_ASSERT_EQUAL(memcmp(b[i].x.in_md, b[i].x.out_md, 32), 0);
    }
    /* each stream holds two channels and a read buffer at most: about 600 KiB */
    if (!st_sanitized())
        CU_ASSERT(sx_vmhwm_kib(hs_pid(s)) - before <= (long)n * 1024 + ST_RSS_KIB);
    free(b);
    HS_FINISH(s);
}

static void test_stream_concurrent_small(void)
{
    st_concurrent(2 * MIB, 64);
}

static void test_stream_concurrent_100mb(void)
{
    st_concurrent(100 * 1000 * 1000, 64);
}

/* 2 GiB of random and of zero bytes through zstd and gzip. */
static void test_stream_two_gib(void)
{
    struct hs_server *s = hs_start(st_over);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    st_roundtrip(s, "/v1/jobs/compress?codec=zstd", 2048 * MIB, SX_RANDOM, SX_ZSTD, false);
    st_roundtrip(s, "/v1/jobs/compress?codec=zstd", 2048 * MIB, SX_ZERO, SX_ZSTD, false);
    st_roundtrip(s, "/v1/jobs/compress?codec=gzip&level=1", 2048 * MIB, SX_RANDOM, SX_GZIP, false);
    st_roundtrip(s, "/v1/jobs/compress?codec=gzip&level=1", 2048 * MIB, SX_ZERO, SX_GZIP, true);
    HS_FINISH(s);
}

int suite_integration_stream(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_stream_compress_beyond_max_body),
        SPINDLE_TEST(test_stream_sha256_rounds_one),
        SPINDLE_TEST(test_stream_timing_and_estimates),
        SPINDLE_TEST(test_stream_expect_after_admission),
        SPINDLE_TEST(test_stream_expect_whole_body),
        SPINDLE_TEST(test_stream_slow_clients),
        SPINDLE_TEST(test_stream_stalled_reader_cut),
        SPINDLE_TEST(test_stream_disconnect_cancels),
        SPINDLE_TEST(test_stream_failure_after_start),
        SPINDLE_TEST(test_stream_call_files),
        SPINDLE_TEST(test_stream_concurrent_small),
        SPINDLE_TEST_UNLESS(test_stream_concurrent_100mb, st_skip_short),
        SPINDLE_TEST_UNLESS(test_stream_two_gib, st_skip_short),
    };
    return SPINDLE_SUITE_ADD("integration_stream", NULL, NULL, tests);
}
