/* pg.c - the throw-away PostgreSQL cluster of a test binary (see pg.h).
 *
 * Design: the cluster's directory holds data/ (the cluster), the server's Unix socket and its
 * log (pg.log, printed when a start fails). Programs run through fork + exec with their output
 * appended to cmd.log in that directory, as the user postgres (runuser) when we are root. The
 * port is found by binding 127.0.0.1:0 and closing it again; another process may take it in
 * between, so a start that fails is tried again on a new port (3 times).
 *
 * A test binary that dies (a crash, SIGKILL at a timeout) cannot stop its cluster at exit; so
 * each cluster's directory names the test process that made it (owner.pid), and the next test
 * binary that starts a cluster first stops and removes those whose process is gone.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/pg.h"

static struct {
    bool made;    /* initdb ran */
    bool running; /* pg_ctl start succeeded and no stop since */
    char bindir[256];
    char dir[64];
    int port;
    unsigned dbs;
    uid_t uid; /* the cluster's owner when we are root */
    gid_t gid;
} pg;

/* The newest /usr/lib/postgresql/N/bin with initdb, or false. */
static bool pg_find_bindir(char *out, size_t size)
{
    glob_t g;
    bool found = false;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0 && g.gl_pathc > 0) {
        const char *best = g.gl_pathv[0];
        for (size_t i = 1; i < g.gl_pathc; i++)
            if (strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10) >
                strtol(best + strlen("/usr/lib/postgresql/"), NULL, 10))
                best = g.gl_pathv[i];
        snprintf(out, size, "%.*s", (int)(strlen(best) - strlen("/initdb")), best);
        found = true;
    }
    globfree(&g);
    return found;
}

const char *pg_skip(void)
{
    char dir[256];
    if (!pg_find_bindir(dir, sizeof(dir)))
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin: apt-get install "
               "postgresql)";
    if (geteuid() == 0 && getpwnam("postgres") == NULL)
        return "running as root and no user postgres to run initdb as";
    return NULL;
}

/* Run bindir/prog with args (NULL-terminated) as the cluster's owner; its exit code or -1. */
static int pg_run(const char *prog, const char *const *args)
{
    char path[320], log[128];
    snprintf(path, sizeof(path), "%s/%s", pg.bindir, prog);
    snprintf(log, sizeof(log), "%s/cmd.log", pg.dir);
    const char *argv[24];
    size_t n = 0;
    if (geteuid() == 0) {
        argv[n++] = "runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    argv[n++] = path;
    for (size_t i = 0; args[i] != NULL && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (chdir(pg.dir) != 0) /* the postgres user may not enter the test's directory */
            _exit(126);
        if (fd >= 0 && null >= 0) {
            dup2(null, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void pg_print_file(const char *name)
{
    char path[128], line[512];
    snprintf(path, sizeof(path), "%s/%s", pg.dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    fprintf(stderr, "--- %s\n", path);
    while (fgets(line, sizeof(line), f) != NULL)
        fputs(line, stderr);
    fclose(f);
}

static int pg_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int pg_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void pg_atexit(void)
{
    if (pg.running) {
        char data[128];
        snprintf(data, sizeof(data), "%s/data", pg.dir);
        const char *args[] = {"-D", data, "-m", "immediate", "-w", "stop", NULL};
        pg_run("pg_ctl", args);
    }
    if (pg.made)
        nftw(pg.dir, pg_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Stop and remove the clusters of test processes that no longer exist. */
static void pg_reap_stale(void)
{
    glob_t g;
    if (glob("/tmp/spindle-pg-*/owner.pid", 0, NULL, &g) != 0)
        return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "r");
        long pid = 0;
        if (f == NULL)
            continue;
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
        if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive (or not ours to judge) */
        size_t n = strlen(g.gl_pathv[i]) - strlen("/owner.pid");
        snprintf(pg.dir, sizeof(pg.dir), "%.*s", (int)n, g.gl_pathv[i]);
        char data[128];
        snprintf(data, sizeof(data), "%s/data", pg.dir);
        const char *args[] = {"-D", data, "-m", "immediate", "-w", "stop", NULL};
        pg_run("pg_ctl", args);
        nftw(pg.dir, pg_rm, 16, FTW_DEPTH | FTW_PHYS);
    }
    globfree(&g);
    pg.dir[0] = '\0';
}

static int pg_init(void)
{
    if (pg_skip() != NULL) {
        fprintf(stderr, "pg: %s\n", pg_skip());
        return -ENOENT;
    }
    pg_find_bindir(pg.bindir, sizeof(pg.bindir));
    pg_reap_stale();
    snprintf(pg.dir, sizeof(pg.dir), "/tmp/spindle-pg-XXXXXX");
    if (mkdtemp(pg.dir) == NULL)
        return -errno;
    pg.made = true;
    atexit(pg_atexit);
    char owner[128];
    snprintf(owner, sizeof(owner), "%s/owner.pid", pg.dir);
    FILE *f = fopen(owner, "w");
    if (f == NULL)
        return -errno;
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("postgres");
        pg.uid = pw->pw_uid;
        pg.gid = pw->pw_gid;
        if (chown(pg.dir, pg.uid, pg.gid) != 0)
            return -errno;
    }
    char data[128];
    snprintf(data, sizeof(data), "%s/data", pg.dir);
    const char *args[] = {"-D", data,   "-U",         "spindle", "-A", "trust",
                          "-E", "UTF8", "--locale=C", "-N",      NULL};
    if (pg_run("initdb", args) != 0) {
        fprintf(stderr, "pg: initdb failed\n");
        pg_print_file("cmd.log");
        return -EIO;
    }
    return 0;
}

int pg_start(void)
{
    if (pg.running)
        return 0;
    if (!pg.made) {
        int rc = pg_init();
        if (rc != 0)
            return rc;
    }
    char data[128], log[128], opts[512];
    snprintf(data, sizeof(data), "%s/data", pg.dir);
    snprintf(log, sizeof(log), "%s/pg.log", pg.dir);
    for (int tries = 0; tries < 3; tries++) {
        if (pg.port == 0 || tries > 0)
            pg.port = pg_free_port();
        snprintf(opts, sizeof(opts),
                 "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
                 " -c synchronous_commit=off -c max_connections=200",
                 pg.port, pg.dir);
        const char *args[] = {"-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start", NULL};
        if (pg_run("pg_ctl", args) == 0) {
            pg.running = true;
            return 0;
        }
    }
    fprintf(stderr, "pg: the cluster did not start\n");
    pg_print_file("cmd.log");
    pg_print_file("pg.log");
    return -EIO;
}

int pg_stop(void)
{
    if (!pg.running)
        return 0;
    char data[128];
    snprintf(data, sizeof(data), "%s/data", pg.dir);
    const char *args[] = {"-D", data, "-m", "fast", "-w", "-t", "60", "stop", NULL};
    if (pg_run("pg_ctl", args) != 0)
        return -EIO;
    pg.running = false;
    return 0;
}

static PGconn *pg_conn(const char *uri)
{
    PGconn *c = PQconnectdb(uri);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg: %s: %s", uri, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

int pg_sql(const char *uri, const char *sql)
{
    PGconn *c = pg_conn(uri);
    if (c == NULL)
        return -EIO;
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -EIO;
    if (rc != 0)
        fprintf(stderr, "pg: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return rc;
}

long long pg_sql_int(const char *uri, const char *sql)
{
    PGconn *c = pg_conn(uri);
    if (c == NULL)
        return -1;
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

int pg_db_new(char *uri, size_t size)
{
    int rc = pg_start();
    if (rc != 0)
        return rc;
    char admin[128], sql[96];
    snprintf(admin, sizeof(admin), "postgresql://spindle@127.0.0.1:%d/postgres", pg.port);
    snprintf(sql, sizeof(sql), "CREATE DATABASE t%u", ++pg.dbs);
    if ((rc = pg_sql(admin, sql)) != 0)
        return rc;
    snprintf(uri, size, "postgresql://spindle@127.0.0.1:%d/t%u", pg.port, pg.dbs);
    return 0;
}
