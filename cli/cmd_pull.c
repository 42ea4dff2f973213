/*  cmd_pull.c — `embedflow pull`: one pull job, now, in this process.

    Runs the pipeline with one job run at once (the scheduler's run_now):
    a job of the config file named by --job, or one made from --target
    and --source; flags override the file's keys, and no schedule of the
    file runs in this process. The gRPC
    receiver listens on a free loopback port only (unless --listen is
    given), so a pull never competes with a running `embedflow run` for
    its port. Prints progress (the job's counters in the metrics
    registry), then a summary of the puller's report of the run's end
    (ef_runtime_on_report); exits 0 only when the stream completed and
    every row it brought is committed or dead-lettered.
*/
#include "cli/cli.h"

#include "actors/grpc_puller.h"
#include "pipeline/metrics_server.h"
#include "embedflow/log.h"
#include "jobs/job.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    ef_runtime_t *runtime;    /* stopped when the run is over */
    const char *job;          /* the job run, for its progress */
    bool done;                /* the puller reported */
    ef_pull_report_t report;  /* what it reported */
    atomic_int stop_progress; /* ends the progress thread */
} s_pull_t;

/* Takes the puller's report of the run's end (on the thread in
   ef_runtime_wait) and stops the pipeline; other reports are ignored. */
static void
s_on_report (const char *actor, zmsg_t **msg_p, void *arg)
{
    s_pull_t *pull = arg;
    if (strcmp (actor, "grpc-puller") != 0 || pull->done
        || ef_pull_report_read (*msg_p, &pull->report) != 0)
        return;
    pull->done = true;
    ef_runtime_stop (pull->runtime);
}

/* Prints progress every second on a terminal, every 5 s otherwise. */
static void *
s_progress (void *arg)
{
    s_pull_t *pull = arg;
    bool json = ef_log_format () == EF_LOG_FORMAT_JSON;
    bool tty = !json && isatty (STDERR_FILENO);
    double start = (double) ef_clock_mono_us () / 1e6, last = start;
    while (!atomic_load (&pull->stop_progress)) {
        usleep (200 * 1000);
        double now = (double) ef_clock_mono_us () / 1e6;
        if (now - last < (tty ? 1.0 : 5.0))
            continue;
        last = now;
        uint64_t received, settled;
        ef_pull_progress (pull->job, &received, &settled);
        double rate = now > start ? (double) settled / (now - start) : 0;
        if (json) {
            ef_info_kv (EF_KV (EF_KV_U64 ("rows_received", received),
                               EF_KV_U64 ("rows_settled", settled),
                               EF_KV_F64 ("rows_per_second", rate)),
                        "progress: received %llu rows, %llu settled, %.0f "
                        "rows/s",
                        (unsigned long long) received,
                        (unsigned long long) settled, rate);
            continue;
        }
        fprintf (stderr,
                 tty ? "\r  received %llu rows, %llu settled, %.0f rows/s   "
                     : "progress: received %llu rows, %llu settled, %.0f "
                       "rows/s\n",
                 (unsigned long long) received, (unsigned long long) settled,
                 rate);
    }
    if (tty)
        fprintf (stderr, "\n");
    return NULL;
}

/* True when argv sets the receiver's listen address itself. */
static bool
s_listen_given (int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strncmp (argv[i], "--listen", 8) == 0
            || strncmp (argv[i], "--actors.grpc-receiver.listen", 29) == 0)
            return true;
    return false;
}

/* Sets one config key; prints why not. Returns 0 or -1. */
static int
s_set (ef_cli_t *cli, const char *key, const char *value)
{
    char err[512];
    if (ef_config_set (cli->config, key, value, err, sizeof err) == 0)
        return 0;
    fprintf (stderr, "embedflow pull: %s\n", err);
    return -1;
}

/* Sets KEY of job NAME to the value of --FLAG (NULL when no flag gave
   it): the job's option table types the flag, as it types the key in a
   config file. Returns 0 or -1 (printed, naming the flag). */
static int
s_job_set (ef_cli_t *cli, const char *name, const char *key, const char *value,
           const char *flag)
{
    char path[256], err[512];
    snprintf (path, sizeof path, "%s.%s.%s", EF_JOBS_SECTION, name, key);
    if (ef_config_set (cli->config, path, value, err, sizeof err) == 0)
        return 0;
    if (flag)
        fprintf (stderr, "embedflow pull: --%s: %s\n", flag, err);
    else
        fprintf (stderr, "embedflow pull: %s: %s\n", path, err);
    return -1;
}

/* What the pull flags asked for. */
typedef struct {
    char *target, *source, *job, *resume, *from_start, *chunk_size, *filter,
        *linger; /* flag values, NULL when not given */
    int argc;    /* the command line, for s_listen_given */
    char **argv; /* borrowed */
} s_flags_t;

/* Turns the flags into the job's keys before the config is validated:
   the job named by --job (or --source) gets --target, --source...; it is
   the one run now, and no schedule of the file runs here. Returns
   EF_EXIT_OK or EF_EXIT_USAGE (printed). */
static int
s_prepare (ef_cli_t *cli, void *arg)
{
    const s_flags_t *f = arg;
    const char *name = f->job && *f->job ? f->job : f->source;
    if (!name || !*name) {
        fprintf (stderr, "embedflow pull: --job or --source is needed\n");
        return EF_EXIT_USAGE;
    }
    if (f->resume && f->from_start) {
        fprintf (stderr,
                 "embedflow pull: --resume and --from-start exclude each "
                 "other\n");
        return EF_EXIT_USAGE;
    }
    if (!ef_config_section_find (cli->config, EF_JOBS_SECTION, name)
        && (!f->target || !*f->target)) {
        fprintf (stderr,
                 "embedflow pull: --target is needed (no job '%s' in the "
                 "config)\n",
                 name);
        return EF_EXIT_USAGE;
    }
    if ((f->target && s_job_set (cli, name, "target", f->target, "target") != 0)
        || (f->source
            && s_job_set (cli, name, "source", f->source, "source") != 0)
        || ((f->from_start || f->resume)
            && s_job_set (cli, name, "from_start",
                          f->from_start ? "true" : "false", NULL)
                   != 0)
        || (f->chunk_size
            && s_job_set (cli, name, "chunk_size", f->chunk_size, "chunk-size")
                   != 0)
        || (f->filter
            && s_job_set (cli, name, "filter", f->filter, "filter") != 0)
        || s_set (cli, "actors.scheduler.run_now", name) != 0
        || (!s_listen_given (f->argc, f->argv)
            && s_set (cli, "actors.grpc-receiver.listen", "127.0.0.1:0") != 0))
        return EF_EXIT_USAGE;
    return EF_EXIT_OK;
}

int
ef_cmd_pull (int argc, char **argv)
{
    ef_signals_init ();
    s_flags_t f = {.argc = argc, .argv = argv};
    const ef_cli_flag_t flags[] = {
        {"target", "HOST:PORT", "the AI server serving GetEmbeddings",
         &f.target, NULL, NULL},
        {"source", "NAME", "RequestParams.source, stored with the rows",
         &f.source, NULL, NULL},
        {"job", "NAME",
         "job to run: one of the config's jobs, or a new name for the "
         "checkpoint (default: the source)",
         &f.job, NULL, NULL},
        {"resume", NULL, "resume from the job's checkpoint (the default)",
         &f.resume, NULL, NULL},
        {"from-start", NULL, "ignore the checkpoint, pull everything",
         &f.from_start, NULL, NULL},
        {"chunk-size", "N", "rows per chunk asked of the server (default 256)",
         &f.chunk_size, NULL, NULL},
        {"filter", "K=V,...", "RequestParams.filter", &f.filter, NULL, NULL},
        {"linger", NULL,
         "after the summary keep serving --metrics until SIGINT or SIGTERM",
         &f.linger, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load_prepared (&cli, "pull", argc, argv, flags, &help,
                                   s_prepare, &f);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf ("usage: embedflow pull --target HOST:PORT --source NAME "
                    "[--resume|--from-start] [options]\n"
                    "       embedflow pull --config FILE --job NAME "
                    "[--resume|--from-start] [options]\n\nCalls GetEmbeddings "
                    "on the AI server and writes the stream through the\n"
                    "pipeline, resuming from the job's committed checkpoint. "
                    "Exits 0 only when the\nstream completed and every row is "
                    "committed or dead-lettered. With --metrics HOST:PORT it "
                    "serves "
                    "/metrics,\n/healthz and /readyz while it runs.\n\npull "
                    "options:\n");
            ef_cli_print_flags (flags);
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    if (f.linger && !(cli.globals->metrics && *cli.globals->metrics)) {
        fprintf (stderr, "embedflow pull: --linger needs --metrics HOST:PORT "
                         "(it keeps that endpoint up)\n");
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_EXISTING);
    if (db_rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return db_rc;
    }
    ef_metrics_server_t *metrics = NULL;
    rc = ef_cli_start_metrics (&cli, &metrics);
    if (rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return rc;
    }
    s_pull_t pull;
    memset (&pull, 0, sizeof pull);
    pull.job = f.job && *f.job ? f.job : f.source;
    /* Only the job run_now names runs, once; the receiver listens where
       s_prepare put it (a free port, unless --listen was given). */
    ef_runtime_t *rt = ef_cli_start_here (&cli, EF_CLI_JOBS_RUN_NOW, NULL, 0);
    if (!rt) {
        ef_metrics_server_destroy (&metrics);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    ef_metrics_server_started (metrics, true);
    /* a report sent before this waits in the actor's pipe */
    pull.runtime = rt;
    ef_runtime_on_report (rt, s_on_report, &pull);
    pthread_t prog;
    pthread_create (&prog, NULL, s_progress, &pull);
    rc = ef_cli_wait_runtime (rt);
    atomic_store (&pull.stop_progress, 1);
    pthread_join (prog, NULL);
    ef_runtime_destroy (&rt);

    const ef_pull_report_t *r = &pull.report;
    if (!pull.done) {
        printf ("\nembedflow pull: the run did not report an end\n");
        ef_metrics_server_destroy (&metrics);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    printf ("\nembedflow pull summary\n"
            "  job              %s\n"
            "  run              %s\n"
            "  status           %s\n"
            "  started after    %s\n"
            "  rows received    %llu\n"
            "  rows written     %llu\n"
            "  dead-lettered    %llu\n"
            "  calls            %llu\n"
            "  time             %.2f s\n"
            "  throughput       %.0f rows/s\n"
            "  position         %s\n",
            r->job, r->run_id, r->status,
            *r->start_token ? r->start_token : "(the beginning)",
            (unsigned long long) r->received, (unsigned long long) r->written,
            (unsigned long long) r->dead, (unsigned long long) r->calls,
            r->seconds,
            r->seconds > 0 ? (double) (r->written + r->dead) / r->seconds : 0,
            *r->position ? r->position : "(the beginning)");
    if (*r->error)
        printf ("  error            %s\n", r->error);
    fflush (stdout);
    if (f.linger)
        ef_metrics_server_linger (metrics);
    ef_metrics_server_destroy (&metrics);
    bool ok = strcmp (r->status, "completed") == 0
              && r->written + r->dead == r->received;
    ef_cli_close (&cli);
    if (rc == EF_EXIT_OK && !ok)
        rc = EF_EXIT_FAIL;
    return rc;
}
