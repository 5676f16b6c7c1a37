/* head.c - strict checks of a raw HTTP/1.1 request head, before http-parser sees it.
 *
 * Design: http-parser 2.9.4 is built lenient (bare LF, obs-fold, whitespace before the colon and
 * any HTTP version pass). Those leniencies are how requests get smuggled past a front end, so the
 * connection runs this byte-level state machine over a request head first and only hands a head
 * that passed to the parser. The scan is incremental (it remembers its position and state), pure
 * (no allocation, no I/O) and bounded: it stops at the first byte past a limit, so a client can
 * never make the server buffer more than the limits allow. The request line is checked as soon
 * as its CRLF arrives, so a version error (505) is answered before any header is read.
 *
 * Threads: a struct srv_head_scan belongs to its connection (loop thread); no shared state.
 */
#include <stdbool.h>
#include <string.h>

#include "server/http/head.h"

enum {
    ST_LEAD = 0, /* before the request line: empty lines (CRLF) are skipped */
    ST_LEAD_CR,
    ST_RL, /* request line */
    ST_RL_CR,
    ST_LINE_START, /* start of a header line, or of the empty line */
    ST_NAME,
    ST_VALUE,
    ST_VALUE_CR,
    ST_END_CR,
    ST_DONE,
    ST_ERROR,
};

void srv_head_scan_init(struct srv_head_scan *s)
{
    memset(s, 0, sizeof(*s));
    s->state = ST_LEAD;
}

static bool head_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool head_ctl(unsigned char ch)
{
    return ch < 0x20 || ch == 0x7f;
}

static enum srv_head_state head_fail(struct srv_head_scan *s, int status, const char *why)
{
    s->state = ST_ERROR;
    s->status = status;
    s->why = why;
    return SRV_HEAD_ERROR;
}

static bool head_digits(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return true;
}

/* "HTTP/" 1*DIGIT "." 1*DIGIT */
static bool head_version_shaped(const char *v, size_t n)
{
    if (n < 8 || memcmp(v, "HTTP/", 5) != 0)
        return false;
    const char *dot = memchr(v + 5, '.', n - 5);
    if (dot == NULL)
        return false;
    return head_digits(v + 5, (size_t)(dot - (v + 5))) &&
           head_digits(dot + 1, (size_t)(v + n - (dot + 1)));
}

/* METHOD SP TARGET SP VERSION, with exactly two spaces, a token method and a supported version. */
static enum srv_head_state head_request_line(struct srv_head_scan *s, const char *line, size_t n)
{
    const char *sp1 = memchr(line, ' ', n);
    if (sp1 == NULL)
        return head_fail(s, 400, "request line without HTTP version");
    const char *sp2 = memrchr(line, ' ', n);
    const char *version = sp2 + 1;
    size_t vlen = (size_t)(line + n - version);
    if (sp1 == sp2) {
        /* "METHOD HTTP/2.0" or "GET /": a version-looking tail still gets 505. */
        return head_version_shaped(version, vlen)
                   ? head_fail(s, 505, "HTTP version not supported")
                   : head_fail(s, 400, "request line without HTTP version");
    }
    if (vlen == 8 && (memcmp(version, "HTTP/1.1", 8) == 0 || memcmp(version, "HTTP/1.0", 8) == 0)) {
        /* supported; fall through to the shape checks */
    } else if (head_version_shaped(version, vlen)) {
        return head_fail(s, 505, "HTTP version not supported");
    } else {
        return head_fail(s, 400, "malformed HTTP version");
    }
    if (sp1 == line)
        return head_fail(s, 400, "empty method");
    for (const char *p = line; p < sp1; p++)
        if (!head_tchar((unsigned char)*p))
            return head_fail(s, 400, "invalid method");
    if (sp2 == sp1 + 1 || memchr(sp1 + 1, ' ', (size_t)(sp2 - sp1 - 1)) != NULL)
        return head_fail(s, 400, "malformed request target");
    return SRV_HEAD_MORE;
}

/* One byte of the request line (and the empty lines before it). */
static enum srv_head_state head_byte_line(struct srv_head_scan *s, const char *buf,
                                          const struct srv_head_limits *lim)
{
    unsigned char ch = (unsigned char)buf[s->pos];
    switch (s->state) {
    case ST_LEAD:
        if (ch == '\r') {
            s->state = ST_LEAD_CR;
            break;
        }
        if (ch == '\n')
            return head_fail(s, 400, "bare LF in request head");
        /* this byte starts the request line */
        s->rl_start = s->pos;
        s->state = ST_RL;
        /* fall through */
    case ST_RL:
        if (ch == '\r') {
            s->state = ST_RL_CR;
            break;
        }
        if (ch == '\n')
            return head_fail(s, 400, "bare LF in request line");
        if (head_ctl(ch))
            return head_fail(s, 400, "control byte in request line");
        if (s->pos + 1 - s->rl_start > lim->max_request_line)
            return head_fail(s, 414, "request line too long");
        break;
    case ST_LEAD_CR:
        if (ch != '\n')
            return head_fail(s, 400, "CR without LF in request head");
        /* leading empty lines count against the request line limit */
        if (s->pos + 1 > lim->max_request_line)
            return head_fail(s, 414, "request line too long");
        s->state = ST_LEAD;
        break;
    case ST_RL_CR:
        if (ch != '\n')
            return head_fail(s, 400, "CR without LF in request line");
        if (head_request_line(s, buf + s->rl_start, s->pos - 1 - s->rl_start) != SRV_HEAD_MORE)
            return SRV_HEAD_ERROR;
        s->state = ST_LINE_START;
        s->line_start = s->pos + 1;
        break;
    }
    return SRV_HEAD_MORE;
}

/* One byte of the header section. */
static enum srv_head_state head_byte_field(struct srv_head_scan *s, unsigned char ch,
                                           const struct srv_head_limits *lim)
{
    switch (s->state) {
    case ST_LINE_START:
        if (ch == '\r') {
            s->state = ST_END_CR;
            return SRV_HEAD_MORE;
        }
        if (ch == '\n')
            return head_fail(s, 400, "bare LF in request head");
        if (ch == ' ' || ch == '\t')
            return head_fail(s, 400, "obs-fold (line folding) in header");
        if (ch == ':')
            return head_fail(s, 400, "empty header name");
        if (!head_tchar(ch))
            return head_fail(s, 400, "invalid byte in header name");
        if (++s->headers > lim->max_headers)
            return head_fail(s, 431, "too many headers");
        s->state = ST_NAME;
        return SRV_HEAD_MORE;
    case ST_NAME:
        if (ch == ':')
            s->state = ST_VALUE;
        else if (ch == ' ' || ch == '\t')
            return head_fail(s, 400, "whitespace before colon in header");
        else if (ch == '\r' || ch == '\n')
            return head_fail(s, 400, "header line without colon");
        else if (!head_tchar(ch))
            return head_fail(s, 400, "invalid byte in header name");
        return SRV_HEAD_MORE;
    case ST_VALUE:
        if (ch == '\r')
            s->state = ST_VALUE_CR;
        else if (ch == '\n')
            return head_fail(s, 400, "bare LF in header");
        else if (head_ctl(ch) && ch != '\t')
            return head_fail(s, 400, "control byte in header value");
        return SRV_HEAD_MORE;
    case ST_VALUE_CR:
        if (ch != '\n')
            return head_fail(s, 400, "CR without LF in header");
        s->state = ST_LINE_START;
        return SRV_HEAD_MORE;
    case ST_END_CR:
        if (ch != '\n')
            return head_fail(s, 400, "CR without LF in request head");
        s->state = ST_DONE;
        return SRV_HEAD_DONE;
    }
    (void)lim;
    return head_fail(s, 400, "internal scanner state");
}

enum srv_head_state srv_head_scan(struct srv_head_scan *s, const char *buf, size_t len,
                                  const struct srv_head_limits *lim)
{
    if (s->state == ST_DONE)
        return SRV_HEAD_DONE;
    if (s->state == ST_ERROR)
        return SRV_HEAD_ERROR;
    for (; s->pos < len; s->pos++) {
        enum srv_head_state r;
        if (s->state <= ST_RL_CR) {
            r = head_byte_line(s, buf, lim);
        } else {
            /* header bytes: everything after the request line's CRLF, the empty line excluded */
            bool last_line =
                s->state == ST_END_CR || (s->state == ST_LINE_START && buf[s->pos] == '\r');
            if (!last_line && ++s->hdr_bytes > lim->max_header_bytes)
                return head_fail(s, 431, "header section too large");
            r = head_byte_field(s, (unsigned char)buf[s->pos], lim);
        }
        if (r == SRV_HEAD_ERROR)
            return r;
        if (r == SRV_HEAD_DONE) {
            s->pos++;
            s->head_len = s->pos;
            return r;
        }
    }
    return SRV_HEAD_MORE;
}

/* ---- the Host field value (RFC 9112 section 3.2, RFC 3986 section 3.2.2) ------------------ */

static bool head_hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* reg-name = *( unreserved / pct-encoded / sub-delims ) */
static bool head_reg_name(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '%') {
            if (i + 2 >= n || !head_hex((unsigned char)v[i + 1]) ||
                !head_hex((unsigned char)v[i + 2]))
                return false;
            i += 2;
            continue;
        }
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (ch == 0 || strchr("-._~!$&'()*+,;=", ch) == NULL)
            return false;
    }
    return true;
}

/* IP-literal = "[" ( IPv6address / IPvFuture ) "]": the bracketed part holds only what those
 * can hold (hex digits, ':', '.', and for IPvFuture 'v' and unreserved / sub-delims). */
static bool head_ip_literal(const char *v, size_t n)
{
    if (n < 3 || v[0] != '[' || v[n - 1] != ']')
        return false;
    const char *in = v + 1;
    size_t len = n - 2;
    if (in[0] == 'v' || in[0] == 'V') { /* "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
        size_t i = 1;
        while (i < len && head_hex((unsigned char)in[i]))
            i++;
        if (i == 1 || i + 1 >= len || in[i] != '.')
            return false;
        for (i++; i < len; i++)
            if (in[i] != ':' && (in[i] == '%' || !head_reg_name(in + i, 1)))
                return false;
        return true;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (!head_hex(ch) && ch != ':' && ch != '.')
            return false;
    }
    return memchr(in, ':', len) != NULL;
}

bool srv_head_host_valid(const char *v, size_t n)
{
    size_t host_len = n;
    if (n > 0 && v[0] == '[') {
        const char *end = memchr(v, ']', n);
        if (end == NULL)
            return false;
        host_len = (size_t)(end - v) + 1;
        if (!head_ip_literal(v, host_len))
            return false;
    } else {
        const char *colon = memchr(v, ':', n);
        if (colon != NULL)
            host_len = (size_t)(colon - v);
        if (!head_reg_name(v, host_len))
            return false;
    }
    if (host_len == n)
        return true;
    if (v[host_len] != ':')
        return false;
    /* port = *DIGIT (empty allowed by the grammar), at most 5 digits */
    size_t plen = n - host_len - 1;
    return plen <= 5 && (plen == 0 || head_digits(v + host_len + 1, plen));
}
