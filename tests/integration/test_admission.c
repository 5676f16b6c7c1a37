/* test_admission.c - admission control end to end: every refusal with its status, JSON reason and
 * Retry-After, limits read from [limits] and [tenant.NAME] sections, health endpoints never
 * refused, and the bounded tenant table under 100,000 random tenant ids.
 *
 * Design: each test starts its own server (harness.h) with a small pool (one worker) so the state
 * that makes admission refuse is built on purpose: a long spin job holds the worker (the test waits
 * for its "job start" debug line, which the worker writes once it runs), further jobs fill the
 * queue. Tenant sections are written through the harness's overrides: the harness writes
 * "section.key=value" as INI lines grouped by section and splits at the first dot, which a
 * "tenant.NAME" section cannot go through, so TENANTS() appends the section's lines to the value
 * of log.access (the harness's last [log] key, which the tests leave in place). Waits are bounded
 * polls of a socket or of the log; nothing sleeps for synchronisation.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_admission(void);

/* Overrides entry adding INI text after [log] (see the design note). */
#define TENANTS(text) "log.access=true\n\n" text

#define LONG_SPIN "/v1/jobs/spin?ms=20000"
#define WAIT_MS   5000

/* ---- helpers --------------------------------------------------------------------------------- */

/* POST `target` with header lines `extra` ("Name: v\r\n"...) and an empty body, on `c`. */
static int post(struct hs_conn *c, const char *target, const char *extra)
{
    char req[1024];
    snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n%s\r\n", target,
             extra);
    return hs_send_str(c, req);
}

static int post_exchange(struct hs_conn *c, const char *target, const char *extra,
                         struct hs_resp *r)
{
    int rc = post(c, target, extra);
    return rc == 0 ? hs_read_response(c, r, false, HS_IO_MS) : rc;
}

/* Retry-After as a number, -1 when absent or not a whole number. */
static long retry_after(const struct hs_resp *r)
{
    char v[32], *end;
    if (!hs_resp_header(r, "Retry-After", v, sizeof(v)))
        return -1;
    long n = strtol(v, &end, 10);
    return end != v && *end == '\0' ? n : -1;
}

/* Start a long spin job with request id `id` for `tenant` on a new connection and wait until a
 * worker runs it. Returns the connection (the job runs until it is closed) or NULL. */
static struct hs_conn *hold_worker(struct hs_server *s, const char *id, const char *tenant)
{
    char extra[256];
    snprintf(extra, sizeof(extra), "X-Request-Id: %s\r\nX-Tenant-Id: %s\r\n", id, tenant);
    struct hs_conn *c = hs_connect(s);
    if (c == NULL || post(c, LONG_SPIN, extra) != 0) {
        hs_close(c);
        return NULL;
    }
    json_t *line = hs_log_wait(s, "job start", "request_id", id, WAIT_MS);
    if (line == NULL) {
        hs_close(c);
        return NULL;
    }
    json_decref(line);
    return c;
}

/* Queue a long spin job with request id `id` (no wait for it: it stays queued). */
static struct hs_conn *queue_job(struct hs_server *s, const char *id, const char *extra_in)
{
    char extra[256];
    snprintf(extra, sizeof(extra), "X-Request-Id: %s\r\n%s", id, extra_in);
    struct hs_conn *c = hs_connect(s);
    if (c == NULL || post(c, LONG_SPIN, extra) != 0) {
        hs_close(c);
        return NULL;
    }
    /* The access log of an admitted request is written only at its end, so wait for admission
     * through a request that must be answered after it on the loop: a health check. */
    struct hs_resp r = {0};
    int rc = hs_roundtrip(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    hs_resp_fini(&r);
    if (rc != 0) {
        hs_close(c);
        return NULL;
    }
    return c;
}

/* ---- refusals -------------------------------------------------------------------------------- */

static void test_adm_tenant_rate_limited(void)
{
    const char *ov[] = {TENANTS("[tenant.slow]\nrate = 0.1\nburst = 2\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    /* The burst passes, the next one is refused until the bucket refills (10 s per token). */
    for (int i = 0; i < 2; i++) {
        HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    long ra = retry_after(&r);
    CU_ASSERT(ra >= 9 && ra <= 10);
    /* Refused at once and the connection stays usable. */
    CU_ASSERT_EQUAL(hs_resp_header_count(&r, "Connection"), 0);
    /* Another tenant (unconfigured: the defaults, unlimited) is not affected. */
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: fast\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A client that comes back at once after each refusal (pipelined here, so always "at once") is
 * held server.retry_hold_ms from its third instant retry on; each request is still answered, and
 * the holds are logged and counted in the stop summary. */
static void test_adm_retry_storm_held(void)
{
    const char *ov[] = {"server.retry_hold_ms=300",
                        TENANTS("[tenant.slow]\nrate = 0.1\nburst = 1\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200); /* the bucket's one token */
    long long t0 = hs_now_ms();
    for (int i = 0; i < 5; i++)
        HS_CHECK(post(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n") == 0);
    for (int i = 0; i < 5; i++) {
        hs_resp_fini(&r);
        HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
        CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    }
    /* requests 4 and 5 were held 300 ms each */
    CU_ASSERT(hs_now_ms() - t0 >= 600);
    line = hs_log_wait(s, "retry held", NULL, NULL, WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT_EQUAL(hs_json_int(line, "hold_ms", -1), 300);
    json_decref(line);
    line = NULL;
    hs_close(c);
    c = NULL;
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    line = hs_log_wait(s, "spindle stopped", NULL, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT_EQUAL(hs_json_int(line, "retries_held", -1), 2);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    hs_free(s);
}

/* [limits] holds the defaults of every tenant without a section. */
static void test_adm_limits_defaults_from_config(void)
{
    const char *ov[] = {"limits.rate=0.2", "limits.burst=1", TENANTS("[tenant.vip]\nrate = 0\n"),
                        NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: anyone\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: anyone\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    long ra = retry_after(&r);
    CU_ASSERT(ra >= 4 && ra <= 5);
    /* Without X-Tenant-Id the tenant is "default": limited the same way, separately. */
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    /* The section's rate = 0 lifts the limit for its tenant. */
    for (int i = 0; i < 5; i++) {
        HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: vip\r\n", &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_adm_tenant_concurrency_limited(void)
{
    const char *ov[] = {"pool.workers=2", TENANTS("[tenant.one]\nmax_inflight = 1\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *held = NULL, *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    held = hold_worker(s, "adm-conc-1", "one");
    HS_CHECK(held != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: one\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_concurrency_limited"));
    CU_ASSERT(retry_after(&r) >= 1);
    /* The free worker still serves others. */
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: two\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* The slot comes back when the running request ends (client gone: cancelled, released). */
    hs_close(held);
    held = NULL;
    json_t *a = hs_log_wait(s, "access", "request_id", "adm-conc-1", WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(a);
    json_decref(a);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: one\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(held);
    hs_close(c);
    HS_FINISH(s);
}

static void test_adm_queue_full_and_health(void)
{
    const char *ov[] = {"pool.workers=1", "pool.queue_capacity=1", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *held = NULL, *queued = NULL, *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    held = hold_worker(s, "adm-qf-1", "a");
    HS_CHECK(held != NULL);
    queued = queue_job(s, "adm-qf-2", "X-Tenant-Id: b\r\n");
    HS_CHECK(queued != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: c\r\n", &r) == 0);
    CU_ASSERT(hs_now_ms() - t0 < 1000); /* at once, not after the queue moved */
    CU_ASSERT(hs_resp_is_error(&r, 503, "queue_full"));
    long ra = retry_after(&r);
    CU_ASSERT(ra >= 1 && ra <= 60);
    /* Health, readiness and metrics are never refused. */
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(hs_exchange(c, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(hs_exchange(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "spindle_refusals_total{reason=\"queue_full\","
                                          "tenant=\"other\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\nspindle_queue_depth 1\n"));
out:
    hs_resp_fini(&r);
    hs_close(held);
    hs_close(queued);
    hs_close(c);
    HS_FINISH(s);
}

static void test_adm_deadline_unmeetable(void)
{
    const char *ov[] = {"pool.workers=1", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *held = NULL, *queued = NULL, *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    /* Evidence first: jobs of about 400 ms make the service time estimate. */
    HS_CHECK(post_exchange(c, "/v1/jobs/spin?ms=400", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    held = hold_worker(s, "adm-dl-1", "a");
    HS_CHECK(held != NULL);
    queued = queue_job(s, "adm-dl-2", "");
    HS_CHECK(queued != NULL);
    /* One job queued ahead of about 400 ms: a 100 ms deadline cannot be met. */
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Timeout-Ms: 100\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "deadline_unmeetable"));
    long ra = retry_after(&r);
    CU_ASSERT(ra >= 1 && ra <= 60);
    json_t *j = hs_resp_json(&r);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    CU_ASSERT(msg != NULL && strstr(msg, "deadline") != NULL);
    json_decref(j);
out:
    hs_resp_fini(&r);
    hs_close(held);
    hs_close(queued);
    hs_close(c);
    HS_FINISH(s);
}

/* The first recipe: five primes?n=4000000 (each far longer than 300 ms) used to make every
 * request with X-Timeout-Ms: 300 a 503 deadline_unmeetable, even a noop on an idle server. The
 * estimate is now per kind and size, and an idle worker with nothing queued never refuses. */
static void test_adm_deadline_long_primes_then_short_noop(void)
{
    const char *ov[] = {"pool.workers=1", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    for (int i = 0; i < 5; i++) {
        HS_CHECK(post_exchange(c, "/v1/jobs/primes?n=4000000", "", &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
    for (int i = 0; i < 3; i++) {
        HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Timeout-Ms: 300\r\n", &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
    /* the long kind itself: the worker is idle, so it runs (and meets its deadline or not) */
    HS_CHECK(post_exchange(c, "/v1/jobs/primes?n=4000000", "X-Timeout-Ms: 300\r\n", &r) == 0);
    CU_ASSERT(r.status == 200 || hs_resp_is_error(&r, 504, "deadline_exceeded"));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* The second recipe: with default_timeout_ms = 1000, one spin of 1.5 s (with a longer
 * X-Timeout-Ms) used to make every later plain request a 503 for good. */
static void test_adm_deadline_one_long_spin_then_plain(void)
{
    const char *ov[] = {"pool.workers=1", "limits.default_timeout_ms=1000", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    /* one spin of 1.5 s, with a deadline of its own that it meets */
    HS_CHECK(post_exchange(c, "/v1/jobs/spin?ms=1500", "X-Timeout-Ms: 5000\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post_exchange(c, "/v1/jobs/spin?ms=10", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post_exchange(c, "/v1/jobs/primes?n=1000", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* the same long spin is run again (504 at its deadline), not refused with 503 */
    HS_CHECK(post_exchange(c, "/v1/jobs/spin?ms=1500", "", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Retry-After-Ms next to Retry-After: at 40 requests/s the hint is tens of milliseconds where
 * Retry-After must say 1 second, and refusals in a row are given successive token slots. */
static void test_adm_rate_limited_retry_after_ms(void)
{
    const char *ov[] = {TENANTS("[tenant.r40]\nrate = 40\nburst = 10\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    long hints[6];
    int refused = 0;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    for (int i = 0; i < 40 && refused < 6; i++) {
        HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: r40\r\n", &r) == 0);
        if (r.status == 200)
            continue;
        CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
        CU_ASSERT_EQUAL(retry_after(&r), 1);
        char v[32];
        HS_CHECK(hs_resp_header(&r, "Retry-After-Ms", v, sizeof(v)));
        hints[refused] = strtol(v, NULL, 10);
        /* at most one bucket (10 tokens at 40/s) ahead */
        CU_ASSERT(hints[refused] >= 1 && hints[refused] <= 250);
        refused++;
    }
    HS_CHECK(refused == 6);
    /* each refusal is given a later slot than the one before, unless a whole token interval
     * passed between them (a very slow machine): never all the same hint */
    CU_ASSERT(hints[5] > hints[0] || hints[5] == 250);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A tenant's weight reaches the fair queue: with one worker busy, 3 jobs queued by "light"
 * (weight 1) and 3 by "heavy" (weight 3) afterwards, heavy's first three start before light's
 * last two. Checked through the order of the "job start" lines. */
static void test_adm_weight_from_config(void)
{
    const char *ov[] = {"pool.workers=1",
                        TENANTS("[tenant.heavy]\nweight = 3\n[tenant.light]\nweight = 1\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *held = NULL, *q[6] = {NULL};
    json_t *lines = NULL;
    HS_CHECK(s != NULL);
    held = hold_worker(s, "adm-w-0", "x");
    HS_CHECK(held != NULL);
    for (int i = 0; i < 6; i++) {
        char id[32], extra[64];
        snprintf(id, sizeof(id), "adm-w-%d", i + 1);
        snprintf(extra, sizeof(extra), "X-Tenant-Id: %s\r\n", i < 3 ? "light" : "heavy");
        struct hs_conn *c = hs_connect(s);
        HS_CHECK(c != NULL);
        q[i] = c;
        char req[256];
        snprintf(req, sizeof(req),
                 "POST /v1/jobs/spin?ms=30 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                 "X-Request-Id: %s\r\n%s\r\n",
                 id, extra);
        HS_CHECK(hs_send_str(c, req) == 0);
        struct hs_resp r = {0};
        HS_CHECK(hs_roundtrip(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
        hs_resp_fini(&r);
    }
    hs_close(held);
    held = NULL;
    for (int i = 0; i < 6; i++) {
        struct hs_resp r = {0};
        HS_CHECK(hs_read_response(q[i], &r, false, WAIT_MS) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
        hs_resp_fini(&r);
    }
    HS_CHECK(hs_log_wait_count(s, "job start", 7, WAIT_MS) >= 7);
    lines = hs_log_lines(s);
    HS_CHECK(lines != NULL);
    /* Position of each queued job among the start lines. */
    int order[6] = {-1, -1, -1, -1, -1, -1}, n = 0;
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        const char *m = hs_json_str(line, "msg"), *rid = hs_json_str(line, "request_id");
        int k;
        if (m == NULL || rid == NULL || strcmp(m, "job start") != 0 ||
            sscanf(rid, "adm-w-%d", &k) != 1 || k < 1 || k > 6)
            continue;
        order[k - 1] = n++;
    }
    HS_CHECK(n == 6);
    /* Deficit round robin: light's turn gives 1, heavy's turn 3. Light queued first. */
    int heavy_last = order[5], light_last = order[2];
    CU_ASSERT(heavy_last < light_last);
out:
    json_decref(lines);
    hs_close(held);
    for (int k = 0; k < 6; k++)
        hs_close(q[k]);
    HS_FINISH(s);
}

/* ---- the bounded tenant table ---------------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ADM_SANITIZED 1 /* freed memory is held back (quarantine, shadow): RSS says nothing */
#else
#define ADM_SANITIZED 0
#endif

#define ADM_RANDOM_TENANTS 100000
#define ADM_BATCH          200 /* pipelined requests per write */
#define ADM_CONNS          4

/* The server's resident set in KiB (VmRSS), -1 when unknown. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    }
    fclose(f);
    return kib;
}

/* Send `n` noop requests, each with a fresh random tenant id, pipelined in batches over the
 * connections, and read every answer. Returns how many were answered 200. */
static long random_tenants(struct hs_conn **c, long n)
{
    static char buf[ADM_BATCH * 160];
    long ok = 0;
    for (long done = 0; done < n;) {
        long batch[ADM_CONNS] = {0};
        for (int k = 0; k < ADM_CONNS && done < n; k++) {
            size_t len = 0;
            for (; batch[k] < ADM_BATCH && done < n; batch[k]++, done++) {
                uint64_t id[2];
                if (getrandom(id, sizeof(id), 0) != sizeof(id))
                    return -1;
                len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                                        "POST /v1/jobs/noop HTTP/1.1\r\nHost: t\r\n"
                                        "Content-Length: 0\r\nX-Tenant-Id: %016llx%016llx\r\n\r\n",
                                        (unsigned long long)id[0], (unsigned long long)id[1]);
            }
            if (hs_send(c[k], buf, len, HS_IO_MS) != 0)
                return -1;
        }
        for (int k = 0; k < ADM_CONNS; k++) {
            for (long i = 0; i < batch[k]; i++) {
                struct hs_resp r = {0};
                if (hs_read_response(c[k], &r, false, HS_IO_MS) != 0)
                    return -1;
                ok += r.status == 200;
                hs_resp_fini(&r);
            }
        }
    }
    return ok;
}

static void test_adm_random_tenants_bounded(void)
{
    const char *ov[] = {"log.level=info", "log.access=false", NULL}; /* default max_tenants */
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c[ADM_CONNS] = {NULL};
    HS_CHECK(s != NULL);
    for (int k = 0; k < ADM_CONNS; k++) {
        c[k] = hs_connect(s);
        HS_CHECK(c[k] != NULL);
    }
    /* Warm-up: allocator arenas, buffers and the table reach their working size. */
    HS_CHECK(random_tenants(c, 5000) == 5000);
    long before = rss_kib(hs_pid(s));
    HS_CHECK(before > 0);
    long n = ADM_RANDOM_TENANTS;
    long ok = random_tenants(c, n);
    CU_ASSERT_EQUAL(ok, n); /* idle tenants are evicted: no too_many_tenants */
    long after = rss_kib(hs_pid(s));
    printf("\n    rss before %ld KiB, after %ld random tenants %ld KiB%s ", before, n, after,
           ADM_SANITIZED ? " (sanitizer build: not checked)" : "");
    if (!ADM_SANITIZED)
        CU_ASSERT(after - before < 4 * 1024);
out:
    for (int k = 0; k < ADM_CONNS; k++)
        hs_close(c[k]);
    HS_FINISH(s);
}

/* When every entry of the table is busy, a new tenant is refused instead of growing it. */
static void test_adm_too_many_tenants(void)
{
    const char *ov[] = {"pool.workers=2", "limits.max_tenants=2", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *a = NULL, *b = NULL, *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    a = hold_worker(s, "adm-tm-1", "t1");
    HS_CHECK(a != NULL);
    b = hold_worker(s, "adm-tm-2", "t2");
    HS_CHECK(b != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: t3\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "too_many_tenants"));
    CU_ASSERT(retry_after(&r) >= 1);
    hs_close(a);
    a = NULL;
    json_t *line = hs_log_wait(s, "access", "request_id", "adm-tm-1", WAIT_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    json_decref(line);
    /* t1 is idle now: its entry makes room. */
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: t3\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(a);
    hs_close(b);
    hs_close(c);
    HS_FINISH(s);
}

/* The client's own think time between reading an answer and sending its next request (part of
 * the scenario, not a wait for the server). */
static void client_pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Refusals of tenant "slow" (0.1 token/s, so Retry-After 10) on one connection, each request
 * sent pause_ms[i] after the previous answer was read; returns the summary's retries_held. */
static long retries_held_after(const long *pause_ms, int n)
{
    const char *ov[] = {"server.retry_hold_ms=100",
                        TENANTS("[tenant.slow]\nrate = 0.1\nburst = 1\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    long held = -1;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200); /* the bucket's one token */
    for (int i = 0; i < n; i++) {
        client_pause_ms(pause_ms[i]);
        hs_resp_fini(&r);
        HS_CHECK(post_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
        CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    }
    hs_close(c);
    c = NULL;
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    line = hs_log_wait(s, "spindle stopped", NULL, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL(line);
    held = (long)hs_json_int(line, "retries_held", -1);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    hs_free(s);
    return held;
}

/* A retry storm from a client that needs a few milliseconds to react (as every client does on
 * a loaded machine) is held just like a pipelined one: a retry counts as instant when it comes
 * back within a second of the refusal, before any Retry-After (>= 1 s) could have passed.
 * Of the six refused requests, 2-4 are instant retries 1-3, and 4, 5 and 6 are held. */
static void test_adm_retry_storm_slow_client_held(void)
{
    const long pause[] = {0, 20, 20, 20, 20, 20};
    CU_ASSERT_EQUAL(retries_held_after(pause, 6), 3);
}

/* A client that waits more than a second after a refusal starts the count again. */
static void test_adm_retry_after_a_second_not_held(void)
{
    const long pause[] = {0, 20, 20, 1300, 20, 20};
    CU_ASSERT_EQUAL(retries_held_after(pause, 6), 0);
}

/* Runs cut short by a cancel do not lower the service-time estimate: after one 400 ms job, five
 * more are cancelled moments after they start (their clients leave); one job queued ahead of
 * 400 ms plus another 400 ms spin still cannot meet a 600 ms deadline. Counting the partial runs
 * had brought the average run (which stands for the jobs queued ahead) down to a fraction of
 * 400 ms, and the request was admitted. */
static void test_adm_cancelled_runs_not_estimates(void)
{
    const char *ov[] = {"pool.workers=1", NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *held = NULL, *queued = NULL, *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    HS_CHECK(post_exchange(c, "/v1/jobs/spin?ms=400", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof(id), "adm-cut-%d", i);
        held = hold_worker(s, id, "a"); /* running: its client leaves now */
        HS_CHECK(held != NULL);
        hs_close(held);
        held = NULL;
    }
    held = hold_worker(s, "adm-cut-hold", "a");
    HS_CHECK(held != NULL);
    queued = queue_job(s, "adm-cut-queued", "");
    HS_CHECK(queued != NULL);
    hs_resp_fini(&r);
    HS_CHECK(post_exchange(c, "/v1/jobs/spin?ms=400", "X-Timeout-Ms: 600\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "deadline_unmeetable"));
out:
    hs_resp_fini(&r);
    hs_close(held);
    hs_close(queued);
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_admission(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_adm_tenant_rate_limited),
        SPINDLE_TEST(test_adm_limits_defaults_from_config),
        SPINDLE_TEST(test_adm_tenant_concurrency_limited),
        SPINDLE_TEST(test_adm_queue_full_and_health),
        SPINDLE_TEST(test_adm_deadline_unmeetable),
        SPINDLE_TEST(test_adm_deadline_long_primes_then_short_noop),
        SPINDLE_TEST(test_adm_deadline_one_long_spin_then_plain),
        SPINDLE_TEST(test_adm_rate_limited_retry_after_ms),
        SPINDLE_TEST(test_adm_weight_from_config),
        SPINDLE_TEST(test_adm_too_many_tenants),
        SPINDLE_TEST(test_adm_random_tenants_bounded),
        SPINDLE_TEST(test_adm_retry_storm_held),
        SPINDLE_TEST(test_adm_retry_storm_slow_client_held),
        SPINDLE_TEST(test_adm_retry_after_a_second_not_held),
        SPINDLE_TEST(test_adm_cancelled_runs_not_estimates),
    };
    return SPINDLE_SUITE_ADD("integration_admission", NULL, NULL, tests);
}
