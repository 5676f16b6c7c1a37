/* spin.c - the job that burns CPU for a while: POST /v1/jobs/spin?ms=N answers
 * {"ms":N,"spun_ms":<actual>}.
 *
 * Design: run busy-loops on CLOCK_MONOTONIC (ctx_now_ns, a vDSO call of tens of nanoseconds) until
 * N ms have passed since it started, and checks the context on every iteration, so a cancel is
 * seen within microseconds. It measures wall time on the monotonic clock, not thread CPU time: a
 * descheduled worker still ends on time, which is what a client asking for N ms expects. spun_ms
 * is the time actually spent (N or a little more; less when cancelled, but then there is no
 * answer). ms=0 is allowed and returns at once. The body is ignored.
 */
#include "server/jobs/jobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct spin_state {
    uint64_t ms;
    int len;       /* bytes in json, set by run */
    char json[64]; /* {"ms":N,"spun_ms":X.XXX} */
};

static int spin_parse(const struct srv_job_param *params, size_t nparams, const void *body,
                      size_t body_len, const struct srv_cfg *limits, void **state, char *err,
                      size_t size)
{
    uint64_t ms;

    (void)body;
    (void)body_len;
    *state = NULL;
    int rc = srv_job_param_only_uint(params, nparams, "ms", 0, limits->max_spin_ms, &ms, err, size);
    if (rc < 0)
        return rc;
    struct spin_state *st = srv_job_state_new(sizeof(*st), err, size);
    if (st == NULL)
        return -ENOMEM;
    st->ms = ms;
    *state = st;
    return 0;
}

static int spin_run(void *state)
{
    struct spin_state *st = state;
    const struct ctx *c = ctx_current();
    uint64_t start = ctx_now_ns();
    uint64_t end = start + st->ms * 1000000u;
    uint64_t now = start;

    while (now < end) {
        if (srv_job_cancelled(c))
            return -ECANCELED;
        now = ctx_now_ns();
    }
    uint64_t spun_us = (now - start) / 1000u;
    st->len = snprintf(st->json, sizeof(st->json), "{\"ms\":%llu,\"spun_ms\":%llu.%03llu}",
                       (unsigned long long)st->ms, (unsigned long long)(spun_us / 1000u),
                       (unsigned long long)(spun_us % 1000u));
    return 0;
}

static void spin_answer(const void *state, struct srv_job_answer *out)
{
    const struct spin_state *st = state;
    out->status = 200;
    out->content_type = "application/json";
    out->body = st->json;
    out->len = (size_t)st->len;
}

static void spin_free(void *state)
{
    free(state);
}

static uint64_t spin_cost(const void *state)
{
    return ((const struct spin_state *)state)->ms;
}

static const struct srv_job_kind srv_job_spin = {
    .name = "spin",
    .summary = "burn ms milliseconds of CPU in a busy loop",
    .uses_body = false,
    .parse = spin_parse,
    .run = spin_run,
    .answer = spin_answer,
    .free = spin_free,
    .cost = spin_cost,
};
SRV_JOB_KIND_REGISTER(srv_job_spin);
