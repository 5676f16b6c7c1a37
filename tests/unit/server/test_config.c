/* test_config.c - unit tests for server/config.c: defaults equal etc/spindle.conf, every error
 * kind with its FILE:LINE, [section] and key, overrides, sizes, listen lists, print round-trip,
 * all-or-nothing loading, and the tenant limits: [limits] defaults, [tenant.NAME] sections,
 * inheritance and their errors; that config.h is a leaf (no policy header) and that README's
 * table of keys matches the settings table, its "live on reload" column included.
 *
 * Files are written into a private temporary directory made by the suite's init and removed by
 * its cleanup. The shipped file is $SPINDLE_ETC/spindle.conf, or etc/spindle.conf relative to the
 * repository root (where the unit binary runs) when the variable is unset.
 */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/config.h"
#include "tests/suite.h"
#include "tests/unit/server/config_cases.h"

/* Read before any other spindle header: config.h alone must not pull in a policy module. */
#ifdef SPINDLE_ADMISSION_H
#define TC_CONFIG_H_PULLS_ADMISSION 1
#else
#define TC_CONFIG_H_PULLS_ADMISSION 0
#endif

int suite_server_config(void);

/* Every key of struct srv_cfg as (section, key) with a valid value that differs from its
 * default: the tests below use it to prove that the file, print and equal cover every field. */
struct tc_key {
    const char *section;
    const char *key;
    const char *other;
};

#define TC_KEY_A "sha256:aa1d6bb9048f30854e6b100a6519d5aec7429bde5654aea465437162765b807c"
#define TC_KEY_B "sha256:c79edd2e15d5c679ab24306b39a502a5515a8bbb04296ec4f8a67b1df3c6ccdb"

static const struct tc_key tc_keys[] = {
    {"server", "listen", "127.0.0.1:0, [::1]:0"},
    {"server", "backlog", "128"},
    {"server", "max_connections", "50"},
    {"server", "header_timeout_ms", "1500"},
    {"server", "body_timeout_ms", "2500"},
    {"server", "idle_timeout_ms", "3500"},
    {"server", "write_timeout_ms", "4500"},
    {"server", "retry_hold_ms", "250"},
    {"server", "max_keepalive_requests", "100"},
    {"pool", "workers", "3"},
    {"pool", "queue_capacity", "7"},
    {"pool", "cancel_grace_ms", "250"},
    {"limits", "max_request_line", "4096"},
    {"limits", "max_header_bytes", "8K"},
    {"limits", "max_headers", "10"},
    {"limits", "max_body_bytes", "2M"},
    {"limits", "max_stream_bytes", "3G"},
    {"limits", "max_pipeline_bytes", "0"},
    {"limits", "max_query_params", "5"},
    {"limits", "default_timeout_ms", "1000"},
    {"limits", "max_timeout_ms", "90000"},
    {"limits", "max_spin_ms", "300"},
    {"limits", "max_primes_n", "5000000000"},
    {"limits", "max_sha256_rounds", "1000"},
    {"limits", "max_compress_level_zstd", "3"},
    {"limits", "max_batch", "8"},
    {"limits", "max_inflight", "8"},
    {"limits", "rate", "2.5"},
    {"limits", "burst", "4"},
    {"limits", "weight", "3"},
    {"limits", "max_tenants", "100"},
    {"log", "level", "debug"},
    {"log", "file", "/var/log/spindle/spindle.log"},
    {"log", "buffer_bytes", "1G"},
    {"log", "policy", "drop"},
    {"log", "access", "false"},
    {"server", "admin_listen", "127.0.0.1:9091"},
    {"auth", "mode", "keys"},
    {"auth", "allow_plaintext", "true"},
    {"auth", "metrics_token", TC_KEY_A},
    {"auth", "throttle_failures", "3"},
    {"auth", "throttle_window_ms", "1000"},
    {"auth", "throttle_block_ms", "2000"},
    {"auth", "throttle_addresses", "64"},
    {"shutdown", "drain_timeout_ms", "0"},
    {"tasks", "store", "/var/lib/spindle/tasks.db"},
    {"tasks", "lease_ms", "3000"},
    {"tasks", "retention_ms", "60000"},
    {"tasks", "max_result_bytes", "4K"},
    {"tasks", "max_unfinished", "10"},
    {"tasks", "worker_share", "25"},
};

#define TC_NKEYS (sizeof(tc_keys) / sizeof(tc_keys[0]))

static const char *tc_etc_path(char *buf, size_t size)
{
    const char *etc = getenv("SPINDLE_ETC");
    snprintf(buf, size, "%s/spindle.conf", etc && *etc ? etc : "etc");
    return buf;
}

/* The "section.key" names of every key line of a file, in order, comma-terminated. */
static void tc_keys_of(FILE *f, char *out, size_t size)
{
    char line[512], section[64] = "";
    size_t used = 0;
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        char name[64];
        if (sscanf(line, " [%63[^]]]", section) == 1)
            continue;
        if (line[0] == '#' || line[0] == ';' || sscanf(line, " %63[a-z_0-9] =", name) != 1)
            continue;
        int n = snprintf(out + used, size - used, "%s.%s,", section, name);
        CU_ASSERT_FATAL(n > 0 && (size_t)n < size - used);
        used += (size_t)n;
    }
}

/* The "section.key," list of every key srv_cfg_print writes for the defaults. */
static void tc_print_keys(char *out, size_t size)
{
    struct srv_cfg defaults;
    char *buf = NULL;
    size_t len = 0;
    srv_cfg_defaults(&defaults);
    FILE *f = open_memstream(&buf, &len);
    CU_ASSERT_FATAL(f != NULL);
    srv_cfg_print(&defaults, f);
    CU_ASSERT_FATAL(fflush(f) == 0);
    rewind(f);
    tc_keys_of(f, out, size);
    fclose(f);
    free(buf);
}

static void test_srv_cfg_defaults_equal_file(void)
{
    char path[1024], err[512] = "", file_keys[4096], print_keys[4096];
    struct srv_cfg defaults, loaded;
    srv_cfg_defaults(&defaults);
    CU_ASSERT_STRING_EQUAL(defaults.source, "");
    CU_ASSERT_EQUAL_FATAL(srv_cfg_load(tc_etc_path(path, sizeof(path)), &loaded, err, sizeof(err)),
                          0);
    CU_ASSERT(srv_cfg_equal(&defaults, &loaded));

    /* The file sets every key exactly as print lists them, and the list covers the struct. */
    FILE *f = fopen(path, "r");
    CU_ASSERT_FATAL(f != NULL);
    tc_keys_of(f, file_keys, sizeof(file_keys));
    fclose(f);
    tc_print_keys(print_keys, sizeof(print_keys));
    CU_ASSERT_STRING_EQUAL(file_keys, print_keys);
    for (size_t i = 0; i < TC_NKEYS; i++) {
        char name[96];
        snprintf(name, sizeof(name), "%s.%s,", tc_keys[i].section, tc_keys[i].key);
        CU_ASSERT_PTR_NOT_NULL(strstr(file_keys, name));
    }
}

static void test_srv_cfg_defaults_values(void)
{
    struct srv_cfg c;
    srv_cfg_defaults(&c);
    CU_ASSERT_EQUAL(c.listen_count, 1);
    CU_ASSERT_STRING_EQUAL(c.listen[0], "127.0.0.1:8080");
    CU_ASSERT_EQUAL(c.backlog, 511);
    CU_ASSERT_EQUAL(c.max_connections, 10000);
    CU_ASSERT_EQUAL(c.idle_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.workers, 0);
    CU_ASSERT_EQUAL(c.queue_capacity, 1024);
    CU_ASSERT_EQUAL(c.max_body_bytes, 1048576);
    CU_ASSERT_EQUAL(c.max_primes_n, 100000000UL);
    CU_ASSERT_EQUAL(c.log_level, LOG_LEVEL_INFO);
    CU_ASSERT_STRING_EQUAL(c.log_file, "");
    CU_ASSERT_EQUAL(c.log_buffer_bytes, 4194304);
    CU_ASSERT_EQUAL(c.log_policy, LOG_POLICY_BLOCK);
    CU_ASSERT(c.log_access);
    CU_ASSERT_EQUAL(c.drain_timeout_ms, 10000);
}

static void test_srv_cfg_load_syntax(void)
{
    struct srv_cfg c;
    tc_expect_ok("\xEF\xBB\xBF# comment\r\n; another\r\n\r\n[pool]\r\n"
                 "  workers = 5   ; inline comment\r\nqueue_capacity=9\r\n"
                 "[log]\nlevel: debug\n   # an indented comment is no continuation\n"
                 "file = /tmp/a;b.log\n",
                 &c);
    CU_ASSERT_EQUAL(c.workers, 5);
    CU_ASSERT_EQUAL(c.queue_capacity, 9);
    CU_ASSERT_EQUAL(c.log_level, LOG_LEVEL_DEBUG);
    CU_ASSERT_STRING_EQUAL(c.log_file, "/tmp/a;b.log");

    /* An empty file is the defaults. */
    struct srv_cfg d;
    srv_cfg_defaults(&d);
    tc_expect_ok("", &c);
    CU_ASSERT(srv_cfg_equal(&c, &d));

    /* 199 bytes fit on a line, 200 do not. */
    char line[256];
    memset(line, 'a', sizeof(line));
    memcpy(line, "file = /", 8);
    memcpy(line + 199, "\n", 2);
    char text[300];
    snprintf(text, sizeof(text), "[log]\n%s", line);
    tc_expect_ok(text, &c);
    CU_ASSERT_EQUAL(strlen(c.log_file), 192);
}

static void test_srv_cfg_load_structure_errors(void)
{
    tc_expect("[server]\nbacklog = 10\n[serve]\nbacklog = 1\n", -EINVAL,
              ":3: [serve]: unknown section");
    tc_expect("[pool]\nworkerz = 1\n", -EINVAL, ":2: [pool] workerz: unknown key");
    tc_expect("[pool]\nworkers = 1\n\nworkers = 2\n", -EINVAL,
              ":4: [pool] workers: duplicate key (first set on line 2)");
    tc_expect("[pool]\nworkers = 1\n[log]\n[pool]\nworkers = 2\n", -EINVAL,
              ":5: [pool] workers: duplicate key (first set on line 2)");
    tc_expect("workers = 1\n", -EINVAL, ":1: workers: key outside of any section");
    tc_expect("[pool]\nworkers\n", -EINVAL, ":2: [pool]: expected \"key = value\"");
    tc_expect("[pool]\n= 4\n", -EINVAL, ":2: [pool]: missing key name");
    tc_expect("[pool\nworkers = 1\n", -EINVAL, ":1: expected \"]\"");
    tc_expect("[pool] x\n", -EINVAL, ":1: unexpected text after the section name");
    tc_expect("[server]\nlisten = 127.0.0.1:1,\n    127.0.0.1:2\n", -EINVAL,
              ":3: [server] listen: continuation line");

    /* A NUL byte would end the text early for libinih: it is refused with its line. */
    struct srv_cfg cfg;
    char err[512], want[600];
    static const char nul[] = "[log]\nlevel = debug\n\0level = info\n";
    char *p = tc_file_n(nul, sizeof(nul) - 1);
    srv_cfg_defaults(&cfg);
    CU_ASSERT_EQUAL(srv_cfg_load(p, &cfg, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "%s:3: [log]: NUL byte in line", p);
    CU_ASSERT_STRING_EQUAL(err, want);
    free(p);

    char text[400];
    memset(text, 0, sizeof(text));
    strcpy(text, "[log]\nfile = /");
    memset(text + strlen(text), 'x', 200);
    strcat(text, "\n");
    tc_expect(text, -EINVAL, ":2: [log]: line longer than 199 bytes");
}

static void test_srv_cfg_load_value_errors(void)
{
    tc_expect("[pool]\nworkers = abc\n", -EINVAL,
              ":2: [pool] workers: expected a whole number, got \"abc\"");
    tc_expect("[pool]\nworkers = 4x\n", -EINVAL, ":2: [pool] workers: expected a whole number");
    tc_expect("[pool]\nworkers = 4 4\n", -EINVAL, ":2: [pool] workers: expected a whole number");
    tc_expect("[pool]\nworkers =\n", -EINVAL, ":2: [pool] workers: missing value");
    tc_expect("[pool]\nworkers = -1\n", -EINVAL, ":2: [pool] workers: negative value");
    tc_expect("[pool]\nworkers = +1\n", -EINVAL, ":2: [pool] workers: expected a whole number");
    tc_expect("[pool]\nworkers = 5000\n", -EINVAL,
              ":2: [pool] workers: value 5000 out of range 0..1024");
    tc_expect("[pool]\nqueue_capacity = 0\n", -EINVAL,
              ":2: [pool] queue_capacity: value 0 out of range 1..1048576");
    tc_expect("[pool]\nqueue_capacity = 99999999999999999999999\n", -EINVAL,
              ":2: [pool] queue_capacity: value 99999999999999999999999 out of range 1..1048576");
    tc_expect("[server]\nbacklog = 4294967296\n", -EINVAL, ":2: [server] backlog: value");
    tc_expect("[log]\nlevel = loud\n", -EINVAL, ":2: [log] level: expected trace, debug");
    tc_expect("[log]\npolicy = lossy\n", -EINVAL, ":2: [log] policy: expected block or drop");
    tc_expect("[log]\naccess = maybe\n", -EINVAL, ":2: [log] access: expected true or false");
    tc_expect("[log]\nfile = /tmp/a ;b\n", 0, NULL); /* " ;b" is a comment: the path is /tmp/a */
    tc_expect("[limits]\ndefault_timeout_ms = 70000\n", -EINVAL,
              ":2: [limits] default_timeout_ms: default_timeout_ms (70000) exceeds max_timeout_ms "
              "(60000)");
    tc_expect("[limits]\nmax_timeout_ms = 1000\ndefault_timeout_ms = 500\nmax_timeout_ms = 5\n",
              -EINVAL, ":4: [limits] max_timeout_ms: duplicate key");
    tc_expect("[limits]\ndefault_timeout_ms = 5000\nmax_timeout_ms = 1000\n", -EINVAL,
              ":3: [limits] max_timeout_ms: default_timeout_ms (5000) exceeds");
}

/* The first error in the file is reported first, whichever check finds it. */
static void test_srv_cfg_load_first_error(void)
{
    char text[600];
    char longline[260];
    memset(longline, 'y', sizeof(longline));
    memcpy(longline, "# ", 2);
    longline[250] = '\0';
    snprintf(text, sizeof(text), "[pool]\nworkers = x\n%s\n[nope]\n", longline);
    tc_expect(text, -EINVAL, ":2: [pool] workers: expected a whole number");
    snprintf(text, sizeof(text), "[pool]\n%s\nworkers = x\n[nope]\n", longline);
    tc_expect(text, -EINVAL, ":2: [pool]: line longer than 199 bytes");
    tc_expect("[pool]\nworkers = 1\n[nope]\nworkers = x\n", -EINVAL, ":3: [nope]: unknown section");
}

/* Every error of the file, one "FILE:LINE: ..." line each, by line: the pre-scan's and the
 * values' alike; the keys of a refused section and a continued key are not reported again. */
static void test_srv_cfg_load_every_error(void)
{
    char longline[260];
    memset(longline, 'y', sizeof(longline));
    memcpy(longline, "file = /", 8);
    longline[220] = '\0';
    char text[1024];
    snprintf(text, sizeof(text),
             "[pool]\n"                      /* 1 */
             "workers = x\n"                 /* 2 bad value */
             "queue_capacity = 9\n"          /* 3 fine */
             "workerz = 1\n"                 /* 4 unknown key */
             "[nope]\n"                      /* 5 unknown section */
             "anything = 1\n"                /* 6 not reported again */
             "[log]\n"                       /* 7 */
             "%s\n"                          /* 8 too long */
             "level = loud\n"                /* 9 bad value */
             "access = true\n"               /* 10 fine */
             "  true\n"                      /* 11 continuation */
             "[limits]\n"                    /* 12 */
             "default_timeout_ms = 70000\n", /* 13 cross-check: not run with other errors */
             longline);
    char *path = tc_file(text);
    CU_ASSERT_FATAL(path != NULL);
    struct srv_cfg cfg, before;
    srv_cfg_defaults(&cfg);
    before = cfg;
    char err[4096] = "", want[4096];
    CU_ASSERT_EQUAL(srv_cfg_load(path, &cfg, err, sizeof(err)), -EINVAL);
    snprintf(
        want, sizeof(want),
        "%1$s:2: [pool] workers: expected a whole number, got \"x\"\n"
        "%1$s:4: [pool] workerz: unknown key\n"
        "%1$s:5: [nope]: unknown section (known: server, pool, limits, log, auth, shutdown, "
        "tasks, tenant.NAME, kind.NAME, schedule.NAME)\n"
        "%1$s:8: [log]: line longer than 199 bytes\n"
        "%1$s:9: [log] level: expected trace, debug, info, warn, error or fatal, got \"loud\"\n"
        "%1$s:11: [log] access: continuation line (indented after a key) is not supported; "
        "write the value on one line",
        path);
    if (strcmp(err, want) != 0)
        fprintf(stderr, "\n  want:\n%s\n  got:\n%s\n", want, err);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT(memcmp(&cfg, &before, sizeof(cfg)) == 0);

    /* Too small a buffer keeps whole lines (the first one cut if need be). */
    char small[120];
    CU_ASSERT_EQUAL(srv_cfg_load(path, &cfg, small, sizeof(small)), -EINVAL);
    CU_ASSERT_EQUAL(strncmp(small, want, strlen(small)), 0);
    CU_ASSERT(strchr(small, '\n') == NULL || small[strlen(small) - 1] != '\n');
    free(path);

    /* A value error above a syntax error: reported first, as in the file. */
    tc_expect("[pool]\nworkers = x\n[pool\n", -EINVAL, ":2: [pool] workers: expected");
    /* The cross-key checks report on a file with no other error. */
    tc_expect("[limits]\ndefault_timeout_ms = 70000\n", -EINVAL,
              ":2: [limits] default_timeout_ms: default_timeout_ms (70000) exceeds");
}

/* `#` after a blank starts an inline comment, as `;` does; inside a value it is kept. */
static void test_srv_cfg_load_hash_comment(void)
{
    struct srv_cfg c;
    tc_expect_ok("[pool]\nworkers = 5 # five\nqueue_capacity = 9\t# tab\n"
                 "[log]\nfile = /tmp/a#b.log   # the log\nlevel = debug #\n"
                 "[server]\nlisten = 127.0.0.1:1, 127.0.0.1:2 # two\n",
                 &c);
    CU_ASSERT_EQUAL(c.workers, 5);
    CU_ASSERT_EQUAL(c.queue_capacity, 9);
    CU_ASSERT_STRING_EQUAL(c.log_file, "/tmp/a#b.log");
    CU_ASSERT_EQUAL(c.log_level, LOG_LEVEL_DEBUG);
    CU_ASSERT_EQUAL(c.listen_count, 2);
    CU_ASSERT_STRING_EQUAL(c.listen[1], "127.0.0.1:2");
    /* A comment does not hide a bad value before it. */
    tc_expect("[pool]\nworkers = x # comment\n", -EINVAL,
              ":2: [pool] workers: expected a whole number, got \"x\"");
}

static void test_srv_cfg_load_io_errors(void)
{
    struct srv_cfg cfg;
    char err[1024], want[1024], path[600];
    srv_cfg_defaults(&cfg);
    snprintf(path, sizeof(path), "%s/missing.conf", tc_dir_path());
    CU_ASSERT_EQUAL(srv_cfg_load(path, &cfg, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(ENOENT));
    CU_ASSERT_STRING_EQUAL(err, want);

    CU_ASSERT_EQUAL(srv_cfg_load(tc_dir_path(), &cfg, err, sizeof(err)), -EISDIR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, strerror(EISDIR)));

    size_t big = 1024 * 1024 + 1;
    char *text = malloc(big);
    CU_ASSERT_FATAL(text != NULL);
    memset(text, '\n', big);
    text[0] = '#';
    char *p = tc_file_n(text, big);
    CU_ASSERT_EQUAL(srv_cfg_load(p, &cfg, err, sizeof(err)), -EFBIG);
    snprintf(want, sizeof(want), "%s: larger than 1048576 bytes", p);
    CU_ASSERT_STRING_EQUAL(err, want);
    free(p);
    p = tc_file_n(text, big - 1); /* exactly the limit is fine */
    CU_ASSERT_EQUAL(srv_cfg_load(p, &cfg, err, sizeof(err)), 0);
    free(p);
    free(text);

    /* A small error buffer is cut, never overrun; a zero-sized one is left alone. */
    char tiny[8] = "xxxxxxx";
    CU_ASSERT_EQUAL(srv_cfg_load("/nonexistent/x.conf", &cfg, tiny, 5), -ENOENT);
    CU_ASSERT_EQUAL(strlen(tiny), 4);
    CU_ASSERT_EQUAL(tiny[5], 'x');
    CU_ASSERT_EQUAL(srv_cfg_load("/nonexistent/x.conf", &cfg, NULL, 0), -ENOENT);
}

/* A valid first key and an invalid later one leave the caller's configuration as it was. */
static void test_srv_cfg_load_untouched(void)
{
    struct srv_cfg cfg, before;
    char err[512];
    srv_cfg_defaults(&cfg);
    CU_ASSERT_EQUAL_FATAL(srv_cfg_set(&cfg, "pool", "workers", "7", "test", err, sizeof(err)), 0);
    before = cfg;
    char *p = tc_file("[pool]\nworkers = 2\nqueue_capacity = 5\n[log]\nlevel = bogus\n");
    CU_ASSERT_EQUAL(srv_cfg_load(p, &cfg, err, sizeof(err)), -EINVAL);
    CU_ASSERT(memcmp(&cfg, &before, sizeof(cfg)) == 0);
    CU_ASSERT_EQUAL(cfg.workers, 7);
    free(p);

    /* A valid file replaces everything, starting from the defaults (not the caller's values). */
    p = tc_file("[pool]\nqueue_capacity = 5\n");
    CU_ASSERT_EQUAL(srv_cfg_load(p, &cfg, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(cfg.workers, 0);
    CU_ASSERT_EQUAL(cfg.queue_capacity, 5);
    free(p);
}

static void test_srv_cfg_load_sizes(void)
{
    struct srv_cfg c;
    tc_expect_ok("[limits]\nmax_body_bytes = 2M\nmax_header_bytes = 8k\nmax_request_line = 100\n"
                 "[log]\nbuffer_bytes = 1G\n",
                 &c);
    CU_ASSERT_EQUAL(c.max_body_bytes, 2 * 1024 * 1024);
    CU_ASSERT_EQUAL(c.max_header_bytes, 8192);
    CU_ASSERT_EQUAL(c.max_request_line, 100);
    CU_ASSERT_EQUAL(c.log_buffer_bytes, 1024UL * 1024 * 1024);
    tc_expect("[limits]\nmax_body_bytes = 2G\n", -EINVAL,
              ":2: [limits] max_body_bytes: value 2G out of range 0..1073741824");
    tc_expect("[limits]\nmax_body_bytes = 1.5M\n", -EINVAL,
              ":2: [limits] max_body_bytes: expected");
    tc_expect("[limits]\nmax_body_bytes = M\n", -EINVAL, ":2: [limits] max_body_bytes: expected");
    tc_expect("[limits]\nmax_body_bytes = 1MB\n", -EINVAL, ":2: [limits] max_body_bytes: expected");
    tc_expect("[limits]\nmax_body_bytes = 99999999999999999G\n", -EINVAL,
              ":2: [limits] max_body_bytes: value");
    /* Suffixes belong to sizes only. */
    tc_expect("[pool]\nqueue_capacity = 1K\n", -EINVAL, ":2: [pool] queue_capacity: expected");
    tc_expect("[log]\nbuffer_bytes = 1K\n", -EINVAL,
              ":2: [log] buffer_bytes: value 1K out of range 65536..1073741824");
}

static void test_srv_cfg_load_listen(void)
{
    struct srv_cfg c;
    tc_expect_ok("[server]\nlisten = 127.0.0.1:0 ,[::1]:8081,0.0.0.0:65535, [::]:1\n", &c);
    CU_ASSERT_EQUAL_FATAL(c.listen_count, 4);
    CU_ASSERT_STRING_EQUAL(c.listen[0], "127.0.0.1:0");
    CU_ASSERT_STRING_EQUAL(c.listen[1], "[::1]:8081");
    CU_ASSERT_STRING_EQUAL(c.listen[2], "0.0.0.0:65535");
    CU_ASSERT_STRING_EQUAL(c.listen[3], "[::]:1");

    tc_expect_ok("[server]\nlisten = 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,"
                 "127.0.0.1:5,127.0.0.1:6,127.0.0.1:7,127.0.0.1:8\n",
                 &c);
    CU_ASSERT_EQUAL(c.listen_count, SRV_CFG_MAX_LISTEN);
    CU_ASSERT_STRING_EQUAL(c.listen[7], "127.0.0.1:8");
    tc_expect("[server]\nlisten = 127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,"
              "127.0.0.1:5,127.0.0.1:6,127.0.0.1:7,127.0.0.1:8,127.0.0.1:9\n",
              -EINVAL, ":2: [server] listen: too many addresses (at most 8)");

    static const char *const bad[] = {
        "localhost:80", "::1:80",  "[::1]80",     "[::1",       "1.2.3.4:65536", "1.2.3.4:",
        "1.2.3.4:8a",   "1.2.3.4", ", 1.2.3.4:1", "1.2.3.4:1,", "[1.2.3.4]:80",  "256.1.1.1:80",
        "[::1]:-1",     "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "[server]\nlisten = %s\n", bad[i]);
        tc_expect(text, -EINVAL, ":2: [server] listen: ");
    }
}

static void test_srv_cfg_set_overrides(void)
{
    struct srv_cfg cfg, before;
    char err[512];
    srv_cfg_defaults(&cfg);
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "pool", "workers", "4", "--workers", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(cfg.workers, 4);
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "log", "file", "-", "--log-file", err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(cfg.log_file, "-");
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "server", "listen", "[::1]:0", "--listen", err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(cfg.listen_count, 1);
    CU_ASSERT_STRING_EQUAL(cfg.listen[0], "[::1]:0");

    before = cfg;
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "pool", "workers", "abc", "--workers", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "--workers: [pool] workers: expected a whole number, got \"abc\"");
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "pool", "threads", "1", "--threads", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "--threads: [pool] threads: unknown key");
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "tenant", "workers", "1", "-x", err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "-x: [tenant]: unknown section");
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "log", "level", "LOUD", "--log-level", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_EQUAL(
        srv_cfg_set(&cfg, "limits", "default_timeout_ms", "90000", "--x", err, sizeof(err)),
        -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "exceeds max_timeout_ms (60000)"));
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "log", "file", " /x", "--log-file", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "log", "file", "/x ;y", "--log-file", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "log", "file", "/x\ny", "--log-file", err, sizeof(err)),
                    -EINVAL);
    char path[256];
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    path[193] = '\0';
    CU_ASSERT_EQUAL(srv_cfg_set(&cfg, "log", "file", path, "--log-file", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "--log-file: [log] file: path longer than 192 bytes");
    CU_ASSERT(memcmp(&cfg, &before, sizeof(cfg)) == 0);
}

/* Print `cfg`, load the text back and compare. */
static void tc_round_trip(const struct srv_cfg *cfg)
{
    char *buf = NULL, err[512] = "";
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CU_ASSERT_FATAL(f != NULL);
    srv_cfg_print(cfg, f);
    CU_ASSERT_FATAL(fclose(f) == 0);
    char *p = tc_file(buf);
    struct srv_cfg back;
    srv_cfg_defaults(&back);
    int rc = srv_cfg_load(p, &back, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\n  %s\n%s", err, buf);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(srv_cfg_equal(cfg, &back));
    free(p);
    free(buf);
}

static void test_srv_cfg_print_round_trip(void)
{
    struct srv_cfg d, c;
    char err[512];
    srv_cfg_defaults(&d);
    tc_round_trip(&d);

    /* Every key at a value other than its default: each one alone is noticed by equal, and all
     * of them together survive print and load. */
    c = d;
    for (size_t i = 0; i < TC_NKEYS; i++) {
        struct srv_cfg one = d;
        const struct tc_key *k = &tc_keys[i];
        CU_ASSERT_EQUAL(srv_cfg_set(&one, k->section, k->key, k->other, "t", err, sizeof(err)), 0);
        CU_ASSERT(!srv_cfg_equal(&one, &d));
        CU_ASSERT(srv_cfg_equal(&one, &one));
        tc_round_trip(&one);
        CU_ASSERT_EQUAL(srv_cfg_set(&c, k->section, k->key, k->other, "t", err, sizeof(err)), 0);
    }
    tc_round_trip(&c);

    /* The longest path that can be set also round-trips. */
    char path[256];
    memset(path, 'q', sizeof(path));
    path[0] = '/';
    path[192] = '\0';
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "log", "file", path, "t", err, sizeof(err)), 0);
    tc_round_trip(&c);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "log", "file", "/a b/c;d", "t", err, sizeof(err)), 0);
    tc_round_trip(&c);

    /* source is not a setting. */
    struct srv_cfg e = d;
    snprintf(e.source, sizeof(e.source), "elsewhere");
    CU_ASSERT(srv_cfg_equal(&d, &e));
}

static void test_srv_cfg_tenant_defaults(void)
{
    struct srv_cfg c;
    struct srv_tenant_limits lim;
    srv_cfg_defaults(&c);
    CU_ASSERT_EQUAL(c.max_inflight, 0);
    CU_ASSERT_EQUAL(c.rate, 0);
    CU_ASSERT_EQUAL(c.burst, 0);
    CU_ASSERT_EQUAL(c.weight, 1);
    CU_ASSERT_EQUAL(c.max_tenants, 10000);
    CU_ASSERT_EQUAL(c.tenant_count, 0);
    srv_cfg_tenant_limits(&c, "anyone", &lim);
    CU_ASSERT_EQUAL(lim.max_inflight, 0);
    CU_ASSERT_EQUAL(lim.rate, 0);
    CU_ASSERT_EQUAL(lim.burst, 1);
    CU_ASSERT_EQUAL(lim.weight, 1);
    CU_ASSERT_EQUAL(lim.max_timeout_ms, 0);
    CU_ASSERT_PTR_NULL(srv_cfg_tenant_find(&c, "anyone"));
}

static void test_srv_cfg_tenant_sections(void)
{
    struct srv_cfg c;
    struct srv_tenant_limits lim;
    tc_expect_ok("[limits]\nmax_inflight = 20\nrate = 7.25\nweight = 2\nmax_tenants = 50\n"
                 "[tenant.gold]\nweight = 8\nmax_timeout_ms = 5000\n"
                 "[tenant.b-2_x.y]\nrate = 0.5\nburst = 3\nmax_inflight = 1\n"
                 "[tenant.empty]\n"
                 "[tenant.gold]\nrate = 100\n",
                 &c);
    CU_ASSERT_EQUAL(c.max_inflight, 20);
    CU_ASSERT_DOUBLE_EQUAL(c.rate, 7.25, 1e-12);
    CU_ASSERT_EQUAL(c.max_tenants, 50);
    CU_ASSERT_EQUAL_FATAL(c.tenant_count, 3);
    CU_ASSERT_STRING_EQUAL(c.tenants[0].name, "gold");
    CU_ASSERT_STRING_EQUAL(c.tenants[1].name, "b-2_x.y");
    CU_ASSERT_STRING_EQUAL(c.tenants[2].name, "empty");
    CU_ASSERT_EQUAL(c.tenants[0].set,
                    SRV_CFG_TENANT_WEIGHT | SRV_CFG_TENANT_MAX_TIMEOUT_MS | SRV_CFG_TENANT_RATE);

    /* Set keys override, the others inherit [limits]; burst 0 is one second of rate. */
    srv_cfg_tenant_limits(&c, "gold", &lim);
    CU_ASSERT_EQUAL(lim.max_inflight, 20);
    CU_ASSERT_DOUBLE_EQUAL(lim.rate, 100, 1e-12);
    CU_ASSERT_EQUAL(lim.burst, 100);
    CU_ASSERT_EQUAL(lim.weight, 8);
    CU_ASSERT_EQUAL(lim.max_timeout_ms, 5000);
    srv_cfg_tenant_limits(&c, "b-2_x.y", &lim);
    CU_ASSERT_EQUAL(lim.max_inflight, 1);
    CU_ASSERT_DOUBLE_EQUAL(lim.rate, 0.5, 1e-12);
    CU_ASSERT_EQUAL(lim.burst, 3);
    CU_ASSERT_EQUAL(lim.weight, 2);
    CU_ASSERT_EQUAL(lim.max_timeout_ms, 0);
    srv_cfg_tenant_limits(&c, "empty", &lim);
    CU_ASSERT_DOUBLE_EQUAL(lim.rate, 7.25, 1e-12);
    CU_ASSERT_EQUAL(lim.burst, 8);
    srv_cfg_tenant_limits(&c, NULL, &lim);
    CU_ASSERT_EQUAL(lim.weight, 2);

    /* Inheritance is live: a later [limits] change reaches tenants that do not set the key. */
    char err[512];
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "limits", "weight", "5", "t", err, sizeof(err)), 0);
    srv_cfg_tenant_limits(&c, "empty", &lim);
    CU_ASSERT_EQUAL(lim.weight, 5);
    srv_cfg_tenant_limits(&c, "gold", &lim);
    CU_ASSERT_EQUAL(lim.weight, 8);
    tc_round_trip(&c);
}

static void test_srv_cfg_tenant_errors(void)
{
    tc_expect("[tenant.a b]\nrate = 1\n", -EINVAL, ":1: [tenant.a b]: invalid tenant name");
    tc_expect("[limits]\nweight = 2\n[tenant.]\n", -EINVAL, ":3: [tenant.]: invalid tenant name");
    tc_expect("[tenant.other]\n", -EINVAL, ":1: [tenant.other]: tenant name \"other\" is reserved");
    tc_expect("[tenant]\n", -EINVAL, ":1: [tenant]: unknown section");
    tc_expect("[tenant.a]\nworkers = 1\n", -EINVAL, ":2: [tenant.a] workers: unknown key");
    tc_expect("[tenant.a]\nweight = 0\n", -EINVAL,
              ":2: [tenant.a] weight: value 0 out of range 1..1000");
    tc_expect("[tenant.a]\nrate = -1\n", -EINVAL, ":2: [tenant.a] rate: negative value");
    tc_expect("[tenant.a]\nrate = 1.2345\n", -EINVAL, ":2: [tenant.a] rate: expected a number");
    tc_expect("[tenant.a]\nrate = 1.\n", -EINVAL, ":2: [tenant.a] rate: expected a number");
    tc_expect("[tenant.a]\nrate = 1000000.5\n", -EINVAL,
              ":2: [tenant.a] rate: value 1000000.5 out of range 0..1000000");
    tc_expect("[tenant.a]\nmax_inflight = 2\n[tenant.b]\n[tenant.a]\nmax_inflight = 3\n", -EINVAL,
              ":5: [tenant.a] max_inflight: duplicate key (first set on line 2)");
    tc_expect("[tenant.a]\nmax_timeout_ms = 70000\n", -EINVAL,
              ":2: [tenant.a] max_timeout_ms: [tenant.a] max_timeout_ms (70000) exceeds [limits] "
              "max_timeout_ms (60000)");
    tc_expect("[tenant.a]\nmax_timeout_ms = 5000\n[limits]\nmax_timeout_ms = 4000\n"
              "default_timeout_ms = 1000\n",
              -EINVAL, ":4: [limits] max_timeout_ms: [tenant.a] max_timeout_ms (5000) exceeds");
    tc_expect("[limits]\nrate = 1.5x\n", -EINVAL, ":2: [limits] rate: expected a number");

    /* The number of sections is bounded; the first one too many is named with its line. */
    char text[8192];
    size_t used = 0;
    for (int i = 0; i <= SRV_CFG_MAX_TENANTS; i++)
        used += (size_t)snprintf(text + used, sizeof(text) - used, "[tenant.t%d]\n", i);
    char want[96];
    snprintf(want, sizeof(want), ":%d: [tenant.t%d]: too many tenant sections (at most %d)",
             SRV_CFG_MAX_TENANTS + 1, SRV_CFG_MAX_TENANTS, SRV_CFG_MAX_TENANTS);
    tc_expect(text, -EINVAL, want);
    text[used - strlen("[tenant.t64]\n")] = '\0';
    struct srv_cfg c;
    tc_expect_ok(text, &c);
    CU_ASSERT_EQUAL(c.tenant_count, SRV_CFG_MAX_TENANTS);

    /* A 64-byte name is fine (libinih would cut the section name; the pre-scan's is used). */
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    snprintf(text, sizeof(text), "[tenant.%s]\nweight = 9\n", name);
    tc_expect_ok(text, &c);
    CU_ASSERT_EQUAL_FATAL(c.tenant_count, 1);
    CU_ASSERT_STRING_EQUAL(c.tenants[0].name, name);
    CU_ASSERT_EQUAL(c.tenants[0].lim.weight, 9);
    snprintf(text, sizeof(text), "[tenant.%sn]\n", name);
    tc_expect(text, -EINVAL, ":1: [tenant.nnnn");
}

static void test_srv_cfg_tenant_set(void)
{
    struct srv_cfg c, d;
    char err[512];
    srv_cfg_defaults(&c);
    srv_cfg_defaults(&d);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.web", "weight", "4", "--tenant", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(c.tenant_count, 1);
    CU_ASSERT(!srv_cfg_equal(&c, &d));
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.web", "rate", "12.5", "--tenant", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(c.tenant_count, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv_cfg_tenant_find(&c, "web"));
    CU_ASSERT_DOUBLE_EQUAL(srv_cfg_tenant_find(&c, "web")->lim.rate, 12.5, 1e-12);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.w b", "rate", "1", "-t", err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "-t: [tenant.w b]: invalid tenant name (1..64 bytes of A-Z a-z "
                                "0-9 . _ -)");
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.web", "speed", "1", "-t", err, sizeof(err)), -EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "-t: [tenant.web] speed: unknown key");
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.x", "max_timeout_ms", "60001", "-t", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.web", "max_timeout_ms", "100", "-t", err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "limits", "default_timeout_ms", "50", "-t", err, sizeof(err)),
                    0);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "limits", "max_timeout_ms", "99", "-t", err, sizeof(err)),
                    -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "[tenant.web] max_timeout_ms (100) exceeds"));
    CU_ASSERT_EQUAL(c.tenant_count, 1); /* refused tenants were not added */

    /* Equality sees every tenant key and the order of sections. */
    struct srv_cfg e = c;
    e.tenants[0].lim.weight = 5;
    CU_ASSERT(!srv_cfg_equal(&c, &e));
    e = c;
    e.tenants[0].set &= ~SRV_CFG_TENANT_RATE;
    CU_ASSERT(!srv_cfg_equal(&c, &e));
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "tenant.zz", "burst", "0", "-t", err, sizeof(err)), 0);
    e = c;
    struct srv_cfg_tenant tmp = e.tenants[0];
    e.tenants[0] = e.tenants[1];
    e.tenants[1] = tmp;
    CU_ASSERT(!srv_cfg_equal(&c, &e));
    tc_round_trip(&c);
}

/* [auth] and the tenant keys: hashes only, at most two per tenant, one tenant per key, and mode
 * against where the server listens, each error naming FILE:LINE and the key. */
static void test_srv_cfg_auth_keys(void)
{
    struct srv_cfg c;
    tc_expect_ok("[auth]\nmode = keys\n[tenant.a]\nkeys = " TC_KEY_A ", " TC_KEY_B "\n", &c);
    CU_ASSERT_EQUAL(c.auth_mode, SRV_CFG_AUTH_KEYS);
    CU_ASSERT_EQUAL(c.tenants[0].keys.count, 2);
    CU_ASSERT_EQUAL(c.tenants[0].keys.digest[0][0], 0xaa);
    CU_ASSERT_EQUAL(c.tenants[0].keys.digest[1][31], 0xdb);
    CU_ASSERT(c.tenants[0].set & SRV_CFG_TENANT_KEYS);
    tc_round_trip(&c);
    tc_expect("[tenant.a]\nkeys = spk_secret_token\n", -EINVAL,
              ":2: [tenant.a] keys: expected sha256:<64 hex digits>");
    tc_expect("[tenant.a]\nkeys = sha256:aa1d\n", -EINVAL, ":2: [tenant.a] keys: expected sha256:");
    tc_expect("[tenant.a]\nkeys = " TC_KEY_A ", " TC_KEY_A "\n", -EINVAL,
              ":2: [tenant.a] keys: the same key is listed twice");
    tc_expect("[auth]\nmetrics_token = " TC_KEY_A ", " TC_KEY_B "\n", -EINVAL,
              ":2: [auth] metrics_token: too many keys (at most 1)");
    tc_expect("[tenant.a]\nkeys = " TC_KEY_A "\n[tenant.b]\nweight = 2\nkeys = " TC_KEY_A "\n",
              -EINVAL, ":5: [tenant.b] keys: a key of [tenant.b] is also a key of [tenant.a]");
    tc_expect("[auth]\nmetrics_token = " TC_KEY_B "\n[tenant.a]\nkeys = " TC_KEY_B "\n", -EINVAL,
              ":4: [tenant.a] keys: a key of [tenant.a] is also [auth] metrics_token");
    tc_expect("[auth]\nmode = open\n", -EINVAL, ":2: [auth] mode: expected none, keys or proxy");
    tc_expect("[auth]\nmode = proxy\n", -EINVAL, ":2: [auth] mode: mode = proxy needs");
    tc_expect_ok("[server]\ntrusted_proxies = 127.0.0.1\n[auth]\nmode = proxy\n", &c);
    tc_expect("[server]\nlisten = 0.0.0.0:8080\n[auth]\nmode = keys\n", -EINVAL,
              ":4: [auth] mode: mode = keys on the non-loopback address 0.0.0.0:8080");
    tc_expect("[auth]\nmode = keys\n[server]\nlisten = 127.0.0.1:1, [::]:8080\n", -EINVAL,
              ":4: [server] listen: mode = keys on the non-loopback address [::]:8080");
    tc_expect_ok("[server]\nlisten = 0.0.0.0:8080\n[auth]\nmode = keys\nallow_plaintext = yes\n",
                 &c);
    CU_ASSERT(c.allow_plaintext);
    tc_expect_ok("[server]\nlisten = 0.0.0.0:8080\ntrusted_proxies = 10.0.0.1\n[auth]\n"
                 "mode = keys\n",
                 &c);
    tc_expect("[server]\nadmin_listen = localhost:9091\n", -EINVAL,
              ":2: [server] admin_listen: bad address");
    char err[512];
    srv_cfg_defaults(&c);
    CU_ASSERT_EQUAL(srv_cfg_set(&c, "auth", "mode", "keys", "-t", err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(
        srv_cfg_set(&c, "server", "listen", "10.1.2.3:80", "--listen", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "non-loopback"));
}

static void test_srv_cfg_addr_loopback(void)
{
    CU_ASSERT(srv_cfg_addr_loopback("127.0.0.1:8080"));
    CU_ASSERT(srv_cfg_addr_loopback("127.3.2.1:0"));
    CU_ASSERT(srv_cfg_addr_loopback("[::1]:80"));
    CU_ASSERT(srv_cfg_addr_loopback("[::ffff:127.0.0.1]:80"));
    CU_ASSERT(!srv_cfg_addr_loopback("0.0.0.0:8080"));
    CU_ASSERT(!srv_cfg_addr_loopback("[::]:8080"));
    CU_ASSERT(!srv_cfg_addr_loopback("10.0.0.1:80"));
    CU_ASSERT(!srv_cfg_addr_loopback("128.0.0.1:80"));
    CU_ASSERT(!srv_cfg_addr_loopback("unix"));
    CU_ASSERT(!srv_cfg_addr_loopback(""));
}

/* config is a leaf that the policies read: its header includes no admission (nor other policy). */
static void test_srv_cfg_header_is_a_leaf(void)
{
    CU_ASSERT_EQUAL(TC_CONFIG_H_PULLS_ADMISSION, 0);
}

/* README's table of keys (from "| section | key | default | unit | live on reload |" to the
 * first line that is not a row) lists every key in print order, and its "live on reload" column
 * says what the settings table says: "yes" for a live class, "restart" for SRV_CFG_RESTART. */
static void test_srv_cfg_readme_table_matches(void)
{
    static const char head[] = "| section | key | default | unit | live on reload |";
    char path[1024], line[1024], readme_keys[4096] = "", print_keys[4096];
    const char *etc = getenv("SPINDLE_ETC");
    size_t used = 0;
    bool in_table = false;
    snprintf(path, sizeof(path), "%s%sREADME.md", etc && *etc ? etc : "",
             etc && *etc ? "/../" : "");
    FILE *f = fopen(path, "r");
    CU_ASSERT_FATAL(f != NULL);
    while (fgets(line, sizeof(line), f) != NULL) {
        char sec[64], key[64], live[16];
        enum srv_cfg_reload r = SRV_CFG_RESTART;
        if (!in_table) {
            in_table = strncmp(line, head, sizeof(head) - 1) == 0;
            continue;
        }
        if (strncmp(line, "|---", 4) == 0)
            continue;
        if (line[0] != '|')
            break;
        if (sscanf(line, "| %63[a-z] | %63[a-z_0-9] | %*[^|]| %*[^|]| %15[a-z] |", sec, key,
                   live) != 3) {
            fprintf(stderr, "\n  README row not understood: %s", line);
            CU_FAIL("README row not understood");
            continue;
        }
        CU_ASSERT_EQUAL(srv_cfg_key_reload(sec, key, &r), 0);
        bool live_yes = strcmp(live, "yes") == 0;
        CU_ASSERT(live_yes || strcmp(live, "restart") == 0);
        CU_ASSERT_EQUAL(r != SRV_CFG_RESTART, live_yes);
        if ((r != SRV_CFG_RESTART) != live_yes)
            fprintf(stderr, "\n  README says %s.%s is \"%s\" on reload: the table disagrees", sec,
                    key, live);
        int n = snprintf(readme_keys + used, sizeof(readme_keys) - used, "%s.%s,", sec, key);
        CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof(readme_keys) - used);
        used += (size_t)n;
    }
    fclose(f);
    CU_ASSERT(in_table);
    tc_print_keys(print_keys, sizeof(print_keys));
    CU_ASSERT_STRING_EQUAL(readme_keys, print_keys);
}

int suite_server_config(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_cfg_defaults_equal_file),
        SPINDLE_TEST(test_srv_cfg_defaults_values),
        SPINDLE_TEST(test_srv_cfg_load_syntax),
        SPINDLE_TEST(test_srv_cfg_load_structure_errors),
        SPINDLE_TEST(test_srv_cfg_load_value_errors),
        SPINDLE_TEST(test_srv_cfg_load_first_error),
        SPINDLE_TEST(test_srv_cfg_load_every_error),
        SPINDLE_TEST(test_srv_cfg_load_hash_comment),
        SPINDLE_TEST(test_srv_cfg_load_io_errors),
        SPINDLE_TEST(test_srv_cfg_load_untouched),
        SPINDLE_TEST(test_srv_cfg_load_sizes),
        SPINDLE_TEST(test_srv_cfg_load_listen),
        SPINDLE_TEST(test_srv_cfg_set_overrides),
        SPINDLE_TEST(test_srv_cfg_print_round_trip),
        SPINDLE_TEST(test_srv_cfg_tenant_defaults),
        SPINDLE_TEST(test_srv_cfg_tenant_sections),
        SPINDLE_TEST(test_srv_cfg_tenant_errors),
        SPINDLE_TEST(test_srv_cfg_tenant_set),
        SPINDLE_TEST(test_srv_cfg_auth_keys),
        SPINDLE_TEST(test_srv_cfg_addr_loopback),
        SPINDLE_TEST(test_srv_cfg_header_is_a_leaf),
        SPINDLE_TEST(test_srv_cfg_readme_table_matches),
    };
    return SPINDLE_SUITE_ADD("server_config", tc_dir_init, tc_dir_cleanup, tests);
}
