/* test_trace.c - unit tests for context/trace.c: traceparent parsing (valid and invalid vectors
 * from the W3C Trace Context rules), formatting and round trips, new trace and span ids.
 */
#include "context/ctx.h"
#include "context/internal.h"
#include "tests/suite.h"

#include <CUnit/CUnit.h>
#include <errno.h>
#include <string.h>

#define TP_VALID "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, struct ctx_trace *out)
{
    return ctx_trace_parse(s, strlen(s), out);
}

static void test_ctx_trace_parse_valid(void)
{
    static const uint8_t want_trace[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                           0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t want_span[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    struct ctx_trace t;
    CU_ASSERT_EQUAL(strlen(TP_VALID), CTX_TRACEPARENT_LEN);
    CU_ASSERT_EQUAL_FATAL(parse(TP_VALID, &t), 0);
    CU_ASSERT_EQUAL(memcmp(t.trace_id, want_trace, 16), 0);
    CU_ASSERT_EQUAL(memcmp(t.span_id, want_span, 8), 0);
    CU_ASSERT_EQUAL(t.flags, 0x01);

    CU_ASSERT_EQUAL(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &t), 0);
    CU_ASSERT_EQUAL(t.flags, 0x00);
    /* unknown flag bits are kept, not rejected */
    CU_ASSERT_EQUAL(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &t), 0);
    CU_ASSERT_EQUAL(t.flags, 0xff);
    /* one non-zero byte is enough */
    CU_ASSERT_EQUAL(parse("00-00000000000000000000000000000001-0000000000000001-01", &t), 0);
    CU_ASSERT_EQUAL(t.trace_id[15], 1);
    CU_ASSERT_EQUAL(t.span_id[7], 1);
}

/* The length, not a NUL, bounds the value: a valid prefix of a longer buffer parses. */
static void test_ctx_trace_parse_uses_len(void)
{
    struct ctx_trace t;
    const char *longer = TP_VALID "-extra";
    CU_ASSERT_EQUAL(ctx_trace_parse(longer, CTX_TRACEPARENT_LEN, &t), 0);
    CU_ASSERT_EQUAL(ctx_trace_parse(longer, strlen(longer), &t), -EINVAL);
    CU_ASSERT_EQUAL(ctx_trace_parse(NULL, 0, &t), -EINVAL);
}

static void test_ctx_trace_parse_invalid(void)
{
    static const char *const bad[] = {
        "",
        /* wrong length */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* upper-case hex */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        /* versions other than 00, ff above all */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* all-zero ids */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        /* dashes misplaced or replaced */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e47-3600f067aa0ba902b7-01",
        "004-bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 1",
        "00-4bf92f3577b34da6a3ce929d0e0-4736-00f067aa0ba902b7-01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ctx_trace t;
        int rc = parse(bad[i], &t);
        if (rc != -EINVAL)
            CU_FAIL(bad[i]);
    }
    /* an embedded NUL is not hex either */
    char nul[CTX_TRACEPARENT_LEN + 1];
    memcpy(nul, TP_VALID, sizeof(nul));
    nul[10] = '\0';
    struct ctx_trace t;
    CU_ASSERT_EQUAL(ctx_trace_parse(nul, CTX_TRACEPARENT_LEN, &t), -EINVAL);
}

static void test_ctx_trace_format_round_trip(void)
{
    struct ctx_trace t, back;
    char buf[CTX_TRACEPARENT_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(parse(TP_VALID, &t), 0);
    memset(buf, 'x', sizeof(buf));
    CU_ASSERT_EQUAL(ctx_trace_format(&t, buf, sizeof(buf)), CTX_TRACEPARENT_LEN);
    CU_ASSERT_STRING_EQUAL(buf, TP_VALID);

    for (int i = 0; i < 100; i++) {
        ctx_trace_new(&t);
        CU_ASSERT_EQUAL(ctx_trace_format(&t, buf, sizeof(buf)), CTX_TRACEPARENT_LEN);
        CU_ASSERT_EQUAL(strlen(buf), CTX_TRACEPARENT_LEN);
        CU_ASSERT_EQUAL(ctx_trace_parse(buf, CTX_TRACEPARENT_LEN, &back), 0);
        CU_ASSERT_EQUAL(memcmp(&t, &back, sizeof(t)), 0);
    }
}

static void test_ctx_trace_format_small_buffer(void)
{
    struct ctx_trace t;
    char buf[CTX_TRACEPARENT_LEN + 1];
    ctx_trace_new(&t);
    memset(buf, 'x', sizeof(buf));
    CU_ASSERT_EQUAL(ctx_trace_format(&t, buf, CTX_TRACEPARENT_LEN), 0);
    CU_ASSERT_EQUAL(buf[0], 'x'); /* nothing written */
    CU_ASSERT_EQUAL(ctx_trace_format(&t, NULL, 100), 0);
}

static bool zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0)
            return false;
    }
    return true;
}

static void test_ctx_trace_new_random(void)
{
    struct ctx_trace a, b;
    ctx_trace_new(&a);
    ctx_trace_new(&b);
    CU_ASSERT_EQUAL(a.flags, 0x01);
    CU_ASSERT_FALSE(zero(a.trace_id, sizeof(a.trace_id)));
    CU_ASSERT_FALSE(zero(a.span_id, sizeof(a.span_id)));
    CU_ASSERT_NOT_EQUAL(memcmp(a.trace_id, b.trace_id, sizeof(a.trace_id)), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a.span_id, b.span_id, sizeof(a.span_id)), 0);
}

static void test_ctx_span_new_nonzero_distinct(void)
{
    enum { N = 1000 };
    static uint8_t spans[N][8];
    int zeros = 0, dups = 0;
    for (int i = 0; i < N; i++) {
        ctx_span_new(spans[i]);
        zeros += zero(spans[i], 8);
        if (i > 0)
            dups += memcmp(spans[i], spans[i - 1], 8) == 0;
    }
    CU_ASSERT_EQUAL(zeros, 0);
    CU_ASSERT_EQUAL(dups, 0);
}

static void test_ctx_hex_encode_lower(void)
{
    static const uint8_t in[] = {0x00, 0x0f, 0xa5, 0xff};
    char out[2 * sizeof(in) + 1];
    memset(out, 'x', sizeof(out));
    ctx_hex_encode(in, sizeof(in), out);
    CU_ASSERT_STRING_EQUAL(out, "000fa5ff");
}

int suite_context_trace(void);

int suite_context_trace(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_ctx_trace_parse_valid),
        SPINDLE_TEST(test_ctx_trace_parse_uses_len),
        SPINDLE_TEST(test_ctx_trace_parse_invalid),
        SPINDLE_TEST(test_ctx_trace_format_round_trip),
        SPINDLE_TEST(test_ctx_trace_format_small_buffer),
        SPINDLE_TEST(test_ctx_trace_new_random),
        SPINDLE_TEST(test_ctx_span_new_nonzero_distinct),
        SPINDLE_TEST(test_ctx_hex_encode_lower),
    };
    return SPINDLE_SUITE_ADD("context_trace", NULL, NULL, tests);
}
