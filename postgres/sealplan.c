/*  sealplan.c — the index-sealer's choice of work (see sealplan.h).
*/
#include "postgres/sealplan.h"

/* Removes the segment with the fewest rows from set (*n > 0) and
   returns it. */
static ef_seal_segment_t
s_take_smallest (ef_seal_segment_t *set, int *n)
{
    int min = 0;
    for (int i = 1; i < *n; i++)
        if (set[i].rows < set[min].rows)
            min = i;
    ef_seal_segment_t taken = set[min];
    set[min] = set[--*n];
    return taken;
}

ef_seal_work_t
ef_seal_next (ef_seal_view_t *view, ef_seal_segment_t merged[EF_SEAL_MAX_MERGE],
              int *n_merged)
{
    *n_merged = 0;
    if (view->awaiting > 0) {
        view->awaiting--;
        if (view->idle > 0)
            view->idle--;
        return EF_SEAL_BUILD;
    }
    if (view->keep_idle > 0 && view->idle <= view->keep_idle)
        return EF_SEAL_IDLE;
    int64_t left = view->sealed - view->retiring; /* once merges swap */
    int64_t bound = view->loading
                        ? EF_SEAL_LOADING_SEGMENTS * view->max_segments
                        : view->max_segments;
    if (left <= bound || view->n_merge < 2)
        return EF_SEAL_IDLE;
    /* k segments merged leave k - 1 fewer */
    int64_t want = left - bound + 1;
    int64_t rows = 0;
    while (*n_merged < want && *n_merged < EF_SEAL_MAX_MERGE
           && view->n_merge > 0) {
        ef_seal_segment_t next = s_take_smallest (view->merge, &view->n_merge);
        if (*n_merged >= 2 && view->max_merge_rows > 0
            && rows + next.rows > view->max_merge_rows) {
            view->merge[view->n_merge++] = next; /* left for another */
            break;
        }
        rows += next.rows;
        merged[(*n_merged)++] = next;
    }
    view->retiring += *n_merged - 1;
    if (view->idle > 0)
        view->idle--;
    return EF_SEAL_MERGE;
}
