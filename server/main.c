/* main.c - the spindle binary: `spindle serve|call|logs|keygen|version|help`.
 *
 * Design: main only parses the command line, builds the effective configuration (defaults, then
 * the file given with -c, then the command-line overrides, each through srv_cfg_set with the
 * option as origin so errors name it), and hands over to srv_run(). Usage and configuration
 * errors go to stderr and exit 2; a start-up failure exits 1; otherwise the exit code is
 * srv_run's.
 *
 * Signals: before the first thread exists (the log writer, the pool, the loop's helpers), the
 * main thread blocks every asynchronous signal, so every thread inherits a full mask and signals
 * reach the process only through the loop's ev_signal watchers (libev unblocks a watched signal
 * in the loop thread, or reads it from a signalfd). The synchronous fault signals (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) and SIGABRT stay unblocked: the kernel resets a
 * blocked fault signal to its default action, which would bypass the crash handlers that flush
 * the log.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "logging/log.h"
#include "cli/cli.h"
#include "server/api/schedules.h"
#include "server/config.h"
#include "server/jobs/jobs.h"
#include "server/server.h"
#include "server/tasks/migrate.h"
#include "server/version.h"

#define MAIN_EXIT_FAIL  1
#define MAIN_EXIT_USAGE 2

static const char main_usage[] =
    "usage: spindle <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve     run the HTTP server in the foreground\n"
    "  call      run jobs against a server (see: spindle call --help)\n"
    "  logs      pretty-print, filter and follow the JSON log (see: spindle logs --help)\n"
    "  keygen    make a client token and its configuration line (see: spindle keygen --help)\n"
    "  tasks     list, show, cancel durable tasks, get their answers; migrate the task\n"
    "            store's schema (see: spindle tasks --help)\n"
    "  version   print the version\n"
    "  help      print this help\n"
    "\n"
    "spindle serve [options]:\n"
    "  -c, --config FILE        load FILE over the built-in defaults (without -c: defaults only)\n"
    "      --check-config       check the configuration (every error, one FILE:LINE line each)\n"
    "                           and that [log] file's directory is writable; print \"FILE: ok\"\n"
    "      --user NAME          with --check-config: check the log directory as user NAME\n"
    "      --print-config       print the effective configuration (INI) and exit\n"
    "      --listen ADDR[,ADDR] override [server] listen (A.B.C.D:PORT or [IPV6]:PORT)\n"
    "      --workers N          override [pool] workers (0 = one per online CPU)\n"
    "      --log-level LEVEL    override [log] level (trace, debug, info, warn, error, fatal)\n"
    "      --log-file PATH|-    override [log] file (- = standard error)\n"
    "  -h, --help               print this help\n"
    "\n"
    "Signals: SIGTERM or SIGINT stop gracefully (a second one stops at once), SIGHUP reloads\n"
    "the configuration file and reopens the log, SIGUSR1 reopens the log.\n"
    "Exit status: 0 clean stop, 1 start-up failure, 2 usage or configuration error.\n";

enum main_opt {
    MAIN_OPT_CHECK = 256,
    MAIN_OPT_PRINT,
    MAIN_OPT_LISTEN,
    MAIN_OPT_WORKERS,
    MAIN_OPT_LOG_LEVEL,
    MAIN_OPT_LOG_FILE,
    MAIN_OPT_USER,
};

struct main_serve {
    const char *config_path; /* NULL = defaults only */
    bool check;
    bool print;
    const char *user;              /* --user: whom --check-config checks the log directory for */
    struct srv_cfg_override ov[4]; /* indexed by enum main_opt - MAIN_OPT_LISTEN */
};

static const struct option main_serve_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"check-config", no_argument, NULL, MAIN_OPT_CHECK},
    {"print-config", no_argument, NULL, MAIN_OPT_PRINT},
    {"listen", required_argument, NULL, MAIN_OPT_LISTEN},
    {"workers", required_argument, NULL, MAIN_OPT_WORKERS},
    {"log-level", required_argument, NULL, MAIN_OPT_LOG_LEVEL},
    {"log-file", required_argument, NULL, MAIN_OPT_LOG_FILE},
    {"user", required_argument, NULL, MAIN_OPT_USER},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Flush stdout and report a failed write (a full disk, a closed pipe) as a failure. */
static int main_stdout_done(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "spindle: writing to standard output: %s\n", strerror(errno));
        return MAIN_EXIT_FAIL;
    }
    return 0;
}

static int main_usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "spindle: %s \"%s\" (see: spindle help)\n", what, arg);
    return MAIN_EXIT_USAGE;
}

/* Parse serve's options (argv[0] is "serve"). Returns 0, or an exit code; -1 after --help. */
static int main_serve_parse(int argc, char **argv, struct main_serve *s)
{
    s->ov[0] = (struct srv_cfg_override){"--listen", "server", "listen", NULL};
    s->ov[1] = (struct srv_cfg_override){"--workers", "pool", "workers", NULL};
    s->ov[2] = (struct srv_cfg_override){"--log-level", "log", "level", NULL};
    s->ov[3] = (struct srv_cfg_override){"--log-file", "log", "file", NULL};
    opterr = 0; /* our own messages */
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+:c:h", main_serve_options, NULL)) != -1) {
        switch (c) {
        case 'c':
            s->config_path = optarg;
            break;
        case 'h':
            fputs(main_usage, stdout);
            return main_stdout_done() ? MAIN_EXIT_FAIL : -1;
        case MAIN_OPT_CHECK:
            s->check = true;
            break;
        case MAIN_OPT_PRINT:
            s->print = true;
            break;
        case MAIN_OPT_USER:
            s->user = optarg;
            break;
        case MAIN_OPT_LISTEN:
        case MAIN_OPT_WORKERS:
        case MAIN_OPT_LOG_LEVEL:
        case MAIN_OPT_LOG_FILE:
            s->ov[c - MAIN_OPT_LISTEN].value = optarg;
            break;
        case ':':
            return main_usage_error("serve: missing value for option", argv[optind - 1]);
        default:
            return main_usage_error("serve: unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return main_usage_error("serve: unexpected argument", argv[optind]);
    if (s->user != NULL && !s->check)
        return main_usage_error("serve: --user goes with", "--check-config");
    return 0;
}

/* Print each line of `err` as "spindle: LINE". */
static void main_errors_print(const char *err)
{
    for (const char *p = err; *p;) {
        size_t n = strcspn(p, "\n");
        fprintf(stderr, "spindle: %.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
}

/* Defaults, then the file, then the overrides. Returns 0 or an exit code (message printed). */
static int main_serve_config(const struct main_serve *s, struct srv_cfg *cfg)
{
    static char err[65536]; /* every error of a file; main runs once, on one thread */
    srv_cfg_defaults(cfg);
    if (s->config_path != NULL && srv_cfg_load(s->config_path, cfg, err, sizeof(err)) != 0) {
        main_errors_print(err);
        return MAIN_EXIT_USAGE;
    }
    if (srv_cfg_overrides_apply(cfg, s->ov, sizeof(s->ov) / sizeof(s->ov[0]), err, sizeof(err)) !=
        0) {
        fprintf(stderr, "spindle: %s\n", err);
        return MAIN_EXIT_USAGE;
    }
    return 0;
}

/* Block every asynchronous signal in the calling thread (and all threads created later). */
static int main_signals_block(void)
{
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
    sigset_t set;
    sigfillset(&set);
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++)
        sigdelset(&set, faults[i]);
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int main_serve_run(const struct main_serve *s, const struct srv_cfg *cfg)
{
    int rc = main_signals_block();
    if (rc != 0) {
        fprintf(stderr, "spindle: blocking signals: %s\n", strerror(rc));
        return MAIN_EXIT_FAIL;
    }
    struct log_config lc = {
        .path = cfg->log_file,
        .level = cfg->log_level,
        .buffer_bytes = cfg->log_buffer_bytes,
        .policy = cfg->log_policy,
    };
    rc = log_start(&lc);
    if (rc != 0) {
        fprintf(stderr, "spindle: starting the log (file \"%s\"): %s\n",
                cfg->log_file[0] ? cfg->log_file : "-", strerror(-rc));
        return MAIN_EXIT_FAIL;
    }
    log_install_crash_handlers();
    log_thread_name_set("main");
    int code = srv_run(cfg, s->config_path, s->ov, sizeof(s->ov) / sizeof(s->ov[0]));
    log_stop();
    return code;
}

/* --check-config: the schedules' tasks against the kinds of the same file (srv_run checks them
 * again at start, against the kinds installed then). Returns 0, or 2 after printing why. */
static int main_sched_check(const struct srv_cfg *cfg, const struct srv_kinds *kinds)
{
    char err[2 * SRV_CFG_PATH_MAX];
    if (srv_sched_check(cfg, kinds, err, sizeof(err)) == 0)
        return 0;
    fprintf(stderr, "spindle: %s\n", err);
    return MAIN_EXIT_USAGE;
}

static int main_serve(int argc, char **argv)
{
    struct main_serve s = {0};
    struct srv_cfg cfg;
    int rc = main_serve_parse(argc, argv, &s);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    rc = main_serve_config(&s, &cfg);
    if (rc != 0)
        return rc;
    if (s.check) {
        char err[2 * SRV_CFG_PATH_MAX];
        if (srv_cfg_paths_check(&cfg, s.user, err, sizeof(err)) != 0) {
            fprintf(stderr, "spindle: %s\n", err);
            return MAIN_EXIT_USAGE;
        }
    }
    static char kerr[16384]; /* every kind's error */
    struct srv_kinds *kinds = srv_kinds_build(&cfg, kerr, sizeof(kerr));
    if (kinds == NULL) {
        main_errors_print(kerr);
        srv_kinds_shutdown();
        return MAIN_EXIT_USAGE;
    }
    if (s.check && main_sched_check(&cfg, kinds) != 0) {
        srv_kinds_unref(kinds);
        srv_kinds_shutdown();
        return MAIN_EXIT_USAGE;
    }
    if (s.print || s.check) {
        srv_kinds_unref(kinds);
        srv_kinds_shutdown();
    }
    if (s.print)
        srv_cfg_print(&cfg, stdout);
    if (s.check)
        printf("%s: ok\n", s.config_path ? s.config_path : "built-in defaults");
    if (s.print || s.check)
        return main_stdout_done();
    srv_kinds_install(kinds); /* modules are loaded before any thread starts */
    rc = main_serve_run(&s, &cfg);
    srv_kinds_shutdown(); /* every job is done */
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_usage, stderr);
        return MAIN_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return main_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "call") == 0)
        return cli_call_main(argc - 1, argv + 1);
    if (strcmp(cmd, "logs") == 0)
        return cli_logs_main(argc - 1, argv + 1);
    if (strcmp(cmd, "keygen") == 0)
        return cli_keygen_main(argc - 1, argv + 1);
    /* migrate talks to the store itself (server/tasks/); the other tasks subcommands talk
     * HTTP to a server (cli/tasks.c). */
    if (strcmp(cmd, "tasks") == 0 && argc > 2 && strcmp(argv[2], "migrate") == 0)
        return srv_tasks_migrate_main(argc - 2, argv + 2);
    if (strcmp(cmd, "tasks") == 0)
        return cli_tasks_main(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc > 2)
            return main_usage_error("version: unexpected argument", argv[2]);
        printf("spindle %s (commit %s)\n", srv_version, srv_commit);
        return main_stdout_done();
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(main_usage, stdout);
        return main_stdout_done();
    }
    if (cmd[0] == '-')
        return main_usage_error("unknown option", cmd);
    return main_usage_error("unknown command", cmd);
}
