/* overload.c - an HTTP/1.1 load generator for the overload benchmarks: closed loop (every
 * connection sends its next request as soon as the last answer arrived, a refusal included, like
 * a retry storm) or open loop (requests start at a fixed rate whatever the answers do).
 *
 * Design: one thread, epoll, N keep-alive connections to 127.0.0.1:PORT, one request in flight
 * per connection. In the closed loop a connection sends its next request as soon as it has read
 * an answer. In the open loop, request i is due at start + i / rate and takes the idle
 * connection that has been idle longest (a FIFO of idle connections): the arrivals of an open
 * loop stand for independent clients, so no connection is reused while others rest, which the
 * server would rightly take for one client retrying at once. A due request that finds every
 * connection busy waits, and that wait counts in its latency. Answers are framed by
 * Content-Length (spindle always sends it); a connection the server closes is reopened.
 *
 * Times: an answer's arrival is the kernel's receive time of its bytes (SO_TIMESTAMPNS), not the
 * moment this process got the CPU to read them, so a generator descheduled on a busy machine
 * does not bill its own delay to the server. A 2xx latency runs from when the request was due
 * (open loop; the send in the closed loop) to that arrival, so a slow server cannot hide behind
 * the generator (no coordinated omission). A refusal's latency runs from the send, because its
 * target is about how fast the server refuses; how late the generator itself sent (send - due)
 * is reported as lag, so a starved generator shows instead of hiding in either figure. Every
 * answer is counted by status class and its latency kept (microseconds) in one array per class,
 * sorted at the end for percentiles.
 *
 * Output, one line of key=value for scripts:
 *   overload mode=open tenant=a seconds=10.00 sent=... ok=... ok_per_s=... refused=... r429=...
 *            r503=... r504=... other=... ok_p50_ms=... ok_p99_ms=... ok_max_ms=... late=...
 *            ref_p50_ms=... ref_p99_ms=... ref_max_ms=... lag_p99_ms=... errors=...
 * where ok counts 2xx, ok_per_s those that arrived within the run's seconds (as wrk counts: the
 * answers still queued at the end, up to a deadline's worth of work, arrive after it and would
 * inflate the rate), late counts 2xx that arrived more than the X-Timeout-Ms after their send,
 * and lag_p99_ms is the 99th percentile of how late requests were sent after they were due.
 *
 * Usage: overload -p PORT [-c CONNS] [-d SECONDS] [-r RATE] [-T TENANT] [-t TIMEOUT_MS] PATH
 *   -r 0 (default) is the closed loop; PATH e.g. "/v1/jobs/primes?n=200000" (sent as POST).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define OV_RBUF 8192

struct ov_conn {
    int fd;
    bool busy, idle_queued;   /* idle_queued: in the open loop's FIFO of idle connections */
    uint64_t due_us, sent_us; /* of the request in flight */
    uint64_t rx_us;           /* kernel receive time of the last bytes read (monotonic scale) */
    char buf[OV_RBUF];
    size_t len;
};

struct ov_lat {
    uint32_t *v;
    size_t n, cap;
};

struct ov {
    int port, nconns, timeout_ms;
    double seconds, rate;
    const char *path, *tenant;
    char req[1024];
    size_t req_len;
    struct ov_conn *conns;
    int *idle; /* open loop: ring of idle connection indexes, oldest first */
    int idle_head, idle_n;
    int ep, inflight;
    uint64_t start_us, end_us, next_due; /* next_due: index of the next open-loop request */
    uint64_t sent, s2xx, s2xx_in, s429, s503, s504, sother, late, errors;
    struct ov_lat ok, ref, lag;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void lat_add(struct ov_lat *l, uint64_t us)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        uint32_t *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return; /* the sample is lost; the counters still hold */
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int lat_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double lat_pct_ms(const struct ov_lat *l, double p)
{
    if (l->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(l->n - 1) + 0.5);
    return l->v[i] / 1000.0;
}

/* The open loop's FIFO of idle connections. */
static void idle_push(struct ov *o, struct ov_conn *c)
{
    if (o->rate <= 0 || c->idle_queued || c->fd < 0)
        return;
    o->idle[(o->idle_head + o->idle_n++) % o->nconns] = (int)(c - o->conns);
    c->idle_queued = true;
}

static struct ov_conn *idle_pop(struct ov *o)
{
    while (o->idle_n > 0) {
        struct ov_conn *c = &o->conns[o->idle[o->idle_head]];
        o->idle_head = (o->idle_head + 1) % o->nconns;
        o->idle_n--;
        c->idle_queued = false;
        if (!c->busy && c->fd >= 0)
            return c;
    }
    return NULL;
}

/* A receive time on CLOCK_REALTIME from SO_TIMESTAMPNS, on the monotonic scale of now_us();
 * now when the message carries none. */
static uint64_t rx_us(struct msghdr *m, uint64_t now)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm != NULL; cm = CMSG_NXTHDR(m, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS)
            continue;
        struct timespec ts, real;
        memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
        clock_gettime(CLOCK_REALTIME, &real);
        int64_t age =
            ((int64_t)real.tv_sec - ts.tv_sec) * 1000000 + (real.tv_nsec - ts.tv_nsec) / 1000;
        return age > 0 && (uint64_t)age < now ? now - (uint64_t)age : now;
    }
    return now;
}

static int conn_open(struct ov *o, struct ov_conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int rc = -errno;
        close(c->fd);
        c->fd = -1;
        return rc;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(o->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        return -errno;
    c->busy = false;
    c->len = 0;
    idle_push(o, c);
    return 0;
}

static void conn_reopen(struct ov *o, struct ov_conn *c)
{
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    if (c->busy)
        o->inflight--;
    c->busy = false;
    if (conn_open(o, c) != 0)
        o->errors++;
}

static void conn_send(struct ov *o, struct ov_conn *c, uint64_t due)
{
    /* Blocking socket, small request: one write that the kernel takes whole. */
    ssize_t w = write(c->fd, o->req, o->req_len);
    if (w != (ssize_t)o->req_len) {
        o->errors++;
        conn_reopen(o, c);
        return;
    }
    c->busy = true;
    o->inflight++;
    c->due_us = due;
    c->sent_us = now_us();
    lat_add(&o->lag, c->sent_us > due ? c->sent_us - due : 0);
    o->sent++;
}

static void count(struct ov *o, struct ov_conn *c, int status, uint64_t now)
{
    uint64_t lat = now > c->due_us ? now - c->due_us : 0;
    uint64_t since_send = now > c->sent_us ? now - c->sent_us : 0;
    if (status >= 200 && status < 300) {
        o->s2xx++;
        o->s2xx_in += now <= o->end_us;
        lat_add(&o->ok, lat);
        if (o->timeout_ms > 0 && since_send > (uint64_t)o->timeout_ms * 1000u)
            o->late++;
        return;
    }
    if (status == 429 || status == 503)
        lat_add(&o->ref, since_send);
    if (status == 429)
        o->s429++;
    else if (status == 503)
        o->s503++;
    else if (status == 504)
        o->s504++;
    else
        o->sother++;
}

/* Parse one complete answer at the start of c->buf. Returns its length, 0 when incomplete, -1
 * when it is not HTTP. Sets *status and *close. */
static ssize_t answer_parse(struct ov_conn *c, int *status, bool *close_conn)
{
    c->buf[c->len < OV_RBUF ? c->len : OV_RBUF - 1] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (end == NULL)
        return c->len >= OV_RBUF - 1 ? -1 : 0;
    if (sscanf(c->buf, "HTTP/1.%*d %d", status) != 1)
        return -1;
    size_t head = (size_t)(end - c->buf) + 4, body = 0;
    *close_conn = false;
    for (char *p = c->buf; p < end; p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            body = strtoul(p + 15, NULL, 10);
        else if (strncasecmp(p, "Connection: close", 17) == 0)
            *close_conn = true;
    }
    if (head + body > OV_RBUF - 1)
        return -1;
    return c->len >= head + body ? (ssize_t)(head + body) : 0;
}

/* recv() with the kernel's receive time into c->rx_us. */
static ssize_t conn_recv(struct ov_conn *c)
{
    struct iovec iov = {c->buf + c->len, OV_RBUF - 1 - c->len};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof(ctl.buf)};
    ssize_t r = recvmsg(c->fd, &m, 0);
    if (r > 0)
        c->rx_us = rx_us(&m, now_us());
    return r;
}

static void conn_read(struct ov *o, struct ov_conn *c)
{
    ssize_t r = conn_recv(c);
    if (r <= 0) {
        if (c->busy)
            o->errors++;
        conn_reopen(o, c);
        return;
    }
    c->len += (size_t)r;
    int status;
    bool close_conn;
    ssize_t n = answer_parse(c, &status, &close_conn);
    if (n == 0)
        return;
    if (n < 0 || !c->busy) {
        o->errors++;
        conn_reopen(o, c);
        return;
    }
    count(o, c, status, c->rx_us);
    memmove(c->buf, c->buf + n, c->len - (size_t)n);
    c->len -= (size_t)n;
    c->busy = false;
    o->inflight--;
    if (close_conn)
        conn_reopen(o, c);
    else
        idle_push(o, c);
    uint64_t now = now_us();
    if (o->rate <= 0 && c->fd >= 0 && !c->busy && now < o->end_us)
        conn_send(o, c, now); /* closed loop: the next request at once */
}

/* Open loop: hand every due request to the longest idle connection; closed loop: start every
 * idle connection (at the start, and after a reopen). */
static void dispatch(struct ov *o, uint64_t now)
{
    if (now >= o->end_us)
        return;
    if (o->rate <= 0) {
        for (int i = 0; i < o->nconns; i++)
            if (!o->conns[i].busy && o->conns[i].fd >= 0)
                conn_send(o, &o->conns[i], now);
        return;
    }
    for (;;) {
        uint64_t due = o->start_us + (uint64_t)((double)o->next_due * 1e6 / o->rate);
        if (due > now)
            return;
        struct ov_conn *c = idle_pop(o);
        if (c == NULL)
            return; /* every connection busy: the request waits (and its latency grows) */
        o->next_due++;
        conn_send(o, c, due);
    }
}

static int run(struct ov *o)
{
    struct epoll_event evs[256];
    o->start_us = now_us();
    o->end_us = o->start_us + (uint64_t)(o->seconds * 1e6);
    for (;;) {
        uint64_t now = now_us();
        if (o->rate > 0 || o->inflight < o->nconns)
            dispatch(o, now);
        bool busy = o->inflight > 0;
        if (now >= o->end_us && (!busy || now >= o->end_us + 10000000u))
            break; /* done, and every answer in (or 10 s past the end) */
        int n = epoll_wait(o->ep, evs, 256, 1);
        if (n < 0 && errno != EINTR)
            return -errno;
        for (int i = 0; i < n; i++)
            conn_read(o, evs[i].data.ptr);
    }
    return 0;
}

static void report(struct ov *o)
{
    double secs = o->seconds;
    qsort(o->ok.v, o->ok.n, sizeof(uint32_t), lat_cmp);
    qsort(o->ref.v, o->ref.n, sizeof(uint32_t), lat_cmp);
    qsort(o->lag.v, o->lag.n, sizeof(uint32_t), lat_cmp);
    printf("overload mode=%s tenant=%s seconds=%.2f conns=%d rate=%.1f sent=%llu ok=%llu "
           "ok_per_s=%.1f refused=%llu r429=%llu r503=%llu r504=%llu other=%llu "
           "ok_p50_ms=%.2f ok_p99_ms=%.2f ok_max_ms=%.2f late=%llu ref_p50_ms=%.3f "
           "ref_p99_ms=%.3f ref_max_ms=%.3f lag_p99_ms=%.3f errors=%llu\n",
           o->rate > 0 ? "open" : "closed", o->tenant ? o->tenant : "-", secs, o->nconns, o->rate,
           (unsigned long long)o->sent, (unsigned long long)o->s2xx, (double)o->s2xx_in / secs,
           (unsigned long long)(o->s429 + o->s503), (unsigned long long)o->s429,
           (unsigned long long)o->s503, (unsigned long long)o->s504, (unsigned long long)o->sother,
           lat_pct_ms(&o->ok, 0.5), lat_pct_ms(&o->ok, 0.99), lat_pct_ms(&o->ok, 1.0),
           (unsigned long long)o->late, lat_pct_ms(&o->ref, 0.5), lat_pct_ms(&o->ref, 0.99),
           lat_pct_ms(&o->ref, 1.0), lat_pct_ms(&o->lag, 0.99), (unsigned long long)o->errors);
}

static int usage(void)
{
    fprintf(stderr, "usage: overload -p PORT [-c CONNS] [-d SECONDS] [-r RATE] [-T TENANT] "
                    "[-t TIMEOUT_MS] PATH\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct ov o = {.nconns = 64, .seconds = 10};
    int opt;
    while ((opt = getopt(argc, argv, "p:c:d:r:T:t:")) != -1) {
        switch (opt) {
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'c':
            o.nconns = atoi(optarg);
            break;
        case 'd':
            o.seconds = atof(optarg);
            break;
        case 'r':
            o.rate = atof(optarg);
            break;
        case 'T':
            o.tenant = optarg;
            break;
        case 't':
            o.timeout_ms = atoi(optarg);
            break;
        default:
            return usage();
        }
    }
    if (optind != argc - 1 || o.port <= 0 || o.nconns <= 0 || o.seconds <= 0)
        return usage();
    o.path = argv[optind];
    char hdr[256] = "";
    size_t hl = 0;
    if (o.tenant != NULL)
        hl += (size_t)snprintf(hdr + hl, sizeof(hdr) - hl, "X-Tenant-Id: %s\r\n", o.tenant);
    if (o.timeout_ms > 0)
        hl += (size_t)snprintf(hdr + hl, sizeof(hdr) - hl, "X-Timeout-Ms: %d\r\n", o.timeout_ms);
    int n = snprintf(o.req, sizeof(o.req),
                     "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n%s\r\n", o.path, hdr);
    if (n < 0 || (size_t)n >= sizeof(o.req))
        return usage();
    o.req_len = (size_t)n;
    o.ep = epoll_create1(EPOLL_CLOEXEC);
    o.conns = calloc((size_t)o.nconns, sizeof(*o.conns));
    o.idle = calloc((size_t)o.nconns, sizeof(*o.idle));
    if (o.ep < 0 || o.conns == NULL || o.idle == NULL) {
        perror("overload");
        return 1;
    }
    for (int i = 0; i < o.nconns; i++) {
        int rc = conn_open(&o, &o.conns[i]);
        if (rc != 0) {
            fprintf(stderr, "overload: connect: %s\n", strerror(-rc));
            return 1;
        }
    }
    int rc = run(&o);
    report(&o);
    for (int i = 0; i < o.nconns; i++)
        if (o.conns[i].fd >= 0)
            close(o.conns[i].fd);
    free(o.conns);
    free(o.idle);
    free(o.ok.v);
    free(o.ref.v);
    free(o.lag.v);
    close(o.ep);
    return rc == 0 ? 0 : 1;
}
