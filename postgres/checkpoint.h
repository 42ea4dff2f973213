/*  checkpoint.h — pull-job positions committed with the data, and the
    job history (<schema>.job_run).

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

/* Tries to take the session-level advisory lock of a job, so that only
   one process runs it. Returns 1 when taken, 0 when another session
   holds it, -1 with err on a database error. The lock goes with the
   session (also when the process is killed). */
int ef_job_try_lock (PGconn *conn, const char *schema, const char *job,
                     char *err, size_t errlen);

/* Releases the job's lock taken by ef_job_try_lock. */
void ef_job_unlock (PGconn *conn, const char *schema, const char *job);

/* Claims cron slot (Unix seconds) of job: the process whose claim goes
   in runs it. Returns 1 claimed, 0 already claimed, -1 with err. */
int ef_job_claim_slot (PGconn *conn, const char *schema, const char *job,
                       int64_t slot, char *err, size_t errlen);

/* The latest slot of job ever claimed, -1 when none. Returns 0, -1 with
   err. */
int ef_job_last_slot (PGconn *conn, const char *schema, const char *job,
                      int64_t *slot, char *err, size_t errlen);

/* Marks runs of job still 'running' as 'abandoned' (call it holding the
   job's lock: no live process is running them). Returns how many, -1
   with err. */
int ef_job_abandon_stale (PGconn *conn, const char *schema, const char *job,
                          char *err, size_t errlen);

/* Marks uploads (trigger 'upload') still 'running' whose heartbeat is
   older than stale_ms, by the database's clock, as 'abandoned': uploads
   hold no lock, and a live receiver beats every few seconds, so such a
   row can only belong to a process that is gone. finished_at becomes the
   last heartbeat (when it was last seen alive) and error says so. Pull
   runs are left alone (ef_job_abandon_stale does them under the job's
   lock). Returns how many, -1 with err. */
int ef_job_abandon_stale_uploads (PGconn *conn, const char *schema,
                                  int64_t stale_ms, char *err, size_t errlen);

/* The job's position: where its latest run got to (see above), "" when
   it never ran. Returns a heap string, NULL with err. */
char *ef_job_position (PGconn *conn, const char *schema, const char *job,
                       char *err, size_t errlen);

/* The position of one run, NULL with err. */
char *ef_run_position (PGconn *conn, const char *schema, const char *run_id,
                       char *err, size_t errlen);

/* Inserts a 'running' run. trigger: cron, manual or upload; slot: the
   cron slot it runs for (Unix seconds), -1 for none. Returns 0, -1 with
   err. */
int ef_run_start (PGconn *conn, const char *schema, const char *run_id,
                  const char *job, const char *trigger, const char *start_token,
                  int64_t slot, char *err, size_t errlen);

/* Updates a run's counters and heartbeat; with status (completed, failed,
   abandoned) also ends it, recording its position and error (may be
   NULL). Returns 0, -1 with err. */
int ef_run_update (PGconn *conn, const char *schema, const char *run_id,
                   const char *status, uint64_t received, uint64_t written,
                   uint64_t dead, const char *error, char *err, size_t errlen);

/* The counts of one run in progress, for ef_run_beat. */
typedef struct {
    const char *run_id; /* UUID text, borrowed */
    uint64_t received;  /* rows received so far */
    uint64_t written;   /* rows committed so far */
    uint64_t dead;      /* rows dead-lettered so far */
} ef_run_counts_t;

/* Stores the heartbeat and counts of runs[0..n) in one statement. An
   upload marked 'abandoned' meanwhile (its beats were late) is 'running'
   again: a beat proves its process alive. Ended runs are not touched.
   Returns how many rows were updated, -1 with err. */
int ef_run_beat (PGconn *conn, const char *schema, const ef_run_counts_t *runs,
                 size_t n, char *err, size_t errlen);

/* --- upload history ------------------------------------------------------ */

/* Records uploads in job_run from a source that has no database
   connection of its own: connects on first use, and a failure is logged,
   never passed on (the history must not stop the data). start, end and
   beat run on the caller's thread, so each is one small statement with a
   statement_timeout (2 s), and after a failed beat the next ones are
   skipped for a backoff (0.5 s doubling to 60 s). The sweep for stale
   uploads runs on a thread of its own (ef_runlog_sweep_start). */
typedef struct ef_runlog ef_runlog_t;

/* NULL when out of memory. conninfo and schema are copied; dim is what
   the schema is migrated with on first use (a source may take data
   before the writers have migrated it). */
ef_runlog_t *ef_runlog_new (const char *conninfo, const char *schema,
                            const ef_schema_opts_t *opts);
void ef_runlog_destroy (ef_runlog_t **self_p);

/* Inserts a 'running' run. */
void ef_runlog_start (ef_runlog_t *self, const char *run_id, const char *job,
                      const char *trigger);

/* Ends a run with status and counts (error may be NULL). */
void ef_runlog_end (ef_runlog_t *self, const char *run_id, const char *status,
                    uint64_t received, uint64_t written, uint64_t dead,
                    const char *error);

/* Stores the heartbeat and counts of the uploads in progress, runs[0..n),
   in one statement (nothing when n is 0). */
void ef_runlog_beat (ef_runlog_t *self, const ef_run_counts_t *runs, size_t n);

/* Starts a thread that marks uploads of dead processes abandoned
   (ef_job_abandon_stale_uploads with stale_ms) at once and then every
   period_ms, on a connection of its own: the sweep scans job_run, which
   grows with every upload, so it must not hold the caller's thread.
   What it marks and its failures are logged; ef_runlog_destroy stops it
   (cancelling a sweep in progress). Call at most once. Returns 0, -1
   with errno set when the thread cannot be started. */
int ef_runlog_sweep_start (ef_runlog_t *self, int64_t stale_ms,
                           int64_t period_ms);

#endif
