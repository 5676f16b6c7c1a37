/* test_metrics.c - the metrics registry (server/metrics/metrics.c) and the exposition format
 * checker it is verified with (tests/unit/promcheck.c). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "server/metrics/metrics.h"
#include "tests/unit/promcheck.h"
#include "tests/suite.h"

int suite_server_metrics_metrics(void);

/* ---- the checker ---------------------------------------------------------------------------- */

static int check(const char *text, char *err, size_t errsz)
{
    return promcheck(text, strlen(text), err, errsz);
}

static void test_promcheck_accepts_valid_text(void)
{
    static const char *const good[] = {
        "",
        "# just a comment\n",
        "up 1\n",
        "up 1 1700000000000\n",
        "up -1 -5\n",
        "# HELP up Whether it is up.\n# TYPE up gauge\nup{job=\"a\"} 1\nup{job=\"b\"} 0\n",
        "# HELP h escaped \\\\ and \\n here\n# TYPE h gauge\nh 1\n",
        "# HELP e\n# TYPE e gauge\ne 2\n",
        "g{a=\"x\",} 1\n",
        "g{a=\"q\\\"uote \\\\ back \\n nl\"} 1.5e-3\n",
        "g{a=\"\xc3\xa9t\xc3\xa9\"} 1\n",
        "g_inf +Inf\ng_ninf -Inf\ng_nan NaN\ng_inf2 Inf\ng_exp 1E+20\ng_dot .5\n",
        "# TYPE c counter\nc 0\n",
        "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} "
        "4\nh_sum 2.5\nh_count 4\n",
        "# TYPE h histogram\nh_bucket{k=\"a\",le=\"1\"} 0\nh_bucket{k=\"a\",le=\"+Inf\"} 0\n"
        "h_bucket{le=\"+Inf\",k=\"b\"} 2\nh_sum{k=\"a\"} 0\nh_count{k=\"a\"} 0\nh_sum{k=\"b\"} 3\n"
        "h_count{k=\"b\"} 2\n",
        "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.99\"} 2\ns_sum 10\ns_count 5\n",
        "# TYPE u untyped\nu 1\nother_family 2\n",
        "a:b:c_d 1\n",
    };
    char err[256];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int rc = check(good[i], err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "good[%zu] refused: %s\n", i, err);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_STRING_EQUAL(err, "");
    }
}

static void test_promcheck_refuses_invalid_text(void)
{
    static const struct {
        const char *text;
        const char *why; /* a piece of the error message */
    } bad[] = {
        {"up 1", "newline"},
        {"up 1\n\nup2 1\n", "blank line"},
        {"1up 1\n", "metric name"},
        {"up{1x=\"v\"} 1\n", "label name"},
        {"up{__x=\"v\"} 1\n", "reserved"},
        {"up{x=\"\\t\"} 1\n", "escape"},
        {"up{x=\"v} 1\n", "unterminated"},
        {"up{x=\"v\" y=\"w\"} 1\n", "expected , or }"},
        {"up{ x=\"v\"} 1\n", "label name"},
        {"up{x=v} 1\n", "expected =\""},
        {"up{x=\"1\",x=\"2\"} 1\n", "twice"},
        {"up 1.2.3\n", "bad value"},
        {"up abc\n", "bad value"},
        {"up 0x10\n", "bad value"},
        {"up inf\n", "bad value"},
        {"up\n", "value"},
        {"up  1\n", "bad value"},
        {"up 1 \n", "timestamp"},
        {"up 1 1.5\n", "timestamp"},
        {"up 1 2 3\n", "timestamp"},
        {"# TYPE up gauge\n# TYPE up gauge\nup 1\n", "second TYPE"},
        {"# HELP up a\n# HELP up b\nup 1\n", "second HELP"},
        {"up 1\n# TYPE up gauge\n", "after its samples"},
        {"# TYPE up gauges\nup 1\n", "unknown TYPE"},
        {"# TYPE up\nup 1\n", "without a type"},
        {"# HELP up bad \\x escape\nup 1\n", "escape"},
        {"up{a=\"1\",b=\"2\"} 1\nup{b=\"2\",a=\"1\"} 2\n", "duplicate series"},
        {"up 1\nup 2\n", "duplicate series"},
        {"a 1\nb 1\na{x=\"1\"} 1\n", "not contiguous"},
        {"# TYPE c counter\nc -1\n", "negative"},
        {"# TYPE c counter\nc NaN\n", "negative"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", "+Inf"},
        {"# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
         "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
         "cumulative"},
        {"# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
         "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
         "not above"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 2\n", "differs"},
        {"# TYPE h histogram\nh_bucket 3\n", "without an le"},
        {"# TYPE h histogram\nh_bucket{le=\"x\"} 3\n", "not a float"},
        {"# TYPE h histogram\nh 3\n", "needs _bucket"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_count 3\n", "lacks"},
        {"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum{le=\"1\"} 3\n", "le label"},
        {"# TYPE s summary\ns 1\n", "quantile"},
        {"# TYPE s summary\ns{quantile=\"2\"} 1\n", "quantile"},
        {"up{x=\"\xff\"} 1\n", "UTF-8"},
        {"up{x=\"\xc0\xaf\"} 1\n", "UTF-8"},
        {"not a sample\n", "value"},
        {"{x=\"1\"} 1\n", "metric name"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = check(bad[i].text, err, sizeof(err));
        CU_ASSERT_EQUAL(rc, -EINVAL);
        if (rc != -EINVAL || strstr(err, bad[i].why) == NULL)
            fprintf(stderr, "bad[%zu]: rc %d, err '%s', want '%s'\n", i, rc, err, bad[i].why);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].why));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "line "));
    }
    /* A NUL byte inside the text, and the line number of an error. */
    CU_ASSERT_EQUAL(promcheck("up 1\nx\0y 1\n", 11, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 2"));
    CU_ASSERT_EQUAL(check("a 1\nb 1\nc x\n", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 3"));
    /* A tiny error buffer is still terminated. */
    CU_ASSERT_EQUAL(check("up x\n", err, 4), -EINVAL);
    CU_ASSERT_EQUAL(strlen(err), 3);
}

/* ---- the registry --------------------------------------------------------------------------- */

static char *render(struct srv_met *m, struct srv_met_buf *b)
{
    b->len = 0;
    CU_ASSERT_EQUAL_FATAL(srv_met_render(m, b), 0);
    char err[256];
    int rc = promcheck(b->data, b->len, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "promcheck: %s\n%s", err, b->data);
    CU_ASSERT_EQUAL(rc, 0);
    return b->data;
}

static void test_srv_met_render_exact_text(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_desc dc = {.type = SRV_MET_COUNTER,
                              .name = "x_total",
                              .help = "Things.",
                              .labels = {"route", "status"}};
    struct srv_met_desc dg = {.type = SRV_MET_GAUGE, .name = "x_now", .help = "Now."};
    static const double bounds[] = {0.0625, 0.25, 1}; /* exact in binary */
    struct srv_met_desc dh = {.type = SRV_MET_HISTOGRAM,
                              .name = "x_seconds",
                              .help = "Time.",
                              .labels = {"kind"},
                              .bounds = bounds,
                              .nbounds = 3};
    struct srv_met_family *c = srv_met_family_new(m, &dc);
    struct srv_met_family *g = srv_met_family_new(m, &dg);
    struct srv_met_family *h = srv_met_family_new(m, &dh);
    CU_ASSERT_FATAL(c != NULL && g != NULL && h != NULL);

    struct srv_met_buf b = {0};
    CU_ASSERT_STRING_EQUAL(render(m, &b), "# HELP x_total Things.\n# TYPE x_total counter\n"
                                          "# HELP x_now Now.\n# TYPE x_now gauge\nx_now 0\n"
                                          "# HELP x_seconds Time.\n# TYPE x_seconds histogram\n");

    srv_met_labels_add(c, (const char *const[]){"/a", "200"}, 1);
    srv_met_labels_add(c, (const char *const[]){"/a", "200"}, 2);
    srv_met_labels_add(c, (const char *const[]){"/b", "404"}, 1);
    srv_met_labels_add(c, (const char *const[]){"/b", "404"}, -5); /* counters never go down */
    srv_met_labels_set(g, NULL, 2.5);
    srv_met_labels_add(g, NULL, -3);
    const char *const noop[] = {"noop"};
    srv_met_labels_observe(h, noop, 0.0625); /* le is inclusive */
    srv_met_labels_observe(h, noop, 0.125);
    srv_met_labels_observe(h, noop, 0.25);
    srv_met_labels_observe(h, noop, 7);
    srv_met_labels_observe(h, noop, NAN); /* ignored */
    const char *want = "# HELP x_total Things.\n# TYPE x_total counter\n"
                       "x_total{route=\"/a\",status=\"200\"} 3\n"
                       "x_total{route=\"/b\",status=\"404\"} 1\n"
                       "# HELP x_now Now.\n# TYPE x_now gauge\nx_now -0.5\n"
                       "# HELP x_seconds Time.\n# TYPE x_seconds histogram\n"
                       "x_seconds_bucket{kind=\"noop\",le=\"0.0625\"} 1\n"
                       "x_seconds_bucket{kind=\"noop\",le=\"0.25\"} 3\n"
                       "x_seconds_bucket{kind=\"noop\",le=\"1\"} 3\n"
                       "x_seconds_bucket{kind=\"noop\",le=\"+Inf\"} 4\n"
                       "x_seconds_sum{kind=\"noop\"} 7.4375\n"
                       "x_seconds_count{kind=\"noop\"} 4\n";
    CU_ASSERT_STRING_EQUAL(render(m, &b), want);
    CU_ASSERT_EQUAL(b.len, strlen(want));
    CU_ASSERT_DOUBLE_EQUAL(srv_met_value(srv_met_series_get(h, noop)), 4, 0);
    srv_met_buf_fini(&b);
    CU_ASSERT_PTR_NULL(b.data);
    srv_met_free(m);
}

static void test_srv_met_render_escapes(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_desc d = {.type = SRV_MET_GAUGE,
                             .name = "esc",
                             .help = "back\\slash \"quoted\"\nsecond line",
                             .labels = {"v"}};
    struct srv_met_family *f = srv_met_family_new(m, &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    srv_met_labels_set(f, (const char *const[]){"a\\b\"c\nd"}, 1);
    srv_met_labels_set(f, (const char *const[]){""}, 2);
    struct srv_met_buf b = {0};
    CU_ASSERT_STRING_EQUAL(render(m, &b), "# HELP esc back\\\\slash \"quoted\"\\nsecond line\n"
                                          "# TYPE esc gauge\n"
                                          "esc{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                                          "esc{v=\"\"} 2\n");
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

static void test_srv_met_values_formatting(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_desc d = {.type = SRV_MET_GAUGE, .name = "v", .help = "", .labels = {"k"}};
    struct srv_met_family *f = srv_met_family_new(m, &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    srv_met_labels_set(f, (const char *const[]){"a"}, 0.1);
    srv_met_labels_set(f, (const char *const[]){"b"}, 1e20);
    srv_met_labels_set(f, (const char *const[]){"c"}, INFINITY);
    srv_met_labels_set(f, (const char *const[]){"d"}, -INFINITY);
    srv_met_labels_set(f, (const char *const[]){"e"}, NAN);
    srv_met_labels_set(f, (const char *const[]){"f"}, 1.0 / 3);
    srv_met_labels_set(f, (const char *const[]){"g"}, 123456789);
    struct srv_met_buf b = {0};
    CU_ASSERT_STRING_EQUAL(render(m, &b), "# HELP v \n# TYPE v gauge\n"
                                          "v{k=\"a\"} 0.1\nv{k=\"b\"} 1e+20\nv{k=\"c\"} +Inf\n"
                                          "v{k=\"d\"} -Inf\nv{k=\"e\"} NaN\n"
                                          "v{k=\"f\"} 0.3333333333333333\n"
                                          "v{k=\"g\"} 123456789\n");
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

static void test_srv_met_series_get_folds_into_other(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_desc d = {.type = SRV_MET_COUNTER,
                             .name = "hits_total",
                             .help = "Hits.",
                             .labels = {"tenant", "kind"},
                             .max_series = 3};
    struct srv_met_family *f = srv_met_family_new(m, &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    /* An explicit all-"other" set is the overflow series, also before the family is full. */
    srv_met_labels_add(f, (const char *const[]){"other", "other"}, 100);
    CU_ASSERT_EQUAL(srv_met_family_series(f), 1);
    for (int i = 0; i < 10; i++) {
        char t[16];
        snprintf(t, sizeof(t), "t%d", i);
        srv_met_labels_add(f, (const char *const[]){t, "k"}, 1);
    }
    CU_ASSERT_EQUAL(srv_met_family_series(f), 4);
    struct srv_met_series *other = srv_met_series_get(f, (const char *const[]){"zz", "k"});
    CU_ASSERT_PTR_EQUAL(other, srv_met_series_get(f, (const char *const[]){"other", "other"}));
    CU_ASSERT_DOUBLE_EQUAL(srv_met_value(other), 107, 0);
    /* Known sets keep their own series. */
    srv_met_labels_add(f, (const char *const[]){"t1", "k"}, 1);
    CU_ASSERT_DOUBLE_EQUAL(srv_met_value(srv_met_series_get(f, (const char *const[]){"t1", "k"})),
                           2, 0);
    struct srv_met_buf b = {0};
    const char *text = render(m, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "hits_total{tenant=\"other\",kind=\"other\"} 107\n"));
    CU_ASSERT_PTR_NULL(strstr(text, "t3"));
    CU_ASSERT_PTR_NULL(srv_met_series_get(f, NULL));
    CU_ASSERT_PTR_NULL(srv_met_series_get(f, (const char *const[]){"a", NULL}));
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

struct probe {
    double value;
    unsigned calls;
};

static double read_probe(void *arg)
{
    struct probe *p = arg;
    p->calls++;
    return p->value;
}

static void test_srv_met_series_fn_read_at_render(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_desc dg = {.type = SRV_MET_GAUGE, .name = "lag", .help = "Lag."};
    struct srv_met_desc dc = {.type = SRV_MET_COUNTER,
                              .name = "lines_total",
                              .help = "Lines.",
                              .labels = {"pool"},
                              .max_series = 1};
    struct srv_met_family *g = srv_met_family_new(m, &dg);
    struct srv_met_family *c = srv_met_family_new(m, &dc);
    CU_ASSERT_FATAL(g != NULL && c != NULL);
    struct probe lag = {.value = 0.25}, lines = {.value = 10};
    CU_ASSERT_EQUAL(srv_met_series_fn(g, NULL, read_probe, &lag), 0);
    CU_ASSERT_EQUAL(srv_met_series_fn(c, (const char *const[]){"a"}, read_probe, &lines), 0);
    /* The family is full: a callback cannot share the overflow series. */
    CU_ASSERT_EQUAL(srv_met_series_fn(c, (const char *const[]){"b"}, read_probe, &lines), -ENOSPC);
    CU_ASSERT_EQUAL(srv_met_series_fn(c, (const char *const[]){"other"}, read_probe, &lines),
                    -EINVAL);
    CU_ASSERT_EQUAL(srv_met_series_fn(g, NULL, NULL, NULL), -EINVAL);
    srv_met_labels_set(g, NULL, 99); /* a callback series ignores stored updates */

    struct srv_met_buf b = {0};
    CU_ASSERT_PTR_NOT_NULL(strstr(render(m, &b), "\nlag 0.25\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "lines_total{pool=\"a\"} 10\n"));
    lag.value = 1.5;
    lines.value = 12;
    CU_ASSERT_PTR_NOT_NULL(strstr(render(m, &b), "\nlag 1.5\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "lines_total{pool=\"a\"} 12\n"));
    CU_ASSERT_EQUAL(lag.calls, 2);
    CU_ASSERT_EQUAL(lines.calls, 2);
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

static void test_srv_met_family_new_rejects_bad_descriptions(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    static const double ok_bounds[] = {1, 2}, bad_bounds[] = {2, 1}, inf_bounds[] = {1, INFINITY};
    const struct srv_met_desc bad[] = {
        {.type = SRV_MET_GAUGE, .name = NULL},
        {.type = SRV_MET_GAUGE, .name = ""},
        {.type = SRV_MET_GAUGE, .name = "9lives"},
        {.type = SRV_MET_GAUGE, .name = "a-b"},
        {.type = SRV_MET_GAUGE, .name = "g", .labels = {"a:b"}},
        {.type = SRV_MET_GAUGE, .name = "g", .labels = {"__x"}},
        {.type = SRV_MET_GAUGE, .name = "g", .labels = {"a", "a"}},
        {.type = SRV_MET_GAUGE, .name = "g", .labels = {"a", "b", "c", "d", "e"}},
        {.type = SRV_MET_HISTOGRAM,
         .name = "h",
         .labels = {"le"},
         .bounds = ok_bounds,
         .nbounds = 2},
        {.type = SRV_MET_HISTOGRAM, .name = "h", .bounds = NULL, .nbounds = 0},
        {.type = SRV_MET_HISTOGRAM, .name = "h", .bounds = bad_bounds, .nbounds = 2},
        {.type = SRV_MET_HISTOGRAM, .name = "h", .bounds = inf_bounds, .nbounds = 2},
        {.type = (enum srv_met_type)7, .name = "t"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_PTR_NULL(srv_met_family_new(m, &bad[i]));
    struct srv_met_desc ok = {.type = SRV_MET_GAUGE, .name = "ns:g_1", .labels = {"le"}};
    CU_ASSERT_PTR_NOT_NULL(srv_met_family_new(m, &ok)); /* "le" is fine outside histograms */
    CU_ASSERT_PTR_NULL(srv_met_family_new(m, &ok));     /* the name is taken */
    struct srv_met_buf b = {0};
    CU_ASSERT_STRING_EQUAL(render(m, &b), "# HELP ns:g_1 \n# TYPE ns:g_1 gauge\n");
    srv_met_buf_fini(&b);
    srv_met_free(m);
    srv_met_free(NULL);
}

static void test_srv_met_render_grows_the_buffer(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_desc d = {.type = SRV_MET_COUNTER,
                             .name = "big_total",
                             .help = "Big.",
                             .labels = {"k"},
                             .max_series = 500};
    struct srv_met_family *f = srv_met_family_new(m, &d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char value[1001];
    for (int i = 0; i < 400; i++) {
        memset(value, 'a' + i % 26, 1000);
        char num[16];
        snprintf(num, sizeof(num), "%05d\"", i); /* the quote is escaped on the way out */
        memcpy(value, num, 6);
        value[1000] = '\0';
        srv_met_labels_add(f, (const char *const[]){value}, (double)i);
    }
    struct srv_met_buf b = {0};
    /* Appends after what is already there. */
    b.data = strdup("# prefix\n");
    CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
    b.len = b.cap = strlen(b.data);
    CU_ASSERT_EQUAL(srv_met_render(m, &b), 0);
    CU_ASSERT(b.len > 400 * 1000);
    CU_ASSERT_EQUAL(strlen(b.data), b.len);
    CU_ASSERT_EQUAL(strncmp(b.data, "# prefix\n# HELP big_total", 25), 0);
    char err[256];
    CU_ASSERT_EQUAL(promcheck(b.data, b.len, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "big_total{k=\"00399\\\"jjjj"));
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

/* ---- spindle's families --------------------------------------------------------------------- */

static void test_srv_met_server_families(void)
{
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_server s;
    CU_ASSERT_EQUAL_FATAL(srv_met_server_init(&s, m), 0);
    struct srv_met_server again;
    CU_ASSERT_EQUAL(srv_met_server_init(&again, m), -EEXIST);

    srv_met_http_request(&s, "/v1/jobs/noop", 200);
    srv_met_http_request(&s, "/v1/jobs/noop", 200);
    srv_met_http_request(&s, "/healthz", 503);
    srv_met_refusal(&s, "queue_full", "other");
    srv_met_job_times(&s, "noop", 700000, 30000000); /* 0.7 ms waiting, 30 ms running */
    srv_met_batch_job(&s, "any", "ok");
    srv_met_batch_job(&s, "any", "cancelled");
    srv_met_batch_job(&s, "any", "cancelled");
    srv_met_labels_add(s.family[SRV_MET_INFLIGHT], NULL, 3);
    srv_met_labels_add(s.family[SRV_MET_TENANT_QUEUE_DEPTH], (const char *const[]){"gold"}, 2);
    srv_met_labels_set(s.family[SRV_MET_LOOP_UTILIZATION], NULL, 0.5);
    struct probe depth = {.value = 7}, dropped = {.value = 4};
    CU_ASSERT_EQUAL(srv_met_series_fn(s.family[SRV_MET_QUEUE_DEPTH], NULL, read_probe, &depth), 0);
    CU_ASSERT_EQUAL(srv_met_series_fn(s.family[SRV_MET_LOG_DROPPED], NULL, read_probe, &dropped),
                    0);

    struct srv_met_buf b = {0};
    const char *text = render(m, &b);
    static const char *const want[] = {
        "# TYPE spindle_http_requests_total counter\n",
        "spindle_http_requests_total{route=\"/v1/jobs/noop\",status=\"200\"} 2\n",
        "spindle_http_requests_total{route=\"/healthz\",status=\"503\"} 1\n",
        "# TYPE spindle_inflight_requests gauge\nspindle_inflight_requests 3\n",
        "# TYPE spindle_queue_depth gauge\nspindle_queue_depth 7\n",
        "spindle_tenant_queue_depth{tenant=\"gold\"} 2\n",
        "spindle_refusals_total{reason=\"queue_full\",tenant=\"other\"} 1\n",
        "spindle_job_wait_seconds_bucket{kind=\"noop\",le=\"0.0005\"} 0\n",
        "spindle_job_wait_seconds_bucket{kind=\"noop\",le=\"0.001\"} 1\n",
        "spindle_job_wait_seconds_bucket{kind=\"noop\",le=\"+Inf\"} 1\n",
        "spindle_job_wait_seconds_sum{kind=\"noop\"} 0.0007\n",
        "spindle_job_run_seconds_bucket{kind=\"noop\",le=\"0.025\"} 0\n",
        "spindle_job_run_seconds_bucket{kind=\"noop\",le=\"0.05\"} 1\n",
        "spindle_job_run_seconds_bucket{kind=\"noop\",le=\"2.5\"} 1\n",
        "spindle_job_run_seconds_count{kind=\"noop\"} 1\n",
        "# TYPE spindle_loop_lag_seconds gauge\nspindle_loop_lag_seconds 0\n",
        "spindle_loop_utilization 0.5\n",
        "# TYPE spindle_open_connections gauge\nspindle_open_connections 0\n",
        "# TYPE spindle_log_lines_total counter\nspindle_log_lines_total 0\n",
        "# TYPE spindle_log_waits_total counter\nspindle_log_waits_total 0\n",
        "# TYPE spindle_log_dropped_total counter\nspindle_log_dropped_total 4\n",
        "# TYPE spindle_log_write_errors_total counter\nspindle_log_write_errors_total 0\n",
        "# TYPE spindle_log_lost_total counter\nspindle_log_lost_total 0\n",
        "# TYPE spindle_batch_jobs_total counter\n",
        "spindle_batch_jobs_total{mode=\"any\",status=\"ok\"} 1\n",
        "spindle_batch_jobs_total{mode=\"any\",status=\"cancelled\"} 2\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (strstr(text, want[i]) == NULL)
            fprintf(stderr, "missing: %s", want[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(text, want[i]));
    }
    /* Each family has exactly one HELP and one TYPE. */
    size_t helps = 0;
    for (const char *p = text; (p = strstr(p, "# HELP ")) != NULL; p++)
        helps++;
    CU_ASSERT_EQUAL(helps, 40);
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

/* The exposition of spindle's families, byte for byte, after one update of each labelled kind:
 * the text the server gave before its families became one table. */
static void test_srv_met_server_render_exact_text(void)
{
    static const char want[] =
        "# HELP spindle_http_requests_total HTTP requests answered, by route and status.\n"
        "# TYPE spindle_http_requests_total counter\n"
        "spindle_http_requests_total{route=\"/v1/jobs/noop\",status=\"200\"} 1\n"
        "# HELP spindle_inflight_requests Requests being served now.\n"
        "# TYPE spindle_inflight_requests gauge\n"
        "spindle_inflight_requests 0\n"
        "# HELP spindle_queue_depth Jobs queued in the worker pool now.\n"
        "# TYPE spindle_queue_depth gauge\n"
        "spindle_queue_depth 0\n"
        "# HELP spindle_tenant_queue_depth Jobs queued now, by tenant.\n"
        "# TYPE spindle_tenant_queue_depth gauge\n"
        "# HELP spindle_refusals_total Job requests refused by admission, by reason and tenant.\n"
        "# TYPE spindle_refusals_total counter\n"
        "spindle_refusals_total{reason=\"queue_full\",tenant=\"gold\"} 1\n"
        "# HELP spindle_job_wait_seconds Time jobs waited in the queue, by job kind.\n"
        "# TYPE spindle_job_wait_seconds histogram\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.0005\"} 0\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.001\"} 0\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.0025\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.005\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.01\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.025\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.05\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.1\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.25\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"0.5\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"1\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"2.5\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"5\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"10\"} 1\n"
        "spindle_job_wait_seconds_bucket{kind=\"spin\",le=\"+Inf\"} 1\n"
        "spindle_job_wait_seconds_sum{kind=\"spin\"} 0.002\n"
        "spindle_job_wait_seconds_count{kind=\"spin\"} 1\n"
        "# HELP spindle_job_run_seconds Time jobs ran on a worker, by job kind.\n"
        "# TYPE spindle_job_run_seconds histogram\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.0005\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.001\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.0025\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.005\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.01\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.025\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.05\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.1\"} 0\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.25\"} 1\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"0.5\"} 1\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"1\"} 1\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"2.5\"} 1\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"5\"} 1\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"10\"} 1\n"
        "spindle_job_run_seconds_bucket{kind=\"spin\",le=\"+Inf\"} 1\n"
        "spindle_job_run_seconds_sum{kind=\"spin\"} 0.12\n"
        "spindle_job_run_seconds_count{kind=\"spin\"} 1\n"
        "# HELP spindle_loop_lag_seconds Event loop lag (timer lateness).\n"
        "# TYPE spindle_loop_lag_seconds gauge\n"
        "spindle_loop_lag_seconds 0\n"
        "# HELP spindle_loop_utilization Share of time the event loop was busy (0..1).\n"
        "# TYPE spindle_loop_utilization gauge\n"
        "spindle_loop_utilization 0\n"
        "# HELP spindle_open_connections Client connections open now.\n"
        "# TYPE spindle_open_connections gauge\n"
        "spindle_open_connections 0\n"
        "# HELP spindle_log_lines_total Log lines accepted for writing.\n"
        "# TYPE spindle_log_lines_total counter\n"
        "spindle_log_lines_total 0\n"
        "# HELP spindle_log_waits_total Times a thread waited for log buffer space.\n"
        "# TYPE spindle_log_waits_total counter\n"
        "spindle_log_waits_total 0\n"
        "# HELP spindle_log_dropped_total Log lines dropped by the drop policy.\n"
        "# TYPE spindle_log_dropped_total counter\n"
        "spindle_log_dropped_total 0\n"
        "# HELP spindle_batch_jobs_total Sub-jobs of batch requests finished, by mode and status.\n"
        "# TYPE spindle_batch_jobs_total counter\n"
        "spindle_batch_jobs_total{mode=\"race\",status=\"cancelled\"} 1\n"
        "# HELP spindle_log_write_errors_total Failed writes to the log sink.\n"
        "# TYPE spindle_log_write_errors_total counter\n"
        "spindle_log_write_errors_total 0\n"
        "# HELP spindle_log_lost_total Log lines lost to a failing or stalled log sink.\n"
        "# TYPE spindle_log_lost_total counter\n"
        "spindle_log_lost_total 0\n"
        "# HELP spindle_build_info The running build: version and source commit; always 1.\n"
        "# TYPE spindle_build_info gauge\n"
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 0\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes 0\n"
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n"
        "process_virtual_memory_bytes 0\n"
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\n"
        "process_open_fds 0\n"
        "# HELP process_max_fds Maximum number of open file descriptors.\n"
        "# TYPE process_max_fds gauge\n"
        "process_max_fds 0\n"
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        "# TYPE process_start_time_seconds gauge\n"
        "process_start_time_seconds 0\n"
        "# HELP spindle_queue_capacity Jobs the worker pool's queue holds at most (saturation = "
        "spindle_queue_depth / this).\n"
        "# TYPE spindle_queue_capacity gauge\n"
        "spindle_queue_capacity 0\n"
        "# HELP spindle_auth_failures_total Requests refused for their credentials, by reason "
        "(missing, invalid, forbidden, throttled).\n"
        "# TYPE spindle_auth_failures_total counter\n"
        "# HELP spindle_auth_throttled_addresses Client addresses throttled now after failed "
        "authentications.\n"
        "# TYPE spindle_auth_throttled_addresses gauge\n"
        "spindle_auth_throttled_addresses 0\n"
        "# HELP spindle_tasks Durable tasks stored, by state and kind (refreshed every 2 s).\n"
        "# TYPE spindle_tasks gauge\n"
        "# HELP spindle_task_oldest_queued_age_seconds Age of the oldest task due to run and not "
        "running (0 when none).\n"
        "# TYPE spindle_task_oldest_queued_age_seconds gauge\n"
        "spindle_task_oldest_queued_age_seconds 0\n"
        "# HELP spindle_tasks_queued Durable tasks waiting to run (queued or retrying, due or not) "
        "in the whole store, by tenant: the 20 with the most, the others as other (refreshed "
        "every 2 s).\n"
        "# TYPE spindle_tasks_queued gauge\n"
        "# HELP spindle_task_attempts_total Task attempts started on the worker pool.\n"
        "# TYPE spindle_task_attempts_total counter\n"
        "spindle_task_attempts_total 0\n"
        "# HELP spindle_task_retries_total Task attempts that failed and were scheduled again.\n"
        "# TYPE spindle_task_retries_total counter\n"
        "spindle_task_retries_total 0\n"
        "# HELP spindle_task_lease_expiries_total Task attempts whose lease ran out "
        "(interrupted).\n"
        "# TYPE spindle_task_lease_expiries_total counter\n"
        "spindle_task_lease_expiries_total 0\n"
        "# HELP spindle_task_stale_completions_total Attempt outcomes discarded by the attempt "
        "fence.\n"
        "# TYPE spindle_task_stale_completions_total counter\n"
        "spindle_task_stale_completions_total 0\n"
        "# HELP spindle_tasks_purged_total Finished tasks deleted after retention_ms.\n"
        "# TYPE spindle_tasks_purged_total counter\n"
        "spindle_tasks_purged_total 0\n"
        "# HELP spindle_task_store_fsyncs_total Task store transactions that wrote (one fsync "
        "each).\n"
        "# TYPE spindle_task_store_fsyncs_total counter\n"
        "spindle_task_store_fsyncs_total 0\n"
        "# HELP spindle_task_store_commit_seconds Time to commit a group of task store requests.\n"
        "# TYPE spindle_task_store_commit_seconds histogram\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.0005\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.001\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.0025\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.005\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.01\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.025\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.05\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.1\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.25\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"0.5\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"1\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"2.5\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"5\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"10\"} 0\n"
        "spindle_task_store_commit_seconds_bucket{le=\"+Inf\"} 0\n"
        "spindle_task_store_commit_seconds_sum 0\n"
        "spindle_task_store_commit_seconds_count 0\n"
        "# HELP spindle_schedule_fires_total Schedule ticks by result: fired (a task stored), "
        "already (recorded before), skipped (missed while down), failed.\n"
        "# TYPE spindle_schedule_fires_total counter\n"
        "# HELP spindle_stream_bytes_total Bytes of streaming jobs: body in, answer out, by kind.\n"
        "# TYPE spindle_stream_bytes_total counter\n"
        "# HELP spindle_streams_open Streaming jobs admitted and not ended yet.\n"
        "# TYPE spindle_streams_open gauge\n"
        "spindle_streams_open 0\n"
        "# HELP spindle_stream_blocked_seconds_total Time streaming jobs waited on their clients "
        "(backpressure: an empty body or a full answer buffer).\n"
        "# TYPE spindle_stream_blocked_seconds_total counter\n";
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_server s;
    CU_ASSERT_EQUAL_FATAL(srv_met_server_init(&s, m), 0);
    srv_met_http_request(&s, "/v1/jobs/noop", 200);
    srv_met_refusal(&s, "queue_full", "gold");
    srv_met_job_times(&s, "spin", 2000000, 120000000); /* 2 ms waiting, 120 ms running */
    srv_met_batch_job(&s, "race", "cancelled");
    struct srv_met_buf b = {0};
    const char *text = render(m, &b);
    CU_ASSERT_EQUAL(b.len, sizeof(want) - 1);
    CU_ASSERT_STRING_EQUAL(text, want);
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

/* Every id of enum srv_met_family_id has its own family, registered (so rendered) in the enum's
 * order under its name. */
static void test_srv_met_server_init_one_family_per_id(void)
{
    static const char *const names[SRV_MET_NFAMILIES] = {
        [SRV_MET_HTTP_REQUESTS] = "spindle_http_requests_total",
        [SRV_MET_INFLIGHT] = "spindle_inflight_requests",
        [SRV_MET_QUEUE_DEPTH] = "spindle_queue_depth",
        [SRV_MET_TENANT_QUEUE_DEPTH] = "spindle_tenant_queue_depth",
        [SRV_MET_REFUSALS] = "spindle_refusals_total",
        [SRV_MET_JOB_WAIT] = "spindle_job_wait_seconds",
        [SRV_MET_JOB_RUN] = "spindle_job_run_seconds",
        [SRV_MET_LOOP_LAG] = "spindle_loop_lag_seconds",
        [SRV_MET_LOOP_UTILIZATION] = "spindle_loop_utilization",
        [SRV_MET_OPEN_CONNECTIONS] = "spindle_open_connections",
        [SRV_MET_LOG_LINES] = "spindle_log_lines_total",
        [SRV_MET_LOG_WAITS] = "spindle_log_waits_total",
        [SRV_MET_LOG_DROPPED] = "spindle_log_dropped_total",
        [SRV_MET_BATCH_JOBS] = "spindle_batch_jobs_total",
        [SRV_MET_LOG_WRITE_ERRORS] = "spindle_log_write_errors_total",
        [SRV_MET_LOG_LOST] = "spindle_log_lost_total",
        [SRV_MET_BUILD_INFO] = "spindle_build_info",
        [SRV_MET_PROCESS_CPU] = "process_cpu_seconds_total",
        [SRV_MET_PROCESS_RESIDENT] = "process_resident_memory_bytes",
        [SRV_MET_PROCESS_VIRTUAL] = "process_virtual_memory_bytes",
        [SRV_MET_PROCESS_OPEN_FDS] = "process_open_fds",
        [SRV_MET_PROCESS_MAX_FDS] = "process_max_fds",
        [SRV_MET_PROCESS_START_TIME] = "process_start_time_seconds",
        [SRV_MET_QUEUE_CAPACITY] = "spindle_queue_capacity",
        [SRV_MET_AUTH_FAILURES] = "spindle_auth_failures_total",
        [SRV_MET_AUTH_THROTTLED] = "spindle_auth_throttled_addresses",
        [SRV_MET_TASKS] = "spindle_tasks",
        [SRV_MET_TASK_OLDEST_QUEUED] = "spindle_task_oldest_queued_age_seconds",
        [SRV_MET_TASKS_QUEUED] = "spindle_tasks_queued",
        [SRV_MET_TASK_ATTEMPTS] = "spindle_task_attempts_total",
        [SRV_MET_TASK_RETRIES] = "spindle_task_retries_total",
        [SRV_MET_TASK_LEASE_EXPIRED] = "spindle_task_lease_expiries_total",
        [SRV_MET_TASK_STALE] = "spindle_task_stale_completions_total",
        [SRV_MET_TASK_PURGED] = "spindle_tasks_purged_total",
        [SRV_MET_TASK_FSYNCS] = "spindle_task_store_fsyncs_total",
        [SRV_MET_TASK_COMMIT] = "spindle_task_store_commit_seconds",
        [SRV_MET_SCHEDULE_FIRES] = "spindle_schedule_fires_total",
        [SRV_MET_STREAM_BYTES] = "spindle_stream_bytes_total",
        [SRV_MET_STREAMS_OPEN] = "spindle_streams_open",
        [SRV_MET_STREAM_BLOCKED] = "spindle_stream_blocked_seconds_total",
    };
    struct srv_met *m = srv_met_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    struct srv_met_server s;
    CU_ASSERT_EQUAL_FATAL(srv_met_server_init(&s, m), 0);
    for (size_t i = 0; i < SRV_MET_NFAMILIES; i++) {
        CU_ASSERT_PTR_NOT_NULL(s.family[i]);
        for (size_t j = 0; j < i; j++)
            CU_ASSERT_PTR_NOT_EQUAL(s.family[i], s.family[j]);
    }
    struct srv_met_buf b = {0};
    const char *p = render(m, &b);
    for (size_t i = 0; i < SRV_MET_NFAMILIES && p != NULL; i++) {
        char type[96];
        snprintf(type, sizeof(type), "# TYPE %s ", names[i]);
        p = strstr(p, "# TYPE ");
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL(strncmp(p, type, strlen(type)), 0);
        p++;
    }
    CU_ASSERT_PTR_NULL(strstr(p, "# TYPE ")); /* no family besides those */
    /* An update through an id reaches the family of that name. */
    srv_met_labels_add(s.family[SRV_MET_LOG_WAITS], NULL, 5);
    srv_met_labels_set(s.family[SRV_MET_OPEN_CONNECTIONS], NULL, 9);
    b.len = 0;
    const char *text = render(m, &b);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nspindle_log_waits_total 5\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nspindle_open_connections 9\n"));
    srv_met_buf_fini(&b);
    srv_met_free(m);
}

int suite_server_metrics_metrics(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_promcheck_accepts_valid_text),
        SPINDLE_TEST(test_promcheck_refuses_invalid_text),
        SPINDLE_TEST(test_srv_met_render_exact_text),
        SPINDLE_TEST(test_srv_met_render_escapes),
        SPINDLE_TEST(test_srv_met_values_formatting),
        SPINDLE_TEST(test_srv_met_series_get_folds_into_other),
        SPINDLE_TEST(test_srv_met_series_fn_read_at_render),
        SPINDLE_TEST(test_srv_met_family_new_rejects_bad_descriptions),
        SPINDLE_TEST(test_srv_met_render_grows_the_buffer),
        SPINDLE_TEST(test_srv_met_server_families),
        SPINDLE_TEST(test_srv_met_server_render_exact_text),
        SPINDLE_TEST(test_srv_met_server_init_one_family_per_id),
    };
    return SPINDLE_SUITE_ADD("server_metrics_metrics", NULL, NULL, tests);
}
