/* harness.h - a running spindle server and a small HTTP/1.1 client for the integration suites.
 *
 * hs_start() writes a temporary config (listen 127.0.0.1:0, log file and task store in a temporary
 * directory, level debug, access lines on, plus the test's overrides), starts $SPINDLE_BIN on it
 * and waits for the "listening" log line, which carries the ephemeral port. hs_stop() sends SIGTERM
 * and waits, bounded, for the exit code: a server that leaks under AddressSanitizer exits non-zero,
 * and that fails the test. The log file is read back and parsed line by line with jansson.
 *
 * The client side is deliberately raw: a test writes exact bytes (malformed requests included)
 * and reads answers from a buffered connection, so pipelined answers and bytes the server should
 * never have sent are both visible. Every call is bounded by a timeout (poll), none sleeps.
 *
 * Threads: a struct hs_server and a struct hs_conn belong to one thread at a time.
 */
#ifndef SPINDLE_TEST_HARNESS_H
#define SPINDLE_TEST_HARNESS_H

#include <CUnit/CUnit.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Bounds used by the suites (milliseconds); sanitizer builds are slower, so they are generous. */
#define HS_START_MS 10000 /* server start-up, up to the "listening" line */
#define HS_STOP_MS  15000 /* SIGTERM to exit */
#define HS_IO_MS    5000  /* one answer */

struct hs_server;

/* ---- assertions for the suites -------------------------------------------------------------- */

/* Assert `cond` (evaluated once) and jump to the test's `out:` label when it is false: the
 * cleanup still runs (CU_ASSERT_FATAL would longjmp past it and leave a server running). */
#define HS_CHECK(cond)                                                                             \
    do {                                                                                           \
        bool hs_ok_ = (cond);                                                                      \
        CU_assertImplementation(hs_ok_, __LINE__, #cond, __FILE__, "", CU_FALSE);                  \
        if (!hs_ok_)                                                                               \
            goto out;                                                                              \
    } while (0)

/* Stop `s` (may be NULL: nothing to do), assert a clean exit (code 0: also no leak under
 * AddressSanitizer, no race under ThreadSanitizer) and free it. */
#define HS_FINISH(s)                                                                               \
    do {                                                                                           \
        if ((s) != NULL) {                                                                         \
            CU_ASSERT_EQUAL(hs_stop(s), 0);                                                        \
            hs_free(s);                                                                            \
        }                                                                                          \
    } while (0)

/* ---- the server ----------------------------------------------------------------------------- */

/* Start the server. `overrides` (borrowed, NULL-terminated, NULL = none) are "section.key=value"
 * strings that replace the harness defaults or add keys, e.g. "limits.max_headers=10" (a
 * "log.file=PATH" is where the log is then read from). Returns a
 * running server listening on 127.0.0.1 (its port in hs_port()), or NULL after printing why (the
 * server's stderr and log included) on stderr. */
struct hs_server *hs_start(const char *const *overrides);

/* hs_start with `extra` (borrowed, NULL-terminated, at most 12; NULL = none) command-line
 * arguments after "serve -c FILE", e.g. {"--log-level", "debug", NULL}. */
struct hs_server *hs_start_args(const char *const *overrides, const char *const *extra);

/* hs_start with the server's open file limits (RLIMIT_NOFILE) set to `soft` and `hard` (soft > 0,
 * hard >= soft, hard at most the test's own), through prlimit(1) from util-linux. */
struct hs_server *hs_start_nofile(const char *const *overrides, long soft, long hard);

/* hs_start for a log.file the harness cannot read (a device such as /dev/full, a FIFO the test
 * reads itself): the port is found from the process's listening socket (/proc) instead of the
 * "listening" line, and hs_log_lines() returns NULL. */
struct hs_server *hs_start_sink(const char *const *overrides);

/* Send SIGTERM, wait up to HS_STOP_MS and return the exit code (0 after a clean stop; 137 when it
 * had to be killed; negative errno when it could not be signalled). The server's stderr is printed
 * when the code is not 0. The object stays valid (log readable) until hs_free(). */
int hs_stop(struct hs_server *s);

/* Stop if still running (SIGKILL), remove the temporary directory, free. NULL is a no-op. */
void hs_free(struct hs_server *s);

/* The first port the server listens on (from its "listening" line). */
int hs_port(const struct hs_server *s);
/* The ADDR of the n-th "listening" line ("127.0.0.1:41235", "[::1]:40001"), NULL past the end. */
const char *hs_listen_addr(const struct hs_server *s, unsigned n);
/* The server's process id, and the temporary directory that holds its config and log. */
pid_t hs_pid(const struct hs_server *s);
const char *hs_dir(const struct hs_server *s);
/* What the server wrote on stderr so far (owned by s, valid until the next call). */
const char *hs_stderr(struct hs_server *s);
/* True while the server process runs (reaps it when it has exited). */
bool hs_alive(struct hs_server *s);
/* Wait up to `ms` for the server process to exit (a bounded poll of an external process). True
 * when it exited; the exit code is then read by hs_stop(). */
bool hs_wait_exit(struct hs_server *s, int ms);

/* ---- the server's log ----------------------------------------------------------------------- */

/* Every complete line of the log file parsed as JSON (lines that are not JSON objects are
 * skipped). New reference to an array; NULL when the file cannot be read. */
json_t *hs_log_lines(const struct hs_server *s);

/* Wait up to `timeout_ms` for a log line whose "msg" is `msg` and, unless `key` is NULL, whose
 * field `key` is the string `value`. The log is written by its own thread, so a line may appear
 * after the answer it describes. Returns a new reference to the first such line, or NULL. */
json_t *hs_log_wait(const struct hs_server *s, const char *msg, const char *key, const char *value,
                    int timeout_ms);

/* Wait up to `timeout_ms` for at least `n` lines with "msg" `msg`; returns how many were found
 * (fewer than `n` on timeout). */
size_t hs_log_wait_count(const struct hs_server *s, const char *msg, size_t n, int timeout_ms);

/* The string field `key` of `line` (borrowed), or NULL when absent or not a string. */
const char *hs_json_str(const json_t *line, const char *key);
/* The integer field `key` of `line`, or `dflt` when absent or not an integer. */
long long hs_json_int(const json_t *line, const char *key, long long dflt);

/* ---- the client ----------------------------------------------------------------------------- */

/* A client connection with its receive buffer (bytes read but not yet consumed). */
struct hs_conn {
    int fd;
    char *buf;
    size_t len, cap;
    bool eof;  /* the server closed (read returned 0) */
    int error; /* the last read error as a positive errno (ECONNRESET, ...), 0 when none */
};

/* One parsed answer. Header lines are kept as received in `head`; the body is NUL-terminated. */
struct hs_resp {
    int status;
    int minor;  /* HTTP/1.<minor> */
    char *head; /* status line and header lines, "\r\n" separated, NUL-terminated */
    char *body; /* body bytes (+ NUL), "" when none */
    size_t body_len;
};

/* Connect to `host` ("127.0.0.1" or "::1") port `port` within `timeout_ms`. Returns a new
 * connection (non-blocking socket) or NULL with errno set. */
struct hs_conn *hs_connect_host(const char *host, int port, int timeout_ms);
/* hs_connect_host("127.0.0.1", hs_port(s), HS_IO_MS). */
struct hs_conn *hs_connect(const struct hs_server *s);
/* Close the socket and free. NULL is a no-op. */
void hs_close(struct hs_conn *c);
/* Close with an RST instead of a FIN (SO_LINGER 0). NULL is a no-op. */
void hs_abort(struct hs_conn *c);

/* Send all `len` bytes within `timeout_ms`. Returns 0, -ETIMEDOUT, or a negative errno (-EPIPE,
 * -ECONNRESET when the server closed). */
int hs_send(struct hs_conn *c, const void *buf, size_t len, int timeout_ms);
/* hs_send of a NUL-terminated string with HS_IO_MS. */
int hs_send_str(struct hs_conn *c, const char *s);

/* Read one answer within `timeout_ms`. The body is framed by Content-Length, chunked coding, or
 * the end of the connection; `head_only` says the request was HEAD (no body whatever the headers
 * say). A "100 Continue" interim answer is returned like any other (status 100, no body). Bytes
 * after the answer stay buffered for the next call. Returns 0, -ETIMEDOUT, -ECONNRESET/-EPIPE
 * when the connection ended before a complete answer, -EPROTO when the bytes are not an HTTP
 * answer. *r must be zero-initialised or hold an earlier answer, which is released first; it is
 * filled on 0 only (zeroed otherwise). Release it with hs_resp_fini(). */
int hs_read_response(struct hs_conn *c, struct hs_resp *r, bool head_only, int timeout_ms);
void hs_resp_fini(struct hs_resp *r);

/* The value of the first header `name` (case-insensitive) copied into `out` (size bytes,
 * NUL-terminated, leading/trailing blanks removed). Returns true when present. */
bool hs_resp_header(const struct hs_resp *r, const char *name, char *out, size_t size);
/* Number of header lines named `name` (case-insensitive). */
int hs_resp_header_count(const struct hs_resp *r, const char *name);
/* The body parsed as JSON (new reference), NULL when it is not JSON. */
json_t *hs_resp_json(const struct hs_resp *r);
/* True when the body is a spindle JSON error with this code and a non-empty request_id. */
bool hs_resp_is_error(const struct hs_resp *r, int status, const char *code);

/* Read until the server closes (or resets) the connection, within `timeout_ms`. Returns 0 when it
 * closed (everything received stays in c->buf / c->len), -ETIMEDOUT when still open. */
int hs_read_until_close(struct hs_conn *c, int timeout_ms);

/* True when the server closes the connection within `timeout_ms` without sending anything more
 * than what is already buffered (bytes that do arrive are kept in the buffer and make it false). */
bool hs_closed_quietly(struct hs_conn *c, int timeout_ms);

/* Drop the first `n` buffered bytes. */
void hs_consume(struct hs_conn *c, size_t n);

/* Send `request` on `c` and read its answer (head_only when it starts with "HEAD "), HS_IO_MS. */
int hs_exchange(struct hs_conn *c, const char *request, struct hs_resp *r);

/* Convenience: connect, send `request`, read one answer (head_only for HEAD), close. Returns 0 or
 * what the steps returned. */
int hs_roundtrip(const struct hs_server *s, const char *request, struct hs_resp *r);

/* ---- misc ----------------------------------------------------------------------------------- */

/* Monotonic milliseconds. */
long long hs_now_ms(void);

/* True when this machine can bind a TCP socket to ::1 (IPv6 loopback). */
bool hs_have_ipv6(void);
/* For SPINDLE_TEST_UNLESS (tests/suite.h): NULL when hs_have_ipv6(), else why the test cannot run
 * (a static string); the test is then registered inactive and counted so, never as a pass. */
const char *hs_skip_no_ipv6(void);

/* Raise RLIMIT_NOFILE's soft limit to at least `want` (capped by the hard limit). Returns the
 * resulting soft limit. */
long hs_nofile_raise(long want);

#endif
