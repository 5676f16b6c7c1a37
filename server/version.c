/* version.c - the build's version and commit, from the Makefile's -D defines.
 *
 * Only this file is compiled with the defines (see the Makefile's version stamp): a commit
 * changes one object, not the whole tree. Built without them (the fuzz harnesses, a hand build)
 * both read "unknown" rather than claiming a release.
 */
#include "server/version.h"

#ifndef SPINDLE_VERSION
#define SPINDLE_VERSION "unknown"
#endif
#ifndef SPINDLE_COMMIT
#define SPINDLE_COMMIT "unknown"
#endif

const char srv_version[] = SPINDLE_VERSION;
const char srv_commit[] = SPINDLE_COMMIT;
