/* test_rand.c - unit tests for context/rand.c: the per-thread PRNG (distinct streams per thread,
 * reseeded in a forked child), the kernel source and the fork generation.
 */
#include "context/internal.h"
#include "tests/suite.h"

#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { DRAWS = 256 };

static void test_ctx_rand_u64_varies(void)
{
    uint64_t prev = ctx_rand_u64(), or_all = 0, and_all = ~(uint64_t)0;
    int repeats = 0;
    for (int i = 0; i < DRAWS; i++) {
        uint64_t v = ctx_rand_u64();
        repeats += v == prev;
        or_all |= v;
        and_all &= v;
        prev = v;
    }
    CU_ASSERT_EQUAL(repeats, 0);
    CU_ASSERT_EQUAL(or_all, ~(uint64_t)0); /* every bit is set somewhere */
    CU_ASSERT_EQUAL(and_all, 0);           /* and cleared somewhere */
}

struct stream {
    pthread_t tid;
    uint64_t v[DRAWS];
};

static void *stream_main(void *arg)
{
    struct stream *s = arg;
    for (int i = 0; i < DRAWS; i++)
        s->v[i] = ctx_rand_u64();
    return NULL;
}

/* Each thread seeds its own state: two threads must not produce the same sequence. */
static void test_ctx_rand_u64_per_thread_streams(void)
{
    static struct stream s[2];
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&s[i].tid, NULL, stream_main, &s[i]), 0);
    for (int i = 0; i < 2; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_join(s[i].tid, NULL), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(s[0].v, s[1].v, sizeof(s[0].v)), 0);
    CU_ASSERT_NOT_EQUAL(s[0].v[0], s[1].v[0]);
}

/* Without the reseed a child would draw exactly what the parent draws next. */
static void test_ctx_rand_u64_reseeded_after_fork(void)
{
    uint64_t parent_v, child_v = 0;
    unsigned gen = ctx_rand_fork_gen();
    int fds[2];
    (void)ctx_rand_u64(); /* make sure this thread's state exists before the fork */
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        uint64_t v[2] = {ctx_rand_u64(), ctx_rand_fork_gen() != gen};
        _exit(write(fds[1], v, sizeof(v)) == (ssize_t)sizeof(v) ? 0 : 1);
    }
    close(fds[1]);
    parent_v = ctx_rand_u64();
    uint64_t got[2] = {0, 0};
    ssize_t n = read(fds[0], got, sizeof(got));
    close(fds[0]);
    child_v = got[0];
    int status = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL(n, (ssize_t)sizeof(got));
    CU_ASSERT_EQUAL(got[1], 1); /* the child saw a new fork generation */
    CU_ASSERT_NOT_EQUAL(parent_v, child_v);
    CU_ASSERT_EQUAL(ctx_rand_fork_gen(), gen); /* the parent's is unchanged */
}

static void test_ctx_rand_os_fills(void)
{
    uint8_t a[64], b[64];
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    ctx_rand_os(a, sizeof(a));
    ctx_rand_os(b, sizeof(b));
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, sizeof(a)), 0);
    int zeros = 0;
    for (size_t i = 0; i < sizeof(a); i++)
        zeros += a[i] == 0;
    CU_ASSERT_TRUE(zeros < 16); /* 64 random bytes with 16 zeros: about 1 in 10^20 */
    ctx_rand_os(a, 0);          /* nothing to do, must not block or crash */
}

int suite_context_rand(void);

int suite_context_rand(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_ctx_rand_u64_varies),
        SPINDLE_TEST(test_ctx_rand_u64_per_thread_streams),
        SPINDLE_TEST(test_ctx_rand_u64_reseeded_after_fork),
        SPINDLE_TEST(test_ctx_rand_os_fills),
    };
    return SPINDLE_SUITE_ADD("context_rand", NULL, NULL, tests);
}
