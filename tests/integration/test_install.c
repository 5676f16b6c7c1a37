/* test_install.c - `make install` into a temporary DESTDIR, and the installed files checked by
 * their own tools: systemd-analyze verify (unit and socket), logrotate -d, systemd-sysusers and
 * systemd-tmpfiles (user and directories), groff (man pages), spindle serve --check-config.
 *
 * Design: each test runs `make -C REPO install DESTDIR=TMP PREFIX=/usr INSTALL_BIN=$SPINDLE_BIN`
 * (REPO is the parent of $SPINDLE_ETC, which the Makefile's test rule sets), so the binary under
 * test is the one installed and no release build is made. The make variables of the `make test`
 * that runs this suite (TESTS=, VARIANT=, the jobserver) are cleared from the child's
 * environment. Everything the tools touch is under TMP: systemd-analyze, systemd-sysusers and
 * systemd-tmpfiles get --root=TMP, logrotate a state file in TMP. systemd-analyze verify needs
 * the units the service depends on (sysinit.target, ...) and the ExecReload= program inside that
 * root: the test copies the machine's own into TMP/lib/systemd/system and TMP/bin, as a real
 * system root has them next to the installed /usr/lib/systemd/system.
 *
 * Every child is bounded (IN_RUN_MS); nothing here waits on timing.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_install(void);

#define IN_RUN_MS 120000 /* one make or tool run; generous for a loaded machine */

/* What `make install PREFIX=/usr` puts under DESTDIR (the configuration comes on its own). */
static const char *const in_files[] = {
    "usr/bin/spindle",
    "usr/share/man/man8/spindle.8",
    "usr/share/man/man1/spindle-call.1",
    "usr/share/man/man1/spindle-logs.1",
    "usr/share/doc/spindle/README.md",
    "usr/lib/systemd/system/spindle.service",
    "usr/lib/systemd/system/spindle.socket",
    "usr/lib/sysusers.d/spindle.conf",
    "usr/lib/tmpfiles.d/spindle.conf",
    "etc/logrotate.d/spindle",
};
#define IN_CONF "etc/spindle/spindle.conf"
#define IN_LOG  "/var/log/spindle/spindle.log"

/* A new string made like printf; NULL when out of memory. */
static char *in_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

static bool in_exists(const char *root, const char *rel)
{
    char *p = in_fmt("%s/%s", root, rel);
    struct stat st;
    bool ok = p != NULL && lstat(p, &st) == 0;
    free(p);
    return ok;
}

/* Run `exe` with `args` (NULL-terminated, without argv[0]) within IN_RUN_MS, without the make
 * variables of the calling make. Returns the exit code (-1 when it could not run or timed out);
 * *out and *err (may be NULL) get new strings with what it wrote, "" when nothing. A failure is
 * described on stderr unless `quiet` (the test expects it). */
static int in_run_q(const char *exe, const char *const *args, char **out, char **err, bool quiet)
{
    static const char *const env[] = {
        "MAKEFLAGS=", "MFLAGS=", "MAKELEVEL=", "MAKEOVERRIDES=", "LC_ALL=C", NULL};
    if (out != NULL)
        *out = NULL;
    if (err != NULL)
        *err = NULL;
    struct proc *p = proc_spawn_exe(exe, args, env);
    if (p == NULL) {
        fprintf(stderr, "\n  cannot run %s: %s\n", exe, strerror(errno));
        return -1;
    }
    int code = -1;
    int rc = proc_wait(p, IN_RUN_MS, &code);
    const char *o = proc_output(p, PROC_STDOUT, NULL);
    const char *e = proc_output(p, PROC_STDERR, NULL);
    if (!quiet && (rc != 0 || code != 0))
        fprintf(stderr, "\n  %s %s: exit %d (wait %d)\n  stdout: %s\n  stderr: %s\n", exe,
                args[0] != NULL ? args[0] : "", code, rc, o, e);
    if (out != NULL)
        *out = strdup(o);
    if (err != NULL)
        *err = strdup(e);
    proc_free(p);
    return rc != 0 ? -1 : code;
}

static int in_run(const char *exe, const char *const *args, char **out, char **err)
{
    return in_run_q(exe, args, out, err, false);
}

/* `make -s -C REPO TARGET DESTDIR=root PREFIX=/usr INSTALL_BIN=$SPINDLE_BIN`; its exit code. */
static int in_make(const char *target, const char *root, char **out)
{
    const char *etc = getenv("SPINDLE_ETC");
    const char *bin = proc_bin();
    if (etc == NULL || bin == NULL) {
        fprintf(stderr, "\n  SPINDLE_ETC and SPINDLE_BIN must be set (make test sets them)\n");
        return -1;
    }
    char *etc_copy = strdup(etc);
    char *repo = etc_copy != NULL ? strdup(dirname(etc_copy)) : NULL;
    char *destdir = in_fmt("DESTDIR=%s", root);
    char *install_bin = in_fmt("INSTALL_BIN=%s", bin);
    int code = -1;
    if (repo != NULL && destdir != NULL && install_bin != NULL) {
        const char *args[] = {"-s", "-C", repo, target, destdir, "PREFIX=/usr", install_bin, NULL};
        code = in_run("make", args, out, NULL);
    }
    free(install_bin);
    free(destdir);
    free(repo);
    free(etc_copy);
    return code;
}

/* A temporary directory with spindle installed in it (caller frees with proc_tmpdir_free), or
 * NULL after a failed assertion. */
static char *in_install(void)
{
    char *root = proc_tmpdir_new();
    CU_ASSERT_PTR_NOT_NULL(root);
    if (root == NULL)
        return NULL;
    int code = in_make("install", root, NULL);
    CU_ASSERT_EQUAL(code, 0);
    if (code != 0) {
        (void)proc_tmpdir_free(root);
        return NULL;
    }
    return root;
}

/* The value of the first line "KEY = VALUE" of `ini` as a new string, NULL when absent. */
static char *in_ini_value(const char *ini, const char *key)
{
    size_t klen = strlen(key);
    for (const char *l = ini; l != NULL && *l != '\0'; l = strchr(l, '\n'), l = l ? l + 1 : l) {
        if (strncmp(l, key, klen) == 0 && strncmp(l + klen, " = ", 3) == 0) {
            const char *v = l + klen + 3;
            return strndup(v, strcspn(v, "\n"));
        }
    }
    return NULL;
}

/* Every "--option" of `help` appears in the roff source `man` (written with \-\-). */
static bool in_man_covers(const char *man, const char *help, const char *name)
{
    bool ok = true;
    for (const char *p = strstr(help, "--"); p != NULL; p = strstr(p + 2, "--")) {
        size_t n = 2 + strspn(p + 2, "abcdefghijklmnopqrstuvwxyz-");
        if (n == 2)
            continue;
        char roff[128] = "";
        size_t o = 0;
        for (size_t i = 0; i < n && o + 3 < sizeof(roff); i++) {
            if (p[i] == '-')
                roff[o++] = '\\';
            roff[o++] = p[i];
        }
        roff[o] = '\0';
        if (strstr(man, roff) == NULL) {
            fprintf(stderr, "\n  %s does not document %.*s\n", name, (int)n, p);
            ok = false;
        }
    }
    return ok;
}

/* The installed tree: every file at its FHS place, the unit naming the installed paths, the
 * configuration logging where the logrotate file rotates and passing --check-config, the man
 * pages clean under groff and documenting every option of the --help they describe. */
static void test_install_files(void)
{
    char *root = in_install(), *unit = NULL, *conf = NULL, *out = NULL, *err = NULL;
    char *bin = NULL, *conf_path = NULL, *log = NULL;
    if (root == NULL)
        return;
    for (size_t i = 0; i < sizeof(in_files) / sizeof(in_files[0]); i++) {
        bool there = in_exists(root, in_files[i]);
        if (!there)
            fprintf(stderr, "\n  not installed: %s\n", in_files[i]);
        CU_ASSERT(there);
    }
    bin = in_fmt("%s/usr/bin/spindle", root);
    conf_path = in_fmt("%s/" IN_CONF, root);
    char *unit_path = in_fmt("%s/usr/lib/systemd/system/spindle.service", root);
    HS_CHECK(bin != NULL && conf_path != NULL && unit_path != NULL);
    struct stat st;
    HS_CHECK(stat(bin, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0755);
    unit = ops_file_read(unit_path);
    free(unit_path);
    HS_CHECK(unit != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(unit, "\nExecStart=/usr/bin/spindle serve -c "
                                        "/etc/spindle/spindle.conf\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(unit, "file:///usr/share/doc/spindle/README.md"));
    CU_ASSERT_PTR_NULL(strstr(unit, "/usr/local"));

    /* the installed configuration: logs to the rotated file, checks, and loads as installed */
    conf = ops_file_read(conf_path);
    HS_CHECK(conf != NULL);
    CU_ASSERT(stat(conf_path, &st) == 0 && (st.st_mode & 07777) == 0644);
    log = in_ini_value(conf, "file");
    HS_CHECK(log != NULL);
    CU_ASSERT_STRING_EQUAL(log, IN_LOG);
    CU_ASSERT_PTR_NOT_NULL(strstr(conf, "\nstore = /var/lib/spindle/tasks.db\n"));
    /* --check-config also wants [log] file's directory: /var/log/spindle exists only once
     * systemd-tmpfiles ran on the real root (test_install_user_and_dirs checks it in DESTDIR), so
     * the file's own checks run here with the log on stderr. */
    const char *check[] = {"serve", "--check-config", "-c", conf_path, "--log-file", "-", NULL};
    CU_ASSERT_EQUAL(in_run(bin, check, &out, NULL), 0);
    HS_CHECK(out != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ": ok"));
    free(out);
    out = NULL;
    const char *print[] = {"serve", "--print-config", "-c", conf_path, NULL};
    CU_ASSERT_EQUAL(in_run(bin, print, &out, NULL), 0);
    HS_CHECK(out != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nfile = " IN_LOG "\n"));

    /* man pages: no groff warning, every option of the matching --help */
    static const struct {
        const char *page, *cmd;
    } pages[] = {
        {"usr/share/man/man8/spindle.8", "help"},
        {"usr/share/man/man1/spindle-call.1", "call"},
        {"usr/share/man/man1/spindle-logs.1", "logs"},
    };
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        char *page = in_fmt("%s/%s", root, pages[i].page);
        char *src = page != NULL ? ops_file_read(page) : NULL;
        char *help = NULL, *gout = NULL, *gerr = NULL;
        const char *groff[] = {"-man", "-Tutf8", "-ww", "-z", page, NULL};
        const char *cmd_help[] = {pages[i].cmd, "--help", NULL};
        const char *top_help[] = {"help", NULL};
        CU_ASSERT_PTR_NOT_NULL(src);
        CU_ASSERT_EQUAL(in_run("groff", groff, &gout, &gerr), 0);
        if (gerr != NULL && gerr[0] != '\0')
            fprintf(stderr, "\n  groff %s: %s\n", pages[i].page, gerr);
        CU_ASSERT(gerr != NULL && gerr[0] == '\0');
        bool top = strcmp(pages[i].cmd, "help") == 0;
        CU_ASSERT_EQUAL(in_run(bin, top ? top_help : cmd_help, &help, NULL), 0);
        CU_ASSERT(src != NULL && help != NULL && in_man_covers(src, help, pages[i].page));
        free(help);
        free(gout);
        free(gerr);
        free(src);
        free(page);
    }
out:
    free(log);
    free(err);
    free(out);
    free(conf);
    free(unit);
    free(conf_path);
    free(bin);
    (void)proc_tmpdir_free(root);
}

/* systemd-analyze verify on the installed unit and socket, inside the DESTDIR as the root. */
static void test_install_systemd_verify(void)
{
    char *root = in_install(), *units = NULL, *bindir = NULL, *svc = NULL, *sock = NULL;
    char *root_opt = NULL, *out = NULL, *err = NULL;
    if (root == NULL)
        return;
    units = in_fmt("%s/lib/systemd/system", root);
    bindir = in_fmt("%s/bin", root);
    svc = in_fmt("%s/usr/lib/systemd/system/spindle.service", root);
    sock = in_fmt("%s/usr/lib/systemd/system/spindle.socket", root);
    root_opt = in_fmt("--root=%s", root);
    HS_CHECK(units != NULL && bindir != NULL && svc != NULL && sock != NULL && root_opt != NULL);
    /* what a real root has besides spindle: the system's units and /bin/kill (ExecReload=) */
    const char *mkdir_args[] = {"-p", units, bindir, NULL};
    HS_CHECK(in_run("mkdir", mkdir_args, NULL, NULL) == 0);
    const char *cp_units[] = {"-a", "/usr/lib/systemd/system/.", units, NULL};
    HS_CHECK(in_run("cp", cp_units, NULL, NULL) == 0);
    const char *cp_kill[] = {"/bin/kill", bindir, NULL};
    HS_CHECK(in_run("cp", cp_kill, NULL, NULL) == 0);

    const char *verify[] = {"verify", "--man=no", root_opt, svc, sock, NULL};
    CU_ASSERT_EQUAL(in_run("systemd-analyze", verify, &out, &err), 0);
    HS_CHECK(err != NULL);
    if (err[0] != '\0')
        fprintf(stderr, "\n  systemd-analyze verify: %s\n", err);
    CU_ASSERT_STRING_EQUAL(err, "");

    /* the check is real: without the binary at the unit's ExecStart= path it fails */
    free(out);
    free(err);
    out = err = NULL;
    char *bin = in_fmt("%s/usr/bin/spindle", root);
    HS_CHECK(bin != NULL);
    CU_ASSERT_EQUAL(unlink(bin), 0);
    free(bin);
    CU_ASSERT_NOT_EQUAL(in_run_q("systemd-analyze", verify, &out, &err, true), 0);
    CU_ASSERT(err != NULL && strstr(err, "/usr/bin/spindle") != NULL);
out:
    free(err);
    free(out);
    free(root_opt);
    free(sock);
    free(svc);
    free(bindir);
    free(units);
    (void)proc_tmpdir_free(root);
}

/* logrotate -d on the installed file: no error, and it rotates the installed config's log. */
static void test_install_logrotate(void)
{
    char *root = in_install(), *file = NULL, *state = NULL, *out = NULL, *err = NULL;
    char *conf = NULL, *conf_path = NULL, *log = NULL, *pattern = NULL;
    if (root == NULL)
        return;
    file = in_fmt("%s/etc/logrotate.d/spindle", root);
    state = in_fmt("%s/logrotate.status", root);
    conf_path = in_fmt("%s/" IN_CONF, root);
    HS_CHECK(file != NULL && state != NULL && conf_path != NULL);
    const char *args[] = {"-d", "-s", state, file, NULL};
    CU_ASSERT_EQUAL(in_run("logrotate", args, &out, &err), 0);
    HS_CHECK(out != NULL && err != NULL);
    /* logrotate -d writes its report on stderr; an error there exits 0 in some versions */
    CU_ASSERT_PTR_NULL(strstr(err, "error"));
    CU_ASSERT_PTR_NULL(strstr(out, "error"));
    conf = ops_file_read(conf_path);
    log = conf != NULL ? in_ini_value(conf, "file") : NULL;
    HS_CHECK(log != NULL);
    pattern = in_fmt("rotating pattern: %s ", log);
    HS_CHECK(pattern != NULL);
    if (strstr(err, pattern) == NULL)
        fprintf(stderr, "\n  logrotate does not rotate %s:\n%s\n", log, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, pattern));
out:
    free(pattern);
    free(log);
    free(conf);
    free(conf_path);
    free(err);
    free(out);
    free(state);
    free(file);
    (void)proc_tmpdir_free(root);
}

/* systemd-sysusers and systemd-tmpfiles on the installed entries make the system user spindle
 * (no login) and /var/lib/spindle, /var/log/spindle owned by it. */
static void test_install_user_and_dirs(void)
{
    char *root = in_install(), *root_opt = NULL, *passwd_path = NULL, *passwd = NULL;
    if (root == NULL)
        return;
    root_opt = in_fmt("--root=%s", root);
    passwd_path = in_fmt("%s/etc/passwd", root);
    HS_CHECK(root_opt != NULL && passwd_path != NULL);
    const char *sysusers[] = {root_opt, NULL};
    CU_ASSERT_EQUAL(in_run("systemd-sysusers", sysusers, NULL, NULL), 0);
    passwd = ops_file_read(passwd_path);
    HS_CHECK(passwd != NULL);
    const char *line = strstr(passwd, "spindle:x:");
    HS_CHECK(line == passwd || (line != NULL && line[-1] == '\n'));
    unsigned uid = 0, gid = 0;
    HS_CHECK(sscanf(line, "spindle:x:%u:%u:", &uid, &gid) == 2);
    CU_ASSERT(uid > 0 && uid < 1000); /* a system user */
    size_t len = strcspn(line, "\n");
    CU_ASSERT(len > 22 && strncmp(line + len - 18, ":/usr/sbin/nologin", 18) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, ":/var/lib/spindle:"));

    const char *tmpfiles[] = {"--create", root_opt, NULL};
    CU_ASSERT_EQUAL(in_run("systemd-tmpfiles", tmpfiles, NULL, NULL), 0);
    static const char *const dirs[] = {"var/lib/spindle", "var/log/spindle"};
    for (size_t i = 0; i < 2; i++) {
        char *d = in_fmt("%s/%s", root, dirs[i]);
        struct stat st;
        bool ok = d != NULL && stat(d, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == uid &&
                  st.st_gid == gid;
        if (!ok)
            fprintf(stderr, "\n  %s missing or not owned by spindle (%u:%u)\n", dirs[i], uid, gid);
        CU_ASSERT(ok);
        free(d);
    }
out:
    free(passwd);
    free(passwd_path);
    free(root_opt);
    (void)proc_tmpdir_free(root);
}

static size_t in_files_left;
static int in_count_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_F || flag == FTW_SL) {
        fprintf(stderr, "\n  left after uninstall: %s\n", path);
        in_files_left++;
    }
    return 0;
}

/* A second install keeps a changed configuration; uninstall removes every installed file but
 * that configuration; an unchanged one goes too, and nothing is left. */
static void test_install_keep_config_and_uninstall(void)
{
    char *root = in_install(), *conf_path = NULL, *changed = NULL, *now = NULL, *out = NULL;
    if (root == NULL)
        return;
    conf_path = in_fmt("%s/" IN_CONF, root);
    HS_CHECK(conf_path != NULL);
    char *orig = ops_file_read(conf_path);
    HS_CHECK(orig != NULL);
    changed = in_fmt("%s\n[tenant.ops]\nweight = 2\n", orig);
    free(orig);
    HS_CHECK(changed != NULL);
    FILE *f = fopen(conf_path, "we");
    HS_CHECK(f != NULL);
    fputs(changed, f);
    HS_CHECK(fclose(f) == 0);

    CU_ASSERT_EQUAL(in_make("install", root, &out), 0);
    CU_ASSERT(out != NULL && strstr(out, "kept") != NULL);
    now = ops_file_read(conf_path);
    CU_ASSERT(now != NULL && strcmp(now, changed) == 0);
    free(now);
    free(out);
    out = NULL;

    CU_ASSERT_EQUAL(in_make("uninstall", root, &out), 0);
    for (size_t i = 0; i < sizeof(in_files) / sizeof(in_files[0]); i++) {
        bool gone = !in_exists(root, in_files[i]);
        if (!gone)
            fprintf(stderr, "\n  not uninstalled: %s\n", in_files[i]);
        CU_ASSERT(gone);
    }
    now = ops_file_read(conf_path);
    CU_ASSERT(now != NULL && strcmp(now, changed) == 0);
    free(now);

    /* unchanged: uninstall removes it and its directory too */
    CU_ASSERT_EQUAL(unlink(conf_path), 0);
    CU_ASSERT_EQUAL(in_make("install", root, NULL), 0);
    CU_ASSERT(in_exists(root, IN_CONF));
    CU_ASSERT_EQUAL(in_make("uninstall", root, NULL), 0);
    CU_ASSERT(!in_exists(root, "etc/spindle"));
    in_files_left = 0;
    CU_ASSERT_EQUAL(nftw(root, in_count_file, 16, FTW_PHYS), 0);
    CU_ASSERT_EQUAL(in_files_left, 0);
out:
    free(out);
    free(changed);
    free(conf_path);
    (void)proc_tmpdir_free(root);
}

int suite_integration_install(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_install_files),
        SPINDLE_TEST(test_install_systemd_verify),
        SPINDLE_TEST(test_install_logrotate),
        SPINDLE_TEST(test_install_user_and_dirs),
        SPINDLE_TEST(test_install_keep_config_and_uninstall),
    };
    return SPINDLE_SUITE_ADD("integration_install", NULL, NULL, tests);
}
