/* host.c - the host side of the kind ABI: the table every kind gets (struct spindle_host) and
 * one job's life (srv_job_prepare, srv_job_run, srv_job_outcome, srv_job_fini).
 *
 * Design: struct spindle_job is the caller's memory (embedded in a request or a batch item), so
 * a job costs no allocation of its own; a kind that keeps nothing (noop) allocates nothing at
 * all. The host checks the declared parameters before the kind's parse, with the messages the
 * built-in kinds always gave ("unknown parameter 'x'", "duplicate parameter 'n'", "missing
 * required parameter 'n'", "n must be an integer between 0 and 100"), so a module's 400s read
 * like the server's own. An INT parameter may name a server limit that lowers its max: the limit
 * is read from the configuration given to prepare, so a reload changes it for the next job.
 *
 * The answer's bytes are never copied here: set_answer records the pointer and who owns it
 * (SPINDLE_BYTES_*); srv_job_outcome hands static and borrowed bytes on as they are and malloc'd
 * ones with their ownership. A job refers to its kind's snapshot from prepare to fini, so a
 * reload never frees a kind under a job.
 *
 * Streaming (ABI 1.1): a streamed job (srv_job_prepare_stream) reads its body from the request's
 * body channel and, for a SPINDLE_STREAM_OUT kind, writes its answer to the answer channel
 * (server/stream/stream.h; both calls block and return -ECANCELED once the request's cancel
 * cancelled the channels); an answer set with set_answer (or collected by write_chunk of a kind
 * that only streams its input) is written to the answer channel when run returns. A write that had
 * to wait for the client tells the body channel (srv_chan_stalled), so that a client that reads
 * slowly does not make it grow. A job read
 * whole serves read_chunk from its body and collects write_chunk into a malloc'd answer, so one
 * code path of a kind serves both.
 *
 * Threads: a job is touched by one thread at a time (the pool orders the hand-offs between the
 * loop and a worker); the host functions touch only the job they are given, the current context
 * and the logger.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "server/jobs/internal.h"
#include "server/jobs/jobs.h"
#include "server/stream/stream.h"

#define HOST_KEY_ECHO   32  /* bytes of an offending key quoted in a message */
#define HOST_STRING_MAX 256 /* bytes of a STRING parameter */
#define HOST_FIELDS_MAX 32  /* fields of one log line of a kind */

/* ---- messages -------------------------------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static int host_bad(struct spindle_job *job, const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(job->err_msg, sizeof(job->err_msg), fmt, ap);
    va_end(ap);
    job->err_status = 400;
    memcpy(job->err_code, "bad_param", sizeof("bad_param"));
    return -EINVAL;
}

/* A key made printable for a message: at most HOST_KEY_ECHO bytes, others shown as '?', and
 * "..." when cut. `out` has room for HOST_KEY_ECHO + 4 bytes. */
static const char *host_echo(const char *key, size_t len, char *out)
{
    size_t n = len < HOST_KEY_ECHO ? len : HOST_KEY_ECHO;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        out[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    out[n] = '\0';
    if (n < len)
        memcpy(out + n, "...", 4);
    return out;
}

/* ---- parameters ------------------------------------------------------------------------------ */

/* Decimal digits only (no sign, no blank), at least one, overflow detected. */
static bool host_digits(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - (unsigned)'0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int64_t host_max(const struct spindle_job *job, const struct srv_kind_param *p)
{
    if (p->limit < 0 || job->cfg == NULL)
        return p->max;
    uint64_t lim = srv_job_limit_value(job->cfg, p->limit);
    return lim < (uint64_t)p->max ? (int64_t)lim : p->max;
}

static int host_int(struct spindle_job *job, const char *name, const char *v, size_t len,
                    int64_t min, int64_t max, int64_t *out)
{
    uint64_t x;
    if (!host_digits(v, len, &x) || x < (uint64_t)min || x > (uint64_t)max)
        return host_bad(job, "%s must be an integer between %lld and %lld", name, (long long)min,
                        (long long)max);
    *out = (int64_t)x;
    return 0;
}

/* "codec must be zstd or gzip", "mode must be a, b or c". */
static int host_enum_bad(struct spindle_job *job, const struct srv_kind_param *p)
{
    char list[SRV_JOB_ERR_MAX] = "";
    size_t used = 0;
    for (unsigned i = 0; i < p->nchoices && used < sizeof(list); i++) {
        const char *sep = i == 0 ? "" : i + 1 == p->nchoices ? " or " : ", ";
        int n = snprintf(list + used, sizeof(list) - used, "%s%s", sep, p->choices[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    return host_bad(job, "%s must be %s", p->name, list);
}

static int host_value(struct spindle_job *job, unsigned i, const struct srv_job_param *q)
{
    const struct srv_kind_param *p = &job->kind->params[i];
    switch (p->type) {
    case SPINDLE_PARAM_INT:
        return host_int(job, p->name, q->value, q->value_len, p->min, host_max(job, p),
                        &job->value[i]);
    case SPINDLE_PARAM_ENUM:
        for (unsigned c = 0; c < p->nchoices; c++) {
            if (strlen(p->choices[c]) == q->value_len &&
                memcmp(p->choices[c], q->value, q->value_len) == 0) {
                job->value[i] = c;
                return 0;
            }
        }
        return host_enum_bad(job, p);
    case SPINDLE_PARAM_BOOL:
        if ((q->value_len == 4 && memcmp(q->value, "true", 4) == 0) ||
            (q->value_len == 1 && q->value[0] == '1'))
            job->value[i] = 1;
        else if ((q->value_len == 5 && memcmp(q->value, "false", 5) == 0) ||
                 (q->value_len == 1 && q->value[0] == '0'))
            job->value[i] = 0;
        else
            return host_bad(job, "%s must be true or false", p->name);
        return 0;
    default: /* SPINDLE_PARAM_STRING */
        if (q->value_len > HOST_STRING_MAX)
            return host_bad(job, "%s is longer than %d bytes", p->name, HOST_STRING_MAX);
        job->str[i] = q->value;
        job->str_len[i] = (uint16_t)q->value_len;
        return 0;
    }
}

/* Match the query to the declarations (unknown and repeated keys first, as given), then each
 * declaration in order: missing, or its value checked. */
static int host_params(struct spindle_job *job, const struct srv_job_param *params, size_t n)
{
    const struct srv_kind *k = job->kind;
    const struct srv_job_param *found[SPINDLE_PARAMS_MAX] = {NULL};
    char echo[HOST_KEY_ECHO + 4];
    for (size_t i = 0; i < n; i++) {
        unsigned j = 0;
        while (j < k->nparams &&
               !(strlen(k->params[j].name) == params[i].key_len &&
                 memcmp(k->params[j].name, params[i].key, params[i].key_len) == 0))
            j++;
        if (j == k->nparams)
            return host_bad(job, "unknown parameter '%s'",
                            host_echo(params[i].key, params[i].key_len, echo));
        if (found[j] != NULL)
            return host_bad(job, "duplicate parameter '%s'", k->params[j].name);
        found[j] = &params[i];
    }
    for (unsigned j = 0; j < k->nparams; j++) {
        if (found[j] == NULL) {
            if (k->params[j].required)
                return host_bad(job, "missing required parameter '%s'", k->params[j].name);
            job->value[j] = k->params[j].def;
            continue;
        }
        job->given |= 1u << j;
        int rc = host_value(job, j, found[j]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- the host table -------------------------------------------------------------------------- */

static int h_cancelled(const struct spindle_job *job)
{
    (void)job;
    const struct ctx *c = ctx_current();
    return c != NULL && ctx_cancelled(c);
}

static int64_t h_time_left_ms(const struct spindle_job *job)
{
    (void)job;
    const struct ctx *c = ctx_current();
    uint64_t dl = c != NULL ? ctx_deadline(c) : 0;
    if (dl == 0)
        return -1;
    uint64_t now = ctx_now_ns();
    return dl > now ? (int64_t)((dl - now) / 1000000u) : 0;
}

static enum log_level host_level(int level)
{
    switch (level) {
    case SPINDLE_LOG_DEBUG:
        return LOG_LEVEL_DEBUG;
    case SPINDLE_LOG_INFO:
        return LOG_LEVEL_INFO;
    case SPINDLE_LOG_WARN:
        return LOG_LEVEL_WARN;
    default:
        return LOG_LEVEL_ERROR;
    }
}

static int h_log_enabled(int level)
{
    return log_enabled(host_level(level));
}

static void h_log(const struct spindle_job *job, int level, const char *msg,
                  const struct spindle_field *fields, size_t n)
{
    enum log_level lv = host_level(level);
    if (!log_enabled(lv))
        return;
    struct log_field f[HOST_FIELDS_MAX + 1];
    size_t m = 0;
    f[m++] = LOG_STR("kind", job != NULL && job->kind != NULL ? job->kind->name : NULL);
    for (size_t i = 0; i < n && m < HOST_FIELDS_MAX + 1; i++) {
        const struct spindle_field *s = &fields[i];
        switch (s->type) {
        case SPINDLE_F_STRN:
            f[m++] = LOG_STRN(s->key, s->v.s, s->len);
            break;
        case SPINDLE_F_INT:
            f[m++] = LOG_INT(s->key, s->v.i);
            break;
        case SPINDLE_F_UINT:
            f[m++] = LOG_UINT(s->key, s->v.u);
            break;
        case SPINDLE_F_DOUBLE:
            f[m++] = LOG_DBL(s->key, s->v.d);
            break;
        case SPINDLE_F_BOOL:
            f[m++] = LOG_BOOL(s->key, s->v.b != 0);
            break;
        default:
            f[m++] = LOG_STR(s->key, s->v.s);
            break;
        }
    }
    log_write(lv, msg != NULL ? msg : "", f, m);
}

static int64_t h_param(const struct spindle_job *job, unsigned index)
{
    return index < job->kind->nparams ? job->value[index] : 0;
}

static int h_param_given(const struct spindle_job *job, unsigned index)
{
    return index < job->kind->nparams && (job->given & (1u << index)) != 0;
}

static const char *h_param_str(const struct spindle_job *job, unsigned index, size_t *len)
{
    *len = 0;
    if (index >= job->kind->nparams || job->str[index] == NULL)
        return NULL;
    *len = job->str_len[index];
    return job->str[index];
}

static int h_param_int(struct spindle_job *job, unsigned index, int64_t min, int64_t max,
                       int64_t *out)
{
    if (index >= job->kind->nparams)
        return -EINVAL;
    const char *name = job->kind->params[index].name;
    if (job->kind->params[index].type == SPINDLE_PARAM_STRING)
        return host_int(job, name, job->str[index] != NULL ? job->str[index] : "",
                        job->str_len[index], min, max, out);
    int64_t v = job->value[index];
    if (v < min || v > max)
        return host_bad(job, "%s must be an integer between %lld and %lld", name, (long long)min,
                        (long long)max);
    *out = v;
    return 0;
}

static const void *h_body(const struct spindle_job *job, size_t *len)
{
    *len = job->body != NULL ? job->body_len : 0;
    return job->body;
}

static void host_answer_drop(struct spindle_job *job)
{
    if (job->ans_flags == SPINDLE_BYTES_MALLOC)
        free((void *)job->ans);
    job->ans = NULL;
    job->ans_len = 0;
    job->ans_flags = SPINDLE_BYTES_STATIC;
}

static int host_error(struct spindle_job *job, int status, const char *code, const char *message)
{
    host_answer_drop(job);
    job->err_status = status;
    snprintf(job->err_code, sizeof(job->err_code), "%s", code);
    snprintf(job->err_msg, sizeof(job->err_msg), "%s", message != NULL ? message : "");
    return 0;
}

static int h_set_answer(struct spindle_job *job, const void *bytes, size_t len,
                        const char *content_type, unsigned flags)
{
    if (flags > SPINDLE_BYTES_MALLOC || (bytes == NULL && len > 0)) {
        if (flags == SPINDLE_BYTES_MALLOC)
            free((void *)bytes);
        return -EINVAL;
    }
    host_answer_drop(job);
    if (job->kind->max_output_bytes != 0 && len > job->kind->max_output_bytes) {
        if (flags == SPINDLE_BYTES_MALLOC)
            free((void *)bytes);
        char msg[SRV_JOB_ERR_MAX];
        snprintf(msg, sizeof(msg),
                 "the %s job's answer of %zu bytes is over max_output_bytes (%zu)", job->kind->name,
                 len, job->kind->max_output_bytes);
        host_error(job, 500, "output_too_large", msg);
        return -EFBIG;
    }
    job->err_status = 0;
    job->ans = bytes;
    job->ans_len = len;
    job->ans_flags = flags;
    job->ans_type = content_type;
    return 0;
}

static bool host_code_valid(const char *code)
{
    size_t n = code != NULL ? strlen(code) : 0;
    if (n == 0 || n > SRV_JOB_CODE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = code[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static int h_set_error(struct spindle_job *job, int status, const char *code, const char *message)
{
    if (status < 400 || status > 599 || !host_code_valid(code))
        return -EINVAL;
    return host_error(job, status, code, message);
}

static int h_limit(const struct spindle_job *job, const char *name, uint64_t *out)
{
    int i = name != NULL ? srv_job_limit_index(name) : -1;
    if (i < 0 || job->cfg == NULL)
        return -ENOENT;
    *out = srv_job_limit_value(job->cfg, i);
    return 0;
}

static void *h_kind_data(const struct spindle_job *job)
{
    return job->kind->desc.data;
}

/* ---- streaming (1.1) ------------------------------------------------------------------------- */

static int64_t h_read_chunk(struct spindle_job *job, void *buf, size_t size)
{
    if (size == 0 || buf == NULL || !job->kind->desc.uses_body)
        return -EINVAL;
    if (job->streamed)
        return job->in != NULL ? (int64_t)srv_chan_read(job->in, buf, size) : -EINVAL;
    if (h_cancelled(job))
        return -ECANCELED;
    size_t left = job->body != NULL ? job->body_len - job->body_off : 0;
    size_t n = left < size ? left : size;
    if (n > 0)
        memcpy(buf, job->body + job->body_off, n);
    job->body_off += n;
    return (int64_t)n;
}

/* The answer outgrew max_output_bytes: the job's error. */
static int host_too_large(struct spindle_job *job, size_t len)
{
    char msg[SRV_JOB_ERR_MAX];
    snprintf(msg, sizeof(msg), "the %s job's answer of %zu bytes is over max_output_bytes (%zu)",
             job->kind->name, len, job->kind->max_output_bytes);
    host_error(job, 500, "output_too_large", msg);
    return -EFBIG;
}

/* Collect len bytes into the job's whole answer (wbuf), doubling its room. */
static int host_collect(struct spindle_job *job, const void *buf, size_t len)
{
    if (len > job->wcap - job->wlen) {
        size_t cap = job->wcap != 0 ? job->wcap : 4096;
        while (cap - job->wlen < len)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        char *p = realloc(job->wbuf, cap);
        if (p == NULL)
            return -ENOMEM;
        job->wbuf = p;
        job->wcap = cap;
    }
    memcpy(job->wbuf + job->wlen, buf, len);
    job->wlen += len;
    return 0;
}

static int h_write_chunk(struct spindle_job *job, const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    if (buf == NULL)
        return -EINVAL;
    size_t max = job->kind->max_output_bytes;
    if (max != 0 && len > max - (job->wlen < max ? job->wlen : max))
        return host_too_large(job, job->wlen + len);
    bool to_client = job->streamed && (job->kind->desc.stream & SPINDLE_STREAM_OUT) != 0;
    if (!to_client) {
        if (h_cancelled(job))
            return -ECANCELED;
        return host_collect(job, buf, len);
    }
    if (job->out == NULL)
        return -EINVAL;
    uint64_t waited = srv_chan_blocked_ns(job->out);
    int rc = srv_chan_write(job->out, buf, len);
    if (job->in != NULL && srv_chan_blocked_ns(job->out) != waited)
        srv_chan_stalled(job->in); /* a slow reader filled the body channel, not a fast sender */
    job->wrote = true;
    job->wlen += len; /* counted, not kept */
    return rc == -EPIPE ? -ECANCELED : rc;
}

/* After run of a streamed job: the answer set with set_answer, or collected, to the client. */
static int host_stream_answer(struct spindle_job *job)
{
    if (job->err_status != 0)
        return 0; /* srv_job_outcome gives it; answered or cut by the request */
    if (job->ans == NULL && job->wbuf != NULL && !job->wrote)
        return srv_chan_write(job->out, job->wbuf, job->wlen);
    if (job->ans_len == 0)
        return 0;
    job->wrote = true;
    return srv_chan_write(job->out, job->ans, job->ans_len);
}

static const struct spindle_host host_table = {
    .abi_major = SPINDLE_ABI_MAJOR,
    .abi_minor = SPINDLE_ABI_MINOR,
    .size = sizeof(struct spindle_host),
    .cancelled = h_cancelled,
    .time_left_ms = h_time_left_ms,
    .log_enabled = h_log_enabled,
    .log = h_log,
    .param = h_param,
    .param_given = h_param_given,
    .param_str = h_param_str,
    .param_int = h_param_int,
    .body = h_body,
    .set_answer = h_set_answer,
    .set_error = h_set_error,
    .limit = h_limit,
    .kind_data = h_kind_data,
    .read_chunk = h_read_chunk,
    .write_chunk = h_write_chunk,
};

const struct spindle_host *srv_job_host(void)
{
    return &host_table;
}

/* ---- one job --------------------------------------------------------------------------------- */

static int host_prepare(struct spindle_job *job, const struct srv_kind *k,
                        const struct srv_job_param *params, size_t nparams, const void *body,
                        size_t body_len, const struct srv_cfg *cfg, bool streamed)
{
    memset(job, 0, offsetof(struct spindle_job, err_code) + 1);
    job->err_msg[0] = '\0';
    job->kind = k;
    job->ans_flags = SPINDLE_BYTES_STATIC;
    srv_kinds_ref(k->owner);
    job->cfg = cfg;
    job->streamed = streamed;
    if (k->desc.uses_body && !streamed) {
        job->body = body != NULL ? body : "";
        job->body_len = body != NULL ? body_len : 0;
    }
    int rc = host_params(job, params, nparams);
    if (rc == 0 && k->desc.parse != NULL) {
        rc = k->desc.parse(job, &job->state);
        if (rc == -EINVAL && job->err_status == 0)
            host_bad(job, "invalid parameters for %s", k->name);
        else if (rc < 0 && rc != -EINVAL)
            rc = -ENOMEM;
    }
    if (rc == -ENOMEM && job->err_status == 0)
        host_error(job, 503, "out_of_memory", "out of memory");
    memset(job->str, 0, sizeof(job->str)); /* borrowed for prepare only */
    job->cfg = NULL;
    if (rc == 0 && job->err_status != 0)
        rc = -EINVAL; /* set_error in parse refuses the job */
    return rc;
}

int srv_job_prepare(struct spindle_job *job, const struct srv_kind *k,
                    const struct srv_job_param *params, size_t nparams, const void *body,
                    size_t body_len, const struct srv_cfg *cfg)
{
    return host_prepare(job, k, params, nparams, body, body_len, cfg, false);
}

int srv_job_prepare_stream(struct spindle_job *job, const struct srv_kind *k,
                           const struct srv_job_param *params, size_t nparams,
                           const struct srv_cfg *cfg)
{
    return host_prepare(job, k, params, nparams, NULL, 0, cfg, true);
}

bool srv_kind_streams(const struct srv_kind *k)
{
    return k->desc.uses_body && (k->desc.stream & SPINDLE_STREAM_IN) != 0;
}

const char *srv_job_stream_type(const struct spindle_job *job)
{
    return job->ans_type != NULL             ? job->ans_type
           : job->kind->content_type != NULL ? job->kind->content_type
                                             : "application/octet-stream";
}

void srv_job_stream_attach(struct spindle_job *job, struct srv_chan *in, struct srv_chan *out)
{
    job->in = in;
    job->out = out;
}

uint64_t srv_job_cost(const struct spindle_job *job)
{
    return job->kind->desc.cost != NULL ? job->kind->desc.cost(job->state) : 0;
}

int srv_job_run(struct spindle_job *job)
{
    int rc = job->kind->desc.run(job, job->state);
    if (rc < 0 && rc != -ECANCELED && job->err_status != 0)
        rc = 0; /* the kind said what failed: its error is the answer */
    if (rc == 0 && job->streamed)
        rc = host_stream_answer(job);
    else if (rc == 0 && job->err_status == 0 && job->ans == NULL && job->wbuf != NULL) {
        job->ans = job->wbuf; /* what write_chunk collected is the answer */
        job->ans_len = job->wlen;
        job->ans_flags = SPINDLE_BYTES_MALLOC;
        job->wbuf = NULL;
    }
    job->ran = rc == 0;
    return rc;
}

void srv_job_outcome(struct spindle_job *job, struct srv_job_answer *out)
{
    const struct srv_kind *k = job->kind;
    if (job->ran && !job->streamed && job->err_status == 0 && k->desc.answer != NULL)
        k->desc.answer(job, job->state);
    job->ran = false; /* answer runs once */
    memset(out, 0, sizeof(*out));
    if (job->err_status != 0) {
        out->status = job->err_status;
        out->content_type = "application/json";
        out->code = job->err_code;
        out->message = job->err_msg;
        return;
    }
    out->status = 200;
    out->content_type = job->ans_type != NULL     ? job->ans_type
                        : k->content_type != NULL ? k->content_type
                                                  : "application/octet-stream";
    out->body = job->ans;
    out->len = job->ans_len;
    out->is_static = job->ans_flags == SPINDLE_BYTES_STATIC;
    if (job->ans_flags == SPINDLE_BYTES_MALLOC) {
        out->owned = true;
        job->ans = NULL; /* the caller's now */
        job->ans_flags = SPINDLE_BYTES_STATIC;
    }
}

void srv_job_fini(struct spindle_job *job)
{
    const struct srv_kind *k = job->kind;
    if (k == NULL)
        return;
    if (job->state != NULL && k->desc.free != NULL)
        k->desc.free(job->state);
    job->state = NULL;
    host_answer_drop(job);
    free(job->wbuf);
    job->wbuf = NULL;
    job->kind = NULL;
    srv_kinds_unref(k->owner);
}
