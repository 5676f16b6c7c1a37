/* test_proc.c - tests of the process helpers (proc.h) the integration suites rely on: exit codes,
 * captured output, extra environment, bounded waits that kill, signals, and temporary
 * directories. The children are /bin/sh one-liners, each bounded by a timeout.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_proc(void);

#define PT_TIMEOUT_MS 10000

static struct proc *pt_sh(const char *script, const char *const *env)
{
    const char *args[] = {"-c", script, NULL};
    struct proc *p = proc_spawn_exe("/bin/sh", args, env);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

/* True when `pid` no longer runs: gone, or a zombie ("Z" in /proc/PID/stat). */
static bool pt_dead(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close = strrchr(buf, ')');
    return close == NULL || close[1] == '\0' || close[2] == 'Z' || close[2] == 'X';
}

static void test_proc_wait_exit_and_output(void)
{
    const char *env[] = {"PT_VALUE=from test", "HOME=/pt-home", NULL};
    struct proc *p = pt_sh("echo \"$PT_VALUE\"; echo \"$HOME\"; echo err >&2; exit 3", env);
    int code = -1;
    CU_ASSERT_EQUAL(proc_wait(p, PT_TIMEOUT_MS, &code), 0);
    CU_ASSERT_EQUAL(code, 3);
    CU_ASSERT(proc_exited(p));
    CU_ASSERT(!proc_timed_out(p));
    size_t len = 0;
    CU_ASSERT_STRING_EQUAL(proc_output(p, PROC_STDOUT, &len), "from test\n/pt-home\n");
    CU_ASSERT_EQUAL(len, 19);
    CU_ASSERT_STRING_EQUAL(proc_output(p, PROC_STDERR, NULL), "err\n");
    /* A second wait returns the same at once; a signal to a reaped child is refused. */
    code = -1;
    CU_ASSERT_EQUAL(proc_wait(p, 0, &code), 0);
    CU_ASSERT_EQUAL(code, 3);
    CU_ASSERT_EQUAL(proc_signal(p, SIGTERM), -ESRCH);
    proc_free(p);
}

static void test_proc_wait_timeout_kills(void)
{
    /* The grandchild (sleep in the background) is in the group and dies too. */
    struct proc *p = pt_sh("sleep 30 & echo $! >&2; sleep 30", NULL);
    CU_ASSERT_FATAL(proc_output_wait(p, PROC_STDERR, "\n", PT_TIMEOUT_MS));
    pid_t grandchild = (pid_t)atoi(proc_output(p, PROC_STDERR, NULL));
    CU_ASSERT(grandchild > 0);
    int code = -1;
    CU_ASSERT_EQUAL(proc_wait(p, 50, &code), -ETIMEDOUT);
    CU_ASSERT_EQUAL(code, 128 + SIGKILL);
    CU_ASSERT(proc_timed_out(p));
    CU_ASSERT(proc_exited(p));
    /* Killed with the group: bounded wait for it to be gone (or a zombie, where no init reaps
     * orphans). */
    bool gone = false;
    for (int i = 0; i < 5000 && !gone; i++) {
        gone = pt_dead(grandchild);
        if (!gone)
            nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    CU_ASSERT(gone);
    proc_free(p);
}

static void test_proc_signal_and_output_wait(void)
{
    struct proc *p = pt_sh("trap 'echo got-term; exit 7' TERM; echo ready >&2; "
                           "while :; do sleep 0.01; done",
                           NULL);
    CU_ASSERT_FATAL(proc_output_wait(p, PROC_STDERR, "ready", PT_TIMEOUT_MS));
    CU_ASSERT(!proc_output_wait(p, PROC_STDOUT, "never", 20));
    CU_ASSERT_EQUAL(proc_signal(p, SIGTERM), 0);
    int code = -1;
    CU_ASSERT_EQUAL(proc_wait(p, PT_TIMEOUT_MS, &code), 0);
    CU_ASSERT_EQUAL(code, 7);
    CU_ASSERT_STRING_EQUAL(proc_output(p, PROC_STDOUT, NULL), "got-term\n");
    proc_free(p);

    /* A child that exits without the text: the wait ends early, not at its timeout. */
    p = pt_sh("echo bye", NULL);
    CU_ASSERT(!proc_output_wait(p, PROC_STDOUT, "hello", 60000));
    CU_ASSERT(proc_exited(p));
    proc_free(p);
}

static void test_proc_spawn_missing(void)
{
    errno = 0;
    CU_ASSERT_PTR_NULL(proc_spawn_exe("/nonexistent/program", NULL, NULL));
    CU_ASSERT_EQUAL(errno, ENOENT);
    proc_free(NULL);
}

static void test_proc_tmpdir(void)
{
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char *f = proc_file_write(dir, "a.conf", "x = 1\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char sub[1024], link[1024];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    CU_ASSERT_EQUAL(mkdir(sub, 0700), 0);
    char *g = proc_file_write(sub, "b", "");
    CU_ASSERT_PTR_NOT_NULL(g);
    /* A link out of the directory is removed, not followed. */
    char *outside = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(outside);
    snprintf(link, sizeof(link), "%s/out", dir);
    CU_ASSERT_EQUAL(symlink(outside, link), 0);
    struct stat st;
    CU_ASSERT_EQUAL(stat(f, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 6);
    char *copy = strdup(dir);
    CU_ASSERT_EQUAL(proc_tmpdir_free(dir), 0);
    CU_ASSERT_NOT_EQUAL(stat(copy, &st), 0);
    CU_ASSERT_EQUAL(stat(outside, &st), 0);
    CU_ASSERT_EQUAL(proc_tmpdir_free(outside), 0);
    CU_ASSERT_EQUAL(proc_tmpdir_free(NULL), 0);
    free(copy);
    free(f);
    free(g);
}

int suite_integration_proc(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_proc_wait_exit_and_output),
        SPINDLE_TEST(test_proc_wait_timeout_kills),
        SPINDLE_TEST(test_proc_signal_and_output_wait),
        SPINDLE_TEST(test_proc_spawn_missing),
        SPINDLE_TEST(test_proc_tmpdir),
    };
    return SPINDLE_SUITE_ADD("integration_proc", NULL, NULL, tests);
}
