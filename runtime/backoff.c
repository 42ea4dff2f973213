/*  backoff.c — exponential backoff with full jitter. */
#include "embedflow/backoff.h"

#include <time.h>

ef_backoff_t
ef_backoff_make (int64_t base_ms, int64_t cap_ms, int max_attempts)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ef_backoff_t b = {
        .base_ms = base_ms > 0 ? base_ms : 1,
        .cap_ms = cap_ms > base_ms ? cap_ms : base_ms,
        .max_attempts = max_attempts,
        .attempt = 0,
        .rng = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 32)
               ^ (uint64_t) (uintptr_t) &b,
    };
    if (b.rng == 0)
        b.rng = 0x9e3779b97f4a7c15ull;
    return b;
}

static uint64_t
s_xorshift (uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int64_t
ef_backoff_next (ef_backoff_t *b)
{
    if (b->max_attempts >= 0 && b->attempt >= b->max_attempts)
        return -1;
    int64_t ceiling = b->base_ms;
    for (int i = 0; i < b->attempt && ceiling < b->cap_ms; i++)
        ceiling *= 2;
    if (ceiling > b->cap_ms)
        ceiling = b->cap_ms;
    b->attempt++;
    /* Full jitter, but never zero: a retry storm against a database that
       just came back is what the jitter is there to avoid. */
    return 1 + (int64_t) (s_xorshift (&b->rng) % (uint64_t) ceiling);
}

void
ef_backoff_reset (ef_backoff_t *b)
{
    b->attempt = 0;
}

int
ef_backoff_sleep (int64_t ms, const atomic_int *stop)
{
    while (ms > 0) {
        if (stop && *stop)
            return -1;
        int64_t step = ms < 50 ? ms : 50;
        struct timespec ts = {.tv_sec = step / 1000,
                              .tv_nsec = (step % 1000) * 1000000};
        nanosleep (&ts, NULL);
        ms -= step;
    }
    return stop && *stop ? -1 : 0;
}
