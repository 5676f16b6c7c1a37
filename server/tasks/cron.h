/* cron.h - schedule expressions and time zones for [schedule.NAME] (server/tasks/): parse a cron
 * expression, and find the next time it fires after a given time, in UTC or in a zone read from
 * the system's TZif files. Pure: no I/O but srv_tz_load's read of one file, no global state.
 *
 * Expressions (srv_cron_parse):
 *   five fields  "MIN HOUR DOM MON DOW": minute 0-59, hour 0-23, day-of-month 1-31, month 1-12
 *                or JAN-DEC, day-of-week 0-7 or SUN-SAT (0 and 7 are Sunday). Each field is a
 *                comma-separated list of "*", "N", "N-M" (names too: MON-FRI), each optionally
 *                "/STEP" ("*\/15", "10-50/20"; "N/STEP" means N-max/STEP). Names are
 *                case-insensitive. When both day fields are restricted (neither starts with
 *                "*"), a day matches when either does (the classic cron rule: "0 0 1,15 * MON"
 *                is the 1st, the 15th and every Monday); otherwise both must.
 *   macros       @yearly (@annually) "0 0 1 1 *", @monthly "0 0 1 * *", @weekly "0 0 * * 0",
 *                @daily (@midnight) "0 0 * * *", @hourly "0 * * * *".
 *   @every D     a fixed interval: D is a whole number with s, m, h or d ("@every 30s",
 *                "@every 2h"), 1 s to 366 d. Ticks are the multiples of D since the Unix epoch
 *                (UTC), so every process and every restart agrees on them; no zone applies.
 * An expression that can never fire (day 30 in February only, 31 in April only) is refused.
 *
 * Time zones (struct srv_tz): UTC, or a zone loaded once from its TZif file (RFC 8536, versions 1
 * to 4; the 64-bit data of version 2+ and its footer TZ string for the times after the last
 * transition) under /usr/share/zoneinfo ($TZDIR when set). Lookups read only the loaded object,
 * so any thread may use one zone at once; the process's TZ and localtime() are never touched.
 * Leap seconds are ignored (spindle's clock is POSIX time).
 *
 * Wall-clock changes (srv_cron_next with a zone): cron fields are wall-clock times. A wall time
 * skipped by a change (02:30 when clocks jump from 02:00 to 03:00) fires at the first instant
 * after the jump (03:00), once however many skipped times matched. A wall time that happens
 * twice (01:30 when clocks fall back from 02:00 to 01:00) fires at its first occurrence only, so
 * "30 1 * * *" runs once that night and "*\/5 * * * *" pauses for the repeated hour.
 */
#ifndef SPINDLE_TASKS_CRON_H
#define SPINDLE_TASKS_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_CRON_TEXT_MAX 128 /* bytes of an expression, NUL included */
#define SRV_TZ_NAME_MAX   64  /* bytes of a zone name, NUL included */

/* A parsed expression. Plain data: copy and compare it freely. */
struct srv_cron {
    uint64_t minutes;             /* bit m: minute m (0..59) */
    uint32_t hours;               /* bit h: hour h (0..23) */
    uint32_t mdays;               /* bit d: day of month d (1..31) */
    uint16_t months;              /* bit m: month m (1..12) */
    uint8_t wdays;                /* bit d: day of week d (0 = Sunday .. 6) */
    bool mday_star;               /* the day-of-month field started with '*' */
    bool wday_star;               /* the day-of-week field started with '*' */
    uint32_t every_s;             /* @every: the interval in seconds; 0 for the five fields */
    char text[SRV_CRON_TEXT_MAX]; /* the expression as written, trimmed */
};

/* Parse `text` (borrowed, NUL-terminated) into *out. Returns 0, or -EINVAL with a message in err
 * (size bytes) naming the field and what is wrong, e.g. "minute: 60 is out of range 0-59",
 * "day-of-week: unknown name \"FUN\"", "expected 5 fields (minute hour day-of-month month
 * day-of-week), got 4", "@every: expected a duration like 30s, 5m, 2h or 1d, got \"2x\"". */
int srv_cron_parse(const char *text, struct srv_cron *out, char *err, size_t size);

/* A time zone: UTC, or one loaded from a TZif file. Immutable once loaded. */
struct srv_tz;

/* The UTC zone (static; srv_tz_free ignores it). */
const struct srv_tz *srv_tz_utc(void);

/* Load zone `name` (borrowed: "UTC", "Europe/Berlin", ...; no leading '/', no ".." component).
 * "UTC", "Etc/UTC" and "Z" give srv_tz_utc() without reading a file. Returns a new zone (free
 * with srv_tz_free), or NULL with a message in err (size bytes) and errno set: EINVAL for a bad
 * name or a file that is not a valid TZif file, ENOENT for an unknown zone, ENOMEM, or the
 * errno of reading the file. */
struct srv_tz *srv_tz_load(const char *name, char *err, size_t size);

/* Free a zone from srv_tz_load. NULL and srv_tz_utc() are no-ops. */
void srv_tz_free(const struct srv_tz *tz);

/* The zone's name ("UTC" for srv_tz_utc()), borrowed from the zone. */
const char *srv_tz_name(const struct srv_tz *tz);

/* The zone's offset from UTC in seconds (east positive) at Unix time `t`. */
int32_t srv_tz_offset(const struct srv_tz *tz, int64_t t);

/* The first instant whose wall-clock time in `tz` is `local` (seconds since 1970-01-01 00:00 as
 * read on that zone's clocks): the earlier one when the wall time happens twice, the instant the
 * clocks jumped when it is skipped. */
int64_t srv_tz_from_local(const struct srv_tz *tz, int64_t local);

/* The first time strictly after Unix time `after` (seconds) at which `c` fires in zone `tz`
 * (NULL = UTC; ignored for @every), into *next. Five-field expressions fire on whole minutes.
 * Returns 0, or -ERANGE when it does not fire within the next 100 years (cannot happen for an
 * expression srv_cron_parse accepted, whose every day field can match). */
int srv_cron_next(const struct srv_cron *c, const struct srv_tz *tz, int64_t after, int64_t *next);

/* The proleptic Gregorian calendar: days since 1970-01-01 of year y, month m (1..12), day d
 * (1..31), and back; any year that fits. */
int64_t srv_cron_days_from_civil(int64_t y, unsigned m, unsigned d);
void srv_cron_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* The last time at or before `now` and strictly after `after` at which `c` fires in `tz`, into
 * *tick (0 when there is none). Searches back from `now` in growing windows, so a long gap after
 * `after` costs little. Returns 0 or -ERANGE (as srv_cron_next). */
int srv_cron_latest(const struct srv_cron *c, const struct srv_tz *tz, int64_t after, int64_t now,
                    int64_t *tick);

/* Unix time `t` as RFC 3339 in UTC with seconds, "2026-12-06T14:05:00Z", into buf (size bytes,
 * at least 21). Returns buf. */
char *srv_cron_time_format(int64_t t, char *buf, size_t size);

#endif
