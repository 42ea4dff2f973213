/*  validate.h — the rules a row must pass before it may reach the database.

    Each failed rule has a stable reason code (stored in dead_letter) and a
    sentence for people. Rows are checked one at a time; a bad row never
    affects the good rows of its chunk.
*/
#ifndef EF_VALIDATE_H
#define EF_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/embedding.pb-c.h"

typedef enum {
    EF_ROW_OK = 0,
    EF_ROW_NO_DOCUMENT_ID, /* document_id empty */
    EF_ROW_DOCUMENT_ID_TOO_LONG,
    EF_ROW_EMPTY_VECTOR,
    EF_ROW_WRONG_DIMENSION,
    EF_ROW_NOT_FINITE, /* NaN or infinity in the vector */
    EF_ROW_CONTENT_TOO_LARGE,
    EF_ROW_METADATA_TOO_LARGE,
    EF_ROW_BAD_UUID, /* id given but not a UUID */
    EF_ROW_BAD_TEXT, /* invalid UTF-8, a NUL character, an over-long model */
    EF_ROW_CHUNK_INDEX_RANGE, /* above the database's integer range */
} ef_row_error_t;

typedef struct {
    int64_t dim;                /* required vector length */
    int64_t max_content_bytes;  /* content size limit */
    int64_t max_metadata_bytes; /* metadata, as JSON, size limit */
    int64_t max_document_id_bytes;
    int64_t max_model_bytes; /* model name size limit */
} ef_row_limits_t;

/* Checks e against limits. On EF_ROW_OK, *has_id tells whether e->id was
   given and id holds it parsed. Otherwise why holds a sentence naming the
   rule and the offending value. metadata_json_len is the size of the row's
   metadata rendered as JSON (see ef_metadata_json).
   Text is not checked here: protobuf-c's strings stop at the first NUL,
   so a decoded row may already be cut short. Text is checked on the
   wire bytes (ef_item_text_check, chunkwire.h) before a row is decoded. */
ef_row_error_t ef_row_validate (const Embedflow__V1__Embedding *e,
                                const ef_row_limits_t *limits,
                                size_t metadata_json_len, uint8_t id[16],
                                bool *has_id, char *why, size_t whylen);

/* Stable snake_case code for a reason ("wrong_dimension"). */
const char *ef_row_error_code (ef_row_error_t error);

/* True when s (len bytes) is valid UTF-8 without NUL characters. */
bool ef_text_valid (const char *s, size_t len);

/* The offset of the first byte of s (len bytes) that is a NUL or starts
   invalid UTF-8; len when there is none. */
size_t ef_text_invalid_at (const char *s, size_t len);

/* Renders metadata as a JSON object with keys sorted, so equal maps give
   equal bytes (the content hash depends on it). Returns a heap string
   the caller frees, NULL when out of memory. */
char *ef_metadata_json (Embedflow__V1__Embedding__MetadataEntry *const *entries,
                        size_t n, size_t *len_out);

#endif
