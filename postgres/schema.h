/*  schema.h — the tables embedflow keeps in PostgreSQL, and their upgrades.

    All tables live in one schema (default "embedflow"). Its version is
    the highest row of <schema>.schema_version; every start applies the
    versions it lacks, in order, in one transaction, under an advisory
    lock on the schema name, so any number of processes and writer
    threads may start at the same moment.

    The schema is made for one vector dimension, recorded in
    <schema>.setting ('dim'); a start with another dim is refused, because
    every stored vector would be of the wrong size (use another schema).
    The vector column's type is chosen at the schema's first migration
    (ef_schema_opts_t.vector_type): real[] with a CHECK on its length,
    pgvector's vector(dim) or halfvec(dim), or (auto) vector when that
    extension is installed or can be created, else real[];
    'vector_type' in <schema>.setting says which. A later start that
    asks for another type explicitly is refused (use another schema).
    Writers read the column's type and COPY that type's binary form
    (postgres/copyenc.h).
*/
#ifndef EF_SCHEMA_H
#define EF_SCHEMA_H

#include <libpq-fe.h>
#include <stddef.h>

#include "postgres/copyenc.h"

/* What the first migration creates and later starts check. */
typedef struct {
    int dim;                      /* vector dimension (> 0) */
    ef_vector_type_t vector_type; /* column type; AUTO picks */
} ef_schema_opts_t;

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

/* ef_schema_migrate with the vector type of opts. Refused (-1 with err)
   besides: a type pgvector provides when the extension can be neither
   found nor created, a pgvector type beyond 16,000 dimensions, and an
   existing schema whose column is of another type than an explicit
   (not auto) opts->vector_type. */
int ef_schema_migrate_opts (PGconn *conn, const char *schema,
                            const ef_schema_opts_t *opts, char *err,
                            size_t errlen);

#endif
