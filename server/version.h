/* version.h - what was built: the release version and the source commit (server/ only).
 *
 * Both are fixed at build time: the Makefile passes SPINDLE_VERSION (its VERSION) and
 * SPINDLE_COMMIT (`git rev-parse --short=12 HEAD`, "unknown" outside a git checkout) to
 * server/version.c alone, so a new commit recompiles one file. `spindle version`, the
 * `spindle started` log line and the spindle_build_info metric read them from here.
 */
#ifndef SPINDLE_VERSION_H
#define SPINDLE_VERSION_H

/* The release version, e.g. "0.1.0" (static storage). */
extern const char srv_version[];

/* The commit the binary was built from, abbreviated, or "unknown" (static storage). */
extern const char srv_commit[];

#endif
