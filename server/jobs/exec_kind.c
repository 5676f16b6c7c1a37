/* exec_kind.c - `[kind.NAME] exec = ...`: a program described as a job kind of the ABI
 * (include/spindle/module.h), run by the exec engine (server/jobs/exec/exec.h).
 *
 * Design: srv_exec_kind_new compiles the section into an engine program once per registry
 * snapshot and keeps it, with the parameter declarations it needs, in the kind's data; the
 * snapshot's fini frees it when the last job holding that snapshot is done, so a reload that
 * changes or removes the kind never pulls the program from under a running job.
 *
 *   parse  (loop)    the declared parameters (already checked by the host) rendered as the
 *                    strings the program sees: INT in decimal, ENUM its choice, BOOL true/false,
 *                    STRING its bytes (refused with a NUL byte); the body borrowed
 *   run    (worker)  srv_exec_run with the request's context current; the stdout bytes are
 *                    handed to the host (SPINDLE_BYTES_MALLOC, no copy) with the kind's
 *                    content_type; a failure is set as the error its outcome says (500
 *                    job_failed, 502 output_too_large, 500 spawn_failed); cancelled: -ECANCELED
 *   free   (any)     the state
 *
 * `stream = true` makes the kind SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT: a body over
 * max_body_bytes, or chunked, comes through the request's channels instead (the job is
 * streamed: host->body gives NULL) and run hands the engine the channels' non-blocking ends
 * (srv_chan_try_read, srv_chan_try_write, the run's eventfd as the channels' wake descriptor),
 * so stdin is fed and stdout sent as the program goes; a full answer channel (a client that
 * reads slowly) is reported to the body channel (srv_chan_stalled) so that it does not grow for
 * that client. A failure after output went out (exit
 * status, output_too_large) is set as the job's error all the same: the stream's end cuts the
 * body and names the error in a Spindle-Error trailer (server/http/stream.c). A body that fits
 * is run as before, whole.
 *
 * The host table is the same for every kind (srv_job_host()); it is remembered from the first
 * srv_exec_kind_new so that parse and run, which get only the job, can reach kind_data.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jobs/exec/exec.h"
#include "server/jobs/jobs.h"
#include "server/stream/stream.h"

#define EK_VALUE_MAX 24 /* an INT in decimal, "true"/"false" */

struct ek_param {
    char name[32];
    int type;
    const char **choices; /* ENUM: nchoices copies */
    unsigned nchoices;
};

struct exec_kind {
    struct srv_exec_prog *prog;
    char name[SRV_CFG_KIND_NAME_MAX + 1];
    char summary[SRV_CFG_VALUE_MAX + 8];
    unsigned nparams;
    struct ek_param params[SPINDLE_PARAMS_MAX];
};

struct ek_state {
    const void *body;
    size_t body_len;
    const char *values[SPINDLE_PARAMS_MAX]; /* NULL: not given (a STRING without default) */
    char ints[SPINDLE_PARAMS_MAX][EK_VALUE_MAX];
    char *strs[SPINDLE_PARAMS_MAX]; /* STRING copies */
};

static _Atomic(const struct spindle_host *) ek_host;

static const struct spindle_host *host(void)
{
    return atomic_load_explicit(&ek_host, memory_order_acquire);
}

/* ---- one job --------------------------------------------------------------------------------- */

static void ek_free(void *state)
{
    struct ek_state *st = state;
    if (st == NULL)
        return;
    for (unsigned i = 0; i < SPINDLE_PARAMS_MAX; i++)
        free(st->strs[i]);
    free(st);
}

/* The string a STRING parameter gives the program, or -EINVAL (error set) for a NUL byte. */
static int ek_param_str(struct spindle_job *job, struct ek_state *st, const struct ek_param *p,
                        unsigned i)
{
    const struct spindle_host *h = host();
    size_t len = 0;
    const char *s = h->param_str(job, i, &len);
    if (s == NULL)
        return 0;
    if (memchr(s, '\0', len) != NULL) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s must not contain a NUL byte", p->name);
        h->set_error(job, 400, "bad_param", msg);
        return -EINVAL;
    }
    if ((st->strs[i] = strndup(s, len)) == NULL)
        return -ENOMEM;
    st->values[i] = st->strs[i];
    return 0;
}

static int ek_parse(struct spindle_job *job, void **state)
{
    const struct spindle_host *h = host();
    const struct exec_kind *k = h->kind_data(job);
    struct ek_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < k->nparams; i++) {
        const struct ek_param *p = &k->params[i];
        int64_t v = h->param(job, i);
        int rc = 0;
        switch (p->type) {
        case SPINDLE_PARAM_STRING:
            rc = ek_param_str(job, st, p, i);
            break;
        case SPINDLE_PARAM_ENUM:
            st->values[i] = v >= 0 && (uint64_t)v < p->nchoices ? p->choices[v] : "";
            break;
        case SPINDLE_PARAM_BOOL:
            st->values[i] = v ? "true" : "false";
            break;
        default:
            snprintf(st->ints[i], EK_VALUE_MAX, "%" PRId64, v);
            st->values[i] = st->ints[i];
        }
        if (rc < 0) {
            ek_free(st);
            return rc;
        }
    }
    st->body = h->body(job, &st->body_len);
    *state = st;
    return 0;
}

/* ---- a streamed job: the engine's ends on the request's channels ------------------------------
 */

static ssize_t ek_stream_read(void *arg, void *buf, size_t size)
{
    struct spindle_job *job = arg;
    return srv_chan_try_read(job->in, buf, size);
}

static ssize_t ek_stream_write(void *arg, const void *buf, size_t len)
{
    struct spindle_job *job = arg;
    ssize_t n = srv_chan_try_write(job->out, buf, len);
    if (n > 0)
        job->wrote = true; /* an error from now on cuts the body */
    else if (n == -EAGAIN && job->in != NULL)
        srv_chan_stalled(job->in); /* a slow reader, not a fast sender, fills the body channel */
    return n;
}

static void ek_stream_wake(void *arg, int fd)
{
    struct spindle_job *job = arg;
    srv_chan_wake_fd(job->in, fd);
    srv_chan_wake_fd(job->out, fd);
}

static int ek_run(struct spindle_job *job, void *state)
{
    const struct spindle_host *h = host();
    const struct exec_kind *k = h->kind_data(job);
    struct ek_state *st = state;
    struct srv_exec_input in = {
        .kind = k->name, .values = st->values, .body = st->body, .body_len = st->body_len};
    struct srv_exec_stream io = {ek_stream_read, ek_stream_write, ek_stream_wake, job};
    if (job->streamed && job->in != NULL && job->out != NULL)
        in.stream = &io;
    struct srv_exec_result res;
    int rc = srv_exec_run(k->prog, &in, &res);
    if (rc == -ETIMEDOUT) {
        h->set_error(job, 504, "deadline_exceeded", "the deadline passed while the program ran");
        return rc;
    }
    if (rc < 0)
        return rc;
    if (res.outcome == SRV_EXEC_OK && in.stream != NULL) {
        rc = 0; /* every byte went to the client already */
    } else if (res.outcome == SRV_EXEC_OK) {
        char *out = res.out;
        res.out = NULL; /* the host takes it */
        rc = h->set_answer(job, out != NULL ? out : "", res.out_len, NULL,
                           out != NULL ? SPINDLE_BYTES_MALLOC : SPINDLE_BYTES_STATIC);
    } else {
        rc = h->set_error(job, srv_exec_outcome_status(res.outcome),
                          srv_exec_outcome_code(res.outcome), res.message);
    }
    srv_exec_result_fini(&res);
    return rc == -EFBIG ? 0 : rc; /* -EFBIG: the host answers output_too_large itself */
}

/* A rough size of the work, for admission's run-time estimate: programs mostly scale with their
 * input. */
static uint64_t ek_cost(const void *state)
{
    const struct ek_state *st = state;
    return 1 + st->body_len / 1024;
}

/* ---- the kind -------------------------------------------------------------------------------- */

static void ek_fini(void *data)
{
    struct exec_kind *k = data;
    if (k == NULL)
        return;
    for (unsigned i = 0; i < k->nparams; i++) {
        for (unsigned j = 0; j < k->params[i].nchoices; j++)
            free((char *)k->params[i].choices[j]);
        free(k->params[i].choices);
    }
    srv_exec_prog_free(k->prog);
    free(k);
}

/* Copy the declarations parse needs (the description's may not outlive this call). */
static int ek_params_copy(struct exec_kind *k, const struct spindle_kind *desc, const char **names)
{
    const char *base = (const char *)desc->params;
    size_t psize = desc->param_size ? desc->param_size : sizeof(struct spindle_param);
    k->nparams = desc->nparams <= SPINDLE_PARAMS_MAX ? desc->nparams : SPINDLE_PARAMS_MAX;
    for (unsigned i = 0; i < k->nparams; i++) {
        const struct spindle_param *sp = (const struct spindle_param *)(base + i * psize);
        struct ek_param *p = &k->params[i];
        snprintf(p->name, sizeof(p->name), "%s", sp->name);
        names[i] = p->name;
        p->type = sp->type;
        if (sp->type != SPINDLE_PARAM_ENUM || sp->choices == NULL)
            continue;
        unsigned n = 0;
        while (n < SPINDLE_CHOICES_MAX && sp->choices[n] != NULL)
            n++;
        if ((p->choices = calloc(n ? n : 1, sizeof(char *))) == NULL)
            return -ENOMEM;
        for (; p->nchoices < n; p->nchoices++)
            if ((p->choices[p->nchoices] = strdup(sp->choices[p->nchoices])) == NULL)
                return -ENOMEM;
    }
    return 0;
}

int srv_exec_kind_new(const struct srv_cfg_kind *ck, const struct spindle_host *h,
                      struct spindle_kind *out, char *err, size_t size)
{
    atomic_store_explicit(&ek_host, h, memory_order_release);
    struct exec_kind *k = calloc(1, sizeof(*k));
    const char *names[SPINDLE_PARAMS_MAX];
    if (k == NULL || ek_params_copy(k, out, names) < 0) {
        ek_fini(k);
        snprintf(err, size, "out of memory");
        return -ENOMEM;
    }
    snprintf(k->name, sizeof(k->name), "%s", ck->name);
    snprintf(k->summary, sizeof(k->summary), "runs %s", ck->exec);
    struct srv_exec_conf conf = {
        .exec = ck->exec,
        .param_names = names,
        .nparams = k->nparams,
        .user = ck->user,
        .cwd = ck->cwd,
        .max_output_bytes = ck->max_output_bytes,
        .cancel_grace_ms = ck->cancel_grace_ms,
        .rlimit_cpu_s = ck->rlimit_cpu_s,
        .rlimit_as = ck->rlimit_as,
        .rlimit_nofile = ck->rlimit_nofile,
    };
    const char *key = "exec";
    char msg[SRV_JOB_ERR_MAX + 64];
    if ((k->prog = srv_exec_prog_new(&conf, &key, msg, sizeof(msg))) == NULL) {
        /* the registry names the exec key; another key says which */
        if (strcmp(key, "exec") == 0)
            snprintf(err, size, "%s", msg);
        else
            snprintf(err, size, "(%s = %s) %s", key, strcmp(key, "user") == 0 ? ck->user : ck->cwd,
                     msg);
        ek_fini(k);
        return -EINVAL;
    }
    out->name = k->name;
    out->summary = k->summary;
    out->uses_body = 1;
    out->stream = ck->stream ? SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT : 0;
    out->parse = ek_parse;
    out->run = ek_run;
    out->free = ek_free;
    out->cost = ek_cost;
    out->data = k;
    out->fini = ek_fini;
    return 0;
}
