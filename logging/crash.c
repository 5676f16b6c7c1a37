/* crash.c - last-gasp flush of the log when the process dies of a fatal signal.
 *
 * Design: on SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT the handler (on an alternate stack, so a
 * stack overflow can still be reported) takes the writer's `token` for good, then write()s the
 * ring bytes in [wpos, head) straight to the log descriptor, appends one line naming the signal,
 * restores the default action and re-raises. Only async-signal-safe calls are made: atomics,
 * write(), nanosleep(), clock_gettime(), sigaction(), raise(); the line is formatted by format.c,
 * which takes no lock and allocates nothing.
 *
 * Concurrency with the writer thread: the writer holds the token only around each write() and
 * advances wpos before it lets go, so once the handler owns the token wpos is exactly where the
 * file ends and no byte is written twice. If the writer is stuck inside a write (a full pipe), the
 * handler gives up waiting after about a second and writes anyway: a duplicate is better than a
 * loss. A producer that crashes while holding the ring mutex is no problem: the handler takes no
 * lock, and head only moves once a line is completely copied. What the handler cannot save is a
 * line still being formatted on some thread's scratch buffer.
 *
 * Alternate stacks are per thread: log_install_crash_handlers() gives one to the calling thread,
 * and every other thread gets one the first time it logs (freed when it exits), unless it already
 * has one (sanitizer runtimes install their own).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "logging/internal.h"

_Atomic bool log_crash_installed_;

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define N_SIGNALS  (sizeof(crash_signals) / sizeof(crash_signals[0]))
#define ALT_STACK  (64u << 10)
#define TOKEN_WAIT 1000 /* times 1 ms */

static atomic_flag crash_once = ATOMIC_FLAG_INIT;
static char crash_line[LOG_FMT_BUF]; /* used by the first crashing thread only */
static char main_alt_stack[ALT_STACK];
static pthread_key_t alt_key;
static pthread_once_t alt_key_once = PTHREAD_ONCE_INIT;

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGFPE:
        return "SIGFPE";
    case SIGILL:
        return "SIGILL";
    case SIGABRT:
        return "SIGABRT";
    default:
        return "unknown";
    }
}

static void raw_write(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n == 0 || errno != EINTR) {
            return;
        }
    }
}

/* Take the token from the writer (for good). Waits a bounded time; never on the writer itself,
 * which cannot be holding it while it runs this handler between two writes. */
static void token_claim(void)
{
    atomic_store(&log_ring_view_.crashed, true);
    if (log_on_writer_thread()) {
        atomic_store(&log_ring_view_.token, 1);
        return;
    }
    for (int i = 0; i < TOKEN_WAIT; i++) {
        if (atomic_exchange(&log_ring_view_.token, 1) == 0)
            return;
        struct timespec ms = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&ms, NULL);
    }
}

/* Write the pending ring bytes, then return the descriptor (-1 when the logger is not running:
 * lines went out synchronously then, and stderr gets the signal line). */
static int flush_pending(void)
{
    char *ring = atomic_load(&log_ring_view_.ring);
    int fd = atomic_load(&log_ring_view_.fd);
    if (ring == NULL || fd < 0)
        return STDERR_FILENO;
    size_t cap = atomic_load(&log_ring_view_.cap);
    uint64_t from = atomic_load(&log_ring_view_.wpos), to = atomic_load(&log_ring_view_.head);
    if (to - from > cap)
        return fd; /* torn view: never read outside the ring */
    while (from < to) {
        size_t off = (size_t)(from % cap), len = (size_t)(to - from);
        if (len > cap - off)
            len = cap - off;
        raw_write(fd, ring + off, len);
        from += len;
    }
    atomic_store(&log_ring_view_.wpos, to);
    return fd;
}

static void write_signal_line(int fd, int sig)
{
    struct timespec ts;
    size_t nlen = 0;
    const char *name = log_thread_name_cached(&nlen);
    clock_gettime(CLOCK_REALTIME, &ts);
    struct log_field f[] = {LOG_INT("signal", sig), LOG_STR("signal_name", signal_name(sig))};
    struct log_line_head h = {
        .level = LOG_LEVEL_FATAL,
        .msg = "fatal signal",
        .thread = name ? name : "unknown",
        .thread_len = name ? nlen : strlen("unknown"),
        .ctx = ctx_current(),
        .sec = ts.tv_sec,
        .usec = (uint32_t)(ts.tv_nsec / 1000),
    };
    size_t len = log_fmt_line(crash_line, &h, f, 2);
    raw_write(fd, crash_line, len);
}

static void crash_handler(int sig, siginfo_t *info, void *uctx)
{
    (void)info;
    (void)uctx;
    if (!atomic_flag_test_and_set(&crash_once)) {
        token_claim();
        int fd = flush_pending();
        write_signal_line(fd, sig);
    }
    /* Default action, then re-raise: delivered as soon as the handler returns (the signal is
     * blocked while it runs), and a faulting instruction would fault again anyway. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

static void alt_stack_free(void *mem)
{
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    free(mem);
}

static void alt_key_create(void)
{
    if (pthread_key_create(&alt_key, alt_stack_free) != 0)
        abort(); /* only fails when the process is out of keys at start-up */
}

/* True when the calling thread already runs signal handlers on an alternate stack. */
static bool has_alt_stack(void)
{
    stack_t cur;
    return sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE);
}

void log_crash_thread_setup(void)
{
    if (has_alt_stack())
        return;
    pthread_once(&alt_key_once, alt_key_create);
    void *mem = malloc(ALT_STACK);
    if (mem == NULL)
        return; /* handlers still run, on the thread's own stack */
    stack_t ss = {.ss_sp = mem, .ss_size = ALT_STACK};
    if (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(alt_key, mem) != 0) {
        alt_stack_free(mem);
        return;
    }
}

void log_install_crash_handlers(void)
{
    if (!has_alt_stack()) {
        stack_t ss = {.ss_sp = main_alt_stack, .ss_size = sizeof(main_alt_stack)};
        (void)sigaltstack(&ss, NULL); /* best effort: handlers work without it */
    }
    struct sigaction sa = {.sa_sigaction = crash_handler, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_SIGNALS; i++)
        sigaddset(&sa.sa_mask, crash_signals[i]);
    for (size_t i = 0; i < N_SIGNALS; i++)
        sigaction(crash_signals[i], &sa, NULL);
    atomic_store(&log_crash_installed_, true);
}
