/* test_run.c - running real programs (server/jobs/exec/run.c): answers of wc, sha256sum and gzip,
 * failures, cancellation and deadlines with a program that sleeps or ignores SIGTERM, output
 * limits, stderr logging and its bounds, pumping without deadlock, and after every run: no child
 * left (/proc/self/task/x/children) and as many descriptors as before. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "server/jobs/exec/exec.h"
#include "server/jobs/exec/internal.h"
#include "tests/suite.h"
#include "tests/unit/server/jobs/exec/support.h"

int suite_server_jobs_exec_run(void);

/* What every test checks at its end: nothing left running, no descriptor leaked. */
static int fds_before;

static void leak_start(void)
{
    fds_before = et_fds();
    CU_ASSERT_EQUAL(et_children(), 0);
}

static void leak_check(void)
{
    CU_ASSERT_EQUAL(et_children(), 0);
    CU_ASSERT_EQUAL(et_fds(), fds_before);
}

/* Run `exec` (no parameters) with `body` and no context; returns rc, fills res. */
static int run_simple(const char *exec, const void *body, size_t len, struct srv_exec_result *res)
{
    struct srv_exec_prog *p = et_prog(exec);
    int rc = et_run_in(NULL, p, "t", NULL, body, len, res);
    srv_exec_prog_free(p);
    return rc;
}

static unsigned char *big_body(size_t len)
{
    unsigned char *b = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = (unsigned char)("spindle \n0123456789"[x % 19]);
    }
    return b;
}

static void test_srv_exec_run_true(void)
{
    leak_start();
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("/bin/true", NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_EQUAL(res.out_len, 0);
    CU_ASSERT_STRING_EQUAL(res.message, "");
    CU_ASSERT_EQUAL(srv_exec_outcome_status(res.outcome), 200);
    srv_exec_result_fini(&res);
    leak_check();
}

static void test_srv_exec_run_wc(void)
{
    leak_start();
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("/usr/bin/wc -c", "hello world", 11, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_EQUAL(res.out_len, 3);
    CU_ASSERT(res.out_len == 3 && memcmp(res.out, "11\n", 3) == 0);
    srv_exec_result_fini(&res);
    leak_check();
}

static void test_srv_exec_run_sha256sum(void)
{
    leak_start();
    size_t len = 3u << 20;
    unsigned char *body = big_body(len), md[32];
    unsigned int mdlen = 0;
    CU_ASSERT_EQUAL(EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL), 1);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("sha256sum", body, len, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT(res.out_len == 64 + 4 && memcmp(res.out, hex, 64) == 0);
    srv_exec_result_fini(&res);
    free(body);
    leak_check();
}

/* gzip writes while it reads: the output decompresses to the input. */
static void test_srv_exec_run_gzip_roundtrip(void)
{
    leak_start();
    size_t len = 4u << 20;
    unsigned char *body = big_body(len);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("gzip -c -1", body, len, &res), 0);
    CU_ASSERT_EQUAL_FATAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT(res.out_len > 0 && res.out_len < len);
    unsigned char *back = malloc(len + 1);
    z_stream z = {0};
    CU_ASSERT_EQUAL_FATAL(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
    z.next_in = (unsigned char *)res.out;
    z.avail_in = (uInt)res.out_len;
    z.next_out = back;
    z.avail_out = (uInt)len + 1;
    CU_ASSERT_EQUAL(inflate(&z, Z_FINISH), Z_STREAM_END);
    CU_ASSERT_EQUAL(z.total_out, len);
    CU_ASSERT(memcmp(back, body, len) == 0);
    inflateEnd(&z);
    free(back);
    free(body);
    srv_exec_result_fini(&res);
    leak_check();
}

/* cat writes as it reads: 8 MiB through a 64 KiB pipe each way. */
static void test_srv_exec_run_cat_large(void)
{
    leak_start();
    size_t len = 8u << 20;
    unsigned char *body = big_body(len);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("cat", body, len, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT(res.out_len == len && memcmp(res.out, body, len) == 0);
    srv_exec_result_fini(&res);
    free(body);
    leak_check();
}

/* A program that reads none of a large body and writes much: no deadlock, no error. */
static void test_srv_exec_run_ignores_stdin(void)
{
    leak_start();
    size_t len = 8u << 20;
    unsigned char *body = big_body(len);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("head -c 5000000 /dev/zero", body, len, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_EQUAL(res.out_len, 5000000);
    srv_exec_result_fini(&res);
    /* and one that exits at once without reading: EPIPE is not an error */
    CU_ASSERT_EQUAL(run_simple("true", body, len, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    srv_exec_result_fini(&res);
    free(body);
    leak_check();
}

static void test_srv_exec_run_exit_status(void)
{
    leak_start();
    struct ctx *c = et_ctx("req-exit-3");
    char path[32];
    et_script(path, "echo first >&2; echo 'last words' >&2; echo out; exit 3");
    struct srv_exec_prog *p = et_prog(path);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(c, p, "failing", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_EXIT_STATUS);
    CU_ASSERT_EQUAL(res.status, 3);
    CU_ASSERT_STRING_EQUAL(res.last_stderr, "last words");
    CU_ASSERT_STRING_EQUAL(res.message, "exited with status 3: last words");
    CU_ASSERT_PTR_NULL(res.out); /* a failure has no answer */
    CU_ASSERT_EQUAL(srv_exec_outcome_status(res.outcome), 500);
    CU_ASSERT_STRING_EQUAL(srv_exec_outcome_code(res.outcome), "job_failed");
    srv_exec_result_fini(&res);
    /* both stderr lines were logged, in order, with the request's ids */
    json_t *lines = et_log_lines("req-exit-3", "job stderr");
    CU_ASSERT_EQUAL(json_array_size(lines), 2);
    json_t *l0 = json_array_get(lines, 0), *l1 = json_array_get(lines, 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(l0, "line")), "first");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(l1, "line")), "last words");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(l1, "tenant")), "acme");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(l1, "kind")), "failing");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(l1, "trace_id")), ctx_trace_id_hex(c));
    json_decref(lines);
    srv_exec_prog_free(p);
    ctx_unref(c);
    unlink(path);
    leak_check();
}

static void test_srv_exec_run_signaled(void)
{
    leak_start();
    char path[32];
    et_script(path, "kill -SEGV $$");
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple(path, NULL, 0, &res), 0);
    unlink(path);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_SIGNALED);
    CU_ASSERT_EQUAL(res.status, SIGSEGV);
    CU_ASSERT_STRING_EQUAL(res.message, "killed by signal SIGSEGV");
    srv_exec_result_fini(&res);
    leak_check();
}

/* The program was fine at configuration time and is gone (or not executable) at run time. */
static void test_srv_exec_run_spawn_failed(void)
{
    leak_start();
    char path[] = "/tmp/spindle-prog-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "#!/bin/sh\nexit 0\n", 17) == 17);
    CU_ASSERT_EQUAL(fchmod(fd, 0755), 0);
    close(fd);
    struct srv_exec_prog *p = et_prog(path);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    srv_exec_result_fini(&res);
    CU_ASSERT_EQUAL(chmod(path, 0644), 0); /* no x bit: execve refuses even root */
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_SPAWN_FAILED);
    CU_ASSERT_EQUAL(res.status, EACCES);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.message, "Permission denied (execve)"));
    CU_ASSERT_STRING_EQUAL(srv_exec_outcome_code(res.outcome), "spawn_failed");
    srv_exec_result_fini(&res);
    unlink(path);
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_SPAWN_FAILED);
    CU_ASSERT_EQUAL(res.status, ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.message, "cannot run /tmp/spindle-prog-"));
    CU_ASSERT_PTR_NOT_NULL(strstr(res.message, "No such file or directory (execve)"));
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    leak_check();
}

/* A step before execve fails (the cwd was removed since): the step is named, nothing is left. */
static void test_srv_exec_run_spawn_step_named(void)
{
    leak_start();
    char dir[] = "/tmp/spindle-cwd-XXXXXX";
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    struct srv_exec_conf conf = {.exec = "pwd", .cwd = dir};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    CU_ASSERT_EQUAL(rmdir(dir), 0);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_SPAWN_FAILED);
    CU_ASSERT_EQUAL(res.status, ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.message, "No such file or directory (chdir)"));
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    leak_check();
}

/* ---- stopping -------------------------------------------------------------------------------- */

struct canceller {
    struct ctx *c;
    const char *marker; /* NULL, or a file the program creates when it is ready */
    int saw_child;
};

/* Wait (bounded) until the program is running (and made its marker), then cancel. */
static void *canceller_main(void *arg)
{
    struct canceller *k = arg;
    for (int i = 0;
         i < 2000 && (et_children() == 0 || (k->marker != NULL && access(k->marker, F_OK) != 0));
         i++) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    k->saw_child = et_children();
    ctx_cancel(k->c, CTX_REASON_CLIENT_CLOSED);
    return NULL;
}

/* Run `exec` and cancel it from another thread once it runs: -ECANCELED, reaped. Returns the
 * run's duration. */
static uint64_t run_cancelled(const char *exec, const char *marker, const char *rid)
{
    struct ctx *c = et_ctx(rid);
    struct srv_exec_prog *p = et_prog(exec);
    struct canceller k = {.c = c, .marker = marker};
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, canceller_main, &k), 0);
    struct srv_exec_result res;
    uint64_t t0 = ctx_now_ns();
    CU_ASSERT_EQUAL(et_run_in(c, p, "sleepy", NULL, NULL, 0, &res), -ECANCELED);
    uint64_t ns = ctx_now_ns() - t0;
    CU_ASSERT_EQUAL(pthread_join(th, NULL), 0);
    CU_ASSERT(k.saw_child >= 1);
    CU_ASSERT_PTR_NULL(res.out);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    ctx_unref(c);
    return ns;
}

static void test_srv_exec_run_cancelled_sleep(void)
{
    leak_start();
    uint64_t ns = run_cancelled("sleep 30", NULL, "req-cancel-sleep");
    CU_ASSERT(ns < ET_PROMPT_NS);
    json_t *l = et_log_lines("req-cancel-sleep", "job program stopping");
    CU_ASSERT_EQUAL(json_array_size(l), 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(l, 0), "signal")),
                           "SIGTERM");
    json_decref(l);
    l = et_log_lines("req-cancel-sleep", "job program killed after its grace");
    CU_ASSERT_EQUAL(json_array_size(l), 0); /* SIGTERM was enough */
    json_decref(l);
    leak_check();
}

/* sh and its sleep both ignore SIGTERM: SIGKILL after the grace. */
static void test_srv_exec_run_cancelled_ignores_term(void)
{
    leak_start();
    char path[32], marker[48];
    snprintf(marker, sizeof(marker), "/tmp/spindle-marker-%d", (int)getpid());
    char script[160];
    snprintf(script, sizeof(script), "trap '' TERM; touch %s; sleep 30; echo done", marker);
    et_script(path, script);
    uint64_t ns = run_cancelled(path, marker, "req-cancel-trap");
    CU_ASSERT(ns < ET_PROMPT_NS);
    unlink(path);
    unlink(marker);
    json_t *l = et_log_lines("req-cancel-trap", "job program killed after its grace");
    CU_ASSERT_EQUAL(json_array_size(l), 1);
    json_decref(l);
    leak_check();
}

static void test_srv_exec_run_cancelled_before(void)
{
    leak_start();
    struct ctx *c = et_ctx("req-cancel-first");
    CU_ASSERT_EQUAL(ctx_cancel(c, CTX_REASON_SHUTDOWN), 0);
    struct srv_exec_prog *p = et_prog("sleep 30");
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(c, p, "t", NULL, NULL, 0, &res), -ECANCELED);
    json_t *l = et_log_lines("req-cancel-first", "job program started");
    CU_ASSERT_EQUAL(json_array_size(l), 0); /* never spawned */
    json_decref(l);
    srv_exec_prog_free(p);
    ctx_unref(c);
    leak_check();
}

/* The deadline passes with nobody to cancel the context: the run sees it on the clock. */
static void test_srv_exec_run_deadline(void)
{
    leak_start();
    struct srv_exec_prog *p = et_prog("sleep 30");
    struct ctx *c = et_ctx("req-deadline");
    uint64_t t0 = ctx_now_ns();
    ctx_set_deadline(c, t0 + 300 * ET_MS);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(c, p, "t", NULL, NULL, 0, &res), -ETIMEDOUT);
    uint64_t t1 = ctx_now_ns();
    CU_ASSERT(ctx_expired(c, t1)); /* it returned after the deadline, not before */
    CU_ASSERT(t1 - t0 < ET_PROMPT_NS);
    srv_exec_prog_free(p);
    ctx_unref(c);
    leak_check();
}

static void test_srv_exec_run_output_too_large(void)
{
    leak_start();
    struct srv_exec_conf conf = {.exec = "head -c 100000000 /dev/zero",
                                 .max_output_bytes = 16u << 20};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OUTPUT_TOO_LARGE);
    CU_ASSERT_STRING_EQUAL(res.message, "output over max_output_bytes (16777216)");
    CU_ASSERT_PTR_NULL(res.out);
    CU_ASSERT_EQUAL(srv_exec_outcome_status(res.outcome), 502);
    CU_ASSERT_STRING_EQUAL(srv_exec_outcome_code(res.outcome), "output_too_large");
    srv_exec_result_fini(&res);
    /* exactly at the limit is fine */
    conf.exec = "head -c 1000 /dev/zero";
    conf.max_output_bytes = 1000;
    srv_exec_prog_free(p);
    p = et_prog_conf(&conf);
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_EQUAL(res.out_len, 1000);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    leak_check();
}

/* 1000 stderr lines: SRV_EXEC_STDERR_LINES logged, the rest counted in one line. */
static void test_srv_exec_run_stderr_spam(void)
{
    leak_start();
    struct ctx *c = et_ctx("req-stderr-spam");
    char path[32];
    et_script(path, "seq 1 1000 >&2");
    struct srv_exec_prog *p = et_prog(path);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(c, p, "spam", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_EQUAL(res.stderr_lines, 1000);
    CU_ASSERT_EQUAL(res.stderr_dropped, 1000 - SRV_EXEC_STDERR_LINES);
    CU_ASSERT_STRING_EQUAL(res.last_stderr, "1000");
    json_t *l = et_log_lines("req-stderr-spam", "job stderr");
    CU_ASSERT_EQUAL(json_array_size(l), SRV_EXEC_STDERR_LINES);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(l, 0), "line")), "1");
    json_decref(l);
    l = et_log_lines("req-stderr-spam", "job stderr dropped");
    CU_ASSERT_EQUAL(json_array_size(l), 1);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_array_get(l, 0), "lines")),
                    1000 - SRV_EXEC_STDERR_LINES);
    json_decref(l);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    ctx_unref(c);
    unlink(path);
    leak_check();
}

/* ---- what the program sees ------------------------------------------------------------------- */

static void test_srv_exec_run_env(void)
{
    leak_start();
    static const char *const names[] = {"lines"};
    struct srv_exec_conf conf = {.exec = "env", .param_names = names, .nparams = 1};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    struct ctx *c = et_ctx("req-env-1");
    ctx_set_deadline(c, ctx_now_ns() + 60000 * ET_MS);
    const char *values[] = {"7"};
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(c, p, "envkind", values, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL_FATAL(res.outcome, SRV_EXEC_OK);
    char *out = strndup(res.out, res.out_len);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "SPINDLE_REQUEST_ID=req-env-1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "SPINDLE_TENANT=acme\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "SPINDLE_KIND=envkind\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "SPINDLE_PARAM_LINES=7\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "SPINDLE_DEADLINE_MS="));
    char tp[80];
    snprintf(tp, sizeof(tp), "TRACEPARENT=00-%s-", ctx_trace_id_hex(c));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, tp));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "LANG=C.UTF-8\n"));
    size_t nl = 0;
    for (char *s = out; *s != '\0'; s++)
        nl += *s == '\n';
    CU_ASSERT_EQUAL(nl, 9); /* nothing of this process's own environment */
    free(out);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    ctx_unref(c);
    leak_check();
}

/* Only 0, 1 and 2 reach the program, even from a descriptor opened without O_CLOEXEC. */
static void test_srv_exec_run_fds_not_inherited(void)
{
    int leaky = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
    CU_ASSERT_FATAL(leaky >= 0);
    leak_start();
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("ls -1 /proc/self/fd", NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT(res.out_len == 8 && memcmp(res.out, "0\n1\n2\n3\n", 8) == 0); /* 3: ls's own */
    srv_exec_result_fini(&res);
    leak_check();
    close(leaky);
}

static void test_srv_exec_run_rlimits(void)
{
    leak_start();
    char path[32], busy[32];
    et_script(path, "ulimit -n; ulimit -v");
    et_script(busy, "while :; do :; done");
    struct srv_exec_conf conf = {.exec = path, .rlimit_nofile = 64, .rlimit_as = 512u << 20};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT(res.out_len == 10 && memcmp(res.out, "64\n524288\n", 10) == 0);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    /* a CPU limit of one second stops a busy loop with SIGXCPU */
    struct srv_exec_conf cpu = {.exec = busy, .rlimit_cpu_s = 1};
    p = et_prog_conf(&cpu);
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_SIGNALED);
    CU_ASSERT(res.status == SIGXCPU || res.status == SIGKILL);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    unlink(path);
    unlink(busy);
    leak_check();
}

static void test_srv_exec_run_cwd(void)
{
    leak_start();
    struct srv_exec_conf conf = {.exec = "pwd", .cwd = "/tmp"};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT(res.out_len == 5 && memcmp(res.out, "/tmp\n", 5) == 0);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    leak_check();
}

static const char *skip_unless_root(void)
{
    return geteuid() == 0 ? NULL : "switching users needs root";
}

static void test_srv_exec_run_user(void)
{
    leak_start();
    char path[32];
    et_script(path, "id -u; id -g; echo $HOME");
    CU_ASSERT_EQUAL(chmod(path, 0755), 0);
    struct srv_exec_conf conf = {.exec = path, .user = "nobody"};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(et_run_in(NULL, p, "t", NULL, NULL, 0, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    const char *want = "65534\n65534\n/nonexistent\n";
    CU_ASSERT(res.out_len == strlen(want) && memcmp(res.out, want, strlen(want)) == 0);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    unlink(path);
    leak_check();
}

/* Without a pidfd (Linux < 5.3) the exit is found by polling: answers, cancellation and
 * reaping work the same. */
static void test_srv_exec_run_without_pidfd(void)
{
    leak_start();
    exec_test_no_pidfd = true;
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_simple("/usr/bin/wc -c", "hello world", 11, &res), 0);
    CU_ASSERT(res.out_len == 3 && memcmp(res.out, "11\n", 3) == 0);
    srv_exec_result_fini(&res);
    uint64_t ns = run_cancelled("sleep 30", NULL, "req-no-pidfd");
    CU_ASSERT(ns < ET_PROMPT_NS);
    exec_test_no_pidfd = false;
    leak_check();
}

/* ---- several runs at once -------------------------------------------------------------------- */

struct par {
    const struct srv_exec_prog *p;
    int ok;
};

static void *par_main(void *arg)
{
    struct par *pa = arg;
    for (int i = 0; i < 10; i++) {
        struct srv_exec_result res;
        if (et_run_in(NULL, pa->p, "t", NULL, "abcdef", 6, &res) == 0 &&
            res.outcome == SRV_EXEC_OK && res.out_len == 2 && memcmp(res.out, "6\n", 2) == 0)
            pa->ok++;
        srv_exec_result_fini(&res);
    }
    return NULL;
}

static void test_srv_exec_run_parallel(void)
{
    leak_start();
    struct srv_exec_prog *p = et_prog("wc -c");
    struct par pa[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        pa[i] = (struct par){.p = p};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, par_main, &pa[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(pthread_join(th[i], NULL), 0);
        CU_ASSERT_EQUAL(pa[i].ok, 10);
    }
    srv_exec_prog_free(p);
    leak_check();
}

/* ---- streamed runs: a fake caller's ends -------------------------------------------------------
 * The input comes in pieces, the output is taken in small pieces, and every third call answers
 * -EAGAIN (then writes the wake descriptor at once, as a loop making room or data would). */
struct fake_io {
    const unsigned char *in;
    size_t in_len, in_off;
    unsigned char *out;
    size_t out_len, out_cap;
    size_t fail_after; /* write answers -ECANCELED once this much went out (0: never) */
    int wake_fd;
    bool woken_set, woken_cleared;
    unsigned calls;
};

static ssize_t fake_again(struct fake_io *f)
{
    uint64_t one = 1;
    CU_ASSERT_EQUAL(write(f->wake_fd, &one, sizeof(one)), (ssize_t)sizeof(one));
    return -EAGAIN;
}

static ssize_t fake_read(void *arg, void *buf, size_t size)
{
    struct fake_io *f = arg;
    if (++f->calls % 3 == 0)
        return fake_again(f);
    size_t n = f->in_len - f->in_off < 10000 ? f->in_len - f->in_off : 10000;
    n = n < size ? n : size;
    memcpy(buf, f->in + f->in_off, n);
    f->in_off += n;
    return (ssize_t)n;
}

static ssize_t fake_write(void *arg, const void *buf, size_t len)
{
    struct fake_io *f = arg;
    if (f->fail_after != 0 && f->out_len >= f->fail_after)
        return -ECANCELED;
    if (++f->calls % 3 == 0)
        return fake_again(f);
    size_t n = len < 3000 ? len : 3000;
    if (f->out_len + n > f->out_cap)
        n = f->out_cap - f->out_len;
    CU_ASSERT_FATAL(n > 0); /* never more output than the test expects */
    memcpy(f->out + f->out_len, buf, n);
    f->out_len += n;
    return (ssize_t)n;
}

static void fake_wake(void *arg, int fd)
{
    struct fake_io *f = arg;
    f->wake_fd = fd;
    if (fd >= 0)
        f->woken_set = true;
    else
        f->woken_cleared = true;
}

static int run_streamed(const struct srv_exec_prog *p, struct fake_io *f,
                        struct srv_exec_result *res)
{
    struct srv_exec_stream io = {fake_read, fake_write, fake_wake, f};
    struct srv_exec_input in = {.kind = "t", .stream = &io};
    return srv_exec_run(p, &in, res);
}

/* 8 MiB through cat in odd pieces: the same bytes, nothing kept in the result. */
static void test_srv_exec_run_streamed_cat(void)
{
    leak_start();
    size_t len = 8u << 20;
    struct fake_io f = {.in = big_body(len), .in_len = len, .out_cap = len, .wake_fd = -1};
    f.out = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.out);
    struct srv_exec_prog *p = et_prog("cat");
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_streamed(p, &f, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_PTR_NULL(res.out);
    CU_ASSERT_EQUAL(res.out_len, len);
    CU_ASSERT(f.out_len == len && memcmp(f.out, f.in, len) == 0);
    CU_ASSERT_TRUE(f.woken_set && f.woken_cleared);
    CU_ASSERT_EQUAL(f.wake_fd, -1);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    free((void *)f.in);
    free(f.out);
    leak_check();
}

/* The program writes 4 MB before it reads any of its 4 MiB of input. */
static void test_srv_exec_run_streamed_writes_first(void)
{
    leak_start();
    char script[64];
    et_script(script, "head -c 4000000 /dev/zero\nwc -c");
    size_t len = 4u << 20, want = 4000000 + strlen("4194304\n");
    struct fake_io f = {.in = big_body(len), .in_len = len, .out_cap = want, .wake_fd = -1};
    f.out = malloc(want);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.out);
    struct srv_exec_prog *p = et_prog(script);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_streamed(p, &f, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OK);
    CU_ASSERT_EQUAL(f.out_len, want);
    CU_ASSERT(f.out_len == want && memcmp(f.out + 4000000, "4194304\n", 8) == 0);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    unlink(script);
    free((void *)f.in);
    free(f.out);
    leak_check();
}

/* Over max_output_bytes mid-stream: stopped, output_too_large, no more than the limit went out. */
static void test_srv_exec_run_streamed_too_large(void)
{
    leak_start();
    size_t len = 4u << 20;
    struct fake_io f = {.in = big_body(len), .in_len = len, .out_cap = 1u << 20, .wake_fd = -1};
    f.out = malloc(f.out_cap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.out);
    struct srv_exec_conf conf = {.exec = "cat", .max_output_bytes = 1u << 20};
    struct srv_exec_prog *p = et_prog_conf(&conf);
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_streamed(p, &f, &res), 0);
    CU_ASSERT_EQUAL(res.outcome, SRV_EXEC_OUTPUT_TOO_LARGE);
    CU_ASSERT(f.out_len <= 1u << 20);
    CU_ASSERT(f.out_len == 0 || memcmp(f.out, f.in, f.out_len) == 0);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    free((void *)f.in);
    free(f.out);
    leak_check();
}

/* The output's taker goes away (a client gone): the run stops as cancelled. */
static void test_srv_exec_run_streamed_taker_gone(void)
{
    leak_start();
    size_t len = 8u << 20;
    struct fake_io f = {.in = big_body(len), .in_len = len, .out_cap = len, .wake_fd = -1};
    f.fail_after = 100000;
    f.out = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.out);
    struct srv_exec_prog *p = et_prog("cat");
    struct srv_exec_result res;
    CU_ASSERT_EQUAL(run_streamed(p, &f, &res), -ECANCELED);
    CU_ASSERT(f.out_len < len);
    srv_exec_result_fini(&res);
    srv_exec_prog_free(p);
    free((void *)f.in);
    free(f.out);
    leak_check();
}

int suite_server_jobs_exec_run(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_exec_run_true),
        SPINDLE_TEST(test_srv_exec_run_wc),
        SPINDLE_TEST(test_srv_exec_run_sha256sum),
        SPINDLE_TEST(test_srv_exec_run_gzip_roundtrip),
        SPINDLE_TEST(test_srv_exec_run_cat_large),
        SPINDLE_TEST(test_srv_exec_run_ignores_stdin),
        SPINDLE_TEST(test_srv_exec_run_exit_status),
        SPINDLE_TEST(test_srv_exec_run_signaled),
        SPINDLE_TEST(test_srv_exec_run_spawn_failed),
        SPINDLE_TEST(test_srv_exec_run_spawn_step_named),
        SPINDLE_TEST(test_srv_exec_run_cancelled_sleep),
        SPINDLE_TEST(test_srv_exec_run_cancelled_ignores_term),
        SPINDLE_TEST(test_srv_exec_run_cancelled_before),
        SPINDLE_TEST(test_srv_exec_run_deadline),
        SPINDLE_TEST(test_srv_exec_run_output_too_large),
        SPINDLE_TEST(test_srv_exec_run_stderr_spam),
        SPINDLE_TEST(test_srv_exec_run_env),
        SPINDLE_TEST(test_srv_exec_run_fds_not_inherited),
        SPINDLE_TEST(test_srv_exec_run_rlimits),
        SPINDLE_TEST(test_srv_exec_run_cwd),
        SPINDLE_TEST_UNLESS(test_srv_exec_run_user, skip_unless_root),
        SPINDLE_TEST(test_srv_exec_run_without_pidfd),
        SPINDLE_TEST(test_srv_exec_run_parallel),
        SPINDLE_TEST(test_srv_exec_run_streamed_cat),
        SPINDLE_TEST(test_srv_exec_run_streamed_writes_first),
        SPINDLE_TEST(test_srv_exec_run_streamed_too_large),
        SPINDLE_TEST(test_srv_exec_run_streamed_taker_gone),
    };
    return SPINDLE_SUITE_ADD("server_jobs_exec_run", et_log_init, et_log_fini, tests);
}
