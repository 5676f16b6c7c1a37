/* test_policy.c - cli/policy.c: backoff with full jitter (seeded), the Retry-After floor and its
 * parsing, the circuit breaker's transitions, and what an answer's status and hints mean.
 */
#include <CUnit/CUnit.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli/internal.h"
#include "tests/suite.h"

int suite_cli_policy(void);

#define CALL_DRAWS 4000

/* ---- backoff ---- */

static void test_cli_backoff_ms_bounds(void)
{
    struct cli_backoff b = {.base_ms = 100, .cap_ms = 5000};
    uint64_t rng = 42;
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        long long ceil = 100LL << attempt;
        if (ceil > 5000)
            ceil = 5000;
        for (int i = 0; i < CALL_DRAWS; i++) {
            long long d = cli_backoff_ms(&b, attempt, -1, &rng);
            CU_ASSERT(d >= 0);
            CU_ASSERT(d <= ceil);
            if (d < 0 || d > ceil)
                return;
        }
    }
}

static void test_cli_backoff_ms_full_jitter(void)
{
    /* Full jitter: the whole [0, ceil] range is used, not a band near the ceiling. */
    struct cli_backoff b = {.base_ms = 100, .cap_ms = 100000};
    uint64_t rng = 7;
    long long lo = 1 << 30, hi = -1, sum = 0;
    for (int i = 0; i < CALL_DRAWS; i++) {
        long long d = cli_backoff_ms(&b, 3, -1, &rng); /* ceil 800 */
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        sum += d;
    }
    CU_ASSERT(lo < 40);
    CU_ASSERT(hi > 760);
    CU_ASSERT(hi <= 800);
    long long mean = sum / CALL_DRAWS;
    CU_ASSERT(mean > 340 && mean < 460); /* uniform: about 400 */
}

static void test_cli_backoff_ms_cap_and_overflow(void)
{
    struct cli_backoff b = {.base_ms = 1000, .cap_ms = 3000};
    uint64_t rng = 99;
    bool reached = false;
    for (int i = 0; i < CALL_DRAWS; i++) {
        long long d = cli_backoff_ms(&b, 200, -1, &rng); /* 1000 * 2^200 must not wrap */
        CU_ASSERT(d >= 0 && d <= 3000);
        reached |= d > 2900;
    }
    CU_ASSERT(reached);
    struct cli_backoff zero = {.base_ms = 0, .cap_ms = 0};
    CU_ASSERT_EQUAL(cli_backoff_ms(&zero, 5, -1, &rng), 0);
}

static void test_cli_backoff_ms_seeded(void)
{
    struct cli_backoff b = {.base_ms = 100, .cap_ms = 5000};
    uint64_t r1 = 12345, r2 = 12345, r3 = 54321;
    bool differs = false;
    for (int i = 0; i < 100; i++) {
        long long a = cli_backoff_ms(&b, 5, -1, &r1);
        CU_ASSERT_EQUAL(a, cli_backoff_ms(&b, 5, -1, &r2));
        differs |= a != cli_backoff_ms(&b, 5, -1, &r3);
    }
    CU_ASSERT(differs);
    uint64_t z = 0; /* a zero state must not get stuck at zero */
    CU_ASSERT(cli_rand_next(&z) != 0);
    CU_ASSERT(z != 0);
}

static void test_cli_backoff_ms_retry_after_floor(void)
{
    struct cli_backoff b = {.base_ms = 100, .cap_ms = 5000};
    uint64_t rng = 3;
    for (int i = 0; i < CALL_DRAWS; i++) /* ceil 100: the server's 3 s always wins */
        CU_ASSERT_EQUAL(cli_backoff_ms(&b, 0, 3000, &rng), 3000);
    bool above = false;
    for (int i = 0; i < CALL_DRAWS; i++) { /* ceil 1600 over a 1 s floor: both happen */
        long long d = cli_backoff_ms(&b, 4, 1000, &rng);
        CU_ASSERT(d >= 1000 && d <= 1600);
        above |= d > 1000;
    }
    CU_ASSERT(above);
}

static void test_cli_retry_after_ms_parse(void)
{
    CU_ASSERT_EQUAL(cli_retry_after_ms("2", 0), 2000);
    CU_ASSERT_EQUAL(cli_retry_after_ms(" 5 ", 0), 5000);
    CU_ASSERT_EQUAL(cli_retry_after_ms("0", 0), 0);
    CU_ASSERT_EQUAL(cli_retry_after_ms("99999999999", 0), 86400000LL);
    CU_ASSERT_EQUAL(cli_retry_after_ms("", 0), -1);
    CU_ASSERT_EQUAL(cli_retry_after_ms("-1", 0), -1);
    CU_ASSERT_EQUAL(cli_retry_after_ms("1.5", 0), -1);
    CU_ASSERT_EQUAL(cli_retry_after_ms("soon", 0), -1);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    CU_ASSERT_EQUAL(cli_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111770), 7000);
    CU_ASSERT_EQUAL(cli_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111800), 0);
    CU_ASSERT_EQUAL(cli_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT junk", 0), -1);
}

/* ---- breaker ---- */

static void test_cli_breaker_opens_after_threshold(void)
{
    struct cli_breaker b;
    cli_breaker_init(&b, 3, 1000);
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 0), 1);
    cli_breaker_record(&b, false, false, 10);
    cli_breaker_record(&b, false, false, 20);
    cli_breaker_record(&b, false, true, 30); /* a success resets the count */
    cli_breaker_record(&b, false, false, 40);
    cli_breaker_record(&b, false, false, 50);
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 55), 1);
    cli_breaker_record(&b, false, false, 60);
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_OPEN);
    /* no probe has failed yet: requests wait for the cooldown instead of failing */
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 61), CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 1059), CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(cli_breaker_retry_ms(&b), 1060);
}

static void test_cli_breaker_half_open_probe(void)
{
    struct cli_breaker b;
    cli_breaker_init(&b, 1, 1000);
    CU_ASSERT_TRUE(cli_breaker_record(&b, false, false, 100)); /* this one opened it */
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_OPEN);
    /* late results of requests sent before it opened change nothing */
    cli_breaker_record(&b, false, true, 200);
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_OPEN);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 1099), CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 1100), CLI_BREAKER_PROBE); /* cooldown over */
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_HALF_OPEN);
    /* one probe only: the others wait for its report */
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 1101), CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(cli_breaker_retry_ms(&b), LLONG_MAX);
    CU_ASSERT_FALSE(cli_breaker_record(&b, false, true, 1102)); /* not the probe: ignored */
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_HALF_OPEN);
    /* the probe failed: open again, and now requests fail fast */
    CU_ASSERT_TRUE(cli_breaker_record(&b, true, false, 1200));
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_OPEN);
    CU_ASSERT_EQUAL(cli_breaker_retry_ms(&b), 0);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 2100), CLI_BREAKER_REFUSE); /* restarted */
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 2200), CLI_BREAKER_PROBE);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 2201), CLI_BREAKER_REFUSE);
    cli_breaker_record(&b, true, true, 2300); /* the probe succeeded: closed */
    CU_ASSERT_EQUAL(b.failed_probes, 0);
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(b.failures, 0);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 2301), 1);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 2302), 1);
}

static void test_cli_breaker_disabled(void)
{
    struct cli_breaker b;
    cli_breaker_init(&b, 0, 1000);
    for (int i = 0; i < 100; i++)
        cli_breaker_record(&b, false, false, i);
    CU_ASSERT_EQUAL(b.state, CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(cli_breaker_allow(&b, 200), 1);
}

static void test_cli_retry_after_ms_hint_parse(void)
{
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint("25"), 25);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint(" 1 "), 1);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint("0"), 0);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint("99999999999"), 86400000);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint(""), -1);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint("2.5"), -1);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint("-3"), -1);
    CU_ASSERT_EQUAL(cli_retry_after_ms_hint("Sun, 06 Nov 1994 08:49:37 GMT"), -1);
}

/* ---- what an answer means ---- */

static void test_cli_verdict_of_statuses(void)
{
    static const struct {
        int status;
        bool ok, retryable, healthy;
    } cases[] = {
        {200, true, false, true},   {204, true, false, true},   {400, false, false, true},
        {404, false, false, true},  {413, false, false, true},  {429, false, true, true},
        {500, false, false, false}, {502, false, false, false}, {503, false, true, false},
        {504, false, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cli_verdict v = cli_verdict_of(cases[i].status, NULL, NULL, 0);
        CU_ASSERT_EQUAL(v.ok, cases[i].ok);
        CU_ASSERT_EQUAL(v.retryable, cases[i].retryable);
        CU_ASSERT_EQUAL(v.healthy, cases[i].healthy);
        CU_ASSERT_EQUAL(v.retry_after_ms, -1);
        CU_ASSERT_FALSE(v.exact);
    }
}

static void test_cli_verdict_of_hints(void)
{
    /* a 429 with Retry-After-Ms: exactly then, whatever Retry-After says */
    struct cli_verdict v = cli_verdict_of(429, "75", "1", 0);
    CU_ASSERT_EQUAL(v.retry_after_ms, 75);
    CU_ASSERT_TRUE(v.exact);
    /* a 503 with Retry-After-Ms: the precise hint, but only as a floor */
    v = cli_verdict_of(503, "1200", "2", 0);
    CU_ASSERT_EQUAL(v.retry_after_ms, 1200);
    CU_ASSERT_FALSE(v.exact);
    /* no (valid) Retry-After-Ms: Retry-After, seconds or a date, is the floor */
    v = cli_verdict_of(429, "", "2", 0);
    CU_ASSERT_EQUAL(v.retry_after_ms, 2000);
    CU_ASSERT_FALSE(v.exact);
    v = cli_verdict_of(429, "soon", "3", 0);
    CU_ASSERT_EQUAL(v.retry_after_ms, 3000);
    CU_ASSERT_FALSE(v.exact);
    v = cli_verdict_of(503, NULL, "Sun, 06 Nov 1994 08:49:37 GMT", 784111770);
    CU_ASSERT_EQUAL(v.retry_after_ms, 7000);
    v = cli_verdict_of(503, NULL, "later", 0);
    CU_ASSERT_EQUAL(v.retry_after_ms, -1);
}

int suite_cli_policy(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cli_backoff_ms_bounds),
        SPINDLE_TEST(test_cli_backoff_ms_full_jitter),
        SPINDLE_TEST(test_cli_backoff_ms_cap_and_overflow),
        SPINDLE_TEST(test_cli_backoff_ms_seeded),
        SPINDLE_TEST(test_cli_backoff_ms_retry_after_floor),
        SPINDLE_TEST(test_cli_retry_after_ms_parse),
        SPINDLE_TEST(test_cli_breaker_opens_after_threshold),
        SPINDLE_TEST(test_cli_breaker_half_open_probe),
        SPINDLE_TEST(test_cli_breaker_disabled),
        SPINDLE_TEST(test_cli_retry_after_ms_hint_parse),
        SPINDLE_TEST(test_cli_verdict_of_statuses),
        SPINDLE_TEST(test_cli_verdict_of_hints),
    };
    return SPINDLE_SUITE_ADD("cli_policy", NULL, NULL, tests);
}
