/* log.c - the logger's buffer, its writer thread, and the public entry points.
 *
 * Design: a producer formats its line into a thread-local scratch buffer (format.c), then takes
 * the ring mutex only to copy the finished bytes into one byte ring of cfg.buffer_bytes and
 * advance `head`. The writer thread takes the mutex only to snapshot [wpos, head) and to publish
 * progress; it writes the snapshot (at most two slices, because of the wrap) with writev() with
 * no lock held, so producers keep appending while it writes and batches grow with the load. The
 * writer is signalled only when it sleeps: idle (empty ring), or lingering (a batch below
 * BATCH_MIN waits up to LINGER_NS for more lines, unless someone waits on the writer) and the
 * batch has grown big enough; so a busy logger makes few wake-ups and large writes. The mutex is
 * adaptive (spins before it sleeps) because every critical section is a short memcpy. When the ring
 * is full a producer waits on space_cv (counted) or, with the drop policy, drops the line
 * (counted); the writer reports drops in a line of its own after the batch that follows them.
 *
 * Positions are 64-bit byte counts since log_start(), so "empty" (head == wpos) and "full"
 * (head - wpos == cap) need no extra flag. Invariant: wpos <= head <= wpos + cap; bytes in
 * [wpos, head) are formatted and not yet written, which is exactly what crash.c writes out when
 * the process dies. Around each write() the writer holds `token` (an atomic flag, not a lock);
 * the crash handler takes it for good, so the two never write the same bytes.
 *
 * Ordering promises: flush and fatal wait until wpos passes the head they saw; reopen records
 * the head at the call as a boundary, and the writer switches descriptors exactly there; stop
 * lets the writer drain to empty before it exits, and producers keep enqueueing while it drains
 * (so one thread's lines are never reordered around the stop).
 *
 * Threads and locks: `mu` guards the struct logger fields not marked atomic. Lock order:
 * reopen_mu before mu. Before log_start() and after log_stop() (state OFF) log_write() writes
 * synchronously with mu held, so such lines are serialised and none is lost; after a stop they
 * are appended to the configured file (opened per line), otherwise to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "logging/internal.h"

enum log_state { LOG_ST_OFF = 0, LOG_ST_RUNNING, LOG_ST_STOPPING };

struct logger {
    pthread_mutex_t mu;
    pthread_mutex_t reopen_mu; /* serialises log_reopen() callers */
    pthread_cond_t writer_cv;  /* the writer waits here for work */
    pthread_cond_t space_cv;   /* producers wait here for ring space */
    pthread_cond_t done_cv;    /* flush and reopen callers wait here for progress */
    enum log_state state;
    enum log_policy policy;
    char *ring;
    size_t cap;
    uint64_t lines_enq;    /* lines copied into the ring (position head) */
    uint64_t lines_done;   /* lines before wpos */
    bool writer_idle;      /* the writer sleeps until signalled */
    bool writer_lingering; /* the writer sleeps at most LINGER_NS, waiting for a fuller batch */
    bool stop;
    unsigned space_waiters, done_waiters;
    uint64_t dropped_reported; /* part of stats.dropped already reported by the writer */
    int reopen_fd;             /* new descriptor waiting for the boundary, or -1 */
    uint64_t reopen_pos, reopen_lines;
    bool own_fd; /* fd is ours to close (not stderr) */
    pthread_t writer;
    char path[PATH_MAX]; /* "" = stderr */
};

static struct logger g = {
    .mu = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP, /* spins first: the critical sections are short */
    .reopen_mu = PTHREAD_MUTEX_INITIALIZER,
    .writer_cv = PTHREAD_COND_INITIALIZER,
    .space_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER,
    .reopen_fd = -1,
};

struct log_ring_view log_ring_view_ = {.fd = -1};
#define V log_ring_view_

_Atomic int log_level_current_ = LOG_LEVEL_INFO;
void (*log_test_wait_hook)(void);

/* Counters (relaxed atomics: read without the lock by log_stats_get()). */
static struct {
    _Atomic uint64_t lines, written, waits, dropped, bytes, errors;
} st;

/* Per thread: formatting scratch, timestamp cache, name. */
static _Thread_local char tls_scratch[LOG_FMT_BUF];
static _Thread_local struct log_ts_cache tls_ts = {.sec = -1};
static _Thread_local char tls_name[LOG_THREAD_NAME_MAX];
static _Thread_local size_t tls_name_len;
static _Thread_local bool tls_name_known;
static _Thread_local bool tls_is_writer;
static _Thread_local bool tls_crash_ready;

#define DEFAULT_BUFFER (1u << 20)
/* A batch smaller than this waits up to LINGER_NS for more lines unless someone waits on it:
 * fewer, larger writes and far fewer wake-ups when the producers are slower than the disk. */
#define BATCH_MIN  (64u << 10)
#define LINGER_NS  1000000
#define MIN_BUFFER (64u << 10)

/* ---- thread names ------------------------------------------------------------------------- */

static void name_store(const char *name)
{
    size_t n = strnlen(name, LOG_THREAD_NAME_MAX - 1);
    memcpy(tls_name, name, n);
    tls_name[n] = '\0';
    tls_name_len = n;
    tls_name_known = true;
}

void log_thread_name_set(const char *name)
{
    char sys[16];
    if (name == NULL)
        name = "";
    name_store(name);
    /* The kernel keeps 15 bytes; cut there, and not inside a UTF-8 sequence. */
    size_t n = strnlen(name, sizeof(sys) - 1);
    if (n == sizeof(sys) - 1 && ((unsigned char)name[n] & 0xc0) == 0x80)
        while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
            n--;
    memcpy(sys, name, n);
    sys[n] = '\0';
    (void)pthread_setname_np(pthread_self(), sys); /* best effort: the logged name is set */
}

static const char *thread_name(size_t *len)
{
    if (!tls_name_known) {
        char sys[16] = "";
        if (pthread_getname_np(pthread_self(), sys, sizeof(sys)) != 0 || sys[0] == '\0') {
            char *p = sys + sizeof(sys);
            long tid = syscall(SYS_gettid);
            *--p = '\0';
            do {
                *--p = (char)('0' + tid % 10);
                tid /= 10;
            } while (tid > 0 && p > sys + 1);
            *--p = 't';
            memmove(sys, p, strlen(p) + 1);
        }
        name_store(sys);
    }
    *len = tls_name_len;
    return tls_name;
}

const char *log_thread_name_cached(size_t *len)
{
    *len = tls_name_len;
    return tls_name_known ? tls_name : NULL;
}

bool log_on_writer_thread(void)
{
    return tls_is_writer;
}

/* ---- levels and stats --------------------------------------------------------------------- */

void log_set_level(enum log_level level)
{
    if ((unsigned)level >= LOG_LEVEL__COUNT)
        level = LOG_LEVEL_FATAL;
    atomic_store_explicit(&log_level_current_, (int)level, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&log_level_current_, memory_order_relaxed);
}

void log_stats_get(struct log_stats *out)
{
    out->lines = atomic_load_explicit(&st.lines, memory_order_relaxed);
    out->written = atomic_load_explicit(&st.written, memory_order_relaxed);
    out->waits = atomic_load_explicit(&st.waits, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&st.dropped, memory_order_relaxed);
    out->bytes = atomic_load_explicit(&st.bytes, memory_order_relaxed);
    out->errors = atomic_load_explicit(&st.errors, memory_order_relaxed);
}

static void stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void stats_reset(void)
{
    atomic_store(&st.lines, 0);
    atomic_store(&st.written, 0);
    atomic_store(&st.waits, 0);
    atomic_store(&st.dropped, 0);
    atomic_store(&st.bytes, 0);
    atomic_store(&st.errors, 0);
}

/* ---- writing to a descriptor -------------------------------------------------------------- */

/* Write all of buf (blocking; EINTR and EAGAIN retried). Returns 0 or a negative errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            (void)poll(&p, 1, 1000);
        } else if (n == 0 || errno != EINTR) {
            return n == 0 ? -EIO : -errno;
        }
    }
    return 0;
}

/* State OFF, mu held: append one line to the configured file, or to stderr. */
static void write_sync_locked(const char *line, size_t len)
{
    int fd = STDERR_FILENO;
    if (g.path[0] != '\0') {
        fd = open(g.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            fd = STDERR_FILENO;
    }
    int rc = write_all(fd, line, len);
    if (rc < 0)
        rc = write_all(fd, line, len);
    stat_add(&st.lines, 1);
    if (rc == 0) {
        stat_add(&st.written, 1);
        stat_add(&st.bytes, len);
    } else {
        stat_add(&st.errors, 1);
    }
    if (fd != STDERR_FILENO)
        close(fd);
}

/* ---- the writer --------------------------------------------------------------------------- */

/* One batch: ring bytes [from, to) then `extra` (the drop report, may be empty). */
struct batch {
    uint64_t from, to;
    uint64_t lines;
    const char *extra;
    size_t extra_len;
};

static int batch_iov(const struct batch *b, uint64_t done, struct iovec iov[3])
{
    int cnt = 0;
    uint64_t pos = b->from + done;
    if (pos < b->to) {
        size_t off = (size_t)(pos % g.cap), len = (size_t)(b->to - pos);
        size_t first = len < g.cap - off ? len : g.cap - off;
        iov[cnt++] = (struct iovec){.iov_base = g.ring + off, .iov_len = first};
        if (first < len)
            iov[cnt++] = (struct iovec){.iov_base = g.ring, .iov_len = len - first};
        done = 0;
    } else {
        done = pos - b->to;
    }
    if (done < b->extra_len)
        iov[cnt++] =
            (struct iovec){.iov_base = (char *)b->extra + done, .iov_len = b->extra_len - done};
    return cnt;
}

/* Once the crash handler owns the token the process is about to die: stop writing for good. */
static void writer_park(void)
{
    for (;;)
        pause();
}

/* Write a batch with no lock held; wpos follows every partial write so the crash handler
 * starts exactly where the writer stopped. Failed writes are retried once, then the batch is
 * counted in stats.errors and skipped (a broken file must not stall the producers forever). */
static void writer_write(const struct batch *b)
{
    uint64_t total = b->to - b->from + b->extra_len, done = 0;
    int fd = atomic_load(&V.fd), failures = 0;

    while (done < total) {
        struct iovec iov[3];
        int cnt = batch_iov(b, done, iov);
        if (atomic_exchange(&V.token, 1) != 0)
            writer_park();
        ssize_t n = writev(fd, iov, cnt);
        if (n > 0) {
            done += (uint64_t)n;
            uint64_t ring_done = b->from + done;
            atomic_store(&V.wpos, ring_done < b->to ? ring_done : b->to);
        }
        atomic_store(&V.token, 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            (void)poll(&p, 1, 1000);
            continue;
        }
        if (++failures < 2)
            continue;
        stat_add(&st.errors, b->lines);
        atomic_store(&V.wpos, b->to);
        return;
    }
    stat_add(&st.bytes, total);
    stat_add(&st.written, b->lines);
}

static bool writer_has_work(void)
{
    return atomic_load(&V.head) != atomic_load(&V.wpos) || g.reopen_fd >= 0 || g.stop ||
           atomic_load_explicit(&st.dropped, memory_order_relaxed) != g.dropped_reported;
}

/* mu held: someone waits for the writer (flush, fatal, reopen, stop, a full ring, a drop). */
static bool writer_urgent(void)
{
    return g.done_waiters > 0 || g.space_waiters > 0 || g.reopen_fd >= 0 || g.stop ||
           atomic_load_explicit(&st.dropped, memory_order_relaxed) != g.dropped_reported;
}

static uint64_t pending_bytes(void)
{
    return atomic_load(&V.head) - atomic_load(&V.wpos);
}

static uint64_t batch_min(void)
{
    return g.cap / 4 < BATCH_MIN ? g.cap / 4 : BATCH_MIN;
}

/* mu held: give producers up to LINGER_NS to fill a bigger batch (they signal when it is). */
static void writer_linger(void)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += LINGER_NS;
    if (until.tv_nsec >= 1000000000) {
        until.tv_nsec -= 1000000000;
        until.tv_sec++;
    }
    g.writer_lingering = true;
    while (g.writer_lingering && !writer_urgent() && pending_bytes() < batch_min()) {
        if (pthread_cond_timedwait(&g.writer_cv, &g.mu, &until) == ETIMEDOUT)
            break;
    }
    g.writer_lingering = false;
}

/* mu held: the next batch, and the drop report to append to it. */
static void writer_take(struct batch *b, char *report, size_t *report_len)
{
    uint64_t dropped = atomic_load_explicit(&st.dropped, memory_order_relaxed);

    b->from = atomic_load(&V.wpos);
    b->to = atomic_load(&V.head);
    b->lines = g.lines_enq - g.lines_done;
    if (g.reopen_fd >= 0) {
        b->to = g.reopen_pos; /* lines before the reopen go to the old file */
        b->lines = g.reopen_lines - g.lines_done;
    }
    *report_len = 0;
    if (dropped != g.dropped_reported) {
        struct log_field f = LOG_UINT("dropped", dropped - g.dropped_reported);
        struct timespec ts;
        size_t nlen;
        const char *name = thread_name(&nlen);
        clock_gettime(CLOCK_REALTIME, &ts);
        struct log_line_head h = {
            .level = LOG_LEVEL_WARN,
            .msg = "log lines dropped",
            .thread = name,
            .thread_len = nlen,
            .sec = ts.tv_sec,
            .usec = (uint32_t)(ts.tv_nsec / 1000),
            .ts_cache = &tls_ts,
        };
        *report_len = log_fmt_line(report, &h, &f, 1);
        g.dropped_reported = dropped;
    }
    b->extra = report;
    b->extra_len = *report_len;
}

/* mu held, after a batch: switch files at the reopen boundary, wake whoever waits. */
static void writer_done(const struct batch *b)
{
    g.lines_done += b->lines;
    if (g.reopen_fd >= 0 && b->to == g.reopen_pos) {
        int old = atomic_exchange(&V.fd, g.reopen_fd);
        if (g.own_fd)
            close(old);
        g.own_fd = true;
        g.reopen_fd = -1;
    }
    if (g.space_waiters > 0)
        pthread_cond_broadcast(&g.space_cv);
    if (g.done_waiters > 0)
        pthread_cond_broadcast(&g.done_cv);
}

static void *writer_main(void *arg)
{
    static char report[LOG_FMT_BUF]; /* only the writer thread uses it */
    (void)arg;
    tls_is_writer = true;
    log_thread_name_set("log-writer");
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (!writer_has_work()) {
            g.writer_idle = true;
            pthread_cond_wait(&g.writer_cv, &g.mu);
        }
        g.writer_idle = false;
        if (!writer_urgent() && pending_bytes() < batch_min())
            writer_linger();
        struct batch b;
        size_t report_len;
        writer_take(&b, report, &report_len);
        if (b.from == b.to && report_len == 0 && g.reopen_fd < 0 && g.stop)
            break;
        pthread_mutex_unlock(&g.mu);
        writer_write(&b);
        pthread_mutex_lock(&g.mu);
        writer_done(&b);
    }
    g.state = LOG_ST_OFF; /* producers write synchronously from now on */
    pthread_cond_broadcast(&g.space_cv);
    pthread_cond_broadcast(&g.done_cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* ---- producers ---------------------------------------------------------------------------- */

/* mu held, after an enqueue: true (once) when the writer sleeps and should get up, either
 * because it is idle or because its lingering batch is now big enough. */
static bool writer_wake_needed(void)
{
    if (g.writer_idle) {
        g.writer_idle = false;
        return true;
    }
    if (g.writer_lingering && pending_bytes() >= batch_min()) {
        g.writer_lingering = false;
        return true;
    }
    return false;
}

/* mu held: get a sleeping writer up at once (someone waits for it). */
static void writer_kick_locked(void)
{
    if (g.writer_idle || g.writer_lingering) {
        g.writer_idle = false;
        g.writer_lingering = false;
        pthread_cond_signal(&g.writer_cv);
    }
}

/* mu held, state not OFF: copy the line in. Returns 1 when enqueued, 0 when dropped, -1 when the
 * logger stopped while we waited (the caller writes synchronously). */
static int ring_put_locked(const char *line, size_t len, bool force)
{
    while (g.cap - (atomic_load(&V.head) - atomic_load(&V.wpos)) < len) {
        if (g.policy == LOG_POLICY_DROP && !force) {
            stat_add(&st.dropped, 1);
            return 0;
        }
        stat_add(&st.waits, 1);
        if (log_test_wait_hook != NULL)
            log_test_wait_hook();
        g.space_waiters++;
        writer_kick_locked();
        pthread_cond_wait(&g.space_cv, &g.mu);
        g.space_waiters--;
        if (g.state == LOG_ST_OFF)
            return -1;
    }
    uint64_t head = atomic_load_explicit(&V.head, memory_order_relaxed);
    size_t off = (size_t)(head % g.cap), first = g.cap - off < len ? g.cap - off : len;
    memcpy(g.ring + off, line, first);
    memcpy(g.ring, line + first, len - first);
    atomic_store_explicit(&V.head, head + len, memory_order_release);
    g.lines_enq++;
    stat_add(&st.lines, 1);
    return 1;
}

/* mu held: wait until the writer has written everything before `target`. */
static void wait_written_locked(uint64_t target)
{
    g.done_waiters++;
    while (g.state != LOG_ST_OFF && atomic_load(&V.wpos) < target) {
        writer_kick_locked();
        pthread_cond_wait(&g.done_cv, &g.mu);
    }
    g.done_waiters--;
}

static size_t format_line(enum log_level level, const char *msg, const struct log_field *fields,
                          size_t n)
{
    struct timespec ts;
    size_t nlen;
    const char *name = thread_name(&nlen);
    clock_gettime(CLOCK_REALTIME, &ts);
    struct log_line_head h = {
        .level = level,
        .msg = msg,
        .thread = name,
        .thread_len = nlen,
        .ctx = ctx_current(),
        .sec = ts.tv_sec,
        .usec = (uint32_t)(ts.tv_nsec / 1000),
        .ts_cache = &tls_ts,
    };
    return log_fmt_line(tls_scratch, &h, fields, n);
}

void log_write(enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    if ((unsigned)level >= LOG_LEVEL__COUNT)
        level = LOG_LEVEL_FATAL;
    if (!log_enabled(level))
        return;
    if (!tls_crash_ready && atomic_load_explicit(&log_crash_installed_, memory_order_relaxed)) {
        tls_crash_ready = true;
        log_crash_thread_setup();
    }
    size_t len = format_line(level, msg, fields, n);
    bool fatal = level == LOG_LEVEL_FATAL, wake = false;

    pthread_mutex_lock(&g.mu);
    int rc = g.state == LOG_ST_OFF ? -1 : ring_put_locked(tls_scratch, len, fatal);
    if (rc < 0) {
        write_sync_locked(tls_scratch, len);
    } else if (rc > 0 && fatal) {
        wait_written_locked(atomic_load(&V.head));
    } else if (rc > 0) {
        wake = writer_wake_needed();
    }
    pthread_mutex_unlock(&g.mu);
    if (wake)
        pthread_cond_signal(&g.writer_cv);
}

/* ---- life cycle --------------------------------------------------------------------------- */

static int open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

/* The writer's timed linger must not stretch when the wall clock is set back. */
static void writer_cv_init(void)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return; /* keep the default clock */
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0) {
        pthread_cond_destroy(&g.writer_cv);
        pthread_cond_init(&g.writer_cv, &attr);
    }
    pthread_condattr_destroy(&attr);
}

/* The writer gets every asynchronous signal blocked whatever the caller's mask is. */
static int writer_spawn(void)
{
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&g.writer, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

int log_start(const struct log_config *cfg)
{
    const char *path = cfg->path;
    bool to_stderr = path == NULL || path[0] == '\0' || strcmp(path, "-") == 0;
    size_t cap = cfg->buffer_bytes == 0 ? DEFAULT_BUFFER : cfg->buffer_bytes;
    int fd = STDERR_FILENO, rc;

    if (cap < MIN_BUFFER)
        cap = MIN_BUFFER;
    if (!to_stderr && strlen(path) >= sizeof(g.path))
        return -ENAMETOOLONG;
    pthread_once(&clock_once, writer_cv_init);
    char *ring = malloc(cap);
    if (ring == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&g.mu);
    if (g.state != LOG_ST_OFF) {
        rc = -EALREADY;
        goto err_unlock;
    }
    if (!to_stderr && (fd = open_path(path)) < 0) {
        rc = fd;
        goto err_unlock;
    }
    strcpy(g.path, to_stderr ? "" : path);
    g.own_fd = !to_stderr;
    g.ring = ring;
    g.cap = cap;
    g.policy = cfg->policy;
    g.lines_enq = g.lines_done = g.dropped_reported = 0;
    g.stop = false;
    g.writer_idle = false;
    stats_reset();
    atomic_store(&V.head, 0);
    atomic_store(&V.wpos, 0);
    atomic_store(&V.fd, fd);
    atomic_store(&V.cap, cap);
    atomic_store(&V.ring, ring);
    log_set_level(cfg->level);
    rc = writer_spawn();
    if (rc < 0)
        goto err_close;
    g.state = LOG_ST_RUNNING;
    pthread_mutex_unlock(&g.mu);
    return 0;

err_close:
    atomic_store(&V.ring, NULL);
    atomic_store(&V.fd, -1);
    g.ring = NULL;
    if (g.own_fd)
        close(fd);
    g.own_fd = false;
err_unlock:
    pthread_mutex_unlock(&g.mu);
    free(ring);
    return rc;
}

void log_stop(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.state != LOG_ST_RUNNING) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    g.state = LOG_ST_STOPPING;
    g.stop = true;
    writer_kick_locked();
    pthread_mutex_unlock(&g.mu);

    int rc = pthread_join(g.writer, NULL);
    if (rc != 0)
        abort(); /* broken invariant: the writer is ours and joined once */

    pthread_mutex_lock(&g.mu);
    int fd = atomic_exchange(&V.fd, -1);
    char *ring = g.ring;
    atomic_store(&V.ring, NULL);
    g.ring = NULL;
    if (g.own_fd)
        close(fd);
    g.own_fd = false;
    pthread_mutex_unlock(&g.mu);
    free(ring);
}

int log_flush(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.state == LOG_ST_OFF) {
        pthread_mutex_unlock(&g.mu);
        return -ESHUTDOWN;
    }
    wait_written_locked(atomic_load(&V.head));
    pthread_mutex_unlock(&g.mu);
    return 0;
}

/* mu held: hand `fd` to the writer with the current head as the boundary, wait for the switch. */
static int reopen_handoff_locked(int fd)
{
    if (g.state == LOG_ST_OFF)
        return -ESHUTDOWN;
    g.reopen_fd = fd;
    g.reopen_pos = atomic_load(&V.head);
    g.reopen_lines = g.lines_enq;
    g.done_waiters++;
    while (g.reopen_fd == fd) {
        writer_kick_locked();
        pthread_cond_wait(&g.done_cv, &g.mu);
    }
    g.done_waiters--;
    return 0;
}

int log_reopen(void)
{
    char path[PATH_MAX];
    int rc = 0;

    pthread_mutex_lock(&g.reopen_mu);
    pthread_mutex_lock(&g.mu);
    if (g.state == LOG_ST_OFF)
        rc = -ESHUTDOWN;
    memcpy(path, g.path, sizeof(path));
    pthread_mutex_unlock(&g.mu);
    if (rc < 0 || path[0] == '\0')
        goto out; /* stderr is never reopened */

    /* Open outside the ring mutex: producers keep going while the file system works. */
    int fd = open_path(path);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    pthread_mutex_lock(&g.mu);
    rc = reopen_handoff_locked(fd);
    pthread_mutex_unlock(&g.mu);
    if (rc < 0)
        close(fd);
out:
    pthread_mutex_unlock(&g.reopen_mu);
    return rc;
}
