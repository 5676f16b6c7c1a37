/* wordfreq.c - a spindle job kind in a module: the word frequencies of the request body.
 *
 *     POST /v1/jobs/wordfreq?top=3   (body: any text)
 *     {"words":9,"distinct":6,"top":[{"word":"the","count":3},{"word":"cat","count":2},...]}
 *
 * A word is a run of ASCII letters and digits, compared without case (other bytes, UTF-8 ones
 * included, separate words; a word is cut at 64 bytes). `top` (1..1000, default 10) is how many
 * of the most frequent words to list, most frequent first, ties in alphabetical order.
 *
 * Built out of the spindle tree against the installed header (see Makefile):
 *     cc -O2 -fPIC -shared $(pkg-config --cflags spindle-module) -o wordfreq.so wordfreq.c
 * and declared in spindle.conf:
 *     [kind.wordfreq]
 *     module = /usr/local/lib/spindle/wordfreq.so
 *
 * How it uses the ABI (include/spindle/module.h): it declares its parameter, so spindle checks
 * `top` and answers 400 by itself; parse does nothing more (no state: every job's memory is
 * made in run, on the worker); run counts into a hash table, checks host->cancelled every
 * WF_CHECK_EVERY bytes and while it sorts (a client that leaves or a deadline stops it within a
 * millisecond or so), and hands its malloc'd JSON to spindle without a copy.
 */
#include <ctype.h>
#include <errno.h>
#include <spindle/module.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WF_WORD_MAX    64
#define WF_CHECK_EVERY 65536 /* bytes of body between two looks at cancellation */

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

static const struct spindle_host *host;

struct wf_entry {
    char word[WF_WORD_MAX + 1];
    unsigned len;
    uint64_t count;
};

struct wf_table {
    struct wf_entry *slots;
    size_t cap, used; /* cap is a power of two, at most half full */
};

static uint64_t wf_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

static int wf_grow(struct wf_table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 1024;
    struct wf_entry *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].len == 0)
            continue;
        size_t j = wf_hash(t->slots[i].word, t->slots[i].len) & (cap - 1);
        while (slots[j].len != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static int wf_add(struct wf_table *t, const char *w, size_t n)
{
    if ((t->used + 1) * 2 > t->cap && wf_grow(t) != 0)
        return -ENOMEM;
    size_t j = wf_hash(w, n) & (t->cap - 1);
    while (t->slots[j].len != 0 && !(t->slots[j].len == n && memcmp(t->slots[j].word, w, n) == 0))
        j = (j + 1) & (t->cap - 1);
    if (t->slots[j].len == 0) {
        memcpy(t->slots[j].word, w, n);
        t->slots[j].len = (unsigned)n;
        t->used++;
    }
    t->slots[j].count++;
    return 0;
}

/* Most frequent first, then alphabetical. */
static int wf_cmp(const void *a, const void *b)
{
    const struct wf_entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->word, y->word);
}

/* Count the words of the body into t; *words gets how many. */
static int wf_count(struct spindle_job *job, struct wf_table *t, uint64_t *words)
{
    size_t len = 0;
    const unsigned char *p = host->body(job, &len);
    char w[WF_WORD_MAX];
    size_t n = 0;
    *words = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i % WF_CHECK_EVERY == 0 && host->cancelled(job))
            return -ECANCELED;
        if (i < len && isalnum(p[i]) && p[i] < 0x80) {
            if (n < WF_WORD_MAX)
                w[n++] = (char)tolower(p[i]);
            continue;
        }
        if (n > 0) {
            if (wf_add(t, w, n) != 0)
                return -ENOMEM;
            (*words)++;
            n = 0;
        }
    }
    return 0;
}

/* The answer: JSON with the `top` most frequent words, malloc'd. */
static char *wf_json(const struct wf_table *t, uint64_t words, size_t top, size_t *len)
{
    size_t cap = 64 + top * (WF_WORD_MAX + 40);
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    size_t o = (size_t)snprintf(out, cap, "{\"words\":%llu,\"distinct\":%zu,\"top\":[",
                                (unsigned long long)words, t->used);
    for (size_t i = 0; i < top; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s{\"word\":\"%s\",\"count\":%llu}", i ? "," : "",
                              t->slots[i].word, (unsigned long long)t->slots[i].count);
    o += (size_t)snprintf(out + o, cap - o, "]}");
    *len = o;
    return out;
}

static int wf_run(struct spindle_job *job, void *state)
{
    (void)state;
    struct wf_table t = {0};
    uint64_t words = 0;
    int rc = wf_grow(&t);
    if (rc == 0)
        rc = wf_count(job, &t, &words);
    if (rc == 0 && host->cancelled(job))
        rc = -ECANCELED;
    if (rc != 0) {
        free(t.slots);
        return rc;
    }
    /* compact the used slots to the front, then sort them */
    size_t n = 0;
    for (size_t i = 0; i < t.cap; i++)
        if (t.slots[i].len != 0)
            t.slots[n++] = t.slots[i];
    qsort(t.slots, n, sizeof(t.slots[0]), wf_cmp);
    size_t top = (size_t)host->param(job, 0), len = 0;
    char *json = wf_json(&t, words, top < n ? top : n, &len);
    free(t.slots);
    if (json == NULL)
        return -ENOMEM;
    if (host->log_enabled(SPINDLE_LOG_DEBUG))
        host->log(
            job, SPINDLE_LOG_DEBUG, "words counted",
            (struct spindle_field[]){SPINDLE_UINT("words", words), SPINDLE_UINT("distinct", n)}, 2);
    return host->set_answer(job, json, len, "application/json", SPINDLE_BYTES_MALLOC);
}

static const struct spindle_param wf_params[] = {
    {.name = "top", .type = SPINDLE_PARAM_INT, .min = 1, .max = 1000, .def = 10},
};

static const struct spindle_kind wf_kind = {
    SPINDLE_KIND_HEAD,
    .name = "wordfreq",
    .summary = "the most frequent words of the body, as JSON",
    .uses_body = 1,
    .params = wf_params,
    .nparams = 1,
    .run = wf_run,
};

int spindle_module_init(const struct spindle_host *h, const struct spindle_kind **kind, char *err,
                        size_t err_size)
{
    if (h->abi_major != SPINDLE_ABI_MAJOR || !SPINDLE_HOST_HAS(h, set_answer)) {
        snprintf(err, err_size, "needs a spindle host of ABI %d.0 or later", SPINDLE_ABI_MAJOR);
        return -ENOTSUP;
    }
    host = h;
    *kind = &wf_kind;
    return 0;
}
