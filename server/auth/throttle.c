/* throttle.c - failed authentications per client address, in a table of fixed size.
 *
 * Design: open addressing over a power-of-two array of slots. An address hashes (FNV-1a over a
 * random per-table seed, so a client cannot choose addresses that collide on purpose) to a home
 * slot and lives in one of the THR_PROBE slots from there. A slot holds the address, the start of
 * its failure window, the failures in it, the end of its block and its last failure. Looking an
 * address up reads at most THR_PROBE slots; adding one takes an empty slot, else one whose window
 * and block are both over, else the slot of the probe run least recently failed that is not
 * blocked, else the least recently failed one: the table never grows, so 10,000 (or 10 million)
 * addresses cost the same memory as 16. An evicted address starts again from zero failures; the
 * block of an address that keeps failing is what the eviction order protects.
 *
 * Threads: the loop's only; nothing is locked.
 */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "server/auth/internal.h"

#define THR_PROBE 8

struct thr_slot {
    uint64_t window_start; /* 0: the slot is empty */
    uint64_t blocked_until;
    uint64_t last_fail;
    unsigned failures;
    unsigned char family;
    unsigned char addr[16];
};

struct srv_auth_throttle {
    size_t mask;
    uint32_t seed;
    struct thr_slot slot[];
};

struct srv_auth_throttle *srv_auth_throttle_new(unsigned slots)
{
    size_t n = 16;
    while (n < slots)
        n *= 2;
    struct srv_auth_throttle *t = calloc(1, sizeof(*t) + n * sizeof(struct thr_slot));
    if (t == NULL)
        return NULL;
    t->mask = n - 1;
    if (RAND_bytes((unsigned char *)&t->seed, sizeof(t->seed)) != 1)
        t->seed = (uint32_t)(uintptr_t)t; /* still spreads; only collision-resistance is lost */
    return t;
}

void srv_auth_throttle_free(struct srv_auth_throttle *t)
{
    free(t);
}

static size_t thr_len(unsigned char family)
{
    return family == 4 ? 4 : family == 6 ? 16 : 0;
}

static size_t thr_home(const struct srv_auth_throttle *t, unsigned char family,
                       const unsigned char *addr)
{
    uint32_t h = 2166136261u ^ t->seed;
    h = (h ^ family) * 16777619u;
    for (size_t i = 0; i < thr_len(family); i++)
        h = (h ^ addr[i]) * 16777619u;
    return h & t->mask;
}

static bool thr_same(const struct thr_slot *s, unsigned char family, const unsigned char *addr)
{
    return s->window_start != 0 && s->family == family &&
           memcmp(s->addr, addr, thr_len(family)) == 0;
}

static struct thr_slot *thr_find(const struct srv_auth_throttle *t, unsigned char family,
                                 const unsigned char *addr)
{
    size_t home = thr_home(t, family, addr);
    for (size_t i = 0; i < THR_PROBE; i++) {
        const struct thr_slot *s = &t->slot[(home + i) & t->mask];
        if (thr_same(s, family, addr))
            return (struct thr_slot *)s;
    }
    return NULL;
}

/* The slot a new address takes (see the design note). */
static struct thr_slot *thr_victim(struct srv_auth_throttle *t, size_t home, uint64_t now,
                                   uint64_t window_ns)
{
    struct thr_slot *free_slot = NULL, *open = NULL, *any = NULL;
    for (size_t i = 0; i < THR_PROBE && free_slot == NULL; i++) {
        struct thr_slot *s = &t->slot[(home + i) & t->mask];
        bool blocked = s->blocked_until > now;
        if (s->window_start == 0 || (!blocked && now - s->window_start >= window_ns))
            free_slot = s;
        else if (!blocked && (open == NULL || s->last_fail < open->last_fail))
            open = s;
        else if (any == NULL || s->last_fail < any->last_fail)
            any = s;
    }
    return free_slot != NULL ? free_slot : open != NULL ? open : any;
}

uint64_t srv_auth_throttle_blocked(const struct srv_auth_throttle *t, unsigned char family,
                                   const unsigned char *addr, uint64_t now)
{
    const struct thr_slot *s = thr_find(t, family, addr);
    return s != NULL && s->blocked_until > now ? s->blocked_until - now : 0;
}

unsigned srv_auth_throttle_fail(struct srv_auth_throttle *t,
                                const struct srv_auth_throttle_policy *p, unsigned char family,
                                const unsigned char *addr, uint64_t now, bool *started)
{
    *started = false;
    if (p->failures == 0)
        return 0;
    struct thr_slot *s = thr_find(t, family, addr);
    if (s == NULL) {
        s = thr_victim(t, thr_home(t, family, addr), now, p->window_ns);
        memset(s, 0, sizeof(*s));
        s->family = family;
        memcpy(s->addr, addr, thr_len(family));
    }
    if (s->window_start == 0 || now - s->window_start >= p->window_ns) {
        s->window_start = now != 0 ? now : 1;
        s->failures = 0;
    }
    s->failures++;
    s->last_fail = now;
    if (s->failures >= p->failures && s->blocked_until <= now) {
        s->blocked_until = now + p->block_ns;
        *started = true;
    }
    return s->failures;
}

void srv_auth_throttle_count(const struct srv_auth_throttle *t, uint64_t now, unsigned *throttled,
                             unsigned *tracked)
{
    unsigned b = 0, n = 0;
    for (size_t i = 0; i <= t->mask; i++) {
        n += t->slot[i].window_start != 0;
        b += t->slot[i].blocked_until > now;
    }
    *throttled = b;
    *tracked = n;
}
