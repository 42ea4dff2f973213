/*  sealplan.h — what the index-sealer's idle builders do next: the
    policy, apart from the SQL that carries it out (postgres/segments.c).

    Builds come first: a sealed segment whose index is missing is what
    queries scan exactly and what holds writers back. A merge (a full
    rebuild of two segments, holding its builder for the time of several
    builds) is started only when no build waits, and only while more than
    max_segments sealed segments would be left once the running merges
    swap. While a load keeps the builders behind, merges wait for a pause
    unless the segments pile up beyond EF_SEAL_LOADING_SEGMENTS times
    max_segments. Each merge takes the two smallest segments no running
    merge has taken, so idle builders merge disjoint pairs side by side.
*/
#ifndef EF_SEALPLAN_H
#define EF_SEALPLAN_H

#include <stdbool.h>
#include <stdint.h>

/* How many times max_segments sealed segments may pile up while a load
   keeps the builders busy before a merge takes a builder from it. */
#define EF_SEAL_LOADING_SEGMENTS 4

/* A sealed segment and its live rows. */
typedef struct {
    int id;       /* segment */
    int64_t rows; /* its live rows */
} ef_seal_segment_t;

/* What one step of the sealer sees; ef_seal_next updates it as it hands
   out work. */
typedef struct {
    int awaiting;             /* segments awaiting an index no builder took */
    int sealed;               /* sealed segments, the merged ones too */
    int merges;               /* merges running: each leaves one fewer */
    bool loading;             /* a load keeps the builders behind */
    int64_t max_segments;     /* index.max_segments */
    ef_seal_segment_t *merge; /* sealed segments no merge took (borrowed) */
    int n_merge;              /* entries of merge */
} ef_seal_view_t;

typedef enum {
    EF_SEAL_IDLE,  /* nothing for this builder */
    EF_SEAL_BUILD, /* build the index of an awaiting segment */
    EF_SEAL_MERGE, /* merge *a and *b */
} ef_seal_work_t;

/* The work of the next idle builder. For EF_SEAL_BUILD it counts one
   awaiting segment as taken; for EF_SEAL_MERGE it takes the two
   smallest of view->merge into *a and *b (a has the fewer rows) and
   counts the merge as running. */
ef_seal_work_t ef_seal_next (ef_seal_view_t *view, ef_seal_segment_t *a,
                             ef_seal_segment_t *b);

#endif
