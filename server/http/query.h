/* query.h - query strings: percent-decoding into key/value pairs, with a bound on their number.
 *
 * Pure: no server, no allocation beyond the parsed query, any thread. Used by the request
 * (srv_req_query_*, request.h) and by tests and fuzz targets directly.
 */
#ifndef SPINDLE_HTTP_QUERY_H
#define SPINDLE_HTTP_QUERY_H

#include <stddef.h>

/* One percent-decoded parameter ('+' is a space). Keys and values are NUL-terminated copies but
 * may contain NUL bytes (%00): use the lengths. */
struct srv_query_param {
    const char *key, *value;
    size_t key_len, value_len;
};

struct srv_query {
    struct srv_query_param *params; /* count entries, owned */
    size_t count;
    char *buf; /* owned storage of the decoded strings */
};

/* Parse `len` bytes of a query string `s` (borrowed; without the '?'), "a=1&b=%20x&c", into *q:
 * percent-decoded, '+' decoded as a space, empty segments skipped, a key without '=' has the
 * value "". Returns 0; -EINVAL for bad percent-encoding ("%4", "%zz"); -E2BIG when there are more
 * than `max_params` parameters; -ENOMEM. On error *q is empty (nothing to free). */
int srv_query_parse(const char *s, size_t len, unsigned max_params, struct srv_query *q);

/* Free what srv_query_parse() filled in; leaves *q empty. Safe on an empty query. */
void srv_query_fini(struct srv_query *q);

/* The first parameter named `key` (NUL-terminated), NULL when absent. */
const struct srv_query_param *srv_query_get(const struct srv_query *q, const char *key);

#endif
