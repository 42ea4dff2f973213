/*  copyenc.h — the one binary COPY encoder of embedding rows.

    Everything that COPies rows into chunk, embedding or a staging table
    (postgres/pgwrite.c, the bench's baselines) encodes them here, so the
    bytes match the schema's vector column whatever its type:

      real[]        PostgreSQL's float4[] (ndim, flags, oid, dims, items)
      vector(dim)   pgvector's vector_recv: int16 dim, int16 0, float4s
      halfvec(dim)  pgvector's halfvec_recv: int16 dim, int16 0, IEEE
                    binary16 values (rounded to nearest, ties to even)

    All numbers are big-endian, as COPY binary wants. A float that halfvec
    cannot hold (|x| rounds past 65504) is refused before anything is
    encoded: ef_vector_check names the element.
*/
#ifndef EF_COPYENC_H
#define EF_COPYENC_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/pipeline.pb-c.h"

/* How vectors are stored. AUTO is a configuration choice only (schema.c
   resolves it); the encoder never sees it. */
typedef enum {
    EF_VECTOR_AUTO,    /* pgvector's vector when available, else real[] */
    EF_VECTOR_REAL,    /* real[] with a CHECK on its length */
    EF_VECTOR_VECTOR,  /* pgvector vector(dim), 4 bytes an element */
    EF_VECTOR_HALFVEC, /* pgvector halfvec(dim), 2 bytes an element */
} ef_vector_type_t;

/* pgvector's limits: what its types hold, and what its HNSW and IVFFlat
   indexes accept (pgvector 0.8: vector 2,000, halfvec 4,000). */
#define EF_VECTOR_MAX_DIM        16000
#define EF_VECTOR_MAX_INDEX_DIM  2000
#define EF_HALFVEC_MAX_INDEX_DIM 4000
#define EF_HALF_MAX              65504.0f /* largest finite binary16 */

/* Parses "auto", "real", "vector" or "halfvec". Returns 0, -1 when text
   is none of them. */
int ef_vector_type_parse (const char *text, ef_vector_type_t *type);

/* The configuration name of type ("auto", "real", ...). */
const char *ef_vector_type_name (ef_vector_type_t type);

/* The tables rows are COPied into. */
typedef enum {
    EF_COPY_CHUNK,           /* <schema>.chunk: new rows */
    EF_COPY_EMBEDDING,       /* <schema>.embedding: new rows */
    EF_COPY_EMBEDDING_KEYED, /* the same, document_id first (citus) */
    EF_COPY_STAGE, /* a staging table: chunk's columns and the vector */
} ef_copy_table_t;

/* Growable byte buffer for COPY data. */
typedef struct {
    char *data; /* bytes */
    size_t len; /* used */
    size_t cap; /* allocated */
    bool oom;   /* an allocation failed; contents are incomplete */
} ef_copybuf_t;

/* Appends n bytes; on out of memory nothing is appended and oom is set
   (every later append is then dropped too). */
void ef_copybuf_put (ef_copybuf_t *b, const void *p, size_t n);
void ef_copybuf_put16 (ef_copybuf_t *b, uint16_t v); /* big-endian */
void ef_copybuf_put32 (ef_copybuf_t *b, uint32_t v); /* big-endian */
void ef_copybuf_put64 (ef_copybuf_t *b, uint64_t v); /* big-endian */
/* A field: int32 length, then the bytes. */
void ef_copybuf_field (ef_copybuf_t *b, const void *p, size_t n);
/* A NULL field (length -1). */
void ef_copybuf_null (ef_copybuf_t *b);
/* A text field of strlen (s) bytes; the server checks the encoding. */
void ef_copybuf_text (ef_copybuf_t *b, const char *s);

/* Empties b and appends the COPY binary header. */
void ef_copybuf_begin (ef_copybuf_t *b);
/* Appends the trailer (-1 field count). */
void ef_copybuf_end (ef_copybuf_t *b);
/* Frees b's bytes and zeroes it; safe twice. */
void ef_copybuf_free (ef_copybuf_t *b);

/* Hands b's bytes to libpq as COPY data and empties b. Returns 0, -1
   when libpq refuses (the connection is gone). */
int ef_copybuf_flush (ef_copybuf_t *b, PGconn *conn);

/* Appends one vector field of n elements as type stores it. A halfvec
   element beyond binary16's range is written as infinity, which the
   server refuses: call ef_vector_check first. */
void ef_copybuf_vector (ef_copybuf_t *b, ef_vector_type_t type, const float *v,
                        size_t n);

/* Appends one tuple of table for r with its content hash (16 bytes), the
   vector encoded as type. */
void ef_copybuf_row (ef_copybuf_t *b, ef_copy_table_t table,
                     ef_vector_type_t type, const Embedflow__V1__Row *r,
                     const uint8_t *hash);

/* Checks that type can store v[0..n) exactly as ef_copybuf_vector
   encodes it: for halfvec every element must round to a finite binary16.
   Returns 0, or -1 with why ("element 17 is 70000: beyond halfvec's
   range (±65504)"). */
int ef_vector_check (ef_vector_type_t type, const float *v, size_t n, char *why,
                     size_t whylen);

/* IEEE binary16 of f, rounded to nearest, ties to even; a finite f too
   large gives infinity, NaN stays NaN. */
uint16_t ef_half_from_float (float f);

/* The float value of binary16 h (exact). */
float ef_half_to_float (uint16_t h);

#endif
