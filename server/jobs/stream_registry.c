/* stream_registry.c - finding the streaming job kinds (server/jobs/stream.h).
 *
 * Design: every kind file that streams places a pointer to its descriptor in the linker section
 * "srv_job_streams"; the section is scanned by name on each lookup (a handful of entries, one
 * lookup per request head). Immutable: any thread.
 */
#include "server/jobs/stream.h"

#include <string.h>

/* Defined by the linker around the section; weak so that a build with no streaming kind links. */
extern const struct srv_job_stream_kind *const __start_srv_job_streams[] __attribute__((weak));
extern const struct srv_job_stream_kind *const __stop_srv_job_streams[] __attribute__((weak));

const struct srv_job_stream_kind *srv_job_stream_find(const char *name, size_t len)
{
    if (__start_srv_job_streams == NULL)
        return NULL;
    for (const struct srv_job_stream_kind *const *k = __start_srv_job_streams;
         k < __stop_srv_job_streams; k++) {
        if (strlen((*k)->name) == len && memcmp((*k)->name, name, len) == 0)
            return *k;
    }
    return NULL;
}
