/*  fuzz_chunk.c — an uploaded EmbeddingChunk, as the grpc-receiver
    reads it from the network.

    The bytes are one gRPC message. The receiver scans it on the wire
    before anything is decoded (pipeline/chunkwire.c: the item count and
    decoded size are bounded there), then walks the items and checks
    every text field to its full protobuf length. */
#include "fuzz.h"

#include <string.h>

#include "embedflow/log.h"
#include "pipeline/chunkwire.h"

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
    size_t offset = 0, items = 0;
    ef_span_t item;
    int r;
    while ((r = ef_chunk_next_item (data, size, &offset, &item)) == 1) {
        EF_FUZZ_ASSERT (item.data >= data && item.len <= size
                        && (size_t) (item.data - data) <= size - item.len);
        EF_FUZZ_ASSERT (offset <= size);
        char text_why[256];
        ef_item_text_check (item.data, item.len, text_why, sizeof text_why);
        items++;
    }
    /* A message the scan took walks to its end, item by item. */
    EF_FUZZ_ASSERT (r == 0);
    EF_FUZZ_ASSERT (items == shape.items);
    return 0;
}
