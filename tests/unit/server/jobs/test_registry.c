/* test_registry.c - the job-kind registry (linker-section gathering, lookup, listing) and
 * the shared parameter helpers of server/jobs/registry.c. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <string.h>

#include "server/jobs/jobs.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_jobs_registry(void);

static void test_srv_job_kind_find_every_kind(void)
{
    static const char *const names[] = {"compress", "noop", "primes", "sha256", "spin"};
    for (size_t i = 0; i < JT_N(names); i++) {
        const struct srv_job_kind *k = srv_job_kind_find(names[i], strlen(names[i]));
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        CU_ASSERT_STRING_EQUAL(k->name, names[i]);
        CU_ASSERT_PTR_NOT_NULL(k->summary);
        CU_ASSERT(k->parse != NULL && k->run != NULL && k->answer != NULL && k->free != NULL);
    }
    CU_ASSERT_TRUE(srv_job_kind_find("sha256", 6)->uses_body);
    CU_ASSERT_TRUE(srv_job_kind_find("compress", 8)->uses_body);
    CU_ASSERT_FALSE(srv_job_kind_find("noop", 4)->uses_body);
    CU_ASSERT_FALSE(srv_job_kind_find("spin", 4)->uses_body);
    CU_ASSERT_FALSE(srv_job_kind_find("primes", 6)->uses_body);
}

static void test_srv_job_kind_find_unknown(void)
{
    CU_ASSERT_PTR_NULL(srv_job_kind_find("", 0));
    CU_ASSERT_PTR_NULL(srv_job_kind_find("nop", 3));
    CU_ASSERT_PTR_NULL(srv_job_kind_find("noopx", 5));
    CU_ASSERT_PTR_NULL(srv_job_kind_find("NOOP", 4));
    CU_ASSERT_PTR_NULL(srv_job_kind_find("batch", 5));
    CU_ASSERT_PTR_NULL(srv_job_kind_find("noop\0", 5));
    /* the length counts, not a NUL: a prefix of a longer buffer is found */
    const struct srv_job_kind *k = srv_job_kind_find("primes/extra", 6);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_STRING_EQUAL(k->name, "primes");
}

static void test_srv_job_kind_at_sorted(void)
{
    size_t n = srv_job_kind_count();
    CU_ASSERT(n >= 5);
    for (size_t i = 0; i < n; i++) {
        const struct srv_job_kind *k = srv_job_kind_at(i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        CU_ASSERT_PTR_EQUAL(srv_job_kind_find(k->name, strlen(k->name)), k);
        if (i > 0)
            CU_ASSERT(strcmp(srv_job_kind_at(i - 1)->name, k->name) < 0);
    }
    CU_ASSERT_PTR_NULL(srv_job_kind_at(n));
    CU_ASSERT_PTR_NULL(srv_job_kind_at(n + 100));
}

static void test_srv_job_params_match_cases(void)
{
    static const char *const names[] = {"codec", "level"};
    const struct srv_job_param *found[2];
    char err[SRV_JOB_ERR_MAX];

    struct srv_job_param ok[] = {JT_P("level", "3"), JT_P("codec", "zstd")};
    CU_ASSERT_EQUAL(srv_job_params_match(ok, 2, names, 2, found, err, sizeof(err)), 0);
    CU_ASSERT_PTR_EQUAL(found[0], &ok[1]);
    CU_ASSERT_PTR_EQUAL(found[1], &ok[0]);

    CU_ASSERT_EQUAL(srv_job_params_match(ok, 1, names, 2, found, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NULL(found[0]);
    CU_ASSERT_PTR_EQUAL(found[1], &ok[0]);
    CU_ASSERT_EQUAL(srv_job_params_match(NULL, 0, names, 2, found, err, sizeof(err)), 0);

    struct srv_job_param dup[] = {JT_P("codec", "zstd"), JT_P("codec", "gzip")};
    CU_ASSERT_EQUAL(srv_job_params_match(dup, 2, names, 2, found, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "duplicate parameter 'codec'");

    struct srv_job_param unk[] = {JT_P("codec", "zstd"), JT_P("x", "1")};
    CU_ASSERT_EQUAL(srv_job_params_match(unk, 2, names, 2, found, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "unknown parameter 'x'");

    /* case matters, prefixes do not match, empty keys are unknown */
    struct srv_job_param upper[] = {JT_P("Codec", "zstd")};
    CU_ASSERT_EQUAL(srv_job_params_match(upper, 1, names, 2, found, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "unknown parameter 'Codec'");
    struct srv_job_param prefix[] = {JT_P("code", "zstd")};
    CU_ASSERT_EQUAL(srv_job_params_match(prefix, 1, names, 2, found, err, sizeof(err)), -EINVAL);
    struct srv_job_param empty[] = {JT_P("", "1")};
    CU_ASSERT_EQUAL(srv_job_params_match(empty, 1, names, 2, found, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "unknown parameter ''");
}

static void test_srv_job_params_match_echo_is_printable(void)
{
    const struct srv_job_param *found[1];
    static const char *const names[] = {"n"};
    char err[SRV_JOB_ERR_MAX];

    struct srv_job_param ctl[] = {JT_P("a\x01\n'\xff"
                                       "b",
                                       "1")};
    CU_ASSERT_EQUAL(srv_job_params_match(ctl, 1, names, 1, found, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "unknown parameter 'a????b'");

    struct srv_job_param lng[] = {JT_P("abcdefghijklmnopqrstuvwxyz0123456789", "1")};
    CU_ASSERT_EQUAL(srv_job_params_match(lng, 1, names, 1, found, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "unknown parameter 'abcdefghijklmnopqrstuvwxyz012345...'");

    /* a small buffer is cut and stays NUL-terminated; no buffer at all is allowed */
    char small[8];
    CU_ASSERT_EQUAL(srv_job_params_match(lng, 1, names, 1, found, small, sizeof(small)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(small, "unknown");
    CU_ASSERT_EQUAL(srv_job_params_match(lng, 1, names, 1, found, NULL, 0), -EINVAL);
}

static void test_srv_job_param_uint_strict(void)
{
    char err[SRV_JOB_ERR_MAX];
    uint64_t v = 77;
    static const struct {
        struct srv_job_param p;
        uint64_t min, max;
        int rc;
        uint64_t want;
    } cases[] = {
        {JT_P("n", "0"), 0, 10, 0, 0},
        {JT_P("n", "10"), 0, 10, 0, 10},
        {JT_P("n", "007"), 0, 10, 0, 7},
        {JT_P("n", "18446744073709551615"), 0, UINT64_MAX, 0, UINT64_MAX},
        {JT_P("n", "18446744073709551616"), 0, UINT64_MAX, -EINVAL, 0},
        {JT_P("n", "99999999999999999999999"), 0, UINT64_MAX, -EINVAL, 0},
        {JT_P("n", "11"), 0, 10, -EINVAL, 0},
        {JT_P("n", "0"), 1, 10, -EINVAL, 0},
        {JT_P("n", ""), 0, 10, -EINVAL, 0},
        {JT_P("n", "-1"), 0, 10, -EINVAL, 0},
        {JT_P("n", "+1"), 0, 10, -EINVAL, 0},
        {JT_P("n", " 1"), 0, 10, -EINVAL, 0},
        {JT_P("n", "1 "), 0, 10, -EINVAL, 0},
        {JT_P("n", "1a"), 0, 10, -EINVAL, 0},
        {JT_P("n", "0x5"), 0, 10, -EINVAL, 0},
        {JT_P("n", "1.0"), 0, 10, -EINVAL, 0},
        {JT_P("n", "1e3"), 0, 10000, -EINVAL, 0},
        {JT_P("n", "1\0"), 0, 10, -EINVAL, 0},
    };
    for (size_t i = 0; i < JT_N(cases); i++) {
        err[0] = '\0';
        int rc = srv_job_param_uint(&cases[i].p, cases[i].min, cases[i].max, &v, err, sizeof(err));
        CU_ASSERT_EQUAL(rc, cases[i].rc);
        if (rc == 0) {
            CU_ASSERT_EQUAL(v, cases[i].want);
        } else {
            CU_ASSERT(strncmp(err, "n must be an integer between ", 29) == 0);
        }
    }
    struct srv_job_param p = JT_P("ms", "x");
    v = 5;
    CU_ASSERT_EQUAL(srv_job_param_uint(&p, 0, 60000, &v, err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "ms must be an integer between 0 and 60000");
    CU_ASSERT_EQUAL(v, 5); /* untouched on error */
}

static void test_srv_job_param_is_exact(void)
{
    struct srv_job_param p = JT_P("codec", "zstd");
    CU_ASSERT_TRUE(srv_job_param_is(&p, "zstd"));
    CU_ASSERT_FALSE(srv_job_param_is(&p, "zst"));
    CU_ASSERT_FALSE(srv_job_param_is(&p, "zstdx"));
    CU_ASSERT_FALSE(srv_job_param_is(&p, "ZSTD"));
}

int suite_server_jobs_registry(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_job_kind_find_every_kind),
        SPINDLE_TEST(test_srv_job_kind_find_unknown),
        SPINDLE_TEST(test_srv_job_kind_at_sorted),
        SPINDLE_TEST(test_srv_job_params_match_cases),
        SPINDLE_TEST(test_srv_job_params_match_echo_is_printable),
        SPINDLE_TEST(test_srv_job_param_uint_strict),
        SPINDLE_TEST(test_srv_job_param_is_exact),
    };
    return SPINDLE_SUITE_ADD("server_jobs_registry", NULL, NULL, tests);
}
