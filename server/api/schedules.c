/* schedules.c - [schedule.NAME]: timers on the loop that enqueue a durable task at every tick,
 * each tick recorded with its task in one store transaction, and GET /v1/schedules.
 *
 * Design: one entry (struct sched_entry, heap) per configured schedule, holding its parsed cron,
 * its zone (loaded once: lookups never touch the process's TZ), the task body built from the
 * section (the JSON a client would POST to /v1/tasks) and an ev_periodic armed at the next tick's
 * wall-clock time. A fire builds the task exactly as POST /v1/tasks does (srv_task_body_parse
 * against the live limits) and submits one SCHEDULE_FIRE request to the store thread; the timer is
 * armed again only in that request's done callback, so an entry has at most one fire in flight
 * and its ticks are fired in order. The store answers whether the tick was new (a task was
 * stored) or recorded already (nothing stored); either way the entry's view of its last tick
 * follows, and a new task pokes the runner.
 *
 * The last tick of every schedule ever recorded (struct sched_record, also for schedules no longer
 * configured, so that a schedule put back by a reload remembers its ticks) is read from the store
 * once at start (a SCHEDULE_LIST request); the entries are planned when it arrives: misfire
 * decides about ticks missed while the server was down (schedules.h).
 *
 * Ownership and lifetime: the object owns the entries and the records. A reload replaces entries:
 * an unchanged one is kept (its timer runs on), a removed one is stopped and freed, unless a fire
 * is in flight: then it is marked dead and its done callback frees it (the store borrows its
 * request until then). srv_tasks_stop runs the last done callbacks, so the object is freed after
 * it.
 *
 * Threads: loop thread only.
 */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "server/api/batch.h"
#include "server/api/internal.h"
#include "server/api/schedules.h"
#include "server/http/http.h"
#include "server/http/request.h"
#include "server/http/route.h"
#include "server/metrics/metrics.h"
#include "server/tasks/cron.h"

#define SCHED_PATH "/v1/schedules"

struct sched_record {
    char name[SRV_CFG_SCHED_NAME_MAX + 1];
    int64_t tick_ms; /* the last tick fired */
    char task[SRV_TASK_ID_LEN + 1];
    int64_t fired_ms; /* when */
};

struct sched_entry {
    struct srv_sched *s;
    struct srv_cfg_schedule cfg;
    struct srv_cron cron;
    struct srv_tz *tz;
    char *spec; /* the task's POST /v1/tasks body */
    size_t spec_len;
    ev_periodic timer;
    int64_t next;            /* the armed tick (s since the epoch), 0 = none */
    int64_t firing_tick;     /* the tick at the store (s), 0 = none */
    const char *why;         /* what made the fire in flight: "tick", "misfire_once" */
    struct srv_task_req req; /* the fire in flight (borrowed by the store until done) */
    bool dead;               /* removed while firing: freed by the fire's done */
};

/* A growing array of records. */
struct sched_records {
    struct sched_record *r;
    unsigned n, cap;
};

struct srv_sched {
    struct srv_http *h;
    struct srv_tasks *tasks;
    struct ev_loop *loop;
    struct sched_entry **entries; /* configured, in order */
    unsigned n;
    struct sched_records rec;      /* every schedule's last tick (loop) */
    struct sched_records incoming; /* the store's, filled on the store thread during `list` */
    bool loaded;                   /* the records have been read */
    bool stopped;                  /* draining: nothing fires */
    struct srv_task_req list;
    struct srv_sched_stats stats;
    const struct srv_met_server *met; /* NULL: nothing counted */
};

/* One tick's outcome into the stats and the metrics. */
static void sched_count(struct srv_sched *s, const char *name, const char *result, uint64_t *stat)
{
    (*stat)++;
    if (s->met != NULL) {
        const char *values[] = {name, result};
        srv_met_labels_add(s->met->family[SRV_MET_SCHEDULE_FIRES], values, 1);
    }
}

/* ---- the task of a schedule (pure) -------------------------------------------------------- */

/* The POST /v1/tasks body of a section: kind, params, body and the task options it sets. New
 * string (caller frees) or NULL with err filled. */
static char *sched_spec(const struct srv_cfg_schedule *sc, size_t *len, char *err, size_t size)
{
    json_t *params = json_loads(sc->params, JSON_REJECT_DUPLICATES, NULL);
    json_t *o = json_object();
    char *s = NULL;
    if (o != NULL && json_is_object(params)) {
        json_object_set_new(o, "kind", json_string(sc->kind));
        json_object_set(o, "params", params);
        if (sc->set & (1u << SRV_CFG_SCHED_BODY))
            json_object_set_new(o, "body", json_string(sc->body));
        if (sc->set & (1u << SRV_CFG_SCHED_ATTEMPTS))
            json_object_set_new(o, "attempts", json_integer(sc->attempts));
        if (sc->set & (1u << SRV_CFG_SCHED_BACKOFF_MS))
            json_object_set_new(o, "backoff_ms", json_integer(sc->backoff_ms));
        if (sc->set & (1u << SRV_CFG_SCHED_TIMEOUT_MS))
            json_object_set_new(o, "timeout_ms", json_integer(sc->timeout_ms));
        s = json_dumps(o, JSON_COMPACT);
    }
    if (s == NULL)
        snprintf(err, size, "%s", json_is_object(params) ? "out of memory" : "params: not JSON");
    else
        *len = strlen(s);
    json_decref(params);
    json_decref(o);
    return s;
}

int srv_sched_check(const struct srv_cfg *cfg, const struct srv_kinds *ks, char *err, size_t size)
{
    for (unsigned i = 0; i < cfg->schedule_count; i++) {
        const struct srv_cfg_schedule *sc = &cfg->schedules[i];
        char msg[SRV_BATCH_ERR_MAX] = "";
        const char *code = "bad_task";
        size_t len = 0;
        struct srv_task t;
        memset(&t, 0, sizeof(t));
        char *spec = sched_spec(sc, &len, msg, sizeof(msg));
        int rc = spec ? srv_task_body_parse(spec, len, ks, cfg, srv_task_now_ms(), &t, &code, msg)
                      : -ENOMEM;
        free(spec);
        srv_task_fini(&t);
        if (rc == 0)
            continue;
        bool params = strcmp(code, "bad_param") == 0 && (sc->set & (1u << SRV_CFG_SCHED_PARAMS));
        enum srv_cfg_sched_key k = params ? SRV_CFG_SCHED_PARAMS : SRV_CFG_SCHED_KIND;
        unsigned line = sc->key_line[k] ? sc->key_line[k] : sc->line;
        char where[SRV_CFG_PATH_MAX + 16] = "";
        if (cfg->source[0] != '\0' && line > 0)
            snprintf(where, sizeof(where), "%s:%u: ", cfg->source, line);
        else if (cfg->source[0] != '\0')
            snprintf(where, sizeof(where), "%s: ", cfg->source);
        snprintf(err, size, "%s[schedule.%s] %s: %s", where, sc->name, params ? "params" : "kind",
                 msg);
        return -EINVAL;
    }
    return 0;
}

/* ---- records ------------------------------------------------------------------------------ */

static struct sched_record *sched_record_find(const struct sched_records *rs, const char *name)
{
    for (unsigned i = 0; i < rs->n; i++) {
        if (strcmp(rs->r[i].name, name) == 0)
            return &rs->r[i];
    }
    return NULL;
}

/* The record of `name`, added (zeroed) when new; NULL when out of memory. */
static struct sched_record *sched_record_get(struct sched_records *rs, const char *name)
{
    struct sched_record *r = sched_record_find(rs, name);
    if (r != NULL)
        return r;
    if (rs->n == rs->cap) {
        unsigned cap = rs->cap ? rs->cap * 2 : 16;
        struct sched_record *nr = realloc(rs->r, cap * sizeof(*nr));
        if (nr == NULL)
            return NULL;
        rs->r = nr;
        rs->cap = cap;
    }
    r = &rs->r[rs->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    return r;
}

/* srv_task_schedule_fn, on the store thread, into `incoming`, which the loop leaves alone until
 * the request is done. */
static void sched_record_read(const char *name, int64_t last_tick_ms, const char *last_task,
                              int64_t fired_ms, void *arg)
{
    struct sched_record *r = sched_record_get(arg, name);
    if (r == NULL)
        return;
    r->tick_ms = last_tick_ms;
    r->fired_ms = fired_ms;
    snprintf(r->task, sizeof(r->task), "%s", last_task);
}

/* ---- timers and fires --------------------------------------------------------------------- */

static int64_t sched_now(const struct srv_sched *s)
{
    (void)s;
    return srv_task_now_ms() / 1000;
}

static void sched_arm(struct sched_entry *e, int64_t after)
{
    struct srv_sched *s = e->s;
    ev_periodic_stop(s->loop, &e->timer);
    e->next = 0;
    if (s->stopped || srv_cron_next(&e->cron, e->tz, after, &e->next) != 0)
        return;
    ev_periodic_set(&e->timer, (ev_tstamp)e->next, 0., 0);
    ev_periodic_start(s->loop, &e->timer);
}

static void sched_entry_free(struct sched_entry *e)
{
    if (e == NULL)
        return;
    ev_periodic_stop(e->s->loop, &e->timer);
    srv_tz_free(e->tz);
    free(e->spec);
    free(e);
}

static void sched_fire_done(struct srv_task_req *req)
{
    struct sched_entry *e = req->data;
    struct srv_sched *s = e->s;
    int64_t tick = e->firing_tick;
    char at[SRV_TASK_TIME_MAX];
    srv_task_time_format(tick * 1000, at);
    e->firing_tick = 0;
    if (e->dead) {
        srv_task_req_fini(req);
        sched_entry_free(e);
        return;
    }
    if (req->rc == 0 && !req->existed) {
        sched_count(s, e->cfg.name, "fired", &s->stats.fired);
        struct sched_record *r = sched_record_get(&s->rec, e->cfg.name);
        if (r != NULL) {
            r->tick_ms = tick * 1000;
            r->fired_ms = srv_task_now_ms();
            snprintf(r->task, sizeof(r->task), "%s", req->task.id);
        }
        LOG_I("schedule fired", LOG_STR("schedule", e->cfg.name), LOG_STR("tick", at),
              LOG_STR("task_id", req->task.id), LOG_STR("kind", e->cfg.kind),
              LOG_STR("tenant", e->cfg.tenant), LOG_STR("why", e->why));
        srv_tasks_runner_poke(s->tasks);
    } else if (req->rc == 0) {
        sched_count(s, e->cfg.name, "already", &s->stats.already);
        LOG_I("schedule tick fired already: nothing enqueued", LOG_STR("schedule", e->cfg.name),
              LOG_STR("tick", at));
    } else {
        sched_count(s, e->cfg.name, "failed", &s->stats.failed);
        LOG_E("schedule fire failed: the tick is lost", LOG_STR("schedule", e->cfg.name),
              LOG_STR("tick", at),
              LOG_STR("error", req->rc == -EDQUOT ? "the tenant's max_unfinished tasks are stored"
                                                  : strerror(-req->rc)));
    }
    srv_task_req_fini(req);
    int64_t now = sched_now(s);
    sched_arm(e, tick > now ? tick : now);
}

/* Enqueue the task of `tick` (s). */
static void sched_fire(struct sched_entry *e, int64_t tick, const char *why)
{
    struct srv_sched *s = e->s;
    struct srv_task_req *req = &e->req;
    memset(req, 0, sizeof(*req));
    const struct srv_cfg *cfg = srv_http_cfg(s->h);
    const char *code = "bad_task";
    char err[SRV_BATCH_ERR_MAX];
    int64_t now_ms = srv_task_now_ms();
    int rc = srv_task_body_parse(e->spec, e->spec_len, NULL, cfg, now_ms, &req->task, &code, err);
    if (rc != 0) {
        sched_count(s, e->cfg.name, "failed", &s->stats.failed);
        LOG_E("schedule fire failed: the task is refused", LOG_STR("schedule", e->cfg.name),
              LOG_STR("code", code), LOG_STR("error", err));
        srv_task_fini(&req->task);
        sched_arm(e, tick);
        return;
    }
    struct srv_task *t = &req->task;
    srv_task_id_new(t->id);
    snprintf(t->tenant, sizeof(t->tenant), "%s", e->cfg.tenant);
    ctx_request_id_generate(t->request_id, sizeof(t->request_id));
    t->created_ms = now_ms;
    req->op = SRV_TASK_OP_SCHEDULE_FIRE;
    req->cap = cfg->task_max_unfinished;
    req->schedule = e->cfg.name;
    req->tick_ms = tick * 1000;
    req->done = sched_fire_done;
    req->data = e;
    e->firing_tick = tick;
    e->why = why;
    e->next = 0;
    (void)srv_task_store_submit(s->tasks->store, req);
}

static void sched_timer_cb(struct ev_loop *loop, ev_periodic *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sched_entry *e = w->data;
    int64_t now = sched_now(e->s), tick = 0;
    ev_periodic_stop(loop, w);
    /* The last tick due: after a stall of the loop (or a suspend) several may be; one fires. */
    if (e->next > 0 && srv_cron_latest(&e->cron, e->tz, e->next - 1, now, &tick) == 0 && tick > 0)
        sched_fire(e, tick, "tick");
    else /* early (the wall clock moved back meanwhile): the same tick again */
        sched_arm(e, e->next > 0 ? e->next - 1 : now);
}

/* Plan an entry from its record: what the downtime missed (misfire), then the next tick. */
static void sched_plan(struct sched_entry *e)
{
    struct srv_sched *s = e->s;
    int64_t now = sched_now(s);
    const struct sched_record *r = sched_record_find(&s->rec, e->cfg.name);
    int64_t last = r != NULL ? r->tick_ms / 1000 : 0, missed = 0;
    if (last > 0 && srv_cron_latest(&e->cron, e->tz, last, now, &missed) == 0 && missed > 0) {
        char first_at[SRV_TASK_TIME_MAX], last_at[SRV_TASK_TIME_MAX];
        int64_t first = 0;
        (void)srv_cron_next(&e->cron, e->tz, last, &first);
        srv_task_time_format(first * 1000, first_at);
        srv_task_time_format(missed * 1000, last_at);
        if (e->cfg.misfire == SRV_CFG_MISFIRE_ONCE) {
            LOG_I("schedule missed ticks while down: firing the last one",
                  LOG_STR("schedule", e->cfg.name), LOG_STR("first_missed", first_at),
                  LOG_STR("last_missed", last_at), LOG_STR("misfire", "once"));
            sched_fire(e, missed, "misfire_once");
            return;
        }
        sched_count(s, e->cfg.name, "skipped", &s->stats.skipped);
        LOG_I("schedule missed ticks while down: skipped", LOG_STR("schedule", e->cfg.name),
              LOG_STR("first_missed", first_at), LOG_STR("last_missed", last_at),
              LOG_STR("misfire", "skip"));
    }
    sched_arm(e, now);
}

/* A new entry for section `sc`; NULL after logging why. */
static struct sched_entry *sched_entry_new(struct srv_sched *s, const struct srv_cfg_schedule *sc)
{
    char err[SRV_BATCH_ERR_MAX];
    struct sched_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto oom;
    e->s = s;
    e->cfg = *sc;
    ev_periodic_init(&e->timer, sched_timer_cb, 0., 0., 0);
    e->timer.data = e;
    if (srv_cron_parse(sc->cron, &e->cron, err, sizeof(err)) != 0 ||
        (e->tz = srv_tz_load(sc->tz, err, sizeof(err))) == NULL ||
        (e->spec = sched_spec(sc, &e->spec_len, err, sizeof(err))) == NULL) {
        LOG_E("schedule not started", LOG_STR("schedule", sc->name), LOG_STR("error", err));
        sched_entry_free(e);
        return NULL;
    }
    return e;
oom:
    LOG_E("schedule not started", LOG_STR("schedule", sc->name), LOG_STR("error", "out of memory"));
    return NULL;
}

static void sched_list_done(struct srv_task_req *req)
{
    struct srv_sched *s = req->data;
    if (req->rc != 0)
        LOG_E("schedules: the store's records could not be read: every schedule starts afresh",
              LOG_STR("error", strerror(-req->rc)));
    srv_task_req_fini(req);
    for (unsigned i = 0; i < s->incoming.n; i++) {
        struct sched_record *r = sched_record_get(&s->rec, s->incoming.r[i].name);
        if (r != NULL)
            *r = s->incoming.r[i];
    }
    free(s->incoming.r);
    memset(&s->incoming, 0, sizeof(s->incoming));
    s->loaded = true;
    for (unsigned i = 0; i < s->n && !s->stopped; i++)
        sched_plan(s->entries[i]);
}

/* ---- GET /v1/schedules -------------------------------------------------------------------- */

static json_t *sched_time_json(int64_t ms)
{
    char buf[SRV_TASK_TIME_MAX];
    if (ms <= 0)
        return json_null();
    srv_task_time_format(ms, buf);
    return json_string(buf);
}

static json_t *sched_entry_json(struct srv_sched *s, const struct sched_entry *e)
{
    const struct sched_record *r = sched_record_find(&s->rec, e->cfg.name);
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "name", json_string(e->cfg.name));
    json_object_set_new(o, "cron", json_string(e->cron.text));
    json_object_set_new(o, "tz", json_string(srv_tz_name(e->tz)));
    json_object_set_new(o, "kind", json_string(e->cfg.kind));
    json_object_set_new(o, "tenant", json_string(e->cfg.tenant));
    json_object_set_new(o, "misfire",
                        json_string(e->cfg.misfire == SRV_CFG_MISFIRE_ONCE ? "once" : "skip"));
    json_object_set_new(o, "last_run", sched_time_json(r ? r->fired_ms : 0));
    json_object_set_new(o, "last_tick", sched_time_json(r ? r->tick_ms : 0));
    json_object_set_new(o, "last_task", r && r->task[0] ? json_string(r->task) : json_null());
    int64_t next = e->firing_tick ? e->firing_tick : e->next;
    json_object_set_new(o, "next_run", sched_time_json(next * 1000));
    return o;
}

static void sched_get(struct srv_req *req)
{
    struct srv_sched *s = srv_req_route_arg(req);
    json_t *list = json_array(), *root = json_object();
    char *body = NULL;
    for (unsigned i = 0; list != NULL && i < s->n; i++)
        json_array_append_new(list, sched_entry_json(s, s->entries[i]));
    if (root != NULL && list != NULL) {
        json_object_set(root, "schedules", list);
        body = json_dumps(root, JSON_COMPACT);
    }
    json_decref(list);
    json_decref(root);
    if (body == NULL) {
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    (void)srv_req_answer_take(req, 200, "application/json", body, strlen(body));
}

/* ---- the object --------------------------------------------------------------------------- */

/* Entries for every section of cfg, into *out (n of them; failures are left out, logged). */
static int sched_entries_build(struct srv_sched *s, const struct srv_cfg *cfg,
                               struct sched_entry ***out, unsigned *n)
{
    *n = 0;
    *out = calloc(cfg->schedule_count ? cfg->schedule_count : 1, sizeof(**out));
    if (*out == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < cfg->schedule_count; i++) {
        struct sched_entry *e = sched_entry_new(s, &cfg->schedules[i]);
        if (e != NULL)
            (*out)[(*n)++] = e;
    }
    return 0;
}

struct srv_sched *srv_sched_new(struct srv_http *h, struct srv_tasks *tasks,
                                const struct srv_cfg *cfg)
{
    struct srv_sched *s = calloc(1, sizeof(*s));
    if (s == NULL || sched_entries_build(s, cfg, &s->entries, &s->n) != 0) {
        LOG_E("start-up failed: schedules", LOG_STR("error", strerror(ENOMEM)));
        free(s);
        return NULL;
    }
    s->h = h;
    s->tasks = tasks;
    s->loop = srv_http_loop(h);
    int rc = srv_http_route_add(h, "GET", SCHED_PATH, sched_get, s);
    if (rc != 0) {
        LOG_E("start-up failed: schedules route", LOG_STR("error", strerror(-rc)));
        srv_sched_free(s);
        return NULL;
    }
    if (tasks->store == NULL) {
        if (s->n > 0)
            LOG_W("schedules do not fire: [tasks] store is empty (durable tasks are off)",
                  LOG_UINT("schedules", s->n));
        return s;
    }
    s->list.op = SRV_TASK_OP_SCHEDULE_LIST;
    s->list.sched_fn = sched_record_read;
    s->list.sched_arg = &s->incoming;
    s->list.done = sched_list_done;
    s->list.data = s;
    (void)srv_task_store_submit(tasks->store, &s->list);
    return s;
}

/* Same section, same values: the entry may stay as it is. */
static bool sched_same(const struct srv_cfg_schedule *a, const struct srv_cfg_schedule *b)
{
    return strcmp(a->name, b->name) == 0 && strcmp(a->cron, b->cron) == 0 &&
           strcmp(a->tz, b->tz) == 0 && strcmp(a->kind, b->kind) == 0 &&
           strcmp(a->params, b->params) == 0 && strcmp(a->body, b->body) == 0 &&
           strcmp(a->tenant, b->tenant) == 0 && a->attempts == b->attempts &&
           a->backoff_ms == b->backoff_ms && a->timeout_ms == b->timeout_ms &&
           a->misfire == b->misfire && a->set == b->set;
}

/* Drop an entry: now, or when its fire in flight is done. */
static void sched_entry_drop(struct sched_entry *e)
{
    if (e->firing_tick != 0) {
        ev_periodic_stop(e->s->loop, &e->timer);
        e->dead = true;
        return;
    }
    sched_entry_free(e);
}

int srv_sched_update(struct srv_sched *s, const struct srv_cfg *cfg)
{
    struct sched_entry **next =
        calloc(cfg->schedule_count ? cfg->schedule_count : 1, sizeof(*next));
    if (next == NULL)
        return -ENOMEM;
    unsigned n = 0;
    for (unsigned i = 0; i < cfg->schedule_count; i++) {
        const struct srv_cfg_schedule *sc = &cfg->schedules[i];
        struct sched_entry *keep = NULL;
        for (unsigned j = 0; j < s->n && keep == NULL; j++) {
            if (s->entries[j] != NULL && sched_same(&s->entries[j]->cfg, sc)) {
                keep = s->entries[j];
                s->entries[j] = NULL;
            }
        }
        if (keep == NULL && (keep = sched_entry_new(s, sc)) != NULL && s->loaded && !s->stopped &&
            s->tasks->store != NULL)
            sched_plan(keep);
        if (keep != NULL)
            next[n++] = keep;
    }
    for (unsigned j = 0; j < s->n; j++) {
        if (s->entries[j] != NULL)
            sched_entry_drop(s->entries[j]);
    }
    free(s->entries);
    s->entries = next;
    s->n = n;
    return 0;
}

void srv_sched_stop(struct srv_sched *s)
{
    if (s == NULL)
        return;
    s->stopped = true;
    for (unsigned i = 0; i < s->n; i++) {
        ev_periodic_stop(s->loop, &s->entries[i]->timer);
        s->entries[i]->next = 0;
    }
}

void srv_sched_free(struct srv_sched *s)
{
    if (s == NULL)
        return;
    for (unsigned i = 0; i < s->n; i++)
        sched_entry_drop(s->entries[i]); /* a fire in flight is done by now (srv_tasks_stop) */
    free(s->entries);
    free(s->rec.r);
    free(s->incoming.r);
    free(s);
}

void srv_sched_metrics_set(struct srv_sched *s, const struct srv_met_server *met)
{
    s->met = met;
}

void srv_sched_stats_get(const struct srv_sched *s, struct srv_sched_stats *out)
{
    if (s == NULL)
        memset(out, 0, sizeof(*out));
    else
        *out = s->stats;
}
