/* config_internal.h - what server/config.c shares with server/config_kinds.c (the [kind.NAME]
 * sections) and server/config_schedules.c (the [schedule.NAME] sections), kept in their own files
 * so that config.c stays readable. Not for use elsewhere.
 */
#ifndef SPINDLE_CONFIG_INTERNAL_H
#define SPINDLE_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server/config.h"

#define CFGK_PREFIX "kind."

/* True when the section name (len bytes) is "kind.NAME"; *kname and *klen then point at NAME. */
bool srv_cfgk_section(const char *name, size_t len, const char **kname, size_t *klen);

/* The index of kind NAME's record, added when new (its section line `line` recorded); or -EINVAL
 * with msg filled (bad name, too many sections). */
int srv_cfgk_open(struct srv_cfg *cfg, const char *name, size_t len, unsigned line, char *msg,
                  size_t msz);

/* The index of kind NAME's record, or -1. */
int srv_cfgk_index(const struct srv_cfg *cfg, const char *name, size_t len);

/* Apply `key` (klen bytes) = value to kind `k`, set on `line` (0: not from a file). Returns 0,
 * -ENOENT (unknown key), -EEXIST (set before: msg names the line) or -EINVAL (msg). */
int srv_cfgk_key_apply(struct srv_cfg_kind *k, const char *key, size_t klen, const char *value,
                       unsigned line, char *msg, size_t msz);

/* The cross-key checks of every kind: exactly one of exec and module, exec-only keys on exec
 * kinds, timeout_ms within `cfg`'s max_timeout_ms. Returns the index of the first kind at fault
 * with *line (the key's line, else the section's), *key (NULL: the section) and msg filled; or
 * -1 when all is well. */
int srv_cfgk_check(const struct srv_cfg *cfg, unsigned *line, const char **key, char *msg,
                   size_t msz);

bool srv_cfgk_equal(const struct srv_cfg *a, const struct srv_cfg *b);
void srv_cfgk_print(const struct srv_cfg *cfg, FILE *out);
void srv_cfgk_diff(const struct srv_cfg *a, const struct srv_cfg *b, srv_cfg_diff_fn *fn,
                   void *arg);
void srv_cfgk_copy(struct srv_cfg *dst, const struct srv_cfg *src);
int srv_cfgk_key_reload(const char *key, enum srv_cfg_reload *out);

/* ---- from config.c ---- */

/* Format a message into msg (size bytes); returns -EINVAL. */
__attribute__((format(printf, 3, 4))) int srv_cfg_fail(char *msg, size_t size, const char *fmt,
                                                       ...);

/* True when `name` (len bytes) starts with `prefix` ("kind.", "schedule."); *rest and *rlen then
 * give what follows it. */
bool srv_cfg_prefixed(const char *name, size_t len, const char *prefix, const char **rest,
                      size_t *rlen);

/* A whole number in [min, max] into *out; or -EINVAL with msg filled (the messages of every
 * numeric key: "missing value", "value N out of range MIN..MAX", ...). */
int srv_cfg_uint_parse(const char *value, uint64_t min, uint64_t max, uint64_t *out, char *msg,
                       size_t msz);

/* ---- config_schedules.c ---- */

#define CFGS_PREFIX "schedule."

/* True when the section name (len bytes) is "schedule.NAME"; *sname and *slen then point at
 * NAME. */
bool srv_cfgs_section(const char *name, size_t len, const char **sname, size_t *slen);

/* The index of schedule NAME's record, added with its defaults (its section line `line`
 * recorded) when new; or -EINVAL with msg filled (bad name, too many sections). */
int srv_cfgs_open(struct srv_cfg *cfg, const char *name, size_t len, unsigned line, char *msg,
                  size_t msz);

/* The index of schedule NAME's record, or -1. */
int srv_cfgs_index(const struct srv_cfg *cfg, const char *name, size_t len);

/* Apply `key` (klen bytes) = value to schedule `sc`, set on `line` (0: not from a file, no
 * duplicate check). Returns 0, -ENOENT (unknown key), -EEXIST (set before: msg names the line)
 * or -EINVAL (msg). */
int srv_cfgs_key_apply(struct srv_cfg_schedule *sc, const char *key, size_t klen, const char *value,
                       unsigned line, char *msg, size_t msz);

/* The cross-key checks of every schedule: cron and kind set (blamed on the section's line), and
 * with [auth] mode = keys a tenant that has a [tenant.NAME] section (blamed on the tenant line,
 * else the section's). Returns the index of the first schedule at fault with *line, *key (NULL:
 * the section) and msg filled; or -1 when all is well. */
int srv_cfgs_check(const struct srv_cfg *cfg, unsigned *line, const char **key, char *msg,
                   size_t msz);

bool srv_cfgs_equal(const struct srv_cfg *a, const struct srv_cfg *b);
void srv_cfgs_print(const struct srv_cfg *cfg, FILE *out);
void srv_cfgs_diff(const struct srv_cfg *a, const struct srv_cfg *b, srv_cfg_diff_fn *fn,
                   void *arg);
void srv_cfgs_copy(struct srv_cfg *dst, const struct srv_cfg *src);
int srv_cfgs_key_reload(const char *key, enum srv_cfg_reload *out);

#endif
