/* jobs.h - the job kinds behind POST /v1/jobs/<kind> and /v1/batch: the registry of kinds and
 * the host side of the kind ABI (include/spindle/module.h).
 *
 * Every kind - the five built-in ones (noop, spin, primes, sha256, compress), a module's
 * (`[kind.NAME] module = x.so`) and a program's (`[kind.NAME] exec = ...`) - is described by a
 * struct spindle_kind and driven through the same calls here. The routes (server/api/) see only
 * this header:
 *
 *     struct srv_kinds *ks = srv_kinds_current();                 // a reference: unref later
 *     const struct srv_kind *k = srv_kinds_find(ks, name, len);   // NULL -> 404
 *     struct spindle_job job;                                     // embedded: no allocation
 *     rc = srv_job_prepare(&job, k, params, n, body, len, cfg);   // loop: 400/503 from job
 *     cost = srv_job_cost(&job);                                  // admission's estimate
 *     rc = srv_job_run(&job);                                     // worker, context current
 *     srv_job_outcome(&job, &out);                                // loop: the answer or error
 *     srv_job_fini(&job);                                         // the state and the kind ref
 *
 * A prepared job holds a reference to the snapshot its kind belongs to, so a reload that removes
 * or changes the kind never pulls it from under a running job.
 *
 * Snapshots: the set of kinds is an immutable, reference-counted struct srv_kinds built from a
 * configuration (srv_kinds_build: the built-ins, then one kind per [kind.NAME] section). The
 * current snapshot is swapped whole (srv_kinds_install) at start and on every reload. Modules are
 * loaded once, at the first build; later builds reuse the loaded module of an unchanged
 * [kind.NAME] (config.c keeps a changed module kind in its running form until a restart).
 *
 * Exec kinds: srv_exec_kind_new() (server/jobs/exec/) describes a [kind.NAME] exec = ... section
 * through the same struct spindle_kind; the registry calls it at each build.
 *
 * Threads: snapshots and kinds are immutable once built; references are atomic. A job is used
 * by one thread at a time (the pool orders the hand-offs). srv_kinds_build, srv_kinds_install and
 * srv_kinds_shutdown run on the main (loop) thread; the others on any thread.
 */
#ifndef SPINDLE_SRV_JOBS_H
#define SPINDLE_SRV_JOBS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spindle/module.h"
#include "server/config.h"

/* One decoded query parameter. Both strings are borrowed, not NUL-terminated, may contain any
 * byte (they are percent-decoded), and value_len is 0 for "?key" and "?key=". */
struct srv_job_param {
    const char *key, *value;
    size_t key_len, value_len;
};

/* Room for any message of a job's error (cut to fit, NUL-terminated). */
#define SRV_JOB_ERR_MAX  160
#define SRV_JOB_CODE_MAX 48

/* Where a kind comes from. */
enum srv_kind_origin { SRV_KIND_BUILTIN, SRV_KIND_MODULE, SRV_KIND_EXEC };

/* A parameter declaration as the host keeps it (normalised from the kind's, whatever the size of
 * its struct spindle_param). */
struct srv_kind_param {
    char name[32];
    int type; /* enum spindle_param_type */
    bool required;
    int64_t min, max, def;
    int limit; /* index of a server limit lowering max (srv_job_limit_*), -1 = none */
    unsigned nchoices;
    const char *choices[SPINDLE_CHOICES_MAX]; /* borrowed from the kind's description */
};

/* One kind of a snapshot. Immutable, but `inflight` (the loop thread's count of its jobs, for
 * max_inflight). Lives as long as its snapshot. */
struct srv_kind {
    char name[SRV_CFG_KIND_NAME_MAX + 1]; /* the <kind> of /v1/jobs/<kind> */
    enum srv_kind_origin origin;
    struct spindle_kind desc; /* the kind's description, fields past its size zero */
    unsigned nparams;
    struct srv_kind_param params[SPINDLE_PARAMS_MAX];
    /* [kind.NAME] settings (built-ins: none set) */
    const char *content_type; /* default type of answers; NULL = application/octet-stream */
    unsigned max_inflight;    /* 0 = unlimited */
    unsigned timeout_ms;      /* default deadline; 0 = [limits] default_timeout_ms */
    size_t max_output_bytes;  /* 0 = unlimited */
    const char *source;       /* "FILE:LINE" of its section, "" for built-ins */
    struct srv_kinds *owner;  /* the snapshot it belongs to */
    atomic_uint inflight;     /* jobs of this kind admitted and not yet done */
    char store[2 * SRV_CFG_VALUE_MAX + 64]; /* content_type and source */
};

/* ---- snapshots ------------------------------------------------------------------------------- */

struct srv_kinds;

/* Build a snapshot from `cfg` (borrowed): the built-in kinds, then each [kind.NAME] section
 * (modules loaded on first sight, never unloaded; exec kinds through srv_exec_kind_new). Returns
 * a new snapshot (one reference, owned by the caller), or NULL with every error in err, one line
 * each: "FILE:LINE: [kind.NAME] KEY: what is wrong" (a name taken by a built-in kind, a module
 * file missing, not loadable, without spindle_module_abi or spindle_module_init, of another ABI
 * major (both versions named), a description too small, its init failing with its message; an
 * exec kind refused by its engine). Main (loop) thread. */
struct srv_kinds *srv_kinds_build(const struct srv_cfg *cfg, char *err, size_t size);

/* A new reference to `ks` (returned). Any thread. */
struct srv_kinds *srv_kinds_ref(struct srv_kinds *ks);

/* Drop a reference; the last one frees the snapshot (exec kinds' fini). NULL is a no-op. */
void srv_kinds_unref(struct srv_kinds *ks);

/* The kind called `name` (len bytes, borrowed; exact match) in `ks`, or NULL. Borrowed from ks. */
const struct srv_kind *srv_kinds_find(const struct srv_kinds *ks, const char *name, size_t len);

/* Number of kinds; the i-th in name order (NULL past the end). Borrowed from ks. */
size_t srv_kinds_count(const struct srv_kinds *ks);
const struct srv_kind *srv_kinds_at(const struct srv_kinds *ks, size_t i);

/* Make `ks` the current snapshot, taking the caller's reference; the previous one is released
 * (it lives on while jobs hold it). Main (loop) thread. */
void srv_kinds_install(struct srv_kinds *ks);

/* A new reference to the current snapshot, or NULL before the first install. Any thread. */
struct srv_kinds *srv_kinds_current(void);

/* Release the current snapshot and let go of the loaded modules (their kinds' fini). At exit,
 * after every job is done. Main thread. */
void srv_kinds_shutdown(void);

/* The built-in kinds only, built once (no configuration needed): for tests and tools. A
 * borrowed snapshot valid until srv_kinds_shutdown. */
const struct srv_kinds *srv_kinds_builtin(void);

/* ---- one job --------------------------------------------------------------------------------- */

/* The host's side of a job (struct spindle_job of the ABI): embedded by the caller; its fields
 * are the host's only. */
struct spindle_job {
    const struct srv_kind *kind; /* NULL until prepared */
    void *state;                 /* the kind's */
    const struct srv_cfg *cfg;   /* limits: borrowed during prepare only */
    const char *body;            /* borrowed from the caller until fini; NULL: no body use */
    size_t body_len;
    int64_t value[SPINDLE_PARAMS_MAX];   /* each declared parameter: given or default */
    const char *str[SPINDLE_PARAMS_MAX]; /* STRING values, during prepare only */
    uint16_t str_len[SPINDLE_PARAMS_MAX];
    uint32_t given; /* bit i: parameter i was given */
    /* the outcome */
    const void *ans;
    size_t ans_len;
    const char *ans_type;
    unsigned ans_flags; /* SPINDLE_BYTES_* */
    int err_status;     /* 0: no error set */
    char err_code[SRV_JOB_CODE_MAX + 1];
    char err_msg[SRV_JOB_ERR_MAX];
};

/* What a finished (or refused) job answers. */
struct srv_job_answer {
    int status;               /* 200, or the error's status */
    const char *content_type; /* static, or borrowed from the kind's snapshot */
    const char *body;         /* success: len bytes, borrowed from the job until fini, unless
                                 `owned` */
    size_t len;
    bool owned;          /* body is malloc'd and now the caller's to free */
    const char *code;    /* error: the code (borrowed from the job), NULL on success */
    const char *message; /* error: one line (borrowed from the job) */
};

/* Prepare `job` (the caller's memory, any content) for kind `k` (borrowed: the job takes a
 * reference to its snapshot): check the parameters against the kind's declarations (unknown,
 * repeated, missing, out of range), then run the kind's parse. params: nparams entries, borrowed
 * for the call. body: body_len bytes, borrowed until srv_job_fini (kinds that use the body keep
 * pointing at it). cfg: the limits, borrowed for the call. Loop thread.
 * Returns 0 (run it, or fini it), -EINVAL (a bad request: srv_job_outcome gives the 400 or the
 * kind's own error) or -ENOMEM (503). In every case the job must be given to srv_job_fini. */
int srv_job_prepare(struct spindle_job *job, const struct srv_kind *k,
                    const struct srv_job_param *params, size_t nparams, const void *body,
                    size_t body_len, const struct srv_cfg *cfg);

/* The kind's cost of the prepared job (0 when the kind has no cost function). Loop thread. */
uint64_t srv_job_cost(const struct spindle_job *job);

/* Run the prepared job: worker thread, the request's context current. Returns 0 (an answer or
 * error is set), -ECANCELED, -ENOMEM, or another negative errno (the kind failed: a 500 unless it
 * set an error). */
int srv_job_run(struct spindle_job *job);

/* The answer of a job whose prepare failed (-EINVAL/-ENOMEM) or whose run returned 0 (after the
 * kind's answer function, on the loop thread): a 200 with bytes, or an error with its status,
 * code and message. Call once; `out` borrows from the job until srv_job_fini unless out->owned. */
void srv_job_outcome(struct spindle_job *job, struct srv_job_answer *out);

/* Release the job's state, an answer nobody took, and its snapshot reference. Any thread, once,
 * when nothing else uses the job. A job never prepared (zeroed) is a no-op. */
void srv_job_fini(struct spindle_job *job);

/* The host table every kind gets (built-ins included). */
const struct spindle_host *srv_job_host(void);

/* ---- exec kinds (server/jobs/exec/) ------------------------------------------------------------
 */

/* Describe the exec kind of section `ck` (borrowed for the call; copy what the kind keeps into
 * its own data) into *out: zeroed by the caller, with abi_major/abi_minor/size already set and
 * params/nparams/param_size set from ck->params (the host checks them: leave them). Fill name,
 * summary, uses_body, run (and parse, answer, free, cost as needed), data and fini (called when
 * the snapshot that holds the kind is freed). `host` is srv_job_host(). Main thread, at start and
 * at every reload that builds a snapshot. Returns 0, or a negative errno with err saying what is
 * wrong (the registry prefixes "FILE:LINE: [kind.NAME] exec: "). Until the exec engine is built
 * in, a default returns -ENOTSUP and says so. */
int srv_exec_kind_new(const struct srv_cfg_kind *ck, const struct spindle_host *host,
                      struct spindle_kind *out, char *err, size_t size);

/* ---- the previous kind interface, until the built-in kinds move to the ABI ------------------ */

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
