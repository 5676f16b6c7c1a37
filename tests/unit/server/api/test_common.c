/* test_common.c - what the routes of the api room share (server/api/common.c): the shared first
 * member that names a job's kind (reached with container_of, whatever embeds it), the pool's
 * overdue line built from it, the pool settings, and the job-time accounting. */
#include <CUnit/CUnit.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "pool/pool.h"
#include "server/api/api.h"
#include "server/api/internal.h"
#include "server/config.h"
#include "tests/suite.h"

int suite_server_api_common(void);

#define CM_MS 1000000ull

/* A job of the room as jobs.c and batch.c make them: the shared member first, then its own. */
struct cm_job {
    struct srv_api_job aj;
    int own;
};

static void test_srv_api_job_of_reaches_the_kind(void)
{
    struct cm_job a = {.aj = {.kind = "spin"}, .own = 1};
    struct cm_job b = {.aj = {.kind = "batch_parse"}, .own = 2};
    struct pool_job *ja = &a.aj.job, *jb = &b.aj.job;
    CU_ASSERT_PTR_EQUAL(srv_api_job_of(ja), &a.aj);
    CU_ASSERT_PTR_EQUAL(srv_api_job_of(jb), &b.aj);
    CU_ASSERT_STRING_EQUAL(srv_api_job_of(ja)->kind, "spin");
    CU_ASSERT_STRING_EQUAL(srv_api_job_of(jb)->kind, "batch_parse");
}

static void test_srv_jobroute_pool_config_overdue(void)
{
    struct srv_cfg cfg;
    srv_cfg_defaults(&cfg);
    cfg.workers = 3;
    cfg.queue_capacity = 17;
    cfg.cancel_grace_ms = 25;
    struct pool_config pc;
    srv_jobroute_pool_config(&cfg, &pc);
    CU_ASSERT_EQUAL(pc.workers, 3);
    CU_ASSERT_EQUAL(pc.queue_capacity, 17);
    CU_ASSERT_EQUAL(pc.cancel_grace_ns, 25 * CM_MS);
    CU_ASSERT_PTR_EQUAL(pc.overdue, srv_jobroute_overdue);
}

/* Call the overdue callback for `job` with a context cancelled by the deadline current, the log
 * going to a temporary file; returns the one line it wrote (parsed; the caller frees it). */
static json_t *cm_overdue_line(struct pool_job *job)
{
    char path[] = "/tmp/spindle-apitest-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    struct log_config lc = {.path = path,
                            .level = LOG_LEVEL_INFO,
                            .buffer_bytes = 64 * 1024,
                            .policy = LOG_POLICY_BLOCK};
    CU_ASSERT_EQUAL_FATAL(log_start(&lc), 0);
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(ctx_set_tenant(c, "acme", 4), 0);
    CU_ASSERT_EQUAL(ctx_cancel(c, CTX_REASON_DEADLINE), 0);
    struct ctx *prev = ctx_enter(c);
    srv_jobroute_overdue(job, 12 * CM_MS, NULL);
    ctx_leave(prev);
    ctx_unref(c);
    log_stop();
    json_error_t err;
    json_t *j = json_load_file(path, JSON_DISABLE_EOF_CHECK, &err);
    unlink(path);
    CU_ASSERT_PTR_NOT_NULL(j);
    return j;
}

static void test_srv_jobroute_overdue_logs_kind(void)
{
    struct cm_job a = {.aj = {.kind = "primes"}};
    json_t *j = cm_overdue_line(&a.aj.job);
    if (j == NULL)
        return;
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")),
                           "job overdue after cancel");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "level")), "warn");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "kind")), "primes");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "reason")), "deadline");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "tenant")), "acme");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(j, "overdue_ms")), 12.0, 0.001);
    json_decref(j);
}

static void test_srv_jobroute_overdue_without_kind(void)
{
    struct cm_job a = {.aj = {.kind = NULL}};
    json_t *j = cm_overdue_line(&a.aj.job);
    if (j == NULL)
        return;
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")),
                           "job overdue after cancel");
    CU_ASSERT_PTR_NULL(json_object_get(j, "kind"));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "reason")), "deadline");
    json_decref(j);
}

static void test_srv_jobroute_times_ran(void)
{
    struct pool_job job = {
        .t_submit_ns = 100 * CM_MS, .t_start_ns = 130 * CM_MS, .t_end_ns = 180 * CM_MS};
    uint64_t queue = 1, run = 1;
    srv_jobroute_times(&job, 500 * CM_MS, &queue, &run);
    CU_ASSERT_EQUAL(queue, 30 * CM_MS);
    CU_ASSERT_EQUAL(run, 50 * CM_MS);
}

static void test_srv_jobroute_times_never_ran(void)
{
    struct pool_job job = {.t_submit_ns = 100 * CM_MS};
    uint64_t queue = 1, run = 1;
    srv_jobroute_times(&job, 160 * CM_MS, &queue, &run);
    CU_ASSERT_EQUAL(queue, 60 * CM_MS); /* queued until now */
    CU_ASSERT_EQUAL(run, 0);
    srv_jobroute_times(&job, 50 * CM_MS, &queue, &run); /* a clock before the submit: 0, not wrap */
    CU_ASSERT_EQUAL(queue, 0);
}

int suite_server_api_common(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_api_job_of_reaches_the_kind),
        SPINDLE_TEST(test_srv_jobroute_pool_config_overdue),
        SPINDLE_TEST(test_srv_jobroute_overdue_logs_kind),
        SPINDLE_TEST(test_srv_jobroute_overdue_without_kind),
        SPINDLE_TEST(test_srv_jobroute_times_ran),
        SPINDLE_TEST(test_srv_jobroute_times_never_ran),
    };
    return SPINDLE_SUITE_ADD("server_api_common", NULL, NULL, tests);
}
