/* test_logs.c - the pure parts of `spindle logs`: level ranks, the command line, and the
 * formatting and filtering of one line (colours off and on, lines that are not JSON).
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/internal.h"
#include "tests/suite.h"

int suite_cli_logs(void);

static const char logs_access[] =
    "{\"ts\":\"2026-11-22T03:53:05.700421Z\",\"level\":\"info\",\"msg\":\"access\","
    "\"thread\":\"loop\",\"request_id\":\"r1\",\"tenant\":\"acme\","
    "\"trace_id\":\"90497688f52856272df35af14134481e\",\"span_id\":\"50799c750725572c\","
    "\"method\":\"POST\",\"status\":200,\"total_ms\":0.357,\"peer\":\"127.0.0.1:40618\","
    "\"note\":\"two words\",\"empty\":\"\",\"obj\":{\"a\":[1,true]},\"none\":null}";

static const struct cli_logs_opts logs_nofilter = {.min_level = -1};

/* Print `line` with `o` into a new string (caller frees); *rc gets the return value. */
static char *logs_fmt(const struct cli_logs_opts *o, bool color, const char *line, int *rc)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    *rc = cli_logs_line_print(o, color, line, strlen(line), f);
    CU_ASSERT_EQUAL(fclose(f), 0);
    return s;
}

static void test_cli_log_level_rank_names(void)
{
    CU_ASSERT_EQUAL(cli_log_level_rank("trace"), 0);
    CU_ASSERT_EQUAL(cli_log_level_rank("debug"), 1);
    CU_ASSERT_EQUAL(cli_log_level_rank("INFO"), 2);
    CU_ASSERT_EQUAL(cli_log_level_rank("warn"), 3);
    CU_ASSERT_EQUAL(cli_log_level_rank("warning"), 3);
    CU_ASSERT_EQUAL(cli_log_level_rank("error"), 4);
    CU_ASSERT_EQUAL(cli_log_level_rank("fatal"), 5);
    CU_ASSERT_EQUAL(cli_log_level_rank("loud"), -1);
    CU_ASSERT_EQUAL(cli_log_level_rank(NULL), -1);
}

static int logs_parse(struct cli_logs_opts *o, char *err, int argc, ...)
{
    char *argv[16];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return cli_logs_args_parse(argc, argv, o, err, 256);
}

static void test_cli_logs_args_parse_options(void)
{
    struct cli_logs_opts o;
    char err[256];
    CU_ASSERT_EQUAL(logs_parse(&o, err, 1, "logs"), 0);
    CU_ASSERT_PTR_NULL(o.path);
    CU_ASSERT(!o.follow);
    CU_ASSERT_EQUAL(o.min_level, -1);
    CU_ASSERT_EQUAL(o.color, CLI_COLOR_AUTO);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 9, "logs", "spindle.log", "-f", "--request-id", "r1",
                               "--tenant", "acme", "--level", "warn"),
                    0);
    CU_ASSERT_STRING_EQUAL(o.path, "spindle.log");
    CU_ASSERT(o.follow);
    CU_ASSERT_STRING_EQUAL(o.request_id, "r1");
    CU_ASSERT_STRING_EQUAL(o.tenant, "acme");
    CU_ASSERT_EQUAL(o.min_level, 3);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "--color=never"), 0);
    CU_ASSERT_EQUAL(o.color, CLI_COLOR_NEVER);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "--color"), 0);
    CU_ASSERT_EQUAL(o.color, CLI_COLOR_ALWAYS);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "--color=auto"), 0);
    CU_ASSERT_EQUAL(o.color, CLI_COLOR_AUTO);
}

static void test_cli_logs_args_parse_errors(void)
{
    struct cli_logs_opts o;
    char err[256];
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "-f"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "-f needs a FILE"));
    CU_ASSERT_EQUAL(logs_parse(&o, err, 3, "logs", "-f", "-"), -EINVAL);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 3, "logs", "--level", "loud"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "loud"));
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "--color=sometimes"), -EINVAL);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 3, "logs", "a.log", "b.log"), -EINVAL);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "--bogus"), -EINVAL);
    CU_ASSERT_EQUAL(logs_parse(&o, err, 2, "logs", "--tenant"), -EINVAL);
}

static void test_cli_logs_line_print_plain(void)
{
    int rc;
    char *s = logs_fmt(&logs_nofilter, false, logs_access, &rc);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_STRING_EQUAL(s, "03:53:05.700 INFO  [r1 acme 90497688] access thread=loop "
                              "method=POST status=200 total_ms=0.357 peer=127.0.0.1:40618 "
                              "note=\"two words\" empty=\"\" obj={\"a\":[1,true]} none=null\n");
    free(s);
}

static void test_cli_logs_line_print_no_ids(void)
{
    int rc;
    const char *line = "{\"ts\":\"2026-11-22T03:53:05.7Z\",\"level\":\"error\","
                       "\"msg\":\"two\\nlines\",\"thread\":\"main\"}";
    char *s = logs_fmt(&logs_nofilter, false, line, &rc);
    CU_ASSERT_EQUAL(rc, 1);
    /* a short ts is cut to the second; a message with a newline is quoted */
    CU_ASSERT_STRING_EQUAL(s, "03:53:05 ERROR \"two\\nlines\" thread=main\n");
    free(s);
    s = logs_fmt(&logs_nofilter, false, "{\"ts\":\"yesterday\",\"level\":\"chatty\",\"msg\":\"m\"}",
                 &rc);
    CU_ASSERT_STRING_EQUAL(s, "yesterday chatty m\n");
    free(s);
}

static void test_cli_logs_line_print_colors(void)
{
    int rc;
    char *s = logs_fmt(&logs_nofilter, true, logs_access, &rc);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\033[32mINFO \033[0m"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "access"));
    free(s);
    const char *warn = "{\"ts\":\"2026-11-22T03:53:05.700421Z\",\"level\":\"warn\",\"msg\":\"w\"}";
    s = logs_fmt(&logs_nofilter, true, warn, &rc);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\033[33mWARN \033[0m"));
    free(s);
    const char *err = "{\"ts\":\"2026-11-22T03:53:05.700421Z\",\"level\":\"error\",\"msg\":\"e\"}";
    s = logs_fmt(&logs_nofilter, true, err, &rc);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\033[31mERROR\033[0m"));
    free(s);
    s = logs_fmt(&logs_nofilter, false, err, &rc);
    CU_ASSERT_PTR_NULL(strchr(s, '\033'));
    free(s);
}

static void test_cli_logs_line_print_filters(void)
{
    int rc;
    struct cli_logs_opts o = {.min_level = -1, .request_id = "r1"};
    char *s = logs_fmt(&o, false, logs_access, &rc);
    CU_ASSERT_EQUAL(rc, 1);
    free(s);
    o.request_id = "r2";
    s = logs_fmt(&o, false, logs_access, &rc);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(s, "");
    free(s);
    o = (struct cli_logs_opts){.min_level = -1, .tenant = "acme"};
    s = logs_fmt(&o, false, logs_access, &rc);
    CU_ASSERT_EQUAL(rc, 1);
    free(s);
    o.tenant = "acm"; /* exact, not a prefix */
    s = logs_fmt(&o, false, logs_access, &rc);
    CU_ASSERT_EQUAL(rc, 0);
    free(s);
    o = (struct cli_logs_opts){.min_level = 3};
    s = logs_fmt(&o, false, logs_access, &rc); /* info < warn */
    CU_ASSERT_EQUAL(rc, 0);
    free(s);
    s = logs_fmt(&o, false, "{\"level\":\"error\",\"msg\":\"x\"}", &rc);
    CU_ASSERT_EQUAL(rc, 1);
    free(s);
    s = logs_fmt(&o, false, "{\"level\":\"warn\",\"msg\":\"x\"}", &rc);
    CU_ASSERT_EQUAL(rc, 1);
    free(s);
    s = logs_fmt(&o, false, "{\"msg\":\"no level\"}", &rc);
    CU_ASSERT_EQUAL(rc, 0);
    free(s);
}

static void test_cli_logs_line_print_malformed(void)
{
    static const char *const lines[] = {
        "plain text from a shell script",
        "{\"ts\":\"2026-11-22T03:53:05Z\",",
        "[1,2]",
        "42",
        "",
        "{\"broken\":}",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        int rc;
        char *s = logs_fmt(&logs_nofilter, true, lines[i], &rc);
        CU_ASSERT_EQUAL(rc, 1);
        char want[128];
        snprintf(want, sizeof(want), "%s\n", lines[i]);
        CU_ASSERT_STRING_EQUAL(s, want); /* unchanged, no colour */
        free(s);
        struct cli_logs_opts o = {.min_level = 0};
        s = logs_fmt(&o, false, lines[i], &rc);
        CU_ASSERT_EQUAL(rc, 0); /* a filter cannot judge them: hidden */
        CU_ASSERT_STRING_EQUAL(s, "");
        free(s);
    }
}

int suite_cli_logs(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cli_log_level_rank_names),
        SPINDLE_TEST(test_cli_logs_args_parse_options),
        SPINDLE_TEST(test_cli_logs_args_parse_errors),
        SPINDLE_TEST(test_cli_logs_line_print_plain),
        SPINDLE_TEST(test_cli_logs_line_print_no_ids),
        SPINDLE_TEST(test_cli_logs_line_print_colors),
        SPINDLE_TEST(test_cli_logs_line_print_filters),
        SPINDLE_TEST(test_cli_logs_line_print_malformed),
    };
    return SPINDLE_SUITE_ADD("cli_logs", NULL, NULL, tests);
}
