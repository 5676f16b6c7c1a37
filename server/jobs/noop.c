/* noop.c - the job that does nothing: POST /v1/jobs/noop answers {"ok":true} through the pool.
 *
 * Design: it measures the fixed cost of a job (routing, admission, queueing, the hand-off to a
 * worker and back), so it does nothing else. It declares no parameters (the host refuses any)
 * and ignores any body. It keeps no state (parse is left out, so none is made) and answers a
 * static string the host never copies: the floor every other kind's overhead is measured from,
 * and what a module's noop is compared with (bench/module.sh).
 */
#include <errno.h>

#include "server/jobs/internal.h"
#include "spindle/module.h"

static const struct spindle_host *noop_host;

static int noop_run(struct spindle_job *job, void *state)
{
    static const char body[] = "{\"ok\":true}";
    (void)state;
    return noop_host->set_answer(job, body, sizeof(body) - 1, "application/json",
                                 SPINDLE_BYTES_STATIC);
}

static const struct spindle_kind noop_kind = {
    SPINDLE_KIND_HEAD,
    .name = "noop",
    .summary = "answer {\"ok\":true} through the pool (the fixed cost of a job)",
    .run = noop_run,
};

static int noop_init(const struct spindle_host *host, const struct spindle_kind **kind, char *err,
                     size_t size)
{
    (void)err;
    (void)size;
    noop_host = host;
    *kind = &noop_kind;
    return 0;
}
SRV_JOB_BUILTIN(noop_init);
