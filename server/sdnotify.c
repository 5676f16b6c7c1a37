/* sdnotify.c - systemd integration: sd_notify readiness/stop/status, the watchdog ping, and the
 * listening sockets passed by socket activation (libsystemd's sd-daemon API).
 *
 * Design: struct srv_sd holds what the environment said at start (is NOTIFY_SOCKET set, the
 * watchdog period) and two ev_timers on the loop: a status timer (every SRV_SD_STATUS_PERIOD_S,
 * sending STATUS= only when the text changed, so an idle server sends nothing) and a watchdog
 * timer (half the period, as sd_watchdog_enabled(3) advises). Both exist only when NOTIFY_SOCKET
 * is set; without systemd nothing is started and every call returns at once. The watchdog is
 * pinged from the loop thread on purpose: when the loop is stuck, the pings stop.
 *
 * Threads: loop thread only. sd_notify() sends one datagram on an AF_UNIX socket (to systemd, or to
 * a test's socket); a failure is logged once at debug and ignored.
 */
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "logging/log.h"
#include "server/sdnotify.h"

struct srv_sd {
    struct ev_loop *loop;
    bool notifying;              /* NOTIFY_SOCKET is set */
    bool send_failed;            /* a failure was logged already */
    unsigned long long wd_us;    /* watchdog period, 0 = off */
    srv_sd_status_fn *status_fn; /* may be NULL */
    void *status_arg;
    char status[SRV_SD_STATUS_MAX]; /* the last STATUS= sent */
    ev_timer status_timer, wd_timer;
};

/* Send `msg` (newline-separated assignments); failures are logged once. */
static void sd_send(struct srv_sd *sd, const char *msg)
{
    if (!sd->notifying)
        return;
    int rc = sd_notify(0, msg);
    if (rc < 0 && !sd->send_failed) {
        sd->send_failed = true;
        LOG_D("sd_notify failed", LOG_STR("error", strerror(-rc)));
    }
}

/* The current status text into buf; true when it differs from the last one sent. */
static bool sd_status_take(struct srv_sd *sd, char *buf, size_t size)
{
    buf[0] = '\0';
    if (sd->status_fn == NULL)
        return false;
    sd->status_fn(buf, size, sd->status_arg);
    if (strcmp(buf, sd->status) == 0)
        return false;
    snprintf(sd->status, sizeof(sd->status), "%s", buf);
    return true;
}

/* Send `state` ("READY=1", ...; may be NULL) together with the status when it changed (always
 * with the status when `force`). */
static void sd_send_with_status(struct srv_sd *sd, const char *state, bool force)
{
    if (!sd->notifying)
        return;
    char status[SRV_SD_STATUS_MAX];
    bool changed = sd_status_take(sd, status, sizeof(status));
    if (force && !changed && sd->status[0] != '\0') {
        snprintf(status, sizeof(status), "%s", sd->status);
        changed = true;
    }
    char msg[SRV_SD_STATUS_MAX + 64];
    if (changed)
        snprintf(msg, sizeof(msg), "%s%sSTATUS=%s", state ? state : "", state ? "\n" : "", status);
    else if (state != NULL)
        snprintf(msg, sizeof(msg), "%s", state);
    else
        return;
    sd_send(sd, msg);
}

static void sd_status_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sd_send_with_status(w->data, NULL, false);
}

static void sd_watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    sd_send(w->data, "WATCHDOG=1");
}

struct srv_sd *srv_sd_new(struct ev_loop *loop, srv_sd_status_fn *status_fn, void *arg)
{
    struct srv_sd *sd = calloc(1, sizeof(*sd));
    if (sd == NULL)
        return NULL;
    sd->loop = loop;
    sd->status_fn = status_fn;
    sd->status_arg = arg;
    const char *ns = getenv("NOTIFY_SOCKET");
    sd->notifying = ns != NULL && ns[0] != '\0';
    ev_timer_init(&sd->status_timer, sd_status_cb, SRV_SD_STATUS_PERIOD_S, SRV_SD_STATUS_PERIOD_S);
    ev_timer_init(&sd->wd_timer, sd_watchdog_cb, 0.0, 0.0);
    sd->status_timer.data = sd->wd_timer.data = sd;
    if (!sd->notifying)
        return sd;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        sd->wd_us = usec;
        double every = (double)usec / 2e6;
        ev_timer_set(&sd->wd_timer, every, every);
        ev_timer_start(loop, &sd->wd_timer);
    }
    if (status_fn != NULL)
        ev_timer_start(loop, &sd->status_timer);
    LOG_D("systemd notification on", LOG_STR("notify_socket", ns),
          LOG_UINT("watchdog_us", sd->wd_us));
    return sd;
}

void srv_sd_free(struct srv_sd *sd)
{
    if (sd == NULL)
        return;
    ev_timer_stop(sd->loop, &sd->status_timer);
    ev_timer_stop(sd->loop, &sd->wd_timer);
    free(sd);
}

bool srv_sd_notifying(const struct srv_sd *sd)
{
    return sd->notifying;
}

unsigned long long srv_sd_watchdog_interval_us(const struct srv_sd *sd)
{
    return sd->wd_us / 2;
}

void srv_sd_ready(struct srv_sd *sd)
{
    sd_send_with_status(sd, "READY=1", true);
}

void srv_sd_reloading(struct srv_sd *sd)
{
    if (!sd->notifying)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000u);
    sd_send(sd, msg);
}

void srv_sd_stopping(struct srv_sd *sd)
{
    sd_send_with_status(sd, "STOPPING=1", true);
}

void srv_sd_status_update(struct srv_sd *sd)
{
    sd_send_with_status(sd, NULL, false);
}

int srv_sd_listen_fds(int *first_fd)
{
    *first_fd = SD_LISTEN_FDS_START;
    return sd_listen_fds(1);
}
