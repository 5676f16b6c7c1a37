/* test_log.c - unit tests for logging/log.c: the writer thread, levels, context fields, ordering
 * across threads, reopen during writes, flush, the block and drop policies, synchronous writes
 * after stop, and the fatal path in a child process. Every line is read back from the file and
 * parsed with jansson.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/internal.h"
#include "logging/log.h"
#include "tests/suite.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static char path[64];

static void make_path(void)
{
    strcpy(path, "/tmp/spindle-logtest-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
}

static int start(enum log_policy policy, size_t buffer)
{
    struct log_config cfg = {
        .path = path, .level = LOG_LEVEL_INFO, .buffer_bytes = buffer, .policy = policy};
    return log_start(&cfg);
}

/* Lines of a file (or of several files concatenated), each parsed. */
struct parsed {
    json_t **v;
    size_t n;
};

static void append_file(struct parsed *p, const char *file)
{
    FILE *f = fopen(file, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char *line = NULL;
    size_t cap = 0, alloc = p->n;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0) {
        CU_ASSERT_EQUAL_FATAL(line[len - 1], '\n'); /* every line complete */
        CU_ASSERT_FATAL(len <= LOG_LINE_MAX);
        json_error_t err;
        json_t *j = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &err);
        if (j == NULL)
            fprintf(stderr, "bad line: %s: %.200s\n", err.text, line);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        if (p->n == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            p->v = realloc(p->v, alloc * sizeof(*p->v));
            CU_ASSERT_PTR_NOT_NULL_FATAL(p->v);
        }
        p->v[p->n++] = j;
    }
    free(line);
    fclose(f);
}

static void parsed_free(struct parsed *p)
{
    for (size_t i = 0; i < p->n; i++)
        json_decref(p->v[i]);
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

static const char *get_str(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static long long get_int(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    CU_ASSERT_TRUE(json_is_integer(v));
    return json_integer_value(v);
}

/* Read a whole descriptor until EOF (a thread: the log may block on a full pipe meanwhile). */
struct drain {
    int fd;
    char *buf;
    size_t len;
};

static void *drain_main(void *arg)
{
    struct drain *d = arg;
    size_t cap = 0;
    for (;;) {
        if (cap - d->len < 65536) {
            cap = cap ? cap * 2 : 1 << 20;
            d->buf = realloc(d->buf, cap);
            if (d->buf == NULL)
                abort();
        }
        ssize_t n = read(d->fd, d->buf + d->len, cap - d->len);
        if (n > 0)
            d->len += (size_t)n;
        else if (n == 0 || errno != EINTR)
            break;
    }
    return NULL;
}

/* Write d's bytes to `path` so that append_file() can parse them. */
static void drain_to_file(const struct drain *d)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(d->buf, 1, d->len, f), d->len);
    fclose(f);
}

/* ---- basic lines -------------------------------------------------------------------------- */

static void test_log_write_line_fields(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    log_thread_name_set("unit-main");
    LOG_I("hello", LOG_STR("method", "GET"), LOG_INT("status", 200), LOG_BOOL("ok", true),
          LOG_DUR("total_ms", 2500000), LOG_DBL("ratio", 0.5), LOG_UINT("bytes", 123));
    LOG_W("no fields");
    log_stop();

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 2);
    json_t *j = p.v[0];
    const char *ts = get_str(j, "ts");
    CU_ASSERT_EQUAL(strlen(ts), 27);
    CU_ASSERT(ts[4] == '-' && ts[10] == 'T' && ts[19] == '.' && ts[26] == 'Z');
    CU_ASSERT_STRING_EQUAL(get_str(j, "level"), "info");
    CU_ASSERT_STRING_EQUAL(get_str(j, "msg"), "hello");
    CU_ASSERT_STRING_EQUAL(get_str(j, "thread"), "unit-main");
    CU_ASSERT_STRING_EQUAL(get_str(j, "method"), "GET");
    CU_ASSERT_EQUAL(get_int(j, "status"), 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "ok")));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(j, "total_ms")), 2.5, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(j, "ratio")), 0.5, 0);
    CU_ASSERT_EQUAL(get_int(j, "bytes"), 123);
    CU_ASSERT_PTR_NULL(json_object_get(j, "request_id"));
    CU_ASSERT_STRING_EQUAL(get_str(p.v[1], "level"), "warn");
    CU_ASSERT_EQUAL(json_object_size(p.v[1]), 4);

    struct stat sb;
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT_EQUAL(stat(path, &sb), 0);
    CU_ASSERT_EQUAL(s.lines, 2);
    CU_ASSERT_EQUAL(s.written, 2);
    CU_ASSERT_EQUAL(s.bytes, (uint64_t)sb.st_size);
    CU_ASSERT_EQUAL(s.dropped + s.errors + s.waits, 0);
    parsed_free(&p);
    unlink(path);
}

static int evaluations;

static int side_effect(void)
{
    return ++evaluations;
}

static void test_log_enabled_skips_arguments(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    log_set_level(LOG_LEVEL_WARN);
    CU_ASSERT_EQUAL(log_get_level(), LOG_LEVEL_WARN);
    evaluations = 0;
    LOG_T("t", LOG_INT("n", side_effect()));
    LOG_D("d", LOG_INT("n", side_effect()));
    LOG_I("i", LOG_INT("n", side_effect()));
    CU_ASSERT_EQUAL(evaluations, 0);
    CU_ASSERT_FALSE(log_enabled(LOG_LEVEL_INFO));
    CU_ASSERT_TRUE(log_enabled(LOG_LEVEL_WARN));
    LOG_W("w", LOG_INT("n", side_effect()));
    LOG_E("e", LOG_INT("n", side_effect()));
    CU_ASSERT_EQUAL(evaluations, 2);
    log_set_level(LOG_LEVEL_TRACE);
    LOG_T("t2", LOG_INT("n", side_effect()));
    CU_ASSERT_EQUAL(evaluations, 3);
    /* Direct calls are filtered too. */
    log_set_level(LOG_LEVEL_ERROR);
    log_write(LOG_LEVEL_INFO, "direct", NULL, 0);
    log_stop();

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 3);
    CU_ASSERT_STRING_EQUAL(get_str(p.v[0], "msg"), "w");
    CU_ASSERT_EQUAL(get_int(p.v[0], "n"), 1);
    CU_ASSERT_STRING_EQUAL(get_str(p.v[1], "msg"), "e");
    CU_ASSERT_STRING_EQUAL(get_str(p.v[2], "level"), "trace");
    CU_ASSERT_EQUAL(get_int(p.v[2], "n"), 3);
    parsed_free(&p);
    unlink(path);
    log_set_level(LOG_LEVEL_INFO);
}

static void test_log_write_context_fields(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct ctx_trace tr;
    ctx_trace_new(&tr);
    CU_ASSERT_EQUAL(ctx_set_request_id(c, "r-42", 4), 0);
    CU_ASSERT_EQUAL(ctx_set_tenant(c, "acme", 4), 0);
    ctx_set_trace(c, &tr);

    LOG_I("before");
    struct ctx *prev = ctx_enter(c);
    LOG_I("inside", LOG_INT("x", 1));
    ctx_leave(prev);
    LOG_I("after");
    log_stop();

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 3);
    CU_ASSERT_PTR_NULL(json_object_get(p.v[0], "request_id"));
    CU_ASSERT_PTR_NULL(json_object_get(p.v[2], "tenant"));
    json_t *j = p.v[1];
    CU_ASSERT_STRING_EQUAL(get_str(j, "request_id"), "r-42");
    CU_ASSERT_STRING_EQUAL(get_str(j, "tenant"), "acme");
    CU_ASSERT_STRING_EQUAL(get_str(j, "trace_id"), ctx_trace_id_hex(c));
    CU_ASSERT_STRING_EQUAL(get_str(j, "span_id"), ctx_span_id_hex(c));
    const char *keys[] = {"ts",     "level",    "msg",     "thread", "request_id",
                          "tenant", "trace_id", "span_id", "x"};
    size_t i = 0;
    for (void *it = json_object_iter(j); it; it = json_object_iter_next(j, it), i++) {
        CU_ASSERT_FATAL(i < 9);
        CU_ASSERT_STRING_EQUAL(json_object_iter_key(it), keys[i]);
    }
    CU_ASSERT_EQUAL(i, 9);
    parsed_free(&p);
    ctx_unref(c);
    unlink(path);
}

static void *named_by_system(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sysname");
    LOG_I("from a thread");
    return NULL;
}

static void test_log_thread_name_set_and_system_name(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, named_by_system, NULL), 0);
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    log_thread_name_set("a-very-long-thread-name");
    char sys[16];
    CU_ASSERT_EQUAL(pthread_getname_np(pthread_self(), sys, sizeof(sys)), 0);
    CU_ASSERT_STRING_EQUAL(sys, "a-very-long-thr");
    LOG_I("main");
    log_thread_name_set("unit-main");
    log_stop();

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 2);
    CU_ASSERT_STRING_EQUAL(get_str(p.v[0], "thread"), "sysname");
    CU_ASSERT_STRING_EQUAL(get_str(p.v[1], "thread"), "a-very-long-thread-name");
    parsed_free(&p);
    unlink(path);
}

static void test_log_start_errors(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    CU_ASSERT_EQUAL(start(LOG_POLICY_BLOCK, 0), -EALREADY);
    log_stop();
    log_stop(); /* safe when not started */
    struct log_config bad = {.path = "/nonexistent-dir/x/log", .level = LOG_LEVEL_INFO};
    CU_ASSERT_EQUAL(log_start(&bad), -ENOENT);
    CU_ASSERT_EQUAL(log_flush(), -ESHUTDOWN);
    CU_ASSERT_EQUAL(log_reopen(), -ESHUTDOWN);
    unlink(path);
}

/* After log_stop() lines go straight to the configured file, synchronously. */
static void test_log_write_after_stop_is_synchronous(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    LOG_I("queued");
    log_stop();
    LOG_I("after stop", LOG_INT("n", 1));
    LOG_E("after stop", LOG_INT("n", 2));
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT_EQUAL(s.lines, 3);
    CU_ASSERT_EQUAL(s.written, 3);

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 3);
    CU_ASSERT_STRING_EQUAL(get_str(p.v[0], "msg"), "queued");
    CU_ASSERT_EQUAL(get_int(p.v[1], "n"), 1);
    CU_ASSERT_EQUAL(get_int(p.v[2], "n"), 2);
    parsed_free(&p);
    unlink(path);
}

/* ---- flush and fatal ---------------------------------------------------------------------- */

static void test_log_flush_waits_for_writer(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 256 << 10), 0);
    for (int i = 0; i < 20000; i++)
        LOG_I("flush me", LOG_INT("seq", i), LOG_STR("pad", "0123456789abcdef0123456789"));
    CU_ASSERT_EQUAL(log_flush(), 0);
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT_EQUAL(s.written, 20000);

    struct parsed p = {0};
    append_file(&p, path); /* read while the writer still runs */
    CU_ASSERT_EQUAL(p.n, 20000);
    for (size_t i = 0; i < p.n; i++)
        CU_ASSERT_EQUAL_FATAL(get_int(p.v[i], "seq"), (long long)i);
    parsed_free(&p);
    log_stop();
    unlink(path);
}

static void test_log_write_fatal_flushes_before_return(void)
{
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 0), 0);
    for (int i = 0; i < 5000; i++)
        LOG_I("line", LOG_INT("seq", i));
    LOG_F("fatal", LOG_INT("code", 9));
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT_EQUAL(s.written, 5001);

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 5001);
    CU_ASSERT_STRING_EQUAL(get_str(p.v[5000], "level"), "fatal");
    CU_ASSERT_EQUAL(get_int(p.v[5000], "code"), 9);
    parsed_free(&p);
    log_stop();
    unlink(path);
}

/* The child logs, LOG_F, then abort()s at once: every line must be in the file. */
static void test_log_write_fatal_survives_abort(void)
{
    make_path();
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        if (start(LOG_POLICY_BLOCK, 0) != 0)
            _exit(90);
        for (int i = 0; i < 30000; i++)
            LOG_I("before the end", LOG_INT("seq", i), LOG_STR("pad", "abcdefghijklmnopqrstuvw"));
        LOG_F("giving up", LOG_INT("code", 7));
        abort();
    }
    int status;
    CU_ASSERT_EQUAL_FATAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, 30001);
    for (size_t i = 0; i < 30000; i++)
        CU_ASSERT_EQUAL_FATAL(get_int(p.v[i], "seq"), (long long)i);
    CU_ASSERT_STRING_EQUAL(get_str(p.v[30000], "level"), "fatal");
    CU_ASSERT_STRING_EQUAL(get_str(p.v[30000], "msg"), "giving up");
    parsed_free(&p);
    unlink(path);
}

/* ---- many threads ------------------------------------------------------------------------- */

#define PRODUCERS 4

struct producer {
    pthread_t tid;
    int id;
    int lines;
    sem_t *progress; /* posted every `every` lines when not NULL */
    int every;
};

static void *producer_main(void *arg)
{
    struct producer *p = arg;
    char name[16];
    snprintf(name, sizeof(name), "prod-%d", p->id);
    log_thread_name_set(name);
    for (int i = 0; i < p->lines; i++) {
        LOG_I("producer line", LOG_INT("t", p->id), LOG_INT("seq", i),
              LOG_STR("path", "/v1/jobs/noop"), LOG_STR("tricky", "q\"\\\n\xff"));
        if (p->progress != NULL && (i + 1) % p->every == 0)
            sem_post(p->progress);
    }
    return NULL;
}

/* Every line once, intact, in each thread's order. */
static void check_producers(struct parsed *p, int lines)
{
    long long next[PRODUCERS] = {0};
    for (size_t i = 0; i < p->n; i++) {
        json_t *j = p->v[i];
        long long t = get_int(j, "t");
        CU_ASSERT_FATAL(t >= 0 && t < PRODUCERS);
        CU_ASSERT_EQUAL_FATAL(get_int(j, "seq"), next[t]);
        next[t]++;
        CU_ASSERT_STRING_EQUAL(get_str(j, "tricky"), "q\"\\\n\xef\xbf\xbd");
        char name[16];
        snprintf(name, sizeof(name), "prod-%lld", t);
        CU_ASSERT_STRING_EQUAL(get_str(j, "thread"), name);
    }
    for (int t = 0; t < PRODUCERS; t++)
        CU_ASSERT_EQUAL(next[t], lines);
    CU_ASSERT_EQUAL(p->n, (size_t)PRODUCERS * lines);
}

static void test_log_write_threads_keep_order(void)
{
    const int lines = 100000;
    struct producer pr[PRODUCERS];
    make_path();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 256 << 10), 0);
    for (int t = 0; t < PRODUCERS; t++) {
        pr[t] = (struct producer){.id = t, .lines = lines};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&pr[t].tid, NULL, producer_main, &pr[t]), 0);
    }
    for (int t = 0; t < PRODUCERS; t++)
        CU_ASSERT_EQUAL(pthread_join(pr[t].tid, NULL), 0);
    log_stop();
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT_EQUAL(s.lines, (uint64_t)PRODUCERS * lines);
    CU_ASSERT_EQUAL(s.written, s.lines);

    struct parsed p = {0};
    append_file(&p, path);
    check_producers(&p, lines);
    parsed_free(&p);
    unlink(path);
}

/* Rotate five times (rename, then reopen) while four threads write. */
static void test_log_reopen_during_writes_loses_nothing(void)
{
    const int lines = 50000, rotations = 5;
    struct producer pr[PRODUCERS];
    sem_t progress;
    char old[rotations][80];

    make_path();
    CU_ASSERT_EQUAL_FATAL(sem_init(&progress, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 128 << 10), 0);
    for (int t = 0; t < PRODUCERS; t++) {
        pr[t] = (struct producer){.id = t, .lines = lines, .progress = &progress, .every = 2500};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&pr[t].tid, NULL, producer_main, &pr[t]), 0);
    }
    for (int r = 0; r < rotations; r++) {
        sem_wait(&progress); /* some lines went in since the last rotation */
        snprintf(old[r], sizeof(old[r]), "%s.%d", path, r);
        CU_ASSERT_EQUAL(rename(path, old[r]), 0);
        CU_ASSERT_EQUAL(log_reopen(), 0);
    }
    for (int t = 0; t < PRODUCERS; t++)
        CU_ASSERT_EQUAL(pthread_join(pr[t].tid, NULL), 0);
    log_stop();
    sem_destroy(&progress);

    /* Oldest first: the files together hold every line once, in each thread's order. */
    struct parsed p = {0};
    size_t nonempty = 0;
    for (int r = 0; r < rotations; r++) {
        size_t before = p.n;
        append_file(&p, old[r]);
        nonempty += p.n > before;
        unlink(old[r]);
    }
    append_file(&p, path);
    CU_ASSERT(nonempty >= 1);
    check_producers(&p, lines);
    parsed_free(&p);
    unlink(path);
}

/* ---- full buffer: block and drop ---------------------------------------------------------- */

/* The log goes into a FIFO nobody reads yet: the writer blocks once the pipe is full, so the ring
 * fills deterministically. */
static int open_fifo_reader(void)
{
    strcpy(path, "/tmp/spindle-logfifo-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    unlink(path);
    CU_ASSERT_FATAL(mkfifo(path, 0600) == 0);
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    return fd;
}

static void start_drain(struct drain *d, pthread_t *t, int fd)
{
    /* Blocking reads from now on; EOF comes when the writer closes the FIFO at log_stop(). */
    CU_ASSERT_EQUAL(fcntl(fd, F_SETFL, 0), 0);
    *d = (struct drain){.fd = fd};
    CU_ASSERT_EQUAL_FATAL(pthread_create(t, NULL, drain_main, d), 0);
}

static const char pad200[] =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

static void test_log_write_drop_policy_counts_and_reports(void)
{
    const int lines = 3000; /* ~0.8 MB: far more than the pipe (64 KiB) and the ring (64 KiB) */
    int rfd = open_fifo_reader();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_DROP, 64 << 10), 0);
    for (int i = 0; i < lines; i++)
        LOG_I("maybe dropped", LOG_INT("seq", i), LOG_STR("pad", pad200));
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT(s.dropped > 0);
    CU_ASSERT_EQUAL(s.lines + s.dropped, (uint64_t)lines);
    CU_ASSERT_EQUAL(s.waits, 0);

    struct drain d;
    pthread_t t;
    start_drain(&d, &t, rfd);
    log_stop();
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    close(rfd);
    unlink(path);
    drain_to_file(&d);
    free(d.buf);

    struct parsed p = {0};
    append_file(&p, path);
    long long last = -1, kept = 0, reported = 0;
    for (size_t i = 0; i < p.n; i++) {
        if (strcmp(get_str(p.v[i], "msg"), "log lines dropped") == 0) {
            CU_ASSERT_STRING_EQUAL(get_str(p.v[i], "level"), "warn");
            CU_ASSERT(get_int(p.v[i], "dropped") > 0);
            reported += get_int(p.v[i], "dropped");
            continue;
        }
        long long seq = get_int(p.v[i], "seq");
        CU_ASSERT_FATAL(seq > last); /* in order, none twice */
        last = seq;
        kept++;
    }
    CU_ASSERT_EQUAL(kept, (long long)s.lines);
    CU_ASSERT_EQUAL(reported, (long long)s.dropped); /* every drop reported */
    parsed_free(&p);
    unlink(path);
}

static sem_t wait_sem;

static void on_wait(void)
{
    sem_post(&wait_sem);
}

static void *block_producer(void *arg)
{
    int lines = *(int *)arg;
    for (int i = 0; i < lines; i++)
        LOG_I("never dropped", LOG_INT("seq", i), LOG_STR("pad", pad200));
    return NULL;
}

static void test_log_write_block_policy_counts_waits(void)
{
    int lines = 3000;
    int rfd = open_fifo_reader();
    CU_ASSERT_EQUAL_FATAL(sem_init(&wait_sem, 0, 0), 0);
    log_test_wait_hook = on_wait;
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 64 << 10), 0);
    pthread_t prod, t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&prod, NULL, block_producer, &lines), 0);
    sem_wait(&wait_sem); /* the producer is now waiting for space */
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT(s.waits >= 1);
    CU_ASSERT(s.lines < (uint64_t)lines);

    struct drain d;
    start_drain(&d, &t, rfd);
    CU_ASSERT_EQUAL(pthread_join(prod, NULL), 0);
    log_stop();
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    log_test_wait_hook = NULL;
    sem_destroy(&wait_sem);
    close(rfd);
    unlink(path);
    log_stats_get(&s);
    CU_ASSERT_EQUAL(s.dropped, 0);
    CU_ASSERT_EQUAL(s.lines, (uint64_t)lines);
    CU_ASSERT_EQUAL(s.written, (uint64_t)lines);
    drain_to_file(&d);
    free(d.buf);

    struct parsed p = {0};
    append_file(&p, path);
    CU_ASSERT_EQUAL_FATAL(p.n, (size_t)lines);
    for (size_t i = 0; i < p.n; i++)
        CU_ASSERT_EQUAL_FATAL(get_int(p.v[i], "seq"), (long long)i);
    parsed_free(&p);
    unlink(path);
}

/* ---- a broken or stalled sink --------------------------------------------------------------- */

/* Lines in a parsed file: the "seq" ones in order, and the sum of the "log lines lost" reports
 * (all with `why` as their error). Returns how many seq lines there were. */
static long long check_seq_and_lost(struct parsed *p, const char *why, long long *lost)
{
    long long last = -1, kept = 0;
    *lost = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(get_str(p->v[i], "msg"), "log lines lost") == 0) {
            CU_ASSERT_STRING_EQUAL(get_str(p->v[i], "level"), "error");
            CU_ASSERT_PTR_NOT_NULL(strstr(get_str(p->v[i], "error"), why));
            *lost += get_int(p->v[i], "lost");
            continue;
        }
        long long seq = get_int(p->v[i], "seq");
        CU_ASSERT_FATAL(seq > last); /* in order, none twice */
        last = seq;
        kept++;
    }
    return kept;
}

/* Every write fails: nothing hangs, every failure and every line lost is counted. */
static void test_log_write_failing_sink_counts_errors_and_losses(void)
{
    const int lines = 2000; /* ~0.5 MB: far more than the ring */
    struct log_config cfg = {.path = "/dev/full",
                             .level = LOG_LEVEL_INFO,
                             .buffer_bytes = 64 << 10,
                             .policy = LOG_POLICY_BLOCK};
    CU_ASSERT_EQUAL_FATAL(log_start(&cfg), 0);
    for (int i = 0; i < lines; i++)
        LOG_I("lost on a full disk", LOG_INT("seq", i), LOG_STR("pad", pad200));
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT(s.lost > 0);
    CU_ASSERT_EQUAL(s.lines + s.lost, (uint64_t)lines);
    CU_ASSERT_EQUAL(log_flush(), -EIO);
    log_stats_get(&s);
    CU_ASSERT(s.errors > 0);
    log_stop(); /* bounded: gives the ring up */
    log_stats_get(&s);
    CU_ASSERT_EQUAL(s.written, 0);
    CU_ASSERT_EQUAL(s.lost, (uint64_t)lines);
}

/* The reader of the FIFO goes away (EPIPE) and comes back: what the ring held is written, the
 * rest is reported lost with the error. */
static void test_log_write_broken_sink_recovers_and_reports(void)
{
    const int lines = 3000;
    int rfd = open_fifo_reader();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 64 << 10), 0);
    close(rfd); /* nothing written yet: no line dies in the pipe */
    for (int i = 0; i < lines; i++)
        LOG_I("maybe lost", LOG_INT("seq", i), LOG_STR("pad", pad200));
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT(s.errors > 0);
    CU_ASSERT(s.lost > 0);
    CU_ASSERT_EQUAL(s.lines + s.lost, (uint64_t)lines);

    rfd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    CU_ASSERT_FATAL(rfd >= 0);
    struct drain d;
    pthread_t t;
    start_drain(&d, &t, rfd);
    log_stop();
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    close(rfd);
    unlink(path);
    drain_to_file(&d);
    free(d.buf);

    log_stats_get(&s);
    struct parsed p = {0};
    long long lost;
    append_file(&p, path);
    CU_ASSERT_EQUAL(check_seq_and_lost(&p, "Broken pipe", &lost), (long long)s.written);
    CU_ASSERT_EQUAL(lost, (long long)s.lost); /* every loss reported once the sink works */
    CU_ASSERT_EQUAL(s.written + s.lost, (uint64_t)lines);
    parsed_free(&p);
    unlink(path);
}

/* A thread with a wait bound (the event loop) never blocks on a stalled sink: what does not fit
 * in time is lost, counted and reported. */
static void test_log_thread_wait_max_set_loses_instead_of_blocking(void)
{
    const int lines = 3000;
    int rfd = open_fifo_reader();
    CU_ASSERT_EQUAL_FATAL(start(LOG_POLICY_BLOCK, 64 << 10), 0);
    log_thread_wait_max_set(1000000); /* 1 ms */
    for (int i = 0; i < lines; i++)
        LOG_I("maybe lost", LOG_INT("seq", i), LOG_STR("pad", pad200));
    log_thread_wait_max_set(UINT64_MAX);
    struct log_stats s;
    log_stats_get(&s);
    CU_ASSERT(s.lost > 0);
    CU_ASSERT_EQUAL(s.lines + s.lost, (uint64_t)lines);
    CU_ASSERT_EQUAL(s.errors, 0);

    struct drain d;
    pthread_t t;
    start_drain(&d, &t, rfd);
    log_stop();
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    close(rfd);
    unlink(path);
    drain_to_file(&d);
    free(d.buf);

    struct parsed p = {0};
    long long lost;
    append_file(&p, path);
    CU_ASSERT_EQUAL(check_seq_and_lost(&p, "log buffer full", &lost), (long long)s.lines);
    CU_ASSERT_EQUAL(lost, (long long)s.lost);
    parsed_free(&p);
    unlink(path);
}

int suite_logging_log(void);
int suite_logging_log(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_log_write_line_fields),
        SPINDLE_TEST(test_log_enabled_skips_arguments),
        SPINDLE_TEST(test_log_write_context_fields),
        SPINDLE_TEST(test_log_thread_name_set_and_system_name),
        SPINDLE_TEST(test_log_start_errors),
        SPINDLE_TEST(test_log_write_after_stop_is_synchronous),
        SPINDLE_TEST(test_log_flush_waits_for_writer),
        SPINDLE_TEST(test_log_write_fatal_flushes_before_return),
        SPINDLE_TEST(test_log_write_fatal_survives_abort),
        SPINDLE_TEST(test_log_write_threads_keep_order),
        SPINDLE_TEST(test_log_reopen_during_writes_loses_nothing),
        SPINDLE_TEST(test_log_write_drop_policy_counts_and_reports),
        SPINDLE_TEST(test_log_write_failing_sink_counts_errors_and_losses),
        SPINDLE_TEST(test_log_write_broken_sink_recovers_and_reports),
        SPINDLE_TEST(test_log_thread_wait_max_set_loses_instead_of_blocking),
        SPINDLE_TEST(test_log_write_block_policy_counts_waits),
    };
    return SPINDLE_SUITE_ADD("logging_log", NULL, NULL, tests);
}
