/* harness.c - start and stop the real server and read its log, for the integration suites.
 *
 * Design: a server is a proc (proc.h) plus its temporary directory, which holds spindle.conf and
 * spindle.log. The config is assembled from a small table of "section.key=value" entries (the
 * harness defaults, then the test's overrides replacing equal keys) and written grouped by
 * section. Start-up waits for as many "listening" log lines as there are listen addresses, polling
 * the log file every 2 ms (the only wait on an external process) and giving up early when the
 * process exits; waitid(WNOWAIT) checks that without reaping, so proc_wait() still owns the reap.
 * The log is re-read and re-parsed on every look: it is small in tests, and reading it whole
 * avoids any state about partial lines. The client half of harness.h lives in client.c.
 *
 * With SPINDLE_TEST_TASK_STORE=postgresql in the environment, a server's default task store is a
 * new database of the test binary's PostgreSQL cluster (pg.h) instead of a SQLite file, so the
 * suites that use the default store run against the shared backend too.
 */
#include "tests/integration/harness.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/pg.h"
#include "tests/integration/proc.h"

#define HS_MAX_ENTRIES 64
#define HS_MAX_LISTEN  8

struct hs_entry {
    char section[48];
    char key[64];
    char value[1024];
};

struct hs_server {
    struct proc *proc;
    char *dir;
    char *conf_path;
    char log_path[1100];
    unsigned listen_count;
    char addr[HS_MAX_LISTEN][80];
    int port;
};

long long hs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hs_nap_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool hs_have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

const char *hs_skip_no_ipv6(void)
{
    return hs_have_ipv6() ? NULL : "this machine has no ::1 (IPv6 loopback)";
}

long hs_nofile_raise(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur < want) {
        rl.rlim_cur =
            (rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max > want) ? (rlim_t)want : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

/* ---- config --------------------------------------------------------------------------------- */

/* Add or replace "section.key=value"; the key is after the last '.' before '=', so a section
 * may have dots of its own ("kind.wc.exec=/usr/bin/wc"). Returns 0 or -EINVAL for a malformed
 * entry. */
static int hs_entry_set(struct hs_entry *e, size_t *n, const char *spec)
{
    const char *eq = strchr(spec, '=');
    const char *dot = NULL;
    for (const char *p = spec; eq != NULL && p < eq; p++)
        dot = *p == '.' ? p : dot;
    if (dot == NULL || eq == NULL)
        return -EINVAL;
    struct hs_entry tmp;
    if ((size_t)(dot - spec) >= sizeof(tmp.section) || (size_t)(eq - dot - 1) >= sizeof(tmp.key) ||
        strlen(eq + 1) >= sizeof(tmp.value))
        return -EINVAL;
    snprintf(tmp.section, sizeof(tmp.section), "%.*s", (int)(dot - spec), spec);
    snprintf(tmp.key, sizeof(tmp.key), "%.*s", (int)(eq - dot - 1), dot + 1);
    snprintf(tmp.value, sizeof(tmp.value), "%s", eq + 1);
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(e[i].section, tmp.section) == 0 && strcmp(e[i].key, tmp.key) == 0) {
            e[i] = tmp;
            return 0;
        }
    }
    if (*n == HS_MAX_ENTRIES)
        return -EINVAL;
    e[(*n)++] = tmp;
    return 0;
}

/* The INI text, sections in order of first appearance. New string or NULL. */
static char *hs_config_text(const struct hs_entry *e, size_t n)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    if (f == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen = seen || strcmp(e[j].section, e[i].section) == 0;
        if (seen)
            continue;
        fprintf(f, "[%s]\n", e[i].section);
        for (size_t j = i; j < n; j++) {
            if (strcmp(e[j].section, e[i].section) == 0)
                fprintf(f, "%s = %s\n", e[j].key, e[j].value);
        }
        fputc('\n', f);
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

static unsigned hs_listen_count(const struct hs_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(e[i].section, "server") == 0 && strcmp(e[i].key, "listen") == 0) {
            unsigned count = 1;
            for (const char *p = e[i].value; *p; p++)
                count += *p == ',';
            return count;
        }
    }
    return 1;
}

static int hs_config_write(struct hs_server *s, const char *const *overrides)
{
    struct hs_entry e[HS_MAX_ENTRIES];
    size_t n = 0;
    char spec[1200], store[1200];
    snprintf(s->log_path, sizeof(s->log_path), "%s/spindle.log", s->dir);
    snprintf(spec, sizeof(spec), "log.file=%s", s->log_path);
    snprintf(store, sizeof(store), "tasks.store=%s/tasks.db", s->dir);
    const char *backend = getenv("SPINDLE_TEST_TASK_STORE");
    if (backend != NULL && strcmp(backend, "postgresql") == 0) {
        char uri[512];
        if (pg_db_new(uri, sizeof(uri)) != 0)
            return -EIO;
        snprintf(store, sizeof(store), "tasks.store=%s", uri);
    }
    const char *defaults[] = {"server.listen=127.0.0.1:0", "log.level=debug", spec,
                              "log.access=true", store};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        (void)hs_entry_set(e, &n, defaults[i]);
    for (size_t i = 0; overrides != NULL && overrides[i] != NULL; i++) {
        if (hs_entry_set(e, &n, overrides[i]) != 0) {
            fprintf(stderr, "harness: bad override '%s'\n", overrides[i]);
            return -EINVAL;
        }
    }
    s->listen_count = hs_listen_count(e, n);
    for (size_t i = 0; i < n; i++) /* a test may put the log elsewhere (a small tmpfs) */
        if (strcmp(e[i].section, "log") == 0 && strcmp(e[i].key, "file") == 0)
            snprintf(s->log_path, sizeof(s->log_path), "%s", e[i].value);
    char *text = hs_config_text(e, n);
    if (text == NULL)
        return -ENOMEM;
    s->conf_path = proc_file_write(s->dir, "spindle.conf", text);
    free(text);
    return s->conf_path != NULL ? 0 : -errno;
}

/* ---- the server ----------------------------------------------------------------------------- */

static int hs_port_of(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon != NULL ? atoi(colon + 1) : 0;
}

bool hs_alive(struct hs_server *s)
{
    if (proc_exited(s->proc))
        return false;
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    /* WNOWAIT: look without reaping; proc_wait() reaps. */
    if (waitid(P_PID, proc_pid(s->proc), &si, WEXITED | WNOHANG | WNOWAIT) != 0)
        return false;
    return si.si_pid == 0;
}

bool hs_wait_exit(struct hs_server *s, int ms)
{
    long long end = hs_now_ms() + ms;
    while (hs_alive(s)) {
        if (hs_now_ms() >= end)
            return false;
        hs_nap_ms(2);
    }
    return true;
}

/* Collect the "listening" lines; true once there are as many as listen addresses. */
static bool hs_listening(struct hs_server *s)
{
    json_t *lines = hs_log_lines(s);
    unsigned found = 0;
    size_t i;
    json_t *line;
    json_array_foreach(lines, i, line)
    {
        const char *msg = hs_json_str(line, "msg");
        const char *addr = hs_json_str(line, "addr");
        if (msg == NULL || addr == NULL || strcmp(msg, "listening") != 0)
            continue;
        if (found < HS_MAX_LISTEN)
            snprintf(s->addr[found], sizeof(s->addr[found]), "%s", addr);
        found++;
    }
    json_decref(lines);
    if (found < s->listen_count)
        return false;
    s->port = hs_port_of(s->addr[0]);
    return s->port > 0;
}

static void hs_report(struct hs_server *s, const char *why)
{
    fprintf(stderr, "harness: %s\n--- server stderr ---\n%s\n", why, hs_stderr(s));
    size_t size = 0;
    FILE *f = s->log_path[0] != '\0' ? fopen(s->log_path, "re") : NULL;
    if (f != NULL) {
        char chunk[4096];
        size_t got;
        fprintf(stderr, "--- server log (head) ---\n");
        while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0 && size < 16384) {
            fwrite(chunk, 1, got, stderr);
            size += got;
        }
        fclose(f);
    }
}

/* Start the server; a sink server's port comes from /proc (see hs_start_sink); with
 * nofile_soft > 0 it runs under prlimit(1) with those open file limits. */
static struct hs_server *hs_start_how(const char *const *overrides, const char *const *extra,
                                      bool sink, long nofile_soft, long nofile_hard);

struct hs_server *hs_start(const char *const *overrides)
{
    return hs_start_args(overrides, NULL);
}

struct hs_server *hs_start_args(const char *const *overrides, const char *const *extra)
{
    return hs_start_how(overrides, extra, false, 0, 0);
}

struct hs_server *hs_start_nofile(const char *const *overrides, long soft, long hard)
{
    return hs_start_how(overrides, NULL, false, soft, hard);
}

struct hs_server *hs_start_sink(const char *const *overrides)
{
    return hs_start_how(overrides, NULL, true, 0, 0);
}

/* The inode of every socket `pid` has open (from /proc/PID/fd); returns how many, at most max. */
static size_t hs_socket_inodes(pid_t pid, unsigned long *inodes, size_t max)
{
    char dir[64], link[PATH_MAX], target[128];
    size_t n = 0;
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < max) {
        snprintf(link, sizeof(link), "%s/%s", dir, de->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (sscanf(target, "socket:[%lu]", &inodes[n]) == 1)
            n++;
    }
    closedir(d);
    return n;
}

/* For a server whose log the harness cannot read: the port of a TCP socket it listens on
 * (/proc/net/tcp, state 0A), 0 while there is none. */
static int hs_proc_port(pid_t pid)
{
    unsigned long inodes[256];
    size_t n = hs_socket_inodes(pid, inodes, sizeof(inodes) / sizeof(inodes[0]));
    FILE *f = fopen("/proc/net/tcp", "re");
    if (f == NULL)
        return 0;
    char line[512];
    int port = 0;
    while (port == 0 && fgets(line, sizeof(line), f) != NULL) {
        unsigned lport, state;
        unsigned long inode;
        if (sscanf(line, " %*u: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu", &lport, &state,
                   &inode) != 3 ||
            state != 0x0A)
            continue;
        for (size_t i = 0; i < n; i++)
            if (inodes[i] == inode)
                port = (int)lport;
    }
    fclose(f);
    return port;
}

static bool hs_ready(struct hs_server *s, bool sink)
{
    if (!sink)
        return hs_listening(s);
    s->port = hs_proc_port(proc_pid(s->proc));
    snprintf(s->addr[0], sizeof(s->addr[0]), "127.0.0.1:%d", s->port);
    return s->port > 0;
}

static struct hs_server *hs_start_how(const char *const *overrides, const char *const *extra,
                                      bool sink, long nofile_soft, long nofile_hard)
{
    struct hs_server *s = calloc(1, sizeof(*s));
    char nofile[64];
    if (s == NULL)
        return NULL;
    s->dir = proc_tmpdir_new();
    if (s->dir == NULL || hs_config_write(s, overrides) != 0)
        goto fail;
    if (sink)
        s->log_path[0] = '\0';
    const char *args[20];
    size_t n = 0;
    if (nofile_soft > 0) {
        snprintf(nofile, sizeof(nofile), "--nofile=%ld:%ld", nofile_soft, nofile_hard);
        if (proc_bin() == NULL)
            goto fail;
        args[n++] = nofile;
        args[n++] = "--";
        args[n++] = proc_bin();
    }
    args[n++] = "serve";
    args[n++] = "-c";
    args[n++] = s->conf_path;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    s->proc = nofile_soft > 0 ? proc_spawn_exe("prlimit", args, NULL) : proc_spawn(args, NULL);
    if (s->proc == NULL) {
        fprintf(stderr, "harness: cannot start the server: %s\n", strerror(errno));
        goto fail;
    }
    long long deadline = hs_now_ms() + HS_START_MS;
    while (!hs_ready(s, sink)) {
        if (!hs_alive(s)) {
            hs_report(s, "the server exited during start-up");
            goto fail;
        }
        if (hs_now_ms() > deadline) {
            hs_report(s, "no 'listening' line within the start-up bound");
            goto fail;
        }
        hs_nap_ms(2);
    }
    return s;
fail:
    hs_free(s);
    return NULL;
}

int hs_stop(struct hs_server *s)
{
    int code = -1;
    if (!proc_exited(s->proc)) {
        int rc = proc_signal(s->proc, SIGTERM);
        if (rc != 0 && rc != -ESRCH)
            return rc;
    }
    int rc = proc_wait(s->proc, HS_STOP_MS, &code);
    if (rc == -ETIMEDOUT)
        hs_report(s, "the server did not stop within the bound after SIGTERM");
    else if (rc == 0 && code != 0)
        fprintf(stderr, "harness: server exit code %d\n--- server stderr ---\n%s\n", code,
                hs_stderr(s));
    return rc == 0 || rc == -ETIMEDOUT ? code : rc;
}

void hs_free(struct hs_server *s)
{
    if (s == NULL)
        return;
    proc_free(s->proc);
    free(s->conf_path);
    (void)proc_tmpdir_free(s->dir);
    free(s);
}

int hs_port(const struct hs_server *s)
{
    return s->port;
}

const char *hs_listen_addr(const struct hs_server *s, unsigned n)
{
    return n < s->listen_count && n < HS_MAX_LISTEN ? s->addr[n] : NULL;
}

pid_t hs_pid(const struct hs_server *s)
{
    return proc_pid(s->proc);
}

const char *hs_dir(const struct hs_server *s)
{
    return s->dir;
}

const char *hs_stderr(struct hs_server *s)
{
    return s->proc != NULL ? proc_output(s->proc, PROC_STDERR, NULL) : "";
}

/* ---- the log -------------------------------------------------------------------------------- */

static char *hs_file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return NULL;
    char *data = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (cap - size < 65536) {
            char *d = realloc(data, cap + 65536 + 1);
            if (d == NULL)
                break;
            data = d;
            cap += 65536;
        }
        size_t got = fread(data + size, 1, cap - size, f);
        size += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (data != NULL)
        data[size] = '\0';
    *len = size;
    return data;
}

json_t *hs_log_lines(const struct hs_server *s)
{
    size_t len = 0;
    char *data = s->log_path[0] != '\0' ? hs_file_read(s->log_path, &len) : NULL;
    if (data == NULL)
        return NULL;
    json_t *lines = json_array();
    size_t start = 0;
    /* Only complete lines: the writer may be half-way through the last one. */
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n')
            continue;
        json_t *line = json_loadb(data + start, i - start, 0, NULL);
        if (json_is_object(line))
            json_array_append_new(lines, line);
        else
            json_decref(line);
        start = i + 1;
    }
    free(data);
    return lines;
}

const char *hs_json_str(const json_t *line, const char *key)
{
    return json_string_value(json_object_get(line, key));
}

long long hs_json_int(const json_t *line, const char *key, long long dflt)
{
    json_t *v = json_object_get(line, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

static bool hs_line_matches(const json_t *line, const char *msg, const char *key, const char *value)
{
    const char *m = hs_json_str(line, "msg");
    if (m == NULL || strcmp(m, msg) != 0)
        return false;
    if (key == NULL)
        return true;
    const char *v = hs_json_str(line, key);
    return v != NULL && strcmp(v, value) == 0;
}

json_t *hs_log_wait(const struct hs_server *s, const char *msg, const char *key, const char *value,
                    int timeout_ms)
{
    long long deadline = hs_now_ms() + timeout_ms;
    for (;;) {
        json_t *lines = hs_log_lines(s);
        size_t i;
        json_t *line;
        json_array_foreach(lines, i, line)
        {
            if (hs_line_matches(line, msg, key, value)) {
                json_incref(line);
                json_decref(lines);
                return line;
            }
        }
        json_decref(lines);
        if (hs_now_ms() > deadline)
            return NULL;
        hs_nap_ms(2);
    }
}

size_t hs_log_wait_count(const struct hs_server *s, const char *msg, size_t n, int timeout_ms)
{
    long long deadline = hs_now_ms() + timeout_ms;
    for (;;) {
        json_t *lines = hs_log_lines(s);
        size_t i, found = 0;
        json_t *line;
        json_array_foreach(lines, i, line)
        {
            found += hs_line_matches(line, msg, NULL, NULL);
        }
        json_decref(lines);
        if (found >= n || hs_now_ms() > deadline)
            return found;
        hs_nap_ms(2);
    }
}
