/* test_registry.c - the snapshots of job kinds (server/jobs/registry.c): the built-in kinds
 * described through the ABI, lookup and order, reference counts (a job keeps its kind's snapshot
 * alive across an install), [kind.NAME] sections that do not build (a built-in's name, a missing
 * module, an exec kind without its engine), each error with FILE:LINE. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <string.h>

#include "server/jobs/jobs.h"
#include "tests/suite.h"
#include "tests/unit/server/jobs/support.h"

int suite_server_jobs_registry(void);

static void test_srv_kinds_builtin_every_kind(void)
{
    static const char *const names[] = {"compress", "noop", "primes", "sha256", "spin"};
    const struct srv_kinds *ks = srv_kinds_builtin();
    CU_ASSERT_EQUAL(srv_kinds_count(ks), JT_N(names));
    for (size_t i = 0; i < JT_N(names); i++) {
        const struct srv_kind *k = srv_kinds_at(ks, i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(k);
        CU_ASSERT_STRING_EQUAL(k->name, names[i]); /* in name order */
        CU_ASSERT_PTR_EQUAL(srv_kinds_find(ks, names[i], strlen(names[i])), k);
        CU_ASSERT_EQUAL(k->origin, SRV_KIND_BUILTIN);
        CU_ASSERT_EQUAL(k->desc.abi_major, SPINDLE_ABI_MAJOR);
        CU_ASSERT_PTR_NOT_NULL(k->desc.run);
        CU_ASSERT(strlen(k->desc.summary) > 0);
        CU_ASSERT_PTR_EQUAL(k->owner, ks);
    }
    CU_ASSERT_PTR_NULL(srv_kinds_at(ks, JT_N(names)));
    CU_ASSERT_TRUE(jt_kind("sha256")->desc.uses_body);
    CU_ASSERT_TRUE(jt_kind("compress")->desc.uses_body);
    CU_ASSERT_FALSE(jt_kind("noop")->desc.uses_body);
    CU_ASSERT_EQUAL(jt_kind("noop")->nparams, 0);
    CU_ASSERT_EQUAL(jt_kind("compress")->nparams, 2);
    CU_ASSERT_STRING_EQUAL(jt_kind("primes")->params[0].name, "n");
    CU_ASSERT(jt_kind("primes")->params[0].limit >= 0); /* capped by max_primes_n */
}

static void test_srv_kinds_find_unknown(void)
{
    const struct srv_kinds *ks = srv_kinds_builtin();
    CU_ASSERT_PTR_NULL(srv_kinds_find(ks, "", 0));
    CU_ASSERT_PTR_NULL(srv_kinds_find(ks, "nop", 3));
    CU_ASSERT_PTR_NULL(srv_kinds_find(ks, "noopx", 5));
    CU_ASSERT_PTR_NULL(srv_kinds_find(ks, "NOOP", 4));
    CU_ASSERT_PTR_NULL(srv_kinds_find(ks, "batch", 5));
    CU_ASSERT_PTR_NULL(srv_kinds_find(ks, "noop\0", 5));
    /* the length counts, not a NUL: a prefix of a longer buffer is found */
    const struct srv_kind *k = srv_kinds_find(ks, "primes/extra", 6);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_STRING_EQUAL(k->name, "primes");
}

/* A job holds its snapshot: installing another one (a reload) does not free it under the job. */
static void test_srv_kinds_job_keeps_snapshot(void)
{
    char err[256] = "";
    struct srv_cfg *cfg = calloc(1, sizeof(*cfg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    srv_cfg_defaults(cfg);
    struct srv_kinds *a = srv_kinds_build(cfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    srv_kinds_install(a); /* takes the build's reference */
    struct srv_kinds *cur = srv_kinds_current();
    CU_ASSERT_PTR_EQUAL(cur, a);
    const struct srv_kind *k = srv_kinds_find(cur, "primes", 6);
    struct srv_job_param p[] = {JT_P("n", "100")};
    struct spindle_job job;
    CU_ASSERT_EQUAL_FATAL(srv_job_prepare(&job, k, p, 1, NULL, 0, cfg), 0);
    srv_kinds_unref(cur);
    struct srv_kinds *b = srv_kinds_build(cfg, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    srv_kinds_install(b); /* a's last references: the job's */
    struct srv_kinds *now = srv_kinds_current();
    CU_ASSERT_PTR_EQUAL(now, b);
    srv_kinds_unref(now);
    /* a still holds the job's kind: run it and read its answer */
    CU_ASSERT_EQUAL(srv_job_run(&job), 0);
    struct srv_job_answer ans;
    srv_job_outcome(&job, &ans);
    CU_ASSERT_EQUAL(ans.len, strlen("{\"n\":100,\"count\":25}"));
    CU_ASSERT_STRING_EQUAL(k->name, "primes");
    srv_job_fini(&job); /* frees a (ASan would see a use after free above otherwise) */
    srv_kinds_install(NULL);
    /* with nothing installed, current gives the built-in kinds */
    struct srv_kinds *dflt = srv_kinds_current();
    CU_ASSERT_PTR_EQUAL(dflt, srv_kinds_builtin());
    srv_kinds_unref(dflt);
    free(cfg);
}

static char *tr_build_err(const char *section_and_keys)
{
    static char err[2048];
    struct srv_cfg *cfg = calloc(1, sizeof(*cfg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cfg);
    srv_cfg_defaults(cfg);
    snprintf(cfg->source, sizeof(cfg->source), "test.conf");
    /* one section of one key, as a file would give it, on lines 3 (section) and 4 (key) */
    char name[64], key[32], value[256];
    CU_ASSERT_FATAL(sscanf(section_and_keys, "%63s %31s %255[^\n]", name, key, value) == 3);
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(cfg, name, key, value, "test", err, sizeof(err)), 0);
    cfg->kinds[0].line = 3;
    cfg->kinds[0].key_line[strcmp(key, "exec") == 0 ? 0 : 1] = 4;
    err[0] = '\0';
    struct srv_kinds *ks = srv_kinds_build(cfg, err, sizeof(err));
    CU_ASSERT_PTR_NULL(ks);
    srv_kinds_unref(ks);
    free(cfg);
    return err;
}

static void test_srv_kinds_build_errors(void)
{
    CU_ASSERT_STRING_EQUAL(tr_build_err("kind.noop module /x/noop.so"),
                           "test.conf:3: [kind.noop]: the name of a built-in kind");
    const char *e = tr_build_err("kind.nothere module /nonexistent/nothere.so");
    CU_ASSERT_STRING_EQUAL(e, "test.conf:4: [kind.nothere] module: module "
                              "/nonexistent/nothere.so: No such file or directory");
    e = tr_build_err("kind.notso module /etc/hostname");
    const char *want = "test.conf:4: [kind.notso] module: module /etc/hostname: cannot load: ";
    CU_ASSERT(strncmp(e, want, strlen(want)) == 0);
    e = tr_build_err("kind.wc exec /nonexistent/wc -c");
    CU_ASSERT_STRING_EQUAL(e, "test.conf:4: [kind.wc] exec: program /nonexistent/wc: No such file "
                              "or directory");
}

int suite_server_jobs_registry(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_kinds_builtin_every_kind),
        SPINDLE_TEST(test_srv_kinds_find_unknown),
        SPINDLE_TEST(test_srv_kinds_job_keeps_snapshot),
        SPINDLE_TEST(test_srv_kinds_build_errors),
    };
    return SPINDLE_SUITE_ADD("server_jobs_registry", NULL, NULL, tests);
}
