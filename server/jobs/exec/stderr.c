/* stderr.c - a program's stderr, cut into lines and logged with the request's context.
 *
 * Design: bytes arrive in whatever chunks read() returns; a line is assembled in a fixed buffer
 * of SRV_EXEC_LINE_MAX bytes (the rest of a longer line is counted and marked, never stored). Each
 * complete line is logged as {"msg":"job stderr","kind":...,"pid":...,"line":...} while the run
 * stays within SRV_EXEC_STDERR_LINES lines and SRV_EXEC_STDERR_BYTES bytes; later lines are only
 * counted, and one "job stderr dropped" line reports them at the end. The last non-empty line is
 * always kept, whatever the bounds, for the error message. The caller's context is current, so
 * the logger adds request_id, tenant, trace_id and span_id. One run, one thread: no locks.
 */
#include "server/jobs/exec/internal.h"

#include <string.h>

#include "logging/log.h"

void exec_lines_init(struct exec_lines *l, const char *kind, pid_t pid)
{
    memset(l, 0, sizeof(*l));
    l->kind = kind != NULL ? kind : "";
    l->pid = pid;
}

static void line_done(struct exec_lines *l)
{
    size_t len = l->cur_len;
    if (len > 0 && l->cur[len - 1] == '\r')
        len--;
    uint64_t full = len + l->cur_cut;
    l->lines++;
    if (len > 0) {
        memcpy(l->last, l->cur, len);
        l->last[len] = '\0';
    }
    if (l->logged_lines < SRV_EXEC_STDERR_LINES && l->logged_bytes + len <= SRV_EXEC_STDERR_BYTES) {
        l->logged_lines++;
        l->logged_bytes += len;
        if (l->cur_cut > 0)
            LOG_I("job stderr", LOG_STR("kind", l->kind), LOG_INT("pid", l->pid),
                  LOG_STRN("line", l->cur, len), LOG_UINT("cut_bytes", l->cur_cut));
        else
            LOG_I("job stderr", LOG_STR("kind", l->kind), LOG_INT("pid", l->pid),
                  LOG_STRN("line", l->cur, len));
    } else {
        l->dropped_lines++;
        l->dropped_bytes += full;
    }
    l->cur_len = 0;
    l->cur_cut = 0;
}

void exec_lines_feed(struct exec_lines *l, const char *buf, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(buf, '\n', n);
        size_t take = nl != NULL ? (size_t)(nl - buf) : n;
        size_t room = sizeof(l->cur) - l->cur_len;
        size_t copy = take < room ? take : room;
        memcpy(l->cur + l->cur_len, buf, copy);
        l->cur_len += copy;
        l->cur_cut += take - copy;
        if (nl == NULL)
            return;
        line_done(l);
        buf += take + 1;
        n -= take + 1;
    }
}

void exec_lines_end(struct exec_lines *l)
{
    if (l->cur_len > 0 || l->cur_cut > 0)
        line_done(l);
    if (l->dropped_lines > 0)
        LOG_W("job stderr dropped", LOG_STR("kind", l->kind), LOG_INT("pid", l->pid),
              LOG_UINT("lines", l->dropped_lines), LOG_UINT("bytes", l->dropped_bytes),
              LOG_UINT("logged_lines", l->logged_lines));
}
