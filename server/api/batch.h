/* batch.h - POST /v1/batch: the JSON side of a fan-out (server/ only).
 *
 * A batch is a JSON array of sub-jobs, each {"kind": K, "params": {...}, "body": "...",
 * "timeout_ms": N}, run in parallel on the pool as children of the request's context
 * (server/api/batch.c). This header is the pure part, tested on its own (server/api/batch_json.c):
 *
 *   srv_batch_parse     body -> validated sub-jobs, each parsed by its kind (a 400 names the item)
 *   srv_batch_settle    one sub-job finished: does the mode now have its answer, and do the
 *                       others have to be cancelled?
 *   srv_batch_answer    every sub-job finished: the status and JSON body of the answer
 *
 * Modes (Promise.all / allSettled / any / race):
 *   all          every sub-job succeeds: 200 with every result; the first failure cancels the
 *                others (sibling_failed) and is the answer
 *   all_settled  200 with every result and failure, in order; nothing is cancelled
 *   any          the first success is the answer, the others are cancelled (sibling_won); when
 *                every sub-job fails, an error listing each failure
 *   race         the first sub-job to finish is the answer either way; the others are cancelled
 *                (sibling_won after a success, sibling_failed after a failure)
 *
 * Threads: any thread; the functions keep no state of their own. server/api/batch.c parses a body
 * of up to SRV_BATCH_INLINE_PARSE_MAX bytes on the loop and a larger one on a worker.
 */
#ifndef SPINDLE_SRV_BATCH_H
#define SPINDLE_SRV_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/config.h"
#include "server/jobs/jobs.h"

enum srv_batch_mode { SRV_BATCH_ALL = 0, SRV_BATCH_ALL_SETTLED, SRV_BATCH_ANY, SRV_BATCH_RACE };

/* "all", "all_settled", "any", "race"; NULL out of range. */
const char *srv_batch_mode_name(enum srv_batch_mode m);

/* The mode named by `s` (len bytes, borrowed, exact match). Returns 0 or -EINVAL. */
int srv_batch_mode_parse(const char *s, size_t len, enum srv_batch_mode *out);

/* ---- parsing --------------------------------------------------------------------------------- */

#define SRV_BATCH_ERR_MAX 256 /* room for any parse message */

/* Bodies up to this many bytes are parsed on the loop thread (jansson takes about 20 ms per MiB,
 * so at most ~0.3 ms of the loop); larger ones on a worker, so that a stream of large batches
 * cannot stall every other connection. */
#define SRV_BATCH_INLINE_PARSE_MAX 16384

struct srv_batch_item {
    const struct srv_job_kind *kind; /* static */
    void *state;                     /* the kind's (owned by the spec until taken: set NULL) */
    unsigned timeout_ms;             /* the item's own deadline from its start; 0 = none */
};

struct srv_batch_spec {
    void *json; /* the parsed body (json_t); owns the "body" strings the states point at */
    size_t count;
    struct srv_batch_item *items; /* count entries */
};

/* Parse `len` bytes of `body` (borrowed for the call) into *out: a JSON array of 1..max_batch
 * objects with a registered "kind" (required), "params" (an object of strings and integers: the
 * kind's parameters, checked by the kind's parse against `cfg`'s limits), "body" (a string, only
 * for kinds that use a body) and "timeout_ms" (1..max_timeout_ms); nothing else. `cfg` is
 * borrowed for the call. Returns 0 and a filled *out (release with srv_batch_spec_fini), or:
 *   -EINVAL  *code is "bad_json" (not JSON: the message gives line and column), "bad_batch" (the
 *            shape: not an array, empty, too many items, an item not an object, an unknown or
 *            mistyped member, an unknown kind, a body for a kind without one) or "bad_param" (the
 *            kind refused its parameters: "jobs[I] (KIND): <the kind's message>"); err holds the
 *            message, naming the item as jobs[I]
 *   -ENOMEM  out of memory (*code "out_of_memory")
 * On error *out is empty. */
int srv_batch_parse(const void *body, size_t len, const struct srv_cfg *cfg,
                    struct srv_batch_spec *out, const char **code, char *err, size_t size);

/* Parse one item the way srv_batch_parse parses each: `item` is a json_t object (borrowed for
 * the call; kinds with a body keep pointing into it: keep it alive until the state is freed),
 * `who` (borrowed) names it in messages ("task: unknown kind 'x'"), and the members named in
 * `extra` (NULL-terminated, borrowed; NULL = none) are skipped: the caller's own options, as for
 * POST /v1/tasks. Returns 0 and *out (release its state with out->kind->free), or -EINVAL /
 * -ENOMEM with *code and err (SRV_BATCH_ERR_MAX bytes) as for srv_batch_parse. */
int srv_batch_item_parse(const void *item, const char *who, const char *const *extra,
                         const struct srv_cfg *cfg, struct srv_batch_item *out, const char **code,
                         char *err);

/* Free the states still in the spec (items whose state is not NULL), the items and the JSON.
 * Leaves *s empty; safe on an empty spec. */
void srv_batch_spec_fini(struct srv_batch_spec *s);

/* ---- settling -------------------------------------------------------------------------------- */

enum srv_batch_status {
    SRV_BATCH_PENDING = 0, /* not finished */
    SRV_BATCH_OK,          /* ran to completion: the kind's answer is in content_type/body */
    SRV_BATCH_FAILED,      /* failed (deadline, job failure, out of memory, shutdown) */
    SRV_BATCH_CANCELLED,   /* stopped by a sibling's outcome or the client going away */
};

/* "pending", "ok", "failed", "cancelled". */
const char *srv_batch_status_name(enum srv_batch_status s);

struct srv_batch_outcome {
    enum srv_batch_status status;
    const char *kind;              /* the kind's name (static) */
    int http_status;               /* FAILED: 500, 503 or 504 */
    const char *code;              /* FAILED: static error code, e.g. "deadline_exceeded" */
    char message[SRV_JOB_ERR_MAX]; /* FAILED: one line for the client */
    enum ctx_reason reason;        /* why its context was cancelled, NONE when it was not */
    const char *content_type;      /* OK: static */
    const void *body;              /* OK: borrowed (the kind's state), len bytes */
    size_t len;
    uint64_t queue_ns, run_ns; /* time queued, time run */
};

#define SRV_BATCH_NONE SIZE_MAX /* no deciding sub-job (yet) */

/* Make *o an OK outcome with the answer of `item` (borrowed), whose run returned 0: its status,
 * content type and body (borrowed from the item's state). Other fields are left as they are. */
void srv_batch_outcome_ok(struct srv_batch_outcome *o, const struct srv_batch_item *item);

/* Sub-job `i` just finished with outcome `o` (borrowed; no longer PENDING). *decided is the index
 * of the sub-job whose outcome is the answer (SRV_BATCH_NONE until there is one); it is updated
 * here. Returns true when the sub-jobs still pending must be cancelled now, with *why the reason
 * to cancel them with (only on the call that decides). */
bool srv_batch_settle(enum srv_batch_mode mode, const struct srv_batch_outcome *o, size_t i,
                      size_t *decided, enum ctx_reason *why);

/* The answer once no outcome is PENDING: *status and a new malloc'd JSON body in *body (*len
 * bytes, not NUL-terminated; the caller frees it). `request_id` (borrowed) goes into error
 * bodies. Returns 0 or -ENOMEM. Bodies:
 *   success  {"mode":M,"results":[...]} (all), plus "succeeded"/"failed" (all_settled), plus
 *            "index","kind","result" of the winner (any, race)
 *   failure  {"error":{"code","message","request_id","index"},"mode":M,"results":[...]} with the
 *            failed sub-job's status (all, race), or for any when every sub-job failed:
 *            {"error":{"code":"all_failed",...,"errors":[{"index","code","message"},...]},...}
 *            with the status the failures share, else 500
 * A result is {"index","kind","status","result" | "result_base64"+"content_type" | "error" |
 * "reason","queue_ms","run_ms"}; JSON answers are embedded, others base64-encoded. */
int srv_batch_answer(enum srv_batch_mode mode, const struct srv_batch_outcome *outcomes, size_t n,
                     size_t decided, const char *request_id, int *status, char **body, size_t *len);

#endif
