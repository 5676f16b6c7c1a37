/* test_harness.c - tests of the harness helpers the suites share (harness.h, tests/suite.h):
 * waiting for the server to exit, the IPv6 check, a test that cannot run being registered
 * inactive (shown as such in the Run Summary) instead of passing without doing anything, and the
 * runner's wall times. The last two run this binary again with a demo suite (SPINDLE_TEST_SKIP_DEMO
 * set) and read its output.
 */
#include <CUnit/CUnit.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_harness(void);

/* SIGTERM: the server stops cleanly and hs_wait_exit sees it within the bound. */
static void test_hs_wait_exit_after_sigterm(void)
{
    struct hs_server *s = hs_start(NULL);
    HS_CHECK(s != NULL);
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    CU_ASSERT_TRUE(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT_FALSE(hs_alive(s));
out:
    HS_FINISH(s); /* exit code 0 */
}

/* A running server: the wait gives up at its bound and leaves the server running. */
static void test_hs_wait_exit_bounded(void)
{
    struct hs_server *s = hs_start(NULL);
    HS_CHECK(s != NULL);
    CU_ASSERT_FALSE(hs_wait_exit(s, 20));
    CU_ASSERT_TRUE(hs_alive(s));
out:
    HS_FINISH(s);
}

static void test_hs_skip_no_ipv6_agrees(void)
{
    const char *why = hs_skip_no_ipv6();
    CU_ASSERT_EQUAL(why == NULL, hs_have_ipv6());
    if (why != NULL)
        CU_ASSERT_TRUE(strlen(why) > 0);
}

/* The demo suite, registered instead of this one when SPINDLE_TEST_SKIP_DEMO is set (the test
 * below runs this binary so): one test that cannot run here, one that passes. */
static void never_run(void)
{
    CU_FAIL("an inactive test ran");
}

static void demo_pass(void)
{
    CU_PASS("ran");
}

static const char *skip_always(void)
{
    return "cannot run here";
}

/* Run this binary with the demo suite; its standard output as a new string (caller frees), NULL
 * when it could not run or did not exit 0 within the bound. */
static char *run_demo(void)
{
    const char *const args[] = {"integration_harness", NULL};
    const char *const env[] = {"SPINDLE_TEST_SKIP_DEMO=1", NULL};
    struct proc *p = proc_spawn_exe("/proc/self/exe", args, env);
    if (p == NULL)
        return NULL;
    int code = -1;
    char *out = NULL;
    if (proc_wait(p, HS_STOP_MS, &code) == 0 && code == 0)
        out = strdup(proc_output(p, PROC_STDOUT, NULL));
    proc_free(p);
    return out;
}

/* The test that cannot run is reported skipped, counted under "Inactive" in the Run Summary (not
 * "Passed", not "Failed"), and the run succeeds. */
static void test_spindle_suite_add_skip_inactive(void)
{
    char *out = run_demo();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "skipped (inactive): integration_harness/never_run: "
                                       "cannot run here"));
    CU_ASSERT_PTR_NULL(strstr(out, "never_run ..."));
    /* "               tests      2      1      1      0        1" */
    const char *tests = strstr(out, "  tests ");
    unsigned total = 0, ran = 0, passed = 0, failed = 9, inactive = 0;
    CU_ASSERT_TRUE(tests != NULL && sscanf(tests, " tests %u %u %u %u %u", &total, &ran, &passed,
                                           &failed, &inactive) == 5);
    CU_ASSERT_EQUAL(total, 2);
    CU_ASSERT_EQUAL(ran, 1);
    CU_ASSERT_EQUAL(passed, 1);
    CU_ASSERT_EQUAL(failed, 0);
    CU_ASSERT_EQUAL(inactive, 1);
    free(out);
}

/* Next to CUnit's Run Summary and its "Elapsed time" (CPU time), the runner prints the wall time
 * of each suite and of the whole run. */
static void test_runner_prints_wall_times(void)
{
    char *out = run_demo();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    double suite_s = -1, run_s = -1;
    const char *suite = strstr(out, "Suite integration_harness: wall time ");
    const char *run = strstr(out, "Wall time    = ");
    CU_ASSERT_TRUE(suite != NULL &&
                   sscanf(suite, "Suite integration_harness: wall time %lf seconds", &suite_s) ==
                       1);
    CU_ASSERT_TRUE(run != NULL && sscanf(run, "Wall time    = %lf seconds", &run_s) == 1);
    CU_ASSERT_TRUE(suite_s >= 0 && run_s >= suite_s);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "Run Summary:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "Elapsed time = "));
    CU_ASSERT_TRUE(suite != NULL && run != NULL && suite < run); /* per suite, then the total */
    free(out);
}

int suite_integration_harness(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_hs_wait_exit_after_sigterm),
        SPINDLE_TEST(test_hs_wait_exit_bounded),
        SPINDLE_TEST(test_hs_skip_no_ipv6_agrees),
        SPINDLE_TEST(test_spindle_suite_add_skip_inactive),
        SPINDLE_TEST(test_runner_prints_wall_times),
    };
    static const struct spindle_test demo[] = {
        SPINDLE_TEST_UNLESS(never_run, skip_always),
        SPINDLE_TEST(demo_pass),
    };
    if (getenv("SPINDLE_TEST_SKIP_DEMO") != NULL)
        return SPINDLE_SUITE_ADD("integration_harness", NULL, NULL, demo);
    return SPINDLE_SUITE_ADD("integration_harness", NULL, NULL, tests);
}
