/* tasks.c - `spindle tasks list|show|cancel|result`: the durable tasks of a tenant, from the
 * command line, over GET/DELETE /v1/tasks; and what `spindle call --async` (async.c) shares with
 * it: the task's JSON read back (state, attempts, errors) and its one-line summaries.
 *
 * Design: each subcommand is one or a few blocking exchanges (fetch.c). `list` prints a table
 * (ID, STATE, KIND, ATTEMPT, CREATED) or, with --json, one task object per line; it follows the
 * answer's cursor ("next_after") page after page with --all, else prints one page and says on
 * stderr how to get the next. `show` prints the task's fields one per line (its errors too) or its
 * JSON;
 * `--wait MS` long-polls (?wait_ms=) until the state is final or MS passes. `cancel` is DELETE
 * (idempotent) and prints the state after it. `result` writes the stored answer bytes like
 * `spindle call` writes an answer (--output FILE, a JSON answer ends with a newline); before the
 * task succeeded the server answers 409 and the command fails. Every exchange sends the token of
 * --token-file (else $SPINDLE_TOKEN) as `spindle call` does: with [auth] mode = keys the token,
 * not --tenant, says whose tasks these are.
 *
 * Exit codes: CLI_EXIT_OK, CLI_EXIT_FAIL (an HTTP error answer, no answer, a task that is not
 * there or not finished), CLI_EXIT_USAGE.
 *
 * Not here: `spindle tasks migrate`, which works on the store itself rather than over HTTP: main.c
 * dispatches it to server/tasks/migrate.c before this file sees the command; the usage above
 * names it so that `spindle tasks --help` lists every subcommand.
 *
 * Ownership: everything is local to a call; no global state (getopt's aside).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/internal.h"
#include "context/ctx.h"

#define TK_DEFAULT_SERVER "http://127.0.0.1:8080"
#define TK_IO_MS          30000 /* one exchange, beyond any long poll */
#define TK_LIMIT_MAX      1000
#define TK_PAGES_MAX      100000 /* --all: a bound on the pages followed */

static const char tk_usage[] =
    "usage: spindle tasks list [--state S] [--kind K] [--limit N] [--after CURSOR] [--all]\n"
    "       spindle tasks show ID [--wait MS]\n"
    "       spindle tasks cancel ID\n"
    "       spindle tasks result ID [-o FILE]\n"
    "       spindle tasks migrate [--check] [-c FILE] [--store STORE]\n"
    "\n"
    "The durable tasks of a tenant (POST /v1/tasks, or spindle call --async), over HTTP\n"
    "whichever store the server uses. migrate creates or migrates the schema of the task\n"
    "store itself, without a server (see: spindle tasks migrate --help).\n"
    "\n"
    "  -s, --server URL     http://HOST:PORT (default " TK_DEFAULT_SERVER ")\n"
    "      --tenant T       send X-Tenant-Id: T (a tenant sees only its own tasks)\n"
    "      --token-file FILE  send Authorization: Bearer <the first line of FILE>; without\n"
    "                       it, $SPINDLE_TOKEN when set (never put a token on the command line)\n"
    "      --json           list: one task object per line; show: the task's JSON\n"
    "      --state S        list: only tasks in state S (queued, running, retrying,\n"
    "                       succeeded, failed, cancelled)\n"
    "      --kind K         list: only tasks of kind K\n"
    "      --limit N        list: at most N tasks per page (1-1000)\n"
    "      --after CURSOR   list: the page after CURSOR (printed after a page)\n"
    "      --all            list: every page\n"
    "      --wait MS        show: wait up to MS for the task to finish\n"
    "  -o, --output FILE    result: write the answer to FILE\n"
    "  -h, --help           print this help\n"
    "\n"
    "Exit status: 0 done, 1 the server refused or the task is not there (or, for result,\n"
    "not succeeded), 2 usage error.\n";

enum tk_opt {
    TK_OPT_TENANT = 256,
    TK_OPT_TOKEN_FILE,
    TK_OPT_JSON,
    TK_OPT_STATE,
    TK_OPT_KIND,
    TK_OPT_LIMIT,
    TK_OPT_AFTER,
    TK_OPT_ALL,
    TK_OPT_WAIT,
};

static const struct option tk_options[] = {
    {"server", required_argument, NULL, 's'},
    {"tenant", required_argument, NULL, TK_OPT_TENANT},
    {"token-file", required_argument, NULL, TK_OPT_TOKEN_FILE},
    {"json", no_argument, NULL, TK_OPT_JSON},
    {"state", required_argument, NULL, TK_OPT_STATE},
    {"kind", required_argument, NULL, TK_OPT_KIND},
    {"limit", required_argument, NULL, TK_OPT_LIMIT},
    {"after", required_argument, NULL, TK_OPT_AFTER},
    {"all", no_argument, NULL, TK_OPT_ALL},
    {"wait", required_argument, NULL, TK_OPT_WAIT},
    {"output", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Where the commands send their requests, and the bearer token they send (cli_token_load). */
struct tk_server {
    struct cli_url url;
    char token[CLI_TOKEN_MAX + 1]; /* "" = none */
};

static const char *const tk_states[] = {"queued",    "running", "retrying",
                                        "succeeded", "failed",  "cancelled"};

bool cli_task_state_valid(const char *state)
{
    for (size_t i = 0; i < sizeof(tk_states) / sizeof(tk_states[0]); i++) {
        if (strcmp(state, tk_states[i]) == 0)
            return true;
    }
    return false;
}

bool cli_task_state_final(const char *state)
{
    return state != NULL && (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
                             strcmp(state, "cancelled") == 0);
}

static int tk_fail(char *err, size_t size, const char *what, const char *arg)
{
    snprintf(err, size, "tasks: %s \"%s\"", what, arg);
    return -EINVAL;
}

static int tk_num(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = (*s >= '0' && *s <= '9') ? strtoll(s, &end, 10) : -1;
    if (v < min || v > max || errno != 0 || *end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

static int tk_opt_set(int c, const char *arg, struct cli_tasks_opts *o, char *err, size_t size)
{
    long long v;
    switch (c) {
    case 's':
        o->server = arg;
        return 0;
    case TK_OPT_TENANT:
        if (!ctx_tenant_valid(arg, strlen(arg)))
            return tk_fail(err, size, "--tenant wants 1-64 of [A-Za-z0-9._-], not", arg);
        o->tenant = arg;
        return 0;
    case TK_OPT_TOKEN_FILE:
        o->token_file = arg;
        return 0;
    case TK_OPT_JSON:
        o->json = true;
        return 0;
    case TK_OPT_STATE:
        if (!cli_task_state_valid(arg))
            return tk_fail(err, size,
                           "--state wants queued, running, retrying, succeeded, failed or "
                           "cancelled, not",
                           arg);
        o->state = arg;
        return 0;
    case TK_OPT_KIND:
        o->kind = arg;
        return 0;
    case TK_OPT_LIMIT:
        if (tk_num(arg, 1, TK_LIMIT_MAX, &v) != 0)
            return tk_fail(err, size, "--limit wants 1-1000, not", arg);
        o->limit = (unsigned)v;
        return 0;
    case TK_OPT_AFTER:
        o->after = arg;
        return 0;
    case TK_OPT_ALL:
        o->all = true;
        return 0;
    case TK_OPT_WAIT:
        if (tk_num(arg, 0, 86400000, &v) != 0)
            return tk_fail(err, size, "--wait wants milliseconds (0-86400000), not", arg);
        o->wait_ms = v;
        return 0;
    case 'o':
        o->output = arg;
        return 0;
    }
    return -EINVAL;
}

/* What each subcommand takes: an ID or not, and which options. */
static int tk_args_check(struct cli_tasks_opts *o, char *err, size_t size)
{
    bool list = o->cmd == CLI_TASKS_LIST;
    if (list && o->id != NULL)
        return tk_fail(err, size, "list takes no ID, got", o->id);
    if (!list && o->id == NULL) {
        snprintf(err, size, "tasks: %s needs a task ID", cli_tasks_cmd_name(o->cmd));
        return -EINVAL;
    }
    if (!list && (o->state || o->kind || o->limit || o->after || o->all))
        return tk_fail(err, size, "--state, --kind, --limit, --after and --all are for list, not",
                       cli_tasks_cmd_name(o->cmd));
    if (o->wait_ms >= 0 && o->cmd != CLI_TASKS_SHOW)
        return tk_fail(err, size, "--wait is for show, not", cli_tasks_cmd_name(o->cmd));
    if (o->output && o->cmd != CLI_TASKS_RESULT)
        return tk_fail(err, size, "--output is for result, not", cli_tasks_cmd_name(o->cmd));
    if (o->id && (o->id[0] == '\0' || strspn(o->id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
                                                    "rstuvwxyz0123456789-_.~") != strlen(o->id)))
        return tk_fail(err, size, "bad task ID", o->id);
    return 0;
}

const char *cli_tasks_cmd_name(enum cli_tasks_cmd cmd)
{
    static const char *const names[] = {"list", "show", "cancel", "result"};
    return (unsigned)cmd < sizeof(names) / sizeof(names[0]) ? names[cmd] : "?";
}

int cli_tasks_args_parse(int argc, char **argv, struct cli_tasks_opts *o, char *err, size_t size)
{
    *o = (struct cli_tasks_opts){.server = TK_DEFAULT_SERVER, .wait_ms = -1};
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        o->help = true;
        return 0;
    }
    if (argc < 2) {
        snprintf(err, size, "tasks: a subcommand is needed (list, show, cancel, result, migrate)");
        return -EINVAL;
    }
    int cmd = -1;
    for (int i = 0; i <= CLI_TASKS_RESULT; i++) {
        if (strcmp(argv[1], cli_tasks_cmd_name((enum cli_tasks_cmd)i)) == 0)
            cmd = i;
    }
    if (cmd < 0)
        return tk_fail(err, size, "unknown subcommand (list, show, cancel, result, migrate)",
                       argv[1]);
    o->cmd = (enum cli_tasks_cmd)cmd;
    opterr = 0;
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, ":s:o:h", tk_options, NULL)) != -1) {
        if (c == 'h') {
            o->help = true;
            return 0;
        }
        if (c == ':')
            return tk_fail(err, size, "missing value for option", argv[optind - 1]);
        if (c == '?')
            return tk_fail(err, size, "unknown option", argv[optind - 1]);
        int rc = tk_opt_set(c, optarg, o, err, size);
        if (rc != 0)
            return rc;
    }
    if (optind < argc)
        o->id = argv[optind++];
    if (optind < argc)
        return tk_fail(err, size, "unexpected argument", argv[optind]);
    return tk_args_check(o, err, size);
}

int cli_tasks_list_target(const struct cli_tasks_opts *o, const char *after, char *buf, size_t size)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (f == NULL)
        return -ENOMEM;
    fputs("/v1/tasks", f);
    const char *keys[] = {"state", "kind", "after"};
    const char *vals[] = {o->state, o->kind, after};
    char sep = '?';
    for (size_t i = 0; i < 3; i++) {
        if (vals[i] == NULL)
            continue;
        fprintf(f, "%c%s=", sep, keys[i]);
        (void)cli_percent_encode(f, vals[i], strlen(vals[i]));
        sep = '&';
    }
    if (o->limit)
        fprintf(f, "%climit=%u", sep, o->limit);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        free(s);
        return -ENOMEM;
    }
    int rc = len < size ? 0 : -ENAMETOOLONG;
    if (rc == 0)
        memcpy(buf, s, len + 1);
    free(s);
    return rc;
}

/* ---- a task's JSON -------------------------------------------------------------------------- */

static const char *tk_str(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : dflt;
}

static long long tk_int(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* The last error of a task: the last of "errors" (objects with "code"/"message", or strings), or
 * "error". Borrowed from `task`, "" when there is none. */
const char *cli_task_last_error(const json_t *task, const char **code)
{
    const json_t *errs = json_object_get(task, "errors");
    const json_t *e = json_is_array(errs) && json_array_size(errs) > 0
                          ? json_array_get(errs, json_array_size(errs) - 1)
                          : json_object_get(task, "error");
    *code = "";
    if (json_is_string(e))
        return json_string_value(e);
    if (!json_is_object(e))
        return "";
    *code = tk_str(e, "code", "");
    return tk_str(e, "message", *code);
}

void cli_task_row(const json_t *task, char *buf, size_t size)
{
    char attempt[32];
    snprintf(attempt, sizeof(attempt), "%lld/%lld", tk_int(task, "attempt"),
             tk_int(task, "attempts"));
    snprintf(buf, size, "%-28s %-10s %-12s %-8s %s", tk_str(task, "id", "-"),
             tk_str(task, "state", "-"), tk_str(task, "kind", "-"), attempt,
             tk_str(task, "created_at", "-"));
}

void cli_task_progress(const json_t *task, long long elapsed_ms, char *buf, size_t size)
{
    snprintf(buf, size, "task %s: %s, attempt %lld/%lld, %lld.%llds", tk_str(task, "id", "?"),
             tk_str(task, "state", "?"), tk_int(task, "attempt"), tk_int(task, "attempts"),
             elapsed_ms / 1000, elapsed_ms % 1000 / 100);
}

/* ---- the subcommands ------------------------------------------------------------------------ */

/* The answer's spindle error (or HTTP status) on stderr. */
void cli_task_http_error(const char *what, const struct cli_fetch_resp *r)
{
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const json_t *e = json_object_get(j, "error");
    fprintf(stderr, "spindle: %s: %d %s: %s\n", what, r->status, tk_str(e, "code", "error"),
            tk_str(e, "message", "the server refused"));
    json_decref(j);
}

/* GET/DELETE `target`, expecting 2xx and JSON. New reference, or NULL after saying why. */
static json_t *tk_get_json(const struct cli_tasks_opts *o, const struct tk_server *srv,
                           const char *method, const char *target, long long wait_ms)
{
    char err[512];
    struct cli_fetch_req q = {.url = &srv->url,
                              .method = method,
                              .target = target,
                              .tenant = o->tenant,
                              .timeout_ms = TK_IO_MS + (wait_ms > 0 ? wait_ms : 0),
                              .token = srv->token};
    struct cli_fetch_resp r;
    if (cli_fetch(&q, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: tasks: %s\n", err);
        return NULL;
    }
    json_t *j = NULL;
    if (r.status / 100 != 2)
        cli_task_http_error(cli_tasks_cmd_name(o->cmd), &r);
    else if ((j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL)) == NULL)
        fprintf(stderr, "spindle: tasks: %s: the answer is not JSON\n", target);
    cli_fetch_resp_fini(&r);
    return j;
}

static int tk_print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    int rc = s && puts(s) != EOF ? 0 : -EIO;
    free(s);
    return rc;
}

static int tk_list(const struct cli_tasks_opts *o, const struct tk_server *srv)
{
    char target[2048];
    char *after = o->after ? strdup(o->after) : NULL;
    int code = CLI_EXIT_OK;
    for (unsigned page = 0; page < TK_PAGES_MAX; page++) {
        json_t *j = NULL;
        if (cli_tasks_list_target(o, after, target, sizeof(target)) != 0 ||
            (j = tk_get_json(o, srv, "GET", target, 0)) == NULL) {
            code = CLI_EXIT_FAIL;
            break;
        }
        size_t i;
        json_t *t;
        if (page == 0 && !o->json)
            printf("%-28s %-10s %-12s %-8s %s\n", "ID", "STATE", "KIND", "ATTEMPT", "CREATED");
        json_array_foreach(json_object_get(j, "tasks"), i, t)
        {
            char row[512];
            cli_task_row(t, row, sizeof(row));
            if (o->json ? tk_print_json(t) != 0 : puts(row) == EOF)
                code = CLI_EXIT_FAIL;
        }
        const char *next = json_string_value(json_object_get(j, "next_after"));
        free(after);
        after = next ? strdup(next) : NULL;
        json_decref(j);
        if (after == NULL || code != CLI_EXIT_OK)
            break;
        if (!o->all) {
            fprintf(stderr, "spindle: tasks: more tasks: add --after %s (or --all)\n", after);
            break;
        }
    }
    free(after);
    return code;
}

static int tk_show(const struct cli_tasks_opts *o, const struct tk_server *srv)
{
    char target[512];
    if (o->wait_ms > 0)
        snprintf(target, sizeof(target), "/v1/tasks/%s?wait_ms=%lld", o->id, o->wait_ms);
    else
        snprintf(target, sizeof(target), "/v1/tasks/%s", o->id);
    json_t *j =
        tk_get_json(o, srv, o->cmd == CLI_TASKS_CANCEL ? "DELETE" : "GET", target, o->wait_ms);
    if (j == NULL)
        return CLI_EXIT_FAIL;
    int rc = 0;
    if (o->json) {
        rc = tk_print_json(j);
    } else if (o->cmd == CLI_TASKS_CANCEL) {
        rc = printf("%s %s\n", tk_str(j, "id", o->id), tk_str(j, "state", "?")) < 0 ? -EIO : 0;
    } else {
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v)
        {
            char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (printf("%-12s %s\n", key, s ? s : json_string_value(v)) < 0)
                rc = -EIO;
            free(s);
        }
    }
    json_decref(j);
    return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int cli_task_answer_write(const char *path, const struct cli_fetch_resp *r)
{
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : STDOUT_FILENO;
    if (fd < 0)
        return -errno;
    int rc = 0;
    const char *p = r->body ? r->body : "";
    for (size_t left = r->body_len; left > 0 && rc == 0;) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -errno;
        else
            p += n, left -= (size_t)n;
    }
    bool json = strncasecmp(r->ctype, "application/json", 16) == 0;
    if (rc == 0 && !path && json && r->body_len && r->body[r->body_len - 1] != '\n' &&
        write(fd, "\n", 1) != 1)
        rc = -errno;
    if (path && close(fd) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

static int tk_result(const struct cli_tasks_opts *o, const struct tk_server *srv)
{
    char target[512], err[512];
    snprintf(target, sizeof(target), "/v1/tasks/%s/result", o->id);
    struct cli_fetch_req q = {.url = &srv->url,
                              .method = "GET",
                              .target = target,
                              .tenant = o->tenant,
                              .timeout_ms = TK_IO_MS,
                              .token = srv->token};
    struct cli_fetch_resp r;
    if (cli_fetch(&q, &r, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: tasks: %s\n", err);
        return CLI_EXIT_FAIL;
    }
    int code = CLI_EXIT_OK;
    if (r.status / 100 != 2) {
        cli_task_http_error("result", &r);
        code = CLI_EXIT_FAIL;
    } else {
        int rc = cli_task_answer_write(o->output, &r);
        if (rc != 0) {
            fprintf(stderr, "spindle: tasks: writing the answer: %s\n", strerror(-rc));
            code = CLI_EXIT_FAIL;
        }
    }
    cli_fetch_resp_fini(&r);
    return code;
}

int cli_tasks_main(int argc, char **argv)
{
    struct cli_tasks_opts o;
    struct tk_server srv;
    char err[512];
    if (cli_tasks_args_parse(argc, argv, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: %s (see: spindle tasks --help)\n", err);
        return CLI_EXIT_USAGE;
    }
    if (o.help) {
        fputs(tk_usage, stdout);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    }
    if (cli_url_parse(o.server, &srv.url, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: tasks: --server: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    if (cli_token_load(o.token_file, srv.token, sizeof(srv.token), err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: tasks: %s\n", err);
        return CLI_EXIT_USAGE;
    }
    int code;
    switch (o.cmd) {
    case CLI_TASKS_LIST:
        code = tk_list(&o, &srv);
        break;
    case CLI_TASKS_RESULT:
        code = tk_result(&o, &srv);
        break;
    default:
        code = tk_show(&o, &srv);
        break;
    }
    explicit_bzero(srv.token, sizeof(srv.token));
    if (fflush(stdout) != 0 && code == CLI_EXIT_OK) {
        fprintf(stderr, "spindle: tasks: writing to standard output: %s\n", strerror(errno));
        code = CLI_EXIT_FAIL;
    }
    return code;
}
