/* tasks.c - the routes of durable tasks (POST/GET/DELETE /v1/tasks...) and their lifecycle.
 *
 * Design: every route turns its request into one store request (struct task_call embeds a
 * struct srv_task_req) and answers from its done callback on the loop thread; the loop never
 * touches the store itself. The tenant is always the one of the request's context.
 *
 * Long-polls (GET /v1/tasks/ID?wait_ms=N): when the first read finds the task not final, the call
 * goes on the waiter list (bounded by SRV_TASKS_MAX_WAITERS; beyond it, the answer is immediate)
 * with a timer of N ms (capped by SRV_TASKS_MAX_WAIT_MS and the request's deadline). Whoever
 * changes a task's state in the store (the runner, a DELETE) calls srv_tasks_notify with its id;
 * a waiter on it reads the task again and answers when it is final. The timer, a drain or the
 * request's own cancel end the wait: there is no polling of the store.
 *
 * A request that the server cancels (client gone, deadline, shutdown) while its store request is
 * out is released at once (srv_req_release) and the call is marked orphan: the store's done
 * callback then only frees it. So no store answer ever touches a freed request.
 *
 * Threads: loop thread only.
 */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logging/log.h"
#include "server/api/batch.h"
#include "server/api/internal.h"
#include "server/http/http.h"
#include "server/http/request.h"
#include "server/http/route.h"

enum task_route { TR_POST, TR_GET, TR_RESULT, TR_DELETE, TR_LIST };

struct task_call {
    struct srv_task_req sr; /* first: the store's done callback gets it */
    struct srv_tasks *t;
    struct srv_req *req; /* NULL once the server cancelled it (orphan) */
    enum task_route route;
    unsigned wait_ms; /* GET: the long-poll's bound (0 = answer at once) */
    bool waiting;     /* on t->waiters */
    bool in_store;    /* sr is at the store */
    ev_timer timer;
    struct task_call *wnext, *wprev;
    char after[SRV_TASK_ID_LEN + 1]; /* LIST */
    char kind[SRV_TASK_KIND_MAX + 1];
};

static void tc_store_done(struct srv_task_req *sr);

/* ---- answers --------------------------------------------------------------------------------- */

static void tc_error(struct srv_req *req, int status, const char *code, const char *msg)
{
    (void)srv_req_answer_error(req, status, code, msg);
}

/* A store failure: nothing was written. */
static void tc_store_error(struct srv_req *req, int rc)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "the task store failed: %s; nothing was written", strerror(-rc));
    (void)srv_req_header_add(req, "Retry-After", "1");
    tc_error(req, 503, "store_unavailable", msg);
}

static void tc_answer_json(struct srv_req *req, int status, json_t *o)
{
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL) {
        tc_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    (void)srv_req_answer_take(req, status, "application/json", body, strlen(body));
}

static void tc_answer_task(struct srv_req *req, int status, const struct srv_task *task)
{
    if (status == 202 || status == 200) {
        char loc[sizeof(SRV_TASKS_PATH) + SRV_TASK_ID_LEN + 2];
        snprintf(loc, sizeof(loc), SRV_TASKS_PATH "/%s", task->id);
        (void)srv_req_header_add(req, "Location", loc);
    }
    tc_answer_json(req, status, srv_task_json(task));
}

static void tc_not_found(struct srv_req *req, const char *id)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "no task %.64s", id);
    tc_error(req, 404, "task_not_found", msg);
}

/* ---- calls ----------------------------------------------------------------------------------- */

static void tc_free(struct task_call *c)
{
    srv_task_req_fini(&c->sr);
    free(c);
}

static void tc_waiter_remove(struct task_call *c)
{
    if (!c->waiting)
        return;
    struct srv_tasks *t = c->t;
    ev_timer_stop(t->loop, &c->timer);
    if (c->wprev != NULL)
        c->wprev->wnext = c->wnext;
    else
        t->waiters = c->wnext;
    if (c->wnext != NULL)
        c->wnext->wprev = c->wprev;
    c->waiting = false;
    t->nwaiters--;
}

/* Send the call's store request (the read of a waiter again, say). */
static void tc_submit(struct task_call *c)
{
    c->sr.done = tc_store_done;
    c->sr.data = c;
    c->in_store = true;
    (void)srv_task_store_submit(c->t->store, &c->sr);
}

/* Read the task again and answer, whatever its state (the wait is over). */
static void tc_wait_over(struct task_call *c)
{
    tc_waiter_remove(c);
    c->wait_ms = 0;
    c->sr.op = SRV_TASK_OP_GET;
    tc_submit(c);
}

static void tc_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    tc_wait_over(w->data);
}

/* The server gave up on the request (client gone, deadline, shutdown). */
static void tc_cancel_hook(struct srv_req *req, enum ctx_reason reason, void *arg)
{
    (void)reason;
    struct task_call *c = arg;
    c->req = NULL;
    srv_req_release(req);
    tc_waiter_remove(c);
    if (!c->in_store)
        tc_free(c);
}

/* Wait for a change of the task (GET with wait_ms, task not final). */
static void tc_wait(struct task_call *c)
{
    struct srv_tasks *t = c->t;
    if (t->draining || t->nwaiters >= SRV_TASKS_MAX_WAITERS) {
        tc_answer_task(c->req, 200, &c->sr.task);
        c->req = NULL; /* the caller frees c */
        return;
    }
    uint64_t wait_ns = (uint64_t)c->wait_ms * 1000000u;
    uint64_t deadline = ctx_deadline(srv_req_ctx(c->req)), now = ctx_now_ns();
    if (deadline != 0) { /* answer before the deadline's 504 */
        uint64_t left = deadline > now ? deadline - now : 0;
        left = left > 100000000u ? left - 100000000u : 0;
        wait_ns = wait_ns < left ? wait_ns : left;
    }
    ev_timer_init(&c->timer, tc_timer_cb, (double)wait_ns / 1e9, 0.0);
    c->timer.data = c;
    ev_timer_start(t->loop, &c->timer);
    c->waiting = true;
    c->wprev = NULL;
    c->wnext = t->waiters;
    if (t->waiters != NULL)
        t->waiters->wprev = c;
    t->waiters = c;
    t->nwaiters++;
}

void srv_tasks_notify(struct srv_tasks *t, const char *id)
{
    struct task_call *c = t->waiters;
    while (c != NULL) {
        struct task_call *next = c->wnext;
        if (strcmp(c->sr.task.id, id) == 0) {
            tc_waiter_remove(c);
            c->sr.op = SRV_TASK_OP_GET; /* read again: answered when final, else waits on */
            tc_submit(c);
        }
        c = next;
    }
}

static void tc_done_post(struct task_call *c, struct srv_req *req)
{
    struct srv_task *task = &c->sr.task;
    switch (c->sr.rc) {
    case 0:
        /* A delayed task is claimed by the runner's poll once due: a claim now finds nothing. */
        if (!c->sr.existed && task->run_at_ms <= srv_task_now_ms())
            srv_tasks_runner_poke(c->t);
        LOG_D(c->sr.existed ? "task enqueue repeated" : "task enqueued",
              LOG_STR("task_id", task->id), LOG_STR("kind", task->kind),
              LOG_UINT("attempts", task->attempts), LOG_DUR("commit_ms", c->sr.commit_ns));
        tc_answer_task(req, c->sr.existed ? 200 : 202, task);
        break;
    case -EEXIST:
        tc_error(req, 422, "idempotency_key_reused",
                 "this Idempotency-Key was used for another body: a new task needs a new key");
        break;
    case -EDQUOT:
        (void)srv_req_header_add(req, "Retry-After", "1");
        tc_error(req, 429, "tenant_task_limit",
                 "the tenant has [tasks] max_unfinished unfinished tasks: wait for some to end");
        break;
    default:
        tc_store_error(req, c->sr.rc);
        break;
    }
}

static void tc_done_get(struct task_call *c, struct srv_req *req)
{
    struct srv_task *task = &c->sr.task;
    if (c->sr.rc == -ENOENT) {
        tc_not_found(req, task->id);
    } else if (c->sr.rc != 0) {
        tc_store_error(req, c->sr.rc);
    } else if (c->route == TR_RESULT) {
        if (task->state != SRV_TASK_SUCCEEDED) {
            char msg[128];
            snprintf(msg, sizeof(msg), "the task is %s: a result exists once it succeeded",
                     srv_task_state_name(task->state));
            tc_error(req, 409, "task_not_succeeded", msg);
        } else {
            (void)srv_req_answer(req, 200, task->content_type[0] ? task->content_type : NULL,
                                 task->result, task->result_len);
        }
    } else if (c->route == TR_DELETE) {
        if (c->sr.existed) /* an attempt was running: stop it */
            srv_tasks_runner_cancel(c->t, task->id, task->attempt);
        srv_tasks_notify(c->t, task->id);
        tc_answer_task(req, 200, task);
    } else if (c->wait_ms > 0 && !srv_task_state_final(task->state)) {
        c->req = req;
        tc_wait(c);
        return;
    } else {
        tc_answer_task(req, 200, task);
    }
}

static void tc_done_list(struct task_call *c, struct srv_req *req)
{
    if (c->sr.rc != 0) {
        tc_store_error(req, c->sr.rc);
        return;
    }
    json_t *o = json_object(), *a = json_array();
    for (unsigned i = 0; o != NULL && a != NULL && i < c->sr.n; i++)
        json_array_append_new(a, srv_task_json(&c->sr.tasks[i]));
    bool more = c->sr.n == c->sr.filter.limit && c->sr.n > 0;
    if (o != NULL && a != NULL) {
        json_object_set_new(o, "tasks", a);
        json_object_set_new(o, "next_after",
                            more ? json_string(c->sr.tasks[c->sr.n - 1].id) : json_null());
        a = NULL;
    }
    json_decref(a);
    tc_answer_json(req, 200, o);
}

static void tc_store_done(struct srv_task_req *sr)
{
    struct task_call *c = (struct task_call *)sr;
    struct srv_req *req = c->req;
    c->in_store = false;
    if (req == NULL) { /* orphan: the server already gave the request up */
        tc_free(c);
        return;
    }
    c->req = NULL;
    if (c->route == TR_POST)
        tc_done_post(c, req);
    else if (c->route == TR_LIST)
        tc_done_list(c, req);
    else
        tc_done_get(c, req);
    if (c->req == NULL)
        tc_free(c); /* answered; a waiter set c->req again */
}

/* ---- handlers -------------------------------------------------------------------------------- */

static struct task_call *tc_new(struct srv_req *req, enum task_route route)
{
    struct srv_tasks *t = srv_req_route_arg(req);
    if (t->store == NULL) {
        tc_error(req, 503, "tasks_disabled", "durable tasks are off: [tasks] store is empty");
        return NULL;
    }
    struct task_call *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        tc_error(req, 503, "out_of_memory", "out of memory");
        return NULL;
    }
    c->t = t;
    c->req = req;
    c->route = route;
    struct ctx *ctx = srv_req_ctx(req);
    snprintf(c->sr.task.tenant, sizeof(c->sr.task.tenant), "%s", ctx_tenant(ctx));
    return c;
}

/* Send and hook the cancel. */
static void tc_start(struct task_call *c)
{
    srv_req_on_cancel(c->req, tc_cancel_hook, c);
    tc_submit(c);
}

static void tasks_post(struct srv_req *req)
{
    const char *key = srv_req_header(req, "Idempotency-Key");
    if (key != NULL &&
        (strlen(key) > SRV_TASK_KEY_MAX || !ctx_request_id_valid(key, strlen(key)))) {
        tc_error(req, 400, "bad_idempotency_key",
                 "Idempotency-Key must be 1 to 128 visible ASCII characters");
        return;
    }
    struct task_call *c = tc_new(req, TR_POST);
    if (c == NULL)
        return;
    struct srv_tasks *t = c->t;
    const struct srv_cfg *cfg = srv_http_cfg(t->h);
    struct srv_task *task = &c->sr.task;
    size_t len;
    const void *body = srv_req_body(req, &len);
    const char *code = "bad_task";
    char err[SRV_BATCH_ERR_MAX];
    int64_t now = srv_task_now_ms();
    int rc = srv_task_body_parse(body, len, NULL, cfg, now, task, &code, err);
    if (rc != 0) {
        tc_error(req, rc == -ENOMEM ? 503 : 400, code, err);
        tc_free(c);
        return;
    }
    struct ctx *ctx = srv_req_ctx(req);
    srv_task_id_new(task->id);
    snprintf(task->request_id, sizeof(task->request_id), "%s", ctx_request_id(ctx));
    snprintf(task->trace_id, sizeof(task->trace_id), "%s", ctx_trace_id_hex(ctx));
    snprintf(task->idem_key, sizeof(task->idem_key), "%s", key != NULL ? key : "");
    task->created_ms = now;
    c->sr.op = SRV_TASK_OP_ENQUEUE;
    c->sr.cap = cfg->task_max_unfinished;
    tc_start(c);
}

static void tasks_list(struct srv_req *req)
{
    struct task_call *c = tc_new(req, TR_LIST);
    if (c == NULL)
        return;
    struct srv_task_filter *f = &c->sr.filter;
    *f = (struct srv_task_filter){.state = -1, .limit = 100};
    const char *bad = NULL;
    for (size_t i = 0; bad == NULL && i < srv_req_query_count(req); i++) {
        const struct srv_query_param *p = srv_req_query_at(req, i);
        enum srv_task_state st;
        char *end = NULL;
        if (strcmp(p->key, "state") == 0) {
            bad = srv_task_state_parse(p->value, &st) == 0 ? NULL : "state must be a task state";
            f->state = (int)st;
        } else if (strcmp(p->key, "kind") == 0 && p->value_len <= SRV_TASK_KIND_MAX) {
            memcpy(c->kind, p->value, p->value_len + 1);
            f->kind = c->kind;
        } else if (strcmp(p->key, "limit") == 0) {
            unsigned long n = strtoul(p->value, &end, 10);
            bad = p->value[0] >= '0' && p->value[0] <= '9' && *end == '\0' && n >= 1 && n <= 1000
                      ? NULL
                      : "limit must be an integer between 1 and 1000";
            f->limit = (unsigned)n;
        } else if (strcmp(p->key, "after") == 0 && p->value_len <= SRV_TASK_ID_LEN) {
            memcpy(c->after, p->value, p->value_len + 1);
            f->after = c->after;
        } else {
            bad = "unknown or too long parameter (state, kind, limit, after)";
        }
    }
    if (bad != NULL) {
        tc_error(req, 400, "bad_param", bad);
        tc_free(c);
        return;
    }
    c->sr.op = SRV_TASK_OP_LIST;
    tc_start(c);
}

/* The ID (and whether "/result" follows) of a /v1/tasks/... path; false when malformed. */
static bool tasks_path_id(const char *path, char id[SRV_TASK_ID_LEN + 1], bool *result)
{
    const char *p = path + sizeof(SRV_TASKS_PATH); /* past "/v1/tasks/" */
    const char *slash = strchr(p, '/');
    size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);
    *result = slash != NULL && strcmp(slash, "/result") == 0;
    if (n == 0 || n > SRV_TASK_ID_LEN || (slash != NULL && !*result))
        return false;
    memcpy(id, p, n);
    id[n] = '\0';
    return true;
}

static void tasks_get(struct srv_req *req)
{
    char id[SRV_TASK_ID_LEN + 1];
    bool result;
    if (!tasks_path_id(srv_req_path(req), id, &result)) {
        tc_error(req, 404, "not_found", "no such task path");
        return;
    }
    const struct srv_query_param *w = srv_req_query_get(req, "wait_ms");
    unsigned long wait = 0;
    if (w != NULL) {
        char *end = NULL;
        wait = strtoul(w->value, &end, 10);
        if (result || w->value[0] < '0' || w->value[0] > '9' || *end != '\0' ||
            wait > SRV_TASKS_MAX_WAIT_MS || srv_req_query_count(req) > 1) {
            tc_error(req, 400, "bad_param", "wait_ms must be an integer between 0 and 60000");
            return;
        }
    } else if (srv_req_query_count(req) > 0) {
        tc_error(req, 400, "bad_param", "unknown parameter (wait_ms)");
        return;
    }
    struct task_call *c = tc_new(req, result ? TR_RESULT : TR_GET);
    if (c == NULL)
        return;
    memcpy(c->sr.task.id, id, sizeof(id));
    c->sr.op = SRV_TASK_OP_GET;
    c->sr.with_result = result;
    c->wait_ms = (unsigned)wait;
    tc_start(c);
}

static void tasks_delete(struct srv_req *req)
{
    char id[SRV_TASK_ID_LEN + 1];
    bool result;
    if (!tasks_path_id(srv_req_path(req), id, &result) || result) {
        tc_error(req, 404, "not_found", "no such task path");
        return;
    }
    struct task_call *c = tc_new(req, TR_DELETE);
    if (c == NULL)
        return;
    memcpy(c->sr.task.id, id, sizeof(id));
    c->sr.op = SRV_TASK_OP_CANCEL;
    tc_start(c);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int tasks_routes_add(struct srv_tasks *t)
{
    int rc = srv_http_route_add(t->h, "POST", SRV_TASKS_PATH, tasks_post, t);
    if (rc == 0)
        rc = srv_http_route_add(t->h, "GET", SRV_TASKS_PATH, tasks_list, t);
    if (rc == 0)
        rc = srv_http_route_add(t->h, "GET", SRV_TASKS_PATH "/...", tasks_get, t);
    if (rc == 0)
        rc = srv_http_route_add(t->h, "DELETE", SRV_TASKS_PATH "/...", tasks_delete, t);
    return rc;
}

/* What another instance sharing the store did (PostgreSQL): claim what it made due, stop an
 * attempt here that it cancelled (or whose lease it took over: the outcome would be stale), wake
 * the long-polls of a task it finished. */
static void tasks_on_event(const struct srv_task_event *ev, void *arg)
{
    struct srv_tasks *t = arg;
    switch (ev->kind) {
    case SRV_TASK_EV_DUE:
        srv_tasks_runner_poke(t);
        break;
    case SRV_TASK_EV_LOST:
        LOG_I("task attempt cancelled by another instance", LOG_STR("task_id", ev->id),
              LOG_UINT("attempt", ev->attempt));
        srv_tasks_runner_cancel(t, ev->id, ev->attempt);
        break;
    case SRV_TASK_EV_CHANGED:
        srv_tasks_notify(t, ev->id);
        break;
    }
}

/* This process's lease owner: unique across restarts and machines. */
static void tasks_owner(char *buf, size_t size)
{
    char id[SRV_TASK_ID_LEN + 1];
    srv_task_id_new(id);
    snprintf(buf, size, "p%ld-%s", (long)getpid(), id);
}

struct srv_tasks *srv_tasks_new(struct srv_http *h, struct srv_jobroute *jr, struct pool *pool,
                                struct ctx *root, const struct srv_cfg *cfg, char *err, size_t size)
{
    struct srv_tasks *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, size, "out of memory");
        return NULL;
    }
    t->h = h;
    t->jr = jr;
    t->pool = pool;
    t->root = root;
    t->loop = srv_http_loop(h);
    int rc = 0;
    if (cfg->task_store[0] != '\0') {
        struct srv_task_store_config sc = {
            .ops = srv_task_store_backend(cfg->task_store),
            .opts = {.path = cfg->task_store, .unprepared = !cfg->task_store_prepared},
            .lease_ms = cfg->task_lease_ms,
            .retention_ms = cfg->task_retention_ms,
            .poll_ms = cfg->task_poll_ms,
            .on_event = tasks_on_event,
            .event_arg = t,
            .on_commit = srv_tasks_on_commit,
            .on_commit_arg = t};
        tasks_owner(sc.owner, sizeof(sc.owner));
        rc = srv_task_store_start(t->loop, &sc, &t->store, err, size);
        if (rc == 0)
            rc = srv_tasks_runner_start(t);
        if (rc == -ENOMEM)
            snprintf(err, size, "out of memory");
    }
    if (rc == 0 && (rc = tasks_routes_add(t)) != 0)
        snprintf(err, size, "task routes: %s", strerror(-rc));
    if (rc != 0) {
        srv_tasks_stop(t);
        srv_tasks_free(t);
        return NULL;
    }
    return t;
}

void srv_tasks_drain(struct srv_tasks *t)
{
    if (t == NULL || t->draining)
        return;
    t->draining = true;
    srv_tasks_runner_stop(t);
    while (t->waiters != NULL)
        tc_wait_over(t->waiters);
}

void srv_tasks_stop(struct srv_tasks *t)
{
    if (t == NULL)
        return;
    t->draining = true;
    srv_tasks_runner_stop(t);
    srv_tasks_metrics_stop(t);
    srv_task_store_stop(t->store); /* the last releases and completions are written here */
    t->store = NULL;
}

void srv_tasks_free(struct srv_tasks *t)
{
    if (t == NULL)
        return;
    srv_tasks_runner_fini(t);
    srv_tasks_metrics_free(t);
    free(t);
}

void srv_tasks_stats_get(const struct srv_tasks *t, struct srv_tasks_stats *out)
{
    *out = t->stats;
    out->running = t->running;
    out->waiters = t->nwaiters;
    out->store = t->store != NULL ? srv_task_store_stats(t->store) : NULL;
}

static void tasks_counts_done(struct srv_task_req *sr)
{
    struct srv_tasks *t = sr->data;
    t->counting = false;
    srv_tasks_counts_done_fn *done = t->counts_done;
    int64_t oldest = sr->oldest_queued;
    int rc = sr->rc;
    srv_task_req_fini(sr);
    done(rc, oldest, t->counts_arg);
}

int srv_tasks_counts(struct srv_tasks *t, srv_task_count_fn *fn,
                     srv_task_tenant_count_fn *tenant_fn, unsigned top,
                     srv_tasks_counts_done_fn *done, void *arg)
{
    if (t->store == NULL)
        return -ENODEV;
    if (t->counting)
        return -EBUSY;
    t->counting = true;
    t->counts_done = done;
    t->counts_arg = arg;
    memset(&t->counts, 0, sizeof(t->counts));
    t->counts.op = SRV_TASK_OP_COUNTS;
    t->counts.count_fn = fn;
    t->counts.tenant_fn = tenant_fn;
    t->counts.max = top;
    t->counts.count_arg = arg;
    t->counts.done = tasks_counts_done;
    t->counts.data = t;
    return srv_task_store_submit(t->store, &t->counts);
}
