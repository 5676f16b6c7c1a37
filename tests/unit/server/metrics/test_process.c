/* test_process.c - the process_* figures (server/metrics/process.c): the /proc/PID/stat parser
 * on fixed texts, and a live read of this test process. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "server/metrics/process.h"
#include "tests/suite.h"

int suite_server_metrics_process(void);

/* A real line's shape: utime 250, stime 150, starttime 1000 ticks, vsize 50 MiB, rss 1000 pages. */
static const char stat_text[] =
    "4242 (spindle) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 150 0 0 20 0 3 0 1000 52428800 1000 "
    "18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 17 1 0 0 0 0 0\n";

static void test_srv_met_process_stat_parse_fields(void)
{
    struct srv_met_process p = {.open_fds = 7};
    CU_ASSERT_EQUAL_FATAL(srv_met_process_stat_parse(stat_text, 100, 4096, 1.7e9, &p), 0);
    CU_ASSERT_DOUBLE_EQUAL(p.cpu_seconds, 4.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p.start_time, 1.7e9 + 10.0, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(p.virtual_bytes, 52428800.0, 0.5);
    CU_ASSERT_DOUBLE_EQUAL(p.resident_bytes, 4096000.0, 0.5);
    CU_ASSERT_DOUBLE_EQUAL(p.open_fds, 7, 0); /* untouched */
}

/* A command name may hold spaces and ')': the fields count from the last ')'. */
static void test_srv_met_process_stat_parse_odd_name(void)
{
    static const char odd[] = "9 (a) b (c) ) R 1 9 9 0 -1 0 0 0 0 0 30 20 0 0 20 0 1 0 500 "
                              "1000 10 0\n";
    struct srv_met_process p = {0};
    CU_ASSERT_EQUAL_FATAL(srv_met_process_stat_parse(odd, 100, 4096, 0, &p), 0);
    CU_ASSERT_DOUBLE_EQUAL(p.cpu_seconds, 0.5, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p.start_time, 5.0, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(p.resident_bytes, 40960.0, 0.5);
}

static void test_srv_met_process_stat_parse_bad(void)
{
    struct srv_met_process p = {0};
    CU_ASSERT_EQUAL(srv_met_process_stat_parse("", 100, 4096, 0, &p), -EINVAL);
    CU_ASSERT_EQUAL(srv_met_process_stat_parse("1 (x) S 1 2 3\n", 100, 4096, 0, &p), -EINVAL);
    CU_ASSERT_EQUAL(srv_met_process_stat_parse(stat_text, 0, 4096, 0, &p), -EINVAL);
    CU_ASSERT_EQUAL(srv_met_process_stat_parse(stat_text, 100, 0, 0, &p), -EINVAL);
}

/* This process: memory, descriptors and a start time in the past, close to now. */
static void test_srv_met_process_read_self(void)
{
    struct srv_met_process a, b;
    CU_ASSERT_EQUAL_FATAL(srv_met_process_read(&a), 0);
    CU_ASSERT(a.resident_bytes > 0);
    CU_ASSERT(a.virtual_bytes >= a.resident_bytes);
    CU_ASSERT(a.max_fds > 0 || a.max_fds == -1);
    CU_ASSERT(a.open_fds >= 3);
    double now = (double)time(NULL);
    CU_ASSERT(a.start_time <= now + 1 && a.start_time > now - 86400);
    /* One more open descriptor is counted, and the listing's own is not. */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(srv_met_process_read(&b), 0);
    CU_ASSERT_DOUBLE_EQUAL(b.open_fds, a.open_fds + 1, 0);
    close(fd);
    CU_ASSERT(b.cpu_seconds >= a.cpu_seconds);
}

int suite_server_metrics_process(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_met_process_stat_parse_fields),
        SPINDLE_TEST(test_srv_met_process_stat_parse_odd_name),
        SPINDLE_TEST(test_srv_met_process_stat_parse_bad),
        SPINDLE_TEST(test_srv_met_process_read_self),
    };
    return SPINDLE_SUITE_ADD("server_metrics_process", NULL, NULL, tests);
}
