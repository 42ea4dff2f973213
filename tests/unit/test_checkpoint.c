/*  test_checkpoint.c — pull pieces committed with the data, positions,
    job locks and the job history, against a real PostgreSQL. */
#include "ef_test.h"

#include <stdlib.h>
#include <string.h>

#include "embedflow/backoff.h"
#include "pipeline/checkpoint.h"
#include "pipeline/pg.h"
#include "pipeline/pgwrite.h"
#include "pipeline/schema.h"
#include "pipeline/uuid7.h"

#define S_DIM 4

/* A connection to the test database with the schema migrated. */
static PGconn *
s_connect (const char *schema)
{
    char err[512];
    PGconn *c = ef_pg_connect (ef_test_conninfo (), "ef-unit", err, sizeof err);
    if (!c) {
        fprintf (stderr, "%s\n", err);
        return NULL;
    }
    if (ef_schema_migrate (c, schema, S_DIM, err, sizeof err) != 0) {
        fprintf (stderr, "%s\n", err);
        PQfinish (c);
        return NULL;
    }
    return c;
}

/* A pulled row n of chunk seq (of chunk_rows rows) of run. */
static Embedflow__V1__Row *
s_row (int n, const char *run, uint64_t seq, uint32_t chunk_rows,
       const char *token)
{
    Embedflow__V1__Row *r = malloc (sizeof *r);
    embedflow__v1__row__init (r);
    r->id.len = 16;
    r->id.data = malloc (16);
    ef_uuid7_generate (r->id.data);
    r->document_id = malloc (32);
    snprintf (r->document_id, 32, "doc-%d", n);
    r->content = strdup ("c");
    r->metadata_json = strdup ("{}");
    r->model = strdup ("m");
    r->source = strdup ("s");
    r->job_id = strdup (run);
    r->resume_token = strdup (token);
    r->n_vector = S_DIM;
    r->vector = calloc (S_DIM, sizeof (float));
    r->covers = 1;
    r->chunk_seq = seq;
    r->chunk_rows = chunk_rows;
    r->origin = EF_ORIGIN_PULL;
    return r;
}

/* The run's position as a heap string ("?" on error). */
static char *
s_position (PGconn *c, const char *schema, const char *run)
{
    char err[256];
    char *p = ef_run_position (c, schema, run, err, sizeof err);
    return p ? p : strdup ("?");
}

/* True when the run's position is expected. */
static bool
s_at (PGconn *c, const char *schema, const char *run, const char *expected)
{
    char *p = s_position (c, schema, run);
    bool ok = strcmp (p, expected) == 0;
    if (!ok)
        fprintf (stderr, "position '%s', expected '%s'\n", p, expected);
    free (p);
    return ok;
}

EF_TEST (db_checkpoint_position)
{
    const char *schema = ef_test_schema ();
    PGconn *c = s_connect (schema);
    EF_REQUIRE (c);
    char err[256], run[37];
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, run);
    EF_REQUIRE (ef_run_start (c, schema, run, "job", "manual", "t-start", -1,
                              err, sizeof err)
                == 0);
    EF_CHECK (s_at (c, schema, run, "t-start"));

    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, S_DIM);
    EF_REQUIRE (w);
    EF_REQUIRE (
        ef_pgwrite_add_hook (w, ef_checkpoint_rows_hook, (void *) schema) == 0);
    /* chunk 0 has 3 rows, 2 here; chunk 1 complete; a pushed row that must
       not count */
    Embedflow__V1__Row *rows[5] = {
        s_row (0, run, 0, 3, "t0"), s_row (1, run, 0, 3, "t0"),
        s_row (3, run, 1, 2, "t1"), s_row (4, run, 1, 2, "t1"),
        s_row (9, run, 0, 3, "t0")};
    rows[4]->origin = EF_ORIGIN_PUSH;
    ef_write_report_t rep;
    EF_REQUIRE (ef_pgwrite_batch (w, rows, 5, &rep) == EF_WRITE_OK);
    EF_CHECK (s_at (c, schema, run, "t-start")); /* chunk 0 incomplete */

    /* The third row of chunk 0 is dead-lettered; a transaction that rolls
       back records nothing. */
    Embedflow__V1__DeadLetter dl = EMBEDFLOW__V1__DEAD_LETTER__INIT;
    dl.stage = "split";
    dl.reason_code = "wrong_dimension";
    dl.reason = "x";
    dl.job_id = run;
    dl.covers = 1;
    dl.chunk_seq = 0;
    dl.chunk_rows = 3;
    dl.resume_token = "t0";
    dl.origin = EF_ORIGIN_PULL;
    Embedflow__V1__DeadLetter *items[] = {&dl};
    PQclear (PQexec (c, "BEGIN"));
    EF_CHECK (ef_checkpoint_dead_letters (c, schema, items, 1, &rep)
              == EF_WRITE_OK);
    PQclear (PQexec (c, "ROLLBACK"));
    EF_CHECK (s_at (c, schema, run, "t-start"));
    PQclear (PQexec (c, "BEGIN"));
    EF_CHECK (ef_checkpoint_dead_letters (c, schema, items, 1, &rep)
              == EF_WRITE_OK);
    PQclear (PQexec (c, "COMMIT"));
    EF_CHECK (s_at (c, schema, run, "t1")); /* chunks 0 and 1 complete */

    /* chunk 3 complete, chunk 2 missing: the position waits for it */
    Embedflow__V1__Row *later[] = {s_row (5, run, 3, 1, "t3")};
    EF_REQUIRE (ef_pgwrite_batch (w, later, 1, &rep) == EF_WRITE_OK);
    EF_CHECK (s_at (c, schema, run, "t1"));
    /* an empty chunk 2 completes the prefix */
    EF_CHECK (
        ef_checkpoint_empty_chunk (c, schema, run, 2, "t2", err, sizeof err)
        == 0);
    EF_CHECK (s_at (c, schema, run, "t3"));

    /* The job resumes from its latest run; a run that got nowhere keeps
       the position it started from. */
    char *pos = ef_job_position (c, schema, "job", err, sizeof err);
    EF_CHECK (pos && strcmp (pos, "t3") == 0);
    char run2[37];
    ef_uuid7_generate (id);
    ef_uuid_format (id, run2);
    EF_REQUIRE (ef_run_start (c, schema, run2, "job", "manual", pos, -1, err,
                              sizeof err)
                == 0);
    free (pos);
    pos = ef_job_position (c, schema, "job", err, sizeof err);
    EF_CHECK (pos && strcmp (pos, "t3") == 0);
    free (pos);
    pos = ef_job_position (c, schema, "other", err, sizeof err);
    EF_CHECK (pos && strcmp (pos, "") == 0);
    free (pos);

    /* The end of a run stores its counts and position. */
    EF_CHECK (ef_run_update (c, schema, run, "completed", 7, 6, 1, NULL, err,
                             sizeof err)
              == 0);
    const char *p[] = {run};
    char *sql;
    EF_REQUIRE (asprintf (&sql,
                          "SELECT status, last_resume_token, rows_written,"
                          " finished_at IS NOT NULL FROM \"%s\".job_run"
                          " WHERE id = $1::uuid",
                          schema)
                > 0);
    PGresult *res = PQexecParams (c, sql, 1, NULL, p, NULL, NULL, 0);
    EF_REQUIRE (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res));
    EF_CHECK (strcmp (PQgetvalue (res, 0, 0), "completed") == 0);
    EF_CHECK (strcmp (PQgetvalue (res, 0, 1), "t3") == 0);
    EF_CHECK (strcmp (PQgetvalue (res, 0, 2), "6") == 0);
    EF_CHECK (strcmp (PQgetvalue (res, 0, 3), "t") == 0);
    PQclear (res);
    free (sql);
    /* its pieces are gone; the position stays, kept in job_run */
    EF_REQUIRE (asprintf (&sql,
                          "SELECT count (*) FROM \"%s\".pull_piece"
                          " WHERE run_id = $1::uuid",
                          schema)
                > 0);
    res = PQexecParams (c, sql, 1, NULL, p, NULL, NULL, 0);
    EF_CHECK (PQresultStatus (res) == PGRES_TUPLES_OK
              && strcmp (PQgetvalue (res, 0, 0), "0") == 0);
    PQclear (res);
    free (sql);
    EF_CHECK (s_at (c, schema, run, "t3"));

    for (int i = 0; i < 5; i++)
        embedflow__v1__row__free_unpacked (rows[i], NULL);
    embedflow__v1__row__free_unpacked (later[0], NULL);
    ef_pgwrite_destroy (&w);
    PQfinish (c);
}

EF_TEST (db_checkpoint_job_lock_and_stale_runs)
{
    const char *schema = ef_test_schema ();
    PGconn *a = s_connect (schema);
    PGconn *b = s_connect (schema);
    EF_REQUIRE (a && b);
    char err[256];
    EF_CHECK (ef_job_try_lock (a, schema, "j", err, sizeof err) == 1);
    EF_CHECK (ef_job_try_lock (b, schema, "j", err, sizeof err) == 0);
    EF_CHECK (ef_job_try_lock (b, schema, "other", err, sizeof err) == 1);

    char run[37];
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, run);
    EF_REQUIRE (
        ef_run_start (a, schema, run, "j", "manual", "", -1, err, sizeof err)
        == 0);
    /* the session holding the lock dies: the lock goes with it, and the
       run it left 'running' is found and abandoned */
    PQfinish (a);
    int got = 0;
    for (int i = 0; i < 100 && got != 1; i++) {
        got = ef_job_try_lock (b, schema, "j", err, sizeof err);
        if (got != 1)
            ef_backoff_sleep (20, NULL);
    }
    EF_CHECK (got == 1);
    EF_CHECK (ef_job_abandon_stale (b, schema, "j", err, sizeof err) == 1);
    EF_CHECK (ef_job_abandon_stale (b, schema, "j", err, sizeof err) == 0);
    /* a bad run id is a clear error, not a crash */
    EF_CHECK (ef_run_start (b, schema, "not-a-uuid", "j", "manual", "", -1, err,
                            sizeof err)
              == -1);
    EF_CHECK (strstr (err, "recording the run") != NULL);
    EF_CHECK (
        ef_run_start (b, schema, run, "j", "bogus", "", -1, err, sizeof err)
        == -1);
    /* cron slots: the first claim wins, the last one is remembered */
    int64_t last = 0;
    EF_CHECK (ef_job_last_slot (b, schema, "j", &last, err, sizeof err) == 0
              && last == -1);
    EF_CHECK (ef_job_claim_slot (b, schema, "j", 1800000000, err, sizeof err)
              == 1);
    EF_CHECK (ef_job_claim_slot (b, schema, "j", 1800000000, err, sizeof err)
              == 0);
    EF_CHECK (ef_job_claim_slot (b, schema, "j", 1800000060, err, sizeof err)
              == 1);
    EF_CHECK (ef_job_last_slot (b, schema, "j", &last, err, sizeof err) == 0
              && last == 1800000060);
    /* the lock can be given back and taken again */
    ef_job_unlock (b, schema, "j");
    EF_CHECK (ef_job_try_lock (b, schema, "j", err, sizeof err) == 1);
    PQfinish (b);
}
