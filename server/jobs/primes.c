/* primes.c - the job that counts primes: POST /v1/jobs/primes?n=N answers {"n":N,"count":C}.
 *
 * Design: the exact reference algorithm, deliberately naive so that its cost is known and equal
 * across implementations: 2 counts; every odd i in 3..n counts unless an odd d >= 3 with
 * d*d <= i divides it. Even numbers above 2 cost one test and no division. Nothing is cached
 * between jobs. The cost is in the divisions, and one candidate near 10^8 needs up to 5,000 of
 * them, so the context is checked after at most PRIMES_CHECK_EVERY divisions, not per
 * candidate: about every 100-300 us of CPU whatever n is. n=0 and n=1 count 0. The body is
 * ignored.
 *
 * Width: the divisions dominate, and a 64-bit division costs more than a 32-bit one on common
 * x86-64 CPUs (V8 divides small integers in 32 bits). So every candidate that fits in 32 bits
 * (i <= UINT32_MAX, which covers the default max_primes_n of 10^8) is tested in 32-bit
 * arithmetic, and only candidates above it (max_primes_n allows up to 10^10) in 64 bits, with
 * the reference loop unchanged. The 32-bit loop never forms d*d, which overflows 32 bits once i
 * reaches 65535^2: it carries r = floor(sqrt(i)) from one candidate to the next (r grows by at
 * most one per odd step, and r < 65536 for every 32-bit i) and tests d <= r, the same condition.
 * The answer is identical for every n. Building with -DSRV_PRIMES_BITS=64 makes the job test
 * every candidate in 64 bits, as before, so that bench/limit can compare the two builds.
 */
#include "server/jobs/internal.h"
#include "spindle/module.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Divisions between two looks at the context: well under a millisecond even at ~10 ns each. */
#define PRIMES_CHECK_EVERY 50000u

#ifndef SRV_PRIMES_BITS
#define SRV_PRIMES_BITS 32
#endif
#if SRV_PRIMES_BITS != 32 && SRV_PRIMES_BITS != 64
#error "SRV_PRIMES_BITS must be 32 or 64"
#endif

struct primes_state {
    uint64_t n;
    uint64_t count; /* set by run */
    int len;
    char json[64]; /* {"n":N,"count":C} */
};

/* One count in progress: the context to check, divisions left until the next check, primes so
 * far. */
struct primes_walk {
    const struct ctx *c;
    uint32_t budget;
    uint64_t count;
};

/* Spend one division of the budget; false when the context turned out to be cancelled. */
static inline bool primes_tick(struct primes_walk *w)
{
    if (--w->budget != 0)
        return true;
    w->budget = PRIMES_CHECK_EVERY;
    return !srv_ctx_cancelled(w->c);
}

/* floor(sqrt(x)) for x < 2^32: the double root is within one of it, and is corrected exactly. */
static uint32_t primes_isqrt32(uint32_t x)
{
    uint32_t r = (uint32_t)sqrt((double)x);
    if (r > 65535)
        r = 65535;
    while (r > 0 && r * r > x)
        r--;
    while (r < 65535 && (r + 1) * (r + 1) <= x)
        r++;
    return r;
}

/* Odd candidates lo..hi (both odd, 3 <= lo <= hi <= UINT32_MAX) in 32-bit arithmetic. A
 * candidate needs at most (r + 1) / 2 divisions (r < 65536), so the budget is settled per
 * candidate: the context is looked at before a candidate that could exhaust it, which keeps the
 * inner loop to a compare and a division and still looks at least every PRIMES_CHECK_EVERY
 * divisions. */
static int primes_odd_u32(uint32_t lo, uint32_t hi, struct primes_walk *w)
{
    uint32_t r = primes_isqrt32(lo);
    for (uint32_t i = lo;; i += 2) {
        while (r < 65535 && (r + 1) * (r + 1) <= i) /* (r+1)^2 < 2^32 while r < 65535 */
            r++;
        if (w->budget <= (r + 1) / 2) {
            if (srv_ctx_cancelled(w->c))
                return -ECANCELED;
            w->budget = PRIMES_CHECK_EVERY;
        }
        uint32_t d = 3;
        while (d <= r && i % d != 0)
            d += 2;
        w->budget -= (d - 1) / 2; /* the divisions done, or one more */
        w->count += d > r;        /* no divisor up to sqrt(i) */
        if (i == hi)              /* i += 2 past UINT32_MAX would wrap */
            return 0;
    }
}

/* Odd candidates lo..hi (both odd, 3 <= lo <= hi <= 10^10) in 64-bit arithmetic: the reference
 * loop as written (d*d cannot overflow: d stays near sqrt(hi)). */
static int primes_odd_u64(uint64_t lo, uint64_t hi, struct primes_walk *w)
{
    for (uint64_t i = lo; i <= hi; i += 2) {
        bool prime = true;
        for (uint64_t d = 3; d * d <= i; d += 2) {
            if (!primes_tick(w))
                return -ECANCELED;
            if (i % d == 0) {
                prime = false;
                break;
            }
        }
        w->count += prime;
    }
    return 0;
}

int srv_primes_count(uint64_t lo, uint64_t hi, unsigned bits, const struct ctx *c, uint64_t *count)
{
    struct primes_walk w = {.c = c, .budget = PRIMES_CHECK_EVERY, .count = 0};
    uint64_t narrow_max = bits == 32 ? UINT32_MAX : 0;
    int rc = 0;

    *count = 0;
    if (lo <= 2 && hi >= 2)
        w.count++;
    if (lo < 3)
        lo = 3;
    lo |= 1;                     /* the first odd candidate */
    hi -= hi > 0 && hi % 2 == 0; /* the last one */
    if (lo <= hi && lo <= narrow_max) {
        rc = primes_odd_u32((uint32_t)lo, (uint32_t)(hi < narrow_max ? hi : narrow_max), &w);
        lo = narrow_max + 2; /* odd, as UINT32_MAX is */
    }
    if (rc == 0 && lo <= hi)
        rc = primes_odd_u64(lo, hi, &w);
    if (rc == 0)
        *count = w.count;
    return rc;
}

static const struct spindle_host *primes_host;

static int primes_parse(struct spindle_job *job, void **state)
{
    struct primes_state *st = malloc(sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->n = (uint64_t)primes_host->param(job, 0);
    *state = st;
    return 0;
}

/* The pool's context check, through the host as every kind does it: the count looks at the
 * context it is given, which is the job's (current on this worker). */
static int primes_run(struct spindle_job *job, void *state)
{
    struct primes_state *st = state;
    const struct ctx *c = ctx_current();

    if (primes_host->cancelled(job))
        return -ECANCELED;
    int rc = srv_primes_count(0, st->n, SRV_PRIMES_BITS, c, &st->count);
    if (rc < 0)
        return rc;
    st->len = snprintf(st->json, sizeof(st->json), "{\"n\":%llu,\"count\":%llu}",
                       (unsigned long long)st->n, (unsigned long long)st->count);
    return primes_host->set_answer(job, st->json, (size_t)st->len, "application/json",
                                   SPINDLE_BYTES_BORROWED);
}

static void primes_free(void *state)
{
    free(state);
}

static uint64_t primes_cost(const void *state)
{
    return ((const struct primes_state *)state)->n;
}

static const struct spindle_param primes_params[] = {
    {.name = "n",
     .type = SPINDLE_PARAM_INT,
     .required = 1,
     .min = 0,
     .max = 10000000000LL,
     .limit = "max_primes_n"},
};

static const struct spindle_kind primes_kind = {
    SPINDLE_KIND_HEAD,       .name = "primes",    .summary = "count primes <= n by trial division",
    .params = primes_params, .nparams = 1,        .parse = primes_parse,
    .run = primes_run,       .free = primes_free, .cost = primes_cost,
};

static int primes_init(const struct spindle_host *host, const struct spindle_kind **kind, char *err,
                       size_t size)
{
    (void)err;
    (void)size;
    primes_host = host;
    *kind = &primes_kind;
    return 0;
}
SRV_JOB_BUILTIN(primes_init);
