/* conn.c - one HTTP/1.1 connection: reading, strict head checks, http-parser, writing, timeouts.
 *
 * Design: a connection is a small struct (two ev_io, one ev_timer, the parser, the head scanner)
 * plus buffers that exist only while needed: the read buffer is allocated when bytes arrive and
 * freed as soon as it is empty, the output when an answer is queued and freed when written. So an
 * idle keep-alive connection costs a few hundred bytes.
 *
 * Phases (enum srv_phase): IDLE -> HEAD -> [BODY] -> HANDLER -> WRITE -> IDLE (keep-alive) or
 * LINGER (closing: shut our side, read and discard until EOF or SRV_LINGER_MS, so the client sees
 * the answer instead of a reset). One request is in flight: while it is in HANDLER/WRITE, further
 * bytes are only buffered (up to limits.max_pipeline_bytes, then reading pauses) and parsed after
 * the answer was fully written, so answers go out in order. The single timer means what the phase
 * says: idle, header (408), body gap (408), write progress, linger.
 *
 * A request head is first checked byte by byte by srv_head_scan (what http-parser is lenient
 * about) and only a complete, accepted head goes to http-parser in one call, so every URL and
 * header callback sees contiguous bytes. The parser is paused at message end; bytes after it stay
 * buffered. After any framing error the connection answers, lingers and never parses again.
 *
 * Retry storms: a client that answers every refusal (429/503) with another request at once,
 * ignoring Retry-After, makes the loop spend its CPU on refusals that the workers need. After
 * SRV_QUICK_RETRIES such instant retries in a row, each further one waits in phase HOLD for
 * server.retry_hold_ms before it is read (its deadline counts from its arrival); a request that
 * comes later than SRV_QUICK_RETRY_NS (1 s, the least Retry-After) after a refusal, or any other
 * answer, resets the count. The window is that wide on purpose: with a 1 ms one, a storming
 * client that was descheduled for a millisecond (the normal case when the machine is busy)
 * reset its count, and the storm was held in some runs and not in others.
 *
 * Draining: nothing is cut when a drain begins. Answers queued from then on say Connection: close
 * (request.c), and an answer queued before keeps its connection, whose next request is served; an
 * idle connection lives until its idle timeout or srv_conn_cancel at the end of the drain period,
 * which also refuses a request still being read with 503 shutting_down, and so one whose bytes
 * wait unread in the socket: only a connection that sent nothing is closed without an answer.
 *
 * Freeing: a connection is never freed inside a parser or watcher callback. Every entry point
 * (watcher callbacks, answers from handlers, drain) brackets its work with srv_conn_enter/exit;
 * srv_conn_kill only marks the connection dead, and the outermost exit stops the watchers and
 * frees it. Loop thread only.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "logging/log.h"
#include "server/fdgate.h"
#include "server/http/internal.h"

static const char conn_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";

static const char conn_oom_answer[] =
    "HTTP/1.1 503 Service Unavailable\r\nServer: spindle\r\nContent-Type: application/json\r\n"
    "Content-Length: 68\r\nConnection: close\r\n\r\n"
    "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"server out of memory\"}}\n";

static const char conn_reject_answer[] =
    "HTTP/1.1 503 Service Unavailable\r\nServer: spindle\r\nContent-Type: application/json\r\n"
    "Content-Length: 104\r\nConnection: close\r\n\r\n"
    "{\"error\":{\"code\":\"too_many_connections\","
    "\"message\":\"connection limit (server.max_connections) reached\"}}\n";

static void conn_flush(struct srv_conn *c);
static void conn_process(struct srv_conn *c);

/* ---- timers and watchers ----------------------------------------------------------------- */

static void conn_timer_arm(struct srv_conn *c, unsigned ms)
{
    ev_timer_stop(c->h->loop, &c->timer);
    if (ms == 0)
        return;
    ev_timer_set(&c->timer, ms / 1000.0, 0.0);
    ev_timer_start(c->h->loop, &c->timer);
}

static bool conn_wants_read(struct srv_conn *c)
{
    if (c->peer_eof)
        return false;
    switch (c->phase) {
    case SRV_PH_HANDLER:
    case SRV_PH_WRITE:
    case SRV_PH_HOLD:
        /* keep watching for EOF/RST and buffer pipelined requests, up to the limit */
        return c->rlen < c->h->cfg.max_pipeline_bytes;
    case SRV_PH_STREAM:
        return srv_stream_wants_read(c);
    default:
        return true;
    }
}

/* A streamed body is being read: its read buffer is kept at full size until the body's end
 * (freeing it when empty and growing it again from SRV_RBUF_MIN made every read 4 KiB). */
static bool conn_streaming_body(const struct srv_conn *c)
{
    return c->phase == SRV_PH_STREAM && c->req != NULL && !c->req->msg_complete;
}

/* Bring the watchers in line with the phase and drop an empty read buffer. */
static void conn_sync(struct srv_conn *c)
{
    struct ev_loop *loop = c->h->loop;
    if (conn_wants_read(c))
        ev_io_start(loop, &c->rio);
    else
        ev_io_stop(loop, &c->rio);
    if (c->rlen == 0 && c->rbuf != NULL && !conn_streaming_body(c)) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->roff = c->rcap = 0;
    }
}

static void conn_out_free(struct srv_conn *c)
{
    if (!c->out_static)
        free(c->out);
    free(c->body);
    c->out = c->body = NULL;
    c->out_len = c->out_off = c->body_len = c->body_off = 0;
    c->out_static = false;
}

static void conn_free(struct srv_conn *c)
{
    struct srv_http *h = c->h;
    ev_io_stop(h->loop, &c->rio);
    ev_io_stop(h->loop, &c->wio);
    ev_timer_stop(h->loop, &c->timer);
    srv_fdgate_close(c->fd); /* not while a program being started holds a copy: fdgate.h */
    if (c->req != NULL) {
        struct srv_req *req = c->req;
        c->req = NULL;
        srv_req_conn_done(req, false,
                          c->gone_reason != CTX_REASON_NONE ? c->gone_reason
                                                            : CTX_REASON_CLIENT_CLOSED);
    }
    free(c->rbuf);
    conn_out_free(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    if (c->rejecting)
        h->nrejecting--;
    if (h->maxconn_logged && h->nconns - h->nrejecting < h->cfg.max_connections / 2 + 1) {
        h->maxconn_logged = false;
        LOG_I("connections below max_connections", LOG_UINT("connections", h->nconns));
    }
    free(c);
    srv_http_conn_closed(h);
}

void srv_conn_enter(struct srv_conn *c)
{
    c->depth++;
}

void srv_conn_exit(struct srv_conn *c)
{
    assert(c->depth > 0);
    if (--c->depth > 0)
        return;
    if (c->dead)
        conn_free(c);
    else
        conn_sync(c);
}

void srv_conn_kill(struct srv_conn *c, enum ctx_reason reason)
{
    if (c->dead)
        return;
    c->dead = true;
    c->gone_reason = reason;
}

/* Watcher callbacks run with the current request's context entered (a reference is held so that
 * freeing the request inside the callback cannot leave a dangling current context). */
struct conn_scope {
    struct ctx *ctx, *prev;
};

static struct conn_scope conn_scope_enter(struct srv_conn *c)
{
    struct conn_scope s;
    s.ctx = c->req != NULL && c->req->ctx != NULL ? ctx_ref(c->req->ctx) : NULL;
    s.prev = ctx_enter(s.ctx);
    srv_conn_enter(c);
    return s;
}

static void conn_scope_exit(struct srv_conn *c, struct conn_scope s)
{
    srv_conn_exit(c);
    ctx_leave(s.prev);
    ctx_unref(s.ctx);
}

/* ---- closing ----------------------------------------------------------------------------- */

/* The closing answer is out: shut our side and discard what the client still sends. */
static void conn_linger(struct srv_conn *c)
{
    c->phase = SRV_PH_LINGER;
    c->roff = c->rlen = 0; /* nothing buffered is ever parsed after a closing answer */
    conn_out_free(c);
    ev_io_stop(c->h->loop, &c->wio);
    if (c->peer_eof || shutdown(c->fd, SHUT_WR) != 0) {
        srv_conn_kill(c, CTX_REASON_NONE);
        return;
    }
    conn_timer_arm(c, SRV_LINGER_MS);
}

static void conn_discard(struct srv_conn *c)
{
    char tmp[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, tmp, sizeof(tmp), 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        srv_conn_kill(c, CTX_REASON_NONE);
        return;
    }
}

/* ---- writing ----------------------------------------------------------------------------- */

int srv_conn_out_append(struct srv_conn *c, const char *data, size_t len)
{
    size_t pending = c->out_len - c->out_off;
    char *p = malloc(pending + len);
    if (p == NULL)
        return -ENOMEM;
    if (pending > 0)
        memcpy(p, c->out + c->out_off, pending);
    memcpy(p + pending, data, len);
    if (!c->out_static)
        free(c->out);
    c->out = p;
    c->out_static = false;
    c->out_off = 0;
    c->out_len = pending + len;
    return 0;
}

/* Track refusals for conn_hold: a 429 or 503 was written now, or anything else resets. */
static void conn_note_answer(struct srv_conn *c, int status)
{
    if (status == 429 || status == 503) {
        c->refused_ns = ctx_now_ns();
        return;
    }
    c->refused_ns = 0;
    c->quick_retries = 0;
}

/* The answer is fully written: detach the request, then keep-alive or close. */
static void conn_write_done(struct srv_conn *c)
{
    struct srv_req *req = c->req;
    c->req = NULL;
    c->answering = false;
    conn_note_answer(c, req != NULL ? req->status : 0);
    if (req != NULL)
        srv_req_conn_done(req, true, CTX_REASON_NONE);
    /* An answer that did not say close (queued before a drain began) keeps the connection: the
     * client may already have sent its next request, which is served (with Connection: close)
     * rather than lost. Only past the drain period does such a connection close. */
    if (c->close_after || c->h->drain_over) {
        conn_linger(c);
        return;
    }
    c->phase = SRV_PH_IDLE;
    conn_timer_arm(c, c->h->cfg.idle_timeout_ms);
    if (!c->in_process) {
        /* An asynchronous answer arrives here with its handler's context current; pipelined
         * requests parsed now belong to other requests, so none of them may log under it. */
        struct ctx *prev = ctx_enter(NULL);
        conn_process(c);
        ctx_leave(prev);
    }
}

static void conn_flush(struct srv_conn *c)
{
    while (c->out_off < c->out_len || c->body_off < c->body_len) {
        struct iovec iov[2];
        int n_iov = 0;
        if (c->out_off < c->out_len)
            iov[n_iov++] = (struct iovec){c->out + c->out_off, c->out_len - c->out_off};
        if (c->body_off < c->body_len)
            iov[n_iov++] = (struct iovec){c->body + c->body_off, c->body_len - c->body_off};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n_iov};
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&c->wio) &&
                    (c->phase == SRV_PH_WRITE || c->phase == SRV_PH_STREAM))
                    conn_timer_arm(c, c->h->cfg.write_timeout_ms);
                ev_io_start(c->h->loop, &c->wio);
                return;
            }
            srv_conn_kill(c, CTX_REASON_CLIENT_CLOSED);
            return;
        }
        if (c->req != NULL)
            c->req->bytes_out += (uint64_t)n;
        size_t done = (size_t)n, head = c->out_len - c->out_off;
        size_t from_head = done < head ? done : head;
        c->out_off += from_head;
        c->body_off += done - from_head;
        if (ev_is_active(&c->wio) && (c->phase == SRV_PH_WRITE || c->phase == SRV_PH_STREAM))
            conn_timer_arm(c, c->h->cfg.write_timeout_ms); /* progress: a new period */
    }
    bool was_waiting = ev_is_active(&c->wio);
    ev_io_stop(c->h->loop, &c->wio);
    conn_out_free(c);
    if (c->phase == SRV_PH_STREAM) {
        /* the piece is out: the body's gap timer again (unless the job holds it up), and the
         * next piece */
        if (was_waiting) {
            bool reading = c->req != NULL && !c->req->msg_complete && srv_stream_wants_read(c);
            conn_timer_arm(c, reading ? c->h->cfg.body_timeout_ms : 0);
        }
        srv_stream_pump(c);
        return;
    }
    if (c->answering)
        conn_write_done(c);
}

void srv_conn_flush(struct srv_conn *c)
{
    conn_flush(c);
}

void srv_conn_timer_arm(struct srv_conn *c, unsigned ms)
{
    conn_timer_arm(c, ms);
}

void srv_conn_send(struct srv_conn *c, char *head, size_t head_len, char *body, size_t body_len)
{
    c->answering = true;
    c->phase = SRV_PH_WRITE;
    ev_timer_stop(c->h->loop, &c->timer);
    if (c->out_off == c->out_len) {
        conn_out_free(c);
        c->out = head;
        c->out_len = head_len;
    } else {
        int rc = srv_conn_out_append(c, head, head_len); /* behind a 100 Continue */
        free(head);
        if (rc != 0) {
            free(body);
            srv_conn_kill(c, CTX_REASON_NONE);
            return;
        }
    }
    free(c->body);
    c->body = body;
    c->body_len = body_len;
    c->body_off = 0;
    conn_flush(c);
}

void srv_conn_send_oom(struct srv_conn *c)
{
    LOG_E("out of memory on the request path", LOG_STR("peer", c->peer));
    c->close_after = true;
    c->answering = true;
    c->phase = SRV_PH_WRITE;
    if (c->req != NULL) {
        c->req->status = 503;
        c->req->answered = true;
    }
    if (c->out_off == c->out_len) {
        conn_out_free(c);
        c->out = (char *)conn_oom_answer;
        c->out_len = sizeof(conn_oom_answer) - 1;
        c->out_static = true;
    } else if (srv_conn_out_append(c, conn_oom_answer, sizeof(conn_oom_answer) - 1) != 0) {
        srv_conn_kill(c, CTX_REASON_NONE);
        return;
    }
    conn_flush(c);
}

/* ---- errors ------------------------------------------------------------------------------ */

static const char *conn_error_code(int status)
{
    switch (status) {
    case 408:
        return "request_timeout";
    case 413:
        return "body_too_large";
    case 414:
        return "uri_too_long";
    case 431:
        return "headers_too_large";
    case 505:
        return "http_version_not_supported";
    default:
        return "bad_request";
    }
}

/* A framing or limit error: answer and close; nothing after it is parsed. */
void srv_conn_fail(struct srv_conn *c, int status, const char *why)
{
    c->close_after = true;
    c->roff = c->rlen = 0;
    if (c->req == NULL)
        c->req = srv_req_new(c);
    if (c->req == NULL) {
        srv_conn_send_oom(c);
        return;
    }
    srv_req_send_error(c->req, status, conn_error_code(status), why, true);
}

/* ---- reading and parsing ----------------------------------------------------------------- */

static void conn_consume(struct srv_conn *c, size_t n)
{
    c->roff += n;
    c->rlen -= n;
    if (c->req != NULL)
        c->req->bytes_in += n;
}

static void conn_dispatch(struct srv_conn *c)
{
    ev_timer_stop(c->h->loop, &c->timer);
    c->phase = SRV_PH_HANDLER;
    c->served++;
    srv_req_dispatch(c->req);
}

/* The head passed the scanner: parse it with http-parser in one call and set the request up. */
static bool conn_head_parse(struct srv_conn *c)
{
    size_t head_len = c->scan.head_len;
    struct srv_req *req = srv_req_new(c);
    if (req == NULL) {
        srv_conn_send_oom(c);
        return false;
    }
    c->req = req;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->parse_base = c->rbuf + c->roff;
    size_t n = http_parser_execute(&c->parser, &c->h->settings, c->parse_base, head_len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (req->oom) {
        srv_conn_send_oom(c);
        return false;
    }
    if ((err != HPE_OK && err != HPE_PAUSED) || n != head_len) {
        srv_conn_fail(c, err == HPE_HEADER_OVERFLOW ? 431 : 400,
                      err != HPE_OK ? http_errno_description(err) : "malformed request head");
        return false;
    }
    int rc = srv_req_from_head(req, &c->parser, c->parse_base);
    conn_consume(c, head_len);
    if (rc != 0) {
        srv_conn_send_oom(c);
        return false;
    }
    if (req->fatal_msg != NULL) {
        srv_conn_fail(c, 400, req->fatal_msg);
        return false;
    }
    if (req->err_auth && !req->msg_complete) {
        /* refused before its body: that body is never read, so the connection cannot go on */
        c->close_after = true;
        c->roff = c->rlen = 0;
        srv_req_refuse_early(req, true);
        return false;
    }
    if (req->msg_complete) {
        conn_dispatch(c);
        return true;
    }
    if (srv_stream_wanted(req, c->parser.content_length)) {
        if (c->parser.content_length != ULLONG_MAX &&
            c->parser.content_length > c->h->cfg.max_stream_bytes) {
            srv_conn_fail(c, 413, "request body larger than limits.max_stream_bytes");
            return false;
        }
        /* the handler decides (admission) before any of the body is read */
        ev_timer_stop(c->h->loop, &c->timer);
        c->phase = SRV_PH_STREAM;
        c->served++;
        srv_req_dispatch(req);
        if (!c->dead)
            srv_stream_begin(c);
        return !c->dead;
    }
    if (c->parser.content_length != ULLONG_MAX &&
        c->parser.content_length > c->h->cfg.max_body_bytes) {
        srv_conn_fail(c, 413, "request body larger than limits.max_body_bytes");
        return false;
    }
    if (req->expect_continue && !req->http10) {
        /* the route decides first (admission): a refusal goes out instead of 100 Continue, the
         * body is never read and the connection closes after the answer */
        if (!srv_req_continue(req)) {
            c->roff = c->rlen = 0;
            return false;
        }
        if (srv_conn_out_append(c, conn_continue, sizeof(conn_continue) - 1) != 0) {
            srv_conn_send_oom(c);
            return false;
        }
        conn_flush(c);
    }
    c->phase = SRV_PH_BODY;
    conn_timer_arm(c, c->h->cfg.body_timeout_ms);
    return !c->dead;
}

/* A request starts arriving at `now` on an idle connection. When its client has come back
 * within SRV_QUICK_RETRY_NS of each of its last SRV_QUICK_RETRIES refusals (a retry storm that
 * ignores Retry-After), hold it for retry_hold_ms before reading it. Returns true when held. */
static bool conn_hold(struct srv_conn *c, uint64_t now)
{
    if (c->hold_over) {
        c->hold_over = false;
        return false;
    }
    if (c->refused_ns == 0)
        return false;
    /* bytes that came before the refusal was written (pipelined) are an instant retry too */
    bool quick = now < c->refused_ns || now - c->refused_ns < SRV_QUICK_RETRY_NS;
    c->quick_retries = quick ? c->quick_retries + 1 : 0;
    c->refused_ns = 0;
    if (c->quick_retries < SRV_QUICK_RETRIES || c->h->cfg.retry_hold_ms == 0 || c->h->draining)
        return false;
    c->phase = SRV_PH_HOLD;
    c->held_ns = c->t_head_ns = now;
    c->h->n_held++;
    LOG_D("retry held", LOG_STR("peer", c->peer), LOG_UINT("quick_retries", c->quick_retries),
          LOG_UINT("hold_ms", c->h->cfg.retry_hold_ms));
    conn_timer_arm(c, c->h->cfg.retry_hold_ms);
    return true;
}

static bool conn_head(struct srv_conn *c)
{
    if (c->rlen == 0) {
        c->phase = SRV_PH_IDLE;
        if (c->peer_eof)
            srv_conn_kill(c, CTX_REASON_NONE);
        return false;
    }
    if (c->phase == SRV_PH_IDLE) {
        /* the request's first bytes reached the machine with the last read (earlier, when they
         * were buffered behind the previous request): its deadline counts from there */
        uint64_t now = ctx_now_ns();
        if (c->rx_ns != 0 && c->rx_ns < now)
            now = c->rx_ns;
        if (conn_hold(c, now))
            return false;
        c->phase = SRV_PH_HEAD;
        c->fresh = false;
        c->t_head_ns = c->held_ns != 0 ? c->held_ns : now; /* a held request arrived earlier */
        c->held_ns = 0;
        srv_head_scan_init(&c->scan);
        conn_timer_arm(c, c->h->cfg.header_timeout_ms);
    }
    const struct srv_cfg *cfg = &c->h->cfg;
    struct srv_head_limits lim = {.max_request_line = cfg->max_request_line,
                                  .max_header_bytes = cfg->max_header_bytes,
                                  .max_headers = cfg->max_headers};
    switch (srv_head_scan(&c->scan, c->rbuf + c->roff, c->rlen, &lim)) {
    case SRV_HEAD_MORE:
        if (c->peer_eof)
            srv_conn_kill(c, CTX_REASON_NONE);
        else if (c->rlen >= c->h->rbuf_max)
            srv_conn_fail(c, 431, "request head too large");
        return false;
    case SRV_HEAD_ERROR:
        srv_conn_fail(c, c->scan.status, c->scan.why);
        return false;
    case SRV_HEAD_DONE:
        break;
    }
    return conn_head_parse(c);
}

static bool conn_body(struct srv_conn *c)
{
    struct srv_req *req = c->req;
    if (c->rlen == 0)
        return false;
    size_t n = http_parser_execute(&c->parser, &c->h->settings, c->rbuf + c->roff, c->rlen);
    conn_consume(c, n);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (req->oom) {
        srv_conn_send_oom(c);
        return false;
    }
    if (req->body_too_large) {
        srv_conn_fail(c, 413, "request body larger than limits.max_body_bytes");
        return false;
    }
    if (req->trailers_too_large) {
        srv_conn_fail(c, 431, "trailer section too large");
        return false;
    }
    if (err == HPE_PAUSED && req->msg_complete) {
        conn_dispatch(c);
        return true;
    }
    if (err != HPE_OK) {
        srv_conn_fail(c, 400, http_errno_description(err));
        return false;
    }
    return false;
}

static void conn_process(struct srv_conn *c)
{
    if (c->in_process)
        return;
    c->in_process = true;
    bool more = true;
    while (more && !c->dead) {
        if (c->phase == SRV_PH_IDLE || c->phase == SRV_PH_HEAD)
            more = conn_head(c);
        else if (c->phase == SRV_PH_BODY)
            more = conn_body(c);
        else if (c->phase == SRV_PH_STREAM)
            more = srv_stream_body(c);
        else
            more = false;
    }
    c->in_process = false;
}

void srv_conn_process(struct srv_conn *c)
{
    conn_process(c);
}

/* Room to read into: compact, then grow up to the phase's bound. Returns the free bytes. */
static size_t conn_rbuf_room(struct srv_conn *c)
{
    size_t limit = conn_streaming_body(c) ? srv_stream_rbuf_max(c->h) : c->h->rbuf_max;
    if (c->phase == SRV_PH_HANDLER || c->phase == SRV_PH_WRITE ||
        (c->phase == SRV_PH_STREAM && (c->req == NULL || c->req->msg_complete)))
        limit = c->h->cfg.max_pipeline_bytes;
    if (c->rlen >= limit)
        return 0;
    if (c->roff > 0 && (c->roff + c->rlen == c->rcap || c->roff >= c->rcap / 2)) {
        memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
        c->roff = 0;
    }
    /* A streamed body grows the buffer the head was read into (SRV_RBUF_MIN) to its full size
     * at once: a buffer that the parser drains after every read never fills, so it would never
     * grow, and every read would be 4 KiB. */
    bool widen = conn_streaming_body(c) && c->rcap < limit;
    if (c->roff + c->rlen == c->rcap || widen) {
        size_t bound = conn_streaming_body(c) ? limit : c->h->rbuf_max;
        size_t cap = widen ? limit : c->rcap ? c->rcap * 2 : SRV_RBUF_MIN;
        if (cap > bound)
            cap = bound;
        if (cap <= c->rcap)
            return 0;
        char *p = realloc(c->rbuf, cap);
        if (p != NULL) {
            c->rbuf = p;
            c->rcap = cap;
        } else if (c->roff + c->rlen == c->rcap) {
            return 0;
        }
    }
    size_t room = c->rcap - c->roff - c->rlen;
    return room < limit - c->rlen ? room : limit - c->rlen;
}

static void conn_eof(struct srv_conn *c)
{
    c->peer_eof = true;
    if (c->phase == SRV_PH_WRITE)
        return; /* the client may still read: finish the answer, then close */
    if (c->phase == SRV_PH_STREAM && c->req != NULL && c->req->msg_complete)
        return; /* the whole body came: the client may still read the answer */
    /* HANDLER: the client is gone (499, context cancelled); elsewhere a partial request dies */
    srv_conn_kill(c, CTX_REASON_CLIENT_CLOSED);
}

/* The kernel's receive time of the data just read (SO_TIMESTAMPNS, CLOCK_REALTIME) on the
 * monotonic scale, or now when the socket gave none. Never later than now. */
static uint64_t conn_rx_ns(const struct msghdr *m)
{
    uint64_t now = ctx_now_ns();
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm != NULL;
         cm = CMSG_NXTHDR((struct msghdr *)m, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
            continue;
        struct timespec ts, real;
        memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
        clock_gettime(CLOCK_REALTIME, &real);
        int64_t age = (int64_t)(real.tv_sec - ts.tv_sec) * 1000000000 + (real.tv_nsec - ts.tv_nsec);
        if (age <= 0)
            return now;
        return (uint64_t)age < now ? now - (uint64_t)age : now;
    }
    return now;
}

/* recv() into the read buffer, noting when the bytes reached the machine in c->rx_ns. */
static ssize_t conn_recv(struct srv_conn *c, size_t room)
{
    struct iovec iov = {c->rbuf + c->roff + c->rlen, room};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof(ctl.buf)};
    ssize_t n = recvmsg(c->fd, &m, 0);
    if (n > 0)
        c->rx_ns = conn_rx_ns(&m);
    return n;
}

static void conn_on_read(struct srv_conn *c)
{
    if (c->phase == SRV_PH_LINGER) {
        conn_discard(c);
        return;
    }
    /* A streamed body is read on while the socket fills the buffer and the body channel has
     * room (a few reads at most), then its job is woken once for the lot (srv_stream_push). */
    for (unsigned reads = 0;; reads++) {
        size_t room = conn_rbuf_room(c);
        if (room == 0) {
            if (c->rbuf == NULL || c->rcap < SRV_RBUF_MIN)
                srv_conn_send_oom(c);
            break; /* full: reading pauses in conn_sync */
        }
        ssize_t n = conn_recv(c, room);
        if (n > 0) {
            c->rlen += (size_t)n;
            if (c->phase == SRV_PH_BODY || (c->phase == SRV_PH_STREAM && !ev_is_active(&c->wio)))
                conn_timer_arm(c, c->h->cfg.body_timeout_ms);
            conn_process(c);
            if ((size_t)n == room && reads + 1 < SRV_STREAM_READS && !c->dead &&
                conn_streaming_body(c) && srv_stream_wants_read(c))
                continue;
        } else if (n == 0) {
            conn_eof(c);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            srv_conn_kill(c, CTX_REASON_CLIENT_CLOSED);
        }
        break;
    }
    if (!c->dead && c->phase == SRV_PH_STREAM)
        srv_stream_push(c);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_conn *c = w->data;
    struct conn_scope s = conn_scope_enter(c);
    conn_on_read(c);
    conn_scope_exit(c, s);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_conn *c = w->data;
    struct conn_scope s = conn_scope_enter(c);
    conn_flush(c);
    conn_scope_exit(c, s);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_conn *c = w->data;
    struct conn_scope s = conn_scope_enter(c);
    switch (c->phase) {
    case SRV_PH_HEAD:
        srv_conn_fail(c, 408, "request head not received within server.header_timeout_ms");
        break;
    case SRV_PH_BODY:
        srv_conn_fail(c, 408, "request body stalled longer than server.body_timeout_ms");
        break;
    case SRV_PH_WRITE:
        LOG_D("write timeout", LOG_STR("peer", c->peer));
        srv_conn_kill(c, CTX_REASON_CLIENT_CLOSED);
        break;
    case SRV_PH_HANDLER:
        break;
    case SRV_PH_STREAM:
        srv_stream_timeout(c);
        break;
    case SRV_PH_HOLD: /* the held request is read now */
        c->phase = SRV_PH_IDLE;
        c->hold_over = true;
        conn_process(c);
        break;
    default: /* IDLE (keep-alive or fresh) and LINGER: close without an answer */
        srv_conn_kill(c, CTX_REASON_NONE);
        break;
    }
    conn_scope_exit(c, s);
}

/* ---- http-parser callbacks: record only; decisions are made after execute returns --------- */

static bool conn_trailer_bytes(struct srv_conn *c, size_t len, bool field_start)
{
    struct srv_req *req = c->req;
    req->trailer_bytes += len;
    req->trailers += field_start;
    if (req->trailer_bytes > c->h->cfg.max_header_bytes || req->trailers > c->h->cfg.max_headers) {
        req->trailers_too_large = true;
        http_parser_pause(&c->parser, 1);
        return false;
    }
    return true;
}

static int conn_on_url(http_parser *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    struct srv_req *req = c->req;
    if (req->url_len == 0)
        req->url_off = (size_t)(at - c->parse_base);
    req->url_len += len;
    return 0;
}

static int conn_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    struct srv_req *req = c->req;
    if (c->phase == SRV_PH_BODY) {
        conn_trailer_bytes(c, len, !req->hdr_in_name);
        req->hdr_in_name = true;
        return 0;
    }
    if (req->hdr_in_name) {
        req->hdrs[req->nhdrs - 1].name_len += len;
        return 0;
    }
    if (req->nhdrs == req->hdr_cap) {
        unsigned cap = req->hdr_cap ? req->hdr_cap * 2 : 8;
        struct srv_hdr *hd = realloc(req->hdrs, cap * sizeof(*hd));
        if (hd == NULL) {
            req->oom = true;
            http_parser_pause(p, 1);
            return 0;
        }
        req->hdrs = hd;
        req->hdr_cap = cap;
    }
    struct srv_hdr *hd = &req->hdrs[req->nhdrs++];
    memset(hd, 0, sizeof(*hd));
    hd->name_off = (size_t)(at - c->parse_base);
    hd->name_len = len;
    req->hdr_in_name = true;
    return 0;
}

static int conn_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    struct srv_req *req = c->req;
    if (c->phase == SRV_PH_BODY) {
        conn_trailer_bytes(c, len, false);
        req->hdr_in_name = false;
        return 0;
    }
    if (req->nhdrs == 0)
        return 0;
    struct srv_hdr *hd = &req->hdrs[req->nhdrs - 1];
    if (req->hdr_in_name) {
        hd->value_off = (size_t)(at - c->parse_base);
        hd->value_len = len;
        req->hdr_in_name = false;
    } else {
        hd->value_len += len;
    }
    return 0;
}

static int conn_on_headers_complete(http_parser *p)
{
    struct srv_conn *c = p->data;
    c->req->hdr_in_name = false;
    return 0;
}

static int conn_on_body(http_parser *p, const char *at, size_t len)
{
    struct srv_conn *c = p->data;
    struct srv_req *req = c->req;
    if (req->streaming)
        return srv_stream_on_body(c, at, len);
    size_t max = c->h->cfg.max_body_bytes;
    if (len > max - req->body_len) {
        req->body_too_large = true;
        http_parser_pause(p, 1);
        return 0;
    }
    if (req->body_len + len > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 1024;
        while (cap < req->body_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *b = realloc(req->body, cap);
        if (b == NULL) {
            req->oom = true;
            http_parser_pause(p, 1);
            return 0;
        }
        req->body = b;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, at, len);
    req->body_len += len;
    return 0;
}

/* A chunk-size line: a chunk that would take the body past max_body_bytes is refused now, not
 * after its bytes were read (http-parser holds the announced size in content_length). */
static int conn_on_chunk_header(http_parser *p)
{
    struct srv_conn *c = p->data;
    struct srv_req *req = c->req;
    if (req->streaming)
        return srv_stream_on_chunk_header(c, p->content_length);
    if (p->content_length > c->h->cfg.max_body_bytes - req->body_len) {
        req->body_too_large = true;
        http_parser_pause(p, 1);
    }
    return 0;
}

static int conn_on_message_complete(http_parser *p)
{
    struct srv_conn *c = p->data;
    c->req->msg_complete = true;
    if (c->req->streaming)
        srv_stream_on_complete(c);
    http_parser_pause(p, 1);
    return 0;
}

void srv_conn_settings_init(http_parser_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->on_url = conn_on_url;
    s->on_header_field = conn_on_header_field;
    s->on_header_value = conn_on_header_value;
    s->on_headers_complete = conn_on_headers_complete;
    s->on_body = conn_on_body;
    s->on_chunk_header = conn_on_chunk_header;
    s->on_message_complete = conn_on_message_complete;
}

/* ---- life cycle -------------------------------------------------------------------------- */

static bool conn_over_limit(struct srv_http *h)
{
    return h->nconns - h->nrejecting > h->cfg.max_connections;
}

static void conn_reject(struct srv_conn *c)
{
    struct srv_http *h = c->h;
    c->rejecting = true;
    h->nrejecting++;
    h->n_rejected++;
    if (!h->maxconn_logged) {
        h->maxconn_logged = true;
        LOG_W("max_connections reached: answering 503",
              LOG_UINT("max_connections", h->cfg.max_connections), LOG_STR("peer", c->peer));
    }
    srv_conn_enter(c);
    c->fresh = false;
    c->req = srv_req_new(c);
    if (c->req == NULL)
        srv_conn_send_oom(c);
    else
        srv_req_send_error(c->req, 503, "too_many_connections",
                           "connection limit (server.max_connections) reached", true);
    srv_conn_exit(c);
}

int srv_conn_new(struct srv_http *h, int fd, const char *peer, bool admin)
{
    if (h->nrejecting >= SRV_REJECT_MAX && h->nconns - h->nrejecting >= h->cfg.max_connections) {
        /* a flood beyond the cap: best effort, without holding the descriptor */
        (void)!send(fd, conn_reject_answer, sizeof(conn_reject_answer) - 1,
                    MSG_NOSIGNAL | MSG_DONTWAIT);
        h->n_rejected++;
        close(fd);
        return 0;
    }
    struct srv_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->h = h;
    c->fd = fd;
    c->fresh = true;
    c->admin = admin;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    ev_timer_init(&c->timer, conn_timer_cb, 0.0, 0.0);
    c->rio.data = c->wio.data = c->timer.data = c;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* not TCP: ignored */
    /* receive times: deadlines count from when a request reached the machine, not from when
     * a busy loop got to it (without them: from the read) */
    (void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    h->n_connections++;
    if (conn_over_limit(h)) {
        conn_reject(c);
        return 0;
    }
    unsigned first = h->cfg.header_timeout_ms;
    if (h->cfg.idle_timeout_ms != 0 && (first == 0 || h->cfg.idle_timeout_ms < first))
        first = h->cfg.idle_timeout_ms;
    conn_timer_arm(c, first);
    ev_io_start(h->loop, &c->rio);
    return 0;
}

/* True when request bytes are buffered or wait unread in the socket (a peek: nothing is
 * consumed). False at EOF, on an error or when the socket is empty. */
static bool conn_bytes_waiting(const struct srv_conn *c)
{
    if (c->rlen > 0)
        return true;
    if (c->peer_eof)
        return false;
    char b;
    ssize_t n;
    do
        n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n > 0;
}

/* The drain period is over while a request is still being read: refuse it with 503
 * shutting_down (the client learns it was not served) and close. */
static void conn_refuse_shutdown(struct srv_conn *c)
{
    c->close_after = true;
    c->roff = c->rlen = 0;
    if (c->req == NULL)
        c->req = srv_req_new(c);
    if (c->req == NULL) {
        srv_conn_send_oom(c);
        return;
    }
    struct ctx *prev = ctx_enter(c->req->ctx);
    srv_req_send_error(c->req, 503, "shutting_down", "the server is shutting down", true);
    ctx_leave(prev);
}

bool srv_conn_cancel(struct srv_conn *c, enum ctx_reason reason)
{
    switch (c->phase) {
    case SRV_PH_HANDLER:
        if (c->req != NULL && c->req->handler_pending && !c->req->answered) {
            srv_req_cancel(c->req, reason, 503, "shutting_down", "the server is shutting down");
            return true;
        }
        return false;
    case SRV_PH_HEAD:
    case SRV_PH_BODY:
    case SRV_PH_HOLD:
        conn_refuse_shutdown(c);
        return false;
    case SRV_PH_STREAM:
        if (c->req != NULL && c->req->handler_pending) {
            /* 503 when nothing went out yet, else the body is cut */
            srv_req_cancel(c->req, reason, 503, "shutting_down", "the server is shutting down");
            return true;
        }
        return false;
    case SRV_PH_WRITE:
    case SRV_PH_LINGER:
        return false;
    default:
        /* idle: a request may have reached the socket without the loop having read it yet (a
         * busy or stopped process, a connection accepted by the drain itself); closing with
         * unread bytes would reset it, so it is refused like one being read */
        if (conn_bytes_waiting(c))
            conn_refuse_shutdown(c);
        else
            srv_conn_kill(c, reason);
        return false;
    }
}
