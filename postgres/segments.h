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
    sealed), rows (as last counted by the sealer).
*/
#ifndef EF_SEGMENTS_H
#define EF_SEGMENTS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* Rows of schema's embedding table that no ANN index covers yet (the
   growing segment and segments whose index is being built), counted now;
   0 when the schema is not segmented. Returns 0, or -1 with err (a
   database error). */
int ef_segments_unindexed (PGconn *conn, const char *schema, int64_t *rows,
                           char *err, size_t errlen);

#endif
