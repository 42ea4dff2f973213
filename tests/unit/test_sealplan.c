/*  The index-sealer's choice of work: builds before merges, no merge
    while a load keeps the builders behind (until the segments pile up),
    the smallest segments merged, disjoint pairs on idle builders. */
#include "ef_test.h"

#include "postgres/sealplan.h"

EF_TEST (sealplan_builds_come_before_merges)
{
    ef_seal_segment_t merge[] = {{1, 900}, {2, 100}, {3, 500},
                                 {4, 50},  {5, 700}, {6, 300}};
    ef_seal_view_t v = {.awaiting = 1,
                        .sealed = 6,
                        .max_segments = 2,
                        .merge = merge,
                        .n_merge = 6};
    ef_seal_segment_t a, b;
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_BUILD);
    EF_CHECK (v.awaiting == 0);
    /* the next idle builder merges the two smallest */
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_MERGE);
    EF_CHECK (a.id == 4 && a.rows == 50 && b.id == 2 && b.rows == 100);
    EF_CHECK (v.merges == 1 && v.n_merge == 4);
}

EF_TEST (sealplan_idle_builders_merge_disjoint_pairs_until_the_bound)
{
    ef_seal_segment_t merge[] = {{1, 900}, {2, 100}, {3, 500},
                                 {4, 50},  {5, 700}, {6, 300}};
    ef_seal_view_t v = {
        .sealed = 6, .max_segments = 3, .merge = merge, .n_merge = 6};
    ef_seal_segment_t a, b, c, d;
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_MERGE);
    EF_CHECK (ef_seal_next (&v, &c, &d) == EF_SEAL_MERGE);
    EF_CHECK (a.id == 4 && b.id == 2 && c.id == 6 && d.id == 3);
    /* two merges leave 4: one more reaches max_segments */
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_MERGE);
    EF_CHECK (a.id == 5 && b.id == 1);
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_IDLE);
    EF_CHECK (v.merges == 3);
}

EF_TEST (sealplan_counts_running_merges_and_needs_a_pair)
{
    ef_seal_segment_t merge[] = {{7, 10}, {8, 20}, {9, 30}};
    /* 5 sealed, two of them taken by a running merge: 4 will be left */
    ef_seal_view_t v = {.sealed = 5,
                        .merges = 1,
                        .max_segments = 4,
                        .merge = merge,
                        .n_merge = 3};
    ef_seal_segment_t a, b;
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_IDLE);
    v.max_segments = 1;
    v.n_merge = 1; /* one free segment cannot be merged with anything */
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_IDLE);
}

EF_TEST (sealplan_a_load_defers_merges_until_segments_pile_up)
{
    ef_seal_segment_t merge[20];
    for (int i = 0; i < 20; i++)
        merge[i] = (ef_seal_segment_t){i + 1, 1000 + i};
    ef_seal_view_t v = {.sealed = 16,
                        .loading = true,
                        .max_segments = 4,
                        .merge = merge,
                        .n_merge = 16};
    ef_seal_segment_t a, b;
    /* 16 = EF_SEAL_LOADING_SEGMENTS x 4: the load keeps both builders */
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_IDLE);
    v.sealed = 17;
    v.n_merge = 17;
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_MERGE);
    EF_CHECK (a.id == 1 && b.id == 2);
    EF_CHECK (ef_seal_next (&v, &a, &b) == EF_SEAL_IDLE);
    /* the load pauses: merges go on down to max_segments */
    v.loading = false;
    int merged = 0;
    while (ef_seal_next (&v, &a, &b) == EF_SEAL_MERGE)
        merged++;
    /* 15 free segments make 7 pairs; what they make is merged again
       once it has swapped in (a later step) */
    EF_CHECK (merged == 7);
    EF_CHECK (v.sealed - v.merges == 9 && v.n_merge == 1);
}
