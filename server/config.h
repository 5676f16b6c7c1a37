/* config.h - the server's configuration: compiled-in defaults, INI file (libinih), overrides.
 *
 * The defaults compiled in here are identical to the shipped etc/spindle.conf (a test proves it).
 * Loading is all-or-nothing: a file is parsed into a scratch copy and only a fully valid result
 * is returned. Errors name file:line, [section] and key, and say what is wrong.
 *
 * A leaf: it depends on context/ and logging/ only. The policies read it (admission builds its
 * limit set from struct srv_cfg, reload asks which keys may change live), never the other way.
 */
#ifndef SPINDLE_CONFIG_H
#define SPINDLE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "context/ctx.h"
#include "logging/log.h"

#define SRV_CFG_MAX_LISTEN  8
#define SRV_CFG_ADDR_MAX    64 /* "HOST:PORT" or "[v6]:PORT" */
#define SRV_CFG_PATH_MAX    1024
#define SRV_CFG_MAX_TENANTS 64 /* [tenant.NAME] sections at most */
#define SRV_CFG_MAX_CIDRS   16 /* server.trusted_proxies networks at most */
#define SRV_CFG_MAX_SKIP    8  /* log.access_skip paths at most */
#define SRV_CFG_SKIP_MAX    64 /* bytes of one log.access_skip path, NUL included */

/* The tenant name no [tenant.NAME] section may take: the metrics label of every tenant without a
 * section (SRV_ADM_OTHER_LABEL). */
#define SRV_CFG_TENANT_RESERVED "other"

/* Keys a [tenant.NAME] section may set (bits of struct srv_cfg_tenant.set). */
#define SRV_CFG_TENANT_MAX_INFLIGHT   (1u << 0)
#define SRV_CFG_TENANT_RATE           (1u << 1)
#define SRV_CFG_TENANT_BURST          (1u << 2)
#define SRV_CFG_TENANT_WEIGHT         (1u << 3)
#define SRV_CFG_TENANT_MAX_TIMEOUT_MS (1u << 4)

/* Limits of one tenant: the settings admission enforces (server/admission/admission.h). */
struct srv_tenant_limits {
    unsigned max_inflight;   /* requests admitted and not yet released at most; 0 = unlimited */
    double rate;             /* requests per second refilled into the bucket; 0 = unlimited */
    unsigned burst;          /* bucket size in requests (0 = 1); ignored when rate is 0 */
    unsigned weight;         /* share in the pool's fair queue (0 = 1) */
    unsigned max_timeout_ms; /* cap on the request's deadline; 0 = no tenant cap */
};

/* One [tenant.NAME] section: the keys it sets override the tenant defaults of [limits]; the keys
 * it leaves out inherit them (also when [limits] changes later, e.g. by srv_cfg_set). */
struct srv_cfg_tenant {
    char name[CTX_TENANT_MAX + 1]; /* [A-Za-z0-9._-]{1,64}, not "other" */
    unsigned set;                  /* SRV_CFG_TENANT_* bits of the keys the section sets */
    struct srv_tenant_limits lim;  /* the values of those keys; the others are 0 */
};
/* One network of server.trusted_proxies: the address with its host bits cleared. Bytes only,
 * so that a whole list compares with memcmp. */
struct srv_cfg_cidr {
    unsigned char family; /* 4 or 6 */
    unsigned char bits;   /* prefix length: 0..32 or 0..128 */
    unsigned char addr[16];
};

/* server.trusted_proxies: the peers whose forwarding headers name the client. Entries past
 * `count` are zero. */
struct srv_cfg_cidrs {
    unsigned count;
    struct srv_cfg_cidr net[SRV_CFG_MAX_CIDRS];
};

/* log.access_skip: request paths that get no access line. Entries past `count` are zero. */
struct srv_cfg_paths {
    unsigned count;
    char path[SRV_CFG_MAX_SKIP][SRV_CFG_SKIP_MAX];
};

struct srv_cfg {
    /* [server] */
    char listen[SRV_CFG_MAX_LISTEN][SRV_CFG_ADDR_MAX]; /* listen = A, B (comma-separated) */
    unsigned listen_count;
    unsigned backlog;                /* listen(2) backlog */
    unsigned max_connections;        /* open connections at most */
    unsigned header_timeout_ms;      /* whole request head must arrive within (408) */
    unsigned body_timeout_ms;        /* gap between body reads at most (408) */
    unsigned idle_timeout_ms;        /* keep-alive idle connection lifetime */
    unsigned write_timeout_ms;       /* a pending write must progress within */
    unsigned max_keepalive_requests; /* requests per connection (0 = unlimited) */
    unsigned retry_hold_ms;          /* hold a request retried at once after refusals (0 = off) */
    struct srv_cfg_cidrs trusted_proxies; /* peers whose X-Forwarded-For & co. are believed */

    /* [pool] */
    unsigned workers;         /* 0 = online CPUs */
    unsigned queue_capacity;  /* queued jobs at most */
    unsigned cancel_grace_ms; /* report a job still running this long after its cancel */

    /* [limits] */
    unsigned max_request_line;        /* bytes of method + URI + version (414) */
    unsigned max_header_bytes;        /* bytes of all header lines (431) */
    unsigned max_headers;             /* header count (431) */
    size_t max_body_bytes;            /* request body (413) */
    size_t max_stream_bytes;          /* request body of a streaming job (413) */
    unsigned max_pipeline_bytes;      /* bytes buffered beyond the request being served */
    unsigned max_query_params;        /* query parameters (400) */
    unsigned default_timeout_ms;      /* deadline when X-Timeout-Ms is absent */
    unsigned max_timeout_ms;          /* cap on X-Timeout-Ms */
    unsigned max_spin_ms;             /* spin?ms= at most */
    unsigned long max_primes_n;       /* primes?n= at most */
    unsigned long max_sha256_rounds;  /* sha256?rounds= at most */
    unsigned max_compress_level_zstd; /* 1..19 */
    unsigned max_batch;               /* jobs in one POST /v1/batch */
    /* tenant defaults (every tenant without its own value; max_timeout_ms above is theirs too) */
    unsigned max_inflight; /* queued + running requests per tenant; 0 = unlimited */
    double rate;           /* requests per second per tenant (token bucket); 0 = unlimited */
    unsigned burst;        /* bucket size; 0 = one second of rate (at least 1) */
    unsigned weight;       /* share of the workers in the fair queue */
    unsigned max_tenants;  /* tenants tracked at once (idle ones are evicted) */

    /* [tenant.NAME] sections, in the order they first appear */
    struct srv_cfg_tenant tenants[SRV_CFG_MAX_TENANTS];
    unsigned tenant_count;

    /* [log] */
    enum log_level log_level;
    char log_file[SRV_CFG_PATH_MAX]; /* "" or "-" = stderr */
    size_t log_buffer_bytes;
    enum log_policy log_policy;
    bool log_access;                  /* write one access line per request */
    struct srv_cfg_paths access_skip; /* paths without an access line */

    /* [shutdown] */
    unsigned drain_timeout_ms; /* in-flight work may finish within this; then it is cancelled */
    unsigned announce_ms;      /* before the drain: readyz 503 while serving as usual */

    /* where it came from (for messages); "" for defaults */
    char source[SRV_CFG_PATH_MAX];
};

/* Fill *cfg with the compiled-in defaults (equal to etc/spindle.conf). */
void srv_cfg_defaults(struct srv_cfg *cfg);

/* Load `path` (borrowed) over the defaults into *cfg. On error *cfg is untouched, and err (size
 * bytes) holds every error of the file, one "FILE:LINE: [section] key: what is wrong" line each,
 * sorted by line and separated by "\n" (lines that do not fit are left out), or "FILE: reason"
 * for I/O errors. Returns 0, -ENOENT/-EACCES/... when unreadable, -EINVAL when invalid. */
int srv_cfg_load(const char *path, struct srv_cfg *cfg, char *err, size_t size);

/* What the file cannot say about itself, for --check-config: `[log] file`'s directory exists
 * and the user `user` (borrowed; NULL = the calling process's user) may create files in it, and
 * may write the file when it exists. Nothing to check for the standard error (empty or "-").
 * err (size bytes) gets "ORIGIN: [log] file: what is wrong" (ORIGIN is cfg->source, or "[log]
 * file" alone when the value came from the defaults). Returns 0, -ENOENT (no such directory),
 * -ENOTDIR, -EACCES (not writable by that user), -ESRCH (no such user), or another negative
 * errno of stat(2). The mode bits and the user's groups decide for a named user (root may write
 * anywhere); access(2) decides for the calling one. */
int srv_cfg_paths_check(const struct srv_cfg *cfg, const char *user, char *err, size_t size);

/* Apply one override as if `section.key = value` were in a file named `origin` (e.g.
 * "--workers"). `section` may be "tenant.NAME" (the tenant is added when new). Same error format
 * and codes as srv_cfg_load; *cfg untouched on error. */
int srv_cfg_set(struct srv_cfg *cfg, const char *section, const char *key, const char *value,
                const char *origin, char *err, size_t size);

/* A setting given on the command line ("--workers 4"): applied after the file at start, and again
 * after the file on every reload, so it keeps precedence. All strings borrowed. */
struct srv_cfg_override {
    const char *origin; /* "--workers": named in errors */
    const char *section, *key;
    const char *value; /* NULL: not given, skipped */
};

/* srv_cfg_set for each of the n overrides in order. Returns 0 or the first error (err says). */
int srv_cfg_overrides_apply(struct srv_cfg *cfg, const struct srv_cfg_override *ov, size_t n,
                            char *err, size_t size);

/* Print the effective configuration as INI that srv_cfg_load accepts and that round-trips. */
void srv_cfg_print(const struct srv_cfg *cfg, FILE *out);

/* True when both hold the same settings (source ignored; tenant sections compared in order). */
bool srv_cfg_equal(const struct srv_cfg *a, const struct srv_cfg *b);

/* What a reload (SIGHUP, server/reload.h) does with a setting whose value changed: the
 * "reload" column of config.c's settings table, and the "live on reload" column of README's. */
enum srv_cfg_reload {
    SRV_CFG_RESTART,  /* needs a restart: reported, and the running value is kept */
    SRV_CFG_LIVE,     /* applied at once */
    SRV_CFG_LIVE_ADM, /* a tenant limit ([limits] max_inflight, rate, burst, weight and every
                         [tenant.NAME] key): applied when admission takes a new limit set */
};

/* The class of `key` in `section` (both borrowed; section may be "tenant.NAME") into *out.
 * Returns 0, or -ENOENT for an unknown key. */
int srv_cfg_key_reload(const char *section, const char *key, enum srv_cfg_reload *out);

/* Called with a setting's section ("tenant.NAME" for a tenant key; borrowed for the call), key
 * and class. */
typedef void srv_cfg_diff_fn(const char *section, const char *key, enum srv_cfg_reload reload,
                             void *arg);

/* Call fn once for every setting whose value differs between `a` and `b` (both borrowed), in
 * print order: the keys of b, then the tenant keys only a sets (a key a tenant section sets in
 * one and not the other differs). */
void srv_cfg_diff(const struct srv_cfg *a, const struct srv_cfg *b, srv_cfg_diff_fn *fn, void *arg);

/* Copy from `src` into `dst` (both borrowed; not aliased) every setting of class `reload`; for
 * SRV_CFG_LIVE_ADM the [tenant.NAME] sections too, as a whole. */
void srv_cfg_copy_class(struct srv_cfg *dst, const struct srv_cfg *src, enum srv_cfg_reload reload);

/* Parse `text` (borrowed: "10.0.0.0/8", "::1", "2001:db8::/32"; no prefix = one address) into
 * *out with its host bits cleared. Returns 0 or -EINVAL. */
int srv_cfg_cidr_parse(const char *text, size_t len, struct srv_cfg_cidr *out);

/* True when the address `addr` (4 or 16 bytes of `family` 4 or 6) lies in `net`. */
bool srv_cfg_cidr_match(const struct srv_cfg_cidr *net, unsigned char family,
                        const unsigned char *addr);

/* The [tenant.NAME] section of `name` (borrowed), or NULL when there is none. */
const struct srv_cfg_tenant *srv_cfg_tenant_find(const struct srv_cfg *cfg, const char *name);

/* The effective limits of tenant `name` (borrowed; NULL = any tenant without a section) into
 * *out: its section's keys over the [limits] defaults, with burst 0 resolved to one second of
 * rate (at least 1) and max_timeout_ms 0 when the tenant has no cap of its own (the [limits]
 * max_timeout_ms applies to every request anyway). */
void srv_cfg_tenant_limits(const struct srv_cfg *cfg, const char *name,
                           struct srv_tenant_limits *out);

#endif
