/* config.c - the server's configuration: compiled-in defaults, the INI file, overrides.
 *
 * Design: one table (cfg_keys) describes every setting: section, key, type, where it lives in
 * struct srv_cfg, its range and its default as text. Defaults, parsing, printing and comparison
 * all walk that table, so a setting added to the table is loaded, printed, compared and
 * defaulted at once (and a unit test checks the table against etc/spindle.conf).
 *
 * Loading a file: the file is read whole (at most CFG_FILE_MAX bytes) and pre-scanned line by
 * line before libinih sees it, because libinih cuts lines longer than its buffer silently, joins
 * indented lines to the previous value, and hands its callback no line numbers. The pre-scan
 * rejects over-long lines, continuation lines, malformed lines and unknown sections with their
 * line numbers, and records the line, section and key of every key line in order: the Nth
 * callback from ini_parse_string() is the Nth key line. A line the pre-scan refuses is blanked
 * (spaces, its newline kept) before libinih sees it, with the key line a continuation belongs to
 * and the key lines of a refused section, so parsing goes on and every error of the file is
 * reported, one "FILE:LINE: ..." line each, sorted by line (the first one is the first in the
 * file). An inline comment is `;` or `#` after a blank: libinih only knows `;`, so the pre-scan
 * blanks a `#` comment too. The cross-key checks run only on a file without other errors (their
 * verdict on half-applied values would mislead). Everything is applied to a scratch copy that
 * replaces the caller's only when the whole file and the cross-key checks passed: nothing is ever
 * half applied.
 *
 * The table's last column says what a reload does with a changed value (enum srv_cfg_reload):
 * reload.c asks this file which keys differ (srv_cfg_diff) and copies the live ones
 * (srv_cfg_copy_class), so no key name or offset is written twice. The [tenant.NAME] keys share
 * one class (CFG_TENANT) because a reload swaps the sections as a whole.
 *
 * Sections resolve through cfg_section_find(). Per-tenant sections ([tenant.NAME]) are a second
 * section class: the pre-scan validates NAME (as X-Tenant-Id is validated, and not "other", the
 * metrics label of unconfigured tenants) and gives each distinct name a record in
 * srv_cfg.tenants[] (at most SRV_CFG_MAX_TENANTS, in order of first appearance; a section may be
 * opened again, its keys still set once). Their keys come from a second, smaller table
 * (cfg_tenant_keys) whose offsets point into struct srv_tenant_limits; a record remembers which
 * keys it set, so unset keys inherit the [limits] defaults when the limits are resolved
 * (srv_cfg_tenant_limits), and print writes back exactly the keys that were set.
 *
 * The [kind.NAME] and [schedule.NAME] sections are a third and fourth class, each with its own
 * key table in its own file (config_kinds.c, config_schedules.c, through config_internal.h):
 * this file only routes their lines to them and runs their cross-key checks last.
 *
 * Threads: no global mutable state; every function is reentrant (SIGHUP reloads may run on the
 * loop thread while nothing else touches the same struct srv_cfg).
 */
#include "server/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "context/ctx.h"
#include "server/config_internal.h"

#define CFG_FILE_MAX (1024 * 1024) /* bytes of a configuration file */
#define CFG_LINE_MAX 199           /* libinih 55 keeps 199 bytes of a line and cuts the rest */
#define CFG_MSG_MAX  320

enum cfg_type {
    CFG_T_UINT,   /* unsigned */
    CFG_T_ULONG,  /* unsigned long */
    CFG_T_SIZE,   /* size_t */
    CFG_T_LEVEL,  /* enum log_level */
    CFG_T_POLICY, /* enum log_policy */
    CFG_T_BOOL,   /* bool */
    CFG_T_PATH,   /* char[SRV_CFG_PATH_MAX] */
    CFG_T_LISTEN, /* listen[] + listen_count */
    CFG_T_RATE,   /* double: a decimal with at most 3 fraction digits; min/max in whole units */
    CFG_T_CIDRS,  /* struct srv_cfg_cidrs: comma-separated networks */
    CFG_T_PATHS,  /* struct srv_cfg_paths: comma-separated request paths */
    CFG_T_ADDR,   /* char[SRV_CFG_ADDR_MAX]: "" or one listen address */
    CFG_T_MODE,   /* enum srv_cfg_auth_mode */
    CFG_T_KEYS,   /* struct srv_cfg_keys: comma-separated sha256:HEX digests, at most `max` */
};

struct cfg_key {
    const char *section;
    const char *key;
    enum cfg_type type;
    size_t offset;
    bool bytes; /* a size: K, M and G suffixes (powers of 1024) are accepted */
    uint64_t min, max;
    const char *def;            /* the default, as it is written in etc/spindle.conf */
    enum srv_cfg_reload reload; /* what a reload does when the value changed */
};

#define CFG_OFF(field) offsetof(struct srv_cfg, field)
#define CFG_NUM(sec, name, type, min, max, def, reload)                                            \
    {                                                                                              \
        sec, #name, type, CFG_OFF(name), false, min, max, def, reload                              \
    }
#define CFG_BYTES(sec, name, type, min, max, def, reload)                                          \
    {                                                                                              \
        sec, #name, type, CFG_OFF(name), true, min, max, def, reload                               \
    }
#define CFG_RESTART SRV_CFG_RESTART
#define CFG_LIVE    SRV_CFG_LIVE
#define CFG_ADM     SRV_CFG_LIVE_ADM
#define CFG_TENANT  CFG_ADM /* every [tenant.NAME] key: the sections are reloaded as a whole */

static const char *const cfg_sections[] = {"server", "pool",     "limits", "log",
                                           "auth",   "shutdown", "tasks"};

/* Print order is table order; sections appear in the order of cfg_sections. The last column says
 * what a reload does with a changed value (enum srv_cfg_reload; README's table repeats it). */
static const struct cfg_key cfg_keys[] = {
    {"server", "listen", CFG_T_LISTEN, 0, false, 0, 0, "127.0.0.1:8080", CFG_RESTART},
    CFG_NUM("server", backlog, CFG_T_UINT, 1, 65535, "511", CFG_RESTART),
    CFG_NUM("server", max_connections, CFG_T_UINT, 1, 1000000, "10000", CFG_LIVE),
    CFG_NUM("server", header_timeout_ms, CFG_T_UINT, 1, 3600000, "10000", CFG_LIVE),
    CFG_NUM("server", body_timeout_ms, CFG_T_UINT, 1, 3600000, "10000", CFG_LIVE),
    CFG_NUM("server", idle_timeout_ms, CFG_T_UINT, 1, 86400000, "60000", CFG_LIVE),
    CFG_NUM("server", write_timeout_ms, CFG_T_UINT, 1, 3600000, "30000", CFG_LIVE),
    CFG_NUM("server", max_keepalive_requests, CFG_T_UINT, 0, 1000000000, "0", CFG_LIVE),
    CFG_NUM("server", retry_hold_ms, CFG_T_UINT, 0, 10000, "100", CFG_LIVE),
    CFG_NUM("server", trusted_proxies, CFG_T_CIDRS, 0, 0, "", CFG_LIVE),
    CFG_NUM("server", admin_listen, CFG_T_ADDR, 0, 0, "", CFG_RESTART),

    CFG_NUM("pool", workers, CFG_T_UINT, 0, 1024, "0", CFG_RESTART),
    CFG_NUM("pool", queue_capacity, CFG_T_UINT, 1, 1048576, "1024", CFG_RESTART),
    CFG_NUM("pool", cancel_grace_ms, CFG_T_UINT, 1, 60000, "100", CFG_RESTART),

    CFG_BYTES("limits", max_request_line, CFG_T_UINT, 64, 1048576, "8192", CFG_LIVE),
    CFG_BYTES("limits", max_header_bytes, CFG_T_UINT, 256, 1048576, "16384", CFG_LIVE),
    CFG_NUM("limits", max_headers, CFG_T_UINT, 1, 1024, "64", CFG_LIVE),
    CFG_BYTES("limits", max_body_bytes, CFG_T_SIZE, 0, 1073741824, "1048576", CFG_LIVE),
    CFG_BYTES("limits", max_stream_bytes, CFG_T_SIZE, 0, 1099511627776, "17179869184", CFG_LIVE),
    CFG_BYTES("limits", max_pipeline_bytes, CFG_T_UINT, 0, 16777216, "65536", CFG_LIVE),
    CFG_NUM("limits", max_query_params, CFG_T_UINT, 1, 1024, "32", CFG_LIVE),
    CFG_NUM("limits", default_timeout_ms, CFG_T_UINT, 1, 86400000, "30000", CFG_LIVE),
    CFG_NUM("limits", max_timeout_ms, CFG_T_UINT, 1, 86400000, "60000", CFG_LIVE),
    CFG_NUM("limits", max_spin_ms, CFG_T_UINT, 1, 3600000, "60000", CFG_LIVE),
    CFG_NUM("limits", max_primes_n, CFG_T_ULONG, 1, 10000000000ULL, "100000000", CFG_LIVE),
    CFG_NUM("limits", max_sha256_rounds, CFG_T_ULONG, 1, 1000000000, "10000000", CFG_LIVE),
    CFG_NUM("limits", max_compress_level_zstd, CFG_T_UINT, 1, 19, "19", CFG_LIVE),
    CFG_NUM("limits", max_batch, CFG_T_UINT, 1, 1024, "64", CFG_LIVE),
    CFG_NUM("limits", max_inflight, CFG_T_UINT, 0, 1000000, "0", CFG_ADM),
    CFG_NUM("limits", rate, CFG_T_RATE, 0, 1000000, "0", CFG_ADM),
    CFG_NUM("limits", burst, CFG_T_UINT, 0, 1000000, "0", CFG_ADM),
    CFG_NUM("limits", weight, CFG_T_UINT, 1, 1000, "1", CFG_ADM),
    CFG_NUM("limits", max_tenants, CFG_T_UINT, 1, 1000000, "10000", CFG_RESTART),

    {"log", "level", CFG_T_LEVEL, CFG_OFF(log_level), false, 0, 0, "info", CFG_LIVE},
    {"log", "file", CFG_T_PATH, CFG_OFF(log_file), false, 0, 0, "", CFG_RESTART},
    {"log", "buffer_bytes", CFG_T_SIZE, CFG_OFF(log_buffer_bytes), true, 65536, 1073741824,
     "4194304", CFG_RESTART},
    {"log", "policy", CFG_T_POLICY, CFG_OFF(log_policy), false, 0, 0, "block", CFG_RESTART},
    {"log", "access", CFG_T_BOOL, CFG_OFF(log_access), false, 0, 0, "true", CFG_LIVE},
    CFG_NUM("log", access_skip, CFG_T_PATHS, 0, 0, "", CFG_LIVE),

    {"auth", "mode", CFG_T_MODE, CFG_OFF(auth_mode), false, 0, 0, "none", CFG_RESTART},
    {"auth", "allow_plaintext", CFG_T_BOOL, CFG_OFF(allow_plaintext), false, 0, 0, "false",
     CFG_RESTART},
    {"auth", "metrics_token", CFG_T_KEYS, CFG_OFF(metrics_token), false, 0, 1, "", CFG_LIVE},
    CFG_NUM("auth", throttle_failures, CFG_T_UINT, 0, 1000000, "10", CFG_LIVE),
    CFG_NUM("auth", throttle_window_ms, CFG_T_UINT, 1, 86400000, "60000", CFG_LIVE),
    CFG_NUM("auth", throttle_block_ms, CFG_T_UINT, 1, 86400000, "60000", CFG_LIVE),
    CFG_NUM("auth", throttle_addresses, CFG_T_UINT, 16, 1048576, "4096", CFG_RESTART),

    CFG_NUM("shutdown", drain_timeout_ms, CFG_T_UINT, 0, 3600000, "10000", CFG_LIVE),
    CFG_NUM("shutdown", announce_ms, CFG_T_UINT, 0, 3600000, "0", CFG_LIVE),

    {"tasks", "store", CFG_T_PATH, CFG_OFF(task_store), false, 0, 0, "spindle-tasks.db",
     CFG_RESTART},
    {"tasks", "lease_ms", CFG_T_UINT, CFG_OFF(task_lease_ms), false, 300, 30000, "30000",
     CFG_RESTART},
    {"tasks", "retention_ms", CFG_T_UINT, CFG_OFF(task_retention_ms), false, 100, 2592000000u,
     "86400000", CFG_RESTART},
    {"tasks", "max_result_bytes", CFG_T_SIZE, CFG_OFF(task_max_result_bytes), true, 0, 67108864,
     "1048576", CFG_LIVE},
    {"tasks", "max_unfinished", CFG_T_UINT, CFG_OFF(task_max_unfinished), false, 1, 100000000,
     "100000", CFG_LIVE},
    {"tasks", "worker_share", CFG_T_UINT, CFG_OFF(task_worker_share), false, 1, 100, "50",
     CFG_RESTART},
    {"tasks", "poll_ms", CFG_T_UINT, CFG_OFF(task_poll_ms), false, 50, 10000, "500", CFG_RESTART},
    {"tasks", "store_prepared", CFG_T_BOOL, CFG_OFF(task_store_prepared), false, 0, 0, "true",
     CFG_RESTART},
};

/* The keys of a [tenant.NAME] section: offsets into struct srv_cfg_tenant (the limits in its
 * `lim`), ranges as for the [limits] key of the same name. Bit i of srv_cfg_tenant.set is entry i
 * (SRV_CFG_TENANT_*). */
#define CFG_TOFF(field) offsetof(struct srv_cfg_tenant, lim.field)
#define CFG_LIM_OFF     offsetof(struct srv_cfg_tenant, lim)
static const struct cfg_key cfg_tenant_keys[] = {
    {"tenant", "max_inflight", CFG_T_UINT, CFG_TOFF(max_inflight), false, 0, 1000000, NULL,
     CFG_TENANT},
    {"tenant", "rate", CFG_T_RATE, CFG_TOFF(rate), false, 0, 1000000, NULL, CFG_TENANT},
    {"tenant", "burst", CFG_T_UINT, CFG_TOFF(burst), false, 0, 1000000, NULL, CFG_TENANT},
    {"tenant", "weight", CFG_T_UINT, CFG_TOFF(weight), false, 1, 1000, NULL, CFG_TENANT},
    {"tenant", "max_timeout_ms", CFG_T_UINT, CFG_TOFF(max_timeout_ms), false, 1, 86400000, NULL,
     CFG_TENANT},
    {"tenant", "keys", CFG_T_KEYS, offsetof(struct srv_cfg_tenant, keys), false, 0,
     SRV_CFG_MAX_KEYS, NULL, CFG_TENANT},
};

#define CFG_TENANT_PREFIX "tenant."
#define CFG_NKEYS         (sizeof(cfg_keys) / sizeof(cfg_keys[0]))
#define CFG_NTKEYS        (sizeof(cfg_tenant_keys) / sizeof(cfg_tenant_keys[0]))
#define CFG_NSECTIONS     (sizeof(cfg_sections) / sizeof(cfg_sections[0]))

_Static_assert(CFG_NTKEYS < 32, "srv_cfg_tenant.set has a bit per tenant key");

/* Longest log file path that still fits on one line as "file = PATH". */
#define CFG_PATH_LEN_MAX (CFG_LINE_MAX - sizeof("file = ") + 1)

/* ---- messages ---------------------------------------------------------------------------- */

/* "ORIGIN[:LINE]: [SECTION] KEY: MESSAGE" into err (size bytes, may be 0); the line, section
 * and key are left out when 0 or NULL. */
static void cfg_err(char *err, size_t size, const char *origin, unsigned line, const char *section,
                    int section_len, const char *key, int key_len, const char *msg)
{
    if (err == NULL || size == 0)
        return;
    char where[32] = "";
    if (line > 0)
        snprintf(where, sizeof(where), ":%u", line);
    if (section == NULL && key == NULL)
        snprintf(err, size, "%s%s: %s", origin, where, msg);
    else if (section == NULL)
        snprintf(err, size, "%s%s: %.*s: %s", origin, where, key_len, key, msg);
    else if (key == NULL)
        snprintf(err, size, "%s%s: [%.*s]: %s", origin, where, section_len, section, msg);
    else
        snprintf(err, size, "%s%s: [%.*s] %.*s: %s", origin, where, section_len, section, key_len,
                 key, msg);
}

int srv_cfg_fail(char *msg, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

bool srv_cfg_prefixed(const char *name, size_t len, const char *prefix, const char **rest,
                      size_t *rlen)
{
    size_t plen = strlen(prefix);
    if (len < plen || memcmp(name, prefix, plen) != 0)
        return false;
    *rest = name + plen;
    *rlen = len - plen;
    return true;
}

/* ---- values ------------------------------------------------------------------------------ */

/* A whole number, optionally with a K/M/G suffix (powers of 1024) when `bytes`. */
static int cfg_u64_parse(const char *s, bool bytes, uint64_t *out, bool *overflow, char *msg,
                         size_t msz)
{
    uint64_t v = 0;
    const char *p = s;
    *overflow = false;
    if (*s == '\0')
        return srv_cfg_fail(msg, msz, "missing value");
    if (*s == '-')
        return srv_cfg_fail(msg, msz, "negative value \"%.80s\" is not allowed", s);
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            v = v * 10 + d;
    }
    uint64_t mult = 1;
    if (bytes && p != s && *p != '\0' && p[1] == '\0') {
        const char *suffixes = "KMG";
        const char *hit = strchr(suffixes, toupper((unsigned char)*p));
        if (hit != NULL) {
            mult = 1ULL << (10 * (unsigned)(hit - suffixes + 1));
            p++;
        }
    }
    if (p == s || *p != '\0')
        return srv_cfg_fail(msg, msz, "expected a whole number%s, got \"%.80s\"",
                            bytes ? " (optionally with K, M or G)" : "", s);
    if (v > UINT64_MAX / mult)
        *overflow = true;
    *out = v * mult;
    return 0;
}

/* A whole number (with K/M/G when `bytes`) in [min, max]. */
static int cfg_range_parse(const char *value, bool bytes, uint64_t min, uint64_t max, uint64_t *out,
                           char *msg, size_t msz)
{
    bool overflow = false;
    int rc = cfg_u64_parse(value, bytes, out, &overflow, msg, msz);
    if (rc != 0)
        return rc;
    if (overflow || *out < min || *out > max)
        return srv_cfg_fail(msg, msz, "value %.80s out of range %" PRIu64 "..%" PRIu64, value, min,
                            max);
    return 0;
}

int srv_cfg_uint_parse(const char *value, uint64_t min, uint64_t max, uint64_t *out, char *msg,
                       size_t msz)
{
    return cfg_range_parse(value, false, min, max, out, msg, msz);
}

static int cfg_num_apply(const struct cfg_key *k, void *field, const char *value, char *msg,
                         size_t msz)
{
    uint64_t v = 0;
    int rc = cfg_range_parse(value, k->bytes, k->min, k->max, &v, msg, msz);
    if (rc != 0)
        return rc;
    if (k->type == CFG_T_UINT)
        *(unsigned *)field = (unsigned)v;
    else if (k->type == CFG_T_ULONG)
        *(unsigned long *)field = (unsigned long)v;
    else
        *(size_t *)field = (size_t)v;
    return 0;
}

/* "12", "0.5", "2.125": a whole number of thousandths, so print and load round-trip exactly. */
static int cfg_rate_apply(const struct cfg_key *k, double *field, const char *value, char *msg,
                          size_t msz)
{
    char whole[32];
    const char *dot = strchr(value, '.');
    size_t wlen = dot ? (size_t)(dot - value) : strlen(value);
    size_t flen = dot ? strlen(dot + 1) : 0;
    if (wlen >= sizeof(whole) || (dot != NULL && (flen == 0 || flen > 3)))
        return srv_cfg_fail(msg, msz, "expected a number with at most 3 decimals, got \"%.80s\"",
                            value);
    memcpy(whole, value, wlen);
    whole[wlen] = '\0';
    uint64_t w = 0, frac = 0;
    bool overflow = false;
    int rc = cfg_u64_parse(whole, false, &w, &overflow, msg, msz);
    if (rc != 0 && (*value == '-' || *value == '\0'))
        return rc; /* "negative value" and "missing value" say it best */
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        char c = i < flen ? dot[1 + i] : '0';
        if (!isdigit((unsigned char)c))
            rc = -EINVAL;
        frac = frac * 10 + (uint64_t)(c - '0');
    }
    if (rc != 0)
        return srv_cfg_fail(msg, msz, "expected a number with at most 3 decimals, got \"%.80s\"",
                            value);
    if (overflow || w > k->max || (w == k->max && frac > 0) || w < k->min)
        return srv_cfg_fail(msg, msz, "value %.80s out of range %" PRIu64 "..%" PRIu64, value,
                            k->min, k->max);
    *field = (double)(w * 1000 + frac) / 1000.0;
    return 0;
}

static void cfg_rate_print(double v, FILE *out)
{
    uint64_t milli = (uint64_t)llround(v * 1000.0);
    if (milli % 1000 == 0) {
        fprintf(out, " %" PRIu64 "\n", milli / 1000);
        return;
    }
    char frac[8];
    snprintf(frac, sizeof(frac), "%03u", (unsigned)(milli % 1000));
    for (size_t n = strlen(frac); n > 1 && frac[n - 1] == '0'; n--)
        frac[n - 1] = '\0';
    fprintf(out, " %" PRIu64 ".%s\n", milli / 1000, frac);
}

static int cfg_port_parse(const char *s, char *msg, size_t msz)
{
    unsigned port = 0;
    const char *p = s;
    for (; isdigit((unsigned char)*p) && p - s < 6; p++)
        port = port * 10 + (unsigned)(*p - '0');
    if (p == s || *p != '\0' || port > 65535)
        return srv_cfg_fail(msg, msz, "bad port \"%.16s\" (expected 0..65535)", s);
    return 0;
}

/* "A.B.C.D:PORT" or "[V6]:PORT", numeric addresses only (no name lookups at start-up). */
static int cfg_addr_check(const char *addr, char *msg, size_t msz)
{
    char host[SRV_CFG_ADDR_MAX];
    unsigned char bin[16];
    const char *port;
    int family = AF_INET;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':')
            return srv_cfg_fail(msg, msz, "bad address \"%s\" (expected [IPV6]:PORT)", addr);
        snprintf(host, sizeof(host), "%.*s", (int)(close - addr - 1), addr + 1);
        port = close + 2;
        family = AF_INET6;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL)
            return srv_cfg_fail(msg, msz, "bad address \"%s\" (expected HOST:PORT)", addr);
        if (memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return srv_cfg_fail(msg, msz, "bad address \"%s\" (write IPv6 as [ADDR]:PORT)", addr);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
        port = colon + 1;
    }
    if (inet_pton(family, host, bin) != 1)
        return srv_cfg_fail(msg, msz, "bad address \"%s\" (\"%s\" is not a numeric IPv%c address)",
                            addr, host, family == AF_INET ? '4' : '6');
    char pmsg[64];
    if (cfg_port_parse(port, pmsg, sizeof(pmsg)) != 0)
        return srv_cfg_fail(msg, msz, "bad address \"%s\": %s", addr, pmsg);
    return 0;
}

static int cfg_listen_apply(struct srv_cfg *cfg, const char *value, char *msg, size_t msz)
{
    char addrs[SRV_CFG_MAX_LISTEN][SRV_CFG_ADDR_MAX];
    unsigned n = 0;
    const char *p = value;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && isspace((unsigned char)*p))
            p++, len--;
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0)
            return srv_cfg_fail(msg, msz, "empty address in \"%.80s\"", value);
        if (n == SRV_CFG_MAX_LISTEN)
            return srv_cfg_fail(msg, msz, "too many addresses (at most %d)", SRV_CFG_MAX_LISTEN);
        if (len >= SRV_CFG_ADDR_MAX)
            return srv_cfg_fail(msg, msz, "address \"%.*s\" longer than %d bytes", (int)len, p,
                                SRV_CFG_ADDR_MAX - 1);
        memcpy(addrs[n], p, len);
        addrs[n][len] = '\0';
        int rc = cfg_addr_check(addrs[n], msg, msz);
        if (rc != 0)
            return rc;
        n++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    memcpy(cfg->listen, addrs, sizeof(addrs[0]) * n);
    cfg->listen_count = n;
    return 0;
}

/* A path must survive print and load unchanged: one line, no blanks at its ends, no " ;". */
static int cfg_path_apply(char *field, const char *value, char *msg, size_t msz)
{
    size_t len = strlen(value);
    if (len > CFG_PATH_LEN_MAX)
        return srv_cfg_fail(msg, msz, "path longer than %zu bytes", (size_t)CFG_PATH_LEN_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (iscntrl(c))
            return srv_cfg_fail(msg, msz, "control character in path");
        if (c == ';' && i > 0 && isspace((unsigned char)value[i - 1]))
            return srv_cfg_fail(msg, msz,
                                "\";\" after a blank starts a comment; not allowed in path");
    }
    if (len > 0 && (isspace((unsigned char)value[0]) || isspace((unsigned char)value[len - 1])))
        return srv_cfg_fail(msg, msz, "path starts or ends with a blank");
    memcpy(field, value, len + 1);
    return 0;
}

/* The next comma-separated item of *p (blanks trimmed) into *item / *len; false at the end. */
static bool cfg_list_next(const char **p, const char **item, size_t *len)
{
    const char *s = *p;
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '\0')
        return false;
    const char *end = strchr(s, ',');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    *p = end ? end + 1 : s + n;
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    *item = s;
    *len = n;
    return true;
}

int srv_cfg_cidr_parse(const char *text, size_t len, struct srv_cfg_cidr *out)
{
    char host[INET6_ADDRSTRLEN];
    const char *slash = memchr(text, '/', len);
    size_t hlen = slash ? (size_t)(slash - text) : len;
    if (hlen == 0 || hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    struct srv_cfg_cidr c = {0};
    if (inet_pton(AF_INET, host, c.addr) == 1)
        c.family = 4;
    else if (inet_pton(AF_INET6, host, c.addr) == 1)
        c.family = 6;
    else
        return -EINVAL;
    unsigned max = c.family == 4 ? 32 : 128, bits = max;
    if (slash != NULL) {
        const char *b = slash + 1, *end = text + len;
        if (b == end || end - b > 3)
            return -EINVAL;
        for (bits = 0; b < end; b++) {
            if (!isdigit((unsigned char)*b))
                return -EINVAL;
            bits = bits * 10 + (unsigned)(*b - '0');
        }
        if (bits > max)
            return -EINVAL;
    }
    c.bits = (unsigned char)bits;
    for (unsigned i = 0; i < max / 8; i++) { /* clear the host bits: one form per network */
        unsigned keep = bits > i * 8 ? bits - i * 8 : 0;
        if (keep < 8)
            c.addr[i] &= (unsigned char)(0xff00u >> keep);
    }
    *out = c;
    return 0;
}

bool srv_cfg_cidr_match(const struct srv_cfg_cidr *net, unsigned char family,
                        const unsigned char *addr)
{
    if (net->family != family)
        return false;
    unsigned full = net->bits / 8, rest = net->bits % 8;
    if (memcmp(net->addr, addr, full) != 0)
        return false;
    return rest == 0 || ((net->addr[full] ^ addr[full]) & (0xff00u >> rest) & 0xff) == 0;
}

static int cfg_cidrs_apply(struct srv_cfg_cidrs *field, const char *value, char *msg, size_t msz)
{
    struct srv_cfg_cidrs set = {0};
    const char *p = value, *item;
    size_t len;
    while (cfg_list_next(&p, &item, &len)) {
        if (set.count == SRV_CFG_MAX_CIDRS)
            return srv_cfg_fail(msg, msz, "too many networks (at most %d)", SRV_CFG_MAX_CIDRS);
        if (len == 0 || srv_cfg_cidr_parse(item, len, &set.net[set.count]) != 0)
            return srv_cfg_fail(msg, msz,
                                "bad network \"%.*s\" (expected ADDR or ADDR/BITS, IPv4 or IPv6)",
                                (int)(len < 80 ? len : 80), item);
        set.count++;
    }
    *field = set;
    return 0;
}

static int cfg_paths_apply(struct srv_cfg_paths *field, const char *value, char *msg, size_t msz)
{
    struct srv_cfg_paths set = {0};
    const char *p = value, *item;
    size_t len;
    while (cfg_list_next(&p, &item, &len)) {
        if (set.count == SRV_CFG_MAX_SKIP)
            return srv_cfg_fail(msg, msz, "too many paths (at most %d)", SRV_CFG_MAX_SKIP);
        if (len == 0 || item[0] != '/' || len >= SRV_CFG_SKIP_MAX)
            return srv_cfg_fail(msg, msz, "bad path \"%.*s\" (expected /PATH, at most %d bytes)",
                                (int)(len < 80 ? len : 80), item, SRV_CFG_SKIP_MAX - 1);
        for (size_t i = 0; i < len; i++) {
            if (isspace((unsigned char)item[i]) || iscntrl((unsigned char)item[i]) ||
                item[i] == ';')
                return srv_cfg_fail(msg, msz, "bad path \"%.*s\" (blank or control character)",
                                    (int)(len < 80 ? len : 80), item);
        }
        memcpy(set.path[set.count++], item, len);
    }
    *field = set;
    return 0;
}

/* "" (none) or one address as [server] listen takes it. */
static int cfg_addr_apply(char *field, const char *value, char *msg, size_t msz)
{
    size_t len = strlen(value);
    if (len >= SRV_CFG_ADDR_MAX)
        return srv_cfg_fail(msg, msz, "address longer than %d bytes", SRV_CFG_ADDR_MAX - 1);
    if (len > 0 && cfg_addr_check(value, msg, msz) != 0)
        return -EINVAL;
    memcpy(field, value, len + 1);
    return 0;
}

static const char *const cfg_mode_names[] = {
    [SRV_CFG_AUTH_NONE] = "none", [SRV_CFG_AUTH_KEYS] = "keys", [SRV_CFG_AUTH_PROXY] = "proxy"};

static int cfg_mode_apply(enum srv_cfg_auth_mode *field, const char *value, char *msg, size_t msz)
{
    for (size_t i = 0; i < sizeof(cfg_mode_names) / sizeof(cfg_mode_names[0]); i++) {
        if (strcmp(value, cfg_mode_names[i]) == 0) {
            *field = (enum srv_cfg_auth_mode)i;
            return 0;
        }
    }
    return srv_cfg_fail(msg, msz, "expected none, keys or proxy, got \"%.80s\"", value);
}

static int cfg_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "sha256:" and 64 hex digits (len bytes of `s`) into a digest. Only a hash is ever accepted:
 * the file must not hold a secret (spindle keygen prints the line). */
static int cfg_digest_parse(const char *s, size_t len, unsigned char *out)
{
    static const char prefix[] = "sha256:";
    size_t plen = sizeof(prefix) - 1;
    if (len != plen + 2 * SRV_CFG_DIGEST || memcmp(s, prefix, plen) != 0)
        return -EINVAL;
    for (size_t i = 0; i < SRV_CFG_DIGEST; i++) {
        int hi = cfg_hex_digit(s[plen + 2 * i]), lo = cfg_hex_digit(s[plen + 2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* Comma-separated sha256:HEX digests, at most k->max, none repeated; "" = none. */
static int cfg_keys_apply(const struct cfg_key *k, struct srv_cfg_keys *field, const char *value,
                          char *msg, size_t msz)
{
    struct srv_cfg_keys set = {0};
    const char *p = value, *item;
    size_t len;
    while (cfg_list_next(&p, &item, &len)) {
        if (set.count == k->max)
            return srv_cfg_fail(msg, msz, "too many keys (at most %u)", (unsigned)k->max);
        if (cfg_digest_parse(item, len, set.digest[set.count]) != 0)
            return srv_cfg_fail(msg, msz,
                                "expected sha256:<64 hex digits> (a hash, never the token itself; "
                                "spindle keygen prints it)");
        for (unsigned i = 0; i < set.count; i++) {
            if (memcmp(set.digest[i], set.digest[set.count], SRV_CFG_DIGEST) == 0)
                return srv_cfg_fail(msg, msz, "the same key is listed twice");
        }
        set.count++;
    }
    *field = set;
    return 0;
}

static void cfg_keys_print(const struct srv_cfg_keys *set, FILE *out)
{
    for (unsigned i = 0; i < set->count; i++) {
        fprintf(out, "%ssha256:", i ? ", " : " ");
        for (size_t j = 0; j < SRV_CFG_DIGEST; j++)
            fprintf(out, "%02x", set->digest[i][j]);
    }
    fputc('\n', out);
}

bool srv_cfg_addr_loopback(const char *addr)
{
    char host[SRV_CFG_ADDR_MAX];
    unsigned char bin[16];
    const char *end = addr[0] == '[' ? strchr(addr, ']') : strrchr(addr, ':');
    const char *start = addr[0] == '[' ? addr + 1 : addr;
    if (end == NULL || end < start || (size_t)(end - start) >= sizeof(host))
        return false;
    snprintf(host, sizeof(host), "%.*s", (int)(end - start), start);
    if (inet_pton(AF_INET, host, bin) == 1)
        return bin[0] == 127;
    static const unsigned char v6_loop[16] = {[15] = 1};
    static const unsigned char v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (inet_pton(AF_INET6, host, bin) != 1)
        return false;
    return memcmp(bin, v6_loop, 16) == 0 || (memcmp(bin, v4_mapped, 12) == 0 && bin[12] == 127);
}

static int cfg_key_apply(const struct cfg_key *k, struct srv_cfg *cfg, const char *value, char *msg,
                         size_t msz)
{
    void *field = (char *)cfg + k->offset;
    switch (k->type) {
    case CFG_T_UINT:
    case CFG_T_ULONG:
    case CFG_T_SIZE:
        return cfg_num_apply(k, field, value, msg, msz);
    case CFG_T_LEVEL:
        if (log_level_parse(value, field) != 0)
            return srv_cfg_fail(msg, msz,
                                "expected trace, debug, info, warn, error or fatal, got \"%.80s\"",
                                value);
        return 0;
    case CFG_T_POLICY:
        if (strcmp(value, "block") == 0)
            *(enum log_policy *)field = LOG_POLICY_BLOCK;
        else if (strcmp(value, "drop") == 0)
            *(enum log_policy *)field = LOG_POLICY_DROP;
        else
            return srv_cfg_fail(msg, msz, "expected block or drop, got \"%.80s\"", value);
        return 0;
    case CFG_T_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0)
            *(bool *)field = false;
        else
            return srv_cfg_fail(msg, msz, "expected true or false (yes or no), got \"%.80s\"",
                                value);
        return 0;
    case CFG_T_PATH:
        return cfg_path_apply(field, value, msg, msz);
    case CFG_T_LISTEN:
        return cfg_listen_apply(cfg, value, msg, msz);
    case CFG_T_RATE:
        return cfg_rate_apply(k, field, value, msg, msz);
    case CFG_T_CIDRS:
        return cfg_cidrs_apply(field, value, msg, msz);
    case CFG_T_PATHS:
        return cfg_paths_apply(field, value, msg, msz);
    case CFG_T_ADDR:
        return cfg_addr_apply(field, value, msg, msz);
    case CFG_T_MODE:
        return cfg_mode_apply(field, value, msg, msz);
    case CFG_T_KEYS:
        return cfg_keys_apply(k, field, value, msg, msz);
    }
    abort(); /* a table entry with no type: broken invariant */
}

/* ---- lookups and checks -------------------------------------------------------------------- */

static bool cfg_section_find(const char *name, size_t len)
{
    for (size_t i = 0; i < CFG_NSECTIONS; i++) {
        if (strlen(cfg_sections[i]) == len && memcmp(cfg_sections[i], name, len) == 0)
            return true;
    }
    return false;
}

static const struct cfg_key *cfg_key_find(const char *section, size_t slen, const char *key,
                                          size_t klen)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (strlen(k->section) == slen && memcmp(k->section, section, slen) == 0 &&
            strlen(k->key) == klen && memcmp(k->key, key, klen) == 0)
            return k;
    }
    return NULL;
}

/* ---- tenant sections ---------------------------------------------------------------------- */

/* True when the section name (len bytes) is "tenant.NAME"; *tname and *tlen then point at NAME. */
static bool cfg_tenant_section(const char *name, size_t len, const char **tname, size_t *tlen)
{
    return srv_cfg_prefixed(name, len, CFG_TENANT_PREFIX, tname, tlen);
}

static int cfg_tenant_index(const struct srv_cfg *cfg, const char *name, size_t len)
{
    for (unsigned i = 0; i < cfg->tenant_count; i++) {
        if (strlen(cfg->tenants[i].name) == len && memcmp(cfg->tenants[i].name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* The index of tenant NAME's record, added when new; or -EINVAL with msg filled. */
static int cfg_tenant_open(struct srv_cfg *cfg, const char *name, size_t len, char *msg, size_t msz)
{
    int i = cfg_tenant_index(cfg, name, len);
    if (i >= 0)
        return i;
    if (len > CTX_TENANT_MAX || !ctx_tenant_valid(name, len))
        return srv_cfg_fail(msg, msz, "invalid tenant name (1..%d bytes of A-Z a-z 0-9 . _ -)",
                            CTX_TENANT_MAX);
    if (len == strlen(SRV_CFG_TENANT_RESERVED) && memcmp(name, SRV_CFG_TENANT_RESERVED, len) == 0)
        return srv_cfg_fail(msg, msz,
                            "tenant name \"%s\" is reserved (the label of every tenant "
                            "without a section)",
                            SRV_CFG_TENANT_RESERVED);
    if (cfg->tenant_count == SRV_CFG_MAX_TENANTS)
        return srv_cfg_fail(msg, msz, "too many tenant sections (at most %d)", SRV_CFG_MAX_TENANTS);
    struct srv_cfg_tenant *t = &cfg->tenants[cfg->tenant_count];
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, len);
    return (int)cfg->tenant_count++;
}

static const struct cfg_key *cfg_tenant_key_find(const char *key, size_t klen)
{
    for (size_t i = 0; i < CFG_NTKEYS; i++) {
        if (strlen(cfg_tenant_keys[i].key) == klen &&
            memcmp(cfg_tenant_keys[i].key, key, klen) == 0)
            return &cfg_tenant_keys[i];
    }
    return NULL;
}

static int cfg_tenant_key_apply(const struct cfg_key *k, struct srv_cfg_tenant *t,
                                const char *value, char *msg, size_t msz)
{
    void *field = (char *)t + k->offset;
    int rc = k->type == CFG_T_RATE   ? cfg_rate_apply(k, field, value, msg, msz)
             : k->type == CFG_T_KEYS ? cfg_keys_apply(k, field, value, msg, msz)
                                     : cfg_num_apply(k, field, value, msg, msz);
    if (rc == 0)
        t->set |= 1u << (k - cfg_tenant_keys);
    return rc;
}

/* A tenant's max_timeout_ms above [limits] max_timeout_ms could never apply (every deadline is
 * capped by the latter first): refused, so a section never promises what it cannot give. Returns
 * the index of the first tenant at fault with msg filled, or -1. */
static int cfg_tenant_check(const struct srv_cfg *cfg, char *msg, size_t msz)
{
    for (unsigned i = 0; i < cfg->tenant_count; i++) {
        const struct srv_cfg_tenant *t = &cfg->tenants[i];
        if ((t->set & SRV_CFG_TENANT_MAX_TIMEOUT_MS) &&
            t->lim.max_timeout_ms > cfg->max_timeout_ms) {
            snprintf(msg, msz,
                     "[tenant.%s] max_timeout_ms (%u) exceeds [limits] max_timeout_ms (%u)",
                     t->name, t->lim.max_timeout_ms, cfg->max_timeout_ms);
            return (int)i;
        }
    }
    return -1;
}

/* A key's index in cfg_keys (the key exists: a broken table aborts). */
static int cfg_key_index(const char *section, const char *key)
{
    const struct cfg_key *k = cfg_key_find(section, strlen(section), key, strlen(key));
    if (k == NULL)
        abort();
    return (int)(k - cfg_keys);
}

/* The later in the file of keys ia and ib (ia without lines). */
static int cfg_later(const unsigned *lines, int ia, int ib)
{
    return (lines != NULL && lines[ib] > lines[ia]) ? ib : ia;
}

/* [auth] mode against where spindle listens: credentials sent in clear over a network need a TLS
 * front end (trusted_proxies names it) or an explicit allow_plaintext; proxy mode without a
 * trusted proxy could never name a tenant. Returns the key to blame or -1. */
static int cfg_auth_check(const struct srv_cfg *cfg, const unsigned *lines, char *msg, size_t msz)
{
    int im = cfg_key_index("auth", "mode");
    if (cfg->auth_mode == SRV_CFG_AUTH_PROXY && cfg->trusted_proxies.count == 0) {
        snprintf(msg, msz,
                 "mode = proxy needs [server] trusted_proxies (the front end that "
                 "authenticates clients)");
        return cfg_later(lines, im, cfg_key_index("server", "trusted_proxies"));
    }
    if (cfg->auth_mode != SRV_CFG_AUTH_KEYS || cfg->allow_plaintext ||
        cfg->trusted_proxies.count > 0)
        return -1;
    for (unsigned i = 0; i < cfg->listen_count; i++) {
        if (!srv_cfg_addr_loopback(cfg->listen[i])) {
            snprintf(msg, msz,
                     "mode = keys on the non-loopback address %s sends tokens in clear: put a "
                     "TLS front end before it ([server] trusted_proxies) or set [auth] "
                     "allow_plaintext = yes",
                     cfg->listen[i]);
            return cfg_later(lines, im, cfg_key_index("server", "listen"));
        }
    }
    return -1;
}

/* One credential for one tenant: a key listed in two sections (or equal to [auth]
 * metrics_token) would make the tenant it proves a matter of order. Returns the index of the
 * later tenant at fault with msg filled, or -1. */
static int cfg_tenant_keys_check(const struct srv_cfg *cfg, char *msg, size_t msz)
{
    for (unsigned i = 0; i < cfg->tenant_count; i++) {
        const struct srv_cfg_keys *ki = &cfg->tenants[i].keys;
        for (unsigned k = 0; k < ki->count; k++) {
            if (cfg->metrics_token.count > 0 &&
                memcmp(ki->digest[k], cfg->metrics_token.digest[0], SRV_CFG_DIGEST) == 0) {
                snprintf(msg, msz, "a key of [tenant.%s] is also [auth] metrics_token",
                         cfg->tenants[i].name);
                return (int)i;
            }
            for (unsigned j = 0; j < i; j++) {
                const struct srv_cfg_keys *kj = &cfg->tenants[j].keys;
                for (unsigned m = 0; m < kj->count; m++) {
                    if (memcmp(ki->digest[k], kj->digest[m], SRV_CFG_DIGEST) != 0)
                        continue;
                    snprintf(msg, msz, "a key of [tenant.%s] is also a key of [tenant.%s]",
                             cfg->tenants[i].name, cfg->tenants[j].name);
                    return (int)i;
                }
            }
        }
    }
    return -1;
}

/* Settings that depend on each other. Returns the index of the key to blame (the later of the
 * pair in `lines`, or the first of the pair) with msg filled, or -1 when all is well. */
static int cfg_cross_check(const struct srv_cfg *cfg, const unsigned *lines, char *msg, size_t msz)
{
    if (cfg->default_timeout_ms <= cfg->max_timeout_ms)
        return cfg_auth_check(cfg, lines, msg, msz);
    const struct cfg_key *a = cfg_key_find("limits", 6, "default_timeout_ms", 18);
    const struct cfg_key *b = cfg_key_find("limits", 6, "max_timeout_ms", 14);
    int ia = (int)(a - cfg_keys), ib = (int)(b - cfg_keys);
    snprintf(msg, msz, "default_timeout_ms (%u) exceeds max_timeout_ms (%u)",
             cfg->default_timeout_ms, cfg->max_timeout_ms);
    return cfg_later(lines, ia, ib);
}

/* ---- defaults, equality, printing ---------------------------------------------------------- */

void srv_cfg_defaults(struct srv_cfg *cfg)
{
    char msg[CFG_MSG_MAX];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        /* The table's own defaults are in range; failing here is a broken build. */
        if (cfg_key_apply(&cfg_keys[i], cfg, cfg_keys[i].def, msg, sizeof(msg)) != 0)
            abort();
    }
}

static size_t cfg_type_size(enum cfg_type type);

static bool cfg_key_equal(const struct cfg_key *k, const struct srv_cfg *a, const struct srv_cfg *b)
{
    const void *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    switch (k->type) {
    case CFG_T_UINT:
        return *(const unsigned *)fa == *(const unsigned *)fb;
    case CFG_T_ULONG:
        return *(const unsigned long *)fa == *(const unsigned long *)fb;
    case CFG_T_SIZE:
        return *(const size_t *)fa == *(const size_t *)fb;
    case CFG_T_LEVEL:
        return *(const enum log_level *)fa == *(const enum log_level *)fb;
    case CFG_T_POLICY:
        return *(const enum log_policy *)fa == *(const enum log_policy *)fb;
    case CFG_T_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case CFG_T_PATH:
    case CFG_T_ADDR:
        return strcmp(fa, fb) == 0;
    case CFG_T_MODE:
        return *(const enum srv_cfg_auth_mode *)fa == *(const enum srv_cfg_auth_mode *)fb;
    case CFG_T_KEYS:
        return memcmp(fa, fb, sizeof(struct srv_cfg_keys)) == 0;
    case CFG_T_RATE:
        return *(const double *)fa == *(const double *)fb;
    case CFG_T_CIDRS:
    case CFG_T_PATHS:
        return memcmp(fa, fb, cfg_type_size(k->type)) == 0; /* unused entries are zero */
    case CFG_T_LISTEN:
        if (a->listen_count != b->listen_count)
            return false;
        for (unsigned i = 0; i < a->listen_count; i++) {
            if (strcmp(a->listen[i], b->listen[i]) != 0)
                return false;
        }
        return true;
    }
    abort();
}

/* The values of tenant key `k` in two sections (whether they set it is the caller's concern). */
static bool cfg_tenant_value_equal(const struct cfg_key *k, const struct srv_cfg_tenant *a,
                                   const struct srv_cfg_tenant *b)
{
    const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    if (k->type == CFG_T_KEYS)
        return memcmp(fa, fb, sizeof(struct srv_cfg_keys)) == 0;
    return k->type == CFG_T_RATE ? *(const double *)fa == *(const double *)fb
                                 : *(const unsigned *)fa == *(const unsigned *)fb;
}

static bool cfg_tenant_equal(const struct srv_cfg_tenant *a, const struct srv_cfg_tenant *b)
{
    if (strcmp(a->name, b->name) != 0 || a->set != b->set)
        return false;
    for (size_t i = 0; i < CFG_NTKEYS; i++) {
        if ((a->set & (1u << i)) && !cfg_tenant_value_equal(&cfg_tenant_keys[i], a, b))
            return false;
    }
    return true;
}

bool srv_cfg_equal(const struct srv_cfg *a, const struct srv_cfg *b)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        if (!cfg_key_equal(&cfg_keys[i], a, b))
            return false;
    }
    if (a->tenant_count != b->tenant_count)
        return false;
    for (unsigned i = 0; i < a->tenant_count; i++) {
        if (!cfg_tenant_equal(&a->tenants[i], &b->tenants[i]))
            return false;
    }
    return srv_cfgs_equal(a, b) && srv_cfgk_equal(a, b);
}

static void cfg_cidrs_print(const struct srv_cfg_cidrs *set, FILE *out)
{
    for (unsigned i = 0; i < set->count; i++) {
        const struct srv_cfg_cidr *c = &set->net[i];
        char host[INET6_ADDRSTRLEN] = "?";
        inet_ntop(c->family == 4 ? AF_INET : AF_INET6, c->addr, host, sizeof(host));
        fprintf(out, "%s%s/%u", i ? ", " : " ", host, c->bits);
    }
    fputc('\n', out);
}

static void cfg_key_print(const struct cfg_key *k, const struct srv_cfg *cfg, FILE *out)
{
    const void *f = (const char *)cfg + k->offset;
    fprintf(out, "%s =", k->key);
    switch (k->type) {
    case CFG_T_UINT:
        fprintf(out, " %u\n", *(const unsigned *)f);
        return;
    case CFG_T_ULONG:
        fprintf(out, " %lu\n", *(const unsigned long *)f);
        return;
    case CFG_T_SIZE:
        fprintf(out, " %zu\n", *(const size_t *)f);
        return;
    case CFG_T_LEVEL:
        fprintf(out, " %s\n", log_level_name(*(const enum log_level *)f));
        return;
    case CFG_T_POLICY:
        fprintf(out, " %s\n", *(const enum log_policy *)f == LOG_POLICY_DROP ? "drop" : "block");
        return;
    case CFG_T_BOOL:
        fprintf(out, " %s\n", *(const bool *)f ? "true" : "false");
        return;
    case CFG_T_PATH:
    case CFG_T_ADDR:
        fprintf(out, "%s%s\n", *(const char *)f ? " " : "", (const char *)f);
        return;
    case CFG_T_MODE:
        fprintf(out, " %s\n", cfg_mode_names[*(const enum srv_cfg_auth_mode *)f]);
        return;
    case CFG_T_KEYS:
        cfg_keys_print(f, out);
        return;
    case CFG_T_LISTEN:
        for (unsigned i = 0; i < cfg->listen_count; i++)
            fprintf(out, "%s%s", i ? ", " : " ", cfg->listen[i]);
        fputc('\n', out);
        return;
    case CFG_T_RATE:
        cfg_rate_print(*(const double *)f, out);
        return;
    case CFG_T_CIDRS:
        cfg_cidrs_print(f, out);
        return;
    case CFG_T_PATHS:
        for (unsigned i = 0; i < ((const struct srv_cfg_paths *)f)->count; i++)
            fprintf(out, "%s%s", i ? ", " : " ", ((const struct srv_cfg_paths *)f)->path[i]);
        fputc('\n', out);
        return;
    }
    abort();
}

void srv_cfg_print(const struct srv_cfg *cfg, FILE *out)
{
    fprintf(out, "; spindle effective configuration%s%s\n", cfg->source[0] ? " from " : "",
            cfg->source);
    for (size_t s = 0; s < CFG_NSECTIONS; s++) {
        fprintf(out, "\n[%s]\n", cfg_sections[s]);
        for (size_t i = 0; i < CFG_NKEYS; i++) {
            if (strcmp(cfg_keys[i].section, cfg_sections[s]) == 0)
                cfg_key_print(&cfg_keys[i], cfg, out);
        }
    }
    for (unsigned t = 0; t < cfg->tenant_count; t++) {
        const struct srv_cfg_tenant *tn = &cfg->tenants[t];
        fprintf(out, "\n[" CFG_TENANT_PREFIX "%s]\n", tn->name);
        for (size_t i = 0; i < CFG_NTKEYS; i++) {
            const struct cfg_key *k = &cfg_tenant_keys[i];
            const char *f = (const char *)tn + k->offset;
            if (!(tn->set & (1u << i)))
                continue;
            fprintf(out, "%s =", k->key);
            if (k->type == CFG_T_KEYS)
                cfg_keys_print((const struct srv_cfg_keys *)(const void *)f, out);
            else if (k->type == CFG_T_RATE)
                cfg_rate_print(*(const double *)f, out);
            else
                fprintf(out, " %u\n", *(const unsigned *)f);
        }
    }
    srv_cfgk_print(cfg, out);
    srv_cfgs_print(cfg, out);
}

/* ---- reload: what changed, what may change live ------------------------------------------ */

int srv_cfg_key_reload(const char *section, const char *key, enum srv_cfg_reload *out)
{
    size_t slen = strlen(section), klen = strlen(key), tlen;
    const char *tname;
    if (srv_cfgk_section(section, slen, &tname, &tlen))
        return srv_cfgk_key_reload(key, out);
    if (srv_cfgs_section(section, slen, &tname, &tlen))
        return srv_cfgs_key_reload(key, out);
    const struct cfg_key *k = cfg_tenant_section(section, slen, &tname, &tlen)
                                  ? cfg_tenant_key_find(key, klen)
                                  : cfg_key_find(section, slen, key, klen);
    if (k == NULL)
        return -ENOENT;
    *out = k->reload;
    return 0;
}

/* Each key tenant section `t` sets and `other` (NULL: no such section) does not set, or, unless
 * `unset_only`, sets to another value. */
static void cfg_tenant_diff(const struct srv_cfg_tenant *t, const struct srv_cfg_tenant *other,
                            bool unset_only, srv_cfg_diff_fn *fn, void *arg)
{
    char sec[sizeof(CFG_TENANT_PREFIX) + CTX_TENANT_MAX];
    snprintf(sec, sizeof(sec), CFG_TENANT_PREFIX "%s", t->name);
    for (size_t i = 0; i < CFG_NTKEYS; i++) {
        const struct cfg_key *k = &cfg_tenant_keys[i];
        if (!(t->set & (1u << i)))
            continue;
        if (other != NULL && (other->set & (1u << i)) &&
            (unset_only || cfg_tenant_value_equal(k, t, other)))
            continue;
        fn(sec, k->key, k->reload, arg);
    }
}

void srv_cfg_diff(const struct srv_cfg *a, const struct srv_cfg *b, srv_cfg_diff_fn *fn, void *arg)
{
    for (size_t s = 0; s < CFG_NSECTIONS; s++) {
        for (size_t i = 0; i < CFG_NKEYS; i++) {
            const struct cfg_key *k = &cfg_keys[i];
            if (strcmp(k->section, cfg_sections[s]) == 0 && !cfg_key_equal(k, a, b))
                fn(k->section, k->key, k->reload, arg);
        }
    }
    for (unsigned t = 0; t < b->tenant_count; t++)
        cfg_tenant_diff(&b->tenants[t], srv_cfg_tenant_find(a, b->tenants[t].name), false, fn, arg);
    for (unsigned t = 0; t < a->tenant_count; t++) /* keys only `a` sets: they disappeared */
        cfg_tenant_diff(&a->tenants[t], srv_cfg_tenant_find(b, a->tenants[t].name), true, fn, arg);
    srv_cfgk_diff(a, b, fn, arg);
    srv_cfgs_diff(a, b, fn, arg);
}

/* Bytes of a field of `type` (not CFG_T_LISTEN, which is two fields). */
static size_t cfg_type_size(enum cfg_type type)
{
    switch (type) {
    case CFG_T_UINT:
        return sizeof(unsigned);
    case CFG_T_ULONG:
        return sizeof(unsigned long);
    case CFG_T_SIZE:
        return sizeof(size_t);
    case CFG_T_LEVEL:
        return sizeof(enum log_level);
    case CFG_T_POLICY:
        return sizeof(enum log_policy);
    case CFG_T_BOOL:
        return sizeof(bool);
    case CFG_T_PATH:
        return SRV_CFG_PATH_MAX;
    case CFG_T_RATE:
        return sizeof(double);
    case CFG_T_CIDRS:
        return sizeof(struct srv_cfg_cidrs);
    case CFG_T_PATHS:
        return sizeof(struct srv_cfg_paths);
    case CFG_T_ADDR:
        return SRV_CFG_ADDR_MAX;
    case CFG_T_MODE:
        return sizeof(enum srv_cfg_auth_mode);
    case CFG_T_KEYS:
        return sizeof(struct srv_cfg_keys);
    case CFG_T_LISTEN:
        break;
    }
    abort(); /* no single field: broken invariant */
}

static void cfg_key_copy(const struct cfg_key *k, struct srv_cfg *dst, const struct srv_cfg *src)
{
    if (k->type == CFG_T_LISTEN) {
        memcpy(dst->listen, src->listen, sizeof(dst->listen));
        dst->listen_count = src->listen_count;
        return;
    }
    memcpy((char *)dst + k->offset, (const char *)src + k->offset, cfg_type_size(k->type));
}

void srv_cfg_copy_class(struct srv_cfg *dst, const struct srv_cfg *src, enum srv_cfg_reload reload)
{
    for (size_t i = 0; i < CFG_NKEYS; i++) {
        if (cfg_keys[i].reload == reload)
            cfg_key_copy(&cfg_keys[i], dst, src);
    }
    if (reload == CFG_TENANT) {
        memcpy(dst->tenants, src->tenants, sizeof(dst->tenants));
        dst->tenant_count = src->tenant_count;
    }
    if (reload == SRV_CFG_LIVE_KIND)
        srv_cfgk_copy(dst, src);
    if (reload == CFG_LIVE)
        srv_cfgs_copy(dst, src);
}

/* ---- tenant limits ------------------------------------------------------------------------- */

const struct srv_cfg_tenant *srv_cfg_tenant_find(const struct srv_cfg *cfg, const char *name)
{
    int i = name != NULL ? cfg_tenant_index(cfg, name, strlen(name)) : -1;
    return i >= 0 ? &cfg->tenants[i] : NULL;
}

void srv_cfg_tenant_limits(const struct srv_cfg *cfg, const char *name,
                           struct srv_tenant_limits *out)
{
    *out = (struct srv_tenant_limits){cfg->max_inflight, cfg->rate, cfg->burst, cfg->weight, 0};
    const struct srv_cfg_tenant *t = srv_cfg_tenant_find(cfg, name);
    for (size_t i = 0; t != NULL && i < CFG_NTKEYS; i++) {
        const struct cfg_key *k = &cfg_tenant_keys[i];
        if (!(t->set & (1u << i)) || k->type == CFG_T_KEYS)
            continue;
        size_t n = k->type == CFG_T_RATE ? sizeof(double) : sizeof(unsigned);
        memcpy((char *)out + (k->offset - CFG_LIM_OFF), (const char *)t + k->offset, n);
    }
    if (out->burst == 0) /* one second of rate, so a steady client at the rate is never refused */
        out->burst = out->rate > 1 ? (unsigned)ceil(out->rate) : 1;
}

/* ---- overrides ----------------------------------------------------------------------------- */

/* srv_cfg_set for a [tenant.NAME] section (NAME = tname, tlen bytes). */
static int cfg_tenant_set(struct srv_cfg *cfg, const char *section, const char *tname, size_t tlen,
                          const char *key, const char *value, const char *origin, char *err,
                          size_t size)
{
    char msg[CFG_MSG_MAX];
    int slen = (int)strlen(section), klen = (int)strlen(key);
    struct srv_cfg scratch = *cfg;
    int ti = cfg_tenant_open(&scratch, tname, tlen, msg, sizeof(msg));
    const struct cfg_key *k = cfg_tenant_key_find(key, (size_t)klen);
    if (ti < 0) {
        cfg_err(err, size, origin, 0, section, slen, NULL, 0, msg);
        return -EINVAL;
    }
    if (k == NULL) {
        cfg_err(err, size, origin, 0, section, slen, key, klen, "unknown key");
        return -EINVAL;
    }
    if (cfg_tenant_key_apply(k, &scratch.tenants[ti], value, msg, sizeof(msg)) != 0 ||
        cfg_tenant_check(&scratch, msg, sizeof(msg)) >= 0 ||
        cfg_tenant_keys_check(&scratch, msg, sizeof(msg)) >= 0) {
        cfg_err(err, size, origin, 0, section, slen, key, klen, msg);
        return -EINVAL;
    }
    *cfg = scratch;
    return 0;
}

/* srv_cfg_set for a [kind.NAME] section (NAME = kname, klen bytes). */
static int cfg_kind_set(struct srv_cfg *cfg, const char *section, const char *kname, size_t klen,
                        const char *key, const char *value, const char *origin, char *err,
                        size_t size)
{
    char msg[CFG_MSG_MAX];
    int slen = (int)strlen(section), keylen = (int)strlen(key);
    struct srv_cfg *scratch = malloc(sizeof(*scratch));
    if (scratch == NULL) {
        cfg_err(err, size, origin, 0, section, slen, key, keylen, "out of memory");
        return -ENOMEM;
    }
    *scratch = *cfg;
    int rc = srv_cfgk_open(scratch, kname, klen, 0, msg, sizeof(msg));
    if (rc < 0) {
        cfg_err(err, size, origin, 0, section, slen, NULL, 0, msg);
        goto out;
    }
    rc = srv_cfgk_key_apply(&scratch->kinds[rc], key, (size_t)keylen, value, 0, msg, sizeof(msg));
    if (rc == -ENOENT)
        snprintf(msg, sizeof(msg), "unknown key");
    unsigned line;
    const char *bad;
    if (rc == 0 && srv_cfgk_check(scratch, &line, &bad, msg, sizeof(msg)) >= 0)
        rc = -EINVAL;
    if (rc != 0) {
        cfg_err(err, size, origin, 0, section, slen, key, keylen, msg);
        rc = -EINVAL;
        goto out;
    }
    *cfg = *scratch;
out:
    free(scratch);
    return rc;
}

/* srv_cfg_set for a [schedule.NAME] section (NAME = sname, slen bytes). */
static int cfg_schedule_set(struct srv_cfg *cfg, const char *section, const char *sname,
                            size_t snlen, const char *key, const char *value, const char *origin,
                            char *err, size_t size)
{
    char msg[CFG_MSG_MAX];
    int slen = (int)strlen(section), klen = (int)strlen(key);
    struct srv_cfg *scratch = malloc(sizeof(*scratch));
    if (scratch == NULL) {
        cfg_err(err, size, origin, 0, section, slen, key, klen, "out of memory");
        return -ENOMEM;
    }
    *scratch = *cfg;
    int rc = -EINVAL;
    int si = srv_cfgs_open(scratch, sname, snlen, 0, msg, sizeof(msg));
    int arc = si < 0 ? 0
                     : srv_cfgs_key_apply(&scratch->schedules[si], key, (size_t)klen, value, 0, msg,
                                          sizeof(msg));
    if (si < 0)
        cfg_err(err, size, origin, 0, section, slen, NULL, 0, msg);
    else if (arc == -ENOENT)
        cfg_err(err, size, origin, 0, section, slen, key, klen, "unknown key");
    else if (arc != 0)
        cfg_err(err, size, origin, 0, section, slen, key, klen, msg);
    else
        rc = 0;
    if (rc == 0)
        *cfg = *scratch;
    free(scratch);
    return rc;
}

int srv_cfg_set(struct srv_cfg *cfg, const char *section, const char *key, const char *value,
                const char *origin, char *err, size_t size)
{
    char msg[CFG_MSG_MAX];
    int slen = (int)strlen(section), klen = (int)strlen(key);
    const char *tname;
    size_t tlen;
    if (cfg_tenant_section(section, (size_t)slen, &tname, &tlen))
        return cfg_tenant_set(cfg, section, tname, tlen, key, value, origin, err, size);
    if (srv_cfgk_section(section, (size_t)slen, &tname, &tlen))
        return cfg_kind_set(cfg, section, tname, tlen, key, value, origin, err, size);
    if (srv_cfgs_section(section, (size_t)slen, &tname, &tlen))
        return cfg_schedule_set(cfg, section, tname, tlen, key, value, origin, err, size);
    const struct cfg_key *k = cfg_key_find(section, (size_t)slen, key, (size_t)klen);
    if (!cfg_section_find(section, (size_t)slen)) {
        cfg_err(err, size, origin, 0, section, slen, NULL, 0, "unknown section");
        return -EINVAL;
    }
    if (k == NULL) {
        cfg_err(err, size, origin, 0, section, slen, key, klen, "unknown key");
        return -EINVAL;
    }
    struct srv_cfg scratch = *cfg;
    if (cfg_key_apply(k, &scratch, value, msg, sizeof(msg)) != 0) {
        cfg_err(err, size, origin, 0, section, slen, key, klen, msg);
        return -EINVAL;
    }
    int bad = cfg_cross_check(&scratch, NULL, msg, sizeof(msg));
    if (bad >= 0) {
        cfg_err(err, size, origin, 0, cfg_keys[bad].section, (int)strlen(cfg_keys[bad].section),
                cfg_keys[bad].key, (int)strlen(cfg_keys[bad].key), msg);
        return -EINVAL;
    }
    if (cfg_tenant_check(&scratch, msg, sizeof(msg)) >= 0 ||
        cfg_tenant_keys_check(&scratch, msg, sizeof(msg)) >= 0) {
        cfg_err(err, size, origin, 0, section, slen, key, klen, msg);
        return -EINVAL;
    }
    *cfg = scratch;
    return 0;
}

/* ---- files --------------------------------------------------------------------------------- */

/* One key line found by the pre-scan: names are offsets into the file text. */
struct cfg_line {
    unsigned line;
    unsigned sec_off, sec_len;
    unsigned key_off, key_len;
};

/* One error of a file: its line (0 = the whole file) and the message naming it. */
struct cfg_error {
    unsigned line;
    unsigned seq; /* order found, for a stable sort */
    char *text;
};

struct cfg_parse {
    const char *path;
    char *text;
    struct cfg_line *keys; /* every key line, in order */
    size_t nkeys, cap;
    size_t next; /* index of the key line the next handler call belongs to */
    struct srv_cfg scratch;
    unsigned set_line[CFG_NKEYS]; /* line that set each key, 0 when not set */
    unsigned tenant_line[SRV_CFG_MAX_TENANTS][CFG_NTKEYS]; /* the same for tenant sections */
    struct cfg_error *errs; /* every error found, in the order found */
    size_t nerrs, errcap;
    bool oom; /* an error could not be recorded */
};

/* Record an error ("ORIGIN:LINE: [SECTION] KEY: MESSAGE", see cfg_err). */
static void cfg_perr(struct cfg_parse *ps, unsigned line, const char *section, int section_len,
                     const char *key, int key_len, const char *msg)
{
    char buf[SRV_CFG_PATH_MAX + CFG_MSG_MAX + 2 * CFG_LINE_MAX];
    cfg_err(buf, sizeof(buf), ps->path, line, section, section_len, key, key_len, msg);
    if (ps->nerrs == ps->errcap) {
        size_t cap = ps->errcap ? ps->errcap * 2 : 16;
        struct cfg_error *e = realloc(ps->errs, cap * sizeof(*e));
        if (e == NULL) {
            ps->oom = true;
            return;
        }
        ps->errs = e;
        ps->errcap = cap;
    }
    char *text = strdup(buf);
    if (text == NULL) {
        ps->oom = true;
        return;
    }
    ps->errs[ps->nerrs] = (struct cfg_error){line, (unsigned)ps->nerrs, text};
    ps->nerrs++;
}

static int cfg_error_cmp(const void *a, const void *b)
{
    const struct cfg_error *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every recorded error, by line, one per line into err (size bytes). A line that does not fit
 * whole is left out, unless it is the first (then it is cut). */
static void cfg_errors_write(struct cfg_parse *ps, char *err, size_t size)
{
    if (err == NULL || size == 0)
        return;
    qsort(ps->errs, ps->nerrs, sizeof(ps->errs[0]), cfg_error_cmp);
    size_t len = 0;
    err[0] = '\0';
    for (size_t i = 0; i < ps->nerrs; i++) {
        size_t n = strlen(ps->errs[i].text) + (i > 0);
        if (i > 0 && len + n >= size)
            break;
        len += (size_t)snprintf(err + len, size - len, "%s%s", i > 0 ? "\n" : "", ps->errs[i].text);
        if (len >= size)
            break;
    }
}

static const char *cfg_lskip(const char *s, const char *end)
{
    while (s < end && isspace((unsigned char)*s))
        s++;
    return s;
}

static const char *cfg_rstrip(const char *s, const char *end)
{
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    return end;
}

/* As libinih does: the first of `chars` in [s, end), or a ';' after a blank (inline comment). */
static const char *cfg_find(const char *s, const char *end, const char *chars)
{
    bool was_space = false;
    for (; s < end; s++) {
        if (strchr(chars, *s) != NULL || (was_space && *s == ';'))
            return s;
        was_space = isspace((unsigned char)*s);
    }
    return end;
}

/* State of the pre-scan between lines. */
struct cfg_scan {
    const char *section; /* current section name (in the text), NULL before the first one */
    int section_len;
    const char *key; /* last key of the current section, NULL when none yet */
    int key_len;
    size_t key_bol;   /* offset of that key's line */
    bool continued;   /* the error is a continuation of that key's line */
    bool key_dropped; /* that key's line is blanked and unrecorded already */
    bool skip;        /* in a refused section: its lines are blanked without more errors */
};

#define CFG_SCAN_BLANK 1 /* cfg_scan_line: blank this line, no error */

static int cfg_scan_error(struct cfg_parse *ps, unsigned line, const struct cfg_scan *st,
                          bool with_key, const char *msg)
{
    cfg_perr(ps, line, st->section, st->section_len, with_key ? st->key : NULL, st->key_len, msg);
    return -EINVAL;
}

static int cfg_scan_record(struct cfg_parse *ps, unsigned line, const struct cfg_scan *st)
{
    if (ps->nkeys == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        struct cfg_line *k = realloc(ps->keys, cap * sizeof(*k));
        if (k == NULL)
            return -ENOMEM;
        ps->keys = k;
        ps->cap = cap;
    }
    struct cfg_line *l = &ps->keys[ps->nkeys++];
    l->line = line;
    l->sec_off = st->section ? (unsigned)(st->section - ps->text) : 0;
    l->sec_len = st->section ? (unsigned)st->section_len : 0;
    l->key_off = (unsigned)(st->key - ps->text);
    l->key_len = (unsigned)st->key_len;
    return 0;
}

static int cfg_scan_section(struct cfg_parse *ps, unsigned line, const char *s, const char *e,
                            struct cfg_scan *st)
{
    const char *close = cfg_find(s + 1, e, "]");
    /* Until the next good section line, key lines belong to a section that is not there. */
    st->skip = true;
    st->key = NULL;
    if (close == e || *close != ']')
        return cfg_scan_error(ps, line, st, false, "expected \"]\" to close the section name");
    const char *rest = cfg_lskip(close + 1, e);
    if (rest < e && *rest != ';' && *rest != '#')
        return cfg_scan_error(ps, line, st, false, "unexpected text after the section name");
    st->section = s + 1;
    st->section_len = (int)(close - s - 1);
    st->key = NULL;
    st->key_len = 0;
    const char *tname;
    size_t tlen;
    if (cfg_tenant_section(st->section, (size_t)st->section_len, &tname, &tlen)) {
        char msg[CFG_MSG_MAX];
        if (cfg_tenant_open(&ps->scratch, tname, tlen, msg, sizeof(msg)) < 0)
            return cfg_scan_error(ps, line, st, false, msg);
        st->skip = false;
        return 0;
    }
    if (srv_cfgk_section(st->section, (size_t)st->section_len, &tname, &tlen)) {
        char msg[CFG_MSG_MAX];
        if (srv_cfgk_open(&ps->scratch, tname, tlen, line, msg, sizeof(msg)) < 0)
            return cfg_scan_error(ps, line, st, false, msg);
        st->skip = false;
        return 0;
    }
    if (srv_cfgs_section(st->section, (size_t)st->section_len, &tname, &tlen)) {
        char msg[CFG_MSG_MAX];
        if (srv_cfgs_open(&ps->scratch, tname, tlen, line, msg, sizeof(msg)) < 0)
            return cfg_scan_error(ps, line, st, false, msg);
        st->skip = false;
        return 0;
    }
    if (!cfg_section_find(st->section, (size_t)st->section_len))
        return cfg_scan_error(ps, line, st, false,
                              "unknown section (known: server, pool, limits, log, auth, shutdown, "
                              "tasks, tenant.NAME, kind.NAME, schedule.NAME)");
    st->skip = false;
    return 0;
}

/* Classify one line the way libinih will, and catch what it would get wrong or not name. */
/* Blank a `#` inline comment of the key line [s, e) (a `#` after a blank, as libinih treats `;`):
 * libinih would keep it in the value. */
static void cfg_hash_comment_blank(char *s, const char *e)
{
    for (char *p = s + 1; p < e; p++) {
        if (*p == '#' && isspace((unsigned char)p[-1])) {
            memset(p, ' ', (size_t)(e - p));
            return;
        }
    }
}

static int cfg_scan_line(struct cfg_parse *ps, unsigned line, char *bol, const char *eol,
                         struct cfg_scan *st)
{
    char msg[96];
    if (eol - bol > CFG_LINE_MAX) {
        snprintf(msg, sizeof(msg), "line longer than %d bytes", CFG_LINE_MAX);
        return cfg_scan_error(ps, line, st, false, msg);
    }
    if (memchr(bol, '\0', (size_t)(eol - bol)) != NULL)
        return cfg_scan_error(ps, line, st, false, "NUL byte in line");
    const char *start = bol;
    if (line == 1 && eol - bol >= 3 && memcmp(bol, "\xEF\xBB\xBF", 3) == 0)
        start += 3; /* UTF-8 byte order mark, skipped by libinih too */
    const char *e = cfg_rstrip(start, eol);
    const char *s = cfg_lskip(start, e);
    if (s == e || *s == ';' || *s == '#')
        return 0;
    if (st->skip && *s != '[')
        return CFG_SCAN_BLANK;
    if (st->key != NULL && s > start) {
        st->continued = true;
        return cfg_scan_error(ps, line, st, true,
                              "continuation line (indented after a key) is not supported; "
                              "write the value on one line");
    }
    if (*s == '[')
        return cfg_scan_section(ps, line, s, e, st);
    const char *sep = cfg_find(s, e, "=:");
    if (sep == e || *sep == ';')
        return cfg_scan_error(ps, line, st, false, "expected \"key = value\"");
    st->key = s;
    st->key_len = (int)(cfg_rstrip(s, sep) - s);
    st->key_bol = (size_t)(bol - ps->text);
    st->key_dropped = false;
    if (st->key_len == 0) {
        st->key = NULL;
        return cfg_scan_error(ps, line, st, false, "missing key name before the separator");
    }
    cfg_hash_comment_blank(bol + (sep - bol), e);
    return cfg_scan_record(ps, line, st);
}

/* Spaces over [p, up to the next newline): libinih then sees an empty line, same numbering. */
static void cfg_line_blank(char *p, const char *end)
{
    for (; p < end && *p != '\n'; p++)
        *p = ' ';
}

/* Pre-scan the whole text, blanking the lines it refuses (errors recorded in ps). Returns 0 or
 * -ENOMEM. */
static int cfg_scan_text(struct cfg_parse *ps, char *text, size_t len)
{
    struct cfg_scan st = {0};
    unsigned line = 1;
    for (size_t off = 0; off < len; line++) {
        char *bol = text + off;
        char *nl = memchr(bol, '\n', len - off);
        char *eol = nl ? nl : text + len;
        int rc = cfg_scan_line(ps, line, bol, eol, &st);
        if (rc == -ENOMEM)
            return rc;
        if (rc == -EINVAL && st.continued && !st.key_dropped) {
            /* The key's value is incomplete: libinih must not see the key line either. */
            cfg_line_blank(text + st.key_bol, text + len);
            ps->nkeys--;
            st.key_dropped = true;
        }
        st.continued = false;
        if (rc != 0)
            cfg_line_blank(bol, eol);
        off = (size_t)(eol - text) + (nl ? 1 : 0);
    }
    return 0;
}

static int cfg_handler_fail(struct cfg_parse *ps, const struct cfg_line *l, const char *msg)
{
    const char *sec = l->sec_len ? ps->text + l->sec_off : NULL;
    cfg_perr(ps, l->line, sec, (int)l->sec_len, ps->text + l->key_off, (int)l->key_len, msg);
    return 1; /* go on: the next keys are checked too */
}

/* A key line of a [tenant.NAME] section; the pre-scan opened the tenant's record. */
static int cfg_handler_tenant(struct cfg_parse *ps, const struct cfg_line *l, const char *tname,
                              size_t tlen, const char *value)
{
    char msg[CFG_MSG_MAX];
    int ti = cfg_tenant_index(&ps->scratch, tname, tlen);
    if (ti < 0)
        return cfg_handler_fail(ps, l, "parser and pre-scan disagree");
    const struct cfg_key *k = cfg_tenant_key_find(ps->text + l->key_off, l->key_len);
    if (k == NULL)
        return cfg_handler_fail(ps, l, "unknown key");
    unsigned *set_line = &ps->tenant_line[ti][k - cfg_tenant_keys];
    if (*set_line != 0) {
        snprintf(msg, sizeof(msg), "duplicate key (first set on line %u)", *set_line);
        return cfg_handler_fail(ps, l, msg);
    }
    if (cfg_tenant_key_apply(k, &ps->scratch.tenants[ti], value, msg, sizeof(msg)) != 0)
        return cfg_handler_fail(ps, l, msg);
    *set_line = l->line;
    return 1;
}

/* A key line of a [kind.NAME] section; the pre-scan opened the kind's record. */
static int cfg_handler_kind(struct cfg_parse *ps, const struct cfg_line *l, const char *kname,
                            size_t klen, const char *value)
{
    char msg[CFG_MSG_MAX];
    int ki = srv_cfgk_index(&ps->scratch, kname, klen);
    if (ki < 0)
        return cfg_handler_fail(ps, l, "parser and pre-scan disagree");
    int rc = srv_cfgk_key_apply(&ps->scratch.kinds[ki], ps->text + l->key_off, l->key_len, value,
                                l->line, msg, sizeof(msg));
    if (rc == -ENOENT)
        return cfg_handler_fail(ps, l, "unknown key");
    if (rc != 0)
        return cfg_handler_fail(ps, l, msg);
    return 1;
}

/* A key line of a [schedule.NAME] section; the pre-scan opened the schedule's record. */
static int cfg_handler_schedule(struct cfg_parse *ps, const struct cfg_line *l, const char *sname,
                                size_t slen, const char *value)
{
    char msg[CFG_MSG_MAX];
    int si = srv_cfgs_index(&ps->scratch, sname, slen);
    if (si < 0)
        return cfg_handler_fail(ps, l, "parser and pre-scan disagree");
    int rc = srv_cfgs_key_apply(&ps->scratch.schedules[si], ps->text + l->key_off, l->key_len,
                                value, l->line, msg, sizeof(msg));
    if (rc == -ENOENT)
        return cfg_handler_fail(ps, l,
                                "unknown key (known: cron, tz, kind, params, body, tenant, "
                                "attempts, backoff_ms, timeout_ms, misfire)");
    if (rc != 0)
        return cfg_handler_fail(ps, l, msg);
    return 1;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
    struct cfg_parse *ps = user;
    char msg[CFG_MSG_MAX];
    (void)section; /* the pre-scan's record names it, uncut */
    if (name == NULL)
        return 1; /* a new-section call */
    if (ps->next >= ps->nkeys) {
        cfg_perr(ps, 0, NULL, 0, NULL, 0, "parser and pre-scan disagree");
        return 0;
    }
    const struct cfg_line *l = &ps->keys[ps->next++];
    const char *key = ps->text + l->key_off;
    /* libinih keeps 49 bytes of a name: compare what it kept to be sure of the line. */
    size_t kept = strlen(name);
    if (kept > l->key_len || memcmp(name, key, kept) != 0)
        return cfg_handler_fail(ps, l, "parser and pre-scan disagree");
    if (l->sec_len == 0)
        return cfg_handler_fail(ps, l, "key outside of any section (add a [section] line above)");
    const char *tname;
    size_t tlen;
    if (cfg_tenant_section(ps->text + l->sec_off, l->sec_len, &tname, &tlen))
        return cfg_handler_tenant(ps, l, tname, tlen, value);
    if (srv_cfgk_section(ps->text + l->sec_off, l->sec_len, &tname, &tlen))
        return cfg_handler_kind(ps, l, tname, tlen, value);
    if (srv_cfgs_section(ps->text + l->sec_off, l->sec_len, &tname, &tlen))
        return cfg_handler_schedule(ps, l, tname, tlen, value);
    const struct cfg_key *k = cfg_key_find(ps->text + l->sec_off, l->sec_len, key, l->key_len);
    if (k == NULL)
        return cfg_handler_fail(ps, l, "unknown key");
    size_t idx = (size_t)(k - cfg_keys);
    if (ps->set_line[idx] != 0) {
        snprintf(msg, sizeof(msg), "duplicate key (first set on line %u)", ps->set_line[idx]);
        return cfg_handler_fail(ps, l, msg);
    }
    if (cfg_key_apply(k, &ps->scratch, value, msg, sizeof(msg)) != 0)
        return cfg_handler_fail(ps, l, msg);
    ps->set_line[idx] = l->line;
    return 1;
}

/* Read all of fd into a new buffer, one byte past CFG_FILE_MAX at most. Returns 0, -EFBIG, or a
 * negative errno. */
static int cfg_fd_read(int fd, char **out, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    char *buf = malloc(CFG_FILE_MAX + 2);
    if (buf == NULL)
        return -ENOMEM;
    size_t got = 0;
    /* Not by st_size: a pipe or a file that grows is bounded the same way. */
    while (got <= CFG_FILE_MAX) {
        ssize_t r = read(fd, buf + got, CFG_FILE_MAX + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                break;
            int rc = -errno;
            free(buf);
            return rc;
        }
        got += (size_t)r;
    }
    if (got > CFG_FILE_MAX) {
        free(buf);
        return -EFBIG;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

static int cfg_file_read(const char *path, char **out, size_t *len, char *err, size_t size)
{
    char msg[CFG_MSG_MAX];
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
    } else {
        rc = cfg_fd_read(fd, out, len);
        close(fd);
    }
    if (rc == -EFBIG)
        snprintf(msg, sizeof(msg), "larger than %d bytes", CFG_FILE_MAX);
    else if (rc != 0)
        snprintf(msg, sizeof(msg), "cannot read: %s", strerror(-rc));
    if (rc != 0)
        cfg_err(err, size, path, 0, NULL, 0, NULL, 0, msg);
    return rc;
}

/* The tenants' cross-key check, blaming the later of the two lines involved. */
static int cfg_parse_tenant_check(struct cfg_parse *ps)
{
    char msg[CFG_MSG_MAX], sec[sizeof(CFG_TENANT_PREFIX) + CTX_TENANT_MAX];
    int ti = cfg_tenant_keys_check(&ps->scratch, msg, sizeof(msg));
    if (ti >= 0) {
        size_t kk = (size_t)(cfg_tenant_key_find("keys", 4) - cfg_tenant_keys);
        int n = snprintf(sec, sizeof(sec), CFG_TENANT_PREFIX "%s", ps->scratch.tenants[ti].name);
        cfg_perr(ps, ps->tenant_line[ti][kk], sec, n, "keys", 4, msg);
        return -EINVAL;
    }
    ti = cfg_tenant_check(&ps->scratch, msg, sizeof(msg));
    if (ti < 0)
        return 0;
    size_t lk = (size_t)(cfg_key_find("limits", 6, "max_timeout_ms", 14) - cfg_keys);
    size_t tk = (size_t)(cfg_tenant_key_find("max_timeout_ms", 14) - cfg_tenant_keys);
    unsigned tline = ps->tenant_line[ti][tk];
    if (ps->set_line[lk] > tline) {
        cfg_perr(ps, ps->set_line[lk], "limits", 6, "max_timeout_ms", 14, msg);
    } else {
        int n = snprintf(sec, sizeof(sec), CFG_TENANT_PREFIX "%s", ps->scratch.tenants[ti].name);
        cfg_perr(ps, tline, sec, n, "max_timeout_ms", 14, msg);
    }
    return -EINVAL;
}

/* After ini_parse_string() returned `r`: the errors found, or the cross-key checks. */
static int cfg_parse_finish(struct cfg_parse *ps, int r)
{
    char msg[CFG_MSG_MAX];
    if (ps->oom)
        return -ENOMEM;
    if (ps->nerrs > 0)
        return -EINVAL;
    if (r != 0 || ps->next != ps->nkeys) {
        cfg_perr(ps, r > 0 ? (unsigned)r : 0, NULL, 0, NULL, 0, "cannot parse this line");
        return -EINVAL;
    }
    int bad = cfg_cross_check(&ps->scratch, ps->set_line, msg, sizeof(msg));
    if (bad >= 0) {
        const struct cfg_key *k = &cfg_keys[bad];
        cfg_perr(ps, ps->set_line[bad], k->section, (int)strlen(k->section), k->key,
                 (int)strlen(k->key), msg);
        return -EINVAL;
    }
    if (cfg_parse_tenant_check(ps) != 0)
        return -EINVAL;
    unsigned line;
    const char *key;
    int ki = srv_cfgk_check(&ps->scratch, &line, &key, msg, sizeof(msg));
    if (ki >= 0) {
        char sec[sizeof(CFGK_PREFIX) + SRV_CFG_KIND_NAME_MAX];
        int n = snprintf(sec, sizeof(sec), CFGK_PREFIX "%s", ps->scratch.kinds[ki].name);
        cfg_perr(ps, line, sec, n, key, key ? (int)strlen(key) : 0, msg);
        return -EINVAL;
    }
    int si = srv_cfgs_check(&ps->scratch, &line, &key, msg, sizeof(msg));
    if (si >= 0) {
        char sec[sizeof(CFGS_PREFIX) + SRV_CFG_SCHED_NAME_MAX];
        int n = snprintf(sec, sizeof(sec), CFGS_PREFIX "%s", ps->scratch.schedules[si].name);
        cfg_perr(ps, line, sec, n, key, key ? (int)strlen(key) : 0, msg);
        return -EINVAL;
    }
    return 0;
}

int srv_cfg_load(const char *path, struct srv_cfg *cfg, char *err, size_t size)
{
    char *text = NULL;
    size_t len = 0;
    int rc = cfg_file_read(path, &text, &len, err, size);
    if (rc != 0)
        return rc;
    struct cfg_parse *ps = calloc(1, sizeof(*ps));
    if (ps == NULL) {
        rc = -ENOMEM;
        goto out_text;
    }
    ps->path = path;
    ps->text = text;
    srv_cfg_defaults(&ps->scratch);
    rc = cfg_scan_text(ps, text, len);
    if (rc == -ENOMEM)
        goto out_ps;
    rc = cfg_parse_finish(ps, ini_parse_string(text, cfg_handler, ps));
    if (rc == 0) {
        snprintf(ps->scratch.source, sizeof(ps->scratch.source), "%s", path);
        *cfg = ps->scratch;
    } else if (rc == -EINVAL) {
        cfg_errors_write(ps, err, size);
    }
out_ps:
    for (size_t i = 0; i < ps->nerrs; i++)
        free(ps->errs[i].text);
    free(ps->errs);
    free(ps->keys);
    free(ps);
out_text:
    if (rc == -ENOMEM)
        cfg_err(err, size, path, 0, NULL, 0, NULL, 0, "out of memory");
    free(text);
    return rc;
}

int srv_cfg_overrides_apply(struct srv_cfg *cfg, const struct srv_cfg_override *ov, size_t n,
                            char *err, size_t size)
{
    for (size_t i = 0; i < n; i++) {
        if (ov[i].value == NULL)
            continue;
        int rc = srv_cfg_set(cfg, ov[i].section, ov[i].key, ov[i].value, ov[i].origin, err, size);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- paths (--check-config) ----------------------------------------------------------------- */

/* A named user's identity: uid and every group it is in. */
struct cfg_user {
    uid_t uid;
    gid_t groups[64];
    int ngroups;
};

static int cfg_user_find(const char *name, struct cfg_user *u)
{
    char buf[4096];
    struct passwd pw, *res = NULL;
    if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
        return -ESRCH;
    u->uid = pw.pw_uid;
    u->ngroups = (int)(sizeof(u->groups) / sizeof(u->groups[0]));
    if (getgrouplist(name, pw.pw_gid, u->groups, &u->ngroups) < 0) {
        /* More groups than fit: the primary one and the first ones are kept. */
        u->ngroups = (int)(sizeof(u->groups) / sizeof(u->groups[0]));
    }
    return 0;
}

/* Would `u` be allowed `want` (bits of the owner triplet: S_IWUSR | S_IXUSR) on `st`? */
static bool cfg_user_may(const struct cfg_user *u, const struct stat *st, mode_t want)
{
    if (u->uid == 0)
        return true;
    if (st->st_uid == u->uid)
        return (st->st_mode & want) == want;
    for (int i = 0; i < u->ngroups; i++) {
        if (u->groups[i] == st->st_gid)
            return (st->st_mode & (want >> 3)) == (want >> 3);
    }
    return (st->st_mode & (want >> 6)) == (want >> 6);
}

__attribute__((format(printf, 4, 5))) static int cfg_path_fail(const struct srv_cfg *cfg, char *err,
                                                               size_t size, const char *fmt, ...)
{
    char msg[CFG_MSG_MAX + SRV_CFG_PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (err != NULL && size > 0) {
        if (cfg->source[0] != '\0')
            snprintf(err, size, "%s: [log] file: %s", cfg->source, msg);
        else
            snprintf(err, size, "[log] file: %s", msg);
    }
    return 0;
}

/* May the user (u, or the caller when NULL) write `path` (dir: create and enter)? */
static bool cfg_may_write(const struct cfg_user *u, const char *path, const struct stat *st,
                          bool dir)
{
    if (u == NULL)
        return access(path, dir ? W_OK | X_OK : W_OK) == 0;
    return cfg_user_may(u, st, dir ? S_IWUSR | S_IXUSR : S_IWUSR);
}

int srv_cfg_paths_check(const struct srv_cfg *cfg, const char *user, char *err, size_t size)
{
    const char *file = cfg->log_file;
    if (file[0] == '\0' || strcmp(file, "-") == 0)
        return 0;
    struct cfg_user u;
    if (user != NULL && cfg_user_find(user, &u) != 0) {
        cfg_path_fail(cfg, err, size, "no user \"%s\" to check the log directory for", user);
        return -ESRCH;
    }
    char copy[SRV_CFG_PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", file);
    const char *dir = dirname(copy);
    const char *who = user != NULL ? user : "this user";
    struct stat st;
    if (stat(dir, &st) != 0) {
        int rc = -errno;
        cfg_path_fail(cfg, err, size, "directory %s: %s", dir, strerror(-rc));
        return rc;
    }
    if (!S_ISDIR(st.st_mode)) {
        cfg_path_fail(cfg, err, size, "%s is not a directory", dir);
        return -ENOTDIR;
    }
    if (!cfg_may_write(user ? &u : NULL, dir, &st, true)) {
        cfg_path_fail(cfg, err, size, "directory %s is not writable by %s", dir, who);
        return -EACCES;
    }
    if (stat(file, &st) == 0 && !cfg_may_write(user ? &u : NULL, file, &st, false)) {
        cfg_path_fail(cfg, err, size, "%s is not writable by %s", file, who);
        return -EACCES;
    }
    return 0;
}
