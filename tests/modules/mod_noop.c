/* mod_noop.c - a test module: the noop kind as a module (answers {"ok":true} through the pool),
 * for the module path of /v1/jobs, /v1/batch, spindle call, the metrics and bench/module.sh. */
#include <spindle/module.h>

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

static const struct spindle_host *h;

static int modnoop_run(struct spindle_job *job, void *state)
{
    static const char body[] = "{\"ok\":true}";
    (void)state;
    return h->set_answer(job, body, sizeof(body) - 1, "application/json", SPINDLE_BYTES_STATIC);
}

static const struct spindle_kind modnoop = {
    SPINDLE_KIND_HEAD,
    .name = "modnoop",
    .summary = "the noop kind, from a module",
    .run = modnoop_run,
};

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)err;
    (void)err_size;
    h = host;
    *kind = &modnoop;
    return 0;
}
