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
 * Streaming (ABI 1.1, SPINDLE_STREAM_IN): a body over max_body_bytes, or chunked, is hashed as it
 * arrives, in SHA256_CHUNK reads of host->read_chunk (which blocks on the client and returns
 * -ECANCELED when the request is called off), so it costs one chunk of memory whatever its size;
 * the later rounds and the answer are those of the whole-body path.
 */
#include "server/jobs/internal.h"
#include "spindle/module.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define SHA256_CHUNK        (64u * 1024u) /* bytes of body per update: ~30-200 us */
#define SHA256_CHECK_ROUNDS 64u           /* rounds between looks at the context: ~20-60 us */
#define SHA256_LEN          32u

struct sha256_state {
    const unsigned char *body; /* borrowed from the caller until free; NULL: streamed */
    size_t body_len;           /* streamed: the bytes read so far */
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

static const struct spindle_host *sha256_host;

static int sha256_parse(struct spindle_job *job, void **state)
{
    uint64_t max_body = 0;
    size_t len = 0;
    const void *body = sha256_host->body(job, &len);
    if (sha256_host->limit(job, "max_body_bytes", &max_body) == 0 && len > max_body) {
        char msg[96];
        snprintf(msg, sizeof(msg), "body is larger than %llu bytes", (unsigned long long)max_body);
        sha256_host->set_error(job, 400, "bad_param", msg);
        return -EINVAL;
    }
    struct sha256_state *st = malloc(sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    st->body = body;
    st->body_len = len;
    st->rounds = (uint64_t)sha256_host->param(job, 0);
    *state = st;
    /* the Content-Type of a streamed answer goes out before run */
    return sha256_host->set_answer(job, NULL, 0, "application/json", SPINDLE_BYTES_STATIC);
}

/* Round 1 over a streamed body: read_chunk until its end. */
static int sha256_stream(EVP_MD_CTX *mctx, struct sha256_state *st, struct spindle_job *job,
                         unsigned char *md)
{
    unsigned char *buf = malloc(SHA256_CHUNK);
    if (buf == NULL)
        return -ENOMEM;
    int rc = EVP_DigestInit_ex2(mctx, sha256_md, NULL) ? 0 : -EIO;
    int64_t n;
    while (rc == 0 && (n = sha256_host->read_chunk(job, buf, SHA256_CHUNK)) != 0) {
        if (n < 0 || sha256_host->cancelled(job))
            rc = n < 0 ? (int)n : -ECANCELED;
        else if (!EVP_DigestUpdate(mctx, buf, (size_t)n))
            rc = -EIO;
        else
            st->body_len += (size_t)n;
    }
    free(buf);
    if (rc == 0 && !EVP_DigestFinal_ex(mctx, md, NULL))
        rc = -EIO;
    return rc;
}

/* Round 1: the body, in chunks. */
static int sha256_body(EVP_MD_CTX *mctx, const struct sha256_state *st, struct spindle_job *job,
                       unsigned char *md)
{
    if (!EVP_DigestInit_ex2(mctx, sha256_md, NULL))
        return -EIO;
    for (size_t off = 0; off < st->body_len; off += SHA256_CHUNK) {
        if (sha256_host->cancelled(job))
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

static int sha256_run(struct spindle_job *job, void *state)
{
    struct sha256_state *st = state;
    unsigned char md[SHA256_LEN];

    if (pthread_once(&sha256_once, sha256_init_once) != 0 || sha256_md == NULL)
        return -EIO;
    EVP_MD_CTX *mctx = sha256_thread_ctx();
    if (mctx == NULL)
        return -ENOMEM;
    int rc = st->body != NULL ? sha256_body(mctx, st, job, md) : sha256_stream(mctx, st, job, md);
    if (rc < 0)
        return rc;
    for (uint64_t r = 2; r <= st->rounds; r++) {
        if (r % SHA256_CHECK_ROUNDS == 0 && sha256_host->cancelled(job))
            return -ECANCELED;
        if (!EVP_DigestInit_ex2(mctx, sha256_md, NULL) || !EVP_DigestUpdate(mctx, md, SHA256_LEN) ||
            !EVP_DigestFinal_ex(mctx, md, NULL))
            return -EIO;
    }
    sha256_format(st, md);
    return sha256_host->set_answer(job, st->json, (size_t)st->len, "application/json",
                                   SPINDLE_BYTES_BORROWED);
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

static const struct spindle_param sha256_params[] = {
    {.name = "rounds",
     .type = SPINDLE_PARAM_INT,
     .required = 1,
     .min = 1,
     .max = 1000000000,
     .limit = "max_sha256_rounds"},
};

static const struct spindle_kind sha256_kind = {
    SPINDLE_KIND_HEAD,
    .name = "sha256",
    .summary = "iterated SHA-256 of the body",
    .uses_body = 1,
    .params = sha256_params,
    .nparams = 1,
    .parse = sha256_parse,
    .run = sha256_run,
    .free = sha256_free,
    .cost = sha256_cost,
    .stream = SPINDLE_STREAM_IN,
};

static int sha256_init(const struct spindle_host *host, const struct spindle_kind **kind, char *err,
                       size_t size)
{
    (void)err;
    (void)size;
    sha256_host = host;
    *kind = &sha256_kind;
    return 0;
}
SRV_JOB_BUILTIN(sha256_init);
