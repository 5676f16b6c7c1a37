/* proc.h - child processes and temporary directories for the integration suites.
 *
 * A test starts the real spindle binary ($SPINDLE_BIN) or any other program, with extra
 * environment entries, stdin from /dev/null and stdout/stderr captured in unlinked temporary files
 * (never pipes: a child that writes a lot can not block on a reader that is not reading, and the
 * output can be read at any time, also while the child runs). Every wait is bounded: a child that
 * outlives its timeout is killed with SIGKILL (with its process group) and reaped, and the timeout
 * is reported. proc_free() kills and reaps whatever is still running, so no zombie outlives it.
 *
 * The child gets an empty signal mask and default dispositions (the runner ignores SIGPIPE; that
 * must not leak into the server), runs in its own process group, and inherits no file descriptor
 * beyond 0, 1 and 2.
 *
 * Threads: a struct proc belongs to one thread at a time. The functions keep no global state.
 */
#ifndef SPINDLE_TEST_PROC_H
#define SPINDLE_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct proc;

enum proc_stream {
    PROC_STDOUT = 1,
    PROC_STDERR = 2,
};

/* The spindle binary: $SPINDLE_BIN, or NULL (with a message on stderr) when it is not set. */
const char *proc_bin(void);

/* Start $SPINDLE_BIN with `args` (borrowed, NULL-terminated, without argv[0]; NULL = none) and the
 * environment of the test process plus `env_add` (borrowed, NULL-terminated "NAME=VALUE" entries
 * that replace variables of the same name; NULL = none). Returns a new process, or NULL with errno
 * set (ENOENT when $SPINDLE_BIN is unset or the program does not exist). */
struct proc *proc_spawn(const char *const *args, const char *const *env_add);

/* The same for any program: `exe` is run as by execvp (looked up in PATH without a slash). */
struct proc *proc_spawn_exe(const char *exe, const char *const *args, const char *const *env_add);

/* The child's process id (also after it exited). */
pid_t proc_pid(const struct proc *p);

/* Wait up to `timeout_ms` (< 0 = no limit) for the child to exit and reap it. On timeout the
 * child's process group is killed with SIGKILL and reaped, and -ETIMEDOUT is returned. *exit_code
 * (may be NULL) receives the exit status, or 128 + signal number when a signal ended it (also
 * after a timeout: 137). Calling it again after the child was reaped returns the same result at
 * once. Returns 0, -ETIMEDOUT, or a negative errno from waitpid(). */
int proc_wait(struct proc *p, int timeout_ms, int *exit_code);

/* True once proc_wait() has reaped the child. */
bool proc_exited(const struct proc *p);

/* True when proc_wait() had to kill the child because its timeout passed. */
bool proc_timed_out(const struct proc *p);

/* Send `sig` to the child (not its group). Returns 0, -ESRCH once it has been reaped, or a
 * negative errno from kill(). */
int proc_signal(struct proc *p, int sig);

/* Everything the child has written to `stream` so far, NUL-terminated (an embedded NUL ends the
 * string early; `len` (may be NULL) gets the full byte count). The string is owned by `p` and
 * valid until the next proc_output() for the same stream or proc_free(). Returns "" on a read
 * error, never NULL. */
const char *proc_output(struct proc *p, enum proc_stream stream, size_t *len);

/* Poll the captured `stream` (every millisecond or so) until it contains `needle` or `timeout_ms`
 * passes or the child exits without having written it. Returns true when found. */
bool proc_output_wait(struct proc *p, enum proc_stream stream, const char *needle, int timeout_ms);

/* Kill (SIGKILL to the group) and reap the child if it still runs, close and free everything.
 * NULL is a no-op. */
void proc_free(struct proc *p);

/* One shot: run $SPINDLE_BIN with `args` (as proc_spawn), wait up to `timeout_ms`, and hand back
 * the output. *out and *err (each may be NULL to discard) receive new NUL-terminated strings the
 * caller frees; they are set (possibly to "") whenever the child was started, also on timeout.
 * Returns 0 when the child exited within the time, -ETIMEDOUT when it was killed, or a negative
 * errno when it could not be started (then *out and *err are NULL). */
int proc_run(const char *const *args, int timeout_ms, char **out, char **err, int *exit_code);

/* Create a new directory /tmp/spindle-test-XXXXXX (mode 0700). Returns its path (new string the
 * caller passes to proc_tmpdir_free), or NULL with errno set. */
char *proc_tmpdir_new(void);

/* Remove `dir` recursively (symbolic links are removed, not followed) and free the string. NULL is
 * a no-op. Returns 0 or the first negative errno met (the rest is still attempted). */
int proc_tmpdir_free(char *dir);

/* Write `content` (borrowed) to `dir`/`name`, created or truncated with mode 0644. Returns the new
 * path (caller frees), or NULL with errno set. */
char *proc_file_write(const char *dir, const char *name, const char *content);

/* Number of live children of process `pid` (of all its threads), -1 when /proc cannot tell. */
int proc_children(pid_t pid);

#endif
