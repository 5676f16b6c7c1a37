/* test_exec_kind.c - `[kind.NAME] exec = ...` as a kind of the ABI (server/jobs/exec_kind.c):
 * configuration errors, parameters rendered for the program, the answer handed over, failures
 * set as errors with their status and code, cancellation. A small host table stands in for the
 * registry's: it keeps what the kind sets in the job. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/jobs/jobs.h"
#include "tests/suite.h"
#include "tests/unit/server/jobs/exec/support.h"

int suite_server_jobs_exec_kind(void);

/* ---- a host that records ------------------------------------------------------------------- */

static int th_cancelled(const struct spindle_job *job)
{
    (void)job;
    return ctx_current() != NULL && ctx_cancelled(ctx_current());
}

static int64_t th_param(const struct spindle_job *job, unsigned i)
{
    return i < SPINDLE_PARAMS_MAX ? job->value[i] : 0;
}

static int th_param_given(const struct spindle_job *job, unsigned i)
{
    return (job->given >> i) & 1u;
}

static const char *th_param_str(const struct spindle_job *job, unsigned i, size_t *len)
{
    *len = job->str_len[i];
    return job->str[i];
}

static const void *th_body(const struct spindle_job *job, size_t *len)
{
    *len = job->body_len;
    return job->body != NULL ? job->body : "";
}

static int th_set_answer(struct spindle_job *job, const void *bytes, size_t len, const char *type,
                         unsigned flags)
{
    job->ans = bytes;
    job->ans_len = len;
    job->ans_type = type;
    job->ans_flags = flags;
    return 0;
}

static int th_set_error(struct spindle_job *job, int status, const char *code, const char *msg)
{
    job->err_status = status;
    snprintf(job->err_code, sizeof(job->err_code), "%s", code);
    snprintf(job->err_msg, sizeof(job->err_msg), "%s", msg);
    return 0;
}

static void *th_kind_data(const struct spindle_job *job)
{
    return job->kind->desc.data;
}

static const struct spindle_host th_host = {
    .abi_major = SPINDLE_ABI_MAJOR,
    .abi_minor = SPINDLE_ABI_MINOR,
    .size = sizeof(struct spindle_host),
    .cancelled = th_cancelled,
    .param = th_param,
    .param_given = th_param_given,
    .param_str = th_param_str,
    .body = th_body,
    .set_answer = th_set_answer,
    .set_error = th_set_error,
    .kind_data = th_kind_data,
};

/* ---- helpers --------------------------------------------------------------------------------- */

static const char *const modes[] = {"fast", "best", NULL};
static const struct spindle_param tk_params[] = {
    {.name = "lines", .type = SPINDLE_PARAM_INT, .min = 0, .max = 1000},
    {.name = "mode", .type = SPINDLE_PARAM_ENUM, .choices = modes},
    {.name = "verbose", .type = SPINDLE_PARAM_BOOL},
    {.name = "label", .type = SPINDLE_PARAM_STRING},
};

/* A kind from `exec` with the four parameters above; returns the error (0 on success). */
static int tk_new(struct srv_kind *k, const char *exec, const char *user, size_t max_out, char *err,
                  size_t size)
{
    memset(k, 0, sizeof(*k));
    struct srv_cfg_kind ck;
    memset(&ck, 0, sizeof(ck));
    snprintf(ck.name, sizeof(ck.name), "tk");
    snprintf(ck.exec, sizeof(ck.exec), "%s", exec);
    snprintf(ck.user, sizeof(ck.user), "%s", user != NULL ? user : "");
    ck.max_output_bytes = max_out;
    ck.cancel_grace_ms = 500;
    k->desc = (struct spindle_kind){SPINDLE_KIND_HEAD, .params = tk_params, .nparams = 4};
    snprintf(k->name, sizeof(k->name), "tk");
    return srv_exec_kind_new(&ck, &th_host, &k->desc, err, size);
}

static struct srv_kind *tk_ok(const char *exec, size_t max_out)
{
    static struct srv_kind k;
    char err[256] = "";
    int rc = tk_new(&k, exec, NULL, max_out, err, sizeof(err));
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0)
        fprintf(stderr, "\n    srv_exec_kind_new(%s): %s\n", exec, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(k.desc.run);
    CU_ASSERT_EQUAL(k.desc.uses_body, 1);
    return &k;
}

/* Parse and run one job of k with `body` under `c`; returns run's result. */
static int tk_job(struct srv_kind *k, struct ctx *c, const char *body, struct spindle_job *job)
{
    memset(job, 0, sizeof(*job));
    job->kind = k;
    job->body = body;
    job->body_len = body != NULL ? strlen(body) : 0;
    job->value[0] = 7;
    job->value[1] = 1; /* best */
    job->value[2] = 1;
    job->str[3] = "two words";
    job->str_len[3] = 9;
    job->given = 0xf;
    void *st = NULL;
    CU_ASSERT_EQUAL_FATAL(k->desc.parse(job, &st), 0);
    struct ctx *prev = ctx_enter(c);
    int rc = k->desc.run(job, st);
    ctx_leave(prev);
    k->desc.free(st);
    return rc;
}

static void tk_fini(struct srv_kind *k)
{
    k->desc.fini(k->desc.data);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void tk_err(const char *exec, const char *user, const char *want)
{
    struct srv_kind k;
    char err[256] = "";
    CU_ASSERT_EQUAL(tk_new(&k, exec, user, 0, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    if (strstr(err, want) == NULL)
        fprintf(stderr, "\n    '%s': got '%s', want '%s'\n", exec, err, want);
}

static void test_srv_exec_kind_new_errors(void)
{
    tk_err("/nonexistent/wc -c", NULL, "program /nonexistent/wc: No such file or directory");
    tk_err("spindle-no-such-program", NULL, "not found in");
    tk_err("/bin/echo {nope}", NULL, "unknown parameter '{nope}'");
    tk_err("/bin/true", "spindle-no-such-user", "(user = spindle-no-such-user) no such user");
}

/* wc -c: the count, as malloc'd bytes handed to the host, with the kind's content type. */
static void test_srv_exec_kind_run_answer(void)
{
    struct srv_kind *k = tk_ok("/usr/bin/wc -c", 0);
    struct spindle_job job;
    CU_ASSERT_EQUAL(tk_job(k, NULL, "hello world", &job), 0);
    CU_ASSERT_EQUAL(job.err_status, 0);
    CU_ASSERT_EQUAL(job.ans_len, 3);
    CU_ASSERT(job.ans_len == 3 && memcmp(job.ans, "11\n", 3) == 0);
    CU_ASSERT_PTR_NULL(job.ans_type); /* the kind's configured content_type */
    CU_ASSERT_EQUAL(job.ans_flags, SPINDLE_BYTES_MALLOC);
    free((void *)job.ans);
    tk_fini(k);
}

/* Every parameter type as the program sees it, in argv and in the environment. */
static void test_srv_exec_kind_params_rendered(void)
{
    struct srv_kind *k = tk_ok("/bin/echo {lines} {mode} {verbose} {label}", 0);
    struct spindle_job job;
    CU_ASSERT_EQUAL(tk_job(k, NULL, NULL, &job), 0);
    const char *want = "7 best true two words\n";
    CU_ASSERT(job.ans_len == strlen(want) && memcmp(job.ans, want, strlen(want)) == 0);
    free((void *)job.ans);
    tk_fini(k);
    k = tk_ok("/usr/bin/env", 0);
    CU_ASSERT_EQUAL(tk_job(k, NULL, NULL, &job), 0);
    char *env = strndup(job.ans, job.ans_len);
    CU_ASSERT_PTR_NOT_NULL(strstr(env, "SPINDLE_PARAM_LINES=7\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(env, "SPINDLE_PARAM_MODE=best\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(env, "SPINDLE_PARAM_VERBOSE=true\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(env, "SPINDLE_PARAM_LABEL=two words\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(env, "SPINDLE_KIND=tk\n"));
    free(env);
    free((void *)job.ans);
    tk_fini(k);
}

static void test_srv_exec_kind_run_failures(void)
{
    char path[32];
    et_script(path, "echo 'bad input at line 3' >&2; exit 4");
    struct srv_kind *k = tk_ok(path, 0);
    struct spindle_job job;
    CU_ASSERT_EQUAL(tk_job(k, NULL, NULL, &job), 0);
    CU_ASSERT_EQUAL(job.err_status, 500);
    CU_ASSERT_STRING_EQUAL(job.err_code, "job_failed");
    CU_ASSERT_STRING_EQUAL(job.err_msg, "exited with status 4: bad input at line 3");
    CU_ASSERT_PTR_NULL(job.ans);
    tk_fini(k);
    unlink(path);

    k = tk_ok("/usr/bin/head -c 5000 /dev/zero", 4096);
    CU_ASSERT_EQUAL(tk_job(k, NULL, NULL, &job), 0);
    CU_ASSERT_EQUAL(job.err_status, 502);
    CU_ASSERT_STRING_EQUAL(job.err_code, "output_too_large");
    tk_fini(k);
}

static void test_srv_exec_kind_run_cancelled(void)
{
    struct srv_kind *k = tk_ok("/bin/sleep 30", 0);
    struct ctx *c = et_ctx("req-kind-cancel");
    CU_ASSERT_EQUAL(ctx_cancel(c, CTX_REASON_SIBLING_WON), 0);
    struct spindle_job job;
    CU_ASSERT_EQUAL(tk_job(k, c, NULL, &job), -ECANCELED);
    CU_ASSERT_EQUAL(job.err_status, 0);
    /* the deadline seen on the clock, before the loop's timer cancels: 504 */
    ctx_unref(c);
    c = et_ctx("req-kind-deadline");
    ctx_set_deadline(c, ctx_now_ns() + 200 * ET_MS);
    CU_ASSERT_EQUAL(tk_job(k, c, NULL, &job), -ETIMEDOUT);
    CU_ASSERT_EQUAL(job.err_status, 504);
    CU_ASSERT_STRING_EQUAL(job.err_code, "deadline_exceeded");
    CU_ASSERT_EQUAL(et_children(), 0);
    ctx_unref(c);
    tk_fini(k);
}

int suite_server_jobs_exec_kind(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_exec_kind_new_errors),
        SPINDLE_TEST(test_srv_exec_kind_run_answer),
        SPINDLE_TEST(test_srv_exec_kind_params_rendered),
        SPINDLE_TEST(test_srv_exec_kind_run_failures),
        SPINDLE_TEST(test_srv_exec_kind_run_cancelled),
    };
    return SPINDLE_SUITE_ADD("server_jobs_exec_kind", et_log_init, et_log_fini, tests);
}
