/* ctx.h - request context: values, deadline, cancellation tree, thread-local current.
 *
 * A context carries what identifies a request (request id, tenant, W3C trace context) and what
 * bounds it (a deadline on CLOCK_MONOTONIC and a cancellation state) across threads and into every
 * log line it causes. Contexts form a tree: a child holds a reference to its parent, inherits its
 * values and deadline, and is cancelled when the parent is (also when the child is made after the
 * cancel). The first reason wins.
 *
 * Threads: every function here may be called from any thread. Values (request id, tenant, trace)
 * are set by the creator before the context is shared (published by the reference hand-off) and
 * are read-only afterwards. The cancel state is atomic.
 *
 * Errors: actions return 0 or a negative errno; constructors return NULL on failure.
 */
#ifndef SPINDLE_CTX_H
#define SPINDLE_CTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ctx;

/* Why a context was cancelled. CTX_REASON_NONE means "not cancelled". */
enum ctx_reason {
    CTX_REASON_NONE = 0,
    CTX_REASON_CANCELED,       /* explicit cancel without a more precise reason */
    CTX_REASON_CLIENT_CLOSED,  /* the client went away */
    CTX_REASON_DEADLINE,       /* the deadline passed */
    CTX_REASON_SHUTDOWN,       /* the server is stopping */
    CTX_REASON_SIBLING_FAILED, /* a sibling in a fan-out failed (batch all) */
    CTX_REASON_SIBLING_WON,    /* a sibling in a fan-out won (batch any/race) */
    CTX_REASON__COUNT
};

/* Stable lower-case name ("client_closed", "deadline", ...); "none" for CTX_REASON_NONE and
 * "unknown" for out-of-range values. Never NULL. */
const char *ctx_reason_name(enum ctx_reason reason);

/* ---- lifetime ---------------------------------------------------------------------------- */

/* A new root context (no parent, no deadline, no values): the server's root. New reference
 * (count 1). NULL on out of memory. */
struct ctx *ctx_new_root(void);

/* A new child of `parent` (borrowed; the child takes its own reference to it). The child copies
 * the parent's request id, tenant and trace context (with the same span id until the caller sets
 * one) and inherits its deadline. If the parent is already cancelled the child is born cancelled
 * with the parent's reason. New reference. NULL on out of memory. */
struct ctx *ctx_new_child(struct ctx *parent);

/* Take a reference; returns `c`. */
struct ctx *ctx_ref(struct ctx *c);

/* Drop a reference; the last one frees the context and drops its reference to the parent.
 * ctx_unref(NULL) is a no-op. */
void ctx_unref(struct ctx *c);

/* ---- values (set before the context is shared; read-only afterwards) ---------------------- */

#define CTX_REQUEST_ID_MAX 128 /* bytes, visible ASCII only (0x21..0x7e: no space) */
#define CTX_TENANT_MAX     64  /* bytes, [A-Za-z0-9._-] */

/* Copy `id` (len bytes, borrowed) in. -EINVAL unless ctx_request_id_valid(). */
int ctx_set_request_id(struct ctx *c, const char *id, size_t len);
/* The request id, NUL-terminated, "" when unset. Borrowed, lives as long as `c`. */
const char *ctx_request_id(const struct ctx *c);

/* Copy `tenant` (len bytes, borrowed) in. -EINVAL unless ctx_tenant_valid(). */
int ctx_set_tenant(struct ctx *c, const char *tenant, size_t len);
/* The tenant, NUL-terminated, "" when unset. Borrowed, lives as long as `c`. */
const char *ctx_tenant(const struct ctx *c);

/* True when `id` is 1..CTX_REQUEST_ID_MAX bytes of visible ASCII (0x21..0x7e; a space is
 * refused: HTTP trims it at the ends of a header value, and it splits the id in logs and shells).
 */
bool ctx_request_id_valid(const char *id, size_t len);
/* True when `t` is 1..CTX_TENANT_MAX bytes of [A-Za-z0-9._-]. */
bool ctx_tenant_valid(const char *t, size_t len);

/* Write a new unique request id (NUL-terminated, at most CTX_REQUEST_ID_MAX bytes) into `buf`
 * of `size` bytes; returns its length, or 0 when size is too small (needs at least 33). Unique
 * within and across processes with overwhelming probability; no system call per id. */
size_t ctx_request_id_generate(char *buf, size_t size);

/* ---- W3C trace context --------------------------------------------------------------------- */

struct ctx_trace {
    uint8_t trace_id[16];
    uint8_t span_id[8]; /* this request's own span (parent-id in an outgoing traceparent) */
    uint8_t flags;
};

#define CTX_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

/* Parse a traceparent header value (len bytes, borrowed). Accepts only version 00 in the exact
 * format, lower-case hex, non-zero trace and parent ids. The parent id is stored in span_id.
 * Returns 0 or -EINVAL (and leaves *out unspecified). */
int ctx_trace_parse(const char *s, size_t len, struct ctx_trace *out);

/* Format as a traceparent value into buf (at least CTX_TRACEPARENT_LEN + 1 bytes); returns
 * CTX_TRACEPARENT_LEN, or 0 when the buffer is too small. */
size_t ctx_trace_format(const struct ctx_trace *t, char *buf, size_t size);

/* Fill *out with a new random trace id and span id, flags 01 (sampled). */
void ctx_trace_new(struct ctx_trace *out);
/* Fill `span_id` with a new random non-zero span id. */
void ctx_span_new(uint8_t span_id[8]);

/* Store the trace context of `c` (set before sharing). */
void ctx_set_trace(struct ctx *c, const struct ctx_trace *t);
/* Borrowed view of the trace context of `c`. */
const struct ctx_trace *ctx_trace(const struct ctx *c);
/* Lower-case hex of the trace id (32 chars) and span id (16 chars), NUL-terminated, "" when no
 * trace was set. Borrowed, lives as long as `c`. */
const char *ctx_trace_id_hex(const struct ctx *c);
const char *ctx_span_id_hex(const struct ctx *c);

/* Make `c` (a child, before it is shared) a span of its own inside its parent's: a new random span
 * id, the previous one kept as its parent span id. No-op when `c` has no trace. */
void ctx_span_start(struct ctx *c);
/* Lower-case hex (16 chars) of the span `c` was started in by ctx_span_start(), "" when none.
 * Inherited by children. Borrowed, lives as long as `c`. */
const char *ctx_parent_span_id_hex(const struct ctx *c);

/* The position of `c` among the siblings of a fan-out (a batch's sub-jobs), for the logs. Set
 * before the context is shared; inherited by children. */
void ctx_set_index(struct ctx *c, unsigned index);
/* The index set by ctx_set_index(), -1 when none. */
long ctx_index(const struct ctx *c);

#define CTX_TASK_ID_MAX 64 /* bytes, same alphabet as a request id */

/* The durable task and attempt number (>= 1) a context runs, for the logs (task_id, attempt).
 * Set before the context is shared; inherited by children. -EINVAL unless `id` (len bytes,
 * borrowed) is 1..CTX_TASK_ID_MAX visible ASCII bytes. */
int ctx_set_task(struct ctx *c, const char *id, size_t len, unsigned attempt);
/* The task id, NUL-terminated, "" when none. Borrowed, lives as long as `c`. */
const char *ctx_task_id(const struct ctx *c);
/* The attempt set by ctx_set_task(), 0 when none. */
unsigned ctx_task_attempt(const struct ctx *c);

/* ---- deadline ------------------------------------------------------------------------------ */

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t ctx_now_ns(void);

/* Set the deadline (absolute, ctx_now_ns() scale; 0 = none). A child never outlives its parent's
 * deadline: the effective deadline is the earlier of the two. Setting the deadline does not arm
 * a timer; whoever owns the context (the loop) arms one and calls ctx_cancel(c, DEADLINE). */
void ctx_set_deadline(struct ctx *c, uint64_t deadline_ns);
/* Effective deadline, 0 when none. */
uint64_t ctx_deadline(const struct ctx *c);
/* True when a deadline is set and now_ns is at or past it. */
bool ctx_expired(const struct ctx *c, uint64_t now_ns);

/* ---- cancellation -------------------------------------------------------------------------- */

/* Cancel `c` and every descendant (existing and future) with `reason` (not NONE). The first
 * reason wins. On-cancel callbacks of every context cancelled by this call run on the calling
 * thread, once, with no lock held, before ctx_cancel returns.
 * Returns 0, or -EALREADY when `c` was already cancelled, -EINVAL for CTX_REASON_NONE. */
int ctx_cancel(struct ctx *c, enum ctx_reason reason);

/* True when `c` has been cancelled (by itself or through an ancestor). A few atomic loads at most;
 * cheap enough for a CPU loop. Does not read the clock: deadlines become cancellation when the
 * owner's timer fires (use ctx_expired() to test the clock). */
bool ctx_cancelled(const struct ctx *c);

/* The cancel reason, CTX_REASON_NONE while not cancelled. */
enum ctx_reason ctx_err(const struct ctx *c);

typedef void ctx_cancel_fn(struct ctx *c, enum ctx_reason reason, void *arg);

/* An on-cancel registration, embedded by the caller. Fields are private. */
struct ctx_watch {
    struct ctx_watch *next, *prev;
    ctx_cancel_fn *fn;
    void *arg;
    struct ctx *owner;
    int state; /* private */
};

/* Register `w` (caller-owned; must stay valid until it fired or was removed) to run fn(c, reason,
 * arg) once when `c` is cancelled. Returns 0, or -ECANCELED when `c` is already cancelled (fn is
 * not called; the caller acts on it itself). */
int ctx_watch_add(struct ctx *c, struct ctx_watch *w, ctx_cancel_fn *fn, void *arg);

/* Unregister `w`. Returns true when it was removed before firing (fn will never run), false when
 * it has already run or was never added. If fn is running on another thread at that moment, waits
 * for it to return, so after ctx_watch_remove() the caller may free `arg`. May be called from
 * inside fn itself (then it does not wait). */
bool ctx_watch_remove(struct ctx_watch *w);

/* ---- thread-local current context ---------------------------------------------------------- */

/* The calling thread's current context (borrowed), NULL when none. */
struct ctx *ctx_current(void);

/* Make `c` (borrowed; may be NULL) current on this thread; returns the previous current context,
 * to be given back to ctx_leave(). The caller keeps `c` alive while it is current. */
struct ctx *ctx_enter(struct ctx *c);

/* Restore `prev` (the value ctx_enter() returned) as current. */
void ctx_leave(struct ctx *prev);

#endif
