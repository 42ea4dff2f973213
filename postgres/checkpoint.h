/*  checkpoint.h — pull-job positions committed with the data.

    A pulled chunk is split into rows that may land on several writers and
    in the dead-letter queue. Each writer transaction (and each DLQ insert)
    records, in that same transaction, one pull_piece per chunk it touched:
    (run, chunk sequence, rows of the chunk in this piece, rows in the
    chunk, the chunk's resume token). A chunk is complete when its pieces
    add up to its row count; a run's position is the resume token of the
    highest chunk such that it and every chunk before it are complete, or
    the token the run started from. A job resumes from the position of its
    latest run. Nothing here trusts memory: after a crash, the position is
    exactly what was committed. When a run ends (or is found abandoned),
    its position is stored in job_run.last_resume_token and its pieces
    are deleted in the same statement, so pull_piece only holds the
    pieces of runs in progress.

    Only rows (and letters) whose source asked for it are recorded: those
    with `checkpoint` set (the grpc-puller sets it on every chunk).
*/
#ifndef EF_CHECKPOINT_H
#define EF_CHECKPOINT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/pgwrite.h"
#include "postgres/schema.h"

/* A pgwrite hook (arg: the schema name, borrowed) that records the pull
   pieces of a row batch in its transaction. Returns EF_WRITE_OK, or a
   failure with rep filled (the batch then rolls back). */
ef_write_status_t ef_checkpoint_rows_hook (PGconn *conn, void *arg,
                                           Embedflow__V1__Row *const *rows,
                                           size_t n, const bool *changed,
                                           ef_write_report_t *rep);

/* Records the pull pieces of dead letters items[0..n) on conn, which must
   be inside the transaction that stores them. Returns EF_WRITE_OK (also
   when none is a pull row), else a failure with rep filled. */
ef_write_status_t
ef_checkpoint_dead_letters (PGconn *conn, const char *schema,
                            Embedflow__V1__DeadLetter *const *items, size_t n,
                            ef_write_report_t *rep);

/* Records a chunk with no rows as complete (autocommit). Returns 0, -1
   with err. */
int ef_checkpoint_empty_chunk (PGconn *conn, const char *schema,
                               const char *run_id, uint64_t seq,
                               const char *token, char *err, size_t errlen);

/* The job's position: where its latest run got to (see above), "" when
   it never ran. Returns a heap string, NULL with err. */
char *ef_job_position (PGconn *conn, const char *schema, const char *job,
                       char *err, size_t errlen);

/* The position of one run, NULL with err. */
char *ef_run_position (PGconn *conn, const char *schema, const char *run_id,
                       char *err, size_t errlen);

/* SQL of a run's position from its pieces, for a query where "r" is
   the run's job_run row and "%s" the quoted schema: the token of the
   last chunk of the run's complete prefix. */
#define EF_CHECKPOINT_RUN_POSITION_SQL                                         \
    "SELECT c.t FROM (SELECT chunk_seq, max (resume_token) AS t,"              \
    "    row_number () OVER (ORDER BY chunk_seq) - 1 AS rn"                    \
    "  FROM %s.pull_piece WHERE run_id = r.id GROUP BY chunk_seq"              \
    "  HAVING sum (rows) >= max (chunk_rows)) c"                               \
    " WHERE c.chunk_seq = c.rn ORDER BY c.chunk_seq DESC LIMIT 1"

#endif
