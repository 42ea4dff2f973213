/*  backoff.h — the one retry/backoff policy every actor uses.

    Exponential backoff with full jitter: attempt k waits a random time in
    [0, min(cap, base * 2^k)], and the budget bounds the number of retries.
    Plain value type; no allocation.
*/
#ifndef EF_BACKOFF_H
#define EF_BACKOFF_H

#include <stdatomic.h>
#include <stdint.h>

#include "embedflow/export.h"

EF_API_BEGIN

typedef struct {
    int64_t base_ms;  /* first ceiling */
    int64_t cap_ms;   /* largest ceiling */
    int max_attempts; /* retries allowed; < 0 = unlimited */
    int attempt;      /* retries taken so far */
    uint64_t rng;     /* jitter state */
} ef_backoff_t;

/* Returns a policy with zero attempts taken. */
ef_backoff_t ef_backoff_make (int64_t base_ms, int64_t cap_ms,
                              int max_attempts);

/* Returns the delay before the next retry and counts it, or -1 when the
   budget is spent (the caller gives up: dead-letter, fail the start). */
int64_t ef_backoff_next (ef_backoff_t *b);

/* Forgets the attempts after a success. */
void ef_backoff_reset (ef_backoff_t *b);

/* Sleeps for ms unless *stop becomes nonzero first (checked every 50 ms).
   Returns 0 after the full sleep, -1 when stopped. stop may be NULL. */
int ef_backoff_sleep (int64_t ms, const atomic_int *stop);

EF_API_END

#endif
