/*  segments.c — the segmented embedding table: see segments.h. */
#include "postgres/segments.h"
#include "postgres/pg.h"

#include <stdio.h>
#include <stdlib.h>

int
ef_segments_unindexed (PGconn *conn, const char *schema, int64_t *rows,
                       char *err, size_t errlen)
{
    *rows = 0;
    const char *param[] = {schema};
    /* A schema without a segment table is not segmented: every row is in
       the one table, indexed as it is written. */
    PGresult *res = ef_pg_exec_schema (
        conn, schema,
        "SELECT to_regclass (quote_ident ($1) || '.segment') IS NOT NULL", 1,
        param, "segments", err, errlen);
    if (!res)
        return -1;
    int segmented = PQgetvalue (res, 0, 0)[0] == 't';
    PQclear (res);
    if (!segmented)
        return 0;
    res = ef_pg_exec_schema (conn, schema,
                             "SELECT string_agg (format ('SELECT count(*) FROM"
                             " %%I.%%I', $1::text, 'embedding_' || id),"
                             " ' UNION ALL ')"
                             " FROM %s.segment WHERE state <> 'sealed'",
                             1, param, "segments", err, errlen);
    if (!res)
        return -1;
    char *counts = NULL;
    if (!PQgetisnull (res, 0, 0)
        && asprintf (&counts, "SELECT coalesce (sum (count), 0) FROM (%s) c",
                     PQgetvalue (res, 0, 0))
               < 0)
        counts = NULL;
    int empty = PQgetisnull (res, 0, 0);
    PQclear (res);
    if (empty)
        return 0;
    if (!counts) {
        snprintf (err, errlen, "segments: out of memory");
        return -1;
    }
    res = ef_pg_exec_schema (conn, schema, counts, 0, NULL, "segments", err,
                             errlen);
    free (counts);
    if (!res)
        return -1;
    *rows = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return 0;
}
