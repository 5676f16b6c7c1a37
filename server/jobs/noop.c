/* noop.c - the job that does nothing: POST /v1/jobs/noop answers {"ok":true} through the pool.
 *
 * Design: it measures the fixed cost of a job (routing, admission, queueing, the hand-off to a
 * worker and back), so it does nothing else. It takes no parameters and ignores any body. The
 * state is a one-byte allocation so that every kind obeys the same contract (a non-NULL state
 * that free() releases).
 */
#include "server/jobs/jobs.h"

#include <errno.h>
#include <stdlib.h>

static const char noop_body[] = "{\"ok\":true}";

struct noop_state {
    char unused;
};

static int noop_parse(const struct srv_job_param *params, size_t nparams, const void *body,
                      size_t body_len, const struct srv_cfg *limits, void **state, char *err,
                      size_t size)
{
    (void)body;
    (void)body_len;
    (void)limits;
    *state = NULL;
    int rc = srv_job_params_match(params, nparams, NULL, 0, NULL, err, size);
    if (rc < 0)
        return rc;
    struct noop_state *st = srv_job_state_new(sizeof(*st), err, size);
    if (st == NULL)
        return -ENOMEM;
    *state = st;
    return 0;
}

static int noop_run(void *state)
{
    (void)state;
    return 0;
}

static void noop_answer(const void *state, struct srv_job_answer *out)
{
    (void)state;
    out->status = 200;
    out->content_type = "application/json";
    out->body = noop_body;
    out->len = sizeof(noop_body) - 1;
}

static void noop_free(void *state)
{
    free(state);
}

static const struct srv_job_kind srv_job_noop = {
    .name = "noop",
    .summary = "answer {\"ok\":true} through the pool (the fixed cost of a job)",
    .uses_body = false,
    .parse = noop_parse,
    .run = noop_run,
    .answer = noop_answer,
    .free = noop_free,
};
SRV_JOB_KIND_REGISTER(srv_job_noop);
