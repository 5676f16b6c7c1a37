/* loader.c - modules (`[kind.NAME] module = /path/x.so`) and the check of a kind's description,
 * whoever wrote it (a module, a built-in kind, the exec engine).
 *
 * Design: a module is opened with dlopen(RTLD_NOW | RTLD_LOCAL), so an unresolved symbol fails
 * here and not at its first job, and its symbols never clash with another module's. Before
 * anything of it runs, its spindle_module_abi is read: another major is refused with both
 * versions, without calling into code that may expect another host table. Then its
 * spindle_module_init gets the host table and points at its description, which
 * srv_kind_describe checks and copies: at most its declared size (so a newer minor's fields are
 * never read beyond what this host knows) and at least every 1.0 field. A module is loaded once
 * per process (the list below) and never unloaded: a reload reuses it, jobs may hold pointers
 * into it until the end, and modules load at start only (config.c keeps a changed module kind in
 * its running form). srv_modules_release lets each module release its data at exit.
 *
 * Threads: the list is touched on the main thread only (start, --check-config, reload, exit).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/jobs/internal.h"
#include "server/jobs/jobs.h"

/* Size of a 1.0 parameter declaration: up to and with `limit`. */
#define PARAM_SIZE_1_0 (offsetof(struct spindle_param, limit) + sizeof(const char *))

struct loaded_module {
    struct loaded_module *next;
    char *path;
    void *handle;
    const struct spindle_kind *desc;
};

static struct loaded_module *modules; /* main thread only */

/* ---- server limits a parameter may name ------------------------------------------------------ */

static const struct {
    const char *name;
    size_t offset;
    size_t size;
} limits[] = {
#define LIM(f)                                                                                     \
    {                                                                                              \
#f, offsetof(struct srv_cfg, f), sizeof(((struct srv_cfg *)0)->f)                          \
    }
    LIM(max_body_bytes),          LIM(max_spin_ms),    LIM(max_primes_n), LIM(max_sha256_rounds),
    LIM(max_compress_level_zstd), LIM(max_timeout_ms),
#undef LIM
};

int srv_job_limit_index(const char *name)
{
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        if (strcmp(limits[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

uint64_t srv_job_limit_value(const struct srv_cfg *cfg, int index)
{
    const char *f = (const char *)cfg + limits[index].offset;
    if (limits[index].size == sizeof(unsigned))
        return *(const unsigned *)f;
    if (limits[index].size == sizeof(unsigned long))
        return *(const unsigned long *)f;
    return *(const size_t *)f;
}

/* ---- descriptions ---------------------------------------------------------------------------- */

static bool name_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > 31 || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    }
    return true;
}

/* Check and copy parameter i (read with the declaration's own stride). */
static int describe_param(struct srv_kind *k, const struct spindle_kind *d, unsigned i,
                          const char *what, char *msg, size_t msz)
{
    struct spindle_param p = {0};
    const char *at = (const char *)d->params + (size_t)i * d->param_size;
    memcpy(&p, at, d->param_size < sizeof(p) ? d->param_size : sizeof(p));
    struct srv_kind_param *o = &k->params[i];
    if (!name_valid(p.name)) {
        snprintf(msg, msz, "%s: parameter %u: bad name (1..31 bytes of a-z 0-9 _)", what, i);
        return -EINVAL;
    }
    snprintf(o->name, sizeof(o->name), "%s", p.name);
    for (unsigned j = 0; j < i; j++) {
        if (strcmp(k->params[j].name, o->name) == 0) {
            snprintf(msg, msz, "%s: parameter %s declared twice", what, o->name);
            return -EINVAL;
        }
    }
    o->type = p.type;
    o->required = p.required != 0;
    o->min = p.min;
    o->max = p.max;
    o->def = p.def;
    o->limit = -1;
    switch (p.type) {
    case SPINDLE_PARAM_INT:
        if (p.min < 0 || p.min > p.max || (!o->required && (p.def < p.min || p.def > p.max)))
            goto bad;
        if (p.limit != NULL && (o->limit = srv_job_limit_index(p.limit)) < 0) {
            snprintf(msg, msz, "%s: parameter %s names an unknown server limit '%.40s'", what,
                     o->name, p.limit);
            return -EINVAL;
        }
        return 0;
    case SPINDLE_PARAM_ENUM:
        for (o->nchoices = 0; p.choices != NULL && p.choices[o->nchoices] != NULL;) {
            if (o->nchoices == SPINDLE_CHOICES_MAX)
                goto bad;
            o->choices[o->nchoices] = p.choices[o->nchoices];
            o->nchoices++;
        }
        if (o->nchoices == 0 || (!o->required && (p.def < 0 || p.def >= (int64_t)o->nchoices)))
            goto bad;
        return 0;
    case SPINDLE_PARAM_BOOL:
        if (!o->required && p.def != 0 && p.def != 1)
            goto bad;
        return 0;
    case SPINDLE_PARAM_STRING:
        o->required = false;
        return 0;
    default:
        snprintf(msg, msz, "%s: parameter %s has an unknown type %d", what, o->name, p.type);
        return -EINVAL;
    }
bad:
    snprintf(msg, msz, "%s: parameter %s: bad range, choices or default", what, o->name);
    return -EINVAL;
}

int srv_kind_describe(struct srv_kind *k, const struct spindle_kind *d, const char *what, char *msg,
                      size_t msz)
{
    if (d == NULL) {
        snprintf(msg, msz, "%s: no kind description", what);
        return -EINVAL;
    }
    if (d->abi_major != SPINDLE_ABI_MAJOR) {
        snprintf(msg, msz, "%s: kind description of ABI %u.%u, this server has ABI %d.%d", what,
                 d->abi_major, d->abi_minor, SPINDLE_ABI_MAJOR, SPINDLE_ABI_MINOR);
        return -EINVAL;
    }
    if (d->size < SPINDLE_KIND_SIZE_1_0) {
        snprintf(msg, msz,
                 "%s: kind description of %u bytes, ABI %u.%u needs at least %zu (this server "
                 "has ABI %d.%d)",
                 what, d->size, d->abi_major, d->abi_minor, (size_t)SPINDLE_KIND_SIZE_1_0,
                 SPINDLE_ABI_MAJOR, SPINDLE_ABI_MINOR);
        return -EINVAL;
    }
    memset(&k->desc, 0, sizeof(k->desc));
    memcpy(&k->desc, d, d->size < sizeof(k->desc) ? d->size : sizeof(k->desc));
    if (k->desc.run == NULL || !name_valid(k->desc.name)) {
        snprintf(msg, msz, "%s: kind description without run or with a bad name", what);
        return -EINVAL;
    }
    if (k->desc.nparams > SPINDLE_PARAMS_MAX ||
        (k->desc.nparams > 0 && (k->desc.params == NULL || k->desc.param_size < PARAM_SIZE_1_0))) {
        snprintf(msg, msz, "%s: bad parameter declarations (at most %d, param_size >= %zu)", what,
                 SPINDLE_PARAMS_MAX, (size_t)PARAM_SIZE_1_0);
        return -EINVAL;
    }
    k->nparams = k->desc.nparams;
    for (unsigned i = 0; i < k->nparams; i++) {
        int rc = describe_param(k, &k->desc, i, what, msg, msz);
        if (rc < 0)
            return rc;
    }
    if (k->desc.summary == NULL)
        k->desc.summary = "";
    return 0;
}

/* ---- modules --------------------------------------------------------------------------------- */

static int module_open(const char *path, void **handle, spindle_module_init_fn **init, char *msg,
                       size_t msz)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(msg, msz, "module %s: %s", path, strerror(errno));
        return -ENOENT;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *e = dlerror();
        snprintf(msg, msz, "module %s: cannot load: %s", path, e != NULL ? e : "unknown error");
        return -ENOEXEC;
    }
    const uint32_t *abi = dlsym(h, SPINDLE_MODULE_ABI_SYMBOL);
    if (abi == NULL) {
        snprintf(msg, msz,
                 "module %s: no " SPINDLE_MODULE_ABI_SYMBOL
                 " symbol (not a spindle module, or built without SPINDLE_MODULE_DECLARE); this "
                 "server has ABI %d.%d",
                 path, SPINDLE_ABI_MAJOR, SPINDLE_ABI_MINOR);
        goto fail;
    }
    if (*abi >> 16 != SPINDLE_ABI_MAJOR) {
        snprintf(msg, msz, "module %s: built for ABI %u.%u, this server has ABI %d.%d", path,
                 *abi >> 16, *abi & 0xffffu, SPINDLE_ABI_MAJOR, SPINDLE_ABI_MINOR);
        goto fail;
    }
    /* dlsym gives a data pointer; POSIX guarantees it converts to a function pointer */
    *(void **)init = dlsym(h, SPINDLE_MODULE_INIT_SYMBOL);
    if (*init == NULL) {
        snprintf(msg, msz, "module %s (ABI %u.%u): no entry point " SPINDLE_MODULE_INIT_SYMBOL,
                 path, *abi >> 16, *abi & 0xffffu);
        goto fail;
    }
    *handle = h;
    return 0;
fail:
    dlclose(h);
    return -EINVAL;
}

int srv_module_load(const char *path, const struct spindle_kind **out, char *msg, size_t msz)
{
    for (struct loaded_module *m = modules; m != NULL; m = m->next) {
        if (strcmp(m->path, path) == 0) {
            *out = m->desc;
            return 0;
        }
    }
    void *h;
    spindle_module_init_fn *init;
    int rc = module_open(path, &h, &init, msg, msz);
    if (rc < 0)
        return rc;
    struct loaded_module *m = calloc(1, sizeof(*m));
    char err[256] = "";
    const struct spindle_kind *d = NULL;
    if (m == NULL || (m->path = strdup(path)) == NULL) {
        snprintf(msg, msz, "module %s: out of memory", path);
        rc = -ENOMEM;
        goto fail;
    }
    rc = init(srv_job_host(), &d, err, sizeof(err));
    if (rc != 0 || d == NULL) {
        snprintf(msg, msz, "module %s: its init failed (%s): %s", path,
                 rc != 0 ? strerror(rc < 0 ? -rc : rc) : "no kind description",
                 err[0] ? err : "no reason given");
        rc = -EINVAL;
        goto fail;
    }
    m->handle = h;
    m->desc = d;
    m->next = modules;
    modules = m;
    *out = d;
    return 0;
fail:
    if (m != NULL)
        free(m->path);
    free(m);
    dlclose(h);
    return rc;
}

void srv_modules_release(void)
{
    while (modules != NULL) {
        struct loaded_module *m = modules;
        modules = m->next;
        /* Only the 1.0 prefix may be read; fini is in it, and d->size was checked at describe. */
        if (m->desc->size >= SPINDLE_KIND_SIZE_1_0 && m->desc->fini != NULL)
            m->desc->fini(m->desc->data);
        free(m->path);
        free(m); /* the object stays mapped: nothing of it runs any more */
    }
}
