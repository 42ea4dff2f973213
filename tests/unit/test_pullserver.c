/*  The bench's GetEmbeddings server (testkit/pullserver.c) against a small C
    client: it serves exactly the load generator's bytes for the rows
    asked, with decimal resume tokens, honours a resume token, refuses
    malformed requests with INVALID_ARGUMENT, and stops cleanly with a
    stream still open (ASan runs check that nothing leaks). */
#include "ef_test.h"

#include "testkit/loadgen.h"
#include "testkit/pullserver.h"
#include "embedflow/v1/embedding.pb-c.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_MSGS 64

/* One GetEmbeddings call of the test client. */
typedef struct {
    grpc_channel *channel;        /* its own channel */
    grpc_completion_queue *cq;    /* plucked */
    grpc_call *call;              /* the call */
    grpc_metadata_array initial;  /* server initial metadata */
    grpc_metadata_array trailing; /* server trailing metadata */
    grpc_status_code status;      /* final status */
    grpc_slice details;           /* its message */
    char text[256];               /* details as a string */
    int n;                        /* messages received */
    uint8_t *msg[S_MAX_MSGS];     /* their bytes */
    size_t size[S_MAX_MSGS];      /* their sizes */
} s_client_t;

/* Runs one batch on the client's call and waits for it. Returns its
   success. */
static bool
s_batch (s_client_t *c, grpc_op *ops, size_t n)
{
    if (grpc_call_start_batch (c->call, ops, n, c, NULL) != GRPC_CALL_OK)
        return false;
    grpc_event ev = grpc_completion_queue_pluck (
        c->cq, c, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Opens a GetEmbeddings call to port sending request (size bytes).
   Returns 0 or -1. */
static int
s_open (s_client_t *c, int port, const uint8_t *request, size_t size)
{
    memset (c, 0, sizeof *c);
    char target[64];
    snprintf (target, sizeof target, "127.0.0.1:%d", port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create ();
    c->channel = grpc_channel_create (target, creds, NULL);
    grpc_channel_credentials_release (creds);
    c->cq = grpc_completion_queue_create_for_pluck (NULL);
    grpc_slice method = grpc_slice_from_static_string (
        "/embedflow.v1.EmbeddingService/GetEmbeddings");
    c->call = grpc_channel_create_call (
        c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, method, NULL,
        gpr_time_add (gpr_now (GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis (20000, GPR_TIMESPAN)),
        NULL);
    grpc_metadata_array_init (&c->initial);
    grpc_metadata_array_init (&c->trailing);
    grpc_slice slice =
        grpc_slice_from_copied_buffer ((const char *) request, size);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&slice, 1);
    grpc_slice_unref (slice);
    grpc_op ops[4];
    memset (ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial;
    bool ok = s_batch (c, ops, 4);
    grpc_byte_buffer_destroy (bb);
    return ok ? 0 : -1;
}

/* Reads up to max more messages (until the stream ends when max < 0).
   Returns false when the stream ended. */
static bool
s_read (s_client_t *c, int max)
{
    for (int i = 0; max < 0 || i < max; i++) {
        grpc_byte_buffer *bb = NULL;
        grpc_op op;
        memset (&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &bb;
        if (!s_batch (c, &op, 1) || !bb)
            return false;
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init (&reader, bb);
        grpc_slice all = grpc_byte_buffer_reader_readall (&reader);
        if (c->n < S_MAX_MSGS) {
            c->size[c->n] = GRPC_SLICE_LENGTH (all);
            c->msg[c->n] = malloc (c->size[c->n] + 1);
            memcpy (c->msg[c->n], GRPC_SLICE_START_PTR (all), c->size[c->n]);
            c->n++;
        }
        grpc_slice_unref (all);
        grpc_byte_buffer_reader_destroy (&reader);
        grpc_byte_buffer_destroy (bb);
    }
    return true;
}

/* Reads the final status and frees the call. */
static void
s_close (s_client_t *c)
{
    grpc_op op;
    memset (&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &c->trailing;
    op.data.recv_status_on_client.status = &c->status;
    op.data.recv_status_on_client.status_details = &c->details;
    if (s_batch (c, &op, 1)) {
        char *text = grpc_slice_to_c_string (c->details);
        snprintf (c->text, sizeof c->text, "%s", text);
        gpr_free (text);
        grpc_slice_unref (c->details);
    }
    else
        c->status = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_destroy (&c->initial);
    grpc_metadata_array_destroy (&c->trailing);
    grpc_call_unref (c->call);
    grpc_channel_destroy (c->channel);
    grpc_completion_queue_shutdown (c->cq);
    grpc_completion_queue_destroy (c->cq);
}

/* Frees the messages kept. */
static void
s_free_msgs (s_client_t *c)
{
    for (int i = 0; i < c->n; i++)
        free (c->msg[i]);
    c->n = 0;
}

/* Packs a RequestParams; the caller frees. */
static uint8_t *
s_params (const char *token, uint32_t chunk_size, bool filter, size_t *size)
{
    Embedflow__V1__RequestParams p = EMBEDFLOW__V1__REQUEST_PARAMS__INIT;
    Embedflow__V1__RequestParams__FilterEntry e =
        EMBEDFLOW__V1__REQUEST_PARAMS__FILTER_ENTRY__INIT;
    Embedflow__V1__RequestParams__FilterEntry *entries[1] = {&e};
    p.source = "unit";
    p.resume_token = (char *) token;
    p.chunk_size = chunk_size;
    if (filter) {
        e.key = "lang";
        e.value = "en";
        p.n_filter = 1;
        p.filter = entries;
    }
    *size = embedflow__v1__request_params__get_packed_size (&p);
    uint8_t *buf = malloc (*size + 1);
    embedflow__v1__request_params__pack (&p, buf);
    return buf;
}

/* One whole call: request (token, chunk_size, filter) to port; fills c
   (messages kept, status read). */
static void
s_call (s_client_t *c, int port, const char *token, uint32_t chunk_size,
        bool filter)
{
    size_t size;
    uint8_t *req = s_params (token, chunk_size, filter, &size);
    if (s_open (c, port, req, size) == 0)
        s_read (c, -1);
    s_close (c);
    free (req);
}

static const ef_loadgen_opts_t s_data = {
    .rows = 100, .dim = 8, .rows_per_document = 16, .seed = 42};

/* Checks that message k of c holds rows [first, first + count) exactly as
   the load generator encodes them (seq k + 1) followed by resume token
   first + count. */
static bool
s_is_chunk (const s_client_t *c, int k, uint64_t first, int count)
{
    size_t size;
    uint8_t *want = ef_loadgen_encode_chunk (&s_data, first, count,
                                             (uint64_t) k + 1, &size);
    char token[24];
    int tlen =
        snprintf (token, sizeof token, "%" PRIu64, first + (uint64_t) count);
    bool ok = want && c->size[k] == size + 2 + (size_t) tlen
              && memcmp (c->msg[k], want, size) == 0;
    free (want);
    Embedflow__V1__EmbeddingChunk *chunk =
        ok ? embedflow__v1__embedding_chunk__unpack (NULL, c->size[k],
                                                     c->msg[k])
           : NULL;
    ok = chunk && chunk->n_items == (size_t) count
         && strcmp (chunk->resume_token, token) == 0
         && chunk->seq == (uint64_t) k + 1;
    if (chunk)
        embedflow__v1__embedding_chunk__free_unpacked (chunk, NULL);
    return ok;
}

EF_TEST (pullserver_serves_rows_and_honours_resume_token)
{
    char err[256];
    ef_pullserver_t *srv =
        ef_pullserver_new (&s_data, "127.0.0.1:0", err, sizeof err);
    EF_REQUIRE (srv);
    int port = ef_pullserver_port (srv);
    EF_CHECK (port > 0);

    s_client_t c;
    s_call (&c, port, "", 32, false);
    EF_CHECK (c.status == GRPC_STATUS_OK);
    EF_CHECK (c.n == 4);
    if (c.n == 4) {
        EF_CHECK (s_is_chunk (&c, 0, 0, 32));
        EF_CHECK (s_is_chunk (&c, 1, 32, 32));
        EF_CHECK (s_is_chunk (&c, 2, 64, 32));
        EF_CHECK (s_is_chunk (&c, 3, 96, 4));
    }
    s_free_msgs (&c);

    /* resumed after row 90: rows 90..99 only */
    s_call (&c, port, "90", 4, false);
    EF_CHECK (c.status == GRPC_STATUS_OK);
    EF_CHECK (c.n == 3);
    if (c.n == 3) {
        EF_CHECK (s_is_chunk (&c, 0, 90, 4));
        EF_CHECK (s_is_chunk (&c, 1, 94, 4));
        EF_CHECK (s_is_chunk (&c, 2, 98, 2));
    }
    s_free_msgs (&c);

    /* at the end: nothing, and OK */
    s_call (&c, port, "100", 0, false);
    EF_CHECK (c.status == GRPC_STATUS_OK && c.n == 0);
    s_free_msgs (&c);

    ef_pullserver_stats_t st;
    ef_pullserver_stats (srv, &st);
    EF_CHECK (st.calls == 3 && st.completed == 3 && st.refused == 0);
    EF_CHECK (st.chunks_sent == 7 && st.rows_sent == 110);
    EF_CHECK (st.bytes_sent > 110 * 8 * 4);
    ef_pullserver_destroy (&srv);
    EF_CHECK (srv == NULL);
    ef_pullserver_destroy (&srv); /* twice is harmless */
}

EF_TEST (pullserver_refuses_bad_requests)
{
    char err[256];
    ef_pullserver_t *srv =
        ef_pullserver_new (&s_data, "127.0.0.1:0", err, sizeof err);
    EF_REQUIRE (srv);
    int port = ef_pullserver_port (srv);
    static const struct {
        const char *token; /* resume token sent */
        bool filter;       /* with a filter */
        const char *word;  /* expected in the status message */
    } cases[] = {
        {"abc", false, "resume_token 'abc'"},
        {"101", false, "resume_token '101'"},
        {"-1", false, "resume_token '-1'"},
        {"5x", false, "resume_token '5x'"},
        {"", true, "filter"},
    };
    s_client_t c;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_call (&c, port, cases[i].token, 10, cases[i].filter);
        EF_CHECK (c.status == GRPC_STATUS_INVALID_ARGUMENT);
        EF_CHECK (c.n == 0);
        EF_CHECK (strstr (c.text, cases[i].word) != NULL);
        s_free_msgs (&c);
    }
    /* bytes that are not a RequestParams (a truncated varint field) */
    const uint8_t junk[] = {0x18, 0xff};
    if (s_open (&c, port, junk, sizeof junk) == 0)
        s_read (&c, -1);
    s_close (&c);
    EF_CHECK (c.status == GRPC_STATUS_INVALID_ARGUMENT);
    EF_CHECK (strstr (c.text, "not a RequestParams") != NULL);
    s_free_msgs (&c);

    ef_pullserver_stats_t st;
    ef_pullserver_stats (srv, &st);
    EF_CHECK (st.calls == 6 && st.refused == 6 && st.rows_sent == 0);
    ef_pullserver_destroy (&srv);

    /* a port that is taken is an error, not a crash */
    srv = ef_pullserver_new (&s_data, "127.0.0.1:0", err, sizeof err);
    EF_REQUIRE (srv);
    char taken[64];
    snprintf (taken, sizeof taken, "127.0.0.1:%d", ef_pullserver_port (srv));
    ef_pullserver_t *second =
        ef_pullserver_new (&s_data, taken, err, sizeof err);
    EF_CHECK (second == NULL);
    EF_CHECK (strstr (err, "cannot listen") != NULL);
    ef_pullserver_destroy (&second);
    ef_pullserver_destroy (&srv);
}

EF_TEST (pullserver_stops_with_a_stream_open)
{
    /* twice: a second server after the first is gone starts cleanly */
    for (int round = 0; round < 2; round++) {
        char err[256];
        ef_loadgen_opts_t big = s_data;
        big.rows = 200000;
        big.dim = 64;
        ef_pullserver_t *srv =
            ef_pullserver_new (&big, "127.0.0.1:0", err, sizeof err);
        EF_REQUIRE (srv);
        size_t size;
        uint8_t *req = s_params ("", 256, false, &size);
        s_client_t c;
        EF_CHECK (s_open (&c, ef_pullserver_port (srv), req, size) == 0);
        free (req);
        EF_CHECK (s_read (&c, 2));
        /* the client stops reading: flow control holds the server back
           long before 200000 rows */
        ef_pullserver_stats_t st;
        ef_pullserver_stats (srv, &st);
        EF_CHECK (st.calls == 1 && st.completed == 0);
        ef_pullserver_destroy (&srv);
        s_read (&c, -1);
        s_close (&c);
        EF_CHECK (c.status != GRPC_STATUS_OK);
        EF_CHECK (c.n >= 2);
        s_free_msgs (&c);
    }
}
