/* cli.h - the user-side subcommands of the spindle binary: `spindle call` (an HTTP client for the
 * job API with retries, backoff and a circuit breaker) and `spindle logs` (a pretty-printer and
 * follower for spindle's JSON-lines logs).
 *
 * This is the one public header of cli/: the two entry points server/main.c dispatches to and
 * their exit codes. What the files of cli/ share with each other (and their unit suites test
 * without sockets or processes) is in cli/internal.h.
 *
 * Threads: both tools are single-threaded and keep no global state (getopt's aside); `spindle logs
 * -f` blocks SIGINT/SIGTERM in the calling thread and waits for them with sigtimedwait().
 */
#ifndef SPINDLE_CLI_H
#define SPINDLE_CLI_H

/* Exit codes shared by both tools. */
#define CLI_EXIT_OK    0 /* every job succeeded / the log was read to its end */
#define CLI_EXIT_FAIL  1 /* a job failed / an I/O error */
#define CLI_EXIT_USAGE 2 /* bad arguments, unreadable input file, unsupported URL */

/* `spindle call ...` and `spindle logs ...`: argv[0] is the subcommand name. Both return the
 * process exit code (CLI_EXIT_*) and print their own messages on stderr. */
int cli_call_main(int argc, char **argv);
int cli_logs_main(int argc, char **argv);
/* `spindle tasks list|show|cancel|result ...`: argv[0] is "tasks". Returns CLI_EXIT_*. */
int cli_tasks_main(int argc, char **argv);

/* `spindle keygen [--tenant NAME | --metrics] [--token-file FILE]`: a new random token and the
 * configuration line with its SHA-256 (cli/keygen.c). Returns the exit code. */
int cli_keygen_main(int argc, char **argv);

#endif
