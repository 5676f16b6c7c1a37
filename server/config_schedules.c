/* config_schedules.c - the [schedule.NAME] sections of the configuration: a durable task
 * enqueued at every tick of a cron expression (server/tasks/schedule.h runs them).
 *
 * Design: like the [kind.NAME] sections (config_kinds.c), one record per distinct NAME in
 * srv_cfg.schedules[] (in order of first appearance, at most SRV_CFG_MAX_SCHEDULES), filled from
 * one key table (cfg_sched_keys) whose offsets point into struct srv_cfg_schedule. A record
 * remembers which keys it set and on which line, so print writes back exactly those keys and the
 * scheduler can name FILE:LINE for what only it can check (whether the kind exists and takes the
 * params). Values are checked when read: cron parses, tz names a zone that loads, params is a
 * JSON object, tenant is a valid tenant name. The cross-key checks (srv_cfgs_check) need cron and
 * kind in every section and, with [auth] mode = keys, a tenant that has a [tenant.NAME] section.
 *
 * Reload: every key is live (SRV_CFG_LIVE): the scheduler takes the sections as a whole.
 *
 * Threads: no state of its own; reentrant.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/ctx.h"
#include "server/config.h"
#include "server/config_internal.h"
#include "server/tasks/cron.h"

/* The keys of a [schedule.NAME] section, in enum srv_cfg_sched_key order (print order), with
 * offsets into struct srv_cfg_schedule. Every one is live on reload: the scheduler takes the
 * sections as a whole (server/tasks/schedule.h). */
enum cfg_stype {
    CFG_S_CRON,    /* char[]: srv_cron_parse accepts it */
    CFG_S_TZ,      /* char[]: srv_tz_load loads it */
    CFG_S_KIND,    /* char[]: [A-Za-z0-9_-]{1,64} */
    CFG_S_JSON,    /* char[]: a JSON object */
    CFG_S_TEXT,    /* char[]: any one-line text */
    CFG_S_TENANT,  /* char[]: a tenant name */
    CFG_S_UINT,    /* unsigned in [min, max] */
    CFG_S_MISFIRE, /* enum srv_cfg_misfire */
};

struct cfg_sched_key {
    const char *key;
    enum cfg_stype type;
    size_t offset, size;
    unsigned min, max;
};

#define CFG_SOFF(f) offsetof(struct srv_cfg_schedule, f), sizeof(((struct srv_cfg_schedule *)0)->f)
static const struct cfg_sched_key cfg_sched_keys[SRV_CFG_SCHED__COUNT] = {
    [SRV_CFG_SCHED_CRON] = {"cron", CFG_S_CRON, CFG_SOFF(cron), 0, 0},
    [SRV_CFG_SCHED_TZ] = {"tz", CFG_S_TZ, CFG_SOFF(tz), 0, 0},
    [SRV_CFG_SCHED_KIND] = {"kind", CFG_S_KIND, CFG_SOFF(kind), 0, 0},
    [SRV_CFG_SCHED_PARAMS] = {"params", CFG_S_JSON, CFG_SOFF(params), 0, 0},
    [SRV_CFG_SCHED_BODY] = {"body", CFG_S_TEXT, CFG_SOFF(body), 0, 0},
    [SRV_CFG_SCHED_TENANT] = {"tenant", CFG_S_TENANT, CFG_SOFF(tenant), 0, 0},
    [SRV_CFG_SCHED_ATTEMPTS] = {"attempts", CFG_S_UINT, CFG_SOFF(attempts), 1, 100},
    [SRV_CFG_SCHED_BACKOFF_MS] = {"backoff_ms", CFG_S_UINT, CFG_SOFF(backoff_ms), 0, 3600000},
    [SRV_CFG_SCHED_TIMEOUT_MS] = {"timeout_ms", CFG_S_UINT, CFG_SOFF(timeout_ms), 1, 86400000},
    [SRV_CFG_SCHED_MISFIRE] = {"misfire", CFG_S_MISFIRE, CFG_SOFF(misfire), 0, 0},
};

bool srv_cfgs_section(const char *name, size_t len, const char **sname, size_t *slen)
{
    return srv_cfg_prefixed(name, len, CFGS_PREFIX, sname, slen);
}

int srv_cfgs_index(const struct srv_cfg *cfg, const char *name, size_t len)
{
    for (unsigned i = 0; i < cfg->schedule_count; i++) {
        if (strlen(cfg->schedules[i].name) == len && memcmp(cfg->schedules[i].name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* The index of schedule NAME's record, added with its defaults (first seen on `line`) when new;
 * or -EINVAL with msg filled. */
int srv_cfgs_open(struct srv_cfg *cfg, const char *name, size_t len, unsigned line, char *msg,
                  size_t msz)
{
    int i = srv_cfgs_index(cfg, name, len);
    if (i >= 0)
        return i;
    if (len > SRV_CFG_SCHED_NAME_MAX || !ctx_tenant_valid(name, len))
        return srv_cfg_fail(msg, msz, "invalid schedule name (1..%d bytes of A-Z a-z 0-9 . _ -)",
                            SRV_CFG_SCHED_NAME_MAX);
    if (cfg->schedule_count == SRV_CFG_MAX_SCHEDULES)
        return srv_cfg_fail(msg, msz, "too many schedule sections (at most %d)",
                            SRV_CFG_MAX_SCHEDULES);
    struct srv_cfg_schedule *sc = &cfg->schedules[cfg->schedule_count];
    memset(sc, 0, sizeof(*sc));
    memcpy(sc->name, name, len);
    strcpy(sc->tz, "UTC");
    strcpy(sc->params, "{}");
    strcpy(sc->tenant, "default");
    sc->line = line;
    return (int)cfg->schedule_count++;
}

static const struct cfg_sched_key *cfg_sched_key_find(const char *key, size_t klen)
{
    for (size_t i = 0; i < SRV_CFG_SCHED__COUNT; i++) {
        if (strlen(cfg_sched_keys[i].key) == klen && memcmp(cfg_sched_keys[i].key, key, klen) == 0)
            return &cfg_sched_keys[i];
    }
    return NULL;
}

/* A string value of a schedule key: checked by its type, copied into `field`. */
static int cfg_sched_string_apply(const struct cfg_sched_key *k, char *field, const char *value,
                                  char *msg, size_t msz)
{
    size_t len = strlen(value);
    if (len >= k->size)
        return srv_cfg_fail(msg, msz, "longer than %zu bytes", k->size - 1);
    for (size_t i = 0; i < len; i++) {
        if (iscntrl((unsigned char)value[i]))
            return srv_cfg_fail(msg, msz, "control character in the value");
    }
    char err[320]; /* config.c's message size */
    struct srv_cron cron;
    json_error_t jerr;
    json_t *j;
    switch (k->type) {
    case CFG_S_CRON:
        if (srv_cron_parse(value, &cron, err, sizeof(err)) != 0)
            return srv_cfg_fail(msg, msz, "%s", err);
        break;
    case CFG_S_TZ: {
        struct srv_tz *tz = srv_tz_load(value, err, sizeof(err));
        if (tz == NULL)
            return srv_cfg_fail(msg, msz, "%s", err);
        srv_tz_free(tz);
        break;
    }
    case CFG_S_KIND:
        if (len == 0 || strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789_-") != len)
            return srv_cfg_fail(msg, msz, "bad kind \"%.80s\" (1..%d bytes of A-Z a-z 0-9 _ -)",
                                value, SRV_CFG_SCHED_KIND_MAX);
        break;
    case CFG_S_JSON:
        j = json_loads(value, JSON_REJECT_DUPLICATES, &jerr);
        bool obj = json_is_object(j);
        json_decref(j);
        if (!obj)
            return srv_cfg_fail(msg, msz,
                                "expected a JSON object like {\"n\": 1000}, got \"%.80s\"%s%s",
                                value, j ? "" : ": ", j ? "" : jerr.text);
        break;
    case CFG_S_TENANT:
        if (!ctx_tenant_valid(value, len))
            return srv_cfg_fail(msg, msz,
                                "invalid tenant \"%.80s\" (1..%d bytes of A-Z a-z 0-9 . _ -)",
                                value, CTX_TENANT_MAX);
        break;
    default:
        break;
    }
    memcpy(field, value, len + 1);
    return 0;
}

/* A value of key `k` into `sc` (not yet marked as set). */
static int sched_value_apply(const struct cfg_sched_key *k, struct srv_cfg_schedule *sc,
                             const char *value, char *msg, size_t msz)
{
    void *field = (char *)sc + k->offset;
    if (k->type == CFG_S_UINT) {
        uint64_t v;
        int rc = srv_cfg_uint_parse(value, k->min, k->max, &v, msg, msz);
        if (rc == 0)
            *(unsigned *)field = (unsigned)v;
        return rc;
    }
    if (k->type == CFG_S_MISFIRE) {
        if (strcmp(value, "skip") == 0)
            sc->misfire = SRV_CFG_MISFIRE_SKIP;
        else if (strcmp(value, "once") == 0)
            sc->misfire = SRV_CFG_MISFIRE_ONCE;
        else
            return srv_cfg_fail(msg, msz, "expected skip or once, got \"%.80s\"", value);
        return 0;
    }
    return cfg_sched_string_apply(k, field, value, msg, msz);
}

int srv_cfgs_key_apply(struct srv_cfg_schedule *sc, const char *key, size_t klen, const char *value,
                       unsigned line, char *msg, size_t msz)
{
    const struct cfg_sched_key *k = cfg_sched_key_find(key, klen);
    if (k == NULL)
        return -ENOENT;
    unsigned *set_line = &sc->key_line[k - cfg_sched_keys];
    if (line > 0 && *set_line != 0) {
        snprintf(msg, msz, "duplicate key (first set on line %u)", *set_line);
        return -EEXIST;
    }
    int rc = sched_value_apply(k, sc, value, msg, msz);
    if (rc != 0)
        return rc;
    sc->set |= 1u << (k - cfg_sched_keys);
    if (line > 0)
        *set_line = line;
    return 0;
}

/* The keys a schedule needs, for every schedule (the first incomplete one is reported). */
static int sched_check_required(const struct srv_cfg *cfg, unsigned *line, const char **key,
                                char *msg, size_t msz)
{
    for (unsigned i = 0; i < cfg->schedule_count; i++) {
        const struct srv_cfg_schedule *sc = &cfg->schedules[i];
        bool cron = sc->set & (1u << SRV_CFG_SCHED_CRON),
             kind = sc->set & (1u << SRV_CFG_SCHED_KIND);
        if (!cron || !kind) {
            snprintf(msg, msz, "missing %s (a schedule needs cron and kind)",
                     !cron && !kind ? "cron and kind"
                     : !cron        ? "cron"
                                    : "kind");
            *line = sc->line;
            *key = NULL;
            return (int)i;
        }
    }
    return -1;
}

/* With [auth] mode = keys, a task belongs to the tenant a key names: a schedule whose tenant has
 * no [tenant.NAME] section would fill a task list that no key can read. */
static int sched_check_tenant(const struct srv_cfg *cfg, unsigned *line, const char **key,
                              char *msg, size_t msz)
{
    if (cfg->auth_mode != SRV_CFG_AUTH_KEYS)
        return -1;
    for (unsigned i = 0; i < cfg->schedule_count; i++) {
        const struct srv_cfg_schedule *sc = &cfg->schedules[i];
        if (srv_cfg_tenant_find(cfg, sc->tenant) != NULL)
            continue;
        bool set = sc->set & (1u << SRV_CFG_SCHED_TENANT);
        snprintf(msg, msz,
                 "tenant \"%s\"%s has no [tenant.%s] section (with [auth] mode = keys a "
                 "schedule's tenant must be a configured tenant)",
                 sc->tenant, set ? "" : " (the default)", sc->tenant);
        *line = set ? sc->key_line[SRV_CFG_SCHED_TENANT] : sc->line;
        *key = set ? "tenant" : NULL;
        return (int)i;
    }
    return -1;
}

int srv_cfgs_check(const struct srv_cfg *cfg, unsigned *line, const char **key, char *msg,
                   size_t msz)
{
    int i = sched_check_required(cfg, line, key, msg, msz);
    return i >= 0 ? i : sched_check_tenant(cfg, line, key, msg, msz);
}
const struct srv_cfg_schedule *srv_cfg_schedule_find(const struct srv_cfg *cfg, const char *name)
{
    int i = name != NULL ? srv_cfgs_index(cfg, name, strlen(name)) : -1;
    return i >= 0 ? &cfg->schedules[i] : NULL;
}

/* Whether schedule key `k` has the same value in both (a set key never equals an unset one). */
static bool cfg_sched_value_equal(const struct cfg_sched_key *k, const struct srv_cfg_schedule *a,
                                  const struct srv_cfg_schedule *b)
{
    unsigned bit = 1u << (k - cfg_sched_keys);
    if ((a->set & bit) != (b->set & bit))
        return false;
    return memcmp((const char *)a + k->offset, (const char *)b + k->offset, k->size) == 0;
}

/* 0 when the sections are equal (name and every value), else 1 + the first differing key. */
static int sched_differs(const struct srv_cfg_schedule *a, const struct srv_cfg_schedule *b)
{
    if (strcmp(a->name, b->name) != 0)
        return 1;
    for (size_t i = 0; i < SRV_CFG_SCHED__COUNT; i++) {
        if (!cfg_sched_value_equal(&cfg_sched_keys[i], a, b))
            return 1 + (int)i;
    }
    return 0;
}

bool srv_cfgs_equal(const struct srv_cfg *a, const struct srv_cfg *b)
{
    if (a->schedule_count != b->schedule_count)
        return false;
    for (unsigned i = 0; i < a->schedule_count; i++) {
        if (sched_differs(&a->schedules[i], &b->schedules[i]) != 0)
            return false;
    }
    return true;
}

static void sched_print(const struct srv_cfg_schedule *sc, FILE *out)
{
    fprintf(out, "\n[" CFGS_PREFIX "%s]\n", sc->name);
    for (size_t i = 0; i < SRV_CFG_SCHED__COUNT; i++) {
        const struct cfg_sched_key *k = &cfg_sched_keys[i];
        const char *f = (const char *)sc + k->offset;
        if (!(sc->set & (1u << i)))
            continue;
        if (k->type == CFG_S_UINT)
            fprintf(out, "%s = %u\n", k->key, *(const unsigned *)f);
        else if (k->type == CFG_S_MISFIRE)
            fprintf(out, "%s = %s\n", k->key,
                    sc->misfire == SRV_CFG_MISFIRE_ONCE ? "once" : "skip");
        else
            fprintf(out, "%s = %s\n", k->key, f);
    }
}

void srv_cfgs_print(const struct srv_cfg *cfg, FILE *out)
{
    for (unsigned i = 0; i < cfg->schedule_count; i++)
        sched_print(&cfg->schedules[i], out);
}

int srv_cfgs_key_reload(const char *key, enum srv_cfg_reload *out)
{
    if (cfg_sched_key_find(key, strlen(key)) == NULL)
        return -ENOENT;
    *out = SRV_CFG_LIVE;
    return 0;
}

/* Each key of schedule `sc` whose value differs in `other` (NULL: no such section: every key it
 * sets). All of them are live (the scheduler takes the sections as a whole). */
static void sched_diff(const struct srv_cfg_schedule *sc, const struct srv_cfg_schedule *other,
                       srv_cfg_diff_fn *fn, void *arg)
{
    char sec[sizeof(CFGS_PREFIX) + SRV_CFG_SCHED_NAME_MAX];
    snprintf(sec, sizeof(sec), CFGS_PREFIX "%s", sc->name);
    for (size_t i = 0; i < SRV_CFG_SCHED__COUNT; i++) {
        const struct cfg_sched_key *k = &cfg_sched_keys[i];
        if (other == NULL ? !(sc->set & (1u << i)) : cfg_sched_value_equal(k, sc, other))
            continue;
        fn(sec, k->key, SRV_CFG_LIVE, arg);
    }
}

void srv_cfgs_diff(const struct srv_cfg *a, const struct srv_cfg *b, srv_cfg_diff_fn *fn, void *arg)
{
    for (unsigned i = 0; i < b->schedule_count; i++)
        sched_diff(&b->schedules[i], srv_cfg_schedule_find(a, b->schedules[i].name), fn, arg);
    for (unsigned i = 0; i < a->schedule_count; i++) { /* schedules that disappeared */
        if (srv_cfg_schedule_find(b, a->schedules[i].name) == NULL)
            sched_diff(&a->schedules[i], NULL, fn, arg);
    }
}

void srv_cfgs_copy(struct srv_cfg *dst, const struct srv_cfg *src)
{
    memcpy(dst->schedules, src->schedules, sizeof(dst->schedules));
    dst->schedule_count = src->schedule_count;
}
