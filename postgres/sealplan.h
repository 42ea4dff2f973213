/*  sealplan.h — what the index-sealer's idle builders do next: the
    policy, apart from the SQL that carries it out (postgres/segments.c).

    Builds come first: a sealed segment whose index is missing is what
    queries scan exactly and what holds writers back. A merge (a full
    rebuild of the segments it takes, holding its builder for the time
    of several builds) is started only when no build waits, and only
    while more than max_segments sealed segments would be left once the
    running merges swap. While a load keeps the builders behind, merges
    wait for a pause unless the segments pile up beyond
    EF_SEAL_LOADING_SEGMENTS times max_segments.

    While rows grow in the growing segment, merges leave a builder idle
    (keep_idle): those rows are sealed sooner or later (full, idle, or at
    a pause) and their build must not wait for a merge. On uniform noise
    a load's last 209 rows waited 115 s for their index while two merges
    held both builders.

    A merge takes the smallest segments no running merge has taken, as
    many as bring what is left down to the bound in one rebuild, as long
    as their rows fit one build's memory. Merging two at a time rebuilt
    every row of a full-size load one and a half times on its way down
    to max_segments; all at once rebuilds each row at most once.
*/
#ifndef EF_SEALPLAN_H
#define EF_SEALPLAN_H

#include <stdbool.h>
#include <stdint.h>

/* How many times max_segments sealed segments may pile up while a load
   keeps the builders busy before a merge takes a builder from it. */
#define EF_SEAL_LOADING_SEGMENTS 4

/* The most segments one merge takes. */
#define EF_SEAL_MAX_MERGE 16

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
    int retiring;             /* sealed segments the running merges will
                                 leave fewer: k - 1 for a merge of k */
    bool loading;             /* a load keeps the builders behind */
    int64_t max_segments;     /* index.max_segments */
    ef_seal_segment_t *merge; /* sealed segments no merge took (borrowed) */
    int n_merge;              /* entries of merge */
    int64_t max_merge_rows;   /* rows whose index fits one build's memory;
                                 0: no limit */
    int idle;                 /* builders idle, the one asking included */
    int keep_idle;            /* builders merges must leave idle: 1 while
                                 rows grow and there are two or more */
} ef_seal_view_t;

typedef enum {
    EF_SEAL_IDLE,  /* nothing for this builder */
    EF_SEAL_BUILD, /* build the index of an awaiting segment */
    EF_SEAL_MERGE, /* merge the segments taken */
} ef_seal_work_t;

/* The work of the next idle builder. Work handed out counts one idle
   builder fewer. For EF_SEAL_BUILD it counts one awaiting segment as
   taken. For EF_SEAL_MERGE it moves the segments to
   merge from view->merge into merged (fewest rows first; *n_merged of
   them, 2 to EF_SEAL_MAX_MERGE: two even when they do not fit
   max_merge_rows) and counts them as retiring. */
ef_seal_work_t ef_seal_next (ef_seal_view_t *view,
                             ef_seal_segment_t merged[EF_SEAL_MAX_MERGE],
                             int *n_merged);

#endif
