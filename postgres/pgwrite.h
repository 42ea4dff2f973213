/*  pgwrite.h — idempotent batch upsert of rows into chunk + embedding.

    One batch is one transaction on a borrowed connection. A content hash
    (XXH3-128 over content, metadata_json, model, source and the vector,
    computed here and stored in chunk.content_hash) decides what is
    written:

      1. one prepared lookup sends the batch's keys and hashes as array
         parameters and learns which keys are stored, with which hash.
         While batches bring only new keys (a load), it is skipped:
         every row is taken for new, and a stored key fails the COPY
         (a unique violation) before anything commits; that batch is
         then written again with the lookup, and so are the following
         ones until a lookup finds none of its keys stored;
      2. new keys are COPied (binary) straight into chunk and embedding,
         at the speed of a plain load, the vector in the column's own
         binary format (real[], pgvector's vector or halfvec: the type
         is read from the catalog once per session);
      3. changed keys are COPied into a per-session TEMP staging table
         (ON COMMIT DELETE ROWS) and upserted by one prepared statement:
         INSERT INTO chunk ... ON CONFLICT (document_id, chunk_index) DO
         UPDATE ... WHERE the hash differs, RETURNING the ids (an
         existing row keeps its id) that feed INSERT INTO embedding ...
         ON CONFLICT (id) DO UPDATE;
      4. unchanged keys are not touched: no row version, no row lock,
         updated_at stays.

    On a schema whose embedding table has document_id (distribution
    citus, schema.h) the same steps run with keys that lead with
    document_id, in statements Citus runs on distributed tables: the
    lookup joins the keys to chunk, embedding's key and ON CONFLICT
    target are (document_id, id), and the upsert relies on its ON
    CONFLICT ... WHERE alone to leave an unchanged row alone.

    If another session stores one of the "new" keys between 1 and 2 (a
    unique violation), the batch is redone through staging alone, where
    ON CONFLICT settles the race. The staging table's vector column has
    the embedding column's type, so nothing is cast.

    Rows of one batch should have distinct (document_id, chunk_index);
    if not, the last one of each key is written and the earlier ones are
    counted as duplicates (they were superseded, not lost).
*/
#ifndef EF_PGWRITE_H
#define EF_PGWRITE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/copyenc.h"

typedef struct ef_pgwrite ef_pgwrite_t;

typedef enum {
    EF_WRITE_OK,    /* committed */
    EF_WRITE_RETRY, /* transient (connection lost, deadlock, ...): nothing
                        committed, the same call may succeed later */
    EF_WRITE_ERROR, /* permanent: some row (or the schema) is rejected;
                        nothing committed */
    EF_WRITE_WAIT,  /* not now: too many rows wait for their ANN index
                        (segments.h); nothing committed, try again once
                        the sealer caught up. Not a failure */
} ef_write_status_t;

typedef struct {
    size_t rows;          /* rows given */
    size_t changed;       /* rows inserted or updated */
    size_t duplicates;    /* earlier rows of a repeated key, not written */
    int64_t elapsed_us;   /* wall time of the call */
    char reason_code[32]; /* on failure: "db_rejected", "db_unavailable",
                             "bad_row" */
    char sqlstate[6];     /* on failure: the server's SQLSTATE, or "" */
    char message[512];    /* on failure: what went wrong, one line */
} ef_write_report_t;

/* A writer of batches into schema (already migrated) on conn, which the
   caller owns and may PQreset between calls. NULL when out of memory or
   schema cannot be quoted. */
ef_pgwrite_t *ef_pgwrite_new (PGconn *conn, const char *schema, int dim);

/* Frees the writer (not the connection) and NULLs *self_p; safe twice. */
void ef_pgwrite_destroy (ef_pgwrite_t **self_p);

/* Writes rows[0..n) in one transaction. Returns EF_WRITE_OK with
   rep->changed set, EF_WRITE_RETRY or EF_WRITE_ERROR with rep's reason
   fields set; on either failure nothing was committed and the
   connection is idle (or broken: PQstatus tells). rep may be NULL. A row
   whose id is not 16 bytes or whose vector is not dim long is rejected
   here (EF_WRITE_ERROR, "bad_row") before anything is sent, and so is a
   row with an element a halfvec column cannot hold (beyond ±65504),
   the message naming the row and the element. */
ef_write_status_t ef_pgwrite_batch (ef_pgwrite_t *self,
                                    Embedflow__V1__Row *const *rows, size_t n,
                                    ef_write_report_t *rep);

/* Segmented schemas: a batch finding more than rows rows without their
   ANN index returns EF_WRITE_WAIT instead of writing (0, the default:
   never). */
void ef_pgwrite_set_backlog_limit (ef_pgwrite_t *self, int64_t rows);

#define EF_PGWRITE_MAX_HOOKS 4

/* A hook writes its own rows in the batch's transaction, after the data
   and before COMMIT, so they commit or roll back together (a checkpoint,
   an outbox). changed[i] is false for rows known to be unchanged or
   superseded by a later row of their key, true otherwise. Returns
   EF_WRITE_OK, or EF_WRITE_RETRY / EF_WRITE_ERROR with rep filled: the
   whole batch then rolls back and is reported with that status. */
typedef ef_write_status_t (ef_pgwrite_hook_fn) (PGconn *conn, void *arg,
                                                Embedflow__V1__Row *const *rows,
                                                size_t n, const bool *changed,
                                                ef_write_report_t *rep);

/* Adds a hook, called in the order added on every batch. arg is
   borrowed. Returns 0, -1 when EF_PGWRITE_MAX_HOOKS are in use. */
int ef_pgwrite_add_hook (ef_pgwrite_t *self, ef_pgwrite_hook_fn *fn, void *arg);

/* Computes a row's content hash (16 bytes, what chunk.content_hash
   stores). */
void ef_pgwrite_hash (const Embedflow__V1__Row *row, uint8_t hash[16]);

/* The binary COPY data ef_pgwrite_batch sends into table for rows[0..n)
   (header, one tuple per row with its content hash, trailer) with the
   vector encoded as type (postgres/copyenc.h), in a heap buffer of *len
   bytes; no server is involved. NULL when out of memory or when a row's
   id is not 16 bytes (ef_pgwrite_batch refuses such a row before it
   encodes anything). */
char *ef_pgwrite_copy_rows (ef_copy_table_t table, ef_vector_type_t type,
                            Embedflow__V1__Row *const *rows, size_t n,
                            size_t *len);

/* The binary COPY data ef_pgwrite_dead_letters sends for items[0..n),
   in a heap buffer of *len bytes. NULL when out of memory. */
char *ef_pgwrite_copy_dead_letters (Embedflow__V1__DeadLetter *const *items,
                                    size_t n, size_t *len);

/* Appends items[0..n) to <schema>.dead_letter in one COPY (one
   transaction). Text that is not valid UTF-8 is stored with U+FFFD in
   place of the bad bytes (original keeps the exact bytes); empty
   sqlstate, job_id, source and document_id are stored as NULL. Returns
   EF_WRITE_OK (rep->changed = n), EF_WRITE_RETRY or EF_WRITE_ERROR like
   ef_pgwrite_batch. */
ef_write_status_t
ef_pgwrite_dead_letters (PGconn *conn, const char *schema,
                         Embedflow__V1__DeadLetter *const *items, size_t n,
                         ef_write_report_t *rep);

#endif
