/* prog.c - a kind's program compiled from its configuration, and the argv and environment of one
 * run.
 *
 * Design: the `exec` text is split on blanks (spaces and tabs) into words; each word is a list of
 * parts, literal bytes or a parameter index, so a value is substituted into its own element and
 * never split again or seen by a shell. `{{` and `}}` are literal braces. Everything that can
 * fail for a reason the operator must fix (an unknown parameter, a missing or non-executable
 * program, an unknown user, a bad cwd) fails here, at configuration time, with a message; the
 * user is resolved to its uid, gid and groups here because getpwnam() is not safe between vfork
 * and execve. A template without parameters keeps a ready argv, so a run builds only the
 * environment.
 *
 * exec_args_build makes one allocation per run holding both pointer arrays and all strings.
 * Threads: a program is read-only after srv_exec_prog_new; exec_args_build runs on any thread.
 */
#include "server/jobs/exec/internal.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "context/ctx.h"

#define EXEC_GROUPS_MAX 256

static int errf(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t size, const char *fmt, ...)
{
    if (err != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* ---- the template ---------------------------------------------------------------------------- */

static int part_add(struct exec_word *w, int param, const char *lit, size_t len)
{
    struct exec_part *np = realloc(w->parts, (w->nparts + 1) * sizeof(*np));
    if (np == NULL)
        return -ENOMEM;
    w->parts = np;
    struct exec_part *pt = &w->parts[w->nparts];
    *pt = (struct exec_part){.param = param, .len = len};
    if (param < 0) {
        if ((pt->lit = malloc(len + 1)) == NULL)
            return -ENOMEM;
        memcpy(pt->lit, lit, len);
        pt->lit[len] = '\0';
    }
    w->nparts++;
    return 0;
}

static int param_find(const struct srv_exec_prog *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->nparams; i++)
        if (strlen(p->names[i]) == len && memcmp(p->names[i], name, len) == 0)
            return (int)i;
    return -1;
}

/* Parse one word (s, len bytes: no blanks) into w. */
static int word_parse(const struct srv_exec_prog *p, struct exec_word *w, const char *s, size_t len,
                      char *err, size_t size)
{
    char lit[len + 1];
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if ((s[i] == '{' || s[i] == '}') && i + 1 < len && s[i + 1] == s[i]) {
            lit[n++] = s[i];
            i += 2;
            continue;
        }
        if (s[i] != '{') {
            lit[n++] = s[i++];
            continue;
        }
        const char *close = memchr(s + i, '}', len - i);
        if (close == NULL)
            return errf(err, size, "unterminated '{' in '%.*s' (write {{ for a brace)", (int)len,
                        s);
        const char *name = s + i + 1;
        size_t nlen = (size_t)(close - name);
        int idx = param_find(p, name, nlen);
        if (idx < 0)
            return errf(err, size,
                        "unknown parameter '{%.*s}' (declared in params; {{ for a brace)",
                        (int)nlen, name);
        if (n > 0 && part_add(w, -1, lit, n) < 0)
            return -ENOMEM;
        n = 0;
        if (part_add(w, idx, NULL, 0) < 0)
            return -ENOMEM;
        i = (size_t)(close - s) + 1;
    }
    if ((n > 0 || w->nparts == 0) && part_add(w, -1, lit, n) < 0)
        return -ENOMEM;
    return 0;
}

static int template_parse(struct srv_exec_prog *p, const char *text, char *err, size_t size)
{
    const char *s = text;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0')
            break;
        size_t len = strcspn(s, " \t");
        struct exec_word *nw = realloc(p->words, (p->nwords + 1) * sizeof(*nw));
        if (nw == NULL)
            return -ENOMEM;
        p->words = nw;
        p->words[p->nwords] = (struct exec_word){0};
        p->nwords++;
        int rc = word_parse(p, &p->words[p->nwords - 1], s, len, err, size);
        if (rc < 0)
            return rc;
        s += len;
    }
    if (p->nwords == 0)
        return errf(err, size, "no program given");
    const struct exec_word *w0 = &p->words[0];
    for (size_t i = 0; i < w0->nparts; i++)
        if (w0->parts[i].param >= 0)
            return errf(err, size, "the program cannot be a parameter");
    return 0;
}

/* ---- the program, the user, the directory ------------------------------------------------------
 */

static int check_executable(const char *path, char *err, size_t size)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errf(err, size, "program %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return errf(err, size, "program %s: not a regular file", path);
    if (access(path, X_OK) != 0)
        return errf(err, size, "program %s: not executable (%s)", path, strerror(errno));
    return 0;
}

/* The absolute path of argv[0] (`name`): as given when it holds a '/', else the first
 * executable match in SRV_EXEC_PATH. */
static int path_resolve(struct srv_exec_prog *p, const char *name, char *err, size_t size)
{
    if (strchr(name, '/') != NULL) {
        if (name[0] != '/')
            return errf(err, size, "program %s: give an absolute path or a name in %s", name,
                        SRV_EXEC_PATH);
        int rc = check_executable(name, err, size);
        if (rc == 0 && (p->path = strdup(name)) == NULL)
            return -ENOMEM;
        return rc;
    }
    const char *dir = SRV_EXEC_PATH;
    while (*dir != '\0') {
        size_t dlen = strcspn(dir, ":");
        char cand[4096];
        int n = snprintf(cand, sizeof(cand), "%.*s/%s", (int)dlen, dir, name);
        struct stat st;
        if (n > 0 && (size_t)n < sizeof(cand) && stat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
            access(cand, X_OK) == 0)
            return (p->path = strdup(cand)) == NULL ? -ENOMEM : 0;
        dir += dlen + (dir[dlen] == ':');
    }
    return errf(err, size, "program %s: not found in %s", name, SRV_EXEC_PATH);
}

static int user_resolve(struct srv_exec_prog *p, const char *user, char *err, size_t size)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    bool named = user != NULL && user[0] != '\0';
    int rc = named ? getpwnam_r(user, &pw, buf, sizeof(buf), &res)
                   : getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res);
    if (res == NULL && named)
        return errf(err, size, "no such user '%s'%s%s", user, rc ? ": " : "",
                    rc ? strerror(rc) : "");
    size_t hlen = strlen(res != NULL ? res->pw_dir : "/");
    if ((p->home = malloc(hlen + 6)) == NULL)
        return -ENOMEM;
    snprintf(p->home, hlen + 6, "HOME=%s", res != NULL ? res->pw_dir : "/");
    if (!named)
        return 0;
    if (res->pw_uid == geteuid())
        return 0; /* already that user: nothing to switch */
    if (geteuid() != 0)
        return errf(err, size, "running as user '%s' needs the server to start as root", user);
    int ng = EXEC_GROUPS_MAX;
    gid_t groups[EXEC_GROUPS_MAX];
    if (getgrouplist(user, res->pw_gid, groups, &ng) < 0)
        return errf(err, size, "user '%s' is in more than %d groups", user, EXEC_GROUPS_MAX);
    if ((p->groups = malloc((size_t)ng * sizeof(gid_t))) == NULL)
        return -ENOMEM;
    memcpy(p->groups, groups, (size_t)ng * sizeof(gid_t));
    p->ngroups = (size_t)ng;
    p->set_user = true;
    p->uid = res->pw_uid;
    p->gid = res->pw_gid;
    return 0;
}

static int cwd_check(struct srv_exec_prog *p, const char *cwd, char *err, size_t size)
{
    if (cwd == NULL || cwd[0] == '\0')
        return 0;
    struct stat st;
    if (cwd[0] != '/')
        return errf(err, size, "'%s' is not an absolute path", cwd);
    if (stat(cwd, &st) != 0)
        return errf(err, size, "%s: %s", cwd, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return errf(err, size, "%s: not a directory", cwd);
    return (p->cwd = strdup(cwd)) == NULL ? -ENOMEM : 0;
}

static int names_copy(struct srv_exec_prog *p, const struct srv_exec_conf *conf)
{
    p->nparams = conf->nparams;
    if (conf->nparams == 0)
        return 0;
    p->names = calloc(conf->nparams, sizeof(char *));
    p->env_names = calloc(conf->nparams, sizeof(char *));
    if (p->names == NULL || p->env_names == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < conf->nparams; i++) {
        const char *n = conf->param_names[i];
        size_t len = strlen(n);
        if ((p->names[i] = strdup(n)) == NULL ||
            (p->env_names[i] = malloc(sizeof("SPINDLE_PARAM_=") + len)) == NULL)
            return -ENOMEM;
        char *e = p->env_names[i];
        e += sprintf(e, "SPINDLE_PARAM_");
        for (size_t j = 0; j < len; j++)
            *e++ = isalnum((unsigned char)n[j]) ? (char)toupper((unsigned char)n[j]) : '_';
        strcpy(e, "=");
    }
    return 0;
}

/* argv_fixed when no element names a parameter. */
static int argv_fix(struct srv_exec_prog *p)
{
    for (size_t i = 0; i < p->nwords; i++)
        for (size_t j = 0; j < p->words[i].nparts; j++)
            if (p->words[i].parts[j].param >= 0)
                return 0;
    if ((p->argv_fixed = calloc(p->nwords + 1, sizeof(char *))) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < p->nwords; i++)
        p->argv_fixed[i] = p->words[i].parts[0].lit; /* one literal part per word */
    return 0;
}

struct srv_exec_prog *srv_exec_prog_new(const struct srv_exec_conf *conf, const char **key,
                                        char *err, size_t size)
{
    const char *bad = "exec";
    struct srv_exec_prog *p = calloc(1, sizeof(*p));
    int rc = -ENOMEM;
    if (p == NULL)
        goto fail;
    if ((rc = names_copy(p, conf)) < 0)
        goto fail;
    if ((rc = template_parse(p, conf->exec != NULL ? conf->exec : "", err, size)) < 0)
        goto fail;
    if ((rc = path_resolve(p, p->words[0].parts[0].lit, err, size)) < 0)
        goto fail;
    if ((rc = argv_fix(p)) < 0)
        goto fail;
    bad = "user";
    if ((rc = user_resolve(p, conf->user, err, size)) < 0)
        goto fail;
    bad = "cwd";
    if ((rc = cwd_check(p, conf->cwd, err, size)) < 0)
        goto fail;
    p->limits[EXEC_LIM_CPU] = conf->rlimit_cpu_s;
    p->limits[EXEC_LIM_AS] = conf->rlimit_as;
    p->limits[EXEC_LIM_NOFILE] = conf->rlimit_nofile;
    p->max_output = conf->max_output_bytes ? conf->max_output_bytes : SIZE_MAX - 1;
    p->grace_ms = conf->cancel_grace_ms;
    return p;
fail:
    if (rc == -ENOMEM)
        errf(err, size, "out of memory");
    if (key != NULL)
        *key = bad;
    srv_exec_prog_free(p);
    return NULL;
}

void srv_exec_prog_free(struct srv_exec_prog *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nwords; i++) {
        for (size_t j = 0; j < p->words[i].nparts; j++)
            free(p->words[i].parts[j].lit);
        free(p->words[i].parts);
    }
    for (size_t i = 0; i < p->nparams; i++) {
        free(p->names != NULL ? p->names[i] : NULL);
        free(p->env_names != NULL ? p->env_names[i] : NULL);
    }
    free(p->words);
    free(p->argv_fixed);
    free(p->names);
    free(p->env_names);
    free(p->path);
    free(p->home);
    free(p->cwd);
    free(p->groups);
    free(p);
}

const char *srv_exec_prog_path(const struct srv_exec_prog *p)
{
    return p->path;
}

/* ---- one run's argv and environment ------------------------------------------------------------
 */

/* A bump allocator over the run's one allocation. */
struct arena {
    char *s, *end;
};

static char *arena_put(struct arena *a, const char *s, size_t len)
{
    char *r = a->s;
    memcpy(r, s, len);
    r[len] = '\0';
    a->s += len + 1;
    return r;
}

static const char *value_of(const struct srv_exec_input *in, int i)
{
    const char *v = in->values != NULL ? in->values[i] : NULL;
    return v != NULL ? v : "";
}

#define ENV_FIXED 8 /* PATH, LANG, HOME, KIND, REQUEST_ID, TENANT, TRACEPARENT, DEADLINE_MS */

int exec_args_build(const struct srv_exec_prog *p, const struct srv_exec_input *in,
                    struct exec_args *out)
{
    struct ctx *c = ctx_current();
    char extra[4][160];
    size_t nextra = 0;
    if (c != NULL && ctx_request_id(c)[0] != '\0')
        snprintf(extra[nextra++], sizeof(extra[0]), "SPINDLE_REQUEST_ID=%s", ctx_request_id(c));
    if (c != NULL && ctx_tenant(c)[0] != '\0')
        snprintf(extra[nextra++], sizeof(extra[0]), "SPINDLE_TENANT=%s", ctx_tenant(c));
    if (c != NULL && ctx_trace_id_hex(c)[0] != '\0') {
        struct ctx_trace t = *ctx_trace(c);
        ctx_span_new(t.span_id); /* the program's own span inside the job's */
        char tp[CTX_TRACEPARENT_LEN + 1];
        ctx_trace_format(&t, tp, sizeof(tp));
        snprintf(extra[nextra++], sizeof(extra[0]), "TRACEPARENT=%s", tp);
    }
    uint64_t dl = c != NULL ? ctx_deadline(c) : 0;
    if (dl != 0) {
        uint64_t now = ctx_now_ns();
        snprintf(extra[nextra++], sizeof(extra[0]), "SPINDLE_DEADLINE_MS=%llu",
                 (unsigned long long)(dl > now ? (dl - now) / 1000000u : 0));
    }
    const char *kind = in->kind != NULL ? in->kind : "";

    size_t bytes = 0, nargs = p->argv_fixed != NULL ? 0 : p->nwords;
    for (size_t i = 0; i < nargs; i++)
        for (size_t j = 0; j < p->words[i].nparts; j++) {
            const struct exec_part *pt = &p->words[i].parts[j];
            bytes += pt->param < 0 ? pt->len : strlen(value_of(in, pt->param));
        }
    bytes += nargs; /* the NULs */
    for (size_t i = 0; i < p->nparams; i++) {
        const char *v = in->values != NULL ? in->values[i] : NULL;
        if (v != NULL)
            bytes += strlen(p->env_names[i]) + strlen(v) + 1;
    }
    bytes += sizeof("PATH=" SRV_EXEC_PATH) + sizeof("LANG=C.UTF-8") + strlen(p->home) + 1 +
             sizeof("SPINDLE_KIND=") + strlen(kind);
    for (size_t i = 0; i < nextra; i++)
        bytes += strlen(extra[i]) + 1;
    size_t nptr = (nargs + 1) + (ENV_FIXED + p->nparams + 1);

    char *mem = malloc(nptr * sizeof(char *) + bytes);
    if (mem == NULL)
        return -ENOMEM;
    char **ptrs = (char **)(void *)mem;
    struct arena a = {mem + nptr * sizeof(char *), mem + nptr * sizeof(char *) + bytes};
    char **argv = p->argv_fixed != NULL ? p->argv_fixed : ptrs;
    char **envp = ptrs + nargs + 1;
    for (size_t i = 0; i < nargs; i++) {
        argv[i] = a.s;
        for (size_t j = 0; j < p->words[i].nparts; j++) {
            const struct exec_part *pt = &p->words[i].parts[j];
            const char *s = pt->param < 0 ? pt->lit : value_of(in, pt->param);
            size_t len = pt->param < 0 ? pt->len : strlen(s);
            memcpy(a.s, s, len);
            a.s += len;
        }
        *a.s++ = '\0';
    }
    if (nargs > 0)
        argv[nargs] = NULL;
    size_t e = 0;
    envp[e++] = arena_put(&a, "PATH=" SRV_EXEC_PATH, strlen("PATH=" SRV_EXEC_PATH));
    envp[e++] = arena_put(&a, "LANG=C.UTF-8", strlen("LANG=C.UTF-8"));
    envp[e++] = arena_put(&a, p->home, strlen(p->home));
    envp[e] = a.s;
    a.s += sprintf(a.s, "SPINDLE_KIND=%s", kind) + 1;
    e++;
    for (size_t i = 0; i < nextra; i++)
        envp[e++] = arena_put(&a, extra[i], strlen(extra[i]));
    for (size_t i = 0; i < p->nparams; i++) {
        const char *v = in->values != NULL ? in->values[i] : NULL;
        if (v == NULL)
            continue;
        envp[e] = a.s;
        a.s += sprintf(a.s, "%s%s", p->env_names[i], v) + 1;
        e++;
    }
    envp[e] = NULL;
    if (a.s > a.end)
        abort(); /* the sizes above are wrong: a broken invariant */
    out->argv = argv;
    out->envp = envp;
    out->mem = mem;
    return 0;
}
