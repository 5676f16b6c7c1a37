/* migrate.h - `spindle tasks migrate`: create, migrate or check the task store's schema
 * (server/ only; the command's entry point for main.c).
 */
#ifndef SPINDLE_SRV_TASKS_MIGRATE_H
#define SPINDLE_SRV_TASKS_MIGRATE_H

/* Run `spindle tasks migrate ...` with argv[0] = "migrate". Prints on stdout/stderr. Returns the
 * exit code: 0 current (or migrated), 1 a migration is pending (--check), 2 an error. */
int srv_tasks_migrate_main(int argc, char **argv);

#endif
