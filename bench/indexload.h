/*  indexload.h — `embedflow bench` with an ANN index: loading into a
    table that must stay searchable, and what a nearest-neighbour query
    costs meanwhile.

    Three contenders write the same rows over the same number of
    connections into freshly made schemas:

      EF_INDEXLOAD_THROUGH  binary COPY (bench/baselines.h) into a table
                            that has its ANN index from the start: every
                            row is inserted through the index, what a
                            user of pgvector does today
      EF_INDEXLOAD_BUILD    binary COPY into the table without an index,
                            then one CREATE INDEX
      EF_INDEXLOAD_EMBEDFLOW
                            the pipeline (the caller's load function) into
                            a schema made with the configured index, so a
                            segmented table (postgres/segments.h) when
                            that is configured

    Every index build is given maintenance_work_mem = build_memory (a
    graph that does not fit is built about twice as slowly). While a
    contender loads and until its rows are all covered by an index, a
    thread on its own connection issues top-10 nearest-neighbour queries
    (`ORDER BY vector <op> $1 LIMIT 10`, the metric's operator),
    query_rate a second as an API server would (0: back to back, which
    on a small machine takes a core from the load it measures); once
    all are indexed and the load is over, `queries` more run at rest,
    and the first recall_queries of them are checked against the exact
    answer (the same query with index scans off). With a query_log every
    query of both phases is one line in it: when it was sent, in seconds
    from its load's start, and how long it took, which tells which
    moments of a load make its slow queries.
*/
#ifndef EF_INDEXLOAD_H
#define EF_INDEXLOAD_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "postgres/schema.h"
#include "testkit/loadgen.h"

typedef enum {
    EF_INDEXLOAD_THROUGH,   /* COPY through the index */
    EF_INDEXLOAD_BUILD,     /* COPY, then CREATE INDEX */
    EF_INDEXLOAD_EMBEDFLOW, /* the pipeline */
} ef_indexload_kind_t;

#define EF_INDEXLOAD_KINDS 3

/* What one contender measured; times in seconds from the load's start. */
typedef struct {
    uint64_t rows;          /* rows in embedding once the load ended */
    double load_s;          /* the load itself, to its last commit */
    double rows_s;          /* rows / load_s */
    double build_s;         /* load-then-build: the CREATE INDEX */
    double searchable_s;    /* until every row is searchable */
    double indexed_s;       /* until every row is covered by an index */
    double settled_s;       /* embedflow: until merges left at most
                               settle_segments sealed segments */
    int64_t unindexed;      /* rows no index covered at the last commit */
    bool indexed_at_start;  /* embedding had an ANN index as the load began */
    bool indexed_at_commit; /* ... and at its last commit */
    int during_n;           /* queries while loading or indexing */
    double during_p50;      /* their latency percentiles */
    double during_p95;      /* ... */
    int rest_n;             /* queries at rest */
    double rest_p50;        /* their latency percentiles */
    double rest_p95;        /* ... */
    double recall;          /* recall@10 at rest, < 0 when not checked */
    char error[512];        /* why it failed, "" when it did not */
} ef_indexload_result_t;

/* The embedflow contender's load: writes gen's rows into schema (made
   and empty) over `writers` connections and returns once every row is
   committed, leaving whatever indexes them in the background running;
   *seconds is the load's own time. Returns 0, or -1 with err. */
typedef int (ef_indexload_load_fn) (void *arg, const char *schema, int writers,
                                    double *seconds, char *err, size_t errlen);
/* Ends what load left running, once every row is indexed and before
   the queries at rest. A load that fails leaves nothing running. */
typedef void (ef_indexload_end_fn) (void *arg);

typedef struct {
    const char *conninfo;                /* database */
    const char *schema;                  /* dropped and made again */
    const ef_schema_opts_t *schema_opts; /* dim, vector type, the index */
    const ef_loadgen_opts_t *gen;        /* the rows */
    int batch_rows;                      /* rows per transaction (COPY) */
    int writers;                         /* connections */
    int64_t build_memory;                /* bytes of maintenance_work_mem */
    int64_t searchable_rows;             /* embedflow: searchable once at most
                                         this many rows await an index */
    int settle_segments;                 /* embedflow: at rest once merges
                                            left at most this many sealed
                                            segments; 0 = right away */
    int queries;                         /* at rest (>= 1) */
    double query_rate;                   /* queries a second while loading;
                                            0 = back to back */
    int recall_queries;                  /* of them, checked; 0 = none */
    ef_indexload_load_fn *load;          /* embedflow's load */
    ef_indexload_end_fn *end;            /* and its end; may be NULL */
    void *load_arg;                      /* for both */
    void (*progress) (void *arg, uint64_t rows); /* COPY's rows committed */
    void *progress_arg;                          /* for progress */
    const atomic_int *stop; /* when not NULL and set: stop early */
    FILE *query_log;        /* borrowed; when not NULL, one line per query
                               (EF_INDEXLOAD_LOG_HEADER) */
    int run;                /* the run's number, for query_log */
} ef_indexload_opts_t;

/* The header line of a query log: its tab-separated columns. */
#define EF_INDEXLOAD_LOG_HEADER                                                \
    "contender\twriters\trun\tphase\tstarted_s\tlatency_ms\n"

/* The contender's name: "through-index", "load-then-build", "embedflow". */
const char *ef_indexload_name (ef_indexload_kind_t kind);

/* The operator of a metric: "<=>", "<->", "<#>". */
const char *ef_indexload_operator (ef_index_metric_t metric);

/* Runs one contender into a fresh opts->schema. Returns 0, or -1 with
   res->error (a database error, pgvector missing or unable to index the
   column, the load failing, an interruption). */
int ef_indexload_run (ef_indexload_kind_t kind, const ef_indexload_opts_t *opts,
                      ef_indexload_result_t *res);

/* The median of every field over n results (each on its own); the flags
   and row count from the first. */
void ef_indexload_median (const ef_indexload_result_t *runs, int n,
                          ef_indexload_result_t *out);

/* r as a JSON object (times in seconds, recall null when not checked),
   NULL when out of memory. */
json_t *ef_indexload_json (const ef_indexload_result_t *r);

#endif
