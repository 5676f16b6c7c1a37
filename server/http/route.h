/* route.h - the route table of an HTTP server: method + exact path or pattern to a handler.
 *
 * A request (struct srv_req, request.h) is handed to the handler of its route once its body has
 * been read; a path with routes but none for the request's method answers 405 with `Allow`, an
 * unknown path 404. Loop-thread only, like the server it belongs to (http.h).
 */
#ifndef SPINDLE_HTTP_ROUTE_H
#define SPINDLE_HTTP_ROUTE_H

#include "server/auth/auth.h"
#include <stdbool.h>

struct srv_http;
struct srv_req;

/* A handler: called on the loop thread with the request's context current, after the whole body
 * was read. It must eventually call exactly one of srv_req_answer(), srv_req_answer_take(),
 * srv_req_answer_error() or srv_req_release() for `req`, now or later on the loop thread. */
typedef void srv_handler_fn(struct srv_req *req);

/* Route `method` + exact `path` (both borrowed, copied; method upper-case as sent, e.g. "GET",
 * "POST"; path starts with '/', no query) to `fn`. A path ending in '*' ("/v1/jobs/" and a star) is
 * a pattern: it serves every path with that prefix and one more segment (no further '/'), after the
 * exact routes; a request it serves is counted under its own path (srv_req_route_other takes that
 * back). A path ending in "/..." is a prefix pattern: it serves every path that starts with it
 * (without the "...") and goes on, e.g. "/v1/tasks/..." for "/v1/tasks/ID" and
 * "/v1/tasks/ID/result" (the handler reads the rest from srv_req_path), after the exact routes; a
 * request it serves is counted under the pattern. Patterns are tried in the order they were added,
 * the first match wins. `arg` is returned by srv_req_route_arg(). A GET route also answers HEAD
 * (the body is left out) unless a HEAD route exists. A path that has routes but not for the
 * request's method answers 405 with `Allow`; an unknown path 404. Returns 0, -EEXIST for a
 * duplicate method+path, -EINVAL, -ENOMEM. */
int srv_http_route_add(struct srv_http *h, const char *method, const char *path, srv_handler_fn *fn,
                       void *arg);

/* What every route of `path` (borrowed) needs (server/auth/auth.h), which also says where it is
 * served: SRV_AUTH_TENANT (the default of srv_http_route_add: tenant work) on the ordinary
 * listeners only, 404 on the admin listener (srv_http_listen_admin); SRV_AUTH_OPEN (health
 * checks) on every listener; SRV_AUTH_OPERATOR (GET /metrics) on the admin listener when there is
 * one, else on the ordinary ones. Returns 0, or -ENOENT when no route has that path. Set it at
 * start-up, before serving. */
int srv_http_route_access_set(struct srv_http *h, const char *path, enum srv_auth_class access);
/* Called on the loop thread, request context current, when the head of a request for this route
 * has arrived with a body larger than limits.max_body_bytes or chunked (a body that fits is read
 * whole without asking), before any of the body was read; the query is parsed
 * (srv_req_query_*). True: the body streams (srv_req_streaming() is true): the handler is called
 * at once and takes the body through srv_req_stream_start() (request.h). False: the body is read
 * whole as usual (limits.max_body_bytes). */
typedef bool srv_route_stream_fn(struct srv_req *req);

/* Let the route `method` + `path` (added before) stream request bodies when `fn` says so (fn NULL:
 * never). Returns 0, -ENOENT (no such route), -EINVAL. */
int srv_http_route_stream(struct srv_http *h, const char *method, const char *path,
                          srv_route_stream_fn *fn);

/* Called on the loop thread, request context current, when the head of a request for this route
 * has arrived with a body that is to be read whole and `Expect: 100-continue`, before the
 * interim 100 Continue is sent and before any of the body is read; the query is parsed. It may
 * answer the request at once (a refusal, with srv_req_answer_error and the like) and return
 * false: that answer is sent instead of 100 Continue and the connection closes after it, the body
 * never read. True: 100 Continue is sent, the body is read and the handler is called with it as
 * usual; what the call decided may be kept with the request (srv_req_hold, request.h). */
typedef bool srv_route_continue_fn(struct srv_req *req);

/* Let the route `method` + `path` (added before) decide before 100 Continue with `fn` (NULL:
 * 100 Continue is sent at once). Returns 0, -ENOENT (no such route), -EINVAL. */
int srv_http_route_continue(struct srv_http *h, const char *method, const char *path,
                            srv_route_continue_fn *fn);

#endif
