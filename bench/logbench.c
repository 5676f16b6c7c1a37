/* logbench.c - throughput of the JSON-lines logger: N access-log-sized lines (a context current,
 * nine typed fields) written to a file in /tmp by 1, then 2 producer threads.
 *
 * Usage: logbench [lines] [buffer_bytes] [dir]   (defaults: 2000000 lines, 4 MiB, /tmp)
 * Prints one line per run, e.g.
 *   logbench producers=2 lines=2000000 seconds=1.234 lines_per_s=1620745 waits=12 bytes=...
 * The clock stops when log_flush() returns, so every line is in the file when it is read.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/log.h"

struct producer {
    pthread_t tid;
    long lines;
    struct ctx *ctx;
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    struct ctx *prev = ctx_enter(p->ctx);
    for (long i = 0; i < p->lines; i++) {
        LOG_I("request", LOG_STR("method", "POST"), LOG_STR("path", "/v1/jobs/noop"),
              LOG_INT("status", 200), LOG_UINT("bytes_in", 128), LOG_UINT("bytes_out", 11),
              LOG_DUR("queue_ms", 15300 + i % 1000), LOG_DUR("run_ms", 2100),
              LOG_DUR("total_ms", 48000 + i % 5000), LOG_STR("peer", "127.0.0.1:53124"));
    }
    ctx_leave(prev);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct ctx *make_ctx(void)
{
    struct ctx *c = ctx_new_root();
    if (c == NULL)
        return NULL;
    char id[CTX_REQUEST_ID_MAX + 1];
    size_t n = ctx_request_id_generate(id, sizeof(id));
    struct ctx_trace tr;
    ctx_trace_new(&tr);
    ctx_set_trace(c, &tr);
    if (ctx_set_request_id(c, id, n) != 0 || ctx_set_tenant(c, "bench", 5) != 0) {
        ctx_unref(c);
        return NULL;
    }
    return c;
}

static int run(int producers, long lines, size_t buffer, const char *dir)
{
    char path[4096];
    struct producer pr[2];
    snprintf(path, sizeof(path), "%s/spindle-logbench-XXXXXX", dir);
    int fd = mkstemp(path), rc = -1;
    if (fd < 0)
        return -errno;
    close(fd);
    struct log_config cfg = {.path = path, .level = LOG_LEVEL_INFO, .buffer_bytes = buffer};
    if (log_start(&cfg) != 0)
        goto out_unlink;
    double t0 = now_s();
    int started = 0;
    for (; started < producers; started++) {
        pr[started].lines = lines / producers + (started < lines % producers);
        pr[started].ctx = make_ctx();
        if (pr[started].ctx == NULL ||
            pthread_create(&pr[started].tid, NULL, producer_main, &pr[started]) != 0) {
            ctx_unref(pr[started].ctx);
            break;
        }
    }
    for (int i = 0; i < started; i++) {
        pthread_join(pr[i].tid, NULL);
        ctx_unref(pr[i].ctx);
    }
    log_flush();
    double secs = now_s() - t0;
    struct log_stats st;
    log_stats_get(&st);
    log_stop();
    struct stat sb;
    if (started == producers && stat(path, &sb) == 0 && (uint64_t)sb.st_size == st.bytes &&
        st.written == (uint64_t)lines) {
        printf("logbench producers=%d lines=%ld seconds=%.3f lines_per_s=%.0f waits=%llu "
               "bytes=%llu bytes_per_line=%.0f\n",
               producers, lines, secs, (double)lines / secs, (unsigned long long)st.waits,
               (unsigned long long)st.bytes, (double)st.bytes / (double)lines);
        rc = 0;
    } else {
        fprintf(stderr, "logbench: run with %d producers lost lines (written %llu of %ld)\n",
                producers, (unsigned long long)st.written, lines);
    }
out_unlink:
    unlink(path);
    return rc;
}

int main(int argc, char **argv)
{
    long lines = argc > 1 ? strtol(argv[1], NULL, 10) : 2000000;
    size_t buffer = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 4u << 20;
    const char *dir = argc > 3 ? argv[3] : "/tmp";
    if (lines <= 0) {
        fprintf(stderr, "usage: logbench [lines] [buffer_bytes] [dir]\n");
        return 2;
    }
    log_thread_name_set("bench-main");
    for (int producers = 1; producers <= 2; producers++) {
        if (run(producers, lines, buffer, dir) != 0)
            return 1;
    }
    return 0;
}
