/* jobfile.c - the jobs `spindle call` runs: the one job of the command line (KIND and KEY=VALUE
 * parameters) or the jobs of a file (--batch), one JSON object per line:
 * {"kind":..,"params":{..},"body":..,"tenant":..,"id":..}, only "kind" required.
 *
 * Design: the whole file is read first (at most CLI_FILE_MAX bytes) and every job parsed before
 * the first request, so the runner knows how many there are and a bad line costs no traffic. A
 * line that is not a valid job does not stop the others: its job carries `invalid` (why, for the
 * "invalid_job" result line) and the runner settles it at once, in its place. Parameters become
 * the percent-encoded query (strings as they are, numbers and booleans as JSON writes them);
 * a job's tenant and request id default to --tenant and "<--request-id or a generated id>-<n>".
 *
 * Ownership: each struct cli_job owns its strings (tenant only when the line named one); the
 * caller owns the array and frees each filled job with cli_job_fini. No global state.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/internal.h"
#include "context/ctx.h"

int cli_percent_encode(FILE *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~';
        int rc = plain ? fputc(c, out) : fprintf(out, "%%%c%c", hex[c >> 4], hex[c & 15]);
        if (rc < 0)
            return -EIO;
    }
    return 0;
}

void cli_job_fini(struct cli_job *j)
{
    free(j->kind);
    free(j->query);
    free(j->body);
    if (j->tenant_own)
        free((char *)j->tenant);
    free(j->request_id);
    free(j->invalid);
    free(j->answer);
}

/* Read all of `fd` (at most CLI_FILE_MAX bytes). New buffer (NUL-terminated) or NULL + errno. */
static char *cl_read_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (cap - n < 2) {
            if (cap >= (size_t)CLI_FILE_MAX) {
                errno = EFBIG;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r == 0) {
            buf[n] = '\0';
            *len = n;
            return buf;
        }
        n += (size_t)r;
    }
    int e = errno;
    free(buf);
    errno = e;
    return NULL;
}

char *cli_file_read(const char *path, size_t *len)
{
    if (strcmp(path, "-") == 0)
        return cl_read_all(STDIN_FILENO, len);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = cl_read_all(fd, len);
    int e = errno;
    close(fd);
    errno = e;
    return buf;
}

/* Append "KEY=VALUE" (percent-encoded) to a query stream, '&' first unless it is the first. */
static int cl_query_add(FILE *q, bool *first, const char *key, size_t klen, const char *val,
                        size_t vlen)
{
    if (!*first && fputc('&', q) == EOF)
        return -EIO;
    *first = false;
    if (cli_percent_encode(q, key, klen) != 0 || fputc('=', q) == EOF)
        return -EIO;
    return cli_percent_encode(q, val, vlen);
}

/* The query of a batch line's "params" object. */
static int cl_params_query(const json_t *params, char **query, char *why, size_t size)
{
    size_t qlen;
    FILE *q = open_memstream(query, &qlen);
    if (q == NULL)
        return -ENOMEM;
    bool first = true;
    int rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)params, key, v)
    {
        char num[64];
        const char *s = num;
        if (json_is_string(v))
            s = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (json_is_real(v))
            snprintf(num, sizeof(num), "%.17g", json_real_value(v));
        else if (json_is_boolean(v))
            s = json_is_true(v) ? "true" : "false";
        else {
            snprintf(why, size, "params.%s is not a string, number or boolean", key);
            rc = -EINVAL;
            break;
        }
        rc = cl_query_add(q, &first, key, strlen(key), s, strlen(s));
        if (rc != 0)
            break;
    }
    if (fclose(q) != 0 && rc == 0)
        rc = -ENOMEM;
    if (rc != 0) {
        free(*query);
        *query = NULL;
    }
    return rc;
}

static bool cl_kind_valid(const char *k)
{
    size_t n = strlen(k);
    return n > 0 && n <= 64 &&
           strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* Check a batch line's fields; `why` says what is wrong. */
static int cl_line_check(const json_t *o, char *why, size_t size)
{
    static const char *const known[] = {"kind", "params", "body", "tenant", "id"};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v)
    {
        size_t i = 0;
        while (i < sizeof(known) / sizeof(known[0]) && strcmp(key, known[i]) != 0)
            i++;
        if (i == sizeof(known) / sizeof(known[0])) {
            snprintf(why, size, "unknown field \"%s\"", key);
            return -EINVAL;
        }
    }
    const char *kind = json_string_value(json_object_get(o, "kind"));
    const json_t *params = json_object_get(o, "params");
    const json_t *body = json_object_get(o, "body");
    const json_t *tenant = json_object_get(o, "tenant");
    const json_t *id = json_object_get(o, "id");
    if (kind == NULL || !cl_kind_valid(kind))
        snprintf(why, size, "\"kind\" must be a job kind name");
    else if (params && !json_is_object(params))
        snprintf(why, size, "\"params\" must be an object");
    else if (body && !json_is_string(body))
        snprintf(why, size, "\"body\" must be a string");
    else if (tenant && (!json_is_string(tenant) ||
                        !ctx_tenant_valid(json_string_value(tenant), json_string_length(tenant))))
        snprintf(why, size, "\"tenant\" must be 1-64 of [A-Za-z0-9._-]");
    else if (id && (!json_is_string(id) ||
                    !ctx_request_id_valid(json_string_value(id), json_string_length(id))))
        snprintf(why, size, "\"id\" must be 1-128 visible ASCII characters (no spaces)");
    else
        return 0;
    return -EINVAL;
}

/* Fill j from one batch line (len bytes). -ENOMEM, or 0 (j->invalid set when the line is bad). */
static int cl_job_from_line(struct cli_job *j, const char *line, size_t len)
{
    char why[256] = "";
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    int rc = 0;
    if (!json_is_object(o))
        snprintf(why, sizeof(why), "not a JSON object: %s", o ? "wrong type" : jerr.text);
    else if (cl_line_check(o, why, sizeof(why)) == 0) {
        const json_t *params = json_object_get(o, "params");
        const json_t *body = json_object_get(o, "body");
        const json_t *tenant = json_object_get(o, "tenant");
        const json_t *id = json_object_get(o, "id");
        j->kind = strdup(json_string_value(json_object_get(o, "kind")));
        rc = params ? cl_params_query(params, &j->query, why, sizeof(why)) : 0;
        if (rc == 0 && !params)
            j->query = strdup("");
        if (body) {
            j->body_len = json_string_length(body);
            j->body = malloc(j->body_len + 1);
            if (j->body)
                memcpy(j->body, json_string_value(body), j->body_len + 1);
        }
        if (tenant) {
            j->tenant = strdup(json_string_value(tenant));
            j->tenant_own = true;
        }
        if (id)
            j->request_id = strdup(json_string_value(id));
        if (rc == 0 && (!j->kind || !j->query || (body && !j->body) || (tenant && !j->tenant) ||
                        (id && !j->request_id)))
            rc = -ENOMEM;
        if (rc == -EINVAL)
            rc = 0; /* `why` says it */
    }
    if (rc == 0 && why[0] != '\0' && (j->invalid = strdup(why)) == NULL)
        rc = -ENOMEM;
    json_decref(o);
    return rc;
}

/* "<base>-<n>": a batch job's request id when its line has none. */
static char *cl_batch_id(const char *base, unsigned n)
{
    char *id = NULL;
    return asprintf(&id, "%s-%u", base, n) < 0 ? NULL : id;
}

int cli_job_single(struct cli_job *j, const struct cli_call_opts *o, const char *request_id,
                   char *err, size_t size)
{
    size_t qlen;
    FILE *q = open_memstream(&j->query, &qlen);
    if (q == NULL)
        return -ENOMEM;
    bool first = true;
    int rc = 0;
    for (int i = 0; i < o->nparams && rc == 0; i++) {
        const char *eq = strchr(o->params[i], '=');
        rc = cl_query_add(q, &first, o->params[i], (size_t)(eq - o->params[i]), eq + 1,
                          strlen(eq + 1));
    }
    if (fclose(q) != 0 || rc != 0)
        return -ENOMEM;
    j->kind = strdup(o->kind);
    j->request_id = strdup(request_id);
    j->tenant = o->tenant;
    if (j->kind == NULL || j->request_id == NULL)
        return -ENOMEM;
    if (o->body && (j->body = cli_file_read(o->body, &j->body_len)) == NULL) {
        snprintf(err, size, "--body %s: %s", o->body, strerror(errno));
        return -EINVAL;
    }
    return 0;
}

unsigned cli_jobs_count(const char *text)
{
    unsigned n = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        if (strspn(p, " \t\r") < len)
            n++;
        p += len + (p[len] == '\n');
    }
    return n;
}

int cli_jobs_parse(struct cli_job *jobs, unsigned *njobs, const char *text, const char *base_id,
                   const char *tenant)
{
    unsigned n = 0, lineno = 0;
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        const char *line = p;
        p += len + (p[len] == '\n');
        lineno++;
        if (strspn(line, " \t\r") >= len)
            continue;
        struct cli_job *j = &jobs[n];
        j->index = n++;
        j->line = lineno;
        *njobs = n; /* from here on j is the caller's to free */
        if (cl_job_from_line(j, line, len) != 0)
            return -ENOMEM;
        if (j->invalid)
            continue;
        if (j->tenant == NULL)
            j->tenant = tenant;
        if (j->request_id == NULL && (j->request_id = cl_batch_id(base_id, j->index)) == NULL)
            return -ENOMEM;
    }
    return 0;
}
