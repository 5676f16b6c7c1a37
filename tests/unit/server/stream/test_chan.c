/* test_chan.c - the bounded channel: capacity, blocking both ways, notify, close, cancel, and the
 * worker's calls that never wait (try read/write with a wake descriptor). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "server/stream/stream.h"
#include "tests/suite.h"

int suite_server_stream_chan(void);

#define CAP 1024u

static void notify_post(void *arg)
{
    sem_post(arg);
}

static void test_srv_chan_put_bounded(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    static char big[3 * CAP];
    memset(big, 'x', sizeof(big));
    CU_ASSERT_EQUAL(srv_chan_put(ch, big, sizeof(big)), CAP);
    CU_ASSERT_EQUAL(srv_chan_len(ch), CAP);
    CU_ASSERT_EQUAL(srv_chan_put(ch, big, 1), 0);
    CU_ASSERT_EQUAL(srv_chan_room(ch), 0);
    char out[100];
    CU_ASSERT_EQUAL(srv_chan_get(ch, out, sizeof(out)), sizeof(out));
    CU_ASSERT_EQUAL(srv_chan_room(ch), sizeof(out));
    srv_chan_free(ch);
}

static void test_srv_chan_ring_order(void)
{
    struct srv_chan *ch = srv_chan_new(7, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    unsigned char next = 0, want = 0;
    for (int round = 0; round < 50; round++) {
        unsigned char in[5], out[5];
        for (int i = 0; i < 5; i++)
            in[i] = next++;
        CU_ASSERT_EQUAL_FATAL(srv_chan_put(ch, in, 5), 5);
        CU_ASSERT_EQUAL_FATAL(srv_chan_read(ch, out, 5), 5);
        for (int i = 0; i < 5; i++)
            CU_ASSERT_EQUAL(out[i], want++);
    }
    srv_chan_free(ch);
}

static void test_srv_chan_close_end(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "abc", 3), 3);
    srv_chan_close(ch);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "d", 1), 0);
    CU_ASSERT_EQUAL(srv_chan_write(ch, "d", 1), -EPIPE);
    CU_ASSERT_FALSE(srv_chan_at_end(ch));
    char b[8];
    CU_ASSERT_EQUAL(srv_chan_read(ch, b, sizeof(b)), 3);
    CU_ASSERT_EQUAL(memcmp(b, "abc", 3), 0);
    CU_ASSERT_EQUAL(srv_chan_read(ch, b, sizeof(b)), 0);
    CU_ASSERT_TRUE(srv_chan_at_end(ch));
    srv_chan_free(ch);
}

struct writer {
    struct srv_chan *ch;
    size_t len;
    int rc;
    atomic_bool returned;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    unsigned char *buf = malloc(w->len);
    for (size_t i = 0; buf != NULL && i < w->len; i++)
        buf[i] = (unsigned char)(i * 7);
    w->rc = buf != NULL ? srv_chan_write(w->ch, buf, w->len) : -ENOMEM;
    atomic_store(&w->returned, true);
    free(buf);
    return NULL;
}

/* A write larger than the capacity cannot return before the loop side takes bytes: it blocks
 * on a full channel, and the first write into the empty, armed channel notifies. */
static void test_srv_chan_write_blocks_when_full(void)
{
    sem_t sem;
    sem_init(&sem, 0, 0);
    struct srv_chan *ch = srv_chan_new(CAP, notify_post, &sem);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    unsigned char got[4 * CAP];
    CU_ASSERT_EQUAL(srv_chan_get(ch, got, sizeof(got)), 0); /* arms want_data */
    struct writer w = {.ch = ch, .len = 4 * CAP};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, writer_main, &w), 0);
    sem_wait(&sem); /* the first bytes are in */
    size_t have = 0;
    CU_ASSERT_FALSE(atomic_load(&w.returned));
    while (have < w.len) {
        size_t n = srv_chan_get(ch, got + have, sizeof(got) - have);
        if (n == 0) {
            CU_ASSERT_FALSE(atomic_load(&w.returned));
            sem_wait(&sem); /* armed by the empty get: the writer's next bytes post */
            continue;
        }
        CU_ASSERT_TRUE(n <= CAP);
        have += n;
    }
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(w.rc, 0);
    for (size_t i = 0; i < have; i++)
        CU_ASSERT_EQUAL_FATAL(got[i], (unsigned char)(i * 7));
    srv_chan_free(ch);
    sem_destroy(&sem);
}

struct reader {
    struct srv_chan *ch;
    ssize_t rc;
    char buf[16];
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    r->rc = srv_chan_read(r->ch, r->buf, sizeof(r->buf));
    return NULL;
}

/* A few bytes reach a blocked reader once the loop pushes (a put alone wakes it only at half). */
static void test_srv_chan_read_waits_for_put(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    struct reader r = {.ch = ch};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, reader_main, &r), 0);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "hello", 5), 5);
    srv_chan_push(ch);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(r.rc, 5);
    CU_ASSERT_EQUAL(memcmp(r.buf, "hello", 5), 0);
    srv_chan_free(ch);
}

/* A put that fills half the channel wakes a blocked reader without a push. */
static void test_srv_chan_put_half_wakes(void)
{
    struct srv_chan *ch = srv_chan_new(32, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    struct reader r = {.ch = ch};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, reader_main, &r), 0);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "0123456789abcdef", 16), 16);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(r.rc, 16);
    CU_ASSERT_EQUAL(memcmp(r.buf, "0123456789abcdef", 16), 0);
    srv_chan_free(ch);
}

/* full_or_arm: false and armed below capacity (the next write notifies), true when full. */
static void test_srv_chan_full_or_arm(void)
{
    sem_t sem;
    sem_init(&sem, 0, 0);
    struct srv_chan *ch = srv_chan_new(8, notify_post, &sem);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "abcd", 4), 4);
    CU_ASSERT_FALSE(srv_chan_full_or_arm(ch));
    CU_ASSERT_EQUAL(sem_trywait(&sem), -1);
    CU_ASSERT_EQUAL(srv_chan_write(ch, "efgh", 4), 0);
    CU_ASSERT_EQUAL(sem_trywait(&sem), 0); /* armed: the write notified */
    CU_ASSERT_TRUE(srv_chan_full_or_arm(ch));
    srv_chan_free(ch);
    sem_destroy(&sem);
}

/* A full channel notifies the loop once a read frees half of it, not before. */
static void test_srv_chan_room_notify_half(void)
{
    sem_t sem;
    sem_init(&sem, 0, 0);
    struct srv_chan *ch = srv_chan_new(CAP, notify_post, &sem);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    static char fill[CAP + 1];
    CU_ASSERT_EQUAL(srv_chan_put(ch, fill, sizeof(fill)), CAP); /* short: armed */
    char b[CAP];
    CU_ASSERT_EQUAL(srv_chan_read(ch, b, CAP / 4), CAP / 4);
    CU_ASSERT_EQUAL(sem_trywait(&sem), -1);
    CU_ASSERT_EQUAL(srv_chan_read(ch, b, CAP / 4), CAP / 4);
    CU_ASSERT_EQUAL(sem_trywait(&sem), 0);
    CU_ASSERT_EQUAL(srv_chan_read(ch, b, CAP / 4), CAP / 4);
    CU_ASSERT_EQUAL(sem_trywait(&sem), -1); /* once per arming */
    srv_chan_free(ch);
    sem_destroy(&sem);
}

/* Cancel wakes a reader blocked on an empty channel and a writer blocked on a full one. */
static void test_srv_chan_cancel_wakes_both(void)
{
    sem_t sem;
    sem_init(&sem, 0, 0);
    struct srv_chan *in = srv_chan_new(CAP, NULL, NULL);
    struct srv_chan *out = srv_chan_new(CAP, notify_post, &sem);
    CU_ASSERT_PTR_NOT_NULL_FATAL(in);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    char tmp[1];
    CU_ASSERT_EQUAL(srv_chan_get(out, tmp, 1), 0); /* armed: the writer's first bytes post */
    struct reader r = {.ch = in};
    struct writer w = {.ch = out, .len = 3 * CAP};
    pthread_t tr, tw;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tr, NULL, reader_main, &r), 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&tw, NULL, writer_main, &w), 0);
    sem_wait(&sem);
    CU_ASSERT_FALSE(atomic_load(&w.returned));
    srv_chan_cancel(in);
    srv_chan_cancel(out);
    pthread_join(tr, NULL);
    pthread_join(tw, NULL);
    CU_ASSERT_EQUAL(r.rc, -ECANCELED);
    CU_ASSERT_EQUAL(w.rc, -ECANCELED);
    CU_ASSERT_TRUE(srv_chan_cancelled(in));
    CU_ASSERT_EQUAL(srv_chan_put(in, "x", 1), 0);
    CU_ASSERT_EQUAL(srv_chan_read(in, tmp, 1), -ECANCELED);
    srv_chan_free(in);
    srv_chan_free(out);
    sem_destroy(&sem);
}

/* Many megabytes through a small channel in odd-sized pieces, both sides blocking: every byte
 * arrives once, in order, and the buffer never holds more than its capacity. */
struct pump {
    struct srv_chan *ch;
    size_t total;
    uint64_t sum;
    int rc;
};

static void *pump_reader(void *arg)
{
    struct pump *p = arg;
    unsigned char b[333];
    size_t at = 0;
    for (;;) {
        ssize_t n = srv_chan_read(p->ch, b, sizeof(b));
        if (n <= 0) {
            p->rc = (int)n;
            break;
        }
        for (ssize_t i = 0; i < n; i++, at++) {
            if (b[i] != (unsigned char)(at % 251))
                p->rc = -EIO;
        }
        p->total = at;
    }
    return NULL;
}

static void test_srv_chan_stream_in_order(void)
{
    struct srv_chan *ch = srv_chan_new(4096, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    struct pump p = {.ch = ch};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, pump_reader, &p), 0);
    const size_t total = 8u << 20;
    unsigned char b[1000];
    size_t at = 0;
    while (at < total) {
        size_t n = total - at < sizeof(b) ? total - at : sizeof(b);
        for (size_t i = 0; i < n; i++)
            b[i] = (unsigned char)((at + i) % 251);
        CU_ASSERT_EQUAL_FATAL(srv_chan_write(ch, b, n), 0);
        CU_ASSERT_TRUE(srv_chan_len(ch) <= 4096);
        at += n;
    }
    srv_chan_close(ch);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(p.rc, 0);
    CU_ASSERT_EQUAL(p.total, total);
    srv_chan_free(ch);
}

/* The eventfd's counter, read and reset (0: nothing was written). */
static uint64_t wake_count(int fd)
{
    uint64_t v = 0;
    if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
        return 0;
    return v;
}

static void test_srv_chan_try_read_wakes_on_put(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    CU_ASSERT_FATAL(fd >= 0);
    srv_chan_wake_fd(ch, fd);
    char buf[16];
    CU_ASSERT_EQUAL(srv_chan_put(ch, "ab", 2), 2);
    CU_ASSERT_EQUAL(wake_count(fd), 0); /* nobody was waiting */
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), 2);
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), -EAGAIN);
    CU_ASSERT_EQUAL(wake_count(fd), 0);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "c", 1), 1);
    CU_ASSERT_EQUAL(wake_count(fd), 0); /* below half: the loop's push wakes */
    srv_chan_push(ch);
    CU_ASSERT_EQUAL(wake_count(fd), 1);
    CU_ASSERT_EQUAL(srv_chan_put(ch, "d", 1), 1);
    srv_chan_push(ch);
    CU_ASSERT_EQUAL(wake_count(fd), 0); /* one wake per arming */
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), 2);
    CU_ASSERT_EQUAL(memcmp(buf, "cd", 2), 0);
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), -EAGAIN);
    srv_chan_close(ch);
    CU_ASSERT_EQUAL(wake_count(fd), 1);
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), 0);
    srv_chan_wake_fd(ch, -1);
    close(fd);
    srv_chan_free(ch);
}

static void test_srv_chan_try_write_wakes_on_get(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    CU_ASSERT_FATAL(fd >= 0);
    srv_chan_wake_fd(ch, fd);
    static char big[CAP + 10], out[CAP];
    memset(big, 'y', sizeof(big));
    CU_ASSERT_EQUAL(srv_chan_try_write(ch, big, sizeof(big)), CAP); /* what fits */
    CU_ASSERT_EQUAL(srv_chan_try_write(ch, big, 10), -EAGAIN);
    CU_ASSERT_EQUAL(wake_count(fd), 0);
    CU_ASSERT_EQUAL(srv_chan_get(ch, out, 100), 100);
    CU_ASSERT_EQUAL(wake_count(fd), 0); /* woken once half is free, not per get */
    CU_ASSERT_EQUAL(srv_chan_get(ch, out, CAP / 2), CAP / 2);
    CU_ASSERT_EQUAL(wake_count(fd), 1);
    CU_ASSERT_EQUAL(srv_chan_try_write(ch, big, 10), 10);
    srv_chan_close(ch);
    CU_ASSERT_EQUAL(srv_chan_try_write(ch, big, 10), -EPIPE);
    srv_chan_wake_fd(ch, -1);
    close(fd);
    srv_chan_free(ch);
}

static void test_srv_chan_try_cancel_wakes(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    CU_ASSERT_FATAL(fd >= 0);
    srv_chan_wake_fd(ch, fd);
    char buf[8];
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), -EAGAIN);
    srv_chan_cancel(ch);
    CU_ASSERT_EQUAL(wake_count(fd), 1);
    CU_ASSERT_EQUAL(srv_chan_try_read(ch, buf, sizeof(buf)), -ECANCELED);
    CU_ASSERT_EQUAL(srv_chan_try_write(ch, "x", 1), -ECANCELED);
    /* cleared: later changes write nothing */
    srv_chan_wake_fd(ch, -1);
    srv_chan_cancel(ch);
    CU_ASSERT_EQUAL(wake_count(fd), 0);
    close(fd);
    srv_chan_free(ch);
}

/* Filled by the writer, then drained to empty by the reader: the channel doubles (while empty, so
 * the bytes after it keep their order), up to its max and no further. */
static void test_srv_chan_max_set_grows_when_drained(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    srv_chan_max_set(ch, 4 * CAP);
    static unsigned char in[8 * CAP], out[4 * CAP];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 13);
    size_t want[] = {2 * CAP, 4 * CAP, 4 * CAP};
    for (int round = 0; round < 3; round++) {
        size_t cap = srv_chan_cap(ch);
        CU_ASSERT_EQUAL(srv_chan_put(ch, in, cap / 2), cap / 2);
        CU_ASSERT_EQUAL(srv_chan_get(ch, out, 3), 3); /* the ring wraps below */
        CU_ASSERT_EQUAL(srv_chan_put(ch, in + cap / 2, sizeof(in) - cap / 2),
                        cap - cap / 2 + 3); /* full */
        size_t have = 0, n;
        while ((n = srv_chan_get(ch, out + have, 100)) > 0)
            have += n;
        CU_ASSERT_EQUAL(have, cap);
        CU_ASSERT_EQUAL(memcmp(out, in + 3, cap - 3), 0);
        CU_ASSERT_EQUAL(srv_chan_cap(ch), want[round]); /* the empty get grew it */
    }
    CU_ASSERT_EQUAL(srv_chan_grew(ch), 2);
    CU_ASSERT_EQUAL(srv_chan_put(ch, in, sizeof(in)), 4 * CAP);
    srv_chan_free(ch);
}

/* A writer slower than the reader never fills the channel; a reader slower than the writer never
 * empties it; a reader held up elsewhere says so; a channel without max_set is fixed: none of
 * them grows. */
static void test_srv_chan_max_set_slow_side_keeps_size(void)
{
    struct srv_chan *ch = srv_chan_new(CAP, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    srv_chan_max_set(ch, 4 * CAP);
    static char buf[CAP];
    for (int i = 0; i < 100; i++) { /* slow writer: a little at a time, always taken */
        CU_ASSERT_EQUAL(srv_chan_put(ch, buf, 10), 10);
        CU_ASSERT_EQUAL(srv_chan_get(ch, buf, sizeof(buf)), 10);
        CU_ASSERT_EQUAL(srv_chan_get(ch, buf, sizeof(buf)), 0);
    }
    CU_ASSERT_EQUAL(srv_chan_put(ch, buf, sizeof(buf)), CAP);
    for (int i = 0; i < 100; i++) { /* slow reader: full again before it empties */
        CU_ASSERT_EQUAL(srv_chan_room(ch), 0);
        CU_ASSERT_EQUAL(srv_chan_get(ch, buf, 10), 10);
        CU_ASSERT_EQUAL(srv_chan_put(ch, buf, 10), 10);
    }
    CU_ASSERT_EQUAL(srv_chan_cap(ch), CAP);
    CU_ASSERT_EQUAL(srv_chan_grew(ch), 0);
    /* filled while its reader was held up elsewhere (stalled), then drained: no growth either */
    srv_chan_stalled(ch);
    size_t n;
    while ((n = srv_chan_get(ch, buf, sizeof(buf))) > 0)
        CU_ASSERT(n <= CAP);
    CU_ASSERT_EQUAL(srv_chan_cap(ch), CAP);
    srv_chan_free(ch);

    ch = srv_chan_new(CAP, NULL, NULL); /* fixed */
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    CU_ASSERT_EQUAL(srv_chan_put(ch, buf, sizeof(buf)), CAP);
    CU_ASSERT_EQUAL(srv_chan_room(ch), 0);
    CU_ASSERT_EQUAL(srv_chan_get(ch, buf, sizeof(buf)), CAP);
    CU_ASSERT_EQUAL(srv_chan_get(ch, buf, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(srv_chan_cap(ch), CAP);
    srv_chan_free(ch);
}

/* The worker's blocking read grows the channel too (a writer thread that blocks on it full), and
 * every byte arrives in order across the growths. */
static void test_srv_chan_max_set_grows_under_blocking_read(void)
{
    struct srv_chan *ch = srv_chan_new(64, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ch);
    srv_chan_max_set(ch, 1024);
    struct writer w = {.ch = ch, .len = 256 * 1024};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, writer_main, &w), 0);
    size_t have = 0;
    bool ok = true;
    unsigned char b[100];
    while (have < w.len) {
        ssize_t n = srv_chan_read(ch, b, sizeof(b));
        CU_ASSERT_FATAL(n > 0);
        for (ssize_t i = 0; i < n; i++)
            ok = ok && b[i] == (unsigned char)((have + (size_t)i) * 7);
        have += (size_t)n;
    }
    pthread_join(t, NULL);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(w.rc, 0);
    CU_ASSERT(srv_chan_cap(ch) <= 1024);
    srv_chan_free(ch);
}

int suite_server_stream_chan(void)
{
    static const struct spindle_test tests[] = {
        SPINDLE_TEST(test_srv_chan_put_bounded),
        SPINDLE_TEST(test_srv_chan_ring_order),
        SPINDLE_TEST(test_srv_chan_close_end),
        SPINDLE_TEST(test_srv_chan_write_blocks_when_full),
        SPINDLE_TEST(test_srv_chan_read_waits_for_put),
        SPINDLE_TEST(test_srv_chan_put_half_wakes),
        SPINDLE_TEST(test_srv_chan_full_or_arm),
        SPINDLE_TEST(test_srv_chan_room_notify_half),
        SPINDLE_TEST(test_srv_chan_cancel_wakes_both),
        SPINDLE_TEST(test_srv_chan_stream_in_order),
        SPINDLE_TEST(test_srv_chan_try_read_wakes_on_put),
        SPINDLE_TEST(test_srv_chan_try_write_wakes_on_get),
        SPINDLE_TEST(test_srv_chan_try_cancel_wakes),
        SPINDLE_TEST(test_srv_chan_max_set_grows_when_drained),
        SPINDLE_TEST(test_srv_chan_max_set_slow_side_keeps_size),
        SPINDLE_TEST(test_srv_chan_max_set_grows_under_blocking_read),
    };
    return SPINDLE_SUITE_ADD("server_stream_chan", NULL, NULL, tests);
}
