/* test_primes.c - the primes job kind (server/jobs/primes.c): parameters, counts against
 * known values and an independent sieve, the answer, and cancellation before and during a run. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "server/jobs/internal.h"
#include "server/jobs/jobs.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_jobs_primes(void);

static void test_primes_parse_accepts(void)
{
    const struct srv_kind *k = jt_kind("primes");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param zero[] = {JT_P("n", "0")};
    jt_free(jt_parse_ok(k, zero, 1, NULL, 0, &cfg));
    struct srv_job_param max[] = {JT_P("n", "100000000")};
    jt_free(jt_parse_ok(k, max, 1, "ignored", 7, &cfg));
}

static void test_primes_parse_rejects(void)
{
    const struct srv_kind *k = jt_kind("primes");
    struct srv_cfg cfg = jt_limits();
    const char *range = "n must be an integer between 0 and 100000000";

    jt_parse_err(k, NULL, 0, NULL, 0, &cfg, "missing required parameter 'n'");
    struct srv_job_param over[] = {JT_P("n", "100000001")};
    jt_parse_err(k, over, 1, NULL, 0, &cfg, range);
    struct srv_job_param ovf[] = {JT_P("n", "36893488147419103232")};
    jt_parse_err(k, ovf, 1, NULL, 0, &cfg, range);
    struct srv_job_param neg[] = {JT_P("n", "-1")};
    jt_parse_err(k, neg, 1, NULL, 0, &cfg, range);
    struct srv_job_param sp[] = {JT_P("n", "10 ")};
    jt_parse_err(k, sp, 1, NULL, 0, &cfg, range);
    struct srv_job_param dup[] = {JT_P("n", "10"), JT_P("n", "20")};
    jt_parse_err(k, dup, 2, NULL, 0, &cfg, "duplicate parameter 'n'");
    struct srv_job_param unk[] = {JT_P("N", "10")};
    jt_parse_err(k, unk, 1, NULL, 0, &cfg, "unknown parameter 'N'");

    cfg.max_primes_n = 1000;
    struct srv_job_param big[] = {JT_P("n", "1001")};
    jt_parse_err(k, big, 1, NULL, 0, &cfg, "n must be an integer between 0 and 1000");
}

/* primes?n=<n> through parse, run and answer; checks the answer's shape, returns count. */
static long long primes_count(unsigned long n)
{
    const struct srv_kind *k = jt_kind("primes");
    struct srv_cfg cfg = jt_limits();
    char val[32];
    struct srv_job_answer ans;
    long long count = -1;

    int len = snprintf(val, sizeof(val), "%lu", n);
    struct srv_job_param p = {"n", val, 1, (size_t)len};
    void *st = jt_parse_ok(k, &p, 1, NULL, 0, &cfg);
    CU_ASSERT_EQUAL_FATAL(jt_run(k, st, false, NULL), 0);
    char *s = jt_answer_str(k, st, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_STRING_EQUAL(ans.content_type, "application/json");
    json_t *j = json_loads(s, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL(j);
    if (j != NULL) {
        CU_ASSERT_EQUAL(json_object_size(j), 2);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "n")), (json_int_t)n);
        count = json_integer_value(json_object_get(j, "count"));
        json_decref(j);
    }
    free(s);
    jt_free(st);
    return count;
}

static void test_primes_run_small_n(void)
{
    static const struct {
        unsigned long n;
        long long count;
    } cases[] = {{0, 0}, {1, 0},  {2, 1},  {3, 2},   {4, 2},    {5, 3},    {8, 4},
                 {9, 4}, {10, 4}, {25, 9}, {49, 15}, {100, 25}, {121, 30}, {1000, 168}};
    for (size_t i = 0; i < JT_N(cases); i++)
        CU_ASSERT_EQUAL(primes_count(cases[i].n), cases[i].count);
}

static void test_primes_run_reference_values(void)
{
    CU_ASSERT_EQUAL(primes_count(100000), 9592);
    CU_ASSERT_EQUAL(primes_count(200000), 17984);
}

/* The count for every n up to 3000 equals an independent sieve of Eratosthenes. */
static void test_primes_run_matches_sieve(void)
{
    enum { MAX = 3000 };
    static bool composite[MAX + 1];
    long long count = 0;
    for (unsigned long i = 2; i <= MAX; i++) {
        if (composite[i])
            continue;
        for (unsigned long m = i * i; m <= MAX; m += i)
            composite[m] = true;
    }
    for (unsigned long n = 0; n <= MAX; n++) {
        if (n >= 2 && !composite[n])
            count++;
        if (n % 97 == 0 || n == MAX)
            CU_ASSERT_EQUAL(primes_count(n), count);
    }
}

/* The test's own reference: the algorithm as README states it, every operation in 64 bits. */
static uint64_t ref_count(uint64_t lo, uint64_t hi)
{
    uint64_t count = 0;
    for (uint64_t i = lo; i <= hi; i++) {
        bool prime = i == 2 || (i > 2 && i % 2 == 1);
        for (uint64_t d = 3; prime && i > 2 && d * d <= i; d += 2)
            prime = i % d != 0;
        count += prime;
    }
    return count;
}

/* Both widths and the reference agree on windows around every place where 32-bit arithmetic
 * could go wrong: the square root crossing 2^16 (65521 is the largest prime below it, 65535^2
 * the last square of a 16-bit number, where d*d would wrap), the top of the 32-bit range and
 * the hand-over to 64 bits, and squares of primes as window ends (the carried root starts
 * there). */
static void test_srv_primes_count_widths_agree(void)
{
    const uint64_t p16 = 65521ull * 65521ull, top16 = 65535ull * 65535ull, u32 = UINT32_MAX;
    const struct {
        uint64_t lo, hi;
    } win[] = {
        {0, 3000},
        {0, 0},
        {2, 2},
        {3, 3},
        {120, 122},
        {169, 169},
        {p16 - 600, p16 + 600},
        {p16, p16 + 40},
        {p16 + 1, p16 + 41},
        {top16 - 600, top16 + 600},
        {top16, top16},
        {u32 - 1200, u32},
        {u32 - 1, u32 - 1},
        {u32, u32},
        {u32 - 500, u32 + 600},
        {u32 + 1, u32 + 700},
        {65537ull * 65537ull - 300, 65537ull * 65537ull + 300},
    };
    for (size_t i = 0; i < JT_N(win); i++) {
        uint64_t c32 = ~0ull, c64 = ~0ull, want = ref_count(win[i].lo, win[i].hi);
        CU_ASSERT_EQUAL(srv_primes_count(win[i].lo, win[i].hi, 32, NULL, &c32), 0);
        CU_ASSERT_EQUAL(srv_primes_count(win[i].lo, win[i].hi, 64, NULL, &c64), 0);
        CU_ASSERT_EQUAL(c32, want);
        CU_ASSERT_EQUAL(c64, want);
        if (c32 != want || c64 != want)
            fprintf(stderr, "\nwindow %llu..%llu: 32-bit %llu, 64-bit %llu, reference %llu\n",
                    (unsigned long long)win[i].lo, (unsigned long long)win[i].hi,
                    (unsigned long long)c32, (unsigned long long)c64, (unsigned long long)want);
    }
    /* Known values: primes below 2^32 near its top (4294967291 is the largest 32-bit prime,
     * 4294967311 the first above). */
    uint64_t c;
    CU_ASSERT_EQUAL(srv_primes_count(u32 - 4, u32 + 16, 32, NULL, &c), 0);
    CU_ASSERT_EQUAL(c, 2);
}

/* A cancelled context stops either width within one budget of divisions. */
static void test_srv_primes_count_cancelled(void)
{
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(ctx_cancel(c, CTX_REASON_CANCELED), 0);
    uint64_t n = 1;
    CU_ASSERT_EQUAL(srv_primes_count(0, 100000000, 32, c, &n), -ECANCELED);
    CU_ASSERT_EQUAL(n, 0);
    n = 1;
    CU_ASSERT_EQUAL(srv_primes_count(1ull << 32, (1ull << 32) + 100000000, 32, c, &n), -ECANCELED);
    CU_ASSERT_EQUAL(n, 0);
    ctx_unref(c);
}

static void test_primes_run_cancelled_before(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("n", "100000000")};
    jt_check_cancel_first(jt_kind("primes"), p, 1, NULL, 0, &cfg);
}

static void test_primes_run_cancelled_midrun(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("n", "100000000")};
    (void)jt_check_cancel_midrun(jt_kind("primes"), p, 1, NULL, 0, &cfg);
}

int suite_server_jobs_primes(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_primes_parse_accepts),
        SPINDLE_TEST(test_primes_parse_rejects),
        SPINDLE_TEST(test_primes_run_small_n),
        SPINDLE_TEST(test_primes_run_reference_values),
        SPINDLE_TEST(test_primes_run_matches_sieve),
        SPINDLE_TEST(test_srv_primes_count_widths_agree),
        SPINDLE_TEST(test_srv_primes_count_cancelled),
        SPINDLE_TEST(test_primes_run_cancelled_before),
        SPINDLE_TEST(test_primes_run_cancelled_midrun),
    };
    return SPINDLE_SUITE_ADD("server_jobs_primes", NULL, NULL, tests);
}
