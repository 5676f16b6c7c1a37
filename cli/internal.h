/* internal.h - what the files of cli/ share: the pure, deterministic parts of `spindle call`
 * (server URL and command line in call.c; backoff, Retry-After and the circuit breaker in
 * policy.c; the jobs, from the command line or a file, in jobfile.c) and of `spindle logs`
 * (logs.c: its command line, the formatting and filtering of one log line). Declared here so the
 * runner can use them and the unit suites can test them without sockets or processes; nothing
 * outside cli/ includes this header (server/main.c uses cli/cli.h).
 *
 * Threads: everything here is used by one thread; no function keeps global state (getopt's
 * aside, in the argument parsers).
 */
#ifndef SPINDLE_CLI_INTERNAL_H
#define SPINDLE_CLI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"

/* ---- call.c: the pure parts of the runner (server URL, command line) ------------------------- */

#define CLI_HOST_MAX 256

/* A parsed --server URL: "http://HOST[:PORT][/]" or "HOST[:PORT]"; HOST is a name, an IPv4
 * address or a bracketed IPv6 address. */
struct cli_url {
    char host[CLI_HOST_MAX];           /* without brackets, for getaddrinfo */
    char port[8];                      /* decimal, "80" when absent */
    char authority[CLI_HOST_MAX + 10]; /* the Host header: "[::1]:8080", "example:80" */
};

/* Parse `url` (borrowed) into *u. Returns 0, or -EINVAL with a message in err (size bytes):
 * https (not supported), another scheme, an empty host, a bad port (not 1..65535), user info, a
 * path other than "/", a query or fragment. */
int cli_url_parse(const char *url, struct cli_url *u, char *err, size_t size);

/* The command line of `spindle call`. Strings borrow argv. */
struct cli_call_opts {
    const char *kind; /* single mode: the job kind */
    char **params;    /* single mode: KEY=VALUE arguments (borrowed argv slice) */
    int nparams;
    const char *body;          /* --body FILE, "-" = stdin, NULL = no body */
    const char *output;        /* --output FILE, NULL = stdout */
    const char *batch;         /* --batch FILE ("-" = stdin), NULL = single mode */
    const char *server;        /* --server URL */
    const char *tenant;        /* --tenant, NULL = none sent */
    const char *token_file;    /* --token-file FILE: Authorization: Bearer <its first line> */
    const char *request_id;    /* --request-id, NULL = generated */
    unsigned concurrency;      /* --concurrency, >= 1 */
    unsigned retries;          /* --retries: extra attempts after the first */
    unsigned breaker;          /* --breaker: consecutive failures that open it, 0 = off */
    long long cooldown_ms;     /* --cooldown */
    long long timeout_ms;      /* --timeout, 0 = none sent */
    long long backoff_base_ms; /* --backoff-base */
    long long backoff_cap_ms;  /* --backoff-max */
    uint64_t seed;             /* --seed, 0 = from the clock */
    bool json;                 /* --json: single mode prints result and summary lines too */
    bool help;                 /* -h / --help was given: print usage, exit 0 */
    /* --async: enqueue a durable task (POST /v1/tasks) and follow it (async.c) */
    bool async;
    bool detach;                 /* --detach: print the task and exit after the enqueue */
    unsigned task_attempts;      /* --attempts, 0 = the server's default */
    long long task_backoff_ms;   /* --task-backoff, -1 = the server's default */
    long long task_delay_ms;     /* --delay, -1 = none */
    const char *idempotency_key; /* --idempotency-key, NULL = the request id */
};

/* Parse `spindle call` arguments (argv[0] = "call") into *o (defaults first). Returns 0, or
 * -EINVAL with a message in err (size bytes): unknown option, bad number, missing kind, both or
 * neither of kind and --batch, KEY=VALUE without '=', an invalid tenant or request id. */
int cli_call_args_parse(int argc, char **argv, struct cli_call_opts *o, char *err, size_t size);

/* ---- tokens (keygen.c, call.c) -------------------------------------------------------------- */

#define CLI_TOKEN_LEN 47  /* "spk_" and 43 base64url characters: what keygen makes */
#define CLI_TOKEN_MAX 512 /* a token read from a file or SPINDLE_TOKEN at most (as the server) */

/* A new random token ("spk_" + base64url of 32 bytes from RAND_bytes) into `token` (size >=
 * CLI_TOKEN_LEN + 1) and the hex SHA-256 of it into `hash_hex` (hash_size >= 65). Returns 0,
 * -EINVAL (buffers too small), -EIO (no randomness or no hash). */
int cli_token_make(char *token, size_t size, char *hash_hex, size_t hash_size);

/* The hex SHA-256 of `len` bytes of `token` (borrowed) into hash_hex (hash_size >= 65): what the
 * server compares. Returns 0, -EINVAL, -EIO. */
int cli_token_hash(const char *token, size_t len, char *hash_hex, size_t hash_size);

/* The bearer token to send into `out` (size >= CLI_TOKEN_MAX + 1): the first line of `file`
 * (borrowed; NULL = none) with blanks around it removed, else $SPINDLE_TOKEN, else "" (none).
 * Returns 0, or -EINVAL with a message in err (size bytes) naming the file or the variable (never
 * the token): unreadable file, empty, too long, characters a bearer token cannot have. */
int cli_token_load(const char *file, char *out, size_t size, char *err, size_t esize);
/* ---- stream.c: one large body streamed in and out ------------------------------------------ */

/* True when `spindle call` should stream: a single job whose --body is a regular file larger than
 * 1 MiB (not stdin), without --json. */
bool cli_stream_applies(const struct cli_call_opts *o);

/* Run the job with the file streamed to the server and the answer streamed to --output (or
 * stdout), a progress line on stderr when it is a terminal. Returns the exit status (0 ok, 1 the
 * job failed, its body was cut or the file could not be read, 2 bad server URL). Not retried. */
int cli_stream_run(const struct cli_call_opts *o);

/* ---- policy.c: backoff with jitter, Retry-After, the circuit breaker ----------------------- */

/* The retry policy: delays in milliseconds. */
struct cli_backoff {
    long long base_ms; /* the first retry's ceiling */
    long long cap_ms;  /* no ceiling grows beyond this */
};

/* The next value of a xorshift64* generator whose state is *state (never 0: a 0 state is
 * replaced by a fixed constant). Deterministic for a given seed, so tests can replay it. */
uint64_t cli_rand_next(uint64_t *state);

/* The delay before retry number `attempt` (0 = the first retry): full jitter, a uniform draw in
 * [0, min(cap_ms, base_ms * 2^attempt)] from *rng, then raised to `retry_after_ms` when that is
 * larger (the server's Retry-After is a floor; pass -1 when there was none). */
long long cli_backoff_ms(const struct cli_backoff *b, unsigned attempt, long long retry_after_ms,
                         uint64_t *rng);

/* A Retry-After-Ms value (borrowed, NUL-terminated): a whole number of milliseconds, as spindle
 * sends next to Retry-After. Returns it (clamped to one day), or -1 when it is not one. */
long long cli_retry_after_ms_hint(const char *value);

/* A Retry-After value (borrowed, NUL-terminated): delta-seconds ("2") or an HTTP-date ("Sun, 06
 * Nov 1994 08:49:37 GMT", taken relative to `now`). Returns milliseconds (0 for a date in the
 * past), or -1 when the value is neither. Values above one day are clamped to one day. */
long long cli_retry_after_ms(const char *value, time_t now);

/* The circuit breaker. closed: every request goes; `threshold` consecutive failures open it.
 * open: nothing goes until `cooldown_ms` passed since it opened; then half-open: exactly one
 * probe goes; the probe's success closes it, its failure opens it again. Until a probe has
 * failed, requests that may not go wait (the failures may be a server still starting); once a
 * probe has failed since the circuit first opened, they fail fast until a probe succeeds.
 * Results of requests sent before the breaker opened are ignored once it is open or half-open.
 * A threshold of 0 disables it (always closed). Owned by one thread. */
enum cli_breaker_state {
    CLI_BREAKER_CLOSED,
    CLI_BREAKER_OPEN,
    CLI_BREAKER_HALF_OPEN,
};

/* What cli_breaker_allow answers. */
enum cli_breaker_verdict {
    CLI_BREAKER_REFUSE = 0, /* fail fast: a probe failed and the circuit is still open */
    CLI_BREAKER_SEND = 1,
    CLI_BREAKER_PROBE = 2, /* send as the half-open probe (report it with probe = true) */
    CLI_BREAKER_WAIT = 3,  /* not yet: ask again at cli_breaker_retry_ms() */
};

struct cli_breaker {
    enum cli_breaker_state state;
    unsigned threshold;
    unsigned failures; /* consecutive, while closed */
    long long cooldown_ms;
    long long opened_ms;    /* when it last opened (caller's monotonic clock) */
    bool probe_out;         /* half-open: the probe was handed out and has not reported */
    unsigned failed_probes; /* probes that failed since it last closed */
};

/* Initialise *b closed. */
void cli_breaker_init(struct cli_breaker *b, unsigned threshold, long long cooldown_ms);

/* May a request be sent at `now_ms`? Returns an enum cli_breaker_verdict. Moves open to
 * half-open once the cooldown has passed (the caller then gets the probe). */
int cli_breaker_allow(struct cli_breaker *b, long long now_ms);

/* When a request told CLI_BREAKER_WAIT should ask again: the end of the cooldown, LLONG_MAX
 * while the probe is out, at once (0) in every other state. */
long long cli_breaker_retry_ms(const struct cli_breaker *b);

/* Report a request's outcome: `ok` false for a transport failure, a timeout or a 5xx answer.
 * `probe` is true for the request allow() returned CLI_BREAKER_PROBE for. Returns true when
 * this report opened the circuit (from closed, or again after a failed probe): the caller keeps
 * its failure as the cause to report. */
bool cli_breaker_record(struct cli_breaker *b, bool probe, bool ok, long long now_ms);

/* What an answer with HTTP `status` means for its job. The hints are the answer's header values
 * (borrowed, NUL-terminated; NULL or "" when absent). */
struct cli_verdict {
    bool ok;                  /* 2xx: the job succeeded */
    bool retryable;           /* 503 or 429: try again (502, 504 and other codes are final) */
    bool healthy;             /* for the breaker: anything but a 5xx (the server is deciding) */
    long long retry_after_ms; /* Retry-After-Ms when valid, else Retry-After; -1 when neither */
    bool exact; /* a 429 with Retry-After-Ms: its own token slot, retry exactly then */
};

/* Judge an answer. `now` is the wall clock, for a Retry-After given as an HTTP-date. */
struct cli_verdict cli_verdict_of(int status, const char *retry_after_ms, const char *retry_after,
                                  time_t now);

/* ---- jobfile.c: the jobs to run, from the command line or a file of jobs ------------------- */

#define CLI_FILE_MAX (256L * 1024 * 1024) /* --body, --batch and an answer body */
#define CLI_HDR_MAX  256 /* a kept header value (Retry-After, X-Request-Id, Content-Type) */

/* One job. jobfile.c fills the first part from the command line or a line of the file; the
 * runner (call.c) owns the second part, the state of its attempts. cli_job_fini frees both. */
struct cli_job {
    unsigned index;
    unsigned line; /* batch: its line number in the file */
    char *kind;    /* owned */
    char *query;   /* owned, percent-encoded, "" when none */
    char *body;    /* owned, NULL when none */
    size_t body_len;
    const char *tenant; /* owned when tenant_own, else borrowed from the options */
    bool tenant_own;
    char *request_id; /* owned */
    char *invalid;    /* owned: why the line is not a job (settled at once), NULL when valid */

    unsigned attempts;
    bool stale_retried; /* the current attempt was repeated once on a new connection */
    long long start_ms; /* first attempt */
    long long due_ms;   /* next attempt, while waiting out a backoff */
    bool breaker_wait;  /* waiting for the breaker's cooldown or probe, not for a backoff */
    int status;         /* the last HTTP status, 0 when none */
    char *answer;       /* owned: the last answer body */
    size_t answer_len;
    char ctype[CLI_HDR_MAX];
    char answer_id[CLI_HDR_MAX]; /* X-Request-Id of the last answer */
    const char *err_code;        /* static, or NULL: taken from the answer */
    char err_msg[512];
    char err_cause[48]; /* circuit_open: the code of the failure that opened it */
};

/* Free what *j owns (any part may be NULL: a job filled halfway is freed the same way). */
void cli_job_fini(struct cli_job *j);

/* Read all of `path` ("-" = standard input), at most CLI_FILE_MAX bytes. Returns a new
 * NUL-terminated buffer (the caller frees it) with its length in *len, or NULL with errno set
 * (EFBIG when it is too large). */
char *cli_file_read(const char *path, size_t *len);

/* Append `s` (len bytes, borrowed) percent-encoded to `out` (a stream, e.g. open_memstream):
 * everything but the unreserved characters A-Z a-z 0-9 - . _ ~ becomes %XX. Returns 0 or -EIO. */
int cli_percent_encode(FILE *out, const char *s, size_t len);

/* The one job of single mode in *j (zeroed by the caller): KIND, KEY=VALUE parameters as its
 * query, o->tenant (borrowed), `request_id` (copied) and the --body file. Returns 0, -ENOMEM, or
 * -EINVAL with a message in err (size bytes) when --body cannot be read. */
int cli_job_single(struct cli_job *j, const struct cli_call_opts *o, const char *request_id,
                   char *err, size_t size);

/* The number of jobs in a file's text: its lines that are not blank. */
unsigned cli_jobs_count(const char *text);

/* Parse a file of jobs (`text`, NUL-terminated, borrowed) into jobs[0..] (zeroed by the caller,
 * room for cli_jobs_count(text)); *njobs counts the jobs filled so far, also on failure, so the
 * caller frees exactly those. Each non-blank line is one JSON object
 * {"kind","params","body","tenant","id"} (only "kind" required); a line that is not a valid job
 * is kept with `invalid` saying why (line number included in `line`). A job without "tenant"
 * borrows `tenant` (may be NULL); one without "id" gets "<base_id>-<index>". Returns 0 or
 * -ENOMEM. */
int cli_jobs_parse(struct cli_job *jobs, unsigned *njobs, const char *text, const char *base_id,
                   const char *tenant);

/* ---- fetch.c: one blocking HTTP/1.1 exchange (the task commands) ----------------------------- */

/* A request: every pointer borrowed for the call. */
struct cli_fetch_req {
    const struct cli_url *url;
    const char *method;          /* "GET", "POST", "DELETE" */
    const char *target;          /* "/v1/tasks/ID?wait_ms=1000", already percent-encoded */
    const char *tenant;          /* X-Tenant-Id, NULL = none */
    const char *request_id;      /* X-Request-Id, NULL = none */
    const char *idempotency_key; /* Idempotency-Key, NULL = none */
    const char *body;            /* a JSON body, NULL = none */
    size_t body_len;
    long long timeout_ms; /* for the whole exchange */
    const char *token;    /* Authorization: Bearer TOKEN (cli_token_load), NULL or "" = none */
};

/* An answer. Header values are cut to CLI_HDR_MAX - 1 bytes; "" when absent. */
struct cli_fetch_resp {
    int status;
    char *body; /* owned, NUL-terminated, NULL when empty */
    size_t body_len;
    char ctype[CLI_HDR_MAX];
    char location[CLI_HDR_MAX];
    char request_id[CLI_HDR_MAX];
    char retry_after[CLI_HDR_MAX];
    char retry_after_ms[CLI_HDR_MAX];
};

/* Send `q` on a new connection (Connection: close) and read the whole answer into *r (zeroed
 * first; release with cli_fetch_resp_fini). Returns 0 (any HTTP status), or a negative errno with
 * a message in err (size bytes): -ECONNREFUSED and other connect errors, -ETIMEDOUT, -ECONNRESET
 * (closed before a whole answer), -EPROTO (not HTTP), -EFBIG (more than CLI_FILE_MAX bytes),
 * -EHOSTUNREACH (the name does not resolve), -ENOMEM. */
int cli_fetch(const struct cli_fetch_req *q, struct cli_fetch_resp *r, char *err, size_t size);
void cli_fetch_resp_fini(struct cli_fetch_resp *r);

/* Append `n` bytes at `at` to a NUL-terminated buffer (*buf, *len bytes of *cap, doubling from
 * 4 KiB), for an answer's body as http-parser hands it over (call.c and fetch.c). Returns 0,
 * -EFBIG when *len + n would pass `max` (nothing appended), or -ENOMEM. */
int cli_body_append(char **buf, size_t *len, size_t *cap, const char *at, size_t n, size_t max);

/* ---- tasks.c: `spindle tasks`, and what `spindle call --async` shares with it -----------------
 */

enum cli_tasks_cmd {
    CLI_TASKS_LIST,
    CLI_TASKS_SHOW,
    CLI_TASKS_CANCEL,
    CLI_TASKS_RESULT,
};

/* The command line of `spindle tasks`. Strings borrow argv. */
struct cli_tasks_opts {
    enum cli_tasks_cmd cmd;
    const char *id;         /* show, cancel, result: the task */
    const char *server;     /* --server URL */
    const char *tenant;     /* --tenant, NULL = none sent */
    const char *token_file; /* --token-file FILE: Authorization: Bearer <its first line> */
    const char *state;      /* list --state, NULL = any */
    const char *kind;       /* list --kind, NULL = any */
    const char *after;      /* list --after CURSOR, NULL = the first page */
    unsigned limit;         /* list --limit, 0 = the server's default */
    bool all;               /* list --all: follow every page */
    bool json;              /* --json */
    long long wait_ms;      /* show --wait MS, -1 = no wait */
    const char *output;     /* result --output FILE, NULL = stdout */
    bool help;
};

/* Parse `spindle tasks` arguments (argv[0] = "tasks", argv[1] the subcommand). Returns 0, or
 * -EINVAL with a message in err: no or an unknown subcommand, unknown option, bad number or
 * state, a missing or extra ID, an option of another subcommand. */
int cli_tasks_args_parse(int argc, char **argv, struct cli_tasks_opts *o, char *err, size_t size);

/* "list", "show", "cancel", "result". */
const char *cli_tasks_cmd_name(enum cli_tasks_cmd cmd);

/* The request target of a list page: "/v1/tasks?state=..&kind=..&after=..&limit=N" with what o
 * sets and `after` (borrowed, NULL = first page), percent-encoded, into buf. Returns 0,
 * -ENAMETOOLONG or -ENOMEM. */
int cli_tasks_list_target(const struct cli_tasks_opts *o, const char *after, char *buf,
                          size_t size);

/* True for the six task states; true for the final three (succeeded, failed, cancelled). */
bool cli_task_state_valid(const char *state);
bool cli_task_state_final(const char *state);

/* A table row of a task object (borrowed): "ID STATE KIND ATTEMPT/ATTEMPTS CREATED". */
void cli_task_row(const json_t *task, char *buf, size_t size);

/* The progress line of a followed task: "task ID: STATE, attempt N/M, 1.2s". */
void cli_task_progress(const json_t *task, long long elapsed_ms, char *buf, size_t size);

/* The last error of a task (borrowed from it, "" when none); *code gets its code ("" when
 * none). */
const char *cli_task_last_error(const json_t *task, const char **code);

/* Print an error answer on stderr: "spindle: WHAT: STATUS CODE: MESSAGE". */
void cli_task_http_error(const char *what, const struct cli_fetch_resp *r);

/* Write an answer's body to `path` (NULL = stdout, where a JSON answer gets a final newline).
 * Returns 0 or a negative errno. */
int cli_task_answer_write(const char *path, const struct cli_fetch_resp *r);

/* ---- async.c: `spindle call --async` --------------------------------------------------------- */

/* The JSON body of POST /v1/tasks for the single job of `o` and its body (borrowed, may be NULL):
 * kind, params (strings), body, attempts, backoff_ms, delay_ms, timeout_ms. New string (caller
 * frees) or NULL with a message in err: a body that is not UTF-8 text, out of memory. */
char *cli_async_body(const struct cli_call_opts *o, const char *body, size_t body_len, char *err,
                     size_t size);

/* Run `spindle call --async` with the parsed options. Returns the exit code. */
int cli_call_async(const struct cli_call_opts *o);

/* ---- logs.c: the pure parts of `spindle logs` ------------------------------------------------ */

enum cli_color {
    CLI_COLOR_AUTO,
    CLI_COLOR_ALWAYS,
    CLI_COLOR_NEVER,
};

/* The command line of `spindle logs`. Strings borrow argv. */
struct cli_logs_opts {
    const char *path;       /* FILE, NULL or "-" = stdin */
    bool follow;            /* -f */
    const char *request_id; /* --request-id: exact match, NULL = any */
    const char *tenant;     /* --tenant: exact match, NULL = any */
    int min_level;          /* --level: 0 (trace) .. 5 (fatal), -1 = any */
    enum cli_color color;
    bool help;
};

/* Parse `spindle logs` arguments (argv[0] = "logs"). Returns 0, or -EINVAL with a message in err:
 * unknown option, unknown level or colour mode, more than one FILE, -f without a FILE. */
int cli_logs_args_parse(int argc, char **argv, struct cli_logs_opts *o, char *err, size_t size);

/* The rank of a level name ("trace" 0, "debug" 1, "info" 2, "warn" 3 ("warning" too), "error" 4,
 * "fatal" 5; case-insensitive), or -1. */
int cli_log_level_rank(const char *name);

/* Format one log line (`len` bytes without its newline, borrowed) to `out` followed by '\n', when
 * it passes the filters of `o`. JSON objects are pretty-printed: "HH:MM:SS.mmm LEVEL [request_id
 * tenant trace8] msg key=value ...", colours (ANSI) when `color`; anything else is written
 * unchanged, but only when no filter is set. Returns 1 when written, 0 when filtered out, -EIO
 * on a write error, -ENOMEM. */
int cli_logs_line_print(const struct cli_logs_opts *o, bool color, const char *line, size_t len,
                        FILE *out);

#endif
