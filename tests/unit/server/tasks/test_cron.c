/* test_cron.c - cron expressions (server/tasks/cron.c): parsing with its errors, the next fire
 * time in UTC (lists, ranges, steps, names, the day-of-month OR day-of-week rule, February 29,
 * month ends, year rollover, @every), and the calendar helpers. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server/tasks/cron.h"
#include "tests/suite.h"
#include "tests/unit/server/tasks/cron_cases.h"

int suite_server_tasks_cron(void);

/* The parse error of `expr` ("" when it parsed). */
static const char *ct_err(const char *expr)
{
    static char err[256];
    struct srv_cron c;
    err[0] = '\0';
    if (srv_cron_parse(expr, &c, err, sizeof(err)) != -EINVAL)
        err[0] = '\0';
    return err;
}

static void test_cron_parse_fields_to_bits(void)
{
    struct srv_cron c;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("  */15 0,12 1-3 JAN-mar,dec mon-FRI ", &c, err, 256), 0);
    CU_ASSERT_EQUAL(c.minutes, (1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45));
    CU_ASSERT_EQUAL(c.hours, (1u << 0) | (1u << 12));
    CU_ASSERT_EQUAL(c.mdays, 0xeu);
    CU_ASSERT_EQUAL(c.months, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 12));
    CU_ASSERT_EQUAL(c.wdays, 0x3eu);
    CU_ASSERT_FALSE(c.mday_star);
    CU_ASSERT_FALSE(c.wday_star);
    CU_ASSERT_STRING_EQUAL(c.text, "*/15 0,12 1-3 JAN-mar,dec mon-FRI");
    CU_ASSERT_EQUAL(c.every_s, 0);
    /* "N/STEP" runs to the end of the field; a step on a range stays in it */
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("50/5 10-20/5 * * *", &c, err, 256), 0);
    CU_ASSERT_EQUAL(c.minutes, (1ull << 50) | (1ull << 55));
    CU_ASSERT_EQUAL(c.hours, (1u << 10) | (1u << 15) | (1u << 20));
    CU_ASSERT_TRUE(c.mday_star);
    CU_ASSERT_TRUE(c.wday_star);
}

static void test_cron_parse_sunday_is_0_and_7(void)
{
    struct srv_cron a, b, c;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("0 0 * * 0", &a, err, 256), 0);
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("0 0 * * 7", &b, err, 256), 0);
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("0 0 * * 5-7", &c, err, 256), 0);
    CU_ASSERT_EQUAL(a.wdays, 1u);
    CU_ASSERT_EQUAL(b.wdays, 1u);
    CU_ASSERT_EQUAL(c.wdays, (1u << 5) | (1u << 6) | 1u);
    /* 2026-12-06 is a Sunday */
    CU_ASSERT_STRING_EQUAL(cc_next("0 9 * * 7", NULL, cc_utc(2026, 12, 1, 0, 0)),
                           "2026-12-06T09:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 9 * * SUN", NULL, cc_utc(2026, 12, 6, 9, 0)),
                           "2026-12-13T09:00:00Z");
}

static void test_cron_parse_macros(void)
{
    static const struct {
        const char *macro, *expr;
    } cases[] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct srv_cron a, b;
        char err[256];
        CU_ASSERT_EQUAL_FATAL(srv_cron_parse(cases[i].macro, &a, err, 256), 0);
        CU_ASSERT_EQUAL_FATAL(srv_cron_parse(cases[i].expr, &b, err, 256), 0);
        CU_ASSERT_EQUAL(a.minutes, b.minutes);
        CU_ASSERT_EQUAL(a.hours, b.hours);
        CU_ASSERT_EQUAL(a.mdays, b.mdays);
        CU_ASSERT_EQUAL(a.months, b.months);
        CU_ASSERT_EQUAL(a.wdays, b.wdays);
        CU_ASSERT_STRING_EQUAL(a.text, cases[i].macro);
    }
}

static void test_cron_parse_every(void)
{
    struct srv_cron c;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("@every 2s", &c, err, 256), 0);
    CU_ASSERT_EQUAL(c.every_s, 2);
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("@every   5m", &c, err, 256), 0);
    CU_ASSERT_EQUAL(c.every_s, 300);
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("@every 2h", &c, err, 256), 0);
    CU_ASSERT_EQUAL(c.every_s, 7200);
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("@every 366d", &c, err, 256), 0);
    CU_ASSERT_EQUAL(c.every_s, 366u * 86400u);
    /* ticks are the multiples of the interval since the epoch */
    int64_t next;
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("@every 7s", &c, err, 256), 0);
    CU_ASSERT_EQUAL(srv_cron_next(&c, NULL, 100, &next), 0);
    CU_ASSERT_EQUAL(next, 105);
    CU_ASSERT_EQUAL(srv_cron_next(&c, NULL, 105, &next), 0);
    CU_ASSERT_EQUAL(next, 112);
    CU_ASSERT_EQUAL(srv_cron_next(&c, NULL, 104, &next), 0);
    CU_ASSERT_EQUAL(next, 105);
}

static void test_cron_parse_errors_name_the_field(void)
{
    static const struct {
        const char *expr, *msg;
    } cases[] = {
        {"", "empty expression"},
        {"* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro"},
        {"* * * * * *", "got 6"},
        {"60 * * * *", "minute: 60 is out of range 0-59"},
        {"* 24 * * *", "hour: 24 is out of range 0-23"},
        {"* * 0 * *", "day-of-month: 0 is out of range 1-31"},
        {"* * 32 * *", "day-of-month: 32 is out of range 1-31"},
        {"* * * 13 *", "month: 13 is out of range 1-12"},
        {"* * * 0 *", "month: 0 is out of range 1-12"},
        {"* * * * 8", "day-of-week: 8 is out of range 0-7"},
        {"* * * FOO *", "month: unknown name \"FOO\" (expected JAN-DEC or 1-12)"},
        {"* * * * FUN", "day-of-week: unknown name \"FUN\" (expected SUN-SAT or 0-7)"},
        {"* * * * MONDAY", "day-of-week: unknown name \"MONDAY\""},
        {"x * * * *", "minute: expected a number 0-59, got \"x\""},
        {"* MON * * *", "hour: expected a number 0-23, got \"MON\""},
        {"30-10 * * * *", "minute: range 30-10 is reversed"},
        {"* * * * FRI-MON", "day-of-week: range FRI-MON is reversed"},
        {"*/0 * * * *", "minute: step 0 is out of range 1-59"},
        {"*/60 * * * *", "minute: step 60 is out of range 1-59"},
        {"*/ * * * *", "minute: expected a step number after \"/\""},
        {"1,,2 * * * *", "minute: empty list item"},
        {"1, * * * *", "minute: empty list item"},
        {"1-2-3 * * * *", "minute: unexpected \"-3\" in \"1-2-3\""},
        {"* * 30 2 *", "day-of-month: no selected month has any of these days"},
        {"* * 31 4,6,9,11 *", "never fires"},
        {"@often", "unknown macro \"@often\""},
        {"@every", "@every: expected a duration like 30s, 5m, 2h or 1d, got \"\""},
        {"@every 0s", "@every: expected a duration"},
        {"@every 2x", "got \"2x\""},
        {"@every 5", "got \"5\""},
        {"@every 367d", "@every: 367d is longer than 366d"},
        {"@every -1s", "@every: expected a duration"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *err = ct_err(cases[i].expr);
        if (strstr(err, cases[i].msg) == NULL)
            fprintf(stderr, "\"%s\": got \"%s\", want \"%s\"\n", cases[i].expr, err, cases[i].msg);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, cases[i].msg));
    }
    /* too long */
    char longx[200];
    memset(longx, '1', sizeof(longx) - 1);
    longx[sizeof(longx) - 1] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(ct_err(longx), "expression longer than 127 bytes"));
    /* on error *out is untouched */
    struct srv_cron c = {.every_s = 42};
    char err[64];
    CU_ASSERT_EQUAL(srv_cron_parse("61 * * * *", &c, err, sizeof(err)), -EINVAL);
    CU_ASSERT_EQUAL(c.every_s, 42);
    CU_ASSERT_EQUAL(srv_cron_parse("61 * * * *", &c, NULL, 0), -EINVAL);
}

static void test_cron_next_basic(void)
{
    int64_t t = cc_utc(2026, 12, 6, 14, 3);
    CU_ASSERT_STRING_EQUAL(cc_next("* * * * *", NULL, t), "2026-12-06T14:04:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("* * * * *", NULL, t + 59), "2026-12-06T14:04:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("*/5 * * * *", NULL, t), "2026-12-06T14:05:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("*/5 * * * *", NULL, cc_utc(2026, 12, 6, 14, 5)),
                           "2026-12-06T14:10:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 * * * *", NULL, t), "2026-12-06T15:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 9 * * *", NULL, t), "2026-12-07T09:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("15,45 9-17/4 * * *", NULL, t), "2026-12-06T17:15:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 1 * *", NULL, t), "2027-01-01T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("30 8 * * MON-FRI", NULL, t), "2026-12-07T08:30:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 12 * JUN *", NULL, t), "2027-06-01T12:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("@hourly", NULL, t), "2026-12-06T15:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("@weekly", NULL, t), "2026-12-13T00:00:00Z");
}

static void test_cron_next_year_rollover(void)
{
    CU_ASSERT_STRING_EQUAL(cc_next("* * * * *", NULL, cc_utc(2026, 12, 31, 23, 59)),
                           "2027-01-01T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 1 1 *", NULL, cc_utc(2026, 1, 1, 0, 0)),
                           "2027-01-01T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("59 23 31 12 *", NULL, cc_utc(2026, 12, 31, 23, 59)),
                           "2027-12-31T23:59:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 * DEC *", NULL, cc_utc(2026, 12, 31, 12, 0)),
                           "2027-12-01T00:00:00Z");
}

static void test_cron_next_feb_29(void)
{
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 29 2 *", NULL, cc_utc(2026, 12, 6, 0, 0)),
                           "2028-02-29T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 29 2 *", NULL, cc_utc(2028, 2, 29, 0, 0)),
                           "2032-02-29T00:00:00Z");
    /* 2100 is not a leap year, 2000 was */
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 29 2 *", NULL, cc_utc(2096, 3, 1, 0, 0)),
                           "2104-02-29T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 29 FEB *", NULL, cc_utc(1999, 1, 1, 0, 0)),
                           "2000-02-29T00:00:00Z");
}

static void test_cron_next_month_ends(void)
{
    /* day 31 only in months that have it */
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 31 * *", NULL, cc_utc(2027, 1, 31, 0, 0)),
                           "2027-03-31T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 31 * *", NULL, cc_utc(2027, 3, 31, 0, 0)),
                           "2027-05-31T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 30 * *", NULL, cc_utc(2027, 1, 30, 0, 0)),
                           "2027-03-30T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 29-31 2,4 *", NULL, cc_utc(2027, 2, 1, 0, 0)),
                           "2027-04-29T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 29-31 2,4 *", NULL, cc_utc(2028, 2, 1, 0, 0)),
                           "2028-02-29T00:00:00Z");
    /* the last minute of a month, to the first of the next */
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 * * *", NULL, cc_utc(2027, 4, 30, 23, 59)),
                           "2027-05-01T00:00:00Z");
}

static void test_cron_next_day_or_rule(void)
{
    /* both restricted: the 13th or a Friday, whichever comes first */
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 13 * FRI", NULL, cc_utc(2026, 12, 6, 0, 0)),
                           "2026-12-11T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 13 * FRI", NULL, cc_utc(2026, 12, 11, 0, 0)),
                           "2026-12-13T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 1,15 * MON", NULL, cc_utc(2026, 12, 1, 0, 0)),
                           "2026-12-07T00:00:00Z");
    /* one of them starts with '*': both must match (odd days that are Mondays) */
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 */2 * MON", NULL, cc_utc(2026, 12, 1, 0, 0)),
                           "2026-12-07T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 */2 * MON", NULL, cc_utc(2026, 12, 7, 0, 0)),
                           "2026-12-21T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 13 * *", NULL, cc_utc(2026, 12, 6, 0, 0)),
                           "2026-12-13T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 * * FRI", NULL, cc_utc(2026, 12, 6, 0, 0)),
                           "2026-12-11T00:00:00Z");
    /* a Friday the 13th in February only, the hard way (OR: any Friday of February, or the 13th) */
    CU_ASSERT_STRING_EQUAL(cc_next("0 0 13 2 5", NULL, cc_utc(2026, 12, 6, 0, 0)),
                           "2027-02-05T00:00:00Z");
}

static void test_cron_calendar_round_trips(void)
{
    CU_ASSERT_EQUAL(srv_cron_days_from_civil(1970, 1, 1), 0);
    CU_ASSERT_EQUAL(srv_cron_days_from_civil(2000, 3, 1), 11017);
    CU_ASSERT_EQUAL(srv_cron_days_from_civil(1969, 12, 31), -1);
    for (int64_t d = -800000; d <= 800000; d += 997) {
        int64_t y;
        unsigned m, day;
        srv_cron_civil_from_days(d, &y, &m, &day);
        CU_ASSERT_EQUAL(srv_cron_days_from_civil(y, m, day), d);
    }
    char buf[32];
    CU_ASSERT_STRING_EQUAL(srv_cron_time_format(0, buf, sizeof(buf)), "1970-01-01T00:00:00Z");
    CU_ASSERT_STRING_EQUAL(srv_cron_time_format(951782400 + 86399, buf, sizeof(buf)),
                           "2000-02-29T23:59:59Z");
}

static void test_cron_latest(void)
{
    struct srv_cron c;
    char err[256];
    int64_t tick;
    int64_t now = cc_utc(2026, 12, 6, 14, 3) + 17;
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("*/5 * * * *", &c, err, 256), 0);
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, 0, now, &tick), 0);
    CU_ASSERT_EQUAL(tick, cc_utc(2026, 12, 6, 14, 0));
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, cc_utc(2026, 12, 6, 14, 0), now, &tick), 0);
    CU_ASSERT_EQUAL(tick, 0); /* nothing after the last one */
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, cc_utc(2026, 12, 6, 13, 55), now, &tick), 0);
    CU_ASSERT_EQUAL(tick, cc_utc(2026, 12, 6, 14, 0));
    /* a yearly tick found far back, and not before `after` */
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("0 0 1 1 *", &c, err, 256), 0);
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, cc_utc(2020, 6, 1, 0, 0), now, &tick), 0);
    CU_ASSERT_EQUAL(tick, cc_utc(2026, 1, 1, 0, 0));
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, cc_utc(2026, 1, 1, 0, 0), now, &tick), 0);
    CU_ASSERT_EQUAL(tick, 0);
    /* a tick exactly at now counts */
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, 0, cc_utc(2026, 1, 1, 0, 0), &tick), 0);
    CU_ASSERT_EQUAL(tick, cc_utc(2026, 1, 1, 0, 0));
    /* @every: the multiple at or before now */
    CU_ASSERT_EQUAL_FATAL(srv_cron_parse("@every 1h", &c, err, 256), 0);
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, 0, now, &tick), 0);
    CU_ASSERT_EQUAL(tick, cc_utc(2026, 12, 6, 14, 0));
    CU_ASSERT_EQUAL(srv_cron_latest(&c, NULL, cc_utc(2026, 12, 6, 14, 0), now, &tick), 0);
    CU_ASSERT_EQUAL(tick, 0);
}

int suite_server_tasks_cron(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cron_parse_fields_to_bits),
        SPINDLE_TEST(test_cron_parse_sunday_is_0_and_7),
        SPINDLE_TEST(test_cron_parse_macros),
        SPINDLE_TEST(test_cron_parse_every),
        SPINDLE_TEST(test_cron_parse_errors_name_the_field),
        SPINDLE_TEST(test_cron_next_basic),
        SPINDLE_TEST(test_cron_next_year_rollover),
        SPINDLE_TEST(test_cron_next_feb_29),
        SPINDLE_TEST(test_cron_next_month_ends),
        SPINDLE_TEST(test_cron_next_day_or_rule),
        SPINDLE_TEST(test_cron_calendar_round_trips),
        SPINDLE_TEST(test_cron_latest),
    };
    return SPINDLE_SUITE_ADD("server_tasks_cron", NULL, NULL, tests);
}
