/* test_auth.c - the tenant a request proves (server/auth/auth.c): each mode, every header
 * combination that must not name another tenant, the metrics token, the throttle's 429 before any
 * check, and a key swap that locks a removed key out at once. Tokens and their hashes are made
 * here with libcrypto, as spindle keygen makes them. */
#include <CUnit/CUnit.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "server/auth/auth.h"
#include "server/config.h"
#include "tests/suite.h"

int suite_server_auth_auth(void);

#define TOK_A1 "spk_tenant-a-first-token"
#define TOK_A2 "spk_tenant-a-second-token"
#define TOK_B  "spk_tenant-b-token"
#define TOK_M  "spk_metrics-token"

/* "sha256:<hex>" of `token` into out (72 bytes). */
static const char *ta_hash(const char *token, char *out)
{
    unsigned char d[32];
    unsigned int n = 0;
    CU_ASSERT_FATAL(EVP_Digest(token, strlen(token), d, &n, EVP_sha256(), NULL) == 1);
    int len = snprintf(out, 72, "sha256:");
    for (unsigned i = 0; i < n; i++)
        len += snprintf(out + len, 72 - (size_t)len, "%02x", d[i]);
    return out;
}

/* Defaults with `mode`, tenants a (keys A1, A2) and b (key B), the metrics token when `metrics`,
 * a throttle of 3 failures. */
static void ta_cfg(struct srv_cfg *cfg, const char *mode, bool metrics)
{
    char err[256], h1[72], h2[72], keys[160];
    srv_cfg_defaults(cfg);
    snprintf(keys, sizeof(keys), "%s, %s", ta_hash(TOK_A1, h1), ta_hash(TOK_A2, h2));
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, "tenant.a", "keys", keys, "t", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(
        srv_cfg_set(cfg, "tenant.b", "keys", ta_hash(TOK_B, h1), "t", err, sizeof(err)), 0);
    if (metrics)
        CU_ASSERT_EQUAL_FATAL(
            srv_cfg_set(cfg, "auth", "metrics_token", ta_hash(TOK_M, h1), "t", err, sizeof(err)),
            0);
    if (strcmp(mode, "proxy") == 0)
        CU_ASSERT_EQUAL_FATAL(
            srv_cfg_set(cfg, "server", "trusted_proxies", "10.0.0.1", "t", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, "auth", "mode", mode, "t", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, "auth", "throttle_failures", "3", "t", err, sizeof(err)),
                          0);
}

/* One request from 192.0.2.<host>: Authorization `authz` (NULL: none), X-Tenant-Id `tenant`. */
static enum srv_auth_result ta_check(struct srv_auth *a, enum srv_auth_class cls, const char *authz,
                                     const char *tenant, unsigned char host, uint64_t now_ns,
                                     struct srv_auth_verdict *v)
{
    struct srv_auth_input in = {.cls = cls, .family = 4, .addr = {192, 0, 2, host}};
    in.authorization = authz;
    in.authorization_len = authz ? strlen(authz) : 0;
    in.authorization_count = authz ? 1 : 0;
    in.tenant = tenant;
    in.tenant_len = tenant ? strlen(tenant) : 0;
    in.tenant_count = tenant ? 1 : 0;
    in.now_ns = now_ns;
    srv_auth_check(a, &in, v);
    return v->result;
}

static void test_srv_auth_check_none_mode_keeps_header(void)
{
    struct srv_cfg cfg;
    struct srv_auth_verdict v;
    ta_cfg(&cfg, "none", false);
    struct srv_auth *a = srv_auth_new(&cfg);
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, NULL, "zed", 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "zed");
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, NULL, NULL, 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "default");
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, NULL, "bad tenant", 1, 1, &v),
                    SRV_AUTH_BAD_TENANT);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_OPERATOR, NULL, NULL, 1, 1, &v), SRV_AUTH_OK);
    srv_auth_free(a);
}

static void test_srv_auth_check_keys_decide_the_tenant(void)
{
    struct srv_cfg cfg;
    struct srv_auth_verdict v;
    ta_cfg(&cfg, "keys", false);
    struct srv_auth *a = srv_auth_new(&cfg);
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_A1, NULL, 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "a");
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "bearer  " TOK_A2, "a", 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "a");
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "b");
    /* no header combination names another tenant */
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_A1, "b", 1, 1, &v),
                    SRV_AUTH_FORBIDDEN);
    CU_ASSERT_STRING_EQUAL(v.tenant, "-");
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, NULL, "b", 2, 1, &v), SRV_AUTH_MISSING);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B "x", "b", 3, 1, &v),
                    SRV_AUTH_INVALID);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Basic YTpi", NULL, 4, 1, &v), SRV_AUTH_INVALID);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer ", NULL, 5, 1, &v), SRV_AUTH_INVALID);
    CU_ASSERT_STRING_EQUAL(v.tenant, "-");
    /* two Authorization headers are never believed, even when one is right */
    struct srv_auth_input in = {.cls = SRV_AUTH_TENANT,
                                .authorization = "Bearer " TOK_A1,
                                .authorization_len = strlen("Bearer " TOK_A1),
                                .authorization_count = 2};
    srv_auth_check(a, &in, &v);
    CU_ASSERT_EQUAL(v.result, SRV_AUTH_INVALID);
    /* open routes need nothing and prove no one */
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_OPEN, NULL, "b", 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "-");
    struct srv_auth_stats st;
    srv_auth_stats_get(a, 1, &st);
    CU_ASSERT_EQUAL(st.failures[SRV_AUTH_FORBIDDEN], 1);
    CU_ASSERT_EQUAL(st.failures[SRV_AUTH_MISSING], 1);
    CU_ASSERT_EQUAL(st.failures[SRV_AUTH_INVALID], 4);
    srv_auth_free(a);
}

static void test_srv_auth_check_proxy_trusts_only_proxies(void)
{
    struct srv_cfg cfg;
    struct srv_auth_verdict v;
    ta_cfg(&cfg, "proxy", false);
    struct srv_auth *a = srv_auth_new(&cfg);
    CU_ASSERT_FATAL(a != NULL);
    struct srv_auth_input in = {.cls = SRV_AUTH_TENANT,
                                .tenant = "b",
                                .tenant_len = 1,
                                .tenant_count = 1,
                                .peer_trusted = true};
    srv_auth_check(a, &in, &v);
    CU_ASSERT_EQUAL(v.result, SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "b");
    in.peer_trusted = false; /* the same header from anyone else */
    srv_auth_check(a, &in, &v);
    CU_ASSERT_EQUAL(v.result, SRV_AUTH_MISSING);
    CU_ASSERT_STRING_EQUAL(v.tenant, "-");
    /* a key proves nothing in proxy mode: the front end decides */
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 1, 1, &v),
                    SRV_AUTH_MISSING);
    in.peer_trusted = true;
    in.tenant_count = 0;
    srv_auth_check(a, &in, &v);
    CU_ASSERT_EQUAL(v.result, SRV_AUTH_MISSING);
    srv_auth_free(a);
}

static void test_srv_auth_check_metrics_token(void)
{
    struct srv_cfg cfg;
    struct srv_auth_verdict v;
    ta_cfg(&cfg, "keys", true);
    struct srv_auth *a = srv_auth_new(&cfg);
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_OPERATOR, NULL, NULL, 1, 1, &v), SRV_AUTH_MISSING);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_OPERATOR, "Bearer " TOK_A1, NULL, 1, 1, &v),
                    SRV_AUTH_INVALID); /* a tenant key is not the metrics token */
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_OPERATOR, "Bearer " TOK_M, NULL, 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_M, NULL, 1, 1, &v),
                    SRV_AUTH_INVALID); /* and the metrics token is no tenant's */
    srv_auth_free(a);
}

/* 3 failures throttle the address: then even the right key gets 429 from it, before any check,
 * while another address goes on; a success never resets the count; the block ends. */
static void test_srv_auth_check_throttle_per_address(void)
{
    struct srv_cfg cfg;
    struct srv_auth_verdict v;
    ta_cfg(&cfg, "keys", false);
    struct srv_auth *a = srv_auth_new(&cfg);
    CU_ASSERT_FATAL(a != NULL);
    uint64_t t = 1000000000;
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer x1", NULL, 7, t, &v), SRV_AUTH_INVALID);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 7, t, &v), SRV_AUTH_OK);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer x2", NULL, 7, t, &v), SRV_AUTH_INVALID);
    CU_ASSERT(!v.throttle_started);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, NULL, NULL, 7, t, &v), SRV_AUTH_MISSING);
    CU_ASSERT(v.throttle_started);
    CU_ASSERT_EQUAL(v.failures, 3);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 7, t + 1000, &v),
                    SRV_AUTH_THROTTLED);
    CU_ASSERT_EQUAL(v.retry_after_ms, 60000);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_OPEN, NULL, NULL, 7, t, &v), SRV_AUTH_OK);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 8, t, &v), SRV_AUTH_OK);
    struct srv_auth_stats st;
    srv_auth_stats_get(a, t, &st);
    CU_ASSERT_EQUAL(st.throttled, 1);
    CU_ASSERT_EQUAL(st.failures[SRV_AUTH_THROTTLED], 1);
    uint64_t later = t + 60000ull * 1000000u;
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 7, later, &v), SRV_AUTH_OK);
    srv_auth_stats_get(a, later, &st);
    CU_ASSERT_EQUAL(st.throttled, 0);
    srv_auth_free(a);
}

/* A new key set: the removed key fails at once, the tenant's other key works, the new key works. */
static void test_srv_auth_update_swaps_keys(void)
{
    struct srv_cfg cfg;
    struct srv_auth_verdict v;
    char err[256], h[72];
    ta_cfg(&cfg, "keys", false);
    struct srv_auth *a = srv_auth_new(&cfg);
    CU_ASSERT_FATAL(a != NULL);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_A1, NULL, 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_EQUAL(
        srv_cfg_set(&cfg, "tenant.a", "keys", ta_hash(TOK_A2, h), "t", err, sizeof(err)), 0);
    struct srv_auth_keys *k = srv_auth_keys_new(&cfg);
    CU_ASSERT_FATAL(k != NULL);
    srv_auth_update(a, k);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_A1, NULL, 1, 1, &v),
                    SRV_AUTH_INVALID);
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_A2, NULL, 1, 1, &v), SRV_AUTH_OK);
    CU_ASSERT_STRING_EQUAL(v.tenant, "a");
    CU_ASSERT_EQUAL(ta_check(a, SRV_AUTH_TENANT, "Bearer " TOK_B, NULL, 1, 1, &v), SRV_AUTH_OK);
    srv_auth_keys_free(NULL);
    srv_auth_free(a);
    srv_auth_free(NULL);
}

int suite_server_auth_auth(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_auth_check_none_mode_keeps_header),
        SPINDLE_TEST(test_srv_auth_check_keys_decide_the_tenant),
        SPINDLE_TEST(test_srv_auth_check_proxy_trusts_only_proxies),
        SPINDLE_TEST(test_srv_auth_check_metrics_token),
        SPINDLE_TEST(test_srv_auth_check_throttle_per_address),
        SPINDLE_TEST(test_srv_auth_update_swaps_keys),
    };
    return SPINDLE_SUITE_ADD("server_auth_auth", NULL, NULL, tests);
}
