/*  cmd_pull.c — `embedflow pull`: one pull job, now, in this process.

    Runs the pipeline with the grpc-puller pointed at --target; the gRPC
    receiver listens on a free loopback port only (unless --listen is
    given), so a pull never competes with a running `embedflow run` for
    its port. Prints progress, then a summary; exits 0 only when the
    stream completed and every row it brought is committed or
    dead-lettered.
*/
#include "cli/cli.h"

#include "actors/grpc_puller.h"
#include "embedflow/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    pthread_mutex_t lock;     /* guards runtime, done, report */
    ef_runtime_t *runtime;    /* stopped when the run is over */
    bool done;                /* the puller reported */
    ef_pull_report_t report;  /* what it reported */
    atomic_int stop_progress; /* ends the progress thread */
} s_pull_t;

/* The puller's done callback: keep the report, stop the pipeline. */
static void
s_on_done (const ef_pull_report_t *report, void *arg)
{
    s_pull_t *pull = arg;
    pthread_mutex_lock (&pull->lock);
    pull->report = *report;
    pull->done = true;
    if (pull->runtime)
        ef_runtime_stop (pull->runtime);
    pthread_mutex_unlock (&pull->lock);
}

/* Prints progress every second on a terminal, every 5 s otherwise. */
static void *
s_progress (void *arg)
{
    s_pull_t *pull = arg;
    bool tty = isatty (STDERR_FILENO);
    double start = (double) ef_clock_mono_us () / 1e6, last = start;
    while (!atomic_load (&pull->stop_progress)) {
        usleep (200 * 1000);
        double now = (double) ef_clock_mono_us () / 1e6;
        if (now - last < (tty ? 1.0 : 5.0))
            continue;
        last = now;
        uint64_t received, settled;
        ef_puller_progress (&received, &settled);
        fprintf (stderr,
                 tty ? "\r  received %llu rows, %llu settled, %.0f rows/s   "
                     : "progress: received %llu rows, %llu settled, %.0f "
                       "rows/s\n",
                 (unsigned long long) received, (unsigned long long) settled,
                 now > start ? (double) settled / (now - start) : 0);
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

int
ef_cmd_pull (int argc, char **argv)
{
    ef_signals_init ();
    char *target = NULL, *source = NULL, *job = NULL, *resume = NULL,
         *from_start = NULL, *chunk_size = NULL, *filter = NULL;
    const ef_cli_flag_t flags[] = {
        {"target", "HOST:PORT", "the AI server serving GetEmbeddings", &target},
        {"source", "NAME", "RequestParams.source, stored with the rows",
         &source},
        {"job", "NAME", "job name for the checkpoint (default: the source)",
         &job},
        {"resume", NULL, "resume from the job's checkpoint (the default)",
         &resume},
        {"from-start", NULL, "ignore the checkpoint, pull everything",
         &from_start},
        {"chunk-size", "N", "rows per chunk asked of the server (default 256)",
         &chunk_size},
        {"filter", "K=V,...", "RequestParams.filter", &filter},
        {NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "pull", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf ("usage: embedflow pull --target HOST:PORT --source NAME "
                    "[--resume|--from-start] [options]\n\nCalls GetEmbeddings "
                    "on the AI server and writes the stream through the\n"
                    "pipeline, resuming from the job's committed checkpoint. "
                    "Exits 0 only when the\nstream completed and every row is "
                    "committed or dead-lettered.\n\npull options:\n");
            for (const ef_cli_flag_t *f = flags; f->name; f++)
                printf ("  --%-12s %-10s %s\n", f->name,
                        f->metavar ? f->metavar : "", f->description);
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    if (!target || !*target || !source || !*source) {
        fprintf (stderr, "embedflow pull: --target and --source are needed\n");
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    if (resume && from_start) {
        fprintf (stderr,
                 "embedflow pull: --resume and --from-start exclude each "
                 "other\n");
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    /* one run now: a schedule in the config file is for `run` */
    if (s_set (&cli, "actors.grpc-puller.schedule", "") != 0
        || s_set (&cli, "actors.grpc-puller.target", target) != 0
        || s_set (&cli, "actors.grpc-puller.source", source) != 0
        || (job && s_set (&cli, "actors.grpc-puller.job", job) != 0)
        || s_set (&cli, "actors.grpc-puller.from_start",
                  from_start ? "true" : "false")
               != 0
        || (chunk_size
            && s_set (&cli, "actors.grpc-puller.chunk_size", chunk_size) != 0)
        || (filter && s_set (&cli, "actors.grpc-puller.filter", filter) != 0)
        || (!s_listen_given (argc, argv)
            && s_set (&cli, "actors.grpc-receiver.listen", "127.0.0.1:0")
                   != 0)) {
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    if (ef_cli_resolve_database (&cli) != 0) {
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    s_pull_t pull;
    memset (&pull, 0, sizeof pull);
    pthread_mutex_init (&pull.lock, NULL);
    ef_puller_on_done (s_on_done, &pull);
    ef_runtime_t *rt = ef_cli_start_runtime (&cli);
    if (!rt) {
        ef_puller_on_done (NULL, NULL);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    pthread_mutex_lock (&pull.lock);
    pull.runtime = rt;
    if (pull.done)
        ef_runtime_stop (rt);
    pthread_mutex_unlock (&pull.lock);
    pthread_t prog;
    pthread_create (&prog, NULL, s_progress, &pull);
    rc = ef_runtime_wait (rt);
    atomic_store (&pull.stop_progress, 1);
    pthread_join (prog, NULL);
    pthread_mutex_lock (&pull.lock);
    pull.runtime = NULL;
    pthread_mutex_unlock (&pull.lock);
    ef_runtime_destroy (&rt);
    ef_puller_on_done (NULL, NULL);

    const ef_pull_report_t *r = &pull.report;
    if (!pull.done) {
        printf ("\nembedflow pull: the run did not report an end\n");
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
    bool ok = strcmp (r->status, "completed") == 0
              && r->written + r->dead == r->received;
    ef_cli_close (&cli);
    if (rc == EF_EXIT_OK && !ok)
        rc = EF_EXIT_FAIL;
    return rc;
}
