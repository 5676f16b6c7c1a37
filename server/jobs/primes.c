/* primes.c - the job that counts primes: POST /v1/jobs/primes?n=N answers {"n":N,"count":C}.
 *
 * Design: the exact reference algorithm, deliberately naive so that its cost is known and equal
 * across implementations: 2 counts; every odd i in 3..n counts unless an odd d >= 3 with
 * d*d <= i divides it. Even numbers above 2 cost one test and no division. Nothing is cached
 * between jobs. The cost is in the divisions, and one candidate near 10^8 needs up to 5,000 of
 * them, so the context is checked every PRIMES_CHECK_EVERY divisions (inside the inner loop),
 * not per candidate: about every 100-300 us of CPU whatever n is. n=0 and n=1 count 0. The body
 * is ignored.
 */
#include "server/jobs/jobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* Divisions between two looks at the context: well under a millisecond even at ~10 ns each. */
#define PRIMES_CHECK_EVERY 50000u

struct primes_state {
    uint64_t n;
    uint64_t count; /* set by run */
    int len;
    char json[64]; /* {"n":N,"count":C} */
};

static int primes_parse(const struct srv_job_param *params, size_t nparams, const void *body,
                        size_t body_len, const struct srv_cfg *limits, void **state, char *err,
                        size_t size)
{
    uint64_t n;

    (void)body;
    (void)body_len;
    *state = NULL;
    int rc = srv_job_param_only_uint(params, nparams, "n", 0, limits->max_primes_n, &n, err, size);
    if (rc < 0)
        return rc;
    struct primes_state *st = srv_job_state_new(sizeof(*st), err, size);
    if (st == NULL)
        return -ENOMEM;
    st->n = n;
    *state = st;
    return 0;
}

static int primes_run(void *state)
{
    struct primes_state *st = state;
    const struct ctx *c = ctx_current();
    uint32_t budget = PRIMES_CHECK_EVERY;
    uint64_t count = 0;

    if (srv_job_cancelled(c))
        return -ECANCELED;
    for (uint64_t i = 2; i <= st->n; i++) {
        if (i == 2) {
            count++;
            continue;
        }
        if (i % 2 == 0)
            continue;
        bool prime = true;
        for (uint64_t d = 3; d * d <= i; d += 2) {
            if (--budget == 0) {
                if (srv_job_cancelled(c))
                    return -ECANCELED;
                budget = PRIMES_CHECK_EVERY;
            }
            if (i % d == 0) {
                prime = false;
                break;
            }
        }
        if (prime)
            count++;
    }
    st->count = count;
    st->len = snprintf(st->json, sizeof(st->json), "{\"n\":%llu,\"count\":%llu}",
                       (unsigned long long)st->n, (unsigned long long)count);
    return 0;
}

static void primes_answer(const void *state, struct srv_job_answer *out)
{
    const struct primes_state *st = state;
    out->status = 200;
    out->content_type = "application/json";
    out->body = st->json;
    out->len = (size_t)st->len;
}

static void primes_free(void *state)
{
    free(state);
}

static uint64_t primes_cost(const void *state)
{
    return ((const struct primes_state *)state)->n;
}

static const struct srv_job_kind srv_job_primes = {
    .name = "primes",
    .summary = "count primes <= n by trial division",
    .uses_body = false,
    .parse = primes_parse,
    .run = primes_run,
    .answer = primes_answer,
    .free = primes_free,
    .cost = primes_cost,
};
SRV_JOB_KIND_REGISTER(srv_job_primes);
