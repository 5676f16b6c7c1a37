/* test_batch.c - POST /v1/batch end to end: the four modes, sibling cancellation, the request's
 * deadline, client close and shutdown reaching every sub-job, the "batch job" lines with their
 * child spans, input validation, admission of N jobs at once, kinds that read a body.
 *
 * Design: every test starts its own server (harness.h) and sets the request ids, so the lines of
 * one batch are found: one "batch job" line per sub-job (by "index"), the workers' "job start"
 * lines, the access line. Long spins (ms=10000) are the losers to cancel; a spin with a small
 * "timeout_ms" fails deterministically (deadline_exceeded). Cancellation is proved by the answer
 * arriving long before a loser could end (QUICK_MS) and by each cancelled sub-job's run_ms, in
 * the answer and in its line. Expected answers come from the same jobs run alone and from values
 * computed here (SHA256, ZSTD_decompress). Waits are bounded polls; nothing sleeps to synchronise.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "tests/integration/harness.h"
#include "tests/suite.h"

int suite_integration_batch(void);

#define TRACE_ID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PARENT   "00f067aa0ba902b7"
#define QUICK_MS 3000 /* a batch whose losers are cancelled answers (and they stop) within this */
#define WAIT_MS  5000
#define SPIN(ms) "{\"kind\":\"spin\",\"params\":{\"ms\":" #ms "}}"
#define LONG     SPIN(10000)
/* A spin that fails with deadline_exceeded after `t` ms, long before its `ms`. */
#define FAILS(ms, t) "{\"kind\":\"spin\",\"params\":{\"ms\":" #ms "},\"timeout_ms\":" #t "}"
#define NOOP         "{\"kind\":\"noop\"}"
#define NOOP2        "[" NOOP "," NOOP "]"
#define NOOP3        "[" NOOP "," NOOP "," NOOP "]"
#define NOOP4        "[" NOOP "," NOOP "," NOOP "," NOOP "]"
#define NOOP5        "[" NOOP "," NOOP "," NOOP "," NOOP "," NOOP "]"

/* What one sub-job must show: kind, status and, when failed, the error code, when cancelled, the
 * reason (NULL when ok). */
struct want {
    const char *kind, *status, *why;
};
#define OK(kind)     ((struct want){kind, "ok", NULL})
#define TIMED_OUT    ((struct want){"spin", "failed", "deadline_exceeded"})
#define CANCELLED(r) ((struct want){"spin", "cancelled", r})

/* ---- helpers --------------------------------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* A number member (integer or real), -1 when absent or not a number. */
static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : -1.0;
}

/* POST `target` with header lines `extra` ("Name: v\r\n"..., may be "") and `len` bytes of
 * `body`. */
static int post(struct hs_conn *c, const char *target, const char *extra, const void *body,
                size_t len)
{
    char head[1024];
    int n =
        snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n%s\r\n",
                 target, len, extra);
    int rc = n > 0 && (size_t)n < sizeof(head) ? hs_send(c, head, (size_t)n, HS_IO_MS) : -EINVAL;
    return rc == 0 && len > 0 ? hs_send(c, body, len, HS_IO_MS) : rc;
}

static int job_exchange(struct hs_conn *c, const char *target, const char *extra, const void *body,
                        size_t len, struct hs_resp *r)
{
    int rc = post(c, target, extra, body, len);
    return rc == 0 ? hs_read_response(c, r, false, WAIT_MS) : rc;
}

/* POST /v1/batch`query` as JSON. */
static int batch_send(struct hs_conn *c, const char *query, const char *extra, const char *body)
{
    char target[128], hdr[512];
    snprintf(target, sizeof(target), "/v1/batch%s", query);
    snprintf(hdr, sizeof(hdr), "Content-Type: application/json\r\n%s", extra);
    return post(c, target, hdr, body, strlen(body));
}

static int batch_exchange(struct hs_conn *c, const char *query, const char *extra, const char *body,
                          struct hs_resp *r)
{
    int rc = batch_send(c, query, extra, body);
    return rc == 0 ? hs_read_response(c, r, false, WAIT_MS) : rc;
}

static const json_t *item(const json_t *doc, size_t i)
{
    return json_array_get(json_object_get(doc, "results"), i);
}

/* True when `o` (a result item, or a "batch job" line when `line`) is sub-job i as `w` says. */
static bool job_is(const json_t *o, size_t i, const struct want *w, bool line)
{
    bool ok = o != NULL && hs_json_int(o, "index", -1) == (long long)i &&
              str_eq(hs_json_str(o, "kind"), w->kind) &&
              str_eq(hs_json_str(o, "status"), w->status) && num(o, "queue_ms") >= 0 &&
              num(o, "run_ms") >= 0;
    if (ok && strcmp(w->status, "failed") == 0) {
        const json_t *e = line ? o : json_object_get(o, "error");
        ok = str_eq(hs_json_str(e, "code"), w->why) && (line || hs_json_str(e, "message"));
    } else if (ok && strcmp(w->status, "cancelled") == 0) {
        ok = str_eq(hs_json_str(o, "reason"), w->why) && num(o, "run_ms") < QUICK_MS;
    } else if (ok && !line) {
        ok = json_object_get(o, "result") != NULL || json_object_get(o, "result_base64") != NULL;
    }
    if (!ok) {
        char *d = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        fprintf(stderr, "\n    %s %zu: expected %s %s %s, got %s\n", line ? "line" : "results", i,
                w->kind, w->status, w->why ? w->why : "", d ? d : "(none)");
        free(d);
    }
    return ok;
}

/* Lines with msg `msg` and request_id `rid`: waits up to `ms` for `n` of them; out[k] (n entries,
 * may be NULL) gets a new reference to the one with "index" k. Returns how many there are. */
static size_t wait_lines(const struct hs_server *s, const char *msg, const char *rid, size_t n,
                         json_t **out, int ms)
{
    long long end = hs_now_ms() + ms;
    for (;;) {
        json_t *lines = hs_log_lines(s), *line;
        size_t found = 0, i;
        json_array_foreach(lines, i, line)
        {
            if (!str_eq(hs_json_str(line, "msg"), msg) ||
                !str_eq(hs_json_str(line, "request_id"), rid))
                continue;
            found++;
            long long k = hs_json_int(line, "index", -1);
            if (out != NULL && k >= 0 && (size_t)k < n && out[k] == NULL)
                out[k] = json_incref(line);
        }
        json_decref(lines);
        if (found >= n || hs_now_ms() >= end)
            return found;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static size_t count_lines(const struct hs_server *s, const char *msg, const char *rid)
{
    return wait_lines(s, msg, rid, SIZE_MAX, NULL, 0);
}

/* The answer holds `n` results as `w` says, in index order. */
static void check_results(const json_t *doc, const struct want *w, size_t n)
{
    CU_ASSERT_EQUAL(json_array_size(json_object_get(doc, "results")), n);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(job_is(item(doc, i), i, &w[i], false));
}

/* Exactly `n` "batch job" lines for `rid`, one per index, as `w` says, and one access line with
 * `status`. */
static void check_log(const struct hs_server *s, const char *rid, const struct want *w, size_t n,
                      int status)
{
    json_t *lines[8] = {NULL};
    CU_ASSERT_EQUAL(wait_lines(s, "batch job", rid, n, lines, WAIT_MS), n);
    for (size_t i = 0; i < n && i < 8; i++) {
        CU_ASSERT(job_is(lines[i], i, &w[i], true));
        CU_ASSERT(str_eq(hs_json_str(lines[i], "level"), "info"));
        json_decref(lines[i]);
    }
    json_t *a = hs_log_wait(s, "access", "request_id", rid, WAIT_MS);
    CU_ASSERT(a != NULL && hs_json_int(a, "status", -1) == status &&
              str_eq(hs_json_str(a, "path"), "/v1/batch"));
    json_decref(a);
    CU_ASSERT_EQUAL(count_lines(s, "batch job", rid), n);
    CU_ASSERT_EQUAL(count_lines(s, "access", rid), 1);
}

static const char *err_str(const json_t *doc, const char *key)
{
    return hs_json_str(json_object_get(doc, "error"), key);
}

static bool starts_with(const char *s, const char *prefix)
{
    return s != NULL && strncmp(s, prefix, strlen(prefix)) == 0;
}

/* batch_exchange, then *doc (released first) = the answer's JSON. True when there is one. */
static bool batch_doc(struct hs_conn *c, const char *query, const char *extra, const char *body,
                      struct hs_resp *r, json_t **doc)
{
    json_decref(*doc);
    *doc = NULL;
    if (batch_exchange(c, query, extra, body, r) == 0)
        *doc = hs_resp_json(r);
    return *doc != NULL;
}

/* Start a server with overrides o1, o2 (NULL: none) and connect *c to it. */
static struct hs_server *up(const char *o1, const char *o2, struct hs_conn **c)
{
    const char *const over[] = {o1, o2, NULL};
    struct hs_server *s = hs_start(over);
    *c = s != NULL ? hs_connect(s) : NULL;
    return s;
}

/* Release what a test holds and stop the server (a clean exit asserted). */
static void down(struct hs_server *s, struct hs_conn *c, struct hs_resp *r, json_t *doc)
{
    json_decref(doc);
    hs_resp_fini(r);
    hs_close(c);
    HS_FINISH(s);
}

/* ---- modes ----------------------------------------------------------------------------------- */

static void test_batch_all_ok(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=4", NULL, &c);
    struct hs_resp r = {0};
    json_t *doc = NULL, *acc = NULL, *lines[3] = {NULL}, *start = NULL;
    HS_CHECK(s != NULL && c != NULL);
    HS_CHECK(batch_doc(c, "?mode=all",
                       "X-Request-Id: b-ok\r\nX-Tenant-Id: acme\r\n"
                       "traceparent: 00-" TRACE_ID "-" PARENT "-01\r\n",
                       "[{\"kind\":\"primes\",\"params\":{\"n\":100}}," NOOP
                       ",{\"kind\":\"spin\",\"params\":{\"ms\":\"5\"}}]",
                       &r, &doc));
    CU_ASSERT_EQUAL(r.status, 200);
    char v[256];
    CU_ASSERT(hs_resp_header(&r, "Content-Type", v, sizeof(v)) &&
              starts_with(v, "application/json"));
    CU_ASSERT(hs_resp_header(&r, "X-Request-Id", v, sizeof(v)) && strcmp(v, "b-ok") == 0);
    double q = -1, run = -1;
    CU_ASSERT(hs_resp_header(&r, "Server-Timing", v, sizeof(v)) &&
              sscanf(v, "queue;dur=%lf, run;dur=%lf", &q, &run) == 2 && q >= 0 && run >= 5.0);
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "all"));
    const struct want w[] = {OK("primes"), OK("noop"), OK("spin")};
    check_results(doc, w, 3);
    json_t *primes = json_object_get(item(doc, 0), "result");
    CU_ASSERT(hs_json_int(primes, "n", -1) == 100 && hs_json_int(primes, "count", -1) == 25);
    CU_ASSERT(json_is_true(json_object_get(json_object_get(item(doc, 1), "result"), "ok")));
    json_t *spin = json_object_get(item(doc, 2), "result");
    CU_ASSERT(hs_json_int(spin, "ms", -1) == 5 && num(spin, "spun_ms") >= 5.0);
    CU_ASSERT(num(item(doc, 2), "run_ms") >= 5.0);
    check_log(s, "b-ok", w, 3, 200);

    /* Each sub-job is a child span of the request: same ids, own span, parent = request span. */
    HS_CHECK((acc = hs_log_wait(s, "access", "request_id", "b-ok", WAIT_MS)) != NULL);
    const char *span = hs_json_str(acc, "span_id");
    HS_CHECK(span != NULL && strcmp(span, PARENT) != 0);
    HS_CHECK(wait_lines(s, "batch job", "b-ok", 3, lines, WAIT_MS) == 3);
    for (size_t i = 0; i < 3; i++) {
        HS_CHECK(lines[i] != NULL);
        const char *own = hs_json_str(lines[i], "span_id");
        CU_ASSERT(own != NULL && strlen(own) == 16 && strcmp(own, span) != 0);
        CU_ASSERT(str_eq(hs_json_str(lines[i], "parent_span_id"), span));
        CU_ASSERT(str_eq(hs_json_str(lines[i], "trace_id"), TRACE_ID));
        CU_ASSERT(str_eq(hs_json_str(lines[i], "tenant"), "acme"));
        for (size_t j = 0; j < i; j++)
            CU_ASSERT(!str_eq(own, hs_json_str(lines[j], "span_id")));
    }
    /* The worker's debug lines carry the sub-job's context too. */
    HS_CHECK((start = hs_log_wait(s, "job start", "request_id", "b-ok", WAIT_MS)) != NULL);
    CU_ASSERT(str_eq(hs_json_str(start, "parent_span_id"), span));
    long long k = hs_json_int(start, "index", -1);
    CU_ASSERT(k >= 0 && k < 3 &&
              str_eq(hs_json_str(start, "span_id"), hs_json_str(lines[k], "span_id")));
    /* Counted under its route. */
    HS_CHECK(hs_exchange(c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(r.body, "spindle_http_requests_total{route=\"/v1/batch\",status=\"200\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(r.body, "spindle_batch_jobs_total{mode=\"all\",status=\"ok\"} 3\n"));
out:
    for (size_t i = 0; i < 3; i++)
        json_decref(lines[i]);
    json_decref(start);
    json_decref(acc);
    down(s, c, &r, doc);
}

/* all: the first failure is the answer and cancels the rest at once. */
static void test_batch_failure_all_vs_settled(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=4", NULL, &c);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    HS_CHECK(s != NULL && c != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(batch_doc(c, "?mode=all", "X-Request-Id: b-fail\r\n",
                       "[" LONG "," FAILS(5000, 50) "," LONG "]", &r, &doc));
    long long took = hs_now_ms() - t0;
    CU_ASSERT(took >= 40 && took < QUICK_MS);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT_EQUAL(hs_json_int(json_object_get(doc, "error"), "index", -1), 1);
    CU_ASSERT(starts_with(err_str(doc, "message"), "jobs[1] (spin): "));
    CU_ASSERT(str_eq(err_str(doc, "request_id"), "b-fail"));
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "all"));
    const struct want w[] = {CANCELLED("sibling_failed"), TIMED_OUT, CANCELLED("sibling_failed")};
    check_results(doc, w, 3);
    check_log(s, "b-fail", w, 3, 504);

    /* all_settled: nothing is cancelled by a sibling; the spin of 300 ms outlives its failed
     * sibling (50 ms) and completes. */
    HS_CHECK(batch_doc(c, "?mode=all_settled", "X-Request-Id: b-set\r\n",
                       "[" NOOP "," FAILS(5000, 50) "," SPIN(300) "]", &r, &doc));
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "all_settled"));
    CU_ASSERT_EQUAL(hs_json_int(doc, "succeeded", -1), 2);
    CU_ASSERT_EQUAL(hs_json_int(doc, "failed", -1), 1);
    CU_ASSERT_PTR_NULL(json_object_get(doc, "error"));
    const struct want w2[] = {OK("noop"), TIMED_OUT, OK("spin")};
    check_results(doc, w2, 3);
    CU_ASSERT_EQUAL(hs_json_int(json_object_get(item(doc, 2), "result"), "ms", -1), 300);
    CU_ASSERT(num(item(doc, 2), "run_ms") >= 300.0);
    check_log(s, "b-set", w2, 3, 200);
out:
    down(s, c, &r, doc);
}

static void test_batch_any_and_race(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=4", NULL, &c);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    HS_CHECK(s != NULL && c != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(batch_doc(c, "?mode=any", "X-Request-Id: b-any\r\n", "[" LONG "," SPIN(5) "," LONG "]",
                       &r, &doc));
    CU_ASSERT(hs_now_ms() - t0 < QUICK_MS);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "any"));
    CU_ASSERT_EQUAL(hs_json_int(doc, "index", -1), 1);
    CU_ASSERT(str_eq(hs_json_str(doc, "kind"), "spin"));
    CU_ASSERT_EQUAL(hs_json_int(json_object_get(doc, "result"), "ms", -1), 5);
    const struct want w[] = {CANCELLED("sibling_won"), OK("spin"), CANCELLED("sibling_won")};
    check_results(doc, w, 3);
    check_log(s, "b-any", w, 3, 200);

    /* A failure that finished first keeps its status; the later success wins. */
    HS_CHECK(batch_doc(c, "?mode=any", "X-Request-Id: b-any2\r\n",
                       "[" FAILS(5000, 20) "," SPIN(300) "," LONG "]", &r, &doc));
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(hs_json_int(doc, "index", -1), 1);
    const struct want w2[] = {TIMED_OUT, OK("spin"), CANCELLED("sibling_won")};
    check_results(doc, w2, 3);
    check_log(s, "b-any2", w2, 3, 200);

    /* Every one fails, all with the same code: its status, code all_failed, every error. */
    HS_CHECK(batch_doc(c, "?mode=any", "X-Request-Id: b-any3\r\n",
                       "[" FAILS(5000, 30) "," FAILS(5000, 60) "]", &r, &doc));
    CU_ASSERT(hs_resp_is_error(&r, 504, "all_failed"));
    CU_ASSERT(str_eq(err_str(doc, "message"), "every job of the batch failed"));
    json_t *errs = json_object_get(json_object_get(doc, "error"), "errors");
    CU_ASSERT_EQUAL(json_array_size(errs), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(errs, i);
        CU_ASSERT(hs_json_int(e, "index", -1) == (long long)i &&
                  str_eq(hs_json_str(e, "code"), "deadline_exceeded") &&
                  hs_json_str(e, "message") != NULL);
    }
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "any"));
    const struct want w3[] = {TIMED_OUT, TIMED_OUT};
    check_results(doc, w3, 2);
    check_log(s, "b-any3", w3, 2, 504);

    /* race: the first to finish is the answer, a failure as well as a success. */
    t0 = hs_now_ms();
    HS_CHECK(batch_doc(c, "?mode=race", "X-Request-Id: b-race\r\n",
                       "[" FAILS(5000, 20) "," LONG "]", &r, &doc));
    CU_ASSERT(hs_now_ms() - t0 < QUICK_MS);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "race"));
    CU_ASSERT_EQUAL(hs_json_int(json_object_get(doc, "error"), "index", -1), 0);
    CU_ASSERT(starts_with(err_str(doc, "message"), "jobs[0] (spin): "));
    const struct want w4[] = {TIMED_OUT, CANCELLED("sibling_failed")};
    check_results(doc, w4, 2);
    check_log(s, "b-race", w4, 2, 504);

    /* The first to finish succeeds: 200 like any, the others cancelled sibling_won. */
    t0 = hs_now_ms();
    HS_CHECK(batch_doc(c, "?mode=race", "X-Request-Id: b-race2\r\n",
                       "[" LONG "," LONG ",{\"kind\":\"primes\",\"params\":{\"n\":10}}]", &r,
                       &doc));
    CU_ASSERT(hs_now_ms() - t0 < QUICK_MS);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(str_eq(hs_json_str(doc, "mode"), "race"));
    CU_ASSERT_EQUAL(hs_json_int(doc, "index", -1), 2);
    CU_ASSERT(str_eq(hs_json_str(doc, "kind"), "primes"));
    CU_ASSERT_EQUAL(hs_json_int(json_object_get(doc, "result"), "count", -1), 4);
    const struct want w5[] = {CANCELLED("sibling_won"), CANCELLED("sibling_won"), OK("primes")};
    check_results(doc, w5, 3);
    check_log(s, "b-race2", w5, 3, 200);
out:
    down(s, c, &r, doc);
}

/* One worker: a loser still queued when the batch is decided never runs. */
static void test_batch_queued_loser_never_runs(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=1", NULL, &c);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    HS_CHECK(s != NULL && c != NULL);
    HS_CHECK(
        batch_doc(c, "?mode=any", "X-Request-Id: q-any\r\n", "[" SPIN(5) "," LONG "]", &r, &doc));
    CU_ASSERT_EQUAL(r.status, 200);
    const struct want w[] = {OK("spin"), CANCELLED("sibling_won")};
    check_results(doc, w, 2);
    CU_ASSERT(num(item(doc, 1), "run_ms") == 0.0);
    HS_CHECK(batch_doc(c, "?mode=all", "X-Request-Id: q-all\r\n", "[" FAILS(5000, 50) "," LONG "]",
                       &r, &doc));
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    const struct want w2[] = {TIMED_OUT, CANCELLED("sibling_failed")};
    check_results(doc, w2, 2);
    CU_ASSERT(num(item(doc, 1), "run_ms") == 0.0);
    check_log(s, "q-any", w, 2, 200);
    check_log(s, "q-all", w2, 2, 504);
    CU_ASSERT_EQUAL(count_lines(s, "job start", "q-any"), 1);
    CU_ASSERT_EQUAL(count_lines(s, "job start", "q-all"), 1);
out:
    down(s, c, &r, doc);
}

/* any and race: the winner cancels its siblings while one loser runs and two are queued. The
 * running loser that stops frees its worker; that worker must not take a queued loser (it did in
 * 16 of 40 runs when the siblings were cancelled in index order). Repeated so that the race
 * shows. */
static void test_batch_queued_losers_never_run_after_a_win(void)
{
    enum { RUNS = 40 };
    struct hs_conn *c = NULL;
    /* info level: without the workers' debug lines the freed worker is quick enough to race */
    struct hs_server *s = up("pool.workers=2", "log.level=info", &c);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    HS_CHECK(s != NULL && c != NULL);
    for (int k = 0; k < RUNS; k++) {
        HS_CHECK(batch_doc(c, k % 2 ? "?mode=race" : "?mode=any", "",
                           "[{\"kind\":\"sha256\",\"params\":{\"rounds\":100000},\"body\":\"x\"},"
                           "" SPIN(60000) "," NOOP "," SPIN(60000) "]",
                           &r, &doc));
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_EQUAL(hs_json_int(doc, "index", -1), 0);
        /* a queued loser that ran would be "ok" (noop) or have run at all (spin) */
        const struct want w[] = {OK("sha256"),
                                 CANCELLED("sibling_won"),
                                 {"noop", "cancelled", "sibling_won"},
                                 CANCELLED("sibling_won")};
        check_results(doc, w, 4);
        CU_ASSERT(num(item(doc, 2), "run_ms") == 0.0 && num(item(doc, 3), "run_ms") == 0.0);
    }
out:
    down(s, c, &r, doc);
}

/* ---- an item's own timeout_ms ---------------------------------------------------------------- */

/* A batch whose first item carries a body of `mib` MiB (sha256, one round) and whose second is
 * `second`. New string, or NULL. */
static char *big_batch(size_t mib, const char *second, size_t *len)
{
    static const char head[] = "[{\"kind\":\"sha256\",\"params\":{\"rounds\":1},\"body\":\"";
    size_t n = mib << 20, cap = sizeof(head) + n + strlen(second) + 8;
    char *b = malloc(cap);
    if (b == NULL)
        return NULL;
    memcpy(b, head, sizeof(head) - 1);
    memset(b + sizeof(head) - 1, 'x', n);
    *len = sizeof(head) - 1 + n;
    *len += (size_t)snprintf(b + *len, cap - *len, "\"}%s%s]", *second ? "," : "", second);
    return b;
}

#define BIG_MIB 16
#define BIG_MAX "limits.max_body_bytes=33554432"
#define BIG_MS  30000 /* to send a big body and read its answer: sanitizer builds take seconds */

/* POST a big body to /v1/batch?mode=`mode` with header lines `extra`, within BIG_MS. */
static int post_big(struct hs_conn *c, const char *mode, const char *extra, const char *body,
                    size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/batch?mode=%s HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n%s\r\n",
                     mode, len, extra);
    int rc = hs_send(c, head, (size_t)n, HS_IO_MS);
    return rc == 0 ? hs_send(c, body, len, BIG_MS) : rc;
}

/* timeout_ms counts from the item's submission in real time. The loop's cached time used to be
 * stale by the parse of a large body (~300 ms for 16 MiB), so a timer of 150 ms fired at once and
 * a spin of 1 ms failed with run_ms 0. */
static void test_batch_item_timeout_counts_real_time(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=2", BIG_MAX, &c);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    size_t len = 0;
    char *body =
        big_batch(BIG_MIB, "{\"kind\":\"spin\",\"params\":{\"ms\":1},\"timeout_ms\":150}", &len);
    HS_CHECK(s != NULL && c != NULL && body != NULL);
    for (int k = 0; k < 2; k++) {
        HS_CHECK(post_big(c, "all_settled", "X-Request-Id: b-rt\r\n", body, len) == 0);
        HS_CHECK(hs_read_response(c, &r, false, BIG_MS) == 0);
        json_decref(doc);
        HS_CHECK((doc = hs_resp_json(&r)) != NULL);
        CU_ASSERT_EQUAL(r.status, 200);
        const struct want w[] = {OK("sha256"), OK("spin")};
        check_results(doc, w, 2);
        CU_ASSERT(num(item(doc, 1), "run_ms") >= 1.0);
    }
out:
    free(body);
    down(s, c, &r, doc);
}

/* A success that ends after the item's deadline is a deadline failure even when the loop could
 * not run the item's timer in time: here the whole process is stopped (SIGSTOP) while the item's
 * deadline and then its spin's end pass, so on SIGCONT the worker ends its spin and the loop's
 * timer fire together. Before, the worker won that race most of the time and the success was
 * accepted (20 of 20 with a busy loop). Repeated so that the race shows. */
static void test_batch_item_late_success_fails(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=1", NULL, &c);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    HS_CHECK(s != NULL && c != NULL);
    for (int k = 0; k < 5; k++) {
        char rid[32], hdr[64];
        snprintf(rid, sizeof(rid), "b-late-%d", k);
        snprintf(hdr, sizeof(hdr), "X-Request-Id: %s\r\n", rid);
        HS_CHECK(batch_send(c, "?mode=all_settled", hdr, "[" FAILS(300, 150) "]") == 0);
        HS_CHECK(wait_lines(s, "job start", rid, 1, NULL, WAIT_MS) == 1);
        HS_CHECK(kill(hs_pid(s), SIGSTOP) == 0);
        /* let the deadline (150 ms) and the spin's end (300 ms) pass while nothing runs */
        struct timespec ts = {0, 400 * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
            ;
        HS_CHECK(kill(hs_pid(s), SIGCONT) == 0);
        HS_CHECK(hs_read_response(c, &r, false, WAIT_MS) == 0);
        json_decref(doc);
        HS_CHECK((doc = hs_resp_json(&r)) != NULL);
        CU_ASSERT_EQUAL(r.status, 200);
        const struct want w[] = {TIMED_OUT};
        check_results(doc, w, 1);
    }
out:
    if (s != NULL)
        (void)kill(hs_pid(s), SIGCONT);
    down(s, c, &r, doc);
}

/* ---- large bodies ---------------------------------------------------------------------------- */

/* Microseconds since midnight of a log line's "ts" (RFC 3339 UTC), -1 when it has none. */
static long long ts_us(const json_t *line)
{
    const char *ts = hs_json_str(line, "ts");
    int h, m, sec, us;
    if (ts == NULL || sscanf(ts, "%*d-%*d-%*dT%d:%d:%d.%dZ", &h, &m, &sec, &us) != 4)
        return -1;
    return ((h * 60LL + m) * 60 + sec) * 1000000 + us;
}

/* How many /healthz access lines the loop wrote while the parse that ended at `end_us` and took
 * `parse_ms` ran. */
static int healthz_during(const struct hs_server *s, long long end_us, double parse_ms)
{
    json_t *lines = hs_log_lines(s), *line;
    size_t i;
    int n = 0;
    long long start_us = end_us - (long long)(parse_ms * 1000);
    json_array_foreach(lines, i, line)
    {
        const char *msg = hs_json_str(line, "msg"), *path = hs_json_str(line, "path");
        long long t = ts_us(line);
        if (msg != NULL && strcmp(msg, "access") == 0 && path != NULL &&
            strcmp(path, "/healthz") == 0 && t > start_us && t < end_us)
            n++;
    }
    json_decref(lines);
    return n;
}

/* A large body is parsed off the loop: while a 16 MiB batch body is parsed on a worker (its
 * "batch parsed" line says which thread, when it ended and how long it took), /healthz on another
 * connection keeps being answered: the loop writes /healthz access lines inside the parse's
 * window, which it could not do while it parsed itself (it used to wait for the whole parse).
 * Ordering, not timing: the log's own clock places the answers inside the parse. */
static void test_batch_large_body_does_not_stall_loop(void)
{
    struct hs_conn *c = NULL, *h = NULL;
    struct hs_server *s = up("pool.workers=2", BIG_MAX, &c);
    struct hs_resp r = {0}, hr = {0};
    json_t *doc = NULL;
    size_t len = 0;
    char *body = big_batch(BIG_MIB, "", &len);
    HS_CHECK(s != NULL && c != NULL && body != NULL && (h = hs_connect(s)) != NULL);
    long long t0 = hs_now_ms();
    json_t *parsed = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    long long parse_ms = hs_now_ms() - t0;
    json_decref(parsed);
    HS_CHECK(parsed != NULL && parse_ms >= 50);
    HS_CHECK(post_big(c, "all", "X-Request-Id: b-big\r\n", body, len) == 0);
    long long worst = 0, end = hs_now_ms() + BIG_MS;
    int probes = 0, rc;
    while ((rc = hs_read_response(c, &r, false, 0)) == -ETIMEDOUT && hs_now_ms() < end) {
        long long p0 = hs_now_ms();
        HS_CHECK(hs_exchange(h, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &hr) == 0);
        CU_ASSERT_EQUAL(hr.status, 200);
        worst = hs_now_ms() - p0 > worst ? hs_now_ms() - p0 : worst;
        probes++;
    }
    HS_CHECK(rc == 0 || hs_read_response(c, &r, false, BIG_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(probes > 0);
    json_t *parsed_line = hs_log_wait(s, "batch parsed", "request_id", "b-big", HS_IO_MS);
    CU_ASSERT_PTR_NOT_NULL(parsed_line);
    if (parsed_line != NULL) {
        const char *th = hs_json_str(parsed_line, "thread");
        CU_ASSERT(th != NULL && strncmp(th, "spindle-w", 9) == 0);
        json_t *pm = json_object_get(parsed_line, "parse_ms");
        int during = healthz_during(s, ts_us(parsed_line), json_number_value(pm));
        CU_ASSERT(json_is_number(pm) && during > 0);
        if (during == 0)
            fprintf(stderr,
                    "\n    no /healthz answered during a parse of %.1f ms (%d probes, "
                    "worst %lld ms; the test's own parse took %lld ms)\n",
                    json_number_value(pm), probes, worst, parse_ms);
        json_decref(parsed_line);
    }
    /* the answer is the same as for a small body */
    HS_CHECK((doc = hs_resp_json(&r)) != NULL);
    const struct want w[] = {OK("sha256")};
    check_results(doc, w, 1);
    CU_ASSERT_EQUAL(hs_json_int(json_object_get(item(doc, 0), "result"), "bytes", -1),
                    (long long)BIG_MIB << 20);
    /* a large body that is not JSON is refused the same way, from the worker's parse */
    body[len - 1] = ',';
    HS_CHECK(post_big(c, "all", "", body, len) == 0);
    HS_CHECK(hs_read_response(c, &r, false, BIG_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "bad_json"));
out:
    free(body);
    hs_resp_fini(&hr);
    hs_close(h);
    down(s, c, &r, doc);
}

/* ---- whole-request cancellation -------------------------------------------------------------- */

/* The request's deadline cancels every sub-job; so does a client reset (two run, one queued). */
static void test_batch_deadline_and_client_close(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=2", NULL, &c);
    struct hs_resp r = {0};
    json_t *acc = NULL;
    HS_CHECK(s != NULL && c != NULL);
    long long t0 = hs_now_ms();
    HS_CHECK(batch_exchange(c, "?mode=all", "X-Request-Id: b-dl\r\nX-Timeout-Ms: 200\r\n",
                            "[" LONG "," LONG "]", &r) == 0);
    long long took = hs_now_ms() - t0;
    CU_ASSERT(took >= 180 && took < QUICK_MS);
    CU_ASSERT(hs_resp_is_error(&r, 504, "deadline_exceeded"));
    const struct want w[] = {CANCELLED("deadline"), CANCELLED("deadline")};
    check_log(s, "b-dl", w, 2, 504);

    HS_CHECK(batch_send(c, "?mode=all_settled", "X-Request-Id: b-cc\r\n",
                        "[" LONG "," LONG "," LONG "]") == 0);
    HS_CHECK(wait_lines(s, "job start", "b-cc", 2, NULL, WAIT_MS) == 2);
    t0 = hs_now_ms();
    hs_abort(c);
    c = NULL;
    const struct want w2[] = {CANCELLED("client_closed"), CANCELLED("client_closed"),
                              CANCELLED("client_closed")};
    check_log(s, "b-cc", w2, 3, 499);
    CU_ASSERT(hs_now_ms() - t0 < QUICK_MS);
    HS_CHECK((acc = hs_log_wait(s, "access", "request_id", "b-cc", WAIT_MS)) != NULL);
    CU_ASSERT(str_eq(hs_json_str(acc, "reason"), "client_closed"));
out:
    json_decref(acc);
    down(s, c, &r, NULL);
}

/* SIGTERM with a batch running past the drain period: 503 shutting_down, sub-jobs cancelled
 * (shutdown), then a clean exit (no leak under AddressSanitizer). */
static void test_batch_shutdown(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("pool.workers=2", "shutdown.drain_timeout_ms=200", &c);
    struct hs_resp r = {0};
    HS_CHECK(s != NULL && c != NULL);
    HS_CHECK(batch_send(c, "?mode=all", "X-Request-Id: b-stop\r\n", "[" LONG "," LONG "]") == 0);
    HS_CHECK(wait_lines(s, "job start", "b-stop", 2, NULL, WAIT_MS) == 2);
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK(hs_read_response(c, &r, false, WAIT_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "shutting_down"));
    const struct want w[] = {CANCELLED("shutdown"), CANCELLED("shutdown")};
    check_log(s, "b-stop", w, 2, 503);
out:
    down(s, c, &r, NULL);
}

/* ---- bad input ------------------------------------------------------------------------------- */

/* A fresh connection sends the batch; the answer must be 400 with `code` (NULL: bad_batch or
 * bad_param) and, unless `needle` is NULL, a message containing it. */
static void expect_400(const struct hs_server *s, const char *query, const char *body,
                       const char *code, const char *needle)
{
    static int n;
    struct hs_conn *c = hs_connect(s);
    struct hs_resp r = {0};
    json_t *doc = NULL;
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "X-Request-Id: bad-%d\r\n", ++n);
    HS_CHECK(c != NULL && batch_exchange(c, query, hdr, body, &r) == 0);
    doc = hs_resp_json(&r);
    const char *msg = err_str(doc, "message");
    bool ok = code != NULL ? hs_resp_is_error(&r, 400, code)
                           : hs_resp_is_error(&r, 400, "bad_batch") ||
                                 hs_resp_is_error(&r, 400, "bad_param");
    ok = ok && (needle == NULL || (msg != NULL && strstr(msg, needle) != NULL));
    CU_ASSERT(ok);
    if (!ok)
        fprintf(stderr, "\n    %s %s: expected 400 %s '%s', got:\n%s\n%s\n", query, body,
                code ? code : "bad_batch|bad_param", needle ? needle : "", r.head, r.body);
out:
    json_decref(doc);
    hs_resp_fini(&r);
    hs_close(c);
}

#define SPIN_P(p) "[{\"kind\":\"spin\",\"params\":" p "}]"

static void test_batch_bad_input(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("limits.max_batch=4", NULL, &c);
    struct hs_resp r = {0};
    json_t *lines = NULL, *line;
    HS_CHECK(s != NULL && c != NULL);
    expect_400(s, "?mode=all", "[{\"kind\":", "bad_json", "line");
    expect_400(s, "?mode=all", "not json", "bad_json", NULL);
    expect_400(s, "?mode=all", NOOP, "bad_batch", NULL);
    expect_400(s, "?mode=all", "[]", "bad_batch", NULL);
    expect_400(s, "?mode=all", NOOP5, "bad_batch", "a batch holds at most 4 jobs");
    expect_400(s, "?mode=all", "[" NOOP ",1]", "bad_batch", NULL);
    expect_400(s, "?mode=all", "[" NOOP ",{\"kind\":\"x\"}]", "bad_batch",
               "jobs[1]: unknown kind 'x'");
    expect_400(s, "?mode=all", "[{\"params\":{}}]", "bad_batch", NULL);
    expect_400(s, "?mode=all", "[{\"kind\":\"noop\",\"extra\":1}]", "bad_batch", NULL);
    expect_400(s, "?mode=all", "[{\"kind\":1}]", "bad_batch", NULL);
    expect_400(s, "?mode=all", SPIN_P("[1]"), "bad_batch", NULL);
    expect_400(s, "?mode=all", SPIN_P("{\"ms\":true}"), "bad_batch", NULL);
    expect_400(s, "?mode=all", SPIN_P("{\"ms\":-1.5}"), "bad_batch", NULL);
    expect_400(s, "?mode=all", SPIN_P("{\"ms\":-1}"), NULL, NULL);
    expect_400(s, "?mode=all", "[{\"kind\":\"noop\",\"timeout_ms\":\"5\"}]", "bad_batch", NULL);
    expect_400(s, "?mode=all", "[{\"kind\":\"noop\",\"timeout_ms\":0}]", NULL, NULL);
    expect_400(s, "?mode=all", "[{\"kind\":\"sha256\",\"params\":{\"rounds\":1},\"body\":5}]",
               "bad_batch", NULL);
    expect_400(s, "?mode=all", "[{\"kind\":\"noop\",\"body\":\"x\"}]", "bad_batch", NULL);
    /* The kind's own parse refused, named by index and kind. */
    expect_400(s, "?mode=all", "[" SPIN(1) ",{\"kind\":\"spin\",\"params\":{\"ms\":99999999}}]",
               "bad_param", "jobs[1] (spin): ms must be an integer between 0 and 60000");
    expect_400(s, "?mode=all", "[" SPIN(1) ",{\"kind\":\"primes\"}]", "bad_param",
               "jobs[1] (primes): missing required parameter 'n'");
    /* The mode. */
    expect_400(s, "", "[" SPIN(1) "]", "bad_param", NULL);
    expect_400(s, "?mode=first", "[" SPIN(1) "]", "bad_param", NULL);
    expect_400(s, "?mode=all&x=1", "[" SPIN(1) "]", "bad_param", NULL);
    expect_400(s, "?mode=all&mode=any", "[" SPIN(1) "]", "bad_param", NULL);
    /* Nothing of a refused batch ran; a good one of max_batch jobs does. */
    HS_CHECK(batch_exchange(c, "?mode=all", "X-Request-Id: good\r\n", NOOP4, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    HS_CHECK(wait_lines(s, "batch job", "good", 4, NULL, WAIT_MS) == 4);
    HS_CHECK((lines = hs_log_lines(s)) != NULL);
    size_t i, ran = 0;
    json_array_foreach(lines, i, line)
    {
        const char *m = hs_json_str(line, "msg");
        ran += (str_eq(m, "job start") || str_eq(m, "batch job")) &&
               starts_with(hs_json_str(line, "request_id"), "bad-");
    }
    CU_ASSERT_EQUAL(ran, 0);
out:
    down(s, c, &r, lines);
}

/* ---- admission ------------------------------------------------------------------------------- */

static void test_batch_tenant_inflight(void)
{
    struct hs_conn *hold = NULL, *c = NULL;
    struct hs_server *s = up("pool.workers=4", "limits.max_inflight=3", &c);
    struct hs_resp r = {0};
    json_t *a = NULL;
    HS_CHECK(s != NULL && c != NULL);
    /* More jobs than the tenant may ever have in flight. */
    HS_CHECK(batch_exchange(c, "?mode=all", "X-Tenant-Id: t\r\n", NOOP4, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "batch_too_large"));
    /* A batch of three holds all three slots while it runs. */
    HS_CHECK((hold = hs_connect(s)) != NULL);
    HS_CHECK(batch_send(hold, "?mode=all", "X-Request-Id: b-hold\r\nX-Tenant-Id: t\r\n",
                        "[" LONG "," LONG "," LONG "]") == 0);
    HS_CHECK(wait_lines(s, "job start", "b-hold", 1, NULL, WAIT_MS) >= 1);
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: t\r\n", NULL, 0, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_concurrency_limited"));
    CU_ASSERT(hs_resp_header_count(&r, "Retry-After") == 1);
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "X-Tenant-Id: u\r\n", NULL, 0, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* The client leaves: every sub-job ends and the three slots come back. */
    hs_abort(hold);
    hold = NULL;
    HS_CHECK(wait_lines(s, "batch job", "b-hold", 3, NULL, WAIT_MS) == 3);
    a = hs_log_wait(s, "access", "request_id", "b-hold", WAIT_MS);
    CU_ASSERT(a != NULL && hs_json_int(a, "status", -1) == 499);
    HS_CHECK(batch_exchange(c, "?mode=all", "X-Tenant-Id: t\r\n", NOOP3, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* All or nothing: one job in flight leaves room for a batch of two, not of three. */
    HS_CHECK((hold = hs_connect(s)) != NULL);
    HS_CHECK(post(hold, "/v1/jobs/spin?ms=10000", "X-Request-Id: s-hold\r\nX-Tenant-Id: t\r\n",
                  NULL, 0) == 0);
    HS_CHECK(wait_lines(s, "job start", "s-hold", 1, NULL, WAIT_MS) == 1);
    HS_CHECK(batch_exchange(c, "?mode=all", "X-Request-Id: b-3\r\nX-Tenant-Id: t\r\n", NOOP3, &r) ==
             0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_concurrency_limited"));
    CU_ASSERT(hs_resp_header_count(&r, "Retry-After") == 1);
    HS_CHECK(batch_exchange(c, "?mode=all", "X-Tenant-Id: t\r\n", NOOP2, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(count_lines(s, "job start", "b-3"), 0);
out:
    hs_abort(hold);
    down(s, c, &r, a);
}

static void test_batch_tenant_rate_and_queue(void)
{
    struct hs_conn *c = NULL;
    struct hs_server *s = up("limits.rate=1", "limits.burst=2", &c);
    struct hs_resp r = {0};
    HS_CHECK(s != NULL && c != NULL);
    /* Above the burst: never admissible, and it takes no token. */
    HS_CHECK(batch_exchange(c, "?mode=all", "", NOOP3, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "batch_too_large"));
    HS_CHECK(batch_exchange(c, "?mode=all", "", NOOP2, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    /* The batch took both tokens. */
    HS_CHECK(job_exchange(c, "/v1/jobs/noop", "", NULL, 0, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 429, "tenant_rate_limited"));
    CU_ASSERT(hs_resp_header_count(&r, "Retry-After") == 1);
    down(s, c, &r, NULL);

    /* More jobs than the queue holds. */
    s = up("pool.queue_capacity=2", NULL, &c);
    HS_CHECK(s != NULL && c != NULL);
    HS_CHECK(batch_exchange(c, "?mode=all", "", NOOP3, &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 400, "batch_too_large"));
    HS_CHECK(batch_exchange(c, "?mode=all", "", NOOP2, &r) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
out:
    down(s, c, &r, NULL);
}

/* ---- kinds with a body ----------------------------------------------------------------------- */

/* The body as JSON text (escapes) and as the bytes the job must see. */
#define BODY_JSON "batch \\\"body\\\"\\n\\u00e9 spindle spindle spindle spindle spindle"
#define BODY_RAW  "batch \"body\"\n\xc3\xa9 spindle spindle spindle spindle spindle"

static void test_batch_body_kinds(void)
{
    static const char text[] = BODY_RAW;
    size_t len = sizeof(text) - 1;
    struct hs_conn *c = NULL;
    struct hs_server *s = up(NULL, NULL, &c);
    struct hs_resp r = {0}, alone = {0};
    json_t *doc = NULL, *one = NULL;
    unsigned char back[256], d1[SHA256_DIGEST_LENGTH], d2[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1], b64[512];
    HS_CHECK(s != NULL && c != NULL);
    HS_CHECK(batch_doc(c, "?mode=all", "",
                       "[{\"kind\":\"sha256\",\"params\":{\"rounds\":\"2\"},\"body\":\"" BODY_JSON
                       "\"},{\"kind\":\"compress\",\"params\":{\"codec\":\"zstd\",\"level\":3},"
                       "\"body\":\"" BODY_JSON "\"}]",
                       &r, &doc));
    CU_ASSERT_EQUAL(r.status, 200);
    const struct want w[] = {OK("sha256"), OK("compress")};
    check_results(doc, w, 2);

    /* sha256: the same answer as the job alone, and the digest computed here. */
    HS_CHECK(job_exchange(c, "/v1/jobs/sha256?rounds=2", "", text, len, &alone) == 0);
    HS_CHECK(alone.status == 200 && (one = hs_resp_json(&alone)) != NULL);
    json_t *res = json_object_get(item(doc, 0), "result");
    CU_ASSERT(json_equal(res, one));
    SHA256((const unsigned char *)text, len, d1);
    SHA256(d1, sizeof(d1), d2);
    for (size_t i = 0; i < sizeof(d2); i++)
        snprintf(hex + 2 * i, 3, "%02x", d2[i]);
    CU_ASSERT(str_eq(hs_json_str(res, "digest"), hex));

    /* compress: the base64 of the job alone's bytes, which decompress to the body. */
    const json_t *z = item(doc, 1);
    CU_ASSERT(str_eq(hs_json_str(z, "content_type"), "application/zstd"));
    CU_ASSERT_PTR_NULL(json_object_get(z, "result"));
    HS_CHECK(job_exchange(c, "/v1/jobs/compress?codec=zstd&level=3", "", text, len, &alone) == 0);
    HS_CHECK(alone.status == 200 && alone.body_len > 0 && alone.body_len < 300);
    size_t got = ZSTD_decompress(back, sizeof(back), alone.body, alone.body_len);
    CU_ASSERT(!ZSTD_isError(got) && got == len && memcmp(back, text, len) == 0);
    EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)alone.body, (int)alone.body_len);
    CU_ASSERT(str_eq(hs_json_str(z, "result_base64"), b64));
out:
    json_decref(one);
    hs_resp_fini(&alone);
    down(s, c, &r, doc);
}

int suite_integration_batch(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_batch_all_ok),
        SPINDLE_TEST(test_batch_failure_all_vs_settled),
        SPINDLE_TEST(test_batch_any_and_race),
        SPINDLE_TEST(test_batch_queued_loser_never_runs),
        SPINDLE_TEST(test_batch_queued_losers_never_run_after_a_win),
        SPINDLE_TEST(test_batch_item_timeout_counts_real_time),
        SPINDLE_TEST(test_batch_item_late_success_fails),
        SPINDLE_TEST(test_batch_large_body_does_not_stall_loop),
        SPINDLE_TEST(test_batch_deadline_and_client_close),
        SPINDLE_TEST(test_batch_shutdown),
        SPINDLE_TEST(test_batch_bad_input),
        SPINDLE_TEST(test_batch_tenant_inflight),
        SPINDLE_TEST(test_batch_tenant_rate_and_queue),
        SPINDLE_TEST(test_batch_body_kinds),
    };
    return SPINDLE_SUITE_ADD("integration_batch", NULL, NULL, tests);
}
