/* test_store_pg.c - unit tests for server/tasks/store_pg.c and store_pg_conn.c: the cases every
 * backend passes (store_cases.c), each on a new database of a throw-away cluster
 * (tests/integration/pg.h), then enqueues in pipelines, groups of enqueues at a tenant's cap,
 * and what sharing adds: two owners claiming
 * at once (SKIP LOCKED), fairness by tenant, a lease taken over by another owner, a cancellation
 * elsewhere seen by NOTIFY and by the poll alone, a due notification, reconnecting after the
 * connection was cut, the schema check of `spindle tasks migrate --check`, and the store thread
 * handing those events to the loop.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ev.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/tasks/internal.h"
#include "server/tasks/tasks.h"
#include "tests/integration/pg.h"
#include "tests/suite.h"
#include "tests/unit/server/tasks/store_cases.h"

int suite_server_tasks_store_pg(void);

static const struct srv_task_store_ops *const ops = &srv_task_store_pg;

static int tp_set_version(const char *loc, int v)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "UPDATE spindle_schema SET version=%d", v);
    return pg_sql(loc, sql);
}

static const struct ts_backend tp_backend = {
    .ops = &srv_task_store_pg,
    .fresh = pg_db_new,
    .set_version = tp_set_version,
    .exclusive = false,
};

static int tp_init(void)
{
    ts_be = &tp_backend;
    return pg_skip() != NULL ? 0 : pg_start();
}

/* ---- helpers --------------------------------------------------------------------------------- */

static sem_t tp_woken;

static void tp_wake(void *arg)
{
    (void)arg;
    sem_post(&tp_woken);
}

/* A second store on the database at ts_loc, woken through tp_woken. */
static void *tp_open_woken(void)
{
    struct srv_task_store_opts o = {.path = ts_loc, .wake = tp_wake};
    void *st = NULL;
    char err[512] = "";
    CU_ASSERT_EQUAL_FATAL(ops->open(&o, &st, err, sizeof(err)), 0);
    return st;
}

struct tp_seen {
    unsigned due, lost, changed;
    char id[SRV_TASK_ID_LEN + 1];
    unsigned attempt;
};

static void tp_event(const struct srv_task_event *ev, void *arg)
{
    struct tp_seen *s = arg;
    if (ev->kind == SRV_TASK_EV_DUE)
        s->due++;
    if (ev->kind == SRV_TASK_EV_CHANGED)
        s->changed++;
    if (ev->kind == SRV_TASK_EV_LOST) {
        s->lost++;
        memcpy(s->id, ev->id, sizeof(s->id));
        s->attempt = ev->attempt;
    }
}

/* Take events (notifications only) until `until` says enough or 10 s pass. */
static void tp_events_wait(void *st, struct tp_seen *s, bool (*until)(const struct tp_seen *))
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += 10;
    while (!until(s)) {
        CU_ASSERT_EQUAL(ops->events(st, "me", srv_task_now_ms(), false, tp_event, s), 0);
        if (until(s) || sem_timedwait(&tp_woken, &end) != 0)
            break;
    }
}

static bool tp_has_lost(const struct tp_seen *s)
{
    return s->lost > 0;
}

static bool tp_has_due(const struct tp_seen *s)
{
    return s->due > 0;
}

static void tp_enqueue_n(void *st, const char *tenant, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        struct srv_task t;
        bool existed;
        ts_task(&t, tenant, "{}", NULL);
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 1000, &existed), 0);
        srv_task_fini(&t);
    }
}

static void tp_fini_all(struct srv_task *t, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        srv_task_fini(&t[i]);
}

/* ---- what sharing adds ----------------------------------------------------------------------- */

/* Enqueues that arrived together go in pipelines (more of them than one pipeline holds): each
 * gets the answer enqueue would give it one by one: stored, an idempotent repeat within the same
 * batch (the task of the first), a key reused with another body, the tenant's cap. */
static void test_pg_enqueue_many_answers_each(void)
{
    enum { N = PG_PIPELINE_MAX + 70 };
    void *st = ts_open();
    struct srv_task_req *reqs = calloc(N, sizeof(*reqs));
    CU_ASSERT_PTR_NOT_NULL_FATAL(reqs);
    for (unsigned i = 0; i < N; i++) {
        struct srv_task_req *r = &reqs[i];
        r->op = SRV_TASK_OP_ENQUEUE;
        r->cap = 1000;
        r->next = i + 1 < N ? &reqs[i + 1] : NULL;
        if (i >= N - 6 && i < N - 3) /* a key: new, repeated, reused with another body */
            ts_task(&r->task, "a", i == N - 4 ? "{}" : i == N - 3 ? "{\"x\":1}" : "{}", "k");
        else if (i >= N - 3) /* a tenant capped at 2 */
            ts_task(&r->task, "capped", "{}", NULL);
        else
            ts_task(&r->task, "a", "{}", NULL);
        if (i >= N - 3)
            r->cap = 2;
        r->rc = 12345;
    }
    /* the key's third use has the other body */
    srv_task_fini(&reqs[N - 4].task);
    ts_task(&reqs[N - 4].task, "a", "{\"x\":1}", "k");
    CU_ASSERT_EQUAL(ops->begin(st), 0);
    CU_ASSERT_EQUAL(ops->write_many(st, reqs, N, srv_task_now_ms()), 0);
    CU_ASSERT_EQUAL(ops->commit(st), 0);
    unsigned stored = 0;
    for (unsigned i = 0; i < N - 6; i++)
        stored += reqs[i].rc == 0 && !reqs[i].existed;
    CU_ASSERT_EQUAL(stored, N - 6);
    CU_ASSERT(reqs[N - 6].rc == 0 && !reqs[N - 6].existed);
    CU_ASSERT(reqs[N - 5].rc == 0 && reqs[N - 5].existed);
    CU_ASSERT_STRING_EQUAL(reqs[N - 5].task.id, reqs[N - 6].task.id);
    CU_ASSERT_EQUAL(reqs[N - 4].rc, -EEXIST);
    CU_ASSERT(reqs[N - 3].rc == 0 && reqs[N - 2].rc == 0);
    CU_ASSERT_EQUAL(reqs[N - 1].rc, -EDQUOT);
    CU_ASSERT_EQUAL(pg_sql_int(ts_loc, "SELECT count(*) FROM spindle_tasks"), N - 6 + 1 + 2);
    for (unsigned i = 0; i < N; i++)
        srv_task_fini(&reqs[i].task);
    free(reqs);
    ops->close(st);
}

/* Groups of enqueues one after the other: a count younger than a second stands in while the
 * tenant is below half its cap, and every group near the cap counts again, so one store never
 * takes more than the cap; a rolled-back group's inserts are not remembered. */
static void test_pg_enqueue_groups_keep_the_cap(void)
{
    void *st = ts_open();
    struct srv_task_req r;
    unsigned stored = 0;
    for (unsigned i = 0; i < 7; i++) {
        memset(&r, 0, sizeof(r));
        r.op = SRV_TASK_OP_ENQUEUE;
        r.cap = 4;
        ts_task(&r.task, "capped", "{}", NULL);
        CU_ASSERT_EQUAL(ops->begin(st), 0);
        CU_ASSERT_EQUAL(ops->write_many(st, &r, 1, srv_task_now_ms()), 0);
        if (i == 1) { /* this one never happened */
            ops->rollback(st);
        } else {
            CU_ASSERT_EQUAL(ops->commit(st), 0);
            CU_ASSERT_EQUAL(r.rc, i <= 4 ? 0 : -EDQUOT); /* 0, 2, 3, 4 fill the cap */
            stored += r.rc == 0;
        }
        srv_task_fini(&r.task);
    }
    CU_ASSERT_EQUAL(stored, 4);
    CU_ASSERT_EQUAL(pg_sql_int(ts_loc, "SELECT count(*) FROM spindle_tasks"), 4);
    ops->close(st);
}

/* The runner's starts and completions that arrive together, mixed with an enqueue, go in
 * pipelines too, each with its own answer: a start, a completion (its result stored), a stale
 * completion (another attempt), an enqueue. */
static void test_pg_write_many_starts_and_completes(void)
{
    void *st = ts_open();
    struct srv_task t, c[2], got;
    bool existed;
    for (int i = 0; i < 2; i++) {
        ts_task(&t, "a", "{}", NULL);
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 100, &existed), 0);
        srv_task_fini(&t);
    }
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL_FATAL(ts_claim(st, "me", now, 2, c), 2);
    struct srv_task_req r[4];
    memset(r, 0, sizeof(r));
    r[0].op = SRV_TASK_OP_START;
    r[1].op = SRV_TASK_OP_COMPLETE;
    r[2].op = SRV_TASK_OP_COMPLETE;
    r[3].op = SRV_TASK_OP_ENQUEUE;
    for (int i = 0; i < 3; i++) {
        memcpy(r[i].task.id, c[i == 2].id, sizeof(r[i].task.id));
        r[i].task.attempt = i == 2 ? 2 : 1; /* the second task runs attempt 1: stale */
    }
    r[1].task.result = "{\"n\":7}";
    r[1].task.result_len = 7;
    snprintf(r[1].task.content_type, sizeof(r[1].task.content_type), "application/json");
    ts_task(&r[3].task, "a", "{}", NULL);
    r[3].cap = 100;
    for (int i = 0; i < 3; i++)
        r[i].next = &r[i + 1];
    CU_ASSERT_EQUAL(ops->begin(st), 0);
    CU_ASSERT_EQUAL(ops->write_many(st, r, 4, now), 0);
    CU_ASSERT_EQUAL(ops->commit(st), 0);
    CU_ASSERT_EQUAL(r[0].rc, 0);
    CU_ASSERT_EQUAL(r[1].rc, 0);
    CU_ASSERT_EQUAL(r[2].rc, -ESTALE);
    CU_ASSERT(r[3].rc == 0 && !r[3].existed);
    CU_ASSERT_EQUAL(ops->get(st, "a", c[0].id, true, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_SUCCEEDED);
    CU_ASSERT(got.started_ms > 0);
    CU_ASSERT(got.result != NULL && got.result_len == 7 && memcmp(got.result, "{\"n\":7}", 7) == 0);
    srv_task_fini(&got);
    CU_ASSERT_EQUAL(ops->get(st, "a", c[1].id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_RUNNING);
    srv_task_fini(&got);
    r[1].task.result = NULL; /* a literal, not the record's */
    srv_task_fini(&r[3].task);
    tp_fini_all(c, 2);
    ops->close(st);
}

static void test_pg_claim_two_owners_skip_locked(void)
{
    void *a = ts_open(), *b = tp_open_woken();
    tp_enqueue_n(a, "t", 4);
    int64_t now = srv_task_now_ms() + 1;
    struct srv_task ca[4], cb[4];
    unsigned na = 0, nb = 0;
    /* a holds its claim's row locks while b claims: b neither waits nor takes a's tasks. */
    CU_ASSERT_EQUAL(ops->begin(a), 0);
    CU_ASSERT_EQUAL(ops->claim(a, "a", now, now + 1000, 2, ca, &na), 0);
    CU_ASSERT_EQUAL(ops->begin(b), 0);
    CU_ASSERT_EQUAL(ops->claim(b, "b", now, now + 1000, 4, cb, &nb), 0);
    CU_ASSERT_EQUAL(ops->commit(b), 0);
    CU_ASSERT_EQUAL(ops->commit(a), 0);
    CU_ASSERT_EQUAL(na, 2);
    CU_ASSERT_EQUAL(nb, 2);
    for (unsigned i = 0; i < na; i++)
        for (unsigned j = 0; j < nb; j++)
            CU_ASSERT_STRING_NOT_EQUAL(ca[i].id, cb[j].id);
    tp_fini_all(ca, na);
    tp_fini_all(cb, nb);
    ops->close(b);
    ops->close(a);
}

static void test_pg_claim_fair_by_tenant(void)
{
    void *st = ts_open();
    tp_enqueue_n(st, "early", 10); /* enqueued first: older run_at than every task of "late" */
    tp_enqueue_n(st, "late", 2);
    struct srv_task c[4];
    unsigned n = ts_claim(st, "me", srv_task_now_ms() + 1, 4, c);
    CU_ASSERT_EQUAL(n, 4);
    unsigned late = 0;
    for (unsigned i = 0; i < n; i++)
        late += strcmp(c[i].tenant, "late") == 0;
    CU_ASSERT_EQUAL(late, 2); /* rank 1 and 2 of each tenant, not the first four of "early" */
    tp_fini_all(c, n);
    ops->close(st);
}

static void test_pg_lease_taken_over_fences_the_first(void)
{
    void *a = ts_open(), *b = tp_open_woken();
    tp_enqueue_n(a, "t", 1);
    int64_t now = srv_task_now_ms() + 1;
    struct srv_task c[1];
    CU_ASSERT_EQUAL_FATAL(ts_claim(a, "a", now, 1, c), 1); /* lease until now + 1000 */
    char id[SRV_TASK_ID_LEN + 1];
    memcpy(id, c[0].id, sizeof(id));
    srv_task_fini(&c[0]);
    CU_ASSERT_EQUAL(ops->start(a, id, 1, now), 0); /* it ran, then a died */
    unsigned n = 0;
    CU_ASSERT_EQUAL(ops->begin(b), 0);
    CU_ASSERT_EQUAL(ops->expire(b, now + 1001, &n), 0); /* a died: b ends its lease */
    CU_ASSERT_EQUAL(ops->commit(b), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL_FATAL(ts_claim(b, "b", now + 1001, 1, c), 1);
    CU_ASSERT_EQUAL(c[0].attempt, 2);
    srv_task_fini(&c[0]);
    /* a's late success is discarded; b's counts. */
    CU_ASSERT_EQUAL(ops->begin(a), 0);
    CU_ASSERT_EQUAL(ops->complete(a, id, 1, now + 1002, "a", 1, "text/plain"), -ESTALE);
    CU_ASSERT_EQUAL(ops->commit(a), 0);
    CU_ASSERT_EQUAL(ops->begin(b), 0);
    CU_ASSERT_EQUAL(ops->complete(b, id, 2, now + 1002, "b", 1, "text/plain"), 0);
    CU_ASSERT_EQUAL(ops->commit(b), 0);
    struct srv_task got;
    CU_ASSERT_EQUAL(ops->get(a, "t", id, true, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_SUCCEEDED);
    CU_ASSERT_STRING_EQUAL(got.result, "b");
    CU_ASSERT_EQUAL(got.interrupted, 1);
    srv_task_fini(&got);
    ops->close(b);
    ops->close(a);
}

static void test_pg_events_cancel_elsewhere(void)
{
    void *runner = ts_open();
    void *other = tp_open_woken(); /* the one that runs the attempt, woken by notifications */
    ops->close(runner);
    struct tp_seen seen = {0};
    tp_events_wait(other, &seen, tp_has_due); /* listening now: what follows is notified */
    CU_ASSERT_EQUAL(seen.due, 1);
    tp_enqueue_n(other, "t", 1);
    struct srv_task c[1], got;
    CU_ASSERT_EQUAL_FATAL(ts_claim(other, "me", srv_task_now_ms() + 1, 1, c), 1);
    void *canceller = ts_reopen();
    bool running = false;
    CU_ASSERT_EQUAL(ops->begin(canceller), 0);
    CU_ASSERT_EQUAL(ops->cancel(canceller, "t", c[0].id, srv_task_now_ms(), &got, &running), 0);
    CU_ASSERT_EQUAL(ops->commit(canceller), 0);
    CU_ASSERT_TRUE(running);
    srv_task_fini(&got);
    memset(&seen, 0, sizeof(seen));
    tp_events_wait(other, &seen, tp_has_lost);
    CU_ASSERT_EQUAL(seen.lost, 1);
    CU_ASSERT_STRING_EQUAL(seen.id, c[0].id);
    CU_ASSERT_EQUAL(seen.attempt, 1);
    /* Reported once: the poll does not find it again. */
    memset(&seen, 0, sizeof(seen));
    CU_ASSERT_EQUAL(ops->events(other, "me", srv_task_now_ms(), true, tp_event, &seen), 0);
    CU_ASSERT_EQUAL(seen.lost, 0);
    srv_task_fini(&c[0]);
    ops->close(canceller);
    ops->close(other);
}

static void test_pg_events_poll_finds_lost_attempt(void)
{
    void *st = ts_open();
    tp_enqueue_n(st, "t", 1);
    struct srv_task c[1];
    CU_ASSERT_EQUAL_FATAL(ts_claim(st, "me", srv_task_now_ms() + 1, 1, c), 1);
    /* Cancelled without a notification (as through a pooler that drops them). */
    CU_ASSERT_EQUAL(pg_sql(ts_loc, "UPDATE spindle_tasks SET state=5, owner=NULL"), 0);
    struct tp_seen seen = {0};
    CU_ASSERT_EQUAL(ops->events(st, "me", srv_task_now_ms(), true, tp_event, &seen), 0);
    CU_ASSERT_EQUAL(seen.lost, 1);
    CU_ASSERT_STRING_EQUAL(seen.id, c[0].id);
    srv_task_fini(&c[0]);
    ops->close(st);
}

static void test_pg_events_due_notified(void)
{
    void *a = ts_open(), *b = tp_open_woken();
    struct tp_seen seen = {0};
    /* The notification of b's own start (listening: "claim what you missed") first. */
    tp_events_wait(b, &seen, tp_has_due);
    CU_ASSERT_EQUAL(seen.due, 1);
    memset(&seen, 0, sizeof(seen));
    tp_enqueue_n(a, "t", 3); /* three transactions, three notifications */
    tp_events_wait(b, &seen, tp_has_due);
    CU_ASSERT(seen.due >= 1);
    ops->close(b);
    ops->close(a);
}

static void test_pg_reconnect_after_cut(void)
{
    void *st = ts_open();
    tp_enqueue_n(st, "t", 1);
    /* Cut every connection of spindle's but the test's own. */
    CU_ASSERT_EQUAL(pg_sql(ts_loc, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
                                   " application_name='spindle' AND pid<>pg_backend_pid()"),
                    0);
    struct srv_task t;
    bool existed;
    ts_task(&t, "t", "{}", NULL);
    /* The first statement finds the connection gone; the next transaction reconnects. */
    int rc = ops->begin(st);
    if (rc == 0) {
        rc = ops->enqueue(st, &t, 1000, &existed);
        if (rc == 0)
            rc = ops->commit(st);
    }
    if (rc != 0) {
        CU_ASSERT_EQUAL(rc, -EIO);
        ops->rollback(st);
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 1000, &existed), 0);
    }
    srv_task_fini(&t);
    CU_ASSERT_EQUAL(pg_sql_int(ts_loc, "SELECT count(*) FROM spindle_tasks"), 2);
    ops->close(st);
}

/* A statement prepared in a transaction that rolls back stays prepared (PostgreSQL does not
 * roll prepares back): the next claim runs it, and does not prepare it a second time. */
static void test_pg_prepared_survive_rollback(void)
{
    void *st = ts_open();
    tp_enqueue_n(st, "t", 2);
    int64_t now = srv_task_now_ms() + 1;
    struct srv_task c[2];
    unsigned n = 0;
    CU_ASSERT_EQUAL(ops->begin(st), 0);
    CU_ASSERT_EQUAL(ops->claim(st, "me", now, now + 1000, 2, c, &n), 0);
    tp_fini_all(c, n);
    ops->rollback(st);
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 2, c), 2);
    tp_fini_all(c, 2);
    ops->close(st);
}

/* With prepared statements off (poolers that do not keep them), everything is sent unnamed
 * and works the same: enqueue, claim, a batch's start and completion, the poll. */
static void test_pg_unprepared_store_works(void)
{
    struct srv_task_store_opts o = {.path = ts_loc, .unprepared = true};
    void *st = NULL;
    char err[512] = "";
    CU_ASSERT_EQUAL_FATAL(ops->open(&o, &st, err, sizeof(err)), 0);
    tp_enqueue_n(st, "u", 2);
    int64_t now = srv_task_now_ms() + 1;
    struct srv_task c[2];
    CU_ASSERT_EQUAL_FATAL(ts_claim(st, "me", now, 2, c), 2);
    struct srv_task_req r[2];
    memset(r, 0, sizeof(r));
    r[0].op = SRV_TASK_OP_START;
    r[1].op = SRV_TASK_OP_COMPLETE;
    for (int i = 0; i < 2; i++) {
        memcpy(r[i].task.id, c[0].id, sizeof(r[i].task.id));
        r[i].task.attempt = 1;
    }
    r[0].next = &r[1];
    CU_ASSERT_EQUAL(ops->begin(st), 0);
    CU_ASSERT_EQUAL(ops->write_many(st, r, 2, now), 0);
    CU_ASSERT_EQUAL(ops->commit(st), 0);
    CU_ASSERT_EQUAL(r[0].rc, 0);
    CU_ASSERT_EQUAL(r[1].rc, 0);
    struct srv_task got;
    CU_ASSERT_EQUAL(ops->get(st, "u", c[0].id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_SUCCEEDED);
    srv_task_fini(&got);
    struct tp_seen seen = {0};
    CU_ASSERT_EQUAL(ops->events(st, "me", now, true, tp_event, &seen), 0);
    CU_ASSERT_EQUAL(seen.lost, 0);
    tp_fini_all(c, 2);
    ops->close(st);
}

static void test_pg_schema_check(void)
{
    char err[512] = "";
    unsigned have = 99, want = 0;
    CU_ASSERT_EQUAL_FATAL(pg_db_new(ts_loc, sizeof(ts_loc)), 0);
    struct srv_task_store_opts o = {.path = ts_loc};
    CU_ASSERT_EQUAL(ops->schema(&o, &have, &want, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(have, 0);
    CU_ASSERT_EQUAL(want, PG_SCHEMA_VERSION);
    void *st = ts_reopen();
    ops->close(st);
    CU_ASSERT_EQUAL(ops->schema(&o, &have, &want, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(have, want);
    o.path = "postgresql://nobody:secret@127.0.0.1:1/none";
    CU_ASSERT_EQUAL(ops->schema(&o, &have, &want, err, sizeof(err)), -EIO);
    CU_ASSERT_PTR_NULL(strstr(err, "secret")); /* the password never reaches a message */
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "127.0.0.1:1"));
}

/* ---- schedules --------------------------------------------------------------------------------
 */

struct tp_sched {
    int64_t tick;
    char task[SRV_TASK_ID_LEN + 1];
};

static void tp_sched_fn(const char *name, int64_t last_tick_ms, const char *last_task,
                        int64_t fired_ms, void *arg)
{
    struct tp_sched *r = arg;
    (void)fired_ms;
    if (strcmp(name, "nightly") == 0) {
        r->tick = last_tick_ms;
        snprintf(r->task, sizeof(r->task), "%s", last_task);
    }
}

static int tp_fire(void *st, int64_t tick, unsigned cap, bool *fired, char id[SRV_TASK_ID_LEN + 1])
{
    struct srv_task t;
    ts_task(&t, "t", "{}", NULL);
    memcpy(id, t.id, SRV_TASK_ID_LEN + 1);
    CU_ASSERT_EQUAL(ops->begin(st), 0);
    int rc = ops->schedule_fire(st, "nightly", tick, srv_task_now_ms(), &t, cap, fired);
    CU_ASSERT_EQUAL(ops->commit(st), 0);
    srv_task_fini(&t);
    return rc;
}

static void test_pg_schedule_fires_once_per_tick(void)
{
    void *a = ts_open(), *b = tp_open_woken();
    bool fired = false;
    char first[SRV_TASK_ID_LEN + 1], id[SRV_TASK_ID_LEN + 1];
    CU_ASSERT_EQUAL(tp_fire(a, 1000, 10, &fired, first), 0);
    CU_ASSERT_TRUE(fired);
    /* The same tick from another instance: nothing written. */
    CU_ASSERT_EQUAL(tp_fire(b, 1000, 10, &fired, id), 0);
    CU_ASSERT_FALSE(fired);
    CU_ASSERT_EQUAL(pg_sql_int(ts_loc, "SELECT count(*) FROM spindle_tasks"), 1);
    /* A refused enqueue records no tick; the next tick fires. */
    CU_ASSERT_EQUAL(tp_fire(b, 2000, 1, &fired, id), -EDQUOT);
    CU_ASSERT_FALSE(fired);
    struct tp_sched rec = {0};
    CU_ASSERT_EQUAL(ops->schedule_list(a, tp_sched_fn, &rec), 0);
    CU_ASSERT_EQUAL(rec.tick, 1000);
    CU_ASSERT_STRING_EQUAL(rec.task, first);
    CU_ASSERT_EQUAL(tp_fire(b, 2000, 10, &fired, id), 0);
    CU_ASSERT_TRUE(fired);
    CU_ASSERT_EQUAL(ops->schedule_list(b, tp_sched_fn, &rec), 0);
    CU_ASSERT_EQUAL(rec.tick, 2000);
    CU_ASSERT_STRING_EQUAL(rec.task, id);
    CU_ASSERT_EQUAL(pg_sql_int(ts_loc, "SELECT count(*) FROM spindle_tasks"), 2);
    ops->close(b);
    ops->close(a);
}

/* ---- the store thread with events --------------------------------------------------------- */

struct tp_loop {
    struct ev_loop *loop;
    struct tp_seen seen;
    unsigned done;
    struct srv_task_req *claim;
};

static void tp_loop_event(const struct srv_task_event *ev, void *arg)
{
    struct tp_loop *l = arg;
    tp_event(ev, &l->seen);
    ev_break(l->loop, EVBREAK_ALL);
}

static void tp_loop_done(struct srv_task_req *req)
{
    struct tp_loop *l = req->data;
    l->done++;
    ev_break(l->loop, EVBREAK_ALL);
}

static void tp_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    *(bool *)w->data = true;
    ev_break(loop, EVBREAK_ALL);
}

/* Run the loop until `until` or 10 s pass (then the test's assertions fail). */
static void tp_loop_run(struct tp_loop *l, bool (*until)(const struct tp_loop *))
{
    bool timed_out = false;
    ev_timer t;
    ev_timer_init(&t, tp_timeout, 10.0, 0.0);
    t.data = &timed_out;
    ev_timer_start(l->loop, &t);
    while (!until(l) && !timed_out)
        ev_run(l->loop, EVRUN_ONCE);
    ev_timer_stop(l->loop, &t);
    CU_ASSERT_FALSE(timed_out);
}

static bool tp_l_due(const struct tp_loop *l)
{
    return l->seen.due > 0;
}

static bool tp_l_done(const struct tp_loop *l)
{
    return l->done > 0;
}

static bool tp_l_lost(const struct tp_loop *l)
{
    return l->seen.lost > 0;
}

static void test_srv_task_store_events_reach_the_loop(void)
{
    struct tp_loop l = {.loop = ev_loop_new(0)};
    void *other = ts_open();
    struct srv_task_store_config cfg = {.ops = ops,
                                        .lease_ms = 30000,
                                        .retention_ms = 86400000,
                                        .poll_ms = 60000, /* notifications only */
                                        .on_event = tp_loop_event,
                                        .event_arg = &l};
    cfg.opts.path = ts_loc;
    snprintf(cfg.owner, sizeof(cfg.owner), "thread");
    struct srv_task_store *s = NULL;
    char err[512] = "";
    CU_ASSERT_EQUAL_FATAL(srv_task_store_start(l.loop, &cfg, &s, err, sizeof(err)), 0);
    tp_loop_run(&l, tp_l_due); /* the LISTEN connection's first "claim what you missed" */
    memset(&l.seen, 0, sizeof(l.seen));
    tp_enqueue_n(other, "t", 1); /* enqueued elsewhere: the thread hears of it */
    tp_loop_run(&l, tp_l_due);
    CU_ASSERT(l.seen.due >= 1);
    struct srv_task_req req = {.op = SRV_TASK_OP_CLAIM, .done = tp_loop_done, .data = &l, .max = 1};
    CU_ASSERT_EQUAL(srv_task_store_submit(s, &req), 0);
    tp_loop_run(&l, tp_l_done);
    CU_ASSERT_EQUAL_FATAL(req.n, 1);
    struct srv_task got;
    bool running = false;
    CU_ASSERT_EQUAL(ops->begin(other), 0);
    CU_ASSERT_EQUAL(ops->cancel(other, "t", req.tasks[0].id, srv_task_now_ms(), &got, &running), 0);
    CU_ASSERT_EQUAL(ops->commit(other), 0);
    srv_task_fini(&got);
    tp_loop_run(&l, tp_l_lost); /* the attempt the thread claimed was cancelled elsewhere */
    CU_ASSERT_EQUAL(l.seen.lost, 1);
    CU_ASSERT_STRING_EQUAL(l.seen.id, req.tasks[0].id);
    srv_task_req_fini(&req);
    srv_task_store_stop(s);
    ops->close(other);
    ev_loop_destroy(l.loop);
}

static void test_srv_task_store_backend_by_scheme(void)
{
    CU_ASSERT_PTR_EQUAL(srv_task_store_backend("postgresql://h/db"), &srv_task_store_pg);
    CU_ASSERT_PTR_EQUAL(srv_task_store_backend("postgres://h/db"), &srv_task_store_pg);
    CU_ASSERT_PTR_EQUAL(srv_task_store_backend("spindle-tasks.db"), &srv_task_store_sqlite);
    CU_ASSERT_PTR_EQUAL(srv_task_store_backend("/var/lib/postgresql.db"), &srv_task_store_sqlite);
}

int suite_server_tasks_store_pg(void)
{
    static const struct spindle_test tests[] = {
        TS_CASES(pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_enqueue_many_answers_each, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_enqueue_groups_keep_the_cap, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_write_many_starts_and_completes, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_claim_two_owners_skip_locked, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_claim_fair_by_tenant, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_lease_taken_over_fences_the_first, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_events_cancel_elsewhere, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_events_poll_finds_lost_attempt, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_events_due_notified, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_reconnect_after_cut, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_prepared_survive_rollback, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_unprepared_store_works, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_schema_check, pg_skip),
        SPINDLE_TEST_UNLESS(test_pg_schedule_fires_once_per_tick, pg_skip),
        SPINDLE_TEST_UNLESS(test_srv_task_store_events_reach_the_loop, pg_skip),
        SPINDLE_TEST(test_srv_task_store_backend_by_scheme),
    };
    sem_init(&tp_woken, 0, 0);
    return SPINDLE_SUITE_ADD("server_tasks_store_pg", tp_init, NULL, tests);
}
