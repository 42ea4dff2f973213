/*  test_citus_route.c — Citus' hash computed here, and the shard map,
    against a real Citus cluster (citus_db_* tests: tests/citus.sh; they
    say SKIPPED when there is none) and on their own. */
#include "ef_test.h"

#include <stdlib.h>
#include <string.h>

#include "postgres/citus_route.h"
#include "postgres/pg.h"

EF_TEST (citus_route_hash_pinned)
{
    /* worker_hash (d) on Citus 13.2.2 / PostgreSQL 15: the placement of
       every stored row depends on these, so they never change */
    static const struct {
        const char *text;
        int32_t hash;
    } cases[] = {
        {"", -1477818771},
        {"a", 1075015857},
        {"doc-000001", -1757230541},
        {"Grüße, 世界 🚀", -2023009306},
        {"doc-000001-chunk-with-a-rather-long-identifier-0123456789",
         686223971},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        EF_CHECK (ef_citus_hash_text (cases[i].text, strlen (cases[i].text))
                  == cases[i].hash);
}

/* The coordinator's conninfo, or NULL after printing why the test is
   skipped. */
static const char *
s_citus_conninfo (char *buf, size_t len)
{
    const char *dir = getenv ("EF_TEST_CITUS_DIR");
    char path[1024];
    if (!dir || !*dir) {
        printf ("SKIPPED: Citus is not available: EF_TEST_CITUS_DIR is not "
                "set (run through ctest)\n");
        return NULL;
    }
    snprintf (path, sizeof path, "%s/skip", dir);
    FILE *f = fopen (path, "r");
    if (f) {
        char why[512] = "";
        if (!fgets (why, sizeof why, f))
            why[0] = '\0';
        fclose (f);
        printf ("SKIPPED: %s", why);
        return NULL;
    }
    snprintf (path, sizeof path, "%s/conninfo", dir);
    f = fopen (path, "r");
    if (!f || !fgets (buf, (int) len, f)) {
        if (f)
            fclose (f);
        return NULL;
    }
    fclose (f);
    buf[strcspn (buf, "\n")] = '\0';
    return buf;
}

/* Runs sql on conn; true when it succeeded. */
static bool
s_exec (PGconn *conn, const char *sql)
{
    PGresult *res = PQexec (conn, sql);
    ExecStatusType st = PQresultStatus (res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf (stderr, "%s: %s", sql, PQerrorMessage (conn));
    PQclear (res);
    return ok;
}

/* A document id of test i: ASCII, multibyte UTF-8, long, or one byte. */
static void
s_doc (int i, char *out, size_t len)
{
    switch (i % 4) {
    case 0:
        snprintf (out, len, "doc-%06d", i);
        break;
    case 1:
        snprintf (out, len, "Dokument-ä%d-日本語-%d-🚀", i, i * 7);
        break;
    case 2:
        snprintf (out, len,
                  "https://example.org/a/rather/long/path/%d/"
                  "with/segments/that/goes/on/and/on/for/a/while/%d.html",
                  i, i * 31);
        break;
    default:
        snprintf (out, len, "%c", 'A' + i % 58);
    }
}

/* Checks ef_citus_hash_text, ef_citus_shards_index and _route against
   worker_hash and get_shard_id_for_distribution_column on a chunk table
   of shards shards in schema. */
static void
s_check_against_cluster (PGconn *conn, const char *schema, int shards)
{
    char sql[1024];
    snprintf (sql, sizeof sql,
              "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s;"
              "CREATE TABLE %s.chunk (document_id text, chunk_index int);"
              "SELECT create_distributed_table ('%s.chunk', 'document_id',"
              "  shard_count => %d)",
              schema, schema, schema, schema, shards);
    EF_REQUIRE (s_exec (conn, sql));
    char err[512] = "";
    ef_citus_shards_t *map =
        ef_citus_shards_load (conn, schema, err, sizeof err);
    EF_REQUIRE (map);
    EF_CHECK (ef_citus_shards_count (map) == shards);

    /* ids go as one text array; the server answers each id's hash and its
       shard's position among the table's shards in hash order */
    enum { N = 3000 };
    ef_buf_t arr = {0};
    ef_buf_puts (&arr, "{");
    char doc[256];
    for (int i = 0; i < N; i++) {
        if (i)
            ef_buf_puts (&arr, ",");
        s_doc (i, doc, sizeof doc);
        ef_pg_array_put_text (&arr, doc);
    }
    ef_buf_puts (&arr, "}");
    snprintf (sql, sizeof sql,
              "WITH s AS (SELECT shardid, row_number () OVER"
              "  (ORDER BY shardminvalue::int) - 1 AS at FROM pg_dist_shard"
              "  WHERE logicalrelid = '%s.chunk'::regclass)"
              " SELECT d.d, worker_hash (d.d), s.at"
              " FROM unnest ($1::text[]) WITH ORDINALITY d (d, o)"
              " JOIN s ON s.shardid = get_shard_id_for_distribution_column"
              "   ('%s.chunk', d.d) ORDER BY d.o",
              schema, schema);
    EF_REQUIRE (!arr.failed);
    const char *params[] = {arr.data};
    PGresult *res = PQexecParams (conn, sql, 1, NULL, params, NULL, NULL, 0);
    EF_REQUIRE (PQresultStatus (res) == PGRES_TUPLES_OK);
    EF_CHECK (PQntuples (res) == N);
    int hash_wrong = 0, shard_wrong = 0, route_wrong = 0;
    int per_writer[3] = {0};
    for (int i = 0; i < PQntuples (res); i++) {
        const char *d = PQgetvalue (res, i, 0);
        s_doc (i, doc, sizeof doc);
        EF_CHECK (strcmp (d, doc) == 0);
        int32_t want = (int32_t) strtol (PQgetvalue (res, i, 1), NULL, 10);
        int at = atoi (PQgetvalue (res, i, 2));
        hash_wrong += ef_citus_hash_text (d, strlen (d)) != want;
        shard_wrong += ef_citus_shards_index (map, d) != at;
        int w = ef_citus_shards_route (map, d, 3);
        route_wrong += w != at % 3;
        per_writer[w >= 0 && w < 3 ? w : 0]++;
    }
    if (hash_wrong || shard_wrong || route_wrong)
        fprintf (stderr, "%d shards: %d hashes, %d shards, %d routes wrong\n",
                 shards, hash_wrong, shard_wrong, route_wrong);
    EF_CHECK (hash_wrong == 0);
    EF_CHECK (shard_wrong == 0);
    EF_CHECK (route_wrong == 0);
    for (int w = 0; w < 3; w++)
        EF_CHECK (per_writer[w] > N / 6);
    EF_CHECK (ef_citus_shards_route (map, "doc-1", 1) == 0);
    /* more writers than shards: each writer gets documents, all of one
       shard (its index % shards), and a document keeps its writer */
    int many = 2 * shards + 1, used = 0;
    int *count = calloc ((size_t) many, sizeof *count);
    EF_REQUIRE (count);
    for (int i = 0; i < N; i++) {
        s_doc (i, doc, sizeof doc);
        int w = ef_citus_shards_route (map, doc, many);
        EF_CHECK (w >= 0 && w < many);
        if (w < 0 || w >= many)
            continue;
        EF_CHECK (w % shards == ef_citus_shards_index (map, doc));
        EF_CHECK (w == ef_citus_shards_route (map, doc, many));
        used += count[w]++ == 0;
    }
    EF_CHECK (used == many);
    free (count);
    PQclear (res);
    ef_buf_free (&arr);
    ef_citus_shards_destroy (&map);
    EF_CHECK (map == NULL);
    ef_citus_shards_destroy (&map);
    snprintf (sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    EF_CHECK (s_exec (conn, sql));
}

EF_TEST (citus_db_route_matches_the_cluster)
{
    char conninfo[1024], err[512];
    if (!s_citus_conninfo (conninfo, sizeof conninfo))
        return;
    PGconn *conn = ef_pg_connect (conninfo, "ef-unit", err, sizeof err);
    EF_REQUIRE (conn);
    /* the default shard count, a few, and ranges of uneven width */
    s_check_against_cluster (conn, ef_test_schema (), 32);
    s_check_against_cluster (conn, ef_test_schema (), 4);
    s_check_against_cluster (conn, ef_test_schema (), 7);
    PQfinish (conn);
}

EF_TEST (citus_db_shards_of_a_plain_table_are_refused)
{
    char conninfo[1024], err[512] = "";
    if (!s_citus_conninfo (conninfo, sizeof conninfo))
        return;
    PGconn *conn = ef_pg_connect (conninfo, "ef-unit", err, sizeof err);
    EF_REQUIRE (conn);
    const char *schema = ef_test_schema ();
    char sql[512];
    snprintf (sql, sizeof sql,
              "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s;"
              "CREATE TABLE %s.chunk (document_id text)",
              schema, schema, schema);
    EF_REQUIRE (s_exec (conn, sql));
    ef_citus_shards_t *map =
        ef_citus_shards_load (conn, schema, err, sizeof err);
    EF_CHECK (map == NULL);
    EF_CHECK (strstr (err, "not a distributed table") != NULL);
    /* a schema that does not exist is the same answer, not a crash */
    map = ef_citus_shards_load (conn, "no_such_schema_here", err, sizeof err);
    EF_CHECK (map == NULL);
    EF_CHECK (strstr (err, "no_such_schema_here") != NULL);
    snprintf (sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    EF_CHECK (s_exec (conn, sql));
    PQfinish (conn);
}
