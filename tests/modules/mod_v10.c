/* mod_v10.c - a test module as a module built against ABI 1.0 looks to the host: it declares
 * 1.0, and its kind description ends with the 1.0 fields (size SPINDLE_KIND_SIZE_1_0). The
 * `stream` flag placed after them must never be read: the host reads the body whole (a body over
 * max_body_bytes is 413, as in 1.0). The kind answers the length of its body. */
#include <errno.h>
#include <spindle/module.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((visibility("default"))) const uint32_t spindle_module_abi =
    SPINDLE_ABI_VERSION(1, 0);

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

static const struct spindle_host *h;

static int v10_run(struct spindle_job *job, void *state)
{
    size_t len = 0;
    (void)state;
    if (h->body(job, &len) == NULL)
        return h->set_error(job, 500, "no_body", "a 1.0 kind got no body");
    char *json = malloc(64);
    if (json == NULL)
        return -ENOMEM;
    int n = snprintf(json, 64, "{\"bytes\":%zu}", len);
    return h->set_answer(job, json, (size_t)n, "application/json", SPINDLE_BYTES_MALLOC);
}

static const struct spindle_kind v10_kind = {
    .abi_major = 1,
    .abi_minor = 0,
    .size = (uint32_t)SPINDLE_KIND_SIZE_1_0,
    .param_size = (uint32_t)sizeof(struct spindle_param),
    .name = "v10",
    .summary = "a kind of ABI 1.0: the body's length",
    .uses_body = 1,
    .run = v10_run,
    .stream = SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT, /* past its size: not there for the host */
};

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)err;
    (void)err_size;
    /* a 1.0 module checks what it uses within host->size, which is larger on a 1.1 host */
    if (host->size < offsetof(struct spindle_host, read_chunk))
        return -1;
    h = host;
    *kind = &v10_kind;
    return 0;
}
