/* auth.c - the tenant a request has proven: modes, constant-time key checks, failure counting.
 *
 * Design: struct srv_auth holds the mode (fixed at start), the throttle table (throttle.c, fixed
 * size) and a pointer to the key set in force (struct srv_auth_keys: every tenant key as a
 * digest with its tenant's name, the metrics token, the throttle policy). A reload builds a new
 * key set and swaps the pointer (srv_auth_update), so a check sees either the old set or the new
 * one, never a mix; a tenant already proven lives in its request's context and is not revisited.
 *
 * A presented token is hashed with SHA-256 (one EVP_MD fetched at start, one EVP_MD_CTX reused:
 * one thread) and the digest compared with CRYPTO_memcmp against every key of the set; the
 * index of the match is folded in with masks, without a branch or an early exit, so the time
 * does not depend on which key (if any) matched nor on how many bytes of it did. Tokens are
 * bounded (AUTH_TOKEN_MAX) and hashed whole; nothing keeps them past the call.
 *
 * Failures (401) are counted per result and per address (the throttle); 403 is not a guess and
 * is not counted against the address. Stats are plain counters: one thread.
 */
#include "server/auth/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/auth/internal.h"

#define AUTH_TOKEN_MAX 512 /* bytes of a bearer token at most (spindle keygen makes 47) */
#define AUTH_NO_TENANT "-"

struct auth_key {
    unsigned char digest[SRV_CFG_DIGEST];
    unsigned tenant; /* index into srv_auth_keys.tenants */
};

struct srv_auth_keys {
    struct srv_auth_throttle_policy policy;
    bool metrics_token_set;
    unsigned char metrics_digest[SRV_CFG_DIGEST];
    size_t nkeys;
    struct auth_key *keys;
    char (*tenants)[CTX_TENANT_MAX + 1];
};

struct srv_auth {
    enum srv_cfg_auth_mode mode;
    struct srv_auth_keys *keys; /* in force; replaced whole by srv_auth_update */
    struct srv_auth_throttle *throttle;
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    uint64_t counts[SRV_AUTH_NRESULTS];
};

static const char *const auth_result_names[SRV_AUTH_NRESULTS] = {
    [SRV_AUTH_OK] = "ok",
    [SRV_AUTH_MISSING] = "missing",
    [SRV_AUTH_INVALID] = "invalid",
    [SRV_AUTH_FORBIDDEN] = "forbidden",
    [SRV_AUTH_THROTTLED] = "throttled",
    [SRV_AUTH_BAD_TENANT] = "bad_tenant",
};

const char *srv_auth_result_name(enum srv_auth_result r)
{
    return (unsigned)r < SRV_AUTH_NRESULTS ? auth_result_names[r] : "?";
}

/* ---- key sets ------------------------------------------------------------------------------ */

void srv_auth_keys_free(struct srv_auth_keys *k)
{
    if (k == NULL)
        return;
    free(k->keys);
    free(k->tenants);
    free(k);
}

struct srv_auth_keys *srv_auth_keys_new(const struct srv_cfg *cfg)
{
    struct srv_auth_keys *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    size_t n = 0;
    for (unsigned i = 0; i < cfg->tenant_count; i++)
        n += cfg->tenants[i].keys.count;
    k->keys = calloc(n ? n : 1, sizeof(*k->keys));
    k->tenants = calloc(cfg->tenant_count ? cfg->tenant_count : 1, sizeof(*k->tenants));
    if (k->keys == NULL || k->tenants == NULL) {
        srv_auth_keys_free(k);
        return NULL;
    }
    for (unsigned i = 0; i < cfg->tenant_count; i++) {
        const struct srv_cfg_tenant *t = &cfg->tenants[i];
        memcpy(k->tenants[i], t->name, sizeof(k->tenants[i]));
        for (unsigned j = 0; j < t->keys.count; j++) {
            memcpy(k->keys[k->nkeys].digest, t->keys.digest[j], SRV_CFG_DIGEST);
            k->keys[k->nkeys++].tenant = i;
        }
    }
    k->metrics_token_set = cfg->metrics_token.count > 0;
    memcpy(k->metrics_digest, cfg->metrics_token.digest[0], SRV_CFG_DIGEST);
    k->policy = (struct srv_auth_throttle_policy){
        .failures = cfg->throttle_failures,
        .window_ns = (uint64_t)cfg->throttle_window_ms * 1000000u,
        .block_ns = (uint64_t)cfg->throttle_block_ms * 1000000u,
    };
    return k;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

struct srv_auth *srv_auth_new(const struct srv_cfg *cfg)
{
    struct srv_auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->mode = cfg->auth_mode;
    a->keys = srv_auth_keys_new(cfg);
    a->throttle = srv_auth_throttle_new(cfg->throttle_addresses);
    a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    a->md = EVP_MD_CTX_new();
    if (a->keys == NULL || a->throttle == NULL || a->sha256 == NULL || a->md == NULL) {
        srv_auth_free(a);
        return NULL;
    }
    return a;
}

void srv_auth_free(struct srv_auth *a)
{
    if (a == NULL)
        return;
    srv_auth_keys_free(a->keys);
    srv_auth_throttle_free(a->throttle);
    EVP_MD_CTX_free(a->md);
    EVP_MD_free(a->sha256);
    free(a);
}

void srv_auth_update(struct srv_auth *a, struct srv_auth_keys *keys)
{
    srv_auth_keys_free(a->keys);
    a->keys = keys;
}

enum srv_cfg_auth_mode srv_auth_mode(const struct srv_auth *a)
{
    return a->mode;
}

void srv_auth_stats_get(const struct srv_auth *a, uint64_t now_ns, struct srv_auth_stats *out)
{
    memcpy(out->failures, a->counts, sizeof(out->failures));
    srv_auth_throttle_count(a->throttle, now_ns, &out->throttled, &out->tracked);
}

/* ---- checks -------------------------------------------------------------------------------- */

/* The token of "Bearer TOKEN" (scheme case-insensitive, RFC 6750 token68 characters), or NULL. */
static const char *auth_bearer(const char *v, size_t len, size_t *tlen)
{
    static const char scheme[] = "Bearer ";
    size_t slen = sizeof(scheme) - 1;
    if (len <= slen || strncasecmp(v, scheme, slen) != 0)
        return NULL;
    const char *t = v + slen;
    size_t n = len - slen;
    while (n > 0 && *t == ' ')
        t++, n--;
    if (n == 0 || n > AUTH_TOKEN_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  strchr("-._~+/=", c) != NULL;
        if (!ok)
            return NULL;
    }
    *tlen = n;
    return t;
}

static int auth_hash(struct srv_auth *a, const char *t, size_t n, unsigned char *out)
{
    unsigned int len = 0;
    if (EVP_DigestInit_ex(a->md, a->sha256, NULL) != 1 || EVP_DigestUpdate(a->md, t, n) != 1 ||
        EVP_DigestFinal_ex(a->md, out, &len) != 1 || len != SRV_CFG_DIGEST)
        return -EIO;
    return 0;
}

/* The index of the key whose digest is `d` plus one, or 0: every key is compared, always. */
static size_t auth_key_find(const struct srv_auth_keys *k, const unsigned char *d)
{
    size_t found = 0;
    for (size_t i = 0; i < k->nkeys; i++) {
        size_t eq = (size_t)(CRYPTO_memcmp(d, k->keys[i].digest, SRV_CFG_DIGEST) == 0);
        size_t mask = (size_t)0 - eq;
        found = (found & ~mask) | ((i + 1) & mask);
    }
    return found;
}

static void auth_tenant_set(struct srv_auth_verdict *out, const char *t, size_t len)
{
    memcpy(out->tenant, t, len);
    out->tenant[len] = '\0';
    out->tenant_len = len;
}

/* The one Authorization header hashed into d. Returns SRV_AUTH_OK, MISSING or INVALID. */
static enum srv_auth_result auth_token_digest(struct srv_auth *a, const struct srv_auth_input *in,
                                              unsigned char *d)
{
    size_t tlen = 0;
    if (in->authorization_count == 0)
        return SRV_AUTH_MISSING;
    const char *t = in->authorization_count == 1
                        ? auth_bearer(in->authorization, in->authorization_len, &tlen)
                        : NULL;
    if (t == NULL || auth_hash(a, t, tlen, d) != 0)
        return SRV_AUTH_INVALID;
    return SRV_AUTH_OK;
}

/* mode = keys, a tenant route. */
static enum srv_auth_result auth_keys(struct srv_auth *a, const struct srv_auth_input *in,
                                      struct srv_auth_verdict *out)
{
    unsigned char d[SRV_CFG_DIGEST];
    enum srv_auth_result r = auth_token_digest(a, in, d);
    if (r != SRV_AUTH_OK)
        return r;
    size_t hit = auth_key_find(a->keys, d);
    if (hit == 0)
        return SRV_AUTH_INVALID;
    const char *name = a->keys->tenants[a->keys->keys[hit - 1].tenant];
    size_t nlen = strlen(name);
    if (in->tenant_count > 0 &&
        (in->tenant_count > 1 || in->tenant_len != nlen || memcmp(in->tenant, name, nlen) != 0))
        return SRV_AUTH_FORBIDDEN;
    auth_tenant_set(out, name, nlen);
    return SRV_AUTH_OK;
}

/* X-Tenant-Id as mode none reads it (and proxy mode from a trusted peer). */
static enum srv_auth_result auth_header(const struct srv_auth_input *in,
                                        struct srv_auth_verdict *out, bool required)
{
    if (in->tenant_count == 0) {
        auth_tenant_set(out, "default", 7);
        return required ? SRV_AUTH_MISSING : SRV_AUTH_OK;
    }
    if (in->tenant_count > 1 || in->tenant_len > CTX_TENANT_MAX ||
        !ctx_tenant_valid(in->tenant, in->tenant_len))
        return SRV_AUTH_BAD_TENANT;
    auth_tenant_set(out, in->tenant, in->tenant_len);
    return SRV_AUTH_OK;
}

/* GET /metrics: the metrics token when one is set. */
static enum srv_auth_result auth_operator(struct srv_auth *a, const struct srv_auth_input *in)
{
    if (!a->keys->metrics_token_set)
        return SRV_AUTH_OK;
    unsigned char d[SRV_CFG_DIGEST];
    enum srv_auth_result r = auth_token_digest(a, in, d);
    if (r != SRV_AUTH_OK)
        return r;
    return CRYPTO_memcmp(d, a->keys->metrics_digest, SRV_CFG_DIGEST) == 0 ? SRV_AUTH_OK
                                                                          : SRV_AUTH_INVALID;
}

static enum srv_auth_result auth_decide(struct srv_auth *a, const struct srv_auth_input *in,
                                        struct srv_auth_verdict *out)
{
    if (in->cls == SRV_AUTH_OPERATOR) {
        enum srv_auth_result r = auth_operator(a, in);
        return r == SRV_AUTH_OK && a->mode == SRV_CFG_AUTH_NONE ? auth_header(in, out, false) : r;
    }
    switch (a->mode) {
    case SRV_CFG_AUTH_KEYS:
        return auth_keys(a, in, out);
    case SRV_CFG_AUTH_PROXY:
        if (!in->peer_trusted)
            return SRV_AUTH_MISSING;
        return auth_header(in, out, true);
    case SRV_CFG_AUTH_NONE:
        break;
    }
    return auth_header(in, out, false);
}

void srv_auth_check(struct srv_auth *a, const struct srv_auth_input *in,
                    struct srv_auth_verdict *out)
{
    memset(out, 0, sizeof(*out));
    auth_tenant_set(out, AUTH_NO_TENANT, 1);
    /* Mode none keeps today's X-Tenant-Id on every route; elsewhere an open route proves no one. */
    if (in->cls == SRV_AUTH_OPEN) {
        if (a->mode == SRV_CFG_AUTH_NONE && auth_header(in, out, false) != SRV_AUTH_OK) {
            out->result = SRV_AUTH_BAD_TENANT;
            auth_tenant_set(out, "default", 7);
        }
        return;
    }
    bool guarded =
        in->cls == SRV_AUTH_OPERATOR ? a->keys->metrics_token_set : a->mode != SRV_CFG_AUTH_NONE;
    uint64_t left =
        guarded ? srv_auth_throttle_blocked(a->throttle, in->family, in->addr, in->now_ns) : 0;
    if (left > 0) {
        out->result = SRV_AUTH_THROTTLED;
        out->retry_after_ms = (left + 999999) / 1000000;
        a->counts[SRV_AUTH_THROTTLED]++;
        return;
    }
    out->result = auth_decide(a, in, out);
    if (out->result != SRV_AUTH_OK) /* mode none names "default" as it always did */
        a->mode == SRV_CFG_AUTH_NONE ? auth_tenant_set(out, "default", 7)
                                     : auth_tenant_set(out, AUTH_NO_TENANT, 1);
    a->counts[out->result]++;
    if (out->result == SRV_AUTH_MISSING || out->result == SRV_AUTH_INVALID)
        out->failures = srv_auth_throttle_fail(a->throttle, &a->keys->policy, in->family, in->addr,
                                               in->now_ns, &out->throttle_started);
}
