/*  job.h — pull jobs: the entries of the config's `jobs:` section.

        jobs:
          nightly-docs:
            target: ai.internal:50052
            source: docs
            schedule: "0 2 * * *"
            timezone: Europe/Berlin
            misfire: fire_once

    Each entry names one job: where to pull from and what to ask
    (RequestParams), when (cron in a time zone; none = only when asked,
    by `embedflow pull --job NAME`), what to do about missed slots and
    failed runs, and how to talk to the server. The scheduler actor reads
    the `when`, the grpc-puller actor the rest; both look jobs up by
    name. Every key is also a flag: `--jobs.nightly-docs.schedule`.
*/
#ifndef EF_JOB_H
#define EF_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/options.h"
#include "embedflow/runtime.h"

#define EF_JOBS_SECTION    "jobs"
#define EF_JOB_MAX_FILTERS 32

typedef struct {
    char *target;              /* HOST:PORT of the AI server */
    char *source;              /* RequestParams.source; NULL = job name */
    int64_t chunk_size;        /* RequestParams.chunk_size */
    char *filter;              /* "k=v,k=v" -> RequestParams.filter */
    bool from_start;           /* every run ignores the checkpoint */
    char *schedule;            /* cron expression; NULL = on request only */
    char *timezone;            /* IANA zone of the schedule; NULL = UTC */
    char *misfire;             /* skip or fire_once */
    int64_t run_retries;       /* failed scheduled runs retried */
    int64_t run_retry_base;    /* first backoff ceiling, ms */
    int64_t run_retry_cap;     /* largest backoff ceiling, ms */
    int64_t max_message_bytes; /* receive limit per message */
    int64_t deadline;          /* ms for the whole call; 0 = none */
    int64_t idle_timeout;      /* ms without a message before giving up */
    int64_t retries;           /* broken streams resumed per run */
    int64_t retry_base;        /* first backoff ceiling, ms */
    int64_t retry_cap;         /* largest backoff ceiling, ms */
    bool bdp_probe;            /* let HTTP/2 windows grow to the BDP */
    bool tls;                  /* speak TLS to the server */
    char *tls_ca;              /* PEM roots; NULL = system roots */
    char *auth_token;          /* sent as "authorization: Bearer" */
} ef_job_t;

/* The keys of one job, for ef_config_add_section. */
extern const ef_option_t ef_job_options[];

/* Declares the `jobs:` section on config; ef_config_validate then checks
   every job: a target, a schedule that parses, a known time zone, a
   readable tls_ca, misfire skip or fire_once, a well-formed filter.
   Returns 0, -1 with err. */
int ef_jobs_declare (ef_config_t *config, char *err, size_t errlen);

/* The job's RequestParams.source: its source, else its name. */
const char *ef_job_source (const ef_job_t *job, const char *name);

/* Splits a "k=v,k=v" filter in place (filter is modified; keys and
   values point into it). Returns how many pairs, or -1 with err when a
   pair is not KEY=VALUE or there are more than EF_JOB_MAX_FILTERS. */
int ef_job_filter_split (char *filter, char *keys[EF_JOB_MAX_FILTERS],
                         char *values[EF_JOB_MAX_FILTERS], char *err,
                         size_t errlen);

#endif
