/* limit.c - the physical limit of each job kind, without any server: how many jobs per second
 * the machine can run when nothing but the job's own code is in the way.
 *
 * Design: for each workload (a kind, its query parameters, a body), one thread per online CPU
 * (or -t N) runs parse -> run -> answer -> free in a tight loop with a root context current, for
 * -d seconds (default 3). That is exactly the per-job work a server worker and its loop do apart
 * from HTTP, queueing and the hand-offs, so the server's job rate divided by this one is the
 * share the server's own machinery leaves. Threads start together on a barrier; each counts its
 * jobs and times itself from the barrier to the end of its last job, and jobs_per_s is the sum of
 * the threads' rates; thread_us_per_job is the wall time a thread spends per job (threads /
 * jobs_per_s), which exceeds the CPU time when other processes share the CPUs; cpu_us_per_job is
 * the threads' own CPU time (CLOCK_THREAD_CPUTIME_ID) per job, which other load hardly moves:
 * the figure to compare two builds by on a busy machine. Output is one line per workload,
 * key=value, for scripts:
 *
 *   limit kind=primes params=n=200000 body=0 threads=2 seconds=3.00 jobs=1234 jobs_per_s=411.3
 *         thread_us_per_job=4862.0 cpu_us_per_job=4850.2
 *
 * Usage: limit [-d SECONDS] [-t THREADS] [KIND...]   (KIND filters by kind name, e.g. primes)
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "context/ctx.h"
#include "server/config.h"
#include "server/jobs/jobs.h"

#define LIMIT_MAX_PARAMS 2

struct limit_workload {
    const char *kind;
    const char *keys[LIMIT_MAX_PARAMS];
    const char *values[LIMIT_MAX_PARAMS];
    size_t body_len;
};

static const struct limit_workload workloads[] = {
    {"noop", {NULL}, {NULL}, 0},
    {"spin", {"ms"}, {"1"}, 0},
    {"primes", {"n"}, {"20000"}, 0},
    {"primes", {"n"}, {"200000"}, 0},
    {"sha256", {"rounds"}, {"1000"}, 1024},
    {"compress", {"codec", "level"}, {"zstd", "3"}, 64 * 1024},
    {"compress", {"codec", "level"}, {"gzip", "6"}, 64 * 1024},
};

struct limit_run {
    const struct srv_kind *kind;
    struct srv_job_param params[LIMIT_MAX_PARAMS];
    size_t nparams;
    const unsigned char *body;
    size_t body_len;
    struct srv_cfg cfg;
    pthread_barrier_t start;
    atomic_bool stop;
};

struct limit_thread {
    pthread_t th;
    struct limit_run *run;
    uint64_t jobs;
    uint64_t elapsed_ns;
    uint64_t cpu_ns; /* the thread's own CPU time over the same span */
    int rc;          /* 0, or the first failure */
};

/* Semi-compressible text (about 3.5x with zstd 3): words and numbers from a fixed-seed
 * xorshift, so every run compresses the same bytes. */
static void limit_fill_text(unsigned char *buf, size_t len)
{
    static const char *const words[] = {"spindle ", "worker ", "tenant ",   "queue ", "request ",
                                        "context ", "cancel ", "deadline ", "loop ",  "job "};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t i = 0;

    while (i < len) {
        char tmp[24];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const char *w = words[x % (sizeof(words) / sizeof(words[0]))];
        if ((x >> 8) % 3 == 0) {
            snprintf(tmp, sizeof(tmp), "%u ", (unsigned)(x >> 20) % 100000u);
            w = tmp;
        }
        for (; *w != '\0' && i < len; w++)
            buf[i++] = (unsigned char)*w;
    }
}

/* One job as the server does it, minus HTTP and the pool. */
static int limit_one(const struct limit_run *r)
{
    struct srv_job_answer ans;
    struct spindle_job job;

    int rc = srv_job_prepare(&job, r->kind, r->params, r->nparams, r->body, r->body_len, &r->cfg);
    if (rc == 0)
        rc = srv_job_run(&job);
    if (rc == 0) {
        srv_job_outcome(&job, &ans);
        if (ans.len == 0 || ans.code != NULL)
            rc = -EIO;
        if (ans.owned)
            free((void *)ans.body);
    }
    srv_job_fini(&job);
    return rc;
}

static uint64_t limit_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *limit_thread_main(void *arg)
{
    struct limit_thread *t = arg;
    struct limit_run *r = t->run;
    struct ctx *c = ctx_new_root();
    struct ctx *prev = ctx_enter(c);

    pthread_barrier_wait(&r->start);
    uint64_t t0 = ctx_now_ns(), cpu0 = limit_thread_cpu_ns();
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        t->rc = c == NULL ? -ENOMEM : limit_one(r);
        if (t->rc < 0)
            break;
        t->jobs++;
    }
    t->elapsed_ns = ctx_now_ns() - t0;
    t->cpu_ns = limit_thread_cpu_ns() - cpu0;
    ctx_leave(prev);
    ctx_unref(c);
    return NULL;
}

static void limit_sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void limit_params_str(const struct limit_workload *w, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < LIMIT_MAX_PARAMS && w->keys[i] != NULL && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s=%s", i ? "&" : "", w->keys[i],
                                w->values[i]);
    if (buf[0] == '\0')
        snprintf(buf, size, "-");
}

/* Run one workload on `threads` threads for `seconds`; print its line. Returns 0 or -errno. */
static int limit_workload_run(const struct limit_workload *w, const unsigned char *body,
                              unsigned threads, double seconds)
{
    struct limit_run r = {.kind = srv_kinds_find(srv_kinds_builtin(), w->kind, strlen(w->kind)),
                          .body = body,
                          .body_len = w->body_len};
    struct limit_thread *t = calloc(threads, sizeof(*t));
    char params[128];
    int rc = 0;

    if (r.kind == NULL || t == NULL) {
        free(t);
        return r.kind == NULL ? -ENOENT : -ENOMEM;
    }
    for (; r.nparams < LIMIT_MAX_PARAMS && w->keys[r.nparams] != NULL; r.nparams++) {
        struct srv_job_param *p = &r.params[r.nparams];
        *p = (struct srv_job_param){w->keys[r.nparams], w->values[r.nparams],
                                    strlen(w->keys[r.nparams]), strlen(w->values[r.nparams])};
    }
    srv_cfg_defaults(&r.cfg);
    atomic_init(&r.stop, false);
    pthread_barrier_init(&r.start, NULL, threads + 1);
    unsigned started = 0;
    for (; started < threads; started++) {
        t[started].run = &r;
        if (pthread_create(&t[started].th, NULL, limit_thread_main, &t[started]) != 0)
            break;
    }
    if (started < threads) {
        fprintf(stderr, "limit: pthread_create failed\n");
        abort(); /* the started threads wait on the barrier forever */
    }
    pthread_barrier_wait(&r.start);
    limit_sleep(seconds);
    atomic_store(&r.stop, true);

    uint64_t jobs = 0, cpu_ns = 0;
    double rate = 0, secs = 0;
    for (unsigned i = 0; i < threads; i++) {
        pthread_join(t[i].th, NULL);
        if (t[i].rc < 0 && rc == 0)
            rc = t[i].rc;
        jobs += t[i].jobs;
        cpu_ns += t[i].cpu_ns;
        secs += (double)t[i].elapsed_ns / 1e9 / threads;
        if (t[i].elapsed_ns > 0)
            rate += (double)t[i].jobs * 1e9 / (double)t[i].elapsed_ns;
    }
    pthread_barrier_destroy(&r.start);
    free(t);
    if (rc < 0)
        return rc;
    limit_params_str(w, params, sizeof(params));
    printf("limit kind=%s params=%s body=%zu threads=%u seconds=%.2f jobs=%llu jobs_per_s=%.1f "
           "thread_us_per_job=%.1f cpu_us_per_job=%.1f\n",
           w->kind, params, w->body_len, threads, secs, (unsigned long long)jobs, rate,
           rate > 0 ? threads * 1e6 / rate : 0.0, jobs > 0 ? (double)cpu_ns / 1e3 / jobs : 0.0);
    fflush(stdout);
    return 0;
}

static bool limit_wanted(const char *kind, int argc, char **argv, int first)
{
    if (first >= argc)
        return true;
    for (int i = first; i < argc; i++)
        if (strcmp(argv[i], kind) == 0)
            return true;
    return false;
}

static int limit_usage(void)
{
    fprintf(stderr, "usage: limit [-d SECONDS] [-t THREADS] [KIND...]\n");
    return 2;
}

int main(int argc, char **argv)
{
    double seconds = 3.0;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    int opt;

    while ((opt = getopt(argc, argv, "d:t:h")) != -1) {
        char *end;
        if (opt == 'd')
            seconds = strtod(optarg, &end);
        else if (opt == 't')
            threads = strtol(optarg, &end, 10);
        else
            return limit_usage();
        if (*end != '\0' || seconds <= 0 || seconds > 3600 || threads < 1 || threads > 1024)
            return limit_usage();
    }
    for (int i = optind; i < argc; i++) {
        if (srv_kinds_find(srv_kinds_builtin(), argv[i], strlen(argv[i])) == NULL) {
            fprintf(stderr, "limit: unknown kind '%s'\n", argv[i]);
            return 2;
        }
    }
    size_t body_max = 64 * 1024;
    unsigned char *body = malloc(body_max);
    if (body == NULL)
        return 1;
    limit_fill_text(body, body_max);
    int status = 0;
    for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
        if (!limit_wanted(workloads[i].kind, argc, argv, optind))
            continue;
        int rc = limit_workload_run(&workloads[i], body, (unsigned)threads, seconds);
        if (rc < 0) {
            fprintf(stderr, "limit: %s failed: %s\n", workloads[i].kind, strerror(-rc));
            status = 1;
        }
    }
    free(body);
    return status;
}
