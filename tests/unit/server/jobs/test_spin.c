/* test_spin.c - the spin job kind (server/jobs/spin.c): parameters, the time it burns, the
 * answer, and cancellation before and during a run. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "server/jobs/jobs.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_jobs_spin(void);

static void test_spin_parse_accepts(void)
{
    const struct srv_kind *k = jt_kind("spin");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param zero[] = {JT_P("ms", "0")};
    jt_free(jt_parse_ok(k, zero, 1, NULL, 0, &cfg));
    struct srv_job_param max[] = {JT_P("ms", "60000")};
    jt_free(jt_parse_ok(k, max, 1, "a body is ignored", 17, &cfg));
}

static void test_spin_parse_rejects(void)
{
    const struct srv_kind *k = jt_kind("spin");
    struct srv_cfg cfg = jt_limits();
    const char *range = "ms must be an integer between 0 and 60000";

    jt_parse_err(k, NULL, 0, NULL, 0, &cfg, "missing required parameter 'ms'");
    struct srv_job_param over[] = {JT_P("ms", "60001")};
    jt_parse_err(k, over, 1, NULL, 0, &cfg, range);
    struct srv_job_param neg[] = {JT_P("ms", "-5")};
    jt_parse_err(k, neg, 1, NULL, 0, &cfg, range);
    struct srv_job_param junk[] = {JT_P("ms", "10ms")};
    jt_parse_err(k, junk, 1, NULL, 0, &cfg, range);
    struct srv_job_param empty[] = {JT_P("ms", "")};
    jt_parse_err(k, empty, 1, NULL, 0, &cfg, range);
    struct srv_job_param dup[] = {JT_P("ms", "1"), JT_P("ms", "1")};
    jt_parse_err(k, dup, 2, NULL, 0, &cfg, "duplicate parameter 'ms'");
    struct srv_job_param unk[] = {JT_P("ms", "1"), JT_P("n", "1")};
    jt_parse_err(k, unk, 2, NULL, 0, &cfg, "unknown parameter 'n'");

    cfg.max_spin_ms = 100; /* the limit comes from the configuration */
    struct srv_job_param big[] = {JT_P("ms", "101")};
    jt_parse_err(k, big, 1, NULL, 0, &cfg, "ms must be an integer between 0 and 100");
}

/* Run spin?ms=<ms> and check the answer: ms echoed, spun_ms >= ms. Returns spun_ms. */
static double spin_once(const char *ms_str, unsigned ms)
{
    const struct srv_kind *k = jt_kind("spin");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p = {"ms", ms_str, 2, strlen(ms_str)};
    struct srv_job_answer ans;
    uint64_t ns = 0;
    double spun = -1;

    void *st = jt_parse_ok(k, &p, 1, NULL, 0, &cfg);
    CU_ASSERT_EQUAL(jt_run(k, st, false, &ns), 0);
    CU_ASSERT(ns >= (uint64_t)ms * JT_MS);
    char *s = jt_answer_str(k, st, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_STRING_EQUAL(ans.content_type, "application/json");
    json_t *j = json_loads(s, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL(j);
    if (j != NULL) {
        CU_ASSERT_EQUAL(json_object_size(j), 2);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "ms")), ms);
        CU_ASSERT_TRUE(json_is_number(json_object_get(j, "spun_ms")));
        spun = json_number_value(json_object_get(j, "spun_ms"));
        CU_ASSERT(spun >= ms);
        CU_ASSERT(spun * (double)JT_MS <= (double)ns + 1e6);
        json_decref(j);
    }
    free(s);
    jt_free(st);
    return spun;
}

static void test_spin_run_burns_the_time(void)
{
    double spun = spin_once("25", 25);
    CU_ASSERT(spun >= 25.0 && spun < 25.0 + 1000.0);
    spun = spin_once("0", 0);
    CU_ASSERT(spun >= 0.0 && spun < 100.0);
}

static void test_spin_run_cancelled_before(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("ms", "10000")};
    jt_check_cancel_first(jt_kind("spin"), p, 1, NULL, 0, &cfg);
}

static void test_spin_run_cancelled_midrun(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("ms", "10000")};
    (void)jt_check_cancel_midrun(jt_kind("spin"), p, 1, NULL, 0, &cfg);
}

int suite_server_jobs_spin(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_spin_parse_accepts),        SPINDLE_TEST(test_spin_parse_rejects),
        SPINDLE_TEST(test_spin_run_burns_the_time),   SPINDLE_TEST(test_spin_run_cancelled_before),
        SPINDLE_TEST(test_spin_run_cancelled_midrun),
    };
    return SPINDLE_SUITE_ADD("server_jobs_spin", NULL, NULL, tests);
}
