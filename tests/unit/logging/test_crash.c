/* test_crash.c - unit tests for logging/crash.c: a child process logs, dies of a fatal signal
 * with the crash handlers installed, and every line it logged must be in the file, followed by
 * the handler's own "fatal signal" line. The child keeps logging until the writer lags behind,
 * so the handler really has pending bytes to write out.
 */
#include <CUnit/CUnit.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "tests/suite.h"

#define MAX_LINES 2000000

static char path[64];

/* Child: log until at least `lag` lines are pending (or MAX_LINES), report the count on `wfd`,
 * then die by `sig`. Never returns. */
static void child_main(int wfd, int sig, int lag)
{
    struct log_config cfg = {.path = path, .level = LOG_LEVEL_INFO, .buffer_bytes = 8 << 20};
    if (log_start(&cfg) != 0)
        _exit(90);
    log_install_crash_handlers();
    log_thread_name_set("doomed");
    struct ctx *c = ctx_new_root();
    if (c == NULL || ctx_set_request_id(c, "crash-req", 9) != 0)
        _exit(91);
    ctx_enter(c);
    long long n = 0;
    struct log_stats s = {0};
    while (n < MAX_LINES) {
        for (int k = 0; k < 1000; k++, n++)
            LOG_I("about to crash", LOG_INT("seq", n), LOG_STR("pad", "0123456789abcdefghij"));
        log_stats_get(&s);
        if (s.lines - s.written >= (uint64_t)lag)
            break;
    }
    long long report[2] = {n, (long long)(s.lines - s.written)};
    if (write(wfd, report, sizeof(report)) != (ssize_t)sizeof(report))
        _exit(92);
    if (sig == SIGABRT)
        abort();
    raise(sig);
    _exit(93); /* not reached: the handler re-raises with the default action */
}

static void run_crash(int sig)
{
    int fds[2];
    strcpy(path, "/tmp/spindle-crashtest-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT_FATAL(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_main(fds[1], sig, 100);
    }
    close(fds[1]);
    long long report[2] = {0, 0};
    ssize_t got = read(fds[0], report, sizeof(report));
    close(fds[0]);
    int status;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_EQUAL_FATAL(got, (ssize_t)sizeof(report));
    CU_ASSERT_TRUE(WIFSIGNALED(status));
    CU_ASSERT_EQUAL(WTERMSIG(status), sig);
    long long lines = report[0];
    printf("(%lld lines, %lld pending at the signal) ", lines, report[1]);

    FILE *f = fopen(path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long long seen = 0, fatal = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        CU_ASSERT_EQUAL_FATAL(line[len - 1], '\n');
        json_error_t err;
        json_t *j = json_loadb(line, (size_t)len, 0, &err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        const char *msg = json_string_value(json_object_get(j, "msg"));
        CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
        if (strcmp(msg, "fatal signal") == 0) {
            fatal++;
            CU_ASSERT_EQUAL(seen, lines); /* after every line */
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "level")), "fatal");
            CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "signal")), sig);
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "thread")), "doomed");
            CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "request_id")),
                                   "crash-req");
        } else {
            CU_ASSERT_EQUAL_FATAL(json_integer_value(json_object_get(j, "seq")), seen);
            seen++;
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    CU_ASSERT_EQUAL(seen, lines);
    CU_ASSERT_EQUAL(fatal, 1);
    unlink(path);
}

static void test_log_install_crash_handlers_segv(void)
{
    run_crash(SIGSEGV);
}

static void test_log_install_crash_handlers_abort(void)
{
    run_crash(SIGABRT);
}

static void test_log_install_crash_handlers_bus(void)
{
    run_crash(SIGBUS);
}

int suite_logging_crash(void);
int suite_logging_crash(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_log_install_crash_handlers_segv),
        SPINDLE_TEST(test_log_install_crash_handlers_abort),
        SPINDLE_TEST(test_log_install_crash_handlers_bus),
    };
    return SPINDLE_SUITE_ADD("logging_crash", NULL, NULL, tests);
}
