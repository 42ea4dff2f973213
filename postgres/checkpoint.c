/*  checkpoint.c — pull pieces, positions and the job history. */
#include "postgres/checkpoint.h"

#include "embedflow/buf.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "postgres/pg.h"
#include "postgres/schema.h"

/* One chunk's share of a transaction. */
typedef struct {
    const char *run_id;  /* borrowed: the row's job_id */
    uint64_t seq;        /* chunk sequence in the run */
    uint64_t rows;       /* rows of the chunk settled here (covers) */
    uint32_t chunk_rows; /* rows the chunk held */
    const char *token;   /* borrowed */
} s_piece_t;

/* A growing text buffer; oom set once an allocation failed. */
/* Appends s as a quoted element of a text array literal. */
static void
s_put_quoted (ef_buf_t *t, const char *s)
{
    ef_buf_put (t, "\"", 1);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            ef_buf_put (t, "\\", 1);
        ef_buf_put (t, s, 1);
    }
    ef_buf_put (t, "\"", 1);
}

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
        s_put_quoted (&cols[0], pieces[i].run_id);
        snprintf (num, sizeof num, "%s%" PRIu64, sep, pieces[i].seq);
        ef_buf_put (&cols[1], num, strlen (num));
        snprintf (num, sizeof num, "%s%" PRIu64, sep, pieces[i].rows);
        ef_buf_put (&cols[2], num, strlen (num));
        snprintf (num, sizeof num, "%s%" PRIu32, sep, pieces[i].chunk_rows);
        ef_buf_put (&cols[3], num, strlen (num));
        ef_buf_put (&cols[4], sep, strlen (sep));
        s_put_quoted (&cols[4], pieces[i].token);
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

/* Runs sql (with "%s" standing for the quoted schema) with text params.
   Returns the result (caller clears) or NULL with err set. */
static PGresult *
s_exec (PGconn *conn, const char *schema, const char *sql_fmt, int nparams,
        const char *const *params, const char *what, char *err, size_t errlen)
{
    char *quoted = ef_pg_ident (conn, schema);
    char *sql = NULL;
    /* every %s in sql_fmt is the schema (unused arguments are ignored) */
    if (!quoted || asprintf (&sql, sql_fmt, quoted, quoted, quoted) < 0) {
        free (quoted);
        snprintf (err, errlen, "%s: out of memory", what);
        return NULL;
    }
    free (quoted);
    PGresult *res =
        PQexecParams (conn, sql, nparams, NULL, params, NULL, NULL, 0);
    free (sql);
    ExecStatusType st = PQresultStatus (res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    char state[6], msg[400];
    ef_pg_error (conn, res, state, msg, sizeof msg);
    snprintf (err, errlen, "%s: %s%s%s", what, state, *state ? " " : "", msg);
    PQclear (res);
    return NULL;
}

int
ef_checkpoint_empty_chunk (PGconn *conn, const char *schema, const char *run_id,
                           uint64_t seq, const char *token, char *err,
                           size_t errlen)
{
    char seq_s[24];
    snprintf (seq_s, sizeof seq_s, "%" PRIu64, seq);
    const char *params[] = {run_id, seq_s, token ? token : ""};
    PGresult *res = s_exec (conn, schema,
                            "INSERT INTO %s.pull_piece (run_id, chunk_seq,"
                            " rows, chunk_rows, resume_token)"
                            " VALUES ($1::uuid, $2::bigint, 0, 0, $3)",
                            3, params, "recording an empty chunk", err, errlen);
    PQclear (res);
    return res ? 0 : -1;
}

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

/* The complete prefix of a run: the token of its last chunk. */
#define S_RUN_PREFIX                                                           \
    "SELECT c.t FROM (SELECT chunk_seq, max (resume_token) AS t,"              \
    "    row_number () OVER (ORDER BY chunk_seq) - 1 AS rn"                    \
    "  FROM %s.pull_piece WHERE run_id = r.id GROUP BY chunk_seq"              \
    "  HAVING sum (rows) >= max (chunk_rows)) c"                               \
    " WHERE c.chunk_seq = c.rn ORDER BY c.chunk_seq DESC LIMIT 1"

int
ef_job_abandon_stale (PGconn *conn, const char *schema, const char *job,
                      char *err, size_t errlen)
{
    const char *params[] = {job};
    PGresult *res = s_exec (
        conn, schema,
        "WITH u AS (UPDATE %s.job_run r SET status = 'abandoned',"
        "  finished_at = now(), last_resume_token = coalesce ((" S_RUN_PREFIX
        "), r.start_token),"
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
    PGresult *res = s_exec (
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
    return s_single (
        s_exec (conn, schema,
                "SELECT coalesce (r.last_resume_token, (" S_RUN_PREFIX
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
    return s_single (
        s_exec (conn, schema,
                "SELECT coalesce (r.last_resume_token, (" S_RUN_PREFIX
                "), r.start_token) FROM %s.job_run r"
                " WHERE r.id = $1::uuid",
                1, params, "reading the run's position", err, errlen),
        err, errlen);
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
    PGresult *res = s_exec (conn, schema,
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
    PGresult *res = s_exec (conn, schema,
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
    PGresult *res =
        s_exec (conn, schema,
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
    PGresult *res = s_exec (
        conn, schema,
        /* the end stores the position; the pieces that made it go */
        status ? "WITH u AS (UPDATE %s.job_run r SET heartbeat_at = now(),"
                 " rows_received = $2, rows_written = $3,"
                 " rows_dead_lettered = $4, status = $5, finished_at = now(),"
                 " error = $6, last_resume_token = coalesce ((" S_RUN_PREFIX
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
        s_put_quoted (&cols[0], runs[i].run_id);
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
        PGresult *res = s_exec (
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

/* --- upload history ------------------------------------------------------ */

/* Longest a history statement may hold the caller's thread: it touches a
   handful of rows, so more means the database is in trouble, and the
   data matters more than its history. */
#define S_RUNLOG_STATEMENT_MS 2000
/* The sweep scans job_run on its own thread; it may take longer */
#define S_SWEEP_STATEMENT_MS 60000
/* Reconnects for the periodic calls back off up to this */
#define S_RUNLOG_RETRY_CAP_MS 60000

struct ef_runlog {
    char *conninfo;        /* NULL = libpq defaults */
    char *schema;          /* where job_run lives */
    ef_schema_opts_t opts; /* for the migration */
    PGconn *conn;          /* opened on first use */
    bool warned;           /* a failure was logged since the last success */
    ef_backoff_t backoff;  /* paces beats after failures */
    int64_t retry_at_us;   /* beats are skipped until then */

    pthread_t sweeper;     /* marks stale uploads, when started */
    bool sweeping;         /* the sweeper thread exists */
    pthread_mutex_t mutex; /* guards stop and cancel */
    pthread_cond_t wake;   /* signalled to stop the sweeper */
    bool stop;             /* the sweeper must end */
    PGcancel *cancel;      /* cancels the sweeper's statement */
    int64_t stale_ms;      /* the sweeper's threshold */
    int64_t period_ms;     /* time between its sweeps */
};

ef_runlog_t *
ef_runlog_new (const char *conninfo, const char *schema,
               const ef_schema_opts_t *opts)
{
    ef_runlog_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->conninfo = conninfo ? strdup (conninfo) : NULL;
    self->schema = strdup (schema ? schema : "embedflow");
    self->opts = *opts;
    self->backoff = ef_backoff_make (500, S_RUNLOG_RETRY_CAP_MS, -1);
    if ((conninfo && !self->conninfo) || !self->schema) {
        ef_runlog_destroy (&self);
        return NULL;
    }
    return self;
}

void
ef_runlog_destroy (ef_runlog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_runlog_t *self = *self_p;
    if (self->sweeping) {
        pthread_mutex_lock (&self->mutex);
        self->stop = true;
        if (self->cancel) {
            /* a sweep of a big job_run may be running: end it now */
            char buf[256];
            PQcancel (self->cancel, buf, sizeof buf);
        }
        pthread_cond_signal (&self->wake);
        pthread_mutex_unlock (&self->mutex);
        pthread_join (self->sweeper, NULL);
        pthread_cond_destroy (&self->wake);
        pthread_mutex_destroy (&self->mutex);
    }
    PQfinish (self->conn);
    free (self->conninfo);
    free (self->schema);
    free (self);
    *self_p = NULL;
}

/* A new history connection: schema migrated, statements limited to
   statement_ms. NULL with err. */
static PGconn *
s_history_connect (ef_runlog_t *self, int statement_ms, char *err,
                   size_t errlen)
{
    PGconn *conn =
        ef_pg_connect (self->conninfo, "embedflow job history", err, errlen);
    if (conn
        && ef_schema_migrate_opts (conn, self->schema, &self->opts, err, errlen)
               != 0) {
        PQfinish (conn);
        return NULL;
    }
    if (conn) {
        char set[64];
        snprintf (set, sizeof set, "SET statement_timeout = %d", statement_ms);
        PGresult *res = PQexec (conn, set);
        if (PQresultStatus (res) != PGRES_COMMAND_OK) {
            ef_pg_error (conn, res, NULL, err, errlen);
            PQfinish (conn);
            conn = NULL;
        }
        PQclear (res);
    }
    return conn;
}

/* The connection, (re)opened when needed; NULL with err. */
static PGconn *
s_runlog_conn (ef_runlog_t *self, char *err, size_t errlen)
{
    if (self->conn && PQstatus (self->conn) != CONNECTION_OK) {
        /* a new connection, not PQreset: the session settings must be
           made again */
        PQfinish (self->conn);
        self->conn = NULL;
    }
    if (!self->conn)
        self->conn =
            s_history_connect (self, S_RUNLOG_STATEMENT_MS, err, errlen);
    return self->conn;
}

/* Logs a failure once until the next success. */
static void
s_runlog_result (ef_runlog_t *self, int rc, const char *err)
{
    if (rc == 0)
        self->warned = false;
    else if (!self->warned) {
        self->warned = true;
        ef_warn ("job history not recorded: %s", err);
    }
}

void
ef_runlog_start (ef_runlog_t *self, const char *run_id, const char *job,
                 const char *trigger)
{
    if (!self)
        return;
    char err[512] = "";
    PGconn *c = s_runlog_conn (self, err, sizeof err);
    int rc = c ? ef_run_start (c, self->schema, run_id, job, trigger, "", -1,
                               err, sizeof err)
               : -1;
    s_runlog_result (self, rc, err);
}

void
ef_runlog_end (ef_runlog_t *self, const char *run_id, const char *status,
               uint64_t received, uint64_t written, uint64_t dead,
               const char *error)
{
    if (!self)
        return;
    char err[512] = "";
    PGconn *c = s_runlog_conn (self, err, sizeof err);
    int rc = c ? ef_run_update (c, self->schema, run_id, status, received,
                                written, dead, error, err, sizeof err)
               : -1;
    s_runlog_result (self, rc, err);
}

void
ef_runlog_beat (ef_runlog_t *self, const ef_run_counts_t *runs, size_t n)
{
    if (!self || n == 0)
        return;
    /* a failed beat held the thread (a reconnect up to connect_timeout, a
       blocked statement up to statement_timeout): after one, skip beats
       for a backoff rather than hold it at every beat */
    if (ef_clock_mono_us () < self->retry_at_us)
        return;
    char err[512] = "";
    PGconn *c = s_runlog_conn (self, err, sizeof err);
    int rc = c ? ef_run_beat (c, self->schema, runs, n, err, sizeof err) : -1;
    if (rc >= 0) {
        ef_backoff_reset (&self->backoff);
        self->retry_at_us = 0;
    }
    else
        self->retry_at_us =
            ef_clock_mono_us () + ef_backoff_next (&self->backoff) * 1000;
    s_runlog_result (self, rc < 0 ? -1 : 0, err);
}

/* Waits up to ms for stop; returns true when the sweeper must end. Call
   with the mutex held. */
static bool
s_sweeper_wait (ef_runlog_t *self, int64_t ms)
{
    struct timespec until;
    clock_gettime (CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (!self->stop)
        if (pthread_cond_timedwait (&self->wake, &self->mutex, &until) != 0)
            break;
    return self->stop;
}

/* The sweeper thread: marks stale uploads now and every period_ms, on a
   connection of its own, until stopped. */
static void *
s_sweeper (void *arg)
{
    ef_runlog_t *self = (ef_runlog_t *) arg;
    ef_log_set_name ("upload-history");
    PGconn *conn = NULL;
    ef_backoff_t backoff = ef_backoff_make (500, S_RUNLOG_RETRY_CAP_MS, -1);
    bool warned = false;
    pthread_mutex_lock (&self->mutex);
    while (!self->stop) {
        pthread_mutex_unlock (&self->mutex);
        char err[512] = "";
        if (conn && PQstatus (conn) != CONNECTION_OK) {
            pthread_mutex_lock (&self->mutex);
            PQfreeCancel (self->cancel);
            self->cancel = NULL;
            pthread_mutex_unlock (&self->mutex);
            PQfinish (conn);
            conn = NULL;
        }
        if (!conn) {
            conn =
                s_history_connect (self, S_SWEEP_STATEMENT_MS, err, sizeof err);
            pthread_mutex_lock (&self->mutex);
            self->cancel = conn ? PQgetCancel (conn) : NULL;
            pthread_mutex_unlock (&self->mutex);
        }
        int n = conn ? ef_job_abandon_stale_uploads (
                    conn, self->schema, self->stale_ms, err, sizeof err)
                     : -1;
        int64_t wait_ms = self->period_ms;
        if (n > 0)
            ef_warn ("marked %d upload run(s) abandoned: no heartbeat for "
                     "%" PRId64 " ms, the process taking them is gone",
                     n, self->stale_ms);
        if (n >= 0) {
            warned = false;
            ef_backoff_reset (&backoff);
        }
        else {
            pthread_mutex_lock (&self->mutex);
            bool stopping = self->stop; /* cancelled by destroy */
            pthread_mutex_unlock (&self->mutex);
            if (!warned && !stopping)
                ef_warn ("stale uploads not marked: %s", err);
            warned = true;
            if (!conn || PQstatus (conn) != CONNECTION_OK)
                wait_ms = ef_backoff_next (&backoff);
        }
        pthread_mutex_lock (&self->mutex);
        if (s_sweeper_wait (self, wait_ms))
            break;
    }
    PQfreeCancel (self->cancel);
    self->cancel = NULL;
    pthread_mutex_unlock (&self->mutex);
    PQfinish (conn);
    return NULL;
}

int
ef_runlog_sweep_start (ef_runlog_t *self, int64_t stale_ms, int64_t period_ms)
{
    assert (self && !self->sweeping && stale_ms > 0 && period_ms > 0);
    self->stale_ms = stale_ms;
    self->period_ms = period_ms;
    pthread_condattr_t attr;
    if (pthread_condattr_init (&attr) != 0)
        return -1;
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init (&self->wake, &attr);
    pthread_condattr_destroy (&attr);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    rc = pthread_mutex_init (&self->mutex, NULL);
    if (rc == 0) {
        rc = pthread_create (&self->sweeper, NULL, s_sweeper, self);
        if (rc != 0)
            pthread_mutex_destroy (&self->mutex);
    }
    if (rc != 0) {
        pthread_cond_destroy (&self->wake);
        errno = rc;
        return -1;
    }
    self->sweeping = true;
    return 0;
}
