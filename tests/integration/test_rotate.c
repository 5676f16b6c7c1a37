/* test_rotate.c - log rotation of the real server: rename the log file, signal, keep writing.
 *
 * SIGUSR1 (what logrotate's postrotate sends) and SIGHUP both make the server reopen its log file
 * by path. While client threads keep requests (and so access lines) coming, the file is renamed
 * and the signal sent; afterwards both files must hold only complete JSON lines, and together an
 * access line for every answered request, each exactly once.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/integration/proc.h"
#include "tests/suite.h"

int suite_integration_rotate(void);

#define RT_CLIENTS  4
#define RT_REQUESTS 150 /* per client */

struct rt_client {
    pthread_t th;
    int port;
    unsigned idx;
    sem_t *progress;
    unsigned answered, failed;
};

static void *rt_client_main(void *arg)
{
    struct rt_client *cl = arg;
    struct hs_conn *c = hs_connect_host("127.0.0.1", cl->port, HS_IO_MS);
    struct hs_resp r = {0};
    for (unsigned n = 0; c != NULL && n < RT_REQUESTS; n++) {
        char req[160];
        snprintf(req, sizeof(req),
                 "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: rt-%u-%u\r\n\r\n", cl->idx, n);
        if (hs_exchange(c, req, &r) != 0 || r.status != 200) {
            cl->failed++;
            break;
        }
        cl->answered++;
        sem_post(cl->progress);
    }
    if (c == NULL)
        cl->failed++;
    hs_resp_fini(&r);
    hs_close(c);
    return NULL;
}

static bool rt_sem_wait_n(sem_t *sem, unsigned n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += HS_STOP_MS / 1000;
    for (unsigned i = 0; i < n; i++) {
        while (sem_timedwait(sem, &ts) != 0) {
            if (errno != EINTR)
                return false;
        }
    }
    return true;
}

/* Both files read strictly: complete, and how many access lines of ours each holds. */
static void rt_check_files(const char *old_path, const char *new_path, unsigned answered)
{
    bool old_ok = false, new_ok = false;
    json_t *old_lines = ops_log_read(old_path, &old_ok);
    json_t *new_lines = ops_log_read(new_path, &new_ok);
    CU_ASSERT(old_lines != NULL && new_lines != NULL);
    CU_ASSERT(old_ok);
    CU_ASSERT(new_ok);
    size_t n_old = ops_count(old_lines, "access", "rt-");
    size_t n_new = ops_count(new_lines, "access", "rt-");
    CU_ASSERT(n_old > 0);
    CU_ASSERT(n_new > 0);
    CU_ASSERT_EQUAL(n_old + n_new, answered);
    CU_ASSERT_EQUAL(ops_count(old_lines, "spindle started", NULL), 1);
    CU_ASSERT_EQUAL(ops_count(new_lines, "spindle stopped", NULL), 1);
    json_decref(old_lines);
    json_decref(new_lines);
}

/* Rename + SIGUSR1 under load: nothing lost, nothing cut, nothing twice. */
static void test_rotate_usr1_under_load(void)
{
    const char *const over[] = {"log.level=info", NULL};
    struct hs_server *s = hs_start(over);
    struct rt_client cl[RT_CLIENTS];
    unsigned started = 0, answered = 0;
    char *log_path = NULL, *old_path = NULL;
    sem_t progress;
    json_t *line = NULL;
    memset(cl, 0, sizeof(cl));
    CU_ASSERT_FATAL(sem_init(&progress, 0, 0) == 0);
    HS_CHECK(s != NULL);
    log_path = ops_path(hs_dir(s), "spindle.log");
    old_path = ops_path(hs_dir(s), "spindle.log.1");
    HS_CHECK(log_path != NULL && old_path != NULL);
    for (unsigned i = 0; i < RT_CLIENTS; i++) {
        cl[i] = (struct rt_client){.port = hs_port(s), .idx = i, .progress = &progress};
        HS_CHECK(pthread_create(&cl[i].th, NULL, rt_client_main, &cl[i]) == 0);
        started++;
    }
    HS_CHECK(rt_sem_wait_n(&progress, RT_CLIENTS * RT_REQUESTS / 4));
    HS_CHECK(rename(log_path, old_path) == 0);
    HS_CHECK(kill(hs_pid(s), SIGUSR1) == 0);
    HS_CHECK((line = hs_log_wait(s, "log reopened", NULL, NULL, HS_IO_MS)) != NULL);
out:
    for (unsigned i = 0; i < started; i++) {
        pthread_join(cl[i].th, NULL);
        CU_ASSERT_EQUAL(cl[i].failed, 0);
        answered += cl[i].answered;
    }
    if (s != NULL && line != NULL) {
        CU_ASSERT_EQUAL(answered, RT_CLIENTS * RT_REQUESTS);
        CU_ASSERT_EQUAL(hs_stop(s), 0);
        rt_check_files(old_path, log_path, answered);
    }
    json_decref(line);
    free(log_path);
    free(old_path);
    sem_destroy(&progress);
    HS_FINISH(s);
}

/* SIGHUP reopens the log as well (and reloads): the reload's line is in the new file. */
static void test_rotate_hup_reopens(void)
{
    struct hs_server *s = hs_start(NULL);
    char *log_path = NULL, *old_path = NULL;
    json_t *line = NULL, *old_lines = NULL;
    bool complete = false;
    HS_CHECK(s != NULL);
    log_path = ops_path(hs_dir(s), "spindle.log");
    old_path = ops_path(hs_dir(s), "spindle.log.1");
    HS_CHECK(log_path != NULL && old_path != NULL);
    HS_CHECK(rename(log_path, old_path) == 0);
    HS_CHECK(kill(hs_pid(s), SIGHUP) == 0);
    HS_CHECK((line = hs_log_wait(s, "configuration reloaded", NULL, NULL, HS_IO_MS)) != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "changed"), "");
    old_lines = ops_log_read(old_path, &complete);
    CU_ASSERT(complete);
    CU_ASSERT_EQUAL(ops_count(old_lines, "spindle started", NULL), 1);
    CU_ASSERT_EQUAL(ops_count(old_lines, "configuration reloaded", NULL), 0);
out:
    json_decref(line);
    json_decref(old_lines);
    free(log_path);
    free(old_path);
    HS_FINISH(s);
}

/* The string field `key` of `line` is `want` (absent is not). */
static bool rt_str_is(const json_t *line, const char *key, const char *want)
{
    const char *v = hs_json_str(line, key);
    return v != NULL && strcmp(v, want) == 0;
}

/* A reopen that fails (the directory was renamed away) says which path it could not open; the
 * line goes to the file still open. */
static void test_rotate_reopen_failure_names_the_path(void)
{
    char *dir = NULL, *sub = NULL, *moved = NULL, *log_path = NULL, spec[1200];
    struct hs_server *s = NULL;
    json_t *line = NULL;
    bool renamed = false;
    HS_CHECK((dir = proc_tmpdir_new()) != NULL);
    HS_CHECK((sub = ops_path(dir, "logs")) != NULL && (moved = ops_path(dir, "logs.old")) != NULL);
    HS_CHECK(mkdir(sub, 0700) == 0);
    HS_CHECK((log_path = ops_path(sub, "spindle.log")) != NULL);
    snprintf(spec, sizeof(spec), "log.file=%s", log_path);
    const char *const over[] = {spec, NULL};
    HS_CHECK((s = hs_start(over)) != NULL);
    HS_CHECK(rename(sub, moved) == 0);
    renamed = true;
    HS_CHECK(kill(hs_pid(s), SIGUSR1) == 0);
    /* Found in the file at its old place; it is read from the configured path once back. */
    HS_CHECK(hs_log_wait(s, "log reopened", NULL, NULL, 0) == NULL);
    long long until = hs_now_ms() + HS_IO_MS;
    json_t *lines = NULL;
    char *moved_log = ops_path(moved, "spindle.log");
    while (line == NULL && moved_log != NULL && hs_now_ms() < until) {
        lines = ops_log_read(moved_log, &(bool){false});
        size_t i;
        json_t *l;
        json_array_foreach(lines, i, l)
        {
            const char *msg = hs_json_str(l, "msg");
            if (line == NULL && msg != NULL && strcmp(msg, "log reopen failed") == 0)
                line = json_incref(l);
        }
        json_decref(lines);
    }
    free(moved_log);
    HS_CHECK(line != NULL);
    CU_ASSERT(rt_str_is(line, "path", log_path));
    CU_ASSERT(rt_str_is(line, "error", "No such file or directory"));
out:
    if (renamed)
        CU_ASSERT_EQUAL(rename(moved, sub), 0);
    json_decref(line);
    HS_FINISH(s);
    free(log_path);
    free(sub);
    free(moved);
    (void)proc_tmpdir_free(dir);
}

int suite_integration_rotate(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_rotate_usr1_under_load),
        SPINDLE_TEST(test_rotate_hup_reopens),
        SPINDLE_TEST(test_rotate_reopen_failure_names_the_path),
    };
    return SPINDLE_SUITE_ADD("integration_rotate", NULL, NULL, tests);
}
