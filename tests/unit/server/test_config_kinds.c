/* test_config_kinds.c - unit tests for server/config_kinds.c: [kind.NAME] sections (values,
 * defaults, errors with FILE:LINE and key, exec-only keys, print round-trip), the `params =`
 * declarations, and what a reload keeps (a changed module kind stays as it runs).
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/config.h"
#include "tests/suite.h"
#include "tests/unit/server/config_cases.h"

int suite_server_config_kinds(void);

/* Load `content`; expect `rc` and, when `want` is set, err == PATH + want (first line). */
static struct srv_cfg *tk_load(const char *content, int rc, const char *want)
{
    struct srv_cfg *cfg = malloc(sizeof(*cfg));
    char err[1024] = "";
    CU_ASSERT_FATAL(cfg != NULL);
    srv_cfg_defaults(cfg);
    char *path = tc_file(content);
    int got = srv_cfg_load(path, cfg, err, sizeof(err));
    CU_ASSERT_EQUAL(got, rc);
    if (want != NULL) {
        CU_ASSERT(tc_err_is(err, path, want));
    } else if (got != 0) {
        fprintf(stderr, "\n  unexpected error: %s\n", err);
    }
    free(path);
    return cfg;
}

static void test_srv_cfg_kind_module_and_exec(void)
{
    struct srv_cfg *cfg = tk_load("[kind.wordfreq]\n"
                                  "module = /usr/lib/spindle/wordfreq.so\n"
                                  "max_inflight = 4\n"
                                  "timeout_ms = 5000\n"
                                  "content_type = application/json\n"
                                  "\n[kind.wc]\n"
                                  "exec = /usr/bin/wc -c\n"
                                  "params = lines:int:0..1000=10, mode:enum:fast|best\n"
                                  "max_output_bytes = 1M\n"
                                  "cancel_grace_ms = 500\n"
                                  "rlimit_cpu_s = 10\n"
                                  "rlimit_as = 512M\n"
                                  "rlimit_nofile = 64\n"
                                  "user = nobody\n"
                                  "cwd = /tmp\n"
                                  "stream = true\n",
                                  0, NULL);
    CU_ASSERT_EQUAL_FATAL(cfg->kind_count, 2);
    const struct srv_cfg_kind *m = srv_cfg_kind_find(cfg, "wordfreq");
    const struct srv_cfg_kind *e = srv_cfg_kind_find(cfg, "wc");
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(m->module, "/usr/lib/spindle/wordfreq.so");
    CU_ASSERT_STRING_EQUAL(m->exec, "");
    CU_ASSERT_EQUAL(m->max_inflight, 4);
    CU_ASSERT_EQUAL(m->timeout_ms, 5000);
    CU_ASSERT_EQUAL(m->max_output_bytes, 16u << 20); /* the default */
    CU_ASSERT_EQUAL(m->line, 1);
    CU_ASSERT_STRING_EQUAL(e->exec, "/usr/bin/wc -c");
    CU_ASSERT_EQUAL(e->max_output_bytes, 1u << 20);
    CU_ASSERT_EQUAL(e->cancel_grace_ms, 500);
    CU_ASSERT_EQUAL(e->rlimit_cpu_s, 10);
    CU_ASSERT_EQUAL(e->rlimit_as, 512u << 20);
    CU_ASSERT_EQUAL(e->rlimit_nofile, 64);
    CU_ASSERT_STRING_EQUAL(e->user, "nobody");
    CU_ASSERT_STRING_EQUAL(e->cwd, "/tmp");
    CU_ASSERT_TRUE(e->stream);
    CU_ASSERT_FALSE(m->stream);
    CU_ASSERT_EQUAL(e->line, 7);
    CU_ASSERT_PTR_NULL(srv_cfg_kind_find(cfg, "other"));
    free(cfg);
}

static void test_srv_cfg_kind_defaults(void)
{
    struct srv_cfg *cfg = tk_load("[kind.x]\nexec = /bin/true\n", 0, NULL);
    const struct srv_cfg_kind *k = srv_cfg_kind_find(cfg, "x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_EQUAL(k->cancel_grace_ms, 2000);
    CU_ASSERT_EQUAL(k->max_output_bytes, 16u << 20);
    CU_ASSERT_EQUAL(k->max_inflight, 0);
    CU_ASSERT_EQUAL(k->timeout_ms, 0);
    CU_ASSERT_STRING_EQUAL(k->content_type, "");
    CU_ASSERT_FALSE(k->stream);
    free(cfg);
}

static void test_srv_cfg_kind_errors(void)
{
    free(tk_load("[kind.x]\nexec = /bin/true\nbogus = 1\n", -EINVAL,
                 ":3: [kind.x] bogus: unknown key"));
    free(tk_load("[kind.x]\nexec = /bin/true\nmodule = /a.so\n", -EINVAL,
                 ":3: [kind.x] module: set exec or module, not both"));
    free(tk_load("\n[kind.x]\nmax_inflight = 2\n", -EINVAL,
                 ":2: [kind.x]: missing exec = PROGRAM or module = /PATH/FILE.so"));
    free(tk_load("[kind.X]\nexec = /bin/true\n", -EINVAL, ":1: [kind.X]: invalid kind name"));
    free(tk_load("[kind.x]\nmodule = /a.so\nuser = nobody\n", -EINVAL,
                 ":3: [kind.x] user: applies to exec kinds only"));
    free(tk_load("[kind.x]\nmodule = /a.so\nparams = n:int:0..9\n", -EINVAL,
                 ":3: [kind.x] params: applies to exec kinds only (a module declares"));
    free(tk_load("[kind.x]\nmodule = a.so\n", -EINVAL,
                 ":2: [kind.x] module: expected an absolute path"));
    free(tk_load("[kind.x]\nexec = /bin/true\ntimeout_ms = 70000\n", -EINVAL,
                 ":3: [kind.x] timeout_ms: timeout_ms (70000) exceeds [limits] max_timeout_ms"));
    free(tk_load("[kind.x]\nexec = /bin/true\nexec = /bin/false\n", -EINVAL,
                 ":3: [kind.x] exec: duplicate key (first set on line 2)"));
    free(tk_load("[kind.x]\nexec = /bin/true\nmax_inflight = -1\n", -EINVAL,
                 ":3: [kind.x] max_inflight: expected a whole number"));
    free(tk_load("[kind.x]\nexec = /bin/true\nstream = in\n", -EINVAL,
                 ":3: [kind.x] stream: expected true or false"));
    free(tk_load("[kind.x]\nmodule = /a.so\nstream = true\n", -EINVAL,
                 ":3: [kind.x] stream: applies to exec kinds only"));
    free(tk_load("[kind.x]\nexec = /bin/true\nparams = n:float\n", -EINVAL,
                 ":3: [kind.x] params: n: unknown type"));
}

static void test_srv_cfg_params_parse_ok(void)
{
    struct srv_cfg_params ps;
    char msg[256] = "";
    CU_ASSERT_EQUAL_FATAL(srv_cfg_params_parse("lines:int:0..1000, mode:enum:fast|best=best, "
                                               "v:bool=true, tag:string",
                                               &ps, msg, sizeof(msg)),
                          0);
    CU_ASSERT_EQUAL_FATAL(ps.count, 4);
    CU_ASSERT_STRING_EQUAL(ps.p[0].name, "lines");
    CU_ASSERT_EQUAL(ps.p[0].type, SRV_CFG_PARAM_INT);
    CU_ASSERT(ps.p[0].required);
    CU_ASSERT_EQUAL(ps.p[0].min, 0);
    CU_ASSERT_EQUAL(ps.p[0].max, 1000);
    CU_ASSERT_EQUAL(ps.p[1].type, SRV_CFG_PARAM_ENUM);
    CU_ASSERT_EQUAL(ps.p[1].nchoices, 2);
    CU_ASSERT_STRING_EQUAL(ps.p[1].choices, "fast");
    CU_ASSERT_STRING_EQUAL(ps.p[1].choices + 5, "best");
    CU_ASSERT_FALSE(ps.p[1].required);
    CU_ASSERT_EQUAL(ps.p[1].def, 1);
    CU_ASSERT_EQUAL(ps.p[2].type, SRV_CFG_PARAM_BOOL);
    CU_ASSERT_EQUAL(ps.p[2].def, 1);
    CU_ASSERT_EQUAL(ps.p[3].type, SRV_CFG_PARAM_STRING);
    CU_ASSERT_EQUAL(srv_cfg_params_parse("", &ps, msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(ps.count, 0);
}

static void test_srv_cfg_params_parse_errors(void)
{
    static const char *const bad[][2] = {
        {"n", "bad parameter"},
        {"N:int:0..1", "bad parameter"},
        {"n:int:5..1", "n: expected int:MIN..MAX"},
        {"n:int:0..9=10", "n: default must be an integer in 0..9"},
        {"m:enum:a|b=c", "m: default must be one of the choices"},
        {"m:enum:a||b", "m: expected enum"},
        {"b:bool=yes", "b: default must be true or false"},
        {"n:int:0..1, n:bool", "parameter n declared twice"},
        {"n:int:0..1,", "empty parameter after the last comma"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct srv_cfg_params ps;
        char msg[256] = "";
        CU_ASSERT_EQUAL(srv_cfg_params_parse(bad[i][0], &ps, msg, sizeof(msg)), -EINVAL);
        if (strncmp(msg, bad[i][1], strlen(bad[i][1])) != 0)
            fprintf(stderr, "\n  %s: got \"%s\"\n", bad[i][0], msg);
        CU_ASSERT(strncmp(msg, bad[i][1], strlen(bad[i][1])) == 0);
    }
}

static void test_srv_cfg_kind_print_round_trip(void)
{
    struct srv_cfg *a =
        tk_load("[kind.m]\nmodule = /x/m.so\nmax_inflight = 3\n"
                "[kind.e]\nexec = /bin/cat -\nparams = n:int:1..5=2\nuser = nobody\n"
                "stream = yes\n",
                0, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_FATAL(f != NULL);
    srv_cfg_print(a, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "[kind.m]\nmodule = /x/m.so\nmax_inflight = 3\n"));
    struct srv_cfg *b = tk_load(text, 0, NULL);
    CU_ASSERT(srv_cfg_equal(a, b));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "stream = true\n"));
    b->kinds[1].stream = false;
    CU_ASSERT_FALSE(srv_cfg_equal(a, b));
    b->kinds[1].stream = true;
    b->kinds[1].max_output_bytes++;
    CU_ASSERT_FALSE(srv_cfg_equal(a, b));
    free(text);
    free(a);
    free(b);
}

struct tk_diff {
    char text[512];
};

static void tk_diff_add(const char *section, const char *key, enum srv_cfg_reload r, void *arg)
{
    struct tk_diff *d = arg;
    size_t n = strlen(d->text);
    snprintf(d->text + n, sizeof(d->text) - n, "%s.%s=%s ", section, key,
             r == SRV_CFG_RESTART     ? "restart"
             : r == SRV_CFG_LIVE_KIND ? "kind"
                                      : "other");
}

/* A reload: exec kinds and module kinds' other keys apply; a changed module keeps its form. */
static void test_srv_cfg_kind_reload_copy(void)
{
    struct srv_cfg *run = tk_load("[kind.m]\nmodule = /x/m.so\nmax_inflight = 3\n"
                                  "[kind.n]\nmodule = /x/n.so\n"
                                  "[kind.e]\nexec = /bin/cat\n",
                                  0, NULL);
    struct srv_cfg *file = tk_load("[kind.m]\nmodule = /x/m.so\nmax_inflight = 5\n"
                                   "[kind.n]\nmodule = /x/n2.so\n"
                                   "[kind.p]\nmodule = /x/p.so\n"
                                   "[kind.f]\nexec = /bin/true\n",
                                   0, NULL);
    struct tk_diff d = {""};
    srv_cfg_diff(run, file, tk_diff_add, &d);
    CU_ASSERT_PTR_NOT_NULL(strstr(d.text, "kind.m.max_inflight=kind "));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.text, "kind.n.module=restart "));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.text, "kind.p.module=restart "));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.text, "kind.f.exec=kind "));
    CU_ASSERT_PTR_NOT_NULL(strstr(d.text, "kind.e.exec=kind "));
    srv_cfg_copy_class(run, file, SRV_CFG_LIVE_KIND);
    CU_ASSERT_EQUAL(srv_cfg_kind_find(run, "m")->max_inflight, 5);
    CU_ASSERT_STRING_EQUAL(srv_cfg_kind_find(run, "n")->module, "/x/n.so");
    CU_ASSERT_PTR_NULL(srv_cfg_kind_find(run, "p"));
    CU_ASSERT_PTR_NULL(srv_cfg_kind_find(run, "e"));
    CU_ASSERT_PTR_NOT_NULL(srv_cfg_kind_find(run, "f"));
    CU_ASSERT_EQUAL(run->kind_count, 3);
    free(run);
    free(file);
}

int suite_server_config_kinds(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_cfg_kind_module_and_exec),
        SPINDLE_TEST(test_srv_cfg_kind_defaults),
        SPINDLE_TEST(test_srv_cfg_kind_errors),
        SPINDLE_TEST(test_srv_cfg_params_parse_ok),
        SPINDLE_TEST(test_srv_cfg_params_parse_errors),
        SPINDLE_TEST(test_srv_cfg_kind_print_round_trip),
        SPINDLE_TEST(test_srv_cfg_kind_reload_copy),
    };
    return SPINDLE_SUITE_ADD("server_config_kinds", tc_dir_init, tc_dir_cleanup, tests);
}
