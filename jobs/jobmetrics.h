/*  jobmetrics.h — per-job row and run counters for the metrics endpoint.

    A job is what a run of work is recorded under: for an upload the
    stream's source (embedflow-source metadata, else the receiver's
    default_source), for a pull the job's name. Each job has

      embedflow_job_rows_received_total{job_name="..."}
      embedflow_job_rows_written_total{job_name="..."}
      embedflow_job_rows_dead_lettered_total{job_name="..."}
      embedflow_job_runs_total{job_name="...",status="completed"|"failed"}

    The label is job_name, not job: Prometheus gives every scraped series
    the label job (its own scrape job) and would rename ours.

    Source names come from clients, so the number of jobs is capped:
    after EF_JOB_METRICS_MAX distinct names every new one counts into
    job_name="_other". Series live until the process ends.
*/
#ifndef EF_JOBMETRICS_H
#define EF_JOBMETRICS_H

#include "embedflow/metrics.h"

#define EF_JOB_METRICS_MAX   1000     /* distinct job_name values */
#define EF_JOB_METRICS_OTHER "_other" /* where the rest are counted */

/* The series of one job. Any field may be NULL (out of memory); every
   ef_counter_* function accepts NULL. */
typedef struct {
    ef_counter_t *received;       /* rows taken in for the job */
    ef_counter_t *written;        /* rows acknowledged as committed */
    ef_counter_t *dead_lettered;  /* rows acknowledged as dead-lettered */
    ef_counter_t *runs_completed; /* runs (uploads, pulls) that succeeded */
    ef_counter_t *runs_failed;    /* runs that failed or were cancelled */
} ef_job_metrics_t;

/* The series of job (NULL or "" counts as "_other"), created at zero on
   first call and the same pointer on every later call: look it up once
   per run and keep it. Thread-safe; updates through it take no lock.
   Never NULL: when out of memory, a struct of NULL counters. */
const ef_job_metrics_t *ef_job_metrics (const char *job);

/* Number of distinct jobs with their own series (not counting _other). */
size_t ef_job_metrics_count (void);

#endif
