/* test_logsink.c - the real server logging to a sink that fails or stalls.
 *
 * A write error is never silent: with log.file = /dev/full the server says so on stderr at once,
 * counts the failed writes and the lines lost in /metrics, and still answers and stops cleanly; on
 * a full tmpfs (mounted by the test when it may, skipped with a message otherwise) the lines lost
 * are reported in the log once space comes back. A stalled sink never stalls the server: with the
 * log in a FIFO whose reader stops reading, /healthz keeps answering, the lines that could not
 * wait are counted, reported once the reader comes back, and SIGTERM still stops the server.
 *
 * Every wait is bounded (HS_IO_MS per answer, HS_STOP_MS for a stop, seconds for the rest).
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_logsink(void);

#define LS_WAIT_MS 20000 /* for the writer's retries and reports: generous, never a speed test */

/* The string field `key` of `line` is `want` (absent is not). */
static bool ls_str_is(const json_t *line, const char *key, const char *want)
{
    const char *v = hs_json_str(line, key);
    return v != NULL && strcmp(v, want) == 0;
}

/* One GET on `c`; true when it is answered 200 within HS_IO_MS. */
static bool ls_get_ok(struct hs_conn *c, const char *path)
{
    char req[128];
    struct hs_resp r = {0};
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    bool ok = hs_exchange(c, req, &r) == 0 && r.status == 200;
    hs_resp_fini(&r);
    return ok;
}

/* The value of the unlabelled metric `name` from GET /metrics on `c`, -1 when unavailable. */
static double ls_metric(struct hs_conn *c, const char *name)
{
    struct hs_resp r = {0};
    double v = -1;
    if (hs_exchange(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 && r.status == 200) {
        size_t len = strlen(name);
        for (const char *p = r.body; (p = strstr(p, name)) != NULL; p += len) {
            if ((p == r.body || p[-1] == '\n') && p[len] == ' ') {
                v = strtod(p + len + 1, NULL);
                break;
            }
        }
    }
    hs_resp_fini(&r);
    return v;
}

/* Send healthz requests on `c` until `metric` is above 0 (at most `max` requests). */
static bool ls_load_until(struct hs_conn *c, const char *metric, int max)
{
    for (int i = 0; i < max; i++) {
        if (!ls_get_ok(c, "/healthz"))
            return false;
        if (i % 50 == 49 && ls_metric(c, metric) > 0)
            return true;
    }
    return ls_metric(c, metric) > 0;
}

static bool ls_stderr_wait(struct hs_server *s, const char *needle, int timeout_ms)
{
    long long until = hs_now_ms() + timeout_ms;
    for (;;) {
        if (strstr(hs_stderr(s), needle) != NULL)
            return true;
        if (hs_now_ms() > until)
            return false;
        (void)poll(NULL, 0, 5);
    }
}

/* /dev/full: every write fails with ENOSPC. */
static void test_logsink_dev_full_is_never_silent(void)
{
    const char *const over[] = {"log.file=/dev/full", "log.buffer_bytes=64K", "log.level=info",
                                NULL};
    struct hs_server *s = hs_start_sink(over);
    struct hs_conn *c = NULL;
    HS_CHECK(s != NULL);
    /* The "spindle started" line already failed: said at once, not at exit. */
    HS_CHECK(ls_stderr_wait(s, "cannot write to /dev/full: No space left on device", LS_WAIT_MS));
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(ls_load_until(c, "spindle_log_lost_total", 5000));
    CU_ASSERT(ls_metric(c, "spindle_log_write_errors_total") > 0);
    CU_ASSERT(ls_metric(c, "spindle_log_lines_total") >= 0);
    hs_close(c);
    c = NULL;
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(hs_stderr(s), "lines lost in all writing to /dev/full"));
out:
    hs_close(c);
    HS_FINISH(s);
}

/* A 200 KiB tmpfs filled up, then given room again: the loss is reported in the log itself. */
static void test_logsink_full_tmpfs_reports_lost_lines(void)
{
    char *mnt = proc_tmpdir_new(), *filler = NULL, *log = NULL, spec[1200];
    struct hs_server *s = NULL;
    struct hs_conn *c = NULL;
    json_t *line = NULL;
    bool mounted = false;
    HS_CHECK(mnt != NULL);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=200k") != 0) {
        fprintf(stderr, "\n  skipped: cannot mount a tmpfs here (%s); /dev/full covers errors\n",
                strerror(errno));
        goto out;
    }
    mounted = true;
    HS_CHECK((filler = ops_path(mnt, "filler")) != NULL && (log = ops_path(mnt, "spindle.log")));
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    HS_CHECK(fd >= 0);
    static char block[4096];
    memset(block, 'x', sizeof(block));
    for (int i = 0; i < 40; i++) /* 160 KiB: room left for start-up, then ENOSPC */
        HS_CHECK(write(fd, block, sizeof(block)) == (ssize_t)sizeof(block));
    close(fd);
    snprintf(spec, sizeof(spec), "log.file=%s", log);
    const char *const over[] = {spec, "log.buffer_bytes=64K", "log.level=info", NULL};
    HS_CHECK((s = hs_start(over)) != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(ls_load_until(c, "spindle_log_lost_total", 20000));
    CU_ASSERT(ls_metric(c, "spindle_log_write_errors_total") > 0);
    CU_ASSERT(strstr(hs_stderr(s), "No space left on device") != NULL);
    HS_CHECK(unlink(filler) == 0); /* room again: the writer's next retry succeeds */
    HS_CHECK((line = hs_log_wait(s, "log lines lost", "error", "No space left on device",
                                 LS_WAIT_MS)) != NULL);
    CU_ASSERT(ls_str_is(line, "level", "error"));
    CU_ASSERT(hs_json_int(line, "lost", 0) > 0);
    CU_ASSERT(hs_json_int(line, "write_errors", 0) > 0);
out:
    json_decref(line);
    hs_close(c);
    if (s != NULL)
        CU_ASSERT_EQUAL(hs_stop(s), 0);
    if (mounted)
        CU_ASSERT_EQUAL(umount(mnt), 0);
    hs_free(s);
    free(filler);
    free(log);
    (void)proc_tmpdir_free(mnt);
}

/* ---- a FIFO whose reader stops ------------------------------------------------------------- */

struct ls_fifo {
    int fd;
    char *buf;
    size_t len, cap;
};

/* True when the line holding `needle` has arrived whole (its newline too). */
static bool ls_fifo_has_line(const struct ls_fifo *f, const char *needle)
{
    const char *p = f->buf != NULL ? strstr(f->buf, needle) : NULL;
    return p != NULL && strchr(p, '\n') != NULL;
}

/* Read what the FIFO holds until the line holding `needle` is in it, whole, or `timeout_ms`
 * passes (the writer may have written only part of it so far). */
static bool ls_fifo_read_until(struct ls_fifo *f, const char *needle, int timeout_ms)
{
    long long until = hs_now_ms() + timeout_ms;
    while (!ls_fifo_has_line(f, needle)) {
        long long left = until - hs_now_ms();
        if (left <= 0)
            return false;
        if (f->cap - f->len < 65537) {
            char *b = realloc(f->buf, f->cap + (1 << 20));
            if (b == NULL)
                return false;
            f->buf = b;
            f->cap += 1 << 20;
        }
        struct pollfd p = {.fd = f->fd, .events = POLLIN};
        (void)poll(&p, 1, left > 100 ? 100 : (int)left);
        ssize_t n = read(f->fd, f->buf + f->len, f->cap - f->len - 1);
        if (n > 0)
            f->len += (size_t)n;
        f->buf[f->len] = '\0';
    }
    return true;
}

/* The complete line holding `needle` parsed (new reference), NULL when there is none. */
static json_t *ls_fifo_line(const struct ls_fifo *f, const char *needle)
{
    const char *p = f->buf != NULL ? strstr(f->buf, needle) : NULL;
    if (p == NULL)
        return NULL;
    const char *start = p, *end = strchr(p, '\n');
    while (start > f->buf && start[-1] != '\n')
        start--;
    return end != NULL ? json_loadb(start, (size_t)(end - start), 0, NULL) : NULL;
}

static void test_logsink_stalled_fifo_keeps_serving(void)
{
    char *dir = proc_tmpdir_new(), *fifo = NULL, spec[1200];
    struct ls_fifo f = {.fd = -1};
    struct hs_server *s = NULL;
    struct hs_conn *c = NULL;
    json_t *line = NULL;
    HS_CHECK(dir != NULL && (fifo = ops_path(dir, "log.fifo")) != NULL);
    HS_CHECK(mkfifo(fifo, 0600) == 0);
    HS_CHECK((f.fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) >= 0);
    snprintf(spec, sizeof(spec), "log.file=%s", fifo);
    const char *const over[] = {spec, "log.buffer_bytes=64K", "log.level=info", NULL};
    HS_CHECK((s = hs_start_sink(over)) != NULL);
    HS_CHECK(ls_fifo_read_until(&f, "\"msg\":\"listening\"", LS_WAIT_MS));

    /* The reader stops: 64 KiB of pipe and 64 KiB of ring fill up; every answer still comes. */
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(ls_load_until(c, "spindle_log_lost_total", 5000));
    for (int i = 0; i < 20; i++)
        HS_CHECK(ls_get_ok(c, "/healthz"));

    /* The reader is back: what was held is written, then the loss is reported. */
    HS_CHECK(ls_fifo_read_until(&f, "\"msg\":\"log lines lost\"", LS_WAIT_MS));
    HS_CHECK(ls_fifo_read_until(&f, "\"msg\":\"log lines lost\"", 0) &&
             (line = ls_fifo_line(&f, "\"msg\":\"log lines lost\"")) != NULL);
    CU_ASSERT(ls_str_is(line, "level", "error"));
    CU_ASSERT(hs_json_int(line, "lost", 0) > 0);
    CU_ASSERT_PTR_NOT_NULL(hs_json_str(line, "error"));

    /* Stalled again, then SIGTERM: the stop is bounded and clean. */
    for (int i = 0; i < 1000; i++)
        HS_CHECK(ls_get_ok(c, "/healthz"));
    hs_close(c);
    c = NULL;
    CU_ASSERT_EQUAL(hs_stop(s), 0);
out:
    json_decref(line);
    hs_close(c);
    HS_FINISH(s);
    if (f.fd >= 0)
        close(f.fd);
    free(f.buf);
    free(fifo);
    (void)proc_tmpdir_free(dir);
}

int suite_integration_logsink(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_logsink_dev_full_is_never_silent),
        SPINDLE_TEST(test_logsink_full_tmpfs_reports_lost_lines),
        SPINDLE_TEST(test_logsink_stalled_fifo_keeps_serving),
    };
    return SPINDLE_SUITE_ADD("integration_logsink", NULL, NULL, tests);
}
