/* http.c - the HTTP server object on one loop: life cycle, drain, stats, Date cache.
 *
 * Design: struct srv_http is the root of everything HTTP on its loop (listeners, connections,
 * routes). It is created and used on the loop thread only (SRV_ASSERT_LOOP in every entry point).
 * With no listener it keeps no watcher active, so a loop that only serves adopted sockets ends by
 * itself. Stopping has three steps the process drives: drain (stop accepting, finish what is in
 * flight; idle keep-alive connections stay open, since a request may already be on its way, and
 * each connection closes after its next answer, which says Connection: close), cancel_all (the
 * drain period is over: 503 to what is still running or being read, idle connections close),
 * close_all (the end: drop everything). The drained callback runs once, when the last connection
 * is gone while draining. The live-changeable part of the copied configuration can be replaced
 * on the loop thread (srv_http_cfg_update, a reload); every reader takes it from h->cfg each time,
 * so a change applies from the next read, timer or request on.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logging/log.h"
#include "server/fdgate.h"
#include "server/http/internal.h"

/* The read buffer's bound: a whole request head, or the pipelining allowance if larger. */
static size_t http_rbuf_max(const struct srv_cfg *cfg)
{
    size_t head_max = (size_t)cfg->max_request_line + cfg->max_header_bytes + 64;
    size_t max = head_max > cfg->max_pipeline_bytes ? head_max : cfg->max_pipeline_bytes;
    return max < SRV_RBUF_MIN ? SRV_RBUF_MIN : max;
}

/* The last spawn window closed (a worker thread, the gate's mutex held): wake the loop. */
static void http_fdgate_wake(void *arg)
{
    struct srv_http *h = arg;
    ev_async_send(h->loop, &h->fdgate_wake);
}

static void http_fdgate_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    (void)srv_fdgate_flush();
}

struct srv_http *srv_http_new(struct ev_loop *loop, const struct srv_cfg *cfg, struct ctx *root)
{
    struct srv_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->thread = pthread_self();
    h->cfg = *cfg;
    h->root = ctx_ref(root);
    h->rbuf_max = http_rbuf_max(cfg);
    srv_conn_settings_init(&h->settings);
    ev_init(&h->accept_timer, NULL);
    /* closes deferred by server/fdgate.h run on this loop; unref'd, so that a loop with no
     * listener still ends by itself (see above) */
    ev_async_init(&h->fdgate_wake, http_fdgate_cb);
    ev_async_start(loop, &h->fdgate_wake);
    ev_unref(loop);
    srv_fdgate_waker_set(http_fdgate_wake, h);
    return h;
}

void srv_http_free(struct srv_http *h)
{
    if (h == NULL)
        return;
    SRV_ASSERT_LOOP(h);
    srv_listeners_close(h);
    srv_http_close_all(h, CTX_REASON_SHUTDOWN);
    if (h->pending != 0) {
        LOG_F("srv_http_free with requests still in handlers", LOG_UINT("pending", h->pending));
        abort();
    }
    srv_fdgate_waker_clear(h);
    (void)srv_fdgate_flush();
    ev_ref(h->loop);
    ev_async_stop(h->loop, &h->fdgate_wake);
    srv_routes_free(h);
    ctx_unref(h->root);
    free(h);
}

int srv_http_adopt_fd(struct srv_http *h, int fd, const char *peer)
{
    SRV_ASSERT_LOOP(h);
    if (h->draining)
        return -ESHUTDOWN;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return srv_conn_new(h, fd, peer != NULL ? peer : "-", false);
}

void srv_http_auth_set(struct srv_http *h, struct srv_auth *auth)
{
    SRV_ASSERT_LOOP(h);
    h->auth = auth;
}

static void http_check_drained(struct srv_http *h)
{
    if (!h->draining || h->nconns != 0 || h->drained_fn == NULL)
        return;
    srv_http_drained_fn *fn = h->drained_fn;
    h->drained_fn = NULL;
    fn(h, h->drained_arg);
}

void srv_http_conn_closed(struct srv_http *h)
{
    http_check_drained(h);
}

/* Run `op` on every connection; each one is entered so that it is freed (if it died) only after
 * its own step, never while the list walk holds it. Returns how many steps returned true. */
static unsigned http_each_conn(struct srv_http *h, bool (*op)(struct srv_conn *, enum ctx_reason),
                               enum ctx_reason reason)
{
    unsigned n = 0;
    struct srv_conn *c = h->conns;
    while (c != NULL) {
        struct srv_conn *next = c->next;
        srv_conn_enter(c);
        n += op(c, reason);
        srv_conn_exit(c);
        c = next;
    }
    return n;
}

void srv_http_drain(struct srv_http *h, srv_http_drained_fn *fn, void *arg)
{
    SRV_ASSERT_LOOP(h);
    h->drained_fn = fn;
    h->drained_arg = arg;
    if (!h->draining) {
        /* Idle connections stay: a request may already be on the wire, and cutting the
         * connection now would lose it. They close after their next answer (which says
         * Connection: close), by their idle timeout, or at srv_http_cancel_all. */
        srv_listeners_accept_pending(h); /* handshakes done: their requests may be sent */
        h->draining = true;
        h->requests_at_drain = h->n_requests;
        srv_listeners_close(h);
    }
    http_check_drained(h);
}

void srv_http_cancel_all(struct srv_http *h, enum ctx_reason reason)
{
    SRV_ASSERT_LOOP(h);
    h->drain_over = true;
    h->n_shutdown_cancelled += http_each_conn(h, srv_conn_cancel, reason);
}

/* A request still owed by its handler is cancelled by the kill: count it. */
static bool http_close_one(struct srv_conn *c, enum ctx_reason reason)
{
    bool owed = c->req != NULL && c->req->handler_pending && !c->req->answered;
    srv_conn_kill(c, reason);
    return owed;
}

void srv_http_close_all(struct srv_http *h, enum ctx_reason reason)
{
    SRV_ASSERT_LOOP(h);
    h->drain_over = true;
    unsigned n = http_each_conn(h, http_close_one, reason);
    if (reason == CTX_REASON_SHUTDOWN)
        h->n_shutdown_cancelled += n;
}

/* Keep max_connections within the room the open file limit leaves (srv_http_conn_cap_set). */
static void http_conn_cap_apply(struct srv_http *h, bool warn)
{
    if (h->conn_cap == 0 || h->cfg.max_connections <= h->conn_cap)
        return;
    if (warn)
        LOG_W("max_connections lowered to fit the open file limit",
              LOG_UINT("configured", h->cfg.max_connections),
              LOG_UINT("max_connections", h->conn_cap),
              LOG_UINT("reserve", SRV_HTTP_NOFILE_RESERVE));
    h->cfg.max_connections = h->conn_cap;
}

void srv_http_cfg_update(struct srv_http *h, const struct srv_cfg *cfg)
{
    SRV_ASSERT_LOOP(h);
    h->cfg = *cfg;
    h->rbuf_max = http_rbuf_max(cfg);
    http_conn_cap_apply(h, true);
}

void srv_http_conn_cap_set(struct srv_http *h, unsigned cap)
{
    SRV_ASSERT_LOOP(h);
    h->conn_cap = cap;
    http_conn_cap_apply(h, false); /* the caller reports it, with the limits it knows */
}

void srv_http_announce(struct srv_http *h)
{
    SRV_ASSERT_LOOP(h);
    h->announcing = true;
}

bool srv_http_ready(const struct srv_http *h)
{
    return !h->announcing && !h->draining;
}

bool srv_http_draining(const struct srv_http *h)
{
    return h->draining;
}

void srv_http_stats_get(const struct srv_http *h, struct srv_http_stats *out)
{
    out->connections = h->n_connections;
    out->requests = h->n_requests;
    out->rejected = h->n_rejected;
    out->held = h->n_held;
    out->open = h->nconns;
    out->pending = h->pending;
    out->drained = h->draining ? h->n_requests - h->requests_at_drain : 0;
    out->shutdown_cancelled = h->n_shutdown_cancelled;
}

const struct srv_cfg *srv_http_cfg(const struct srv_http *h)
{
    return &h->cfg;
}

struct ev_loop *srv_http_loop(const struct srv_http *h)
{
    return h->loop;
}

const char *srv_http_date(struct srv_http *h)
{
    time_t now = (time_t)ev_now(h->loop);
    if (now != h->date_sec || h->date[0] == '\0') {
        struct tm tm;
        gmtime_r(&now, &tm);
        if (strftime(h->date, sizeof(h->date), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
            h->date[0] = '\0';
        h->date_sec = now;
    }
    return h->date;
}

const char *srv_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

void srv_http_on_answered(struct srv_http *h, srv_http_answered_fn *fn, void *arg)
{
    SRV_ASSERT_LOOP(h);
    h->answered = fn;
    h->answered_arg = fn != NULL ? arg : NULL;
}
