/* jobs_stream.c - POST /v1/jobs/<kind> for the kinds that stream (server/jobs/stream.h): the body
 * flows to the job and the answer back through the request's channels while both are in transit.
 *
 * Design: srv_jobroute_new (common.c) marks the route of every kind that has a streaming side with
 * srv_jobs_stream_wanted, which the HTTP layer asks when a head with a body arrives: the kind says
 * whether these parameters stream (compress: always; sha256: rounds=1). A streaming request comes
 * to srv_jobs_handle at once, which hands it here: the kind parses the parameters (400 bad_param,
 * before any of the body is read), admission decides (a refusal is answered at once: a client that
 * sent Expect: 100-continue never sends its body), srv_req_stream_start makes the channels, and
 * the job is submitted; the HTTP layer sends 100 Continue only after this handler returned with
 * the stream started. The job's run is the kind's run over the two channels; its done callback
 * gives the admission decision back, counts the stream (bytes in and out, time the job waited on
 * the client) and ends the stream with the outcome.
 * Run-time estimates are not fed: a stream's run time is mostly the client's pace, not work.
 *
 * Ownership: a js_req is allocated by the handler, borrowed by the pool from submit to done, and
 * freed in done. The kind's state is freed in done too. The channels belong to the request.
 * Threads: everything on the loop thread but js_run (a worker, request context current).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logging/log.h"
#include "pool/pool.h"
#include "server/api/internal.h"
#include "server/http/http.h"
#include "server/http/request.h"
#include "server/jobs/stream.h"
#include "server/metrics/metrics.h"

#define JS_PARAMS_MAX 16 /* a streaming kind takes a few parameters; more are a 400 */

struct js_req {
    struct srv_api_job aj; /* first: its pool_job is borrowed by the pool until done */
    const struct jr_route *route;
    const struct srv_job_stream_kind *kind;
    struct srv_adm_decision adm;
    void *state;
    struct srv_req *req;
    struct srv_chan *in, *out;
};

static const struct srv_job_stream_kind *js_kind_of(const struct srv_req *req)
{
    static const char prefix[] = "/v1/jobs/";
    const char *path = srv_req_path(req);
    if (strncmp(path, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    path += sizeof(prefix) - 1;
    return srv_job_stream_find(path, strlen(path));
}

/* The query as the kind's parameters; -E2BIG when there are more than JS_PARAMS_MAX. */
static int js_params(const struct srv_req *req, struct srv_job_param *params, size_t *n)
{
    *n = srv_req_query_count(req);
    if (*n > JS_PARAMS_MAX)
        return -E2BIG;
    for (size_t i = 0; i < *n; i++) {
        const struct srv_query_param *q = srv_req_query_at(req, i);
        params[i] = (struct srv_job_param){q->key, q->value, q->key_len, q->value_len};
    }
    return 0;
}

bool srv_jobs_stream_wanted(struct srv_req *req)
{
    const struct srv_job_stream_kind *kind = js_kind_of(req);
    struct srv_job_param params[JS_PARAMS_MAX];
    size_t n;
    if (kind == NULL || js_params(req, params, &n) < 0)
        return false;
    return kind->wants(n > 0 ? params : NULL, n);
}

static int js_run(struct pool_job *job)
{
    struct js_req *r = job->data;
    LOG_D("job start", LOG_STR("kind", r->kind->name), LOG_BOOL("stream", true));
    int rc = r->kind->run(r->state, r->in, r->out);
    LOG_D("job end", LOG_STR("kind", r->kind->name), LOG_INT("result", rc));
    return rc;
}

/* What the stream's end says for a job that did not succeed. */
static void js_outcome(const struct pool_job *job, enum pool_status status, int *code_status,
                       const char **code)
{
    *code_status = 503;
    *code = "cancelled";
    if (status == POOL_FAILED) {
        *code_status = job->result == -ENOMEM ? 503 : 500;
        *code = job->result == -ENOMEM ? "out_of_memory" : "job_failed";
    } else if (status == POOL_REFUSED_SHUTDOWN || job->reason == CTX_REASON_SHUTDOWN) {
        *code = "shutting_down";
    } else if (job->reason == CTX_REASON_DEADLINE) {
        *code_status = 504;
        *code = "deadline_exceeded";
    }
}

static void js_done(struct pool_job *job, enum pool_status status)
{
    struct js_req *r = job->data;
    struct srv_req *req = r->req;
    struct srv_jobroute *jr = r->route->jr;
    uint64_t queue, run;
    srv_jobroute_times(job, ctx_now_ns(), &queue, &run);
    srv_req_set_timing(req, queue, run);
    if (jr->adm != NULL)
        srv_adm_release(jr->adm, &r->adm, ctx_now_ns());
    struct srv_req_stream_stats ss;
    srv_req_stream_stats(req, &ss);
    if (jr->met != NULL) {
        srv_met_stream_open(jr->met, -1);
        srv_met_stream_done(jr->met, r->kind->name, ss.bytes_in, ss.bytes_out, ss.blocked_ns);
    }
    r->kind->free(r->state);
    int code_status = 0;
    const char *code = NULL;
    char msg[128] = "";
    if (status != POOL_DONE) {
        js_outcome(job, status, &code_status, &code);
        snprintf(msg, sizeof(msg), "the %s job ended: %s", r->kind->name,
                 status == POOL_FAILED ? strerror(-job->result) : pool_status_name(status));
        if (status == POOL_FAILED)
            LOG_E("job failed", LOG_STR("kind", r->kind->name),
                  LOG_STR("error", strerror(-job->result)));
    }
    (void)srv_req_stream_end(req, status == POOL_DONE ? 0 : -ECANCELED, code_status, code, msg);
    free(r);
}

/* Parse and admit; 0 with r->state and r->adm set, else answered. */
static int js_prepare(struct js_req *r, struct srv_req *req)
{
    struct srv_job_param params[JS_PARAMS_MAX];
    char err[SRV_JOB_ERR_MAX] = "too many query parameters";
    size_t n = 0;
    int rc = js_params(req, params, &n);
    if (rc == 0)
        rc = r->kind->parse(n > 0 ? params : NULL, n, srv_http_cfg(srv_req_http(req)), &r->state,
                            err, sizeof(err));
    if (rc < 0) {
        (void)srv_req_answer_error(req, rc == -ENOMEM ? 503 : 400,
                                   rc == -ENOMEM ? "out_of_memory" : "bad_param", err);
        return rc;
    }
    bool refused = false;
    rc = srv_jobroute_admit_class(r->route->jr, req, 1, NULL, 0, &r->adm, &refused);
    r->aj.job.weight = rc == 0 ? r->adm.weight : 1;
    if (rc == 0)
        return 0;
    r->kind->free(r->state);
    if (refused) {
        srv_jobroute_adm_refused(r->route->jr, req, &r->adm);
    } else {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "admission failed");
    }
    return rc;
}

void srv_jobs_stream_handle(struct srv_req *req)
{
    struct js_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    r->route = srv_req_route_arg(req);
    r->kind = js_kind_of(req);
    r->req = req;
    r->aj.kind = r->route->kind->name;
    r->aj.job.run = js_run;
    r->aj.job.done = js_done;
    r->aj.job.data = r;
    if (r->kind == NULL || js_prepare(r, req) < 0) {
        if (r->kind == NULL)
            srv_req_release(req);
        free(r);
        return;
    }
    struct srv_jobroute *jr = r->route->jr;
    int rc = srv_req_stream_start(req, r->kind->content_type(r->state), &r->in, &r->out);
    if (rc == 0)
        rc = pool_submit(jr->pool, &r->aj.job); /* the request context is current */
    if (rc == 0) {
        if (jr->met != NULL)
            srv_met_stream_open(jr->met, 1);
        return;
    }
    struct srv_adm_decision d = r->adm;
    if (jr->adm != NULL)
        srv_adm_release(jr->adm, &r->adm, ctx_now_ns());
    r->kind->free(r->state);
    free(r);
    srv_jobroute_submit_refused(jr, req, rc, d.tenant_label ? d.tenant_label : SRV_ADM_OTHER_LABEL);
}
