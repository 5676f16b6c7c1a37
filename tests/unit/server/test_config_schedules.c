/* test_config_schedules.c - unit tests for server/config_schedules.c: [schedule.NAME] sections
 * (values, defaults, print round-trip), their errors with FILE:LINE and key, the required keys,
 * the tenant a schedule names under [auth] mode = keys, what a reload sees, and overrides.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "tests/suite.h"
#include "tests/unit/server/config_cases.h"

int suite_server_config_schedules(void);

#define TS_KEY_A "sha256:aa1d6bb9048f30854e6b100a6519d5aec7429bde5654aea465437162765b807c"

static void test_srv_cfg_schedule_sections(void)
{
    struct srv_cfg c;
    tc_expect_ok("[schedule.nightly]\n"           /* 1 */
                 "cron = 0 3 * * MON-FRI\n"       /* 2 */
                 "tz = Europe/Berlin\n"           /* 3 */
                 "kind = primes\n"                /* 4 */
                 "params = {\"n\": 1000}\n"       /* 5 */
                 "tenant = reports\n"             /* 6 */
                 "attempts = 3\n"                 /* 7 */
                 "backoff_ms = 500\n"             /* 8 */
                 "timeout_ms = 9000\n"            /* 9 */
                 "misfire = once\n"               /* 10 */
                 "body = some text ; a comment\n" /* 11 */
                 "[schedule.tick]\ncron = @every 2s\nkind = noop\n",
                 &c);
    CU_ASSERT_EQUAL_FATAL(c.schedule_count, 2);
    const struct srv_cfg_schedule *n = srv_cfg_schedule_find(&c, "nightly");
    CU_ASSERT_PTR_EQUAL_FATAL(n, &c.schedules[0]);
    CU_ASSERT_STRING_EQUAL(n->cron, "0 3 * * MON-FRI");
    CU_ASSERT_STRING_EQUAL(n->tz, "Europe/Berlin");
    CU_ASSERT_STRING_EQUAL(n->kind, "primes");
    CU_ASSERT_STRING_EQUAL(n->params, "{\"n\": 1000}");
    CU_ASSERT_STRING_EQUAL(n->tenant, "reports");
    CU_ASSERT_STRING_EQUAL(n->body, "some text");
    CU_ASSERT_EQUAL(n->attempts, 3);
    CU_ASSERT_EQUAL(n->backoff_ms, 500);
    CU_ASSERT_EQUAL(n->timeout_ms, 9000);
    CU_ASSERT_EQUAL(n->misfire, SRV_CFG_MISFIRE_ONCE);
    CU_ASSERT_EQUAL(n->line, 1);
    CU_ASSERT_EQUAL(n->key_line[SRV_CFG_SCHED_KIND], 4);
    CU_ASSERT_EQUAL(n->set, (1u << SRV_CFG_SCHED__COUNT) - 1);
    /* the defaults of what a section leaves out */
    const struct srv_cfg_schedule *t = srv_cfg_schedule_find(&c, "tick");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_STRING_EQUAL(t->tz, "UTC");
    CU_ASSERT_STRING_EQUAL(t->params, "{}");
    CU_ASSERT_STRING_EQUAL(t->tenant, "default");
    CU_ASSERT_STRING_EQUAL(t->body, "");
    CU_ASSERT_EQUAL(t->misfire, SRV_CFG_MISFIRE_SKIP);
    CU_ASSERT_EQUAL(t->attempts, 0);
    CU_ASSERT_EQUAL(t->line, 12);
    CU_ASSERT_PTR_NULL(srv_cfg_schedule_find(&c, "other"));
    /* print, load again: the same configuration */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CU_ASSERT_FATAL(f != NULL);
    srv_cfg_print(&c, f);
    CU_ASSERT_FATAL(fclose(f) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "[schedule.tick]\ncron = @every 2s\nkind = noop\n"));
    struct srv_cfg again;
    tc_expect_ok(buf, &again);
    CU_ASSERT(srv_cfg_equal(&c, &again));
    free(buf);
}

static void test_srv_cfg_schedule_errors(void)
{
    tc_expect("[schedule.x]\ncron = 60 * * * *\nkind = noop\n", -EINVAL,
              ":2: [schedule.x] cron: minute: 60 is out of range 0-59");
    tc_expect("[schedule.x]\ncron = * * * * FUN\nkind = noop\n", -EINVAL,
              ":2: [schedule.x] cron: day-of-week: unknown name \"FUN\"");
    tc_expect("[schedule.x]\ncron = @daily\ntz = Mars/Base\nkind = noop\n", -EINVAL,
              ":3: [schedule.x] tz: unknown time zone \"Mars/Base\"");
    tc_expect("[schedule.x]\ncron = @daily\nkind = no such\n", -EINVAL,
              ":3: [schedule.x] kind: bad kind \"no such\"");
    tc_expect("[schedule.x]\ncron = @daily\nkind = noop\nparams = [1]\n", -EINVAL,
              ":4: [schedule.x] params: expected a JSON object");
    tc_expect("[schedule.x]\ncron = @daily\nkind = noop\ntenant = a b\n", -EINVAL,
              ":4: [schedule.x] tenant: invalid tenant \"a b\"");
    tc_expect("[schedule.x]\ncron = @daily\nkind = noop\nattempts = 0\n", -EINVAL,
              ":4: [schedule.x] attempts: value 0 out of range 1..100");
    tc_expect("[schedule.x]\ncron = @daily\nkind = noop\nmisfire = all\n", -EINVAL,
              ":4: [schedule.x] misfire: expected skip or once, got \"all\"");
    tc_expect("[schedule.x]\ncron = @daily\nkind = noop\nkind = spin\n", -EINVAL,
              ":4: [schedule.x] kind: duplicate key (first set on line 3)");
    tc_expect("[schedule.x]\ncron = @daily\nwhen = now\n", -EINVAL,
              ":3: [schedule.x] when: unknown key (known: cron, tz, kind, params");
    tc_expect("[schedule.a b]\ncron = @daily\n", -EINVAL,
              ":1: [schedule.a b]: invalid schedule name");
    /* the required keys, blamed on the section's line */
    tc_expect("[server]\n[schedule.x]\ntz = UTC\n", -EINVAL,
              ":2: [schedule.x]: missing cron and kind (a schedule needs cron and kind)");
    tc_expect("[schedule.x]\nkind = noop\n", -EINVAL, ":1: [schedule.x]: missing cron");
}

/* With [auth] mode = keys a task belongs to the tenant a key names: a schedule's tenant must be a
 * [tenant.NAME] section, blamed on its tenant line, or on the section's line when it is the
 * default tenant it did not name. */
static void test_srv_cfg_schedule_tenant_with_keys(void)
{
    struct srv_cfg c;
    tc_expect("[auth]\nmode = keys\n"                                       /* 1-2 */
              "[tenant.acme]\nkeys = " TS_KEY_A "\n"                        /* 3-4 */
              "[schedule.x]\ncron = @daily\nkind = noop\ntenant = other\n", /* 5-8 */
              -EINVAL,
              ":8: [schedule.x] tenant: tenant \"other\" has no [tenant.other] section (with "
              "[auth] mode = keys a schedule's tenant must be a configured tenant)");
    tc_expect("[auth]\nmode = keys\n[tenant.acme]\nkeys = " TS_KEY_A "\n"
              "[schedule.x]\ncron = @daily\nkind = noop\n",
              -EINVAL,
              ":5: [schedule.x]: tenant \"default\" (the default) has no [tenant.default]");
    /* the first schedule at fault is named */
    tc_expect("[auth]\nmode = keys\n[tenant.acme]\nkeys = " TS_KEY_A "\n"
              "[schedule.ok]\ncron = @daily\nkind = noop\ntenant = acme\n"
              "[schedule.bad]\ncron = @daily\nkind = noop\ntenant = nobody\n",
              -EINVAL, ":12: [schedule.bad] tenant: tenant \"nobody\" has no [tenant.nobody]");
    /* a missing cron or kind is still reported first */
    tc_expect("[auth]\nmode = keys\n[schedule.x]\nkind = noop\ntenant = nobody\n", -EINVAL,
              ":3: [schedule.x]: missing cron");
    /* a configured tenant, in any order of the sections */
    tc_expect_ok("[schedule.x]\ncron = @daily\nkind = noop\ntenant = acme\n"
                 "[auth]\nmode = keys\n[tenant.acme]\nkeys = " TS_KEY_A "\n",
                 &c);
    CU_ASSERT_STRING_EQUAL(c.schedules[0].tenant, "acme");
    /* without keys, any valid tenant name goes (X-Tenant-Id names tenants freely) */
    tc_expect_ok("[schedule.x]\ncron = @daily\nkind = noop\ntenant = other\n", &c);
    tc_expect_ok("[auth]\nmode = none\n[schedule.x]\ncron = @daily\nkind = noop\n", &c);
}

static void test_srv_cfg_schedule_reload_diff(void)
{
    struct srv_cfg a, b;
    tc_expect_ok("[schedule.x]\ncron = @daily\nkind = noop\n"
                 "[schedule.gone]\ncron = @hourly\nkind = noop\n",
                 &a);
    tc_expect_ok("[schedule.x]\ncron = @hourly\nkind = noop\n"
                 "[schedule.new]\ncron = @hourly\nkind = noop\n",
                 &b);
    CU_ASSERT_FALSE(srv_cfg_equal(&a, &b));
    enum srv_cfg_reload r = SRV_CFG_RESTART;
    CU_ASSERT_EQUAL(srv_cfg_key_reload("schedule.any", "cron", &r), 0);
    CU_ASSERT_EQUAL(r, SRV_CFG_LIVE);
    CU_ASSERT_EQUAL(srv_cfg_key_reload("schedule.any", "nope", &r), -ENOENT);
    /* the live class takes the sections whole */
    srv_cfg_copy_class(&a, &b, SRV_CFG_LIVE);
    CU_ASSERT_EQUAL(a.schedule_count, 2);
    CU_ASSERT_STRING_EQUAL(a.schedules[0].cron, "@hourly");
    CU_ASSERT_STRING_EQUAL(a.schedules[1].name, "new");
}

static void test_srv_cfg_schedule_set(void)
{
    struct srv_cfg c;
    char err[512];
    srv_cfg_defaults(&c);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "schedule.s", "cron", "*/5 * * * *", "-x", err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "schedule.s", "kind", "noop", "-x", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(c.schedule_count, 1);
    CU_ASSERT_STRING_EQUAL(c.schedules[0].cron, "*/5 * * * *");
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "schedule.s", "cron", "* *", "-x", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "-x: [schedule.s] cron: expected 5 fields"));
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "schedule.s", "colour", "red", "-x", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "-x: [schedule.s] colour: unknown key");
    CU_ASSERT_STRING_EQUAL(c.schedules[0].cron, "*/5 * * * *");
}

int suite_server_config_schedules(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_cfg_schedule_sections),
        SPINDLE_TEST(test_srv_cfg_schedule_errors),
        SPINDLE_TEST(test_srv_cfg_schedule_tenant_with_keys),
        SPINDLE_TEST(test_srv_cfg_schedule_reload_diff),
        SPINDLE_TEST(test_srv_cfg_schedule_set),
    };
    return SPINDLE_SUITE_ADD("server_config_schedules", tc_dir_init, tc_dir_cleanup, tests);
}
