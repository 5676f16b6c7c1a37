/* suite.h - one way for every test file to register its CUnit suite.
 *
 * Each test file ends with a table of its tests and one call:
 *
 *     int suite_context_ctx(void)
 *     {
 *         static const struct spindle_test tests[] = {
 *             SPINDLE_TEST(test_ctx_new_root),
 *             SPINDLE_TEST_UNLESS(test_ipv6_listen, hs_skip_no_ipv6),
 *         };
 *         return SPINDLE_SUITE_ADD("context_ctx", NULL, NULL, tests);
 *     }
 *
 * The CUnit suite is named like the suite function without its "suite_" prefix, so the name
 * printed by the runner is the one `make test TESTS=...` takes.
 *
 * A test that cannot run on this machine (no IPv6 loopback, say) is not turned into a pass: its
 * `skip` function returns why, the test is registered inactive, the reason is printed, and the
 * Run Summary counts it under "Inactive" (the runner does not count inactive tests as failures).
 *
 * Header-only: shared by the unit and the integration binaries without a link-time dependency.
 */
#ifndef SPINDLE_TEST_SUITE_H
#define SPINDLE_TEST_SUITE_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdio.h>

struct spindle_test {
    const char *name;
    CU_TestFunc fn;
    /* NULL, or a check run at registration: NULL when the test can run here, else a static
     * string saying why not (the test is then registered inactive). */
    const char *(*skip)(void);
};

#define SPINDLE_TEST(f)                                                                            \
    {                                                                                              \
#f, (f), NULL                                                                              \
    }
#define SPINDLE_TEST_UNLESS(f, skip)                                                               \
    {                                                                                              \
#f, (f), (skip)                                                                            \
    }

/* Add the suite `name` (borrowed; CUnit copies nothing, so a string literal) with the optional
 * `init`/`cleanup` functions and the `n` tests of `tests` (borrowed, static). Returns CUE_SUCCESS
 * or the CUnit error code (the registry then holds what was added so far; the runner cleans it). */
static inline int spindle_suite_add(const char *name, CU_InitializeFunc init,
                                    CU_CleanupFunc cleanup, const struct spindle_test *tests,
                                    size_t n)
{
    CU_pSuite s = CU_add_suite(name, init, cleanup);
    if (s == NULL)
        return CU_get_error();
    for (size_t i = 0; i < n; i++) {
        CU_pTest t = CU_add_test(s, tests[i].name, tests[i].fn);
        if (t == NULL)
            return CU_get_error();
        const char *why = tests[i].skip != NULL ? tests[i].skip() : NULL;
        if (why != NULL) {
            if (CU_set_test_active(t, CU_FALSE) != CUE_SUCCESS)
                return CU_get_error();
            printf("skipped (inactive): %s/%s: %s\n", name, tests[i].name, why);
        }
    }
    return CU_get_error();
}

#define SPINDLE_SUITE_ADD(name, init, cleanup, tests)                                              \
    spindle_suite_add((name), (init), (cleanup), (tests), sizeof(tests) / sizeof((tests)[0]))

#endif
