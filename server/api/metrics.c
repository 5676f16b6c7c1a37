/* metrics.c - GET /metrics: the registry rendered in the Prometheus text format, the
 * figures read at scrape time, and the loop's lag and utilisation.
 *
 * Design: struct srv_mroute owns the registry and three libev watchers on the loop. Figures
 * owned elsewhere (pool, admission, HTTP server, logger) are attached as render-time callbacks,
 * so they cost nothing between scrapes and are never stale. The one exception is the "other"
 * series of the per-tenant queue depth: a label set of only "other" is the family's overflow
 * series, which cannot carry a callback, so the handler sets it (total queued minus the
 * configured tenants' queues) just before rendering.
 *
 * Loop measurements: the lag timer is re-armed by hand each tick with the loop time it is meant
 * to fire at; ev_time() at the callback minus that time is how late the loop came round to it
 * (a handler that blocked, a burst of work). The idle time between ev_prepare (last watcher
 * before the loop blocks: lowest priority) and ev_check (first after: highest priority) gives
 * the busy share. Both are folded into windows of SRV_MROUTE_WINDOW_MS: the gauges show the
 * last complete window, so one scrape sees a stable figure. The tick also sweeps idle tenants
 * out of the admission table once a window, which keeps its memory at what is in use rather
 * than at max_tenants.
 *
 * The process_* families read /proc once per scrape (server/metrics/process.h) into a snapshot
 * their callbacks return; spindle_build_info is one series set to 1 at creation.
 *
 * Threads: everything on the loop thread (the registry asserts it). The watchers are ev_unref'd
 * so they never keep ev_run going; each is ev_ref'd again just before it is stopped, as libev
 * requires.
 */
#include "server/api/metrics.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "server/auth/auth.h"
#include "server/config.h"
#include "server/http/http.h"
#include "server/http/request.h"
#include "server/http/route.h"
#include "server/metrics/process.h"
#include "server/version.h"

struct srv_mroute {
    struct ev_loop *loop;
    struct srv_http *h;
    struct pool *pool;
    struct srv_adm *adm;
    struct srv_met *reg;
    struct srv_met_server fam;

    /* configured tenants, for the queue depth series (names borrowed from here) */
    char (*tenants)[SRV_ADM_TENANT_MAX + 1];
    unsigned ntenants;

    ev_timer tick;
    ev_prepare prepare;
    ev_check check;
    bool started;
    ev_tstamp tick_due;    /* loop time the tick was armed for */
    uint64_t prepare_ns;   /* ctx_now_ns() at the last ev_prepare, 0 when not blocked */
    uint64_t window_start; /* ctx_now_ns() at the start of the current window */
    uint64_t idle_ns;      /* idle time in the current window */
    double lag_max;        /* largest lag in the current window (s) */
    double lag_pub;        /* ... of the last complete window */
    double util_pub;       /* busy share of the last complete window */

    struct srv_met_process proc; /* process_* figures, read just before each render */

    struct srv_auth *auth; /* NULL until srv_mroute_auth_set */
    struct mr_auth_arg {
        struct srv_mroute *m;
        enum srv_auth_result reason;
    } auth_args[4];
};

/* The callback argument of a per-tenant queue depth series. */
struct mr_tenant_arg {
    struct srv_mroute *m;
    unsigned i;
};

/* ---- the loop watchers ----------------------------------------------------------------------- */

static void mr_window_close(struct srv_mroute *m, uint64_t now)
{
    uint64_t len = now - m->window_start;
    double idle = m->idle_ns < len ? (double)m->idle_ns : (double)len;
    m->util_pub = len > 0 ? 1.0 - idle / (double)len : 0;
    m->lag_pub = m->lag_max;
    m->lag_max = 0;
    m->idle_ns = 0;
    m->window_start = now;
    if (m->adm != NULL)
        (void)srv_adm_sweep(m->adm, now);
}

static void mr_tick_arm(struct srv_mroute *m)
{
    ev_tstamp period = SRV_MROUTE_TICK_MS / 1000.0;
    /* ev_now is the time this loop iteration started; libev schedules from it. */
    m->tick_due = ev_now(m->loop) + period;
    ev_timer_set(&m->tick, period, 0.0);
    ev_timer_start(m->loop, &m->tick);
}

static void mr_tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct srv_mroute *m = w->data;
    double lag = ev_time() - m->tick_due;
    if (lag > m->lag_max)
        m->lag_max = lag;
    uint64_t now = ctx_now_ns();
    if (now - m->window_start >= (uint64_t)SRV_MROUTE_WINDOW_MS * 1000000u)
        mr_window_close(m, now);
    ev_ref(loop); /* started unref'd: keep libev's count right across the restart */
    mr_tick_arm(m);
    ev_unref(loop);
}

static void mr_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_mroute *m = w->data;
    m->prepare_ns = ctx_now_ns();
}

static void mr_check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_mroute *m = w->data;
    if (m->prepare_ns == 0)
        return;
    uint64_t now = ctx_now_ns();
    /* Idle time before the window started belongs to the previous window. */
    uint64_t from = m->prepare_ns > m->window_start ? m->prepare_ns : m->window_start;
    if (now > from)
        m->idle_ns += now - from;
    m->prepare_ns = 0;
}

static void mr_watchers_start(struct srv_mroute *m)
{
    m->window_start = ctx_now_ns();
    ev_init(&m->tick, mr_tick_cb);
    m->tick.data = m;
    mr_tick_arm(m);
    ev_unref(m->loop);
    ev_prepare_init(&m->prepare, mr_prepare_cb);
    m->prepare.data = m;
    ev_set_priority(&m->prepare, EV_MINPRI);
    ev_prepare_start(m->loop, &m->prepare);
    ev_unref(m->loop);
    ev_check_init(&m->check, mr_check_cb);
    m->check.data = m;
    ev_set_priority(&m->check, EV_MAXPRI);
    ev_check_start(m->loop, &m->check);
    ev_unref(m->loop);
    m->started = true;
}

static void mr_watchers_stop(struct srv_mroute *m)
{
    if (!m->started)
        return;
    ev_ref(m->loop);
    ev_timer_stop(m->loop, &m->tick);
    ev_ref(m->loop);
    ev_prepare_stop(m->loop, &m->prepare);
    ev_ref(m->loop);
    ev_check_stop(m->loop, &m->check);
    m->started = false;
}

/* ---- render-time figures --------------------------------------------------------------------- */

static double mr_queue_depth(void *arg)
{
    struct srv_mroute *m = arg;
    struct pool_stats st = {0};
    if (m->pool != NULL)
        pool_stats_get(m->pool, &st);
    return (double)st.queued;
}

static double mr_queue_capacity(void *arg)
{
    struct srv_mroute *m = arg;
    struct pool_stats st = {0};
    if (m->pool != NULL)
        pool_stats_get(m->pool, &st);
    return (double)st.capacity;
}

static double mr_tenant_queued(void *arg)
{
    struct mr_tenant_arg *a = arg;
    struct srv_mroute *m = a->m;
    return m->pool != NULL ? (double)pool_tenant_queued(m->pool, m->tenants[a->i]) : 0;
}

static double mr_inflight(void *arg)
{
    struct srv_mroute *m = arg;
    struct srv_adm_stats st = {0};
    if (m->adm != NULL)
        srv_adm_stats_get(m->adm, &st);
    return (double)st.inflight;
}

static double mr_open_connections(void *arg)
{
    struct srv_http_stats st;
    srv_http_stats_get(arg, &st);
    return st.open;
}

static double mr_log_lines(void *arg)
{
    (void)arg;
    struct log_stats st;
    log_stats_get(&st);
    return (double)st.lines;
}

static double mr_log_waits(void *arg)
{
    (void)arg;
    struct log_stats st;
    log_stats_get(&st);
    return (double)st.waits;
}

static double mr_log_dropped(void *arg)
{
    (void)arg;
    struct log_stats st;
    log_stats_get(&st);
    return (double)st.dropped;
}

static double mr_log_write_errors(void *arg)
{
    (void)arg;
    struct log_stats st;
    log_stats_get(&st);
    return (double)st.errors;
}

static double mr_log_lost(void *arg)
{
    (void)arg;
    struct log_stats st;
    log_stats_get(&st);
    return (double)st.lost;
}

static double mr_loop_lag(void *arg)
{
    const struct srv_mroute *m = arg;
    return m->lag_pub;
}

static double mr_loop_util(void *arg)
{
    const struct srv_mroute *m = arg;
    return m->util_pub;
}

/* The process_* figures: one /proc read per scrape (mr_handle), one callback per family. */
#define MR_PROC_FN(field)                                                                          \
    static double mr_proc_##field(void *arg)                                                       \
    {                                                                                              \
        const struct srv_mroute *m = arg;                                                          \
        return m->proc.field;                                                                      \
    }
MR_PROC_FN(cpu_seconds)
MR_PROC_FN(resident_bytes)
MR_PROC_FN(virtual_bytes)
MR_PROC_FN(open_fds)
MR_PROC_FN(max_fds)
MR_PROC_FN(start_time)

/* Jobs queued for tenants without a section: the "other" series (see the design note). */
static void mr_other_queued_set(struct srv_mroute *m)
{
    if (m->pool == NULL)
        return;
    struct pool_stats st;
    pool_stats_get(m->pool, &st);
    uint64_t configured = 0;
    for (unsigned i = 0; i < m->ntenants; i++)
        configured += pool_tenant_queued(m->pool, m->tenants[i]);
    /* Separate reads of a moving queue: never let the difference go below 0. */
    double other = st.queued > configured ? (double)(st.queued - configured) : 0;
    srv_met_labels_set(m->fam.family[SRV_MET_TENANT_QUEUE_DEPTH],
                       (const char *const[]){SRV_ADM_OTHER_LABEL}, other);
}

static int mr_callbacks_add(struct srv_mroute *m, struct mr_tenant_arg *targs)
{
    const struct srv_met_server *f = &m->fam;
    struct {
        struct srv_met_family *fam;
        srv_met_value_fn *fn;
        void *arg;
    } cbs[] = {
        {f->family[SRV_MET_QUEUE_DEPTH], mr_queue_depth, m},
        {f->family[SRV_MET_INFLIGHT], mr_inflight, m},
        {f->family[SRV_MET_OPEN_CONNECTIONS], mr_open_connections, m->h},
        {f->family[SRV_MET_LOG_LINES], mr_log_lines, NULL},
        {f->family[SRV_MET_LOG_WAITS], mr_log_waits, NULL},
        {f->family[SRV_MET_LOG_DROPPED], mr_log_dropped, NULL},
        {f->family[SRV_MET_LOG_WRITE_ERRORS], mr_log_write_errors, NULL},
        {f->family[SRV_MET_LOG_LOST], mr_log_lost, NULL},
        {f->family[SRV_MET_LOOP_LAG], mr_loop_lag, m},
        {f->family[SRV_MET_LOOP_UTILIZATION], mr_loop_util, m},
        {f->family[SRV_MET_PROCESS_CPU], mr_proc_cpu_seconds, m},
        {f->family[SRV_MET_PROCESS_RESIDENT], mr_proc_resident_bytes, m},
        {f->family[SRV_MET_PROCESS_VIRTUAL], mr_proc_virtual_bytes, m},
        {f->family[SRV_MET_PROCESS_OPEN_FDS], mr_proc_open_fds, m},
        {f->family[SRV_MET_PROCESS_MAX_FDS], mr_proc_max_fds, m},
        {f->family[SRV_MET_PROCESS_START_TIME], mr_proc_start_time, m},
        {f->family[SRV_MET_QUEUE_CAPACITY], mr_queue_capacity, m},
    };
    for (size_t i = 0; i < sizeof(cbs) / sizeof(cbs[0]); i++) {
        int rc = srv_met_series_fn(cbs[i].fam, NULL, cbs[i].fn, cbs[i].arg);
        if (rc != 0)
            return rc;
    }
    for (unsigned i = 0; i < m->ntenants; i++) {
        targs[i] = (struct mr_tenant_arg){m, i};
        const char *const values[] = {m->tenants[i]};
        int rc = srv_met_series_fn(f->family[SRV_MET_TENANT_QUEUE_DEPTH], values, mr_tenant_queued,
                                   &targs[i]);
        if (rc != 0)
            return rc;
    }
    mr_other_queued_set(m); /* so the series exists from the first scrape */
    srv_met_labels_set(f->family[SRV_MET_BUILD_INFO],
                       (const char *const[]){srv_version, srv_commit}, 1);
    return 0;
}

static double mr_auth_failures(void *arg)
{
    const struct mr_auth_arg *a = arg;
    struct srv_auth_stats st;
    srv_auth_stats_get(a->m->auth, ctx_now_ns(), &st);
    return (double)st.failures[a->reason];
}

static double mr_auth_throttled(void *arg)
{
    const struct srv_mroute *m = arg;
    struct srv_auth_stats st;
    srv_auth_stats_get(m->auth, ctx_now_ns(), &st);
    return st.throttled;
}

int srv_mroute_auth_set(struct srv_mroute *m, struct srv_auth *auth)
{
    static const enum srv_auth_result reasons[] = {SRV_AUTH_MISSING, SRV_AUTH_INVALID,
                                                   SRV_AUTH_FORBIDDEN, SRV_AUTH_THROTTLED};
    m->auth = auth;
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        m->auth_args[i] = (struct mr_auth_arg){m, reasons[i]};
        const char *const values[] = {srv_auth_result_name(reasons[i])};
        int rc = srv_met_series_fn(m->fam.family[SRV_MET_AUTH_FAILURES], values, mr_auth_failures,
                                   &m->auth_args[i]);
        if (rc != 0)
            return rc;
    }
    return srv_met_series_fn(m->fam.family[SRV_MET_AUTH_THROTTLED], NULL, mr_auth_throttled, m);
}

/* ---- the route ------------------------------------------------------------------------------- */

/* Requests by route and status, for every route: counted when the access line is due. */
static void mr_answered(const char *route, int status, void *arg)
{
    struct srv_mroute *m = arg;
    srv_met_http_request(&m->fam, route, status);
}

static void mr_handle(struct srv_req *req)
{
    struct srv_mroute *m = srv_req_route_arg(req);
    struct srv_met_buf b = {0};
    mr_other_queued_set(m);
    /* A failed read leaves the figures it could not read at 0; the scrape still answers. */
    (void)srv_met_process_read(&m->proc);
    if (srv_met_render(m->reg, &b) != 0) {
        srv_met_buf_fini(&b);
        (void)srv_req_answer_error(req, 503, "out_of_memory", "out of memory");
        return;
    }
    (void)srv_req_answer_take(req, 200, SRV_MET_CONTENT_TYPE, b.data, b.len);
}

/* The configured tenants' names, copied (the configuration is not kept). */
static int mr_tenants_copy(struct srv_mroute *m, const struct srv_cfg *cfg)
{
    if (cfg == NULL || cfg->tenant_count == 0)
        return 0;
    m->tenants = calloc(cfg->tenant_count, sizeof(m->tenants[0]));
    if (m->tenants == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < cfg->tenant_count; i++)
        memcpy(m->tenants[i], cfg->tenants[i].name, sizeof(m->tenants[i]));
    m->ntenants = cfg->tenant_count;
    return 0;
}

/* The tenant callback arguments live right after the object (one allocation). */
static struct mr_tenant_arg *mr_targs(struct srv_mroute *m)
{
    return (struct mr_tenant_arg *)(m + 1);
}

struct srv_mroute *srv_mroute_new(struct ev_loop *loop, struct srv_http *h, struct pool *pool,
                                  struct srv_adm *adm, const struct srv_cfg *cfg)
{
    unsigned n = cfg != NULL ? cfg->tenant_count : 0;
    struct srv_mroute *m = calloc(1, sizeof(*m) + n * sizeof(struct mr_tenant_arg));
    int rc = -ENOMEM;
    if (m == NULL)
        goto fail;
    m->loop = loop;
    m->h = h;
    m->pool = pool;
    m->adm = adm;
    m->reg = srv_met_new();
    if (m->reg == NULL || mr_tenants_copy(m, cfg) != 0)
        goto fail;
    rc = srv_met_server_init(&m->fam, m->reg);
    if (rc == 0)
        rc = mr_callbacks_add(m, mr_targs(m));
    if (rc == 0)
        rc = srv_http_route_add(h, "GET", SRV_MROUTE_PATH, mr_handle, m);
    if (rc == 0) /* [auth] metrics_token when set; the admin listener when there is one */
        rc = srv_http_route_access_set(h, SRV_MROUTE_PATH, SRV_AUTH_OPERATOR);
    if (rc != 0)
        goto fail;
    srv_http_on_answered(h, mr_answered, m);
    mr_watchers_start(m);
    return m;
fail:
    LOG_E("metrics route", LOG_STR("error", strerror(-rc)));
    srv_mroute_free(m);
    return NULL;
}

void srv_mroute_free(struct srv_mroute *m)
{
    if (m == NULL)
        return;
    mr_watchers_stop(m);
    srv_met_free(m->reg);
    free(m->tenants);
    free(m);
}

const struct srv_met_server *srv_mroute_families(const struct srv_mroute *m)
{
    return &m->fam;
}

void srv_mroute_loop_stats(const struct srv_mroute *m, double *lag_s, double *utilization)
{
    *lag_s = m->lag_pub;
    *utilization = m->util_pub;
}
