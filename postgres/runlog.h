/*  runlog.h — uploads recorded in job_run by a source without a database
    connection of its own (the receiver), and the thread that marks the
    uploads of dead processes abandoned.
*/
#ifndef EF_RUNLOG_H
#define EF_RUNLOG_H

#include <stdint.h>

#include "postgres/jobrun.h"
#include "postgres/schema.h"

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
