/* test_stderr.c - a program's stderr cut into lines (server/jobs/exec/stderr.c): lines split
 * across reads, CR LF, a line over SRV_EXEC_LINE_MAX, an unterminated last line, and the byte
 * bound on what is logged. */
#include <CUnit/CUnit.h>
#include <string.h>

#include "server/jobs/exec/internal.h"
#include "tests/suite.h"
#include "tests/unit/server/jobs/exec/support.h"

int suite_server_jobs_exec_stderr(void);

static void test_exec_lines_feed_splits(void)
{
    struct ctx *c = et_ctx("req-lines-split");
    struct ctx *prev = ctx_enter(c);
    struct exec_lines l;
    exec_lines_init(&l, "k", 42);
    exec_lines_feed(&l, "one\r\ntw", 7);
    exec_lines_feed(&l, "o\n\nthr", 6);
    exec_lines_feed(&l, "ee", 2);
    CU_ASSERT_EQUAL(l.lines, 3);
    exec_lines_end(&l); /* the unterminated "three" */
    ctx_leave(prev);
    CU_ASSERT_EQUAL(l.lines, 4);
    CU_ASSERT_STRING_EQUAL(l.last, "three");
    json_t *a = et_log_lines("req-lines-split", "job stderr");
    const char *want[] = {"one", "two", "", "three"};
    CU_ASSERT_EQUAL_FATAL(json_array_size(a), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *j = json_array_get(a, i);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "line")), want[i]);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "pid")), 42);
    }
    json_decref(a);
    ctx_unref(c);
}

/* The last non-empty line is kept for the error message, however many lines follow empty. */
static void test_exec_lines_last_nonempty(void)
{
    struct exec_lines l;
    exec_lines_init(&l, "k", 1);
    exec_lines_feed(&l, "fatal: it broke\n\n\n", 18);
    exec_lines_end(&l);
    CU_ASSERT_STRING_EQUAL(l.last, "fatal: it broke");
}

static void test_exec_lines_long_line_cut(void)
{
    struct ctx *c = et_ctx("req-lines-long");
    struct ctx *prev = ctx_enter(c);
    struct exec_lines l;
    exec_lines_init(&l, "k", 1);
    char big[SRV_EXEC_LINE_MAX + 500];
    memset(big, 'x', sizeof(big));
    exec_lines_feed(&l, big, sizeof(big));
    exec_lines_feed(&l, "\nshort\n", 7);
    exec_lines_end(&l);
    ctx_leave(prev);
    json_t *a = et_log_lines("req-lines-long", "job stderr");
    CU_ASSERT_EQUAL_FATAL(json_array_size(a), 2);
    json_t *j = json_array_get(a, 0);
    CU_ASSERT_EQUAL(strlen(json_string_value(json_object_get(j, "line"))), SRV_EXEC_LINE_MAX);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "cut_bytes")), 500);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(a, 1), "line")),
                           "short");
    json_decref(a);
    ctx_unref(c);
}

/* Few lines but many bytes: the byte bound stops the logging, the count goes on. */
static void test_exec_lines_byte_bound(void)
{
    struct ctx *c = et_ctx("req-lines-bytes");
    struct ctx *prev = ctx_enter(c);
    struct exec_lines l;
    exec_lines_init(&l, "k", 1);
    char line[SRV_EXEC_LINE_MAX + 1];
    memset(line, 'y', SRV_EXEC_LINE_MAX);
    line[SRV_EXEC_LINE_MAX] = '\n';
    size_t n = SRV_EXEC_STDERR_BYTES / SRV_EXEC_LINE_MAX + 10;
    for (size_t i = 0; i < n; i++)
        exec_lines_feed(&l, line, sizeof(line));
    exec_lines_end(&l);
    ctx_leave(prev);
    CU_ASSERT_EQUAL(l.lines, n);
    CU_ASSERT_EQUAL(l.logged_lines, SRV_EXEC_STDERR_BYTES / SRV_EXEC_LINE_MAX);
    CU_ASSERT_EQUAL(l.dropped_lines, 10);
    json_t *a = et_log_lines("req-lines-bytes", "job stderr dropped");
    CU_ASSERT_EQUAL_FATAL(json_array_size(a), 1);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_array_get(a, 0), "bytes")),
                    10 * SRV_EXEC_LINE_MAX);
    json_decref(a);
    ctx_unref(c);
}

int suite_server_jobs_exec_stderr(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_exec_lines_feed_splits),
        SPINDLE_TEST(test_exec_lines_last_nonempty),
        SPINDLE_TEST(test_exec_lines_long_line_cut),
        SPINDLE_TEST(test_exec_lines_byte_bound),
    };
    return SPINDLE_SUITE_ADD("server_jobs_exec_stderr", et_log_init, et_log_fini, tests);
}
