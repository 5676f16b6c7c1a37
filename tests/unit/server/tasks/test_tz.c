/* test_tz.c - time zones (server/tasks/tz.c): offsets read from the system's TZif files against
 * the C library's own reading of the same files, the footer rule for years past the last listed
 * transition, wall time to instant across daylight-saving changes, and next fire times in a zone
 * (a skipped hour fires once at the jump, a repeated hour fires once). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/tasks/cron.h"
#include "tests/suite.h"
#include "tests/unit/server/tasks/cron_cases.h"

int suite_server_tasks_tz(void);

static const char *tt_skip_no_zoneinfo(void)
{
    FILE *f = fopen("/usr/share/zoneinfo/Europe/Berlin", "rb");
    if (f == NULL)
        return "no /usr/share/zoneinfo (package tzdata)";
    fclose(f);
    return NULL;
}

/* Compare srv_tz_offset with glibc's localtime_r for `zone` every ~5 days and around each hour of
 * the transition seasons, from 1971 to 2090 (the footer rule beyond 2037). The process TZ is
 * changed for the comparison only and put back. */
static void tt_compare_with_libc(const char *zone)
{
    char err[256];
    struct srv_tz *tz = srv_tz_load(zone, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tz);
    char *old = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    char spec[128];
    snprintf(spec, sizeof(spec), ":%s", zone);
    setenv("TZ", spec, 1);
    tzset();
    unsigned bad = 0;
    for (int64_t t = cc_utc(1971, 1, 1, 0, 0); t < cc_utc(2090, 1, 1, 0, 0);
         t += 5 * 86400 + 3607) {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        if (srv_tz_offset(tz, t) != tm.tm_gmtoff && bad++ < 5)
            fprintf(stderr, "%s at %lld: %d, libc %ld\n", zone, (long long)t, srv_tz_offset(tz, t),
                    tm.tm_gmtoff);
    }
    CU_ASSERT_EQUAL(bad, 0);
    if (old) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
    srv_tz_free(tz);
}

static void test_tz_offset_matches_libc(void)
{
    tt_compare_with_libc("Europe/Berlin");
    tt_compare_with_libc("America/New_York");
    tt_compare_with_libc("Australia/Sydney"); /* southern: daylight saving across the new year */
    tt_compare_with_libc("Asia/Kolkata");     /* +05:30, no changes */
    tt_compare_with_libc("America/Sao_Paulo");
}

static void test_tz_offset_berlin_known_instants(void)
{
    char err[256];
    struct srv_tz *tz = srv_tz_load("Europe/Berlin", err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tz);
    CU_ASSERT_STRING_EQUAL(srv_tz_name(tz), "Europe/Berlin");
    /* 2027-03-28 01:00 UTC: CET to CEST; 2027-10-31 01:00 UTC: back */
    CU_ASSERT_EQUAL(srv_tz_offset(tz, cc_utc(2027, 3, 28, 0, 59)), 3600);
    CU_ASSERT_EQUAL(srv_tz_offset(tz, cc_utc(2027, 3, 28, 1, 0)), 7200);
    CU_ASSERT_EQUAL(srv_tz_offset(tz, cc_utc(2027, 10, 31, 0, 59)), 7200);
    CU_ASSERT_EQUAL(srv_tz_offset(tz, cc_utc(2027, 10, 31, 1, 0)), 3600);
    /* far beyond the file's transitions: the footer's rule (last Sunday of March, 2100-03-28) */
    CU_ASSERT_EQUAL(srv_tz_offset(tz, cc_utc(2100, 3, 28, 0, 59)), 3600);
    CU_ASSERT_EQUAL(srv_tz_offset(tz, cc_utc(2100, 3, 28, 1, 0)), 7200);
    srv_tz_free(tz);
}

static void test_tz_from_local_gap_and_overlap(void)
{
    char err[256];
    struct srv_tz *tz = srv_tz_load("Europe/Berlin", err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tz);
    /* an ordinary wall time */
    CU_ASSERT_EQUAL(srv_tz_from_local(tz, cc_utc(2027, 1, 10, 12, 0)), cc_utc(2027, 1, 10, 11, 0));
    /* 02:30 on 2027-03-28 does not exist: the jump at 01:00 UTC (03:00 CEST) */
    CU_ASSERT_EQUAL(srv_tz_from_local(tz, cc_utc(2027, 3, 28, 2, 30)), cc_utc(2027, 3, 28, 1, 0));
    CU_ASSERT_EQUAL(srv_tz_from_local(tz, cc_utc(2027, 3, 28, 2, 0)), cc_utc(2027, 3, 28, 1, 0));
    CU_ASSERT_EQUAL(srv_tz_from_local(tz, cc_utc(2027, 3, 28, 3, 0)), cc_utc(2027, 3, 28, 1, 0));
    /* 02:30 on 2027-10-31 happens twice: the first (CEST, 00:30 UTC) */
    CU_ASSERT_EQUAL(srv_tz_from_local(tz, cc_utc(2027, 10, 31, 2, 30)),
                    cc_utc(2027, 10, 31, 0, 30));
    CU_ASSERT_EQUAL(srv_tz_from_local(tz, cc_utc(2027, 10, 31, 3, 0)), cc_utc(2027, 10, 31, 2, 0));
    CU_ASSERT_EQUAL(srv_tz_from_local(srv_tz_utc(), 12345), 12345);
    srv_tz_free(tz);
}

static void test_tz_cron_next_across_changes(void)
{
    char err[256];
    struct srv_tz *tz = srv_tz_load("Europe/Berlin", err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tz);
    /* 09:00 Berlin is 08:00 UTC in winter, 07:00 UTC in summer */
    CU_ASSERT_STRING_EQUAL(cc_next("0 9 * * *", tz, cc_utc(2027, 1, 10, 12, 0)),
                           "2027-01-11T08:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("0 9 * * *", tz, cc_utc(2027, 7, 10, 12, 0)),
                           "2027-07-11T07:00:00Z");
    /* the skipped 02:30 fires once, at the jump; the next day at 02:30 CEST */
    CU_ASSERT_STRING_EQUAL(cc_next("30 2 * * *", tz, cc_utc(2027, 3, 27, 12, 0)),
                           "2027-03-28T01:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("30 2 * * *", tz, cc_utc(2027, 3, 28, 1, 0)),
                           "2027-03-29T00:30:00Z");
    /* every 15 minutes through the gap: 01:45 CET, then the jump (02:00, 02:15.. all at 03:00),
     * then 03:15 CEST */
    CU_ASSERT_STRING_EQUAL(cc_next("*/15 * * * *", tz, cc_utc(2027, 3, 28, 0, 30)),
                           "2027-03-28T00:45:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("*/15 * * * *", tz, cc_utc(2027, 3, 28, 0, 45)),
                           "2027-03-28T01:00:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("*/15 * * * *", tz, cc_utc(2027, 3, 28, 1, 0)),
                           "2027-03-28T01:15:00Z");
    /* the repeated 02:30 fires once, at its first occurrence */
    CU_ASSERT_STRING_EQUAL(cc_next("30 2 * * *", tz, cc_utc(2027, 10, 30, 12, 0)),
                           "2027-10-31T00:30:00Z");
    CU_ASSERT_STRING_EQUAL(cc_next("30 2 * * *", tz, cc_utc(2027, 10, 31, 0, 30)),
                           "2027-11-01T01:30:00Z");
    /* every 30 minutes through the repeated hour: 02:00 and 02:30 CEST, not again in CET */
    CU_ASSERT_STRING_EQUAL(cc_next("*/30 * * * *", tz, cc_utc(2027, 10, 31, 0, 30)),
                           "2027-10-31T02:00:00Z");
    /* @every ignores the zone */
    CU_ASSERT_STRING_EQUAL(cc_next("@every 1h", tz, cc_utc(2027, 10, 31, 0, 30)),
                           "2027-10-31T01:00:00Z");
    srv_tz_free(tz);
}

static void test_tz_load_errors(void)
{
    char err[256];
    errno = 0;
    CU_ASSERT_PTR_NULL(srv_tz_load("Mars/Olympus_Mons", err, sizeof(err)));
    CU_ASSERT_EQUAL(errno, ENOENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown time zone \"Mars/Olympus_Mons\""));
    CU_ASSERT_PTR_NULL(srv_tz_load("../etc/passwd", err, sizeof(err)));
    CU_ASSERT_EQUAL(errno, EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad time zone name"));
    CU_ASSERT_PTR_NULL(srv_tz_load("/etc/passwd", err, sizeof(err)));
    CU_ASSERT_PTR_NULL(srv_tz_load("Europe", err, sizeof(err))); /* a directory */
    CU_ASSERT_EQUAL(errno, ENOENT);
    CU_ASSERT_PTR_NULL(srv_tz_load("", err, sizeof(err)));
    /* a file that is not TZif */
    CU_ASSERT_PTR_NULL(srv_tz_load("zone.tab", err, sizeof(err)));
    CU_ASSERT_EQUAL(errno, EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "is not a valid TZif file"));
    /* UTC needs no file */
    CU_ASSERT_PTR_EQUAL(srv_tz_load("UTC", err, sizeof(err)), srv_tz_utc());
    CU_ASSERT_PTR_EQUAL(srv_tz_load("Etc/UTC", err, sizeof(err)), srv_tz_utc());
    CU_ASSERT_STRING_EQUAL(srv_tz_name(srv_tz_utc()), "UTC");
    CU_ASSERT_EQUAL(srv_tz_offset(srv_tz_utc(), 1000000), 0);
    srv_tz_free(srv_tz_utc());
    srv_tz_free(NULL);
}

int suite_server_tasks_tz(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST_UNLESS(test_tz_offset_matches_libc, tt_skip_no_zoneinfo),
        SPINDLE_TEST_UNLESS(test_tz_offset_berlin_known_instants, tt_skip_no_zoneinfo),
        SPINDLE_TEST_UNLESS(test_tz_from_local_gap_and_overlap, tt_skip_no_zoneinfo),
        SPINDLE_TEST_UNLESS(test_tz_cron_next_across_changes, tt_skip_no_zoneinfo),
        SPINDLE_TEST_UNLESS(test_tz_load_errors, tt_skip_no_zoneinfo),
    };
    return SPINDLE_SUITE_ADD("server_tasks_tz", NULL, NULL, tests);
}
