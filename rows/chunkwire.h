/*  chunkwire.h — an EmbeddingChunk read straight from its wire bytes.

    protobuf-c decodes a whole message at once and turns every string into
    a NUL-terminated copy: a client's bytes then decide how much memory is
    allocated (4,000,000 empty items in 8 MB decode to half a gigabyte),
    and a NUL inside a string silently shortens it ("victim\0x" reads as
    "victim"). These functions walk the bytes instead, without allocating:
    the receiver learns a message's shape (items, what decoding it would
    cost) before anything is decoded, and the splitter takes one item at a
    time and checks its text on the lengths the wire gives.

    The walk accepts what protobuf-c's unpack of the same message accepts
    for the fields embedflow knows (the same wire types, well-formed
    varints, lengths inside the message); unknown fields are skipped as
    protobuf does.
*/
#ifndef EF_CHUNKWIRE_H
#define EF_CHUNKWIRE_H

#include <stddef.h>
#include <stdint.h>

#include "rows/validate.h"

/* A run of bytes inside a message; borrowed, never owned. */
typedef struct {
    const uint8_t *data; /* first byte, NULL when absent */
    size_t len;          /* bytes */
} ef_span_t;

/* What an EmbeddingChunk holds, learned from its bytes. */
typedef struct {
    uint64_t seq;           /* EmbeddingChunk.seq (the last one given) */
    size_t items;           /* Embedding items */
    size_t decoded_bytes;   /* heap protobuf-c would take to unpack it whole */
    ef_span_t resume_token; /* EmbeddingChunk.resume_token, raw */
} ef_chunk_shape_t;

/* Walks the bytes of an EmbeddingChunk and of every item in it. Returns 0
   with shape filled, or -1 when they are not a message protobuf-c would
   decode, with why naming the item and byte offset of the fault. */
int ef_chunk_scan (const uint8_t *buf, size_t len, ef_chunk_shape_t *shape,
                   char *why, size_t whylen);

/* Steps to the next item of a chunk that ef_chunk_scan accepted: *offset
   starts at 0. Returns 1 with *item set to the Embedding's bytes, 0 at the
   end, -1 when the bytes are malformed. */
int ef_chunk_next_item (const uint8_t *buf, size_t len, size_t *offset,
                        ef_span_t *item);

/* Checks every text field of one Embedding's bytes (id, document_id,
   content, model, each metadata key and value) to its full wire length:
   a NUL or invalid UTF-8 anywhere gives EF_ROW_BAD_TEXT with why naming
   the field and the byte. EF_ROW_OK otherwise. */
ef_row_error_t ef_item_text_check (const uint8_t *item, size_t len, char *why,
                                   size_t whylen);

/* Most metadata entries an item view holds. */
#define EF_ITEM_VIEW_ENTRIES 16

/* An Embedding's fields as spans into its bytes; an absent string is
   empty (data NULL, len 0), as protobuf-c's default "". */
typedef struct {
    ef_span_t id;          /* Embedding.id */
    ef_span_t document_id; /* Embedding.document_id */
    ef_span_t content;     /* Embedding.content */
    ef_span_t model;       /* Embedding.model */
    uint32_t chunk_index;  /* Embedding.chunk_index */
    ef_span_t vector;      /* packed little-endian floats, len % 4 == 0 */
    size_t n_metadata;     /* entries in keys and values, wire order */
    ef_span_t keys[EF_ITEM_VIEW_ENTRIES];   /* metadata keys */
    ef_span_t values[EF_ITEM_VIEW_ENTRIES]; /* their values */
} ef_item_view_t;

/* Reads an Embedding's fields without decoding it, when its bytes have
   the common form: each field at most once, the vector packed, at most
   EF_ITEM_VIEW_ENTRIES metadata entries of a key and a value each, a
   chunk_index of at most 5 bytes, no unknown field. Returns 1 with view
   filled: protobuf-c's unpack of the same bytes gives the same fields.
   Returns 0 for any other form (decode it with protobuf-c). */
int ef_item_view (const uint8_t *item, size_t len, ef_item_view_t *view);

/* Finds the last length-delimited field `number` of a message's bytes
   (protobuf's last-one-wins). Returns 1 with *out set, 0 when absent, -1
   when the bytes are malformed. */
int ef_wire_find_bytes (const uint8_t *buf, size_t len, uint32_t number,
                        ef_span_t *out);

/* Writes s (len bytes, any content) into out as printable text: bytes
   below 0x20, 0x7f and bytes of invalid UTF-8 become \xNN, a backslash
   becomes \\. Cut to outlen - 1 with "..." when too long. Always
   NUL-terminates (outlen > 4). */
void ef_text_escape (const uint8_t *s, size_t len, char *out, size_t outlen);

#endif
