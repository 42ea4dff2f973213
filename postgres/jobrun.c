/*  jobrun.c — runs in <schema>.job_run: locks, cron slots, counts and
    heartbeats. */
#include "postgres/jobrun.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "embedflow/buf.h"
#include "postgres/checkpoint.h"
#include "postgres/pg.h"

int
ef_job_try_lock (PGconn *conn, const char *schema, const char *job, char *err,
                 size_t errlen)
{
    char buf[512], key[32];
    snprintf (buf, sizeof buf, "embedflow.job:%s:%s", schema, job);
    snprintf (key, sizeof key, "%" PRId64,
              (int64_t) XXH3_64bits (buf, strlen (buf)));
    const char *params[] = {key};
    PGresult *res =
        PQexecParams (conn, "SELECT pg_try_advisory_lock ($1::bigint)", 1, NULL,
                      params, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus (res) == PGRES_TUPLES_OK)
        rc = strcmp (PQgetvalue (res, 0, 0), "t") == 0 ? 1 : 0;
    else {
        char msg[400];
        ef_pg_error (conn, res, NULL, msg, sizeof msg);
        snprintf (err, errlen, "locking job %s: %s", job, msg);
    }
    PQclear (res);
    return rc;
}

int
ef_job_abandon_stale (PGconn *conn, const char *schema, const char *job,
                      char *err, size_t errlen)
{
    const char *params[] = {job};
    PGresult *res = ef_pg_exec_schema (
        conn, schema,
        "WITH u AS (UPDATE %s.job_run r SET status = 'abandoned',"
        "  finished_at = now(), last_resume_token = coalesce "
        "((" EF_CHECKPOINT_RUN_POSITION_SQL "), r.start_token),"
        "  error = 'the process running it stopped (last heartbeat '"
        "    || r.heartbeat_at || ')'"
        " WHERE r.job = $1 AND r.status = 'running' AND r.trigger <> 'upload'"
        " RETURNING r.id),"
        " d AS (DELETE FROM %s.pull_piece WHERE run_id IN (SELECT id FROM u))"
        " SELECT count (*) FROM u",
        1, params, "marking stale runs", err, errlen);
    if (!res)
        return -1;
    int n = atoi (PQgetvalue (res, 0, 0));
    PQclear (res);
    return n;
}

int
ef_job_abandon_stale_uploads (PGconn *conn, const char *schema,
                              int64_t stale_ms, char *err, size_t errlen)
{
    char ms[24];
    snprintf (ms, sizeof ms, "%" PRId64, stale_ms);
    const char *params[] = {ms};
    /* now() and heartbeat_at are both the database's clock, so processes
       on hosts whose clocks disagree still judge alike */
    PGresult *res = ef_pg_exec_schema (
        conn, schema,
        "UPDATE %s.job_run SET status = 'abandoned',"
        "  finished_at = heartbeat_at,"
        "  error = 'heartbeat stopped at '"
        "    || to_char (heartbeat_at AT TIME ZONE 'UTC',"
        "                'YYYY-MM-DD HH24:MI:SS')"
        "    || ' UTC: the process taking the upload is gone'"
        " WHERE trigger = 'upload' AND status = 'running'"
        "   AND heartbeat_at < now () - $1::bigint * interval '1 millisecond'",
        1, params, "marking stale uploads", err, errlen);
    if (!res)
        return -1;
    int n = atoi (PQcmdTuples (res));
    PQclear (res);
    return n;
}

int
ef_run_start (PGconn *conn, const char *schema, const char *run_id,
              const char *job, const char *trigger, const char *start_token,
              int64_t slot, char *err, size_t errlen)
{
    char slot_s[24];
    snprintf (slot_s, sizeof slot_s, "%" PRId64, slot);
    const char *params[] = {run_id, job, trigger,
                            start_token ? start_token : "",
                            slot >= 0 ? slot_s : NULL};
    PGresult *res =
        ef_pg_exec_schema (conn, schema,
                           "INSERT INTO %s.job_run (id, job, trigger, status,"
                           " start_token, slot) VALUES ($1::uuid, $2, $3,"
                           " 'running', $4, to_timestamp ($5::bigint))",
                           5, params, "recording the run", err, errlen);
    PQclear (res);
    return res ? 0 : -1;
}

void
ef_job_unlock (PGconn *conn, const char *schema, const char *job)
{
    char buf[512], key[32];
    snprintf (buf, sizeof buf, "embedflow.job:%s:%s", schema, job);
    snprintf (key, sizeof key, "%" PRId64,
              (int64_t) XXH3_64bits (buf, strlen (buf)));
    const char *params[] = {key};
    PQclear (PQexecParams (conn, "SELECT pg_advisory_unlock ($1::bigint)", 1,
                           NULL, params, NULL, NULL, 0));
}

int
ef_job_claim_slot (PGconn *conn, const char *schema, const char *job,
                   int64_t slot, char *err, size_t errlen)
{
    char slot_s[24];
    snprintf (slot_s, sizeof slot_s, "%" PRId64, slot);
    const char *params[] = {job, slot_s};
    PGresult *res =
        ef_pg_exec_schema (conn, schema,
                           "INSERT INTO %s.job_slot (job, slot)"
                           " VALUES ($1, to_timestamp ($2::bigint))"
                           " ON CONFLICT DO NOTHING",
                           2, params, "claiming a cron slot", err, errlen);
    if (!res)
        return -1;
    int n = atoi (PQcmdTuples (res));
    PQclear (res);
    return n == 1 ? 1 : 0;
}

int
ef_job_last_slot (PGconn *conn, const char *schema, const char *job,
                  int64_t *slot, char *err, size_t errlen)
{
    const char *params[] = {job};
    PGresult *res = ef_pg_exec_schema (
        conn, schema,
        "SELECT coalesce (extract (epoch FROM max (slot))::bigint, -1)"
        " FROM %s.job_slot WHERE job = $1",
        1, params, "reading the last cron slot", err, errlen);
    if (!res)
        return -1;
    *slot = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return 0;
}

int
ef_run_update (PGconn *conn, const char *schema, const char *run_id,
               const char *status, uint64_t received, uint64_t written,
               uint64_t dead, const char *error, char *err, size_t errlen)
{
    char r[24], w[24], d[24];
    snprintf (r, sizeof r, "%" PRIu64, received);
    snprintf (w, sizeof w, "%" PRIu64, written);
    snprintf (d, sizeof d, "%" PRIu64, dead);
    const char *params[] = {run_id, r, w, d, status, error};
    PGresult *res = ef_pg_exec_schema (
        conn, schema,
        /* the end stores the position; the pieces that made it go */
        status ? "WITH u AS (UPDATE %s.job_run r SET heartbeat_at = now(),"
                 " rows_received = $2, rows_written = $3,"
                 " rows_dead_lettered = $4, status = $5, finished_at = now(),"
                 " error = $6, last_resume_token = coalesce "
                 "((" EF_CHECKPOINT_RUN_POSITION_SQL
                 "), r.start_token) WHERE r.id = $1::uuid RETURNING r.id)"
                 " DELETE FROM %s.pull_piece WHERE run_id IN (SELECT id"
                 " FROM u)"
               : "UPDATE %s.job_run SET heartbeat_at = now(),"
                 " rows_received = $2, rows_written = $3,"
                 " rows_dead_lettered = $4 WHERE id = $1::uuid",
        status ? 6 : 4, params, "updating the run", err, errlen);
    PQclear (res);
    return res ? 0 : -1;
}

int
ef_run_beat (PGconn *conn, const char *schema, const ef_run_counts_t *runs,
             size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return 0;
    ef_buf_t cols[4] = {{0}};
    for (int c = 0; c < 4; c++)
        ef_buf_put (&cols[c], "{", 1);
    for (size_t i = 0; i < n; i++) {
        char num[32];
        const char *sep = i ? "," : "";
        ef_buf_put (&cols[0], sep, strlen (sep));
        ef_pg_array_put_text (&cols[0], runs[i].run_id);
        snprintf (num, sizeof num, "%s%" PRIu64, sep, runs[i].received);
        ef_buf_put (&cols[1], num, strlen (num));
        snprintf (num, sizeof num, "%s%" PRIu64, sep, runs[i].written);
        ef_buf_put (&cols[2], num, strlen (num));
        snprintf (num, sizeof num, "%s%" PRIu64, sep, runs[i].dead);
        ef_buf_put (&cols[3], num, strlen (num));
    }
    bool oom = false;
    for (int c = 0; c < 4; c++) {
        ef_buf_put (&cols[c], "}", 1);
        oom |= cols[c].failed;
    }
    int rc = -1;
    if (oom)
        snprintf (err, errlen, "storing heartbeats: out of memory");
    else {
        const char *params[] = {cols[0].data, cols[1].data, cols[2].data,
                                cols[3].data};
        PGresult *res = ef_pg_exec_schema (
            conn, schema,
            "UPDATE %s.job_run r SET heartbeat_at = now (),"
            "  rows_received = u.received, rows_written = u.written,"
            "  rows_dead_lettered = u.dead, status = 'running',"
            "  finished_at = NULL, error = NULL"
            " FROM unnest ($1::uuid[], $2::bigint[], $3::bigint[],"
            "              $4::bigint[]) AS u (id, received, written, dead)"
            " WHERE r.id = u.id AND (r.status = 'running'"
            "   OR (r.status = 'abandoned' AND r.trigger = 'upload'))",
            4, params, "storing heartbeats", err, errlen);
        if (res) {
            rc = atoi (PQcmdTuples (res));
            PQclear (res);
        }
    }
    for (int c = 0; c < 4; c++)
        free (cols[c].data);
    return rc;
}
