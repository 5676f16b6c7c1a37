/* test_hostile.c - malformed, smuggling, slow and vanishing clients against the real binary.
 *
 * Design: a malformed request is sent in one write together with a complete second request
 * ("GET /smuggled") hidden after it. The server must answer the first with its error (status and
 * JSON code), say Connection: close, close the connection, and never answer the hidden request:
 * once framing cannot be trusted nothing buffered after it may be parsed. Slow and vanishing
 * clients check that the server stays available to everyone else and exits cleanly (no leak)
 * afterwards. Pacing of the slow clients uses poll() timeouts; every loop is bounded.
 */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_hostile(void);

#define GET_HEALTHZ "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
#define SMUGGLED    "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"

static bool header_is(const struct hs_resp *r, const char *name, const char *want)
{
    char v[512];
    return hs_resp_header(r, name, v, sizeof(v)) && strcmp(v, want) == 0;
}

/* Send `len` bytes of `req` followed by a smuggled request; expect `status`/`code`, Connection:
 * close, the end of the connection and no second answer. Then the server still serves. */
static void reject_on(struct hs_server *s, const char *req, size_t len, int status,
                      const char *code)
{
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    char *all = malloc(len + sizeof(SMUGGLED));
    HS_CHECK(all != NULL);
    memcpy(all, req, len);
    memcpy(all + len, SMUGGLED, sizeof(SMUGGLED));
    HS_CHECK((c = hs_connect(s)) != NULL);
    int rc = hs_send(c, all, len + sizeof(SMUGGLED) - 1, HS_IO_MS);
    HS_CHECK(rc == 0 || rc == -EPIPE || rc == -ECONNRESET);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    bool ok = hs_resp_is_error(&r, status, code);
    CU_ASSERT(ok);
    if (!ok)
        fprintf(stderr, "\n    expected %d %s, got:\n%s\n%s\n", status, code, r.head, r.body);
    CU_ASSERT(header_is(&r, "Connection", "close"));
    CU_ASSERT_EQUAL(hs_read_until_close(c, HS_IO_MS), 0);
    /* Nothing after the error: in particular no answer to /smuggled. */
    CU_ASSERT_EQUAL(c->len, 0);
    hs_resp_fini(&r);
    CU_ASSERT_EQUAL(hs_roundtrip(s, GET_HEALTHZ, &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    free(all);
    hs_resp_fini(&r);
    hs_close(c);
}

static void reject_check(const char *req, size_t len, int status, const char *code)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT(s != NULL);
    if (s != NULL)
        reject_on(s, req, len, status, code);
    HS_FINISH(s);
}

static void reject_400(const char *req)
{
    reject_check(req, strlen(req), 400, "bad_request");
}

/* ---- framing -------------------------------------------------------------------------------- */

/* RFC 9112 section 3.2: no Host in HTTP/1.1, two Host fields, or a value that is not
 * host[:port] is 400 and closes; valid forms (names, IP literals, ports, empty) are served, and
 * HTTP/1.0 may leave Host out. */
static void test_host_rules(void)
{
    static const char *const bad[] = {"a b",      "a/b",  "a@b",    "http://a", "a:b:c", "a:80x",
                                      "a:123456", "[::1", "[::1]x", "[zz::1]",  "a%2",   "a\"b"};
    static const char *const good[] = {"example.com:8080",      "127.0.0.1", "[::1]:80", "a%20b",
                                       "xn--bcher-kva.example", "a:",        "",         "[v1.x]"};
    struct hs_server *s = hs_start(NULL);
    struct hs_resp r = {0};
    char req[256];
    HS_CHECK(s != NULL);
    reject_on(s, "GET /healthz HTTP/1.1\r\n\r\n", 25, 400, "bad_request");
    static const char two[] = "GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n";
    reject_on(s, two, sizeof(two) - 1, 400, "bad_request");
    static const char two10[] = "GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n";
    reject_on(s, two10, sizeof(two10) - 1, 400, "bad_request");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        reject_on(s, req, (size_t)n, 400, "bad_request");
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        CU_ASSERT_EQUAL(hs_roundtrip(s, req, &r), 0);
        CU_ASSERT_EQUAL(r.status, 200);
        if (r.status != 200)
            fprintf(stderr, "\n    Host: %s refused\n", good[i]);
    }
    CU_ASSERT_EQUAL(hs_roundtrip(s, "GET /healthz HTTP/1.0\r\n\r\n", &r), 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

static void test_malformed_cl_and_te(void)
{
    /* A front end honouring Content-Length would see the smuggled request as part of the body. */
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n"
               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
}

static void test_malformed_duplicate_cl(void)
{
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 40\r\n"
               "\r\n");
}

static void test_malformed_negative_cl(void)
{
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n");
}

static void test_malformed_invalid_cl(void)
{
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n");
}

static void test_malformed_bad_chunk_size(void)
{
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               "zz\r\nhello\r\n0\r\n\r\n");
}

static void test_malformed_chunk_size_overflow(void)
{
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n");
}

static void test_malformed_unknown_transfer_coding(void)
{
    reject_400("POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n");
}

/* ---- syntax --------------------------------------------------------------------------------- */

static void test_malformed_obs_fold(void)
{
    reject_400("GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n");
}

static void test_malformed_nul_request_line(void)
{
    static const char req[] = "GET /heal\0thz HTTP/1.1\r\nHost: t\r\n\r\n";
    reject_check(req, sizeof(req) - 1, 400, "bad_request");
}

static void test_malformed_nul_header(void)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n";
    reject_check(req, sizeof(req) - 1, 400, "bad_request");
}

static void test_malformed_control_request_line(void)
{
    reject_400("GET /heal\x01thz HTTP/1.1\r\nHost: t\r\n\r\n");
}

static void test_malformed_control_header(void)
{
    reject_400("GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x01z\r\n\r\n");
}

static void test_malformed_bare_lf(void)
{
    reject_400("GET /healthz HTTP/1.1\nHost: t\n\n");
}

static void test_malformed_bare_lf_in_headers(void)
{
    reject_400("GET /healthz HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n");
}

static void test_malformed_space_before_colon(void)
{
    reject_400("GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n");
}

static void test_malformed_bad_method(void)
{
    reject_400("G(T /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
}

/* ---- versions ------------------------------------------------------------------------------- */

static void test_version_http2_preface(void)
{
    reject_check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24, 505, "http_version_not_supported");
}

static void test_version_http12(void)
{
    const char *req = "GET /healthz HTTP/1.2\r\nHost: t\r\n\r\n";
    reject_check(req, strlen(req), 505, "http_version_not_supported");
}

static void test_version_http20(void)
{
    const char *req = "GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n";
    reject_check(req, strlen(req), 505, "http_version_not_supported");
}

/* ---- slow clients --------------------------------------------------------------------------- */

/* Slowloris: many clients trickle header bytes (one every 100 ms) and never finish. A normal
 * client is served within a second meanwhile, and the header timeout ends every slow one. */
static void test_slowloris_header_timeout(void)
{
    enum { SLOW = 50, TIMEOUT_MS = 600 };
    const char *const over[] = {"server.header_timeout_ms=600", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *slow[SLOW] = {NULL};
    struct hs_resp r = {0};
    int ended = 0;
    HS_CHECK(s != NULL);
    for (int i = 0; i < SLOW; i++) {
        HS_CHECK((slow[i] = hs_connect(s)) != NULL);
        HS_CHECK(hs_send_str(slow[i], "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ") == 0);
    }
    long long t0 = hs_now_ms();
    bool served = false;
    /* Trickle until every slow client has been answered/closed, or a bound well past the limit. */
    while (ended < SLOW && hs_now_ms() - t0 < TIMEOUT_MS + 4000) {
        struct pollfd pfd[SLOW];
        for (int i = 0; i < SLOW; i++)
            pfd[i] = (struct pollfd){.fd = slow[i] != NULL ? slow[i]->fd : -1, .events = POLLIN};
        (void)poll(pfd, SLOW, 100);
        for (int i = 0; i < SLOW; i++) {
            if (slow[i] == NULL)
                continue;
            if (pfd[i].revents != 0) {
                /* The server spoke or closed: it must be a 408 (or just a close). */
                if (hs_read_until_close(slow[i], HS_IO_MS) == 0 &&
                    (slow[i]->len == 0 || strncmp(slow[i]->buf, "HTTP/1.1 408 ", 13) == 0))
                    ended++;
                else
                    CU_FAIL("a slow client got something other than 408 and close");
                CU_ASSERT(hs_now_ms() - t0 >= TIMEOUT_MS - 100);
                hs_close(slow[i]);
                slow[i] = NULL;
                continue;
            }
            (void)hs_send(slow[i], "x", 1, HS_IO_MS);
        }
        if (!served) {
            long long t1 = hs_now_ms();
            HS_CHECK(hs_roundtrip(s, GET_HEALTHZ, &r) == 0);
            CU_ASSERT_EQUAL(r.status, 200);
            CU_ASSERT(hs_now_ms() - t1 < 1000);
            served = true;
        }
    }
    CU_ASSERT(served);
    CU_ASSERT_EQUAL(ended, SLOW);
out:
    hs_resp_fini(&r);
    for (int i = 0; i < SLOW; i++)
        hs_close(slow[i]);
    HS_FINISH(s);
}

/* ---- vanishing clients ---------------------------------------------------------------------- */

/* Clients that go away (FIN or RST) mid-headers, mid-body, or before reading their answer leave
 * the server serving; HS_FINISH then checks a clean exit (no leaked connection under asan). */
static void test_vanish_mid_request(void)
{
    static const char *const partial[] = {
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Half",
        "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nonly a bit",
        "POST /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
        "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        GET_HEALTHZ GET_HEALTHZ GET_HEALTHZ,
        "GET /heal",
    };
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    HS_CHECK(s != NULL);
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
            HS_CHECK((c = hs_connect(s)) != NULL);
            HS_CHECK(hs_send_str(c, partial[i]) == 0);
            if (round % 2)
                hs_abort(c);
            else
                hs_close(c);
            c = NULL;
        }
    }
    CU_ASSERT(hs_alive(s));
    HS_CHECK(hs_roundtrip(s, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- fuzz inputs replayed ---------------------------------------------------------------------
 */

/* Replay one fuzz input (tests/fuzz/fuzz_http.c format: a mode byte, then the client's bytes) on a
 * real connection: send it, half-close (or vanish, as the mode says), and expect the server to
 * close within the bound. Returns false when the server did not. */
static bool replay_one(struct hs_server *s, const char *path)
{
    FILE *f = fopen(path, "rbe");
    char buf[8193];
    size_t len = f != NULL ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f != NULL)
        fclose(f);
    if (len < 1)
        return true;
    struct hs_conn *c = hs_connect(s);
    if (c == NULL)
        return false;
    (void)hs_send(c, buf + 1, len - 1, HS_IO_MS);
    if (buf[0] & 1) {
        hs_abort(c);
        return true;
    }
    shutdown(c->fd, SHUT_WR);
    bool ok = hs_read_until_close(c, HS_IO_MS) == 0;
    hs_close(c);
    return ok;
}

/* Every seed and every saved crasher (tests/fuzz/corpus, tests/fuzz/crashes) through the real
 * server: it closes each connection and stays healthy. The tree is found next to $SPINDLE_ETC. */
static void test_fuzz_inputs_replay(void)
{
    static const char *const dirs[] = {"tests/fuzz/corpus", "tests/fuzz/crashes"};
    const char *etc = getenv("SPINDLE_ETC");
    struct hs_server *s = NULL;
    struct hs_resp r = {0};
    int replayed = 0;
    if (etc == NULL) {
        printf("\n    skipped: SPINDLE_ETC is not set ");
        return;
    }
    HS_CHECK((s = hs_start(NULL)) != NULL);
    for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
        char dir[2048];
        snprintf(dir, sizeof(dir), "%s/../%s", etc, dirs[d]);
        DIR *dp = opendir(dir);
        struct dirent *e;
        while (dp != NULL && (e = readdir(dp)) != NULL) {
            char path[4096];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            bool closed = replay_one(s, path);
            CU_ASSERT(closed);
            if (!closed)
                fprintf(stderr, "\n    %s: the connection stayed open\n", path);
            replayed++;
        }
        if (dp != NULL)
            closedir(dp);
    }
    CU_ASSERT(replayed > 0);
    CU_ASSERT(hs_alive(s));
    HS_CHECK(hs_roundtrip(s, GET_HEALTHZ, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    hs_resp_fini(&r);
    HS_FINISH(s);
}

int suite_integration_hostile(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_host_rules),
        SPINDLE_TEST(test_malformed_cl_and_te),
        SPINDLE_TEST(test_malformed_duplicate_cl),
        SPINDLE_TEST(test_malformed_negative_cl),
        SPINDLE_TEST(test_malformed_invalid_cl),
        SPINDLE_TEST(test_malformed_bad_chunk_size),
        SPINDLE_TEST(test_malformed_chunk_size_overflow),
        SPINDLE_TEST(test_malformed_unknown_transfer_coding),
        SPINDLE_TEST(test_malformed_obs_fold),
        SPINDLE_TEST(test_malformed_nul_request_line),
        SPINDLE_TEST(test_malformed_nul_header),
        SPINDLE_TEST(test_malformed_control_request_line),
        SPINDLE_TEST(test_malformed_control_header),
        SPINDLE_TEST(test_malformed_bare_lf),
        SPINDLE_TEST(test_malformed_bare_lf_in_headers),
        SPINDLE_TEST(test_malformed_space_before_colon),
        SPINDLE_TEST(test_malformed_bad_method),
        SPINDLE_TEST(test_version_http2_preface),
        SPINDLE_TEST(test_version_http12),
        SPINDLE_TEST(test_version_http20),
        SPINDLE_TEST(test_slowloris_header_timeout),
        SPINDLE_TEST(test_vanish_mid_request),
        SPINDLE_TEST(test_fuzz_inputs_replay),
    };
    return SPINDLE_SUITE_ADD("integration_hostile", NULL, NULL, tests);
}
