/* test_conn.c - connections over a socketpair (server/http/conn.c, request.c, route.c, http.c):
 * pipelining, asynchronous answers, the deadline (504) and a client that leaves (499). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logging/log.h"
#include "server/api/api.h"
#include "server/http/http.h"
#include "server/http/internal.h"
#include "server/http/request.h"
#include "server/http/route.h"
#include "server/stream/stream.h"
#include "tests/suite.h"

int suite_server_http_conn(void);

struct fixture {
    struct ev_loop *loop;
    struct ctx *root;
    struct srv_http *h;
    int client;
    ev_timer later;
    struct srv_req *held;
    enum ctx_reason cancelled;
    int answer_rc;
    struct srv_chan *in, *out;
};

static struct fixture fx;

/* The defaults without access lines, for fixture_init_cfg. */
static struct srv_cfg fixture_cfg(void)
{
    struct srv_cfg cfg;
    srv_cfg_defaults(&cfg);
    cfg.log_access = false;
    return cfg;
}

static void fixture_init_cfg(struct srv_cfg cfg)
{
    memset(&fx, 0, sizeof(fx));
    log_set_level(LOG_LEVEL_ERROR);
    fx.loop = ev_loop_new(EVFLAG_AUTO);
    fx.root = ctx_new_root();
    fx.h = srv_http_new(fx.loop, &cfg, fx.root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx.h);
    CU_ASSERT_EQUAL(srv_health_routes_add(fx.h), 0);
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    CU_ASSERT_EQUAL_FATAL(srv_http_adopt_fd(fx.h, sv[0], "test-peer"), 0);
    fx.client = sv[1];
}

static void fixture_init(void)
{
    fixture_init_cfg(fixture_cfg());
}

static void fixture_fini(void)
{
    if (fx.client >= 0)
        close(fx.client);
    srv_http_free(fx.h);
    ctx_unref(fx.root);
    ev_loop_destroy(fx.loop);
}

/* Everything the server wrote, until it closed its side (ev_run has returned by then). */
static char *read_all(size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        ssize_t r = recv(fx.client, buf + n, cap - n, MSG_DONTWAIT);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static unsigned count(const char *hay, const char *needle)
{
    unsigned n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void send_str(const char *s)
{
    CU_ASSERT_EQUAL(send(fx.client, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static void test_conn_pipeline_in_order_then_close(void)
{
    fixture_init();
    send_str("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
             "HEAD /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /healthz "
             "HTTP/1.1\r\nHost: t\r\n\r\n");
    ev_run(fx.loop, 0); /* returns when the connection is gone */
    size_t len;
    char *out = read_all(&len);
    const char *a = strstr(out, "HTTP/1.1 200 OK");
    const char *b = strstr(out, "HTTP/1.1 404 Not Found");
    const char *c = a ? strstr(a + 1, "HTTP/1.1 200 OK") : NULL;
    CU_ASSERT(a != NULL && b != NULL && c != NULL && a < b && b < c);
    CU_ASSERT_EQUAL(count(out, "HTTP/1.1 "), 3); /* nothing after Connection: close */
    CU_ASSERT_EQUAL(count(out, "Connection: close"), 1);
    CU_ASSERT_PTR_NULL(strstr(out, "ready\n")); /* HEAD: no body */
    free(out);
    fixture_fini();
}

static void later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    fx.answer_rc = srv_req_answer(fx.held, 200, "text/plain", "late\n", 5);
    fx.held = NULL;
}

static void async_handler(struct srv_req *req)
{
    CU_ASSERT_PTR_EQUAL(ctx_current(), srv_req_ctx(req));
    CU_ASSERT_STRING_EQUAL(srv_req_query_get(req, "k")->value, "v w");
    fx.held = req;
    ev_timer_init(&fx.later, later_cb, 0.01, 0.0);
    ev_timer_start(fx.loop, &fx.later);
}

static void test_conn_async_answer(void)
{
    fixture_init();
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "POST", "/async", async_handler, NULL), 0);
    send_str("POST /async?k=v+w HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
             "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ev_run(fx.loop, 0);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_EQUAL(fx.answer_rc, 0);
    const char *late = strstr(out, "late\n");
    const char *ok = strstr(out, "ok\n");
    CU_ASSERT(late != NULL && ok != NULL && late < ok);
    free(out);
    fixture_fini();
}

static void on_cancel(struct srv_req *req, enum ctx_reason reason, void *arg)
{
    (void)arg;
    CU_ASSERT(ctx_cancelled(srv_req_ctx(req)));
    CU_ASSERT(srv_req_cancelled(req));
    fx.cancelled = reason;
    fx.answer_rc = srv_req_answer(req, 200, "text/plain", "too late\n", 9);
}

static void hanging_handler(struct srv_req *req)
{
    srv_req_on_cancel(req, on_cancel, NULL);
    if (strcmp(srv_req_path(req), "/leave") == 0)
        shutdown(fx.client, SHUT_WR); /* the client goes away while the handler runs */
}

static void test_conn_deadline_answers_504(void)
{
    fixture_init();
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "GET", "/hang", hanging_handler, NULL), 0);
    send_str("GET /hang HTTP/1.1\r\nHost: t\r\nX-Timeout-Ms: 20\r\nX-Request-Id: dl-1\r\n"
             "Connection: close\r\n\r\n");
    ev_run(fx.loop, 0);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "HTTP/1.1 504 Gateway Timeout"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"code\":\"deadline_exceeded\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "X-Request-Id: dl-1\r\n"));
    CU_ASSERT_PTR_NULL(strstr(out, "too late"));
    CU_ASSERT_EQUAL(fx.cancelled, CTX_REASON_DEADLINE);
    CU_ASSERT_EQUAL(fx.answer_rc, -ECANCELED);
    free(out);
    fixture_fini();
}

/* The handler's success comes after the deadline but before its timer ran: 504, not 200. */
static void overdue_handler(struct srv_req *req)
{
    ctx_set_deadline(srv_req_ctx(req), ctx_now_ns() - 1);
    fx.answer_rc = srv_req_answer(req, 200, "text/plain", "too late\n", 9);
}

static void test_conn_no_success_after_deadline(void)
{
    fixture_init();
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "GET", "/overdue", overdue_handler, NULL), 0);
    send_str("GET /overdue HTTP/1.1\r\nHost: t\r\nX-Timeout-Ms: 60000\r\n\r\n"
             "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ev_run(fx.loop, 0);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_EQUAL(fx.answer_rc, -ETIMEDOUT);
    const char *late = strstr(out, "HTTP/1.1 504 Gateway Timeout");
    const char *ok = strstr(out, "HTTP/1.1 200 OK");
    CU_ASSERT(late != NULL && ok != NULL && late < ok); /* the connection goes on */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"code\":\"deadline_exceeded\""));
    CU_ASSERT_PTR_NULL(strstr(out, "too late"));
    free(out);
    fixture_fini();
}

/* The handler's success is ready half a millisecond before the deadline: it could not reach the
 * client in time, so 504. */
static void nearly_overdue_handler(struct srv_req *req)
{
    ctx_set_deadline(srv_req_ctx(req), ctx_now_ns() + 500000);
    fx.answer_rc = srv_req_answer(req, 200, "text/plain", "too late\n", 9);
}

static void test_conn_no_success_just_before_deadline(void)
{
    fixture_init();
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "GET", "/nearly", nearly_overdue_handler, NULL), 0);
    send_str("GET /nearly HTTP/1.1\r\nHost: t\r\nX-Timeout-Ms: 60000\r\nConnection: close\r\n\r\n");
    ev_run(fx.loop, 0);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_EQUAL(fx.answer_rc, -ETIMEDOUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "HTTP/1.1 504 Gateway Timeout"));
    CU_ASSERT_PTR_NULL(strstr(out, "too late"));
    free(out);
    fixture_fini();
}

/* Every request is refused, as under overload. */
static void refusing_handler(struct srv_req *req)
{
    (void)srv_req_header_add(req, "Retry-After", "1");
    (void)srv_req_answer_error(req, 503, "queue_full", "the job queue is full");
}

/* A client that sends its next request at once after each refusal (here: pipelined) is held
 * retry_hold_ms after its third instant retry, and again after each further one; a request that
 * is not refused resets the count. */
static void test_conn_retry_storm_is_held(void)
{
    struct srv_cfg cfg = fixture_cfg();
    cfg.retry_hold_ms = 60;
    fixture_init_cfg(cfg);
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "POST", "/busy", refusing_handler, NULL), 0);

    /* Requests 2-4 are instant retries 1-3 (not held before reading: the hold starts with the
     * third), so 4, 5 and the health check after them wait; its 200 resets the count, 6-8 are
     * instant retries 1-2 (7, 8) and the last health check is the third: held. */
    const char *busy = "POST /busy HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    for (int i = 0; i < 5; i++)
        send_str(busy);
    send_str("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 0; i < 3; i++)
        send_str(busy);
    send_str("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    uint64_t t0 = ctx_now_ns();
    ev_run(fx.loop, 0);
    uint64_t took = ctx_now_ns() - t0;
    struct srv_http_stats st;
    srv_http_stats_get(fx.h, &st);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_EQUAL(count(out, "HTTP/1.1 503 "), 8); /* every request is still answered */
    CU_ASSERT_EQUAL(count(out, "HTTP/1.1 200 "), 2);
    CU_ASSERT_EQUAL(st.held, 4);
    CU_ASSERT(took >= 4 * 60 * 1000000ull); /* four holds of retry_hold_ms */
    free(out);
    fixture_fini();

    /* retry_hold_ms = 0: never held */
    cfg.retry_hold_ms = 0;
    fixture_init_cfg(cfg);
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "POST", "/busy", refusing_handler, NULL), 0);
    for (int i = 0; i < 6; i++)
        send_str(busy);
    send_str("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ev_run(fx.loop, 0);
    srv_http_stats_get(fx.h, &st);
    out = read_all(&len);
    CU_ASSERT_EQUAL(count(out, "HTTP/1.1 503 "), 6);
    CU_ASSERT_EQUAL(st.held, 0);
    free(out);
    fixture_fini();
}

static void test_conn_client_gone_cancels(void)
{
    fixture_init();
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "GET", "/leave", hanging_handler, NULL), 0);
    send_str("GET /leave HTTP/1.1\r\nHost: t\r\n\r\n");
    ev_run(fx.loop, 0);
    CU_ASSERT_EQUAL(fx.cancelled, CTX_REASON_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(fx.answer_rc, -ECANCELED);
    struct srv_http_stats st;
    srv_http_stats_get(fx.h, &st);
    CU_ASSERT_EQUAL(st.pending, 0);
    CU_ASSERT_EQUAL(st.open, 0);
    CU_ASSERT_EQUAL(st.requests, 1);
    fixture_fini();
}

static void test_conn_error_closes_without_parsing_more(void)
{
    fixture_init();
    send_str("GET /healthz HTTP/1.1\r\nHost: t\r\nX : y\r\n\r\nGET /healthz HTTP/1.1\r\nHost: "
             "t\r\n\r\n");
    ev_run(fx.loop, 0);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "HTTP/1.1 400 Bad Request"));
    CU_ASSERT_EQUAL(count(out, "HTTP/1.1 "), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "Connection: close"));
    free(out);
    fixture_fini();
}

static void test_conn_idle_connection_is_small(void)
{
    /* what an idle keep-alive connection keeps: the struct only (buffers are freed) */
    CU_ASSERT(sizeof(struct srv_conn) <= 1024);
    fixture_init();
    send_str("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    ev_run(fx.loop, EVRUN_ONCE);
    struct srv_conn *c = fx.h->conns;
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->phase, SRV_PH_IDLE);
    CU_ASSERT_PTR_NULL(c->rbuf);
    CU_ASSERT_PTR_NULL(c->out);
    CU_ASSERT_PTR_NULL(c->req);
    fixture_fini();
}

static bool sink_streams(struct srv_req *req)
{
    (void)req;
    return true;
}

static void sink_handler(struct srv_req *req)
{
    fx.held = req;
    fx.answer_rc = srv_req_stream_start(req, "text/plain", &fx.in, &fx.out);
}

/* Run the loop until nothing is pending (the socketpair's bytes are read). */
static void run_ready(void)
{
    for (int i = 0; i < 8; i++)
        ev_run(fx.loop, EVRUN_NOWAIT);
}

static void test_conn_stream_body_reads_widely(void)
{
    /* the head arrives in a small buffer; the body that follows is read in SRV_STREAM_RBUF
     * pieces, not in the head's buffer size */
    fixture_init();
    CU_ASSERT_EQUAL(srv_http_route_add(fx.h, "POST", "/sink", sink_handler, NULL), 0);
    CU_ASSERT_EQUAL(srv_http_route_stream(fx.h, "POST", "/sink", sink_streams), 0);
    send_str("POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             "4\r\nabcd\r\n");
    run_ready();
    CU_ASSERT_PTR_NOT_NULL_FATAL(fx.held);
    CU_ASSERT_EQUAL_FATAL(fx.answer_rc, 0);
    size_t piece = 64u * 1024u;
    char *body = malloc(piece);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'x', piece);
    send_str("10000\r\n");
    CU_ASSERT_EQUAL(send(fx.client, body, piece, MSG_NOSIGNAL), (ssize_t)piece);
    send_str("\r\n");
    run_ready();
    struct srv_conn *c = fx.h->conns;
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT(c->rcap >= SRV_STREAM_RBUF);
    CU_ASSERT_EQUAL(srv_chan_len(fx.in), 4 + piece);
    send_str("0\r\n\r\n");
    run_ready();
    CU_ASSERT_EQUAL(srv_req_stream_end(fx.held, 0, 0, NULL, NULL), 0);
    shutdown(fx.client, SHUT_WR);
    ev_run(fx.loop, 0);
    size_t len;
    char *out = read_all(&len);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "HTTP/1.1 200 OK"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\r\n0\r\n\r\n"));
    free(out);
    free(body);
    fixture_fini();
}

int suite_server_http_conn(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_conn_pipeline_in_order_then_close),
        SPINDLE_TEST(test_conn_async_answer),
        SPINDLE_TEST(test_conn_deadline_answers_504),
        SPINDLE_TEST(test_conn_no_success_after_deadline),
        SPINDLE_TEST(test_conn_no_success_just_before_deadline),
        SPINDLE_TEST(test_conn_retry_storm_is_held),
        SPINDLE_TEST(test_conn_client_gone_cancels),
        SPINDLE_TEST(test_conn_error_closes_without_parsing_more),
        SPINDLE_TEST(test_conn_idle_connection_is_small),
        SPINDLE_TEST(test_conn_stream_body_reads_widely),
    };
    return SPINDLE_SUITE_ADD("server_http_conn", NULL, NULL, tests);
}
