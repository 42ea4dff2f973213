/*  batcher.c — per-writer batches with in-batch de-duplication. */
#include "rows/batcher.h"
#include "embedflow/actor.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

typedef struct {
    Embedflow__V1__Row **rows;   /* owned rows, arrival order */
    size_t n;                    /* rows held */
    size_t cap;                  /* slots allocated */
    size_t bytes;                /* sum of ef_batcher_row_bytes */
    size_t *keys;                /* open addressing on (document_id,
                                    chunk_index): slot in rows + 1, 0 =
                                    empty */
    size_t n_keys;               /* entries in keys, a power of 2 */
    int64_t oldest_us;           /* arrival of rows[0] */
    Embedflow__V1__Row **closed; /* a batch closed early, awaiting take */
    size_t n_closed;             /* rows in it */
} s_batch_t;

struct ef_batcher {
    s_batch_t *batches;                       /* one per writer */
    int writers;                              /* entries in batches */
    size_t max_rows;                          /* bound per batch */
    size_t max_bytes;                         /* bound per batch */
    uint64_t next_batch_id;                   /* stamped on each RowBatch */
    void (*row_free) (Embedflow__V1__Row *);  /* frees a row */
    int (*route) (const char *, int, void *); /* a row's writer, or NULL:
                                                 ef_batcher_route */
    void *route_arg;                          /* route's last argument */
};

static void
s_row_free_unpacked (Embedflow__V1__Row *row)
{
    protobuf_c_message_free_unpacked (&row->base, NULL);
}

void
ef_batcher_set_row_free (ef_batcher_t *self,
                         void (*row_free) (Embedflow__V1__Row *))
{
    self->row_free = row_free ? row_free : s_row_free_unpacked;
}

static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
ef_batcher_set_route (ef_batcher_t *self,
                      int (*route) (const char *document_id, int n, void *arg),
                      void *arg)
{
    self->route = route;
    self->route_arg = arg;
}

int
ef_batcher_route (const char *document_id, int n)
{
    return ef_route (document_id, n);
}

size_t
ef_batcher_row_bytes (const Embedflow__V1__Row *row)
{
    return 64 + row->n_vector * sizeof (float)
           + (row->document_id ? strlen (row->document_id) : 0)
           + (row->content ? strlen (row->content) : 0)
           + (row->metadata_json ? strlen (row->metadata_json) : 0)
           + (row->model ? strlen (row->model) : 0)
           + (row->source ? strlen (row->source) : 0)
           + (row->job_id ? strlen (row->job_id) : 0);
}

/* Where row's key is in b->keys, or the empty entry it would take. The
   table is kept at most half full, so the walk ends. */
static size_t
s_key_find (const s_batch_t *b, const Embedflow__V1__Row *row)
{
    size_t mask = b->n_keys - 1;
    size_t at = (size_t) XXH3_64bits_withSeed (row->document_id,
                                               strlen (row->document_id),
                                               row->chunk_index)
                & mask;
    for (size_t slot; (slot = b->keys[at]) != 0; at = (at + 1) & mask) {
        const Embedflow__V1__Row *o = b->rows[slot - 1];
        if (o->chunk_index == row->chunk_index
            && strcmp (o->document_id, row->document_id) == 0)
            break;
    }
    return at;
}

/* Sizes b->keys for rows keys at half load, empty. Returns 0, -1 when
   out of memory (b unchanged). */
static int
s_keys_reset (s_batch_t *b, size_t rows)
{
    size_t n = 16;
    while (n < 2 * rows)
        n *= 2;
    if (n != b->n_keys) {
        size_t *keys = realloc (b->keys, n * sizeof *keys);
        if (!keys)
            return -1;
        b->keys = keys;
        b->n_keys = n;
    }
    memset (b->keys, 0, b->n_keys * sizeof *b->keys);
    return 0;
}

/* Makes room for one more key: past half load the table doubles and
   the pending rows are placed again (only when rows outgrow max_rows,
   which closing a batch normally prevents). Returns 0 or -1. */
static int
s_keys_room (s_batch_t *b)
{
    if (2 * (b->n + 1) <= b->n_keys)
        return 0;
    if (s_keys_reset (b, b->n + 1) != 0)
        return -1;
    for (size_t i = 0; i < b->n; i++)
        b->keys[s_key_find (b, b->rows[i])] = i + 1;
    return 0;
}

ef_batcher_t *
ef_batcher_new (int writers, size_t max_rows, size_t max_bytes)
{
    ef_batcher_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->writers = writers > 0 ? writers : 1;
    self->row_free = s_row_free_unpacked;
    self->max_rows = max_rows ? max_rows : 1;
    self->max_bytes = max_bytes ? max_bytes : 1;
    self->batches = calloc ((size_t) self->writers, sizeof *self->batches);
    if (!self->batches) {
        free (self);
        return NULL;
    }
    for (int w = 0; w < self->writers; w++) {
        s_batch_t *b = &self->batches[w];
        b->cap = self->max_rows;
        b->rows = calloc (b->cap, sizeof *b->rows);
        b->oldest_us = -1;
        if (!b->rows || s_keys_reset (b, self->max_rows) != 0) {
            ef_batcher_destroy (&self);
            return NULL;
        }
    }
    return self;
}

static void
s_free_rows (ef_batcher_t *self, Embedflow__V1__Row **rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i])
            self->row_free (rows[i]);
}

void
ef_batcher_destroy (ef_batcher_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_batcher_t *self = *self_p;
    for (int w = 0; self->batches && w < self->writers; w++) {
        s_batch_t *b = &self->batches[w];
        if (b->rows)
            s_free_rows (self, b->rows, b->n);
        free (b->rows);
        if (b->closed)
            s_free_rows (self, b->closed, b->n_closed);
        free (b->closed);
        free (b->keys);
    }
    free (self->batches);
    free (self);
    *self_p = NULL;
}

/* Moves the pending rows of b into its closed slot. */
static int
s_close (s_batch_t *b, size_t cap)
{
    b->closed = b->rows;
    b->n_closed = b->n;
    b->rows = calloc (cap, sizeof *b->rows);
    if (!b->rows) {
        b->rows = b->closed;
        b->closed = NULL;
        b->n_closed = 0;
        return -1;
    }
    b->n = 0;
    b->bytes = 0;
    b->oldest_us = -1;
    memset (b->keys, 0, b->n_keys * sizeof *b->keys);
    return 0;
}

int
ef_batcher_add (ef_batcher_t *self, Embedflow__V1__Row **row_p)
{
    Embedflow__V1__Row *row = *row_p;
    *row_p = NULL;
    int w = self->route
                ? self->route (row->document_id, self->writers, self->route_arg)
                : ef_batcher_route (row->document_id, self->writers);
    if (w < 0 || w >= self->writers)
        w = ef_batcher_route (row->document_id, self->writers);
    s_batch_t *b = &self->batches[w];
    /* A closed batch must be taken before this writer gets more. */
    assert (!b->closed);
    size_t at = s_key_find (b, row);
    size_t slot = b->keys[at];
    int ready = -1;
    if (slot) {
        Embedflow__V1__Row *old = b->rows[slot - 1];
        /* Only a row of the same sending of the same chunk may take over
           another's count: acks and pull checkpoints settle rows per
           chunk and attempt (a re-sent chunk is counted from zero). */
        if (old->stream_id == row->stream_id && old->chunk_seq == row->chunk_seq
            && old->attempt == row->attempt) {
            row->covers += old->covers;
            b->bytes -= ef_batcher_row_bytes (old);
            self->row_free (old);
            b->rows[slot - 1] = row;
            b->bytes += ef_batcher_row_bytes (row);
            return -1;
        }
        if (s_close (b, self->max_rows) == 0)
            ready = w;
    }
    size_t bytes = ef_batcher_row_bytes (row);
    if (ready < 0 && b->n > 0
        && (b->n >= self->max_rows || b->bytes + bytes > self->max_bytes)
        && s_close (b, self->max_rows) == 0)
        ready = w;
    if (b->n == b->cap) {
        /* Only reachable when closing failed for lack of memory. */
        size_t cap = b->cap * 2;
        Embedflow__V1__Row **grown = realloc (b->rows, cap * sizeof *grown);
        if (!grown) {
            self->row_free (row);
            return ready;
        }
        b->rows = grown;
        b->cap = cap;
    }
    /* Out of memory growing the key table (only reachable when closing
       failed too), it still takes rows while it has an empty entry. */
    if (ready < 0 && s_keys_room (b) != 0 && b->n + 1 >= b->n_keys) {
        self->row_free (row);
        return ready;
    }
    at = s_key_find (b, row); /* the table may have been emptied or grown */
    if (b->n == 0)
        b->oldest_us = s_mono_us ();
    b->rows[b->n++] = row;
    b->bytes += bytes;
    b->keys[at] = b->n;
    if (ready < 0 && (b->n >= self->max_rows || b->bytes >= self->max_bytes)
        && s_close (b, self->max_rows) == 0)
        ready = w;
    return ready;
}

int
ef_batcher_full (const ef_batcher_t *self)
{
    for (int w = 0; w < self->writers; w++)
        if (self->batches[w].closed)
            return w;
    return -1;
}

Embedflow__V1__RowBatch *
ef_batcher_take_batch (ef_batcher_t *self, int w, size_t *rows_out)
{
    if (rows_out)
        *rows_out = 0;
    if (w < 0 || w >= self->writers)
        return NULL;
    s_batch_t *b = &self->batches[w];
    bool closed = b->closed != NULL;
    size_t n = closed ? b->n_closed : b->n;
    if (rows_out)
        *rows_out = n;
    if (n == 0)
        return NULL;
    Embedflow__V1__RowBatch *batch = malloc (sizeof *batch);
    /* the pending rows' array goes with them: a fresh one takes its place */
    Embedflow__V1__Row **fresh =
        closed ? NULL : calloc (self->max_rows, sizeof *fresh);
    if (!batch || (!closed && !fresh)) {
        free (batch);
        free (fresh);
        return NULL;
    }
    embedflow__v1__row_batch__init (batch);
    batch->batch_id = ++self->next_batch_id;
    batch->n_rows = n;
    if (closed) {
        batch->rows = b->closed;
        b->closed = NULL;
        b->n_closed = 0;
    }
    else {
        batch->rows = b->rows;
        b->rows = fresh;
        b->cap = self->max_rows;
        b->n = 0;
        b->bytes = 0;
        b->oldest_us = -1;
        memset (b->keys, 0, b->n_keys * sizeof *b->keys);
    }
    return batch;
}

zmsg_t *
ef_batcher_take (ef_batcher_t *self, int w, size_t *rows_out)
{
    Embedflow__V1__RowBatch *batch = ef_batcher_take_batch (self, w, rows_out);
    if (!batch)
        return NULL;
    size_t size = protobuf_c_message_get_packed_size (&batch->base);
    zframe_t *frame = zframe_new (NULL, size);
    zmsg_t *msg = frame ? zmsg_new () : NULL;
    if (msg) {
        protobuf_c_message_pack (&batch->base, zframe_data (frame));
        zmsg_append (msg, &frame);
    }
    zframe_destroy (&frame);
    s_free_rows (self, batch->rows, batch->n_rows);
    free (batch->rows);
    free (batch);
    return msg;
}

int64_t
ef_batcher_oldest_us (const ef_batcher_t *self, int w)
{
    return w >= 0 && w < self->writers ? self->batches[w].oldest_us : -1;
}

size_t
ef_batcher_pending (const ef_batcher_t *self, int w)
{
    return w >= 0 && w < self->writers ? self->batches[w].n : 0;
}
