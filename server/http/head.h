/* head.h - strict checks of a raw HTTP/1.1 request head, before http-parser sees it.
 *
 * Pure: no server, no allocation, any thread. Used by the connections (conn.c) and by tests and
 * fuzz targets directly.
 */
#ifndef SPINDLE_HTTP_HEAD_H
#define SPINDLE_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>

/* What http-parser 2.9.4 lets through and spindle refuses, checked on the raw bytes of a request
 * head before the parser sees them: bare LF, CR not followed by LF, obs-fold, whitespace before
 * the colon, control bytes (NUL included; HTAB only inside header values) and DEL, request lines
 * not shaped "METHOD SP TARGET SP HTTP/x.y", HTTP versions other than 1.0 and 1.1 (505, also for
 * the HTTP/2 preface), and the size limits (414 for the request line, 431 for header bytes and
 * count). The scan is incremental: call it again with the same buffer grown by new bytes. */
enum srv_head_state {
    SRV_HEAD_MORE = 0, /* no verdict yet: need more bytes */
    SRV_HEAD_DONE,     /* a complete and acceptable head of head_len bytes */
    SRV_HEAD_ERROR,    /* refused: status and why are set */
};

struct srv_head_limits {
    size_t max_request_line; /* bytes of METHOD SP TARGET SP VERSION (414) */
    size_t max_header_bytes; /* bytes of all header lines including their CRLF (431) */
    unsigned max_headers;    /* header lines (431) */
};

struct srv_head_scan {
    /* results */
    size_t head_len;  /* SRV_HEAD_DONE: bytes up to and including the empty line */
    unsigned headers; /* header lines seen */
    int status;       /* SRV_HEAD_ERROR: 400, 414, 431 or 505 */
    const char *why;  /* SRV_HEAD_ERROR: static text for the error message */
    /* private */
    size_t pos, line_start, rl_start, hdr_bytes;
    int state;
};

/* Prepare `s` for a new head. */
void srv_head_scan_init(struct srv_head_scan *s);

/* Continue scanning `buf` (borrowed; the head's bytes from its first byte, `len` of them, growing
 * between calls). Returns the verdict; after SRV_HEAD_DONE or SRV_HEAD_ERROR it keeps returning
 * the same until srv_head_scan_init(). */
enum srv_head_state srv_head_scan(struct srv_head_scan *s, const char *buf, size_t len,
                                  const struct srv_head_limits *lim);

/* True when `v` (borrowed, `n` bytes, blanks around it already removed) is a valid Host field
 * value: uri-host [ ":" port ] (RFC 9112 section 3.2), where uri-host is a reg-name
 * (unreserved, pct-encoded and sub-delims characters; possibly empty) or an IP literal in
 * brackets, and port is at most 5 digits. */
bool srv_head_host_valid(const char *v, size_t n);

#endif
