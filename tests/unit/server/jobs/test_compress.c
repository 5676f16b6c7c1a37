/* test_compress.c - the compress job kind (server/jobs/compress.c): parameters and levels,
 * zstd and gzip output that decompresses back to the input (with ZSTD_decompress and zlib's
 * inflate with the gzip wrapper), the per-thread zstd context reused across levels, and
 * cancellation before and during a run. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "server/jobs/jobs.h"
#include "tests/unit/server/jobs/support.h"
#include "tests/suite.h"

int suite_server_jobs_compress(void);

static void test_compress_parse_accepts(void)
{
    const struct srv_kind *k = jt_kind("compress");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param z[] = {JT_P("codec", "zstd")};
    jt_free(jt_parse_ok(k, z, 1, "x", 1, &cfg));
    struct srv_job_param g[] = {JT_P("level", "9"), JT_P("codec", "gzip")};
    jt_free(jt_parse_ok(k, g, 2, NULL, 0, &cfg));
    struct srv_job_param z19[] = {JT_P("codec", "zstd"), JT_P("level", "19")};
    jt_free(jt_parse_ok(k, z19, 2, "x", 1, &cfg));
    struct srv_job_param g1[] = {JT_P("codec", "gzip"), JT_P("level", "1")};
    jt_free(jt_parse_ok(k, g1, 2, "x", 1, &cfg));
}

static void test_compress_parse_rejects(void)
{
    const struct srv_kind *k = jt_kind("compress");
    struct srv_cfg cfg = jt_limits();

    jt_parse_err(k, NULL, 0, "x", 1, &cfg, "missing required parameter 'codec'");
    struct srv_job_param lvl[] = {JT_P("level", "3")};
    jt_parse_err(k, lvl, 1, "x", 1, &cfg, "missing required parameter 'codec'");
    struct srv_job_param lz4[] = {JT_P("codec", "lz4")};
    jt_parse_err(k, lz4, 1, "x", 1, &cfg, "codec must be zstd or gzip");
    struct srv_job_param up[] = {JT_P("codec", "ZSTD")};
    jt_parse_err(k, up, 1, "x", 1, &cfg, "codec must be zstd or gzip");
    struct srv_job_param empty[] = {JT_P("codec", "")};
    jt_parse_err(k, empty, 1, "x", 1, &cfg, "codec must be zstd or gzip");
    struct srv_job_param z0[] = {JT_P("codec", "zstd"), JT_P("level", "0")};
    jt_parse_err(k, z0, 2, "x", 1, &cfg, "level must be an integer between 1 and 19");
    struct srv_job_param z20[] = {JT_P("codec", "zstd"), JT_P("level", "20")};
    jt_parse_err(k, z20, 2, "x", 1, &cfg, "level must be an integer between 1 and 19");
    struct srv_job_param zneg[] = {JT_P("codec", "zstd"), JT_P("level", "-1")};
    jt_parse_err(k, zneg, 2, "x", 1, &cfg, "level must be an integer between 1 and 19");
    struct srv_job_param g10[] = {JT_P("codec", "gzip"), JT_P("level", "10")};
    jt_parse_err(k, g10, 2, "x", 1, &cfg, "level must be an integer between 1 and 9");
    struct srv_job_param g0[] = {JT_P("codec", "gzip"), JT_P("level", "0")};
    jt_parse_err(k, g0, 2, "x", 1, &cfg, "level must be an integer between 1 and 9");
    struct srv_job_param dup[] = {JT_P("codec", "gzip"), JT_P("codec", "zstd")};
    jt_parse_err(k, dup, 2, "x", 1, &cfg, "duplicate parameter 'codec'");
    struct srv_job_param unk[] = {JT_P("codec", "gzip"), JT_P("window", "10")};
    jt_parse_err(k, unk, 2, "x", 1, &cfg, "unknown parameter 'window'");

    cfg.max_compress_level_zstd = 5; /* the zstd limit comes from the configuration */
    struct srv_job_param z6[] = {JT_P("codec", "zstd"), JT_P("level", "6")};
    jt_parse_err(k, z6, 2, "x", 1, &cfg, "level must be an integer between 1 and 5");
    cfg.max_body_bytes = 0;
    struct srv_job_param z[] = {JT_P("codec", "zstd")};
    jt_parse_err(k, z, 1, "x", 1, &cfg, "body is larger than 0 bytes");
}

/* Compress body with codec/level (level NULL = default) and return the answer's bytes (copied;
 * free() them) and content type. */
static unsigned char *compress_body(const char *codec, const char *level, const void *body,
                                    size_t len, size_t *out_len, const char **type)
{
    const struct srv_kind *k = jt_kind("compress");
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[2] = {{"codec", codec, 5, strlen(codec)}};
    size_t n = 1;
    struct srv_job_answer ans;

    if (level != NULL)
        p[n++] = (struct srv_job_param){"level", level, 5, strlen(level)};
    void *st = jt_parse_ok(k, p, n, body, len, &cfg);
    CU_ASSERT_EQUAL_FATAL(jt_run(k, st, false, NULL), 0);
    unsigned char *out = (unsigned char *)jt_answer_str(k, st, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    *type = ans.content_type;
    *out_len = ans.len;
    jt_free(st);
    return out;
}

static void check_zstd(const char *level, const unsigned char *body, size_t len)
{
    size_t clen;
    const char *type;
    unsigned char *c = compress_body("zstd", level, body, len, &clen, &type);
    CU_ASSERT_STRING_EQUAL(type, "application/zstd");
    CU_ASSERT_EQUAL(ZSTD_getFrameContentSize(c, clen), (unsigned long long)len);
    CU_ASSERT_EQUAL(ZSTD_findFrameCompressedSize(c, clen), clen); /* exactly one frame */
    unsigned char *back = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    size_t r = ZSTD_decompress(back, len + 1, c, clen);
    CU_ASSERT_FALSE(ZSTD_isError(r));
    CU_ASSERT_EQUAL(r, len);
    CU_ASSERT(r == len && memcmp(back, body, len) == 0);
    free(back);
    free(c);
}

static void check_gzip(const char *level, const unsigned char *body, size_t len)
{
    size_t clen;
    const char *type;
    unsigned char *c = compress_body("gzip", level, body, len, &clen, &type);
    CU_ASSERT_STRING_EQUAL(type, "application/gzip");
    CU_ASSERT_FATAL(clen >= 18);
    CU_ASSERT(c[0] == 0x1f && c[1] == 0x8b && c[2] == 8); /* RFC 1952 magic, deflate */
    unsigned char *back = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    z_stream zs = {0};
    CU_ASSERT_EQUAL_FATAL(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = c;
    zs.avail_in = (uInt)clen;
    zs.next_out = back;
    zs.avail_out = (uInt)(len + 1);
    CU_ASSERT_EQUAL(inflate(&zs, Z_FINISH), Z_STREAM_END);
    CU_ASSERT_EQUAL(zs.total_out, len);
    CU_ASSERT_EQUAL(zs.avail_in, 0); /* nothing after the member */
    CU_ASSERT(zs.total_out == len && memcmp(back, body, len) == 0);
    inflateEnd(&zs);
    free(back);
    free(c);
}

static void test_compress_run_zstd_roundtrip(void)
{
    size_t len = 1u << 20;
    unsigned char *body = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 7);
    check_zstd(NULL, body, 0);
    check_zstd(NULL, (const unsigned char *)"a", 1);
    check_zstd(NULL, body, len);
    check_zstd("1", body, len);
    check_zstd("9", body, 100000);
    check_zstd("19", body, 100000); /* the same thread's context, reset between levels */
    check_zstd("1", body, 12345);
    free(body);
}

/* An empty request body may come as NULL (no bytes at all): both codecs still make a valid
 * stream of nothing (and no pointer arithmetic on NULL: the asan build checks that). */
static void test_compress_run_null_empty_body(void)
{
    size_t clen;
    const char *type;
    unsigned char back[1];
    unsigned char *c = compress_body("zstd", NULL, NULL, 0, &clen, &type);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(ZSTD_decompress(back, sizeof(back), c, clen), 0);
    free(c);
    c = compress_body("gzip", NULL, NULL, 0, &clen, &type);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    z_stream zs = {0};
    CU_ASSERT_EQUAL_FATAL(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = c;
    zs.avail_in = (uInt)clen;
    zs.next_out = back;
    zs.avail_out = sizeof(back);
    CU_ASSERT_EQUAL(inflate(&zs, Z_FINISH), Z_STREAM_END);
    CU_ASSERT_EQUAL(zs.total_out, 0);
    inflateEnd(&zs);
    free(c);
}

static void test_compress_run_ratio(void)
{
    size_t len = 256u << 10, clen;
    const char *type;
    unsigned char *body = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 9);
    unsigned char *c = compress_body("zstd", NULL, body, len, &clen, &type);
    CU_ASSERT(clen < len / 2); /* chunked flushing keeps the ratio of text */
    free(c);
    c = compress_body("zstd", "19", body, len, &clen, &type);
    CU_ASSERT(clen < len / 2);
    free(c);
    memset(body, 'a', len);
    c = compress_body("gzip", NULL, body, len, &clen, &type);
    CU_ASSERT(clen < len / 100);
    free(c);
    free(body);
}

static void test_compress_run_gzip_roundtrip(void)
{
    size_t len = 1u << 20;
    unsigned char *body = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 11);
    check_gzip(NULL, body, 0);
    check_gzip(NULL, (const unsigned char *)"a", 1);
    check_gzip(NULL, body, len);
    check_gzip("1", body, len);
    check_gzip("9", body, 100000);
    free(body);
}

/* Random bytes do not compress: the output grows past the input and must still be whole. */
static void test_compress_run_incompressible(void)
{
    size_t len = 300000;
    unsigned char *body = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body[i] = (unsigned char)(x >> 24);
    }
    check_zstd("19", body, len);
    check_zstd("1", body, len);
    check_gzip("9", body, len);
    free(body);
}

static void *compress_thread(void *arg)
{
    const unsigned char *body = arg;
    check_zstd("5", body, 200000);
    check_gzip("6", body, 200000);
    return NULL;
}

/* Workers each make a zstd context on first use; the leak checker proves the thread-exit
 * destructor frees it. */
static void test_compress_run_on_threads(void)
{
    size_t len = 200000;
    unsigned char *body = malloc(len);
    pthread_t th[4];
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 13);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, compress_thread, body), 0);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(pthread_join(th[i], NULL), 0);
    free(body);
}

static void test_compress_run_cancelled_before(void)
{
    struct srv_cfg cfg = jt_limits();
    size_t len = 8u << 20;
    unsigned char *body = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 3);
    struct srv_job_param z[] = {JT_P("codec", "zstd"), JT_P("level", "19")};
    jt_check_cancel_first(jt_kind("compress"), z, 2, body, len, &cfg);
    struct srv_job_param g[] = {JT_P("codec", "gzip"), JT_P("level", "9")};
    jt_check_cancel_first(jt_kind("compress"), g, 2, body, len, &cfg);
    free(body);
}

/* Hundreds of ms of work at the slowest levels, cancelled 20 ms in. The zstd body is 1 MiB (the
 * default max_body_bytes): with much bigger ones zstd's uninterruptible table setup at level 19
 * outlasts the cancel delay (see compress.c). */
static void test_compress_run_cancelled_midrun(void)
{
    struct srv_cfg cfg = jt_limits();
    size_t len = 8u << 20;
    unsigned char *body = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    jt_fill_text(body, len, 5);
    struct srv_job_param z[] = {JT_P("codec", "zstd"), JT_P("level", "19")};
    (void)jt_check_cancel_midrun(jt_kind("compress"), z, 2, body, 1u << 20, &cfg);
    struct srv_job_param g[] = {JT_P("codec", "gzip"), JT_P("level", "9")};
    (void)jt_check_cancel_midrun(jt_kind("compress"), g, 2, body, len, &cfg);
    free(body);
}

int suite_server_jobs_compress(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_compress_parse_accepts),
        SPINDLE_TEST(test_compress_parse_rejects),
        SPINDLE_TEST(test_compress_run_zstd_roundtrip),
        SPINDLE_TEST(test_compress_run_ratio),
        SPINDLE_TEST(test_compress_run_gzip_roundtrip),
        SPINDLE_TEST(test_compress_run_null_empty_body),
        SPINDLE_TEST(test_compress_run_incompressible),
        SPINDLE_TEST(test_compress_run_on_threads),
        SPINDLE_TEST(test_compress_run_cancelled_before),
        SPINDLE_TEST(test_compress_run_cancelled_midrun),
    };
    return SPINDLE_SUITE_ADD("server_jobs_compress", NULL, NULL, tests);
}
