/* batchload.c - /healthz latency while large POST /v1/batch bodies arrive at a fixed rate.
 *
 * Design: sender threads (-c, default 8) share a fixed schedule of batch requests: request i is
 * due at start + i / rate and is sent by thread i % c on its own keep-alive connection (blocking
 * I/O; a thread that is still waiting for its previous answer sends late, and the lateness is
 * reported, so a slow server shows as "late_ms" instead of a lower rate going unnoticed). Each
 * body is one JSON array of -n sha256 items (rounds=1), each with a body string of 'x's, sized
 * so that the whole body is -s bytes. One prober thread sends GET /healthz every -i ms on its own
 * keep-alive connection and keeps every latency, measured from when the probe was due (a probe
 * that waited for an earlier one stuck behind a busy loop counts that wait: no coordinated
 * omission, as if each probe came from a client of its own);
 * the loop thread of the server is the only one that answers it, so its latency is the loop's.
 * Answers are framed by Content-Length (spindle always sends it).
 *
 * Output, one line of key=value for scripts:
 *   batchload seconds=10.0 rate=50 body_bytes=1048576 sent=500 ok=500 other=0 errors=0
 *             late_max_ms=... health_n=... health_p50_ms=... health_p99_ms=... health_max_ms=...
 *
 * Usage: batchload -p PORT [-r RATE] [-d SECONDS] [-s BODY_BYTES] [-n ITEMS] [-c SENDERS]
 *                  [-i PROBE_MS]
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct bl_opts {
    int port;
    double rate, seconds;
    size_t body_bytes;
    unsigned items, senders, probe_ms;
};

static struct bl_opts opt = {0, 50.0, 10.0, 1048576, 1, 8, 5};
static char *body;
static size_t body_len;
static uint64_t start_ns, end_ns;
static _Atomic uint64_t n_sent, n_ok, n_other, n_errors, late_max_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int bl_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int bl_send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one answer (head + Content-Length body) from fd; returns its status or -1. */
static int bl_read_answer(int fd)
{
    char buf[16384];
    size_t len = 0;
    char *end = NULL;
    while (end == NULL) {
        if (len == sizeof(buf) - 1)
            return -1;
        ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t want = cl != NULL && cl < end ? strtoull(cl + 17, NULL, 10) : 0;
    size_t have = len - (size_t)(end + 4 - buf);
    while (have < want) {
        ssize_t r = recv(fd, buf, sizeof(buf) < want - have ? sizeof(buf) : want - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return status;
}

static void *bl_sender(void *arg)
{
    unsigned self = (unsigned)(uintptr_t)arg;
    int fd = -1;
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "POST /v1/batch?mode=all HTTP/1.1\r\nHost: b\r\nContent-Type: "
                      "application/json\r\nContent-Length: %zu\r\n\r\n",
                      body_len);
    for (uint64_t i = self;; i += opt.senders) {
        uint64_t due = start_ns + (uint64_t)((double)i * 1e9 / opt.rate);
        if (due >= end_ns)
            break;
        sleep_until(due);
        uint64_t late = now_ns() - due;
        uint64_t prev = atomic_load(&late_max_ns);
        while (late > prev && !atomic_compare_exchange_weak(&late_max_ns, &prev, late))
            ;
        if (fd < 0 && (fd = bl_connect()) < 0) {
            atomic_fetch_add(&n_errors, 1);
            continue;
        }
        atomic_fetch_add(&n_sent, 1);
        int st = -1;
        if (bl_send_all(fd, head, (size_t)hn) == 0 && bl_send_all(fd, body, body_len) == 0)
            st = bl_read_answer(fd);
        if (st < 0) {
            atomic_fetch_add(&n_errors, 1);
            close(fd);
            fd = -1;
        } else {
            atomic_fetch_add(st >= 200 && st < 300 ? &n_ok : &n_other, 1);
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static uint32_t *lat; /* microseconds, the prober's */
static size_t nlat;

static void *bl_prober(void *arg)
{
    (void)arg;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n";
    size_t cap = (size_t)(opt.seconds * 1000.0 / opt.probe_ms) + 16;
    lat = calloc(cap, sizeof(*lat));
    int fd = bl_connect();
    for (uint64_t i = 0; lat != NULL && fd >= 0 && nlat < cap; i++) {
        uint64_t due = start_ns + i * opt.probe_ms * 1000000u;
        if (due >= end_ns)
            break;
        sleep_until(due);
        if (bl_send_all(fd, req, sizeof(req) - 1) < 0 || bl_read_answer(fd) != 200) {
            atomic_fetch_add(&n_errors, 1);
            break;
        }
        lat[nlat++] = (uint32_t)((now_ns() - due) / 1000u);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(double p)
{
    if (nlat == 0)
        return 0.0;
    size_t k = (size_t)(p * (double)(nlat - 1) + 0.5);
    return lat[k] / 1000.0;
}

/* The batch body: `items` sha256 items whose 'x' strings fill it to body_bytes. */
static int bl_make_body(void)
{
    static const char pre[] = "{\"kind\":\"sha256\",\"params\":{\"rounds\":1},\"body\":\"";
    size_t per_item_overhead = sizeof(pre) - 1 + 3; /* "}, */
    size_t over = 2 + opt.items * per_item_overhead;
    if (opt.items == 0 || opt.body_bytes < over + opt.items)
        return -1;
    size_t xs = (opt.body_bytes - over) / opt.items;
    body = malloc(opt.body_bytes + 1);
    if (body == NULL)
        return -1;
    char *p = body;
    *p++ = '[';
    for (unsigned i = 0; i < opt.items; i++) {
        memcpy(p, pre, sizeof(pre) - 1);
        p += sizeof(pre) - 1;
        memset(p, 'x', xs);
        p += xs;
        memcpy(p, i + 1 < opt.items ? "\"}," : "\"}", i + 1 < opt.items ? 3 : 2);
        p += i + 1 < opt.items ? 3 : 2;
    }
    *p++ = ']';
    body_len = (size_t)(p - body);
    return 0;
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "p:r:d:s:n:c:i:")) != -1) {
        switch (c) {
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'd':
            opt.seconds = atof(optarg);
            break;
        case 's':
            opt.body_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'n':
            opt.items = (unsigned)atoi(optarg);
            break;
        case 'c':
            opt.senders = (unsigned)atoi(optarg);
            break;
        case 'i':
            opt.probe_ms = (unsigned)atoi(optarg);
            break;
        default:
            goto usage;
        }
    }
    if (opt.port <= 0 || opt.rate <= 0 || opt.seconds <= 0 || opt.senders == 0 || opt.probe_ms == 0)
        goto usage;
    if (bl_make_body() < 0) {
        fprintf(stderr, "batchload: bad -s/-n\n");
        return 2;
    }
    start_ns = now_ns() + 50000000u;
    end_ns = start_ns + (uint64_t)(opt.seconds * 1e9);
    pthread_t th[65];
    unsigned n = opt.senders > 64 ? 64 : opt.senders;
    opt.senders = n;
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, bl_sender, (void *)(uintptr_t)i) != 0)
            return 1;
    if (pthread_create(&th[n], NULL, bl_prober, NULL) != 0)
        return 1;
    for (unsigned i = 0; i <= n; i++)
        pthread_join(th[i], NULL);
    qsort(lat, nlat, sizeof(*lat), cmp_u32);
    printf("batchload seconds=%.1f rate=%.0f body_bytes=%zu sent=%llu ok=%llu other=%llu "
           "errors=%llu late_max_ms=%.1f health_n=%zu health_p50_ms=%.3f health_p99_ms=%.3f "
           "health_max_ms=%.3f\n",
           opt.seconds, opt.rate, body_len, (unsigned long long)n_sent, (unsigned long long)n_ok,
           (unsigned long long)n_other, (unsigned long long)n_errors, (double)late_max_ns / 1e6,
           nlat, pct_ms(0.50), pct_ms(0.99), nlat ? lat[nlat - 1] / 1000.0 : 0.0);
    free(lat);
    free(body);
    return 0;
usage:
    fprintf(stderr, "usage: batchload -p PORT [-r RATE] [-d SECONDS] [-s BODY_BYTES] [-n ITEMS] "
                    "[-c SENDERS] [-i PROBE_MS]\n");
    return 2;
}
