/*  test_pgwrite.c — pg.c, schema.c and pgwrite.c against a real PostgreSQL
    (db_* tests) and on their own (the rest). */
#include "ef_test.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "postgres/pg.h"
#include "postgres/pgwrite.h"
#include "postgres/schema.h"

/* --- helpers ---------------------------------------------------------- */

/* A heap row with deterministic content; free with s_row_free. */
static Embedflow__V1__Row *
s_row_new (int doc, uint32_t chunk, int dim, float seed)
{
    Embedflow__V1__Row *r = calloc (1, sizeof *r);
    embedflow__v1__row__init (r);
    r->id.len = 16;
    r->id.data = calloc (1, 16);
    /* a version-7-looking id unique per (doc, chunk) */
    r->id.data[0] = 0x01;
    memcpy (r->id.data + 2, &doc, sizeof doc);
    memcpy (r->id.data + 8, &chunk, sizeof chunk);
    r->id.data[6] = 0x70;
    r->id.data[8] |= 0x80;
    r->document_id = malloc (32);
    snprintf (r->document_id, 32, "doc-%d", doc);
    r->chunk_index = chunk;
    r->content = strdup ("some text of the chunk, ümlauts included");
    r->metadata_json = strdup ("{\"lang\":\"de\",\"page\":\"3\"}");
    r->model = strdup ("test-model");
    r->source = strdup ("unit");
    r->n_vector = (size_t) dim;
    r->vector = malloc (sizeof (float) * (size_t) dim);
    for (int i = 0; i < dim; i++)
        r->vector[i] = seed + (float) i / (float) dim;
    r->stream_id = 1;
    r->job_id = strdup ("job");
    r->covers = 1;
    return r;
}

static void
s_row_free (Embedflow__V1__Row *r)
{
    if (!r)
        return;
    free (r->id.data);
    free (r->document_id);
    free (r->content);
    free (r->metadata_json);
    free (r->model);
    free (r->source);
    free (r->vector);
    free (r->job_id);
    free (r);
}

static void
s_rows_free (Embedflow__V1__Row **rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s_row_free (rows[i]);
    free (rows);
}

static PGconn *
s_connect (void)
{
    char err[512];
    PGconn *c = ef_pg_connect (ef_test_conninfo (), "ef-unit", err, sizeof err);
    if (!c)
        fprintf (stderr, "%s\n", err);
    else
        PQclear (PQexec (c, "SET client_min_messages = warning"));
    return c;
}

/* Runs sql, returns the first value as a long (or -1 on error). */
static long
s_scalar (PGconn *c, const char *fmt, const char *schema)
{
    char sql[1024];
    snprintf (sql, sizeof sql, fmt, schema);
    PGresult *res = PQexec (c, sql);
    long v = -1;
    if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1)
        v = atol (PQgetvalue (res, 0, 0));
    else if (PQresultStatus (res) != PGRES_TUPLES_OK)
        fprintf (stderr, "%s: %s", sql, PQerrorMessage (c));
    PQclear (res);
    return v;
}

static bool
s_exec_ok (PGconn *c, const char *fmt, const char *schema)
{
    char sql[1024];
    snprintf (sql, sizeof sql, fmt, schema);
    PGresult *res = PQexec (c, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK
              || PQresultStatus (res) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf (stderr, "%s: %s", sql, PQerrorMessage (c));
    PQclear (res);
    return ok;
}

static void
s_drop_schema (PGconn *c, const char *schema)
{
    PQclear (PQexec (c, "SET client_min_messages = warning"));
    s_exec_ok (c, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", schema);
}

/* ef_pgwrite_batch, saying why when it fails (the tests check what). */
static ef_write_status_t
s_write (ef_pgwrite_t *w, Embedflow__V1__Row *const *rows, size_t n,
         ef_write_report_t *rep)
{
    ef_write_status_t st = ef_pgwrite_batch (w, rows, n, rep);
    if (st != EF_WRITE_OK && ef_test_verbose)
        fprintf (stderr, "  write: %s %s [%s] %s\n",
                 st == EF_WRITE_RETRY ? "RETRY" : "ERROR", rep->reason_code,
                 rep->sqlstate, rep->message);
    return st;
}

/* --- without a database ----------------------------------------------- */

EF_TEST (pg_classify)
{
    EF_CHECK (ef_pg_classify (NULL) == EF_PG_TRANSIENT);
    EF_CHECK (ef_pg_classify ("") == EF_PG_TRANSIENT);
    const char *transient[] = {"08000", "08003", "08006", "08P01", "57P01",
                               "57P02", "57P03", "40001", "40P01", "53100",
                               "53200", "53300", "58000", "58030"};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        EF_CHECK (ef_pg_classify (transient[i]) == EF_PG_TRANSIENT);
    const char *permanent[] = {"22001", "22P02", "22021", "23505", "23514",
                               "23503", "42P01", "42501", "42703", "57014",
                               "XX000", "25P02", "0A000"};
    for (size_t i = 0; i < sizeof permanent / sizeof permanent[0]; i++)
        EF_CHECK (ef_pg_classify (permanent[i]) == EF_PG_PERMANENT);
}

EF_TEST (pg_redact)
{
    char out[256], why[200];
    struct {
        const char *in, *want;
        int rc;
    } cases[] = {
        {"host=db user=app password=s3cret dbname=x",
         "host=db user=app password=*** dbname=x", 0},
        {"password = 'sec ret\\' x'   host=db", "password=*** host=db", 0},
        {"host=db password=", "host=db password=***", 0},
        {"host=db sslpassword=s3cret sslkey=/k.pem",
         "host=db sslpassword=*** sslkey=/k.pem", 0},
        {"postgresql://app:s3cret@db:5432/x?sslmode=require",
         "postgresql://app:***@db:5432/x?sslmode=require", 0},
        {"postgres://app@db/x?password=s3cret&application_name=a",
         "postgres://app@db/x?password=***&application_name=a", 0},
        {"postgresql://db/x?sslpassword=s3cret",
         "postgresql://db/x?sslpassword=***", 0},
        /* libpq decodes parameter names: this is password */
        {"postgresql://db/x?pass%77ord=s3cret",
         "postgresql://db/x?pass%77ord=***", 0},
        /* aliases libpq accepts but does not list: shown masked */
        {"postgresql://db/x?ssl=true", "postgresql://db/x?ssl=***", 0},
        {"host=db requiressl=1", "host=db requiressl=***", 0},
        {"postgresql://db:5432/x", "postgresql://db:5432/x", 0},
        {"postgresql://app:p%40ss@db/x", "postgresql://app:***@db/x", 0},
        {"dbname='postgresql://u:s3cret@h/d'", "dbname=***", 0},
        {"mydb", "mydb", 0},
        {"", "", 0},
        /* what libpq cannot parse is refused, its values unseen */
        {"host=db passwd=s3cret password=s3cret",
         "host=db passwd=*** password=***", -1},
        {"host=db PASSWORD=s3cret", "host=db PASSWORD=***", -1},
        {"host=db password 'oops", "host=db ...", -1},
        {"host=db s3cret", "host=db ...", -1},
        {"host=db password='s3cret", "host=db password=*** ...", -1},
        {"postgresql://app:s3cret%zz@db/x", "postgresql://app:***@db/x", -1},
        {"postgresql://db/x?password=s3cret%zz",
         "postgresql://db/x?password=***", -1},
        {"postgresql://db/x?passwd=s3cret", "postgresql://db/x?passwd=***", -1},
        {"postgresql://db/x?s3cret", "postgresql://db/x?...", -1},
        /* libpq would read a part of these passwords as host or database */
        {"postgresql://app:p@ss/w@rd@db/x", "postgresql://app:***@db/x", -1},
        {"postgresql://app:s3c/ret@db/x", "postgresql://app:***@db/x", -1},
        {"postgresql://app:s3cret@[::1", "postgresql://app:***@[::1", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = ef_pg_redact (cases[i].in, out, sizeof out, why, sizeof why);
        if (strcmp (out, cases[i].want) != 0 || rc != cases[i].rc)
            fprintf (stderr, "redact '%s' -> %d '%s' (%s), want %d '%s'\n",
                     cases[i].in, rc, out, why, cases[i].rc, cases[i].want);
        EF_CHECK (strcmp (out, cases[i].want) == 0);
        EF_CHECK (rc == cases[i].rc);
        EF_CHECK (!strstr (out, "s3c") && !strstr (out, "rd@"));
        EF_CHECK (!strstr (why, "s3c") && !strstr (why, "rd@"));
        EF_CHECK ((rc == 0) == (why[0] == '\0'));
    }
    /* the reason names what is wrong */
    ef_pg_redact ("host=db passwd=s3cret", out, sizeof out, why, sizeof why);
    EF_CHECK (strstr (why, "\"passwd\" is not a libpq keyword") != NULL);
    ef_pg_redact ("postgresql://app:p@ss@db/x", out, sizeof out, why,
                  sizeof why);
    EF_CHECK (strstr (why, "%40") != NULL);
    ef_pg_redact ("postgresql://app:s3cret%zz@db/x", out, sizeof out, why,
                  sizeof why);
    EF_CHECK (strstr (why, "percent-encoded") != NULL);

    EF_CHECK (ef_pg_redact (NULL, out, sizeof out, NULL, 0) == 0);
    EF_CHECK (out[0] == '\0');
    /* a tiny buffer is cut, never overrun */
    char tiny[8];
    ef_pg_redact ("host=verylonghostname password=x", tiny, sizeof tiny, why,
                  sizeof why);
    EF_CHECK (strlen (tiny) == 7);
}

EF_TEST (pg_redact_every_secret_keyword)
{
    /* Every keyword libpq hides, today and after an upgrade, in both
       forms; this is not a list kept by hand. */
    PQconninfoOption *table = PQconninfoParse ("", NULL);
    EF_REQUIRE (table);
    int secrets = 0;
    for (PQconninfoOption *o = table; o->keyword; o++) {
        if (!o->dispchar || !strchr (o->dispchar, '*'))
            continue;
        secrets++;
        char in[256], out[256];
        snprintf (in, sizeof in, "host=db %s=Hidden99 port=5", o->keyword);
        EF_CHECK (ef_pg_redact (in, out, sizeof out, NULL, 0) == 0);
        EF_CHECK (strstr (out, "Hidden99") == NULL);
        EF_CHECK (strstr (out, "=***") != NULL && strstr (out, "port=5"));
        snprintf (in, sizeof in, "postgresql://db/x?%s=Hidden99&port=5",
                  o->keyword);
        EF_CHECK (ef_pg_redact (in, out, sizeof out, NULL, 0) == 0);
        EF_CHECK (strstr (out, "Hidden99") == NULL);
        EF_CHECK (strstr (out, "=***") != NULL && strstr (out, "port=5"));
    }
    PQconninfoFree (table);
    EF_CHECK (secrets >= 2); /* password and sslpassword */
}

EF_TEST (pg_connect_error_hides_password)
{
    char err[512];
    /* Nothing listens on this socket directory. */
    PGconn *c = ef_pg_connect ("host=/nonexistent port=1 user=u "
                               "password=TopSecret42 sslpassword=TopSecret43 "
                               "connect_timeout=1",
                               "ef-unit", err, sizeof err);
    EF_CHECK (c == NULL);
    EF_CHECK (strstr (err, "TopSecret4") == NULL);
    EF_CHECK (strstr (err, "password=***") != NULL);
    EF_CHECK (strstr (err, "sslpassword=***") != NULL);
    c = ef_pg_connect ("postgresql://u:TopSecret42@/x?host=/nonexistent&port=1",
                       NULL, err, sizeof err);
    EF_CHECK (c == NULL);
    EF_CHECK (strstr (err, "TopSecret42") == NULL);
    /* libpq's own parse errors quote the bad text: never shown */
    const char *bad[] = {
        "postgresql://u:TopSecret42%zz@/x?host=/nonexistent",
        "postgresql://u:TopSecret42@[::1",
        "host=/nonexistent passwd=TopSecret42",
        "host=/nonexistent TopSecret42",
        /* libpq would take "TopSecret42@h" as the host and print it */
        "postgresql://u:pw@TopSecret42@h/x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = ef_pg_connect (bad[i], NULL, err, sizeof err);
        EF_CHECK (c == NULL);
        if (strstr (err, "TopSecret42"))
            fprintf (stderr, "leaked: %s\n", err);
        EF_CHECK (strstr (err, "TopSecret42") == NULL);
        EF_CHECK (strstr (err, "not valid") != NULL);
    }
    /* a database name that is itself a conninfo: the server's "does not
       exist" would echo it */
    c = ef_pg_connect ("host=/nonexistent port=1 "
                       "dbname='postgresql://u:TopSecret42@h/d'",
                       NULL, err, sizeof err);
    EF_CHECK (c == NULL);
    EF_CHECK (strstr (err, "TopSecret42") == NULL);
}

EF_TEST (db_pg_connect_settings)
{
    /* the test database as a URL in DATABASE_URL, with a password that
       must not matter (trust) and must never show */
    PQconninfoOption *opts = PQconninfoParse (ef_test_conninfo (), NULL);
    EF_REQUIRE (opts);
    const char *host = "", *port = "5432", *user = "postgres", *db = "postgres";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp (o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp (o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp (o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp (o->keyword, "dbname") == 0)
            db = o->val;
    }
    char url[512];
    snprintf (url, sizeof url, "postgresql://%s:pw@/%s?host=%s&port=%s", user,
              db, host, port);
    PQconninfoFree (opts);
    setenv ("DATABASE_URL", url, 1);
    char err[512];
    PGconn *c = ef_pg_connect (NULL, "ef-unit test", err, sizeof err);
    unsetenv ("DATABASE_URL");
    if (!c)
        fprintf (stderr, "%s\n", err);
    EF_REQUIRE (c);
    EF_CHECK (strcmp (PQparameterStatus (c, "application_name"), "ef-unit test")
              == 0);
    EF_CHECK (strcmp (PQparameterStatus (c, "client_encoding"), "UTF8") == 0);
    PQfinish (c);

    /* settings in the conninfo win over the defaults */
    char info[600];
    snprintf (info, sizeof info, "%s application_name=mine",
              ef_test_conninfo ());
    c = ef_pg_connect (info, "ef-unit", err, sizeof err);
    EF_REQUIRE (c);
    EF_CHECK (strcmp (PQparameterStatus (c, "application_name"), "mine") == 0);
    PQfinish (c);
}

EF_TEST (pgwrite_hash)
{
    Embedflow__V1__Row *a = s_row_new (1, 0, 16, 0.5f);
    Embedflow__V1__Row *b = s_row_new (1, 0, 16, 0.5f);
    uint8_t ha[16], hb[16];
    ef_pgwrite_hash (a, ha);
    ef_pgwrite_hash (b, hb);
    EF_CHECK (memcmp (ha, hb, 16) == 0);
    b->vector[15] += 1e-6f;
    ef_pgwrite_hash (b, hb);
    EF_CHECK (memcmp (ha, hb, 16) != 0);
    b->vector[15] = a->vector[15];
    /* moving bytes between fields changes the hash */
    free (b->model);
    b->model = strdup ("test-mode");
    free (b->source);
    b->source = strdup ("lunit");
    ef_pgwrite_hash (b, hb);
    EF_CHECK (memcmp (ha, hb, 16) != 0);
    s_row_free (a);
    s_row_free (b);
}

/* --- schema ----------------------------------------------------------- */

typedef struct {
    const char *schema; /* to migrate */
    int rc;             /* result */
    char err[512];      /* its message */
} s_migrate_job_t;

static void *
s_migrate_thread (void *arg)
{
    s_migrate_job_t *job = arg;
    PGconn *c = ef_pg_connect (ef_test_conninfo (), "ef-unit", job->err,
                               sizeof job->err);
    job->rc =
        c ? ef_schema_migrate (c, job->schema, 8, job->err, sizeof job->err)
          : -1;
    PQfinish (c);
    return NULL;
}

EF_TEST (db_schema_migrate)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512] = "";

    /* four writers starting at once */
    pthread_t threads[4];
    s_migrate_job_t jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (s_migrate_job_t){.schema = schema};
        pthread_create (&threads[i], NULL, s_migrate_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join (threads[i], NULL);
        if (jobs[i].rc != 0)
            fprintf (stderr, "thread %d: %s\n", i, jobs[i].err);
        EF_CHECK (jobs[i].rc == 0);
    }
    EF_CHECK (ef_schema_migrate (c, schema, 8, err, sizeof err) == 0);
    EF_CHECK (ef_schema_migrate (c, schema, 8, err, sizeof err) == 0);
    EF_CHECK (
        s_scalar (c, "SELECT max (version) FROM \"%s\".schema_version", schema)
        == ef_schema_latest ());
    EF_CHECK (
        s_scalar (c, "SELECT count (*) FROM \"%s\".schema_version", schema)
        == ef_schema_latest ());
    EF_CHECK (PQtransactionStatus (c) == PQTRANS_IDLE);
    /* vectors are stored uncompressed, dim and type recorded */
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM pg_attribute WHERE attrelid ="
                        " '\"%s\".embedding'::regclass AND attname = 'vector'"
                        " AND attstorage = 'e'",
                        schema)
              == 1);
    EF_CHECK (
        s_scalar (c, "SELECT value::int FROM \"%s\".setting WHERE key = 'dim'",
                  schema)
        == 8);

    /* another dimension is refused, with the reason */
    EF_CHECK (ef_schema_migrate (c, schema, 16, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "8-dimension") != NULL);
    EF_CHECK (PQtransactionStatus (c) == PQTRANS_IDLE);

    /* a name that needs quoting */
    char odd[128];
    snprintf (odd, sizeof odd, "%s \"Odd\"; drop", schema);
    EF_CHECK (ef_schema_migrate (c, odd, 8, err, sizeof err) == 0);
    PGresult *res =
        PQexecParams (c,
                      "SELECT count (*) FROM pg_tables"
                      " WHERE schemaname = $1",
                      1, NULL, (const char *const[]){odd}, NULL, NULL, 0);
    EF_CHECK (PQresultStatus (res) == PGRES_TUPLES_OK
              && atoi (PQgetvalue (res, 0, 0)) >= 5); /* later versions add */
    PQclear (res);
    char *q = ef_pg_ident (c, odd);
    char sql[300];
    snprintf (sql, sizeof sql, "DROP SCHEMA %s CASCADE", q);
    free (q);
    EF_CHECK (s_exec_ok (c, "%s", sql));

    /* a schema from a newer embedflow is refused */
    EF_CHECK (s_exec_ok (
        c, "INSERT INTO \"%s\".schema_version VALUES (999, 'x')", schema));
    EF_CHECK (ef_schema_migrate (c, schema, 8, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "version 999") != NULL);

    s_drop_schema (c, schema);
    PQfinish (c);
}

/* --- pgwrite ---------------------------------------------------------- */

#define DIM 32

/* Migrates schema for DIM-dimension rows as real[], whatever the test
   server has: these tests read vectors with real[]'s operators
   (cardinality, subscripts), which pgvector's types do not have. */
static int
s_migrate_real (PGconn *c, const char *schema, char *err, size_t errlen)
{
    ef_schema_opts_t opts = {.dim = DIM, .vector_type = EF_VECTOR_REAL};
    return ef_schema_migrate_opts (c, schema, &opts, err, errlen);
}

/* 1000 rows of distinct keys. */
static Embedflow__V1__Row **
s_batch (size_t n, int first_doc, float seed)
{
    Embedflow__V1__Row **rows = calloc (n, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = s_row_new (first_doc + (int) i / 10, (uint32_t) (i % 10), DIM,
                             seed);
    return rows;
}

EF_TEST (db_pgwrite_upsert)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    EF_REQUIRE (w);

    size_t n = 1000;
    Embedflow__V1__Row **rows = s_batch (n, 0, 0.25f);
    ef_write_report_t rep;
    EF_CHECK (s_write (w, rows, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == n && rep.duplicates == 0);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk", schema)
              == 1000);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".embedding", schema)
              == 1000);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".embedding"
                        " WHERE dim = 32 AND cardinality (vector) = 32",
                        schema)
              == 1000);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".chunk"
                        " WHERE metadata ->> 'lang' = 'de' AND source = 'unit'"
                        " AND octet_length (content_hash) = 16",
                        schema)
              == 1000);
    /* float4 values survive the binary format */
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".embedding"
                        " WHERE vector[1] = 0.25 AND vector[17] = 0.75",
                        schema)
              == 1000);

    /* the same rows again: nothing changes, not even a row version */
    char sql[512];
    snprintf (sql, sizeof sql,
              "CREATE TEMP TABLE before AS SELECT c.id, c.updated_at,"
              " c.xmin::text AS cx, e.xmin::text AS ex"
              " FROM \"%s\".chunk c JOIN \"%s\".embedding e USING (id)",
              schema, schema);
    EF_CHECK (s_exec_ok (c, "%s", sql));
    EF_CHECK (s_write (w, rows, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 0);
    snprintf (sql, sizeof sql,
              "SELECT count (*) FROM before b JOIN \"%s\".chunk c USING (id)"
              " JOIN \"%s\".embedding e USING (id)"
              " WHERE c.updated_at = b.updated_at AND c.xmin::text = b.cx"
              " AND e.xmin::text = b.ex",
              schema, schema);
    EF_CHECK (s_scalar (c, "%s", sql) == 1000);

    /* one changed vector: one row changes, and keeps its id even when the
       new version carries another one */
    rows[7]->vector[3] += 1.0f;
    rows[7]->id.data[15] ^= 0xFF;
    EF_CHECK (s_write (w, rows, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 1);
    snprintf (sql, sizeof sql,
              "SELECT count (*) FROM before b JOIN \"%s\".chunk c USING (id)"
              " JOIN \"%s\".embedding e USING (id)"
              " WHERE c.updated_at = b.updated_at AND e.xmin::text = b.ex",
              schema, schema);
    EF_CHECK (s_scalar (c, "%s", sql) == 999);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk", schema)
              == 1000);
    snprintf (sql, sizeof sql,
              "SELECT count (*) FROM \"%s\".embedding e"
              " JOIN \"%s\".chunk c USING (id)"
              " WHERE c.document_id = 'doc-0' AND c.chunk_index = 7"
              " AND e.vector[4] > 1",
              schema, schema);
    EF_CHECK (s_scalar (c, "%s", sql) == 1);

    /* a changed content alone is a change too */
    free (rows[8]->content);
    rows[8]->content = strdup ("new text");
    EF_CHECK (s_write (w, rows + 8, 1, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 1);

    /* the session can be reset: staging and statement come back */
    PQreset (c);
    EF_REQUIRE (PQstatus (c) == CONNECTION_OK);
    rows[9]->vector[0] = -1.0f;
    EF_CHECK (s_write (w, rows, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 1);

    s_rows_free (rows, n);
    ef_pgwrite_destroy (&w);
    ef_pgwrite_destroy (&w);
    s_drop_schema (c, schema);
    PQfinish (c);
}

/* Index scans of chunk_identity, the (document_id, chunk_index) key
   that only the lookup (and the upsert) reads: COPY checks it by
   inserting, which is no scan. c is the writer's own session, whose
   counts reach the statistics once it flushes them. */
static long
s_identity_scans (PGconn *c, const char *schema)
{
    PQclear (PQexec (c, "SELECT pg_stat_force_next_flush ()"));
    PQclear (PQexec (c, "SELECT pg_stat_clear_snapshot ()"));
    return s_scalar (c,
                     "SELECT idx_scan FROM pg_stat_user_indexes"
                     " WHERE schemaname = '%s'"
                     " AND indexrelname = 'chunk_identity'",
                     schema);
}

EF_TEST (db_pgwrite_lookup_skipped_for_new_keys)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    EF_REQUIRE (w);
    size_t n = 100;
    Embedflow__V1__Row **a = s_batch (n, 0, 0.5f);
    Embedflow__V1__Row **b = s_batch (n, 100, 0.5f);
    Embedflow__V1__Row **d = s_batch (n, 200, 0.5f);
    ef_write_report_t rep;

    /* a load: new keys go straight in, the key is never probed */
    EF_CHECK (s_write (w, a, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == n);
    long scans = s_identity_scans (c, schema);
    EF_CHECK (scans == 0);

    /* the same rows again: the COPY meets stored keys, the batch is
       written again with the lookup and nothing changes */
    EF_CHECK (s_write (w, a, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 0 && rep.duplicates == 0);
    EF_CHECK (PQtransactionStatus (c) == PQTRANS_IDLE);
    long after_resend = s_identity_scans (c, schema);
    EF_CHECK (after_resend > scans);

    /* after stored keys the next batch is looked up; it finds none ... */
    EF_CHECK (s_write (w, b, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == n);
    long after_probe = s_identity_scans (c, schema);
    EF_CHECK (after_probe > after_resend);

    /* ... so the one after is a plain load again */
    EF_CHECK (s_write (w, d, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == n);
    EF_CHECK (s_identity_scans (c, schema) == after_probe);

    /* a batch mixing stored and new keys, skipped lookup or not, writes
       the new ones and changes only what changed */
    Embedflow__V1__Row **mix = s_batch (n, 205, 0.5f); /* 205..209 stored */
    mix[45]->vector[0] = 9.0f; /* stored before as doc-209/5 */
    EF_CHECK (s_write (w, mix, n, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 51); /* 50 new + 1 changed */
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk", schema)
              == 350);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".embedding", schema)
              == 350);

    s_rows_free (a, n);
    s_rows_free (b, n);
    s_rows_free (d, n);
    s_rows_free (mix, n);
    ef_pgwrite_destroy (&w);
    s_drop_schema (c, schema);
    PQfinish (c);
}

EF_TEST (db_pgwrite_duplicates)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    EF_REQUIRE (w);
    Embedflow__V1__Row *rows[3] = {s_row_new (5, 1, DIM, 1.0f),
                                   s_row_new (5, 2, DIM, 1.0f),
                                   s_row_new (5, 1, DIM, 2.0f)};
    ef_write_report_t rep;
    EF_CHECK (s_write (w, rows, 3, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 2 && rep.duplicates == 1);
    char sql[400];
    snprintf (sql, sizeof sql,
              "SELECT e.vector[1]::int FROM \"%s\".embedding e"
              " JOIN \"%s\".chunk c USING (id) WHERE c.chunk_index = 1",
              schema, schema);
    EF_CHECK (s_scalar (c, "%s", sql) == 2); /* the last one won */
    for (int i = 0; i < 3; i++)
        s_row_free (rows[i]);
    ef_pgwrite_destroy (&w);
    s_drop_schema (c, schema);
    PQfinish (c);
}

EF_TEST (db_pgwrite_errors)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    EF_REQUIRE (w);
    EF_CHECK (s_exec_ok (c,
                         "ALTER TABLE \"%s\".chunk ADD CONSTRAINT no_poison"
                         " CHECK (content <> 'poison')",
                         schema));
    size_t n = 100;
    Embedflow__V1__Row **rows = s_batch (n, 0, 0.0f);
    free (rows[42]->content);
    rows[42]->content = strdup ("poison");
    ef_write_report_t rep;
    EF_CHECK (s_write (w, rows, n, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.sqlstate, "23514") == 0);
    EF_CHECK (strcmp (rep.reason_code, "db_rejected") == 0);
    EF_CHECK (strstr (rep.message, "no_poison") != NULL);
    EF_CHECK (rep.changed == 0);
    EF_CHECK (PQtransactionStatus (c) == PQTRANS_IDLE);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk", schema) == 0);
    /* the rest goes in once the bad row is out */
    EF_CHECK (s_write (w, rows, 42, &rep) == EF_WRITE_OK);
    EF_CHECK (s_write (w, rows + 43, n - 43, &rep) == EF_WRITE_OK);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk", schema) == 99);

    /* invalid UTF-8 and invalid JSON are the database's to reject */
    free (rows[42]->content);
    rows[42]->content = strdup ("bad \xC3\x28 bytes");
    EF_CHECK (s_write (w, rows + 42, 1, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.sqlstate, "22021") == 0);
    free (rows[42]->content);
    rows[42]->content = strdup ("fine");
    free (rows[42]->metadata_json);
    rows[42]->metadata_json = strdup ("{not json");
    EF_CHECK (s_write (w, rows + 42, 1, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.sqlstate, "22P02") == 0);
    free (rows[42]->metadata_json);
    rows[42]->metadata_json = strdup ("");
    EF_CHECK (s_write (w, rows + 42, 1, &rep) == EF_WRITE_OK);

    /* rows the database would misread never leave */
    rows[1]->id.len = 0;
    EF_CHECK (s_write (w, rows, 2, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.reason_code, "bad_row") == 0);
    rows[1]->id.len = 16;
    rows[1]->n_vector = DIM - 1;
    EF_CHECK (s_write (w, rows, 2, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strstr (rep.message, "31 dimensions") != NULL);
    rows[1]->n_vector = DIM;

    /* a lost session is transient */
    PGconn *killer = s_connect ();
    EF_REQUIRE (killer);
    char sql[128];
    snprintf (sql, sizeof sql, "SELECT pg_terminate_backend (%d)",
              PQbackendPID (c));
    EF_CHECK (s_exec_ok (killer, "%s", sql));
    PQfinish (killer);
    rows[0]->vector[0] = 9.0f;
    EF_CHECK (s_write (w, rows, 2, &rep) == EF_WRITE_RETRY);
    EF_CHECK (strcmp (rep.reason_code, "db_unavailable") == 0);
    PQreset (c);
    EF_REQUIRE (PQstatus (c) == CONNECTION_OK);
    EF_CHECK (s_write (w, rows, 2, &rep) == EF_WRITE_OK);
    EF_CHECK (rep.changed == 1);

    /* a vanished table is permanent */
    EF_CHECK (s_exec_ok (c, "DROP TABLE \"%s\".embedding", schema));
    ef_pgwrite_t *w2 = ef_pgwrite_new (c, schema, DIM);
    EF_CHECK (s_write (w2, rows, 2, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.sqlstate, "42P01") == 0);

    ef_pgwrite_destroy (&w2);
    s_rows_free (rows, n);
    ef_pgwrite_destroy (&w);
    s_drop_schema (c, schema);
    PQfinish (c);
}

EF_TEST (db_pgwrite_dead_letters)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    Embedflow__V1__DeadLetter d[3];
    Embedflow__V1__DeadLetter *items[3];
    uint8_t bytes[] = {0x12, 0x00, 0xFF};
    for (int i = 0; i < 3; i++) {
        embedflow__v1__dead_letter__init (&d[i]);
        d[i].stage = "write";
        d[i].reason_code = "db_rejected";
        d[i].reason = "check constraint";
        d[i].sqlstate = "23514";
        d[i].attempts = 1;
        d[i].job_id = "job-1";
        d[i].source = "unit";
        d[i].document_id = "doc-1";
        d[i].original.data = bytes;
        d[i].original.len = sizeof bytes;
        d[i].covers = (uint32_t) i + 1;
        items[i] = &d[i];
    }
    d[1].reason = "bad \xC3\x28 utf8 \xF0\x9F\x98\x80";
    d[2].sqlstate = "";
    d[2].document_id = "";
    ef_write_report_t rep;
    EF_CHECK (ef_pgwrite_dead_letters (c, schema, items, 3, &rep)
              == EF_WRITE_OK);
    EF_CHECK (rep.changed == 3);
    EF_CHECK (
        s_scalar (c, "SELECT sum (covers) FROM \"%s\".dead_letter", schema)
        == 6);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".dead_letter"
                        " WHERE original = '\\x1200ff'::bytea",
                        schema)
              == 3);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".dead_letter"
                        " WHERE reason = E'bad \\uFFFD( utf8 \\U0001F600'",
                        schema)
              == 1);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".dead_letter"
                        " WHERE sqlstate IS NULL AND document_id IS NULL",
                        schema)
              == 1);
    /* a missing table is reported, the connection stays usable */
    EF_CHECK (ef_pgwrite_dead_letters (c, "no_such_schema_x", items, 3, &rep)
              == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.sqlstate, "42P01") == 0
              || strcmp (rep.sqlstate, "3F000") == 0);
    EF_CHECK (PQtransactionStatus (c) == PQTRANS_IDLE);
    s_drop_schema (c, schema);
    PQfinish (c);
}

/* A writer that blocks inside its batch. */
typedef struct {
    ef_pgwrite_t *w;           /* writer */
    Embedflow__V1__Row **rows; /* its batch */
    size_t n;                  /* rows */
    ef_write_status_t status;  /* outcome */
    ef_write_report_t rep;     /* report */
} s_write_job_t;

static void *
s_write_thread (void *arg)
{
    s_write_job_t *job = arg;
    job->status = s_write (job->w, job->rows, job->n, &job->rep);
    return NULL;
}

EF_TEST (db_pgwrite_race)
{
    PGconn *c = s_connect ();
    PGconn *other = s_connect ();
    EF_REQUIRE (c && other);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    EF_REQUIRE (w);

    /* Another session stores doc-0/3 but has not committed when our
       writer looks the keys up: its COPY then waits on that key and
       fails when the other commits, and the batch must still land. */
    EF_CHECK (s_exec_ok (other, "BEGIN%s", ""));
    char sql[600];
    snprintf (sql, sizeof sql,
              "INSERT INTO \"%s\".chunk (id, document_id, chunk_index, content,"
              " content_hash) VALUES ('00000000-0000-7000-8000-000000000001',"
              " 'doc-0', 3, 'theirs', '\\x00')",
              schema);
    EF_CHECK (s_exec_ok (other, "%s", sql));
    s_write_job_t job = {.w = w, .rows = s_batch (10, 0, 3.0f), .n = 10};
    pthread_t thread;
    pthread_create (&thread, NULL, s_write_thread, &job);
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep (&pause, NULL);
    EF_CHECK (s_exec_ok (other, "COMMIT%s", ""));
    pthread_join (thread, NULL);
    EF_CHECK (job.status == EF_WRITE_OK);
    EF_CHECK (job.rep.changed == 10);
    snprintf (sql, sizeof sql,
              "SELECT count (*) FROM \"%s\".chunk c JOIN \"%s\".embedding e"
              " USING (id) WHERE c.id = '00000000-0000-7000-8000-000000000001'"
              " AND c.content <> 'theirs'",
              schema, schema);
    EF_CHECK (s_scalar (c, "%s", sql) == 1); /* kept its id, took ours */
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".embedding", schema)
              == 10);

    /* a client reusing one id for two keys is a permanent error */
    Embedflow__V1__Row *clash = s_row_new (77, 0, DIM, 1.0f);
    memcpy (clash->id.data, job.rows[0]->id.data, 16);
    ef_write_report_t rep;
    EF_CHECK (s_write (w, &clash, 1, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strcmp (rep.sqlstate, "23505") == 0);
    EF_CHECK (PQtransactionStatus (c) == PQTRANS_IDLE);
    s_row_free (clash);

    s_rows_free (job.rows, job.n);
    ef_pgwrite_destroy (&w);
    s_drop_schema (c, schema);
    PQfinish (other);
    PQfinish (c);
}

/* A hook that records how many rows it was told changed, in a side table
   of the same transaction; fails on demand. */
typedef struct {
    const char *schema; /* where the side table is */
    bool fail;          /* answer EF_WRITE_ERROR */
    size_t calls;       /* times called */
} s_hook_t;

static ef_write_status_t
s_hook (PGconn *conn, void *arg, Embedflow__V1__Row *const *rows, size_t n,
        const bool *changed, ef_write_report_t *rep)
{
    (void) rows;
    s_hook_t *h = arg;
    h->calls++;
    if (h->fail) {
        snprintf (rep->reason_code, sizeof rep->reason_code, "db_rejected");
        snprintf (rep->message, sizeof rep->message, "hook refused");
        return EF_WRITE_ERROR;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += changed[i];
    char sql[256];
    snprintf (sql, sizeof sql, "INSERT INTO \"%s\".side VALUES (%zu)",
              h->schema, k);
    PGresult *res = PQexec (conn, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    return ok ? EF_WRITE_OK : EF_WRITE_RETRY;
}

EF_TEST (db_pgwrite_hooks)
{
    PGconn *c = s_connect ();
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    char err[512];
    EF_REQUIRE (s_migrate_real (c, schema, err, sizeof err) == 0);
    EF_REQUIRE (
        s_exec_ok (c, "CREATE TABLE \"%s\".side (changed int)", schema));
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    s_hook_t hook = {schema, false, 0};
    EF_REQUIRE (ef_pgwrite_add_hook (w, s_hook, &hook) == 0);
    ef_write_report_t rep;

    Embedflow__V1__Row **rows = s_batch (20, 0, 0.5f);
    EF_CHECK (s_write (w, rows, 20, &rep) == EF_WRITE_OK);
    /* a re-send: the hook runs but hears of no changed row */
    EF_CHECK (s_write (w, rows, 20, &rep) == EF_WRITE_OK);
    s_rows_free (rows, 20);
    EF_CHECK (hook.calls == 2);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".side WHERE changed = 20",
                        schema)
              == 1);
    EF_CHECK (s_scalar (c,
                        "SELECT count (*) FROM \"%s\".side WHERE changed = 0",
                        schema)
              == 1);

    /* a failing hook rolls the rows back with it */
    hook.fail = true;
    rows = s_batch (10, 100, 0.5f);
    EF_CHECK (s_write (w, rows, 10, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strstr (rep.message, "hook refused") != NULL);
    s_rows_free (rows, 10);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk", schema) == 20);
    ef_pgwrite_destroy (&w);
    s_drop_schema (c, schema);
    PQfinish (c);
}
