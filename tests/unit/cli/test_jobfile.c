/* test_jobfile.c - cli/jobfile.c: the jobs of `spindle call`, from a file of JSON lines or from
 * the command line: counting, parsing (valid and invalid lines), defaults, percent-encoding of
 * the parameters, and reading --body files.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/internal.h"
#include "tests/suite.h"

int suite_cli_jobfile(void);

#define JOBS_MAX 16

/* Parse `text` into jobs[] (zeroed); returns cli_jobs_parse's code, *n the jobs filled. */
static int jobs_parse(struct cli_job *jobs, unsigned *n, const char *text, const char *tenant)
{
    memset(jobs, 0, JOBS_MAX * sizeof(*jobs));
    *n = 0;
    CU_ASSERT_FATAL(cli_jobs_count(text) <= JOBS_MAX);
    return cli_jobs_parse(jobs, n, text, "base", tenant);
}

static void jobs_free(struct cli_job *jobs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        cli_job_fini(&jobs[i]);
}

static void test_cli_jobs_count_blank_lines(void)
{
    CU_ASSERT_EQUAL(cli_jobs_count(""), 0);
    CU_ASSERT_EQUAL(cli_jobs_count("\n\n \t\r\n"), 0);
    CU_ASSERT_EQUAL(cli_jobs_count("{}"), 1); /* the last line needs no newline */
    CU_ASSERT_EQUAL(cli_jobs_count("a\n\n  \nb\r\n\nc"), 3);
}

static void test_cli_jobs_parse_fields(void)
{
    struct cli_job jobs[JOBS_MAX];
    unsigned n;
    const char *text =
        "{\"kind\":\"primes\",\"params\":{\"n\":1000}}\n"
        "\n"
        "{\"kind\":\"compress\",\"params\":{\"codec\":\"zstd\",\"level\":2.5,\"x\":true},"
        "\"body\":\"hello\",\"tenant\":\"acme\",\"id\":\"job-7\"}\n"
        "{\"kind\":\"noop\",\"params\":{\"q\":\"a b&c\"}}";
    CU_ASSERT_EQUAL_FATAL(jobs_parse(jobs, &n, text, "dflt"), 0);
    CU_ASSERT_EQUAL_FATAL(n, 3);

    CU_ASSERT_EQUAL(jobs[0].index, 0);
    CU_ASSERT_EQUAL(jobs[0].line, 1);
    CU_ASSERT_STRING_EQUAL(jobs[0].kind, "primes");
    CU_ASSERT_STRING_EQUAL(jobs[0].query, "n=1000");
    CU_ASSERT_PTR_NULL(jobs[0].body);
    CU_ASSERT_STRING_EQUAL(jobs[0].tenant, "dflt"); /* --tenant, borrowed */
    CU_ASSERT_FALSE(jobs[0].tenant_own);
    CU_ASSERT_STRING_EQUAL(jobs[0].request_id, "base-0");
    CU_ASSERT_PTR_NULL(jobs[0].invalid);

    CU_ASSERT_EQUAL(jobs[1].index, 1);
    CU_ASSERT_EQUAL(jobs[1].line, 3); /* the blank line counts as a line, not as a job */
    CU_ASSERT_STRING_EQUAL(jobs[1].query, "codec=zstd&level=2.5&x=true");
    CU_ASSERT_EQUAL(jobs[1].body_len, 5);
    CU_ASSERT_STRING_EQUAL(jobs[1].body, "hello");
    CU_ASSERT_STRING_EQUAL(jobs[1].tenant, "acme");
    CU_ASSERT_TRUE(jobs[1].tenant_own);
    CU_ASSERT_STRING_EQUAL(jobs[1].request_id, "job-7");

    CU_ASSERT_STRING_EQUAL(jobs[2].query, "q=a%20b%26c");
    CU_ASSERT_STRING_EQUAL(jobs[2].request_id, "base-2");
    CU_ASSERT_STRING_EQUAL(jobs[2].tenant, "dflt");
    jobs_free(jobs, n);
}

static void test_cli_jobs_parse_invalid_lines(void)
{
    static const struct {
        const char *line;
        const char *why; /* a part of the reason */
    } cases[] = {
        {"not json", "not a JSON object"},
        {"[1,2]", "not a JSON object"},
        {"{\"params\":{}}", "\"kind\""},
        {"{\"kind\":\"a/b\"}", "\"kind\""},
        {"{\"kind\":\"noop\",\"extra\":1}", "unknown field \"extra\""},
        {"{\"kind\":\"noop\",\"params\":[1]}", "\"params\" must be an object"},
        {"{\"kind\":\"noop\",\"params\":{\"n\":[1]}}", "params.n"},
        {"{\"kind\":\"noop\",\"body\":1}", "\"body\" must be a string"},
        {"{\"kind\":\"noop\",\"tenant\":\"a b\"}", "\"tenant\""},
        {"{\"kind\":\"noop\",\"id\":\"\"}", "\"id\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cli_job jobs[JOBS_MAX];
        unsigned n;
        char text[256];
        snprintf(text, sizeof(text), "{\"kind\":\"noop\"}\n%s\n{\"kind\":\"noop\"}\n",
                 cases[i].line);
        CU_ASSERT_EQUAL_FATAL(jobs_parse(jobs, &n, text, NULL), 0);
        CU_ASSERT_EQUAL_FATAL(n, 3);        /* a bad line does not stop the others */
        CU_ASSERT_PTR_NULL(jobs[0].tenant); /* no --tenant: none sent */
        CU_ASSERT_PTR_NULL(jobs[0].invalid);
        CU_ASSERT_PTR_NOT_NULL(jobs[1].invalid);
        if (jobs[1].invalid && strstr(jobs[1].invalid, cases[i].why) == NULL)
            CU_FAIL("the reason does not say what is wrong");
        CU_ASSERT_EQUAL(jobs[1].line, 2);
        CU_ASSERT_PTR_NULL(jobs[2].invalid);
        CU_ASSERT_STRING_EQUAL(jobs[2].request_id, "base-2");
        jobs_free(jobs, n);
    }
}

static void test_cli_job_single_params_and_body(void)
{
    char path[] = "/tmp/spindle-jobfile-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "abc\0def", 7), 7);
    close(fd);
    char *params[] = {"n=10", "q=a b", "e="};
    struct cli_call_opts o = {
        .kind = "sha256", .params = params, .nparams = 3, .body = path, .tenant = "t1"};
    struct cli_job j = {0};
    char err[256] = "";
    CU_ASSERT_EQUAL(cli_job_single(&j, &o, "rid-1", err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(j.kind, "sha256");
    CU_ASSERT_STRING_EQUAL(j.query, "n=10&q=a%20b&e=");
    CU_ASSERT_STRING_EQUAL(j.request_id, "rid-1");
    CU_ASSERT_STRING_EQUAL(j.tenant, "t1");
    CU_ASSERT_EQUAL(j.body_len, 7);
    CU_ASSERT(j.body && memcmp(j.body, "abc\0def", 7) == 0);
    cli_job_fini(&j);

    unlink(path);
    struct cli_job k = {0};
    CU_ASSERT_EQUAL(cli_job_single(&k, &o, "rid-2", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--body"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    cli_job_fini(&k);
}

static void test_cli_file_read_missing(void)
{
    size_t len = 0;
    errno = 0;
    CU_ASSERT_PTR_NULL(cli_file_read("/nonexistent/spindle/jobs.jsonl", &len));
    CU_ASSERT_EQUAL(errno, ENOENT);
}

static void test_cli_percent_encode_reserved(void)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const char in[] = "aZ9-._~ b&c=d/\xc3\xa9%+";
    CU_ASSERT_EQUAL(cli_percent_encode(f, in, strlen(in)), 0);
    CU_ASSERT_EQUAL(fclose(f), 0);
    CU_ASSERT_STRING_EQUAL(s, "aZ9-._~%20b%26c%3Dd%2F%C3%A9%25%2B");
    free(s);
}

int suite_cli_jobfile(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_cli_jobs_count_blank_lines),
        SPINDLE_TEST(test_cli_jobs_parse_fields),
        SPINDLE_TEST(test_cli_jobs_parse_invalid_lines),
        SPINDLE_TEST(test_cli_job_single_params_and_body),
        SPINDLE_TEST(test_cli_file_read_missing),
        SPINDLE_TEST(test_cli_percent_encode_reserved),
    };
    return SPINDLE_SUITE_ADD("cli_jobfile", NULL, NULL, tests);
}
