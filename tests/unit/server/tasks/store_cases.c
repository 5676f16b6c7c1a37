/* store_cases.c - the task store tests every backend passes, driven directly as the store
 * thread drives a backend: enqueue and idempotency, the tenant cap, claim with attempt fencing,
 * retries, release, cancel, list pagination, purge, lease expiry after a reopen, a newer schema
 * refused, a schedule's tick fired once, waiting tasks counted by tenant (top and the rest). The
 * suite of each backend (test_store_sqlite.c, test_store_pg.c) runs them with its struct
 * ts_backend.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tasks/tasks.h"
#include "tests/unit/server/tasks/store_cases.h"

const struct ts_backend *ts_be;
char ts_loc[512];

void *ts_open(void)
{
    CU_ASSERT_EQUAL_FATAL(ts_be->fresh(ts_loc, sizeof(ts_loc)), 0);
    return ts_reopen();
}

void *ts_reopen(void)
{
    struct srv_task_store_opts o = {ts_loc};
    void *st = NULL;
    char err[512] = "";
    int rc = ts_be->ops->open(&o, &st, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "%s: open: %s\n", ts_be->ops->name, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return st;
}

void ts_task(struct srv_task *t, const char *tenant, const char *spec, const char *key)
{
    memset(t, 0, sizeof(*t));
    srv_task_id_new(t->id);
    snprintf(t->tenant, sizeof(t->tenant), "%s", tenant);
    snprintf(t->kind, sizeof(t->kind), "noop");
    snprintf(t->request_id, sizeof(t->request_id), "req-1");
    snprintf(t->idem_key, sizeof(t->idem_key), "%s", key ? key : "");
    t->attempts = 3;
    t->backoff_ms = 100;
    t->created_ms = t->run_at_ms = srv_task_now_ms();
    t->spec = strdup(spec);
    t->spec_len = strlen(spec);
}

/* Enqueue in its own transaction; returns the enqueue's code. */
int ts_enqueue(void *st, struct srv_task *t, unsigned cap, bool *existed)
{
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    int rc = ts_be->ops->enqueue(st, t, cap, existed);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    return rc;
}

unsigned ts_claim(void *st, const char *owner, int64_t now, unsigned max, struct srv_task *out)
{
    unsigned n = 0;
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->claim(st, owner, now, now + 1000, max, out, &n), 0);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    return n;
}

void test_enqueue_get_and_idempotency(void)
{
    void *st = ts_open();
    struct srv_task t, again, other, got;
    bool existed = true;
    ts_task(&t, "a", "{\"kind\":\"noop\"}", "k1");
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
    CU_ASSERT_FALSE(existed);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_QUEUED);
    CU_ASSERT_STRING_EQUAL(got.spec, "{\"kind\":\"noop\"}");
    CU_ASSERT_STRING_EQUAL(got.errors, "[]");
    srv_task_fini(&got);
    /* Another tenant does not see it. */
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "b", t.id, false, &got), -ENOENT);
    /* The same key and body: the stored task. */
    ts_task(&again, "a", "{\"kind\":\"noop\"}", "k1");
    CU_ASSERT_EQUAL(ts_enqueue(st, &again, 10, &existed), 0);
    CU_ASSERT_TRUE(existed);
    CU_ASSERT_STRING_EQUAL(again.id, t.id);
    /* The same key, another body: refused. */
    ts_task(&other, "a", "{\"kind\":\"spin\"}", "k1");
    CU_ASSERT_EQUAL(ts_enqueue(st, &other, 10, &existed), -EEXIST);
    /* The same key under another tenant is another task. */
    srv_task_fini(&other);
    ts_task(&other, "b", "{\"kind\":\"spin\"}", "k1");
    CU_ASSERT_EQUAL(ts_enqueue(st, &other, 10, &existed), 0);
    CU_ASSERT_FALSE(existed);
    srv_task_fini(&t);
    srv_task_fini(&again);
    srv_task_fini(&other);
    ts_be->ops->close(st);
}

void test_enqueue_tenant_cap(void)
{
    void *st = ts_open();
    struct srv_task t;
    bool existed;
    for (int i = 0; i < 2; i++) {
        ts_task(&t, "a", "{}", NULL);
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 2, &existed), 0);
        srv_task_fini(&t);
    }
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 2, &existed), -EDQUOT);
    srv_task_fini(&t);
    ts_task(&t, "b", "{}", NULL);
    t.run_at_ms += 100000; /* not due: the claim below takes one of a's */
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 2, &existed), 0);
    srv_task_fini(&t);
    /* A task of a that ends (here: cancelled) frees a place; a rolled-back enqueue takes none. */
    struct srv_task out[1], got;
    bool running;
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 1, out), 1);
    CU_ASSERT_EQUAL(ts_be->ops->cancel(st, out[0].tenant, out[0].id, now, &got, &running), 0);
    srv_task_fini(&got);
    srv_task_fini(&out[0]);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_be->ops->enqueue(st, &t, 2, &existed), 0);
    ts_be->ops->rollback(st);
    srv_task_fini(&t);
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 2, &existed), 0);
    srv_task_fini(&t);
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 2, &existed), -EDQUOT);
    srv_task_fini(&t);
    ts_be->ops->close(st);
}

void test_claim_complete_fencing(void)
{
    void *st = ts_open();
    struct srv_task t, c[4], got;
    bool existed;
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 4, c), 1);
    CU_ASSERT_EQUAL(c[0].state, SRV_TASK_RUNNING);
    CU_ASSERT_EQUAL(c[0].attempt, 1);
    srv_task_fini(&c[0]);
    /* Nothing else is due. */
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 4, c), 0);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    /* A stale attempt changes nothing. */
    CU_ASSERT_EQUAL(ts_be->ops->complete(st, t.id, 2, now, "x", 1, "text/plain"), -ESTALE);
    CU_ASSERT_EQUAL(ts_be->ops->complete(st, t.id, 1, now, "{\"ok\":true}", 11, "application/json"),
                    0);
    /* A second completion of the same attempt is stale: the task is final. */
    CU_ASSERT_EQUAL(ts_be->ops->complete(st, t.id, 1, now, "y", 1, "text/plain"), -ESTALE);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t.id, true, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_SUCCEEDED);
    CU_ASSERT_EQUAL(got.result_len, 11);
    CU_ASSERT_STRING_EQUAL(got.result, "{\"ok\":true}");
    CU_ASSERT_STRING_EQUAL(got.content_type, "application/json");
    srv_task_fini(&got);
    /* A succeeded task is never claimed again. */
    CU_ASSERT_EQUAL(ts_claim(st, "me", now + 100000, 4, c), 0);
    srv_task_fini(&t);
    ts_be->ops->close(st);
}

void test_fail_retry_then_failed(void)
{
    void *st = ts_open();
    struct srv_task t, c[1], got;
    bool existed;
    ts_task(&t, "a", "{}", NULL);
    t.attempts = 2;
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 1, c), 1);
    srv_task_fini(&c[0]);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    CU_ASSERT_EQUAL(
        ts_be->ops->fail(st, t.id, 1, now, "{\"attempt\":1,\"code\":\"job_failed\"}", now + 500),
        0);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_RETRYING);
    CU_ASSERT_EQUAL(got.run_at_ms, now + 500);
    srv_task_fini(&got);
    /* Not due before its run_at. */
    CU_ASSERT_EQUAL(ts_claim(st, "me", now + 499, 1, c), 0);
    CU_ASSERT_EQUAL(ts_claim(st, "me", now + 500, 1, c), 1);
    CU_ASSERT_EQUAL(c[0].attempt, 2);
    srv_task_fini(&c[0]);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    CU_ASSERT_EQUAL(
        ts_be->ops->fail(st, t.id, 2, now, "{\"attempt\":2,\"code\":\"deadline_exceeded\"}", 0), 0);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_FAILED);
    CU_ASSERT_PTR_NOT_NULL(strstr(got.errors, "job_failed"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got.errors, "deadline_exceeded"));
    CU_ASSERT_NOT_EQUAL(got.finished_ms, 0);
    srv_task_fini(&got);
    srv_task_fini(&t);
    ts_be->ops->close(st);
}

void test_release_and_cancel(void)
{
    void *st = ts_open();
    struct srv_task t, c[1], got;
    bool existed, running;
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 1, c), 1);
    srv_task_fini(&c[0]);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->release(st, t.id, 1), 0);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_QUEUED);
    CU_ASSERT_EQUAL(got.attempt, 0); /* the attempt was not used up */
    srv_task_fini(&got);
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 1, c), 1);
    CU_ASSERT_EQUAL(c[0].attempt, 1);
    srv_task_fini(&c[0]);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->cancel(st, "b", t.id, now, &got, &running), -ENOENT);
    CU_ASSERT_EQUAL(ts_be->ops->cancel(st, "a", t.id, now, &got, &running), 0);
    CU_ASSERT_TRUE(running);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_CANCELLED);
    srv_task_fini(&got);
    /* The running attempt's late completion is discarded; a second cancel changes nothing. */
    CU_ASSERT_EQUAL(ts_be->ops->complete(st, t.id, 1, now, "x", 1, "text/plain"), -ESTALE);
    CU_ASSERT_EQUAL(ts_be->ops->cancel(st, "a", t.id, now, &got, &running), 0);
    CU_ASSERT_FALSE(running);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_CANCELLED);
    srv_task_fini(&got);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    srv_task_fini(&t);
    ts_be->ops->close(st);
}

void test_list_pages(void)
{
    void *st = ts_open();
    struct srv_task t;
    bool existed;
    for (int i = 0; i < 5; i++) {
        ts_task(&t, "a", "{}", NULL);
        if (i == 4)
            snprintf(t.kind, sizeof(t.kind), "spin");
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
        srv_task_fini(&t);
    }
    ts_task(&t, "b", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
    srv_task_fini(&t);
    struct srv_task out[3];
    unsigned n = 0, total = 0;
    char after[SRV_TASK_ID_LEN + 1] = "";
    struct srv_task_filter f = {.state = -1, .limit = 3};
    for (int page = 0; page < 4; page++) {
        f.after = after[0] ? after : NULL;
        CU_ASSERT_EQUAL(ts_be->ops->list(st, "a", &f, out, &n), 0);
        for (unsigned i = 0; i < n; i++) {
            CU_ASSERT_STRING_EQUAL(out[i].tenant, "a");
            CU_ASSERT(strcmp(out[i].id, after) > 0);
            memcpy(after, out[i].id, sizeof(after));
            srv_task_fini(&out[i]);
        }
        total += n;
        if (n < 3)
            break;
    }
    CU_ASSERT_EQUAL(total, 5);
    f = (struct srv_task_filter){.state = SRV_TASK_QUEUED, .kind = "spin", .limit = 3};
    CU_ASSERT_EQUAL(ts_be->ops->list(st, "a", &f, out, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    for (unsigned i = 0; i < n; i++)
        srv_task_fini(&out[i]);
    ts_be->ops->close(st);
}

void test_purge_bounded(void)
{
    void *st = ts_open();
    struct srv_task t, got;
    bool existed, running;
    char ids[5][SRV_TASK_ID_LEN + 1];
    int64_t now = srv_task_now_ms();
    for (int i = 0; i < 5; i++) {
        ts_task(&t, "a", "{}", NULL);
        memcpy(ids[i], t.id, sizeof(ids[i]));
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
        srv_task_fini(&t);
        if (i < 4) {
            CU_ASSERT_EQUAL(ts_be->ops->cancel(st, "a", ids[i], now - 1000, &got, &running), 0);
            srv_task_fini(&got);
        }
    }
    unsigned n = 0;
    CU_ASSERT_EQUAL(ts_be->ops->purge(st, now - 500, 3, &n), 0);
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_EQUAL(ts_be->ops->purge(st, now - 500, 3, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(ts_be->ops->purge(st, now - 500, 3, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    /* The unfinished one stays. */
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", ids[4], false, &got), 0);
    srv_task_fini(&got);
    ts_be->ops->close(st);
}

void test_reopen_interrupts_running(void)
{
    void *st = ts_open();
    struct srv_task t, t2, t3, c[2], c3[3], got;
    bool existed;
    ts_task(&t, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t, 10, &existed), 0);
    ts_task(&t2, "a", "{}", NULL);
    t2.attempts = 1;
    CU_ASSERT_EQUAL(ts_enqueue(st, &t2, 10, &existed), 0);
    ts_task(&t3, "a", "{}", NULL);
    CU_ASSERT_EQUAL(ts_enqueue(st, &t3, 10, &existed), 0);
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL(ts_claim(st, "dead", now, 3, c3), 3);
    for (int i = 0; i < 3; i++) { /* two started; the third waited for a slot */
        if (strcmp(c3[i].id, t3.id) != 0)
            CU_ASSERT_EQUAL(ts_be->ops->start(st, c3[i].id, c3[i].attempt, now), 0);
        srv_task_fini(&c3[i]);
    }
    CU_ASSERT_EQUAL(ts_be->ops->start(st, t.id, 7, now), -ESTALE); /* fenced like the rest */
    ts_be->ops->close(st); /* as if the process had died: the leases are still held */
    st = ts_reopen();
    unsigned n = 0;
    /* One process per store: the reopen ended the leases. Shared: only their end does. */
    if (!ts_be->exclusive) {
        CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
        CU_ASSERT_EQUAL(ts_be->ops->expire(st, now + 999, &n), 0);
        CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
        CU_ASSERT_EQUAL(n, 0); /* the lease (now + 1000) still holds */
        now += 1001;
    }
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    CU_ASSERT_EQUAL(ts_be->ops->expire(st, now, &n), 0);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_RETRYING);
    CU_ASSERT_EQUAL(got.interrupted, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(got.errors, "interrupted"));
    srv_task_fini(&got);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t2.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_FAILED); /* that was its only attempt */
    srv_task_fini(&got);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "a", t3.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_QUEUED); /* never started: given back, unused */
    CU_ASSERT_EQUAL(got.attempt, 0);
    CU_ASSERT_EQUAL(got.interrupted, 0);
    CU_ASSERT_STRING_EQUAL(got.errors, "[]");
    srv_task_fini(&got);
    /* The retry is a new attempt; the task that never started has its first. */
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 2, c), 2);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(c[i].attempt, strcmp(c[i].id, t.id) == 0 ? 2u : 1u);
        srv_task_fini(&c[i]);
    }
    srv_task_fini(&t);
    srv_task_fini(&t3);
    srv_task_fini(&t2);
    ts_be->ops->close(st);
}

void test_open_refuses_newer_schema(void)
{
    void *st = ts_open();
    ts_be->ops->close(st);
    CU_ASSERT_EQUAL_FATAL(ts_be->set_version(ts_loc, 99), 0);
    struct srv_task_store_opts o = {ts_loc};
    char err[512] = "";
    CU_ASSERT_EQUAL(ts_be->ops->open(&o, &st, err, sizeof(err)), -EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "schema version 99"));
}

/* Record every schedule the store lists. */
struct ts_sched_seen {
    unsigned n;
    char name[4][32];
    int64_t tick[4];
    char task[4][SRV_TASK_ID_LEN + 1];
};

static void ts_sched_seen(const char *name, int64_t last_tick_ms, const char *last_task,
                          int64_t fired_ms, void *arg)
{
    struct ts_sched_seen *seen = arg;
    CU_ASSERT(fired_ms > 0);
    if (seen->n < 4) {
        snprintf(seen->name[seen->n], sizeof(seen->name[0]), "%s", name);
        snprintf(seen->task[seen->n], sizeof(seen->task[0]), "%s", last_task);
        seen->tick[seen->n++] = last_tick_ms;
    }
}

int ts_fire(void *st, const char *name, int64_t tick, struct srv_task *t, unsigned cap, bool *fired)
{
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    int rc = ts_be->ops->schedule_fire(st, name, tick, srv_task_now_ms(), t, cap, fired);
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    return rc;
}

void test_schedule_fire_once_per_tick(void)
{
    void *st = ts_open();
    struct srv_task t, u, v, got;
    bool fired = false;
    ts_task(&t, "acme", "{\"kind\":\"noop\"}", NULL);
    CU_ASSERT_EQUAL(ts_fire(st, "nightly", 60000, &t, 10, &fired), 0);
    CU_ASSERT_TRUE(fired);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "acme", t.id, false, &got), 0);
    CU_ASSERT_EQUAL(got.state, SRV_TASK_QUEUED);
    srv_task_fini(&got);
    /* the same tick, or an earlier one, again: nothing written */
    ts_task(&u, "acme", "{\"kind\":\"noop\"}", NULL);
    CU_ASSERT_EQUAL(ts_fire(st, "nightly", 60000, &u, 10, &fired), 0);
    CU_ASSERT_FALSE(fired);
    CU_ASSERT_EQUAL(ts_fire(st, "nightly", 0, &u, 10, &fired), 0);
    CU_ASSERT_FALSE(fired);
    CU_ASSERT_EQUAL(ts_be->ops->get(st, "acme", u.id, false, &got), -ENOENT);
    /* another schedule has its own ticks; the tenant cap records nothing */
    CU_ASSERT_EQUAL(ts_fire(st, "hourly", 60000, &u, 10, &fired), 0);
    CU_ASSERT_TRUE(fired);
    ts_task(&v, "acme", "{\"kind\":\"noop\"}", NULL);
    CU_ASSERT_EQUAL(ts_fire(st, "hourly", 120000, &v, 2, &fired), -EDQUOT);
    CU_ASSERT_FALSE(fired);
    struct ts_sched_seen seen = {0};
    CU_ASSERT_EQUAL(ts_be->ops->schedule_list(st, ts_sched_seen, &seen), 0);
    CU_ASSERT_EQUAL_FATAL(seen.n, 2);
    CU_ASSERT_STRING_EQUAL(seen.name[0], "hourly");
    CU_ASSERT_EQUAL(seen.tick[0], 60000);
    CU_ASSERT_STRING_EQUAL(seen.task[0], u.id);
    CU_ASSERT_STRING_EQUAL(seen.name[1], "nightly");
    CU_ASSERT_STRING_EQUAL(seen.task[1], t.id);
    /* the record outlives a reopen */
    ts_be->ops->close(st);
    st = ts_reopen();
    CU_ASSERT_EQUAL(ts_fire(st, "nightly", 60000, &v, 10, &fired), 0);
    CU_ASSERT_FALSE(fired);
    CU_ASSERT_EQUAL(ts_fire(st, "nightly", 120000, &v, 10, &fired), 0);
    CU_ASSERT_TRUE(fired);
    srv_task_fini(&t);
    srv_task_fini(&u);
    srv_task_fini(&v);
    ts_be->ops->close(st);
}

struct ts_queued {
    char tenant[4][16]; /* "" for the rest (NULL) */
    uint64_t n[4];
    unsigned rows;
};

static void ts_queued_seen(const char *tenant, uint64_t n, void *arg)
{
    struct ts_queued *q = arg;
    if (q->rows < 4) {
        snprintf(q->tenant[q->rows], sizeof(q->tenant[0]), "%s", tenant ? tenant : "");
        q->n[q->rows] = n;
    }
    q->rows++;
}

void test_queued_by_tenant(void)
{
    void *st = ts_open();
    struct srv_task t, c[4];
    bool existed;
    /* a: 3 waiting (delayed), b: 2 waiting and one running, c: 1, d: 1 finished. */
    const char *tenants[] = {"a", "a", "a", "b", "b", "b", "c", "d"};
    for (size_t i = 0; i < sizeof(tenants) / sizeof(tenants[0]); i++) {
        ts_task(&t, tenants[i], "{}", NULL);
        if (i != 3 && i != 7) /* only one of b's and d's are due */
            t.run_at_ms += 100000;
        CU_ASSERT_EQUAL(ts_enqueue(st, &t, 100, &existed), 0);
        srv_task_fini(&t);
    }
    int64_t now = srv_task_now_ms();
    CU_ASSERT_EQUAL(ts_claim(st, "me", now, 4, c), 2);
    CU_ASSERT_EQUAL(ts_be->ops->begin(st), 0);
    for (int k = 0; k < 2; k++) {
        if (strcmp(c[k].tenant, "d") == 0) /* d's ends; b's runs on */
            CU_ASSERT_EQUAL(ts_be->ops->complete(st, c[k].id, 1, now, "x", 1, "text/plain"), 0);
        srv_task_fini(&c[k]);
    }
    CU_ASSERT_EQUAL(ts_be->ops->commit(st), 0);
    struct ts_queued q = {0};
    CU_ASSERT_EQUAL(ts_be->ops->queued(st, 2, ts_queued_seen, &q), 0);
    CU_ASSERT_EQUAL(q.rows, 3); /* a 3, b 2, the rest (c) 1 */
    CU_ASSERT_STRING_EQUAL(q.tenant[0], "a");
    CU_ASSERT_EQUAL(q.n[0], 3);
    CU_ASSERT_STRING_EQUAL(q.tenant[1], "b");
    CU_ASSERT_EQUAL(q.n[1], 2);
    CU_ASSERT_STRING_EQUAL(q.tenant[2], "");
    CU_ASSERT_EQUAL(q.n[2], 1);
    memset(&q, 0, sizeof(q)); /* room for all: no rest */
    CU_ASSERT_EQUAL(ts_be->ops->queued(st, 10, ts_queued_seen, &q), 0);
    CU_ASSERT_EQUAL(q.rows, 3);
    CU_ASSERT_STRING_EQUAL(q.tenant[2], "c");
    CU_ASSERT_EQUAL(q.n[2], 1);
    ts_be->ops->close(st);
}
