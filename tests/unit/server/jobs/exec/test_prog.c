/* test_prog.c - compiling a kind's program (server/jobs/exec/prog.c): the argv template, the
 * program lookup, the configuration errors, and the argv and environment one run gets. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/jobs/exec/exec.h"
#include "server/jobs/exec/internal.h"
#include "tests/suite.h"
#include "tests/unit/server/jobs/exec/support.h"

int suite_server_jobs_exec_prog(void);

/* srv_exec_prog_new must fail on `key` with a message containing `want`. */
static void prog_err(const char *exec, const char *user, const char *cwd, const char *want_key,
                     const char *want)
{
    static const char *const names[] = {"lines", "size"};
    struct srv_exec_conf conf = {
        .exec = exec, .param_names = names, .nparams = 2, .user = user, .cwd = cwd};
    char err[256] = "";
    const char *key = NULL;
    struct srv_exec_prog *p = srv_exec_prog_new(&conf, &key, err, sizeof(err));
    CU_ASSERT_PTR_NULL(p);
    srv_exec_prog_free(p);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    CU_ASSERT_STRING_EQUAL(key != NULL ? key : "(null)", want_key);
    if (strstr(err, want) == NULL)
        fprintf(stderr, "\n    '%s': got '%s', want '%s'\n", exec, err, want);
}

static void test_srv_exec_prog_new_errors(void)
{
    prog_err("", NULL, NULL, "exec", "no program given");
    prog_err("  \t ", NULL, NULL, "exec", "no program given");
    prog_err("wc -l {nope}", NULL, NULL, "exec", "unknown parameter '{nope}'");
    prog_err("wc -l {lines", NULL, NULL, "exec", "unterminated '{'");
    prog_err("{lines} x", NULL, NULL, "exec", "the program cannot be a parameter");
    prog_err("/nonexistent/prog", NULL, NULL, "exec", "No such file or directory");
    prog_err("no-such-program-spindle", NULL, NULL, "exec", "not found in");
    char plain[] = "/tmp/spindle-notexec-XXXXXX";
    int fd = mkstemp(plain);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(fchmod(fd, 0644), 0);
    close(fd);
    prog_err(plain, NULL, NULL, "exec", "not executable");
    unlink(plain);
    prog_err("/usr/bin", NULL, NULL, "exec", "not a regular file");
    prog_err("bin/true", NULL, NULL, "exec", "absolute path");
    prog_err("true", "no-such-user-spindle", NULL, "user", "no such user");
    prog_err("true", NULL, "relative/dir", "cwd", "not an absolute path");
    prog_err("true", NULL, "/nonexistent-dir", "cwd", "No such file or directory");
    prog_err("true", NULL, "/bin/sh", "cwd", "not a directory");
}

static void test_srv_exec_prog_new_resolves_path(void)
{
    struct srv_exec_prog *p = et_prog("wc -c");
    CU_ASSERT_EQUAL(access(srv_exec_prog_path(p), X_OK), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(srv_exec_prog_path(p), "/wc"));
    CU_ASSERT_EQUAL(srv_exec_prog_path(p)[0], '/');
    srv_exec_prog_free(p);
    srv_exec_prog_free(NULL);
}

static const char *env_get(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (; *envp != NULL; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* Values become one element each, whatever they hold; braces doubled are literal. */
static void test_exec_args_build_substitutes(void)
{
    static const char *const names[] = {"lines", "size", "unused"};
    struct srv_exec_conf conf = {.exec = "/bin/echo -n{lines} {{x}} a{size}b {size}{lines} {{",
                                 .param_names = names,
                                 .nparams = 3};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    const char *values[] = {"5", "two words; $(rm -rf /)", NULL};
    struct srv_exec_input in = {.kind = "echo", .values = values};
    struct exec_args a;
    CU_ASSERT_EQUAL_FATAL(exec_args_build(p, &in, &a), 0);
    const char *want[] = {
        "/bin/echo", "-n5", "{x}", "atwo words; $(rm -rf /)b", "two words; $(rm -rf /)5", "{"};
    size_t i = 0;
    for (; a.argv[i] != NULL && i < 6; i++)
        CU_ASSERT_STRING_EQUAL(a.argv[i], want[i]);
    CU_ASSERT_EQUAL(i, 6);
    CU_ASSERT_PTR_NULL(a.argv[6]);
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "SPINDLE_PARAM_LINES"), "5");
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "SPINDLE_PARAM_SIZE"), values[1]);
    CU_ASSERT_PTR_NULL(env_get(a.envp, "SPINDLE_PARAM_UNUSED")); /* not given */
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "SPINDLE_KIND"), "echo");
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "LANG"), "C.UTF-8");
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "PATH"), SRV_EXEC_PATH);
    CU_ASSERT_PTR_NULL(env_get(a.envp, "SPINDLE_REQUEST_ID")); /* no context */
    free(a.mem);
    srv_exec_prog_free(p);
}

/* The context's ids, a new span in the same trace, and the time left. */
static void test_exec_args_build_context(void)
{
    struct srv_exec_prog *p = et_prog("true");
    struct ctx *c = et_ctx("req-args-1");
    ctx_set_deadline(c, ctx_now_ns() + 30000 * ET_MS);
    struct srv_exec_input in = {.kind = "t"};
    struct exec_args a;
    struct ctx *prev = ctx_enter(c);
    CU_ASSERT_EQUAL_FATAL(exec_args_build(p, &in, &a), 0);
    ctx_leave(prev);
    CU_ASSERT_STRING_EQUAL(a.argv[0], "true"); /* argv[0] as written */
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "SPINDLE_REQUEST_ID"), "req-args-1");
    CU_ASSERT_STRING_EQUAL(env_get(a.envp, "SPINDLE_TENANT"), "acme");
    const char *tp = env_get(a.envp, "TRACEPARENT");
    CU_ASSERT_PTR_NOT_NULL_FATAL(tp);
    struct ctx_trace t;
    CU_ASSERT_EQUAL(ctx_trace_parse(tp, strlen(tp), &t), 0);
    CU_ASSERT_EQUAL(memcmp(t.trace_id, ctx_trace(c)->trace_id, 16), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(t.span_id, ctx_trace(c)->span_id, 8), 0);
    long left = atol(env_get(a.envp, "SPINDLE_DEADLINE_MS"));
    CU_ASSERT(left > 20000 && left <= 30000);
    free(a.mem);
    ctx_unref(c);
    srv_exec_prog_free(p);
}

int suite_server_jobs_exec_prog(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_exec_prog_new_errors),
        SPINDLE_TEST(test_srv_exec_prog_new_resolves_path),
        SPINDLE_TEST(test_exec_args_build_substitutes),
        SPINDLE_TEST(test_exec_args_build_context),
    };
    return SPINDLE_SUITE_ADD("server_jobs_exec_prog", NULL, NULL, tests);
}
