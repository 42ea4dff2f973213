/*  inflight.h — the chunks of one upload that are not settled yet.

    The receiver keeps, per upload, every chunk it forwarded until all of
    its rows are written or dead-lettered, in the order they were sent.
    When the process's links cross hosts it also keeps the chunks' bytes:
    if a peer goes away, what it held is lost, and the receiver sends
    every kept chunk again, in order, each as a new attempt. Tallies of
    an earlier attempt are ignored, so a row written twice (writes are
    idempotent) is never counted twice, and because every chunk after the
    oldest unsettled one is sent again too, the last version of a
    document is also the last one written.
*/
#ifndef EF_INFLIGHT_H
#define EF_INFLIGHT_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct ef_inflight ef_inflight_t;

/* What a tally or a restart changed. */
typedef struct {
    uint64_t written; /* rows counted as written */
    uint64_t dead;    /* rows counted as dead-lettered */
    int64_t released; /* budget bytes of chunks now settled and dropped */
} ef_settle_t;

/* An empty set; keep_bytes keeps each chunk's bytes for re-sending. NULL
   when out of memory. */
ef_inflight_t *ef_inflight_new (bool keep_bytes);

/* Frees the set and what it keeps; safe on NULL, sets *self_p to NULL. */
void ef_inflight_destroy (ef_inflight_t **self_p);

/* Records chunk seq (rows rows, charged charge budget bytes) as sent now
   (now_us, at link churn `churn`), or with due as not sent yet: it goes
   out with the chunks due after a restart, in order. With keep_bytes a
   copy of body is kept. Returns 0, -1 when out of memory (nothing
   recorded). */
int ef_inflight_add (ef_inflight_t *self, uint64_t seq, uint32_t rows,
                     int64_t charge, zframe_t *body, int64_t now_us,
                     uint64_t churn, bool due);

/* Counts a tally of attempt `attempt` of chunk seq into *out (zeroed
   first). A tally of another attempt, or of a chunk not held, counts
   nothing. Settled chunks at the head are dropped and their charge is
   given in out->released. */
void ef_inflight_settle (ef_inflight_t *self, uint64_t seq, uint32_t attempt,
                         uint64_t written, uint64_t dead, ef_settle_t *out);

/* Makes every held chunk due to be sent again as its next attempt; what
   was counted for them is taken back (*out: written and dead to
   subtract). Returns how many chunks are due (0 without keep_bytes). */
size_t ef_inflight_restart (ef_inflight_t *self, ef_settle_t *out);

/* Takes the next chunk due after a restart: 1 with its seq, attempt,
   rows and a copy of its bytes (the caller's), marked sent at now_us and
   churn; 0 when none is due; -1 when out of memory (it stays due). */
int ef_inflight_next_due (ef_inflight_t *self, uint64_t *seq, uint32_t *attempt,
                          uint32_t *rows, zframe_t **body, int64_t now_us,
                          uint64_t churn);

/* True when no chunk is held. */
bool ef_inflight_empty (const ef_inflight_t *self);

/* The oldest held chunk's last send time and the link churn then; false
   when none is held. */
bool ef_inflight_oldest (const ef_inflight_t *self, int64_t *sent_us,
                         uint64_t *churn);

/* Budget bytes the held chunks are charged. */
int64_t ef_inflight_charged (const ef_inflight_t *self);

/* Chunks held. */
size_t ef_inflight_count (const ef_inflight_t *self);

#endif
