/*  aimd.c — additive-increase, multiplicative-decrease cap (see aimd.h). */
#include "postgres/aimd.h"

#include <assert.h>
#include <stdlib.h>

struct ef_aimd {
    double target_s;    /* latency above which the cap halves */
    size_t step;        /* additive increase and floor, rows */
    size_t max;         /* ceiling, rows (>= step) */
    size_t cap;         /* current cap, rows */
    uint64_t increases; /* observations that grew the cap */
    uint64_t decreases; /* observations that halved the cap */
};

ef_aimd_t *
ef_aimd_new (double target_s, size_t step, size_t max)
{
    assert (step >= 1 && target_s > 0);
    ef_aimd_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->target_s = target_s;
    self->step = step;
    self->max = max < step ? step : max;
    self->cap = step;
    return self;
}

void
ef_aimd_destroy (ef_aimd_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free (*self_p);
    *self_p = NULL;
}

void
ef_aimd_set_step (ef_aimd_t *self, size_t step)
{
    if (step <= self->step)
        return;
    self->step = step;
    if (self->max < step)
        self->max = step;
    if (self->cap < step)
        self->cap = step;
}

size_t
ef_aimd_observe (ef_aimd_t *self, double latency_s)
{
    if (latency_s <= self->target_s) {
        if (self->cap < self->max) {
            /* Saturating: max - cap cannot overflow, cap + step could. */
            self->cap = self->max - self->cap > self->step
                            ? self->cap + self->step
                            : self->max;
            self->increases++;
        }
    }
    else if (self->cap > self->step) {
        self->cap = self->cap / 2 > self->step ? self->cap / 2 : self->step;
        self->decreases++;
    }
    return self->cap;
}

size_t
ef_aimd_cap (const ef_aimd_t *self)
{
    return self->cap;
}

uint64_t
ef_aimd_increases (const ef_aimd_t *self)
{
    return self->increases;
}

uint64_t
ef_aimd_decreases (const ef_aimd_t *self)
{
    return self->decreases;
}
