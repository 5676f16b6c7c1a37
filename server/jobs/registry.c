/* registry.c - the table of job kinds, gathered by the linker, and the parameter helpers the
 * kinds share.
 *
 * Design: every kind file puts one pointer to its descriptor into the section "srv_job_kinds"
 * (SRV_JOB_KIND_REGISTER). The first registry call copies the non-NULL pointers between
 * __start_srv_job_kinds and __stop_srv_job_kinds into a static array sorted by name (under
 * pthread_once, so any thread may be first). NULL entries are skipped because a sanitizer may pad
 * section entries with zeroed redzones. The symbols are weak so that a binary linking no kind
 * still links (and has an empty registry). After the once-initialisation the array is read-only,
 * so lookups take no lock. Two kinds with the same name, or more than SRV_JOB_KINDS_MAX, are a
 * broken build and abort.
 *
 * The parameter helpers implement the strict rules every kind shares: unknown and repeated
 * parameters are refused, integers are plain decimal digits with overflow detection, and every
 * refusal comes with a one-line message for the client. Keys are echoed with non-printable bytes
 * replaced, so a message is always printable ASCII.
 */
#include "server/jobs/jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRV_JOB_KINDS_MAX 64
#define SRV_JOB_KEY_ECHO  32 /* bytes of an offending key quoted in a message */

extern const struct srv_job_kind *const __start_srv_job_kinds[] __attribute__((weak));
extern const struct srv_job_kind *const __stop_srv_job_kinds[] __attribute__((weak));

static pthread_once_t kinds_once = PTHREAD_ONCE_INIT;
static const struct srv_job_kind *kinds[SRV_JOB_KINDS_MAX]; /* written once, then read-only */
static size_t kinds_count;

static int kind_cmp(const void *a, const void *b)
{
    const struct srv_job_kind *ka = *(const struct srv_job_kind *const *)a;
    const struct srv_job_kind *kb = *(const struct srv_job_kind *const *)b;
    return strcmp(ka->name, kb->name);
}

static void kinds_init(void)
{
    const struct srv_job_kind *const *p = __start_srv_job_kinds;
    const struct srv_job_kind *const *end = __stop_srv_job_kinds;

    for (; p != NULL && p < end; p++) {
        if (*p == NULL)
            continue;
        if (kinds_count == SRV_JOB_KINDS_MAX) {
            fprintf(stderr, "spindle: more than %d job kinds registered\n", SRV_JOB_KINDS_MAX);
            abort();
        }
        kinds[kinds_count++] = *p;
    }
    qsort(kinds, kinds_count, sizeof(kinds[0]), kind_cmp);
    for (size_t i = 1; i < kinds_count; i++) {
        if (strcmp(kinds[i - 1]->name, kinds[i]->name) == 0) {
            fprintf(stderr, "spindle: job kind '%s' registered twice\n", kinds[i]->name);
            abort();
        }
    }
}

static void kinds_load(void)
{
    if (pthread_once(&kinds_once, kinds_init) != 0)
        abort(); /* only fails for an invalid once control */
}

const struct srv_job_kind *srv_job_kind_find(const char *name, size_t len)
{
    kinds_load();
    for (size_t i = 0; i < kinds_count; i++) {
        const char *kn = kinds[i]->name;
        if (strlen(kn) == len && memcmp(kn, name, len) == 0)
            return kinds[i];
    }
    return NULL;
}

size_t srv_job_kind_count(void)
{
    kinds_load();
    return kinds_count;
}

const struct srv_job_kind *srv_job_kind_at(size_t i)
{
    kinds_load();
    return i < kinds_count ? kinds[i] : NULL;
}

/* ---- messages ------------------------------------------------------------------------------ */

int srv_job_errf(char *err, size_t size, const char *fmt, ...)
{
    if (err != NULL && size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

int srv_job_err_missing(const char *name, char *err, size_t size)
{
    return srv_job_errf(err, size, "missing required parameter '%s'", name);
}

int srv_job_param_only_uint(const struct srv_job_param *params, size_t nparams, const char *name,
                            uint64_t min, uint64_t max, uint64_t *out, char *err, size_t size)
{
    const char *const names[] = {name};
    const struct srv_job_param *found[1];
    int rc = srv_job_params_match(params, nparams, names, 1, found, err, size);
    if (rc < 0)
        return rc;
    if (found[0] == NULL)
        return srv_job_err_missing(name, err, size);
    return srv_job_param_uint(found[0], min, max, out, err, size);
}

void *srv_job_state_new(size_t len, char *err, size_t size)
{
    void *st = calloc(1, len);
    if (st == NULL)
        srv_job_errf(err, size, "out of memory");
    return st;
}

/* A key made printable for a message: at most SRV_JOB_KEY_ECHO bytes, others shown as '?', and
 * "..." when cut. `out` has room for SRV_JOB_KEY_ECHO + 4 bytes. */
static const char *key_echo(const struct srv_job_param *p, char *out)
{
    size_t n = p->key_len < SRV_JOB_KEY_ECHO ? p->key_len : SRV_JOB_KEY_ECHO;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p->key[i];
        out[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    out[n] = '\0';
    if (n < p->key_len)
        memcpy(out + n, "...", 4);
    return out;
}

/* ---- parameters ---------------------------------------------------------------------------- */

static bool key_is(const struct srv_job_param *p, const char *name)
{
    return strlen(name) == p->key_len && memcmp(p->key, name, p->key_len) == 0;
}

int srv_job_params_match(const struct srv_job_param *params, size_t nparams,
                         const char *const *names, size_t nnames,
                         const struct srv_job_param **found, char *err, size_t size)
{
    char echo[SRV_JOB_KEY_ECHO + 4];

    for (size_t j = 0; j < nnames; j++)
        found[j] = NULL;
    for (size_t i = 0; i < nparams; i++) {
        size_t j = 0;
        while (j < nnames && !key_is(&params[i], names[j]))
            j++;
        if (j == nnames)
            return srv_job_errf(err, size, "unknown parameter '%s'", key_echo(&params[i], echo));
        if (found[j] != NULL)
            return srv_job_errf(err, size, "duplicate parameter '%s'", names[j]);
        found[j] = &params[i];
    }
    return 0;
}

int srv_job_param_uint(const struct srv_job_param *p, uint64_t min, uint64_t max, uint64_t *out,
                       char *err, size_t size)
{
    char echo[SRV_JOB_KEY_ECHO + 4];
    uint64_t v = 0;
    bool ok = p->value_len > 0;

    for (size_t i = 0; ok && i < p->value_len; i++) {
        unsigned d = (unsigned char)p->value[i] - (unsigned)'0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            ok = false;
        else
            v = v * 10 + d;
    }
    if (!ok || v < min || v > max)
        return srv_job_errf(err, size, "%s must be an integer between %llu and %llu",
                            key_echo(p, echo), (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

bool srv_job_param_is(const struct srv_job_param *p, const char *s)
{
    return strlen(s) == p->value_len && memcmp(p->value, s, p->value_len) == 0;
}
