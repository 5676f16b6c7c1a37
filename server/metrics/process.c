/* process.c - the process_* figures of this process from /proc (see process.h).
 *
 * Design: /proc/self/stat is read whole into a small stack buffer and parsed by the pure parser.
 * Its start time counts clock ticks since boot; the boot time is CLOCK_REALTIME minus
 * CLOCK_BOOTTIME now (what /proc/stat's btime line says, without reading a file whose interrupt
 * line alone can be tens of kilobytes).
 * Open descriptors are counted by listing /proc/self/fd (the directory's own descriptor is not
 * counted). The maximum is the soft RLIMIT_NOFILE, what the kernel enforces on open(2).
 *
 * Deliberately not done: caching between scrapes (a scrape every few seconds costs a few
 * syscalls), or reading another process.
 */
#include "server/metrics/process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* /proc/PID/stat fields, numbered as in proc(5); the fields after the name start at 3 (state). */
#define STAT_UTIME     14
#define STAT_STIME     15
#define STAT_STARTTIME 22
#define STAT_VSIZE     23
#define STAT_RSS       24

int srv_met_process_stat_parse(const char *text, long ticks, long page, double btime,
                               struct srv_met_process *p)
{
    const char *s = strrchr(text, ')');
    if (s == NULL || ticks <= 0 || page <= 0)
        return -EINVAL;
    double utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    int field = 2; /* the name was field 2 */
    s++;
    while (field < STAT_RSS) {
        while (*s == ' ')
            s++;
        if (*s == '\0' || *s == '\n')
            return -EINVAL;
        field++;
        char *end;
        double v = strtod(s, &end);
        switch (field) {
        case STAT_UTIME:
            utime = v;
            break;
        case STAT_STIME:
            stime = v;
            break;
        case STAT_STARTTIME:
            start = v;
            break;
        case STAT_VSIZE:
            vsize = v;
            break;
        case STAT_RSS:
            rss = v;
            break;
        default:
            break;
        }
        s += strcspn(s, " \n");
    }
    p->cpu_seconds = (utime + stime) / (double)ticks;
    p->start_time = btime + start / (double)ticks;
    p->virtual_bytes = vsize;
    p->resident_bytes = rss * (double)page;
    return 0;
}

/* Read up to size - 1 bytes of `path` into buf, NUL-terminated. Returns 0 or a negative errno. */
static int proc_read(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    int rc = 0;
    while (got < size - 1) {
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return rc;
}

static int proc_open_fds(double *out)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -errno;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    *out = (double)(n > 0 ? n - 1 : 0); /* minus the listing's own descriptor */
    return 0;
}

int srv_met_process_read(struct srv_met_process *p)
{
    char stat[1024];
    struct timespec real, boot;
    memset(p, 0, sizeof(*p));
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    double btime = (double)(real.tv_sec - boot.tv_sec) + (real.tv_nsec - boot.tv_nsec) / 1e9;
    int rc = proc_read("/proc/self/stat", stat, sizeof(stat));
    if (rc == 0)
        rc =
            srv_met_process_stat_parse(stat, sysconf(_SC_CLK_TCK), sysconf(_SC_PAGESIZE), btime, p);
    int r = proc_open_fds(&p->open_fds);
    rc = rc != 0 ? rc : r;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        p->max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (double)rl.rlim_cur;
    else if (rc == 0)
        rc = -errno;
    return rc;
}
