/*  cmd_dlq.c — `embedflow dlq`: look at, replay and purge dead letters.

      ls [--stage S] [--since T] [--json]   a table of the dead letters
      show ID                               one letter, its row decoded
      replay [ID...|--stage S|--all] [--dry-run]
                                            sends rows through the pipeline
      purge [--before T] [--replayed] [--yes]
                                            deletes letters

    T is anything PostgreSQL reads as a timestamptz ("2026-11-26 08:00",
    "today") or an age such as 30s, 10m, 2h, 7d (that long ago).

    replay starts the whole pipeline in this process on a free loopback
    port (as demo does) and uploads the original rows with the built-in
    gRPC client, grouped by their source, so they are validated and
    written exactly like new input; a row that fails again is dead-lettered
    again as a new letter. Letters are marked replayed (replayed_at) once
    their upload was answered; a crash before that only means a later
    replay sends them again, which the idempotent upsert makes harmless.
    Without explicit IDs only letters not yet replayed are chosen.
*/
#include "cli/cli.h"
#include "testkit/loadgen.h"

#include "embedflow/buf.h"
#include "embedflow/log.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "postgres/pg.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_MAX_IDS         4096
#define S_CHUNK_BYTES_MAX (2 * 1024 * 1024)
#define S_CHUNK_ITEMS_MAX 256

/* SQL for "created_at compared with T": an age or a timestamp. */
#define S_TIME_SQL                                                             \
    "(CASE WHEN %s ~ '^[0-9]+ *[smhd]$' THEN now () - %s::interval "           \
    "ELSE %s::timestamptz END)"

/* Everything the command line said. */
typedef struct {
    const char *action;         /* ls, show, replay, purge */
    const char *ids[S_MAX_IDS]; /* positional IDs (validated digits) */
    int n_ids;                  /* used */
    char *stage;                /* --stage */
    char *since;                /* --since */
    char *before;               /* --before */
    char *json;                 /* --json (switch) */
    char *all;                  /* --all (switch) */
    char *dry_run;              /* --dry-run (switch) */
    char *replayed;             /* --replayed (switch) */
    char *yes;                  /* --yes (switch) */
} s_args_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: embedflow dlq ACTION [options]\n"
             "\n"
             "  ls [--stage S] [--since T] [--json]      list dead letters "
             "(id, time, stage,\n"
             "                                           reason, "
             "document_id)\n"
             "  show ID                                  one dead letter, "
             "its row decoded\n"
             "  replay [ID...|--stage S|--all] [--dry-run]\n"
             "                                           send the rows "
             "through the pipeline\n"
             "                                           again and mark them "
             "replayed\n"
             "  purge [--before T] [--replayed] [--yes]  delete dead letters "
             "(asks first)\n"
             "\n"
             "T: a timestamp PostgreSQL understands (\"2026-11-26 08:00\") "
             "or an age (30s, 10m, 2h, 7d).\n"
             "The database flags are those of run (--database, --schema, "
             "--data-dir, --config).\n");
}

/* True when s is a positive decimal number. */
static bool
s_is_id (const char *s)
{
    if (!*s || strlen (s) > 18)
        return false;
    for (const char *p = s; *p; p++)
        if (!isdigit ((unsigned char) *p))
            return false;
    return true;
}

/* Splits the action word and the IDs from argv (into args) and leaves
   the flags in out (argv[0] first). Returns 0, or EF_EXIT_USAGE after
   printing why. */
static int
s_split_args (int argc, char **argv, const char *const *switches,
              s_args_t *args, char **out, int *out_n)
{
    int n = 0;
    out[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-') {
            out[n++] = argv[i];
            bool is_switch = strchr (a, '=') != NULL || strcmp (a, "-v") == 0
                             || strcmp (a, "-h") == 0;
            for (const char *const *s = switches; *s && !is_switch; s++)
                if (strcmp (a + 2, *s) == 0)
                    is_switch = true;
            if (!is_switch && i + 1 < argc)
                out[n++] = argv[++i];
            continue;
        }
        if (!args->action)
            args->action = a;
        else if (s_is_id (a) && args->n_ids < S_MAX_IDS)
            args->ids[args->n_ids++] = a;
        else {
            fprintf (stderr, "embedflow dlq: unexpected argument '%s'\n", a);
            return EF_EXIT_USAGE;
        }
    }
    *out_n = n;
    return EF_EXIT_OK;
}

/* "schema"."dead_letter" quoted for conn, heap; NULL out of memory. */
static char *
s_table (PGconn *conn, const char *schema)
{
    char *q = ef_pg_ident (conn, schema);
    char *t = NULL;
    if (q && asprintf (&t, "%s.dead_letter", q) < 0)
        t = NULL;
    free (q);
    return t;
}

/* Runs sql with text params; prints the database's error and returns NULL
   unless the result has status want. */
static PGresult *
s_query (PGconn *conn, const char *sql, int n, const char *const *params,
         ExecStatusType want)
{
    PGresult *res = PQexecParams (conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus (res) != want) {
        char msg[1024], state[6];
        ef_pg_error (conn, res, state, msg, sizeof msg);
        fprintf (stderr, "embedflow dlq: %s%s%s\n", msg, *state ? " " : "",
                 state);
        PQclear (res);
        return NULL;
    }
    return res;
}

/* The ids as a PostgreSQL array literal "{1,2}" (heap), NULL when none
   or out of memory. */
static char *
s_id_array (const s_args_t *args)
{
    if (args->n_ids == 0)
        return NULL;
    size_t len = 3;
    for (int i = 0; i < args->n_ids; i++)
        len += strlen (args->ids[i]) + 1;
    char *out = malloc (len);
    if (!out)
        return NULL;
    char *w = out;
    *w++ = '{';
    for (int i = 0; i < args->n_ids; i++)
        w += sprintf (w, "%s%s", i ? "," : "", args->ids[i]);
    *w++ = '}';
    *w = '\0';
    return out;
}

/* --- ls ------------------------------------------------------------------ */

/* Lists letters as a table or JSON. Returns an exit code. */
static int
s_ls (PGconn *conn, const char *table, const s_args_t *args)
{
    char *sql = NULL;
    const char *params[] = {args->stage, args->since};
    const char *cols =
        "id, to_char (created_at, 'YYYY-MM-DD HH24:MI:SS TZ') AS time, "
        "stage, reason_code, coalesce (sqlstate, '') AS sqlstate, "
        "coalesce (document_id, '') AS document_id, reason, "
        "replayed_at IS NOT NULL AS replayed";
    char where[512];
    snprintf (where, sizeof where,
              "WHERE ($1::text IS NULL OR stage = $1) AND ($2::text IS NULL "
              "OR created_at >= " S_TIME_SQL ")",
              "$2", "$2", "$2");
    int rc = args->json
                 ? asprintf (&sql,
                             "SELECT coalesce (json_agg (row_to_json (d) "
                             "ORDER BY d.id), '[]') FROM (SELECT %s FROM %s "
                             "%s) d",
                             cols, table, where)
                 : asprintf (&sql, "SELECT %s FROM %s %s ORDER BY id", cols,
                             table, where);
    if (rc < 0)
        return EF_EXIT_FAIL;
    PGresult *res = s_query (conn, sql, 2, params, PGRES_TUPLES_OK);
    free (sql);
    if (!res)
        return EF_EXIT_FAIL;
    if (args->json)
        printf ("%s\n", PQgetvalue (res, 0, 0));
    else {
        printf ("%-8s %-23s %-10s %-28s %s\n", "ID", "TIME", "STAGE", "REASON",
                "DOCUMENT_ID");
        for (int r = 0; r < PQntuples (res); r++) {
            char reason[64];
            snprintf (reason, sizeof reason, "%s%s%s%s", PQgetvalue (res, r, 3),
                      *PQgetvalue (res, r, 4) ? " (" : "",
                      PQgetvalue (res, r, 4),
                      *PQgetvalue (res, r, 4) ? ")" : "");
            printf ("%-8s %-23s %-10s %-28s %s%s\n", PQgetvalue (res, r, 0),
                    PQgetvalue (res, r, 1), PQgetvalue (res, r, 2), reason,
                    PQgetvalue (res, r, 5),
                    strcmp (PQgetvalue (res, r, 7), "t") == 0 ? "  [replayed]"
                                                              : "");
        }
        printf ("%d dead letter%s\n", PQntuples (res),
                PQntuples (res) == 1 ? "" : "s");
    }
    PQclear (res);
    return EF_EXIT_OK;
}

/* --- show ---------------------------------------------------------------- */

/* Prints a decoded Embedding. */
static void
s_print_embedding (const Embedflow__V1__Embedding *e)
{
    printf ("original (embedflow.v1.Embedding):\n");
    printf ("  id:          %s\n", *e->id ? e->id : "(none: minted on write)");
    printf ("  document_id: %s\n", e->document_id);
    printf ("  chunk_index: %" PRIu32 "\n", e->chunk_index);
    printf ("  model:       %s\n", e->model);
    printf ("  content:     %s\n", e->content);
    printf ("  metadata:    {");
    for (size_t i = 0; i < e->n_metadata; i++)
        printf ("%s\"%s\": \"%s\"", i ? ", " : "", e->metadata[i]->key,
                e->metadata[i]->value);
    printf ("}\n");
    printf ("  vector:      %zu floats [", e->n_vector);
    for (size_t i = 0; i < e->n_vector; i++)
        printf ("%s%.9g", i ? ", " : "", (double) e->vector[i]);
    printf ("]\n");
}

/* Shows one letter with its original row decoded. Returns an exit code. */
static int
s_show (PGconn *conn, const char *table, const s_args_t *args)
{
    if (args->n_ids != 1) {
        fprintf (stderr, "embedflow dlq show: give exactly one ID\n");
        return EF_EXIT_USAGE;
    }
    const char *params[] = {args->ids[0]};
    char *sql = NULL;
    if (asprintf (&sql,
                  "SELECT id, created_at, stage, reason_code, reason, "
                  "coalesce (sqlstate, ''), attempts, coalesce (job_id, ''), "
                  "coalesce (source, ''), coalesce (document_id, ''), covers, "
                  "coalesce (replayed_at::text, '') FROM %s WHERE id = $1",
                  table)
        < 0)
        return EF_EXIT_FAIL;
    PGresult *res = s_query (conn, sql, 1, params, PGRES_TUPLES_OK);
    free (sql);
    if (!res)
        return EF_EXIT_FAIL;
    if (PQntuples (res) != 1) {
        fprintf (stderr, "embedflow dlq: no dead letter %s\n", args->ids[0]);
        PQclear (res);
        return EF_EXIT_FAIL;
    }
    const char *names[] = {"id",     "time",        "stage",    "reason_code",
                           "reason", "sqlstate",    "attempts", "job_id",
                           "source", "document_id", "covers",   "replayed_at"};
    for (int c = 0; c < 12; c++)
        printf ("%-13s%s\n", names[c], PQgetvalue (res, 0, c));
    PQclear (res);

    /* original in binary: the exact bytes. */
    if (asprintf (&sql, "SELECT original FROM %s WHERE id = $1", table) < 0)
        return EF_EXIT_FAIL;
    res = PQexecParams (conn, sql, 1, NULL, params, NULL, NULL, 1);
    free (sql);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
        fprintf (stderr, "embedflow dlq: %s", PQerrorMessage (conn));
        PQclear (res);
        return EF_EXIT_FAIL;
    }
    if (PQgetisnull (res, 0, 0))
        printf ("original     (none)\n");
    else {
        size_t len = (size_t) PQgetlength (res, 0, 0);
        const uint8_t *data = (const uint8_t *) PQgetvalue (res, 0, 0);
        Embedflow__V1__Embedding *e =
            embedflow__v1__embedding__unpack (NULL, len, data);
        if (e) {
            s_print_embedding (e);
            embedflow__v1__embedding__free_unpacked (e, NULL);
        }
        else {
            printf ("original     %zu bytes, not an Embedding:", len);
            for (size_t i = 0; i < len && i < 64; i++)
                printf (" %02x", data[i]);
            printf ("%s\n", len > 64 ? " ..." : "");
        }
    }
    PQclear (res);
    return EF_EXIT_OK;
}

/* --- replay -------------------------------------------------------------- */

/* Appends a protobuf varint. */
static int
s_put_varint (ef_buf_t *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t) ((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return ef_buf_put (b, tmp, n);
}

/* The letters of one source, encoded as EmbeddingChunks. */
typedef struct {
    ef_loadgen_chunk_t *chunks; /* data points into bufs */
    ef_buf_t *bufs;             /* one per chunk */
    size_t n;                   /* chunks */
    size_t cap;                 /* allocated */
    size_t items;               /* rows in all chunks */
} s_upload_t;

/* Appends one Embedding (its exact bytes, as field 1 of an
   EmbeddingChunk) to the upload, starting a new chunk when the current
   one is full. Returns 0, -1 out of memory. */
static int
s_upload_add (s_upload_t *u, const uint8_t *orig, size_t len)
{
    bool full = u->n == 0 || u->chunks[u->n - 1].rows >= S_CHUNK_ITEMS_MAX
                || u->bufs[u->n - 1].len + len > S_CHUNK_BYTES_MAX;
    if (full) {
        if (u->n == u->cap) {
            size_t cap = u->cap ? u->cap * 2 : 8;
            void *c = realloc (u->chunks, cap * sizeof *u->chunks);
            if (!c)
                return -1;
            u->chunks = c;
            void *b = realloc (u->bufs, cap * sizeof *u->bufs);
            if (!b)
                return -1;
            u->bufs = b;
            u->cap = cap;
        }
        memset (&u->chunks[u->n], 0, sizeof u->chunks[u->n]);
        memset (&u->bufs[u->n], 0, sizeof u->bufs[u->n]);
        u->n++;
    }
    ef_buf_t *b = &u->bufs[u->n - 1];
    uint8_t tag = 0x0a; /* field 1, length-delimited */
    if (ef_buf_put (b, &tag, 1) != 0 || s_put_varint (b, len) != 0
        || ef_buf_put (b, orig, len) != 0)
        return -1;
    u->chunks[u->n - 1].rows++;
    u->items++;
    return 0;
}

/* Ends every chunk with its seq (1, 2, ...) and points the chunk table
   at the buffers. Returns 0, -1 out of memory. */
static int
s_upload_finish (s_upload_t *u)
{
    for (size_t i = 0; i < u->n; i++) {
        uint8_t tag = 0x10; /* field 2, varint */
        if (ef_buf_put (&u->bufs[i], &tag, 1) != 0
            || s_put_varint (&u->bufs[i], i + 1) != 0)
            return -1;
        u->chunks[i].data = (const uint8_t *) u->bufs[i].data;
        u->chunks[i].size = u->bufs[i].len;
    }
    return 0;
}

/* Frees an upload's buffers. */
static void
s_upload_free (s_upload_t *u)
{
    for (size_t i = 0; i < u->n; i++)
        free (u->bufs[i].data);
    free (u->bufs);
    free (u->chunks);
    memset (u, 0, sizeof *u);
}

/* Reads <schema>.setting's dim into the config, so the replay validates
   rows against the schema's own dimension. Returns 0 or -1. */
static int
s_use_schema_dim (ef_cli_t *cli, PGconn *conn)
{
    char *q = ef_pg_ident (conn, cli->globals->schema);
    char *sql = NULL;
    if (!q
        || asprintf (&sql, "SELECT value FROM %s.setting WHERE key = 'dim'", q)
               < 0) {
        free (q);
        return -1;
    }
    free (q);
    PGresult *res = s_query (conn, sql, 0, NULL, PGRES_TUPLES_OK);
    free (sql);
    if (!res)
        return -1;
    int rc = -1;
    char err[256];
    if (PQntuples (res) == 1
        && ef_config_set (cli->config, "dim", PQgetvalue (res, 0, 0), err,
                          sizeof err)
               == 0)
        rc = 0;
    PQclear (res);
    return rc;
}

/* The selection replay works on: explicit IDs, else letters not yet
   replayed (of one stage when $2 is set). */
#define S_CHOSEN                                                               \
    "(($1::bigint[] IS NOT NULL AND id = ANY ($1::bigint[])) OR "              \
    "($1::bigint[] IS NULL AND replayed_at IS NULL AND "                       \
    "($2::text IS NULL OR stage = $2)))"

/* Failed invalidations carry no row: replaying one puts its document id
   back into the invalidation outbox (in the same statement that marks
   it replayed), for the cache-invalidator of the next `run` with an API
   server. Prints what it did; returns 0 or -1. */
static int
s_requeue_invalidations (ef_cli_t *cli, PGconn *conn, const char *table,
                         const char *const *params, bool dry_run)
{
    char *schema = ef_pg_ident (conn, cli->globals->schema);
    char *sql = NULL;
    int rc = schema ? 0 : -1;
    if (rc == 0 && dry_run)
        rc = asprintf (&sql,
                       "SELECT count (*) FROM %s WHERE stage = 'invalidate' "
                       "AND document_id IS NOT NULL AND " S_CHOSEN,
                       table);
    else if (rc == 0)
        rc = asprintf (
            &sql,
            "WITH r AS (UPDATE %s SET replayed_at = now () WHERE "
            "stage = 'invalidate' AND document_id IS NOT NULL AND " S_CHOSEN
            " RETURNING document_id, coalesce (source, '') "
            "AS source) INSERT INTO %s.invalidation_outbox "
            "(document_id, source) SELECT document_id, source FROM r",
            table, schema);
    free (schema);
    if (rc < 0)
        return -1;
    PGresult *res = s_query (conn, sql, 2, params,
                             dry_run ? PGRES_TUPLES_OK : PGRES_COMMAND_OK);
    free (sql);
    if (!res)
        return -1;
    const char *n = dry_run ? PQgetvalue (res, 0, 0) : PQcmdTuples (res);
    if (strcmp (n, "0") != 0)
        printf ("%s %s failed invalidation%s to the outbox\n",
                dry_run ? "would return" : "returned", n,
                strcmp (n, "1") == 0 ? "" : "s");
    PQclear (res);
    return 0;
}

/* Replays the chosen letters. Returns an exit code. */
static int
s_replay (ef_cli_t *cli, PGconn *conn, const char *table, const s_args_t *args)
{
    int chosen =
        (args->n_ids > 0) + (args->stage != NULL) + (args->all != NULL);
    if (chosen != 1) {
        fprintf (stderr, "embedflow dlq replay: give IDs, --stage S or --all "
                         "(one of them)\n");
        return EF_EXIT_USAGE;
    }
    char *ids = s_id_array (args);
    const char *params[] = {ids, args->stage};
    char *sql = NULL;
    if (s_requeue_invalidations (cli, conn, table, params, args->dry_run) != 0
        || asprintf (&sql,
                     "SELECT id, coalesce (source, ''), original FROM %s "
                     "WHERE stage <> 'invalidate' AND " S_CHOSEN
                     " ORDER BY source, id",
                     table)
               < 0) {
        free (ids);
        return EF_EXIT_FAIL;
    }
    PGresult *res = PQexecParams (conn, sql, 2, NULL, params, NULL, NULL, 1);
    free (sql);
    free (ids);
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        fprintf (stderr, "embedflow dlq: %s", PQerrorMessage (conn));
        PQclear (res);
        return EF_EXIT_FAIL;
    }
    int rows = PQntuples (res);
    /* Binary results: id is int8 big-endian. Letters without an
       Embedding (a failed invalidation, an undecodable frame) cannot go
       through the pipeline. */
    int64_t *letter_ids = calloc ((size_t) rows + 1, sizeof *letter_ids);
    bool *usable = calloc ((size_t) rows + 1, sizeof *usable);
    int n_usable = 0;
    for (int r = 0; letter_ids && usable && r < rows; r++) {
        uint64_t be = 0;
        memcpy (&be, PQgetvalue (res, r, 0), 8);
        letter_ids[r] = (int64_t) be64toh (be);
        size_t len = (size_t) PQgetlength (res, r, 2);
        Embedflow__V1__Embedding *e =
            PQgetisnull (res, r, 2)
                ? NULL
                : embedflow__v1__embedding__unpack (
                    NULL, len, (const uint8_t *) PQgetvalue (res, r, 2));
        if (e) {
            usable[r] = true;
            n_usable++;
            embedflow__v1__embedding__free_unpacked (e, NULL);
        }
        else
            printf ("dead letter %" PRId64 " has no row to replay: skipped\n",
                    letter_ids[r]);
    }
    if (!letter_ids || !usable) {
        free (letter_ids);
        free (usable);
        PQclear (res);
        return EF_EXIT_FAIL;
    }
    if (args->dry_run || n_usable == 0) {
        if (n_usable == 0)
            printf ("no dead letters to replay\n");
        else {
            printf ("would replay %d dead letter%s:", n_usable,
                    n_usable == 1 ? "" : "s");
            for (int r = 0; r < rows; r++)
                if (usable[r])
                    printf (" %" PRId64, letter_ids[r]);
            printf ("\n");
        }
        free (letter_ids);
        free (usable);
        PQclear (res);
        return EF_EXIT_OK;
    }

    /* The pipeline, in this process, on a free loopback port. */
    int rc = EF_EXIT_FAIL;
    ef_runtime_t *rt = NULL;
    char listen[64];
    if (s_use_schema_dim (cli, conn) != 0)
        fprintf (stderr, "embedflow dlq: cannot read the schema's dim\n");
    else /* only the letters are sent: no pull job runs */
        rt = ef_cli_start_here (cli, EF_CLI_JOBS_NONE, listen, sizeof listen);
    uint64_t written = 0, dead = 0;
    int replayed = 0;
    bool failed = rt == NULL;
    for (int r = 0; rt && r < rows;) {
        /* One upload per source, so each row keeps its source. */
        const char *source = PQgetvalue (res, r, 1);
        int end = r;
        while (end < rows && strcmp (PQgetvalue (res, end, 1), source) == 0)
            end++;
        s_upload_t up = {0};
        bool oom = false;
        for (int k = r; k < end && !oom; k++)
            if (usable[k])
                oom =
                    s_upload_add (&up, (const uint8_t *) PQgetvalue (res, k, 2),
                                  (size_t) PQgetlength (res, k, 2))
                    != 0;
        oom = oom || s_upload_finish (&up) != 0;
        ef_loadgen_opts_t opts = {0};
        opts.target = listen;
        opts.source = *source ? source : NULL;
        opts.timeout_ms = 600000;
        ef_loadgen_result_t result;
        if (oom)
            fprintf (stderr, "embedflow dlq: out of memory\n");
        else if (up.n && ef_loadgen_send (&opts, up.chunks, up.n, &result) != 0)
            fprintf (stderr,
                     "embedflow dlq: replay of source '%s' failed: "
                     "%s\n",
                     source, result.error);
        else if (up.n) {
            written += result.written;
            dead += result.dead_lettered;
            /* Answered: every row is written or dead-lettered anew. */
            char *sql_mark = NULL, *list = NULL;
            size_t list_len = 0;
            FILE *f = open_memstream (&list, &list_len);
            if (f) {
                fputc ('{', f);
                for (int k = r, m = 0; k < end; k++)
                    if (usable[k])
                        fprintf (f, "%s%" PRId64, m++ ? "," : "",
                                 letter_ids[k]);
                fputc ('}', f);
                fclose (f);
            }
            const char *mp[] = {list};
            PGresult *mres = NULL;
            if (list
                && asprintf (&sql_mark,
                             "UPDATE %s SET replayed_at = now () WHERE id = "
                             "ANY ($1::bigint[])",
                             table)
                       >= 0
                && (mres = s_query (conn, sql_mark, 1, mp, PGRES_COMMAND_OK)))
                replayed += atoi (PQcmdTuples (mres));
            else
                oom = true;
            PQclear (mres);
            free (sql_mark);
            free (list);
        }
        failed = failed || oom || (up.n && result.failed_streams);
        s_upload_free (&up);
        r = end;
    }
    if (rt) {
        ef_runtime_stop (rt);
        if (ef_cli_wait_runtime (rt) != 0)
            failed = true;
        ef_runtime_destroy (&rt);
    }
    printf ("replayed %d dead letter%s: %" PRIu64 " written, %" PRIu64
            " dead-lettered again\n",
            replayed, replayed == 1 ? "" : "s", written, dead);
    if (!failed)
        rc = EF_EXIT_OK;
    free (letter_ids);
    free (usable);
    PQclear (res);
    return rc;
}

/* --- purge --------------------------------------------------------------- */

/* Deletes the chosen letters after asking. Returns an exit code. */
static int
s_purge (PGconn *conn, const char *table, const s_args_t *args)
{
    char where[512];
    snprintf (where, sizeof where,
              "WHERE ($1::text IS NULL OR created_at < " S_TIME_SQL
              ") AND (NOT $2::bool OR replayed_at IS NOT NULL)",
              "$1", "$1", "$1");
    const char *params[] = {args->before, args->replayed ? "t" : "f"};
    char *sql = NULL;
    if (asprintf (&sql, "SELECT count (*) FROM %s %s", table, where) < 0)
        return EF_EXIT_FAIL;
    PGresult *res = s_query (conn, sql, 2, params, PGRES_TUPLES_OK);
    free (sql);
    if (!res)
        return EF_EXIT_FAIL;
    long n = atol (PQgetvalue (res, 0, 0));
    PQclear (res);
    if (n == 0) {
        printf ("no dead letters to purge\n");
        return EF_EXIT_OK;
    }
    if (!args->yes) {
        if (!isatty (STDIN_FILENO)) {
            fprintf (stderr,
                     "embedflow dlq purge: would delete %ld dead letter%s; "
                     "not asking without a terminal: add --yes\n",
                     n, n == 1 ? "" : "s");
            return EF_EXIT_USAGE;
        }
        fprintf (stderr, "delete %ld dead letter%s? [y/N] ", n,
                 n == 1 ? "" : "s");
        char answer[16] = "";
        if (!fgets (answer, sizeof answer, stdin)
            || (answer[0] != 'y' && answer[0] != 'Y')) {
            printf ("nothing deleted\n");
            return EF_EXIT_OK;
        }
    }
    if (asprintf (&sql, "DELETE FROM %s %s", table, where) < 0)
        return EF_EXIT_FAIL;
    res = s_query (conn, sql, 2, params, PGRES_COMMAND_OK);
    free (sql);
    if (!res)
        return EF_EXIT_FAIL;
    printf ("purged %s dead letter%s\n", PQcmdTuples (res),
            strcmp (PQcmdTuples (res), "1") == 0 ? "" : "s");
    PQclear (res);
    return EF_EXIT_OK;
}

/* --- the command --------------------------------------------------------- */

int
ef_cmd_dlq (int argc, char **argv)
{
    ef_signals_init ();
    s_args_t args;
    memset (&args, 0, sizeof args);
    const ef_cli_flag_t flags[] = {
        {"stage", "S", "only letters of this stage", &args.stage, NULL, NULL},
        {"since", "T", "ls: only letters from T on", &args.since, NULL, NULL},
        {"before", "T", "purge: only letters older than T", &args.before, NULL,
         NULL},
        {"json", NULL, "ls: print JSON", &args.json, NULL, NULL},
        {"all", NULL, "replay: every letter not replayed yet", &args.all, NULL,
         NULL},
        {"dry-run", NULL, "replay: only say what would be sent", &args.dry_run,
         NULL, NULL},
        {"replayed", NULL, "purge: only letters already replayed",
         &args.replayed, NULL, NULL},
        {"yes", NULL, "purge: do not ask", &args.yes, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    const char *switches[] = {"json", "all",     "dry-run", "replayed",
                              "yes",  "verbose", "help",    NULL};
    char **rest = calloc ((size_t) argc + 1, sizeof *rest);
    int n_rest = 0;
    if (!rest)
        return EF_EXIT_FAIL;
    int rc = s_split_args (argc, argv, switches, &args, rest, &n_rest);
    ef_cli_t cli;
    bool help = false;
    if (rc == EF_EXIT_OK)
        rc = ef_cli_load (&cli, "dlq", n_rest, rest, flags, &help);
    else
        memset (&cli, 0, sizeof cli);
    free (rest);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            s_usage (stdout);
            printf ("\ndlq options:\n");
            ef_cli_print_flags (flags);
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    const char *a = args.action;
    if (!a
        || (strcmp (a, "ls") && strcmp (a, "show") && strcmp (a, "replay")
            && strcmp (a, "purge"))) {
        if (a)
            fprintf (stderr, "embedflow dlq: unknown action '%s'\n\n", a);
        s_usage (stderr);
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    if (args.n_ids && strcmp (a, "show") && strcmp (a, "replay")) {
        fprintf (stderr, "embedflow dlq %s: takes no IDs\n", a);
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_EXISTING);
    if (db_rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return db_rc;
    }
    char err[1024];
    PGconn *conn =
        ef_pg_connect (cli.globals->database, "embedflow dlq", err, sizeof err);
    if (!conn) {
        fprintf (stderr, "embedflow dlq: %s\n", err);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    char *table = s_table (conn, cli.globals->schema);
    if (!table)
        rc = EF_EXIT_FAIL;
    else if (strcmp (a, "ls") == 0)
        rc = s_ls (conn, table, &args);
    else if (strcmp (a, "show") == 0)
        rc = s_show (conn, table, &args);
    else if (strcmp (a, "replay") == 0)
        rc = s_replay (&cli, conn, table, &args);
    else
        rc = s_purge (conn, table, &args);
    free (table);
    PQfinish (conn);
    ef_cli_close (&cli);
    return rc;
}
