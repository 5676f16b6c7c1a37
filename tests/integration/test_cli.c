/* test_cli.c - end-to-end tests of the spindle command line: version, help, usage errors, and
 * `serve --check-config / --print-config` on real files, run as the real binary ($SPINDLE_BIN)
 * with a time bound per run. None of these start the server.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_cli(void);

#define CLI_TIMEOUT_MS 20000

static char *cli_dir;

struct cli_result {
    int rc;   /* proc_run's return */
    int code; /* exit code */
    char *out;
    char *err;
};

static int cli_init(void)
{
    cli_dir = proc_tmpdir_new();
    return cli_dir == NULL ? -1 : 0;
}

static int cli_cleanup(void)
{
    int rc = proc_tmpdir_free(cli_dir);
    cli_dir = NULL;
    return rc;
}

static struct cli_result cli_run(const char *const *args)
{
    struct cli_result r = {0};
    r.rc = proc_run(args, CLI_TIMEOUT_MS, &r.out, &r.err, &r.code);
    CU_ASSERT_EQUAL(r.rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.err);
    return r;
}

static void cli_free(struct cli_result *r)
{
    free(r->out);
    free(r->err);
}

static const char *cli_etc_conf(char *buf, size_t size)
{
    const char *etc = getenv("SPINDLE_ETC");
    snprintf(buf, size, "%s/spindle.conf", etc && *etc ? etc : "etc");
    return buf;
}

/* The text after its first line (print's header comment names the source file). */
static const char *cli_body(const char *text)
{
    const char *nl = strchr(text, '\n');
    return nl ? nl + 1 : "";
}

static void test_cli_version(void)
{
    const char *args[] = {"version", NULL};
    struct cli_result r = cli_run(args);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(strncmp(r.out, "spindle ", 8), 0);
    CU_ASSERT(r.out[8] >= '0' && r.out[8] <= '9');
    CU_ASSERT(strchr(r.out, '\n') == r.out + strlen(r.out) - 1);
    CU_ASSERT_STRING_EQUAL(r.err, "");
    cli_free(&r);
}

static void test_cli_help(void)
{
    const char *help[] = {"help", NULL};
    const char *dash[] = {"--help", NULL};
    const char *serve_help[] = {"serve", "--help", NULL};
    const char *const *variants[] = {help, dash, serve_help};
    for (size_t i = 0; i < 3; i++) {
        struct cli_result r = cli_run(variants[i]);
        CU_ASSERT_EQUAL(r.code, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "usage: spindle"));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "serve"));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "--check-config"));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "--log-file"));
        CU_ASSERT_STRING_EQUAL(r.err, "");
        cli_free(&r);
    }
    /* No arguments: the usage goes to stderr and the exit code says it was wrong. */
    struct cli_result r = cli_run(NULL);
    CU_ASSERT_EQUAL(r.code, 2);
    CU_ASSERT_STRING_EQUAL(r.out, "");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "usage: spindle"));
    cli_free(&r);
}

static void test_cli_usage_errors(void)
{
    static const struct {
        const char *args[4];
        const char *want; /* in stderr */
    } cases[] = {
        {{"serve", "--bogus", NULL}, "unknown option \"--bogus\""},
        {{"serve", "-x", NULL}, "unknown option \"-x\""},
        {{"frobnicate", NULL}, "unknown command \"frobnicate\""},
        {{"--frobnicate", NULL}, "unknown option \"--frobnicate\""},
        {{"serve", "extra", NULL}, "unexpected argument \"extra\""},
        {{"serve", "--workers", NULL}, "missing value for option \"--workers\""},
        {{"version", "x", NULL}, "unexpected argument \"x\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cli_result r = cli_run(cases[i].args);
        CU_ASSERT_EQUAL(r.code, 2);
        CU_ASSERT_EQUAL(strncmp(r.err, "spindle: ", 9), 0);
        if (strstr(r.err, cases[i].want) == NULL)
            fprintf(stderr, "\n  want \"%s\" in \"%s\"\n", cases[i].want, r.err);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, cases[i].want));
        CU_ASSERT_STRING_EQUAL(r.out, "");
        cli_free(&r);
    }
}

static void test_cli_check_config_shipped(void)
{
    char conf[1024], want[1100];
    const char *args[] = {"serve", "--check-config", "-c", cli_etc_conf(conf, sizeof(conf)), NULL};
    struct cli_result r = cli_run(args);
    snprintf(want, sizeof(want), "%s: ok\n", conf);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, want);
    CU_ASSERT_STRING_EQUAL(r.err, "");
    cli_free(&r);

    /* Without -c the built-in defaults are checked. */
    const char *none[] = {"serve", "--check-config", NULL};
    r = cli_run(none);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "built-in defaults: ok\n");
    cli_free(&r);
}

static void test_cli_check_config_bad(void)
{
    char *path =
        proc_file_write(cli_dir, "bad.conf", "[pool]\nqueue_capacity = 8\nworkers = many\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    char want[1024];
    const char *args[] = {"serve", "--check-config", "-c", path, NULL};
    struct cli_result r = cli_run(args);
    CU_ASSERT_EQUAL(r.code, 2);
    snprintf(want, sizeof(want), "spindle: %s:3: [pool] workers: ", path);
    CU_ASSERT_EQUAL(strncmp(r.err, want, strlen(want)), 0);
    CU_ASSERT_STRING_EQUAL(r.out, "");
    cli_free(&r);

    /* The same file without --check-config fails the same way, before anything starts. */
    const char *serve[] = {"serve", "-c", path, NULL};
    r = cli_run(serve);
    CU_ASSERT_EQUAL(r.code, 2);
    CU_ASSERT_EQUAL(strncmp(r.err, want, strlen(want)), 0);
    cli_free(&r);
    free(path);

    const char *missing[] = {"serve", "--check-config", "-c", "/nonexistent/spindle.conf", NULL};
    r = cli_run(missing);
    CU_ASSERT_EQUAL(r.code, 2);
    CU_ASSERT_STRING_EQUAL(r.err, "spindle: /nonexistent/spindle.conf: cannot read: "
                                  "No such file or directory\n");
    cli_free(&r);
}

static void test_cli_workers_abc(void)
{
    const char *args[] = {"serve", "--check-config", "--workers", "abc", NULL};
    struct cli_result r = cli_run(args);
    CU_ASSERT_EQUAL(r.code, 2);
    CU_ASSERT_EQUAL(strncmp(r.err, "spindle: --workers: [pool] workers: ", 36), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "\"abc\""));
    CU_ASSERT_STRING_EQUAL(r.out, "");
    cli_free(&r);

    const char *serve[] = {"serve", "--listen", "localhost:80", NULL};
    r = cli_run(serve);
    CU_ASSERT_EQUAL(r.code, 2);
    CU_ASSERT_EQUAL(strncmp(r.err, "spindle: --listen: [server] listen: ", 36), 0);
    cli_free(&r);
}

/* --print-config shows the file with the overrides on top; its output is a valid file that
 * prints the same again. */
static void test_cli_print_config_round_trip(void)
{
    char conf[1024];
    const char *args[] = {"serve",       "--print-config",
                          "-c",          cli_etc_conf(conf, sizeof(conf)),
                          "--workers",   "3",
                          "--listen",    "127.0.0.1:0,[::1]:0",
                          "--log-level", "debug",
                          "--log-file",  "-",
                          NULL};
    struct cli_result r = cli_run(args);
    CU_ASSERT_EQUAL_FATAL(r.code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\n[pool]\nworkers = 3\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nlisten = 127.0.0.1:0, [::1]:0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nlevel = debug\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nfile = -\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nbacklog = 511\n"));
    char *printed = proc_file_write(cli_dir, "printed.conf", r.out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(printed);

    const char *check[] = {"serve", "--check-config", "-c", printed, NULL};
    struct cli_result c = cli_run(check);
    CU_ASSERT_EQUAL(c.code, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(c.out, ": ok\n"));
    cli_free(&c);

    const char *again[] = {"serve", "--print-config", "-c", printed, NULL};
    c = cli_run(again);
    CU_ASSERT_EQUAL(c.code, 0);
    CU_ASSERT_STRING_EQUAL(cli_body(c.out), cli_body(r.out));
    cli_free(&c);
    free(printed);
    cli_free(&r);
}

int suite_integration_cli(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cli_version),
        SPINDLE_TEST(test_cli_help),
        SPINDLE_TEST(test_cli_usage_errors),
        SPINDLE_TEST(test_cli_check_config_shipped),
        SPINDLE_TEST(test_cli_check_config_bad),
        SPINDLE_TEST(test_cli_workers_abc),
        SPINDLE_TEST(test_cli_print_config_round_trip),
    };
    return SPINDLE_SUITE_ADD("integration_cli", cli_init, cli_cleanup, tests);
}
