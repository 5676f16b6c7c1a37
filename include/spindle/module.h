/* spindle/module.h - the C ABI of spindle job kinds, version 1.1.
 *
 * A job kind is the work behind POST /v1/jobs/<name>. spindle's own kinds (noop, spin, primes,
 * sha256, compress) are written against this header, and so is a module: a shared object named
 * in the configuration,
 *
 *     [kind.wordfreq]
 *     module = /usr/local/lib/spindle/wordfreq.so
 *
 * loaded once at start (dlopen RTLD_NOW | RTLD_LOCAL) and never unloaded. A module needs no
 * symbol of the server: everything it may call is in the host table it is given.
 *
 * The entry point. A module exports
 *
 *     SPINDLE_MODULE_DECLARE;   // the ABI version the module was built for (a data symbol)
 *     int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
 *                             char *err, size_t err_size);
 *
 * The host reads spindle_module_abi first and refuses a module of another major version without
 * calling anything in it. Then it calls spindle_module_init once, on the main thread, before
 * serving: the module checks what it needs of `host` (SPINDLE_HOST_HAS), points *kind at its
 * description (static storage: the host keeps the pointer for the life of the process) and
 * returns 0, or a negative errno with a one-line reason in err (the host refuses to start and
 * prints it with the file, line and path).
 *
 * Versioning. struct spindle_host and struct spindle_kind both start with the ABI major, minor
 * and the struct's size as its builder saw it. A new minor version only appends fields at the
 * end of a struct (and only adds new parameter types and flags that an older side never sees);
 * a new major version may change anything and is refused by the other side. So:
 *   - the host reads only the kind's fields that lie within kind->size (later ones count as
 *     zero/NULL), and refuses a kind smaller than SPINDLE_KIND_SIZE_1_0;
 *   - a module reads only the host's fields within host->size: SPINDLE_HOST_HAS(host, fn) says
 *     whether this host has `fn` (a module built against 1.3 may run on a 1.0 host if it checks
 *     the 1.1+ functions it uses, or refuse in init with a message saying what it needs).
 * 1.1 appended streaming: a kind's `stream` flags (SPINDLE_STREAM_IN, SPINDLE_STREAM_OUT) and the
 * host's read_chunk and write_chunk (blocking, cancellable); a 1.0 module keeps working unchanged
 * (its kind is shorter: stream counts as 0, its bodies are read whole).
 *
 * Streaming (1.1). A kind with SPINDLE_STREAM_IN gets a body larger than [limits]
 * max_body_bytes, or sent chunked, as it arrives (at most max_stream_bytes): such a job's
 * host->body gives NULL, and run reads the body with host->read_chunk until it returns 0. The
 * answer then goes out with chunked transfer-encoding: bytes given to host->write_chunk
 * (SPINDLE_STREAM_OUT) leave as they are written; an answer set with set_answer leaves after run;
 * its Content-Type is the one given in parse to set_answer(job, NULL, 0, type, ...), else the
 * kind's configured one. An error set before any byte went out is answered as usual; after, the
 * body is cut (see README, Streaming). The kind's answer function is not called for a streamed
 * job. A body that fits max_body_bytes is read whole as in 1.0, and so is every batch item; for
 * those, read_chunk reads the whole body and write_chunk collects the answer (set as by
 * set_answer when run returns 0 without setting one), so a kind may have one code path for both.
 * Backpressure: read_chunk waits for the client's bytes and write_chunk for the client to read,
 * so a body of any size costs the host a few hundred KiB; the socket is not read while the job
 * does not read.
 *
 * One job's life, with the threads each function runs on:
 *
 *   loop thread     the host checks the query parameters against kind->params (400 bad_param
 *                   with a message of the host's, e.g. "n must be an integer between 0 and 10"),
 *                   then parse(job, &state): further checks (host->set_error or a plain -EINVAL)
 *                   and the job's state (may stay NULL: a kind with nothing to remember
 *                   allocates nothing)
 *   loop thread     cost(state) when given: a number that grows with the expected run time, for
 *                   admission's run-time estimate
 *   worker thread   run(job, state): the work, with the request's context current; checks
 *                   host->cancelled(job) at least every millisecond of CPU and returns
 *                   -ECANCELED when it is; sets the answer (or an error) here or in answer
 *   loop thread     answer(job, state) (optional) after run returned 0
 *   any thread      free(state), exactly once for a state parse made, after everything else; also
 *                   when the job never ran (refused by admission, cancelled while queued)
 *
 * Errors answer exactly like the server's own: {"error":{"code":...,"message":...,
 * "request_id":...}} with the status given. The request body, the parameters and the host table
 * are borrowed: valid until free(state). A kind must be reentrant: many jobs of it run at once on
 * different workers, each with its own state.
 *
 * Threads: every host function may be called from the thread the job is on at that moment, with
 * the job's own handle. Handles are not to be kept after free.
 */
#ifndef SPINDLE_MODULE_H
#define SPINDLE_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPINDLE_ABI_MAJOR 1
#define SPINDLE_ABI_MINOR 1

/* The host's handle of one job: opaque, borrowed by every call that gets it. */
struct spindle_job;

/* ---- log fields ------------------------------------------------------------------------------ */

enum spindle_log_level {
    SPINDLE_LOG_DEBUG = 1,
    SPINDLE_LOG_INFO = 2,
    SPINDLE_LOG_WARN = 3,
    SPINDLE_LOG_ERROR = 4,
};

enum spindle_field_type {
    SPINDLE_F_STR = 1, /* v.s, NUL-terminated (NULL logs null) */
    SPINDLE_F_STRN,    /* v.s, len bytes */
    SPINDLE_F_INT,     /* v.i */
    SPINDLE_F_UINT,    /* v.u */
    SPINDLE_F_DOUBLE,  /* v.d */
    SPINDLE_F_BOOL,    /* v.b, 0 or not */
};

/* One field of a log line; borrowed for the call only. */
struct spindle_field {
    const char *key;
    int type; /* enum spindle_field_type */
    size_t len;
    union {
        const char *s;
        int64_t i;
        uint64_t u;
        double d;
        int b;
    } v;
};

#define SPINDLE_STR(k, x) ((struct spindle_field){.key = (k), .type = SPINDLE_F_STR, .v.s = (x)})
#define SPINDLE_STRN(k, x, n)                                                                      \
    ((struct spindle_field){.key = (k), .type = SPINDLE_F_STRN, .len = (n), .v.s = (x)})
#define SPINDLE_INT(k, x)                                                                          \
    ((struct spindle_field){.key = (k), .type = SPINDLE_F_INT, .v.i = (int64_t)(x)})
#define SPINDLE_UINT(k, x)                                                                         \
    ((struct spindle_field){.key = (k), .type = SPINDLE_F_UINT, .v.u = (uint64_t)(x)})
#define SPINDLE_DOUBLE(k, x)                                                                       \
    ((struct spindle_field){.key = (k), .type = SPINDLE_F_DOUBLE, .v.d = (double)(x)})
#define SPINDLE_BOOL(k, x) ((struct spindle_field){.key = (k), .type = SPINDLE_F_BOOL, .v.b = (x)})

/* ---- declared parameters --------------------------------------------------------------------- */

enum spindle_param_type {
    SPINDLE_PARAM_INT = 1, /* decimal digits only, min..max (the host checks); value: the number */
    SPINDLE_PARAM_ENUM,    /* one of choices; value: its index in choices */
    SPINDLE_PARAM_BOOL,    /* true|false|1|0; value: 1 or 0 */
    SPINDLE_PARAM_STRING,  /* any value of at most 256 bytes, checked by parse (param_str) */
};

#define SPINDLE_PARAMS_MAX  16 /* parameters a kind declares at most */
#define SPINDLE_CHOICES_MAX 32 /* choices of one enum parameter at most */

/* One parameter a kind declares. The host refuses (400 bad_param) an unknown parameter, one given
 * twice, a missing required one and a value out of its type; so parse sees only valid values. */
struct spindle_param {
    const char *name; /* [a-z0-9_]{1,31} */
    int type;         /* enum spindle_param_type */
    int required;     /* nonzero: the request must give it; else `def` applies (value) */
    int64_t min, max; /* INT: the range (0 <= min <= max) */
    int64_t def;      /* the value when not given: INT the number, BOOL 0/1, ENUM an index */
    const char *const *choices; /* ENUM: NULL-terminated, 1..SPINDLE_CHOICES_MAX entries */
    const char *limit; /* INT, optional: a server limit ("max_spin_ms", host->limit) that lowers
                          max, so the server's configuration caps the parameter */
};

/* ---- the host: what a kind may call ---------------------------------------------------------- */

/* set_answer flags: who owns the answer's bytes. */
#define SPINDLE_BYTES_BORROWED 0u /* valid until free(state): the host copies them once */
#define SPINDLE_BYTES_STATIC   1u /* valid for the life of the process (a string literal) */
#define SPINDLE_BYTES_MALLOC   2u /* from malloc(): the host takes them and frees them */

struct spindle_host {
    uint16_t abi_major; /* SPINDLE_ABI_MAJOR of the host */
    uint16_t abi_minor;
    uint32_t size; /* sizeof(struct spindle_host) as the host was built */

    /* ---- 1.0 ---- */

    /* Nonzero when the job should stop (client gone, deadline, shutdown, a batch sibling won).
     * Worker thread, in run; one atomic load per level of context: cheap enough for a loop. */
    int (*cancelled)(const struct spindle_job *job);

    /* Milliseconds left until the job's deadline (0 when past), or -1 when it has none. */
    int64_t (*time_left_ms)(const struct spindle_job *job);

    /* Nonzero when a line at `level` would be written (skip building fields otherwise). */
    int (*log_enabled)(int level);

    /* Write one JSON log line at `level` with `msg` and n fields (all borrowed for the call). The
     * request's ids (request_id, tenant, trace_id, span_id) and "kind" are added by the host. */
    void (*log)(const struct spindle_job *job, int level, const char *msg,
                const struct spindle_field *fields, size_t n);

    /* The value of declared parameter `index` (its position in kind->params): given, or its
     * default. 0 for an index out of range. */
    int64_t (*param)(const struct spindle_job *job, unsigned index);

    /* Nonzero when the request gave parameter `index` (else param() is its default). */
    int (*param_given)(const struct spindle_job *job, unsigned index);

    /* A STRING parameter's bytes (not NUL-terminated; *len set), or NULL when not given. In
     * parse only (copy what run needs into the state). */
    const char *(*param_str)(const struct spindle_job *job, unsigned index, size_t *len);

    /* Check a STRING (or INT) parameter as a decimal integer in [min, max]: 0 and *out, or
     * -EINVAL after setting the host's 400 error ("<name> must be an integer between MIN and
     * MAX"). Loop thread, in parse. */
    int (*param_int)(struct spindle_job *job, unsigned index, int64_t min, int64_t max,
                     int64_t *out);

    /* The request body: *len bytes (0 and a non-NULL pointer when empty). Only for kinds with
     * uses_body; other kinds get NULL. */
    const void *(*body)(const struct spindle_job *job, size_t *len);

    /* The answer: len bytes (flags say who owns them) with `content_type` (a string of static
     * storage; NULL: the kind's configured content_type, else application/octet-stream).
     * Status 200. Replaces an earlier answer or error. Returns 0, -EFBIG (over the kind's
     * max_output_bytes: the job answers 500 output_too_large; MALLOC bytes are freed), -EINVAL. */
    int (*set_answer)(struct spindle_job *job, const void *bytes, size_t len,
                      const char *content_type, unsigned flags);

    /* An error answer: status 400..599, code [a-z0-9_]{1,48} (copied), message one line (copied,
     * cut at 160 bytes). In parse the host then answers it and never runs the job; in run or
     * answer it replaces any answer. Returns 0 or -EINVAL (bad status or code: ignored). */
    int (*set_error)(struct spindle_job *job, int status, const char *code, const char *message);

    /* A server limit by its configuration key in [limits] (max_body_bytes, max_spin_ms,
     * max_primes_n, max_sha256_rounds, max_compress_level_zstd, max_timeout_ms): 0 and *out, or
     * -ENOENT. In parse only (the value in force for this job; a reload may change it for later
     * jobs); -ENOENT elsewhere. */
    int (*limit)(const struct spindle_job *job, const char *name, uint64_t *out);

    /* The kind's own pointer (kind->data) for this job's kind. */
    void *(*kind_data)(const struct spindle_job *job);

    /* ---- 1.1 ---- */

    /* Up to `size` (> 0) bytes of the request body into buf. Blocks until bytes arrive (a
     * streamed body: the client's pace), the body ends or the job is cancelled. Returns the count
     * (> 0), 0 at the end of the body, -ECANCELED (client gone, deadline, shutdown: return it
     * from run), -EINVAL (size 0, or a kind without uses_body). Worker thread, in run. */
    int64_t (*read_chunk)(struct spindle_job *job, void *buf, size_t size);

    /* Append len bytes of buf (borrowed for the call) to the answer. For a streamed job of a
     * SPINDLE_STREAM_OUT kind they go to the client as written, blocking while the client does
     * not read; otherwise they are collected, and become the answer when run returns 0 without
     * having set one. Returns 0, -ECANCELED (return it from run), -EFBIG (over the kind's
     * max_output_bytes: the job answers 500 output_too_large), -ENOMEM, -EINVAL (buf NULL).
     * Worker thread, in run. */
    int (*write_chunk)(struct spindle_job *job, const void *buf, size_t len);
};

/* True when `host` has the function (or field) `member`: it lies within host->size and is set. */
#define SPINDLE_HOST_HAS(host, member)                                                             \
    (offsetof(struct spindle_host, member) + sizeof((host)->member) <= (host)->size &&             \
     (host)->member != NULL)

/* ---- the kind: what a module describes ------------------------------------------------------- */

/* Returns 0 with *state set (NULL allowed), -EINVAL (bad request: the error set with set_error,
 * else 400 bad_param "invalid parameters") or -ENOMEM (503). Loop thread (a worker for the items
 * of a large batch body: keep it reentrant). */
typedef int spindle_parse_fn(struct spindle_job *job, void **state);

/* Returns 0 (the answer or an error is set; none set: 200 with an empty body), -ECANCELED (it saw
 * host->cancelled), -ENOMEM (503 out_of_memory) or another negative errno (500 job_failed, unless
 * an error was set). Worker thread, the request's context current. */
typedef int spindle_run_fn(struct spindle_job *job, void *state);

/* Set the answer after run returned 0 (set_answer / set_error). Loop thread. */
typedef void spindle_answer_fn(struct spindle_job *job, void *state);

/* Release a state of parse. Any thread, once; never touches the body. */
typedef void spindle_free_fn(void *state);

/* A number that grows with the expected run time of `state` (primes: n). Loop thread, cheap. */
typedef uint64_t spindle_cost_fn(const void *state);

/* Release the kind's own data (kind->data) when the host lets go of the kind (at exit). */
typedef void spindle_fini_fn(void *data);

struct spindle_kind {
    uint16_t abi_major; /* SPINDLE_ABI_MAJOR the module was built with */
    uint16_t abi_minor;
    uint32_t size; /* sizeof(struct spindle_kind) as the module was built */

    /* ---- 1.0 ---- */
    const char *name;    /* the module's name for itself ([a-z0-9_]{1,31}); the URL uses the
                            [kind.NAME] of the configuration */
    const char *summary; /* one line for listings */
    int uses_body;       /* 0: any body is accepted and ignored, host->body gives NULL */
    const struct spindle_param *params; /* nparams declarations (NULL when 0) */
    uint32_t nparams;                   /* 0..SPINDLE_PARAMS_MAX */
    uint32_t param_size;                /* sizeof(struct spindle_param) as the module was built */
    spindle_parse_fn *parse;   /* NULL: no checks beyond the declared parameters, no state */
    spindle_run_fn *run;       /* required */
    spindle_answer_fn *answer; /* NULL: run sets the answer */
    spindle_free_fn *free;     /* NULL: states need no release (or parse makes none) */
    spindle_cost_fn *cost;     /* NULL: every job of the kind takes about as long */
    void *data;                /* the module's own, given back by host->kind_data */
    spindle_fini_fn *fini;     /* NULL: nothing to release */

    /* ---- 1.1 ---- */
    uint32_t stream; /* SPINDLE_STREAM_* flags: 0 reads whole bodies and answers whole (1.0) */
};

/* stream flags (1.1): see Streaming at the top of this file. */
#define SPINDLE_STREAM_IN  1u /* a large or chunked body streams to run (read_chunk) */
#define SPINDLE_STREAM_OUT 2u /* write_chunk of a streamed job goes to the client as written */

/* The smallest description the host accepts: every 1.0 field. */
#define SPINDLE_KIND_SIZE_1_0 (offsetof(struct spindle_kind, fini) + sizeof(spindle_fini_fn *))

/* The first fields of a description of this header's version: use in its initialiser,
 *     static const struct spindle_kind kind = { SPINDLE_KIND_HEAD, .name = "wordfreq", ... }; */
#define SPINDLE_KIND_HEAD                                                                          \
    .abi_major = SPINDLE_ABI_MAJOR, .abi_minor = SPINDLE_ABI_MINOR,                                \
    .size = (uint32_t)sizeof(struct spindle_kind),                                                 \
    .param_size = (uint32_t)sizeof(struct spindle_param)

/* ---- the entry point ------------------------------------------------------------------------- */

#define SPINDLE_MODULE_ABI_SYMBOL  "spindle_module_abi"
#define SPINDLE_MODULE_INIT_SYMBOL "spindle_module_init"

/* (major << 16) | minor of the header a module was built with. */
#define SPINDLE_ABI_VERSION(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))

/* Put this at file scope in one file of a module: the version the host reads before anything. */
#define SPINDLE_MODULE_DECLARE                                                                     \
    __attribute__((visibility("default"))) const uint32_t spindle_module_abi =                     \
        SPINDLE_ABI_VERSION(SPINDLE_ABI_MAJOR, SPINDLE_ABI_MINOR)

/* The entry point's type: see the top of this file. */
typedef int spindle_module_init_fn(const struct spindle_host *host,
                                   const struct spindle_kind **kind, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
