/* internal.h - what the files of server/tasks/ share (server/tasks/ only).
 *
 * store.c runs the store thread and the helpers of the task record (names, ids, times);
 * store_sqlite.c is the SQLite backend that thread drives.
 */
#ifndef SPINDLE_SRV_TASKS_INTERNAL_H
#define SPINDLE_SRV_TASKS_INTERNAL_H

#include "server/tasks/tasks.h"

/* Rows deleted per purge transaction when the configuration says 0. */
#define SRV_TASK_PURGE_BATCH 500

#endif
