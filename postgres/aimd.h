/*  aimd.h — additive-increase, multiplicative-decrease control of how
    many rows a writer puts in one transaction.

    A writer that finds batches already queued merges them into one
    transaction (group commit), up to the cap this controller keeps.
    After every commit the writer reports the transaction's latency:
    under the target the cap grows by one step (a batch's worth of rows),
    over it the cap halves; it never falls below one step nor rises above
    the maximum. So the cap climbs slowly while the database keeps up and
    backs off at once when commits get slow, like TCP's congestion window.
*/
#ifndef EF_AIMD_H
#define EF_AIMD_H

#include <stddef.h>
#include <stdint.h>

typedef struct ef_aimd ef_aimd_t;

/* A controller aiming at commits of at most target_s seconds, its cap
   between step and max rows (max is raised to step when below it), the
   cap starting at step. NULL when out of memory; step must be at least 1
   and target_s positive (assert). */
ef_aimd_t *ef_aimd_new (double target_s, size_t step, size_t max);

/* Frees the controller and NULLs *self_p; safe twice. */
void ef_aimd_destroy (ef_aimd_t **self_p);

/* Sets the step (the rows of one batch) when it grew: the floor and the
   increase follow, the cap is raised to it if below. A smaller step is
   ignored, so one short batch (the end of a stream) changes nothing. */
void ef_aimd_set_step (ef_aimd_t *self, size_t step);

/* Feeds the latency of one transaction: increases or decreases the cap.
   Returns the new cap. */
size_t ef_aimd_observe (ef_aimd_t *self, double latency_s);

/* Rows one transaction may gather now. */
size_t ef_aimd_cap (const ef_aimd_t *self);

/* How often the cap was increased and decreased so far. */
uint64_t ef_aimd_increases (const ef_aimd_t *self);
uint64_t ef_aimd_decreases (const ef_aimd_t *self);

#endif
