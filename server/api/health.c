/* health.c - GET/HEAD /healthz (liveness) and /readyz (readiness: 503 while draining).
 *
 * Design: two cheap handlers that answer on the loop thread at once. /healthz says the loop is
 * turning; /readyz says new work is welcome, so a load balancer stops sending requests as soon as
 * a stop is announced (shutdown.announce_ms) or a drain begins (the answer then also carries
 * Connection: close). Both are open (no credentials, whatever [auth] says) and served on every
 * listener, the admin one included.
 */
#include "server/api/api.h"
#include "server/http/http.h"
#include "server/http/request.h"
#include "server/http/route.h"

static void health_healthz(struct srv_req *req)
{
    (void)srv_req_answer(req, 200, "text/plain", "ok\n", 3);
}

static void health_readyz(struct srv_req *req)
{
    if (!srv_http_ready(srv_req_http(req)))
        (void)srv_req_answer_error(req, 503, "draining", "the server is shutting down");
    else
        (void)srv_req_answer(req, 200, "text/plain", "ready\n", 6);
}

int srv_health_routes_add(struct srv_http *h)
{
    int rc = srv_http_route_add(h, "GET", "/healthz", health_healthz, NULL);
    if (rc == 0)
        rc = srv_http_route_add(h, "GET", "/readyz", health_readyz, NULL);
    /* open to anyone on every listener: a load balancer has no credentials */
    if (rc == 0)
        rc = srv_http_route_access_set(h, "/healthz", SRV_AUTH_OPEN);
    if (rc == 0)
        rc = srv_http_route_access_set(h, "/readyz", SRV_AUTH_OPEN);
    return rc;
}
