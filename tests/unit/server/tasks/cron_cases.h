/* cron_cases.h - what the cron and time zone suites share (test_cron.c, test_tz.c): a UTC wall
 * time as a Unix time, and an expression's next fire time as text to compare.
 */
#ifndef SPINDLE_TEST_CRON_CASES_H
#define SPINDLE_TEST_CRON_CASES_H

#include <stdint.h>

#include "server/tasks/cron.h"

/* Unix time of a UTC wall time. */
int64_t cc_utc(int y, unsigned mo, unsigned d, unsigned h, unsigned mi);

/* The next fire time of `expr` after `after` in zone `tz` (NULL: UTC), formatted as
 * srv_cron_time_format does ("" when the parse, printed on stderr, or the search failed). The
 * text lives in a static buffer until the next call. */
const char *cc_next(const char *expr, const struct srv_tz *tz, int64_t after);

#endif
