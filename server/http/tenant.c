/* tenant.c - the tenant of a request, decided once from its credentials when its head is read.
 *
 * Design: the route the request will reach says what it needs (its access class, route.h), the
 * authenticator (server/auth/auth.h) decides from the Authorization and X-Tenant-Id headers, the
 * peer and the client its trusted proxy names, and the verdict's tenant goes into the request's
 * context, which admission, the pool, jobs and batches read and nothing else. A refusal (401,
 * 403, 429) becomes the head's error with err_auth set, answered before the body is read (conn.c);
 * the failure is logged at warn with the peer and the client, never with the credentials. Without
 * an authenticator (unit tests, the fuzz target) X-Tenant-Id is taken as sent, as mode none does.
 *
 * Threads: the loop's only, like every request.
 */
#include <stdio.h>
#include <string.h>

#include "logging/log.h"
#include "server/auth/auth.h"
#include "server/http/internal.h"
#include "server/http/proxy.h"

#define REQ_UNAUTHORIZED "missing or invalid credentials" /* one message for every 401 */
#define REQ_BAD_TENANT   "X-Tenant-Id must be 1-64 of [A-Za-z0-9._-]"

/* The head's error is an authentication refusal: answered before the body (srv_req_refuse_early
 * when one follows), with its header. */
static void req_refuse_auth(struct srv_req *req, int status, const char *code, const char *msg,
                            const char *hname, const char *hvalue)
{
    if (req->err_status != 0)
        return;
    req->err_status = status;
    req->err_code = code;
    req->err_msg = msg;
    req->err_auth = true;
    if (hname != NULL)
        (void)srv_req_header_add(req, hname, hvalue);
}

/* The route this request reaches (NULL: unknown path or method, 404/405, which needs nothing). */
static const struct srv_route *req_route_of(const struct srv_req *req)
{
    int status = 0;
    char allow[128];
    if (req->err_status != 0)
        return NULL;
    return srv_route_find_on(req->h, req->admin, req->method, req->path, &status, allow,
                             sizeof(allow));
}

static bool req_peer_trusted(const struct srv_req *req)
{
    const struct srv_cfg_cidrs *trusted = &req->h->cfg.trusted_proxies;
    unsigned char family, addr[16];
    if (trusted->count == 0 || !srv_proxy_addr_parse(req->peer, strlen(req->peer), &family, addr))
        return false;
    for (unsigned i = 0; i < trusted->count; i++) {
        if (srv_cfg_cidr_match(&trusted->net[i], family, addr))
            return true;
    }
    return false;
}

/* The authenticator's view of the request (headers borrowed from the arena). The client's
 * address (for the throttle and the failure lines, into `client`) is worked out only when
 * credentials can be checked at all: mode none on an open or tenant route decides from
 * X-Tenant-Id alone, and costs no more than before. */
static void req_auth_input(const struct srv_req *req, char *client, size_t size,
                           struct srv_auth_input *in)
{
    const struct srv_hdr *hd = srv_req_hdr_find(req, "Authorization", &in->authorization_count);
    in->authorization = hd != NULL ? hd->value : NULL;
    in->authorization_len = hd != NULL ? hd->value_len : 0;
    hd = srv_req_hdr_find(req, "X-Tenant-Id", &in->tenant_count);
    in->tenant = hd != NULL ? hd->value : NULL;
    in->tenant_len = hd != NULL ? hd->value_len : 0;
    in->family = 0;
    snprintf(client, size, "%s", req->peer);
    if (srv_auth_mode(req->h->auth) == SRV_CFG_AUTH_NONE && in->cls != SRV_AUTH_OPERATOR)
        return;
    srv_req_client(req, client, size);
    in->peer_trusted = req_peer_trusted(req);
    if (!srv_proxy_addr_parse(client, strlen(client), &in->family, in->addr))
        in->family = 0;
    in->now_ns = ctx_now_ns();
}

static void req_auth_log(struct srv_req *req, const struct srv_auth_verdict *v, const char *client)
{
    struct ctx *prev = ctx_enter(req->ctx);
    LOG_W("authentication failed", LOG_STR("reason", srv_auth_result_name(v->result)),
          LOG_STR("path", req->path), LOG_STR("peer", req->peer), LOG_STR("client", client),
          LOG_UINT("failures", v->failures));
    if (v->throttle_started)
        LOG_W("client throttled: too many failed authentications", LOG_STR("client", client),
              LOG_UINT("failures", v->failures),
              LOG_UINT("throttle_block_ms", req->h->cfg.throttle_block_ms));
    ctx_leave(prev);
}

static void req_auth_throttled(struct srv_req *req, uint64_t retry_ms)
{
    char secs[24], ms[24];
    snprintf(secs, sizeof(secs), "%llu", (unsigned long long)((retry_ms + 999) / 1000));
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)retry_ms);
    req_refuse_auth(req, 429, "too_many_failures",
                    "too many failed authentications from this address", "Retry-After", secs);
    (void)srv_req_header_add(req, "Retry-After-Ms", ms);
}

/* Without an authenticator (mode none, nothing guarded): X-Tenant-Id as sent, else "default". */
static void req_tenant_header(struct srv_req *req)
{
    unsigned n;
    const struct srv_hdr *hd = srv_req_hdr_find(req, "X-Tenant-Id", &n);
    bool ok = n == 1 && ctx_tenant_valid(hd->value, hd->value_len);
    ctx_set_tenant(req->ctx, ok ? hd->value : "default", ok ? hd->value_len : 7);
    if (n > 0 && !ok)
        srv_req_error_later(req, "invalid_tenant", REQ_BAD_TENANT);
}

void srv_req_tenant_set(struct srv_req *req)
{
    char client[SRV_PEER_MAX]; /* the peer, or the client its trusted proxy names */
    const struct srv_route *route = req_route_of(req);
    struct srv_auth_input in = {.cls = route != NULL ? route->access : SRV_AUTH_OPEN};
    struct srv_auth_verdict v;
    if (req->h->auth == NULL) {
        req_tenant_header(req);
        return;
    }
    req_auth_input(req, client, sizeof(client), &in);
    srv_auth_check(req->h->auth, &in, &v);
    ctx_set_tenant(req->ctx, v.tenant, v.tenant_len);
    if (v.result != SRV_AUTH_OK && v.result != SRV_AUTH_BAD_TENANT && route != NULL)
        req->route_path = route->path; /* a refusal still counts under its route */
    switch (v.result) {
    case SRV_AUTH_OK:
        return;
    case SRV_AUTH_BAD_TENANT:
        srv_req_error_later(req, "invalid_tenant", REQ_BAD_TENANT);
        return;
    case SRV_AUTH_THROTTLED:
        req_auth_throttled(req, v.retry_after_ms);
        return;
    case SRV_AUTH_FORBIDDEN:
        req_refuse_auth(req, 403, "forbidden", "X-Tenant-Id does not match the credentials", NULL,
                        NULL);
        break;
    default:
        req_refuse_auth(req, 401, "unauthorized", REQ_UNAUTHORIZED, "WWW-Authenticate",
                        "Bearer realm=\"spindle\"");
        break;
    }
    req_auth_log(req, &v, client);
}
