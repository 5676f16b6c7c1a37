/* metrics.h - GET /metrics: spindle's metrics registry, the figures read at scrape time and
 * the loop's own health (lag and utilisation) (server/ only).
 *
 * One struct srv_mroute per HTTP server: it owns the registry with spindle's families
 * (server/metrics/metrics.h), adds the GET /metrics route (HEAD too), and measures the loop:
 *   - lag: a timer armed every SRV_MROUTE_TICK_MS; how late it fires is the loop's lag. The
 *     gauge shows the largest lag of the last window (SRV_MROUTE_WINDOW_MS), so a short stall
 *     between two scrapes is still seen.
 *   - utilisation: ev_prepare runs just before the loop blocks in poll and ev_check just after;
 *     the time between the two is idle. The gauge is the busy share of the last window.
 * Its watchers do not keep the loop alive (ev_unref), so a draining server still stops.
 *
 * What is read at scrape time (callbacks): queue depth and capacity (pool), queue depth per
 * configured tenant and "other" (pool), in-flight job requests (admission), open connections
 * (HTTP), log lines, waits and drops (logger), loop lag and utilisation, the process_* figures
 * (/proc, read once per scrape). spindle_build_info is set once. What callers count as it happens
 * (through srv_mroute_families): answered requests by route and status, refusals by reason and
 * tenant label, job wait and run times by kind.
 *
 * Threads: loop thread only (the one that runs `loop`), like the HTTP server.
 */
#ifndef SPINDLE_SRV_METRICS_ROUTE_H
#define SPINDLE_SRV_METRICS_ROUTE_H

#include "pool/pool.h"
#include "server/admission/admission.h"
#include "server/metrics/metrics.h"

#define SRV_MROUTE_PATH      "/metrics"
#define SRV_MROUTE_TICK_MS   100  /* lag timer period */
#define SRV_MROUTE_WINDOW_MS 1000 /* lag maximum and utilisation are over this window */

struct ev_loop;
struct srv_cfg;
struct srv_http;
struct srv_mroute;

/* A registry with spindle's families, GET /metrics on `h`, and the loop watchers on `loop`.
 * `h`, `pool` and `adm` are borrowed and must outlive the object (`pool` and `adm` may be NULL:
 * their figures then read 0); the object must outlive the route: free it after srv_http_free(h).
 * `cfg` (borrowed, read now) names the configured tenants, each of which gets its own queue depth
 * series. Loop thread. NULL when out of memory or the route could not be added (logged). */
struct srv_mroute *srv_mroute_new(struct ev_loop *loop, struct srv_http *h, struct pool *pool,
                                  struct srv_adm *adm, const struct srv_cfg *cfg);

struct srv_auth;

/* Count `auth`'s refusals (borrowed; must outlive `m`): spindle_auth_failures_total{reason} for
 * missing, invalid, forbidden and throttled, and spindle_auth_throttled_addresses, read at scrape
 * time. Returns 0 or -ENOMEM. Loop thread. */
int srv_mroute_auth_set(struct srv_mroute *m, struct srv_auth *auth);

/* Stop the watchers and free the registry. NULL is a no-op. */
void srv_mroute_free(struct srv_mroute *m);

/* The families, for callers that count events (borrowed; valid while `m` lives). */
const struct srv_met_server *srv_mroute_families(const struct srv_mroute *m);

/* The loop figures now: the largest lag of the last complete window and the busy share of that
 * window (0 before the first window completes). For tests and logs. */
void srv_mroute_loop_stats(const struct srv_mroute *m, double *lag_s, double *utilization);

#endif
