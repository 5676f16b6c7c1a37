/* test_schedules.c - unit tests for server/api/schedules.c's pure part, srv_sched_check: every
 * schedule's task checked as POST /v1/tasks would check it, the first bad one named with
 * FILE:LINE, its section and the key to blame (kind, or params when the kind refuses them). The
 * timers and the store are tested end to end (tests/integration/test_schedules.c).
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server/api/schedules.h"
#include "server/config.h"
#include "tests/suite.h"

int suite_server_api_schedules(void);

/* A configuration with one schedule (kind, params) whose key lines are those of a file. */
static void ts_cfg(struct srv_cfg *cfg, const char *kind, const char *params)
{
    char err[512];
    srv_cfg_defaults(cfg);
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, "schedule.s", "cron", "@hourly", "-", err, 512), 0);
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, "schedule.s", "kind", kind, "-", err, 512), 0);
    if (params != NULL)
        CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, "schedule.s", "params", params, "-", err, 512), 0);
    snprintf(cfg->source, sizeof(cfg->source), "/etc/spindle/spindle.conf");
    cfg->schedules[0].line = 40;
    cfg->schedules[0].key_line[SRV_CFG_SCHED_KIND] = 42;
    cfg->schedules[0].key_line[SRV_CFG_SCHED_PARAMS] = params ? 43 : 0;
}

static void test_srv_sched_check_accepts_valid_tasks(void)
{
    struct srv_cfg cfg;
    char err[512] = "";
    srv_cfg_defaults(&cfg);
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), 0); /* no schedule */
    ts_cfg(&cfg, "primes", "{\"n\": 1000}");
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), 0);
    ts_cfg(&cfg, "noop", NULL);
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), 0);
}

static void test_srv_sched_check_names_the_kind(void)
{
    struct srv_cfg cfg;
    char err[512] = "";
    ts_cfg(&cfg, "nosuchkind", NULL);
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), -EINVAL);
    CU_ASSERT_EQUAL(strncmp(err, "/etc/spindle/spindle.conf:42: [schedule.s] kind: ", 49), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "nosuchkind"));
}

static void test_srv_sched_check_names_the_params(void)
{
    struct srv_cfg cfg;
    char err[512] = "";
    ts_cfg(&cfg, "primes", "{\"n\": -5}");
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), -EINVAL);
    CU_ASSERT_EQUAL(strncmp(err, "/etc/spindle/spindle.conf:43: [schedule.s] params: ", 51), 0);
    /* a parameter the kind does not know */
    ts_cfg(&cfg, "noop", "{\"x\": 1}");
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, ":43: [schedule.s] params: "));
    /* over a limit of the configuration it is checked against */
    ts_cfg(&cfg, "spin", "{\"ms\": 10}");
    cfg.max_spin_ms = 5;
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "[schedule.s] params: "));
    /* without a file, without lines: the section alone */
    ts_cfg(&cfg, "nosuchkind", NULL);
    cfg.source[0] = '\0';
    cfg.schedules[0].key_line[SRV_CFG_SCHED_KIND] = 0;
    CU_ASSERT_EQUAL(srv_sched_check(&cfg, NULL, err, sizeof(err)), -EINVAL);
    CU_ASSERT_EQUAL(strncmp(err, "[schedule.s] kind: ", 19), 0);
}

int suite_server_api_schedules(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_sched_check_accepts_valid_tasks),
        SPINDLE_TEST(test_srv_sched_check_names_the_kind),
        SPINDLE_TEST(test_srv_sched_check_names_the_params),
    };
    return SPINDLE_SUITE_ADD("server_api_schedules", NULL, NULL, tests);
}
