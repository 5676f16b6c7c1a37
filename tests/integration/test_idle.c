/* test_idle.c - a server with nothing to do sleeps: over two seconds without requests its threads
 * (the loop, the workers, the logger, the task store) use a small fraction of a CPU together.
 *
 * Design: the server's CPU time is read from /proc/PID/stat (utime + stime, in clock ticks) after
 * it started and settled, and again two seconds later. A thread that polls in a tight loop (a
 * timed wait whose deadline is always past, a claim answered by the next claim) burns a large
 * part of a CPU in that time even on a loaded machine; a sleeping server uses almost none. Load
 * on the machine can only lower the figure, so the bound never fails a correct server.
 */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_idle(void);

#define IDLE_SECONDS  2
#define IDLE_MAX_PART 10 /* at most a tenth of a CPU, on average */

/* utime + stime of process `pid` in clock ticks, -1 when unknown. */
static long long idle_cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after the command's closing parenthesis: state, then fields 4..13, then utime, stime */
    int n =
        fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st);
    fclose(f);
    return n == 2 ? (long long)(ut + st) : -1;
}

static void idle_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void test_idle_server_sleeps(void)
{
    struct hs_server *s = hs_start(NULL);
    HS_CHECK(s != NULL);
    struct hs_resp r = {0};
    HS_CHECK(hs_roundtrip(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    hs_resp_fini(&r);
    idle_sleep_ms(500); /* the start's own work (migrations, the first claim) is done */
    long long before = idle_cpu_ticks(hs_pid(s));
    idle_sleep_ms(IDLE_SECONDS * 1000);
    long long after = idle_cpu_ticks(hs_pid(s));
    HS_CHECK(before >= 0 && after >= before);
    long long limit = (long long)sysconf(_SC_CLK_TCK) * IDLE_SECONDS / IDLE_MAX_PART;
    if (after - before > limit)
        fprintf(stderr, "\n    idle server used %lld ticks in %d s (at most %lld)\n",
                after - before, IDLE_SECONDS, limit);
    CU_ASSERT(after - before <= limit);
out:
    HS_FINISH(s);
}

int suite_integration_idle(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_idle_server_sleeps),
    };
    return SPINDLE_SUITE_ADD("integration_idle", NULL, NULL, tests);
}
