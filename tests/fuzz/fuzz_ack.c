/*  fuzz_ack.c — a frame arriving on the acks or pull-acks link.

    The bytes are one frame as the grpc-puller (and the grpc-receiver)
    read it. A frame the decoder takes must be safe to add to a stream's
    counters: no tally may wrap them or turn the in-flight gauge
    negative by itself. */
#include "fuzz.h"

#include <string.h>

#include "rows/linkwire.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char why[256] = "";
    Embedflow__V1__Ack *ack = ef_linkwire_ack (data, size, why, sizeof why);
    if (!ack) {
        EF_FUZZ_ASSERT (why[0] != '\0');
        return 0;
    }
    for (size_t i = 0; i < ack->n_tallies; i++) {
        const Embedflow__V1__StreamTally *t = ack->tallies[i];
        EF_FUZZ_ASSERT (t != NULL);
        /* What the consumers do with it: the settled count and the
           in-flight gauge's step. */
        uint64_t settled = t->written + t->dead_lettered;
        EF_FUZZ_ASSERT (settled >= t->written && settled <= INT64_MAX);
        int64_t step = -(int64_t) settled;
        EF_FUZZ_ASSERT (step <= 0);
    }
    /* Re-encoding what was taken gives an Ack that decodes the same. */
    size_t len = embedflow__v1__ack__get_packed_size (ack);
    uint8_t *buf = malloc (len ? len : 1);
    EF_FUZZ_ASSERT (buf != NULL);
    embedflow__v1__ack__pack (ack, buf);
    Embedflow__V1__Ack *again = ef_linkwire_ack (buf, len, why, sizeof why);
    EF_FUZZ_ASSERT (again && again->n_tallies == ack->n_tallies);
    embedflow__v1__ack__free_unpacked (again, NULL);
    free (buf);
    embedflow__v1__ack__free_unpacked (ack, NULL);
    return 0;
}
