/* test_reqid.c - unit tests for context/reqid.c: request id generation (format, uniqueness
 * across threads and across fork()) and the request id and tenant validity checks.
 */
#include "context/ctx.h"
#include "tests/suite.h"

#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { ID_SIZE = 40 };

static void test_ctx_request_id_generate_format(void)
{
    char buf[ID_SIZE];
    size_t n = ctx_request_id_generate(buf, sizeof(buf));
    CU_ASSERT_TRUE(n >= 20 && n <= 32);
    CU_ASSERT_EQUAL(strlen(buf), n);
    CU_ASSERT_TRUE(ctx_request_id_valid(buf, n));
    /* lower-case letters and digits only: safe in headers, logs and file names */
    CU_ASSERT_EQUAL(strspn(buf, "0123456789abcdefghijklmnopqrstuvwxyz"), n);
    char buf2[ID_SIZE];
    CU_ASSERT_EQUAL(ctx_request_id_generate(buf2, sizeof(buf2)), n);
    CU_ASSERT_STRING_NOT_EQUAL(buf, buf2);
}

static void test_ctx_request_id_generate_small_buffer(void)
{
    char buf[ID_SIZE];
    memset(buf, 'x', sizeof(buf));
    CU_ASSERT_EQUAL(ctx_request_id_generate(buf, 32), 0);
    CU_ASSERT_EQUAL(buf[0], 'x');
    CU_ASSERT_EQUAL(ctx_request_id_generate(NULL, 64), 0);
    CU_ASSERT_TRUE(ctx_request_id_generate(buf, 33) > 0);
}

enum { UNIQ_THREADS = 4, UNIQ_PER_THREAD = 10000 };

struct uniq_worker {
    pthread_t tid;
    char (*ids)[ID_SIZE];
    int bad;
};

static void *uniq_main(void *arg)
{
    struct uniq_worker *w = arg;
    for (int i = 0; i < UNIQ_PER_THREAD; i++) {
        size_t n = ctx_request_id_generate(w->ids[i], ID_SIZE);
        w->bad += n == 0 || !ctx_request_id_valid(w->ids[i], n);
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_ctx_request_id_generate_unique_across_threads(void)
{
    enum { TOTAL = UNIQ_THREADS * UNIQ_PER_THREAD };
    char(*ids)[ID_SIZE] = calloc(TOTAL, ID_SIZE);
    struct uniq_worker w[UNIQ_THREADS];
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    for (int t = 0; t < UNIQ_THREADS; t++) {
        w[t] = (struct uniq_worker){.ids = ids + t * UNIQ_PER_THREAD};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&w[t].tid, NULL, uniq_main, &w[t]), 0);
    }
    int bad = 0;
    for (int t = 0; t < UNIQ_THREADS; t++) {
        CU_ASSERT_EQUAL_FATAL(pthread_join(w[t].tid, NULL), 0);
        bad += w[t].bad;
    }
    CU_ASSERT_EQUAL(bad, 0);
    qsort(ids, TOTAL, ID_SIZE, cmp_id);
    int dups = 0;
    for (int i = 1; i < TOTAL; i++)
        dups += strcmp(ids[i - 1], ids[i]) == 0;
    CU_ASSERT_EQUAL(dups, 0);
    free(ids);
}

/* A forked child must not hand out the ids its parent hands out next. */
static void test_ctx_request_id_generate_after_fork(void)
{
    char parent_id[ID_SIZE], child_id[ID_SIZE] = "";
    int fds[2];
    CU_ASSERT_TRUE(ctx_request_id_generate(parent_id, sizeof(parent_id)) > 0); /* warm state */
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        char id[ID_SIZE];
        size_t n = ctx_request_id_generate(id, sizeof(id));
        _exit(write(fds[1], id, n + 1) == (ssize_t)(n + 1) ? 0 : 1);
    }
    close(fds[1]);
    ctx_request_id_generate(parent_id, sizeof(parent_id));
    ssize_t got = read(fds[0], child_id, sizeof(child_id) - 1);
    close(fds[0]);
    int status = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_TRUE(got > 20);
    CU_ASSERT_STRING_NOT_EQUAL(parent_id, child_id);
}

static void test_ctx_request_id_valid_cases(void)
{
    char big[CTX_REQUEST_ID_MAX + 1];
    memset(big, 'a', sizeof(big));
    CU_ASSERT_TRUE(ctx_request_id_valid("a", 1));
    CU_ASSERT_TRUE(ctx_request_id_valid("!~", 2)); /* 0x21 and 0x7e, the edges */
    CU_ASSERT_TRUE(ctx_request_id_valid("f3a9c0de-1b2c-4d5e-8f90-123456789abc", 36));
    CU_ASSERT_TRUE(ctx_request_id_valid(big, CTX_REQUEST_ID_MAX));
    CU_ASSERT_FALSE(ctx_request_id_valid(big, CTX_REQUEST_ID_MAX + 1));
    CU_ASSERT_FALSE(ctx_request_id_valid("", 0));
    CU_ASSERT_FALSE(ctx_request_id_valid(NULL, 3));
    CU_ASSERT_FALSE(ctx_request_id_valid("a b", 3));   /* 0x20 */
    CU_ASSERT_FALSE(ctx_request_id_valid("a\x7f", 2)); /* DEL */
    CU_ASSERT_FALSE(ctx_request_id_valid("a\tb", 3));
    CU_ASSERT_FALSE(ctx_request_id_valid("a\r\nX: y", 7)); /* header injection */
    CU_ASSERT_FALSE(ctx_request_id_valid("\xc3\xa9", 2));  /* non-ASCII */
    CU_ASSERT_FALSE(ctx_request_id_valid("ab\0cd", 5));
}

static void test_ctx_tenant_valid_cases(void)
{
    char big[CTX_TENANT_MAX + 1];
    memset(big, 'T', sizeof(big));
    CU_ASSERT_TRUE(ctx_tenant_valid("default", 7));
    CU_ASSERT_TRUE(ctx_tenant_valid("Acme.Corp_eu-1", 14));
    CU_ASSERT_TRUE(ctx_tenant_valid("-", 1));
    CU_ASSERT_TRUE(ctx_tenant_valid(big, CTX_TENANT_MAX));
    CU_ASSERT_FALSE(ctx_tenant_valid(big, CTX_TENANT_MAX + 1));
    CU_ASSERT_FALSE(ctx_tenant_valid("", 0));
    CU_ASSERT_FALSE(ctx_tenant_valid(NULL, 1));
    CU_ASSERT_FALSE(ctx_tenant_valid("a b", 3));
    CU_ASSERT_FALSE(ctx_tenant_valid("a/b", 3));
    CU_ASSERT_FALSE(ctx_tenant_valid("a:b", 3));
    CU_ASSERT_FALSE(ctx_tenant_valid("a\"b", 3));
    CU_ASSERT_FALSE(ctx_tenant_valid("caf\xc3\xa9", 5));
}

int suite_context_reqid(void);

int suite_context_reqid(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_ctx_request_id_generate_format),
        SPINDLE_TEST(test_ctx_request_id_generate_small_buffer),
        SPINDLE_TEST(test_ctx_request_id_generate_unique_across_threads),
        SPINDLE_TEST(test_ctx_request_id_generate_after_fork),
        SPINDLE_TEST(test_ctx_request_id_valid_cases),
        SPINDLE_TEST(test_ctx_tenant_valid_cases),
    };
    return SPINDLE_SUITE_ADD("context_reqid", NULL, NULL, tests);
}
