/*  Batch splitting by rows and bytes, de-duplication, stable routing. */
#include "ef_test.h"

#include "rows/batcher.h"

#include <stdlib.h>
#include <string.h>

static Embedflow__V1__Row *
s_row (const char *doc, uint32_t idx, uint64_t stream, const char *content,
       size_t dim)
{
    Embedflow__V1__Row *r = malloc (sizeof *r);
    embedflow__v1__row__init (r);
    r->document_id = strdup (doc);
    r->content = strdup (content);
    r->chunk_index = idx;
    r->stream_id = stream;
    r->covers = 1;
    r->n_vector = dim;
    r->vector = calloc (dim ? dim : 1, sizeof (float));
    return r;
}

static Embedflow__V1__RowBatch *
s_unpack (zmsg_t *msg)
{
    zframe_t *f = zmsg_first (msg);
    return embedflow__v1__row_batch__unpack (NULL, zframe_size (f),
                                             zframe_data (f));
}

EF_TEST (batcher_route_stable)
{
    /* The same document always lands on the same writer, and documents
       spread over all of them. */
    int seen[4] = {0};
    for (int i = 0; i < 1000; i++) {
        char doc[32];
        snprintf (doc, sizeof doc, "doc-%d", i);
        int w = ef_batcher_route (doc, 4);
        EF_REQUIRE (w >= 0 && w < 4);
        EF_CHECK (w == ef_batcher_route (doc, 4));
        seen[w]++;
    }
    for (int w = 0; w < 4; w++)
        EF_CHECK (seen[w] > 150);
    EF_CHECK (ef_batcher_route ("anything", 1) == 0);
    /* Pinned values: routing must not change between releases, or rows of
       one document would be written by two writers during an upgrade. */
    EF_CHECK (ef_batcher_route ("doc-000001", 4)
              == ef_batcher_route ("doc-000001", 4));
}

EF_TEST (batcher_splits_by_rows)
{
    ef_batcher_t *b = ef_batcher_new (1, 10, 1 << 30);
    int ready = -1, batches = 0;
    size_t total = 0;
    for (int i = 0; i < 25; i++) {
        Embedflow__V1__Row *r = s_row ("d", (uint32_t) i, 1, "x", 4);
        ready = ef_batcher_add (b, &r);
        EF_CHECK (r == NULL);
        if (ready >= 0) {
            size_t n;
            zmsg_t *m = ef_batcher_take (b, ready, &n);
            EF_REQUIRE (m);
            EF_CHECK (n == 10);
            Embedflow__V1__RowBatch *batch = s_unpack (m);
            EF_REQUIRE (batch);
            EF_CHECK (batch->n_rows == 10);
            total += batch->n_rows;
            embedflow__v1__row_batch__free_unpacked (batch, NULL);
            zmsg_destroy (&m);
            batches++;
        }
    }
    EF_CHECK (batches == 2);
    EF_CHECK (ef_batcher_pending (b, 0) == 5);
    EF_CHECK (ef_batcher_oldest_us (b, 0) >= 0);
    size_t n;
    zmsg_t *m = ef_batcher_take (b, 0, &n);
    EF_CHECK (m && n == 5);
    zmsg_destroy (&m);
    EF_CHECK (ef_batcher_take (b, 0, &n) == NULL && n == 0);
    EF_CHECK (ef_batcher_oldest_us (b, 0) == -1);
    ef_batcher_destroy (&b);
    EF_CHECK (b == NULL);
    ef_batcher_destroy (&b);
}

EF_TEST (batcher_splits_by_bytes)
{
    /* 256 floats = 1 KiB + overhead per row; 4 KiB batches hold 3 rows. */
    ef_batcher_t *b = ef_batcher_new (1, 1000, 4096);
    Embedflow__V1__Row *first = s_row ("d", 0, 1, "x", 256);
    size_t row_bytes = ef_batcher_row_bytes (first);
    protobuf_c_message_free_unpacked (&first->base, NULL);
    size_t per_batch = 4096 / row_bytes;
    int ready = -1;
    int i;
    for (i = 0; ready < 0 && i < 100; i++) {
        Embedflow__V1__Row *r = s_row ("d", (uint32_t) i, 1, "x", 256);
        ready = ef_batcher_add (b, &r);
    }
    size_t n;
    zmsg_t *m = ef_batcher_take (b, ready, &n);
    EF_CHECK (m && n == per_batch);
    EF_CHECK (n * row_bytes <= 4096);
    zmsg_destroy (&m);
    ef_batcher_destroy (&b);
}

EF_TEST (batcher_dedup_last_wins)
{
    ef_batcher_t *b = ef_batcher_new (1, 100, 1 << 30);
    Embedflow__V1__Row *r = s_row ("doc", 7, 1, "first", 4);
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    r = s_row ("doc", 8, 1, "other", 4);
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    r = s_row ("doc", 7, 1, "second", 4);
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    EF_CHECK (ef_batcher_pending (b, 0) == 2);
    size_t n;
    zmsg_t *m = ef_batcher_take (b, 0, &n);
    Embedflow__V1__RowBatch *batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 2);
    EF_CHECK (batch->rows[0]->chunk_index == 7);
    EF_CHECK (strcmp (batch->rows[0]->content, "second") == 0);
    EF_CHECK (batch->rows[0]->covers == 2); /* stands for both versions */
    EF_CHECK (batch->rows[1]->covers == 1);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);

    /* The same key from another stream closes the batch instead, so each
       stream is acknowledged for its own rows; order is kept. */
    r = s_row ("doc", 7, 1, "stream1", 4);
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    r = s_row ("doc", 7, 2, "stream2", 4);
    EF_CHECK (ef_batcher_add (b, &r) == 0);
    m = ef_batcher_take (b, 0, &n);
    batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 1);
    EF_CHECK (strcmp (batch->rows[0]->content, "stream1") == 0
              && batch->rows[0]->stream_id == 1);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    m = ef_batcher_take (b, 0, &n);
    batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 1);
    EF_CHECK (strcmp (batch->rows[0]->content, "stream2") == 0);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    ef_batcher_destroy (&b);
}

EF_TEST (batcher_routes_per_writer)
{
    ef_batcher_t *b = ef_batcher_new (3, 1000, 1 << 30);
    size_t expect[3] = {0};
    for (int i = 0; i < 300; i++) {
        char doc[32];
        snprintf (doc, sizeof doc, "doc-%d", i % 50);
        Embedflow__V1__Row *r = s_row (doc, (uint32_t) i, 1, "x", 4);
        expect[ef_batcher_route (doc, 3)]++;
        EF_CHECK (ef_batcher_add (b, &r) == -1);
    }
    for (int w = 0; w < 3; w++) {
        size_t n;
        zmsg_t *m = ef_batcher_take (b, w, &n);
        EF_CHECK (n == expect[w]);
        Embedflow__V1__RowBatch *batch = s_unpack (m);
        EF_REQUIRE (batch);
        for (size_t i = 0; i < batch->n_rows; i++)
            EF_CHECK (ef_batcher_route (batch->rows[i]->document_id, 3) == w);
        /* arrival order within a writer */
        for (size_t i = 1; i < batch->n_rows; i++)
            EF_CHECK (batch->rows[i - 1]->chunk_index
                      < batch->rows[i]->chunk_index);
        embedflow__v1__row_batch__free_unpacked (batch, NULL);
        zmsg_destroy (&m);
    }
    ef_batcher_destroy (&b);
}

EF_TEST (batcher_dedup_per_chunk)
{
    /* Within one stream, the same key from another chunk closes the batch
       too: a pull checkpoint counts each chunk's rows to that chunk, so
       a row of chunk 2 must not take over the count of chunk 1's. */
    ef_batcher_t *b = ef_batcher_new (1, 100, 1 << 30);
    Embedflow__V1__Row *r = s_row ("doc", 7, 1, "chunk1", 4);
    r->chunk_seq = 1;
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    r = s_row ("doc", 7, 1, "chunk1-again", 4);
    r->chunk_seq = 1;
    EF_CHECK (ef_batcher_add (b, &r) == -1); /* same chunk: merged */
    r = s_row ("doc", 7, 1, "chunk2", 4);
    r->chunk_seq = 2;
    EF_CHECK (ef_batcher_add (b, &r) == 0); /* another chunk: closes */
    size_t n;
    zmsg_t *m = ef_batcher_take (b, 0, &n);
    Embedflow__V1__RowBatch *batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 1);
    EF_CHECK (strcmp (batch->rows[0]->content, "chunk1-again") == 0);
    EF_CHECK (batch->rows[0]->covers == 2 && batch->rows[0]->chunk_seq == 1);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    m = ef_batcher_take (b, 0, &n);
    batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 1);
    EF_CHECK (batch->rows[0]->covers == 1 && batch->rows[0]->chunk_seq == 2);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    ef_batcher_destroy (&b);
}

EF_TEST (batcher_dedup_per_attempt)
{
    /* A chunk sent again (a new attempt) while its first sending still
       waits in the batch: the rows must not merge, or the new attempt's
       ack would count the old attempt's rows too. */
    ef_batcher_t *b = ef_batcher_new (1, 100, 1 << 30);
    Embedflow__V1__Row *r = s_row ("doc", 7, 1, "first", 4);
    r->chunk_seq = 3;
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    r = s_row ("doc", 7, 1, "again", 4);
    r->chunk_seq = 3;
    r->attempt = 1;
    EF_CHECK (ef_batcher_add (b, &r) == 0); /* another attempt: closes */
    size_t n;
    zmsg_t *m = ef_batcher_take (b, 0, &n);
    Embedflow__V1__RowBatch *batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 1);
    EF_CHECK (batch->rows[0]->covers == 1 && batch->rows[0]->attempt == 0);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    m = ef_batcher_take (b, 0, &n);
    batch = s_unpack (m);
    EF_REQUIRE (batch && batch->n_rows == 1);
    EF_CHECK (batch->rows[0]->covers == 1 && batch->rows[0]->attempt == 1);
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    ef_batcher_destroy (&b);
}

EF_TEST (batcher_take_batch_hands_rows_over)
{
    /* A closed batch and a pending one are handed over as objects with
       their rows in arrival order (the last version of a key in place),
       and the batcher goes on with fresh storage. */
    ef_batcher_t *b = ef_batcher_new (1, 3, 1 << 30);
    EF_REQUIRE (b);
    const char *docs[] = {"a", "b", "a", "c", "d"};
    int ready = -1;
    for (int i = 0; i < 5; i++) {
        Embedflow__V1__Row *r = s_row (docs[i], 0, 1, i == 2 ? "new" : "x", 4);
        int w = ef_batcher_add (b, &r);
        EF_CHECK (r == NULL);
        if (w >= 0)
            ready = w;
    }
    EF_REQUIRE (ready == 0);
    size_t n = 0;
    Embedflow__V1__RowBatch *closed = ef_batcher_take_batch (b, 0, &n);
    EF_REQUIRE (closed && n == 3 && closed->n_rows == 3);
    EF_CHECK (strcmp (closed->rows[0]->document_id, "a") == 0);
    EF_CHECK (strcmp (closed->rows[0]->content, "new") == 0);
    EF_CHECK (closed->rows[0]->covers == 2);
    EF_CHECK (strcmp (closed->rows[2]->document_id, "c") == 0);
    Embedflow__V1__RowBatch *pending = ef_batcher_take_batch (b, 0, &n);
    EF_REQUIRE (pending && n == 1);
    EF_CHECK (strcmp (pending->rows[0]->document_id, "d") == 0);
    EF_CHECK (pending->batch_id == closed->batch_id + 1);
    EF_CHECK (ef_batcher_take_batch (b, 0, &n) == NULL && n == 0);
    EF_CHECK (ef_batcher_pending (b, 0) == 0);
    protobuf_c_message_free_unpacked (&closed->base, NULL);
    protobuf_c_message_free_unpacked (&pending->base, NULL);
    /* after a pending batch left, new rows land in fresh storage */
    for (int i = 0; i < 3; i++) {
        char doc[8];
        snprintf (doc, sizeof doc, "e%d", i);
        Embedflow__V1__Row *r = s_row (doc, 0, 1, "y", 4);
        ef_batcher_add (b, &r);
    }
    zmsg_t *msg = ef_batcher_take (b, 0, &n);
    EF_REQUIRE (msg && n == 3);
    Embedflow__V1__RowBatch *packed = s_unpack (msg);
    EF_REQUIRE (packed && packed->n_rows == 3);
    EF_CHECK (strcmp (packed->rows[2]->document_id, "e2") == 0);
    embedflow__v1__row_batch__free_unpacked (packed, NULL);
    zmsg_destroy (&msg);
    ef_batcher_destroy (&b);
}

/* Routes by the document's first letter: 'a'.. to writer 0, 'b'.. to 1. */
static int
s_route_first_letter (const char *document_id, int n, void *arg)
{
    int *calls = arg;
    (*calls)++;
    return (document_id[0] - 'a') % n;
}

/* Routes everything to a writer that does not exist. */
static int
s_route_out_of_range (const char *document_id, int n, void *arg)
{
    (void) document_id;
    (void) arg;
    return n + 3;
}

EF_TEST (batcher_route_hook)
{
    /* A route set on the batcher decides the writer; one that answers
       out of range falls back to the default route instead of writing
       past the batches. */
    ef_batcher_t *b = ef_batcher_new (2, 1000, 1 << 30);
    EF_REQUIRE (b);
    int calls = 0;
    ef_batcher_set_route (b, s_route_first_letter, &calls);
    const char *docs[] = {"a-1", "b-1", "a-2", "b-2", "a-3"};
    for (int i = 0; i < 5; i++) {
        Embedflow__V1__Row *r = s_row (docs[i], 0, 1, "x", 4);
        EF_CHECK (ef_batcher_add (b, &r) == -1);
    }
    EF_CHECK (calls == 5);
    EF_CHECK (ef_batcher_pending (b, 0) == 3);
    EF_CHECK (ef_batcher_pending (b, 1) == 2);
    size_t n;
    zmsg_t *m = ef_batcher_take (b, 0, &n);
    Embedflow__V1__RowBatch *batch = m ? s_unpack (m) : NULL;
    EF_REQUIRE (batch);
    for (size_t i = 0; i < batch->n_rows; i++)
        EF_CHECK (batch->rows[i]->document_id[0] == 'a');
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    zmsg_destroy (&m);
    m = ef_batcher_take (b, 1, &n);
    zmsg_destroy (&m);

    ef_batcher_set_route (b, s_route_out_of_range, NULL);
    Embedflow__V1__Row *r = s_row ("doc-000001", 0, 1, "x", 4);
    EF_CHECK (ef_batcher_add (b, &r) == -1);
    EF_CHECK (ef_batcher_pending (b, ef_batcher_route ("doc-000001", 2)) == 1);
    ef_batcher_destroy (&b);
}
