/* process.h - the standard process_* figures of the running process, read from /proc.
 *
 * The figures the Prometheus client libraries export under the same names, so stock dashboards
 * and alerts work: CPU seconds (user + system), resident and virtual memory, open and maximum
 * file descriptors, start time (Unix seconds). Read at scrape time; nothing runs in between.
 *
 * The parser is pure (text in, numbers out) so it is tested on fixed inputs; srv_met_process_read()
 * feeds it /proc/self/stat, and counts /proc/self/fd. Threads: any; no state.
 */
#ifndef SPINDLE_METRICS_PROCESS_H
#define SPINDLE_METRICS_PROCESS_H

#include <stddef.h>

struct srv_met_process {
    double cpu_seconds;    /* utime + stime */
    double resident_bytes; /* rss pages x page size */
    double virtual_bytes;  /* vsize */
    double open_fds;       /* entries of /proc/self/fd */
    double max_fds;        /* RLIMIT_NOFILE soft limit */
    double start_time;     /* Unix time the process started, in seconds */
};

/* Parse the text of /proc/PID/stat (`text`, borrowed, NUL-terminated): utime, stime, starttime,
 * vsize and rss, with `ticks` clock ticks a second, `page` bytes a page and `btime` the boot time
 * (Unix seconds) into cpu_seconds, start_time, virtual_bytes and resident_bytes of *p (the other
 * fields untouched). The command name may hold spaces and parentheses: the fields are counted
 * after its last ')'. Returns 0 or -EINVAL (too few fields, or ticks/page not positive). */
int srv_met_process_stat_parse(const char *text, long ticks, long page, double btime,
                               struct srv_met_process *p);

/* Every figure of this process now. Returns 0, or a negative errno of the first read that
 * failed (the figures it could not read are 0). */
int srv_met_process_read(struct srv_met_process *p);

#endif
