/*  jobrun.h — the history of runs, <schema>.job_run: a job's lock, its
    cron slots, each run's start, counts, heartbeat and end. A run's end
    records its position (checkpoint.h). All calls are one statement on
    the caller's connection.
*/
#ifndef EF_JOBRUN_H
#define EF_JOBRUN_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
