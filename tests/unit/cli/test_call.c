/* test_call.c - the pure parts of `spindle call`: backoff with full jitter (seeded), the
 * Retry-After floor and its parsing, the circuit breaker's transitions, --server URL parsing,
 * percent-encoding, and the command line.
 */
#include <CUnit/CUnit.h>
#include <limits.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tests/suite.h"

int suite_cli_call(void);

#define CALL_DRAWS 4000

/* ---- backoff ---- */

static void test_srv_cli_backoff_ms_bounds(void)
{
    struct srv_cli_backoff b = {.base_ms = 100, .cap_ms = 5000};
    uint64_t rng = 42;
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        long long ceil = 100LL << attempt;
        if (ceil > 5000)
            ceil = 5000;
        for (int i = 0; i < CALL_DRAWS; i++) {
            long long d = srv_cli_backoff_ms(&b, attempt, -1, &rng);
            CU_ASSERT(d >= 0);
            CU_ASSERT(d <= ceil);
            if (d < 0 || d > ceil)
                return;
        }
    }
}

static void test_srv_cli_backoff_ms_full_jitter(void)
{
    /* Full jitter: the whole [0, ceil] range is used, not a band near the ceiling. */
    struct srv_cli_backoff b = {.base_ms = 100, .cap_ms = 100000};
    uint64_t rng = 7;
    long long lo = 1 << 30, hi = -1, sum = 0;
    for (int i = 0; i < CALL_DRAWS; i++) {
        long long d = srv_cli_backoff_ms(&b, 3, -1, &rng); /* ceil 800 */
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

static void test_srv_cli_backoff_ms_cap_and_overflow(void)
{
    struct srv_cli_backoff b = {.base_ms = 1000, .cap_ms = 3000};
    uint64_t rng = 99;
    bool reached = false;
    for (int i = 0; i < CALL_DRAWS; i++) {
        long long d = srv_cli_backoff_ms(&b, 200, -1, &rng); /* 1000 * 2^200 must not wrap */
        CU_ASSERT(d >= 0 && d <= 3000);
        reached |= d > 2900;
    }
    CU_ASSERT(reached);
    struct srv_cli_backoff zero = {.base_ms = 0, .cap_ms = 0};
    CU_ASSERT_EQUAL(srv_cli_backoff_ms(&zero, 5, -1, &rng), 0);
}

static void test_srv_cli_backoff_ms_seeded(void)
{
    struct srv_cli_backoff b = {.base_ms = 100, .cap_ms = 5000};
    uint64_t r1 = 12345, r2 = 12345, r3 = 54321;
    bool differs = false;
    for (int i = 0; i < 100; i++) {
        long long a = srv_cli_backoff_ms(&b, 5, -1, &r1);
        CU_ASSERT_EQUAL(a, srv_cli_backoff_ms(&b, 5, -1, &r2));
        differs |= a != srv_cli_backoff_ms(&b, 5, -1, &r3);
    }
    CU_ASSERT(differs);
    uint64_t z = 0; /* a zero state must not get stuck at zero */
    CU_ASSERT(srv_cli_rand_next(&z) != 0);
    CU_ASSERT(z != 0);
}

static void test_srv_cli_backoff_ms_retry_after_floor(void)
{
    struct srv_cli_backoff b = {.base_ms = 100, .cap_ms = 5000};
    uint64_t rng = 3;
    for (int i = 0; i < CALL_DRAWS; i++) /* ceil 100: the server's 3 s always wins */
        CU_ASSERT_EQUAL(srv_cli_backoff_ms(&b, 0, 3000, &rng), 3000);
    bool above = false;
    for (int i = 0; i < CALL_DRAWS; i++) { /* ceil 1600 over a 1 s floor: both happen */
        long long d = srv_cli_backoff_ms(&b, 4, 1000, &rng);
        CU_ASSERT(d >= 1000 && d <= 1600);
        above |= d > 1000;
    }
    CU_ASSERT(above);
}

static void test_srv_cli_retry_after_ms_parse(void)
{
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("2", 0), 2000);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms(" 5 ", 0), 5000);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("0", 0), 0);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("99999999999", 0), 86400000LL);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("", 0), -1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("-1", 0), -1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("1.5", 0), -1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("soon", 0), -1);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111770), 7000);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111800), 0);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT junk", 0), -1);
}

/* ---- breaker ---- */

static void test_srv_cli_breaker_opens_after_threshold(void)
{
    struct srv_cli_breaker b;
    srv_cli_breaker_init(&b, 3, 1000);
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 0), 1);
    srv_cli_breaker_record(&b, false, false, 10);
    srv_cli_breaker_record(&b, false, false, 20);
    srv_cli_breaker_record(&b, false, true, 30); /* a success resets the count */
    srv_cli_breaker_record(&b, false, false, 40);
    srv_cli_breaker_record(&b, false, false, 50);
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 55), 1);
    srv_cli_breaker_record(&b, false, false, 60);
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_OPEN);
    /* no probe has failed yet: requests wait for the cooldown instead of failing */
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 61), SRV_CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 1059), SRV_CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(srv_cli_breaker_retry_ms(&b), 1060);
}

static void test_srv_cli_breaker_half_open_probe(void)
{
    struct srv_cli_breaker b;
    srv_cli_breaker_init(&b, 1, 1000);
    CU_ASSERT_TRUE(srv_cli_breaker_record(&b, false, false, 100)); /* this one opened it */
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_OPEN);
    /* late results of requests sent before it opened change nothing */
    srv_cli_breaker_record(&b, false, true, 200);
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_OPEN);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 1099), SRV_CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 1100), SRV_CLI_BREAKER_PROBE); /* cooldown over */
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_HALF_OPEN);
    /* one probe only: the others wait for its report */
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 1101), SRV_CLI_BREAKER_WAIT);
    CU_ASSERT_EQUAL(srv_cli_breaker_retry_ms(&b), LLONG_MAX);
    CU_ASSERT_FALSE(srv_cli_breaker_record(&b, false, true, 1102)); /* not the probe: ignored */
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_HALF_OPEN);
    /* the probe failed: open again, and now requests fail fast */
    CU_ASSERT_TRUE(srv_cli_breaker_record(&b, true, false, 1200));
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_OPEN);
    CU_ASSERT_EQUAL(srv_cli_breaker_retry_ms(&b), 0);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 2100), SRV_CLI_BREAKER_REFUSE); /* restarted */
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 2200), SRV_CLI_BREAKER_PROBE);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 2201), SRV_CLI_BREAKER_REFUSE);
    srv_cli_breaker_record(&b, true, true, 2300); /* the probe succeeded: closed */
    CU_ASSERT_EQUAL(b.failed_probes, 0);
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(b.failures, 0);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 2301), 1);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 2302), 1);
}

static void test_srv_cli_breaker_disabled(void)
{
    struct srv_cli_breaker b;
    srv_cli_breaker_init(&b, 0, 1000);
    for (int i = 0; i < 100; i++)
        srv_cli_breaker_record(&b, false, false, i);
    CU_ASSERT_EQUAL(b.state, SRV_CLI_BREAKER_CLOSED);
    CU_ASSERT_EQUAL(srv_cli_breaker_allow(&b, 200), 1);
}

static void test_srv_cli_retry_after_ms_hint_parse(void)
{
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint("25"), 25);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint(" 1 "), 1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint("0"), 0);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint("99999999999"), 86400000);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint(""), -1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint("2.5"), -1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint("-3"), -1);
    CU_ASSERT_EQUAL(srv_cli_retry_after_ms_hint("Sun, 06 Nov 1994 08:49:37 GMT"), -1);
}

/* ---- URL ---- */

static void test_srv_cli_url_parse_forms(void)
{
    struct srv_cli_url u;
    char err[256];
    CU_ASSERT_EQUAL(srv_cli_url_parse("http://127.0.0.1:8080", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(u.port, "8080");
    CU_ASSERT_STRING_EQUAL(u.authority, "127.0.0.1:8080");
    CU_ASSERT_EQUAL(srv_cli_url_parse("http://[::1]:9000/", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "::1");
    CU_ASSERT_STRING_EQUAL(u.port, "9000");
    CU_ASSERT_STRING_EQUAL(u.authority, "[::1]:9000");
    CU_ASSERT_EQUAL(srv_cli_url_parse("localhost", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "localhost");
    CU_ASSERT_STRING_EQUAL(u.port, "80");
    CU_ASSERT_EQUAL(srv_cli_url_parse("HTTP://[::1]", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.authority, "[::1]:80");
}

static void test_srv_cli_url_parse_rejects(void)
{
    struct srv_cli_url u;
    char err[256];
    CU_ASSERT_EQUAL(srv_cli_url_parse("https://127.0.0.1:8443", &u, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "https is not supported"));
    static const char *const bad[] = {
        "ftp://h:1",       "http://",         "http://:80",    "http://h:0",      "http://h:65536",
        "http://h:8x",     "http://h:",       "http://::1:80", "http://[::1",     "http://[::1]x",
        "http://h:80/api", "http://h:80?x=1", "http://u@h:80", "http://h:123456",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(srv_cli_url_parse(bad[i], &u, err, sizeof(err)), -EINVAL);
        CU_ASSERT(err[0] != '\0');
    }
}

static void test_srv_cli_percent_encode_reserved(void)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const char in[] = "aZ9-._~ b&c=d/\xc3\xa9%+";
    CU_ASSERT_EQUAL(srv_cli_percent_encode(f, in, strlen(in)), 0);
    CU_ASSERT_EQUAL(fclose(f), 0);
    CU_ASSERT_STRING_EQUAL(s, "aZ9-._~%20b%26c%3Dd%2F%C3%A9%25%2B");
    free(s);
}

/* ---- arguments ---- */

/* argv is static: the options borrow it (o->params points into it) after the call returns. */
static int call_parse(struct srv_cli_call_opts *o, char *err, size_t size, int argc, ...)
{
    static char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return srv_cli_call_args_parse(argc, argv, o, err, size);
}

static void test_srv_cli_call_args_parse_single(void)
{
    struct srv_cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "primes", "n=1000"), 0);
    CU_ASSERT_STRING_EQUAL(o.kind, "primes");
    CU_ASSERT_EQUAL(o.nparams, 1);
    CU_ASSERT_STRING_EQUAL(o.params[0], "n=1000");
    CU_ASSERT_STRING_EQUAL(o.server, "http://127.0.0.1:8080");
    CU_ASSERT_EQUAL(o.concurrency, 1);
    CU_ASSERT_EQUAL(o.retries, 3);
    CU_ASSERT_EQUAL(o.breaker, 5);
    CU_ASSERT_EQUAL(o.cooldown_ms, 1000);
    CU_ASSERT_EQUAL(o.timeout_ms, 0);
    CU_ASSERT_PTR_NULL(o.batch);
    /* options after the positional arguments, short forms */
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 11, "call", "compress", "codec=zstd",
                               "level=3", "--body", "-", "-o", "out.zst", "--timeout", "250",
                               "-s[::1]:1"),
                    0);
    CU_ASSERT_EQUAL(o.nparams, 2);
    CU_ASSERT_STRING_EQUAL(o.body, "-");
    CU_ASSERT_STRING_EQUAL(o.output, "out.zst");
    CU_ASSERT_EQUAL(o.timeout_ms, 250);
    CU_ASSERT_STRING_EQUAL(o.server, "[::1]:1");
}

static void test_srv_cli_call_args_parse_batch(void)
{
    struct srv_cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 15, "call", "--batch", "jobs.jsonl",
                               "--concurrency", "8", "--retries", "0", "--breaker", "2",
                               "--cooldown", "50", "--tenant", "acme", "--request-id", "run-7"),
                    0);
    CU_ASSERT_STRING_EQUAL(o.batch, "jobs.jsonl");
    CU_ASSERT_EQUAL(o.concurrency, 8);
    CU_ASSERT_EQUAL(o.retries, 0);
    CU_ASSERT_EQUAL(o.breaker, 2);
    CU_ASSERT_EQUAL(o.cooldown_ms, 50);
    CU_ASSERT_STRING_EQUAL(o.tenant, "acme");
    CU_ASSERT_STRING_EQUAL(o.request_id, "run-7");
    CU_ASSERT_PTR_NULL(o.kind);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 2, "call", "--help"), 0);
    CU_ASSERT(o.help);
}

static void test_srv_cli_call_args_parse_errors(void)
{
    struct srv_cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 1, "call"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "KIND"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "primes", "n"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "KEY=VALUE"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "primes", "=5"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 2, "call", "pri/mes"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "primes", "-b", "f"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 5, "call", "-b", "f", "--body", "x"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "-j", "0"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "-j", "4x"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--retries", "-1"),
                    -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--timeout", "0"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "noop", "--bogus"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--bogus"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "noop", "--tenant"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing value"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--tenant", "a b"),
                    -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--request-id", "a b"),
                    -EINVAL);
}

int suite_cli_call(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_cli_backoff_ms_bounds),
        SPINDLE_TEST(test_srv_cli_backoff_ms_full_jitter),
        SPINDLE_TEST(test_srv_cli_backoff_ms_cap_and_overflow),
        SPINDLE_TEST(test_srv_cli_backoff_ms_seeded),
        SPINDLE_TEST(test_srv_cli_backoff_ms_retry_after_floor),
        SPINDLE_TEST(test_srv_cli_retry_after_ms_parse),
        SPINDLE_TEST(test_srv_cli_breaker_opens_after_threshold),
        SPINDLE_TEST(test_srv_cli_breaker_half_open_probe),
        SPINDLE_TEST(test_srv_cli_breaker_disabled),
        SPINDLE_TEST(test_srv_cli_retry_after_ms_hint_parse),
        SPINDLE_TEST(test_srv_cli_url_parse_forms),
        SPINDLE_TEST(test_srv_cli_url_parse_rejects),
        SPINDLE_TEST(test_srv_cli_percent_encode_reserved),
        SPINDLE_TEST(test_srv_cli_call_args_parse_single),
        SPINDLE_TEST(test_srv_cli_call_args_parse_batch),
        SPINDLE_TEST(test_srv_cli_call_args_parse_errors),
    };
    return SPINDLE_SUITE_ADD("cli_call", NULL, NULL, tests);
}
