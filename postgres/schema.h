/*  schema.h — the tables embedflow keeps in PostgreSQL, and their upgrades.

    All tables live in one schema (default "embedflow"). Its version is
    the highest row of <schema>.schema_version; every start applies the
    versions it lacks, in order, in one transaction, under an advisory
    lock on the schema name, so any number of processes and writer
    threads may start at the same moment.

    The schema is made for one vector dimension, recorded in
    <schema>.setting ('dim'); a start with another dim is refused, because
    every stored vector would be of the wrong size (use another schema).
    The vector column is pgvector's vector(dim) when that extension can be
    created at the schema's first migration, else real[] with a CHECK on
    its length; 'vector_type' in <schema>.setting says which. Writers
    always send real[]: pgvector's assignment cast converts it.
*/
#ifndef EF_SCHEMA_H
#define EF_SCHEMA_H

#include <libpq-fe.h>
#include <stddef.h>

/* The newest schema version this build knows. */
int ef_schema_latest (void);

/* Creates schema and its tables if missing and applies every missing
   version, for vectors of dim (> 0) dimensions. Needs no privileges
   beyond reading when the schema is already current. Returns 0, or -1
   with err explaining (a different dim, a schema newer than this build,
   or the database's error with its SQLSTATE); the connection is left
   outside any transaction either way. */
int ef_schema_migrate (PGconn *conn, const char *schema, int dim, char *err,
                       size_t errlen);

#endif
