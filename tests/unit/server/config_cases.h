/* config_cases.h - what the configuration suites share (test_config.c, test_config_kinds.c,
 * test_config_schedules.c): a private temporary directory for the files they load, and loading a
 * file's text with its expected outcome.
 *
 * The directory is made by tc_dir_init (a suite's init) and removed with everything in it by
 * tc_dir_cleanup (its cleanup); one suite at a time uses it.
 */
#ifndef SPINDLE_TEST_CONFIG_CASES_H
#define SPINDLE_TEST_CONFIG_CASES_H

#include <stdbool.h>
#include <stddef.h>

#include "server/config.h"

/* The directory of the running suite (valid between tc_dir_init and tc_dir_cleanup). */
const char *tc_dir_path(void);

/* A suite's init and cleanup: 0 on success. */
int tc_dir_init(void);
int tc_dir_cleanup(void);

/* Write `len` bytes (or the string) to a new file in the directory; returns its path (caller
 * frees). Asserts (fatally) that the file was written. */
char *tc_file_n(const char *content, size_t len);
char *tc_file(const char *content);

/* True when `err` is `path` followed by what `want` starts with; prints both when not. */
bool tc_err_is(const char *err, const char *path, const char *want);

/* Load `content` over a copy of the defaults; expect `rc` and, when `want` is set, an error that
 * starts with "PATH" followed by `want` (so ":3: [pool] workers: ..." checks the line too). A
 * failed load must leave the configuration untouched. */
void tc_expect(const char *content, int rc, const char *want);

/* Load `content` over the defaults into *out and expect success (the error is printed if not). */
void tc_expect_ok(const char *content, struct srv_cfg *out);

#endif
