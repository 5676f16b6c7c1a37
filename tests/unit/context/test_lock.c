/* test_lock.c - unit tests for context/lock.h: the checked mutex and condition variable calls
 * pass through on success, report a timed wait's timeout, and abort with a message naming the
 * call on a broken invariant (checked in a forked child, whose stderr is read back).
 */
#include "context/lock.h"
#include "tests/suite.h"

#include <CUnit/CUnit.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void test_ctx_mutex_lock_unlock_ok(void)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    ctx_mutex_lock(&m);
    CU_ASSERT_EQUAL(pthread_mutex_trylock(&m), EBUSY); /* it is held */
    ctx_mutex_unlock(&m);
    CU_ASSERT_EQUAL(pthread_mutex_trylock(&m), 0); /* and released */
    pthread_mutex_unlock(&m);
    pthread_mutex_destroy(&m);
}

static void test_ctx_cond_timedwait_timeout(void)
{
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER; /* CLOCK_REALTIME */
    struct timespec past;
    clock_gettime(CLOCK_REALTIME, &past);
    past.tv_sec -= 1;
    ctx_mutex_lock(&m);
    CU_ASSERT_FALSE(ctx_cond_timedwait(&cv, &m, &past));
    ctx_cond_signal(&cv); /* no waiter: nothing happens, nothing fails */
    ctx_cond_broadcast(&cv);
    ctx_mutex_unlock(&m);
    pthread_cond_destroy(&cv);
    pthread_mutex_destroy(&m);
}

struct waiter {
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool ready, go;
    bool woken; /* the timed wait returned true at least once */
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30; /* a bound, never reached: the main thread signals */
    ctx_mutex_lock(&w->m);
    w->ready = true;
    ctx_cond_broadcast(&w->cv);
    while (!w->go) {
        if (!ctx_cond_timedwait(&w->cv, &w->m, &until))
            break;
        w->woken = true;
    }
    ctx_mutex_unlock(&w->m);
    return NULL;
}

static void test_ctx_cond_timedwait_signalled(void)
{
    struct waiter w = {.m = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, waiter_main, &w) == 0);
    ctx_mutex_lock(&w.m);
    while (!w.ready)
        ctx_cond_wait(&w.cv, &w.m);
    w.go = true;
    ctx_cond_broadcast(&w.cv);
    ctx_mutex_unlock(&w.m);
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    CU_ASSERT_TRUE(w.go);
    CU_ASSERT_TRUE(w.woken);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.m);
}

/* In a child: lock an error-checking mutex this thread already holds (EDEADLK). The child must die
 * of SIGABRT after one line on stderr naming the call and the error. (Not an unlock without the
 * lock: ThreadSanitizer reports that one itself and ends the child before the call returns.) */
static void test_ctx_mutex_lock_relock_aborts(void)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        signal(SIGABRT, SIG_DFL);
        pthread_mutexattr_t a;
        pthread_mutex_t m;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
        pthread_mutex_init(&m, &a);
        ctx_mutex_lock(&m);
        ctx_mutex_lock(&m); /* already held: aborts */
        _exit(0);           /* reached only when the error went unnoticed */
    }
    close(fds[1]);
    char buf[512];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "pthread_mutex_lock failed: EDEADLK"));
}

int suite_context_lock(void);

int suite_context_lock(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_ctx_mutex_lock_unlock_ok),
        SPINDLE_TEST(test_ctx_cond_timedwait_timeout),
        SPINDLE_TEST(test_ctx_cond_timedwait_signalled),
        SPINDLE_TEST(test_ctx_mutex_lock_relock_aborts),
    };
    return SPINDLE_SUITE_ADD("context_lock", NULL, NULL, tests);
}
