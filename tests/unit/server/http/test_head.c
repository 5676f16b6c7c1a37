/* test_head.c - strict request head checks (server/http/head.c). */
#include <CUnit/CUnit.h>
#include <string.h>

#include "server/http/head.h"
#include "tests/suite.h"

int suite_server_http_head(void);

static const struct srv_head_limits lim = {
    .max_request_line = 64, .max_header_bytes = 128, .max_headers = 4};

/* Scan `s` in one go; returns the verdict and fills *out. */
static enum srv_head_state scan(const char *s, struct srv_head_scan *out)
{
    srv_head_scan_init(out);
    return srv_head_scan(out, s, strlen(s), &lim);
}

static void expect_status(const char *s, int status)
{
    struct srv_head_scan sc;
    CU_ASSERT_EQUAL(scan(s, &sc), SRV_HEAD_ERROR);
    CU_ASSERT_EQUAL(sc.status, status);
    CU_ASSERT_PTR_NOT_NULL(sc.why);
}

static void test_srv_head_scan_accepts_valid(void)
{
    struct srv_head_scan sc;
    const char *s = "\r\nGET /x?a=1 HTTP/1.1\r\nHost: a\r\nX-Y:\tb c \r\n\r\nBODY";
    CU_ASSERT_EQUAL(scan(s, &sc), SRV_HEAD_DONE);
    CU_ASSERT_EQUAL(sc.head_len, strlen(s) - 4);
    CU_ASSERT_EQUAL(sc.headers, 2);
    CU_ASSERT_EQUAL(scan("GET / HTTP/1.0\r\n\r\n", &sc), SRV_HEAD_DONE);
}

static void test_srv_head_scan_incremental(void)
{
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct srv_head_scan sc;
    srv_head_scan_init(&sc);
    size_t n = strlen(s);
    for (size_t i = 1; i < n; i++)
        CU_ASSERT_EQUAL(srv_head_scan(&sc, s, i, &lim), SRV_HEAD_MORE);
    CU_ASSERT_EQUAL(srv_head_scan(&sc, s, n, &lim), SRV_HEAD_DONE);
    CU_ASSERT_EQUAL(sc.head_len, n);
}

static void test_srv_head_scan_rejects_lenient_framing(void)
{
    expect_status("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);      /* bare LF */
    expect_status("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);      /* bare LF in header */
    expect_status("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400); /* obs-fold */
    expect_status("GET / HTTP/1.1\r\nA : b\r\n\r\n", 400);      /* space before colon */
    expect_status("GET / HTTP/1.1\r\nA\t: b\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400); /* control byte */
    expect_status("GET /\x7f HTTP/1.1\r\n\r\n", 400);
    expect_status("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400); /* CR without LF */
    expect_status("GET / HTTP/1.1\r\n: b\r\n\r\n", 400);     /* empty name */
    expect_status("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400);
    expect_status("GET  / HTTP/1.1\r\n\r\n", 400); /* double space */
    expect_status("GET /\r\n\r\n", 400);           /* HTTP/0.9 */
    expect_status("GET / http/1.1\r\n\r\n", 400);
}

static void test_srv_head_scan_rejects_nul(void)
{
    struct srv_head_scan sc;
    const char s[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
    srv_head_scan_init(&sc);
    CU_ASSERT_EQUAL(srv_head_scan(&sc, s, sizeof(s) - 1, &lim), SRV_HEAD_ERROR);
    CU_ASSERT_EQUAL(sc.status, 400);
}

static void test_srv_head_scan_versions(void)
{
    expect_status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    expect_status("GET / HTTP/1.2\r\n\r\n", 505);
    expect_status("GET / HTTP/0.9\r\n\r\n", 505);
    expect_status("GET / HTTP/3\r\n\r\n", 400);
    /* the version is judged as soon as the request line ends, before any header */
    struct srv_head_scan sc;
    CU_ASSERT_EQUAL(scan("GET / HTTP/2.0\r\nHost", &sc), SRV_HEAD_ERROR);
    CU_ASSERT_EQUAL(sc.status, 505);
}

static void test_srv_head_scan_limits(void)
{
    char line[200];
    memset(line, 'a', sizeof(line));
    memcpy(line, "GET /", 5);
    line[sizeof(line) - 1] = '\0';
    expect_status(line, 414); /* decided before the line ends */
    expect_status("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", 431);
    char big[300];
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nA: %0150d\r\n\r\n", 0);
    expect_status(big, 431);
    struct srv_head_scan sc;
    CU_ASSERT_EQUAL(scan("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", &sc),
                    SRV_HEAD_DONE);
}

static bool host_ok(const char *v)
{
    return srv_head_host_valid(v, strlen(v));
}

static void test_srv_head_host_valid_forms(void)
{
    CU_ASSERT(host_ok("example.com"));
    CU_ASSERT(host_ok("example.com:8080"));
    CU_ASSERT(host_ok(""));   /* an empty authority */
    CU_ASSERT(host_ok("a:")); /* port = *DIGIT */
    CU_ASSERT(host_ok("127.0.0.1:80"));
    CU_ASSERT(host_ok("[::1]"));
    CU_ASSERT(host_ok("[2001:db8::7]:443"));
    CU_ASSERT(host_ok("[v1.fe80::a+en1]"));
    CU_ASSERT(host_ok("a%2Fb"));
    CU_ASSERT(host_ok("!$&'()*+,;=-._~"));
    CU_ASSERT(!host_ok("a b"));
    CU_ASSERT(!host_ok("a/b"));
    CU_ASSERT(!host_ok("user@a"));
    CU_ASSERT(!host_ok("a:b"));
    CU_ASSERT(!host_ok("a:1:2"));
    CU_ASSERT(!host_ok("a:123456"));
    CU_ASSERT(!host_ok("a%2"));
    CU_ASSERT(!host_ok("a%zz"));
    CU_ASSERT(!host_ok("[::1"));
    CU_ASSERT(!host_ok("[::1]x"));
    CU_ASSERT(!host_ok("[]"));
    CU_ASSERT(!host_ok("[g::1]"));
    CU_ASSERT(!host_ok("[v.x]"));
    CU_ASSERT(!host_ok("a\tb"));
    CU_ASSERT(!srv_head_host_valid("a\0b", 3));
}

int suite_server_http_head(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_head_scan_accepts_valid),
        SPINDLE_TEST(test_srv_head_scan_incremental),
        SPINDLE_TEST(test_srv_head_scan_rejects_lenient_framing),
        SPINDLE_TEST(test_srv_head_scan_rejects_nul),
        SPINDLE_TEST(test_srv_head_scan_versions),
        SPINDLE_TEST(test_srv_head_scan_limits),
        SPINDLE_TEST(test_srv_head_host_valid_forms),
    };
    return SPINDLE_SUITE_ADD("server_http_head", NULL, NULL, tests);
}
