/* test_call.c - end-to-end tests of `spindle call`, the real binary as a child process:
 * against the real server (one job, a body and a binary answer, IPv6, a batch over keep-alive
 * connections, a failing job), against a scripted fake server inside this process (503 +
 * Retry-After then 200 with the spacing measured on the server side, 429, statuses that are not
 * retried, a connection closed before the answer, a server that closes after every answer, the
 * headers sent, the client's own timeout), and against a closed port (refused, retried, then the
 * circuit opens).
 *
 * The fake server is one thread with a listening socket on 127.0.0.1:0 and a poll() loop over it,
 * a wake-up pipe and its connections. It answers the n-th request with the n-th scripted answer
 * (the last one repeats; NULL = never answer; "" = close without answering; a leading '!' = send
 * the rest, then close) and records when each request head arrived and the first head's text.
 * The test reads those only after joining the thread.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "tests/integration/harness.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_call(void);

#define CALL_RUN_MS   30000 /* one run of the client */
#define FAKE_MAX_REQ  32
#define FAKE_MAX_CONN 8

static char *call_dir;

/* ---- the fake server ---- */

struct fake {
    int lfd;
    int port;
    int wake[2]; /* written by fake_stop */
    pthread_t thread;
    const char *const *script; /* answers; NULL entry = keep the request unanswered */
    size_t nscript;
    int listen_after_ms; /* > 0: bound at once but listening only after this (refused before) */
    /* written by the thread, read after the join */
    unsigned nreq;
    long long at_ms[FAKE_MAX_REQ];
    char first_head[2048];
};

struct fake_conn {
    int fd;
    char buf[8192];
    size_t len;
};

/* A complete request (head + Content-Length body) at the start of c->buf: its length, or 0. */
static size_t fake_request_len(const struct fake_conn *c)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    size_t body = 0;
    char *cl = memmem(c->buf, head, "Content-Length: ", 16);
    if (cl)
        body = strtoul(cl + 16, NULL, 10);
    return c->len >= head + body ? head + body : 0;
}

/* Answer the complete requests buffered on c. Returns false when c must be closed. */
static bool fake_answer(struct fake *f, struct fake_conn *c)
{
    size_t n;
    while ((n = fake_request_len(c)) > 0) {
        unsigned i = f->nreq;
        if (i < FAKE_MAX_REQ)
            f->at_ms[i] = hs_now_ms();
        if (i == 0) {
            size_t h = n < sizeof(f->first_head) - 1 ? n : sizeof(f->first_head) - 1;
            memcpy(f->first_head, c->buf, h);
            f->first_head[h] = '\0';
        }
        f->nreq++;
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
        const char *a = f->script[i < f->nscript ? i : f->nscript - 1];
        if (a == NULL)
            continue;
        bool close_after = a[0] == '\0' || a[0] == '!';
        a += a[0] == '!';
        if (send(c->fd, a, strlen(a), MSG_NOSIGNAL) < 0 || close_after)
            return false;
    }
    return true;
}

static void fake_conn_input(struct fake *f, struct fake_conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n > 0) {
        c->len += (size_t)n;
        if (fake_answer(f, c))
            return;
    }
    close(c->fd);
    c->fd = -1;
    c->len = 0;
}

static void fake_accept(struct fake_conn *conns)
{
    int fd = accept(conns[0].fd, NULL, NULL);
    if (fd < 0)
        return;
    for (int i = 1; i <= FAKE_MAX_CONN; i++) {
        if (conns[i].fd < 0) {
            conns[i].fd = fd;
            conns[i].len = 0;
            return;
        }
    }
    close(fd);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    /* [0] listener, [1..FAKE_MAX_CONN] connections, [FAKE_MAX_CONN + 1] wake-up */
    struct fake_conn *conns = calloc(FAKE_MAX_CONN + 1, sizeof(*conns));
    struct pollfd pfd[FAKE_MAX_CONN + 2];
    if (conns == NULL)
        return NULL;
    conns[0].fd = f->lfd;
    for (int i = 1; i <= FAKE_MAX_CONN; i++)
        conns[i].fd = -1;
    if (f->listen_after_ms > 0) {
        struct pollfd w = {.fd = f->wake[0], .events = POLLIN};
        if (poll(&w, 1, f->listen_after_ms) != 0 || listen(f->lfd, 16) != 0) {
            free(conns);
            return NULL;
        }
    }
    for (;;) {
        for (int i = 0; i <= FAKE_MAX_CONN; i++)
            pfd[i] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        pfd[FAKE_MAX_CONN + 1] = (struct pollfd){.fd = f->wake[0], .events = POLLIN};
        if (poll(pfd, FAKE_MAX_CONN + 2, HS_IO_MS * 4) <= 0 || pfd[FAKE_MAX_CONN + 1].revents)
            break;
        if (pfd[0].revents)
            fake_accept(conns);
        for (int i = 1; i <= FAKE_MAX_CONN; i++) {
            if (pfd[i].revents && conns[i].fd >= 0)
                fake_conn_input(f, &conns[i]);
        }
    }
    for (int i = 1; i <= FAKE_MAX_CONN; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    }
    free(conns);
    return NULL;
}

/* A socket bound to 127.0.0.1:0 (port in *port), listening unless `later`, or -1. Connections
 * to a bound socket that does not listen yet are refused. */
static int call_bind(int *port, bool later)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        (!later && listen(fd, 16) != 0) || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* A listening socket on 127.0.0.1:0 (port in *port), or -1. */
static int call_listen(int *port)
{
    return call_bind(port, false);
}

/* Start the fake server; with listen_after_ms > 0 it refuses connections until then. */
static int fake_start_late(struct fake *f, const char *const *script, size_t n, int listen_after_ms)
{
    memset(f, 0, sizeof(*f));
    f->script = script;
    f->nscript = n;
    f->listen_after_ms = listen_after_ms;
    f->lfd = call_bind(&f->port, listen_after_ms > 0);
    if (f->lfd < 0)
        return -1;
    if (pipe2(f->wake, O_CLOEXEC) != 0) {
        close(f->lfd);
        return -1;
    }
    if (pthread_create(&f->thread, NULL, fake_main, f) != 0) {
        close(f->lfd);
        close(f->wake[0]);
        close(f->wake[1]);
        return -1;
    }
    return 0;
}

static int fake_start(struct fake *f, const char *const *script, size_t n)
{
    return fake_start_late(f, script, n, 0);
}

static void fake_stop(struct fake *f)
{
    CU_ASSERT_EQUAL(write(f->wake[1], "x", 1), 1);
    CU_ASSERT_EQUAL(pthread_join(f->thread, NULL), 0);
    close(f->lfd);
    close(f->wake[0]);
    close(f->wake[1]);
}

/* ---- running the client ---- */

struct call_result {
    int code;
    char *out;
    char *err;
};

static struct call_result call_run(const char *const *args)
{
    struct call_result r = {.code = -1};
    int rc = proc_run(args, CALL_RUN_MS, &r.out, &r.err, &r.code);
    CU_ASSERT_EQUAL(rc, 0);
    if (r.out == NULL)
        r.out = strdup("");
    if (r.err == NULL)
        r.err = strdup("");
    if (r.code < 0 || r.code > 2)
        fprintf(stderr, "spindle call exited %d; stderr:\n%s\n", r.code, r.err);
    return r;
}

static void call_free(struct call_result *r)
{
    free(r->out);
    free(r->err);
}

/* The output's lines parsed as JSON: a new array (lines that are not JSON become null). */
static json_t *call_lines(const char *out)
{
    json_t *arr = json_array();
    for (const char *p = out; *p;) {
        size_t len = strcspn(p, "\n");
        json_t *j = json_loadb(p, len, 0, NULL);
        json_array_append_new(arr, j ? j : json_null());
        p += len + (p[len] == '\n');
    }
    return arr;
}

/* The summary object of the last line, borrowed from `lines`. */
static json_t *call_summary(json_t *lines)
{
    size_t n = json_array_size(lines);
    return n ? json_object_get(json_array_get(lines, n - 1), "summary") : NULL;
}

static long long call_int(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static const char *call_err_code(json_t *line)
{
    return json_string_value(json_object_get(json_object_get(line, "error"), "code"));
}

static char *call_server(char *buf, size_t size, int port)
{
    snprintf(buf, size, "http://127.0.0.1:%d", port);
    return buf;
}

static int call_init(void)
{
    call_dir = proc_tmpdir_new();
    return call_dir == NULL ? -1 : 0;
}

static int call_cleanup(void)
{
    int rc = proc_tmpdir_free(call_dir);
    call_dir = NULL;
    return rc;
}

/* ---- against the real server ---- */

static void test_call_real_primes(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char url[64];
    const char *args[] = {"call",          "--server",  call_server(url, sizeof(url), hs_port(s)),
                          "primes",        "n=1000000", "--request-id",
                          "call-primes-1", NULL};
    struct call_result r = call_run(args);
    json_t *line = NULL;
    HS_CHECK(r.code == 0);
    HS_CHECK(strcmp(r.out, "{\"n\":1000000,\"count\":78498}\n") == 0);
    HS_CHECK(strcmp(r.err, "") == 0);
    line = hs_log_wait(s, "access", "request_id", "call-primes-1", HS_IO_MS);
    HS_CHECK(line != NULL);
    HS_CHECK(strcmp(hs_json_str(line, "path"), "/v1/jobs/primes") == 0);
    HS_CHECK(hs_json_int(line, "status", 0) == 200);
out:
    json_decref(line);
    call_free(&r);
    HS_FINISH(s);
}

static char *call_batch_file(const char *name, unsigned n, int bad_index)
{
    size_t len = 0;
    char *text = NULL;
    FILE *f = open_memstream(&text, &len);
    for (unsigned i = 0; i < n; i++) {
        if ((int)i == bad_index)
            fprintf(f, "{\"kind\":\"primes\",\"params\":{\"n\":\"lots\"}}\n");
        else if (i % 4 == 0)
            fprintf(f, "{\"kind\":\"primes\",\"params\":{\"n\":%u}}\n", 100 * (i + 1));
        else if (i % 4 == 1)
            fprintf(f, "{\"kind\":\"noop\",\"tenant\":\"t%u\"}\n", i % 3);
        else if (i % 4 == 2)
            fprintf(f, "{\"kind\":\"sha256\",\"params\":{\"rounds\":2},\"body\":\"job %u\"}\n", i);
        else
            fprintf(f, "{\"kind\":\"spin\",\"params\":{\"ms\":5},\"id\":\"own-id-%u\"}\n", i);
    }
    fclose(f);
    char *path = proc_file_write(call_dir, name, text);
    free(text);
    return path;
}

/* primes(n) by a sieve, for checking the answers. */
static long call_primes(unsigned n)
{
    char *composite = calloc(n + 1, 1);
    long count = 0;
    for (unsigned i = 2; i <= n; i++) {
        if (composite[i])
            continue;
        count++;
        for (unsigned long k = (unsigned long)i * i; k <= n; k += i)
            composite[k] = 1;
    }
    free(composite);
    return count;
}

static void call_check_batch_line(json_t *l, unsigned *seen)
{
    unsigned idx = (unsigned)call_int(l, "index");
    CU_ASSERT(idx < 20);
    if (idx >= 20)
        return;
    seen[idx]++;
    CU_ASSERT(json_is_true(json_object_get(l, "ok")));
    CU_ASSERT_EQUAL(call_int(l, "status"), 200);
    CU_ASSERT_EQUAL(call_int(l, "attempts"), 1);
    json_t *res = json_object_get(l, "result");
    if (idx % 4 == 0)
        CU_ASSERT_EQUAL(call_int(res, "count"), call_primes(100 * (idx + 1)));
    const char *rid = json_string_value(json_object_get(l, "request_id"));
    char want[64];
    if (idx % 4 == 3)
        snprintf(want, sizeof(want), "own-id-%u", idx);
    else
        snprintf(want, sizeof(want), "batch-%u", idx);
    CU_ASSERT(rid != NULL && strcmp(rid, want) == 0);
}

/* Distinct "peer" values among the access lines: the connections the client used. */
static size_t call_distinct_peers(const struct hs_server *s)
{
    json_t *lines = hs_log_lines(s), *peers = json_object(), *l;
    size_t i;
    json_array_foreach(lines, i, l)
    {
        const char *peer = hs_json_str(l, "peer");
        if (peer && strcmp(hs_json_str(l, "msg"), "access") == 0)
            json_object_set_new(peers, peer, json_true());
    }
    size_t n = json_object_size(peers);
    json_decref(peers);
    json_decref(lines);
    return n;
}

static void test_call_real_batch(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *path = call_batch_file("batch20.jsonl", 20, -1);
    char url[64];
    const char *args[] = {"call",    "-s",           call_server(url, sizeof(url), hs_port(s)),
                          "--batch", path,           "--concurrency",
                          "4",       "--request-id", "batch",
                          NULL};
    struct call_result r = call_run(args);
    json_t *lines = call_lines(r.out), *sum = call_summary(lines);
    unsigned seen[20] = {0};
    HS_CHECK(r.code == 0);
    HS_CHECK(json_array_size(lines) == 21);
    for (size_t i = 0; i < 20; i++)
        call_check_batch_line(json_array_get(lines, i), seen);
    for (size_t i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(seen[i], 1);
    HS_CHECK(sum != NULL);
    CU_ASSERT_EQUAL(call_int(sum, "succeeded"), 20);
    CU_ASSERT_EQUAL(call_int(sum, "failed"), 0);
    CU_ASSERT_EQUAL(call_int(sum, "retried"), 0);
    CU_ASSERT(json_is_integer(json_object_get(sum, "wall_ms")));
    CU_ASSERT_STRING_EQUAL(r.err, ""); /* stderr is not a terminal: no progress bar */
    /* at most 4 in flight, over kept-alive connections */
    HS_CHECK(hs_log_wait_count(s, "access", 20, HS_IO_MS) == 20);
    size_t peers = call_distinct_peers(s);
    CU_ASSERT(peers >= 1 && peers <= 4);
out:
    json_decref(lines);
    call_free(&r);
    free(path);
    HS_FINISH(s);
}

static void test_call_real_bad_param(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *path = call_batch_file("batch6.jsonl", 6, 4);
    char url[64];
    const char *args[] = {"call", "-s", call_server(url, sizeof(url), hs_port(s)), "-b", path, "-j",
                          "2",    NULL};
    struct call_result r = call_run(args);
    json_t *lines = call_lines(r.out), *sum = call_summary(lines), *l;
    size_t i, bad = 0;
    HS_CHECK(r.code == 1);
    HS_CHECK(json_array_size(lines) == 7);
    json_array_foreach(lines, i, l)
    {
        if (i == 6 || call_int(l, "index") != 4)
            continue;
        bad++;
        CU_ASSERT(json_is_false(json_object_get(l, "ok")));
        CU_ASSERT_EQUAL(call_int(l, "status"), 400);
        CU_ASSERT_EQUAL(call_int(l, "attempts"), 1); /* a 400 is never retried */
        CU_ASSERT_STRING_EQUAL(call_err_code(l), "bad_param");
    }
    CU_ASSERT_EQUAL(bad, 1);
    HS_CHECK(sum != NULL);
    CU_ASSERT_EQUAL(call_int(sum, "succeeded"), 5);
    CU_ASSERT_EQUAL(call_int(sum, "failed"), 1);
    /* single mode: the error on stderr, exit 1 */
    const char *one[] = {"call", "-s", url, "primes", "n=-3", NULL};
    call_free(&r);
    r = call_run(one);
    HS_CHECK(r.code == 1);
    CU_ASSERT_STRING_EQUAL(r.out, "");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "400 bad_param"));
out:
    json_decref(lines);
    call_free(&r);
    free(path);
    HS_FINISH(s);
}

/* A few KiB of text that compresses. */
static char *call_body_text(void)
{
    size_t len = 0;
    char *text = NULL;
    FILE *f = open_memstream(&text, &len);
    for (int i = 0; i < 300; i++)
        fprintf(f, "line %d of the request body, with some repetition\n", i);
    fclose(f);
    return text;
}

static void test_call_real_body_and_output(void)
{
    struct hs_server *s = hs_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *text = call_body_text(), *in = proc_file_write(call_dir, "body.txt", text);
    char *out_path = NULL, *zst = NULL;
    json_t *answer = NULL;
    struct call_result r = {0};
    char url[64], hex[2 * SHA256_DIGEST_LENGTH + 1];
    unsigned char md[SHA256_DIGEST_LENGTH];
    HS_CHECK(in != NULL);
    SHA256((const unsigned char *)text, strlen(text), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    const char *sha[] = {"call",   "-s",       call_server(url, sizeof(url), hs_port(s)),
                         "sha256", "rounds=1", "--body",
                         in,       NULL};
    r = call_run(sha);
    HS_CHECK(r.code == 0);
    answer = json_loads(r.out, 0, NULL);
    HS_CHECK(answer != NULL);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(answer, "digest")), hex);
    CU_ASSERT_EQUAL(call_int(answer, "bytes"), (long long)strlen(text));
    /* a binary answer goes to --output byte for byte */
    HS_CHECK(asprintf(&out_path, "%s/body.zst", call_dir) > 0);
    const char *zargs[] = {"call",   "-s", url,  "compress", "codec=zstd", "level=3",
                           "--body", in,   "-o", out_path,   NULL};
    call_free(&r);
    r = call_run(zargs);
    HS_CHECK(r.code == 0);
    CU_ASSERT_STRING_EQUAL(r.out, "");
    FILE *f = fopen(out_path, "rb");
    HS_CHECK(f != NULL);
    zst = malloc(65536);
    size_t zlen = fread(zst, 1, 65536, f);
    fclose(f);
    char *plain = malloc(strlen(text) + 1);
    size_t plen = ZSTD_decompress(plain, strlen(text) + 1, zst, zlen);
    CU_ASSERT(!ZSTD_isError(plen) && plen == strlen(text) && memcmp(plain, text, plen) == 0);
    CU_ASSERT(zlen < plen); /* it was compressed */
    free(plain);
out:
    json_decref(answer);
    call_free(&r);
    free(zst);
    free(out_path);
    free(in);
    free(text);
    HS_FINISH(s);
}

static void test_call_real_ipv6(void)
{
    const char *const over[] = {"server.listen=[::1]:0", NULL};
    struct hs_server *s = hs_start(over);
    struct call_result r = {0};
    char url[96];
    HS_CHECK(s != NULL);
    snprintf(url, sizeof(url), "http://%s/", hs_listen_addr(s, 0));
    const char *args[] = {"call", "--server", url, "noop", NULL};
    r = call_run(args);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_STRING_EQUAL(r.out, "{\"ok\":true}\n");
out:
    call_free(&r);
    HS_FINISH(s);
}

/* ---- against the fake server ---- */

#define ANSWER_503_RA1                                                                             \
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"     \
    "X-Request-Id: fake\r\nContent-Length: 68\r\n\r\n"                                             \
    "{\"error\":{\"code\":\"queue_full\",\"message\":\"full\",\"request_id\":\"fake\"}}"
#define ANSWER_200                                                                                 \
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n"              \
    "{\"n\":1000,\"count\":168}"

static void test_call_fake_retry_after(void)
{
    static const char *const script[] = {ANSWER_503_RA1, ANSWER_503_RA1, ANSWER_200};
    struct fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f, script, 3), 0);
    char url[64];
    const char *args[] = {"call",
                          "-s",
                          call_server(url, sizeof(url), f.port),
                          "primes",
                          "n=1 2",
                          "--json",
                          "--tenant",
                          "acme",
                          "--timeout",
                          "5000",
                          "--request-id",
                          "retry-1",
                          "--backoff-base",
                          "1",
                          NULL};
    long long t0 = hs_now_ms();
    struct call_result r = call_run(args);
    long long took = hs_now_ms() - t0;
    fake_stop(&f);
    json_t *lines = call_lines(r.out), *line = json_array_get(lines, 0);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(f.nreq, 3);
    if (f.nreq >= 3) {
        /* Retry-After: 1 is a floor even though the jitter ceiling is 1-2 ms */
        CU_ASSERT(f.at_ms[1] - f.at_ms[0] >= 950);
        CU_ASSERT(f.at_ms[2] - f.at_ms[1] >= 950);
    }
    CU_ASSERT(took < 10000);
    CU_ASSERT_EQUAL(call_int(line, "attempts"), 3);
    CU_ASSERT_EQUAL(call_int(line, "status"), 200);
    CU_ASSERT_EQUAL(call_int(json_object_get(line, "result"), "count"), 168);
    CU_ASSERT_EQUAL(call_int(call_summary(lines), "retried"), 1);
    CU_ASSERT_EQUAL(call_int(call_summary(lines), "succeeded"), 1);
    /* what went on the wire */
    CU_ASSERT_EQUAL(strncmp(f.first_head, "POST /v1/jobs/primes?n=1%202 HTTP/1.1\r\n", 39), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(f.first_head, "\r\nX-Tenant-Id: acme\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(f.first_head, "\r\nX-Timeout-Ms: 5000\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(f.first_head, "\r\nX-Request-Id: retry-1\r\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(f.first_head, "\r\nContent-Length: 0\r\n"));
    json_decref(lines);
    call_free(&r);
}

static void test_call_fake_429_then_ok(void)
{
    static const char *const script[] = {
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
        ANSWER_200,
    };
    struct fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f, script, 2), 0);
    char url[64];
    const char *args[] = {"call",   "-s",     call_server(url, sizeof(url), f.port),
                          "primes", "n=1000", "--backoff-base",
                          "5",      NULL};
    struct call_result r = call_run(args);
    fake_stop(&f);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(f.nreq, 2);
    CU_ASSERT_STRING_EQUAL(r.out, "{\"n\":1000,\"count\":168}\n");
    call_free(&r);
}

static void test_call_fake_not_retried(void)
{
    static const char *const answers[] = {
        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        "this is not HTTP\r\n\r\n",
    };
    static const char *const codes[] = {"http_502", "http_504", "http_404", "bad_response"};
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        struct fake f;
        CU_ASSERT_EQUAL_FATAL(fake_start(&f, &answers[i], 1), 0);
        char url[64];
        const char *args[] = {"call",
                              "-s",
                              call_server(url, sizeof(url), f.port),
                              "noop",
                              "--json",
                              "--retries",
                              "3",
                              "--backoff-base",
                              "1",
                              NULL};
        struct call_result r = call_run(args);
        fake_stop(&f);
        json_t *lines = call_lines(r.out), *line = json_array_get(lines, 0);
        CU_ASSERT_EQUAL(r.code, 1);
        CU_ASSERT_EQUAL(f.nreq, 1);
        CU_ASSERT_EQUAL(call_int(line, "attempts"), 1);
        CU_ASSERT_STRING_EQUAL(call_err_code(line), codes[i]);
        json_decref(lines);
        call_free(&r);
    }
}

static void test_call_fake_reset_retried(void)
{
    static const char *const script[] = {"", ANSWER_200}; /* closed without an answer, then ok */
    struct fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f, script, 2), 0);
    char url[64];
    const char *args[] = {"call",           "-s",     call_server(url, sizeof(url), f.port),
                          "primes",         "n=1000", "--json",
                          "--backoff-base", "1",      NULL};
    struct call_result r = call_run(args);
    fake_stop(&f);
    json_t *lines = call_lines(r.out), *line = json_array_get(lines, 0);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(f.nreq, 2);
    CU_ASSERT_EQUAL(call_int(line, "attempts"), 2);
    CU_ASSERT(json_is_true(json_object_get(line, "ok")));
    json_decref(lines);
    call_free(&r);
}

/* The server closes every connection after its answer: each job still takes one attempt. */
static void test_call_fake_server_closes(void)
{
    static const char *const script[] = {"!" ANSWER_200};
    struct fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f, script, 1), 0);
    char *path = call_batch_file("batch5.jsonl", 5, -1);
    char url[64];
    const char *args[] = {
        "call", "-s", call_server(url, sizeof(url), f.port), "-b", path, "--retries", "0", NULL};
    struct call_result r = call_run(args);
    fake_stop(&f);
    json_t *lines = call_lines(r.out), *sum = call_summary(lines);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(f.nreq, 5);
    CU_ASSERT_EQUAL(call_int(sum, "succeeded"), 5);
    CU_ASSERT_EQUAL(call_int(sum, "retried"), 0);
    json_decref(lines);
    call_free(&r);
    free(path);
}

static void test_call_fake_client_timeout(void)
{
    static const char *const script[] = {NULL}; /* never answers */
    struct fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start(&f, script, 1), 0);
    char url[64];
    const char *args[] = {"call",
                          "-s",
                          call_server(url, sizeof(url), f.port),
                          "spin",
                          "ms=10",
                          "--timeout",
                          "100",
                          "--retries",
                          "1",
                          "--backoff-base",
                          "1",
                          "--json",
                          NULL};
    long long t0 = hs_now_ms();
    struct call_result r = call_run(args);
    long long took = hs_now_ms() - t0;
    fake_stop(&f);
    json_t *lines = call_lines(r.out), *line = json_array_get(lines, 0);
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT_EQUAL(f.nreq, 2); /* a timeout is retried */
    CU_ASSERT_EQUAL(call_int(line, "attempts"), 2);
    CU_ASSERT_STRING_EQUAL(call_err_code(line), "timeout");
    CU_ASSERT(took >= 2 * 1100 && took < 15000); /* X-Timeout-Ms + 1 s margin, twice */
    json_decref(lines);
    call_free(&r);
}

/* ---- against a closed port ---- */

static void test_call_refused_breaker(void)
{
    int port = 0, fd = call_listen(&port);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd); /* nothing listens there any more: connections are refused */
    char *path = call_batch_file("batch10.jsonl", 10, -1);
    char url[64];
    const char *args[] = {"call",       "-s",        call_server(url, sizeof(url), port),
                          "-b",         path,        "--retries",
                          "3",          "--breaker", "5",
                          "--cooldown", "300",       "--backoff-base",
                          "1",          NULL};
    long long t0 = hs_now_ms();
    struct call_result r = call_run(args);
    long long took = hs_now_ms() - t0;
    json_t *lines = call_lines(r.out), *sum = call_summary(lines), *l;
    size_t i, refused = 0, open = 0;
    CU_ASSERT_EQUAL(r.code, 1);
    CU_ASSERT(took >= 300 && took < 10000); /* the cooldown was waited out, once */
    CU_ASSERT_EQUAL(json_array_size(lines), 11);
    json_array_foreach(lines, i, l)
    {
        if (i == 10)
            break;
        const char *code = call_err_code(l);
        CU_ASSERT_PTR_NOT_NULL_FATAL(code);
        if (strcmp(code, "connection_refused") == 0) {
            refused++;
            CU_ASSERT_EQUAL(call_int(l, "attempts"), 4); /* 1 + --retries */
            CU_ASSERT_EQUAL(call_int(l, "index"), 0);
        } else if (strcmp(code, "circuit_open") == 0) {
            open++;
            /* job 1: the attempt that opened it and the failed probe; the rest never went */
            CU_ASSERT(call_int(l, "attempts") <= 2);
            json_t *e = json_object_get(l, "error");
            const char *cause = json_string_value(json_object_get(e, "cause"));
            CU_ASSERT(cause != NULL && strcmp(cause, "connection_refused") == 0);
            const char *msg = json_string_value(json_object_get(e, "message"));
            CU_ASSERT(msg != NULL && strstr(msg, "Connection refused") != NULL);
        }
    }
    /* job 0: 4 refused attempts; job 1: the 5th failure opens the circuit, the probe after the
     * cooldown fails: every job left fails fast, naming the cause */
    CU_ASSERT_EQUAL(refused, 1);
    CU_ASSERT_EQUAL(open, 9);
    CU_ASSERT_EQUAL(call_int(sum, "failed"), 10);
    CU_ASSERT_EQUAL(call_int(sum, "succeeded"), 0);
    json_decref(lines);
    call_free(&r);
    free(path);
}

/* The recipe: a server that comes up 0.6 s after the client starts. The first failures
 * open the circuit, but the jobs wait out --cooldown, one probe finds the server up, and every
 * job of the batch succeeds. */
static void test_call_late_server_breaker_waits(void)
{
    static const char *const script[] = {ANSWER_200};
    struct fake f;
    CU_ASSERT_EQUAL_FATAL(fake_start_late(&f, script, 1, 600), 0);
    char *path = call_batch_file("late20.jsonl", 20, -1);
    char url[64];
    const char *args[] = {"call",       "-s",        call_server(url, sizeof(url), f.port),
                          "-b",         path,        "--concurrency",
                          "8",          "--breaker", "5",
                          "--cooldown", "1000",      "--backoff-base",
                          "1",          NULL};
    struct call_result r = call_run(args);
    fake_stop(&f);
    json_t *lines = call_lines(r.out), *sum = call_summary(lines);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(call_int(sum, "succeeded"), 20);
    CU_ASSERT_EQUAL(call_int(sum, "failed"), 0);
    CU_ASSERT_PTR_NULL(strstr(r.out, "circuit_open"));
    json_decref(lines);
    call_free(&r);
    free(path);
}

/* A 200-job batch against a tenant limited to 40 jobs/s (burst 10): with Retry-After-Ms honoured
 * it takes about (200 - 10) / 40 = 4.75 s; with whole seconds it took about 19 s. Every job
 * succeeds, none needs more than its retries, and the bound on the time is generous. */
static void test_call_real_rate_limited_batch(void)
{
    const char *ov[] = {"log.access=true\n\n[tenant.r40]\nrate = 40\nburst = 10\n", NULL};
    struct hs_server *s = hs_start(ov);
    char *path = NULL, *text = NULL;
    struct call_result r = {0};
    json_t *lines = NULL;
    HS_CHECK(s != NULL);
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    HS_CHECK(f != NULL);
    for (int i = 0; i < 200; i++)
        fprintf(f, "{\"kind\":\"noop\"}\n");
    fclose(f);
    path = proc_file_write(call_dir, "rate200.jsonl", text);
    HS_CHECK(path != NULL);
    char url[64];
    const char *args[] = {"call", "-s",       call_server(url, sizeof(url), hs_port(s)),
                          "-b",   path,       "--concurrency",
                          "8",    "--tenant", "r40",
                          NULL};
    r = call_run(args);
    lines = call_lines(r.out);
    json_t *sum = call_summary(lines);
    CU_ASSERT_EQUAL(r.code, 0);
    CU_ASSERT_EQUAL(call_int(sum, "succeeded"), 200);
    long long wall = call_int(sum, "wall_ms");
    fprintf(stderr, "(200 jobs at 40/s: %lld ms, %lld retried) ", wall, call_int(sum, "retried"));
    CU_ASSERT(wall >= 4000); /* the rate was kept */
    CU_ASSERT(wall < 12000); /* not Retry-After's whole seconds (about 19 s) */
out:
    json_decref(lines);
    call_free(&r);
    free(path);
    free(text);
    HS_FINISH(s);
}

static void test_call_usage_errors(void)
{
    static const char *const bad[][5] = {
        {"call", NULL},
        {"call", "noop", "--server", "https://127.0.0.1:1", NULL},
        {"call", "noop", "--concurrency", "0", NULL},
        {"call", "--batch", "/nonexistent/jobs.jsonl", NULL},
        {"call", "primes", "n", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct call_result r = call_run(bad[i]);
        CU_ASSERT_EQUAL(r.code, 2);
        CU_ASSERT_STRING_EQUAL(r.out, "");
        CU_ASSERT(strlen(r.err) > 0);
        if (i == 1)
            CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "https is not supported"));
        call_free(&r);
    }
}

int suite_integration_call(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_call_real_primes),
        SPINDLE_TEST(test_call_real_batch),
        SPINDLE_TEST(test_call_real_bad_param),
        SPINDLE_TEST(test_call_real_body_and_output),
        SPINDLE_TEST_UNLESS(test_call_real_ipv6, hs_skip_no_ipv6),
        SPINDLE_TEST(test_call_fake_retry_after),
        SPINDLE_TEST(test_call_fake_429_then_ok),
        SPINDLE_TEST(test_call_fake_not_retried),
        SPINDLE_TEST(test_call_fake_reset_retried),
        SPINDLE_TEST(test_call_fake_server_closes),
        SPINDLE_TEST(test_call_fake_client_timeout),
        SPINDLE_TEST(test_call_refused_breaker),
        SPINDLE_TEST(test_call_late_server_breaker_waits),
        SPINDLE_TEST(test_call_real_rate_limited_batch),
        SPINDLE_TEST(test_call_usage_errors),
    };
    return SPINDLE_SUITE_ADD("integration_call", call_init, call_cleanup, tests);
}
