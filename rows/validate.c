/*  validate.c — row validation and canonical metadata JSON. */
#include "rows/validate.h"

#include "rows/uuid7.h"

#include "embedflow/buf.h"
#include "embedflow/utf8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_codes[] = {
    [EF_ROW_OK] = "ok",
    [EF_ROW_NO_DOCUMENT_ID] = "missing_document_id",
    [EF_ROW_DOCUMENT_ID_TOO_LONG] = "document_id_too_long",
    [EF_ROW_EMPTY_VECTOR] = "empty_vector",
    [EF_ROW_WRONG_DIMENSION] = "wrong_dimension",
    [EF_ROW_NOT_FINITE] = "not_finite",
    [EF_ROW_CONTENT_TOO_LARGE] = "content_too_large",
    [EF_ROW_METADATA_TOO_LARGE] = "metadata_too_large",
    [EF_ROW_BAD_UUID] = "bad_uuid",
    [EF_ROW_BAD_TEXT] = "bad_text",
    [EF_ROW_CHUNK_INDEX_RANGE] = "chunk_index_out_of_range",
};

const char *
ef_row_error_code (ef_row_error_t error)
{
    return (size_t) error < sizeof s_codes / sizeof s_codes[0] ? s_codes[error]
                                                               : "unknown";
}

size_t
ef_text_invalid_at (const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t i = 0, n;
    while (i < len) {
        /* ASCII without NUL, the common text, 8 bytes at a time: no
           byte has its top bit set and none is 0 */
        while (i + 8 <= len) {
            const uint64_t hi = 0x8080808080808080u, lo = 0x0101010101010101u;
            uint64_t x;
            memcpy (&x, p + i, 8);
            /* (x | hi) - lo keeps a byte's top bit unless the byte is 0 */
            if ((x & hi) != 0 || (((x | hi) - lo) & hi) != hi)
                break;
            i += 8;
        }
        /* PostgreSQL text cannot hold NUL */
        if (i == len || p[i] == 0 || (n = ef_utf8_seq (p + i, len - i)) == 0)
            break;
        i += n;
    }
    return i;
}

bool
ef_text_valid (const char *s, size_t len)
{
    return ef_text_invalid_at (s, len) == len;
}

/* True when no element of v is NaN or infinite (all exponent bits
   set). Blocks of a fixed 16 elements without a branch, which the
   compiler turns into vector instructions: a per-element isfinite test
   and early exit cost more than the rest of the row's checks. */
static bool
s_all_finite (const float *v, size_t n)
{
    enum { BLOCK = 16 };
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        uint32_t bits[BLOCK];
        memcpy (bits, v + i, sizeof bits);
        for (int k = 0; k < BLOCK; k++)
            bad |= (bits[k] & 0x7F800000u) == 0x7F800000u;
    }
    for (; i < n; i++) {
        uint32_t bits;
        memcpy (&bits, v + i, sizeof bits);
        bad |= (bits & 0x7F800000u) == 0x7F800000u;
    }
    return bad == 0;
}

ef_row_error_t
ef_row_validate (const Embedflow__V1__Embedding *e,
                 const ef_row_limits_t *limits, size_t metadata_json_len,
                 uint8_t id[16], bool *has_id, char *why, size_t whylen)
{
    *has_id = false;
    size_t doc_len = e->document_id ? strlen (e->document_id) : 0;
    if (doc_len == 0) {
        snprintf (why, whylen, "document_id is missing");
        return EF_ROW_NO_DOCUMENT_ID;
    }
    if ((int64_t) doc_len > limits->max_document_id_bytes) {
        snprintf (why, whylen, "document_id is %zu bytes, the limit is %lld",
                  doc_len, (long long) limits->max_document_id_bytes);
        return EF_ROW_DOCUMENT_ID_TOO_LONG;
    }
    if (e->chunk_index > INT32_MAX) {
        snprintf (why, whylen, "chunk_index %u is above %d", e->chunk_index,
                  INT32_MAX);
        return EF_ROW_CHUNK_INDEX_RANGE;
    }
    if (e->n_vector == 0) {
        snprintf (why, whylen, "vector is empty");
        return EF_ROW_EMPTY_VECTOR;
    }
    if ((int64_t) e->n_vector != limits->dim) {
        snprintf (why, whylen, "vector has %zu dimensions, expected %lld",
                  e->n_vector, (long long) limits->dim);
        return EF_ROW_WRONG_DIMENSION;
    }
    if (!s_all_finite (e->vector, e->n_vector))
        for (size_t i = 0; i < e->n_vector; i++)
            if (!isfinite (e->vector[i])) {
                snprintf (why, whylen, "vector[%zu] is %s", i,
                          isnan (e->vector[i]) ? "NaN" : "infinite");
                return EF_ROW_NOT_FINITE;
            }
    size_t content_len = e->content ? strlen (e->content) : 0;
    if ((int64_t) content_len > limits->max_content_bytes) {
        snprintf (why, whylen, "content is %zu bytes, the limit is %lld",
                  content_len, (long long) limits->max_content_bytes);
        return EF_ROW_CONTENT_TOO_LARGE;
    }
    size_t model_len = e->model ? strlen (e->model) : 0;
    if ((int64_t) model_len > limits->max_model_bytes) {
        snprintf (why, whylen, "model is %zu bytes, the limit is %lld",
                  model_len, (long long) limits->max_model_bytes);
        return EF_ROW_BAD_TEXT;
    }
    if ((int64_t) metadata_json_len > limits->max_metadata_bytes) {
        snprintf (why, whylen,
                  "metadata is %zu bytes as JSON, the limit is %lld",
                  metadata_json_len, (long long) limits->max_metadata_bytes);
        return EF_ROW_METADATA_TOO_LARGE;
    }
    if (e->id && *e->id) {
        if (ef_uuid_parse (e->id, id) != 0) {
            snprintf (why, whylen, "id '%.64s' is not a UUID", e->id);
            return EF_ROW_BAD_UUID;
        }
        *has_id = true;
    }
    return EF_ROW_OK;
}

/* --- canonical metadata JSON ------------------------------------------ */

/* Written here, not by jansson: these bytes are hashed into each row's
   content_hash, and jansson escapes control characters differently
   (\n where this writes \u000a), so a change of writer would make every
   stored row with such metadata look changed on its next upload. */

static void
s_put_json_string (ef_buf_t *b, const char *s)
{
    ef_buf_put (b, "\"", 1);
    const unsigned char *p = (const unsigned char *) (s ? s : "");
    while (*p) {
        /* bytes that stand for themselves go in one run */
        const unsigned char *run = p;
        while (*p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            ef_buf_put (b, run, (size_t) (p - run));
        if (!*p)
            break;
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char) *p;
            ef_buf_put (b, esc, 2);
        }
        else {
            snprintf (esc, sizeof esc, "\\u%04x", *p);
            ef_buf_put (b, esc, 6);
        }
        p++;
    }
    ef_buf_put (b, "\"", 1);
}

typedef struct {
    const Embedflow__V1__Embedding__MetadataEntry *entry; /* borrowed */
    size_t order;                                         /* wire position */
} s_slot_t;

/* Orders by key, then wire position, so of repeated keys the last stays
   last (qsort itself is not stable). */
static int
s_slot_cmp (const void *a, const void *b)
{
    const s_slot_t *x = a, *y = b;
    int c = strcmp (x->entry->key ? x->entry->key : "",
                    y->entry->key ? y->entry->key : "");
    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

char *
ef_metadata_json (Embedflow__V1__Embedding__MetadataEntry *const *entries,
                  size_t n, size_t *len_out)
{
    s_slot_t *sorted = NULL;
    if (n) {
        sorted = malloc (n * sizeof *sorted);
        if (!sorted)
            return NULL;
        for (size_t i = 0; i < n; i++)
            sorted[i] = (s_slot_t){entries[i], i};
        qsort (sorted, n, sizeof *sorted, s_slot_cmp);
    }
    ef_buf_t b = {0};
    ef_buf_put (&b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        const char *key = sorted[i].entry->key ? sorted[i].entry->key : "";
        /* A map on the wire may repeat a key; the last one wins, as in
           protobuf's own map semantics. */
        if (i + 1 < n
            && strcmp (key,
                       sorted[i + 1].entry->key ? sorted[i + 1].entry->key : "")
                   == 0)
            continue;
        if (b.len > 1)
            ef_buf_put (&b, ",", 1);
        s_put_json_string (&b, key);
        ef_buf_put (&b, ":", 1);
        s_put_json_string (&b, sorted[i].entry->value);
    }
    ef_buf_put (&b, "}", 1);
    free (sorted);
    return ef_buf_take (&b, len_out);
}
