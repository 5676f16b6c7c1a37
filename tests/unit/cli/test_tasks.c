/* test_tasks.c - the pure parts of cli/tasks.c: the command line of `spindle tasks`, the list
 * page's request target, and a task's table row, progress line and last error. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/internal.h"
#include "tests/suite.h"

int suite_cli_tasks(void);

static int tt_parse(struct cli_tasks_opts *o, char *err, size_t size, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, size);
    for (char *a; argc < 31 && (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return cli_tasks_args_parse(argc, argv, o, err, size);
}

static void test_cli_tasks_args_parse_subcommands(void)
{
    struct cli_tasks_opts o;
    char err[256];
    CU_ASSERT_EQUAL(tt_parse(&o, err, sizeof(err), "tasks", "list", "--state", "failed", "--kind",
                             "primes", "--limit", "50", "--after", "abc", "--all", "--json",
                             "--tenant", "t1", "-s", "http://127.0.0.1:9", NULL),
                    0);
    CU_ASSERT_EQUAL(o.cmd, CLI_TASKS_LIST);
    CU_ASSERT_STRING_EQUAL(o.state, "failed");
    CU_ASSERT_STRING_EQUAL(o.kind, "primes");
    CU_ASSERT_EQUAL(o.limit, 50);
    CU_ASSERT_STRING_EQUAL(o.after, "abc");
    CU_ASSERT_TRUE(o.all);
    CU_ASSERT_TRUE(o.json);
    CU_ASSERT_STRING_EQUAL(o.tenant, "t1");
    CU_ASSERT_STRING_EQUAL(o.server, "http://127.0.0.1:9");
    CU_ASSERT_EQUAL(
        tt_parse(&o, err, sizeof(err), "tasks", "show", "0123abc", "--wait", "5000", NULL), 0);
    CU_ASSERT_EQUAL(o.cmd, CLI_TASKS_SHOW);
    CU_ASSERT_STRING_EQUAL(o.id, "0123abc");
    CU_ASSERT_EQUAL(o.wait_ms, 5000);
    CU_ASSERT_EQUAL(tt_parse(&o, err, sizeof(err), "tasks", "cancel", "x1", NULL), 0);
    CU_ASSERT_EQUAL(o.cmd, CLI_TASKS_CANCEL);
    CU_ASSERT_EQUAL(o.wait_ms, -1);
    CU_ASSERT_EQUAL(tt_parse(&o, err, sizeof(err), "tasks", "result", "x1", "-o", "out.bin", NULL),
                    0);
    CU_ASSERT_EQUAL(o.cmd, CLI_TASKS_RESULT);
    CU_ASSERT_STRING_EQUAL(o.output, "out.bin");
    CU_ASSERT_EQUAL(tt_parse(&o, err, sizeof(err), "tasks", "--help", NULL), 0);
    CU_ASSERT_TRUE(o.help);
}

static void test_cli_tasks_args_parse_rejects(void)
{
    static const struct {
        const char *args[6];
        const char *msg;
    } cases[] = {
        {{"tasks"}, "a subcommand is needed"},
        {{"tasks", "purge"}, "unknown subcommand"},
        {{"tasks", "show"}, "show needs a task ID"},
        {{"tasks", "list", "x"}, "list takes no ID"},
        {{"tasks", "list", "--state", "done"}, "--state wants queued, running"},
        {{"tasks", "list", "--limit", "0"}, "--limit wants 1-1000"},
        {{"tasks", "list", "--limit", "1001"}, "--limit wants 1-1000"},
        {{"tasks", "show", "a", "--all"}, "are for list, not \"show\""},
        {{"tasks", "list", "--wait", "5"}, "--wait is for show"},
        {{"tasks", "show", "a", "-o", "f"}, "--output is for result"},
        {{"tasks", "show", "a/b"}, "bad task ID \"a/b\""},
        {{"tasks", "show", "a", "b"}, "unexpected argument \"b\""},
        {{"tasks", "list", "--tenant", "a b"}, "--tenant wants"},
        {{"tasks", "list", "--bogus"}, "unknown option \"--bogus\""},
        {{"tasks", "list", "--state"}, "missing value for option"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[8] = {0};
        int argc = 0;
        for (; argc < 6 && cases[i].args[argc]; argc++)
            argv[argc] = (char *)cases[i].args[argc];
        struct cli_tasks_opts o;
        char err[256] = "";
        CU_ASSERT_EQUAL(cli_tasks_args_parse(argc, argv, &o, err, sizeof(err)), -EINVAL);
        if (strstr(err, cases[i].msg) == NULL)
            fprintf(stderr, "case %zu: got \"%s\"\n", i, err);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].msg));
    }
}

static void test_cli_tasks_list_target(void)
{
    struct cli_tasks_opts o = {.cmd = CLI_TASKS_LIST, .wait_ms = -1};
    char buf[256];
    CU_ASSERT_EQUAL(cli_tasks_list_target(&o, NULL, buf, sizeof(buf)), 0);
    CU_ASSERT_STRING_EQUAL(buf, "/v1/tasks");
    o.state = "queued";
    o.kind = "a b";
    o.limit = 20;
    CU_ASSERT_EQUAL(cli_tasks_list_target(&o, "id&1", buf, sizeof(buf)), 0);
    CU_ASSERT_STRING_EQUAL(buf, "/v1/tasks?state=queued&kind=a%20b&after=id%261&limit=20");
    CU_ASSERT_EQUAL(cli_tasks_list_target(&o, NULL, buf, 10), -ENAMETOOLONG);
}

static void test_cli_task_lines(void)
{
    json_t *t = json_pack("{s:s,s:s,s:s,s:i,s:i,s:s,s:[{s:i,s:s,s:s},{s:i,s:s,s:s}]}", "id",
                          "0193abcd0000ffff00001111", "state", "retrying", "kind", "spin",
                          "attempt", 2, "attempts", 5, "created_at", "2026-12-06T14:00:00.000Z",
                          "errors", "attempt", 1, "code", "deadline_exceeded", "message", "late",
                          "attempt", 2, "code", "job_failed", "message", "it broke");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    char buf[256];
    cli_task_row(t, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(
        buf,
        "0193abcd0000ffff00001111     retrying   spin         2/5      2026-12-06T14:00:00.000Z");
    cli_task_progress(t, 2345, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "task 0193abcd0000ffff00001111: retrying, attempt 2/5, 2.3s");
    const char *code;
    CU_ASSERT_STRING_EQUAL(cli_task_last_error(t, &code), "it broke");
    CU_ASSERT_STRING_EQUAL(code, "job_failed");
    json_object_del(t, "errors");
    CU_ASSERT_STRING_EQUAL(cli_task_last_error(t, &code), "");
    CU_ASSERT_STRING_EQUAL(code, "");
    json_decref(t);
    CU_ASSERT_TRUE(cli_task_state_final("succeeded"));
    CU_ASSERT_TRUE(cli_task_state_final("failed"));
    CU_ASSERT_TRUE(cli_task_state_final("cancelled"));
    CU_ASSERT_FALSE(cli_task_state_final("retrying"));
    CU_ASSERT_FALSE(cli_task_state_final(NULL));
    CU_ASSERT_TRUE(cli_task_state_valid("running"));
    CU_ASSERT_FALSE(cli_task_state_valid("done"));
}

static void test_cli_async_body(void)
{
    char *params[] = {"n=1000", "x=a=b"};
    struct cli_call_opts o = {.kind = "primes",
                              .params = params,
                              .nparams = 2,
                              .task_attempts = 3,
                              .task_backoff_ms = 250,
                              .task_delay_ms = -1,
                              .timeout_ms = 9000};
    char err[256];
    char *s = cli_async_body(&o, "hi", 2, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    json_t *j = json_loads(s, 0, NULL);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "kind")), "primes");
    json_t *p = json_object_get(j, "params");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(p, "n")), "1000");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(p, "x")), "a=b");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "body")), "hi");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "attempts")), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "backoff_ms")), 250);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "timeout_ms")), 9000);
    CU_ASSERT_PTR_NULL(json_object_get(j, "delay_ms"));
    json_decref(j);
    free(s);
    /* a body that is not UTF-8 cannot be a JSON string */
    CU_ASSERT_PTR_NULL(cli_async_body(&o, "\xff\xfe", 2, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "UTF-8"));
}

static void test_cli_call_args_async(void)
{
    char *ok[] = {"call",           "--async", "spin",    "ms=5", "--attempts",        "4",
                  "--task-backoff", "100",     "--delay", "2000", "--idempotency-key", "k-1",
                  "--detach",       NULL};
    struct cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(cli_call_args_parse(13, ok, &o, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(o.async);
    CU_ASSERT_TRUE(o.detach);
    CU_ASSERT_EQUAL(o.task_attempts, 4);
    CU_ASSERT_EQUAL(o.task_backoff_ms, 100);
    CU_ASSERT_EQUAL(o.task_delay_ms, 2000);
    CU_ASSERT_STRING_EQUAL(o.idempotency_key, "k-1");
    CU_ASSERT_STRING_EQUAL(o.kind, "spin");
    char *no_async[] = {"call", "spin", "--attempts", "4", NULL};
    CU_ASSERT_EQUAL(cli_call_args_parse(4, no_async, &o, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "go with \"--async\""));
    char *batch[] = {"call", "--async", "--batch", "f", NULL};
    CU_ASSERT_EQUAL(cli_call_args_parse(4, batch, &o, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--async runs one KIND"));
    char *zero[] = {"call", "-a", "spin", "--attempts", "0", NULL};
    CU_ASSERT_EQUAL(cli_call_args_parse(5, zero, &o, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--attempts"));
}

int suite_cli_tasks(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cli_tasks_args_parse_subcommands),
        SPINDLE_TEST(test_cli_tasks_args_parse_rejects),
        SPINDLE_TEST(test_cli_tasks_list_target),
        SPINDLE_TEST(test_cli_task_lines),
        SPINDLE_TEST(test_cli_async_body),
        SPINDLE_TEST(test_cli_call_args_async),
    };
    return SPINDLE_SUITE_ADD("cli_tasks", NULL, NULL, tests);
}
