/* test_proxy.c - the client's address behind trusted proxies (server/http/proxy.c). */
#include <CUnit/CUnit.h>
#include <string.h>

#include "server/config.h"
#include "server/http/proxy.h"
#include "tests/suite.h"

int suite_server_http_proxy(void);

/* A trusted set from a comma-separated list, through the configuration's own parser. */
static void proxy_trust(struct srv_cfg *cfg, const char *list)
{
    char err[256];
    srv_cfg_defaults(cfg);
    CU_ASSERT_EQUAL_FATAL(
        srv_cfg_set(cfg, "server", "trusted_proxies", list, "test", err, sizeof(err)), 0);
}

/* The client for `peer` with one header set (name: "xff", "fwd" or "rip"). */
static const char *proxy_client(const struct srv_cfg *cfg, const char *peer, const char *which,
                                const char *value)
{
    static char out[SRV_PROXY_CLIENT_MAX];
    struct srv_proxy_headers hd = {0};
    size_t len = value ? strlen(value) : 0;
    if (which != NULL && strcmp(which, "xff") == 0)
        hd.xff = value, hd.xff_len = len;
    else if (which != NULL && strcmp(which, "fwd") == 0)
        hd.forwarded = value, hd.forwarded_len = len;
    else if (which != NULL)
        hd.real_ip = value, hd.real_ip_len = len;
    srv_proxy_client(&cfg->trusted_proxies, peer, &hd, out, sizeof(out));
    return out;
}

static void test_srv_proxy_addr_parse_forms(void)
{
    unsigned char f, a[16];
    static const char *const good[] = {
        "1.2.3.4", "1.2.3.4:80", "::1", "[::1]", "[::1]:8080", "2001:db8::7", "[2001:db8::7]:1"};
    static const char *const bad[] = {"",          "unknown",        "_hidden", "1.2.3",
                                      "1.2.3.4:",  "1.2.3.4:x",      "[::1",    "[::1]x",
                                      "[1.2.3.4]", "1.2.3.4:123456", "a::b::c"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CU_ASSERT_TRUE(srv_proxy_addr_parse(good[i], strlen(good[i]), &f, a));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_FALSE(srv_proxy_addr_parse(bad[i], strlen(bad[i]), &f, a));
    CU_ASSERT_TRUE(srv_proxy_addr_parse("[::1]:80", 8, &f, a));
    CU_ASSERT_EQUAL(f, 6);
    CU_ASSERT_EQUAL(a[15], 1);
}

static void test_srv_cfg_cidr_parse_masks_and_matches(void)
{
    struct srv_cfg_cidr c;
    unsigned char a[16];
    unsigned char f;
    CU_ASSERT_EQUAL_FATAL(srv_cfg_cidr_parse("10.1.2.3/8", 10, &c), 0);
    CU_ASSERT_EQUAL(c.family, 4);
    CU_ASSERT_EQUAL(c.bits, 8);
    CU_ASSERT_EQUAL(c.addr[1], 0); /* host bits cleared */
    CU_ASSERT_TRUE(srv_proxy_addr_parse("10.200.0.1", 10, &f, a));
    CU_ASSERT_TRUE(srv_cfg_cidr_match(&c, f, a));
    CU_ASSERT_TRUE(srv_proxy_addr_parse("11.0.0.1", 8, &f, a));
    CU_ASSERT_FALSE(srv_cfg_cidr_match(&c, f, a));
    CU_ASSERT_EQUAL_FATAL(srv_cfg_cidr_parse("192.168.1.0/23", 14, &c), 0);
    CU_ASSERT_TRUE(srv_proxy_addr_parse("192.168.0.9", 11, &f, a));
    CU_ASSERT_TRUE(srv_cfg_cidr_match(&c, f, a));
    CU_ASSERT_TRUE(srv_proxy_addr_parse("192.168.2.9", 11, &f, a));
    CU_ASSERT_FALSE(srv_cfg_cidr_match(&c, f, a));
    CU_ASSERT_EQUAL_FATAL(srv_cfg_cidr_parse("2001:db8::/33", 13, &c), 0);
    CU_ASSERT_TRUE(srv_proxy_addr_parse("2001:db8:7fff::1", 16, &f, a));
    CU_ASSERT_TRUE(srv_cfg_cidr_match(&c, f, a));
    CU_ASSERT_TRUE(srv_proxy_addr_parse("2001:db8:8000::1", 16, &f, a));
    CU_ASSERT_FALSE(srv_cfg_cidr_match(&c, f, a));
    CU_ASSERT_TRUE(srv_proxy_addr_parse("10.0.0.1", 8, &f, a));
    CU_ASSERT_FALSE(srv_cfg_cidr_match(&c, f, a)); /* another family */
    CU_ASSERT_EQUAL_FATAL(srv_cfg_cidr_parse("0.0.0.0/0", 9, &c), 0);
    CU_ASSERT_TRUE(srv_cfg_cidr_match(&c, f, a));
    static const char *const bad[] = {"",     "10.0.0.0/33", "::/129",       "10.0.0.0/",
                                      "10/8", "10.0.0.0/8x", "host.example", "10.0.0.0/0008"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_NOT_EQUAL(srv_cfg_cidr_parse(bad[i], strlen(bad[i]), &c), 0);
}

static void test_srv_cfg_set_trusted_proxies(void)
{
    struct srv_cfg cfg;
    char err[256];
    srv_cfg_defaults(&cfg);
    CU_ASSERT_EQUAL(cfg.trusted_proxies.count, 0);
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "server", "trusted_proxies", "127.0.0.1, 10.0.0.0/8, ::1",
                                "t", err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(cfg.trusted_proxies.count, 3);
    CU_ASSERT_NOT_EQUAL(
        srv_cfg_set(&cfg, "server", "trusted_proxies", "10.0.0.0/8, nope", "t", err, sizeof(err)),
        0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "nope"));
    CU_ASSERT_EQUAL(cfg.trusted_proxies.count, 3); /* untouched on error */
    CU_ASSERT_EQUAL(
        srv_cfg_set(&cfg, "log", "access_skip", "/readyz, /healthz", "t", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(cfg.access_skip.count, 2);
    CU_ASSERT_STRING_EQUAL(cfg.access_skip.path[1], "/healthz");
    CU_ASSERT_NOT_EQUAL(srv_cfg_set(&cfg, "log", "access_skip", "readyz", "t", err, sizeof(err)),
                        0);
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "shutdown", "announce_ms", "1500", "t", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(cfg.announce_ms, 1500);
}

static void test_srv_proxy_client_untrusted_peer_cannot_spoof(void)
{
    struct srv_cfg cfg;
    proxy_trust(&cfg, "10.0.0.0/8");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "192.0.2.1:5555", "xff", "6.6.6.6"), "192.0.2.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "192.0.2.1:5555", "rip", "6.6.6.6"), "192.0.2.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "192.0.2.1:5555", "fwd", "for=6.6.6.6"), "192.0.2.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "[::1]:80", "xff", "6.6.6.6"), "::1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "-", NULL, NULL), "-");
    proxy_trust(&cfg, ""); /* nobody trusted */
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:1", "xff", "6.6.6.6"), "10.0.0.1");
}

static void test_srv_proxy_client_xff_rightmost_untrusted(void)
{
    struct srv_cfg cfg;
    proxy_trust(&cfg, "10.0.0.0/8, 2001:db8::/32");
    /* the client prepended a lie; the trusted proxy appended the address it saw */
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "xff", "6.6.6.6, 203.0.113.5"),
                           "203.0.113.5");
    /* a chain of trusted proxies is walked through */
    CU_ASSERT_STRING_EQUAL(
        proxy_client(&cfg, "10.0.0.1:80", "xff", "6.6.6.6,203.0.113.5 , 10.9.9.9,2001:db8::1"),
        "203.0.113.5");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "xff", "[2001:db9::5]:443"),
                           "2001:db9::5");
    /* garbage stops the walk at the nearest address known */
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "xff", "203.0.113.5, unknown"),
                           "10.0.0.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "xff", "junk, 10.2.2.2"), "10.2.2.2");
    /* every hop trusted: the leftmost */
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "xff", "10.3.3.3, 10.2.2.2"),
                           "10.3.3.3");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "rip", "198.51.100.7"),
                           "198.51.100.7");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", NULL, NULL), "10.0.0.1");
}

static void test_srv_proxy_client_forwarded(void)
{
    struct srv_cfg cfg;
    proxy_trust(&cfg, "10.0.0.0/8");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "fwd",
                                        "for=6.6.6.6, for=\"[2001:db8::9]:4711\";proto=https"),
                           "2001:db8::9");
    CU_ASSERT_STRING_EQUAL(
        proxy_client(&cfg, "10.0.0.1:80", "fwd", "For=198.51.100.1;by=10.0.0.1, for=10.4.4.4"),
        "198.51.100.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "fwd", "for=_hidden"), "10.0.0.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "fwd", "proto=http"), "10.0.0.1");
    CU_ASSERT_STRING_EQUAL(proxy_client(&cfg, "10.0.0.1:80", "fwd", "for=\"198.51.100.2:9\""),
                           "198.51.100.2");
}

int suite_server_http_proxy(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_proxy_addr_parse_forms),
        SPINDLE_TEST(test_srv_cfg_cidr_parse_masks_and_matches),
        SPINDLE_TEST(test_srv_cfg_set_trusted_proxies),
        SPINDLE_TEST(test_srv_proxy_client_untrusted_peer_cannot_spoof),
        SPINDLE_TEST(test_srv_proxy_client_xff_rightmost_untrusted),
        SPINDLE_TEST(test_srv_proxy_client_forwarded),
    };
    return SPINDLE_SUITE_ADD("server_http_proxy", NULL, NULL, tests);
}
