/* migrate.c - `spindle tasks migrate [--check] [-c FILE] [--store STORE]`: create or migrate the
 * schema of the task store the configuration names, or only say whether that is needed.
 *
 * Design: spindle serve migrates the schema itself at start (under an advisory lock, so
 * instances starting together do it once); this command lets an operator do it before a rolling
 * upgrade, or check from a deployment script. It reads the configuration like serve and talks
 * to the store directly on this thread; nothing else runs.
 *
 * Exit codes: 0 the schema is current (after migrating, without --check); 1 (--check) a
 * migration is pending; 2 an error: usage, configuration, an unreachable store, or a schema newer
 * than this spindle's.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/tasks/internal.h"
#include "server/tasks/migrate.h"

#define MIGRATE_EXIT_PENDING 1
#define MIGRATE_EXIT_ERROR   2

static const char migrate_usage[] =
    "usage: spindle tasks migrate [--check] [-c FILE] [--store STORE]\n"
    "  -c, --config FILE  the configuration whose [tasks] store is meant (default: built-in)\n"
    "      --store STORE  this store instead (a file path or a postgresql:// URI)\n"
    "      --check        change nothing: exit 0 when the schema is current, 1 when a\n"
    "                     migration is pending, 2 on error\n";

/* The store value of the configuration at `path` (NULL: defaults) into cfg. */
static int migrate_config(const char *path, struct srv_cfg *cfg)
{
    static char err[65536];
    srv_cfg_defaults(cfg);
    if (path != NULL && srv_cfg_load(path, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s", err);
        return -EINVAL;
    }
    return 0;
}

static int migrate_run(const char *store, bool check)
{
    const struct srv_task_store_ops *ops = srv_task_store_backend(store);
    struct srv_task_store_opts o = {.path = store};
    char err[1024] = "";
    unsigned have = 0, want = 0;
    if (ops->schema == NULL) { /* the embedded store: opening it migrates it */
        if (check) {
            fprintf(stderr,
                    "spindle: tasks migrate --check: the %s store migrates itself when "
                    "spindle serve opens it; nothing to check\n",
                    ops->name);
            return 0;
        }
    } else if (ops->schema(&o, &have, &want, err, sizeof(err)) != 0) {
        fprintf(stderr, "spindle: %s\n", err);
        return MIGRATE_EXIT_ERROR;
    } else if (have > want) {
        fprintf(stderr,
                "spindle: the task store has schema version %u, newer than this spindle's %u: "
                "run a newer spindle\n",
                have, want);
        return MIGRATE_EXIT_ERROR;
    } else if (check) {
        printf("task store schema: version %u, this spindle's %u: %s\n", have, want,
               have == want ? "current" : "migration pending");
        return have == want ? 0 : MIGRATE_EXIT_PENDING;
    }
    void *st = NULL;
    int rc = ops->open(&o, &st, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "spindle: %s\n", err);
        return MIGRATE_EXIT_ERROR;
    }
    ops->close(st);
    if (ops->schema == NULL) /* no version to report: opening it migrated it */
        printf("task store schema: current (the %s store migrates itself when opened)\n",
               ops->name);
    else
        printf("task store schema: current (version %u)\n", want);
    return 0;
}

int srv_tasks_migrate_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"store", required_argument, NULL, 's'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *store = NULL;
    bool check = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 's':
            store = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'h':
            fputs(migrate_usage, stdout);
            return 0;
        default:
            fputs(migrate_usage, stderr);
            return MIGRATE_EXIT_ERROR;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "spindle: tasks migrate: unexpected argument \"%s\"\n%s", argv[optind],
                migrate_usage);
        return MIGRATE_EXIT_ERROR;
    }
    struct srv_cfg cfg;
    if (store == NULL) {
        if (migrate_config(config, &cfg) != 0)
            return MIGRATE_EXIT_ERROR;
        store = cfg.task_store;
    }
    if (store[0] == '\0') {
        fprintf(stderr, "spindle: tasks migrate: [tasks] store is empty (durable tasks off)\n");
        return MIGRATE_EXIT_ERROR;
    }
    return migrate_run(store, check);
}
