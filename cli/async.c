/* async.c - `spindle call --async KIND ...`: enqueue the job as a durable task (POST /v1/tasks),
 * follow it until it is final, then print its answer as `spindle call` prints a job's.
 *
 * Design: three steps, each made of blocking exchanges (fetch.c).
 *   enqueue  POST /v1/tasks with {"kind","params","body","attempts","backoff_ms","delay_ms",
 *            "timeout_ms"} and an Idempotency-Key (--idempotency-key, else the request id), so
 *            that repeating the POST after a lost answer, a 503 or a 429 (up to --retries, with
 *            the backoff and Retry-After floor of policy.c) never stores a second task. 202 or
 *            200 (the same key again) carry the task; any other answer fails the call.
 *   follow   GET /v1/tasks/ID?wait_ms=W: the server holds each request until the state is final
 *            or W passes, so the client sleeps in the server's long poll, never busy-polls. W is
 *            1 s when standard error is a terminal (the progress line "task ID: running, attempt
 *            1/3, 2.4s" is redrawn each time), 10 s otherwise. A lost connection (a restarting
 *            server) is retried like the enqueue; the task is stored, so it goes on meanwhile.
 *   answer   succeeded: GET .../result, written like a job's answer (--output FILE, or stdout
 *            where a JSON answer ends with a newline); failed or cancelled: one line on stderr
 *            with the last attempt's error. With --json, the result line and the summary line
 *            of `spindle call --json`, with the task's id and state added.
 * --detach stops after the enqueue and prints the task's JSON. Every exchange sends the token of
 * --token-file (else $SPINDLE_TOKEN) as `spindle call` does.
 *
 * Exit codes as `spindle call`: 0 succeeded, 1 failed, cancelled or refused, 2 usage.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/internal.h"
#include "context/ctx.h"

#define AS_IO_MS        30000 /* one exchange beyond its long poll */
#define AS_WAIT_TTY_MS  1000  /* long poll with a progress line to redraw */
#define AS_WAIT_MS      10000 /* long poll otherwise */
#define AS_LOCATION_MAX 512

struct as_run {
    const struct cli_call_opts *o;
    struct cli_url url;
    char request_id[CTX_REQUEST_ID_MAX + 1];
    char location[AS_LOCATION_MAX]; /* "/v1/tasks/ID" */
    char token[CLI_TOKEN_MAX + 1];  /* the bearer token, "" = none (cli_token_load) */
    uint64_t rng;
    long long t0_ms;
    bool progress;
    bool drawn;
};

static long long as_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void as_sleep_ms(long long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

char *cli_async_body(const struct cli_call_opts *o, const char *body, size_t body_len, char *err,
                     size_t size)
{
    json_t *j = json_object(), *params = json_object();
    char *out = NULL;
    if (j == NULL || params == NULL)
        goto oom;
    for (int i = 0; i < o->nparams; i++) {
        const char *eq = strchr(o->params[i], '=');
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - o->params[i]), o->params[i]);
        if (json_object_set_new(params, key, json_string(eq + 1)) != 0) {
            snprintf(err, size, "parameter %s: not UTF-8 text", key);
            goto fail;
        }
    }
    json_object_set_new(j, "kind", json_string(o->kind));
    json_object_set(j, "params", params);
    if (body != NULL) {
        json_t *b = json_stringn(body, body_len);
        if (b == NULL) {
            snprintf(err, size, "--body: a task's body must be UTF-8 text");
            goto fail;
        }
        json_object_set_new(j, "body", b);
    }
    if (o->task_attempts)
        json_object_set_new(j, "attempts", json_integer(o->task_attempts));
    if (o->task_backoff_ms >= 0)
        json_object_set_new(j, "backoff_ms", json_integer(o->task_backoff_ms));
    if (o->task_delay_ms >= 0)
        json_object_set_new(j, "delay_ms", json_integer(o->task_delay_ms));
    if (o->timeout_ms > 0)
        json_object_set_new(j, "timeout_ms", json_integer(o->timeout_ms));
    out = json_dumps(j, JSON_COMPACT);
    if (out == NULL)
        goto oom;
    goto fail;
oom:
    snprintf(err, size, "out of memory");
fail:
    json_decref(params);
    json_decref(j);
    return out;
}

static void as_progress_clear(struct as_run *run)
{
    if (run->drawn)
        fputs("\r\033[K", stderr);
    run->drawn = false;
}

/* One exchange, repeated after a transport error, 503 or 429 up to --retries times. Returns 0
 * with *r filled (any other status), or -1 after saying why. */
static int as_exchange(struct as_run *run, const struct cli_fetch_req *q, struct cli_fetch_resp *r,
                       const char *what)
{
    struct cli_backoff b = {run->o->backoff_base_ms, run->o->backoff_cap_ms};
    char err[512];
    for (unsigned attempt = 0;; attempt++) {
        int rc = cli_fetch(q, r, err, sizeof(err));
        struct cli_verdict v = {.retry_after_ms = -1};
        if (rc == 0) {
            v = cli_verdict_of(r->status, r->retry_after_ms, r->retry_after, time(NULL));
            if (!v.retryable)
                return 0;
        }
        if (attempt >= run->o->retries) {
            if (rc != 0) {
                as_progress_clear(run);
                fprintf(stderr, "spindle: call: %s: %s\n", what, err);
                return -1;
            }
            return 0; /* the last 503/429 is the answer */
        }
        if (rc == 0)
            cli_fetch_resp_fini(r);
        as_sleep_ms(cli_backoff_ms(&b, attempt, v.retry_after_ms, &run->rng));
    }
}

/* The failure line of `spindle call` for an answer that refused the job. */
static int as_refused(struct as_run *run, const struct cli_fetch_resp *r)
{
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    fprintf(stderr, "spindle: call: %s: %d %s: %s (request id %s)\n", run->o->kind, r->status,
            code ? code : "error", msg ? msg : "the server refused the task", run->request_id);
    json_decref(j);
    return CLI_EXIT_FAIL;
}

/* POST /v1/tasks. Returns 0 with run->location set, or an exit code. */
static int as_enqueue(struct as_run *run, json_t **task)
{
    const struct cli_call_opts *o = run->o;
    char err[512];
    char *body = NULL, *payload = NULL;
    size_t body_len = 0;
    if (o->body && (body = cli_file_read(o->body, &body_len)) == NULL) {
        fprintf(stderr, "spindle: call: --body %s: %s\n", o->body, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    payload = cli_async_body(o, body, body_len, err, sizeof(err));
    free(body);
    if (payload == NULL) {
        fprintf(stderr, "spindle: call: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    struct cli_fetch_req q = {
        .url = &run->url,
        .method = "POST",
        .target = "/v1/tasks",
        .tenant = o->tenant,
        .request_id = run->request_id,
        .idempotency_key = o->idempotency_key ? o->idempotency_key : run->request_id,
        .body = payload,
        .body_len = strlen(payload),
        .timeout_ms = AS_IO_MS,
        .token = run->token,
    };
    struct cli_fetch_resp r;
    int code = as_exchange(run, &q, &r, "POST /v1/tasks") == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    free(payload);
    if (code != CLI_EXIT_OK)
        return code;
    *task = r.status == 202 || r.status == 200
                ? json_loadb(r.body ? r.body : "", r.body_len, 0, NULL)
                : NULL;
    const char *id = json_string_value(json_object_get(*task, "id"));
    if (r.status != 202 && r.status != 200)
        code = as_refused(run, &r);
    else if (id == NULL)
        code = (fprintf(stderr, "spindle: call: POST /v1/tasks: no task id in the answer\n"),
                CLI_EXIT_FAIL);
    else if (r.location[0] == '/' && strlen(r.location) < sizeof(run->location))
        snprintf(run->location, sizeof(run->location), "%s", r.location);
    else
        snprintf(run->location, sizeof(run->location), "/v1/tasks/%.200s", id);
    cli_fetch_resp_fini(&r);
    return code;
}

/* Long-poll the task until its state is final. Returns 0 with *task (new reference) final, or an
 * exit code. */
static int as_follow(struct as_run *run, json_t **task)
{
    long long wait = run->progress ? AS_WAIT_TTY_MS : AS_WAIT_MS;
    char target[AS_LOCATION_MAX + 32];
    snprintf(target, sizeof(target), "%s?wait_ms=%lld", run->location, wait);
    while (!cli_task_state_final(json_string_value(json_object_get(*task, "state")))) {
        if (run->progress) {
            char line[256];
            cli_task_progress(*task, as_now_ms() - run->t0_ms, line, sizeof(line));
            fprintf(stderr, "\r%s\033[K", line);
            run->drawn = true;
        }
        struct cli_fetch_req q = {.url = &run->url,
                                  .method = "GET",
                                  .target = target,
                                  .tenant = run->o->tenant,
                                  .timeout_ms = AS_IO_MS + wait,
                                  .token = run->token};
        struct cli_fetch_resp r;
        if (as_exchange(run, &q, &r, run->location) != 0)
            return CLI_EXIT_FAIL;
        json_t *j = r.status == 200 ? json_loadb(r.body ? r.body : "", r.body_len, 0, NULL) : NULL;
        if (j == NULL) {
            as_progress_clear(run);
            if (r.status != 200)
                cli_task_http_error("call", &r);
            else
                fprintf(stderr, "spindle: call: %s: the answer is not JSON\n", run->location);
            cli_fetch_resp_fini(&r);
            return CLI_EXIT_FAIL;
        }
        cli_fetch_resp_fini(&r);
        json_decref(*task);
        *task = j;
    }
    as_progress_clear(run);
    return CLI_EXIT_OK;
}

/* --json: the result line of `spindle call --json`, with the task's id and state, and the
 * summary line. */
static int as_print_lines(struct as_run *run, const json_t *task, bool ok,
                          const struct cli_fetch_resp *r)
{
    json_t *line = json_object();
    const char *code = "";
    const char *msg = ok ? "" : cli_task_last_error(task, &code);
    json_t *result = NULL;
    if (ok) {
        result = json_loadb(r->body ? r->body : "", r->body_len, JSON_DECODE_ANY, NULL);
        if (result == NULL)
            result = json_pack("{s:s,s:I}", "content_type",
                               r->ctype[0] ? r->ctype : "application/octet-stream", "bytes",
                               (json_int_t)r->body_len);
    } else {
        result = json_pack("{s:s,s:s}", "code", code[0] ? code : "task_failed", "message", msg);
    }
    long long ms = as_now_ms() - run->t0_ms;
    json_object_set_new(line, "index", json_integer(0));
    json_object_set_new(line, "kind", json_string(run->o->kind));
    json_object_set_new(line, "status", json_integer(ok ? r->status : 0));
    json_object_set_new(line, "ok", json_boolean(ok));
    json_object_set(line, "attempts", json_object_get(task, "attempt"));
    json_object_set_new(line, "ms", json_integer(ms));
    json_object_set_new(line, "request_id", json_string(run->request_id));
    json_object_set(line, "task_id", json_object_get(task, "id"));
    json_object_set(line, "state", json_object_get(task, "state"));
    json_object_set_new(line, ok ? "result" : "error", result);
    char *s = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    int rc = s && puts(s) != EOF ? 0 : -EIO;
    free(s);
    if (printf("{\"summary\":{\"succeeded\":%d,\"failed\":%d,\"retried\":%d,\"wall_ms\":%lld}}\n",
               ok, !ok, json_integer_value(json_object_get(task, "attempt")) > 1, ms) < 0)
        rc = -EIO;
    return rc;
}

/* The final task: its answer, or its failure. */
static int as_finish(struct as_run *run, const json_t *task)
{
    const char *state = json_string_value(json_object_get(task, "state"));
    bool ok = strcmp(state, "succeeded") == 0;
    struct cli_fetch_resp r = {0};
    int code = ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    if (ok) {
        char target[AS_LOCATION_MAX + 16];
        snprintf(target, sizeof(target), "%s/result", run->location);
        struct cli_fetch_req q = {.url = &run->url,
                                  .method = "GET",
                                  .target = target,
                                  .tenant = run->o->tenant,
                                  .timeout_ms = AS_IO_MS,
                                  .token = run->token};
        if (as_exchange(run, &q, &r, target) != 0)
            return CLI_EXIT_FAIL;
        if (r.status / 100 != 2) {
            cli_task_http_error("call", &r);
            cli_fetch_resp_fini(&r);
            return CLI_EXIT_FAIL;
        }
    }
    int rc = 0;
    if (run->o->json) {
        rc = as_print_lines(run, task, ok, &r);
    } else if (ok) {
        rc = cli_task_answer_write(run->o->output, &r);
    } else {
        const char *ecode = "";
        const char *msg = cli_task_last_error(task, &ecode);
        long long attempts = json_integer_value(json_object_get(task, "attempt"));
        fprintf(stderr, "spindle: call: %s: task %s %s%s%s%s%s (request id %s, %lld attempt%s)\n",
                run->o->kind, json_string_value(json_object_get(task, "id")), state,
                ecode[0] ? ": " : "", ecode, msg[0] && strcmp(msg, ecode) ? ": " : "",
                strcmp(msg, ecode) ? msg : "", run->request_id, attempts, attempts == 1 ? "" : "s");
    }
    if (rc != 0) {
        fprintf(stderr, "spindle: call: writing the answer: %s\n", strerror(-rc));
        code = CLI_EXIT_FAIL;
    }
    cli_fetch_resp_fini(&r);
    return code;
}

int cli_call_async(const struct cli_call_opts *o)
{
    struct as_run run = {.o = o, .t0_ms = as_now_ms(), .progress = isatty(STDERR_FILENO)};
    char err[512];
    if (cli_url_parse(o->server, &run.url, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: call: --server: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (cli_token_load(o->token_file, run.token, sizeof(run.token), err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: call: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (o->request_id)
        snprintf(run.request_id, sizeof(run.request_id), "%s", o->request_id);
    else
        ctx_request_id_generate(run.request_id, sizeof(run.request_id));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    run.rng = o->seed ? o->seed : (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    json_t *task = NULL;
    int code = as_enqueue(&run, &task);
    if (code == CLI_EXIT_OK && o->detach) {
        char *s = json_dumps(task, JSON_COMPACT);
        code = s && puts(s) != EOF ? CLI_EXIT_OK : CLI_EXIT_FAIL;
        free(s);
    } else if (code == CLI_EXIT_OK) {
        code = as_follow(&run, &task);
        if (code == CLI_EXIT_OK)
            code = as_finish(&run, task);
    }
    json_decref(task);
    explicit_bzero(run.token, sizeof(run.token));
    if (fflush(stdout) != 0 && code == CLI_EXIT_OK)
        code = CLI_EXIT_FAIL;
    return code;
}
