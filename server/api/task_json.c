/* task_json.c - the JSON side of durable tasks: the POST /v1/tasks body, a stored spec parsed back
 * into a runnable item, a task as JSON, and RFC 3339 times.
 *
 * Design: a task body is a /v1/batch item plus the task options. The item part (kind, params,
 * body, timeout_ms) goes through the batch parser (srv_batch_item_parse), so a task accepts
 * exactly what a batch item accepts, with the same messages; the options are checked here. The
 * body is stored as it was posted (the spec), and parsed again by the runner before each attempt:
 * nothing of a kind's state has to be serialised, and an Idempotency-Key compares the bytes.
 *
 * Pure functions: no state, any thread.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/api/batch.h"
#include "server/api/internal.h"

#define TJ_ATTEMPTS_DEFAULT 3
#define TJ_ATTEMPTS_MAX     100
#define TJ_BACKOFF_DEFAULT  1000
#define TJ_BACKOFF_MAX      3600000LL
#define TJ_DELAY_MAX        2592000000LL /* 30 days */

static const char *const tj_options[] = {"attempts", "backoff_ms", "delay_ms", "run_at", NULL};

/* ---- times ----------------------------------------------------------------------------------- */

void srv_task_time_format(int64_t ms, char buf[SRV_TASK_TIME_MAX])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || gmtime_r(&s, &tm) == NULL) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, SRV_TASK_TIME_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* `n` digits at s into *out; false when one is not a digit. */
static bool tj_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

int srv_task_time_parse(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, frac = 0, off = 0;
    size_t len = strlen(s);
    if (len < 20 || !tj_digits(s, 4, &y) || s[4] != '-' || !tj_digits(s + 5, 2, &mo) ||
        s[7] != '-' || !tj_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !tj_digits(s + 11, 2, &h) || s[13] != ':' || !tj_digits(s + 14, 2, &mi) || s[16] != ':' ||
        !tj_digits(s + 17, 2, &sec))
        return -EINVAL;
    const char *p = s + 19;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3)
                frac = frac * 10 + (*p - '0');
        if (n == 0)
            return -EINVAL;
        for (; n < 3; n++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!tj_digits(p + 1, 2, &oh) || p[3] != ':' || !tj_digits(p + 4, 2, &om) || oh > 23 ||
            om > 59)
            return -EINVAL;
        off = (oh * 60 + om) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ms = ((int64_t)t - (int64_t)off * 60) * 1000 + frac;
    return 0;
}

/* ---- the body -------------------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int tj_fail(const char **code, const char *c,
                                                         char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, SRV_BATCH_ERR_MAX, fmt, ap);
    va_end(ap);
    *code = c;
    return -EINVAL;
}

/* An optional integer option in [min, max] (dflt when absent). */
static int tj_int(const json_t *obj, const char *key, long long min, long long max, long long dflt,
                  long long *out, const char **code, char *err)
{
    const json_t *v = json_object_get(obj, key);
    *out = dflt;
    if (v == NULL)
        return 0;
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : min - 1;
    if (n < min || n > max)
        return tj_fail(code, "bad_task", err, "task: %s must be an integer between %lld and %lld",
                       key, min, max);
    *out = n;
    return 0;
}

/* The options of a task object into *t. */
static int tj_options_parse(const json_t *obj, int64_t now_ms, struct srv_task *t,
                            const char **code, char *err)
{
    long long attempts, backoff, delay;
    int rc = tj_int(obj, "attempts", 1, TJ_ATTEMPTS_MAX, TJ_ATTEMPTS_DEFAULT, &attempts, code, err);
    if (rc == 0)
        rc = tj_int(obj, "backoff_ms", 0, TJ_BACKOFF_MAX, TJ_BACKOFF_DEFAULT, &backoff, code, err);
    if (rc == 0)
        rc = tj_int(obj, "delay_ms", 0, TJ_DELAY_MAX, 0, &delay, code, err);
    if (rc != 0)
        return rc;
    t->attempts = (unsigned)attempts;
    t->backoff_ms = (unsigned)backoff;
    t->run_at_ms = now_ms + delay;
    const json_t *at = json_object_get(obj, "run_at");
    if (at != NULL) {
        int64_t ms;
        if (json_object_get(obj, "delay_ms") != NULL)
            return tj_fail(code, "bad_task", err, "task: give delay_ms or run_at, not both");
        if (!json_is_string(at) || srv_task_time_parse(json_string_value(at), &ms) != 0)
            return tj_fail(code, "bad_task", err,
                           "task: run_at must be an RFC 3339 time, e.g. 2026-12-06T15:00:00Z");
        if (ms > now_ms + TJ_DELAY_MAX)
            return tj_fail(code, "bad_task", err, "task: run_at is more than 30 days ahead");
        t->run_at_ms = ms > now_ms ? ms : now_ms;
    }
    return 0;
}

int srv_task_body_parse(const void *body, size_t len, const struct srv_kinds *ks,
                        const struct srv_cfg *cfg, int64_t now_ms, struct srv_task *t,
                        const char **code, char *err)
{
    json_error_t je;
    json_t *root = json_loadb(body != NULL ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return len == 0
                   ? tj_fail(code, "bad_json", err, "the body must be a JSON task object")
                   : tj_fail(code, "bad_json", err, "the body is not JSON: %s (line %d, column %d)",
                             je.text, je.line, je.column);
    struct srv_batch_item item;
    memset(&item, 0, sizeof(item));
    int rc = json_is_object(root)
                 ? srv_batch_item_parse(root, "task", tj_options, ks, cfg, &item, code, err)
                 : tj_fail(code, "bad_task", err, "the body must be a JSON task object");
    if (rc == 0) {
        snprintf(t->kind, sizeof(t->kind), "%s", item.kind->name);
        /* only the task's own timeout_ms is stored: without one, each attempt takes the kind's
         * timeout_ms of the moment it starts */
        t->timeout_ms = json_object_get(root, "timeout_ms") != NULL ? item.timeout_ms : 0;
        rc = tj_options_parse(root, now_ms, t, code, err);
    }
    srv_job_fini(&item.job); /* checked only: the runner prepares the job again per attempt */
    if (rc == -EINVAL && strcmp(*code, "bad_batch") == 0)
        *code = "bad_task";
    json_decref(root);
    if (rc != 0)
        return rc;
    t->spec = malloc(len + 1);
    if (t->spec == NULL) {
        *code = "out_of_memory";
        snprintf(err, SRV_BATCH_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    memcpy(t->spec, body, len);
    t->spec[len] = '\0';
    t->spec_len = len;
    return 0;
}

int srv_task_spec_item(const struct srv_task *t, const struct srv_cfg *cfg, void **json,
                       struct srv_batch_item *item, const char **code, char *err)
{
    json_t *root = json_loadb(t->spec != NULL ? t->spec : "", t->spec_len, 0, NULL);
    *json = NULL;
    memset(item, 0, sizeof(*item));
    if (root == NULL)
        return tj_fail(code, "bad_task", err, "task: the stored body is not JSON");
    int rc = srv_batch_item_parse(root, "task", tj_options, NULL, cfg, item, code, err);
    if (rc != 0) {
        srv_job_fini(&item->job); /* before the tree its body may point into */
        json_decref(root);
        return rc;
    }
    *json = root;
    return 0;
}

/* ---- a task as JSON -------------------------------------------------------------------------- */

static void tj_time(json_t *o, const char *key, int64_t ms)
{
    char buf[SRV_TASK_TIME_MAX];
    srv_task_time_format(ms, buf);
    json_object_set_new(o, key, buf[0] ? json_string(buf) : json_null());
}

json_t *srv_task_json(const struct srv_task *t)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    bool none = t->errors == NULL || strcmp(t->errors, "[]") == 0; /* most: no parse */
    json_t *errors = none ? json_array() : json_loads(t->errors, 0, NULL);
    json_object_set_new(o, "id", json_string(t->id));
    json_object_set_new(o, "state", json_string(srv_task_state_name(t->state)));
    json_object_set_new(o, "kind", json_string(t->kind));
    json_object_set_new(o, "attempt", json_integer(t->attempt));
    json_object_set_new(o, "attempts", json_integer(t->attempts));
    json_object_set_new(o, "interrupted", json_integer(t->interrupted));
    json_object_set_new(o, "errors", errors != NULL ? errors : json_array());
    tj_time(o, "created_at", t->created_ms);
    tj_time(o, "started_at", t->started_ms);
    tj_time(o, "finished_at", t->finished_ms);
    tj_time(o, "next_run_at",
            srv_task_state_final(t->state) || t->state == SRV_TASK_RUNNING ? 0 : t->run_at_ms);
    json_object_set_new(o, "backoff_ms", json_integer(t->backoff_ms));
    json_object_set_new(o, "timeout_ms", t->timeout_ms ? json_integer(t->timeout_ms) : json_null());
    json_object_set_new(o, "request_id", json_string(t->request_id));
    json_object_set_new(o, "trace_id", t->trace_id[0] ? json_string(t->trace_id) : json_null());
    json_object_set_new(o, "idempotency_key",
                        t->idem_key[0] ? json_string(t->idem_key) : json_null());
    return o;
}
