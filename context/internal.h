/* internal.h - helpers shared by the context/ sources (and their unit tests); not public API.
 *
 * Randomness for trace ids and request ids comes from a per-thread PRNG seeded from the kernel
 * once per thread (and again in a forked child, so parent and child never share a sequence).
 */
#ifndef SPINDLE_CTX_INTERNAL_H
#define SPINDLE_CTX_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Next 64 random bits from the calling thread's PRNG (xoshiro256**). The first call on a thread,
 * and the first call after a fork(), seed it from ctx_rand_os(); no system call otherwise. Not for
 * keys or secrets: ids only. */
uint64_t ctx_rand_u64(void);

/* Fill `buf` (len bytes, borrowed) from getrandom(); when the kernel cannot answer, from a mix of
 * clocks, process and thread ids and addresses (unique, not secret). Never fails. */
void ctx_rand_os(void *buf, size_t len);

/* A number that changes in a forked child: per-thread state made before fork() compares it to
 * the value it was made with to notice that it must be renewed. One relaxed load. */
unsigned ctx_rand_fork_gen(void);

/* Write 2 * n lower-case hex characters of `in` (n bytes) to `out`, then a NUL. */
void ctx_hex_encode(const uint8_t *in, size_t n, char *out);

#endif
