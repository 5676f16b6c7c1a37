/* mod_log.c - a test module: logs one line with fields ("module says hello", word and count)
 * through the host, and answers the word back; its parse refuses the word "bad" with its own
 * error (422 bad_word). */
#include <errno.h>
#include <spindle/module.h>
#include <stdlib.h>
#include <string.h>

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

static const struct spindle_host *h;

static int log_parse(struct spindle_job *job, void **state)
{
    size_t len = 0;
    const char *w = h->param_str(job, 0, &len);
    if (w == NULL) {
        w = "world";
        len = 5;
    }
    if (len == 3 && memcmp(w, "bad", 3) == 0) {
        h->set_error(job, 422, "bad_word", "the word is bad");
        return -EINVAL;
    }
    char *st = malloc(len + 1);
    if (st == NULL)
        return -ENOMEM;
    memcpy(st, w, len);
    st[len] = '\0';
    *state = st;
    return 0;
}

static int log_run(struct spindle_job *job, void *state)
{
    char *word = state;
    if (h->log_enabled(SPINDLE_LOG_INFO))
        h->log(job, SPINDLE_LOG_INFO, "module says hello",
               (struct spindle_field[]){SPINDLE_STR("word", word), SPINDLE_INT("count", 3),
                                        SPINDLE_BOOL("polite", 1)},
               3);
    return h->set_answer(job, word, strlen(word), "text/plain", SPINDLE_BYTES_BORROWED);
}

static void log_free(void *state)
{
    free(state);
}

static const struct spindle_param log_params[] = {
    {.name = "word", .type = SPINDLE_PARAM_STRING},
};

static const struct spindle_kind log_kind = {
    SPINDLE_KIND_HEAD,    .name = "hello",  .summary = "log a line with fields",
    .params = log_params, .nparams = 1,     .parse = log_parse,
    .run = log_run,       .free = log_free,
};

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)err;
    (void)err_size;
    h = host;
    *kind = &log_kind;
    return 0;
}
