/* query.c - query string parsing: percent-decoding into key/value pairs, with limits.
 *
 * Design: two passes over the raw bytes. The first counts the parameters and validates every
 * percent escape, so the limits are enforced before anything is allocated; the second decodes
 * into one buffer (decoding never grows a string, so the raw length plus one NUL per string is
 * enough) and one array of parameters pointing into it. Pure: no global state, no I/O; used by
 * the request path on the loop thread and by the unit tests.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/http/query.h"

static int query_hex(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Count the non-empty '&'-separated segments and check every escape. */
static int query_check(const char *s, size_t len, size_t *count)
{
    size_t n = 0;
    size_t seg = 0; /* bytes in the current segment */
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '&') {
            n += seg > 0;
            seg = 0;
            continue;
        }
        seg++;
        if (s[i] == '%') {
            if (len - i < 3)
                return -EINVAL;
            if (query_hex((unsigned char)s[i + 1]) < 0 || query_hex((unsigned char)s[i + 2]) < 0)
                return -EINVAL;
            i += 2;
            seg += 2;
        }
    }
    n += seg > 0;
    *count = n;
    return 0;
}

/* Decode s[0..len) into out (NUL-terminated); returns the decoded length. Escapes are valid. */
static size_t query_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            out[o++] = (char)(query_hex((unsigned char)s[i + 1]) * 16 +
                              query_hex((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return o;
}

static void query_fill(const char *s, size_t len, struct srv_query *q)
{
    char *out = q->buf;
    size_t i = 0;
    while (i < len) {
        const char *seg = s + i;
        const char *amp = memchr(seg, '&', len - i);
        size_t seg_len = amp != NULL ? (size_t)(amp - seg) : len - i;
        i += seg_len + 1;
        if (seg_len == 0)
            continue;
        const char *eq = memchr(seg, '=', seg_len);
        size_t klen = eq != NULL ? (size_t)(eq - seg) : seg_len;
        struct srv_query_param *p = &q->params[q->count++];
        p->key = out;
        p->key_len = query_decode(seg, klen, out);
        out += p->key_len + 1;
        p->value = out;
        p->value_len = eq != NULL ? query_decode(eq + 1, seg_len - klen - 1, out) : 0;
        if (eq == NULL)
            *out = '\0';
        out += p->value_len + 1;
    }
}

int srv_query_parse(const char *s, size_t len, unsigned max_params, struct srv_query *q)
{
    memset(q, 0, sizeof(*q));
    size_t n;
    int rc = query_check(s, len, &n);
    if (rc != 0)
        return rc;
    if (n > max_params)
        return -E2BIG;
    if (n == 0)
        return 0;
    /* each parameter: decoded key + NUL + decoded value + NUL <= raw segment + 2 */
    q->buf = malloc(len + 2 * n + 1);
    q->params = calloc(n, sizeof(*q->params));
    if (q->buf == NULL || q->params == NULL) {
        srv_query_fini(q);
        return -ENOMEM;
    }
    query_fill(s, len, q);
    return 0;
}

void srv_query_fini(struct srv_query *q)
{
    free(q->params);
    free(q->buf);
    memset(q, 0, sizeof(*q));
}

const struct srv_query_param *srv_query_get(const struct srv_query *q, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < q->count; i++) {
        const struct srv_query_param *p = &q->params[i];
        if (p->key_len == klen && memcmp(p->key, key, klen) == 0)
            return p;
    }
    return NULL;
}
