/* ops.h - helpers shared by the operations suites (stop, reload, rotation, systemd): reading a
 * log file strictly (every line complete JSON), rewriting the server's configuration file.
 *
 * Threads: none of these keep state; each call belongs to the calling thread.
 */
#ifndef SPINDLE_TEST_OPS_H
#define SPINDLE_TEST_OPS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "tests/integration/harness.h"

/* Wait up to `ms` (bounded poll) until the server process is in `state`, the letter of
 * /proc/PID/stat ('T': stopped by SIGSTOP). True when it is. */
bool ops_wait_state(const struct hs_server *s, char state, int ms);

/* True when the answer has header `name` with exactly the value `want`. */
bool ops_header_is(const struct hs_resp *r, const char *name, const char *want);

/* `dir`/`name` as a new string (caller frees), NULL when out of memory. */
char *ops_path(const char *dir, const char *name);

/* The whole file at `path` as a new NUL-terminated string (caller frees), NULL when it cannot be
 * read. */
char *ops_file_read(const char *path);

/* Every line of the file at `path` parsed as JSON (new reference to an array), strictly: *complete
 * is set false when a line is not a JSON object or the file does not end with a newline (a cut
 * line). NULL when the file cannot be read. */
json_t *ops_log_read(const char *path, bool *complete);

/* How many lines of `lines` have "msg" `msg` and, unless `id_prefix` is NULL, a "request_id"
 * starting with `id_prefix`. */
size_t ops_count(const json_t *lines, const char *msg, const char *id_prefix);

/* Rewrite the server's spindle.conf (in hs_dir(s)) with the harness's fixed settings (listen
 * 127.0.0.1:0, the same log file and task store, log.access on), log.level `level`, and `extra`
 * (borrowed INI text: sections other than [log] and [tasks], or NULL). Returns 0 or a negative
 * errno. */
int ops_config_rewrite(const struct hs_server *s, const char *level, const char *extra);

#endif
