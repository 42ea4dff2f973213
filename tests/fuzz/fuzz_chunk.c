/*  fuzz_chunk.c — an uploaded EmbeddingChunk (or one a pull streams
    back), as the grpc-receiver and the splitter read it.

    The bytes are one gRPC message. The receiver walks it on the wire
    before anything is decoded (ef_chunk_scan: the item count and the
    decoded size are known first); the splitter then takes one item at a
    time, checks its text to its full wire length, decodes it, renders
    its metadata as JSON and validates it. A row dead-lettered later by a
    writer carries that JSON back as a map (ef_linkwire_row_original),
    which must not lose it. */
#include "fuzz.h"

#include <string.h>

#include "embedflow/log.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "rows/chunkwire.h"
#include "rows/linkwire.h"
#include "rows/validate.h"

/* True when span holds the bytes of protobuf-c's string s (absent is
   ""). */
static bool
s_same (ef_span_t span, const char *s)
{
    if (!s)
        s = "";
    return memcmp (s, span.data ? (const char *) span.data : "", span.len) == 0
           && s[span.len] == 0;
}

/* What the splitter does with one item that passed the text check. */
static void
s_take_item (const ef_span_t *item)
{
    Embedflow__V1__Embedding *e =
        embedflow__v1__embedding__unpack (NULL, item->len, item->data);
    /* The splitter reads the common form without protobuf-c: it must
       read exactly what unpack decodes. */
    ef_item_view_t view;
    if (ef_item_view (item->data, item->len, &view) == 1) {
        EF_FUZZ_ASSERT (e != NULL);
        EF_FUZZ_ASSERT (s_same (view.id, e->id));
        EF_FUZZ_ASSERT (s_same (view.document_id, e->document_id));
        EF_FUZZ_ASSERT (s_same (view.content, e->content));
        EF_FUZZ_ASSERT (s_same (view.model, e->model));
        EF_FUZZ_ASSERT (view.chunk_index == e->chunk_index);
        EF_FUZZ_ASSERT (view.vector.len / 4 == e->n_vector);
        EF_FUZZ_ASSERT (e->n_vector == 0
                        || memcmp (view.vector.data, e->vector, view.vector.len)
                               == 0);
        EF_FUZZ_ASSERT (view.n_metadata == e->n_metadata);
        for (size_t k = 0; k < e->n_metadata; k++) {
            EF_FUZZ_ASSERT (s_same (view.keys[k], e->metadata[k]->key));
            EF_FUZZ_ASSERT (s_same (view.values[k], e->metadata[k]->value));
        }
    }
    if (!e)
        return; /* dead-lettered as undecodable_row */
    size_t mlen = 0;
    char *mjson = ef_metadata_json (e->metadata, e->n_metadata, &mlen);
    EF_FUZZ_ASSERT (mjson != NULL && strlen (mjson) == mlen);
    const ef_row_limits_t limits = {4, 1 << 20, 64 << 10, 1024, 256};
    uint8_t id[16];
    bool has_id = false;
    char why[256];
    ef_row_error_t err =
        ef_row_validate (e, &limits, mlen, id, &has_id, why, sizeof why);
    EF_FUZZ_ASSERT (err == EF_ROW_OK || why[0] != '\0');
    EF_FUZZ_ASSERT (ef_row_error_code (err) != NULL);

    Embedflow__V1__Row row = EMBEDFLOW__V1__ROW__INIT;
    row.id.data = id;
    row.id.len = 16;
    row.document_id = e->document_id;
    row.chunk_index = e->chunk_index;
    row.content = e->content;
    row.metadata_json = mjson;
    row.n_vector = e->n_vector;
    row.vector = e->vector;
    row.model = e->model;
    bool lost = true;
    size_t olen = 0;
    uint8_t *orig = ef_linkwire_row_original (&row, &olen, &lost);
    EF_FUZZ_ASSERT (orig != NULL);
    EF_FUZZ_ASSERT (!lost);
    free (orig);
    free (mjson);
    embedflow__v1__embedding__free_unpacked (e, NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    ef_log_set_level (EF_LOG_ERROR);
    ef_chunk_shape_t shape;
    char why[256] = "";
    if (ef_chunk_scan (data, size, &shape, why, sizeof why) != 0) {
        EF_FUZZ_ASSERT (why[0] != '\0');
        return 0;
    }
    /* The scan accepts what protobuf-c accepts, and counts the same. */
    Embedflow__V1__EmbeddingChunk *chunk =
        embedflow__v1__embedding_chunk__unpack (NULL, size, data);
    EF_FUZZ_ASSERT (chunk != NULL);
    EF_FUZZ_ASSERT (chunk->n_items == shape.items && chunk->seq == shape.seq);
    embedflow__v1__embedding_chunk__free_unpacked (chunk, NULL);

    size_t offset = 0, items = 0;
    ef_span_t item;
    int r;
    while ((r = ef_chunk_next_item (data, size, &offset, &item)) == 1) {
        EF_FUZZ_ASSERT (item.len <= size && item.data >= data
                        && (size_t) (item.data - data) <= size - item.len);
        EF_FUZZ_ASSERT (offset <= size);
        char text_why[256] = "";
        if (ef_item_text_check (item.data, item.len, text_why, sizeof text_why)
            == EF_ROW_OK)
            s_take_item (&item);
        else
            EF_FUZZ_ASSERT (text_why[0] != '\0');
        items++;
    }
    /* A message the scan took walks to its end, item by item. */
    EF_FUZZ_ASSERT (r == 0);
    EF_FUZZ_ASSERT (items == shape.items);
    return 0;
}
