/* mod_abi2.c - a test module built for ABI 2.0 (a future major): the host must refuse it
 * without calling its entry point (which would crash it). */
#include <spindle/module.h>
#include <stdlib.h>

__attribute__((visibility("default"))) const uint32_t spindle_module_abi =
    SPINDLE_ABI_VERSION(2, 0);

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)host;
    (void)kind;
    (void)err;
    (void)err_size;
    abort(); /* never called */
}
