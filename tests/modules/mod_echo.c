/* mod_echo.c - a test module of ABI 1.1: a kind that streams its body in and its answer out with
 * host->read_chunk and host->write_chunk. mode=echo writes the body back as it comes, mode=upper
 * upper-cases its ASCII letters, mode=count answers {"bytes":N} with set_answer after reading it
 * all. One code path for both sizes of body: the host reads a body that fits max_body_bytes whole
 * and collects what write_chunk writes into the answer. */
#include <errno.h>
#include <spindle/module.h>
#include <stdio.h>
#include <stdlib.h>

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

#define ECHO_CHUNK (32u * 1024u)

static const struct spindle_host *h;

enum echo_mode { ECHO_ECHO, ECHO_UPPER, ECHO_COUNT };

static int echo_parse(struct spindle_job *job, void **state)
{
    (void)state;
    const char *type = h->param(job, 0) == ECHO_COUNT ? "application/json" : "text/plain";
    return h->set_answer(job, NULL, 0, type, SPINDLE_BYTES_STATIC);
}

static int echo_run(struct spindle_job *job, void *state)
{
    (void)state;
    int64_t mode = h->param(job, 0), total = 0, n;
    char *buf = malloc(ECHO_CHUNK);
    if (buf == NULL)
        return -ENOMEM;
    int rc = 0;
    while (rc == 0 && (n = h->read_chunk(job, buf, ECHO_CHUNK)) != 0) {
        if (n < 0) {
            rc = (int)n;
            break;
        }
        total += n;
        if (mode == ECHO_UPPER)
            for (int64_t i = 0; i < n; i++)
                if (buf[i] >= 'a' && buf[i] <= 'z')
                    buf[i] = (char)(buf[i] - 'a' + 'A');
        if (mode != ECHO_COUNT)
            rc = h->write_chunk(job, buf, (size_t)n);
    }
    free(buf);
    if (rc < 0 || mode != ECHO_COUNT)
        return rc;
    char *json = malloc(64);
    if (json == NULL)
        return -ENOMEM;
    int len = snprintf(json, 64, "{\"bytes\":%lld}", (long long)total);
    return h->set_answer(job, json, (size_t)len, "application/json", SPINDLE_BYTES_MALLOC);
}

static const char *const echo_modes[] = {"echo", "upper", "count", NULL};

static const struct spindle_param echo_params[] = {
    {.name = "mode", .type = SPINDLE_PARAM_ENUM, .choices = echo_modes, .def = ECHO_ECHO},
};

static const struct spindle_kind echo_kind = {
    SPINDLE_KIND_HEAD,   .name = "echo",        .summary = "the body back, streamed (ABI 1.1)",
    .uses_body = 1,      .params = echo_params, .nparams = 1,
    .parse = echo_parse, .run = echo_run,       .stream = SPINDLE_STREAM_IN | SPINDLE_STREAM_OUT,
};

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    if (!SPINDLE_HOST_HAS(host, read_chunk) || !SPINDLE_HOST_HAS(host, write_chunk)) {
        snprintf(err, err_size, "echo needs a host of ABI 1.1 (read_chunk, write_chunk)");
        return -ENOTSUP;
    }
    h = host;
    *kind = &echo_kind;
    return 0;
}
