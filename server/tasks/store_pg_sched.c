/* store_pg_sched.c - schedules on the PostgreSQL store: each tick fires once across every
 * instance that shares the database.
 *
 * Design: the table spindle_schedules holds each schedule's last fired tick. Firing claims the
 * tick first with an upsert that only moves the tick forward; the row lock it takes makes a
 * second instance firing the same tick wait for the first one's commit, then find the tick
 * taken and write nothing. The task is enqueued after the claim inside a savepoint, so an enqueue
 * the store refuses (the tenant's cap, an Idempotency-Key with another body) records no tick,
 * as with SQLite. Store thread only, inside the caller's transaction.
 *
 * These are the schedule operations of the store interface (schedule_fire, schedule_list) for
 * the PostgreSQL backend, in srv_task_store_pg's ops table (store_pg.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tasks/internal.h"

static int64_t sched_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

int pg_schedule_fire(void *st, const char *name, int64_t tick_ms, int64_t now, struct srv_task *t,
                     unsigned cap, bool *fired)
{
    struct pg_store *p = st;
    *fired = false;
    char tick[24], at[24];
    snprintf(tick, sizeof(tick), "%" PRId64, tick_ms);
    snprintf(at, sizeof(at), "%" PRId64, now);
    const char *v[] = {name, tick, t->id, at};
    PGresult *r;
    int rc = pg_simple(p, "SAVEPOINT spindle_schedule_fire");
    if (rc == 0)
        rc = pg_exec(p,
                     "INSERT INTO spindle_schedules(name,last_tick_ms,last_task,fired_ms)"
                     " VALUES($1::text,$2::bigint,$3::text,$4::bigint) ON CONFLICT (name) DO"
                     " UPDATE SET last_tick_ms=excluded.last_tick_ms,"
                     " last_task=excluded.last_task, fired_ms=excluded.fired_ms"
                     " WHERE spindle_schedules.last_tick_ms<excluded.last_tick_ms RETURNING name",
                     4, v, NULL, NULL, &r);
    if (rc != 0)
        return rc;
    bool claimed = PQntuples(r) == 1;
    PQclear(r);
    if (!claimed) /* this tick (or a later one) fired already, here or on another instance */
        return pg_simple(p, "RELEASE SAVEPOINT spindle_schedule_fire");
    bool existed = false;
    rc = srv_task_store_pg.enqueue(p, t, cap, &existed);
    if (rc == -EDQUOT || rc == -EEXIST) { /* refused: the tick is not recorded either */
        int rb = pg_simple(p, "ROLLBACK TO SAVEPOINT spindle_schedule_fire");
        return rb != 0 ? rb : rc;
    }
    if (rc != 0)
        return rc;
    if (existed) { /* the key found an older task: record that one as the tick's */
        const char *u[] = {name, t->id};
        rc = pg_exec(p, "UPDATE spindle_schedules SET last_task=$2 WHERE name=$1", 2, u, NULL, NULL,
                     NULL);
    }
    if (rc == 0)
        rc = pg_simple(p, "RELEASE SAVEPOINT spindle_schedule_fire");
    *fired = rc == 0;
    return rc;
}

int pg_schedule_list(void *st, srv_task_schedule_fn *fn, void *arg)
{
    PGresult *r = PQexec(((struct pg_store *)st)->conn,
                         "SELECT name,last_tick_ms,last_task,fired_ms FROM spindle_schedules"
                         " ORDER BY name");
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -EIO;
    for (int i = 0; rc == 0 && i < PQntuples(r); i++)
        fn(PQgetvalue(r, i, 0), sched_int(r, i, 1), PQgetvalue(r, i, 2), sched_int(r, i, 3), arg);
    PQclear(r);
    return rc;
}
