/*  The AIMD controller of the writers' transaction size: additive
    increase under the target, halving above it, floor and ceiling. */
#include "ef_test.h"

#include "postgres/aimd.h"

#include <stdint.h>

EF_TEST (aimd_grows_by_one_step_under_target)
{
    ef_aimd_t *a = ef_aimd_new (0.2, 100, 1000);
    EF_REQUIRE (a);
    EF_CHECK (ef_aimd_cap (a) == 100);
    EF_CHECK (ef_aimd_observe (a, 0.05) == 200);
    EF_CHECK (ef_aimd_observe (a, 0.2) == 300); /* at the target: fine */
    for (int i = 0; i < 20; i++)
        ef_aimd_observe (a, 0.01);
    EF_CHECK (ef_aimd_cap (a) == 1000); /* never above the maximum */
    EF_CHECK (ef_aimd_increases (a) == 9);
    EF_CHECK (ef_aimd_decreases (a) == 0);
    ef_aimd_destroy (&a);
    EF_CHECK (a == NULL);
    ef_aimd_destroy (&a);
}

EF_TEST (aimd_halves_over_target_never_below_step)
{
    ef_aimd_t *a = ef_aimd_new (0.2, 100, 1000);
    EF_REQUIRE (a);
    for (int i = 0; i < 9; i++)
        ef_aimd_observe (a, 0.1);
    EF_REQUIRE (ef_aimd_cap (a) == 1000);
    EF_CHECK (ef_aimd_observe (a, 0.5) == 500);
    EF_CHECK (ef_aimd_observe (a, 0.5) == 250);
    EF_CHECK (ef_aimd_observe (a, 0.5) == 125);
    EF_CHECK (ef_aimd_observe (a, 0.5) == 100); /* floor: one step */
    EF_CHECK (ef_aimd_observe (a, 9.0) == 100);
    EF_CHECK (ef_aimd_decreases (a) == 4);
    /* and it climbs again, one step at a time */
    EF_CHECK (ef_aimd_observe (a, 0.1) == 200);
    ef_aimd_destroy (&a);
}

EF_TEST (aimd_step_follows_the_largest_batch)
{
    ef_aimd_t *a = ef_aimd_new (1.0, 10, 25);
    EF_REQUIRE (a);
    EF_CHECK (ef_aimd_observe (a, 0.1) == 20);
    EF_CHECK (ef_aimd_observe (a, 0.1) == 25); /* clipped to the maximum */
    ef_aimd_set_step (a, 5);                   /* a short batch: ignored */
    EF_CHECK (ef_aimd_observe (a, 2.0) == 12);
    EF_CHECK (ef_aimd_observe (a, 2.0) == 10);
    ef_aimd_set_step (a, 40); /* bigger than max: max follows */
    EF_CHECK (ef_aimd_cap (a) == 40);
    EF_CHECK (ef_aimd_observe (a, 0.1) == 40);
    EF_CHECK (ef_aimd_observe (a, 2.0) == 40);
    ef_aimd_destroy (&a);
    /* max below step is raised to it; huge values saturate */
    a = ef_aimd_new (1.0, 7, 3);
    EF_REQUIRE (a);
    EF_CHECK (ef_aimd_observe (a, 0.1) == 7);
    ef_aimd_destroy (&a);
    a = ef_aimd_new (1.0, SIZE_MAX / 2 + 1, SIZE_MAX);
    EF_REQUIRE (a);
    EF_CHECK (ef_aimd_observe (a, 0.1) == SIZE_MAX);
    ef_aimd_destroy (&a);
}
