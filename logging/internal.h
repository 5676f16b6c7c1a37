/* internal.h - private interfaces shared by logging/log.c, logging/format.c and logging/crash.c.
 *
 * format.c turns one call into one JSON line (pure functions, no locks, no allocation, no
 * locale: also usable from a signal handler). log.c owns the ring buffer and the writer thread.
 * crash.c reads the ring through struct log_ring_view to write out what is pending when the
 * process is about to die.
 */
#ifndef SPINDLE_LOG_INTERNAL_H
#define SPINDLE_LOG_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "logging/log.h"

/* Keys are cut at this many bytes of output (same marker as values). */
#define LOG_KEY_MAX 128
/* Appended to a cut value; a cut value is at most LOG_VALUE_MAX bytes including the marker. */
#define LOG_TRUNC_MARK     "...(truncated)"
#define LOG_TRUNC_MARK_LEN (sizeof(LOG_TRUNC_MARK) - 1)
/* Thread names are logged up to this many bytes. */
#define LOG_THREAD_NAME_MAX 32
/* Size of a formatting buffer: one whole line plus room for the one field that may overflow it
 * before it is rolled back. log_fmt_line() never writes more than this. */
#define LOG_FMT_BUF (LOG_LINE_MAX + LOG_KEY_MAX + LOG_VALUE_MAX + 64)

/* Per-thread cache of the formatted date and time up to the second ("2026-11-22T03:04:05"). */
struct log_ts_cache {
    int64_t sec; /* the second the text belongs to; -1 when empty */
    char text[24];
};

/* What goes before the call's fields. */
struct log_line_head {
    enum log_level level;
    const char *msg;    /* NULL prints null */
    const char *thread; /* thread name, thread_len bytes */
    size_t thread_len;
    const struct ctx *ctx;         /* NULL: no context fields */
    int64_t sec;                   /* wall clock time, seconds since the epoch (UTC) */
    uint32_t usec;                 /* and microseconds */
    struct log_ts_cache *ts_cache; /* NULL: format the date without a cache */
};

/* Escape `len` bytes of `s` as the inside of a JSON string into `out` (RFC 8259: quote,
 * backslash and control characters escaped; invalid UTF-8, overlong forms, surrogates and code
 * points above U+10FFFF each replaced by U+FFFD). Writes at most `budget` bytes (budget must be
 * at least LOG_TRUNC_MARK_LEN + 6); a value that does not fit is cut on a character boundary and
 * ends with LOG_TRUNC_MARK. Returns the number of bytes written. Async-signal-safe. */
size_t log_json_escape(char *out, size_t budget, const char *s, size_t len);

/* Format the RFC 3339 timestamp (27 bytes, "2026-11-22T03:04:05.123456Z", no NUL) into out.
 * Uses and refreshes *cache when not NULL. Returns 27. Async-signal-safe without a cache. */
size_t log_fmt_ts(char *out, int64_t sec, uint32_t usec, struct log_ts_cache *cache);

/* Format one complete line, newline included, into out (LOG_FMT_BUF bytes). The result is at
 * most LOG_LINE_MAX bytes: fields that do not fit are left out and "truncated":true is added.
 * Returns the length. Async-signal-safe (reads the context's immutable values only). */
size_t log_fmt_line(char *out, const struct log_line_head *head, const struct log_field *fields,
                    size_t n);

/* ---- shared with crash.c ------------------------------------------------------------------ */

/* The ring as the crash handler sees it. Positions are byte counts since log_start() (they never
 * wrap); the byte at position p lives at ring[p % cap]. Bytes in [wpos, head) are formatted and
 * not yet written. Whoever holds `token` (the writer around each write, the crash handler for
 * good) is the only one writing ring bytes to the file. */
struct log_ring_view {
    _Atomic(char *) ring; /* NULL while not started */
    _Atomic size_t cap;
    _Atomic uint64_t head; /* end of enqueued bytes (stored under the ring mutex) */
    _Atomic uint64_t wpos; /* end of bytes written (stored by the token holder) */
    _Atomic int fd;        /* where the writer writes; -1 while not started */
    _Atomic int token;     /* 1 while someone writes ring bytes */
    _Atomic bool crashed;  /* set by the crash handler; the writer then stops writing */
};

extern struct log_ring_view log_ring_view_;

/* The calling thread's cached name (*len bytes), or NULL when it was never looked up. Does not
 * call into the system: safe in a signal handler. */
const char *log_thread_name_cached(size_t *len);

/* True on the writer thread. */
bool log_on_writer_thread(void);

/* Called by crash.c on each thread that logs, once handlers are installed (alternate stack). */
extern _Atomic bool log_crash_installed_;
void log_crash_thread_setup(void);

/* Test seam: when set, called (with the ring mutex held) each time a producer is about to wait
 * for buffer space. Must not log. */
extern void (*log_test_wait_hook)(void);

#endif
