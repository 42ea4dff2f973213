/*  outbox.h — the transactional outbox of cache invalidations.

    A db-writer adds ef_outbox_hook to its ef_pgwrite_t: in the batch's
    own transaction it inserts into <schema>.invalidation_outbox one row
    per distinct (document_id, source) among the rows that changed, so
    the ids commit exactly when the data does. The cache-invalidator
    reads the table, calls the API server and deletes what it delivered
    (ef_outbox_fetch, ef_outbox_delete), or moves it to dead_letter
    after its retry budget (ef_outbox_dead_letter). A crash anywhere in
    between leaves the rows in the table for the next start.
*/
#ifndef EF_OUTBOX_H
#define EF_OUTBOX_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "postgres/pgwrite.h"

typedef struct ef_outbox ef_outbox_t;

/* An outbox in schema. NULL when out of memory. */
ef_outbox_t *ef_outbox_new (const char *schema);

/* Frees the outbox and NULLs *self_p; safe twice. */
void ef_outbox_destroy (ef_outbox_t **self_p);

/* The ef_pgwrite_hook_fn; arg is the ef_outbox_t. Inserts the changed
   rows' document ids. Returns EF_WRITE_OK, or RETRY / ERROR with rep
   filled (the batch then rolls back). */
ef_write_status_t ef_outbox_hook (PGconn *conn, void *arg,
                                  Embedflow__V1__Row *const *rows, size_t n,
                                  const bool *changed, ef_write_report_t *rep);

/* Ids inserted by the hook since the last call (counted before COMMIT,
   so a rolled-back batch may be included: use it as a hint only). */
uint64_t ef_outbox_take_added (ef_outbox_t *self);

/* Outbox rows read for delivery: all of one source, oldest first. */
typedef struct {
    char *source;        /* heap */
    char **document_ids; /* heap, distinct */
    size_t n_ids;        /* used */
    char *row_ids;       /* heap: the rows' ids as an array literal "{..}" */
    size_t rows;         /* outbox rows covered */
} ef_outbox_batch_t;

/* Reads up to max outbox rows of the oldest row's source into batch.
   Returns 1 with batch filled, 0 when the outbox is empty, -1 with err
   set on a database error. */
int ef_outbox_fetch (ef_outbox_t *self, PGconn *conn, size_t max,
                     ef_outbox_batch_t *batch, char *err, size_t errlen);

/* Deletes the rows of a delivered batch. Returns 0, -1 with err set. */
int ef_outbox_delete (ef_outbox_t *self, PGconn *conn,
                      const ef_outbox_batch_t *batch, char *err, size_t errlen);

/* Moves the rows of a batch that could not be delivered into
   dead_letter (stage "invalidate", covers 0) in one statement, so they
   are never in both tables or in neither. Returns 0, -1 with err set. */
int ef_outbox_dead_letter (ef_outbox_t *self, PGconn *conn,
                           const ef_outbox_batch_t *batch, const char *reason,
                           uint32_t attempts, char *err, size_t errlen);

/* Frees what ef_outbox_fetch put in batch and zeroes it. */
void ef_outbox_batch_clear (ef_outbox_batch_t *batch);

#endif
