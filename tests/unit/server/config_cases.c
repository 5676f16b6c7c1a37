/* config_cases.c - the configuration suites' temporary files and load expectations (see
 * config_cases.h). */
#include "tests/unit/server/config_cases.h"

#include <CUnit/CUnit.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tc_dir[] = "/tmp/spindle-config-XXXXXX";
static unsigned tc_seq;

const char *tc_dir_path(void)
{
    return tc_dir;
}

static int tc_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int tc_dir_init(void)
{
    strcpy(tc_dir, "/tmp/spindle-config-XXXXXX"); /* mkdtemp wrote the previous suite's name */
    return mkdtemp(tc_dir) == NULL ? -1 : 0;
}

int tc_dir_cleanup(void)
{
    return nftw(tc_dir, tc_rm, 8, FTW_DEPTH | FTW_PHYS);
}

char *tc_file_n(const char *content, size_t len)
{
    char *path = NULL;
    if (asprintf(&path, "%s/t%u.conf", tc_dir, ++tc_seq) < 0)
        return NULL;
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fwrite(content, 1, len, f) == len);
    CU_ASSERT_FATAL(fclose(f) == 0);
    return path;
}

char *tc_file(const char *content)
{
    return tc_file_n(content, strlen(content));
}

bool tc_err_is(const char *err, const char *path, const char *want)
{
    size_t n = strlen(path);
    bool ok = strncmp(err, path, n) == 0 && strncmp(err + n, want, strlen(want)) == 0;
    if (!ok)
        fprintf(stderr, "\n  want \"%s%s\"\n  got  \"%s\"\n", path, want, err);
    return ok;
}

void tc_expect(const char *content, int rc, const char *want)
{
    struct srv_cfg cfg, before;
    char err[512] = "";
    srv_cfg_defaults(&cfg);
    before = cfg;
    char *path = tc_file(content);
    CU_ASSERT_FATAL(path != NULL);
    int got = srv_cfg_load(path, &cfg, err, sizeof(err));
    CU_ASSERT_EQUAL(got, rc);
    if (want != NULL)
        CU_ASSERT(tc_err_is(err, path, want));
    if (rc != 0)
        CU_ASSERT(memcmp(&cfg, &before, sizeof(cfg)) == 0);
    free(path);
}

void tc_expect_ok(const char *content, struct srv_cfg *out)
{
    char err[512] = "";
    char *path = tc_file(content);
    CU_ASSERT_FATAL(path != NULL);
    srv_cfg_defaults(out);
    int rc = srv_cfg_load(path, out, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\n  unexpected error: %s\n", err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(out->source, path);
    free(path);
}
