/* stream.c - request bodies and answers that stream through a job: bounded end to end.
 *
 * Design: a streaming request (a body larger than max_body_bytes, or chunked, on a route whose
 * stream_fn says so when the head arrived; a body that fits is read whole as before) is handed to
 * its handler at once, in phase SRV_PH_STREAM. When the handler admits the job it calls
 * srv_req_stream_start, which makes a struct srv_stream: two channels (server/stream/stream.h) of
 * SRV_CHAN_CAPACITY bytes that may grow to SRV_CHAN_MAX while both the client and the job keep
 * pace (never for a slow or idle client), an ev_async that the worker's channel calls wake, and a
 * watch on the request's context that cancels both channels (so a blocked worker returns -ECANCELED
 * at once when the client goes, the deadline passes or the server stops).
 *
 * Body: srv_stream_body feeds http-parser at most as many bytes as the body channel has room for,
 * so every body byte the parser gives fits (framing bytes only make it less). When the channel is
 * full the connection stops reading its socket (srv_stream_wants_read, from conn_sync): the
 * kernel's receive buffer fills and TCP's window stops the client. The worker's read that frees
 * half the channel wakes the loop, which reads on. So a body costs the read buffer and the channel,
 * whatever its size, and max_stream_bytes bounds its length only. While the body streams, the
 * connection's read buffer is kept at SRV_STREAM_RBUF bytes and the socket is read up to
 * SRV_STREAM_READS times per readiness; the worker is woken once for what was fed (srv_chan_push)
 * rather than once per read: per-read wake-ups and 4 KiB reads were most of the loop's time.
 *
 * Answer: srv_stream_pump takes up to SRV_CHAN_CHUNK bytes from the answer channel only when the
 * previous piece is fully written, frames it as one chunk (chunked transfer-encoding; HTTP/1.0:
 * raw, the connection closes at the end) and writes it; the head goes out with the first piece.
 * A client that reads slowly leaves the piece unwritten, the channel fills and the worker's
 * srv_chan_write blocks: memory stays at one piece plus the channel. write_timeout_ms cuts a
 * client that stops reading (access 499, stream_error write_timeout).
 *
 * Ending: srv_req_stream_end (the job's done callback). Success: what is left goes out, then the
 * last chunk. Failure before the head went out: an ordinary JSON error answer. Failure after it:
 * the status line is gone, so the body is cut: no last chunk, the connection closes, and the
 * client sees a truncated transfer; a client that sent `TE: trailers` (it reads trailers) gets
 * the last chunk with a `Spindle-Error: <code>` trailer instead. The access line has the real
 * status and `stream_error`. A body not read to its end closes the connection after the answer.
 * Server-Timing: a head that leaves after the job ended carries the header the done callback
 * added (a kind that answers after its run holds its head until then: srv_req_stream_answer_after,
 * unless its answer fills the answer channel first); when the head left earlier, a client that sent
 * `TE: trailers` gets it as a trailer of the last chunk (announced with `Trailer:`), any other
 * client none.
 *
 * Threads: everything here runs on the loop thread but stream_notify and stream_cancel_cb (the
 * channels' notify and the context watch), which may run on a worker and touch only the channels
 * and ev_async_send. The worker uses the channels only inside its run, which ends before the done
 * callback calls srv_req_stream_end; the stream is freed with its request, after that.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logging/log.h"
#include "server/http/internal.h"
#include "server/stream/stream.h"

#define STREAM_FRAME_PAD 16 /* room before a piece for its chunk-size line */

struct srv_stream {
    struct srv_req *req;
    struct ev_loop *loop;
    struct srv_chan *in, *out;
    ev_async wake;
    struct ctx_watch watch;
    bool watching;
    const char *ctype; /* static */
    bool chunked;      /* HTTP/1.1: chunked transfer-encoding */
    bool trailers;     /* the client sent TE: trailers */
    bool head_sent;
    bool timing_in_head; /* the head left after the job ended: it has Server-Timing */
    bool answer_after;   /* the answer comes after the run: the head waits for the job */
    bool job_done;       /* srv_req_stream_end ran */
    bool aborted;        /* the body was cut */
    bool pumping;        /* srv_stream_pump is on the stack */
    bool paused;         /* reading stopped: the body channel is full */
    uint64_t bytes_out;
};

enum stream_fill { FILL_WAIT, FILL_MORE, FILL_FINAL };

/* ---- worker side: wake-ups and cancellation ---------------------------------------------------
 */

static void stream_notify(void *arg)
{
    struct srv_stream *st = arg;
    ev_async_send(st->loop, &st->wake);
}

static void stream_cancel_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    (void)c;
    (void)reason;
    struct srv_stream *st = arg;
    srv_chan_cancel(st->in);
    srv_chan_cancel(st->out);
}

/* ---- head time --------------------------------------------------------------------------------
 */

bool srv_stream_wanted(struct srv_req *req, uint64_t content_length)
{
    int status = 0;
    char allow[8];
    if (req->err_status != 0 || req->upgrade)
        return false; /* answered after the body, as usual */
    if (content_length != ULLONG_MAX && content_length <= req->h->cfg.max_body_bytes)
        return false; /* fits: read whole, the job answers as it always did */
    const struct srv_route *r = srv_route_find_on(req->h, req->admin, req->method, req->path,
                                                  &status, allow, sizeof(allow));
    if (r == NULL || r->stream_fn == NULL || srv_req_query_parse(req) != 0)
        return false;
    struct ctx *prev = ctx_enter(req->ctx);
    bool yes = r->stream_fn(req);
    ctx_leave(prev);
    req->streaming = yes;
    return yes;
}

bool srv_req_streaming(const struct srv_req *req)
{
    return req->streaming;
}

/* ---- the body ---------------------------------------------------------------------------------
 */

int srv_stream_on_body(struct srv_conn *c, const char *at, size_t len)
{
    struct srv_req *req = c->req;
    if (len > c->h->cfg.max_stream_bytes - req->stream_bytes) {
        req->body_too_large = true;
        http_parser_pause(&c->parser, 1);
        return 0;
    }
    req->stream_bytes += len;
    /* fits: srv_stream_body fed the parser no more than the room (0 when cancelled: dropped) */
    (void)srv_chan_put(req->stream->in, at, len);
    return 0;
}

int srv_stream_on_chunk_header(struct srv_conn *c, uint64_t size)
{
    struct srv_req *req = c->req;
    if (size > c->h->cfg.max_stream_bytes - req->stream_bytes) {
        req->body_too_large = true;
        http_parser_pause(&c->parser, 1);
    }
    return 0;
}

void srv_stream_on_complete(struct srv_conn *c)
{
    if (c->req->stream != NULL)
        srv_chan_close(c->req->stream->in);
}

/* A framing or limit error in a streaming body: answer it when nothing went out yet, else cut. */
static void stream_fail(struct srv_conn *c, int status, const char *code, const char *why)
{
    struct srv_req *req = c->req;
    c->roff = c->rlen = 0;
    srv_req_cancel(req, CTX_REASON_CANCELED, status, code, why);
}

bool srv_stream_body(struct srv_conn *c)
{
    struct srv_req *req = c->req;
    struct srv_stream *st = req != NULL ? req->stream : NULL;
    if (c->phase != SRV_PH_STREAM || st == NULL || req->msg_complete || c->rlen == 0)
        return false;
    size_t room = srv_chan_room(st->in);
    if (room == 0)
        return false;
    size_t feed = c->rlen < room ? c->rlen : room;
    size_t n = http_parser_execute(&c->parser, &c->h->settings, c->rbuf + c->roff, feed);
    c->roff += n;
    c->rlen -= n;
    req->bytes_in += n;
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (req->body_too_large) {
        stream_fail(c, 413, "body_too_large", "request body larger than limits.max_stream_bytes");
        return false;
    }
    if (req->trailers_too_large) {
        stream_fail(c, 431, "headers_too_large", "trailer section too large");
        return false;
    }
    if (err == HPE_PAUSED && req->msg_complete)
        return false; /* later bytes are the next request: parsed after the answer */
    if (err != HPE_OK) {
        stream_fail(c, 400, "bad_request", http_errno_description(err));
        return false;
    }
    return n > 0 && c->rlen > 0;
}

bool srv_stream_wants_read(struct srv_conn *c)
{
    struct srv_req *req = c->req;
    struct srv_stream *st = req != NULL ? req->stream : NULL;
    if (st == NULL || req->msg_complete || st->job_done)
        return c->rlen < c->h->cfg.max_pipeline_bytes; /* only to see EOF */
    if (c->rlen >= srv_stream_rbuf_max(c->h) || srv_chan_room(st->in) == 0) {
        if (!st->paused && !ev_is_active(&c->wio))
            ev_timer_stop(c->h->loop, &c->timer); /* waiting on the job, not on the client */
        st->paused = true;
        return false;
    }
    if (st->paused && !ev_is_active(&c->wio))
        srv_conn_timer_arm(c, c->h->cfg.body_timeout_ms);
    st->paused = false;
    return true;
}

size_t srv_stream_rbuf_max(const struct srv_http *h)
{
    return h->rbuf_max > SRV_STREAM_RBUF ? h->rbuf_max : SRV_STREAM_RBUF;
}

void srv_stream_push(struct srv_conn *c)
{
    struct srv_stream *st = c->req != NULL ? c->req->stream : NULL;
    if (st != NULL)
        srv_chan_push(st->in);
}

/* ---- the answer -------------------------------------------------------------------------------
 */

/* Queue `len` bytes after everything not yet written (head, then piece), as one buffer. */
static int stream_queue(struct srv_conn *c, const char *data, size_t len)
{
    size_t a = c->out_len - c->out_off, b = c->body_len - c->body_off;
    char *p = malloc(a + b + len + 1);
    if (p == NULL)
        return -ENOMEM;
    if (a > 0)
        memcpy(p, c->out + c->out_off, a);
    if (b > 0)
        memcpy(p + a, c->body + c->body_off, b);
    memcpy(p + a + b, data, len);
    if (!c->out_static)
        free(c->out);
    free(c->body);
    c->out = p;
    c->out_static = false;
    c->out_off = 0;
    c->out_len = a + b + len;
    c->body = NULL;
    c->body_off = c->body_len = 0;
    return 0;
}

static int stream_send_head(struct srv_conn *c, struct srv_stream *st)
{
    char *head;
    size_t len;
    int rc = srv_req_stream_head(st->req, 200, st->ctype, st->chunked, st->trailers, &head, &len);
    if (rc == 0) {
        rc = stream_queue(c, head, len);
        free(head);
    }
    if (rc < 0)
        return rc;
    st->head_sent = true;
    st->timing_in_head = st->job_done; /* the done callback added Server-Timing before */
    c->answering = true;
    return 0;
}

/* The last chunk: with a Server-Timing trailer (queue and run, in ms, as the header of a
 * whole-body answer has them) when the client reads trailers and the head left before the job
 * ended; else bare. */
static int stream_last_chunk(struct srv_conn *c, struct srv_stream *st)
{
    static const char last[] = "0\r\n\r\n";
    const struct srv_req *req = st->req;
    if (!st->trailers || st->timing_in_head)
        return stream_queue(c, last, sizeof(last) - 1);
    char tail[128];
    uint64_t q_us = req->queue_ns / 1000u, r_us = req->run_ns / 1000u;
    int n = snprintf(tail, sizeof(tail),
                     "0\r\nServer-Timing: queue;dur=%llu.%03llu, run;dur=%llu.%03llu\r\n\r\n",
                     (unsigned long long)(q_us / 1000u), (unsigned long long)(q_us % 1000u),
                     (unsigned long long)(r_us / 1000u), (unsigned long long)(r_us % 1000u));
    if (n <= 0 || (size_t)n >= sizeof(tail))
        return stream_queue(c, last, sizeof(last) - 1);
    return stream_queue(c, tail, (size_t)n);
}

/* The job succeeded and its output is all out: the last chunk, then the usual end of an answer. */
static enum stream_fill stream_finish(struct srv_conn *c, struct srv_stream *st)
{
    int rc = st->head_sent ? 0 : stream_send_head(c, st);
    if (rc == 0 && st->chunked)
        rc = stream_last_chunk(c, st);
    if (rc < 0) {
        srv_conn_kill(c, CTX_REASON_NONE);
        return FILL_WAIT;
    }
    if (!st->req->msg_complete)
        c->close_after = true; /* the rest of the body is never read */
    c->phase = SRV_PH_WRITE;
    c->answering = true;
    return FILL_FINAL;
}

static enum stream_fill stream_fill(struct srv_conn *c, struct srv_stream *st)
{
    if (st->answer_after && !st->head_sent && !st->job_done && !srv_chan_full_or_arm(st->out))
        return FILL_WAIT; /* the head leaves with the job's end (or once the answer fills out) */
    char *buf = malloc(STREAM_FRAME_PAD + SRV_CHAN_CHUNK + 2);
    if (buf == NULL) {
        srv_conn_kill(c, CTX_REASON_NONE);
        return FILL_WAIT;
    }
    size_t n = srv_chan_get(st->out, buf + STREAM_FRAME_PAD, SRV_CHAN_CHUNK);
    if (n == 0) {
        free(buf);
        return st->job_done ? stream_finish(c, st) : FILL_WAIT;
    }
    st->bytes_out += n;
    size_t start = STREAM_FRAME_PAD, end = STREAM_FRAME_PAD + n;
    if (st->chunked) {
        char hex[STREAM_FRAME_PAD];
        int hl = snprintf(hex, sizeof(hex), "%zx\r\n", n);
        start -= (size_t)hl;
        memcpy(buf + start, hex, (size_t)hl);
        memcpy(buf + end, "\r\n", 2);
        end += 2;
    }
    if (!st->head_sent && stream_send_head(c, st) < 0) {
        free(buf);
        srv_conn_kill(c, CTX_REASON_NONE);
        return FILL_WAIT;
    }
    free(c->body);
    c->body = buf;
    c->body_off = start;
    c->body_len = end;
    return FILL_MORE;
}

void srv_stream_pump(struct srv_conn *c)
{
    struct srv_req *req = c->req;
    struct srv_stream *st = req != NULL ? req->stream : NULL;
    if (st == NULL || st->pumping)
        return;
    st->pumping = true;
    while (!c->dead && c->phase == SRV_PH_STREAM && c->out_off == c->out_len &&
           c->body_off == c->body_len) {
        enum stream_fill f = stream_fill(c, st);
        if (f == FILL_WAIT)
            break;
        if (f == FILL_FINAL) {
            st->pumping = false; /* the flush may free the request and the stream */
            srv_conn_flush(c);
            return;
        }
        srv_conn_flush(c);
    }
    st->pumping = false;
}

void srv_stream_abort(struct srv_req *req, int status, const char *code)
{
    struct srv_stream *st = req->stream;
    struct srv_conn *c = req->conn;
    if (st == NULL || c == NULL || st->aborted)
        return;
    st->aborted = true;
    req->status = status;
    req->stream_error = code;
    srv_chan_cancel(st->in);
    srv_chan_cancel(st->out);
    LOG_W("stream cut after its answer started", LOG_INT("status", status), LOG_STR("code", code),
          LOG_UINT("bytes_out", st->bytes_out));
    c->close_after = true;
    c->answering = true;
    c->phase = SRV_PH_WRITE;
    if (st->chunked && st->trailers) {
        char tail[96];
        int n = snprintf(tail, sizeof(tail), "0\r\nSpindle-Error: %s\r\n\r\n", code);
        if (n > 0 && (size_t)n < sizeof(tail) && stream_queue(c, tail, (size_t)n) < 0) {
            srv_conn_kill(c, CTX_REASON_NONE);
            return;
        }
    }
    srv_conn_flush(c);
}

bool srv_stream_head_sent(const struct srv_req *req)
{
    return req->stream != NULL && req->stream->head_sent;
}

void srv_req_stream_answer_after(struct srv_req *req)
{
    if (req->stream != NULL)
        req->stream->answer_after = true;
}

bool srv_req_stream_head_sent(const struct srv_req *req)
{
    return srv_stream_head_sent(req);
}

void srv_stream_timeout(struct srv_conn *c)
{
    struct srv_req *req = c->req;
    if (ev_is_active(&c->wio)) {
        LOG_D("write timeout", LOG_STR("peer", c->peer));
        if (req != NULL)
            req->stream_error = "write_timeout";
        srv_conn_kill(c, CTX_REASON_CLIENT_CLOSED);
        return;
    }
    if (req != NULL && !req->msg_complete) {
        srv_req_cancel(req, CTX_REASON_CANCELED, 408, "request_timeout",
                       "request body stalled longer than server.body_timeout_ms");
    }
}

/* ---- the handler's side ------------------------------------------------------------------------
 */

static void stream_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_stream *st = w->data;
    struct srv_req *req = st->req;
    struct srv_conn *c = req->conn;
    if (c == NULL)
        return;
    struct ctx *held = ctx_ref(req->ctx);
    struct ctx *prev = ctx_enter(held);
    srv_conn_enter(c);
    srv_conn_process(c); /* room in the body channel: read on */
    if (!c->dead && c->phase == SRV_PH_STREAM)
        srv_stream_push(c);
    if (c->phase == SRV_PH_STREAM)
        srv_stream_pump(c); /* answer bytes */
    srv_conn_exit(c);
    ctx_leave(prev);
    ctx_unref(held);
}

static bool stream_te_trailers(const struct srv_req *req)
{
    const char *te = srv_req_header(req, "TE");
    return te != NULL && strcasestr(te, "trailers") != NULL;
}

int srv_req_stream_start(struct srv_req *req, const char *content_type, struct srv_chan **in,
                         struct srv_chan **out)
{
    SRV_ASSERT_LOOP(req->h);
    if (!req->streaming || req->stream != NULL)
        return -EINVAL;
    struct srv_conn *c = req->conn;
    if (c == NULL || req->answered || ctx_cancelled(req->ctx))
        return -ECANCELED;
    struct srv_stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->req = req;
    st->loop = req->h->loop;
    st->in = srv_chan_new(SRV_CHAN_CAPACITY, stream_notify, st);
    st->out = srv_chan_new(SRV_CHAN_CAPACITY, stream_notify, st);
    if (st->in == NULL || st->out == NULL) {
        srv_stream_free(st);
        return -ENOMEM;
    }
    srv_chan_max_set(st->in, SRV_CHAN_MAX);
    srv_chan_max_set(st->out, SRV_CHAN_MAX);
    st->ctype = content_type;
    st->chunked = !req->http10;
    st->trailers = stream_te_trailers(req);
    ev_async_init(&st->wake, stream_wake_cb);
    st->wake.data = st;
    ev_async_start(st->loop, &st->wake);
    req->stream = st;
    if (ctx_watch_add(req->ctx, &st->watch, stream_cancel_cb, st) == 0)
        st->watching = true;
    else
        stream_cancel_cb(req->ctx, CTX_REASON_CANCELED, st);
    /* ask to be told of the job's first answer bytes (an empty get arms the notify); later the
     * pump re-arms it each time it drains the channel */
    char none;
    (void)srv_chan_get(st->out, &none, 0);
    *in = st->in;
    *out = st->out;
    srv_conn_timer_arm(c, c->h->cfg.body_timeout_ms);
    return 0;
}

void srv_stream_begin(struct srv_conn *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct srv_req *req = c->req;
    if (c->phase != SRV_PH_STREAM || req == NULL || req->stream == NULL)
        return;
    /* admitted and queued: now the client may send the body */
    if (req->expect_continue && !req->http10 && !req->msg_complete &&
        srv_conn_out_append(c, cont, sizeof(cont) - 1) == 0)
        srv_conn_flush(c);
}

int srv_req_stream_end(struct srv_req *req, int result, int status, const char *code,
                       const char *msg)
{
    struct srv_http *h = req->h;
    SRV_ASSERT_LOOP(h);
    struct srv_stream *st = req->stream;
    if (!req->handler_pending || st == NULL) {
        LOG_F("stream ended twice or never started", LOG_STR("path", req->path));
        abort();
    }
    req->handler_pending = false;
    h->pending--;
    ev_timer_stop(h->loop, &req->deadline);
    st->job_done = true;
    struct srv_conn *c = req->conn;
    if (c == NULL || st->aborted || (req->answered && !st->head_sent)) {
        srv_req_maybe_free(req); /* the server gave up on it already */
        return -ECANCELED;
    }
    srv_conn_enter(c);
    if (result == 0)
        srv_stream_pump(c);
    else if (!st->head_sent)
        srv_req_send_error(req, status, code, msg, !req->msg_complete);
    else
        srv_stream_abort(req, status, code);
    srv_conn_exit(c);
    return 0;
}

void srv_req_stream_stats(const struct srv_req *req, struct srv_req_stream_stats *out)
{
    const struct srv_stream *st = req->stream;
    memset(out, 0, sizeof(*out));
    out->bytes_in = req->stream_bytes;
    if (st == NULL)
        return;
    out->bytes_out = st->bytes_out;
    out->blocked_ns = srv_chan_blocked_ns(st->in) + srv_chan_blocked_ns(st->out);
}

void srv_stream_free(struct srv_stream *st)
{
    if (st == NULL)
        return;
    if (st->watching)
        (void)ctx_watch_remove(&st->watch);
    if (st->loop != NULL)
        ev_async_stop(st->loop, &st->wake);
    srv_chan_free(st->in);
    srv_chan_free(st->out);
    free(st);
}
