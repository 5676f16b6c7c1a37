/* metrics.c - the metrics registry and its rendering in the Prometheus text format 0.0.4.
 *
 * Design. A registry is a singly linked list of families in registration order. A family owns its
 * copied name, help and label names, and its series twice linked: a list in creation order (for
 * rendering) and chained hash buckets keyed by the label values (for lookup, sized once for
 * max_series + 1). A series is one allocation holding its label values as NUL-terminated strings;
 * a histogram series also owns a per-bucket (not cumulative) count array, made cumulative while
 * rendering, so an observation is one binary search and one increment.
 *
 * Invariants: a family holds at most max_series label sets plus the overflow series (all values
 * "other"), which is created on the first update that does not fit and never counts towards the
 * bound. Series are never removed, so pointers handed out stay valid while the registry lives.
 *
 * Threads: one owner thread for everything, asserted; render-time callbacks run on it too.
 * Rendering appends to a growing buffer; a failed allocation undoes the whole render, so the
 * output is never cut short.
 *
 * spindle's own families are one designated-initializer table indexed by enum
 * srv_met_family_id (metrics.h), registered in the enum's order: a family is one entry, and
 * srv_met_server_init neither restates names nor keeps a list in step with it.
 */
#include "server/metrics/metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv_met_series {
    struct srv_met_series *next;  /* creation order */
    struct srv_met_series *hnext; /* hash chain */
    struct srv_met_family *family;
    uint32_t hash;
    double value;
    srv_met_value_fn *fn; /* non-NULL: value read through fn(arg) */
    void *arg;
    uint64_t *counts; /* histogram: nbounds + 1 per-bucket counts */
    uint64_t count;
    double sum;
    const char *values[SRV_MET_MAX_LABELS];
    char data[]; /* the label values */
};

struct srv_met_family {
    struct srv_met_family *next;
    struct srv_met *reg;
    enum srv_met_type type;
    char *name, *help;
    char *labels[SRV_MET_MAX_LABELS];
    size_t nlabels;
    double bounds[SRV_MET_MAX_BOUNDS];
    size_t nbounds;
    size_t max_series;
    size_t nseries; /* label sets, the overflow one excluded */
    struct srv_met_series *head, **tail;
    struct srv_met_series *overflow;
    struct srv_met_series **buckets;
    size_t nbuckets; /* a power of two */
};

struct srv_met {
    struct srv_met_family *head, **tail;
    pthread_t owner;
};

static void assert_owner(const struct srv_met *m)
{
    assert(pthread_equal(pthread_self(), m->owner));
    (void)m;
}

/* ---- output buffer -------------------------------------------------------------------------- */

void srv_met_buf_fini(struct srv_met_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* The renderer's writer: once an append fails, later ones are skipped and `failed` stays set, so
 * rendering code checks once at the end instead of after every piece. */
struct out {
    struct srv_met_buf *b;
    bool failed;
};

static void put(struct out *o, const char *s, size_t n)
{
    struct srv_met_buf *b = o->b;
    if (o->failed)
        return;
    if (b->cap - b->len <= n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= n)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            o->failed = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void put_str(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Append `s`, escaping backslash and newline, and double quote too when `quote`. */
static void put_escaped(struct out *o, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(o, "\\\\", 2);
        else if (*s == '\n')
            put(o, "\\n", 2);
        else if (*s == '"' && quote)
            put(o, "\\\"", 2);
        else
            put(o, s, 1);
    }
}

/* A float as the format writes it: NaN, +Inf, -Inf, integers without a fraction, otherwise the
 * shortest %g that reads back as the same double (0.005, not 0.0050000000000000001). */
static void format_double(double v, char out[40])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, 40, "%.0f", v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, 40, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

/* ---- names ---------------------------------------------------------------------------------- */

static bool name_valid(const char *s, bool colon)
{
    if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || (colon && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

static bool labels_valid(const struct srv_met_desc *d, size_t *count)
{
    size_t n = 0;
    for (; n <= SRV_MET_MAX_LABELS && d->labels[n] != NULL; n++) {
        const char *l = d->labels[n];
        if (n == SRV_MET_MAX_LABELS || !name_valid(l, false) || strncmp(l, "__", 2) == 0)
            return false;
        if (d->type == SRV_MET_HISTOGRAM && strcmp(l, "le") == 0)
            return false;
        for (size_t j = 0; j < n; j++)
            if (strcmp(d->labels[j], l) == 0)
                return false;
    }
    *count = n;
    return true;
}

static bool bounds_valid(const struct srv_met_desc *d)
{
    if (d->type != SRV_MET_HISTOGRAM)
        return true;
    if (d->bounds == NULL || d->nbounds == 0 || d->nbounds > SRV_MET_MAX_BOUNDS)
        return false;
    for (size_t i = 0; i < d->nbounds; i++) {
        if (!isfinite(d->bounds[i]) || (i > 0 && d->bounds[i] <= d->bounds[i - 1]))
            return false;
    }
    return true;
}

/* ---- registry and families ------------------------------------------------------------------ */

struct srv_met *srv_met_new(void)
{
    struct srv_met *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->tail = &m->head;
    m->owner = pthread_self();
    return m;
}

static void series_free(struct srv_met_series *s)
{
    if (s == NULL)
        return;
    free(s->counts);
    free(s);
}

static void family_free(struct srv_met_family *f)
{
    if (f == NULL)
        return;
    struct srv_met_series *s = f->head, *next;
    for (; s != NULL; s = next) {
        next = s->next;
        series_free(s);
    }
    series_free(f->overflow);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->buckets);
    free(f->name);
    free(f->help);
    free(f);
}

void srv_met_free(struct srv_met *m)
{
    if (m == NULL)
        return;
    struct srv_met_family *f = m->head, *next;
    for (; f != NULL; f = next) {
        next = f->next;
        family_free(f);
    }
    free(m);
}

static struct srv_met_family *family_find(const struct srv_met *m, const char *name)
{
    for (struct srv_met_family *f = m->head; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static int family_fill(struct srv_met_family *f, const struct srv_met_desc *d, size_t nlabels)
{
    f->type = d->type;
    f->name = strdup(d->name);
    f->help = strdup(d->help != NULL ? d->help : "");
    if (f->name == NULL || f->help == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < nlabels; i++) {
        f->labels[i] = strdup(d->labels[i]);
        if (f->labels[i] == NULL)
            return -ENOMEM;
        f->nlabels++;
    }
    if (d->type == SRV_MET_HISTOGRAM) {
        memcpy(f->bounds, d->bounds, d->nbounds * sizeof(*d->bounds));
        f->nbounds = d->nbounds;
    }
    f->max_series = nlabels == 0 ? 1 : d->max_series ? d->max_series : SRV_MET_DEFAULT_SERIES;
    f->nbuckets = 8;
    while (f->nbuckets < f->max_series + 1)
        f->nbuckets *= 2;
    f->buckets = calloc(f->nbuckets, sizeof(*f->buckets));
    f->tail = &f->head;
    return f->buckets != NULL ? 0 : -ENOMEM;
}

struct srv_met_family *srv_met_family_new(struct srv_met *m, const struct srv_met_desc *d)
{
    assert_owner(m);
    size_t nlabels = 0;
    if (d == NULL || !name_valid(d->name, true) || !labels_valid(d, &nlabels) || !bounds_valid(d) ||
        (unsigned)d->type > SRV_MET_HISTOGRAM || family_find(m, d->name))
        return NULL;
    struct srv_met_family *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->reg = m;
    if (family_fill(f, d, nlabels) != 0)
        goto fail;
    if (nlabels == 0 && srv_met_series_get(f, NULL) == NULL)
        goto fail;
    *m->tail = f;
    m->tail = &f->next;
    return f;
fail:
    family_free(f);
    return NULL;
}

size_t srv_met_family_series(const struct srv_met_family *f)
{
    return f->nseries + (f->overflow != NULL);
}

/* ---- series --------------------------------------------------------------------------------- */

static uint32_t values_hash(const struct srv_met_family *f, const char *const *values)
{
    uint32_t h = 2166136261u; /* FNV-1a over the values, each followed by a 0xff separator */
    for (size_t i = 0; i < f->nlabels; i++) {
        for (const char *p = values[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 16777619u;
        h = (h ^ 0xffu) * 16777619u;
    }
    return h;
}

static bool values_equal(const struct srv_met_series *s, const char *const *values)
{
    for (size_t i = 0; i < s->family->nlabels; i++)
        if (strcmp(s->values[i], values[i]) != 0)
            return false;
    return true;
}

static struct srv_met_series *series_alloc(struct srv_met_family *f, const char *const *values,
                                           uint32_t h)
{
    size_t bytes = 0;
    for (size_t i = 0; i < f->nlabels; i++)
        bytes += strlen(values[i]) + 1;
    struct srv_met_series *s = calloc(1, sizeof(*s) + bytes);
    if (s == NULL)
        return NULL;
    if (f->type == SRV_MET_HISTOGRAM) {
        s->counts = calloc(f->nbounds + 1, sizeof(*s->counts));
        if (s->counts == NULL) {
            free(s);
            return NULL;
        }
    }
    s->family = f;
    s->hash = h;
    char *p = s->data;
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(p, values[i], n);
        s->values[i] = p;
        p += n;
    }
    return s;
}

static struct srv_met_series *series_overflow(struct srv_met_family *f)
{
    if (f->overflow == NULL) {
        const char *other[SRV_MET_MAX_LABELS];
        for (size_t i = 0; i < f->nlabels; i++)
            other[i] = SRV_MET_OTHER;
        f->overflow = series_alloc(f, other, 0);
    }
    return f->overflow;
}

/* True when the family has labels and every value is "other": the overflow series' label set. */
static bool values_other(const struct srv_met_family *f, const char *const *values)
{
    for (size_t i = 0; i < f->nlabels; i++)
        if (strcmp(values[i], SRV_MET_OTHER) != 0)
            return false;
    return f->nlabels > 0;
}

static bool values_present(const struct srv_met_family *f, const char *const *values)
{
    if (f->nlabels == 0)
        return true;
    if (values == NULL)
        return false;
    for (size_t i = 0; i < f->nlabels; i++)
        if (values[i] == NULL)
            return false;
    return true;
}

/* Find the series for `values`; *h gets their hash. */
static struct srv_met_series *series_find(const struct srv_met_family *f, const char *const *values,
                                          uint32_t *h)
{
    *h = values_hash(f, values);
    struct srv_met_series *s = f->buckets[*h & (f->nbuckets - 1)];
    while (s != NULL && (s->hash != *h || !values_equal(s, values)))
        s = s->hnext;
    return s;
}

static struct srv_met_series *series_insert(struct srv_met_family *f, const char *const *values,
                                            uint32_t h)
{
    struct srv_met_series *s = series_alloc(f, values, h);
    if (s == NULL)
        return NULL;
    struct srv_met_series **slot = &f->buckets[h & (f->nbuckets - 1)];
    s->hnext = *slot;
    *slot = s;
    *f->tail = s;
    f->tail = &s->next;
    f->nseries++;
    return s;
}

struct srv_met_series *srv_met_series_get(struct srv_met_family *f, const char *const *values)
{
    assert_owner(f->reg);
    if (!values_present(f, values))
        return NULL;
    /* A literal all-"other" label set is the overflow series itself, so it is never rendered
     * twice. */
    if (values_other(f, values))
        return series_overflow(f);
    uint32_t h;
    struct srv_met_series *s = series_find(f, values, &h);
    if (s != NULL)
        return s;
    if (f->nseries >= f->max_series)
        return series_overflow(f);
    return series_insert(f, values, h);
}

void srv_met_add(struct srv_met_series *s, double v)
{
    if (s == NULL || s->fn != NULL || s->family->type == SRV_MET_HISTOGRAM)
        return;
    if (s->family->type == SRV_MET_COUNTER && !(v >= 0))
        return; /* counters never go down; NaN is no increment either */
    s->value += v;
}

void srv_met_set(struct srv_met_series *s, double v)
{
    if (s == NULL || s->fn != NULL || s->family->type != SRV_MET_GAUGE)
        return;
    s->value = v;
}

void srv_met_observe(struct srv_met_series *s, double v)
{
    if (s == NULL || s->family->type != SRV_MET_HISTOGRAM || isnan(v))
        return;
    const struct srv_met_family *f = s->family;
    size_t lo = 0, hi = f->nbounds; /* first bound >= v; nbounds is the +Inf bucket */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (f->bounds[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    s->counts[lo]++;
    s->count++;
    s->sum += v;
}

int srv_met_series_fn(struct srv_met_family *f, const char *const *values, srv_met_value_fn *fn,
                      void *arg)
{
    assert_owner(f->reg);
    if (fn == NULL || f->type == SRV_MET_HISTOGRAM || !values_present(f, values) ||
        values_other(f, values))
        return -EINVAL;
    uint32_t h;
    struct srv_met_series *s = series_find(f, values, &h);
    if (s == NULL) {
        if (f->nseries >= f->max_series)
            return -ENOSPC;
        s = series_insert(f, values, h);
        if (s == NULL)
            return -ENOMEM;
    }
    s->fn = fn;
    s->arg = arg;
    return 0;
}

void srv_met_labels_add(struct srv_met_family *f, const char *const *values, double v)
{
    srv_met_add(srv_met_series_get(f, values), v);
}

void srv_met_labels_set(struct srv_met_family *f, const char *const *values, double v)
{
    srv_met_set(srv_met_series_get(f, values), v);
}

void srv_met_labels_observe(struct srv_met_family *f, const char *const *values, double v)
{
    srv_met_observe(srv_met_series_get(f, values), v);
}

double srv_met_value(const struct srv_met_series *s)
{
    if (s == NULL)
        return 0;
    if (s->family->type == SRV_MET_HISTOGRAM)
        return (double)s->count;
    return s->fn != NULL ? s->fn(s->arg) : s->value;
}

/* ---- rendering ------------------------------------------------------------------------------ */

/* `name<suffix>{a="x",b="y"[,le="..."]} value\n`; `le` NULL for no le label. */
static void render_sample(struct out *o, const struct srv_met_series *s, const char *suffix,
                          const char *le, double v)
{
    const struct srv_met_family *f = s->family;
    put_str(o, f->name);
    put_str(o, suffix);
    if (f->nlabels > 0 || le != NULL) {
        put(o, "{", 1);
        for (size_t i = 0; i < f->nlabels; i++) {
            if (i > 0)
                put(o, ",", 1);
            put_str(o, f->labels[i]);
            put(o, "=\"", 2);
            put_escaped(o, s->values[i], true);
            put(o, "\"", 1);
        }
        if (le != NULL) {
            put_str(o, f->nlabels > 0 ? ",le=\"" : "le=\"");
            put_str(o, le);
            put(o, "\"", 1);
        }
        put(o, "}", 1);
    }
    char num[40];
    format_double(v, num);
    put(o, " ", 1);
    put_str(o, num);
    put(o, "\n", 1);
}

static void render_histogram(struct out *o, const struct srv_met_series *s)
{
    const struct srv_met_family *f = s->family;
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i < f->nbounds; i++) {
        cum += s->counts[i];
        format_double(f->bounds[i], le);
        render_sample(o, s, "_bucket", le, (double)cum);
    }
    render_sample(o, s, "_bucket", "+Inf", (double)s->count);
    render_sample(o, s, "_sum", NULL, s->sum);
    render_sample(o, s, "_count", NULL, (double)s->count);
}

static void render_series(struct out *o, const struct srv_met_series *s)
{
    if (s->family->type == SRV_MET_HISTOGRAM)
        render_histogram(o, s);
    else
        render_sample(o, s, "", NULL, srv_met_value(s));
}

static const char *type_name(enum srv_met_type t)
{
    return t == SRV_MET_COUNTER ? "counter" : t == SRV_MET_GAUGE ? "gauge" : "histogram";
}

static void render_family(struct out *o, const struct srv_met_family *f)
{
    put_str(o, "# HELP ");
    put_str(o, f->name);
    put(o, " ", 1);
    put_escaped(o, f->help, false);
    put_str(o, "\n# TYPE ");
    put_str(o, f->name);
    put(o, " ", 1);
    put_str(o, type_name(f->type));
    put(o, "\n", 1);
    for (const struct srv_met_series *s = f->head; s != NULL; s = s->next)
        render_series(o, s);
    if (f->overflow != NULL)
        render_series(o, f->overflow);
}

int srv_met_render(const struct srv_met *m, struct srv_met_buf *out)
{
    assert_owner(m);
    struct out o = {.b = out};
    size_t start = out->len;
    for (const struct srv_met_family *f = m->head; f != NULL && !o.failed; f = f->next)
        render_family(&o, f);
    if (!o.failed)
        return 0;
    out->len = start;
    if (out->data != NULL)
        out->data[start] = '\0';
    return -ENOMEM;
}

/* ---- spindle's families --------------------------------------------------------------------- */

const double srv_met_job_seconds_bounds[14] = {.0005, .001, .0025, .005, .01, .025, .05,
                                               .1,    .25,  .5,    1,    2.5, 5,    10};

/* Label sets per family: routes x statuses, and reasons x (configured tenants + other). */
#define REQUEST_SERIES 256
#define TENANT_SERIES  512
#define KIND_SERIES    32
#define BATCH_SERIES   12 /* 4 modes x 3 statuses */

#define JOB_SECONDS                                                                                \
    .bounds = srv_met_job_seconds_bounds,                                                          \
    .nbounds = sizeof(srv_met_job_seconds_bounds) / sizeof(srv_met_job_seconds_bounds[0])

/* One entry per family, in registration (and so rendering) order: the enum's order. */
static const struct srv_met_desc server_families[] = {
    [SRV_MET_HTTP_REQUESTS] = {.type = SRV_MET_COUNTER,
                               .name = "spindle_http_requests_total",
                               .help = "HTTP requests answered, by route and status.",
                               .labels = {"route", "status"},
                               .max_series = REQUEST_SERIES},
    [SRV_MET_INFLIGHT] = {.type = SRV_MET_GAUGE,
                          .name = "spindle_inflight_requests",
                          .help = "Requests being served now."},
    [SRV_MET_QUEUE_DEPTH] = {.type = SRV_MET_GAUGE,
                             .name = "spindle_queue_depth",
                             .help = "Jobs queued in the worker pool now."},
    [SRV_MET_TENANT_QUEUE_DEPTH] = {.type = SRV_MET_GAUGE,
                                    .name = "spindle_tenant_queue_depth",
                                    .help = "Jobs queued now, by tenant.",
                                    .labels = {"tenant"},
                                    .max_series = TENANT_SERIES},
    [SRV_MET_REFUSALS] = {.type = SRV_MET_COUNTER,
                          .name = "spindle_refusals_total",
                          .help = "Job requests refused by admission, by reason and tenant.",
                          .labels = {"reason", "tenant"},
                          .max_series = TENANT_SERIES},
    [SRV_MET_JOB_WAIT] = {.type = SRV_MET_HISTOGRAM,
                          .name = "spindle_job_wait_seconds",
                          .help = "Time jobs waited in the queue, by job kind.",
                          .labels = {"kind"},
                          .max_series = KIND_SERIES,
                          JOB_SECONDS},
    [SRV_MET_JOB_RUN] = {.type = SRV_MET_HISTOGRAM,
                         .name = "spindle_job_run_seconds",
                         .help = "Time jobs ran on a worker, by job kind.",
                         .labels = {"kind"},
                         .max_series = KIND_SERIES,
                         JOB_SECONDS},
    [SRV_MET_LOOP_LAG] = {.type = SRV_MET_GAUGE,
                          .name = "spindle_loop_lag_seconds",
                          .help = "Event loop lag (timer lateness)."},
    [SRV_MET_LOOP_UTILIZATION] = {.type = SRV_MET_GAUGE,
                                  .name = "spindle_loop_utilization",
                                  .help = "Share of time the event loop was busy (0..1)."},
    [SRV_MET_OPEN_CONNECTIONS] = {.type = SRV_MET_GAUGE,
                                  .name = "spindle_open_connections",
                                  .help = "Client connections open now."},
    [SRV_MET_LOG_LINES] = {.type = SRV_MET_COUNTER,
                           .name = "spindle_log_lines_total",
                           .help = "Log lines accepted for writing."},
    [SRV_MET_LOG_WAITS] = {.type = SRV_MET_COUNTER,
                           .name = "spindle_log_waits_total",
                           .help = "Times a thread waited for log buffer space."},
    [SRV_MET_LOG_DROPPED] = {.type = SRV_MET_COUNTER,
                             .name = "spindle_log_dropped_total",
                             .help = "Log lines dropped by the drop policy."},
    [SRV_MET_BATCH_JOBS] = {.type = SRV_MET_COUNTER,
                            .name = "spindle_batch_jobs_total",
                            .help = "Sub-jobs of batch requests finished, by mode and status.",
                            .labels = {"mode", "status"},
                            .max_series = BATCH_SERIES},
    [SRV_MET_LOG_WRITE_ERRORS] = {.type = SRV_MET_COUNTER,
                                  .name = "spindle_log_write_errors_total",
                                  .help = "Failed writes to the log sink."},
    [SRV_MET_LOG_LOST] = {.type = SRV_MET_COUNTER,
                          .name = "spindle_log_lost_total",
                          .help = "Log lines lost to a failing or stalled log sink."},
    /* One series, value 1: the labels say what runs (join on it in queries). */
    [SRV_MET_BUILD_INFO] = {.type = SRV_MET_GAUGE,
                            .name = "spindle_build_info",
                            .help = "The running build: version and source commit; always 1.",
                            .labels = {"version", "commit"},
                            .max_series = 1},
    /* The standard process families, named and typed as the Prometheus client libraries do. */
    [SRV_MET_PROCESS_CPU] = {.type = SRV_MET_COUNTER,
                             .name = "process_cpu_seconds_total",
                             .help = "Total user and system CPU time spent in seconds."},
    [SRV_MET_PROCESS_RESIDENT] = {.type = SRV_MET_GAUGE,
                                  .name = "process_resident_memory_bytes",
                                  .help = "Resident memory size in bytes."},
    [SRV_MET_PROCESS_VIRTUAL] = {.type = SRV_MET_GAUGE,
                                 .name = "process_virtual_memory_bytes",
                                 .help = "Virtual memory size in bytes."},
    [SRV_MET_PROCESS_OPEN_FDS] = {.type = SRV_MET_GAUGE,
                                  .name = "process_open_fds",
                                  .help = "Number of open file descriptors."},
    [SRV_MET_PROCESS_MAX_FDS] = {.type = SRV_MET_GAUGE,
                                 .name = "process_max_fds",
                                 .help = "Maximum number of open file descriptors."},
    [SRV_MET_PROCESS_START_TIME] = {.type = SRV_MET_GAUGE,
                                    .name = "process_start_time_seconds",
                                    .help = "Start time of the process since unix epoch in "
                                            "seconds."},
    [SRV_MET_QUEUE_CAPACITY] = {.type = SRV_MET_GAUGE,
                                .name = "spindle_queue_capacity",
                                .help = "Jobs the worker pool's queue holds at most "
                                        "(saturation = spindle_queue_depth / this)."},
    [SRV_MET_AUTH_FAILURES] = {.type = SRV_MET_COUNTER,
                               .name = "spindle_auth_failures_total",
                               .help = "Requests refused for their credentials, by reason "
                                       "(missing, invalid, forbidden, throttled).",
                               .labels = {"reason"},
                               .max_series = 8},
    [SRV_MET_AUTH_THROTTLED] = {.type = SRV_MET_GAUGE,
                                .name = "spindle_auth_throttled_addresses",
                                .help = "Client addresses throttled now after failed "
                                        "authentications."},
    /* Durable tasks (server/api/tasks.h): counts read from the store every few seconds. */
    [SRV_MET_TASKS] = {.type = SRV_MET_GAUGE,
                       .name = "spindle_tasks",
                       .help = "Durable tasks stored, by state and kind (refreshed every 2 s).",
                       .labels = {"state", "kind"},
                       .max_series = 6 * KIND_SERIES},
    [SRV_MET_TASK_OLDEST_QUEUED] = {.type = SRV_MET_GAUGE,
                                    .name = "spindle_task_oldest_queued_age_seconds",
                                    .help = "Age of the oldest task due to run and not running "
                                            "(0 when none)."},
    /* The top tenants by waiting tasks (server/api/task_metrics.c), the rest as "other"; a
     * tenant that leaves the top stays at 0, so the bound counts every tenant ever shown. */
    [SRV_MET_TASKS_QUEUED] = {.type = SRV_MET_GAUGE,
                              .name = "spindle_tasks_queued",
                              .help = "Durable tasks waiting to run (queued or retrying, due or "
                                      "not) in the whole store, by tenant: the 20 with the most, "
                                      "the others as other (refreshed every 2 s).",
                              .labels = {"tenant"},
                              .max_series = 128},
    [SRV_MET_TASK_ATTEMPTS] = {.type = SRV_MET_COUNTER,
                               .name = "spindle_task_attempts_total",
                               .help = "Task attempts started on the worker pool."},
    [SRV_MET_TASK_RETRIES] = {.type = SRV_MET_COUNTER,
                              .name = "spindle_task_retries_total",
                              .help = "Task attempts that failed and were scheduled again."},
    [SRV_MET_TASK_LEASE_EXPIRED] = {.type = SRV_MET_COUNTER,
                                    .name = "spindle_task_lease_expiries_total",
                                    .help = "Task attempts whose lease ran out (interrupted)."},
    [SRV_MET_TASK_STALE] = {.type = SRV_MET_COUNTER,
                            .name = "spindle_task_stale_completions_total",
                            .help = "Attempt outcomes discarded by the attempt fence."},
    [SRV_MET_TASK_PURGED] = {.type = SRV_MET_COUNTER,
                             .name = "spindle_tasks_purged_total",
                             .help = "Finished tasks deleted after retention_ms."},
    [SRV_MET_TASK_FSYNCS] = {.type = SRV_MET_COUNTER,
                             .name = "spindle_task_store_fsyncs_total",
                             .help = "Task store transactions that wrote (one fsync each)."},
    [SRV_MET_TASK_COMMIT] = {.type = SRV_MET_HISTOGRAM,
                             .name = "spindle_task_store_commit_seconds",
                             .help = "Time to commit a group of task store requests.",
                             JOB_SECONDS},
    [SRV_MET_SCHEDULE_FIRES] = {.type = SRV_MET_COUNTER,
                                .name = "spindle_schedule_fires_total",
                                .help = "Schedule ticks by result: fired (a task stored), already "
                                        "(recorded before), skipped (missed while down), failed.",
                                .labels = {"schedule", "result"},
                                .max_series = 256},
    [SRV_MET_STREAM_BYTES] = {.type = SRV_MET_COUNTER,
                              .name = "spindle_stream_bytes_total",
                              .help = "Bytes of streaming jobs: body in, answer out, by kind.",
                              .labels = {"kind", "direction"},
                              .max_series = 2 * KIND_SERIES},
    [SRV_MET_STREAMS_OPEN] = {.type = SRV_MET_GAUGE,
                              .name = "spindle_streams_open",
                              .help = "Streaming jobs admitted and not ended yet."},
    [SRV_MET_STREAM_BLOCKED] = {.type = SRV_MET_COUNTER,
                                .name = "spindle_stream_blocked_seconds_total",
                                .help = "Time streaming jobs waited on their clients "
                                        "(backpressure: an empty body or a full answer buffer).",
                                .labels = {"kind"},
                                .max_series = KIND_SERIES},
};

_Static_assert(sizeof(server_families) / sizeof(server_families[0]) == SRV_MET_NFAMILIES,
               "every enum srv_met_family_id has its entry in server_families");

int srv_met_server_init(struct srv_met_server *s, struct srv_met *m)
{
    for (size_t i = 0; i < SRV_MET_NFAMILIES; i++) {
        /* A designated initializer leaves a forgotten id as a zeroed hole. */
        assert(server_families[i].name != NULL);
        if (family_find(m, server_families[i].name) != NULL)
            return -EEXIST;
    }
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < SRV_MET_NFAMILIES; i++) {
        /* Only out of memory can fail past the name check; families already added stay
         * registered (the registry frees them) and the caller gives up on metrics. */
        s->family[i] = srv_met_family_new(m, &server_families[i]);
        if (s->family[i] == NULL)
            return -ENOMEM;
    }
    return 0;
}

void srv_met_http_request(const struct srv_met_server *s, const char *route, int status)
{
    char code[16];
    snprintf(code, sizeof(code), "%d", status);
    srv_met_labels_add(s->family[SRV_MET_HTTP_REQUESTS], (const char *const[]){route, code}, 1);
}

void srv_met_refusal(const struct srv_met_server *s, const char *reason, const char *tenant)
{
    srv_met_labels_add(s->family[SRV_MET_REFUSALS], (const char *const[]){reason, tenant}, 1);
}

void srv_met_batch_job(const struct srv_met_server *s, const char *mode, const char *status)
{
    srv_met_labels_add(s->family[SRV_MET_BATCH_JOBS], (const char *const[]){mode, status}, 1);
}

void srv_met_job_times(const struct srv_met_server *s, const char *kind, uint64_t wait_ns,
                       uint64_t run_ns)
{
    srv_met_labels_observe(s->family[SRV_MET_JOB_WAIT], (const char *const[]){kind},
                           (double)wait_ns / 1e9);
    srv_met_labels_observe(s->family[SRV_MET_JOB_RUN], (const char *const[]){kind},
                           (double)run_ns / 1e9);
}

void srv_met_stream_open(const struct srv_met_server *s, int delta)
{
    srv_met_labels_add(s->family[SRV_MET_STREAMS_OPEN], (const char *const[]){NULL}, delta);
}

void srv_met_stream_done(const struct srv_met_server *s, const char *kind, uint64_t bytes_in,
                         uint64_t bytes_out, uint64_t blocked_ns)
{
    srv_met_labels_add(s->family[SRV_MET_STREAM_BYTES], (const char *const[]){kind, "in"},
                       (double)bytes_in);
    srv_met_labels_add(s->family[SRV_MET_STREAM_BYTES], (const char *const[]){kind, "out"},
                       (double)bytes_out);
    srv_met_labels_add(s->family[SRV_MET_STREAM_BLOCKED], (const char *const[]){kind},
                       (double)blocked_ns / 1e9);
}
