/* test_http.c - end-to-end HTTP behaviour of the real binary: routes, ids, keep-alive, framing.
 *
 * Design: every test starts its own server (harness.h) on an ephemeral loopback port, talks raw
 * HTTP/1.1 to it, checks the answers byte for byte where the spec fixes them, reads the access
 * lines back from the log file, and stops the server with SIGTERM expecting exit code 0 (so a
 * leak under AddressSanitizer or a race under ThreadSanitizer fails the test that caused it).
 * Every network call is bounded by HS_IO_MS; nothing sleeps.
 */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_http(void);

#define GET_HEALTHZ "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
#define TRACE_ID    "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT_ID   "00f067aa0ba902b7"

/* True when the common headers every answer carries are there. */
static bool has_common_headers(const struct hs_resp *r)
{
    char v[256];
    return hs_resp_header(r, "X-Request-Id", v, sizeof(v)) && v[0] != '\0' &&
           hs_resp_header(r, "Date", v, sizeof(v)) && strstr(v, "GMT") != NULL &&
           hs_resp_header(r, "Server", v, sizeof(v)) && strcmp(v, "spindle") == 0 &&
           hs_resp_header_count(r, "Content-Length") == 1;
}

static bool header_is(const struct hs_resp *r, const char *name, const char *want)
{
    char v[512];
    return hs_resp_header(r, name, v, sizeof(v)) && strcmp(v, want) == 0;
}

static bool is_hex(const char *s, size_t len)
{
    if (s == NULL || strlen(s) != len)
        return false;
    return strspn(s, "0123456789abcdef") == len;
}

/* ---- health routes -------------------------------------------------------------------------- */

static void test_healthz_get(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "ok\n");
    CU_ASSERT(header_is(&r, "Content-Length", "3"));
    CU_ASSERT(header_is(&r, "Content-Type", "text/plain") ||
              header_is(&r, "Content-Type", "text/plain; charset=utf-8"));
    CU_ASSERT(has_common_headers(&r));
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* HEAD: the GET's headers and Content-Length, no body. A body sent anyway would be read as the
 * start of the next answer on the same connection, which the second exchange would reject. */
static void head_check(const char *path, const char *length)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char req[128];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "Content-Length", length));
    CU_ASSERT(has_common_headers(&r));
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "ok\n");
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_healthz_head(void)
{
    head_check("/healthz", "3");
}

static void test_readyz_get(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "ready\n");
    CU_ASSERT(has_common_headers(&r));
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_readyz_head(void)
{
    head_check("/readyz", "6");
}

/* ---- routing errors ------------------------------------------------------------------------- */

static void test_route_not_found(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *doc = NULL;
    char rid[256] = "";
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 404, "not_found"));
    CU_ASSERT(has_common_headers(&r));
    /* The request_id in the body is the one in the header. */
    CU_ASSERT(hs_resp_header(&r, "X-Request-Id", rid, sizeof(rid)));
    doc = hs_resp_json(&r);
    const char *body_rid = hs_json_str(json_object_get(doc, "error"), "request_id");
    CU_ASSERT(body_rid != NULL && strcmp(body_rid, rid) == 0);
    /* 404 keeps the connection. */
    CU_ASSERT(!header_is(&r, "Connection", "close"));
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    json_decref(doc);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_route_method_not_allowed(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) ==
             0);
    CU_ASSERT(hs_resp_is_error(&r, 405, "method_not_allowed"));
    CU_ASSERT(header_is(&r, "Allow", "GET, HEAD"));
    CU_ASSERT(has_common_headers(&r));
    HS_CHECK(hs_exchange(c, "DELETE /readyz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 405, "method_not_allowed"));
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- request id ----------------------------------------------------------------------------- */

static void test_request_id_kept(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s,
                          "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-42.abc_Z\r\n\r\n",
                          &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "X-Request-Id", "req-42.abc_Z"));
    line = hs_log_wait(s, "access", "request_id", "req-42.abc_Z", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    /* Any visible ASCII is kept (a space is not: see test_request_id_invalid_generated). */
    HS_CHECK(hs_roundtrip(s,
                          "GET /healthz HTTP/1.1\r\nHost: t\r\n"
                          "X-Request-Id: {\"a\":[1]}/?#%~!\\\r\n\r\n",
                          &r) == 0);
    CU_ASSERT(header_is(&r, "X-Request-Id", "{\"a\":[1]}/?#%~!\\"));
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* An invalid incoming id is replaced by a generated one, which the access line carries. */
static void request_id_replaced(const char *header_line)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    json_t *line = NULL;
    char req[1024], rid[256] = "";
    HS_CHECK(s != NULL);
    snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\n%s\r\n", header_line);
    HS_CHECK(hs_roundtrip(s, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(hs_resp_header(&r, "X-Request-Id", rid, sizeof(rid)));
    CU_ASSERT(strlen(rid) >= 8 && strlen(rid) <= 128);
    CU_ASSERT(strstr(header_line, rid) == NULL);
    line = hs_log_wait(s, "access", "request_id", rid, HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_request_id_invalid_generated(void)
{
    request_id_replaced("X-Request-Id: has space\r\n");
}

static void test_request_id_too_long_generated(void)
{
    char h[300];
    int n = snprintf(h, sizeof(h), "X-Request-Id: ");
    memset(h + n, 'a', 129);
    snprintf(h + n + 129, sizeof(h) - (size_t)n - 129, "\r\n");
    request_id_replaced(h);
}

static void test_request_id_absent_generated(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char a[256] = "", b[256] = "";
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT(hs_resp_header(&r, "X-Request-Id", a, sizeof(a)) && a[0] != '\0');
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT(hs_resp_header(&r, "X-Request-Id", b, sizeof(b)) && b[0] != '\0');
    CU_ASSERT(strcmp(a, b) != 0);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- tenant --------------------------------------------------------------------------------- */

static void tenant_logged(const char *header_line, const char *want)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    json_t *line = NULL;
    char req[512];
    HS_CHECK(s != NULL);
    snprintf(req, sizeof(req),
             "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: tenant-check\r\n%s\r\n",
             header_line);
    HS_CHECK(hs_roundtrip(s, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    line = hs_log_wait(s, "access", "request_id", "tenant-check", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "tenant") ? hs_json_str(line, "tenant") : "", want);
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_tenant_valid(void)
{
    tenant_logged("X-Tenant-Id: acme.Corp_1-x\r\n", "acme.Corp_1-x");
}

static void test_tenant_default(void)
{
    tenant_logged("", "default");
}

static void test_tenant_invalid(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char req[512], long_tenant[66];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: a/b\r\n\r\n", &r) ==
             0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "invalid_tenant"));
    CU_ASSERT(!header_is(&r, "Connection", "close"));
    memset(long_tenant, 't', 65);
    long_tenant[65] = '\0';
    snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Tenant-Id: %s\r\n\r\n",
             long_tenant);
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "invalid_tenant"));
    /* Keep-alive: the connection still serves. */
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- trace context -------------------------------------------------------------------------- */

static void test_traceparent_kept(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s,
                          "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: tp-1\r\n"
                          "traceparent: 00-" TRACE_ID "-" PARENT_ID "-01\r\n\r\n",
                          &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    line = hs_log_wait(s, "access", "request_id", "tp-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    const char *trace = hs_json_str(line, "trace_id");
    const char *span = hs_json_str(line, "span_id");
    CU_ASSERT(trace != NULL && strcmp(trace, TRACE_ID) == 0);
    /* The request has its own span; the parent's id is not reused. */
    CU_ASSERT(is_hex(span, 16) && strcmp(span, PARENT_ID) != 0);
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void traceparent_replaced(const char *value)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    json_t *line = NULL;
    char req[512];
    HS_CHECK(s != NULL);
    snprintf(req, sizeof(req),
             "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: tp-2\r\ntraceparent: %s\r\n\r\n",
             value);
    HS_CHECK(hs_roundtrip(s, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    line = hs_log_wait(s, "access", "request_id", "tp-2", HS_IO_MS);
    HS_CHECK(line != NULL);
    const char *trace = hs_json_str(line, "trace_id");
    CU_ASSERT(is_hex(trace, 32) && strcmp(trace, TRACE_ID) != 0 &&
              strcmp(trace, "00000000000000000000000000000000") != 0);
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_traceparent_malformed_new_trace(void)
{
    /* Upper-case hex is not allowed by the W3C format. */
    traceparent_replaced("00-4BF92F3577B34DA6A3CE929D0E0E4736-" PARENT_ID "-01");
}

static void test_traceparent_zero_trace_new_trace(void)
{
    traceparent_replaced("00-00000000000000000000000000000000-" PARENT_ID "-01");
}

static void test_traceparent_bad_version_new_trace(void)
{
    traceparent_replaced("ff-" TRACE_ID "-" PARENT_ID "-01");
}

/* ---- connection handling -------------------------------------------------------------------- */

static void test_keepalive_sequential(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    for (int i = 0; i < 10; i++) {
        HS_CHECK(hs_exchange(c, i % 2 ? GET_HEALTHZ : "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n",
                             &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT(!header_is(&r, "Connection", "close"));
    }
    HS_CHECK(hs_log_wait_count(s, "access", 10, HS_IO_MS) == 10);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* 100 requests in one write: 100 answers, in order (each echoes its X-Request-Id). */
static void test_pipeline_100_in_order(void)
{
    enum { N = 100 };
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *all = NULL;
    size_t len = 0;
    FILE *f = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((f = open_memstream(&all, &len)) != NULL);
    for (int i = 0; i < N; i++)
        fprintf(f, "GET /%s HTTP/1.1\r\nHost: t\r\nX-Request-Id: pipe-%03d\r\n\r\n",
                i % 10 == 9 ? "nope" : "healthz", i);
    int closed = fclose(f);
    f = NULL;
    HS_CHECK(closed == 0);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send(c, all, len, HS_IO_MS) == 0);
    for (int i = 0; i < N; i++) {
        char want[32], got[64] = "";
        snprintf(want, sizeof(want), "pipe-%03d", i);
        HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
        CU_ASSERT_EQUAL(r.status, i % 10 == 9 ? 404 : 200);
        CU_ASSERT(hs_resp_header(&r, "X-Request-Id", got, sizeof(got)) && strcmp(got, want) == 0);
    }
    /* Nothing more than the 100 answers. */
    CU_ASSERT_EQUAL(c->len, 0);
out:
    if (f != NULL)
        fclose(f);
    free(all);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* A chunked body is read whole (the next request on the connection is parsed correctly). */
static void test_chunked_request_body(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: chunky\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n"
                            "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
                            "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 405, "method_not_allowed"));
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "ok\n");
    line = hs_log_wait(s, "access", "request_id", "chunky", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT(hs_json_int(line, "bytes_in", -1) >= 12);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Expect: 100-continue gets the interim answer before the body is sent. */
static void test_expect_100_continue(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                            "Expect: 100-continue\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 100);
    CU_ASSERT_EQUAL(r.body_len, 0);
    HS_CHECK(hs_send_str(c, "hello") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 405, "method_not_allowed"));
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_connection_close_honoured(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    /* The second request must not be answered: the first one closes the connection. */
    HS_CHECK(hs_send_str(c, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                            "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "Connection", "close"));
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
    CU_ASSERT_EQUAL(c->len, 0);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_http10_closes(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.0\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(r.body, "ok\n");
    CU_ASSERT(!header_is(&r, "Connection", "keep-alive"));
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_http10_keepalive(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(header_is(&r, "Connection", "keep-alive"));
    HS_CHECK(hs_exchange(c, "GET /readyz HTTP/1.0\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- access log ----------------------------------------------------------------------------- */

static void test_access_log_fields(void)
{
    static const char req[] = "GET /nope?x=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-1\r\n"
                              "X-Tenant-Id: t1\r\n"
                              "traceparent: 00-" TRACE_ID "-" PARENT_ID "-01\r\n\r\n";
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    struct sockaddr_in me;
    socklen_t ml = sizeof(me);
    char peer[64];
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(getsockname(c->fd, (struct sockaddr *)&me, &ml) == 0);
    snprintf(peer, sizeof(peer), "127.0.0.1:%u", ntohs(me.sin_port));
    HS_CHECK(hs_exchange(c, req, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 404);
    size_t wire_out = strlen(r.head) + 2 + r.body_len;
    line = hs_log_wait(s, "access", "request_id", "acc-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "method") ? hs_json_str(line, "method") : "", "GET");
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "path") ? hs_json_str(line, "path") : "", "/nope");
    CU_ASSERT_EQUAL(hs_json_int(line, "status", -1), 404);
    /* Bytes count the whole request and answer (head and body). */
    CU_ASSERT_EQUAL(hs_json_int(line, "bytes_in", -1), (long long)strlen(req));
    CU_ASSERT_EQUAL(hs_json_int(line, "bytes_out", -1), (long long)wire_out);
    json_t *total = json_object_get(line, "total_ms");
    CU_ASSERT(json_is_number(total) && json_number_value(total) >= 0 &&
              json_number_value(total) < HS_IO_MS);
    CU_ASSERT(json_is_number(json_object_get(line, "queue_ms")));
    CU_ASSERT(json_is_number(json_object_get(line, "run_ms")));
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "peer") ? hs_json_str(line, "peer") : "", peer);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "tenant") ? hs_json_str(line, "tenant") : "", "t1");
    CU_ASSERT(hs_json_str(line, "trace_id") != NULL &&
              strcmp(hs_json_str(line, "trace_id"), TRACE_ID) == 0);
    CU_ASSERT(is_hex(hs_json_str(line, "span_id"), 16));
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "level") ? hs_json_str(line, "level") : "", "info");
    CU_ASSERT_PTR_NULL(json_object_get(line, "reason"));
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

static void test_access_log_off(void)
{
    const char *const over[] = {"log.access=false", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: quiet\r\n\r\n",
                          &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* The stop flushes the log: after it, an access line would be there. */
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    line = hs_log_wait(s, "access", NULL, NULL, 0);
    CU_ASSERT_PTR_NULL(line);
    line = hs_log_wait(s, "spindle stopped", NULL, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL(line);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_free(s);
}

/* ---- start-up and listeners ----------------------------------------------------------------- */

static void test_startup_lines(void)
{
    struct hs_server *s = hs_start(NULL);
    json_t *started = NULL, *stopped = NULL;
    HS_CHECK(s != NULL);
    started = hs_log_wait(s, "spindle started", NULL, NULL, HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(started);
    CU_ASSERT(hs_port(s) > 0 && hs_port(s) < 65536);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    stopped = hs_log_wait(s, "spindle stopped", NULL, NULL, HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(stopped);
out:
    json_decref(started);
    json_decref(stopped);
    hs_free(s);
}

/* SIGTERM closes an idle keep-alive connection, exits 0, and the summary counts the work. */
static void test_stop_closes_idle_connection(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *stopped = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    for (int i = 0; i < 3; i++) {
        HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
    long long t0 = hs_now_ms();
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    CU_ASSERT(hs_now_ms() - t0 < HS_STOP_MS);
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
    stopped = hs_log_wait(s, "spindle stopped", NULL, NULL, HS_IO_MS);
    HS_CHECK(stopped != NULL);
    CU_ASSERT_EQUAL(hs_json_int(stopped, "requests", -1), 3);
    CU_ASSERT_EQUAL(hs_json_int(stopped, "connections", -1), 1);
out:
    json_decref(stopped);
    hs_resp_fini(&r);
    hs_close(c);
    hs_free(s);
}

static void test_ipv6_listen(void)
{
    const char *const over[] = {"server.listen=127.0.0.1:0, [::1]:0", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    const char *addr6;
    HS_CHECK(s != NULL);
    addr6 = hs_listen_addr(s, 1);
    HS_CHECK(addr6 != NULL && strncmp(addr6, "[::1]:", 6) == 0);
    HS_CHECK((c = hs_connect_host("::1", atoi(addr6 + 6), HS_IO_MS)) != NULL);
    HS_CHECK(hs_exchange(c, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    hs_close(c);
    c = NULL;
    /* The IPv4 listener still works next to it. */
    HS_CHECK(hs_roundtrip(s, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_http(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_healthz_get),
        SPINDLE_TEST(test_healthz_head),
        SPINDLE_TEST(test_readyz_get),
        SPINDLE_TEST(test_readyz_head),
        SPINDLE_TEST(test_route_not_found),
        SPINDLE_TEST(test_route_method_not_allowed),
        SPINDLE_TEST(test_request_id_kept),
        SPINDLE_TEST(test_request_id_invalid_generated),
        SPINDLE_TEST(test_request_id_too_long_generated),
        SPINDLE_TEST(test_request_id_absent_generated),
        SPINDLE_TEST(test_tenant_valid),
        SPINDLE_TEST(test_tenant_default),
        SPINDLE_TEST(test_tenant_invalid),
        SPINDLE_TEST(test_traceparent_kept),
        SPINDLE_TEST(test_traceparent_malformed_new_trace),
        SPINDLE_TEST(test_traceparent_zero_trace_new_trace),
        SPINDLE_TEST(test_traceparent_bad_version_new_trace),
        SPINDLE_TEST(test_keepalive_sequential),
        SPINDLE_TEST(test_pipeline_100_in_order),
        SPINDLE_TEST(test_chunked_request_body),
        SPINDLE_TEST(test_expect_100_continue),
        SPINDLE_TEST(test_connection_close_honoured),
        SPINDLE_TEST(test_http10_closes),
        SPINDLE_TEST(test_http10_keepalive),
        SPINDLE_TEST(test_access_log_fields),
        SPINDLE_TEST(test_access_log_off),
        SPINDLE_TEST(test_startup_lines),
        SPINDLE_TEST(test_stop_closes_idle_connection),
        SPINDLE_TEST_UNLESS(test_ipv6_listen, hs_skip_no_ipv6),
    };
    return SPINDLE_SUITE_ADD("integration_http", NULL, NULL, tests);
}
