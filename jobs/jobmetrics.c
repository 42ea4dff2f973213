/*  jobmetrics.c — per-job row and run counters (see jobmetrics.h).

    The jobs seen so far are kept in a small open-addressing hash table
    under a mutex; a lookup happens once per run, the updates that follow
    go straight to the registry's atomic counters.
*/
#include "jobs/jobmetrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Table slots: a power of two above twice the cap, so probes stay short. */
#define S_SLOTS 2048

typedef struct {
    char *name;               /* the job's name, owned */
    ef_job_metrics_t metrics; /* its series */
} s_job_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_job_t *s_slots[S_SLOTS];     /* the jobs with their own series */
static size_t s_count;                /* used slots */
static s_job_t *s_other;              /* job_name="_other" */
static const ef_job_metrics_t s_none; /* every counter NULL: out of memory */

/* FNV-1a hash of a string. */
static uint32_t
s_hash (const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 16777619u;
    return h;
}

/* One counter of the job. NULL when out of memory. */
static ef_counter_t *
s_counter (const char *name, const char *help, const char *job,
           const char *status)
{
    const char *labels[] = {"job_name", job, status ? "status" : NULL, status,
                            NULL};
    return ef_metrics_counter_labeled (name, help, labels);
}

/* A job entry with every series created at zero. NULL when out of
   memory (series already made stay in the registry, harmless). */
static s_job_t *
s_job_new (const char *name)
{
    s_job_t *job = calloc (1, sizeof *job);
    if (!job || !(job->name = strdup (name))) {
        free (job);
        return NULL;
    }
    ef_job_metrics_t *m = &job->metrics;
    m->received = s_counter (
        "embedflow_job_rows_received_total",
        "Rows received for the job (upload source or pull job).", name, NULL);
    m->written =
        s_counter ("embedflow_job_rows_written_total",
                   "Rows of the job acknowledged as committed.", name, NULL);
    m->dead_lettered = s_counter (
        "embedflow_job_rows_dead_lettered_total",
        "Rows of the job sent to the dead-letter queue.", name, NULL);
    const char *runs_help = "Runs of the job (uploads, pulls) by outcome.";
    m->runs_completed =
        s_counter ("embedflow_job_runs_total", runs_help, name, "completed");
    m->runs_failed =
        s_counter ("embedflow_job_runs_total", runs_help, name, "failed");
    if (!m->received || !m->written || !m->dead_lettered || !m->runs_completed
        || !m->runs_failed) {
        free (job->name);
        free (job);
        return NULL;
    }
    return job;
}

/* The _other entry, created on first need. Under the lock. */
static const ef_job_metrics_t *
s_other_metrics (void)
{
    if (!s_other)
        s_other = s_job_new (EF_JOB_METRICS_OTHER);
    return s_other ? &s_other->metrics : &s_none;
}

const ef_job_metrics_t *
ef_job_metrics (const char *job)
{
    pthread_mutex_lock (&s_lock);
    const ef_job_metrics_t *found = NULL;
    if (!job || !*job || strcmp (job, EF_JOB_METRICS_OTHER) == 0)
        found = s_other_metrics ();
    size_t i = found ? 0 : s_hash (job) & (S_SLOTS - 1);
    while (!found && s_slots[i]) {
        if (strcmp (s_slots[i]->name, job) == 0)
            found = &s_slots[i]->metrics;
        else
            i = (i + 1) & (S_SLOTS - 1);
    }
    if (!found && s_count >= EF_JOB_METRICS_MAX)
        found = s_other_metrics ();
    if (!found) {
        s_job_t *entry = s_job_new (job);
        if (entry) {
            s_slots[i] = entry;
            s_count++;
            found = &entry->metrics;
        }
        else
            found = &s_none;
    }
    pthread_mutex_unlock (&s_lock);
    return found;
}

size_t
ef_job_metrics_count (void)
{
    pthread_mutex_lock (&s_lock);
    size_t n = s_count;
    pthread_mutex_unlock (&s_lock);
    return n;
}
