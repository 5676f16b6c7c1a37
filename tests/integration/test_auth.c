/* test_auth.c - tenants proven by credentials, end to end with the real binary: no header
 * combination spends another tenant's limits, forwarding headers from an untrusted peer gain
 * nothing, 10,000 wrong tokens are throttled per address while the owner's token works from its
 * own address, a reload removing a key locks it out at once, /metrics and the admin listener,
 * proxy mode, the start-up refusal, keygen and `spindle call --token-file` / SPINDLE_TOKEN; durable
 * tasks belong to the token's tenant (every task route is 401 without one, another tenant's task
 * is not there) and `spindle call --async` / `spindle tasks` send the token; and no token nor its
 * hash ever appears in the log.
 *
 * Design: each test starts its own server (harness.h) in [auth] mode = keys with tenants "a"
 * (two keys) and "b" (one), written after [log] the way test_admission.c does (one override
 * entry whose value holds the whole sections). Which tenant was charged is
 * read from what the server itself says: the access line's "tenant" (by request id), the
 * refusals of a tenant limited to one request, and the auth counters of /metrics. The owner of a
 * throttled tenant connects from 127.0.0.2 (the whole 127.0.0.0/8 is loopback on Linux): the
 * throttle is per client address, and that is the address of another client. Every wait is a
 * bounded poll of a socket or of the log.
 */
#include <arpa/inet.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_auth(void);

#define TOK_A1 "spk_it-tenant-a-first-0123456789abcdef"
#define TOK_A2 "spk_it-tenant-a-second-0123456789abcde"
#define TOK_B  "spk_it-tenant-b-only-0123456789abcdefg"
#define TOK_M  "spk_it-metrics-scraper-0123456789abcde"

/* ---- helpers --------------------------------------------------------------------------------- */

/* The 64 hex digits of SHA-256(token) into hex (65 bytes). */
static const char *au_hex(const char *token, char *hex)
{
    unsigned char d[32];
    unsigned int n = 0;
    if (EVP_Digest(token, strlen(token), d, &n, EVP_sha256(), NULL) != 1)
        n = 0;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", i < n ? d[i] : 0);
    return hex;
}

/* The [tenant.a] and [tenant.b] sections (plus `extra` lines for tenant a) after [log]: an
 * override entry for hs_start (see the design note). `a_keys` says which of a's keys (1, 2 or
 * both: 3). */
static const char *au_tenants(char *buf, size_t size, unsigned a_keys, const char *a_extra)
{
    char h1[65], h2[65], hb[65];
    snprintf(buf, size,
             "log.access=true\n\n[tenant.a]\nkeys = %s%s%s%s%s\n%s\n[tenant.b]\nkeys = sha256:%s\n",
             a_keys & 1 ? "sha256:" : "", a_keys & 1 ? au_hex(TOK_A1, h1) : "",
             a_keys == 3 ? ", " : "", a_keys & 2 ? "sha256:" : "",
             a_keys & 2 ? au_hex(TOK_A2, h2) : "", a_extra ? a_extra : "", au_hex(TOK_B, hb));
    return buf;
}

/* Connect from `src` ("127.0.0.2") to 127.0.0.1:port. */
static struct hs_conn *au_connect_from(const char *src, int port)
{
    struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &from.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    to.sin_port = htons((uint16_t)port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return NULL;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct hs_conn *c = calloc(1, sizeof(*c));
    if (c == NULL || bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0 ||
        connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0) {
        close(fd);
        free(c);
        return NULL;
    }
    c->fd = fd;
    return c;
}

/* POST `target` (empty body) with header lines `extra` ("Name: v\r\n"...) and request id `id`;
 * returns the status (-1 on a transport error) and keeps the answer in *r. */
static int au_post(struct hs_conn *c, const char *target, const char *id, const char *extra,
                   struct hs_resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "POST %s HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\nContent-Length: 0\r\n%s\r\n",
             target, id, extra ? extra : "");
    return hs_exchange(c, req, r) == 0 ? r->status : -1;
}

static int au_get(struct hs_conn *c, const char *path, const char *extra, struct hs_resp *r)
{
    char req[1024];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n", path, extra ? extra : "");
    return hs_exchange(c, req, r) == 0 ? r->status : -1;
}

/* The tenant of the access line of request `id` (waits for it), into out. */
static const char *au_access_tenant(const struct hs_server *s, const char *id, char *out,
                                    size_t size)
{
    json_t *line = hs_log_wait(s, "access", "request_id", id, HS_IO_MS);
    const char *t = line != NULL ? hs_json_str(line, "tenant") : NULL;
    snprintf(out, size, "%s", t != NULL ? t : "(none)");
    json_decref(line);
    return out;
}

/* The value of the sample `series` ("name{labels}") in a /metrics answer, -1 when absent. */
static double au_sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p += n) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

/* Neither a token nor the hex of its hash is anywhere in the log file. */
static void au_log_clean(const struct hs_server *s)
{
    static const char *const tokens[] = {TOK_A1, TOK_A2, TOK_B, TOK_M};
    char *path = ops_path(hs_dir(s), "spindle.log");
    char *log = path != NULL ? ops_file_read(path) : NULL;
    CU_ASSERT_FATAL(log != NULL);
    for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
        char hex[65];
        CU_ASSERT_PTR_NULL(strstr(log, tokens[i]));
        CU_ASSERT_PTR_NULL(strstr(log, au_hex(tokens[i], hex)));
        CU_ASSERT_PTR_NULL(strstr(log, "Bearer"));
    }
    free(log);
    free(path);
}

#define BEARER(tok) "Authorization: Bearer " tok "\r\n"

/* ---- tests ----------------------------------------------------------------------------------- */

/* Tenant a may start one job (rate 0.001/s, burst 1). With every header combination only a's own
 * token charges a, only b's charges b: a's first job is a's (access line), a's second is refused
 * by a's limit even when it claims b; claims of b with a's token are 403; b's token is b. */
static void test_auth_keys_no_header_combination_crosses_tenants(void)
{
    char tenants[1024], t[80];
    const char *over[] = {"auth.mode=keys",
                          au_tenants(tenants, sizeof(tenants), 3, "rate = 0.001\nburst = 1"), NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(au_post(c, "/v1/jobs/noop", "x-a1", BEARER(TOK_A1), &r) == 200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-a1", t, sizeof(t)), "a");
    /* a's token claiming b: 403 before anything is charged, to anyone */
    CU_ASSERT_EQUAL(
        au_post(c, "/v1/jobs/noop", "x-a-as-b", BEARER(TOK_A1) "X-Tenant-Id: b\r\n", &r), 403);
    CU_ASSERT(hs_resp_is_error(&r, 403, "forbidden"));
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-a-as-b", t, sizeof(t)), "-");
    /* claims without a token, with a bad one, with two tokens: 401, one message for all */
    const char *claims[] = {"X-Tenant-Id: b\r\n",
                            "Authorization: Bearer spk_guess\r\nX-Tenant-Id: b\r\n",
                            BEARER(TOK_B) BEARER(TOK_A1), "Authorization: Basic YjpiCg==\r\n",
                            BEARER(TOK_B) "X-Tenant-Id: b\r\nX-Tenant-Id: a\r\n"};
    for (size_t i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
        int st = au_post(c, "/v1/jobs/noop", "x-claim", claims[i], &r);
        CU_ASSERT(st == 401 || (i == 4 && st == 403));
        if (st == 401) {
            char www[64] = "";
            CU_ASSERT(hs_resp_is_error(&r, 401, "unauthorized"));
            CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"missing or invalid credentials\""));
            CU_ASSERT(hs_resp_header(&r, "WWW-Authenticate", www, sizeof(www)) &&
                      strncmp(www, "Bearer", 6) == 0);
        }
    }
    /* a's second job is refused by a's own limit, however it presents itself */
    CU_ASSERT_EQUAL(au_post(c, "/v1/jobs/noop", "x-a2", BEARER(TOK_A2), &r), 429);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    CU_ASSERT_EQUAL(au_post(c, "/v1/jobs/noop", "x-a3",
                            BEARER(TOK_A1) "X-Tenant-Id: a\r\nX-Forwarded-For: 10.9.9.9\r\n", &r),
                    429);
    /* b was never charged: its token works, in a job and in a batch, as b */
    CU_ASSERT_EQUAL(au_post(c, "/v1/jobs/noop", "x-b1", BEARER(TOK_B) "X-Tenant-Id: b\r\n", &r),
                    200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-b1", t, sizeof(t)), "b");
    char batch[512];
    snprintf(batch, sizeof(batch),
             "POST /v1/batch?mode=all HTTP/1.1\r\nHost: t\r\nX-Request-Id: x-batch-b\r\n" BEARER(
                 TOK_B) "Content-Length: 17\r\n\r\n[{\"kind\":\"noop\"}]");
    CU_ASSERT(hs_exchange(c, batch, &r) == 0 && r.status == 200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-batch-b", t, sizeof(t)), "b");
    snprintf(batch, sizeof(batch),
             "POST /v1/batch?mode=all HTTP/1.1\r\nHost: t\r\nX-Request-Id: x-batch-ab\r\n" BEARER(
                 TOK_A1) "X-Tenant-Id: b\r\nContent-Length: 17\r\n\r\n[{\"kind\":\"noop\"}]");
    CU_ASSERT(hs_exchange(c, batch, &r) == 0 && r.status == 403);
    CU_ASSERT(ops_header_is(&r, "Connection", "close")); /* refused before its body was read */
    hs_close(c);
    HS_CHECK((c = hs_connect(s)) != NULL);
    /* what admission counted: one refusal, for a; none for b */
    HS_CHECK(au_get(c, "/metrics", NULL, &r) == 200);
    CU_ASSERT_EQUAL(
        au_sample(r.body, "spindle_refusals_total{reason=\"tenant_rate_limited\",tenant=\"a\"}"),
        2);
    CU_ASSERT_EQUAL(
        au_sample(r.body, "spindle_refusals_total{reason=\"tenant_rate_limited\",tenant=\"b\"}"),
        -1);
    CU_ASSERT_EQUAL(au_sample(r.body, "spindle_auth_failures_total{reason=\"forbidden\"}"), 3);
    /* refusals are counted under the route they were refused: for /v1/jobs/<kind> that is the
     * route's pattern, so unauthenticated paths cannot add label values */
    CU_ASSERT_EQUAL(
        au_sample(r.body, "spindle_http_requests_total{route=\"/v1/jobs/*\",status=\"401\"}"), 4);
    /* health checks need nothing */
    CU_ASSERT_EQUAL(au_get(c, "/healthz", NULL, &r), 200);
    json_t *warn = hs_log_wait(s, "authentication failed", "reason", "invalid", HS_IO_MS);
    CU_ASSERT(warn != NULL && hs_json_str(warn, "peer") != NULL &&
              strcmp(hs_json_str(warn, "level"), "warn") == 0);
    json_decref(warn);
out:
    hs_resp_fini(&r);
    hs_close(c);
    if (s != NULL)
        au_log_clean(s);
    HS_FINISH(s);
}

/* A refusal comes before the body: a wrong token announcing 64 KiB gets 401 and the connection
 * closes without the body ever being sent; so does a streaming upload with Expect: 100-continue
 * (no 100 Continue first). */
static void test_auth_refused_before_the_body(void)
{
    char tenants[1024];
    const char *over[] = {"auth.mode=keys", au_tenants(tenants, sizeof(tenants), 3, NULL), NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c,
                         "POST /v1/jobs/sha256?rounds=1 HTTP/1.1\r\nHost: t\r\n"
                         "Authorization: Bearer spk_wrong\r\nContent-Length: 65536\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 401, "unauthorized"));
    CU_ASSERT(ops_header_is(&r, "Connection", "close"));
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
    /* a streaming kind's chunked upload asking for 100 Continue: refused first, never invited */
    hs_close(c);
    hs_resp_fini(&r);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /v1/jobs/compress?codec=zstd HTTP/1.1\r\nHost: t\r\n"
                            "Authorization: Bearer spk_wrong\r\nExpect: 100-continue\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n") == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 401, "unauthorized"));
    CU_ASSERT(ops_header_is(&r, "Connection", "close"));
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* Send `n` wrong tokens pipelined in rounds of 200 on `c`, each with another spoofed
 * X-Forwarded-For and X-Tenant-Id; count the answers by status. */
static void au_flood(struct hs_conn *c, unsigned n, unsigned *n401, unsigned *n429, unsigned *other)
{
    static char batch[200 * 256];
    struct hs_resp r = {0};
    for (unsigned done = 0; done < n;) {
        unsigned k = n - done < 200 ? n - done : 200;
        size_t len = 0;
        for (unsigned i = 0; i < k; i++)
            len += (size_t)snprintf(batch + len, sizeof(batch) - len,
                                    "POST /v1/jobs/noop HTTP/1.1\r\nHost: t\r\n"
                                    "Authorization: Bearer spk_guess%u\r\nX-Tenant-Id: b\r\n"
                                    "X-Forwarded-For: 10.%u.%u.1\r\nContent-Length: 0\r\n\r\n",
                                    done + i, (done + i) >> 8 & 255, (done + i) & 255);
        if (hs_send(c, batch, len, HS_IO_MS) != 0)
            break;
        for (unsigned i = 0; i < k; i++) {
            if (hs_read_response(c, &r, false, HS_IO_MS) != 0) {
                *other += k - i;
                break;
            }
            if (r.status == 401)
                (*n401)++;
            else if (r.status == 429 && hs_resp_is_error(&r, 429, "too_many_failures"))
                (*n429)++;
            else
                (*other)++;
        }
        done += k;
    }
    hs_resp_fini(&r);
}

/* 10,000 wrong tokens from 127.0.0.1 (spoofed forwarding headers change nothing: the peer is not
 * a trusted proxy): 5 get 401, the rest 429 with Retry-After, and only 5 failures are logged, one
 * throttle line. The owner of b, connecting from 127.0.0.2, is served all along; from the
 * throttled address even b's right token waits (429, before any check). */
static void test_auth_throttle_ten_thousand_wrong_tokens(void)
{
    char tenants[1024], t[80];
    const char *over[] = {"auth.mode=keys", "auth.throttle_failures=5", "server.retry_hold_ms=0",
                          au_tenants(tenants, sizeof(tenants), 3, NULL), NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL, *owner = NULL;
    struct hs_resp r = {0};
    unsigned n401 = 0, n429 = 0, other = 0;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK((owner = au_connect_from("127.0.0.2", hs_port(s))) != NULL);
    au_flood(c, 5000, &n401, &n429, &other);
    CU_ASSERT_EQUAL(au_post(owner, "/v1/jobs/noop", "x-owner-mid", BEARER(TOK_B), &r), 200);
    au_flood(c, 5000, &n401, &n429, &other);
    CU_ASSERT_EQUAL(n401, 5);
    CU_ASSERT_EQUAL(n429, 9995);
    CU_ASSERT_EQUAL(other, 0);
    CU_ASSERT_EQUAL(au_post(c, "/v1/jobs/noop", "x-from-throttled", BEARER(TOK_B), &r), 429);
    char ra[16] = "";
    CU_ASSERT(hs_resp_header(&r, "Retry-After", ra, sizeof(ra)) && atoi(ra) >= 1);
    CU_ASSERT_EQUAL(au_post(owner, "/v1/jobs/noop", "x-owner", BEARER(TOK_B), &r), 200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-owner", t, sizeof(t)), "b");
    CU_ASSERT_EQUAL(au_get(owner, "/healthz", NULL, &r), 200);
    HS_CHECK(au_get(owner, "/metrics", NULL, &r) == 200);
    CU_ASSERT_EQUAL(au_sample(r.body, "spindle_auth_failures_total{reason=\"invalid\"}"), 5);
    CU_ASSERT_EQUAL(au_sample(r.body, "spindle_auth_failures_total{reason=\"throttled\"}"), 9996);
    CU_ASSERT_EQUAL(au_sample(r.body, "spindle_auth_throttled_addresses"), 1);
    json_t *lines = hs_log_lines(s);
    CU_ASSERT_EQUAL(ops_count(lines, "authentication failed", NULL), 5);
    CU_ASSERT_EQUAL(ops_count(lines, "client throttled: too many failed authentications", NULL), 1);
    json_decref(lines);
out:
    hs_resp_fini(&r);
    hs_close(c);
    hs_close(owner);
    if (s != NULL)
        au_log_clean(s);
    HS_FINISH(s);
}

/* A reload that removes a's first key: a job that key started keeps running as a and answers;
 * the key fails at once for the next request, a's second key goes on as a. */
static void test_auth_reload_removes_a_key_at_once(void)
{
    char tenants[1024], t[80], extra[1024], h2[65], hb[65];
    const char *over[] = {"auth.mode=keys", "pool.workers=2",
                          au_tenants(tenants, sizeof(tenants), 3, NULL), NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL, *c2 = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL && (c2 = hs_connect(s)) != NULL);
    HS_CHECK(hs_send_str(c, "POST /v1/jobs/spin?ms=1500 HTTP/1.1\r\nHost: t\r\n"
                            "X-Request-Id: x-inflight\r\n" BEARER(
                                TOK_A1) "Content-Length: 0\r\n\r\n") == 0);
    json_t *started = hs_log_wait(s, "job start", "request_id", "x-inflight", HS_IO_MS);
    HS_CHECK(started != NULL);
    json_decref(started);
    snprintf(extra, sizeof(extra),
             "[auth]\nmode = keys\n\n[tenant.a]\nkeys = sha256:%s\n\n[tenant.b]\nkeys = "
             "sha256:%s\n\n[pool]\nworkers = 2\n",
             au_hex(TOK_A2, h2), au_hex(TOK_B, hb));
    HS_CHECK(ops_config_rewrite(s, "debug", extra) == 0);
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    json_t *done = hs_log_wait(s, "configuration reloaded", NULL, NULL, HS_IO_MS);
    HS_CHECK(done != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(hs_json_str(done, "changed"), "tenant.a.keys"));
    json_decref(done);
    CU_ASSERT_EQUAL(au_post(c2, "/v1/jobs/noop", "x-removed", BEARER(TOK_A1), &r), 401);
    CU_ASSERT_EQUAL(au_post(c2, "/v1/jobs/noop", "x-kept", BEARER(TOK_A2), &r), 200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-kept", t, sizeof(t)), "a");
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-inflight", t, sizeof(t)), "a");
out:
    hs_resp_fini(&r);
    hs_close(c);
    hs_close(c2);
    if (s != NULL)
        au_log_clean(s);
    HS_FINISH(s);
}

/* The port of the admin listener, from its "listening" line. */
static int au_admin_port(const struct hs_server *s)
{
    json_t *l = hs_log_wait(s, "listening", "routes", "operator", HS_IO_MS);
    const char *addr = l != NULL ? hs_json_str(l, "addr") : NULL;
    const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;
    int port = colon != NULL ? atoi(colon + 1) : 0;
    json_decref(l);
    return port;
}

/* admin_listen serves /metrics (with its token) and health, not jobs; the main listener no longer
 * serves /metrics. */
static void test_auth_metrics_token_on_the_admin_listener(void)
{
    char tenants[1024], mt[128], hex[65];
    snprintf(mt, sizeof(mt), "auth.metrics_token=sha256:%s", au_hex(TOK_M, hex));
    const char *over[] = {"auth.mode=keys", "server.admin_listen=127.0.0.1:0", mt,
                          au_tenants(tenants, sizeof(tenants), 3, NULL), NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL, *adm = NULL;
    struct hs_resp r = {0};
    int port = 0;
    HS_CHECK(s != NULL);
    HS_CHECK((port = au_admin_port(s)) > 0 && port != hs_port(s));
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK((adm = hs_connect_host("127.0.0.1", port, HS_IO_MS)) != NULL);
    CU_ASSERT_EQUAL(au_get(c, "/metrics", BEARER(TOK_M), &r), 404);
    CU_ASSERT_EQUAL(au_get(adm, "/metrics", NULL, &r), 401);
    CU_ASSERT(ops_header_is(&r, "WWW-Authenticate", "Bearer realm=\"spindle\""));
    CU_ASSERT_EQUAL(au_get(adm, "/metrics", BEARER(TOK_A1), &r), 401);
    CU_ASSERT_EQUAL(au_get(adm, "/metrics", BEARER(TOK_M), &r), 200);
    CU_ASSERT(au_sample(r.body, "spindle_auth_failures_total{reason=\"missing\"}") == 1);
    CU_ASSERT_EQUAL(au_get(adm, "/healthz", NULL, &r), 200);
    CU_ASSERT_EQUAL(au_get(adm, "/readyz", NULL, &r), 200);
    CU_ASSERT_EQUAL(au_post(adm, "/v1/jobs/noop", "x-admin-job", BEARER(TOK_A1), &r), 404);
    CU_ASSERT_EQUAL(au_post(c, "/v1/jobs/noop", "x-main-job", BEARER(TOK_A1), &r), 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    hs_close(adm);
    if (s != NULL)
        au_log_clean(s);
    HS_FINISH(s);
}

/* proxy mode: X-Tenant-Id is believed from the trusted front end (127.0.0.2) only; a client
 * talking to spindle directly gets 401 with any X-Tenant-Id or X-Forwarded-For. */
static void test_auth_proxy_believes_only_trusted_peers(void)
{
    const char *over[] = {"auth.mode=proxy", "server.trusted_proxies=127.0.0.2", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *direct = NULL, *proxy = NULL;
    struct hs_resp r = {0};
    char t[80];
    HS_CHECK(s != NULL);
    HS_CHECK((direct = hs_connect(s)) != NULL);
    HS_CHECK((proxy = au_connect_from("127.0.0.2", hs_port(s))) != NULL);
    CU_ASSERT_EQUAL(au_post(direct, "/v1/jobs/noop", "x-direct", "X-Tenant-Id: b\r\n", &r), 401);
    CU_ASSERT_EQUAL(au_post(direct, "/v1/jobs/noop", "x-spoof",
                            "X-Tenant-Id: b\r\nX-Forwarded-For: 127.0.0.2\r\n", &r),
                    401);
    CU_ASSERT_EQUAL(au_post(proxy, "/v1/jobs/noop", "x-proxied", "X-Tenant-Id: b\r\n", &r), 200);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-proxied", t, sizeof(t)), "b");
    CU_ASSERT_EQUAL(au_post(proxy, "/v1/jobs/noop", "x-nobody", NULL, &r), 401);
out:
    hs_resp_fini(&r);
    hs_close(direct);
    hs_close(proxy);
    HS_FINISH(s);
}

/* mode = keys on a non-loopback address: --check-config and serve both exit 2 naming FILE:LINE;
 * with allow_plaintext the file checks. Nothing is bound. */
static void test_auth_keys_refused_on_a_public_address(void)
{
    char *dir = proc_tmpdir_new(), *bad = NULL, *ok = NULL, *err = NULL;
    int code = -1;
    HS_CHECK(dir != NULL);
    bad = proc_file_write(dir, "bad.conf", "[server]\nlisten = 0.0.0.0:0\n[auth]\nmode = keys\n");
    ok = proc_file_write(dir, "ok.conf",
                         "[server]\nlisten = 0.0.0.0:0\n[auth]\nmode = keys\nallow_plaintext = "
                         "yes\n");
    HS_CHECK(bad != NULL && ok != NULL);
    const char *check[] = {"serve", "--check-config", "-c", bad, NULL};
    HS_CHECK(proc_run(check, HS_START_MS, NULL, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "bad.conf:4: [auth] mode: mode = keys on the non-loopback"));
    free(err);
    err = NULL;
    const char *serve[] = {"serve", "-c", bad, NULL};
    HS_CHECK(proc_run(serve, HS_START_MS, NULL, &err, &code) == 0);
    CU_ASSERT_EQUAL(code, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "allow_plaintext"));
    const char *check_ok[] = {"serve", "--check-config", "-c", ok, NULL};
    HS_CHECK(proc_run(check_ok, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
out:
    free(err);
    free(bad);
    free(ok);
    proc_tmpdir_free(dir);
}

/* keygen writes a token (0600) and prints its keys line; the server takes the line; spindle call
 * sends the token from --token-file and from SPINDLE_TOKEN; the token is on no command line. */
static void test_auth_keygen_and_call(void)
{
    char *dir = proc_tmpdir_new(), *tokfile = NULL, *out = NULL, *tok = NULL;
    char sections[1024], server[64], t[80];
    struct hs_server *s = NULL;
    struct proc *p = NULL;
    int code = -1;
    HS_CHECK(dir != NULL && (tokfile = ops_path(dir, "a.token")) != NULL);
    const char *kg[] = {"keygen", "--tenant", "a", "--token-file", tokfile, NULL};
    HS_CHECK(proc_run(kg, HS_START_MS, &out, NULL, &code) == 0 && code == 0);
    struct stat st;
    CU_ASSERT(stat(tokfile, &st) == 0 && (st.st_mode & 0777) == 0600);
    HS_CHECK((tok = ops_file_read(tokfile)) != NULL && strncmp(tok, "spk_", 4) == 0);
    tok[strcspn(tok, "\n")] = '\0';
    CU_ASSERT_PTR_NULL(strstr(out, tok)); /* the token went to the file only */
    char hex[65], want[128];
    snprintf(want, sizeof(want), "[tenant.a]\nkeys = sha256:%s\n", au_hex(tok, hex));
    CU_ASSERT_STRING_EQUAL(out, want);
    HS_CHECK(proc_run(kg, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 1); /* an existing token file is never overwritten */
    const char *kg_metrics[] = {"keygen", "--metrics", NULL};
    char *mout = NULL;
    HS_CHECK(proc_run(kg_metrics, HS_START_MS, &mout, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    CU_ASSERT(mout != NULL && strncmp(mout, "spk_", 4) == 0 &&
              strstr(mout, "\n[auth]\nmetrics_token = sha256:") != NULL);
    free(mout);
    const char *kg_bad[] = {"keygen", "--tenant", "no such", NULL};
    HS_CHECK(proc_run(kg_bad, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 2);
    snprintf(sections, sizeof(sections), "log.access=true\n\n%s", out);
    const char *over[] = {"auth.mode=keys", sections, NULL};
    HS_CHECK((s = hs_start(over)) != NULL);
    snprintf(server, sizeof(server), "http://127.0.0.1:%d", hs_port(s));
    const char *call[] = {"call",        "-s",   server, "--token-file", tokfile, "--request-id",
                          "x-call-file", "noop", NULL};
    HS_CHECK(proc_run(call, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-call-file", t, sizeof(t)), "a");
    char env[128];
    snprintf(env, sizeof(env), "SPINDLE_TOKEN=%s", tok);
    const char *call_env[] = {"call", "-s",   server, "--request-id", "x-call-env", "--retries",
                              "0",    "noop", NULL};
    const char *envs[] = {env, NULL};
    HS_CHECK((p = proc_spawn(call_env, envs)) != NULL);
    CU_ASSERT(proc_wait(p, HS_START_MS, &code) == 0 && code == 0);
    CU_ASSERT_STRING_EQUAL(au_access_tenant(s, "x-call-env", t, sizeof(t)), "a");
    const char *call_none[] = {"call", "-s", server, "--retries", "0", "noop", NULL};
    HS_CHECK(proc_run(call_none, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 1); /* 401 */
    char *log_path = ops_path(hs_dir(s), "spindle.log");
    char *log = log_path != NULL ? ops_file_read(log_path) : NULL;
    CU_ASSERT(log != NULL && strstr(log, tok) == NULL && strstr(log, hex) == NULL);
    free(log);
    free(log_path);
out:
    proc_free(p);
    HS_FINISH(s);
    free(out);
    free(tok);
    free(tokfile);
    proc_tmpdir_free(dir);
}

/* METHOD `target` with header lines `extra` and `body` (NULL: none) on a connection of its own
 * (a refusal before the body closes it); the status, -1 on a transport error; *r the answer. */
static int au_do(const struct hs_server *s, const char *method, const char *target,
                 const char *extra, const char *body, struct hs_resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
             method, target, extra ? extra : "", body ? strlen(body) : 0, body ? body : "");
    hs_resp_fini(r);
    return hs_roundtrip(s, req, r) == 0 ? r->status : -1;
}

/* The "id" of a task answer into id (64 bytes); false when there is none. */
static bool au_task_id(const struct hs_resp *r, char *id)
{
    json_t *j = hs_resp_json(r);
    const char *v = j != NULL ? hs_json_str(j, "id") : NULL;
    snprintf(id, 64, "%s", v != NULL ? v : "");
    json_decref(j);
    return id[0] != '\0';
}

/* The task routes are tenant routes: without a token each one is 401 (counted under the route's
 * pattern) and nothing is stored; with tokens, a's task does not exist for b (GET, its result,
 * DELETE and b's list), b's token claiming a is 403, and the task stays a's, queued; a task a
 * runs logs its attempt under tenant a. */
static void test_auth_tasks_are_the_tokens_tenants(void)
{
    char tenants[1024], id[64] = "", ran[64] = "", path[160];
    const char *over[] = {"auth.mode=keys", au_tenants(tenants, sizeof(tenants), 1, NULL), NULL};
    struct hs_server *s = hs_start(over);
    struct hs_resp r = {0};
    json_t *j = NULL, *line = NULL;
    HS_CHECK(s != NULL);
    const char *delayed = "{\"kind\":\"noop\",\"delay_ms\":600000}";
    const char *none[][2] = {{"POST", "/v1/tasks"},         {"GET", "/v1/tasks"},
                             {"GET", "/v1/tasks/x"},        {"DELETE", "/v1/tasks/x"},
                             {"GET", "/v1/tasks/x/result"}, {"GET", "/v1/schedules"}};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        CU_ASSERT_EQUAL(au_do(s, none[i][0], none[i][1], "X-Tenant-Id: a\r\n",
                              strcmp(none[i][0], "POST") == 0 ? delayed : NULL, &r),
                        401);
        CU_ASSERT(hs_resp_is_error(&r, 401, "unauthorized"));
    }
    HS_CHECK(au_do(s, "POST", "/v1/tasks", BEARER(TOK_A1), delayed, &r) == 202);
    HS_CHECK(au_task_id(&r, id));
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    CU_ASSERT_EQUAL(au_do(s, "GET", path, BEARER(TOK_B), NULL, &r), 404);
    CU_ASSERT(hs_resp_is_error(&r, 404, "task_not_found"));
    CU_ASSERT_EQUAL(au_do(s, "DELETE", path, BEARER(TOK_B), NULL, &r), 404);
    CU_ASSERT_EQUAL(au_do(s, "GET", path, BEARER(TOK_B) "X-Tenant-Id: a\r\n", NULL, &r), 403);
    CU_ASSERT_EQUAL(au_do(s, "GET", "/v1/tasks", BEARER(TOK_B), NULL, &r), 200);
    CU_ASSERT_STRING_EQUAL(r.body, "{\"tasks\":[],\"next_after\":null}");
    snprintf(path, sizeof(path), "/v1/tasks/%s/result", id);
    CU_ASSERT_EQUAL(au_do(s, "GET", path, BEARER(TOK_B), NULL, &r), 404);
    CU_ASSERT_EQUAL(au_do(s, "GET", path, BEARER(TOK_A1), NULL, &r), 409); /* a's, not run */
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    CU_ASSERT_EQUAL(au_do(s, "GET", path, BEARER(TOK_A1), NULL, &r), 200);
    HS_CHECK((j = hs_resp_json(&r)) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(j, "state"), "queued"); /* b's DELETE did nothing */
    CU_ASSERT_EQUAL(au_do(s, "GET", "/v1/tasks", BEARER(TOK_A1), NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, id));
    CU_ASSERT_EQUAL(au_do(s, "DELETE", path, BEARER(TOK_A1), NULL, &r), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"state\":\"cancelled\""));
    /* a task that runs: its attempt is a's */
    HS_CHECK(au_do(s, "POST", "/v1/tasks", BEARER(TOK_A1), "{\"kind\":\"noop\"}", &r) == 202);
    HS_CHECK(au_task_id(&r, ran));
    HS_CHECK((line = hs_log_wait(s, "task attempt end", "task_id", ran, HS_IO_MS)) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "tenant"), "a");
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "outcome"), "succeeded");
    HS_CHECK(au_do(s, "GET", "/metrics", NULL, NULL, &r) == 200);
    CU_ASSERT_EQUAL(
        au_sample(r.body, "spindle_http_requests_total{route=\"/v1/tasks/...\",status=\"401\"}"),
        3);
    CU_ASSERT_EQUAL(
        au_sample(r.body, "spindle_http_requests_total{route=\"/v1/tasks\",status=\"401\"}"), 2);
out:
    json_decref(line);
    json_decref(j);
    hs_resp_fini(&r);
    if (s != NULL)
        au_log_clean(s);
    HS_FINISH(s);
}

/* `spindle call --async` and `spindle tasks` send the token as `spindle call` does: from
 * --token-file, else SPINDLE_TOKEN; without one the server refuses them (401: exit 1). The task
 * is the token's tenant's: the other tenant's `tasks show` does not find it. */
static void test_auth_task_commands_send_the_token(void)
{
    char tenants[1024], server[64], id[64] = "";
    char *tokfile = NULL, *out = NULL;
    const char *over[] = {"auth.mode=keys", au_tenants(tenants, sizeof(tenants), 1, NULL), NULL};
    struct hs_server *s = hs_start(over);
    struct proc *p = NULL;
    int code = -1;
    HS_CHECK(s != NULL);
    HS_CHECK((tokfile = proc_file_write(hs_dir(s), "a.token", TOK_A1 "\n")) != NULL);
    snprintf(server, sizeof(server), "http://127.0.0.1:%d", hs_port(s));
    const char *async_file[] = {"call",         "-s",     server,     "--async",
                                "--token-file", tokfile,  "--detach", "noop",
                                "--delay",      "600000", NULL};
    HS_CHECK(proc_run(async_file, HS_START_MS, &out, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    json_t *task = out != NULL ? json_loads(out, 0, NULL) : NULL;
    snprintf(id, sizeof(id), "%s", task != NULL ? hs_json_str(task, "id") : "");
    json_decref(task);
    HS_CHECK(id[0] != '\0');
    const char *show_a[] = {"tasks", "show", id, "-s", server, "--token-file", tokfile, NULL};
    HS_CHECK(proc_run(show_a, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    const char *env_b[] = {"SPINDLE_TOKEN=" TOK_B, NULL};
    const char *show_b[] = {"tasks", "show", id, "-s", server, NULL};
    HS_CHECK((p = proc_spawn(show_b, env_b)) != NULL);
    CU_ASSERT(proc_wait(p, HS_START_MS, &code) == 0 && code == 1); /* 404: not b's */
    CU_ASSERT_PTR_NOT_NULL(strstr(proc_output(p, PROC_STDERR, NULL), "task_not_found"));
    proc_free(p);
    p = NULL;
    const char *show_none[] = {"tasks", "show", id, "-s", server, NULL};
    HS_CHECK(proc_run(show_none, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 1); /* 401 */
    const char *async_env[] = {"call", "-s", server, "--async", "--retries", "0", "noop", NULL};
    HS_CHECK((p = proc_spawn(async_env, env_b)) != NULL);
    CU_ASSERT(proc_wait(p, HS_START_MS, &code) == 0 && code == 0);
    CU_ASSERT_STRING_EQUAL(proc_output(p, PROC_STDOUT, NULL), "{\"ok\":true}\n");
    proc_free(p);
    p = NULL;
    const char *async_none[] = {"call", "-s", server, "--async", "--retries", "0", "noop", NULL};
    HS_CHECK(proc_run(async_none, HS_START_MS, NULL, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 1); /* 401 */
    const char *list_a[] = {"tasks", "list", "-s", server, "--token-file", tokfile, NULL};
    free(out);
    out = NULL;
    HS_CHECK(proc_run(list_a, HS_START_MS, &out, NULL, &code) == 0);
    CU_ASSERT_EQUAL(code, 0);
    CU_ASSERT(out != NULL && strstr(out, id) != NULL && strstr(out, "queued") != NULL);
out:
    proc_free(p);
    free(out);
    free(tokfile);
    if (s != NULL)
        au_log_clean(s);
    HS_FINISH(s);
}

int suite_integration_auth(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_auth_keys_no_header_combination_crosses_tenants),
        SPINDLE_TEST(test_auth_refused_before_the_body),
        SPINDLE_TEST(test_auth_throttle_ten_thousand_wrong_tokens),
        SPINDLE_TEST(test_auth_reload_removes_a_key_at_once),
        SPINDLE_TEST(test_auth_metrics_token_on_the_admin_listener),
        SPINDLE_TEST(test_auth_proxy_believes_only_trusted_peers),
        SPINDLE_TEST(test_auth_keys_refused_on_a_public_address),
        SPINDLE_TEST(test_auth_keygen_and_call),
        SPINDLE_TEST(test_auth_tasks_are_the_tokens_tenants),
        SPINDLE_TEST(test_auth_task_commands_send_the_token),
    };
    return SPINDLE_SUITE_ADD("integration_auth", NULL, NULL, tests);
}
