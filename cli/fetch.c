/* fetch.c - one HTTP/1.1 exchange, blocking, for the task commands (`spindle tasks`, `spindle
 * call --async`): connect, send one request with Connection: close, read the whole answer.
 *
 * Design: the task commands make a handful of requests one after the other (an enqueue, then
 * long polls that each wait on the server), so a connection per request is simple and costs
 * nothing that matters; `spindle call` keeps its own non-blocking loop for many jobs at once.
 * Every step is bounded by the caller's timeout through poll(); the answer is parsed with
 * http-parser and kept whole in memory (at most CLI_FILE_MAX bytes).
 *
 * Ownership: the answer's body is the caller's (cli_fetch_resp_fini). No global state.
 */
#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/internal.h"

struct fetch_state {
    struct cli_fetch_resp *r;
    char field[32];
    size_t field_len;
    bool hdr_value;
    char *dst;
    size_t dst_len, dst_cap;
    size_t body_cap;
    bool complete, too_large;
};

static long long fetch_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Where the value of the header just named goes (NULL = not kept). */
static void fetch_pick(struct fetch_state *s)
{
    static const struct {
        const char *name;
        size_t off;
    } kept[] = {
        {"content-type", offsetof(struct cli_fetch_resp, ctype)},
        {"location", offsetof(struct cli_fetch_resp, location)},
        {"x-request-id", offsetof(struct cli_fetch_resp, request_id)},
        {"retry-after", offsetof(struct cli_fetch_resp, retry_after)},
        {"retry-after-ms", offsetof(struct cli_fetch_resp, retry_after_ms)},
    };
    s->dst = NULL;
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
        if (strlen(kept[i].name) == s->field_len &&
            strncasecmp(kept[i].name, s->field, s->field_len) == 0) {
            s->dst = (char *)s->r + kept[i].off;
            s->dst[0] = '\0';
            s->dst_len = 0;
            s->dst_cap = CLI_HDR_MAX;
        }
    }
}

static int fetch_on_header_field(http_parser *p, const char *at, size_t n)
{
    struct fetch_state *s = p->data;
    if (s->hdr_value) {
        s->field_len = 0;
        s->hdr_value = false;
    }
    size_t room = sizeof(s->field) - s->field_len;
    size_t take = n < room ? n : room;
    memcpy(s->field + s->field_len, at, take);
    s->field_len += take;
    return 0;
}

static int fetch_on_header_value(http_parser *p, const char *at, size_t n)
{
    struct fetch_state *s = p->data;
    if (!s->hdr_value) {
        s->hdr_value = true;
        fetch_pick(s);
    }
    if (s->dst != NULL && s->dst_len + n < s->dst_cap) {
        memcpy(s->dst + s->dst_len, at, n);
        s->dst_len += n;
        s->dst[s->dst_len] = '\0';
    }
    return 0;
}

int cli_body_append(char **buf, size_t *len, size_t *cap, const char *at, size_t n, size_t max)
{
    if (n > max - *len)
        return -EFBIG;
    if (*cap - *len < n + 1) {
        size_t c = *cap ? *cap : 4096;
        while (c - *len < n + 1)
            c *= 2;
        char *b = realloc(*buf, c);
        if (b == NULL)
            return -ENOMEM;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static int fetch_on_body(http_parser *p, const char *at, size_t n)
{
    struct fetch_state *s = p->data;
    struct cli_fetch_resp *r = s->r;
    /* the body and its NUL within CLI_FILE_MAX */
    int rc = cli_body_append(&r->body, &r->body_len, &s->body_cap, at, n, CLI_FILE_MAX - 1);
    if (rc == -EFBIG)
        s->too_large = true;
    return rc != 0;
}

static int fetch_on_complete(http_parser *p)
{
    struct fetch_state *s = p->data;
    if (p->status_code / 100 == 1)
        return 0; /* an interim answer: the real one follows */
    s->r->status = (int)p->status_code;
    s->complete = true;
    return 0;
}

static const http_parser_settings fetch_settings = {
    .on_header_field = fetch_on_header_field,
    .on_header_value = fetch_on_header_value,
    .on_body = fetch_on_body,
    .on_message_complete = fetch_on_complete,
};

/* Wait for `events` on fd until `deadline`. Returns 0, -ETIMEDOUT or a negative errno. */
static int fetch_wait(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - fetch_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n > 0)
            return 0;
    }
}

/* A connected non-blocking socket to u, or a negative errno. */
static int fetch_connect(const struct cli_url *u, long long deadline)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    if (getaddrinfo(u->host, u->port, &hints, &ai) != 0)
        return -EHOSTUNREACH;
    int rc = -ECONNREFUSED;
    for (struct addrinfo *a = ai; a != NULL; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        int one = 1, err = 0;
        socklen_t len = sizeof(err);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            rc = errno == EINPROGRESS ? fetch_wait(fd, POLLOUT, deadline) : -errno;
            if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
                rc = -err;
        } else {
            rc = 0;
        }
        if (rc == 0) {
            freeaddrinfo(ai);
            return fd;
        }
        close(fd);
    }
    freeaddrinfo(ai);
    return rc;
}

static int fetch_send(int fd, const char *buf, size_t len, long long deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = fetch_wait(fd, POLLOUT, deadline);
            if (rc != 0)
                return rc;
            continue;
        }
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fetch_read(int fd, struct fetch_state *s, long long deadline)
{
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = s;
    char buf[16384];
    while (!s->complete) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = fetch_wait(fd, POLLIN, deadline);
            if (rc != 0)
                return rc;
            continue;
        }
        if (n < 0)
            return -errno;
        (void)http_parser_execute(&p, &fetch_settings, buf, (size_t)n);
        if (s->too_large)
            return -EFBIG;
        if (!s->complete && HTTP_PARSER_ERRNO(&p) != HPE_OK)
            return -EPROTO;
        if (n == 0 && !s->complete)
            return -ECONNRESET;
    }
    return 0;
}

int cli_fetch(const struct cli_fetch_req *q, struct cli_fetch_resp *r, char *err, size_t size)
{
    memset(r, 0, sizeof(*r));
    long long deadline = fetch_now_ms() + q->timeout_ms;
    char *head = NULL;
    size_t head_len = 0;
    FILE *f = open_memstream(&head, &head_len);
    if (f == NULL)
        return -ENOMEM;
    fprintf(f, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: spindle-cli\r\nConnection: close\r\n",
            q->method, q->target, q->url->authority);
    if (q->tenant)
        fprintf(f, "X-Tenant-Id: %s\r\n", q->tenant);
    if (q->token != NULL && q->token[0] != '\0')
        fprintf(f, "Authorization: Bearer %s\r\n", q->token);
    if (q->request_id)
        fprintf(f, "X-Request-Id: %s\r\n", q->request_id);
    if (q->idempotency_key)
        fprintf(f, "Idempotency-Key: %s\r\n", q->idempotency_key);
    if (q->body != NULL)
        fprintf(f, "Content-Type: application/json\r\nContent-Length: %zu\r\n", q->body_len);
    fputs("\r\n", f);
    if (q->body != NULL)
        fwrite(q->body, 1, q->body_len, f);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(head);
        return -ENOMEM;
    }
    int fd = fetch_connect(q->url, deadline);
    int rc = fd < 0 ? fd : fetch_send(fd, head, head_len, deadline);
    explicit_bzero(head, head_len); /* it may hold the token */
    free(head);
    struct fetch_state s = {.r = r};
    if (rc == 0)
        rc = fetch_read(fd, &s, deadline);
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        snprintf(err, size, "%s %s at %s: %s", q->method, q->target, q->url->authority,
                 rc == -EPROTO         ? "the answer is not HTTP/1.1"
                 : rc == -EFBIG        ? "the answer is too large"
                 : rc == -EHOSTUNREACH ? "cannot resolve the host"
                                       : strerror(-rc));
        cli_fetch_resp_fini(r);
        return rc;
    }
    return 0;
}

void cli_fetch_resp_fini(struct cli_fetch_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}
