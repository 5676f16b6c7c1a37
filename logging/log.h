/* log.h - structured JSON-lines logger with its own writer thread.
 *
 * Every line is one JSON object: ts (RFC 3339 UTC, microseconds), level, msg, thread, then
 * request_id, tenant, trace_id, span_id when a context is current (ctx_current()), then the call's
 * typed fields in order. Callers format on their own thread into a bounded buffer; one writer
 * thread writes batches with writev() to the file (or stderr). Lossless by default: a producer
 * waits when the buffer is full and the wait is counted. With the drop policy, lines that do not
 * fit are counted and reported in a later line, never silently lost.
 *
 * A broken sink (a write fails: ENOSPC, EIO, EPIPE, ...) or a stalled one (nothing written for
 * LOG_STALL_MS: a FIFO nobody reads) never hangs the process and never loses lines silently: the
 * writer says so on stderr at once (then at most every LOG_STDERR_EVERY_MS), counts each failed
 * write, and retries the same bytes with backoff (LOG_RETRY_MIN_MS doubling up to
 * LOG_RETRY_MAX_MS); the buffer keeps the oldest lines. While the sink is broken or stalled a
 * line that does not fit is lost at once instead of waiting (counted in `lost`); once the sink
 * takes bytes again, the writer adds {"level":"error","msg":"log lines lost","lost":N,...}.
 * A thread may bound its own wait for space (log_thread_wait_max_set(): the event loop).
 *
 * Threads: every function may be called from any thread unless it says otherwise. Before
 * log_start() and after log_stop(), lines are formatted and written directly to stderr (or the
 * configured file) by the caller, so nothing is lost at start-up or exit.
 */
#ifndef SPINDLE_LOG_H
#define SPINDLE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
    LOG_LEVEL_TRACE = 0,
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
    LOG_LEVEL_FATAL,
    LOG_LEVEL__COUNT
};

/* "trace", "debug", ...; "unknown" when out of range. */
const char *log_level_name(enum log_level level);
/* Parse a level name (case-insensitive). Returns 0 or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out);

enum log_ftype {
    LOG_FT_STR,  /* v.s: NUL-terminated string (NULL prints null) */
    LOG_FT_STRN, /* v.s with len bytes (not necessarily NUL-terminated) */
    LOG_FT_INT,  /* v.i */
    LOG_FT_UINT, /* v.u */
    LOG_FT_DBL,  /* v.d (non-finite prints null) */
    LOG_FT_BOOL, /* v.b */
    LOG_FT_DUR,  /* v.u nanoseconds, printed as milliseconds with 3 decimals (key as given) */
};

/* One typed field. Values are borrowed for the duration of the call only. */
struct log_field {
    const char *key;
    enum log_ftype type;
    size_t len;
    union {
        const char *s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
};

#define LOG_STR(k, x) ((struct log_field){.key = (k), .type = LOG_FT_STR, .v.s = (x)})
#define LOG_STRN(k, x, n)                                                                          \
    ((struct log_field){.key = (k), .type = LOG_FT_STRN, .len = (n), .v.s = (x)})
#define LOG_INT(k, x)  ((struct log_field){.key = (k), .type = LOG_FT_INT, .v.i = (int64_t)(x)})
#define LOG_UINT(k, x) ((struct log_field){.key = (k), .type = LOG_FT_UINT, .v.u = (uint64_t)(x)})
#define LOG_DBL(k, x)  ((struct log_field){.key = (k), .type = LOG_FT_DBL, .v.d = (double)(x)})
#define LOG_BOOL(k, x) ((struct log_field){.key = (k), .type = LOG_FT_BOOL, .v.b = (x)})
#define LOG_DUR(k, ns) ((struct log_field){.key = (k), .type = LOG_FT_DUR, .v.u = (uint64_t)(ns)})

/* Limits: no value is written longer than this many bytes (cut, with "...(truncated)" marker),
 * and no line longer than LOG_LINE_MAX (fields past it are dropped and "truncated":true added). */
#define LOG_VALUE_MAX 4096
#define LOG_LINE_MAX  16384

enum log_policy {
    LOG_POLICY_BLOCK = 0, /* producers wait for space (lossless); waits are counted */
    LOG_POLICY_DROP,      /* lines that do not fit are dropped, counted and reported */
};

struct log_config {
    const char *path;     /* borrowed during log_start(); NULL or "" or "-" = stderr */
    enum log_level level; /* lines below it are skipped before formatting */
    size_t buffer_bytes;  /* bound on bytes queued for the writer (>= 64 KiB) */
    enum log_policy policy;
};

struct log_stats {
    uint64_t lines;   /* lines accepted for writing */
    uint64_t written; /* lines the writer has written */
    uint64_t waits;   /* times a producer had to wait for buffer space */
    uint64_t dropped; /* lines dropped by the drop policy */
    uint64_t bytes;   /* bytes written */
    uint64_t errors;  /* failed write calls (each retry that fails counts again) */
    uint64_t lost;    /* lines lost to a broken or stalled sink, or to a thread's wait bound */
};

/* Bounds for a broken or stalled sink (see the top of this file). */
#define LOG_STALL_MS        5000 /* no progress this long: waiting producers give up */
#define LOG_STOP_STALL_MS   2000 /* log_stop() gives up on a sink without progress this long */
#define LOG_RETRY_MIN_MS    10
#define LOG_RETRY_MAX_MS    500
#define LOG_STDERR_EVERY_MS 10000

/* Open the log file (O_APPEND|O_CREAT, 0644), start the writer thread. Call once, from the main
 * thread, with all signals blocked in the thread that calls it (the writer inherits the mask).
 * Returns 0, -EALREADY, or a negative errno from open() or pthread_create(). */
int log_start(const struct log_config *cfg);

/* Write every line enqueued before the call, stop and join the writer, close the file. Later lines
 * go straight to the file descriptor (still lossless). Safe when not started. Bounded: when the
 * sink has taken nothing for LOG_STOP_STALL_MS, what is left is given up (counted in `lost` and
 * said on stderr); a writer stuck inside a blocking write (stderr on a pipe nobody reads) is then
 * left behind, and log_start() refuses to run again (-EBUSY). */
void log_stop(void);

/* Block until every line enqueued before the call has been written. Returns 0, -ESHUTDOWN when
 * not started, or -EIO when the sink is broken or stalled (the lines stay queued). */
int log_flush(void);

/* Reopen the file by path (after rotation); lines enqueued before the call go to the old file,
 * later ones to the new. Does not wait for the writer (the event loop calls it): the switch
 * happens when the writer reaches that point; a second reopen before then replaces the first
 * (which would have received nothing). A FIFO is opened without waiting for a reader (-ENXIO).
 * Returns 0 or a negative errno from open() (the old file stays open on failure), -ESHUTDOWN. */
int log_reopen(void);

/* The path of the log file (borrowed, "" for stderr): valid until the next log_start(). */
const char *log_path(void);

/* Bound the calling thread's wait for buffer space under the block policy: after `max_ns`, or at
 * once when the sink has taken nothing since this thread last gave up, a line that still does not
 * fit is lost (counted in `lost`, reported). UINT64_MAX (the default) waits as long as the sink
 * makes progress (LOG_STALL_MS). For threads that must never stall on the log: the event loop. */
void log_thread_wait_max_set(uint64_t max_ns);

/* Current level; change it at any time (atomic). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

extern _Atomic int log_level_current_; /* private: read by log_enabled() */

/* True when a line at `level` would be written: one relaxed atomic load. */
static inline bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_level_current_, memory_order_relaxed);
}

/* Format and enqueue one line (fields borrowed for the call). Use the macros below. */
void log_write(enum log_level level, const char *msg, const struct log_field *fields, size_t n);

/* Counters since log_start(). */
void log_stats_get(struct log_stats *out);

/* Install handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT that write out every line
 * already formatted (async-signal-safe), then re-raise the signal with its default action. */
void log_install_crash_handlers(void);

/* Set the name logged as "thread" for the calling thread (and pthread_setname_np, cut to 15
 * bytes). Threads that never call it are named by pthread_getname_np(). */
void log_thread_name_set(const char *name);

/* Macros: arguments are not evaluated below the current level. */
#define LOG_AT(level, msg, ...)                                                                    \
    do {                                                                                           \
        if (log_enabled(level)) {                                                                  \
            const struct log_field log_f_[] = {{.key = NULL}, __VA_ARGS__};                        \
            log_write((level), (msg), log_f_ + 1, sizeof(log_f_) / sizeof(log_f_[0]) - 1);         \
        }                                                                                          \
    } while (0)

#define LOG_T(msg, ...) LOG_AT(LOG_LEVEL_TRACE, msg, __VA_ARGS__)
#define LOG_D(msg, ...) LOG_AT(LOG_LEVEL_DEBUG, msg, __VA_ARGS__)
#define LOG_I(msg, ...) LOG_AT(LOG_LEVEL_INFO, msg, __VA_ARGS__)
#define LOG_W(msg, ...) LOG_AT(LOG_LEVEL_WARN, msg, __VA_ARGS__)
#define LOG_E(msg, ...) LOG_AT(LOG_LEVEL_ERROR, msg, __VA_ARGS__)
/* A fatal line is written and flushed to the file before LOG_F returns (the caller then aborts). */
#define LOG_F(msg, ...) LOG_AT(LOG_LEVEL_FATAL, msg, __VA_ARGS__)

#endif
