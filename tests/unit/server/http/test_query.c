/* test_query.c - query string parsing (server/http/query.c). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <string.h>

#include "server/http/query.h"
#include "tests/suite.h"

int suite_server_http_query(void);

static void test_srv_query_parse_decodes_pairs(void)
{
    struct srv_query q;
    const char *s = "a=1&b=x%20y+z&&c&d=&%41=%2b";
    CU_ASSERT_EQUAL_FATAL(srv_query_parse(s, strlen(s), 10, &q), 0);
    CU_ASSERT_EQUAL_FATAL(q.count, 5);
    CU_ASSERT_STRING_EQUAL(q.params[0].key, "a");
    CU_ASSERT_STRING_EQUAL(q.params[0].value, "1");
    CU_ASSERT_STRING_EQUAL(q.params[1].value, "x y z");
    CU_ASSERT_EQUAL(q.params[1].value_len, 5);
    CU_ASSERT_STRING_EQUAL(q.params[2].key, "c");
    CU_ASSERT_EQUAL(q.params[2].value_len, 0);
    CU_ASSERT_STRING_EQUAL(q.params[3].key, "d");
    CU_ASSERT_STRING_EQUAL(q.params[3].value, "");
    CU_ASSERT_STRING_EQUAL(q.params[4].key, "A");
    CU_ASSERT_STRING_EQUAL(q.params[4].value, "+");
    CU_ASSERT_PTR_EQUAL(srv_query_get(&q, "d"), &q.params[3]);
    CU_ASSERT_PTR_NULL(srv_query_get(&q, "zz"));
    srv_query_fini(&q);
    CU_ASSERT_EQUAL(q.count, 0);
}

static void test_srv_query_parse_keeps_nul_bytes(void)
{
    struct srv_query q;
    const char *s = "k=a%00b";
    CU_ASSERT_EQUAL_FATAL(srv_query_parse(s, strlen(s), 10, &q), 0);
    CU_ASSERT_EQUAL(q.params[0].value_len, 3);
    CU_ASSERT_EQUAL(memcmp(q.params[0].value, "a\0b", 3), 0);
    srv_query_fini(&q);
}

static void test_srv_query_parse_rejects_bad_escapes(void)
{
    struct srv_query q;
    const char *bad[] = {"a=%", "a=%4", "a=%zz", "a=%4g&b=1", "%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(srv_query_parse(bad[i], strlen(bad[i]), 10, &q), -EINVAL);
        CU_ASSERT_EQUAL(q.count, 0);
        CU_ASSERT_PTR_NULL(q.buf);
    }
}

static void test_srv_query_parse_limits_count(void)
{
    struct srv_query q;
    const char *s = "a=1&b=2&c=3";
    CU_ASSERT_EQUAL(srv_query_parse(s, strlen(s), 2, &q), -E2BIG);
    CU_ASSERT_EQUAL(srv_query_parse(s, strlen(s), 3, &q), 0);
    CU_ASSERT_EQUAL(q.count, 3);
    srv_query_fini(&q);
}

static void test_srv_query_parse_empty(void)
{
    struct srv_query q;
    CU_ASSERT_EQUAL(srv_query_parse("", 0, 0, &q), 0);
    CU_ASSERT_EQUAL(q.count, 0);
    CU_ASSERT_EQUAL(srv_query_parse("&&", 2, 0, &q), 0);
    CU_ASSERT_EQUAL(q.count, 0);
    srv_query_fini(&q);
}

int suite_server_http_query(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_query_parse_decodes_pairs),
        SPINDLE_TEST(test_srv_query_parse_keeps_nul_bytes),
        SPINDLE_TEST(test_srv_query_parse_rejects_bad_escapes),
        SPINDLE_TEST(test_srv_query_parse_limits_count),
        SPINDLE_TEST(test_srv_query_parse_empty),
    };
    return SPINDLE_SUITE_ADD("server_http_query", NULL, NULL, tests);
}
