/* idle_conns.c - what an idle keep-alive connection costs a running spindle, in resident memory.
 *
 * Usage: idle_conns PORT PID [COUNT]   (COUNT defaults to 10000)
 *
 * Opens COUNT connections to 127.0.0.1:PORT; each sends one `GET /healthz` and reads its answer,
 * then stays open and idle. The server's VmRSS (from /proc/PID/status) is read before the first
 * connection and again once every answer has arrived (the server has had the chance to release
 * per-request buffers); the difference divided by COUNT is the cost of one idle connection, which
 * is printed with the raw figures as `key=value` lines for bench/run.sh.
 *
 * Design: connections are made in batches of IDLE_BATCH so the listen backlog never overflows
 * (a dropped SYN would add a one-second retransmit); within a batch, non-blocking connects,
 * sends and reads are driven by one poll() loop with a deadline. One warm-up request on its own
 * connection runs before the first RSS reading so that lazily built server state (date cache,
 * first allocations) is not charged to the idle connections. Kernel socket buffers are not part
 * of RSS; this measures the server's own memory only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IDLE_BATCH     250
#define IDLE_BATCH_MS  10000
#define IDLE_SETTLE_MS 500

static const char idle_request[] = "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n";

enum idle_state { IDLE_CONNECTING, IDLE_READING, IDLE_DONE, IDLE_FAILED };

struct idle_conn {
    int fd;
    enum idle_state state;
    size_t got;
    char buf[512];
};

static long long idle_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* VmRSS of `pid` in KiB, or -1. */
static long idle_rss_kib(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "re");
    long kib = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    }
    fclose(f);
    return kib;
}

static int idle_connect_start(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* True once the buffer holds a complete answer to GET /healthz (head plus Content-Length). */
static bool idle_answer_complete(const struct idle_conn *c)
{
    const char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
    if (end == NULL)
        return false;
    const char *cl = memmem(c->buf, (size_t)(end - c->buf), "Content-Length:", 15);
    size_t body = cl != NULL ? strtoul(cl + 15, NULL, 10) : 0;
    return c->got >= (size_t)(end - c->buf) + 4 + body;
}

/* Advance one connection after poll() reported `revents`. */
static void idle_step(struct idle_conn *c, short revents)
{
    if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
        c->state = IDLE_FAILED;
        return;
    }
    if (c->state == IDLE_CONNECTING && (revents & POLLOUT)) {
        /* The request is far smaller than any socket buffer: one send does it. */
        ssize_t w = send(c->fd, idle_request, sizeof(idle_request) - 1, MSG_NOSIGNAL);
        c->state = w == (ssize_t)sizeof(idle_request) - 1 ? IDLE_READING : IDLE_FAILED;
        return;
    }
    if (c->state == IDLE_READING && (revents & POLLIN)) {
        ssize_t r = recv(c->fd, c->buf + c->got, sizeof(c->buf) - c->got, 0);
        if (r <= 0) {
            c->state = (r < 0 && errno == EAGAIN) ? IDLE_READING : IDLE_FAILED;
            return;
        }
        c->got += (size_t)r;
        if (idle_answer_complete(c))
            c->state = strncmp(c->buf, "HTTP/1.1 200 ", 13) == 0 ? IDLE_DONE : IDLE_FAILED;
        else if (c->got == sizeof(c->buf))
            c->state = IDLE_FAILED;
    }
}

/* Open, request and read `n` connections (c[0..n)). Returns how many ended IDLE_DONE. */
static int idle_batch(struct idle_conn *c, int n, int port)
{
    struct pollfd pfd[IDLE_BATCH];
    for (int i = 0; i < n; i++) {
        c[i].fd = idle_connect_start(port);
        c[i].state = c[i].fd >= 0 ? IDLE_CONNECTING : IDLE_FAILED;
        c[i].got = 0;
    }
    long long deadline = idle_now_ms() + IDLE_BATCH_MS;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < n; i++) {
            bool live = c[i].state == IDLE_CONNECTING || c[i].state == IDLE_READING;
            pending += live;
            pfd[i] = (struct pollfd){.fd = live ? c[i].fd : -1,
                                     .events = c[i].state == IDLE_CONNECTING ? POLLOUT : POLLIN};
        }
        long long left = deadline - idle_now_ms();
        if (pending == 0 || left <= 0)
            break;
        if (poll(pfd, (nfds_t)n, (int)left) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            if (pfd[i].fd >= 0 && pfd[i].revents != 0)
                idle_step(&c[i], pfd[i].revents);
        }
    }
    int done = 0;
    for (int i = 0; i < n; i++)
        done += c[i].state == IDLE_DONE;
    return done;
}

static void idle_close_all(struct idle_conn *c, int n)
{
    for (int i = 0; i < n; i++) {
        if (c[i].fd >= 0)
            close(c[i].fd);
    }
}

/* Read RSS until two readings IDLE_SETTLE_MS apart agree (or a few tries): the server may still
 * be releasing per-request memory just after the last answer. */
static long idle_rss_settled(long pid)
{
    long prev = idle_rss_kib(pid);
    for (int i = 0; i < 6; i++) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = IDLE_SETTLE_MS * 1000000L};
        nanosleep(&ts, NULL);
        long now = idle_rss_kib(pid);
        if (now == prev)
            break;
        prev = now;
    }
    return prev;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT PID [COUNT]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long pid = atol(argv[2]);
    int count = argc > 3 ? atoi(argv[3]) : 10000;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)count + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)count + 64 ? rl.rlim_max : (rlim_t)count + 64;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct idle_conn *c = calloc((size_t)count + 1, sizeof(*c));
    if (c == NULL || port <= 0 || count <= 0 || idle_rss_kib(pid) < 0) {
        fprintf(stderr, "idle_conns: bad arguments or no such process %ld\n", pid);
        free(c);
        return 2;
    }
    /* Warm-up on its own connection, closed before the first reading. */
    if (idle_batch(&c[count], 1, port) != 1) {
        fprintf(stderr, "idle_conns: the warm-up request failed\n");
        idle_close_all(&c[count], 1);
        free(c);
        return 1;
    }
    idle_close_all(&c[count], 1);
    long before = idle_rss_settled(pid);
    int ok = 0;
    for (int i = 0; i < count; i += IDLE_BATCH) {
        int n = count - i < IDLE_BATCH ? count - i : IDLE_BATCH;
        ok += idle_batch(&c[i], n, port);
    }
    long after = idle_rss_settled(pid);
    double per = ok > 0 ? (double)(after - before) / ok : 0;
    printf("connections=%d\nanswered=%d\nrss_before_kib=%ld\nrss_after_kib=%ld\n"
           "kib_per_conn=%.3f\n",
           count, ok, before, after, per);
    idle_close_all(c, count);
    free(c);
    return ok == count ? 0 : 1;
}
