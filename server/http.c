/* http.c - the HTTP server object on one loop: life cycle, drain, stats, Date cache.
 *
 * Design: struct srv_http is the root of everything HTTP on its loop (listeners, connections,
 * routes). It is created and used on the loop thread only (SRV_ASSERT_LOOP in every entry point).
 * With no listener it keeps no watcher active, so a loop that only serves adopted sockets ends by
 * itself. Stopping has three steps the process drives: drain (stop accepting, finish what is in
 * flight), cancel_all (the drain period is over: 503 to what is still running), close_all (a
 * second signal: drop everything). The drained callback runs once, when the last connection is
 * gone while draining.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "logging/log.h"
#include "server/http_internal.h"

struct srv_http *srv_http_new(struct ev_loop *loop, const struct srv_cfg *cfg, struct ctx *root)
{
    struct srv_http *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->thread = pthread_self();
    h->cfg = *cfg;
    h->root = ctx_ref(root);
    size_t head_max = (size_t)cfg->max_request_line + cfg->max_header_bytes + 64;
    h->rbuf_max = head_max > cfg->max_pipeline_bytes ? head_max : cfg->max_pipeline_bytes;
    if (h->rbuf_max < SRV_RBUF_MIN)
        h->rbuf_max = SRV_RBUF_MIN;
    srv_conn_settings_init(&h->settings);
    ev_init(&h->accept_timer, NULL);
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
    return srv_conn_new(h, fd, peer != NULL ? peer : "-");
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
 * its own step, never while the list walk holds it. */
static void http_each_conn(struct srv_http *h, void (*op)(struct srv_conn *, enum ctx_reason),
                           enum ctx_reason reason)
{
    struct srv_conn *c = h->conns;
    while (c != NULL) {
        struct srv_conn *next = c->next;
        srv_conn_enter(c);
        op(c, reason);
        srv_conn_exit(c);
        c = next;
    }
}

static void http_drain_one(struct srv_conn *c, enum ctx_reason reason)
{
    (void)reason;
    srv_conn_drain(c);
}

void srv_http_drain(struct srv_http *h, srv_http_drained_fn *fn, void *arg)
{
    SRV_ASSERT_LOOP(h);
    h->drained_fn = fn;
    h->drained_arg = arg;
    if (!h->draining) {
        h->draining = true;
        srv_listeners_close(h);
        http_each_conn(h, http_drain_one, CTX_REASON_SHUTDOWN);
    }
    http_check_drained(h);
}

void srv_http_cancel_all(struct srv_http *h, enum ctx_reason reason)
{
    SRV_ASSERT_LOOP(h);
    http_each_conn(h, srv_conn_cancel, reason);
}

void srv_http_close_all(struct srv_http *h, enum ctx_reason reason)
{
    SRV_ASSERT_LOOP(h);
    http_each_conn(h, srv_conn_kill, reason);
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
    out->open = h->nconns;
    out->pending = h->pending;
}

const struct srv_cfg *srv_http_cfg(const struct srv_http *h)
{
    return &h->cfg;
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
