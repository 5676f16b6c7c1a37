/* rand.c - fast per-thread random numbers for trace ids, span ids and request ids.
 *
 * Design: each thread owns a xoshiro256** state in thread-local storage, seeded from getrandom()
 * on its first use, so an id costs a few arithmetic operations and no system call. Only the
 * owning thread touches its state, so there is no lock and no atomic on the fast path except one
 * relaxed load of the fork generation.
 *
 * fork(): a child inherits the parent's thread-local states and would repeat the parent's ids.
 * A pthread_atfork() child handler bumps `fork_gen`; a state whose recorded generation differs is
 * reseeded on its next use. If the handler cannot be registered (out of memory at start), the
 * process id serves as the generation instead (one getpid() system call per draw, still correct).
 *
 * Not a cryptographic generator: ids must be unique and unpredictable enough to not collide, not
 * secret. ctx_rand_os() never fails: without getrandom() it mixes clocks, pid, tid and addresses.
 */
#include "context/internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct rand_state {
    uint64_t s[4];
    unsigned gen; /* ctx_rand_fork_gen() when seeded */
    bool seeded;
};

static _Thread_local struct rand_state tls_rand;

static atomic_uint fork_gen; /* bumped in every forked child */
static bool atfork_failed;   /* written once under rand_once */
static pthread_once_t rand_once = PTHREAD_ONCE_INIT;

static void rand_on_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_gen, 1, memory_order_relaxed);
}

static void rand_register_atfork(void)
{
    if (pthread_atfork(NULL, NULL, rand_on_fork_child) != 0)
        atfork_failed = true;
}

unsigned ctx_rand_fork_gen(void)
{
    if (pthread_once(&rand_once, rand_register_atfork) != 0)
        abort(); /* only fails on a corrupted once control */
    if (atfork_failed)
        return (unsigned)getpid();
    return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

/* splitmix64 finaliser: spreads the weak fallback entropy over every bit. */
static uint64_t rand_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void rand_fallback(uint8_t *p, size_t len)
{
    static atomic_uint_fast64_t calls;
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    uint64_t x = (uint64_t)rt.tv_sec * 1000000000ULL + (uint64_t)rt.tv_nsec;
    x ^= rand_mix((uint64_t)mono.tv_nsec ^ ((uint64_t)getpid() << 32));
    x ^= rand_mix((uint64_t)gettid() ^ (uint64_t)(uintptr_t)&rt);
    x ^= rand_mix(atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed));
    while (len > 0) {
        x = rand_mix(x);
        size_t n = len < sizeof(x) ? len : sizeof(x);
        memcpy(p, &x, n);
        p += n;
        len -= n;
    }
}

void ctx_rand_os(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rand_fallback(p, len);
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void rand_seed(struct rand_state *r, unsigned gen)
{
    ctx_rand_os(r->s, sizeof(r->s));
    /* xoshiro's one forbidden state */
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 0x9e3779b97f4a7c15ULL;
    r->gen = gen;
    r->seeded = true;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t ctx_rand_u64(void)
{
    struct rand_state *r = &tls_rand;
    unsigned gen = ctx_rand_fork_gen();
    if (!r->seeded || r->gen != gen)
        rand_seed(r, gen);

    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}
