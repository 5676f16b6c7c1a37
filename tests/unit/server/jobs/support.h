/* support.h - helpers shared by the job-kind suites (tests/unit/server/test_jobs_*.c):
 * limits, parameter literals, parse expectations, running with a context, cancellation checks.
 * Everything is static inline so that a suite that uses only part of it compiles cleanly.
 */
#ifndef SPINDLE_TEST_JOBS_SUPPORT_H
#define SPINDLE_TEST_JOBS_SUPPORT_H

#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context/ctx.h"
#include "server/jobs/jobs.h"

/* A parameter from two string literals (lengths exclude the NUL; embedded bytes allowed). */
#define JT_P(k, v)                                                                                 \
    {                                                                                              \
        (k), (v), sizeof(k) - 1, sizeof(v) - 1                                                     \
    }
#define JT_N(a) (sizeof(a) / sizeof((a)[0]))

#define JT_MS 1000000ull
/* A generous bound for "returns promptly"; sanitizers slow the CPU work between checks (and the
 * uncancellable zstd set-up) by up to ten times, and CI machines are shared (a load average of
 * 12 on two CPUs stretched a 20 ms check interval past 250 ms). A run that ignores the cancel
 * still fails: it returns 0, not -ECANCELED. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define JT_PROMPT_NS (2000 * JT_MS)
#else
#define JT_PROMPT_NS (1000 * JT_MS)
#endif
#define JT_CANCEL_AFTER_NS (20 * JT_MS) /* how long a run gets before it is cancelled */

/* Limits the suites test against (explicit, not the shipped defaults). */
static inline struct srv_cfg jt_limits(void)
{
    struct srv_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_spin_ms = 60000;
    cfg.max_primes_n = 100000000;
    cfg.max_sha256_rounds = 100000000;
    cfg.max_compress_level_zstd = 19;
    cfg.max_body_bytes = 64u << 20;
    return cfg;
}

static inline const struct srv_kind *jt_kind(const char *name)
{
    const struct srv_kind *k = srv_kinds_find(srv_kinds_builtin(), name, strlen(name));
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    return k;
}

/* Prepare a job that must be accepted; returns it (a malloc'd struct spindle_job: jt_free). */
static inline void *jt_parse_ok(const struct srv_kind *k, const struct srv_job_param *params,
                                size_t n, const void *body, size_t len, const struct srv_cfg *cfg)
{
    struct spindle_job *job = malloc(sizeof(*job));
    CU_ASSERT_PTR_NOT_NULL_FATAL(job);
    int rc = srv_job_prepare(job, k, params, n, body, len, cfg);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0)
        fprintf(stderr, "\n    prepare: %d %s\n", rc, job->err_msg);
    return job;
}

/* Finish and free a job of jt_parse_ok (NULL is a no-op). */
static inline void jt_free(void *job)
{
    if (job == NULL)
        return;
    srv_job_fini(job);
    free(job);
}

/* Prepare that must fail with -EINVAL, a 400 bad_param and exactly the message `want`. */
static inline void jt_parse_err(const struct srv_kind *k, const struct srv_job_param *params,
                                size_t n, const void *body, size_t len, const struct srv_cfg *cfg,
                                const char *want)
{
    struct spindle_job job;
    struct srv_job_answer ans;
    int rc = srv_job_prepare(&job, k, params, n, body, len, cfg);
    CU_ASSERT_EQUAL(rc, -EINVAL);
    CU_ASSERT_PTR_NULL(job.state);
    srv_job_outcome(&job, &ans);
    CU_ASSERT_EQUAL(ans.status, 400);
    CU_ASSERT_STRING_EQUAL(ans.code != NULL ? ans.code : "", "bad_param");
    CU_ASSERT_STRING_EQUAL(ans.message != NULL ? ans.message : "", want);
    if (ans.message == NULL || strcmp(ans.message, want) != 0)
        fprintf(stderr, "\n    parse message: got '%s', want '%s'\n",
                ans.message ? ans.message : "(none)", want);
    srv_job_fini(&job);
}

/* Run with a fresh root context current on this thread. If `cancel_first`, the context is
 * cancelled before the run. *elapsed_ns gets the run's duration. */
static inline int jt_run(const struct srv_kind *k, void *st, bool cancel_first,
                         uint64_t *elapsed_ns)
{
    (void)k;
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    if (cancel_first)
        CU_ASSERT_EQUAL(ctx_cancel(c, CTX_REASON_CANCELED), 0);
    struct ctx *prev = ctx_enter(c);
    uint64_t t0 = ctx_now_ns();
    int rc = srv_job_run(st);
    if (elapsed_ns != NULL)
        *elapsed_ns = ctx_now_ns() - t0;
    ctx_leave(prev);
    ctx_unref(c);
    return rc;
}

/* Parse, cancel the context, run: -ECANCELED within JT_PROMPT_NS. */
static inline void jt_check_cancel_first(const struct srv_kind *k,
                                         const struct srv_job_param *params, size_t n,
                                         const void *body, size_t len, const struct srv_cfg *cfg)
{
    void *st = jt_parse_ok(k, params, n, body, len, cfg);
    uint64_t ns = 0;
    CU_ASSERT_EQUAL(jt_run(k, st, true, &ns), -ECANCELED);
    CU_ASSERT(ns < JT_PROMPT_NS);
    jt_free(st);
}

struct jt_runner {
    void *job;
    struct ctx *ctx;
    sem_t started;
    int rc;
    uint64_t t_end;
};

static inline void *jt_runner_main(void *arg)
{
    struct jt_runner *r = arg;
    struct ctx *prev = ctx_enter(r->ctx);
    sem_post(&r->started);
    r->rc = srv_job_run(r->job);
    r->t_end = ctx_now_ns();
    ctx_leave(prev);
    return NULL;
}

/* Parse, run on another thread, cancel the context from this thread once the run is under way
 * (JT_CANCEL_AFTER_NS after the thread announced it is about to run): the run must return
 * -ECANCELED within JT_PROMPT_NS of the cancel. The parameters must make a run last seconds.
 * Returns the cancel-to-return latency in ns. */
static inline uint64_t jt_check_cancel_midrun(const struct srv_kind *k,
                                              const struct srv_job_param *params, size_t n,
                                              const void *body, size_t len,
                                              const struct srv_cfg *cfg)
{
    struct jt_runner r = {0};
    pthread_t th;

    r.job = jt_parse_ok(k, params, n, body, len, cfg);
    r.ctx = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(r.ctx);
    CU_ASSERT_EQUAL_FATAL(sem_init(&r.started, 0, 0), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, jt_runner_main, &r), 0);
    while (sem_wait(&r.started) != 0)
        CU_ASSERT_EQUAL_FATAL(errno, EINTR);
    /* Give the run time to get into its loop. Correctness does not depend on it: a cancel that
     * lands before the run starts is seen at its first check and must be just as prompt. */
    struct timespec ts = {0, (long)JT_CANCEL_AFTER_NS};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    uint64_t t_cancel = ctx_now_ns();
    CU_ASSERT_EQUAL(ctx_cancel(r.ctx, CTX_REASON_CLIENT_CLOSED), 0);
    CU_ASSERT_EQUAL(pthread_join(th, NULL), 0);
    CU_ASSERT_EQUAL(r.rc, -ECANCELED);
    uint64_t latency = r.t_end > t_cancel ? r.t_end - t_cancel : 0;
    CU_ASSERT(latency < JT_PROMPT_NS);
    printf(" [cancel to return: %llu us] ", (unsigned long long)(latency / 1000u));
    sem_destroy(&r.started);
    ctx_unref(r.ctx);
    jt_free(r.job);
    return latency;
}

/* The job's answer (after a run that returned 0) copied into a new NUL-terminated string
 * (free() it); *ans describes it. */
static inline char *jt_answer_str(const struct srv_kind *k, void *st, struct srv_job_answer *ans)
{
    (void)k;
    srv_job_outcome(st, ans);
    char *s = malloc(ans->len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    if (ans->len > 0)
        memcpy(s, ans->body, ans->len);
    s[ans->len] = '\0';
    if (ans->owned)
        free((void *)ans->body);
    return s;
}

/* Fill buf with semi-compressible text: words from a small vocabulary and random numbers, drawn
 * with a fixed-seed xorshift so every run sees the same bytes (compresses roughly 3-4x). */
static inline void jt_fill_text(unsigned char *buf, size_t len, uint64_t seed)
{
    static const char *const words[] = {"spindle ", "worker ", "tenant ",   "queue ", "request ",
                                        "context ", "cancel ", "deadline ", "loop ",  "job "};
    uint64_t x = seed | 1;
    size_t i = 0;
    while (i < len) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        char tmp[24];
        const char *w = words[x % JT_N(words)];
        if ((x >> 8) % 3 == 0) {
            snprintf(tmp, sizeof(tmp), "%u ", (unsigned)(x >> 20) % 100000u);
            w = tmp;
        }
        for (; *w != '\0' && i < len; w++)
            buf[i++] = (unsigned char)*w;
    }
}

#endif
