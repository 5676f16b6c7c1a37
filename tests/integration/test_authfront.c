/* test_authfront.c - etc/nginx/spindle-auth.conf for real: nginx terminates TLS in front of two
 * spindle instances, one in [auth] mode = keys (the client's bearer token passes through), one in
 * mode = proxy behind nginx auth_request (a stub authentication service in this process names
 * the tenant). Requests go through curl over HTTPS; which tenant was charged is read from each
 * instance's access line.
 *
 * Design: the shipped file is used as it is, with only its addresses, certificate and log paths
 * replaced (a self-signed certificate made with openssl, every file in a temporary directory).
 * The stub service runs on a thread with a bounded poll loop and answers 200 + X-Tenant-Id: acme
 * for the one token it knows, 401 otherwise; it is stopped and joined at the end. Headers that
 * carry a token are handed to curl in a file (-H @FILE), never on its command line.
 */
#include <arpa/inet.h>
#include <CUnit/CUnit.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
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

int suite_integration_authfront(void);

#define AF_TOKEN_KEYS  "spk_front-keys-tenant-acme-0123456789ab"
#define AF_TOKEN_PROXY "spk_front-proxy-login-of-acme-01234567"

/* ---- the stub authentication service -----------------------------------------------------------
 */

struct af_stub {
    int fd;
    int port;
    atomic_bool stop;
    pthread_t thread;
    atomic_uint asked;
};

static void af_stub_answer(int c)
{
    char req[4096];
    size_t len = 0;
    while (len < sizeof(req) - 1 && memmem(req, len, "\r\n\r\n", 4) == NULL) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 2000) <= 0)
            return;
        ssize_t n = read(c, req + len, sizeof(req) - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
    }
    req[len] = '\0';
    const char *ok = "HTTP/1.1 200 OK\r\nX-Tenant-Id: acme\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n";
    const char *no = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n";
    /* names are case-insensitive (HTTP/2 clients send them in lower case) */
    const char *a = strcasestr(req, "\nAuthorization: Bearer " AF_TOKEN_PROXY "\r\n") ? ok : no;
    (void)!write(c, a, strlen(a));
}

static void *af_stub_run(void *arg)
{
    struct af_stub *st = arg;
    while (!atomic_load(&st->stop)) {
        struct pollfd p = {st->fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept4(st->fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        atomic_fetch_add(&st->asked, 1);
        af_stub_answer(c);
        close(c);
    }
    return NULL;
}

static int af_stub_start(struct af_stub *st)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    st->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (st->fd < 0 || bind(st->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(st->fd, 16) != 0 || getsockname(st->fd, (struct sockaddr *)&sa, &sl) != 0)
        return -1;
    st->port = ntohs(sa.sin_port);
    atomic_init(&st->stop, false);
    atomic_init(&st->asked, 0);
    return pthread_create(&st->thread, NULL, af_stub_run, st) == 0 ? 0 : -1;
}

/* ---- helpers -----------------------------------------------------------------------------------
 */

/* `text` with every `from` replaced by `to` (new string; frees text). */
static char *af_replace(char *text, const char *from, const char *to)
{
    char *out = NULL;
    size_t len = 0;
    FILE *m = text != NULL ? open_memstream(&out, &len) : NULL;
    if (m == NULL) {
        free(text);
        return NULL;
    }
    for (const char *p = text, *hit; *p != '\0'; p = hit + strlen(from)) {
        if ((hit = strstr(p, from)) == NULL) {
            fputs(p, m);
            break;
        }
        fwrite(p, 1, (size_t)(hit - p), m);
        fputs(to, m);
    }
    fclose(m);
    free(text);
    return out;
}

static int af_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool af_run(const char *exe, const char *const *args, char **out)
{
    struct proc *p = proc_spawn_exe(exe, args, NULL);
    int code = -1;
    bool ok = p != NULL && proc_wait(p, 30000, &code) == 0 && code == 0;
    if (!ok && p != NULL)
        fprintf(stderr, "\n--- %s (exit %d) ---\n%s\n", exe, code,
                proc_output(p, PROC_STDERR, NULL));
    if (out != NULL)
        *out = strdup(p != NULL ? proc_output(p, PROC_STDOUT, NULL) : "");
    proc_free(p);
    return ok;
}

/* The example config for this run (new string), or NULL. */
static char *af_nginx_conf(const char *dir, int p_keys, int p_proxy, int s_keys, int s_proxy,
                           int stub)
{
    char path[1024], buf[1536];
    snprintf(path, sizeof(path), "%s/nginx/spindle-auth.conf", getenv("SPINDLE_ETC"));
    char *t = ops_file_read(path);
    snprintf(buf, sizeof(buf), "%s/", dir);
    t = af_replace(t, "/var/log/nginx/", buf);
    t = af_replace(t, "/run/", buf);
    snprintf(buf, sizeof(buf), "%s/cert.pem", dir);
    t = af_replace(t, "/etc/ssl/certs/spindle.example.com.pem", buf);
    snprintf(buf, sizeof(buf), "%s/key.pem", dir);
    t = af_replace(t, "/etc/ssl/private/spindle.example.com.key", buf);
    const int ports[][2] = {{8081, s_keys}, {8082, s_proxy}, {9000, stub}};
    for (size_t i = 0; i < 3; i++) {
        char from[32];
        snprintf(from, sizeof(from), "127.0.0.1:%d;", ports[i][0]);
        snprintf(buf, sizeof(buf), "127.0.0.1:%d;", ports[i][1]);
        t = af_replace(t, from, buf);
    }
    snprintf(buf, sizeof(buf), "listen 127.0.0.1:%d ssl", p_keys);
    t = af_replace(t, "listen 443 ssl", buf);
    snprintf(buf, sizeof(buf), "listen 127.0.0.1:%d ssl", p_proxy);
    t = af_replace(t, "listen 8443 ssl", buf);
    snprintf(buf, sizeof(buf),
             "http {\n    client_body_temp_path %s/body; proxy_temp_path %s/proxy;\n"
             "    fastcgi_temp_path %s/fcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n",
             dir, dir, dir, dir, dir);
    t = af_replace(t, "http {\n", buf);
    snprintf(buf, sizeof(buf), "daemon off;\n%sworker_processes 1;",
             geteuid() == 0 ? "user root;\n" : "");
    return af_replace(t, "worker_processes auto;", buf);
}

/* POST https://127.0.0.1:port/v1/jobs/noop through curl with the header lines `headers` (from a
 * file) and X-Request-Id `id`; returns the status, -1 when curl failed. */
static int af_curl(const char *dir, int port, const char *id, const char *headers)
{
    char url[128], hdr[1024], idh[160], *out = NULL;
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/jobs/noop", port);
    snprintf(idh, sizeof(idh), "X-Request-Id: %s", id);
    char *file = proc_file_write(dir, "headers", headers);
    snprintf(hdr, sizeof(hdr), "@%s", file != NULL ? file : "/nonexistent");
    const char *args[] = {"-k", "-s", "-o", "/dev/null", "-w",         "%{http_code}", "-X", "POST",
                          "-H", idh,  "-H", hdr,         "--max-time", "20",           url,  NULL};
    bool ok = af_run("curl", args, &out);
    int status = ok && out != NULL ? atoi(out) : -1;
    free(out);
    free(file);
    return status;
}

static const char *af_tenant(const struct hs_server *s, const char *id, char *buf, size_t size)
{
    json_t *l = hs_log_wait(s, "access", "request_id", id, HS_IO_MS);
    snprintf(buf, size, "%s",
             l != NULL && hs_json_str(l, "tenant") ? hs_json_str(l, "tenant") : "(none)");
    json_decref(l);
    return buf;
}

/* ---- the test ----------------------------------------------------------------------------------
 */

static void test_authfront_nginx_tls_keys_and_auth_request(void)
{
    char *dir = proc_tmpdir_new(), *conf_text = NULL, *conf = NULL, t[80], hex[65];
    char sections[512], err_log[1100];
    struct hs_server *keys = NULL, *proxy = NULL;
    struct proc *nginx = NULL;
    struct af_stub stub = {.fd = -1};
    bool stub_running = false;
    HS_CHECK(dir != NULL);
    unsigned char d[32];
    unsigned int dn = 0;
    HS_CHECK(EVP_Digest(AF_TOKEN_KEYS, strlen(AF_TOKEN_KEYS), d, &dn, EVP_sha256(), NULL) == 1);
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    snprintf(sections, sizeof(sections), "log.access=true\n\n[tenant.acme]\nkeys = sha256:%s\n",
             hex);
    const char *over_keys[] = {"auth.mode=keys", "server.trusted_proxies=127.0.0.1", sections,
                               NULL};
    const char *over_proxy[] = {"auth.mode=proxy", "server.trusted_proxies=127.0.0.1", NULL};
    HS_CHECK((keys = hs_start(over_keys)) != NULL);
    HS_CHECK((proxy = hs_start(over_proxy)) != NULL);
    HS_CHECK(af_stub_start(&stub) == 0);
    stub_running = true;
    char key[1024], cert[1024];
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    const char *req[] = {"req",    "-x509",    "-newkey",
                         "ec",     "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-nodes", "-keyout",  key,
                         "-out",   cert,       "-days",
                         "2",      "-subj",    "/CN=127.0.0.1",
                         NULL};
    HS_CHECK(af_run("openssl", req, NULL));
    int p_keys = af_free_port(), p_proxy = af_free_port();
    HS_CHECK(p_keys > 0 && p_proxy > 0 && p_keys != p_proxy);
    conf_text = af_nginx_conf(dir, p_keys, p_proxy, hs_port(keys), hs_port(proxy), stub.port);
    HS_CHECK(conf_text != NULL && (conf = proc_file_write(dir, "nginx.conf", conf_text)) != NULL);
    snprintf(err_log, sizeof(err_log), "%s/error.log", dir);
    const char *check[] = {"-t", "-q", "-p", dir, "-e", err_log, "-c", conf, NULL};
    HS_CHECK(af_run("nginx", check, NULL));
    const char *run[] = {"-p", dir, "-e", err_log, "-c", conf, NULL};
    HS_CHECK((nginx = proc_spawn_exe("nginx", run, NULL)) != NULL);
    bool up = false;
    for (long long end = hs_now_ms() + HS_START_MS; !up && hs_now_ms() < end; usleep(10000)) {
        struct hs_conn *c = hs_connect_host("127.0.0.1", p_proxy, 100);
        up = c != NULL;
        hs_close(c);
    }
    HS_CHECK(up);

    /* keys: the token passes through TLS to spindle, which decides */
    CU_ASSERT_EQUAL(af_curl(dir, p_keys, "f-keys", "Authorization: Bearer " AF_TOKEN_KEYS "\n"),
                    200);
    CU_ASSERT_STRING_EQUAL(af_tenant(keys, "f-keys", t, sizeof(t)), "acme");
    CU_ASSERT_EQUAL(af_curl(dir, p_keys, "f-keys-none", "X-Tenant-Id: acme\n"), 401);
    /* proxy: the service's tenant, never the client's own header */
    CU_ASSERT_EQUAL(af_curl(dir, p_proxy, "f-proxy",
                            "Authorization: Bearer " AF_TOKEN_PROXY "\nX-Tenant-Id: evil\n"),
                    200);
    CU_ASSERT_STRING_EQUAL(af_tenant(proxy, "f-proxy", t, sizeof(t)), "acme");
    CU_ASSERT_EQUAL(af_curl(dir, p_proxy, "f-proxy-none", "X-Tenant-Id: acme\n"), 401);
    CU_ASSERT_EQUAL(af_curl(dir, p_proxy, "f-proxy-bad",
                            "Authorization: Bearer " AF_TOKEN_KEYS "\nX-Tenant-Id: acme\n"),
                    401);
    CU_ASSERT(atomic_load(&stub.asked) >= 3);
    /* nginx's own log has no token either */
    char *access = ops_path(dir, "spindle-auth-access.log");
    char *text = access != NULL ? ops_file_read(access) : NULL;
    CU_ASSERT(text != NULL && strstr(text, "spk_") == NULL);
    free(text);
    free(access);
out:
    proc_free(nginx);
    if (stub_running) {
        atomic_store(&stub.stop, true);
        pthread_join(stub.thread, NULL);
    }
    if (stub.fd >= 0)
        close(stub.fd);
    HS_FINISH(keys);
    HS_FINISH(proxy);
    free(conf_text);
    free(conf);
    (void)proc_tmpdir_free(dir);
}

int suite_integration_authfront(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_authfront_nginx_tls_keys_and_auth_request),
    };
    return SPINDLE_SUITE_ADD("integration_authfront", NULL, NULL, tests);
}
