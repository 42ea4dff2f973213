/*  segments.h — an ANN-indexed embedding table loaded at unindexed speed.

    With an index configured (index.method hnsw or ivfflat) and
    index.segments on, <schema>.embedding is partitioned by LIST
    (segment). Writers COPY new rows into the one *growing* segment,
    which has no ANN index: a nearest-neighbour query on embedding scans
    it exactly and reads every other segment through its own index, so a
    row is findable the moment its batch commits. The sealer (actor
    index-sealer) starts a new growing segment once the current one holds
    index.seal_rows rows, builds the ANN index of the old one with one
    bulk CREATE INDEX CONCURRENTLY (far cheaper per row than inserting
    through an index), and merges small sealed segments so queries probe
    few indexes. docs/pgvector.md has the design and the figures.

    <schema>.segment lists them: id (the partition's segment value and
    the suffix of its table, embedding_<id>), state (growing, building,
    sealed), rows (the growing one's as the sealer last read the
    writers' tallies, a sealed one's when it was sealed or merged).
    <schema>.segment_rows holds the tallies: rows each writer session put
    into each segment not sealed yet, written in the batch's own
    transaction.
*/
#ifndef EF_SEGMENTS_H
#define EF_SEGMENTS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "postgres/schema.h"

/* Turns the empty, plain embedding table the first migration made into
   the segmented layout: it becomes segment 1, the growing one, of a new
   partitioned embedding, and <schema>.segment is made. Runs inside the
   migration's transaction. quoted is the quoted schema, dim the
   dimension in decimal, vector the column's type as SQL. Returns 0, or
   -1 with err (the database's error). */
int ef_segments_create (PGconn *conn, const char *quoted, const char *dim,
                        const char *vector, char *err, size_t errlen);

/* 1 when schema is segmented, 0 when not, -1 with err. */
int ef_segments_enabled (PGconn *conn, const char *schema, char *err,
                         size_t errlen);

/* Applies index want (described as ef_index_describe says) to a
   segmented schema: records it, so that segments sealed from now on get
   it, then rebuilds the index of every sealed segment beside the old
   one (CONCURRENTLY) and swaps them, one segment at a time. quoted is
   the quoted schema. A merge running meanwhile may still finish with
   the old index: apply again once it is done (--rebuild). Returns 0, or
   -1 with err. */
int ef_segments_index_apply (PGconn *conn, const char *quoted, int dim,
                             const ef_index_opts_t *want, const char *described,
                             char *err, size_t errlen);

/* Rows of schema's embedding table that no ANN index covers yet: the
   growing segment's as the writers' committed tallies say, and those of
   segments whose index is being built as counted when they were sealed
   (a batch that read the growing segment just before it was sealed
   adds rows the count misses; the build indexes them). 0 when the
   schema is not segmented. Cheap enough to poll. Returns 0, or -1 with
   err (a database error). */
int ef_segments_unindexed (PGconn *conn, const char *schema, int64_t *rows,
                           char *err, size_t errlen);

/* How the sealer keeps the segments. */
typedef struct {
    int64_t seal_rows;    /* a growing segment this full is sealed */
    int64_t seal_idle_ms; /* ... or one with rows that got none this long */
    int64_t max_segments; /* more sealed segments than this are merged */
    int64_t max_unindexed_rows; /* writers wait beyond this (0: never) */
    int64_t build_memory; /* bytes of maintenance_work_mem of each build */
    int build_workers;    /* max_parallel_maintenance_workers of each, or
                             -1 for the server's */
    int dim;              /* the schema's dimension */
} ef_segments_opts_t;

typedef enum {
    EF_SEAL_NOTHING, /* nothing to do now (or another process seals) */
    EF_SEAL_ROTATED, /* a new growing segment; the old one awaits its index */
    EF_SEAL_STARTED, /* a long statement (an index build, a merge) was
                        sent: ef_sealer_poll when ef_sealer_fd is readable */
    EF_SEAL_BUILT,   /* a segment got its ANN index */
    EF_SEAL_MERGED,  /* the two smallest sealed segments became one */
} ef_seal_step_t;

typedef struct ef_sealer ef_sealer_t;

/* What the sealer saw at its last step, for metrics. */
typedef struct {
    int64_t waiting; /* rows without their index: the growing segment and
                        those waiting for or in a build */
    int sealed;      /* sealed segments: indexes a query reads */
    double seconds;  /* duration of the last build or merge that ended */
} ef_seal_stats_t;

/* The sealer of schema. conn counts and rotates the growing segment
   and swaps merges in; each of builds[0..n_builds) runs one index build
   or merge at a time, so that the growing segment is sealed on time
   while builds take minutes, and several segments are indexed at once
   (one core each on the server). All are borrowed: the caller owns them
   and may PQreset conn between steps (a builder is reset here when
   broken). Only one sealer per schema works at a time (a session
   advisory lock on conn); the others stand by. NULL when out of
   memory. */
ef_sealer_t *ef_sealer_new (PGconn *conn, PGconn *const *builds, int n_builds,
                            const char *schema, const ef_segments_opts_t *opts);

/* Frees the sealer (not the connection); NULLs *self_p. */
void ef_sealer_destroy (ef_sealer_t **self_p);

/* Does the next piece of work, if any: rotates the growing segment when
   it is full (or idle with rows), else starts building the index of the
   oldest segment waiting for one (CREATE INDEX CONCURRENTLY: writers
   and queries go on), else starts merging the two smallest sealed
   segments when there are more than max_segments (the merged one is
   copied and indexed beside them, then swapped in within one short
   transaction that locks embedding). Builds and merges take seconds to
   minutes and are not waited for: *did is EF_SEAL_STARTED and
   ef_sealer_poll carries them on; meanwhile steps do nothing. What was
   done goes to *did and a line for people to detail. The first step as
   the working sealer drops what a killed or cancelled one left behind
   (a half-built index, a merge that never swapped). Returns 0, or -1
   with err (a database error: nothing is half-done that a later step
   cannot finish or drop). */
int ef_sealer_step (ef_sealer_t *self, ef_seal_step_t *did, char *detail,
                    size_t detlen, char *err, size_t errlen);

/* What the last step saw, and how long the last build or merge took. */
void ef_sealer_stats (const ef_sealer_t *self, ef_seal_stats_t *stats);

/* The descriptor to watch while builder's build or merge runs, -1 when
   it runs none. */
int ef_sealer_fd (const ef_sealer_t *self, int builder);

/* Carries builder's build or merge on once its ef_sealer_fd is
   readable: *did is
   EF_SEAL_NOTHING while it runs, then EF_SEAL_BUILT or EF_SEAL_MERGED
   (detail saying what and how long). Returns 0, or -1 with err (the
   statement failed; a later step drops what it left). */
int ef_sealer_poll (ef_sealer_t *self, int builder, ef_seal_step_t *did,
                    char *detail, size_t detlen, char *err, size_t errlen);

/* Cancels every build or merge in flight (on stop) and waits for them
   to end: the server drops it or
   leaves what the next sealer's first step drops. */
void ef_sealer_cancel (ef_sealer_t *self);

#endif
