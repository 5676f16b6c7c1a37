/* test_front.c - spindle behind front ends: the client address from trusted proxies only, health
 * checks out of the access log, a stop announced on /readyz, the shipped nginx and HAProxy
 * examples checked by their own tools, and a rolling restart of two instances behind a real nginx
 * with steady load and no failed request.
 *
 * The nginx and HAProxy tests are registered inactive (a CUnit-visible skip) when the program is
 * not installed. nginx runs in the foreground from a generated configuration in a temporary
 * directory (pid, logs and temporary files there), on loopback ports only.
 */
#include <CUnit/CUnit.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_front(void);

/* ---- helpers -------------------------------------------------------------------------------- */

/* True when `prog` is an executable in PATH (or an absolute path). */
static bool fr_have(const char *prog)
{
    static const char *const dirs[] = {"/usr/sbin", "/usr/bin",        "/sbin",
                                       "/bin",      "/usr/local/sbin", "/usr/local/bin"};
    char path[256];
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dirs[i], prog);
        if (access(path, X_OK) == 0)
            return true;
    }
    return false;
}

static const char *fr_skip_no_nginx(void)
{
    return fr_have("nginx") ? NULL : "nginx is not installed (Debian package nginx-light)";
}

static const char *fr_skip_no_haproxy(void)
{
    return fr_have("haproxy") ? NULL : "haproxy is not installed (Debian package haproxy)";
}

/* The repository's etc/ directory, $SPINDLE_ETC, as a new string. */
static char *fr_etc_dir(void)
{
    const char *etc = getenv("SPINDLE_ETC");
    if (etc == NULL) {
        fprintf(stderr, "\n  SPINDLE_ETC must be set (make test sets it)\n");
        return NULL;
    }
    return strdup(etc);
}

/* `text` with every `from` replaced by `to` (new string). */
static char *fr_replace(const char *text, const char *from, const char *to)
{
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    if (m == NULL)
        return NULL;
    for (const char *p = text, *hit; *p != '\0'; p = hit + strlen(from)) {
        hit = strstr(p, from);
        if (hit == NULL) {
            fputs(p, m);
            break;
        }
        fwrite(p, 1, (size_t)(hit - p), m);
        fputs(to, m);
    }
    fclose(m);
    return out;
}

/* A free loopback port (bound and released; nothing else on this machine asks for it meanwhile
 * but a test of another suite, which gets ports from the kernel's ephemeral range too). */
static int fr_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* The access line of request `id` (new reference), waiting up to HS_IO_MS. */
static json_t *fr_access(const struct hs_server *s, const char *id)
{
    return hs_log_wait(s, "access", "request_id", id, HS_IO_MS);
}

/* ---- trusted proxies, access_skip, announce ----------------------------------------------- */

static const char fr_spoof_req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n"
                                   "X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n"
                                   "X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n";

/* A direct client (not a trusted proxy) cannot put another address in the access line. */
static void test_front_untrusted_peer_cannot_spoof(void)
{
    static const char *const over[] = {"server.trusted_proxies=10.0.0.0/8, ::1", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    json_t *line = NULL;
    char req[512];
    HS_CHECK(s != NULL);
    snprintf(req, sizeof(req), fr_spoof_req, "spoof-1");
    HS_CHECK(hs_roundtrip(s, req, &r) == 0 && r.status == 200);
    HS_CHECK((line = fr_access(s, "spoof-1")) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "client"), "127.0.0.1");
    CU_ASSERT_PTR_NOT_NULL(strstr(hs_json_str(line, "peer"), "127.0.0.1:"));
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* A trusted proxy names the client: the rightmost untrusted hop (Forwarded comes first). */
static void test_front_trusted_proxy_names_client(void)
{
    static const char *const over[] = {"server.trusted_proxies=127.0.0.0/8", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s,
                          "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: tp-1\r\n"
                          "X-Forwarded-For: 6.6.6.6, 203.0.113.9, 127.0.0.5\r\n\r\n",
                          &r) == 0 &&
             r.status == 200);
    HS_CHECK((line = fr_access(s, "tp-1")) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "client"), "203.0.113.9");
    json_decref(line);
    line = NULL;
    HS_CHECK(hs_roundtrip(s,
                          "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: tp-2\r\n"
                          "X-Forwarded-For: 6.6.6.6\r\n"
                          "Forwarded: for=\"[2001:db8::1]:4711\";proto=http\r\n\r\n",
                          &r) == 0 &&
             r.status == 200);
    HS_CHECK((line = fr_access(s, "tp-2")) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "client"), "2001:db8::1");
out:
    json_decref(line);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* log.access_skip keeps health checks out of the access log; everything else is logged. */
static void test_front_access_skip(void)
{
    static const char *const over[] = {"log.access_skip=/readyz, /metrics", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    json_t *line = NULL, *lines = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK(hs_roundtrip(s, "GET /readyz HTTP/1.1\r\nHost: t\r\nX-Request-Id: skip-1\r\n\r\n",
                          &r) == 0 &&
             r.status == 200);
    HS_CHECK(hs_roundtrip(s, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: skip-2\r\n\r\n",
                          &r) == 0 &&
             r.status == 200);
    /* lines are written in order: once skip-2's is there, skip-1's would be too */
    HS_CHECK((line = fr_access(s, "skip-2")) != NULL);
    HS_CHECK((lines = hs_log_lines(s)) != NULL);
    CU_ASSERT_EQUAL(ops_count(lines, "access", "skip-1"), 0);
out:
    json_decref(line);
    json_decref(lines);
    hs_resp_fini(&r);
    HS_FINISH(s);
}

/* shutdown.announce_ms: after SIGTERM /readyz answers 503 while the listener keeps accepting and
 * answers keep their connections; then the drain proceeds and the exit is clean. */
static void test_front_announce_before_drain(void)
{
    static const char *const over[] = {"shutdown.announce_ms=3000", NULL};
    static const char noop[] =
        "POST /v1/jobs/noop HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";
    struct hs_server *s = hs_start(over);
    struct hs_conn *c1 = NULL, *c2 = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    int code = -1;
    HS_CHECK(s != NULL);
    HS_CHECK((c1 = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c1, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK((line = hs_log_wait(s, "stopping", NULL, NULL, HS_IO_MS)) != NULL);
    CU_ASSERT_EQUAL(hs_json_int(line, "announce_ms", -1), 3000);
    HS_CHECK(hs_exchange(c1, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "draining"));
    CU_ASSERT_FALSE(ops_header_is(&r, "Connection", "close"));
    HS_CHECK((c2 = hs_connect(s)) != NULL); /* still accepting */
    HS_CHECK(hs_exchange(c2, noop, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_FALSE(ops_header_is(&r, "Connection", "close"));
    HS_CHECK(hs_exchange(c1, noop, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    hs_close(c1);
    hs_close(c2);
    c1 = c2 = NULL;
    json_decref(line);
    line = hs_log_wait(s, "announce period over: draining", NULL, NULL, 3000 + HS_STOP_MS);
    CU_ASSERT_PTR_NOT_NULL(line);
    CU_ASSERT(hs_wait_exit(s, HS_STOP_MS));
    code = hs_stop(s);
    CU_ASSERT_EQUAL(code, 0);
    hs_free(s);
    s = NULL;
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c1);
    hs_close(c2);
    HS_FINISH(s);
}

/* ---- the shipped examples ----------------------------------------------------------------- */

/* Run `exe` with `args` (30 s bound); true when it exited 0 (its output printed otherwise). */
static bool fr_run_ok(const char *exe, const char *const *args)
{
    struct proc *p = proc_spawn_exe(exe, args, NULL);
    int code = -1;
    bool ok = p != NULL && proc_wait(p, 30000, &code) == 0 && code == 0;
    if (!ok && p != NULL)
        fprintf(stderr, "\n--- %s (exit %d) ---\n%s%s\n", exe, code,
                proc_output(p, PROC_STDOUT, NULL), proc_output(p, PROC_STDERR, NULL));
    proc_free(p);
    return ok;
}

/* etc/nginx/spindle.conf passes `nginx -t` (its log and pid paths moved into a temporary
 * directory, so the check writes nothing outside it). */
static void test_front_nginx_example_config(void)
{
    char *etc = fr_etc_dir(), *dir = proc_tmpdir_new(), *src = NULL, *text = NULL, *tmp = NULL;
    char *conf = NULL, *err_log = NULL;
    HS_CHECK(etc != NULL && dir != NULL);
    char path[1024];
    snprintf(path, sizeof(path), "%s/nginx/spindle.conf", etc);
    HS_CHECK((src = ops_file_read(path)) != NULL);
    snprintf(path, sizeof(path), "%s/", dir);
    HS_CHECK((tmp = fr_replace(src, "/var/log/nginx/", path)) != NULL);
    HS_CHECK((text = fr_replace(tmp, "/run/", path)) != NULL);
    HS_CHECK((conf = proc_file_write(dir, "nginx.conf", text)) != NULL);
    HS_CHECK((err_log = ops_path(dir, "error.log")) != NULL);
    const char *const args[] = {"-t", "-q", "-p", dir, "-e", err_log, "-c", conf, NULL};
    CU_ASSERT(fr_run_ok("nginx", args));
out:
    free(err_log);
    free(conf);
    free(text);
    free(tmp);
    free(src);
    free(etc);
    (void)proc_tmpdir_free(dir);
}

/* etc/haproxy/spindle.cfg passes `haproxy -c`. */
static void test_front_haproxy_example_config(void)
{
    char *etc = fr_etc_dir();
    char path[1024];
    HS_CHECK(etc != NULL);
    snprintf(path, sizeof(path), "%s/haproxy/spindle.cfg", etc);
    const char *const args[] = {"-c", "-q", "-f", path, NULL};
    CU_ASSERT(fr_run_ok("haproxy", args));
out:
    free(etc);
}

/* ---- rolling restart behind nginx --------------------------------------------------------- */

#define FR_CLIENTS  4
#define FR_WAIT_MS  30000 /* bound on each wait for traffic to reach an instance */
#define FR_MIN_SEEN 200   /* answers through nginx before, between and after the restarts */

/* The example's upstream and proxy settings, on ephemeral loopback ports, everything else in
 * `dir`. */
static const char fr_nginx_conf[] =
    "%s"
    "daemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
    "events { worker_connections 256; }\n"
    "http {\n"
    "  client_body_temp_path %s/body; proxy_temp_path %s/proxy;\n"
    "  fastcgi_temp_path %s/fcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n"
    "  map $http_x_request_id $spindle_request_id { default $http_x_request_id; \"\" "
    "$request_id; }\n"
    "  log_format spindle '$remote_addr \"$request\" $status request_id=$spindle_request_id "
    "upstream=$upstream_addr upstream_status=$upstream_status';\n"
    "  access_log %s/access.log spindle;\n"
    "  upstream spindle {\n"
    "    server 127.0.0.1:%d max_fails=1 fail_timeout=2s;\n"
    "    server 127.0.0.1:%d max_fails=1 fail_timeout=2s;\n"
    "    keepalive 32; keepalive_timeout 4s; keepalive_requests 10000;\n"
    "  }\n"
    "  server {\n"
    "    listen 127.0.0.1:%d;\n"
    "    location / {\n"
    "      proxy_pass http://spindle; proxy_http_version 1.1;\n"
    "      proxy_set_header Connection \"\"; proxy_set_header Host $host;\n"
    "      proxy_set_header X-Request-Id $spindle_request_id;\n"
    "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
    "      proxy_next_upstream error timeout; proxy_next_upstream_tries 3;\n"
    "      proxy_connect_timeout 1s; proxy_read_timeout 65s;\n"
    "    }\n"
    "  }\n"
    "}\n";

struct fr_load {
    int port;
    atomic_bool stop;
    atomic_uint ok, failed;
    atomic_int last_bad; /* the last status other than 200 (or -errno of the exchange) */
};

static void *fr_client_main(void *arg)
{
    struct fr_load *ld = arg;
    static const char *const reqs[] = {
        "POST /v1/jobs/noop HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        "POST /v1/jobs/spin?ms=5 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"};
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    for (unsigned i = 0; !atomic_load(&ld->stop); i++) {
        if (c == NULL && (c = hs_connect_host("127.0.0.1", ld->port, HS_IO_MS)) == NULL) {
            atomic_fetch_add(&ld->failed, 1);
            atomic_store(&ld->last_bad, -1);
            continue;
        }
        int rc = hs_exchange(c, reqs[i % 2], &r);
        if (rc == 0 && r.status == 200) {
            atomic_fetch_add(&ld->ok, 1);
        } else {
            atomic_fetch_add(&ld->failed, 1);
            atomic_store(&ld->last_bad, rc != 0 ? rc : r.status);
        }
        if (rc != 0 || ops_header_is(&r, "Connection", "close")) {
            hs_close(c);
            c = NULL;
        }
    }
    hs_resp_fini(&r);
    hs_close(c);
    return NULL;
}

/* Wait until the load has seen `n` more answers, bounded. */
static bool fr_seen_more(struct fr_load *ld, unsigned n)
{
    unsigned want = atomic_load(&ld->ok) + atomic_load(&ld->failed) + n;
    for (long long end = hs_now_ms() + FR_WAIT_MS; hs_now_ms() < end;) {
        if (atomic_load(&ld->ok) + atomic_load(&ld->failed) >= want)
            return true;
        usleep(10000);
    }
    return false;
}

/* A spindle instance on `port` (0: any) for the rolling restart. */
static struct hs_server *fr_instance(int port)
{
    char listen[64];
    snprintf(listen, sizeof(listen), "server.listen=127.0.0.1:%d", port);
    const char *const over[] = {listen, "server.trusted_proxies=127.0.0.1",
                                "log.access_skip=/readyz", "log.level=info", NULL};
    return hs_start(over);
}

/* Start nginx on `dir` in front of ports p1 and p2; its own port into *port. */
static struct proc *fr_nginx_start(const char *dir, int p1, int p2, int *port)
{
    char *text = NULL, *conf = NULL;
    size_t len = 0;
    struct proc *p = NULL;
    *port = fr_free_port();
    FILE *m = open_memstream(&text, &len);
    if (m == NULL || *port < 0)
        goto out;
    fprintf(m, fr_nginx_conf, geteuid() == 0 ? "user root;\n" : "", dir, dir, dir, dir, dir, dir,
            dir, dir, p1, p2, *port);
    fclose(m);
    m = NULL;
    conf = proc_file_write(dir, "nginx.conf", text);
    if (conf == NULL)
        goto out;
    char err_log[1024];
    snprintf(err_log, sizeof(err_log), "%s/error.log", dir);
    const char *const args[] = {"-p", dir, "-e", err_log, "-c", conf, NULL};
    p = proc_spawn_exe("nginx", args, NULL);
    if (p == NULL)
        goto out;
    for (long long end = hs_now_ms() + HS_START_MS; hs_now_ms() < end; usleep(10000)) {
        struct hs_conn *c = hs_connect_host("127.0.0.1", *port, 100);
        if (c != NULL) {
            hs_close(c);
            goto out;
        }
    }
    fprintf(stderr, "\n--- nginx did not start ---\n%s\n", proc_output(p, PROC_STDERR, NULL));
    proc_free(p);
    p = NULL;
out:
    if (m != NULL)
        fclose(m);
    free(text);
    free(conf);
    return p;
}

/* SIGTERM one instance, wait for its (clean) exit, start it again on the same port and wait until
 * nginx sends it traffic again. */
static bool fr_restart(struct hs_server **s)
{
    int port = hs_port(*s);
    int code = hs_stop(*s);
    CU_ASSERT_EQUAL(code, 0);
    hs_free(*s);
    *s = fr_instance(port);
    if (*s == NULL)
        return false;
    json_t *line = hs_log_wait(*s, "access", "method", "POST", FR_WAIT_MS);
    bool ok = line != NULL;
    json_decref(line);
    return ok && code == 0;
}

/* Two instances behind nginx under steady load, restarted one after the other: no request
 * fails. nginx retries a connection refused by a stopped instance on the other one (nothing was
 * sent); a draining instance answers what reaches it with Connection: close and keeps its idle
 * keep-alive connections open until nginx lets them go (its keepalive_timeout, shorter than the
 * drain), so nginx never sends a request on a connection spindle is closing. */
static void test_front_rolling_restart_behind_nginx(void)
{
    char *dir = proc_tmpdir_new();
    struct hs_server *a = fr_instance(0), *b = fr_instance(0);
    struct proc *nginx = NULL;
    struct fr_load ld = {.port = -1};
    pthread_t th[FR_CLIENTS];
    unsigned started = 0;
    HS_CHECK(dir != NULL && a != NULL && b != NULL);
    HS_CHECK((nginx = fr_nginx_start(dir, hs_port(a), hs_port(b), &ld.port)) != NULL);
    for (; started < FR_CLIENTS; started++)
        HS_CHECK(pthread_create(&th[started], NULL, fr_client_main, &ld) == 0);
    HS_CHECK(fr_seen_more(&ld, FR_MIN_SEEN));
    HS_CHECK(fr_restart(&a));
    HS_CHECK(fr_seen_more(&ld, FR_MIN_SEEN));
    HS_CHECK(fr_restart(&b));
    HS_CHECK(fr_seen_more(&ld, FR_MIN_SEEN));
out:
    atomic_store(&ld.stop, true);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    fprintf(stderr, "\n  rolling restart: %u answered 200, %u failed (last: %d)\n",
            atomic_load(&ld.ok), atomic_load(&ld.failed), atomic_load(&ld.last_bad));
    CU_ASSERT_EQUAL(atomic_load(&ld.failed), 0);
    if (nginx != NULL) {
        (void)proc_signal(nginx, SIGQUIT);
        CU_ASSERT_EQUAL(proc_wait(nginx, HS_STOP_MS, NULL), 0);
    }
    proc_free(nginx);
    HS_FINISH(a);
    HS_FINISH(b);
    (void)proc_tmpdir_free(dir);
}

int suite_integration_front(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_front_untrusted_peer_cannot_spoof),
        SPINDLE_TEST(test_front_trusted_proxy_names_client),
        SPINDLE_TEST(test_front_access_skip),
        SPINDLE_TEST(test_front_announce_before_drain),
        SPINDLE_TEST_UNLESS(test_front_nginx_example_config, fr_skip_no_nginx),
        SPINDLE_TEST_UNLESS(test_front_haproxy_example_config, fr_skip_no_haproxy),
        SPINDLE_TEST_UNLESS(test_front_rolling_restart_behind_nginx, fr_skip_no_nginx),
    };
    return SPINDLE_SUITE_ADD("integration_front", NULL, NULL, tests);
}
