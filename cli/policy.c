/* policy.c - when `spindle call` sends, retries and holds back: exponential backoff with full
 * jitter, the server's Retry-After / Retry-After-Ms hints, the circuit breaker, and what an
 * answer's status means for its job.
 *
 * Design: pure functions over small caller-owned structs; no clock is read here (the caller
 * passes its monotonic milliseconds, or the wall clock for an HTTP-date) and the only randomness
 * is a caller-held xorshift64* state, so every decision can be replayed in a unit test.
 *
 * Backoff: retry number n waits a uniform draw in [0, min(cap, base * 2^n)] ("full jitter": many
 * clients refused together spread out instead of coming back in step), never less than the
 * server's hint. A 429 with Retry-After-Ms is the exception: spindle reserved that moment's token
 * for this very request, so the retry goes exactly then (cli_verdict_of sets `exact`).
 *
 * The breaker: closed -> open after `threshold` consecutive failures (transport errors and 5xx;
 * 4xx and 429 mean the server is up and deciding) -> half-open after `cooldown_ms`, where exactly
 * one probe goes -> closed on its success, open again on its failure. Until a probe has failed the
 * failures may be a server still starting, so requests wait; after that they fail fast.
 *
 * Threads: none of its own; a breaker and an rng state belong to the thread that runs the jobs.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli/internal.h"

#define CL_RETRY_AFTER_MAX  86400000LL /* one day */
#define CL_RNG_DEFAULT_SEED 0x9e3779b97f4a7c15ULL

uint64_t cli_rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : CL_RNG_DEFAULT_SEED;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

long long cli_backoff_ms(const struct cli_backoff *b, unsigned attempt, long long retry_after_ms,
                         uint64_t *rng)
{
    long long cap = b->cap_ms > 0 ? b->cap_ms : 0;
    long long ceil = b->base_ms > 0 ? b->base_ms : 0;
    /* base * 2^attempt, saturating at the cap before it could overflow */
    for (unsigned i = 0; i < attempt && ceil < cap; i++)
        ceil *= 2;
    if (ceil > cap)
        ceil = cap;
    long long d = (long long)(cli_rand_next(rng) % (uint64_t)(ceil + 1));
    return retry_after_ms > d ? retry_after_ms : d;
}

long long cli_retry_after_ms_hint(const char *value)
{
    while (*value == ' ' || *value == '\t')
        value++;
    size_t digits = strspn(value, "0123456789");
    if (digits == 0 || value[digits + strspn(value + digits, " \t")] != '\0')
        return -1;
    if (digits > 9)
        return CL_RETRY_AFTER_MAX;
    long long ms = strtoll(value, NULL, 10);
    return ms > CL_RETRY_AFTER_MAX ? CL_RETRY_AFTER_MAX : ms;
}

long long cli_retry_after_ms(const char *value, time_t now)
{
    while (*value == ' ' || *value == '\t')
        value++;
    size_t digits = strspn(value, "0123456789");
    if (digits > 0 && value[digits + strspn(value + digits, " \t")] == '\0') {
        if (digits > 6)
            return CL_RETRY_AFTER_MAX;
        long long ms = strtoll(value, NULL, 10) * 1000;
        return ms > CL_RETRY_AFTER_MAX ? CL_RETRY_AFTER_MAX : ms;
    }
    struct tm tm = {0};
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || end[strspn(end, " \t")] != '\0')
        return -1;
    time_t at = timegm(&tm);
    if (at <= now)
        return 0;
    long long ms = (long long)(at - now) * 1000;
    return ms > CL_RETRY_AFTER_MAX ? CL_RETRY_AFTER_MAX : ms;
}

void cli_breaker_init(struct cli_breaker *b, unsigned threshold, long long cooldown_ms)
{
    *b = (struct cli_breaker){
        .state = CLI_BREAKER_CLOSED,
        .threshold = threshold,
        .cooldown_ms = cooldown_ms,
    };
}

int cli_breaker_allow(struct cli_breaker *b, long long now_ms)
{
    /* until a probe has failed, the failures may be a server still starting: wait, do not fail */
    int no = b->failed_probes > 0 ? CLI_BREAKER_REFUSE : CLI_BREAKER_WAIT;
    switch (b->state) {
    case CLI_BREAKER_CLOSED:
        return CLI_BREAKER_SEND;
    case CLI_BREAKER_OPEN:
        if (now_ms - b->opened_ms < b->cooldown_ms)
            return no;
        b->state = CLI_BREAKER_HALF_OPEN;
        b->probe_out = true;
        return CLI_BREAKER_PROBE;
    case CLI_BREAKER_HALF_OPEN:
        if (b->probe_out)
            return no;
        b->probe_out = true;
        return CLI_BREAKER_PROBE;
    }
    return no;
}

long long cli_breaker_retry_ms(const struct cli_breaker *b)
{
    if (b->failed_probes > 0)
        return 0; /* the answer is known: fail fast, or go */
    if (b->state == CLI_BREAKER_OPEN)
        return b->opened_ms + b->cooldown_ms;
    if (b->state == CLI_BREAKER_HALF_OPEN && b->probe_out)
        return LLONG_MAX;
    return 0;
}

static void cl_breaker_open(struct cli_breaker *b, long long now_ms)
{
    b->state = CLI_BREAKER_OPEN;
    b->opened_ms = now_ms;
    b->probe_out = false;
    b->failures = 0;
}

bool cli_breaker_record(struct cli_breaker *b, bool probe, bool ok, long long now_ms)
{
    if (b->threshold == 0)
        return false;
    if (b->state == CLI_BREAKER_CLOSED) {
        b->failures = ok ? 0 : b->failures + 1;
        if (b->failures < b->threshold)
            return false;
        cl_breaker_open(b, now_ms);
        return true;
    }
    /* open or half-open: only the probe's outcome counts */
    if (!probe || b->state != CLI_BREAKER_HALF_OPEN)
        return false;
    if (ok) {
        cli_breaker_init(b, b->threshold, b->cooldown_ms);
        return false;
    }
    b->failed_probes++;
    cl_breaker_open(b, now_ms);
    return true;
}

struct cli_verdict cli_verdict_of(int status, const char *retry_after_ms, const char *retry_after,
                                  time_t now)
{
    struct cli_verdict v = {
        .ok = status >= 200 && status < 300,
        .retryable = status == 503 || status == 429,
        .healthy = status < 500,
        .retry_after_ms = -1,
    };
    /* the precise hint first; Retry-After (seconds or a date) when there is none */
    if (retry_after_ms && retry_after_ms[0])
        v.retry_after_ms = cli_retry_after_ms_hint(retry_after_ms);
    v.exact = v.retry_after_ms >= 0 && status == 429;
    if (v.retry_after_ms < 0 && retry_after && retry_after[0])
        v.retry_after_ms = cli_retry_after_ms(retry_after, now);
    return v;
}
