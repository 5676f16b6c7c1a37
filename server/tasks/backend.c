/* backend.c - which task store backend a [tasks] store value names.
 *
 * A libpq connection URI ("postgresql://" or "postgres://") is the shared PostgreSQL store;
 * anything else is the path of the embedded SQLite file. Key/value connection strings
 * ("host=... dbname=...") are not accepted: they cannot be told from a file name.
 */
#include <stdio.h>
#include <string.h>

#include "server/tasks/internal.h"

const struct srv_task_store_ops *srv_task_store_backend(const char *store)
{
    if (strncmp(store, "postgresql://", 13) == 0 || strncmp(store, "postgres://", 11) == 0)
        return &srv_task_store_pg;
    return &srv_task_store_sqlite;
}

void srv_task_store_where(const char *store, char *out, size_t size)
{
    if (srv_task_store_backend(store) == &srv_task_store_pg)
        pg_redact(store, out, size);
    else
        snprintf(out, size, "%s", store);
}
