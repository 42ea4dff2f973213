/*  checkpoint.c — pull pieces recorded with the data, and positions. */
#include "postgres/checkpoint.h"

#include "embedflow/buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres/pg.h"

/* One chunk's share of a transaction. */
typedef struct {
    const char *run_id;  /* borrowed: the row's job_id */
    uint64_t seq;        /* chunk sequence in the run */
    uint64_t rows;       /* rows of the chunk settled here (covers) */
    uint32_t chunk_rows; /* rows the chunk held */
    const char *token;   /* borrowed */
} s_piece_t;

/* Fills rep for a failed statement. */
static ef_write_status_t
s_fail (PGconn *conn, PGresult *res, const char *what, ef_write_report_t *rep)
{
    ef_pg_class_t cls = ef_pg_classify_result (conn, res);
    char msg[400];
    ef_pg_error (conn, res, rep->sqlstate, msg, sizeof msg);
    snprintf (rep->message, sizeof rep->message, "%s: %s", what, msg);
    snprintf (rep->reason_code, sizeof rep->reason_code, "%s",
              cls == EF_PG_TRANSIENT ? "db_unavailable" : "db_rejected");
    return cls == EF_PG_TRANSIENT ? EF_WRITE_RETRY : EF_WRITE_ERROR;
}

/* Adds covers rows of (run, seq) to the pieces. Returns 0, -1 when out
   of memory. */
static int
s_piece_add (s_piece_t **pieces, size_t *n, size_t *cap, const char *run_id,
             uint64_t seq, uint32_t covers, uint32_t chunk_rows,
             const char *token)
{
    for (size_t i = 0; i < *n; i++)
        if ((*pieces)[i].seq == seq
            && strcmp ((*pieces)[i].run_id, run_id) == 0) {
            (*pieces)[i].rows += covers;
            return 0;
        }
    if (*n == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 8;
        s_piece_t *grown = realloc (*pieces, grown_cap * sizeof *grown);
        if (!grown)
            return -1;
        *pieces = grown;
        *cap = grown_cap;
    }
    (*pieces)[(*n)++] =
        (s_piece_t){run_id, seq, covers, chunk_rows, token ? token : ""};
    return 0;
}

/* Inserts pieces[0..n) in one statement on conn's open transaction. */
static ef_write_status_t
s_insert (PGconn *conn, const char *schema, const s_piece_t *pieces, size_t n,
          ef_write_report_t *rep)
{
    if (n == 0)
        return EF_WRITE_OK;
    ef_buf_t cols[5] = {{0}};
    for (int c = 0; c < 5; c++)
        ef_buf_put (&cols[c], "{", 1);
    for (size_t i = 0; i < n; i++) {
        char num[32];
        const char *sep = i ? "," : "";
        ef_buf_put (&cols[0], sep, strlen (sep));
        ef_pg_array_put_text (&cols[0], pieces[i].run_id);
        snprintf (num, sizeof num, "%s%" PRIu64, sep, pieces[i].seq);
        ef_buf_put (&cols[1], num, strlen (num));
        snprintf (num, sizeof num, "%s%" PRIu64, sep, pieces[i].rows);
        ef_buf_put (&cols[2], num, strlen (num));
        snprintf (num, sizeof num, "%s%" PRIu32, sep, pieces[i].chunk_rows);
        ef_buf_put (&cols[3], num, strlen (num));
        ef_buf_put (&cols[4], sep, strlen (sep));
        ef_pg_array_put_text (&cols[4], pieces[i].token);
    }
    bool oom = false;
    for (int c = 0; c < 5; c++) {
        ef_buf_put (&cols[c], "}", 1);
        oom |= cols[c].failed;
    }
    char *quoted = oom ? NULL : ef_pg_ident (conn, schema);
    char *sql = NULL;
    ef_write_status_t st = EF_WRITE_OK;
    if (!quoted
        || asprintf (&sql,
                     "INSERT INTO %s.pull_piece (run_id, chunk_seq, rows,"
                     " chunk_rows, resume_token) SELECT * FROM unnest"
                     " ($1::uuid[], $2::bigint[], $3::int[], $4::int[],"
                     " $5::text[])",
                     quoted)
               < 0) {
        sql = NULL;
        snprintf (rep->reason_code, sizeof rep->reason_code, "db_unavailable");
        snprintf (rep->message, sizeof rep->message,
                  "recording the checkpoint: out of memory");
        st = EF_WRITE_RETRY;
    }
    else {
        const char *params[5];
        for (int c = 0; c < 5; c++)
            params[c] = cols[c].data;
        PGresult *res =
            PQexecParams (conn, sql, 5, NULL, params, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_COMMAND_OK)
            st = s_fail (conn, res, "recording the checkpoint", rep);
        PQclear (res);
    }
    free (sql);
    free (quoted);
    for (int c = 0; c < 5; c++)
        free (cols[c].data);
    return st;
}

ef_write_status_t
ef_checkpoint_rows_hook (PGconn *conn, void *arg,
                         Embedflow__V1__Row *const *rows, size_t n,
                         const bool *changed, ef_write_report_t *rep)
{
    (void) changed; /* unchanged and superseded rows are settled too */
    s_piece_t *pieces = NULL;
    size_t np = 0, cap = 0;
    for (size_t i = 0; i < n; i++) {
        const Embedflow__V1__Row *r = rows[i];
        if (!r->checkpoint)
            continue;
        if (s_piece_add (&pieces, &np, &cap, r->job_id, r->chunk_seq,
                         r->covers ? r->covers : 1, r->chunk_rows,
                         r->resume_token)
            != 0) {
            free (pieces);
            snprintf (rep->reason_code, sizeof rep->reason_code,
                      "db_unavailable");
            snprintf (rep->message, sizeof rep->message,
                      "recording the checkpoint: out of memory");
            return EF_WRITE_RETRY;
        }
    }
    ef_write_status_t st = s_insert (conn, (const char *) arg, pieces, np, rep);
    free (pieces);
    return st;
}

ef_write_status_t
ef_checkpoint_dead_letters (PGconn *conn, const char *schema,
                            Embedflow__V1__DeadLetter *const *items, size_t n,
                            ef_write_report_t *rep)
{
    s_piece_t *pieces = NULL;
    size_t np = 0, cap = 0;
    for (size_t i = 0; i < n; i++) {
        const Embedflow__V1__DeadLetter *d = items[i];
        if (!d->checkpoint || d->covers == 0)
            continue;
        if (s_piece_add (&pieces, &np, &cap, d->job_id, d->chunk_seq, d->covers,
                         d->chunk_rows, d->resume_token)
            != 0) {
            free (pieces);
            snprintf (rep->reason_code, sizeof rep->reason_code,
                      "db_unavailable");
            snprintf (rep->message, sizeof rep->message,
                      "recording the checkpoint: out of memory");
            return EF_WRITE_RETRY;
        }
    }
    ef_write_status_t st = s_insert (conn, schema, pieces, np, rep);
    free (pieces);
    return st;
}

int
ef_checkpoint_empty_chunk (PGconn *conn, const char *schema, const char *run_id,
                           uint64_t seq, const char *token, char *err,
                           size_t errlen)
{
    char seq_s[24];
    snprintf (seq_s, sizeof seq_s, "%" PRIu64, seq);
    const char *params[] = {run_id, seq_s, token ? token : ""};
    PGresult *res =
        ef_pg_exec_schema (conn, schema,
                           "INSERT INTO %s.pull_piece (run_id, chunk_seq,"
                           " rows, chunk_rows, resume_token)"
                           " VALUES ($1::uuid, $2::bigint, 0, 0, $3)",
                           3, params, "recording an empty chunk", err, errlen);
    PQclear (res);
    return res ? 0 : -1;
}

/* Returns a heap copy of the single value of res, "" without a row. */
static char *
s_single (PGresult *res, char *err, size_t errlen)
{
    if (!res)
        return NULL;
    char *v = strdup (PQntuples (res) ? PQgetvalue (res, 0, 0) : "");
    PQclear (res);
    if (!v)
        snprintf (err, errlen, "out of memory");
    return v;
}

char *
ef_job_position (PGconn *conn, const char *schema, const char *job, char *err,
                 size_t errlen)
{
    const char *params[] = {job};
    return s_single (ef_pg_exec_schema (
                         conn, schema,
                         "SELECT coalesce (r.last_resume_token, "
                         "(" EF_CHECKPOINT_RUN_POSITION_SQL
                         "), r.start_token) FROM %s.job_run r"
                         " WHERE r.job = $1 AND r.trigger <> 'upload'"
                         " ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
                         1, params, "reading the job's position", err, errlen),
                     err, errlen);
}

char *
ef_run_position (PGconn *conn, const char *schema, const char *run_id,
                 char *err, size_t errlen)
{
    const char *params[] = {run_id};
    return s_single (ef_pg_exec_schema (conn, schema,
                                        "SELECT coalesce (r.last_resume_token, "
                                        "(" EF_CHECKPOINT_RUN_POSITION_SQL
                                        "), r.start_token) FROM %s.job_run r"
                                        " WHERE r.id = $1::uuid",
                                        1, params, "reading the run's position",
                                        err, errlen),
                     err, errlen);
}
