/* stream.h (jobs) - job kinds that stream: the body arrives in chunks and the answer leaves in
 * chunks, through the bounded channels of server/stream/stream.h, so a body of any size passes
 * in a few hundred KiB of memory.
 *
 * A streaming kind sits next to the whole-body kind of the same name (jobs.h) and serves only the
 * requests it says it wants: compress streams every request, sha256 only rounds=1 (more rounds
 * keep the whole-body path). The split across threads:
 *
 *   loop thread    wants(params) -> bool                 head time: stream this body?
 *   loop thread    parse(params, limits) -> state        validate, or a 400 message
 *   loop thread    content_type(state)                   the answer's Content-Type
 *   worker thread  run(state, in, out)                   srv_chan_read(in) ... srv_chan_write(out)
 *   either         free(state)                           exactly once, after the others
 *
 * run reads the body with srv_chan_read until it returns 0, writes the answer with srv_chan_write,
 * and returns 0; both calls block (the worker waits for the client, cancellably) and return
 * -ECANCELED when the request is cancelled (client gone, deadline, shutdown), which run returns.
 * It also checks the context (ctx_current()) at least every millisecond of CPU between chunks.
 * Other returns: -ENOMEM, -EIO (a library failed), -EPIPE (the output was closed). The caller
 * closes `out` after run returned 0; run never does.
 *
 * Registration: SRV_JOB_STREAM_REGISTER(desc) in the kind's file (the linker section
 * "srv_job_streams"), like SRV_JOB_KIND_REGISTER.
 */
#ifndef SPINDLE_SRV_JOBS_STREAM_H
#define SPINDLE_SRV_JOBS_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "server/config.h"
#include "server/jobs/jobs.h"
#include "server/stream/stream.h"

/* True when a request with these parameters (borrowed for the call) streams. Loop thread, cheap;
 * may say true for bad parameters (parse then answers 400 before any body is read). */
typedef bool srv_job_stream_wants_fn(const struct srv_job_param *params, size_t nparams);

/* Validate the parameters (borrowed) and build the state (new, owned by the caller). Returns 0,
 * -EINVAL with a message in err, -ENOMEM. On error *state is NULL. Loop thread. */
typedef int srv_job_stream_parse_fn(const struct srv_job_param *params, size_t nparams,
                                    const struct srv_cfg *limits, void **state, char *err,
                                    size_t size);

/* The Content-Type of the answer (a static string). Loop thread. */
typedef const char *srv_job_stream_type_fn(const void *state);

/* The work: `in` and `out` are borrowed for the call. Worker thread, context current. */
typedef int srv_job_stream_run_fn(void *state, struct srv_chan *in, struct srv_chan *out);

struct srv_job_stream_kind {
    const char *name; /* the whole-body kind's name: /v1/jobs/<name> */
    srv_job_stream_wants_fn *wants;
    srv_job_stream_parse_fn *parse;
    srv_job_stream_type_fn *content_type;
    srv_job_stream_run_fn *run;
    srv_job_free_fn *free;
};

/* The streaming kind called `name` (len bytes, borrowed), or NULL. Any thread. */
const struct srv_job_stream_kind *srv_job_stream_find(const char *name, size_t len);

#define SRV_JOB_STREAM_REGISTER(desc)                                                              \
    static const struct srv_job_stream_kind *const srv_job_stream_reg_##desc                       \
        __attribute__((used, section("srv_job_streams"), aligned(sizeof(void *)))) = &(desc)

#endif
