/*  budget.c — the process's budget of bytes in flight. */
#include "embedflow/budget.h"

#include "embedflow/metrics.h"

struct ef_budget {
    int64_t limit;       /* bytes; 0 = none */
    int64_t used;        /* bytes charged now */
    int64_t peak;        /* most charged at once */
    ef_gauge_t *gauge;   /* embedflow_inflight_bytes, set with the limit */
    ef_counter_t *waits; /* embedflow_inflight_waits_total */
};

static ef_budget_t s_process;

ef_budget_t *
ef_budget_process (void)
{
    return &s_process;
}

static void
s_publish (const ef_budget_t *self)
{
    ef_gauge_t *gauge = __atomic_load_n (&self->gauge, __ATOMIC_ACQUIRE);
    if (gauge)
        ef_gauge_set (gauge, __atomic_load_n (&self->used, __ATOMIC_RELAXED));
}

void
ef_budget_set_limit (ef_budget_t *self, int64_t limit)
{
    __atomic_store_n (&self->limit, limit < 0 ? 0 : limit, __ATOMIC_RELAXED);
    ef_gauge_set (ef_metrics_gauge ("embedflow_inflight_limit_bytes",
                                    "max_inflight_bytes: reading stops while "
                                    "embedflow_inflight_bytes is at it",
                                    NULL),
                  limit);
    __atomic_store_n (&self->waits,
                      ef_metrics_counter ("embedflow_inflight_waits_total",
                                          "reads held back because "
                                          "max_inflight_bytes was spent",
                                          NULL),
                      __ATOMIC_RELEASE);
    __atomic_store_n (&self->gauge,
                      ef_metrics_gauge ("embedflow_inflight_bytes",
                                        "bytes of received rows not yet "
                                        "settled (charged against "
                                        "max_inflight_bytes)",
                                        NULL),
                      __ATOMIC_RELEASE);
    s_publish (self);
}

int64_t
ef_budget_limit (const ef_budget_t *self)
{
    return __atomic_load_n (&self->limit, __ATOMIC_RELAXED);
}

bool
ef_budget_spent (const ef_budget_t *self)
{
    int64_t limit = ef_budget_limit (self);
    return limit > 0
           && __atomic_load_n (&self->used, __ATOMIC_RELAXED) >= limit;
}

bool
ef_budget_fits (const ef_budget_t *self, int64_t n)
{
    int64_t limit = ef_budget_limit (self);
    int64_t used = __atomic_load_n (&self->used, __ATOMIC_RELAXED);
    return limit <= 0 || used <= 0 || used + n <= limit;
}

void
ef_budget_charge (ef_budget_t *self, int64_t n)
{
    int64_t now = __atomic_add_fetch (&self->used, n, __ATOMIC_RELAXED);
    int64_t peak = __atomic_load_n (&self->peak, __ATOMIC_RELAXED);
    while (now > peak
           && !__atomic_compare_exchange_n (&self->peak, &peak, now, true,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    s_publish (self);
}

void
ef_budget_release (ef_budget_t *self, int64_t n)
{
    __atomic_sub_fetch (&self->used, n, __ATOMIC_RELAXED);
    s_publish (self);
}

int64_t
ef_budget_used (const ef_budget_t *self)
{
    return __atomic_load_n (&self->used, __ATOMIC_RELAXED);
}

int64_t
ef_budget_peak (const ef_budget_t *self)
{
    return __atomic_load_n (&self->peak, __ATOMIC_RELAXED);
}

int64_t
ef_budget_share (int64_t *charged, uint64_t unsettled, uint64_t settled)
{
    int64_t share = settled >= unsettled
                        ? *charged
                        : (int64_t) ((double) *charged * (double) settled
                                     / (double) unsettled);
    *charged -= share;
    return share;
}

void
ef_budget_count_wait (ef_budget_t *self)
{
    ef_counter_add (__atomic_load_n (&self->waits, __ATOMIC_ACQUIRE), 1);
}
