/* reload.h - configuration reload on SIGHUP: re-read the file, apply what can change while
 * running, report what needs a restart (server/ only).
 *
 * Which changed keys apply live is the "reload" column of config.c's settings table
 * (srv_cfg_key_reload; README's Configuration table shows it): SRV_CFG_LIVE keys at once,
 * SRV_CFG_LIVE_ADM keys (the tenant limits: [limits] max_inflight, rate, burst, weight and the
 * [tenant.NAME] sections, their keys included) when an admission controller is given. The others
 * ([server] listen, backlog and admin_listen, [pool], [limits] max_tenants, [log] file,
 * buffer_bytes and policy, [auth] mode, allow_plaintext and throttle_addresses; the tenant limits
 * without an admission controller) need a restart: reported, and kept at their running values.
 *
 * Loading is all-or-nothing (srv_cfg_load): an invalid or unreadable file changes nothing, and the
 * error, naming FILE:LINE, [section] and key, is logged at error level.
 *
 * Threads: srv_reload runs on the loop thread (it updates the HTTP server and admission, both
 * loop-only); srv_reload_merge is pure.
 */
#ifndef SPINDLE_RELOAD_H
#define SPINDLE_RELOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "server/config.h"

struct srv_http;
struct srv_adm;
struct srv_auth;
struct srv_sched;

#define SRV_RELOAD_KEYS_MAX                                                                        \
    1024 /* bytes of a comma-separated key list (longer lists end "...")                           \
          */

/* What a reload changes: "section.key" names, comma-separated, in print order. */
struct srv_reload_diff {
    char live[SRV_RELOAD_KEYS_MAX];    /* changed and applied */
    char restart[SRV_RELOAD_KEYS_MAX]; /* changed in the file but kept until a restart */
    unsigned n_live, n_restart;
    bool kinds_changed; /* a live [kind.NAME] key changed: the job kinds are rebuilt */
};

/* Compare `running` and `loaded` (both borrowed) key by key and fill *diff; write into *merged
 * the configuration to run with: `running` with the live keys of `loaded` (the tenant limits
 * too when `tenants_live`; the [kind.NAME] sections but a changed module kind). `merged` may not
 * alias the inputs. Returns 0 (nothing here can fail; the int keeps callers' error paths). */
int srv_reload_merge(const struct srv_cfg *running, const struct srv_cfg *loaded, bool tenants_live,
                     struct srv_cfg *merged, struct srv_reload_diff *diff);

/* What srv_reload acts on (borrowed). */
struct srv_reload_target {
    struct srv_http *http;   /* its copied configuration is updated (srv_http_cfg_update) */
    struct srv_adm *adm;     /* may be NULL: tenant limits then need a restart */
    struct srv_auth *auth;   /* may be NULL; else it takes the merged keys, metrics token and
                                throttle settings (server/auth/auth.h: srv_auth_update) */
    struct srv_sched *sched; /* may be NULL: [schedule.NAME] sections are then not applied */
    const struct srv_cfg_override *overrides; /* the command line's, applied after the file */
    size_t noverrides;
};

/* Reopen the log file (log_reopen), then load `path` (borrowed) with the target's command-line
 * overrides on top (so "--log-level debug" outlives a reload) and, when it is valid (its
 * schedules too, against the kinds they will run with: srv_sched_check,
 * server/api/schedules.h), apply the live keys to the target, the log level, the job kinds (a
 * new snapshot when a [kind.NAME] key changed; a kind that does not build fails the reload) and
 * the schedules, update *running (the configuration in force, owned by the caller) and log one
 * info line "configuration reloaded" with `changed` and
 * `restart_required` key lists (plus a warn line when some keys need a restart). Returns 0, or
 * the negative errno of srv_cfg_load (-EINVAL, -ENOENT, ...) after logging the error: then
 * nothing changed. -ENOMEM when out of memory (nothing changed). Loop thread. */
int srv_reload(const char *path, struct srv_cfg *running, const struct srv_reload_target *t);

#endif
