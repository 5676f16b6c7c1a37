/* test_pool.c - the worker pool on a real libev loop: fairness, weights, cancellation, deadlines,
 * full queue, overdue reports, stop, thread names and exactly-once completion under concurrency.
 *
 * The test thread is the loop thread. Workers are held at a gate (a semaphore) where a test needs
 * jobs to stay queued; the loop runs until a count of done callbacks is reached, bounded by an
 * ev_timer.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool/internal.h"
#include "tests/suite.h"

int suite_pool_pool(void);

#define MS             1000000ull
#define LOOP_TIMEOUT_S 20.0

enum tjob_kind {
    RUN_NOOP,         /* return 0 */
    RUN_FAIL,         /* return -EIO */
    RUN_GATE,         /* post `started`, wait for `gate`, return 0 */
    RUN_UNTIL_CANCEL, /* post `started`, spin until cancelled, return -ECANCELED */
    RUN_IGNORE,       /* post `started`, wait for `gate` ignoring cancellation */
    RUN_NAME,         /* record the thread name, meet the others at the barrier */
    RUN_SPIN,         /* spin `spin_ns` or until cancelled */
};

struct tstate {
    struct ev_loop *loop;
    struct pool *pool;
    pthread_t loop_thread;
    int done;             /* done callbacks; loop thread only */
    _Atomic int next_seq; /* start order */
    _Atomic int bad;      /* wrong context or thread seen in a callback */
    sem_t started, gate;
    pthread_barrier_t barrier;
    _Atomic int overdue_calls;
    _Atomic uint64_t overdue_ns;
};

struct tjob {
    struct pool_job job;
    struct tstate *st;
    enum tjob_kind kind;
    uint64_t spin_ns;
    _Atomic int runs;
    int seq;   /* start order, -1 when never started */
    int dones; /* loop thread only */
    enum pool_status status;
    char name[16];
};

static int tjob_run(struct pool_job *job)
{
    struct tjob *t = job->data;
    struct tstate *st = t->st;
    atomic_fetch_add(&t->runs, 1);
    t->seq = atomic_fetch_add(&st->next_seq, 1);
    if (ctx_current() != job->ctx || pthread_equal(pthread_self(), st->loop_thread))
        atomic_fetch_add(&st->bad, 1);
    uint64_t t0 = ctx_now_ns();
    switch (t->kind) {
    case RUN_NOOP:
        return 0;
    case RUN_FAIL:
        return -EIO;
    case RUN_GATE:
    case RUN_IGNORE:
        sem_post(&st->started);
        sem_wait(&st->gate);
        return ctx_cancelled(job->ctx) ? -ECANCELED : 0;
    case RUN_UNTIL_CANCEL:
        sem_post(&st->started);
        while (!ctx_cancelled(ctx_current())) {
            if (ctx_now_ns() - t0 > 10000 * MS)
                return -ETIMEDOUT; /* never cancelled: let the test fail, not hang */
        }
        return -ECANCELED;
    case RUN_NAME:
        pthread_getname_np(pthread_self(), t->name, sizeof(t->name));
        pthread_barrier_wait(&st->barrier);
        return 0;
    case RUN_SPIN:
        while (ctx_now_ns() - t0 < t->spin_ns) {
            if (ctx_cancelled(ctx_current()))
                return -ECANCELED;
        }
        return 0;
    }
    return -EINVAL;
}

static void tjob_done(struct pool_job *job, enum pool_status status)
{
    struct tjob *t = job->data;
    struct tstate *st = t->st;
    if (ctx_current() != job->ctx || !pthread_equal(pthread_self(), st->loop_thread))
        atomic_fetch_add(&st->bad, 1);
    t->dones++;
    t->status = status;
    st->done++;
}

static void tjob_init(struct tjob *t, struct tstate *st, enum tjob_kind kind, unsigned weight)
{
    memset(t, 0, sizeof(*t));
    t->st = st;
    t->kind = kind;
    t->seq = -1;
    t->job.run = tjob_run;
    t->job.done = tjob_done;
    t->job.data = t;
    t->job.weight = weight;
}

/* A new root context with `tenant` (NULL = unset). */
static struct ctx *tctx(const char *tenant)
{
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    if (tenant)
        CU_ASSERT_EQUAL_FATAL(ctx_set_tenant(c, tenant, strlen(tenant)), 0);
    return c;
}

/* Submit with `c` current on this thread. */
static int tsubmit(struct pool *p, struct tjob *t, struct ctx *c)
{
    struct ctx *prev = ctx_enter(c);
    int r = pool_submit(p, &t->job);
    ctx_leave(prev);
    return r;
}

static void on_loop_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    *(bool *)w->data = true;
}

/* Run the loop until st->done reaches `target` or the time bound passes. */
static bool run_until_done(struct tstate *st, int target)
{
    bool fired = false;
    ev_timer t;
    ev_timer_init(&t, on_loop_timeout, LOOP_TIMEOUT_S, 0.);
    t.data = &fired;
    ev_timer_start(st->loop, &t);
    while (st->done < target && !fired)
        ev_run(st->loop, EVRUN_ONCE);
    ev_timer_stop(st->loop, &t);
    return st->done >= target;
}

static void on_overdue(struct pool_job *job, uint64_t overdue_ns, void *arg)
{
    struct tstate *st = arg;
    if (ctx_current() != job->ctx)
        atomic_fetch_add(&st->bad, 1);
    atomic_fetch_add(&st->overdue_calls, 1);
    atomic_store(&st->overdue_ns, overdue_ns);
    sem_post(&st->gate); /* let the RUN_IGNORE job return */
}

static void tstate_open(struct tstate *st, unsigned workers, size_t capacity, uint64_t grace_ns)
{
    memset(st, 0, sizeof(*st));
    st->loop = ev_loop_new(EVFLAG_AUTO);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st->loop);
    st->loop_thread = pthread_self();
    sem_init(&st->started, 0, 0);
    sem_init(&st->gate, 0, 0);
    struct pool_config cfg = {
        .workers = workers,
        .queue_capacity = capacity,
        .cancel_grace_ns = grace_ns,
        .overdue = on_overdue,
        .overdue_arg = st,
    };
    st->pool = pool_new(st->loop, &cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st->pool);
}

static void tstate_close(struct tstate *st)
{
    CU_ASSERT_EQUAL(pool_stop(st->pool, ctx_now_ns() + 5000 * MS, CTX_REASON_SHUTDOWN), 0);
    CU_ASSERT_EQUAL(pool_pending(st->pool), 0);
    pool_free(st->pool);
    ev_loop_destroy(st->loop);
    sem_destroy(&st->started);
    sem_destroy(&st->gate);
    CU_ASSERT_EQUAL(atomic_load(&st->bad), 0);
    CU_ASSERT_PTR_NULL(ctx_current());
}

/* Start a RUN_GATE job and wait until its worker holds it. */
static void start_gate(struct tstate *st, struct tjob *g, struct ctx *c)
{
    tjob_init(g, st, RUN_GATE, 1);
    CU_ASSERT_EQUAL_FATAL(tsubmit(st->pool, g, c), 0);
    sem_wait(&st->started);
}

/* ---- basics -------------------------------------------------------------------------------- */

static void test_pool_status_name_all(void)
{
    CU_ASSERT_STRING_EQUAL(pool_status_name(POOL_DONE), "done");
    CU_ASSERT_STRING_EQUAL(pool_status_name(POOL_FAILED), "failed");
    CU_ASSERT_STRING_EQUAL(pool_status_name(POOL_CANCELLED_QUEUED), "cancelled_queued");
    CU_ASSERT_STRING_EQUAL(pool_status_name(POOL_CANCELLED_RUNNING), "cancelled_running");
    CU_ASSERT_STRING_EQUAL(pool_status_name(POOL_REFUSED_SHUTDOWN), "shutdown");
}

static void test_pool_new_bad_config(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct pool_config cfg = {.workers = 1, .queue_capacity = 0};
    CU_ASSERT_PTR_NULL(pool_new(loop, &cfg));
    cfg.queue_capacity = 1;
    CU_ASSERT_PTR_NULL(pool_new(NULL, &cfg));
    cfg.workers = 0; /* online CPUs */
    struct pool *p = pool_new(loop, &cfg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    struct pool_stats s;
    pool_stats_get(p, &s);
    CU_ASSERT_EQUAL(s.workers, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
    CU_ASSERT_EQUAL(s.capacity, 1);
    CU_ASSERT_EQUAL(pool_stop(p, 0, CTX_REASON_SHUTDOWN), 0);
    pool_free(p);
    pool_free(NULL);
    ev_loop_destroy(loop);
}

static void test_pool_new_thread_names(void)
{
    struct tstate st;
    struct tjob j[3];
    tstate_open(&st, 3, 8, 0);
    pthread_barrier_init(&st.barrier, NULL, 3);
    struct ctx *c = tctx("names");
    for (int i = 0; i < 3; i++) {
        tjob_init(&j[i], &st, RUN_NAME, 1);
        CU_ASSERT_EQUAL(tsubmit(st.pool, &j[i], c), 0);
    }
    CU_ASSERT_FATAL(run_until_done(&st, 3));
    /* The barrier holds each job until all three run: three distinct workers. */
    bool seen[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        unsigned idx = 99;
        CU_ASSERT_EQUAL(sscanf(j[i].name, "spindle-w%u", &idx), 1);
        if (idx < 3)
            seen[idx] = true;
    }
    CU_ASSERT(seen[0] && seen[1] && seen[2]);
    tstate_close(&st);
    pthread_barrier_destroy(&st.barrier);
    ctx_unref(c);
}

static void test_pool_submit_errors(void)
{
    struct tstate st;
    struct tjob t;
    tstate_open(&st, 1, 4, 0);
    struct ctx *c = tctx("err");
    tjob_init(&t, &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL(pool_submit(st.pool, &t.job), -EINVAL); /* no current context */
    t.job.run = NULL;
    CU_ASSERT_EQUAL(tsubmit(st.pool, &t, c), -EINVAL);
    t.job.run = tjob_run;
    t.job.done = NULL;
    CU_ASSERT_EQUAL(tsubmit(st.pool, &t, c), -EINVAL);
    t.job.done = tjob_done;
    struct ctx *dead = tctx("err");
    ctx_cancel(dead, CTX_REASON_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &t, dead), -ECANCELED);
    pool_close(st.pool);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &t, c), -ESHUTDOWN);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT_EQUAL(s.submitted, 0);
    CU_ASSERT_EQUAL(pool_pending(st.pool), 0);
    CU_ASSERT_EQUAL(atomic_load(&t.runs), 0);
    CU_ASSERT_EQUAL(t.dones, 0);
    tstate_close(&st);
    ctx_unref(dead);
    ctx_unref(c);
}

static void test_pool_submit_context_current(void)
{
    struct tstate st;
    struct tjob ok, bad;
    tstate_open(&st, 2, 4, 0);
    struct ctx *c = tctx("cur");
    tjob_init(&ok, &st, RUN_NOOP, 1);
    tjob_init(&bad, &st, RUN_FAIL, 1);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &ok, c), 0);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &bad, c), 0);
    CU_ASSERT_PTR_EQUAL(ok.job.ctx, c); /* a reference to the submitter's context */
    CU_ASSERT_EQUAL(pool_pending(st.pool), 2);
    CU_ASSERT_FATAL(run_until_done(&st, 2));
    CU_ASSERT_EQUAL(atomic_load(&st.bad), 0); /* run on a worker, done on the loop, c current */
    CU_ASSERT_PTR_NULL(ctx_current());        /* restored after done */
    CU_ASSERT_EQUAL(ok.status, POOL_DONE);
    CU_ASSERT_EQUAL(ok.job.result, 0);
    CU_ASSERT_EQUAL(bad.status, POOL_FAILED);
    CU_ASSERT_EQUAL(bad.job.result, -EIO);
    CU_ASSERT(ok.job.t_start_ns >= ok.job.t_submit_ns);
    CU_ASSERT(ok.job.t_end_ns >= ok.job.t_start_ns);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT_EQUAL(s.submitted, 2);
    CU_ASSERT_EQUAL(s.completed, 2);
    CU_ASSERT_EQUAL(s.failed, 1);
    CU_ASSERT_EQUAL(s.queued, 0);
    CU_ASSERT_EQUAL(s.running, 0);
    tstate_close(&st);
    ctx_unref(c);
}

/* ---- fairness -------------------------------------------------------------------------------- */

static void test_pool_submit_fairness(void)
{
    enum { N = 1000 };
    struct tstate st;
    struct tjob *a = calloc(N, sizeof(*a));
    struct tjob b;
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    tstate_open(&st, 1, N + 1, 0);
    struct ctx *ca = tctx("A"), *cb = tctx("B");
    start_gate(&st, &a[0], ca); /* the only worker now holds A's first job */
    for (int i = 1; i < N; i++) {
        tjob_init(&a[i], &st, RUN_NOOP, 1);
        CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &a[i], ca), 0);
    }
    tjob_init(&b, &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &b, cb), 0);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, "A"), N - 1);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, "B"), 1);
    sem_post(&st.gate);
    CU_ASSERT_FATAL(run_until_done(&st, N + 1));
    CU_ASSERT(b.seq >= 1 && b.seq <= 2); /* within the next two jobs after A's first */
    for (int i = 2; i < N; i++)
        CU_ASSERT(a[i].seq > a[i - 1].seq); /* FIFO within A */
    tstate_close(&st);
    ctx_unref(ca);
    ctx_unref(cb);
    free(a);
}

static void test_pool_submit_weights(void)
{
    enum { N = 300, WINDOW = 200 };
    struct tstate st;
    struct tjob *j = calloc(2 * N + 1, sizeof(*j));
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    tstate_open(&st, 1, 2 * N, 0);
    struct ctx *ca = tctx("A"), *cb = tctx("B"), *cg = tctx("G");
    start_gate(&st, &j[2 * N], cg);
    for (int i = 0; i < N; i++) { /* interleaved, so neither has a head start */
        tjob_init(&j[2 * i], &st, RUN_NOOP, 3);
        CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &j[2 * i], ca), 0);
        tjob_init(&j[2 * i + 1], &st, RUN_NOOP, 1);
        CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &j[2 * i + 1], cb), 0);
    }
    sem_post(&st.gate);
    CU_ASSERT_FATAL(run_until_done(&st, 2 * N + 1));
    int a_in_window = 0;
    for (int i = 0; i < 2 * N; i += 2)
        a_in_window += j[i].seq >= 1 && j[i].seq <= WINDOW;
    CU_ASSERT(a_in_window >= WINDOW * 3 / 4 - 5 && a_in_window <= WINDOW * 3 / 4 + 5);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT(s.wait_ns_total > 0);
    CU_ASSERT(s.run_ns_total > 0);
    CU_ASSERT_EQUAL(pool_tenants_active(st.pool), 0); /* empty tenants were freed */
    tstate_close(&st);
    ctx_unref(ca);
    ctx_unref(cb);
    ctx_unref(cg);
    free(j);
}

static void test_pool_tenant_queued_empty_tenant(void)
{
    struct tstate st;
    struct tjob g, x, y;
    tstate_open(&st, 1, 4, 0);
    struct ctx *cg = tctx("g"), *none = tctx(NULL), *cx = tctx("x");
    start_gate(&st, &g, cg);
    tjob_init(&x, &st, RUN_NOOP, 1);
    tjob_init(&y, &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &x, none), 0);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &y, cx), 0);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, ""), 1);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, "x"), 1);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, "g"), 0); /* running is not queued */
    CU_ASSERT_EQUAL(pool_tenants_active(st.pool), 2);
    sem_post(&st.gate);
    CU_ASSERT_FATAL(run_until_done(&st, 3));
    CU_ASSERT_EQUAL(pool_tenants_active(st.pool), 0);
    tstate_close(&st);
    ctx_unref(cg);
    ctx_unref(none);
    ctx_unref(cx);
}

/* ---- cancellation, deadlines, full queue, overdue -------------------------------------------- */

static void test_pool_submit_cancel_queued(void)
{
    struct tstate st;
    struct tjob g, x;
    tstate_open(&st, 1, 4, 0);
    struct ctx *cg = tctx("g"), *cx = tctx("x");
    start_gate(&st, &g, cg);
    tjob_init(&x, &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &x, cx), 0);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, "x"), 1);
    CU_ASSERT_EQUAL(ctx_cancel(cx, CTX_REASON_CLIENT_CLOSED), 0);
    CU_ASSERT_EQUAL(pool_tenant_queued(st.pool, "x"), 0); /* unlinked by the cancel itself */
    /* Completed while the only worker is still held by g. */
    CU_ASSERT_FATAL(run_until_done(&st, 1));
    CU_ASSERT_EQUAL(x.dones, 1);
    CU_ASSERT_EQUAL(x.status, POOL_CANCELLED_QUEUED);
    CU_ASSERT_EQUAL(x.job.reason, CTX_REASON_CLIENT_CLOSED);
    CU_ASSERT_EQUAL(x.job.t_start_ns, 0);
    CU_ASSERT_EQUAL(g.dones, 0);
    sem_post(&st.gate);
    CU_ASSERT_FATAL(run_until_done(&st, 2));
    CU_ASSERT_EQUAL(atomic_load(&x.runs), 0);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT_EQUAL(s.cancelled_queued, 1);
    CU_ASSERT_EQUAL(s.completed, 1);
    tstate_close(&st);
    ctx_unref(cg);
    ctx_unref(cx);
}

static void test_pool_submit_cancel_running(void)
{
    struct tstate st;
    struct tjob x;
    tstate_open(&st, 1, 4, 1000 * MS);
    struct ctx *cx = tctx("x");
    tjob_init(&x, &st, RUN_UNTIL_CANCEL, 1);
    CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &x, cx), 0);
    sem_wait(&st.started);
    CU_ASSERT_EQUAL(ctx_cancel(cx, CTX_REASON_CLIENT_CLOSED), 0);
    CU_ASSERT_FATAL(run_until_done(&st, 1));
    CU_ASSERT_EQUAL(atomic_load(&x.runs), 1);
    CU_ASSERT_EQUAL(x.status, POOL_CANCELLED_RUNNING);
    CU_ASSERT_EQUAL(x.job.result, -ECANCELED);
    CU_ASSERT_EQUAL(x.job.reason, CTX_REASON_CLIENT_CLOSED);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT_EQUAL(s.cancelled_running, 1);
    CU_ASSERT_EQUAL(s.overdue, 0); /* it stopped well within its grace */
    CU_ASSERT_EQUAL(atomic_load(&st.overdue_calls), 0);
    tstate_close(&st);
    ctx_unref(cx);
}

struct deadline_wait {
    ev_timer timer;
    struct ctx *c;
    struct tstate *st;
};

/* Release the gate once the queued job's deadline has passed by the clock the pool uses. */
static void on_deadline_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct deadline_wait *d = w->data;
    uint64_t now = ctx_now_ns(), dl = ctx_deadline(d->c);
    if (now < dl) {
        ev_timer_set(w, (double)(dl - now) / 1e9 + 0.001, 0.);
        ev_timer_start(loop, w);
        return;
    }
    sem_post(&d->st->gate);
}

static void test_pool_submit_deadline_queued(void)
{
    struct tstate st;
    struct tjob g, x;
    tstate_open(&st, 1, 4, 0);
    struct ctx *cg = tctx("g"), *cx = tctx("x");
    start_gate(&st, &g, cg);
    ctx_set_deadline(cx, ctx_now_ns() + 3 * MS);
    tjob_init(&x, &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &x, cx), 0);
    struct deadline_wait d = {.c = cx, .st = &st};
    ev_timer_init(&d.timer, on_deadline_timer, 0.003, 0.);
    d.timer.data = &d;
    ev_timer_start(st.loop, &d.timer);
    CU_ASSERT_FATAL(run_until_done(&st, 2));
    ev_timer_stop(st.loop, &d.timer);
    CU_ASSERT_EQUAL(atomic_load(&x.runs), 0);
    CU_ASSERT_EQUAL(x.status, POOL_CANCELLED_QUEUED);
    CU_ASSERT_EQUAL(x.job.reason, CTX_REASON_DEADLINE);
    CU_ASSERT_EQUAL(g.status, POOL_DONE);
    tstate_close(&st);
    ctx_unref(cg);
    ctx_unref(cx);
}

static void test_pool_submit_queue_full(void)
{
    struct tstate st;
    struct tjob g, x[3];
    tstate_open(&st, 1, 2, 0);
    struct ctx *c = tctx("full");
    start_gate(&st, &g, c); /* running: does not count against the capacity */
    for (int i = 0; i < 3; i++)
        tjob_init(&x[i], &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &x[0], c), 0);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &x[1], c), 0);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &x[2], c), -EAGAIN);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT_EQUAL(s.refused_full, 1);
    CU_ASSERT_EQUAL(s.queued, 2);
    CU_ASSERT_EQUAL(s.running, 1);
    CU_ASSERT_EQUAL(s.submitted, 3);
    CU_ASSERT_EQUAL(pool_pending(st.pool), 3);
    sem_post(&st.gate);
    CU_ASSERT_FATAL(run_until_done(&st, 3));
    CU_ASSERT_EQUAL(x[2].dones, 0);
    CU_ASSERT_EQUAL(atomic_load(&x[2].runs), 0);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &x[2], c), 0); /* room again; a refused job can be reused */
    CU_ASSERT_FATAL(run_until_done(&st, 4));
    CU_ASSERT_EQUAL(x[2].dones, 1);
    tstate_close(&st);
    ctx_unref(c);
}

static void test_pool_overdue_reported_once(void)
{
    struct tstate st;
    struct tjob x;
    tstate_open(&st, 1, 4, 5 * MS);
    struct ctx *cx = tctx("slow");
    tjob_init(&x, &st, RUN_IGNORE, 1);
    CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &x, cx), 0);
    sem_wait(&st.started);
    CU_ASSERT_EQUAL(ctx_cancel(cx, CTX_REASON_DEADLINE), 0);
    /* The job only returns when the overdue callback opens the gate. */
    CU_ASSERT_FATAL(run_until_done(&st, 1));
    CU_ASSERT_EQUAL(atomic_load(&st.overdue_calls), 1);
    CU_ASSERT(atomic_load(&st.overdue_ns) >= 5 * MS);
    CU_ASSERT_EQUAL(x.status, POOL_CANCELLED_RUNNING);
    CU_ASSERT_EQUAL(x.job.reason, CTX_REASON_DEADLINE);
    struct pool_stats s;
    pool_stats_get(st.pool, &s);
    CU_ASSERT_EQUAL(s.overdue, 1);
    tstate_close(&st);
    ctx_unref(cx);
}

/* ---- stop ------------------------------------------------------------------------------------ */

static void test_pool_stop_in_time(void)
{
    enum { N = 20 };
    struct tstate st;
    struct tjob j[N];
    tstate_open(&st, 2, N, 0);
    struct ctx *c = tctx("stop");
    for (int i = 0; i < N; i++) {
        tjob_init(&j[i], &st, RUN_NOOP, 1);
        CU_ASSERT_EQUAL(tsubmit(st.pool, &j[i], c), 0);
    }
    /* No ev_run: pool_stop runs the done callbacks itself. */
    CU_ASSERT_EQUAL(pool_stop(st.pool, ctx_now_ns() + 10000 * MS, CTX_REASON_SHUTDOWN), 0);
    CU_ASSERT_EQUAL(st.done, N);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(j[i].dones, 1);
        CU_ASSERT_EQUAL(j[i].status, POOL_DONE);
    }
    tstate_close(&st);
    ctx_unref(c);
}

static void test_pool_stop_cancels_running_refuses_queued(void)
{
    enum { RUNNING = 2, QUEUED = 5 };
    struct tstate st;
    struct tjob r[RUNNING], q[QUEUED], late;
    tstate_open(&st, RUNNING, 16, 0);
    struct ctx *c = tctx("stop");
    for (int i = 0; i < RUNNING; i++) {
        tjob_init(&r[i], &st, RUN_UNTIL_CANCEL, 1);
        CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &r[i], c), 0);
    }
    for (int i = 0; i < RUNNING; i++)
        sem_wait(&st.started);
    struct ctx *cq = tctx("queued"); /* a different context: stop cancels only running ones */
    for (int i = 0; i < QUEUED; i++) {
        tjob_init(&q[i], &st, RUN_NOOP, 1);
        CU_ASSERT_EQUAL_FATAL(tsubmit(st.pool, &q[i], cq), 0);
    }
    CU_ASSERT_EQUAL(pool_stop(st.pool, ctx_now_ns() + 20 * MS, CTX_REASON_SHUTDOWN), -ETIMEDOUT);
    CU_ASSERT_EQUAL(st.done, RUNNING + QUEUED);
    CU_ASSERT_EQUAL(pool_pending(st.pool), 0);
    for (int i = 0; i < RUNNING; i++) {
        CU_ASSERT_EQUAL(r[i].dones, 1);
        CU_ASSERT_EQUAL(r[i].status, POOL_CANCELLED_RUNNING);
        CU_ASSERT_EQUAL(r[i].job.reason, CTX_REASON_SHUTDOWN);
    }
    for (int i = 0; i < QUEUED; i++) {
        CU_ASSERT_EQUAL(q[i].dones, 1);
        CU_ASSERT_EQUAL(q[i].status, POOL_REFUSED_SHUTDOWN);
        CU_ASSERT_EQUAL(q[i].job.reason, CTX_REASON_SHUTDOWN);
        CU_ASSERT_EQUAL(atomic_load(&q[i].runs), 0);
    }
    CU_ASSERT_FALSE(ctx_cancelled(cq));
    tjob_init(&late, &st, RUN_NOOP, 1);
    CU_ASSERT_EQUAL(tsubmit(st.pool, &late, cq), -ESHUTDOWN);
    tstate_close(&st); /* a second stop finds nothing to do */
    ctx_unref(c);
    ctx_unref(cq);
}

/* ---- exactly once under concurrency ---------------------------------------------------------- */

enum { SUBMITTERS = 8, PER_THREAD = 300 };

struct submitter {
    pthread_t tid;
    struct tstate *st;
    ev_async *finished_async;
    _Atomic int *finished;
    struct tjob jobs[PER_THREAD];
    int rc[PER_THREAD];
    unsigned seed;
};

/* Submit from this thread, each job with its own context, and cancel earlier ones at random. */
static void *submitter_main(void *arg)
{
    struct submitter *s = arg;
    struct ctx **ctxs = calloc(PER_THREAD, sizeof(*ctxs));
    char tenant[8];
    for (int i = 0; i < PER_THREAD && ctxs; i++) {
        snprintf(tenant, sizeof(tenant), "t%d", rand_r(&s->seed) % 5);
        ctxs[i] = ctx_new_root();
        if (!ctxs[i] || ctx_set_tenant(ctxs[i], tenant, strlen(tenant)) != 0)
            abort();
        tjob_init(&s->jobs[i], s->st, RUN_SPIN, 1 + rand_r(&s->seed) % 3);
        s->jobs[i].spin_ns = (uint64_t)(rand_r(&s->seed) % 50) * 1000;
        s->rc[i] = tsubmit(s->st->pool, &s->jobs[i], ctxs[i]);
        if (rand_r(&s->seed) % 3 == 0)
            ctx_cancel(ctxs[rand_r(&s->seed) % (i + 1)], CTX_REASON_CLIENT_CLOSED);
    }
    for (int i = 0; i < PER_THREAD && ctxs; i++)
        ctx_unref(ctxs[i]);
    free(ctxs);
    if (atomic_fetch_add(s->finished, 1) + 1 == SUBMITTERS)
        ev_async_send(s->st->loop, s->finished_async);
    return NULL;
}

static void on_submitters_finished(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static void test_pool_submit_exactly_once_threads(void)
{
    struct tstate st;
    tstate_open(&st, 2, 64, 0);
    struct submitter *s = calloc(SUBMITTERS, sizeof(*s));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    _Atomic int finished = 0;
    ev_async fin;
    ev_async_init(&fin, on_submitters_finished);
    ev_async_start(st.loop, &fin);
    for (int i = 0; i < SUBMITTERS; i++) {
        s[i].st = &st;
        s[i].finished_async = &fin;
        s[i].finished = &finished;
        s[i].seed = 1234u + (unsigned)i;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&s[i].tid, NULL, submitter_main, &s[i]), 0);
    }
    /* Done callbacks run here while the threads still submit and cancel. */
    bool fired = false;
    ev_timer t;
    ev_timer_init(&t, on_loop_timeout, LOOP_TIMEOUT_S, 0.);
    t.data = &fired;
    ev_timer_start(st.loop, &t);
    while (atomic_load(&finished) < SUBMITTERS && !fired)
        ev_run(st.loop, EVRUN_ONCE);
    ev_timer_stop(st.loop, &t);
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(s[i].tid, NULL);
    ev_async_stop(st.loop, &fin);

    int accepted = 0, full = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        for (int k = 0; k < PER_THREAD; k++) {
            CU_ASSERT(s[i].rc[k] == 0 || s[i].rc[k] == -EAGAIN);
            accepted += s[i].rc[k] == 0;
            full += s[i].rc[k] == -EAGAIN;
        }
    }
    CU_ASSERT_FATAL(run_until_done(&st, accepted));
    CU_ASSERT_EQUAL(st.done, accepted);
    struct pool_stats ps;
    pool_stats_get(st.pool, &ps);
    CU_ASSERT_EQUAL(ps.submitted, (uint64_t)accepted);
    CU_ASSERT_EQUAL(ps.refused_full, (uint64_t)full);
    CU_ASSERT_EQUAL(ps.completed + ps.cancelled_queued + ps.cancelled_running, (uint64_t)accepted);
    CU_ASSERT_EQUAL(ps.queued, 0);
    CU_ASSERT_EQUAL(ps.running, 0);
    CU_ASSERT(ps.cancelled_queued + ps.cancelled_running > 0);
    tstate_close(&st);
    /* After stop nothing can still arrive: check every job exactly once. */
    for (int i = 0; i < SUBMITTERS; i++) {
        for (int k = 0; k < PER_THREAD; k++) {
            struct tjob *j = &s[i].jobs[k];
            CU_ASSERT_EQUAL(j->dones, s[i].rc[k] == 0 ? 1 : 0);
            CU_ASSERT(atomic_load(&j->runs) <= 1);
            if (j->status == POOL_CANCELLED_QUEUED)
                CU_ASSERT_EQUAL(atomic_load(&j->runs), 0);
        }
    }
    free(s);
}

int suite_pool_pool(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_pool_status_name_all),
        SPINDLE_TEST(test_pool_new_bad_config),
        SPINDLE_TEST(test_pool_new_thread_names),
        SPINDLE_TEST(test_pool_submit_errors),
        SPINDLE_TEST(test_pool_submit_context_current),
        SPINDLE_TEST(test_pool_submit_fairness),
        SPINDLE_TEST(test_pool_submit_weights),
        SPINDLE_TEST(test_pool_tenant_queued_empty_tenant),
        SPINDLE_TEST(test_pool_submit_cancel_queued),
        SPINDLE_TEST(test_pool_submit_cancel_running),
        SPINDLE_TEST(test_pool_submit_deadline_queued),
        SPINDLE_TEST(test_pool_submit_queue_full),
        SPINDLE_TEST(test_pool_overdue_reported_once),
        SPINDLE_TEST(test_pool_stop_in_time),
        SPINDLE_TEST(test_pool_stop_cancels_running_refuses_queued),
        SPINDLE_TEST(test_pool_submit_exactly_once_threads),
    };
    return SPINDLE_SUITE_ADD("pool_pool", NULL, NULL, tests);
}
