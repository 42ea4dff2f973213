/*  baselines.h — the programs `embedflow bench` measures embedflow against.

    Each baseline writes the load generator's rows (the same bytes the
    pipeline receives over gRPC, decoded here) into chunk + embedding of a
    schema made by ef_schema_migrate, so the tables are identical to
    embedflow's, over `connections` connections, each writing a
    contiguous range of whole documents in batches of batch_rows:

      EF_BASELINE_COPY    binary COPY straight into chunk and embedding,
                          one transaction per batch: the ceiling (it
                          cannot update a row that exists)
      EF_BASELINE_STAGED  binary COPY into a temporary staging table, then
                          INSERT … ON CONFLICT DO UPDATE into both tables,
                          one transaction per batch: what a careful
                          hand-written program does
      EF_BASELINE_ROW     one autocommitted INSERT … ON CONFLICT per row and
                          table, parameters as text: what an ORM does

    Rows get a fresh UUIDv7, metadata as canonical JSON and embedflow's
    content hash, exactly what the pipeline stores.
*/
#ifndef EF_BASELINES_H
#define EF_BASELINES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "testkit/loadgen.h"

typedef enum {
    EF_BASELINE_COPY,
    EF_BASELINE_STAGED,
    EF_BASELINE_ROW,
} ef_baseline_t;

typedef struct {
    const char *conninfo;         /* database */
    const char *schema;           /* migrated, empty or preloaded */
    const ef_loadgen_opts_t *gen; /* row data: rows, dim, seed, … */
    uint64_t first;               /* rows [first, first + rows) */
    uint64_t rows;
    int batch_rows;  /* rows per transaction (COPY, STAGED) */
    int connections; /* concurrent connections (>= 1) */
    /* called with rows just committed, from the writing threads */
    void (*progress) (void *arg, uint64_t rows);
    void *progress_arg;
    const atomic_int *stop; /* when not NULL and set: stop early */
} ef_baseline_opts_t;

typedef struct {
    uint64_t rows;        /* rows committed */
    double seconds;       /* first batch to last commit */
    int backend_pids[16]; /* PostgreSQL backends used (up to 16) */
    int n_backend_pids;   /* used */
    char error[512];      /* first failure, "" when none */
} ef_baseline_result_t;

/* Name of a baseline: "copy", "staged", "row". */
const char *ef_baseline_name (ef_baseline_t kind);

/* Runs one baseline. Row latency (batch decoded → committed) is observed
   into the histogram `latency` when not NULL (metrics.h). before_close,
   when not NULL, is called once every connection has finished and
   before they close (the bench reads the backends' CPU there). Returns 0,
   or -1 with res->error set. */
int ef_baseline_run (ef_baseline_t kind, const ef_baseline_opts_t *opts,
                     void *latency, void (*before_close) (void *arg),
                     void *before_close_arg, ef_baseline_result_t *res);

#endif
