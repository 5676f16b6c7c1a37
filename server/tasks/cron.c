/* cron.c - cron expressions: parse the five fields (or a macro, or @every), and find the next
 * time an expression fires after a given time.
 *
 * Design: a parsed expression is a bit set per field (struct srv_cron), so matching is a bit test.
 * The next fire time is searched in the zone's wall-clock time, field by field from the largest:
 * a month that does not match skips to the next month, a day to the next day, an hour to the next
 * matching hour, and the minute is the next set bit; each candidate wall time is turned into an
 * instant by srv_tz_from_local (tz.c), which defines what skipped and repeated wall times do
 * (cron.h). Wall times only grow during the search and srv_tz_from_local never maps a later wall
 * time to an earlier instant, so the first candidate after `after` is the answer. The search is
 * bounded (CRON_YEARS_MAX years, CRON_ITER_MAX steps): srv_cron_parse refuses expressions whose
 * day fields can never match, so the bound is only a guard.
 *
 * Threads: no state; every function is reentrant.
 */
#include "server/tasks/cron.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRON_YEARS_MAX 100
#define CRON_ITER_MAX  200000
#define CRON_EVERY_MAX (366u * 86400u)

enum { CF_MINUTE, CF_HOUR, CF_MDAY, CF_MONTH, CF_WDAY, CF_COUNT };

struct cron_field {
    const char *name;
    unsigned min, max;
    const char *const *names; /* NULL: numbers only */
    unsigned name_base;       /* the value of names[0] */
    const char *name_range;   /* for messages: "JAN-DEC" */
};

static const char *const cron_month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                               "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const cron_wday_names[] = {"SUN", "MON", "TUE", "WED",
                                              "THU", "FRI", "SAT", NULL};

static const struct cron_field cron_fields[CF_COUNT] = {
    [CF_MINUTE] = {"minute", 0, 59, NULL, 0, NULL},
    [CF_HOUR] = {"hour", 0, 23, NULL, 0, NULL},
    [CF_MDAY] = {"day-of-month", 1, 31, NULL, 0, NULL},
    [CF_MONTH] = {"month", 1, 12, cron_month_names, 1, "JAN-DEC"},
    [CF_WDAY] = {"day-of-week", 0, 7, cron_wday_names, 0, "SUN-SAT"},
};

static const struct {
    const char *name;
    const char *expr;
} cron_macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

__attribute__((format(printf, 3, 4))) static int cron_fail(char *err, size_t size, const char *fmt,
                                                           ...)
{
    if (err != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* ---- parsing -------------------------------------------------------------------------------- */

/* One value of field `f` at the start of [s, e): a number, or a name when the field has names.
 * *end is set past it. */
static int cron_value(const struct cron_field *f, const char *s, const char *e, const char **end,
                      unsigned *out, char *err, size_t size)
{
    const char *p = s;
    if (p < e && isdigit((unsigned char)*p)) {
        unsigned v = 0;
        for (; p < e && isdigit((unsigned char)*p); p++) {
            if (v < 1000)
                v = v * 10 + (unsigned)(*p - '0');
        }
        if (v < f->min || v > f->max)
            return cron_fail(err, size, "%s: %.*s is out of range %u-%u", f->name, (int)(p - s), s,
                             f->min, f->max);
        *out = v;
        *end = p;
        return 0;
    }
    for (; p < e && isalpha((unsigned char)*p); p++)
        ;
    if (p == s)
        return cron_fail(err, size, "%s: expected a number%s, got \"%.*s\"", f->name,
                         f->names ? " or a name" : "", (int)(e - s), s);
    if (f->names == NULL)
        return cron_fail(err, size, "%s: expected a number %u-%u, got \"%.*s\"", f->name, f->min,
                         f->max, (int)(p - s), s);
    for (unsigned i = 0; f->names[i] != NULL; i++) {
        if (p - s == 3 && strncasecmp(s, f->names[i], 3) == 0) {
            *out = f->name_base + i;
            *end = p;
            return 0;
        }
    }
    return cron_fail(err, size, "%s: unknown name \"%.*s\" (expected %s or %u-%u)", f->name,
                     (int)(p - s), s, f->name_range, f->min, f->max);
}

/* One list item of field `f`, [s, e): "*", "N", "N-M", each with an optional "/STEP". */
static int cron_item(const struct cron_field *f, const char *s, const char *e, uint64_t *bits,
                     char *err, size_t size)
{
    unsigned lo = f->min, hi = f->max, step = 1;
    const char *p = s;
    if (p == e)
        return cron_fail(err, size, "%s: empty list item", f->name);
    bool star = *p == '*';
    if (star) {
        p++;
    } else {
        int rc = cron_value(f, p, e, &p, &lo, err, size);
        if (rc != 0)
            return rc;
        hi = lo;
        if (p < e && *p == '-') {
            rc = cron_value(f, p + 1, e, &p, &hi, err, size);
            if (rc != 0)
                return rc;
            if (hi < lo)
                return cron_fail(err, size, "%s: range %.*s is reversed", f->name, (int)(p - s), s);
        }
    }
    if (p < e && *p == '/') {
        const char *n = ++p;
        unsigned v = 0;
        for (; p < e && isdigit((unsigned char)*p); p++) {
            if (v < 1000)
                v = v * 10 + (unsigned)(*p - '0');
        }
        if (p == n || p != e)
            return cron_fail(err, size, "%s: expected a step number after \"/\" in \"%.*s\"",
                             f->name, (int)(e - s), s);
        if (v == 0 || v > f->max)
            return cron_fail(err, size, "%s: step %u is out of range 1-%u", f->name, v, f->max);
        step = v;
        if (!star && hi == lo)
            hi = f->max; /* "N/STEP": from N to the end */
    }
    if (p != e)
        return cron_fail(err, size, "%s: unexpected \"%.*s\" in \"%.*s\"", f->name, (int)(e - p), p,
                         (int)(e - s), s);
    for (unsigned v = lo; v <= hi; v += step)
        *bits |= 1ull << v;
    return 0;
}

/* A whole field [s, e): comma-separated items. */
static int cron_field_parse(const struct cron_field *f, const char *s, const char *e,
                            uint64_t *bits, char *err, size_t size)
{
    *bits = 0;
    for (;;) {
        const char *comma = memchr(s, ',', (size_t)(e - s));
        const char *ie = comma ? comma : e;
        int rc = cron_item(f, s, ie, bits, err, size);
        if (rc != 0)
            return rc;
        if (comma == NULL)
            return 0;
        s = comma + 1;
    }
}

static bool cron_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned cron_month_days(int64_t y, unsigned m)
{
    static const unsigned char days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && cron_leap(y) ? 29 : days[m - 1];
}

/* Can the day fields ever match? Only an AND of a day-of-month list with the months can fail. */
static bool cron_days_possible(const struct srv_cron *c)
{
    if (!c->mday_star && !c->wday_star)
        return true; /* either field: some weekday comes every week */
    for (unsigned m = 1; m <= 12; m++) {
        if (!(c->months & (1u << m)))
            continue;
        unsigned max = m == 2 ? 29 : cron_month_days(2001, m);
        if (c->mdays & ((2ull << max) - 2))
            return true;
    }
    return false;
}

/* "@every D": D = whole number + s, m, h or d. */
static int cron_every_parse(const char *d, struct srv_cron *out, char *err, size_t size)
{
    while (isspace((unsigned char)*d))
        d++;
    char *end;
    errno = 0;
    unsigned long long v = isdigit((unsigned char)*d) ? strtoull(d, &end, 10) : 0;
    unsigned long long mult = 0;
    if (v > 0 && errno == 0 && end[0] != '\0' && end[1] == '\0') {
        const char *units = "smhd";
        static const unsigned long long secs[] = {1, 60, 3600, 86400};
        const char *u = strchr(units, end[0]);
        mult = u ? secs[u - units] : 0;
    }
    if (mult == 0)
        return cron_fail(err, size,
                         "@every: expected a duration like 30s, 5m, 2h or 1d, got \"%s\"", d);
    if (v > CRON_EVERY_MAX / mult)
        return cron_fail(err, size, "@every: %s is longer than 366d", d);
    out->every_s = (uint32_t)(v * mult);
    return 0;
}

/* The five fields of `text` (no macro). */
static int cron_fields_parse(const char *text, struct srv_cron *out, char *err, size_t size)
{
    const char *fs[CF_COUNT + 1], *fe[CF_COUNT + 1];
    unsigned n = 0;
    for (const char *p = text; *p;) {
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            break;
        const char *s = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (n <= CF_COUNT) {
            fs[n] = s;
            fe[n] = p;
        }
        n++;
    }
    if (n != CF_COUNT)
        return cron_fail(err, size,
                         "expected 5 fields (minute hour day-of-month month day-of-week) or a "
                         "macro (@hourly, @daily, @weekly, @monthly, @yearly, @every 30s), got %u",
                         n);
    uint64_t bits[CF_COUNT];
    for (unsigned i = 0; i < CF_COUNT; i++) {
        int rc = cron_field_parse(&cron_fields[i], fs[i], fe[i], &bits[i], err, size);
        if (rc != 0)
            return rc;
    }
    out->minutes = bits[CF_MINUTE];
    out->hours = (uint32_t)bits[CF_HOUR];
    out->mdays = (uint32_t)bits[CF_MDAY];
    out->months = (uint16_t)bits[CF_MONTH];
    out->wdays = (uint8_t)((bits[CF_WDAY] | (bits[CF_WDAY] >> 7)) & 0x7f); /* 7 is Sunday */
    out->mday_star = *fs[CF_MDAY] == '*';
    out->wday_star = *fs[CF_WDAY] == '*';
    if (!cron_days_possible(out))
        return cron_fail(err, size,
                         "day-of-month: no selected month has any of these days, so \"%s\" "
                         "never fires",
                         text);
    return 0;
}

int srv_cron_parse(const char *text, struct srv_cron *out, char *err, size_t size)
{
    struct srv_cron c = {0};
    while (isspace((unsigned char)*text))
        text++;
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    if (len == 0)
        return cron_fail(err, size, "empty expression");
    if (len >= sizeof(c.text))
        return cron_fail(err, size, "expression longer than %zu bytes", sizeof(c.text) - 1);
    memcpy(c.text, text, len);
    int rc;
    if (c.text[0] == '@') {
        size_t nlen = strcspn(c.text, " \t");
        if (nlen == 6 && strncmp(c.text, "@every", 6) == 0) {
            rc = cron_every_parse(c.text + 6, &c, err, size);
        } else {
            const char *expr = NULL;
            for (size_t i = 0; i < sizeof(cron_macros) / sizeof(cron_macros[0]); i++) {
                if (strcmp(c.text, cron_macros[i].name) == 0)
                    expr = cron_macros[i].expr;
            }
            if (expr == NULL)
                return cron_fail(err, size,
                                 "unknown macro \"%s\" (known: @yearly, @annually, @monthly, "
                                 "@weekly, @daily, @midnight, @hourly, @every DURATION)",
                                 c.text);
            rc = cron_fields_parse(expr, &c, err, size);
        }
    } else {
        rc = cron_fields_parse(c.text, &c, err, size);
    }
    if (rc == 0)
        *out = c;
    return rc;
}

/* ---- the calendar --------------------------------------------------------------------------- */

/* Floor division: the calendar must work before 1970 too. */
static int64_t cron_fdiv(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Days from 1970-01-01 by eras of 400 years (146097 days), each era starting on March 1st so
 * that the leap day is the last day of its year. */
int64_t srv_cron_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = cron_fdiv(y, 400);
    int64_t yoe = y - era * 400;                                                     /* 0..399 */
    int64_t doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1; /* 0..365 */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;                             /* 0..146096 */
    return era * 146097 + doe - 719468;
}

void srv_cron_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    days += 719468;
    int64_t era = cron_fdiv(days, 146097);
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

char *srv_cron_time_format(int64_t t, char *buf, size_t size)
{
    int64_t days = cron_fdiv(t, 86400), y;
    int64_t s = t - days * 86400;
    unsigned m, d;
    srv_cron_civil_from_days(days, &y, &m, &d);
    snprintf(buf, size, "%04lld-%02u-%02uT%02u:%02u:%02uZ", (long long)y, m, d,
             (unsigned)(s / 3600), (unsigned)(s / 60 % 60), (unsigned)(s % 60));
    return buf;
}

/* ---- the next fire time --------------------------------------------------------------------- */

/* A wall-clock position of the search. */
struct cron_pos {
    int64_t y;
    unsigned mo, d, h, mi;
};

static bool cron_day_match(const struct srv_cron *c, const struct cron_pos *p)
{
    bool md = c->mdays & (1u << p->d);
    int64_t days = srv_cron_days_from_civil(p->y, p->mo, p->d);
    unsigned wd = (unsigned)(days + 4 - cron_fdiv(days + 4, 7) * 7); /* 1970-01-01: Thursday */
    bool wdm = c->wdays & (1u << wd);
    if (c->mday_star || c->wday_star)
        return md && wdm;
    return md || wdm;
}

/* Carry overflowing fields into the next larger one. */
static void cron_pos_normalise(struct cron_pos *p)
{
    if (p->mi > 59) {
        p->mi = 0;
        p->h++;
    }
    if (p->h > 23) {
        p->h = 0;
        p->d++;
    }
    if (p->d > cron_month_days(p->y, p->mo)) {
        p->d = 1;
        p->mo++;
    }
    if (p->mo > 12) {
        p->mo = 1;
        p->y++;
    }
}

/* The lowest set bit of `bits` at or above `from`, or -1. */
static int cron_bit_from(uint64_t bits, unsigned from)
{
    bits = from < 64 ? bits >> from << from : 0;
    return bits ? __builtin_ctzll(bits) : -1;
}

static int64_t cron_every_next(uint32_t every, int64_t after)
{
    return (cron_fdiv(after, every) + 1) * every;
}

int srv_cron_next(const struct srv_cron *c, const struct srv_tz *tz, int64_t after, int64_t *next)
{
    if (c->every_s > 0) {
        *next = cron_every_next(c->every_s, after);
        return 0;
    }
    if (tz == NULL)
        tz = srv_tz_utc();
    int64_t local = after + srv_tz_offset(tz, after);
    int64_t days = cron_fdiv(local, 86400);
    int64_t secs = local - days * 86400;
    struct cron_pos p = {0, 0, 0, (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60) + 1};
    srv_cron_civil_from_days(days, &p.y, &p.mo, &p.d);
    int64_t y_end = p.y + CRON_YEARS_MAX;
    for (unsigned i = 0; i < CRON_ITER_MAX && p.y <= y_end; i++) {
        cron_pos_normalise(&p);
        if (!(c->months & (1u << p.mo))) {
            p.mo++, p.d = 1, p.h = 0, p.mi = 0;
            if (p.mo > 12)
                p.mo = 1, p.y++;
            continue;
        }
        if (!cron_day_match(c, &p)) {
            p.d++, p.h = 0, p.mi = 0;
            continue;
        }
        int h = cron_bit_from(c->hours, p.h);
        if (h < 0) {
            p.d++, p.h = 0, p.mi = 0;
            continue;
        }
        if ((unsigned)h != p.h) {
            p.h = (unsigned)h, p.mi = 0;
        }
        int mi = cron_bit_from(c->minutes, p.mi);
        if (mi < 0) {
            p.h++, p.mi = 0;
            continue;
        }
        p.mi = (unsigned)mi;
        int64_t wall = srv_cron_days_from_civil(p.y, p.mo, p.d) * 86400 + p.h * 3600 + p.mi * 60;
        int64_t t = srv_tz_from_local(tz, wall);
        if (t > after) {
            *next = t;
            return 0;
        }
        p.mi++; /* a repeated wall time already passed, or a skipped one that ends at `after` */
    }
    return -ERANGE;
}

int srv_cron_latest(const struct srv_cron *c, const struct srv_tz *tz, int64_t after, int64_t now,
                    int64_t *tick)
{
    *tick = 0;
    if (now <= after)
        return 0;
    if (c->every_s > 0) {
        int64_t t = cron_fdiv(now, c->every_s) * c->every_s;
        *tick = t > after ? t : 0;
        return 0;
    }
    /* The last tick of (from, now] for a window that grows until it holds one or reaches after:
     * a minute-by-minute expression finds its tick in the first hour. */
    for (int64_t window = 3600;; window *= 32) {
        int64_t from = now - window > after ? now - window : after, t = from, next;
        while (srv_cron_next(c, tz, t, &next) == 0 && next <= now)
            t = next;
        if (t > from) {
            *tick = t;
            return 0;
        }
        if (from == after)
            return 0;
    }
}
