/* stream.h - a full-duplex streaming client for the integration suites: sends a generated body of
 * any size while it reads the chunked answer, decodes it (zstd, gzip or raw) and hashes both
 * sides, so gigabytes pass with no memory proportional to them. Options make it a slow sender, a
 * slow reader, a client that stops reading, or one that disconnects mid-upload or mid-download.
 * Every wait is a bounded poll(). One struct sx per thread.
 */
#ifndef SPINDLE_TEST_STREAM_H
#define SPINDLE_TEST_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sx_gen { SX_ZERO, SX_RANDOM };
enum sx_decode { SX_RAW, SX_ZSTD, SX_GZIP };

struct sx {
    /* set by the caller */
    int port;
    const char *target;  /* "/v1/jobs/compress?codec=zstd" */
    const char *headers; /* extra header lines ("Name: v\r\n"...), may be NULL */
    uint64_t total;      /* body bytes */
    enum sx_gen gen;
    uint64_t seed;
    bool chunked;             /* Transfer-Encoding: chunked instead of Content-Length */
    enum sx_decode decode;    /* how the answer's body is decoded before it is hashed */
    size_t send_piece;        /* bytes per send (0 = 64 KiB) */
    int send_gap_ms;          /* wait between sends (a slow sender) */
    size_t read_piece;        /* bytes per read (0 = 64 KiB) */
    int read_gap_ms;          /* wait between reads (a slow reader) */
    uint64_t abort_after_in;  /* close (RST) after sending this many body bytes (0 = never) */
    uint64_t abort_after_out; /* close (RST) after receiving this many answer bytes (0 = never) */
    uint64_t stop_read_after; /* stop reading after this many answer bytes (0 = never) */
    int timeout_ms;           /* the whole exchange */

    /* results */
    int status;               /* the final answer's status, 0 when none */
    bool got_continue;        /* a 100 Continue came */
    bool complete;            /* the answer's framing ended properly (last chunk / length) */
    bool closed;              /* the server closed the connection */
    bool timed_out;           /* timeout_ms passed */
    uint64_t sent;            /* body bytes sent */
    uint64_t received;        /* answer body bytes (de-chunked, before decoding) */
    uint64_t decoded;         /* bytes after decoding */
    bool decode_error;        /* the decoder refused the answer */
    char trailer[128];        /* a Spindle-Error trailer's value, "" when none */
    char te[64];              /* the answer's Transfer-Encoding */
    char timing[128];         /* the answer's Server-Timing header, "" when none */
    char timing_trailer[128]; /* a Server-Timing trailer's value, "" when none */
    unsigned char in_md[32], out_md[32]; /* SHA-256 of the body sent and of the decoded answer */
    char body[512];                      /* the first bytes of the answer body (NUL-terminated) */
};

/* Run the exchange. Returns 0 when it ran (look at the results), a negative errno when it could
 * not connect. */
int sx_run(struct sx *x);

/* VmHWM (peak resident set, KiB) of process `pid`, -1 when unknown. */
long sx_vmhwm_kib(int pid);

#endif
