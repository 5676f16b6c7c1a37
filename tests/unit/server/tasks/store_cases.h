/* store_cases.h - the task store tests every backend passes (store_cases.c); each backend's
 * suite (test_store_sqlite.c, test_store_pg.c) lists TS_CASES in its table and points ts_be at
 * its backend in the suite's init.
 */
#ifndef SPINDLE_TEST_STORE_CASES_H
#define SPINDLE_TEST_STORE_CASES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/tasks/tasks.h"
#include "tests/suite.h"

struct ts_backend {
    const struct srv_task_store_ops *ops;
    /* A new empty store's location (a file path, a URI) into loc. 0 or a negative errno. */
    int (*fresh)(char *loc, size_t size);
    /* Write schema version v into the store at loc. 0 or a negative errno. */
    int (*set_version)(const char *loc, int v);
    bool exclusive; /* one process per store: opening it ends every lease at once */
};

/* The backend under test (set by the suite's init) and the location of the last ts_open. */
extern const struct ts_backend *ts_be;
extern char ts_loc[512];

/* Open a fresh store (ts_loc), or the one at ts_loc again; fatal assertion on failure. */
void *ts_open(void);
void *ts_reopen(void);
/* A task of `tenant` with `spec` and an Idempotency-Key (NULL = none), due now. */
void ts_task(struct srv_task *t, const char *tenant, const char *spec, const char *key);
/* Enqueue in its own transaction; returns the enqueue's code. */
int ts_enqueue(void *st, struct srv_task *t, unsigned cap, bool *existed);
/* Claim up to max for `owner` at `now` (lease now + 1000) in its own transaction. */
unsigned ts_claim(void *st, const char *owner, int64_t now, unsigned max, struct srv_task *out);
/* Fire schedule `name`'s tick `tick` with task *t in its own transaction; returns the code of
 * schedule_fire. */
int ts_fire(void *st, const char *name, int64_t tick, struct srv_task *t, unsigned cap,
            bool *fired);

void test_enqueue_get_and_idempotency(void);
void test_enqueue_tenant_cap(void);
void test_claim_complete_fencing(void);
void test_fail_retry_then_failed(void);
void test_release_and_cancel(void);
void test_list_pages(void);
void test_purge_bounded(void);
void test_reopen_interrupts_running(void);
void test_open_refuses_newer_schema(void);
void test_schedule_fire_once_per_tick(void);
void test_queued_by_tenant(void);

/* The table entries of the cases; `skip` as for SPINDLE_TEST_UNLESS (NULL: always run). */
#define TS_CASES(skip)                                                                             \
    SPINDLE_TEST_UNLESS(test_enqueue_get_and_idempotency, skip),                                   \
        SPINDLE_TEST_UNLESS(test_enqueue_tenant_cap, skip),                                        \
        SPINDLE_TEST_UNLESS(test_claim_complete_fencing, skip),                                    \
        SPINDLE_TEST_UNLESS(test_fail_retry_then_failed, skip),                                    \
        SPINDLE_TEST_UNLESS(test_release_and_cancel, skip),                                        \
        SPINDLE_TEST_UNLESS(test_list_pages, skip), SPINDLE_TEST_UNLESS(test_purge_bounded, skip), \
        SPINDLE_TEST_UNLESS(test_reopen_interrupts_running, skip),                                 \
        SPINDLE_TEST_UNLESS(test_open_refuses_newer_schema, skip),                                 \
        SPINDLE_TEST_UNLESS(test_schedule_fire_once_per_tick, skip),                               \
        SPINDLE_TEST_UNLESS(test_queued_by_tenant, skip)

#endif
