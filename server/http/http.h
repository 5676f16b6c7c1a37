/* http.h - the HTTP/1.1 front end, the server itself: listeners, connections, drain and stop.
 *
 * One struct srv_http lives on one libev loop and owns everything HTTP on it: the listening
 * sockets, every connection, the route table and the per-second Date cache. Connections are
 * parsed with http-parser (plus spindle's own strict checks of the request head, head.h),
 * answered in order with one request in flight per connection, and closed on every framing error.
 * The other concerns have their own headers: routes in route.h, the request a handler gets and
 * answers in request.h, the pure query-string parser in query.h and the head scanner in head.h.
 *
 * Threads: everything here is loop-thread only (the thread that called srv_http_new() and runs
 * the loop); each function asserts it.
 *
 * Errors: actions return 0 or a negative errno; constructors return NULL.
 */
#ifndef SPINDLE_HTTP_H
#define SPINDLE_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "context/ctx.h"

struct ev_loop;
struct srv_cfg;
struct srv_http;

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

/* srv_http_listen for the operator listener ([server] admin_listen): its connections reach only
 * the open and operator routes (route.h: srv_http_route_access_set), every other path is 404; and
 * from its first call on, operator routes are no longer served on the ordinary listeners. Same
 * returns as srv_http_listen. */
int srv_http_listen_admin(struct srv_http *h, const char *addr);

/* Decide every later request's tenant with `auth` (borrowed; must outlive the server; NULL: mode
 * none without a metrics token, X-Tenant-Id as sent). Loop thread. */
struct srv_auth;
void srv_http_auth_set(struct srv_http *h, struct srv_auth *auth);

/* Serve on an already bound and listening stream socket `fd` (socket activation: inherited
 * from the service manager). Sets O_NONBLOCK and FD_CLOEXEC, starts accepting and logs
 * {"msg":"listening","addr":"<address>"} like srv_http_listen(). Returns 0 (the server owns `fd`
 * and closes it with the listeners), -ENOTSOCK / -EINVAL when `fd` is not a listening stream
 * socket, -ESHUTDOWN while draining, -ENOMEM; on error `fd` still belongs to the caller. */
int srv_http_listen_fd(struct srv_http *h, int fd);

/* The addresses the server listens on now, as the "listening" lines name them, in the order they
 * were added, joined by "," into `buf` (size bytes, NUL-terminated; an address that does not fit
 * whole is left out). These are the real sockets: bound ports for port 0, and the inherited
 * sockets under socket activation. Returns the number of listeners. Loop thread. */
unsigned srv_http_listen_addrs(const struct srv_http *h, char *buf, size_t size);

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

/* Announce a coming stop: /readyz answers 503 `draining` from now on, while everything else goes
 * on as usual (listeners accept, answers keep their connection), so that a load balancer's health
 * check takes the server out of rotation before srv_http_drain() closes the listeners. */
void srv_http_announce(struct srv_http *h);

/* True while new work is welcome: neither srv_http_announce() nor srv_http_drain() was called. */
bool srv_http_ready(const struct srv_http *h);

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

#endif
