/* reload.c - SIGHUP: re-read the configuration file, apply the live keys, report the rest.
 *
 * Design: the file is loaded into a scratch configuration (srv_cfg_load is all-or-nothing), so an
 * error leaves everything as it was. What changed and what may change live both come from
 * config.c's one table of settings, whose "reload" column classes every key (enum
 * srv_cfg_reload): srv_cfg_diff names each changed key, tenant sections included, with its class,
 * and srv_cfg_copy_class copies the live classes into the merged configuration; any other changed
 * key is reported as needing a restart and keeps its running value. No key name or offset is
 * written here. The merged configuration then goes to the HTTP server (its copy is where handlers
 * and connections read limits and timeouts), to the logger (level) and, when admission is wired,
 * to a new tenant limit set swapped in (in-flight counts and buckets are kept), and to the
 * authenticator, whose new key set is built before anything is applied and swapped in whole: a
 * removed key fails from the next request on, a request already decided keeps its tenant. When a
 * [kind.NAME] key changed, a new snapshot of the job kinds is built from the merged configuration
 * and installed (server/jobs/jobs.h): a kind that no longer builds fails the whole reload. Running
 * jobs keep the snapshot they started with. A changed module is a restart (config.c keeps the
 * running form of its kind). The [schedule.NAME] sections are checked against the kinds they will
 * run with (a schedule whose task would be refused fails the whole reload) and handed to the
 * scheduler, which keeps the unchanged ones and plans the others from their recorded ticks.
 *
 * Threads: srv_reload runs on the loop thread; srv_reload_merge touches only its arguments.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logging/log.h"
#include "server/admission/admission.h"
#include "server/auth/auth.h"
#include "server/api/schedules.h"
#include "server/http/http.h"
#include "server/jobs/jobs.h"
#include "server/reload.h"

/* ---- comparing and merging --------------------------------------------------------------- */

/* Append `key` to a comma-separated list of `size` bytes; a full list ends with "...". */
static void reload_list_add(char *list, size_t size, const char *key)
{
    size_t len = strlen(list);
    if (len >= 3 && strcmp(list + len - 3, "...") == 0)
        return;
    int n = snprintf(list + len, size - len, "%s%s", len ? "," : "", key);
    if (n < 0 || (size_t)n >= size - len)
        snprintf(list + (len + 4 < size ? len : size - 4), 4, "...");
}

struct reload_diff_ctx {
    struct srv_reload_diff *diff;
    bool tenants_live;
};

/* srv_cfg_diff_fn: file one changed key (srv_cfg_diff names each once) as live or restart. */
static void reload_diff_add(const char *section, const char *key, enum srv_cfg_reload reload,
                            void *arg)
{
    struct reload_diff_ctx *c = arg;
    struct srv_reload_diff *d = c->diff;
    bool live = reload == SRV_CFG_LIVE || reload == SRV_CFG_LIVE_KIND ||
                (reload == SRV_CFG_LIVE_ADM && c->tenants_live);
    if (reload == SRV_CFG_LIVE_KIND)
        d->kinds_changed = true;
    char name[256];
    snprintf(name, sizeof(name), "%s.%s", section, key);
    reload_list_add(live ? d->live : d->restart, SRV_RELOAD_KEYS_MAX, name);
    if (live)
        d->n_live++;
    else
        d->n_restart++;
}

int srv_reload_merge(const struct srv_cfg *running, const struct srv_cfg *loaded, bool tenants_live,
                     struct srv_cfg *merged, struct srv_reload_diff *diff)
{
    struct reload_diff_ctx c = {diff, tenants_live};
    memset(diff, 0, sizeof(*diff));
    srv_cfg_diff(running, loaded, reload_diff_add, &c);
    *merged = *running;
    srv_cfg_copy_class(merged, loaded, SRV_CFG_LIVE);
    if (tenants_live)
        srv_cfg_copy_class(merged, loaded, SRV_CFG_LIVE_ADM);
    srv_cfg_copy_class(merged, loaded, SRV_CFG_LIVE_KIND);
    return 0;
}

/* ---- applying ---------------------------------------------------------------------------- */

/* Swap in the tenant limits of `cfg`. Returns 0 or -ENOMEM (the old set stays). */
static int reload_tenants_apply(struct srv_adm *adm, const struct srv_cfg *cfg)
{
    struct srv_adm_limits *limits = srv_adm_limits_from_cfg(cfg);
    if (limits == NULL)
        return -ENOMEM;
    srv_adm_limits_swap(adm, limits);
    return 0;
}

static void reload_report(const char *path, const struct srv_reload_diff *d)
{
    LOG_I("configuration reloaded", LOG_STR("config", path), LOG_STR("changed", d->live),
          LOG_STR("restart_required", d->restart), LOG_UINT("changed_count", d->n_live),
          LOG_UINT("restart_required_count", d->n_restart));
    if (d->n_restart > 0)
        LOG_W("configuration keys changed that need a restart: running values kept",
              LOG_STR("config", path), LOG_STR("keys", d->restart));
}

/* Check the schedules of `merged` against the kinds they will run with: the new snapshot `kinds`
 * when the reload rebuilds them, else the current one. Returns 0 or -EINVAL with err filled. */
static int reload_sched_check(const struct srv_cfg *merged, struct srv_kinds *kinds, char *err,
                              size_t size)
{
    struct srv_kinds *ks = kinds != NULL ? srv_kinds_ref(kinds) : srv_kinds_current();
    int rc = srv_sched_check(merged, ks, err, size);
    srv_kinds_unref(ks);
    return rc;
}

int srv_reload(const char *path, struct srv_cfg *running, const struct srv_reload_target *t)
{
    int rc = log_reopen();
    if (rc != 0)
        LOG_E("log reopen failed", LOG_STR("path", log_path()), LOG_STR("error", strerror(-rc)));
    char err[1024] = "";
    struct srv_cfg *loaded = malloc(sizeof(*loaded));
    struct srv_cfg *merged = malloc(sizeof(*merged));
    struct srv_reload_diff *diff = malloc(sizeof(*diff));
    rc = -ENOMEM;
    if (loaded == NULL || merged == NULL || diff == NULL)
        goto fail;
    srv_cfg_defaults(loaded);
    rc = srv_cfg_load(path, loaded, err, sizeof(err));
    if (rc == 0)
        rc = srv_cfg_overrides_apply(loaded, t->overrides, t->noverrides, err, sizeof(err));
    if (rc != 0)
        goto fail;
    rc = srv_reload_merge(running, loaded, t->adm != NULL, merged, diff);
    if (rc != 0)
        goto fail;
    struct srv_kinds *kinds = NULL;
    if (diff->kinds_changed && (kinds = srv_kinds_build(merged, err, sizeof(err))) == NULL) {
        rc = -EINVAL;
        goto fail; /* nothing was applied yet */
    }
    if (t->sched != NULL && (rc = reload_sched_check(merged, kinds, err, sizeof(err))) != 0) {
        srv_kinds_unref(kinds);
        goto fail; /* a schedule whose task would be refused: nothing changes */
    }
    struct srv_auth_keys *keys = t->auth != NULL ? srv_auth_keys_new(merged) : NULL;
    if (t->auth != NULL && keys == NULL) {
        srv_kinds_unref(kinds);
        rc = -ENOMEM;
        goto fail;
    }
    if (t->adm != NULL && reload_tenants_apply(t->adm, merged) != 0) {
        srv_auth_keys_free(keys);
        srv_kinds_unref(kinds);
        rc = -ENOMEM;
        goto fail; /* nothing was applied yet */
    }
    if (t->sched != NULL && srv_sched_update(t->sched, merged) != 0) {
        srv_auth_keys_free(keys);
        srv_kinds_unref(kinds);
        rc = -ENOMEM;
        goto fail; /* the tenant limits may be new already; the rest is not */
    }
    if (t->auth != NULL)
        srv_auth_update(t->auth, keys);
    if (kinds != NULL)
        srv_kinds_install(kinds);
    log_set_level(merged->log_level);
    srv_http_cfg_update(t->http, merged);
    *running = *merged;
    reload_report(path, diff);
    goto out;
fail:
    LOG_E("configuration reload failed: nothing changed", LOG_STR("config", path),
          LOG_STR("error", err[0] ? err : strerror(-rc)));
out:
    free(loaded);
    free(merged);
    free(diff);
    return rc;
}
