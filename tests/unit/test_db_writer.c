/*  test_db_writer.c — the db-writer and dlq actors in a real runtime
    against a real PostgreSQL: every row is acked exactly once, either as
    written or as dead-lettered; bad rows are isolated; a lost connection
    is survived; a spent retry budget dead-letters instead of dropping. */
#include "ef_test.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embedflow/metrics.h"
#include "pipeline/pipeline.h"
#include "embedflow/runtime.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/pg.h"
#include "postgres/schema.h"

#define DIM     16
#define BATCHES 8  /* per phase */
#define ROWS    50 /* per batch */
#define STREAMS 2

/* What the feeder sends and what came back, shared with the actors. */
/* The test database, with this test's sessions named after its schema so
   that the killer below can tell them from other tests' sessions. */
static const char *
s_conninfo (void)
{
    static char buf[1024];
    snprintf (buf, sizeof buf, "%s application_name=%s", ef_test_conninfo (),
              ef_test_schema ());
    return buf;
}

static struct {
    atomic_int phase;             /* batches of phases < phase may go */
    atomic_long written[STREAMS]; /* acked as written, per stream */
    atomic_long dead[STREAMS];    /* acked as dead-lettered */
    long expected;                /* covers the feeder sends in all */
    atomic_long acked;            /* written + dead, all streams */
    ef_runtime_t *rt;             /* to stop when all is acked */
    int phases;                   /* how many phases the test runs */
} s_run;

typedef struct {
    int next; /* next batch to send */
    int out;  /* port */
} s_feeder_t;

/* Batch b: ROWS rows of documents that no other batch has; stream b % 2.
   Row 7 of batch 1 is poison, and stands for 3 received rows. */
static zmsg_t *
s_make_batch (int b)
{
    Embedflow__V1__RowBatch batch = EMBEDFLOW__V1__ROW_BATCH__INIT;
    Embedflow__V1__Row rows[ROWS];
    Embedflow__V1__Row *ptrs[ROWS];
    uint8_t ids[ROWS][16];
    char docs[ROWS][32];
    float vectors[ROWS][DIM];
    for (int i = 0; i < ROWS; i++) {
        Embedflow__V1__Row *r = &rows[i];
        embedflow__v1__row__init (r);
        memset (ids[i], 0, 16);
        ids[i][0] = (uint8_t) b;
        ids[i][1] = (uint8_t) i;
        ids[i][6] = 0x70;
        ids[i][8] = 0x80;
        r->id.data = ids[i];
        r->id.len = 16;
        snprintf (docs[i], sizeof docs[i], "doc-%d-%d", b, i / 5);
        r->document_id = docs[i];
        r->chunk_index = (uint32_t) (i % 5);
        r->content = (b == 1 && i == 7) ? "poison" : "fine";
        r->metadata_json = "{\"lang\":\"de\",\"q\":\"a\\\"b\\u00e9\"}";
        r->model = "m";
        r->source = "unit";
        r->job_id = "job-1";
        r->reply_to = "acks"; /* the acks actor below */
        r->stream_id = (uint64_t) (100 + b % STREAMS);
        r->covers = (b == 1 && i == 7) ? 3 : 1;
        for (int k = 0; k < DIM; k++)
            vectors[i][k] = (float) k;
        r->n_vector = DIM;
        r->vector = vectors[i];
        ptrs[i] = r;
    }
    batch.batch_id = (uint64_t) b;
    batch.n_rows = ROWS;
    batch.rows = ptrs;
    zframe_t *f =
        zframe_new (NULL, embedflow__v1__row_batch__get_packed_size (&batch));
    embedflow__v1__row_batch__pack (&batch, zframe_data (f));
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &f);
    return msg;
}

static int
s_feeder_init (ef_actor_t *a)
{
    s_feeder_t *s = calloc (1, sizeof *s);
    s->out = ef_actor_port (a, "out");
    ef_actor_set_state (a, s);
    ef_actor_wake_in (a, 0);
    return 0;
}

static int
s_feeder_tick (ef_actor_t *a)
{
    s_feeder_t *s = ef_actor_state (a);
    while (s->next < BATCHES * atomic_load (&s_run.phase)
           && s->next < BATCHES * s_run.phases) {
        zmsg_t *msg = s_make_batch (s->next);
        int to = s->next % ef_actor_port_width (a, s->out);
        if (ef_actor_send (a, s->out, to, &msg) != 0)
            return -1;
        s->next++;
    }
    if (s->next < BATCHES * s_run.phases)
        ef_actor_wake_in (a, 10);
    return 0;
}

static void
s_feeder_destroy (ef_actor_t *a)
{
    free (ef_actor_state (a));
}

static int
s_acks_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    (void) a;
    (void) port;
    zframe_t *f = zmsg_first (*msg_p);
    Embedflow__V1__Ack *ack =
        embedflow__v1__ack__unpack (NULL, zframe_size (f), zframe_data (f));
    EF_CHECK (ack != NULL);
    for (size_t i = 0; ack && i < ack->n_tallies; i++) {
        int s = (int) ack->tallies[i]->stream_id - 100;
        EF_CHECK (s >= 0 && s < STREAMS);
        if (s < 0 || s >= STREAMS)
            continue;
        atomic_fetch_add (&s_run.written[s], (long) ack->tallies[i]->written);
        atomic_fetch_add (&s_run.dead[s],
                          (long) ack->tallies[i]->dead_lettered);
        long n =
            (long) (ack->tallies[i]->written + ack->tallies[i]->dead_lettered);
        if (atomic_fetch_add (&s_run.acked, n) + n == s_run.expected)
            ef_runtime_stop (s_run.rt);
    }
    embedflow__v1__ack__free_unpacked (ack, NULL);
    return 0;
}

/* The built-in actors under test, registered here by hand. */
extern const ef_actor_def_t ef_db_writer_actor;
extern const ef_actor_def_t ef_dlq_actor;

static const ef_option_t s_no_options[] = {EF_OPTION_END};
static const ef_port_def_t s_feeder_ports[] = {
    {"out", EF_PORT_OUT, "embedflow.v1.RowBatch", false, 4},
    {NULL, 0, NULL, false, 0}};
static const ef_port_def_t s_acks_ports[] = {
    {"in", EF_PORT_IN, "embedflow.v1.Ack", false, 10000},
    {NULL, 0, NULL, false, 0}};
static const ef_actor_def_t s_feeder = {.name = "feeder",
                                        .summary = "sends row batches",
                                        .options = s_no_options,
                                        .ports = s_feeder_ports,
                                        .flags = EF_ACTOR_SOURCE,
                                        .default_instances = 1,
                                        .init = s_feeder_init,
                                        .tick = s_feeder_tick,
                                        .destroy = s_feeder_destroy};
static const ef_actor_def_t s_acks = {.name = "acks",
                                      .summary = "counts acks",
                                      .options = s_no_options,
                                      .ports = s_acks_ports,
                                      .default_instances = 1,
                                      .handle = s_acks_handle};

/* Ends the run if it hangs, so that the checks report what is missing. */
static void *
s_watchdog (void *arg)
{
    (void) arg;
    for (int i = 0; i < 600 && atomic_load (&s_run.acked) < s_run.expected;
         i++) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep (&t, NULL);
    }
    ef_runtime_stop (s_run.rt);
    return NULL;
}

/* Kills the writers' and the DLQ's sessions once phase 1 is acked, then
   opens phase 2. */
static void *
s_killer (void *arg)
{
    PGconn *c = arg;
    long phase1 = (long) BATCHES * ROWS + 2;
    for (int i = 0; i < 600 && atomic_load (&s_run.acked) < phase1; i++) {
        struct timespec t = {0, 20 * 1000 * 1000};
        nanosleep (&t, NULL);
    }
    /* Only this test's sessions: other tests may run at the same time. */
    const char *params[] = {ef_test_schema ()};
    PGresult *res = PQexecParams (c,
                                  "SELECT count (pg_terminate_backend (pid))"
                                  " FROM pg_stat_activity"
                                  " WHERE application_name = $1",
                                  1, NULL, params, NULL, NULL, 0);
    /* both writers and the DLQ */
    EF_CHECK (PQresultStatus (res) == PGRES_TUPLES_OK
              && atoi (PQgetvalue (res, 0, 0)) == 3);
    PQclear (res);
    atomic_store (&s_run.phase, 2);
    return NULL;
}

/* actors.db-writer.adaptive for the next s_run_pipeline */
static const char *s_adaptive = "false";

/* Runs feeder -> 2 db-writers (+ dlq) -> acks over `phases` phases. */
static void
s_run_pipeline (PGconn *c, int phases, const char *retry_budget, bool kill)
{
    const char *schema = ef_test_schema ();
    char err[1024];
    ef_registry_t *reg = ef_registry_new ();
    ef_registry_add (reg, &ef_db_writer_actor);
    ef_registry_add (reg, &ef_dlq_actor);
    ef_registry_add (reg, &s_feeder);
    ef_registry_add (reg, &s_acks);
    ef_registry_add_link (reg, "batches", "feeder.out", "db-writer.batches");
    ef_registry_add_link (reg, "acks", "db-writer.acks, dlq.acks", "acks.in");
    ef_registry_add_link (reg, "dead", "db-writer.dead", "dlq.dead");
    ef_config_t *cfg = ef_config_new (reg, ef_globals_options,
                                      sizeof (ef_globals_t), err, sizeof err);
    EF_REQUIRE (cfg);
    char dim[8];
    snprintf (dim, sizeof dim, "%d", DIM);
    EF_CHECK (ef_config_set (cfg, "database", s_conninfo (), err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (cfg, "schema", schema, err, sizeof err) == 0);
    EF_CHECK (ef_config_set (cfg, "dim", dim, err, sizeof err) == 0);
    EF_CHECK (
        ef_config_set (cfg, "actors.db-writer.instances", "2", err, sizeof err)
        == 0);
    EF_CHECK (ef_config_set (cfg, "actors.db-writer.retry_base", "10ms", err,
                             sizeof err)
              == 0);
    EF_CHECK (ef_config_set (cfg, "actors.db-writer.retry_budget", retry_budget,
                             err, sizeof err)
              == 0);
    EF_CHECK (ef_config_set (cfg, "actors.db-writer.adaptive", s_adaptive, err,
                             sizeof err)
              == 0);
    /* every commit counts as fast: queued batches are merged */
    EF_CHECK (ef_config_set (cfg, "actors.db-writer.adaptive_target", "60s",
                             err, sizeof err)
              == 0);
    if (ef_config_validate (cfg, err, sizeof err) != 0)
        fprintf (stderr, "%s\n", err);

    memset (&s_run, 0, sizeof s_run);
    s_run.phases = phases;
    atomic_store (&s_run.phase, kill ? 1 : phases);
    s_run.expected =
        (long) phases * BATCHES * ROWS + 2; /* the poison row covers 3 */
    s_run.rt = ef_runtime_new (cfg);
    if (ef_runtime_start (s_run.rt, err, sizeof err) != 0) {
        fprintf (stderr, "start: %s\n", err);
        EF_CHECK (false);
    }
    else {
        PGconn *killer_conn = kill ? PQconnectdb (ef_test_conninfo ()) : NULL;
        pthread_t dog, killer;
        pthread_create (&dog, NULL, s_watchdog, NULL);
        if (kill)
            pthread_create (&killer, NULL, s_killer, killer_conn);
        EF_CHECK (ef_runtime_wait (s_run.rt) == 0);
        pthread_join (dog, NULL);
        if (kill)
            pthread_join (killer, NULL);
        PQfinish (killer_conn);
    }
    ef_runtime_destroy (&s_run.rt);
    ef_config_destroy (&cfg);
    ef_registry_destroy (&reg);
    (void) c;
}

static long
s_count (PGconn *c, const char *fmt)
{
    char sql[512];
    snprintf (sql, sizeof sql, fmt, ef_test_schema ());
    PGresult *res = PQexec (c, sql);
    long v = PQresultStatus (res) == PGRES_TUPLES_OK
                 ? atol (PQgetvalue (res, 0, 0))
                 : -1;
    if (v < 0)
        fprintf (stderr, "%s: %s", sql, PQerrorMessage (c));
    PQclear (res);
    return v;
}

/* Prepares the schema with a constraint that refuses "poison". */
static PGconn *
s_prepare (void)
{
    char err[512];
    PGconn *c = ef_pg_connect (ef_test_conninfo (), "ef-unit", err, sizeof err);
    if (!c) {
        fprintf (stderr, "%s\n", err);
        return NULL;
    }
    PQclear (PQexec (c, "SET client_min_messages = warning"));
    if (ef_schema_migrate (c, ef_test_schema (), DIM, err, sizeof err) != 0) {
        fprintf (stderr, "%s\n", err);
        PQfinish (c);
        return NULL;
    }
    char sql[256];
    snprintf (sql, sizeof sql,
              "ALTER TABLE \"%s\".chunk ADD CONSTRAINT no_poison"
              " CHECK (content <> 'poison')",
              ef_test_schema ());
    PQclear (PQexec (c, sql));
    return c;
}

static void
s_cleanup (PGconn *c)
{
    char sql[256];
    snprintf (sql, sizeof sql, "DROP SCHEMA IF EXISTS \"%s\" CASCADE",
              ef_test_schema ());
    PQclear (PQexec (c, "SET client_min_messages = warning"));
    PQclear (PQexec (c, sql));
    PQfinish (c);
}

EF_TEST (db_writer_settles_every_row)
{
    PGconn *c = s_prepare ();
    EF_REQUIRE (c);
    s_run_pipeline (c, 2, "30", true);

    long total = 2L * BATCHES * ROWS;
    EF_CHECK (atomic_load (&s_run.acked) == s_run.expected);
    /* stream 101 (odd batches) holds the poison row: 3 received rows */
    EF_CHECK (atomic_load (&s_run.written[0]) == total / 2);
    EF_CHECK (atomic_load (&s_run.dead[0]) == 0);
    EF_CHECK (atomic_load (&s_run.written[1]) == total / 2 - 1);
    EF_CHECK (atomic_load (&s_run.dead[1]) == 3);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".chunk") == total - 1);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".embedding")
              == total - 1);
    EF_CHECK (
        s_count (
            c, "SELECT count (*) FROM \"%s\".dead_letter WHERE stage = 'write'"
               " AND reason_code = 'db_rejected' AND sqlstate = '23514'"
               " AND covers = 3 AND document_id = 'doc-1-1' AND attempts > 1")
        == 1);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".dead_letter") == 1);

    /* the original is the row as an Embedding, metadata included */
    char sql[256];
    snprintf (sql, sizeof sql, "SELECT original FROM \"%s\".dead_letter",
              ef_test_schema ());
    PGresult *res = PQexecParams (c, sql, 0, NULL, NULL, NULL, NULL, 1);
    EF_REQUIRE (PQresultStatus (res) == PGRES_TUPLES_OK
                && PQntuples (res) == 1);
    Embedflow__V1__Embedding *e = embedflow__v1__embedding__unpack (
        NULL, (size_t) PQgetlength (res, 0, 0),
        (const uint8_t *) PQgetvalue (res, 0, 0));
    EF_REQUIRE (e);
    EF_CHECK (strcmp (e->id, "01070000-0000-7000-8000-000000000000") == 0);
    EF_CHECK (strcmp (e->document_id, "doc-1-1") == 0 && e->chunk_index == 2);
    EF_CHECK (strcmp (e->content, "poison") == 0 && e->n_vector == DIM);
    EF_CHECK (e->n_metadata == 2);
    for (size_t i = 0; i < e->n_metadata; i++) {
        if (strcmp (e->metadata[i]->key, "q") == 0)
            EF_CHECK (strcmp (e->metadata[i]->value, "a\"b\xC3\xA9") == 0);
        else
            EF_CHECK (strcmp (e->metadata[i]->key, "lang") == 0
                      && strcmp (e->metadata[i]->value, "de") == 0);
    }
    embedflow__v1__embedding__free_unpacked (e, NULL);
    PQclear (res);
    s_cleanup (c);
}

EF_TEST (db_writer_adaptive_merges_and_settles_every_row)
{
    /* Group commit: the batches queued behind a transaction are merged,
       through the killed sessions' retries and the poison row's
       bisection, and still every row is acked exactly once. */
    PGconn *c = s_prepare ();
    EF_REQUIRE (c);
    s_adaptive = "true";
    s_run_pipeline (c, 2, "30", true);
    s_adaptive = "false";

    long total = 2L * BATCHES * ROWS;
    EF_CHECK (atomic_load (&s_run.acked) == s_run.expected);
    EF_CHECK (atomic_load (&s_run.written[0]) == total / 2);
    EF_CHECK (atomic_load (&s_run.dead[0]) == 0);
    EF_CHECK (atomic_load (&s_run.written[1]) == total / 2 - 1);
    EF_CHECK (atomic_load (&s_run.dead[1]) == 3);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".chunk") == total - 1);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".embedding")
              == total - 1);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".dead_letter") == 1);
    uint64_t merged = 0, in_merged = 0;
    for (int w = 0; w < 2; w++) {
        char name[32];
        snprintf (name, sizeof name, "db-writer[%d]", w);
        merged += ef_counter_value (ef_metrics_counter (
            "embedflow_writer_merged_transactions_total", "", name));
        in_merged += ef_counter_value (ef_metrics_counter (
            "embedflow_writer_merged_batches_total", "", name));
    }
    if (ef_test_verbose)
        printf ("%" PRIu64 " merged transactions of %" PRIu64 " batches\n",
                merged, in_merged);
    EF_CHECK (merged >= 1 && in_merged >= 2 * merged);
    s_cleanup (c);
}

EF_TEST (db_writer_retry_exhausted)
{
    PGconn *c = s_prepare ();
    EF_REQUIRE (c);
    /* no retries at all: the killed sessions cost the next batch of each
       writer, which must reach the DLQ instead of vanishing */
    s_run_pipeline (c, 2, "0", true);
    long total = 2L * BATCHES * ROWS;
    EF_CHECK (atomic_load (&s_run.acked) == s_run.expected);
    long exhausted =
        s_count (c, "SELECT coalesce (sum (covers), 0) FROM \"%s\".dead_letter"
                    " WHERE reason_code = 'retry_exhausted'");
    EF_CHECK (exhausted == 2L * ROWS);
    EF_CHECK (s_count (c, "SELECT count (*) FROM \"%s\".chunk") + exhausted
              == total - 1);
    long dead = atomic_load (&s_run.dead[0]) + atomic_load (&s_run.dead[1]);
    EF_CHECK (dead == exhausted + 3);
    s_cleanup (c);
}
