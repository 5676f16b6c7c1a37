/* server.h - the process: run the event loop with its listeners, pool and signals until stopped.
 */
#ifndef SPINDLE_SERVER_H
#define SPINDLE_SERVER_H

#include "server/config.h"

/* Run the server on `cfg` (borrowed) until SIGINT/SIGTERM stops it. The caller has started the
 * logger (log_start) and stops it after srv_run returns. `config_path` (borrowed, may be NULL when
 * running on the defaults) is re-read on SIGHUP, with the `noverrides` command-line `overrides`
 * (borrowed, may be NULL when noverrides is 0; they must outlive the call) applied on top each
 * time. Returns the process exit code: 0 after a clean stop, 1 when start-up failed (the reason is
 * logged at error level), 2 when [auth] forbids serving where the server listens (mode = keys on
 * a non-loopback address without a TLS front end or allow_plaintext; logged at error level). */
int srv_run(const struct srv_cfg *cfg, const char *config_path,
            const struct srv_cfg_override *overrides, size_t noverrides);

#endif
