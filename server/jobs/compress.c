/* compress.c - the job that compresses: POST /v1/jobs/compress?codec=zstd|gzip&level=L answers
 * the body compressed, as application/zstd (one frame, content size and checksum in it) or
 * application/gzip (RFC 1952, one member).
 *
 * Design: both codecs stream the body in input chunks and look at the context between chunks.
 * The chunk is sized by codec and level so that one chunk costs well under a millisecond even at
 * the slowest allowed level (see compress_chunk). zstd buffers input up to a 128 KiB block before
 * it does any work, so each chunk ends with ZSTD_e_flush, which closes the block: the work per
 * call is then bounded by the chunk, at the price of a few bytes per block (the window still
 * spans earlier blocks, so matches across chunks are kept). zlib's deflate works as input arrives,
 * so its chunks need no flush.
 * Each worker thread reuses one ZSTD_CCtx (made on first use, reset per job, freed at thread exit
 * by a pthread key destructor): making one costs an allocation of up to megabytes per job.
 * deflate keeps no such cache: its state is small and deflateInit2 is cheap next to the work.
 * Known gap: zstd's table setup on the first call of a job is one uninterruptible step (see
 * compress_chunk); large max_body_bytes with high zstd levels lengthen it.
 * The output buffer is allocated on the worker, sized by the codec's bound (grown if ever
 * needed), and owned by the state until free; the answer borrows it. The body is borrowed from
 * the caller until free. Codec failures are -EIO.
 * Streaming (server/jobs/stream.h): every compress request streams; the same codecs read the body
 * channel in compress_chunk pieces and write each piece of output to the answer channel as the
 * codec gives it (a buffer of ZSTD_CStreamOutSize / COMPRESS_OUT_CHUNK bytes), so a body of any
 * size costs the codec's state and two small buffers. zstd runs with ZSTD_e_continue up to
 * level COMPRESS_STREAM_FLUSH_LEVEL (a 128 KiB block is then about a millisecond of work) and
 * flushes each piece above it (as the whole-body path does, to bound the work per call). The
 * frame has no content size (it is not known in advance) but has its checksum.
 */
#include "server/jobs/jobs.h"
#include "server/jobs/stream.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#define COMPRESS_ZSTD_DEFAULT 3
#define COMPRESS_GZIP_DEFAULT 6
#define COMPRESS_GZIP_MAX     9

enum compress_codec { COMPRESS_ZSTD, COMPRESS_GZIP };

struct compress_state {
    const unsigned char *body; /* borrowed from the caller until free */
    size_t body_len;
    enum compress_codec codec;
    int level;
    unsigned char *out; /* owned; set by run */
    size_t out_len, out_cap;
};

static pthread_once_t compress_once = PTHREAD_ONCE_INIT;
static pthread_key_t compress_key; /* destructor frees the thread's ZSTD_CCtx */
static bool compress_key_ok;
static _Thread_local ZSTD_CCtx *compress_tcctx;

static void compress_cctx_free(void *p)
{
    ZSTD_freeCCtx(p);
}

static void compress_init_once(void)
{
    compress_key_ok = pthread_key_create(&compress_key, compress_cctx_free) == 0;
}

/* This thread's zstd context, made on first use; NULL when out of memory. */
static ZSTD_CCtx *compress_thread_cctx(void)
{
    if (compress_tcctx != NULL)
        return compress_tcctx;
    if (pthread_once(&compress_once, compress_init_once) != 0 || !compress_key_ok)
        return NULL;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (cctx == NULL)
        return NULL;
    if (pthread_setspecific(compress_key, cctx) != 0) {
        ZSTD_freeCCtx(cctx);
        return NULL;
    }
    compress_tcctx = cctx;
    return cctx;
}

/* Input bytes per chunk, about 0.3-0.5 ms of work each. Measured single-core speeds on text
 * (MB/s): zstd 1-4 ~110-140, 5 ~70, 6-8 ~25-40, 9-12 ~8-30, 13-15 ~3-5, 16-19 ~1.5-2; gzip 1-2
 * ~75, 3 ~50, 4-7 ~12-40, 8-9 ~6. Not covered: the first zstd call of a job sets up the match
 * tables, sized by level and body (the pledged size caps the window). It cannot be interrupted:
 * up to ~12 ms for a 1 MiB body at levels 9-19 on a new thread, ~100 ms for 8 MiB at level 19. */
static size_t compress_chunk(enum compress_codec codec, int level)
{
    static const unsigned short zstd_kib[23] = {
        0, 32, 32, 32, 32, 16, 8, 8, 8, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    };
    static const unsigned short gzip_kib[10] = {0, 32, 32, 16, 8, 8, 8, 8, 4, 4};

    if (codec == COMPRESS_GZIP)
        return (size_t)gzip_kib[level] * 1024u;
    return (size_t)zstd_kib[level] * 1024u;
}

static int compress_parse_level(const struct srv_job_param *p, enum compress_codec codec,
                                const struct srv_cfg *limits, int *level, char *err, size_t size)
{
    uint64_t max = COMPRESS_GZIP_MAX, v;
    int def = COMPRESS_GZIP_DEFAULT;

    if (codec == COMPRESS_ZSTD) {
        max = limits->max_compress_level_zstd;
        if (max > (uint64_t)ZSTD_maxCLevel())
            max = (uint64_t)ZSTD_maxCLevel();
        if (max < 1)
            max = 1;
        def = max < COMPRESS_ZSTD_DEFAULT ? (int)max : COMPRESS_ZSTD_DEFAULT;
    }
    if (p == NULL) {
        *level = def;
        return 0;
    }
    int rc = srv_job_param_uint(p, 1, max, &v, err, size);
    if (rc == 0)
        *level = (int)v;
    return rc;
}

/* codec and level from the parameters (shared with the streaming parse). */
static int compress_parse_params(const struct srv_job_param *params, size_t nparams,
                                 const struct srv_cfg *limits, enum compress_codec *codec,
                                 int *level, char *err, size_t size)
{
    static const char *const names[] = {"codec", "level"};
    const struct srv_job_param *found[2];

    int rc = srv_job_params_match(params, nparams, names, 2, found, err, size);
    if (rc < 0)
        return rc;
    if (found[0] == NULL)
        return srv_job_err_missing("codec", err, size);
    if (srv_job_param_is(found[0], "zstd"))
        *codec = COMPRESS_ZSTD;
    else if (srv_job_param_is(found[0], "gzip"))
        *codec = COMPRESS_GZIP;
    else
        return srv_job_errf(err, size, "codec must be zstd or gzip");
    return compress_parse_level(found[1], *codec, limits, level, err, size);
}

static int compress_parse(const struct srv_job_param *params, size_t nparams, const void *body,
                          size_t body_len, const struct srv_cfg *limits, void **state, char *err,
                          size_t size)
{
    enum compress_codec codec;
    int level = 0;

    *state = NULL;
    int rc = compress_parse_params(params, nparams, limits, &codec, &level, err, size);
    if (rc < 0)
        return rc;
    if (body_len > limits->max_body_bytes)
        return srv_job_errf(err, size, "body is larger than %zu bytes", limits->max_body_bytes);
    struct compress_state *st = srv_job_state_new(sizeof(*st), err, size);
    if (st == NULL)
        return -ENOMEM;
    /* an empty body may come as NULL: point at a real empty string so that body + offset is
     * always defined */
    st->body = body != NULL ? body : (const unsigned char *)"";
    st->body_len = body_len;
    st->codec = codec;
    st->level = level;
    *state = st;
    return 0;
}

/* Make room for at least one more output byte: double the buffer. */
static int compress_grow(struct compress_state *st)
{
    size_t cap = st->out_cap * 2 + 64;
    unsigned char *p = realloc(st->out, cap);
    if (p == NULL)
        return -ENOMEM;
    st->out = p;
    st->out_cap = cap;
    return 0;
}

static int compress_zstd_setup(ZSTD_CCtx *cctx, const struct compress_state *st)
{
    size_t r = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, st->level);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setPledgedSrcSize(cctx, st->body_len);
    return ZSTD_isError(r) ? -EIO : 0;
}

/* Feed one chunk (the last one with ZSTD_e_end) until zstd has taken and flushed it all. */
static int compress_zstd_chunk(ZSTD_CCtx *cctx, struct compress_state *st, const void *src,
                               size_t n, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer in = {src, n, 0};
    size_t left;

    do {
        if (st->out_len == st->out_cap && compress_grow(st) < 0)
            return -ENOMEM;
        ZSTD_outBuffer out = {st->out, st->out_cap, st->out_len};
        left = ZSTD_compressStream2(cctx, &out, &in, mode);
        if (ZSTD_isError(left))
            return -EIO;
        st->out_len = out.pos;
    } while (left != 0 || in.pos < in.size);
    return 0;
}

static int compress_zstd(struct compress_state *st, const struct ctx *c)
{
    ZSTD_CCtx *cctx = compress_thread_cctx();
    size_t chunk = compress_chunk(st->codec, st->level), off = 0;

    if (cctx == NULL)
        return -ENOMEM;
    int rc = compress_zstd_setup(cctx, st);
    if (rc < 0)
        return rc;
    st->out_cap = ZSTD_compressBound(st->body_len);
    st->out = malloc(st->out_cap);
    if (st->out == NULL)
        return -ENOMEM;
    do {
        if (srv_job_cancelled(c))
            return -ECANCELED;
        size_t n = st->body_len - off < chunk ? st->body_len - off : chunk;
        ZSTD_EndDirective mode = off + n == st->body_len ? ZSTD_e_end : ZSTD_e_flush;
        rc = compress_zstd_chunk(cctx, st, st->body + off, n, mode);
        off += n;
    } while (rc == 0 && off < st->body_len);
    return rc;
}

/* Feed one chunk (the last one with Z_FINISH) until deflate has taken it all (and ended). */
static int compress_gzip_chunk(z_stream *zs, struct compress_state *st, int flush)
{
    int zrc;

    do {
        if (st->out_len == st->out_cap && compress_grow(st) < 0)
            return -ENOMEM;
        zs->next_out = st->out + st->out_len;
        zs->avail_out = (uInt)(st->out_cap - st->out_len);
        zrc = deflate(zs, flush);
        st->out_len = st->out_cap - zs->avail_out;
        if (zrc == Z_STREAM_ERROR)
            return -EIO;
    } while (flush == Z_FINISH ? zrc != Z_STREAM_END : zs->avail_in > 0);
    return 0;
}

static int compress_gzip(struct compress_state *st, const struct ctx *c)
{
    size_t chunk = compress_chunk(st->codec, st->level), off = 0;
    z_stream zs = {0};
    int rc;

    if (deflateInit2(&zs, st->level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    st->out_cap = deflateBound(&zs, (uLong)st->body_len);
    st->out = malloc(st->out_cap);
    if (st->out == NULL) {
        rc = -ENOMEM;
        goto end_deflate;
    }
    do {
        if (srv_job_cancelled(c)) {
            rc = -ECANCELED;
            goto end_deflate;
        }
        size_t n = st->body_len - off < chunk ? st->body_len - off : chunk;
        zs.next_in = (Bytef *)(st->body + off); /* zlib's API is not const-correct */
        zs.avail_in = (uInt)n;
        off += n;
        rc = compress_gzip_chunk(&zs, st, off == st->body_len ? Z_FINISH : Z_NO_FLUSH);
    } while (rc == 0 && off < st->body_len);
end_deflate:
    deflateEnd(&zs);
    return rc;
}

static int compress_run(void *state)
{
    struct compress_state *st = state;
    const struct ctx *c = ctx_current();

    if (st->codec == COMPRESS_ZSTD)
        return compress_zstd(st, c);
    return compress_gzip(st, c);
}

static void compress_answer(const void *state, struct srv_job_answer *out)
{
    const struct compress_state *st = state;
    out->status = 200;
    out->content_type = st->codec == COMPRESS_ZSTD ? "application/zstd" : "application/gzip";
    out->body = (const char *)st->out;
    out->len = st->out_len;
}

static void compress_free(void *state)
{
    struct compress_state *st = state;
    if (st == NULL)
        return;
    free(st->out);
    free(st);
}

/* Higher levels cost more per byte: the level scales the body length. */
static uint64_t compress_cost(const void *state)
{
    const struct compress_state *st = state;
    return (uint64_t)st->body_len * (uint64_t)(st->level > 0 ? st->level : 1);
}

static const struct srv_job_kind srv_job_compress = {
    .name = "compress",
    .summary = "the body compressed with zstd or gzip",
    .uses_body = true,
    .parse = compress_parse,
    .run = compress_run,
    .answer = compress_answer,
    .free = compress_free,
    .cost = compress_cost,
};
SRV_JOB_KIND_REGISTER(srv_job_compress);

/* ---- streaming: any body size, output as it is made --------------------------------------------
 */

#define COMPRESS_OUT_CHUNK          (64u * 1024u)
#define COMPRESS_STREAM_FLUSH_LEVEL 4

struct compress_stream {
    enum compress_codec codec;
    int level;
};

static bool compress_stream_wants(const struct srv_job_param *params, size_t nparams)
{
    (void)params;
    (void)nparams;
    return true;
}

static int compress_stream_parse(const struct srv_job_param *params, size_t nparams,
                                 const struct srv_cfg *limits, void **state, char *err, size_t size)
{
    enum compress_codec codec;
    int level = 0;

    *state = NULL;
    int rc = compress_parse_params(params, nparams, limits, &codec, &level, err, size);
    if (rc < 0)
        return rc;
    struct compress_stream *st = srv_job_state_new(sizeof(*st), err, size);
    if (st == NULL)
        return -ENOMEM;
    st->codec = codec;
    st->level = level;
    *state = st;
    return 0;
}

static const char *compress_stream_type(const void *state)
{
    const struct compress_stream *st = state;
    return st->codec == COMPRESS_ZSTD ? "application/zstd" : "application/gzip";
}

/* Compress one piece of input (n == 0: the end) and write what zstd gives. */
static int compress_zstd_piece(ZSTD_CCtx *cctx, const void *src, size_t n, ZSTD_EndDirective mode,
                               unsigned char *obuf, size_t osize, struct srv_chan *out)
{
    ZSTD_inBuffer in = {src, n, 0};
    size_t left;

    do {
        ZSTD_outBuffer zout = {obuf, osize, 0};
        left = ZSTD_compressStream2(cctx, &zout, &in, mode);
        if (ZSTD_isError(left))
            return -EIO;
        if (zout.pos > 0) {
            int rc = srv_chan_write(out, obuf, zout.pos);
            if (rc < 0)
                return rc;
        }
    } while (mode == ZSTD_e_continue ? in.pos < in.size : left != 0);
    return 0;
}

static int compress_stream_zstd(const struct compress_stream *st, struct srv_chan *in,
                                struct srv_chan *out, unsigned char *ibuf, size_t chunk,
                                const struct ctx *c)
{
    ZSTD_CCtx *cctx = compress_thread_cctx();
    size_t osize = ZSTD_CStreamOutSize();
    ZSTD_EndDirective piece =
        st->level <= COMPRESS_STREAM_FLUSH_LEVEL ? ZSTD_e_continue : ZSTD_e_flush;

    if (cctx == NULL)
        return -ENOMEM;
    size_t r = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, st->level);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    if (ZSTD_isError(r))
        return -EIO;
    unsigned char *obuf = malloc(osize);
    if (obuf == NULL)
        return -ENOMEM;
    int rc = 0;
    for (;;) {
        ssize_t n = srv_chan_read(in, ibuf, chunk);
        if (n < 0 || srv_job_cancelled(c)) {
            rc = n < 0 ? (int)n : -ECANCELED;
            break;
        }
        rc = compress_zstd_piece(cctx, ibuf, (size_t)n, n == 0 ? ZSTD_e_end : piece, obuf, osize,
                                 out);
        if (rc < 0 || n == 0)
            break;
    }
    free(obuf);
    return rc;
}

/* Deflate what zs holds (flush: Z_NO_FLUSH or Z_FINISH) and write what it gives. */
static int compress_gzip_piece(z_stream *zs, int flush, unsigned char *obuf, struct srv_chan *out)
{
    int zrc;

    do {
        zs->next_out = obuf;
        zs->avail_out = COMPRESS_OUT_CHUNK;
        zrc = deflate(zs, flush);
        if (zrc == Z_STREAM_ERROR)
            return -EIO;
        size_t have = COMPRESS_OUT_CHUNK - zs->avail_out;
        if (have > 0) {
            int rc = srv_chan_write(out, obuf, have);
            if (rc < 0)
                return rc;
        }
    } while (flush == Z_FINISH ? zrc != Z_STREAM_END : zs->avail_in > 0 || zs->avail_out == 0);
    return 0;
}

static int compress_stream_gzip(const struct compress_stream *st, struct srv_chan *in,
                                struct srv_chan *out, unsigned char *ibuf, size_t chunk,
                                const struct ctx *c)
{
    z_stream zs = {0};
    int rc = 0;

    if (deflateInit2(&zs, st->level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    unsigned char *obuf = malloc(COMPRESS_OUT_CHUNK);
    if (obuf == NULL) {
        rc = -ENOMEM;
        goto end_deflate;
    }
    for (;;) {
        ssize_t n = srv_chan_read(in, ibuf, chunk);
        if (n < 0 || srv_job_cancelled(c)) {
            rc = n < 0 ? (int)n : -ECANCELED;
            break;
        }
        zs.next_in = ibuf;
        zs.avail_in = (uInt)n;
        rc = compress_gzip_piece(&zs, n == 0 ? Z_FINISH : Z_NO_FLUSH, obuf, out);
        if (rc < 0 || n == 0)
            break;
    }
    free(obuf);
end_deflate:
    deflateEnd(&zs);
    return rc;
}

static int compress_stream_run(void *state, struct srv_chan *in, struct srv_chan *out)
{
    const struct compress_stream *st = state;
    size_t chunk = compress_chunk(st->codec, st->level);
    unsigned char *ibuf = malloc(chunk);

    if (ibuf == NULL)
        return -ENOMEM;
    int rc = st->codec == COMPRESS_ZSTD
                 ? compress_stream_zstd(st, in, out, ibuf, chunk, ctx_current())
                 : compress_stream_gzip(st, in, out, ibuf, chunk, ctx_current());
    free(ibuf);
    return rc;
}

static const struct srv_job_stream_kind srv_job_compress_stream = {
    .name = "compress",
    .wants = compress_stream_wants,
    .parse = compress_stream_parse,
    .content_type = compress_stream_type,
    .run = compress_stream_run,
    .free = free,
};
SRV_JOB_STREAM_REGISTER(srv_job_compress_stream);
