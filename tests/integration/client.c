/* client.c - a raw HTTP/1.1 client for the integration suites (declared in harness.h).
 *
 * Design: a connection is a non-blocking socket and a growable receive buffer. Every read and
 * write goes through poll() against an absolute deadline, so no call can hang a suite. Answers are
 * parsed from the buffer without consuming the bytes that follow them, so pipelined answers are
 * read one by one and bytes the server should never have sent stay visible to the test. The
 * parser is strict about what the server must send (status line, CRLF header block) and frames
 * bodies by Content-Length, chunked coding or the end of the connection.
 */
#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the client: connection ----------------------------------------------------------------- */

static int hs_poll(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - hs_now_ms();
        if (left < 0)
            left = 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -ETIMEDOUT;
        return 0;
    }
}

struct hs_conn *hs_connect_host(const char *host, int port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        sl = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*in6);
    } else {
        errno = EINVAL;
        return NULL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(fd, (struct sockaddr *)&ss, sl) == 0 ? 0 : -errno;
    if (rc == -EINPROGRESS) {
        rc = hs_poll(fd, POLLOUT, hs_now_ms() + timeout_ms);
        int err = 0;
        socklen_t el = sizeof(err);
        if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err != 0)
            rc = -err;
    }
    struct hs_conn *c = rc == 0 ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        close(fd);
        errno = rc != 0 ? -rc : ENOMEM;
        return NULL;
    }
    c->fd = fd;
    return c;
}

struct hs_conn *hs_connect(const struct hs_server *s)
{
    return hs_connect_host("127.0.0.1", hs_port(s), HS_IO_MS);
}

void hs_close(struct hs_conn *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

void hs_abort(struct hs_conn *c)
{
    if (c == NULL)
        return;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    hs_close(c);
}

int hs_send(struct hs_conn *c, const void *buf, size_t len, int timeout_ms)
{
    long long deadline = hs_now_ms() + timeout_ms;
    const char *p = buf;
    while (len > 0) {
        ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN)
            return -errno;
        int rc = hs_poll(c->fd, POLLOUT, deadline);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int hs_send_str(struct hs_conn *c, const char *s)
{
    return hs_send(c, s, strlen(s), HS_IO_MS);
}

/* Read what is available (waiting until `deadline` for something). Returns the byte count, 0 at
 * end of stream, or a negative errno (-ETIMEDOUT, -ECONNRESET...). */
static ssize_t hs_fill(struct hs_conn *c, long long deadline)
{
    if (c->eof)
        return 0;
    if (c->error != 0)
        return -c->error;
    for (;;) {
        if (c->cap - c->len < 16384) {
            char *b = realloc(c->buf, c->cap + 65536 + 1);
            if (b == NULL)
                return -ENOMEM;
            c->buf = b;
            c->cap += 65536;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r > 0) {
            c->len += (size_t)r;
            c->buf[c->len] = '\0';
            return r;
        }
        if (r == 0) {
            c->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            c->error = errno;
            return -errno;
        }
        int rc = hs_poll(c->fd, POLLIN, deadline);
        if (rc != 0)
            return rc;
    }
}

void hs_consume(struct hs_conn *c, size_t n)
{
    if (n > c->len)
        n = c->len;
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    if (c->buf != NULL)
        c->buf[c->len] = '\0';
}

int hs_read_until_close(struct hs_conn *c, int timeout_ms)
{
    long long deadline = hs_now_ms() + timeout_ms;
    for (;;) {
        ssize_t r = hs_fill(c, deadline);
        if (r == 0 || r == -ECONNRESET || r == -EPIPE)
            return 0;
        if (r < 0)
            return (int)r;
    }
}

bool hs_closed_quietly(struct hs_conn *c, int timeout_ms)
{
    long long deadline = hs_now_ms() + timeout_ms;
    ssize_t r = hs_fill(c, deadline);
    return r == 0 || r == -ECONNRESET || r == -EPIPE;
}

/* ---- the client: answers -------------------------------------------------------------------- */

static const char *hs_find_head_end(const char *buf, size_t len)
{
    return len >= 4 ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
}

bool hs_resp_header(const struct hs_resp *r, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line != NULL) {
        line += 2;
        const char *end = strstr(line, "\r\n");
        size_t ll = end != NULL ? (size_t)(end - line) : strlen(line);
        if (ll > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            size_t vl = ll - nl - 1;
            while (vl > 0 && (*v == ' ' || *v == '\t'))
                v++, vl--;
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (out != NULL && size > 0)
                snprintf(out, size, "%.*s", (int)vl, v);
            return true;
        }
        line = end;
    }
    return false;
}

int hs_resp_header_count(const struct hs_resp *r, const char *name)
{
    size_t nl = strlen(name);
    int n = 0;
    for (const char *line = strstr(r->head, "\r\n"); line != NULL;
         line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, name, nl) == 0 && line[2 + nl] == ':')
            n++;
    }
    return n;
}

/* Decode a chunked body at buf[0..len). Returns 1 with *used and the decoded body when complete,
 * 0 when more bytes are needed, -EPROTO when malformed. */
static int hs_chunked(const char *buf, size_t len, size_t *used, char **body, size_t *blen)
{
    size_t pos = 0, out = 0;
    char *dec = malloc(len + 1);
    if (dec == NULL)
        return -ENOMEM;
    for (;;) {
        const char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
        if (eol == NULL)
            break;
        char *endp;
        unsigned long size = strtoul(buf + pos, &endp, 16);
        if (endp == buf + pos) {
            free(dec);
            return -EPROTO;
        }
        pos = (size_t)(eol - buf) + 2;
        if (size == 0) {
            const char *fin = memmem(buf + pos - 2, len - pos + 2, "\r\n\r\n", 4);
            if (fin == NULL)
                break;
            *used = (size_t)(fin - buf) + 4;
            dec[out] = '\0';
            *body = dec;
            *blen = out;
            return 1;
        }
        if (len - pos < size + 2)
            break;
        memcpy(dec + out, buf + pos, size);
        out += size;
        pos += size + 2;
    }
    free(dec);
    return 0;
}

static int hs_status_parse(struct hs_resp *r)
{
    int major = 0, minor = 0, status = 0;
    if (sscanf(r->head, "HTTP/%d.%d %d", &major, &minor, &status) != 3 || major != 1 ||
        status < 100 || status > 999)
        return -EPROTO;
    r->status = status;
    r->minor = minor;
    return 0;
}

/* Frame the body of an answer whose head is r->head and ends at c->buf + hlen. Returns 1 when the
 * answer is complete (consumed from the buffer), 0 when more bytes are needed. */
static int hs_body_frame(struct hs_conn *c, struct hs_resp *r, size_t hlen, bool no_body)
{
    char v[64];
    if (no_body) {
        hs_consume(c, hlen);
        return 1;
    }
    if (hs_resp_header(r, "Transfer-Encoding", v, sizeof(v)) && strcasecmp(v, "chunked") == 0) {
        size_t used = 0;
        int rc = hs_chunked(c->buf + hlen, c->len - hlen, &used, &r->body, &r->body_len);
        if (rc == 1)
            hs_consume(c, hlen + used);
        return rc;
    }
    size_t want;
    if (hs_resp_header(r, "Content-Length", v, sizeof(v)))
        want = (size_t)strtoull(v, NULL, 10);
    else if (c->eof || c->error != 0)
        want = c->len - hlen; /* delimited by the end of the connection */
    else
        return 0;
    if (c->len - hlen < want)
        return 0;
    r->body = malloc(want + 1);
    if (r->body == NULL)
        return -ENOMEM;
    memcpy(r->body, c->buf + hlen, want);
    r->body[want] = '\0';
    r->body_len = want;
    hs_consume(c, hlen + want);
    return 1;
}

/* Try to take one complete answer from the buffer. 1 = done, 0 = need more, < 0 = error. */
static int hs_try_parse(struct hs_conn *c, struct hs_resp *r, bool head_only)
{
    const char *end = c->buf != NULL ? hs_find_head_end(c->buf, c->len) : NULL;
    if (end == NULL)
        return 0;
    size_t hlen = (size_t)(end - c->buf) + 4;
    free(r->head);
    r->head = strndup(c->buf, hlen - 2);
    if (r->head == NULL)
        return -ENOMEM;
    int rc = hs_status_parse(r);
    if (rc != 0)
        return rc;
    bool no_body = head_only || r->status < 200 || r->status == 204 || r->status == 304;
    return hs_body_frame(c, r, hlen, no_body);
}

int hs_read_response(struct hs_conn *c, struct hs_resp *r, bool head_only, int timeout_ms)
{
    long long deadline = hs_now_ms() + timeout_ms;
    hs_resp_fini(r);
    for (;;) {
        /* Parse first: the end of the stream (eof/error) may complete a close-delimited body. */
        int rc = hs_try_parse(c, r, head_only);
        if (rc == 1) {
            if (r->body == NULL)
                r->body = strdup("");
            return r->body != NULL ? 0 : -ENOMEM;
        }
        if (rc == 0 && (c->eof || c->error != 0))
            rc = -ECONNRESET;
        ssize_t got = rc < 0 ? rc : hs_fill(c, deadline);
        if (got < 0 && got != -ECONNRESET && got != -EPIPE)
            rc = (int)got;
        if (rc < 0) {
            hs_resp_fini(r);
            return rc;
        }
    }
}

void hs_resp_fini(struct hs_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

json_t *hs_resp_json(const struct hs_resp *r)
{
    return r->body != NULL ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
}

bool hs_resp_is_error(const struct hs_resp *r, int status, const char *code)
{
    if (r->status != status)
        return false;
    char ct[128];
    if (!hs_resp_header(r, "Content-Type", ct, sizeof(ct)) ||
        strncmp(ct, "application/json", 16) != 0)
        return false;
    json_t *doc = hs_resp_json(r);
    json_t *err = json_object_get(doc, "error");
    const char *got = hs_json_str(err, "code");
    const char *rid = hs_json_str(err, "request_id");
    bool ok = got != NULL && strcmp(got, code) == 0 && rid != NULL && *rid != '\0' &&
              hs_json_str(err, "message") != NULL;
    json_decref(doc);
    return ok;
}

int hs_exchange(struct hs_conn *c, const char *request, struct hs_resp *r)
{
    hs_resp_fini(r);
    int rc = hs_send_str(c, request);
    if (rc != 0)
        return rc;
    return hs_read_response(c, r, strncmp(request, "HEAD ", 5) == 0, HS_IO_MS);
}

int hs_roundtrip(const struct hs_server *s, const char *request, struct hs_resp *r)
{
    hs_resp_fini(r);
    struct hs_conn *c = hs_connect(s);
    if (c == NULL)
        return -errno;
    int rc = hs_exchange(c, request, r);
    hs_close(c);
    return rc;
}
