/* test_conns.c - many connections at once against the real binary.
 *
 * Design: the test process raises its own RLIMIT_NOFILE before starting the server (the child
 * inherits it), opens every connection first, sends one request on each, and only then reads the
 * answers, so all of them are open in the server at the same time. Reads are multiplexed with
 * poll() under one overall deadline.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"

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

int suite_integration_conns(void)
{
    CU_pSuite s = CU_add_suite("integration_conns", NULL, NULL);
    if (s == NULL)
        return CU_get_error();
    CU_add_test(s, "test_conns_1000_concurrent", test_conns_1000_concurrent);
    return CU_get_error();
}
