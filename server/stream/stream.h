/* stream.h - a bounded byte channel between the loop thread and one worker: the streaming job
 * interface.
 *
 * A streaming request has two channels: its body flows loop -> worker through one, its answer
 * worker -> loop through the other. Each starts at a small capacity (a few x 64 KiB) and may
 * double up to a bound set with srv_chan_max_set, only when it proved too small for both sides'
 * pace: the writer filled it and then the reader drained it to empty (a side that is slow by
 * itself never lets that happen, so an idle or slow client keeps the small channel). The worker
 * side blocks (srv_chan_read waits while the channel is empty, srv_chan_write while it is full);
 * the loop side never blocks (srv_chan_put and srv_chan_get move what fits and say how much) and
 * learns of progress through a notify callback instead: when the loop found the channel full (put)
 * or empty (get), the worker's next read or write that changes that calls notify once, from the
 * worker, with no lock held (the loop's side is typically an ev_async_send). So backpressure
 * reaches the socket: the loop stops reading a client whose body channel is full, and stops taking
 * output it cannot send.
 *
 *   worker                                   loop
 *   srv_chan_read(in, buf, n)  <- blocks --  srv_chan_put(in, bytes)    (room? else armed)
 *   srv_chan_write(out, b, n)  -- blocks ->  srv_chan_get(out, buf, n)  (data? else armed)
 *
 * srv_chan_cancel (any thread; e.g. from a context watch) wakes both sides: every later blocking
 * call returns -ECANCELED at once. srv_chan_close is the writer's end of data (EOF for the reader).
 * The read and write calls have the shape of a module ABI's read-chunk/write-chunk calls: the
 * caller's buffer, a size, a count or a negative errno.
 *
 * Threads: one reader and one writer at a time, on any threads; every field is under the
 * channel's mutex, which is a leaf (no other lock is taken under it, callbacks run outside it).
 */
#ifndef SPINDLE_SRV_STREAM_H
#define SPINDLE_SRV_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct srv_chan;

/* Capacity of a request's channels: four 64 KiB chunks each at first, at most sixteen. */
#define SRV_CHAN_CHUNK    (64u * 1024u)
#define SRV_CHAN_CAPACITY (4u * SRV_CHAN_CHUNK)
#define SRV_CHAN_MAX      (16u * SRV_CHAN_CHUNK)

/* Called (from the thread of the read/write/close that made progress, no lock held) when the
 * side that armed it may act again. Must be thread-safe and cheap (ev_async_send). */
typedef void srv_chan_notify_fn(void *arg);

/* A new channel of `cap` bytes (> 0), empty and open. `notify` may be NULL; `arg` is borrowed.
 * NULL on out of memory. */
struct srv_chan *srv_chan_new(size_t cap, srv_chan_notify_fn *notify, void *arg);

/* Free the channel. Nobody may be blocked in it or call it any more. NULL is a no-op. */
void srv_chan_free(struct srv_chan *ch);

/* Let the channel grow up to `max` bytes (a channel is made with max = cap: fixed). It doubles
 * (capped at max) when its reader finds it empty after its writer found it full since the
 * reader last found it empty: the two sides could not keep each other busy. It grows only while
 * empty (nothing is copied; the reader's side allocates, the old buffer is freed after the
 * mutex is released) and never shrinks. Any thread, before or while the channel is used. */
void srv_chan_max_set(struct srv_chan *ch, size_t max);

/* The reader of this channel was held up elsewhere (its own output was full: a client that reads
 * slowly): the writer's finding it full since says nothing about the two sides' pace, so it no
 * longer counts towards growth. Any thread. */
void srv_chan_stalled(struct srv_chan *ch);

/* The capacity now, and how many times it doubled. */
size_t srv_chan_cap(struct srv_chan *ch);
unsigned srv_chan_grew(struct srv_chan *ch);

/* ---- blocking side (a worker) ---------------------------------------------------------------- */

/* Wait until the channel holds bytes, is closed or cancelled; then copy up to `size` bytes (> 0)
 * into `buf` (borrowed). Returns the count (> 0), 0 at the end of data (closed and empty), or
 * -ECANCELED (cancelled: also when bytes remain). */
ssize_t srv_chan_read(struct srv_chan *ch, void *buf, size_t size);

/* Copy all `len` bytes of `buf` (borrowed) in, waiting for room as often as needed. Returns 0,
 * -ECANCELED (cancelled; part of buf may have gone in), -EPIPE (written after srv_chan_close). */
int srv_chan_write(struct srv_chan *ch, const void *buf, size_t len);

/* ---- the worker side without waiting (a worker polling other descriptors too) ------------------
 *
 * For a worker that must not block in the channel because it also waits on something else (a
 * program's pipes): the calls below never wait and, when they cannot proceed, return -EAGAIN and
 * arm the channel's wake descriptor, which the next change that may let them proceed writes (by
 * the blocking side's rules: a put that fills half the channel or a srv_chan_push for a reader, a
 * get that frees half for a writer, a close or cancel for both; an eventfd: the 8-byte value 1; a
 * pipe: those 8 bytes). The write happens under
 * the channel's mutex, so once srv_chan_wake_fd(ch, -1) returned the descriptor is never written
 * again and may be closed. */

/* Set (fd >= 0, borrowed, non-blocking) or clear (-1) the wake descriptor. Any thread. */
void srv_chan_wake_fd(struct srv_chan *ch, int fd);

/* srv_chan_read without waiting: the count (> 0), 0 at the end of data, -ECANCELED, or -EAGAIN
 * (empty and open: the wake descriptor is armed). */
ssize_t srv_chan_try_read(struct srv_chan *ch, void *buf, size_t size);

/* Copy up to `len` (> 0) bytes of `buf` in without waiting: the count taken (> 0), -EAGAIN
 * (full: the wake descriptor is armed), -ECANCELED, or -EPIPE (closed). */
ssize_t srv_chan_try_write(struct srv_chan *ch, const void *buf, size_t len);

/* ---- non-blocking side (the loop) ------------------------------------------------------------ */

/* Copy up to `len` bytes of `buf` in without waiting. Returns the count taken; when it is less
 * than len (the channel is full) the next srv_chan_read that frees half the capacity notifies.
 * A blocked reader is woken once half the capacity is buffered (else see srv_chan_push).
 * Returns 0 when cancelled or closed. */
size_t srv_chan_put(struct srv_chan *ch, const void *buf, size_t len);

/* Wake a reader blocked in srv_chan_read when any bytes are buffered. srv_chan_put wakes it only
 * once half the capacity is buffered; the loop calls this when it has put what it has for now. */
void srv_chan_push(struct srv_chan *ch);

/* Free bytes now (0 when cancelled or closed); when 0, arms the notify like a short put. */
size_t srv_chan_room(struct srv_chan *ch);

/* Take up to `size` bytes into `buf` without waiting (a writer blocked on the full channel is
 * woken once half the capacity is free). Returns the count; 0 when empty, and then
 * the next srv_chan_write or srv_chan_close notifies (unless the channel is at its end). */
size_t srv_chan_get(struct srv_chan *ch, void *buf, size_t size);

/* True when the channel is full or closed; else arms the notify like an empty get (the next
 * srv_chan_write or srv_chan_close notifies), atomically with the test. */
bool srv_chan_full_or_arm(struct srv_chan *ch);

/* True when the writer closed the channel and every byte was taken. */
bool srv_chan_at_end(struct srv_chan *ch);

/* ---- either side ------------------------------------------------------------------------------
 */

/* End of data: the reader gets what is buffered, then 0. Notifies an armed reader. Idempotent. */
void srv_chan_close(struct srv_chan *ch);

/* Wake every waiter; from now on the blocking calls return -ECANCELED and put/get move nothing.
 * Any thread (also from a context's cancel watch). Idempotent. */
void srv_chan_cancel(struct srv_chan *ch);

bool srv_chan_cancelled(struct srv_chan *ch);

/* Bytes buffered now. */
size_t srv_chan_len(struct srv_chan *ch);

/* Nanoseconds the blocking side has spent waiting (on an empty read or a full write) so far. */
uint64_t srv_chan_blocked_ns(struct srv_chan *ch);

#endif
