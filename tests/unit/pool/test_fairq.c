/* test_fairq.c - the per-tenant FIFOs, deficit round robin, O(1) removal and tenant lifetime. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/internal.h"
#include "tests/suite.h"

int suite_pool_fairq(void);

/* Jobs tagged with their tenant and sequence number through job->data. */
struct fq_job {
    struct pool_job job;
    char tenant;
    int seq;
};

static void fq_push(struct pool_fairq *q, struct fq_job *j, char tenant, int seq, unsigned weight)
{
    char name[2] = {tenant, '\0'};
    memset(j, 0, sizeof(*j));
    j->tenant = tenant;
    j->seq = seq;
    j->job.data = j;
    CU_ASSERT_EQUAL_FATAL(pool_fairq_push(q, &j->job, name, weight), 0);
}

static struct fq_job *fq_pop(struct pool_fairq *q)
{
    struct pool_job *job = pool_fairq_pop(q);
    return job ? job->data : NULL;
}

static void test_pool_fairq_pop_fifo_within_tenant(void)
{
    struct pool_fairq q;
    struct fq_job j[5];
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    for (int i = 0; i < 5; i++)
        fq_push(&q, &j[i], 'a', i, 1);
    CU_ASSERT_EQUAL(q.queued, 5);
    CU_ASSERT_EQUAL(q.ntenants, 1);
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, "a"), 5);
    for (int i = 0; i < 5; i++) {
        struct fq_job *x = fq_pop(&q);
        CU_ASSERT_PTR_NOT_NULL_FATAL(x);
        CU_ASSERT_EQUAL(x->seq, i);
        CU_ASSERT_PTR_NULL(x->job.tenant);
    }
    CU_ASSERT_PTR_NULL(pool_fairq_pop(&q));
    CU_ASSERT_EQUAL(q.ntenants, 0);
    CU_ASSERT_PTR_NULL(q.cursor);
    pool_fairq_fini(&q);
}

static void test_pool_fairq_pop_round_robin(void)
{
    struct pool_fairq q;
    struct fq_job j[30];
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    for (int i = 0; i < 10; i++)
        fq_push(&q, &j[i], 'a', i, 0); /* weight 0 counts as 1 */
    for (int i = 0; i < 10; i++)
        fq_push(&q, &j[10 + i], 'b', i, 1);
    for (int i = 0; i < 10; i++)
        fq_push(&q, &j[20 + i], 'c', i, 1);
    for (int i = 0; i < 30; i++) {
        struct fq_job *x = fq_pop(&q);
        CU_ASSERT_PTR_NOT_NULL_FATAL(x);
        CU_ASSERT_EQUAL(x->tenant, "abc"[i % 3]);
        CU_ASSERT_EQUAL(x->seq, i / 3);
    }
    CU_ASSERT_EQUAL(q.ntenants, 0);
    pool_fairq_fini(&q);
}

static void test_pool_fairq_pop_weights(void)
{
    struct pool_fairq q;
    struct fq_job j[80];
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    for (int i = 0; i < 40; i++) {
        fq_push(&q, &j[2 * i], 'a', i, 3);
        fq_push(&q, &j[2 * i + 1], 'b', i, 1);
    }
    /* Turns of 3 a's then 1 b while both have work. */
    for (int i = 0; i < 40; i++) {
        struct fq_job *x = fq_pop(&q);
        CU_ASSERT_EQUAL(x->tenant, i % 4 == 3 ? 'b' : 'a');
    }
    pool_fairq_fini(&q);
}

static void test_pool_fairq_push_newcomer_waits_one_turn(void)
{
    struct pool_fairq q;
    struct fq_job *j = calloc(1001, sizeof(*j));
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    for (int i = 0; i < 1000; i++)
        fq_push(&q, &j[i], 'a', i, 1);
    CU_ASSERT_EQUAL(fq_pop(&q)->seq, 0);
    fq_push(&q, &j[1000], 'b', 0, 1);
    int pops = 0;
    struct fq_job *x;
    do {
        x = fq_pop(&q);
        pops++;
    } while (x && x->tenant != 'b');
    CU_ASSERT_PTR_NOT_NULL(x);
    CU_ASSERT(pops <= 2);
    pool_fairq_fini(&q);
    free(j);
}

/* A tenant with nothing queued that arrives while the busy tenant is between two turns goes
 * first (its job starts after the running one, not after one more of the busy tenant's); a stream
 * of such newcomers gets one jump per turn of a waiting tenant, so the busy one keeps a share. */
static void test_pool_fairq_push_newcomer_goes_first_once(void)
{
    struct pool_fairq q;
    struct fq_job j[40];
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    for (int i = 0; i < 20; i++)
        fq_push(&q, &j[i], 'a', i, 1);
    CU_ASSERT_EQUAL(fq_pop(&q)->seq, 0); /* a's first turn: a has been served */
    fq_push(&q, &j[20], 'b', 0, 1);
    CU_ASSERT_EQUAL(fq_pop(&q)->tenant, 'b'); /* at once, not after a's next job */
    /* no second jump before a has had its turn: newcomers now queue behind it */
    fq_push(&q, &j[21], 'c', 0, 1);
    fq_push(&q, &j[22], 'd', 0, 1);
    CU_ASSERT_EQUAL(fq_pop(&q)->tenant, 'a');
    CU_ASSERT_EQUAL(fq_pop(&q)->tenant, 'c');
    CU_ASSERT_EQUAL(fq_pop(&q)->tenant, 'd');
    /* a newcomer before every pop: a is never passed over by more than one newcomer jump plus
     * one turn of each tenant waiting in the round */
    size_t since_a = 0;
    for (int i = 0; i < 15; i++) {
        fq_push(&q, &j[23 + i], (char)('e' + i), 0, 1);
        size_t waiting = q.ntenants;
        struct fq_job *x = fq_pop(&q);
        since_a = x->tenant == 'a' ? 0 : since_a + 1;
        CU_ASSERT(since_a <= waiting);
    }
    while (fq_pop(&q) != NULL)
        ;
    CU_ASSERT_EQUAL(q.ntenants, 0);
    pool_fairq_fini(&q);
}

static void test_pool_fairq_remove_any_position(void)
{
    struct pool_fairq q;
    struct fq_job j[6];
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    for (int i = 0; i < 4; i++)
        fq_push(&q, &j[i], 'a', i, 1);
    fq_push(&q, &j[4], 'b', 0, 1);
    fq_push(&q, &j[5], 'c', 0, 1);
    pool_fairq_remove(&q, &j[1].job); /* middle */
    pool_fairq_remove(&q, &j[0].job); /* head */
    pool_fairq_remove(&q, &j[3].job); /* tail */
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, "a"), 1);
    pool_fairq_remove(&q, &j[4].job); /* b's only job: b is freed */
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, "b"), 0);
    CU_ASSERT_EQUAL(q.ntenants, 2);
    pool_fairq_remove(&q, &j[2].job); /* a, the cursor, goes: c's turn */
    CU_ASSERT_EQUAL(q.ntenants, 1);
    CU_ASSERT_EQUAL(q.queued, 1);
    CU_ASSERT_EQUAL(fq_pop(&q), &j[5]);
    CU_ASSERT_PTR_NULL(q.cursor);
    pool_fairq_fini(&q);
}

static void test_pool_fairq_push_many_tenants(void)
{
    enum { N = 5000 };
    struct pool_fairq q;
    struct pool_job *jobs = calloc(N, sizeof(*jobs));
    CU_ASSERT_PTR_NOT_NULL_FATAL(jobs);
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    size_t min_buckets = q.nbuckets;
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "tenant-%d", i);
        CU_ASSERT_EQUAL_FATAL(pool_fairq_push(&q, &jobs[i], name, 1), 0);
    }
    CU_ASSERT_EQUAL(q.ntenants, N);
    CU_ASSERT(q.nbuckets >= N);
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, "tenant-4321"), 1);
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, "tenant-5000"), 0);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(pool_fairq_pop(&q), &jobs[i]); /* one job each: plain round order */
    CU_ASSERT_EQUAL(q.ntenants, 0);
    CU_ASSERT_EQUAL(q.nbuckets, min_buckets); /* the table shrank back */
    pool_fairq_fini(&q);
    free(jobs);
}

static void test_pool_fairq_push_names(void)
{
    struct pool_fairq q;
    struct pool_job a, b, c;
    char longname[CTX_TENANT_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CU_ASSERT_EQUAL_FATAL(pool_fairq_init(&q), 0);
    CU_ASSERT_EQUAL(pool_fairq_push(&q, &a, "", 1), 0); /* "" is a tenant of its own */
    CU_ASSERT_EQUAL(pool_fairq_push(&q, &b, "ab", 1), 0);
    CU_ASSERT_EQUAL(pool_fairq_push(&q, &c, longname, 1), -EINVAL);
    longname[CTX_TENANT_MAX] = '\0'; /* exactly the maximum */
    CU_ASSERT_EQUAL(pool_fairq_push(&q, &c, longname, 1), 0);
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, ""), 1);
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, "a"), 0); /* a prefix is another tenant */
    CU_ASSERT_EQUAL(pool_fairq_tenant_queued(&q, longname), 1);
    CU_ASSERT_EQUAL(q.ntenants, 3);
    pool_fairq_fini(&q); /* frees tenants that still have jobs */
}

int suite_pool_fairq(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_pool_fairq_pop_fifo_within_tenant),
        SPINDLE_TEST(test_pool_fairq_pop_round_robin),
        SPINDLE_TEST(test_pool_fairq_pop_weights),
        SPINDLE_TEST(test_pool_fairq_push_newcomer_waits_one_turn),
        SPINDLE_TEST(test_pool_fairq_push_newcomer_goes_first_once),
        SPINDLE_TEST(test_pool_fairq_remove_any_position),
        SPINDLE_TEST(test_pool_fairq_push_many_tenants),
        SPINDLE_TEST(test_pool_fairq_push_names),
    };
    return SPINDLE_SUITE_ADD("pool_fairq", NULL, NULL, tests);
}
