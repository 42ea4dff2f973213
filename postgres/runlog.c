/*  runlog.c — the upload history of a source without a database
    connection of its own, and its sweeper thread (see runlog.h). */
#include "postgres/runlog.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "postgres/pg.h"

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
