/* test_throttle.c - the fixed table of failing addresses (server/auth/throttle.c): windows,
 * blocks, and 10,000 addresses in a table of 64 slots without growing it or losing the block of
 * an address that keeps failing. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "server/auth/internal.h"
#include "tests/suite.h"

int suite_server_auth_throttle(void);

#define MS 1000000ull

static void test_srv_auth_throttle_fail_window_and_block(void)
{
    struct srv_auth_throttle *t = srv_auth_throttle_new(16);
    struct srv_auth_throttle_policy p = {
        .failures = 2, .window_ns = 100 * MS, .block_ns = 500 * MS};
    const unsigned char a[4] = {10, 0, 0, 1};
    bool started;
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_EQUAL(srv_auth_throttle_fail(t, &p, 4, a, 1 * MS, &started), 1);
    CU_ASSERT(!started);
    /* the window is over: the count starts again */
    CU_ASSERT_EQUAL(srv_auth_throttle_fail(t, &p, 4, a, 200 * MS, &started), 1);
    CU_ASSERT_EQUAL(srv_auth_throttle_blocked(t, 4, a, 200 * MS), 0);
    CU_ASSERT_EQUAL(srv_auth_throttle_fail(t, &p, 4, a, 250 * MS, &started), 2);
    CU_ASSERT(started);
    CU_ASSERT_EQUAL(srv_auth_throttle_blocked(t, 4, a, 250 * MS), 500 * MS);
    CU_ASSERT_EQUAL(srv_auth_throttle_blocked(t, 4, a, 700 * MS), 50 * MS);
    CU_ASSERT_EQUAL(srv_auth_throttle_blocked(t, 4, a, 750 * MS), 0);
    /* IPv6 and IPv4 are told apart, and the unknown address (family 0) is one slot */
    const unsigned char v6[16] = {[0] = 10, [3] = 1};
    CU_ASSERT_EQUAL(srv_auth_throttle_blocked(t, 6, v6, 300 * MS), 0);
    CU_ASSERT_EQUAL(srv_auth_throttle_fail(t, &p, 0, v6, 300 * MS, &started), 1);
    CU_ASSERT_EQUAL(srv_auth_throttle_fail(t, &p, 0, a, 300 * MS, &started), 2);
    struct srv_auth_throttle_policy off = {0};
    CU_ASSERT_EQUAL(srv_auth_throttle_fail(t, &off, 4, a, 1000 * MS, &started), 0);
    srv_auth_throttle_free(t);
}

/* 10,000 addresses fail once each through a 64-slot table: it never holds more than 64, and an
 * address that was throttled first stays throttled through the flood. */
static void test_srv_auth_throttle_bounded_under_flood(void)
{
    struct srv_auth_throttle *t = srv_auth_throttle_new(64);
    struct srv_auth_throttle_policy p = {
        .failures = 3, .window_ns = 100000 * MS, .block_ns = 100000 * MS};
    const unsigned char bad[4] = {203, 0, 113, 9};
    bool started = false;
    unsigned throttled, tracked;
    CU_ASSERT_FATAL(t != NULL);
    for (int i = 0; i < 3; i++)
        srv_auth_throttle_fail(t, &p, 4, bad, 1 * MS, &started);
    CU_ASSERT(started);
    for (unsigned i = 0; i < 10000; i++) {
        unsigned char addr[4] = {198, 18, (unsigned char)(i >> 8), (unsigned char)i};
        srv_auth_throttle_fail(t, &p, 4, addr, (2 + i) * MS, &started);
        CU_ASSERT(!started);
    }
    srv_auth_throttle_count(t, 20000 * MS, &throttled, &tracked);
    CU_ASSERT(tracked <= 64);
    CU_ASSERT(srv_auth_throttle_blocked(t, 4, bad, 20000 * MS) > 0);
    srv_auth_throttle_count(t, 20000 * MS, &throttled, &tracked);
    CU_ASSERT_EQUAL(throttled, 1);
    srv_auth_throttle_free(t);
    srv_auth_throttle_free(NULL);
}

int suite_server_auth_throttle(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_auth_throttle_fail_window_and_block),
        SPINDLE_TEST(test_srv_auth_throttle_bounded_under_flood),
    };
    return SPINDLE_SUITE_ADD("server_auth_throttle", NULL, NULL, tests);
}
