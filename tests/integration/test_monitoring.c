/* test_monitoring.c - what a monitoring system sees of spindle: the scrape accepted by
 * Prometheus's own checker, spindle_build_info and the process_* families, the shipped alert
 * rules and Grafana dashboard (checked by promtool, and every metric they name present in a real
 * scrape), and the `spindle started` line naming the version and the addresses really served.
 *
 * Design: promtool comes from Debian's prometheus package; the tests that need it are
 * registered inactive (a visible skip) when it is not on PATH. The metric names of the rules
 * and the dashboard are every word of the files that starts with "spindle_" or "process_": a
 * name in a description must exist as much as one in an expression. A scrape taken after one
 * job ran has every family, histogram series included.
 */
#include <CUnit/CUnit.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_monitoring(void);

#define MON_RUN_MS 60000 /* promtool and the binary on a loaded machine */

/* ---- helpers --------------------------------------------------------------------------------- */

static bool mon_on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/bin:/bin";
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        char full[4096];
        snprintf(full, sizeof(full), "%.*s/%s", (int)n, p, name);
        if (n > 0 && access(full, X_OK) == 0)
            return true;
        p += n + (p[n] == ':');
    }
    return false;
}

static const char *mon_skip_no_promtool(void)
{
    return mon_on_path("promtool") ? NULL : "promtool (Debian package prometheus) is not installed";
}

/* $SPINDLE_ETC/<rel>, new string; NULL (test failed) when SPINDLE_ETC is not set. */
static char *mon_etc(const char *rel)
{
    const char *etc = getenv("SPINDLE_ETC");
    CU_ASSERT_PTR_NOT_NULL_FATAL(etc);
    char *p = NULL;
    CU_ASSERT_FATAL(asprintf(&p, "%s/%s", etc, rel) > 0);
    return p;
}

static char *mon_file_read(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 65536;
            char *b = realloc(buf, cap);
            if (b == NULL)
                break;
            buf = b;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0)
            break;
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

/* Run `exe args...`; its exit code, -1 when it did not run or timed out. *out gets stdout and
 * stderr together (new string) when not NULL. */
static int mon_run(const char *exe, const char *const *args, char **out)
{
    struct proc *p = proc_spawn_exe(exe, args, NULL);
    if (p == NULL)
        return -1;
    int code = -1;
    int rc = proc_wait(p, MON_RUN_MS, &code);
    if (out != NULL && asprintf(out, "%s%s", proc_output(p, PROC_STDOUT, NULL),
                                proc_output(p, PROC_STDERR, NULL)) < 0)
        *out = NULL;
    proc_free(p);
    return rc == 0 ? code : -1;
}

/* A server that has run one job (so the histograms have series), and its scrape (new string). */
static char *mon_scrape(struct hs_server *s)
{
    struct hs_resp r = {0};
    char *body = NULL;
    CU_ASSERT_EQUAL(hs_roundtrip(s,
                                 "POST /v1/jobs/noop HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                                 "Connection: close\r\n\r\n",
                                 &r),
                    0);
    CU_ASSERT_EQUAL(r.status, 200);
    hs_resp_fini(&r);
    CU_ASSERT_EQUAL(
        hs_roundtrip(s, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
    if (r.status == 200)
        body = strdup(r.body);
    hs_resp_fini(&r);
    return body;
}

/* True when `name` is in the scrape: a sample name (at a line start, followed by '{' or ' '), or
 * a family declared by "# TYPE" (a labelled counter has no series before its first event). */
static bool mon_has_sample(const char *scrape, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = scrape; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && (p[n] == '{' || p[n] == ' '))
            return true;
        if (strncmp(p, "# TYPE ", 7) == 0 && strncmp(p + 7, name, n) == 0 && p[7 + n] == ' ')
            return true;
    }
    return false;
}

/* Every word of `text` starting with spindle_ or process_ is a sample of `scrape`. Returns how
 * many such words there were; a missing one fails the test with its name. */
static size_t mon_names_check(const char *text, const char *file, const char *scrape)
{
    size_t count = 0;
    for (const char *p = text; *p;) {
        if (!(isalnum((unsigned char)*p) || *p == '_')) {
            p++;
            continue;
        }
        size_t n = 0;
        while (isalnum((unsigned char)p[n]) || p[n] == '_' || p[n] == ':')
            n++;
        if ((strncmp(p, "spindle_", 8) == 0 || strncmp(p, "process_", 8) == 0) && n > 8) {
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)n, p);
            count++;
            if (!mon_has_sample(scrape, name))
                fprintf(stderr, "\n  %s names %s, which GET /metrics does not have\n", file, name);
            CU_ASSERT(mon_has_sample(scrape, name));
        }
        p += n;
    }
    return count;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_monitoring_build_and_process(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *m = mon_scrape(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    char *ver = NULL;
    const char *args[] = {"version", NULL};
    CU_ASSERT_EQUAL(proc_run(args, MON_RUN_MS, &ver, NULL, NULL), 0);
    char v[64] = "", c[64] = "", want[200];
    CU_ASSERT_EQUAL(sscanf(ver, "spindle %63s (commit %63[^)])", v, c), 2);
    snprintf(want, sizeof(want), "spindle_build_info{version=\"%s\",commit=\"%s\"} 1\n", v, c);
    CU_ASSERT_PTR_NOT_NULL(strstr(m, want));
    static const char *const fams[] = {
        "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
        "process_max_fds",           "process_start_time_seconds",    "spindle_queue_capacity",
    };
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "\n%s ", fams[i]);
        const char *at = strstr(m, line);
        CU_ASSERT_PTR_NOT_NULL(at);
        if (at != NULL && strcmp(fams[i], "process_cpu_seconds_total") != 0)
            CU_ASSERT(strtod(at + strlen(line), NULL) > 0); /* real figures, not zeroes */
    }
    /* The start time is this process's, in Unix seconds: within a day of now. */
    const char *st = strstr(m, "\nprocess_start_time_seconds ");
    if (st != NULL) {
        double t = strtod(st + 28, NULL);
        CU_ASSERT(t > (double)time(NULL) - 86400 && t <= (double)time(NULL) + 1);
    }
    free(ver);
    free(m);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    hs_free(s);
}

static void test_monitoring_promtool_metrics(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *m = mon_scrape(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    char *path = proc_file_write(hs_dir(s), "scrape.txt", m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    char *cmd = NULL, *out = NULL;
    CU_ASSERT(asprintf(&cmd, "promtool check metrics < '%s'", path) > 0);
    const char *args[] = {"-c", cmd, NULL};
    int code = mon_run("sh", args, &out);
    if (code != 0)
        fprintf(stderr, "\n  promtool check metrics: exit %d\n%s\n", code, out ? out : "");
    CU_ASSERT_EQUAL(code, 0);
    free(out);
    free(cmd);
    free(path);
    free(m);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    hs_free(s);
}

static void test_monitoring_rules_check(void)
{
    char *rules = mon_etc("prometheus/spindle-rules.yml");
    char *out = NULL;
    const char *args[] = {"check", "rules", rules, NULL};
    int code = mon_run("promtool", args, &out);
    if (code != 0)
        fprintf(stderr, "\n  promtool check rules: exit %d\n%s\n", code, out ? out : "");
    CU_ASSERT_EQUAL(code, 0);
    CU_ASSERT_PTR_NOT_NULL(out != NULL ? strstr(out, "SUCCESS") : NULL);
    free(out);
    free(rules);
}

/* The dashboard is JSON Grafana can import: panels with Prometheus targets. */
static void mon_dashboard_shape(const char *path)
{
    json_error_t jerr;
    json_t *d = json_load_file(path, 0, &jerr);
    if (d == NULL)
        fprintf(stderr, "\n  %s:%d: %s\n", path, jerr.line, jerr.text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    json_t *panels = json_object_get(d, "panels");
    CU_ASSERT(json_is_array(panels) && json_array_size(panels) >= 8);
    size_t i, exprs = 0;
    json_t *p;
    json_array_foreach(panels, i, p)
    {
        json_t *t;
        size_t j;
        json_array_foreach(json_object_get(p, "targets"), j, t)
        {
            CU_ASSERT(json_is_string(json_object_get(t, "expr")));
            exprs++;
        }
    }
    CU_ASSERT(exprs >= 10);
    json_decref(d);
}

static void test_monitoring_names_exist(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *m = mon_scrape(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    const char *files[] = {"prometheus/spindle-rules.yml", "grafana/spindle-dashboard.json"};
    for (size_t i = 0; i < 2; i++) {
        char *path = mon_etc(files[i]);
        char *text = mon_file_read(path);
        CU_ASSERT_PTR_NOT_NULL(text);
        if (text != NULL)
            CU_ASSERT(mon_names_check(text, files[i], m) >= 7);
        if (i == 1)
            mon_dashboard_shape(path);
        free(text);
        free(path);
    }
    free(m);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    hs_free(s);
}

/* `spindle started` says which build runs and where it really listens (port 0 resolved). */
static void test_monitoring_started_line(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    json_t *l = hs_log_wait(s, "spindle started", NULL, NULL, MON_RUN_MS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    char *ver = NULL;
    const char *args[] = {"version", NULL};
    CU_ASSERT_EQUAL(proc_run(args, MON_RUN_MS, &ver, NULL, NULL), 0);
    char v[64] = "", c[64] = "";
    CU_ASSERT_EQUAL(sscanf(ver ? ver : "", "spindle %63s (commit %63[^)])", v, c), 2);
    const char *version = hs_json_str(l, "version"), *commit = hs_json_str(l, "commit");
    CU_ASSERT(version != NULL && strcmp(version, v) == 0);
    CU_ASSERT(commit != NULL && strcmp(commit, c) == 0);
    const char *listen = hs_json_str(l, "listen");
    CU_ASSERT(listen != NULL && strcmp(listen, hs_listen_addr(s, 0)) == 0);
    CU_ASSERT(listen != NULL && strstr(listen, ":0") == NULL);
    free(ver);
    json_decref(l);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    hs_free(s);
}

int suite_integration_monitoring(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_monitoring_build_and_process),
        SPINDLE_TEST_UNLESS(test_monitoring_promtool_metrics, mon_skip_no_promtool),
        SPINDLE_TEST_UNLESS(test_monitoring_rules_check, mon_skip_no_promtool),
        SPINDLE_TEST(test_monitoring_names_exist),
        SPINDLE_TEST(test_monitoring_started_line),
    };
    return SPINDLE_SUITE_ADD("integration_monitoring", NULL, NULL, tests);
}
