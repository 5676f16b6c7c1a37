/* fuzz_http.c - libFuzzer target: arbitrary bytes through a connection's parsing and routing.
 *
 * Build and run with `make fuzz` (clang, -fsanitize=fuzzer,address,undefined); not part of the
 * server binary or the test suites.
 *
 * Design: one libev loop, one root context and the logger (level debug, writing to /dev/null so
 * every log line is still formatted, JSON escaping of hostile ids and paths included) are set up
 * once per process. Each input gets a fresh listener-less server (srv_http_new) with the health
 * routes plus two routes of its own: an echo that reads the body, headers and query parameters,
 * and an asynchronous one that answers from a later loop iteration (ev_idle), so answers that
 * arrive after the client went away are exercised too. The input is written into one end of a
 * socketpair whose other end is adopted as a connection (srv_http_adopt_fd).
 *
 * The first input byte picks how the client behaves: bit 0 = vanish (close its end right after
 * writing) instead of half-closing and reading every answer; bit 1 = write in pieces of
 * 1 + (byte >> 2) bytes with a loop iteration between pieces (incremental head scanning and
 * parsing) instead of one write. After the client is done the loop runs until the server has
 * closed the connection; a guard timer aborts when that takes longer than SRV_FUZZ_GUARD_S (a
 * connection that outlives its peer is a bug, and aborting makes libFuzzer keep the input).
 *
 * Limits are set low so the 8 KiB inputs reach every 413/414/431 path. Everything runs on the
 * fuzzer's thread, which is the loop thread; SIGPIPE is ignored as the server process blocks it.
 */
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "server/config.h"
#include "server/api/api.h"
#include "server/http/http.h"
#include "server/http/query.h"
#include "server/http/request.h"
#include "server/http/route.h"

#define SRV_FUZZ_GUARD_S 5.0

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ev_loop *srv_fuzz_loop;
static struct ctx *srv_fuzz_root;
static struct srv_cfg srv_fuzz_cfg;

/* ---- routes ---------------------------------------------------------------------------------- */

/* Echo: read everything a handler can read, answer the body back with a summary header. */
static void srv_fuzz_echo(struct srv_req *req)
{
    size_t len = 0;
    const void *body = srv_req_body(req, &len);
    size_t total = 0;
    for (size_t i = 0; i < srv_req_query_count(req); i++) {
        const struct srv_query_param *p = srv_req_query_at(req, i);
        total += p->key_len + p->value_len;
    }
    const struct srv_query_param *mode = srv_req_query_get(req, "mode");
    const char *agent = srv_req_header(req, "user-agent");
    char summary[96];
    snprintf(summary, sizeof(summary), "q=%zu;mode=%zu;ua=%zu;peer=%s", total,
             mode != NULL ? mode->value_len : 0, agent != NULL ? strlen(agent) : 0,
             srv_req_peer(req));
    (void)srv_req_header_add(req, "X-Fuzz", summary);
    (void)srv_req_header_add(req, "X-Bad", "a\r\nb"); /* refused: must not reach the wire */
    srv_req_set_timing(req, 1000, 2000);
    if (len > 0 && ((const unsigned char *)body)[0] == 'E')
        (void)srv_req_answer_error(req, 422, "fuzz_\"code\"", "message with \"quotes\"\n");
    else
        (void)srv_req_answer(req, 200, "application/octet-stream", body, len);
}

struct srv_fuzz_later {
    ev_idle idle;
    struct srv_req *req;
};

static void srv_fuzz_later_fire(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct srv_fuzz_later *l = (struct srv_fuzz_later *)w;
    ev_idle_stop(loop, w);
    /* Held: the answer frees the request and its reference to the context, and the server may
     * go on with pipelined requests (and log) before srv_req_answer() returns. */
    struct ctx *held = ctx_ref(srv_req_ctx(l->req));
    struct ctx *prev = ctx_enter(held);
    if (srv_req_cancelled(l->req))
        srv_req_release(l->req);
    else
        (void)srv_req_answer(l->req, 200, "text/plain", "later\n", 6);
    ctx_leave(prev);
    ctx_unref(held);
    free(l);
}

/* Asynchronous: answer from a later loop iteration. */
static void srv_fuzz_later(struct srv_req *req)
{
    struct srv_fuzz_later *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "fuzz");
        return;
    }
    l->req = req;
    ev_idle_init(&l->idle, srv_fuzz_later_fire);
    ev_idle_start(srv_fuzz_loop, &l->idle);
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static void srv_fuzz_once(void)
{
    if (srv_fuzz_loop != NULL)
        return;
    signal(SIGPIPE, SIG_IGN);
    srv_cfg_defaults(&srv_fuzz_cfg);
    srv_fuzz_cfg.max_request_line = 256;
    srv_fuzz_cfg.max_header_bytes = 1024;
    srv_fuzz_cfg.max_headers = 16;
    srv_fuzz_cfg.max_body_bytes = 1024;
    srv_fuzz_cfg.max_pipeline_bytes = 2048;
    srv_fuzz_cfg.max_query_params = 8;
    srv_fuzz_cfg.log_access = true;
    /* The writer thread inherits the mask: keep every signal away from it, as the server does. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    struct log_config lc = {.path = "/dev/null",
                            .level = LOG_LEVEL_DEBUG,
                            .buffer_bytes = 1 << 20,
                            .policy = LOG_POLICY_DROP};
    if (log_start(&lc) != 0)
        log_set_level(LOG_LEVEL_FATAL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    srv_fuzz_loop = ev_loop_new(EVFLAG_AUTO);
    srv_fuzz_root = ctx_new_root();
    if (srv_fuzz_loop == NULL || srv_fuzz_root == NULL) {
        fprintf(stderr, "fuzz_http: set-up failed\n");
        abort();
    }
}

static struct srv_http *srv_fuzz_server(void)
{
    struct srv_http *h = srv_http_new(srv_fuzz_loop, &srv_fuzz_cfg, srv_fuzz_root);
    if (h == NULL || srv_health_routes_add(h) != 0 ||
        srv_http_route_add(h, "POST", "/echo", srv_fuzz_echo, NULL) != 0 ||
        srv_http_route_add(h, "PUT", "/echo", srv_fuzz_echo, NULL) != 0 ||
        srv_http_route_add(h, "GET", "/later", srv_fuzz_later, NULL) != 0 ||
        srv_http_route_add(h, "POST", "/later", srv_fuzz_later, NULL) != 0) {
        fprintf(stderr, "fuzz_http: server set-up failed\n");
        abort();
    }
    return h;
}

/* ---- the client end -------------------------------------------------------------------------- */

/* Drains the server's answers; stops at the server's close, which lets ev_run() return. */
static void srv_fuzz_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    char buf[16384];
    ssize_t r = read(w->fd, buf, sizeof(buf));
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
        ev_io_stop(loop, w);
}

static void srv_fuzz_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    fprintf(stderr, "fuzz_http: the connection outlived its client by %.0f s\n", SRV_FUZZ_GUARD_S);
    abort();
}

/* Write all of data to fd in pieces of `step`, running the loop between pieces. */
static void srv_fuzz_write(int fd, const uint8_t *data, size_t size, size_t step)
{
    size_t off = 0;
    unsigned stalls = 0;
    while (off < size && stalls < 1000) {
        size_t n = size - off < step ? size - off : step;
        ssize_t w = write(fd, data + off, n);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            return; /* the server closed: the rest is not wanted */
        stalls = w > 0 ? 0 : stalls + 1;
        ev_run(srv_fuzz_loop, EVRUN_NOWAIT);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    srv_fuzz_once();
    struct srv_http *h = srv_fuzz_server();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    if (srv_http_adopt_fd(h, sv[0], "fuzz:1") != 0)
        abort();
    bool vanish = mode & 1;
    ev_io reader;
    ev_io_init(&reader, srv_fuzz_read, sv[1], EV_READ);
    if (!vanish)
        ev_io_start(srv_fuzz_loop, &reader);
    srv_fuzz_write(sv[1], data, size, (mode & 2) ? 1 + (mode >> 2) : (size > 0 ? size : 1));
    if (vanish) {
        close(sv[1]);
        sv[1] = -1;
    } else {
        shutdown(sv[1], SHUT_WR);
    }
    /* The guard must not keep the loop alive by itself: unref it while it runs. */
    ev_timer guard;
    ev_timer_init(&guard, srv_fuzz_guard, SRV_FUZZ_GUARD_S, 0.);
    ev_timer_start(srv_fuzz_loop, &guard);
    ev_unref(srv_fuzz_loop);
    ev_run(srv_fuzz_loop, 0);
    ev_ref(srv_fuzz_loop);
    ev_timer_stop(srv_fuzz_loop, &guard);
    ev_io_stop(srv_fuzz_loop, &reader);
    if (sv[1] >= 0)
        close(sv[1]);
    srv_http_free(h);
    return 0;
}
