/* test_logs.c - end-to-end tests of `spindle logs`, the real binary as a child process: a file
 * with lines that are not JSON (passed through), the filters, colours, the real server's own log,
 * and following a file across a partial line, a rename-and-create rotation and a truncation
 * (`-f`), stopped with SIGTERM. Every wait is bounded: output is polled in the child's captured
 * stdout with proc_output_wait.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_logs(void);

#define LOGS_RUN_MS   20000
#define LOGS_WAIT_MS  10000 /* a line appended to the followed file shows up */
#define LOGS_QUIET_MS 600   /* a partial line must not show up within 3 polls */

static char *logs_dir;

static const char logs_sample[] =
    "{\"ts\":\"2026-11-22T10:00:00.000001Z\",\"level\":\"info\",\"msg\":\"spindle started\","
    "\"thread\":\"loop\",\"workers\":4}\n"
    "starting from a shell script\n"
    "{\"ts\":\"2026-11-22T10:00:01.250000Z\",\"level\":\"debug\",\"msg\":\"parsed\","
    "\"thread\":\"loop\",\"request_id\":\"req-a\",\"tenant\":\"acme\","
    "\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\",\"span_id\":\"b7ad6b7169203331\"}\n"
    "{\"ts\":\"2026-11-22T10:00:01.500000Z\",\"level\":\"warn\",\"msg\":\"slow job\","
    "\"thread\":\"worker-1\",\"request_id\":\"req-b\",\"tenant\":\"beta\",\"run_ms\":1200.5}\n"
    "{\"ts\":\"2026-11-22T10:00:02\n"
    "{\"ts\":\"2026-11-22T10:00:03.000000Z\",\"level\":\"error\",\"msg\":\"job failed\","
    "\"thread\":\"loop\",\"request_id\":\"req-a\",\"tenant\":\"acme\",\"reason\":\"out of "
    "memory\"}\n"
    "[1,2,3]\n"
    "{\"ts\":\"2026-11-22T10:00:04.000000Z\",\"level\":\"info\",\"msg\":\"access\","
    "\"thread\":\"loop\",\"request_id\":\"req-b\",\"tenant\":\"beta\",\"status\":200}";

static const char logs_pretty[] =
    "10:00:00.000 INFO  spindle started thread=loop workers=4\n"
    "starting from a shell script\n"
    "10:00:01.250 DEBUG [req-a acme 0af76519] parsed thread=loop\n"
    "10:00:01.500 WARN  [req-b beta] slow job thread=worker-1 run_ms=1200.5\n"
    "{\"ts\":\"2026-11-22T10:00:02\n"
    "10:00:03.000 ERROR [req-a acme] job failed thread=loop reason=\"out of memory\"\n"
    "[1,2,3]\n"
    "10:00:04.000 INFO  [req-b beta] access thread=loop status=200\n";

struct logs_result {
    int code;
    char *out;
    char *err;
};

static struct logs_result logs_run(const char *const *args)
{
    struct logs_result r = {.code = -1};
    CU_ASSERT_EQUAL(proc_run(args, LOGS_RUN_MS, &r.out, &r.err, &r.code), 0);
    if (r.out == NULL)
        r.out = strdup("");
    if (r.err == NULL)
        r.err = strdup("");
    return r;
}

static void logs_free(struct logs_result *r)
{
    free(r->out);
    free(r->err);
}

static int logs_init(void)
{
    logs_dir = proc_tmpdir_new();
    return logs_dir == NULL ? -1 : 0;
}

static int logs_cleanup(void)
{
    int rc = proc_tmpdir_free(logs_dir);
    logs_dir = NULL;
    return rc;
}

static size_t logs_count(const char *hay, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += len)
        n++;
    return n;
}

static void test_logs_pretty_and_passthrough(void)
{
    char *path = proc_file_write(logs_dir, "sample.log", logs_sample);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    const char *args[] = {"logs", path, NULL};
    struct logs_result r = logs_run(args);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, logs_pretty); /* stdout is a file: no colours by default */
    CU_ASSERT_STRING_EQUAL(r.err, "");
    logs_free(&r);
    const char *color[] = {"logs", "--color=always", path, NULL};
    r = logs_run(color);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\033[31mERROR\033[0m"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nstarting from a shell script\n")); /* unchanged */
    logs_free(&r);
    free(path);
}

static void test_logs_filters(void)
{
    char *path = proc_file_write(logs_dir, "filters.log", logs_sample);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    const char *by_id[] = {"logs", path, "--request-id", "req-a", NULL};
    struct logs_result r = logs_run(by_id);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "10:00:01.250 DEBUG [req-a acme 0af76519] parsed thread=loop\n"
                                  "10:00:03.000 ERROR [req-a acme] job failed thread=loop "
                                  "reason=\"out of memory\"\n");
    logs_free(&r);
    const char *by_tenant[] = {"logs", "--tenant", "beta", path, NULL};
    r = logs_run(by_tenant);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(logs_count(r.out, "\n"), 2);
    CU_ASSERT_EQUAL(logs_count(r.out, "[req-b beta]"), 2);
    logs_free(&r);
    const char *by_level[] = {"logs", "--level", "warn", path, NULL};
    r = logs_run(by_level);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "10:00:01.500 WARN  [req-b beta] slow job thread=worker-1 "
                                  "run_ms=1200.5\n"
                                  "10:00:03.000 ERROR [req-a acme] job failed thread=loop "
                                  "reason=\"out of memory\"\n");
    logs_free(&r);
    const char *none[] = {"logs", "--level", "fatal", "--tenant", "acme", path, NULL};
    r = logs_run(none);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "");
    logs_free(&r);
    free(path);
}

static void test_logs_errors(void)
{
    const char *missing[] = {"logs", "/nonexistent/spindle.log", NULL};
    struct logs_result r = logs_run(missing);
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "/nonexistent/spindle.log"));
    logs_free(&r);
    const char *usage[] = {"logs", "--level", "loud", NULL};
    r = logs_run(usage);
    CU_ASSERT_EQUAL(r.code, 2);
    logs_free(&r);
    const char *stdin_follow[] = {"logs", "-f", NULL};
    r = logs_run(stdin_follow);
    CU_ASSERT_EQUAL(r.code, 2);
    logs_free(&r);
}

/* The real server's log, read back through the viewer with a request id filter. */
static void test_logs_real_server(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct hs_resp resp = {0};
    struct logs_result r = {0};
    json_t *line = NULL;
    char path[512];
    snprintf(path, sizeof(path), "%s/spindle.log", hs_dir(s));
    HS_CHECK(hs_roundtrip(s,
                          "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: logs-viewer-1\r\n"
                          "X-Tenant-Id: viewer\r\nConnection: close\r\n\r\n",
                          &resp) == 0);
    line = hs_log_wait(s, "access", "request_id", "logs-viewer-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    const char *args[] = {"logs", path, "--request-id", "logs-viewer-1", NULL};
    r = logs_run(args);
    HS_CHECK(r.code == 0);
    CU_ASSERT_EQUAL(logs_count(r.out, "[logs-viewer-1 viewer "), logs_count(r.out, "\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "] access "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, " path=/healthz "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, " status=200 "));
out:
    json_decref(line);
    logs_free(&r);
    hs_resp_fini(&resp);
    HS_FINISH(s);
}

/* ---- following ---- */

static int logs_append(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    close(fd);
    return n == (ssize_t)len ? 0 : -EIO;
}

static char *logs_line(char *buf, size_t size, const char *msg)
{
    snprintf(buf, size,
             "{\"ts\":\"2026-11-22T11:00:00.000000Z\",\"level\":\"info\",\"msg\":\"%s\","
             "\"thread\":\"writer\",\"filler\":\"keeps the first file longer than the next\"}\n",
             msg);
    return buf;
}

/* Append the line of `msg` and wait until the follower printed it. */
static bool logs_feed(struct proc *p, const char *path, const char *msg)
{
    char line[512], want[64];
    snprintf(want, sizeof(want), " %s thread=writer", msg);
    return logs_append(path, logs_line(line, sizeof(line), msg)) == 0 &&
           proc_output_wait(p, PROC_STDOUT, want, LOGS_WAIT_MS);
}

static void test_logs_follow_rotation(void)
{
    char path[512], old[512], line[512];
    snprintf(path, sizeof(path), "%s/follow.log", logs_dir);
    snprintf(old, sizeof(old), "%s/follow.log.1", logs_dir);
    CU_ASSERT_EQUAL_FATAL(logs_append(path, logs_line(line, sizeof(line), "line-a1")), 0);
    const char *args[] = {"logs", "-f", "--color=never", path, NULL};
    struct proc *p = proc_spawn(args, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int code = -1;
    HS_CHECK(proc_output_wait(p, PROC_STDOUT, " line-a1 thread=writer", LOGS_WAIT_MS));
    HS_CHECK(logs_feed(p, path, "line-a2"));
    /* a partial line waits for its newline */
    logs_line(line, sizeof(line), "line-a3");
    size_t half = strlen(line) / 2;
    char first[512];
    memcpy(first, line, half);
    first[half] = '\0';
    HS_CHECK(logs_append(path, first) == 0);
    CU_ASSERT(!proc_output_wait(p, PROC_STDOUT, "line-a3", LOGS_QUIET_MS));
    HS_CHECK(logs_append(path, line + half) == 0);
    HS_CHECK(proc_output_wait(p, PROC_STDOUT, " line-a3 thread=writer", LOGS_WAIT_MS));
    /* rotation: rename, the writer still appends to the old file, then a new file appears */
    HS_CHECK(rename(path, old) == 0);
    HS_CHECK(logs_append(old, logs_line(line, sizeof(line), "line-b1")) == 0);
    HS_CHECK(logs_append(path, logs_line(line, sizeof(line), "line-c1")) == 0);
    HS_CHECK(logs_feed(p, path, "line-c2"));
    HS_CHECK(logs_feed(p, path, "line-c3"));
    /* truncation: the new content is shorter than what was read */
    HS_CHECK(truncate(path, 0) == 0);
    HS_CHECK(logs_append(path, "{\"level\":\"info\",\"msg\":\"line-d1\"}\n") == 0);
    HS_CHECK(proc_output_wait(p, PROC_STDOUT, " line-d1\n", LOGS_WAIT_MS));
    HS_CHECK(proc_signal(p, SIGTERM) == 0);
    HS_CHECK(proc_wait(p, LOGS_RUN_MS, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    const char *out = proc_output(p, PROC_STDOUT, NULL);
    static const char *const msgs[] = {"line-a1", "line-a2", "line-a3", "line-b1",
                                       "line-c1", "line-c2", "line-c3", "line-d1"};
    const char *prev = out;
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), " %s", msgs[i]);
        CU_ASSERT_EQUAL(logs_count(out, want), 1); /* each line once */
        const char *at = strstr(out, want);
        CU_ASSERT(at != NULL && at >= prev); /* in order: the old file is finished first */
        prev = at ? at : prev;
    }
    CU_ASSERT_EQUAL(logs_count(out, "\n"), 8);
    CU_ASSERT_STRING_EQUAL(proc_output(p, PROC_STDERR, NULL), "");
out:
    proc_free(p);
    unlink(old);
    unlink(path);
}

/* -f on a file that does not exist yet waits for it (tail -F), then follows it and its rotation. */
static void test_logs_follow_missing_file(void)
{
    char path[512], old[512], line[512];
    snprintf(path, sizeof(path), "%s/later.log", logs_dir);
    snprintf(old, sizeof(old), "%s/later.log.1", logs_dir);
    unlink(path);
    const char *args[] = {"logs", "-f", "--color=never", path, NULL};
    struct proc *p = proc_spawn(args, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int code = -1;
    HS_CHECK(proc_output_wait(p, PROC_STDERR, "does not exist yet; waiting for it", LOGS_WAIT_MS));
    CU_ASSERT_FALSE(proc_exited(p));
    HS_CHECK(logs_append(path, logs_line(line, sizeof(line), "late-a1")) == 0);
    HS_CHECK(proc_output_wait(p, PROC_STDOUT, " late-a1 thread=writer", LOGS_WAIT_MS));
    HS_CHECK(proc_output_wait(p, PROC_STDERR, "has appeared; following it", LOGS_WAIT_MS));
    HS_CHECK(logs_feed(p, path, "late-a2"));
    /* and it follows the rotation of the file it waited for */
    HS_CHECK(rename(path, old) == 0);
    HS_CHECK(logs_append(path, logs_line(line, sizeof(line), "late-b1")) == 0);
    HS_CHECK(proc_output_wait(p, PROC_STDOUT, " late-b1 thread=writer", LOGS_WAIT_MS));
    HS_CHECK(proc_signal(p, SIGTERM) == 0);
    HS_CHECK(proc_wait(p, LOGS_RUN_MS, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    const char *out = proc_output(p, PROC_STDOUT, NULL);
    CU_ASSERT_EQUAL(logs_count(out, "\n"), 3);
out:
    proc_free(p);
    unlink(old);
    unlink(path);
}

int suite_integration_logs(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_logs_pretty_and_passthrough),
        SPINDLE_TEST(test_logs_filters),
        SPINDLE_TEST(test_logs_errors),
        SPINDLE_TEST(test_logs_real_server),
        SPINDLE_TEST(test_logs_follow_rotation),
        SPINDLE_TEST(test_logs_follow_missing_file),
    };
    return SPINDLE_SUITE_ADD("integration_logs", logs_init, logs_cleanup, tests);
}
