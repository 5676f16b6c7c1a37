/* jobs_stream.c - POST /v1/jobs/<kind> for a kind that streams (SPINDLE_STREAM_IN, ABI 1.1): the
 * body flows to the job and the answer back through the request's channels while both are in
 * transit.
 *
 * Design: srv_jobroute_new (common.c) lets the pattern route POST /v1/jobs/<kind> stream with
 * srv_jobs_stream_wanted, which the HTTP layer asks when a head arrives with a body larger than
 * max_body_bytes, or chunked: true when the kind of the path, in the current snapshot, says it
 * streams its input (srv_kind_streams). Such a request comes to srv_jobs_handle at once, which
 * hands it here: the host checks the declared parameters and the kind's parse runs (400 before
 * any of the body is read), the kind's max_inflight and admission decide (a refusal is answered
 * at once: a client that sent Expect: 100-continue never sends its body; an authentication
 * refusal never got this far, see server/http/tenant.c), srv_req_stream_start makes the
 * channels, the job gets them (srv_job_stream_attach) and is submitted; the HTTP layer sends
 * 100 Continue only after this handler returned with the stream started. The job's run is the
 * kind's run, reading with host->read_chunk and writing with host->write_chunk (server/jobs/
 * host.c maps both on the channels). Its done callback gives the admission decision and the
 * kind's in-flight slot back, counts the stream (bytes in and out, time the job waited on the
 * client) and ends the stream with the outcome: the rest of the answer and the last chunk, the
 * kind's error (as a JSON answer when nothing went out yet, else the body is cut), or the
 * cancellation. It feeds the admission estimators and the run metric like a whole-body job
 * (srv_jobroute_observe_stream), with the job's service time: its run without the time it
 * waited on its client, which is mostly the client's pace. A stream's size is not known when it
 * is admitted, so the streams of a kind share one run-time class (JS_STREAM_COST), apart from
 * the whole-body jobs of the kind, which are classed by size. Server-Timing: js_done adds the
 * header, which an answer whose head leaves after the job ended carries (a kind that answers
 * after reading the whole body: sha256); an answer that started earlier carries it as a trailer
 * when the client sent TE: trailers (server/http/stream.c), else not at all.
 *
 * Ownership: a js_req is allocated by the handler, borrowed by the pool from submit to done, and
 * freed in done; its job (struct spindle_job) holds a reference to the kind's snapshot until it
 * is finished, in done, before the stream ends. The channels belong to the request.
 * Threads: everything on the loop thread but js_run (a worker, request context current).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "pool/pool.h"
#include "server/api/internal.h"
#include "server/http/http.h"
#include "server/http/query.h"
#include "server/http/request.h"
#include "server/jobs/jobs.h"
#include "server/metrics/metrics.h"

/* The run-time class of every stream of a kind (admission's top size bucket, out of reach of a
 * whole body's cost). */
#define JS_STREAM_COST UINT64_MAX

struct js_req {
    struct srv_api_job aj; /* first: its pool_job is borrowed by the pool until done */
    struct srv_jobroute *jr;
    const struct srv_kind *kind; /* borrowed from the snapshot the job holds */
    struct srv_adm_decision adm;
    bool adm_refused;
    bool counted; /* counted in the kind's in-flight jobs */
    struct srv_req *req;
    struct spindle_job job;
};

/* The kind of the request's path in the current snapshot (*ks: a reference to release), or
 * NULL. */
static const struct srv_kind *js_kind(const struct srv_req *req, struct srv_kinds **ks)
{
    const char *path = srv_req_path(req);
    *ks = NULL;
    if (strncmp(path, JR_PATH_PREFIX, strlen(JR_PATH_PREFIX)) != 0)
        return NULL;
    path += strlen(JR_PATH_PREFIX);
    *ks = srv_kinds_current();
    return *ks != NULL ? srv_kinds_find(*ks, path, strlen(path)) : NULL;
}

bool srv_jobs_stream_wanted(struct srv_req *req)
{
    struct srv_kinds *ks;
    const struct srv_kind *k = js_kind(req, &ks);
    bool yes = k != NULL && srv_kind_streams(k);
    srv_kinds_unref(ks);
    return yes;
}

static int js_run(struct pool_job *job)
{
    struct js_req *r = job->data;
    return srv_jobroute_run_kind(r->kind, &r->job);
}

static void js_job_fini(struct js_req *r)
{
    if (r->counted)
        atomic_fetch_sub_explicit(&((struct srv_kind *)r->kind)->inflight, 1, memory_order_relaxed);
    r->counted = false;
    srv_job_fini(&r->job);
}

/* What the stream's end says for a job that did not finish by itself. */
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

/* The job's own outcome after its run: 0, or -EIO with the kind's error copied out. */
static int js_job_result(struct js_req *r, int *code_status, char *code, size_t csize, char *msg,
                         size_t msize)
{
    struct srv_job_answer ans;
    srv_job_outcome(&r->job, &ans);
    if (ans.owned)
        free((void *)ans.body); /* already written to the answer channel by the host */
    if (ans.code == NULL)
        return 0;
    *code_status = ans.status;
    snprintf(code, csize, "%s", ans.code);
    snprintf(msg, msize, "%s", ans.message);
    return -EIO;
}

/* Count the stream and feed its times to the estimators and the run metric. */
static void js_count(struct js_req *r, struct srv_req *req, const struct pool_job *job,
                     enum pool_status status)
{
    const struct srv_met_server *met = r->jr->met;
    struct srv_req_stream_stats ss;
    srv_req_stream_stats(req, &ss);
    srv_jobroute_observe_stream(r->jr, r->kind->name, JS_STREAM_COST, job, status, ss.blocked_ns);
    if (met == NULL)
        return;
    srv_met_stream_open(met, -1);
    srv_met_stream_done(met, r->kind->name, ss.bytes_in, ss.bytes_out, ss.blocked_ns);
}

/* The pool's done callback: loop thread, request context current, exactly once per job. */
static void js_done(struct pool_job *job, enum pool_status status)
{
    struct js_req *r = job->data;
    struct srv_req *req = r->req;
    uint64_t queue, run;
    srv_jobroute_times(job, ctx_now_ns(), &queue, &run);
    srv_req_set_timing(req, queue, run);
    if (!srv_req_stream_head_sent(req))
        srv_jobroute_timing_header(req, queue, run); /* the head leaves after the job */
    if (r->jr->adm != NULL)
        srv_adm_release(r->jr->adm, &r->adm, ctx_now_ns());
    js_count(r, req, job, status);
    int code_status = 0, result = 0;
    const char *code = NULL;
    char kcode[SRV_JOB_CODE_MAX + 1], msg[SRV_JOB_ERR_MAX] = "";
    if (status == POOL_DONE) {
        result = js_job_result(r, &code_status, kcode, sizeof(kcode), msg, sizeof(msg));
        code = result < 0 ? kcode : NULL;
    } else {
        result = -ECANCELED;
        js_outcome(job, status, &code_status, &code);
        snprintf(msg, sizeof(msg), "the %s job ended: %s", r->kind->name,
                 status == POOL_FAILED ? strerror(-job->result) : pool_status_name(status));
        if (status == POOL_FAILED)
            LOG_E("job failed", LOG_STR("kind", r->kind->name),
                  LOG_STR("error", strerror(-job->result)));
    }
    js_job_fini(r);
    (void)srv_req_stream_end(req, result, code_status, code, msg);
    free(r);
}

/* The query as the kind's parameters, and the streamed job prepared. Returns 0 or the negative
 * errno of srv_job_prepare_stream (the job's outcome says what to answer). */
static int js_prepare(struct js_req *r, struct srv_req *req)
{
    size_t n = srv_req_query_count(req);
    struct srv_job_param *params = n > 0 ? calloc(n, sizeof(*params)) : NULL;
    if (n > 0 && params == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct srv_query_param *q = srv_req_query_at(req, i);
        params[i] = (struct srv_job_param){q->key, q->value, q->key_len, q->value_len};
    }
    int rc = srv_job_prepare_stream(&r->job, r->kind, params, n, srv_http_cfg(srv_req_http(req)));
    free(params);
    return rc;
}

/* Answer the refusal of a prepared job (prepare's error, the kind's max_inflight, admission or
 * the pool) and free r. */
static void js_refuse(struct js_req *r, struct srv_req *req, int rc, bool prepared, bool kind_full)
{
    struct srv_jobroute *jr = r->jr;
    struct srv_adm_decision d = r->adm;
    char kind[SRV_CFG_KIND_NAME_MAX + 1], code[SRV_JOB_CODE_MAX + 1], msg[SRV_JOB_ERR_MAX];
    int status = 0;
    snprintf(kind, sizeof(kind), "%s", r->kind->name);
    if (!prepared) {
        struct srv_job_answer ans;
        srv_job_outcome(&r->job, &ans);
        status = ans.status;
        snprintf(code, sizeof(code), "%s", ans.code != NULL ? ans.code : "bad_param");
        snprintf(msg, sizeof(msg), "%s", ans.message != NULL ? ans.message : "");
        if (ans.owned)
            free((void *)ans.body);
    }
    if (jr->adm != NULL)
        srv_adm_release(jr->adm, &r->adm, ctx_now_ns()); /* no-op unless admitted */
    bool adm_refused = r->adm_refused;
    js_job_fini(r);
    free(r);
    if (!prepared)
        (void)srv_req_answer_error(req, status, code, msg);
    else if (kind_full)
        srv_jobroute_kind_refused(jr, req, kind);
    else if (adm_refused)
        srv_jobroute_adm_refused(jr, req, &d);
    else
        srv_jobroute_submit_refused(jr, req, rc,
                                    d.tenant_label ? d.tenant_label : SRV_ADM_OTHER_LABEL);
}

/* The kind of a streaming request, or NULL after answering (a reload removed it, or it no
 * longer streams: its body cannot be read whole). */
static const struct srv_kind *js_kind_or_answer(struct srv_req *req, struct srv_kinds **ks)
{
    const struct srv_kind *k = js_kind(req, ks);
    if (k != NULL && srv_kind_streams(k))
        return k;
    srv_kinds_unref(*ks);
    *ks = NULL;
    if (k == NULL) {
        char msg[JR_PATH_MAX + 32];
        snprintf(msg, sizeof(msg), "no route for POST %.*s", JR_PATH_MAX, srv_req_path(req));
        srv_req_route_other(req);
        (void)srv_req_answer_error(req, 404, "not_found", msg);
    } else {
        (void)srv_req_answer_error(req, 413, "body_too_large",
                                   "request body larger than limits.max_body_bytes");
    }
    return NULL;
}

/* Start the stream, give the job its channels and submit it. 0, or a negative errno. */
static int js_submit(struct js_req *r, struct srv_req *req)
{
    struct srv_chan *in, *out;
    int rc = srv_req_stream_start(req, srv_job_stream_type(&r->job), &in, &out);
    if (rc < 0)
        return rc;
    if ((r->kind->desc.stream & SPINDLE_STREAM_OUT) == 0)
        srv_req_stream_answer_after(req); /* answered after the run: the head waits for it */
    srv_job_stream_attach(&r->job, in, out);
    return pool_submit(r->jr->pool, &r->aj.job); /* the request context is current */
}

void srv_jobs_stream_handle(struct srv_req *req)
{
    struct srv_kinds *ks;
    const struct srv_kind *k = js_kind_or_answer(req, &ks);
    if (k == NULL)
        return;
    struct js_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        srv_kinds_unref(ks);
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    r->jr = srv_req_route_arg(req);
    r->kind = k;
    r->req = req;
    int rc = js_prepare(r, req); /* the job holds its own reference to the snapshot */
    srv_kinds_unref(ks);
    if (rc < 0) {
        js_refuse(r, req, rc, false, false);
        return;
    }
    if (k->timeout_ms != 0 && !srv_req_timeout_given(req))
        srv_req_deadline_set_ms(req, k->timeout_ms);
    if (k->max_inflight != 0 &&
        atomic_load_explicit(&k->inflight, memory_order_relaxed) >= k->max_inflight) {
        js_refuse(r, req, -EAGAIN, true, true);
        return;
    }
    r->aj.kind = k->name;
    r->aj.job.run = js_run;
    r->aj.job.done = js_done;
    r->aj.job.data = r;
    rc = srv_jobroute_admit_class(r->jr, req, 1, k->name, JS_STREAM_COST, &r->adm, &r->adm_refused);
    r->aj.job.weight = rc == 0 ? r->adm.weight : 1;
    if (rc == 0)
        rc = js_submit(r, req);
    if (rc < 0) {
        js_refuse(r, req, rc, true, false);
        return;
    }
    atomic_fetch_add_explicit(&((struct srv_kind *)k)->inflight, 1, memory_order_relaxed);
    r->counted = true;
    if (r->jr->met != NULL)
        srv_met_stream_open(r->jr->met, 1);
}
