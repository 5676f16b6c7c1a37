/* spawnloop.c - the ceiling for exec kinds: how many times per second this machine can start a
 * program and wait for it, with nothing else around.
 *
 *   spawnloop [-t THREADS] [-d SECONDS] [-m posix|engine] [PROGRAM]
 *
 * THREADS threads (default: the CPUs) each run PROGRAM (default /bin/true) in a loop for SECONDS
 * (default 3): `posix` with posix_spawn + waitpid, stdin/stdout/stderr on /dev/null (the plain
 * loop bench/exec.sh compares an exec kind with); `engine` through srv_exec_run, spindle's exec
 * engine without HTTP, queue or pool (pipes, pidfd, eventfd, process group, reaping). Prints one
 * line: "spawnloop mode=M threads=T seconds=S runs=N per_s=R us_per_run=U cpu_us_per_run=C",
 * C being the CPU time of this process and of the programs it reaped (getrusage) per run: unlike
 * the rate, it does not depend on how much of the machine other processes take.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "context/ctx.h"
#include "server/jobs/exec/exec.h"

extern char **environ;

struct loop {
    const char *program;
    bool engine;
    const struct srv_exec_prog *prog;
    uint64_t until_ns;
    atomic_uint_fast64_t runs, failures;
};

static int posix_once(const char *program)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    char *argv[] = {(char *)program, NULL};
    pid_t pid;
    int st = 0;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    int rc = posix_spawn(&pid, program, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0)
        return -rc;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int engine_once(const struct srv_exec_prog *prog)
{
    struct srv_exec_input in = {.kind = "true"};
    struct srv_exec_result res;
    int rc = srv_exec_run(prog, &in, &res);
    if (rc == 0 && res.outcome != SRV_EXEC_OK)
        rc = -EIO;
    srv_exec_result_fini(&res);
    return rc;
}

static void *loop_main(void *arg)
{
    struct loop *l = arg;
    while (ctx_now_ns() < l->until_ns) {
        int rc = l->engine ? engine_once(l->prog) : posix_once(l->program);
        atomic_fetch_add(rc == 0 ? &l->runs : &l->failures, 1);
    }
    return NULL;
}

/* User and system CPU seconds of `who` (RUSAGE_SELF or RUSAGE_CHILDREN). */
static double cpu_seconds(int who)
{
    struct rusage ru;
    if (getrusage(who, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    long threads = sysconf(_SC_NPROCESSORS_ONLN), seconds = 3;
    struct loop l = {.program = "/bin/true"};
    int opt;
    while ((opt = getopt(argc, argv, "t:d:m:")) != -1) {
        if (opt == 't')
            threads = atol(optarg);
        else if (opt == 'd')
            seconds = atol(optarg);
        else if (opt == 'm' && (strcmp(optarg, "posix") == 0 || strcmp(optarg, "engine") == 0))
            l.engine = strcmp(optarg, "engine") == 0;
        else {
            fprintf(stderr, "usage: spawnloop [-t THREADS] [-d SECONDS] [-m posix|engine] "
                            "[PROGRAM]\n");
            return 2;
        }
    }
    if (optind < argc)
        l.program = argv[optind];
    if (threads < 1 || threads > 256 || seconds < 1)
        return 2;
    struct srv_exec_prog *prog = NULL;
    if (l.engine) {
        char err[256];
        struct srv_exec_conf conf = {.exec = l.program, .cancel_grace_ms = 1000};
        if ((prog = srv_exec_prog_new(&conf, NULL, err, sizeof(err))) == NULL) {
            fprintf(stderr, "spawnloop: %s\n", err);
            return 1;
        }
        l.prog = prog;
    }
    pthread_t th[256];
    uint64_t t0 = ctx_now_ns();
    l.until_ns = t0 + (uint64_t)seconds * 1000000000u;
    for (long i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, loop_main, &l) != 0)
            return 1;
    for (long i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double secs = (double)(ctx_now_ns() - t0) / 1e9;
    uint64_t runs = atomic_load(&l.runs), fails = atomic_load(&l.failures);
    double cpu = cpu_seconds(RUSAGE_SELF) + cpu_seconds(RUSAGE_CHILDREN);
    printf("spawnloop mode=%s threads=%ld seconds=%.2f runs=%llu per_s=%.0f us_per_run=%.1f "
           "cpu_us_per_run=%.1f\n",
           l.engine ? "engine" : "posix", threads, secs, (unsigned long long)runs,
           (double)runs / secs, runs ? secs * 1e6 * (double)threads / (double)runs : 0.0,
           runs ? cpu * 1e6 / (double)runs : 0.0);
    srv_exec_prog_free(prog);
    if (fails > 0)
        fprintf(stderr, "spawnloop: %llu runs failed\n", (unsigned long long)fails);
    return fails > 0 ? 1 : 0;
}
