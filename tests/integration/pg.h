/* pg.h - a throw-away PostgreSQL cluster for the test binaries, from Debian's packages.
 *
 * The first call that needs it starts ONE cluster for the whole test binary run: initdb into a
 * new directory under /tmp (as the unprivileged user postgres when the tests run as root: initdb
 * refuses root), then pg_ctl start on a free port of 127.0.0.1 with fsync off (the tests kill
 * spindle, not the database). Each test gets its own database (pg_db_new), so tests never see
 * each other's tasks. At exit the cluster is stopped and its directory removed.
 *
 * Machines without the server binaries (/usr/lib/postgresql/N/bin) skip the tests that need it:
 * pg_skip() is a SPINDLE_TEST_UNLESS check, so they are counted inactive, never passed.
 *
 * Threads: call from the test's main thread only.
 */
#ifndef SPINDLE_TEST_PG_H
#define SPINDLE_TEST_PG_H

#include <stddef.h>

/* NULL when a cluster can be started here, else why not (a static string). */
const char *pg_skip(void);

/* Start the cluster unless it runs. 0, or a negative errno after printing why on stderr. */
int pg_start(void);

/* Stop the cluster (pg_ctl stop -m fast), keeping its files and port: pg_start starts it again
 * with every database as it was (a database restart). 0 or a negative errno. */
int pg_stop(void);

/* Create a new empty database and write its URI (postgresql://spindle@127.0.0.1:PORT/NAME) into
 * uri. Starts the cluster when needed. 0 or a negative errno. */
int pg_db_new(char *uri, size_t size);

/* Run `sql` (one or more statements) on the database at `uri`. 0, or -EIO after printing the
 * error on stderr. */
int pg_sql(const char *uri, const char *sql);

/* The first column of the first row of `sql` on `uri` as a number; -1 on error or no row. */
long long pg_sql_int(const char *uri, const char *sql);

#endif
