/* internal.h - what the files of server/jobs/exec/ share: the compiled program, the argv and
 * environment builder (prog.c), the spawn (spawn.c) and the pump (run.c, stderr.c). Not for use
 * outside server/jobs/exec/ and its tests.
 */
#ifndef SPINDLE_SRV_EXEC_INTERNAL_H
#define SPINDLE_SRV_EXEC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "server/jobs/exec/exec.h"

/* One piece of an argv element: literal bytes, or a parameter (index into the names). */
struct exec_part {
    int param; /* -1: literal */
    char *lit; /* literal bytes (NUL-terminated copy) */
    size_t len;
};

struct exec_word {
    struct exec_part *parts;
    size_t nparts;
};

enum exec_limit { EXEC_LIM_CPU, EXEC_LIM_AS, EXEC_LIM_NOFILE, EXEC_LIM__COUNT };

struct srv_exec_prog {
    char *path; /* absolute */
    struct exec_word *words;
    size_t nwords;
    char **argv_fixed; /* the argv when no element names a parameter, else NULL */
    char **names;      /* the declared parameters */
    char **env_names;  /* "SPINDLE_PARAM_<NAME>=" for each */
    size_t nparams;
    char *home; /* "HOME=..." */
    char *cwd;  /* NULL: inherited */
    bool set_user;
    uid_t uid;
    gid_t gid;
    gid_t *groups;
    size_t ngroups;
    uint64_t limits[EXEC_LIM__COUNT]; /* 0: inherited */
    uint64_t max_output;
    unsigned grace_ms;
};

/* The argv and environment of one run: one allocation holding the pointer arrays and strings.
 * Built by exec_args_build from the program, the input and the current context. */
struct exec_args {
    char **argv;
    char **envp;
    void *mem; /* free() this */
};

/* Build the argv and environment for `in` (borrowed) under the current context.
 * Returns 0 or -ENOMEM. */
int exec_args_build(const struct srv_exec_prog *p, const struct srv_exec_input *in,
                    struct exec_args *out);

/* A started child: its pid, the parent's ends of its pipes (non-blocking, CLOEXEC). */
struct exec_child {
    pid_t pid;
    int in_w, out_r, err_r;
};

/* Spawn p with `args` (vfork-safe child: new process group, rlimits, user, cwd, the three pipes,
 * nothing else inherited, execve). Returns 0 and fills *c, or a negative errno: then *stage is
 * the step that failed ("pipe", "vfork", "setrlimit", "setgid", "chdir", "execve", ...) and the
 * child, if any, was reaped. */
int exec_spawn(const struct srv_exec_prog *p, const struct exec_args *args, struct exec_child *c,
               const char **stage);

/* Tests only: when set, runs behave as on a kernel without pidfd_open (Linux < 5.3) and find the
 * exit by polling waitid. */
extern _Atomic bool exec_test_no_pidfd;

/* stderr of one run, cut into lines and logged (stderr.c). */
struct exec_lines {
    const char *kind;
    pid_t pid;
    char cur[SRV_EXEC_LINE_MAX];
    size_t cur_len;
    uint64_t cur_cut; /* bytes of the current line beyond SRV_EXEC_LINE_MAX */
    uint64_t lines, logged_lines, logged_bytes, dropped_lines, dropped_bytes;
    char last[SRV_EXEC_LINE_MAX + 1];
};

void exec_lines_init(struct exec_lines *l, const char *kind, pid_t pid);
/* Feed n bytes read from stderr. */
void exec_lines_feed(struct exec_lines *l, const char *buf, size_t n);
/* At EOF: the unterminated last line, then the "job stderr dropped" line when any was. */
void exec_lines_end(struct exec_lines *l);

#endif
