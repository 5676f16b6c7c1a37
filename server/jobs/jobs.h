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

#include "server/config.h"
#include "spindle/module.h"

struct srv_chan;

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
    char ctype_store[SRV_CFG_VALUE_MAX];      /* what content_type points at when set */
    char source_store[SRV_CFG_PATH_MAX + 16]; /* what source points at */
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

/* A new reference to the current snapshot (the built-in kinds alone before the first install).
 * Any thread. */
struct srv_kinds *srv_kinds_current(void);

/* Release the current snapshot and let go of the loaded modules (their kinds' fini). At exit,
 * after every job is done. Main thread. */
void srv_kinds_shutdown(void);

/* The built-in kinds only, built once (no configuration needed): for tests and tools. A
 * borrowed snapshot that lives as long as the process. */
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
    bool ran;           /* run returned 0: the kind's answer function is still to run */
    /* streaming (ABI 1.1): a streamed job's channels, borrowed from its request; else the body's
     * read offset and the answer write_chunk collects */
    struct srv_chan *in, *out;
    bool streamed;   /* prepared by srv_job_prepare_stream: body() gives NULL */
    bool wrote;      /* write_chunk sent bytes to `out` */
    size_t body_off; /* read_chunk of a whole body */
    char *wbuf;      /* write_chunk of a whole answer: malloc'd */
    size_t wlen, wcap;
    int err_status; /* 0: no error set */
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
    bool is_static;      /* body outlives the job (static storage): no copy needed */
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

/* True when a body of kind `k` (borrowed) that does not fit max_body_bytes, or comes chunked,
 * streams to its job (the kind says SPINDLE_STREAM_IN and uses the body). Any thread. */
bool srv_kind_streams(const struct srv_kind *k);

/* srv_job_prepare for a body that streams: no body yet (host->body gives NULL; run reads it with
 * read_chunk once srv_job_stream_attach gave the channels). Same returns and duties. Loop. */
int srv_job_prepare_stream(struct spindle_job *job, const struct srv_kind *k,
                           const struct srv_job_param *params, size_t nparams,
                           const struct srv_cfg *cfg);

/* The Content-Type of a prepared streamed job's answer (static or the snapshot's): the one parse
 * gave set_answer, else the kind's configured one, else application/octet-stream. */
const char *srv_job_stream_type(const struct spindle_job *job);

/* Give a streamed job its channels (server/stream/stream.h; borrowed until it is finished): run
 * reads `in` and writes `out`. Loop thread, before the job is submitted. */
void srv_job_stream_attach(struct spindle_job *job, struct srv_chan *in, struct srv_chan *out);

/* The kind's cost of the prepared job (0 when the kind has no cost function). Loop thread. */
uint64_t srv_job_cost(const struct spindle_job *job);

/* Run the prepared job: worker thread, the request's context current. Returns 0 (an answer or
 * error is set), -ECANCELED, -ENOMEM, or another negative errno (the kind failed: a 500 unless it
 * set an error). A streamed job's answer set with set_answer is written to `out` here; its
 * error (set_error) stays for srv_job_outcome, which does not call the kind's answer function
 * for a streamed job. */
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

#endif
