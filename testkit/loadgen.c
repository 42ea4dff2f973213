/*  loadgen.c — synthetic UploadEmbeddings client (see loadgen.h).

    Messages are encoded by hand: the wire format of EmbeddingChunk is
    simple, and writing the packed floats straight into the output buffer
    avoids building (and freeing) a protobuf-c object tree per row. Each
    upload runs on its own thread with its own channel and completion
    queue; it encodes chunk k+1 while chunk k is on the wire, so HTTP/2
    flow control, not the generator, sets the pace.
*/
#include "testkit/loadgen.h"

#include "embedflow/actor.h"
#include "embedflow/buf.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embedflow/v1/embedding.pb-c.h"
#include "grpc/grpcmsg.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "loadgen writes packed floats in host order: little-endian only"
#endif

#define S_UPLOAD_METHOD   "/embedflow.v1.EmbeddingService/UploadEmbeddings"
#define S_CHUNK_BYTES_MAX (4000 * 1024) /* under gRPC's default 4 MiB */
#define S_ROW_OVERHEAD    400           /* text and framing, estimated */

/* --- deterministic pseudo-random numbers --------------------------------- */

/* Mixes x into a well-spread 64-bit value (splitmix64 finalizer). */
static uint64_t
s_mix (uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Next value of a xorshift64* generator; state must be nonzero. */
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

/* A generator state for one purpose of one row; never zero. */
static uint64_t
s_seed (uint64_t seed, uint64_t row, uint64_t purpose)
{
    uint64_t s = s_mix (seed ^ s_mix (row * 4 + purpose));
    return s ? s : 1;
}

/* --- text ---------------------------------------------------------------- */

static const char *s_words[] = {
    "vector",    "search",     "index",    "model",    "document",  "retrieval",
    "latency",   "cluster",    "semantic", "query",    "ranking",   "dataset",
    "pipeline",  "storage",    "language", "context",  "answer",    "question",
    "embedding", "similarity", "cosine",   "distance", "training",  "inference",
    "batch",     "stream",     "token",    "sentence", "paragraph", "summary",
    "customer",  "invoice",    "contract", "policy",   "report",    "weather",
    "river",     "mountain",   "city",     "market",   "quickly",   "rarely",
    "often",     "carefully",  "together", "improves", "reduces",   "describes",
    "explains",  "compares",   "measures", "stores",   "returns",   "shows",
    "links",     "the",        "a",        "every",    "each",      "this",
    "with",      "from",       "into",     "across",
};
#define S_WORDS (sizeof s_words / sizeof s_words[0])

static const char *s_topics[] = {
    "Quarterly report",  "Support ticket", "Product manual", "Research note",
    "Meeting minutes",   "Travel guide",   "Release notes",  "Legal contract",
    "Recipe collection", "Field survey",   "Design review",  "Onboarding guide",
};
#define S_TOPICS (sizeof s_topics / sizeof s_topics[0])

/* Appends one sentence of 6..20 words to out (at *len, capacity cap). */
static void
s_sentence (uint64_t *rng, char *out, size_t *len, size_t cap)
{
    int words = 6 + (int) (s_rand (rng) % 15);
    for (int i = 0; i < words; i++) {
        const char *w = s_words[s_rand (rng) % S_WORDS];
        size_t wl = strlen (w);
        if (*len + wl + 3 >= cap)
            break;
        if (i > 0)
            out[(*len)++] = ' ';
        memcpy (out + *len, w, wl);
        if (i == 0 && out[*len] >= 'a' && out[*len] <= 'z')
            out[*len] -= 'a' - 'A';
        *len += wl;
    }
    out[(*len)++] = '.';
    out[*len] = 0;
}

/* --- wire encoding ------------------------------------------------------- */

/* Bytes a varint of v takes. */
static size_t
s_varint_size (uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Appends v as a varint (room must be reserved). */
static void
s_put_varint (ef_buf_t *b, uint64_t v)
{
    while (v >= 0x80) {
        b->data[b->len++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (uint8_t) v;
}

/* Bytes of a length-delimited field with a one-byte tag. */
static size_t
s_field_size (size_t len)
{
    return 1 + s_varint_size (len) + len;
}

/* Appends a length-delimited field (room must be reserved). */
static void
s_put_field (ef_buf_t *b, uint8_t tag, const void *data, size_t len)
{
    b->data[b->len++] = tag;
    s_put_varint (b, len);
    memcpy (b->data + b->len, data, len);
    b->len += len;
}

/* --- vectors -------------------------------------------------------------- */

/* Writes dim floats uniform in ±sqrt(3/dim) (norm close to 1) to v, which
   need not be float-aligned. Every direction is as likely as any other,
   so all distances come out nearly equal: the hardest case for an ANN
   index, and unlike embeddings. */
static void
s_put_uniform_vector (uint8_t *v, int dim, uint64_t seed, uint64_t r)
{
    float scale = 2.0f * sqrtf (3.0f / (float) dim);
    uint64_t vrng = s_seed (seed, r, 3);
    int i = 0;
    for (; i + 1 < dim; i += 2) {
        uint64_t x = s_rand (&vrng);
        float f[2] = {
            ((float) (x >> 40) * (1.0f / 16777216.0f) - 0.5f) * scale,
            ((float) ((x >> 16) & 0xffffff) * (1.0f / 16777216.0f) - 0.5f)
                * scale,
        };
        memcpy (v + (size_t) i * 4, f, sizeof f);
    }
    if (i < dim) {
        float f = ((float) (s_rand (&vrng) >> 40) * (1.0f / 16777216.0f) - 0.5f)
                  * scale;
        memcpy (v + (size_t) i * 4, &f, sizeof f);
    }
}

/* Topic centres are a function of the topic alone, not of the seed: rows
   and queries drawn with different seeds share them, as a search's
   questions share the subjects of the documents searched. */
#define S_VECTOR_TOPICS     1000
#define S_VECTOR_TOPIC_SEED UINT64_C (0x746f706963730001)

/* Component k (0..2) of the three 16-bit draws in x's upper 48 bits,
   uniform in [-0.5, 0.5). */
static float
s_draw16 (uint64_t x, int k)
{
    return (float) ((x >> (16 + 16 * k)) & 0xffff) * (1.0f / 65536.0f) - 0.5f;
}

/* What one chunk's clustered vectors share: the weight of each
   component and the vector part of the document last drawn (a
   document's rows come one after another). */
typedef struct {
    int dim;
    float *weight; /* [dim]: 1/sqrt(i+1) */
    float *doc;    /* [dim]: the document's topic centre and offset */
    float *row;    /* [dim]: scratch */
    uint64_t doc_number;
    bool have_doc;
} s_vectors_t;

/* Returns 0, or -1 when out of memory (nothing to free then). */
static int
s_vectors_init (s_vectors_t *g, int dim)
{
    *g = (s_vectors_t){.dim = dim};
    g->weight = malloc ((size_t) dim * 3 * sizeof (float));
    if (!g->weight)
        return -1;
    g->doc = g->weight + dim;
    g->row = g->doc + dim;
    for (int i = 0; i < dim; i++)
        g->weight[i] = 1.0f / sqrtf ((float) (i + 1));
    return 0;
}

static void
s_vectors_free (s_vectors_t *g)
{
    free (g->weight);
}

/* Writes row r's vector, of document doc, to v (need not be
   float-aligned): a topic centre the document picks, plus the document's
   own offset (0.6 of the centre's spread), plus the chunk's (0.4), with
   component i weighted 1/sqrt(i+1), normalized to 1. So a document's
   chunks lie close together, near other documents of their topic, and the
   variance falls off across components as it does in text embeddings
   (most of it in a few tens of directions). On such data pgvector's HNSW
   finds 0.94-0.99 of the exact top 10 at its default ef_search, against
   0.07-0.26 on uniform noise (40,000 and 10,000 rows of 768 dimensions). */
static void
s_put_clustered_vector (uint8_t *v, s_vectors_t *g, uint64_t seed, uint64_t doc,
                        uint64_t r)
{
    int dim = g->dim;
    if (!g->have_doc || g->doc_number != doc) {
        uint64_t drng = s_seed (seed, doc, 0);
        uint64_t topic = s_rand (&drng) % S_VECTOR_TOPICS;
        uint64_t trng = s_seed (S_VECTOR_TOPIC_SEED, topic, 0);
        for (int i = 0; i < dim; i += 3) {
            uint64_t t = s_rand (&trng), d = s_rand (&drng);
            for (int k = 0; k < 3 && i + k < dim; k++)
                g->doc[i + k] = (s_draw16 (t, k) + 0.6f * s_draw16 (d, k))
                                * g->weight[i + k];
        }
        g->doc_number = doc;
        g->have_doc = true;
    }
    uint64_t crng = s_seed (seed, r, 3);
    for (int i = 0; i < dim; i += 3) {
        uint64_t c = s_rand (&crng);
        for (int k = 0; k < 3 && i + k < dim; k++)
            g->row[i + k] =
                g->doc[i + k] + 0.4f * s_draw16 (c, k) * g->weight[i + k];
    }
    float norm2 = 0;
    for (int i = 0; i < dim; i++)
        norm2 += g->row[i] * g->row[i];
    /* every draw zero in every component: never in practice, but the
       vector must stay finite */
    float scale = norm2 > 0 ? 1.0f / sqrtf (norm2) : 1.0f;
    for (int i = 0; i < dim; i++)
        g->row[i] *= scale;
    memcpy (v, g->row, (size_t) dim * sizeof (float));
}

/* --- rows ----------------------------------------------------------------- */

/* Appends one Embedding for row r as EmbeddingChunk field 1; vectors
   is the chunk's state for clustered vectors. */
static void
s_put_row (ef_buf_t *b, const ef_loadgen_opts_t *opts, s_vectors_t *vectors,
           int rpd, uint64_t r)
{
    uint64_t doc = r / (uint64_t) rpd;
    uint32_t chunk_index = (uint32_t) (r % (uint64_t) rpd);

    char doc_id[32];
    size_t doc_len =
        (size_t) snprintf (doc_id, sizeof doc_id, "doc-%06" PRIu64, doc);
    /* the title belongs to the document, the text to the row */
    uint64_t trng = s_seed (opts->seed, doc, 1);
    char title[96];
    size_t title_len = (size_t) snprintf (
        title, sizeof title, "%s %" PRIu64 ": %s and %s",
        s_topics[s_rand (&trng) % S_TOPICS], doc,
        s_words[s_rand (&trng) % S_WORDS], s_words[s_rand (&trng) % S_WORDS]);
    uint64_t crng = s_seed (opts->seed, r, 2);
    char content[400];
    size_t content_len = 0;
    s_sentence (&crng, content, &content_len, sizeof content);
    if (s_rand (&crng) % 2) {
        content[content_len++] = ' ';
        s_sentence (&crng, content, &content_len, sizeof content);
    }
    char model[32];
    size_t model_len =
        (size_t) snprintf (model, sizeof model, "synthetic-%d", opts->dim);

    size_t lang_entry = s_field_size (4) + s_field_size (2);
    size_t title_entry = s_field_size (5) + s_field_size (title_len);
    size_t vec_len = (size_t) opts->dim * 4;
    size_t emb_len = s_field_size (doc_len)
                     + (chunk_index ? 1 + s_varint_size (chunk_index) : 0)
                     + s_field_size (content_len) + s_field_size (lang_entry)
                     + s_field_size (title_entry) + s_field_size (vec_len)
                     + s_field_size (model_len);
    if (ef_buf_reserve (b, s_field_size (emb_len)))
        return;

    b->data[b->len++] = 0x0a; /* EmbeddingChunk.items */
    s_put_varint (b, emb_len);
    s_put_field (b, 0x12, doc_id, doc_len);
    if (chunk_index) {
        b->data[b->len++] = 0x18;
        s_put_varint (b, chunk_index);
    }
    s_put_field (b, 0x22, content, content_len);
    b->data[b->len++] = 0x2a; /* metadata entry {"lang": "en"} */
    s_put_varint (b, lang_entry);
    s_put_field (b, 0x0a, "lang", 4);
    s_put_field (b, 0x12, "en", 2);
    b->data[b->len++] = 0x2a; /* metadata entry {"title": …} */
    s_put_varint (b, title_entry);
    s_put_field (b, 0x0a, "title", 5);
    s_put_field (b, 0x12, title, title_len);

    b->data[b->len++] = 0x32;
    s_put_varint (b, vec_len);
    uint8_t *v = (uint8_t *) b->data + b->len; /* not float-aligned */
    if (opts->vectors == EF_LOADGEN_UNIFORM)
        s_put_uniform_vector (v, opts->dim, opts->seed, r);
    else
        s_put_clustered_vector (v, vectors, opts->seed, doc, r);
    b->len += vec_len;
    s_put_field (b, 0x3a, model, model_len);
}

/* Encodes rows [first, first+count) and seq into b (reset first). */
static void
s_encode_chunk (ef_buf_t *b, const ef_loadgen_opts_t *opts, uint64_t first,
                int count, uint64_t seq)
{
    int rpd = opts->rows_per_document > 0 ? opts->rows_per_document : 8;
    b->len = 0;
    s_vectors_t vectors = {0};
    if (opts->vectors == EF_LOADGEN_CLUSTERED
        && s_vectors_init (&vectors, opts->dim) != 0) {
        b->failed = true;
        return;
    }
    for (int i = 0; i < count && !b->failed; i++)
        s_put_row (b, opts, &vectors, rpd, first + (uint64_t) i);
    s_vectors_free (&vectors);
    if (seq && ef_buf_reserve (b, 11) == 0) {
        b->data[b->len++] = 0x10; /* EmbeddingChunk.seq */
        s_put_varint (b, seq);
    }
}

uint8_t *
ef_loadgen_encode_chunk (const ef_loadgen_opts_t *opts, uint64_t first,
                         int count, uint64_t seq, size_t *size)
{
    ef_buf_t b = {0};
    if (opts->dim <= 0 || count < 0)
        return NULL;
    s_encode_chunk (&b, opts, first, count, seq);
    return (uint8_t *) ef_buf_take (&b, size);
}

const char *
ef_loadgen_vectors_name (ef_loadgen_vectors_t vectors)
{
    return vectors == EF_LOADGEN_UNIFORM ? "uniform" : "clustered";
}

int
ef_loadgen_vectors_parse (const char *text, ef_loadgen_vectors_t *out)
{
    for (int k = EF_LOADGEN_CLUSTERED; k <= EF_LOADGEN_UNIFORM; k++)
        if (strcmp (text, ef_loadgen_vectors_name (k)) == 0) {
            *out = (ef_loadgen_vectors_t) k;
            return 0;
        }
    return -1;
}

int
ef_loadgen_chunk_rows (const ef_loadgen_opts_t *opts)
{
    int rows = opts->chunk_rows > 0 ? opts->chunk_rows : 256;
    int64_t row_bytes =
        (int64_t) (opts->dim > 0 ? opts->dim : 1) * 4 + S_ROW_OVERHEAD;
    int64_t fit = S_CHUNK_BYTES_MAX / row_bytes;
    if (fit < 1)
        fit = 1;
    return rows < fit ? rows : (int) fit;
}

/* --- one upload ---------------------------------------------------------- */

typedef struct {
    const ef_loadgen_opts_t *opts; /* shared options */
    int index;                     /* which upload */
    uint64_t first;                /* first row */
    uint64_t count;                /* rows to send */
    volatile uint64_t *rows_sent;  /* shared progress counter, or NULL */
    pthread_t thread;              /* its thread */
    bool started;                  /* thread was created */
    bool ok;                       /* status OK and counts match */
    uint64_t received;             /* from the UploadResult */
    uint64_t written;
    uint64_t dead;
    char error[200]; /* why not ok */

    /* Chunks to send instead of synthetic rows (first and count then
       index them), or NULL. */
    const ef_loadgen_chunk_t *given;
} s_upload_t;

/* Encodes the next chunk of the upload into a byte buffer (NULL when out
   of memory). The buffer takes the encoded bytes without a copy. */
static grpc_byte_buffer *
s_next_message (s_upload_t *up, ef_buf_t *b, uint64_t first, int count,
                uint64_t seq)
{
    s_encode_chunk (b, up->opts, first, count, seq);
    if (b->failed)
        return NULL;
    grpc_slice slice = grpc_slice_new (b->data, b->len, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&slice, 1);
    grpc_slice_unref (slice);
    /* the slice owns the bytes now; the next chunk gets a fresh buffer
       with room for as many, which ef_buf_reserve would otherwise grow
       step by step */
    size_t used = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    ef_buf_reserve (b, used);
    return bb;
}

#define S_TAG_FINAL ((void *) 1)
#define S_TAG_SEND  ((void *) 2)
#define S_TAG_CLOSE ((void *) 3)

/* Runs one upload to completion on its own queue; fills up's results. */
static void *
s_upload_run (void *arg)
{
    s_upload_t *up = (s_upload_t *) arg;
    const ef_loadgen_opts_t *opts = up->opts;
    int chunk_rows = ef_loadgen_chunk_rows (opts);

    /* a local subchannel pool gives each upload its own connection, so
       uploads do not share one HTTP/2 window */
    grpc_arg args[1];
    memset (args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *) GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[0].value.integer = 1;
    grpc_channel_args channel_args = {1, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create ();
    grpc_channel *channel =
        grpc_channel_create (opts->target, creds, &channel_args);
    grpc_channel_credentials_release (creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next (NULL);
    gpr_timespec deadline =
        opts->timeout_ms > 0 ? gpr_time_add (
            gpr_now (GPR_CLOCK_MONOTONIC),
            gpr_time_from_millis (opts->timeout_ms, GPR_TIMESPAN))
                             : gpr_inf_future (GPR_CLOCK_REALTIME);
    grpc_slice method = grpc_slice_from_static_string (S_UPLOAD_METHOD);
    grpc_call *call =
        grpc_channel_create_call (channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                  method, NULL, deadline, NULL);

    grpc_metadata md;
    memset (&md, 0, sizeof md);
    md.key = grpc_slice_from_static_string ("embedflow-source");
    md.value = grpc_slice_from_copied_string (opts->source ? opts->source : "");
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init (&initial_md);
    grpc_metadata_array_init (&trailing_md);
    grpc_byte_buffer *reply = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice ();
    const char *error_string = NULL;

    grpc_op ops[4];
    memset (ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = opts->source ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[2].op = GRPC_OP_RECV_MESSAGE;
    ops[2].data.recv_message.recv_message = &reply;
    ops[3].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[3].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[3].data.recv_status_on_client.status = &status;
    ops[3].data.recv_status_on_client.status_details = &details;
    ops[3].data.recv_status_on_client.error_string = &error_string;
    bool final_pending =
        grpc_call_start_batch (call, ops, 4, S_TAG_FINAL, NULL) == GRPC_CALL_OK;
    if (!final_pending)
        snprintf (up->error, sizeof up->error, "cannot start the call");

    ef_buf_t buf = {NULL, 0, 0, false};
    uint64_t next_row = up->first;
    uint64_t end = up->first + up->count;
    uint64_t seq = 1;
    grpc_byte_buffer *next = NULL; /* encoded, not yet posted */
    uint64_t next_rows = 0;
    grpc_byte_buffer *in_flight = NULL; /* posted, not yet completed */
    uint64_t in_flight_rows = 0;
    bool close_pending = false;
    bool close_sent = false;
    bool send_failed = !final_pending;
    uint64_t sent = 0;

    for (;;) {
        if (!next && next_row < end && !send_failed && up->given) {
            const ef_loadgen_chunk_t *g = &up->given[next_row++];
            grpc_slice slice =
                grpc_slice_from_copied_buffer ((const char *) g->data, g->size);
            next = grpc_raw_byte_buffer_create (&slice, 1);
            grpc_slice_unref (slice);
            next_rows = g->rows;
        }
        else if (!next && next_row < end && !send_failed) {
            int n = (int) (end - next_row < (uint64_t) chunk_rows
                               ? end - next_row
                               : (uint64_t) chunk_rows);
            next = s_next_message (up, &buf, next_row, n, seq++);
            if (!next) {
                snprintf (up->error, sizeof up->error, "out of memory");
                send_failed = true;
                grpc_call_cancel (call, NULL);
            }
            next_rows = (uint64_t) n;
            next_row += (uint64_t) n;
        }
        if (!in_flight && next && !send_failed) {
            grpc_op op;
            memset (&op, 0, sizeof op);
            op.op = GRPC_OP_SEND_MESSAGE;
            op.data.send_message.send_message = next;
            if (grpc_call_start_batch (call, &op, 1, S_TAG_SEND, NULL)
                == GRPC_CALL_OK) {
                in_flight = next;
                in_flight_rows = next_rows;
            }
            else {
                grpc_byte_buffer_destroy (next);
                send_failed = true;
                grpc_call_cancel (call, NULL);
            }
            next = NULL;
            continue; /* encode the following chunk while this one goes */
        }
        if (!in_flight && !next && next_row >= end && !close_sent
            && !send_failed) {
            grpc_op op;
            memset (&op, 0, sizeof op);
            op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
            close_sent = true;
            close_pending =
                grpc_call_start_batch (call, &op, 1, S_TAG_CLOSE, NULL)
                == GRPC_CALL_OK;
        }
        if (!final_pending && !in_flight && !close_pending)
            break;

        grpc_event ev = grpc_completion_queue_next (
            cq, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break; /* cannot happen: the queue is not shut down */
        if (ev.tag == S_TAG_SEND) {
            grpc_byte_buffer_destroy (in_flight);
            in_flight = NULL;
            if (ev.success) {
                sent += in_flight_rows;
                if (up->rows_sent)
                    __atomic_add_fetch (up->rows_sent, in_flight_rows,
                                        __ATOMIC_RELAXED);
            }
            else
                send_failed = true; /* the status will say why */
        }
        else if (ev.tag == S_TAG_CLOSE)
            close_pending = false;
        else if (ev.tag == S_TAG_FINAL) {
            final_pending = false;
            send_failed = true; /* the call is over: stop sending */
        }
    }
    if (next)
        grpc_byte_buffer_destroy (next);
    free (buf.data);

    if (up->error[0] == 0 && status != GRPC_STATUS_OK) {
        snprintf (up->error, sizeof up->error, "%s: %.*s",
                  ef_grpc_status_name (status),
                  (int) GRPC_SLICE_LENGTH (details),
                  (const char *) GRPC_SLICE_START_PTR (details));
    }
    else if (up->error[0] == 0) {
        Embedflow__V1__UploadResult *result = NULL;
        if (reply) {
            grpc_byte_buffer_reader reader;
            if (grpc_byte_buffer_reader_init (&reader, reply)) {
                grpc_slice all = grpc_byte_buffer_reader_readall (&reader);
                result = embedflow__v1__upload_result__unpack (
                    NULL, GRPC_SLICE_LENGTH (all), GRPC_SLICE_START_PTR (all));
                grpc_slice_unref (all);
                grpc_byte_buffer_reader_destroy (&reader);
            }
        }
        if (!result)
            snprintf (up->error, sizeof up->error,
                      "status OK without a valid UploadResult");
        else {
            up->received = result->received;
            up->written = result->written;
            up->dead = result->dead_lettered;
            embedflow__v1__upload_result__free_unpacked (result, NULL);
            if (up->received != sent)
                snprintf (up->error, sizeof up->error,
                          "server reports %" PRIu64 " rows received, %" PRIu64
                          " were sent",
                          up->received, sent);
            else if (up->written + up->dead != up->received)
                snprintf (up->error, sizeof up->error,
                          "server reports %" PRIu64 " received but %" PRIu64
                          " settled",
                          up->received, up->written + up->dead);
            else
                up->ok = true;
        }
    }

    if (reply)
        grpc_byte_buffer_destroy (reply);
    grpc_slice_unref (details);
    gpr_free ((void *) error_string);
    grpc_metadata_array_destroy (&initial_md);
    grpc_metadata_array_destroy (&trailing_md);
    grpc_slice_unref (md.value);
    grpc_call_unref (call);
    ef_grpc_cq_destroy (cq);
    grpc_channel_destroy (channel);
    return NULL;
}

/* --- the run ------------------------------------------------------------- */

int
ef_loadgen_send (const ef_loadgen_opts_t *opts,
                 const ef_loadgen_chunk_t *chunks, size_t n,
                 ef_loadgen_result_t *res)
{
    memset (res, 0, sizeof *res);
    if (!opts->target || !*opts->target) {
        snprintf (res->error, sizeof res->error, "loadgen needs a target");
        return -1;
    }
    s_upload_t up;
    memset (&up, 0, sizeof up);
    up.opts = opts;
    up.count = n;
    up.given = chunks;
    grpc_init ();
    double start = (double) ef_clock_mono_us () / 1e6;
    s_upload_run (&up);
    res->seconds = (double) ef_clock_mono_us () / 1e6 - start;
    grpc_shutdown ();
    res->received = up.received;
    res->written = up.written;
    res->dead_lettered = up.dead;
    if (!up.ok) {
        snprintf (res->error, sizeof res->error, "%s",
                  up.error[0] ? up.error : "failed");
        res->failed_streams = 1;
        return -1;
    }
    return 0;
}

int
ef_loadgen_run (const ef_loadgen_opts_t *opts, ef_loadgen_result_t *res,
                volatile uint64_t *rows_sent)
{
    memset (res, 0, sizeof *res);
    if (!opts->target || !*opts->target || opts->dim <= 0) {
        snprintf (res->error, sizeof res->error,
                  "loadgen needs a target and a positive dim");
        return -1;
    }
    int streams = opts->streams > 0 ? opts->streams : 1;
    if ((uint64_t) streams > opts->rows && opts->rows > 0)
        streams = (int) opts->rows;
    s_upload_t *ups = (s_upload_t *) calloc ((size_t) streams, sizeof *ups);
    if (!ups) {
        snprintf (res->error, sizeof res->error, "out of memory");
        return -1;
    }
    grpc_init ();
    double start = (double) ef_clock_mono_us () / 1e6;
    for (int i = 0; i < streams; i++) {
        s_upload_t *up = &ups[i];
        up->opts = opts;
        up->index = i;
        up->first = opts->rows * (uint64_t) i / (uint64_t) streams;
        up->count =
            opts->rows * (uint64_t) (i + 1) / (uint64_t) streams - up->first;
        up->rows_sent = rows_sent;
        if (pthread_create (&up->thread, NULL, s_upload_run, up) == 0)
            up->started = true;
        else
            snprintf (up->error, sizeof up->error, "cannot start a thread");
    }
    for (int i = 0; i < streams; i++)
        if (ups[i].started)
            pthread_join (ups[i].thread, NULL);
    res->seconds = (double) ef_clock_mono_us () / 1e6 - start;
    grpc_shutdown ();

    for (int i = 0; i < streams; i++) {
        s_upload_t *up = &ups[i];
        res->received += up->received;
        res->written += up->written;
        res->dead_lettered += up->dead;
        if (!up->ok) {
            if (res->failed_streams == 0)
                snprintf (res->error, sizeof res->error, "upload %d: %s", i,
                          up->error[0] ? up->error : "failed");
            res->failed_streams++;
        }
    }
    free (ups);
    return res->failed_streams ? -1 : 0;
}
