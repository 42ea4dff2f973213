/*  baselines.c — the programs the bench compares embedflow with (see
    baselines.h). Each connection runs on its own thread and writes its
    own contiguous range of documents, so connections never wait for one
    another's row locks, as embedflow's writers (routed by document)
    don't either.
*/
#include "bench/baselines.h"

#include "embedflow/actor.h"
#include "embedflow/metrics.h"
#include "postgres/copyenc.h"
#include "postgres/pg.h"
#include "postgres/pgwrite.h"
#include "rows/uuid7.h"
#include "rows/validate.h"

#include "embedflow/v1/embedding.pb-c.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_CONNECTIONS 16

const char *
ef_baseline_name (ef_baseline_t kind)
{
    return kind == EF_BASELINE_COPY     ? "copy"
           : kind == EF_BASELINE_STAGED ? "staged"
                                        : "row";
}

/* --- rows ---------------------------------------------------------------- */

typedef ef_copybuf_t s_buf_t; /* COPY data or a vector's text */

/* Decoded rows of one generator chunk, as the pipeline would store them. */
typedef struct {
    Embedflow__V1__EmbeddingChunk *chunk; /* owns the decoded items */
    Embedflow__V1__Row *rows;             /* point into chunk */
    uint8_t (*ids)[16];                   /* minted ids */
    uint8_t (*hashes)[16];                /* content hashes */
    char **json;                          /* metadata as JSON */
    size_t n;                             /* rows */
    int64_t decoded_us;                   /* wall clock when ready */
    s_buf_t copy[2]; /* COPY data made ahead: chunk and embedding, or the
                        staging table's in copy[0] */
} s_batch_t;

/* Frees what s_batch_load made. */
static void
s_batch_free (s_batch_t *b)
{
    for (size_t i = 0; b->json && i < b->n; i++)
        free (b->json[i]);
    free (b->json);
    free (b->rows);
    free (b->ids);
    free (b->hashes);
    ef_copybuf_free (&b->copy[0]);
    ef_copybuf_free (&b->copy[1]);
    if (b->chunk)
        embedflow__v1__embedding_chunk__free_unpacked (b->chunk, NULL);
    memset (b, 0, sizeof *b);
}

/* Generates rows [first, first + count) with the load generator's
   encoder and decodes them. Returns 0, -1 when out of memory. */
static int
s_batch_load (s_batch_t *b, const ef_loadgen_opts_t *gen, uint64_t first,
              int count)
{
    memset (b, 0, sizeof *b);
    size_t size;
    uint8_t *bytes = ef_loadgen_encode_chunk (gen, first, count, 0, &size);
    if (!bytes)
        return -1;
    b->chunk = embedflow__v1__embedding_chunk__unpack (NULL, size, bytes);
    free (bytes);
    if (!b->chunk)
        return -1;
    b->n = b->chunk->n_items;
    b->rows = calloc (b->n ? b->n : 1, sizeof *b->rows);
    b->ids = calloc (b->n ? b->n : 1, sizeof *b->ids);
    b->hashes = calloc (b->n ? b->n : 1, sizeof *b->hashes);
    b->json = calloc (b->n ? b->n : 1, sizeof *b->json);
    if (!b->rows || !b->ids || !b->hashes || !b->json) {
        s_batch_free (b);
        return -1;
    }
    for (size_t i = 0; i < b->n; i++) {
        const Embedflow__V1__Embedding *e = b->chunk->items[i];
        Embedflow__V1__Row *r = &b->rows[i];
        embedflow__v1__row__init (r);
        size_t len;
        b->json[i] = ef_metadata_json (e->metadata, e->n_metadata, &len);
        if (!b->json[i]) {
            s_batch_free (b);
            return -1;
        }
        ef_uuid7_generate (b->ids[i]);
        r->id.data = b->ids[i];
        r->id.len = 16;
        r->document_id = e->document_id;
        r->chunk_index = e->chunk_index;
        r->content = e->content;
        r->metadata_json = b->json[i];
        r->vector = e->vector;
        r->n_vector = e->n_vector;
        r->model = e->model;
        r->source = (char *) (gen->source ? gen->source : "");
        ef_pgwrite_hash (r, b->hashes[i]);
    }
    b->decoded_us = ef_clock_wall_us ();
    return 0;
}

/* --- one connection ------------------------------------------------------ */

typedef struct {
    ef_baseline_t kind;             /* what to run */
    ef_vector_type_t type;          /* the vector column's, from the catalog */
    char column_type[128];          /* its SQL name, e.g. vector(768) */
    bool keyed;                     /* embedding has document_id (citus) */
    const ef_baseline_opts_t *opts; /* shared */
    uint64_t first, count;          /* this connection's rows */
    PGconn *conn;                   /* owned */
    char *schema;                   /* quoted */
    ef_histogram_t *latency;        /* may be NULL */
    atomic_int *failed;             /* shared: stop everyone */
    uint64_t written;               /* rows committed */
    char error[512];                /* why it failed */
    pthread_t thread;               /* its thread */
    bool started;                   /* thread created */
} s_conn_t;

/* Runs sql, expecting status. Returns 0, or -1 with c->error set. */
static int
s_exec (s_conn_t *c, const char *sql, ExecStatusType status, const char *what)
{
    PGresult *res = PQexec (c->conn, sql);
    int rc = res && PQresultStatus (res) == status ? 0 : -1;
    if (rc != 0) {
        char msg[400];
        ef_pg_error (c->conn, res, NULL, msg, sizeof msg);
        snprintf (c->error, sizeof c->error, "%s: %s", what, msg);
    }
    PQclear (res);
    return rc;
}

/* Encodes the COPY data of b for kind (nothing for row at a time), the
   vector as type stores it. Returns 0, -1 when out of memory. */
static int
s_batch_encode (s_batch_t *b, ef_baseline_t kind, ef_vector_type_t type,
                bool keyed)
{
    if (kind == EF_BASELINE_ROW)
        return 0;
    for (int t = 0; t < (kind == EF_BASELINE_COPY ? 2 : 1); t++) {
        s_buf_t *buf = &b->copy[t];
        ef_copy_table_t table = kind == EF_BASELINE_STAGED ? EF_COPY_STAGE
                                : t == 0                   ? EF_COPY_CHUNK
                                : keyed ? EF_COPY_EMBEDDING_KEYED
                                        : EF_COPY_EMBEDDING;
        ef_copybuf_begin (buf);
        for (size_t i = 0; i < b->n; i++)
            ef_copybuf_row (buf, table, type, &b->rows[i], b->hashes[i]);
        ef_copybuf_end (buf);
        if (buf->oom)
            return -1;
    }
    return 0;
}

/* Sends data (made by s_batch_encode) with one COPY statement. */
static int
s_copy (s_conn_t *c, const char *sql, const s_buf_t *data)
{
    if (s_exec (c, sql, PGRES_COPY_IN, "COPY") != 0)
        return -1;
    if (PQputCopyData (c->conn, data->data, (int) data->len) != 1
        || PQputCopyEnd (c->conn, NULL) != 1) {
        snprintf (c->error, sizeof c->error, "COPY: %s",
                  PQerrorMessage (c->conn));
        return -1;
    }
    PGresult *res = PQgetResult (c->conn);
    int rc = res && PQresultStatus (res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc != 0) {
        char msg[400];
        ef_pg_error (c->conn, res, NULL, msg, sizeof msg);
        snprintf (c->error, sizeof c->error, "COPY: %s", msg);
    }
    PQclear (res);
    while ((res = PQgetResult (c->conn)))
        PQclear (res);
    return rc;
}

/* Statement texts of a connection, made once. */
typedef struct {
    char *copy_chunk;     /* (a) */
    char *copy_embedding; /* (a) */
    char *copy_stage;     /* (b) */
    char *upsert;         /* (b) */
    char *insert_chunk;   /* (c) */
    char *insert_vector;  /* (c) */
} s_sql_t;

static void
s_sql_free (s_sql_t *q)
{
    free (q->copy_chunk);
    free (q->copy_embedding);
    free (q->copy_stage);
    free (q->upsert);
    free (q->insert_chunk);
    free (q->insert_vector);
}

/* Builds every statement for schema S, vectors of dim; keyed: embedding
   has document_id, which leads its key (distribution citus). Returns 0,
   -1 when out of memory. */
static int
s_sql_make (s_sql_t *q, const char *s, int dim, bool keyed)
{
    memset (q, 0, sizeof *q);
    int rc = 0;
    const char *key = keyed ? "document_id, " : "";
    rc |= asprintf (&q->copy_chunk,
                    "COPY %s.chunk (id, source, document_id, chunk_index,"
                    " content, metadata, model, content_hash)"
                    " FROM STDIN (FORMAT binary)",
                    s)
          < 0;
    rc |= asprintf (&q->copy_embedding,
                    "COPY %s.embedding (%sid, model, dim, vector)"
                    " FROM STDIN (FORMAT binary)",
                    s, key)
          < 0;
    rc |= asprintf (&q->copy_stage, "COPY pg_temp.bench_stage FROM STDIN"
                                    " (FORMAT binary)")
          < 0;
    /* updated_at = excluded.updated_at: the column's default, now (),
       as inserted; Citus refuses a volatile function in DO UPDATE SET */
    rc |= asprintf (&q->upsert,
                    "WITH c AS ("
                    " INSERT INTO %s.chunk AS t (id, source, document_id,"
                    "  chunk_index, content, metadata, model, content_hash)"
                    " SELECT id, source, document_id, chunk_index, content,"
                    "  metadata, model, content_hash FROM pg_temp.bench_stage"
                    " ON CONFLICT (document_id, chunk_index) DO UPDATE SET"
                    "  source = excluded.source, content = excluded.content,"
                    "  metadata = excluded.metadata, model = excluded.model,"
                    "  content_hash = excluded.content_hash, updated_at = "
                    "excluded.updated_at"
                    " RETURNING t.id, t.document_id, t.chunk_index)"
                    " INSERT INTO %s.embedding AS e (%sid, model, dim, vector)"
                    " SELECT %sc.id, s.model, %d, s.vector"
                    " FROM c JOIN pg_temp.bench_stage s"
                    "  USING (document_id, chunk_index)"
                    " ON CONFLICT (%sid) DO UPDATE SET model = excluded.model,"
                    "  dim = excluded.dim, vector = excluded.vector,"
                    "  updated_at = excluded.updated_at",
                    s, s, key, keyed ? "c.document_id, " : "", dim, key)
          < 0;
    rc |= asprintf (&q->insert_chunk,
                    "INSERT INTO %s.chunk AS t (id, source, document_id,"
                    " chunk_index, content, metadata, model, content_hash)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (document_id, chunk_index) DO UPDATE SET"
                    " source = excluded.source, content = excluded.content,"
                    " metadata = excluded.metadata, model = excluded.model,"
                    " content_hash = excluded.content_hash,"
                    " updated_at = excluded.updated_at RETURNING t.id",
                    s)
          < 0;
    rc |= asprintf (&q->insert_vector,
                    "INSERT INTO %s.embedding (id, model, dim, vector%s)"
                    " VALUES ($1, $2, $3, $4%s)"
                    " ON CONFLICT (%sid) DO UPDATE SET model = excluded.model,"
                    " dim = excluded.dim, vector = excluded.vector,"
                    " updated_at = excluded.updated_at",
                    s, keyed ? ", document_id" : "", keyed ? ", $5" : "", key)
          < 0;
    return rc ? -1 : 0;
}

/* Writes one batch the way kind does. Returns 0 or -1. */
static int
s_write (s_conn_t *c, const s_sql_t *q, const s_batch_t *b, s_buf_t *text)
{
    if (c->kind == EF_BASELINE_COPY)
        return s_exec (c, "BEGIN", PGRES_COMMAND_OK, "BEGIN") != 0
                       || s_copy (c, q->copy_chunk, &b->copy[0]) != 0
                       || s_copy (c, q->copy_embedding, &b->copy[1]) != 0
                       || s_exec (c, "COMMIT", PGRES_COMMAND_OK, "COMMIT") != 0
                   ? -1
                   : 0;
    if (c->kind == EF_BASELINE_STAGED)
        return s_exec (c, "BEGIN", PGRES_COMMAND_OK, "BEGIN") != 0
                       || s_copy (c, q->copy_stage, &b->copy[0]) != 0
                       || s_exec (c, q->upsert, PGRES_COMMAND_OK, "upsert") != 0
                       || s_exec (c, "COMMIT", PGRES_COMMAND_OK, "COMMIT") != 0
                   ? -1
                   : 0;
    /* row at a time: parameters as text, each statement its own commit */
    for (size_t i = 0; i < b->n; i++) {
        const Embedflow__V1__Row *r = &b->rows[i];
        char id[37], index[16], hash[35], dim[16];
        ef_uuid_format (r->id.data, id);
        snprintf (index, sizeof index, "%" PRIu32, r->chunk_index);
        strcpy (hash, "\\x");
        for (int k = 0; k < 16; k++)
            snprintf (hash + 2 + 2 * k, 3, "%02x", b->hashes[i][k]);
        const char *cp[8] = {id,       r->source,  r->document_id,
                             index,    r->content, r->metadata_json,
                             r->model, hash};
        PGresult *res =
            PQexecPrepared (c->conn, "bench_chunk", 8, cp, NULL, NULL, 0);
        if (!res || PQresultStatus (res) != PGRES_TUPLES_OK) {
            char msg[400];
            ef_pg_error (c->conn, res, NULL, msg, sizeof msg);
            snprintf (c->error, sizeof c->error, "INSERT chunk: %s", msg);
            PQclear (res);
            return -1;
        }
        snprintf (id, sizeof id, "%s", PQgetvalue (res, 0, 0));
        PQclear (res);
        /* the column type's text form: pgvector's [..], an array's {..} */
        bool array = c->type == EF_VECTOR_REAL;
        text->len = 0;
        ef_copybuf_put (text, array ? "{" : "[", 1);
        for (size_t k = 0; k < r->n_vector; k++) {
            char f[32];
            int n = snprintf (f, sizeof f, "%s%.9g", k ? "," : "",
                              (double) r->vector[k]);
            ef_copybuf_put (text, f, (size_t) n);
        }
        ef_copybuf_put (text, array ? "}" : "]", 2);
        if (text->oom) {
            snprintf (c->error, sizeof c->error, "out of memory");
            return -1;
        }
        snprintf (dim, sizeof dim, "%zu", r->n_vector);
        const char *vp[5] = {id, r->model, dim, text->data, r->document_id};
        res = PQexecPrepared (c->conn, "bench_vector", c->keyed ? 5 : 4, vp,
                              NULL, NULL, 0);
        if (!res || PQresultStatus (res) != PGRES_COMMAND_OK) {
            char msg[400];
            ef_pg_error (c->conn, res, NULL, msg, sizeof msg);
            snprintf (c->error, sizeof c->error, "INSERT embedding: %s", msg);
            PQclear (res);
            return -1;
        }
        PQclear (res);
    }
    return 0;
}

/* Reads the type of the schema's vector column, which the COPY data
   must match. Returns 0, or -1 with c->error set (no such table). */
static int
s_column_type (s_conn_t *c)
{
    char table[300];
    snprintf (table, sizeof table, "%s.embedding", c->schema);
    const char *params[] = {table};
    PGresult *res = PQexecParams (
        c->conn,
        "SELECT t.typname, format_type (a.atttypid, a.atttypmod),"
        "  EXISTS (SELECT 1 FROM pg_attribute k WHERE k.attrelid = a.attrelid"
        "    AND k.attname = 'document_id' AND NOT k.attisdropped)"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE a.attrelid = $1::regclass AND a.attname = 'vector'",
        1, NULL, params, NULL, NULL, 0);
    int rc = -1;
    if (res && PQresultStatus (res) == PGRES_TUPLES_OK
        && PQntuples (res) == 1) {
        const char *typname = PQgetvalue (res, 0, 0);
        c->type = strcmp (typname, "vector") == 0    ? EF_VECTOR_VECTOR
                  : strcmp (typname, "halfvec") == 0 ? EF_VECTOR_HALFVEC
                                                     : EF_VECTOR_REAL;
        snprintf (c->column_type, sizeof c->column_type, "%s",
                  PQgetvalue (res, 0, 1));
        c->keyed = strcmp (PQgetvalue (res, 0, 2), "t") == 0;
        rc = 0;
    }
    else {
        char msg[400];
        ef_pg_error (c->conn, res, NULL, msg, sizeof msg);
        snprintf (c->error, sizeof c->error, "reading the vector column: %s",
                  PQresultStatus (res) == PGRES_TUPLES_OK
                      ? "embedding has no column \"vector\""
                      : msg);
    }
    PQclear (res);
    return rc;
}

/* Prepares the session for kind. Returns 0 or -1. */
static int
s_session (s_conn_t *c, const s_sql_t *q)
{
    /* the same session setting embedflow's writers use: JIT compiling an
       upsert costs more than running it */
    if (s_exec (c, "SET jit = off", PGRES_COMMAND_OK, "SET") != 0)
        return -1;
    if (c->kind == EF_BASELINE_STAGED) {
        char sql[512];
        snprintf (sql, sizeof sql,
                  "CREATE TEMP TABLE bench_stage (id uuid, source text,"
                  " document_id text, chunk_index bigint, content text,"
                  " metadata jsonb, model text, content_hash bytea,"
                  " vector %s) ON COMMIT DELETE ROWS",
                  c->column_type);
        return s_exec (c, sql, PGRES_COMMAND_OK, "staging table");
    }
    if (c->kind == EF_BASELINE_ROW) {
        PGresult *r1 =
            PQprepare (c->conn, "bench_chunk", q->insert_chunk, 0, NULL);
        PGresult *r2 =
            PQprepare (c->conn, "bench_vector", q->insert_vector, 0, NULL);
        int rc = r1 && r2 && PQresultStatus (r1) == PGRES_COMMAND_OK
                         && PQresultStatus (r2) == PGRES_COMMAND_OK
                     ? 0
                     : -1;
        if (rc != 0)
            snprintf (c->error, sizeof c->error, "prepare: %s",
                      PQerrorMessage (c->conn));
        PQclear (r1);
        PQclear (r2);
        return rc;
    }
    return 0;
}

/* Batches made ahead of the writer: while one is in the database the
   next is generated and decoded, so the client's work overlaps the
   server's as it does in the pipeline. */
typedef struct {
    pthread_mutex_t lock; /* guards the rest */
    pthread_cond_t cond;  /* any change */
    s_batch_t slot[2];    /* ready batches */
    bool full[2];         /* slot holds a batch */
    int head;             /* next slot to write */
    int tail;             /* next slot to fill */
    bool done;            /* the producer made its last batch */
    bool quit;            /* the writer stopped: make no more */
    bool oom;             /* the producer ran out of memory */
    s_conn_t *conn;       /* whose rows */
} s_ahead_t;

/* The producer thread: loads the connection's batches in order. */
static void *
s_ahead_run (void *arg)
{
    s_ahead_t *q = arg;
    s_conn_t *c = q->conn;
    int step = c->kind == EF_BASELINE_ROW ? 1 : c->opts->batch_rows;
    for (uint64_t r = 0; r < c->count; r += (uint64_t) step) {
        int n = c->count - r < (uint64_t) step ? (int) (c->count - r) : step;
        s_batch_t b;
        bool ok = s_batch_load (&b, c->opts->gen, c->first + r, n) == 0;
        if (ok && s_batch_encode (&b, c->kind, c->type, c->keyed) != 0) {
            s_batch_free (&b);
            ok = false;
        }
        pthread_mutex_lock (&q->lock);
        while (ok && q->full[q->tail] && !q->quit)
            pthread_cond_wait (&q->cond, &q->lock);
        bool stop = q->quit || !ok;
        if (!ok)
            q->oom = true;
        else if (!q->quit) {
            q->slot[q->tail] = b;
            q->full[q->tail] = true;
            q->tail ^= 1;
        }
        pthread_cond_broadcast (&q->cond);
        pthread_mutex_unlock (&q->lock);
        if (ok && stop)
            s_batch_free (&b);
        if (stop)
            break;
    }
    pthread_mutex_lock (&q->lock);
    q->done = true;
    pthread_cond_broadcast (&q->cond);
    pthread_mutex_unlock (&q->lock);
    return NULL;
}

/* Takes the next batch into *b. Returns 1, 0 when there are no more. */
static int
s_ahead_next (s_ahead_t *q, s_batch_t *b)
{
    pthread_mutex_lock (&q->lock);
    while (!q->full[q->head] && !q->done)
        pthread_cond_wait (&q->cond, &q->lock);
    int got = q->full[q->head];
    if (got) {
        *b = q->slot[q->head];
        q->full[q->head] = false;
        q->head ^= 1;
        pthread_cond_broadcast (&q->cond);
    }
    pthread_mutex_unlock (&q->lock);
    return got;
}

/* One connection's thread: its rows in batches. */
static void *
s_conn_run (void *arg)
{
    s_conn_t *c = arg;
    const ef_baseline_opts_t *o = c->opts;
    s_sql_t q;
    s_buf_t text = {0};
    if (s_sql_make (&q, c->schema, (int) o->gen->dim, c->keyed) != 0) {
        snprintf (c->error, sizeof c->error, "out of memory");
        atomic_store (c->failed, 1);
        s_sql_free (&q);
        return NULL;
    }
    int rc = s_session (c, &q);
    s_ahead_t ahead;
    memset (&ahead, 0, sizeof ahead);
    pthread_mutex_init (&ahead.lock, NULL);
    pthread_cond_init (&ahead.cond, NULL);
    ahead.conn = c;
    pthread_t producer;
    bool started =
        rc == 0 && pthread_create (&producer, NULL, s_ahead_run, &ahead) == 0;
    if (rc == 0 && !started) {
        snprintf (c->error, sizeof c->error, "cannot start a thread");
        rc = -1;
    }
    s_batch_t b;
    while (rc == 0 && s_ahead_next (&ahead, &b)) {
        if (atomic_load (c->failed) || (o->stop && atomic_load (o->stop))) {
            s_batch_free (&b);
            break;
        }
        rc = s_write (c, &q, &b, &text);
        if (rc == 0) {
            double secs = (double) (ef_clock_wall_us () - b.decoded_us) / 1e6;
            for (size_t i = 0; i < b.n; i++)
                ef_histogram_observe (c->latency, secs);
            c->written += b.n;
            if (o->progress)
                o->progress (o->progress_arg, b.n);
        }
        s_batch_free (&b);
    }
    if (started) {
        pthread_mutex_lock (&ahead.lock);
        ahead.quit = true;
        pthread_cond_broadcast (&ahead.cond);
        pthread_mutex_unlock (&ahead.lock);
        pthread_join (producer, NULL);
        for (int i = 0; i < 2; i++)
            if (ahead.full[i])
                s_batch_free (&ahead.slot[i]);
        if (ahead.oom && rc == 0) {
            snprintf (c->error, sizeof c->error, "out of memory");
            rc = -1;
        }
    }
    pthread_cond_destroy (&ahead.cond);
    pthread_mutex_destroy (&ahead.lock);
    if (rc != 0)
        atomic_store (c->failed, 1);
    free (text.data);
    s_sql_free (&q);
    return NULL;
}

int
ef_baseline_run (ef_baseline_t kind, const ef_baseline_opts_t *opts,
                 void *latency, void (*before_close) (void *arg),
                 void *before_close_arg, ef_baseline_result_t *res)
{
    memset (res, 0, sizeof *res);
    int n = opts->connections;
    if (n < 1 || n > S_MAX_CONNECTIONS || opts->batch_rows < 1) {
        snprintf (res->error, sizeof res->error,
                  "connections must be 1..%d and batch rows positive",
                  S_MAX_CONNECTIONS);
        return -1;
    }
    s_conn_t conns[S_MAX_CONNECTIONS];
    memset (conns, 0, sizeof conns);
    atomic_int failed = 0;
    /* whole documents per connection, so no two connections touch one
       key */
    int rpd =
        opts->gen->rows_per_document > 0 ? opts->gen->rows_per_document : 8;
    uint64_t docs = (opts->rows + (uint64_t) rpd - 1) / (uint64_t) rpd;
    uint64_t at = opts->first, end = opts->first + opts->rows;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        s_conn_t *c = &conns[i];
        c->kind = kind;
        c->opts = opts;
        c->latency = latency;
        c->failed = &failed;
        uint64_t take =
            (docs / (uint64_t) n + ((uint64_t) i < docs % (uint64_t) n ? 1 : 0))
            * (uint64_t) rpd;
        c->first = at;
        c->count = at + take > end ? end - at : take;
        at += c->count;
        char err[512];
        c->conn =
            ef_pg_connect (opts->conninfo, "embedflow bench", err, sizeof err);
        if (!c->conn) {
            snprintf (res->error, sizeof res->error, "%s", err);
            rc = -1;
            break;
        }
        c->schema = ef_pg_ident (c->conn, opts->schema);
        if (!c->schema) {
            snprintf (res->error, sizeof res->error, "bad schema name");
            rc = -1;
            break;
        }
        if (s_column_type (c) != 0) {
            snprintf (res->error, sizeof res->error, "%s", c->error);
            rc = -1;
            break;
        }
        if (res->n_backend_pids < 16)
            res->backend_pids[res->n_backend_pids++] = PQbackendPID (c->conn);
    }
    int64_t start = ef_clock_mono_us ();
    for (int i = 0; rc == 0 && i < n; i++) {
        if (pthread_create (&conns[i].thread, NULL, s_conn_run, &conns[i])
            != 0) {
            atomic_store (&failed, 1);
            snprintf (res->error, sizeof res->error, "cannot start a thread");
            rc = -1;
            break;
        }
        conns[i].started = true;
    }
    for (int i = 0; i < n; i++)
        if (conns[i].started)
            pthread_join (conns[i].thread, NULL);
    res->seconds = (double) (ef_clock_mono_us () - start) / 1e6;
    if (before_close)
        before_close (before_close_arg);
    for (int i = 0; i < n; i++) {
        res->rows += conns[i].written;
        if (conns[i].error[0] && !res->error[0])
            snprintf (res->error, sizeof res->error, "connection %d: %.480s", i,
                      conns[i].error); /* cut, not a truncation warning */
        free (conns[i].schema);
        PQfinish (conns[i].conn);
    }
    if (res->error[0])
        rc = -1;
    return rc;
}
