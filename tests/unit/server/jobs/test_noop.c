/* test_noop.c - the noop job kind (server/jobs/noop.c). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <string.h>

#include "server/jobs/jobs.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_jobs_noop(void);

static void test_noop_parse_accepts_no_params_and_any_body(void)
{
    const struct srv_kind *k = jt_kind("noop");
    struct srv_cfg cfg = jt_limits();
    jt_free(jt_parse_ok(k, NULL, 0, NULL, 0, &cfg));
    jt_free(jt_parse_ok(k, NULL, 0, "ignored body", 12, &cfg));
}

static void test_noop_parse_rejects_params(void)
{
    const struct srv_kind *k = jt_kind("noop");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param x[] = {JT_P("x", "1")};
    jt_parse_err(k, x, 1, NULL, 0, &cfg, "unknown parameter 'x'");
    struct srv_job_param n[] = {JT_P("n", "")};
    jt_parse_err(k, n, 1, NULL, 0, &cfg, "unknown parameter 'n'");
}

static void test_noop_run_answers_ok(void)
{
    const struct srv_kind *k = jt_kind("noop");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_answer ans;
    void *st = jt_parse_ok(k, NULL, 0, NULL, 0, &cfg);
    CU_ASSERT_EQUAL(jt_run(k, st, false, NULL), 0);
    char *s = jt_answer_str(k, st, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_STRING_EQUAL(ans.content_type, "application/json");
    CU_ASSERT_STRING_EQUAL(s, "{\"ok\":true}");
    free(s);
    /* with no context current it runs too */
    CU_ASSERT_EQUAL(srv_job_run(st), 0);
    jt_free(st);
    jt_free(NULL);
}

int suite_server_jobs_noop(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_noop_parse_accepts_no_params_and_any_body),
        SPINDLE_TEST(test_noop_parse_rejects_params),
        SPINDLE_TEST(test_noop_run_answers_ok),
    };
    return SPINDLE_SUITE_ADD("server_jobs_noop", NULL, NULL, tests);
}
