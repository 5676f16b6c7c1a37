/* runner.c - the CUnit runner shared by the unit and the integration test binaries.
 *
 * The Makefile generates SPINDLE_SUITES, a list of SPINDLE_SUITE(name) lines, one per test file;
 * each test file defines `int name(void)` that adds its suite to the registry and returns a
 * CUE_* code. With arguments, only the suites whose names are given run.
 *
 * CUnit's "Elapsed time" line is CPU time (clock()): an integration suite that mostly waits on the
 * server shows almost nothing there. The runner prints each suite's wall time when the suite
 * completes, and the whole run's after CUnit's Run Summary (which stays as CUnit prints it).
 */
#include <CUnit/Basic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SPINDLE_SUITE(name) int name(void);
#include SPINDLE_SUITES
#undef SPINDLE_SUITE

struct suite_entry {
    const char *name;
    int (*add)(void);
};

static const struct suite_entry suites[] = {
#define SPINDLE_SUITE(name) {#name, name},
#include SPINDLE_SUITES
#undef SPINDLE_SUITE
};

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double suite_started;

static void on_suite_start(const CU_pSuite suite)
{
    (void)suite;
    suite_started = wall_now();
}

static void on_suite_complete(const CU_pSuite suite, const CU_pFailureRecord failures)
{
    (void)failures;
    /* CUnit ends a test line without a newline: start one, leave the end to the next line. */
    printf("\n  Suite %s: wall time %.3f seconds", suite->pName, wall_now() - suite_started);
}

static int wanted(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++) {
        /* "suite_context_ctx" or just "context_ctx" */
        if (strcmp(argv[i], name) == 0 || strcmp(argv[i], name + strlen("suite_")) == 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* A peer closing a socket must fail a write, not kill the test binary. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 2;
    }
    int added = 0;
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        if (!wanted(suites[i].name, argc, argv))
            continue;
        if (suites[i].add() != CUE_SUCCESS) {
            fprintf(stderr, "CUnit: adding %s: %s\n", suites[i].name, CU_get_error_msg());
            CU_cleanup_registry();
            return 2;
        }
        added++;
    }
    if (added == 0) {
        CU_cleanup_registry();
        if (argc > 1) {
            /* `make test TESTS=...` gives the same names to the unit and the integration runner;
             * the names belong to one of them. */
            printf("no suite of this binary is named; nothing to run here\n");
            return 0;
        }
        fprintf(stderr, "no test suite is linked in\n");
        return 2;
    }
    /* A test registered inactive (tests/suite.h: it cannot run on this machine) is reported as
     * such in the Run Summary, not as a failure and not as a pass. */
    CU_set_fail_on_inactive(CU_FALSE);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_set_suite_start_handler(on_suite_start);
    CU_set_suite_complete_handler(on_suite_complete);
    double run_started = wall_now();
    CU_basic_run_tests();
    printf("Wall time    = %8.3f seconds (Elapsed time above is CPU time)\n",
           wall_now() - run_started);
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (run == 0) {
        fprintf(stderr, "no test ran\n");
        return 2;
    }
    return failed ? 1 : 0;
}
