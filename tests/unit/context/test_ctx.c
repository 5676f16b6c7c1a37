/* test_ctx.c - unit tests for context/ctx.c: lifetime, values, deadline, cancellation tree,
 * on-cancel watches and the thread-local current context, including a multi-threaded
 * cancellation race (run it under VARIANT=tsan and VARIANT=asan).
 */
#include "context/ctx.h"
#include "tests/suite.h"

#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

struct counter {
    atomic_int fired;
    struct ctx *expect_ctx;
    enum ctx_reason expect_reason;
    atomic_int mismatches;
};

static void count_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct counter *k = arg;
    if (c != k->expect_ctx || reason != k->expect_reason)
        atomic_fetch_add(&k->mismatches, 1);
    atomic_fetch_add(&k->fired, 1);
}

static void check_thread(int rc)
{
    CU_ASSERT_EQUAL_FATAL(rc, 0);
}

/* ---- names, lifetime, values --------------------------------------------------------------- */

static void test_ctx_reason_name_all(void)
{
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_NONE), "none");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_CANCELED), "canceled");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_CLIENT_CLOSED), "client_closed");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_DEADLINE), "deadline");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_SHUTDOWN), "shutdown");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_SIBLING_FAILED), "sibling_failed");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON_SIBLING_WON), "sibling_won");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name(CTX_REASON__COUNT), "unknown");
    CU_ASSERT_STRING_EQUAL(ctx_reason_name((enum ctx_reason) - 1), "unknown");
}

static void test_ctx_new_root_defaults(void)
{
    struct ctx *r = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(ctx_request_id(r), "");
    CU_ASSERT_STRING_EQUAL(ctx_tenant(r), "");
    CU_ASSERT_STRING_EQUAL(ctx_trace_id_hex(r), "");
    CU_ASSERT_STRING_EQUAL(ctx_span_id_hex(r), "");
    CU_ASSERT_EQUAL(ctx_deadline(r), 0);
    CU_ASSERT_FALSE(ctx_expired(r, UINT64_MAX));
    CU_ASSERT_FALSE(ctx_cancelled(r));
    CU_ASSERT_EQUAL(ctx_err(r), CTX_REASON_NONE);
    ctx_unref(r);
}

static void test_ctx_unref_null(void)
{
    ctx_unref(NULL); /* must not crash */
    CU_ASSERT_PTR_NULL(ctx_new_child(NULL));
}

/* The child's reference keeps the parent alive after the caller dropped it; the last unref of
 * the child frees the whole chain (the asan variant fails on a leak or a use after free). */
static void test_ctx_unref_child_keeps_parent(void)
{
    struct ctx *r = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(ctx_set_tenant(r, "acme", 4), 0);
    ctx_set_deadline(r, 1000);
    struct ctx *c = ctx_new_child(r);
    struct ctx *g = ctx_new_child(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_PTR_EQUAL(ctx_ref(c), c);
    ctx_unref(r);
    ctx_unref(c);
    /* r and c are still reachable through g: the deadline walk reads them */
    CU_ASSERT_EQUAL(ctx_deadline(g), 1000);
    ctx_unref(c);
    CU_ASSERT_EQUAL(ctx_deadline(g), 1000);
    CU_ASSERT_STRING_EQUAL(ctx_tenant(g), "acme");
    ctx_unref(g);
}

/* A freed child leaves its parent's list: cancelling the parent later must not touch it. */
static void test_ctx_unref_child_unlinks(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *kids[5];
    for (int i = 0; i < 5; i++) {
        kids[i] = ctx_new_child(r);
        CU_ASSERT_PTR_NOT_NULL_FATAL(kids[i]);
    }
    ctx_unref(kids[0]); /* tail of the list */
    ctx_unref(kids[2]); /* middle */
    ctx_unref(kids[4]); /* head */
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_CANCELED), 0);
    CU_ASSERT_TRUE(ctx_cancelled(kids[1]));
    CU_ASSERT_TRUE(ctx_cancelled(kids[3]));
    ctx_unref(kids[1]);
    ctx_unref(kids[3]);
    ctx_unref(r);
}

static void test_ctx_new_child_inherits_values(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx_trace t;
    ctx_trace_new(&t);
    CU_ASSERT_EQUAL(ctx_set_request_id(r, "req-42", 6), 0);
    CU_ASSERT_EQUAL(ctx_set_tenant(r, "tenant_a", 8), 0);
    ctx_set_trace(r, &t);

    struct ctx *c = ctx_new_child(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(ctx_request_id(c), "req-42");
    CU_ASSERT_STRING_EQUAL(ctx_tenant(c), "tenant_a");
    CU_ASSERT_EQUAL(memcmp(ctx_trace(c), &t, sizeof(t)), 0);
    CU_ASSERT_STRING_EQUAL(ctx_trace_id_hex(c), ctx_trace_id_hex(r));
    CU_ASSERT_STRING_EQUAL(ctx_span_id_hex(c), ctx_span_id_hex(r)); /* same span until set */

    /* the child's own values do not leak back into the parent */
    struct ctx_trace t2 = t;
    ctx_span_new(t2.span_id);
    ctx_set_trace(c, &t2);
    CU_ASSERT_EQUAL(ctx_set_tenant(c, "other", 5), 0);
    CU_ASSERT_STRING_NOT_EQUAL(ctx_span_id_hex(c), ctx_span_id_hex(r));
    CU_ASSERT_STRING_EQUAL(ctx_trace_id_hex(c), ctx_trace_id_hex(r));
    CU_ASSERT_STRING_EQUAL(ctx_tenant(r), "tenant_a");
    ctx_unref(c);
    ctx_unref(r);
}

static void test_ctx_set_request_id_rejects_invalid(void)
{
    struct ctx *r = ctx_new_root();
    char big[CTX_REQUEST_ID_MAX + 1];
    memset(big, 'x', sizeof(big));
    CU_ASSERT_EQUAL(ctx_set_request_id(r, "abc", 3), 0);
    CU_ASSERT_EQUAL(ctx_set_request_id(r, "a b", 3), -EINVAL);
    CU_ASSERT_EQUAL(ctx_set_request_id(r, "", 0), -EINVAL);
    CU_ASSERT_EQUAL(ctx_set_request_id(r, big, sizeof(big)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(ctx_request_id(r), "abc"); /* unchanged by a refused value */
    CU_ASSERT_EQUAL(ctx_set_request_id(r, big, CTX_REQUEST_ID_MAX), 0);
    CU_ASSERT_EQUAL(strlen(ctx_request_id(r)), CTX_REQUEST_ID_MAX);
    /* len, not the NUL, bounds the copy */
    CU_ASSERT_EQUAL(ctx_set_request_id(r, "xyz-tail", 3), 0);
    CU_ASSERT_STRING_EQUAL(ctx_request_id(r), "xyz");
    ctx_unref(r);
}

static void test_ctx_set_tenant_rejects_invalid(void)
{
    struct ctx *r = ctx_new_root();
    char big[CTX_TENANT_MAX + 1];
    memset(big, 't', sizeof(big));
    CU_ASSERT_EQUAL(ctx_set_tenant(r, "a.b-c_9", 7), 0);
    CU_ASSERT_EQUAL(ctx_set_tenant(r, "a/b", 3), -EINVAL);
    CU_ASSERT_EQUAL(ctx_set_tenant(r, "a b", 3), -EINVAL);
    CU_ASSERT_EQUAL(ctx_set_tenant(r, "", 0), -EINVAL);
    CU_ASSERT_EQUAL(ctx_set_tenant(r, big, sizeof(big)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(ctx_tenant(r), "a.b-c_9");
    CU_ASSERT_EQUAL(ctx_set_tenant(r, big, CTX_TENANT_MAX), 0);
    CU_ASSERT_EQUAL(strlen(ctx_tenant(r)), CTX_TENANT_MAX);
    ctx_unref(r);
}

static void test_ctx_set_trace_hex(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx_trace t = {
        .trace_id = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e,
                     0x0e, 0x47, 0x36},
        .span_id = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
        .flags = 1,
    };
    ctx_set_trace(r, &t);
    CU_ASSERT_STRING_EQUAL(ctx_trace_id_hex(r), "4bf92f3577b34da6a3ce929d0e0e4736");
    CU_ASSERT_STRING_EQUAL(ctx_span_id_hex(r), "00f067aa0ba902b7");
    CU_ASSERT_EQUAL(ctx_trace(r)->flags, 1);
    ctx_unref(r);
}

/* ---- deadline ------------------------------------------------------------------------------ */

/* A fan-out child: its own span inside the parent's, and its index; both reach its children. */
static void test_ctx_span_start_and_index(void)
{
    struct ctx *r = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    struct ctx *plain = ctx_new_child(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    ctx_span_start(plain); /* no trace: nothing to start */
    CU_ASSERT_STRING_EQUAL(ctx_span_id_hex(plain), "");
    CU_ASSERT_STRING_EQUAL(ctx_parent_span_id_hex(plain), "");
    CU_ASSERT_EQUAL(ctx_index(plain), -1);

    struct ctx_trace t;
    ctx_trace_new(&t);
    ctx_set_trace(r, &t);
    struct ctx *c = ctx_new_child(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(ctx_span_id_hex(c), ctx_span_id_hex(r)); /* until started */
    ctx_span_start(c);
    ctx_set_index(c, 3);
    CU_ASSERT_STRING_EQUAL(ctx_parent_span_id_hex(c), ctx_span_id_hex(r));
    CU_ASSERT_STRING_NOT_EQUAL(ctx_span_id_hex(c), ctx_span_id_hex(r));
    CU_ASSERT_EQUAL(strlen(ctx_span_id_hex(c)), 16);
    CU_ASSERT_STRING_EQUAL(ctx_trace_id_hex(c), ctx_trace_id_hex(r));
    CU_ASSERT_EQUAL(memcmp(ctx_trace(c)->trace_id, t.trace_id, sizeof(t.trace_id)), 0);
    CU_ASSERT_EQUAL(ctx_index(c), 3);
    CU_ASSERT_EQUAL(ctx_index(r), -1);

    struct ctx *g = ctx_new_child(c); /* inherits span, parent span and index */
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_STRING_EQUAL(ctx_span_id_hex(g), ctx_span_id_hex(c));
    CU_ASSERT_STRING_EQUAL(ctx_parent_span_id_hex(g), ctx_span_id_hex(r));
    CU_ASSERT_EQUAL(ctx_index(g), 3);
    ctx_unref(g);
    ctx_unref(c);
    ctx_unref(plain);
    ctx_unref(r);
}

static void test_ctx_deadline_min_rule(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *p = ctx_new_child(r);
    ctx_set_deadline(p, 1000);
    struct ctx *c = ctx_new_child(p);
    CU_ASSERT_EQUAL(ctx_deadline(c), 1000); /* inherited */
    ctx_set_deadline(c, 2000);
    CU_ASSERT_EQUAL(ctx_deadline(c), 1000); /* never outlives the parent */
    ctx_set_deadline(c, 500);
    CU_ASSERT_EQUAL(ctx_deadline(c), 500); /* its own when earlier */
    CU_ASSERT_EQUAL(ctx_deadline(p), 1000);
    struct ctx *g = ctx_new_child(c);
    CU_ASSERT_EQUAL(ctx_deadline(g), 500);
    ctx_set_deadline(c, 0); /* cleared: back to the parent's */
    CU_ASSERT_EQUAL(ctx_deadline(c), 1000);
    CU_ASSERT_EQUAL(ctx_deadline(g), 1000);
    /* no deadline above: the child's own */
    struct ctx *o = ctx_new_child(r);
    ctx_set_deadline(o, 700);
    CU_ASSERT_EQUAL(ctx_deadline(o), 700);
    CU_ASSERT_EQUAL(ctx_deadline(r), 0);
    ctx_unref(o);
    ctx_unref(g);
    ctx_unref(c);
    ctx_unref(p);
    ctx_unref(r);
}

static void test_ctx_expired_boundary(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *c = ctx_new_child(r);
    CU_ASSERT_FALSE(ctx_expired(c, ctx_now_ns()));
    ctx_set_deadline(r, 5000);
    CU_ASSERT_FALSE(ctx_expired(c, 4999));
    CU_ASSERT_TRUE(ctx_expired(c, 5000));
    CU_ASSERT_TRUE(ctx_expired(c, 5001));
    CU_ASSERT_FALSE(ctx_cancelled(c)); /* the clock alone does not cancel */
    uint64_t now = ctx_now_ns();
    ctx_set_deadline(r, now + 3600ULL * 1000000000ULL);
    CU_ASSERT_FALSE(ctx_expired(c, ctx_now_ns()));
    ctx_set_deadline(c, now);
    CU_ASSERT_TRUE(ctx_expired(c, ctx_now_ns()));
    ctx_unref(c);
    ctx_unref(r);
}

static void test_ctx_now_ns_monotonic(void)
{
    uint64_t a = ctx_now_ns();
    uint64_t b = ctx_now_ns();
    CU_ASSERT_TRUE(a > 0);
    CU_ASSERT_TRUE(b >= a);
}

/* ---- cancellation -------------------------------------------------------------------------- */

static void test_ctx_cancel_propagates_to_descendants(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *a = ctx_new_child(r);
    struct ctx *b = ctx_new_child(r);
    struct ctx *a1 = ctx_new_child(a);
    struct ctx *a1x = ctx_new_child(a1);
    CU_ASSERT_FALSE(ctx_cancelled(a1x));
    CU_ASSERT_EQUAL(ctx_cancel(a, CTX_REASON_CLIENT_CLOSED), 0);
    CU_ASSERT_TRUE(ctx_cancelled(a));
    CU_ASSERT_TRUE(ctx_cancelled(a1));
    CU_ASSERT_TRUE(ctx_cancelled(a1x));
    CU_ASSERT_EQUAL(ctx_err(a1x), CTX_REASON_CLIENT_CLOSED);
    /* not upwards, not sideways */
    CU_ASSERT_FALSE(ctx_cancelled(r));
    CU_ASSERT_FALSE(ctx_cancelled(b));
    CU_ASSERT_EQUAL(ctx_err(b), CTX_REASON_NONE);
    ctx_unref(a1x);
    ctx_unref(a1);
    ctx_unref(a);
    ctx_unref(b);
    ctx_unref(r);
}

static void test_ctx_cancel_future_children(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *a = ctx_new_child(r);
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_SHUTDOWN), 0);
    struct ctx *late = ctx_new_child(r);
    struct ctx *later = ctx_new_child(a);
    struct ctx *latest = ctx_new_child(later);
    CU_ASSERT_PTR_NOT_NULL_FATAL(latest);
    CU_ASSERT_EQUAL(ctx_err(late), CTX_REASON_SHUTDOWN);
    CU_ASSERT_EQUAL(ctx_err(later), CTX_REASON_SHUTDOWN);
    CU_ASSERT_EQUAL(ctx_err(latest), CTX_REASON_SHUTDOWN);
    CU_ASSERT_EQUAL(ctx_cancel(latest, CTX_REASON_CANCELED), -EALREADY);
    CU_ASSERT_EQUAL(ctx_err(latest), CTX_REASON_SHUTDOWN);
    ctx_unref(latest);
    ctx_unref(later);
    ctx_unref(late);
    ctx_unref(a);
    ctx_unref(r);
}

/* A child made while a cancellation is still on its way down (here: from an on-cancel callback
 * of the cancelled context, before its own children were reached) is born cancelled. */
struct mid_cancel {
    struct ctx *a;
    struct ctx *made;
    enum ctx_reason made_with; /* its reason at birth */
};

static void mid_cancel_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct mid_cancel *m = arg;
    (void)c;
    (void)reason;
    m->made = ctx_new_child(m->a);
    m->made_with = m->made != NULL ? ctx_err(m->made) : CTX_REASON_NONE;
}

static void test_ctx_new_child_during_cancel(void)
{
    struct ctx *r = ctx_new_root();
    struct mid_cancel m = {.a = ctx_new_child(r)};
    struct ctx_watch w = {0};
    CU_ASSERT_EQUAL(ctx_watch_add(r, &w, mid_cancel_cb, &m), 0);
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_CLIENT_CLOSED), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m.made);
    CU_ASSERT_EQUAL(m.made_with, CTX_REASON_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(ctx_err(m.made), CTX_REASON_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(ctx_err(m.a), CTX_REASON_CLIENT_CLOSED);
    ctx_unref(m.made);
    ctx_unref(m.a);
    ctx_unref(r);
}

static void test_ctx_cancel_first_reason_wins(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *a = ctx_new_child(r);
    struct ctx *a1 = ctx_new_child(a);
    struct ctx *b = ctx_new_child(r);
    CU_ASSERT_EQUAL(ctx_cancel(a, CTX_REASON_SIBLING_WON), 0);
    CU_ASSERT_EQUAL(ctx_cancel(a, CTX_REASON_DEADLINE), -EALREADY);
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_SHUTDOWN), 0);
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_SHUTDOWN), -EALREADY);
    CU_ASSERT_EQUAL(ctx_err(a), CTX_REASON_SIBLING_WON);
    CU_ASSERT_EQUAL(ctx_err(a1), CTX_REASON_SIBLING_WON);
    CU_ASSERT_EQUAL(ctx_err(b), CTX_REASON_SHUTDOWN);
    CU_ASSERT_EQUAL(ctx_err(r), CTX_REASON_SHUTDOWN);
    ctx_unref(a1);
    ctx_unref(a);
    ctx_unref(b);
    ctx_unref(r);
}

static void test_ctx_cancel_invalid_reason(void)
{
    struct ctx *r = ctx_new_root();
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_NONE), -EINVAL);
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON__COUNT), -EINVAL);
    CU_ASSERT_FALSE(ctx_cancelled(r));
    ctx_unref(r);
}

/* A deep chain: ctx_cancel must neither recurse nor miss a level. */
static void test_ctx_cancel_deep_chain(void)
{
    enum { DEPTH = 10000 };
    struct ctx **chain = calloc(DEPTH, sizeof(*chain));
    CU_ASSERT_PTR_NOT_NULL_FATAL(chain);
    chain[0] = ctx_new_root();
    for (int i = 1; i < DEPTH; i++) {
        chain[i] = ctx_new_child(chain[i - 1]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(chain[i]);
    }
    CU_ASSERT_EQUAL(ctx_cancel(chain[0], CTX_REASON_DEADLINE), 0);
    int cancelled = 0;
    for (int i = 0; i < DEPTH; i++)
        cancelled += ctx_err(chain[i]) == CTX_REASON_DEADLINE;
    CU_ASSERT_EQUAL(cancelled, DEPTH);
    /* drop the parents first: the last unref frees the chain without recursing */
    for (int i = 0; i < DEPTH; i++)
        ctx_unref(chain[i]);
    free(chain);
}

/* ---- watches ------------------------------------------------------------------------------- */

static void test_ctx_watch_add_fires_once(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *c = ctx_new_child(r);
    struct ctx *g = ctx_new_child(c);
    struct counter kc = {.expect_ctx = c, .expect_reason = CTX_REASON_CLIENT_CLOSED};
    struct counter kg = {.expect_ctx = g, .expect_reason = CTX_REASON_CLIENT_CLOSED};
    struct ctx_watch wc = {0}, wg = {0};
    CU_ASSERT_EQUAL(ctx_watch_add(c, &wc, count_cb, &kc), 0);
    CU_ASSERT_EQUAL(ctx_watch_add(g, &wg, count_cb, &kg), 0);
    CU_ASSERT_EQUAL(atomic_load(&kc.fired), 0);
    CU_ASSERT_EQUAL(ctx_cancel(c, CTX_REASON_CLIENT_CLOSED), 0);
    /* ran before ctx_cancel returned, once each, with the right arguments */
    CU_ASSERT_EQUAL(atomic_load(&kc.fired), 1);
    CU_ASSERT_EQUAL(atomic_load(&kg.fired), 1);
    CU_ASSERT_EQUAL(atomic_load(&kc.mismatches), 0);
    CU_ASSERT_EQUAL(atomic_load(&kg.mismatches), 0);
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_SHUTDOWN), 0);
    CU_ASSERT_EQUAL(ctx_cancel(g, CTX_REASON_CANCELED), -EALREADY);
    CU_ASSERT_EQUAL(atomic_load(&kc.fired), 1);
    CU_ASSERT_EQUAL(atomic_load(&kg.fired), 1);
    CU_ASSERT_FALSE(ctx_watch_remove(&wc)); /* already ran */
    CU_ASSERT_FALSE(ctx_watch_remove(&wg));
    ctx_unref(g);
    ctx_unref(c);
    ctx_unref(r);
}

static void test_ctx_watch_add_many_on_one_context(void)
{
    enum { N = 64 };
    struct ctx *r = ctx_new_root();
    struct counter k = {.expect_ctx = r, .expect_reason = CTX_REASON_DEADLINE};
    struct ctx_watch w[N];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(ctx_watch_add(r, &w[i], count_cb, &k), 0);
    CU_ASSERT_TRUE(ctx_watch_remove(&w[0]));
    CU_ASSERT_TRUE(ctx_watch_remove(&w[N / 2]));
    CU_ASSERT_TRUE(ctx_watch_remove(&w[N - 1]));
    CU_ASSERT_FALSE(ctx_watch_remove(&w[N - 1])); /* twice: the second finds nothing */
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_DEADLINE), 0);
    CU_ASSERT_EQUAL(atomic_load(&k.fired), N - 3);
    CU_ASSERT_EQUAL(atomic_load(&k.mismatches), 0);
    ctx_unref(r);
}

static void test_ctx_watch_add_after_cancel(void)
{
    struct ctx *r = ctx_new_root();
    struct counter k = {0};
    struct ctx_watch w = {0};
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_CANCELED), 0);
    CU_ASSERT_EQUAL(ctx_watch_add(r, &w, count_cb, &k), -ECANCELED);
    CU_ASSERT_EQUAL(atomic_load(&k.fired), 0);
    CU_ASSERT_FALSE(ctx_watch_remove(&w));
    ctx_unref(r);
}

static void test_ctx_watch_remove_prevents_firing(void)
{
    struct ctx *r = ctx_new_root();
    struct ctx *c = ctx_new_child(r);
    struct counter k = {.expect_ctx = c, .expect_reason = CTX_REASON_SHUTDOWN};
    struct ctx_watch w = {0};
    CU_ASSERT_EQUAL(ctx_watch_add(c, &w, count_cb, &k), 0);
    CU_ASSERT_TRUE(ctx_watch_remove(&w));
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_SHUTDOWN), 0);
    CU_ASSERT_EQUAL(atomic_load(&k.fired), 0);
    CU_ASSERT_FALSE(ctx_watch_remove(&w));
    ctx_unref(c);
    ctx_unref(r);
}

static void test_ctx_watch_remove_never_added(void)
{
    struct ctx_watch w = {0};
    CU_ASSERT_FALSE(ctx_watch_remove(&w));
}

/* A context freed with a watch still armed: the watch can never fire, and removing it later
 * reports that without touching the freed context. */
static void test_ctx_watch_remove_after_context_freed(void)
{
    struct ctx *r = ctx_new_root();
    struct counter k = {0};
    struct ctx_watch w = {0};
    CU_ASSERT_EQUAL(ctx_watch_add(r, &w, count_cb, &k), 0);
    ctx_unref(r);
    CU_ASSERT_TRUE(ctx_watch_remove(&w));
    CU_ASSERT_FALSE(ctx_watch_remove(&w));
    CU_ASSERT_EQUAL(atomic_load(&k.fired), 0);
}

struct self_remove {
    struct ctx_watch self, other;
    struct counter other_count;
    int calls;
    bool self_result, other_result;
};

static void self_remove_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct self_remove *s = arg;
    (void)c;
    (void)reason;
    s->calls++;
    s->self_result = ctx_watch_remove(&s->self);   /* must not wait for itself */
    s->other_result = ctx_watch_remove(&s->other); /* the other one has not run yet */
}

static void test_ctx_watch_remove_inside_callback(void)
{
    struct ctx *r = ctx_new_root();
    struct self_remove s = {0};
    /* added first: this implementation fires the most recent registration first, and either
     * order must leave the other watch either fired once or removed */
    CU_ASSERT_EQUAL(ctx_watch_add(r, &s.other, count_cb, &s.other_count), 0);
    CU_ASSERT_EQUAL(ctx_watch_add(r, &s.self, self_remove_cb, &s), 0);
    s.other_count.expect_ctx = r;
    s.other_count.expect_reason = CTX_REASON_CANCELED;
    CU_ASSERT_EQUAL(ctx_cancel(r, CTX_REASON_CANCELED), 0);
    CU_ASSERT_EQUAL(s.calls, 1);
    CU_ASSERT_FALSE(s.self_result);
    CU_ASSERT_EQUAL(atomic_load(&s.other_count.fired), s.other_result ? 0 : 1);
    ctx_unref(r);
}

/* The callback cancels another context, whose callback removes the outer watch: the thread is
 * inside the outer callback, so the removal must not wait (it would wait for itself). */
struct nested {
    struct ctx *inner;
    struct ctx_watch outer_w, inner_w;
    bool inner_result;
    int inner_calls;
};

static void nested_inner_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct nested *n = arg;
    (void)c;
    (void)reason;
    n->inner_calls++;
    n->inner_result = ctx_watch_remove(&n->outer_w);
}

static void nested_outer_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct nested *n = arg;
    (void)c;
    ctx_cancel(n->inner, reason);
}

static void test_ctx_watch_remove_nested_callbacks(void)
{
    struct ctx *outer = ctx_new_root();
    struct nested n = {.inner = ctx_new_root()};
    CU_ASSERT_EQUAL(ctx_watch_add(outer, &n.outer_w, nested_outer_cb, &n), 0);
    CU_ASSERT_EQUAL(ctx_watch_add(n.inner, &n.inner_w, nested_inner_cb, &n), 0);
    CU_ASSERT_EQUAL(ctx_cancel(outer, CTX_REASON_SHUTDOWN), 0);
    CU_ASSERT_EQUAL(n.inner_calls, 1);
    CU_ASSERT_FALSE(n.inner_result);
    CU_ASSERT_EQUAL(ctx_err(n.inner), CTX_REASON_SHUTDOWN);
    ctx_unref(n.inner);
    ctx_unref(outer);
}

struct blocking {
    struct ctx *c;
    struct ctx_watch w;
    sem_t entered, release, remover_ready;
    atomic_int done;
    bool removed;
    int observed_done;
};

static void blocking_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct blocking *b = arg;
    (void)c;
    (void)reason;
    sem_post(&b->entered);
    while (sem_wait(&b->release) != 0)
        ;
    atomic_store(&b->done, 1);
}

static void *blocking_canceller(void *arg)
{
    struct blocking *b = arg;
    ctx_cancel(b->c, CTX_REASON_CANCELED);
    return NULL;
}

static void *blocking_remover(void *arg)
{
    struct blocking *b = arg;
    sem_post(&b->remover_ready);
    b->removed = ctx_watch_remove(&b->w);
    b->observed_done = atomic_load(&b->done); /* the callback has returned by now */
    return NULL;
}

static void test_ctx_watch_remove_waits_for_callback(void)
{
    struct blocking b = {.c = ctx_new_root()};
    pthread_t tc, tr;
    CU_ASSERT_EQUAL_FATAL(sem_init(&b.entered, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sem_init(&b.release, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(sem_init(&b.remover_ready, 0, 0), 0);
    CU_ASSERT_EQUAL(ctx_watch_add(b.c, &b.w, blocking_cb, &b), 0);
    check_thread(pthread_create(&tc, NULL, blocking_canceller, &b));
    while (sem_wait(&b.entered) != 0)
        ;
    check_thread(pthread_create(&tr, NULL, blocking_remover, &b));
    while (sem_wait(&b.remover_ready) != 0)
        ;
    sem_post(&b.release);
    check_thread(pthread_join(tr, NULL));
    check_thread(pthread_join(tc, NULL));
    CU_ASSERT_FALSE(b.removed);
    CU_ASSERT_EQUAL(b.observed_done, 1);
    sem_destroy(&b.entered);
    sem_destroy(&b.release);
    sem_destroy(&b.remover_ready);
    ctx_unref(b.c);
}

/* ---- thread-local current ------------------------------------------------------------------ */

static void test_ctx_enter_nesting(void)
{
    struct ctx *a = ctx_new_root();
    struct ctx *b = ctx_new_child(a);
    CU_ASSERT_PTR_NULL(ctx_current());
    struct ctx *p0 = ctx_enter(a);
    CU_ASSERT_PTR_NULL(p0);
    CU_ASSERT_PTR_EQUAL(ctx_current(), a);
    struct ctx *p1 = ctx_enter(b);
    CU_ASSERT_PTR_EQUAL(p1, a);
    CU_ASSERT_PTR_EQUAL(ctx_current(), b);
    struct ctx *p2 = ctx_enter(NULL); /* a scope with no request */
    CU_ASSERT_PTR_EQUAL(p2, b);
    CU_ASSERT_PTR_NULL(ctx_current());
    ctx_leave(p2);
    CU_ASSERT_PTR_EQUAL(ctx_current(), b);
    ctx_leave(p1);
    CU_ASSERT_PTR_EQUAL(ctx_current(), a);
    ctx_leave(p0);
    CU_ASSERT_PTR_NULL(ctx_current());
    ctx_unref(b);
    ctx_unref(a);
}

struct tls_probe {
    struct ctx *mine;
    struct ctx *seen_at_start, *seen_inside, *seen_after;
};

static void *tls_probe_thread(void *arg)
{
    struct tls_probe *p = arg;
    p->seen_at_start = ctx_current();
    struct ctx *prev = ctx_enter(p->mine);
    p->seen_inside = ctx_current();
    ctx_leave(prev);
    p->seen_after = ctx_current();
    return NULL;
}

static void test_ctx_current_per_thread(void)
{
    struct ctx *a = ctx_new_root();
    struct tls_probe p = {.mine = ctx_new_root()};
    pthread_t t;
    struct ctx *prev = ctx_enter(a);
    check_thread(pthread_create(&t, NULL, tls_probe_thread, &p));
    check_thread(pthread_join(t, NULL));
    CU_ASSERT_PTR_NULL(p.seen_at_start);
    CU_ASSERT_PTR_EQUAL(p.seen_inside, p.mine);
    CU_ASSERT_PTR_NULL(p.seen_after);
    CU_ASSERT_PTR_EQUAL(ctx_current(), a); /* untouched by the other thread */
    ctx_leave(prev);
    ctx_unref(p.mine);
    ctx_unref(a);
}

/* ---- concurrency --------------------------------------------------------------------------- */

/* One thread cancels a request context while four others keep polling it, making children
 * (some nested, some dropped at once) and adding and removing watches on them. Afterwards every
 * child is cancelled with the one reason, every watch ran exactly once or was removed or was
 * refused, and a removal that reported "too late" saw the callback finished. */
enum { CC_WORKERS = 4, CC_ITERS = 600 };

struct cc_watch {
    struct ctx_watch w;
    struct ctx *c;
    atomic_int fired;
    atomic_int mismatch; /* called with the wrong context or reason */
    int add_rc;
    bool removed;
};

struct cc_shared {
    struct ctx *req;
    pthread_barrier_t start;
    sem_t halfway;
    atomic_int errors;
};

struct cc_worker {
    pthread_t tid;
    struct cc_shared *sh;
    struct ctx *kids[CC_ITERS];
    struct cc_watch watches[CC_ITERS];
};

static void cc_cb(struct ctx *c, enum ctx_reason reason, void *arg)
{
    struct cc_watch *w = arg;
    if (c != w->c || reason != CTX_REASON_SHUTDOWN)
        atomic_fetch_add(&w->mismatch, 1);
    atomic_fetch_add(&w->fired, 1);
}

static void cc_step(struct cc_worker *wk, int i)
{
    struct cc_shared *sh = wk->sh;
    struct cc_watch *cw = &wk->watches[i];
    bool seen = ctx_cancelled(sh->req);
    struct ctx *parent = (i % 3 == 2) ? wk->kids[i - 1] : sh->req;
    struct ctx *c = ctx_new_child(parent);
    struct ctx *tmp = ctx_new_child(c); /* made and dropped at once: races the cancel's walk */

    wk->kids[i] = c;
    ctx_unref(tmp);
    if (seen && !ctx_cancelled(c))
        atomic_fetch_add(&sh->errors, 1); /* made after the cancel: must be born cancelled */
    cw->c = c;
    cw->add_rc = ctx_watch_add(c, &cw->w, cc_cb, cw);
    if (seen && cw->add_rc != -ECANCELED)
        atomic_fetch_add(&sh->errors, 1);
    if (cw->add_rc == 0 && i % 2 == 0) {
        cw->removed = ctx_watch_remove(&cw->w);
        /* false means "already ran": ctx_watch_remove waited for the callback to return */
        if (atomic_load(&cw->fired) != (cw->removed ? 0 : 1))
            atomic_fetch_add(&sh->errors, 1);
    }
}

static void *cc_worker_main(void *arg)
{
    struct cc_worker *wk = arg;
    pthread_barrier_wait(&wk->sh->start);
    for (int i = 0; i < CC_ITERS; i++) {
        if (i == CC_ITERS / 2)
            sem_post(&wk->sh->halfway);
        cc_step(wk, i);
    }
    return NULL;
}

static void *cc_canceller_main(void *arg)
{
    struct cc_shared *sh = arg;
    pthread_barrier_wait(&sh->start);
    for (int i = 0; i < CC_WORKERS; i++) {
        while (sem_wait(&sh->halfway) != 0)
            ;
    }
    if (ctx_cancel(sh->req, CTX_REASON_SHUTDOWN) != 0)
        atomic_fetch_add(&sh->errors, 1);
    return NULL;
}

static void cc_check_and_free(struct cc_worker *wk)
{
    int bad_child = 0, bad_watch = 0;
    for (int i = 0; i < CC_ITERS; i++) {
        struct cc_watch *cw = &wk->watches[i];
        bad_child += ctx_err(wk->kids[i]) != CTX_REASON_SHUTDOWN;
        int expect = (cw->add_rc == 0 && !cw->removed) ? 1 : 0;
        bad_watch += atomic_load(&cw->fired) != expect;
        bad_watch += cw->add_rc != 0 && cw->add_rc != -ECANCELED;
        bad_watch += atomic_load(&cw->mismatch) != 0;
    }
    CU_ASSERT_EQUAL(bad_child, 0);
    CU_ASSERT_EQUAL(bad_watch, 0);
    /* children of children were made at i % 3 == 2 from kids[i - 1]: free in reverse anyway */
    for (int i = CC_ITERS - 1; i >= 0; i--)
        ctx_unref(wk->kids[i]);
}

static void test_ctx_cancel_concurrent(void)
{
    struct cc_shared sh = {.req = NULL};
    struct ctx *root = ctx_new_root();
    struct cc_worker *wk = calloc(CC_WORKERS, sizeof(*wk));
    pthread_t canceller;
    CU_ASSERT_PTR_NOT_NULL_FATAL(wk);
    sh.req = ctx_new_child(root);
    CU_ASSERT_EQUAL_FATAL(pthread_barrier_init(&sh.start, NULL, CC_WORKERS + 1), 0);
    CU_ASSERT_EQUAL_FATAL(sem_init(&sh.halfway, 0, 0), 0);

    for (int i = 0; i < CC_WORKERS; i++) {
        wk[i].sh = &sh;
        check_thread(pthread_create(&wk[i].tid, NULL, cc_worker_main, &wk[i]));
    }
    check_thread(pthread_create(&canceller, NULL, cc_canceller_main, &sh));
    check_thread(pthread_join(canceller, NULL));
    for (int i = 0; i < CC_WORKERS; i++)
        check_thread(pthread_join(wk[i].tid, NULL));

    CU_ASSERT_EQUAL(atomic_load(&sh.errors), 0);
    CU_ASSERT_EQUAL(ctx_err(sh.req), CTX_REASON_SHUTDOWN);
    CU_ASSERT_FALSE(ctx_cancelled(root));
    for (int i = 0; i < CC_WORKERS; i++)
        cc_check_and_free(&wk[i]);
    pthread_barrier_destroy(&sh.start);
    sem_destroy(&sh.halfway);
    free(wk);
    ctx_unref(sh.req);
    ctx_unref(root);
}

/* ---- suite --------------------------------------------------------------------------------- */

int suite_context_ctx(void);

int suite_context_ctx(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_ctx_reason_name_all),
        SPINDLE_TEST(test_ctx_new_root_defaults),
        SPINDLE_TEST(test_ctx_unref_null),
        SPINDLE_TEST(test_ctx_unref_child_keeps_parent),
        SPINDLE_TEST(test_ctx_unref_child_unlinks),
        SPINDLE_TEST(test_ctx_new_child_inherits_values),
        SPINDLE_TEST(test_ctx_set_request_id_rejects_invalid),
        SPINDLE_TEST(test_ctx_set_tenant_rejects_invalid),
        SPINDLE_TEST(test_ctx_set_trace_hex),
        SPINDLE_TEST(test_ctx_span_start_and_index),
        SPINDLE_TEST(test_ctx_deadline_min_rule),
        SPINDLE_TEST(test_ctx_expired_boundary),
        SPINDLE_TEST(test_ctx_now_ns_monotonic),
        SPINDLE_TEST(test_ctx_cancel_propagates_to_descendants),
        SPINDLE_TEST(test_ctx_cancel_future_children),
        SPINDLE_TEST(test_ctx_new_child_during_cancel),
        SPINDLE_TEST(test_ctx_cancel_first_reason_wins),
        SPINDLE_TEST(test_ctx_cancel_invalid_reason),
        SPINDLE_TEST(test_ctx_cancel_deep_chain),
        SPINDLE_TEST(test_ctx_watch_add_fires_once),
        SPINDLE_TEST(test_ctx_watch_add_many_on_one_context),
        SPINDLE_TEST(test_ctx_watch_add_after_cancel),
        SPINDLE_TEST(test_ctx_watch_remove_prevents_firing),
        SPINDLE_TEST(test_ctx_watch_remove_never_added),
        SPINDLE_TEST(test_ctx_watch_remove_after_context_freed),
        SPINDLE_TEST(test_ctx_watch_remove_inside_callback),
        SPINDLE_TEST(test_ctx_watch_remove_nested_callbacks),
        SPINDLE_TEST(test_ctx_watch_remove_waits_for_callback),
        SPINDLE_TEST(test_ctx_enter_nesting),
        SPINDLE_TEST(test_ctx_current_per_thread),
        SPINDLE_TEST(test_ctx_cancel_concurrent),
    };
    return SPINDLE_SUITE_ADD("context_ctx", NULL, NULL, tests);
}
