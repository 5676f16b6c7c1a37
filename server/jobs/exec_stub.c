/* exec_stub.c - the stand-in for the exec engine (server/jobs/exec/) while it is not built in:
 * an `[kind.NAME] exec = ...` section is refused with a clear message.
 *
 * Design: a weak definition, so that the engine's own srv_exec_kind_new replaces it at link time
 * (and this file can be deleted with it).
 */
#include <errno.h>
#include <stdio.h>

#include "server/jobs/jobs.h"

__attribute__((weak)) int srv_exec_kind_new(const struct srv_cfg_kind *ck,
                                            const struct spindle_host *host,
                                            struct spindle_kind *out, char *err, size_t size)
{
    (void)ck;
    (void)host;
    (void)out;
    snprintf(err, size, "exec kinds are not available in this build of spindle");
    return -ENOTSUP;
}
