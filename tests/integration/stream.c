/* stream.c - the full-duplex streaming client of the integration suites (see stream.h).
 *
 * Design: one non-blocking socket and one poll loop. While body bytes remain the loop asks for
 * POLLOUT too; every readable event feeds the answer parser: head (100 Continue skipped), then
 * chunked or Content-Length framing, then the decoder (ZSTD_decompressStream / inflate) and the
 * SHA-256 of the decoded bytes. The body is generated in 64 KiB pieces (zeros, or xorshift64*
 * bytes from `seed`) and hashed as it is sent.
 */
#include "tests/integration/stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define SX_PIECE (64u * 1024u)

struct sx_state {
    struct sx *x;
    int fd;
    EVP_MD_CTX *hin, *hout;
    ZSTD_DStream *zd;
    z_stream zs;
    bool zs_ok;
    unsigned char gen[SX_PIECE];
    size_t gen_off, gen_len;
    uint64_t rng;
    char head[16384];
    size_t head_len;
    bool head_done, chunked_resp;
    uint64_t clen; /* Content-Length, UINT64_MAX: none */
    /* chunked parser */
    int cstate; /* 0 size line, 1 data, 2 CRLF after data, 3 trailers, 4 done */
    char line[256];
    size_t line_len;
    uint64_t chunk_left;
    unsigned char dec[SX_PIECE];
    bool stopped;
};

static uint64_t sx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

long sx_vmhwm_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    return kib;
}

static void sx_fill(struct sx_state *s)
{
    if (s->x->gen == SX_ZERO) {
        memset(s->gen, 0, sizeof(s->gen));
    } else {
        for (size_t i = 0; i < sizeof(s->gen); i += 8) {
            s->rng ^= s->rng >> 12;
            s->rng ^= s->rng << 25;
            s->rng ^= s->rng >> 27;
            uint64_t v = s->rng * 2685821657736338717ull;
            memcpy(s->gen + i, &v, 8);
        }
    }
    s->gen_off = 0;
    s->gen_len = sizeof(s->gen);
}

/* Decoded answer bytes: hash them. */
static void sx_out(struct sx_state *s, const void *p, size_t n)
{
    EVP_DigestUpdate(s->hout, p, n);
    s->x->decoded += n;
}

static void sx_decode(struct sx_state *s, const unsigned char *p, size_t n)
{
    struct sx *x = s->x;
    if (x->received < sizeof(x->body) - 1) {
        size_t k = sizeof(x->body) - 1 - x->received < n ? sizeof(x->body) - 1 - x->received : n;
        memcpy(x->body + x->received, p, k);
    }
    x->received += n;
    if (x->decode == SX_RAW) {
        sx_out(s, p, n);
        return;
    }
    if (x->decode == SX_ZSTD) {
        ZSTD_inBuffer in = {p, n, 0};
        while (in.pos < in.size && !x->decode_error) {
            ZSTD_outBuffer out = {s->dec, sizeof(s->dec), 0};
            if (ZSTD_isError(ZSTD_decompressStream(s->zd, &out, &in)))
                x->decode_error = true;
            sx_out(s, s->dec, out.pos);
        }
        return;
    }
    s->zs.next_in = (unsigned char *)p;
    s->zs.avail_in = (uInt)n;
    while (s->zs.avail_in > 0 && !x->decode_error) {
        s->zs.next_out = s->dec;
        s->zs.avail_out = sizeof(s->dec);
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            x->decode_error = true;
        sx_out(s, s->dec, sizeof(s->dec) - s->zs.avail_out);
        if (rc == Z_STREAM_END || rc == Z_BUF_ERROR)
            break;
    }
}

static void sx_parse_head(struct sx_state *s)
{
    struct sx *x = s->x;
    int status = atoi(s->head + 9);
    if (status == 100) {
        x->got_continue = true;
        return;
    }
    x->status = status;
    s->head_done = true;
    s->clen = UINT64_MAX;
    for (char *l = strstr(s->head, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "Transfer-Encoding:", 18) == 0) {
            sscanf(l + 20, " %63[^\r]", x->te);
            s->chunked_resp = strstr(x->te, "chunked") != NULL;
        } else if (strncasecmp(l + 2, "Server-Timing:", 14) == 0) {
            sscanf(l + 16, " %127[^\r]", x->timing);
        } else if (strncasecmp(l + 2, "Content-Length:", 15) == 0) {
            s->clen = strtoull(l + 17, NULL, 10);
        }
    }
    if (!s->chunked_resp && s->clen == 0)
        x->complete = true;
}

/* Feed answer bytes to the chunked parser (or the length). */
static void sx_body(struct sx_state *s, const unsigned char *p, size_t n)
{
    struct sx *x = s->x;
    if (!s->chunked_resp) {
        sx_decode(s, p, n);
        if (s->clen != UINT64_MAX && x->received >= s->clen)
            x->complete = true;
        return;
    }
    while (n > 0 && s->cstate != 4) {
        if (s->cstate == 1) {
            size_t k = s->chunk_left < n ? (size_t)s->chunk_left : n;
            sx_decode(s, p, k);
            p += k;
            n -= k;
            s->chunk_left -= k;
            if (s->chunk_left == 0)
                s->cstate = 2;
            continue;
        }
        char ch = (char)*p++;
        n--;
        if (ch != '\n') {
            if (s->line_len < sizeof(s->line) - 1)
                s->line[s->line_len++] = ch;
            continue;
        }
        if (s->line_len > 0 && s->line[s->line_len - 1] == '\r')
            s->line_len--;
        s->line[s->line_len] = '\0';
        s->line_len = 0;
        if (s->cstate == 0) {
            s->chunk_left = strtoull(s->line, NULL, 16);
            s->cstate = s->chunk_left > 0 ? 1 : 3;
        } else if (s->cstate == 2) {
            s->cstate = 0;
        } else if (s->line[0] == '\0') {
            s->cstate = 4;
            x->complete = true;
        } else if (strncasecmp(s->line, "Spindle-Error:", 14) == 0) {
            snprintf(x->trailer, sizeof(x->trailer), "%s", s->line + 15);
        } else if (strncasecmp(s->line, "Server-Timing:", 14) == 0) {
            snprintf(x->timing_trailer, sizeof(x->timing_trailer), "%s", s->line + 15);
        }
    }
}

static void sx_recv(struct sx_state *s, size_t want)
{
    struct sx *x = s->x;
    unsigned char buf[SX_PIECE];
    if (want > sizeof(buf))
        want = sizeof(buf);
    ssize_t n = recv(s->fd, buf, want, 0);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            x->closed = true;
        return;
    }
    size_t off = 0;
    while (!s->head_done && off < (size_t)n) {
        if (s->head_len < sizeof(s->head) - 1)
            s->head[s->head_len++] = (char)buf[off];
        off++;
        s->head[s->head_len] = '\0';
        if (s->head_len >= 4 && strcmp(s->head + s->head_len - 4, "\r\n\r\n") == 0) {
            sx_parse_head(s);
            s->head_len = 0;
        }
    }
    if (off < (size_t)n)
        sx_body(s, buf + off, (size_t)n - off);
}

/* Send the next piece of the body (chunk-framed when asked). */
static int sx_send(struct sx_state *s)
{
    struct sx *x = s->x;
    size_t piece = x->send_piece ? x->send_piece : SX_PIECE;
    if (s->gen_off == s->gen_len)
        sx_fill(s);
    size_t n = s->gen_len - s->gen_off;
    if (n > piece)
        n = piece;
    if (n > x->total - x->sent)
        n = (size_t)(x->total - x->sent);
    char frame[32];
    int fl = x->chunked ? snprintf(frame, sizeof(frame), "%zx\r\n", n) : 0;
    struct iovec iov[3] = {{frame, (size_t)fl}, {s->gen + s->gen_off, n}, {(char *)"\r\n", 2}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = x->chunked ? 3 : 1};
    if (!x->chunked)
        m.msg_iov = &iov[1];
    /* frames are small: send the whole piece or nothing (blocking briefly is fine in a test) */
    int fl_flags = MSG_NOSIGNAL;
    ssize_t w = sendmsg(s->fd, &m, fl_flags | MSG_DONTWAIT);
    if (w < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    size_t body = n;
    if ((size_t)w < (size_t)fl + n + (x->chunked ? 2 : 0)) {
        /* partial: finish this piece blocking (bounded by the socket's timeout) */
        size_t total = (size_t)fl + n + (x->chunked ? 2 : 0), done = (size_t)w;
        char tmp[SX_PIECE + 64];
        memcpy(tmp, frame, (size_t)fl);
        memcpy(tmp + fl, s->gen + s->gen_off, n);
        memcpy(tmp + fl + n, "\r\n", 2);
        while (done < total) {
            /* wait for room or for answer bytes: the server may need us to read first */
            struct pollfd p = {s->fd, (short)(POLLOUT | (s->stopped ? 0 : POLLIN)), 0};
            if (poll(&p, 1, x->timeout_ms) <= 0)
                return -ETIMEDOUT;
            if (s->stopped && (p.revents & (POLLERR | POLLHUP)))
                return -ECONNRESET;
            /* keep reading while blocked on the send, or both sides could wait on each other */
            ssize_t k = send(s->fd, tmp + done, total - done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0 && errno != EAGAIN && errno != EINTR)
                return -errno;
            if (k > 0)
                done += (size_t)k;
            if (!s->stopped)
                sx_recv(s, SX_PIECE);
        }
        body = n;
    }
    EVP_DigestUpdate(s->hin, s->gen + s->gen_off, body);
    s->gen_off += body;
    x->sent += body;
    return 0;
}

static int sx_connect(struct sx_state *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->x->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -errno;
    char req[2048];
    int n = snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\n%s", s->x->target,
                     s->x->headers ? s->x->headers : "");
    if (s->x->chunked)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Transfer-Encoding: chunked\r\n\r\n");
    else
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Length: %llu\r\n\r\n",
                      (unsigned long long)s->x->total);
    if (send(s->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -EIO;
    fcntl(s->fd, F_SETFL, O_NONBLOCK);
    return 0;
}

static void sx_abort(struct sx_state *s)
{
    struct linger l = {1, 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(s->fd);
    s->fd = -1;
}

static void sx_loop(struct sx_state *s)
{
    struct sx *x = s->x;
    uint64_t end = sx_now_ms() + (uint64_t)x->timeout_ms;
    bool sent_last = false;
    while (!x->closed && !(x->complete && (sent_last || x->total == 0))) {
        uint64_t now = sx_now_ms();
        if (now >= end) {
            x->timed_out = true;
            return;
        }
        if (x->abort_after_in != 0 && x->sent >= x->abort_after_in) {
            sx_abort(s);
            return;
        }
        if (x->abort_after_out != 0 && x->received >= x->abort_after_out) {
            sx_abort(s);
            return;
        }
        if (x->stop_read_after != 0 && x->received >= x->stop_read_after)
            s->stopped = true;
        bool want_send = x->sent < x->total || (x->chunked && !sent_last);
        if (x->sent == x->total && !sent_last) {
            if (x->chunked && send(s->fd, "0\r\n\r\n", 5, MSG_NOSIGNAL) != 5)
                return;
            sent_last = true;
            want_send = false;
        }
        struct pollfd p = {s->fd, (short)((s->stopped ? 0 : POLLIN) | (want_send ? POLLOUT : 0)),
                           0};
        int gap = want_send && x->send_gap_ms > 0 ? x->send_gap_ms : -1;
        if (!want_send && x->read_gap_ms > 0)
            gap = x->read_gap_ms;
        int wait = (int)(end - now);
        if (gap >= 0 && gap < wait)
            wait = gap;
        int r = poll(&p, 1, wait);
        if (r < 0)
            return;
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && !s->stopped)
            sx_recv(s, x->read_piece ? x->read_piece : SX_PIECE);
        if (s->stopped && (p.revents & (POLLHUP | POLLERR)))
            x->closed = true;
        if ((p.revents & POLLOUT) && x->sent < x->total && sx_send(s) < 0)
            return; /* the server closed */
        if (x->read_gap_ms > 0 && !want_send && !s->stopped) {
            struct pollfd q = {-1, 0, 0};
            poll(&q, 1, x->read_gap_ms); /* pace the reader */
        }
        if (x->send_gap_ms > 0 && want_send) {
            struct pollfd q = {-1, 0, 0};
            poll(&q, 1, x->send_gap_ms); /* pace the sender */
        }
    }
}

int sx_run(struct sx *x)
{
    struct sx_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->x = x;
    s->fd = -1;
    s->rng = x->seed ? x->seed : 88172645463325252ull;
    s->hin = EVP_MD_CTX_new();
    s->hout = EVP_MD_CTX_new();
    s->zd = ZSTD_createDStream();
    s->zs_ok = inflateInit2(&s->zs, 15 + 16) == Z_OK;
    int rc = -ENOMEM;
    if (s->hin == NULL || s->hout == NULL || s->zd == NULL || !s->zs_ok)
        goto out;
    EVP_DigestInit_ex(s->hin, EVP_sha256(), NULL);
    EVP_DigestInit_ex(s->hout, EVP_sha256(), NULL);
    rc = sx_connect(s);
    if (rc == 0)
        sx_loop(s);
    EVP_DigestFinal_ex(s->hin, x->in_md, NULL);
    EVP_DigestFinal_ex(s->hout, x->out_md, NULL);
out:
    if (s->fd >= 0)
        close(s->fd);
    if (s->zs_ok)
        inflateEnd(&s->zs);
    ZSTD_freeDStream(s->zd);
    EVP_MD_CTX_free(s->hin);
    EVP_MD_CTX_free(s->hout);
    free(s);
    return rc;
}
