/* sha256.c - the job that hashes: POST /v1/jobs/sha256?rounds=R answers
 * {"rounds":R,"bytes":B,"digest":"<64 hex>"}: round 1 hashes the body (B bytes), each later round
 * hashes the previous 32-byte digest.
 *
 * Design: libcrypto's EVP API with the SHA256 EVP_MD fetched once per process (pthread_once) and
 * kept for the process lifetime: it is immutable and shared by every thread, fetching it is a
 * locked lookup in the provider store, and freeing it at exit would race with libcrypto's own
 * exit-time cleanup. Each thread reuses one EVP_MD_CTX (reinitialised per digest; allocating one
 * per round would double the cost of a round). The thread's context is found through a
 * _Thread_local pointer and freed at thread exit by the destructor of a pthread key; the main
 * thread's is still reachable at exit and is never reported as a leak.
 * Cancellation: a big body is hashed in SHA256_CHUNK pieces and the rounds in groups of
 * SHA256_CHECK_ROUNDS, with a look at the context between them (each well under 1 ms).
 * Errors from libcrypto are -EIO. The body is borrowed from the caller until free.
 * Streaming (server/jobs/stream.h): rounds=1 hashes a body of any size as it arrives, in
 * SHA256_CHUNK reads from the body channel, and writes the same JSON answer at the end; more
 * rounds keep the whole-body path (they hash the digest, not the body, so streaming gains nothing).
 */
#include "server/jobs/jobs.h"
#include "server/jobs/stream.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHA256_CHUNK        (64u * 1024u) /* bytes of body per update: ~30-200 us */
#define SHA256_CHECK_ROUNDS 64u           /* rounds between looks at the context: ~20-60 us */
#define SHA256_LEN          32u

struct sha256_state {
    const unsigned char *body; /* borrowed from the caller until free */
    size_t body_len;
    uint64_t rounds;
    int len;
    char json[160]; /* {"rounds":R,"bytes":B,"digest":"..."} */
};

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;        /* written once under sha256_once, then read-only */
static pthread_key_t sha256_key; /* destructor frees the thread's EVP_MD_CTX */
static bool sha256_key_ok;
static _Thread_local EVP_MD_CTX *sha256_tctx;

static void sha256_tctx_free(void *p)
{
    EVP_MD_CTX_free(p);
}

static void sha256_init_once(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    sha256_key_ok = pthread_key_create(&sha256_key, sha256_tctx_free) == 0;
}

/* This thread's digest context, made on first use; NULL when out of memory. */
static EVP_MD_CTX *sha256_thread_ctx(void)
{
    if (sha256_tctx != NULL)
        return sha256_tctx;
    if (!sha256_key_ok)
        return NULL;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    if (mctx == NULL)
        return NULL;
    if (pthread_setspecific(sha256_key, mctx) != 0) {
        EVP_MD_CTX_free(mctx);
        return NULL;
    }
    sha256_tctx = mctx;
    return mctx;
}

static int sha256_parse(const struct srv_job_param *params, size_t nparams, const void *body,
                        size_t body_len, const struct srv_cfg *limits, void **state, char *err,
                        size_t size)
{
    uint64_t rounds;

    *state = NULL;
    int rc = srv_job_param_only_uint(params, nparams, "rounds", 1, limits->max_sha256_rounds,
                                     &rounds, err, size);
    if (rc < 0)
        return rc;
    if (body_len > limits->max_body_bytes)
        return srv_job_errf(err, size, "body is larger than %zu bytes", limits->max_body_bytes);
    struct sha256_state *st = srv_job_state_new(sizeof(*st), err, size);
    if (st == NULL)
        return -ENOMEM;
    /* an empty body may come as NULL: point at a real empty string so that body + offset is
     * always defined */
    st->body = body != NULL ? body : (const unsigned char *)"";
    st->body_len = body_len;
    st->rounds = rounds;
    *state = st;
    return 0;
}

/* Round 1: the body, in chunks. */
static int sha256_body(EVP_MD_CTX *mctx, const struct sha256_state *st, const struct ctx *c,
                       unsigned char *md)
{
    if (!EVP_DigestInit_ex2(mctx, sha256_md, NULL))
        return -EIO;
    for (size_t off = 0; off < st->body_len; off += SHA256_CHUNK) {
        if (srv_job_cancelled(c))
            return -ECANCELED;
        size_t n = st->body_len - off < SHA256_CHUNK ? st->body_len - off : SHA256_CHUNK;
        if (!EVP_DigestUpdate(mctx, st->body + off, n))
            return -EIO;
    }
    return EVP_DigestFinal_ex(mctx, md, NULL) ? 0 : -EIO;
}

static void sha256_format(struct sha256_state *st, const unsigned char *md)
{
    static const char hex[] = "0123456789abcdef";
    char digest[2 * SHA256_LEN + 1];

    for (unsigned i = 0; i < SHA256_LEN; i++) {
        digest[2 * i] = hex[md[i] >> 4];
        digest[2 * i + 1] = hex[md[i] & 15];
    }
    digest[2 * SHA256_LEN] = '\0';
    st->len =
        snprintf(st->json, sizeof(st->json), "{\"rounds\":%llu,\"bytes\":%zu,\"digest\":\"%s\"}",
                 (unsigned long long)st->rounds, st->body_len, digest);
}

static int sha256_run(void *state)
{
    struct sha256_state *st = state;
    const struct ctx *c = ctx_current();
    unsigned char md[SHA256_LEN];

    if (pthread_once(&sha256_once, sha256_init_once) != 0 || sha256_md == NULL)
        return -EIO;
    EVP_MD_CTX *mctx = sha256_thread_ctx();
    if (mctx == NULL)
        return -ENOMEM;
    int rc = sha256_body(mctx, st, c, md);
    if (rc < 0)
        return rc;
    for (uint64_t r = 2; r <= st->rounds; r++) {
        if (r % SHA256_CHECK_ROUNDS == 0 && srv_job_cancelled(c))
            return -ECANCELED;
        if (!EVP_DigestInit_ex2(mctx, sha256_md, NULL) || !EVP_DigestUpdate(mctx, md, SHA256_LEN) ||
            !EVP_DigestFinal_ex(mctx, md, NULL))
            return -EIO;
    }
    sha256_format(st, md);
    return 0;
}

static void sha256_answer(const void *state, struct srv_job_answer *out)
{
    const struct sha256_state *st = state;
    out->status = 200;
    out->content_type = "application/json";
    out->body = st->json;
    out->len = (size_t)st->len;
}

static void sha256_free(void *state)
{
    free(state);
}

/* Round 1 hashes the body (64-byte blocks), every later round one 32-byte digest. */
static uint64_t sha256_cost(const void *state)
{
    const struct sha256_state *st = state;
    return st->rounds + st->body_len / 64;
}

static const struct srv_job_kind srv_job_sha256 = {
    .name = "sha256",
    .summary = "iterated SHA-256 of the body",
    .uses_body = true,
    .parse = sha256_parse,
    .run = sha256_run,
    .answer = sha256_answer,
    .free = sha256_free,
    .cost = sha256_cost,
};
SRV_JOB_KIND_REGISTER(srv_job_sha256);

/* ---- streaming: rounds=1 over a body of any size ----------------------------------------------
 */

struct sha256_stream {
    uint64_t bytes;
    char json[160];
};

static bool sha256_stream_wants(const struct srv_job_param *params, size_t nparams)
{
    return nparams == 1 && params[0].key_len == 6 && memcmp(params[0].key, "rounds", 6) == 0 &&
           srv_job_param_is(&params[0], "1");
}

static int sha256_stream_parse(const struct srv_job_param *params, size_t nparams,
                               const struct srv_cfg *limits, void **state, char *err, size_t size)
{
    uint64_t rounds;

    (void)limits;
    *state = NULL;
    int rc = srv_job_param_only_uint(params, nparams, "rounds", 1, 1, &rounds, err, size);
    if (rc < 0)
        return rc;
    *state = srv_job_state_new(sizeof(struct sha256_stream), err, size);
    return *state != NULL ? 0 : -ENOMEM;
}

static const char *sha256_stream_type(const void *state)
{
    (void)state;
    return "application/json";
}

static int sha256_stream_run(void *state, struct srv_chan *in, struct srv_chan *out)
{
    struct sha256_stream *st = state;
    const struct ctx *c = ctx_current();
    unsigned char md[SHA256_LEN];
    ssize_t n;

    if (pthread_once(&sha256_once, sha256_init_once) != 0 || sha256_md == NULL)
        return -EIO;
    EVP_MD_CTX *mctx = sha256_thread_ctx();
    unsigned char *buf = malloc(SHA256_CHUNK);
    if (mctx == NULL || buf == NULL) {
        free(buf);
        return -ENOMEM;
    }
    int rc = EVP_DigestInit_ex2(mctx, sha256_md, NULL) ? 0 : -EIO;
    while (rc == 0 && (n = srv_chan_read(in, buf, SHA256_CHUNK)) != 0) {
        if (n < 0 || srv_job_cancelled(c))
            rc = n < 0 ? (int)n : -ECANCELED;
        else if (!EVP_DigestUpdate(mctx, buf, (size_t)n))
            rc = -EIO;
        st->bytes += n > 0 ? (uint64_t)n : 0;
    }
    free(buf);
    if (rc == 0 && !EVP_DigestFinal_ex(mctx, md, NULL))
        rc = -EIO;
    if (rc < 0)
        return rc;
    struct sha256_state fmt = {.rounds = 1, .body_len = (size_t)st->bytes};
    sha256_format(&fmt, md);
    return srv_chan_write(out, fmt.json, (size_t)fmt.len);
}

static const struct srv_job_stream_kind srv_job_sha256_stream = {
    .name = "sha256",
    .wants = sha256_stream_wants,
    .parse = sha256_stream_parse,
    .content_type = sha256_stream_type,
    .run = sha256_stream_run,
    .free = sha256_free,
};
SRV_JOB_STREAM_REGISTER(srv_job_sha256_stream);
