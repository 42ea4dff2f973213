/*  budget.h — the process's budget of bytes in flight.

    Sources charge what they take in (a message's bytes and what its rows
    take decoded) when they read it, and release it when its rows are
    settled (written or dead-lettered). While the budget is spent they
    stop reading: backpressure reaches the clients instead of memory
    growing with message sizes or stream counts. One budget per process,
    shared by every source actor; updates are atomic.
*/
#ifndef EF_BUDGET_H
#define EF_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "embedflow/export.h"

EF_API_BEGIN

typedef struct ef_budget ef_budget_t;

/* The process's budget; its limit is 0 (none) until set. Never NULL. */
ef_budget_t *ef_budget_process (void);

/* Sets the limit in bytes; 0 means no limit. */
void ef_budget_set_limit (ef_budget_t *self, int64_t limit);
int64_t ef_budget_limit (const ef_budget_t *self);

/* True while what is charged has reached the limit: read nothing more. */
bool ef_budget_spent (const ef_budget_t *self);

/* True when n more bytes fit under the limit, or nothing is charged at
   all (so that one message larger than the whole budget still gets
   through, alone). */
bool ef_budget_fits (const ef_budget_t *self, int64_t n);

/* Charges n bytes. Never fails: a message already read is charged in
   full even when that passes the limit; the next read waits. */
void ef_budget_charge (ef_budget_t *self, int64_t n);

/* Gives back n bytes charged before. */
void ef_budget_release (ef_budget_t *self, int64_t n);

/* Bytes charged now, and the most ever charged at once. */
int64_t ef_budget_used (const ef_budget_t *self);
int64_t ef_budget_peak (const ef_budget_t *self);

/* The part of *charged (bytes held for unsettled rows) that settling
   `settled` of them gives back: a proportional share, all of it once
   every row is settled. Takes it off *charged and returns it. */
int64_t ef_budget_share (int64_t *charged, uint64_t unsettled,
                         uint64_t settled);

/* Counts a read that waited for the budget (exposed as a metric). */
void ef_budget_count_wait (ef_budget_t *self);

EF_API_END

#endif
