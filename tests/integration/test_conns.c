/* test_conns.c - many connections at once against the real binary.
 *
 * Design: the test process raises its own RLIMIT_NOFILE before starting the server (the child
 * inherits it), opens every connection first, sends one request on each, and only then reads the
 * answers, so all of them are open in the server at the same time. Reads are multiplexed with
 * poll() under one overall deadline. The open file limit tests start the server under
 * prlimit(1) with given limits (hs_start_nofile). The churn test closes connections while the
 * workers start programs (exec kinds): the case server/fdgate.h exists for.
 */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_conns(void);

#define GET_HEALTHZ "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"

/* Read one answer from each of `n` connections within `timeout_ms`; returns how many were 200. */
static int read_all_ok(struct hs_conn **c, int n, int timeout_ms)
{
    struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));
    bool *done = calloc((size_t)n, sizeof(*done));
    struct hs_resp r = {0};
    int ok = 0, finished = 0;
    long long deadline = hs_now_ms() + timeout_ms;
    if (pfd == NULL || done == NULL)
        goto out;
    while (finished < n && hs_now_ms() < deadline) {
        for (int i = 0; i < n; i++)
            pfd[i] = (struct pollfd){.fd = done[i] ? -1 : c[i]->fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, 100) <= 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (done[i] || pfd[i].revents == 0)
                continue;
            /* Readable: the whole (small) answer follows at once on loopback. */
            done[i] = true;
            finished++;
            if (hs_read_response(c[i], &r, false, HS_IO_MS) == 0 && r.status == 200)
                ok++;
        }
    }
out:
    hs_resp_fini(&r);
    free(pfd);
    free(done);
    return ok;
}

static void test_conns_1000_concurrent(void)
{
    enum { N = 1000 };
    const char *const over[] = {"server.max_connections=2000", "server.backlog=1024",
                                "log.access=false", NULL};
    struct hs_server *s = NULL;
    struct hs_conn **c = calloc(N, sizeof(*c));
    int opened = 0;
    HS_CHECK(c != NULL);
    if (hs_nofile_raise(N + 200) < N + 100) {
        printf("\n    skipped: RLIMIT_NOFILE cannot be raised to %d ", N + 100);
        goto out;
    }
    HS_CHECK((s = hs_start(over)) != NULL);
    for (; opened < N; opened++)
        HS_CHECK((c[opened] = hs_connect(s)) != NULL);
    for (int i = 0; i < N; i++)
        HS_CHECK(hs_send_str(c[i], GET_HEALTHZ) == 0);
    CU_ASSERT_EQUAL(read_all_ok(c, N, 20000), N);
    /* All still open and usable: a second round on each. */
    for (int i = 0; i < N; i++)
        HS_CHECK(hs_send_str(c[i], GET_HEALTHZ) == 0);
    CU_ASSERT_EQUAL(read_all_ok(c, N, 20000), N);
out:
    for (int i = 0; c != NULL && i < opened; i++)
        hs_close(c[i]);
    free(c);
    HS_FINISH(s);
}

/* The soft limit of "Max open files" in /proc/PID/limits, -1 when unknown. */
static long nofile_soft_of(pid_t pid)
{
    char path[64], line[256];
    long soft = -1;
    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "Max open files %ld", &soft) == 1)
            break;
    }
    fclose(f);
    return soft;
}

/* Started with a soft open file limit below the hard one, the server raises it to the hard one. */
static void test_conns_nofile_raised_to_hard(void)
{
    const char *const over[] = {"server.max_connections=1000", NULL};
    struct hs_server *s = NULL;
    json_t *line = NULL;
    HS_CHECK(hs_nofile_raise(4096) >= 4096);
    HS_CHECK((s = hs_start_nofile(over, 64, 4096)) != NULL);
    CU_ASSERT_EQUAL(nofile_soft_of(hs_pid(s)), 4096);
    HS_CHECK((line = hs_log_wait(s, "spindle started", NULL, NULL, HS_IO_MS)) != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "nofile", -1), 4096);
    CU_ASSERT_EQUAL(hs_json_int(line, "max_connections", -1), 1000);
out:
    json_decref(line);
    HS_FINISH(s);
}

/* A hard limit too low for max_connections: a warning with the numbers at start, max_connections
 * lowered to the limit minus the reserve, and the connections beyond it are answered 503
 * too_many_connections (none waits in the backlog for a descriptor). */
static void test_conns_nofile_clamps_max_connections(void)
{
    enum { NOFILE = 256, CAP = NOFILE - 128, EXTRA = 100 };
    struct hs_server *s = NULL;
    struct hs_conn *c[CAP + EXTRA];
    struct hs_resp r = {0};
    json_t *line = NULL;
    int opened = 0;
    memset(c, 0, sizeof(c));
    HS_CHECK(hs_nofile_raise(4 * NOFILE) >= 2 * NOFILE);
    HS_CHECK((s = hs_start_nofile(NULL, NOFILE, NOFILE)) != NULL); /* max_connections 10000 */
    line = hs_log_wait(s, "open file limit too low for max_connections: lowering it", NULL, NULL,
                       HS_IO_MS);
    HS_CHECK(line != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "max_connections", -1), 10000);
    CU_ASSERT_EQUAL(hs_json_int(line, "lowered_to", -1), CAP);
    CU_ASSERT_EQUAL(hs_json_int(line, "nofile", -1), NOFILE);
    CU_ASSERT_EQUAL(hs_json_int(line, "nofile_hard", -1), NOFILE);
    json_decref(line);
    HS_CHECK((line = hs_log_wait(s, "spindle started", NULL, NULL, HS_IO_MS)) != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "max_connections", -1), CAP);
    for (; opened < CAP; opened++) {
        HS_CHECK((c[opened] = hs_connect(s)) != NULL);
        HS_CHECK(hs_exchange(c[opened], GET_HEALTHZ, &r) == 0 && r.status == 200);
    }
    /* Beyond the cap, every connection is told at once, without sending anything. */
    for (; opened < CAP + EXTRA; opened++) {
        HS_CHECK((c[opened] = hs_connect(s)) != NULL);
        HS_CHECK(hs_read_response(c[opened], &r, false, HS_IO_MS) == 0);
        CU_ASSERT(hs_resp_is_error(&r, 503, "too_many_connections") ||
                  (r.status == 503 && strstr(r.body, "too_many_connections") != NULL));
    }
    for (int i = 0; i < CAP; i++) { /* the ones within the cap are still served */
        HS_CHECK(hs_exchange(c[i], GET_HEALTHZ, &r) == 0);
        CU_ASSERT_EQUAL(r.status, 200);
    }
out:
    json_decref(line);
    hs_resp_fini(&r);
    for (int i = 0; i < opened; i++)
        hs_close(c[i]);
    HS_FINISH(s);
}

/* True when process `pid` has exactly descriptors 0, 1 and 2 open (from /proc/PID/fd). */
static bool only_stdio_open(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return false;
    int n = 0;
    bool stdio = true;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        stdio = stdio && (strcmp(e->d_name, "0") == 0 || strcmp(e->d_name, "1") == 0 ||
                          strcmp(e->d_name, "2") == 0);
    }
    closedir(d);
    return stdio && n == 3;
}

/* Connections come and go while the workers start programs: in each round four requests for an
 * exec kind are sent (Connection: close), and while their programs start, short keep-alive
 * connections are opened, used once and closed by the client (the server closes its side at the
 * EOF). A socket the loop closed while a program was being started stayed alive in the child and
 * registered in the loop's epoll set: epoll went on reporting its old number, the loop called
 * epoll_ctl on it when a worker's pipe had taken it (ThreadSanitizer stops the server there, exit
 * 66, which fails the final check) and rebuilt its whole epoll set. A program that runs holds
 * nothing of the server's but its own 0, 1 and 2. */
static void test_conns_close_while_programs_start(void)
{
    enum { ROUNDS = 25, EXEC = 4, SHORT = 6 };
    static const char post_t[] = "POST /v1/jobs/t HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                                 "Connection: close\r\n\r\n";
    const char *const over[] = {"kind.t.exec=/bin/true", "kind.sleepy.exec=/bin/sleep 30",
                                "log.access=false", NULL};
    struct hs_server *s = NULL;
    struct hs_conn *sleepy = NULL, *c[EXEC] = {0}, *sc = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK((s = hs_start(over)) != NULL);
    HS_CHECK((sleepy = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(sleepy, "POST /v1/jobs/sleepy HTTP/1.1\r\nHost: t\r\n"
                                 "Content-Length: 0\r\n\r\n") == 0);
    line = hs_log_wait(s, "job program started", "kind", "sleepy", HS_IO_MS * 2);
    HS_CHECK(line != NULL);
    pid_t child = (pid_t)hs_json_int(line, "pid", -1);
    HS_CHECK(child > 0);
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < EXEC; i++) {
            HS_CHECK((c[i] = hs_connect(s)) != NULL);
            HS_CHECK(hs_send_str(c[i], post_t) == 0);
        }
        for (int i = 0; i < SHORT; i++) {
            HS_CHECK((sc = hs_connect(s)) != NULL);
            HS_CHECK(hs_exchange(sc, GET_HEALTHZ, &r) == 0);
            CU_ASSERT_EQUAL(r.status, 200);
            hs_close(sc);
            sc = NULL;
        }
        CU_ASSERT_EQUAL(read_all_ok(c, EXEC, HS_IO_MS * 4), EXEC);
        for (int i = 0; i < EXEC; i++) {
            hs_close(c[i]);
            c[i] = NULL;
        }
        if (round == ROUNDS / 2)
            CU_ASSERT(only_stdio_open(child));
    }
    CU_ASSERT(only_stdio_open(child));
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(sc);
    for (int i = 0; i < EXEC; i++)
        hs_close(c[i]);
    hs_close(sleepy); /* the client leaves: the sleepy job is cancelled, its program killed */
    HS_FINISH(s);
}

int suite_integration_conns(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_conns_1000_concurrent),
        SPINDLE_TEST(test_conns_nofile_raised_to_hard),
        SPINDLE_TEST(test_conns_nofile_clamps_max_connections),
        SPINDLE_TEST(test_conns_close_while_programs_start),
    };
    return SPINDLE_SUITE_ADD("integration_conns", NULL, NULL, tests);
}
