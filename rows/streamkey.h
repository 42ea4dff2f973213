/*  streamkey.h — the random keys that make acks unforgeable.

    Every upload and pull stream gets 16 random bytes (getrandom(2)) that
    travel with its rows and come back in the acks (pipeline.proto says
    why). The consumer of an acks link settles a tally only when both the
    stream id and the key match a live stream; every other tally is
    dropped and counted here.
*/
#ifndef EF_STREAMKEY_H
#define EF_STREAMKEY_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>

#define EF_STREAM_KEY_LEN 16

/* Fills key with random bytes from the kernel. Returns 0, -1 when the
   kernel gives none (no fallback: a guessable key is worse than none). */
int ef_stream_key_new (uint8_t key[EF_STREAM_KEY_LEN]);

/* True when got is exactly key (compared in constant time). */
bool ef_stream_key_match (const uint8_t key[EF_STREAM_KEY_LEN],
                          ProtobufCBinaryData got);

/* got as a key field of a message: borrowed, valid while key is. */
ProtobufCBinaryData ef_stream_key_field (const uint8_t key[EF_STREAM_KEY_LEN]);

/* Counts one tally on link for a stream that is not running here (a
   forged or misdirected ack, or one for a stream already over) in
   embedflow_acks_unknown_total{link} and warns, at most every 10 s per
   calling thread (with how many were not logged). from is the Ack's
   sender as it claims to be; the rows are never applied. */
void ef_acks_unknown (const char *link, const char *from, uint64_t stream_id,
                      uint64_t rows);

/* Creates embedflow_acks_unknown_total{link} at zero. */
void ef_acks_unknown_init (const char *link);

#endif
