/* exec.h - run a program as a job: the engine behind `[kind.NAME] exec = ...`.
 *
 * A program (struct srv_exec_prog) is compiled once from a kind's configuration: the argv
 * template split on blanks (no shell), the program resolved to an absolute path and checked to be
 * executable, `user` resolved to ids, the limits. A run (srv_exec_run) spawns it from the calling
 * worker thread with the request's context current and waits for it:
 *
 *   stdin   the request body (written while stdout and stderr are read: no deadlock either way;
 *           a program that exits without reading it all is not an error)
 *   stdout  the answer, at most max_output_bytes (more: the program is stopped, output_too_large)
 *   (streamed: stdin from and stdout to the caller's srv_exec_stream, both at once, with the
 *   same rules; only a fixed buffer each way is held)
 *   stderr  one log line per line, {"msg":"job stderr","line":...} with the request's ids,
 *           bounded per run (SRV_EXEC_STDERR_LINES, SRV_EXEC_STDERR_BYTES; the rest is counted
 *           in one final "job stderr dropped" line); the last non-empty line is kept for errors
 *   env     only PATH, LANG=C.UTF-8, HOME, then SPINDLE_KIND, SPINDLE_REQUEST_ID,
 *           SPINDLE_TENANT, TRACEPARENT (the trace with a new span for this run),
 *           SPINDLE_DEADLINE_MS (ms left, absent without a deadline), SPINDLE_PARAM_<NAME>
 *           (upper-cased) for every parameter given; nothing of the server's environment
 *   fds     0, 1, 2 only; everything else is closed before execve
 *   process its own process group; the rlimits, user and cwd of the configuration
 *
 * Cancellation: when the current context is cancelled (deadline, client gone, batch sibling,
 * shutdown) or its deadline passes, the process group gets SIGTERM and, cancel_grace_ms later,
 * SIGKILL. The run always reaps the program before it returns (no SIGCHLD handler: a pidfd, or
 * waitid polling) and kills what is left of its process group when it exits; every descriptor
 * it opened is closed again.
 *
 * Threads: a program is immutable after srv_exec_prog_new() and may be shared by any number of
 * concurrent runs on any threads. srv_exec_run blocks the calling thread (a worker) until the
 * program is gone. Depends on context/ and logging/ only.
 */
#ifndef SPINDLE_SRV_EXEC_H
#define SPINDLE_SRV_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SRV_EXEC_STDERR_LINES 100         /* stderr lines logged per run, at most */
#define SRV_EXEC_STDERR_BYTES (64u << 10) /* stderr bytes logged per run, at most */
#define SRV_EXEC_LINE_MAX     1024        /* a longer stderr line is cut to this many bytes */
#define SRV_EXEC_MSG_MAX      (SRV_EXEC_LINE_MAX + 160)
#define SRV_EXEC_DRAIN_MS     1000 /* after the program exits, wait this long for EOF at most */
#define SRV_EXEC_PATH         "/usr/local/bin:/usr/bin:/bin"

/* What a kind's configuration says about its program. Strings are borrowed during
 * srv_exec_prog_new() only. */
struct srv_exec_conf {
    const char *exec;               /* "wc -c", "convert - -resize {size} png:-" */
    const char *const *param_names; /* the kind's declared parameters, nparams of them */
    size_t nparams;
    const char *user;          /* NULL or "": the server's own user */
    const char *cwd;           /* NULL or "": the server's working directory */
    uint64_t max_output_bytes; /* 0: no limit */
    unsigned cancel_grace_ms;  /* SIGTERM to SIGKILL */
    uint64_t rlimit_cpu_s;     /* RLIMIT_CPU seconds; 0: inherited */
    uint64_t rlimit_as;        /* RLIMIT_AS bytes; 0: inherited */
    uint64_t rlimit_nofile;    /* RLIMIT_NOFILE; 0: inherited */
};

struct srv_exec_prog;

/* Compile `conf` into a program (new, owned by the caller; srv_exec_prog_free releases it).
 * Checks, with the message put in err and the offending key ("exec", "user" or "cwd") in *key:
 *   exec: empty; "unknown parameter '{x}'" (not among param_names); "unterminated '{'";
 *         "the program cannot be a parameter"; the program not found (a name without '/' is
 *         looked up in SRV_EXEC_PATH); not a regular file or not executable;
 *   user: no such user; switching users needs root;
 *   cwd:  not an absolute path to a directory.
 * In the template, `{name}` is replaced by the parameter's value inside its argv element (never
 * split again), `{{` and `}}` stand for literal braces.
 * Returns NULL on error (err filled; "out of memory" for ENOMEM). key may be NULL. */
struct srv_exec_prog *srv_exec_prog_new(const struct srv_exec_conf *conf, const char **key,
                                        char *err, size_t size);
void srv_exec_prog_free(struct srv_exec_prog *p);

/* The absolute path of the program (borrowed, lives as long as p). */
const char *srv_exec_prog_path(const struct srv_exec_prog *p);

/* A streamed run's two ends (the caller's, e.g. a request's channels): stdin is fed from
 * `read` and stdout goes to `write` as the program produces it, at most one buffer of
 * SRV_EXEC_STREAM_BUF bytes each way held by the run. Both calls never wait: when they cannot
 * proceed they return -EAGAIN and arrange for the descriptor given to `wake` to become readable
 * once they may (an eventfd the run owns: `wake(arg, fd)` before the first call, `wake(arg, -1)`
 * after the last, after which the descriptor must never be written again).
 *   read   bytes (> 0), 0 at the end of the input, -EAGAIN, or another negative errno (the input
 *          is gone: the run is stopped as cancelled)
 *   write  bytes taken (> 0, maybe fewer than len), -EAGAIN, or another negative errno (nobody
 *          takes the output any more: the run is stopped as cancelled) */
struct srv_exec_stream {
    ssize_t (*read)(void *arg, void *buf, size_t size);
    ssize_t (*write)(void *arg, const void *buf, size_t len);
    void (*wake)(void *arg, int fd);
    void *arg;
};

#define SRV_EXEC_STREAM_BUF (64u << 10)

/* One run's input. Everything is borrowed for the duration of srv_exec_run. */
struct srv_exec_input {
    const char *kind;          /* SPINDLE_KIND and the log lines; may be NULL */
    const char *const *values; /* nparams values in param_names order, NUL-terminated; NULL
                                * (the array or an entry): not given, substituted as "" and
                                * SPINDLE_PARAM_<NAME> not set */
    const void *body;          /* stdin; may be NULL when body_len is 0 */
    size_t body_len;
    /* NULL: stdin is `body`, stdout collected in the result. Else body is ignored, stdin and
     * stdout stream through it; a successful result then holds no bytes (out_len counts what
     * went out), and a failure may come after part of the output was written. */
    const struct srv_exec_stream *stream;
};

enum srv_exec_outcome {
    SRV_EXEC_OK = 0,           /* exit status 0: out holds stdout */
    SRV_EXEC_EXIT_STATUS,      /* exited with status `status` != 0 */
    SRV_EXEC_SIGNALED,         /* killed by signal `status` (not by us) */
    SRV_EXEC_OUTPUT_TOO_LARGE, /* stdout went over max_output_bytes: stopped */
    SRV_EXEC_SPAWN_FAILED,     /* could not be started: `status` is the errno */
    SRV_EXEC_OUTCOME__COUNT
};

struct srv_exec_result {
    enum srv_exec_outcome outcome;
    int status; /* exit status, signal number or errno, as the outcome says */
    char *out;  /* stdout (new, owned by the result; NULL when empty), out_len bytes */
    size_t out_len;
    uint64_t stderr_lines;                   /* lines seen on stderr */
    uint64_t stderr_dropped;                 /* of which not logged (over the bounds) */
    char last_stderr[SRV_EXEC_LINE_MAX + 1]; /* the last non-empty stderr line, "" when none */
    char message[SRV_EXEC_MSG_MAX];          /* for the client, "" for SRV_EXEC_OK:
        "exited with status 3: <last line>", "killed by signal SIGSEGV", "output over
        max_output_bytes (16777216)", "cannot run /x/y: Permission denied (execve)" */
};

/* Run `p` with `in` (borrowed) and the calling thread's current context (may be none: then no
 * ids, no deadline, no cancellation), and fill *res (caller-owned; release with
 * srv_exec_result_fini). Blocks until the program is reaped.
 * Returns 0: the program ran or could not be started, res->outcome says which;
 *   -ECANCELED  the context was cancelled (before the start: nothing was run), the program was
 *               stopped; -ETIMEDOUT its deadline passed (likewise); -ENOMEM out of memory.
 * On an error return res holds nothing to free (fini is still allowed). */
int srv_exec_run(const struct srv_exec_prog *p, const struct srv_exec_input *in,
                 struct srv_exec_result *res);
void srv_exec_result_fini(struct srv_exec_result *res);

/* How an outcome is answered: HTTP status (200, 500, 502) and error code ("job_failed",
 * "output_too_large", "spawn_failed"; NULL for SRV_EXEC_OK). */
int srv_exec_outcome_status(enum srv_exec_outcome o);
const char *srv_exec_outcome_code(enum srv_exec_outcome o);

#endif
