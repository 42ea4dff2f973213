/*  batcher.h — re-splits validated rows into per-writer database batches.

    Every row goes to writer route(document_id) so the rows of one document
    are written by one writer, in arrival order. Each writer's pending
    batch is bounded by rows and by bytes, and holds each key
    (document_id, chunk_index) once: a later version of a key from the same
    sending (attempt) of the same chunk of the same stream replaces the
    earlier one in place (last wins) and takes over its count. A later
    version from another stream, chunk or attempt closes the batch first,
    so each row is acknowledged to the chunk and attempt it came in (acks
    and pull checkpoints count per chunk).
*/
#ifndef EF_BATCHER_H
#define EF_BATCHER_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/pipeline.pb-c.h"

typedef struct ef_batcher ef_batcher_t;

/* The writer for document_id among n: a stable hash, the same in every
   process and every run. */
int ef_batcher_route (const char *document_id, int n);

/* NULL when out of memory. max_rows >= 1, max_bytes >= 1. */
ef_batcher_t *ef_batcher_new (int writers, size_t max_rows, size_t max_bytes);
void ef_batcher_destroy (ef_batcher_t **self_p);

/* How the batcher picks a row's writer: route (document_id, writers,
   arg), which must give a document the same writer every time (its rows
   are written in order by one writer); ef_batcher_route unless set. */
void ef_batcher_set_route (ef_batcher_t *self,
                           int (*route) (const char *document_id, int n,
                                         void *arg),
                           void *arg);

/* How the batcher frees a row it holds: protobuf_c_message_free_unpacked
   unless set (a producer that lays a row out in one block sets free). */
void ef_batcher_set_row_free (ef_batcher_t *self,
                              void (*row_free) (Embedflow__V1__Row *));

/* Adds a heap row (freed with the row free function), taking
   ownership and NULLing *row_p. When a batch must be sent before the
   row fits (it is full, or the row's key is pending from another
   stream), the batch is closed and its writer index returned with the
   row already placed in the next batch; call ef_batcher_take for it.
   Returns -1 when nothing is ready. */
int ef_batcher_add (ef_batcher_t *self, Embedflow__V1__Row **row_p);

/* Index of a writer whose pending batch is full, or -1. */
int ef_batcher_full (const ef_batcher_t *self);

/* Packs and empties writer w's closed-or-pending batch into a one-frame
   message (a RowBatch). NULL when it is empty, or out of memory (then
   *rows_out, the row count, is not 0). */
zmsg_t *ef_batcher_take (ef_batcher_t *self, int w, size_t *rows_out);

/* Like ef_batcher_take, but hands the batch over as a heap RowBatch,
   unpacked: for a writer in this process, which would only decode it
   again. Its rows are freed with the row free function, then its rows
   array and itself with free (protobuf_c_message_free_unpacked when the
   rows are the default kind). */
Embedflow__V1__RowBatch *ef_batcher_take_batch (ef_batcher_t *self, int w,
                                                size_t *rows_out);

/* Monotonic µs when writer w's oldest pending row arrived, -1 if empty. */
int64_t ef_batcher_oldest_us (const ef_batcher_t *self, int w);

/* Rows pending for writer w. */
size_t ef_batcher_pending (const ef_batcher_t *self, int w);

/* Approximate bytes a row occupies in a batch. */
size_t ef_batcher_row_bytes (const Embedflow__V1__Row *row);

#endif
