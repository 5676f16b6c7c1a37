/* jobs.h - the CPU job kinds (noop, spin, primes, sha256, compress) behind POST /v1/jobs/<kind>.
 *
 * A job kind is a descriptor (struct srv_job_kind) with four functions that split one job across
 * the two sides of the server:
 *
 *   loop thread    parse(params, body, limits) -> state      validate, or a 400 message
 *   worker thread  run(state)                                 the CPU work, cancellable
 *   loop thread    answer(state) -> status, type, bytes       after run returned 0
 *   either         free(state)                                exactly once, after the others
 *
 * The kinds know nothing of HTTP or of the pool: parameters arrive decoded, the context comes
 * from ctx_current(), and the answer is a status, a content type and a byte range. Typical glue:
 *
 *     const struct srv_job_kind *k = srv_job_kind_find(name, name_len);   // NULL -> 404
 *     void *st;
 *     char msg[SRV_JOB_ERR_MAX];
 *     int rc = k->parse(params, nparams, body, body_len, cfg, &st, msg, sizeof msg);
 *     if (rc < 0)
 *         ...                                   // -EINVAL: 400 with msg; -ENOMEM: 503
 *     // pool job: run callback returns k->run(st) (ctx current on the worker)
 *     // done callback, POOL_DONE: k->answer(st, &ans); queue ans.body for writing (copy it,
 *     //   or keep st until it is written: the bytes belong to st), then k->free(st)
 *     // any other status: k->free(st) and answer from the status
 *
 * Registration: each kind lives in its own file under server/jobs/ and registers itself with
 * SRV_JOB_KIND_REGISTER(); the linker gathers the registrations in the section "srv_job_kinds".
 * Adding a kind is adding a file; no table elsewhere changes.
 *
 * Threads: descriptors are immutable. A state is used by one thread at a time, handed between
 * the loop and a worker by the pool (which orders the accesses). The registry functions may be
 * called from any thread.
 */
#ifndef SPINDLE_SRV_JOBS_H
#define SPINDLE_SRV_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/config.h"

/* One decoded query parameter. Both strings are borrowed, not NUL-terminated, may contain any
 * byte (they are percent-decoded), and value_len is 0 for "?key" and "?key=". */
struct srv_job_param {
    const char *key, *value;
    size_t key_len, value_len;
};

/* What a finished job answers. */
struct srv_job_answer {
    int status;               /* HTTP status (200 for every current kind) */
    const char *content_type; /* static string, e.g. "application/json" */
    const char *body;         /* borrowed from the state: valid until free(state) */
    size_t len;               /* bytes at body */
};

/* Room for any parse message (messages are cut to fit a smaller buffer, NUL-terminated). */
#define SRV_JOB_ERR_MAX 160

/* Validate the query parameters and the body against `limits` and build the job's state.
 * Runs on the loop thread; cheap (no work proportional to the body).
 *   params:  nparams entries, borrowed for the call only (may be NULL when nparams is 0).
 *   body:    body_len bytes, borrowed. Kinds with uses_body keep a pointer to it in the state:
 *            the caller keeps these bytes alive and unchanged until free(state). Kinds without
 *            uses_body accept any body and ignore it. body may be NULL when body_len is 0.
 *   limits:  borrowed for the call (max_spin_ms, max_primes_n, max_sha256_rounds,
 *            max_compress_level_zstd, max_body_bytes are read).
 * Returns 0 and a new non-NULL *state (owned by the caller, released with free), or
 *   -EINVAL  bad input; err holds a one-line message for the client ("unknown parameter 'x'",
 *            "duplicate parameter 'n'", "missing required parameter 'n'",
 *            "n must be an integer between 0 and 100000000", "codec must be zstd or gzip"),
 *   -ENOMEM  out of memory (err says so).
 * On error *state is set to NULL. err may be NULL when size is 0. */
typedef int srv_job_parse_fn(const struct srv_job_param *params, size_t nparams, const void *body,
                             size_t body_len, const struct srv_cfg *limits, void **state, char *err,
                             size_t size);

/* Do the work. Runs on a worker thread with the request's context current (ctx_current());
 * checks ctx_cancelled() at least every millisecond of CPU. With no current context it runs to
 * completion. Called at most once per state.
 * Returns 0 (the answer is ready), -ECANCELED when it saw the context cancelled (the state holds
 * no answer; only free it), -ENOMEM when out of memory (503), -EIO when a library (libcrypto,
 * libzstd, zlib) failed (500). After an error the state is only good for free. */
typedef int srv_job_run_fn(void *state);

/* Fill *out from a state whose run returned 0. Runs on the loop thread; may be called more than
 * once; never fails. out->body is borrowed from the state. */
typedef void srv_job_answer_fn(const void *state, struct srv_job_answer *out);

/* Release a state from parse. Any thread, once, when neither run nor answer is running.
 * free(NULL) is a no-op. */
typedef void srv_job_free_fn(void *state);

/* A number that grows with the run time a parsed `state` may be expected to take (primes: n,
 * spin: ms, sha256: rounds and body, compress: body and level), for admission's run-time
 * estimate of jobs of that size (server/admission/admission.h). Loop thread, cheap; only compared
 * by order of magnitude. */
typedef uint64_t srv_job_cost_fn(const void *state);

struct srv_job_kind {
    const char *name;    /* the <kind> in /v1/jobs/<kind>: lower-case letters and digits */
    const char *summary; /* one line for listings, e.g. "count primes <= n by trial division" */
    bool uses_body;      /* false: any body is accepted and ignored */
    srv_job_parse_fn *parse;
    srv_job_run_fn *run;
    srv_job_answer_fn *answer;
    srv_job_free_fn *free;
    srv_job_cost_fn *cost; /* NULL: every job of the kind takes about as long */
};

/* ---- registry ------------------------------------------------------------------------------ */

/* The kind called `name` (len bytes, borrowed, need not be NUL-terminated; exact, case-sensitive
 * match), or NULL when there is none. Any thread. */
const struct srv_job_kind *srv_job_kind_find(const char *name, size_t len);

/* Number of registered kinds. Any thread. */
size_t srv_job_kind_count(void);

/* The i-th kind in name order, NULL when i >= srv_job_kind_count(). Any thread. Listing:
 *     for (size_t i = 0; (k = srv_job_kind_at(i)) != NULL; i++) ... */
const struct srv_job_kind *srv_job_kind_at(size_t i);

/* Register `desc` (a `const struct srv_job_kind` object at file scope) from its own file. The
 * registration is a pointer placed in the linker section "srv_job_kinds"; GNU ld and lld define
 * __start_srv_job_kinds/__stop_srv_job_kinds around it because the name is a C identifier.
 * Two kinds with the same name abort the process at the first registry call. */
#define SRV_JOB_KIND_REGISTER(desc)                                                                \
    static const struct srv_job_kind *const srv_job_kind_reg_##desc                                \
        __attribute__((used, section("srv_job_kinds"), aligned(sizeof(void *)))) = &(desc)

/* ---- helpers for kind implementations ------------------------------------------------------ */

/* Match params against `names` (nnames NUL-terminated names, borrowed): found[i] is set to the
 * parameter named names[i], or NULL when absent. Returns 0, or -EINVAL with a message for an
 * unknown parameter or one given twice. */
int srv_job_params_match(const struct srv_job_param *params, size_t nparams,
                         const char *const *names, size_t nnames,
                         const struct srv_job_param **found, char *err, size_t size);

/* Parse p's value as a decimal integer in [min, max]: digits only (no sign, space or trailing
 * bytes), at least one, overflow detected. Returns 0 and sets *out, or -EINVAL with
 * "<key> must be an integer between <min> and <max>". */
int srv_job_param_uint(const struct srv_job_param *p, uint64_t min, uint64_t max, uint64_t *out,
                       char *err, size_t size);

/* True when p's value is exactly the NUL-terminated `s`. */
bool srv_job_param_is(const struct srv_job_param *p, const char *s);

/* Write "missing required parameter '<name>'" into err; returns -EINVAL. */
int srv_job_err_missing(const char *name, char *err, size_t size);

/* The common case of a kind with one required integer parameter: `name` must be the only
 * parameter, given once, with a value in [min, max]. Returns 0 and sets *out, or -EINVAL with the
 * message of srv_job_params_match, srv_job_err_missing or srv_job_param_uint. */
int srv_job_param_only_uint(const struct srv_job_param *params, size_t nparams, const char *name,
                            uint64_t min, uint64_t max, uint64_t *out, char *err, size_t size);

/* A zeroed kind state of `len` bytes (new, owned by the caller), or NULL with "out of memory" in
 * err (the parse function then returns -ENOMEM). */
void *srv_job_state_new(size_t len, char *err, size_t size);

/* printf into err (when size > 0), cut to fit; returns -EINVAL. */
int srv_job_errf(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when `c` (borrowed, may be NULL) is cancelled. What run loops call. */
static inline bool srv_job_cancelled(const struct ctx *c)
{
    return c != NULL && ctx_cancelled(c);
}

#endif
