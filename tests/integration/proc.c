/* proc.c - child processes and temporary directories for the integration suites.
 *
 * Design: a child is started with posix_spawn(); its stdout and stderr are dup'ed onto two
 * anonymous temporary files (O_TMPFILE, or mkostemp + unlink where the file system lacks it)
 * that the parent reads with pread() from offset 0, so reading never disturbs the child's
 * writes and the whole output stays available after the child exits. Waiting uses a pidfd with
 * poll() so a timeout needs no polling loop; where pidfd_open() is missing it falls back to
 * waitpid(WNOHANG) every millisecond. The child is the leader of its own process group, so a
 * timeout or proc_free() kills whatever it started too. Every fd the parent opens is O_CLOEXEC
 * and the spawn closes every fd above 2 in the child.
 *
 * Ownership: struct proc owns its two capture fds, the pidfd and the two output buffers; the
 * child is reaped exactly once (proc_wait or proc_free), which keeps zombies out.
 */
#include "tests/integration/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct proc_buf {
    char *data;
    size_t cap;
};

struct proc {
    pid_t pid;
    int pidfd; /* -1 when pidfd_open() is not available or after reaping */
    int fd[3]; /* capture files for PROC_STDOUT, PROC_STDERR (index 0 unused) */
    struct proc_buf buf[3];
    bool reaped;
    bool timed_out;
    int exit_code; /* valid once reaped */
};

static int64_t proc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void proc_nap(void)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
    nanosleep(&ts, NULL);
}

const char *proc_bin(void)
{
    const char *bin = getenv("SPINDLE_BIN");
    if (bin == NULL || *bin == '\0') {
        fprintf(stderr, "proc: SPINDLE_BIN is not set (run the suite through make integration)\n");
        return NULL;
    }
    return bin;
}

/* An anonymous file the child writes and the parent preads. */
static int proc_capture_open(void)
{
    int fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[] = "/tmp/spindle-out-XXXXXX";
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    unlink(path);
    return fd;
}

static bool proc_env_replaced(const char *entry, const char *const *env_add)
{
    const char *eq = strchr(entry, '=');
    size_t n = eq ? (size_t)(eq - entry) : strlen(entry);
    for (size_t i = 0; env_add != NULL && env_add[i] != NULL; i++) {
        if (strncmp(env_add[i], entry, n) == 0 && env_add[i][n] == '=')
            return true;
    }
    return false;
}

/* environ minus the names env_add sets, plus env_add. The strings stay borrowed. */
static char **proc_env_build(const char *const *env_add)
{
    size_t n = 0, m = 0;
    while (environ[n] != NULL)
        n++;
    while (env_add != NULL && env_add[m] != NULL)
        m++;
    char **env = calloc(n + m + 1, sizeof(*env));
    if (env == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!proc_env_replaced(environ[i], env_add))
            env[k++] = environ[i];
    }
    for (size_t i = 0; i < m; i++)
        env[k++] = (char *)env_add[i];
    env[k] = NULL;
    return env;
}

static char **proc_argv_build(const char *exe, const char *const *args)
{
    size_t n = 0;
    while (args != NULL && args[n] != NULL)
        n++;
    char **argv = calloc(n + 2, sizeof(*argv));
    if (argv == NULL)
        return NULL;
    argv[0] = (char *)exe;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    return argv;
}

/* Spawn attributes: own process group, empty mask, every catchable signal at its default. */
static int proc_attr_init(posix_spawnattr_t *attr)
{
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rc = posix_spawnattr_init(attr);
    if (rc != 0)
        return rc;
    rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF);
    if (rc == 0)
        rc = posix_spawnattr_setpgroup(attr, 0);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(attr, &none);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(attr, &all);
    if (rc != 0)
        posix_spawnattr_destroy(attr);
    return rc;
}

static int proc_actions_init(posix_spawn_file_actions_t *fa, const struct proc *p)
{
    int rc = posix_spawn_file_actions_init(fa);
    if (rc != 0)
        return rc;
    rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(fa, p->fd[PROC_STDOUT], 1);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(fa, p->fd[PROC_STDERR], 2);
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
    if (rc != 0)
        posix_spawn_file_actions_destroy(fa);
    return rc;
}

static int proc_start(struct proc *p, const char *exe, const char *const *args,
                      const char *const *env_add)
{
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    char **argv = proc_argv_build(exe, args);
    char **env = proc_env_build(env_add);
    int rc = ENOMEM;
    if (argv == NULL || env == NULL)
        goto out_free;
    rc = proc_attr_init(&attr);
    if (rc != 0)
        goto out_free;
    rc = proc_actions_init(&fa, p);
    if (rc != 0)
        goto out_attr;
    rc = posix_spawnp(&p->pid, exe, &fa, &attr, argv, env);
    posix_spawn_file_actions_destroy(&fa);
out_attr:
    posix_spawnattr_destroy(&attr);
out_free:
    free(argv);
    free(env);
    return -rc;
}

struct proc *proc_spawn_exe(const char *exe, const char *const *args, const char *const *env_add)
{
    struct proc *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->pidfd = -1;
    p->fd[0] = -1;
    p->fd[PROC_STDOUT] = proc_capture_open();
    p->fd[PROC_STDERR] = proc_capture_open();
    int rc = -errno;
    if (p->fd[PROC_STDOUT] < 0 || p->fd[PROC_STDERR] < 0)
        goto fail;
    rc = proc_start(p, exe, args, env_add);
    if (rc != 0)
        goto fail;
    /* Without a pidfd, proc_wait polls; either way the child is reaped exactly once. */
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (p->pidfd >= 0)
        (void)fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
    return p;
fail:
    p->reaped = true;
    proc_free(p);
    errno = -rc;
    return NULL;
}

struct proc *proc_spawn(const char *const *args, const char *const *env_add)
{
    const char *bin = proc_bin();
    if (bin == NULL) {
        errno = ENOENT;
        return NULL;
    }
    return proc_spawn_exe(bin, args, env_add);
}

pid_t proc_pid(const struct proc *p)
{
    return p->pid;
}

bool proc_exited(const struct proc *p)
{
    return p->reaped;
}

bool proc_timed_out(const struct proc *p)
{
    return p->timed_out;
}

/* Reap without blocking. Returns 1 when reaped, 0 when still running, or a negative errno. */
static int proc_try_reap(struct proc *p)
{
    int status;
    pid_t r;
    do {
        r = waitpid(p->pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0)
        return 0;
    p->reaped = true;
    p->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
    }
    return 1;
}

/* Wait up to `ms` for a state change: poll() on the pidfd, or a 1 ms nap without one. */
static void proc_wait_some(struct proc *p, int64_t ms)
{
    if (p->pidfd < 0) {
        proc_nap();
        return;
    }
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    (void)poll(&pfd, 1, ms > 1000 ? 1000 : (int)ms);
}

static int proc_kill_and_reap(struct proc *p)
{
    /* The group first (whatever the child started), then the child in case it left it. */
    (void)kill(-p->pid, SIGKILL);
    (void)kill(p->pid, SIGKILL);
    int rc;
    do {
        rc = proc_try_reap(p);
        if (rc == 0)
            proc_wait_some(p, 1000);
    } while (rc == 0);
    return rc < 0 ? rc : 0;
}

int proc_wait(struct proc *p, int timeout_ms, int *exit_code)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : proc_now_ms() + timeout_ms;
    int rc = 0;
    while (!p->reaped) {
        rc = proc_try_reap(p);
        if (rc < 0)
            return rc;
        if (rc == 1)
            break;
        int64_t left = deadline - proc_now_ms();
        if (left <= 0) {
            p->timed_out = true;
            rc = proc_kill_and_reap(p);
            if (rc < 0)
                return rc;
            break;
        }
        proc_wait_some(p, left);
    }
    if (exit_code != NULL)
        *exit_code = p->exit_code;
    return p->timed_out ? -ETIMEDOUT : 0;
}

int proc_signal(struct proc *p, int sig)
{
    if (p->reaped)
        return -ESRCH;
    return kill(p->pid, sig) == 0 ? 0 : -errno;
}

/* Read the whole capture file into b; returns the byte count, or -1 on error. */
static ssize_t proc_buf_fill(struct proc_buf *b, int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    size_t want = (size_t)st.st_size + 1;
    if (want > b->cap) {
        char *d = realloc(b->data, want);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = want;
    }
    size_t got = 0;
    /* The child may still be writing: read what fstat saw, no more. */
    while (got + 1 < want) {
        ssize_t r = pread(fd, b->data + got, want - 1 - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    b->data[got] = '\0';
    return (ssize_t)got;
}

const char *proc_output(struct proc *p, enum proc_stream stream, size_t *len)
{
    static const char empty[] = "";
    if (len != NULL)
        *len = 0;
    if (stream != PROC_STDOUT && stream != PROC_STDERR)
        return empty;
    ssize_t n = proc_buf_fill(&p->buf[stream], p->fd[stream]);
    if (n < 0)
        return empty;
    if (len != NULL)
        *len = (size_t)n;
    return p->buf[stream].data;
}

bool proc_output_wait(struct proc *p, enum proc_stream stream, const char *needle, int timeout_ms)
{
    int64_t deadline = proc_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        /* Check the exit before the output so the last write of a child that exited counts. */
        bool gone = p->reaped || proc_try_reap(p) != 0;
        if (strstr(proc_output(p, stream, NULL), needle) != NULL)
            return true;
        if (gone || proc_now_ms() >= deadline)
            return false;
        proc_nap();
    }
}

void proc_free(struct proc *p)
{
    if (p == NULL)
        return;
    if (!p->reaped)
        (void)proc_kill_and_reap(p);
    if (p->pidfd >= 0)
        close(p->pidfd);
    for (int i = PROC_STDOUT; i <= PROC_STDERR; i++) {
        if (p->fd[i] >= 0)
            close(p->fd[i]);
        free(p->buf[i].data);
    }
    free(p);
}

static char *proc_strdup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

int proc_run(const char *const *args, int timeout_ms, char **out, char **err, int *exit_code)
{
    if (out != NULL)
        *out = NULL;
    if (err != NULL)
        *err = NULL;
    struct proc *p = proc_spawn(args, NULL);
    if (p == NULL)
        return -errno;
    int rc = proc_wait(p, timeout_ms, exit_code);
    if (out != NULL)
        *out = proc_strdup_or_empty(proc_output(p, PROC_STDOUT, NULL));
    if (err != NULL)
        *err = proc_strdup_or_empty(proc_output(p, PROC_STDERR, NULL));
    proc_free(p);
    return rc;
}

char *proc_tmpdir_new(void)
{
    char *dir = strdup("/tmp/spindle-test-XXXXXX");
    if (dir == NULL)
        return NULL;
    if (mkdtemp(dir) == NULL) {
        int e = errno;
        free(dir);
        errno = e;
        return NULL;
    }
    return dir;
}

/* nftw() has no user pointer: the first error is kept per call of proc_tmpdir_free, which runs on
 * one thread at a time per directory; thread-local keeps parallel suites apart. */
static _Thread_local int proc_rm_error;

static int proc_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    if (r != 0 && proc_rm_error == 0)
        proc_rm_error = -errno;
    return 0;
}

int proc_tmpdir_free(char *dir)
{
    if (dir == NULL)
        return 0;
    proc_rm_error = 0;
    if (nftw(dir, proc_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && proc_rm_error == 0)
        proc_rm_error = -errno;
    free(dir);
    return proc_rm_error;
}

char *proc_file_write(const char *dir, const char *name, const char *content)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    size_t len = strlen(content), done = 0;
    while (done < len) {
        ssize_t w = write(fd, content + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            errno = e;
            goto fail;
        }
        done += (size_t)w;
    }
    if (close(fd) != 0)
        goto fail;
    return path;
fail : {
    int e = errno;
    free(path);
    errno = e;
    return NULL;
}
}

int proc_children(pid_t pid)
{
    char pat[64];
    glob_t g;
    int n = 0;
    snprintf(pat, sizeof(pat), "/proc/%d/task/*/children", (int)pid);
    if (glob(pat, 0, NULL, &g) != 0)
        return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "re");
        long c;
        while (f != NULL && fscanf(f, "%ld", &c) == 1)
            n++;
        if (f != NULL)
            fclose(f);
    }
    globfree(&g);
    return n;
}
