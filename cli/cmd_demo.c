/*  cmd_demo.c — `embedflow demo`: the whole pipeline on a realistic load.

    Starts the private PostgreSQL (unless a database is given), the
    pipeline listening on a free loopback port, and the built-in load
    generator, which uploads the data set over real gRPC. Shows progress,
    then drains the pipeline and prints a summary. With --metrics it
    serves the metrics endpoint meanwhile (and, with --linger, after the
    summary until a signal).
*/
#include "cli/cli.h"
#include "testkit/loadgen.h"
#include "pipeline/metrics_server.h"

#include "embedflow/log.h"
#include "postgres/pg.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EF_DEMO_SCHEMA "embedflow_demo"

typedef struct {
    ef_loadgen_opts_t opts;      /* what to send */
    ef_loadgen_result_t result;  /* what came back */
    int rc;                      /* ef_loadgen_run's */
    volatile uint64_t rows_sent; /* progress, updated by the generator */
    atomic_int done;             /* the generator returned */
    ef_runtime_t *runtime;       /* stopped when the upload is over */
} s_demo_t;

static void *
s_generator (void *arg)
{
    s_demo_t *demo = arg;
    demo->rc = ef_loadgen_run (&demo->opts, &demo->result, &demo->rows_sent);
    atomic_store (&demo->done, 1);
    ef_runtime_stop (demo->runtime);
    return NULL;
}

/* Prints progress until the generator is done: in place on a terminal,
   one line every few seconds otherwise, a log line (with the counts as
   fields) every few seconds with --log-format json. */
static void *
s_progress (void *arg)
{
    s_demo_t *demo = arg;
    bool json = ef_log_format () == EF_LOG_FORMAT_JSON;
    bool tty = !json && isatty (STDERR_FILENO);
    double start = (double) ef_clock_mono_us () / 1e6, last_line = start;
    while (!atomic_load (&demo->done)) {
        usleep (250 * 1000);
        double now = (double) ef_clock_mono_us () / 1e6;
        uint64_t sent = __atomic_load_n (&demo->rows_sent, __ATOMIC_RELAXED);
        double rate = now > start ? (double) sent / (now - start) : 0;
        double left = rate > 0 ? (double) (demo->opts.rows - sent) / rate : 0;
        if (tty)
            fprintf (stderr,
                     "\r  sent %llu / %llu rows  %.0f rows/s  ETA %.0fs   ",
                     (unsigned long long) sent,
                     (unsigned long long) demo->opts.rows, rate, left);
        else if (json && now - last_line >= 5.0) {
            ef_info_kv (EF_KV (EF_KV_U64 ("rows_sent", sent),
                               EF_KV_U64 ("rows_total", demo->opts.rows),
                               EF_KV_F64 ("rows_per_second", rate)),
                        "progress: sent %llu / %llu rows, %.0f rows/s, "
                        "ETA %.0fs",
                        (unsigned long long) sent,
                        (unsigned long long) demo->opts.rows, rate, left);
            last_line = now;
        }
        else if (now - last_line >= 5.0) {
            fprintf (stderr,
                     "progress: sent %llu / %llu rows, %.0f rows/s, "
                     "ETA %.0fs\n",
                     (unsigned long long) sent,
                     (unsigned long long) demo->opts.rows, rate, left);
            last_line = now;
        }
    }
    if (tty)
        fprintf (stderr, "\n");
    return NULL;
}

/* Unless --schema is given, the demo writes into its own schema and
   empties it first, so every run measures the same work (a re-run into
   the same tables would find every row unchanged and write nothing).
   Returns 0, or -1 after logging why. */
static int
s_fresh_schema (ef_cli_t *cli, int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp (argv[i], "--schema") == 0
            || strncmp (argv[i], "--schema=", 9) == 0)
            return 0;
    char err[512];
    if (ef_config_set (cli->config, "schema", EF_DEMO_SCHEMA, err, sizeof err)
        != 0)
        return -1;
    PGconn *conn = ef_pg_connect (cli->globals->database, "embedflow demo", err,
                                  sizeof err);
    if (!conn) {
        ef_error ("%s", err);
        return -1;
    }
    PGresult *res =
        PQexec (conn, "DROP SCHEMA IF EXISTS " EF_DEMO_SCHEMA " CASCADE");
    int rc = PQresultStatus (res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc != 0)
        ef_error ("cannot empty schema " EF_DEMO_SCHEMA ": %s",
                  PQerrorMessage (conn));
    else
        ef_info ("writing into schema " EF_DEMO_SCHEMA " (emptied first)");
    PQclear (res);
    PQfinish (conn);
    return rc;
}

/* The demo's numeric flags, typed as config keys are. */
static const ef_option_t s_numbers[] = {
    {"rows", EF_OPT_INT, "141897", 0, 1, INT64_C (1) << 40, "rows to stream"},
    {"chunk_rows", EF_OPT_INT, "256", 0, 1, 1000000, "rows per gRPC message"},
    {"streams", EF_OPT_INT, "1", 0, 1, 64, "concurrent uploads"},
    EF_OPTION_END};

int
ef_cmd_demo (int argc, char **argv)
{
    ef_signals_init ();
    char *linger = NULL;
    int64_t rows = 0, chunk_rows = 0, streams = 0;
    const ef_cli_flag_t flags[] = {
        {"rows", "N", "rows to stream (default 141897)", NULL, &s_numbers[0],
         &rows},
        {"chunk-rows", "N", "rows per gRPC message (default 256)", NULL,
         &s_numbers[1], &chunk_rows},
        {"streams", "N", "concurrent uploads, 1..64 (default 1)", NULL,
         &s_numbers[2], &streams},
        {"linger", NULL,
         "after the summary keep serving --metrics until SIGINT or SIGTERM",
         &linger, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "demo", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf (
                "usage: embedflow demo [--rows N] [--dim N] [--writers N] "
                "[options]\n\nStreams a synthetic data set through "
                "UploadEmbeddings into the pipeline and\nprints a "
                "summary. Without a database it starts a private "
                "PostgreSQL in --data-dir.\nRows go to schema " EF_DEMO_SCHEMA
                ", emptied first, unless --schema is "
                "given.\nWith --metrics HOST:PORT it serves /metrics, /healthz "
                "and /readyz while it runs\n(as `run` does); --linger keeps "
                "them up after the summary.\n\ndemo options:\n");
            ef_cli_print_flags (flags);
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    s_demo_t demo = {0};
    demo.opts.rows = (uint64_t) rows;
    demo.opts.dim = (int) cli.globals->dim;
    demo.opts.chunk_rows = (int) chunk_rows;
    demo.opts.streams = (int) streams;
    demo.opts.rows_per_document = 16;
    demo.opts.source = "demo";
    demo.opts.seed = 42;
    if (linger && !(cli.globals->metrics && *cli.globals->metrics)) {
        fprintf (stderr, "embedflow demo: --linger needs --metrics HOST:PORT "
                         "(it keeps that endpoint up)\n");
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_START_PRIVATE);
    if (db_rc != EF_EXIT_OK || s_fresh_schema (&cli, argc, argv) != 0) {
        ef_cli_close (&cli);
        return db_rc != EF_EXIT_OK ? db_rc : EF_EXIT_FAIL;
    }
    ef_metrics_server_t *metrics = NULL;
    rc = ef_cli_start_metrics (&cli, &metrics);
    if (rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return rc;
    }
    /* The demo feeds the pipeline itself: no pull job runs. */
    char listen[64];
    demo.runtime =
        ef_cli_start_here (&cli, EF_CLI_JOBS_NONE, listen, sizeof listen);
    demo.opts.target = listen;
    if (!demo.runtime) {
        ef_metrics_server_destroy (&metrics);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    ef_metrics_server_started (metrics, true);
    int writers = ef_config_instances (cli.config, "db-writer");
    ef_info ("streaming %llu rows of %d dimensions to %s with %d writer(s)",
             (unsigned long long) demo.opts.rows, demo.opts.dim, listen,
             writers);
    pthread_t gen, prog;
    double start = (double) ef_clock_mono_us () / 1e6;
    pthread_create (&gen, NULL, s_generator, &demo);
    pthread_create (&prog, NULL, s_progress, &demo);
    rc = ef_cli_wait_runtime (demo.runtime);
    /* A signal drained the pipeline before the upload ended: the
       generator's call was cancelled and it returns on its own. */
    pthread_join (gen, NULL);
    pthread_join (prog, NULL);
    double secs = (double) ef_clock_mono_us () / 1e6 - start;
    ef_runtime_destroy (&demo.runtime);

    const ef_loadgen_result_t *r = &demo.result;
    double mb = (double) r->written * demo.opts.dim * sizeof (float) / 1e6;
    printf ("\nembedflow demo summary\n"
            "  rows sent        %llu\n"
            "  rows written     %llu\n"
            "  dead-lettered    %llu\n"
            "  writers          %d\n"
            "  time             %.2f s\n"
            "  throughput       %.0f rows/s, %.1f MB/s of vectors\n",
            (unsigned long long) r->received, (unsigned long long) r->written,
            (unsigned long long) r->dead_lettered, writers, secs,
            secs > 0 ? (double) r->written / secs : 0,
            secs > 0 ? mb / secs : 0);
    if (demo.rc != 0)
        printf ("  upload failed    %s\n", r->error);
    const char *schema = cli.globals->schema;
    if (cli.pgserver) {
        /* The private server stops with the demo; `run` on the same data
           directory brings it back with the data. */
        printf ("\nlook at the result: keep the private PostgreSQL running "
                "with\n  embedflow run --data-dir %s\nand in another "
                "terminal:\n",
                cli.globals->data_dir);
    }
    else
        printf ("\nlook at the result:\n");
    char conn[1024] = "$DATABASE_URL";
    if (cli.pgserver)
        ef_pg_redact (cli.globals->database, conn, sizeof conn, NULL, 0);
    printf ("  psql \"%s\" -c 'SELECT count(*) FROM %s.chunk'\n"
            "  psql \"%s\" -c 'SELECT c.document_id, c.chunk_index, e.dim, "
            "c.updated_at FROM %s.chunk c JOIN %s.embedding e USING (%s) "
            "ORDER BY c.id LIMIT 5'\n",
            conn, schema, conn, schema, schema,
            /* Citus joins distributed tables on their distribution column */
            strcmp (cli.globals->distribution, "citus") == 0 ? "document_id, id"
                                                             : "id");
    if (linger)
        ef_metrics_server_linger (metrics);
    ef_metrics_server_destroy (&metrics);
    ef_cli_close (&cli);
    if (rc == EF_EXIT_OK && demo.rc != 0)
        rc = EF_EXIT_FAIL;
    if (rc == EF_EXIT_OK && r->written + r->dead_lettered != demo.opts.rows)
        rc = EF_EXIT_FAIL;
    return rc;
}
