/* task_metrics.c - the durable tasks' metric families: counters read at render time, the
 * store's commit latency, and the tasks by state and kind and the waiting tasks by tenant
 * refreshed from the store.
 *
 * Design: counters owned by the runner or the store thread (atomics) are callback series, read
 * when /metrics renders. The commit histogram is fed once per transaction by the store's
 * on_commit hook on the loop thread. Counting tasks by state and kind needs the store, so a 2 s
 * timer asks the store thread (SRV_TASK_OP_COUNTS); its count callback runs on that thread and
 * only fills a buffer of this object, which the done callback (loop thread) turns into gauges:
 * the registry is never touched off the loop. A (state, kind) pair seen before and gone now is
 * set to 0.
 *
 * Waiting tasks by tenant (spindle_tasks_queued{tenant}): tenants are as many as clients name,
 * so the store answers the TM_TENANTS_TOP with the most and the others' sum, which goes to
 * tenant="other" together with any tenant the family has no room for (its overflow series, the
 * same label set). A tenant that left the top is set to 0, as a gone (state, kind) pair.
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

#define TM_REFRESH_S   2.0
#define TM_MAX_PAIRS   (SRV_TASK_STATE__COUNT * 32)
#define TM_TENANTS_TOP 20 /* spindle_tasks_queued's named tenants (metrics.c's help says 20) */

struct tm_pair {
    enum srv_task_state state;
    char kind[SRV_TASK_KIND_MAX + 1];
    uint64_t n;
};

struct tm_tenant {
    char tenant[CTX_TENANT_MAX + 1];
    uint64_t n;
};

struct srv_task_metrics {
    struct srv_tasks *t;
    const struct srv_met_server *met;
    ev_timer timer;
    struct tm_pair shown[TM_MAX_PAIRS], pending[TM_MAX_PAIRS];
    size_t nshown, npending;
    struct tm_tenant tshown[TM_TENANTS_TOP], tpending[TM_TENANTS_TOP];
    size_t ntshown, ntpending;
    uint64_t tother; /* the pending count's tenants beyond the top */
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

/* Store thread: one tenant's waiting tasks (NULL: the others'). */
static void tm_tenant_count(const char *tenant, uint64_t n, void *arg)
{
    struct srv_task_metrics *m = arg;
    if (tenant == NULL || m->ntpending == TM_TENANTS_TOP) {
        m->tother += n;
        return;
    }
    struct tm_tenant *p = &m->tpending[m->ntpending++];
    snprintf(p->tenant, sizeof(p->tenant), "%s", tenant);
    p->n = n;
}

/* Loop thread: the tenants counted replace the ones shown. */
static void tm_tenants_show(struct srv_task_metrics *m)
{
    struct srv_met_family *f = m->met->family[SRV_MET_TASKS_QUEUED];
    struct srv_met_series *other = srv_met_series_get(f, (const char *const[]){SRV_MET_OTHER});
    for (size_t i = 0; i < m->ntshown; i++)
        srv_met_labels_set(f, (const char *const[]){m->tshown[i].tenant}, 0);
    m->ntshown = 0;
    uint64_t rest = m->tother;
    for (size_t i = 0; i < m->ntpending; i++) {
        const struct tm_tenant *p = &m->tpending[i];
        struct srv_met_series *s = srv_met_series_get(f, (const char *const[]){p->tenant});
        if (s == other) { /* "other" itself, or no room left for one more tenant */
            rest += p->n;
            continue;
        }
        srv_met_set(s, (double)p->n);
        if (s != NULL)
            m->tshown[m->ntshown++] = *p;
    }
    srv_met_set(other, (double)rest);
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
    tm_tenants_show(m);
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
    m->ntpending = 0;
    m->tother = 0;
    (void)srv_tasks_counts(m->t, tm_count, tm_tenant_count, TM_TENANTS_TOP, tm_counted, m);
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
