/* proxy.h - the client's address behind trusted proxies (X-Forwarded-For, X-Real-IP, Forwarded).
 *
 * A peer in [server] trusted_proxies may say who its client was; any other peer may not, so a
 * client that talks to spindle directly cannot put another address in the access log. The hops of
 * the header are walked from the right (the hop the trusted peer itself appended) leftwards while
 * they are trusted too; the first untrusted hop is the client. A hop that is not an address
 * ("unknown", an obfuscated Forwarded identifier, garbage) ends the walk at the nearest hop known,
 * as nginx's realip module does.
 *
 * Pure: no server, no allocation, any thread. Used by the access line (request.c) and by tests.
 */
#ifndef SPINDLE_HTTP_PROXY_H
#define SPINDLE_HTTP_PROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "server/config.h"

#define SRV_PROXY_CLIENT_MAX 46 /* INET6_ADDRSTRLEN: the longest address text, NUL included */

/* The forwarding headers of one request (all borrowed; NULL or length 0 = absent). When a header
 * came more than once, its lines joined with ',' in order. */
struct srv_proxy_headers {
    const char *forwarded, *xff, *real_ip;
    size_t forwarded_len, xff_len, real_ip_len;
};

/* Parse an address as proxies and peers write it: "A.B.C.D", "A.B.C.D:PORT", "V6", "[V6]",
 * "[V6]:PORT" (`len` bytes of `s`, borrowed). On success *family is 4 or 6 and addr (16 bytes)
 * holds the address. Returns false for anything else. */
bool srv_proxy_addr_parse(const char *s, size_t len, unsigned char *family, unsigned char *addr);

/* The client's address as text into `out` (size bytes, at least SRV_PROXY_CLIENT_MAX): the peer's
 * address (`peer`, borrowed, as the access line shows it: "A.B.C.D:PORT" or "[V6]:PORT"), or,
 * when the peer is in `trusted` (borrowed), the client the headers name (Forwarded first, then
 * X-Forwarded-For, then X-Real-IP: the first present is used). A peer that is not an address
 * ("-") is copied as it is. */
void srv_proxy_client(const struct srv_cfg_cidrs *trusted, const char *peer,
                      const struct srv_proxy_headers *hd, char *out, size_t size);

#endif
