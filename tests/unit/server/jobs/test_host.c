/* test_host.c - the host side of the kind ABI (server/jobs/host.c): the declared parameters
 * (types, ranges, defaults, limits, the messages of a 400), what a kind's parse and run may set
 * (answers by owner, errors, max_output_bytes), the host table's version fields, and a
 * description the host refuses (server/jobs/loader.c: srv_kind_describe), and ABI 1.1's
 * read_chunk and write_chunk on a whole body and on a streamed one (its channels). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/jobs/internal.h"
#include "server/jobs/jobs.h"
#include "server/stream/stream.h"
#include "tests/suite.h"
#include "tests/unit/server/jobs/support.h"

int suite_server_jobs_host(void);

/* What the test kind's run does, chosen by its "do" parameter. */
enum th_do { TH_STATIC, TH_MALLOC, TH_BORROWED, TH_ERROR, TH_BIG, TH_NOTHING };

static const struct spindle_host *th_host;
static int th_parse_error; /* parse sets an error of its own */

static int th_parse(struct spindle_job *job, void **state)
{
    if (th_parse_error) {
        th_host->set_error(job, 422, "too_odd", "n must be even");
        return -EINVAL;
    }
    char *st = malloc(16);
    if (st == NULL)
        return -ENOMEM;
    snprintf(st, 16, "n=%lld", (long long)th_host->param(job, 0));
    *state = st;
    return 0;
}

static int th_run(struct spindle_job *job, void *state)
{
    switch ((enum th_do)th_host->param(job, 5)) {
    case TH_STATIC:
        return th_host->set_answer(job, "static", 6, NULL, SPINDLE_BYTES_STATIC);
    case TH_MALLOC: {
        char *p = strdup("malloced");
        return th_host->set_answer(job, p, strlen(p), "text/plain", SPINDLE_BYTES_MALLOC);
    }
    case TH_BORROWED:
        return th_host->set_answer(job, state, strlen(state), "text/plain", SPINDLE_BYTES_BORROWED);
    case TH_ERROR:
        th_host->set_error(job, 409, "conflict", "it clashed");
        return -EIO;
    case TH_BIG: {
        char *p = calloc(1, 2048);
        return th_host->set_answer(job, p, 2048, NULL, SPINDLE_BYTES_MALLOC);
    }
    default:
        return 0;
    }
}

static void th_free(void *state)
{
    free(state);
}

static const char *const th_modes[] = {"fast", "best", NULL};
static const char *const th_dos[] = {"static", "malloc",  "borrowed", "error",
                                     "big",    "nothing", NULL};
static const struct spindle_param th_params[] = {
    {.name = "n", .type = SPINDLE_PARAM_INT, .required = 1, .min = 0, .max = 100},
    {.name = "mode", .type = SPINDLE_PARAM_ENUM, .def = 1, .choices = th_modes},
    {.name = "v", .type = SPINDLE_PARAM_BOOL, .def = 0},
    {.name = "s", .type = SPINDLE_PARAM_STRING},
    {.name = "c",
     .type = SPINDLE_PARAM_INT,
     .min = 0,
     .max = 1000,
     .def = 7,
     .limit = "max_spin_ms"},
    {.name = "do", .type = SPINDLE_PARAM_ENUM, .def = 0, .choices = th_dos},
};

static const struct spindle_kind th_desc = {
    SPINDLE_KIND_HEAD, .name = "th",      .summary = "test kind", .params = th_params,
    .nparams = 6,      .parse = th_parse, .run = th_run,          .free = th_free,
};

/* A kind described from th_desc, owned by the built-in snapshot (for its reference count). */
static struct srv_kind *th_kind(void)
{
    static struct srv_kind k;
    char msg[256] = "";
    th_host = srv_job_host();
    memset(&k, 0, sizeof(k));
    CU_ASSERT_EQUAL_FATAL(srv_kind_describe(&k, &th_desc, "test", msg, sizeof(msg)), 0);
    snprintf(k.name, sizeof(k.name), "th");
    k.owner = (struct srv_kinds *)srv_kinds_builtin();
    return &k;
}

static void th_expect_400(const struct srv_job_param *p, size_t n, const char *want)
{
    struct srv_cfg cfg = jt_limits();
    cfg.max_spin_ms = 50;
    jt_parse_err(th_kind(), p, n, NULL, 0, &cfg, want);
}

static void test_srv_job_prepare_params(void)
{
    struct srv_cfg cfg = jt_limits();
    cfg.max_spin_ms = 50;
    struct srv_job_param ok[] = {JT_P("n", "42"), JT_P("mode", "fast"), JT_P("v", "true"),
                                 JT_P("s", "hello"), JT_P("c", "50")};
    struct spindle_job *job = jt_parse_ok(th_kind(), ok, JT_N(ok), NULL, 0, &cfg);
    CU_ASSERT_EQUAL(th_host->param(job, 0), 42);
    CU_ASSERT_EQUAL(th_host->param(job, 1), 0); /* the index of "fast" */
    CU_ASSERT_EQUAL(th_host->param(job, 2), 1);
    CU_ASSERT_EQUAL(th_host->param(job, 4), 50);
    CU_ASSERT_TRUE(th_host->param_given(job, 4));
    CU_ASSERT_FALSE(th_host->param_given(job, 5));
    CU_ASSERT_EQUAL(th_host->param(job, 99), 0);
    CU_ASSERT_STRING_EQUAL(job->state, "n=42");
    jt_free(job);

    struct srv_job_param dflt[] = {JT_P("n", "0")};
    job = jt_parse_ok(th_kind(), dflt, 1, NULL, 0, &cfg);
    CU_ASSERT_EQUAL(th_host->param(job, 1), 1); /* "best" */
    CU_ASSERT_EQUAL(th_host->param(job, 2), 0);
    CU_ASSERT_EQUAL(th_host->param(job, 4), 7);
    CU_ASSERT_FALSE(th_host->param_given(job, 1));
    jt_free(job);
}

static void test_srv_job_prepare_param_errors(void)
{
    struct srv_job_param none[] = {JT_P("mode", "fast")};
    th_expect_400(none, 1, "missing required parameter 'n'");
    struct srv_job_param unk[] = {JT_P("n", "1"), JT_P("x\x01y", "1")};
    th_expect_400(unk, 2, "unknown parameter 'x?y'");
    struct srv_job_param dup[] = {JT_P("n", "1"), JT_P("n", "2")};
    th_expect_400(dup, 2, "duplicate parameter 'n'");
    struct srv_job_param big[] = {JT_P("n", "101")};
    th_expect_400(big, 1, "n must be an integer between 0 and 100");
    struct srv_job_param neg[] = {JT_P("n", "-1")};
    th_expect_400(neg, 1, "n must be an integer between 0 and 100");
    struct srv_job_param lim[] = {JT_P("n", "1"), JT_P("c", "51")};
    th_expect_400(lim, 2, "c must be an integer between 0 and 50"); /* max_spin_ms caps it */
    struct srv_job_param en[] = {JT_P("n", "1"), JT_P("mode", "slow")};
    th_expect_400(en, 2, "mode must be fast or best");
    struct srv_job_param en3[] = {JT_P("n", "1"), JT_P("do", "x")};
    th_expect_400(en3, 2, "do must be static, malloc, borrowed, error, big or nothing");
    struct srv_job_param b[] = {JT_P("n", "1"), JT_P("v", "yes")};
    th_expect_400(b, 2, "v must be true or false");
    char longs[300];
    memset(longs, 'a', sizeof(longs));
    struct srv_job_param s[] = {JT_P("n", "1"), {"s", longs, 1, sizeof(longs)}};
    th_expect_400(s, 2, "s is longer than 256 bytes");
}

/* A kind's own error from parse is its answer, with its status and code. */
static void test_srv_job_prepare_kind_error(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_job_param p[] = {JT_P("n", "3")};
    struct spindle_job job;
    struct srv_job_answer ans;
    th_parse_error = 1;
    CU_ASSERT_EQUAL(srv_job_prepare(&job, th_kind(), p, 1, NULL, 0, &cfg), -EINVAL);
    th_parse_error = 0;
    srv_job_outcome(&job, &ans);
    CU_ASSERT_EQUAL(ans.status, 422);
    CU_ASSERT_STRING_EQUAL(ans.code, "too_odd");
    CU_ASSERT_STRING_EQUAL(ans.message, "n must be even");
    srv_job_fini(&job);
}

static char th_msg[SRV_JOB_ERR_MAX]; /* the last outcome's error message, copied */

/* Run with do=`what` and return the outcome (its body, or its error code, copied into `body`;
 * its message into th_msg: the outcome's strings go with the job). */
static int th_run_do(const char *what, size_t max_out, struct srv_job_answer *ans, char *body,
                     size_t size)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_kind *k = th_kind();
    k->max_output_bytes = max_out;
    k->content_type = "application/x-test";
    struct srv_job_param p[] = {JT_P("n", "5"), {"do", what, 2, strlen(what)}};
    struct spindle_job *job = jt_parse_ok(k, p, 2, NULL, 0, &cfg);
    int rc = srv_job_run(job);
    srv_job_outcome(job, ans);
    snprintf(body, size, "%.*s", (int)ans->len, ans->body != NULL ? ans->body : "");
    if (ans->code != NULL)
        snprintf(body, size, "%s", ans->code);
    snprintf(th_msg, sizeof(th_msg), "%s", ans->message != NULL ? ans->message : "");
    if (ans->owned)
        free((void *)ans->body);
    ans->body = NULL;
    ans->code = ans->message = NULL;
    jt_free(job);
    return rc;
}

static void test_srv_job_answers(void)
{
    struct srv_job_answer ans;
    char body[64];
    CU_ASSERT_EQUAL(th_run_do("static", 0, &ans, body, sizeof(body)), 0);
    CU_ASSERT_STRING_EQUAL(body, "static");
    CU_ASSERT_TRUE(ans.is_static);
    CU_ASSERT_STRING_EQUAL(ans.content_type, "application/x-test"); /* the kind's configured */
    CU_ASSERT_EQUAL(th_run_do("malloc", 0, &ans, body, sizeof(body)), 0);
    CU_ASSERT_TRUE(ans.owned);
    CU_ASSERT_STRING_EQUAL(body, "malloced");
    CU_ASSERT_STRING_EQUAL(ans.content_type, "text/plain");
    CU_ASSERT_EQUAL(th_run_do("borrowed", 0, &ans, body, sizeof(body)), 0);
    CU_ASSERT_FALSE(ans.owned || ans.is_static);
    CU_ASSERT_STRING_EQUAL(body, "n=5");
    /* run failed but said why: its error is the answer */
    CU_ASSERT_EQUAL(th_run_do("error", 0, &ans, body, sizeof(body)), 0);
    CU_ASSERT_EQUAL(ans.status, 409);
    CU_ASSERT_STRING_EQUAL(body, "conflict");
    CU_ASSERT_STRING_EQUAL(th_msg, "it clashed");
    /* over max_output_bytes: 500 output_too_large, the bytes freed (ASan checks) */
    CU_ASSERT_EQUAL(th_run_do("big", 1024, &ans, body, sizeof(body)), 0);
    CU_ASSERT_EQUAL(ans.status, 500);
    CU_ASSERT_STRING_EQUAL(body, "output_too_large");
    CU_ASSERT_EQUAL(th_run_do("big", 4096, &ans, body, sizeof(body)), 0);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_EQUAL(ans.len, 2048);
    CU_ASSERT_EQUAL(th_run_do("nothing", 0, &ans, body, sizeof(body)), 0);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_EQUAL(ans.len, 0);
}

static void test_srv_job_host_table(void)
{
    const struct spindle_host *h = srv_job_host();
    CU_ASSERT_EQUAL(h->abi_major, SPINDLE_ABI_MAJOR);
    CU_ASSERT_EQUAL(h->abi_minor, SPINDLE_ABI_MINOR);
    CU_ASSERT_EQUAL(h->size, sizeof(struct spindle_host));
    CU_ASSERT_TRUE(SPINDLE_HOST_HAS(h, kind_data));
    CU_ASSERT_TRUE(SPINDLE_HOST_HAS(h, cancelled));
    /* a 1.0 module reading a smaller (older) table sees the later fields as absent */
    struct spindle_host older = *h;
    older.size = (uint32_t)offsetof(struct spindle_host, limit);
    CU_ASSERT_FALSE(SPINDLE_HOST_HAS(&older, limit));
    CU_ASSERT_TRUE(SPINDLE_HOST_HAS(&older, set_error));
    CU_ASSERT_EQUAL(h->time_left_ms(NULL), -1); /* no context current */
}

static void test_srv_kind_describe_refusals(void)
{
    struct srv_kind k;
    char msg[256];
    struct spindle_kind d = th_desc;
    d.abi_major = 2;
    d.abi_minor = 3;
    CU_ASSERT_EQUAL(srv_kind_describe(&k, &d, "m", msg, sizeof(msg)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(msg, "m: kind description of ABI 2.3, this server has ABI 1.1");
    d = th_desc;
    d.size = 16;
    CU_ASSERT_EQUAL(srv_kind_describe(&k, &d, "m", msg, sizeof(msg)), -EINVAL);
    const char *want = "m: kind description of 16 bytes, ABI 1.1 needs at least ";
    CU_ASSERT(strncmp(msg, want, strlen(want)) == 0);
    d = th_desc;
    d.run = NULL;
    CU_ASSERT_EQUAL(srv_kind_describe(&k, &d, "m", msg, sizeof(msg)), -EINVAL);
    d = th_desc;
    d.nparams = SPINDLE_PARAMS_MAX + 1;
    CU_ASSERT_EQUAL(srv_kind_describe(&k, &d, "m", msg, sizeof(msg)), -EINVAL);
    static const struct spindle_param badlim[] = {
        {.name = "n", .type = SPINDLE_PARAM_INT, .max = 9, .limit = "max_nothing"}};
    d = th_desc;
    d.params = badlim;
    d.nparams = 1;
    CU_ASSERT_EQUAL(srv_kind_describe(&k, &d, "m", msg, sizeof(msg)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(msg, "m: parameter n names an unknown server limit 'max_nothing'");
    /* a newer minor with a larger struct: the host reads what it knows and accepts it */
    struct {
        struct spindle_kind k;
        uint64_t later_field;
    } newer = {th_desc, 99};
    newer.k.abi_minor = 7;
    newer.k.size = sizeof(newer);
    CU_ASSERT_EQUAL(srv_kind_describe(&k, &newer.k, "m", msg, sizeof(msg)), 0);
    CU_ASSERT_EQUAL(k.nparams, 6);
}

/* ---- ABI 1.1: read_chunk and write_chunk ----------------------------------------------------- */

/* The chunk test kind: reads its body 3 bytes at a time and writes each piece back upper-cased
 * (do=echo), or counts it and answers with set_answer (do=count). */
static int tc_run(struct spindle_job *job, void *state)
{
    (void)state;
    char buf[3], json[32];
    int64_t n, total = 0;
    bool count = th_host->param(job, 0) == 1;
    while ((n = th_host->read_chunk(job, buf, sizeof(buf))) > 0) {
        total += n;
        for (int64_t i = 0; i < n; i++)
            buf[i] = (char)(buf[i] >= 'a' && buf[i] <= 'z' ? buf[i] - 'a' + 'A' : buf[i]);
        int rc = count ? 0 : th_host->write_chunk(job, buf, (size_t)n);
        if (rc < 0)
            return rc;
    }
    if (n < 0 || !count)
        return (int)n;
    int len = snprintf(json, sizeof(json), "{\"bytes\":%lld}", (long long)total);
    return th_host->set_answer(job, strdup(json), (size_t)len, "application/json",
                               SPINDLE_BYTES_MALLOC);
}

static const char *const tc_dos[] = {"echo", "count", NULL};
static const struct spindle_param tc_params[] = {
    {.name = "do", .type = SPINDLE_PARAM_ENUM, .def = 0, .choices = tc_dos},
};
static const struct spindle_kind tc_desc = {
    SPINDLE_KIND_HEAD,
    .name = "tc",
    .uses_body = 1,
    .params = tc_params,
    .nparams = 1,
    .run = tc_run,
    .stream = SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT,
};

static struct srv_kind *tc_kind(const struct spindle_kind *d)
{
    static struct srv_kind k;
    char msg[256] = "";
    th_host = srv_job_host();
    memset(&k, 0, sizeof(k));
    CU_ASSERT_EQUAL_FATAL(srv_kind_describe(&k, d, "test", msg, sizeof(msg)), 0);
    snprintf(k.name, sizeof(k.name), "tc");
    k.owner = (struct srv_kinds *)srv_kinds_builtin();
    return &k;
}

/* A body read whole: read_chunk serves it in pieces, write_chunk collects the answer. */
static void test_h_read_write_chunk_whole(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_kind *k = tc_kind(&tc_desc);
    k->content_type = "text/x-test";
    struct spindle_job *job = jt_parse_ok(k, NULL, 0, "hello, world", 12, &cfg);
    struct srv_job_answer ans;
    CU_ASSERT_TRUE(srv_kind_streams(k));
    CU_ASSERT_EQUAL(srv_job_run(job), 0);
    srv_job_outcome(job, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    CU_ASSERT_TRUE(ans.owned);
    CU_ASSERT_EQUAL(ans.len, 12);
    CU_ASSERT(ans.len == 12 && memcmp(ans.body, "HELLO, WORLD", 12) == 0);
    CU_ASSERT_STRING_EQUAL(ans.content_type, "text/x-test");
    free((void *)ans.body);
    jt_free(job);
    /* over max_output_bytes: 500 output_too_large, what was collected freed (ASan checks) */
    k->max_output_bytes = 5;
    job = jt_parse_ok(k, NULL, 0, "hello, world", 12, &cfg);
    CU_ASSERT_EQUAL(srv_job_run(job), 0);
    srv_job_outcome(job, &ans);
    CU_ASSERT_EQUAL(ans.status, 500);
    CU_ASSERT_STRING_EQUAL(ans.code, "output_too_large");
    jt_free(job);
}

/* A streamed job: read_chunk takes the body channel, write_chunk fills the answer channel; an
 * answer set with set_answer goes to the channel after run; a cancelled channel is -ECANCELED. */
static void test_h_read_write_chunk_streamed(void)
{
    struct srv_cfg cfg = jt_limits();
    struct srv_kind *k = tc_kind(&tc_desc);
    struct srv_chan *in = srv_chan_new(64, NULL, NULL), *out = srv_chan_new(64, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    struct spindle_job job;
    size_t len = 0;
    char buf[64] = "";
    CU_ASSERT_EQUAL(srv_job_prepare_stream(&job, k, NULL, 0, &cfg), 0);
    CU_ASSERT_PTR_NULL(th_host->body(&job, &len));
    CU_ASSERT_STRING_EQUAL(srv_job_stream_type(&job), "application/octet-stream");
    srv_job_stream_attach(&job, in, out);
    CU_ASSERT_EQUAL(srv_chan_put(in, "abcdefg", 7), 7);
    srv_chan_close(in);
    CU_ASSERT_EQUAL(srv_job_run(&job), 0);
    CU_ASSERT_EQUAL(srv_chan_get(out, buf, sizeof(buf) - 1), 7);
    CU_ASSERT_STRING_EQUAL(buf, "ABCDEFG");
    srv_job_fini(&job);

    struct srv_job_param count[] = {JT_P("do", "count")};
    struct srv_chan *in2 = srv_chan_new(64, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in2);
    CU_ASSERT_EQUAL(srv_job_prepare_stream(&job, k, count, 1, &cfg), 0);
    srv_job_stream_attach(&job, in2, out);
    CU_ASSERT_EQUAL(srv_chan_put(in2, "abcd", 4), 4);
    srv_chan_close(in2);
    CU_ASSERT_EQUAL(srv_job_run(&job), 0);
    memset(buf, 0, sizeof(buf));
    CU_ASSERT_EQUAL(srv_chan_get(out, buf, sizeof(buf) - 1), 11);
    CU_ASSERT_STRING_EQUAL(buf, "{\"bytes\":4}");
    struct srv_job_answer ans;
    srv_job_outcome(&job, &ans);
    CU_ASSERT_EQUAL(ans.status, 200);
    if (ans.owned)
        free((void *)ans.body);
    srv_job_fini(&job);

    /* the request was called off: the channels are cancelled, read_chunk says so */
    struct srv_chan *in3 = srv_chan_new(64, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in3);
    CU_ASSERT_EQUAL(srv_job_prepare_stream(&job, k, NULL, 0, &cfg), 0);
    srv_job_stream_attach(&job, in3, out);
    srv_chan_cancel(in3);
    CU_ASSERT_EQUAL(srv_job_run(&job), -ECANCELED);
    srv_job_fini(&job);
    srv_chan_free(in);
    srv_chan_free(in2);
    srv_chan_free(in3);
    srv_chan_free(out);
}

/* A kind of ABI 1.0 (its description ends before `stream`) never streams, whatever follows it
 * in memory; the host table says it has the 1.1 calls. */
static void test_h_chunk_abi_1_0(void)
{
    struct spindle_kind d = tc_desc;
    d.abi_minor = 0;
    d.size = (uint32_t)SPINDLE_KIND_SIZE_1_0;
    struct srv_kind *k = tc_kind(&d);
    CU_ASSERT_EQUAL(k->desc.stream, 0);
    CU_ASSERT_FALSE(srv_kind_streams(k));
    const struct spindle_host *h = srv_job_host();
    CU_ASSERT_TRUE(SPINDLE_HOST_HAS(h, read_chunk));
    CU_ASSERT_TRUE(SPINDLE_HOST_HAS(h, write_chunk));
    struct spindle_host older = *h;
    older.size = (uint32_t)offsetof(struct spindle_host, read_chunk);
    CU_ASSERT_FALSE(SPINDLE_HOST_HAS(&older, read_chunk));
    CU_ASSERT_TRUE(SPINDLE_HOST_HAS(&older, kind_data));
}

int suite_server_jobs_host(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_job_prepare_params),
        SPINDLE_TEST(test_srv_job_prepare_param_errors),
        SPINDLE_TEST(test_srv_job_prepare_kind_error),
        SPINDLE_TEST(test_srv_job_answers),
        SPINDLE_TEST(test_srv_job_host_table),
        SPINDLE_TEST(test_srv_kind_describe_refusals),
        SPINDLE_TEST(test_h_read_write_chunk_whole),
        SPINDLE_TEST(test_h_read_write_chunk_streamed),
        SPINDLE_TEST(test_h_chunk_abi_1_0),
    };
    return SPINDLE_SUITE_ADD("server_jobs_host", NULL, NULL, tests);
}
