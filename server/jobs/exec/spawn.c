/* spawn.c - start a kind's program from a worker thread of a multi-threaded server.
 *
 * Design: vfork() and a child that calls only raw system calls before execve. The parent prepares
 * everything (argv, environment, resolved user and groups, limits) so the child allocates nothing
 * and takes no lock; it shares the parent's memory until execve, so it writes nothing but its own
 * stack. Why not posix_spawn: it cannot set rlimits or switch users; why not fork: a copy of a
 * multi-threaded process may hold locks (malloc, the logger) that no thread will ever release.
 *
 * The child, in order: default dispositions for every signal (ignored ones would survive execve),
 * a process group of its own (setpgid: cancellation signals the whole group), the rlimits, the
 * groups, gid and uid (raw system calls: glibc's setuid() would try to change every thread of
 * the parent too), chdir, the three pipes onto 0, 1 and 2, close_range() of everything else but
 * the report pipe, an empty signal mask, execve. A failing step writes {step, errno} into the
 * report pipe (CLOEXEC: a successful execve closes it, so the parent reads EOF) and exits 127.
 *
 * Signals stay blocked from before vfork until the child's execve, so no handler of the server
 * ever runs in the child while it shares the parent's memory. Every descriptor is made CLOEXEC
 * and kept above 2, so the dup2 onto 0..2 cannot overwrite one still needed.
 *
 * Under ThreadSanitizer, vfork() is a fork(); the same child code is safe there too.
 *
 * From vfork until the child's execve (or its exit) the child holds a copy of every descriptor of
 * the server; a socket the loop closed meanwhile would stay registered in its epoll set. That
 * stretch is a window of server/fdgate.h, during which the loop's closes wait.
 */
#include "server/jobs/exec/internal.h"
#include "server/fdgate.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum child_step {
    STEP_SETPGID,
    STEP_RLIMIT_CPU,
    STEP_RLIMIT_AS,
    STEP_RLIMIT_NOFILE,
    STEP_SETGROUPS,
    STEP_SETGID,
    STEP_SETUID,
    STEP_CHDIR,
    STEP_DUP2,
    STEP_EXECVE,
    STEP__COUNT
};

static const char *const step_names[STEP__COUNT] = {
    [STEP_SETPGID] = "setpgid",     [STEP_RLIMIT_CPU] = "rlimit_cpu_s",
    [STEP_RLIMIT_AS] = "rlimit_as", [STEP_RLIMIT_NOFILE] = "rlimit_nofile",
    [STEP_SETGROUPS] = "setgroups", [STEP_SETGID] = "setgid",
    [STEP_SETUID] = "setuid",       [STEP_CHDIR] = "chdir",
    [STEP_DUP2] = "dup2",           [STEP_EXECVE] = "execve",
};

static const int limit_resource[EXEC_LIM__COUNT] = {
    [EXEC_LIM_CPU] = RLIMIT_CPU, [EXEC_LIM_AS] = RLIMIT_AS, [EXEC_LIM_NOFILE] = RLIMIT_NOFILE};

struct child_report {
    int step;
    int err;
};

/* What the child reads: prepared by the parent, read-only in the child. */
struct child_plan {
    const struct srv_exec_prog *p;
    const struct exec_args *args;
    int in_r, out_w, err_w, rep_w;
};

/* The kernel's struct sigaction for rt_sigaction (no restorer needed for SIG_DFL). */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

#define CHILD_CODE __attribute__((noreturn, noinline, no_sanitize("address", "thread")))

CHILD_CODE static void child_fail(const struct child_plan *cp, int step)
{
    struct child_report r = {step, errno};
    ssize_t n = write(cp->rep_w, &r, sizeof(r));
    (void)n; /* nothing more to do: the parent sees status 127 and no report */
    _exit(127);
}

CHILD_CODE static void child_main(const struct child_plan *cp)
{
    const struct srv_exec_prog *p = cp->p;
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    for (int s = 1; s < 65; s++)
        if (s != SIGKILL && s != SIGSTOP)
            syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof(dfl.mask));
    if (syscall(SYS_setpgid, 0, 0) != 0)
        child_fail(cp, STEP_SETPGID);
    for (int i = 0; i < EXEC_LIM__COUNT; i++) {
        if (p->limits[i] == 0)
            continue;
        struct rlimit rl = {p->limits[i], p->limits[i]};
        if (syscall(SYS_prlimit64, 0, limit_resource[i], &rl, NULL) != 0)
            child_fail(cp, STEP_RLIMIT_CPU + i);
    }
    if (p->set_user) {
        if (syscall(SYS_setgroups, p->ngroups, p->groups) != 0)
            child_fail(cp, STEP_SETGROUPS);
        if (syscall(SYS_setgid, p->gid) != 0)
            child_fail(cp, STEP_SETGID);
        if (syscall(SYS_setuid, p->uid) != 0)
            child_fail(cp, STEP_SETUID);
    }
    if (p->cwd != NULL && syscall(SYS_chdir, p->cwd) != 0)
        child_fail(cp, STEP_CHDIR);
    if (syscall(SYS_dup2, cp->in_r, 0) < 0 || syscall(SYS_dup2, cp->out_w, 1) < 0 ||
        syscall(SYS_dup2, cp->err_w, 2) < 0)
        child_fail(cp, STEP_DUP2);
    /* Everything else is CLOEXEC already; this is the second lock on the door. ENOSYS (before
     * Linux 5.9) is ignored for that reason. */
    if (cp->rep_w > 3)
        syscall(SYS_close_range, 3u, (unsigned)cp->rep_w - 1u, 0u);
    syscall(SYS_close_range, (unsigned)cp->rep_w + 1u, ~0u, 0u);
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none));
    syscall(SYS_execve, p->path, cp->args->argv, cp->args->envp);
    child_fail(cp, STEP_EXECVE);
}

__attribute__((noinline)) static pid_t spawn_vfork(const struct child_plan *cp)
{
    pid_t pid = vfork();
    if (pid == 0)
        child_main(cp);
    return pid;
}

/* A CLOEXEC pipe whose ends are both above 2 (0..2 are the child's targets). */
static int pipe_make(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        if (fds[i] > 2)
            continue;
        int hi = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        if (hi < 0) {
            int rc = -errno;
            close(fds[0]);
            close(fds[1]);
            fds[0] = fds[1] = -1;
            return rc;
        }
        close(fds[i]);
        fds[i] = hi;
    }
    return 0;
}

static void fd_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int fd_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ? -errno : 0;
}

int exec_spawn(const struct srv_exec_prog *p, const struct exec_args *args, struct exec_child *c,
               const char **stage)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    int rc;
    *stage = "pipe";
    if ((rc = pipe_make(in)) < 0 || (rc = pipe_make(out)) < 0 || (rc = pipe_make(err)) < 0 ||
        (rc = pipe_make(rep)) < 0)
        goto close_all;
    if ((rc = fd_nonblock(in[1])) < 0 || (rc = fd_nonblock(out[0])) < 0 ||
        (rc = fd_nonblock(err[0])) < 0)
        goto close_all;

    struct child_plan plan = {p, args, in[0], out[1], err[1], rep[1]};
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    srv_fdgate_spawn_begin();
    pid_t pid = spawn_vfork(&plan);
    int verr = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    fd_close(&in[0]);
    fd_close(&out[1]);
    fd_close(&err[1]);
    fd_close(&rep[1]);
    if (pid < 0) {
        srv_fdgate_spawn_end();
        *stage = "vfork";
        rc = -verr;
        goto close_all;
    }
    /* Also from this side: under a real fork the child may not have run setpgid yet when the
     * parent signals its group. After execve this fails with EACCES, which is fine. */
    setpgid(pid, pid);
    struct child_report r;
    ssize_t n;
    while ((n = read(rep[0], &r, sizeof(r))) < 0 && errno == EINTR)
        ;
    if (n > 0) {
        /* the child wrote its report and exited: reap it at once */
        *stage = r.step >= 0 && r.step < STEP__COUNT ? step_names[r.step] : "spawn";
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        srv_fdgate_spawn_end(); /* reaped: its copies are gone */
        rc = n == (ssize_t)sizeof(r) && r.err > 0 ? -r.err : -EIO;
        goto close_all;
    }
    /* EOF: the child's execve closed the report pipe, after close_range closed everything else */
    srv_fdgate_spawn_end();
    fd_close(&rep[0]);
    *c = (struct exec_child){.pid = pid, .in_w = in[1], .out_r = out[0], .err_r = err[0]};
    *stage = NULL;
    return 0;

close_all:
    for (int i = 0; i < 2; i++) {
        fd_close(&in[i]);
        fd_close(&out[i]);
        fd_close(&err[i]);
        fd_close(&rep[i]);
    }
    return rc;
}
