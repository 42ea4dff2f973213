/*  fuzz_row_batch.c — a frame arriving on a db-writer's batches link.

    The bytes are one frame as the writer reads it. Everything the
    writer does before it talks to PostgreSQL runs here: decoding, the
    checks, de-duplication and content hashes of ef_pgwrite_batch (on a
    connection that is down, so it stops where it would send), the
    binary COPY data of every table, and each row turned back into the
    Embedding that its dead letter would carry. */
#include "fuzz.h"

#include <string.h>

#include <libpq-fe.h>

#include "embedflow/log.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "rows/linkwire.h"
#include "postgres/pgwrite.h"

#define S_DIM 4 /* the seeds' dimension */

static PGconn *s_conn;        /* never connected: a socket that is not there */
static ef_pgwrite_t *s_write; /* borrows s_conn */

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    ef_log_set_level (EF_LOG_ERROR);
    if (!s_conn) {
        s_conn = PQconnectdb ("host=/nonexistent/ef-fuzz port=1 "
                              "dbname=none user=none connect_timeout=1");
        EF_FUZZ_ASSERT (s_conn && PQstatus (s_conn) != CONNECTION_OK);
        s_write = ef_pgwrite_new (s_conn, "embedflow", S_DIM);
        EF_FUZZ_ASSERT (s_write != NULL);
    }
    char why[256] = "";
    Embedflow__V1__RowBatch *batch =
        ef_linkwire_row_batch (data, size, why, sizeof why);
    if (!batch) {
        EF_FUZZ_ASSERT (why[0] != '\0');
        return 0;
    }
    ef_write_report_t rep;
    ef_write_status_t st =
        ef_pgwrite_batch (s_write, batch->rows, batch->n_rows, &rep);
    EF_FUZZ_ASSERT (batch->n_rows == 0 ? st == EF_WRITE_OK : st != EF_WRITE_OK);
    EF_FUZZ_ASSERT (st == EF_WRITE_OK || rep.message[0] != '\0');

    Embedflow__V1__Row **ok =
        calloc (batch->n_rows ? batch->n_rows : 1, sizeof *ok);
    EF_FUZZ_ASSERT (ok != NULL);
    size_t good = 0;
    for (size_t i = 0; i < batch->n_rows; i++) {
        const Embedflow__V1__Row *row = batch->rows[i];
        /* Alone, as the writer's bisection tries it. */
        st = ef_pgwrite_batch (s_write, &batch->rows[i], 1, &rep);
        EF_FUZZ_ASSERT (st != EF_WRITE_OK);
        if (row->id.len == 16)
            ok[good++] = batch->rows[i];
        else
            EF_FUZZ_ASSERT (strcmp (rep.reason_code, "bad_row") == 0);
        /* Its dead letter's original must decode as an Embedding. */
        bool lost = false;
        size_t olen = 0;
        uint8_t *orig = ef_linkwire_row_original (row, &olen, &lost);
        EF_FUZZ_ASSERT (orig != NULL);
        Embedflow__V1__Embedding *e =
            embedflow__v1__embedding__unpack (NULL, olen, orig);
        EF_FUZZ_ASSERT (e != NULL);
        EF_FUZZ_ASSERT (e->chunk_index == row->chunk_index
                        && e->n_vector == row->n_vector);
        EF_FUZZ_ASSERT (strcmp (e->document_id, row->document_id) == 0);
        EF_FUZZ_ASSERT (!lost || e->n_metadata == 0);
        embedflow__v1__embedding__free_unpacked (e, NULL);
        free (orig);
    }
    /* The rows with a good id, as the COPYs would send them (the
       duplicate marks and the row order do not change the encoding). */
    const ef_copy_table_t tables[] = {EF_COPY_CHUNK, EF_COPY_EMBEDDING,
                                      EF_COPY_STAGE};
    const ef_vector_type_t types[] = {EF_VECTOR_REAL, EF_VECTOR_VECTOR,
                                      EF_VECTOR_HALFVEC};
    for (int t = 0; t < 3; t++)
        for (int v = 0; v < 3; v++) {
            size_t len = 0;
            char *copy =
                ef_pgwrite_copy_rows (tables[t], types[v], ok, good, &len);
            EF_FUZZ_ASSERT (copy != NULL && len >= 21);
            EF_FUZZ_ASSERT (memcmp (copy, "PGCOPY\n\377\r\n", 11) == 0);
            free (copy);
        }
    free (ok);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    return 0;
}
