/*  indexload.c — loading into an ANN-indexed table, three ways, with
    queries running meanwhile (see indexload.h).
*/
#include "bench/indexload.h"

#include "bench/baselines.h"
#include "bench/report.h"
#include "embedflow/actor.h"
#include "postgres/pg.h"
#include "postgres/segments.h"

#include "embedflow/v1/embedding.pb-c.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* query vectors made once per run and used round robin */
#define S_QUERY_VECTORS 256
/* how often the embedflow contender's segments are looked at (each
   look is one query on its bookkeeping, on the builders' cores) */
#define S_POLL_MS 100
/* an index that is not complete this long after the load is a failure */
#define S_INDEX_DEADLINE_S 3600.0

static const char *s_kinds[EF_INDEXLOAD_KINDS] = {
    "through-index", "load-then-build", "embedflow"};
static const char *s_methods[] = {"none", "hnsw", "ivfflat"};
static const char *s_metrics[] = {"cosine", "l2", "ip"};
static const char *s_operators[] = {"<=>", "<->", "<#>"};

const char *
ef_indexload_name (ef_indexload_kind_t kind)
{
    return s_kinds[kind];
}

const char *
ef_indexload_operator (ef_index_metric_t metric)
{
    return s_operators[metric];
}

static double
s_now (void)
{
    return (double) ef_clock_mono_us () / 1e6;
}

static void
s_sleep_ms (int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    nanosleep (&ts, NULL);
}

/* Runs sql on conn, expecting status. Returns 0, or -1 with err =
   "what: the database's message". */
static int
s_exec (PGconn *conn, const char *sql, ExecStatusType status, const char *what,
        char *err, size_t errlen)
{
    PGresult *res = PQexec (conn, sql);
    int rc = res && PQresultStatus (res) == status ? 0 : -1;
    if (rc != 0) {
        char msg[400];
        ef_pg_error (conn, res, NULL, msg, sizeof msg);
        snprintf (err, errlen, "%s: %s", what, msg);
    }
    PQclear (res);
    return rc;
}

/* --- the table ------------------------------------------------------------ */

/* The vector column: its type name ("vector", "halfvec", "_float4") and
   the quoted schema of pgvector ("" without the extension). */
typedef struct {
    char typname[64]; /* pg_type.typname */
    char ns[160];     /* pgvector's schema, quoted */
} s_column_t;

/* Reads quoted.embedding's vector column. Returns 0 or -1 with err. */
static int
s_column (PGconn *conn, const char *quoted, s_column_t *col, char *err,
          size_t errlen)
{
    int rc = ef_schema_vector_column (conn, quoted, col->typname,
                                      sizeof col->typname, col->ns,
                                      sizeof col->ns, err, errlen);
    if (rc == 0 && (!*col->ns || strcmp (col->typname, "_float4") == 0)) {
        snprintf (err, errlen,
                  "an ANN index needs pgvector: the vectors are real[] "
                  "(use a server with the pgvector extension and "
                  "vector_type vector or halfvec)");
        rc = -1;
    }
    return rc;
}

/* Creates the ANN index ix on quoted.embedding with build_memory bytes of
   maintenance_work_mem, as a user would: one plain CREATE INDEX.
   Returns 0 or -1 with err. */
static int
s_create_index (PGconn *conn, const char *quoted, const s_column_t *col,
                const ef_index_opts_t *ix, int64_t build_memory, char *err,
                size_t errlen)
{
    char sql[1024], with[96];
    snprintf (sql, sizeof sql, "SET maintenance_work_mem = '%" PRId64 "kB'",
              build_memory / 1024 > 64 ? build_memory / 1024 : 64);
    if (s_exec (conn, sql, PGRES_COMMAND_OK, "maintenance_work_mem", err,
                errlen)
        != 0)
        return -1;
    if (ix->method == EF_INDEX_HNSW)
        snprintf (with, sizeof with, "m = %d, ef_construction = %d", ix->m,
                  ix->ef_construction);
    else
        snprintf (with, sizeof with, "lists = %d", ix->lists);
    snprintf (sql, sizeof sql,
              "CREATE INDEX embedding_vector_idx ON %s.embedding USING %s"
              " (vector %s.%s_%s_ops) WITH (%s)",
              quoted, s_methods[ix->method], col->ns, col->typname,
              s_metrics[ix->metric], with);
    return s_exec (conn, sql, PGRES_COMMAND_OK, "CREATE INDEX", err, errlen);
}

/* Whether quoted.embedding, or one of its partitions, has an ANN index
   (hnsw or ivfflat). Returns 1, 0, or -1 with err. */
static int
s_has_ann_index (PGconn *conn, const char *quoted, char *err, size_t errlen)
{
    char table[300];
    snprintf (table, sizeof table, "%s.embedding", quoted);
    const char *params[] = {table};
    PGresult *res = PQexecParams (
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam"
        " WHERE a.amname IN ('hnsw', 'ivfflat') AND i.indrelid IN"
        "  (SELECT $1::regclass UNION ALL SELECT inhrelid FROM pg_inherits"
        "   WHERE inhparent = $1::regclass))",
        1, NULL, params, NULL, NULL, 0);
    int rc = -1;
    if (res && PQresultStatus (res) == PGRES_TUPLES_OK)
        rc = PQgetvalue (res, 0, 0)[0] == 't';
    else {
        char msg[400];
        ef_pg_error (conn, res, NULL, msg, sizeof msg);
        snprintf (err, errlen, "reading the indexes: %s", msg);
    }
    PQclear (res);
    return rc;
}

/* Makes o->schema afresh for kind: through-index gets the index on its
   empty table, load-then-build none, embedflow what is configured.
   Returns 0 or -1 with err. */
static int
s_prepare (PGconn *conn, const char *quoted, ef_indexload_kind_t kind,
           const ef_indexload_opts_t *o, s_column_t *col, char *err,
           size_t errlen)
{
    char sql[400];
    snprintf (sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", quoted);
    if (s_exec (conn, sql, PGRES_COMMAND_OK, "dropping the schema", err, errlen)
        != 0)
        return -1;
    /* the baselines' table is the plain one, whatever else embedflow's
       schema options would make of an indexed table */
    ef_schema_opts_t opts = *o->schema_opts;
    if (kind != EF_INDEXLOAD_EMBEDFLOW)
        memset (&opts.index, 0, sizeof opts.index);
    if (ef_schema_migrate_opts (conn, o->schema, &opts, err, errlen) != 0)
        return -1;
    if (s_column (conn, quoted, col, err, errlen) != 0)
        return -1;
    ef_vector_type_t type = strcmp (col->typname, "halfvec") == 0
                                ? EF_VECTOR_HALFVEC
                                : EF_VECTOR_VECTOR;
    if (ef_index_fits (&o->schema_opts->index, type, o->schema_opts->dim, err,
                       errlen)
        != 0)
        return -1;
    if (kind == EF_INDEXLOAD_THROUGH
        && s_create_index (conn, quoted, col, &o->schema_opts->index,
                           o->build_memory, err, errlen)
               != 0)
        return -1;
    /* every contender starts from the same WAL state (needs superuser; a
       refusal only makes runs noisier) */
    PGresult *res = PQexec (conn, "CHECKPOINT");
    PQclear (res);
    return 0;
}

/* --- queries -------------------------------------------------------------- */

/* Query vectors drawn as the loaded rows are (the load generator's,
   with a seed of their own), as pgvector's text form "[x,y,...]".
   Returns a NULL-terminated array of heap strings, NULL when out of
   memory. */
static char **
s_query_vectors (const ef_loadgen_opts_t *gen)
{
    ef_loadgen_opts_t g = *gen;
    g.seed = gen->seed ^ UINT64_C (0x9e3779b97f4a7c15);
    size_t size;
    uint8_t *bytes = ef_loadgen_encode_chunk (&g, 0, S_QUERY_VECTORS, 0, &size);
    if (!bytes)
        return NULL;
    Embedflow__V1__EmbeddingChunk *chunk =
        embedflow__v1__embedding_chunk__unpack (NULL, size, bytes);
    free (bytes);
    if (!chunk)
        return NULL;
    char **out = calloc (chunk->n_items + 1, sizeof *out);
    for (size_t i = 0; out && i < chunk->n_items; i++) {
        const Embedflow__V1__Embedding *e = chunk->items[i];
        size_t cap = e->n_vector * 18 + 3, used = 0;
        char *text = malloc (cap);
        if (!text)
            break;
        text[used++] = '[';
        for (size_t k = 0; k < e->n_vector; k++)
            used += (size_t) snprintf (text + used, cap - used, "%s%.9g",
                                       k ? "," : "", (double) e->vector[k]);
        snprintf (text + used, cap - used, "]");
        out[i] = text;
    }
    bool whole = out && out[chunk->n_items - 1];
    size_t n = chunk->n_items;
    embedflow__v1__embedding_chunk__free_unpacked (chunk, NULL);
    if (!whole && out) {
        for (size_t i = 0; i < n; i++)
            free (out[i]);
        free (out);
        out = NULL;
    }
    return out;
}

static void
s_query_vectors_free (char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free (v[i]);
    free (v);
}

/* Latencies of a series of queries. */
typedef struct {
    double *s; /* seconds, in order */
    int n;     /* used */
    int cap;   /* allocated */
} s_lat_t;

static int
s_lat_add (s_lat_t *l, double s)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 1024;
        double *grown = realloc (l->s, (size_t) cap * sizeof *grown);
        if (!grown)
            return -1;
        l->s = grown;
        l->cap = cap;
    }
    l->s[l->n++] = s;
    return 0;
}

/* The q-quantile of l (nearest rank), 0 when empty. Sorts l. */
static double
s_lat_quantile (s_lat_t *l, double q)
{
    return ef_report_quantile (l->s, l->n, q);
}

/* One nearest-neighbour query on its own connection. */
typedef struct {
    PGconn *conn;                 /* owned */
    char *sql;                    /* the top-10 query */
    char **vectors;               /* borrowed */
    int next;                     /* the vector to use next */
    atomic_int stop;              /* ends the query thread */
    double rate;                  /* queries a second; 0 = back to back */
    s_lat_t lat;                  /* latencies */
    double sent;                  /* when the last query was sent */
    double load_t0;               /* when the load began */
    const ef_indexload_opts_t *o; /* borrowed: query_log, writers, run */
    ef_indexload_kind_t kind;     /* for query_log */
    pthread_t thread;             /* the query thread */
    bool started;                 /* it runs */
    char error[512];              /* why it stopped early */
} s_query_t;

/* Runs the next query; ids (10 x 37 bytes), when not NULL, receives the
   ids found. Returns its latency in seconds, -1 with q->error. */
static double
s_query_once (s_query_t *q, char (*ids)[37])
{
    const char *params[] = {q->vectors[q->next]};
    q->next = q->vectors[q->next + 1] ? q->next + 1 : 0;
    q->sent = s_now ();
    PGresult *res =
        PQexecParams (q->conn, q->sql, 1, NULL, params, NULL, NULL, 0);
    double took = s_now () - q->sent;
    if (!res || PQresultStatus (res) != PGRES_TUPLES_OK) {
        char msg[400];
        ef_pg_error (q->conn, res, NULL, msg, sizeof msg);
        snprintf (q->error, sizeof q->error, "query: %s", msg);
        PQclear (res);
        return -1;
    }
    for (int i = 0; ids && i < 10; i++)
        snprintf (ids[i], 37, "%s",
                  i < PQntuples (res) ? PQgetvalue (res, i, 0) : "");
    PQclear (res);
    return took;
}

/* Adds the last query's latency s to q's figures and, when there is
   one, a line to the query log. Returns 0, or -1 when out of memory. */
static int
s_query_took (s_query_t *q, const char *phase, double s)
{
    FILE *log = q->o->query_log;
    if (log)
        fprintf (log, "%s\t%d\t%d\t%s\t%.3f\t%.3f\n", s_kinds[q->kind],
                 q->o->writers, q->o->run, phase, q->sent - q->load_t0,
                 s * 1e3);
    return s_lat_add (&q->lat, s);
}

/* The query thread: queries at q->rate (a query that takes longer than
   its turn delays the next, none is skipped) or back to back, until
   told to stop. */
static void *
s_query_run (void *arg)
{
    s_query_t *q = arg;
    double next = s_now ();
    while (!atomic_load (&q->stop)) {
        double s = s_query_once (q, NULL);
        if (s < 0 || s_query_took (q, "during", s) != 0)
            break;
        if (q->rate > 0) {
            next += 1.0 / q->rate;
            double wait = next - s_now ();
            if (wait > 0)
                s_sleep_ms ((int) (wait * 1000));
            else
                next = s_now ();
        }
    }
    return NULL;
}

/* Opens the query connection and makes the query. Returns 0 or -1 with
   err. */
static int
s_query_open (s_query_t *q, const ef_indexload_opts_t *o,
              ef_indexload_kind_t kind, const char *quoted,
              const s_column_t *col, char **vectors, char *err, size_t errlen)
{
    memset (q, 0, sizeof *q);
    q->vectors = vectors;
    q->rate = o->query_rate;
    q->o = o;
    q->kind = kind;
    q->conn = ef_pg_connect (o->conninfo, "embedflow bench query", err, errlen);
    if (!q->conn)
        return -1;
    if (asprintf (&q->sql,
                  "SELECT id FROM %s.embedding ORDER BY vector OPERATOR"
                  " (%s.%s) $1::%s.%s LIMIT 10",
                  quoted, col->ns, s_operators[o->schema_opts->index.metric],
                  col->ns, col->typname)
        < 0) {
        q->sql = NULL;
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void
s_query_close (s_query_t *q)
{
    if (q->started) {
        atomic_store (&q->stop, 1);
        pthread_join (q->thread, NULL);
        q->started = false;
    }
    PQfinish (q->conn);
    free (q->sql);
    free (q->lat.s);
    memset (q, 0, sizeof *q);
}

/* Stops the query thread and takes its figures into res. Returns 0, or
   -1 with err when a query failed. */
static int
s_query_stop (s_query_t *q, ef_indexload_result_t *res, char *err,
              size_t errlen)
{
    if (q->started) {
        atomic_store (&q->stop, 1);
        pthread_join (q->thread, NULL);
        q->started = false;
    }
    res->during_n = q->lat.n;
    res->during_p50 = s_lat_quantile (&q->lat, 0.50);
    res->during_p95 = s_lat_quantile (&q->lat, 0.95);
    q->lat.n = 0;
    if (q->error[0]) {
        snprintf (err, errlen, "during the load: %.480s", q->error);
        return -1;
    }
    return 0;
}

/* Runs o->queries queries at rest and checks the first recall_queries
   against the exact answer. Returns 0 or -1 with err. */
static int
s_at_rest (s_query_t *q, const ef_indexload_opts_t *o,
           ef_indexload_result_t *res, char *err, size_t errlen)
{
    int checks =
        o->recall_queries < o->queries ? o->recall_queries : o->queries;
    char (*found)[10][37] =
        calloc (checks > 0 ? (size_t) checks : 1, sizeof *found);
    if (!found) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    q->next = 0;
    int rc = 0;
    for (int i = 0; i < o->queries && rc == 0; i++) {
        double s = s_query_once (q, i < checks ? found[i] : NULL);
        if (s < 0 || s_query_took (q, "rest", s) != 0)
            rc = -1;
    }
    res->rest_n = q->lat.n;
    res->rest_p50 = s_lat_quantile (&q->lat, 0.50);
    res->rest_p95 = s_lat_quantile (&q->lat, 0.95);
    res->recall = -1;
    /* the same queries with index scans off: the exact nearest rows */
    int hits = 0, wanted = 0;
    q->next = 0;
    if (rc == 0 && checks > 0
        && s_exec (q->conn,
                   "SET enable_indexscan = off; SET enable_bitmapscan = off",
                   PGRES_COMMAND_OK, "exact search", q->error, sizeof q->error)
               != 0)
        rc = -1;
    for (int i = 0; i < checks && rc == 0; i++) {
        char exact[10][37];
        if (s_query_once (q, exact) < 0) {
            rc = -1;
            break;
        }
        for (int a = 0; a < 10; a++) {
            if (!exact[a][0])
                continue;
            wanted++;
            for (int b = 0; b < 10; b++)
                if (strcmp (exact[a], found[i][b]) == 0) {
                    hits++;
                    break;
                }
        }
    }
    if (rc == 0 && checks > 0) {
        res->recall = wanted ? (double) hits / wanted : 1;
        rc = s_exec (q->conn, "RESET enable_indexscan; RESET enable_bitmapscan",
                     PGRES_COMMAND_OK, "exact search", q->error,
                     sizeof q->error);
    }
    free (found);
    if (rc != 0)
        snprintf (err, errlen, "at rest: %.480s", q->error);
    return rc;
}

/* --- the contenders ------------------------------------------------------- */

/* Counts quoted.embedding's rows into res->rows. Returns 0 or -1. */
static int
s_count (PGconn *conn, const char *quoted, ef_indexload_result_t *res)
{
    char sql[300];
    snprintf (sql, sizeof sql, "SELECT count(*) FROM %s.embedding", quoted);
    PGresult *r = PQexec (conn, sql);
    int rc = r && PQresultStatus (r) == PGRES_TUPLES_OK ? 0 : -1;
    if (rc == 0)
        res->rows = strtoull (PQgetvalue (r, 0, 0), NULL, 10);
    else {
        char msg[400];
        ef_pg_error (conn, r, NULL, msg, sizeof msg);
        snprintf (res->error, sizeof res->error, "counting rows: %s", msg);
    }
    PQclear (r);
    return rc;
}

/* The load of the baselines: COPY over o->writers connections. Returns
   0 or -1 with err. */
static int
s_copy_load (const ef_indexload_opts_t *o, double *seconds, char *err,
             size_t errlen)
{
    ef_baseline_opts_t b = {o->conninfo, o->schema,    o->gen,
                            0,           o->gen->rows, o->batch_rows,
                            o->writers,  o->progress,  o->progress_arg,
                            o->stop};
    ef_baseline_result_t r;
    if (ef_baseline_run (EF_BASELINE_COPY, &b, NULL, NULL, NULL, &r) != 0) {
        snprintf (err, errlen, "COPY: %.480s", r.error);
        return -1;
    }
    *seconds = r.seconds;
    return 0;
}

/* Sleeps before the next look at the embedflow contender's segments,
   after_load seconds after its last commit. Returns 0, or -1 with err
   when the bench is interrupted or "what ... s after the load" has gone
   on past the deadline. */
static int
s_keep_waiting (const ef_indexload_opts_t *o, double after_load,
                const char *what, char *err, size_t errlen)
{
    if (o->stop && atomic_load (o->stop)) {
        snprintf (err, errlen, "interrupted");
        return -1;
    }
    if (after_load > S_INDEX_DEADLINE_S) {
        snprintf (err, errlen, "%s %.0f s after the load", what,
                  S_INDEX_DEADLINE_S);
        return -1;
    }
    s_sleep_ms (S_POLL_MS);
    return 0;
}

/* Waits until no row of the embedflow contender awaits an index,
   noting when at most searchable_rows did. Times count from since, the
   last commit, onto load_s. Returns 0 or -1 with err. */
static int
s_wait_indexed (PGconn *conn, const ef_indexload_opts_t *o, double since,
                ef_indexload_result_t *res, char *err, size_t errlen)
{
    res->searchable_s = -1;
    for (bool first = true;; first = false) {
        int64_t rows;
        if (ef_segments_unindexed (conn, o->schema, &rows, err, errlen) != 0)
            return -1;
        double at = res->load_s + (first ? 0 : s_now () - since);
        if (first)
            res->unindexed = rows;
        if (res->searchable_s < 0 && rows <= o->searchable_rows)
            res->searchable_s = at;
        if (rows == 0) {
            res->indexed_s = at;
            return 0;
        }
        char what[64];
        snprintf (what, sizeof what, "%" PRId64 " rows still await an index",
                  rows);
        if (s_keep_waiting (o, at - res->load_s, what, err, errlen) != 0)
            return -1;
    }
}

/* Waits until the embedflow contender's merges left at most
   o->settle_segments sealed segments: the table a query meets at rest
   once the load has ended. Returns 0 or -1 with err. */
static int
s_wait_settled (PGconn *conn, const ef_indexload_opts_t *o, double since,
                ef_indexload_result_t *res, char *err, size_t errlen)
{
    res->settled_s = res->indexed_s;
    if (o->settle_segments < 1)
        return 0;
    for (;;) {
        PGresult *r = ef_pg_exec_schema (
            conn, o->schema,
            "SELECT count(*) FILTER (WHERE state = 'sealed') FROM %s.segment",
            0, NULL, "segments", err, errlen);
        if (!r)
            return -1;
        long sealed = strtol (PQgetvalue (r, 0, 0), NULL, 10);
        PQclear (r);
        double at = res->load_s + s_now () - since;
        if (sealed <= o->settle_segments) {
            res->settled_s = at;
            return 0;
        }
        char what[64];
        snprintf (what, sizeof what, "%ld sealed segments are still not merged",
                  sealed);
        if (s_keep_waiting (o, at - res->load_s, what, err, errlen) != 0)
            return -1;
    }
}

/* The body of ef_indexload_run on the monitoring connection. */
static int
s_run (ef_indexload_kind_t kind, const ef_indexload_opts_t *o, PGconn *conn,
       const char *quoted, char **vectors, ef_indexload_result_t *res)
{
    char *err = res->error;
    size_t errlen = sizeof res->error;
    s_column_t col;
    if (s_prepare (conn, quoted, kind, o, &col, err, errlen) != 0)
        return -1;
    int had = s_has_ann_index (conn, quoted, err, errlen);
    if (had < 0)
        return -1;
    res->indexed_at_start = had == 1;
    s_query_t q;
    if (s_query_open (&q, o, kind, quoted, &col, vectors, err, errlen) != 0) {
        s_query_close (&q);
        return -1;
    }
    q.load_t0 = s_now ();
    if (pthread_create (&q.thread, NULL, s_query_run, &q) != 0) {
        snprintf (err, errlen, "cannot start the query thread");
        s_query_close (&q);
        return -1;
    }
    q.started = true;
    bool loaded = false;
    int rc = kind == EF_INDEXLOAD_EMBEDFLOW
                 ? o->load (o->load_arg, o->schema, o->writers, &res->load_s,
                            err, errlen)
                 : s_copy_load (o, &res->load_s, err, errlen);
    double committed = s_now ();
    if (rc == 0 && kind == EF_INDEXLOAD_EMBEDFLOW)
        loaded = true;
    if (rc == 0) {
        had = s_has_ann_index (conn, quoted, err, errlen);
        res->indexed_at_commit = had == 1;
        rc = had < 0 ? -1 : 0;
    }
    if (rc == 0 && kind == EF_INDEXLOAD_BUILD) {
        rc = s_create_index (conn, quoted, &col, &o->schema_opts->index,
                             o->build_memory, err, errlen);
        res->build_s = s_now () - committed;
        res->searchable_s = res->indexed_s = res->load_s + res->build_s;
    }
    else if (rc == 0 && kind == EF_INDEXLOAD_THROUGH)
        res->searchable_s = res->indexed_s = res->load_s;
    else if (rc == 0)
        rc = s_wait_indexed (conn, o, committed, res, err, errlen);
    char qerr[512];
    if (s_query_stop (&q, res, qerr, sizeof qerr) != 0 && rc == 0) {
        snprintf (err, errlen, "%s", qerr);
        rc = -1;
    }
    res->settled_s = res->indexed_s; /* the baselines never merge */
    if (rc == 0 && kind == EF_INDEXLOAD_EMBEDFLOW)
        rc = s_wait_settled (conn, o, committed, res, err, errlen);
    /* at rest: nothing loads or builds any more */
    if (loaded && o->end)
        o->end (o->load_arg);
    if (rc == 0)
        rc = s_at_rest (&q, o, res, err, errlen);
    s_query_close (&q);
    if (rc == 0)
        rc = s_count (conn, quoted, res);
    res->rows_s =
        rc == 0 && res->load_s > 0 ? (double) res->rows / res->load_s : 0;
    return rc;
}

int
ef_indexload_run (ef_indexload_kind_t kind, const ef_indexload_opts_t *o,
                  ef_indexload_result_t *res)
{
    memset (res, 0, sizeof *res);
    res->recall = -1;
    if (o->schema_opts->index.method == EF_INDEX_NONE || o->queries < 1
        || (kind == EF_INDEXLOAD_EMBEDFLOW && !o->load)) {
        snprintf (res->error, sizeof res->error,
                  "an index method, at least one query and (for embedflow) "
                  "a load function are needed");
        return -1;
    }
    PGconn *conn = ef_pg_connect (o->conninfo, "embedflow bench", res->error,
                                  sizeof res->error);
    if (!conn)
        return -1;
    char *quoted = ef_pg_ident (conn, o->schema);
    char **vectors = s_query_vectors (o->gen);
    int rc = -1;
    if (!quoted || !vectors)
        snprintf (res->error, sizeof res->error, "out of memory");
    else
        rc = s_run (kind, o, conn, quoted, vectors, res);
    s_query_vectors_free (vectors);
    free (quoted);
    PQfinish (conn);
    return rc;
}

/* --- medians -------------------------------------------------------------- */

void
ef_indexload_median (const ef_indexload_result_t *runs, int n,
                     ef_indexload_result_t *out)
{
    *out = runs[0];
    double v[64];
    if (n > 64)
        n = 64;
#define S_MED(field)                                                           \
    for (int r = 0; r < n; r++)                                                \
        v[r] = (double) runs[r].field;                                         \
    out->field = ef_report_median (v, n);
    S_MED (load_s)
    S_MED (rows_s)
    S_MED (build_s)
    S_MED (searchable_s)
    S_MED (indexed_s)
    S_MED (settled_s)
    S_MED (during_p50)
    S_MED (during_p95)
    S_MED (rest_p50)
    S_MED (rest_p95)
    S_MED (recall)
#undef S_MED
    for (int r = 0; r < n; r++)
        v[r] = (double) runs[r].unindexed;
    out->unindexed = (int64_t) ef_report_median (v, n);
    for (int r = 0; r < n; r++)
        v[r] = (double) runs[r].during_n;
    out->during_n = (int) ef_report_median (v, n);
}

json_t *
ef_indexload_json (const ef_indexload_result_t *r)
{
    return json_pack (
        "{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:b, s:b, s:i, s:o, s:o,"
        " s:i, s:o, s:o, s:o}",
        "rows", (json_int_t) r->rows, "load_s", ef_report_real (r->load_s, 3),
        "rows_per_s", ef_report_real (r->rows_s, 1), "build_s",
        ef_report_real (r->build_s, 3), "searchable_s",
        ef_report_real (r->searchable_s, 3), "indexed_s",
        ef_report_real (r->indexed_s, 3), "settled_s",
        ef_report_real (r->settled_s, 3), "unindexed_at_commit",
        (json_int_t) r->unindexed, "indexed_at_start", r->indexed_at_start,
        "indexed_at_commit", r->indexed_at_commit, "queries_during",
        r->during_n, "query_during_p50_s", ef_report_real (r->during_p50, 6),
        "query_during_p95_s", ef_report_real (r->during_p95, 6),
        "queries_at_rest", r->rest_n, "query_at_rest_p50_s",
        ef_report_real (r->rest_p50, 6), "query_at_rest_p95_s",
        ef_report_real (r->rest_p95, 6), "recall_at_10",
        r->recall < 0 ? json_null () : ef_report_real (r->recall, 4));
}
