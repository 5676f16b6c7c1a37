/* server.c - the process: one libev loop with the HTTP server, signals and the stop sequence.
 *
 * Design: srv_run() runs on the calling thread, which becomes the loop thread ("loop"). It makes
 * the server's root context (parent of every request context), the HTTP server with its routes
 * and listeners, and ev_signal watchers (signalfd: main blocked every signal before any thread was
 * made, so signals reach the process only through the loop). The stop sequence:
 *   SIGTERM/SIGINT  announce (shutdown.announce_ms, when not 0): readyz 503 while everything else
 *                   is served as usual, so a load balancer's health check takes the instance out
 *                   before its listeners close; then
 *   announce timer  drain: stop accepting, readyz 503, answers close their connection; idle
 *                   keep-alive connections stay open (a request may be on the wire) and are
 *                   served; the loop ends when the last connection is gone;
 *   drain timer     (shutdown.drain_timeout_ms) what is still in a handler is cancelled and
 *                   answered 503 shutting_down, idle connections close; then write_timeout_ms
 *                   more for those answers;
 *   second signal   the same at once, with RUN_SECOND_GRACE_S for the answers;
 *   end of a grace  every connection closes at once.
 * After the loop, pool_stop, the frees, and the summary line "spindle stopped" (requests drained,
 * jobs cancelled, drain and run durations), which is the last line: the stop and reload signals
 * are ignored from the end of the loop on (a late one must not kill the process before the log is
 * flushed by main's log_stop), and no other thread is left to log.
 * SIGHUP reloads the configuration file (server/reload.c: live keys applied, the rest reported)
 * and reopens the log; SIGUSR1 only reopens the log (logrotate). The running configuration is
 * the loop's own copy, updated by each reload.
 * systemd (server/sdnotify.c): READY=1 once listening, STOPPING=1 when the drain begins,
 * RELOADING=1/READY=1 around a reload, STATUS= with connections and requests in flight, watchdog
 * pings; listening sockets passed by socket activation replace [server] listen. Without systemd
 * in the environment none of it does anything.
 * File descriptors: at start the soft RLIMIT_NOFILE is raised to the hard limit, and
 * max_connections is bounded by what it leaves after SRV_HTTP_NOFILE_RESERVE (a warning names the
 * numbers), so the connection limit answers 503 before accept(2) could fail with EMFILE.
 * Credentials (server/auth/auth.h): one authenticator decides every request's tenant; a reload
 * swaps its keys. At start, what the server really listens on (socket activation included) is
 * checked against [auth] mode: mode = keys on a non-loopback address without a TLS front end
 * (trusted_proxies) or allow_plaintext refuses to start (exit 2), mode = none there is a warning.
 * [server] admin_listen adds a listener for the operator routes (GET /metrics) on the same loop.
 * The worker pool runs the job routes' work (server/api/jobs.c), behind admission control
 * (server/admission/admission.h, limits from the configuration); GET /metrics
 * (server/api/metrics.c) reports on all of it. Admission and the metrics are made after the pool
 * and freed after pool_stop, whose last done callbacks still release into them. It outlives the
 * loop run: after ev_run, pool_stop (bounded by the drain deadline) runs the last done callbacks,
 * which answer or release every request still held by a job handler; only then may srv_http_free
 * run (it requires every handler to have answered), and the job routes and the pool are freed after
 * it.
 */
#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "pool/pool.h"
#include "server/admission/admission.h"
#include "server/http/http.h"
#include "server/api/api.h"
#include "server/api/metrics.h"
#include "server/auth/auth.h"
#include "server/api/schedules.h"
#include "server/api/tasks.h"
#include "server/jobs/jobs.h"
#include "server/reload.h"
#include "server/sdnotify.h"
#include "server/server.h"
#include "server/version.h"

#define RUN_SECOND_GRACE_S 0.5 /* after a second stop signal: for the 503 answers to go out */
/* The loop waits at most this long for log buffer space; then the line is lost (counted and
 * reported by the logger), so a stalled log sink never stops health checks, refusals or a stop. */
#define RUN_LOG_WAIT_NS 5000000u

struct srv_run_state {
    struct ev_loop *loop;
    struct srv_http *http;
    struct pool *pool;
    struct srv_jobroute *jobs;
    struct srv_tasks *tasks;    /* durable tasks: the store, the runner, /v1/tasks */
    struct srv_sched *sched;    /* [schedule.NAME] timers and GET /v1/schedules */
    struct srv_adm *adm;        /* admission in front of the pool (server/admission/admission.h) */
    struct srv_mroute *metrics; /* GET /metrics and the loop figures */
    struct srv_auth *auth;      /* who each request is (server/auth/auth.h) */
    struct srv_sd *sd;          /* systemd notifications (inert without systemd) */
    struct srv_cfg *cfg;        /* the running configuration (updated by reloads) */
    const char *config_path;    /* re-read on SIGHUP; NULL when running on the defaults */
    const struct srv_cfg_override *overrides; /* the command line's, applied after each re-read */
    size_t noverrides;
    uint64_t drain_deadline_ns; /* pool_stop's bound: the end of the drain period */
    uint64_t drain_start_ns;    /* when the first stop signal came (0: none) */
    ev_signal sig_int, sig_term, sig_hup, sig_usr1;
    ev_timer drain_timer; /* the announce period, then the drain period, then the grace */
    int stop_signals;
    bool announcing; /* the stop was announced and the drain has not begun */
    bool final_phase;
    unsigned long nofile; /* the soft open file limit after raising it (0: unknown/unlimited) */
};

static void run_drained(struct srv_http *h, void *arg)
{
    (void)h;
    struct srv_run_state *st = arg;
    ev_break(st->loop, EVBREAK_ALL);
}

/* End of the drain period (or a second signal): cancel and answer what is left, then give the
 * answers `grace_s` before the drain timer closes everything. */
static void run_cancel_all(struct srv_run_state *st, double grace_s)
{
    st->final_phase = true;
    st->drain_deadline_ns = ctx_now_ns(); /* pool_stop: no more waiting */
    srv_http_cancel_all(st->http, CTX_REASON_SHUTDOWN);
    ev_timer_stop(st->loop, &st->drain_timer);
    ev_timer_set(&st->drain_timer, grace_s, 0.0);
    ev_timer_start(st->loop, &st->drain_timer);
}

/* The drain: the listeners close, answers close their connections, and in-flight work may finish
 * within shutdown.drain_timeout_ms (read now: a reload during the announce period counts). */
static void run_drain_begin(struct srv_run_state *st)
{
    const struct srv_cfg *cfg = srv_http_cfg(st->http);
    if (st->announcing)
        LOG_I("announce period over: draining", LOG_UINT("announce_ms", cfg->announce_ms));
    st->announcing = false;
    st->drain_start_ns = ctx_now_ns();
    st->drain_deadline_ns = st->drain_start_ns + (uint64_t)cfg->drain_timeout_ms * 1000000u;
    ev_timer_stop(st->loop, &st->drain_timer);
    ev_timer_set(&st->drain_timer, cfg->drain_timeout_ms / 1000.0, 0.0);
    ev_timer_start(st->loop, &st->drain_timer);
    srv_sched_stop(st->sched);  /* no more ticks */
    srv_tasks_drain(st->tasks); /* no more claims; long-polls answered now */
    srv_http_drain(st->http, run_drained, st);
}

static void run_drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct srv_run_state *st = w->data;
    if (st->announcing) {
        run_drain_begin(st);
        return;
    }
    if (!st->final_phase) {
        struct srv_http_stats stats;
        srv_http_stats_get(st->http, &stats);
        if (stats.pending > 0)
            LOG_W("drain timeout: cancelling requests in flight",
                  LOG_UINT("connections", stats.open), LOG_UINT("pending", stats.pending));
        else
            LOG_I("drain period over: closing idle connections",
                  LOG_UINT("connections", stats.open));
        unsigned grace = srv_http_cfg(st->http)->write_timeout_ms;
        run_cancel_all(st, (grace ? grace : 1000) / 1000.0);
        return;
    }
    LOG_W("closing the remaining connections", LOG_STR("reason", "drain grace over"));
    srv_http_close_all(st->http, CTX_REASON_SHUTDOWN);
    ev_break(loop, EVBREAK_ALL);
}

static void run_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct srv_run_state *st = w->data;
    if (st->stop_signals++ > 0) {
        if (st->final_phase) {
            LOG_W("stop signal again: closing every connection now",
                  LOG_STR("signal", strsignal(w->signum)));
            srv_http_close_all(st->http, CTX_REASON_SHUTDOWN);
            ev_break(loop, EVBREAK_ALL);
            return;
        }
        LOG_W("second stop signal: cancelling everything now",
              LOG_STR("signal", strsignal(w->signum)));
        if (st->announcing)
            run_drain_begin(st);
        run_cancel_all(st, RUN_SECOND_GRACE_S);
        return;
    }
    const struct srv_cfg *cfg = srv_http_cfg(st->http);
    LOG_I("stopping", LOG_STR("signal", strsignal(w->signum)),
          LOG_UINT("announce_ms", cfg->announce_ms),
          LOG_UINT("drain_timeout_ms", cfg->drain_timeout_ms));
    srv_sd_stopping(st->sd); /* before the drain: it may end the loop at once */
    if (cfg->announce_ms == 0) {
        run_drain_begin(st);
        return;
    }
    st->announcing = true;
    srv_http_announce(st->http);
    ev_timer_set(&st->drain_timer, cfg->announce_ms / 1000.0, 0.0);
    ev_timer_start(loop, &st->drain_timer);
}

static void run_reopen_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    int rc = log_reopen();
    if (rc != 0)
        LOG_E("log reopen failed", LOG_STR("path", log_path()), LOG_STR("error", strerror(-rc)));
    else
        LOG_I("log reopened", LOG_STR("signal", strsignal(w->signum)));
}

static void run_reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_run_state *st = w->data;
    if (st->config_path == NULL) {
        int rc = log_reopen();
        LOG_I("reload: no configuration file (running on the defaults); log reopened",
              LOG_STR("error", rc != 0 ? strerror(-rc) : NULL));
        return;
    }
    srv_sd_reloading(st->sd);
    struct srv_reload_target t = {.http = st->http,
                                  .adm = st->adm,
                                  .auth = st->auth,
                                  .sched = st->sched,
                                  .overrides = st->overrides,
                                  .noverrides = st->noverrides};
    (void)srv_reload(st->config_path, st->cfg, &t); /* logs what it did, or why not */
    srv_sd_ready(st->sd);
}

static void run_signals_start(struct srv_run_state *st)
{
    struct {
        ev_signal *w;
        int sig;
        void (*cb)(struct ev_loop *, ev_signal *, int);
    } sigs[] = {{&st->sig_int, SIGINT, run_stop_cb},
                {&st->sig_term, SIGTERM, run_stop_cb},
                {&st->sig_hup, SIGHUP, run_reload_cb},
                {&st->sig_usr1, SIGUSR1, run_reopen_cb}};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        ev_signal_init(sigs[i].w, sigs[i].cb, sigs[i].sig);
        sigs[i].w->data = st;
        ev_signal_start(st->loop, sigs[i].w);
    }
}

/* The loop is over: ignore these signals from now on (a pending one is discarded), so that a late
 * one neither kills the process before the summary is logged and flushed nor is acted on. Ignored
 * before the watchers stop, since stopping one unblocks its signal; again after, in case libev
 * restored the default action (when it runs without signalfd). */
static void run_signals_stop(struct srv_run_state *st)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        (void)sigaction(sigs[i], &ign, NULL);
    ev_signal_stop(st->loop, &st->sig_int);
    ev_signal_stop(st->loop, &st->sig_term);
    ev_signal_stop(st->loop, &st->sig_hup);
    ev_signal_stop(st->loop, &st->sig_usr1);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        (void)sigaction(sigs[i], &ign, NULL);
}

static void run_sd_status(char *buf, size_t size, void *arg)
{
    struct srv_run_state *st = arg;
    struct srv_http_stats stats;
    srv_http_stats_get(st->http, &stats);
    snprintf(buf, size, "%s: %u connections, %u requests in flight",
             srv_http_draining(st->http) ? "draining" : "serving", stats.open, stats.pending);
}

/* Raise the soft open file limit to the hard one (systemd and shells often start with 1024),
 * then bound max_connections by what the limit leaves after SRV_HTTP_NOFILE_RESERVE, with a
 * warning naming both limits when it must be lowered. Returns the soft limit in force. */
static unsigned long run_nofile_fit(struct srv_http *h)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    rlim_t from = rl.rlim_cur;
    if (rl.rlim_cur != rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            LOG_W("cannot raise the open file limit", LOG_UINT("nofile", rl.rlim_cur),
                  LOG_UINT("nofile_hard", rl.rlim_max), LOG_STR("error", strerror(errno)));
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return 0;
    unsigned long soft = rl.rlim_cur;
    unsigned long cap =
        soft > 2 * SRV_HTTP_NOFILE_RESERVE ? soft - SRV_HTTP_NOFILE_RESERVE : soft / 2;
    const struct srv_cfg *cfg = srv_http_cfg(h);
    if (cfg->max_connections > cap) {
        LOG_W("open file limit too low for max_connections: lowering it",
              LOG_UINT("max_connections", cfg->max_connections), LOG_UINT("lowered_to", cap),
              LOG_UINT("nofile", soft), LOG_UINT("nofile_hard", rl.rlim_max),
              LOG_UINT("nofile_at_start", from), LOG_UINT("reserve", SRV_HTTP_NOFILE_RESERVE));
    }
    srv_http_conn_cap_set(h, cap > UINT_MAX ? UINT_MAX : (unsigned)(cap ? cap : 1));
    return soft;
}

/* `workers` is the effective count (a configured 0 means one per online CPU). `listen` is what
 * the server really serves (bound ports, inherited sockets), not the configuration's text. */
static void run_log_started(struct srv_http *h, unsigned workers, unsigned long nofile)
{
    const struct srv_cfg *cfg = srv_http_cfg(h);
    char listen[1024];
    (void)srv_http_listen_addrs(h, listen, sizeof(listen));
    char task_store[SRV_CFG_PATH_MAX];
    srv_task_store_where(cfg->task_store, task_store, sizeof(task_store));
    LOG_I("spindle started", LOG_STR("version", srv_version), LOG_STR("commit", srv_commit),
          LOG_STR("listen", listen), LOG_UINT("workers", workers),
          LOG_UINT("queue_capacity", cfg->queue_capacity),
          LOG_UINT("max_connections", cfg->max_connections), LOG_UINT("nofile", nofile),
          LOG_STR("log_level", log_level_name(cfg->log_level)),
          LOG_BOOL("log_access", cfg->log_access),
          LOG_UINT("header_timeout_ms", cfg->header_timeout_ms),
          LOG_UINT("idle_timeout_ms", cfg->idle_timeout_ms),
          LOG_UINT("max_body_bytes", cfg->max_body_bytes),
          LOG_UINT("default_timeout_ms", cfg->default_timeout_ms),
          LOG_UINT("drain_timeout_ms", cfg->drain_timeout_ms),
          LOG_UINT("max_tenants", cfg->max_tenants), LOG_UINT("tenants", cfg->tenant_count),
          LOG_STR("auth_mode", cfg->auth_mode == SRV_CFG_AUTH_KEYS    ? "keys"
                               : cfg->auth_mode == SRV_CFG_AUTH_PROXY ? "proxy"
                                                                      : "none"),
          LOG_STR("task_store", task_store),
          LOG_STR("config", cfg->source[0] ? cfg->source : "(defaults)"));
}

/* Admission in front of the job routes and the metrics registry with GET /metrics. */
static int run_admission_start(struct srv_run_state *st, const struct srv_cfg *cfg)
{
    struct pool_stats ps;
    pool_stats_get(st->pool, &ps);
    struct srv_adm_config ac = {cfg->max_tenants, cfg->queue_capacity, ps.workers};
    st->adm = srv_adm_new(&ac, srv_adm_limits_from_cfg(cfg)); /* takes the limits in every case */
    if (st->adm == NULL) {
        LOG_E("start-up failed: admission", LOG_STR("error", strerror(ENOMEM)));
        return -ENOMEM;
    }
    st->metrics = srv_mroute_new(st->loop, st->http, st->pool, st->adm, cfg);
    if (st->metrics == NULL)
        return -ENOMEM; /* logged by srv_mroute_new */
    if (srv_mroute_auth_set(st->metrics, st->auth) != 0) {
        LOG_E("start-up failed: metrics", LOG_STR("error", strerror(ENOMEM)));
        return -ENOMEM;
    }
    srv_jobroute_admission_set(st->jobs, st->adm, srv_mroute_families(st->metrics));
    return 0;
}

/* Socket activation: serve on the sockets systemd passed. Returns how many (0: none passed), or a
 * negative errno after logging it. */
static int run_listen_activated(struct srv_run_state *st)
{
    int first = 0;
    int n = srv_sd_listen_fds(&first);
    if (n < 0) {
        LOG_E("start-up failed: socket activation", LOG_STR("error", strerror(-n)));
        return n;
    }
    if (n > 0)
        LOG_I("socket activation", LOG_UINT("sockets", n), LOG_STR("ignored", "[server] listen"));
    for (int i = 0; i < n; i++) {
        int rc = srv_http_listen_fd(st->http, first + i);
        if (rc != 0) {
            LOG_E("start-up failed: socket activation", LOG_INT("fd", first + i),
                  LOG_STR("error", strerror(-rc)));
            return rc;
        }
    }
    return n;
}

/* What the listeners really bind (socket activation included) against [auth] mode. Returns 0, or
 * -EPERM after logging why the server must not start. */
static int run_listen_check(struct srv_run_state *st, const struct srv_cfg *cfg)
{
    char addrs[1024];
    (void)srv_http_listen_addrs(st->http, addrs, sizeof(addrs));
    for (char *save = NULL, *a = strtok_r(addrs, ",", &save); a != NULL;
         a = strtok_r(NULL, ",", &save)) {
        if (srv_cfg_addr_loopback(a))
            continue;
        if (strcmp(a, cfg->admin_listen) == 0 && cfg->metrics_token.count == 0)
            LOG_W("admin_listen on a non-loopback address without [auth] metrics_token",
                  LOG_STR("addr", a));
        if (cfg->auth_mode == SRV_CFG_AUTH_NONE)
            LOG_W("[auth] mode = none on a non-loopback address: any client may claim any "
                  "tenant with X-Tenant-Id",
                  LOG_STR("addr", a));
        if (cfg->auth_mode == SRV_CFG_AUTH_KEYS && !cfg->allow_plaintext &&
            cfg->trusted_proxies.count == 0) {
            LOG_E("start-up refused: [auth] mode = keys on a non-loopback address would take "
                  "tokens in clear; put a TLS front end before it ([server] trusted_proxies) or "
                  "set [auth] allow_plaintext = yes",
                  LOG_STR("addr", a));
            return -EPERM;
        }
    }
    unsigned nkeys = 0;
    for (unsigned i = 0; i < cfg->tenant_count; i++)
        nkeys += cfg->tenants[i].keys.count;
    if (cfg->auth_mode == SRV_CFG_AUTH_KEYS && nkeys == 0)
        LOG_W("[auth] mode = keys and no [tenant.NAME] has keys: every job request is refused "
              "(spindle keygen --tenant NAME makes one)");
    return 0;
}

static int run_listen(struct srv_run_state *st, const struct srv_cfg *cfg)
{
    int rc = run_listen_activated(st);
    if (rc < 0)
        return rc;
    if (rc == 0 && cfg->listen_count == 0) {
        LOG_E("start-up failed: no listen address", LOG_STR("config", cfg->source));
        return -EINVAL;
    }
    for (unsigned i = 0; rc == 0 && i < cfg->listen_count; i++) {
        int lrc = srv_http_listen(st->http, cfg->listen[i]);
        if (lrc != 0)
            return lrc; /* logged by srv_http_listen */
    }
    if (cfg->admin_listen[0] != '\0') { /* after the others: their "listening" lines come first */
        rc = srv_http_listen_admin(st->http, cfg->admin_listen);
        if (rc != 0)
            return rc; /* logged by srv_http_listen_admin */
    }
    return run_listen_check(st, cfg);
}

static int run_start(struct srv_run_state *st, const struct srv_cfg *cfg, struct ctx *root)
{
    st->http = srv_http_new(st->loop, cfg, root);
    if (st->http == NULL) {
        LOG_E("start-up failed", LOG_STR("error", strerror(ENOMEM)));
        return -ENOMEM;
    }
    st->nofile = run_nofile_fit(st->http);
    st->auth = srv_auth_new(cfg);
    if (st->auth == NULL) {
        LOG_E("start-up failed: authentication", LOG_STR("error", strerror(ENOMEM)));
        return -ENOMEM;
    }
    srv_http_auth_set(st->http, st->auth);
    int rc = srv_health_routes_add(st->http);
    if (rc != 0) {
        LOG_E("start-up failed: routes", LOG_STR("error", strerror(-rc)));
        return rc;
    }
    struct pool_config pc;
    srv_jobroute_pool_config(cfg, &pc);
    st->pool = pool_new(st->loop, &pc);
    if (st->pool == NULL) {
        LOG_E("start-up failed: worker pool", LOG_UINT("workers", cfg->workers));
        return -ENOMEM;
    }
    st->jobs = srv_jobroute_new(st->http, st->pool);
    if (st->jobs == NULL)
        return -ENOMEM; /* logged by srv_jobroute_new */
    rc = run_admission_start(st, cfg);
    if (rc != 0)
        return rc;
    char err[1024];
    st->tasks = srv_tasks_new(st->http, st->jobs, st->pool, root, cfg, err, sizeof(err));
    if (st->tasks == NULL) {
        char where[SRV_CFG_PATH_MAX];
        srv_task_store_where(cfg->task_store, where, sizeof(where));
        LOG_E("start-up failed: task store", LOG_STR("store", where), LOG_STR("error", err));
        return -EIO;
    }
    rc = srv_tasks_metrics_set(st->tasks, srv_mroute_families(st->metrics));
    if (rc != 0) {
        LOG_E("start-up failed: task metrics", LOG_STR("error", strerror(-rc)));
        return rc;
    }
    struct srv_kinds *ks = srv_kinds_current(); /* the kinds main installed */
    rc = srv_sched_check(cfg, ks, err, sizeof(err));
    srv_kinds_unref(ks);
    if (rc != 0) {
        LOG_E("start-up failed: schedules", LOG_STR("error", err));
        return -EINVAL;
    }
    st->sched = srv_sched_new(st->http, st->tasks, cfg);
    if (st->sched == NULL)
        return -ENOMEM; /* logged by srv_sched_new */
    srv_sched_metrics_set(st->sched, srv_mroute_families(st->metrics));
    return run_listen(st, cfg);
}

/* The summary, the last line of the log. */
static void run_log_stopped(const struct srv_http_stats *stats, uint64_t drain_start_ns,
                            uint64_t t0_ns)
{
    uint64_t now = ctx_now_ns();
    LOG_I("spindle stopped", LOG_UINT("requests", stats->requests),
          LOG_UINT("requests_drained", stats->drained),
          LOG_UINT("jobs_cancelled", stats->shutdown_cancelled),
          LOG_UINT("connections", stats->connections), LOG_UINT("rejected", stats->rejected),
          LOG_UINT("retries_held", stats->held),
          LOG_DUR("drain_ms", drain_start_ns != 0 ? now - drain_start_ns : 0),
          LOG_DUR("duration_ms", now - t0_ns));
}

int srv_run(const struct srv_cfg *cfg, const char *config_path,
            const struct srv_cfg_override *overrides, size_t noverrides)
{
    log_thread_name_set("loop");
    log_thread_wait_max_set(RUN_LOG_WAIT_NS);
    uint64_t t0 = ctx_now_ns();
    struct srv_run_state st = {0};
    st.config_path = config_path;
    st.overrides = overrides;
    st.noverrides = noverrides;
    /* Not libev's default loop: that one watches SIGCHLD and reaps any child with
     * waitpid(-1), which would take the exit status of an exec kind's program from the worker
     * that waits for it (server/jobs/exec/run.c). */
    st.loop = ev_loop_new(EVFLAG_SIGNALFD);
    struct ctx *root = ctx_new_root();
    st.cfg = malloc(sizeof(*st.cfg));
    if (st.loop == NULL || root == NULL || st.cfg == NULL) {
        LOG_E("start-up failed", LOG_STR("error", st.loop ? strerror(ENOMEM) : "no event loop"));
        ctx_unref(root);
        free(st.cfg);
        return 1;
    }
    *st.cfg = *cfg;
    int code = 0, rc = run_start(&st, cfg, root);
    if (rc != 0 || (st.sd = srv_sd_new(st.loop, run_sd_status, &st)) == NULL) {
        code = rc == -EPERM ? 2 : 1; /* EPERM: the configuration is unsafe where it listens */
        goto out;
    }
    ev_timer_init(&st.drain_timer, run_drain_timer_cb, 0.0, 0.0);
    st.drain_timer.data = &st;
    run_signals_start(&st);
    struct pool_stats ps;
    pool_stats_get(st.pool, &ps);
    run_log_started(st.http, ps.workers, st.nofile);
    srv_sd_ready(st.sd);
    ev_run(st.loop, 0);
    run_signals_stop(&st);
    ev_timer_stop(st.loop, &st.drain_timer);
out:;
    struct srv_http_stats stats = {0};
    if (st.pool != NULL)
        (void)pool_stop(st.pool, st.drain_deadline_ns, CTX_REASON_SHUTDOWN); /* answers the rest */
    srv_tasks_stop(st.tasks); /* after pool_stop: the attempts it cancelled are given back */
    if (st.http != NULL)
        srv_http_stats_get(st.http, &stats);
    srv_http_free(st.http);
    srv_jobroute_free(st.jobs);
    srv_sched_free(st.sched);    /* after srv_tasks_stop (its last fires) and srv_http_free */
    srv_tasks_free(st.tasks);    /* after srv_http_free: the task routes point at it */
    srv_mroute_free(st.metrics); /* after srv_http_free: GET /metrics points at it */
    srv_adm_free(st.adm);        /* after pool_stop: the last done callbacks release into it */
    srv_auth_free(st.auth);      /* after srv_http_free, which borrows it */
    pool_free(st.pool);
    srv_sd_free(st.sd);
    free(st.cfg);
    ctx_unref(root);
    ev_loop_destroy(st.loop);
    /* No loop to keep going, but a stop stays bounded (LOG_STOP_STALL_MS). */
    log_thread_wait_max_set((uint64_t)LOG_STOP_STALL_MS * 1000000u);
    if (code == 0)
        run_log_stopped(&stats, st.drain_start_ns, t0);
    return code;
}
