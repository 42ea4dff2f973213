/*  segments.c — the segmented embedding table: see segments.h.

    Invariants the writers and the sealer keep between them:
      - exactly one segment is growing; a writer reads which one in its
        batch's transaction, without a lock on the segment row (a
        rotation waiting for the share locks of overlapping batches
        starved), then locks that segment's table and checks it is
        still growing (postgres/pgwrite.c): the build that follows a
        rotation (CREATE INDEX CONCURRENTLY) waits for the batches that
        hold the lock, and a batch that comes later goes through the
        finished index;
      - a row id lives in one segment: a changed row is deleted wherever
        it is and its new version, with a new updated_at, inserted into
        the growing segment, in one transaction;
      - a merge copies live segments and, under the swap's lock,
        makes the copy equal to them by (id, updated_at): it drops the
        copies whose original went away meanwhile and adds what came in
        late.
*/
#include "postgres/segments.h"
#include "postgres/sealplan.h"
#include "postgres/pg.h"
#include "postgres/schema.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "embedflow/actor.h"
#include "embedflow/buf.h"

/* The long statement in flight, if any. */
typedef enum {
    S_IDLE,           /* nothing sent */
    S_BUILDING,       /* CREATE INDEX CONCURRENTLY of segment busy_id */
    S_MERGE_COPYING,  /* copying the merged segments into busy_id */
    S_MERGE_INDEXING, /* indexing busy_id */
} s_busy_t;

/* Segments waiting for an index, and sealed ones to merge, that one
   step looks at. */
#define S_MAX_BUILDING 64

/* A growing segment that got rows this recently is still filling. */
#define S_FILLING_US 1000000
/* ... and one that got none for this long, the load has paused */
#define S_PAUSE_US 2000000

/* The rows of segment s (not sealed) that await an index, as SQL on
   %1$s, the schema: what the writers tallied into it. Not segment.rows,
   the count a rotation saw: batches that began before the rotation
   commit after it (up to ~4,000 rows of a full-size segment), and the
   build indexes them too. */
#define S_UNSEALED_ROWS                                                        \
    "(SELECT coalesce (sum (t.rows), 0) FROM %1$s.segment_rows t"              \
    "  WHERE t.segment = s.id)"

/* A connection that runs builds and merges, one at a time. */
typedef struct {
    PGconn *conn;                  /* borrowed */
    s_busy_t busy;                 /* the statement in flight */
    int busy_id;                   /* the segment it makes */
    int merged[EF_SEAL_MAX_MERGE]; /* S_MERGE_*: the segments merged */
    int n_merged;                  /* entries of merged */
    int64_t merge_rows;            /* S_MERGE_*: their rows */
    int64_t busy_since_us;         /* when it was sent */
} s_builder_t;

struct ef_sealer {
    PGconn *conn;             /* borrowed: counts, rotates, swaps */
    s_builder_t *builders;    /* run builds and merges */
    int n_builders;           /* entries of builders */
    char *schema;             /* as configured */
    char *quoted;             /* quoted identifier, made on first step */
    char *literal;            /* quoted as an SQL string literal */
    ef_segments_opts_t opts;  /* copied */
    bool leader;              /* holds the sealer lock of the schema */
    bool recovered;           /* leftovers of a killed sealer dropped */
    int growing;              /* id of the growing segment last seen */
    int64_t growing_rows;     /* its rows when last counted */
    int64_t growing_since_us; /* monotonic time that count was first seen */
    int64_t held_at_us;       /* when the backlog last held writers back */
    ef_index_opts_t ix;       /* the index builds make (recorded setting) */
    ef_seal_stats_t stats;    /* as of the last step */
};

/* Rolls back whatever transaction a failed step left open. */
static void
s_rollback (PGconn *conn)
{
    if (PQstatus (conn) == CONNECTION_OK
        && PQtransactionStatus (conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec (conn, "ROLLBACK");
        PQclear (res);
    }
}

/* The statements that make table embedding_<id> ready to be attached as
   segment id: same columns, defaults, checks and storage as the
   partitioned table, inline vectors, its own key and partition check. */
static int
s_new_segment_table (PGconn *conn, const char *quoted, int id, char *err,
                     size_t errlen)
{
    char sql[4096];
    snprintf (sql, sizeof sql,
              "CREATE TABLE %1$s.embedding_%2$d (LIKE %1$s.embedding"
              "  INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)"
              "  WITH (toast_tuple_target = 8160);"
              "ALTER TABLE %1$s.embedding_%2$d"
              "  ALTER COLUMN segment SET DEFAULT %2$d,"
              "  ADD CONSTRAINT embedding_%2$d_segment CHECK (segment = %2$d);",
              quoted, id);
    return ef_pg_script (conn, sql, "making a segment", err, errlen);
}

int
ef_segments_create (PGconn *conn, const char *quoted, const char *dim,
                    const char *vector, char *err, size_t errlen)
{
    char sql[8192];
    /* The constraint names stay those of the plain table, so ATTACH
       finds the partition's foreign key and checks equal to the
       parent's and adopts them. */
    snprintf (sql, sizeof sql,
              "ALTER TABLE %1$s.embedding RENAME TO embedding_1;"
              "ALTER TABLE %1$s.embedding_1"
              "  ADD COLUMN segment integer NOT NULL DEFAULT 1,"
              "  DROP CONSTRAINT embedding_pkey,"
              "  ADD CONSTRAINT embedding_1_segment CHECK (segment = 1);"
              "ALTER TABLE %1$s.embedding_1"
              "  ADD CONSTRAINT embedding_1_pkey PRIMARY KEY (id, segment);"
              "CREATE TABLE %1$s.embedding ("
              "  id uuid NOT NULL,"
              "  model text NOT NULL DEFAULT '',"
              "  dim integer NOT NULL CONSTRAINT embedding_dim_check"
              "    CHECK (dim = %2$s),"
              "  vector %3$s NOT NULL,"
              "  updated_at timestamptz NOT NULL DEFAULT now(),"
              "  segment integer NOT NULL,"
              "  CONSTRAINT embedding_pkey PRIMARY KEY (id, segment),"
              "  CONSTRAINT embedding_id_fkey FOREIGN KEY (id)"
              "    REFERENCES %1$s.chunk (id) ON DELETE CASCADE)"
              "  PARTITION BY LIST (segment);"
              "ALTER TABLE %1$s.embedding ATTACH PARTITION %1$s.embedding_1"
              "  FOR VALUES IN (1);"
              /* rows: as last counted by the sealer (writers read the sum of
           the unsealed ones to hold back while the backlog is too big) */
              "CREATE TABLE %1$s.segment ("
              "  id integer PRIMARY KEY,"
              "  state text NOT NULL"
              "    CHECK (state IN ('growing', 'building', 'sealed')),"
              "  rows bigint NOT NULL DEFAULT 0,"
              "  created_at timestamptz NOT NULL DEFAULT now(),"
              "  sealed_at timestamptz);"
              "CREATE UNIQUE INDEX segment_one_growing ON %1$s.segment ((true))"
              "  WHERE state = 'growing';"
              /* What each writer session put into a segment not sealed yet,
           in the batch's own transaction: exact, and no two writers
           update the same row. */
              "CREATE TABLE %1$s.segment_rows ("
              "  segment integer NOT NULL,"
              "  writer integer NOT NULL,"
              "  rows bigint NOT NULL,"
              "  PRIMARY KEY (segment, writer));"
              "INSERT INTO %1$s.segment (id, state) VALUES (1, 'growing');",
              quoted, dim, vector);
    return ef_pg_script (conn, sql, "making the segments", err, errlen);
}

int
ef_segments_enabled (PGconn *conn, const char *schema, char *err, size_t errlen)
{
    const char *param[] = {schema};
    PGresult *res = ef_pg_exec_schema (
        conn, schema,
        "SELECT to_regclass (quote_ident ($1) || '.segment') IS NOT NULL", 1,
        param, "segments", err, errlen);
    if (!res)
        return -1;
    int segmented = PQgetvalue (res, 0, 0)[0] == 't';
    PQclear (res);
    return segmented;
}

int
ef_segments_unindexed (PGconn *conn, const char *schema, int64_t *rows,
                       char *err, size_t errlen)
{
    *rows = 0;
    int segmented = ef_segments_enabled (conn, schema, err, errlen);
    if (segmented <= 0)
        return segmented;
    /* from the bookkeeping, not count(*): a count reads every unindexed
       vector (~0.75 us each), and a monitor that asks often would take
       the builders' CPU */
    PGresult *res =
        ef_pg_exec_schema (conn, schema,
                           "SELECT coalesce (sum (" S_UNSEALED_ROWS "), 0)"
                           " FROM %1$s.segment s WHERE s.state <> 'sealed'",
                           0, NULL, "segments", err, errlen);
    if (!res)
        return -1;
    *rows = strtoll (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return 0;
}

int
ef_segments_index_apply (PGconn *conn, const char *quoted, int dim,
                         const ef_index_opts_t *want, const char *described,
                         char *err, size_t errlen)
{
    char sql[4096];
    /* first the setting: what the sealer builds from now on */
    char *literal = PQescapeLiteral (conn, described, strlen (described));
    if (!literal) {
        snprintf (err, errlen, "recording the index: out of memory");
        return -1;
    }
    snprintf (sql, sizeof sql,
              "INSERT INTO %s.setting (key, value) VALUES ('index', %s)"
              "  ON CONFLICT (key) DO UPDATE SET value = excluded.value",
              quoted, literal);
    PQfreemem (literal);
    if (ef_pg_script (conn, sql, "recording the index", err, errlen) != 0)
        return -1;
    snprintf (sql, sizeof sql,
              "SELECT id FROM %s.segment WHERE state = 'sealed' ORDER BY id",
              quoted);
    PGresult *ids =
        ef_pg_exec (conn, sql, 0, NULL, "reading the segments", err, errlen);
    if (!ids)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples (ids) && rc == 0; i++) {
        int id = atoi (PQgetvalue (ids, i, 0));
        char name[48], table[32], create[1024];
        snprintf (name, sizeof name, "embedding_%d_vector_new", id);
        snprintf (table, sizeof table, "embedding_%d", id);
        snprintf (sql, sizeof sql, "DROP INDEX IF EXISTS %s.%s", quoted, name);
        rc = ef_pg_script (conn, sql, "dropping a half-built index", err,
                           errlen);
        if (rc == 0 && want->method != EF_INDEX_NONE)
            rc = ef_schema_index_sql (conn, quoted, table, name, dim, want,
                                      true, create, sizeof create, err, errlen)
                             != 0
                         || ef_pg_script (conn, create, "building", err, errlen)
                                != 0
                     ? -1
                     : 0;
        /* a merge may have taken the segment meanwhile: nothing to swap */
        snprintf (
            sql, sizeof sql,
            "BEGIN;"
            "DROP INDEX IF EXISTS %1$s.embedding_%2$d_vector;"
            "DO $$BEGIN IF to_regclass ('%3$s.embedding_%2$d_vector_new')"
            "  IS NOT NULL THEN ALTER INDEX %1$s.embedding_%2$d_vector_new"
            "  RENAME TO embedding_%2$d_vector; END IF; END$$;"
            "COMMIT",
            quoted, id, quoted);
        if (rc == 0
            && ef_pg_script (conn, sql, "swapping the index", err, errlen)
                   != 0) {
            s_rollback (conn);
            rc = -1;
        }
    }
    PQclear (ids);
    return rc;
}

/* --- the sealer ------------------------------------------------------- */

ef_sealer_t *
ef_sealer_new (PGconn *conn, PGconn *const *builds, int n_builds,
               const char *schema, const ef_segments_opts_t *opts)
{
    ef_sealer_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->conn = conn;
    self->builders =
        calloc (n_builds > 0 ? n_builds : 1, sizeof *self->builders);
    if (!self->builders) {
        free (self);
        return NULL;
    }
    for (int i = 0; i < n_builds; i++)
        self->builders[i].conn = builds[i];
    self->n_builders = n_builds;
    self->opts = *opts;
    self->schema = strdup (schema);
    self->growing = -1;
    if (!self->schema)
        ef_sealer_destroy (&self);
    return self;
}

void
ef_sealer_destroy (ef_sealer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_sealer_t *self = *self_p;
    free (self->schema);
    free (self->quoted);
    PQfreemem (self->literal);
    free (self->builders);
    free (self);
    *self_p = NULL;
}

/* Takes the schema's sealer lock if nobody holds it. The lock belongs to
   the session: a connection reset loses it, and the next step asks
   again. Returns 0 (self->leader says whether), -1 with err. */
static int
s_lead (ef_sealer_t *self, char *err, size_t errlen)
{
    if (self->leader && PQstatus (self->conn) == CONNECTION_OK)
        return 0;
    self->leader = false;
    self->recovered = false;
    free (self->quoted);
    PQfreemem (self->literal);
    self->literal = NULL;
    self->quoted = ef_pg_ident (self->conn, self->schema);
    if (self->quoted)
        self->literal =
            PQescapeLiteral (self->conn, self->quoted, strlen (self->quoted));
    if (!self->quoted || !self->literal) {
        snprintf (err, errlen, "schema name \"%s\" cannot be quoted",
                  self->schema);
        return -1;
    }
    char name[200], sql[160];
    snprintf (name, sizeof name, "embedflow.sealer:%.150s", self->schema);
    snprintf (sql, sizeof sql, "SELECT pg_try_advisory_lock (%" PRId64 ")",
              (int64_t) XXH3_64bits (name, strlen (name)));
    PGresult *res =
        ef_pg_exec (self->conn, sql, 0, NULL, "sealer lock", err, errlen);
    if (!res)
        return -1;
    self->leader = PQgetvalue (res, 0, 0)[0] == 't';
    PQclear (res);
    return 0;
}

/* Drops what a killed sealer left: tables of merges that never swapped
   (embedding_<n> not attached) and indexes whose concurrent build was
   cut off (invalid). */
static int
s_recover (ef_sealer_t *self, char *err, size_t errlen)
{
    const char *param[] = {self->schema};
    PGresult *res = ef_pg_exec_schema (
        self->conn, self->schema,
        "SELECT string_agg (format ('DROP TABLE %%I.%%I', n.nspname,"
        "    c.relname), ';')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition"
        "   AND c.relname ~ '^embedding_[0-9]+$'"
        " UNION ALL "
        "SELECT string_agg (format ('DROP INDEX %%I.%%I', n.nspname,"
        "    c.relname), ';')"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        "   JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND NOT i.indisvalid"
        "   AND c.relname ~ '^embedding_[0-9]+_vector$'",
        1, param, "finding leftovers", err, errlen);
    if (!res)
        return -1;
    int rc = 0;
    for (int i = 0; i < PQntuples (res) && rc == 0; i++)
        if (!PQgetisnull (res, i, 0))
            rc = ef_pg_script (self->conn, PQgetvalue (res, i, 0),
                               "dropping leftovers", err, errlen);
    PQclear (res);
    if (rc == 0)
        self->recovered = true;
    return rc;
}

/* The index the schema records (what `embedflow index --apply` last
   applied), so that a configuration changed since is not applied to
   new segments behind the operator's back. */
static int
s_recorded_index (ef_sealer_t *self, ef_index_opts_t *ix, char *err,
                  size_t errlen)
{
    char sql[200];
    snprintf (sql, sizeof sql,
              "SELECT value FROM %s.setting WHERE key = 'index'", self->quoted);
    PGresult *res =
        ef_pg_exec (self->conn, sql, 0, NULL, "reading the index", err, errlen);
    if (!res)
        return -1;
    const char *text = PQntuples (res) == 1 ? PQgetvalue (res, 0, 0) : "none";
    int rc = ef_index_parse_description (text, ix);
    if (rc != 0)
        snprintf (err, errlen, "setting 'index' is \"%.100s\": not an index",
                  text);
    PQclear (res);
    return rc;
}

/* The ids, states and rows of the segments, oldest first. A sealed
   segment's rows are the statistics' live tuples when there are any:
   rows leave sealed segments (changed rows move to the growing one, a
   full reload moves them all), and the merge should pick the segments
   that shrank. */
static PGresult *
s_segments (ef_sealer_t *self, char *err, size_t errlen)
{
    char sql[1024];
    snprintf (sql, sizeof sql,
              "SELECT s.id, s.state,"
              "  CASE WHEN s.state = 'sealed'"
              "    THEN coalesce (st.n_live_tup, s.rows)"
              "    ELSE " S_UNSEALED_ROWS " END"
              " FROM %1$s.segment s LEFT JOIN pg_stat_user_tables st"
              "   ON st.relid = to_regclass (%2$s || '.embedding_' || s.id)"
              " ORDER BY s.id",
              self->quoted, self->literal);
    return ef_pg_exec (self->conn, sql, 0, NULL, "reading the segments", err,
                       errlen);
}

/* Makes segment next the growing one and hands `growing` (holding rows)
   to the builder, in one transaction; the UPDATE waits for the batches
   that read `growing` to commit. */
static int
s_rotate (ef_sealer_t *self, int growing, int next, int64_t rows, char *err,
          size_t errlen)
{
    if (ef_pg_script (self->conn, "BEGIN", "rotating", err, errlen) != 0)
        return -1;
    /* Writers do not lock the segment's row (segments.c says why), so
       this waits for nobody but a concurrent ATTACH. */
    char first[1024], sql[4096];
    snprintf (first, sizeof first,
              "UPDATE %s.segment SET state = 'building', rows = %" PRId64
              " WHERE id = %d",
              self->quoted, rows, growing);
    snprintf (sql, sizeof sql,
              "ALTER TABLE %1$s.embedding_%2$d"
              "  ADD CONSTRAINT embedding_%2$d_pkey PRIMARY KEY (id, segment);"
              "ALTER TABLE %1$s.embedding ATTACH PARTITION %1$s.embedding_%2$d"
              "  FOR VALUES IN (%2$d);"
              "INSERT INTO %1$s.segment (id, state) VALUES (%2$d, 'growing');",
              self->quoted, next);
    if (ef_pg_script (self->conn, first, "rotating", err, errlen) != 0
        || s_new_segment_table (self->conn, self->quoted, next, err, errlen)
               != 0
        || ef_pg_script (self->conn, sql, "rotating", err, errlen) != 0
        || ef_pg_script (self->conn, "COMMIT", "rotating", err, errlen) != 0) {
        s_rollback (self->conn);
        return -1;
    }
    return 0;
}

/* The memory and parallel workers of the builds on b's session (set
   before each: a reset connection forgets them). */
static int
s_set_build_session (ef_sealer_t *self, s_builder_t *b, char *err,
                     size_t errlen)
{
    char sql[160];
    int n =
        snprintf (sql, sizeof sql, "SET maintenance_work_mem = '%" PRId64 "kB'",
                  self->opts.build_memory / 1024);
    if (self->opts.build_workers >= 0)
        snprintf (sql + n, sizeof sql - (size_t) n,
                  ";SET max_parallel_maintenance_workers = %d",
                  self->opts.build_workers);
    return ef_pg_script (b->conn, sql, "setting up a build", err, errlen);
}

/* Sends sql without waiting for its result: ef_sealer_poll collects it. */
static int
s_send (s_builder_t *b, const char *sql, s_busy_t busy, char *err,
        size_t errlen)
{
    if (!PQsendQuery (b->conn, sql)) {
        snprintf (err, errlen, "sending: %s", PQerrorMessage (b->conn));
        return -1;
    }
    b->busy = busy;
    b->busy_since_us = ef_clock_mono_us ();
    return 0;
}

/* Starts building segment id's ANN index without blocking writers or
   queries (CONCURRENTLY: a plain build would hold off every changed
   row's delete, which touches all segments). */
static int
s_build_start (ef_sealer_t *self, s_builder_t *b, int id, char *err,
               size_t errlen)
{
    char sql[1024], name[48], table[32];
    snprintf (name, sizeof name, "embedding_%d_vector", id);
    snprintf (table, sizeof table, "embedding_%d", id);
    snprintf (sql, sizeof sql, "DROP INDEX IF EXISTS %s.%s", self->quoted,
              name);
    if (s_set_build_session (self, b, err, errlen) != 0
        || ef_pg_script (b->conn, sql, "building", err, errlen) != 0
        || ef_schema_index_sql (b->conn, self->quoted, table, name,
                                self->opts.dim, &self->ix, true, sql,
                                sizeof sql, err, errlen)
               != 0)
        return -1;
    b->busy_id = id;
    return s_send (b, sql, S_BUILDING, err, errlen);
}

/* Appends, for each segment b merges, fmt with %1$s the schema, %2$d
   the segment and %3$d the one they are merged into (b->busy_id), sep
   between two. */
static void
s_each_merged (ef_buf_t *out, const s_builder_t *b, const char *quoted,
               const char *fmt, const char *sep)
{
    for (int i = 0; i < b->n_merged; i++) {
        if (i)
            ef_buf_puts (out, sep);
        ef_buf_printf (out, fmt, quoted, b->merged[i], b->busy_id);
    }
}

/* "3, 4, 7": the segments b merges, as an SQL list. */
static void
s_merged_ids (ef_buf_t *out, const s_builder_t *b)
{
    for (int i = 0; i < b->n_merged; i++)
        ef_buf_printf (out, "%s%d", i ? ", " : "", b->merged[i]);
}

/* "3, 4 and 7": the segments b merges, for the log. */
static void
s_merged_names (const s_builder_t *b, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < b->n_merged && used < len; i++)
        used += (size_t) snprintf (out + used, len - used, "%s%d",
                                   i == 0                 ? ""
                                   : i == b->n_merged - 1 ? " and "
                                                          : ", ",
                                   b->merged[i]);
}

/* Starts merging the n sealed segments of set into new segment m beside
   the live ones: the copy first (then the index, then the swap: see
   ef_sealer_poll). */
static int
s_merge_start (ef_sealer_t *self, s_builder_t *bl, const ef_seal_segment_t *set,
               int n, int m, char *err, size_t errlen)
{
    bl->n_merged = n;
    bl->merge_rows = 0;
    for (int i = 0; i < n; i++) {
        bl->merged[i] = set[i].id;
        bl->merge_rows += set[i].rows;
    }
    bl->busy_id = m;
    ef_buf_t sql = {0};
    ef_buf_printf (&sql,
                   "INSERT INTO %s.embedding_%d"
                   "  (id, model, dim, vector, updated_at, segment) ",
                   self->quoted, m);
    s_each_merged (&sql, bl, self->quoted,
                   "SELECT id, model, dim, vector, updated_at, %3$d"
                   "  FROM %1$s.embedding_%2$d",
                   " UNION ALL ");
    ef_buf_printf (&sql,
                   ";ALTER TABLE %1$s.embedding_%2$d"
                   "  ADD CONSTRAINT embedding_%2$d_pkey PRIMARY KEY"
                   "    (id, segment),"
                   "  ADD CONSTRAINT embedding_id_fkey FOREIGN KEY (id)"
                   "    REFERENCES %1$s.chunk (id) ON DELETE CASCADE;",
                   self->quoted, m);
    char *text = ef_buf_take (&sql, NULL);
    if (!text) {
        snprintf (err, errlen, "out of memory");
        return -1;
    }
    int rc = s_new_segment_table (bl->conn, self->quoted, m, err, errlen);
    if (rc == 0)
        rc = s_send (bl, text, S_MERGE_COPYING, err, errlen);
    free (text);
    return rc;
}

/* Swaps merged segment b->busy_id in for the segments it merged, in one
   transaction. The key, the foreign key and the partition check are in
   place and checked already, so ATTACH adopts them without reading the
   table. chunk is locked first, as writers lock it (they COPY into
   chunk, then into embedding), since attaching and detaching touch its
   foreign keys. Locking embedding keeps writers' deletes and queries
   out for as long as it takes to make the copy equal to the merged
   segments — drop the copies whose original left during the build (a
   changed row moved to the growing segment, a deleted chunk), add rows
   that came late — and to swap the tables. Only the parent and the
   tables swapped are locked, not every segment: another segment's
   CREATE INDEX CONCURRENTLY holds its table for the whole build and
   waits for every older snapshot, a query's among them, and a query
   that took its snapshot and then queued behind the swap's lock on the
   parent closed the cycle (deadlock). lock_timeout gives up rather than
   queue queries behind a long one, and the merge is tried again. */
static int
s_merge_swap (ef_sealer_t *self, const s_builder_t *b, char *err, size_t errlen)
{
    const char *q = self->quoted;
    int m = b->busy_id;
    ef_buf_t sql = {0};
    ef_buf_printf (&sql,
                   "BEGIN;"
                   "SET LOCAL lock_timeout = '2s';"
                   "LOCK TABLE %1$s.chunk IN SHARE ROW EXCLUSIVE MODE;"
                   "LOCK TABLE ONLY %1$s.embedding IN ACCESS EXCLUSIVE MODE;"
                   "LOCK TABLE ",
                   q);
    s_each_merged (&sql, b, q, "%1$s.embedding_%2$d", ", ");
    ef_buf_printf (&sql,
                   ", %1$s.embedding_%2$d IN ACCESS EXCLUSIVE MODE;"
                   "DELETE FROM %1$s.embedding_%2$d t WHERE ",
                   q, m);
    s_each_merged (&sql, b, q,
                   "NOT EXISTS (SELECT 1 FROM %1$s.embedding_%2$d x"
                   "  WHERE x.id = t.id AND x.updated_at = t.updated_at)",
                   " AND ");
    ef_buf_printf (&sql,
                   ";INSERT INTO %1$s.embedding_%2$d"
                   "  (id, model, dim, vector, updated_at, segment)"
                   " SELECT x.id, x.model, x.dim, x.vector, x.updated_at, %2$d"
                   " FROM (",
                   q, m);
    s_each_merged (&sql, b, q, "SELECT * FROM %1$s.embedding_%2$d",
                   " UNION ALL ");
    ef_buf_printf (&sql,
                   ") x WHERE NOT EXISTS (SELECT 1 FROM %1$s.embedding_%2$d t"
                   "   WHERE t.id = x.id AND t.updated_at = x.updated_at);",
                   q, m);
    s_each_merged (&sql, b, q,
                   "ALTER TABLE %1$s.embedding"
                   " DETACH PARTITION %1$s.embedding_%2$d;",
                   "");
    ef_buf_printf (&sql,
                   "ALTER TABLE %1$s.embedding ATTACH PARTITION"
                   "  %1$s.embedding_%2$d FOR VALUES IN (%2$d);"
                   "DELETE FROM %1$s.segment WHERE id IN (",
                   q, m);
    s_merged_ids (&sql, b);
    ef_buf_printf (&sql, ");DELETE FROM %s.segment_rows WHERE segment IN (", q);
    s_merged_ids (&sql, b);
    ef_buf_printf (&sql,
                   ");INSERT INTO %1$s.segment (id, state, rows, sealed_at)"
                   "  SELECT %2$d, 'sealed', count(*), now()"
                   "  FROM %1$s.embedding_%2$d;"
                   "COMMIT",
                   q, m);
    /* Dropping a table whose foreign key points at chunk drops triggers
       on chunk, which locks it: never while embedding is locked (a query
       reading chunk, then embedding, would deadlock with the swap). When
       it cannot be done now, the next recovery drops them. */
    ef_buf_t drop = {0};
    ef_buf_puts (&drop, "BEGIN;SET LOCAL lock_timeout = '2s';DROP TABLE ");
    s_each_merged (&drop, b, q, "%1$s.embedding_%2$d", ", ");
    ef_buf_puts (&drop, ";COMMIT");
    char *swap = ef_buf_take (&sql, NULL),
         *dropping = ef_buf_take (&drop, NULL);
    int rc = -1;
    if (!swap || !dropping)
        snprintf (err, errlen, "out of memory");
    else if (ef_pg_script (self->conn, swap, "swapping merged segments", err,
                           errlen)
             != 0)
        s_rollback (self->conn);
    else {
        rc = 0;
        char why[512];
        if (ef_pg_script (self->conn, dropping, "dropping merged segments", why,
                          sizeof why)
            != 0) {
            s_rollback (self->conn);
            self->recovered = false;
        }
    }
    free (swap);
    free (dropping);
    return rc;
}

void
ef_sealer_stats (const ef_sealer_t *self, ef_seal_stats_t *stats)
{
    *stats = self->stats;
}

int
ef_sealer_fd (const ef_sealer_t *self, int builder)
{
    const s_builder_t *b = &self->builders[builder];
    return b->busy != S_IDLE ? PQsocket (b->conn) : -1;
}

void
ef_sealer_cancel (ef_sealer_t *self)
{
    for (int i = 0; i < self->n_builders; i++) {
        s_builder_t *b = &self->builders[i];
        if (b->busy == S_IDLE)
            continue;
        PGcancel *cancel = PQgetCancel (b->conn);
        char why[256];
        if (cancel)
            PQcancel (cancel, why, sizeof why);
        PQfreeCancel (cancel);
        /* Wait for the statement to end, so that its locks are gone when
           this returns: a DROP SCHEMA right after (the bench) otherwise
           met a build still holding them, waiting for the DROP's
           transaction in turn. */
        PGresult *res;
        while ((res = PQgetResult (b->conn)))
            PQclear (res);
        b->busy = S_IDLE;
    }
}

/* True while any builder runs something. */
static bool
s_any_busy (const ef_sealer_t *self)
{
    for (int i = 0; i < self->n_builders; i++)
        if (self->builders[i].busy != S_IDLE)
            return true;
    return false;
}

/* True while some builder runs nothing. */
static bool
s_any_idle (const ef_sealer_t *self)
{
    for (int i = 0; i < self->n_builders; i++)
        if (self->builders[i].busy == S_IDLE)
            return true;
    return false;
}

int
ef_sealer_poll (ef_sealer_t *self, int builder, ef_seal_step_t *did,
                char *detail, size_t detlen, char *err, size_t errlen)
{
    *did = EF_SEAL_NOTHING;
    s_builder_t *b = &self->builders[builder];
    if (b->busy == S_IDLE)
        return 0;
    if (!PQconsumeInput (b->conn)) {
        snprintf (err, errlen, "reading: %s", PQerrorMessage (b->conn));
        b->busy = S_IDLE;
        self->recovered = false;
        return -1;
    }
    if (PQisBusy (b->conn))
        return 0;
    /* the statement ended: collect every result */
    char failure[600] = "";
    PGresult *res;
    while ((res = PQgetResult (b->conn))) {
        ExecStatusType st = PQresultStatus (res);
        if (!*failure && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            char state[6], msg[400];
            ef_pg_error (b->conn, res, state, msg, sizeof msg);
            snprintf (failure, sizeof failure, "%s%s%s", state,
                      *state ? " " : "", msg);
        }
        PQclear (res);
    }
    s_busy_t was = b->busy;
    b->busy = S_IDLE;
    double took = (double) (ef_clock_mono_us () - b->busy_since_us) / 1e6;
    if (*failure) {
        snprintf (err, errlen, "%s segment %d: %s",
                  was == S_BUILDING ? "indexing" : "merging into", b->busy_id,
                  failure);
        self->recovered = false; /* drop what it left */
        return -1;
    }
    char sql[1000];
    switch (was) {
    case S_BUILDING:
        snprintf (sql, sizeof sql,
                  "UPDATE %1$s.segment SET state = 'sealed', sealed_at = now(),"
                  "  rows = (SELECT count(*) FROM %1$s.embedding_%2$d)"
                  " WHERE id = %2$d;"
                  "DELETE FROM %1$s.segment_rows WHERE segment = %2$d",
                  self->quoted, b->busy_id);
        if (ef_pg_script (self->conn, sql, "sealing", err, errlen) != 0)
            return -1;
        *did = EF_SEAL_BUILT;
        self->stats.seconds = took;
        snprintf (detail, detlen, "segment %d indexed in %.1f s", b->busy_id,
                  took);
        return 0;
    case S_MERGE_COPYING: {
        if (self->ix.method == EF_INDEX_NONE)
            goto swap;
        char name[48], table[32], create[1024];
        int64_t since = b->busy_since_us;
        snprintf (name, sizeof name, "embedding_%d_vector", b->busy_id);
        snprintf (table, sizeof table, "embedding_%d", b->busy_id);
        if (s_set_build_session (self, b, err, errlen) != 0
            || ef_schema_index_sql (b->conn, self->quoted, table, name,
                                    self->opts.dim, &self->ix, false, create,
                                    sizeof create, err, errlen)
                   != 0
            || s_send (b, create, S_MERGE_INDEXING, err, errlen) != 0) {
            b->busy = S_IDLE;
            self->recovered = false;
            return -1;
        }
        b->busy_since_us = since; /* report the whole merge */
        return 0;
    }
    case S_MERGE_INDEXING:
    swap:
        if (s_merge_swap (self, b, err, errlen) != 0) {
            self->recovered = false;
            return -1;
        }
        *did = EF_SEAL_MERGED;
        self->stats.seconds = took;
        char names[EF_SEAL_MAX_MERGE * 12];
        s_merged_names (b, names, sizeof names);
        snprintf (detail, detlen,
                  "segments %s (%" PRId64 " rows) merged into %d in %.1f s",
                  names, b->merge_rows, b->busy_id, took);
        return 0;
    case S_IDLE:
        break;
    }
    return 0;
}

/* The rows whose HNSW graph fits one build's memory (build_memory), so
   that a merge is not several times slower for building on disk; 0
   (no limit) for ivfflat. pgvector keeps each row's vector, its
   layer-0 neighbour list (2 m entries of 16 bytes) and ~128 bytes of
   element; taken as vector(dim) (4 bytes a dimension), which leaves
   room to spare for halfvec. */
static int64_t
s_graph_rows (const ef_sealer_t *self)
{
    if (self->ix.method != EF_INDEX_HNSW)
        return 0;
    int64_t row = 4 * (int64_t) self->opts.dim + 8 + 32 * self->ix.m + 128;
    return self->opts.build_memory / row;
}

/* Whether a running merge has taken segment id. */
static bool
s_merging (const ef_sealer_t *self, int id)
{
    for (int i = 0; i < self->n_builders; i++) {
        const s_builder_t *b = &self->builders[i];
        if (b->busy == S_MERGE_COPYING || b->busy == S_MERGE_INDEXING)
            for (int k = 0; k < b->n_merged; k++)
                if (b->merged[k] == id)
                    return true;
    }
    return false;
}

int
ef_sealer_step (ef_sealer_t *self, ef_seal_step_t *did, char *detail,
                size_t detlen, char *err, size_t errlen)
{
    *did = EF_SEAL_NOTHING;
    if (detlen)
        detail[0] = '\0';
    if (s_lead (self, err, errlen) != 0)
        return -1;
    if (!self->leader)
        return 0;
    /* what a running build or merge makes would look left behind */
    if (!self->recovered && !s_any_busy (self)
        && s_recover (self, err, errlen) != 0)
        return -1;
    PGresult *res = s_segments (self, err, errlen);
    if (!res)
        return -1;
    int growing = -1, next = 1, sealed = 0;
    int64_t rows = 0; /* the growing segment's, as the writers tallied */
    int64_t unsealed_rows = 0; /* of segments waiting for their index */
    int building[S_MAX_BUILDING], n_building = 0;
    int retiring = 0; /* sealed segments the running merges take away */
    for (int i = 0; i < self->n_builders; i++) {
        const s_builder_t *b = &self->builders[i];
        if (b->busy != S_IDLE && b->busy_id >= next)
            next = b->busy_id + 1; /* a merge's new table */
        if (b->busy == S_MERGE_COPYING || b->busy == S_MERGE_INDEXING)
            retiring += b->n_merged - 1;
    }
    /* sealed segments no running merge has taken, to pick from */
    ef_seal_segment_t free_seg[S_MAX_BUILDING];
    int n_free = 0;
    for (int i = 0; i < PQntuples (res); i++) {
        int id = atoi (PQgetvalue (res, i, 0));
        const char *state = PQgetvalue (res, i, 1);
        int64_t n = strtoll (PQgetvalue (res, i, 2), NULL, 10);
        if (id >= next)
            next = id + 1;
        if (strcmp (state, "building") == 0)
            unsealed_rows += n;
        if (strcmp (state, "growing") == 0) {
            growing = id;
            rows = n;
        }
        else if (strcmp (state, "building") == 0) {
            bool taken = false;
            for (int j = 0; j < self->n_builders; j++)
                taken |= self->builders[j].busy == S_BUILDING
                         && self->builders[j].busy_id == id;
            if (!taken && n_building < S_MAX_BUILDING)
                building[n_building++] = id;
        }
        else if (strcmp (state, "sealed") == 0) {
            sealed++;
            if (!s_merging (self, id) && n_free < S_MAX_BUILDING)
                free_seg[n_free++] = (ef_seal_segment_t){id, n};
        }
    }
    PQclear (res);
    if (growing < 0) {
        snprintf (err, errlen, "schema \"%s\" has no growing segment",
                  self->schema);
        return -1;
    }
    self->stats.sealed = sealed;
    self->stats.waiting = unsealed_rows;

    /* 1. the growing segment: its count (writers hold back on the sum
          of the unsealed ones); rotated when full or idle with rows */
    self->stats.waiting += rows;
    int64_t now = ef_clock_mono_us ();
    /* Writers held back by the backlog bring no rows, and that is
       neither idleness nor a pause: sealed then, the growing segment
       became one more small segment (as few as 700 rows in a
       full-size load), each one more index scan for every query. */
    bool held = self->opts.max_unindexed_rows > 0
                && self->stats.waiting > self->opts.max_unindexed_rows;
    if (held)
        self->held_at_us = now;
    if (growing != self->growing || rows != self->growing_rows || held) {
        self->growing = growing;
        self->growing_rows = rows;
        self->growing_since_us = now;
    }
    char sql[1024];
    snprintf (sql, sizeof sql,
              "UPDATE %s.segment SET rows = %" PRId64
              " WHERE id = %d AND rows <> %" PRId64,
              self->quoted, rows, growing, rows);
    if (ef_pg_script (self->conn, sql, "counting the growing segment", err,
                      errlen)
        != 0)
        return -1;
    /* Sealed when full, when idle with rows (a trickle's rows wait
       seal_idle, so it does not make a segment of every few rows), or
       when a load has paused with a tenth of seal_rows or more while a
       builder has nothing to do: every query scans the growing segment
       exactly, and the idle builder indexes it for nothing. That
       builder need not wait for the others: at the end of a load they
       are still building its last full segments. */
    int64_t still_us = now - self->growing_since_us;
    bool idle = rows > 0 && still_us >= self->opts.seal_idle_ms * 1000;
    bool paused = rows >= self->opts.seal_rows / 10 && still_us >= S_PAUSE_US
                  && n_building == 0 && s_any_idle (self);
    if (rows >= self->opts.seal_rows || idle || paused) {
        if (s_rotate (self, growing, next, rows, err, errlen) != 0)
            return -1;
        *did = EF_SEAL_ROTATED;
        snprintf (detail, detlen,
                  "segment %d sealed at %" PRId64 " rows (%s); %d grows",
                  growing, rows,
                  rows >= self->opts.seal_rows ? "full"
                  : idle                       ? "idle"
                                               : "the load paused",
                  next);
        return 0;
    }

    /* 2. indexes to build, 3. merges: each on an idle builder, as
          postgres/sealplan.h decides. A load keeps the builders behind
          while a sealed segment awaits its index, the growing one is
          half full and still filling (a segment that waits for
          seal_idle after the load does not hold the merges back), or
          the backlog held writers back a moment ago. That last: when
          a build ends the held writers resume, and until the growing
          segment fills again nothing awaits an index; merges started
          then took both builders for a minute while the next full
          segment waited, and with it the writers (measured in a
          full-size load: 170 s instead of ~105 s). */
    bool filling = now - self->growing_since_us < S_FILLING_US;
    bool held_lately =
        self->held_at_us > 0 && now - self->held_at_us < S_PAUSE_US;
    ef_seal_view_t view = {.awaiting = n_building,
                           .sealed = sealed,
                           .retiring = retiring,
                           .loading =
                               unsealed_rows > 0 || held_lately
                               || (filling && rows >= self->opts.seal_rows / 2),
                           .max_segments = self->opts.max_segments,
                           .merge = free_seg,
                           .n_merge = n_free};
    if ((n_building > 0 || sealed - retiring > self->opts.max_segments)
        && s_recorded_index (self, &self->ix, err, errlen) != 0)
        return -1;
    view.max_merge_rows = s_graph_rows (self);
    for (int i = 0; i < self->n_builders; i++)
        view.idle += self->builders[i].busy == S_IDLE;
    view.keep_idle = rows > 0 && self->n_builders > 1;
    int started = 0;
    for (int i = 0; i < self->n_builders; i++) {
        s_builder_t *b = &self->builders[i];
        if (b->busy != S_IDLE)
            continue;
        ef_seal_segment_t set[EF_SEAL_MAX_MERGE];
        int n_set;
        ef_seal_work_t work = ef_seal_next (&view, set, &n_set);
        if (work == EF_SEAL_IDLE)
            break;
        if (PQstatus (b->conn) != CONNECTION_OK)
            PQreset (b->conn);
        if (work == EF_SEAL_BUILD) {
            int id = building[--n_building];
            if (self->ix.method == EF_INDEX_NONE) {
                /* the index was applied away: sealed as it is */
                snprintf (sql, sizeof sql,
                          "UPDATE %1$s.segment SET state = 'sealed',"
                          " sealed_at = now() WHERE id = %2$d;"
                          "DELETE FROM %1$s.segment_rows WHERE segment = %2$d",
                          self->quoted, id);
                if (ef_pg_script (self->conn, sql, "sealing", err, errlen) != 0)
                    return -1;
                *did = EF_SEAL_BUILT;
                snprintf (detail, detlen,
                          "segment %d sealed (index.method none)", id);
                return 0;
            }
            if (s_build_start (self, b, id, err, errlen) != 0)
                return -1;
            snprintf (detail, detlen, "indexing segment %d", id);
        }
        else {
            if (s_merge_start (self, b, set, n_set, next, err, errlen) != 0) {
                self->recovered = false;
                return -1;
            }
            char names[EF_SEAL_MAX_MERGE * 12];
            s_merged_names (b, names, sizeof names);
            snprintf (detail, detlen, "merging segments %s into %d", names,
                      next);
            next++;
        }
        started++;
    }
    if (started)
        *did = EF_SEAL_STARTED;
    return 0;
}
