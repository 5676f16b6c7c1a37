/* test_fdgate.c - unit tests for server/fdgate.c: a close waits while a spawn window is open, the
 * last window's end wakes the loop, the deferred closes run on flush, and the bound.
 *
 * Descriptors are pipes; "closed" is checked with fcntl(F_GETFD) answering EBADF right after the
 * call that closes, before anything else in the test could take the number again.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "server/fdgate.h"
#include "tests/suite.h"

int suite_server_fdgate(void);

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

static unsigned wakes;

static void count_wake(void *arg)
{
    (void)arg;
    wakes++;
}

static void test_srv_fdgate_close_at_once(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    srv_fdgate_close(p[0]);
    CU_ASSERT_FALSE(fd_is_open(p[0]));
    srv_fdgate_close(p[1]);
    CU_ASSERT_FALSE(fd_is_open(p[1]));
    srv_fdgate_close(-1); /* nothing to do */
    CU_ASSERT_EQUAL(srv_fdgate_flush(), 0);
}

static void test_srv_fdgate_close_waits_for_windows(void)
{
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    wakes = 0;
    srv_fdgate_waker_set(count_wake, &wakes);
    srv_fdgate_spawn_begin();
    srv_fdgate_spawn_begin(); /* two workers starting programs at once */
    srv_fdgate_close(p[0]);
    CU_ASSERT_TRUE(fd_is_open(p[0]));
    CU_ASSERT_EQUAL(srv_fdgate_flush(), 1); /* windows open: still waiting */
    CU_ASSERT_TRUE(fd_is_open(p[0]));
    srv_fdgate_spawn_end();
    CU_ASSERT_EQUAL(wakes, 0); /* one window is still open */
    CU_ASSERT_TRUE(fd_is_open(p[0]));
    srv_fdgate_spawn_end();
    CU_ASSERT_EQUAL(wakes, 1);
    CU_ASSERT_TRUE(fd_is_open(p[0])); /* the loop closes it, not the worker */
    CU_ASSERT_EQUAL(srv_fdgate_flush(), 0);
    CU_ASSERT_FALSE(fd_is_open(p[0]));
    /* nothing waits: the end of a window wakes nobody */
    srv_fdgate_spawn_begin();
    srv_fdgate_spawn_end();
    CU_ASSERT_EQUAL(wakes, 1);
    srv_fdgate_waker_clear(&wakes);
    close(p[1]);
}

static void test_srv_fdgate_close_flushes_earlier_ones(void)
{
    int a[2], b[2];
    CU_ASSERT_FATAL(pipe(a) == 0);
    CU_ASSERT_FATAL(pipe(b) == 0);
    srv_fdgate_spawn_begin();
    srv_fdgate_close(a[0]);
    srv_fdgate_spawn_end(); /* no waker set: the next close or flush does it */
    CU_ASSERT_TRUE(fd_is_open(a[0]));
    srv_fdgate_close(b[0]);
    CU_ASSERT_FALSE(fd_is_open(a[0]));
    CU_ASSERT_FALSE(fd_is_open(b[0]));
    close(a[1]);
    close(b[1]);
}

static void test_srv_fdgate_close_bounded(void)
{
    enum { N = SRV_FDGATE_DEFERRED_MAX + 1 };
    static int fds[N];
    int opened = 0;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < N + 64 && rl.rlim_max >= N + 64) {
        rl.rlim_cur = N + 64;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    srv_fdgate_spawn_begin();
    for (; opened < N; opened++) {
        int p[2];
        if (pipe(p) != 0)
            break;
        close(p[1]);
        fds[opened] = p[0];
        srv_fdgate_close(p[0]);
    }
    if (opened == N) {
        CU_ASSERT_TRUE(fd_is_open(fds[0]));
        CU_ASSERT_TRUE(fd_is_open(fds[N - 2]));
        CU_ASSERT_FALSE(fd_is_open(fds[N - 1])); /* past the bound: closed at once */
    } else {
        printf("\n    skipped: only %d descriptors available ", opened);
    }
    srv_fdgate_spawn_end();
    CU_ASSERT_EQUAL(srv_fdgate_flush(), 0);
    CU_ASSERT_FALSE(fd_is_open(fds[0]));
}

static void test_srv_fdgate_waker_clear_only_own(void)
{
    int other = 0, p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    wakes = 0;
    srv_fdgate_waker_set(count_wake, &wakes);
    srv_fdgate_waker_clear(&other); /* not the one set: stays */
    srv_fdgate_spawn_begin();
    srv_fdgate_close(p[0]);
    srv_fdgate_spawn_end();
    CU_ASSERT_EQUAL(wakes, 1);
    srv_fdgate_waker_clear(&wakes);
    srv_fdgate_spawn_begin();
    srv_fdgate_close(p[1]);
    srv_fdgate_spawn_end();
    CU_ASSERT_EQUAL(wakes, 1); /* cleared: nobody is woken */
    CU_ASSERT_EQUAL(srv_fdgate_flush(), 0);
    CU_ASSERT_FALSE(fd_is_open(p[0]));
    CU_ASSERT_FALSE(fd_is_open(p[1]));
}

int suite_server_fdgate(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_fdgate_close_at_once),
        SPINDLE_TEST(test_srv_fdgate_close_waits_for_windows),
        SPINDLE_TEST(test_srv_fdgate_close_flushes_earlier_ones),
        SPINDLE_TEST(test_srv_fdgate_close_bounded),
        SPINDLE_TEST(test_srv_fdgate_waker_clear_only_own),
    };
    return SPINDLE_SUITE_ADD("server_fdgate", NULL, NULL, tests);
}
