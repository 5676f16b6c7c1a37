/* mod_initfail.c - a test module whose init refuses to start, with its reason. */
#include <errno.h>
#include <spindle/module.h>
#include <stdio.h>

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)kind;
    if (!SPINDLE_HOST_HAS(host, set_answer))
        return -ENOTSUP;
    snprintf(err, err_size, "no licence key in SPINDLE_TEST_LICENCE");
    return -EACCES;
}
