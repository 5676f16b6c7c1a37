/* ops.c - support for the operations suites: process exit, strict log reading, config rewrite.
 *
 * Design: the harness (harness.c) reads the log leniently (complete JSON lines only) because a
 * running server may be half-way through a line; these suites check files after the writer is
 * done with them (rotated away, or the process ended), so they read strictly and report cut or
 * foreign lines. The rewritten configuration repeats the harness's fixed settings so that a
 * reload finds no change except the ones a test makes.
 */
#include "tests/integration/ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/integration/proc.h"

/* The state letter of `pid` in /proc/PID/stat, or 0 when it cannot be read. */
static char ops_proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *close = strrchr(buf, ')'); /* the command name may hold anything */
    return close != NULL && close[1] == ' ' ? close[2] : 0;
}

bool ops_wait_state(const struct hs_server *s, char state, int ms)
{
    long long end = hs_now_ms() + ms;
    while (ops_proc_state(hs_pid(s)) != state) {
        if (hs_now_ms() >= end)
            return false;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

bool ops_header_is(const struct hs_resp *r, const char *name, const char *want)
{
    char v[512];
    return hs_resp_header(r, name, v, sizeof(v)) && strcmp(v, want) == 0;
}

char *ops_path(const char *dir, const char *name)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

char *ops_file_read(const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[8192];
    size_t n;
    while (m != NULL && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(f);
    if (m == NULL || fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

json_t *ops_log_read(const char *path, bool *complete)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    json_t *lines = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    *complete = true;
    while ((n = getline(&line, &cap, f)) > 0) {
        bool ended = line[n - 1] == '\n';
        json_t *j = json_loadb(line, (size_t)n - ended, 0, NULL);
        if (!ended || !json_is_object(j)) {
            *complete = false;
            json_decref(j);
            continue;
        }
        json_array_append_new(lines, j);
    }
    free(line);
    fclose(f);
    return lines;
}

size_t ops_count(const json_t *lines, const char *msg, const char *id_prefix)
{
    size_t n = 0, i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        const char *m = hs_json_str(line, "msg"), *id = hs_json_str(line, "request_id");
        if (m == NULL || strcmp(m, msg) != 0)
            continue;
        if (id_prefix != NULL && (id == NULL || strncmp(id, id_prefix, strlen(id_prefix)) != 0))
            continue;
        n++;
    }
    return n;
}

int ops_config_rewrite(const struct hs_server *s, const char *level, const char *extra)
{
    char *text = NULL;
    if (asprintf(&text,
                 "[server]\nlisten = 127.0.0.1:0\n\n[log]\nlevel = %s\nfile = %s/spindle.log\n"
                 "access = true\n\n%s\n[tasks]\nstore = %s/tasks.db\n",
                 level, hs_dir(s), extra != NULL ? extra : "", hs_dir(s)) < 0)
        return -ENOMEM;
    char *path = proc_file_write(hs_dir(s), "spindle.conf.new", text);
    free(text);
    if (path == NULL)
        return -errno;
    /* [tasks] last, so that the lines of `extra` keep the numbers the tests expect. rename: the
     * server never reads a half-written file */
    char *final = ops_path(hs_dir(s), "spindle.conf");
    int rc = final != NULL && rename(path, final) == 0 ? 0 : -errno;
    free(final);
    free(path);
    return rc;
}
