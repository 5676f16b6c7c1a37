/* promcheck.c - a strict one-pass checker of the Prometheus text exposition format 0.0.4.
 *
 * Design. The text is checked line by line. Families (declared by HELP/TYPE or implied by an
 * untyped sample) are kept in a list with their state; a family is "current" while its lines
 * come, and is closed when another family starts, at which point histogram invariants are checked
 * over the per-label-set state collected for it. Every series key (name plus its labels sorted by
 * name) is kept to detect duplicates. Everything is freed before returning; single-threaded.
 */
#include "tests/unit/promcheck.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 32

enum ftype { F_UNTYPED, F_COUNTER, F_GAUGE, F_HISTOGRAM, F_SUMMARY };

static const char *const type_names[] = {"untyped", "counter", "gauge", "histogram", "summary"};

struct family {
    char *name;
    enum ftype type;
    bool help, typed, sampled;
};

struct hist {      /* one label set of the current histogram */
    char *key;     /* labels without le */
    double le;     /* last bucket's bound */
    double bucket; /* last bucket's count */
    bool any_bucket, inf, has_count, has_sum;
    double inf_count, count;
};

struct label {
    char name[128];
    char *value; /* unescaped, owned */
};

struct sample {
    char name[256];
    struct label labels[MAX_LABELS];
    size_t nlabels;
    double value;
};

struct checker {
    unsigned line;
    char *err;
    size_t errsz;
    struct family *fams;
    size_t nfams, capfams;
    long cur; /* index of the current family, -1 before the first */
    struct hist *hists;
    size_t nhists, caphists;
    char **keys;
    size_t nkeys, capkeys;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static int fail(struct checker *c, const char *fmt, ...)
{
    if (c->errsz > 0) {
        int n = snprintf(c->err, c->errsz, "line %u: ", c->line);
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < c->errsz)
            vsnprintf(c->err + n, c->errsz - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int nomem(struct checker *c)
{
    c->oom = true;
    if (c->errsz > 0)
        snprintf(c->err, c->errsz, "out of memory");
    return -ENOMEM;
}

/* Grow *arr (of *cap elements of `size`) to hold one more. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * size);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ---- lexical pieces ------------------------------------------------------------------------- */

static bool is_alpha(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Length of the metric name (colon) or label name at s, 0 when none. */
static size_t name_len(const char *s, const char *end, bool colon)
{
    size_t n = 0;
    while (s + n < end && (is_alpha(s[n]) || (colon && s[n] == ':') || (n > 0 && is_digit(s[n]))))
        n++;
    return n;
}

/* Parse a float of the format over exactly [s, end). */
static bool parse_float(const char *s, const char *end, double *out)
{
    size_t n = (size_t)(end - s);
    char buf[64];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!strcmp(buf, "+Inf") || !strcmp(buf, "Inf") || !strcmp(buf, "-Inf")) {
        *out = buf[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (!strcmp(buf, "NaN")) {
        *out = NAN;
        return true;
    }
    const char *p = buf + (buf[0] == '+' || buf[0] == '-');
    size_t digits = 0;
    for (; is_digit(*p); p++)
        digits++;
    if (*p == '.')
        for (p++; is_digit(*p); p++)
            digits++;
    if (digits == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p += 1 + (p[1] == '+' || p[1] == '-');
        if (!is_digit(*p))
            return false;
        while (is_digit(*p))
            p++;
    }
    if (*p != '\0')
        return false;
    *out = strtod(buf, NULL);
    return true;
}

static bool parse_int(const char *s, const char *end)
{
    if (s < end && *s == '-')
        s++;
    if (s == end || end - s > 19)
        return false;
    for (; s < end; s++)
        if (!is_digit(*s))
            return false;
    return true;
}

/* Valid UTF-8 without NUL and without overlong forms or surrogates. */
static long utf8_bad_offset(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char b = s[i];
        size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (b == 0 || n == 0 || i + n > len || (n == 2 && b < 0xc2) || b > 0xf4)
            return (long)i;
        for (size_t k = 1; k < n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return (long)i;
        if ((n == 3 && b == 0xe0 && s[i + 1] < 0xa0) || (n == 3 && b == 0xed && s[i + 1] >= 0xa0) ||
            (n == 4 && b == 0xf0 && s[i + 1] < 0x90) || (n == 4 && b == 0xf4 && s[i + 1] >= 0x90))
            return (long)i;
        i += n;
    }
    return -1;
}

/* ---- families ------------------------------------------------------------------------------- */

static long family_index(const struct checker *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->nfams; i++)
        if (strlen(c->fams[i].name) == n && memcmp(c->fams[i].name, name, n) == 0)
            return (long)i;
    return -1;
}

static void hists_clear(struct checker *c)
{
    for (size_t i = 0; i < c->nhists; i++)
        free(c->hists[i].key);
    c->nhists = 0;
}

/* The current family ends: check what only its end can tell. */
static int family_close(struct checker *c)
{
    if (c->cur < 0 || c->fams[c->cur].type != F_HISTOGRAM)
        return 0;
    const char *name = c->fams[c->cur].name;
    for (size_t i = 0; i < c->nhists; i++) {
        const struct hist *h = &c->hists[i];
        if (!h->inf)
            return fail(c, "histogram %s{%s} has no le=\"+Inf\" bucket", name, h->key);
        if (!h->has_count || !h->has_sum)
            return fail(c, "histogram %s{%s} lacks _count or _sum", name, h->key);
        if (h->count != h->inf_count)
            return fail(c, "histogram %s{%s}: _count %g differs from the +Inf bucket %g", name,
                        h->key, h->count, h->inf_count);
    }
    hists_clear(c);
    return 0;
}

/* Make family `name` current, creating it; a family that was already closed may not come back. */
static int family_enter(struct checker *c, const char *name, size_t n, long *out)
{
    long i = family_index(c, name, n);
    if (i >= 0 && i == c->cur) {
        *out = i;
        return 0;
    }
    if (i >= 0)
        return fail(c, "lines of family %s are not contiguous", c->fams[i].name);
    int rc = family_close(c);
    if (rc != 0)
        return rc;
    if (grow((void **)&c->fams, &c->capfams, c->nfams, sizeof(*c->fams)) != 0)
        return nomem(c);
    struct family *f = &c->fams[c->nfams];
    memset(f, 0, sizeof(*f));
    f->name = strndup(name, n);
    if (f->name == NULL)
        return nomem(c);
    c->cur = *out = (long)c->nfams++;
    return 0;
}

/* ---- comment lines -------------------------------------------------------------------------- */

static int check_help_text(struct checker *c, const char *s, const char *end)
{
    for (; s < end; s++) {
        if (*s != '\\')
            continue;
        if (s + 1 == end || (s[1] != '\\' && s[1] != 'n'))
            return fail(c, "bad escape in HELP text");
        s++;
    }
    return 0;
}

static int parse_meta(struct checker *c, const char *p, const char *end, bool help)
{
    size_t n = name_len(p, end, true);
    if (n == 0)
        return fail(c, "%s without a valid metric name", help ? "HELP" : "TYPE");
    long fi;
    int rc = family_enter(c, p, n, &fi);
    if (rc != 0)
        return rc;
    struct family *f = &c->fams[fi];
    p += n;
    if (help) {
        if (f->help)
            return fail(c, "second HELP for %s", f->name);
        f->help = true;
        if (p < end && *p != ' ')
            return fail(c, "HELP name %s followed by junk", f->name);
        return p < end ? check_help_text(c, p + 1, end) : 0;
    }
    if (f->typed)
        return fail(c, "second TYPE for %s", f->name);
    if (f->sampled)
        return fail(c, "TYPE for %s after its samples", f->name);
    if (p == end || *p != ' ')
        return fail(c, "TYPE %s without a type", f->name);
    p++;
    for (size_t t = 0; t < sizeof(type_names) / sizeof(type_names[0]); t++) {
        if ((size_t)(end - p) == strlen(type_names[t]) && !memcmp(p, type_names[t], end - p)) {
            f->type = (enum ftype)t;
            f->typed = true;
            return 0;
        }
    }
    return fail(c, "unknown TYPE for %s", f->name);
}

static int parse_comment(struct checker *c, const char *p, const char *end)
{
    p++; /* '#' */
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *tok = p;
    while (p < end && *p != ' ' && *p != '\t')
        p++;
    bool help = (size_t)(p - tok) == 4 && memcmp(tok, "HELP", 4) == 0;
    bool type = (size_t)(p - tok) == 4 && memcmp(tok, "TYPE", 4) == 0;
    if (!help && !type)
        return 0; /* a plain comment */
    if (p == end || *p != ' ')
        return fail(c, "%s without a metric name", help ? "HELP" : "TYPE");
    return parse_meta(c, p + 1, end, help);
}

/* ---- samples -------------------------------------------------------------------------------- */

static void sample_free(struct sample *s)
{
    for (size_t i = 0; i < s->nlabels; i++)
        free(s->labels[i].value);
    s->nlabels = 0;
}

/* A quoted label value at *pp (just after the opening quote), unescaped into a new string. */
static int parse_label_value(struct checker *c, const char **pp, const char *end, char **out)
{
    const char *p = *pp;
    char *v = malloc((size_t)(end - p) + 1), *w = v;
    if (v == NULL)
        return nomem(c);
    for (; p < end && *p != '"'; p++) {
        if (*p == '\\') {
            p++;
            if (p == end || (*p != '\\' && *p != '"' && *p != 'n')) {
                free(v);
                return fail(c, "bad escape in a label value");
            }
            *w++ = *p == 'n' ? '\n' : *p;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    if (p == end) {
        free(v);
        return fail(c, "unterminated label value");
    }
    *pp = p + 1;
    *out = v;
    return 0;
}

static int parse_label(struct checker *c, struct sample *s, const char **pp, const char *end)
{
    const char *p = *pp;
    size_t n = name_len(p, end, false);
    if (n == 0 || n >= sizeof(s->labels[0].name))
        return fail(c, "bad label name in %s", s->name);
    if (n >= 2 && p[0] == '_' && p[1] == '_')
        return fail(c, "reserved label name (starts with __) in %s", s->name);
    if (s->nlabels == MAX_LABELS)
        return fail(c, "too many labels in %s", s->name);
    struct label *l = &s->labels[s->nlabels];
    memcpy(l->name, p, n);
    l->name[n] = '\0';
    for (size_t i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, l->name) == 0)
            return fail(c, "label %s twice in %s", l->name, s->name);
    p += n;
    if (end - p < 2 || p[0] != '=' || p[1] != '"')
        return fail(c, "label %s in %s: expected =\"", l->name, s->name);
    p += 2;
    int rc = parse_label_value(c, &p, end, &l->value);
    if (rc != 0)
        return rc;
    s->nlabels++;
    *pp = p;
    return 0;
}

static int parse_labels(struct checker *c, struct sample *s, const char **pp, const char *end)
{
    const char *p = *pp + 1; /* '{' */
    while (p < end && *p != '}') {
        int rc = parse_label(c, s, &p, end);
        if (rc != 0)
            return rc;
        if (p < end && *p == ',')
            p++;
        else if (p == end || *p != '}')
            return fail(c, "expected , or } after a label in %s", s->name);
    }
    if (p == end)
        return fail(c, "unterminated label set in %s", s->name);
    *pp = p + 1;
    return 0;
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const struct label *)a)->name, ((const struct label *)b)->name);
}

/* `name\x01a="x",b="y"` over the labels sorted by name, leaving out `skip` (may be NULL). */
static char *series_key(const struct sample *s, const char *skip)
{
    struct label sorted[MAX_LABELS];
    memcpy(sorted, s->labels, s->nlabels * sizeof(*sorted));
    qsort(sorted, s->nlabels, sizeof(*sorted), cmp_label);
    size_t size = strlen(s->name) + 2;
    for (size_t i = 0; i < s->nlabels; i++)
        size += strlen(sorted[i].name) + strlen(sorted[i].value) + 4;
    char *key = malloc(size), *w = key;
    if (key == NULL)
        return NULL;
    w += sprintf(w, "%s\x01", skip != NULL ? "" : s->name);
    for (size_t i = 0; i < s->nlabels; i++) {
        if (skip != NULL && strcmp(sorted[i].name, skip) == 0)
            continue;
        w += sprintf(w, "%s%s=\"%s\"", w[-1] == '\x01' ? "" : ",", sorted[i].name, sorted[i].value);
    }
    return key;
}

static int check_duplicate(struct checker *c, const struct sample *s)
{
    char *key = series_key(s, NULL);
    if (key == NULL)
        return nomem(c);
    for (size_t i = 0; i < c->nkeys; i++) {
        if (strcmp(c->keys[i], key) == 0) {
            free(key);
            return fail(c, "duplicate series %s", s->name);
        }
    }
    if (grow((void **)&c->keys, &c->capkeys, c->nkeys, sizeof(*c->keys)) != 0) {
        free(key);
        return nomem(c);
    }
    c->keys[c->nkeys++] = key;
    return 0;
}

static const struct label *label_get(const struct sample *s, const char *name)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, name) == 0)
            return &s->labels[i];
    return NULL;
}

enum part { P_BARE, P_BUCKET, P_SUM, P_COUNT };

/* The family a sample belongs to: name_bucket/_sum/_count of a declared histogram (or _sum/_count
 * of a summary) belong to it; any other name is its own family. */
static size_t sample_family(const struct checker *c, const char *name, enum part *part)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(name);
    for (size_t i = 0; i < 3; i++) {
        size_t sl = strlen(suffixes[i]);
        if (n <= sl || strcmp(name + n - sl, suffixes[i]) != 0)
            continue;
        long fi = family_index(c, name, n - sl);
        if (fi < 0)
            continue;
        enum ftype t = c->fams[fi].type;
        if (t == F_HISTOGRAM || (t == F_SUMMARY && i > 0)) {
            *part = (enum part)(i + 1);
            return n - sl;
        }
    }
    *part = P_BARE;
    return n;
}

static struct hist *hist_get(struct checker *c, const struct sample *s)
{
    char *key = series_key(s, "le");
    if (key == NULL)
        return NULL;
    for (size_t i = 0; i < c->nhists; i++) {
        if (strcmp(c->hists[i].key, key + 1) == 0) {
            free(key);
            return &c->hists[i];
        }
    }
    if (grow((void **)&c->hists, &c->caphists, c->nhists, sizeof(*c->hists)) != 0) {
        free(key);
        return NULL;
    }
    struct hist *h = &c->hists[c->nhists++];
    memset(h, 0, sizeof(*h));
    memmove(key, key + 1, strlen(key)); /* drop the empty name and its separator */
    h->key = key;
    return h;
}

static int check_bucket(struct checker *c, const struct sample *s, struct hist *h)
{
    const struct label *le = label_get(s, "le");
    double bound;
    if (le == NULL)
        return fail(c, "%s without an le label", s->name);
    if (!parse_float(le->value, le->value + strlen(le->value), &bound) || isnan(bound))
        return fail(c, "%s: le=\"%s\" is not a float", s->name, le->value);
    if (!(s->value >= 0))
        return fail(c, "%s: negative or NaN bucket count", s->name);
    if (h->any_bucket && !(bound > h->le))
        return fail(c, "%s: le=\"%s\" not above the previous bucket's", s->name, le->value);
    if (h->any_bucket && s->value < h->bucket)
        return fail(c, "%s: bucket counts are not cumulative", s->name);
    h->any_bucket = true;
    h->le = bound;
    h->bucket = s->value;
    if (isinf(bound) && bound > 0) {
        h->inf = true;
        h->inf_count = s->value;
    }
    return 0;
}

static int check_histogram(struct checker *c, const struct sample *s, enum part part)
{
    if (part == P_BARE)
        return fail(c, "sample %s of a histogram needs _bucket, _sum or _count", s->name);
    if (part != P_BUCKET && label_get(s, "le") != NULL)
        return fail(c, "%s must not have an le label", s->name);
    struct hist *h = hist_get(c, s);
    if (h == NULL)
        return nomem(c);
    if (part == P_BUCKET)
        return check_bucket(c, s, h);
    if (part == P_COUNT) {
        if (!(s->value >= 0))
            return fail(c, "%s: negative or NaN count", s->name);
        h->has_count = true;
        h->count = s->value;
    } else {
        h->has_sum = true;
    }
    return 0;
}

static int check_summary(struct checker *c, const struct sample *s, enum part part)
{
    const struct label *q = label_get(s, "quantile");
    double v;
    if (part != P_BARE)
        return q != NULL ? fail(c, "%s must not have a quantile label", s->name) : 0;
    if (q == NULL)
        return fail(c, "summary sample %s without a quantile label", s->name);
    if (!parse_float(q->value, q->value + strlen(q->value), &v) || !(v >= 0 && v <= 1))
        return fail(c, "%s: quantile=\"%s\" is not in [0, 1]", s->name, q->value);
    return 0;
}

static int check_sample(struct checker *c, const struct sample *s)
{
    enum part part;
    size_t n = sample_family(c, s->name, &part);
    long fi;
    int rc = family_enter(c, s->name, n, &fi);
    if (rc == 0)
        rc = check_duplicate(c, s);
    if (rc != 0)
        return rc;
    struct family *f = &c->fams[fi];
    f->sampled = true;
    switch (f->type) {
    case F_COUNTER:
        return s->value >= 0 ? 0 : fail(c, "counter %s is negative or NaN", s->name);
    case F_HISTOGRAM:
        return check_histogram(c, s, part);
    case F_SUMMARY:
        return check_summary(c, s, part);
    default:
        return 0;
    }
}

/* After the name and labels: " value" and optionally " timestamp", nothing else. */
static int parse_value(struct checker *c, struct sample *s, const char *p, const char *end)
{
    if (p == end || *p != ' ')
        return fail(c, "%s: expected one space and a value", s->name);
    const char *v = ++p;
    while (p < end && *p != ' ')
        p++;
    if (!parse_float(v, p, &s->value))
        return fail(c, "%s: bad value '%.*s'", s->name, (int)(p - v), v);
    if (p < end && !parse_int(p + 1, end))
        return fail(c, "%s: bad timestamp or trailing characters", s->name);
    return 0;
}

static int parse_sample(struct checker *c, const char *p, const char *end)
{
    struct sample s;
    s.nlabels = 0;
    size_t n = name_len(p, end, true);
    if (n == 0 || n >= sizeof(s.name))
        return fail(c, "line is neither a comment nor a sample with a valid metric name");
    memcpy(s.name, p, n);
    s.name[n] = '\0';
    p += n;
    int rc = 0;
    if (p < end && *p == '{')
        rc = parse_labels(c, &s, &p, end);
    if (rc == 0)
        rc = parse_value(c, &s, p, end);
    if (rc == 0)
        rc = check_sample(c, &s);
    sample_free(&s);
    return rc;
}

/* ---- driver --------------------------------------------------------------------------------- */

static void checker_fini(struct checker *c)
{
    hists_clear(c);
    free(c->hists);
    for (size_t i = 0; i < c->nfams; i++)
        free(c->fams[i].name);
    free(c->fams);
    for (size_t i = 0; i < c->nkeys; i++)
        free(c->keys[i]);
    free(c->keys);
}

static unsigned line_of(const char *text, size_t off)
{
    unsigned line = 1;
    for (size_t i = 0; i < off; i++)
        line += text[i] == '\n';
    return line;
}

int promcheck(const char *text, size_t len, char *err, size_t errsz)
{
    struct checker c = {.err = err, .errsz = errsz, .cur = -1};
    if (errsz > 0)
        err[0] = '\0';
    long bad = utf8_bad_offset((const unsigned char *)text, len);
    if (bad >= 0) {
        c.line = line_of(text, (size_t)bad);
        return fail(&c, "invalid UTF-8 or NUL byte at offset %ld", bad);
    }
    if (len > 0 && text[len - 1] != '\n') {
        c.line = line_of(text, len);
        return fail(&c, "the text does not end with a newline");
    }
    int rc = 0;
    for (const char *p = text, *end; rc == 0 && p < text + len; p = end + 1) {
        end = memchr(p, '\n', (size_t)(text + len - p));
        c.line++;
        if (end == p)
            rc = fail(&c, "blank line");
        else if (*p == '#')
            rc = parse_comment(&c, p, end);
        else
            rc = parse_sample(&c, p, end);
    }
    if (rc == 0)
        rc = family_close(&c);
    checker_fini(&c);
    return rc;
}
