/* test_admission.c - admission control (server/admission/admission.c): every refusal with its
 * status, reason and Retry-After, the token bucket over fake time, in-flight release, the bounded
 * tenant table, reload, the limit set built from a configuration, the estimators and the refusal
 * counters. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server/admission/admission.h"
#include "tests/suite.h"

int suite_server_admission_admission(void);

#define MS  1000000ull
#define SEC 1000000000ull
#define T0  (1000 * SEC) /* an arbitrary start, far from 0 */

static struct srv_adm *adm_make(const struct srv_tenant_limits *defaults, size_t max_tenants,
                                size_t capacity, unsigned workers)
{
    struct srv_adm_limits *l = srv_adm_limits_new(defaults);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    struct srv_adm_config cfg = {
        .max_tenants = max_tenants, .queue_capacity = capacity, .workers = workers};
    struct srv_adm *a = srv_adm_new(&cfg, l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    return a;
}

static int decide(struct srv_adm *a, const char *tenant, uint64_t now, uint64_t deadline,
                  size_t depth, struct srv_adm_decision *d)
{
    struct srv_adm_req req = {
        .tenant = tenant, .now_ns = now, .deadline_ns = deadline, .queue_depth = depth};
    return srv_adm_decide(a, &req, d);
}

/* Admit and release at once: the request passes the bucket but does not stay in flight. */
static int admit_release(struct srv_adm *a, const char *tenant, uint64_t now)
{
    struct srv_adm_decision d;
    int rc = decide(a, tenant, now, 0, 0, &d);
    srv_adm_release(a, &d, now);
    return rc;
}

static void assert_refused(int rc, const struct srv_adm_decision *d, enum srv_adm_reason r,
                           int status, unsigned retry)
{
    CU_ASSERT_EQUAL(rc, -EAGAIN);
    CU_ASSERT_EQUAL(d->reason, r);
    CU_ASSERT_STRING_EQUAL(srv_adm_reason_name(d->reason), srv_adm_reason_name(r));
    CU_ASSERT_EQUAL(d->status, status);
    CU_ASSERT_EQUAL(d->retry_after_s, retry);
    CU_ASSERT_PTR_NULL(d->held);
}

static void test_srv_adm_reason_names_and_statuses(void)
{
    static const struct {
        enum srv_adm_reason r;
        const char *name;
        int status;
    } want[] = {
        {SRV_ADM_ADMITTED, "admitted", 0},
        {SRV_ADM_TENANT_RATE_LIMITED, "tenant_rate_limited", 429},
        {SRV_ADM_TENANT_CONCURRENCY_LIMITED, "tenant_concurrency_limited", 429},
        {SRV_ADM_QUEUE_FULL, "queue_full", 503},
        {SRV_ADM_DEADLINE_UNMEETABLE, "deadline_unmeetable", 503},
        {SRV_ADM_TOO_MANY_TENANTS, "too_many_tenants", 503},
        {SRV_ADM_OUT_OF_MEMORY, "out_of_memory", 503},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        CU_ASSERT_STRING_EQUAL(srv_adm_reason_name(want[i].r), want[i].name);
        CU_ASSERT_EQUAL(srv_adm_reason_status(want[i].r), want[i].status);
    }
    CU_ASSERT_PTR_NULL(srv_adm_reason_name(SRV_ADM_REASON_COUNT));
}

static void test_srv_adm_decide_admits_with_tenant_settings(void)
{
    struct srv_tenant_limits def = {.weight = 0};
    struct srv_tenant_limits gold = {.weight = 4, .max_timeout_ms = 500};
    struct srv_adm_limits *l = srv_adm_limits_new(&def);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "gold", &gold), 0);
    CU_ASSERT_TRUE(srv_adm_limits_configured(l, "gold"));
    CU_ASSERT_FALSE(srv_adm_limits_configured(l, "lead"));
    struct srv_adm_config cfg = {.max_tenants = 8};
    struct srv_adm *a = srv_adm_new(&cfg, l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);

    struct srv_adm_decision d;
    CU_ASSERT_EQUAL(decide(a, "gold", T0, T0 + 2 * SEC, 0, &d), 0);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_ADMITTED);
    CU_ASSERT_EQUAL(d.status, 0);
    CU_ASSERT_EQUAL(d.retry_after_s, 0);
    CU_ASSERT_EQUAL(d.weight, 4);
    CU_ASSERT_EQUAL(d.max_timeout_ms, 500);
    CU_ASSERT_EQUAL(d.deadline_ns, T0 + 500 * MS); /* capped by the tenant */
    CU_ASSERT_STRING_EQUAL(d.tenant_label, "gold");
    CU_ASSERT_PTR_NOT_NULL(d.held);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "gold"), 1);
    srv_adm_release(a, &d, T0);

    CU_ASSERT_EQUAL(decide(a, "lead", T0, T0 + 2 * SEC, 0, &d), 0);
    CU_ASSERT_EQUAL(d.weight, 1); /* 0 means 1 */
    CU_ASSERT_EQUAL(d.max_timeout_ms, 0);
    CU_ASSERT_EQUAL(d.deadline_ns, T0 + 2 * SEC); /* no tenant cap */
    CU_ASSERT_STRING_EQUAL(d.tenant_label, "other");
    srv_adm_release(a, &d, T0);

    CU_ASSERT_EQUAL(decide(a, "gold", T0, 0, 0, &d), 0);
    CU_ASSERT_EQUAL(d.deadline_ns, T0 + 500 * MS); /* no deadline: the cap becomes one */
    srv_adm_release(a, &d, T0);
    srv_adm_free(a);
}

static void test_srv_adm_decide_rejects_invalid_input(void)
{
    struct srv_tenant_limits def = {0}, bad = {.rate = -1};
    struct srv_adm *a = adm_make(&def, 4, 0, 1);
    struct srv_adm_decision d;
    char long_name[SRV_ADM_TENANT_MAX + 2];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    CU_ASSERT_EQUAL(decide(a, "", T0, 0, 0, &d), -EINVAL);
    CU_ASSERT_EQUAL(decide(a, NULL, T0, 0, 0, &d), -EINVAL);
    CU_ASSERT_EQUAL(decide(a, long_name, T0, 0, 0, &d), -EINVAL);
    long_name[SRV_ADM_TENANT_MAX] = '\0';
    CU_ASSERT_EQUAL(admit_release(a, long_name, T0), 0); /* exactly 64 bytes is fine */
    srv_adm_free(a);

    CU_ASSERT_PTR_NULL(srv_adm_limits_new(&bad));
    struct srv_adm_limits *l = srv_adm_limits_new(&def);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "other", &def), -EINVAL);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "", &def), -EINVAL);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "t", &bad), -EINVAL);
    CU_ASSERT_EQUAL(srv_adm_limits_set_default(l, &bad), -EINVAL);
    srv_adm_limits_free(l);
    struct srv_adm_config zero = {.max_tenants = 0};
    CU_ASSERT_PTR_NULL(srv_adm_new(&zero, srv_adm_limits_new(&def))); /* set freed by new */
}

static void test_srv_adm_decide_rate_limited_retry_after(void)
{
    struct srv_tenant_limits def = {.rate = 2, .burst = 3};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    struct srv_adm_decision d;
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(admit_release(a, "t", T0), 0);
    int rc = decide(a, "t", T0, 0, 0, &d);
    assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 1); /* 0.5 s rounds up to 1 */
    /* Half a second later one token has dripped in. */
    CU_ASSERT_EQUAL(admit_release(a, "t", T0 + 500 * MS), 0);
    CU_ASSERT_EQUAL(decide(a, "t", T0 + 500 * MS, 0, 0, &d), -EAGAIN);
    srv_adm_free(a);

    /* A slow bucket: 1 request per 4 s. */
    struct srv_tenant_limits slow = {.rate = 0.25, .burst = 1};
    a = adm_make(&slow, 8, 0, 1);
    CU_ASSERT_EQUAL(admit_release(a, "s", T0), 0);
    rc = decide(a, "s", T0, 0, 0, &d);
    assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 4);
    CU_ASSERT_EQUAL(d.retry_after_ms, 4000);
    /* The token at T0 + 4 s is promised to that refusal: the next one is given the one after,
     * but never more than one bucket (4 s) ahead. */
    rc = decide(a, "s", T0 + 1 * SEC, 0, 0, &d);
    assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 4);
    CU_ASSERT_EQUAL(d.retry_after_ms, 4000);
    srv_adm_free(a);

    /* Without promises outstanding the hint is the time to the next token. */
    a = adm_make(&slow, 8, 0, 1);
    CU_ASSERT_EQUAL(admit_release(a, "s", T0), 0);
    CU_ASSERT_EQUAL(admit_release(a, "s", T0 + 4 * SEC), 0);
    rc = decide(a, "s", T0 + 5 * SEC, 0, 0, &d); /* 0.25 token: 3 s to go */
    assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 3);
    CU_ASSERT_EQUAL(d.retry_after_ms, 3000);
    CU_ASSERT_EQUAL(admit_release(a, "s", T0 + 8 * SEC), 0);
    rc = decide(a, "s", T0 + 11500 * MS, 0, 0, &d); /* 0.875 token: 0.5 s to go, at least 1 */
    assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 1);
    CU_ASSERT_EQUAL(d.retry_after_ms, 500);
    CU_ASSERT_EQUAL(admit_release(a, "s", T0 + 12 * SEC), 0);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_TENANT_RATE_LIMITED, "other"), 2);
    srv_adm_free(a);
}

/* Rate 40/s: refusals at the same moment are given successive tokens 25 ms apart, so clients
 * that come back at their Retry-After-Ms find their token; Retry-After stays whole seconds. */
static void test_srv_adm_rate_limited_hints_spread_in_ms(void)
{
    struct srv_tenant_limits def = {.rate = 40, .burst = 10};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    struct srv_adm_decision d;
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(admit_release(a, "r", T0), 0);
    for (uint64_t k = 1; k <= 8; k++) {
        int rc = decide(a, "r", T0, 0, 0, &d);
        assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 1);
        CU_ASSERT_EQUAL(d.retry_after_ms, 25 * k);
    }
    /* each comes back at its hint and is admitted */
    for (uint64_t k = 1; k <= 8; k++)
        CU_ASSERT_EQUAL(admit_release(a, "r", T0 + 25 * k * MS), 0);
    /* a request arriving 5 ms after the last token waits 20 ms for the next one */
    int rc = decide(a, "r", T0 + 205 * MS, 0, 0, &d);
    assert_refused(rc, &d, SRV_ADM_TENANT_RATE_LIMITED, 429, 1);
    CU_ASSERT_EQUAL(d.retry_after_ms, 20);
    /* promises never reach further than one bucket (10 tokens, 250 ms) ahead */
    for (int i = 0; i < 100; i++)
        (void)decide(a, "r", T0 + 205 * MS, 0, 0, &d);
    CU_ASSERT_EQUAL(d.retry_after_ms, 250);
    srv_adm_free(a);
}

static void test_srv_adm_bucket_burst_and_refill(void)
{
    struct srv_tenant_limits def = {.rate = 1, .burst = 5};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    struct srv_adm_decision d;
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(admit_release(a, "b", T0), 0);
    CU_ASSERT_EQUAL(decide(a, "b", T0, 0, 0, &d), -EAGAIN);
    /* One second refills one token, not more. */
    CU_ASSERT_EQUAL(admit_release(a, "b", T0 + SEC), 0);
    CU_ASSERT_EQUAL(decide(a, "b", T0 + SEC, 0, 0, &d), -EAGAIN);
    /* A long pause refills up to the burst and no further. */
    uint64_t later = T0 + 100 * SEC;
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(admit_release(a, "b", later), 0);
    CU_ASSERT_EQUAL(decide(a, "b", later, 0, 0, &d), -EAGAIN);
    /* Unlimited rate: no bucket at all. */
    struct srv_tenant_limits open = {.rate = 0, .burst = 1};
    struct srv_adm_limits *l = srv_adm_limits_new(&open);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    srv_adm_limits_swap(a, l);
    for (int i = 0; i < 1000; i++)
        CU_ASSERT_EQUAL(admit_release(a, "b", later), 0);
    srv_adm_free(a);
}

static void test_srv_adm_decide_concurrency_limited_and_release(void)
{
    struct srv_tenant_limits def = {.max_inflight = 2};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    struct srv_adm_decision d1, d2, d3;
    CU_ASSERT_EQUAL(decide(a, "c", T0, 0, 0, &d1), 0);
    CU_ASSERT_EQUAL(decide(a, "c", T0, 0, 0, &d2), 0);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "c"), 2);
    int rc = decide(a, "c", T0, 0, 0, &d3);
    assert_refused(rc, &d3, SRV_ADM_TENANT_CONCURRENCY_LIMITED, 429, 1);
    /* Another tenant is not affected. */
    CU_ASSERT_EQUAL(decide(a, "other-tenant", T0, 0, 0, &d3), 0);
    srv_adm_release(a, &d3, T0);

    srv_adm_release(a, &d1, T0 + MS);
    CU_ASSERT_PTR_NULL(d1.held);
    srv_adm_release(a, &d1, T0 + MS); /* a second release is a no-op */
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "c"), 1);
    CU_ASSERT_EQUAL(decide(a, "c", T0 + MS, 0, 0, &d3), 0);
    CU_ASSERT_EQUAL(decide(a, "c", T0 + MS, 0, 0, &d1), -EAGAIN);

    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.inflight, 2);
    CU_ASSERT_EQUAL(st.admitted, 4);
    CU_ASSERT_EQUAL(st.refused, 2);
    srv_adm_release(a, &d2, T0 + MS);
    srv_adm_release(a, &d3, T0 + MS);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "c"), 0);
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.inflight, 0);
    srv_adm_free(a);
}

/* A request of N jobs (a batch) is decided as a whole: N tokens, N slots, N queue places. */
static void test_srv_adm_decide_jobs_all_or_nothing(void)
{
    struct srv_tenant_limits def = {.max_inflight = 5, .rate = 1, .burst = 4};
    struct srv_adm *a = adm_make(&def, 8, 10, 1);
    CU_ASSERT_EQUAL(srv_adm_max_jobs(a, "b"), 4); /* the burst is the smallest bound */
    struct srv_adm_req req = {.tenant = "b", .now_ns = T0, .queue_depth = 0, .jobs = 3};
    struct srv_adm_decision d1, d2;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &req, &d1), 0);
    CU_ASSERT_EQUAL(d1.held_jobs, 3);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "b"), 3);
    /* one token is left: a request of 2 is rate limited and takes nothing */
    req.jobs = 2;
    assert_refused(srv_adm_decide(a, &req, &d2), &d2, SRV_ADM_TENANT_RATE_LIMITED, 429, 1);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "b"), 3);
    /* 3 s later the bucket is full again; 3 in flight + 3 > 5 slots */
    req.now_ns = T0 + 3 * SEC;
    req.jobs = 3;
    assert_refused(srv_adm_decide(a, &req, &d2), &d2, SRV_ADM_TENANT_CONCURRENCY_LIMITED, 429, 1);
    req.jobs = 2;
    req.queue_depth = 9; /* 9 + 2 > 10 places */
    int rc = srv_adm_decide(a, &req, &d2);
    CU_ASSERT_EQUAL(rc, -EAGAIN);
    CU_ASSERT_EQUAL(d2.reason, SRV_ADM_QUEUE_FULL);
    req.queue_depth = 8;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &req, &d2), 0);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "b"), 5);
    /* release gives back every slot of the request at once */
    srv_adm_release(a, &d1, T0 + 3 * SEC);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "b"), 2);
    CU_ASSERT_EQUAL(d1.held_jobs, 0);
    srv_adm_release(a, &d2, T0 + 3 * SEC);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "b"), 0);
    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.inflight, 0);
    srv_adm_free(a);

    /* bounds: max_inflight, queue capacity, none */
    struct srv_tenant_limits only_inflight = {.max_inflight = 7};
    a = adm_make(&only_inflight, 8, 100, 1);
    CU_ASSERT_EQUAL(srv_adm_max_jobs(a, "x"), 7);
    srv_adm_free(a);
    struct srv_tenant_limits none = {0};
    a = adm_make(&none, 8, 50, 1);
    CU_ASSERT_EQUAL(srv_adm_max_jobs(a, "x"), 50);
    srv_adm_free(a);
    a = adm_make(&none, 8, 0, 1);
    CU_ASSERT_EQUAL(srv_adm_max_jobs(a, "x"), 0);
    srv_adm_free(a);
}

static void test_srv_adm_decide_queue_full_retry_after(void)
{
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 100, 4);
    struct srv_adm_decision d;
    CU_ASSERT_EQUAL(admit_release(a, "q", T0), 0);
    CU_ASSERT_EQUAL(decide(a, "q", T0, 0, 99, &d), 0);
    srv_adm_release(a, &d, T0);
    /* No completion seen yet: the drain rate is unknown, Retry-After is the minimum. */
    int rc = decide(a, "q", T0, 0, 100, &d);
    assert_refused(rc, &d, SRV_ADM_QUEUE_FULL, 503, 1);

    /* Ten completions 100 ms apart: 10 jobs/s, so 100 queued drain in 10 s. */
    for (int i = 0; i < 10; i++)
        srv_adm_observe(a, T0 + (uint64_t)i * 100 * MS, 0, 0);
    uint64_t now = T0 + 900 * MS;
    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT_DOUBLE_EQUAL(st.drain_per_s, 10.0, 1e-9);
    rc = decide(a, "q", now, 0, 100, &d);
    assert_refused(rc, &d, SRV_ADM_QUEUE_FULL, 503, 10);
    rc = decide(a, "q", now, 0, 5000, &d); /* 500 s clamps to 60 */
    assert_refused(rc, &d, SRV_ADM_QUEUE_FULL, 503, 60);
    srv_adm_free(a);

    /* A stalled pool: the open interval since the last completion counts, so the rate decays. */
    a = adm_make(&def, 8, 5, 1);
    for (int i = 0; i < 10; i++)
        srv_adm_observe(a, T0 + (uint64_t)i * 100 * MS, 0, 0);
    now = T0 + 900 * MS + 10 * SEC;
    /* interval = 0.2 * 10 s + 0.8 * 0.1 s = 2.08 s per job; 5 queued -> 10.4 s -> 11 */
    rc = decide(a, "q", now, 0, 5, &d);
    assert_refused(rc, &d, SRV_ADM_QUEUE_FULL, 503, 11);
    srv_adm_free(a);
}

static void test_srv_adm_drain_rate_counts_batched_completions(void)
{
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    /* Completions handed back four at a time, once a second: about 4 jobs/s. */
    for (uint64_t s = 0; s < 200; s++)
        for (int k = 0; k < 4; k++)
            srv_adm_observe(a, T0 + s * SEC, 0, 0);
    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT(st.drain_per_s > 2 && st.drain_per_s < 8);
    CU_ASSERT_EQUAL(st.completions, 800);
    srv_adm_free(a);
}

static void test_srv_adm_expected_wait_estimator(void)
{
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 0, 2);
    /* No evidence yet: no wait is expected, nothing is refused for a deadline. */
    CU_ASSERT_EQUAL(srv_adm_expected_wait_ns(a, 1000), 0);
    srv_adm_observe(a, T0, 30 * MS, 100 * MS); /* the first sample sets the averages */
    CU_ASSERT_EQUAL(srv_adm_expected_wait_ns(a, 0), 0);
    CU_ASSERT_EQUAL(srv_adm_expected_wait_ns(a, 10), 500 * MS); /* 100 ms * 10 / 2 workers */
    srv_adm_observe(a, T0, 50 * MS, 200 * MS);
    /* 0.2 * 200 + 0.8 * 100 = 120 ms per job */
    CU_ASSERT_EQUAL(srv_adm_expected_wait_ns(a, 10), 600 * MS);
    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT_DOUBLE_EQUAL(st.ewma_run_ns, 120e6, 1);
    CU_ASSERT_DOUBLE_EQUAL(st.ewma_wait_ns, 34e6, 1);
    srv_adm_free(a);
}

/* Run times are estimated per kind and size bucket: long primes say nothing about noop or about
 * small primes. */
static void test_srv_adm_run_estimate_by_kind_and_size(void)
{
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "primes", 4000000, T0), 0); /* no evidence */
    for (int i = 0; i < 5; i++)
        srv_adm_observe_job(a, "primes", 4000000, T0, 0, 500 * MS);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "primes", 4000000, T0), 500 * MS);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "primes", 4100000, T0), 500 * MS); /* same bucket */
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "primes", 10, T0), 0);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "primes", 8000000, T0), 0); /* a doubling away */
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "noop", 0, T0), 0);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, NULL, 0, T0), 500 * MS); /* overall */
    srv_adm_observe_job(a, "noop", 0, T0, 0, 20000);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "noop", 0, T0), 20000);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "primes", 4000000, T0), 500 * MS);
    /* a long kind name has no class of its own, only the overall average */
    char longname[SRV_ADM_KIND_MAX + 2];
    memset(longname, 'k', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    srv_adm_observe_job(a, longname, 0, T0, 0, MS);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, longname, 0, T0), 0);
    /* the table stays bounded: many sizes of many kinds replace the stalest classes */
    for (uint64_t i = 0; i < 4 * SRV_ADM_CLASSES; i++) {
        char kind[16];
        snprintf(kind, sizeof(kind), "k%llu", (unsigned long long)(i % 97));
        srv_adm_observe_job(a, kind, i * 1000, T0 + i, 0, MS);
    }
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "k53", 1023000, T0 + 1023), MS); /* the last */
    srv_adm_free(a);
}

/* An estimate fades with its age (half-life SRV_ADM_DECAY_HALF_LIFE_MS), and a fresh sample
 * outweighs a stale average. */
static void test_srv_adm_run_estimate_decays_with_time(void)
{
    const uint64_t half = (uint64_t)SRV_ADM_DECAY_HALF_LIFE_MS * MS;
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    srv_adm_observe_job(a, "spin", 1500, T0, 0, 1500 * MS);
    CU_ASSERT_EQUAL(srv_adm_run_estimate_ns(a, "spin", 1500, T0), 1500 * MS);
    uint64_t e = srv_adm_run_estimate_ns(a, "spin", 1500, T0 + half);
    CU_ASSERT(e > 749 * MS && e < 751 * MS);
    e = srv_adm_run_estimate_ns(a, NULL, 0, T0 + 6 * half);
    CU_ASSERT(e > 23 * MS && e < 24 * MS); /* 1500 / 64 */
    /* after 6 half-lives the old average keeps 0.8 / 64 of its weight */
    srv_adm_observe_job(a, "spin", 1500, T0 + 6 * half, 0, 100 * MS);
    e = srv_adm_run_estimate_ns(a, "spin", 1500, T0 + 6 * half);
    CU_ASSERT(e > 117 * MS && e < 119 * MS); /* 0.0125 * 1500 + 0.9875 * 100 = 117.5 */
    srv_adm_free(a);
}

/* The two recipes at the decision level: evidence of long jobs never refuses a short
 * deadline while a worker is idle and nothing is queued, nor refuses another kind for good. */
static void test_srv_adm_deadline_idle_worker_admits(void)
{
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 0, 2);
    struct srv_adm_decision d;
    for (int i = 0; i < 5; i++)
        srv_adm_observe_job(a, "primes", 4000000, T0, 0, 900 * MS);
    struct srv_adm_req noop = {.tenant = "t",
                               .now_ns = T0,
                               .deadline_ns = T0 + 300 * MS,
                               .kind = "noop",
                               .idle_workers = 2};
    CU_ASSERT_EQUAL(srv_adm_decide(a, &noop, &d), 0);
    srv_adm_release(a, &d, T0);
    /* even a job of the long class: a worker is idle and nothing is queued ahead */
    struct srv_adm_req big = noop;
    big.kind = "primes";
    big.cost = 4000000;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &big, &d), 0);
    srv_adm_release(a, &d, T0);
    /* busy workers, nothing queued: judged by its own class (noop: no evidence) */
    noop.idle_workers = big.idle_workers = 0;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &noop, &d), 0);
    srv_adm_release(a, &d, T0);
    CU_ASSERT_EQUAL(srv_adm_decide(a, &big, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_DEADLINE_UNMEETABLE);
    /* one queued ahead of 2 workers: 450 ms expected wait */
    noop.queue_depth = 1;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &noop, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_DEADLINE_UNMEETABLE);
    CU_ASSERT(d.retry_after_ms >= 1 && d.retry_after_s >= 1);
    /* one worker idle takes the queued job: the newcomer starts on the other */
    noop.idle_workers = 2;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &noop, &d), 0);
    srv_adm_release(a, &d, T0);
    /* a batch of 3 with 2 idle workers: judged by the overall average */
    struct srv_adm_req batch = {
        .tenant = "t", .now_ns = T0, .deadline_ns = T0 + 300 * MS, .jobs = 3, .idle_workers = 2};
    CU_ASSERT_EQUAL(srv_adm_decide(a, &batch, &d), -EAGAIN);
    batch.jobs = 2;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &batch, &d), 0);
    srv_adm_release(a, &d, T0);
    /* a deadline already past is refused all the same */
    noop.deadline_ns = T0;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &noop, &d), -EAGAIN);
    /* a minute later the old evidence has faded: the long class is admitted again */
    big.now_ns = T0 + 60 * SEC;
    big.deadline_ns = big.now_ns + 300 * MS;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &big, &d), 0);
    srv_adm_release(a, &d, big.now_ns);
    srv_adm_free(a);
}

static void test_srv_adm_jobs_ahead_follows_the_fair_queue(void)
{
    /* Unknown tenant mix: the whole queue is ahead. */
    struct srv_adm_req r = {.tenant = "b", .queue_depth = 100};
    CU_ASSERT_EQUAL(srv_adm_jobs_ahead(&r), 100);
    /* b has nothing queued, a floods: b joins a round of two, one job of a before it. */
    r.active_tenants = 1;
    CU_ASSERT_EQUAL(srv_adm_jobs_ahead(&r), 2);
    /* b has 3 queued among 4 active tenants: about 4 jobs per job of its own. */
    r.tenant_queue_depth = 3;
    r.active_tenants = 4;
    CU_ASSERT_EQUAL(srv_adm_jobs_ahead(&r), 16);
    /* never more than the whole queue */
    r.queue_depth = 10;
    CU_ASSERT_EQUAL(srv_adm_jobs_ahead(&r), 10);

    /* The light tenant's deadline is judged by its place, and must cover one run too. */
    struct srv_tenant_limits def = {0};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    srv_adm_observe(a, T0, 0, 100 * MS);
    struct srv_adm_req light = {"b", T0, T0 + 250 * MS, 100, 0, 1};
    struct srv_adm_decision d;
    /* 2 ahead: 200 ms of wait + 100 ms of its own run do not fit in 250 ms, but in 350 ms */
    CU_ASSERT_EQUAL(srv_adm_decide(a, &light, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_DEADLINE_UNMEETABLE);
    light.deadline_ns = T0 + 350 * MS;
    CU_ASSERT_EQUAL(srv_adm_decide(a, &light, &d), 0);
    srv_adm_release(a, &d, T0);
    struct srv_adm_req heavy = {"a", T0, T0 + 10 * SEC, 100, 100, 1};
    CU_ASSERT_EQUAL(srv_adm_decide(a, &heavy, &d), -EAGAIN); /* 100 ahead: 10 s + a run */
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_DEADLINE_UNMEETABLE);
    srv_adm_free(a);
}

static void test_srv_adm_decide_deadline_unmeetable(void)
{
    struct srv_tenant_limits def = {0};
    struct srv_tenant_limits quick = {.max_timeout_ms = 100};
    struct srv_adm_limits *l = srv_adm_limits_new(&def);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "quick", &quick), 0);
    struct srv_adm_config cfg = {.max_tenants = 8, .workers = 2};
    struct srv_adm *a = srv_adm_new(&cfg, l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    struct srv_adm_decision d;

    /* Before any completion even a deep queue is admitted. */
    CU_ASSERT_EQUAL(decide(a, "t", T0, T0 + MS, 1000, &d), 0);
    srv_adm_release(a, &d, T0);

    srv_adm_observe(a, T0, 0, 100 * MS); /* 10 queued / 2 workers * 100 ms = 500 ms */
    int rc = decide(a, "t", T0, T0 + 400 * MS, 10, &d);
    assert_refused(rc, &d, SRV_ADM_DEADLINE_UNMEETABLE, 503, 1);
    /* 500 ms of wait + 100 ms of run fit exactly, with no time in hand: refused; the wait is
     * taken a tenth longer, so 550 + 100 ms fit. */
    rc = decide(a, "t", T0, T0 + 600 * MS, 10, &d);
    assert_refused(rc, &d, SRV_ADM_DEADLINE_UNMEETABLE, 503, 1);
    CU_ASSERT_EQUAL(decide(a, "t", T0, T0 + 650 * MS, 10, &d), 0);
    srv_adm_release(a, &d, T0);
    CU_ASSERT_EQUAL(decide(a, "t", T0, 0, 10, &d), 0); /* no deadline, no check */
    srv_adm_release(a, &d, T0);
    /* A deadline already past is unmeetable even with an empty queue. */
    rc = decide(a, "t", T0, T0, 0, &d);
    assert_refused(rc, &d, SRV_ADM_DEADLINE_UNMEETABLE, 503, 1);
    /* The tenant's cap shortens the deadline: 100 ms left against 500 ms expected. */
    rc = decide(a, "quick", T0, T0 + 10 * SEC, 10, &d);
    assert_refused(rc, &d, SRV_ADM_DEADLINE_UNMEETABLE, 503, 1);
    CU_ASSERT_EQUAL(d.deadline_ns, T0 + 100 * MS);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_DEADLINE_UNMEETABLE, "quick"), 1);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_DEADLINE_UNMEETABLE, "other"), 3);
    srv_adm_free(a);
}

static void test_srv_adm_refusal_consumes_nothing(void)
{
    struct srv_tenant_limits def = {.rate = 1, .burst = 1, .max_inflight = 1};
    struct srv_adm *a = adm_make(&def, 8, 10, 1);
    struct srv_adm_decision d;
    /* Refused for the queue: the one token and the one slot are still there. */
    CU_ASSERT_EQUAL(decide(a, "n", T0, 0, 10, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_QUEUE_FULL);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "n"), 0);
    CU_ASSERT_EQUAL(decide(a, "n", T0, 0, 9, &d), 0);
    srv_adm_release(a, &d, T0);
    /* The checks run in order: rate before concurrency before queue. */
    struct srv_adm_decision held;
    CU_ASSERT_EQUAL(decide(a, "n", T0 + SEC, 0, 0, &held), 0);
    CU_ASSERT_EQUAL(decide(a, "n", T0 + SEC, 0, 10, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_TENANT_RATE_LIMITED);
    CU_ASSERT_EQUAL(decide(a, "n", T0 + 2 * SEC, 0, 10, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_TENANT_CONCURRENCY_LIMITED);
    srv_adm_release(a, &held, T0 + 2 * SEC);
    srv_adm_free(a);
}

static void test_srv_adm_decide_too_many_tenants(void)
{
    struct srv_tenant_limits def = {.max_inflight = 1};
    struct srv_adm *a = adm_make(&def, 2, 0, 1);
    struct srv_adm_decision da, db, dc;
    CU_ASSERT_EQUAL(decide(a, "a", T0, 0, 0, &da), 0);
    CU_ASSERT_EQUAL(decide(a, "b", T0, 0, 0, &db), 0);
    int rc = decide(a, "c", T0, 0, 0, &dc);
    assert_refused(rc, &dc, SRV_ADM_TOO_MANY_TENANTS, 503, 1);
    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.tenants, 2);
    /* Once "a" is idle (no bucket to refill) it makes room for "c". */
    srv_adm_release(a, &da, T0 + MS);
    CU_ASSERT_EQUAL(decide(a, "c", T0 + MS, 0, 0, &dc), 0);
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.tenants, 2);
    CU_ASSERT_EQUAL(st.evicted, 1);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "b"), 1);
    srv_adm_release(a, &db, T0 + MS);
    srv_adm_release(a, &dc, T0 + MS);
    srv_adm_free(a);
}

static void test_srv_adm_eviction_waits_for_a_full_bucket(void)
{
    struct srv_tenant_limits def = {.rate = 1, .burst = 2};
    struct srv_adm *a = adm_make(&def, 1, 0, 1);
    struct srv_adm_decision d;
    CU_ASSERT_EQUAL(admit_release(a, "a", T0), 0);
    CU_ASSERT_EQUAL(admit_release(a, "a", T0), 0); /* "a" is empty: full again at T0 + 2 s */
    /* Evicting "a" now would hand it a fresh burst: refused instead. */
    CU_ASSERT_EQUAL(decide(a, "b", T0 + SEC, 0, 0, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_TOO_MANY_TENANTS);
    CU_ASSERT_EQUAL(srv_adm_sweep(a, T0 + SEC), 0);
    CU_ASSERT_EQUAL(decide(a, "a", T0 + SEC, 0, 0, &d), 0); /* "a" kept its state: one token */
    srv_adm_release(a, &d, T0 + SEC);
    CU_ASSERT_EQUAL(decide(a, "a", T0 + SEC, 0, 0, &d), -EAGAIN);
    CU_ASSERT_EQUAL(d.reason, SRV_ADM_TENANT_RATE_LIMITED);
    /* Full at T0 + 3 s: evicted for "b". */
    CU_ASSERT_EQUAL(admit_release(a, "b", T0 + 3 * SEC), 0);
    struct srv_adm_stats st;
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.tenants, 1);
    CU_ASSERT_EQUAL(st.evicted, 1);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "a"), 0);
    CU_ASSERT_EQUAL(srv_adm_sweep(a, T0 + 3 * SEC + 999 * MS), 0); /* "b" took a token */
    CU_ASSERT_EQUAL(srv_adm_sweep(a, T0 + 4 * SEC), 1);
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.tenants, 0);
    srv_adm_free(a);
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_srv_adm_random_tenants_stay_bounded(void)
{
    enum { MAX = 1024, IDS = 100000, HELD = 100 };
    struct srv_tenant_limits def = {.rate = 10, .burst = 1, .max_inflight = 4};
    struct srv_adm *a = adm_make(&def, MAX, 0, 1);
    struct srv_adm_decision held[HELD];
    uint64_t seed = 0x9e3779b97f4a7c15ull, now = T0;
    size_t nheld = 0, admitted = 0, refused = 0, peak = 0;
    struct srv_adm_stats st;
    for (int i = 0; i < IDS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "t%016llx", (unsigned long long)xorshift(&seed));
        now += 50000; /* 50 us apart: buckets refill in 100 ms, so ~2000 are never idle yet */
        struct srv_adm_decision d;
        int rc = decide(a, id, now, 0, 0, &d);
        if (rc == 0) {
            admitted++;
            if (nheld < HELD && i % 97 == 0)
                held[nheld++] = d; /* a few stay in flight throughout */
            else
                srv_adm_release(a, &d, now);
        } else {
            CU_ASSERT_EQUAL(rc, -EAGAIN);
            CU_ASSERT_EQUAL(d.reason, SRV_ADM_TOO_MANY_TENANTS);
            refused++;
        }
        srv_adm_stats_get(a, &st);
        if (st.tenants > peak)
            peak = st.tenants;
    }
    CU_ASSERT(peak <= MAX);
    CU_ASSERT_EQUAL(peak, MAX);
    CU_ASSERT_EQUAL(admitted + refused, IDS);
    CU_ASSERT(refused > 0); /* tenants whose bucket is not full yet were never evicted */
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.evicted, admitted - st.tenants);
    CU_ASSERT_EQUAL(st.inflight, nheld);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_TOO_MANY_TENANTS, "other"), refused);
    /* Everything idle goes: only the held tenants stay, then none. */
    srv_adm_sweep(a, now + SEC);
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.tenants, nheld);
    for (size_t i = 0; i < nheld; i++)
        srv_adm_release(a, &held[i], now + SEC);
    srv_adm_sweep(a, now + 2 * SEC);
    srv_adm_stats_get(a, &st);
    CU_ASSERT_EQUAL(st.tenants, 0);
    CU_ASSERT_EQUAL(st.inflight, 0);
    srv_adm_free(a);
}

static void test_srv_adm_limits_swap_keeps_inflight(void)
{
    struct srv_tenant_limits def = {.max_inflight = 2, .rate = 100, .burst = 10};
    struct srv_adm *a = adm_make(&def, 8, 0, 1);
    struct srv_adm_decision d[4];
    CU_ASSERT_EQUAL(decide(a, "r", T0, 0, 0, &d[0]), 0);
    CU_ASSERT_EQUAL(decide(a, "r", T0, 0, 0, &d[1]), 0);
    CU_ASSERT_STRING_EQUAL(d[0].tenant_label, "other");

    /* Reload: "r" is now configured with 3 slots and a bucket of 1. */
    struct srv_tenant_limits r3 = {.max_inflight = 3, .rate = 100, .burst = 1, .weight = 7};
    struct srv_adm_limits *l = srv_adm_limits_new(&def);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "r", &r3), 0);
    srv_adm_limits_swap(a, l);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "r"), 2);
    CU_ASSERT_EQUAL(decide(a, "r", T0, 0, 0, &d[2]), 0);
    CU_ASSERT_EQUAL(d[2].weight, 7);
    CU_ASSERT_STRING_EQUAL(d[2].tenant_label, "r");
    CU_ASSERT_EQUAL(decide(a, "r", T0, 0, 0, &d[3]), -EAGAIN);
    /* The bucket (8 tokens left) was clamped to 1, which the third request took. */
    CU_ASSERT_EQUAL(d[3].reason, SRV_ADM_TENANT_RATE_LIMITED);
    CU_ASSERT_EQUAL(decide(a, "r", T0 + SEC, 0, 0, &d[3]), -EAGAIN);
    CU_ASSERT_EQUAL(d[3].reason, SRV_ADM_TENANT_CONCURRENCY_LIMITED);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_TENANT_CONCURRENCY_LIMITED, "r"), 1);

    /* Reload again, down to 1 slot: the 3 in flight stay counted and finish normally. */
    struct srv_tenant_limits r1 = {.max_inflight = 1};
    l = srv_adm_limits_new(&def);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "r", &r1), 0);
    srv_adm_limits_swap(a, l);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "r"), 3);
    srv_adm_release(a, &d[0], T0 + SEC);
    srv_adm_release(a, &d[1], T0 + SEC);
    CU_ASSERT_EQUAL(decide(a, "r", T0 + SEC, 0, 0, &d[0]), -EAGAIN);
    srv_adm_release(a, &d[2], T0 + SEC);
    CU_ASSERT_EQUAL(srv_adm_tenant_inflight(a, "r"), 0);
    CU_ASSERT_EQUAL(decide(a, "r", T0 + SEC, 0, 0, &d[0]), 0);
    srv_adm_release(a, &d[0], T0 + SEC);
    /* Counters survive reloads. */
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_TENANT_CONCURRENCY_LIMITED, "r"), 2);
    srv_adm_free(a);
}

struct collected {
    char lines[16][96];
    size_t n;
};

static void collect(const char *reason, const char *label, uint64_t count, void *arg)
{
    struct collected *c = arg;
    if (c->n < 16)
        snprintf(c->lines[c->n++], sizeof(c->lines[0]), "%s/%s=%llu", reason, label,
                 (unsigned long long)count);
}

static void test_srv_adm_refusals_by_reason_and_label(void)
{
    struct srv_tenant_limits def = {.max_inflight = 1};
    struct srv_tenant_limits gold = {.max_inflight = 1};
    struct srv_adm_limits *l = srv_adm_limits_new(&def);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(srv_adm_limits_set_tenant(l, "gold", &gold), 0);
    struct srv_adm_config cfg = {.max_tenants = 16, .queue_capacity = 4};
    struct srv_adm *a = srv_adm_new(&cfg, l);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    struct srv_adm_decision g, x, y, d;
    CU_ASSERT_EQUAL(decide(a, "gold", T0, 0, 0, &g), 0);
    CU_ASSERT_EQUAL(decide(a, "x1", T0, 0, 0, &x), 0);
    CU_ASSERT_EQUAL(decide(a, "x2", T0, 0, 0, &y), 0);
    CU_ASSERT_EQUAL(decide(a, "gold", T0, 0, 0, &d), -EAGAIN);
    CU_ASSERT_EQUAL(decide(a, "x1", T0, 0, 0, &d), -EAGAIN);
    CU_ASSERT_EQUAL(decide(a, "x2", T0, 0, 0, &d), -EAGAIN);
    CU_ASSERT_STRING_EQUAL(d.tenant_label, "other");
    CU_ASSERT_EQUAL(decide(a, "x3", T0, 0, 4, &d), -EAGAIN);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_TENANT_CONCURRENCY_LIMITED, "gold"), 1);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_TENANT_CONCURRENCY_LIMITED, "other"), 2);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_QUEUE_FULL, "other"), 1);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_QUEUE_FULL, "gold"), 0);
    CU_ASSERT_EQUAL(srv_adm_refusals(a, SRV_ADM_QUEUE_FULL, "x1"), 0); /* not a label */

    struct collected c = {.n = 0};
    srv_adm_refusals_foreach(a, collect, &c);
    CU_ASSERT_EQUAL_FATAL(c.n, 3);
    CU_ASSERT_STRING_EQUAL(c.lines[0], "tenant_concurrency_limited/other=2");
    CU_ASSERT_STRING_EQUAL(c.lines[1], "tenant_concurrency_limited/gold=1");
    CU_ASSERT_STRING_EQUAL(c.lines[2], "queue_full/other=1");
    srv_adm_release(a, &g, T0);
    srv_adm_release(a, &x, T0);
    srv_adm_release(a, &y, T0);
    srv_adm_free(a);
}

static void cfg_set(struct srv_cfg *c, const char *section, const char *key, const char *value)
{
    char err[256];
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(c, section, key, value, "test", err, sizeof(err)), 0);
}

/* The limit set holds every [tenant.NAME] section with its effective limits. */
static void test_srv_adm_limits_from_cfg(void)
{
    struct srv_cfg c;
    srv_cfg_defaults(&c);
    cfg_set(&c, "limits", "max_inflight", "20");
    cfg_set(&c, "limits", "weight", "5");
    cfg_set(&c, "tenant.gold", "weight", "8");
    cfg_set(&c, "tenant.b-2_x.y", "max_inflight", "1");
    cfg_set(&c, "tenant.b-2_x.y", "rate", "0.5");
    struct srv_adm_limits *al = srv_adm_limits_from_cfg(&c);
    CU_ASSERT_FATAL(al != NULL);
    CU_ASSERT(srv_adm_limits_configured(al, "gold"));
    CU_ASSERT(srv_adm_limits_configured(al, "b-2_x.y"));
    CU_ASSERT(!srv_adm_limits_configured(al, "stranger"));
    CU_ASSERT_EQUAL(srv_adm_limits_get(al, "gold")->weight, 8);
    CU_ASSERT_EQUAL(srv_adm_limits_get(al, "gold")->max_inflight, 20);
    CU_ASSERT_EQUAL(srv_adm_limits_get(al, "b-2_x.y")->max_inflight, 1);
    CU_ASSERT_EQUAL(srv_adm_limits_get(al, "b-2_x.y")->burst, 1);
    CU_ASSERT_EQUAL(srv_adm_limits_get(al, "stranger")->weight, 5);
    CU_ASSERT_EQUAL(srv_adm_limits_get(al, "stranger")->max_inflight, 20);
    srv_adm_limits_free(al);
}

int suite_server_admission_admission(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_adm_reason_names_and_statuses),
        SPINDLE_TEST(test_srv_adm_decide_admits_with_tenant_settings),
        SPINDLE_TEST(test_srv_adm_decide_rejects_invalid_input),
        SPINDLE_TEST(test_srv_adm_decide_rate_limited_retry_after),
        SPINDLE_TEST(test_srv_adm_bucket_burst_and_refill),
        SPINDLE_TEST(test_srv_adm_decide_concurrency_limited_and_release),
        SPINDLE_TEST(test_srv_adm_decide_jobs_all_or_nothing),
        SPINDLE_TEST(test_srv_adm_decide_queue_full_retry_after),
        SPINDLE_TEST(test_srv_adm_drain_rate_counts_batched_completions),
        SPINDLE_TEST(test_srv_adm_expected_wait_estimator),
        SPINDLE_TEST(test_srv_adm_run_estimate_by_kind_and_size),
        SPINDLE_TEST(test_srv_adm_run_estimate_decays_with_time),
        SPINDLE_TEST(test_srv_adm_deadline_idle_worker_admits),
        SPINDLE_TEST(test_srv_adm_rate_limited_hints_spread_in_ms),
        SPINDLE_TEST(test_srv_adm_jobs_ahead_follows_the_fair_queue),
        SPINDLE_TEST(test_srv_adm_decide_deadline_unmeetable),
        SPINDLE_TEST(test_srv_adm_refusal_consumes_nothing),
        SPINDLE_TEST(test_srv_adm_decide_too_many_tenants),
        SPINDLE_TEST(test_srv_adm_eviction_waits_for_a_full_bucket),
        SPINDLE_TEST(test_srv_adm_random_tenants_stay_bounded),
        SPINDLE_TEST(test_srv_adm_limits_swap_keeps_inflight),
        SPINDLE_TEST(test_srv_adm_refusals_by_reason_and_label),
        SPINDLE_TEST(test_srv_adm_limits_from_cfg),
    };
    return SPINDLE_SUITE_ADD("server_admission_admission", NULL, NULL, tests);
}
