/* internal.h - what the files of server/jobs/ share beyond server/jobs/jobs.h, and what their unit
 * suites reach into. Not for use outside server/jobs/ and its tests.
 *
 *   registry.c  snapshots of kinds, the current one, the built-in kinds' registration
 *   loader.c    modules (dlopen) and the check of any kind's description
 *   host.c      the host table and one job's life (prepare, run, outcome, fini)
 *   noop.c spin.c primes.c sha256.c compress.c   the built-in kinds, written against the ABI
 */
#ifndef SPINDLE_SRV_JOBS_INTERNAL_H
#define SPINDLE_SRV_JOBS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/jobs/jobs.h"
#include "spindle/module.h"

/* True when `c` (borrowed, may be NULL) is cancelled: what srv_primes_count's loops call. */
static inline bool srv_ctx_cancelled(const struct ctx *c)
{
    return c != NULL && ctx_cancelled(c);
}

/* Count the primes p with lo <= p <= hi (hi <= 10^10, the largest max_primes_n) by the
 * reference trial division of primes.c, looking at `c` (borrowed, may be NULL) at least every
 * millisecond of CPU. bits = 32 tests the candidates up to UINT32_MAX in 32-bit arithmetic and
 * the rest in 64 bits (what the job does); any other value tests every candidate in 64 bits (the
 * reference). Both give the same count. Any thread.
 * Returns 0 and sets *count, or -ECANCELED (c was cancelled; *count is 0). */
int srv_primes_count(uint64_t lo, uint64_t hi, unsigned bits, const struct ctx *c, uint64_t *count);

/* ---- built-in kinds ------------------------------------------------------------------------ */

/* Register a built-in kind's entry point (a spindle_module_init_fn, static in its file): a
 * pointer in the linker section "srv_job_builtins", gathered by registry.c, which calls it with
 * the host table exactly as it calls a module's spindle_module_init. */
#define SRV_JOB_BUILTIN(init)                                                                      \
    static spindle_module_init_fn *const srv_job_builtin_##init                                    \
        __attribute__((used, section("srv_job_builtins"), aligned(sizeof(void *)))) = &(init)

/* ---- descriptions (loader.c) --------------------------------------------------------------- */

/* Check the description `d` (size bytes of it readable, as it declares) and copy it into *k: the
 * description normalised to this host's struct (later fields zero), the parameters into
 * k->params. `what` names the kind's origin in messages ("module /x.so"). Returns 0 or -EINVAL
 * with msg saying what is wrong (both ABI versions named for a version problem). */
int srv_kind_describe(struct srv_kind *k, const struct spindle_kind *d, const char *what, char *msg,
                      size_t msz);

/* Load the module at `path` (once per process; later calls give the loaded one) and call its
 * entry point. Returns 0 and its description in *out, or a negative errno with msg naming the
 * path and what is wrong. Main thread. */
int srv_module_load(const char *path, const struct spindle_kind **out, char *msg, size_t msz);

/* Release every loaded module's kind data (fini) at exit; the objects stay mapped. */
void srv_modules_release(void);

/* The index of server limit `name` (srv_job_limit_value), or -1. */
int srv_job_limit_index(const char *name);

/* The value of limit `index` in cfg. */
uint64_t srv_job_limit_value(const struct srv_cfg *cfg, int index);

#endif
