/* call.c - `spindle call`, the runner: run one job, or a file of jobs, against a spindle server
 * over keep-alive connections, and print the results. Its command line and --server URL are
 * parsed here too. When to retry and when to hold back (backoff with jitter, Retry-After, the
 * circuit breaker) is decided in policy.c; the jobs come from jobfile.c (cli/internal.h).
 *
 * Design: one thread and one poll() loop. A run holds the jobs (struct cli_job, all parsed before
 * the first request) and `concurrency` connection slots (struct cl_conn); a slot carries at most
 * one job at a time and keeps its socket open between jobs (HTTP/1.1 keep-alive), so at most
 * `concurrency` requests are in flight. A job keeps its slot until it settles, also while it
 * waits out a backoff: a server that asked us to slow down does not get the next job instead.
 * Each turn of the loop restarts the retries whose backoff is over, hands fresh jobs (in file
 * order) to free slots, polls the sockets with a timeout that is the earliest of: an attempt
 * deadline, a retry's due time, the next progress redraw; then advances every slot that is ready:
 * connect (non-blocking, each resolved address in turn), send (head and body with one sendmsg,
 * MSG_NOSIGNAL), read (http-parser, HTTP_RESPONSE).
 *
 * An attempt ends with an answer or a transport error (refused, reset, closed early, timeout: the
 * attempt's deadline is X-Timeout-Ms plus CL_MARGIN_MS, or CL_WAIT_MS without --timeout). Retried:
 * transport errors, 503 and 429 (cli_verdict_of), up to --retries more attempts, each after
 * cli_backoff_ms() (full jitter, the Retry-After header as a floor). Not retried: every other
 * status, 502 and 504 included (a gateway error or a deadline says the job may have run), and an
 * answer that is not HTTP. A socket kept alive that fails before any answer byte is the server
 * closing an idle connection at the same moment we reused it: that attempt is repeated at once on
 * a new connection without counting it (the request never reached a worker).
 *
 * The breaker (cli_breaker_*) is asked before every attempt. While it is open and no probe
 * has failed yet, the job waits on its slot (a server that is still starting gets its cooldown
 * and one probe, and the jobs go on once the probe succeeds); once a probe has failed, the job
 * fails at once with "circuit_open", naming the failure that opened the circuit, and nothing is
 * sent. A 429 with Retry-After-Ms is retried exactly then (spindle gives each rate-limited
 * refusal its own token slot); any other hint is a floor under the jittered backoff. Failures for
 * the breaker: transport errors and 5xx answers; any other answer (4xx, 429 included: the server is
 * up and deciding) counts as success.
 *
 * Output: a result line per job on stdout as each one settles (completion order; "index" is the
 * job's position in the file), then the summary line ("retried" counts jobs that took more than
 * one attempt). In single mode the answer body itself is printed instead (or written to
 * --output), unless --json asks for the lines. A progress line on stderr only when it is a
 * terminal, redrawn at most every CL_PROGRESS_MS.
 *
 * Ownership: the run owns jobs, slots, the resolved addresses and every buffer; a slot borrows
 * the job it carries. Nothing is shared between threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <http_parser.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cli/internal.h"
#include "context/ctx.h"

#define CL_DEFAULT_SERVER  "http://127.0.0.1:8080"
#define CL_MARGIN_MS       1000  /* beyond X-Timeout-Ms: the server's 504 needs time to arrive */
#define CL_WAIT_MS         60000 /* an attempt's bound without --timeout */
#define CL_PROGRESS_MS     100   /* at most ~10 redraws a second */
#define CL_CONCURRENCY_MAX 1024

/* ---- the server URL ------------------------------------------------------------------------ */

static int cl_url_error(char *err, size_t size, const char *msg, const char *url)
{
    snprintf(err, size, "%s: \"%s\"", msg, url);
    return -EINVAL;
}

/* Split "HOST[:PORT]" / "[V6][:PORT]" (len bytes) into u. */
static int cl_url_authority(const char *a, size_t len, struct cli_url *u)
{
    const char *host = a, *port = NULL;
    size_t hlen;
    if (len > 0 && a[0] == '[') {
        const char *rb = memchr(a, ']', len);
        if (rb == NULL)
            return -EINVAL;
        host = a + 1;
        hlen = (size_t)(rb - host);
        if (rb + 1 < a + len && rb[1] != ':')
            return -EINVAL;
        port = rb + 1 < a + len ? rb + 2 : NULL;
    } else {
        const char *colon = memchr(a, ':', len);
        if (colon && memchr(colon + 1, ':', len - (size_t)(colon + 1 - a)))
            return -EINVAL; /* an IPv6 address needs brackets */
        hlen = colon ? (size_t)(colon - a) : len;
        port = colon ? colon + 1 : NULL;
    }
    if (hlen == 0 || hlen >= sizeof(u->host))
        return -EINVAL;
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    size_t plen = port ? (size_t)(a + len - port) : 0;
    long p = 80;
    if (port) {
        char buf[8] = {0};
        if (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen)
            return -EINVAL;
        memcpy(buf, port, plen);
        p = strtol(buf, NULL, 10);
        if (p < 1 || p > 65535)
            return -EINVAL;
    }
    snprintf(u->port, sizeof(u->port), "%ld", p);
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(u->authority, sizeof(u->authority), "%s%s%s:%ld", v6 ? "[" : "", u->host,
             v6 ? "]" : "", p);
    return 0;
}

int cli_url_parse(const char *url, struct cli_url *u, char *err, size_t size)
{
    memset(u, 0, sizeof(*u));
    const char *p = url;
    if (strncasecmp(p, "https://", 8) == 0)
        return cl_url_error(err, size,
                            "https is not supported (spindle speaks plain HTTP; use http://, "
                            "or a TLS front end)",
                            url);
    if (strncasecmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://") != NULL)
        return cl_url_error(err, size, "only http:// URLs are supported", url);
    size_t alen = strcspn(p, "/?#");
    const char *rest = p + alen;
    if (*rest == '?' || *rest == '#' || (*rest == '/' && rest[1] != '\0'))
        return cl_url_error(err, size, "the server URL takes no path, query or fragment", url);
    if (memchr(p, '@', alen) != NULL)
        return cl_url_error(err, size, "the server URL takes no user name", url);
    if (cl_url_authority(p, alen, u) != 0)
        return cl_url_error(err, size,
                            "bad server address (want http://HOST:PORT, IPv6 as [::1]:PORT)", url);
    return 0;
}

/* ---- arguments ------------------------------------------------------------------------------ */

static const char cl_usage[] =
    "usage: spindle call KIND [KEY=VALUE...] [options]\n"
    "       spindle call --batch FILE [options]\n"
    "\n"
    "Run the job POST /v1/jobs/KIND?KEY=VALUE&... and print its answer, or run every job of a\n"
    "JSON-lines FILE ({\"kind\":..,\"params\":{..},\"body\":..,\"tenant\":..,\"id\":..} per line)\n"
    "and print one result line per job, then a summary line.\n"
    "\n"
    "  -s, --server URL        http://HOST:PORT (default " CL_DEFAULT_SERVER "; [::1] for IPv6)\n"
    "      --body FILE         send FILE (- = standard input) as the request body\n"
    "  -o, --output FILE       write the answer body to FILE (single job)\n"
    "      --json              single job: print the result and summary lines instead\n"
    "  -b, --batch FILE        run the jobs of FILE (- = standard input)\n"
    "  -j, --concurrency N     at most N requests in flight (default 1)\n"
    "      --tenant T          send X-Tenant-Id: T\n"
    "      --token-file FILE   send Authorization: Bearer <the first line of FILE>; without it,\n"
    "                          $SPINDLE_TOKEN when set (never put a token on the command line)\n"
    "      --request-id ID     send X-Request-Id: ID (batch: ID-<n> unless a line has an id)\n"
    "      --timeout MS        send X-Timeout-Ms: MS; wait at most MS+1000 per attempt\n"
    "      --retries N         retry 503, 429 and connection errors N times (default 3)\n"
    "      --backoff-base MS   first retry delay ceiling (default 100); doubles per retry\n"
    "      --backoff-max MS    delay ceiling cap (default 5000); Retry-After is a floor\n"
    "                          (a 429's Retry-After-Ms is the delay itself)\n"
    "      --breaker N         open the circuit after N consecutive failures (default 5, 0 = "
    "off)\n"
    "      --cooldown MS       open circuit: jobs wait MS, then one probe; if it fails\n"
    "                          they fail fast (circuit_open) (default 1000)\n"
    "      --seed N            seed the backoff jitter (default: from the clock)\n"
    "  -h, --help              print this help\n"
    "\n"
    "Durable tasks (POST /v1/tasks): the job is stored, run in the background (again after a\n"
    "failure or a restart) and followed with a progress line until it is final:\n"
    "  -a, --async             enqueue KIND as a task, follow it, print its answer\n"
    "      --attempts N        the task's attempts (default: the server's)\n"
    "      --task-backoff MS   the task's first retry delay (default: the server's)\n"
    "      --delay MS          run the task MS from now\n"
    "      --timeout MS        (with --async) each attempt's deadline\n"
    "      --idempotency-key K send Idempotency-Key: K (default: the request id)\n"
    "      --detach            print the task and exit once it is stored\n"
    "\n"
    "Exit status: 0 every job succeeded, 1 a job failed, 2 usage error.\n";

enum cl_opt {
    CL_OPT_BODY = 256,
    CL_OPT_JSON,
    CL_OPT_TENANT,
    CL_OPT_REQUEST_ID,
    CL_OPT_TIMEOUT,
    CL_OPT_RETRIES,
    CL_OPT_BACKOFF_BASE,
    CL_OPT_BACKOFF_MAX,
    CL_OPT_BREAKER,
    CL_OPT_COOLDOWN,
    CL_OPT_SEED,
    CL_OPT_TOKEN_FILE,
    CL_OPT_ATTEMPTS,
    CL_OPT_TASK_BACKOFF,
    CL_OPT_DELAY,
    CL_OPT_IDEMPOTENCY_KEY,
    CL_OPT_DETACH,
};

static const struct option cl_options[] = {
    {"server", required_argument, NULL, 's'},
    {"body", required_argument, NULL, CL_OPT_BODY},
    {"output", required_argument, NULL, 'o'},
    {"json", no_argument, NULL, CL_OPT_JSON},
    {"batch", required_argument, NULL, 'b'},
    {"concurrency", required_argument, NULL, 'j'},
    {"tenant", required_argument, NULL, CL_OPT_TENANT},
    {"request-id", required_argument, NULL, CL_OPT_REQUEST_ID},
    {"timeout", required_argument, NULL, CL_OPT_TIMEOUT},
    {"retries", required_argument, NULL, CL_OPT_RETRIES},
    {"backoff-base", required_argument, NULL, CL_OPT_BACKOFF_BASE},
    {"backoff-max", required_argument, NULL, CL_OPT_BACKOFF_MAX},
    {"breaker", required_argument, NULL, CL_OPT_BREAKER},
    {"cooldown", required_argument, NULL, CL_OPT_COOLDOWN},
    {"seed", required_argument, NULL, CL_OPT_SEED},
    {"token-file", required_argument, NULL, CL_OPT_TOKEN_FILE},
    {"async", no_argument, NULL, 'a'},
    {"attempts", required_argument, NULL, CL_OPT_ATTEMPTS},
    {"task-backoff", required_argument, NULL, CL_OPT_TASK_BACKOFF},
    {"delay", required_argument, NULL, CL_OPT_DELAY},
    {"idempotency-key", required_argument, NULL, CL_OPT_IDEMPOTENCY_KEY},
    {"detach", no_argument, NULL, CL_OPT_DETACH},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int cl_arg_error(char *err, size_t size, const char *what, const char *arg)
{
    snprintf(err, size, "call: %s \"%s\"", what, arg);
    return -EINVAL;
}

/* A decimal number in [min, max]. */
static int cl_num(const char *s, unsigned long long min, unsigned long long max,
                  unsigned long long *out)
{
    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* The numeric options: which field, which range. */
static int cl_num_opt(int c, const char *arg, struct cli_call_opts *o)
{
    unsigned long long v;
    unsigned long long max = c == 'j'                                        ? CL_CONCURRENCY_MAX
                             : (c == CL_OPT_RETRIES || c == CL_OPT_ATTEMPTS) ? 1000
                                                                             : 86400000;
    unsigned long long min = (c == 'j' || c == CL_OPT_TIMEOUT || c == CL_OPT_ATTEMPTS) ? 1 : 0;
    if (c == CL_OPT_SEED)
        max = ULLONG_MAX;
    if (cl_num(arg, min, max, &v) != 0)
        return -EINVAL;
    switch (c) {
    case 'j':
        o->concurrency = (unsigned)v;
        break;
    case CL_OPT_RETRIES:
        o->retries = (unsigned)v;
        break;
    case CL_OPT_BREAKER:
        o->breaker = (unsigned)v;
        break;
    case CL_OPT_TIMEOUT:
        o->timeout_ms = (long long)v;
        break;
    case CL_OPT_COOLDOWN:
        o->cooldown_ms = (long long)v;
        break;
    case CL_OPT_BACKOFF_BASE:
        o->backoff_base_ms = (long long)v;
        break;
    case CL_OPT_BACKOFF_MAX:
        o->backoff_cap_ms = (long long)v;
        break;
    case CL_OPT_SEED:
        o->seed = v;
        break;
    case CL_OPT_ATTEMPTS:
        o->task_attempts = (unsigned)v;
        break;
    case CL_OPT_TASK_BACKOFF:
        o->task_backoff_ms = (long long)v;
        break;
    case CL_OPT_DELAY:
        o->task_delay_ms = (long long)v;
        break;
    default:
        return -EINVAL;
    }
    return 0;
}

static int cl_opt_set(int c, struct cli_call_opts *o)
{
    switch (c) {
    case 's':
        o->server = optarg;
        return 0;
    case CL_OPT_BODY:
        o->body = optarg;
        return 0;
    case 'o':
        o->output = optarg;
        return 0;
    case CL_OPT_JSON:
        o->json = true;
        return 0;
    case 'b':
        o->batch = optarg;
        return 0;
    case CL_OPT_TENANT:
        o->tenant = optarg;
        return 0;
    case CL_OPT_REQUEST_ID:
        o->request_id = optarg;
        return 0;
    case CL_OPT_TOKEN_FILE:
        o->token_file = optarg;
        return 0;
    case 'a':
        o->async = true;
        return 0;
    case CL_OPT_DETACH:
        o->detach = true;
        return 0;
    case CL_OPT_IDEMPOTENCY_KEY:
        o->idempotency_key = optarg;
        return 0;
    default:
        return cl_num_opt(c, optarg, o);
    }
}

/* What the options say together once they are all read. */
static int cl_args_check(struct cli_call_opts *o, char *err, size_t size)
{
    if (o->tenant && !ctx_tenant_valid(o->tenant, strlen(o->tenant)))
        return cl_arg_error(err, size, "--tenant wants 1-64 of [A-Za-z0-9._-], not", o->tenant);
    if (o->request_id && !ctx_request_id_valid(o->request_id, strlen(o->request_id)))
        return cl_arg_error(err, size, "--request-id wants 1-128 visible ASCII (no spaces), not",
                            o->request_id);
    bool task_opts = o->task_attempts || o->task_backoff_ms >= 0 || o->task_delay_ms >= 0 ||
                     o->idempotency_key || o->detach;
    if (task_opts && !o->async)
        return cl_arg_error(err, size,
                            "--attempts, --task-backoff, --delay, --idempotency-key and --detach "
                            "go with",
                            "--async");
    if (o->idempotency_key &&
        (o->idempotency_key[0] == '\0' ||
         !ctx_request_id_valid(o->idempotency_key, strlen(o->idempotency_key))))
        return cl_arg_error(err, size,
                            "--idempotency-key wants 1-128 visible ASCII (no spaces), not",
                            o->idempotency_key);
    if (o->async && o->batch)
        return cl_arg_error(err, size, "--async runs one KIND, not with --batch", o->batch);
    if (o->batch) {
        if (o->kind)
            return cl_arg_error(err, size, "--batch takes no KIND or KEY=VALUE, got", o->kind);
        if (o->body || o->output)
            return cl_arg_error(err, size, "--body and --output are for one job, not with --batch",
                                o->batch);
        return 0;
    }
    if (o->kind == NULL) {
        snprintf(err, size, "call: a job KIND or --batch FILE is needed");
        return -EINVAL;
    }
    if (o->kind[0] == '\0' ||
        strspn(o->kind, "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(o->kind))
        return cl_arg_error(err, size, "bad job kind", o->kind);
    for (int i = 0; i < o->nparams; i++) {
        if (strchr(o->params[i], '=') == NULL || o->params[i][0] == '=')
            return cl_arg_error(err, size, "parameters are KEY=VALUE, not", o->params[i]);
    }
    return 0;
}

static const char *cl_opt_name(int c)
{
    for (const struct option *opt = cl_options; opt->name; opt++) {
        if (opt->val == c)
            return opt->name;
    }
    return "?";
}

int cli_call_args_parse(int argc, char **argv, struct cli_call_opts *o, char *err, size_t size)
{
    *o = (struct cli_call_opts){
        .server = CL_DEFAULT_SERVER,
        .concurrency = 1,
        .retries = 3,
        .breaker = 5,
        .cooldown_ms = 1000,
        .backoff_base_ms = 100,
        .backoff_cap_ms = 5000,
        .task_backoff_ms = -1,
        .task_delay_ms = -1,
    };
    opterr = 0; /* our own messages */
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":s:o:b:j:ah", cl_options, NULL)) != -1) {
        if (c == 'h') {
            o->help = true;
            return 0;
        }
        if (c == ':')
            return cl_arg_error(err, size, "missing value for option", argv[optind - 1]);
        if (c == '?')
            return cl_arg_error(err, size, "unknown option", argv[optind - 1]);
        if (cl_opt_set(c, o) != 0) {
            snprintf(err, size, "call: bad value \"%s\" for --%s", optarg, cl_opt_name(c));
            return -EINVAL;
        }
    }
    if (optind < argc) {
        o->kind = argv[optind++];
        o->params = argv + optind;
        o->nparams = argc - optind;
    }
    return cl_args_check(o, err, size);
}

/* ---- the token ------------------------------------------------------------------------------ */

static bool cl_token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("-._~+/=", c) != NULL;
}

int cli_token_load(const char *file, char *out, size_t size, char *err, size_t esize)
{
    char *text = NULL;
    const char *src = NULL, *what = file;
    size_t len = 0;
    out[0] = '\0';
    if (file != NULL) {
        if ((text = cli_file_read(file, &len)) == NULL) {
            snprintf(err, esize, "--token-file %s: %s", file, strerror(errno));
            return -EINVAL;
        }
        src = text;
    } else {
        src = getenv("SPINDLE_TOKEN");
        what = "$SPINDLE_TOKEN";
        if (src == NULL || src[0] == '\0')
            return 0;
    }
    while (*src == ' ' || *src == '\t')
        src++;
    size_t n = strcspn(src, "\r\n");
    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\t'))
        n--;
    bool ok = n > 0 && n <= CLI_TOKEN_MAX && n < size;
    for (size_t i = 0; ok && i < n; i++)
        ok = cl_token_char(src[i]);
    if (ok) {
        memcpy(out, src, n);
        out[n] = '\0';
    } else {
        snprintf(err, esize,
                 "%s%s does not hold a bearer token (one line of 1-%d characters of "
                 "A-Z a-z 0-9 - . _ ~ + / =)",
                 file ? "--token-file " : "", what, CLI_TOKEN_MAX);
    }
    if (text != NULL) {
        explicit_bzero(text, len);
        free(text);
    }
    return ok ? 0 : -EINVAL;
}

/* ---- the run -------------------------------------------------------------------------------- */

enum cl_state {
    CL_IDLE,       /* no job; fd may be an open keep-alive connection */
    CL_WAITING,    /* the job waits out its backoff before the next attempt (fd may be open) */
    CL_CONNECTING, /* non-blocking connect in progress */
    CL_SENDING,
    CL_READING,
};

struct cl_conn {
    int fd; /* -1 when closed */
    enum cl_state state;
    bool reused;         /* the socket carried an earlier exchange */
    struct cli_job *job; /* borrowed, NULL when idle */
    bool probe;          /* this attempt is the breaker's half-open probe */
    struct addrinfo *ai; /* the address being connected */
    long long deadline_ms;
    char *head; /* owned: the request head */
    size_t head_len;
    size_t sent; /* bytes of head + body sent */
    http_parser parser;
    size_t received; /* answer bytes read */
    bool complete;   /* a full (non-1xx) answer was parsed */
    bool hdr_value;  /* the last header callback was a value */
    char field[32];  /* the current header name (cut: only short names matter) */
    size_t field_len;
    char *dst; /* where the current header's value goes (job->ctype, ...), NULL = ignored */
    size_t dst_len, dst_cap;
    char retry_after[64];
    char retry_after_ms[32];
    char ctype[CLI_HDR_MAX];
    char reqid[CLI_HDR_MAX];
    char *body; /* owned: the answer body being read */
    size_t body_len, body_cap;
    bool too_large;
};

struct cl_run {
    const struct cli_call_opts *o;
    struct cli_url url;
    struct addrinfo *addrs;
    struct cli_job *jobs;
    unsigned njobs;
    unsigned next; /* the next fresh job */
    struct cl_conn *conns;
    unsigned nconns;
    struct cli_breaker breaker;
    char cause_code[48]; /* the failure that last opened the breaker */
    char cause_msg[256];
    struct cli_backoff backoff;
    uint64_t rng;
    unsigned settled, succeeded, failed, retried;
    long long t0_ms;
    long long attempt_ms; /* an attempt's bound: connect, send and answer */
    bool lines;           /* print result lines and the summary */
    bool progress;        /* stderr is a terminal */
    long long drawn_ms;
    int out_error;                 /* a write to stdout or --output failed (positive errno) */
    char token[CLI_TOKEN_MAX + 1]; /* the bearer token, "" = none (cli_token_load) */
};

static long long cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cl_job_error(struct cli_job *j, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A failure of the client's own making (no answer, or not sent): code and message. */
static void cl_job_error(struct cli_job *j, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err_msg, sizeof(j->err_msg), fmt, ap);
    va_end(ap);
    j->err_code = code;
}

/* ---- results -------------------------------------------------------------------------------- */

/* {"code","message"}: the client's own, else the answer's spindle error, else http_<status>. */
static json_t *cl_error_json(const struct cli_job *j)
{
    if (j->err_code && j->err_cause[0])
        return json_pack("{s:s,s:s,s:s}", "code", j->err_code, "message", j->err_msg, "cause",
                         j->err_cause);
    if (j->err_code)
        return json_pack("{s:s,s:s}", "code", j->err_code, "message", j->err_msg);
    json_t *a = j->answer ? json_loadb(j->answer, j->answer_len, 0, NULL) : NULL;
    json_t *e = json_object_get(a, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    char cbuf[32], mbuf[64];
    if (code == NULL) {
        snprintf(cbuf, sizeof(cbuf), "http_%d", j->status);
        code = cbuf;
    }
    if (msg == NULL) {
        snprintf(mbuf, sizeof(mbuf), "the server answered HTTP %d", j->status);
        msg = mbuf;
    }
    json_t *r = json_pack("{s:s,s:s}", "code", code, "message", msg);
    json_decref(a);
    return r;
}

/* The answer as JSON, or what it is when it is not JSON (compressed bytes). */
static json_t *cl_result_json(const struct cli_job *j)
{
    json_t *r = json_loadb(j->answer ? j->answer : "", j->answer_len, JSON_DECODE_ANY, NULL);
    if (r != NULL)
        return r;
    return json_pack("{s:s,s:I}", "content_type",
                     j->ctype[0] ? j->ctype : "application/octet-stream", "bytes",
                     (json_int_t)j->answer_len);
}

static const char *cl_job_request_id(const struct cli_job *j)
{
    return j->answer_id[0] ? j->answer_id : j->request_id;
}

static void cl_progress_clear(struct cl_run *run)
{
    if (run->progress && run->drawn_ms != 0)
        fputs("\r\033[K", stderr);
}

static void cl_print_line(struct cl_run *run, const struct cli_job *j, bool ok, long long now)
{
    json_t *line = json_object();
    if (line == NULL) {
        run->out_error = ENOMEM;
        return;
    }
    json_object_set_new(line, "index", json_integer(j->index));
    json_object_set_new(line, "kind", j->kind ? json_string(j->kind) : json_null());
    json_object_set_new(line, "status", json_integer(j->status));
    json_object_set_new(line, "ok", json_boolean(ok));
    json_object_set_new(line, "attempts", json_integer(j->attempts));
    json_object_set_new(line, "ms", json_integer(j->attempts ? now - j->start_ms : 0));
    const char *rid = cl_job_request_id(j);
    json_object_set_new(line, "request_id", rid ? json_string(rid) : json_null());
    json_object_set_new(line, ok ? "result" : "error", ok ? cl_result_json(j) : cl_error_json(j));
    char *s = json_dumps(line, JSON_COMPACT);
    json_decref(line);
    if (s == NULL) {
        run->out_error = ENOMEM;
        return;
    }
    if (isatty(STDOUT_FILENO))
        cl_progress_clear(run);
    if (puts(s) == EOF || fflush(stdout) == EOF)
        run->out_error = errno ? errno : EIO;
    free(s);
}

static int cl_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Single mode: the answer body to --output or stdout (a JSON answer gets its final newline). */
static void cl_print_answer(struct cl_run *run, const struct cli_job *j)
{
    const char *path = run->o->output;
    int fd = STDOUT_FILENO;
    if (path && (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        fprintf(stderr, "spindle: call: %s: %s\n", path, strerror(errno));
        run->out_error = errno;
        return;
    }
    int rc = cl_write_all(fd, j->answer ? j->answer : "", j->answer_len);
    bool json = strncasecmp(j->ctype, "application/json", 16) == 0;
    if (rc == 0 && !path && json && j->answer_len && j->answer[j->answer_len - 1] != '\n')
        rc = cl_write_all(fd, "\n", 1);
    if (path && close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        fprintf(stderr, "spindle: call: writing the answer: %s\n", strerror(-rc));
        run->out_error = -rc;
    }
}

/* Single mode, failed: one line on stderr. */
static void cl_print_failure(const struct cli_job *j)
{
    json_t *e = cl_error_json(j);
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    char status[16] = "";
    if (j->status)
        snprintf(status, sizeof(status), "%d ", j->status);
    fprintf(stderr, "spindle: call: %s: %s%s: %s (request id %s, %u attempt%s)\n", j->kind, status,
            code ? code : "error", msg ? msg : "", cl_job_request_id(j), j->attempts,
            j->attempts == 1 ? "" : "s");
    json_decref(e);
}

static void cl_settle(struct cl_run *run, struct cli_job *j, bool ok, long long now)
{
    run->settled++;
    if (ok)
        run->succeeded++;
    else
        run->failed++;
    if (j->attempts > 1)
        run->retried++;
    if (run->lines)
        cl_print_line(run, j, ok, now);
    else if (ok)
        cl_print_answer(run, j);
    else
        cl_print_failure(j);
}

static void cl_print_summary(struct cl_run *run)
{
    cl_progress_clear(run);
    int n =
        printf("{\"summary\":{\"succeeded\":%u,\"failed\":%u,\"retried\":%u,\"wall_ms\":%lld}}\n",
               run->succeeded, run->failed, run->retried, cl_now_ms() - run->t0_ms);
    if (n < 0)
        run->out_error = errno ? errno : EIO;
}

static void cl_progress(struct cl_run *run, long long now)
{
    if (!run->progress || (run->drawn_ms != 0 && now - run->drawn_ms < CL_PROGRESS_MS))
        return;
    static const char bar[] = "##############################";
    static const char todo[] = "..............................";
    int width = (int)sizeof(bar) - 1;
    int filled = run->njobs ? (int)((unsigned long long)run->settled * width / run->njobs) : width;
    double secs = (double)(now - run->t0_ms) / 1000.0;
    fprintf(stderr, "\r[%.*s%.*s] %u/%u  failed %u  %.1f jobs/s\033[K", filled, bar, width - filled,
            todo, run->settled, run->njobs, run->failed, secs > 0 ? run->settled / secs : 0.0);
    run->drawn_ms = now;
}

/* ---- one attempt on a connection ----------------------------------------------------------- */

static void cl_attempt_send(struct cl_run *run, struct cl_conn *c, long long now);

static void cl_conn_close(struct cl_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->reused = false;
}

/* Report c's attempt to the breaker; when that opens the circuit, keep the job's failure (its
 * error set just before) as the cause that circuit_open failures report. */
static void cl_breaker_report(struct cl_run *run, struct cl_conn *c, bool ok, long long now)
{
    if (!cli_breaker_record(&run->breaker, c->probe, ok, now))
        return;
    json_t *e = cl_error_json(c->job);
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    snprintf(run->cause_code, sizeof(run->cause_code), "%s", code ? code : "error");
    snprintf(run->cause_msg, sizeof(run->cause_msg), "%s", msg ? msg : "");
    json_decref(e);
}

/* The attempt is over: settle the job, or queue it for a retry after its backoff. `exact`: the
 * server gave this request its own retry slot (a 429 with Retry-After-Ms), so it comes back
 * exactly then: jitter would only waste the slot. */
static void cl_attempt_done(struct cl_run *run, struct cl_conn *c, bool ok, bool retryable,
                            long long retry_after_ms, bool exact, long long now)
{
    struct cli_job *j = c->job;
    free(c->head);
    c->head = NULL;
    if (!ok && retryable && j->attempts <= run->o->retries) {
        /* The job keeps its slot while it waits: a server that asked us to back off does not
         * get the next job in its place. */
        j->due_ms = now + (exact ? retry_after_ms
                                 : cli_backoff_ms(&run->backoff, j->attempts - 1, retry_after_ms,
                                                  &run->rng));
        c->state = CL_WAITING;
        return;
    }
    c->job = NULL;
    c->state = CL_IDLE;
    cl_settle(run, j, ok, now);
}

static const char *cl_errno_code(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return "connection_refused";
    case ETIMEDOUT:
        return "timeout";
    case ECONNRESET:
    case EPIPE:
    case ECONNABORTED:
        return "connection_reset";
    default:
        return "connection_failed";
    }
}

/* The attempt ended without an answer (`err`: a positive errno; ECONNABORTED = closed early). */
static void cl_attempt_transport(struct cl_run *run, struct cl_conn *c, int err, long long now)
{
    struct cli_job *j = c->job;
    bool stale = c->reused && c->received == 0 && err != ETIMEDOUT && !j->stale_retried;
    cl_conn_close(c);
    if (stale) {
        j->stale_retried = true; /* the server closed the idle connection as we reused it */
        cl_attempt_send(run, c, now);
        return;
    }
    j->status = 0;
    if (err == ETIMEDOUT)
        cl_job_error(j, "timeout", "no answer from %s within %lld ms", run->url.authority,
                     run->attempt_ms);
    else if (err == ECONNABORTED)
        cl_job_error(j, "connection_reset", "%s closed the connection before answering",
                     run->url.authority);
    else
        cl_job_error(j, cl_errno_code(err), "%s: %s", run->url.authority, strerror(err));
    cl_breaker_report(run, c, false, now);
    cl_attempt_done(run, c, false, true, -1, false, now);
}

/* A complete answer arrived. `extra`: bytes followed it, or the request was not fully sent. */
static void cl_attempt_answer(struct cl_run *run, struct cl_conn *c, bool extra, long long now)
{
    struct cli_job *j = c->job;
    int status = (int)c->parser.status_code;
    bool keep = !extra && http_should_keep_alive(&c->parser);
    free(j->answer);
    j->answer = c->body;
    j->answer_len = c->body_len;
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    j->status = status;
    j->err_code = NULL;
    memcpy(j->ctype, c->ctype, sizeof(j->ctype));
    memcpy(j->answer_id, c->reqid, sizeof(j->answer_id));
    struct cli_verdict v = cli_verdict_of(status, c->retry_after_ms, c->retry_after, time(NULL));
    if (keep)
        c->reused = true;
    else
        cl_conn_close(c);
    cl_breaker_report(run, c, v.healthy, now);
    cl_attempt_done(run, c, v.ok, v.retryable, v.retry_after_ms, v.exact, now);
}

/* ---- the answer parser (http-parser callbacks; c = parser->data) --------------------------- */

static void cl_answer_reset(struct cl_conn *c)
{
    c->hdr_value = true; /* so the first header name starts fresh */
    c->field_len = 0;
    c->dst = NULL;
    c->retry_after[0] = c->retry_after_ms[0] = c->ctype[0] = c->reqid[0] = '\0';
    c->body_len = 0;
    c->too_large = false;
}

static int cl_on_message_begin(http_parser *p)
{
    cl_answer_reset(p->data);
    return 0;
}

static int cl_on_header_field(http_parser *p, const char *at, size_t n)
{
    struct cl_conn *c = p->data;
    if (c->hdr_value) {
        c->hdr_value = false;
        c->field_len = 0;
    }
    size_t room = sizeof(c->field) - 1 - c->field_len;
    n = n < room ? n : room; /* a longer name is none we keep */
    memcpy(c->field + c->field_len, at, n);
    c->field_len += n;
    return 0;
}

/* Where the value of the header just named goes, NULL when we do not keep it. */
static void cl_header_pick(struct cl_conn *c)
{
    c->field[c->field_len] = '\0';
    c->dst = NULL;
    if (strcasecmp(c->field, "Retry-After") == 0) {
        c->dst = c->retry_after;
        c->dst_cap = sizeof(c->retry_after);
    } else if (strcasecmp(c->field, "Retry-After-Ms") == 0) {
        c->dst = c->retry_after_ms;
        c->dst_cap = sizeof(c->retry_after_ms);
    } else if (strcasecmp(c->field, "Content-Type") == 0) {
        c->dst = c->ctype;
        c->dst_cap = sizeof(c->ctype);
    } else if (strcasecmp(c->field, "X-Request-Id") == 0) {
        c->dst = c->reqid;
        c->dst_cap = sizeof(c->reqid);
    }
    c->dst_len = 0;
    if (c->dst)
        c->dst[0] = '\0';
}

static int cl_on_header_value(http_parser *p, const char *at, size_t n)
{
    struct cl_conn *c = p->data;
    if (!c->hdr_value) {
        c->hdr_value = true;
        cl_header_pick(c);
    }
    if (c->dst == NULL)
        return 0;
    size_t room = c->dst_cap - 1 - c->dst_len;
    n = n < room ? n : room;
    memcpy(c->dst + c->dst_len, at, n);
    c->dst_len += n;
    c->dst[c->dst_len] = '\0';
    return 0;
}

static int cl_on_body(http_parser *p, const char *at, size_t n)
{
    struct cl_conn *c = p->data;
    if (cli_body_append(&c->body, &c->body_len, &c->body_cap, at, n, CLI_FILE_MAX) != 0) {
        c->too_large = true; /* out of memory too: the answer cannot be kept */
        return -1;
    }
    return 0;
}

static int cl_on_message_complete(http_parser *p)
{
    struct cl_conn *c = p->data;
    if (p->status_code >= 100 && p->status_code < 200)
        return 0; /* an interim answer: the real one follows */
    c->complete = true;
    http_parser_pause(p, 1); /* anything after the answer is not ours to parse */
    return 0;
}

static const http_parser_settings cl_parser_settings = {
    .on_message_begin = cl_on_message_begin,
    .on_header_field = cl_on_header_field,
    .on_header_value = cl_on_header_value,
    .on_body = cl_on_body,
    .on_message_complete = cl_on_message_complete,
};

/* ---- connect, send, read ------------------------------------------------------------------- */

static size_t cl_request_len(const struct cl_conn *c)
{
    return c->head_len + c->job->body_len;
}

static void cl_conn_write(struct cl_run *run, struct cl_conn *c, long long now)
{
    while (c->sent < cl_request_len(c)) {
        struct iovec iov[2];
        int n = 0;
        if (c->sent < c->head_len)
            iov[n++] = (struct iovec){c->head + c->sent, c->head_len - c->sent};
        size_t boff = c->sent > c->head_len ? c->sent - c->head_len : 0;
        if (c->job->body_len > boff)
            iov[n++] = (struct iovec){c->job->body + boff, c->job->body_len - boff};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w < 0) {
            cl_attempt_transport(run, c, errno, now);
            return;
        }
        c->sent += (size_t)w;
    }
    c->state = CL_READING;
}

static void cl_conn_read(struct cl_run *run, struct cl_conn *c, long long now)
{
    char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            cl_attempt_transport(run, c, errno, now);
            return;
        }
        c->received += (size_t)n;
        size_t used = http_parser_execute(&c->parser, &cl_parser_settings, buf, (size_t)n);
        if (c->complete) {
            bool extra = used < (size_t)n || c->sent < cl_request_len(c);
            cl_attempt_answer(run, c, extra, now);
            return;
        }
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            struct cli_job *j = c->job;
            j->status = 0;
            if (c->too_large)
                cl_job_error(j, "answer_too_large", "the answer is larger than %ld bytes",
                             CLI_FILE_MAX);
            else
                cl_job_error(j, "bad_response", "the answer is not HTTP/1.1: %s",
                             http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
            cl_conn_close(c);
            cl_breaker_report(run, c, false, now);
            cl_attempt_done(run, c, false, false, -1, false, now);
            return;
        }
        if (n == 0) {
            cl_attempt_transport(run, c, ECONNABORTED, now);
            return;
        }
    }
}

/* Connect to c->ai or the addresses after it. */
static void cl_conn_connect(struct cl_run *run, struct cl_conn *c, long long now)
{
    int err = ECONNREFUSED;
    for (; c->ai != NULL; c->ai = c->ai->ai_next) {
        int fd = socket(c->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* small requests */
        if (connect(fd, c->ai->ai_addr, c->ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            c->fd = fd;
            c->state = errno == EINPROGRESS ? CL_CONNECTING : CL_SENDING;
            if (c->state == CL_SENDING)
                cl_conn_write(run, c, now);
            return;
        }
        err = errno;
        close(fd);
    }
    cl_attempt_transport(run, c, err, now);
}

static void cl_conn_connected(struct cl_run *run, struct cl_conn *c, long long now)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0) {
        c->state = CL_SENDING;
        cl_conn_write(run, c, now);
        return;
    }
    cl_conn_close(c);
    c->ai = c->ai->ai_next;
    if (c->ai != NULL)
        cl_conn_connect(run, c, now);
    else
        cl_attempt_transport(run, c, err, now);
}

static int cl_head_build(const struct cl_run *run, const struct cli_job *j, char **head,
                         size_t *len)
{
    FILE *f = open_memstream(head, len);
    if (f == NULL)
        return -ENOMEM;
    fprintf(f, "POST /v1/jobs/%s%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: spindle-call\r\n", j->kind,
            j->query[0] ? "?" : "", j->query, run->url.authority);
    fprintf(f, "X-Request-Id: %s\r\n", j->request_id);
    if (j->tenant)
        fprintf(f, "X-Tenant-Id: %s\r\n", j->tenant);
    if (run->token[0] != '\0')
        fprintf(f, "Authorization: Bearer %s\r\n", run->token);
    if (run->o->timeout_ms > 0)
        fprintf(f, "X-Timeout-Ms: %lld\r\n", run->o->timeout_ms);
    if (j->body)
        fputs("Content-Type: application/octet-stream\r\n", f);
    fprintf(f, "Content-Length: %zu\r\n\r\n", j->body_len);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(*head);
        *head = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Start (or repeat, after a stale keep-alive socket) the attempt of c->job. */
static void cl_attempt_send(struct cl_run *run, struct cl_conn *c, long long now)
{
    if (c->head == NULL && cl_head_build(run, c->job, &c->head, &c->head_len) != 0) {
        cl_job_error(c->job, "out_of_memory", "building the request: out of memory");
        cl_attempt_done(run, c, false, false, -1, false, now);
        return;
    }
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    cl_answer_reset(c);
    c->complete = false;
    c->sent = c->received = 0;
    c->deadline_ms = now + run->attempt_ms;
    if (c->fd >= 0) {
        c->state = CL_SENDING;
        cl_conn_write(run, c, now);
        return;
    }
    c->ai = run->addrs;
    cl_conn_connect(run, c, now);
}

/* poll() said the socket is ready. */
static void cl_conn_ready(struct cl_run *run, struct cl_conn *c, short revents, long long now)
{
    switch (c->state) {
    case CL_IDLE:
    case CL_WAITING:
        cl_conn_close(c); /* the server closed an idle connection (or sent what we never asked) */
        break;
    case CL_CONNECTING:
        cl_conn_connected(run, c, now);
        break;
    case CL_SENDING:
        if (revents & (POLLIN | POLLERR | POLLHUP))
            cl_conn_read(run, c, now); /* an early answer (413) or the error */
        if (c->state == CL_SENDING && c->job != NULL && (revents & POLLOUT))
            cl_conn_write(run, c, now);
        break;
    case CL_READING:
        cl_conn_read(run, c, now);
        break;
    }
}

/* ---- scheduling and the loop ---------------------------------------------------------------- */

/* Start the next attempt of `j` on `c`, unless the breaker says no: then `j` waits on `c` for
 * the breaker (cooldown, probe), or settles at once with circuit_open once a probe failed. */
static void cl_attempt_start(struct cl_run *run, struct cl_conn *c, struct cli_job *j,
                             long long now)
{
    int allow = cli_breaker_allow(&run->breaker, now);
    c->job = j;
    j->breaker_wait = allow == CLI_BREAKER_WAIT;
    if (allow == CLI_BREAKER_WAIT) {
        c->state = CL_WAITING;
        return;
    }
    if (allow == CLI_BREAKER_REFUSE) {
        cl_job_error(j, "circuit_open",
                     "not sent: the circuit opened after %u consecutive failures and the probe "
                     "after its %lld ms cooldown failed too; the cause: %s: %s",
                     run->breaker.threshold, run->breaker.cooldown_ms, run->cause_code,
                     run->cause_msg);
        snprintf(j->err_cause, sizeof(j->err_cause), "%s", run->cause_code);
        j->status = 0;
        c->job = NULL;
        c->state = CL_IDLE;
        cl_settle(run, j, false, now);
        return;
    }
    c->probe = allow == CLI_BREAKER_PROBE;
    j->stale_retried = false;
    j->err_cause[0] = '\0';
    if (j->attempts++ == 0)
        j->start_ms = now;
    cl_attempt_send(run, c, now);
}

/* When the job waiting on a slot may be tried again. */
static long long cl_job_due(const struct cl_run *run, const struct cli_job *j)
{
    return j->breaker_wait ? cli_breaker_retry_ms(&run->breaker) : j->due_ms;
}

/* Retries whose backoff is over go again; idle slots take fresh jobs in file order. Jobs that
 * cannot go (a bad line, an open circuit) settle at once. */
static void cl_dispatch(struct cl_run *run, long long now)
{
    for (unsigned i = 0; i < run->nconns; i++) {
        struct cl_conn *c = &run->conns[i];
        if (c->state == CL_WAITING && cl_job_due(run, c->job) <= now)
            cl_attempt_start(run, c, c->job, now);
        while (c->job == NULL && run->next < run->njobs) {
            struct cli_job *j = &run->jobs[run->next++];
            if (j->invalid) {
                cl_job_error(j, "invalid_job", "line %u: %s", j->line, j->invalid);
                cl_settle(run, j, false, now);
                continue;
            }
            cl_attempt_start(run, c, j, now);
        }
    }
}

static short cl_poll_events(const struct cl_conn *c)
{
    switch (c->state) {
    case CL_CONNECTING:
        return POLLOUT;
    case CL_SENDING:
        return POLLOUT | POLLIN;
    default:
        return POLLIN;
    }
}

/* Milliseconds until the next deadline, due retry or redraw. */
static int cl_poll_timeout(const struct cl_run *run, long long now)
{
    long long t = now + CL_WAIT_MS;
    for (unsigned i = 0; i < run->nconns; i++) {
        const struct cl_conn *c = &run->conns[i];
        long long at = c->state == CL_WAITING ? cl_job_due(run, c->job) : c->deadline_ms;
        if (c->job && at < t)
            t = at;
    }
    if (run->progress && run->drawn_ms + CL_PROGRESS_MS < t)
        t = run->drawn_ms + CL_PROGRESS_MS;
    return t <= now ? 0 : (int)(t - now);
}

static int cl_loop(struct cl_run *run, struct pollfd *pfd)
{
    while (run->settled < run->njobs) {
        long long now = cl_now_ms();
        cl_dispatch(run, now);
        cl_progress(run, now);
        if (run->settled == run->njobs)
            break;
        for (unsigned i = 0; i < run->nconns; i++) {
            pfd[i].fd = run->conns[i].fd; /* -1: ignored by poll */
            pfd[i].events = cl_poll_events(&run->conns[i]);
            pfd[i].revents = 0;
        }
        if (poll(pfd, run->nconns, cl_poll_timeout(run, now)) < 0 && errno != EINTR)
            return -errno;
        now = cl_now_ms();
        for (unsigned i = 0; i < run->nconns; i++) {
            struct cl_conn *c = &run->conns[i];
            if (pfd[i].revents != 0 && c->fd == pfd[i].fd)
                cl_conn_ready(run, c, pfd[i].revents, now);
            if (c->job != NULL && c->state != CL_WAITING && now >= c->deadline_ms)
                cl_attempt_transport(run, c, ETIMEDOUT, now);
        }
    }
    return 0;
}

/* ---- setting up ----------------------------------------------------------------------------- */

static int cl_resolve(struct cl_run *run)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    int rc = getaddrinfo(run->url.host, run->url.port, &hints, &run->addrs);
    if (rc != 0) {
        fprintf(stderr, "spindle: call: resolving \"%s\": %s\n", run->url.host,
                rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    return 0;
}

/* The one job of single mode. Returns 0, -ENOMEM, or -EINVAL (message printed). */
static int cl_job_single(struct cl_run *run, const char *request_id)
{
    char err[512];
    run->njobs = 1; /* from here on the job is freed with the run */
    int rc = cli_job_single(&run->jobs[0], run->o, request_id, err, sizeof(err));
    if (rc == -EINVAL)
        fprintf(stderr, "spindle: call: %s\n", err);
    return rc;
}

/* Load the jobs and size the run. Returns 0, -ENOMEM, or -EINVAL (message printed). */
static int cl_run_init(struct cl_run *run, const struct cli_call_opts *o)
{
    char base[CTX_REQUEST_ID_MAX + 1];
    const char *base_id = o->request_id;
    if (base_id == NULL) {
        ctx_request_id_generate(base, sizeof(base));
        base_id = base;
    }
    char *text = NULL;
    size_t len = 0;
    unsigned cap = 1;
    if (o->batch) {
        if ((text = cli_file_read(o->batch, &len)) == NULL) {
            fprintf(stderr, "spindle: call: --batch %s: %s\n", o->batch, strerror(errno));
            return -EINVAL;
        }
        cap = cli_jobs_count(text);
    }
    run->jobs = calloc(cap ? cap : 1, sizeof(*run->jobs));
    run->nconns = o->concurrency < cap ? o->concurrency : (cap ? cap : 1);
    run->conns = calloc(run->nconns, sizeof(*run->conns));
    int rc = -ENOMEM;
    if (run->jobs && run->conns) {
        for (unsigned i = 0; i < run->nconns; i++)
            run->conns[i].fd = -1;
        rc = o->batch ? cli_jobs_parse(run->jobs, &run->njobs, text, base_id, o->tenant)
                      : cl_job_single(run, base_id);
    }
    free(text);
    return rc;
}

static void cl_run_fini(struct cl_run *run)
{
    for (unsigned i = 0; run->conns && i < run->nconns; i++) {
        cl_conn_close(&run->conns[i]);
        free(run->conns[i].head);
        free(run->conns[i].body);
    }
    for (unsigned i = 0; run->jobs && i < run->njobs; i++)
        cli_job_fini(&run->jobs[i]);
    free(run->conns);
    free(run->jobs);
    if (run->addrs)
        freeaddrinfo(run->addrs);
}

static uint64_t cl_seed(const struct cli_call_opts *o)
{
    if (o->seed)
        return o->seed;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
           ((uint64_t)getpid() << 32);
}

static int cl_run(struct cl_run *run, const struct cli_call_opts *o)
{
    run->o = o;
    run->t0_ms = cl_now_ms();
    run->attempt_ms = o->timeout_ms > 0 ? o->timeout_ms + CL_MARGIN_MS : CL_WAIT_MS;
    run->lines = o->batch != NULL || o->json;
    run->progress = o->batch != NULL && isatty(STDERR_FILENO);
    run->rng = cl_seed(o);
    run->backoff = (struct cli_backoff){o->backoff_base_ms, o->backoff_cap_ms};
    cli_breaker_init(&run->breaker, o->breaker, o->cooldown_ms);
    char err[512];
    if (cli_url_parse(o->server, &run->url, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: call: --server: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (cli_token_load(o->token_file, run->token, sizeof(run->token), err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: call: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    int rc = cl_run_init(run, o);
    if (rc == 0)
        rc = cl_resolve(run);
    if (rc == -EINVAL)
        return CLI_EXIT_USAGE; /* an input file could not be read (said why) */
    if (rc == -EHOSTUNREACH)
        return CLI_EXIT_FAIL;
    struct pollfd *pfd = rc == 0 ? calloc(run->nconns, sizeof(*pfd)) : NULL;
    if (rc == 0)
        rc = pfd ? cl_loop(run, pfd) : -ENOMEM;
    free(pfd);
    if (rc != 0) {
        fprintf(stderr, "spindle: call: %s\n", strerror(-rc));
        return CLI_EXIT_FAIL;
    }
    if (run->lines)
        cl_print_summary(run);
    if (fflush(stdout) != 0 && run->out_error == 0)
        run->out_error = errno;
    if (run->out_error != 0)
        return CLI_EXIT_FAIL;
    return run->failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cli_call_main(int argc, char **argv)
{
    struct cli_call_opts o;
    char err[512];
    if (cli_call_args_parse(argc, argv, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: %s (see: spindle call --help)\n", err);
        return CLI_EXIT_USAGE;
    }
    if (o.help) {
        fputs(cl_usage, stdout);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    }
    if (o.async)
        return cli_call_async(&o);
    if (cli_stream_applies(&o))
        return cli_stream_run(&o); /* stream.c: a large file in, the answer out as it comes */
    struct cl_run run = {0};
    int code = cl_run(&run, &o);
    cl_run_fini(&run);
    explicit_bzero(run.token, sizeof(run.token));
    return code;
}
