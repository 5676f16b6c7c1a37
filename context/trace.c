/* trace.c - W3C Trace Context: parsing and formatting traceparent, new trace and span ids.
 *
 * Design: a traceparent value is "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>", exactly
 * CTX_TRACEPARENT_LEN bytes. Only version 00 is understood; anything else (a future version,
 * version ff, upper-case hex, all-zero ids, a wrong length or a misplaced dash) is rejected and
 * the caller starts a new trace, which is what the specification asks of a receiver that cannot
 * parse the header. Parsing is a fixed-offset scan: no allocation, no locale, no sscanf.
 *
 * New ids come from the calling thread's PRNG (rand.c): no lock and no system call per id. Every
 * function here is pure or touches only thread-local state, so any thread may call them.
 */
#include "context/ctx.h"
#include "context/internal.h"

#include <errno.h>
#include <string.h>

/* Offsets inside a version-00 traceparent. */
#define TP_TRACE_OFF 3
#define TP_SPAN_OFF  36
#define TP_FLAGS_OFF 53

static const char hex_digits[] = "0123456789abcdef";

void ctx_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

/* Lower-case hex digit value, -1 for anything else (upper case included: the spec forbids it). */
static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static int hex_decode(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]);
        int lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int ctx_trace_parse(const char *s, size_t len, struct ctx_trace *out)
{
    uint8_t flags;

    if (s == NULL || out == NULL || len != CTX_TRACEPARENT_LEN)
        return -EINVAL;
    if (s[0] != '0' || s[1] != '0' || s[TP_TRACE_OFF - 1] != '-' || s[TP_SPAN_OFF - 1] != '-' ||
        s[TP_FLAGS_OFF - 1] != '-')
        return -EINVAL;
    if (hex_decode(s + TP_TRACE_OFF, sizeof(out->trace_id), out->trace_id) != 0 ||
        hex_decode(s + TP_SPAN_OFF, sizeof(out->span_id), out->span_id) != 0 ||
        hex_decode(s + TP_FLAGS_OFF, 1, &flags) != 0)
        return -EINVAL;
    if (all_zero(out->trace_id, sizeof(out->trace_id)) ||
        all_zero(out->span_id, sizeof(out->span_id)))
        return -EINVAL;
    out->flags = flags;
    return 0;
}

size_t ctx_trace_format(const struct ctx_trace *t, char *buf, size_t size)
{
    if (buf == NULL || size < CTX_TRACEPARENT_LEN + 1)
        return 0;
    memcpy(buf, "00-", 3);
    ctx_hex_encode(t->trace_id, sizeof(t->trace_id), buf + TP_TRACE_OFF);
    buf[TP_SPAN_OFF - 1] = '-';
    ctx_hex_encode(t->span_id, sizeof(t->span_id), buf + TP_SPAN_OFF);
    buf[TP_FLAGS_OFF - 1] = '-';
    ctx_hex_encode(&t->flags, 1, buf + TP_FLAGS_OFF);
    return CTX_TRACEPARENT_LEN;
}

void ctx_span_new(uint8_t span_id[8])
{
    uint64_t v;
    do {
        v = ctx_rand_u64();
    } while (v == 0); /* an all-zero parent id is invalid on the wire */
    memcpy(span_id, &v, sizeof(v));
}

void ctx_trace_new(struct ctx_trace *out)
{
    uint64_t hi, lo;
    do {
        hi = ctx_rand_u64();
        lo = ctx_rand_u64();
    } while ((hi | lo) == 0);
    memcpy(out->trace_id, &hi, sizeof(hi));
    memcpy(out->trace_id + sizeof(hi), &lo, sizeof(lo));
    ctx_span_new(out->span_id);
    out->flags = 0x01; /* sampled */
}
