/*  copyenc.c — binary COPY encoding of embedding rows (see copyenc.h).

    Why binary vector formats rather than real[] and the server's cast:
    a float4[] costs the server one call per element to receive plus an
    array-to-vector cast per row, and pgvector refuses a real[] COPied
    into a vector column outright; vector_recv reads the floats in one
    loop.
*/
#include "postgres/copyenc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_type_names[] = {
    [EF_VECTOR_AUTO] = "auto",
    [EF_VECTOR_REAL] = "real",
    [EF_VECTOR_VECTOR] = "vector",
    [EF_VECTOR_HALFVEC] = "halfvec",
};

int
ef_vector_type_parse (const char *text, ef_vector_type_t *type)
{
    for (size_t i = 0; text && i < sizeof s_type_names / sizeof *s_type_names;
         i++)
        if (strcmp (text, s_type_names[i]) == 0) {
            *type = (ef_vector_type_t) i;
            return 0;
        }
    return -1;
}

const char *
ef_vector_type_name (ef_vector_type_t type)
{
    return (unsigned) type < sizeof s_type_names / sizeof *s_type_names
               ? s_type_names[type]
               : "?";
}

/* --- the buffer ---------------------------------------------------------- */

/* Makes room for `more` bytes; sets oom and returns false on failure. */
static bool
s_reserve (ef_copybuf_t *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap < b->len + more)
        cap *= 2;
    char *data = realloc (b->data, cap);
    if (!data) {
        b->oom = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

static inline void
s_be16 (char *p, uint16_t v)
{
    p[0] = (char) (v >> 8);
    p[1] = (char) v;
}

static inline void
s_be32 (char *p, uint32_t v)
{
    p[0] = (char) (v >> 24);
    p[1] = (char) (v >> 16);
    p[2] = (char) (v >> 8);
    p[3] = (char) v;
}

void
ef_copybuf_put (ef_copybuf_t *b, const void *p, size_t n)
{
    if (n && s_reserve (b, n)) {
        memcpy (b->data + b->len, p, n);
        b->len += n;
    }
}

void
ef_copybuf_put16 (ef_copybuf_t *b, uint16_t v)
{
    if (s_reserve (b, 2)) {
        s_be16 (b->data + b->len, v);
        b->len += 2;
    }
}

void
ef_copybuf_put32 (ef_copybuf_t *b, uint32_t v)
{
    if (s_reserve (b, 4)) {
        s_be32 (b->data + b->len, v);
        b->len += 4;
    }
}

void
ef_copybuf_put64 (ef_copybuf_t *b, uint64_t v)
{
    ef_copybuf_put32 (b, (uint32_t) (v >> 32));
    ef_copybuf_put32 (b, (uint32_t) v);
}

void
ef_copybuf_field (ef_copybuf_t *b, const void *p, size_t n)
{
    ef_copybuf_put32 (b, (uint32_t) n);
    ef_copybuf_put (b, p, n);
}

void
ef_copybuf_null (ef_copybuf_t *b)
{
    ef_copybuf_put32 (b, 0xFFFFFFFFu);
}

void
ef_copybuf_text (ef_copybuf_t *b, const char *s)
{
    ef_copybuf_field (b, s, strlen (s));
}

static const char s_copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";

void
ef_copybuf_begin (ef_copybuf_t *b)
{
    b->len = 0;
    ef_copybuf_put (b, s_copy_header, sizeof s_copy_header);
}

void
ef_copybuf_end (ef_copybuf_t *b)
{
    ef_copybuf_put16 (b, 0xFFFF);
}

void
ef_copybuf_free (ef_copybuf_t *b)
{
    free (b->data);
    memset (b, 0, sizeof *b);
}

int
ef_copybuf_flush (ef_copybuf_t *b, PGconn *conn)
{
    if (b->len == 0)
        return 0;
    int rc = PQputCopyData (conn, b->data, (int) b->len);
    b->len = 0;
    return rc == 1 ? 0 : -1;
}

/* --- half floats --------------------------------------------------------- */

uint16_t
ef_half_from_float (float f)
{
    uint32_t x;
    memcpy (&x, &f, 4);
    uint16_t sign = (uint16_t) ((x >> 16) & 0x8000);
    uint32_t exp = (x >> 23) & 0xFF;
    uint32_t man = x & 0x7FFFFF;
    if (exp == 0xFF) /* infinity, or NaN kept quiet with its top bits */
        return sign | 0x7C00 | (man ? 0x200 | (uint16_t) (man >> 13) : 0);
    int e = (int) exp - 127 + 15;
    if (e >= 31)
        return sign | 0x7C00;
    if (e >= 1) {
        /* normal: keep 10 of 23 mantissa bits; a carry out of the
           mantissa moves into the exponent, up to infinity, as it should */
        uint32_t h = ((uint32_t) e << 10) | (man >> 13);
        uint32_t rest = man & 0x1FFF;
        if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
            h++;
        return sign | (uint16_t) h;
    }
    /* subnormal: the value is m * 2^-24; below 2^-25 it rounds to 0 */
    uint32_t shift = 126 - exp; /* >= 14 */
    if (shift > 25)
        return sign;
    uint32_t full = man | 0x800000;
    uint32_t h = full >> shift;
    uint32_t rest = full & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (h & 1)))
        h++; /* may become the smallest normal, 0x400: still right */
    return sign | (uint16_t) h;
}

float
ef_half_to_float (uint16_t h)
{
    uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    float f;
    if (exp == 0) {
        f = ldexpf ((float) man, -24);
        return sign ? -f : f;
    }
    uint32_t x = exp == 31 ? sign | 0x7F800000 | (man << 13)
                           : sign | ((exp - 15 + 127) << 23) | (man << 13);
    memcpy (&f, &x, 4);
    return f;
}

/* --- vectors and rows ---------------------------------------------------- */

int
ef_vector_check (ef_vector_type_t type, const float *v, size_t n, char *why,
                 size_t whylen)
{
    if (type != EF_VECTOR_HALFVEC)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((ef_half_from_float (v[i]) & 0x7C00) == 0x7C00) {
            snprintf (why, whylen,
                      "element %zu is %.9g: beyond halfvec's range (±65504)", i,
                      (double) v[i]);
            return -1;
        }
    return 0;
}

void
ef_copybuf_vector (ef_copybuf_t *b, ef_vector_type_t type, const float *v,
                   size_t n)
{
    if (type == EF_VECTOR_VECTOR || type == EF_VECTOR_HALFVEC) {
        size_t each = type == EF_VECTOR_VECTOR ? 4 : 2;
        size_t size = 4 + each * n;
        ef_copybuf_put32 (b, (uint32_t) size);
        if (!s_reserve (b, size))
            return;
        char *p = b->data + b->len;
        s_be16 (p, (uint16_t) n);
        s_be16 (p + 2, 0); /* vector_recv insists on 0 ("unused") */
        p += 4;
        for (size_t i = 0; i < n; i++, p += each) {
            if (type == EF_VECTOR_VECTOR) {
                uint32_t bits;
                memcpy (&bits, &v[i], 4);
                s_be32 (p, bits);
            }
            else
                s_be16 (p, ef_half_from_float (v[i]));
        }
        b->len += size;
        return;
    }
    /* float4[]: ndim, has-nulls flag, element type oid, then per
       dimension (size, lower bound), then per element (length, value) */
    size_t size = n ? 20 + 8 * n : 12;
    ef_copybuf_put32 (b, (uint32_t) size);
    if (!s_reserve (b, size))
        return;
    char *p = b->data + b->len;
    s_be32 (p, n ? 1 : 0);
    s_be32 (p + 4, 0);
    s_be32 (p + 8, 700); /* FLOAT4OID */
    if (n) {
        s_be32 (p + 12, (uint32_t) n);
        s_be32 (p + 16, 1);
        p += 20;
        for (size_t i = 0; i < n; i++, p += 8) {
            uint32_t bits;
            memcpy (&bits, &v[i], 4);
            s_be32 (p, 4);
            s_be32 (p + 4, bits);
        }
    }
    b->len += size;
}

/* jsonb binary format: version byte 1, then the JSON text. */
static void
s_jsonb (ef_copybuf_t *b, const char *json)
{
    if (!*json)
        json = "{}";
    size_t n = strlen (json);
    ef_copybuf_put32 (b, (uint32_t) (n + 1));
    ef_copybuf_put (b, "\1", 1);
    ef_copybuf_put (b, json, n);
}

/* The columns chunk and staging share, in their order: id, source,
   document_id, chunk_index, content, metadata, model, content_hash. */
static void
s_chunk_columns (ef_copybuf_t *b, const Embedflow__V1__Row *r,
                 const uint8_t *hash)
{
    ef_copybuf_field (b, r->id.data, 16);
    ef_copybuf_text (b, r->source);
    ef_copybuf_text (b, r->document_id);
    ef_copybuf_put32 (b, 8);
    ef_copybuf_put64 (b, r->chunk_index);
    ef_copybuf_text (b, r->content);
    s_jsonb (b, r->metadata_json);
    ef_copybuf_text (b, r->model);
    ef_copybuf_field (b, hash, 16);
}

void
ef_copybuf_row (ef_copybuf_t *b, ef_copy_table_t table, ef_vector_type_t type,
                const Embedflow__V1__Row *r, const uint8_t *hash)
{
    switch (table) {
    case EF_COPY_CHUNK: /* all but updated_at: the transaction's time */
        ef_copybuf_put16 (b, 8);
        s_chunk_columns (b, r, hash);
        break;
    case EF_COPY_EMBEDDING:       /* id, model, dim, vector */
    case EF_COPY_EMBEDDING_KEYED: /* document_id, id, model, dim, vector */
        ef_copybuf_put16 (b, table == EF_COPY_EMBEDDING ? 4 : 5);
        if (table == EF_COPY_EMBEDDING_KEYED)
            ef_copybuf_text (b, r->document_id);
        ef_copybuf_field (b, r->id.data, 16);
        ef_copybuf_text (b, r->model);
        ef_copybuf_put32 (b, 4);
        ef_copybuf_put32 (b, (uint32_t) r->n_vector);
        ef_copybuf_vector (b, type, r->vector, r->n_vector);
        break;
    case EF_COPY_STAGE: /* the chunk columns and the vector */
        ef_copybuf_put16 (b, 9);
        s_chunk_columns (b, r, hash);
        ef_copybuf_vector (b, type, r->vector, r->n_vector);
        break;
    }
}
