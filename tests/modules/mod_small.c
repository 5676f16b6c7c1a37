/* mod_small.c - a test module whose kind description claims fewer bytes than ABI 1.0 has: the
 * host must refuse it. */
#include <spindle/module.h>

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

static int small_run(struct spindle_job *job, void *state)
{
    (void)job;
    (void)state;
    return 0;
}

static const struct spindle_kind small_kind = {
    .abi_major = SPINDLE_ABI_MAJOR,
    .abi_minor = SPINDLE_ABI_MINOR,
    .size = 24,
    .name = "small",
    .run = small_run,
};

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)host;
    (void)err;
    (void)err_size;
    *kind = &small_kind;
    return 0;
}
