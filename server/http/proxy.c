/* proxy.c - the client's address behind trusted proxies (proxy.h).
 *
 * Design: the chosen header is split into hops left to right (Forwarded elements split outside
 * quoted strings, then its for= parameter taken), keeping the rightmost PROXY_HOPS_MAX: a longer
 * chain can only push untrusted hops further left, and the walk from the right never gets past
 * the first untrusted one anyway. No allocation: hops point into the header.
 */
#include "server/http/proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PROXY_HOPS_MAX 32

struct proxy_hop {
    const char *s;
    size_t len;
};

struct proxy_hops {
    struct proxy_hop hop[PROXY_HOPS_MAX];
    size_t n; /* hops seen; the last min(n, PROXY_HOPS_MAX) are kept, in a ring */
};

static void proxy_hop_add(struct proxy_hops *h, const char *s, size_t len)
{
    while (len > 0 && isspace((unsigned char)*s))
        s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    h->hop[h->n % PROXY_HOPS_MAX] = (struct proxy_hop){s, len};
    h->n++;
}

bool srv_proxy_addr_parse(const char *s, size_t len, unsigned char *family, unsigned char *addr)
{
    char host[INET6_ADDRSTRLEN];
    const char *port = NULL, *end = s + len;
    size_t hlen = len;
    bool bracket = len > 0 && s[0] == '[';
    if (bracket) {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return false;
        hlen = (size_t)(close - s - 1);
        port = close + 1 < end ? close + 1 : NULL;
        if (port != NULL && *port != ':')
            return false;
        s++;
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) == NULL) {
            hlen = (size_t)(colon - s); /* one colon: IPv4 with a port */
            port = colon;
        }
    }
    if (port != NULL) {
        const char *p = port + 1;
        if (p == end || end - p > 5)
            return false;
        for (; p < end; p++) {
            if (!isdigit((unsigned char)*p))
                return false;
        }
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return false;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    memset(addr, 0, 16);
    if (!bracket && inet_pton(AF_INET, host, addr) == 1) {
        *family = 4;
        return true;
    }
    if ((bracket || port == NULL) && inet_pton(AF_INET6, host, addr) == 1) {
        *family = 6;
        return true;
    }
    return false;
}

/* X-Forwarded-For and X-Real-IP: comma-separated addresses. */
static void proxy_split_list(const char *s, size_t len, struct proxy_hops *h)
{
    const char *end = s + len;
    while (s <= end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        const char *stop = comma ? comma : end;
        proxy_hop_add(h, s, (size_t)(stop - s));
        s = stop + 1;
    }
}

/* The for= value of one Forwarded element ("for=1.2.3.4;proto=http", RFC 7239), quotes removed;
 * a hop of length 0 when it has none. */
static void proxy_forwarded_element(const char *s, size_t len, struct proxy_hops *h)
{
    const char *end = s + len;
    while (s < end) {
        const char *semi = s;
        bool quoted = false;
        for (; semi < end && (quoted || *semi != ';'); semi++) {
            if (*semi == '"')
                quoted = !quoted;
        }
        while (s < semi && isspace((unsigned char)*s))
            s++;
        if (semi - s > 4 && strncasecmp(s, "for=", 4) == 0) {
            const char *v = s + 4, *vend = semi;
            while (vend > v && isspace((unsigned char)vend[-1]))
                vend--;
            if (vend - v >= 2 && v[0] == '"' && vend[-1] == '"')
                v++, vend--;
            proxy_hop_add(h, v, (size_t)(vend - v));
            return;
        }
        s = semi + 1;
    }
    proxy_hop_add(h, "", 0);
}

static void proxy_split_forwarded(const char *s, size_t len, struct proxy_hops *h)
{
    const char *end = s + len, *start = s;
    bool quoted = false;
    for (const char *p = s; p <= end; p++) {
        if (p < end && *p == '"')
            quoted = !quoted;
        if (p == end || (*p == ',' && !quoted)) {
            proxy_forwarded_element(start, (size_t)(p - start), h);
            start = p + 1;
        }
    }
}

static bool proxy_trusted(const struct srv_cfg_cidrs *set, unsigned char family,
                          const unsigned char *addr)
{
    for (unsigned i = 0; i < set->count; i++) {
        if (srv_cfg_cidr_match(&set->net[i], family, addr))
            return true;
    }
    return false;
}

void srv_proxy_client(const struct srv_cfg_cidrs *trusted, const char *peer,
                      const struct srv_proxy_headers *hd, char *out, size_t size)
{
    unsigned char family, addr[16];
    if (!srv_proxy_addr_parse(peer, strlen(peer), &family, addr)) {
        snprintf(out, size, "%s", peer);
        return;
    }
    struct proxy_hops hops = {.n = 0};
    if (proxy_trusted(trusted, family, addr) && hd != NULL) {
        if (hd->forwarded != NULL && hd->forwarded_len > 0)
            proxy_split_forwarded(hd->forwarded, hd->forwarded_len, &hops);
        else if (hd->xff != NULL && hd->xff_len > 0)
            proxy_split_list(hd->xff, hd->xff_len, &hops);
        else if (hd->real_ip != NULL && hd->real_ip_len > 0)
            proxy_split_list(hd->real_ip, hd->real_ip_len, &hops);
    }
    size_t kept = hops.n < PROXY_HOPS_MAX ? hops.n : PROXY_HOPS_MAX;
    for (size_t i = 0; i < kept; i++) { /* from the right while the current hop is trusted */
        const struct proxy_hop *hop = &hops.hop[(hops.n - 1 - i) % PROXY_HOPS_MAX];
        unsigned char f, a[16];
        if (!srv_proxy_addr_parse(hop->s, hop->len, &f, a))
            break;
        family = f;
        memcpy(addr, a, sizeof(addr));
        if (!proxy_trusted(trusted, family, addr))
            break;
    }
    char text[INET6_ADDRSTRLEN] = "-";
    inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, text, sizeof(text));
    snprintf(out, size, "%s", text);
}
