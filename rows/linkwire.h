/*  linkwire.h — decoding the messages that arrive on internal links.

    A link may cross hosts (tcp://), so every frame read from one is
    untrusted bytes. These functions are what the actors do with such a
    frame before anything else, kept free of sockets and databases so
    that the unit tests and the fuzz targets (tests/fuzz/) run exactly
    the code the actors run.
*/
#ifndef EF_LINKWIRE_H
#define EF_LINKWIRE_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/pipeline.pb-c.h"

/* Decodes a DeadLetter frame as the DLQ keeps it. A frame that is not a
   DeadLetter is not dropped: it becomes a letter of stage "dlq", reason
   code "undecodable", with the frame's bytes as original, and
   *undecodable is set. Unknown fields numbered 0 (which protobuf-c
   reads but cannot read back once packed) are dropped, so the letter
   survives the spool. Returns the letter (free it with
   embedflow__v1__dead_letter__free_unpacked), NULL only when out of
   memory. */
Embedflow__V1__DeadLetter *
ef_linkwire_dead_letter (const uint8_t *data, size_t len, bool *undecodable);

/* Decodes an Ack frame. Returns the Ack (free it with
   embedflow__v1__ack__free_unpacked), or NULL with why set when the
   bytes are not an Ack or a tally cannot be true: a count or the sum of
   written and dead_lettered past INT64_MAX (the stream counters and the
   in-flight gauge are signed, and no stream holds that many rows). */
Embedflow__V1__Ack *ef_linkwire_ack (const uint8_t *data, size_t len, char *why,
                                     size_t whylen);

/* An Ack being gathered: one tally per sending of a chunk (stream,
   chunk_seq, attempt, stream key), as every actor that settles rows
   reports them back to the receiver or the puller. */
typedef struct {
    Embedflow__V1__StreamTally *tallies; /* heap; stream keys borrowed */
    size_t n;                            /* used */
    size_t cap;                          /* allocated */
} ef_ack_builder_t;

/* The tally of that sending in b, added with zero counts when new. The
   key's bytes are borrowed and must outlive b's message; the pointer is
   good until the next call. NULL when out of memory. */
Embedflow__V1__StreamTally *ef_ack_tally (ef_ack_builder_t *b,
                                          uint64_t stream_id,
                                          uint64_t chunk_seq, uint32_t attempt,
                                          ProtobufCBinaryData key);

/* Packs b's tallies into an Ack from `from` (the actor instance, for
   logs) as a one-frame message, and empties b. NULL when out of memory
   (b emptied all the same). */
zmsg_t *ef_ack_message (ef_ack_builder_t *b, const char *from);

/* Frees b's tallies; b is empty and may be used again. */
void ef_ack_builder_clear (ef_ack_builder_t *b);

/* Decodes a RowBatch frame as a db-writer takes it. Returns the batch
   (free it with embedflow__v1__row_batch__free_unpacked), or NULL with
   why set when the bytes are not a RowBatch. */
Embedflow__V1__RowBatch *ef_linkwire_row_batch (const uint8_t *data, size_t len,
                                                char *why, size_t whylen);

/* Packs row back into the Embedding it came from (id as UUID text,
   metadata_json parsed back into a map) in a heap buffer of *len bytes,
   the `original` of its dead letter. *metadata_lost is set when
   metadata_json is not a flat JSON object of strings (the map is then
   left empty). NULL when out of memory. */
uint8_t *ef_linkwire_row_original (const Embedflow__V1__Row *row, size_t *len,
                                   bool *metadata_lost);

#endif
