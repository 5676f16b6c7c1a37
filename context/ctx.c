/* ctx.c - request contexts: lifetime, values, deadline, the cancellation tree, on-cancel watches
 * and the thread-local current context.
 *
 * Design
 * - Lifetime: `refs` is atomic. A child holds a strong reference to its parent (`parent`,
 *   immutable) and sits in the parent's list of live children (`children`, `sib_prev/next`,
 *   `linked`, all guarded by the parent's lock) from creation until its count reaches zero; the
 *   free unlinks it under the parent's lock and then drops the parent reference, iteratively, so
 *   a long chain never recurses.
 * - Cancellation is pushed down eagerly, so ctx_cancelled() is one acquire load of `reason`.
 *   `reason` is written once, from NONE, under the context's own lock, in the same critical
 *   section that collects its live children: a child linked before that moment is collected, a
 *   child made after it sees the reason and is born cancelled (never linked). A new child also
 *   looks at the reasons of its further ancestors (lock-free loads), so a child made while a
 *   cancellation is still travelling down towards its parent is born cancelled too. A child
 *   whose count is already zero is being freed and is skipped: a reference is only taken from a
 *   non-zero count. Collected children wait on an intrusive stack (`cancel_next`, written only
 *   by the one thread that cancels their parent, which happens once), so ctx_cancel() neither
 *   allocates nor recurses. A descendant that someone else cancelled first is left to that
 *   canceller.
 * - Watches: an armed watch sits in `watches` (owner's lock). The cancelling thread pops them one
 *   at a time under the lock, marks the watch fired and `firing`, runs the callback unlocked,
 *   then clears `firing` and broadcasts `fired_cv`. It never touches a watch after its callback
 *   returned (the callback may free it). ctx_watch_remove() unlinks an armed watch, or waits on
 *   `fired_cv` while its callback runs on another thread; a per-thread stack of the callbacks the
 *   thread is running lets it return at once from inside the callback (also when nested). A
 *   watch is zero-initialised or static before its first ctx_watch_add(); whoever removes it holds
 *   a reference to the context. Firing order among one context's watches is unspecified.
 * - Values (request id, tenant, trace) are written by the creator before the context is shared
 *   and read-only afterwards. The own deadline is a relaxed atomic so that a late
 *   ctx_set_deadline() is not a data race; the effective deadline is the minimum over the chain.
 * Locks: each context has one mutex; no code holds two at once (a child's free takes only the
 * parent's, cancellation takes each context's in turn), so there is no lock order to keep. No
 * callback runs with a lock held.
 */
#include "context/ctx.h"
#include "context/internal.h"
#include "context/lock.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum watch_state {
    WATCH_IDLE = 0, /* never added, removed, or refused */
    WATCH_ARMED,    /* in owner->watches */
    WATCH_FIRED,    /* popped by the canceller: its callback runs or ran */
    WATCH_ORPHANED, /* its context was freed while it was armed */
};

struct ctx {
    atomic_uint refs;
    atomic_int reason;            /* enum ctx_reason; written once, under `lock` */
    struct ctx *parent;           /* strong reference; NULL for a root */
    pthread_mutex_t lock;         /* guards children, watches, firing, reason writes */
    pthread_cond_t fired_cv;      /* a callback of this context returned */
    struct ctx *children;         /* live children (lock) */
    struct ctx *sib_prev;         /* in parent->children (parent->lock) */
    struct ctx *sib_next;         /* in parent->children (parent->lock) */
    bool linked;                  /* in parent->children (parent->lock) */
    struct ctx *cancel_next;      /* ctx_cancel() work stack (the parent's canceller) */
    struct ctx_watch *watches;    /* armed watches (lock) */
    struct ctx_watch *firing;     /* watch whose callback runs now (lock) */
    _Atomic uint64_t deadline_ns; /* own deadline, 0 = none */
    bool has_trace;
    struct ctx_trace trace;
    char request_id[CTX_REQUEST_ID_MAX + 1];
    char tenant[CTX_TENANT_MAX + 1];
    char trace_hex[2 * sizeof(((struct ctx_trace *)0)->trace_id) + 1];
    char span_hex[2 * sizeof(((struct ctx_trace *)0)->span_id) + 1];
    char parent_span_hex[2 * sizeof(((struct ctx_trace *)0)->span_id) + 1];
    long index; /* position among fan-out siblings, -1 = none */
    char task_id[CTX_TASK_ID_MAX + 1];
    unsigned task_attempt; /* 0 = not a task's attempt */
};

/* A callback this thread is running; frames live on the stack of fire_watches(). */
struct firing_frame {
    const struct ctx_watch *w;
    struct firing_frame *prev;
};

static _Thread_local struct ctx *tls_current;
static _Thread_local struct firing_frame *tls_firing;

static const char *const reason_names[CTX_REASON__COUNT] = {
    [CTX_REASON_NONE] = "none",
    [CTX_REASON_CANCELED] = "canceled",
    [CTX_REASON_CLIENT_CLOSED] = "client_closed",
    [CTX_REASON_DEADLINE] = "deadline",
    [CTX_REASON_SHUTDOWN] = "shutdown",
    [CTX_REASON_SIBLING_FAILED] = "sibling_failed",
    [CTX_REASON_SIBLING_WON] = "sibling_won",
};

const char *ctx_reason_name(enum ctx_reason reason)
{
    if ((unsigned)reason >= CTX_REASON__COUNT)
        return "unknown";
    return reason_names[reason];
}

/* A failing lock operation means a corrupted mutex: a broken invariant, not an error to report. */
static void ctx_lock(struct ctx *c)
{
    ctx_mutex_lock(&c->lock);
}

static void ctx_unlock(struct ctx *c)
{
    ctx_mutex_unlock(&c->lock);
}

/* ---- lifetime ---------------------------------------------------------------------------- */

static struct ctx *ctx_alloc(void)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        goto err_free;
    if (pthread_cond_init(&c->fired_cv, NULL) != 0)
        goto err_mutex;
    atomic_init(&c->refs, 1);
    atomic_init(&c->reason, CTX_REASON_NONE);
    atomic_init(&c->deadline_ns, 0);
    c->index = -1;
    return c;

err_mutex:
    pthread_mutex_destroy(&c->lock);
err_free:
    free(c);
    return NULL;
}

struct ctx *ctx_new_root(void)
{
    return ctx_alloc();
}

static void copy_values(struct ctx *dst, const struct ctx *src)
{
    memcpy(dst->request_id, src->request_id, sizeof(dst->request_id));
    memcpy(dst->tenant, src->tenant, sizeof(dst->tenant));
    dst->has_trace = src->has_trace;
    dst->trace = src->trace;
    memcpy(dst->trace_hex, src->trace_hex, sizeof(dst->trace_hex));
    memcpy(dst->span_hex, src->span_hex, sizeof(dst->span_hex));
    memcpy(dst->parent_span_hex, src->parent_span_hex, sizeof(dst->parent_span_hex));
    dst->index = src->index;
    memcpy(dst->task_id, src->task_id, sizeof(dst->task_id));
    dst->task_attempt = src->task_attempt;
}

/* The reason of the nearest cancelled ancestor, NONE when there is none. A cancellation being
 * pushed down may have reached an ancestor but not yet the parent: a child made now is born
 * cancelled all the same, so that nothing made after a thread saw an ancestor cancelled escapes. */
static int ancestor_reason(const struct ctx *c)
{
    for (struct ctx *p = (struct ctx *)c; p != NULL; p = p->parent) {
        int reason = atomic_load_explicit(&p->reason, memory_order_acquire);
        if (reason != CTX_REASON_NONE)
            return reason;
    }
    return CTX_REASON_NONE;
}

struct ctx *ctx_new_child(struct ctx *parent)
{
    if (parent == NULL)
        return NULL;
    struct ctx *c = ctx_alloc();
    if (c == NULL)
        return NULL;
    copy_values(c, parent);
    c->parent = ctx_ref(parent);

    ctx_lock(parent);
    int reason = atomic_load_explicit(&parent->reason, memory_order_relaxed);
    if (reason == CTX_REASON_NONE)
        reason = ancestor_reason(parent->parent);
    if (reason != CTX_REASON_NONE) {
        /* Not linked: the parent's one cancellation is over, nothing would ever look. */
        atomic_store_explicit(&c->reason, reason, memory_order_relaxed);
    } else {
        c->sib_next = parent->children;
        if (parent->children != NULL)
            parent->children->sib_prev = c;
        parent->children = c;
        c->linked = true;
    }
    ctx_unlock(parent);
    return c;
}

struct ctx *ctx_ref(struct ctx *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

/* A reference only from a live count: a child at zero is being freed by another thread. */
static bool ctx_try_ref(struct ctx *c)
{
    unsigned n = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while (n != 0) {
        if (atomic_compare_exchange_weak_explicit(&c->refs, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

static void unlink_from_parent(struct ctx *c)
{
    struct ctx *p = c->parent;
    ctx_lock(p);
    if (c->linked) {
        if (c->sib_prev != NULL)
            c->sib_prev->sib_next = c->sib_next;
        else
            p->children = c->sib_next;
        if (c->sib_next != NULL)
            c->sib_next->sib_prev = c->sib_prev;
        c->linked = false;
    }
    ctx_unlock(p);
}

/* Nobody else can reach `c` any more: its count is zero and it is out of its parent's list. */
static void ctx_destroy(struct ctx *c)
{
    struct ctx_watch *w = c->watches;
    while (w != NULL) {
        struct ctx_watch *next = w->next;
        w->state = WATCH_ORPHANED;
        w->owner = NULL;
        w->next = w->prev = NULL;
        w = next;
    }
    pthread_cond_destroy(&c->fired_cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void ctx_unref(struct ctx *c)
{
    while (c != NULL && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        struct ctx *parent = c->parent;
        if (parent != NULL)
            unlink_from_parent(c);
        ctx_destroy(c);
        c = parent;
    }
}

/* ---- values -------------------------------------------------------------------------------- */

int ctx_set_request_id(struct ctx *c, const char *id, size_t len)
{
    if (!ctx_request_id_valid(id, len))
        return -EINVAL;
    memcpy(c->request_id, id, len);
    c->request_id[len] = '\0';
    return 0;
}

const char *ctx_request_id(const struct ctx *c)
{
    return c->request_id;
}

int ctx_set_tenant(struct ctx *c, const char *tenant, size_t len)
{
    if (!ctx_tenant_valid(tenant, len))
        return -EINVAL;
    memcpy(c->tenant, tenant, len);
    c->tenant[len] = '\0';
    return 0;
}

const char *ctx_tenant(const struct ctx *c)
{
    return c->tenant;
}

void ctx_set_trace(struct ctx *c, const struct ctx_trace *t)
{
    c->trace = *t;
    c->has_trace = true;
    /* Formatted once here so that every log line can copy them. */
    ctx_hex_encode(t->trace_id, sizeof(t->trace_id), c->trace_hex);
    ctx_hex_encode(t->span_id, sizeof(t->span_id), c->span_hex);
}

const struct ctx_trace *ctx_trace(const struct ctx *c)
{
    return &c->trace;
}

const char *ctx_trace_id_hex(const struct ctx *c)
{
    return c->trace_hex;
}

const char *ctx_span_id_hex(const struct ctx *c)
{
    return c->span_hex;
}

void ctx_span_start(struct ctx *c)
{
    if (!c->has_trace)
        return;
    memcpy(c->parent_span_hex, c->span_hex, sizeof(c->parent_span_hex));
    ctx_span_new(c->trace.span_id);
    ctx_hex_encode(c->trace.span_id, sizeof(c->trace.span_id), c->span_hex);
}

const char *ctx_parent_span_id_hex(const struct ctx *c)
{
    return c->parent_span_hex;
}

void ctx_set_index(struct ctx *c, unsigned index)
{
    c->index = (long)index;
}

long ctx_index(const struct ctx *c)
{
    return c->index;
}

int ctx_set_task(struct ctx *c, const char *id, size_t len, unsigned attempt)
{
    if (len > CTX_TASK_ID_MAX || !ctx_request_id_valid(id, len))
        return -EINVAL;
    memcpy(c->task_id, id, len);
    c->task_id[len] = '\0';
    c->task_attempt = attempt;
    return 0;
}

const char *ctx_task_id(const struct ctx *c)
{
    return c->task_id;
}

unsigned ctx_task_attempt(const struct ctx *c)
{
    return c->task_attempt;
}

/* ---- deadline ------------------------------------------------------------------------------ */

uint64_t ctx_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void ctx_set_deadline(struct ctx *c, uint64_t deadline_ns)
{
    atomic_store_explicit(&c->deadline_ns, deadline_ns, memory_order_relaxed);
}

uint64_t ctx_deadline(const struct ctx *c)
{
    uint64_t best = 0;
    for (struct ctx *p = (struct ctx *)c; p != NULL; p = p->parent) {
        uint64_t d = atomic_load_explicit(&p->deadline_ns, memory_order_relaxed);
        if (d != 0 && (best == 0 || d < best))
            best = d;
    }
    return best;
}

bool ctx_expired(const struct ctx *c, uint64_t now_ns)
{
    uint64_t d = ctx_deadline(c);
    return d != 0 && now_ns >= d;
}

/* ---- cancellation -------------------------------------------------------------------------- */

bool ctx_cancelled(const struct ctx *c)
{
    return atomic_load_explicit(&((struct ctx *)c)->reason, memory_order_acquire) !=
           CTX_REASON_NONE;
}

enum ctx_reason ctx_err(const struct ctx *c)
{
    return (enum ctx_reason)atomic_load_explicit(&((struct ctx *)c)->reason, memory_order_acquire);
}

static bool running_here(const struct ctx_watch *w)
{
    for (const struct firing_frame *f = tls_firing; f != NULL; f = f->prev) {
        if (f->w == w)
            return true;
    }
    return false;
}

static void watch_unlink(struct ctx *c, struct ctx_watch *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        c->watches = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

/* Run every armed watch of `c` (already cancelled, so no new ones arrive) on this thread. */
static void fire_watches(struct ctx *c, enum ctx_reason reason)
{
    struct ctx_watch *w;

    ctx_lock(c);
    while ((w = c->watches) != NULL) {
        watch_unlink(c, w);
        w->state = WATCH_FIRED;
        c->firing = w;
        ctx_cancel_fn *fn = w->fn;
        void *arg = w->arg;
        ctx_unlock(c);

        struct firing_frame frame = {.w = w, .prev = tls_firing};
        tls_firing = &frame;
        fn(c, reason, arg);
        tls_firing = frame.prev;

        ctx_lock(c);
        c->firing = NULL;
        ctx_cond_broadcast(&c->fired_cv);
    }
    ctx_unlock(c);
}

/* Cancel `c` alone and push its live children (each with a reference) on *stack. False when it
 * was already cancelled: whoever did that also takes care of its subtree. */
static bool cancel_one(struct ctx *c, enum ctx_reason reason, struct ctx **stack)
{
    ctx_lock(c);
    if (atomic_load_explicit(&c->reason, memory_order_relaxed) != CTX_REASON_NONE) {
        ctx_unlock(c);
        return false;
    }
    atomic_store_explicit(&c->reason, reason, memory_order_release);
    for (struct ctx *ch = c->children; ch != NULL; ch = ch->sib_next) {
        if (ctx_try_ref(ch)) {
            ch->cancel_next = *stack;
            *stack = ch;
        }
    }
    ctx_unlock(c);
    fire_watches(c, reason);
    return true;
}

int ctx_cancel(struct ctx *c, enum ctx_reason reason)
{
    struct ctx *stack = NULL;

    if (reason <= CTX_REASON_NONE || reason >= CTX_REASON__COUNT)
        return -EINVAL;
    if (!cancel_one(c, reason, &stack))
        return -EALREADY;
    while (stack != NULL) {
        struct ctx *n = stack;
        stack = n->cancel_next;
        cancel_one(n, reason, &stack);
        ctx_unref(n);
    }
    return 0;
}

int ctx_watch_add(struct ctx *c, struct ctx_watch *w, ctx_cancel_fn *fn, void *arg)
{
    w->fn = fn;
    w->arg = arg;
    w->next = w->prev = NULL;

    ctx_lock(c);
    if (atomic_load_explicit(&c->reason, memory_order_relaxed) != CTX_REASON_NONE) {
        ctx_unlock(c);
        w->owner = NULL;
        w->state = WATCH_IDLE;
        return -ECANCELED;
    }
    w->owner = c;
    w->state = WATCH_ARMED;
    w->next = c->watches;
    if (c->watches != NULL)
        c->watches->prev = w;
    c->watches = w;
    ctx_unlock(c);
    return 0;
}

bool ctx_watch_remove(struct ctx_watch *w)
{
    struct ctx *c = w->owner;
    bool removed = false;

    if (c == NULL) {
        /* Never added, refused, or its context was freed while armed (it can no longer fire). */
        removed = w->state == WATCH_ORPHANED;
        w->state = WATCH_IDLE;
        return removed;
    }
    ctx_lock(c);
    if (w->state == WATCH_ARMED) {
        watch_unlink(c, w);
        w->state = WATCH_IDLE;
        removed = true;
    } else if (c->firing == w && !running_here(w)) {
        /* The callback may still use what the caller is about to free. */
        while (c->firing == w) {
            ctx_cond_wait(&c->fired_cv, &c->lock);
        }
    }
    ctx_unlock(c);
    return removed;
}

/* ---- thread-local current context ---------------------------------------------------------- */

struct ctx *ctx_current(void)
{
    return tls_current;
}

struct ctx *ctx_enter(struct ctx *c)
{
    struct ctx *prev = tls_current;
    tls_current = c;
    return prev;
}

void ctx_leave(struct ctx *prev)
{
    tls_current = prev;
}
