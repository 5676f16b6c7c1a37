/* test_reload.c - SIGHUP reload of the real server: a valid file changes behaviour at once (a job
 * limit, the log level) and reports keys that need a restart; an invalid file changes nothing and
 * is reported with FILE:LINE.
 *
 * The configuration file is rewritten (ops_config_rewrite: the harness's fixed settings plus the
 * test's) and the server signalled; the test then waits for the reload's own log line, which the
 * loop writes after the new settings are in force, so the next request sees them.
 */
#include <CUnit/CUnit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/integration/harness.h"
#include "tests/integration/ops.h"
#include "tests/suite.h"

int suite_integration_reload(void);

/* POST /v1/jobs/spin?ms=MS with request id `id`; returns the status, -1 on a transport error. */
static int rl_spin(struct hs_conn *c, unsigned ms, const char *id)
{
    char req[256];
    struct hs_resp r = {0};
    snprintf(req, sizeof(req),
             "POST /v1/jobs/spin?ms=%u HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n"
             "Content-Length: 0\r\n\r\n",
             ms, id);
    int status = hs_exchange(c, req, &r) == 0 ? r.status : -1;
    if (status == 400)
        CU_ASSERT(hs_resp_is_error(&r, 400, "bad_param"));
    hs_resp_fini(&r);
    return status;
}

/* Send SIGHUP and wait for the n-th line with msg `msg` (n counts from 1). */
static bool rl_hup_and_wait(struct hs_server *s, const char *msg, size_t n)
{
    return kill(hs_pid(s), SIGHUP) == 0 && hs_log_wait_count(s, msg, n, HS_IO_MS) >= n;
}

/* The last line with msg `msg` (new reference) or NULL. */
static json_t *rl_last(const struct hs_server *s, const char *msg)
{
    json_t *lines = hs_log_lines(s), *found = NULL, *line;
    size_t i;
    json_array_foreach(lines, i, line)
    {
        const char *m = hs_json_str(line, "msg");
        if (m != NULL && strcmp(m, msg) == 0)
            found = line;
    }
    json_incref(found);
    json_decref(lines);
    return found;
}

static size_t rl_access_count(const struct hs_server *s, const char *id)
{
    json_t *lines = hs_log_lines(s);
    size_t n = ops_count(lines, "access", id);
    json_decref(lines);
    return n;
}

/* A valid file: limits.max_spin_ms shrinks (a request allowed before is refused after), the log
 * level goes to warn (access lines stop) and back; pool.workers is reported as needing a
 * restart. */
static void test_reload_valid_applies_live_keys(void)
{
    const char *const over[] = {"limits.max_spin_ms=50", "pool.workers=2", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    CU_ASSERT_EQUAL(rl_spin(c, 30, "rl-before"), 200);

    HS_CHECK(ops_config_rewrite(s, "warn", "[limits]\nmax_spin_ms = 20\n[pool]\nworkers = 3\n") ==
             0);
    HS_CHECK(rl_hup_and_wait(s,
                             "configuration keys changed that need a restart: running "
                             "values kept",
                             1));
    CU_ASSERT_EQUAL(rl_spin(c, 30, "rl-after"), 400);
    CU_ASSERT_EQUAL(rl_spin(c, 10, "rl-quiet"), 200);

    /* back to debug: the report line is written again, and access lines come back */
    HS_CHECK(ops_config_rewrite(s, "debug", "[limits]\nmax_spin_ms = 20\n[pool]\nworkers = 2\n") ==
             0);
    /* the first reload's report was written at info with the level already warn: skipped */
    HS_CHECK(rl_hup_and_wait(s, "configuration reloaded", 1));
    line = rl_last(s, "configuration reloaded");
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "changed"), "log.level");
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "restart_required"), "");
    CU_ASSERT_EQUAL(rl_spin(c, 10, "rl-loud"), 200);
    json_decref(hs_log_wait(s, "access", "request_id", "rl-loud", HS_IO_MS));
    CU_ASSERT_EQUAL(rl_access_count(s, "rl-loud"), 1);
    CU_ASSERT_EQUAL(rl_access_count(s, "rl-before"), 1);
    CU_ASSERT_EQUAL(rl_access_count(s, "rl-after"), 0); /* written at level warn: skipped */
    CU_ASSERT_EQUAL(rl_access_count(s, "rl-quiet"), 0);
    json_decref(line);
    line = NULL;
    /* the first reload's warning was written */
    line = rl_last(s, "configuration keys changed that need a restart: running values kept");
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "keys"), "pool.workers");
out:
    json_decref(line);
    hs_close(c);
    HS_FINISH(s);
}

/* A command-line override outlives a reload: started with --log-level debug over a file that
 * says warn, the server stays at debug when the file is re-read (now saying error), so the
 * reload's own info line and later access lines are written. */
static void test_reload_keeps_command_line_overrides(void)
{
    const char *const over[] = {"log.level=warn", NULL};
    const char *const args[] = {"--log-level", "debug", NULL};
    struct hs_server *s = hs_start_args(over, args);
    struct hs_conn *c = NULL;
    json_t *line = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    CU_ASSERT_EQUAL(rl_spin(c, 1, "cl-before"), 200);
    json_decref(hs_log_wait(s, "access", "request_id", "cl-before", HS_IO_MS));
    CU_ASSERT_EQUAL(rl_access_count(s, "cl-before"), 1); /* debug, not the file's warn */

    HS_CHECK(ops_config_rewrite(s, "error", NULL) == 0);
    HS_CHECK(rl_hup_and_wait(s, "configuration reloaded", 1));
    line = rl_last(s, "configuration reloaded");
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "changed"), ""); /* the level did not move */
    CU_ASSERT_EQUAL(rl_spin(c, 1, "cl-after"), 200);
    json_decref(hs_log_wait(s, "access", "request_id", "cl-after", HS_IO_MS));
    CU_ASSERT_EQUAL(rl_access_count(s, "cl-after"), 1);
out:
    json_decref(line);
    hs_close(c);
    HS_FINISH(s);
}

/* An invalid file: an error line naming FILE:LINE and the key, and nothing changes (the limit, the
 * level, serving). */
static void test_reload_invalid_changes_nothing(void)
{
    const char *const over[] = {"limits.max_spin_ms=50", NULL};
    struct hs_server *s = hs_start(over);
    struct hs_conn *c = NULL;
    json_t *line = NULL;
    char *conf = NULL;
    HS_CHECK(s != NULL);
    HS_CHECK((c = hs_connect(s)) != NULL);
    /* the rewritten file: [server] lines 1-2, [log] 4-7, [limits] 9, the bad value on 11 */
    HS_CHECK(ops_config_rewrite(s, "error", "[limits]\nmax_spin_ms = 20\nmax_headers = lots\n") ==
             0);
    HS_CHECK(rl_hup_and_wait(s, "configuration reload failed: nothing changed", 1));
    line = rl_last(s, "configuration reload failed: nothing changed");
    HS_CHECK(line != NULL);
    CU_ASSERT_STRING_EQUAL(hs_json_str(line, "level"), "error");
    conf = ops_path(hs_dir(s), "spindle.conf:11:");
    const char *err = hs_json_str(line, "error");
    HS_CHECK(err != NULL && conf != NULL);
    CU_ASSERT(strstr(err, conf) != NULL);
    CU_ASSERT(strstr(err, "max_headers") != NULL);
    CU_ASSERT_EQUAL(rl_spin(c, 30, "rl-still"), 200); /* max_spin_ms is still 50 */
    json_decref(hs_log_wait(s, "access", "request_id", "rl-still", HS_IO_MS));
    CU_ASSERT_EQUAL(rl_access_count(s, "rl-still"), 1); /* the level is still debug */
out:
    free(conf);
    json_decref(line);
    hs_close(c);
    HS_FINISH(s);
}

int suite_integration_reload(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_reload_valid_applies_live_keys),
        SPINDLE_TEST(test_reload_keeps_command_line_overrides),
        SPINDLE_TEST(test_reload_invalid_changes_nothing),
    };
    return SPINDLE_SUITE_ADD("integration_reload", NULL, NULL, tests);
}
