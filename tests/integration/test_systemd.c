/* test_systemd.c - systemd integration of the real server without systemd: sd_notify messages
 * received on a test NOTIFY_SOCKET, and socket activation through systemd-socket-activate.
 *
 * Notifications: the test binds an AF_UNIX datagram socket in a temporary directory and starts the
 * server with NOTIFY_SOCKET pointing at it (and WATCHDOG_USEC, so the loop pings). It then expects
 * READY=1 (with a STATUS= text), WATCHDOG=1 pings, RELOADING=1 and READY=1 around a SIGHUP, and
 * STOPPING=1 at SIGTERM, in that order.
 *
 * Socket activation: systemd-socket-activate (Debian package systemd) binds a port, waits for a
 * first connection and then execs the server with the listening socket as descriptor 3,
 * LISTEN_FDS=1 and LISTEN_PID set to the server's own pid. The configured listen address is one
 * the test keeps bound itself, so a server that tried to bind it would fail to start.
 */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_systemd(void);

#define SY_MSG_MAX 64 /* notifications kept */

struct sy_notify {
    int fd;
    char *dir, *path;
    char *msgs[SY_MSG_MAX];
    size_t n;
};

static int sy_notify_open(struct sy_notify *n)
{
    memset(n, 0, sizeof(*n));
    n->fd = -1;
    n->dir = proc_tmpdir_new();
    n->path = n->dir != NULL ? ops_path(n->dir, "notify.sock") : NULL;
    if (n->path == NULL)
        return -ENOMEM;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(n->path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, n->path);
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (n->fd < 0 || bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -errno;
    return 0;
}

static void sy_notify_close(struct sy_notify *n)
{
    for (size_t i = 0; i < n->n; i++)
        free(n->msgs[i]);
    if (n->fd >= 0)
        close(n->fd);
    free(n->path);
    (void)proc_tmpdir_free(n->dir);
}

/* Receive until a message containing `needle` arrives (true) or `ms` pass. Every message is kept;
 * *index gets the position of the matching one. */
static bool sy_notify_wait(struct sy_notify *n, const char *needle, int ms, size_t *index)
{
    long long end = hs_now_ms() + ms;
    for (;;) {
        long long left = end - hs_now_ms();
        struct pollfd p = {.fd = n->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return false;
        char buf[4096];
        ssize_t got = recv(n->fd, buf, sizeof(buf) - 1, 0);
        if (got <= 0 || n->n == SY_MSG_MAX)
            return false;
        buf[got] = '\0';
        n->msgs[n->n] = strdup(buf);
        if (n->msgs[n->n] == NULL)
            return false;
        if (strstr(buf, needle) != NULL) {
            if (index != NULL)
                *index = n->n;
            n->n++;
            return true;
        }
        n->n++;
    }
}

/* READY once listening, watchdog pings, RELOADING/READY around SIGHUP, STOPPING at SIGTERM. */
static void test_systemd_notify(void)
{
    struct sy_notify n;
    struct hs_server *s = NULL;
    size_t ready = 0, at = 0;
    int rc = sy_notify_open(&n);
    HS_CHECK(rc == 0);
    setenv("NOTIFY_SOCKET", n.path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    s = hs_start(NULL);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    HS_CHECK(s != NULL);
    HS_CHECK(sy_notify_wait(&n, "READY=1", HS_IO_MS, &ready));
    CU_ASSERT(strstr(n.msgs[ready], "STATUS=") != NULL);
    CU_ASSERT(strstr(n.msgs[ready], "in flight") != NULL);
    HS_CHECK(sy_notify_wait(&n, "WATCHDOG=1", HS_IO_MS, &at));
    HS_CHECK(sy_notify_wait(&n, "WATCHDOG=1", HS_IO_MS, &at)); /* periodic, not once */
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    HS_CHECK(sy_notify_wait(&n, "RELOADING=1", HS_IO_MS, &at));
    CU_ASSERT(strstr(n.msgs[at], "MONOTONIC_USEC=") != NULL);
    HS_CHECK(sy_notify_wait(&n, "READY=1", HS_IO_MS, &at));
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK(sy_notify_wait(&n, "STOPPING=1", HS_IO_MS, &at));
    CU_ASSERT(at > ready);
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
out:
    HS_FINISH(s);
    sy_notify_close(&n);
}

/* Without NOTIFY_SOCKET nothing is sent and nothing changes (the other suites run that way);
 * here: a NOTIFY_SOCKET that nobody listens on does not disturb serving or stopping. */
static void test_systemd_notify_socket_missing(void)
{
    struct hs_server *s = NULL;
    struct hs_resp r = {0};
    setenv("NOTIFY_SOCKET", "/nonexistent/spindle-notify.sock", 1);
    s = hs_start(NULL);
    unsetenv("NOTIFY_SOCKET");
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* A listening TCP socket on 127.0.0.1 with an ephemeral port (the caller closes it). */
static int sy_listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static bool sy_have_socket_activate(void)
{
    return access("/usr/bin/systemd-socket-activate", X_OK) == 0 ||
           access("/bin/systemd-socket-activate", X_OK) == 0;
}

/* Start systemd-socket-activate on a free port (retried: the port is found by binding port 0 and
 * closing, so another process may take it in between). */
static struct proc *sy_activate_start(const char *conf, int *port)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = sy_listen_any(port);
        if (fd < 0)
            return NULL;
        close(fd);
        char addr[32];
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", *port);
        const char *args[] = {"-l", addr, "--", proc_bin(), "serve", "-c", conf, NULL};
        struct proc *p = proc_spawn_exe("systemd-socket-activate", args, NULL);
        if (p == NULL)
            return NULL;
        if (proc_output_wait(p, PROC_STDERR, "Listening on", HS_START_MS))
            return p;
        proc_free(p);
    }
    return NULL;
}

/* Socket activation: the passed socket is served (the connection made before the server existed
 * included), the configured address is not bound, the stop is graceful. */
static void test_systemd_socket_activation(void)
{
    if (!sy_have_socket_activate()) {
        fprintf(stderr,
                "\n  systemd-socket-activate not installed: socket activation not tested\n");
        return;
    }
    char *dir = proc_tmpdir_new(), *conf = NULL, *text = NULL, *log_path = NULL, want[48];
    struct proc *p = NULL;
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *lines = NULL;
    int taken_port = 0, port = 0, code = -1;
    int taken = sy_listen_any(&taken_port); /* the configured address: held by the test */
    bool complete = false;
    HS_CHECK(dir != NULL && taken >= 0);
    log_path = ops_path(dir, "spindle.log");
    HS_CHECK(log_path != NULL);
    HS_CHECK(asprintf(&text,
                      "[server]\nlisten = 127.0.0.1:%d\n[log]\nlevel = debug\nfile = %s\n"
                      "access = true\n[tasks]\nstore = %s/tasks.db\n",
                      taken_port, log_path, dir) > 0);
    HS_CHECK((conf = proc_file_write(dir, "spindle.conf", text)) != NULL);
    HS_CHECK((p = sy_activate_start(conf, &port)) != NULL);
    HS_CHECK((c = hs_connect_host("127.0.0.1", port, HS_IO_MS)) != NULL);
    HS_CHECK(hs_send_str(c, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: sa-1\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_START_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(proc_signal(p, SIGTERM) == 0);
    HS_CHECK(proc_wait(p, HS_STOP_MS, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    lines = ops_log_read(log_path, &complete);
    HS_CHECK(lines != NULL);
    CU_ASSERT(complete);
    CU_ASSERT_EQUAL(ops_count(lines, "socket activation", NULL), 1);
    CU_ASSERT_EQUAL(ops_count(lines, "listening", NULL), 1);
    CU_ASSERT_EQUAL(ops_count(lines, "access", "sa-1"), 1);
    snprintf(want, sizeof(want), "127.0.0.1:%d", port);
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        const char *m = hs_json_str(line, "msg");
        if (m != NULL && strcmp(m, "listening") == 0)
            CU_ASSERT_STRING_EQUAL(hs_json_str(line, "addr"), want);
        if (m != NULL && strcmp(m, "spindle started") == 0) /* what it serves, not the config's */
            CU_ASSERT_STRING_EQUAL(hs_json_str(line, "listen"), want);
    }
    line = json_array_get(lines, json_array_size(lines) - 1);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "msg"), "spindle stopped");
out:
    if (p != NULL && code != 0)
        fprintf(stderr, "\n--- systemd-socket-activate / server stderr ---\n%s\n",
                proc_output(p, PROC_STDERR, NULL));
    json_decref(lines);
    hs_resp_fini(&r);
    hs_close(c);
    proc_free(p);
    if (taken >= 0)
        close(taken);
    free(text);
    free(conf);
    free(log_path);
    (void)proc_tmpdir_free(dir);
}

int suite_integration_systemd(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_systemd_notify),
        SPINDLE_TEST(test_systemd_notify_socket_missing),
        SPINDLE_TEST(test_systemd_socket_activation),
    };
    return SPINDLE_SUITE_ADD("integration_systemd", NULL, NULL, tests);
}
