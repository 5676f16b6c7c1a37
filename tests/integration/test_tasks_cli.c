/* test_tasks_cli.c - `spindle call --async` and `spindle tasks list|show|cancel|result`, the real
 * binary as a child process against the real server: a task enqueued, followed and answered like
 * a job (plain and --json); a task that fails for good (exit 1, its error named); a task refused
 * at enqueue; --detach then show --wait, result, list (pages), cancel of a delayed task and the
 * 409 of its result; another tenant's task is not there.
 *
 * The progress line is drawn only on a terminal: one run gets a pty from script(1).
 */
#include <CUnit/CUnit.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_tasks_cli(void);

#define TC_RUN_MS 60000

struct tc_run {
    int code;
    char *out, *err;
};

/* Run spindle with args (NULL-terminated, at most 20) after "--server URL" is appended. */
static struct tc_run tc_spindle(const struct hs_server *s, const char *const *args)
{
    const char *argv[24];
    char url[64];
    size_t n = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", hs_port(s));
    for (; args[n] != NULL && n < 20; n++)
        argv[n] = args[n];
    argv[n++] = "--server";
    argv[n++] = url;
    argv[n] = NULL;
    struct tc_run r = {-1, NULL, NULL};
    int rc = proc_run(argv, TC_RUN_MS, &r.out, &r.err, &r.code);
    CU_ASSERT_EQUAL(rc, 0);
    if (r.out == NULL)
        r.out = strdup("");
    if (r.err == NULL)
        r.err = strdup("");
    return r;
}

static void tc_free(struct tc_run *r)
{
    free(r->out);
    free(r->err);
}

static void test_call_async_prints_the_answer(void)
{
    struct hs_server *s = hs_start(NULL);
    HS_CHECK(s != NULL);
    const char *a[] = {"call", "--async", "noop", NULL};
    struct tc_run r = tc_spindle(s, a);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "{\"ok\":true}\n");
    CU_ASSERT_STRING_EQUAL(r.err, ""); /* no terminal: no progress line */
    tc_free(&r);
    const char *j[] = {"call", "-a", "primes", "n=100", "--json", "--tenant", "cli-t", NULL};
    r = tc_spindle(s, j);
    CU_ASSERT_EQUAL(r.code, 0);
    json_t *line = json_loadb(r.out, strcspn(r.out, "\n"), 0, NULL);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT(json_is_true(json_object_get(line, "ok")));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(line, "state")), "succeeded");
    CU_ASSERT_EQUAL(json_string_length(json_object_get(line, "task_id")), 24);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(line, "attempts")), 1);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(line, "result"), "count"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\n{\"summary\":{\"succeeded\":1,\"failed\":0"));
    json_decref(line);
    tc_free(&r);
out:
    HS_FINISH(s);
}

static void test_call_async_failed_and_refused(void)
{
    struct hs_server *s = hs_start(NULL);
    HS_CHECK(s != NULL);
    /* each attempt runs out of its deadline: failed after its one attempt */
    const char *f[] = {"call", "--async",    "spin", "ms=3000", "--timeout",
                       "50",   "--attempts", "1",    NULL};
    struct tc_run r = tc_spindle(s, f);
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT_STRING_EQUAL(r.out, "");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "spindle: call: spin: task "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, " failed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "1 attempt)"));
    tc_free(&r);
    /* bad parameters are refused at the enqueue, as a job's are */
    const char *b[] = {"call", "--async", "primes", "n=-1", NULL};
    r = tc_spindle(s, b);
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "spindle: call: primes: 400 "));
    tc_free(&r);
    /* usage errors */
    const char *u[] = {"call", "noop", "--attempts", "2", NULL};
    r = tc_spindle(s, u);
    CU_ASSERT_EQUAL(r.code, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "go with \"--async\""));
    tc_free(&r);
out:
    HS_FINISH(s);
}

static void test_tasks_commands(void)
{
    struct hs_server *s = hs_start(NULL);
    json_t *task = NULL;
    char id[64] = "", delayed[64] = "";
    HS_CHECK(s != NULL);
    const char *d[] = {"call", "--async", "noop", "--detach", "--tenant", "cli-a", NULL};
    struct tc_run r = tc_spindle(s, d);
    CU_ASSERT_EQUAL(r.code, 0);
    task = json_loads(r.out, 0, NULL);
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(task, "id")));
    tc_free(&r);
    HS_CHECK(strlen(id) == 24);
    const char *show[] = {"tasks",  "show",     id,      "--wait", "20000",
                          "--json", "--tenant", "cli-a", NULL};
    r = tc_spindle(s, show);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"state\":\"succeeded\""));
    tc_free(&r);
    const char *res[] = {"tasks", "result", id, "--tenant", "cli-a", NULL};
    r = tc_spindle(s, res);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "{\"ok\":true}\n");
    tc_free(&r);
    /* another tenant does not see it */
    const char *other[] = {"tasks", "show", id, "--tenant", "cli-b", NULL};
    r = tc_spindle(s, other);
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "404"));
    tc_free(&r);
    /* a delayed task: cancelled before it runs; its result is not there (409) */
    const char *dl[] = {"call",  "--async",  "noop",  "--detach", "--delay",
                        "60000", "--tenant", "cli-a", NULL};
    r = tc_spindle(s, dl);
    CU_ASSERT_EQUAL(r.code, 0);
    json_t *t2 = json_loads(r.out, 0, NULL);
    snprintf(delayed, sizeof(delayed), "%s", json_string_value(json_object_get(t2, "id")));
    json_decref(t2);
    tc_free(&r);
    const char *cancel[] = {"tasks", "cancel", delayed, "--tenant", "cli-a", NULL};
    r = tc_spindle(s, cancel);
    CU_ASSERT_EQUAL(r.code, 0);
    char want[128];
    snprintf(want, sizeof(want), "%s cancelled\n", delayed);
    CU_ASSERT_STRING_EQUAL(r.out, want);
    tc_free(&r);
    const char *res2[] = {"tasks", "result", delayed, "--tenant", "cli-a", NULL};
    r = tc_spindle(s, res2);
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "409"));
    tc_free(&r);
    /* list: a page of one, then every page */
    const char *page[] = {"tasks", "list", "--limit", "1", "--tenant", "cli-a", NULL};
    r = tc_spindle(s, page);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(strncmp(r.out, "ID ", 3), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, id));
    CU_ASSERT_PTR_NULL(strstr(r.out, delayed));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "more tasks: add --after "));
    tc_free(&r);
    const char *all[] = {"tasks",  "list",     "--limit", "1", "--all",
                         "--json", "--tenant", "cli-a",   NULL};
    r = tc_spindle(s, all);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, id));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, delayed));
    tc_free(&r);
    const char *st[] = {"tasks", "list", "--state", "cancelled", "--tenant", "cli-a", NULL};
    r = tc_spindle(s, st);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_PTR_NULL(strstr(r.out, id));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, delayed));
    tc_free(&r);
out:
    json_decref(task);
    HS_FINISH(s);
}

/* On a terminal (a pty from script(1), util-linux) the follow draws its progress line: the task,
 * its state and attempt, redrawn after each long poll. */
static void test_call_async_progress_on_a_terminal(void)
{
    struct hs_server *s = hs_start(NULL);
    char cmd[512];
    int code = -1;
    HS_CHECK(s != NULL);
    snprintf(cmd, sizeof(cmd), "%s call --async spin ms=2500 --server http://127.0.0.1:%d",
             proc_bin(), hs_port(s));
    const char *args[] = {"-qec", cmd, "/dev/null", NULL};
    struct proc *p = proc_spawn_exe("script", args, NULL);
    HS_CHECK(p != NULL);
    CU_ASSERT_EQUAL(proc_wait(p, TC_RUN_MS, &code), 0);
    CU_ASSERT_EQUAL(code, 0);
    const char *text = proc_output(p, PROC_STDOUT, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\rtask "));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, ": running, attempt 1/3, "));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"ms\":2500")); /* then the answer */
    proc_free(p);
out:
    HS_FINISH(s);
}

int suite_integration_tasks_cli(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_call_async_prints_the_answer),
        SPINDLE_TEST(test_call_async_failed_and_refused),
        SPINDLE_TEST(test_tasks_commands),
        SPINDLE_TEST(test_call_async_progress_on_a_terminal),
    };
    return SPINDLE_SUITE_ADD("integration_tasks_cli", NULL, NULL, tests);
}
