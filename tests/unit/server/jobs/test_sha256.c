/* test_sha256.c - the sha256 job kind (server/jobs/sha256.c): parameters, known vectors,
 * iterated rounds and multi-chunk bodies checked against one-shot SHA256(), runs on several
 * threads (each with its own digest context, freed at thread exit), and cancellation. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <string.h>

#include "server/jobs/jobs.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_jobs_sha256(void);

static void hex32(const unsigned char *md, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

/* The reference: R rounds with one-shot SHA256(). */
static void sha256_ref(const void *body, size_t len, unsigned long rounds, char *out)
{
    unsigned char md[32];
    SHA256(body, len, md);
    for (unsigned long r = 2; r <= rounds; r++)
        SHA256(md, sizeof(md), md);
    hex32(md, out);
}

/* sha256?rounds=<rounds> over body through parse, run, answer: the digest must be `want`. */
static void sha256_check(const void *body, size_t len, unsigned long rounds, const char *want)
{
    const struct srv_kind *k = jt_kind("sha256");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_answer ans;
    char val[32];

    int vlen = snprintf(val, sizeof(val), "%lu", rounds);
    struct srv_job_param p = {"rounds", val, 6, (size_t)vlen};
    void *st = jt_parse_ok(k, &p, 1, body, len, &cfg);
    CU_ASSERT_EQUAL_FATAL(jt_run(k, st, false, NULL), 0);
    char *s = jt_answer_str(k, st, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_STRING_EQUAL(ans.content_type, "application/json");
    json_t *j = json_loads(s, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL(j);
    if (j != NULL) {
        CU_ASSERT_EQUAL(json_object_size(j), 3);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "rounds")), (json_int_t)rounds);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "bytes")), (json_int_t)len);
        const char *d = json_string_value(json_object_get(j, "digest"));
        CU_ASSERT_PTR_NOT_NULL(d);
        if (d != NULL)
            CU_ASSERT_STRING_EQUAL(d, want);
        json_decref(j);
    }
    free(s);
    jt_free(st);
}

static void test_sha256_parse_accepts(void)
{
    const struct srv_kind *k = jt_kind("sha256");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param one[] = {JT_P("rounds", "1")};
    jt_free(jt_parse_ok(k, one, 1, NULL, 0, &cfg));
    struct srv_job_param max[] = {JT_P("rounds", "100000000")};
    jt_free(jt_parse_ok(k, max, 1, "abc", 3, &cfg));
}

static void test_sha256_parse_rejects(void)
{
    const struct srv_kind *k = jt_kind("sha256");
    struct srv_cfg cfg = jt_limits();
    const char *range = "rounds must be an integer between 1 and 100000000";

    jt_parse_err(k, NULL, 0, "abc", 3, &cfg, "missing required parameter 'rounds'");
    struct srv_job_param zero[] = {JT_P("rounds", "0")};
    jt_parse_err(k, zero, 1, "abc", 3, &cfg, range);
    struct srv_job_param over[] = {JT_P("rounds", "100000001")};
    jt_parse_err(k, over, 1, "abc", 3, &cfg, range);
    struct srv_job_param junk[] = {JT_P("rounds", "1k")};
    jt_parse_err(k, junk, 1, "abc", 3, &cfg, range);
    struct srv_job_param dup[] = {JT_P("rounds", "1"), JT_P("rounds", "1")};
    jt_parse_err(k, dup, 2, "abc", 3, &cfg, "duplicate parameter 'rounds'");
    struct srv_job_param unk[] = {JT_P("rounds", "1"), JT_P("level", "1")};
    jt_parse_err(k, unk, 2, "abc", 3, &cfg, "unknown parameter 'level'");

    cfg.max_body_bytes = 2;
    struct srv_job_param one[] = {JT_P("rounds", "1")};
    jt_parse_err(k, one, 1, "abc", 3, &cfg, "body is larger than 2 bytes");
}

static void test_sha256_run_known_vectors(void)
{
    char want[65];
    unsigned char md[32];

    sha256_check("abc", 3, 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_check("", 0, 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_check(NULL, 0, 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* two rounds: SHA256 of the 32-byte digest of "abc", computed here with one-shot SHA256() */
    SHA256((const unsigned char *)"abc", 3, md);
    SHA256(md, sizeof(md), md);
    hex32(md, want);
    sha256_check("abc", 3, 2, want);
}

static void test_sha256_run_many_rounds(void)
{
    char want[65];
    sha256_ref("spindle", 7, 1000, want);
    sha256_check("spindle", 7, 1000, want);
    sha256_ref("spindle", 7, 64, want); /* the round of the first cancellation check */
    sha256_check("spindle", 7, 64, want);
}

static void test_sha256_run_chunked_body(void)
{
    /* larger than several update chunks, and not a multiple of a chunk or of a block */
    size_t len = (1u << 20) * 3 + 7;
    unsigned char *body = malloc(len);
    char want[65];
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 42);
    sha256_ref(body, len, 1, want);
    sha256_check(body, len, 1, want);
    sha256_ref(body, len, 3, want);
    sha256_check(body, len, 3, want);
    free(body);
}

static void *sha256_thread(void *arg)
{
    (void)arg;
    char want[65];
    sha256_ref("thread", 6, 100, want);
    sha256_check("thread", 6, 100, want);
    sha256_check("thread", 6, 100, want);
    return NULL;
}

/* Each thread makes its own digest context on first use; the leak checker proves the thread-exit
 * destructor frees it. */
static void test_sha256_run_on_threads(void)
{
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, sha256_thread, NULL), 0);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(pthread_join(th[i], NULL), 0);
}

static void test_sha256_run_cancelled_before(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("rounds", "100000000")};
    jt_check_cancel_first(jt_kind("sha256"), p, 1, "abc", 3, &cfg);
}

static void test_sha256_run_cancelled_midrun(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("rounds", "100000000")};
    (void)jt_check_cancel_midrun(jt_kind("sha256"), p, 1, "abc", 3, &cfg);
}

/* A big body is cancelled between chunks of round 1. 512 MiB takes a few hundred ms even with
 * SHA extensions; calloc maps it lazily, so reading it costs no memory. */
static void test_sha256_run_cancelled_in_body(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("rounds", "1")};
    size_t len = (size_t)512 << 20;
    unsigned char *body = calloc(1, len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    cfg.max_body_bytes = len;
    (void)jt_check_cancel_midrun(jt_kind("sha256"), p, 1, body, len, &cfg);
    free(body);
}

int suite_server_jobs_sha256(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_sha256_parse_accepts),
        SPINDLE_TEST(test_sha256_parse_rejects),
        SPINDLE_TEST(test_sha256_run_known_vectors),
        SPINDLE_TEST(test_sha256_run_many_rounds),
        SPINDLE_TEST(test_sha256_run_chunked_body),
        SPINDLE_TEST(test_sha256_run_on_threads),
        SPINDLE_TEST(test_sha256_run_cancelled_before),
        SPINDLE_TEST(test_sha256_run_cancelled_midrun),
        SPINDLE_TEST(test_sha256_run_cancelled_in_body),
    };
    return SPINDLE_SUITE_ADD("server_jobs_sha256", NULL, NULL, tests);
}
