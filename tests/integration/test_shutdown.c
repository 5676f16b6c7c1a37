/* test_shutdown.c - graceful stop of the real server: drain under load, the drain deadline, a
 * second signal, idle keep-alive connections during the drain, the summary line.
 *
 * The load test runs 32 client threads, each with one keep-alive connection sending
 * POST /v1/jobs/spin?ms=20 back to back with a unique X-Request-Id, and sends SIGTERM once some
 * answers came back. Every request a client sent (before or after the signal) must get a complete
 * answer: a connection is only ever closed by the server after an answer that said
 * `Connection: close`. The threads report progress through a semaphore; waits on the server
 * process are bounded polls.
 *
 * The hard stop (drain_timeout_ms = 0, or two stop signals at once) is tested with the process
 * stopped by SIGSTOP while requests arrive, so that they wait unread in sockets and in the accept
 * backlog when the final phase begins.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/suite.h"

int suite_integration_shutdown(void);

#define SD_CLIENTS     32
#define SD_MAX_PER_CLI 2000 /* requests per client at most (a bound, never reached) */
#define SD_MARGIN_MS   1500 /* exit after the drain deadline within this (sanitizer builds) */

static const char sd_spin_req[] = "POST /v1/jobs/spin?ms=20 HTTP/1.1\r\nHost: t\r\n"
                                  "X-Request-Id: ld-%u-%u\r\nContent-Length: 0\r\n\r\n";

struct sd_client {
    pthread_t th;
    int port;
    unsigned idx;
    sem_t *progress;
    sem_t *ready; /* posted once the client is connected (or could not connect) */
    /* results, read after join */
    unsigned sent, answered, ok, other, unanswered;
    bool closed_by_answer; /* the last answer said Connection: close */
    bool connect_failed;
};

static void *sd_client_main(void *arg)
{
    struct sd_client *cl = arg;
    struct hs_conn *c = hs_connect_host("127.0.0.1", cl->port, HS_IO_MS);
    struct hs_resp r = {0};
    sem_post(cl->ready);
    if (c == NULL) {
        cl->connect_failed = true;
        sem_post(cl->progress);
        return NULL;
    }
    for (unsigned n = 0; n < SD_MAX_PER_CLI; n++) {
        char req[256];
        snprintf(req, sizeof(req), sd_spin_req, cl->idx, n);
        if (hs_send_str(c, req) != 0) {
            cl->unanswered++; /* the server closed a connection that had promised keep-alive */
            break;
        }
        cl->sent++;
        if (hs_read_response(c, &r, false, HS_STOP_MS) != 0) {
            cl->unanswered++;
            break;
        }
        cl->answered++;
        if (r.status == 200)
            cl->ok++;
        else
            cl->other++;
        sem_post(cl->progress);
        if (ops_header_is(&r, "Connection", "close")) {
            cl->closed_by_answer = true;
            break;
        }
    }
    hs_resp_fini(&r);
    hs_close(c);
    return NULL;
}

/* Wait for `n` posts within `ms`. */
static bool sd_sem_wait_n(sem_t *sem, unsigned n, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    for (unsigned i = 0; i < n; i++) {
        while (sem_timedwait(sem, &ts) != 0) {
            if (errno != EINTR)
                return false;
        }
    }
    return true;
}

/* The log file, read strictly; its last line must be the summary. Returns the lines (new
 * reference) and the summary (borrowed from them) in *summary, or NULL. */
static json_t *sd_log_with_summary(const struct hs_server *s, json_t **summary)
{
    char *path = ops_path(hs_dir(s), "spindle.log");
    bool complete = false;
    json_t *lines = path != NULL ? ops_log_read(path, &complete) : NULL;
    free(path);
    *summary = NULL;
    CU_ASSERT(complete);
    size_t n = json_array_size(lines);
    CU_ASSERT(n > 0);
    if (n == 0)
        return lines;
    json_t *last = json_array_get(lines, n - 1);
    const char *msg = hs_json_str(last, "msg");
    CU_ASSERT(msg != NULL && strcmp(msg, "spindle stopped") == 0);
    if (msg != NULL && strcmp(msg, "spindle stopped") == 0)
        *summary = last;
    if (*summary != NULL) {
        CU_ASSERT(hs_json_int(last, "requests_drained", -1) >= 0);
        CU_ASSERT(hs_json_int(last, "jobs_cancelled", -1) >= 0);
        CU_ASSERT(json_is_number(json_object_get(last, "drain_ms")));
        CU_ASSERT(json_is_number(json_object_get(last, "duration_ms")));
    }
    return lines;
}

/* 32 keep-alive clients under steady load; SIGTERM: nothing sent is left unanswered, every
 * connection ends with a Connection: close answer, the process exits 0 long before the drain
 * deadline, and the log holds an access line per answer and ends with the summary. */
static void test_shutdown_under_load(void)
{
    const char *const over[] = {"pool.workers=4", "shutdown.drain_timeout_ms=10000",
                                "log.level=info", NULL};
    struct hs_server *s = hs_start(over);
    struct sd_client cl[SD_CLIENTS];
    sem_t progress, ready;
    unsigned started = 0;
    json_t *lines = NULL, *summary = NULL;
    memset(cl, 0, sizeof(cl));
    CU_ASSERT_FATAL(sem_init(&progress, 0, 0) == 0);
    CU_ASSERT_FATAL(sem_init(&ready, 0, 0) == 0);
    HS_CHECK(s != NULL);
    for (unsigned i = 0; i < SD_CLIENTS; i++) {
        cl[i] = (struct sd_client){
            .port = hs_port(s), .idx = i, .progress = &progress, .ready = &ready};
        HS_CHECK(pthread_create(&cl[i].th, NULL, sd_client_main, &cl[i]) == 0);
        started++;
    }
    /* every client connected before the stop (a slow thread start must not meet a closed
     * listener), then steady load */
    HS_CHECK(sd_sem_wait_n(&ready, SD_CLIENTS, 4 * HS_IO_MS));
    HS_CHECK(sd_sem_wait_n(&progress, 2 * SD_CLIENTS, 4 * HS_IO_MS));
    long long t0 = hs_now_ms();
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    for (unsigned i = 0; i < started; i++)
        pthread_join(cl[i].th, NULL);
    started = 0;
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT(hs_now_ms() - t0 < 5000); /* nothing left: no wait for the 10 s deadline */
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    unsigned answered = 0, ok = 0;
    for (unsigned i = 0; i < SD_CLIENTS; i++) {
        CU_ASSERT(!cl[i].connect_failed);
        CU_ASSERT_EQUAL(cl[i].unanswered, 0);
        CU_ASSERT_EQUAL(cl[i].sent, cl[i].answered);
        CU_ASSERT_EQUAL(cl[i].other, 0);
        CU_ASSERT(cl[i].closed_by_answer);
        answered += cl[i].answered;
        ok += cl[i].ok;
    }
    CU_ASSERT(answered >= 2 * SD_CLIENTS);
    lines = sd_log_with_summary(s, &summary);
    CU_ASSERT_EQUAL(ops_count(lines, "access", "ld-"), answered);
    if (summary != NULL) {
        CU_ASSERT(hs_json_int(summary, "requests_drained", 0) >= SD_CLIENTS);
        CU_ASSERT_EQUAL(hs_json_int(summary, "jobs_cancelled", -1), 0);
    }
    CU_ASSERT_EQUAL(ok, answered);
out:
    for (unsigned i = 0; i < started; i++) /* only after a failed check: let them end */
        pthread_join(cl[i].th, NULL);
    json_decref(lines);
    sem_destroy(&progress);
    sem_destroy(&ready);
    HS_FINISH(s);
}

static int sd_spin_send(struct hs_conn *c, const char *id, unsigned ms)
{
    char req[256];
    snprintf(req, sizeof(req),
             "POST /v1/jobs/spin?ms=%u HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n"
             "Content-Length: 0\r\n\r\n",
             ms, id);
    return hs_send_str(c, req);
}

/* Jobs longer than the drain period: at the deadline each is cancelled and answered 503
 * shutting_down; meanwhile /readyz says 503 on a kept-alive connection, new connections are
 * refused, a quiet idle connection is closed at the deadline without bytes; exit 0 in time. */
static void test_shutdown_deadline_cancels(void)
{
    const char *const over[] = {"pool.workers=2", "shutdown.drain_timeout_ms=400", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *job[3] = {NULL, NULL, NULL}, *ka = NULL, *quiet = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL, *lines = NULL, *summary = NULL;
    const char *ids[3] = {"dl-0", "dl-1", "dl-2"};
    HS_CHECK(s != NULL);
    HS_CHECK((ka = hs_connect(s)) != NULL && (quiet = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(ka, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    HS_CHECK(hs_exchange(quiet, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    for (int i = 0; i < 3; i++) {
        HS_CHECK((job[i] = hs_connect(s)) != NULL);
        HS_CHECK(sd_spin_send(job[i], ids[i], 20000) == 0);
    }
    HS_CHECK(hs_log_wait_count(s, "job start", 2, HS_IO_MS) >= 2); /* two run, one is queued */
    long long t0 = hs_now_ms();
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK((line = hs_log_wait(s, "stopping", NULL, NULL, HS_IO_MS)) != NULL);
    struct hs_conn *late = hs_connect_host("127.0.0.1", hs_port(s), 500);
    CU_ASSERT(late == NULL); /* the listener is closed */
    hs_close(late);
    HS_CHECK(hs_exchange(ka, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "draining"));
    CU_ASSERT(ops_header_is(&r, "Connection", "close"));
    for (int i = 0; i < 3; i++) {
        int rc = hs_read_response(job[i], &r, false, HS_IO_MS);
        if (rc != 0)
            fprintf(stderr, "\n  %s: %s\n", ids[i], strerror(-rc));
        HS_CHECK(rc == 0);
        CU_ASSERT(hs_resp_is_error(&r, 503, "shutting_down"));
        CU_ASSERT(ops_header_is(&r, "Connection", "close"));
    }
    long long answered_ms = hs_now_ms() - t0;
    CU_ASSERT(answered_ms >= 350);
    CU_ASSERT(answered_ms < 400 + SD_MARGIN_MS);
    CU_ASSERT(hs_closed_quietly(quiet, HS_IO_MS));
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT(hs_now_ms() - t0 < 400 + 2 * SD_MARGIN_MS);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    lines = sd_log_with_summary(s, &summary);
    CU_ASSERT_EQUAL(ops_count(lines, "access", "dl-"), 3);
    if (summary != NULL)
        CU_ASSERT_EQUAL(hs_json_int(summary, "jobs_cancelled", -1), 3);
out:
    json_decref(line);
    json_decref(lines);
    hs_resp_fini(&r);
    for (int i = 0; i < 3; i++)
        hs_close(job[i]);
    hs_close(ka);
    hs_close(quiet);
    HS_FINISH(s);
}

/* A second SIGTERM during a long drain cancels at once: the job is answered 503 and the process
 * exits 0 within about a second. */
static void test_shutdown_second_signal(void)
{
    const char *const over[] = {"shutdown.drain_timeout_ms=60000", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL, *lines = NULL, *summary = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(sd_spin_send(c, "ss-0", 30000) == 0);
    HS_CHECK((line = hs_log_wait(s, "job start", "request_id", "ss-0", HS_IO_MS)) != NULL);
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    json_decref(line);
    HS_CHECK((line = hs_log_wait(s, "stopping", NULL, NULL, HS_IO_MS)) != NULL);
    long long t1 = hs_now_ms();
    HS_CHECK(kill(hs_pid(s), SIGINT) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT(hs_resp_is_error(&r, 503, "shutting_down"));
    CU_ASSERT(hs_now_ms() - t1 < 1000);
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT(hs_now_ms() - t1 < SD_MARGIN_MS);
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    lines = sd_log_with_summary(s, &summary);
    CU_ASSERT_EQUAL(ops_count(lines, "access", "ss-"), 1);
    if (summary != NULL)
        CU_ASSERT_EQUAL(hs_json_int(summary, "jobs_cancelled", -1), 1);
out:
    json_decref(line);
    json_decref(lines);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

/* An idle keep-alive connection is not cut when the drain begins: a request sent on it after the
 * signal is served, with Connection: close, and then the connection closes. */
static void test_shutdown_idle_connection_served(void)
{
    struct hs_server *s = hs_start(NULL);
    struct hs_conn *c = NULL;
    struct hs_resp r = {0};
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    HS_CHECK(hs_exchange(c, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    CU_ASSERT(!ops_header_is(&r, "Connection", "close"));
    long long t0 = hs_now_ms();
    HS_CHECK(kill(hs_pid(s), SIGTERM) == 0);
    HS_CHECK((line = hs_log_wait(s, "stopping", NULL, NULL, HS_IO_MS)) != NULL);
    HS_CHECK(hs_alive(s));
    HS_CHECK(sd_spin_send(c, "idle-1", 30) == 0);
    HS_CHECK(hs_read_response(c, &r, false, HS_IO_MS) == 0);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(ops_header_is(&r, "Connection", "close"));
    CU_ASSERT(hs_closed_quietly(c, HS_IO_MS));
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT(hs_now_ms() - t0 < 5000); /* the last connection gone: no wait for the deadline */
    json_decref(line);
    line = hs_log_wait(s, "access", "request_id", "idle-1", HS_IO_MS);
    CU_ASSERT(line != NULL && hs_json_int(line, "status", 0) == 200);
out:
    json_decref(line);
    hs_resp_fini(&r);
    hs_close(c);
    HS_FINISH(s);
}

#define SD_STOP_KEPT   20 /* keep-alive connections whose next request arrives while stopped */
#define SD_STOP_NEW    80 /* connections made (accept backlog) while stopped, each with a request */
#define SD_STOP_SILENT 5  /* connections made while stopped that send nothing */

/* Requests reach the machine while the server is stopped (SIGSTOP): unread on kept-alive
 * connections, and on connections still in the accept backlog. Then the stop signals in `sigs`
 * (all pending before SIGCONT, so the process sees them together) and SIGCONT. Every connection
 * that sent a request gets an HTTP answer (served, or 503 shutting_down with Connection: close),
 * none is reset; the silent ones are closed; the process exits 0. */
static void sd_stopped_requests(const char *const *over, const int *sigs, size_t nsigs)
{
    enum { N = SD_STOP_KEPT + SD_STOP_NEW + SD_STOP_SILENT };
    struct hs_server *s = hs_start(over);
    struct hs_conn *c[N];
    struct hs_resp r = {0};
    unsigned answered = 0, refused = 0, stopped = 0;
    memset(c, 0, sizeof(c));
    HS_CHECK(s != NULL);
    for (int i = 0; i < SD_STOP_KEPT; i++) {
        HS_CHECK((c[i] = hs_connect(s)) != NULL);
        HS_CHECK(hs_exchange(c[i], "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0);
    }
    HS_CHECK(kill(hs_pid(s), SIGSTOP) == 0);
    stopped = 1;
    HS_CHECK(ops_wait_state(s, 'T', HS_IO_MS));
    for (int i = SD_STOP_KEPT; i < N; i++) /* the kernel completes the handshakes */
        HS_CHECK((c[i] = hs_connect(s)) != NULL);
    for (int i = 0; i < SD_STOP_KEPT + SD_STOP_NEW; i++)
        HS_CHECK(hs_send_str(c[i], "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 0);
    for (size_t i = 0; i < nsigs; i++)
        HS_CHECK(kill(hs_pid(s), sigs[i]) == 0);
    HS_CHECK(kill(hs_pid(s), SIGCONT) == 0);
    stopped = 0;
    for (int i = 0; i < SD_STOP_KEPT + SD_STOP_NEW; i++) {
        int rc = hs_read_response(c[i], &r, false, HS_STOP_MS);
        if (rc != 0) {
            if (answered == (unsigned)i) /* the first one only */
                fprintf(stderr, "\n  connection %d: no answer (%s)\n", i, strerror(-rc));
            continue;
        }
        answered++;
        if (r.status != 200) {
            CU_ASSERT(hs_resp_is_error(&r, 503, "shutting_down"));
            CU_ASSERT(ops_header_is(&r, "Connection", "close"));
            refused++;
        }
    }
    CU_ASSERT_EQUAL(answered, SD_STOP_KEPT + SD_STOP_NEW);
    for (int i = SD_STOP_KEPT + SD_STOP_NEW; i < N; i++)
        CU_ASSERT(hs_read_until_close(c[i], HS_STOP_MS) == 0);
    HS_CHECK(hs_wait_exit(s, HS_STOP_MS));
    CU_ASSERT_EQUAL(hs_stop(s), 0);
    fprintf(stderr, " [%u answered, %u of them 503] ", answered, refused);
out:
    if (stopped)
        (void)kill(hs_pid(s), SIGCONT);
    hs_resp_fini(&r);
    for (int i = 0; i < N; i++)
        hs_close(c[i]);
    HS_FINISH(s);
}

/* drain_timeout_ms = 0: the drain is over as soon as it begins. */
static void test_shutdown_stopped_no_drain(void)
{
    const char *const over[] = {"shutdown.drain_timeout_ms=0", NULL};
    const int sigs[] = {SIGTERM};
    sd_stopped_requests(over, sigs, 1);
}

/* A second stop signal right behind the first (SIGINT and SIGTERM both pending). */
static void test_shutdown_stopped_second_signal(void)
{
    const char *const over[] = {"shutdown.drain_timeout_ms=60000", NULL};
    const int sigs[] = {SIGTERM, SIGINT};
    sd_stopped_requests(over, sigs, 2);
}

int suite_integration_shutdown(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_shutdown_under_load),
        SPINDLE_TEST(test_shutdown_deadline_cancels),
        SPINDLE_TEST(test_shutdown_second_signal),
        SPINDLE_TEST(test_shutdown_idle_connection_served),
        SPINDLE_TEST(test_shutdown_stopped_no_drain),
        SPINDLE_TEST(test_shutdown_stopped_second_signal),
    };
    return SPINDLE_SUITE_ADD("integration_shutdown", NULL, NULL, tests);
}
