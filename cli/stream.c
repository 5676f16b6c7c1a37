/* stream.c - `spindle call KIND --body FILE [-o FILE]` for bodies too large to hold: the file is
 * sent while the answer is received and written, in 64 KiB pieces, with a progress line (bytes
 * each way and the rate) on stderr when it is a terminal.
 *
 * Design: one blocking-free poll() loop over one socket, the body file and the output file, no
 * buffer larger than a piece: the server's backpressure (a full body buffer, see README
 * "Streaming") simply leaves the socket unwritable, and a slow output file leaves the socket
 * unread. The answer is parsed with http-parser (HTTP_RESPONSE): a 100 Continue is skipped, a
 * 200's body goes to the output, any other status's body (a JSON error) to stderr, and a
 * Spindle-Error trailer or a body cut before its last chunk is a failure. Such a transfer is not
 * retried (its body cannot be replayed cheaply); the runner of call.c does everything else.
 */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/internal.h"

#define CS_PIECE       (64u * 1024u)
#define CS_MIN_BYTES   (1024u * 1024u) /* smaller bodies go through the runner (retries) */
#define CS_PROGRESS_MS 200

struct cs {
    int fd, in_fd, out_fd;
    uint64_t size, sent, received;
    http_parser parser;
    int status;
    bool done, failed, tty, trailer_name;
    char trailer[96];
    char errbuf[1024];
    size_t errlen;
    uint64_t t0_ms, drawn_ms;
};

static uint64_t cs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool cli_stream_applies(const struct cli_call_opts *o)
{
    struct stat st;
    return o->batch == NULL && o->body != NULL && strcmp(o->body, "-") != 0 && !o->json &&
           stat(o->body, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > CS_MIN_BYTES;
}

static void cs_progress(struct cs *s, bool last)
{
    uint64_t now = cs_now_ms();
    if (!s->tty || (!last && now - s->drawn_ms < CS_PROGRESS_MS))
        return;
    s->drawn_ms = now;
    double secs = (double)(now - s->t0_ms) / 1000.0;
    double rate = secs > 0 ? (double)s->sent / 1e6 / secs : 0;
    fprintf(stderr, "\r  sent %.1f / %.1f MiB (%3.0f%%)  received %.1f MiB  %.1f MB/s ",
            (double)s->sent / 1048576.0, (double)s->size / 1048576.0,
            s->size ? 100.0 * (double)s->sent / (double)s->size : 100.0,
            (double)s->received / 1048576.0, rate);
    if (last)
        fputc('\n', stderr);
}

/* ---- the answer ----------------------------------------------------------------------------- */

static int cs_on_headers(http_parser *p)
{
    struct cs *s = p->data;
    s->status = p->status_code;
    return 0;
}

static int cs_on_body(http_parser *p, const char *at, size_t n)
{
    struct cs *s = p->data;
    if (s->status != 200) {
        size_t k = sizeof(s->errbuf) - 1 - s->errlen < n ? sizeof(s->errbuf) - 1 - s->errlen : n;
        memcpy(s->errbuf + s->errlen, at, k);
        s->errlen += k;
        return 0;
    }
    s->received += n;
    while (n > 0) {
        ssize_t w = write(s->out_fd, at, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            s->failed = true;
            return 1;
        }
        at += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cs_on_field(http_parser *p, const char *at, size_t n)
{
    struct cs *s = p->data;
    s->trailer_name = s->status != 0 && n == 13 && strncasecmp(at, "Spindle-Error", 13) == 0;
    return 0;
}

static int cs_on_value(http_parser *p, const char *at, size_t n)
{
    struct cs *s = p->data;
    if (s->trailer_name)
        snprintf(s->trailer, sizeof(s->trailer), "%.*s", (int)n, at);
    return 0;
}

static int cs_on_complete(http_parser *p)
{
    struct cs *s = p->data;
    if (p->status_code == 100) {
        s->status = 0;
        return 0;
    }
    s->done = true;
    return 0;
}

static const http_parser_settings cs_settings = {
    .on_headers_complete = cs_on_headers,
    .on_body = cs_on_body,
    .on_header_field = cs_on_field,
    .on_header_value = cs_on_value,
    .on_message_complete = cs_on_complete,
};

/* ---- the exchange --------------------------------------------------------------------------- */

static int cs_connect(const struct cli_url *u)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(u->host, u->port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    int fd = -1;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd >= 0 ? fd : -ECONNREFUSED;
}

/* "/v1/jobs/KIND?K=V&..." with the keys and values percent-encoded. */
static void cs_target(const struct cli_call_opts *o, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "/v1/jobs/%s", o->kind);
    for (int i = 0; i < o->nparams && n + 4 < size; i++) {
        buf[n++] = i == 0 ? '?' : '&';
        for (const char *p = o->params[i]; *p != '\0' && n + 4 < size; p++) {
            unsigned char ch = (unsigned char)*p;
            if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                strchr("-._~=", ch) != NULL)
                buf[n++] = (char)ch;
            else
                n += (size_t)snprintf(buf + n, size - n, "%%%02X", ch);
        }
    }
    buf[n < size ? n : size - 1] = '\0';
}

static int cs_head(struct cs *s, const struct cli_call_opts *o, const struct cli_url *u)
{
    char target[2048], head[4096];
    cs_target(o, target, sizeof(target));
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %llu\r\nTE: trailers\r\n",
                     target, u->authority, (unsigned long long)s->size);
    if (o->tenant != NULL)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "X-Tenant-Id: %s\r\n", o->tenant);
    if (o->request_id != NULL)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "X-Request-Id: %s\r\n", o->request_id);
    if (o->timeout_ms > 0)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "X-Timeout-Ms: %lld\r\n", o->timeout_ms);
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    return send(s->fd, head, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -EIO;
}

/* Send the next piece of the file (a short send puts the rest back by seeking). */
static int cs_send(struct cs *s)
{
    char buf[CS_PIECE];
    ssize_t r = pread(s->in_fd, buf, sizeof(buf), (off_t)s->sent);
    if (r <= 0)
        return r == 0 ? -EPIPE : -errno; /* the file shrank */
    ssize_t w = send(s->fd, buf, (size_t)r, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    s->sent += (uint64_t)w;
    return 0;
}

static int cs_recv(struct cs *s)
{
    char buf[CS_PIECE];
    ssize_t r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    size_t k = http_parser_execute(&s->parser, &cs_settings, buf, (size_t)r);
    if (r == 0 || k != (size_t)r || HTTP_PARSER_ERRNO(&s->parser) != HPE_OK)
        return s->done ? 0 : -EPROTO; /* closed or cut before the end */
    return 0;
}

static int cs_loop(struct cs *s)
{
    while (!s->done && !s->failed) {
        bool more = s->sent < s->size;
        struct pollfd p = {s->fd, (short)(POLLIN | (more ? POLLOUT : 0)), 0};
        int r = poll(&p, 1, CS_PROGRESS_MS);
        if (r < 0 && errno != EINTR)
            return -errno;
        if ((p.revents & POLLOUT) && more && cs_send(s) < 0)
            more = false; /* the server stopped taking the body: read its answer */
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int rc = cs_recv(s);
            if (rc < 0)
                return rc;
        }
        cs_progress(s, false);
    }
    return s->failed ? -EIO : 0;
}

int cli_stream_run(const struct cli_call_opts *o)
{
    struct cs s = {.fd = -1, .in_fd = -1, .out_fd = -1, .tty = isatty(2) == 1};
    struct cli_url u;
    char err[256];
    struct stat st;
    int code = CLI_EXIT_FAIL, rc;
    if (cli_url_parse(o->server, &u, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    s.in_fd = open(o->body, O_RDONLY | O_CLOEXEC);
    if (s.in_fd < 0 || fstat(s.in_fd, &st) != 0) {
        fprintf(stderr, "spindle: %s: %s\n", o->body, strerror(errno));
        goto out;
    }
    s.size = (uint64_t)st.st_size;
    s.out_fd = o->output != NULL ? open(o->output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)
                                 : dup(1);
    if (s.out_fd < 0) {
        fprintf(stderr, "spindle: %s: %s\n", o->output ? o->output : "stdout", strerror(errno));
        goto out;
    }
    s.fd = cs_connect(&u);
    if (s.fd < 0 || cs_head(&s, o, &u) != 0) {
        fprintf(stderr, "spindle: %s: cannot connect\n", o->server);
        goto out;
    }
    http_parser_init(&s.parser, HTTP_RESPONSE);
    s.parser.data = &s;
    s.t0_ms = cs_now_ms();
    rc = cs_loop(&s);
    cs_progress(&s, true);
    if (rc < 0 || s.status != 200 || s.trailer[0] != '\0') {
        if (s.errlen > 0)
            fprintf(stderr, "%.*s", (int)s.errlen, s.errbuf);
        fprintf(stderr, "spindle: %s failed: %s\n", o->kind,
                s.trailer[0]                       ? s.trailer
                : s.status == 0 || s.status == 200 ? "the answer was cut before its end"
                                                   : "the server refused it");
        goto out;
    }
    code = CLI_EXIT_OK;
out:
    if (s.fd >= 0)
        close(s.fd);
    if (s.in_fd >= 0)
        close(s.in_fd);
    if (s.out_fd >= 0 && close(s.out_fd) != 0)
        code = CLI_EXIT_FAIL;
    return code;
}
