/* test_task_json.c - unit tests for server/api/task_json.c: the POST /v1/tasks body (defaults,
 * every option, the batch parser's messages), a stored spec parsed back into a runnable item, a
 * task as JSON, and RFC 3339 times both ways.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/batch.h"
#include "server/api/internal.h"
#include "server/config.h"
#include "tests/suite.h"

int suite_server_api_task_json(void);

#define NOW 1796558400000LL /* 2026-12-06T12:00:00Z */

static int parse(const char *body, struct srv_task *t, const char **code, char *err)
{
    struct srv_cfg cfg;
    srv_cfg_defaults(&cfg);
    memset(t, 0, sizeof(*t));
    return srv_task_body_parse(body, strlen(body), &cfg, NOW, t, code, err);
}

static void test_srv_task_body_parse_defaults(void)
{
    struct srv_task t;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    const char *body = "{\"kind\":\"primes\",\"params\":{\"n\":100}}";
    CU_ASSERT_EQUAL_FATAL(parse(body, &t, &code, err), 0);
    CU_ASSERT_STRING_EQUAL(t.kind, "primes");
    CU_ASSERT_EQUAL(t.attempts, 3);
    CU_ASSERT_EQUAL(t.backoff_ms, 1000);
    CU_ASSERT_EQUAL(t.timeout_ms, 0);
    CU_ASSERT_EQUAL(t.run_at_ms, NOW);
    CU_ASSERT_EQUAL(t.spec_len, strlen(body)); /* stored as posted */
    CU_ASSERT_STRING_EQUAL(t.spec, body);
    srv_task_fini(&t);
}

static void test_srv_task_body_parse_options(void)
{
    struct srv_task t;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    CU_ASSERT_EQUAL(parse("{\"kind\":\"spin\",\"params\":{\"ms\":5},\"attempts\":7,"
                          "\"backoff_ms\":0,\"delay_ms\":1500,\"timeout_ms\":100}",
                          &t, &code, err),
                    0);
    CU_ASSERT_EQUAL(t.attempts, 7);
    CU_ASSERT_EQUAL(t.backoff_ms, 0);
    CU_ASSERT_EQUAL(t.timeout_ms, 100);
    CU_ASSERT_EQUAL(t.run_at_ms, NOW + 1500);
    srv_task_fini(&t);
    CU_ASSERT_EQUAL(
        parse("{\"kind\":\"noop\",\"run_at\":\"2026-12-06T13:00:00.250+01:00\"}", &t, &code, err),
        0);
    CU_ASSERT_EQUAL(t.run_at_ms, NOW + 250); /* 13:00+01:00 is 12:00Z */
    srv_task_fini(&t);
    /* A time in the past runs now. */
    CU_ASSERT_EQUAL(
        parse("{\"kind\":\"noop\",\"run_at\":\"2020-01-01T00:00:00Z\"}", &t, &code, err), 0);
    CU_ASSERT_EQUAL(t.run_at_ms, NOW);
    srv_task_fini(&t);
}

static void test_srv_task_body_parse_errors(void)
{
    static const struct {
        const char *body, *code, *msg;
    } cases[] = {
        {"", "bad_json", "JSON task object"},
        {"{x", "bad_json", "not JSON"},
        {"[1]", "bad_task", "JSON task object"},
        {"{\"kind\":\"nope\"}", "bad_task", "task: unknown kind 'nope'"},
        {"{\"params\":{}}", "bad_task", "task: missing member 'kind'"},
        {"{\"kind\":\"noop\",\"x\":1}", "bad_task", "task: unknown member 'x'"},
        {"{\"kind\":\"spin\",\"params\":{\"ms\":-1}}", "bad_param", "task (spin): ms must be"},
        {"{\"kind\":\"noop\",\"attempts\":101}", "bad_task", "attempts must be an integer between"},
        {"{\"kind\":\"noop\",\"backoff_ms\":\"1\"}", "bad_task", "backoff_ms must be"},
        {"{\"kind\":\"noop\",\"delay_ms\":1,\"run_at\":\"2026-12-06T13:00:00Z\"}", "bad_task",
         "not both"},
        {"{\"kind\":\"noop\",\"run_at\":\"2026-13-06T13:00:00Z\"}", "bad_task", "RFC 3339"},
        {"{\"kind\":\"noop\",\"run_at\":\"2027-12-06T13:00:00Z\"}", "bad_task", "30 days"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct srv_task t;
        const char *code = NULL;
        char err[SRV_BATCH_ERR_MAX] = "";
        CU_ASSERT_EQUAL(parse(cases[i].body, &t, &code, err), -EINVAL);
        CU_ASSERT_PTR_NOT_NULL(code);
        if (code == NULL || strcmp(code, cases[i].code) != 0 || !strstr(err, cases[i].msg))
            fprintf(stderr, "\n  %s: %s %s\n", cases[i].body, code ? code : "-", err);
        CU_ASSERT(code != NULL && strcmp(code, cases[i].code) == 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].msg));
        CU_ASSERT_PTR_NULL(t.spec);
    }
}

static void test_srv_task_spec_item_runs_the_kind(void)
{
    struct srv_task t;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    CU_ASSERT_EQUAL_FATAL(
        parse("{\"kind\":\"primes\",\"params\":{\"n\":100},\"attempts\":2}", &t, &code, err), 0);
    struct srv_cfg cfg;
    srv_cfg_defaults(&cfg);
    void *json = NULL;
    struct srv_batch_item item;
    CU_ASSERT_EQUAL_FATAL(srv_task_spec_item(&t, &cfg, &json, &item, &code, err), 0);
    CU_ASSERT_STRING_EQUAL(item.kind->name, "primes");
    CU_ASSERT_EQUAL(item.kind->run(item.state), 0);
    struct srv_job_answer ans;
    item.kind->answer(item.state, &ans);
    CU_ASSERT_EQUAL(ans.len, strlen("{\"n\":100,\"count\":25}"));
    CU_ASSERT_EQUAL(memcmp(ans.body, "{\"n\":100,\"count\":25}", ans.len), 0);
    item.kind->free(item.state);
    json_decref(json);
    /* Limits lowered since it was stored: refused, never run. */
    cfg.max_primes_n = 10;
    CU_ASSERT_EQUAL(srv_task_spec_item(&t, &cfg, &json, &item, &code, err), -EINVAL);
    CU_ASSERT_STRING_EQUAL(code, "bad_param");
    srv_task_fini(&t);
}

static void test_srv_task_json_shape(void)
{
    struct srv_task t = {.state = SRV_TASK_RETRYING,
                         .attempt = 1,
                         .attempts = 3,
                         .created_ms = NOW,
                         .started_ms = NOW + 5,
                         .run_at_ms = NOW + 1000};
    snprintf(t.id, sizeof(t.id), "abc");
    snprintf(t.kind, sizeof(t.kind), "spin");
    snprintf(t.request_id, sizeof(t.request_id), "r1");
    t.errors = strdup("[{\"attempt\":1,\"code\":\"job_failed\"}]");
    json_t *j = srv_task_json(&t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "state")), "retrying");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "created_at")),
                           "2026-12-06T12:00:00.000Z");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "next_run_at")),
                           "2026-12-06T12:00:01.000Z");
    CU_ASSERT(json_is_null(json_object_get(j, "finished_at")));
    CU_ASSERT(json_is_null(json_object_get(j, "trace_id")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "errors")), 1);
    json_decref(j);
    srv_task_fini(&t);
}

static void test_srv_task_time_round_trip(void)
{
    char buf[SRV_TASK_TIME_MAX];
    int64_t ms = 0;
    srv_task_time_format(NOW + 7, buf);
    CU_ASSERT_STRING_EQUAL(buf, "2026-12-06T12:00:00.007Z");
    CU_ASSERT_EQUAL(srv_task_time_parse(buf, &ms), 0);
    CU_ASSERT_EQUAL(ms, NOW + 7);
    CU_ASSERT_EQUAL(srv_task_time_parse("2026-12-06t12:00:00z", &ms), 0);
    CU_ASSERT_EQUAL(ms, NOW);
    CU_ASSERT_EQUAL(srv_task_time_parse("2026-12-06T12:00:00", &ms), -EINVAL);
    CU_ASSERT_EQUAL(srv_task_time_parse("2026-12-06T12:00:00.Z", &ms), -EINVAL);
    CU_ASSERT_EQUAL(srv_task_time_parse("2026-12-06T12:00:00Zjunk", &ms), -EINVAL);
    srv_task_time_format(0, buf);
    CU_ASSERT_STRING_EQUAL(buf, "");
}

int suite_server_api_task_json(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_task_body_parse_defaults),
        SPINDLE_TEST(test_srv_task_body_parse_options),
        SPINDLE_TEST(test_srv_task_body_parse_errors),
        SPINDLE_TEST(test_srv_task_spec_item_runs_the_kind),
        SPINDLE_TEST(test_srv_task_json_shape),
        SPINDLE_TEST(test_srv_task_time_round_trip),
    };
    return SPINDLE_SUITE_ADD("server_api_task_json", NULL, NULL, tests);
}
