/* promcheck.h - a strict checker of the Prometheus text exposition format 0.0.4, for tests.
 *
 * Plain C, no test framework: unit tests run it on the metrics registry's output and integration
 * tests on what GET /metrics answers.
 */
#ifndef SPINDLE_PROMCHECK_H
#define SPINDLE_PROMCHECK_H

#include <stddef.h>

/* Check `text` (borrowed, `len` bytes, need not be NUL-terminated). Returns 0 when it is valid;
 * -EINVAL when not, with "line N: what is wrong" in err (errsz bytes, always NUL-terminated when
 * errsz > 0); -ENOMEM when out of memory.
 *
 * Valid means: UTF-8 without NUL bytes; empty, or every line ended by '\n' (the text ends with a
 * newline); no blank lines; every line either a comment or a sample.
 * - `# HELP name text` (text escapes only \\ and \n) and `# TYPE name
 *   counter|gauge|histogram|summary|untyped`, each at most once per family, TYPE before the
 *   family's first sample; any other line starting with '#' is a plain comment.
 * - `name{label="value",...} value [timestamp]`, single spaces between the parts, no spaces inside
 *   the braces (a trailing comma is allowed), no trailing blanks. Metric names match
 *   [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__",
 *   distinct within a sample; label values escape only \\, \" and \n. Values are decimal floats,
 *   +Inf, -Inf, Inf or NaN; the timestamp an integer.
 * - A family's lines are contiguous (a family never reappears after another one started); no
 *   series (name and label set) appears twice; counter values are >= 0.
 * - Histograms: samples are name_bucket (with an `le` label parsing as a float), name_sum and
 *   name_count (without `le`); per label set the buckets come in increasing `le` order with
 *   non-decreasing counts, end with le="+Inf", whose count equals name_count, and _sum exists.
 * - Summaries: name samples carry a `quantile` label in [0, 1]; name_sum and name_count do not.
 */
int promcheck(const char *text, size_t len, char *err, size_t errsz);

#endif
