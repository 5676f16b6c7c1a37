/* logs.c - `spindle logs`: pretty-print, filter and follow spindle's JSON-lines logs.
 *
 * Design: a line reader (struct lg_reader) pulls bytes from one file descriptor into a growing
 * buffer and hands each complete line to cli_logs_line_print() (cli/internal.h), which parses it
 * with jansson and writes either the pretty form or, for anything that is not a JSON object, the
 * line unchanged (only when no filter is set: a filter cannot be judged on a line without fields).
 * A last line without its newline is kept until the newline comes; it is printed as it is only
 * when the input really ended (end of stdin or of the file without -f, or the file was rotated or
 * truncated away under -f). A line longer than LG_LINE_MAX is printed in pieces of that size.
 *
 * Time is shown shortened to HH:MM:SS.mmm (the UTC clock time of `ts`; the date is dropped, it
 * rarely changes while one reads a log); a `ts` not in spindle's RFC 3339 form is shown as is.
 *
 * Following (-f), like `tail -F`: after the end of the file, poll every LG_POLL_MS. The file was
 * rotated when the path now names another inode (rename + create, or a replacement): the old
 * descriptor is read to its end first (a writer may have appended before it reopened), then the
 * new file is read from its start. It was truncated when its size drops below what was read:
 * reading restarts at offset 0. While the path names no file (between rename and create), the old
 * file keeps being read. A FILE that does not exist yet is waited for (a note on stderr, then the
 * same poll until the path names a file, which is read from its start), so `spindle logs -f` can
 * be started before the server creates its log. The poll sleep is sigtimedwait() on SIGINT/SIGTERM,
 * blocked for the whole run, so a stop request is never lost between a check and the sleep; it ends
 * the loop cleanly (exit 0) after what was already read is printed.
 *
 * Threads: one; the reader and the options belong to the main function.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/internal.h"

#define LG_POLL_MS  200
#define LG_READ_MAX 65536
#define LG_LINE_MAX (1024 * 1024) /* longer lines are printed in pieces */

#define LG_RESET "\033[0m"
#define LG_DIM   "\033[2m"

static const char lg_usage[] =
    "usage: spindle logs [FILE] [options]\n"
    "\n"
    "Pretty-print spindle's JSON log lines from FILE (or standard input): time (HH:MM:SS.mmm,\n"
    "UTC), level, [request_id tenant trace] ids, the message, then the other fields as\n"
    "key=value. Lines that are not JSON are printed unchanged when no filter is set.\n"
    "\n"
    "  -f, --follow           keep reading as the file grows; follows rotation and truncation\n"
    "                         and waits for a FILE that does not exist yet (like tail -F);\n"
    "                         stop with SIGINT or SIGTERM\n"
    "      --request-id ID    only lines of this request id\n"
    "      --tenant T         only lines of this tenant\n"
    "      --level L          only lines at L or above (trace, debug, info, warn, error, fatal)\n"
    "      --color[=WHEN]     auto (colour when standard output is a terminal), always, never\n"
    "  -h, --help             print this help\n";

static const char *const lg_levels[] = {"trace", "debug", "info", "warn", "error", "fatal"};
static const char *const lg_level_labels[] = {"TRACE", "DEBUG", "INFO ", "WARN ", "ERROR", "FATAL"};
static const char *const lg_level_colors[] = {
    "\033[90m", "\033[36m", "\033[32m", "\033[33m", "\033[31m", "\033[1;31m",
};

#define LG_NLEVELS ((int)(sizeof(lg_levels) / sizeof(lg_levels[0])))

/* Fields shown in the fixed part of a line, never repeated as key=value. */
static const char *const lg_fixed[] = {"ts",     "level",    "msg",    "request_id",
                                       "tenant", "trace_id", "span_id"};

int cli_log_level_rank(const char *name)
{
    if (name == NULL)
        return -1;
    for (int i = 0; i < LG_NLEVELS; i++) {
        if (strcasecmp(name, lg_levels[i]) == 0)
            return i;
    }
    return strcasecmp(name, "warning") == 0 ? 3 : -1;
}

/* ---- arguments ------------------------------------------------------------------------------ */

enum lg_opt {
    LG_OPT_REQUEST_ID = 256,
    LG_OPT_TENANT,
    LG_OPT_LEVEL,
    LG_OPT_COLOR,
};

static const struct option lg_options[] = {
    {"follow", no_argument, NULL, 'f'},
    {"request-id", required_argument, NULL, LG_OPT_REQUEST_ID},
    {"tenant", required_argument, NULL, LG_OPT_TENANT},
    {"level", required_argument, NULL, LG_OPT_LEVEL},
    {"color", optional_argument, NULL, LG_OPT_COLOR},
    {"colour", optional_argument, NULL, LG_OPT_COLOR},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int lg_color_parse(const char *v, enum cli_color *c)
{
    if (v == NULL || strcmp(v, "always") == 0)
        *c = CLI_COLOR_ALWAYS;
    else if (strcmp(v, "auto") == 0)
        *c = CLI_COLOR_AUTO;
    else if (strcmp(v, "never") == 0)
        *c = CLI_COLOR_NEVER;
    else
        return -EINVAL;
    return 0;
}

static int lg_arg_error(char *err, size_t size, const char *what, const char *arg)
{
    snprintf(err, size, "logs: %s \"%s\"", what, arg);
    return -EINVAL;
}

int cli_logs_args_parse(int argc, char **argv, struct cli_logs_opts *o, char *err, size_t size)
{
    *o = (struct cli_logs_opts){.min_level = -1, .color = CLI_COLOR_AUTO};
    opterr = 0; /* our own messages */
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":fh", lg_options, NULL)) != -1) {
        switch (c) {
        case 'f':
            o->follow = true;
            break;
        case 'h':
            o->help = true;
            return 0;
        case LG_OPT_REQUEST_ID:
            o->request_id = optarg;
            break;
        case LG_OPT_TENANT:
            o->tenant = optarg;
            break;
        case LG_OPT_LEVEL:
            o->min_level = cli_log_level_rank(optarg);
            if (o->min_level < 0)
                return lg_arg_error(err, size, "unknown level", optarg);
            break;
        case LG_OPT_COLOR:
            if (lg_color_parse(optarg, &o->color) != 0)
                return lg_arg_error(err, size, "--color takes auto, always or never, not", optarg);
            break;
        case ':':
            return lg_arg_error(err, size, "missing value for option", argv[optind - 1]);
        default:
            return lg_arg_error(err, size, "unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        o->path = argv[optind++];
    if (optind < argc)
        return lg_arg_error(err, size, "unexpected argument", argv[optind]);
    if (o->follow && (o->path == NULL || strcmp(o->path, "-") == 0)) {
        snprintf(err, size, "logs: -f needs a FILE (standard input cannot be followed)");
        return -EINVAL;
    }
    return 0;
}

/* ---- one line ------------------------------------------------------------------------------- */

static bool lg_filtered(const struct cli_logs_opts *o)
{
    return o->request_id != NULL || o->tenant != NULL || o->min_level >= 0;
}

static const char *lg_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static bool lg_str_is(const json_t *obj, const char *key, const char *want)
{
    const char *v = lg_str(obj, key);
    return v != NULL && strcmp(v, want) == 0;
}

static bool lg_passes(const struct cli_logs_opts *o, const json_t *line)
{
    if (o->request_id != NULL && !lg_str_is(line, "request_id", o->request_id))
        return false;
    if (o->tenant != NULL && !lg_str_is(line, "tenant", o->tenant))
        return false;
    if (o->min_level >= 0 && cli_log_level_rank(lg_str(line, "level")) < o->min_level)
        return false;
    return true;
}

/* True when a string must be quoted to read back as one value. */
static bool lg_needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= ' ' || ch == 0x7f || ch == '"')
            return true;
    }
    return false;
}

/* A JSON string in its quoted, escaped form. */
static void lg_put_quoted(FILE *out, const char *s)
{
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(q ? q : "\"\"", out);
    free(q);
    json_decref(j);
}

static void lg_put_value(FILE *out, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (lg_needs_quotes(s))
            lg_put_quoted(out, s);
        else
            fputs(s, out);
    } else if (json_is_integer(v)) {
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        fprintf(out, "%.15g", json_real_value(v));
    } else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fputs(s ? s : "?", out);
        free(s);
    }
}

static void lg_put_time(FILE *out, const char *ts)
{
    size_t n = strlen(ts);
    /* 2026-11-22T03:53:05.700421Z -> 03:53:05.700 */
    if (n >= 20 && ts[10] == 'T' && ts[13] == ':' && ts[16] == ':') {
        if (n >= 23 && ts[19] == '.')
            fprintf(out, "%.12s", ts + 11);
        else
            fprintf(out, "%.8s", ts + 11);
    } else {
        fputs(ts, out);
    }
}

static void lg_put_level(FILE *out, const char *level, bool color)
{
    int r = cli_log_level_rank(level);
    if (r < 0) {
        fprintf(out, "%-5s", level ? level : "-");
        return;
    }
    fprintf(out, "%s%s%s", color ? lg_level_colors[r] : "", lg_level_labels[r],
            color ? LG_RESET : "");
}

static void lg_put_ids(FILE *out, const json_t *line, bool color)
{
    const char *rid = lg_str(line, "request_id");
    const char *tenant = lg_str(line, "tenant");
    const char *trace = lg_str(line, "trace_id");
    if (rid == NULL && tenant == NULL && trace == NULL)
        return;
    fprintf(out, " %s[", color ? LG_DIM : "");
    const char *sep = "";
    if (rid) {
        fputs(rid, out);
        sep = " ";
    }
    if (tenant) {
        fprintf(out, "%s%s", sep, tenant);
        sep = " ";
    }
    if (trace)
        fprintf(out, "%s%.8s", sep, trace);
    fprintf(out, "]%s", color ? LG_RESET : "");
}

static bool lg_is_fixed(const char *key)
{
    for (size_t i = 0; i < sizeof(lg_fixed) / sizeof(lg_fixed[0]); i++) {
        if (strcmp(key, lg_fixed[i]) == 0)
            return true;
    }
    return false;
}

static void lg_put_pretty(FILE *out, const json_t *line, bool color)
{
    const char *ts = lg_str(line, "ts");
    fputs(color ? LG_DIM : "", out);
    lg_put_time(out, ts ? ts : "-");
    fputs(color ? LG_RESET " " : " ", out);
    lg_put_level(out, lg_str(line, "level"), color);
    lg_put_ids(out, line, color);
    const char *msg = lg_str(line, "msg");
    fputc(' ', out);
    /* A message is shown bare unless it would break the line. */
    if (msg && strpbrk(msg, "\n\r\t") != NULL)
        lg_put_quoted(out, msg);
    else
        fputs(msg ? msg : "", out);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)line, key, v)
    {
        if (lg_is_fixed(key))
            continue;
        fprintf(out, " %s%s=%s", color ? LG_DIM : "", key, color ? LG_RESET : "");
        lg_put_value(out, v);
    }
    fputc('\n', out);
}

int cli_logs_line_print(const struct cli_logs_opts *o, bool color, const char *line, size_t len,
                        FILE *out)
{
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr);
    int rc = 1;
    if (!json_is_object(j)) {
        if (lg_filtered(o)) {
            rc = 0;
            goto out_free;
        }
        if (fwrite(line, 1, len, out) != len || fputc('\n', out) == EOF)
            rc = -EIO;
        goto out_free;
    }
    if (!lg_passes(o, j)) {
        rc = 0;
        goto out_free;
    }
    lg_put_pretty(out, j, color);
    if (ferror(out))
        rc = -EIO;
out_free:
    json_decref(j);
    return rc;
}

/* ---- reading and following ------------------------------------------------------------------ */

struct lg_reader {
    const struct cli_logs_opts *o;
    bool color;
    int fd;
    dev_t dev;
    ino_t ino;
    off_t off; /* bytes read from fd since it was opened (or truncated) */
    char *buf; /* bytes read, not yet printed: at most one partial line */
    size_t len, cap;
};

static int lg_emit(struct lg_reader *r, const char *line, size_t len)
{
    int rc = cli_logs_line_print(r->o, r->color, line, len, stdout);
    return rc < 0 ? rc : 0;
}

/* Print every complete line in the buffer and keep the rest. */
static int lg_emit_lines(struct lg_reader *r)
{
    size_t start = 0;
    int rc = 0;
    for (;;) {
        char *nl = memchr(r->buf + start, '\n', r->len - start);
        if (nl == NULL)
            break;
        size_t n = (size_t)(nl - (r->buf + start));
        rc = lg_emit(r, r->buf + start, n);
        start += n + 1;
        if (rc != 0)
            break;
    }
    if (rc == 0 && r->len - start >= LG_LINE_MAX) {
        rc = lg_emit(r, r->buf + start, r->len - start);
        start = r->len;
    }
    memmove(r->buf, r->buf + start, r->len - start);
    r->len -= start;
    return rc;
}

/* The input of the current descriptor ended for good: print a last line without newline. */
static int lg_emit_partial(struct lg_reader *r)
{
    int rc = r->len ? lg_emit(r, r->buf, r->len) : 0;
    r->len = 0;
    return rc;
}

/* Read the descriptor to its current end, printing complete lines. Returns 0 or -errno. */
static int lg_drain(struct lg_reader *r)
{
    for (;;) {
        if (r->cap - r->len < LG_READ_MAX) {
            size_t cap = r->cap ? r->cap * 2 : 2 * LG_READ_MAX;
            char *nb = realloc(r->buf, cap);
            if (nb == NULL)
                return -ENOMEM;
            r->buf = nb;
            r->cap = cap;
        }
        ssize_t n = read(r->fd, r->buf + r->len, LG_READ_MAX);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 0;
        r->len += (size_t)n;
        r->off += n;
        int rc = lg_emit_lines(r);
        if (rc != 0)
            return rc;
    }
}

static int lg_open(struct lg_reader *r, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    r->fd = fd;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    r->off = 0;
    return 0;
}

/* Look at the path after reaching the end: rotated (another inode; the old one already drained)
 * -> print the old partial line, switch to the new file; truncated -> restart at 0. Returns 1
 * when there is something new to read at once, 0 when not, or -errno. */
static int lg_check_rotation(struct lg_reader *r)
{
    struct stat st;
    if (stat(r->o->path, &st) == 0 && (st.st_dev != r->dev || st.st_ino != r->ino)) {
        struct lg_reader fresh = *r;
        if (lg_open(&fresh, r->o->path) != 0)
            return 0; /* replaced again, or not readable yet: keep the old one, look later */
        int rc = lg_drain(r); /* what the writer appended before it reopened */
        if (rc == 0)
            rc = lg_emit_partial(r);
        close(r->fd);
        r->fd = fresh.fd;
        r->dev = fresh.dev;
        r->ino = fresh.ino;
        r->off = 0;
        return rc < 0 ? rc : 1;
    }
    if (fstat(r->fd, &st) == 0 && st.st_size < r->off) {
        int rc = lg_emit_partial(r);
        if (lseek(r->fd, 0, SEEK_SET) < 0)
            return -errno;
        r->off = 0;
        return rc < 0 ? rc : 1;
    }
    return 0;
}

/* Wait LG_POLL_MS for SIGINT/SIGTERM (blocked by the caller). True when one arrived. */
static bool lg_wait_stop(const sigset_t *stop)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = LG_POLL_MS * 1000000L};
    return sigtimedwait(stop, NULL, &ts) > 0;
}

/* Under -f with no file yet (r->fd < 0): open it once the path names one. Returns 1 when it is
 * open now, 0 when it still does not exist, or -errno (a file that exists but cannot be read). */
static int lg_open_late(struct lg_reader *r)
{
    int rc = lg_open(r, r->o->path);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    fprintf(stderr, "spindle: logs: %s has appeared; following it\n", r->o->path);
    return 1;
}

static int lg_follow(struct lg_reader *r)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    int rc = sigprocmask(SIG_BLOCK, &stop, NULL) != 0 ? -errno : 0;
    while (rc == 0) {
        if (r->fd < 0) {
            rc = lg_open_late(r);
            if (rc < 0)
                break;
            if (rc == 0) {
                if (lg_wait_stop(&stop))
                    break;
                continue;
            }
            rc = 0;
        }
        rc = lg_drain(r);
        if (rc != 0)
            break;
        rc = lg_check_rotation(r);
        if (rc > 0) {
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        if (fflush(stdout) != 0) {
            rc = -errno;
            break;
        }
        if (lg_wait_stop(&stop))
            break;
    }
    return rc;
}

static int lg_run(const struct cli_logs_opts *o)
{
    struct lg_reader r = {.o = o, .fd = STDIN_FILENO};
    r.color = o->color == CLI_COLOR_ALWAYS || (o->color == CLI_COLOR_AUTO && isatty(STDOUT_FILENO));
    bool from_file = o->path != NULL && strcmp(o->path, "-") != 0;
    int rc = from_file ? lg_open(&r, o->path) : 0;
    if (rc == -ENOENT && o->follow) {
        /* like tail -F: wait for the file (the server may not have created it yet) */
        fprintf(stderr, "spindle: logs: %s does not exist yet; waiting for it\n", o->path);
        r.fd = -1;
        rc = 0;
    }
    if (rc != 0) {
        fprintf(stderr, "spindle: logs: %s: %s\n", o->path, strerror(-rc));
        return CLI_EXIT_FAIL;
    }
    if (o->follow) {
        rc = lg_follow(&r);
    } else {
        rc = lg_drain(&r);
        if (rc == 0)
            rc = lg_emit_partial(&r);
    }
    if (from_file && r.fd >= 0)
        close(r.fd);
    free(r.buf);
    if (fflush(stdout) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0) {
        fprintf(stderr, "spindle: logs: %s: %s\n", from_file ? o->path : "standard input",
                strerror(-rc));
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

int cli_logs_main(int argc, char **argv)
{
    struct cli_logs_opts o;
    char err[256];
    if (cli_logs_args_parse(argc, argv, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: %s (see: spindle logs --help)\n", err);
        return CLI_EXIT_USAGE;
    }
    if (o.help) {
        fputs(lg_usage, stdout);
        return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    }
    return lg_run(&o);
}
