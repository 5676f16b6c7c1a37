/* internal.h - pool internals shared by the pool sources and the unit tests; not a public
 * interface.
 *
 * The fair queue (fairq.c) holds the queued jobs: one FIFO per tenant, found through a hash table
 * keyed by the tenant string, and a circular round of the tenants that have queued jobs, served by
 * deficit round robin. It has no lock of its own: pool.c calls it under the pool lock.
 */
#ifndef SPINDLE_POOL_INTERNAL_H
#define SPINDLE_POOL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "pool/pool.h"

/* One tenant's FIFO of queued jobs (through job->next/prev) and its place in the round. A tenant
 * exists only while it has queued jobs: it is created by the first push and freed by the removal
 * of its last job, so any number of distinct tenants costs memory only while they have work. */
struct pool_tenant {
    struct pool_tenant *hnext;         /* hash chain */
    struct pool_tenant *rnext, *rprev; /* the round (circular) */
    struct pool_job *head, *tail;      /* oldest, newest */
    size_t queued;                     /* jobs in the FIFO, >= 1 */
    unsigned weight;                   /* jobs per turn (quantum), from the latest push */
    unsigned deficit;                  /* jobs left in the current turn; 0 = turn not started */
    bool jumper;                       /* joined ahead of the cursor; its turn has not begun */
    bool served;                       /* has begun a turn since it joined the round */
    uint64_t hash;
    char name[CTX_TENANT_MAX + 1];
};

struct pool_fairq {
    struct pool_tenant **buckets;
    size_t nbuckets;            /* power of two */
    size_t ntenants;            /* tenants with queued jobs */
    size_t queued;              /* jobs in every FIFO */
    struct pool_tenant *cursor; /* whose turn it is; NULL when empty */
    bool jumped;                /* a newcomer went ahead since a waiting tenant last began a turn */
    uint64_t seed;              /* random hash key, so tenant names cannot be chosen to collide */
};

/* Empty queue. Returns 0 or -ENOMEM. */
int pool_fairq_init(struct pool_fairq *q);

/* Free the tenants and the table. Jobs still queued are borrowed and left alone. */
void pool_fairq_fini(struct pool_fairq *q);

/* Append `job` (borrowed) to the FIFO of `tenant` (borrowed, at most CTX_TENANT_MAX bytes; ""
 * is a tenant like any other), creating the tenant at the end of the round. Sets the tenant's
 * weight to `weight` (0 = 1) and job->tenant. Returns 0, -EINVAL for a too long name or -ENOMEM. */
int pool_fairq_push(struct pool_fairq *q, struct pool_job *job, const char *tenant,
                    unsigned weight);

/* Remove and return the next job by deficit round robin (`weight` jobs per tenant per turn, FIFO
 * within a tenant), or NULL when empty. */
struct pool_job *pool_fairq_pop(struct pool_fairq *q);

/* Remove `job`, which must be queued in `q`, in O(1). */
void pool_fairq_remove(struct pool_fairq *q, struct pool_job *job);

/* Jobs queued for `tenant` (borrowed); 0 for an unknown tenant. */
size_t pool_fairq_tenant_queued(const struct pool_fairq *q, const char *tenant);

/* Tenants that exist now (each has queued jobs). For tests and statistics. */

#endif
