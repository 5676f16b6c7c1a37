/* test_batch_json.c - the JSON side of POST /v1/batch (server/api/batch_json.c): parsing and
 * validating the array of sub-jobs, the modes' settling rules, and the answers they write. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/batch.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_api_batch_json(void);

static struct srv_cfg bj_cfg(void)
{
    struct srv_cfg cfg = jt_limits();
    cfg.max_batch = 4;
    cfg.max_timeout_ms = 1000;
    cfg.max_query_params = 3;
    return cfg;
}

/* Parse `text`; expects -EINVAL with `code` and a message containing `needle`. */
static void bj_refused(const char *text, const char *code, const char *needle)
{
    struct srv_cfg cfg = bj_cfg();
    struct srv_batch_spec spec;
    const char *got = NULL;
    char err[SRV_BATCH_ERR_MAX];
    int rc = srv_batch_parse(text, strlen(text), &cfg, &spec, &got, err, sizeof(err));
    CU_ASSERT_EQUAL(rc, -EINVAL);
    if (rc != -EINVAL) {
        srv_batch_spec_fini(&spec);
        return;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_STRING_EQUAL(got, code);
    if (strstr(err, needle) == NULL)
        fprintf(stderr, "\n  %s: message '%s' lacks '%s'\n", text, err, needle);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
    CU_ASSERT_EQUAL(spec.count, 0); /* nothing left to free */
    CU_ASSERT_PTR_NULL(spec.items);
    CU_ASSERT_PTR_NULL(spec.json);
}

static void test_srv_batch_mode_parse_names(void)
{
    static const char *const names[] = {"all", "all_settled", "any", "race"};
    for (size_t i = 0; i < JT_N(names); i++) {
        enum srv_batch_mode m;
        CU_ASSERT_EQUAL(srv_batch_mode_parse(names[i], strlen(names[i]), &m), 0);
        CU_ASSERT_EQUAL((size_t)m, i);
        CU_ASSERT_STRING_EQUAL(srv_batch_mode_name(m), names[i]);
    }
    enum srv_batch_mode m;
    CU_ASSERT_EQUAL(srv_batch_mode_parse("al", 2, &m), -EINVAL);
    CU_ASSERT_EQUAL(srv_batch_mode_parse("ALL", 3, &m), -EINVAL);
    CU_ASSERT_EQUAL(srv_batch_mode_parse("all_settledx", 12, &m), -EINVAL);
    CU_ASSERT_EQUAL(srv_batch_mode_parse("", 0, &m), -EINVAL);
    CU_ASSERT_PTR_NULL(srv_batch_mode_name((enum srv_batch_mode)9));
}

static void test_srv_batch_parse_valid(void)
{
    const char *text = "[{\"kind\":\"primes\",\"params\":{\"n\":100}},"
                       "{\"kind\":\"spin\",\"params\":{\"ms\":\"5\"},\"timeout_ms\":250},"
                       "{\"kind\":\"sha256\",\"params\":{\"rounds\":1},\"body\":\"abc\"},"
                       "{\"kind\":\"noop\"}]";
    struct srv_cfg cfg = bj_cfg();
    struct srv_batch_spec spec;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX] = "";
    CU_ASSERT_EQUAL_FATAL(srv_batch_parse(text, strlen(text), &cfg, &spec, &code, err, sizeof(err)),
                          0);
    CU_ASSERT_EQUAL_FATAL(spec.count, 4);
    CU_ASSERT_STRING_EQUAL(spec.items[0].kind->name, "primes");
    CU_ASSERT_STRING_EQUAL(spec.items[1].kind->name, "spin");
    CU_ASSERT_STRING_EQUAL(spec.items[2].kind->name, "sha256");
    CU_ASSERT_STRING_EQUAL(spec.items[3].kind->name, "noop");
    CU_ASSERT_EQUAL(spec.items[0].timeout_ms, 0);
    CU_ASSERT_EQUAL(spec.items[1].timeout_ms, 250);
    for (size_t i = 0; i < 3; i++)
        CU_ASSERT_PTR_NOT_NULL(spec.items[i].job.state);
    CU_ASSERT_PTR_NULL(spec.items[3].job.state); /* noop keeps nothing */

    /* the jobs really hold what was asked: run the primes and sha256 items */
    struct srv_job_answer ans;
    CU_ASSERT_EQUAL(srv_job_run(&spec.items[0].job), 0);
    srv_job_outcome(&spec.items[0].job, &ans);
    CU_ASSERT(ans.len == strlen("{\"n\":100,\"count\":25}") &&
              memcmp(ans.body, "{\"n\":100,\"count\":25}", ans.len) == 0);
    CU_ASSERT_EQUAL(srv_job_run(&spec.items[2].job), 0);
    srv_job_outcome(&spec.items[2].job, &ans);
    CU_ASSERT_PTR_NOT_NULL(memmem(
        ans.body, ans.len, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 64));

    /* fini finishes every job, run or not */
    srv_batch_spec_fini(&spec);
    CU_ASSERT_EQUAL(spec.count, 0);
}

static void test_srv_batch_parse_shape_errors(void)
{
    bj_refused("", "bad_json", "JSON array");
    bj_refused("[{\"kind\":\"noop\"}", "bad_json", "line 1");
    bj_refused("[{\"kind\":\"noop\",\"kind\":\"spin\"}]", "bad_json", "duplicate");
    bj_refused("{\"kind\":\"noop\"}", "bad_batch", "JSON array");
    bj_refused("[]", "bad_batch", "empty");
    bj_refused("[{\"kind\":\"noop\"},{\"kind\":\"noop\"},{\"kind\":\"noop\"},{\"kind\":\"noop\"},"
               "{\"kind\":\"noop\"}]",
               "bad_batch", "at most 4 jobs, got 5");
    bj_refused("[{\"kind\":\"noop\"},7]", "bad_batch", "jobs[1] must be an object");
    bj_refused("[{\"params\":{}}]", "bad_batch", "jobs[0]: missing member 'kind'");
    bj_refused("[{\"kind\":5}]", "bad_batch", "kind must be a string");
    bj_refused("[{\"kind\":\"nope\"}]", "bad_batch", "jobs[0]: unknown kind 'nope'");
    bj_refused("[{\"kind\":\"noop\",\"extra\":1}]", "bad_batch", "unknown member 'extra'");
    bj_refused("[{\"kind\":\"noop\",\"params\":[]}]", "bad_batch", "params must be an object");
    bj_refused("[{\"kind\":\"spin\",\"params\":{\"ms\":true}}]", "bad_batch",
               "params.ms must be a string or an integer");
    bj_refused("[{\"kind\":\"spin\",\"params\":{\"ms\":1.5}}]", "bad_batch", "params.ms");
    bj_refused("[{\"kind\":\"spin\",\"params\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4}}]", "bad_batch",
               "at most 3 params");
    bj_refused("[{\"kind\":\"noop\",\"body\":\"x\"}]", "bad_batch", "kind 'noop' takes no body");
    bj_refused("[{\"kind\":\"sha256\",\"body\":5}]", "bad_batch", "body must be a string");
    bj_refused("[{\"kind\":\"noop\",\"timeout_ms\":0}]", "bad_batch",
               "timeout_ms must be an integer between 1 and 1000");
    bj_refused("[{\"kind\":\"noop\",\"timeout_ms\":1001}]", "bad_batch", "between 1 and 1000");
    bj_refused("[{\"kind\":\"noop\",\"timeout_ms\":\"5\"}]", "bad_batch", "timeout_ms");
}

static void test_srv_batch_parse_kind_errors(void)
{
    /* the kind's own parse decides, with the item named */
    bj_refused("[{\"kind\":\"noop\"},{\"kind\":\"spin\",\"params\":{\"ms\":-1}}]", "bad_param",
               "jobs[1] (spin): ms must be an integer between 0 and 60000");
    bj_refused("[{\"kind\":\"spin\"}]", "bad_param", "jobs[0] (spin): missing required parameter");
    bj_refused("[{\"kind\":\"spin\",\"params\":{\"ms\":1,\"x\":2}}]", "bad_param",
               "unknown parameter 'x'");
    bj_refused("[{\"kind\":\"compress\",\"params\":{\"codec\":\"lz4\"},\"body\":\"x\"}]",
               "bad_param", "jobs[0] (compress): codec must be zstd or gzip");
}

/* ---- settling -------------------------------------------------------------------------------- */

static struct srv_batch_outcome bj_out(enum srv_batch_status s)
{
    struct srv_batch_outcome o;
    memset(&o, 0, sizeof(o));
    o.status = s;
    o.kind = "spin";
    if (s == SRV_BATCH_FAILED) {
        o.http_status = 504;
        o.code = "deadline_exceeded";
        snprintf(o.message, sizeof(o.message), "its timeout_ms of 5 ms passed");
        o.reason = CTX_REASON_DEADLINE;
    } else if (s == SRV_BATCH_OK) {
        o.content_type = "application/json";
        o.body = "{\"ms\":5}";
        o.len = strlen(o.body);
    } else if (s == SRV_BATCH_CANCELLED) {
        o.reason = CTX_REASON_SIBLING_WON;
    }
    return o;
}

static void test_srv_batch_settle_modes(void)
{
    struct srv_batch_outcome ok = bj_out(SRV_BATCH_OK), failed = bj_out(SRV_BATCH_FAILED);
    enum ctx_reason why = CTX_REASON_NONE;
    size_t d = SRV_BATCH_NONE;

    /* all: a success decides nothing, the first failure decides and cancels the rest */
    CU_ASSERT_FALSE(srv_batch_settle(SRV_BATCH_ALL, &ok, 0, &d, &why));
    CU_ASSERT_EQUAL(d, SRV_BATCH_NONE);
    CU_ASSERT_TRUE(srv_batch_settle(SRV_BATCH_ALL, &failed, 2, &d, &why));
    CU_ASSERT_EQUAL(d, 2);
    CU_ASSERT_EQUAL(why, CTX_REASON_SIBLING_FAILED);
    CU_ASSERT_FALSE(srv_batch_settle(SRV_BATCH_ALL, &failed, 1, &d, &why)); /* once */
    CU_ASSERT_EQUAL(d, 2);

    /* all_settled never cancels */
    d = SRV_BATCH_NONE;
    CU_ASSERT_FALSE(srv_batch_settle(SRV_BATCH_ALL_SETTLED, &failed, 0, &d, &why));
    CU_ASSERT_FALSE(srv_batch_settle(SRV_BATCH_ALL_SETTLED, &ok, 1, &d, &why));
    CU_ASSERT_EQUAL(d, SRV_BATCH_NONE);

    /* any: failures wait, the first success wins */
    CU_ASSERT_FALSE(srv_batch_settle(SRV_BATCH_ANY, &failed, 0, &d, &why));
    CU_ASSERT_TRUE(srv_batch_settle(SRV_BATCH_ANY, &ok, 1, &d, &why));
    CU_ASSERT_EQUAL(d, 1);
    CU_ASSERT_EQUAL(why, CTX_REASON_SIBLING_WON);

    /* race: the first to finish, either way */
    d = SRV_BATCH_NONE;
    CU_ASSERT_TRUE(srv_batch_settle(SRV_BATCH_RACE, &failed, 3, &d, &why));
    CU_ASSERT_EQUAL(d, 3);
    CU_ASSERT_EQUAL(why, CTX_REASON_SIBLING_FAILED);
    d = SRV_BATCH_NONE;
    CU_ASSERT_TRUE(srv_batch_settle(SRV_BATCH_RACE, &ok, 0, &d, &why));
    CU_ASSERT_EQUAL(why, CTX_REASON_SIBLING_WON);
    CU_ASSERT_FALSE(srv_batch_settle(SRV_BATCH_RACE, &ok, 1, &d, &why));
    CU_ASSERT_EQUAL(d, 0);
}

/* ---- answers --------------------------------------------------------------------------------- */

/* Build the answer and parse it back. */
static json_t *bj_answer(enum srv_batch_mode mode, const struct srv_batch_outcome *o, size_t n,
                         size_t decided, int *status)
{
    char *body = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(srv_batch_answer(mode, o, n, decided, "rid-1", status, &body, &len), 0);
    json_t *j = json_loadb(body, len, 0, NULL);
    free(body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    return j;
}

static const char *bj_str(const json_t *j, const char *path1, const char *path2)
{
    const json_t *v = json_object_get(j, path1);
    if (path2 != NULL)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

static void test_srv_batch_answer_all(void)
{
    struct srv_batch_outcome o[3] = {bj_out(SRV_BATCH_OK), bj_out(SRV_BATCH_OK),
                                     bj_out(SRV_BATCH_OK)};
    o[1].content_type = "application/zstd"; /* not JSON: base64 */
    o[1].body = "\x28\xb5\x2f\xfd";
    o[1].len = 4;
    o[2].queue_ns = 1500000;
    o[2].run_ns = 2250000;
    int status = 0;
    json_t *j = bj_answer(SRV_BATCH_ALL, o, 3, SRV_BATCH_NONE, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_STRING_EQUAL(bj_str(j, "mode", NULL), "all");
    CU_ASSERT_PTR_NULL(json_object_get(j, "error"));
    json_t *r = json_object_get(j, "results");
    CU_ASSERT_EQUAL_FATAL(json_array_size(r), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_array_get(r, 2), "index")), 2);
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 0), "status", NULL), "ok");
    CU_ASSERT_EQUAL(
        json_integer_value(json_object_get(json_object_get(json_array_get(r, 0), "result"), "ms")),
        5);
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 1), "result_base64", NULL), "KLUv/Q==");
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 1), "content_type", NULL), "application/zstd");
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(json_array_get(r, 2), "queue_ms")), 1.5,
                           1e-9);
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(json_array_get(r, 2), "run_ms")), 2.25,
                           1e-9);
    json_decref(j);

    /* the failure that decided is the answer; the others show what happened to them */
    o[0] = bj_out(SRV_BATCH_CANCELLED);
    o[0].reason = CTX_REASON_SIBLING_FAILED;
    o[1] = bj_out(SRV_BATCH_FAILED);
    j = bj_answer(SRV_BATCH_ALL, o, 3, 1, &status);
    CU_ASSERT_EQUAL(status, 504);
    CU_ASSERT_STRING_EQUAL(bj_str(j, "error", "code"), "deadline_exceeded");
    CU_ASSERT_STRING_EQUAL(bj_str(j, "error", "message"),
                           "jobs[1] (spin): its timeout_ms of 5 ms passed");
    CU_ASSERT_STRING_EQUAL(bj_str(j, "error", "request_id"), "rid-1");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "error"), "index")), 1);
    r = json_object_get(j, "results");
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 0), "status", NULL), "cancelled");
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 0), "reason", NULL), "sibling_failed");
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 1), "status", NULL), "failed");
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(r, 1), "reason", NULL), "deadline");
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(json_array_get(r, 1), "error"), "code")),
        "deadline_exceeded");
    json_decref(j);
}

static void test_srv_batch_answer_all_settled(void)
{
    struct srv_batch_outcome o[3] = {bj_out(SRV_BATCH_FAILED), bj_out(SRV_BATCH_OK),
                                     bj_out(SRV_BATCH_OK)};
    int status = 0;
    json_t *j = bj_answer(SRV_BATCH_ALL_SETTLED, o, 3, SRV_BATCH_NONE, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "succeeded")), 2);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "failed")), 1);
    CU_ASSERT_PTR_NULL(json_object_get(j, "error"));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 3);
    json_decref(j);
}

static void test_srv_batch_answer_any(void)
{
    struct srv_batch_outcome o[3] = {bj_out(SRV_BATCH_FAILED), bj_out(SRV_BATCH_OK),
                                     bj_out(SRV_BATCH_CANCELLED)};
    int status = 0;
    json_t *j = bj_answer(SRV_BATCH_ANY, o, 3, 1, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "index")), 1);
    CU_ASSERT_STRING_EQUAL(bj_str(j, "kind", NULL), "spin");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "result"), "ms")), 5);
    json_decref(j);

    /* every one failed: all_failed lists each; one shared status is kept */
    o[1] = bj_out(SRV_BATCH_FAILED);
    o[2] = bj_out(SRV_BATCH_FAILED);
    j = bj_answer(SRV_BATCH_ANY, o, 3, SRV_BATCH_NONE, &status);
    CU_ASSERT_EQUAL(status, 504);
    CU_ASSERT_STRING_EQUAL(bj_str(j, "error", "code"), "all_failed");
    json_t *errors = json_object_get(json_object_get(j, "error"), "errors");
    CU_ASSERT_EQUAL_FATAL(json_array_size(errors), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_array_get(errors, 2), "index")), 2);
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(errors, 0), "code", NULL), "deadline_exceeded");
    json_decref(j);

    /* different statuses: 500 */
    o[2].http_status = 500;
    o[2].code = "job_failed";
    j = bj_answer(SRV_BATCH_ANY, o, 3, SRV_BATCH_NONE, &status);
    CU_ASSERT_EQUAL(status, 500);
    json_decref(j);
}

static void test_srv_batch_answer_race(void)
{
    struct srv_batch_outcome o[2] = {bj_out(SRV_BATCH_CANCELLED), bj_out(SRV_BATCH_FAILED)};
    o[0].reason = CTX_REASON_SIBLING_FAILED;
    int status = 0;
    json_t *j = bj_answer(SRV_BATCH_RACE, o, 2, 1, &status);
    CU_ASSERT_EQUAL(status, 504);
    CU_ASSERT_STRING_EQUAL(bj_str(j, "mode", NULL), "race");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "error"), "index")), 1);
    json_decref(j);

    o[0] = bj_out(SRV_BATCH_OK);
    o[1] = bj_out(SRV_BATCH_CANCELLED);
    j = bj_answer(SRV_BATCH_RACE, o, 2, 0, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "index")), 0);
    CU_ASSERT_STRING_EQUAL(bj_str(json_array_get(json_object_get(j, "results"), 1), "reason", NULL),
                           "sibling_won");
    json_decref(j);
}

/* Every seed and saved crasher of the batch fuzz target (tests/fuzz/batch*, first byte = mode)
 * through parse, each accepted sub-job's run and answer, and the answer of the batch, as
 * tests/fuzz/fuzz_batch.c does: under the asan build a regression is a sanitizer report. */
static void bj_replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n == 0)
        return;
    struct srv_cfg cfg = bj_cfg();
    cfg.max_spin_ms = 2;
    cfg.max_primes_n = 20000;
    cfg.max_sha256_rounds = 64;
    struct srv_batch_spec spec;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    if (srv_batch_parse(buf + 1, n - 1, &cfg, &spec, &code, err, sizeof(err)) != 0) {
        CU_ASSERT_PTR_NOT_NULL(code);
        return;
    }
    struct srv_batch_outcome *o = calloc(spec.count, sizeof(*o));
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    for (size_t i = 0; i < spec.count; i++) {
        o[i].kind = spec.items[i].kind->name;
        CU_ASSERT_EQUAL(srv_job_run(&spec.items[i].job), 0);
        srv_batch_outcome_ok(&o[i], &spec.items[i]);
    }
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    enum srv_batch_mode mode = (enum srv_batch_mode)((unsigned char)buf[0] % 4);
    CU_ASSERT_EQUAL(
        srv_batch_answer(mode, o, spec.count,
                         (mode == SRV_BATCH_ANY || mode == SRV_BATCH_RACE) ? 0 : SRV_BATCH_NONE,
                         "r", &status, &body, &len),
        0);
    CU_ASSERT_EQUAL(status, 200);
    free(body);
    free(o);
    srv_batch_spec_fini(&spec);
}

static void test_srv_batch_parse_fuzz_inputs(void)
{
    static const char *const dirs[] = {"tests/fuzz/batch", "tests/fuzz/batch-crashes"};
    size_t files = 0;
    for (size_t d = 0; d < JT_N(dirs); d++) {
        DIR *dir = opendir(dirs[d]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[512];
            snprintf(path, sizeof(path), "%s/%s", dirs[d], e->d_name);
            bj_replay_file(path);
            files++;
        }
        closedir(dir);
    }
    CU_ASSERT(files >= 5); /* the seeds and the saved crasher were found */
}

int suite_server_api_batch_json(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_batch_mode_parse_names),
        SPINDLE_TEST(test_srv_batch_parse_valid),
        SPINDLE_TEST(test_srv_batch_parse_shape_errors),
        SPINDLE_TEST(test_srv_batch_parse_kind_errors),
        SPINDLE_TEST(test_srv_batch_settle_modes),
        SPINDLE_TEST(test_srv_batch_answer_all),
        SPINDLE_TEST(test_srv_batch_answer_all_settled),
        SPINDLE_TEST(test_srv_batch_answer_any),
        SPINDLE_TEST(test_srv_batch_answer_race),
        SPINDLE_TEST(test_srv_batch_parse_fuzz_inputs),
    };
    return SPINDLE_SUITE_ADD("server_api_batch_json", NULL, NULL, tests);
}
