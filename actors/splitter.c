/*  splitter.c — validates rows, dead-letters the bad ones, re-splits the
    good ones into per-writer database batches.

    In:  chunks   [ChunkHeader][EmbeddingChunk bytes] from the receiver
    Out: batches  RowBatch to db-writer route(document_id) (with
                  distribution citus: its Citus shard's index % writers,
                  postgres/citus_route.h); to db-writers
                  in this process, as an object (ef_actor_send_local), not
                  bytes
         dead     DeadLetter for each row that fails validation

    A batch leaves when it is full (rows or bytes) or when its oldest row
    has waited `linger`; so a steady stream makes full batches and the
    tail of a stream is not held back. Sending blocks while a writer's
    queue is full: backpressure reaches the receiver through the chunks
    link.
*/
#include "embedflow/actor.h"
#include "embedflow/buf.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"
#include "pipeline/pipeline.h"
#include "postgres/citus_route.h"
#include "postgres/pg.h"

#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "rows/badrows.h"
#include "rows/batcher.h"
#include "rows/chunkwire.h"
#include "rows/uuid7.h"
#include "rows/validate.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t batch_rows;  /* rows per database batch */
    int64_t batch_bytes; /* bytes per database batch */
    int64_t linger_ms;   /* longest a partial batch waits */
    int64_t max_content_bytes;
    int64_t max_metadata_bytes;
    int64_t max_document_id_bytes;
    int64_t max_model_bytes;
    int64_t max_bad_rows;    /* an upload with more bad rows ... */
    int64_t max_bad_percent; /* ... that are also this share is ended */
    int64_t hold_bytes;      /* batches held for a writer whose peer is gone */
} s_options_t;

static const ef_option_t s_options[] = {
    {"batch_rows", EF_OPT_INT, "1000", offsetof (s_options_t, batch_rows), 1,
     1000000, "rows per database transaction"},
    {"batch_bytes", EF_OPT_SIZE, "16M", offsetof (s_options_t, batch_bytes),
     1024, (int64_t) 1 << 32, "bytes per database transaction"},
    {"linger", EF_OPT_MS, "20ms", offsetof (s_options_t, linger_ms), 0, 60000,
     "longest a partial batch waits for more rows"},
    {"max_content_bytes", EF_OPT_SIZE, "1M",
     offsetof (s_options_t, max_content_bytes), 0, (int64_t) 1 << 30,
     "largest content accepted"},
    {"max_metadata_bytes", EF_OPT_SIZE, "64k",
     offsetof (s_options_t, max_metadata_bytes), 2, (int64_t) 1 << 30,
     "largest metadata (as JSON) accepted"},
    {"max_document_id_bytes", EF_OPT_SIZE, "1k",
     offsetof (s_options_t, max_document_id_bytes), 1, 1 << 20,
     "longest document_id accepted"},
    {"max_model_bytes", EF_OPT_SIZE, "1k",
     offsetof (s_options_t, max_model_bytes), 1, 1 << 20,
     "longest model name accepted"},
    {"max_bad_rows", EF_OPT_INT, "1000", offsetof (s_options_t, max_bad_rows),
     0, INT64_MAX,
     "an upload is ended (INVALID_ARGUMENT) once more than this many of its "
     "rows were bad and they are over max_bad_percent of its rows; 0 = "
     "never"},
    {"max_bad_percent", EF_OPT_INT, "50",
     offsetof (s_options_t, max_bad_percent), 0, 100,
     "share of bad rows (percent) past which an upload with more than "
     "max_bad_rows bad rows is ended"},
    {"hold_bytes", EF_OPT_SIZE, "64M", offsetof (s_options_t, hold_bytes), 0,
     (int64_t) 1 << 40,
     "when a writer's link crosses hosts and its peer is gone, batches for "
     "it wait here up to this many bytes while the other writers go on; "
     "beyond, they are dropped (counted) and the gRPC receiver sends their "
     "chunks again once the peer is back"},
    EF_OPTION_END};

/* Batches for one writer whose peer is gone. */
typedef struct {
    zlist_t *batches;    /* zmsg_t, oldest first (owned) */
    int64_t bytes;       /* their size */
    uint64_t dropped;    /* rows dropped in this outage */
    ef_gauge_t *gauge;   /* embedflow_splitter_held_bytes{writer} */
    ef_counter_t *drops; /* embedflow_splitter_dropped_rows_total{writer} */
} s_hold_t;

/* Memory an item is decoded into: protobuf-c allocates from it, and
   everything goes at once when the item is done, instead of a malloc
   and a free for each string, the vector and every metadata entry. */
typedef struct s_block s_block_t;
struct s_block {
    s_block_t *next;    /* older block */
    size_t size;        /* bytes in data */
    size_t used;        /* bytes handed out */
    max_align_t data[]; /* what is handed out */
};

typedef struct {
    ProtobufCAllocator allocator; /* for protobuf-c, allocator_data = this */
    s_block_t *blocks;            /* newest first (owned) */
} s_arena_t;

/* Hands out size bytes, suitably aligned; NULL when out of memory. */
static void *
s_arena_alloc (void *data, size_t size)
{
    s_arena_t *a = data;
    size_t align = sizeof (max_align_t);
    size = (size + align - 1) / align * align;
    s_block_t *b = a->blocks;
    if (!b || b->size - b->used < size) {
        size_t want = 64 * 1024;
        while (want < size)
            want *= 2;
        b = malloc (sizeof *b + want);
        if (!b)
            return NULL;
        b->size = want;
        b->used = 0;
        b->next = a->blocks;
        a->blocks = b;
    }
    void *p = (char *) b->data + b->used;
    b->used += size;
    return p;
}

/* protobuf-c frees what a failed decode made: s_arena_reset does. */
static void
s_arena_free (void *data, void *p)
{
    (void) data;
    (void) p;
}

/* Takes back everything handed out. When an item needed several
   blocks, they become one block as large, so the next such item fits
   in it. */
static void
s_arena_reset (s_arena_t *a)
{
    s_block_t *b = a->blocks;
    if (!b)
        return;
    if (!b->next) {
        b->used = 0;
        return;
    }
    size_t total = 0;
    while ((b = a->blocks)) {
        total += b->size;
        a->blocks = b->next;
        free (b);
    }
    b = malloc (sizeof *b + total);
    if (b) {
        b->size = total;
        b->used = 0;
        b->next = NULL;
    }
    a->blocks = b;
}

static void
s_arena_destroy (s_arena_t *a)
{
    s_block_t *b;
    while ((b = a->blocks)) {
        a->blocks = b->next;
        free (b);
    }
}

typedef struct {
    ef_batcher_t *batcher;  /* pending batches, one per writer */
    ef_row_limits_t limits; /* validation rules */
    int64_t linger_us;      /* from options */
    int port_batches;       /* OUT, one socket per writer */
    int port_dead;          /* OUT */
    ef_badrows_t *badrows;  /* bad rows per upload */
    s_hold_t *holds;        /* per writer; NULL when batches stay in process */
    bool local;             /* batches go to db-writers in this process:
                               handed over as objects, not bytes */
    int64_t hold_max;       /* hold_bytes */
    int64_t forget_at_us;   /* next time quiet uploads are forgotten */
    s_arena_t arena;        /* where the current item is decoded */
    ef_buf_t scratch;       /* an item view's metadata and id, with NULs */
    ef_citus_shards_t *shards; /* distribution citus: the shard map rows
                                  are routed by; NULL: ef_route */
    uint64_t rows_in;          /* counters for the log */
    uint64_t rows_dead;
} s_self_t;

/* Frees a row made by s_make_row: one block. */
static void
s_free_row (Embedflow__V1__Row *row)
{
    free (row);
}

/* The writer of document_id among n: its Citus shard's. */
static int
s_route_by_shard (const char *document_id, int n, void *arg)
{
    return ef_citus_shards_route (arg, document_id, n);
}

/* With distribution citus, reads the shard map of the schema's chunk
   table from the coordinator (making the schema first, as a writer
   would), so each writer gets the documents of its own shards. Returns
   0 (nothing to do without citus), -1 after ef_actor_fail: the database
   cannot be reached or the table has no shards, which would stop the
   writers too. */
static int
s_load_shards (ef_actor_t *actor, s_self_t *self)
{
    const ef_globals_t *g = ef_actor_globals (actor);
    ef_distribution_t dist = EF_DIST_NONE;
    if (ef_distribution_parse (g->distribution, &dist) != 0
        || dist != EF_DIST_CITUS)
        return 0;
    PGconn *conn = ef_pg_open_for_actor (actor);
    if (!conn)
        return -1;
    char err[512];
    self->shards = ef_citus_shards_load (conn, g->schema, err, sizeof err);
    PQfinish (conn);
    if (!self->shards) {
        ef_actor_fail (actor, "%s", err);
        return -1;
    }
    return 0;
}

static int
s_init (ef_actor_t *actor)
{
    const s_options_t *o = ef_actor_options (actor);
    const ef_globals_t *g = ef_actor_globals (actor);
    s_self_t *self = ef_actor_state (actor);
    self->arena.allocator =
        (ProtobufCAllocator){s_arena_alloc, s_arena_free, &self->arena};
    self->port_batches = ef_actor_port (actor, "batches");
    self->port_dead = ef_actor_port (actor, "dead");
    self->limits = (ef_row_limits_t){
        .dim = g->dim,
        .max_content_bytes = o->max_content_bytes,
        .max_metadata_bytes = o->max_metadata_bytes,
        .max_document_id_bytes = o->max_document_id_bytes,
        .max_model_bytes = o->max_model_bytes,
    };
    self->linger_us = o->linger_ms * 1000;
    int writers = ef_actor_port_width (actor, self->port_batches);
    const char *link = ef_actor_port_link (actor, self->port_batches);
    if (link && ef_config_link_crosses_hosts (ef_actor_config (actor), link)) {
        self->hold_max = o->hold_bytes;
        self->holds = calloc ((size_t) writers, sizeof *self->holds);
        for (int w = 0; self->holds && w < writers; w++) {
            char index[16];
            snprintf (index, sizeof index, "%d", w);
            const char *const labels[] = {"writer", index, NULL};
            self->holds[w].batches = zlist_new ();
            self->holds[w].gauge = ef_metrics_gauge_labeled (
                "embedflow_splitter_held_bytes",
                "bytes of batches held for a writer whose peer is gone",
                labels);
            self->holds[w].drops = ef_metrics_counter_labeled (
                "embedflow_splitter_dropped_rows_total",
                "rows dropped past hold_bytes while their writer's peer was "
                "gone (the receiver sends their chunks again)",
                labels);
            if (!self->holds[w].batches) {
                ef_actor_fail (actor, "out of memory");
                return -1;
            }
        }
        if (!self->holds) {
            ef_actor_fail (actor, "out of memory");
            return -1;
        }
    }
    /* Only the built-in writer is known to take batches as objects; any
       other consumer (a transform in between) gets the RowBatch bytes. */
    const char *consumer = ef_actor_port_peer (actor, self->port_batches);
    self->local =
        !self->holds && link && consumer && strcmp (consumer, "db-writer") == 0
        && !ef_config_link_crosses_hosts (ef_actor_config (actor), link);
    self->batcher =
        ef_batcher_new (ef_actor_port_width (actor, self->port_batches),
                        (size_t) o->batch_rows, (size_t) o->batch_bytes);
    self->badrows = ef_badrows_new ((uint64_t) o->max_bad_rows,
                                    (unsigned) o->max_bad_percent);
    if (self->batcher)
        ef_batcher_set_row_free (self->batcher, s_free_row);
    if (!self->batcher || !self->badrows) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    if (s_load_shards (actor, self) != 0)
        return -1;
    if (self->shards)
        ef_batcher_set_route (self->batcher, s_route_by_shard, self->shards);
    const char *peer = ef_actor_port_peer (actor, self->port_batches);
    char by[64] = "hash(document_id)";
    if (self->shards)
        snprintf (by, sizeof by, "Citus shard (%d shards)",
                  ef_citus_shards_count (self->shards));
    ef_info ("routing to %d instance(s) of %s by %s, batches of %lld rows / "
             "%lld bytes",
             ef_actor_port_width (actor, self->port_batches), peer ? peer : "?",
             by, (long long) o->batch_rows, (long long) o->batch_bytes);
    return 0;
}

static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    ef_batcher_destroy (&self->batcher);
    ef_citus_shards_destroy (&self->shards);
    ef_badrows_destroy (&self->badrows);
    s_arena_destroy (&self->arena);
    ef_buf_free (&self->scratch);
    int writers = ef_actor_port_width (actor, self->port_batches);
    for (int w = 0; self->holds && w < writers; w++) {
        if (zlist_size (self->holds[w].batches))
            ef_warn ("stopping with %zu batch(es) held for writer %d, whose "
                     "peer is gone: they are dropped, and their uploads were "
                     "not acknowledged",
                     zlist_size (self->holds[w].batches), w);
        zmsg_t *msg;
        while ((msg = zlist_pop (self->holds[w].batches)))
            zmsg_destroy (&msg);
        zlist_destroy (&self->holds[w].batches);
    }
    free (self->holds);
}

/* Sends what writer w holds, oldest first, while its peer takes it.
   Returns 0 (some may still be held), -1 when stopping or failed. */
static int
s_release_held (ef_actor_t *actor, s_self_t *self, int w)
{
    s_hold_t *h = self->holds ? &self->holds[w] : NULL;
    zmsg_t *msg;
    while (h && (msg = zlist_first (h->batches))) {
        int64_t size = (int64_t) zmsg_content_size (msg);
        int rc = ef_actor_send_or_hold (actor, self->port_batches, w, &msg);
        if (rc < 0) {
            zlist_remove (h->batches, zlist_first (h->batches));
            return -1;
        }
        if (rc == 1)
            return 0;
        zlist_pop (h->batches);
        h->bytes -= size;
        ef_gauge_set (h->gauge, h->bytes);
        if (zlist_size (h->batches) == 0 && h->dropped) {
            ef_info ("writer %d is back; %" PRIu64 " rows dropped while it "
                     "was gone are sent again by the receiver",
                     w, h->dropped);
            h->dropped = 0;
        }
    }
    return 0;
}

/* Frees a batch handed to a writer in this process (its rows are single
   blocks: see s_make_row): the writer calls it once written, the runtime
   when nobody took it. */
static void
s_free_batch (void *p)
{
    Embedflow__V1__RowBatch *batch = p;
    for (size_t i = 0; i < batch->n_rows; i++)
        free (batch->rows[i]);
    free (batch->rows);
    free (batch);
}

/* Sends writer w's batch. In one process that blocks while the writer's
   queue is full (backpressure). Across hosts, a writer whose peer is
   gone gets its batches held, up to hold_bytes, so the other writers go
   on; beyond that they are dropped and counted: their chunks stay
   unsettled at the receiver, which sends them again once the peer is
   back. */
static int
s_flush (ef_actor_t *actor, s_self_t *self, int w)
{
    size_t rows = 0;
    if (self->local) {
        Embedflow__V1__RowBatch *batch =
            ef_batcher_take_batch (self->batcher, w, &rows);
        if (!batch)
            return rows ? -1 : 0;
        ef_debug ("batch of %zu rows to writer %d", rows, w);
        ef_actor_count (actor, EF_METRIC_ROWS_OUT, (int64_t) rows);
        ef_actor_count (actor, EF_METRIC_BATCHES, 1);
        return ef_actor_send_local (actor, self->port_batches, w, batch,
                                    s_free_batch);
    }
    zmsg_t *msg = ef_batcher_take (self->batcher, w, &rows);
    if (!msg)
        return rows ? -1 : 0;
    ef_debug ("batch of %zu rows to writer %d", rows, w);
    ef_actor_count (actor, EF_METRIC_ROWS_OUT, (int64_t) rows);
    ef_actor_count (actor, EF_METRIC_BATCHES, 1);
    if (!self->holds)
        return ef_actor_send (actor, self->port_batches, w, &msg);
    s_hold_t *h = &self->holds[w];
    if (s_release_held (actor, self, w) != 0) {
        zmsg_destroy (&msg);
        return -1;
    }
    int rc = zlist_size (h->batches)
                 ? 1
                 : ef_actor_send_or_hold (actor, self->port_batches, w, &msg);
    if (rc <= 0)
        return rc;
    int64_t size = (int64_t) zmsg_content_size (msg);
    if (h->bytes + size > self->hold_max) {
        if (!h->dropped)
            ef_warn ("writer %d is gone and %" PRId64 " bytes are held for "
                     "it (hold_bytes): dropping its batches until it is back",
                     w, h->bytes);
        h->dropped += rows;
        ef_counter_add (h->drops, rows);
        zmsg_destroy (&msg);
        return 0;
    }
    if (zlist_append (h->batches, msg) != 0) {
        zmsg_destroy (&msg);
        return -1;
    }
    h->bytes += size;
    ef_gauge_set (h->gauge, h->bytes);
    return 0;
}

/* Sends one dead letter for rows that cannot be used: original is the
   Embedding's bytes exactly as received (NULL for a whole chunk), so it
   can be inspected and replayed after a fix. */
static int
s_dead_letter (ef_actor_t *actor, s_self_t *self,
               const Embedflow__V1__ChunkHeader *hdr, const ef_span_t *original,
               const char *document_id, uint32_t covers, const char *code,
               const char *why)
{
    Embedflow__V1__DeadLetter dl = EMBEDFLOW__V1__DEAD_LETTER__INIT;
    dl.stage = "split";
    dl.reason_code = (char *) code;
    dl.reason = (char *) why;
    dl.attempts = 1;
    dl.job_id = hdr->job_id;
    dl.source = hdr->source;
    dl.document_id = (char *) (document_id ? document_id : "");
    dl.stream_id = hdr->stream_id;
    dl.stream_key = hdr->stream_key;
    dl.covers = covers;
    dl.chunk_seq = hdr->seq;
    dl.chunk_rows = hdr->rows;
    dl.resume_token = hdr->resume_token;
    dl.reply_to = hdr->reply_to;
    dl.checkpoint = hdr->checkpoint;
    dl.attempt = hdr->attempt;
    if (original) {
        dl.original.data = (uint8_t *) original->data;
        dl.original.len = original->len;
    }
    size_t size = protobuf_c_message_get_packed_size (&dl.base);
    zframe_t *frame = zframe_new (NULL, size);
    if (!frame)
        return -1;
    protobuf_c_message_pack (&dl.base, zframe_data (frame));
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, &frame);
    self->rows_dead += covers;
    ef_actor_count (actor, EF_METRIC_DEAD_LETTERED, covers);
    return ef_actor_send (actor, self->port_dead, 0, &msg);
}

/* Dead-letters an item whose text is bad. Its document_id may itself be
   the bad text, so the letter names it escaped (\x00), never cut. */
static int
s_dead_letter_text (ef_actor_t *actor, s_self_t *self,
                    const Embedflow__V1__ChunkHeader *hdr,
                    const ef_span_t *item, const char *why)
{
    char doc[256] = "";
    ef_span_t id = {NULL, 0};
    if (ef_wire_find_bytes (item->data, item->len, 2, &id) == 1)
        ef_text_escape (id.data, id.len, doc, sizeof doc);
    return s_dead_letter (actor, self, hdr, item, doc, 1,
                          ef_row_error_code (EF_ROW_BAD_TEXT), why);
}

/* Copies len bytes of text and a NUL to *at, moving it on; returns
   where the text went. */
static char *
s_put_text (char **at, const char *text, size_t len)
{
    char *out = *at;
    if (len)
        memcpy (out, text, len);
    out[len] = 0;
    *at += len + 1;
    return out;
}

/* Builds the database row for an embedding in one block (struct, id,
   vector, stream key, then the texts), freed with free: one allocation
   a row instead of a dozen, and the writer, on another thread, frees it
   in one call. texts are document_id, content and model, of lens
   bytes; vector is n_vector floats as they lie in memory (unaligned
   wire bytes will do). The id is left zero. NULL when out of memory. */
static Embedflow__V1__Row *
s_make_row (const Embedflow__V1__ChunkHeader *hdr, const char *const given[3],
            const size_t given_lens[3], const void *vector, size_t n_vector,
            uint32_t chunk_index, const char *metadata_json,
            size_t metadata_len)
{
    const char *texts[] = {given[0],      given[1],     given[2],
                           hdr->source,   hdr->job_id,  hdr->resume_token,
                           hdr->reply_to, metadata_json};
    enum { N_TEXTS = sizeof texts / sizeof *texts };
    size_t lens[N_TEXTS];
    size_t vector_bytes = n_vector * sizeof (float);
    /* the struct's size keeps what follows it aligned for the floats */
    size_t size =
        sizeof (Embedflow__V1__Row) + 16 + vector_bytes + hdr->stream_key.len;
    for (size_t i = 0; i < N_TEXTS; i++) {
        if (!texts[i])
            texts[i] = "";
        lens[i] = i < 3              ? given_lens[i]
                  : i == N_TEXTS - 1 ? metadata_len
                                     : strlen (texts[i]);
        size += lens[i] + 1;
    }
    Embedflow__V1__Row *r = malloc (size);
    if (!r)
        return NULL;
    embedflow__v1__row__init (r);
    uint8_t *at = (uint8_t *) (r + 1);
    r->id.data = at;
    r->id.len = 16;
    memset (at, 0, 16);
    at += 16;
    r->vector = (float *) (void *) at;
    r->n_vector = n_vector;
    if (vector_bytes)
        memcpy (at, vector, vector_bytes);
    at += vector_bytes;
    r->stream_key.data = at;
    r->stream_key.len = hdr->stream_key.len;
    if (hdr->stream_key.len)
        memcpy (at, hdr->stream_key.data, hdr->stream_key.len);
    at += hdr->stream_key.len;
    char *text = (char *) at;
    r->document_id = s_put_text (&text, texts[0], lens[0]);
    r->content = s_put_text (&text, texts[1], lens[1]);
    r->model = s_put_text (&text, texts[2], lens[2]);
    r->source = s_put_text (&text, texts[3], lens[3]);
    r->job_id = s_put_text (&text, texts[4], lens[4]);
    r->resume_token = s_put_text (&text, texts[5], lens[5]);
    r->reply_to = s_put_text (&text, texts[6], lens[6]);
    r->metadata_json = s_put_text (&text, texts[7], lens[7]);
    r->chunk_index = chunk_index;
    r->stream_id = hdr->stream_id;
    r->covers = 1;
    r->received_us = hdr->received_us;
    r->chunk_seq = hdr->seq;
    r->chunk_rows = hdr->rows;
    r->checkpoint = hdr->checkpoint;
    r->attempt = hdr->attempt;
    return r;
}

/* Re-arms the tick for the oldest pending batch. */
static void
s_arm (ef_actor_t *actor, s_self_t *self)
{
    int64_t oldest = -1;
    for (int w = 0; w < ef_actor_port_width (actor, self->port_batches); w++) {
        int64_t t = ef_batcher_oldest_us (self->batcher, w);
        if (t >= 0 && (oldest < 0 || t < oldest))
            oldest = t;
    }
    int64_t wait = -1;
    if (oldest >= 0) {
        int64_t due = oldest + self->linger_us - ef_clock_mono_us ();
        wait = due > 0 ? (due + 999) / 1000 : 0;
    }
    for (int w = 0;
         self->holds && w < ef_actor_port_width (actor, self->port_batches);
         w++)
        if (zlist_size (self->holds[w].batches) && (wait < 0 || wait > 100))
            wait = 100; /* look again whether its peer is back */
    ef_actor_wake_in (actor, wait);
}

/* Adds a valid row to its writer's batch, sending what is full.
   Returns 0, -1 when the send failed. */
static int
s_add_row (ef_actor_t *actor, s_self_t *self, Embedflow__V1__Row *row)
{
    int rc = 0;
    int ready = ef_batcher_add (self->batcher, &row);
    if (ready >= 0)
        rc = s_flush (actor, self, ready);
    for (int w; rc == 0 && (w = ef_batcher_full (self->batcher)) >= 0;)
        rc = s_flush (actor, self, w);
    return rc;
}

/* Validates one decoded row and adds it to its writer's batch, or
   dead-letters it and sets *bad_code to the reason. Returns 0, -1 when
   out of memory or the send failed. */
static int
s_take_row (ef_actor_t *actor, s_self_t *self,
            const Embedflow__V1__ChunkHeader *hdr,
            const Embedflow__V1__Embedding *e, const ef_span_t *item,
            const char **bad_code)
{
    size_t mlen = 0;
    char *mjson = ef_metadata_json (e->metadata, e->n_metadata, &mlen);
    if (!mjson)
        return -1;
    uint8_t id[16];
    bool has_id = false;
    char why[256];
    ef_row_error_t err =
        ef_row_validate (e, &self->limits, mlen, id, &has_id, why, sizeof why);
    if (err != EF_ROW_OK) {
        free (mjson);
        *bad_code = ef_row_error_code (err);
        return s_dead_letter (actor, self, hdr, item, e->document_id, 1,
                              *bad_code, why);
    }
    if (!has_id)
        ef_uuid7_generate (id);
    const char *texts[3] = {e->document_id ? e->document_id : "",
                            e->content ? e->content : "",
                            e->model ? e->model : ""};
    size_t lens[3] = {strlen (texts[0]), strlen (texts[1]), strlen (texts[2])};
    Embedflow__V1__Row *row = s_make_row (
        hdr, texts, lens, e->vector, e->n_vector, e->chunk_index, mjson, mlen);
    free (mjson);
    if (!row)
        return -1;
    memcpy (row->id.data, id, 16);
    return s_add_row (actor, self, row);
}

/* s_take_row for an item read as a view (chunkwire.h), without
   protobuf-c: the texts and the vector go from the wire bytes into the
   row's block once, and the row is validated there, as the decoded
   Embedding would be (its text was checked already: no NUL inside).
   Returns 0, -1 when out of memory or the send failed. */
static int
s_take_view (ef_actor_t *actor, s_self_t *self,
             const Embedflow__V1__ChunkHeader *hdr, const ef_item_view_t *v,
             const ef_span_t *item, const char **bad_code)
{
    /* NUL-terminated copies of the metadata and the id, for the JSON
       writer and the UUID parser, in one scratch buffer */
    ef_buf_t *scratch = &self->scratch;
    scratch->len = 0;
    scratch->failed = false;
    size_t at[2 * EF_ITEM_VIEW_ENTRIES + 1];
    const ef_span_t *spans[2 * EF_ITEM_VIEW_ENTRIES + 1];
    size_t n = 0;
    for (size_t k = 0; k < v->n_metadata; k++) {
        spans[n++] = &v->keys[k];
        spans[n++] = &v->values[k];
    }
    spans[n++] = &v->id;
    for (size_t k = 0; k < n; k++) {
        at[k] = scratch->len;
        if ((spans[k]->len
             && ef_buf_put (scratch, spans[k]->data, spans[k]->len) != 0)
            || ef_buf_put (scratch, "", 1) != 0)
            return -1;
    }
    Embedflow__V1__Embedding__MetadataEntry entries[EF_ITEM_VIEW_ENTRIES];
    Embedflow__V1__Embedding__MetadataEntry *ptrs[EF_ITEM_VIEW_ENTRIES];
    for (size_t k = 0; k < v->n_metadata; k++) {
        embedflow__v1__embedding__metadata_entry__init (&entries[k]);
        entries[k].key = scratch->data + at[2 * k];
        entries[k].value = scratch->data + at[2 * k + 1];
        ptrs[k] = &entries[k];
    }
    size_t mlen = 0;
    char *mjson = ef_metadata_json (ptrs, v->n_metadata, &mlen);
    if (!mjson)
        return -1;
    const ef_span_t *given[3] = {&v->document_id, &v->content, &v->model};
    const char *texts[3];
    size_t lens[3];
    for (int k = 0; k < 3; k++) {
        texts[k] = given[k]->data ? (const char *) given[k]->data : "";
        lens[k] = given[k]->len;
    }
    Embedflow__V1__Row *row =
        s_make_row (hdr, texts, lens, v->vector.data, v->vector.len / 4,
                    v->chunk_index, mjson, mlen);
    free (mjson);
    if (!row)
        return -1;
    Embedflow__V1__Embedding e = EMBEDFLOW__V1__EMBEDDING__INIT;
    e.id = scratch->data + at[n - 1];
    e.document_id = row->document_id;
    e.chunk_index = row->chunk_index;
    e.content = row->content;
    e.model = row->model;
    e.n_vector = row->n_vector;
    e.vector = row->n_vector ? row->vector : NULL;
    uint8_t id[16];
    bool has_id = false;
    char why[256];
    ef_row_error_t err =
        ef_row_validate (&e, &self->limits, mlen, id, &has_id, why, sizeof why);
    if (err != EF_ROW_OK) {
        *bad_code = ef_row_error_code (err);
        int rc = s_dead_letter (actor, self, hdr, item, row->document_id, 1,
                                *bad_code, why);
        free (row);
        return rc;
    }
    if (!has_id)
        ef_uuid7_generate (id);
    memcpy (row->id.data, id, 16);
    return s_add_row (actor, self, row);
}

static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    (void) port;
    s_self_t *self = ef_actor_state (actor);
    zframe_t *hf = zmsg_first (*msg_p);
    zframe_t *cf = zmsg_next (*msg_p);
    Embedflow__V1__ChunkHeader *hdr =
        hf ? embedflow__v1__chunk_header__unpack (NULL, zframe_size (hf),
                                                  zframe_data (hf))
           : NULL;
    if (!hdr || !cf) {
        /* Without a header nobody can be acknowledged: a peer speaking
           another protocol. Dropping is all that can be done; say so. */
        ef_error ("malformed chunk message dropped (%zu frames)",
                  zmsg_size (*msg_p));
        if (hdr)
            embedflow__v1__chunk_header__free_unpacked (hdr, NULL);
        return 0;
    }
    /* Items are taken from the bytes one at a time: memory follows one
       row, not the chunk, and text is checked on its wire length. */
    const uint8_t *data = zframe_data (cf);
    size_t size = zframe_size (cf), offset = 0, items = 0;
    ef_span_t item;
    int rc = 0;
    int64_t now = ef_clock_mono_us ();
    /* only sources that can end a stream ask for the limit (uploads): a
       pull job's server is configured, and its run fails or resumes on
       its own terms */
    bool limited = hdr->limit_bad_rows;
    bool ended = limited && ef_badrows_ended (self->badrows, hdr->stream_id);
    while (rc == 0 && !ended
           && ef_chunk_next_item (data, size, &offset, &item) == 1) {
        items++;
        self->rows_in++;
        ef_actor_count (actor, EF_METRIC_ROWS_IN, 1);
        const char *bad_code = NULL;
        char why[256];
        Embedflow__V1__Embedding *e = NULL;
        ef_item_view_t view;
        if (ef_item_text_check (item.data, item.len, why, sizeof why)
            != EF_ROW_OK) {
            bad_code = ef_row_error_code (EF_ROW_BAD_TEXT);
            rc = s_dead_letter_text (actor, self, hdr, &item, why);
        }
        else if (ef_item_view (item.data, item.len, &view) == 1)
            rc = s_take_view (actor, self, hdr, &view, &item, &bad_code);
        else if (!(e = embedflow__v1__embedding__unpack (
                       &self->arena.allocator, item.len, item.data))) {
            bad_code = "undecodable_row";
            rc = s_dead_letter (actor, self, hdr, &item, NULL, 1, bad_code,
                                "the row could not be decoded");
        }
        else
            rc = s_take_row (actor, self, hdr, e, &item, &bad_code);
        s_arena_reset (&self->arena);
        if (limited)
            ended =
                ef_badrows_count (self->badrows, hdr->stream_id, bad_code, now);
    }
    if (rc == 0 && ended) {
        /* One letter stands for the rows not looked at and ends the
           upload through the DLQ's ack; later chunks of it each get one
           letter too, never one per row. */
        char text[512];
        ef_badrows_describe (self->badrows, hdr->stream_id, text, sizeof text);
        uint32_t rest = items < hdr->rows ? (uint32_t) (hdr->rows - items) : 0;
        rc = s_dead_letter (actor, self, hdr, NULL, NULL, rest,
                            EF_DEAD_STREAM_ENDED, text);
    }
    else if (rc == 0 && items < hdr->rows) {
        /* cut short or malformed (only a peer speaking another protocol
           sends that: the receiver checked the bytes): the rows that
           cannot be read are settled as dead so the upload can end */
        rc = s_dead_letter (actor, self, hdr, NULL, NULL,
                            (uint32_t) (hdr->rows - items), "undecodable_chunk",
                            "the chunk could not be decoded");
    }
    else if (items > hdr->rows)
        ef_warn ("chunk %llu says %u rows but holds %zu",
                 (unsigned long long) hdr->seq, hdr->rows, items);
    embedflow__v1__chunk_header__free_unpacked (hdr, NULL);
    if (now >= self->forget_at_us) {
        /* an upload quiet for 10 minutes is over or gone */
        ef_badrows_forget (self->badrows, now - 600 * 1000000LL);
        self->forget_at_us = now + 60 * 1000000LL;
    }
    if (rc == 0)
        s_arm (actor, self);
    else if (!ef_actor_stopping (actor))
        ef_error ("cannot forward rows (out of memory or socket failure)");
    return ef_actor_stopping (actor) ? 0 : rc;
}

/* Sends every batch whose oldest row has waited `linger`. */
static int
s_tick (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    int64_t now = ef_clock_mono_us ();
    for (int w = 0;
         self->holds && w < ef_actor_port_width (actor, self->port_batches);
         w++)
        if (s_release_held (actor, self, w) != 0)
            return ef_actor_stopping (actor) ? 0 : -1;
    for (int w = 0; w < ef_actor_port_width (actor, self->port_batches); w++) {
        int64_t t = ef_batcher_oldest_us (self->batcher, w);
        if (t >= 0 && now - t >= self->linger_us
            && s_flush (actor, self, w) != 0)
            return ef_actor_stopping (actor) ? 0 : -1;
    }
    s_arm (actor, self);
    return 0;
}

static const ef_port_def_t s_ports[] = {
    {"chunks", EF_PORT_IN, "embedflow.v1.ChunkHeader", false, 8},
    {"batches", EF_PORT_OUT, "embedflow.v1.RowBatch", false, 4},
    {"dead", EF_PORT_OUT, "embedflow.v1.DeadLetter", false, 10000},
    {NULL, 0, NULL, false, 0}};

const ef_actor_def_t ef_splitter_actor = {
    .name = "splitter",
    .summary = "validates rows and re-splits them into per-writer batches",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_self_t),
    .ports = s_ports,
    .default_instances = 1,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .destroy = s_destroy,
};
