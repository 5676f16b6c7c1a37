/* route.h - the route table of an HTTP server: exact method + path to a handler.
 *
 * A request (struct srv_req, request.h) is handed to the handler of its route once its body has
 * been read; a path with routes but none for the request's method answers 405 with `Allow`, an
 * unknown path 404. Loop-thread only, like the server it belongs to (http.h).
 */
#ifndef SPINDLE_HTTP_ROUTE_H
#define SPINDLE_HTTP_ROUTE_H

struct srv_http;
struct srv_req;

/* A handler: called on the loop thread with the request's context current, after the whole body
 * was read. It must eventually call exactly one of srv_req_answer(), srv_req_answer_take(),
 * srv_req_answer_error() or srv_req_release() for `req`, now or later on the loop thread. */
typedef void srv_handler_fn(struct srv_req *req);

/* Route `method` + exact `path` (both borrowed, copied; method upper-case as sent, e.g. "GET",
 * "POST"; path starts with '/', no query) to `fn`. A path ending in "/..." is a prefix: it matches
 * every request path that starts with it (without the "...") and goes on, e.g. "/v1/tasks/..." for
 * "/v1/tasks/ID" and "/v1/tasks/ID/result" (the handler reads the rest from srv_req_path);
 * routes are tried in the order they were added, the first match wins; `arg` is returned by
 * srv_req_route_arg(). A GET route also answers HEAD (the body is left out) unless a HEAD route
 * exists. A path that has routes but not for the request's method answers 405 with `Allow`; an
 * unknown path 404. Returns 0, -EEXIST for a duplicate method+path, -EINVAL, -ENOMEM. */
int srv_http_route_add(struct srv_http *h, const char *method, const char *path, srv_handler_fn *fn,
                       void *arg);

#endif
