/*  indexreport.h — what `embedflow bench --index.method ...` prints,
    writes as JSON and draws: per writer count the median of each
    contender's runs (bench/indexload.h) and, when all three were
    measured, issue 11's targets (embedflow searchable >= 5x sooner than
    through-index and >= 1.5x sooner than load-then-build, query p95
    during the load <= 3x its p95 at rest).
*/
#ifndef EF_INDEXREPORT_H
#define EF_INDEXREPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench/indexload.h"

/* The index bench's runs and how they were made. */
typedef struct {
    uint64_t rows;                        /* per contender and run */
    int dim;                              /* of the vectors */
    int batch_rows;                       /* rows per transaction */
    int runs;                             /* per contender and writer count */
    const int *writers;                   /* writer counts ... */
    int n_writers;                        /* ... so many */
    const bool *contender;                /* [EF_INDEXLOAD_KINDS]: measured */
    const ef_index_opts_t *index;         /* the index every contender gets */
    const char *vector_type;              /* as configured */
    const char *vectors;                  /* "clustered" or "uniform" rows */
    int64_t build_memory;                 /* maintenance_work_mem, bytes */
    int64_t searchable_rows;              /* embedflow's bound for searchable */
    int queries;                          /* at rest */
    int64_t query_rate;                   /* a second while loading, 0 = back to
                                       back */
    const ef_indexload_result_t *results; /* [kind][max_writers][max_runs] */
    int max_writers;                      /* the layout of results */
    int max_runs;                         /* ... */
    const char *query_log; /* written (EF_INDEXLOAD_LOG_HEADER), or NULL */
} ef_indexreport_t;

/* Prints the table, the targets and what the columns mean to out. */
void ef_indexreport_print (const ef_indexreport_t *r, FILE *out);

/* Writes the parameters, every run, the medians and the targets as JSON
   to path; command is the command line. Returns 0, or -1 (logged). */
int ef_indexreport_json (const ef_indexreport_t *r, const char *path,
                         const char *command);

/* Draws the times until searchable and indexed and the query latencies
   into path (PNG) with gnuplot and, from r->query_log when there is
   one, each query's latency during the load against its time. Returns
   0, or -1. */
int ef_indexreport_plot (const ef_indexreport_t *r, const char *path);

#endif
