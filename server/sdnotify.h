/* sdnotify.h - systemd integration: readiness and stop notifications, status, watchdog, socket
 * activation (server/ only).
 *
 * Under systemd with Type=notify, the service manager passes NOTIFY_SOCKET (and WATCHDOG_USEC
 * when WatchdogSec= is set); with socket activation it passes listening sockets from descriptor 3
 * on, with LISTEN_FDS and LISTEN_PID. Without those variables every function here does nothing
 * and starts no timer, so a server run by hand or under another supervisor is not affected.
 *
 * Threads: everything is for the loop thread (the watchdog ping proves that the loop runs: a
 * stuck loop stops pinging and systemd restarts the service). Notifications are datagrams on a
 * local socket; failures are logged once at debug and otherwise ignored (notification is advice
 * to the manager, never a reason to stop serving).
 */
#ifndef SPINDLE_SDNOTIFY_H
#define SPINDLE_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct srv_sd;

#define SRV_SD_STATUS_MAX      128 /* bytes of a STATUS= text */
#define SRV_SD_STATUS_PERIOD_S 1.0 /* how often the status is refreshed (sent only on change) */

/* Fill `buf` (size bytes, NUL-terminated) with a one-line status, e.g. "serving: 3 connections,
 * 2 in flight". Called on the loop thread. */
typedef void srv_sd_status_fn(char *buf, size_t size, void *arg);

/* Read NOTIFY_SOCKET and WATCHDOG_USEC (WATCHDOG_PID, when set, must be this process). When
 * notifications are on, start a timer on `loop` (borrowed, must outlive the object) that sends
 * STATUS= from `status_fn(arg)` when it changed, and one that sends WATCHDOG=1 every half of the
 * watchdog period. `status_fn` may be NULL. Returns a new object (free with srv_sd_free), or NULL
 * when out of memory. Loop thread. */
struct srv_sd *srv_sd_new(struct ev_loop *loop, srv_sd_status_fn *status_fn, void *arg);

/* Stop the timers and free. srv_sd_free(NULL) is a no-op. */
void srv_sd_free(struct srv_sd *sd);

/* True when NOTIFY_SOCKET is set (notifications go somewhere). */
bool srv_sd_notifying(const struct srv_sd *sd);

/* Microseconds between two watchdog pings, 0 when the watchdog is off. */
unsigned long long srv_sd_watchdog_interval_us(const struct srv_sd *sd);

/* READY=1 with the current status: the listeners are open and requests are served. */
void srv_sd_ready(struct srv_sd *sd);

/* RELOADING=1 with MONOTONIC_USEC: a configuration reload begins; srv_sd_ready() ends it. */
void srv_sd_reloading(struct srv_sd *sd);

/* STOPPING=1 with the current status: the drain begins. The status timer keeps running, so the
 * in-flight count stays visible in `systemctl status` while draining. */
void srv_sd_stopping(struct srv_sd *sd);

/* Send the current status now (when it changed since the last one sent). */
void srv_sd_status_update(struct srv_sd *sd);

/* Socket activation: the number of listening sockets passed by the service manager to this
 * process (LISTEN_FDS, checked against LISTEN_PID), 0 when none, or a negative errno. The sockets
 * are descriptors *first_fd .. *first_fd + n - 1 (SD_LISTEN_FDS_START). The LISTEN_* variables
 * are removed from the environment so that nothing started later inherits them. */
int srv_sd_listen_fds(int *first_fd);

#endif
