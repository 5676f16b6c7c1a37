/* chan.c - the bounded byte channel of a streaming request (see stream.h).
 *
 * Design: a ring buffer under one mutex, one condition variable for the
 * blocking calls (usually only the worker blocks; when both sides use them, at most one of them
 * can be waiting: an empty and a full channel exclude each other), and two "armed" flags for
 * the non-blocking side (the loop), which never waits but asks to be told: want_room after a put
 * that did not fit, want_data after a get that found nothing. The worker clears a flag and calls
 * notify after unlocking, once per arming, so a busy stream costs one wake-up of the loop per
 * refill or drain rather than one per chunk. A reader notifies the loop of room only once half the
 * capacity is free (hysteresis: the loop then reads big pieces from its socket, not a byte at a
 * time). The loop wakes a blocked worker with the same economy: a put wakes a waiting reader
 * only once half the capacity is buffered, and srv_chan_push (called by the loop when it has fed
 * what its socket had for now) wakes it for less; a get wakes a writer waiting on a full channel
 * only once half is free. So the worker takes big pieces and the two threads do not hand the
 * mutex back and forth per socket read (profiled: those wake-ups were a third of the loop's time).
 * A worker that polls other descriptors too uses the try calls instead of the blocking ones: a
 * try that cannot proceed sets want_wake, and the next change that may let it proceed (by the
 * same rules: a put that fills half, a push or close for a reader, a get that frees half for a
 * writer, a cancel for both) writes the wake descriptor. That write is done under the mutex (a
 * non-blocking eventfd write, the one system call made under it) so that clearing the
 * descriptor is final: its owner may close it right after.
 * Growth (srv_chan_max_set): the ring starts small and doubles up to max when the reader finds it
 * empty and the writer had found it full since the reader's previous empty find (saw_full). That
 * pair means the channel emptied faster than the other side could refill it, which a bigger
 * channel smooths (profiled: a 256 KiB channel holds 0.6 ms of zstd level 1, less than the loop
 * takes to be scheduled and read the socket, so the worker waited for 40 % of a transfer). A slow
 * client never fills the body channel and never drains the answer channel, so neither grows for
 * it. A client that uploads fast but reads slowly fills the body channel only because the job
 * waits on the answer channel: the job's side says so (srv_chan_stalled), which forgets that
 * fill. Growing only when empty means nothing is copied and no position moves; the allocation is
 * made under the mutex (at most a few times per channel) and the old buffer freed after it.
 * Lock order: the channel's mutex is a leaf; notify runs with no lock held.
 * Not done here: any knowledge of sockets, contexts or the pool. Cancellation comes from outside
 * (a context watch calls srv_chan_cancel).
 */
#include "server/stream/stream.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct srv_chan {
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* the blocking side waits here */
    unsigned char *buf;    /* under mu; replaced only while empty (chan_grow) */
    size_t cap, head, len; /* under mu: bytes are buf[head, head + len) modulo cap */
    size_t max;            /* under mu: cap may grow up to this */
    bool saw_full;         /* under mu: the writer found it full since the reader last found it
                            * empty */
    bool closed;           /* under mu: the writer is done */
    bool cancelled;        /* under mu */
    bool want_room;        /* under mu: the loop's put found it full */
    bool want_data;        /* under mu: the loop's get found it empty */
    bool reader_waiting;   /* under mu: srv_chan_read waits for bytes */
    bool writer_waiting;   /* under mu: srv_chan_write waits for room */
    uint64_t blocked_ns;   /* under mu */
    unsigned grew;         /* under mu: times the capacity doubled */
    int wake_fd;           /* under mu: -1, or written when want_wake */
    bool want_wake;        /* under mu: a try call found nothing to do */
    srv_chan_notify_fn *notify;
    void *arg;
};

static uint64_t chan_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct srv_chan *srv_chan_new(size_t cap, srv_chan_notify_fn *notify, void *arg)
{
    if (cap == 0)
        return NULL;
    struct srv_chan *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return NULL;
    ch->buf = malloc(cap);
    if (ch->buf == NULL)
        goto free_ch;
    if (pthread_mutex_init(&ch->mu, NULL) != 0)
        goto free_buf;
    if (pthread_cond_init(&ch->cv, NULL) != 0)
        goto destroy_mu;
    ch->cap = ch->max = cap;
    ch->wake_fd = -1;
    ch->notify = notify;
    ch->arg = arg;
    return ch;
destroy_mu:
    pthread_mutex_destroy(&ch->mu);
free_buf:
    free(ch->buf);
free_ch:
    free(ch);
    return NULL;
}

void srv_chan_free(struct srv_chan *ch)
{
    if (ch == NULL)
        return;
    pthread_cond_destroy(&ch->cv);
    pthread_mutex_destroy(&ch->mu);
    free(ch->buf);
    free(ch);
}

/* Copy n bytes out of the ring (n <= len). Under mu. */
static void chan_take(struct srv_chan *ch, unsigned char *dst, size_t n)
{
    size_t first = ch->cap - ch->head < n ? ch->cap - ch->head : n;
    memcpy(dst, ch->buf + ch->head, first);
    memcpy(dst + first, ch->buf, n - first);
    ch->head = (ch->head + n) % ch->cap;
    ch->len -= n;
}

/* Copy n bytes into the ring (n <= cap - len). Under mu. */
static void chan_give(struct srv_chan *ch, const unsigned char *src, size_t n)
{
    size_t tail = (ch->head + ch->len) % ch->cap;
    size_t first = ch->cap - tail < n ? ch->cap - tail : n;
    memcpy(ch->buf + tail, src, first);
    memcpy(ch->buf, src + first, n - first);
    ch->len += n;
}

/* The writer found the channel full (its next write must wait). Under mu. */
static void chan_full(struct srv_chan *ch)
{
    ch->saw_full = true;
}

/* The reader found the channel empty (and open). When the writer had filled it since the last
 * time, the channel is too small for the pace of both sides: the reader drained all of it before
 * the writer could refill it. Double it then (up to max), while it is empty, so that nothing is
 * copied and no pointer the writer holds moves. A side that is slow by itself never fills it (a
 * slow sender) or never empties it (a slow reader), so it never grows. Under mu; returns the
 * buffer to free after unlocking, or NULL. */
static unsigned char *chan_empty(struct srv_chan *ch)
{
    bool grow = ch->saw_full && ch->cap < ch->max && ch->len == 0;
    ch->saw_full = false;
    if (!grow)
        return NULL;
    size_t cap = ch->cap > ch->max / 2 ? ch->max : ch->cap * 2;
    unsigned char *p = malloc(cap);
    if (p == NULL)
        return NULL; /* stays as it is: still correct, only smaller */
    unsigned char *old = ch->buf;
    ch->buf = p;
    ch->cap = cap;
    ch->head = 0;
    ch->grew++;
    return old;
}

/* Wait on cv, adding the time to blocked_ns. Under mu. */
static void chan_wait(struct srv_chan *ch)
{
    uint64_t t0 = chan_now_ns();
    int rc = pthread_cond_wait(&ch->cv, &ch->mu);
    if (rc != 0)
        abort(); /* only EINVAL/EPERM: a broken invariant */
    ch->blocked_ns += chan_now_ns() - t0;
}

/* Wake a worker whose try call found nothing to do. Under mu. */
static void chan_wake(struct srv_chan *ch)
{
    if (!ch->want_wake || ch->wake_fd < 0)
        return;
    ch->want_wake = false;
    uint64_t one = 1;
    ssize_t n = write(ch->wake_fd, &one, sizeof(one));
    (void)n; /* EAGAIN: a full counter is as good as a wake-up */
}

static void chan_notify(struct srv_chan *ch, bool due)
{
    if (due && ch->notify != NULL)
        ch->notify(ch->arg);
}

ssize_t srv_chan_read(struct srv_chan *ch, void *buf, size_t size)
{
    unsigned char *old = NULL;
    pthread_mutex_lock(&ch->mu);
    if (ch->len == 0 && !ch->closed && !ch->cancelled)
        old = chan_empty(ch);
    while (ch->len == 0 && !ch->closed && !ch->cancelled) {
        ch->reader_waiting = true;
        chan_wait(ch);
        ch->reader_waiting = false;
    }
    if (ch->cancelled) {
        pthread_mutex_unlock(&ch->mu);
        free(old);
        return -ECANCELED;
    }
    size_t n = ch->len < size ? ch->len : size;
    chan_take(ch, buf, n);
    if (n > 0)
        pthread_cond_broadcast(&ch->cv); /* a writer blocked on the full channel */
    bool due = ch->want_room && ch->cap - ch->len >= ch->cap / 2;
    if (due)
        ch->want_room = false;
    pthread_mutex_unlock(&ch->mu);
    free(old);
    chan_notify(ch, due);
    return (ssize_t)n;
}

int srv_chan_write(struct srv_chan *ch, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        pthread_mutex_lock(&ch->mu);
        if (ch->len == ch->cap)
            chan_full(ch);
        while (ch->len == ch->cap && !ch->cancelled && !ch->closed) {
            ch->writer_waiting = true;
            chan_wait(ch);
            ch->writer_waiting = false;
        }
        int rc = ch->cancelled ? -ECANCELED : ch->closed ? -EPIPE : 0;
        if (rc < 0) {
            pthread_mutex_unlock(&ch->mu);
            return rc;
        }
        size_t n = ch->cap - ch->len < len ? ch->cap - ch->len : len;
        chan_give(ch, p, n);
        pthread_cond_broadcast(&ch->cv); /* a reader blocked on the empty channel */
        bool due = ch->want_data;
        ch->want_data = false;
        pthread_mutex_unlock(&ch->mu);
        chan_notify(ch, due);
        p += n;
        len -= n;
    }
    return 0;
}

void srv_chan_wake_fd(struct srv_chan *ch, int fd)
{
    pthread_mutex_lock(&ch->mu);
    ch->wake_fd = fd;
    ch->want_wake = false;
    pthread_mutex_unlock(&ch->mu);
}

ssize_t srv_chan_try_read(struct srv_chan *ch, void *buf, size_t size)
{
    unsigned char *old = NULL;
    pthread_mutex_lock(&ch->mu);
    ssize_t rc;
    bool due = false;
    if (ch->cancelled) {
        rc = -ECANCELED;
    } else if (ch->len == 0 && !ch->closed) {
        old = chan_empty(ch);
        ch->want_wake = true;
        rc = -EAGAIN;
    } else {
        size_t n = ch->len < size ? ch->len : size;
        chan_take(ch, buf, n);
        if (n > 0)
            pthread_cond_broadcast(&ch->cv);
        due = ch->want_room && ch->cap - ch->len >= ch->cap / 2;
        if (due)
            ch->want_room = false;
        rc = (ssize_t)n;
    }
    pthread_mutex_unlock(&ch->mu);
    free(old);
    chan_notify(ch, due);
    return rc;
}

ssize_t srv_chan_try_write(struct srv_chan *ch, const void *buf, size_t len)
{
    pthread_mutex_lock(&ch->mu);
    ssize_t rc;
    bool due = false;
    if (ch->cancelled || ch->closed) {
        rc = ch->cancelled ? -ECANCELED : -EPIPE;
    } else if (ch->len == ch->cap) {
        chan_full(ch);
        ch->want_wake = true;
        rc = -EAGAIN;
    } else {
        size_t n = ch->cap - ch->len < len ? ch->cap - ch->len : len;
        chan_give(ch, buf, n);
        pthread_cond_broadcast(&ch->cv);
        due = ch->want_data;
        ch->want_data = false;
        rc = (ssize_t)n;
    }
    pthread_mutex_unlock(&ch->mu);
    chan_notify(ch, due);
    return rc;
}

size_t srv_chan_put(struct srv_chan *ch, const void *buf, size_t len)
{
    pthread_mutex_lock(&ch->mu);
    size_t n = 0;
    if (!ch->cancelled && !ch->closed) {
        n = ch->cap - ch->len < len ? ch->cap - ch->len : len;
        chan_give(ch, buf, n);
        if (n < len || ch->len == ch->cap) {
            ch->want_room = true;
            chan_full(ch);
        }
        if (n > 0 && ch->len >= ch->cap / 2) {
            if (ch->reader_waiting)
                pthread_cond_signal(&ch->cv);
            chan_wake(ch);
        }
    }
    pthread_mutex_unlock(&ch->mu);
    return n;
}

void srv_chan_push(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    if (ch->len > 0) {
        if (ch->reader_waiting)
            pthread_cond_signal(&ch->cv);
        chan_wake(ch);
    }
    pthread_mutex_unlock(&ch->mu);
}

size_t srv_chan_room(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    size_t room = ch->cancelled || ch->closed ? 0 : ch->cap - ch->len;
    if (room == 0 && !ch->cancelled && !ch->closed) {
        ch->want_room = true;
        chan_full(ch);
    }
    pthread_mutex_unlock(&ch->mu);
    return room;
}

size_t srv_chan_get(struct srv_chan *ch, void *buf, size_t size)
{
    unsigned char *old = NULL;
    pthread_mutex_lock(&ch->mu);
    size_t n = 0;
    if (!ch->cancelled) {
        n = ch->len < size ? ch->len : size;
        chan_take(ch, buf, n);
        if (n > 0 && ch->cap - ch->len >= ch->cap / 2) {
            if (ch->writer_waiting)
                pthread_cond_signal(&ch->cv);
            chan_wake(ch);
        } else if (n == 0 && !ch->closed) {
            ch->want_data = true;
            if (size > 0)
                old = chan_empty(ch);
        }
    }
    pthread_mutex_unlock(&ch->mu);
    free(old);
    return n;
}

bool srv_chan_full_or_arm(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    bool yes = ch->len == ch->cap || ch->closed;
    if (!yes && !ch->cancelled)
        ch->want_data = true;
    pthread_mutex_unlock(&ch->mu);
    return yes;
}

bool srv_chan_at_end(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    bool end = ch->closed && ch->len == 0;
    pthread_mutex_unlock(&ch->mu);
    return end;
}

void srv_chan_close(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    ch->closed = true;
    bool due = ch->want_data;
    ch->want_data = false;
    pthread_cond_broadcast(&ch->cv);
    chan_wake(ch);
    pthread_mutex_unlock(&ch->mu);
    chan_notify(ch, due);
}

void srv_chan_cancel(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    ch->cancelled = true;
    pthread_cond_broadcast(&ch->cv);
    chan_wake(ch);
    pthread_mutex_unlock(&ch->mu);
}

bool srv_chan_cancelled(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    bool c = ch->cancelled;
    pthread_mutex_unlock(&ch->mu);
    return c;
}

size_t srv_chan_len(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    size_t n = ch->len;
    pthread_mutex_unlock(&ch->mu);
    return n;
}

void srv_chan_stalled(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    ch->saw_full = false;
    pthread_mutex_unlock(&ch->mu);
}

void srv_chan_max_set(struct srv_chan *ch, size_t max)
{
    pthread_mutex_lock(&ch->mu);
    ch->max = max > ch->cap ? max : ch->cap;
    pthread_mutex_unlock(&ch->mu);
}

size_t srv_chan_cap(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    size_t cap = ch->cap;
    pthread_mutex_unlock(&ch->mu);
    return cap;
}

unsigned srv_chan_grew(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    unsigned n = ch->grew;
    pthread_mutex_unlock(&ch->mu);
    return n;
}

uint64_t srv_chan_blocked_ns(struct srv_chan *ch)
{
    pthread_mutex_lock(&ch->mu);
    uint64_t ns = ch->blocked_ns;
    pthread_mutex_unlock(&ch->mu);
    return ns;
}
