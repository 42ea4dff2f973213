/*  The index-sealer's choice of work: builds before merges, no merge
    while a load keeps the builders behind (until the segments pile up),
    the smallest segments merged, as many at once as reach the bound and
    fit one build's memory. */
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
    ef_seal_segment_t m[EF_SEAL_MAX_MERGE];
    int n;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_BUILD);
    EF_CHECK (v.awaiting == 0 && n == 0);
    /* the next idle builder merges the five smallest into one: two
       segments are left, the largest and the merged one */
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == 5);
    EF_CHECK (m[0].id == 4 && m[0].rows == 50 && m[1].id == 2);
    EF_CHECK (m[2].id == 6 && m[3].id == 3 && m[4].id == 5);
    EF_CHECK (v.retiring == 4 && v.n_merge == 1 && v.merge[0].id == 1);
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
}

EF_TEST (sealplan_a_merge_takes_no_more_rows_than_a_build_holds)
{
    ef_seal_segment_t merge[] = {{1, 900}, {2, 100}, {3, 500},
                                 {4, 50},  {5, 700}, {6, 300}};
    ef_seal_view_t v = {.sealed = 6,
                        .max_segments = 3,
                        .merge = merge,
                        .n_merge = 6,
                        .max_merge_rows = 500};
    ef_seal_segment_t m[EF_SEAL_MAX_MERGE];
    int n;
    /* four would reach the bound; 500 rows hold three */
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == 3 && m[0].id == 4 && m[1].id == 2 && m[2].id == 6);
    EF_CHECK (v.retiring == 2 && v.n_merge == 3);
    /* another idle builder merges the rest: two always, even too big */
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == 2 && m[0].id == 3 && m[1].id == 5);
    EF_CHECK (v.retiring == 3);
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
}

EF_TEST (sealplan_counts_retiring_segments_and_needs_a_pair)
{
    ef_seal_segment_t merge[] = {{7, 10}, {8, 20}, {9, 30}};
    /* 5 sealed, a running merge of two takes one away: 4 will be left */
    ef_seal_view_t v = {.sealed = 5,
                        .retiring = 1,
                        .max_segments = 4,
                        .merge = merge,
                        .n_merge = 3};
    ef_seal_segment_t m[EF_SEAL_MAX_MERGE];
    int n;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
    v.max_segments = 1;
    v.n_merge = 1; /* one free segment cannot be merged with anything */
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
}

EF_TEST (sealplan_a_load_defers_merges_until_segments_pile_up)
{
    ef_seal_segment_t merge[40];
    for (int i = 0; i < 40; i++)
        merge[i] = (ef_seal_segment_t){i + 1, 1000 + i};
    ef_seal_view_t v = {.sealed = 16,
                        .loading = true,
                        .max_segments = 4,
                        .merge = merge,
                        .n_merge = 16};
    ef_seal_segment_t m[EF_SEAL_MAX_MERGE];
    int n;
    /* 16 = EF_SEAL_LOADING_SEGMENTS x 4: the load keeps both builders */
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
    v.sealed = 17;
    v.n_merge = 17;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == 2 && m[0].id == 1 && m[1].id == 2);
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
    /* the load pauses: one merge of the 13 smallest free segments
       brings the 16 left down to max_segments */
    v.loading = false;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == 13 && m[0].id == 3 && m[12].id == 15);
    EF_CHECK (v.sealed - v.retiring == 4 && v.n_merge == 2);
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE);
    /* and no merge takes more than EF_SEAL_MAX_MERGE */
    ef_seal_view_t w = {
        .sealed = 40, .max_segments = 1, .merge = merge, .n_merge = 40};
    EF_CHECK (ef_seal_next (&w, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == EF_SEAL_MAX_MERGE && w.retiring == EF_SEAL_MAX_MERGE - 1);
}

EF_TEST (sealplan_merges_leave_a_builder_to_growing_rows)
{
    ef_seal_segment_t merge[] = {{1, 900}, {2, 100}, {3, 500},
                                 {4, 50},  {5, 700}, {6, 300}};
    /* after a load: rows in the growing segment, two builders idle, more
       segments than a merge that fits memory can take */
    ef_seal_view_t v = {.sealed = 6,
                        .max_segments = 2,
                        .merge = merge,
                        .n_merge = 6,
                        .max_merge_rows = 700,
                        .idle = 2,
                        .keep_idle = 1};
    ef_seal_segment_t m[EF_SEAL_MAX_MERGE];
    int n;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE);
    EF_CHECK (n == 3 && v.idle == 1); /* 50 + 100 + 300 fit 700 */
    /* the other one stays for the growing rows, once they are sealed */
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_IDLE && n == 0);
    v.awaiting = 1;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_BUILD);
    EF_CHECK (v.idle == 0);
    /* with no rows growing both builders may merge */
    v.idle = 1;
    v.keep_idle = 0;
    EF_CHECK (ef_seal_next (&v, m, &n) == EF_SEAL_MERGE && n == 2);
}
