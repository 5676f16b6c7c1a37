/* route.c - the route table: method + exact path (or a pattern) to a handler, 404 and 405 with
 * Allow.
 *
 * A path ending in '*' is a pattern: "/v1/jobs/" and a star serves every path that starts with
 * "/v1/jobs/" and has at least one more byte and no further '/'. A path ending in "/..." is a
 * prefix pattern: "/v1/tasks/..." serves "/v1/tasks/ID" and "/v1/tasks/ID/result" (the handler
 * reads the rest from the path). Exact paths are tried before patterns, patterns in the order
 * they were added.
 *
 * Design: a small array searched linearly (a handful of routes; a request compares at most a few
 * short strings). Routes are added at start-up on the loop thread and never removed while the
 * server runs, so a found route stays valid. A GET route also serves HEAD unless a HEAD route for
 * the same path exists; Allow lists the path's methods in the order they were added, HEAD right
 * after GET. A route's access class (server/auth/auth.h) also says which listeners carry it: a
 * route a listener does not carry is, on that listener, a path that does not exist.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/http/internal.h"

int srv_http_route_add(struct srv_http *h, const char *method, const char *path, srv_handler_fn *fn,
                       void *arg)
{
    SRV_ASSERT_LOOP(h);
    if (method == NULL || path == NULL || fn == NULL || path[0] != '/' || method[0] == '\0')
        return -EINVAL;
    for (size_t i = 0; i < h->nroutes; i++)
        if (strcmp(h->routes[i].method, method) == 0 && strcmp(h->routes[i].path, path) == 0)
            return -EEXIST;
    if (h->nroutes == h->route_cap) {
        size_t cap = h->route_cap ? h->route_cap * 2 : 8;
        struct srv_route *r = realloc(h->routes, cap * sizeof(*r));
        if (r == NULL)
            return -ENOMEM;
        h->routes = r;
        h->route_cap = cap;
    }
    struct srv_route *r = &h->routes[h->nroutes];
    r->method = strdup(method);
    r->path = strdup(path);
    if (r->method == NULL || r->path == NULL) {
        free(r->method);
        free(r->path);
        return -ENOMEM;
    }
    r->fn = fn;
    r->arg = arg;
    r->access = SRV_AUTH_TENANT;
    r->stream_fn = NULL;
    r->continue_fn = NULL;
    h->nroutes++;
    return 0;
}

int srv_http_route_access_set(struct srv_http *h, const char *path, enum srv_auth_class access)
{
    SRV_ASSERT_LOOP(h);
    int rc = -ENOENT;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].path, path) == 0) {
            h->routes[i].access = access;
            rc = 0;
        }
    }
    return rc;
}

/* Does a connection of the admin listener (or of another) reach route r? */
static bool route_carried(const struct srv_http *h, const struct srv_route *r, bool admin)
{
    if (admin)
        return r->access != SRV_AUTH_TENANT;
    return !(h->has_admin && r->access == SRV_AUTH_OPERATOR);
}

int srv_http_route_stream(struct srv_http *h, const char *method, const char *path,
                          srv_route_stream_fn *fn)
{
    SRV_ASSERT_LOOP(h);
    if (method == NULL || path == NULL)
        return -EINVAL;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].method, method) == 0 && strcmp(h->routes[i].path, path) == 0) {
            h->routes[i].stream_fn = fn;
            return 0;
        }
    }
    return -ENOENT;
}

int srv_http_route_continue(struct srv_http *h, const char *method, const char *path,
                            srv_route_continue_fn *fn)
{
    SRV_ASSERT_LOOP(h);
    if (method == NULL || path == NULL)
        return -EINVAL;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].method, method) == 0 && strcmp(h->routes[i].path, path) == 0) {
            h->routes[i].continue_fn = fn;
            return 0;
        }
    }
    return -ENOENT;
}

void srv_routes_free(struct srv_http *h)
{
    for (size_t i = 0; i < h->nroutes; i++) {
        free(h->routes[i].method);
        free(h->routes[i].path);
    }
    free(h->routes);
    h->routes = NULL;
    h->nroutes = h->route_cap = 0;
}

/* Does the route path `rp` serve `path`, as an exact path (pattern false) or as a pattern
 * (pattern true)? A pattern ends in '*' (that prefix and one more segment: no further '/') or in
 * "/..." (that prefix and anything after it, e.g. "/v1/tasks/..." serves "/v1/tasks/abc" and
 * "/v1/tasks/abc/result", not "/v1/tasks/"). */
static bool route_path_match(const char *rp, const char *path, bool pattern)
{
    size_t n = strlen(rp);
    if (n >= 4 && strcmp(rp + n - 4, "/...") == 0)
        return pattern && strncmp(rp, path, n - 3) == 0 && path[n - 3] != '\0';
    if (n == 0 || rp[n - 1] != '*')
        return !pattern && strcmp(rp, path) == 0;
    return pattern && strncmp(rp, path, n - 1) == 0 && path[n - 1] != '\0' &&
           strchr(path + n - 1, '/') == NULL;
}

static const struct srv_route *route_exact(const struct srv_http *h, bool admin, const char *method,
                                           const char *path)
{
    for (int pattern = 0; pattern < 2; pattern++)
        for (size_t i = 0; i < h->nroutes; i++)
            if (strcmp(h->routes[i].method, method) == 0 &&
                route_path_match(h->routes[i].path, path, pattern) &&
                route_carried(h, &h->routes[i], admin))
                return &h->routes[i];
    return NULL;
}

/* Does any route, exact or pattern, serve `path`? */
static bool route_path_any(const char *rp, const char *path)
{
    return route_path_match(rp, path, false) || route_path_match(rp, path, true);
}

/* Append ", METHOD" (or "METHOD" first) to allow, cutting at size. */
static void route_allow_add(char *allow, size_t size, const char *method)
{
    size_t len = strlen(allow);
    if (len >= size)
        return;
    snprintf(allow + len, size - len, "%s%s", len ? ", " : "", method);
}

const struct srv_route *srv_route_find(const struct srv_http *h, const char *method,
                                       const char *path, int *status, char *allow, size_t size)
{
    return srv_route_find_on(h, false, method, path, status, allow, size);
}

const struct srv_route *srv_route_find_on(const struct srv_http *h, bool admin, const char *method,
                                          const char *path, int *status, char *allow, size_t size)
{
    const struct srv_route *r = route_exact(h, admin, method, path);
    if (r == NULL && strcmp(method, "HEAD") == 0)
        r = route_exact(h, admin, "GET", path);
    if (r != NULL)
        return r;
    if (size > 0)
        allow[0] = '\0';
    bool known = false, head = route_exact(h, admin, "HEAD", path) != NULL;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (!route_path_any(h->routes[i].path, path) || !route_carried(h, &h->routes[i], admin))
            continue;
        known = true;
        if (strcmp(h->routes[i].method, "HEAD") == 0)
            continue; /* listed right after GET, or at the end */
        route_allow_add(allow, size, h->routes[i].method);
        if (strcmp(h->routes[i].method, "GET") == 0) {
            route_allow_add(allow, size, "HEAD");
            head = false;
        }
    }
    if (head)
        route_allow_add(allow, size, "HEAD");
    *status = known ? 405 : 404;
    return NULL;
}
