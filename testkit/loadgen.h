/*  loadgen.h — the built-in load generator: a gRPC client of
    UploadEmbeddings that streams synthetic but realistic rows.

    Used by `embedflow demo` and `bench`. Rows are a pure function of
    (seed, row number), so two runs with the same options send the same
    bytes. Row r belongs to document r / rows_per_document ("doc-000123")
    with chunk_index r % rows_per_document; content is a sentence or two of
    varied English-like text, metadata {"lang":"en","title":…}, model
    "synthetic-DIM", and a vector of dim finite floats of norm ≈ 1.

    The rows are split into `streams` contiguous ranges, each uploaded by
    its own concurrent UploadEmbeddings call (one thread each). A chunk
    carries chunk_rows items but never more than ~4 MB, so it fits gRPC's
    default receive limit whatever the dimension.
*/
#ifndef EF_LOADGEN_H
#define EF_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

/* How vectors are drawn. */
typedef enum {
    /* like text embeddings: each document on one of 1,000 topics shared
       by every seed, its chunks near each other, the variance falling
       off across components; norm 1 */
    EF_LOADGEN_CLUSTERED = 0,
    /* every component uniform noise (the generator before clustered
       vectors, kept to repeat earlier measurements): no structure for an
       ANN index to find */
    EF_LOADGEN_UNIFORM,
} ef_loadgen_vectors_t;

typedef struct {
    const char *target;    /* "127.0.0.1:50051" */
    uint64_t rows;         /* total rows */
    int dim;               /* floats per vector (> 0) */
    int chunk_rows;        /* items per EmbeddingChunk; 0 = 256 */
    int streams;           /* concurrent uploads; 0 = 1 */
    int rows_per_document; /* chunk_index runs 0..this-1; 0 = 8 */
    const char *source;    /* metadata embedflow-source; NULL = none */
    uint64_t seed;         /* deterministic data */
    ef_loadgen_vectors_t vectors;
    int64_t timeout_ms; /* deadline of each upload; 0 = none */
} ef_loadgen_opts_t;

typedef struct {
    uint64_t received; /* summed over the UploadResults */
    uint64_t written;
    uint64_t dead_lettered;
    double seconds;     /* first call to last reply */
    int failed_streams; /* uploads that did not end with status OK */
    char error[256];    /* the first failure, "" when none */
} ef_loadgen_result_t;

/* Uploads opts->rows rows to opts->target and fills res. rows_sent, when
   not NULL, counts rows handed to gRPC so far (updated atomically, for a
   progress display). Returns 0 when every upload ended with status OK,
   -1 otherwise (res->error says which and why). */
int ef_loadgen_run (const ef_loadgen_opts_t *opts, ef_loadgen_result_t *res,
                    volatile uint64_t *rows_sent);

/* Encodes rows [first, first + count) as one EmbeddingChunk with the given
   seq: the exact bytes ef_loadgen_run sends. Returns a malloc'd buffer
   (size in *size) the caller frees, or NULL when out of memory. */
uint8_t *ef_loadgen_encode_chunk (const ef_loadgen_opts_t *opts, uint64_t first,
                                  int count, uint64_t seq, size_t *size);

/* One encoded EmbeddingChunk for ef_loadgen_send. */
typedef struct {
    const uint8_t *data; /* EmbeddingChunk bytes (borrowed) */
    size_t size;         /* bytes */
    uint32_t rows;       /* items in it */
} ef_loadgen_chunk_t;

/* Uploads chunks[0..n) in order as one UploadEmbeddings call to
   opts->target, with opts->source and opts->timeout_ms (the other options
   are not used), and fills res. Returns 0 when the call ended OK with
   every row settled, -1 otherwise (res->error says why). */
int ef_loadgen_send (const ef_loadgen_opts_t *opts,
                     const ef_loadgen_chunk_t *chunks, size_t n,
                     ef_loadgen_result_t *res);

/* "clustered" or "uniform". */
const char *ef_loadgen_vectors_name (ef_loadgen_vectors_t vectors);

/* Parses "clustered" or "uniform" into *out. Returns 0, or -1 for
   anything else (*out untouched). */
int ef_loadgen_vectors_parse (const char *text, ef_loadgen_vectors_t *out);

/* Rows per chunk that ef_loadgen_run uses for these options. */
int ef_loadgen_chunk_rows (const ef_loadgen_opts_t *opts);

#endif
