/* admission.h - admission control for job requests: per-tenant rate and concurrency limits, queue
 * capacity and deadline feasibility, decided on the loop thread before a job is queued.
 *
 * A job request passes four checks, in this order, and the first that fails refuses it:
 *
 *   1. tenant rate         token bucket (rate, burst)        429 tenant_rate_limited
 *   2. tenant in flight    admitted and not yet released     429 tenant_concurrency_limited
 *   3. queue capacity      queue depth >= queue_capacity     503 queue_full
 *   4. deadline            expected wait + run > time left   503 deadline_unmeetable
 *
 * plus two that concern the module itself: 503 too_many_tenants (the bounded tenant table is full
 * of busy tenants) and 503 out_of_memory. Every refusal carries a retry hint in milliseconds and
 * in seconds (see "Retry hints" below).
 * A refused request consumes nothing: no token is taken and the in-flight count is unchanged.
 *
 * Tenants: limits come from a limit set (struct srv_adm_limits): defaults for unknown tenants plus
 * named overrides (the configured tenants). Per-tenant state (bucket, in-flight count) lives in a
 * bounded table of at most max_tenants entries. A tenant is idle when it has nothing in flight
 * and a full bucket; an idle entry holds nothing a fresh one would not, so it is evicted (the one
 * idle the longest first) when room is needed, or by srv_adm_sweep(). Random tenant ids therefore
 * cost at most max_tenants entries.
 *
 * Estimators (updated by srv_adm_observe / srv_adm_observe_job at each job completion):
 *   - run time, by class and overall: a class is a job kind and a size bucket (the kind's cost,
 *     srv_job_cost_fn, in half-octaves: 2 buckets per doubling), so `primes?n=4000000` and
 *     `primes?n=10`, or `spin?ms=1500` and `noop`, never share an estimate. The overall average
 *     (every job, batch sub-jobs included) stands for the jobs queued ahead, whose kinds are not
 *     known, and for the run of a request without a kind (a batch). Each is a time-decayed
 *     average: a new sample weighs SRV_ADM_EWMA_ALPHA against the old average, and the old
 *     average's weight and value both halve every SRV_ADM_DECAY_HALF_LIFE_MS of age, so stale
 *     evidence fades towards "no evidence" (0: nothing is refused for a deadline without it)
 *     instead of judging requests forever. At most SRV_ADM_CLASSES classes; when full, the one
 *     updated longest ago gives way.
 *   - Expected queue wait for a new job: overall average * (jobs ahead - idle workers) /
 *     workers: each worker must first finish its share of the jobs ahead. It follows the current
 *     depth at once (an empty queue means no wait). The jobs ahead are the job's place in the
 *     fair queue (srv_adm_jobs_ahead): a tenant with a short backlog waits behind one job of each
 *     active tenant per job of its own, not behind the whole queue. A deadline is unmeetable
 *     when that wait, taken a tenth longer, plus the run estimate of the job's class exceeds the
 *     time left: the estimate errs in proportion to the wait (the workers' share of the CPUs
 *     moves), and a job admitted with no time in hand is cancelled mid-run at its deadline, the
 *     work wasted. Runs cut short by a cancel are not observed: they say nothing about service
 *     time. It is never
 *     judged unmeetable by estimate while enough workers are idle to start the request's jobs
 *     and everything queued at once (queue_depth + jobs <= idle_workers): refusing would free
 *     nothing, and the job itself is the fresh evidence. Only a deadline already past is.
 *   - drain rate: EWMA of the interval between completions (completions handed back together
 *     count as intervals of 0, so a batch of N per T gives N/T). When the last completion is older
 *     than the average interval, that open interval counts as a sample, so a stalled pool's rate
 *     decays. queue_full's retry hint = depth / rate clamped to 1 ms..60 s (1 s before any
 *     completion).
 *
 * Retry hints: every refusal carries retry_after_ms (>= 1, the precise hint, sent as
 * Retry-After-Ms) and retry_after_s = ceil(retry_after_ms / 1000), >= 1 (Retry-After, RFC 9110).
 * A rate-limited refusal is given a slot: the time its tokens will have dripped in, after every
 * slot already given to refused requests of its tenant that has not come yet (at most one
 * bucket, `burst`, ahead). Refused clients that come back at their hint therefore arrive one
 * token apart instead of all at once, and find their token.
 *
 * Threads: every function runs on the thread that called srv_adm_new (the loop thread; asserted)
 * except the srv_adm_limits_* functions, which touch only their own limit set and may be used on
 * any thread until the set is handed to srv_adm_new or srv_adm_limits_swap. Time is always passed
 * in (ctx_now_ns() scale, nanoseconds); nothing here reads a clock.
 */
#ifndef SPINDLE_ADMISSION_H
#define SPINDLE_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/config.h" /* struct srv_cfg, struct srv_tenant_limits (a plain setting) */

#define SRV_ADM_TENANT_MAX         64    /* bytes of a tenant name (as X-Tenant-Id allows) */
#define SRV_ADM_MAX_LABELS         256   /* tenant labels for refusal counters, besides "other" */
#define SRV_ADM_EWMA_ALPHA         0.2   /* weight of the newest completion in the estimators */
#define SRV_ADM_WAIT_SLACK_DIV     10    /* the expected wait is taken 1/10 longer (see above) */
#define SRV_ADM_RETRY_MAX_S        60    /* queue_full / deadline_unmeetable Retry-After cap */
#define SRV_ADM_DECAY_HALF_LIFE_MS 10000 /* an estimate's weight and value halve with this age */
#define SRV_ADM_CLASSES            256   /* run-time estimate classes (kind, size bucket) at most */
#define SRV_ADM_KIND_MAX           32    /* bytes of a kind name that has its own estimates */
#define SRV_ADM_OTHER_LABEL        SRV_CFG_TENANT_RESERVED /* label of unconfigured tenants */

enum srv_adm_reason {
    SRV_ADM_ADMITTED = 0,
    SRV_ADM_TENANT_RATE_LIMITED,        /* 429 */
    SRV_ADM_TENANT_CONCURRENCY_LIMITED, /* 429 */
    SRV_ADM_QUEUE_FULL,                 /* 503 */
    SRV_ADM_DEADLINE_UNMEETABLE,        /* 503 */
    SRV_ADM_TOO_MANY_TENANTS,           /* 503 */
    SRV_ADM_OUT_OF_MEMORY,              /* 503 */
    SRV_ADM_REASON_COUNT
};

/* "admitted", "tenant_rate_limited", "tenant_concurrency_limited", "queue_full",
 * "deadline_unmeetable", "too_many_tenants", "out_of_memory": the JSON error code and metric
 * label. NULL for a value out of range. */
const char *srv_adm_reason_name(enum srv_adm_reason r);

/* HTTP status of a reason: 0 for SRV_ADM_ADMITTED, 429 or 503. */
int srv_adm_reason_status(enum srv_adm_reason r);

/* ---- limit sets ----------------------------------------------------------------------------- */

struct srv_adm_limits;

/* A new limit set with `defaults` (copied) for every tenant not named. NULL when out of memory or
 * when the limits are invalid (negative or non-finite rate). */
struct srv_adm_limits *srv_adm_limits_new(const struct srv_tenant_limits *defaults);

/* A new limit set from a configuration (borrowed): its [limits] tenant defaults and every
 * [tenant.NAME] section's effective limits (srv_cfg_tenant_limits). NULL when out of memory. */
struct srv_adm_limits *srv_adm_limits_from_cfg(const struct srv_cfg *cfg);

/* srv_adm_limits_free(NULL) is a no-op. Never free a set handed to srv_adm_new/_swap. */
void srv_adm_limits_free(struct srv_adm_limits *l);

/* Replace the defaults (copied). Returns 0 or -EINVAL (invalid limits). */
int srv_adm_limits_set_default(struct srv_adm_limits *l, const struct srv_tenant_limits *t);

/* Add or replace the limits of tenant `name` (borrowed, 1..SRV_ADM_TENANT_MAX bytes, not
 * "other"). Returns 0, -EINVAL (bad name or limits), -ENOMEM. */
int srv_adm_limits_set_tenant(struct srv_adm_limits *l, const char *name,
                              const struct srv_tenant_limits *t);

/* The limits that apply to `tenant` (borrowed): its own, or the defaults. Valid until the set is
 * changed or freed. */
const struct srv_tenant_limits *srv_adm_limits_get(const struct srv_adm_limits *l,
                                                   const char *tenant);

/* True when `tenant` has its own limits in the set. */
bool srv_adm_limits_configured(const struct srv_adm_limits *l, const char *tenant);

/* ---- admission ------------------------------------------------------------------------------ */

struct srv_adm;
struct srv_adm_tenant;

struct srv_adm_config {
    size_t max_tenants;    /* tenant entries at most (>= 1) */
    size_t queue_capacity; /* refuse queue_full when the queue holds this many; 0 = no check */
    unsigned workers;      /* worker threads, for the wait estimate (0 = 1) */
};

/* One job request to decide on. */
struct srv_adm_req {
    const char *tenant;        /* borrowed; 1..SRV_ADM_TENANT_MAX bytes */
    uint64_t now_ns;           /* the current time */
    uint64_t deadline_ns;      /* the request's deadline, 0 = none */
    size_t queue_depth;        /* jobs queued now (pool_stats.queued) */
    size_t tenant_queue_depth; /* of those, the tenant's own (pool_tenant_queued) */
    size_t active_tenants;     /* tenants with jobs queued (pool_tenants_active); 0 = unknown */
    unsigned jobs;             /* jobs the request queues at once (a batch); 0 = 1 */
    const char *kind;          /* borrowed: the job's kind for its run estimate; NULL = any
                                  (a batch: the overall average) */
    uint64_t cost;             /* the job's size (srv_job_cost_fn), 0 when the kind has none */
    size_t idle_workers;       /* workers not running a job now; 0 = none or unknown */
};

/* The outcome, filled by srv_adm_decide. */
struct srv_adm_decision {
    enum srv_adm_reason reason;  /* SRV_ADM_ADMITTED or why it was refused */
    int status;                  /* 0 when admitted, else 429 or 503 */
    unsigned retry_after_s;      /* refused: Retry-After seconds, >= 1; admitted: 0 */
    uint64_t retry_after_ms;     /* refused: the precise hint (Retry-After-Ms), >= 1; else 0 */
    unsigned weight;             /* admitted: the tenant's weight for pool_job.weight (>= 1) */
    unsigned max_timeout_ms;     /* the tenant's deadline cap, 0 = none */
    uint64_t deadline_ns;        /* the request's deadline after the tenant's cap, 0 = none */
    const char *tenant_label;    /* the tenant, or "other" when not configured; for metrics;
                                    valid while the srv_adm lives */
    struct srv_adm_tenant *held; /* admitted: what srv_adm_release gives back; else NULL */
    unsigned held_jobs;          /* admitted: in-flight slots held (the request's jobs) */
};

/* A new admission controller over `limits` (taken over in every case, also on failure). `cfg` is
 * copied. NULL when out of memory or cfg->max_tenants is 0. The calling thread becomes the owner:
 * every srv_adm_* call below must be made on it. */
struct srv_adm *srv_adm_new(const struct srv_adm_config *cfg, struct srv_adm_limits *limits);

/* Free everything. Requests still admitted must not be released afterwards. NULL is a no-op. */
void srv_adm_free(struct srv_adm *a);

/* Decide on `req` (borrowed) and fill *out. A request of N jobs (req->jobs) is decided as a
 * whole: it needs N tokens, N free in-flight slots and N places in the queue, and takes them all
 * or nothing. Returns 0 when admitted: the caller must call
 * srv_adm_release(out) exactly once when the request ends (answered, cancelled, or refused later
 * by the pool). Returns -EAGAIN when refused (out says why, nothing to release), -ENOMEM when
 * refused for lack of memory (out says out_of_memory), -EINVAL when req or its tenant name is
 * invalid (out untouched). */
int srv_adm_decide(struct srv_adm *a, const struct srv_adm_req *req, struct srv_adm_decision *out);

/* Give back what an admitted decision holds (its in-flight slots, one per job); clears
 * out->held, so a second call on the same decision is a no-op. `now_ns` dates the tenant's
 * idleness for eviction. */
void srv_adm_release(struct srv_adm *a, struct srv_adm_decision *d, uint64_t now_ns);

/* A job completed at `now_ns` after waiting `queue_wait_ns` in the queue and running `run_ns`:
 * feeds the overall run-time, wait and drain-rate estimators. Call for every job that ran. */
void srv_adm_observe(struct srv_adm *a, uint64_t now_ns, uint64_t queue_wait_ns, uint64_t run_ns);

/* srv_adm_observe, and the run-time estimate of the class of `kind` (borrowed; NULL = none, as
 * srv_adm_observe) and `cost`. */
void srv_adm_observe_job(struct srv_adm *a, const char *kind, uint64_t cost, uint64_t now_ns,
                         uint64_t queue_wait_ns, uint64_t run_ns);

/* The run time in ns expected at `now_ns` of a job of `kind` (borrowed; NULL = the overall
 * average) and `cost`: the class's decayed average, 0 without evidence. */
uint64_t srv_adm_run_estimate_ns(const struct srv_adm *a, const char *kind, uint64_t cost,
                                 uint64_t now_ns);

/* Replace the limit set (taken over; the old one is freed) as on a config reload. In-flight
 * counts, buckets (clamped to the new burst) and counters are kept; tenants named in the new set
 * gain refusal labels. */
void srv_adm_limits_swap(struct srv_adm *a, struct srv_adm_limits *limits);

/* The current limit set (borrowed; valid until the next swap). */
const struct srv_adm_limits *srv_adm_limits(const struct srv_adm *a);

/* The most jobs one request of `tenant` (borrowed) can ever be admitted with under the current
 * limits: the smallest of its max_inflight, its burst (when it has a rate) and the queue
 * capacity; 0 = no bound. A larger request would be refused forever. */
unsigned srv_adm_max_jobs(const struct srv_adm *a, const char *tenant);

/* Evict every idle tenant (nothing in flight, bucket full at now_ns). Returns how many. */
size_t srv_adm_sweep(struct srv_adm *a, uint64_t now_ns);

/* Expected queue wait in ns for a job arriving with `queue_depth` jobs queued (see above), from
 * the overall average as of the last completion (no decay, no idle workers). */
uint64_t srv_adm_expected_wait_ns(const struct srv_adm *a, size_t queue_depth);

/* Jobs a new job of the request's tenant waits behind in the fair queue: the whole queue, or,
 * when the tenant's own backlog is short, about one job of every active tenant per job of its
 * own (round robin), whichever is smaller. */
size_t srv_adm_jobs_ahead(const struct srv_adm_req *req);

/* Requests of `tenant` admitted and not yet released (0 for an unknown tenant). */
unsigned srv_adm_tenant_inflight(const struct srv_adm *a, const char *tenant);

/* Refusals so far for `reason` and tenant label `label` ("other" or a configured tenant). */
uint64_t srv_adm_refusals(const struct srv_adm *a, enum srv_adm_reason reason, const char *label);

typedef void srv_adm_refusal_fn(const char *reason, const char *label, uint64_t count, void *arg);

/* Call fn for every (reason, label) pair whose count is not 0, reasons in enum order, labels in
 * the order they were configured ("other" first). fn must not call back into the module. */
void srv_adm_refusals_foreach(const struct srv_adm *a, srv_adm_refusal_fn *fn, void *arg);

struct srv_adm_stats {
    size_t tenants;       /* entries in the tenant table now */
    size_t max_tenants;   /* its bound */
    uint64_t inflight;    /* admitted and not released, all tenants */
    uint64_t admitted;    /* totals since srv_adm_new */
    uint64_t refused;     /* all reasons */
    uint64_t evicted;     /* idle tenant entries freed */
    uint64_t completions; /* srv_adm_observe calls */
    double ewma_wait_ns;  /* average queue wait of recent jobs */
    double ewma_run_ns;   /* average run time of recent jobs */
    double drain_per_s;   /* jobs completed per second (0 before two completions) */
};

void srv_adm_stats_get(const struct srv_adm *a, struct srv_adm_stats *out);

#endif
