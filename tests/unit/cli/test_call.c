/* test_call.c - the pure parts of cli/call.c: --server URL parsing, the command line and the
 * token to send; and the tokens of cli/keygen.c. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/internal.h"
#include "tests/suite.h"

int suite_cli_call(void);

/* ---- URL ---- */

static void test_cli_url_parse_forms(void)
{
    struct cli_url u;
    char err[256];
    CU_ASSERT_EQUAL(cli_url_parse("http://127.0.0.1:8080", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "127.0.0.1");
    CU_ASSERT_STRING_EQUAL(u.port, "8080");
    CU_ASSERT_STRING_EQUAL(u.authority, "127.0.0.1:8080");
    CU_ASSERT_EQUAL(cli_url_parse("http://[::1]:9000/", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "::1");
    CU_ASSERT_STRING_EQUAL(u.port, "9000");
    CU_ASSERT_STRING_EQUAL(u.authority, "[::1]:9000");
    CU_ASSERT_EQUAL(cli_url_parse("localhost", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "localhost");
    CU_ASSERT_STRING_EQUAL(u.port, "80");
    CU_ASSERT_EQUAL(cli_url_parse("HTTP://[::1]", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.authority, "[::1]:80");
}

static void test_cli_url_parse_rejects(void)
{
    struct cli_url u;
    char err[256];
    CU_ASSERT_EQUAL(cli_url_parse("https://127.0.0.1:8443", &u, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "https is not supported"));
    static const char *const bad[] = {
        "ftp://h:1",       "http://",         "http://:80",    "http://h:0",      "http://h:65536",
        "http://h:8x",     "http://h:",       "http://::1:80", "http://[::1",     "http://[::1]x",
        "http://h:80/api", "http://h:80?x=1", "http://u@h:80", "http://h:123456",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(cli_url_parse(bad[i], &u, err, sizeof(err)), -EINVAL);
        CU_ASSERT(err[0] != '\0');
    }
}

/* ---- arguments ---- */

/* argv is static: the options borrow it (o->params points into it) after the call returns. */
static int call_parse(struct cli_call_opts *o, char *err, size_t size, int argc, ...)
{
    static char *argv[32];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return cli_call_args_parse(argc, argv, o, err, size);
}

static void test_cli_call_args_parse_single(void)
{
    struct cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "primes", "n=1000"), 0);
    CU_ASSERT_STRING_EQUAL(o.kind, "primes");
    CU_ASSERT_EQUAL(o.nparams, 1);
    CU_ASSERT_STRING_EQUAL(o.params[0], "n=1000");
    CU_ASSERT_STRING_EQUAL(o.server, "http://127.0.0.1:8080");
    CU_ASSERT_EQUAL(o.concurrency, 1);
    CU_ASSERT_EQUAL(o.retries, 3);
    CU_ASSERT_EQUAL(o.breaker, 5);
    CU_ASSERT_EQUAL(o.cooldown_ms, 1000);
    CU_ASSERT_EQUAL(o.timeout_ms, 0);
    CU_ASSERT_PTR_NULL(o.batch);
    /* options after the positional arguments, short forms */
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 11, "call", "compress", "codec=zstd",
                               "level=3", "--body", "-", "-o", "out.zst", "--timeout", "250",
                               "-s[::1]:1"),
                    0);
    CU_ASSERT_EQUAL(o.nparams, 2);
    CU_ASSERT_STRING_EQUAL(o.body, "-");
    CU_ASSERT_STRING_EQUAL(o.output, "out.zst");
    CU_ASSERT_EQUAL(o.timeout_ms, 250);
    CU_ASSERT_STRING_EQUAL(o.server, "[::1]:1");
}

static void test_cli_call_args_parse_batch(void)
{
    struct cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 15, "call", "--batch", "jobs.jsonl",
                               "--concurrency", "8", "--retries", "0", "--breaker", "2",
                               "--cooldown", "50", "--tenant", "acme", "--request-id", "run-7"),
                    0);
    CU_ASSERT_STRING_EQUAL(o.batch, "jobs.jsonl");
    CU_ASSERT_EQUAL(o.concurrency, 8);
    CU_ASSERT_EQUAL(o.retries, 0);
    CU_ASSERT_EQUAL(o.breaker, 2);
    CU_ASSERT_EQUAL(o.cooldown_ms, 50);
    CU_ASSERT_STRING_EQUAL(o.tenant, "acme");
    CU_ASSERT_STRING_EQUAL(o.request_id, "run-7");
    CU_ASSERT_PTR_NULL(o.kind);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 2, "call", "--help"), 0);
    CU_ASSERT(o.help);
}

static void test_cli_call_args_parse_errors(void)
{
    struct cli_call_opts o;
    char err[256];
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 1, "call"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "KIND"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "primes", "n"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "KEY=VALUE"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "primes", "=5"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 2, "call", "pri/mes"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "primes", "-b", "f"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 5, "call", "-b", "f", "--body", "x"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "-j", "0"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "-j", "4x"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--retries", "-1"),
                    -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--timeout", "0"), -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "noop", "--bogus"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--bogus"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 3, "call", "noop", "--tenant"), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing value"));
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--tenant", "a b"),
                    -EINVAL);
    CU_ASSERT_EQUAL(call_parse(&o, err, sizeof(err), 4, "call", "noop", "--request-id", "a b"),
                    -EINVAL);
}

/* ---- the token ---- */

/* The first line of --token-file, blanks around it cut; else $SPINDLE_TOKEN; else none. Errors
 * never repeat the token. */
static void test_cli_token_load_file_then_env(void)
{
    char tok[CLI_TOKEN_MAX + 1], err[256], path[] = "/tmp/spindle-token-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, "  spk_abc-_~+/=  \nsecond line\n", 31) == 31);
    close(fd);
    CU_ASSERT_EQUAL(setenv("SPINDLE_TOKEN", "spk_from_env", 1), 0);
    CU_ASSERT_EQUAL(cli_token_load(path, tok, sizeof(tok), err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(tok, "spk_abc-_~+/=");
    CU_ASSERT_EQUAL(cli_token_load(NULL, tok, sizeof(tok), err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(tok, "spk_from_env");
    CU_ASSERT_EQUAL(unsetenv("SPINDLE_TOKEN"), 0);
    CU_ASSERT_EQUAL(cli_token_load(NULL, tok, sizeof(tok), err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(tok, "");
    fd = open(path, O_WRONLY | O_TRUNC);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, "spk_has space\n", 14) == 14);
    close(fd);
    CU_ASSERT_EQUAL(cli_token_load(path, tok, sizeof(tok), err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NULL(strstr(err, "spk_has"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    unlink(path);
    CU_ASSERT_EQUAL(cli_token_load(path, tok, sizeof(tok), err, sizeof(err)), -EINVAL);
}

/* keygen's tokens: the documented shape, never twice the same, and the hash the server checks. */
static void test_cli_token_make_and_hash(void)
{
    char t1[CLI_TOKEN_LEN + 1], t2[CLI_TOKEN_LEN + 1], h1[65], h2[65], h[65];
    CU_ASSERT_EQUAL(cli_token_make(t1, sizeof(t1), h1, sizeof(h1)), 0);
    CU_ASSERT_EQUAL(cli_token_make(t2, sizeof(t2), h2, sizeof(h2)), 0);
    CU_ASSERT_EQUAL(strlen(t1), CLI_TOKEN_LEN);
    CU_ASSERT_EQUAL(strncmp(t1, "spk_", 4), 0);
    CU_ASSERT_EQUAL(
        strspn(t1 + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        CLI_TOKEN_LEN - 4);
    CU_ASSERT_STRING_NOT_EQUAL(t1, t2);
    CU_ASSERT_STRING_NOT_EQUAL(h1, h2);
    CU_ASSERT_EQUAL(cli_token_hash(t1, strlen(t1), h, sizeof(h)), 0);
    CU_ASSERT_STRING_EQUAL(h, h1);
    CU_ASSERT_EQUAL(cli_token_hash("abc", 3, h, sizeof(h)), 0); /* FIPS 180-2 test vector */
    CU_ASSERT_STRING_EQUAL(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CU_ASSERT_EQUAL(cli_token_make(t1, 8, h1, sizeof(h1)), -EINVAL);
}

int suite_cli_call(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cli_url_parse_forms),
        SPINDLE_TEST(test_cli_url_parse_rejects),
        SPINDLE_TEST(test_cli_call_args_parse_single),
        SPINDLE_TEST(test_cli_call_args_parse_batch),
        SPINDLE_TEST(test_cli_call_args_parse_errors),
        SPINDLE_TEST(test_cli_token_load_file_then_env),
        SPINDLE_TEST(test_cli_token_make_and_hash),
    };
    return SPINDLE_SUITE_ADD("cli_call", NULL, NULL, tests);
}
