/* tz.c - time zones for schedules: read a TZif file (RFC 8536) once, then answer "what is the
 * offset from UTC at this instant" and "which instant has this wall-clock time" from memory.
 *
 * Design: a loaded zone (struct srv_tz) holds the transition instants with the offset in force
 * after each (from the 64-bit data block of a version 2+ file, the 32-bit one of a version 1 file)
 * and the file's footer, a POSIX TZ string ("CET-1CEST,M3.5.0,M10.5.0/3"), parsed into a rule for
 * every instant after the last transition: recent files may stop listing transitions early and
 * leave the future to that rule. Before the first transition the zone's first type applies (RFC
 * 8536, 3.2). The object is immutable after srv_tz_load, so lookups need no lock, and nothing here
 * reads or changes the process's TZ (localtime_r would read the global zone, and setting TZ
 * while other threads format times is not thread-safe).
 *
 * From wall time to instant (srv_tz_from_local): the offsets a day before and a day after the wall
 * time (read as if it were UTC) bracket every instant it can name; each candidate "wall time
 * minus offset" that really shows that wall time is an answer, the earlier when both do (a
 * repeated hour). When neither does, the wall time lies in a gap, and the answer is the instant
 * of the jump, found by bisection between the two candidates. A zone with two changes within two
 * days (none in the tz database since 1970) gets the first candidate.
 *
 * Threads: srv_tz_load reads one file on the calling thread; everything else is pure.
 */
#include "server/tasks/cron.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_DIR_DEFAULT "/usr/share/zoneinfo"
#define TZ_FILE_MAX    (256 * 1024) /* the largest zone file is a few kilobytes */
#define TZ_HEADER      44

/* A date of a POSIX TZ rule: Jn (1..365, no Feb 29), n (0..365) or Mm.w.d, at `time` seconds. */
struct tz_date {
    char kind; /* 'J', 'N' or 'M' */
    unsigned n, m, w, d;
    int32_t time;
};

/* The footer's rule: standard offset, and a daylight-saving offset with its start and end. */
struct tz_rule {
    bool present;
    bool has_dst;
    int32_t std_off, dst_off; /* seconds east of UTC */
    struct tz_date start, end;
};

struct srv_tz {
    char name[SRV_TZ_NAME_MAX];
    bool utc;
    size_t ntrans;
    int64_t *trans; /* ascending instants */
    int32_t *offs;  /* offs[i]: the offset from trans[i] on */
    int32_t first;  /* the offset before trans[0] (type 0) */
    struct tz_rule rule;
};

static const struct srv_tz tz_utc = {.name = "UTC", .utc = true};

const struct srv_tz *srv_tz_utc(void)
{
    return &tz_utc;
}

const char *srv_tz_name(const struct srv_tz *tz)
{
    return tz->name;
}

void srv_tz_free(const struct srv_tz *tz)
{
    if (tz == NULL || tz == &tz_utc)
        return;
    struct srv_tz *t = (struct srv_tz *)tz;
    free(t->trans);
    free(t->offs);
    free(t);
}

/* ---- the POSIX TZ rule of the footer -------------------------------------------------------- */

/* A zone abbreviation: 3+ letters, or <...> (digits and signs allowed inside). */
static const char *tz_posix_name(const char *p)
{
    if (*p == '<') {
        const char *close = strchr(p, '>');
        return close ? close + 1 : NULL;
    }
    const char *s = p;
    while (isalpha((unsigned char)*p))
        p++;
    return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] into seconds (as written: POSIX offsets are west-positive). */
static const char *tz_posix_time(const char *p, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    int32_t v = 0;
    for (int part = 0; part < 3; part++) {
        if (!isdigit((unsigned char)*p))
            return NULL;
        int32_t n = 0;
        for (int i = 0; i < 3 && isdigit((unsigned char)*p); i++)
            n = n * 10 + (*p++ - '0');
        v += n * (part == 0 ? 3600 : part == 1 ? 60 : 1);
        if (*p != ':')
            break;
        p++;
    }
    *out = sign * v;
    return p;
}

static const char *tz_posix_num(const char *p, unsigned *out)
{
    if (!isdigit((unsigned char)*p))
        return NULL;
    unsigned v = 0;
    for (; isdigit((unsigned char)*p) && v < 1000; p++)
        v = v * 10 + (unsigned)(*p - '0');
    *out = v;
    return p;
}

/* ",DATE[/TIME]" */
static const char *tz_posix_date(const char *p, struct tz_date *d)
{
    if (*p++ != ',')
        return NULL;
    d->time = 7200; /* 02:00 unless given */
    if (*p == 'M') {
        d->kind = 'M';
        if ((p = tz_posix_num(p + 1, &d->m)) == NULL || *p++ != '.' ||
            (p = tz_posix_num(p, &d->w)) == NULL || *p++ != '.' ||
            (p = tz_posix_num(p, &d->d)) == NULL)
            return NULL;
        if (d->m < 1 || d->m > 12 || d->w < 1 || d->w > 5 || d->d > 6)
            return NULL;
    } else {
        d->kind = *p == 'J' ? 'J' : 'N';
        if ((p = tz_posix_num(p + (*p == 'J'), &d->n)) == NULL || d->n > 365 ||
            (d->kind == 'J' && d->n == 0))
            return NULL;
    }
    if (*p == '/')
        p = tz_posix_time(p + 1, &d->time);
    return p;
}

/* Parse a footer TZ string; false when it is not one we understand (the footer is then unused). */
static bool tz_posix_parse(const char *s, struct tz_rule *r)
{
    int32_t off;
    const char *p = tz_posix_name(s);
    if (p == NULL || (p = tz_posix_time(p, &off)) == NULL)
        return false;
    r->std_off = -off;
    r->dst_off = r->std_off + 3600;
    r->has_dst = false;
    if (*p != '\0') {
        if ((p = tz_posix_name(p)) == NULL)
            return false;
        if (*p != ',' && *p != '\0') {
            if ((p = tz_posix_time(p, &off)) == NULL)
                return false;
            r->dst_off = -off;
        }
        if ((p = tz_posix_date(p, &r->start)) == NULL || (p = tz_posix_date(p, &r->end)) == NULL)
            return false;
        r->has_dst = true;
    }
    r->present = *p == '\0';
    return r->present;
}

/* Day (since 1970) of a rule date in year y. */
static int64_t tz_date_day(const struct tz_date *d, int64_t y)
{
    int64_t jan1 = srv_cron_days_from_civil(y, 1, 1);
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d->kind == 'J')
        return jan1 + d->n - 1 + (leap && d->n >= 60);
    if (d->kind == 'N')
        return jan1 + d->n;
    int64_t first = srv_cron_days_from_civil(y, d->m, 1);
    int64_t wd0 = ((first + 4) % 7 + 7) % 7;
    int64_t day = first + ((int64_t)d->d - wd0 + 7) % 7 + 7 * ((int64_t)d->w - 1);
    unsigned mlen = d->m == 12 ? 31 : (unsigned)(srv_cron_days_from_civil(y, d->m + 1, 1) - first);
    while (day >= first + mlen)
        day -= 7;
    return day;
}

static int32_t tz_rule_offset(const struct tz_rule *r, int64_t t)
{
    if (!r->has_dst)
        return r->std_off;
    int64_t y;
    unsigned m, d;
    int64_t local = t + r->std_off;
    srv_cron_civil_from_days(local / 86400 - (local % 86400 < 0), &y, &m, &d);
    int64_t start = tz_date_day(&r->start, y) * 86400 + r->start.time - r->std_off;
    int64_t end = tz_date_day(&r->end, y) * 86400 + r->end.time - r->dst_off;
    bool dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    return dst ? r->dst_off : r->std_off;
}

/* ---- lookups -------------------------------------------------------------------------------- */

int32_t srv_tz_offset(const struct srv_tz *tz, int64_t t)
{
    if (tz == NULL || tz->utc)
        return 0;
    if (tz->ntrans == 0 || t >= tz->trans[tz->ntrans - 1]) {
        if (tz->rule.present)
            return tz_rule_offset(&tz->rule, t);
        return tz->ntrans ? tz->offs[tz->ntrans - 1] : tz->first;
    }
    if (t < tz->trans[0])
        return tz->first;
    size_t lo = 0, hi = tz->ntrans - 1; /* trans[lo] <= t < trans[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return tz->offs[lo];
}

int64_t srv_tz_from_local(const struct srv_tz *tz, int64_t local)
{
    if (tz == NULL || tz->utc)
        return local;
    int32_t oa = srv_tz_offset(tz, local - 86400), ob = srv_tz_offset(tz, local + 86400);
    int64_t ta = local - oa, tb = local - ob;
    bool va = srv_tz_offset(tz, ta) == oa, vb = srv_tz_offset(tz, tb) == ob;
    if (va && vb)
        return ta < tb ? ta : tb;
    if (va || vb)
        return va ? ta : tb;
    if (oa == ob)
        return ta;
    /* A gap: the jump lies in (tb, ta]; find the first instant with the new offset. */
    int64_t lo = tb < ta ? tb : ta, hi = tb < ta ? ta : tb;
    int32_t before = srv_tz_offset(tz, lo);
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (srv_tz_offset(tz, mid) == before)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* ---- loading -------------------------------------------------------------------------------- */

static uint32_t tz_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t tz_be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)tz_be32(p) << 32 | tz_be32(p + 4));
}

/* The counts of a header: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt. */
struct tz_counts {
    uint32_t isut, isstd, leap, time, type, chars;
};

static bool tz_header(const unsigned char *p, size_t len, struct tz_counts *c)
{
    if (len < TZ_HEADER || memcmp(p, "TZif", 4) != 0)
        return false;
    c->isut = tz_be32(p + 20), c->isstd = tz_be32(p + 24), c->leap = tz_be32(p + 28);
    c->time = tz_be32(p + 32), c->type = tz_be32(p + 36), c->chars = tz_be32(p + 40);
    return c->type > 0 && c->time < 100000 && c->type < 256 && c->leap < 100000;
}

static size_t tz_block_len(const struct tz_counts *c, size_t tsize)
{
    return (size_t)c->time * (tsize + 1) + (size_t)c->type * 6 + c->chars +
           (size_t)c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Fill tz from the file's bytes. */
static bool tz_parse(struct srv_tz *tz, const unsigned char *p, size_t len)
{
    struct tz_counts c;
    if (!tz_header(p, len, &c))
        return false;
    size_t tsize = 4, off = TZ_HEADER;
    if (p[4] >= '2') { /* skip the 32-bit block: the 64-bit one follows with its own header */
        off += tz_block_len(&c, 4);
        if (off > len || !tz_header(p + off, len - off, &c))
            return false;
        off += TZ_HEADER;
        tsize = 8;
    }
    size_t block = tz_block_len(&c, tsize);
    if (off + block > len)
        return false;
    const unsigned char *times = p + off, *idx = times + c.time * tsize;
    const unsigned char *types = idx + c.time;
    tz->ntrans = c.time;
    tz->trans = calloc(c.time ? c.time : 1, sizeof(*tz->trans));
    tz->offs = calloc(c.time ? c.time : 1, sizeof(*tz->offs));
    if (tz->trans == NULL || tz->offs == NULL)
        return false;
    for (uint32_t i = 0; i < c.time; i++) {
        tz->trans[i] = tsize == 8 ? tz_be64(times + 8 * i) : (int32_t)tz_be32(times + 4 * i);
        if (idx[i] >= c.type || (i > 0 && tz->trans[i] <= tz->trans[i - 1]))
            return false;
        tz->offs[i] = (int32_t)tz_be32(types + 6 * idx[i]);
    }
    tz->first = (int32_t)tz_be32(types);
    off += block;
    if (tsize == 8 && off < len && p[off] == '\n') { /* the footer: "\nTZ string\n" */
        const unsigned char *nl = memchr(p + off + 1, '\n', len - off - 1);
        char footer[128];
        size_t flen = nl ? (size_t)(nl - p - off - 1) : 0;
        if (nl != NULL && flen > 0 && flen < sizeof(footer)) {
            memcpy(footer, p + off + 1, flen);
            footer[flen] = '\0';
            (void)tz_posix_parse(footer, &tz->rule);
        }
    }
    return true;
}

static bool tz_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= SRV_TZ_NAME_MAX || name[0] == '/' || name[0] == '.')
        return false;
    if (strstr(name, "..") != NULL || strstr(name, "//") != NULL)
        return false;
    return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-.") ==
           len;
}

/* Read the file at `path` whole into a new buffer. Returns 0 or a negative errno. */
static int tz_file_read(const char *path, unsigned char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if (!S_ISREG(st.st_mode) || st.st_size > TZ_FILE_MAX) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
    } else if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
        rc = -ENOMEM;
    } else {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = n < 0 ? -errno : -EIO;
                break;
            }
            got += (size_t)n;
        }
        *len = got;
    }
    close(fd);
    if (rc != 0)
        free(buf);
    else
        *out = buf;
    return rc;
}

struct srv_tz *srv_tz_load(const char *name, char *err, size_t size)
{
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0 || strcmp(name, "Z") == 0)
        return (struct srv_tz *)&tz_utc; /* the caller frees it with srv_tz_free: a no-op */
    if (!tz_name_valid(name)) {
        snprintf(err, size, "bad time zone name \"%.64s\" (expected a name like Europe/Berlin)",
                 name);
        errno = EINVAL;
        return NULL;
    }
    const char *dir = getenv("TZDIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir && dir[0] ? dir : TZ_DIR_DEFAULT, name);
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = tz_file_read(path, &buf, &len);
    if (rc != 0) {
        if (rc == -ENOENT || rc == -EISDIR)
            snprintf(err, size, "unknown time zone \"%s\" (no file %s)", name, path);
        else
            snprintf(err, size, "time zone \"%s\": %s: %s", name, path, strerror(-rc));
        errno = rc == -EISDIR ? ENOENT : -rc;
        return NULL;
    }
    struct srv_tz *tz = calloc(1, sizeof(*tz));
    if (tz != NULL) {
        snprintf(tz->name, sizeof(tz->name), "%s", name);
        if (!tz_parse(tz, buf, len)) {
            snprintf(err, size, "time zone \"%s\": %s is not a valid TZif file", name, path);
            srv_tz_free(tz);
            tz = NULL;
            errno = EINVAL;
        }
    } else {
        snprintf(err, size, "time zone \"%s\": out of memory", name);
        errno = ENOMEM;
    }
    free(buf);
    return tz;
}
