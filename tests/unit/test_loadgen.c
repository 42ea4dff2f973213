/*  The load generator against the real grpc-receiver actor, run by the
    runtime with a test sink in place of splitter and writers: rows are
    stamped and forwarded as [ChunkHeader, EmbeddingChunk], acks settle
    the uploads, and every UploadResult adds up. Plus the encoder on its
    own and a client that cannot connect. */
#include "ef_test.h"

#include "pipeline/pipeline.h"
#include "embedflow/runtime.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "rows/uuid7.h"

#include "testkit/loadgen.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_ROWS    5000
#define S_STREAMS 3
#define S_DIM     16
#define S_RPD     10 /* rows per document: chunk_index 0..9 */
#define S_SOURCE  "unit-source"

/* what the sink saw */
static atomic_long s_rows, s_chunks, s_dead, s_bad;
static uint64_t s_stream_ids[S_STREAMS + 1];
static atomic_int s_streams_seen;

/* Records a stream id the first time it is seen; flags more than
   expected. Runs on the single sink thread. */
static void
s_note_stream (uint64_t id)
{
    int n = atomic_load (&s_streams_seen);
    for (int i = 0; i < n; i++)
        if (s_stream_ids[i] == id)
            return;
    if (n > S_STREAMS) {
        atomic_fetch_add (&s_bad, 1);
        return;
    }
    s_stream_ids[n] = id;
    atomic_store (&s_streams_seen, n + 1);
}

/* Checks one forwarded chunk and returns how many of its rows to count
   as dead (those with chunk_index 3), or -1 when something is wrong. */
static long
s_check_chunk (zmsg_t *msg, Embedflow__V1__ChunkHeader **header_p)
{
    if (zmsg_size (msg) != 2)
        return -1;
    zframe_t *hf = zmsg_first (msg);
    zframe_t *bf = zmsg_next (msg);
    Embedflow__V1__ChunkHeader *h = embedflow__v1__chunk_header__unpack (
        NULL, zframe_size (hf), zframe_data (hf));
    if (!h)
        return -1;
    *header_p = h;
    uint8_t id[16];
    if (strcmp (h->source, S_SOURCE) != 0 || ef_uuid_parse (h->job_id, id)
        || ef_uuid_version (id) != 7 || h->seq == 0 || h->received_us <= 0)
        return -1;
    Embedflow__V1__EmbeddingChunk *c = embedflow__v1__embedding_chunk__unpack (
        NULL, zframe_size (bf), zframe_data (bf));
    if (!c)
        return -1;
    long dead = 0;
    bool ok = c->n_items == h->rows && c->seq == h->seq;
    for (size_t i = 0; ok && i < c->n_items; i++) {
        Embedflow__V1__Embedding *e = c->items[i];
        ok = strncmp (e->document_id, "doc-", 4) == 0 && e->chunk_index < S_RPD
             && e->n_vector == S_DIM && strlen (e->content) > 10
             && strcmp (e->model, "synthetic-16") == 0 && e->n_metadata == 2;
        for (size_t k = 0; ok && k < e->n_vector; k++)
            ok = isfinite (e->vector[k]) && fabsf (e->vector[k]) < 1.0f;
        if (e->chunk_index == 3)
            dead++;
    }
    embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
    return ok ? dead : -1;
}

/* The sink: checks each chunk and acks it, dead-lettering some rows. */
static int
s_sink_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    (void) port;
    Embedflow__V1__ChunkHeader *h = NULL;
    long dead = s_check_chunk (*msg_p, &h);
    zmsg_destroy (msg_p);
    if (dead < 0 || !h) {
        atomic_fetch_add (&s_bad, 1);
        if (h)
            embedflow__v1__chunk_header__free_unpacked (h, NULL);
        return 0;
    }
    s_note_stream (h->stream_id);
    atomic_fetch_add (&s_rows, (long) h->rows);
    atomic_fetch_add (&s_chunks, 1);
    atomic_fetch_add (&s_dead, dead);

    Embedflow__V1__StreamTally tally = EMBEDFLOW__V1__STREAM_TALLY__INIT;
    Embedflow__V1__StreamTally *tallies[1] = {&tally};
    tally.stream_id = h->stream_id;
    tally.chunk_seq = h->seq; /* tallies are per chunk and attempt */
    tally.attempt = h->attempt;
    tally.stream_key = h->stream_key;
    tally.chunk_seq = h->seq;
    tally.attempt = h->attempt;
    tally.written = h->rows - (uint64_t) dead;
    tally.dead_lettered = (uint64_t) dead;
    Embedflow__V1__Ack ack = EMBEDFLOW__V1__ACK__INIT;
    ack.n_tallies = 1;
    ack.tallies = tallies;
    ack.from = "sink";
    zframe_t *f = zframe_new (NULL, embedflow__v1__ack__get_packed_size (&ack));
    embedflow__v1__ack__pack (&ack, zframe_data (f));
    zmsg_t *out = zmsg_new ();
    zmsg_append (out, &f);
    embedflow__v1__chunk_header__free_unpacked (h, NULL);
    return ef_actor_send (a, ef_actor_port (a, "acks"), 0, &out) < 0 ? -1 : 0;
}

/* The built-in actor under test, registered here by hand. */
extern const ef_actor_def_t ef_grpc_receiver_actor;

static const ef_option_t s_no_options[] = {EF_OPTION_END};
static const ef_port_def_t s_sink_ports[] = {
    {"chunks", EF_PORT_IN, "embedflow.v1.ChunkHeader", false, 8},
    {"acks", EF_PORT_OUT, "embedflow.v1.Ack", false, 100},
    {NULL, EF_PORT_IN, NULL, false, 0},
};
static const ef_actor_def_t s_sink = {
    .name = "ack-sink",
    .summary = "checks chunks and acks them",
    .options = s_no_options,
    .options_size = 0,
    .ports = s_sink_ports,
    .default_instances = 1,
    .handle = s_sink_handle,
};

/* A TCP port on 127.0.0.1 that was free a moment ago, or 0. */
static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset (&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    int port = 0;
    if (fd >= 0 && bind (fd, (struct sockaddr *) &sa, sizeof sa) == 0
        && getsockname (fd, (struct sockaddr *) &sa, &len) == 0)
        port = ntohs (sa.sin_port);
    if (fd >= 0)
        close (fd);
    return port;
}

EF_TEST (loadgen_through_receiver)
{
    char err[256] = "";
    ef_registry_t *reg = ef_registry_new ();
    EF_REQUIRE (ef_registry_add (reg, &ef_grpc_receiver_actor) == 0);
    EF_REQUIRE (ef_registry_add (reg, &s_sink) == 0);
    EF_REQUIRE (ef_registry_add_link (reg, "chunks", "grpc-receiver.chunks",
                                      "ack-sink.chunks")
                == 0);
    EF_REQUIRE (ef_registry_add_link (reg, "acks", "ack-sink.acks",
                                      "grpc-receiver.acks")
                == 0);
    /* The receiver reads the pipeline's globals (it records uploads in
       job_run when a database answers; here none does). */
    ef_config_t *c = ef_config_new (reg, ef_globals_options,
                                    sizeof (ef_globals_t), err, sizeof err);
    EF_REQUIRE (c);
    int port = s_free_port ();
    EF_REQUIRE (port > 0);
    char listen[64];
    snprintf (listen, sizeof listen, "127.0.0.1:%d", port);
    EF_REQUIRE (ef_config_set (c, "actors.grpc-receiver.listen", listen, err,
                               sizeof err)
                == 0);
    EF_REQUIRE (ef_config_validate (c, err, sizeof err) == 0);
    ef_runtime_t *rt = ef_runtime_new (c);
    int started = ef_runtime_start (rt, err, sizeof err);
    if (started)
        fprintf (stderr, "%s\n", err);
    EF_REQUIRE (started == 0);

    ef_loadgen_opts_t o = {
        .target = listen,
        .rows = S_ROWS,
        .dim = S_DIM,
        .chunk_rows = 100,
        .streams = S_STREAMS,
        .rows_per_document = S_RPD,
        .source = S_SOURCE,
        .seed = 7,
        .timeout_ms = 60000,
    };
    ef_loadgen_result_t r;
    volatile uint64_t sent = 0;
    int rc = ef_loadgen_run (&o, &r, &sent);
    if (rc)
        fprintf (stderr, "loadgen: %s\n", r.error);
    EF_CHECK (rc == 0);
    EF_CHECK (sent == S_ROWS);
    EF_CHECK (r.failed_streams == 0);
    EF_CHECK (r.received == S_ROWS);
    /* one row in ten has chunk_index 3 and was "dead-lettered" */
    EF_CHECK (r.dead_lettered == S_ROWS / S_RPD);
    EF_CHECK (r.written == S_ROWS - S_ROWS / S_RPD);
    EF_CHECK (r.seconds > 0);
    EF_CHECK (atomic_load (&s_rows) == S_ROWS);
    EF_CHECK (atomic_load (&s_dead) == S_ROWS / S_RPD);
    EF_CHECK (atomic_load (&s_chunks) >= S_ROWS / 100);
    EF_CHECK (atomic_load (&s_bad) == 0);
    EF_CHECK (atomic_load (&s_streams_seen) == S_STREAMS);

    /* more uploads than rows: one row each, nothing lost */
    o.rows = 2;
    o.streams = 5;
    EF_CHECK (ef_loadgen_run (&o, &r, NULL) == 0);
    EF_CHECK (r.received == 2);

    /* zero rows: an empty upload is answered at once */
    o.rows = 0;
    o.streams = 1;
    EF_CHECK (ef_loadgen_run (&o, &r, NULL) == 0);
    EF_CHECK (r.received == 0 && r.written == 0);

    ef_runtime_stop (rt);
    EF_CHECK (ef_runtime_wait (rt) == 0);
    ef_runtime_destroy (&rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (loadgen_reports_unreachable_target)
{
    /* port 1 on loopback: nothing listens there */
    ef_loadgen_opts_t o = {
        .target = "127.0.0.1:1",
        .rows = 10,
        .dim = 4,
        .streams = 2,
        .timeout_ms = 10000,
    };
    ef_loadgen_result_t r;
    EF_CHECK (ef_loadgen_run (&o, &r, NULL) == -1);
    EF_CHECK (r.failed_streams == 2);
    EF_CHECK (strstr (r.error, "UNAVAILABLE") != NULL);
    o.dim = 0;
    EF_CHECK (ef_loadgen_run (&o, &r, NULL) == -1);
    EF_CHECK (r.error[0] != 0);
}

EF_TEST (loadgen_encodes_deterministic_rows)
{
    ef_loadgen_opts_t o = {
        .target = "x", .dim = 768, .seed = 42, .rows_per_document = 4};
    size_t n1, n2, n3;
    uint8_t *a = ef_loadgen_encode_chunk (&o, 100, 50, 9, &n1);
    uint8_t *b = ef_loadgen_encode_chunk (&o, 100, 50, 9, &n2);
    o.seed = 43;
    uint8_t *d = ef_loadgen_encode_chunk (&o, 100, 50, 9, &n3);
    EF_REQUIRE (a && b && d);
    EF_CHECK (n1 == n2 && memcmp (a, b, n1) == 0);
    EF_CHECK (n1 != n3 || memcmp (a, d, n1) != 0);

    Embedflow__V1__EmbeddingChunk *c =
        embedflow__v1__embedding_chunk__unpack (NULL, n1, a);
    EF_REQUIRE (c);
    EF_CHECK (c->seq == 9 && c->n_items == 50);
    for (size_t i = 0; i < c->n_items; i++) {
        Embedflow__V1__Embedding *e = c->items[i];
        uint64_t r = 100 + i;
        char doc[32];
        snprintf (doc, sizeof doc, "doc-%06" PRIu64, r / 4);
        EF_CHECK (strcmp (e->document_id, doc) == 0);
        EF_CHECK (e->chunk_index == r % 4);
        EF_CHECK (e->id[0] == 0);
        EF_CHECK (strcmp (e->model, "synthetic-768") == 0);
        EF_CHECK (e->content[strlen (e->content) - 1] == '.');
        char num[32];
        snprintf (num, sizeof num, " %" PRIu64 ": ", r / 4);
        bool lang = false, title = false;
        for (size_t k = 0; k < e->n_metadata; k++) {
            lang |= strcmp (e->metadata[k]->key, "lang") == 0
                    && strcmp (e->metadata[k]->value, "en") == 0;
            title |= strcmp (e->metadata[k]->key, "title") == 0
                     && strstr (e->metadata[k]->value, num) != NULL;
        }
        EF_CHECK (lang && title);
        EF_REQUIRE (e->n_vector == 768);
        double norm = 0;
        for (size_t k = 0; k < e->n_vector; k++) {
            EF_CHECK (isfinite (e->vector[k]));
            norm += (double) e->vector[k] * e->vector[k];
        }
        EF_CHECK (norm > 0.8 && norm < 1.2);
    }
    /* rows of one document share the title, rows differ in content */
    EF_CHECK (strcmp (c->items[0]->content, c->items[1]->content) != 0);
    embedflow__v1__embedding_chunk__free_unpacked (c, NULL);

    /* a chunk stays under gRPC's default 4 MiB whatever the dimension */
    o.dim = 100000;
    o.chunk_rows = 256;
    EF_CHECK (ef_loadgen_chunk_rows (&o) >= 1);
    EF_CHECK ((int64_t) ef_loadgen_chunk_rows (&o) * 400000 < 4 << 20);
    o.dim = 768;
    EF_CHECK (ef_loadgen_chunk_rows (&o) == 256);
    free (a);
    free (b);
    free (d);
}

/* Rows [0, n) of o as unit vectors, dim floats each (malloc'd). */
static float *
s_vectors (const ef_loadgen_opts_t *o, int n)
{
    size_t size;
    uint8_t *bytes = ef_loadgen_encode_chunk (o, 0, n, 0, &size);
    Embedflow__V1__EmbeddingChunk *c =
        bytes ? embedflow__v1__embedding_chunk__unpack (NULL, size, bytes)
              : NULL;
    free (bytes);
    float *v = c ? malloc ((size_t) n * (size_t) o->dim * sizeof *v) : NULL;
    for (int i = 0; v && i < n; i++) {
        EF_CHECK (c->items[i]->n_vector == (size_t) o->dim);
        memcpy (v + (size_t) i * (size_t) o->dim, c->items[i]->vector,
                (size_t) o->dim * sizeof *v);
    }
    if (c)
        embedflow__v1__embedding_chunk__free_unpacked (c, NULL);
    return v;
}

static double
s_dot (const float *a, const float *b, int dim)
{
    double s = 0;
    for (int k = 0; k < dim; k++)
        s += (double) a[k] * b[k];
    return s;
}

/* The index bench measures an ANN index on these vectors, so they must
   have what embeddings have and noise lacks: every row's nearest
   neighbour is a chunk of its own document, and queries drawn with
   another seed land near rows of their topic (1,000 topics shared by all
   seeds), closer than any two rows of different topics ever are. The
   uniform kind has neither and keeps its earlier bytes. */
EF_TEST (loadgen_clustered_vectors_have_documents_and_shared_topics)
{
    enum { DIM = 768, DOCS = 3000, RPD = 2, ROWS = DOCS * RPD, QUERIES = 40 };
    ef_loadgen_opts_t o = {
        .target = "x", .dim = DIM, .seed = 42, .rows_per_document = RPD};
    float *rows = s_vectors (&o, ROWS);
    o.seed = 43;
    o.rows_per_document = 1;
    float *queries = s_vectors (&o, QUERIES);
    EF_REQUIRE (rows && queries);

    int own = 0;
    for (int i = 0; i < 200; i++) {
        int best = -1;
        double best_dot = -2;
        for (int j = 0; j < ROWS; j++) {
            double d = j == i ? -2
                              : s_dot (rows + (size_t) i * DIM,
                                       rows + (size_t) j * DIM, DIM);
            if (d > best_dot) {
                best_dot = d;
                best = j;
            }
        }
        own += best / RPD == i / RPD;
        EF_CHECK (
            fabs (s_dot (rows + (size_t) i * DIM, rows + (size_t) i * DIM, DIM)
                  - 1)
            < 1e-4);
    }
    EF_CHECK (own == 200);

    /* 3,000 documents cover ~95% of the topics: nearly every query has
       rows of its topic (cosine ~0.66) among them. With topics of each
       seed's own, 6 of the 40 came that close (checked) */
    int near = 0;
    for (int q = 0; q < QUERIES; q++) {
        double best = -2;
        for (int j = 0; j < ROWS; j++) {
            double d = s_dot (queries + (size_t) q * DIM,
                              rows + (size_t) j * DIM, DIM);
            best = d > best ? d : best;
        }
        near += best > 0.55;
    }
    EF_CHECK (near >= QUERIES * 8 / 10);
    free (rows);
    free (queries);

    /* uniform: the generator's bytes before clustered vectors */
    o = (ef_loadgen_opts_t){.target = "x",
                            .dim = 4,
                            .seed = 42,
                            .rows_per_document = 4,
                            .vectors = EF_LOADGEN_UNIFORM};
    float *u = s_vectors (&o, 1);
    EF_REQUIRE (u);
    EF_CHECK (u[0] == -0.0521909706f && u[1] == -0.481719881f
              && u[2] == -0.191324368f && u[3] == -0.672137618f);
    free (u);
}
