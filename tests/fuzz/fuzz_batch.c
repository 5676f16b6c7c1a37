/* fuzz_batch.c - libFuzzer target: arbitrary bytes as the body of POST /v1/batch.
 *
 * Build and run with `make fuzz FUZZ_TARGET=batch` (clang, -fsanitize=fuzzer,address,undefined);
 * not part of the server binary or the test suites.
 *
 * Design: the input's first byte picks the mode, the rest is the body. It goes through
 * srv_batch_parse with small limits (so that every valid sub-job is cheap to run); when the batch
 * is accepted, every sub-job is run by its kind on this thread (no context: run to completion),
 * its answer taken as an "ok" outcome (every third one as failed or cancelled instead, to reach
 * each answer shape), the mode's settling rule applied in order, and the answer built and checked
 * to be JSON of the length it claims. A refused batch must come with a code and a message. The
 * logger is not started: nothing here logs.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api/batch.h"
#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct srv_cfg fb_cfg(void)
{
    struct srv_cfg cfg;
    srv_cfg_defaults(&cfg);
    cfg.max_batch = 8;
    cfg.max_spin_ms = 2;
    cfg.max_primes_n = 20000;
    cfg.max_sha256_rounds = 64;
    cfg.max_compress_level_zstd = 3;
    cfg.max_timeout_ms = 1000;
    return cfg;
}

/* Fill outs[i] for the accepted sub-job i: its run, and an outcome shape picked by i. */
static void fb_outcome(struct srv_batch_item *it, size_t i, struct srv_batch_outcome *o)
{
    memset(o, 0, sizeof(*o));
    o->kind = it->kind->name;
    o->queue_ns = i * 1000u;
    if (srv_job_run(&it->job) != 0 || i % 3 == 1) {
        o->status = SRV_BATCH_FAILED;
        o->http_status = i % 2 ? 504 : 500;
        o->code = i % 2 ? "deadline_exceeded" : "job_failed";
        snprintf(o->message, sizeof(o->message), "sub-job %zu failed", i);
        o->reason = i % 2 ? CTX_REASON_DEADLINE : CTX_REASON_NONE;
        return;
    }
    if (i % 3 == 2) {
        o->status = SRV_BATCH_CANCELLED;
        o->reason = CTX_REASON_SIBLING_WON;
        return;
    }
    srv_batch_outcome_ok(o, it);
    o->run_ns = 1000000u;
}

static void fb_answer(enum srv_batch_mode mode, const struct srv_batch_spec *spec)
{
    struct srv_batch_outcome *outs = calloc(spec->count, sizeof(*outs));
    if (outs == NULL)
        return;
    size_t decided = SRV_BATCH_NONE;
    for (size_t i = 0; i < spec->count; i++) {
        enum ctx_reason why = CTX_REASON_NONE;
        fb_outcome(&spec->items[i], i, &outs[i]);
        if (srv_batch_settle(mode, &outs[i], i, &decided, &why) && why == CTX_REASON_NONE)
            abort(); /* a decision always says how to cancel the rest */
    }
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    if (srv_batch_answer(mode, outs, spec->count, decided, "fuzz", &status, &body, &len) == 0) {
        json_t *j = json_loadb(body, len, 0, NULL);
        if (j == NULL || status < 200 || status > 599 || strlen(body) != len)
            abort(); /* the answer must be the JSON it claims */
        json_decref(j);
        free(body);
    }
    free(outs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static struct srv_cfg cfg;
    static int ready;
    if (!ready) {
        cfg = fb_cfg();
        ready = 1;
    }
    enum srv_batch_mode mode = (enum srv_batch_mode)(data[0] % 4);
    struct srv_batch_spec spec;
    const char *code = NULL;
    char err[SRV_BATCH_ERR_MAX];
    int rc = srv_batch_parse(data + 1, size - 1, &cfg, &spec, &code, err, sizeof(err));
    if (rc == 0) {
        if (spec.count == 0 || spec.count > cfg.max_batch)
            abort();
        fb_answer(mode, &spec);
        srv_batch_spec_fini(&spec);
    } else if (code == NULL || err[0] == '\0' || (rc != -EINVAL && rc != -ENOMEM)) {
        abort(); /* every refusal has a code and a message */
    }
    return 0;
}
