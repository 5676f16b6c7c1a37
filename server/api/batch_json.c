/* batch_json.c - the JSON side of POST /v1/batch: parsing the array of sub-jobs, deciding what a
 * finished sub-job means for its mode, and writing the answer.
 *
 * Design: parsing is done with jansson (duplicate keys refused) into a tree that the spec keeps:
 * the kinds that read a body (sha256, compress) keep a pointer to the item's "body" string, which
 * lives in that tree. Each item's "params" object is turned into the same decoded key/value array
 * a query string gives (integers written in decimal), and the kind's own parse validates it
 * against the configured limits, so a sub-job accepts exactly what POST /v1/jobs/<kind> accepts.
 * The whole batch is validated before anything runs: one bad item refuses the request.
 *
 * The answer is built as a jansson tree and dumped compact. A kind's JSON answer is embedded as
 * JSON; other answers (compress) are base64 (libcrypto's EVP_EncodeBlock).
 *
 * Nothing here keeps state between calls; everything runs on the caller's thread.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/batch.h"

#define BJ_INT_MAX 24 /* a decimal json_int_t and its NUL */

static const char *const bj_modes[] = {"all", "all_settled", "any", "race"};

const char *srv_batch_mode_name(enum srv_batch_mode m)
{
    return (unsigned)m < sizeof(bj_modes) / sizeof(bj_modes[0]) ? bj_modes[m] : NULL;
}

int srv_batch_mode_parse(const char *s, size_t len, enum srv_batch_mode *out)
{
    for (size_t i = 0; i < sizeof(bj_modes) / sizeof(bj_modes[0]); i++) {
        if (strlen(bj_modes[i]) == len && memcmp(bj_modes[i], s, len) == 0) {
            *out = (enum srv_batch_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *srv_batch_status_name(enum srv_batch_status s)
{
    static const char *const names[] = {"pending", "ok", "failed", "cancelled"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

/* ---- parsing --------------------------------------------------------------------------------- */

/* The error of a parse: *code and a printf message into err (SRV_BATCH_ERR_MAX bytes); returns
 * -EINVAL. */
__attribute__((format(printf, 4, 5))) static int bj_fail(const char **code, const char *c,
                                                         char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, SRV_BATCH_ERR_MAX, fmt, ap);
    va_end(ap);
    *code = c;
    return -EINVAL;
}

/* The kind's parameters from the item's "params" object (NULL = none): params[] point into the
 * tree, integers are written into nums[] (np entries of BJ_INT_MAX bytes). */
static int bj_params(const char *who, const json_t *obj, struct srv_job_param *params,
                     char (*nums)[BJ_INT_MAX], size_t *np, const char **code, char *err)
{
    *np = 0;
    if (obj == NULL)
        return 0;
    if (!json_is_object(obj))
        return bj_fail(code, "bad_batch", err, "%s: params must be an object", who);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t n = *np;
        if (json_is_string(v)) {
            params[n].value = json_string_value(v);
            params[n].value_len = json_string_length(v);
        } else if (json_is_integer(v)) {
            int len = snprintf(nums[n], BJ_INT_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            params[n].value = nums[n];
            params[n].value_len = (size_t)len;
        } else {
            return bj_fail(code, "bad_batch", err,
                           "%s: params.%.64s must be a string or an integer", who, key);
        }
        params[n].key = key;
        params[n].key_len = strlen(key);
        *np = n + 1;
    }
    return 0;
}

/* True when `key` is one of the NULL-terminated `extra` (NULL = none). */
static bool bj_extra(const char *const *extra, const char *key)
{
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        if (strcmp(extra[i], key) == 0)
            return true;
    return false;
}

/* Check the members of item i and find its kind, body and timeout. */
static int bj_members(const char *who, const json_t *item, const char *const *extra,
                      const struct srv_cfg *cfg, struct srv_batch_item *out, const json_t **params,
                      const json_t **body, const char **code, char *err)
{
    const char *key;
    json_t *v;
    const json_t *kind = NULL;
    json_object_foreach((json_t *)item, key, v)
    {
        if (strcmp(key, "kind") == 0)
            kind = v;
        else if (strcmp(key, "params") == 0)
            *params = v;
        else if (strcmp(key, "body") == 0)
            *body = v;
        else if (strcmp(key, "timeout_ms") != 0 && !bj_extra(extra, key))
            return bj_fail(code, "bad_batch", err,
                           "%s: unknown member '%.64s' (kind, params, body, timeout_ms)", who, key);
    }
    if (kind == NULL)
        return bj_fail(code, "bad_batch", err, "%s: missing member 'kind'", who);
    if (!json_is_string(kind))
        return bj_fail(code, "bad_batch", err, "%s: kind must be a string", who);
    out->kind = srv_job_kind_find(json_string_value(kind), json_string_length(kind));
    if (out->kind == NULL)
        return bj_fail(code, "bad_batch", err, "%s: unknown kind '%.64s'", who,
                       json_string_value(kind));
    if (*body != NULL && !json_is_string(*body))
        return bj_fail(code, "bad_batch", err, "%s: body must be a string", who);
    if (*body != NULL && !out->kind->uses_body)
        return bj_fail(code, "bad_batch", err, "%s: kind '%s' takes no body", who, out->kind->name);
    const json_t *t = json_object_get(item, "timeout_ms");
    if (t != NULL) {
        json_int_t ms = json_is_integer(t) ? json_integer_value(t) : 0;
        if (ms < 1 || ms > (json_int_t)cfg->max_timeout_ms)
            return bj_fail(code, "bad_batch", err,
                           "%s: timeout_ms must be an integer between 1 and %u", who,
                           cfg->max_timeout_ms);
        out->timeout_ms = (unsigned)ms;
    }
    return 0;
}

/* Validate item i and build its state with its kind. */
static int bj_item(const char *who, const json_t *item, const char *const *extra,
                   const struct srv_cfg *cfg, struct srv_batch_item *out, const char **code,
                   char *err)
{
    if (!json_is_object(item))
        return bj_fail(code, "bad_batch", err, "%s must be an object", who);
    const json_t *params = NULL, *body = NULL;
    int rc = bj_members(who, item, extra, cfg, out, &params, &body, code, err);
    if (rc < 0)
        return rc;
    size_t cap = json_is_object(params) ? json_object_size(params) : 0;
    if (cap > cfg->max_query_params)
        return bj_fail(code, "bad_batch", err, "%s: at most %u params", who, cfg->max_query_params);
    struct srv_job_param *p = calloc(cap + 1, sizeof(*p));
    char(*nums)[BJ_INT_MAX] = calloc(cap + 1, sizeof(*nums));
    size_t np = 0;
    rc = p != NULL && nums != NULL ? 0 : -ENOMEM;
    if (rc == 0)
        rc = bj_params(who, params, p, nums, &np, code, err);
    if (rc == 0) {
        char kerr[SRV_JOB_ERR_MAX];
        const char *b = body != NULL ? json_string_value(body) : NULL;
        size_t blen = body != NULL ? json_string_length(body) : 0;
        rc = out->kind->parse(np > 0 ? p : NULL, np, b, blen, cfg, &out->state, kerr, sizeof(kerr));
        if (rc == -EINVAL)
            bj_fail(code, "bad_param", err, "%s (%s): %s", who, out->kind->name, kerr);
    }
    if (rc == -ENOMEM) {
        *code = "out_of_memory";
        snprintf(err, SRV_BATCH_ERR_MAX, "out of memory");
    }
    free(p);
    free(nums);
    return rc;
}

int srv_batch_parse(const void *body, size_t len, const struct srv_cfg *cfg,
                    struct srv_batch_spec *out, const char **code, char *err, size_t size)
{
    char msg[SRV_BATCH_ERR_MAX];
    json_error_t je;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(body != NULL ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    int rc = 0;
    if (root == NULL) {
        rc = len == 0
                 ? bj_fail(code, "bad_json", msg, "the body must be a JSON array of jobs")
                 : bj_fail(code, "bad_json", msg, "the body is not JSON: %s (line %d, column %d)",
                           je.text, je.line, je.column);
        goto out;
    }
    out->json = root;
    size_t n = json_array_size(root);
    if (!json_is_array(root))
        rc = bj_fail(code, "bad_batch", msg, "the body must be a JSON array of jobs");
    else if (n == 0)
        rc = bj_fail(code, "bad_batch", msg, "the batch is empty");
    else if (n > cfg->max_batch)
        rc = bj_fail(code, "bad_batch", msg, "a batch holds at most %u jobs, got %zu",
                     cfg->max_batch, n);
    else if ((out->items = calloc(n, sizeof(*out->items))) == NULL)
        rc = -ENOMEM;
    if (rc == 0)
        out->count = n;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char who[32];
        snprintf(who, sizeof(who), "jobs[%zu]", i);
        rc = bj_item(who, json_array_get(root, i), NULL, cfg, &out->items[i], code, msg);
    }
    if (rc == -ENOMEM) {
        *code = "out_of_memory";
        snprintf(msg, sizeof(msg), "out of memory");
    }
out:
    if (rc < 0) {
        srv_batch_spec_fini(out);
        if (size > 0)
            snprintf(err, size, "%s", msg);
    }
    return rc;
}

int srv_batch_item_parse(const void *item, const char *who, const char *const *extra,
                         const struct srv_cfg *cfg, struct srv_batch_item *out, const char **code,
                         char *err)
{
    memset(out, 0, sizeof(*out));
    int rc = bj_item(who, item, extra, cfg, out, code, err);
    if (rc == -ENOMEM) {
        *code = "out_of_memory";
        snprintf(err, SRV_BATCH_ERR_MAX, "out of memory");
    }
    return rc;
}

void srv_batch_spec_fini(struct srv_batch_spec *s)
{
    for (size_t i = 0; s->items != NULL && i < s->count; i++) {
        if (s->items[i].state != NULL)
            s->items[i].kind->free(s->items[i].state);
    }
    free(s->items);
    json_decref(s->json);
    memset(s, 0, sizeof(*s));
}

/* ---- settling -------------------------------------------------------------------------------- */

void srv_batch_outcome_ok(struct srv_batch_outcome *o, const struct srv_batch_item *item)
{
    struct srv_job_answer ans;
    item->kind->answer(item->state, &ans);
    o->status = SRV_BATCH_OK;
    o->content_type = ans.content_type;
    o->body = ans.body;
    o->len = ans.len;
}

bool srv_batch_settle(enum srv_batch_mode mode, const struct srv_batch_outcome *o, size_t i,
                      size_t *decided, enum ctx_reason *why)
{
    enum srv_batch_status s = o->status;
    if (*decided != SRV_BATCH_NONE)
        return false;
    switch (mode) {
    case SRV_BATCH_ALL:
        if (s != SRV_BATCH_FAILED)
            return false;
        *why = CTX_REASON_SIBLING_FAILED;
        break;
    case SRV_BATCH_ANY:
        if (s != SRV_BATCH_OK)
            return false;
        *why = CTX_REASON_SIBLING_WON;
        break;
    case SRV_BATCH_RACE:
        if (s != SRV_BATCH_OK && s != SRV_BATCH_FAILED)
            return false;
        *why = s == SRV_BATCH_OK ? CTX_REASON_SIBLING_WON : CTX_REASON_SIBLING_FAILED;
        break;
    default:
        return false;
    }
    *decided = i;
    return true;
}

/* ---- the answer ------------------------------------------------------------------------------ */

/* The kind's answer as JSON when it is JSON, else NULL (the caller base64-encodes it). */
static json_t *bj_result_json(const struct srv_batch_outcome *o)
{
    if (o->content_type == NULL || strncmp(o->content_type, "application/json", 16) != 0)
        return NULL;
    return json_loadb(o->body != NULL ? o->body : "", o->len, 0, NULL);
}

static json_t *bj_base64(const void *body, size_t len)
{
    if (len > (SIZE_MAX / 4) * 3 - 3)
        return NULL;
    size_t cap = (len + 2) / 3 * 4 + 1;
    unsigned char *b = malloc(cap);
    if (b == NULL)
        return NULL;
    int n = len > 0 ? EVP_EncodeBlock(b, body, (int)len) : 0;
    json_t *s = json_stringn((const char *)b, (size_t)n);
    free(b);
    return s;
}

static double bj_ms(uint64_t ns)
{
    return (double)(ns / 1000u) / 1000.0;
}

/* Set key to v (taken; NULL = out of memory). Returns 0 or -ENOMEM. */
static int bj_set(json_t *obj, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(obj, key, v) == 0 ? 0 : -ENOMEM;
}

/* Add the OK outcome's result to obj: "result", or "result_base64" and "content_type". */
static int bj_set_result(json_t *obj, const struct srv_batch_outcome *o)
{
    json_t *j = bj_result_json(o);
    if (j != NULL)
        return bj_set(obj, "result", j);
    int rc = bj_set(obj, "result_base64", bj_base64(o->body, o->len));
    if (rc == 0 && o->content_type != NULL)
        rc = bj_set(obj, "content_type", json_string(o->content_type));
    return rc;
}

static json_t *bj_error_obj(const struct srv_batch_outcome *o)
{
    return json_pack("{s:s,s:s}", "code", o->code != NULL ? o->code : "failed", "message",
                     o->message);
}

static json_t *bj_result_item(const struct srv_batch_outcome *o, size_t i)
{
    json_t *r = json_pack("{s:I,s:s,s:s}", "index", (json_int_t)i, "kind", o->kind, "status",
                          srv_batch_status_name(o->status));
    if (r == NULL)
        return NULL;
    int rc = 0;
    if (o->status == SRV_BATCH_OK)
        rc = bj_set_result(r, o);
    else if (o->status == SRV_BATCH_FAILED)
        rc = bj_set(r, "error", bj_error_obj(o));
    if (rc == 0 && o->reason != CTX_REASON_NONE)
        rc = bj_set(r, "reason", json_string(ctx_reason_name(o->reason)));
    if (rc == 0)
        rc = bj_set(r, "queue_ms", json_real(bj_ms(o->queue_ns)));
    if (rc == 0)
        rc = bj_set(r, "run_ms", json_real(bj_ms(o->run_ns)));
    if (rc < 0) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static json_t *bj_results(const struct srv_batch_outcome *outcomes, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, bj_result_item(&outcomes[i], i)) < 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* The error object of a failed sub-job answering for the batch. */
static json_t *bj_failure(const struct srv_batch_outcome *o, size_t i, const char *request_id)
{
    char msg[SRV_JOB_ERR_MAX + 64];
    snprintf(msg, sizeof(msg), "jobs[%zu] (%s): %s", i, o->kind, o->message);
    return json_pack("{s:s,s:s,s:s,s:I}", "code", o->code != NULL ? o->code : "failed", "message",
                     msg, "request_id", request_id, "index", (json_int_t)i);
}

/* any, every sub-job failed: all_failed with the list of failures. */
static json_t *bj_all_failed(const struct srv_batch_outcome *outcomes, size_t n,
                             const char *request_id, int *status)
{
    json_t *errors = json_array();
    int common = 0;
    for (size_t i = 0; errors != NULL && i < n; i++) {
        const struct srv_batch_outcome *o = &outcomes[i];
        int st = o->status == SRV_BATCH_FAILED ? o->http_status : 503;
        common = i == 0 || st == common ? st : 500;
        json_t *e = o->status == SRV_BATCH_FAILED
                        ? json_pack("{s:I,s:s,s:s}", "index", (json_int_t)i, "code", o->code,
                                    "message", o->message)
                        : json_pack("{s:I,s:s,s:s}", "index", (json_int_t)i, "code", "cancelled",
                                    "message", ctx_reason_name(o->reason));
        if (json_array_append_new(errors, e) < 0) {
            json_decref(errors);
            errors = NULL;
        }
    }
    *status = common != 0 ? common : 500;
    return json_pack("{s:s,s:s,s:s,s:o}", "code", "all_failed", "message",
                     "every job of the batch failed", "request_id", request_id, "errors", errors);
}

/* The top-level members of the answer besides "mode" and "results". */
static int bj_top(json_t *top, enum srv_batch_mode mode, const struct srv_batch_outcome *outcomes,
                  size_t n, size_t decided, const char *request_id, int *status)
{
    *status = 200;
    const struct srv_batch_outcome *d = decided != SRV_BATCH_NONE ? &outcomes[decided] : NULL;
    if (mode == SRV_BATCH_ALL_SETTLED) {
        size_t ok = 0;
        for (size_t i = 0; i < n; i++)
            ok += outcomes[i].status == SRV_BATCH_OK;
        int rc = bj_set(top, "succeeded", json_integer((json_int_t)ok));
        return rc == 0 ? bj_set(top, "failed", json_integer((json_int_t)(n - ok))) : rc;
    }
    if (d != NULL && d->status == SRV_BATCH_FAILED) { /* all, race */
        *status = d->http_status;
        return bj_set(top, "error", bj_failure(d, decided, request_id));
    }
    if (d != NULL && d->status == SRV_BATCH_OK && mode != SRV_BATCH_ALL) { /* any, race */
        int rc = bj_set(top, "index", json_integer((json_int_t)decided));
        if (rc == 0)
            rc = bj_set(top, "kind", json_string(d->kind));
        return rc == 0 ? bj_set_result(top, d) : rc;
    }
    if (mode == SRV_BATCH_ALL)
        return 0;
    /* any or race without a deciding sub-job: nothing succeeded */
    return bj_set(top, "error", bj_all_failed(outcomes, n, request_id, status));
}

int srv_batch_answer(enum srv_batch_mode mode, const struct srv_batch_outcome *outcomes, size_t n,
                     size_t decided, const char *request_id, int *status, char **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    json_t *top = json_object();
    int rc = top != NULL ? 0 : -ENOMEM;
    if (rc == 0)
        rc = bj_set(top, "mode", json_string(srv_batch_mode_name(mode)));
    if (rc == 0)
        rc = bj_top(top, mode, outcomes, n, decided, request_id != NULL ? request_id : "", status);
    if (rc == 0)
        rc = bj_set(top, "results", bj_results(outcomes, n));
    if (rc == 0) {
        *body = json_dumps(top, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
        rc = *body != NULL ? 0 : -ENOMEM;
        if (rc == 0)
            *len = strlen(*body);
    }
    json_decref(top);
    return rc;
}
