/* metrics.h - a small metrics registry rendered in the Prometheus text exposition format 0.0.4,
 * and the families spindle exposes on GET /metrics.
 *
 * A registry holds families (counter, gauge, histogram), each with fixed label names and a bound
 * on its distinct label sets (series). A label set beyond the bound is not added: its updates go
 * to the family's overflow series, whose every label value is "other", so a client cannot grow
 * memory by inventing label values. Because several label sets may share that series, gauges of
 * a family that can overflow should be changed with srv_met_add (+1/-1), not srv_met_set.
 *
 * Values are doubles; a series either holds its value or reads it through a callback at render
 * time (for figures owned elsewhere: pool and log statistics, loop lag). Rendering writes each
 * family once with `# HELP` and `# TYPE`, families in registration order and series in creation
 * order; histograms as cumulative `_bucket{le=...}` lines ending in `le="+Inf"`, then `_sum` and
 * `_count`. Label values and help text are escaped as the format requires.
 *
 * Threads: a registry and its families are used by one thread (the loop thread); callbacks run on
 * that thread during srv_met_render and must not call back into the registry. Not locked.
 */
#ifndef SPINDLE_METRICS_H
#define SPINDLE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define SRV_MET_MAX_LABELS     4       /* label names per family */
#define SRV_MET_DEFAULT_SERIES 64      /* max_series when a descriptor gives 0 */
#define SRV_MET_MAX_BOUNDS     64      /* histogram buckets besides +Inf */
#define SRV_MET_OTHER          "other" /* every label value of the overflow series */
#define SRV_MET_CONTENT_TYPE   "text/plain; version=0.0.4; charset=utf-8"

struct srv_met;
struct srv_met_family;
struct srv_met_series;

enum srv_met_type { SRV_MET_COUNTER, SRV_MET_GAUGE, SRV_MET_HISTOGRAM };

/* How to create a family; every string is copied. */
struct srv_met_desc {
    enum srv_met_type type;
    const char *name;                           /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help;                           /* any text; escaped when rendered */
    const char *labels[SRV_MET_MAX_LABELS + 1]; /* label names, NULL-terminated:
                                                   [a-zA-Z_][a-zA-Z0-9_]*, not starting "__",
                                                   distinct, no "le" in a histogram */
    size_t max_series;    /* label sets at most besides the overflow one; 0 = default */
    const double *bounds; /* histogram: finite upper bounds, strictly increasing */
    size_t nbounds;       /* 1..SRV_MET_MAX_BOUNDS for a histogram; +Inf is added */
};

/* Growing output buffer: data[0..len) is the text; data is NUL-terminated when not NULL. */
struct srv_met_buf {
    char *data;
    size_t len, cap;
};

/* Free the buffer's storage and zero it. */
void srv_met_buf_fini(struct srv_met_buf *b);

/* A value read at render time (borrowed `arg`). */
typedef double srv_met_value_fn(void *arg);

/* An empty registry; NULL when out of memory. The calling thread is its owner. */
struct srv_met *srv_met_new(void);

/* Free the registry, its families and series. NULL is a no-op. */
void srv_met_free(struct srv_met *m);

/* Add a family described by `d` (borrowed). Returns it (owned by the registry), or NULL when the
 * description is invalid, the name is already registered, or out of memory. A family without
 * labels gets its one series at once, so it renders 0 before the first update. */
struct srv_met_family *srv_met_family_new(struct srv_met *m, const struct srv_met_desc *d);

/* The series of `f` for `values` (borrowed; one string per label name, in order; NULL when the
 * family has no labels): found, created, or the overflow series when the family already holds
 * max_series label sets. NULL only when out of memory, or when values is NULL or holds a NULL
 * while the family has labels. The pointer stays valid while the registry lives. */
struct srv_met_series *srv_met_series_get(struct srv_met_family *f, const char *const *values);

/* Counter: add v (ignored unless v >= 0). Gauge: add v (may be negative). Ignored for a
 * histogram, a callback series or s == NULL. */
void srv_met_add(struct srv_met_series *s, double v);

/* Gauge: set the value. Ignored for other types, callback series or s == NULL. */
void srv_met_set(struct srv_met_series *s, double v);

/* Histogram: count one observation of v (NaN is ignored). Ignored for other types or NULL. */
void srv_met_observe(struct srv_met_series *s, double v);

/* Read the counter or gauge series for `values` through fn(arg) at every render from now on (it
 * replaces a stored value). A callback counter must return a non-decreasing value. Returns 0,
 * -EINVAL (histogram family, NULL fn, bad values, all values "other"), -ENOSPC (the family is full:
 * a callback cannot share the overflow series), -ENOMEM. */
int srv_met_series_fn(struct srv_met_family *f, const char *const *values, srv_met_value_fn *fn,
                      void *arg);

/* Shorthands: srv_met_series_get then the update; out of memory only loses the update. */
void srv_met_labels_add(struct srv_met_family *f, const char *const *values, double v);
void srv_met_labels_set(struct srv_met_family *f, const char *const *values, double v);
void srv_met_labels_observe(struct srv_met_family *f, const char *const *values, double v);

/* Label sets of `f` now, the overflow series included once it exists. */
size_t srv_met_family_series(const struct srv_met_family *f);

/* The stored value of a counter or gauge series (the callback's for a callback series); for a
 * histogram series its observation count. 0 for NULL. */
double srv_met_value(const struct srv_met_series *s);

/* Append the exposition text of every family to `out` (its storage grows as needed). Returns 0
 * or -ENOMEM; on failure out->len is what it was on entry. */
int srv_met_render(const struct srv_met *m, struct srv_met_buf *out);

/* ---- the families spindle exposes ----------------------------------------------------------- */

/* Buckets of the job time histograms, in seconds. */
extern const double srv_met_job_seconds_bounds[14];

/* spindle's families, in the order they are registered and rendered. Each has one entry in the
 * table of server/metrics/metrics.c, `[SRV_MET_X] = {.type, .name, .help, .labels, ...}`: adding a
 * family is an id here (before SRV_MET_NFAMILIES) and its entry there. */
enum srv_met_family_id {
    SRV_MET_HTTP_REQUESTS,      /* counter spindle_http_requests_total{route,status} */
    SRV_MET_INFLIGHT,           /* gauge spindle_inflight_requests */
    SRV_MET_QUEUE_DEPTH,        /* gauge spindle_queue_depth */
    SRV_MET_TENANT_QUEUE_DEPTH, /* gauge spindle_tenant_queue_depth{tenant} */
    SRV_MET_REFUSALS,           /* counter spindle_refusals_total{reason,tenant} */
    SRV_MET_JOB_WAIT,           /* histogram spindle_job_wait_seconds{kind} */
    SRV_MET_JOB_RUN,            /* histogram spindle_job_run_seconds{kind} */
    SRV_MET_LOOP_LAG,           /* gauge spindle_loop_lag_seconds */
    SRV_MET_LOOP_UTILIZATION,   /* gauge spindle_loop_utilization */
    SRV_MET_OPEN_CONNECTIONS,   /* gauge spindle_open_connections */
    SRV_MET_LOG_LINES,          /* counter spindle_log_lines_total */
    SRV_MET_LOG_WAITS,          /* counter spindle_log_waits_total */
    SRV_MET_LOG_DROPPED,        /* counter spindle_log_dropped_total */
    SRV_MET_BATCH_JOBS,         /* counter spindle_batch_jobs_total{mode,status} */
    SRV_MET_LOG_WRITE_ERRORS,   /* counter spindle_log_write_errors_total */
    SRV_MET_LOG_LOST,           /* counter spindle_log_lost_total */
    SRV_MET_BUILD_INFO,         /* gauge spindle_build_info{version,commit} = 1 */
    SRV_MET_PROCESS_CPU,        /* counter process_cpu_seconds_total */
    SRV_MET_PROCESS_RESIDENT,   /* gauge process_resident_memory_bytes */
    SRV_MET_PROCESS_VIRTUAL,    /* gauge process_virtual_memory_bytes */
    SRV_MET_PROCESS_OPEN_FDS,   /* gauge process_open_fds */
    SRV_MET_PROCESS_MAX_FDS,    /* gauge process_max_fds */
    SRV_MET_PROCESS_START_TIME, /* gauge process_start_time_seconds */
    SRV_MET_QUEUE_CAPACITY,     /* gauge spindle_queue_capacity */
    SRV_MET_AUTH_FAILURES,      /* counter spindle_auth_failures_total{reason} */
    SRV_MET_AUTH_THROTTLED,     /* gauge spindle_auth_throttled_addresses */
    SRV_MET_TASKS,              /* gauge spindle_tasks{state,kind} */
    SRV_MET_TASK_OLDEST_QUEUED, /* gauge spindle_task_oldest_queued_age_seconds */
    SRV_MET_TASKS_QUEUED,       /* gauge spindle_tasks_queued{tenant} */
    SRV_MET_TASK_ATTEMPTS,      /* counter spindle_task_attempts_total */
    SRV_MET_TASK_RETRIES,       /* counter spindle_task_retries_total */
    SRV_MET_TASK_LEASE_EXPIRED, /* counter spindle_task_lease_expiries_total */
    SRV_MET_TASK_STALE,         /* counter spindle_task_stale_completions_total */
    SRV_MET_TASK_PURGED,        /* counter spindle_tasks_purged_total */
    SRV_MET_TASK_FSYNCS,        /* counter spindle_task_store_fsyncs_total */
    SRV_MET_TASK_COMMIT,        /* histogram spindle_task_store_commit_seconds */
    SRV_MET_SCHEDULE_FIRES,     /* counter spindle_schedule_fires_total{schedule,result} */
    SRV_MET_STREAM_BYTES,       /* counter spindle_stream_bytes_total{kind,direction} */
    SRV_MET_STREAMS_OPEN,       /* gauge spindle_streams_open */
    SRV_MET_STREAM_BLOCKED,     /* counter spindle_stream_blocked_seconds_total{kind} */
    SRV_MET_NFAMILIES
};

/* Filled by srv_met_server_init; the server updates the families or attaches callbacks. */
struct srv_met_server {
    struct srv_met_family *family[SRV_MET_NFAMILIES]; /* by enum srv_met_family_id, owned by the
                                                         registry */
};

/* Register spindle's families in `m` and fill *s (families owned by m). Returns 0, -ENOMEM, or
 * -EEXIST when one of the names is already registered. */
int srv_met_server_init(struct srv_met_server *s, struct srv_met *m);

/* One answered request: spindle_http_requests_total{route,status} += 1. `route` (borrowed) is the
 * matched route's path, or a fixed word for unmatched requests, never the raw URL. */
void srv_met_http_request(const struct srv_met_server *s, const char *route, int status);

/* One admission refusal: spindle_refusals_total{reason,tenant} += 1. */
void srv_met_refusal(const struct srv_met_server *s, const char *reason, const char *tenant);

/* One sub-job of a batch finished: spindle_batch_jobs_total{mode,status} += 1 (`mode` "all",
 * "all_settled", "any", "race"; `status` "ok", "failed", "cancelled"). */
void srv_met_batch_job(const struct srv_met_server *s, const char *mode, const char *status);

/* One job that ran: observe its queue wait and run time (ns) under `kind`. */
void srv_met_job_times(const struct srv_met_server *s, const char *kind, uint64_t wait_ns,
                       uint64_t run_ns);

/* A streaming job started (+1) or ended (-1): spindle_streams_open += delta. */
void srv_met_stream_open(const struct srv_met_server *s, int delta);

/* A streaming job ended: its body bytes (direction "in") and answer bytes ("out") under `kind`,
 * and the time (ns) it waited on the client (an empty body buffer or a full answer buffer). */
void srv_met_stream_done(const struct srv_met_server *s, const char *kind, uint64_t bytes_in,
                         uint64_t bytes_out, uint64_t blocked_ns);

#endif
