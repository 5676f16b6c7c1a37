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
 * A broken or stalled sink (log.h): the writer retries the bytes it holds with backoff and says
 * so on stderr (the only place left), never giving them up while the logger runs; what cannot
 * enter the ring meanwhile is lost at once, not waited for, so no thread hangs on a dead disk or a
 * FIFO nobody reads. "Stalled" is measured by `sink.progress_ns`: the last time the writer wrote
 * bytes or was woken with an empty ring. Losses are reported in a line of their own once the sink
 * takes bytes again (as drops are). Only log_stop() gives ring bytes up, after LOG_STOP_STALL_MS
 * without progress, so a stop is bounded. Descriptors the logger opens are non-blocking (a FIFO
 * then answers EAGAIN instead of parking the writer inside write()), so the writer keeps control.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "context/lock.h"
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
    uint64_t lost_reported;    /* part of stats.lost already reported by the writer */
    uint64_t errors_reported;  /* part of stats.errors already reported by the writer */
    int lost_why;              /* why the last line was lost: an errno or a LOST_ code */
    bool writer_exited;        /* writer_main returned (log_stop waits for it, bounded) */
    bool abandoned;            /* log_stop left a writer stuck in write(): no restart */
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
    _Atomic uint64_t lines, written, waits, dropped, bytes, errors, lost;
} st;

/* The sink's health, read by producers without the writer's help (atomics). */
static struct {
    _Atomic int err;              /* errno of the failing sink; 0 while writes succeed */
    _Atomic int last_err;         /* the last write error seen (for the report) */
    _Atomic uint64_t progress_ns; /* monotonic: bytes written, or the writer woken when empty */
    _Atomic bool stopping;        /* log_stop() called: the writer may give bytes up */
} sink;

/* Why a line was lost, when it is not an errno of the sink. */
#define LOST_STALLED (-1) /* nothing written for LOG_STALL_MS */
#define LOST_BOUND   (-2) /* the thread's own wait bound passed (log_thread_wait_max_set) */
#define MS           1000000ull

/* Per thread: formatting scratch, timestamp cache, name. */
static _Thread_local char tls_scratch[LOG_FMT_BUF];
static _Thread_local struct log_ts_cache tls_ts = {.sec = -1};
static _Thread_local char tls_name[LOG_THREAD_NAME_MAX];
static _Thread_local size_t tls_name_len;
static _Thread_local bool tls_name_known;
static _Thread_local bool tls_is_writer;
static _Thread_local bool tls_crash_ready;
static _Thread_local uint64_t tls_wait_max = UINT64_MAX; /* log_thread_wait_max_set() */
static _Thread_local bool tls_gave_up;                   /* gave up at wpos tls_gave_up_wpos */
static _Thread_local uint64_t tls_gave_up_wpos;

#define LOG_NUM_RAW(x) #x
#define LOG_NUM(x)     LOG_NUM_RAW(x)

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
    out->lost = atomic_load_explicit(&st.lost, memory_order_relaxed);
}

void log_thread_wait_max_set(uint64_t max_ns)
{
    tls_wait_max = max_ns;
    tls_gave_up = false;
}

const char *log_path(void)
{
    return g.path;
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
    atomic_store(&st.lost, 0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wait on `cv` (CLOCK_MONOTONIC, see writer_cv_init) until signalled or `until_ns`. */
static void cond_wait_until(pthread_cond_t *cv, uint64_t until_ns)
{
    if (until_ns == UINT64_MAX) {
        ctx_cond_wait(cv, &g.mu);
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(until_ns / 1000000000u),
                          .tv_nsec = (long)(until_ns % 1000000000u)};
    (void)ctx_cond_timedwait(cv, &g.mu, &ts); /* a timeout is checked by the caller */
}

/* The sink has taken nothing for `ms` (the progress stamp is set by another thread: it may be a
 * little ahead of `now`). */
static bool sink_stalled(uint64_t now, uint64_t ms)
{
    uint64_t p = atomic_load(&sink.progress_ns);
    return atomic_load(&V.head) != atomic_load(&V.wpos) && now > p && now - p > ms * MS;
}

static void sink_progress(void)
{
    atomic_store(&sink.progress_ns, now_ns());
}

/* mu held: one line lost; the writer reports it (why: an errno or a LOST_ code). */
static void lose_locked(int why)
{
    stat_add(&st.lost, 1);
    g.lost_why = why;
}

static const char *lost_why_text(int why)
{
    if (why == LOST_STALLED)
        return "log sink stalled: nothing written for " LOG_NUM(LOG_STALL_MS) " ms";
    if (why == LOST_BOUND)
        return "log buffer full: the thread may not wait for it (event loop)";
    return strerror(why);
}

/* ---- writing to a descriptor -------------------------------------------------------------- */

/* Write all of buf (EINTR retried; EAGAIN waited for, at most LOG_STOP_STALL_MS without
 * progress). Returns 0 or a negative errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    uint64_t until = now_ns() + LOG_STOP_STALL_MS * MS;
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            until = now_ns() + LOG_STOP_STALL_MS * MS;
        } else if (n < 0 && errno == EAGAIN) {
            if (now_ns() >= until)
                return -EAGAIN;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            (void)poll(&p, 1, 100);
        } else if (n == 0 || errno != EINTR) {
            return n == 0 ? -EIO : -errno;
        }
    }
    return 0;
}

/* A message to stderr about the log itself (the log cannot carry it). Best effort: stderr may be
 * the very sink that fails, and nothing else is left to tell. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
    if (write(STDERR_FILENO, buf, len) < 0)
        return; /* nowhere left to report it */
}

static const char *sink_name(void)
{
    return g.path[0] != '\0' ? g.path : "stderr";
}

/* State OFF, mu held: append one line to the configured file, or to stderr. A FIFO without a
 * reader is not waited for (O_NONBLOCK): the line goes to stderr. */
static void write_sync_locked(const char *line, size_t len)
{
    int fd = STDERR_FILENO;
    if (g.path[0] != '\0') {
        fd = open(g.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
        if (fd < 0)
            fd = STDERR_FILENO;
    }
    int rc = write_all(fd, line, len);
    if (rc < 0 && rc != -EAGAIN)
        rc = write_all(fd, line, len);
    stat_add(&st.lines, 1);
    if (rc == 0) {
        stat_add(&st.written, 1);
        stat_add(&st.bytes, len);
    } else {
        stat_add(&st.errors, 1);
        stat_add(&st.lost, 1);
        say("spindle: log: cannot write to %s: %s; a line was lost\n", sink_name(), strerror(-rc));
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

/* Writer only: stderr notes about the sink, the first of an episode at once, then at most every
 * LOG_STDERR_EVERY_MS. */
static struct {
    uint64_t said_ns;
    bool failing, stalled; /* an episode is on (said at its start) */
} wnote;

static bool wnote_due(bool start)
{
    uint64_t now = now_ns();
    if (!start && now - wnote.said_ns < LOG_STDERR_EVERY_MS * MS)
        return false;
    wnote.said_ns = now;
    return true;
}

static void sink_failed(int err)
{
    stat_add(&st.errors, 1);
    atomic_store(&sink.last_err, err);
    atomic_store(&sink.err, err);
    bool start = !wnote.failing;
    wnote.failing = true;
    if (wnote_due(start))
        say("spindle: log: cannot write to %s: %s; retrying (%llu failed writes, %llu lines lost "
            "so far)\n",
            sink_name(), strerror(err), (unsigned long long)atomic_load(&st.errors),
            (unsigned long long)atomic_load(&st.lost));
}

static void sink_stall_check(void)
{
    if (!sink_stalled(now_ns(), LOG_STALL_MS))
        return;
    bool start = !wnote.stalled;
    wnote.stalled = true;
    if (wnote_due(start))
        say("spindle: log: %s takes nothing (stalled for over %d ms); lines that do not fit are "
            "lost (%llu so far)\n",
            sink_name(), LOG_STALL_MS, (unsigned long long)atomic_load(&st.lost));
}

static void sink_recovered(void)
{
    sink_progress();
    if (!wnote.failing && !wnote.stalled)
        return;
    atomic_store(&sink.err, 0);
    wnote.failing = wnote.stalled = false;
    wnote.said_ns = now_ns();
    say("spindle: log: writing to %s again (%llu lines lost so far)\n", sink_name(),
        (unsigned long long)atomic_load(&st.lost));
}

/* Stopping and the sink took nothing for LOG_STOP_STALL_MS: give the rest up. */
static bool writer_give_up(void)
{
    uint64_t p = atomic_load(&sink.progress_ns), now = now_ns();
    return atomic_load(&sink.stopping) && now > p && now - p > LOG_STOP_STALL_MS * MS;
}

/* Write a batch with no lock held; wpos follows every partial write so the crash handler
 * starts exactly where the writer stopped. A failing write is counted and retried with backoff
 * (never given up while the logger runs: the ring holds the oldest lines, producers lose the new
 * ones); EAGAIN (a full pipe) is waited for. Only a stop gives the rest of the batch up. */
static void writer_write(const struct batch *b)
{
    uint64_t total = b->to - b->from + b->extra_len, done = 0;
    int fd = atomic_load(&V.fd), backoff = LOG_RETRY_MIN_MS, err = 0;

    while (done < total) {
        struct iovec iov[3];
        int cnt = batch_iov(b, done, iov);
        if (atomic_exchange(&V.token, 1) != 0)
            writer_park();
        ssize_t n = writev(fd, iov, cnt);
        err = n < 0 ? errno : EIO;
        if (n > 0) {
            done += (uint64_t)n;
            uint64_t ring_done = b->from + done;
            atomic_store(&V.wpos, ring_done < b->to ? ring_done : b->to);
        }
        atomic_store(&V.token, 0);
        if (n > 0) {
            sink_recovered();
            backoff = LOG_RETRY_MIN_MS;
            continue;
        }
        if (err == EINTR)
            continue;
        if (writer_give_up())
            goto give_up;
        if (err == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            (void)poll(&p, 1, 100);
            sink_stall_check();
            continue;
        }
        sink_failed(err);
        (void)poll(NULL, 0, backoff); /* not a lock held: producers go on meanwhile */
        backoff = backoff * 2 < LOG_RETRY_MAX_MS ? backoff * 2 : LOG_RETRY_MAX_MS;
    }
    stat_add(&st.bytes, total);
    stat_add(&st.written, b->lines);
    return;

give_up:
    stat_add(&st.bytes, done);
    atomic_store(&V.wpos, b->to);
    ctx_mutex_lock(&g.mu);
    stat_add(&st.lost, b->lines);
    g.lost_why = err == EAGAIN ? LOST_STALLED : err;
    ctx_mutex_unlock(&g.mu);
}

/* mu held: drops or losses wait to be reported, or write errors the sink got over. */
static bool writer_report_due(void)
{
    return atomic_load_explicit(&st.dropped, memory_order_relaxed) != g.dropped_reported ||
           atomic_load_explicit(&st.lost, memory_order_relaxed) != g.lost_reported ||
           (atomic_load(&sink.err) == 0 &&
            atomic_load_explicit(&st.errors, memory_order_relaxed) != g.errors_reported);
}

static bool writer_has_work(void)
{
    return atomic_load(&V.head) != atomic_load(&V.wpos) || g.reopen_fd >= 0 || g.stop ||
           writer_report_due();
}

/* mu held: someone waits for the writer (flush, fatal, reopen, stop, a full ring, a report). */
static bool writer_urgent(void)
{
    return g.done_waiters > 0 || g.space_waiters > 0 || g.reopen_fd >= 0 || g.stop ||
           writer_report_due();
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
        if (!ctx_cond_timedwait(&g.writer_cv, &g.mu, &until))
            break;
    }
    g.writer_lingering = false;
}

/* Format one line into out (LOG_FMT_BUF bytes) with the calling thread's name, the time now and
 * `ctx`'s ids (NULL: none). */
static size_t format_line_into(char *out, enum log_level level, const char *msg,
                               const struct ctx *ctx, const struct log_field *f, size_t n)
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
        .ctx = ctx,
        .sec = ts.tv_sec,
        .usec = (uint32_t)(ts.tv_nsec / 1000),
        .ts_cache = &tls_ts,
    };
    return log_fmt_line(out, &h, f, n);
}

/* Writer only: format one report line into out (LOG_FMT_BUF bytes); it belongs to no request. */
static size_t writer_report_line(char *out, enum log_level level, const char *msg,
                                 const struct log_field *f, size_t n)
{
    return format_line_into(out, level, msg, NULL, f, n);
}

/* mu held: the reports due (report has room for WRITER_REPORTS lines): drops; lines lost, with
 * why and the write errors since the last report; or, with nothing lost, write errors the sink
 * got over. Losses are reported while the sink still fails too: the line waits in the batch. */
#define WRITER_REPORTS 2
static size_t writer_reports(char *report)
{
    uint64_t dropped = atomic_load_explicit(&st.dropped, memory_order_relaxed);
    uint64_t lost = atomic_load_explicit(&st.lost, memory_order_relaxed);
    uint64_t errors = atomic_load_explicit(&st.errors, memory_order_relaxed);
    size_t len = 0;

    if (dropped != g.dropped_reported) {
        struct log_field f = LOG_UINT("dropped", dropped - g.dropped_reported);
        len += writer_report_line(report + len, LOG_LEVEL_WARN, "log lines dropped", &f, 1);
        g.dropped_reported = dropped;
    }
    if (lost != g.lost_reported) {
        struct log_field f[] = {
            LOG_UINT("lost", lost - g.lost_reported),
            LOG_STR("error", lost_why_text(g.lost_why)),
            LOG_UINT("write_errors", errors - g.errors_reported),
        };
        len += writer_report_line(report + len, LOG_LEVEL_ERROR, "log lines lost", f, 3);
        g.lost_reported = lost;
        g.errors_reported = errors;
    } else if (errors != g.errors_reported && atomic_load(&sink.err) == 0) {
        struct log_field f[] = {
            LOG_UINT("write_errors", errors - g.errors_reported),
            LOG_STR("error", strerror(atomic_load(&sink.last_err))),
        };
        len +=
            writer_report_line(report + len, LOG_LEVEL_WARN, "log writes failed, none lost", f, 2);
        g.errors_reported = errors;
    }
    return len;
}

/* mu held: the next batch, and the reports to append to it. */
static void writer_take(struct batch *b, char *report, size_t *report_len)
{
    b->from = atomic_load(&V.wpos);
    b->to = atomic_load(&V.head);
    b->lines = g.lines_enq - g.lines_done;
    if (g.reopen_fd >= 0) {
        b->to = g.reopen_pos; /* lines before the reopen go to the old file */
        b->lines = g.reopen_lines - g.lines_done;
    }
    *report_len = writer_reports(report);
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
        ctx_cond_broadcast(&g.space_cv);
    if (g.done_waiters > 0)
        ctx_cond_broadcast(&g.done_cv);
}

static void *writer_main(void *arg)
{
    static char report[WRITER_REPORTS * LOG_FMT_BUF]; /* only the writer thread uses it */
    (void)arg;
    tls_is_writer = true;
    log_thread_name_set("log-writer");
    ctx_mutex_lock(&g.mu);
    for (;;) {
        while (!writer_has_work()) {
            g.writer_idle = true;
            ctx_cond_wait(&g.writer_cv, &g.mu);
            sink_progress(); /* the stall clock starts when there is work */
        }
        g.writer_idle = false;
        if (!writer_urgent() && pending_bytes() < batch_min())
            writer_linger();
        struct batch b;
        size_t report_len;
        writer_take(&b, report, &report_len);
        if (b.from == b.to && report_len == 0 && g.reopen_fd < 0 && g.stop)
            break;
        ctx_mutex_unlock(&g.mu);
        writer_write(&b);
        ctx_mutex_lock(&g.mu);
        writer_done(&b);
    }
    g.state = LOG_ST_OFF; /* producers write synchronously from now on */
    g.writer_exited = true;
    ctx_cond_broadcast(&g.space_cv);
    ctx_cond_broadcast(&g.done_cv);
    ctx_mutex_unlock(&g.mu);
    return NULL;
}

/* ---- producers ---------------------------------------------------------------------------- */

/* mu held, after an enqueue: true (once) when the writer sleeps and should get up, either
 * because it is idle or because its lingering batch is now big enough. */
static bool writer_wake_needed(void)
{
    if (g.writer_idle) {
        g.writer_idle = false;
        sink_progress(); /* an idle writer is not a stalled sink */
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
        if (g.writer_idle)
            sink_progress();
        g.writer_idle = false;
        g.writer_lingering = false;
        ctx_cond_signal(&g.writer_cv);
    }
}

enum { WAIT_AGAIN, WAIT_OFF, WAIT_LOSE };

/* mu held, the ring too full for a line: wait once for space, unless the sink is broken or
 * stalled or the thread's bound (*deadline, set on the first call) passed. Returns WAIT_AGAIN,
 * WAIT_OFF (the logger stopped meanwhile) or WAIT_LOSE with *why. */
static int space_wait_locked(uint64_t *deadline, int *why)
{
    uint64_t now = now_ns(), wpos = atomic_load(&V.wpos);
    *why = atomic_load(&sink.err);
    if (*why != 0)
        return WAIT_LOSE;
    *why = LOST_STALLED;
    if (sink_stalled(now, LOG_STALL_MS))
        return WAIT_LOSE;
    if (tls_wait_max != UINT64_MAX) {
        *why = LOST_BOUND;
        /* Gave up before and the writer has not moved since: do not wait again per line. */
        if (*deadline == UINT64_MAX && tls_gave_up && tls_gave_up_wpos == wpos)
            return WAIT_LOSE;
        if (*deadline == UINT64_MAX)
            *deadline = now + tls_wait_max;
        if (now >= *deadline) {
            tls_gave_up = true;
            tls_gave_up_wpos = wpos;
            return WAIT_LOSE;
        }
    }
    stat_add(&st.waits, 1);
    if (log_test_wait_hook != NULL)
        log_test_wait_hook();
    uint64_t until = atomic_load(&sink.progress_ns) + LOG_STALL_MS * MS + MS;
    if (*deadline < until)
        until = *deadline;
    g.space_waiters++;
    writer_kick_locked();
    cond_wait_until(&g.space_cv, until);
    g.space_waiters--;
    return g.state == LOG_ST_OFF ? WAIT_OFF : WAIT_AGAIN;
}

/* mu held, state not OFF: copy the line in. Returns 1 when enqueued, 0 when dropped or lost, -1
 * when the logger stopped while we waited (the caller writes synchronously). */
static int ring_put_locked(const char *line, size_t len, bool force)
{
    uint64_t deadline = UINT64_MAX;
    while (g.cap - (atomic_load(&V.head) - atomic_load(&V.wpos)) < len) {
        if (g.policy == LOG_POLICY_DROP && !force) {
            stat_add(&st.dropped, 1);
            return 0;
        }
        int why, rc = space_wait_locked(&deadline, &why);
        if (rc == WAIT_OFF)
            return -1;
        if (rc == WAIT_LOSE) {
            lose_locked(why);
            return 0;
        }
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

/* mu held: wait until the writer has written everything before `target`, or the sink is broken
 * or stalled. Returns true when it was written. */
static bool wait_written_locked(uint64_t target)
{
    g.done_waiters++;
    while (g.state != LOG_ST_OFF && atomic_load(&V.wpos) < target) {
        if (atomic_load(&sink.err) != 0 || sink_stalled(now_ns(), LOG_STALL_MS))
            break;
        writer_kick_locked();
        cond_wait_until(&g.done_cv, atomic_load(&sink.progress_ns) + LOG_STALL_MS * MS + MS);
    }
    g.done_waiters--;
    return g.state == LOG_ST_OFF || atomic_load(&V.wpos) >= target;
}

static size_t format_line(enum log_level level, const char *msg, const struct log_field *fields,
                          size_t n)
{
    return format_line_into(tls_scratch, level, msg, ctx_current(), fields, n);
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

    ctx_mutex_lock(&g.mu);
    int rc = g.state == LOG_ST_OFF ? -1 : ring_put_locked(tls_scratch, len, fatal);
    bool on_disk = true;
    if (rc < 0) {
        write_sync_locked(tls_scratch, len);
    } else if (rc > 0 && fatal) {
        on_disk = wait_written_locked(atomic_load(&V.head));
    } else if (rc > 0) {
        wake = writer_wake_needed();
    }
    ctx_mutex_unlock(&g.mu);
    if (wake)
        ctx_cond_signal(&g.writer_cv);
    if (fatal && (rc == 0 || !on_disk) && g.path[0] != '\0')
        say("%.*s", (int)len, tls_scratch); /* the sink failed: the last words go to stderr */
}

/* ---- life cycle --------------------------------------------------------------------------- */

/* Open the log file; the descriptor is non-blocking either way (a FIFO nobody reads answers
 * EAGAIN, and the writer keeps control). `wait_reader`: a FIFO without a reader is waited for
 * (start-up) rather than refused with -ENXIO (reopen, on the event loop). */
static int open_path(const char *path, bool wait_reader)
{
    int flags = O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | (wait_reader ? 0 : O_NONBLOCK);
    int fd = open(path, flags, 0644);
    if (fd < 0)
        return -errno;
    if (wait_reader && fcntl(fd, F_SETFL, O_APPEND | O_NONBLOCK) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

/* Timed waits (linger, space, done) must not stretch when the wall clock is set back: every
 * deadline is on CLOCK_MONOTONIC. */
static void writer_cv_init(void)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        abort(); /* cannot fail on Linux; the deadlines would be on the wrong clock */
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0)
        abort();
    pthread_cond_t *cvs[] = {&g.writer_cv, &g.space_cv, &g.done_cv};
    for (size_t i = 0; i < sizeof(cvs) / sizeof(cvs[0]); i++) {
        pthread_cond_destroy(cvs[i]);
        if (pthread_cond_init(cvs[i], &attr) != 0)
            abort();
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
    ctx_mutex_lock(&g.mu);
    if (g.state != LOG_ST_OFF || g.abandoned) {
        rc = g.abandoned ? -EBUSY : -EALREADY;
        goto err_unlock;
    }
    if (!to_stderr && (fd = open_path(path, true)) < 0) {
        rc = fd;
        goto err_unlock;
    }
    strcpy(g.path, to_stderr ? "" : path);
    g.own_fd = !to_stderr;
    g.ring = ring;
    g.cap = cap;
    g.policy = cfg->policy;
    g.lines_enq = g.lines_done = g.dropped_reported = g.lost_reported = g.errors_reported = 0;
    g.lost_why = 0;
    g.stop = g.writer_exited = false;
    atomic_store(&sink.err, 0);
    atomic_store(&sink.last_err, 0);
    atomic_store(&sink.stopping, false);
    sink_progress();
    memset(&wnote, 0, sizeof(wnote));
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
    ctx_mutex_unlock(&g.mu);
    return 0;

err_close:
    atomic_store(&V.ring, NULL);
    atomic_store(&V.fd, -1);
    g.ring = NULL;
    if (g.own_fd)
        close(fd);
    g.own_fd = false;
err_unlock:
    ctx_mutex_unlock(&g.mu);
    free(ring);
    return rc;
}

void log_stop(void)
{
    ctx_mutex_lock(&g.mu);
    if (g.state != LOG_ST_RUNNING) {
        ctx_mutex_unlock(&g.mu);
        return;
    }
    g.state = LOG_ST_STOPPING;
    g.stop = true;
    atomic_store(&sink.stopping, true);
    writer_kick_locked();
    /* The writer gives up by itself after LOG_STOP_STALL_MS without progress; it only fails to
     * when it is stuck inside a blocking write (stderr), which this bound catches. */
    uint64_t asked = now_ns();
    while (!g.writer_exited) {
        uint64_t p = atomic_load(&sink.progress_ns) + LOG_STOP_STALL_MS * MS;
        /* Past that the writer notices within one backoff or poll; give it a second more. */
        uint64_t limit = (p > asked ? p : asked) + (LOG_RETRY_MAX_MS + 1000) * MS;
        if (now_ns() >= limit)
            break;
        cond_wait_until(&g.done_cv, limit);
    }
    if (!g.writer_exited) {
        g.abandoned = true; /* ring and descriptor stay: the writer may still touch them */
        g.state = LOG_ST_OFF;
        ctx_cond_broadcast(&g.space_cv);
        ctx_cond_broadcast(&g.done_cv);
        ctx_mutex_unlock(&g.mu);
        pthread_detach(g.writer);
        say("spindle: log: %s takes nothing; stopped without it (lines may be lost)\n",
            sink_name());
        return;
    }
    ctx_mutex_unlock(&g.mu);

    int rc = pthread_join(g.writer, NULL);
    if (rc != 0)
        abort(); /* broken invariant: the writer is ours and joined once */
    uint64_t lost = atomic_load(&st.lost);
    if (lost > 0)
        say("spindle: log: %llu lines lost in all writing to %s (last: %s)\n",
            (unsigned long long)lost, sink_name(), lost_why_text(g.lost_why));

    ctx_mutex_lock(&g.mu);
    int fd = atomic_exchange(&V.fd, -1);
    char *ring = g.ring;
    atomic_store(&V.ring, NULL);
    g.ring = NULL;
    if (g.own_fd)
        close(fd);
    g.own_fd = false;
    ctx_mutex_unlock(&g.mu);
    free(ring);
}

int log_flush(void)
{
    ctx_mutex_lock(&g.mu);
    if (g.state == LOG_ST_OFF) {
        ctx_mutex_unlock(&g.mu);
        return -ESHUTDOWN;
    }
    bool written = wait_written_locked(atomic_load(&V.head));
    ctx_mutex_unlock(&g.mu);
    return written ? 0 : -EIO;
}

/* mu held: hand `fd` to the writer with the current head as the boundary. No wait for the switch:
 * a stalled sink must not hold the caller (the event loop). A reopen still pending is replaced
 * (its file has received nothing) and keeps its boundary. */
static int reopen_handoff_locked(int fd)
{
    if (g.state == LOG_ST_OFF)
        return -ESHUTDOWN;
    if (g.reopen_fd >= 0) {
        close(g.reopen_fd);
    } else {
        g.reopen_pos = atomic_load(&V.head);
        g.reopen_lines = g.lines_enq;
    }
    g.reopen_fd = fd;
    writer_kick_locked();
    return 0;
}

int log_reopen(void)
{
    char path[PATH_MAX];
    int rc = 0;

    ctx_mutex_lock(&g.reopen_mu);
    ctx_mutex_lock(&g.mu);
    if (g.state == LOG_ST_OFF)
        rc = -ESHUTDOWN;
    memcpy(path, g.path, sizeof(path));
    ctx_mutex_unlock(&g.mu);
    if (rc < 0 || path[0] == '\0')
        goto out; /* stderr is never reopened */

    /* Open outside the ring mutex: producers keep going while the file system works. */
    int fd = open_path(path, false);
    if (fd < 0) {
        rc = fd;
        goto out;
    }
    ctx_mutex_lock(&g.mu);
    rc = reopen_handoff_locked(fd);
    ctx_mutex_unlock(&g.mu);
    if (rc < 0)
        close(fd);
out:
    ctx_mutex_unlock(&g.reopen_mu);
    return rc;
}
