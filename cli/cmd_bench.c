/*  cmd_bench.c — `embedflow bench`: embedflow against what PostgreSQL can
    take, on the same tables, rows and connection count.

    For every writer count and every run, four contenders write the same
    rows into identical, freshly made schemas (bench/baselines.h):
      copy      (a) binary COPY into chunk + embedding, the ceiling
      staged    (b) COPY to staging + INSERT … ON CONFLICT, a careful program
      row       (c) row-at-a-time autocommitted INSERTs, an ORM; on a subset
                of the rows (it is slow), its rate extrapolated
      embedflow the pipeline in this process, fed by the load generator over
                real gRPC, each upload answered only once committed
      embedflow pull
                the same pipeline pulling the same rows with its grpc-puller
                from a GetEmbeddings server in this process (testkit/pullserver.h)
                as one pull job, timed from the call to the last row settled
                (--no-pull leaves it out)
    and the bench prints medians: rows/s, MB/s of vectors, ratios to (a)
    and (b), row latency percentiles, peak RSS, and the CPU seconds of this
    process and of the PostgreSQL server processes.

    With an ANN index configured (index.method), the contenders are those
    of loading into an indexed table instead (bench/indexload.h):
    through-index, load-then-build and embedflow, with the time until
    every row is searchable and query latency during and after the load.
*/
#include "actors/grpc_puller.h"
#include "bench/baselines.h"
#include "bench/indexload.h"
#include "bench/indexreport.h"
#include "bench/report.h"
#include "bench/servercpu.h"
#include "cli/cli.h"
#include "pipeline/observe.h"
#include "testkit/loadgen.h"
#include "testkit/pullserver.h"
#include "jobs/job.h"

#include "embedflow/address.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"
#include "postgres/pg.h"
#include "postgres/schema.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_WRITERS 16
#define S_MAX_RUNS    25
#define S_CONTENDERS  5
#define S_MAX_SWEEP   8

enum { S_COPY, S_STAGED, S_ROW, S_PIPELINE, S_PULL };
static const char *s_names[S_CONTENDERS] = {"copy", "staged", "row",
                                            "embedflow", "embedflow pull"};
static const char *s_schemas[S_CONTENDERS] = {
    "embedflow_bench_copy", "embedflow_bench_staged", "embedflow_bench_row",
    "embedflow_bench_pipeline", "embedflow_bench_pull"};
/* the pull job the bench configures; jobs exist once a key names them */
#define S_PULL_JOB "embedflow-bench-pull"

/* What one contender measured in one run. */
typedef struct {
    uint64_t rows;        /* rows committed */
    double seconds;       /* wall time */
    double rows_s;        /* rows / seconds */
    double mb_s;          /* MB of vector data / second */
    double p50, p95, p99; /* row latency, seconds */
    uint64_t peak_rss;    /* bytes, this process */
    double cpu_self;      /* CPU seconds of this process */
    double cpu_pg;        /* CPU seconds of the PostgreSQL processes, <0 n/a */
    double encode_s;      /* pull: the server's time encoding chunks */
    uint64_t calls;       /* pull: GetEmbeddings calls of the run */
} s_measure_t;

typedef struct {
    /* parameters */
    uint64_t rows;              /* rows per contender and run */
    uint64_t row_rows;          /* rows the row-at-a-time baseline writes */
    int dim;                    /* vector dimension */
    int chunk_rows;             /* rows per gRPC message */
    int batch_rows;             /* rows per transaction */
    int streams;                /* concurrent gRPC uploads */
    int writers[S_MAX_WRITERS]; /* writer counts to measure */
    int n_writers;              /* used */
    int runs;                   /* repetitions */
    double upsert_ratio;        /* share of rows that exist already */
    bool pull;                  /* also measure the pull pipeline */
    ef_cli_t *cli;              /* configuration and database */
    PGconn *monitor;            /* schema resets, pg_stat_activity */
    ef_servercpu_t server_cpu;  /* pg cpu s: what is counted, and how */
    /* results[contender][writer index][run] */
    s_measure_t results[S_CONTENDERS][S_MAX_WRITERS][S_MAX_RUNS];
    /* progress */
    const char *label;          /* what runs now */
    atomic_uint_least64_t done; /* rows committed or sent in this step */
    uint64_t total;             /* rows in this step */
    atomic_int stop_progress;   /* ends the progress thread */
    atomic_int interrupted;     /* SIGINT or SIGTERM arrived */
    uint64_t pull_base;         /* rows of the pull job settled before */
    pthread_mutex_t lock;       /* guards runtime */
    ef_runtime_t *runtime;      /* the pipeline while it runs */
    /* --memory */
    bool memory;          /* bounded-memory mode */
    int slow_ms;          /* sleep per INSERT/COPY statement into chunk */
    uint64_t mark_rows;   /* rows at which the first peak is taken */
    uint64_t rss_peak;    /* highest RSS sampled during the pipeline */
    uint64_t rss_at_mark; /* highest RSS sampled up to mark_rows */
    int rss_samples;      /* samples taken */
    /* --sweep */
    int sweep[S_MAX_SWEEP]; /* batch sizes to try */
    int n_sweep;            /* used; 0 = no sweep */
    /* with an ANN index: idx[contender][writer index][run] */
    bool index;                         /* index.method is not none */
    ef_schema_opts_t schema_opts;       /* the configured type and index */
    int64_t build_memory;               /* maintenance_work_mem of builds */
    int64_t searchable_rows;            /* embedflow: unindexed rows allowed */
    int queries;                        /* queries at rest */
    int64_t query_rate;                 /* queries a second while loading */
    ef_loadgen_vectors_t vectors;       /* how the rows' vectors are drawn */
    bool contender[EF_INDEXLOAD_KINDS]; /* measured (--contenders) */
    FILE *query_log;                    /* --query-log, or NULL */
    ef_indexload_result_t idx[EF_INDEXLOAD_KINDS][S_MAX_WRITERS][S_MAX_RUNS];
} s_bench_t;

/* --- helpers ------------------------------------------------------------- */

/* Resets the peak RSS the kernel keeps (VmHWM), where allowed. */
static void
s_reset_peak_rss (void)
{
    FILE *f = fopen ("/proc/self/clear_refs", "w");
    if (f) {
        fputs ("5", f);
        fclose (f);
    }
}

/* Drops and re-creates schema (empty tables of the current version).
   Returns 0, or -1 after logging why. */
static int
s_fresh_schema (s_bench_t *b, const char *schema)
{
    char sql[256], err[1024];
    snprintf (sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", schema);
    PGresult *res = PQexec (b->monitor, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    if (!ok) {
        ef_error ("cannot drop schema %s: %s", schema,
                  PQerrorMessage (b->monitor));
        return -1;
    }
    ef_schema_opts_t opts;
    ef_globals_schema_opts (b->cli->globals, &opts);
    opts.dim = b->dim;
    if (ef_schema_migrate_opts (b->monitor, schema, &opts, err, sizeof err)
        != 0) {
        ef_error ("%s", err);
        return -1;
    }
    /* every run starts from the same WAL state (needs superuser; a
       refusal only makes runs noisier) */
    res = PQexec (b->monitor, "CHECKPOINT");
    PQclear (res);
    return 0;
}

/* The rows every contender writes. seed differs for preloaded rows, so
   an upsert really changes them. */
static ef_loadgen_opts_t
s_gen (const s_bench_t *b, uint64_t seed)
{
    ef_loadgen_opts_t g = {0};
    g.rows = b->rows;
    g.dim = b->dim;
    g.chunk_rows = b->chunk_rows;
    g.streams = b->streams;
    g.rows_per_document = 16;
    g.source = "bench";
    g.seed = seed;
    g.vectors = b->vectors;
    return g;
}

static void
s_progress_add (void *arg, uint64_t rows)
{
    s_bench_t *b = arg;
    atomic_fetch_add (&b->done, rows);
}

/* Writes the first upsert_ratio of rows [0, rows) with other content, so
   that share of the contender's rows is an update. Returns 0 or -1. */
static int
s_preload (s_bench_t *b, const char *schema, uint64_t rows, int writers)
{
    uint64_t n = (uint64_t) ((double) rows * b->upsert_ratio);
    if (n == 0)
        return 0;
    ef_loadgen_opts_t g = s_gen (b, 4242);
    ef_baseline_opts_t o = {b->cli->globals->database,
                            schema,
                            &g,
                            0,
                            n,
                            b->batch_rows,
                            writers,
                            NULL,
                            NULL,
                            &b->interrupted};
    ef_baseline_result_t res;
    if (ef_baseline_run (EF_BASELINE_COPY, &o, NULL, NULL, NULL, &res) != 0) {
        ef_error ("preloading %s: %s", schema, res.error);
        return -1;
    }
    PGresult *r = PQexec (b->monitor, "CHECKPOINT");
    PQclear (r);
    return 0;
}

/* --- progress ------------------------------------------------------------ */

/* Shows progress and watches for signals until the bench ends: a signal
   stops the baseline or drains the pipeline that runs, and no more
   runs start. */
static void *
s_progress (void *arg)
{
    s_bench_t *b = arg;
    bool tty = isatty (STDERR_FILENO);
    const char *label = NULL;
    int64_t start = 0, last_line = 0;
    while (!atomic_load (&b->stop_progress)) {
        usleep (200 * 1000);
        if (ef_signals_pending ()) {
            if (!atomic_exchange (&b->interrupted, 1))
                fprintf (stderr, "\nbench: interrupted, stopping\n");
            pthread_mutex_lock (&b->lock);
            if (b->runtime)
                ef_runtime_stop (b->runtime);
            pthread_mutex_unlock (&b->lock);
        }
        int64_t now = ef_clock_mono_us ();
        if (label != b->label) {
            label = b->label;
            start = last_line = now;
        }
        if (!label)
            continue;
        uint64_t done = atomic_load (&b->done);
        if (label == s_names[S_PULL]) {
            /* the pull job's counters in the metrics registry */
            uint64_t received, settled;
            ef_pull_progress (S_PULL_JOB, &received, &settled);
            done = settled - b->pull_base;
        }
        if (b->memory && label == s_names[S_PIPELINE]) {
            /* sampled, not VmHWM: the peak up to the mark must be known
               when the mark passes */
            uint64_t rss = ef_process_rss_bytes ();
            b->rss_samples++;
            if (rss > b->rss_peak)
                b->rss_peak = rss;
            if (done <= b->mark_rows || b->rss_at_mark == 0)
                b->rss_at_mark = b->rss_peak;
        }
        double secs = (double) (now - start) / 1e6;
        double rate = secs > 0 ? (double) done / secs : 0;
        double eta =
            rate > 0 && b->total > done ? (double) (b->total - done) / rate : 0;
        if (tty)
            fprintf (stderr,
                     "\r  %-28s %9llu / %llu rows  %7.0f rows/s  ETA %3.0fs   ",
                     label, (unsigned long long) done,
                     (unsigned long long) b->total, rate, eta);
        else if (now - last_line >= 5000000) {
            fprintf (stderr, "progress: %s %llu / %llu rows, %.0f rows/s\n",
                     label, (unsigned long long) done,
                     (unsigned long long) b->total, rate);
            last_line = now;
        }
    }
    if (tty)
        fprintf (stderr, "\r%100s\r", "");
    return NULL;
}

/* --- one measurement ----------------------------------------------------- */

/* Fills m's derived fields from rows, seconds and the latency histogram. */
static void
s_finish (s_bench_t *b, s_measure_t *m, ef_histogram_t *latency)
{
    m->rows_s = m->seconds > 0 ? (double) m->rows / m->seconds : 0;
    m->mb_s = m->rows_s * b->dim * 4 / 1e6;
    m->p50 = ef_histogram_quantile (latency, 0.50);
    m->p95 = ef_histogram_quantile (latency, 0.95);
    m->p99 = ef_histogram_quantile (latency, 0.99);
    m->peak_rss = ef_process_peak_rss_bytes ();
}

typedef struct {
    s_bench_t *bench;
    ef_servercpu_sample_t *after; /* filled before the connections close */
} s_close_t;

static void
s_before_close (void *arg)
{
    s_close_t *c = arg;
    ef_servercpu_read (&c->bench->server_cpu, c->after);
}

/* Runs baseline kind with `writers` connections. Returns 0 or -1. */
static int
s_run_baseline (s_bench_t *b, int contender, int writers, s_measure_t *m)
{
    const char *schema = s_schemas[contender];
    uint64_t rows = contender == S_ROW ? b->row_rows : b->rows;
    if (s_fresh_schema (b, schema) != 0
        || (contender != S_COPY && s_preload (b, schema, rows, writers) != 0))
        return -1;
    ef_baseline_t kind = contender == S_COPY     ? EF_BASELINE_COPY
                         : contender == S_STAGED ? EF_BASELINE_STAGED
                                                 : EF_BASELINE_ROW;
    ef_loadgen_opts_t g = s_gen (b, 42);
    ef_baseline_opts_t o = {b->cli->globals->database,
                            schema,
                            &g,
                            0,
                            rows,
                            b->batch_rows,
                            writers,
                            s_progress_add,
                            b,
                            &b->interrupted};
    ef_histogram_t *latency = ef_metrics_histogram (
        "embedflow_bench_baseline_latency_seconds",
        "Row latency of a bench baseline (decoded -> committed).", schema);
    ef_metrics_reset ();
    s_reset_peak_rss ();
    ef_servercpu_sample_t before, after;
    ef_servercpu_read (&b->server_cpu, &before);
    s_close_t close_arg = {b, &after};
    atomic_store (&b->done, 0);
    b->total = rows;
    b->label = s_names[contender];
    double cpu0 = ef_process_cpu_seconds ();
    ef_baseline_result_t res;
    int rc =
        ef_baseline_run (kind, &o, latency, s_before_close, &close_arg, &res);
    b->label = NULL;
    if (rc != 0) {
        ef_error ("baseline %s: %s", s_names[contender], res.error);
        return -1;
    }
    if (atomic_load (&b->interrupted))
        return -1;
    m->cpu_self = ef_process_cpu_seconds () - cpu0;
    m->cpu_pg = ef_servercpu_diff (&before, &after);
    m->rows = res.rows;
    m->seconds = res.seconds;
    s_finish (b, m, latency);
    return 0;
}

typedef struct {
    s_bench_t *bench;
    ef_loadgen_opts_t opts;      /* what to send */
    ef_loadgen_result_t result;  /* what came back */
    int rc;                      /* ef_loadgen_run's */
    ef_servercpu_sample_t after; /* server CPU when the last reply came */
    ef_runtime_t *runtime;       /* stopped once the upload is over */
    char listen[64];             /* the receiver's HOST:PORT */
    pthread_t waiter;            /* index bench: runs ef_cli_wait_runtime */
    int wait_rc;                 /* its result */
} s_upload_t;

static void *
s_generator (void *arg)
{
    s_upload_t *u = arg;
    u->rc = ef_loadgen_run (&u->opts, &u->result,
                            (volatile uint64_t *) &u->bench->done);
    /* every row is committed once its upload got its reply: read the
       writers' backends while they still exist */
    ef_servercpu_read (&u->bench->server_cpu, &u->after);
    ef_runtime_stop (u->runtime);
    return NULL;
}

/* With --memory: makes every statement that inserts into schema's chunk
   table sleep slow_ms, so the database, not the client, sets the pace
   and every queue in front of it fills. Returns 0 or -1. */
static int
s_slow_down (s_bench_t *b, const char *schema)
{
    if (b->slow_ms <= 0)
        return 0;
    char sql[1024];
    snprintf (sql, sizeof sql,
              "CREATE FUNCTION %s.bench_slow () RETURNS trigger LANGUAGE "
              "plpgsql AS $$BEGIN PERFORM pg_sleep (%g); RETURN NULL; END$$;"
              "CREATE TRIGGER bench_slow AFTER INSERT ON %s.chunk FOR EACH "
              "STATEMENT EXECUTE FUNCTION %s.bench_slow ()",
              schema, b->slow_ms / 1000.0, schema, schema);
    PGresult *res = PQexec (b->monitor, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    if (!ok)
        ef_error ("cannot slow the database down: %s",
                  PQerrorMessage (b->monitor));
    return ok ? 0 : -1;
}

/* Points the bench's pipeline at schema with `writers` writers. Returns
   0, -1 (logged). */
static int
s_configure_pipeline (s_bench_t *b, int writers, const char *schema)
{
    char err[512], value[64];
    snprintf (value, sizeof value, "%d", writers);
    if (ef_config_set (b->cli->config, "actors.db-writer.instances", value, err,
                       sizeof err)
            != 0
        || ef_config_set (b->cli->config, "schema", schema, err, sizeof err)
               != 0) {
        ef_error ("cannot configure the pipeline: %s", err);
        return -1;
    }
    return 0;
}

/* Runs the pipeline in this process with `writers` writers. Returns 0 or
   -1. */
static int
s_run_pipeline (s_bench_t *b, int writers, s_measure_t *m)
{
    const char *schema = s_schemas[S_PIPELINE];
    if (s_fresh_schema (b, schema) != 0
        || s_preload (b, schema, b->rows, writers) != 0
        || s_slow_down (b, schema) != 0)
        return -1;
    char listen[64];
    if (s_configure_pipeline (b, writers, schema) != 0)
        return -1;
    ef_metrics_reset ();
    s_reset_peak_rss ();
    ef_servercpu_sample_t before;
    ef_servercpu_read (&b->server_cpu, &before);
    double cpu0 = ef_process_cpu_seconds ();
    s_upload_t u = {0};
    u.bench = b;
    u.opts = s_gen (b, 42);
    /* the load generator feeds it: no pull job runs */
    u.runtime =
        ef_cli_start_here (b->cli, EF_CLI_JOBS_NONE, listen, sizeof listen);
    if (!u.runtime)
        return -1;
    u.opts.target = listen;
    atomic_store (&b->done, 0);
    b->total = b->rows;
    b->label = s_names[S_PIPELINE];
    pthread_t gen;
    if (pthread_create (&gen, NULL, s_generator, &u) != 0) {
        ef_runtime_destroy (&u.runtime);
        return -1;
    }
    pthread_mutex_lock (&b->lock);
    b->runtime = u.runtime;
    pthread_mutex_unlock (&b->lock);
    if (atomic_load (&b->interrupted))
        ef_runtime_stop (u.runtime);
    int rc = ef_cli_wait_runtime (u.runtime);
    pthread_join (gen, NULL);
    b->label = NULL;
    pthread_mutex_lock (&b->lock);
    b->runtime = NULL;
    pthread_mutex_unlock (&b->lock);
    ef_runtime_destroy (&u.runtime);
    if (atomic_load (&b->interrupted))
        return -1;
    if (rc != 0 || u.rc != 0) {
        ef_error ("pipeline run failed: %s",
                  u.result.error[0] ? u.result.error : "the runtime failed");
        return -1;
    }
    m->cpu_self = ef_process_cpu_seconds () - cpu0;
    m->cpu_pg = ef_servercpu_diff (&before, &u.after);
    m->rows = u.result.written;
    m->seconds = u.result.seconds;
    s_finish (b, m, ef_metrics_pipeline_latency ());
    if (u.result.written + u.result.dead_lettered != b->rows) {
        ef_error ("pipeline wrote %llu and dead-lettered %llu of %llu rows",
                  (unsigned long long) u.result.written,
                  (unsigned long long) u.result.dead_lettered,
                  (unsigned long long) b->rows);
        return -1;
    }
    return 0;
}

/* --- the pull pipeline ---------------------------------------------------- */

typedef struct {
    s_bench_t *bench;            /* the bench */
    pthread_mutex_t lock;        /* guards the fields below */
    ef_runtime_t *runtime;       /* stopped when the run is over */
    bool done;                   /* the puller reported */
    ef_pull_report_t report;     /* what it reported */
    ef_servercpu_sample_t after; /* server CPU when the run ended */
} s_pull_run_t;

/* The puller's report of a run's end (on the thread in
   ef_runtime_wait): the run is over and every row settled; read the
   writers' backends while they still exist, stop the pipeline. */
static void
s_pull_done (const char *actor, zmsg_t **msg_p, void *arg)
{
    s_pull_run_t *p = arg;
    ef_pull_report_t report;
    if (strcmp (actor, "grpc-puller") != 0
        || ef_pull_report_read (*msg_p, &report) != 0
        || strcmp (report.job, S_PULL_JOB) != 0)
        return; /* not ours (the bench unschedules every other job) */
    pthread_mutex_lock (&p->lock);
    p->report = report;
    p->done = true;
    ef_servercpu_read (&p->bench->server_cpu, &p->after);
    if (p->runtime)
        ef_runtime_stop (p->runtime);
    pthread_mutex_unlock (&p->lock);
}

/* Sets the keys of the bench's pull job (or clears run_now when target
   is NULL, so the job is inert in later runs: it has no schedule).
   Returns 0 or -1 (logged). */
static int
s_pull_configure (s_bench_t *b, const char *target)
{
    char err[512], chunk[32];
    snprintf (chunk, sizeof chunk, "%d", b->chunk_rows);
    const char *keys[][2] = {
        {"jobs." S_PULL_JOB ".target", target},
        {"jobs." S_PULL_JOB ".source", "bench"},
        {"jobs." S_PULL_JOB ".chunk_size", chunk},
        {"jobs." S_PULL_JOB ".from_start", "true"},
        {"actors.scheduler.run_now", target ? S_PULL_JOB : ""},
    };
    for (size_t i = target ? 0 : 4; i < sizeof keys / sizeof keys[0]; i++)
        if (ef_config_set (b->cli->config, keys[i][0], keys[i][1], err,
                           sizeof err)
            != 0) {
            ef_error ("cannot configure the pull job: %s", err);
            return -1;
        }
    return 0;
}

/* Runs the pipeline with `writers` writers pulling b->rows rows from a
   GetEmbeddings server of this process. Returns 0 or -1. */
static int
s_run_pull (s_bench_t *b, int writers, s_measure_t *m)
{
    const char *schema = s_schemas[S_PULL];
    if (s_fresh_schema (b, schema) != 0
        || s_preload (b, schema, b->rows, writers) != 0)
        return -1;
    char err[512], target[64];
    ef_loadgen_opts_t g = s_gen (b, 42);
    ef_pullserver_t *server =
        ef_pullserver_new (&g, "127.0.0.1:0", err, sizeof err);
    if (!server) {
        ef_error ("%s", err);
        return -1;
    }
    snprintf (target, sizeof target, "127.0.0.1:%d",
              ef_pullserver_port (server));
    ef_info ("bench: pull server listening on %s", target);
    if (s_configure_pipeline (b, writers, schema) != 0) {
        ef_pullserver_destroy (&server);
        return -1;
    }
    if (s_pull_configure (b, target) != 0) {
        s_pull_configure (b, NULL);
        ef_pullserver_destroy (&server);
        return -1;
    }
    s_pull_run_t p;
    memset (&p, 0, sizeof p);
    p.bench = b;
    pthread_mutex_init (&p.lock, NULL);
    ef_metrics_reset ();
    s_reset_peak_rss ();
    ef_servercpu_sample_t before;
    ef_servercpu_read (&b->server_cpu, &before);
    double cpu0 = ef_process_cpu_seconds ();
    uint64_t received;
    ef_pull_progress (S_PULL_JOB, &received, &b->pull_base);
    atomic_store (&b->done, 0);
    b->total = b->rows;
    /* only the bench's own job, once; the receiver on a free port */
    char listen[64];
    ef_runtime_t *rt =
        ef_cli_start_here (b->cli, EF_CLI_JOBS_RUN_NOW, listen, sizeof listen);
    int rc = -1;
    if (rt) {
        ef_runtime_on_report (rt, s_pull_done, &p);
        b->label = s_names[S_PULL];
        pthread_mutex_lock (&p.lock);
        p.runtime = rt;
        if (p.done)
            ef_runtime_stop (rt);
        pthread_mutex_unlock (&p.lock);
        pthread_mutex_lock (&b->lock);
        b->runtime = rt;
        pthread_mutex_unlock (&b->lock);
        if (atomic_load (&b->interrupted))
            ef_runtime_stop (rt);
        rc = ef_cli_wait_runtime (rt);
        b->label = NULL;
        pthread_mutex_lock (&b->lock);
        b->runtime = NULL;
        pthread_mutex_unlock (&b->lock);
        pthread_mutex_lock (&p.lock);
        p.runtime = NULL;
        pthread_mutex_unlock (&p.lock);
        ef_runtime_destroy (&rt);
    }
    /* later runs share the config: the job stays, but never runs again */
    s_pull_configure (b, NULL);
    ef_pullserver_stats_t st;
    ef_pullserver_stats (server, &st);
    ef_pullserver_destroy (&server);
    pthread_mutex_destroy (&p.lock);
    if (atomic_load (&b->interrupted))
        return -1;
    const ef_pull_report_t *r = &p.report;
    if (rc != 0 || !p.done || strcmp (r->status, "completed") != 0) {
        ef_error ("pull pipeline run failed: %s",
                  !p.done     ? "the run did not report an end"
                  : *r->error ? r->error
                  : rc != 0   ? "the runtime failed"
                              : r->status);
        return -1;
    }
    if (r->written + r->dead != b->rows || st.rows_sent != b->rows) {
        ef_error ("pull pipeline wrote %llu and dead-lettered %llu of %llu "
                  "rows (the server sent %llu)",
                  (unsigned long long) r->written, (unsigned long long) r->dead,
                  (unsigned long long) b->rows,
                  (unsigned long long) st.rows_sent);
        return -1;
    }
    m->cpu_self = ef_process_cpu_seconds () - cpu0;
    m->cpu_pg = ef_servercpu_diff (&before, &p.after);
    m->rows = r->written;
    m->seconds = r->seconds;
    m->encode_s = st.encode_seconds;
    m->calls = r->calls;
    s_finish (b, m, ef_metrics_pipeline_latency ());
    return 0;
}

/* --- results ------------------------------------------------------------- */

/* The median of every field over the runs of one contender and writer
   count (each field on its own). */
static s_measure_t
s_medians (const s_bench_t *b, int c, int w)
{
    s_measure_t out = {0};
    double v[S_MAX_RUNS];
    int n = b->runs;
#define S_MED(field)                                                           \
    for (int r = 0; r < n; r++)                                                \
        v[r] = (double) b->results[c][w][r].field;                             \
    out.field = ef_report_median (v, n);
    S_MED (seconds)
    S_MED (rows_s)
    S_MED (mb_s)
    S_MED (p50)
    S_MED (p95)
    S_MED (p99)
    S_MED (cpu_self)
    S_MED (cpu_pg)
    S_MED (encode_s)
#undef S_MED
    for (int r = 0; r < n; r++)
        v[r] = (double) b->results[c][w][r].peak_rss;
    out.peak_rss = (uint64_t) ef_report_median (v, n);
    for (int r = 0; r < n; r++)
        v[r] = (double) b->results[c][w][r].calls;
    out.calls = (uint64_t) ef_report_median (v, n);
    out.rows = b->results[c][w][0].rows;
    return out;
}

static void
s_print_table (const s_bench_t *b, FILE *out)
{
    fprintf (out,
             "\nembedflow bench: %llu rows x %d dims (%.1f MB of vectors), "
             "batch %d rows, chunk %d rows, upsert ratio %.2f, median of %d "
             "run%s\n\n",
             (unsigned long long) b->rows, b->dim,
             (double) b->rows * b->dim * 4 / 1e6, b->batch_rows, b->chunk_rows,
             b->upsert_ratio, b->runs, b->runs == 1 ? "" : "s");
    fprintf (out, "%-7s %-14s %9s %8s %7s %7s %8s %8s %8s %8s %8s %8s\n",
             "writers", "contender", "rows/s", "MB/s", "x(a)", "x(b)", "p50 ms",
             "p95 ms", "p99 ms", "RSS MB", "cpu s", "pg cpu s");
    for (int w = 0; w < b->n_writers; w++) {
        s_measure_t med[S_CONTENDERS];
        for (int c = 0; c < S_CONTENDERS; c++)
            med[c] = s_medians (b, c, w);
        for (int c = 0; c < S_CONTENDERS; c++) {
            if (c == S_PULL && !b->pull)
                continue;
            const s_measure_t *m = &med[c];
            char pg[32];
            if (m->cpu_pg < 0)
                snprintf (pg, sizeof pg, "n/a");
            else
                snprintf (pg, sizeof pg, "%.1f", m->cpu_pg);
            fprintf (
                out,
                "%-7d %-14s %9.0f %8.1f %7.2f %7.2f %8.1f %8.1f %8.1f "
                "%8.0f %8.1f %8s\n",
                b->writers[w], c == S_ROW ? "row*" : s_names[c], m->rows_s,
                m->mb_s,
                med[S_COPY].rows_s > 0 ? m->rows_s / med[S_COPY].rows_s : 0,
                med[S_STAGED].rows_s > 0 ? m->rows_s / med[S_STAGED].rows_s : 0,
                m->p50 * 1e3, m->p95 * 1e3, m->p99 * 1e3,
                (double) m->peak_rss / 1048576.0, m->cpu_self, pg);
        }
        const s_measure_t *e = &med[S_PIPELINE];
        double ra = med[S_COPY].rows_s > 0 ? e->rows_s / med[S_COPY].rows_s : 0;
        double rb =
            med[S_STAGED].rows_s > 0 ? e->rows_s / med[S_STAGED].rows_s : 0;
        double rc = med[S_ROW].rows_s > 0 ? e->rows_s / med[S_ROW].rows_s : 0;
        fprintf (out,
                 "        targets: embedflow %.2f x (a) [>= 0.70 %s], %.2f x "
                 "(b) [>= 0.85 %s], %.1f x (c) [>= 15 %s]\n",
                 ra, ra >= 0.7 ? "met" : "MISSED", rb,
                 rb >= 0.85 ? "met" : "MISSED", rc,
                 rc >= 15 ? "met" : "MISSED");
    }
    fprintf (out,
             "\n(a) copy: binary COPY into chunk + embedding (the ceiling; "
             "new rows only)\n"
             "(b) staged: COPY into a staging table + INSERT ... ON CONFLICT "
             "per batch\n"
             "(c) row*: one autocommitted INSERT per row and table, measured "
             "on %llu rows; its rows/s is\n"
             "    extrapolated to the full %llu rows (time = rows / rate)\n"
             "latency: a row's chunk received (decoded, for the baselines) "
             "-> its row committed.\n"
             "cpu s: this process (load generator included); pg cpu s: "
             "%s.\n",
             (unsigned long long) b->row_rows, (unsigned long long) b->rows,
             b->server_cpu.note);
    if (b->pull)
        fprintf (out,
                 "embedflow pull: the pipeline's grpc-puller pulling the same "
                 "rows from a GetEmbeddings\n"
                 "    server in this process (its encoding is in cpu s), one "
                 "job run from the call to\n"
                 "    the last row committed; latency: chunk read from the "
                 "stream -> its row committed.\n");
}

/* One measurement as a JSON object; copy and staged are the medians the
   ratios are taken against. NULL when out of memory. */
static json_t *
s_measure_json (const s_measure_t *m, int contender, const s_measure_t *copy,
                const s_measure_t *staged)
{
    json_t *o = json_pack (
        "{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o}", "rows",
        (json_int_t) m->rows, "seconds", ef_report_real (m->seconds, 3),
        "rows_per_s", ef_report_real (m->rows_s, 1), "mb_per_s",
        ef_report_real (m->mb_s, 2), "ratio_copy",
        ef_report_real (copy->rows_s > 0 ? m->rows_s / copy->rows_s : 0, 3),
        "ratio_staged",
        ef_report_real (staged->rows_s > 0 ? m->rows_s / staged->rows_s : 0, 3),
        "latency_p50_s", ef_report_real (m->p50, 6), "latency_p95_s",
        ef_report_real (m->p95, 6), "latency_p99_s", ef_report_real (m->p99, 6),
        "peak_rss_bytes", (json_int_t) m->peak_rss, "cpu_self_s",
        ef_report_real (m->cpu_self, 3), "cpu_postgres_s",
        m->cpu_pg < 0 ? json_null () : ef_report_real (m->cpu_pg, 3));
    if (o && contender == S_PULL
        && (json_object_set_new (o, "server_encode_s",
                                 ef_report_real (m->encode_s, 3))
            || json_object_set_new (o, "calls",
                                    json_integer ((json_int_t) m->calls)))) {
        json_decref (o);
        return NULL;
    }
    return o;
}

/* The command line as typed, minus control characters, into out. */
static void
s_command_line (int argc, char **argv, char *out, size_t len)
{
    size_t used = (size_t) snprintf (out, len, "embedflow");
    for (int i = 0; i < argc && used + 1 < len; i++) {
        out[used++] = ' ';
        for (const char *p = argv[i]; *p && used + 1 < len; p++)
            if ((unsigned char) *p >= 0x20)
                out[used++] = *p;
    }
    out[used] = '\0';
}

/* Writes every measurement and the medians as JSON. Returns 0 or -1. */
static int
s_write_json (const s_bench_t *b, const char *path, int argc, char **argv)
{
    char command[4096];
    s_command_line (argc, argv, command, sizeof command);
    json_t *writers = json_array ();
    for (int w = 0; writers && w < b->n_writers; w++)
        json_array_append_new (writers, json_integer (b->writers[w]));
    json_t *results = json_array ();
    for (int w = 0; results && w < b->n_writers; w++) {
        s_measure_t med[S_CONTENDERS];
        for (int c = 0; c < S_CONTENDERS; c++)
            med[c] = s_medians (b, c, w);
        for (int c = 0; c < S_CONTENDERS; c++) {
            if (c == S_PULL && !b->pull)
                continue;
            json_t *runs = json_array ();
            for (int r = 0; runs && r < b->runs; r++)
                json_array_append_new (
                    runs, s_measure_json (&b->results[c][w][r], c, &med[S_COPY],
                                          &med[S_STAGED]));
            json_array_append_new (
                results,
                json_pack (
                    "{s:s, s:i, s:o, s:o}", "contender", s_names[c], "writers",
                    b->writers[w], "median",
                    s_measure_json (&med[c], c, &med[S_COPY], &med[S_STAGED]),
                    "runs", runs));
        }
    }
    /* json_string refuses bytes that are not UTF-8: the command is then
       null rather than the file lost */
    json_t *cmd = json_string (command);
    json_t *doc = json_pack (
        "{s:o, s:{s:I, s:I, s:i, s:s, s:i, s:i, s:i, s:i, s:o, s:b, s:o}, "
        "s:o}",
        "command", cmd ? cmd : json_null (), "params", "rows",
        (json_int_t) b->rows, "row_rows", (json_int_t) b->row_rows, "dim",
        b->dim, "vectors", ef_loadgen_vectors_name (b->vectors), "chunk_rows",
        b->chunk_rows, "batch_rows", b->batch_rows, "streams", b->streams,
        "runs", b->runs, "upsert_ratio", ef_report_real (b->upsert_ratio, 6),
        "pull", b->pull, "writers", writers, "results", results);
    return ef_report_dump_json (doc, path);
}

/* Draws throughput per writer count and the pipeline's latency
   percentiles into path (PNG) with gnuplot. Returns 0 or -1. */
static int
s_plot (const s_bench_t *b, const char *path)
{
    char *out = ef_report_gnuplot_string (path);
    char data[EF_REPORT_DATA_PATH];
    FILE *d = out ? ef_report_data (data) : NULL;
    if (!d) {
        free (out);
        return -1;
    }
    fprintf (d, "# writers copy staged row embedflow pull p50 p95 p99 (ms), "
                "pull p50 p95 p99 (ms)\n");
    for (int w = 0; w < b->n_writers; w++) {
        fprintf (d, "%d", b->writers[w]);
        s_measure_t e = s_medians (b, S_PIPELINE, w);
        s_measure_t p = s_medians (b, S_PULL, w);
        for (int c = 0; c < S_CONTENDERS; c++)
            fprintf (d, " %.1f", s_medians (b, c, w).rows_s);
        fprintf (d, " %.2f %.2f %.2f %.2f %.2f %.2f\n", e.p50 * 1e3,
                 e.p95 * 1e3, e.p99 * 1e3, p.p50 * 1e3, p.p95 * 1e3,
                 p.p99 * 1e3);
    }
    fclose (d);
    char *script = NULL;
    if (asprintf (
            &script,
            "set terminal pngcairo size 1100,450 noenhanced\n"
            "set output %s\n"
            "set multiplot layout 1,2 title 'embedflow bench: %llu rows x %d "
            "dims, median of %d'\n"
            "set key top left\nset grid\n"
            "set xlabel 'writers (= connections)'\nset ylabel 'rows/s'\n"
            "set xtics 1\nset yrange [0:*]\n"
            "set style data linespoints\n"
            "plot '%s' using 1:2 title '(a) COPY', '' using 1:3 title '(b) "
            "staged upsert', '' using 1:4 title '(c) row at a time', '' using "
            "1:5 title 'embedflow' lw 2%s\n"
            "set ylabel 'latency, ms (chunk received -> committed)'\n"
            "plot '%s' using 1:7 title 'p50', '' using 1:8 title 'p95', '' "
            "using 1:9 title 'p99'%s\n"
            "unset multiplot\n",
            out, (unsigned long long) b->rows, b->dim, b->runs, data,
            b->pull ? ", '' using 1:6 title 'embedflow pull' lw 2 dt 2" : "",
            data,
            b->pull ? ", '' using 1:10 title 'pull p50' dt 2, '' using 1:11 "
                      "title 'pull p95' dt 2, '' using 1:12 title 'pull p99' "
                      "dt 2"
                    : "")
        < 0)
        script = NULL;
    free (out);
    if (!script) {
        unlink (data);
        return -1;
    }
    int rc = ef_report_gnuplot (script, data);
    free (script);
    return rc;
}

/* Prints (and writes as JSON) the outcome of --memory. Returns
   EF_EXIT_OK, or EF_EXIT_FAIL when the JSON cannot be written. */
static int
s_print_memory (const s_bench_t *b, const s_measure_t *m, const char *json)
{
    double at_mark = (double) b->rss_at_mark / 1048576.0;
    double peak = (double) b->rss_peak / 1048576.0;
    double growth = at_mark > 0 ? peak / at_mark : 0;
    printf ("\nembedflow bench --memory: %llu rows x %d dims through %d "
            "writer(s) into a database slowed by %d ms per statement\n\n"
            "  rows written        %llu in %.1f s (%.0f rows/s)\n"
            "  peak RSS at %llu rows  %.1f MB\n"
            "  peak RSS at %llu rows  %.1f MB (%.2f x; %d samples)\n"
            "  bounded             %s (peak < 150 MB: %s; growth after %llu "
            "rows < 10%%: %s)\n",
            (unsigned long long) b->rows, b->dim, b->writers[0], b->slow_ms,
            (unsigned long long) m->rows, m->seconds, m->rows_s,
            (unsigned long long) b->mark_rows, at_mark,
            (unsigned long long) b->rows, peak, growth, b->rss_samples,
            peak < 150 && growth < 1.10 ? "yes" : "NO",
            peak < 150 ? "yes" : "no", (unsigned long long) b->mark_rows,
            growth < 1.10 ? "yes" : "no");
    if (!json)
        return EF_EXIT_OK;
    json_t *doc = json_pack (
        "{s:{s:I, s:i, s:i, s:i, s:I, s:o, s:I, s:I, s:I, s:i}}", "memory",
        "rows", (json_int_t) b->rows, "dim", b->dim, "writers", b->writers[0],
        "slow_ms", b->slow_ms, "rows_written", (json_int_t) m->rows, "seconds",
        ef_report_real (m->seconds, 3), "mark_rows", (json_int_t) b->mark_rows,
        "peak_rss_at_mark_bytes", (json_int_t) b->rss_at_mark, "peak_rss_bytes",
        (json_int_t) b->rss_peak, "samples", b->rss_samples);
    return ef_report_dump_json (doc, json) == 0 ? EF_EXIT_OK : EF_EXIT_FAIL;
}

/* --sweep: the pipeline alone for every writer count and batch size;
   prints the medians and the best configuration. Returns an exit code. */
static int
s_run_sweep (s_bench_t *b, const char *json)
{
    double rate[S_MAX_WRITERS][S_MAX_SWEEP], p99[S_MAX_WRITERS][S_MAX_SWEEP];
    int best_w = 0, best_s = 0;
    for (int w = 0; w < b->n_writers; w++)
        for (int k = 0; k < b->n_sweep; k++) {
            char value[32], err[512];
            snprintf (value, sizeof value, "%d", b->sweep[k]);
            if (ef_config_set (b->cli->config, "actors.splitter.batch_rows",
                               value, err, sizeof err)
                != 0) {
                ef_error ("--sweep %d: %s", b->sweep[k], err);
                return EF_EXIT_USAGE;
            }
            b->batch_rows = b->sweep[k];
            double rs[S_MAX_RUNS], ps[S_MAX_RUNS];
            for (int r = 0; r < b->runs; r++) {
                s_measure_t m = {0};
                if (s_run_pipeline (b, b->writers[w], &m) != 0)
                    return EF_EXIT_FAIL;
                rs[r] = m.rows_s;
                ps[r] = m.p99;
                fprintf (stderr,
                         "%sbench: sweep writers %d batch %d run %d %8.0f "
                         "rows/s\n",
                         isatty (STDERR_FILENO) ? "\r\033[K" : "",
                         b->writers[w], b->sweep[k], r + 1, m.rows_s);
            }
            rate[w][k] = ef_report_median (rs, b->runs);
            p99[w][k] = ef_report_median (ps, b->runs);
            if (rate[w][k] > rate[best_w][best_s])
                best_w = w, best_s = k;
        }
    printf ("\nembedflow bench --sweep: %llu rows x %d dims, median of %d "
            "run%s: rows/s (p99 latency ms)\n\n%-8s",
            (unsigned long long) b->rows, b->dim, b->runs,
            b->runs == 1 ? "" : "s", "writers");
    for (int k = 0; k < b->n_sweep; k++) {
        char label[32];
        snprintf (label, sizeof label, "batch %d", b->sweep[k]);
        printf (" %17s", label);
    }
    printf ("\n");
    for (int w = 0; w < b->n_writers; w++) {
        printf ("%-8d", b->writers[w]);
        for (int k = 0; k < b->n_sweep; k++)
            printf (" %9.0f (%5.0f)", rate[w][k], p99[w][k] * 1e3);
        printf ("\n");
    }
    printf ("\nbest: --writers %d --batch-rows %d (%.0f rows/s); in a "
            "config file:\n\nactors:\n  splitter:\n    batch_rows: %d\n"
            "  db-writer:\n    instances: %d\n",
            b->writers[best_w], b->sweep[best_s], rate[best_w][best_s],
            b->sweep[best_s], b->writers[best_w]);
    if (!json)
        return EF_EXIT_OK;
    json_t *points = json_array ();
    for (int w = 0; points && w < b->n_writers; w++)
        for (int k = 0; k < b->n_sweep; k++)
            json_array_append_new (
                points,
                json_pack ("{s:i, s:i, s:o, s:o}", "writers", b->writers[w],
                           "batch_rows", b->sweep[k], "rows_per_s",
                           ef_report_real (rate[w][k], 1), "latency_p99_s",
                           ef_report_real (p99[w][k], 6)));
    json_t *doc = json_pack ("{s:o, s:{s:i, s:i, s:o}}", "sweep", points,
                             "best", "writers", b->writers[best_w],
                             "batch_rows", b->sweep[best_s], "rows_per_s",
                             ef_report_real (rate[best_w][best_s], 1));
    return ef_report_dump_json (doc, json) == 0 ? EF_EXIT_OK : EF_EXIT_FAIL;
}

/* --- with an ANN index ---------------------------------------------------- */

/* Waits for the index bench's pipeline on a thread of its own, as
   s_run_pipeline does on the main thread. */
static void *
s_index_wait (void *arg)
{
    s_upload_t *u = arg;
    u->wait_rc = ef_cli_wait_runtime (u->runtime);
    return NULL;
}

static void s_index_end (void *arg);

/* The embedflow contender's load (ef_indexload_load_fn): the pipeline
   in this process, fed by the load generator. It keeps running after
   the upload, so what indexes the rows in the background (the
   index-sealer) goes on until s_index_end. */
static int
s_index_load (void *arg, const char *schema, int writers, double *seconds,
              char *err, size_t errlen)
{
    s_upload_t *u = arg;
    s_bench_t *b = u->bench;
    if (s_configure_pipeline (b, writers, schema) != 0) {
        snprintf (err, errlen, "cannot configure the pipeline");
        return -1;
    }
    memset (&u->result, 0, sizeof u->result);
    u->opts = s_gen (b, 42);
    u->runtime = ef_cli_start_here (b->cli, EF_CLI_JOBS_NONE, u->listen,
                                    sizeof u->listen);
    if (!u->runtime) {
        snprintf (err, errlen, "the pipeline did not start");
        return -1;
    }
    u->opts.target = u->listen;
    if (pthread_create (&u->waiter, NULL, s_index_wait, u) != 0) {
        ef_runtime_destroy (&u->runtime);
        snprintf (err, errlen, "cannot start a thread");
        return -1;
    }
    pthread_mutex_lock (&b->lock);
    b->runtime = u->runtime;
    pthread_mutex_unlock (&b->lock);
    if (atomic_load (&b->interrupted))
        ef_runtime_stop (u->runtime);
    atomic_store (&b->done, 0);
    b->total = b->rows;
    b->label = ef_indexload_name (EF_INDEXLOAD_EMBEDFLOW);
    u->rc =
        ef_loadgen_run (&u->opts, &u->result, (volatile uint64_t *) &b->done);
    b->label = NULL;
    if (u->rc != 0 || u->result.written != b->rows) {
        snprintf (err, errlen,
                  "the pipeline wrote %llu and dead-lettered %llu of %llu "
                  "rows%s%s",
                  (unsigned long long) u->result.written,
                  (unsigned long long) u->result.dead_lettered,
                  (unsigned long long) b->rows, u->result.error[0] ? ": " : "",
                  u->result.error);
        s_index_end (u);
        return -1;
    }
    *seconds = u->result.seconds;
    return 0;
}

/* Stops the pipeline s_index_load started (ef_indexload_end_fn). */
static void
s_index_end (void *arg)
{
    s_upload_t *u = arg;
    s_bench_t *b = u->bench;
    ef_runtime_stop (u->runtime);
    pthread_join (u->waiter, NULL);
    pthread_mutex_lock (&b->lock);
    b->runtime = NULL;
    pthread_mutex_unlock (&b->lock);
    ef_runtime_destroy (&u->runtime);
    if (u->wait_rc != 0)
        ef_error ("the pipeline ended with an error");
}

/* Sets which[k] for each contender named in list (comma separated),
   every one when list is NULL. Returns 0, or -1 for an unknown name or
   an empty list. */
static int
s_parse_contenders (const char *list, bool which[EF_INDEXLOAD_KINDS])
{
    for (int k = 0; k < EF_INDEXLOAD_KINDS; k++)
        which[k] = list == NULL;
    if (!list)
        return 0;
    int n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn (p, ",");
        int k = 0;
        while (k < EF_INDEXLOAD_KINDS
               && !(strlen (ef_indexload_name (k)) == len
                    && strncmp (p, ef_indexload_name (k), len) == 0))
            k++;
        if (k == EF_INDEXLOAD_KINDS)
            return -1;
        which[k] = true;
        n++;
        p += len + (p[len] == ',');
    }
    return n > 0 ? 0 : -1;
}

/* Schema of each index contender. */
static const char *s_index_schemas[EF_INDEXLOAD_KINDS] = {
    "embedflow_bench_through_index", "embedflow_bench_load_then_build",
    "embedflow_bench_pipeline"};

/* The index bench's runs as its reports take them. */
static ef_indexreport_t
s_index_report (const s_bench_t *b)
{
    return (ef_indexreport_t){.rows = b->rows,
                              .dim = b->dim,
                              .batch_rows = b->batch_rows,
                              .runs = b->runs,
                              .writers = b->writers,
                              .n_writers = b->n_writers,
                              .contender = b->contender,
                              .index = &b->schema_opts.index,
                              .vector_type = b->cli->globals->vector_type,
                              .vectors = ef_loadgen_vectors_name (b->vectors),
                              .build_memory = b->build_memory,
                              .searchable_rows = b->searchable_rows,
                              .queries = b->queries,
                              .query_rate = b->query_rate,
                              .results = &b->idx[0][0][0],
                              .max_writers = S_MAX_WRITERS,
                              .max_runs = S_MAX_RUNS};
}

/* Every run of the three contenders. Returns 0 or -1 (logged). */
static int
s_run_index (s_bench_t *b)
{
    s_upload_t u;
    memset (&u, 0, sizeof u);
    u.bench = b;
    for (int w = 0; w < b->n_writers; w++)
        for (int r = 0; r < b->runs; r++)
            for (int k = 0; k < EF_INDEXLOAD_KINDS; k++) {
                if (!b->contender[k])
                    continue;
                ef_loadgen_opts_t g = s_gen (b, 42);
                ef_indexload_opts_t o = {
                    .conninfo = b->cli->globals->database,
                    .schema = s_index_schemas[k],
                    .schema_opts = &b->schema_opts,
                    .gen = &g,
                    .batch_rows = b->batch_rows,
                    .writers = b->writers[w],
                    .build_memory = b->build_memory,
                    .searchable_rows = b->searchable_rows,
                    .settle_segments =
                        b->schema_opts.segmented
                            ? (int) b->cli->globals->index_max_segments
                            : 0,
                    .queries = b->queries,
                    .query_rate = (double) b->query_rate,
                    .recall_queries = b->queries < 50 ? b->queries : 50,
                    .load = s_index_load,
                    .end = s_index_end,
                    .load_arg = &u,
                    .progress = s_progress_add,
                    .progress_arg = b,
                    .stop = &b->interrupted,
                    .query_log = b->query_log,
                    .run = r + 1};
                ef_indexload_result_t *m = &b->idx[k][w][r];
                if (k != EF_INDEXLOAD_EMBEDFLOW) {
                    atomic_store (&b->done, 0);
                    b->total = b->rows;
                    b->label = ef_indexload_name (k);
                }
                int rc = ef_indexload_run (k, &o, m);
                b->label = NULL;
                if (atomic_load (&b->interrupted))
                    return -1;
                if (rc != 0) {
                    ef_error ("%s: %s", ef_indexload_name (k), m->error);
                    return -1;
                }
                fprintf (stderr,
                         "%sbench: writers %d run %d %-16s %8.0f rows/s, "
                         "searchable after %.1f s\n",
                         isatty (STDERR_FILENO) ? "\r\033[K" : "",
                         b->writers[w], r + 1, ef_indexload_name (k), m->rows_s,
                         m->searchable_s);
            }
    return 0;
}

/* --- the command --------------------------------------------------------- */

/* Parses a comma list of integers in [1, max] like "1,2,4" into out
   (at most cap of them). Returns how many, -1 when malformed. */
static int
s_parse_list (const char *text, long max, int *out, int cap)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol (p, &end, 10);
        if (end == p || errno || v < 1 || v > max || n == cap
            || (*end && *end != ','))
            return -1;
        out[n++] = (int) v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p)
            return -1;
    }
    return n > 0 ? n : -1;
}

static void
s_usage (const ef_cli_flag_t *flags, ef_cli_t *cli)
{
    printf (
        "usage: embedflow bench [--rows N] [--dim N] [--writers 1,2,4] "
        "[--runs N] [options]\n\n"
        "Measures embedflow end to end (load generator -> gRPC -> pipeline -> "
        "PostgreSQL)\nagainst three baselines writing the same rows into the "
        "same tables over the\nsame number of connections: (a) binary COPY, "
        "(b) COPY to staging + INSERT ...\nON CONFLICT, (c) row-at-a-time "
        "INSERTs. Then the same pipeline pulls the same rows\nwith its "
        "grpc-puller from a built-in GetEmbeddings server (--no-pull skips "
        "it).\nEvery run starts from freshly made\nschemas "
        "embedflow_bench_*. Without a database it starts a private "
        "PostgreSQL\nin --data-dir.\n\nWith an ANN index (--index.method hnsw "
        "or ivfflat, on a server with pgvector)\nthe contenders are "
        "through-index (COPY into the indexed table), load-then-build\n(COPY, "
        "then CREATE INDEX) and embedflow, measured for the time until every "
        "row is\nsearchable and for top-10 query latency during and after the "
        "load.\n\nbench options:\n");
    ef_cli_print_flags (flags);
    ef_cli_print_config_help (cli);
}

/* --target: one upload of b->rows to a pipeline running elsewhere; the
   UploadResult comes once every row is committed or dead-lettered, so
   the time is end to end. Prints one JSON line. Returns an exit code. */
static int
s_run_target (s_bench_t *b, const char *target)
{
    ef_loadgen_opts_t opts = {0};
    opts.target = target;
    opts.rows = b->rows;
    opts.dim = b->dim;
    opts.chunk_rows = b->chunk_rows;
    opts.streams = b->streams;
    opts.seed = (uint64_t) ef_clock_wall_us ();
    opts.vectors = b->vectors;
    opts.timeout_ms = 3600000;
    ef_loadgen_result_t res;
    memset (&res, 0, sizeof res);
    if (ef_loadgen_run (&opts, &res, NULL) != 0) {
        fprintf (stderr, "embedflow bench: %s\n", res.error);
        return EF_EXIT_FAIL;
    }
    json_t *line = json_pack (
        "{s:s, s:I, s:I, s:I, s:f, s:I}", "target", target, "rows",
        (json_int_t) res.received, "written", (json_int_t) res.written,
        "dead_lettered", (json_int_t) res.dead_lettered, "seconds", res.seconds,
        "rows_s",
        (json_int_t) (res.seconds > 0
                          ? llround ((double) res.received / res.seconds)
                          : 0));
    /* nine digits: milliseconds of any run shorter than eleven days */
    char *text =
        line ? json_dumps (line, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION (9))
             : NULL;
    json_decref (line);
    if (!text) {
        fprintf (stderr, "embedflow bench: out of memory\n");
        return EF_EXIT_FAIL;
    }
    printf ("%s\n", text);
    free (text);
    return EF_EXIT_OK;
}

/* bench's numeric flags, typed as config keys are; rows, runs and
   slow-ms have no default here: 0 (below their minimum) means "not
   given", and --memory picks other defaults than a comparison. */
static const ef_option_t s_numbers[] = {
    {"rows", EF_OPT_INT, NULL, 0, 1, INT64_C (1) << 40, "rows per run"},
    {"row_rows", EF_OPT_INT, "3000", 0, 1, INT64_C (1) << 40, "row rows"},
    {"chunk_rows", EF_OPT_INT, "256", 0, 1, 1000000, "rows per message"},
    {"batch_rows", EF_OPT_INT, "1000", 0, 1, 1000000, "rows per batch"},
    {"runs", EF_OPT_INT, NULL, 0, 1, S_MAX_RUNS, "runs of each"},
    {"streams", EF_OPT_INT, "1", 0, 1, 64, "concurrent uploads"},
    {"slow_ms", EF_OPT_MS, NULL, 0, 1, 10000, "sleep per statement"},
    {"searchable_rows", EF_OPT_INT, NULL, 0, 1, INT64_C (1) << 40,
     "unindexed rows"},
    {"queries", EF_OPT_INT, "200", 0, 1, 100000, "queries at rest"},
    {"query_rate", EF_OPT_INT, "20", 0, 0, 100000,
     "queries a second while loading"},
    EF_OPTION_END};

int
ef_cmd_bench (int argc, char **argv)
{
    ef_signals_init ();
    char *writers = NULL, *upsert = NULL, *json = NULL, *plot = NULL,
         *memory = NULL, *sweep = NULL, *no_pull = NULL, *target = NULL,
         *contenders = NULL, *query_log = NULL, *vectors = NULL;
    int64_t rows = 0, row_rows = 0, chunk_rows = 0, batch_rows = 0, runs = 0,
            streams = 0, slow_ms = 0, searchable_rows = 0, queries = 0,
            query_rate = -1;
    const ef_cli_flag_t flags[] = {
        {"rows", "N",
         "rows per contender and run (default 100000, --memory 1000000)", NULL,
         &s_numbers[0], &rows},
        {"row-rows", "N",
         "rows the row-at-a-time baseline writes (default 3000)", NULL,
         &s_numbers[1], &row_rows},
        {"chunk-rows", "N", "rows per gRPC message (default 256)", NULL,
         &s_numbers[2], &chunk_rows},
        {"batch-rows", "N", "rows per transaction (default 1000)", NULL,
         &s_numbers[3], &batch_rows},
        {"writers", "LIST", "writer counts = connections (default 1,2)",
         &writers, NULL, NULL},
        {"runs", "N", "runs of each, medians reported, 1..25 (default 3)", NULL,
         &s_numbers[4], &runs},
        {"upsert-ratio", "R", "share of rows that already exist (default 0)",
         &upsert, NULL, NULL},
        {"streams", "N", "concurrent gRPC uploads, 1..64 (default 1)", NULL,
         &s_numbers[5], &streams},
        {"json", "FILE", "also write every measurement as JSON", &json, NULL,
         NULL},
        {"plot", "FILE", "draw throughput and latency into a PNG (gnuplot)",
         &plot, NULL, NULL},
        {"memory", NULL,
         "bounded-memory mode: only the pipeline, into a slowed database, "
         "RSS sampled (default 1000000 rows)",
         &memory, NULL, NULL},
        {"sweep", "LIST",
         "sweep mode: the pipeline alone for every --writers count and "
         "each of these batch sizes (e.g. 250,500,1000,2000); prints the "
         "best",
         &sweep, NULL, NULL},
        {"no-pull", NULL,
         "skip the pull pipeline (grpc-puller from a built-in "
         "GetEmbeddings server)",
         &no_pull, NULL, NULL},
        {"slow-ms", "MS",
         "--memory: sleep per statement into chunk, 1ms..10s (default 5)", NULL,
         &s_numbers[6], &slow_ms},
        {"target", "HOST:PORT",
         "only upload --rows with the load generator to an embedflow that "
         "runs elsewhere (split across hosts, say) and print one JSON line: "
         "rows/s until every row is acknowledged; no database, no baselines",
         &target, NULL, NULL},
        {"searchable-rows", "N",
         "with an index: embedflow counts as searchable once at most N "
         "rows await an index (default index.seal_rows, its growing "
         "segment)",
         NULL, &s_numbers[7], &searchable_rows},
        {"queries", "N",
         "with an index: top-10 queries at rest after each load (default "
         "200)",
         NULL, &s_numbers[8], &queries},
        {"query-rate", "N",
         "with an index: top-10 queries a second while a contender loads "
         "and indexes, as an API server sends them (default 20; 0 = back "
         "to back)",
         NULL, &s_numbers[9], &query_rate},
        {"query-log", "FILE",
         "with an index: write every query's start (seconds from its "
         "load's start) and latency as tab-separated lines, to see when "
         "queries are slow",
         &query_log, NULL, NULL},
        {"vectors", "KIND",
         "how the load generator draws vectors: clustered (documents on "
         "topics, like text embeddings; the default) or uniform (noise in "
         "every component, where an ANN index finds little: the runs "
         "before clustered vectors)",
         &vectors, NULL, NULL},
        {"contenders", "LIST",
         "with an index: which to measure, of through-index, "
         "load-then-build and embedflow (default all; the targets need "
         "all three)",
         &contenders, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "bench", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help)
            s_usage (flags, &cli);
        ef_cli_close (&cli);
        return rc;
    }
    s_bench_t *b = calloc (1, sizeof *b);
    if (!b) {
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    b->cli = &cli;
    pthread_mutex_init (&b->lock, NULL);
    b->dim = (int) cli.globals->dim;
    const char *bad = NULL;
    b->memory = memory != NULL;
    b->pull = no_pull == NULL;
    b->rows = rows ? (uint64_t) rows : b->memory ? 1000000 : 100000;
    b->row_rows = (uint64_t) row_rows;
    b->chunk_rows = (int) chunk_rows;
    b->batch_rows = (int) batch_rows;
    b->runs = runs ? (int) runs : b->memory ? 1 : 3;
    b->streams = (int) streams;
    b->slow_ms = slow_ms ? (int) slow_ms : b->memory ? 5 : 0;
    if (sweep
        && (b->n_sweep = s_parse_list (sweep, 1000000, b->sweep, S_MAX_SWEEP))
               < 0) {
        b->n_sweep = 0;
        bad = "--sweep must be a list of up to 8 batch sizes such as "
              "250,500,1000";
    }
    if (sweep && b->memory)
        bad = "--sweep and --memory do not go together";
    b->n_writers = s_parse_list (writers ? writers : "1,2", S_MAX_WRITERS,
                                 b->writers, S_MAX_WRITERS);
    if (b->n_writers < 0) {
        b->n_writers = 0;
        bad = "--writers must be a list of counts 1..16 such as 1,2,4";
    }
    if (upsert) {
        char *end;
        b->upsert_ratio = strtod (upsert, &end);
        if (end == upsert || *end || !(b->upsert_ratio >= 0)
            || b->upsert_ratio > 1)
            bad = "--upsert-ratio must be a number from 0 to 1";
    }
    if (b->row_rows > b->rows)
        b->row_rows = b->rows;
    ef_globals_schema_opts (cli.globals, &b->schema_opts);
    b->schema_opts.dim = b->dim;
    b->index =
        b->schema_opts.index.method != EF_INDEX_NONE && !b->memory && !sweep;
    /* the baselines' builds get the memory the sealer's get */
    b->build_memory = cli.globals->index_build_memory;
    b->searchable_rows =
        searchable_rows ? searchable_rows : cli.globals->index_seal_rows;
    b->queries = (int) queries;
    b->query_rate = query_rate < 0 ? 20 : query_rate;
    if (vectors && ef_loadgen_vectors_parse (vectors, &b->vectors) != 0)
        bad = "--vectors must be clustered or uniform";
    if (s_parse_contenders (contenders, b->contender) != 0)
        bad = "--contenders must be a list of through-index, "
              "load-then-build and embedflow";
    if (b->index && b->upsert_ratio > 0)
        bad = "--upsert-ratio is not measured with an index (index.method): "
              "every contender loads new rows";
    if (query_log && !b->index)
        bad = "--query-log needs an index (index.method): without one no "
              "query runs";
    /* no gnuplot string can hold a newline: said now, not after the
       measuring */
    if (plot
        && (strchr (plot, '\n') || (query_log && strchr (query_log, '\n'))))
        bad = "--plot cannot draw into or from a path with a newline";
    char err[512];
    snprintf (err, sizeof err, "%d", b->batch_rows);
    if (!bad
        && ef_config_set (cli.config, "actors.splitter.batch_rows", err, err,
                          sizeof err)
               != 0)
        bad = "--batch-rows is out of the splitter's range";
    if (bad) {
        fprintf (stderr, "embedflow bench: %s\n", bad);
        free (b);
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    char host[256], port[16];
    if (target
        && ef_address_split (target, host, sizeof host, port, sizeof port)
               != 0) {
        fprintf (stderr, "embedflow bench: --target must be HOST:PORT\n");
        free (b);
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    if (target) {
        rc = s_run_target (b, target);
        free (b);
        ef_cli_close (&cli);
        return rc;
    }
    if (plot && !ef_report_have_gnuplot ()) {
        fprintf (stderr, "embedflow bench: --plot: gnuplot is not available "
                         "(apt-get install gnuplot-nox); measuring without "
                         "the plot\n");
        plot = NULL;
    }
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_START_PRIVATE);
    if (db_rc != EF_EXIT_OK) {
        free (b);
        ef_cli_close (&cli);
        return db_rc;
    }
    /* every session of this bench, ours and the pipeline's, carries one
       application_name: that is how the server's CPU for it is found */
    char appname[64];
    snprintf (appname, sizeof appname, "embedflow-bench-%d", (int) getpid ());
    setenv ("PGAPPNAME", appname, 1);
    b->monitor = ef_pg_connect (cli.globals->database, "embedflow bench", err,
                                sizeof err);
    if (!b->monitor) {
        ef_error ("%s", err);
        free (b);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    ef_distribution_t dist = EF_DIST_NONE;
    ef_servercpu_init (&b->server_cpu, b->monitor, appname,
                       ef_distribution_parse (cli.globals->distribution, &dist)
                               == 0
                           && dist == EF_DIST_CITUS);
    ef_info ("bench: %llu rows x %d dims, writers %s, %d run(s)",
             (unsigned long long) b->rows, b->dim, writers ? writers : "1,2",
             b->runs);
    /* the pipeline's start/stop chatter would bury the figures */
    if (!cli.globals->verbose)
        ef_log_set_level (EF_LOG_WARN);
    pthread_t progress;
    bool progress_started =
        pthread_create (&progress, NULL, s_progress, b) == 0;
    rc = EF_EXIT_OK;
    if (b->memory) {
        b->mark_rows = b->rows / 5;
        s_measure_t *m = &b->results[S_PIPELINE][0][0];
        if (s_run_pipeline (b, b->writers[0], m) != 0)
            rc = EF_EXIT_FAIL;
        atomic_store (&b->stop_progress, 1);
        if (progress_started)
            pthread_join (progress, NULL);
        progress_started = false;
        if (rc == EF_EXIT_OK)
            rc = s_print_memory (b, m, json);
    }
    if (b->n_sweep && rc == EF_EXIT_OK) {
        int src = s_run_sweep (b, json);
        atomic_store (&b->stop_progress, 1);
        if (progress_started)
            pthread_join (progress, NULL);
        progress_started = false;
        rc = src;
    }
    if (b->index && rc == EF_EXIT_OK && query_log
        && (!(b->query_log = fopen (query_log, "w"))
            || fputs (EF_INDEXLOAD_LOG_HEADER, b->query_log) < 0)) {
        ef_error ("--query-log %s: %s", query_log, strerror (errno));
        rc = EF_EXIT_FAIL;
    }
    if (b->index && rc == EF_EXIT_OK && s_run_index (b) != 0)
        rc = EF_EXIT_FAIL;
    if (b->query_log && fclose (b->query_log) != 0) {
        ef_error ("--query-log %s: %s", query_log, strerror (errno));
        rc = EF_EXIT_FAIL;
    }
    b->query_log = NULL;
    for (int w = 0; w < b->n_writers && rc == EF_EXIT_OK && !b->memory
                    && !b->n_sweep && !b->index;
         w++)
        for (int r = 0; r < b->runs && rc == EF_EXIT_OK; r++)
            for (int c = 0; c < S_CONTENDERS && rc == EF_EXIT_OK; c++) {
                if (c == S_PULL && !b->pull)
                    continue;
                s_measure_t *m = &b->results[c][w][r];
                int step =
                    c == S_PIPELINE ? s_run_pipeline (b, b->writers[w], m)
                    : c == S_PULL   ? s_run_pull (b, b->writers[w], m)
                                    : s_run_baseline (b, c, b->writers[w], m);
                if (step != 0)
                    rc = EF_EXIT_FAIL;
                else
                    /* on a terminal, over the progress line */
                    fprintf (stderr,
                             "%sbench: writers %d run %d %-14s %8.0f rows/s "
                             "%6.1f s\n",
                             isatty (STDERR_FILENO) ? "\r\033[K" : "",
                             b->writers[w], r + 1, s_names[c], m->rows_s,
                             m->seconds);
            }
    atomic_store (&b->stop_progress, 1);
    if (progress_started)
        pthread_join (progress, NULL);
    if (atomic_load (&b->interrupted))
        fprintf (stderr, "embedflow bench: interrupted, no results\n");
    if (rc == EF_EXIT_OK && b->index) {
        char command[4096];
        s_command_line (argc, argv, command, sizeof command);
        ef_indexreport_t report = s_index_report (b);
        report.query_log = query_log;
        ef_indexreport_print (&report, stdout);
        if (json && ef_indexreport_json (&report, json, command) != 0)
            rc = EF_EXIT_FAIL;
        if (plot && ef_indexreport_plot (&report, plot) != 0) {
            ef_error ("gnuplot failed to draw %s", plot);
            rc = EF_EXIT_FAIL;
        }
        else if (plot)
            printf ("plot: %s\n", plot);
    }
    else if (rc == EF_EXIT_OK && !b->memory && !b->n_sweep) {
        s_print_table (b, stdout);
        if (json && s_write_json (b, json, argc, argv) != 0)
            rc = EF_EXIT_FAIL;
        if (plot && s_plot (b, plot) != 0) {
            ef_error ("gnuplot failed to draw %s", plot);
            rc = EF_EXIT_FAIL;
        }
        else if (plot)
            printf ("plot: %s\n", plot);
    }
    PQfinish (b->monitor);
    free (b);
    ef_cli_close (&cli);
    return rc;
}
