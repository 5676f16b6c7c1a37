/* internal.h - what the files of server/auth/ share: the failure throttle (throttle.c), a fixed
 * table of client addresses, used by the checks of auth.c.
 *
 * Threads: one thread, like the rest of the module.
 */
#ifndef SPINDLE_AUTH_INTERNAL_H
#define SPINDLE_AUTH_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

struct srv_auth_throttle;

/* The throttle's policy (live on reload). failures 0 = never throttle. */
struct srv_auth_throttle_policy {
    unsigned failures;
    uint64_t window_ns;
    uint64_t block_ns;
};

/* A table of `slots` addresses (rounded up to a power of two); NULL when out of memory. */
struct srv_auth_throttle *srv_auth_throttle_new(unsigned slots);
void srv_auth_throttle_free(struct srv_auth_throttle *t);

/* The address (family 4 or 6 with 4 or 16 bytes of addr; 0 = unknown) is throttled at `now`:
 * returns the nanoseconds left, or 0 when it may try. */
uint64_t srv_auth_throttle_blocked(const struct srv_auth_throttle *t, unsigned char family,
                                   const unsigned char *addr, uint64_t now);

/* Count one failure of the address at `now` under `p`. Returns its failures in the current window
 * (after this one); *started is set when this failure throttled it. */
unsigned srv_auth_throttle_fail(struct srv_auth_throttle *t,
                                const struct srv_auth_throttle_policy *p, unsigned char family,
                                const unsigned char *addr, uint64_t now, bool *started);

/* Addresses throttled at `now`, and addresses in the table. */
void srv_auth_throttle_count(const struct srv_auth_throttle *t, uint64_t now, unsigned *throttled,
                             unsigned *tracked);

#endif
