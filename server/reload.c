/* reload.c - SIGHUP: re-read the configuration file, apply the live keys, report the rest.
 *
 * Design: the file is loaded into a scratch configuration (srv_cfg_load is all-or-nothing), so an
 * error leaves everything as it was. Which keys changed is decided on the printed form of both
 * configurations (srv_cfg_print, one "key = value" line per key under its [section]), so every key
 * config.c knows, tenant sections included, is compared without a second list of fields here.
 * What may change live is this file's table (reload_fields): a changed key found there is copied
 * into the merged configuration; any other changed key is reported as needing a restart and keeps
 * its running value. The merged configuration then goes to the HTTP server (its copy is where
 * handlers and connections read limits and timeouts), to the logger (level) and, when admission is
 * wired, to a new tenant limit set swapped in (in-flight counts and buckets are kept).
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
#include "server/http/http.h"
#include "server/reload.h"

enum reload_class {
    RELOAD_LIVE,   /* applied at once */
    RELOAD_TENANT, /* applied when an admission controller takes a new limit set */
};

struct reload_field {
    const char *key; /* "section.key" as printed */
    size_t off, size;
    enum reload_class cls;
};

#define RF(key, field, cls)                                                                        \
    {                                                                                              \
        key, offsetof(struct srv_cfg, field), sizeof(((struct srv_cfg *)0)->field), cls            \
    }

static const struct reload_field reload_fields[] = {
    RF("server.max_connections", max_connections, RELOAD_LIVE),
    RF("server.header_timeout_ms", header_timeout_ms, RELOAD_LIVE),
    RF("server.body_timeout_ms", body_timeout_ms, RELOAD_LIVE),
    RF("server.idle_timeout_ms", idle_timeout_ms, RELOAD_LIVE),
    RF("server.retry_hold_ms", retry_hold_ms, RELOAD_LIVE),
    RF("server.write_timeout_ms", write_timeout_ms, RELOAD_LIVE),
    RF("server.max_keepalive_requests", max_keepalive_requests, RELOAD_LIVE),
    RF("limits.max_request_line", max_request_line, RELOAD_LIVE),
    RF("limits.max_header_bytes", max_header_bytes, RELOAD_LIVE),
    RF("limits.max_headers", max_headers, RELOAD_LIVE),
    RF("limits.max_body_bytes", max_body_bytes, RELOAD_LIVE),
    RF("limits.max_pipeline_bytes", max_pipeline_bytes, RELOAD_LIVE),
    RF("limits.max_query_params", max_query_params, RELOAD_LIVE),
    RF("limits.default_timeout_ms", default_timeout_ms, RELOAD_LIVE),
    RF("limits.max_timeout_ms", max_timeout_ms, RELOAD_LIVE),
    RF("limits.max_spin_ms", max_spin_ms, RELOAD_LIVE),
    RF("limits.max_primes_n", max_primes_n, RELOAD_LIVE),
    RF("limits.max_batch", max_batch, RELOAD_LIVE),
    RF("limits.max_sha256_rounds", max_sha256_rounds, RELOAD_LIVE),
    RF("limits.max_compress_level_zstd", max_compress_level_zstd, RELOAD_LIVE),
    RF("limits.max_inflight", max_inflight, RELOAD_TENANT),
    RF("limits.rate", rate, RELOAD_TENANT),
    RF("limits.burst", burst, RELOAD_TENANT),
    RF("limits.weight", weight, RELOAD_TENANT),
    RF("log.level", log_level, RELOAD_LIVE),
    RF("log.access", log_access, RELOAD_LIVE),
    RF("shutdown.drain_timeout_ms", drain_timeout_ms, RELOAD_LIVE),
};

#define RELOAD_NFIELDS     (sizeof(reload_fields) / sizeof(reload_fields[0]))
#define RELOAD_TENANT_SECT "tenant."

/* ---- the printed form -------------------------------------------------------------------- */

struct reload_kv {
    char *key; /* "section.key" */
    char *val; /* the value as printed */
};

struct reload_print {
    struct reload_kv *kv;
    size_t n, cap;
    char *text;
};

static void reload_print_fini(struct reload_print *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->kv[i].key);
    free(p->kv);
    free(p->text);
}

static int reload_print_add(struct reload_print *p, const char *section, const char *key,
                            size_t klen, char *val)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct reload_kv *kv = realloc(p->kv, cap * sizeof(*kv));
        if (kv == NULL)
            return -ENOMEM;
        p->kv = kv;
        p->cap = cap;
    }
    char *name = NULL;
    if (asprintf(&name, "%s.%.*s", section, (int)klen, key) < 0)
        return -ENOMEM;
    p->kv[p->n++] = (struct reload_kv){name, val};
    return 0;
}

/* Print `cfg` and split it into "section.key" -> value pairs (values point into p->text). */
static int reload_print(const struct srv_cfg *cfg, struct reload_print *p)
{
    size_t size = 0;
    memset(p, 0, sizeof(*p));
    FILE *f = open_memstream(&p->text, &size);
    if (f == NULL)
        return -ENOMEM;
    srv_cfg_print(cfg, f);
    if (fclose(f) != 0)
        return -ENOMEM;
    const char *section = "";
    char *save = NULL;
    for (char *line = strtok_r(p->text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '[') {
            char *end = strchr(line, ']');
            if (end != NULL)
                *end = '\0';
            section = line + 1;
            continue;
        }
        char *eq = strchr(line, '=');
        if (line[0] == ';' || line[0] == '#' || eq == NULL)
            continue;
        size_t klen = (size_t)(eq - line);
        while (klen > 0 && line[klen - 1] == ' ')
            klen--;
        char *val = eq + 1;
        while (*val == ' ')
            val++;
        if (reload_print_add(p, section, line, klen, val) != 0)
            return -ENOMEM;
    }
    return 0;
}

static const char *reload_print_get(const struct reload_print *p, const char *key)
{
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->kv[i].key, key) == 0)
            return p->kv[i].val;
    }
    return NULL;
}

/* ---- comparing and merging --------------------------------------------------------------- */

static const struct reload_field *reload_field_find(const char *key)
{
    for (size_t i = 0; i < RELOAD_NFIELDS; i++) {
        if (strcmp(reload_fields[i].key, key) == 0)
            return &reload_fields[i];
    }
    return NULL;
}

static bool reload_is_live(const char *key, bool tenants_live)
{
    if (strncmp(key, RELOAD_TENANT_SECT, strlen(RELOAD_TENANT_SECT)) == 0)
        return tenants_live;
    const struct reload_field *f = reload_field_find(key);
    return f != NULL && (f->cls == RELOAD_LIVE || tenants_live);
}

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

/* Record `key` (changed) in the diff, once. */
static void reload_diff_add(struct srv_reload_diff *d, const char *key, bool live)
{
    char *list = live ? d->live : d->restart;
    size_t klen = strlen(key);
    for (const char *p = list; (p = strstr(p, key)) != NULL; p += klen) {
        if ((p == list || p[-1] == ',') && (p[klen] == ',' || p[klen] == '\0'))
            return;
    }
    reload_list_add(list, SRV_RELOAD_KEYS_MAX, key);
    if (live)
        d->n_live++;
    else
        d->n_restart++;
}

/* Every key of `a` whose value differs in (or is missing from) `b`. */
static void reload_diff_walk(const struct reload_print *a, const struct reload_print *b,
                             bool tenants_live, struct srv_reload_diff *d)
{
    for (size_t i = 0; i < a->n; i++) {
        const char *other = reload_print_get(b, a->kv[i].key);
        if (other == NULL || strcmp(other, a->kv[i].val) != 0)
            reload_diff_add(d, a->kv[i].key, reload_is_live(a->kv[i].key, tenants_live));
    }
}

int srv_reload_merge(const struct srv_cfg *running, const struct srv_cfg *loaded, bool tenants_live,
                     struct srv_cfg *merged, struct srv_reload_diff *diff)
{
    struct reload_print pr, pl;
    memset(diff, 0, sizeof(*diff));
    int rc = reload_print(running, &pr);
    if (rc == 0)
        rc = reload_print(loaded, &pl);
    else
        memset(&pl, 0, sizeof(pl));
    if (rc == 0) {
        reload_diff_walk(&pl, &pr, tenants_live, diff);
        reload_diff_walk(&pr, &pl, tenants_live, diff); /* keys that disappeared */
    }
    reload_print_fini(&pr);
    reload_print_fini(&pl);
    if (rc != 0)
        return rc;
    *merged = *running;
    for (size_t i = 0; i < RELOAD_NFIELDS; i++) {
        const struct reload_field *f = &reload_fields[i];
        if (f->cls == RELOAD_LIVE || tenants_live)
            memcpy((char *)merged + f->off, (const char *)loaded + f->off, f->size);
    }
    if (tenants_live) {
        memcpy(merged->tenants, loaded->tenants, sizeof(merged->tenants));
        merged->tenant_count = loaded->tenant_count;
    }
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
    if (t->adm != NULL && reload_tenants_apply(t->adm, merged) != 0) {
        rc = -ENOMEM;
        goto fail; /* nothing was applied yet */
    }
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
