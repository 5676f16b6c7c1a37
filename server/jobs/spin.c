/* spin.c - the job that burns CPU for a while: POST /v1/jobs/spin?ms=N answers
 * {"ms":N,"spun_ms":<actual>}.
 *
 * Design: run busy-loops on CLOCK_MONOTONIC (ctx_now_ns, a vDSO call of tens of nanoseconds) until
 * N ms have passed since it started, and checks the job's cancellation on every iteration, so a
 * cancel is seen within microseconds. It measures wall time on the monotonic clock, not thread CPU
 * time: a descheduled worker still ends on time, which is what a client asking for N ms expects.
 * spun_ms is the time actually spent (N or a little more; less when cancelled, but then there is
 * no answer). ms=0 is allowed and returns at once. The body is ignored. The parameter is declared
 * with the server limit max_spin_ms as its cap, so the host checks it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "context/ctx.h"
#include "server/jobs/internal.h"
#include "spindle/module.h"

static const struct spindle_host *spin_host;

struct spin_state {
    uint64_t ms;
    int len;       /* bytes in json, set by run */
    char json[64]; /* {"ms":N,"spun_ms":X.XXX} */
};

static int spin_parse(struct spindle_job *job, void **state)
{
    struct spin_state *st = malloc(sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->ms = (uint64_t)spin_host->param(job, 0);
    *state = st;
    return 0;
}

static int spin_run(struct spindle_job *job, void *state)
{
    struct spin_state *st = state;
    uint64_t start = ctx_now_ns();
    uint64_t end = start + st->ms * 1000000u;
    uint64_t now = start;

    while (now < end) {
        if (spin_host->cancelled(job))
            return -ECANCELED;
        now = ctx_now_ns();
    }
    uint64_t spun_us = (now - start) / 1000u;
    st->len = snprintf(st->json, sizeof(st->json), "{\"ms\":%llu,\"spun_ms\":%llu.%03llu}",
                       (unsigned long long)st->ms, (unsigned long long)(spun_us / 1000u),
                       (unsigned long long)(spun_us % 1000u));
    return spin_host->set_answer(job, st->json, (size_t)st->len, "application/json",
                                 SPINDLE_BYTES_BORROWED);
}

static void spin_free(void *state)
{
    free(state);
}

static uint64_t spin_cost(const void *state)
{
    return ((const struct spin_state *)state)->ms;
}

static const struct spindle_param spin_params[] = {
    {.name = "ms",
     .type = SPINDLE_PARAM_INT,
     .required = 1,
     .min = 0,
     .max = 3600000,
     .limit = "max_spin_ms"},
};

static const struct spindle_kind spin_kind = {
    SPINDLE_KIND_HEAD,
    .name = "spin",
    .summary = "burn ms milliseconds of CPU in a busy loop",
    .params = spin_params,
    .nparams = 1,
    .parse = spin_parse,
    .run = spin_run,
    .free = spin_free,
    .cost = spin_cost,
};

static int spin_init(const struct spindle_host *host, const struct spindle_kind **kind, char *err,
                     size_t size)
{
    (void)err;
    (void)size;
    spin_host = host;
    *kind = &spin_kind;
    return 0;
}
SRV_JOB_BUILTIN(spin_init);
