/*  schema.c — versioned, idempotent migrations of embedflow's tables.

    A migration is a row in s_migrations: its version, a description and
    its SQL, in which ${S} stands for the quoted schema name, ${DIM} for
    the dimension, ${VECTOR} for the vector column's type and
    ${VECTOR_CHECK} for the constraint a real[] column needs and
    ${VECTOR_STORAGE} for the statement that sets its storage. The keys
    of chunk and embedding depend on the distribution (schema.h):
    ${CHUNK_ID}, ${CHUNK_KEY}, ${EMBEDDING_ID} and ${EMBEDDING_KEY}
    expand to today's single-column keys for none, and to keys that lead
    with document_id for citus. Adding a table later is one more row;
    released rows never change.
*/
#include "postgres/schema.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "postgres/citus.h"
#include "postgres/pg.h"
#include "postgres/segments.h"

typedef struct {
    int version;             /* applied in increasing order */
    const char *description; /* recorded in schema_version */
    const char *sql;         /* template, see above */
} s_migration_t;

static const s_migration_t s_migrations[] = {
    {1, "chunk, embedding, dead_letter",
     "CREATE TABLE ${S}.setting ("
     "  key text PRIMARY KEY,"
     "  value text NOT NULL);"
     "INSERT INTO ${S}.setting (key, value)"
     "  VALUES ('dim', '${DIM}'), ('vector_type', '${VECTOR}');"

     /* The row's identity is (document_id, chunk_index); id is the stable
        key other tables point at. content_hash (XXH3-128 of everything
        written) lets an unchanged re-send skip the row entirely. */
     "CREATE TABLE ${S}.chunk ("
     "  id uuid ${CHUNK_ID},"
     "  source text NOT NULL DEFAULT '',"
     "  document_id text NOT NULL,"
     "  chunk_index bigint NOT NULL"
     "    CHECK (chunk_index BETWEEN 0 AND 4294967295),"
     "  content text NOT NULL DEFAULT '',"
     "  metadata jsonb NOT NULL DEFAULT '{}',"
     "  model text NOT NULL DEFAULT '',"
     "  content_hash bytea NOT NULL,"
     "  updated_at timestamptz NOT NULL DEFAULT now(),"
     "  CONSTRAINT chunk_identity UNIQUE (document_id, chunk_index)"
     "  ${CHUNK_KEY});"

     /* Vectors are incompressible: keep them inline up to a full page
        (768 float4 are 3 kB) and never try to compress them when a
        larger one has to move out of line. */
     "CREATE TABLE ${S}.embedding ("
     "  ${EMBEDDING_ID},"
     "  model text NOT NULL DEFAULT '',"
     "  dim integer NOT NULL CHECK (dim = ${DIM}),"
     "  vector ${VECTOR} NOT NULL,"
     "  updated_at timestamptz NOT NULL DEFAULT now()"
     "  ${EMBEDDING_KEY}"
     "  ${VECTOR_CHECK})"
     "  WITH (toast_tuple_target = 8160);"
     "${VECTOR_STORAGE}"

     "CREATE TABLE ${S}.dead_letter ("
     "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
     "  created_at timestamptz NOT NULL DEFAULT now(),"
     "  stage text NOT NULL,"
     "  reason_code text NOT NULL,"
     "  reason text NOT NULL DEFAULT '',"
     "  sqlstate text,"
     "  attempts integer NOT NULL DEFAULT 0,"
     "  job_id text,"
     "  source text,"
     "  document_id text,"
     "  covers integer NOT NULL DEFAULT 1,"
     "  original bytea,"
     "  replayed_at timestamptz);"
     "CREATE INDEX dead_letter_created_at ON ${S}.dead_letter (created_at);"
     "CREATE INDEX dead_letter_pending ON ${S}.dead_letter (reason_code, id)"
     "  WHERE replayed_at IS NULL;"
     "CREATE INDEX dead_letter_job ON ${S}.dead_letter (job_id)"
     "  WHERE job_id IS NOT NULL;"
     "CREATE INDEX dead_letter_document ON ${S}.dead_letter (document_id)"
     "  WHERE document_id IS NOT NULL;"},
    /* Pull jobs (postgres/checkpoint.c). job_run is the history, one row
       per run; pull_piece is written in the same transaction as the rows
       (or dead letters) it counts, so a job's position is derived from
       what is committed and nothing else. */
    {2, "job_run, pull_piece",
     "CREATE TABLE ${S}.job_run ("
     "  id uuid PRIMARY KEY,"
     "  job text NOT NULL,"
     "  trigger text NOT NULL"
     "    CHECK (trigger IN ('cron', 'manual', 'upload')),"
     "  status text NOT NULL"
     "    CHECK (status IN ('running', 'completed', 'failed', 'abandoned')),"
     "  started_at timestamptz NOT NULL DEFAULT now(),"
     "  finished_at timestamptz,"
     "  heartbeat_at timestamptz NOT NULL DEFAULT now(),"
     "  rows_received bigint NOT NULL DEFAULT 0,"
     "  rows_written bigint NOT NULL DEFAULT 0,"
     "  rows_dead_lettered bigint NOT NULL DEFAULT 0,"
     "  start_token text NOT NULL DEFAULT '',"
     "  last_resume_token text,"
     "  slot timestamptz,"
     "  error text);"
     "CREATE INDEX job_run_job ON ${S}.job_run (job, started_at DESC);"
     "CREATE INDEX job_run_started ON ${S}.job_run (started_at DESC);"
     "CREATE TABLE ${S}.pull_piece ("
     "  run_id uuid NOT NULL,"
     "  chunk_seq bigint NOT NULL,"
     "  rows integer NOT NULL,"
     "  chunk_rows integer NOT NULL,"
     "  resume_token text NOT NULL,"
     "  committed_at timestamptz NOT NULL DEFAULT now());"
     "CREATE INDEX pull_piece_run ON ${S}.pull_piece (run_id, chunk_seq);"
     /* one row per cron slot: whoever inserts it runs it */
     "CREATE TABLE ${S}.job_slot ("
     "  job text NOT NULL,"
     "  slot timestamptz NOT NULL,"
     "  claimed_at timestamptz NOT NULL DEFAULT now(),"
     "  PRIMARY KEY (job, slot));"},
    /* Transactional outbox of cache invalidations: a writer inserts the
       document ids whose rows changed in the batch's own transaction;
       the cache-invalidator deletes them once CacheService.Invalidate
       took them (or moves them to dead_letter after its retry budget). */
    {3, "invalidation_outbox",
     "CREATE TABLE ${S}.invalidation_outbox ("
     "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
     "  document_id text NOT NULL,"
     "  source text NOT NULL DEFAULT '',"
     "  created_at timestamptz NOT NULL DEFAULT now());"},
    /* The sweep for uploads of killed processes looks at running runs
       only: without this it reads all of job_run every stale_after. */
    {4, "job_run index of running runs",
     "CREATE INDEX job_run_running ON ${S}.job_run (heartbeat_at)"
     " WHERE status = 'running';"},
};

#define S_MIGRATIONS (sizeof s_migrations / sizeof s_migrations[0])

int
ef_schema_latest (void)
{
    return s_migrations[S_MIGRATIONS - 1].version;
}

/* Everything a template may mention. */
typedef struct {
    const char *schema;       /* quoted identifier */
    char dim[16];             /* decimal */
    char vector[160];         /* column type */
    const char *vector_check; /* table constraint or "" */
    char vector_storage[512]; /* ALTER TABLE statement or "" */
    const char *chunk_id;     /* chunk.id's type and constraint */
    const char *chunk_key;    /* chunk's extra table constraint or "" */
    char embedding_id[512];   /* embedding's leading key column(s) */
    char embedding_key[512];  /* embedding's table constraints or "" */
} s_vars_t;

/* Expands ${NAME} placeholders of tmpl into a heap string, NULL when out
   of memory. An unknown name is a programming error. */
static char *
s_expand (const char *tmpl, const s_vars_t *v)
{
    struct {
        const char *name;
        const char *value;
    } map[] = {
        {"${S}", v->schema},
        {"${DIM}", v->dim},
        {"${VECTOR}", v->vector},
        {"${VECTOR_CHECK}", v->vector_check},
        {"${VECTOR_STORAGE}", v->vector_storage},
        {"${CHUNK_ID}", v->chunk_id},
        {"${CHUNK_KEY}", v->chunk_key},
        {"${EMBEDDING_ID}", v->embedding_id},
        {"${EMBEDDING_KEY}", v->embedding_key},
    };
    size_t nmap = sizeof map / sizeof map[0];
    size_t size = strlen (tmpl) + 1;
    for (const char *p = strstr (tmpl, "${"); p; p = strstr (p + 2, "${"))
        for (size_t i = 0; i < nmap; i++)
            if (strncmp (p, map[i].name, strlen (map[i].name)) == 0)
                size += strlen (map[i].value);
    char *out = malloc (size);
    if (!out)
        return NULL;
    char *w = out;
    const char *p = tmpl;
    while (*p) {
        if (p[0] == '$' && p[1] == '{') {
            size_t i;
            for (i = 0; i < nmap; i++)
                if (strncmp (p, map[i].name, strlen (map[i].name)) == 0)
                    break;
            if (i == nmap) {
                fprintf (stderr, "schema.c: unknown placeholder in %s\n", p);
                abort ();
            }
            size_t n = strlen (map[i].value);
            memcpy (w, map[i].value, n);
            w += n;
            p += strlen (map[i].name);
            continue;
        }
        *w++ = *p++;
    }
    *w = '\0';
    return out;
}

/* The advisory lock key of a schema: a stable 64-bit hash of its name. */
static int64_t
s_lock_key (const char *schema)
{
    char buf[160];
    snprintf (buf, sizeof buf, "embedflow.schema:%s", schema);
    return (int64_t) XXH3_64bits (buf, strlen (buf));
}

/* Decides the vector column type at the first migration: real[] when
   asked, pgvector's vector(dim) or halfvec(dim) when asked (the
   extension must be installed or creatable), and for auto vector(dim)
   when it can be had, else real[]. Fills v; returns 0, -1 with err. */
static int
s_choose_vector (PGconn *conn, const ef_schema_opts_t *opts, s_vars_t *v,
                 char *err, size_t errlen)
{
    int dim = opts->dim;
    ef_vector_type_t want = opts->vector_type;
    snprintf (v->vector, sizeof v->vector, "real[]");
    v->vector_check = ", CONSTRAINT embedding_vector_dim"
                      " CHECK (array_ndims (vector) = 1"
                      " AND cardinality (vector) = dim)";
    snprintf (v->vector_storage, sizeof v->vector_storage,
              "ALTER TABLE %s.embedding ALTER COLUMN vector"
              " SET STORAGE EXTERNAL;",
              v->schema);
    if (want == EF_VECTOR_REAL
        || (want == EF_VECTOR_AUTO && dim > EF_VECTOR_MAX_DIM))
        return 0;
    if (dim > EF_VECTOR_MAX_DIM) {
        snprintf (err, errlen,
                  "vector_type %s holds at most %d dimensions, dim is %d: "
                  "use vector_type real",
                  ef_vector_type_name (want), EF_VECTOR_MAX_DIM, dim);
        return -1;
    }
    bool required = want != EF_VECTOR_AUTO;
    const char *how = "pgvector is not installed on this server (Debian: "
                      "apt-get install postgresql-15-pgvector from "
                      "apt.postgresql.org; or use vector_type real)";

    PGresult *res =
        ef_pg_exec (conn,
                    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions"
                    "  WHERE name = 'vector')",
                    0, NULL, "looking for pgvector", err, errlen);
    if (!res)
        return -1;
    bool available = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    PQclear (res);
    if (!available) {
        if (!required)
            return 0;
        snprintf (err, errlen, "vector_type %s: %s", ef_vector_type_name (want),
                  how);
        return -1;
    }
    /* One lock for the whole database: two schemas migrating at once
       must not both try to create the extension. */
    if (ef_pg_script (conn,
                      "SELECT pg_advisory_xact_lock (7301861541000001);"
                      "SAVEPOINT ef_vector;"
                      "CREATE EXTENSION IF NOT EXISTS vector;"
                      "RELEASE SAVEPOINT ef_vector;",
                      "creating pgvector", err, errlen)
        != 0) {
        if (required) {
            char why[400];
            snprintf (why, sizeof why, "%s", err);
            snprintf (err, errlen,
                      "vector_type %s: %s (a superuser can run CREATE "
                      "EXTENSION vector once; or use vector_type real)",
                      ef_vector_type_name (want), why);
            return -1;
        }
        /* Not allowed to create it: real[] works everywhere. */
        if (ef_pg_script (conn, "ROLLBACK TO SAVEPOINT ef_vector;",
                          "creating pgvector", err, errlen)
            != 0)
            return -1;
        err[0] = '\0';
        return 0;
    }
    res = ef_pg_exec (conn,
                      "SELECT quote_ident (n.nspname) FROM pg_extension e"
                      "  JOIN pg_namespace n ON n.oid = e.extnamespace"
                      "  WHERE e.extname = 'vector'",
                      0, NULL, "locating pgvector", err, errlen);
    if (!res)
        return -1;
    if (PQntuples (res) == 1) {
        snprintf (v->vector, sizeof v->vector, "%s.%s(%d)",
                  PQgetvalue (res, 0, 0),
                  want == EF_VECTOR_HALFVEC ? "halfvec" : "vector", dim);
        v->vector_check = "";
        v->vector_storage[0] = '\0'; /* pgvector picks its own */
    }
    PQclear (res);
    return 0;
}

static const char *const s_distributions[] = {"none", "citus"};

int
ef_distribution_parse (const char *text, ef_distribution_t *dist)
{
    for (int i = 0; text && i < 2; i++)
        if (strcmp (text, s_distributions[i]) == 0) {
            *dist = (ef_distribution_t) i;
            return 0;
        }
    return -1;
}

const char *
ef_distribution_name (ef_distribution_t dist)
{
    return s_distributions[dist == EF_DIST_CITUS];
}

/* Sets the key placeholders of v for dist (v->schema set). */
static void
s_choose_keys (ef_distribution_t dist, s_vars_t *v)
{
    if (dist == EF_DIST_CITUS) {
        /* Citus wants the distribution column in every unique key and
           foreign key: chunk's id is unique per document, and embedding
           points at (document_id, id), on the same shard. */
        v->chunk_id = "NOT NULL";
        v->chunk_key = ", CONSTRAINT chunk_pkey PRIMARY KEY (document_id, id)";
        snprintf (v->embedding_id, sizeof v->embedding_id,
                  "document_id text NOT NULL, id uuid NOT NULL");
        snprintf (v->embedding_key, sizeof v->embedding_key,
                  ", CONSTRAINT embedding_pkey PRIMARY KEY (document_id, id)"
                  ", CONSTRAINT embedding_chunk_fkey FOREIGN KEY"
                  " (document_id, id) REFERENCES %s.chunk (document_id, id)"
                  " ON DELETE CASCADE",
                  v->schema);
        return;
    }
    v->chunk_id = "PRIMARY KEY";
    v->chunk_key = "";
    snprintf (v->embedding_id, sizeof v->embedding_id,
              "id uuid PRIMARY KEY REFERENCES %s.chunk (id) ON DELETE CASCADE",
              v->schema);
    v->embedding_key[0] = '\0';
}

/* Refuses a start whose distribution is not the schema's own (stored
   is its 'distribution' setting, "" when it has none: made before the
   setting, so none). Returns 0 or -1 with err saying what to do. */
static int
s_check_distribution (const char *schema, const char *stored,
                      ef_distribution_t want, char *err, size_t errlen)
{
    ef_distribution_t have = EF_DIST_NONE;
    if (*stored && ef_distribution_parse (stored, &have) != 0) {
        snprintf (err, errlen,
                  "schema \"%s\" has distribution '%s', which this "
                  "embedflow does not know: upgrade embedflow",
                  schema, stored);
        return -1;
    }
    if (have == want)
        return 0;
    if (want == EF_DIST_CITUS)
        snprintf (err, errlen,
                  "schema \"%s\" was made with distribution none (tables of "
                  "one PostgreSQL) and distribution is citus: embedflow "
                  "never converts a schema at start; distribute it with "
                  "the SQL of docs/scaling.md (\"From one PostgreSQL to a "
                  "cluster\"), or use another schema",
                  schema);
    else
        snprintf (err, errlen,
                  "schema \"%s\" is distributed on Citus (distribution "
                  "citus) and distribution is none: set distribution: "
                  "citus, or use another schema",
                  schema);
    return -1;
}

/* The type a stored 'vector_type' setting names. */
static ef_vector_type_t
s_stored_type (const char *setting)
{
    return strstr (setting, "halfvec(")  ? EF_VECTOR_HALFVEC
           : strstr (setting, "vector(") ? EF_VECTOR_VECTOR
                                         : EF_VECTOR_REAL;
}

/* --- the ANN index -------------------------------------------------------- */

static const char *s_methods[] = {"none", "hnsw", "ivfflat"};
static const char *s_metrics[] = {"cosine", "l2", "ip"};

#define S_INDEX     "embedding_vector_idx"     /* the index's name */
#define S_INDEX_NEW "embedding_vector_idx_new" /* while apply builds it */

void
ef_index_describe (const ef_index_opts_t *ix, char *out, size_t len)
{
    if (ix->method == EF_INDEX_HNSW)
        snprintf (out, len, "hnsw %s m=%d ef_construction=%d",
                  s_metrics[ix->metric], ix->m, ix->ef_construction);
    else if (ix->method == EF_INDEX_IVFFLAT)
        snprintf (out, len, "ivfflat %s lists=%d", s_metrics[ix->metric],
                  ix->lists);
    else
        snprintf (out, len, "none");
}

int
ef_index_method_parse (const char *text, ef_index_method_t *method)
{
    for (int i = 0; text && i < 3; i++)
        if (strcmp (text, s_methods[i]) == 0) {
            *method = (ef_index_method_t) i;
            return 0;
        }
    return -1;
}

int
ef_index_metric_parse (const char *text, ef_index_metric_t *metric)
{
    for (int i = 0; text && i < 3; i++)
        if (strcmp (text, s_metrics[i]) == 0) {
            *metric = (ef_index_metric_t) i;
            return 0;
        }
    return -1;
}

int
ef_index_fits (const ef_index_opts_t *ix, ef_vector_type_t type, int dim,
               char *why, size_t whylen)
{
    if (ix->method == EF_INDEX_NONE)
        return 0;
    const char *method = s_methods[ix->method];
    if (type == EF_VECTOR_REAL) {
        snprintf (why, whylen,
                  "index.method %s needs pgvector's vector or halfvec, and "
                  "the vectors are real[]: use vector_type vector or "
                  "halfvec on a server with pgvector, or index.method none",
                  method);
        return -1;
    }
    bool half = type == EF_VECTOR_HALFVEC;
    int limit = half ? EF_HALFVEC_MAX_INDEX_DIM : EF_VECTOR_MAX_INDEX_DIM;
    if (dim > limit) {
        snprintf (why, whylen,
                  "index.method %s: pgvector indexes %s of up to %d "
                  "dimensions and dim is %d: %s",
                  method, half ? "halfvec" : "vector", limit, dim,
                  !half && dim <= EF_HALFVEC_MAX_INDEX_DIM
                      ? "use vector_type halfvec (up to 4000), or "
                        "index.method none"
                      : "use index.method none");
        return -1;
    }
    return 0;
}

int
ef_schema_vector_column (PGconn *conn, const char *quoted, char *typname,
                         size_t tlen, char *ns, size_t nslen, char *err,
                         size_t errlen)
{
    char table[300];
    snprintf (table, sizeof table, "%s.embedding", quoted);
    const char *params[] = {table};
    PGresult *res = ef_pg_exec (
        conn,
        "SELECT t.typname, coalesce ((SELECT quote_ident (n.nspname)"
        "   FROM pg_extension e JOIN pg_namespace n"
        "     ON n.oid = e.extnamespace WHERE e.extname = 'vector'), '')"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = $1::regclass AND a.attname = 'vector'",
        1, params, "reading the vector column", err, errlen);
    if (!res)
        return -1;
    if (PQntuples (res) != 1) {
        PQclear (res);
        snprintf (err, errlen, "%s has no column \"vector\"", table);
        return -1;
    }
    snprintf (typname, tlen, "%s", PQgetvalue (res, 0, 0));
    snprintf (ns, nslen, "%s", PQgetvalue (res, 0, 1));
    PQclear (res);
    return 0;
}

/* The type a catalog type name stands for. */
static ef_vector_type_t
s_typname_type (const char *typname)
{
    return strcmp (typname, "vector") == 0    ? EF_VECTOR_VECTOR
           : strcmp (typname, "halfvec") == 0 ? EF_VECTOR_HALFVEC
                                              : EF_VECTOR_REAL;
}

int
ef_schema_create_index (PGconn *conn, const char *quoted, const char *table,
                        const char *name, int dim, const ef_index_opts_t *ix,
                        bool concurrently, char *err, size_t errlen)
{
    char sql[1024];
    if (ef_schema_index_sql (conn, quoted, table, name, dim, ix, concurrently,
                             sql, sizeof sql, err, errlen)
        != 0)
        return -1;
    return ef_pg_script (conn, sql, "creating the ANN index", err, errlen);
}

int
ef_schema_index_sql (PGconn *conn, const char *quoted, const char *table,
                     const char *name, int dim, const ef_index_opts_t *ix,
                     bool concurrently, char *sql, size_t len, char *err,
                     size_t errlen)
{
    char typname[64], ns[160];
    if (ef_schema_vector_column (conn, quoted, typname, sizeof typname, ns,
                                 sizeof ns, err, errlen)
        != 0)
        return -1;
    if (ef_index_fits (ix, s_typname_type (typname), dim, err, errlen) != 0)
        return -1;
    char with[96];
    if (ix->method == EF_INDEX_HNSW)
        snprintf (with, sizeof with, "m = %d, ef_construction = %d", ix->m,
                  ix->ef_construction);
    else
        snprintf (with, sizeof with, "lists = %d", ix->lists);
    snprintf (sql, len,
              "CREATE INDEX %s%s ON %s.%s USING %s"
              " (vector %s.%s_%s_ops) WITH (%s)",
              concurrently ? "CONCURRENTLY " : "", name, quoted, table,
              s_methods[ix->method], ns, typname, s_metrics[ix->metric], with);
    return 0;
}

int
ef_index_parse_description (const char *text, ef_index_opts_t *ix)
{
    char method[16], metric[16];
    memset (ix, 0, sizeof *ix);
    ix->m = 16;
    ix->ef_construction = 64;
    ix->lists = 100;
    if (!text || strcmp (text, "none") == 0) {
        ix->method = EF_INDEX_NONE;
        return text ? 0 : -1;
    }
    if (sscanf (text, "%15s %15s", method, metric) != 2
        || ef_index_method_parse (method, &ix->method) != 0
        || ef_index_metric_parse (metric, &ix->metric) != 0)
        return -1;
    if (ix->method == EF_INDEX_HNSW)
        return sscanf (text, "%*s %*s m=%d ef_construction=%d", &ix->m,
                       &ix->ef_construction)
                       == 2
                   ? 0
                   : -1;
    return sscanf (text, "%*s %*s lists=%d", &ix->lists) == 1 ? 0 : -1;
}

/* The body of the migration transaction. Returns 0 or -1 with err. */
static int
s_migrate (PGconn *conn, const char *schema, const ef_schema_opts_t *opts,
           char *err, size_t errlen)
{
    int dim = opts->dim;
    s_vars_t v = {.vector_check = ""};
    char *quoted = ef_pg_ident (conn, schema);
    if (!quoted) {
        snprintf (err, errlen, "schema name \"%s\" cannot be quoted: %s",
                  schema, PQerrorMessage (conn));
        return -1;
    }
    v.schema = quoted;
    snprintf (v.dim, sizeof v.dim, "%d", dim);
    int rc = -1;
    char *sql = NULL;
    PGresult *res = NULL;

    char key[32];
    snprintf (key, sizeof key, "%" PRId64, s_lock_key (schema));
    const char *key_p[] = {key};
    /* Messages like "schema already exists, skipping" are noise here. */
    res = ef_pg_exec (conn, "SET LOCAL client_min_messages = warning", 0, NULL,
                      "setting up", err, errlen);
    if (!res)
        goto done;
    PQclear (res);
    res = ef_pg_exec (conn, "SELECT pg_advisory_xact_lock ($1::bigint)", 1,
                      key_p, "locking the schema", err, errlen);
    if (!res)
        goto done;
    PQclear (res);

    /* After the lock, each statement sees what the previous holder
       committed. Creating only what is missing keeps a current schema
       usable by a role without CREATE privileges. */
    const char *schema_p[] = {schema};
    res = ef_pg_exec (
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),"
        "  to_regclass (quote_ident ($1) || '.schema_version')"
        "    IS NOT NULL",
        1, schema_p, "inspecting the schema", err, errlen);
    if (!res)
        goto done;
    bool has_schema = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    bool has_versions = strcmp (PQgetvalue (res, 0, 1), "t") == 0;
    PQclear (res);
    res = NULL;
    if (!has_schema) {
        sql = s_expand ("CREATE SCHEMA ${S}", &v);
        if (!sql
            || ef_pg_script (conn, sql, "creating the schema", err, errlen)
                   != 0)
            goto done;
        free (sql);
        sql = NULL;
    }
    if (!has_versions) {
        sql = s_expand ("CREATE TABLE ${S}.schema_version ("
                        "  version integer PRIMARY KEY,"
                        "  description text NOT NULL,"
                        "  applied_at timestamptz NOT NULL DEFAULT now())",
                        &v);
        if (!sql
            || ef_pg_script (conn, sql, "creating schema_version", err, errlen)
                   != 0)
            goto done;
        free (sql);
        sql = NULL;
    }

    sql = s_expand (
        "SELECT coalesce (max (version), 0) FROM ${S}.schema_version", &v);
    if (!sql
        || !(res = ef_pg_exec (conn, sql, 0, NULL, "reading schema_version",
                               err, errlen)))
        goto done;
    free (sql);
    sql = NULL;
    int current = atoi (PQgetvalue (res, 0, 0));
    PQclear (res);
    res = NULL;
    if (current > ef_schema_latest ()) {
        snprintf (err, errlen,
                  "schema \"%s\" is at version %d but this embedflow knows "
                  "versions up to %d: upgrade embedflow",
                  schema, current, ef_schema_latest ());
        goto done;
    }
    if (current >= 1) {
        sql = s_expand ("SELECT value FROM ${S}.setting WHERE key = 'dim'", &v);
        if (!sql
            || !(res = ef_pg_exec (conn, sql, 0, NULL, "reading the dimension",
                                   err, errlen)))
            goto done;
        free (sql);
        sql = NULL;
        const char *stored =
            PQntuples (res) == 1 ? PQgetvalue (res, 0, 0) : "(none)";
        if (strcmp (stored, v.dim) != 0) {
            snprintf (err, errlen,
                      "schema \"%s\" holds %s-dimension vectors but dim is "
                      "%d: use another schema, or the dim it was made for",
                      schema, stored, dim);
            goto done;
        }
        PQclear (res);
        res = NULL;
        sql = s_expand (
            "SELECT value FROM ${S}.setting WHERE key = 'vector_type'", &v);
        if (!sql
            || !(res = ef_pg_exec (conn, sql, 0, NULL,
                                   "reading the vector type", err, errlen)))
            goto done;
        free (sql);
        sql = NULL;
        const char *type = PQntuples (res) == 1 ? PQgetvalue (res, 0, 0) : "";
        if (opts->vector_type != EF_VECTOR_AUTO
            && s_stored_type (type) != opts->vector_type) {
            snprintf (err, errlen,
                      "schema \"%s\" stores vectors as %s but vector_type is "
                      "%s: use another schema, or vector_type %s",
                      schema, type, ef_vector_type_name (opts->vector_type),
                      ef_vector_type_name (s_stored_type (type)));
            goto done;
        }
        PQclear (res);
        res = NULL;
        sql = s_expand (
            "SELECT value FROM ${S}.setting WHERE key = 'distribution'", &v);
        if (!sql
            || !(res = ef_pg_exec (conn, sql, 0, NULL,
                                   "reading the distribution", err, errlen)))
            goto done;
        free (sql);
        sql = NULL;
        if (s_check_distribution (
                schema, PQntuples (res) == 1 ? PQgetvalue (res, 0, 0) : "",
                opts->distribution, err, errlen)
            != 0)
            goto done;
        PQclear (res);
        res = NULL;
    }
    else if (opts->distribution == EF_DIST_CITUS
             && ef_citus_check_coordinator (conn, err, errlen) != 0)
        goto done;
    s_choose_keys (opts->distribution, &v);
    for (size_t i = 0; i < S_MIGRATIONS; i++) {
        const s_migration_t *m = &s_migrations[i];
        if (m->version <= current)
            continue;
        if (m->version == 1
            && s_choose_vector (conn, opts, &v, err, errlen) != 0)
            goto done;
        char what[64];
        snprintf (what, sizeof what, "applying version %d", m->version);
        sql = s_expand (m->sql, &v);
        if (!sql || ef_pg_script (conn, sql, what, err, errlen) != 0)
            goto done;
        free (sql);
        sql = s_expand ("INSERT INTO ${S}.schema_version (version, description)"
                        "  VALUES ($1::integer, $2)",
                        &v);
        char version[16];
        snprintf (version, sizeof version, "%d", m->version);
        const char *params[] = {version, m->description};
        if (!sql
            || !(res = ef_pg_exec (conn, sql, 2, params, what, err, errlen)))
            goto done;
        PQclear (res);
        res = NULL;
        free (sql);
        sql = NULL;
    }
    /* A new schema gets its index with its (empty) tables; an existing
       one keeps what it has: rebuilding an index over many rows is for
       ef_schema_index_apply, never a side effect of a start. */
    if (current == 0) {
        if (opts->distribution == EF_DIST_CITUS && opts->segmented
            && opts->index.method != EF_INDEX_NONE) {
            snprintf (err, errlen,
                      "segmented loading is off on Citus (each shard is "
                      "indexed on its own): index.segments false with "
                      "distribution citus");
            goto done;
        }
        if (opts->distribution == EF_DIST_CITUS
            && ef_citus_distribute (conn, quoted, err, errlen) != 0)
            goto done;
        sql = s_expand ("INSERT INTO ${S}.setting (key, value)"
                        "  VALUES ('distribution', $1)",
                        &v);
        const char *dist_p[] = {ef_distribution_name (opts->distribution)};
        if (!sql
            || !(res = ef_pg_exec (conn, sql, 1, dist_p,
                                   "recording the distribution", err, errlen)))
            goto done;
        PQclear (res);
        res = NULL;
        free (sql);
        sql = NULL;
        char described[128];
        ef_index_describe (&opts->index, described, sizeof described);
        bool segmented = opts->segmented && opts->index.method != EF_INDEX_NONE;
        /* what the sealer will build must be buildable: checked now */
        char probe[1024];
        if (segmented
            && (ef_schema_index_sql (conn, quoted, "embedding", S_INDEX, dim,
                                     &opts->index, false, probe, sizeof probe,
                                     err, errlen)
                    != 0
                || ef_segments_create (conn, quoted, v.dim, v.vector, err,
                                       errlen)
                       != 0))
            goto done;
        if (!segmented && opts->index.method != EF_INDEX_NONE
            && ef_schema_create_index (conn, quoted, "embedding", S_INDEX, dim,
                                       &opts->index, false, err, errlen)
                   != 0)
            goto done;
        sql = s_expand ("INSERT INTO ${S}.setting (key, value)"
                        "  VALUES ('index', $1)",
                        &v);
        const char *params[] = {described};
        if (!sql
            || !(res = ef_pg_exec (conn, sql, 1, params, "recording the index",
                                   err, errlen)))
            goto done;
    }
    rc = 0;
done:
    if (rc != 0 && !*err)
        snprintf (err, errlen, "out of memory");
    PQclear (res);
    free (sql);
    free (quoted);
    return rc;
}

int
ef_schema_migrate (PGconn *conn, const char *schema, int dim, char *err,
                   size_t errlen)
{
    ef_schema_opts_t opts = {.dim = dim, .vector_type = EF_VECTOR_AUTO};
    return ef_schema_migrate_opts (conn, schema, &opts, err, errlen);
}

int
ef_schema_migrate_opts (PGconn *conn, const char *schema,
                        const ef_schema_opts_t *opts, char *err, size_t errlen)
{
    int dim = opts->dim;
    char scratch[8];
    if (!err || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (!schema || !*schema || dim <= 0) {
        snprintf (err, errlen, "migrating: need a schema name and dim > 0");
        return -1;
    }
    if (ef_pg_script (conn, "BEGIN", "starting the migration", err, errlen)
        != 0)
        return -1;
    int rc = s_migrate (conn, schema, opts, err, errlen);
    if (rc == 0)
        rc = ef_pg_script (conn, "COMMIT", "committing the migration", err,
                           errlen);
    else if (PQstatus (conn) == CONNECTION_OK) {
        PGresult *res = PQexec (conn, "ROLLBACK");
        PQclear (res);
    }
    if (rc != 0 && strncmp (err, "schema \"", 8) != 0) {
        char *why = strdup (err);
        if (why) {
            snprintf (err, errlen, "schema \"%s\": %s", schema, why);
            free (why);
        }
    }
    return rc;
}

/* Reads the 'index' setting into out ("none" when absent). Returns 0 or
   -1 with err. */
static int
s_stored_index (PGconn *conn, const char *quoted, char *out, size_t len,
                char *err, size_t errlen)
{
    char sql[300];
    snprintf (sql, sizeof sql,
              "SELECT value FROM %s.setting WHERE key = 'index'", quoted);
    PGresult *res = ef_pg_exec (conn, sql, 0, NULL, "reading the index setting",
                                err, errlen);
    if (!res)
        return -1;
    snprintf (out, len, "%s",
              PQntuples (res) == 1 ? PQgetvalue (res, 0, 0) : "none");
    PQclear (res);
    return 0;
}

int
ef_schema_index_drift (PGconn *conn, const char *schema,
                       const ef_index_opts_t *want, char *stored,
                       size_t storedlen, char *err, size_t errlen)
{
    char *quoted = ef_pg_ident (conn, schema);
    if (!quoted) {
        snprintf (err, errlen, "schema name \"%s\" cannot be quoted", schema);
        return -1;
    }
    int rc = s_stored_index (conn, quoted, stored, storedlen, err, errlen);
    free (quoted);
    if (rc != 0)
        return -1;
    char described[128];
    ef_index_describe (want, described, sizeof described);
    return strcmp (stored, described) != 0 ? 1 : 0;
}

int
ef_schema_index_apply (PGconn *conn, const char *schema,
                       const ef_index_opts_t *want, char *err, size_t errlen)
{
    char *quoted = ef_pg_ident (conn, schema);
    if (!quoted) {
        snprintf (err, errlen, "schema name \"%s\" cannot be quoted", schema);
        return -1;
    }
    char key[32], lock_name[120];
    snprintf (lock_name, sizeof lock_name, "%.100s/index", schema);
    snprintf (key, sizeof key, "%" PRId64, s_lock_key (lock_name));
    const char *key_p[] = {key};
    char sql[600], described[128], dim[16] = "";
    ef_index_describe (want, described, sizeof described);
    int rc = -1;
    bool locked = false;
    PGresult *res = ef_pg_exec (conn, "SELECT pg_advisory_lock ($1::bigint)", 1,
                                key_p, "locking the index", err, errlen);
    if (!res)
        goto done;
    PQclear (res);
    locked = true;
    snprintf (sql, sizeof sql, "SELECT value FROM %s.setting WHERE key = 'dim'",
              quoted);
    if (!(res = ef_pg_exec (conn, sql, 0, NULL, "reading the dimension", err,
                            errlen)))
        goto done;
    if (PQntuples (res) == 1)
        snprintf (dim, sizeof dim, "%s", PQgetvalue (res, 0, 0));
    PQclear (res);
    int segmented = ef_segments_enabled (conn, schema, err, errlen);
    if (segmented < 0)
        goto done;
    if (segmented) {
        rc = ef_segments_index_apply (conn, quoted, atoi (dim), want, described,
                                      err, errlen);
        goto done;
    }
    /* an earlier apply that failed half-way may have left its new index */
    snprintf (sql, sizeof sql, "DROP INDEX IF EXISTS %s." S_INDEX_NEW, quoted);
    if (ef_pg_script (conn, sql, "dropping a half-built index", err, errlen)
        != 0)
        goto done;
    if (want->method != EF_INDEX_NONE
        && ef_schema_create_index (conn, quoted, "embedding", S_INDEX_NEW,
                                   atoi (dim), want, true, err, errlen)
               != 0)
        goto done;
    /* the swap: a moment's lock on the table, never a time without the
       old or the new index */
    char rename[300] = "";
    if (want->method != EF_INDEX_NONE)
        snprintf (rename, sizeof rename,
                  "ALTER INDEX %s." S_INDEX_NEW " RENAME TO " S_INDEX ";",
                  quoted);
    snprintf (sql, sizeof sql,
              "BEGIN;"
              "DROP INDEX IF EXISTS %1$s." S_INDEX ";"
              "%2$s"
              "INSERT INTO %1$s.setting (key, value) VALUES ('index', '%3$s')"
              "  ON CONFLICT (key) DO UPDATE SET value = excluded.value;"
              "COMMIT",
              quoted, rename, described);
    if (ef_pg_script (conn, sql, "swapping the index", err, errlen) != 0) {
        res = PQexec (conn, "ROLLBACK");
        PQclear (res);
        goto done;
    }
    rc = 0;
done:
    if (locked) {
        res = PQexecParams (conn, "SELECT pg_advisory_unlock ($1::bigint)", 1,
                            NULL, key_p, NULL, NULL, 0);
        PQclear (res);
    }
    if (rc != 0 && strncmp (err, "schema \"", 8) != 0) {
        char *why = strdup (err);
        if (why) {
            snprintf (err, errlen, "schema \"%s\": %s", schema, why);
            free (why);
        }
    }
    free (quoted);
    return rc;
}
