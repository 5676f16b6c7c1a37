/* test_reload.c - unit tests for server/reload.c: which changed keys are applied live and which
 * need a restart, and that the merged configuration takes exactly the live ones.
 *
 * Every key is changed alone (srv_cfg_set over the defaults) and merged: a key reported live must
 * make the merged configuration equal to the loaded one, a key reported as needing a restart must
 * leave it equal to the running one. So the live-key table and the printed form agree for every
 * field config.c knows, and each key's class (srv_cfg_key_reload) is the one expected. (srv_reload
 * itself, with a server and a file, is covered by the
 * integration suite test_reload.c.)
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "server/reload.h"
#include "tests/suite.h"

int suite_server_reload(void);

struct tr_key {
    const char *section, *key, *other;
    bool live; /* with tenants live */
    bool tenant;
};

static const struct tr_key tr_keys[] = {
    {"server", "listen", "127.0.0.1:0, [::1]:0", false, false},
    {"server", "backlog", "128", false, false},
    {"server", "max_connections", "50", true, false},
    {"server", "header_timeout_ms", "1500", true, false},
    {"server", "body_timeout_ms", "2500", true, false},
    {"server", "idle_timeout_ms", "3500", true, false},
    {"server", "write_timeout_ms", "4500", true, false},
    {"server", "retry_hold_ms", "250", true, false},
    {"server", "max_keepalive_requests", "100", true, false},
    {"pool", "workers", "3", false, false},
    {"pool", "queue_capacity", "7", false, false},
    {"pool", "cancel_grace_ms", "250", false, false},
    {"limits", "max_request_line", "4096", true, false},
    {"limits", "max_header_bytes", "8K", true, false},
    {"limits", "max_headers", "10", true, false},
    {"limits", "max_body_bytes", "2M", true, false},
    {"limits", "max_pipeline_bytes", "0", true, false},
    {"limits", "max_query_params", "5", true, false},
    {"limits", "default_timeout_ms", "1000", true, false},
    {"limits", "max_timeout_ms", "90000", true, false},
    {"limits", "max_spin_ms", "300", true, false},
    {"limits", "max_primes_n", "5000000000", true, false},
    {"limits", "max_sha256_rounds", "1000", true, false},
    {"limits", "max_compress_level_zstd", "3", true, false},
    {"limits", "max_batch", "8", true, false},
    {"limits", "max_inflight", "4", true, true},
    {"limits", "rate", "12.5", true, true},
    {"limits", "burst", "9", true, true},
    {"limits", "weight", "2", true, true},
    {"limits", "max_tenants", "100", false, false},
    {"tenant.acme", "rate", "5", true, true},
    {"log", "level", "debug", true, false},
    {"log", "file", "/var/log/spindle/spindle.log", false, false},
    {"log", "buffer_bytes", "1G", false, false},
    {"log", "policy", "drop", false, false},
    {"log", "access", "false", true, false},
    {"shutdown", "drain_timeout_ms", "0", true, false},
};

#define TR_NKEYS (sizeof(tr_keys) / sizeof(tr_keys[0]))

struct tr_cfgs {
    struct srv_cfg running, loaded, merged;
    struct srv_reload_diff diff;
};

static struct tr_cfgs *tr_new(void)
{
    struct tr_cfgs *t = calloc(1, sizeof(*t));
    if (t != NULL) {
        srv_cfg_defaults(&t->running);
        srv_cfg_defaults(&t->loaded);
    }
    return t;
}

static void tr_set(struct srv_cfg *cfg, const char *section, const char *key, const char *value)
{
    char err[256];
    int rc = srv_cfg_set(cfg, section, key, value, "test", err, sizeof(err));
    CU_ASSERT_EQUAL_FATAL(rc, 0);
}

static void test_srv_reload_merge_unchanged(void)
{
    struct tr_cfgs *t = tr_new();
    CU_ASSERT_FATAL(t != NULL);
    CU_ASSERT_EQUAL(srv_reload_merge(&t->running, &t->loaded, true, &t->merged, &t->diff), 0);
    CU_ASSERT_EQUAL(t->diff.n_live, 0);
    CU_ASSERT_EQUAL(t->diff.n_restart, 0);
    CU_ASSERT_STRING_EQUAL(t->diff.live, "");
    CU_ASSERT_STRING_EQUAL(t->diff.restart, "");
    CU_ASSERT(srv_cfg_equal(&t->merged, &t->running));
    free(t);
}

/* One key changed alone: reported where its class says, and merged accordingly. */
static void tr_check_key(const struct tr_key *k, bool tenants_live)
{
    struct tr_cfgs *t = tr_new();
    CU_ASSERT_FATAL(t != NULL);
    tr_set(&t->loaded, k->section, k->key, k->other);
    CU_ASSERT_EQUAL_FATAL(
        srv_reload_merge(&t->running, &t->loaded, tenants_live, &t->merged, &t->diff), 0);
    char name[96];
    snprintf(name, sizeof(name), "%s.%s", k->section, k->key);
    bool live = k->live && (tenants_live || !k->tenant);
    enum srv_cfg_reload cls = SRV_CFG_RESTART;
    CU_ASSERT_EQUAL(srv_cfg_key_reload(k->section, k->key, &cls), 0);
    CU_ASSERT_EQUAL(cls, !k->live ? SRV_CFG_RESTART : k->tenant ? SRV_CFG_LIVE_ADM : SRV_CFG_LIVE);
    CU_ASSERT_EQUAL(t->diff.n_live + t->diff.n_restart, 1);
    CU_ASSERT_STRING_EQUAL(live ? t->diff.live : t->diff.restart, name);
    CU_ASSERT(srv_cfg_equal(&t->merged, live ? &t->loaded : &t->running));
    if (!srv_cfg_equal(&t->merged, live ? &t->loaded : &t->running))
        fprintf(stderr, "\n  key %s (tenants_live %d) merged wrongly\n", name, tenants_live);
    free(t);
}

static void test_srv_reload_merge_every_key(void)
{
    for (size_t i = 0; i < TR_NKEYS; i++) {
        tr_check_key(&tr_keys[i], true);
        tr_check_key(&tr_keys[i], false);
    }
}

/* Several at once: lists in print order, live ones merged, restart ones kept. */
static void test_srv_reload_merge_mixed(void)
{
    struct tr_cfgs *t = tr_new();
    CU_ASSERT_FATAL(t != NULL);
    tr_set(&t->loaded, "server", "listen", "127.0.0.1:9999");
    tr_set(&t->loaded, "pool", "workers", "5");
    tr_set(&t->loaded, "limits", "max_spin_ms", "10");
    tr_set(&t->loaded, "log", "level", "warn");
    tr_set(&t->loaded, "tenant.acme", "max_inflight", "2");
    CU_ASSERT_EQUAL_FATAL(srv_reload_merge(&t->running, &t->loaded, false, &t->merged, &t->diff),
                          0);
    CU_ASSERT_STRING_EQUAL(t->diff.live, "limits.max_spin_ms,log.level");
    CU_ASSERT_STRING_EQUAL(t->diff.restart, "server.listen,pool.workers,tenant.acme.max_inflight");
    CU_ASSERT_EQUAL(t->diff.n_live, 2);
    CU_ASSERT_EQUAL(t->diff.n_restart, 3);
    CU_ASSERT_EQUAL(t->merged.max_spin_ms, 10);
    CU_ASSERT_EQUAL(t->merged.log_level, LOG_LEVEL_WARN);
    CU_ASSERT_STRING_EQUAL(t->merged.listen[0], t->running.listen[0]);
    CU_ASSERT_EQUAL(t->merged.workers, t->running.workers);
    CU_ASSERT_EQUAL(t->merged.tenant_count, 0);
    free(t);
}

/* Every key of a [tenant.NAME] section is a tenant limit; unknown keys have no class. */
static void test_srv_reload_tenant_keys_class(void)
{
    static const char *const keys[] = {"max_inflight", "rate", "burst", "weight", "max_timeout_ms"};
    enum srv_cfg_reload cls;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        cls = SRV_CFG_RESTART;
        CU_ASSERT_EQUAL(srv_cfg_key_reload("tenant.any", keys[i], &cls), 0);
        CU_ASSERT_EQUAL(cls, SRV_CFG_LIVE_ADM);
    }
    CU_ASSERT_EQUAL(srv_cfg_key_reload("tenant.any", "max_tenants", &cls), -ENOENT);
    CU_ASSERT_EQUAL(srv_cfg_key_reload("server", "nope", &cls), -ENOENT);
    CU_ASSERT_EQUAL(srv_cfg_key_reload("nope", "backlog", &cls), -ENOENT);
}

/* A tenant section that disappears from the file is a change too. */
static void test_srv_reload_merge_tenant_removed(void)
{
    struct tr_cfgs *t = tr_new();
    CU_ASSERT_FATAL(t != NULL);
    tr_set(&t->running, "tenant.gone", "weight", "3");
    CU_ASSERT_EQUAL_FATAL(srv_reload_merge(&t->running, &t->loaded, true, &t->merged, &t->diff), 0);
    CU_ASSERT_STRING_EQUAL(t->diff.live, "tenant.gone.weight");
    CU_ASSERT_EQUAL(t->merged.tenant_count, 0);
    CU_ASSERT(srv_cfg_equal(&t->merged, &t->loaded));
    free(t);
}

int suite_server_reload(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_reload_merge_unchanged),
        SPINDLE_TEST(test_srv_reload_merge_every_key),
        SPINDLE_TEST(test_srv_reload_merge_mixed),
        SPINDLE_TEST(test_srv_reload_merge_tenant_removed),
        SPINDLE_TEST(test_srv_reload_tenant_keys_class),
    };
    return SPINDLE_SUITE_ADD("server_reload", NULL, NULL, tests);
}
