/* test_limits.c - every configured limit of the HTTP front end, end to end, with its status.
 *
 * Design: each test starts a server whose limit under test is set low through a config override,
 * crosses it with raw bytes, and checks the status, the JSON error code and whether the connection
 * closes. Time limits are set to a few hundred milliseconds and checked from both sides: the
 * answer must not come before the limit (minus a little scheduling slack) and must come within a
 * bound. Every wait is a poll() with a deadline.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_limits(void);

#define GET_HEALTHZ "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"

static bool header_is(const struct hs_resp *r, const char *name, const char *want)
{
    char v[512];
    return hs_resp_header(r, name, v, sizeof(v)) && strcmp(v, want) == 0;
}

/* Send `req` (len bytes) on a new connection, expect an error `status`/`code` with Connection:
 * close, then the end of the connection with nothing else answered. */
static void expect_closing_error(struct hs_server *s, const char *req, size_t len, int status,
                                 const char *code)
{
    struct hs_conn *c = hs_connect(s);
    struct hs_resp r = {0};
    HS_CHECK(c != NULL);
    /* The server may answer and close before the last byte is sent: that is fine. */
    int rc = hs_send(c, req, len, HS_IO_MS);
    HS_CHECK(rc == 0 || rc == -EPIPE || rc == -ECONNRESET);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, status, code));
    if (!hs_resp_is_error(&r, status, code))
        fprintf(stderr, "\n    expected %d %s, got:\n%s\n%s\n", status, code, r.head, r.body);
    CU_ASSERT(header_is(&r, "Connection", "close"));
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
    CU_ASSERT_EQUAL(c->len, 0);
out:
    hs_resp_fini(&r);
    hs_close(c);
}

/* A server with `over` that is still healthy after the test (a fresh connection is served). */
static void expect_healthy(struct hs_server *s)
{
    struct hs_resp r = {0};
    CU_ASSERT(hs_alive(s));
    CU_ASSERT_EQUAL(hs_roundtrip(s, GET_HEALTHZ, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    hs_resp_fini(&r);
}

/* ---- sizes ---------------------------------------------------------------------------------- */

static void test_limit_uri_too_long(void)
{
    const char *const over[] = {"limits.max_request_line=1024", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    char req[4096];
    HS_CHECK(s != NULL);
    int n = snprintf(req, sizeof(req), "GET /");
    memset(req + n, 'a', 2000);
    n += 2000;
    n += snprintf(req + n, sizeof(req) - (size_t)n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_closing_error(s, req, (size_t)n, 414, "uri_too_long");
    /* Just under the limit is fine (404: no such path, but parsed). */
    n = snprintf(req, sizeof(req), "GET /");
    memset(req + n, 'b', 900);
    n += 900;
    snprintf(req + n, sizeof(req) - (size_t)n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    CU_ASSERT_EQUAL(hs_roundtrip(s, req, &r), 0);
    CU_ASSERT_EQUAL(r.status, 404);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_limit_header_bytes(void)
{
    const char *const over[] = {"limits.max_header_bytes=2048", NULL};
    struct hs_server *s = hs_start(over);
    char req[8192];
    HS_CHECK(s != NULL);
    int n = snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'x', 3000);
    n += 3000;
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n\r\n");
    expect_closing_error(s, req, (size_t)n, 431, "headers_too_large");
    expect_healthy(s);
out:
    HS_FINISH(s);
}

static void test_limit_header_count(void)
{
    const char *const over[] = {"limits.max_headers=10", NULL};
    struct hs_server *s = hs_start(over);
    char req[4096];
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    int n = snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 20; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "X-H%d: %d\r\n", i, i);
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    expect_closing_error(s, req, (size_t)n, 431, "headers_too_large");
    /* Ten headers are allowed. */
    n = snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 9; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "X-H%d: %d\r\n", i, i);
    snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    CU_ASSERT_EQUAL(hs_roundtrip(s, req, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* 413 is decided from Content-Length alone: no body byte is sent before the answer arrives. */
static void test_limit_body_content_length(void)
{
    const char *const over[] = {"limits.max_body_bytes=1000", NULL};
    struct hs_server *s = hs_start(over);
    static const char req[] = "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n";
    HS_CHECK(s != NULL);
    expect_closing_error(s, req, strlen(req), 413, "body_too_large");
    /* With Expect: 100-continue, the same: 413 and no 100 first. */
    static const char req2[] = "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n"
                               "Expect: 100-continue\r\n\r\n";
    expect_closing_error(s, req2, strlen(req2), 413, "body_too_large");
    expect_healthy(s);
out:
    HS_FINISH(s);
}

static void test_limit_body_chunked(void)
{
    const char *const over[] = {"limits.max_body_bytes=1000", NULL};
    struct hs_server *s = hs_start(over);
    char req[8192];
    HS_CHECK(s != NULL);
    int n = snprintf(req, sizeof(req),
                     "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    /* Six chunks of 400: the third one crosses the limit. */
    for (int i = 0; i < 6; i++) {
        n += snprintf(req + n, sizeof(req) - (size_t)n, "190\r\n");
        memset(req + n, 'c', 400);
        n += 400;
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    }
    n += snprintf(req + n, sizeof(req) - (size_t)n, "0\r\n\r\n" GET_HEALTHZ);
    expect_closing_error(s, req, (size_t)n, 413, "body_too_large");
    expect_healthy(s);
out:
    HS_FINISH(s);
}

/* A chunk-size line announcing more than max_body_bytes (alone, or with what came before) is
 * answered 413 at once: the server does not wait for the chunk's bytes. */
static void test_limit_body_chunk_size_announced(void)
{
    const char *const over[] = {"limits.max_body_bytes=1000", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    char req[2048];
    HS_CHECK(s != NULL);
    static const char head[] =
        "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    int n = snprintf(req, sizeof(req), "%s100000\r\n", head); /* 1 MiB, no byte of it sent */
    expect_closing_error(s, req, (size_t)n, 413, "body_too_large");
    n = snprintf(req, sizeof(req), "%s258\r\n", head); /* 600 bytes, then 401 more announced */
    memset(req + n, 'c', 600);
    n += 600;
    n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n191\r\n");
    expect_closing_error(s, req, (size_t)n, 413, "body_too_large");
    n = snprintf(req, sizeof(req), "%s3e8\r\n", head); /* exactly the limit is fine */
    memset(req + n, 'c', 1000);
    n += 1000;
    snprintf(req + n, sizeof(req) - (size_t)n, "\r\n0\r\n\r\n");
    CU_ASSERT_EQUAL(hs_roundtrip(s, req, &r), 0);
    CU_ASSERT_EQUAL(r.status, 405);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* ---- query string and per-request headers --------------------------------------------------- */

static void test_limit_query_params(void)
{
    const char *const over[] = {"limits.max_query_params=4", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "GET /healthz?a=1&b=2&c=3&d=4 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(hs_exchange(c, "GET /healthz?a=1&b=2&c=3&d=4&e=5 HTTP/1.1\r\nHost: t\r\n\r\n", &r) ==
             0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_query"));
    HS_CHECK(hs_exchange(c, "GET /healthz?a=%zz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_query"));
    HS_CHECK(hs_exchange(c, "GET /healthz?a=%4 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_query"));
    /* bad_query keeps the connection. */
    HS_CHECK(hs_exchange(c, "GET /healthz?a=%41%42 HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_limit_timeout_header_invalid(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    static const char *const bad[] = {"abc", "0", "-5", "12x", ""};
    char req[256];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Timeout-Ms: %s\r\n\r\n",
                 bad[i]);
        HS_CHECK(hs_exchange(c, req, &r) == 0);
        CU_ASSERT(hs_resp_is_error(&r, 400, "invalid_timeout"));
    }
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Timeout-Ms: 250\r\n\r\n", &r) ==
             0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- time limits ---------------------------------------------------------------------------- */

/* Send `partial`, then nothing: expect a 408 after about `limit_ms` and the end of the
 * connection. */
static void expect_timeout_408(const char *const *over, const char *partial, long limit_ms)
{
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(hs_send_str(c, partial) == 0);
    HS_CHECK(hs_read_response(c, &r, false, (int)limit_ms + HS_IO_MS) == 0);
    long long took = hs_now_ms() - t0;
    CU_ASSERT(hs_resp_is_error(&r, 408, "request_timeout"));
    CU_ASSERT(header_is(&r, "Connection", "close"));
    CU_ASSERT(took >= limit_ms - 50);
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
    expect_healthy(s);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_limit_header_timeout(void)
{
    const char *const over[] = {"server.header_timeout_ms=300", NULL};
    expect_timeout_408(over, "GET /healthz HTTP/1.1\r\nHost: t\r\n", 300);
}

static void test_limit_body_timeout(void)
{
    const char *const over[] = {"server.body_timeout_ms=300", NULL};
    expect_timeout_408(over, "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
                       300);
}

static void test_limit_idle_timeout(void)
{
    const char *const over[] = {"server.idle_timeout_ms=300", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    long long t0 = hs_now_ms();
    /* No answer, just the end of the connection. */
    CU_ASSERT(hs_closed_quietly(c, 300 + HS_IO_MS));
    CU_ASSERT_EQUAL(c->len, 0);
    CU_ASSERT(hs_now_ms() - t0 >= 250);
    expect_healthy(s);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A client that never reads a large stream of answers is cut off by the write timeout. The
 * answers come from many pipelined requests (no endpoint answers megabytes on its own); the
 * client's receive buffer is kept tiny so the server's writes stall quickly. */
static void test_limit_write_timeout(void)
{
    enum { N = 60000 };
    const char *const over[] = {"server.write_timeout_ms=300", "log.access=false", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    size_t answers = 0;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    int small = 4096;
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    /* Send until the server stops reading (its writes stalled) or everything is sent. */
    static const char one[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    size_t sent = 0, total = N * (sizeof(one) - 1);
    long long quiet_since = hs_now_ms();
    while (sent < total && hs_now_ms() - quiet_since < 300) {
        ssize_t w = send(c->fd, one + sent % (sizeof(one) - 1),
                         sizeof(one) - 1 - sent % (sizeof(one) - 1), MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            quiet_since = hs_now_ms();
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            break;
        } else {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            (void)poll(&pfd, 1, 50);
        }
    }
    /* Without reading, wait for the cut: an RST (the server had unread input) or a FIN. */
    struct pollfd pfd = {.fd = c->fd, .events = POLLRDHUP};
    long long t0 = hs_now_ms();
    while (hs_now_ms() - t0 < 300 + HS_IO_MS) {
        pfd.revents = 0;
        if (poll(&pfd, 1, 100) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
            break;
    }
    /* Now read whatever is left: a server that did not cut would deliver all N answers. */
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
    for (const char *p = c->buf; p != NULL && (p = strstr(p, "HTTP/1.1 200")) != NULL; p++)
        answers++;
    CU_ASSERT(answers < N);
    expect_healthy(s);
out:
    hs_close(c);
    HS_FINISH(s);
}

/* ---- connections ---------------------------------------------------------------------------- */

static void test_limit_max_connections(void)
{
    enum { MAX = 4 };
    const char *const over[] = {"server.max_connections=4", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c[MAX] = {NULL}, *extra = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    for (int i = 0; i < MAX; i++) {
        HS_CHECK((c[i] = hs_connect(s)) != NULL);
        HS_CHECK(hs_exchange(c[i], GET_HEALTHZ, &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
    /* One more: accepted, answered 503, closed. */
    HS_CHECK((extra = hs_connect(s)) != NULL);
    HS_CHECK(hs_read_response(extra, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "too_many_connections"));
    CU_ASSERT(header_is(&r, "Connection", "close"));
    CU_ASSERT(hs_closed_quietly(extra, HS_IO_MS));
    hs_close(extra);
    extra = NULL;
    /* The others are unaffected. */
    HS_CHECK(hs_exchange(c[0], GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* Once one closes, a new connection is served (the server notices the close quickly). */
    hs_close(c[MAX - 1]);
    c[MAX - 1] = NULL;
    bool served = false;
    long long t0 = hs_now_ms();
    while (!served && hs_now_ms() - t0 < HS_IO_MS) {
        hs_close(extra);
        HS_CHECK((extra = hs_connect(s)) != NULL);
        served = hs_exchange(extra, GET_HEALTHZ, &r) == 0 && r.status == 200;
    }
    CU_ASSERT(served);
out:
    hs_resp_fini(&r);
    hs_close(extra);
    for (int i = 0; i < MAX; i++)
        hs_close(c[i]);
    HS_FINISH(s);
}

static void test_limit_max_keepalive_requests(void)
{
    const char *const over[] = {"server.max_keepalive_requests=3", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    for (int i = 0; i < 3; i++) {
        HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_EQUAL(header_is(&r, "Connection", "close"), i == 2);
    }
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_limits(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_limit_uri_too_long),
        SPINDLE_TEST(test_limit_header_bytes),
        SPINDLE_TEST(test_limit_header_count),
        SPINDLE_TEST(test_limit_body_content_length),
        SPINDLE_TEST(test_limit_body_chunked),
        SPINDLE_TEST(test_limit_body_chunk_size_announced),
        SPINDLE_TEST(test_limit_query_params),
        SPINDLE_TEST(test_limit_timeout_header_invalid),
        SPINDLE_TEST(test_limit_header_timeout),
        SPINDLE_TEST(test_limit_body_timeout),
        SPINDLE_TEST(test_limit_idle_timeout),
        SPINDLE_TEST(test_limit_write_timeout),
        SPINDLE_TEST(test_limit_max_connections),
        SPINDLE_TEST(test_limit_max_keepalive_requests),
    };
    return SPINDLE_SUITE_ADD("integration_limits", NULL, NULL, tests);
}
