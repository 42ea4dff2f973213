/*  uuid7.h — UUIDv7 keys (RFC 9562) and UUID text form.

    A UUIDv7 is a 48-bit big-endian Unix millisecond timestamp, the version
    nibble 7, 12 bits of rand_a, the variant bits 10, and 62 bits of
    rand_b. Keys minted in one process are strictly increasing: within one
    millisecond (or if the clock steps back) the 74 bits after the
    timestamp are incremented as one counter (RFC 9562 §6.2, method 2), so
    parallel inserts append to the right edge of the primary-key index.
*/
#ifndef EF_UUID7_H
#define EF_UUID7_H

#include <stdint.h>

/* Mints a UUIDv7 into out. Thread-safe. */
void ef_uuid7_generate (uint8_t out[16]);

/* Parses the canonical 8-4-4-4-12 hex form (either case, optional
   braces, or 32 plain hex digits). Returns 0, -1 when not a UUID. */
int ef_uuid_parse (const char *text, uint8_t out[16]);

/* Writes the canonical lower-case form and a NUL into out. */
void ef_uuid_format (const uint8_t id[16], char out[37]);

/* The version nibble (7 for ours). */
int ef_uuid_version (const uint8_t id[16]);

/* Milliseconds since the epoch stored in a UUIDv7. */
uint64_t ef_uuid7_millis (const uint8_t id[16]);

#endif
