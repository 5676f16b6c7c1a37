/* mod_loop.c - a test module: loops until its job is cancelled (or `ms` milliseconds pass, when
 * given), looking at host->cancelled every iteration; logs "loop started" first, so a test knows
 * the run is under way, and "loop cancelled" with the iterations when it stops early. */
#include <errno.h>
#include <spindle/module.h>
#include <time.h>

SPINDLE_MODULE_DECLARE;

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size);

static const struct spindle_host *h;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int loop_run(struct spindle_job *job, void *state)
{
    (void)state;
    int64_t ms = h->param(job, 0);
    uint64_t end = ms > 0 ? now_ms() + (uint64_t)ms : UINT64_MAX, n = 0;
    h->log(job, SPINDLE_LOG_INFO, "loop started", (struct spindle_field[]){SPINDLE_INT("ms", ms)},
           1);
    while (now_ms() < end) {
        if (h->cancelled(job)) {
            h->log(job, SPINDLE_LOG_INFO, "loop cancelled",
                   (struct spindle_field[]){SPINDLE_UINT("iterations", n)}, 1);
            return -ECANCELED;
        }
        n++;
    }
    static const char done[] = "{\"done\":true}";
    return h->set_answer(job, done, sizeof(done) - 1, "application/json", SPINDLE_BYTES_STATIC);
}

static const struct spindle_param loop_params[] = {
    {.name = "ms", .type = SPINDLE_PARAM_INT, .min = 0, .max = 600000, .def = 0},
};

static const struct spindle_kind loop_kind = {
    SPINDLE_KIND_HEAD,     .name = "loop", .summary = "loop until cancelled",
    .params = loop_params, .nparams = 1,   .run = loop_run,
};

int spindle_module_init(const struct spindle_host *host, const struct spindle_kind **kind,
                        char *err, size_t err_size)
{
    (void)err;
    (void)err_size;
    h = host;
    *kind = &loop_kind;
    return 0;
}
