/* auth.h - who a request is: the tenant proven by its credentials, decided once per request.
 *
 * [auth] mode (server/config.h) says what proves a tenant:
 *   none   X-Tenant-Id as sent (1-64 of [A-Za-z0-9._-]), else "default"; an invalid header is
 *          SRV_AUTH_BAD_TENANT (400). Nothing is secret: for loopback and trusted networks.
 *   keys   Authorization: Bearer TOKEN. The SHA-256 of TOKEN is compared in constant time with
 *          every key of every [tenant.NAME] section (no early exit); the one that matches names
 *          the tenant. An X-Tenant-Id that names another tenant is SRV_AUTH_FORBIDDEN (403).
 *   proxy  X-Tenant-Id, believed only from a peer in [server] trusted_proxies (the front end
 *          authenticated the client, e.g. with nginx auth_request); from any other peer the
 *          request is SRV_AUTH_MISSING (401) whatever it sends.
 * The route decides whether credentials are needed at all (enum srv_auth_class): /healthz and
 * /readyz are open, GET /metrics needs [auth] metrics_token when one is set (in every mode), and
 * every other route needs a tenant.
 *
 * Brute force: every 401 is a failure of the client's address (the peer, or the client its
 * trusted proxy names). An address with `throttle_failures` failures within `throttle_window_ms`
 * is throttled for `throttle_block_ms`: its requests that need credentials get 429 with
 * Retry-After before any check (no hash is computed). A success does not forgive earlier
 * failures (a client holding a valid key of its own must not reset its count while it guesses
 * another tenant's). The addresses live in a fixed table of `throttle_addresses` slots, so a flood
 * of addresses cannot grow memory; when it is full, the slot of the address whose last failure
 * is oldest is reused.
 *
 * Secrets: a token is hashed and forgotten; neither it nor its hash is stored or logged. Keys
 * come from the configuration as hashes only, and a reload swaps them as a whole (srv_auth_update):
 * a request decided before keeps its tenant (it lives in its context), a removed key fails for the
 * next request.
 *
 * Threads: one thread (the loop's) calls everything here; nothing is locked. Stats are read on
 * that thread too (GET /metrics).
 */
#ifndef SPINDLE_AUTH_H
#define SPINDLE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/config.h"

struct srv_auth;

/* What a route needs. */
enum srv_auth_class {
    SRV_AUTH_TENANT = 0, /* a proven tenant (jobs, batches, tasks: every route by default) */
    SRV_AUTH_OPEN,       /* nothing: health checks */
    SRV_AUTH_OPERATOR,   /* [auth] metrics_token when set (GET /metrics) */
};

/* The outcome of a check; the reasons of the failure counters. */
enum srv_auth_result {
    SRV_AUTH_OK = 0,
    SRV_AUTH_MISSING,    /* 401: no credentials (or an untrusted peer in proxy mode) */
    SRV_AUTH_INVALID,    /* 401: credentials that prove nothing (wrong or malformed token) */
    SRV_AUTH_FORBIDDEN,  /* 403: valid credentials, but X-Tenant-Id names another tenant */
    SRV_AUTH_THROTTLED,  /* 429: the address failed too often; nothing was checked */
    SRV_AUTH_BAD_TENANT, /* 400 invalid_tenant: mode none or proxy, X-Tenant-Id malformed */
    SRV_AUTH_NRESULTS
};

/* The metrics label of a failure ("missing", "invalid", "forbidden", "throttled", ...). */
const char *srv_auth_result_name(enum srv_auth_result r);

/* What the HTTP layer hands over for one request (all borrowed for the call). A header sent more
 * than once has count > 1 (and is never believed). */
struct srv_auth_input {
    enum srv_auth_class cls;
    const char *authorization; /* the Authorization value, NULL when absent */
    size_t authorization_len;
    unsigned authorization_count;
    const char *tenant; /* the X-Tenant-Id value, NULL when absent */
    size_t tenant_len;
    unsigned tenant_count;
    bool peer_trusted;      /* the peer is in [server] trusted_proxies */
    unsigned char family;   /* the client's address for the throttle: 4, 6, or 0 (unknown: */
    unsigned char addr[16]; /*   such clients share one slot) */
    uint64_t now_ns;        /* ctx_now_ns() */
};

struct srv_auth_verdict {
    enum srv_auth_result result;
    char tenant[CTX_TENANT_MAX + 1]; /* the context's tenant; "-" when none was proven */
    size_t tenant_len;
    uint64_t retry_after_ms; /* SRV_AUTH_THROTTLED: until the address may try again */
    bool throttle_started;   /* this failure throttled the address (log it once) */
    unsigned failures;       /* failures of the address in its window (after this one) */
};

/* A new authenticator for `cfg` (borrowed, read now: mode, tenant keys, metrics_token, the
 * throttle). NULL when out of memory or when no SHA-256 implementation can be fetched. */
struct srv_auth *srv_auth_new(const struct srv_cfg *cfg);

/* Free it. NULL is a no-op. */
void srv_auth_free(struct srv_auth *a);

/* The keys and settings of `cfg` (borrowed) prepared for srv_auth_update: a new object the caller
 * passes to srv_auth_update (which takes it) or frees with srv_auth_keys_free. NULL when out of
 * memory. Separate so that a reload can fail before anything changed. */
struct srv_auth_keys *srv_auth_keys_new(const struct srv_cfg *cfg);
void srv_auth_keys_free(struct srv_auth_keys *k);

/* Swap in `keys` (taken): tenant keys, metrics_token and the throttle's failures, window and
 * block (the mode and the table's size are fixed at srv_auth_new). Throttled addresses stay
 * throttled. Cannot fail. */
void srv_auth_update(struct srv_auth *a, struct srv_auth_keys *keys);

/* Decide `in` (borrowed) into *out. Counts the failure (and the throttle) as a side effect. */
void srv_auth_check(struct srv_auth *a, const struct srv_auth_input *in,
                    struct srv_auth_verdict *out);

/* The mode in force. */
enum srv_cfg_auth_mode srv_auth_mode(const struct srv_auth *a);

struct srv_auth_stats {
    uint64_t failures[SRV_AUTH_NRESULTS]; /* by result; [SRV_AUTH_OK] counts successes */
    unsigned throttled;                   /* addresses throttled now */
    unsigned tracked;                     /* addresses in the table now */
};

/* The counters as of `now_ns` (ctx_now_ns()). */
void srv_auth_stats_get(const struct srv_auth *a, uint64_t now_ns, struct srv_auth_stats *out);

#endif
