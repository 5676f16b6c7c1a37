/* admission.c - admission control: decides on the loop thread whether a job request may be queued.
 *
 * Design. A limit set is a sorted array of configured tenants (binary search by name) plus the
 * defaults. The controller keeps per-tenant state in a bounded table: a chained hash table of at
 * most max_tenants entries (one malloc each, freed on eviction), whose bucket array is sized once.
 * Each entry caches a pointer to its limits and its refusal-label index; both are re-resolved when
 * a new limit set is swapped in, so a decision costs one hash lookup.
 *
 * Eviction is exact and O(log n): entries with nothing in flight sit in a binary min-heap keyed by
 * full_ns, the time their bucket becomes full again (known when the last request is released,
 * since only admitting takes tokens and admitting makes the entry busy). The heap's top is
 * evictable iff full_ns <= now; if it is not, no entry is, and a new tenant is refused with
 * too_many_tenants instead of growing the table. A decision only creates an entry when it admits,
 * so refused requests from unknown tenants never occupy memory.
 *
 * Refusal counters are indexed by label (0 = "other", then configured tenants in the order they
 * first appeared, at most SRV_ADM_MAX_LABELS) and reason. Labels are never removed, so counters
 * stay monotonic across reloads and the label strings handed out in decisions stay valid.
 *
 * Run-time estimates live in a fixed open-addressed table of SRV_ADM_CLASSES classes keyed by
 * (kind, size bucket), probed over at most ADM_PROBE slots; a class that finds no free slot there
 * replaces the one of them updated longest ago, so the table never grows and a lookup costs a
 * few string compares. Each estimate (struct adm_est) is a time-decayed EWMA: see admission.h.
 *
 * A rate-limited refusal records the slot it was given in the tenant (promised_ns), so the next
 * refusal is given the following token; promises in the past mean nothing.
 *
 * Threads: one owner thread (the loop) for everything; no locks. Invariants: count <= max;
 * inflight == 0 <=> entry is in the heap; sum of entry inflight == a->inflight.
 */
#include "server/admission/admission.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A configured tenant's name always fits the tenant table (config validates it as a context's). */
static_assert(SRV_ADM_TENANT_MAX == CTX_TENANT_MAX, "tenant name bounds differ");

#define NOT_IN_HEAP SIZE_MAX
#define ADM_PROBE   8 /* slots of the class table a class may sit in */

struct adm_named {
    char name[SRV_ADM_TENANT_MAX + 1];
    struct srv_tenant_limits lim;
    unsigned label; /* set when the set is handed to a controller */
};

struct srv_adm_limits {
    struct srv_tenant_limits defaults;
    struct adm_named *named; /* sorted by name */
    size_t count, cap;
};

struct srv_adm_tenant {
    struct srv_adm_tenant *hnext;
    const struct srv_tenant_limits *lim; /* in a->limits */
    unsigned label;
    unsigned inflight;
    double tokens;        /* bucket level at last_ns */
    uint64_t last_ns;     /* time of the bucket level */
    uint64_t full_ns;     /* idle: when the bucket is full */
    uint64_t promised_ns; /* the latest retry slot given to a rate-limited refusal */
    size_t heap_idx;      /* index in a->heap, NOT_IN_HEAP while busy */
    uint32_t hash;
    char name[];
};

/* A time-decayed average (see admission.h). */
struct adm_est {
    double mean_ns;   /* as of last_ns */
    uint64_t last_ns; /* the last sample */
    bool any;         /* at least one sample */
};

/* The run-time estimate of one (kind, size bucket). */
struct adm_class {
    struct adm_est est;
    uint32_t hash;
    unsigned bucket;
    bool used;
    char kind[SRV_ADM_KIND_MAX + 1];
};

struct adm_label {
    char name[SRV_ADM_TENANT_MAX + 1];
    uint64_t refused[SRV_ADM_REASON_COUNT];
};

struct srv_adm {
    struct srv_adm_config cfg;
    struct srv_adm_limits *limits;
    pthread_t owner;

    struct srv_adm_tenant **buckets; /* hash chains, nbuckets a power of two */
    size_t nbuckets;
    struct srv_adm_tenant **heap; /* idle entries, min full_ns on top */
    size_t heap_len;
    size_t count;

    struct adm_label **labels; /* [0] = "other" */
    size_t nlabels;

    /* estimators */
    struct adm_est run;        /* every job's run time */
    struct adm_class *classes; /* SRV_ADM_CLASSES, by (kind, size bucket) */
    double ewma_wait_ns, ewma_interval_ns;
    uint64_t last_completion_ns;

    uint64_t inflight, admitted, refused, evicted, completions;
};

static const char *const reason_names[SRV_ADM_REASON_COUNT] = {
    "admitted",      "tenant_rate_limited", "tenant_concurrency_limited",
    "queue_full",    "deadline_unmeetable", "too_many_tenants",
    "out_of_memory",
};

const char *srv_adm_reason_name(enum srv_adm_reason r)
{
    return (unsigned)r < SRV_ADM_REASON_COUNT ? reason_names[r] : NULL;
}

int srv_adm_reason_status(enum srv_adm_reason r)
{
    switch (r) {
    case SRV_ADM_ADMITTED:
        return 0;
    case SRV_ADM_TENANT_RATE_LIMITED:
    case SRV_ADM_TENANT_CONCURRENCY_LIMITED:
        return 429;
    default:
        return 503;
    }
}

/* ---- limit sets ----------------------------------------------------------------------------- */

static bool limits_valid(const struct srv_tenant_limits *t)
{
    return t != NULL && isfinite(t->rate) && t->rate >= 0;
}

static bool tenant_name_valid(const char *name)
{
    size_t n = name != NULL ? strnlen(name, SRV_ADM_TENANT_MAX + 1) : 0;
    return n >= 1 && n <= SRV_ADM_TENANT_MAX;
}

struct srv_adm_limits *srv_adm_limits_new(const struct srv_tenant_limits *defaults)
{
    if (!limits_valid(defaults))
        return NULL;
    struct srv_adm_limits *l = calloc(1, sizeof(*l));
    if (l != NULL)
        l->defaults = *defaults;
    return l;
}

void srv_adm_limits_free(struct srv_adm_limits *l)
{
    if (l == NULL)
        return;
    free(l->named);
    free(l);
}

int srv_adm_limits_set_default(struct srv_adm_limits *l, const struct srv_tenant_limits *t)
{
    if (!limits_valid(t))
        return -EINVAL;
    l->defaults = *t;
    return 0;
}

/* Index of `name` in l->named, or the insertion point encoded as -(index + 1). */
static ptrdiff_t limits_find(const struct srv_adm_limits *l, const char *name)
{
    size_t lo = 0, hi = l->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, l->named[mid].name);
        if (c == 0)
            return (ptrdiff_t)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -(ptrdiff_t)lo - 1;
}

int srv_adm_limits_set_tenant(struct srv_adm_limits *l, const char *name,
                              const struct srv_tenant_limits *t)
{
    if (!limits_valid(t) || !tenant_name_valid(name) || strcmp(name, SRV_ADM_OTHER_LABEL) == 0)
        return -EINVAL;
    ptrdiff_t at = limits_find(l, name);
    if (at >= 0) {
        l->named[at].lim = *t;
        return 0;
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        struct adm_named *n = realloc(l->named, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        l->named = n;
        l->cap = cap;
    }
    size_t pos = (size_t)(-at - 1);
    memmove(&l->named[pos + 1], &l->named[pos], (l->count - pos) * sizeof(*l->named));
    memset(&l->named[pos], 0, sizeof(*l->named));
    strcpy(l->named[pos].name, name); /* length checked above */
    l->named[pos].lim = *t;
    l->count++;
    return 0;
}

struct srv_adm_limits *srv_adm_limits_from_cfg(const struct srv_cfg *cfg)
{
    struct srv_tenant_limits lim;
    srv_cfg_tenant_limits(cfg, NULL, &lim);
    struct srv_adm_limits *l = srv_adm_limits_new(&lim);
    for (unsigned i = 0; l != NULL && i < cfg->tenant_count; i++) {
        srv_cfg_tenant_limits(cfg, cfg->tenants[i].name, &lim);
        if (srv_adm_limits_set_tenant(l, cfg->tenants[i].name, &lim) != 0) {
            srv_adm_limits_free(l);
            l = NULL;
        }
    }
    return l;
}

static const struct adm_named *limits_named(const struct srv_adm_limits *l, const char *tenant)
{
    ptrdiff_t at = limits_find(l, tenant);
    return at >= 0 ? &l->named[at] : NULL;
}

const struct srv_tenant_limits *srv_adm_limits_get(const struct srv_adm_limits *l,
                                                   const char *tenant)
{
    const struct adm_named *n = limits_named(l, tenant);
    return n != NULL ? &n->lim : &l->defaults;
}

bool srv_adm_limits_configured(const struct srv_adm_limits *l, const char *tenant)
{
    return limits_named(l, tenant) != NULL;
}

/* ---- labels --------------------------------------------------------------------------------- */

static unsigned label_find(const struct srv_adm *a, const char *name)
{
    for (size_t i = 1; i < a->nlabels; i++)
        if (strcmp(a->labels[i]->name, name) == 0)
            return (unsigned)i;
    return 0;
}

/* Give every configured tenant of `l` a label index, adding labels while there is room (the rest
 * count as "other"). Labels are only added, never removed. */
static int labels_assign(struct srv_adm *a, struct srv_adm_limits *l)
{
    for (size_t i = 0; i < l->count; i++) {
        unsigned idx = label_find(a, l->named[i].name);
        if (idx == 0 && a->nlabels < SRV_ADM_MAX_LABELS + 1) {
            struct adm_label *lab = calloc(1, sizeof(*lab));
            if (lab == NULL)
                return -ENOMEM;
            strcpy(lab->name, l->named[i].name);
            idx = (unsigned)a->nlabels;
            a->labels[a->nlabels++] = lab;
        }
        l->named[i].label = idx;
    }
    return 0;
}

/* ---- bucket arithmetic ---------------------------------------------------------------------- */

static double lim_burst(const struct srv_tenant_limits *lim)
{
    return lim->burst ? (double)lim->burst : 1.0;
}

static void bucket_refill(struct srv_adm_tenant *t, uint64_t now_ns)
{
    if (now_ns <= t->last_ns)
        return; /* time never runs backwards for the bucket */
    if (t->lim->rate > 0) {
        t->tokens += (double)(now_ns - t->last_ns) * t->lim->rate / 1e9;
        if (t->tokens > lim_burst(t->lim))
            t->tokens = lim_burst(t->lim);
    }
    t->last_ns = now_ns;
}

static uint64_t bucket_full_ns(const struct srv_adm_tenant *t)
{
    double deficit = lim_burst(t->lim) - t->tokens;
    if (t->lim->rate <= 0 || deficit <= 0)
        return t->last_ns;
    return t->last_ns + (uint64_t)ceil(deficit / t->lim->rate * 1e9);
}

/* ---- heap of idle entries ------------------------------------------------------------------- */

static void heap_place(struct srv_adm *a, size_t i, struct srv_adm_tenant *t)
{
    a->heap[i] = t;
    t->heap_idx = i;
}

static void heap_up(struct srv_adm *a, size_t i)
{
    struct srv_adm_tenant *t = a->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (a->heap[parent]->full_ns <= t->full_ns)
            break;
        heap_place(a, i, a->heap[parent]);
        i = parent;
    }
    heap_place(a, i, t);
}

static void heap_down(struct srv_adm *a, size_t i)
{
    struct srv_adm_tenant *t = a->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= a->heap_len)
            break;
        if (c + 1 < a->heap_len && a->heap[c + 1]->full_ns < a->heap[c]->full_ns)
            c++;
        if (t->full_ns <= a->heap[c]->full_ns)
            break;
        heap_place(a, i, a->heap[c]);
        i = c;
    }
    heap_place(a, i, t);
}

static void heap_push(struct srv_adm *a, struct srv_adm_tenant *t)
{
    heap_place(a, a->heap_len++, t);
    heap_up(a, t->heap_idx);
}

static void heap_remove(struct srv_adm *a, struct srv_adm_tenant *t)
{
    size_t i = t->heap_idx;
    struct srv_adm_tenant *last = a->heap[--a->heap_len];
    t->heap_idx = NOT_IN_HEAP;
    if (last == t)
        return;
    heap_place(a, i, last);
    heap_up(a, i);
    heap_down(a, last->heap_idx);
}

/* ---- tenant table --------------------------------------------------------------------------- */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct srv_adm_tenant **table_slot(const struct srv_adm *a, const char *name, uint32_t h)
{
    struct srv_adm_tenant **p = &a->buckets[h & (a->nbuckets - 1)];
    while (*p != NULL && ((*p)->hash != h || strcmp((*p)->name, name) != 0))
        p = &(*p)->hnext;
    return p;
}

static struct srv_adm_tenant *table_find(const struct srv_adm *a, const char *name)
{
    return *table_slot(a, name, name_hash(name));
}

static void tenant_evict(struct srv_adm *a, struct srv_adm_tenant *t)
{
    heap_remove(a, t);
    struct srv_adm_tenant **p = table_slot(a, t->name, t->hash);
    assert(*p == t);
    *p = t->hnext;
    a->count--;
    a->evicted++;
    free(t);
}

static void tenant_resolve(struct srv_adm *a, struct srv_adm_tenant *t)
{
    const struct adm_named *n = limits_named(a->limits, t->name);
    t->lim = n != NULL ? &n->lim : &a->limits->defaults;
    t->label = n != NULL ? n->label : 0;
}

/* A new entry for `name` with a full bucket, evicting the longest idle entry when the table is
 * full. Returns 0, -EBUSY when every entry is busy, -ENOMEM. */
static int tenant_insert(struct srv_adm *a, const char *name, uint64_t now_ns,
                         struct srv_adm_tenant **out)
{
    if (a->count >= a->cfg.max_tenants) {
        if (a->heap_len == 0 || a->heap[0]->full_ns > now_ns)
            return -EBUSY;
        tenant_evict(a, a->heap[0]);
    }
    size_t len = strlen(name);
    struct srv_adm_tenant *t = calloc(1, sizeof(*t) + len + 1);
    if (t == NULL)
        return -ENOMEM;
    memcpy(t->name, name, len + 1);
    t->hash = name_hash(name);
    t->heap_idx = NOT_IN_HEAP;
    tenant_resolve(a, t);
    t->tokens = lim_burst(t->lim);
    t->last_ns = now_ns;
    struct srv_adm_tenant **slot = &a->buckets[t->hash & (a->nbuckets - 1)];
    t->hnext = *slot;
    *slot = t;
    a->count++;
    *out = t;
    return 0;
}

/* ---- controller ----------------------------------------------------------------------------- */

static void assert_owner(const struct srv_adm *a)
{
    assert(pthread_equal(pthread_self(), a->owner));
    (void)a;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p *= 2;
    return p;
}

struct srv_adm *srv_adm_new(const struct srv_adm_config *cfg, struct srv_adm_limits *limits)
{
    struct srv_adm *a = NULL;
    if (cfg == NULL || limits == NULL || cfg->max_tenants == 0)
        goto fail;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        goto fail;
    a->cfg = *cfg;
    if (a->cfg.workers == 0)
        a->cfg.workers = 1;
    a->owner = pthread_self();
    a->nbuckets = pow2_at_least(cfg->max_tenants);
    a->buckets = calloc(a->nbuckets, sizeof(*a->buckets));
    a->heap = calloc(cfg->max_tenants, sizeof(*a->heap));
    a->labels = calloc(SRV_ADM_MAX_LABELS + 1, sizeof(*a->labels));
    a->classes = calloc(SRV_ADM_CLASSES, sizeof(*a->classes));
    if (a->buckets == NULL || a->heap == NULL || a->labels == NULL || a->classes == NULL)
        goto fail;
    a->labels[0] = calloc(1, sizeof(**a->labels));
    if (a->labels[0] == NULL)
        goto fail;
    strcpy(a->labels[0]->name, SRV_ADM_OTHER_LABEL);
    a->nlabels = 1;
    if (labels_assign(a, limits) != 0)
        goto fail;
    a->limits = limits;
    return a;
fail:
    srv_adm_limits_free(limits);
    srv_adm_free(a);
    return NULL;
}

void srv_adm_free(struct srv_adm *a)
{
    if (a == NULL)
        return;
    for (size_t b = 0; a->buckets != NULL && b < a->nbuckets; b++) {
        struct srv_adm_tenant *t = a->buckets[b], *next;
        for (; t != NULL; t = next) {
            next = t->hnext;
            free(t);
        }
    }
    for (size_t i = 0; a->labels != NULL && i < a->nlabels; i++)
        free(a->labels[i]);
    free(a->labels);
    free(a->classes);
    free(a->buckets);
    free(a->heap);
    srv_adm_limits_free(a->limits);
    free(a);
}

/* ---- estimators ----------------------------------------------------------------------------- */

/* 2^(-age / half-life): how much of an estimate of age `age_ns` still counts. */
static double decay_factor(uint64_t age_ns)
{
    return exp2(-(double)age_ns / ((double)SRV_ADM_DECAY_HALF_LIFE_MS * 1e6));
}

static void est_add(struct adm_est *e, double sample, uint64_t now_ns)
{
    if (!e->any) {
        *e = (struct adm_est){.mean_ns = sample, .last_ns = now_ns, .any = true};
        return;
    }
    /* the old average weighs less the older it is, so a fresh sample replaces a stale one */
    double k =
        (1 - SRV_ADM_EWMA_ALPHA) * decay_factor(now_ns > e->last_ns ? now_ns - e->last_ns : 0);
    e->mean_ns = k * e->mean_ns + (1 - k) * sample;
    if (now_ns > e->last_ns)
        e->last_ns = now_ns;
}

/* The estimate as of now_ns: the average, faded with its age; 0 without evidence. */
static double est_at(const struct adm_est *e, uint64_t now_ns)
{
    if (!e->any)
        return 0;
    return e->mean_ns * decay_factor(now_ns > e->last_ns ? now_ns - e->last_ns : 0);
}

/* Half-octave size buckets: 0 for cost 0, then two per doubling. */
static unsigned cost_bucket(uint64_t cost)
{
    return cost == 0 ? 0 : 1 + (unsigned)floor(2 * log2((double)cost));
}

static uint32_t class_hash(const char *kind, unsigned bucket)
{
    return (name_hash(kind) ^ (bucket * 0x9e3779b1u)) & (SRV_ADM_CLASSES - 1);
}

/* The class of (kind, cost), or NULL. With `make`, a missing class takes a free slot of its probe
 * range, or the one of them updated longest ago. NULL for a kind name that is too long. */
static struct adm_class *class_find(const struct srv_adm *a, const char *kind, uint64_t cost,
                                    bool make)
{
    if (kind == NULL || strlen(kind) > SRV_ADM_KIND_MAX)
        return NULL;
    unsigned bucket = cost_bucket(cost);
    uint32_t h = class_hash(kind, bucket);
    struct adm_class *victim = NULL;
    for (unsigned i = 0; i < ADM_PROBE; i++) {
        struct adm_class *c = &a->classes[(h + i) & (SRV_ADM_CLASSES - 1)];
        if (c->used && c->bucket == bucket && strcmp(c->kind, kind) == 0)
            return c;
        if (victim == NULL || (victim->used && (!c->used || c->est.last_ns < victim->est.last_ns)))
            victim = c;
    }
    if (!make)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->used = true;
    victim->bucket = bucket;
    strcpy(victim->kind, kind); /* length checked above */
    return victim;
}

uint64_t srv_adm_run_estimate_ns(const struct srv_adm *a, const char *kind, uint64_t cost,
                                 uint64_t now_ns)
{
    assert_owner(a);
    if (kind == NULL)
        return (uint64_t)est_at(&a->run, now_ns);
    const struct adm_class *c = class_find(a, kind, cost, false);
    return c != NULL ? (uint64_t)est_at(&c->est, now_ns) : 0;
}

/* The completion interval to expect at now_ns: the average, or the open interval since the last
 * completion counted as one more sample when it is already longer. 0 when unknown. */
static double drain_interval_ns(const struct srv_adm *a, uint64_t now_ns)
{
    if (a->completions < 2)
        return 0;
    double open = now_ns > a->last_completion_ns ? (double)(now_ns - a->last_completion_ns) : 0;
    if (open <= a->ewma_interval_ns)
        return a->ewma_interval_ns;
    return SRV_ADM_EWMA_ALPHA * open + (1 - SRV_ADM_EWMA_ALPHA) * a->ewma_interval_ns;
}

/* The retry hint for queue_full and deadline_unmeetable: the time to drain the queue at the
 * current completion rate, 1 ms..SRV_ADM_RETRY_MAX_S; 1 s while the rate is unknown. The small
 * slack keeps an exact 10 s from becoming 10.001 through rounding noise. */
static uint64_t drain_retry_ms(const struct srv_adm *a, size_t depth, uint64_t now_ns)
{
    double interval = drain_interval_ns(a, now_ns);
    if (interval <= 0)
        return 1000;
    double ms = ceil((double)depth * interval / 1e6 - 1e-6);
    if (ms < 1)
        return 1;
    return ms > SRV_ADM_RETRY_MAX_S * 1000.0 ? SRV_ADM_RETRY_MAX_S * 1000u : (uint64_t)ms;
}

size_t srv_adm_jobs_ahead(const struct srv_adm_req *req)
{
    if (req->active_tenants == 0)
        return req->queue_depth;
    /* the tenant joins the round if it has nothing queued yet */
    size_t rivals = req->active_tenants + (req->tenant_queue_depth == 0 ? 1 : 0);
    size_t fair = (req->tenant_queue_depth + 1) * rivals;
    return fair < req->queue_depth ? fair : req->queue_depth;
}

uint64_t srv_adm_expected_wait_ns(const struct srv_adm *a, size_t queue_depth)
{
    return (uint64_t)(a->run.mean_ns * (double)queue_depth / a->cfg.workers);
}

static unsigned req_jobs(const struct srv_adm_req *req)
{
    return req->jobs > 0 ? req->jobs : 1;
}

static int refuse(struct srv_adm *a, struct srv_adm_decision *out, enum srv_adm_reason r,
                  uint64_t retry_ms, unsigned label)
{
    out->reason = r;
    out->status = srv_adm_reason_status(r);
    out->retry_after_ms = retry_ms > 0 ? retry_ms : 1;
    uint64_t s = (out->retry_after_ms + 999) / 1000;
    out->retry_after_s = s > 86400 ? 86400 : (unsigned)s;
    out->held = NULL;
    a->labels[label]->refused[r]++;
    a->refused++;
    return r == SRV_ADM_OUT_OF_MEMORY ? -ENOMEM : -EAGAIN;
}

/* The retry slot of a rate-limited request of `jobs` at now_ns: when its tokens will have
 * dripped in, and after the slot last promised (`promised_ns`) by one request's worth of tokens,
 * at most one bucket ahead. */
static uint64_t rate_slot_ns(const struct srv_tenant_limits *lim, double tokens, unsigned jobs,
                             uint64_t promised_ns, uint64_t now_ns)
{
    double per_ns = lim->rate / 1e9;
    double ready = (double)now_ns + ceil((jobs - tokens) / per_ns);
    if (promised_ns > now_ns && (double)promised_ns + jobs / per_ns > ready)
        ready = (double)promised_ns + jobs / per_ns;
    double horizon = (double)now_ns + (lim_burst(lim) > jobs ? lim_burst(lim) : jobs) / per_ns;
    if (ready > horizon)
        ready = horizon;
    double most = (double)now_ns + 86400e9;
    return ready > most ? (uint64_t)most : (uint64_t)ceil(ready);
}

/* The deadline check (see admission.h): true when the request's last job cannot be expected to
 * finish by deadline_ns. */
static bool deadline_unmeetable(const struct srv_adm *a, const struct srv_adm_req *req,
                                uint64_t deadline_ns)
{
    unsigned jobs = req_jobs(req);
    uint64_t left = deadline_ns > req->now_ns ? deadline_ns - req->now_ns : 0;
    if (left == 0)
        return true;
    if (req->queue_depth + jobs <= req->idle_workers)
        return false; /* every job starts at once: nothing to gain by refusing */
    /* the last job must also run before the deadline, not only start: it waits behind the
     * request's own earlier jobs too */
    struct srv_adm_req last = *req;
    last.tenant_queue_depth += jobs - 1;
    last.queue_depth += jobs - 1;
    size_t ahead = srv_adm_jobs_ahead(&last);
    ahead = ahead > req->idle_workers ? ahead - req->idle_workers : 0;
    double wait = est_at(&a->run, req->now_ns) * (double)ahead / a->cfg.workers;
    /* the estimate errs in proportion to the wait (the workers' CPU share moves): keep a tenth of
     * it in hand, or jobs admitted at the edge miss their deadline mid-run */
    wait += wait / SRV_ADM_WAIT_SLACK_DIV;
    double run = (double)srv_adm_run_estimate_ns(a, req->kind, req->cost, req->now_ns);
    return wait + run > (double)left;
}

/* The four checks in order against the tenant's state (tokens, inflight, promised slot). Returns
 * the reason and sets *retry_ms (and *slot_ns for a rate-limited refusal) for a refusal,
 * SRV_ADM_ADMITTED otherwise. */
static enum srv_adm_reason check(const struct srv_adm *a, const struct srv_adm_req *req,
                                 const struct srv_tenant_limits *lim, double tokens,
                                 unsigned inflight, uint64_t promised_ns, uint64_t deadline_ns,
                                 uint64_t *retry_ms, uint64_t *slot_ns)
{
    unsigned jobs = req_jobs(req);
    if (lim->rate > 0 && tokens < jobs) {
        *slot_ns = rate_slot_ns(lim, tokens, jobs, promised_ns, req->now_ns);
        *retry_ms = (*slot_ns - req->now_ns + 999999) / 1000000;
        return SRV_ADM_TENANT_RATE_LIMITED;
    }
    if (lim->max_inflight != 0 && (uint64_t)inflight + jobs > lim->max_inflight) {
        *retry_ms = 1000; /* a slot frees when one of its requests ends: no better estimate */
        return SRV_ADM_TENANT_CONCURRENCY_LIMITED;
    }
    if (a->cfg.queue_capacity != 0 && req->queue_depth + jobs > a->cfg.queue_capacity) {
        *retry_ms = drain_retry_ms(a, req->queue_depth, req->now_ns);
        return SRV_ADM_QUEUE_FULL;
    }
    if (deadline_ns != 0 && deadline_unmeetable(a, req, deadline_ns)) {
        *retry_ms = drain_retry_ms(a, req->queue_depth, req->now_ns);
        return SRV_ADM_DEADLINE_UNMEETABLE;
    }
    return SRV_ADM_ADMITTED;
}

static uint64_t capped_deadline(const struct srv_adm_req *req, unsigned max_timeout_ms)
{
    if (max_timeout_ms == 0)
        return req->deadline_ns;
    uint64_t cap = req->now_ns + (uint64_t)max_timeout_ms * 1000000u;
    return req->deadline_ns == 0 || req->deadline_ns > cap ? cap : req->deadline_ns;
}

int srv_adm_decide(struct srv_adm *a, const struct srv_adm_req *req, struct srv_adm_decision *out)
{
    assert_owner(a);
    if (req == NULL || out == NULL || !tenant_name_valid(req->tenant))
        return -EINVAL;
    struct srv_adm_tenant *t = table_find(a, req->tenant);
    const struct adm_named *named = t == NULL ? limits_named(a->limits, req->tenant) : NULL;
    const struct srv_tenant_limits *lim = t ? t->lim : named ? &named->lim : &a->limits->defaults;
    unsigned label = t ? t->label : named ? named->label : 0;

    memset(out, 0, sizeof(*out));
    out->weight = lim->weight ? lim->weight : 1;
    out->max_timeout_ms = lim->max_timeout_ms;
    out->deadline_ns = capped_deadline(req, lim->max_timeout_ms);
    out->tenant_label = a->labels[label]->name;

    if (t != NULL)
        bucket_refill(t, req->now_ns);
    uint64_t retry_ms = 0, slot_ns = 0;
    enum srv_adm_reason r = check(a, req, lim, t ? t->tokens : lim_burst(lim), t ? t->inflight : 0,
                                  t ? t->promised_ns : 0, out->deadline_ns, &retry_ms, &slot_ns);
    if (r == SRV_ADM_TENANT_RATE_LIMITED && t != NULL)
        t->promised_ns = slot_ns; /* the next refusal gets the token after this one */
    if (r != SRV_ADM_ADMITTED)
        return refuse(a, out, r, retry_ms, label);
    if (t == NULL) {
        int rc = tenant_insert(a, req->tenant, req->now_ns, &t);
        if (rc == -EBUSY)
            return refuse(a, out, SRV_ADM_TOO_MANY_TENANTS, 1000, label);
        if (rc != 0)
            return refuse(a, out, SRV_ADM_OUT_OF_MEMORY, 1000, label);
    }
    unsigned jobs = req_jobs(req);
    if (lim->rate > 0)
        t->tokens -= jobs;
    if (t->inflight == 0 && t->heap_idx != NOT_IN_HEAP)
        heap_remove(a, t);
    t->inflight += jobs;
    a->inflight += jobs;
    a->admitted++;
    out->held = t;
    out->held_jobs = jobs;
    return 0;
}

void srv_adm_release(struct srv_adm *a, struct srv_adm_decision *d, uint64_t now_ns)
{
    assert_owner(a);
    struct srv_adm_tenant *t = d != NULL ? d->held : NULL;
    if (t == NULL)
        return;
    unsigned jobs = d->held_jobs > 0 ? d->held_jobs : 1;
    d->held = NULL;
    d->held_jobs = 0;
    assert(t->inflight >= jobs && a->inflight >= jobs);
    a->inflight -= jobs;
    t->inflight -= jobs;
    if (t->inflight != 0)
        return;
    bucket_refill(t, now_ns);
    t->full_ns = bucket_full_ns(t);
    heap_push(a, t);
}

static void ewma(double *avg, double sample, bool first)
{
    *avg = first ? sample : SRV_ADM_EWMA_ALPHA * sample + (1 - SRV_ADM_EWMA_ALPHA) * *avg;
}

void srv_adm_observe(struct srv_adm *a, uint64_t now_ns, uint64_t queue_wait_ns, uint64_t run_ns)
{
    srv_adm_observe_job(a, NULL, 0, now_ns, queue_wait_ns, run_ns);
}

void srv_adm_observe_job(struct srv_adm *a, const char *kind, uint64_t cost, uint64_t now_ns,
                         uint64_t queue_wait_ns, uint64_t run_ns)
{
    assert_owner(a);
    bool first = a->completions == 0;
    ewma(&a->ewma_wait_ns, (double)queue_wait_ns, first);
    est_add(&a->run, (double)run_ns, now_ns);
    struct adm_class *c = class_find(a, kind, cost, true);
    if (c != NULL)
        est_add(&c->est, (double)run_ns, now_ns);
    if (!first) {
        double gap = now_ns > a->last_completion_ns ? (double)(now_ns - a->last_completion_ns) : 0;
        ewma(&a->ewma_interval_ns, gap, a->completions == 1);
    }
    if (first || now_ns > a->last_completion_ns)
        a->last_completion_ns = now_ns;
    a->completions++;
}

void srv_adm_limits_swap(struct srv_adm *a, struct srv_adm_limits *limits)
{
    assert_owner(a);
    /* Labels first: on failure the remaining new tenants count as "other", which is the bound
     * working as documented rather than an error worth refusing a reload for. */
    (void)labels_assign(a, limits);
    srv_adm_limits_free(a->limits);
    a->limits = limits;
    for (size_t b = 0; b < a->nbuckets; b++) {
        for (struct srv_adm_tenant *t = a->buckets[b]; t != NULL; t = t->hnext) {
            tenant_resolve(a, t);
            if (t->tokens > lim_burst(t->lim))
                t->tokens = lim_burst(t->lim);
            if (t->heap_idx != NOT_IN_HEAP)
                t->full_ns = bucket_full_ns(t);
        }
    }
    for (size_t i = a->heap_len / 2; i-- > 0;)
        heap_down(a, i);
}

const struct srv_adm_limits *srv_adm_limits(const struct srv_adm *a)
{
    return a->limits;
}

unsigned srv_adm_max_jobs(const struct srv_adm *a, const char *tenant)
{
    assert_owner(a);
    const struct srv_tenant_limits *lim = srv_adm_limits_get(a->limits, tenant);
    uint64_t most = UINT_MAX;
    if (lim->max_inflight != 0 && lim->max_inflight < most)
        most = lim->max_inflight;
    if (lim->rate > 0 && lim_burst(lim) < (double)most)
        most = (uint64_t)lim_burst(lim);
    if (a->cfg.queue_capacity != 0 && a->cfg.queue_capacity < most)
        most = a->cfg.queue_capacity;
    return most == UINT_MAX ? 0 : (unsigned)most;
}

size_t srv_adm_sweep(struct srv_adm *a, uint64_t now_ns)
{
    assert_owner(a);
    size_t n = 0;
    while (a->heap_len > 0 && a->heap[0]->full_ns <= now_ns) {
        tenant_evict(a, a->heap[0]);
        n++;
    }
    return n;
}

unsigned srv_adm_tenant_inflight(const struct srv_adm *a, const char *tenant)
{
    assert_owner(a);
    if (!tenant_name_valid(tenant))
        return 0;
    const struct srv_adm_tenant *t = table_find(a, tenant);
    return t != NULL ? t->inflight : 0;
}

uint64_t srv_adm_refusals(const struct srv_adm *a, enum srv_adm_reason reason, const char *label)
{
    assert_owner(a);
    if ((unsigned)reason >= SRV_ADM_REASON_COUNT || label == NULL)
        return 0;
    for (size_t i = 0; i < a->nlabels; i++)
        if (strcmp(a->labels[i]->name, label) == 0)
            return a->labels[i]->refused[reason];
    return 0;
}

void srv_adm_refusals_foreach(const struct srv_adm *a, srv_adm_refusal_fn *fn, void *arg)
{
    assert_owner(a);
    for (unsigned r = 1; r < SRV_ADM_REASON_COUNT; r++)
        for (size_t i = 0; i < a->nlabels; i++)
            if (a->labels[i]->refused[r] != 0)
                fn(reason_names[r], a->labels[i]->name, a->labels[i]->refused[r], arg);
}

void srv_adm_stats_get(const struct srv_adm *a, struct srv_adm_stats *out)
{
    assert_owner(a);
    memset(out, 0, sizeof(*out));
    out->tenants = a->count;
    out->max_tenants = a->cfg.max_tenants;
    out->inflight = a->inflight;
    out->admitted = a->admitted;
    out->refused = a->refused;
    out->evicted = a->evicted;
    out->completions = a->completions;
    out->ewma_wait_ns = a->ewma_wait_ns;
    out->ewma_run_ns = a->run.mean_ns;
    out->drain_per_s =
        a->completions >= 2 && a->ewma_interval_ns > 0 ? 1e9 / a->ewma_interval_ns : 0;
}
