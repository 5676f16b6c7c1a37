/* mod_noentry.c - a test module that declares its ABI but has no spindle_module_init. */
#include <spindle/module.h>

SPINDLE_MODULE_DECLARE;

int not_the_entry_point(void);

int not_the_entry_point(void)
{
    return 0;
}
