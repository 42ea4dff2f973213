/*  test_jobmetrics.c — per-job series: one per name, rendered with the
    job_name label, capped into _other, safe from many threads. */
#include "ef_test.h"

#include "jobs/jobmetrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

EF_TEST (jobmetrics_series_per_job)
{
    const ef_job_metrics_t *a = ef_job_metrics ("alpha");
    EF_REQUIRE (a && a->received && a->runs_failed);
    EF_CHECK (ef_job_metrics ("alpha") == a);
    const ef_job_metrics_t *b = ef_job_metrics ("beta \"quoted\"");
    EF_CHECK (b != a && b->received != a->received);
    ef_counter_add (a->received, 10);
    ef_counter_add (a->written, 8);
    ef_counter_add (a->dead_lettered, 2);
    ef_counter_add (a->runs_completed, 1);
    ef_counter_add (b->runs_failed, 1);
    EF_CHECK (ef_job_metrics_count () == 2);
    /* no name counts as _other */
    EF_CHECK (ef_job_metrics (NULL) == ef_job_metrics (""));
    EF_CHECK (ef_job_metrics (NULL) == ef_job_metrics (EF_JOB_METRICS_OTHER));
    EF_CHECK (ef_job_metrics_count () == 2);

    char *text = ef_metrics_render (NULL);
    EF_REQUIRE (text);
    EF_CHECK (strstr (text, "# TYPE embedflow_job_rows_received_total "
                            "counter\n"));
    EF_CHECK (strstr (text, "embedflow_job_rows_received_total{job_name="
                            "\"alpha\"} 10\n"));
    EF_CHECK (strstr (text, "embedflow_job_rows_written_total{job_name="
                            "\"alpha\"} 8\n"));
    EF_CHECK (strstr (text, "embedflow_job_rows_dead_lettered_total{job_name="
                            "\"alpha\"} 2\n"));
    EF_CHECK (strstr (text, "embedflow_job_runs_total{job_name=\"alpha\","
                            "status=\"completed\"} 1\n"));
    EF_CHECK (strstr (text, "embedflow_job_runs_total{job_name=\"alpha\","
                            "status=\"failed\"} 0\n"));
    EF_CHECK (strstr (text, "embedflow_job_runs_total{job_name=\"beta "
                            "\\\"quoted\\\"\",status=\"failed\"} 1\n"));
    /* one HELP/TYPE header for both statuses */
    char *first = strstr (text, "# TYPE embedflow_job_runs_total");
    EF_CHECK (first && !strstr (first + 1, "# TYPE embedflow_job_runs_total"));
    free (text);
}

EF_TEST (jobmetrics_capped_into_other)
{
    const ef_job_metrics_t *other = ef_job_metrics (EF_JOB_METRICS_OTHER);
    char name[32];
    for (int i = 0; i < EF_JOB_METRICS_MAX; i++) {
        snprintf (name, sizeof name, "job-%d", i);
        EF_REQUIRE (ef_job_metrics (name) != other);
    }
    EF_CHECK (ef_job_metrics_count () == EF_JOB_METRICS_MAX);
    /* past the cap: a new name counts into _other, known names keep
       their own series */
    const ef_job_metrics_t *late = ef_job_metrics ("one-too-many");
    EF_CHECK (late == other);
    EF_CHECK (ef_job_metrics ("job-7") != other);
    EF_CHECK (ef_job_metrics ("job-7") == ef_job_metrics ("job-7"));
    EF_CHECK (ef_job_metrics_count () == EF_JOB_METRICS_MAX);
    ef_counter_add (late->received, 5);
    char *text = ef_metrics_render (NULL);
    EF_REQUIRE (text);
    EF_CHECK (strstr (text, "embedflow_job_rows_received_total{job_name="
                            "\"_other\"} 5\n"));
    EF_CHECK (!strstr (text, "one-too-many"));
    free (text);
}

/* Looks up the same 50 jobs and counts one row into each, many times. */
static void *
s_worker (void *arg)
{
    (void) arg;
    char name[32];
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < 50; i++) {
            snprintf (name, sizeof name, "shared-%d", i);
            ef_counter_add (ef_job_metrics (name)->received, 1);
        }
    return NULL;
}

EF_TEST (jobmetrics_from_threads)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create (&t[i], NULL, s_worker, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join (t[i], NULL);
    EF_CHECK (ef_job_metrics_count () == 50);
    for (int i = 0; i < 50; i++) {
        char name[32];
        snprintf (name, sizeof name, "shared-%d", i);
        EF_CHECK (ef_counter_value (ef_job_metrics (name)->received) == 800);
    }
}
