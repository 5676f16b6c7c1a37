/* fairq.c - the pool's queued jobs: a FIFO per tenant served by deficit round robin.
 *
 * Design. Each tenant with queued jobs has a struct pool_tenant holding a doubly linked FIFO of its
 * jobs (job->next/prev), found by name in a chained hash table (power-of-two buckets, grown and
 * shrunk with the number of tenants, keyed with a random seed). The tenants also form one circular
 * round; `cursor` is the tenant whose turn it is. A turn starts by granting the tenant `weight`
 * jobs (its deficit); each pop takes the head of the cursor's FIFO and spends one; when the deficit
 * is spent the cursor moves on. Every job costs one unit: job lengths are unknown before they run,
 * and the contract only promises shares of starts. A new tenant joins at the end of the round
 * (just before the cursor), so a tenant with many queued jobs delays a newcomer's first job by at
 * most one turn of each tenant. When the cursor is about to begin another turn (it has had one
 * since it joined, and the new one has not begun), the newcomer goes first
 * instead (a sparse tenant, below its share, gets low latency, as new flows do in FQ-CoDel), but
 * only once until a tenant that was already waiting has begun a turn: newcomers cannot starve
 * the round.
 *
 * Invariants: every tenant in the table is in the round and has queued >= 1; a tenant whose last
 * job leaves (pop or remove) is unlinked from both and freed at once, so memory is bounded by the
 * queued jobs. Removal of any job is O(1) (plus the hash chain of its tenant when it empties).
 *
 * Threads: none of its own; the pool calls every function under the pool lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "pool/internal.h"

#define FAIRQ_MIN_BUCKETS 64

static uint64_t fairq_hash(uint64_t seed, const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed; /* FNV-1a, then a 64-bit finaliser */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

int pool_fairq_init(struct pool_fairq *q)
{
    memset(q, 0, sizeof(*q));
    q->buckets = calloc(FAIRQ_MIN_BUCKETS, sizeof(*q->buckets));
    if (!q->buckets)
        return -ENOMEM;
    q->nbuckets = FAIRQ_MIN_BUCKETS;
    if (getrandom(&q->seed, sizeof(q->seed), GRND_NONBLOCK) != sizeof(q->seed))
        q->seed = (uint64_t)(uintptr_t)q ^ 0x9e3779b97f4a7c15ULL; /* still works, just guessable */
    return 0;
}

void pool_fairq_fini(struct pool_fairq *q)
{
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct pool_tenant *t = q->buckets[i];
        while (t) {
            struct pool_tenant *next = t->hnext;
            free(t);
            t = next;
        }
    }
    free(q->buckets);
    memset(q, 0, sizeof(*q));
}

/* Move every tenant into a table of `n` buckets. On out of memory keep the old table: chains get
 * longer, nothing breaks. */
static void fairq_rehash(struct pool_fairq *q, size_t n)
{
    struct pool_tenant **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct pool_tenant *t = q->buckets[i];
        while (t) {
            struct pool_tenant *next = t->hnext;
            size_t k = t->hash & (n - 1);
            t->hnext = b[k];
            b[k] = t;
            t = next;
        }
    }
    free(q->buckets);
    q->buckets = b;
    q->nbuckets = n;
}

static struct pool_tenant *fairq_find(const struct pool_fairq *q, const char *name, size_t len,
                                      uint64_t hash)
{
    for (struct pool_tenant *t = q->buckets[hash & (q->nbuckets - 1)]; t; t = t->hnext) {
        if (t->hash == hash && strncmp(t->name, name, len) == 0 && t->name[len] == '\0')
            return t;
    }
    return NULL;
}

static struct pool_tenant *fairq_tenant_new(struct pool_fairq *q, const char *name, size_t len,
                                            uint64_t hash)
{
    struct pool_tenant *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    memcpy(t->name, name, len);
    t->hash = hash;
    size_t k = hash & (q->nbuckets - 1);
    t->hnext = q->buckets[k];
    q->buckets[k] = t;
    if (!q->cursor) {
        t->rnext = t->rprev = t;
        q->cursor = t;
    } else { /* end of the round: just before the cursor */
        t->rnext = q->cursor;
        t->rprev = q->cursor->rprev;
        t->rprev->rnext = t;
        q->cursor->rprev = t;
        if (q->cursor->deficit == 0 && q->cursor->served && !q->jumped) {
            /* The cursor is about to begin another turn: the newcomer, which had nothing
             * queued, goes first (once between two turns of tenants already waiting, so a
             * stream of newcomers cannot hold them back). */
            q->cursor = t;
            q->jumped = true;
            t->jumper = true;
        }
    }
    if (++q->ntenants > q->nbuckets)
        fairq_rehash(q, q->nbuckets * 2);
    return t;
}

static void fairq_tenant_free(struct pool_fairq *q, struct pool_tenant *t)
{
    if (t->rnext == t) {
        q->cursor = NULL;
    } else {
        if (q->cursor == t)
            q->cursor = t->rnext; /* its turn ends with its queue */
        t->rprev->rnext = t->rnext;
        t->rnext->rprev = t->rprev;
    }
    struct pool_tenant **pp = &q->buckets[t->hash & (q->nbuckets - 1)];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    free(t);
    if (--q->ntenants < q->nbuckets / 8 && q->nbuckets > FAIRQ_MIN_BUCKETS)
        fairq_rehash(q, q->nbuckets / 2);
}

int pool_fairq_push(struct pool_fairq *q, struct pool_job *job, const char *tenant, unsigned weight)
{
    size_t len = strnlen(tenant, CTX_TENANT_MAX + 1);
    if (len > CTX_TENANT_MAX)
        return -EINVAL;
    uint64_t hash = fairq_hash(q->seed, tenant, len);
    struct pool_tenant *t = fairq_find(q, tenant, len, hash);
    if (!t) {
        t = fairq_tenant_new(q, tenant, len, hash);
        if (!t)
            return -ENOMEM;
    }
    t->weight = weight ? weight : 1;
    job->tenant = t;
    job->next = NULL;
    job->prev = t->tail;
    if (t->tail)
        t->tail->next = job;
    else
        t->head = job;
    t->tail = job;
    t->queued++;
    q->queued++;
    return 0;
}

void pool_fairq_remove(struct pool_fairq *q, struct pool_job *job)
{
    struct pool_tenant *t = job->tenant;
    if (job->prev)
        job->prev->next = job->next;
    else
        t->head = job->next;
    if (job->next)
        job->next->prev = job->prev;
    else
        t->tail = job->prev;
    job->next = job->prev = NULL;
    job->tenant = NULL;
    q->queued--;
    if (--t->queued == 0)
        fairq_tenant_free(q, t);
}

struct pool_job *pool_fairq_pop(struct pool_fairq *q)
{
    struct pool_tenant *t = q->cursor;
    if (!t)
        return NULL;
    if (t->deficit == 0) {
        t->deficit = t->weight;
        t->served = true;
        if (t->jumper)
            t->jumper = false;
        else
            q->jumped = false; /* a tenant that waited has its turn: the next newcomer may jump */
    }
    struct pool_job *job = t->head;
    bool last = t->queued == 1;
    bool turn_over = --t->deficit == 0;
    pool_fairq_remove(q, job); /* frees t and moves the cursor when it was the last job */
    if (!last && turn_over)
        q->cursor = t->rnext;
    return job;
}

size_t pool_fairq_tenant_queued(const struct pool_fairq *q, const char *tenant)
{
    size_t len = strnlen(tenant, CTX_TENANT_MAX + 1);
    if (len > CTX_TENANT_MAX)
        return 0;
    const struct pool_tenant *t = fairq_find(q, tenant, len, fairq_hash(q->seed, tenant, len));
    return t ? t->queued : 0;
}
