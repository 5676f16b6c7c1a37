/* support.h - helpers shared by the exec engine's suites (tests/unit/server/jobs/exec/): making a
 * program, running it under a context with ids and an optional deadline, counting this process's
 * children and descriptors, and reading back the log lines of one request id. Static inline so a
 * suite that uses part of it compiles cleanly.
 */
#ifndef SPINDLE_TEST_EXEC_SUPPORT_H
#define SPINDLE_TEST_EXEC_SUPPORT_H

#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/log.h"
#include "server/jobs/exec/exec.h"

#define ET_MS 1000000ull
/* "returns promptly" on a loaded machine under sanitizers: seconds, not milliseconds */
#define ET_PROMPT_NS (5000 * ET_MS)

/* A program from `exec` with the given parameter names and a 200 ms grace; NULL fails the test. */
static inline struct srv_exec_prog *et_prog_conf(struct srv_exec_conf *conf)
{
    char err[256] = "";
    const char *key = NULL;
    if (conf->cancel_grace_ms == 0)
        conf->cancel_grace_ms = 200;
    struct srv_exec_prog *p = srv_exec_prog_new(conf, &key, err, sizeof(err));
    if (p == NULL)
        fprintf(stderr, "\n    srv_exec_prog_new(%s): %s: %s\n", conf->exec, key, err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

static inline struct srv_exec_prog *et_prog(const char *exec)
{
    struct srv_exec_conf conf = {.exec = exec};
    return et_prog_conf(&conf);
}

/* Write `script` (the text after "#!/bin/sh\n") into a new executable file; its path goes to
 * path (at least 32 bytes). The caller unlinks it. */
static inline void et_script(char *path, const char *script)
{
    strcpy(path, "/tmp/spindle-script-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "#!/bin/sh\n%s\n", script);
    CU_ASSERT_EQUAL(fchmod(fd, 0755), 0);
    CU_ASSERT_EQUAL(fclose(f), 0);
}

/* A root context with request id `rid`, tenant "acme" and a fresh trace. New reference. */
static inline struct ctx *et_ctx(const char *rid)
{
    struct ctx *c = ctx_new_root();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(ctx_set_request_id(c, rid, strlen(rid)), 0);
    CU_ASSERT_EQUAL(ctx_set_tenant(c, "acme", 4), 0);
    struct ctx_trace t;
    ctx_trace_new(&t);
    ctx_set_trace(c, &t);
    return c;
}

/* Run p with `body` under `c` (NULL: no context) on this thread. */
static inline int et_run_in(struct ctx *c, const struct srv_exec_prog *p, const char *kind,
                            const char *const *values, const void *body, size_t len,
                            struct srv_exec_result *res)
{
    struct srv_exec_input in = {.kind = kind, .values = values, .body = body, .body_len = len};
    struct ctx *prev = ctx_enter(c);
    int rc = srv_exec_run(p, &in, res);
    ctx_leave(prev);
    return rc;
}

/* Number of live children of this process (every thread's), from /proc. */
static inline int et_children(void)
{
    glob_t g;
    int n = 0;
    if (glob("/proc/self/task/*/children", 0, NULL, &g) != 0)
        return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "re");
        if (f == NULL)
            continue;
        long pid;
        while (fscanf(f, "%ld", &pid) == 1)
            n++;
        fclose(f);
    }
    globfree(&g);
    return n;
}

/* Number of open descriptors of this process. */
static inline int et_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* ---- the log, in a temporary file for the whole suite ---------------------------------------- */

static char et_log_path[64];

static inline int et_log_init(void)
{
    strcpy(et_log_path, "/tmp/spindle-exectest-XXXXXX");
    int fd = mkstemp(et_log_path);
    if (fd < 0)
        return -1;
    close(fd);
    struct log_config lc = {.path = et_log_path,
                            .level = LOG_LEVEL_DEBUG,
                            .buffer_bytes = 1 << 20,
                            .policy = LOG_POLICY_BLOCK};
    return log_start(&lc) == 0 ? 0 : -1;
}

static inline int et_log_fini(void)
{
    log_stop();
    unlink(et_log_path);
    return 0;
}

/* Every log line with request_id `rid` and message `msg` (NULL: any), in order: a new JSON
 * array (json_decref it). */
static inline json_t *et_log_lines(const char *rid, const char *msg)
{
    CU_ASSERT_EQUAL(log_flush(), 0);
    json_t *arr = json_array();
    FILE *f = fopen(et_log_path, "re");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *r = json_string_value(json_object_get(j, "request_id"));
        const char *m = json_string_value(json_object_get(j, "msg"));
        if (j != NULL && r != NULL && strcmp(r, rid) == 0 && (msg == NULL || strcmp(m, msg) == 0))
            json_array_append(arr, j);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return arr;
}

#endif
