/*  outbox.c — the transactional outbox of cache invalidations. */
#include "postgres/outbox.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres/pg.h"

struct ef_outbox {
    char *outbox;      /* quoted <schema>.invalidation_outbox */
    char *dead_letter; /* quoted <schema>.dead_letter */
    uint64_t added;    /* ids inserted since ef_outbox_take_added */
};

/* "schema".table as a heap string, quoting without a connection. NULL
   when out of memory. */
static char *
s_qualified (const char *schema, const char *table)
{
    size_t len = strlen (schema);
    char *out = malloc (2 * len + strlen (table) + 4);
    if (!out)
        return NULL;
    char *w = out;
    *w++ = '"';
    for (const char *p = schema; *p; p++) {
        if (*p == '"')
            *w++ = '"';
        *w++ = *p;
    }
    *w++ = '"';
    *w++ = '.';
    strcpy (w, table);
    return out;
}

ef_outbox_t *
ef_outbox_new (const char *schema)
{
    ef_outbox_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->outbox = s_qualified (schema, "invalidation_outbox");
    self->dead_letter = s_qualified (schema, "dead_letter");
    if (!self->outbox || !self->dead_letter)
        ef_outbox_destroy (&self);
    return self;
}

void
ef_outbox_destroy (ef_outbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_outbox_t *self = *self_p;
    free (self->outbox);
    free (self->dead_letter);
    free (self);
    *self_p = NULL;
}

uint64_t
ef_outbox_take_added (ef_outbox_t *self)
{
    uint64_t n = self->added;
    self->added = 0;
    return n;
}

/* Appends s to f as an element of a PostgreSQL array literal. */
static void
s_array_elem (FILE *f, const char *s, bool first)
{
    fputs (first ? "\"" : ",\"", f);
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc ('\\', f);
        fputc (*p, f);
    }
    fputc ('"', f);
}

/* Fills rep from a failed result. Returns the status to report. */
static ef_write_status_t
s_failed (PGconn *conn, PGresult *res, ef_write_report_t *rep)
{
    ef_write_status_t st = ef_pg_classify_result (conn, res) == EF_PG_TRANSIENT
                               ? EF_WRITE_RETRY
                               : EF_WRITE_ERROR;
    if (rep) {
        snprintf (rep->reason_code, sizeof rep->reason_code, "%s",
                  st == EF_WRITE_RETRY ? "db_unavailable" : "db_rejected");
        char msg[sizeof rep->message - 32];
        ef_pg_error (conn, res, rep->sqlstate, msg, sizeof msg);
        snprintf (rep->message, sizeof rep->message, "invalidation outbox: %s",
                  msg);
    }
    return st;
}

ef_write_status_t
ef_outbox_hook (PGconn *conn, void *arg, Embedflow__V1__Row *const *rows,
                size_t n, const bool *changed, ef_write_report_t *rep)
{
    ef_outbox_t *self = arg;
    char *docs = NULL, *sources = NULL;
    size_t docs_len = 0, sources_len = 0, count = 0;
    FILE *fd = open_memstream (&docs, &docs_len);
    FILE *fs = open_memstream (&sources, &sources_len);
    if (fd && fs) {
        fputc ('{', fd);
        fputc ('{', fs);
        for (size_t i = 0; i < n; i++) {
            if (!changed[i])
                continue;
            s_array_elem (fd, rows[i]->document_id, count == 0);
            s_array_elem (fs, rows[i]->source, count == 0);
            count++;
        }
        fputc ('}', fd);
        fputc ('}', fs);
    }
    if (fd)
        fclose (fd);
    if (fs)
        fclose (fs);
    ef_write_status_t st = EF_WRITE_OK;
    char *sql = NULL;
    if (!docs || !sources
        || asprintf (&sql,
                     "INSERT INTO %s (document_id, source) SELECT DISTINCT "
                     "d, s FROM unnest ($1::text[], $2::text[]) AS u (d, s)",
                     self->outbox)
               < 0) {
        sql = NULL;
        st = EF_WRITE_RETRY;
        if (rep) {
            snprintf (rep->reason_code, sizeof rep->reason_code, "oom");
            rep->sqlstate[0] = '\0';
            snprintf (rep->message, sizeof rep->message,
                      "out of memory building the invalidation outbox rows");
        }
    }
    else if (count > 0) {
        const char *params[] = {docs, sources};
        PGresult *res =
            PQexecParams (conn, sql, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus (res) == PGRES_COMMAND_OK)
            self->added += strtoull (PQcmdTuples (res), NULL, 10);
        else
            st = s_failed (conn, res, rep);
        PQclear (res);
    }
    free (sql);
    free (docs);
    free (sources);
    return st;
}

void
ef_outbox_batch_clear (ef_outbox_batch_t *batch)
{
    free (batch->source);
    for (size_t i = 0; i < batch->n_ids; i++)
        free (batch->document_ids[i]);
    free (batch->document_ids);
    free (batch->row_ids);
    memset (batch, 0, sizeof *batch);
}

/* Copies the database's error into err. */
static void
s_error (PGconn *conn, PGresult *res, const char *what, char *err,
         size_t errlen)
{
    char msg[512], state[6];
    ef_pg_error (conn, res, state, msg, sizeof msg);
    snprintf (err, errlen, "%s: %s%s%s", what, msg, *state ? " " : "", state);
}

int
ef_outbox_fetch (ef_outbox_t *self, PGconn *conn, size_t max,
                 ef_outbox_batch_t *batch, char *err, size_t errlen)
{
    memset (batch, 0, sizeof *batch);
    char *sql = NULL;
    if (asprintf (&sql,
                  "WITH first AS (SELECT source FROM %s ORDER BY id LIMIT 1) "
                  "SELECT o.id, o.document_id, o.source FROM %s o, first "
                  "WHERE o.source = first.source ORDER BY o.id LIMIT $1",
                  self->outbox, self->outbox)
        < 0) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    char limit[32];
    snprintf (limit, sizeof limit, "%zu", max);
    const char *params[] = {limit};
    PGresult *res = PQexecParams (conn, sql, 1, NULL, params, NULL, NULL, 0);
    free (sql);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        s_error (conn, res, "reading the invalidation outbox", err, errlen);
        PQclear (res);
        return -1;
    }
    int rows = PQntuples (res);
    if (rows == 0) {
        PQclear (res);
        return 0;
    }
    size_t ids_len = 0;
    FILE *f = open_memstream (&batch->row_ids, &ids_len);
    zhashx_t *seen = zhashx_new ();
    batch->document_ids = calloc ((size_t) rows, sizeof *batch->document_ids);
    batch->source = strdup (PQgetvalue (res, 0, 2));
    bool oom = !f || !seen || !batch->document_ids || !batch->source;
    for (int r = 0; !oom && r < rows; r++) {
        fprintf (f, "%s%s", r ? "," : "{", PQgetvalue (res, r, 0));
        const char *doc = PQgetvalue (res, r, 1);
        if (zhashx_lookup (seen, doc))
            continue;
        zhashx_insert (seen, doc, (void *) 1);
        char *copy = strdup (doc);
        if (!copy)
            oom = true;
        else
            batch->document_ids[batch->n_ids++] = copy;
    }
    if (f) {
        fputc ('}', f);
        fclose (f);
    }
    zhashx_destroy (&seen);
    PQclear (res);
    batch->rows = (size_t) rows;
    if (oom || !batch->row_ids) {
        ef_outbox_batch_clear (batch);
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    return 1;
}

int
ef_outbox_delete (ef_outbox_t *self, PGconn *conn,
                  const ef_outbox_batch_t *batch, char *err, size_t errlen)
{
    char *sql = NULL;
    if (asprintf (&sql, "DELETE FROM %s WHERE id = ANY ($1::bigint[])",
                  self->outbox)
        < 0) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    const char *params[] = {batch->row_ids};
    PGresult *res = PQexecParams (conn, sql, 1, NULL, params, NULL, NULL, 0);
    free (sql);
    int rc = 0;
    if (PQresultStatus (res) != PGRES_COMMAND_OK) {
        s_error (conn, res, "deleting from the invalidation outbox", err,
                 errlen);
        rc = -1;
    }
    PQclear (res);
    return rc;
}

int
ef_outbox_dead_letter (ef_outbox_t *self, PGconn *conn,
                       const ef_outbox_batch_t *batch, const char *reason,
                       uint32_t attempts, char *err, size_t errlen)
{
    char *sql = NULL;
    if (asprintf (&sql,
                  "WITH moved AS (DELETE FROM %s WHERE id = ANY "
                  "($1::bigint[]) RETURNING document_id, source) "
                  "INSERT INTO %s (stage, reason_code, reason, attempts, "
                  "source, document_id, covers) SELECT DISTINCT 'invalidate', "
                  "'invalidate_failed', $2, $3::integer, source, document_id, "
                  "0 FROM moved",
                  self->outbox, self->dead_letter)
        < 0) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    char n[16];
    snprintf (n, sizeof n, "%" PRIu32, attempts);
    const char *params[] = {batch->row_ids, reason, n};
    PGresult *res = PQexecParams (conn, sql, 3, NULL, params, NULL, NULL, 0);
    free (sql);
    int rc = 0;
    if (PQresultStatus (res) != PGRES_COMMAND_OK) {
        s_error (conn, res, "moving invalidations to dead_letter", err, errlen);
        rc = -1;
    }
    PQclear (res);
    return rc;
}
