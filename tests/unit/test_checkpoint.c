/*  test_checkpoint.c — pull pieces committed with the data, positions,
    job locks and the job history, against a real PostgreSQL. */
#include "ef_test.h"

#include <stdlib.h>
#include <string.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "postgres/checkpoint.h"
#include "postgres/runlog.h"
#include "postgres/pg.h"
#include "postgres/pgwrite.h"
#include "postgres/schema.h"
#include "rows/uuid7.h"

#define S_DIM 4
static const ef_schema_opts_t s_opts = {.dim = S_DIM,
                                        .vector_type = EF_VECTOR_AUTO};

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
    r->checkpoint = true;
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
    rows[4]->checkpoint = false;
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
    dl.checkpoint = true;
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

/* Runs sql (every %s is the quoted test schema) with text params; returns
   the result or NULL (printed). */
static PGresult *
s_query (PGconn *c, const char *schema, const char *sql_fmt, int n,
         const char *const *params)
{
    char *sql;
    if (asprintf (&sql, sql_fmt, schema, schema) < 0)
        return NULL;
    PGresult *res = PQexecParams (c, sql, n, NULL, params, NULL, NULL, 0);
    free (sql);
    ExecStatusType st = PQresultStatus (res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf (stderr, "%s", PQerrorMessage (c));
        PQclear (res);
        return NULL;
    }
    return res;
}

/* A new run of job with trigger whose heartbeat is at (SQL timestamptz
   expression); run receives its id. */
static bool
s_run_at (PGconn *c, const char *schema, char run[37], const char *job,
          const char *trigger, const char *at)
{
    char err[256];
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, run);
    if (ef_run_start (c, schema, run, job, trigger, "", -1, err, sizeof err)
        != 0) {
        fprintf (stderr, "%s\n", err);
        return false;
    }
    char *sql;
    if (asprintf (&sql,
                  "UPDATE \"%%s\".job_run SET heartbeat_at = %s"
                  " WHERE id = $1::uuid",
                  at)
        < 0)
        return false;
    const char *p[] = {run};
    PGresult *res = s_query (c, schema, sql, 1, p);
    free (sql);
    PQclear (res);
    return res != NULL;
}

/* The run's "status|error|finished_at = heartbeat_at|rows_received" as
   a heap string. */
static char *
s_run_row (PGconn *c, const char *schema, const char *run)
{
    const char *p[] = {run};
    PGresult *res = s_query (
        c, schema,
        "SELECT status || '|' || coalesce (error, '') || '|'"
        "  || coalesce ((finished_at = heartbeat_at)::text, 'null') || '|'"
        "  || rows_received FROM \"%s\".job_run WHERE id = $1::uuid",
        1, p);
    char *v = strdup (res && PQntuples (res) ? PQgetvalue (res, 0, 0) : "?");
    PQclear (res);
    return v;
}

/* True when the run's row reads expected (see s_run_row). */
static bool
s_row_is (PGconn *c, const char *schema, const char *run, const char *expected)
{
    char *v = s_run_row (c, schema, run);
    bool ok = strcmp (v, expected) == 0;
    if (!ok)
        fprintf (stderr, "run row '%s', expected '%s'\n", v, expected);
    free (v);
    return ok;
}

EF_TEST (db_checkpoint_stale_uploads)
{
    const char *schema = ef_test_schema ();
    PGconn *c = s_connect (schema);
    EF_REQUIRE (c);
    char err[256];
    char old[37], late[37], fresh[37], pull[37], done[37];
    /* a heartbeat at a known time, one just over and one just under the
       10 s threshold, a pull run (lock-based recovery, not ours) and an
       upload that ended long ago */
    EF_REQUIRE (s_run_at (c, schema, old, "src", "upload",
                          "'2026-01-02 03:04:05.678+00'"));
    EF_REQUIRE (s_run_at (c, schema, late, "src", "upload",
                          "now () - interval '11 seconds'"));
    EF_REQUIRE (s_run_at (c, schema, fresh, "src", "upload",
                          "now () - interval '9 seconds'"));
    EF_REQUIRE (s_run_at (c, schema, pull, "src", "manual",
                          "now () - interval '1 hour'"));
    EF_REQUIRE (s_run_at (c, schema, done, "src", "upload",
                          "now () - interval '1 hour'"));
    EF_REQUIRE (ef_run_update (c, schema, done, "completed", 3, 3, 0, NULL, err,
                               sizeof err)
                == 0);

    EF_CHECK (ef_job_abandon_stale_uploads (c, schema, 10000, err, sizeof err)
              == 2);
    EF_CHECK (s_row_is (c, schema, old,
                        "abandoned|heartbeat stopped at 2026-01-02 03:04:05"
                        " UTC: the process taking the upload is gone|true|0"));
    char *v = s_run_row (c, schema, late);
    EF_CHECK (strncmp (v, "abandoned|heartbeat stopped at ", 31) == 0);
    free (v);
    EF_CHECK (s_row_is (c, schema, fresh, "running||null|0"));
    EF_CHECK (s_row_is (c, schema, pull, "running||null|0"));
    v = s_run_row (c, schema, done);
    EF_CHECK (strncmp (v, "completed||", 11) == 0);
    free (v);
    /* nothing left to mark; the lock-based recovery of pull runs leaves
       uploads alone */
    EF_CHECK (ef_job_abandon_stale_uploads (c, schema, 10000, err, sizeof err)
              == 0);
    EF_CHECK (ef_job_abandon_stale (c, schema, "src", err, sizeof err) == 1);
    EF_CHECK (s_row_is (c, schema, fresh, "running||null|0"));

    /* A beat stores counts; it brings an upload wrongly taken for dead
       back to 'running' and leaves ended runs alone. */
    ef_run_counts_t beats[] = {
        {old, 5, 4, 1}, {fresh, 7, 6, 0}, {done, 9, 9, 0}};
    EF_CHECK (ef_run_beat (c, schema, beats, 3, err, sizeof err) == 2);
    EF_CHECK (s_row_is (c, schema, old, "running||null|5"));
    EF_CHECK (s_row_is (c, schema, fresh, "running||null|7"));
    v = s_run_row (c, schema, done);
    EF_CHECK (strncmp (v, "completed||", 11) == 0 && strstr (v, "|3"));
    free (v);
    const char *p[] = {fresh};
    PGresult *res = s_query (c, schema,
                             "SELECT rows_written, rows_dead_lettered,"
                             " heartbeat_at > now () - interval '5 seconds'"
                             " FROM \"%s\".job_run WHERE id = $1::uuid",
                             1, p);
    EF_CHECK (res && strcmp (PQgetvalue (res, 0, 0), "6") == 0
              && strcmp (PQgetvalue (res, 0, 1), "0") == 0
              && strcmp (PQgetvalue (res, 0, 2), "t") == 0);
    PQclear (res);
    /* the fresh beats keep them from being marked */
    EF_CHECK (ef_job_abandon_stale_uploads (c, schema, 10000, err, sizeof err)
              == 0);
    EF_CHECK (ef_run_beat (c, schema, beats, 0, err, sizeof err) == 0);

    /* errors are reported, not crashes */
    ef_run_counts_t bad[] = {{"not-a-uuid", 1, 1, 0}};
    EF_CHECK (ef_run_beat (c, schema, bad, 1, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "storing heartbeats") != NULL);
    EF_CHECK (ef_job_abandon_stale_uploads (c, "no_such_schema_here", 10000,
                                            err, sizeof err)
              == -1);
    EF_CHECK (strstr (err, "marking stale uploads") != NULL);
    PQfinish (c);
}

/* The run's status ("?" when absent). */
static bool
s_status_is (PGconn *c, const char *schema, const char *run,
             const char *expected)
{
    const char *p[] = {run};
    PGresult *res =
        s_query (c, schema,
                 "SELECT status FROM \"%s\".job_run WHERE id = $1::uuid", 1, p);
    bool ok = res && PQntuples (res)
              && strcmp (PQgetvalue (res, 0, 0), expected) == 0;
    PQclear (res);
    return ok;
}

/* Waits up to 10 s for the run's status to be expected. */
static bool
s_wait_status (PGconn *c, const char *schema, const char *run,
               const char *expected)
{
    for (int i = 0; i < 500; i++) {
        if (s_status_is (c, schema, run, expected))
            return true;
        ef_backoff_sleep (20, NULL);
    }
    return false;
}

EF_TEST (db_checkpoint_runlog_beats)
{
    const char *schema = ef_test_schema ();
    PGconn *c = s_connect (schema);
    EF_REQUIRE (c);
    ef_runlog_t *log = ef_runlog_new (ef_test_conninfo (), schema, &s_opts);
    EF_REQUIRE (log);
    char run[37], dead[37], dead2[37];
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, run);
    ef_runlog_start (log, run, "src", "upload");
    ef_run_counts_t beat[] = {{run, 10, 8, 1}};
    ef_runlog_beat (log, beat, 1);
    EF_CHECK (s_row_is (c, schema, run, "running||null|10"));
    /* another process's upload whose heartbeat stopped a minute ago is
       marked at once, one found later by a periodic sweep; the live one
       stays */
    EF_REQUIRE (s_run_at (c, schema, dead, "src", "upload",
                          "now () - interval '1 minute'"));
    EF_REQUIRE (ef_runlog_sweep_start (log, 30000, 50) == 0);
    EF_CHECK (s_wait_status (c, schema, dead, "abandoned"));
    EF_REQUIRE (s_run_at (c, schema, dead2, "src", "upload",
                          "now () - interval '1 minute'"));
    EF_CHECK (s_wait_status (c, schema, dead2, "abandoned"));
    EF_CHECK (s_row_is (c, schema, run, "running||null|10"));
    ef_runlog_end (log, run, "completed", 10, 9, 1, NULL);
    EF_CHECK (s_row_is (c, schema, run, "completed||true|10"));
    ef_runlog_destroy (&log);
    EF_CHECK (log == NULL);

    /* a sweep stuck behind a lock is cancelled when the runlog goes */
    log = ef_runlog_new (ef_test_conninfo (), schema, &s_opts);
    EF_REQUIRE (log);
    PGresult *res = s_query (c, schema, "BEGIN", 0, NULL);
    PQclear (res);
    res =
        s_query (c, schema,
                 "LOCK TABLE \"%s\".job_run IN ACCESS EXCLUSIVE MODE", 0, NULL);
    EF_CHECK (res != NULL);
    PQclear (res);
    EF_REQUIRE (ef_runlog_sweep_start (log, 30000, 50) == 0);
    const char *p[] = {schema};
    bool waiting = false;
    for (int i = 0; i < 500 && !waiting; i++) {
        /* inside a transaction the activity view is a snapshot */
        PQclear (PQexec (c, "SELECT pg_stat_clear_snapshot ()"));
        res = PQexecParams (c,
                            "SELECT count (*) FROM pg_stat_activity"
                            " WHERE wait_event_type = 'Lock'"
                            " AND query LIKE '%' || $1 || '%'",
                            1, NULL, p, NULL, NULL, 0);
        waiting = PQresultStatus (res) == PGRES_TUPLES_OK
                  && strcmp (PQgetvalue (res, 0, 0), "0") != 0;
        PQclear (res);
        if (!waiting)
            ef_backoff_sleep (20, NULL);
    }
    EF_CHECK (waiting);
    int64_t t0 = ef_clock_mono_us ();
    ef_runlog_destroy (&log);
    EF_CHECK (ef_clock_mono_us () - t0 < 5000000);
    PQclear (PQexec (c, "ROLLBACK"));

    /* without a database: logged, never passed on */
    log = ef_runlog_new ("host=127.0.0.1 port=1 dbname=x connect_timeout=2",
                         schema, &s_opts);
    EF_REQUIRE (log);
    ef_runlog_beat (log, beat, 1);
    ef_runlog_beat (log, beat, 1);
    EF_CHECK (ef_runlog_sweep_start (log, 30000, 50) == 0);
    ef_runlog_destroy (&log);
    PQfinish (c);
}
