/* internal.h - private structures shared by the HTTP layer's files (server/ only).
 *
 * Ownership: struct srv_http owns its listeners, connections and routes. A connection owns its
 * read buffer, its output and, while it is attached, its current request. A request detaches from
 * its connection when its answer is fully written or the connection goes away; it is freed when it
 * is detached and its handler (if one was called) has answered or released it. Everything is
 * touched by the loop thread only.
 */
#ifndef SPINDLE_HTTP_INTERNAL_H
#define SPINDLE_HTTP_INTERNAL_H

#include <ev.h>
#include <http_parser.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "server/auth/auth.h"
#include "server/config.h"
#include "server/http/head.h"
#include "server/http/http.h"
#include "server/http/query.h"
#include "server/http/request.h"
#include "server/http/route.h"

#define SRV_PEER_MAX           56             /* "[" INET6 "]:" port NUL */
#define SRV_RBUF_MIN           4096           /* first read buffer */
#define SRV_STREAM_READS       8              /* reads of a streamed body per readiness, at most */
#define SRV_STREAM_RBUF        (128u * 1024u) /* read buffer of a streamed body, at least */
#define SRV_LINGER_MS          2000           /* reading and discarding after a closing answer */
#define SRV_ACCEPT_RETRY_S     0.1            /* accept paused after EMFILE/ENFILE */
#define SRV_ACCEPT_BATCH       64    /* accepts per readiness (fairness with connections) */
#define SRV_REJECT_MAX         64    /* 503 too_many_connections answers being written at once */
#define SRV_ACCEPT_PENDING_MAX 65536 /* accepts at most when a drain empties a backlog */

/* Assert that the caller runs on the loop thread (the one that made `h`). */
#define SRV_ASSERT_LOOP(h) assert(pthread_equal(pthread_self(), (h)->thread))

struct srv_listener {
    struct srv_listener *next;
    struct srv_http *h;
    ev_io io;
    int fd;
    bool admin; /* [server] admin_listen: operator routes only */
    char addr[SRV_PEER_MAX];
};

struct srv_route {
    char *method;
    char *path;
    srv_handler_fn *fn;
    void *arg;
    enum srv_auth_class access;         /* what a request needs; where the route is served */
    srv_route_stream_fn *stream_fn;     /* NULL: bodies are read whole */
    srv_route_continue_fn *continue_fn; /* NULL: 100 Continue at once */
};

struct srv_http {
    struct ev_loop *loop;
    pthread_t thread;
    struct srv_cfg cfg;
    struct ctx *root;
    http_parser_settings settings;
    size_t rbuf_max;

    struct srv_listener *listeners;
    ev_timer accept_timer; /* retry after EMFILE */
    ev_async fdgate_wake;  /* closes deferred by server/fdgate.h may run now; unref'd */
    bool accept_paused;    /* an EMFILE episode is going on */
    bool maxconn_logged;   /* a max_connections episode is going on */
    unsigned conn_cap;     /* max_connections at most (the open file limit); 0 = none */

    struct srv_route *routes;
    size_t nroutes, route_cap;
    struct srv_auth *auth; /* borrowed (srv_http_auth_set); NULL: mode none */
    bool has_admin;        /* an admin listener exists: operator routes are served only there */

    struct srv_conn *conns; /* doubly linked */
    unsigned nconns;
    unsigned nrejecting;

    bool draining;   /* srv_http_drain ran: no accepting, answers close their connection */
    bool announcing; /* srv_http_announce ran: /readyz says 503, all else as usual */
    bool drain_over; /* srv_http_cancel_all ran: nothing new is served */
    srv_http_drained_fn *drained_fn;
    void *drained_arg;
    uint64_t requests_at_drain; /* n_requests when the drain began */

    uint64_t n_connections, n_requests, n_rejected, n_held;
    uint64_t n_shutdown_cancelled; /* handlers cancelled by cancel_all/close_all */
    unsigned pending;              /* handlers that owe an answer */

    time_t date_sec;
    char date[40];
    srv_http_answered_fn *answered; /* srv_http_on_answered */
    void *answered_arg;
};

enum srv_phase {
    SRV_PH_IDLE = 0, /* between requests, nothing buffered */
    SRV_PH_HEAD,     /* reading a request head */
    SRV_PH_BODY,     /* reading a request body */
    SRV_PH_HANDLER,  /* the request is with its handler */
    SRV_PH_WRITE,    /* the answer is being written */
    SRV_PH_LINGER,   /* closing answer written; discarding input until EOF or timeout */
    SRV_PH_HOLD,     /* a request retried at once after refusals waits retry_hold_ms */
    SRV_PH_STREAM,   /* the body streams to the job and/or its answer streams out (stream.c) */
};

/* A request this soon after a refusal is an instant retry: before the Retry-After (>= 1 s) it was
 * given could have passed. Not shorter: a storming client on a loaded machine takes milliseconds
 * to react, and a window it can miss lets the storm through unheld. */
#define SRV_QUICK_RETRY_NS 1000000000u
/* A success this close to its deadline may reach the client after it: answered 504 instead. */
#define SRV_ANSWER_TRAVEL_NS 1000000u
#define SRV_QUICK_RETRIES    3 /* instant retries in a row before the connection is held */

struct srv_conn {
    struct srv_conn *next, *prev;
    struct srv_http *h;
    ev_io rio, wio;
    ev_timer timer; /* the phase's timeout */
    int fd;
    uint8_t phase;
    bool dead;       /* free at the end of the outermost callback */
    bool in_process; /* conn_process() is on the stack */
    bool peer_eof;   /* the client shut its side down */
    bool fresh;      /* no request received yet */
    bool answering;  /* an answer (not just 100 Continue) is in the output */
    bool close_after;
    bool out_static;
    bool rejecting;
    bool admin; /* accepted on the admin listener */
    unsigned depth;
    unsigned served;
    enum ctx_reason gone_reason; /* why the connection dropped (for its request) */

    /* read buffer: unconsumed bytes are data[off, off + len) */
    char *rbuf;
    size_t roff, rlen, rcap;

    struct srv_head_scan scan;
    http_parser parser;
    const char *parse_base; /* head being parsed by http-parser */
    uint64_t t_head_ns;     /* first byte of the current request */
    uint64_t rx_ns;         /* when the bytes of the last read reached the machine (kernel) */
    uint64_t refused_ns;    /* when the last answer, a 429/503 refusal, was written; 0 = none */
    uint64_t held_ns;       /* HOLD: when the held request arrived */
    unsigned quick_retries; /* refusals in a row followed at once by another request */
    bool hold_over;         /* the buffered request has been held: read it now */

    struct srv_req *req;

    /* output: out[out_off, out_len) then body[body_off, body_len) */
    char *out;
    size_t out_len, out_off;
    char *body;
    size_t body_len, body_off;

    char peer[SRV_PEER_MAX];
};

struct srv_hdr {
    const char *name, *value;
    size_t name_len, value_len;
    /* offsets into the parsed head while http-parser runs */
    size_t name_off, value_off;
};

struct srv_req {
    struct srv_http *h;
    struct srv_conn *conn; /* NULL once detached */
    struct ctx *ctx;
    srv_handler_fn *fn;
    void *route_arg;
    const char *route_path; /* the matched route's path (owned by the route table), the request's
                               own for a pattern route, or NULL */
    bool timeout_given;     /* the request sent X-Timeout-Ms */
    void *data;
    srv_req_cancel_fn *cancel_fn;
    void *cancel_arg;
    ev_timer deadline;

    const char *method; /* static (http_method_str) or "-" */
    char *url, *path;   /* in arena */
    size_t url_off, url_len;
    size_t qoff, qlen; /* query string within url */
    struct srv_hdr *hdrs;
    unsigned nhdrs, hdr_cap;
    char *arena;
    struct srv_query query;

    char *body;
    size_t body_len, body_cap;
    size_t trailer_bytes;
    unsigned trailers;

    struct srv_stream *stream; /* owned; set by srv_req_stream_start */
    const char *stream_error;  /* static: why a started stream was cut (the access line) */
    uint64_t stream_bytes;     /* body bytes of a streaming request so far */
    bool streaming;            /* the body streams (decided at head time) */
    void *held;                /* srv_req_hold: kept until taken or the request is freed */
    srv_req_hold_fn *held_release;
    bool query_parsed;

    char *extra; /* extra answer header lines, "Name: value\r\n"... */
    size_t extra_len;

    uint64_t t0_ns, t_end_ns, queue_ns, run_ns;
    uint64_t bytes_in, bytes_out;
    int status; /* what the access log shows */

    /* an error found in the head that is answered at once and closes (Host rules), or NULL */
    const char *fatal_msg;
    /* a keep-alive error found in the head, answered after the body */
    int err_status;
    const char *err_code;
    const char *err_msg;
    /* the error is an authentication refusal (401, 403, 429): answered before the body is read,
     * closing the connection when a body follows (an unproven client never makes the server
     * buffer a body) */
    bool err_auth;
    bool admin; /* came through the admin listener */

    bool handler_pending; /* the handler owes an answer or a release */
    bool answered;        /* an answer was queued (by the handler or the server) */
    bool written;         /* the answer was fully written */
    bool is_head;         /* HEAD: no body in the answer */
    bool keep_alive;      /* what the client asked for */
    bool http10;
    bool upgrade; /* CONNECT or Upgrade: the stream after it is not HTTP */
    bool expect_continue;
    bool body_too_large; /* set by on_body */
    bool trailers_too_large;
    bool msg_complete; /* set by on_message_complete */
    bool hdr_in_name;  /* parser callbacks: the last piece was a header name */
    bool oom;          /* parser callbacks: out of memory */
    bool force_close;  /* the answer closes the connection */

    char peer[SRV_PEER_MAX];
};

/* ---- http.c ---- */
const char *srv_http_date(struct srv_http *h); /* cached per second */
void srv_http_conn_closed(struct srv_http *h); /* a connection was freed: drained? */
/* The reason phrase of `status` ("OK", "Not Found", ...; "Unknown" when not known). */
const char *srv_http_reason(int status);

/* ---- listener.c ---- */
struct sockaddr;
/* "1.2.3.4:80", "[::1]:80", "unix" or "-" into buf. */
void srv_addr_format(const struct sockaddr *sa, char *buf, size_t size);
/* Accept what waits in the backlogs (before closing them for a drain). */
void srv_listeners_accept_pending(struct srv_http *h);
void srv_listeners_close(struct srv_http *h);
void srv_listeners_resume(struct srv_http *h);

/* ---- conn.c ---- */
void srv_conn_settings_init(http_parser_settings *s);
int srv_conn_new(struct srv_http *h, int fd, const char *peer, bool admin);
void srv_conn_enter(struct srv_conn *c);
void srv_conn_exit(struct srv_conn *c);
void srv_conn_kill(struct srv_conn *c, enum ctx_reason reason);
/* Queue an answer head (`head` malloc'd, taken) and optional body (taken when body_owned). Starts
 * writing; on completion the request is detached. */
void srv_conn_send(struct srv_conn *c, char *head, size_t head_len, char *body, size_t body_len);
/* Out of memory: a static 503 out_of_memory answer, then close. */
void srv_conn_send_oom(struct srv_conn *c);
/* End of the drain period: cancel a handler still running (503 shutting_down; returns true
 * then), refuse a request being read or waiting unread in the socket (503 shutting_down, close),
 * close an idle connection that sent nothing. */
bool srv_conn_cancel(struct srv_conn *c, enum ctx_reason reason);

/* ---- request.c ---- */
struct srv_req *srv_req_new(struct srv_conn *c);
void srv_req_free(struct srv_req *req);
/* The first header `name` (case-insensitive) and, when count is not NULL, how many there are. */
const struct srv_hdr *srv_req_hdr_find(const struct srv_req *req, const char *name,
                                       unsigned *count);
/* The access line's "client": the peer's address, or the one its trusted proxy names, into out
 * (size >= SRV_PROXY_CLIENT_MAX). */
void srv_req_client(const struct srv_req *req, char *out, size_t size);
/* Record a 400 `code` found in the head, answered after the body (the first one wins). */
void srv_req_error_later(struct srv_req *req, const char *code, const char *msg);
/* Build the context and the strings from a parsed head; 0 or -ENOMEM. A head that breaks the
 * Host rules (RFC 9112 section 3.2) sets req->fatal_msg: answer 400 and close. The tenant is
 * decided here, once (server/auth/auth.h); a refusal sets err_status with err_auth. */
int srv_req_from_head(struct srv_req *req, const http_parser *p, const char *head);
/* Route, check and call the handler (phase HANDLER). */
void srv_req_dispatch(struct srv_req *req);
/* Answer the head's error (err_status) at once, before the body: `close` when a body follows. */
void srv_req_refuse_early(struct srv_req *req, bool close);
/* A server answer (error or 504/503): JSON error, closing the connection when `close`. */
void srv_req_send_error(struct srv_req *req, int status, const char *code, const char *msg,
                        bool close);
/* The connection finished writing the answer, or went away. */
void srv_req_conn_done(struct srv_req *req, bool written, enum ctx_reason gone);
/* Cancel a request whose handler is pending (deadline, shutdown): cancels its context, answers
 * status/code when the connection is there, calls the cancel hook. */
void srv_req_cancel(struct srv_req *req, enum ctx_reason reason, int status, const char *code,
                    const char *msg);

/* ---- tenant.c ---- */
/* Decide the request's tenant (server/auth/auth.h) into its context, once its head, route and
 * identity are known; a refusal sets err_status with err_auth (see srv_req_refuse_early). */
void srv_req_tenant_set(struct srv_req *req);
/* ---- stream.c ---- */
/* The head of a request with a body arrived: true when its route streams it (req->streaming is
 * then set; the query was parsed). Answers 413 and returns false when Content-Length exceeds
 * max_stream_bytes (req->answered is then set). */
bool srv_stream_wanted(struct srv_req *req, uint64_t content_length);
/* A whole-body request that sent Expect: 100-continue: its route's continue_fn decides. True:
 * send 100 Continue and read the body; false: the request was answered (the connection closes
 * after the answer). */
bool srv_req_continue(struct srv_req *req);
/* The handler returned from its call: a started stream sends 100 Continue when it was asked for. */
void srv_stream_begin(struct srv_conn *c);
/* Phase STREAM: move buffered body bytes into the body channel; true when more can be done. */
bool srv_stream_body(struct srv_conn *c);
/* Phase STREAM: whether to read the socket now (arms the channel's notify when it is full). */
bool srv_stream_wants_read(struct srv_conn *c);
/* The read buffer's bound while a streamed body is read: fewer, larger reads. */
size_t srv_stream_rbuf_max(const struct srv_http *h);
/* The loop has fed what the socket had for now: wake the job if it waits for body bytes. */
void srv_stream_push(struct srv_conn *c);
/* http-parser callbacks of a streaming body. */
int srv_stream_on_body(struct srv_conn *c, const char *at, size_t len);
int srv_stream_on_chunk_header(struct srv_conn *c, uint64_t size);
void srv_stream_on_complete(struct srv_conn *c);
/* Phase STREAM: the output is flushed: take the next piece from the answer channel. */
void srv_stream_pump(struct srv_conn *c);
/* Phase STREAM timer: write stall or body stall. */
void srv_stream_timeout(struct srv_conn *c);
/* Cut a stream whose answer has started: `status`/`code` are the access line's outcome. */
void srv_stream_abort(struct srv_req *req, int status, const char *code);
/* True once the answer head of req's stream went out. */
bool srv_stream_head_sent(const struct srv_req *req);
void srv_stream_free(struct srv_stream *st);

/* ---- request.c (for stream.c) ---- */
/* The answer head "HTTP/1.1 status ..." with the server's headers into *out (malloc'd); chunked:
 * Transfer-Encoding: chunked (and a Trailer: Spindle-Error when `trailer`), else no length (the
 * connection closes). 0 or -ENOMEM. */
int srv_req_stream_head(struct srv_req *req, int status, const char *ctype, bool chunked,
                        bool trailer, char **out, size_t *len);
/* The query of req parsed once: 0, -E2BIG, -EINVAL, -ENOMEM. */
int srv_req_query_parse(struct srv_req *req);
/* Free once the connection and the handler have both let go. */
void srv_req_maybe_free(struct srv_req *req);

/* ---- conn.c (for stream.c) ---- */
void srv_conn_flush(struct srv_conn *c);
void srv_conn_process(struct srv_conn *c);
void srv_conn_timer_arm(struct srv_conn *c, unsigned ms);
int srv_conn_out_append(struct srv_conn *c, const char *data, size_t len);
void srv_conn_fail(struct srv_conn *c, int status, const char *why);

/* ---- route.c ---- */
/* Find the route for method+path. Returns the route, or NULL and sets *status to 404 or 405 with
 * the Allow value in allow (size bytes). */
const struct srv_route *srv_route_find(const struct srv_http *h, const char *method,
                                       const char *path, int *status, char *allow, size_t size);
/* srv_route_find for a connection of the admin listener (`admin`) or another: a listener serves
 * only the routes it carries (route.h: srv_http_route_access_set). */
const struct srv_route *srv_route_find_on(const struct srv_http *h, bool admin, const char *method,
                                          const char *path, int *status, char *allow, size_t size);
void srv_routes_free(struct srv_http *h);

#endif
