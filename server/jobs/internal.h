/* internal.h - what the job kinds' files share beyond server/jobs/jobs.h, and what their unit
 * suites reach into. Not for use outside server/jobs/ and its tests.
 */
#ifndef SPINDLE_SRV_JOBS_INTERNAL_H
#define SPINDLE_SRV_JOBS_INTERNAL_H

#include <stdint.h>

#include "context/ctx.h"

/* Count the primes p with lo <= p <= hi (hi <= 10^10, the largest max_primes_n) by the
 * reference trial division of primes.c, looking at `c` (borrowed, may be NULL) at least every
 * millisecond of CPU. bits = 32 tests the candidates up to UINT32_MAX in 32-bit arithmetic and
 * the rest in 64 bits (what the job does); any other value tests every candidate in 64 bits (the
 * reference). Both give the same count. Any thread.
 * Returns 0 and sets *count, or -ECANCELED (c was cancelled; *count is 0). */
int srv_primes_count(uint64_t lo, uint64_t hi, unsigned bits, const struct ctx *c, uint64_t *count);

#endif
