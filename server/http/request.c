/* request.c - one HTTP request: context, headers, routing, answers, cancellation, access log.
 *
 * Design: a struct srv_req is created by its connection when a head arrives (or when an error has
 * to be answered before any head was parsed) and carries everything the handler may ask for:
 * method, path, headers and query copied into one arena, the de-chunked body, and the request
 * context (a child of the server's root: request id, tenant, trace, deadline).
 *
 * The tenant is decided once, when the head has been read, by tenant.c (srv_req_tenant_set,
 * from the route's access class and the authenticator): everything later reads the context's
 * tenant and nothing else.
 *
 * Two owners share it: the connection (until the answer is fully written or the connection goes
 * away: srv_req_conn_done) and the handler (from the call until it answers or releases). It is
 * freed, after writing its access line, when both have let go. So an asynchronous handler can
 * always answer into a valid object; if the client left (499) or the deadline timer already
 * answered 504, its answer is discarded. Deadline and cancel hooks run on the loop thread with the
 * request context current. Loop thread only.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "logging/log.h"
#include "server/http/internal.h"
#include "server/http/proxy.h"

/* ---- a growing string for answer heads and JSON bodies ---------------------------------- */

struct req_buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void buf_add(struct req_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct req_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void buf_fmt(struct req_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        buf_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_add(b, big, (size_t)n);
    free(big);
}

/* JSON string contents: quotes, backslashes and control bytes escaped; bytes >= 0x80 as \u00XX
 * (the path is client input and need not be UTF-8, the answer must stay valid JSON). */
static void buf_json(struct req_buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            buf_add(b, esc, 2);
        } else if (ch < 0x20 || ch >= 0x7f) {
            buf_fmt(b, "\\u%04x", ch);
        } else {
            buf_add(b, s, 1);
        }
    }
}

/* ---- creation ---------------------------------------------------------------------------- */

static void req_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents);

struct srv_req *srv_req_new(struct srv_conn *c)
{
    struct srv_req *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->h = c->h;
    req->conn = c;
    req->method = "-";
    req->admin = c->admin;
    req->t0_ns = c->t_head_ns != 0 ? c->t_head_ns : ctx_now_ns();
    snprintf(req->peer, sizeof(req->peer), "%s", c->peer);
    ev_timer_init(&req->deadline, req_deadline_cb, 0.0, 0.0);
    req->deadline.data = req;
    return req;
}

/* A context for an answer given before (or without) a parsed head: new id, default tenant. */
static int req_bare_ctx(struct srv_req *req)
{
    if (req->ctx != NULL)
        return 0;
    req->ctx = ctx_new_child(req->h->root);
    if (req->ctx == NULL)
        return -ENOMEM;
    char id[CTX_REQUEST_ID_MAX + 1];
    size_t n = ctx_request_id_generate(id, sizeof(id));
    ctx_set_request_id(req->ctx, id, n);
    ctx_set_tenant(req->ctx, "default", 7);
    struct ctx_trace t;
    ctx_trace_new(&t);
    ctx_set_trace(req->ctx, &t);
    return 0;
}

/* Header `name` for srv_proxy_client: its value, or its lines joined with ',' into `buf` (size
 * bytes; the rightmost lines are kept when they do not all fit: the walk starts there). */
static const char *req_hdr_joined(const struct srv_req *req, const char *name, char *buf,
                                  size_t size, size_t *len)
{
    unsigned n;
    const struct srv_hdr *first = srv_req_hdr_find(req, name, &n);
    *len = 0;
    if (first == NULL || n == 1) {
        *len = first ? first->value_len : 0;
        return first ? first->value : NULL;
    }
    size_t at = size; /* filled from the end */
    for (unsigned i = req->nhdrs; i-- > 0;) {
        const struct srv_hdr *hd = &req->hdrs[i];
        if (strcasecmp(hd->name, name) != 0)
            continue;
        size_t need = hd->value_len + (at < size ? 1 : 0);
        if (need > at)
            break;
        if (at < size)
            buf[--at] = ',';
        at -= hd->value_len;
        memcpy(buf + at, hd->value, hd->value_len);
    }
    *len = size - at;
    return buf + at;
}

/* The access line's "client": the peer's address, or the one its trusted proxy names. */
void srv_req_client(const struct srv_req *req, char *out, size_t size)
{
    char fwd[1024], xff[1024], rip[256];
    struct srv_proxy_headers hd = {0};
    const struct srv_cfg_cidrs *trusted = &req->h->cfg.trusted_proxies;
    if (trusted->count > 0 && req->arena != NULL) { /* the headers were parsed */
        hd.forwarded = req_hdr_joined(req, "Forwarded", fwd, sizeof(fwd), &hd.forwarded_len);
        hd.xff = req_hdr_joined(req, "X-Forwarded-For", xff, sizeof(xff), &hd.xff_len);
        hd.real_ip = req_hdr_joined(req, "X-Real-IP", rip, sizeof(rip), &hd.real_ip_len);
    }
    srv_proxy_client(trusted, req->peer, &hd, out, size);
}

/* True when log.access_skip names the request's path. */
static bool req_access_skipped(const struct srv_req *req)
{
    const struct srv_cfg_paths *skip = &req->h->cfg.access_skip;
    for (unsigned i = 0; req->path != NULL && i < skip->count; i++) {
        if (strcmp(req->path, skip->path[i]) == 0)
            return true;
    }
    return false;
}

static void req_log_access(struct srv_req *req)
{
    struct srv_http *h = req->h;
    h->n_requests++;
    if (h->answered != NULL)
        h->answered(req->route_path != NULL ? req->route_path : "other", req->status,
                    h->answered_arg);
    if (!h->cfg.log_access || req_access_skipped(req))
        return;
    char client[SRV_PROXY_CLIENT_MAX];
    srv_req_client(req, client, sizeof(client));
    struct ctx *prev = ctx_enter(req->ctx);
    uint64_t end = req->t_end_ns != 0 ? req->t_end_ns : ctx_now_ns();
    uint64_t total = end > req->t0_ns ? end - req->t0_ns : 0;
    enum ctx_reason reason = req->ctx != NULL ? ctx_err(req->ctx) : CTX_REASON_NONE;
    const char *path = req->path != NULL ? req->path : "-";
#define REQ_ACCESS_FIELDS                                                                          \
    LOG_STR("method", req->method), LOG_STR("path", path), LOG_INT("status", req->status),         \
        LOG_UINT("bytes_in", req->bytes_in), LOG_UINT("bytes_out", req->bytes_out),                \
        LOG_DUR("queue_ms", req->queue_ns), LOG_DUR("run_ms", req->run_ns),                        \
        LOG_DUR("total_ms", total), LOG_STR("peer", req->peer), LOG_STR("client", client)
    if (req->stream_error != NULL)
        LOG_I("access", REQ_ACCESS_FIELDS, LOG_STR("stream_error", req->stream_error),
              LOG_STR("reason", reason != CTX_REASON_NONE ? ctx_reason_name(reason) : "none"));
    else if (reason != CTX_REASON_NONE)
        LOG_I("access", REQ_ACCESS_FIELDS, LOG_STR("reason", ctx_reason_name(reason)));
    else
        LOG_I("access", REQ_ACCESS_FIELDS);
#undef REQ_ACCESS_FIELDS
    ctx_leave(prev);
}

void srv_req_free(struct srv_req *req)
{
    if (req == NULL)
        return;
    ev_timer_stop(req->h->loop, &req->deadline);
    srv_query_fini(&req->query);
    free(req->hdrs);
    free(req->arena);
    free(req->body);
    srv_stream_free(req->stream);
    if (req->held_release != NULL)
        req->held_release(req->held);
    free(req->extra);
    ctx_unref(req->ctx);
    free(req);
}

/* Free once the connection and the handler have both let go. */
void srv_req_maybe_free(struct srv_req *req)
{
    if (req->conn != NULL || req->handler_pending)
        return;
    req_log_access(req);
    srv_req_free(req);
}

/* ---- from the parsed head ---------------------------------------------------------------- */

const struct srv_hdr *srv_req_hdr_find(const struct srv_req *req, const char *name, unsigned *count)
{
    const struct srv_hdr *first = NULL;
    unsigned n = 0;
    for (unsigned i = 0; i < req->nhdrs; i++) {
        if (strcasecmp(req->hdrs[i].name, name) == 0) {
            n++;
            if (first == NULL)
                first = &req->hdrs[i];
        }
    }
    if (count != NULL)
        *count = n;
    return first;
}

/* Copy the URL, path and headers (NUL-terminated, values' trailing whitespace cut) into one
 * arena; the offsets recorded by the parser callbacks point into `head`. */
static int req_build_arena(struct srv_req *req, const char *head)
{
    size_t size = 2 * (req->url_len + 2);
    for (unsigned i = 0; i < req->nhdrs; i++)
        size += req->hdrs[i].name_len + req->hdrs[i].value_len + 2;
    req->arena = malloc(size);
    if (req->arena == NULL)
        return -ENOMEM;
    char *a = req->arena;
    req->url = a;
    memcpy(a, head + req->url_off, req->url_len);
    a[req->url_len] = '\0';
    a += req->url_len + 1;
    for (unsigned i = 0; i < req->nhdrs; i++) {
        struct srv_hdr *hd = &req->hdrs[i];
        size_t vl = hd->value_len;
        const char *v = head + hd->value_off;
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        memcpy(a, head + hd->name_off, hd->name_len);
        a[hd->name_len] = '\0';
        hd->name = a;
        a += hd->name_len + 1;
        memcpy(a, v, vl);
        a[vl] = '\0';
        hd->value = a;
        hd->value_len = vl;
        a += vl + 1;
    }
    req->path = a; /* filled by req_split_url */
    return 0;
}

static void req_split_url(struct srv_req *req, bool connect)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(req->url, req->url_len, connect, &u) != 0) {
        memcpy(req->path, "-", 2); /* the arena reserved url_len + 2 bytes here */
        req->err_status = 400;
        req->err_code = "bad_request";
        req->err_msg = "invalid request target";
        return;
    }
    if (u.field_set & (1 << UF_PATH)) {
        memcpy(req->path, req->url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
        req->path[u.field_data[UF_PATH].len] = '\0';
    } else {
        memcpy(req->path, "/", 2);
    }
    if (u.field_set & (1 << UF_QUERY)) {
        req->qoff = u.field_data[UF_QUERY].off;
        req->qlen = u.field_data[UF_QUERY].len;
    }
}

void srv_req_error_later(struct srv_req *req, const char *code, const char *msg)
{
    if (req->err_status != 0)
        return;
    req->err_status = 400;
    req->err_code = code;
    req->err_msg = msg;
}

/* X-Timeout-Ms: a positive decimal integer; returns 0 when invalid. */
static uint64_t req_timeout_ms(const char *v)
{
    uint64_t ms = 0;
    if (*v == '\0')
        return 0;
    for (; *v != '\0'; v++) {
        if (*v < '0' || *v > '9')
            return 0;
        if (ms < UINT64_C(1) << 40)
            ms = ms * 10 + (uint64_t)(*v - '0');
    }
    return ms;
}

static void req_set_identity(struct srv_req *req)
{
    struct ctx *c = req->ctx;
    unsigned n;
    const struct srv_hdr *hd = srv_req_hdr_find(req, "X-Request-Id", &n);
    if (n == 1 && ctx_request_id_valid(hd->value, hd->value_len)) {
        ctx_set_request_id(c, hd->value, hd->value_len);
    } else {
        char id[CTX_REQUEST_ID_MAX + 1];
        size_t len = ctx_request_id_generate(id, sizeof(id));
        ctx_set_request_id(c, id, len);
    }
    struct ctx_trace t;
    hd = srv_req_hdr_find(req, "traceparent", &n);
    if (n == 1 && ctx_trace_parse(hd->value, hd->value_len, &t) == 0)
        ctx_span_new(t.span_id); /* keep the trace id; this request is a new span */
    else
        ctx_trace_new(&t);
    ctx_set_trace(c, &t);
    srv_req_tenant_set(req); /* last: its log lines carry the ids (tenant.c) */
}

static void req_set_deadline(struct srv_req *req)
{
    const struct srv_cfg *cfg = &req->h->cfg;
    unsigned n;
    const struct srv_hdr *hd = srv_req_hdr_find(req, "X-Timeout-Ms", &n);
    uint64_t ms = cfg->default_timeout_ms;
    req->timeout_given = n > 0;
    if (n > 0) {
        uint64_t v = n == 1 ? req_timeout_ms(hd->value) : 0;
        if (v == 0)
            srv_req_error_later(req, "invalid_timeout", "X-Timeout-Ms must be a positive integer");
        else
            ms = v < cfg->max_timeout_ms || cfg->max_timeout_ms == 0 ? v : cfg->max_timeout_ms;
    }
    if (ms != 0)
        ctx_set_deadline(req->ctx, req->t0_ns + ms * UINT64_C(1000000));
}

/* RFC 9112 section 3.2: an HTTP/1.1 request without Host, any request with more than one Host
 * field or with an invalid value, is refused (400, and the connection closes: which host the
 * client meant is unknown, and a front end may have read the request differently). */
static void req_check_host(struct srv_req *req)
{
    unsigned n;
    const struct srv_hdr *hd = srv_req_hdr_find(req, "Host", &n);
    if (n == 0 && !req->http10)
        req->fatal_msg = "missing Host header (required in HTTP/1.1)";
    else if (n > 1)
        req->fatal_msg = "more than one Host header";
    else if (n == 1 && !srv_head_host_valid(hd->value, hd->value_len))
        req->fatal_msg = "invalid Host header (expected host[:port])";
}

int srv_req_from_head(struct srv_req *req, const http_parser *p, const char *head)
{
    req->method = http_method_str((enum http_method)p->method);
    req->http10 = p->http_major == 1 && p->http_minor == 0;
    req->keep_alive = http_should_keep_alive(p) != 0;
    req->upgrade = p->upgrade != 0;
    req->is_head = p->method == HTTP_HEAD;
    if (req_build_arena(req, head) != 0)
        return -ENOMEM;
    req_split_url(req, p->method == HTTP_CONNECT);
    req->ctx = ctx_new_child(req->h->root);
    if (req->ctx == NULL)
        return -ENOMEM;
    req_set_identity(req);
    req_set_deadline(req);
    req_check_host(req);
    const struct srv_hdr *expect = srv_req_hdr_find(req, "Expect", NULL);
    req->expect_continue = expect != NULL && strcasecmp(expect->value, "100-continue") == 0;
    return 0;
}

/* ---- answering ----------------------------------------------------------------------------- */

static bool req_closes_base(const struct srv_req *req)
{
    const struct srv_conn *c = req->conn;
    unsigned max_ka = req->h->cfg.max_keepalive_requests;
    return req->force_close || !req->keep_alive || req->upgrade || req->h->draining ||
           c->peer_eof || (max_ka != 0 && c->served >= max_ka);
}

/* A body not read to its end is not skipped: an answer that comes before it (an error, a refusal
 * of a streaming request or of one that waits for 100 Continue) closes the connection. */
static bool req_closes(const struct srv_req *req)
{
    return req_closes_base(req) || !req->msg_complete;
}

/* Queue the answer on the connection. `body` is copied into the head buffer unless `take`, in
 * which case it is handed to the connection (and freed in every case). */
/* The head up to its Connection header and the blank line. `framing` is the Content-Length or
 * Transfer-Encoding line(s). */
static void req_head(struct srv_req *req, struct req_buf *b, int status, const char *ctype,
                     const char *framing, bool close)
{
    buf_fmt(b, "HTTP/1.1 %d %s\r\nServer: spindle\r\nDate: %s\r\n", status, srv_http_reason(status),
            srv_http_date(req->h));
    if (ctype != NULL)
        buf_fmt(b, "Content-Type: %s\r\n", ctype);
    buf_str(b, framing);
    buf_fmt(b, "X-Request-Id: %s\r\n", req->ctx != NULL ? ctx_request_id(req->ctx) : "");
    if (req->extra_len > 0)
        buf_add(b, req->extra, req->extra_len);
    if (close)
        buf_str(b, "Connection: close\r\n");
    else if (req->http10)
        buf_str(b, "Connection: keep-alive\r\n");
    buf_add(b, "\r\n", 2);
}

int srv_req_stream_head(struct srv_req *req, int status, const char *ctype, bool chunked,
                        bool trailer, char **out, size_t *len)
{
    struct req_buf b = {0};
    /* the body is still arriving: a job that succeeds reads it to its end (else the connection
     * closes after the answer, stream.c) */
    bool close = !chunked || req_closes_base(req);
    req->conn->close_after = close;
    req->answered = true;
    req->status = status;
    const char *framing = !chunked  ? ""
                          : trailer ? "Transfer-Encoding: chunked\r\n"
                                      "Trailer: Spindle-Error, Server-Timing\r\n"
                                    : "Transfer-Encoding: chunked\r\n";
    req_head(req, &b, status, ctype, framing, close);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

static int req_send(struct srv_req *req, int status, const char *ctype, const void *body,
                    size_t len, bool take)
{
    struct srv_conn *c = req->conn;
    struct req_buf b = {0};
    bool close = req_closes(req);
    c->close_after = close;
    req->answered = true;
    req->status = status;
    char framing[48];
    snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", len);
    req_head(req, &b, status, ctype, framing, close);
    if (!req->is_head && !take && len > 0)
        buf_add(&b, body, len);
    char *owned = take && !req->is_head ? (char *)body : NULL;
    if (take && req->is_head)
        free((void *)body);
    if (b.oom) {
        free(b.p);
        free(owned);
        srv_conn_send_oom(c);
        return -ENOMEM;
    }
    srv_conn_send(c, b.p, b.len, owned, owned != NULL ? len : 0);
    return 0;
}

static char *req_error_body(struct srv_req *req, const char *code, const char *msg, size_t *len)
{
    struct req_buf b = {0};
    buf_str(&b, "{\"error\":{\"code\":\"");
    buf_json(&b, code);
    buf_str(&b, "\",\"message\":\"");
    buf_json(&b, msg);
    buf_str(&b, "\",\"request_id\":\"");
    buf_json(&b, req->ctx != NULL ? ctx_request_id(req->ctx) : "");
    buf_str(&b, "\"}}\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

void srv_req_refuse_early(struct srv_req *req, bool close)
{
    struct ctx *prev = ctx_enter(req->ctx);
    srv_req_send_error(req, req->err_status, req->err_code, req->err_msg, close);
    ctx_leave(prev);
}

void srv_req_send_error(struct srv_req *req, int status, const char *code, const char *msg,
                        bool close)
{
    if (close)
        req->force_close = true;
    size_t len = 0;
    char *body = req_bare_ctx(req) == 0 ? req_error_body(req, code, msg, &len) : NULL;
    if (body == NULL) {
        req->status = status;
        srv_conn_send_oom(req->conn);
        return;
    }
    if (status >= 500 || status == 408 || close) {
        struct ctx *prev = ctx_enter(req->ctx); /* the line belongs to this request */
        LOG_D("request refused", LOG_INT("status", status), LOG_STR("code", code),
              LOG_STR("why", msg), LOG_STR("peer", req->peer));
        ctx_leave(prev);
    }
    req_send(req, status, "application/json", body, len, true);
}

void srv_req_conn_done(struct srv_req *req, bool written, enum ctx_reason gone)
{
    req->conn = NULL;
    req->written = written;
    req->t_end_ns = ctx_now_ns();
    if (written) {
        srv_req_maybe_free(req);
        return;
    }
    /* The connection went away before the answer was out. */
    if (gone == CTX_REASON_CLIENT_CLOSED || gone == CTX_REASON_NONE)
        req->status = 499;
    else if (!req->answered)
        req->status = 503;
    if (req->ctx != NULL)
        (void)ctx_cancel(req->ctx, gone != CTX_REASON_NONE ? gone : CTX_REASON_CLIENT_CLOSED);
    ev_timer_stop(req->h->loop, &req->deadline);
    if (req->handler_pending && req->cancel_fn != NULL) {
        struct ctx *prev = ctx_enter(req->ctx);
        struct ctx *held = ctx_ref(req->ctx);
        req->cancel_fn(req, ctx_err(held), req->cancel_arg); /* may answer: req may be gone */
        ctx_leave(prev);
        ctx_unref(held);
        return;
    }
    srv_req_maybe_free(req);
}

void srv_req_cancel(struct srv_req *req, enum ctx_reason reason, int status, const char *code,
                    const char *msg)
{
    struct ctx *held = ctx_ref(req->ctx);
    struct ctx *prev = ctx_enter(held);
    (void)ctx_cancel(req->ctx, reason);
    struct srv_conn *c = req->conn;
    if (c != NULL)
        srv_conn_enter(c);
    if (c != NULL && !req->answered)
        srv_req_send_error(req, status, code, msg, reason == CTX_REASON_SHUTDOWN);
    else if (c != NULL && srv_stream_head_sent(req))
        srv_stream_abort(req, status, code); /* the status line is gone: cut the body */
    if (req->handler_pending && req->cancel_fn != NULL)
        req->cancel_fn(req, reason, req->cancel_arg); /* last: it may release req */
    if (c != NULL)
        srv_conn_exit(c);
    ctx_leave(prev);
    ctx_unref(held);
}

static void req_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_req *req = w->data;
    srv_req_cancel(req, CTX_REASON_DEADLINE, 504, "deadline_exceeded",
                   "the request deadline passed before the answer was ready");
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* Route and check; returns the route to call, or NULL when an answer was already given. */
static const struct srv_route *req_route(struct srv_req *req)
{
    struct srv_http *h = req->h;
    if (req->err_status != 0) {
        srv_req_send_error(req, req->err_status, req->err_code, req->err_msg, false);
        return NULL;
    }
    int status = 0;
    char allow[128];
    const struct srv_route *r =
        srv_route_find_on(h, req->admin, req->method, req->path, &status, allow, sizeof(allow));
    if (r == NULL) {
        struct req_buf m = {0};
        if (status == 405) {
            srv_req_header_add(req, "Allow", allow);
            buf_fmt(&m, "method %s not allowed for %s", req->method, req->path);
        } else {
            buf_fmt(&m, "no route for %s %s", req->method, req->path);
        }
        srv_req_send_error(req, status, status == 405 ? "method_not_allowed" : "not_found",
                           m.oom ? "no route" : m.p, false);
        free(m.p);
        return NULL;
    }
    int rc = srv_req_query_parse(req);
    if (rc == -ENOMEM) {
        srv_conn_send_oom(req->conn);
        return NULL;
    }
    if (rc != 0) {
        srv_req_send_error(req, 400, "bad_query",
                           rc == -E2BIG ? "too many query parameters (limits.max_query_params)"
                                        : "bad percent-encoding in the query string",
                           false);
        return NULL;
    }
    return r;
}

bool srv_req_timeout_given(const struct srv_req *req)
{
    return req->timeout_given;
}

void srv_req_route_other(struct srv_req *req)
{
    req->route_path = NULL;
}

void srv_req_deadline_set_ms(struct srv_req *req, uint64_t ms)
{
    struct srv_http *h = req->h;
    const struct srv_cfg *cfg = &h->cfg;
    if (cfg->max_timeout_ms != 0 && ms > cfg->max_timeout_ms)
        ms = cfg->max_timeout_ms;
    if (ms == 0 || srv_req_cancelled(req))
        return;
    uint64_t deadline = req->t0_ns + ms * UINT64_C(1000000), now = ctx_now_ns();
    ctx_set_deadline(req->ctx, deadline);
    ev_timer_stop(h->loop, &req->deadline);
    ev_timer_set(&req->deadline, deadline > now ? (double)(deadline - now) / 1e9 : 0.0, 0.0);
    ev_timer_start(h->loop, &req->deadline);
}

int srv_req_query_parse(struct srv_req *req)
{
    if (req->query_parsed)
        return 0;
    int rc =
        srv_query_parse(req->url + req->qoff, req->qlen, req->h->cfg.max_query_params, &req->query);
    req->query_parsed = rc == 0;
    return rc;
}

void srv_req_dispatch(struct srv_req *req)
{
    struct srv_http *h = req->h;
    struct ctx *held = ctx_ref(req->ctx);
    struct ctx *prev = ctx_enter(held);
    const struct srv_route *r = req_route(req);
    if (r == NULL)
        goto out;
    uint64_t deadline = ctx_deadline(req->ctx), now = ctx_now_ns();
    if (deadline != 0 && now >= deadline) {
        (void)ctx_cancel(req->ctx, CTX_REASON_DEADLINE);
        srv_req_send_error(req, 504, "deadline_exceeded",
                           "the request deadline passed before the answer was ready", false);
        goto out;
    }
    if (deadline != 0) {
        ev_timer_set(&req->deadline, (double)(deadline - now) / 1e9, 0.0);
        ev_timer_start(h->loop, &req->deadline);
    }
    req->fn = r->fn;
    req->route_arg = r->arg;
    req->route_path =
        r->path[0] != '\0' && r->path[strlen(r->path) - 1] == '*' ? req->path : r->path;
    req->handler_pending = true;
    h->pending++;
    r->fn(req); /* may answer now (req may then be gone) or later */
out:
    ctx_leave(prev);
    ctx_unref(held);
}

bool srv_req_continue(struct srv_req *req)
{
    struct srv_http *h = req->h;
    int status = 0;
    char allow[8];
    const struct srv_route *r =
        srv_route_find_on(h, req->admin, req->method, req->path, &status, allow, sizeof(allow));
    if (req->err_status != 0 || r == NULL || r->continue_fn == NULL ||
        srv_req_query_parse(req) != 0)
        return true; /* answered after the body, as usual */
    /* the route's call is a handler's for as long as it runs: it may answer (a refusal) */
    req->route_arg = r->arg;
    req->route_path =
        r->path[0] != '\0' && r->path[strlen(r->path) - 1] == '*' ? req->path : r->path;
    req->handler_pending = true;
    h->pending++;
    struct ctx *held = ctx_ref(req->ctx);
    struct ctx *prev = ctx_enter(held);
    bool go_on = r->continue_fn(req);
    ctx_leave(prev);
    ctx_unref(held);
    if (!go_on)
        return false; /* answered: the answer may have been written and req freed already */
    if (!req->handler_pending || req->answered) {
        LOG_F("continue_fn answered and went on", LOG_STR("path", req->path));
        abort();
    }
    req->handler_pending = false;
    h->pending--;
    return true;
}

void srv_req_hold(struct srv_req *req, void *obj, srv_req_hold_fn *release)
{
    if (req->held_release != NULL)
        req->held_release(req->held);
    req->held = obj;
    req->held_release = release;
}

void *srv_req_hold_take(struct srv_req *req)
{
    void *obj = req->held;
    req->held = NULL;
    req->held_release = NULL;
    return obj;
}

/* ---- the handler's side -------------------------------------------------------------------- */

/* The handler lets go. Returns true when the answer must be discarded (req may be freed). */
static bool req_handler_done(struct srv_req *req)
{
    SRV_ASSERT_LOOP(req->h);
    if (!req->handler_pending) {
        LOG_F("request answered twice", LOG_STR("path", req->path ? req->path : "-"));
        abort();
    }
    req->handler_pending = false;
    req->h->pending--;
    ev_timer_stop(req->h->loop, &req->deadline);
    if (req->conn == NULL || req->answered) {
        srv_req_maybe_free(req);
        return true;
    }
    return false;
}

/* True when a success ready now would reach the client at or after its deadline: the deadline
 * has passed, or is nearer than SRV_ANSWER_TRAVEL_NS, the time an answer may take from here to
 * the client's socket (the write, a loop preempted on a busy machine, the network stack). */
static bool req_past_deadline(const struct srv_req *req)
{
    uint64_t deadline = req->ctx != NULL ? ctx_deadline(req->ctx) : 0;
    return deadline != 0 && ctx_now_ns() + SRV_ANSWER_TRAVEL_NS >= deadline;
}

static int req_answer(struct srv_req *req, int status, const char *ctype, const void *body,
                      size_t len, bool take)
{
    if (req_handler_done(req)) {
        if (take)
            free((void *)body);
        return -ECANCELED;
    }
    struct srv_conn *c = req->conn;
    srv_conn_enter(c);
    int rc;
    if (status < 200 || status > 599) {
        if (take)
            free((void *)body);
        LOG_E("handler answered with a bad status", LOG_INT("status", status));
        srv_req_send_error(req, 500, "internal_error", "internal error", false);
        rc = -EINVAL;
    } else if (status < 300 && req_past_deadline(req)) {
        /* The deadline passed while the answer was on its way (its timer has not run yet in
         * this loop iteration), or is too near for the answer to arrive before it: a success
         * the client has stopped waiting for is not sent. */
        if (take)
            free((void *)body);
        (void)ctx_cancel(req->ctx, CTX_REASON_DEADLINE);
        srv_req_send_error(req, 504, "deadline_exceeded",
                           "the request deadline passed before the answer was ready", false);
        rc = -ETIMEDOUT;
    } else {
        rc = req_send(req, status, ctype, body, len, take);
    }
    srv_conn_exit(c);
    return rc;
}

int srv_req_answer(struct srv_req *req, int status, const char *content_type, const void *body,
                   size_t len)
{
    return req_answer(req, status, content_type, body, len, false);
}

int srv_req_answer_take(struct srv_req *req, int status, const char *content_type, void *body,
                        size_t len)
{
    return req_answer(req, status, content_type, body, len, true);
}

int srv_req_answer_error(struct srv_req *req, int status, const char *code, const char *message)
{
    size_t len = 0;
    char *body = req_error_body(req, code, message, &len);
    if (body == NULL) {
        if (!req_handler_done(req)) {
            struct srv_conn *c = req->conn;
            srv_conn_enter(c);
            srv_conn_send_oom(c);
            srv_conn_exit(c);
        }
        return -ENOMEM;
    }
    return req_answer(req, status, "application/json", body, len, true);
}

void srv_req_release(struct srv_req *req)
{
    if (req_handler_done(req))
        return;
    struct srv_conn *c = req->conn;
    srv_conn_enter(c);
    LOG_E("handler released a request without an answer", LOG_STR("path", req->path));
    srv_req_send_error(req, 500, "internal_error", "the handler gave no answer", false);
    srv_conn_exit(c);
}

/* ---- accessors ------------------------------------------------------------------------------ */

const char *srv_req_method(const struct srv_req *req)
{
    return req->method;
}

const char *srv_req_path(const struct srv_req *req)
{
    return req->path != NULL ? req->path : "-";
}

const char *srv_req_peer(const struct srv_req *req)
{
    return req->peer;
}

void *srv_req_route_arg(const struct srv_req *req)
{
    return req->route_arg;
}

struct srv_http *srv_req_http(const struct srv_req *req)
{
    return req->h;
}

struct ctx *srv_req_ctx(const struct srv_req *req)
{
    return req->ctx;
}

const void *srv_req_body(const struct srv_req *req, size_t *len)
{
    *len = req->body_len;
    return req->body;
}

const char *srv_req_header(const struct srv_req *req, const char *name)
{
    const struct srv_hdr *hd = srv_req_hdr_find(req, name, NULL);
    return hd != NULL ? hd->value : NULL;
}

size_t srv_req_query_count(const struct srv_req *req)
{
    return req->query.count;
}

const struct srv_query_param *srv_req_query_at(const struct srv_req *req, size_t i)
{
    return i < req->query.count ? &req->query.params[i] : NULL;
}

const struct srv_query_param *srv_req_query_get(const struct srv_req *req, const char *key)
{
    return srv_query_get(&req->query, key);
}

void srv_req_set_data(struct srv_req *req, void *data)
{
    req->data = data;
}

void *srv_req_data(const struct srv_req *req)
{
    return req->data;
}

void srv_req_on_cancel(struct srv_req *req, srv_req_cancel_fn *fn, void *arg)
{
    req->cancel_fn = fn;
    req->cancel_arg = arg;
}

bool srv_req_cancelled(const struct srv_req *req)
{
    return req->conn == NULL || req->answered || (req->ctx != NULL && ctx_cancelled(req->ctx));
}

void srv_req_set_timing(struct srv_req *req, uint64_t queue_ns, uint64_t run_ns)
{
    req->queue_ns = queue_ns;
    req->run_ns = run_ns;
}

static bool req_header_reserved(const char *name)
{
    static const char *const reserved[] = {"Content-Length",   "Connection",   "Date",
                                           "Server",           "X-Request-Id", "Content-Type",
                                           "Transfer-Encoding"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(name, reserved[i]) == 0)
            return true;
    return false;
}

int srv_req_header_add(struct srv_req *req, const char *name, const char *value)
{
    if (name[0] == '\0' || req_header_reserved(name))
        return -EINVAL;
    for (const char *p = name; *p != '\0'; p++)
        if (*p <= ' ' || *p >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", *p) != NULL)
            return -EINVAL;
    for (const char *p = value; *p != '\0'; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return -EINVAL;
    struct req_buf b = {.p = req->extra, .len = req->extra_len, .cap = req->extra_len};
    buf_fmt(&b, "%s: %s\r\n", name, value);
    if (b.oom) {
        req->extra = b.p;
        return -ENOMEM;
    }
    req->extra = b.p;
    req->extra_len = b.len;
    return 0;
}
