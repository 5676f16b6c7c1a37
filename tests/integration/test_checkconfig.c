/* test_checkconfig.c - `spindle serve --check-config` as an operator runs it: every error of the
 * file reported (one "spindle: FILE:LINE: ..." line each, exit 2), `#` inline comments accepted,
 * [log] file's directory checked for existence and for the user the service will run as, and a
 * schedule's tenant checked against the [tenant.NAME] sections under [auth] mode = keys. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_checkconfig(void);

#define CC_RUN_MS 30000

/* Run `spindle serve --check-config -c PATH [extra...]`; the exit code, stdout and stderr. */
static int cc_check(const char *path, const char *extra1, const char *extra2, char **out,
                    char **err)
{
    const char *args[] = {"serve", "--check-config", "-c", path, extra1, extra2, NULL};
    int code = -1;
    CU_ASSERT_EQUAL(proc_run(args, CC_RUN_MS, out, err, &code), 0);
    return code;
}

static size_t cc_lines(const char *s)
{
    size_t n = 0;
    for (; s != NULL && *s; s++)
        n += *s == '\n';
    return n;
}

static void test_checkconfig_every_error(void)
{
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char *path = proc_file_write(dir, "bad.conf",
                                 "[pool]\n"
                                 "workers = many\n"
                                 "queue_capacity = 0\n"
                                 "[server]\n"
                                 "lisen = 127.0.0.1:1\n"
                                 "[shutdwn]\n"
                                 "drain_timeout_ms = 1\n"
                                 "[log]\n"
                                 "level = loud\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL(cc_check(path, NULL, NULL, &out, &err), 2);
    CU_ASSERT_STRING_EQUAL(out, "");
    static const int lines[] = {2, 3, 5, 6, 9};
    CU_ASSERT_EQUAL(cc_lines(err), 5);
    const char *p = err;
    for (size_t i = 0; i < 5 && p != NULL; i++) {
        char want[1200];
        snprintf(want, sizeof(want), "spindle: %s:%d: ", path, lines[i]);
        CU_ASSERT_EQUAL(strncmp(p, want, strlen(want)), 0);
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    free(out);
    free(err);
    free(path);
    proc_tmpdir_free(dir);
}

static void test_checkconfig_hash_comment(void)
{
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char text[2048];
    snprintf(text, sizeof(text),
             "[pool]\nworkers = 3    # three\n[log]\nfile = %s/spindle.log # rotated\n", dir);
    char *path = proc_file_write(dir, "ok.conf", text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL(cc_check(path, NULL, NULL, &out, &err), 0);
    char want[1200];
    snprintf(want, sizeof(want), "%s: ok\n", path);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_STRING_EQUAL(err, "");
    free(out);
    free(err);
    /* --print-config shows the values without their comments. */
    const char *args[] = {"serve", "--print-config", "-c", path, NULL};
    int code = -1;
    CU_ASSERT_EQUAL(proc_run(args, CC_RUN_MS, &out, &err, &code), 0);
    CU_ASSERT_EQUAL(code, 0);
    snprintf(want, sizeof(want), "\nfile = %s/spindle.log\n", dir);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nworkers = 3\n"));
    free(out);
    free(err);
    free(path);
    proc_tmpdir_free(dir);
}

static void test_checkconfig_log_directory(void)
{
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char text[2048], *out = NULL, *err = NULL;

    /* A directory that does not exist. */
    snprintf(text, sizeof(text), "[log]\nfile = %s/missing/spindle.log\n", dir);
    char *path = proc_file_write(dir, "a.conf", text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    CU_ASSERT_EQUAL(cc_check(path, NULL, NULL, &out, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "[log] file: directory "));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/missing: No such file or directory"));
    CU_ASSERT_STRING_EQUAL(out, "");
    free(out);
    free(err);
    free(path);

    /* The directory exists (0700, ours): fine for us, not for another user. */
    snprintf(text, sizeof(text), "[log]\nfile = %s/spindle.log\n", dir);
    path = proc_file_write(dir, "b.conf", text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    CU_ASSERT_EQUAL(cc_check(path, NULL, NULL, &out, &err), 0);
    free(out);
    free(err);
    struct passwd *nobody = getpwnam("nobody");
    if (nobody != NULL && nobody->pw_uid != geteuid()) {
        CU_ASSERT_EQUAL(cc_check(path, "--user", "nobody", &out, &err), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "is not writable by nobody"));
        free(out);
        free(err);
    }
    CU_ASSERT_EQUAL(cc_check(path, "--user", "no-such-user-spindle", &out, &err), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no user \"no-such-user-spindle\""));
    free(out);
    free(err);

    /* --user only makes sense with --check-config. */
    const char *args[] = {"serve", "--print-config", "-c", path, "--user", "nobody", NULL};
    int code = -1;
    CU_ASSERT_EQUAL(proc_run(args, CC_RUN_MS, &out, &err, &code), 0);
    CU_ASSERT_EQUAL(code, 2);
    free(out);
    free(err);
    free(path);
    proc_tmpdir_free(dir);
}

/* Under [auth] mode = keys, a schedule whose tenant has no [tenant.NAME] section is refused with
 * its FILE:LINE (the tasks it enqueued could be read by no key); adding the section makes the
 * same file valid. */
static void test_checkconfig_schedule_tenant(void)
{
    static const char head[] =
        "[auth]\nmode = keys\n"
        "[tenant.acme]\n"
        "keys = sha256:aa1d6bb9048f30854e6b100a6519d5aec7429bde5654aea465437162765b807c\n"
        "[schedule.nightly]\ncron = @daily\nkind = noop\ntenant = reports\n";
    char *dir = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    char *path = proc_file_write(dir, "bad.conf", head);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    char *out = NULL, *err = NULL, want[1200];
    CU_ASSERT_EQUAL(cc_check(path, NULL, NULL, &out, &err), 2);
    snprintf(want, sizeof(want),
             "spindle: %s:8: [schedule.nightly] tenant: tenant \"reports\" has no "
             "[tenant.reports] section",
             path);
    CU_ASSERT_EQUAL(strncmp(err, want, strlen(want)), 0);
    free(out);
    free(err);
    free(path);
    char text[1024];
    snprintf(text, sizeof(text), "%s[tenant.reports]\nmax_inflight = 2\n", head);
    path = proc_file_write(dir, "ok.conf", text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    CU_ASSERT_EQUAL(cc_check(path, NULL, NULL, &out, &err), 0);
    CU_ASSERT_STRING_EQUAL(err, "");
    free(out);
    free(err);
    free(path);
    proc_tmpdir_free(dir);
}

int suite_integration_checkconfig(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_checkconfig_every_error),
        SPINDLE_TEST(test_checkconfig_hash_comment),
        SPINDLE_TEST(test_checkconfig_log_directory),
        SPINDLE_TEST(test_checkconfig_schedule_tenant),
    };
    return SPINDLE_SUITE_ADD("integration_checkconfig", NULL, NULL, tests);
}
