/* reqid.c - request ids and tenant names: generating unique ids cheaply, validating ids and
 * tenants that arrive in headers.
 *
 * Design: an id is 144 bits written as 29 characters of lower-case Crockford base32
 * (0-9 a-z without i l o u, so it survives case folding and is easy to read aloud):
 *   64 bits  random, drawn per thread from its PRNG (seeded from getrandom() once per thread),
 *   32 bits  the thread's index, taken from a process-wide atomic counter on first use,
 *   48 bits  a per-thread counter.
 * Inside a process (thread index, counter) never repeats, so ids are unique without any shared
 * write per id; across processes and hosts the random part makes a collision astronomically
 * unlikely. Each thread's block lives in thread-local storage: no lock and no system call per id.
 * A forked child notices the new fork generation and takes a fresh block, so it never repeats
 * ids its parent hands out. When a thread's counter would wrap it takes a fresh block too.
 */
#include "context/ctx.h"
#include "context/internal.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#define REQID_BYTES       18 /* 8 random + 4 thread index + 6 counter */
#define REQID_CHARS       29 /* ceil(144 / 5) */
#define REQID_BUF_MIN     33 /* as promised by the header; leaves room to grow the format */
#define REQID_COUNTER_LIM (UINT64_C(1) << 48)

struct reqid_block {
    uint64_t random;
    uint32_t thread_index;
    uint64_t counter; /* next value, < REQID_COUNTER_LIM */
    unsigned gen;     /* ctx_rand_fork_gen() when taken */
    bool ready;
};

static _Thread_local struct reqid_block tls_reqid;
static atomic_uint_fast32_t next_thread_index;

static const char b32_digits[] = "0123456789abcdefghjkmnpqrstvwxyz";

static void reqid_block_take(struct reqid_block *b, unsigned gen)
{
    b->random = ctx_rand_u64();
    b->thread_index =
        (uint32_t)atomic_fetch_add_explicit(&next_thread_index, 1, memory_order_relaxed);
    b->counter = 0;
    b->gen = gen;
    b->ready = true;
}

static void put_be(uint8_t *out, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

/* 5 bits per character, most significant first; the last character is zero-padded. */
static size_t b32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = b32_digits[(acc >> bits) & 31];
        }
    }
    if (bits > 0)
        out[o++] = b32_digits[(acc << (5 - bits)) & 31];
    out[o] = '\0';
    return o;
}

size_t ctx_request_id_generate(char *buf, size_t size)
{
    struct reqid_block *b = &tls_reqid;
    uint8_t raw[REQID_BYTES];

    if (buf == NULL || size < REQID_BUF_MIN)
        return 0;
    unsigned gen = ctx_rand_fork_gen();
    if (!b->ready || b->gen != gen || b->counter >= REQID_COUNTER_LIM)
        reqid_block_take(b, gen);
    put_be(raw, b->random, 8);
    put_be(raw + 8, b->thread_index, 4);
    put_be(raw + 12, b->counter++, 6);
    return b32_encode(raw, sizeof(raw), buf);
}

bool ctx_request_id_valid(const char *id, size_t len)
{
    if (id == NULL || len == 0 || len > CTX_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch < 0x21 || ch > 0x7e)
            return false;
    }
    return true;
}

static bool tenant_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

bool ctx_tenant_valid(const char *t, size_t len)
{
    if (t == NULL || len == 0 || len > CTX_TENANT_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!tenant_char((unsigned char)t[i]))
            return false;
    }
    return true;
}
