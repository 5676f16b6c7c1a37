/* request.h - the request a handler gets: what was asked, and how it is answered.
 *
 * A request (struct srv_req) is handed to the handler of its route (route.h) once its body has
 * been read. The handler answers with srv_req_answer*() or gives the request up with
 * srv_req_release(), exactly once, either before it returns or later on the loop thread (an
 * asynchronous handler, e.g. from a pool completion). Between the two the request object stays
 * valid even if the client goes away or the deadline answers 504 first: then the later answer is
 * discarded.
 *
 * Threads: loop-thread only, like the server (http.h); each function asserts it. Workers never
 * touch a struct srv_req: they get what they need (body, parameters) copied or borrowed through
 * their own job state.
 */
#ifndef SPINDLE_HTTP_REQUEST_H
#define SPINDLE_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/ctx.h"
#include "server/http/query.h"

struct srv_http;
struct srv_req;

/* All borrowed strings below live as long as the request (until its answer/release). */

const char *srv_req_method(const struct srv_req *req); /* "GET", "POST", ... */
const char *srv_req_path(const struct srv_req *req);   /* raw path without the query, "/v1/x" */
const char *srv_req_peer(const struct srv_req *req);   /* "127.0.0.1:5555", "[::1]:80", or "-" */
void *srv_req_route_arg(const struct srv_req *req);    /* the route's `arg` */
struct srv_http *srv_req_http(const struct srv_req *req);

/* The request context (borrowed; the request holds a reference until it is freed; take your own
 * with ctx_ref() to keep it longer, e.g. in a pool job). */
struct ctx *srv_req_ctx(const struct srv_req *req);

/* The request body (borrowed, may be NULL when empty) and its length. Chunked bodies are
 * de-chunked. At most limits.max_body_bytes. */
const void *srv_req_body(const struct srv_req *req, size_t *len);

/* The first value of header `name` (case-insensitive), NUL-terminated, trailing whitespace cut;
 * NULL when absent. */
const char *srv_req_header(const struct srv_req *req, const char *name);

/* Percent-decoded query parameters (query.h) in order. Keys and values are NUL-terminated copies
 * but may contain NUL bytes (%00): use the lengths. */
size_t srv_req_query_count(const struct srv_req *req);
/* The i-th parameter, NULL when i >= count. */
const struct srv_query_param *srv_req_query_at(const struct srv_req *req, size_t i);
/* The first parameter named `key` (NUL-terminated), NULL when absent. */
const struct srv_query_param *srv_req_query_get(const struct srv_req *req, const char *key);

/* Handler-owned slot (NULL at first): state of an asynchronous handler. */
void srv_req_set_data(struct srv_req *req, void *data);
void *srv_req_data(const struct srv_req *req);

/* Called on the loop thread, with the request context current, when the server cancels a request
 * whose handler has not answered yet: the client went away (CTX_REASON_CLIENT_CLOSED; access
 * status 499), the deadline passed (CTX_REASON_DEADLINE; 504 already sent) or the server is
 * shutting down (CTX_REASON_SHUTDOWN; 503 already sent). The context is already cancelled when it
 * runs. The handler still owes exactly one answer/release call (its answer is discarded); it may
 * make it from inside `fn`. One hook per request; a later call replaces it; fn NULL removes it. */
typedef void srv_req_cancel_fn(struct srv_req *req, enum ctx_reason reason, void *arg);
void srv_req_on_cancel(struct srv_req *req, srv_req_cancel_fn *fn, void *arg);

/* True when the server gave up on this request (client gone, deadline, shutdown): an answer now
 * is discarded. */
bool srv_req_cancelled(const struct srv_req *req);

/* Add an answer header (`name` and `value` borrowed, copied), e.g. Server-Timing or Retry-After.
 * Call before the answer. Returns 0, -EINVAL (empty name, non-token name, CR/LF/NUL/control bytes
 * in the value, or a header the server writes itself: Content-Length, Connection, Date, Server,
 * X-Request-Id, Content-Type, Transfer-Encoding), -ENOMEM. */
int srv_req_header_add(struct srv_req *req, const char *name, const char *value);

/* True when the request sent X-Timeout-Ms (else its deadline is [limits] default_timeout_ms). */
bool srv_req_timeout_given(const struct srv_req *req);

/* Move the request's deadline to `ms` after its arrival (capped by [limits] max_timeout_ms) and
 * re-arm its 504 timer: for a job kind's own default deadline. Its handler, before answering;
 * a no-op once the server gave up on the request. */
void srv_req_deadline_set_ms(struct srv_req *req, uint64_t ms);

/* Count the request under route "other" in the requests-by-route metric: for the handler of a
 * pattern route that serves nothing at this path (an unknown job kind). */
void srv_req_route_other(struct srv_req *req);

/* Record the job's queue and run time (nanoseconds) for the access log (queue_ms, run_ms). */
void srv_req_set_timing(struct srv_req *req, uint64_t queue_ns, uint64_t run_ns);

/* ---- answering: exactly one of these per request, from its handler ------------------------- */

/* Answer `status` (200..599, not 1xx) with `content_type` (borrowed; NULL = no Content-Type) and
 * `len` bytes of `body` (borrowed, copied; NULL when len is 0). HEAD requests get the headers only
 * (with the Content-Length of the body). The server adds Date, Server, Content-Length,
 * X-Request-Id, Connection and the headers from srv_req_header_add(). After the call `req` belongs
 * to the server again and must not be touched.
 * Returns 0 (queued for writing), -ECANCELED when the answer was discarded (client gone, deadline
 * or shutdown already answered), -ETIMEDOUT when a 2xx answer comes at or after the request's
 * deadline (before its timer ran: the client gets 504 deadline_exceeded instead; a success is
 * never sent late), -ENOMEM when it could not be built (the client gets 503 out_of_memory and
 * the connection closes), -EINVAL for a bad status (the client gets 500). */
int srv_req_answer(struct srv_req *req, int status, const char *content_type, const void *body,
                   size_t len);

/* The same, taking ownership of `body` (malloc'd; freed by the server in every case, also on
 * error). Saves a copy for large answers. */
int srv_req_answer_take(struct srv_req *req, int status, const char *content_type, void *body,
                        size_t len);

/* Answer a JSON error {"error":{"code":CODE,"message":MESSAGE,"request_id":ID}} with
 * Content-Type application/json. `code` and `message` are borrowed and JSON-escaped. Same
 * contract and returns as srv_req_answer(). */
int srv_req_answer_error(struct srv_req *req, int status, const char *code, const char *message);

/* Give the request up without an answer. When the server has not answered it yet (no cancel),
 * the client gets 500 `internal_error`. After the call `req` must not be touched. */
void srv_req_release(struct srv_req *req);

/* Something a route's continue_fn (route.h) decided before the body was read, e.g. an admission
 * decision, kept with the request: `obj` is taken over; `release(obj)` runs on the loop thread
 * when the request is freed without srv_req_hold_take having taken it back (the client went
 * away while sending the body, the body was refused, the handler answered without it). One
 * object per request: a second call releases the first. */
typedef void srv_req_hold_fn(void *obj);
void srv_req_hold(struct srv_req *req, void *obj, srv_req_hold_fn *release);

/* The object kept with srv_req_hold, now the caller's; NULL when none. */
void *srv_req_hold_take(struct srv_req *req);

/* ---- streaming: bodies and answers of any size through bounded channels ------------------------
 *
 * On a route that streams (srv_http_route_stream, route.h) a request whose body is to stream comes
 * to its handler as soon as its head has arrived (srv_req_streaming() is true, srv_req_body() is
 * empty). The handler decides (parameters, admission) and then either answers as usual (an error:
 * the body is never read, the connection closes after the answer; a client that sent
 * `Expect: 100-continue` never sends it) or calls srv_req_stream_start(), which sends
 * 100 Continue when it was asked for, starts reading the body into the `in` channel (at most
 * limits.max_stream_bytes; the socket is read only while the channel has room) and sends what the
 * job writes to `out` with chunked transfer-encoding (HTTP/1.0: until the connection closes), the
 * head going out with the first bytes. The job runs on a worker with srv_chan_read(in) and
 * srv_chan_write(out) (server/stream/stream.h); the request's cancellation (client gone, deadline,
 * shutdown, write_timeout_ms) cancels both channels. The handler ends the request with
 * srv_req_stream_end() instead of an answer. */

struct srv_chan;

/* True when the body of req streams (decided before its handler was called). */
bool srv_req_streaming(const struct srv_req *req);

/* Start streaming: `content_type` (static) for the answer; *in and *out receive the channels
 * (borrowed: valid until srv_req_stream_end returned; give them to one job). Returns 0, -ENOMEM,
 * -ECANCELED (the request was cancelled: answer nothing more but srv_req_stream_end), -EINVAL
 * (not a streaming request or started twice). */
int srv_req_stream_start(struct srv_req *req, const char *content_type, struct srv_chan **in,
                         struct srv_chan **out);

/* The job ended: exactly once after a successful srv_req_stream_start, instead of an answer.
 * result 0: what is left in `out` goes out, then the last chunk. Otherwise `status`, `code` and
 * `msg` (borrowed) describe the failure: a JSON error answer when nothing was sent yet; else the
 * body is cut (see README "Streaming": no last chunk, or a Spindle-Error trailer for a client
 * that sent `TE: trailers`) and the connection closes. After the call `req` must not be touched.
 * Returns 0, or -ECANCELED when the server had already given up on the request. */
int srv_req_stream_end(struct srv_req *req, int result, int status, const char *code,
                       const char *msg);

/* The answer is made after the job's run (a kind that streams its body in but answers whole):
 * hold the head until srv_req_stream_end, so that it carries what the done callback adds
 * (Server-Timing), unless the answer fills the `out` channel first. Call after
 * srv_req_stream_start. */
void srv_req_stream_answer_after(struct srv_req *req);

/* True when the head of the streamed answer has gone out (or is queued): headers added now are
 * not sent. A head that leaves after srv_req_stream_end carries the headers added before it
 * (Server-Timing); one that left earlier has its Server-Timing sent as a trailer to a client that
 * sent `TE: trailers` (from srv_req_set_timing), else none. */
bool srv_req_stream_head_sent(const struct srv_req *req);

/* Streaming figures of a finished or running request: body bytes read into `in`, answer bytes
 * taken from `out`, nanoseconds the job waited on an empty `in` or a full `out`. */
struct srv_req_stream_stats {
    uint64_t bytes_in, bytes_out, blocked_ns;
};
void srv_req_stream_stats(const struct srv_req *req, struct srv_req_stream_stats *out);

#endif
