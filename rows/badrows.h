/*  badrows.h — how many rows of each upload were bad, and why; decides
    when an upload has sent so many bad rows that it must be ended.

    Without a limit a client could turn a few megabytes of tiny broken
    items into millions of stored dead letters. An upload is ended once
    its bad rows pass both max_bad_rows and max_bad_percent of its rows:
    a few bad rows in a large upload never end it, and neither does a
    small upload that is mostly bad. Streams are forgotten after they
    have been quiet for a while, so the table stays small.
*/
#ifndef EF_BADROWS_H
#define EF_BADROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* reason_code of the dead letter that ends an upload: it covers the rows
   not looked at, and makes the DLQ's ack tell the receiver to end it */
#define EF_DEAD_STREAM_ENDED "too_many_bad_rows"

typedef struct ef_badrows ef_badrows_t;

/* A table with these limits; max_bad_rows 0 means no limit. NULL when out
   of memory. */
ef_badrows_t *ef_badrows_new (uint64_t max_bad_rows, unsigned max_bad_percent);

/* Frees the table; safe on NULL, sets *self_p to NULL. */
void ef_badrows_destroy (ef_badrows_t **self_p);

/* Counts one row of a stream: reason_code NULL for a good row, else the
   reason it was dead-lettered. Returns true when the stream is (now or
   already) over the limit: the row and the rest of the stream must not
   be used. Never fails: when out of memory it counts nothing. */
bool ef_badrows_count (ef_badrows_t *self, uint64_t stream_id,
                       const char *reason_code, int64_t now_us);

/* True when the stream was ended by the limit. */
bool ef_badrows_ended (ef_badrows_t *self, uint64_t stream_id);

/* Writes why the stream was ended ("10001 of 10500 rows were bad:
   wrong_dimension 9000, bad_text 1001"), the most common reasons first. */
void ef_badrows_describe (ef_badrows_t *self, uint64_t stream_id, char *out,
                          size_t outlen);

/* Forgets streams not counted since older_than_us. */
void ef_badrows_forget (ef_badrows_t *self, int64_t older_than_us);

/* Streams known, for tests. */
size_t ef_badrows_size (ef_badrows_t *self);

#endif
