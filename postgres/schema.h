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

    The distribution (ef_schema_opts_t.distribution) is chosen at the
    first migration too and kept in 'distribution': none, tables of one
    PostgreSQL; citus, chunk and embedding distributed by document_id on
    a Citus cluster (postgres/citus.h says which tables stay on the
    coordinator and why). With citus every key includes document_id:
    chunk's primary key is (document_id, id) beside its identity
    (document_id, chunk_index), and embedding carries document_id too,
    its key (document_id, id) referencing chunk's. A start that asks for
    another distribution than the schema has is refused; an existing
    schema is never converted at start (docs/scaling.md has the SQL that
    converts one).
*/
#ifndef EF_SCHEMA_H
#define EF_SCHEMA_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "postgres/copyenc.h"

/* The ANN index on embedding.vector (pgvector's HNSW or IVFFlat). */
typedef enum {
    EF_INDEX_NONE,    /* no index: exact scans */
    EF_INDEX_HNSW,    /* graph index: m, ef_construction */
    EF_INDEX_IVFFLAT, /* inverted lists: lists */
} ef_index_method_t;

/* The distance the index serves (the query's operator must match). */
typedef enum {
    EF_METRIC_COSINE, /* <=>, *_cosine_ops */
    EF_METRIC_L2,     /* <->, *_l2_ops */
    EF_METRIC_IP,     /* <#>, *_ip_ops */
} ef_index_metric_t;

typedef struct {
    ef_index_method_t method; /* none, hnsw, ivfflat */
    ef_index_metric_t metric; /* operator class */
    int m;                    /* hnsw: links per node (2..100) */
    int ef_construction;      /* hnsw: candidate list (4..1000, >= 2m) */
    int lists;                /* ivfflat: inverted lists (1..32768) */
} ef_index_opts_t;

/* Where the tables live. */
typedef enum {
    EF_DIST_NONE,  /* one PostgreSQL */
    EF_DIST_CITUS, /* chunk and embedding distributed on Citus */
} ef_distribution_t;

/* Parses "none" or "citus". Returns 0, -1 when text is neither. */
int ef_distribution_parse (const char *text, ef_distribution_t *dist);

/* The configuration name of dist ("none", "citus"). */
const char *ef_distribution_name (ef_distribution_t dist);

/* What the first migration creates and later starts check. */
typedef struct {
    int dim;                      /* vector dimension (> 0) */
    ef_vector_type_t vector_type; /* column type; AUTO picks */
    ef_index_opts_t index;        /* made with the tables */
    bool segmented;               /* with an index: growing and sealed segments
                       (postgres/segments.h) */
    ef_distribution_t distribution; /* fixed at the first migration */
} ef_schema_opts_t;

/* The index's canonical description, as <schema>.setting 'index' keeps
   it: "none", "hnsw cosine m=16 ef_construction=64", "ivfflat l2
   lists=100". */
void ef_index_describe (const ef_index_opts_t *index, char *out, size_t len);

/* Reads a description ef_index_describe wrote back into index. Returns
   0, -1 when text is not one. */
int ef_index_parse_description (const char *text, ef_index_opts_t *index);

/* Parses "none"/"hnsw"/"ivfflat" and "cosine"/"l2"/"ip". Return 0, -1
   when text is none of them. */
int ef_index_method_parse (const char *text, ef_index_method_t *method);
int ef_index_metric_parse (const char *text, ef_index_metric_t *metric);

/* Whether pgvector can index dim dimensions of type with method.
   Returns 0, or -1 with why (the limit and what to do instead). AUTO is
   judged as vector, the type it picks when it can index at all. */
int ef_index_fits (const ef_index_opts_t *index, ef_vector_type_t type, int dim,
                   char *why, size_t whylen);

/* Creates ANN index `name` (an identifier) on table quoted.table as
   index says (not NONE), CONCURRENTLY when asked, after checking that
   pgvector can index the schema's vector column. quoted is the quoted
   schema. Returns 0, or -1 with err (the limit pgvector sets, the
   database's error). */
int ef_schema_create_index (PGconn *conn, const char *quoted, const char *table,
                            const char *name, int dim,
                            const ef_index_opts_t *index, bool concurrently,
                            char *err, size_t errlen);

/* The vector column of quoted.embedding (quoted: the quoted schema): its
   type name ("vector", "halfvec", "_float4") into typname (tlen bytes)
   and the quoted schema of pgvector's operator classes ("" without the
   extension) into ns (nslen bytes). Returns 0, or -1 with err (no such
   column, a database error). */
int ef_schema_vector_column (PGconn *conn, const char *quoted, char *typname,
                             size_t tlen, char *ns, size_t nslen, char *err,
                             size_t errlen);

/* The statement ef_schema_create_index runs, into sql (len bytes), for
   a caller that sends it without waiting. Returns 0, or -1 with err. */
int ef_schema_index_sql (PGconn *conn, const char *quoted, const char *table,
                         const char *name, int dim,
                         const ef_index_opts_t *index, bool concurrently,
                         char *sql, size_t len, char *err, size_t errlen);

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

/* The index a migrated schema has (its 'index' setting; "none" for a
   schema older than the setting) into stored, and whether it differs
   from want: 1 differs, 0 same, -1 with err on a database error. The
   migration never changes an existing schema's index: a difference is
   for the caller to report, and ef_schema_index_apply to apply. */
int ef_schema_index_drift (PGconn *conn, const char *schema,
                           const ef_index_opts_t *want, char *stored,
                           size_t storedlen, char *err, size_t errlen);

/* Rebuilds the ANN index of a migrated schema as want says: builds the
   new one beside the old (CREATE INDEX CONCURRENTLY: writes and queries
   go on), then swaps them and records the setting in one transaction.
   One apply at a time per schema (an advisory lock). conn must be
   outside a transaction. Returns 0, or -1 with err (the vector type or
   dimension pgvector cannot index, a database error; a half-built new
   index is dropped by the next apply). */
int ef_schema_index_apply (PGconn *conn, const char *schema,
                           const ef_index_opts_t *want, char *err,
                           size_t errlen);

#endif
