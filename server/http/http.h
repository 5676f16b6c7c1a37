/* http.h - the HTTP/1.1 front end: listeners, connections, requests, routing, answers.
 *
 * One struct srv_http lives on one libev loop and owns everything HTTP on it: the listening
 * sockets, every connection, the route table and the per-second Date cache. Connections are
 * parsed with http-parser (plus spindle's own strict checks of the request head), answered in
 * order with one request in flight per connection, and closed on every framing error.
 *
 * A request (struct srv_req) is handed to the handler of its route once its body has been read.
 * The handler answers with srv_req_answer*() or gives the request up with srv_req_release(),
 * exactly once, either before it returns or later on the loop thread (an asynchronous handler,
 * e.g. from a pool completion). Between the two the request object stays valid even if the client
 * goes away or the deadline answers 504 first: then the later answer is discarded.
 *
 * Threads: everything here is loop-thread only (the thread that called srv_http_new() and runs
 * the loop); each function asserts it. Workers never touch a struct srv_req: they get what they
 * need (body, parameters) copied or borrowed through their own job state.
 *
 * Errors: actions return 0 or a negative errno; constructors return NULL.
 */
#ifndef SPINDLE_HTTP_H
#define SPINDLE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/config.h"

struct ev_loop;
struct srv_http;
struct srv_req;

/* ---- the server on one loop ---------------------------------------------------------------- */

/* A new HTTP server on `loop` (borrowed, must outlive it) with no listener and no route. `cfg` is
 * copied (limits, timeouts, log.access). `root` (borrowed; a reference is taken) is the parent of
 * every request context. Must be called on the thread that runs `loop`, which becomes the only
 * thread allowed to use the server. Without listeners it keeps no watcher active, so
 * `ev_run(loop, 0)` returns once every connection has closed (what a fuzz target or a unit test
 * with srv_http_adopt_fd() relies on). NULL on out of memory. */
struct srv_http *srv_http_new(struct ev_loop *loop, const struct srv_cfg *cfg, struct ctx *root);

/* Close every listener and connection (at once, without answers), free the routes and the server.
 * Requires that no handler still holds a request (every handler answered or released: stop the
 * pool first); aborts otherwise. srv_http_free(NULL) is a no-op. */
void srv_http_free(struct srv_http *h);

/* Bind and listen on `addr` (borrowed: "A.B.C.D:PORT", "[IPV6]:PORT", "HOST:PORT"; port 0 picks an
 * ephemeral port), non-blocking, SO_REUSEADDR, IPv6 sockets v6-only, backlog from the config, and
 * start accepting. Logs {"msg":"listening","addr":"<actual address>"} at info. Returns 0,
 * -EINVAL for an unparsable address, or the negative errno of getaddrinfo/socket/bind/listen
 * (the reason is logged at error level). */
int srv_http_listen(struct srv_http *h, const char *addr);

/* Serve on an already bound and listening stream socket `fd` (socket activation: inherited
 * from the service manager). Sets O_NONBLOCK and FD_CLOEXEC, starts accepting and logs
 * {"msg":"listening","addr":"<address>"} like srv_http_listen(). Returns 0 (the server owns `fd`
 * and closes it with the listeners), -ENOTSOCK / -EINVAL when `fd` is not a listening stream
 * socket, -ESHUTDOWN while draining, -ENOMEM; on error `fd` still belongs to the caller. */
int srv_http_listen_fd(struct srv_http *h, int fd);

/* Hand an already connected stream socket `fd` to the server as if it had just been accepted
 * (same max_connections rule, timeouts and answers). `peer` (borrowed, copied, may be NULL for
 * "-") is what the access log shows. On success the server owns `fd` (sets O_NONBLOCK, closes it
 * with the connection). Returns 0, -ESHUTDOWN while draining, -ENOMEM; on error `fd` still
 * belongs to the caller. Used by socket activation, tests and the fuzz target (socketpair). */
int srv_http_adopt_fd(struct srv_http *h, int fd, const char *peer);

typedef void srv_http_drained_fn(struct srv_http *h, void *arg);

/* Start draining: accept the connections already waiting in the listen backlogs (their clients
 * may have sent a request), close the listeners, answer /readyz with 503 `draining`, give every
 * later answer `Connection: close`. Connections are not cut: a request that arrives on an idle
 * keep-alive connection is still served (and its answer closes the connection), an answer queued
 * before the drain keeps its connection open for the next request, and idle connections close by
 * their idle timeout or at srv_http_cancel_all(). `fn(h, arg)` (may be NULL) runs on the loop once
 * no connection is left (at once from inside this call when there is none). Idempotent (a later
 * call only replaces fn/arg). */
void srv_http_drain(struct srv_http *h, srv_http_drained_fn *fn, void *arg);

/* End of the drain period: cancel the context of every request still in a handler with `reason`
 * and answer it 503 `shutting_down` (`Connection: close`), answer a request still being read 503
 * `shutting_down` and close, close idle connections. Connections finish writing what is queued
 * (bounded by write_timeout_ms) and then close. */
void srv_http_cancel_all(struct srv_http *h, enum ctx_reason reason);

/* Close every connection at once, without answers; cancel (CLIENT_CLOSED is not claimed: the
 * reason is `reason`) the contexts of requests in handlers. For the end of the stop sequence. */
void srv_http_close_all(struct srv_http *h, enum ctx_reason reason);

/* Replace the copied configuration with `cfg` (borrowed, copied) on a reload. Every setting read
 * while serving (timeouts, max_connections, max_keepalive_requests, [limits], log.access, what
 * srv_http_cfg() shows to handlers) takes the new value: open connections from their next read,
 * timer or request on. Settings used only at start (listen, backlog) have no effect here: the
 * caller keeps those at their running values (server/reload.c decides what is live). Loop
 * thread. */
void srv_http_cfg_update(struct srv_http *h, const struct srv_cfg *cfg);

/* File descriptors kept for everything but the connections counted by max_connections: the
 * too_many_connections answers being written (SRV_REJECT_MAX), listeners, the log, the loop's own
 * descriptors, the standard streams. */
#define SRV_HTTP_NOFILE_RESERVE 128

/* Bound max_connections by `cap` (0 = no bound), the connections the open file limit leaves room
 * for: past it accept(2) fails with EMFILE and clients would wait in the backlog instead of
 * getting 503 too_many_connections. Applies to the running configuration now (silently: the
 * caller reports it) and to every later srv_http_cfg_update (a larger value is lowered to `cap`
 * with a warning). Loop thread. */
void srv_http_conn_cap_set(struct srv_http *h, unsigned cap);

/* True once srv_http_drain() was called. */
bool srv_http_draining(const struct srv_http *h);

struct srv_http_stats {
    uint64_t connections;        /* accepted or adopted since start (rejected ones included) */
    uint64_t requests;           /* answers finished (written, or dropped with the connection) */
    uint64_t rejected;           /* connections answered 503 too_many_connections */
    uint64_t held;               /* requests held retry_hold_ms (instant retries after refusals) */
    unsigned open;               /* connections open now */
    unsigned pending;            /* requests whose handler has not answered yet */
    uint64_t drained;            /* requests finished since srv_http_drain() (0 before) */
    uint64_t shutdown_cancelled; /* handlers cancelled by cancel_all/close_all(SHUTDOWN) */
};

void srv_http_stats_get(const struct srv_http *h, struct srv_http_stats *out);

/* The copied configuration (read-only; for handlers that need limits). */
const struct srv_cfg *srv_http_cfg(const struct srv_http *h);

/* The loop the server runs on (borrowed), for handlers that arm their own timers. */
struct ev_loop *srv_http_loop(const struct srv_http *h);

typedef void srv_http_answered_fn(const char *route, int status, void *arg);

/* Call fn(route, status, arg) on the loop thread once per request, when its access line is due
 * (the answer fully written or the connection dropped), also when the access log is off: `route`
 * (borrowed for the call) is the path of the route that served the request, or "other" when none
 * matched; `status` is the final status (499 when the client went away first). One observer; a
 * later call replaces it, fn NULL removes it. For metrics (requests by route and status). */
void srv_http_on_answered(struct srv_http *h, srv_http_answered_fn *fn, void *arg);

/* ---- routes -------------------------------------------------------------------------------- */

/* A handler: called on the loop thread with the request's context current, after the whole body
 * was read. It must eventually call exactly one of srv_req_answer(), srv_req_answer_take(),
 * srv_req_answer_error() or srv_req_release() for `req`, now or later on the loop thread. */
typedef void srv_handler_fn(struct srv_req *req);

/* Route `method` + exact `path` (both borrowed, copied; method upper-case as sent, e.g. "GET",
 * "POST"; path starts with '/', no query) to `fn`; `arg` is returned by srv_req_route_arg(). A GET
 * route also answers HEAD (the body is left out) unless a HEAD route exists. A path that has
 * routes but not for the request's method answers 405 with `Allow`; an unknown path 404.
 * Returns 0, -EEXIST for a duplicate method+path, -EINVAL, -ENOMEM. */
int srv_http_route_add(struct srv_http *h, const char *method, const char *path, srv_handler_fn *fn,
                       void *arg);

/* GET/HEAD /healthz (200 "ok\n") and /readyz (200 "ready\n", 503 `draining` while draining). */
int srv_health_routes_add(struct srv_http *h);

/* ---- the request, for handlers ----------------------------------------------------------- */

/* All borrowed strings below live as long as the request (until its answer/release). */

const char *srv_req_method(const struct srv_req *req); /* "GET", "POST", ... */
const char *srv_req_path(const struct srv_req *req);   /* raw path without the query, "/v1/x" */
const char *srv_req_peer(const struct srv_req *req);   /* "127.0.0.1:5555", "[::1]:80", or "-" */
void *srv_req_route_arg(const struct srv_req *req);    /* the route's `arg` */
struct srv_http *srv_req_http(const struct srv_req *req);

/* The request context (borrowed; the request holds a reference until it is freed; take your own
 * with ctx_ref() to keep it longer, e.g. in a pool job). */
struct ctx *srv_req_ctx(const struct srv_req *req);

/* The request body (borrowed, may be NULL when empty) and its length. Chunked bodies are
 * de-chunked. At most limits.max_body_bytes. */
const void *srv_req_body(const struct srv_req *req, size_t *len);

/* The first value of header `name` (case-insensitive), NUL-terminated, trailing whitespace cut;
 * NULL when absent. */
const char *srv_req_header(const struct srv_req *req, const char *name);

/* Percent-decoded query parameters ('+' is a space), in order. Keys and values are NUL-terminated
 * copies but may contain NUL bytes (%00): use the lengths. */
struct srv_query_param {
    const char *key, *value;
    size_t key_len, value_len;
};
size_t srv_req_query_count(const struct srv_req *req);
/* The i-th parameter, NULL when i >= count. */
const struct srv_query_param *srv_req_query_at(const struct srv_req *req, size_t i);
/* The first parameter named `key` (NUL-terminated), NULL when absent. */
const struct srv_query_param *srv_req_query_get(const struct srv_req *req, const char *key);

/* Handler-owned slot (NULL at first): state of an asynchronous handler. */
void srv_req_set_data(struct srv_req *req, void *data);
void *srv_req_data(const struct srv_req *req);

/* Called on the loop thread, with the request context current, when the server cancels a request
 * whose handler has not answered yet: the client went away (CTX_REASON_CLIENT_CLOSED; access
 * status 499), the deadline passed (CTX_REASON_DEADLINE; 504 already sent) or the server is
 * shutting down (CTX_REASON_SHUTDOWN; 503 already sent). The context is already cancelled when it
 * runs. The handler still owes exactly one answer/release call (its answer is discarded); it may
 * make it from inside `fn`. One hook per request; a later call replaces it; fn NULL removes it. */
typedef void srv_req_cancel_fn(struct srv_req *req, enum ctx_reason reason, void *arg);
void srv_req_on_cancel(struct srv_req *req, srv_req_cancel_fn *fn, void *arg);

/* True when the server gave up on this request (client gone, deadline, shutdown): an answer now
 * is discarded. */
bool srv_req_cancelled(const struct srv_req *req);

/* Add an answer header (`name` and `value` borrowed, copied), e.g. Server-Timing or Retry-After.
 * Call before the answer. Returns 0, -EINVAL (empty name, non-token name, CR/LF/NUL/control bytes
 * in the value, or a header the server writes itself: Content-Length, Connection, Date, Server,
 * X-Request-Id, Content-Type, Transfer-Encoding), -ENOMEM. */
int srv_req_header_add(struct srv_req *req, const char *name, const char *value);

/* Record the job's queue and run time (nanoseconds) for the access log (queue_ms, run_ms). */
void srv_req_set_timing(struct srv_req *req, uint64_t queue_ns, uint64_t run_ns);

/* ---- answering: exactly one of these per request, from its handler ------------------------- */

/* Answer `status` (200..599, not 1xx) with `content_type` (borrowed; NULL = no Content-Type) and
 * `len` bytes of `body` (borrowed, copied; NULL when len is 0). HEAD requests get the headers only
 * (with the Content-Length of the body). The server adds Date, Server, Content-Length,
 * X-Request-Id, Connection and the headers from srv_req_header_add(). After the call `req` belongs
 * to the server again and must not be touched.
 * Returns 0 (queued for writing), -ECANCELED when the answer was discarded (client gone, deadline
 * or shutdown already answered), -ETIMEDOUT when a 2xx answer comes at or after the request's
 * deadline (before its timer ran: the client gets 504 deadline_exceeded instead; a success is
 * never sent late), -ENOMEM when it could not be built (the client gets 503 out_of_memory and
 * the connection closes), -EINVAL for a bad status (the client gets 500). */
int srv_req_answer(struct srv_req *req, int status, const char *content_type, const void *body,
                   size_t len);

/* The same, taking ownership of `body` (malloc'd; freed by the server in every case, also on
 * error). Saves a copy for large answers. */
int srv_req_answer_take(struct srv_req *req, int status, const char *content_type, void *body,
                        size_t len);

/* Answer a JSON error {"error":{"code":CODE,"message":MESSAGE,"request_id":ID}} with
 * Content-Type application/json. `code` and `message` are borrowed and JSON-escaped. Same
 * contract and returns as srv_req_answer(). */
int srv_req_answer_error(struct srv_req *req, int status, const char *code, const char *message);

/* Give the request up without an answer. When the server has not answered it yet (no cancel),
 * the client gets 500 `internal_error`. After the call `req` must not be touched. */
void srv_req_release(struct srv_req *req);

/* ---- query strings (pure; also used by tests) ---------------------------------------------- */

struct srv_query {
    struct srv_query_param *params; /* count entries, owned */
    size_t count;
    char *buf; /* owned storage of the decoded strings */
};

/* Parse `len` bytes of a query string `s` (borrowed; without the '?'), "a=1&b=%20x&c", into *q:
 * percent-decoded, '+' decoded as a space, empty segments skipped, a key without '=' has the
 * value "". Returns 0; -EINVAL for bad percent-encoding ("%4", "%zz"); -E2BIG when there are more
 * than `max_params` parameters; -ENOMEM. On error *q is empty (nothing to free). */
int srv_query_parse(const char *s, size_t len, unsigned max_params, struct srv_query *q);

/* Free what srv_query_parse() filled in; leaves *q empty. Safe on an empty query. */
void srv_query_fini(struct srv_query *q);

/* The first parameter named `key` (NUL-terminated), NULL when absent. */
const struct srv_query_param *srv_query_get(const struct srv_query *q, const char *key);

/* ---- request head checks (pure; also used by tests) ---------------------------------------- */

/* What http-parser 2.9.4 lets through and spindle refuses, checked on the raw bytes of a request
 * head before the parser sees them: bare LF, CR not followed by LF, obs-fold, whitespace before
 * the colon, control bytes (NUL included; HTAB only inside header values) and DEL, request lines
 * not shaped "METHOD SP TARGET SP HTTP/x.y", HTTP versions other than 1.0 and 1.1 (505, also for
 * the HTTP/2 preface), and the size limits (414 for the request line, 431 for header bytes and
 * count). The scan is incremental: call it again with the same buffer grown by new bytes. */
enum srv_head_state {
    SRV_HEAD_MORE = 0, /* no verdict yet: need more bytes */
    SRV_HEAD_DONE,     /* a complete and acceptable head of head_len bytes */
    SRV_HEAD_ERROR,    /* refused: status and why are set */
};

struct srv_head_limits {
    size_t max_request_line; /* bytes of METHOD SP TARGET SP VERSION (414) */
    size_t max_header_bytes; /* bytes of all header lines including their CRLF (431) */
    unsigned max_headers;    /* header lines (431) */
};

struct srv_head_scan {
    /* results */
    size_t head_len;  /* SRV_HEAD_DONE: bytes up to and including the empty line */
    unsigned headers; /* header lines seen */
    int status;       /* SRV_HEAD_ERROR: 400, 414, 431 or 505 */
    const char *why;  /* SRV_HEAD_ERROR: static text for the error message */
    /* private */
    size_t pos, line_start, rl_start, hdr_bytes;
    int state;
};

/* Prepare `s` for a new head. */
void srv_head_scan_init(struct srv_head_scan *s);

/* Continue scanning `buf` (borrowed; the head's bytes from its first byte, `len` of them, growing
 * between calls). Returns the verdict; after SRV_HEAD_DONE or SRV_HEAD_ERROR it keeps returning
 * the same until srv_head_scan_init(). */
enum srv_head_state srv_head_scan(struct srv_head_scan *s, const char *buf, size_t len,
                                  const struct srv_head_limits *lim);

/* True when `v` (borrowed, `n` bytes, blanks around it already removed) is a valid Host field
 * value: uri-host [ ":" port ] (RFC 9112 section 3.2), where uri-host is a reg-name
 * (unreserved, pct-encoded and sub-delims characters; possibly empty) or an IP literal in
 * brackets, and port is at most 5 digits. */
bool srv_head_host_valid(const char *v, size_t n);

/* ---- small shared helpers ------------------------------------------------------------------ */

/* The reason phrase of `status` ("OK", "Not Found", ...; "Unknown" when not known). */
const char *srv_http_reason(int status);

#endif
