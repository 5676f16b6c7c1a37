/* listener.c - listening sockets: bind (IPv4/IPv6, ephemeral ports), accept, EMFILE back-off.
 *
 * Design: one ev_io per listening socket; each readiness accepts up to SRV_ACCEPT_BATCH
 * connections with accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) so a flood of connects cannot starve the
 * connections already open. When the process runs out of descriptors (EMFILE/ENFILE) or kernel
 * memory, accepting pauses: every listener's watcher stops and a SRV_ACCEPT_RETRY_S timer
 * restarts them (the pending connections wait in the backlog instead of spinning the loop). Such
 * an episode is logged once at warn when it starts and once at info when an accept succeeds again.
 * A listener is either bound here from an address or adopted already listening (socket
 * activation: srv_http_listen_fd); both are served and closed the same way. Before the listeners
 * close for a drain, the connections already waiting in their backlogs are accepted and served
 * (srv_listeners_accept_pending): the kernel completed their handshake, so their clients may
 * have sent a request, and closing the listener would reset them. Loop thread only.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "logging/log.h"
#include "server/fdgate.h"
#include "server/http/internal.h"

void srv_addr_format(const struct sockaddr *sa, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(buf, size, "%s", sa->sa_family == AF_UNIX ? "unix" : "-");
    }
}

/* Split "HOST:PORT" / "[V6]:PORT" into host and port (copied into the buffers). */
static int listen_split(const char *addr, char *host, size_t hsize, char *port, size_t psize)
{
    const char *colon;
    const char *h = addr;
    size_t hlen;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return -EINVAL;
        h = addr + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return -EINVAL;
        hlen = (size_t)(colon - addr);
    }
    size_t plen = strlen(colon + 1);
    if (hlen >= hsize || plen == 0 || plen >= psize)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, plen + 1);
    return 0;
}

static void listener_pause(struct srv_http *h, int err)
{
    for (struct srv_listener *l = h->listeners; l != NULL; l = l->next)
        ev_io_stop(h->loop, &l->io);
    ev_timer_stop(h->loop, &h->accept_timer);
    ev_timer_set(&h->accept_timer, SRV_ACCEPT_RETRY_S, 0.0);
    ev_timer_start(h->loop, &h->accept_timer);
    if (!h->accept_paused) {
        h->accept_paused = true;
        LOG_W("accept paused", LOG_STR("error", strerror(err)), LOG_UINT("connections", h->nconns),
              LOG_DBL("retry_s", SRV_ACCEPT_RETRY_S));
    }
}

void srv_listeners_resume(struct srv_http *h)
{
    if (h->draining)
        return;
    for (struct srv_listener *l = h->listeners; l != NULL; l = l->next)
        ev_io_start(h->loop, &l->io);
}

static void listener_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    srv_listeners_resume(w->data);
}

/* One accepted socket: hand it to a connection. */
static void listener_accepted(struct srv_http *h, int fd, const struct sockaddr *sa, bool admin)
{
    char peer[SRV_PEER_MAX];
    srv_addr_format(sa, peer, sizeof(peer));
    if (h->accept_paused) {
        h->accept_paused = false;
        LOG_I("accept resumed", LOG_UINT("connections", h->nconns));
    }
    int rc = srv_conn_new(h, fd, peer, admin);
    if (rc != 0) {
        LOG_W("connection dropped", LOG_STR("peer", peer), LOG_STR("error", strerror(-rc)));
        close(fd);
    }
}

static void listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct srv_listener *l = w->data;
    struct srv_http *h = l->h;
    ctx_leave(ctx_enter(NULL)); /* accepting serves no request: no stale context */
    for (int i = 0; i < SRV_ACCEPT_BATCH && !h->draining; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            listener_accepted(h, fd, (struct sockaddr *)&ss, l->admin);
            continue;
        }
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return;
        if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == EPERM)
            continue;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
            listener_pause(h, err);
            return;
        }
        LOG_W("accept failed", LOG_STR("addr", l->addr), LOG_STR("error", strerror(err)));
        return;
    }
}

static int listener_socket(struct srv_http *h, const struct addrinfo *ai, int *out)
{
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto fail;
    if (ai->ai_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
        goto fail;
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        goto fail;
    if (listen(fd, h->cfg.backlog > 0 ? (int)h->cfg.backlog : SOMAXCONN) != 0)
        goto fail;
    *out = fd;
    return 0;
fail:;
    int err = errno;
    close(fd);
    return -err;
}

static int listener_add(struct srv_http *h, int fd, bool admin)
{
    struct srv_listener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        int err = errno;
        free(l);
        return -err;
    }
    srv_addr_format((struct sockaddr *)&ss, l->addr, sizeof(l->addr));
    l->h = h;
    l->fd = fd;
    l->admin = admin;
    if (admin)
        h->has_admin = true;
    ev_io_init(&l->io, listener_accept_cb, fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&h->accept_timer, listener_retry_cb, SRV_ACCEPT_RETRY_S, 0.0);
    h->accept_timer.data = h;
    l->next = h->listeners;
    h->listeners = l;
    if (!h->accept_paused)
        ev_io_start(h->loop, &l->io);
    if (admin)
        LOG_I("listening", LOG_STR("addr", l->addr), LOG_STR("routes", "operator"));
    else
        LOG_I("listening", LOG_STR("addr", l->addr));
    return 0;
}

/* Append the addresses of `l` and the listeners after it, oldest (the list's tail) first. */
static void listen_addrs_put(const struct srv_listener *l, char *buf, size_t size, size_t *len)
{
    if (l == NULL)
        return;
    listen_addrs_put(l->next, buf, size, len);
    size_t need = strlen(l->addr) + (*len > 0 ? 1 : 0);
    if (*len + need >= size)
        return;
    *len += (size_t)snprintf(buf + *len, size - *len, "%s%s", *len > 0 ? "," : "", l->addr);
}

unsigned srv_http_listen_addrs(const struct srv_http *h, char *buf, size_t size)
{
    SRV_ASSERT_LOOP(h);
    size_t len = 0;
    unsigned n = 0;
    if (size > 0)
        buf[0] = '\0';
    for (const struct srv_listener *l = h->listeners; l != NULL; l = l->next)
        n++;
    if (size > 0)
        listen_addrs_put(h->listeners, buf, size, &len);
    return n;
}

static int listen_addr(struct srv_http *h, const char *addr, bool admin);

int srv_http_listen(struct srv_http *h, const char *addr)
{
    return listen_addr(h, addr, false);
}

int srv_http_listen_admin(struct srv_http *h, const char *addr)
{
    return listen_addr(h, addr, true);
}

static int listen_addr(struct srv_http *h, const char *addr, bool admin)
{
    SRV_ASSERT_LOOP(h);
    char host[SRV_CFG_ADDR_MAX], port[16];
    if (h->draining)
        return -ESHUTDOWN;
    if (listen_split(addr, host, sizeof(host), port, sizeof(port)) != 0) {
        LOG_E("bad listen address", LOG_STR("addr", addr));
        return -EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int grc = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, port, &hints, &res);
    if (grc != 0) {
        LOG_E("cannot resolve listen address", LOG_STR("addr", addr),
              LOG_STR("error", gai_strerror(grc)));
        return -EINVAL;
    }
    int rc = -EADDRNOTAVAIL, fd = -1;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = listener_socket(h, ai, &fd);
        if (rc == 0)
            break;
    }
    freeaddrinfo(res);
    if (rc == 0) {
        rc = listener_add(h, fd, admin);
        if (rc != 0)
            close(fd);
    }
    if (rc != 0)
        LOG_E("cannot listen", LOG_STR("addr", addr), LOG_STR("error", strerror(-rc)));
    return rc;
}

void srv_listeners_accept_pending(struct srv_http *h)
{
    for (struct srv_listener *l = h->listeners; l != NULL; l = l->next) {
        /* bounded: what the backlog can hold, plus what arrives meanwhile */
        for (int i = 0; i < SRV_ACCEPT_PENDING_MAX; i++) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                listener_accepted(h, fd, (struct sockaddr *)&ss, l->admin);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == EPERM)
                continue;
            break; /* EAGAIN: the backlog is empty; anything else: give up on this one */
        }
    }
}

void srv_listeners_close(struct srv_http *h)
{
    ev_timer_stop(h->loop, &h->accept_timer);
    while (h->listeners != NULL) {
        struct srv_listener *l = h->listeners;
        h->listeners = l->next;
        ev_io_stop(h->loop, &l->io);
        srv_fdgate_close(l->fd);
        free(l);
    }
}

int srv_http_listen_fd(struct srv_http *h, int fd)
{
    SRV_ASSERT_LOOP(h);
    if (h->draining)
        return -ESHUTDOWN;
    int type = 0, accepting = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return -errno;
    len = sizeof(accepting);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0)
        return -errno;
    if (type != SOCK_STREAM || !accepting)
        return -EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -errno;
    return listener_add(h, fd, false);
}
