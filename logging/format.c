/* format.c - turns one log call into one JSON line.
 *
 * Design: everything here is a pure function of its arguments (plus the caller's timestamp
 * cache), with no locks, no allocation, no stdio and no locale except for doubles, so producers
 * format on their own thread and the crash handler can format its last line. Output is bounded
 * by construction: each string is escaped against an explicit byte budget (LOG_VALUE_MAX for
 * values, LOG_KEY_MAX for keys), the fixed head of a line fits easily, and every later member is
 * appended only while the line is below its limit; a member that pushes the line past
 * LOG_LINE_MAX is rolled back and replaced by "truncated":true. The caller's buffer holds
 * LOG_FMT_BUF bytes: one full line plus one maximal member, so the roll-back never overflows.
 *
 * Strings: printable ASCII runs are copied with memcpy; quote, backslash and control characters
 * get short escapes or \u00XX; multi-byte UTF-8 is validated (no overlong forms, no surrogates,
 * nothing above U+10FFFF) and each maximal invalid subpart becomes U+FFFD. A value cut for length
 * ends on a character boundary followed by "...(truncated)".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>

#include "logging/internal.h"

static const char *const level_names[LOG_LEVEL__COUNT] = {
    "trace", "debug", "info", "warn", "error", "fatal",
};

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level >= LOG_LEVEL__COUNT)
        return "unknown";
    return level_names[level];
}

int log_level_parse(const char *name, enum log_level *out)
{
    if (name == NULL || out == NULL)
        return -EINVAL;
    for (int i = 0; i < LOG_LEVEL__COUNT; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -EINVAL;
}

/* ---- strings ------------------------------------------------------------------------------ */

/* Bytes copied as they are: printable ASCII other than '"' and '\\', and DEL. */
#define P4  1, 1, 1, 1
#define P16 P4, P4, P4, P4
static const bool plain_tab[256] = {
    [0x20] = 1,   1,   0,  1, P4, P4, P4, /* 0x22 '"' */
    [0x30] = P16, P16,                    /* 0x30-0x4f */
    [0x50] = P4,  P4,  P4, 0, 1,  1,  1,  /* 0x5c '\\' */
    [0x60] = P16, P16,                    /* 0x60-0x7f */
};
#undef P4
#undef P16

static inline bool plain(unsigned char c)
{
    return plain_tab[c];
}

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* True when one of the eight bytes at s is not plain: >= 0x80, < 0x20, '"' or '\\' (the usual
 * "has a byte below n" word tricks). */
static inline bool word_special(const unsigned char *s)
{
    uint64_t x, q, b;
    memcpy(&x, s, 8);
    q = x ^ (ONES * '"');
    b = x ^ (ONES * '\\');
    return ((x | ((x - ONES * 0x20) & ~x) | ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS) != 0;
}

/* Length of the run of plain bytes at the start of s, eight bytes at a time. */
static size_t plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i + 8 <= n && !word_special(s + i))
        i += 8;
    while (i < n && plain(s[i]))
        i++;
    return i;
}

/* Copy n bytes from s to out while checking that they are all plain, eight at a time (the last
 * word may overlap the one before it). False at the first byte that is not; out then holds
 * garbage the caller overwrites. */
static bool copy_plain(char *out, const unsigned char *s, size_t n)
{
    if (n < 8) {
        for (size_t i = 0; i < n; i++) {
            if (!plain(s[i]))
                return false;
            out[i] = (char)s[i];
        }
        return true;
    }
    for (size_t i = 0; i + 8 < n; i += 8) {
        if (word_special(s + i))
            return false;
        memcpy(out + i, s + i, 8);
    }
    if (word_special(s + n - 8))
        return false;
    memcpy(out + n - 8, s + n - 8, 8);
    return true;
}

static const char hex_digits[] = "0123456789abcdef";

/* Length of the valid UTF-8 sequence starting at s (n > 0 bytes, s[0] >= 0x80), or 0 when it is
 * invalid; then *bad is the length of its maximal invalid subpart (at least 1). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;

    *bad = 1;
    if (c < 0xc2 || c > 0xf4)
        return 0; /* continuation byte, overlong 2-byte lead, or beyond U+10FFFF */
    if (c < 0xe0) {
        need = 2;
    } else if (c < 0xf0) {
        need = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* 0xe0 0x80..0x9f would be overlong */
        hi = c == 0xed ? 0x9f : 0xbf; /* 0xed 0xa0..0xbf are surrogates */
    } else {
        need = 4;
        lo = c == 0xf0 ? 0x90 : 0x80; /* overlong */
        hi = c == 0xf4 ? 0x8f : 0xbf; /* above U+10FFFF */
    }
    if (n < 2 || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < need; k++) {
        if (k >= n || s[k] < 0x80 || s[k] > 0xbf) {
            *bad = k;
            return 0;
        }
    }
    return need;
}

/* Escape the one character at s (not a plain byte) into tmp; returns its output length and
 * stores how many input bytes it consumed. */
static size_t escape_one(const unsigned char *s, size_t n, char tmp[6], size_t *used)
{
    unsigned char c = s[0];
    size_t bad;

    *used = 1;
    if (c >= 0x80) {
        size_t k = utf8_seq(s, n, &bad);
        if (k == 0) {
            *used = bad;
            memcpy(tmp, "\xef\xbf\xbd", 3); /* U+FFFD */
            return 3;
        }
        memcpy(tmp, s, k);
        *used = k;
        return k;
    }
    tmp[0] = '\\';
    switch (c) {
    case '"':
        tmp[1] = '"';
        return 2;
    case '\\':
        tmp[1] = '\\';
        return 2;
    case '\b':
        tmp[1] = 'b';
        return 2;
    case '\f':
        tmp[1] = 'f';
        return 2;
    case '\n':
        tmp[1] = 'n';
        return 2;
    case '\r':
        tmp[1] = 'r';
        return 2;
    case '\t':
        tmp[1] = 't';
        return 2;
    default:
        memcpy(tmp + 1, "u00", 3);
        tmp[4] = hex_digits[c >> 4];
        tmp[5] = hex_digits[c & 0xf];
        return 6;
    }
}

size_t log_json_escape(char *out, size_t budget, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    const size_t lim = budget - LOG_TRUNC_MARK_LEN; /* last place a cut may end */
    size_t o = 0, cut = 0, i = 0;

    while (i < len) {
        size_t run = plain_run(s + i, len - i);
        if (run > 0) {
            size_t j = i + run;
            if (o + run > budget) {
                if (o <= lim) {
                    memcpy(out + o, s + i, lim - o); /* every byte of a run is a boundary */
                    cut = lim;
                }
                goto truncate;
            }
            if (o < lim && o + run > lim)
                cut = lim;
            memcpy(out + o, s + i, run);
            o += run;
            i = j;
        } else {
            char tmp[6];
            size_t used, k = escape_one(s + i, len - i, tmp, &used);
            if (o + k > budget)
                goto truncate;
            memcpy(out + o, tmp, k);
            o += k;
            i += used;
        }
        if (o <= lim)
            cut = o;
    }
    return o;

truncate:
    memcpy(out + cut, LOG_TRUNC_MARK, LOG_TRUNC_MARK_LEN);
    return cut + LOG_TRUNC_MARK_LEN;
}

/* ---- numbers and time --------------------------------------------------------------------- */

static size_t fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t k = 0; k < n; k++)
        out[k] = tmp[n - 1 - k];
    return n;
}

static size_t fmt_i64(char *out, int64_t v)
{
    if (v >= 0)
        return fmt_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

/* Shortest of %.15g and %.17g that reads back as the same double; null when not finite. */
static size_t fmt_double(char *out, double d)
{
    char tmp[40];
    if (!isfinite(d)) {
        memcpy(out, "null", 4);
        return 4;
    }
    int n = snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (n <= 0 || (size_t)n >= sizeof(tmp) || strtod(tmp, NULL) != d)
        n = snprintf(tmp, sizeof(tmp), "%.17g", d);
    if (n <= 0 || (size_t)n >= sizeof(tmp)) {
        memcpy(out, "null", 4);
        return 4;
    }
    memcpy(out, tmp, (size_t)n);
    return (size_t)n;
}

/* Nanoseconds as milliseconds with three decimals, rounded to the microsecond. */
static size_t fmt_duration(char *out, uint64_t ns)
{
    uint64_t us = ns / 1000 + (ns % 1000 >= 500);
    size_t n = fmt_u64(out, us / 1000);
    unsigned frac = (unsigned)(us % 1000);
    out[n] = '.';
    out[n + 1] = (char)('0' + frac / 100);
    out[n + 2] = (char)('0' + frac / 10 % 10);
    out[n + 3] = (char)('0' + frac % 10);
    return n + 4;
}

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS" (19 bytes) from seconds since the epoch, by the civil-from-days
 * algorithm (no gmtime: no locks, no time zone files, async-signal-safe). */
static void fmt_civil(char *out, int64_t sec)
{
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    unsigned day = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    unsigned mon = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    int64_t year = yoe + era * 400 + (mon <= 2);
    if (year < 0)
        year = 0;
    if (year > 9999)
        year = 9999;
    put2(out, (unsigned)(year / 100));
    put2(out + 2, (unsigned)(year % 100));
    out[4] = '-';
    put2(out + 5, mon);
    out[7] = '-';
    put2(out + 8, day);
    out[10] = 'T';
    put2(out + 11, (unsigned)(rem / 3600));
    out[13] = ':';
    put2(out + 14, (unsigned)(rem / 60 % 60));
    out[16] = ':';
    put2(out + 17, (unsigned)(rem % 60));
}

size_t log_fmt_ts(char *out, int64_t sec, uint32_t usec, struct log_ts_cache *cache)
{
    if (cache == NULL) {
        fmt_civil(out, sec);
    } else {
        if (cache->sec != sec) {
            fmt_civil(cache->text, sec);
            cache->sec = sec;
        }
        memcpy(out, cache->text, 19);
    }
    out[19] = '.';
    usec %= 1000000;
    for (int k = 25; k >= 20; k--) {
        out[k] = (char)('0' + usec % 10);
        usec /= 10;
    }
    out[26] = 'Z';
    return 27;
}

/* ---- lines -------------------------------------------------------------------------------- */

/* A line under construction in a LOG_FMT_BUF buffer. */
struct line {
    char *p;
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

#define PUT_LIT(l, lit) put((l), (lit), sizeof(lit) - 1)

static void put_str(struct line *l, const char *s, size_t n, size_t budget)
{
    char *o = l->p + l->len;
    o[0] = '"';
    if (n <= budget && copy_plain(o + 1, (const unsigned char *)s, n)) {
        o[n + 1] = '"'; /* the common case: nothing to escape, nothing to cut */
        l->len += n + 2;
        return;
    }
    n = log_json_escape(o + 1, budget, s, n);
    o[n + 1] = '"';
    l->len += n + 2;
}

static void put_cstr(struct line *l, const char *s, size_t budget)
{
    put_str(l, s, strlen(s), budget);
}

/* ,"key": */
static void put_key(struct line *l, const char *key)
{
    l->p[l->len++] = ',';
    put_cstr(l, key ? key : "", LOG_KEY_MAX);
    l->p[l->len++] = ':';
}

static void put_value(struct line *l, const struct log_field *f)
{
    switch (f->type) {
    case LOG_FT_STR:
        if (f->v.s == NULL)
            PUT_LIT(l, "null");
        else
            put_cstr(l, f->v.s, LOG_VALUE_MAX);
        break;
    case LOG_FT_STRN:
        if (f->v.s == NULL)
            PUT_LIT(l, "null");
        else
            put_str(l, f->v.s, f->len, LOG_VALUE_MAX);
        break;
    case LOG_FT_INT:
        l->len += fmt_i64(l->p + l->len, f->v.i);
        break;
    case LOG_FT_UINT:
        l->len += fmt_u64(l->p + l->len, f->v.u);
        break;
    case LOG_FT_DBL:
        l->len += fmt_double(l->p + l->len, f->v.d);
        break;
    case LOG_FT_BOOL:
        if (f->v.b)
            PUT_LIT(l, "true");
        else
            PUT_LIT(l, "false");
        break;
    case LOG_FT_DUR:
        l->len += fmt_duration(l->p + l->len, f->v.u);
        break;
    default:
        PUT_LIT(l, "null");
        break;
    }
}

/* Room kept at the end of a line for ,"truncated":true}\n */
#define TRUNC_TAIL     ",\"truncated\":true}\n"
#define TRUNC_TAIL_LEN (sizeof(TRUNC_TAIL) - 1)
#define LINE_SOFT_MAX  (LOG_LINE_MAX - TRUNC_TAIL_LEN)

/* Append ,"name":"s" (name a fixed member name, s NUL-terminated, or n bytes when s_len is
 * true); false, with nothing appended, when it would pass the line limit. */
static bool member(struct line *l, const char *prefix, size_t prefix_len, const char *s, size_t n,
                   bool s_len)
{
    size_t mark = l->len;
    put(l, prefix, prefix_len);
    if (s_len)
        put_str(l, s, n, LOG_VALUE_MAX);
    else
        put_cstr(l, s, LOG_VALUE_MAX);
    if (l->len <= LINE_SOFT_MAX)
        return true;
    l->len = mark;
    return false;
}

#define MEMBER_C(l, name, s) member((l), ",\"" name "\":", sizeof(name) + 3, (s), 0, false)

/* Context values: left out when empty. */
#define MEMBER_CTX(l, name, s) ((s)[0] == '\0' || MEMBER_C(l, name, s))

static bool put_head(struct line *l, const struct log_line_head *h)
{
    PUT_LIT(l, "{\"ts\":\"");
    l->len += log_fmt_ts(l->p + l->len, h->sec, h->usec, h->ts_cache);
    PUT_LIT(l, "\",\"level\":\"");
    const char *lv = log_level_name(h->level);
    put(l, lv, strlen(lv));
    l->p[l->len++] = '"';
    if (h->msg == NULL)
        PUT_LIT(l, ",\"msg\":null");
    else if (!MEMBER_C(l, "msg", h->msg))
        return false;
    if (!member(l, ",\"thread\":", 10, h->thread ? h->thread : "", h->thread ? h->thread_len : 0,
                true))
        return false;
    if (h->ctx == NULL)
        return true;
    const char *rid = ctx_request_id(h->ctx), *tenant = ctx_tenant(h->ctx);
    const char *trace = ctx_trace_id_hex(h->ctx), *span = ctx_span_id_hex(h->ctx);
    const char *parent = ctx_parent_span_id_hex(h->ctx);
    if (!(MEMBER_CTX(l, "request_id", rid) && MEMBER_CTX(l, "tenant", tenant) &&
          MEMBER_CTX(l, "trace_id", trace) && MEMBER_CTX(l, "span_id", span) &&
          MEMBER_CTX(l, "parent_span_id", parent)))
        return false;
    long index = ctx_index(h->ctx);
    if (index >= 0) {
        struct log_field f = LOG_INT("index", index);
        put_key(l, f.key);
        put_value(l, &f);
    }
    const char *task = ctx_task_id(h->ctx);
    if (task[0] != '\0') {
        if (!MEMBER_C(l, "task_id", task))
            return false;
        struct log_field f = LOG_UINT("attempt", ctx_task_attempt(h->ctx));
        put_key(l, f.key);
        put_value(l, &f);
    }
    return true;
}

size_t log_fmt_line(char *out, const struct log_line_head *h, const struct log_field *fields,
                    size_t n)
{
    struct line l = {.p = out, .len = 0};
    bool whole = put_head(&l, h);

    for (size_t i = 0; whole && i < n; i++) {
        size_t mark = l.len;
        put_key(&l, fields[i].key);
        put_value(&l, &fields[i]);
        if (l.len > LINE_SOFT_MAX) {
            l.len = mark;
            whole = false;
        }
    }
    if (whole) {
        PUT_LIT(&l, "}\n");
    } else {
        PUT_LIT(&l, TRUNC_TAIL);
    }
    return l.len;
}
