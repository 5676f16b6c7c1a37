/* fdgate.h - closing the descriptors an event loop watches while other threads start programs
 * (server/ only).
 *
 * epoll registers a file, not a number, and drops the registration only when the file itself is
 * released; libev never removes a stopped watcher's descriptor from the kernel set (it counts on
 * close() doing that). A program started by a worker (vfork or fork, server/jobs/exec) holds a
 * copy of every descriptor of the process from the moment it is created until it closes them,
 * just before its execve. A socket the loop closes inside that window stays alive in the child,
 * keeps its registration, and epoll goes on reporting events for its old number; libev answers
 * with epoll_ctl on that number, which by then may belong to a worker's pipe, fails, and rebuilds
 * its whole epoll set (one epoll_ctl per watched descriptor). The gate closes the difference: a
 * spawn opens a window (srv_fdgate_spawn_begin/end) and a loop's close waits until no window is
 * open, so the close really releases the file and with it the registration.
 *
 * Threads: spawn_begin/end on any thread (workers); close and flush on a loop thread, for the
 * descriptors that loop watches. One mutex guards the counter and the list of deferred closes;
 * nothing blocks while it is held (close(2) of a socket does not block without SO_LINGER).
 */
#ifndef SPINDLE_FDGATE_H
#define SPINDLE_FDGATE_H

/* At most this many closes wait for the windows to close; past it a close happens at once (the
 * old behaviour: at worst a spurious event, which libev survives). */
#define SRV_FDGATE_DEFERRED_MAX 1024

/* Called (with the gate's mutex held, so it must not call back into the gate) when the last
 * window closed and closes are waiting: wake the loop so that it runs srv_fdgate_flush. */
typedef void srv_fdgate_wake_fn(void *arg);

/* Set the one waker (replacing any other). `arg` is borrowed until srv_fdgate_waker_clear. The
 * server sets it on its loop thread before workers start. */
void srv_fdgate_waker_set(srv_fdgate_wake_fn *fn, void *arg);

/* Clear the waker if it is still the one set with `arg` (before `arg` goes away). */
void srv_fdgate_waker_clear(void *arg);

/* A program is about to be created from this process: until the matching srv_fdgate_spawn_end,
 * closes through the gate wait. Call it before vfork/fork, and srv_fdgate_spawn_end once the
 * child holds none of the process's descriptors any more (after its execve, or after it exited
 * and was reaped). Windows of several threads may overlap. Never fails. */
void srv_fdgate_spawn_begin(void);
void srv_fdgate_spawn_end(void);

/* Close `fd` (taken over), whose watchers the caller has already stopped: now when no window is
 * open, else when the last one closes (srv_fdgate_flush) or at once past
 * SRV_FDGATE_DEFERRED_MAX. Loop thread. */
void srv_fdgate_close(int fd);

/* Close the deferred descriptors if no window is open. Returns how many still wait. Loop thread
 * (the waker's target). */
unsigned srv_fdgate_flush(void);

#endif
