/* test_format.c - unit tests for logging/format.c: string escaping, UTF-8 repair, truncation,
 * timestamps and whole lines, each line checked by parsing it back with jansson.
 */
#include <CUnit/CUnit.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context/ctx.h"
#include "logging/internal.h"
#include "tests/suite.h"

static char out[LOG_FMT_BUF];

/* Escape s and return it as a NUL-terminated string in `out`. */
static const char *esc(const char *s, size_t len)
{
    size_t n = log_json_escape(out, LOG_VALUE_MAX, s, len);
    CU_ASSERT_FATAL(n <= LOG_VALUE_MAX);
    out[n] = '\0';
    return out;
}

/* Parse "<escaped>" as a JSON string; returns a copy of its value (caller frees) or NULL. */
static char *parse_escaped(const char *escaped, size_t *len)
{
    size_t n = strlen(escaped);
    char *doc = malloc(n + 3);
    CU_ASSERT_FATAL(doc != NULL);
    doc[0] = '"';
    memcpy(doc + 1, escaped, n);
    doc[n + 1] = '"';
    doc[n + 2] = '\0';
    json_error_t err;
    json_t *j = json_loads(doc, JSON_DECODE_ANY, &err);
    free(doc);
    if (j == NULL || !json_is_string(j)) {
        json_decref(j);
        return NULL;
    }
    *len = json_string_length(j);
    char *copy = malloc(*len + 1);
    CU_ASSERT_FATAL(copy != NULL);
    memcpy(copy, json_string_value(j), *len + 1);
    json_decref(j);
    return copy;
}

static void test_log_json_escape_specials(void)
{
    const char in[] = "a\"b\\c/\n\r\t\b\f\x01\x1f\x7f end";
    CU_ASSERT_STRING_EQUAL(esc(in, sizeof(in) - 1),
                           "a\\\"b\\\\c/\\n\\r\\t\\b\\f\\u0001\\u001f\x7f end");
    size_t len;
    char *back = parse_escaped(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_EQUAL(len, sizeof(in) - 1);
    CU_ASSERT(memcmp(back, in, len) == 0);
    free(back);
    /* An embedded NUL (LOG_STRN) is a control character too. */
    CU_ASSERT_STRING_EQUAL(esc("x\0y", 3), "x\\u0000y");
}

static void test_log_json_escape_valid_utf8_kept(void)
{
    const char *ok[] = {"\xc3\xa9t\xc3\xa9", "\xe2\x82\xac",     "\xf0\x9f\x98\x80 emoji",
                        "\xef\xbf\xbd",      "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf",
                        "\xee\x80\x80"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        CU_ASSERT_STRING_EQUAL(esc(ok[i], strlen(ok[i])), ok[i]);
        size_t len;
        char *back = parse_escaped(out, &len);
        CU_ASSERT_PTR_NOT_NULL(back);
        free(back);
    }
}

static void test_log_json_escape_invalid_utf8_replaced(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' (2 bytes) */
        {"\xc1\xbf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
        {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong (3 bytes) */
        {"\xf0\x80\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* (4 bytes) */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* high surrogate U+D800 */
        {"\xed\xbf\xbf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* low surrogate U+DFFF */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* >U+10FFFF */
        {"\xf5\x80", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xff", "\xef\xbf\xbd"},
        {"a\x80z", "a\xef\xbf\xbdz"},     /* lone continuation */
        {"\xe2\x82", "\xef\xbf\xbd"},     /* cut at the end */
        {"\xe2\x82x", "\xef\xbf\xbdx"},   /* cut in the middle */
        {"\xf0\x9f\x98", "\xef\xbf\xbd"}, /* emoji missing a byte */
        {"\xf0\x9f\x98\"", "\xef\xbf\xbd\\\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        esc(cases[i].in, strlen(cases[i].in));
        CU_ASSERT_STRING_EQUAL(out, cases[i].want);
        size_t len;
        char *back = parse_escaped(out, &len); /* jansson rejects invalid UTF-8 */
        CU_ASSERT_PTR_NOT_NULL(back);
        free(back);
    }
}

static bool ends_with_mark(const char *s, size_t n)
{
    return n >= LOG_TRUNC_MARK_LEN &&
           memcmp(s + n - LOG_TRUNC_MARK_LEN, LOG_TRUNC_MARK, LOG_TRUNC_MARK_LEN) == 0;
}

static void test_log_json_escape_truncates_ascii(void)
{
    char *big = malloc(3 * LOG_VALUE_MAX);
    CU_ASSERT_FATAL(big != NULL);
    memset(big, 'a', 3 * LOG_VALUE_MAX);

    /* Exactly the limit fits without a marker; one more byte is cut. */
    size_t n = log_json_escape(out, LOG_VALUE_MAX, big, LOG_VALUE_MAX);
    CU_ASSERT_EQUAL(n, LOG_VALUE_MAX);
    CU_ASSERT_FALSE(ends_with_mark(out, n));
    n = log_json_escape(out, LOG_VALUE_MAX, big, LOG_VALUE_MAX + 1);
    CU_ASSERT_EQUAL(n, LOG_VALUE_MAX);
    CU_ASSERT_TRUE(ends_with_mark(out, n));
    for (size_t i = 0; i < n - LOG_TRUNC_MARK_LEN; i++)
        CU_ASSERT_EQUAL_FATAL(out[i], 'a');
    n = log_json_escape(out, LOG_VALUE_MAX, big, 3 * LOG_VALUE_MAX);
    CU_ASSERT_EQUAL(n, LOG_VALUE_MAX);
    CU_ASSERT_TRUE(ends_with_mark(out, n));
    free(big);
}

/* Cuts land on character boundaries: multi-byte UTF-8 and 6-byte escapes are never split. */
static void test_log_json_escape_truncates_on_boundary(void)
{
    size_t reps = 2000;
    char *euro = malloc(reps * 3), *ctl = malloc(reps);
    CU_ASSERT_FATAL(euro != NULL && ctl != NULL);
    for (size_t i = 0; i < reps; i++) {
        memcpy(euro + 3 * i, "\xe2\x82\xac", 3);
        ctl[i] = '\x01';
    }
    size_t n = log_json_escape(out, LOG_VALUE_MAX, euro, reps * 3);
    CU_ASSERT(n <= LOG_VALUE_MAX);
    CU_ASSERT_TRUE(ends_with_mark(out, n));
    CU_ASSERT_EQUAL((n - LOG_TRUNC_MARK_LEN) % 3, 0);
    out[n] = '\0';
    size_t len;
    char *back = parse_escaped(out, &len);
    CU_ASSERT_PTR_NOT_NULL(back);
    free(back);

    n = log_json_escape(out, LOG_VALUE_MAX, ctl, reps);
    CU_ASSERT(n <= LOG_VALUE_MAX);
    CU_ASSERT_TRUE(ends_with_mark(out, n));
    CU_ASSERT_EQUAL((n - LOG_TRUNC_MARK_LEN) % 6, 0);
    out[n] = '\0';
    back = parse_escaped(out, &len);
    CU_ASSERT_PTR_NOT_NULL(back);
    free(back);

    /* A small budget (keys) works the same way. */
    n = log_json_escape(out, 20, "abcdefghijklmnopqrstuvwxyz", 26);
    CU_ASSERT_EQUAL(n, 20);
    CU_ASSERT(memcmp(out, "abcdef" LOG_TRUNC_MARK, 20) == 0);
    free(euro);
    free(ctl);
}

static void test_log_fmt_ts_matches_gmtime(void)
{
    const int64_t secs[] = {0,          951782400 /* 2000-02-29 */,  1709164799,
                            1795316645, 4102444800 /* 2100-01-01 */, 253402300799 /* 9999-12-31 */};
    struct log_ts_cache cache = {.sec = -1};
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
        char want[64], got[32], cached[32];
        time_t t = (time_t)secs[i];
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S", &tm);
        strcat(want, ".012345Z");
        CU_ASSERT_EQUAL(log_fmt_ts(got, secs[i], 12345, NULL), 27);
        got[27] = '\0';
        CU_ASSERT_STRING_EQUAL(got, want);
        log_fmt_ts(cached, secs[i], 12345, &cache);
        cached[27] = '\0';
        CU_ASSERT_STRING_EQUAL(cached, want);
        CU_ASSERT_EQUAL(cache.sec, secs[i]);
    }
    char a[32];
    log_fmt_ts(a, 1795316645, 999999, &cache);
    CU_ASSERT(memcmp(a, "2026-11-22T", 11) == 0);
    CU_ASSERT(memcmp(a + 19, ".999999Z", 8) == 0);
}

/* Format a line and parse it; checks it is one line, newline-terminated, within the cap. */
static json_t *fmt_parse(const struct log_line_head *h, const struct log_field *f, size_t n)
{
    size_t len = log_fmt_line(out, h, f, n);
    CU_ASSERT_FATAL(len > 0 && len <= LOG_LINE_MAX);
    CU_ASSERT_EQUAL(out[len - 1], '\n');
    CU_ASSERT_PTR_NULL(memchr(out, '\n', len - 1));
    json_error_t err;
    json_t *j = json_loadb(out, len, JSON_ALLOW_NUL, &err);
    if (j == NULL)
        fprintf(stderr, "json error: %s in %.*s\n", err.text, (int)(len > 300 ? 300 : len), out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    return j;
}

static void check_key_order(json_t *j, const char *const *keys, size_t n)
{
    size_t i = 0;
    for (void *it = json_object_iter(j); it != NULL; it = json_object_iter_next(j, it), i++) {
        CU_ASSERT_FATAL(i < n);
        CU_ASSERT_STRING_EQUAL(json_object_iter_key(it), keys[i]);
    }
    CU_ASSERT_EQUAL(i, n);
}

static void test_log_fmt_line_types_and_order(void)
{
    struct log_line_head h = {.level = LOG_LEVEL_WARN,
                              .msg = "hello \"w\"",
                              .thread = "main",
                              .thread_len = 4,
                              .sec = 1795316645,
                              .usec = 123456};
    const char raw[] = {'a', 'b', 'c', 'd'};
    struct log_field f[] = {
        LOG_STR("s", "v"),        LOG_STRN("sn", raw, 3),     LOG_INT("i", INT64_MIN),
        LOG_UINT("u", INT64_MAX), LOG_DBL("d", 0.1),          LOG_DBL("nan", NAN),
        LOG_BOOL("b", true),      LOG_DUR("dur_ms", 1234567), LOG_STR("null", NULL),
        LOG_DBL("big", 1e300),    LOG_BOOL("f", false),       LOG_INT("neg", -42),
    };
    json_t *j = fmt_parse(&h, f, sizeof(f) / sizeof(f[0]));
    const char *keys[] = {"ts", "level", "msg", "thread", "s",    "sn",  "i", "u",
                          "d",  "nan",   "b",   "dur_ms", "null", "big", "f", "neg"};
    check_key_order(j, keys, sizeof(keys) / sizeof(keys[0]));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "ts")),
                           "2026-11-22T03:04:05.123456Z");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "level")), "warn");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")), "hello \"w\"");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "thread")), "main");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "sn")), "abc");
    CU_ASSERT_TRUE(json_is_integer(json_object_get(j, "i")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "i")), INT64_MIN);
    CU_ASSERT_TRUE(json_is_integer(json_object_get(j, "neg")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "neg")), -42);
    CU_ASSERT_TRUE(json_is_real(json_object_get(j, "d")));
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(j, "d")), 0.1, 0);
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(j, "big")), 1e300, 0);
    CU_ASSERT_TRUE(json_is_null(json_object_get(j, "nan")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "b")));
    CU_ASSERT_TRUE(json_is_false(json_object_get(j, "f")));
    CU_ASSERT_TRUE(json_is_null(json_object_get(j, "null")));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(j, "dur_ms")), 1.235, 1e-9);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "u")), INT64_MAX);
    json_decref(j);
    /* UINT64_MAX does not fit jansson's json_int_t: check the text itself. */
    f[3] = LOG_UINT("u", UINT64_MAX);
    log_fmt_line(out, &h, f, sizeof(f) / sizeof(f[0]));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"u\":18446744073709551615,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"d\":0.1,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"dur_ms\":1.235,"));
}

static void test_log_fmt_line_nasty_strings(void)
{
    const char nasty[] = "q\"b\\n\n\x01\xc0\xaf\xed\xa0\x80\xf0\x9f\x92\xa9\xff";
    struct log_line_head h = {
        .level = LOG_LEVEL_INFO, .msg = nasty, .thread = "t\"1", .thread_len = 3, .sec = 0};
    struct log_field f[] = {LOG_STR("k\"\n", nasty), LOG_STRN("bin", "\0\x80\x7f", 3)};
    json_t *j = fmt_parse(&h, f, 2);
    const char *want = "q\"b\\n\n\x01\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                       "\xf0\x9f\x92\xa9\xef\xbf\xbd";
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")), want);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "k\"\n")), want);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "thread")), "t\"1");
    json_t *bin = json_object_get(j, "bin");
    CU_ASSERT_EQUAL(json_string_length(bin), 5);
    CU_ASSERT(memcmp(json_string_value(bin), "\0\xef\xbf\xbd\x7f", 5) == 0);
    json_decref(j);
}

static void test_log_fmt_line_truncates_fields(void)
{
    char *big = malloc(LOG_VALUE_MAX * 2);
    CU_ASSERT_FATAL(big != NULL);
    memset(big, 'x', LOG_VALUE_MAX * 2);
    big[LOG_VALUE_MAX * 2 - 1] = '\0';
    struct log_line_head h = {.level = LOG_LEVEL_ERROR, .msg = big, .thread = "w", .thread_len = 1};
    struct log_field f[10];
    for (int i = 0; i < 10; i++)
        f[i] = LOG_STR("field", big);
    f[0].key = "f0";
    f[1].key = "f1";
    json_t *j = fmt_parse(&h, f, 10);
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "truncated")));
    const char *msg = json_string_value(json_object_get(j, "msg"));
    CU_ASSERT_EQUAL(strlen(msg), LOG_VALUE_MAX);
    CU_ASSERT_TRUE(ends_with_mark(msg, strlen(msg)));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(j, "f0"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(j, "f1"));
    json_decref(j);

    /* A line that fits has no "truncated" member; an over-long key is cut too. */
    char key[LOG_KEY_MAX * 2];
    memset(key, 'k', sizeof(key));
    key[sizeof(key) - 1] = '\0';
    f[0] = LOG_INT(key, 1);
    h.msg = "short";
    j = fmt_parse(&h, f, 1);
    CU_ASSERT_PTR_NULL(json_object_get(j, "truncated"));
    void *it = json_object_iter_at(j, "thread");
    it = json_object_iter_next(j, it);
    CU_ASSERT_EQUAL(strlen(json_object_iter_key(it)), LOG_KEY_MAX);
    json_decref(j);
    free(big);
}

static void test_log_fmt_line_context_fields(void)
{
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(ctx_set_request_id(c, "req-1", 5), 0);
    struct log_line_head h = {
        .level = LOG_LEVEL_INFO, .msg = "m", .thread = "t", .thread_len = 1, .ctx = c};
    struct log_field f = LOG_INT("n", 7);
    json_t *j = fmt_parse(&h, &f, 1);
    const char *keys1[] = {"ts", "level", "msg", "thread", "request_id", "n"};
    check_key_order(j, keys1, 6); /* empty tenant and trace are left out */
    json_decref(j);

    struct ctx_trace tr;
    ctx_trace_new(&tr);
    ctx_set_trace(c, &tr);
    CU_ASSERT_EQUAL(ctx_set_tenant(c, "acme", 4), 0);
    j = fmt_parse(&h, &f, 1);
    const char *keys2[] = {"ts",     "level",    "msg",     "thread", "request_id",
                           "tenant", "trace_id", "span_id", "n"};
    check_key_order(j, keys2, 9);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "request_id")), "req-1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "tenant")), "acme");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "trace_id")), ctx_trace_id_hex(c));
    CU_ASSERT_EQUAL(strlen(json_string_value(json_object_get(j, "span_id"))), 16);
    json_decref(j);

    /* a fan-out child adds its parent span and index */
    struct ctx *child = ctx_new_child(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(child);
    ctx_span_start(child);
    ctx_set_index(child, 12);
    h.ctx = child;
    j = fmt_parse(&h, &f, 1);
    const char *keys3[] = {"ts",     "level",    "msg",     "thread",         "request_id",
                           "tenant", "trace_id", "span_id", "parent_span_id", "index",
                           "n"};
    check_key_order(j, keys3, 11);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "parent_span_id")),
                           ctx_span_id_hex(c));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "span_id")),
                           ctx_span_id_hex(child));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "index")), 12);
    json_decref(j);
    ctx_unref(child);
    ctx_unref(c);
}

static void test_log_level_name_and_parse(void)
{
    static const char *const names[] = {"trace", "debug", "info", "warn", "error", "fatal"};
    for (int i = 0; i < LOG_LEVEL__COUNT; i++) {
        enum log_level lv;
        CU_ASSERT_STRING_EQUAL(log_level_name((enum log_level)i), names[i]);
        CU_ASSERT_EQUAL(log_level_parse(names[i], &lv), 0);
        CU_ASSERT_EQUAL(lv, i);
    }
    enum log_level lv = LOG_LEVEL_TRACE;
    CU_ASSERT_EQUAL(log_level_parse("WARN", &lv), 0);
    CU_ASSERT_EQUAL(lv, LOG_LEVEL_WARN);
    CU_ASSERT_EQUAL(log_level_parse("Error", &lv), 0);
    CU_ASSERT_EQUAL(lv, LOG_LEVEL_ERROR);
    CU_ASSERT_EQUAL(log_level_parse("verbose", &lv), -EINVAL);
    CU_ASSERT_EQUAL(log_level_parse("", &lv), -EINVAL);
    CU_ASSERT_EQUAL(log_level_parse(NULL, &lv), -EINVAL);
    CU_ASSERT_STRING_EQUAL(log_level_name(LOG_LEVEL__COUNT), "unknown");
    CU_ASSERT_STRING_EQUAL(log_level_name((enum log_level) - 1), "unknown");
}

int suite_logging_format(void);
int suite_logging_format(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_log_json_escape_specials),
        SPINDLE_TEST(test_log_json_escape_valid_utf8_kept),
        SPINDLE_TEST(test_log_json_escape_invalid_utf8_replaced),
        SPINDLE_TEST(test_log_json_escape_truncates_ascii),
        SPINDLE_TEST(test_log_json_escape_truncates_on_boundary),
        SPINDLE_TEST(test_log_fmt_ts_matches_gmtime),
        SPINDLE_TEST(test_log_fmt_line_types_and_order),
        SPINDLE_TEST(test_log_fmt_line_nasty_strings),
        SPINDLE_TEST(test_log_fmt_line_truncates_fields),
        SPINDLE_TEST(test_log_fmt_line_context_fields),
        SPINDLE_TEST(test_log_level_name_and_parse),
    };
    return SPINDLE_SUITE_ADD("logging_format", NULL, NULL, tests);
}
