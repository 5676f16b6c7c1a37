/* registry.c - the job kinds in force: immutable, reference-counted snapshots of the built-in
 * kinds and the [kind.NAME] sections, and the current one.
 *
 * Design: a snapshot (struct srv_kinds) is one allocation: its kinds sorted by name, each a
 * struct srv_kind with the kind's description copied in (srv_kind_describe), its parameters and
 * its [kind.NAME] settings. A snapshot is never changed after srv_kinds_build; a reload builds a
 * new one and installs it. Jobs refer to the snapshot of their kind from prepare to fini
 * (srv_job_prepare takes a reference), so an old snapshot lives until its last job is done; its
 * exec kinds' data is released (fini) then. The built-in kinds register an entry point each in
 * the linker section "srv_job_builtins" (SRV_JOB_BUILTIN) and are described once per process by
 * calling it with the host table, exactly as a module is; modules are loaded by loader.c, once.
 *
 * `current` is guarded by a mutex: taking a reference to the current snapshot is a lock, an
 * atomic increment and an unlock, from any thread; install swaps it and drops the old reference
 * outside the lock.
 *
 * Exec kinds get their parameter declarations from `params =` (srv_cfg_params_parse), kept in
 * the snapshot's storage, and the rest of their description from srv_exec_kind_new.
 *
 * Threads: build, install and shutdown on the main (loop) thread; current, find, ref, unref on
 * any. Lock order: `current_lock` is a leaf.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jobs/internal.h"
#include "server/jobs/jobs.h"

#define KINDS_BUILTIN_MAX 16

extern spindle_module_init_fn *const __start_srv_job_builtins[] __attribute__((weak));
extern spindle_module_init_fn *const __stop_srv_job_builtins[] __attribute__((weak));

/* An exec kind's parameter declarations, owned by its snapshot. */
struct exec_params {
    struct srv_cfg_params cfg;
    struct spindle_param decl[SRV_CFG_PARAMS_MAX];
    const char *choices[SRV_CFG_PARAMS_MAX][SRV_CFG_CHOICES_MAX + 1];
};

struct srv_kinds {
    atomic_uint refs;
    size_t count;
    struct exec_params *exec; /* one per kind slot, allocated when the snapshot has exec kinds */
    struct srv_kind kinds[];  /* sorted by name */
};

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct srv_kinds *current; /* under current_lock */

static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static const struct spindle_kind *builtin_desc[KINDS_BUILTIN_MAX]; /* written once */
static size_t builtin_count;
static struct srv_kinds *builtin_only; /* written once */

/* ---- the built-in kinds ---------------------------------------------------------------------- */

static void builtins_init(void)
{
    char err[256];
    for (spindle_module_init_fn *const *p = __start_srv_job_builtins;
         p != NULL && p < __stop_srv_job_builtins; p++) {
        if (*p == NULL)
            continue; /* a sanitizer may pad the section with zeroed redzones */
        const struct spindle_kind *d = NULL;
        if (builtin_count == KINDS_BUILTIN_MAX || (*p)(srv_job_host(), &d, err, sizeof(err)) != 0 ||
            d == NULL) {
            fprintf(stderr, "spindle: a built-in job kind failed to start\n");
            abort(); /* a broken build */
        }
        builtin_desc[builtin_count++] = d;
    }
}

static void builtins_load(void)
{
    if (pthread_once(&builtin_once, builtins_init) != 0)
        abort();
}

static bool builtin_named(const char *name)
{
    for (size_t i = 0; i < builtin_count; i++) {
        if (strcmp(builtin_desc[i]->name, name) == 0)
            return true;
    }
    return false;
}

/* ---- building -------------------------------------------------------------------------------- */

static int kind_cmp(const void *a, const void *b)
{
    return strcmp(((const struct srv_kind *)a)->name, ((const struct srv_kind *)b)->name);
}

/* Append "ORIGIN:LINE: [kind.NAME] KEY: msg\n" to err. */
static void build_err(char *err, size_t size, const struct srv_cfg *cfg,
                      const struct srv_cfg_kind *ck, unsigned line, const char *key,
                      const char *msg)
{
    size_t used = strnlen(err, size);
    if (used + 1 >= size)
        return;
    char where[32] = "";
    if (line > 0)
        snprintf(where, sizeof(where), ":%u", line);
    snprintf(err + used, size - used, "%s%s%s: [kind.%s]%s%s: %s", used > 0 ? "\n" : "",
             cfg->source[0] ? cfg->source : "(configuration)", where, ck->name, key ? " " : "",
             key ? key : "", msg);
}

static unsigned key_line(const struct srv_cfg_kind *ck, const char *key)
{
    unsigned idx = strcmp(key, "exec") == 0 ? 0 : 1; /* the first two keys of config_kinds.c */
    return ck->key_line[idx] != 0 ? ck->key_line[idx] : ck->line;
}

/* Fill the exec parameters of slot i from `params =` and point the description at them. */
static int exec_params_fill(struct exec_params *ep, const struct srv_cfg_kind *ck,
                            struct spindle_kind *d, char *msg, size_t msz)
{
    if (srv_cfg_params_parse(ck->params, &ep->cfg, msg, msz) != 0)
        return -EINVAL;
    for (unsigned i = 0; i < ep->cfg.count; i++) {
        const struct srv_cfg_param *cp = &ep->cfg.p[i];
        const char *c = cp->choices;
        for (unsigned j = 0; j < cp->nchoices; j++, c += strlen(c) + 1)
            ep->choices[i][j] = c;
        ep->choices[i][cp->nchoices] = NULL;
        ep->decl[i] = (struct spindle_param){.name = cp->name,
                                             .type = (int)cp->type,
                                             .required = cp->required,
                                             .min = cp->min,
                                             .max = cp->max,
                                             .def = cp->def,
                                             .choices = cp->nchoices ? ep->choices[i] : NULL};
    }
    d->params = ep->cfg.count ? ep->decl : NULL;
    d->nparams = ep->cfg.count;
    d->param_size = sizeof(struct spindle_param);
    return 0;
}

/* The description of configured kind `ck` into k. Returns 0 or -errno with err appended. */
static int build_configured(struct srv_kinds *ks, struct srv_kind *k, const struct srv_cfg *cfg,
                            const struct srv_cfg_kind *ck, char *err, size_t size)
{
    char msg[512], what[SRV_CFG_VALUE_MAX + 16];
    bool module = ck->module[0] != '\0';
    const char *key = module ? "module" : "exec";
    int rc;
    if (builtin_named(ck->name)) {
        build_err(err, size, cfg, ck, ck->line, NULL, "the name of a built-in kind");
        return -EEXIST;
    }
    snprintf(k->name, sizeof(k->name), "%s", ck->name);
    if (module) {
        const struct spindle_kind *d = NULL;
        snprintf(what, sizeof(what), "module %s", ck->module);
        rc = srv_module_load(ck->module, &d, msg, sizeof(msg));
        if (rc == 0)
            rc = srv_kind_describe(k, d, what, msg, sizeof(msg));
        k->origin = SRV_KIND_MODULE;
    } else {
        struct spindle_kind d = {SPINDLE_KIND_HEAD};
        size_t slot = (size_t)(k - ks->kinds);
        snprintf(what, sizeof(what), "exec kind %s", ck->name);
        rc = exec_params_fill(&ks->exec[slot], ck, &d, msg, sizeof(msg));
        if (rc == 0)
            rc = srv_exec_kind_new(ck, srv_job_host(), &d, msg, sizeof(msg));
        if (rc == 0)
            rc = srv_kind_describe(k, &d, what, msg, sizeof(msg));
        if (rc != 0 && d.fini != NULL)
            d.fini(d.data); /* the engine made its data: nobody else will release it */
        k->origin = SRV_KIND_EXEC;
    }
    if (rc != 0) {
        build_err(err, size, cfg, ck, key_line(ck, key), key, msg);
        k->origin = SRV_KIND_BUILTIN; /* nothing to release at free */
        return rc;
    }
    if (ck->content_type[0] != '\0') {
        snprintf(k->ctype_store, sizeof(k->ctype_store), "%s", ck->content_type);
        k->content_type = k->ctype_store;
    }
    snprintf(k->source_store, sizeof(k->source_store), "%s:%u", cfg->source, ck->line);
    k->max_inflight = ck->max_inflight;
    k->timeout_ms = ck->timeout_ms;
    k->max_output_bytes = ck->max_output_bytes;
    return 0;
}

static void kinds_free(struct srv_kinds *ks)
{
    for (size_t i = 0; i < ks->count; i++) {
        struct srv_kind *k = &ks->kinds[i];
        if (k->origin == SRV_KIND_EXEC && k->desc.fini != NULL)
            k->desc.fini(k->desc.data);
    }
    free(ks->exec);
    free(ks);
}

struct srv_kinds *srv_kinds_build(const struct srv_cfg *cfg, char *err, size_t size)
{
    builtins_load();
    size_t n = builtin_count + (cfg != NULL ? cfg->kind_count : 0);
    struct srv_kinds *ks = calloc(1, sizeof(*ks) + n * sizeof(ks->kinds[0]));
    bool failed = false;
    if (size > 0)
        err[0] = '\0';
    if (ks == NULL || (cfg != NULL && cfg->kind_count > 0 &&
                       (ks->exec = calloc(n, sizeof(ks->exec[0]))) == NULL)) {
        snprintf(err, size, "job kinds: out of memory");
        free(ks);
        return NULL;
    }
    atomic_init(&ks->refs, 1);
    for (size_t i = 0; i < builtin_count; i++) {
        struct srv_kind *k = &ks->kinds[ks->count];
        char msg[256];
        if (srv_kind_describe(k, builtin_desc[i], builtin_desc[i]->name, msg, sizeof(msg)) != 0)
            abort(); /* a built-in kind with a bad description: a broken build */
        snprintf(k->name, sizeof(k->name), "%s", k->desc.name);
        k->source = "";
        ks->count++;
    }
    for (unsigned i = 0; cfg != NULL && i < cfg->kind_count; i++) {
        struct srv_kind *k = &ks->kinds[ks->count];
        if (build_configured(ks, k, cfg, &cfg->kinds[i], err, size) != 0) {
            failed = true;
            continue; /* report every kind's error */
        }
        ks->count++;
    }
    for (size_t i = 0; i < ks->count; i++)
        ks->kinds[i].owner = ks;
    if (failed) {
        kinds_free(ks);
        return NULL;
    }
    /* Sorting moves the kinds (their exec parameters stay in their slots): point each at its
     * own storage and snapshot afterwards. */
    qsort(ks->kinds, ks->count, sizeof(ks->kinds[0]), kind_cmp);
    for (size_t i = 0; i < ks->count; i++) {
        struct srv_kind *k = &ks->kinds[i];
        k->owner = ks;
        k->source = k->source_store;
        if (k->content_type != NULL)
            k->content_type = k->ctype_store;
        atomic_init(&k->inflight, 0);
    }
    return ks;
}

struct srv_kinds *srv_kinds_ref(struct srv_kinds *ks)
{
    atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    return ks;
}

void srv_kinds_unref(struct srv_kinds *ks)
{
    if (ks != NULL && atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) == 1)
        kinds_free(ks);
}

const struct srv_kind *srv_kinds_find(const struct srv_kinds *ks, const char *name, size_t len)
{
    size_t lo = 0, hi = ks->count;
    while (lo < hi) { /* sorted by strcmp: compare the first len bytes, then the length */
        size_t mid = (lo + hi) / 2;
        const char *kn = ks->kinds[mid].name;
        size_t kl = strlen(kn);
        int c = memcmp(kn, name, kl < len ? kl : len);
        if (c == 0)
            c = kl < len ? -1 : kl > len ? 1 : 0;
        if (c == 0)
            return &ks->kinds[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t srv_kinds_count(const struct srv_kinds *ks)
{
    return ks->count;
}

const struct srv_kind *srv_kinds_at(const struct srv_kinds *ks, size_t i)
{
    return i < ks->count ? &ks->kinds[i] : NULL;
}

void srv_kinds_install(struct srv_kinds *ks)
{
    pthread_mutex_lock(&current_lock);
    struct srv_kinds *old = current;
    current = ks;
    pthread_mutex_unlock(&current_lock);
    srv_kinds_unref(old);
}

struct srv_kinds *srv_kinds_current(void)
{
    pthread_mutex_lock(&current_lock);
    struct srv_kinds *ks = current != NULL ? srv_kinds_ref(current) : NULL;
    pthread_mutex_unlock(&current_lock);
    if (ks == NULL) /* nothing installed (tests, tools): the built-in kinds */
        ks = srv_kinds_ref((struct srv_kinds *)srv_kinds_builtin());
    return ks;
}

void srv_kinds_shutdown(void)
{
    srv_kinds_install(NULL);
    srv_modules_release();
}

static void builtin_only_init(void)
{
    char err[64];
    builtin_only = srv_kinds_build(NULL, err, sizeof(err));
    if (builtin_only == NULL)
        abort();
}

const struct srv_kinds *srv_kinds_builtin(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (pthread_once(&once, builtin_only_init) != 0)
        abort();
    return builtin_only;
}
