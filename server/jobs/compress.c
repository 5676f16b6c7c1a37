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
 * Streaming (ABI 1.1, SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT): a body over max_body_bytes, or
 * chunked, is read with host->read_chunk in compress_chunk pieces and each piece of output goes
 * to host->write_chunk as the codec gives it (a buffer of ZSTD_CStreamOutSize /
 * COMPRESS_OUT_CHUNK bytes), so a body of any size costs the codec's state and two small
 * buffers; both calls block on the client and return -ECANCELED when the request is called off.
 * zstd runs with ZSTD_e_continue up to level COMPRESS_STREAM_FLUSH_LEVEL (a 128 KiB block is then
 * about a millisecond of work) and flushes each piece above it (as the whole-body path does, to
 * bound the work per call). The frame has no content size (it is not known in advance) but has
 * its checksum. A body that fits max_body_bytes keeps the whole-body path and its answer.
 */
#include "server/jobs/internal.h"
#include "spindle/module.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#define COMPRESS_ZSTD_DEFAULT 3
#define COMPRESS_GZIP_DEFAULT 6
#define COMPRESS_GZIP_MAX     9

#define COMPRESS_OUT_CHUNK          (64u * 1024u) /* streamed gzip output per write */
#define COMPRESS_STREAM_FLUSH_LEVEL 4

enum compress_codec { COMPRESS_ZSTD, COMPRESS_GZIP };

struct compress_state {
    const unsigned char *body; /* borrowed from the caller until free; NULL: streamed */
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

static const struct spindle_host *compress_host;

/* The level: zstd's range is capped by the server limit max_compress_level_zstd (and the
 * library's maximum), gzip's is 1..9; each codec has its own default. */
static int compress_parse_level(struct spindle_job *job, enum compress_codec codec, int *level)
{
    int64_t max = COMPRESS_GZIP_MAX, v;
    int def = COMPRESS_GZIP_DEFAULT;

    if (codec == COMPRESS_ZSTD) {
        uint64_t lim = (uint64_t)ZSTD_maxCLevel();
        if (compress_host->limit(job, "max_compress_level_zstd", &lim) != 0)
            lim = (uint64_t)ZSTD_maxCLevel();
        max = lim > (uint64_t)ZSTD_maxCLevel() ? ZSTD_maxCLevel() : (int64_t)lim;
        if (max < 1)
            max = 1;
        def = max < COMPRESS_ZSTD_DEFAULT ? (int)max : COMPRESS_ZSTD_DEFAULT;
    }
    if (!compress_host->param_given(job, 1)) {
        *level = def;
        return 0;
    }
    int rc = compress_host->param_int(job, 1, 1, max, &v);
    if (rc == 0)
        *level = (int)v;
    return rc;
}

static const char *compress_type(enum compress_codec codec)
{
    return codec == COMPRESS_ZSTD ? "application/zstd" : "application/gzip";
}

static int compress_parse(struct spindle_job *job, void **state)
{
    enum compress_codec codec = compress_host->param(job, 0) == 0 ? COMPRESS_ZSTD : COMPRESS_GZIP;
    int level = 0;
    uint64_t max_body = 0;
    size_t len = 0;
    const void *body = compress_host->body(job, &len);

    int rc = compress_parse_level(job, codec, &level);
    if (rc < 0)
        return rc;
    if (compress_host->limit(job, "max_body_bytes", &max_body) == 0 && len > max_body) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than %llu bytes", (unsigned long long)max_body);
        compress_host->set_error(job, 400, "bad_param", msg);
        return -EINVAL;
    }
    struct compress_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->body = body;
    st->body_len = len;
    st->codec = codec;
    st->level = level;
    *state = st;
    /* the Content-Type of a streamed answer goes out before run */
    return compress_host->set_answer(job, NULL, 0, compress_type(codec), SPINDLE_BYTES_STATIC);
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

static int compress_zstd(struct compress_state *st, struct spindle_job *job)
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
        if (compress_host->cancelled(job))
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

static int compress_gzip(struct compress_state *st, struct spindle_job *job)
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
        if (compress_host->cancelled(job)) {
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

/* ---- streaming: any body size, output as it is made ------------------------------------------ */

/* Compress one piece of input (mode ZSTD_e_end: the last) and write what zstd gives. */
static int compress_zstd_piece(ZSTD_CCtx *cctx, struct spindle_job *job, const void *src, size_t n,
                               ZSTD_EndDirective mode, unsigned char *obuf, size_t osize)
{
    ZSTD_inBuffer in = {src, n, 0};
    size_t left;

    do {
        ZSTD_outBuffer zout = {obuf, osize, 0};
        left = ZSTD_compressStream2(cctx, &zout, &in, mode);
        if (ZSTD_isError(left))
            return -EIO;
        if (zout.pos > 0) {
            int rc = compress_host->write_chunk(job, obuf, zout.pos);
            if (rc < 0)
                return rc;
        }
    } while (mode == ZSTD_e_continue ? in.pos < in.size : left != 0);
    return 0;
}

static int compress_stream_zstd(const struct compress_state *st, struct spindle_job *job,
                                unsigned char *ibuf, size_t chunk)
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
        int64_t n = compress_host->read_chunk(job, ibuf, chunk);
        if (n < 0 || compress_host->cancelled(job)) {
            rc = n < 0 ? (int)n : -ECANCELED;
            break;
        }
        rc = compress_zstd_piece(cctx, job, ibuf, (size_t)n, n == 0 ? ZSTD_e_end : piece, obuf,
                                 osize);
        if (rc < 0 || n == 0)
            break;
    }
    free(obuf);
    return rc;
}

/* Deflate what zs holds (flush: Z_NO_FLUSH or Z_FINISH) and write what it gives. */
static int compress_gzip_piece(z_stream *zs, struct spindle_job *job, int flush,
                               unsigned char *obuf)
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
            int rc = compress_host->write_chunk(job, obuf, have);
            if (rc < 0)
                return rc;
        }
    } while (flush == Z_FINISH ? zrc != Z_STREAM_END : zs->avail_in > 0 || zs->avail_out == 0);
    return 0;
}

static int compress_stream_gzip(const struct compress_state *st, struct spindle_job *job,
                                unsigned char *ibuf, size_t chunk)
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
        int64_t n = compress_host->read_chunk(job, ibuf, chunk);
        if (n < 0 || compress_host->cancelled(job)) {
            rc = n < 0 ? (int)n : -ECANCELED;
            break;
        }
        zs.next_in = ibuf;
        zs.avail_in = (uInt)n;
        rc = compress_gzip_piece(&zs, job, n == 0 ? Z_FINISH : Z_NO_FLUSH, obuf);
        if (rc < 0 || n == 0)
            break;
    }
    free(obuf);
end_deflate:
    deflateEnd(&zs);
    return rc;
}

static int compress_stream(const struct compress_state *st, struct spindle_job *job)
{
    size_t chunk = compress_chunk(st->codec, st->level);
    unsigned char *ibuf = malloc(chunk);

    if (ibuf == NULL)
        return -ENOMEM;
    int rc = st->codec == COMPRESS_ZSTD ? compress_stream_zstd(st, job, ibuf, chunk)
                                        : compress_stream_gzip(st, job, ibuf, chunk);
    free(ibuf);
    return rc;
}

static int compress_run(struct spindle_job *job, void *state)
{
    struct compress_state *st = state;
    if (st->body == NULL)
        return compress_stream(st, job);
    int rc = st->codec == COMPRESS_ZSTD ? compress_zstd(st, job) : compress_gzip(st, job);
    if (rc < 0)
        return rc;
    return compress_host->set_answer(job, st->out, st->out_len, compress_type(st->codec),
                                     SPINDLE_BYTES_BORROWED);
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

static const char *const compress_codecs[] = {"zstd", "gzip", NULL};

static const struct spindle_param compress_params[] = {
    {.name = "codec", .type = SPINDLE_PARAM_ENUM, .required = 1, .choices = compress_codecs},
    {.name = "level", .type = SPINDLE_PARAM_STRING}, /* its range depends on the codec */
};

static const struct spindle_kind compress_kind = {
    SPINDLE_KIND_HEAD,
    .name = "compress",
    .summary = "the body compressed with zstd or gzip",
    .uses_body = 1,
    .params = compress_params,
    .nparams = 2,
    .parse = compress_parse,
    .run = compress_run,
    .free = compress_free,
    .cost = compress_cost,
    .stream = SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT,
};

static int compress_init(const struct spindle_host *host, const struct spindle_kind **kind,
                         char *err, size_t size)
{
    (void)err;
    (void)size;
    compress_host = host;
    *kind = &compress_kind;
    return 0;
}
SRV_JOB_BUILTIN(compress_init);
