/* test_store.c - unit tests for server/tasks/store.c: the store thread over the SQLite backend.
 * Requests submitted in one loop iteration share one transaction (group commit), every done
 * callback runs once on the loop thread, an idempotent repeat in the same batch finds the first,
 * a schedule's fire counts as a write only when it stored its task, and stop runs what is still
 * pending. Plus the record helpers (state names, ids).
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <ev.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/tasks/tasks.h"
#include "tests/suite.h"

int suite_server_tasks_store(void);

#define TS_N 50

static char st_dir[] = "/tmp/spindle-taskstore-XXXXXX";

static int st_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int st_init(void)
{
    return mkdtemp(st_dir) == NULL ? -1 : 0;
}

static int st_cleanup(void)
{
    return nftw(st_dir, st_rm, 8, FTW_DEPTH | FTW_PHYS);
}

struct st_ctx {
    struct ev_loop *loop;
    unsigned done, want;
};

static void st_done(struct srv_task_req *req)
{
    struct st_ctx *c = req->data;
    if (++c->done == c->want)
        ev_break(c->loop, EVBREAK_ALL);
}

static void st_fill(struct srv_task_req *r, struct st_ctx *c, const char *key)
{
    memset(r, 0, sizeof(*r));
    r->op = SRV_TASK_OP_ENQUEUE;
    r->done = st_done;
    r->data = c;
    r->cap = 1000;
    srv_task_id_new(r->task.id);
    snprintf(r->task.tenant, sizeof(r->task.tenant), "t");
    snprintf(r->task.kind, sizeof(r->task.kind), "noop");
    snprintf(r->task.idem_key, sizeof(r->task.idem_key), "%s", key ? key : "");
    r->task.attempts = 1;
    r->task.created_ms = r->task.run_at_ms = srv_task_now_ms();
    r->task.spec = strdup("{\"kind\":\"noop\"}");
    r->task.spec_len = strlen(r->task.spec);
}

static struct srv_task_store *st_start(struct ev_loop *loop, const char *name)
{
    struct srv_task_store_config cfg = {
        .ops = &srv_task_store_sqlite, .lease_ms = 30000, .retention_ms = 86400000};
    char path[256], err[256];
    snprintf(path, sizeof(path), "%s/%s", st_dir, name);
    cfg.opts.path = path;
    snprintf(cfg.owner, sizeof(cfg.owner), "test");
    struct srv_task_store *s = NULL;
    CU_ASSERT_EQUAL(srv_task_store_start(loop, &cfg, &s, err, sizeof(err)), 0);
    return s;
}

static void test_srv_task_store_group_commit(void)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct srv_task_store *s = st_start(loop, "group.db");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct st_ctx c = {loop, 0, TS_N + 1};
    static struct srv_task_req reqs[TS_N + 1];
    for (unsigned i = 0; i < TS_N; i++) {
        st_fill(&reqs[i], &c, i == 0 ? "same" : NULL);
        CU_ASSERT_EQUAL(srv_task_store_submit(s, &reqs[i]), 0);
    }
    st_fill(&reqs[TS_N], &c, "same"); /* the same key: finds the first, maybe in its batch */
    CU_ASSERT_EQUAL(srv_task_store_submit(s, &reqs[TS_N]), 0);
    ev_run(loop, 0);
    CU_ASSERT_EQUAL(c.done, TS_N + 1);
    for (unsigned i = 0; i <= TS_N; i++)
        CU_ASSERT_EQUAL(reqs[i].rc, 0);
    CU_ASSERT_TRUE(reqs[TS_N].existed);
    CU_ASSERT_STRING_EQUAL(reqs[TS_N].task.id, reqs[0].task.id);
    const struct srv_task_store_stats *stats = srv_task_store_stats(s);
    uint64_t commits = atomic_load(&stats->commits);
    CU_ASSERT_EQUAL(commits, 1); /* submitted in one loop iteration: one transaction */
    CU_ASSERT_EQUAL(atomic_load(&stats->enqueued), TS_N);
    for (unsigned i = 0; i <= TS_N; i++)
        srv_task_req_fini(&reqs[i]);
    srv_task_store_stop(s);
    ev_loop_destroy(loop);
}

/* A fire that stores its task is a commit (and an fsync) like an enqueue; a tick taken already
 * writes nothing. */
static void test_srv_task_store_schedule_fire_counts(void)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct srv_task_store *s = st_start(loop, "sched.db");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const struct srv_task_store_stats *stats = srv_task_store_stats(s);
    struct srv_task_req r;
    for (unsigned i = 0; i < 2; i++) {
        struct st_ctx c = {loop, 0, 1};
        st_fill(&r, &c, NULL);
        r.op = SRV_TASK_OP_SCHEDULE_FIRE;
        r.schedule = "nightly";
        r.tick_ms = 60000;
        CU_ASSERT_EQUAL(srv_task_store_submit(s, &r), 0);
        ev_run(loop, 0);
        CU_ASSERT_EQUAL(c.done, 1);
        CU_ASSERT_EQUAL(r.rc, 0);
        CU_ASSERT_EQUAL(r.existed, i == 1); /* the second time: taken */
        CU_ASSERT_EQUAL(atomic_load(&stats->commits), 1);
        CU_ASSERT_EQUAL(atomic_load(&stats->fsyncs), 1);
        CU_ASSERT_EQUAL(atomic_load(&stats->enqueued), 1);
        srv_task_req_fini(&r);
    }
    srv_task_store_stop(s);
    ev_loop_destroy(loop);
}

static void test_srv_task_store_stop_runs_pending(void)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct srv_task_store *s = st_start(loop, "stop.db");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    struct st_ctx c = {loop, 0, 3};
    struct srv_task_req reqs[3];
    for (unsigned i = 0; i < 3; i++) {
        st_fill(&reqs[i], &c, NULL);
        CU_ASSERT_EQUAL(srv_task_store_submit(s, &reqs[i]), 0);
    }
    srv_task_store_stop(s); /* without running the loop: the callbacks run here */
    CU_ASSERT_EQUAL(c.done, 3);
    for (unsigned i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(reqs[i].rc, 0);
        srv_task_req_fini(&reqs[i]);
    }
    ev_loop_destroy(loop);
}

static void test_srv_task_store_open_error(void)
{
    struct ev_loop *loop = ev_loop_new(0);
    struct srv_task_store_config cfg = {.ops = &srv_task_store_sqlite, .lease_ms = 30000};
    cfg.opts.path = "/nonexistent-dir/x/tasks.db";
    char err[256] = "";
    struct srv_task_store *s = NULL;
    CU_ASSERT(srv_task_store_start(loop, &cfg, &s, err, sizeof(err)) < 0);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent-dir/x/tasks.db"));
    ev_loop_destroy(loop);
}

static void test_srv_task_state_names_and_ids(void)
{
    enum srv_task_state st;
    for (int i = 0; i < SRV_TASK_STATE__COUNT; i++) {
        CU_ASSERT_EQUAL(srv_task_state_parse(srv_task_state_name((enum srv_task_state)i), &st), 0);
        CU_ASSERT_EQUAL((int)st, i);
    }
    CU_ASSERT_EQUAL(srv_task_state_parse("done", &st), -EINVAL);
    CU_ASSERT_TRUE(srv_task_state_final(SRV_TASK_CANCELLED));
    CU_ASSERT_FALSE(srv_task_state_final(SRV_TASK_RETRYING));
    char a[SRV_TASK_ID_LEN + 1], b[SRV_TASK_ID_LEN + 1];
    srv_task_id_new(a);
    srv_task_id_new(b);
    CU_ASSERT_EQUAL(strlen(a), SRV_TASK_ID_LEN);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
}

int suite_server_tasks_store(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_task_store_group_commit),
        SPINDLE_TEST(test_srv_task_store_schedule_fire_counts),
        SPINDLE_TEST(test_srv_task_store_stop_runs_pending),
        SPINDLE_TEST(test_srv_task_store_open_error),
        SPINDLE_TEST(test_srv_task_state_names_and_ids),
    };
    return SPINDLE_SUITE_ADD("server_tasks_store", st_init, st_cleanup, tests);
}
