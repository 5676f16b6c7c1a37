/* config_kinds.c - the [kind.NAME] sections of the configuration: job kinds from a program
 * (`exec = ...`) or a C module (`module = /path/x.so`), and the `params =` declarations.
 *
 * Design: like the [tenant.NAME] sections of config.c, one record per distinct NAME in
 * srv_cfg.kinds[] (in order of first appearance, at most SRV_CFG_MAX_KINDS), filled from one
 * key table (kind_keys) whose offsets point into struct srv_cfg_kind. A record remembers which
 * keys it set and on which line, so print writes back exactly those keys and the job registry
 * can name FILE:LINE for what only it can check (a module that does not load, a name taken by a
 * built-in kind). This file checks values and the rules between keys of one section; it knows
 * nothing of programs, modules or the built-in kinds (config is a leaf).
 *
 * Reload: every key but `module` is SRV_CFG_LIVE_KIND: the registry takes a new snapshot of the
 * kinds. Modules load at start only, so `module` is SRV_CFG_RESTART, and srv_cfgk_copy keeps the
 * running form of any kind whose module changed (added, removed or another path).
 *
 * Threads: no state of its own; reentrant.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/config.h"
#include "server/config_internal.h"

enum kind_type { KT_STR, KT_USER, KT_UINT, KT_ULONG, KT_SIZE, KT_BOOL };

struct kind_key {
    const char *key;
    enum kind_type type;
    size_t offset;
    bool bytes; /* K, M, G suffixes */
    uint64_t min, max;
    const char *def; /* NULL: "" or 0 */
    bool exec_only;
};

#define KOFF(f) offsetof(struct srv_cfg_kind, f)

/* The order is the print order; bit i of srv_cfg_kind.set is entry i. */
static const struct kind_key kind_keys[] = {
    {"exec", KT_STR, KOFF(exec), false, 0, 0, NULL, true},
    {"module", KT_STR, KOFF(module), false, 0, 0, NULL, false},
    {"content_type", KT_STR, KOFF(content_type), false, 0, 0, NULL, false},
    {"params", KT_STR, KOFF(params), false, 0, 0, NULL, true},
    {"max_inflight", KT_UINT, KOFF(max_inflight), false, 0, 1000000, NULL, false},
    {"timeout_ms", KT_UINT, KOFF(timeout_ms), false, 0, 86400000, NULL, false},
    {"max_output_bytes", KT_SIZE, KOFF(max_output_bytes), true, 0, 1073741824, "16M", false},
    {"cancel_grace_ms", KT_UINT, KOFF(cancel_grace_ms), false, 0, 600000, "2000", true},
    {"rlimit_cpu_s", KT_ULONG, KOFF(rlimit_cpu_s), false, 0, 31536000, NULL, true},
    {"rlimit_as", KT_SIZE, KOFF(rlimit_as), true, 0, UINT64_MAX, NULL, true},
    {"rlimit_nofile", KT_UINT, KOFF(rlimit_nofile), false, 0, 1048576, NULL, true},
    {"user", KT_USER, KOFF(user), false, 0, 0, NULL, true},
    {"cwd", KT_STR, KOFF(cwd), false, 0, 0, NULL, true},
    {"stream", KT_BOOL, KOFF(stream), false, 0, 0, NULL, true},
};
#define NKKEYS (sizeof(kind_keys) / sizeof(kind_keys[0]))
_Static_assert(NKKEYS <= SRV_CFG_KIND_KEYS, "srv_cfg_kind.key_line has a slot per key");

/* ---- sections ------------------------------------------------------------------------------ */

bool srv_cfgk_section(const char *name, size_t len, const char **kname, size_t *klen)
{
    return srv_cfg_prefixed(name, len, CFGK_PREFIX, kname, klen);
}

int srv_cfgk_index(const struct srv_cfg *cfg, const char *name, size_t len)
{
    for (unsigned i = 0; i < cfg->kind_count; i++) {
        if (strlen(cfg->kinds[i].name) == len && memcmp(cfg->kinds[i].name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

static bool kind_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > SRV_CFG_KIND_NAME_MAX || !islower((unsigned char)name[0]))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!islower(c) && !isdigit(c) && c != '_')
            return false;
    }
    return true;
}

static void kind_defaults(struct srv_cfg_kind *k)
{
    memset(k, 0, sizeof(*k));
    for (size_t i = 0; i < NKKEYS; i++) {
        char msg[64];
        if (kind_keys[i].def != NULL &&
            srv_cfgk_key_apply(k, kind_keys[i].key, strlen(kind_keys[i].key), kind_keys[i].def, 0,
                               msg, sizeof(msg)) != 0)
            abort(); /* the table's own default: a broken build */
    }
    k->set = 0;
    memset(k->key_line, 0, sizeof(k->key_line));
}

int srv_cfgk_open(struct srv_cfg *cfg, const char *name, size_t len, unsigned line, char *msg,
                  size_t msz)
{
    int i = srv_cfgk_index(cfg, name, len);
    if (i >= 0)
        return i;
    if (!kind_name_valid(name, len))
        return srv_cfg_fail(msg, msz,
                            "invalid kind name (1..%d bytes of a-z 0-9 _, starting with a letter)",
                            SRV_CFG_KIND_NAME_MAX);
    if (cfg->kind_count == SRV_CFG_MAX_KINDS)
        return srv_cfg_fail(msg, msz, "too many kind sections (at most %d)", SRV_CFG_MAX_KINDS);
    struct srv_cfg_kind *k = &cfg->kinds[cfg->kind_count];
    kind_defaults(k);
    memcpy(k->name, name, len);
    k->line = line;
    return (int)cfg->kind_count++;
}

const struct srv_cfg_kind *srv_cfg_kind_find(const struct srv_cfg *cfg, const char *name)
{
    int i = name != NULL ? srv_cfgk_index(cfg, name, strlen(name)) : -1;
    return i >= 0 ? &cfg->kinds[i] : NULL;
}

/* ---- values -------------------------------------------------------------------------------- */

static const struct kind_key *kind_key_find(const char *key, size_t klen)
{
    for (size_t i = 0; i < NKKEYS; i++) {
        if (strlen(kind_keys[i].key) == klen && memcmp(kind_keys[i].key, key, klen) == 0)
            return &kind_keys[i];
    }
    return NULL;
}

/* A whole number in [min, max], with K/M/G (powers of 1024) when `bytes`. */
static int kind_num(const struct kind_key *kk, const char *value, uint64_t *out, char *msg,
                    size_t msz)
{
    uint64_t v = 0, mult = 1;
    const char *p = value;
    bool over = false;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        over |= v > (UINT64_MAX - d) / 10;
        v = v * 10 + d;
    }
    if (kk->bytes && p != value && *p != '\0' && p[1] == '\0' && strchr("KMGkmg", *p) != NULL) {
        mult = 1ULL << (10 * (unsigned)(strchr("KMG", toupper((unsigned char)*p)) - "KMG" + 1));
        p++;
    }
    if (p == value || *p != '\0')
        return srv_cfg_fail(msg, msz, "expected a whole number%s, got \"%.80s\"",
                            kk->bytes ? " (optionally with K, M or G)" : "", value);
    over |= v > UINT64_MAX / mult;
    v *= mult;
    if (over || v < kk->min || v > kk->max)
        return srv_cfg_fail(msg, msz, "value %.80s out of range %" PRIu64 "..%" PRIu64, value,
                            kk->min, kk->max);
    *out = v;
    return 0;
}

/* A string value: one line that print and load give back unchanged. */
static int kind_str(const struct kind_key *kk, char *field, size_t cap, const char *value,
                    char *msg, size_t msz)
{
    size_t len = strlen(value);
    if (len >= cap)
        return srv_cfg_fail(msg, msz, "longer than %zu bytes", cap - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (iscntrl(c))
            return srv_cfg_fail(msg, msz, "control character in value");
        if (c == ';' && i > 0 && isspace((unsigned char)value[i - 1]))
            return srv_cfg_fail(msg, msz, "\";\" after a blank starts a comment; not allowed here");
    }
    if (len > 0 && (isspace((unsigned char)value[0]) || isspace((unsigned char)value[len - 1])))
        return srv_cfg_fail(msg, msz, "value starts or ends with a blank");
    if (strcmp(kk->key, "module") == 0 && len > 0 && value[0] != '/')
        return srv_cfg_fail(msg, msz, "expected an absolute path, got \"%.80s\"", value);
    if (strcmp(kk->key, "cwd") == 0 && len > 0 && value[0] != '/')
        return srv_cfg_fail(msg, msz, "expected an absolute path, got \"%.80s\"", value);
    if (strcmp(kk->key, "params") == 0) {
        struct srv_cfg_params *ps = malloc(sizeof(*ps));
        if (ps == NULL)
            return srv_cfg_fail(msg, msz, "out of memory");
        int rc = srv_cfg_params_parse(value, ps, msg, msz);
        free(ps);
        if (rc != 0)
            return rc;
    }
    memcpy(field, value, len + 1);
    return 0;
}

int srv_cfgk_key_apply(struct srv_cfg_kind *k, const char *key, size_t klen, const char *value,
                       unsigned line, char *msg, size_t msz)
{
    const struct kind_key *kk = kind_key_find(key, klen);
    if (kk == NULL)
        return -ENOENT;
    size_t idx = (size_t)(kk - kind_keys);
    if (line != 0 && k->key_line[idx] != 0) {
        snprintf(msg, msz, "duplicate key (first set on line %u)", k->key_line[idx]);
        return -EEXIST;
    }
    void *field = (char *)k + kk->offset;
    uint64_t v = 0;
    int rc;
    switch (kk->type) {
    case KT_STR:
        rc = kind_str(kk, field, SRV_CFG_VALUE_MAX, value, msg, msz);
        break;
    case KT_USER:
        rc = kind_str(kk, field, SRV_CFG_USER_MAX, value, msg, msz);
        break;
    case KT_BOOL:
        rc = 0;
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0)
            *(bool *)field = false;
        else
            rc = srv_cfg_fail(msg, msz, "expected true or false (yes or no), got \"%.80s\"", value);
        break;
    default:
        rc = kind_num(kk, value, &v, msg, msz);
        if (rc == 0 && kk->type == KT_UINT)
            *(unsigned *)field = (unsigned)v;
        else if (rc == 0 && kk->type == KT_ULONG)
            *(unsigned long *)field = (unsigned long)v;
        else if (rc == 0)
            *(size_t *)field = (size_t)v;
        break;
    }
    if (rc != 0)
        return rc;
    k->set |= 1u << idx;
    k->key_line[idx] = line;
    return 0;
}

/* ---- parameter declarations ---------------------------------------------------------------- */

static bool param_name_valid(const char *s, size_t len)
{
    if (len == 0 || len > 31 || !islower((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
            return false;
    }
    return true;
}

/* A signed decimal of [s, e). */
static bool param_i64(const char *s, const char *e, int64_t *out)
{
    bool neg = s < e && *s == '-';
    s += neg;
    if (s == e || e - s > 18)
        return false;
    int64_t v = 0;
    for (; s < e; s++) {
        if (!isdigit((unsigned char)*s))
            return false;
        v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return true;
}

/* TYPE and DEFAULT of one item: int:MIN..MAX, enum:A|B, bool, string. */
static int param_type(struct srv_cfg_param *p, const char *t, const char *te, const char *d,
                      const char *de, char *msg, size_t msz)
{
    const char *colon = memchr(t, ':', (size_t)(te - t));
    size_t tlen = (size_t)((colon ? colon : te) - t);
    const char *arg = colon ? colon + 1 : te;
    p->required = d == NULL;
    if (tlen == 3 && memcmp(t, "int", 3) == 0) {
        const char *dots = arg;
        while (dots + 1 < te && !(dots[0] == '.' && dots[1] == '.'))
            dots++;
        p->type = SRV_CFG_PARAM_INT;
        if (dots + 1 >= te || !param_i64(arg, dots, &p->min) || !param_i64(dots + 2, te, &p->max) ||
            p->min < 0 || p->min > p->max)
            return srv_cfg_fail(msg, msz, "%s: expected int:MIN..MAX with 0 <= MIN <= MAX",
                                p->name);
        if (d != NULL && (!param_i64(d, de, &p->def) || p->def < p->min || p->def > p->max))
            return srv_cfg_fail(msg, msz, "%s: default must be an integer in %" PRId64 "..%" PRId64,
                                p->name, p->min, p->max);
        return 0;
    }
    if (tlen == 4 && memcmp(t, "enum", 4) == 0) {
        p->type = SRV_CFG_PARAM_ENUM;
        size_t off = 0;
        int def = -1;
        for (const char *c = arg; c <= te && arg < te;) {
            const char *bar = memchr(c, '|', (size_t)(te - c));
            const char *ce = bar ? bar : te;
            if (ce == c || p->nchoices == SRV_CFG_CHOICES_MAX ||
                off + (size_t)(ce - c) + 1 > sizeof(p->choices))
                return srv_cfg_fail(msg, msz, "%s: expected enum:A|B|... (1..%d non-empty choices)",
                                    p->name, SRV_CFG_CHOICES_MAX);
            if (d != NULL && de - d == ce - c && memcmp(d, c, (size_t)(ce - c)) == 0)
                def = (int)p->nchoices;
            memcpy(p->choices + off, c, (size_t)(ce - c));
            off += (size_t)(ce - c) + 1;
            p->nchoices++;
            c = ce + 1;
        }
        if (p->nchoices == 0)
            return srv_cfg_fail(msg, msz, "%s: expected enum:A|B|...", p->name);
        if (d != NULL && def < 0)
            return srv_cfg_fail(msg, msz, "%s: default must be one of the choices", p->name);
        p->def = def < 0 ? 0 : def;
        return 0;
    }
    if (colon == NULL && tlen == 4 && memcmp(t, "bool", 4) == 0) {
        p->type = SRV_CFG_PARAM_BOOL;
        if (d != NULL && de - d == 4 && memcmp(d, "true", 4) == 0)
            p->def = 1;
        else if (d != NULL && !(de - d == 5 && memcmp(d, "false", 5) == 0))
            return srv_cfg_fail(msg, msz, "%s: default must be true or false", p->name);
        return 0;
    }
    if (colon == NULL && tlen == 6 && memcmp(t, "string", 6) == 0) {
        p->type = SRV_CFG_PARAM_STRING;
        if (d != NULL && d != de)
            return srv_cfg_fail(msg, msz, "%s: a string parameter has no default (leave out =...)",
                                p->name);
        p->required = false;
        return 0;
    }
    return srv_cfg_fail(msg, msz, "%s: unknown type (int:MIN..MAX, enum:A|B, bool or string)",
                        p->name);
}

int srv_cfg_params_parse(const char *text, struct srv_cfg_params *out, char *msg, size_t size)
{
    memset(out, 0, sizeof(*out));
    for (const char *s = text; *s != '\0';) {
        while (isspace((unsigned char)*s))
            s++;
        const char *end = strchr(s, ',');
        const char *e = end ? end : s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        const char *c1 = memchr(s, ':', (size_t)(e - s));
        if (c1 == NULL || !param_name_valid(s, (size_t)(c1 - s)))
            return srv_cfg_fail(
                msg, size, "bad parameter \"%.*s\" (expected NAME:TYPE with NAME of a-z 0-9 _)",
                (int)(e - s < 60 ? e - s : 60), s);
        if (out->count == SRV_CFG_PARAMS_MAX)
            return srv_cfg_fail(msg, size, "too many parameters (at most %d)", SRV_CFG_PARAMS_MAX);
        struct srv_cfg_param *p = &out->p[out->count];
        memcpy(p->name, s, (size_t)(c1 - s));
        for (unsigned i = 0; i < out->count; i++) {
            if (strcmp(out->p[i].name, p->name) == 0)
                return srv_cfg_fail(msg, size, "parameter %s declared twice", p->name);
        }
        const char *eq = memchr(c1, '=', (size_t)(e - c1));
        int rc = param_type(p, c1 + 1, eq ? eq : e, eq ? eq + 1 : NULL, e, msg, size);
        if (rc != 0)
            return rc;
        out->count++;
        s = end ? end + 1 : e;
        if (end != NULL && *s == '\0')
            return srv_cfg_fail(msg, size, "empty parameter after the last comma");
    }
    return 0;
}

/* ---- checks between keys ------------------------------------------------------------------- */

static unsigned kind_line(const struct srv_cfg_kind *k, const char *key)
{
    const struct kind_key *kk = kind_key_find(key, strlen(key));
    unsigned l = k->key_line[kk - kind_keys];
    return l != 0 ? l : k->line;
}

static int kind_check_one(const struct srv_cfg *cfg, const struct srv_cfg_kind *k, unsigned *line,
                          const char **key, char *msg, size_t msz)
{
    bool ex = k->exec[0] != '\0', mod = k->module[0] != '\0';
    *key = NULL;
    *line = k->line;
    if (ex && mod) {
        *line = kind_line(k, "module") > kind_line(k, "exec") ? kind_line(k, "module")
                                                              : kind_line(k, "exec");
        *key = kind_line(k, "module") > kind_line(k, "exec") ? "module" : "exec";
        return srv_cfg_fail(msg, msz, "set exec or module, not both");
    }
    if (!ex && !mod)
        return srv_cfg_fail(msg, msz, "missing exec = PROGRAM or module = /PATH/FILE.so");
    for (size_t i = 0; mod && i < NKKEYS; i++) {
        if (kind_keys[i].exec_only && (k->set & (1u << i))) {
            *key = kind_keys[i].key;
            *line = kind_line(k, *key);
            return srv_cfg_fail(msg, msz, "applies to exec kinds only (%s)",
                                strcmp(*key, "params") == 0 ? "a module declares its own parameters"
                                                            : "this kind is a module");
        }
    }
    if (k->timeout_ms > cfg->max_timeout_ms) {
        *key = "timeout_ms";
        *line = kind_line(k, *key);
        return srv_cfg_fail(msg, msz, "timeout_ms (%u) exceeds [limits] max_timeout_ms (%u)",
                            k->timeout_ms, cfg->max_timeout_ms);
    }
    return 0;
}

int srv_cfgk_check(const struct srv_cfg *cfg, unsigned *line, const char **key, char *msg,
                   size_t msz)
{
    for (unsigned i = 0; i < cfg->kind_count; i++) {
        if (kind_check_one(cfg, &cfg->kinds[i], line, key, msg, msz) != 0)
            return (int)i;
    }
    return -1;
}

/* ---- equality, printing, reload ------------------------------------------------------------ */

static bool kind_value_equal(const struct kind_key *kk, const struct srv_cfg_kind *a,
                             const struct srv_cfg_kind *b)
{
    const char *fa = (const char *)a + kk->offset, *fb = (const char *)b + kk->offset;
    switch (kk->type) {
    case KT_STR:
    case KT_USER:
        return strcmp(fa, fb) == 0;
    case KT_UINT:
        return *(const unsigned *)fa == *(const unsigned *)fb;
    case KT_ULONG:
        return *(const unsigned long *)fa == *(const unsigned long *)fb;
    case KT_SIZE:
        return *(const size_t *)fa == *(const size_t *)fb;
    case KT_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    }
    abort();
}

static bool kind_equal(const struct srv_cfg_kind *a, const struct srv_cfg_kind *b)
{
    if (strcmp(a->name, b->name) != 0 || a->set != b->set)
        return false;
    for (size_t i = 0; i < NKKEYS; i++) {
        if (!kind_value_equal(&kind_keys[i], a, b))
            return false;
    }
    return true;
}

bool srv_cfgk_equal(const struct srv_cfg *a, const struct srv_cfg *b)
{
    if (a->kind_count != b->kind_count)
        return false;
    for (unsigned i = 0; i < a->kind_count; i++) {
        if (!kind_equal(&a->kinds[i], &b->kinds[i]))
            return false;
    }
    return true;
}

void srv_cfgk_print(const struct srv_cfg *cfg, FILE *out)
{
    for (unsigned t = 0; t < cfg->kind_count; t++) {
        const struct srv_cfg_kind *k = &cfg->kinds[t];
        fprintf(out, "\n[" CFGK_PREFIX "%s]\n", k->name);
        for (size_t i = 0; i < NKKEYS; i++) {
            const struct kind_key *kk = &kind_keys[i];
            const char *f = (const char *)k + kk->offset;
            if (!(k->set & (1u << i)))
                continue;
            if (kk->type == KT_STR || kk->type == KT_USER)
                fprintf(out, "%s =%s%s\n", kk->key, *f ? " " : "", f);
            else if (kk->type == KT_UINT)
                fprintf(out, "%s = %u\n", kk->key, *(const unsigned *)f);
            else if (kk->type == KT_ULONG)
                fprintf(out, "%s = %lu\n", kk->key, *(const unsigned long *)f);
            else if (kk->type == KT_BOOL)
                fprintf(out, "%s = %s\n", kk->key, *(const bool *)f ? "true" : "false");
            else
                fprintf(out, "%s = %zu\n", kk->key, *(const size_t *)f);
        }
    }
}

int srv_cfgk_key_reload(const char *key, enum srv_cfg_reload *out)
{
    const struct kind_key *kk = kind_key_find(key, strlen(key));
    if (kk == NULL)
        return -ENOENT;
    *out = strcmp(key, "module") == 0 ? SRV_CFG_RESTART : SRV_CFG_LIVE_KIND;
    return 0;
}

/* Each key kind `k` sets and `other` (NULL: no such section) does not, or, unless `unset_only`,
 * sets to another value. A kind whose module differs reports every key it sets as a restart. */
static void kind_diff(const struct srv_cfg_kind *k, const struct srv_cfg_kind *other,
                      bool unset_only, srv_cfg_diff_fn *fn, void *arg)
{
    char sec[sizeof(CFGK_PREFIX) + SRV_CFG_KIND_NAME_MAX];
    snprintf(sec, sizeof(sec), CFGK_PREFIX "%s", k->name);
    bool restart = (k->module[0] != '\0' || (other != NULL && other->module[0] != '\0')) &&
                   (other == NULL || strcmp(k->module, other->module) != 0);
    for (size_t i = 0; i < NKKEYS; i++) {
        const struct kind_key *kk = &kind_keys[i];
        if (!(k->set & (1u << i)))
            continue;
        if (other != NULL && (other->set & (1u << i)) &&
            (unset_only || kind_value_equal(kk, k, other)))
            continue;
        enum srv_cfg_reload r = SRV_CFG_LIVE_KIND;
        srv_cfgk_key_reload(kk->key, &r);
        fn(sec, kk->key, restart ? SRV_CFG_RESTART : r, arg);
    }
}

void srv_cfgk_diff(const struct srv_cfg *a, const struct srv_cfg *b, srv_cfg_diff_fn *fn, void *arg)
{
    for (unsigned t = 0; t < b->kind_count; t++)
        kind_diff(&b->kinds[t], srv_cfg_kind_find(a, b->kinds[t].name), false, fn, arg);
    for (unsigned t = 0; t < a->kind_count; t++)
        kind_diff(&a->kinds[t], srv_cfg_kind_find(b, a->kinds[t].name), true, fn, arg);
}

/* The kinds of `src`, except that a kind whose module differs between the two keeps its form in
 * `dst` (kept when dst has it, left out when it does not): modules load at start only. */
void srv_cfgk_copy(struct srv_cfg *dst, const struct srv_cfg *src)
{
    struct srv_cfg_kind *out = malloc(sizeof(dst->kinds));
    unsigned n = 0;
    if (out == NULL)
        return; /* keep dst's kinds: the reload reports them unchanged */
    for (unsigned i = 0; i < src->kind_count; i++) {
        const struct srv_cfg_kind *s = &src->kinds[i], *d = srv_cfg_kind_find(dst, s->name);
        bool module = s->module[0] != '\0' || (d != NULL && d->module[0] != '\0');
        if (module && (d == NULL || strcmp(s->module, d->module) != 0)) {
            if (d != NULL)
                out[n++] = *d;
            continue;
        }
        out[n++] = *s;
    }
    for (unsigned i = 0; i < dst->kind_count && n < SRV_CFG_MAX_KINDS; i++) {
        const struct srv_cfg_kind *d = &dst->kinds[i];
        if (d->module[0] != '\0' && srv_cfg_kind_find(src, d->name) == NULL)
            out[n++] = *d; /* a module kind removed from the file: kept until a restart */
    }
    memcpy(dst->kinds, out, sizeof(dst->kinds[0]) * n);
    memset(dst->kinds + n, 0, sizeof(dst->kinds[0]) * (SRV_CFG_MAX_KINDS - n));
    dst->kind_count = n;
    free(out);
}
