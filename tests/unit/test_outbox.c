/*  test_outbox.c — the invalidation outbox against a real PostgreSQL:
    the write hook records changed documents only, in the batch's
    transaction; fetch groups by source, oldest first; delete and the
    move to dead_letter remove exactly the rows fetched. */
#include "ef_test.h"

#include <stdlib.h>
#include <string.h>

#include "postgres/outbox.h"
#include "postgres/pg.h"
#include "postgres/pgwrite.h"
#include "postgres/schema.h"

#define DIM 4

/* A heap row of document "d<doc>" from source src. */
static Embedflow__V1__Row *
s_row (int doc, uint32_t chunk, const char *src, const char *content)
{
    Embedflow__V1__Row *r = calloc (1, sizeof *r);
    embedflow__v1__row__init (r);
    r->id.len = 16;
    r->id.data = calloc (1, 16);
    r->id.data[0] = 0x02;
    memcpy (r->id.data + 2, &doc, sizeof doc);
    memcpy (r->id.data + 8, &chunk, sizeof chunk);
    r->id.data[6] = 0x70;
    r->id.data[8] |= 0x80;
    r->document_id = malloc (32);
    snprintf (r->document_id, 32, "d\"%d", doc); /* a quote, for escaping */
    r->chunk_index = chunk;
    r->content = strdup (content);
    r->metadata_json = strdup ("{}");
    r->model = strdup ("m");
    r->source = strdup (src);
    r->n_vector = DIM;
    r->vector = calloc (DIM, sizeof (float));
    r->job_id = strdup ("job");
    r->covers = 1;
    return r;
}

static void
s_free (Embedflow__V1__Row **rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free (rows[i]->id.data);
        free (rows[i]->document_id);
        free (rows[i]->content);
        free (rows[i]->metadata_json);
        free (rows[i]->model);
        free (rows[i]->source);
        free (rows[i]->vector);
        free (rows[i]->job_id);
        free (rows[i]);
    }
}

/* The first value of sql (with %s = schema) as a long, -1 on error. */
static long
s_scalar (PGconn *c, const char *fmt)
{
    char sql[512];
    snprintf (sql, sizeof sql, fmt, ef_test_schema ());
    PGresult *res = PQexec (c, sql);
    long v = PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1
                 ? atol (PQgetvalue (res, 0, 0))
                 : -1;
    PQclear (res);
    return v;
}

EF_TEST (db_outbox)
{
    char err[512];
    PGconn *c = ef_pg_connect (ef_test_conninfo (), "ef-unit", err, sizeof err);
    EF_REQUIRE (c);
    const char *schema = ef_test_schema ();
    EF_REQUIRE (ef_schema_migrate (c, schema, DIM, err, sizeof err) == 0);
    ef_pgwrite_t *w = ef_pgwrite_new (c, schema, DIM);
    ef_outbox_t *box = ef_outbox_new (schema);
    EF_REQUIRE (w && box);
    EF_REQUIRE (ef_pgwrite_add_hook (w, ef_outbox_hook, box) == 0);
    ef_write_report_t rep;

    /* Two documents of source a (one with two rows), one of source b. */
    Embedflow__V1__Row *rows[4] = {
        s_row (1, 0, "a", "x"), s_row (1, 1, "a", "y"), s_row (2, 0, "b", "z"),
        s_row (3, 0, "a", "w")};
    EF_CHECK (ef_pgwrite_batch (w, rows, 4, &rep) == EF_WRITE_OK);
    EF_CHECK (ef_outbox_take_added (box) == 3);
    EF_CHECK (ef_outbox_take_added (box) == 0);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".invalidation_outbox")
              == 3);
    /* The same rows again change nothing: no outbox rows. */
    EF_CHECK (ef_pgwrite_batch (w, rows, 4, &rep) == EF_WRITE_OK);
    EF_CHECK (ef_outbox_take_added (box) == 0);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".invalidation_outbox")
              == 3);
    /* One changed row: one more id. */
    free (rows[1]->content);
    rows[1]->content = strdup ("changed");
    EF_CHECK (ef_pgwrite_batch (w, rows, 4, &rep) == EF_WRITE_OK);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".invalidation_outbox")
              == 4);

    /* Fetch: source a first (the oldest row), its ids distinct. */
    ef_outbox_batch_t batch;
    EF_CHECK (ef_outbox_fetch (box, c, 100, &batch, err, sizeof err) == 1);
    EF_CHECK (strcmp (batch.source, "a") == 0);
    EF_CHECK (batch.rows == 3 && batch.n_ids == 2);
    bool one = false, three = false;
    for (size_t k = 0; k < batch.n_ids; k++) {
        one = one || strcmp (batch.document_ids[k], "d\"1") == 0;
        three = three || strcmp (batch.document_ids[k], "d\"3") == 0;
    }
    EF_CHECK (one && three);
    EF_CHECK (ef_outbox_delete (box, c, &batch, err, sizeof err) == 0);
    ef_outbox_batch_clear (&batch);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".invalidation_outbox")
              == 1);

    /* The rest (source b) moves to dead_letter in one statement. */
    EF_CHECK (ef_outbox_fetch (box, c, 100, &batch, err, sizeof err) == 1);
    EF_CHECK (strcmp (batch.source, "b") == 0 && batch.n_ids == 1);
    EF_CHECK (
        ef_outbox_dead_letter (box, c, &batch, "gave up", 3, err, sizeof err)
        == 0);
    ef_outbox_batch_clear (&batch);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".dead_letter WHERE "
                           "stage = 'invalidate' AND covers = 0 AND "
                           "attempts = 3 AND source = 'b' AND "
                           "document_id = 'd\"2'")
              == 1);
    EF_CHECK (ef_outbox_fetch (box, c, 100, &batch, err, sizeof err) == 0);

    /* A failing hook (the outbox table gone) rolls the batch back. */
    char sql[256];
    snprintf (sql, sizeof sql, "DROP TABLE \"%s\".invalidation_outbox", schema);
    PQclear (PQexec (c, sql));
    free (rows[0]->content);
    rows[0]->content = strdup ("changed too");
    EF_CHECK (ef_pgwrite_batch (w, rows, 4, &rep) == EF_WRITE_ERROR);
    EF_CHECK (strstr (rep.message, "invalidation outbox") != NULL);
    EF_CHECK (s_scalar (c, "SELECT count (*) FROM \"%s\".chunk WHERE "
                           "content = 'changed too'")
              == 0);
    EF_CHECK (ef_outbox_fetch (box, c, 100, &batch, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "invalidation_outbox") != NULL);

    s_free (rows, 4);
    ef_outbox_destroy (&box);
    EF_CHECK (box == NULL);
    ef_outbox_destroy (&box);
    ef_pgwrite_destroy (&w);
    snprintf (sql, sizeof sql, "DROP SCHEMA \"%s\" CASCADE", schema);
    PQclear (PQexec (c, sql));
    PQfinish (c);
}
