/* run.c - one run of a kind's program: spawn, pump stdin/stdout/stderr, stop it when the context
 * says so, reap it, tell what happened.
 *
 * Design: one poll() loop on the worker thread over the three pipes (non-blocking on our side),
 * a pidfd (readable when the program exits) and an eventfd that a ctx_watch on the current
 * context writes when it is cancelled, so a cancel wakes the loop at once from whichever thread
 * cancels. Timeouts: the context's deadline (the loop's timer normally cancels first), the
 * SIGKILL time after a SIGTERM, the drain bound after the exit, and at most EXEC_TICK_MS between
 * checks anyway (EXEC_TICK_NOPIDFD_MS without a pidfd, when the exit is found by polling waitid).
 *
 * Stdin is written in chunks as the pipe takes them while stdout and stderr are read, so a
 * program that writes before it has read everything, or reads nothing and writes much, never
 * blocks against us. EPIPE on stdin (the program stopped reading or exited) just ends the input;
 * SIGPIPE is blocked on this thread during the run and a pending one is consumed afterwards.
 *
 * Streamed (srv_exec_input.stream): the same loop, with the caller's non-blocking ends instead
 * of the body and the result's buffer. One buffer each way (SRV_EXEC_STREAM_BUF): stdin is
 * polled for room only while the input buffer holds bytes, stdout for data only while the output
 * buffer is empty, and before each wait the loop moves what it can between the buffers and the
 * caller's ends; when those answer -EAGAIN they write the run's eventfd (the one cancellation
 * wakes) once they may proceed. So memory is two buffers whatever the body's size, the program
 * may write before it has read everything, and a slow client stops the program's stdout (its
 * pipe fills up) instead of growing anything. After the exit, the output buffer is flushed to
 * the caller for as long as the caller takes it (the drain bound counts only time without
 * progress); cancellation still ends that.
 *
 * Stopping (cancel, deadline, output over max_output_bytes): SIGTERM to the process group,
 * SIGKILL grace_ms later if the leader is still there. When the leader exits (for any reason)
 * it is left a zombie for a moment (pidfd/WNOWAIT), so its pid, which is also the group's id,
 * cannot be reused while the rest of the group gets SIGKILL; then waitpid reaps it. After the
 * exit the loop reads what is left in stdout and stderr until EOF, for SRV_EXEC_DRAIN_MS at most
 * (a process that left the group may hold them). Every descriptor is closed on every path.
 *
 * Nothing else in the process may reap children (a SIGCHLD handler calling waitpid(-1), such as
 * the one libev's default loop installs): the exit status would be lost. Should it happen anyway,
 * the run answers a failure, never a success it did not see.
 */
#include "server/jobs/exec/internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "context/ctx.h"
#include "logging/log.h"

#define EXEC_TICK_MS         100 /* a check at least this often, whatever wakes us */
#define EXEC_TICK_NOPIDFD_MS 20  /* without a pidfd, the exit is found by polling */
#define EXEC_CHUNK           (64u << 10)
#define MS                   1000000ull

_Atomic bool exec_test_no_pidfd;

enum exec_stop { STOP_NONE, STOP_CANCEL, STOP_DEADLINE, STOP_TOO_LARGE };

static const char *const stop_names[] = {
    [STOP_NONE] = "none",
    [STOP_CANCEL] = "cancelled",
    [STOP_DEADLINE] = "deadline",
    [STOP_TOO_LARGE] = "output_too_large",
};

struct pump {
    const struct srv_exec_prog *p;
    struct srv_exec_result *res;
    struct ctx *ctx;
    struct exec_child ch;
    int pidfd, evfd;
    const char *body;
    size_t body_len, body_off;
    size_t out_cap;
    struct exec_lines lines;
    enum exec_stop stop;
    bool exited, killed, epipe;
    bool status_lost; /* the exit status was taken by another waitpid: never report success */
    int wstatus;
    uint64_t kill_at, drain_until;
    /* streamed runs only */
    const struct srv_exec_stream *io;
    char *ibuf, *obuf; /* SRV_EXEC_STREAM_BUF each (one allocation: ibuf) */
    size_t ilen, ioff, olen, ooff;
    uint64_t out_total;
};

static const struct {
    int status;
    const char *code;
} outcomes[SRV_EXEC_OUTCOME__COUNT] = {
    [SRV_EXEC_OK] = {200, NULL},
    [SRV_EXEC_EXIT_STATUS] = {500, "job_failed"},
    [SRV_EXEC_SIGNALED] = {500, "job_failed"},
    [SRV_EXEC_OUTPUT_TOO_LARGE] = {502, "output_too_large"},
    [SRV_EXEC_SPAWN_FAILED] = {500, "spawn_failed"},
};

int srv_exec_outcome_status(enum srv_exec_outcome o)
{
    return (unsigned)o < SRV_EXEC_OUTCOME__COUNT ? outcomes[o].status : 500;
}

const char *srv_exec_outcome_code(enum srv_exec_outcome o)
{
    return (unsigned)o < SRV_EXEC_OUTCOME__COUNT ? outcomes[o].code : "job_failed";
}

static void fd_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void on_cancel(struct ctx *c, enum ctx_reason reason, void *arg)
{
    (void)c;
    (void)reason;
    uint64_t one = 1;
    ssize_t n = write(*(const int *)arg, &one, sizeof(one));
    (void)n; /* a full counter still wakes the loop */
}

/* ---- stopping and reaping -------------------------------------------------------------------- */

static void stop_start(struct pump *pu, enum exec_stop why, uint64_t now)
{
    pu->stop = why;
    fd_close(&pu->ch.in_w);
    if (why == STOP_TOO_LARGE)
        fd_close(&pu->ch.out_r);
    if (pu->exited)
        return;
    bool now_kill = pu->p->grace_ms == 0;
    kill(-pu->ch.pid, now_kill ? SIGKILL : SIGTERM);
    pu->killed = now_kill;
    pu->kill_at = now + (uint64_t)pu->p->grace_ms * MS;
    LOG_D("job program stopping", LOG_STR("kind", pu->lines.kind), LOG_INT("pid", pu->ch.pid),
          LOG_STR("why", stop_names[why]), LOG_STR("signal", now_kill ? "SIGKILL" : "SIGTERM"));
}

/* The leader has exited and is a zombie: kill what is left of its group, then reap it. */
static void reap(struct pump *pu, uint64_t now)
{
    kill(-pu->ch.pid, SIGKILL);
    int rc;
    while ((rc = waitpid(pu->ch.pid, &pu->wstatus, 0)) < 0 && errno == EINTR)
        ;
    if (rc < 0) { /* ECHILD: someone else reaped it (a waitpid(-1) elsewhere in the process) */
        pu->status_lost = true;
        LOG_E("job program reaped elsewhere: exit status lost", LOG_STR("kind", pu->lines.kind),
              LOG_INT("pid", pu->ch.pid));
    }
    pu->exited = true;
    pu->drain_until = now + SRV_EXEC_DRAIN_MS * MS;
    fd_close(&pu->ch.in_w);
    fd_close(&pu->pidfd);
}

static bool leader_exited(struct pump *pu)
{
    if (pu->pidfd >= 0)
        return false; /* the pidfd says so through poll */
    siginfo_t si = {0};
    return waitid(P_PID, (id_t)pu->ch.pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == pu->ch.pid;
}

/* ---- the pipes ------------------------------------------------------------------------------- */

/* Streamed: write what the input buffer holds; the next chunk comes from stream_step. */
static void stdin_write_streamed(struct pump *pu)
{
    ssize_t n = write(pu->ch.in_w, pu->ibuf + pu->ioff, pu->ilen - pu->ioff);
    if (n > 0) {
        pu->ioff += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    } else {
        pu->epipe = pu->epipe || errno == EPIPE;
        fd_close(&pu->ch.in_w); /* the program does not want more: not an error */
    }
}

static void stdin_write(struct pump *pu)
{
    if (pu->io != NULL) {
        stdin_write_streamed(pu);
        return;
    }
    size_t left = pu->body_len - pu->body_off;
    if (left > 0) {
        ssize_t n =
            write(pu->ch.in_w, pu->body + pu->body_off, left < EXEC_CHUNK ? left : EXEC_CHUNK);
        if (n > 0)
            pu->body_off += (size_t)n;
        else if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        else
            pu->epipe = pu->epipe || errno == EPIPE; /* stopped reading: not an error */
        if (n > 0 && pu->body_off < pu->body_len)
            return;
    }
    fd_close(&pu->ch.in_w); /* all written, or the program does not want more: EOF */
}

/* Streamed: fill the (empty) output buffer; stream_step passes it on. */
static void stdout_read_streamed(struct pump *pu, uint64_t now)
{
    ssize_t n = read(pu->ch.out_r, pu->obuf, SRV_EXEC_STREAM_BUF);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fd_close(&pu->ch.out_r);
        return;
    }
    if ((uint64_t)n > pu->p->max_output - pu->out_total) {
        pu->out_total = pu->p->max_output + 1;
        if (pu->stop == STOP_NONE)
            stop_start(pu, STOP_TOO_LARGE, now);
        return;
    }
    pu->olen = (size_t)n;
    pu->ooff = 0;
    pu->out_total += (uint64_t)n;
}

static int stdout_read(struct pump *pu, uint64_t now)
{
    struct srv_exec_result *r = pu->res;
    if (pu->io != NULL) {
        stdout_read_streamed(pu, now);
        return 0;
    }
    if (r->out_len == pu->out_cap) {
        size_t cap = pu->out_cap ? pu->out_cap * 2 : EXEC_CHUNK;
        if (cap > pu->p->max_output + 1)
            cap = pu->p->max_output + 1;
        char *o = realloc(r->out, cap);
        if (o == NULL)
            return -ENOMEM;
        r->out = o;
        pu->out_cap = cap;
    }
    ssize_t n = read(pu->ch.out_r, r->out + r->out_len, pu->out_cap - r->out_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        fd_close(&pu->ch.out_r);
        return 0;
    }
    r->out_len += (size_t)n;
    if (r->out_len > pu->p->max_output && pu->stop == STOP_NONE)
        stop_start(pu, STOP_TOO_LARGE, now);
    return 0;
}

static void stderr_read(struct pump *pu)
{
    char buf[16384];
    ssize_t n = read(pu->ch.err_r, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        fd_close(&pu->ch.err_r);
        return;
    }
    exec_lines_feed(&pu->lines, buf, (size_t)n);
}

/* ---- the caller's ends (streamed runs) ------------------------------------------------------- */

/* Output bytes still to hand to the caller. */
static bool out_pending(const struct pump *pu)
{
    return pu->io != NULL && pu->stop == STOP_NONE && pu->ooff < pu->olen;
}

/* Move what can move without waiting: the next piece of input into the empty input buffer, the
 * output buffer to the caller. A caller's end that is gone stops the run as cancelled. */
static void stream_step(struct pump *pu, uint64_t now)
{
    if (pu->io == NULL || pu->stop != STOP_NONE)
        return;
    if (pu->ch.in_w >= 0 && pu->ioff == pu->ilen) {
        ssize_t n = pu->io->read(pu->io->arg, pu->ibuf, SRV_EXEC_STREAM_BUF);
        if (n > 0) {
            pu->ilen = (size_t)n;
            pu->ioff = 0;
        } else if (n == 0) {
            fd_close(&pu->ch.in_w); /* the end of the body: EOF for the program */
        } else if (n != -EAGAIN) {
            stop_start(pu, STOP_CANCEL, now);
            return;
        }
    }
    while (pu->ooff < pu->olen) {
        ssize_t n = pu->io->write(pu->io->arg, pu->obuf + pu->ooff, pu->olen - pu->ooff);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            stop_start(pu, STOP_CANCEL, now);
            return;
        }
        pu->ooff += (size_t)n;
        if (pu->exited)
            pu->drain_until = now + SRV_EXEC_DRAIN_MS * MS; /* bounds time without progress */
    }
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* t, or less when `at` (0: none) comes sooner. */
static uint64_t sooner(uint64_t t, uint64_t at, uint64_t now)
{
    if (at == 0)
        return t;
    return at <= now ? 0 : at - now < t ? at - now : t;
}

static int timeout_ms(const struct pump *pu, uint64_t now)
{
    uint64_t t = (pu->pidfd >= 0 || pu->exited ? EXEC_TICK_MS : EXEC_TICK_NOPIDFD_MS) * MS;
    if (pu->stop == STOP_NONE && pu->ctx != NULL)
        t = sooner(t, ctx_deadline(pu->ctx), now);
    if (pu->stop != STOP_NONE && !pu->killed && !pu->exited)
        t = sooner(t, pu->kill_at, now);
    if (pu->exited && !out_pending(pu))
        t = sooner(t, pu->drain_until, now);
    return (int)((t + MS - 1) / MS);
}

/* Checks before each wait: cancellation, the deadline, the SIGKILL time, the drain bound.
 * Returns false when the loop is over. */
static bool pump_check(struct pump *pu, uint64_t now)
{
    if (pu->exited && pu->io != NULL && pu->stop == STOP_NONE && pu->ctx != NULL) {
        /* still handing output over: the client may go or the deadline pass meanwhile */
        if (ctx_cancelled(pu->ctx))
            stop_start(pu, STOP_CANCEL, now);
        else if (ctx_expired(pu->ctx, now))
            stop_start(pu, STOP_DEADLINE, now);
        if (pu->stop != STOP_NONE)
            return false;
    }
    if (pu->exited)
        return ((pu->ch.out_r >= 0 || pu->ch.err_r >= 0) && now < pu->drain_until) ||
               out_pending(pu);
    if (pu->stop == STOP_NONE && pu->ctx != NULL && ctx_cancelled(pu->ctx))
        stop_start(pu, STOP_CANCEL, now);
    if (pu->stop == STOP_NONE && pu->ctx != NULL && ctx_expired(pu->ctx, now))
        stop_start(pu, STOP_DEADLINE, now);
    if (pu->stop != STOP_NONE && !pu->killed && now >= pu->kill_at) {
        kill(-pu->ch.pid, SIGKILL);
        pu->killed = true;
        LOG_D("job program killed after its grace", LOG_STR("kind", pu->lines.kind),
              LOG_INT("pid", pu->ch.pid), LOG_UINT("cancel_grace_ms", pu->p->grace_ms));
    }
    if (leader_exited(pu))
        reap(pu, now);
    return true;
}

static int pump_loop(struct pump *pu)
{
    for (;;) {
        uint64_t now = ctx_now_ns();
        if (!pump_check(pu, now))
            return 0;
        stream_step(pu, now);
        struct pollfd fds[5];
        int *owner[5];
        nfds_t n = 0;
        int *cands[] = {&pu->ch.in_w, &pu->ch.out_r, &pu->ch.err_r, &pu->pidfd, &pu->evfd};
        for (size_t i = 0; i < 5; i++) {
            if (*cands[i] < 0 || (i == 4 && pu->stop != STOP_NONE))
                continue;
            if (pu->io != NULL &&
                ((i == 0 && pu->ioff == pu->ilen) || (i == 1 && pu->ooff < pu->olen)))
                continue; /* streamed: nothing to write yet, or no room to read into */
            fds[n] = (struct pollfd){.fd = *cands[i], .events = i == 0 ? POLLOUT : POLLIN};
            owner[n++] = cands[i];
        }
        int rc = poll(fds, n, timeout_ms(pu, now));
        if (rc < 0 && errno != EINTR)
            return -errno;
        now = ctx_now_ns();
        for (nfds_t i = 0; rc > 0 && i < n; i++) {
            if (fds[i].revents == 0 || *owner[i] < 0)
                continue;
            if (owner[i] == &pu->ch.in_w)
                stdin_write(pu);
            else if (owner[i] == &pu->ch.out_r && stdout_read(pu, now) < 0)
                return -ENOMEM;
            else if (owner[i] == &pu->ch.err_r)
                stderr_read(pu);
            else if (owner[i] == &pu->pidfd)
                reap(pu, now);
            else if (owner[i] == &pu->evfd) {
                uint64_t v;
                ssize_t r = read(pu->evfd, &v, sizeof(v));
                (void)r; /* the next check reads the context itself */
            }
        }
    }
}

/* ---- the result ------------------------------------------------------------------------------ */

static int result_fill(struct pump *pu)
{
    struct srv_exec_result *r = pu->res;
    const char *last = pu->lines.last;
    const char *sep = last[0] != '\0' ? ": " : "";
    r->stderr_lines = pu->lines.lines;
    r->stderr_dropped = pu->lines.dropped_lines;
    memcpy(r->last_stderr, last, sizeof(r->last_stderr));
    if (pu->stop == STOP_CANCEL)
        return -ECANCELED;
    if (pu->stop == STOP_DEADLINE)
        return -ETIMEDOUT;
    if (pu->stop == STOP_TOO_LARGE) {
        r->outcome = SRV_EXEC_OUTPUT_TOO_LARGE;
        snprintf(r->message, sizeof(r->message), "output over max_output_bytes (%llu)",
                 (unsigned long long)pu->p->max_output);
    } else if (pu->status_lost) {
        r->outcome = SRV_EXEC_SIGNALED;
        snprintf(r->message, sizeof(r->message), "exit status unknown (reaped elsewhere)%s%s", sep,
                 last);
    } else if (WIFEXITED(pu->wstatus) && WEXITSTATUS(pu->wstatus) == 0) {
        r->outcome = SRV_EXEC_OK;
        return 0;
    } else if (WIFEXITED(pu->wstatus)) {
        r->outcome = SRV_EXEC_EXIT_STATUS;
        r->status = WEXITSTATUS(pu->wstatus);
        snprintf(r->message, sizeof(r->message), "exited with status %d%s%s", r->status, sep, last);
    } else {
        r->outcome = SRV_EXEC_SIGNALED;
        r->status = WIFSIGNALED(pu->wstatus) ? WTERMSIG(pu->wstatus) : 0;
        const char *abbrev = sigabbrev_np(r->status);
        snprintf(r->message, sizeof(r->message), "killed by signal SIG%s%s%s",
                 abbrev != NULL ? abbrev : "?", sep, last);
    }
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
    return 0;
}

static void spawn_failure(struct srv_exec_result *r, const struct srv_exec_prog *p, int err,
                          const char *stage)
{
    r->outcome = SRV_EXEC_SPAWN_FAILED;
    r->status = err;
    snprintf(r->message, sizeof(r->message), "cannot run %s: %s (%s)", p->path, strerror(err),
             stage != NULL ? stage : "spawn");
}

/* Run the spawned child to its end. Called with the watch armed; closes the child's fds. */
static int pump_run(struct pump *pu)
{
    pu->pidfd = exec_test_no_pidfd ? -1 : (int)syscall(SYS_pidfd_open, pu->ch.pid, 0);
    exec_lines_init(&pu->lines, pu->lines.kind, pu->ch.pid);
    if (pu->io == NULL && pu->body_len == 0)
        fd_close(&pu->ch.in_w);
    LOG_D("job program started", LOG_STR("kind", pu->lines.kind), LOG_INT("pid", pu->ch.pid),
          LOG_STR("program", pu->p->path));
    int rc = pump_loop(pu);
    if (!pu->exited) { /* out of memory or a broken poll: never leave it behind */
        kill(-pu->ch.pid, SIGKILL);
        reap(pu, ctx_now_ns());
    }
    exec_lines_end(&pu->lines);
    fd_close(&pu->ch.in_w);
    fd_close(&pu->ch.out_r);
    fd_close(&pu->ch.err_r);
    fd_close(&pu->pidfd);
    if (pu->io != NULL)
        pu->res->out_len = pu->out_total;
    if (rc == 0)
        rc = result_fill(pu);
    LOG_D("job program ended", LOG_STR("kind", pu->lines.kind), LOG_INT("pid", pu->ch.pid),
          LOG_INT("wait_status", pu->wstatus), LOG_STR("stop", stop_names[pu->stop]),
          LOG_UINT("out_bytes", pu->res->out_len), LOG_UINT("stderr_lines", pu->lines.lines));
    return rc;
}

int srv_exec_run(const struct srv_exec_prog *p, const struct srv_exec_input *in,
                 struct srv_exec_result *res)
{
    memset(res, 0, sizeof(*res));
    struct pump pu = {.p = p, .res = res, .ctx = ctx_current(), .pidfd = -1, .evfd = -1};
    pu.body = in->body;
    pu.body_len = in->body_len;
    pu.lines.kind = in->kind != NULL ? in->kind : "";
    pu.io = in->stream;
    if (pu.ctx != NULL && ctx_cancelled(pu.ctx))
        return -ECANCELED;
    if (pu.ctx != NULL && ctx_expired(pu.ctx, ctx_now_ns()))
        return -ETIMEDOUT;

    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    struct ctx_watch w = {0};
    struct exec_args args = {0};
    const char *stage = NULL;
    int rc = 0;
    if ((pu.evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        spawn_failure(res, p, errno, "eventfd");
        goto unmask;
    }
    if (pu.ctx != NULL && ctx_watch_add(pu.ctx, &w, on_cancel, &pu.evfd) != 0) {
        rc = -ECANCELED;
        goto close_evfd;
    }
    if (pu.io != NULL) {
        if ((pu.ibuf = malloc(2 * (size_t)SRV_EXEC_STREAM_BUF)) == NULL) {
            rc = -ENOMEM;
            goto unwatch;
        }
        pu.obuf = pu.ibuf + SRV_EXEC_STREAM_BUF;
        pu.io->wake(pu.io->arg, pu.evfd);
    }
    if ((rc = exec_args_build(p, in, &args)) < 0)
        goto unwatch;
    rc = exec_spawn(p, &args, &pu.ch, &stage);
    free(args.mem);
    if (rc < 0) {
        spawn_failure(res, p, -rc, stage);
        rc = 0;
        goto unwatch;
    }
    rc = pump_run(&pu);
unwatch:
    if (pu.ibuf != NULL)
        pu.io->wake(pu.io->arg, -1);
    free(pu.ibuf);
    if (pu.ctx != NULL)
        ctx_watch_remove(&w);
close_evfd:
    fd_close(&pu.evfd);
unmask:
    if (pu.epipe) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero); /* the SIGPIPE of that EPIPE, if any */
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        srv_exec_result_fini(res);
    return rc;
}

void srv_exec_result_fini(struct srv_exec_result *res)
{
    if (res == NULL)
        return;
    free(res->out);
    res->out = NULL;
    res->out_len = 0;
}
