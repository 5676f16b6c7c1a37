/* internal.h - what the files of server/tasks/ share (server/tasks/ only).
 *
 * store.c runs the store thread and the helpers of the task record (names, ids, times);
 * store_sqlite.c is the SQLite backend that thread drives, and store_sqlite_open.c opens it
 * (schema, version, checks).
 */
#ifndef SPINDLE_SRV_TASKS_INTERNAL_H
#define SPINDLE_SRV_TASKS_INTERNAL_H

#include <sqlite3.h>

#include "server/tasks/tasks.h"

/* Rows deleted per purge transaction when the configuration says 0. */
#define SRV_TASK_PURGE_BATCH 500

/* ---- the SQLite backend ---- */

#define SRV_SQ_NSTMT 32 /* prepared statements kept at most */

/* The backend's state: the connection and its prepared statements (store thread only). */
struct srv_sq_store {
    sqlite3 *db;
    sqlite3_stmt *stmt[SRV_SQ_NSTMT];
};

/* The negative errno of an SQLite result code: -ENOSPC (full), -EBUSY (locked), -ENOMEM, -EIO. */
int srv_sq_errno(int rc);

/* srv_task_store_ops.open of the SQLite backend (store_sqlite_open.c). */
int srv_sq_open(const struct srv_task_store_opts *o, void **st, char *err, size_t size);

#endif
