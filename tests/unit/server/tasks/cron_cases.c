/* cron_cases.c - the cron and time zone suites' shared helpers (see cron_cases.h). */
#include "tests/unit/server/tasks/cron_cases.h"

#include <stdio.h>

int64_t cc_utc(int y, unsigned mo, unsigned d, unsigned h, unsigned mi)
{
    return srv_cron_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60;
}

const char *cc_next(const char *expr, const struct srv_tz *tz, int64_t after)
{
    static char buf[32];
    struct srv_cron c;
    char err[256];
    int64_t next;
    buf[0] = '\0';
    if (srv_cron_parse(expr, &c, err, sizeof(err)) != 0) {
        fprintf(stderr, "parse \"%s\": %s\n", expr, err);
        return buf;
    }
    if (srv_cron_next(&c, tz, after, &next) != 0)
        return buf;
    return srv_cron_time_format(next, buf, sizeof(buf));
}
