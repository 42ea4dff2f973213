/*  job.c — the `jobs:` section: keys, defaults, checks. */
#include "jobs/job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

#include "jobs/cron.h"
#include "jobs/tz.h"

#define S_OFF(field) offsetof (ef_job_t, field)

const ef_option_t ef_job_options[] = {
    {"target", EF_OPT_STRING, NULL, S_OFF (target), 0, 0,
     "AI server serving GetEmbeddings, HOST:PORT (required)"},
    {"source", EF_OPT_STRING, NULL, S_OFF (source), 0, 0,
     "RequestParams.source, also stored with the rows (default: the job "
     "name)"},
    {"chunk_size", EF_OPT_INT, "256", S_OFF (chunk_size), 1, 1000000,
     "RequestParams.chunk_size: rows per streamed chunk"},
    {"filter", EF_OPT_STRING, NULL, S_OFF (filter), 0, 0,
     "RequestParams.filter as KEY=VALUE[,KEY=VALUE...]"},
    {"from_start", EF_OPT_BOOL, "false", S_OFF (from_start), 0, 0,
     "every run pulls everything, ignoring the checkpoint"},
    {"schedule", EF_OPT_STRING, NULL, S_OFF (schedule), 0, 0,
     "cron: 5 fields, 6 with seconds first, or @hourly...; unset: the "
     "job runs only when asked (embedflow pull --job NAME)"},
    {"timezone", EF_OPT_STRING, "UTC", S_OFF (timezone), 0, 0,
     "IANA time zone the schedule is read in, e.g. Europe/Berlin"},
    {"misfire", EF_OPT_STRING, "skip", S_OFF (misfire), 0, 0,
     "slots missed while no process ran: skip them, or fire_once"},
    {"run_retries", EF_OPT_INT, "0", S_OFF (run_retries), 0, 1000000,
     "a failed scheduled run is run again this often"},
    {"run_retry_base", EF_OPT_MS, "1s", S_OFF (run_retry_base), 1, 86400000,
     "first backoff ceiling before a failed run is retried"},
    {"run_retry_cap", EF_OPT_MS, "60s", S_OFF (run_retry_cap), 1, 86400000,
     "largest backoff ceiling between retried runs"},
    {"max_message_bytes", EF_OPT_SIZE, "64M", S_OFF (max_message_bytes), 1024,
     INT32_MAX, "largest EmbeddingChunk accepted from the server"},
    {"deadline", EF_OPT_MS, "0", S_OFF (deadline), 0, INT64_MAX / 2,
     "deadline of one GetEmbeddings call (0 = none)"},
    {"idle_timeout", EF_OPT_MS, "60s", S_OFF (idle_timeout), 0, INT64_MAX / 2,
     "a stream silent this long is broken (and resumed); 0 = never"},
    {"retries", EF_OPT_INT, "8", S_OFF (retries), 0, 1000000,
     "broken streams resumed per run before the run fails"},
    {"retry_base", EF_OPT_MS, "200ms", S_OFF (retry_base), 1, 3600000,
     "first backoff ceiling before resuming a broken stream"},
    {"retry_cap", EF_OPT_MS, "5s", S_OFF (retry_cap), 1, 3600000,
     "largest backoff ceiling between resumptions"},
    {"bdp_probe", EF_OPT_BOOL, "false", S_OFF (bdp_probe), 0, 0,
     "grow HTTP/2 windows to the bandwidth-delay product: faster over "
     "high-latency links, but reads that far ahead of the pipeline"},
    {"tls", EF_OPT_BOOL, "false", S_OFF (tls), 0, 0, "connect with TLS"},
    {"tls_ca", EF_OPT_STRING, NULL, S_OFF (tls_ca), 0, 0,
     "PEM file of the roots to trust (implies tls; default: system roots)"},
    {"auth_token", EF_OPT_SECRET, NULL, S_OFF (auth_token), 0, 0,
     "sent as metadata 'authorization: Bearer TOKEN'"},
    EF_OPTION_END};

static ef_entry_check_fn s_check;

int
ef_jobs_declare (ef_config_t *config, char *err, size_t errlen)
{
    return ef_config_add_section (config, EF_JOBS_SECTION, ef_job_options,
                                  sizeof (ef_job_t), s_check, err, errlen);
}

const char *
ef_job_source (const ef_job_t *job, const char *name)
{
    return job->source && *job->source ? job->source : name;
}

int
ef_job_filter_split (char *filter, char *keys[EF_JOB_MAX_FILTERS],
                     char *values[EF_JOB_MAX_FILTERS], char *err, size_t errlen)
{
    int n = 0;
    char *save = NULL;
    for (char *kv = filter ? strtok_r (filter, ",", &save) : NULL; kv;
         kv = strtok_r (NULL, ",", &save)) {
        char *eq = strchr (kv, '=');
        if (!eq || eq == kv || n == EF_JOB_MAX_FILTERS) {
            snprintf (err, errlen, "'%s' is not KEY=VALUE (at most %d pairs)",
                      kv, EF_JOB_MAX_FILTERS);
            return -1;
        }
        *eq = '\0';
        keys[n] = kv;
        values[n] = eq + 1;
        n++;
    }
    return n;
}

/* Checks one job as a whole: a target, a schedule that parses, a known
   time zone, a readable tls_ca, misfire skip or fire_once, a well-formed
   filter. Returns 0, -1 with why = "KEY: reason". */
static int
s_check (const char *name, const void *entry, char *why, size_t len)
{
    (void) name;
    const ef_job_t *job = entry;
    char detail[256] = "";
    if (!job->target || !*job->target) {
        snprintf (why, len, "target: is required (HOST:PORT)");
        return -1;
    }
    ef_cron_t cron;
    if (job->schedule && *job->schedule
        && ef_cron_parse (job->schedule, &cron, detail, sizeof detail) != 0) {
        snprintf (why, len, "schedule: %s", detail);
        return -1;
    }
    ef_tz_t *tz = ef_tz_load (job->timezone, detail, sizeof detail);
    if (!tz) {
        snprintf (why, len, "timezone: %s", detail);
        return -1;
    }
    ef_tz_destroy (&tz);
    if (job->tls_ca && access (job->tls_ca, R_OK) != 0) {
        snprintf (why, len, "tls_ca: cannot read %s: %s", job->tls_ca,
                  strerror (errno));
        return -1;
    }
    if (!job->misfire
        || (strcmp (job->misfire, "skip") != 0
            && strcmp (job->misfire, "fire_once") != 0)) {
        snprintf (why, len, "misfire: '%s' is not skip or fire_once",
                  job->misfire ? job->misfire : "");
        return -1;
    }
    if (job->filter) {
        char *copy = strdup (job->filter);
        char *keys[EF_JOB_MAX_FILTERS], *values[EF_JOB_MAX_FILTERS];
        if (!copy)
            snprintf (detail, sizeof detail, "out of memory");
        int n = copy ? ef_job_filter_split (copy, keys, values, detail,
                                            sizeof detail)
                     : -1;
        free (copy);
        if (n < 0) {
            snprintf (why, len, "filter: %s", detail);
            return -1;
        }
    }
    return 0;
}
