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
#define SRV_CFG_MAX_KEYS    2  /* keys of one [tenant.NAME]: a line holds two (199 bytes) */
#define SRV_CFG_DIGEST      32 /* bytes of a SHA-256 digest */

/* The tenant name no [tenant.NAME] section may take: the metrics label of every tenant without a
 * section (SRV_ADM_OTHER_LABEL). */
#define SRV_CFG_TENANT_RESERVED "other"

/* Keys a [tenant.NAME] section may set (bits of struct srv_cfg_tenant.set). */
#define SRV_CFG_TENANT_MAX_INFLIGHT   (1u << 0)
#define SRV_CFG_TENANT_RATE           (1u << 1)
#define SRV_CFG_TENANT_BURST          (1u << 2)
#define SRV_CFG_TENANT_WEIGHT         (1u << 3)
#define SRV_CFG_TENANT_MAX_TIMEOUT_MS (1u << 4)
#define SRV_CFG_TENANT_KEYS           (1u << 5)

/* [kind.NAME] sections: job kinds from a program (exec) or a C module (module). */
#define SRV_CFG_MAX_KINDS     32  /* [kind.NAME] sections at most */
#define SRV_CFG_KIND_NAME_MAX 31  /* bytes of NAME: [a-z0-9_], starting with a letter */
#define SRV_CFG_VALUE_MAX     200 /* bytes of a string value with its NUL (one line of the file) */
#define SRV_CFG_USER_MAX      33  /* bytes of a user name with its NUL */
#define SRV_CFG_KIND_KEYS     14  /* keys a [kind.NAME] section may set (struct srv_cfg_kind) */

/* One [kind.NAME] section, as written (config.c checks each value, and that exactly one of exec
 * and module is set; which kinds exist and whether the program or module is usable is checked by
 * the job registry, server/jobs/jobs.h). String values are "" when not set; numbers 0 when not
 * set unless a default is named. Settings of exec kinds only are marked (exec). */
struct srv_cfg_kind {
    char name[SRV_CFG_KIND_NAME_MAX + 1];
    char exec[SRV_CFG_VALUE_MAX];   /* (exec) argv: words split on blanks, no shell; {param} */
    char module[SRV_CFG_VALUE_MAX]; /* path of the module's shared object */
    char content_type[SRV_CFG_VALUE_MAX]; /* the answer's type; "" = the kind's own or
                                             application/octet-stream */
    char params[SRV_CFG_VALUE_MAX];       /* (exec) declared parameters: srv_cfg_params_parse */
    unsigned max_inflight;                /* jobs of the kind in flight at most; 0 = unlimited */
    unsigned timeout_ms;         /* default deadline of the kind's requests; 0 = [limits]'s */
    size_t max_output_bytes;     /* answer bytes at most (default 16M) */
    unsigned cancel_grace_ms;    /* (exec) SIGTERM to SIGKILL on cancel (default 2000) */
    unsigned long rlimit_cpu_s;  /* (exec) RLIMIT_CPU seconds; 0 = inherited */
    size_t rlimit_as;            /* (exec) RLIMIT_AS bytes; 0 = inherited */
    unsigned rlimit_nofile;      /* (exec) RLIMIT_NOFILE; 0 = inherited */
    char user[SRV_CFG_USER_MAX]; /* (exec) run as this user; "" = the server's */
    char cwd[SRV_CFG_VALUE_MAX]; /* (exec) working directory; "" = the server's */
    bool stream;                 /* (exec) a large or chunked body streams to stdin, stdout
                                    to the client as produced */
    unsigned set;                /* bit i: key i of the section's table was set */
    unsigned line;               /* line of the section's first header (0: not from a file) */
    unsigned key_line[SRV_CFG_KIND_KEYS]; /* line of each key set (0: not from a file) */
};

/* Parameter declarations of `params =`: comma-separated NAME:TYPE[=DEFAULT] items with TYPE
 * int:MIN..MAX, enum:A|B|C, bool or string; no default = required. For example
 * "lines:int:0..1000=10, mode:enum:fast|best, verbose:bool=false". */
#define SRV_CFG_PARAMS_MAX  16
#define SRV_CFG_CHOICES_MAX 32

enum srv_cfg_param_type {
    SRV_CFG_PARAM_INT = 1, /* the numbering of SPINDLE_PARAM_* (include/spindle/module.h) */
    SRV_CFG_PARAM_ENUM,
    SRV_CFG_PARAM_BOOL,
    SRV_CFG_PARAM_STRING,
};

struct srv_cfg_param {
    char name[32];
    enum srv_cfg_param_type type;
    bool required;
    int64_t min, max, def;           /* def: the number, 0/1, or the choice's index */
    unsigned nchoices;               /* ENUM */
    char choices[SRV_CFG_VALUE_MAX]; /* ENUM: the choices, each ended by a NUL */
};

struct srv_cfg_params {
    unsigned count;
    struct srv_cfg_param p[SRV_CFG_PARAMS_MAX];
};

/* Parse a `params =` value (borrowed) into *out. Returns 0, or -EINVAL with msg saying what is
 * wrong with which item. */
int srv_cfg_params_parse(const char *text, struct srv_cfg_params *out, char *msg, size_t size);

/* [schedule.NAME] sections: a task enqueued at every tick of a cron expression (server/tasks/
 * schedule.h fires them, GET /v1/schedules lists them). */
#define SRV_CFG_MAX_SCHEDULES   32  /* [schedule.NAME] sections at most */
#define SRV_CFG_SCHED_NAME_MAX  64  /* bytes of NAME: [A-Za-z0-9._-] */
#define SRV_CFG_SCHED_VALUE_MAX 200 /* bytes of a value, NUL included (a value fits one line) */
#define SRV_CFG_SCHED_KIND_MAX  64

/* What a schedule does with the ticks it missed while the server was down. */
enum srv_cfg_misfire {
    SRV_CFG_MISFIRE_SKIP, /* nothing: the next tick after the start fires */
    SRV_CFG_MISFIRE_ONCE, /* the last missed tick fires once at start, then as usual */
};

/* Keys of a [schedule.NAME] section (bits of struct srv_cfg_schedule.set), in print order. */
enum srv_cfg_sched_key {
    SRV_CFG_SCHED_CRON,
    SRV_CFG_SCHED_TZ,
    SRV_CFG_SCHED_KIND,
    SRV_CFG_SCHED_PARAMS,
    SRV_CFG_SCHED_BODY,
    SRV_CFG_SCHED_TENANT,
    SRV_CFG_SCHED_ATTEMPTS,
    SRV_CFG_SCHED_BACKOFF_MS,
    SRV_CFG_SCHED_TIMEOUT_MS,
    SRV_CFG_SCHED_MISFIRE,
    SRV_CFG_SCHED__COUNT
};

/* One [schedule.NAME] section. Unset keys hold their defaults (tz "UTC", params "{}", tenant
 * "default", misfire skip, the numbers 0 = the task defaults); cron and kind are required. The
 * values are checked when read: cron parses (server/tasks/cron.h), tz names a zone that loads,
 * params is a JSON object, tenant is a valid tenant name. Whether kind exists and takes these
 * params is for the scheduler to say (it names key_line[SRV_CFG_SCHED_KIND]). */
struct srv_cfg_schedule {
    char name[SRV_CFG_SCHED_NAME_MAX + 1];
    char cron[SRV_CFG_SCHED_VALUE_MAX];
    char tz[SRV_CFG_SCHED_VALUE_MAX];
    char kind[SRV_CFG_SCHED_KIND_MAX + 1];
    char params[SRV_CFG_SCHED_VALUE_MAX]; /* a JSON object */
    char body[SRV_CFG_SCHED_VALUE_MAX];   /* the job's body; "" when unset */
    char tenant[CTX_TENANT_MAX + 1];
    unsigned attempts;   /* 1..100, 0 = the task default */
    unsigned backoff_ms; /* 0 when unset = the task default */
    unsigned timeout_ms; /* 0 when unset = the task default */
    enum srv_cfg_misfire misfire;
    unsigned set; /* 1 << enum srv_cfg_sched_key for each key the section sets */
    /* where it was read (for the scheduler's messages; not compared): the section's line and
     * each set key's, 0 when not from a file */
    unsigned line;
    unsigned key_line[SRV_CFG_SCHED__COUNT];
};

/* Limits of one tenant: the settings admission enforces (server/admission/admission.h). */
struct srv_tenant_limits {
    unsigned max_inflight;   /* requests admitted and not yet released at most; 0 = unlimited */
    double rate;             /* requests per second refilled into the bucket; 0 = unlimited */
    unsigned burst;          /* bucket size in requests (0 = 1); ignored when rate is 0 */
    unsigned weight;         /* share in the pool's fair queue (0 = 1) */
    unsigned max_timeout_ms; /* cap on the request's deadline; 0 = no tenant cap */
};

/* SHA-256 digests of credentials ("sha256:<64 hex>" in the file): never the secrets themselves.
 * Entries past `count` are zero, so two sets compare with memcmp. */
struct srv_cfg_keys {
    unsigned count;
    unsigned char digest[SRV_CFG_MAX_KEYS][SRV_CFG_DIGEST];
};

/* One [tenant.NAME] section: the keys it sets override the tenant defaults of [limits]; the keys
 * it leaves out inherit them (also when [limits] changes later, e.g. by srv_cfg_set). `keys` are
 * the tenant's credentials for [auth] mode = keys (server/auth/auth.h). */
struct srv_cfg_tenant {
    char name[CTX_TENANT_MAX + 1]; /* [A-Za-z0-9._-]{1,64}, not "other" */
    unsigned set;                  /* SRV_CFG_TENANT_* bits of the keys the section sets */
    struct srv_tenant_limits lim;  /* the values of those keys; the others are 0 */
    struct srv_cfg_keys keys;      /* keys = sha256:HEX, ... (count 0 when not set) */
};

/* [auth] mode: who a request's tenant is (server/auth/auth.h). */
enum srv_cfg_auth_mode {
    SRV_CFG_AUTH_NONE = 0, /* X-Tenant-Id as sent, else "default": no credentials */
    SRV_CFG_AUTH_KEYS,     /* Authorization: Bearer TOKEN, whose hash names the tenant */
    SRV_CFG_AUTH_PROXY,    /* X-Tenant-Id, believed only from server.trusted_proxies */
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
    char admin_listen[SRV_CFG_ADDR_MAX];  /* "" or the operator listener's address */

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

    /* [kind.NAME] sections, in the order they first appear */
    struct srv_cfg_kind kinds[SRV_CFG_MAX_KINDS];
    unsigned kind_count;

    /* [log] */
    enum log_level log_level;
    char log_file[SRV_CFG_PATH_MAX]; /* "" or "-" = stderr */
    size_t log_buffer_bytes;
    enum log_policy log_policy;
    bool log_access;                  /* write one access line per request */
    struct srv_cfg_paths access_skip; /* paths without an access line */

    /* [auth] */
    enum srv_cfg_auth_mode auth_mode;
    bool allow_plaintext;              /* mode = keys on a non-loopback address without a proxy */
    struct srv_cfg_keys metrics_token; /* 0 or 1 digest: GET /metrics needs it when set */
    unsigned throttle_failures;  /* failed attempts per address in a window; 0 = no throttle */
    unsigned throttle_window_ms; /* the window those failures are counted in */
    unsigned throttle_block_ms;  /* how long a throttled address gets 429 */
    unsigned throttle_addresses; /* addresses tracked at once (a fixed table) */

    /* [shutdown] */
    unsigned drain_timeout_ms; /* in-flight work may finish within this; then it is cancelled */
    unsigned announce_ms;      /* before the drain: readyz 503 while serving as usual */

    /* [tasks] (durable background tasks, server/tasks/tasks.h) */
    char task_store[SRV_CFG_PATH_MAX]; /* the SQLite file; relative to the working directory */
    unsigned task_lease_ms;            /* a running attempt's lease; heartbeats every third */
    unsigned task_retention_ms;        /* finished tasks are kept this long, then purged */
    size_t task_max_result_bytes;      /* a larger answer fails the attempt (result_too_large) */
    unsigned task_max_unfinished;      /* a tenant's stored unfinished tasks at most (429) */
    unsigned task_worker_share;        /* percent of the workers attempts may occupy at once */
    unsigned task_poll_ms; /* PostgreSQL: how often the store is asked what other instances did */
    bool task_store_prepared; /* PostgreSQL: server-side prepared statements for the hot ones */

    /* [schedule.NAME] sections, in the order they first appear */
    struct srv_cfg_schedule schedules[SRV_CFG_MAX_SCHEDULES];
    unsigned schedule_count;

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
    SRV_CFG_RESTART,   /* needs a restart: reported, and the running value is kept */
    SRV_CFG_LIVE,      /* applied at once */
    SRV_CFG_LIVE_ADM,  /* a tenant limit ([limits] max_inflight, rate, burst, weight and every
                          [tenant.NAME] key): applied when admission takes a new limit set */
    SRV_CFG_LIVE_KIND, /* a [kind.NAME] key but module: applied when the job registry takes a new
                          snapshot; a kind whose module changed keeps its running form */
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

/* True when `addr` (borrowed: "A.B.C.D:PORT", "[V6]:PORT") is a loopback address (127.0.0.0/8,
 * ::1, ::ffff:127.0.0.0/104): only this machine can reach it. False for anything else, the
 * wildcard addresses 0.0.0.0 and [::] and unparsable text included. */
bool srv_cfg_addr_loopback(const char *addr);

/* The [kind.NAME] section of `name` (borrowed), or NULL when there is none. */
const struct srv_cfg_kind *srv_cfg_kind_find(const struct srv_cfg *cfg, const char *name);

/* The [tenant.NAME] section of `name` (borrowed), or NULL when there is none. */
const struct srv_cfg_tenant *srv_cfg_tenant_find(const struct srv_cfg *cfg, const char *name);

/* The [schedule.NAME] section of `name` (borrowed), or NULL when there is none. */
const struct srv_cfg_schedule *srv_cfg_schedule_find(const struct srv_cfg *cfg, const char *name);

/* The effective limits of tenant `name` (borrowed; NULL = any tenant without a section) into
 * *out: its section's keys over the [limits] defaults, with burst 0 resolved to one second of
 * rate (at least 1) and max_timeout_ms 0 when the tenant has no cap of its own (the [limits]
 * max_timeout_ms applies to every request anyway). */
void srv_cfg_tenant_limits(const struct srv_cfg *cfg, const char *name,
                           struct srv_tenant_limits *out);

#endif
