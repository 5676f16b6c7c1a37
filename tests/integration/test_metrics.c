/* test_metrics.c - GET /metrics end to end: the exposition checked line by line by the strict
 * checker (tests/unit/promcheck.h), every family of spindle present, counters and histograms
 * moving as requests are made, gauges reading live figures, and tenant labels bounded to the
 * configured tenants plus "other".
 *
 * Design: each test starts its own server (harness.h), scrapes, makes requests whose effect on
 * the figures is known, and scrapes again. Samples are looked up by their exact text
 * ("name{labels}") in the scraped body. The checker lives with the unit tests; it is plain C with
 * no test framework, and is compiled into this file so the integration binary has it too. Tenant
 * sections go through the harness as in test_admission.c (appended to the log.access value).
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/unit/promcheck.c"
#include "tests/unit/promcheck.h"
#include "tests/suite.h"

int suite_integration_metrics(void);

#define TENANTS(text) "log.access=true\n\n" text

static const char *const met_families[] = {
    "spindle_http_requests_total",
    "spindle_inflight_requests",
    "spindle_queue_depth",
    "spindle_tenant_queue_depth",
    "spindle_refusals_total",
    "spindle_job_wait_seconds",
    "spindle_job_run_seconds",
    "spindle_loop_lag_seconds",
    "spindle_loop_utilization",
    "spindle_open_connections",
    "spindle_log_lines_total",
    "spindle_log_waits_total",
    "spindle_log_dropped_total",
    "spindle_batch_jobs_total",
    "spindle_build_info",
    "spindle_queue_capacity",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
};

/* ---- helpers --------------------------------------------------------------------------------- */

/* GET /metrics on `c`; checks status, Content-Type and the format. Returns the body (caller
 * frees) or NULL. */
static char *scrape(struct hs_conn *c)
{
    struct hs_resp r = {0};
    char ctype[128], err[256] = "";
    char *body = NULL;
    if (hs_exchange(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) != 0)
        goto out;
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(hs_resp_header(&r, "Content-Type", ctype, sizeof(ctype)) &&
              strcmp(ctype, "text/plain; version=0.0.4; charset=utf-8") == 0);
    int rc = promcheck(r.body, r.body_len, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\n  promcheck: %s\n", err);
    CU_ASSERT_EQUAL(rc, 0);
    if (r.status == 200)
        body = strdup(r.body);
out:
    hs_resp_fini(&r);
    return body;
}

/* The value of the sample written exactly as `series` ("name" or "name{a=\"b\"}"), or NAN. */
static double sample(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

static int post(struct hs_conn *c, const char *target, const char *extra, struct hs_resp *r)
{
    char req[512];
    snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n%s\r\n", target,
             extra);
    return hs_exchange(c, req, r);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_metrics_format_and_families(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *body = NULL;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    body = scrape(c);
    HS_CHECK(body != NULL);
    for (size_t i = 0; i < sizeof(met_families) / sizeof(met_families[0]); i++) {
        char type[128];
        snprintf(type, sizeof(type), "# TYPE %s ", met_families[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(body, type));
    }
    /* Figures read at scrape time: this connection is open; nothing queued or in flight. */
    CU_ASSERT(sample(body, "spindle_open_connections") >= 1);
    CU_ASSERT_EQUAL(sample(body, "spindle_queue_depth"), 0);
    CU_ASSERT_EQUAL(sample(body, "spindle_inflight_requests"), 0);
    CU_ASSERT_EQUAL(sample(body, "spindle_tenant_queue_depth{tenant=\"other\"}"), 0);
    double util = sample(body, "spindle_loop_utilization");
    CU_ASSERT(util >= 0 && util <= 1);
    CU_ASSERT(sample(body, "spindle_loop_lag_seconds") >= 0);
    CU_ASSERT(sample(body, "spindle_log_lines_total") > 0); /* start-up lines at least */
    /* HEAD: the headers of the GET answer, no body. */
    HS_CHECK(hs_exchange(c, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(r.body_len, 0);
    /* Other methods are not allowed. */
    HS_CHECK(hs_exchange(c, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) ==
             0);
    CU_ASSERT(hs_resp_is_error(&r, 405, "method_not_allowed"));
out:
    free(body);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_metrics_counters_move(void)
{
    const char *ov[] = {TENANTS("[tenant.slow]\nrate = 0.01\nburst = 1\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *b0 = NULL, *b1 = NULL;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    b0 = scrape(c);
    HS_CHECK(b0 != NULL);
    for (int i = 0; i < 3; i++) {
        HS_CHECK(post(c, "/v1/jobs/spin?ms=2", "", &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
    HS_CHECK(post(c, "/v1/jobs/spin?ms=abc", "", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 400);
    HS_CHECK(post(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(post(c, "/v1/jobs/noop", "X-Tenant-Id: slow\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    /* Routes outside the job API count too; a path no route matched counts as "other". */
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(hs_exchange(c, "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 404);
    b1 = scrape(c);
    HS_CHECK(b1 != NULL);

    const char *spin200 = "spindle_http_requests_total{route=\"/v1/jobs/spin\",status=\"200\"}";
    const char *spin400 = "spindle_http_requests_total{route=\"/v1/jobs/spin\",status=\"400\"}";
    const char *noop429 = "spindle_http_requests_total{route=\"/v1/jobs/noop\",status=\"429\"}";
    const char *met200 = "spindle_http_requests_total{route=\"/metrics\",status=\"200\"}";
    CU_ASSERT(isnan(sample(b0, spin200)));
    CU_ASSERT_EQUAL(sample(b1, spin200), 3);
    CU_ASSERT_EQUAL(sample(b1, spin400), 1);
    CU_ASSERT_EQUAL(sample(b1, noop429), 1);
    /* A scrape is counted once its answer is written: the next scrape shows it. */
    double met0 = sample(b0, met200);
    CU_ASSERT_EQUAL(sample(b1, met200), (isnan(met0) ? 0 : met0) + 1);
    CU_ASSERT_EQUAL(sample(b1, "spindle_http_requests_total{route=\"/healthz\",status=\"200\"}"),
                    1);
    CU_ASSERT_EQUAL(sample(b1, "spindle_http_requests_total{route=\"other\",status=\"404\"}"), 1);
    CU_ASSERT_EQUAL(
        sample(b1, "spindle_refusals_total{reason=\"tenant_rate_limited\",tenant=\"slow\"}"), 1);
    /* Histograms by kind: three spins ran, each at least 2 ms. */
    CU_ASSERT_EQUAL(sample(b1, "spindle_job_run_seconds_count{kind=\"spin\"}"), 3);
    CU_ASSERT(sample(b1, "spindle_job_run_seconds_sum{kind=\"spin\"}") >= 0.006);
    CU_ASSERT_EQUAL(sample(b1, "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.001\"}"), 0);
    CU_ASSERT_EQUAL(sample(b1, "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"+Inf\"}"), 3);
    CU_ASSERT_EQUAL(sample(b1, "spindle_job_wait_seconds_count{kind=\"spin\"}"), 3);
    CU_ASSERT_EQUAL(sample(b1, "spindle_job_wait_seconds_count{kind=\"noop\"}"), 1);
    CU_ASSERT(sample(b1, "spindle_log_lines_total") > sample(b0, "spindle_log_lines_total"));
    CU_ASSERT_EQUAL(sample(b1, "spindle_log_dropped_total"), 0);
    /* The configured tenant has its own queue depth series from the start. */
    CU_ASSERT_EQUAL(sample(b0, "spindle_tenant_queue_depth{tenant=\"slow\"}"), 0);
out:
    free(b0);
    free(b1);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Every tenant="..." label value of the body is "other" or one of `allowed`. */
static bool tenant_labels_within(const char *body, const char *const *allowed, size_t n)
{
    for (const char *p = strstr(body, "tenant=\""); p != NULL; p = strstr(p + 1, "tenant=\"")) {
        const char *v = p + 8, *end = strchr(v, '"');
        if (end == NULL)
            return false;
        size_t len = (size_t)(end - v);
        bool ok = len == 5 && strncmp(v, "other", 5) == 0;
        for (size_t i = 0; i < n && !ok; i++)
            ok = strlen(allowed[i]) == len && strncmp(v, allowed[i], len) == 0;
        if (!ok) {
            fprintf(stderr, "\n  unexpected tenant label %.*s\n", (int)len, v);
            return false;
        }
    }
    return true;
}

static void test_metrics_tenant_labels_bounded(void)
{
    /* Every tenant may start one request per 100 s: each second request is refused. */
    const char *ov[] = {"limits.rate=0.01", "limits.burst=1", TENANTS("[tenant.gold]\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *body = NULL;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    for (int i = 0; i < 200; i++) {
        char extra[64];
        snprintf(extra, sizeof(extra), "X-Tenant-Id: rnd-%d\r\n", i);
        for (int k = 0; k < 2; k++) {
            HS_CHECK(post(c, "/v1/jobs/noop", extra, &r) == 0);
            CU_ASSERT_EQUAL(r.status, k == 0 ? 200 : 429);
        }
    }
    HS_CHECK(post(c, "/v1/jobs/noop", "X-Tenant-Id: gold\r\n", &r) == 0);
    HS_CHECK(post(c, "/v1/jobs/noop", "X-Tenant-Id: gold\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 429);
    body = scrape(c);
    HS_CHECK(body != NULL);
    const char *allowed[] = {"gold"};
    CU_ASSERT(tenant_labels_within(body, allowed, 1));
    CU_ASSERT_EQUAL(
        sample(body, "spindle_refusals_total{reason=\"tenant_rate_limited\",tenant=\"other\"}"),
        200);
    CU_ASSERT_EQUAL(
        sample(body, "spindle_refusals_total{reason=\"tenant_rate_limited\",tenant=\"gold\"}"), 1);
out:
    free(body);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Gauges follow the pool: a running job is in flight, a queued one shows in the queue depth of
 * its tenant. */
static void test_metrics_gauges_live(void)
{
    const char *ov[] = {"pool.workers=1", TENANTS("[tenant.gold]\n"), NULL};
    struct hs_server *s = hs_start(ov);
    struct hs_conn *run = NULL, *queued = NULL, *c = NULL;
    struct hs_resp r = {0};
    char *body = NULL;
    HS_CHECK(s != NULL);
    run = hs_connect(s);
    HS_CHECK(run != NULL);
    HS_CHECK(hs_send_str(run, "POST /v1/jobs/spin?ms=20000 HTTP/1.1\r\nHost: t\r\n"
                              "Content-Length: 0\r\nX-Request-Id: met-g-1\r\n\r\n") == 0);
    json_t *line = hs_log_wait(s, "job start", "request_id", "met-g-1", 5000);
    HS_CHECK(line != NULL);
    json_decref(line);
    queued = hs_connect(s);
    HS_CHECK(queued != NULL);
    HS_CHECK(hs_send_str(queued, "POST /v1/jobs/spin?ms=20000 HTTP/1.1\r\nHost: t\r\n"
                                 "Content-Length: 0\r\nX-Tenant-Id: gold\r\n\r\n") == 0);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    /* The queued request reaches the loop before this connection's first request does. */
    long long end = hs_now_ms() + 5000;
    do {
        free(body);
        body = scrape(c);
        HS_CHECK(body != NULL);
    } while (sample(body, "spindle_queue_depth") < 1 && hs_now_ms() < end);
    CU_ASSERT_EQUAL(sample(body, "spindle_queue_depth"), 1);
    CU_ASSERT_EQUAL(sample(body, "spindle_tenant_queue_depth{tenant=\"gold\"}"), 1);
    CU_ASSERT_EQUAL(sample(body, "spindle_tenant_queue_depth{tenant=\"other\"}"), 0);
    CU_ASSERT_EQUAL(sample(body, "spindle_inflight_requests"), 2);
    CU_ASSERT(sample(body, "spindle_open_connections") >= 3);
out:
    free(body);
    hs_resp_fini(&r);
    hs_close(run);
    hs_close(queued);
    hs_close(c);
    HS_FINISH(s);
}

/* A loop that is kept busy shows it: utilisation rises while requests keep coming. */
static void test_metrics_loop_figures(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *body = NULL;
    HS_CHECK(s != NULL);
    c = hs_connect(s);
    HS_CHECK(c != NULL);
    /* Two windows of back-to-back requests (about 2.2 s), bounded by a request count too. */
    long long end = hs_now_ms() + 2200;
    for (int i = 0; i < 200000 && hs_now_ms() < end; i++)
        HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    body = scrape(c);
    HS_CHECK(body != NULL);
    double util = sample(body, "spindle_loop_utilization");
    double lag = sample(body, "spindle_loop_lag_seconds");
    CU_ASSERT(util > 0 && util <= 1);
    CU_ASSERT(lag >= 0 && lag < 1);
out:
    free(body);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_metrics(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_metrics_format_and_families),   SPINDLE_TEST(test_metrics_counters_move),
        SPINDLE_TEST(test_metrics_tenant_labels_bounded), SPINDLE_TEST(test_metrics_gauges_live),
        SPINDLE_TEST(test_metrics_loop_figures),
    };
    return SPINDLE_SUITE_ADD("integration_metrics", NULL, NULL, tests);
}
