/* task_metrics.c - the durable tasks' metric families: counters read at render time, the
 * store's commit latency, and the tasks by state and kind refreshed from the store.
 *
 * Design: counters owned by the runner or the store thread (atomics) are callback series, read
 * when /metrics renders. The commit histogram is fed once per transaction by the store's
 * on_commit hook on the loop thread. Counting tasks by state and kind needs the store, so a 2 s
 * timer asks the store thread (SRV_TASK_OP_COUNTS); its count callback runs on that thread and
 * only fills a buffer of this object, which the done callback (loop thread) turns into gauges:
 * the registry is never touched off the loop. A (state, kind) pair seen before and gone now is
 * set to 0.
 *
 * Threads: loop thread, except tm_count (the store thread, writing only `pending`, which the loop
 * reads after the request's hand-back).
 */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/internal.h"
#include "server/metrics/metrics.h"

#define TM_REFRESH_S 2.0
#define TM_MAX_PAIRS (SRV_TASK_STATE__COUNT * 32)

struct tm_pair {
    enum srv_task_state state;
    char kind[SRV_TASK_KIND_MAX + 1];
    uint64_t n;
};

struct srv_task_metrics {
    struct srv_tasks *t;
    const struct srv_met_server *met;
    ev_timer timer;
    struct tm_pair shown[TM_MAX_PAIRS], pending[TM_MAX_PAIRS];
    size_t nshown, npending;
};

static double tm_attempts(void *arg)
{
    return (double)((struct srv_tasks *)arg)->stats.attempts;
}

static double tm_retries(void *arg)
{
    return (double)((struct srv_tasks *)arg)->stats.retries;
}

static double tm_stale(void *arg)
{
    return (double)((struct srv_tasks *)arg)->stats.stale;
}

/* A store counter, 0 without a store. */
#define TM_STORE(name, field)                                                                      \
    static double name(void *arg)                                                                  \
    {                                                                                              \
        struct srv_tasks *t = arg;                                                                 \
        return t->store != NULL ? (double)atomic_load(&srv_task_store_stats(t->store)->field)      \
                                : 0.0;                                                             \
    }
TM_STORE(tm_expired, expired)
TM_STORE(tm_purged, purged)
TM_STORE(tm_fsyncs, fsyncs)

void srv_tasks_on_commit(uint64_t commit_ns, void *arg)
{
    struct srv_tasks *t = arg;
    if (t->metrics != NULL)
        srv_met_labels_observe(t->metrics->met->family[SRV_MET_TASK_COMMIT], NULL,
                               (double)commit_ns / 1e9);
}

/* Store thread: one (state, kind) count. */
static void tm_count(enum srv_task_state s, const char *kind, uint64_t n, void *arg)
{
    struct srv_task_metrics *m = arg;
    if (m->npending == TM_MAX_PAIRS)
        return;
    struct tm_pair *p = &m->pending[m->npending++];
    p->state = s;
    snprintf(p->kind, sizeof(p->kind), "%s", kind);
    p->n = n;
}

static void tm_set(struct srv_task_metrics *m, const struct tm_pair *p, double v)
{
    const char *values[] = {srv_task_state_name(p->state), p->kind};
    srv_met_labels_set(m->met->family[SRV_MET_TASKS], values, v);
}

static void tm_counted(int rc, int64_t oldest_ms, void *arg)
{
    struct srv_task_metrics *m = arg;
    if (rc != 0)
        return;
    for (size_t i = 0; i < m->nshown; i++)
        tm_set(m, &m->shown[i], 0);
    for (size_t i = 0; i < m->npending; i++)
        tm_set(m, &m->pending[i], (double)m->pending[i].n);
    memcpy(m->shown, m->pending, m->npending * sizeof(m->pending[0]));
    m->nshown = m->npending;
    int64_t now = srv_task_now_ms();
    double age = oldest_ms > 0 && oldest_ms < now ? (double)(now - oldest_ms) / 1000.0 : 0.0;
    srv_met_labels_set(m->met->family[SRV_MET_TASK_OLDEST_QUEUED], NULL, age);
}

static void tm_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_task_metrics *m = w->data;
    m->npending = 0;
    (void)srv_tasks_counts(m->t, tm_count, tm_counted, m);
}

int srv_tasks_metrics_set(struct srv_tasks *t, const struct srv_met_server *met)
{
    struct srv_task_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->t = t;
    m->met = met;
    struct {
        enum srv_met_family_id id;
        srv_met_value_fn *fn;
    } cbs[] = {{SRV_MET_TASK_ATTEMPTS, tm_attempts}, {SRV_MET_TASK_RETRIES, tm_retries},
               {SRV_MET_TASK_STALE, tm_stale},       {SRV_MET_TASK_LEASE_EXPIRED, tm_expired},
               {SRV_MET_TASK_PURGED, tm_purged},     {SRV_MET_TASK_FSYNCS, tm_fsyncs}};
    for (size_t i = 0; i < sizeof(cbs) / sizeof(cbs[0]); i++) {
        int rc = srv_met_series_fn(met->family[cbs[i].id], NULL, cbs[i].fn, t);
        if (rc != 0) {
            free(m);
            return rc;
        }
    }
    t->metrics = m;
    if (t->store != NULL) {
        ev_timer_init(&m->timer, tm_timer_cb, 0.0, TM_REFRESH_S);
        m->timer.data = m;
        ev_timer_start(t->loop, &m->timer);
    }
    return 0;
}

void srv_tasks_metrics_stop(struct srv_tasks *t)
{
    if (t->metrics != NULL)
        ev_timer_stop(t->loop, &t->metrics->timer);
}

void srv_tasks_metrics_free(struct srv_tasks *t)
{
    free(t->metrics);
    t->metrics = NULL;
}
