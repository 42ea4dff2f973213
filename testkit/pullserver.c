/*  pullserver.c — the bench's GetEmbeddings server (see pullserver.h).

    One thread owns the completion queue and every call's state; other
    threads only read the atomic counters and, in destroy, ask the server
    to shut down (gRPC's shutdown and cancel calls are thread-safe). A
    call is a small state machine whose tags point back at it: accept,
    then RECV_CLOSE_ON_SERVER in its own batch (it also tells of
    cancellation), then SEND_MESSAGE after SEND_MESSAGE, then
    SEND_STATUS_FROM_SERVER; it is freed when none of its batches is in
    flight any more.
*/
#include "testkit/pullserver.h"

#include "embedflow/v1/embedding.pb-c.h"
#include "grpc/grpcmsg.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_METHOD "/embedflow.v1.EmbeddingService/GetEmbeddings"

typedef enum {
    S_TAG_ACCEPT,   /* request_registered_call came back */
    S_TAG_CLOSE,    /* RECV_CLOSE_ON_SERVER completed */
    S_TAG_SEND,     /* a SEND_MESSAGE batch completed */
    S_TAG_STATUS,   /* the SEND_STATUS_FROM_SERVER batch completed */
    S_TAG_SHUTDOWN, /* grpc_server_shutdown_and_notify completed */
} s_tag_kind_t;

typedef struct {
    s_tag_kind_t kind; /* what completed */
    void *obj;         /* the call, or the server */
} s_tag_t;

typedef struct s_call {
    ef_pullserver_t *owner;         /* server */
    struct s_call *next;            /* list of accepted calls */
    grpc_call *call;                /* the call (one ref, ours) */
    gpr_timespec deadline;          /* client deadline, unused */
    grpc_metadata_array request_md; /* client metadata, unused */
    grpc_byte_buffer *request;      /* the RequestParams */
    s_tag_t accept_tag;             /* S_TAG_ACCEPT */
    s_tag_t close_tag;              /* S_TAG_CLOSE */
    s_tag_t send_tag;               /* S_TAG_SEND */
    s_tag_t status_tag;             /* S_TAG_STATUS */
    int refs;                       /* batches in flight */
    int cancelled;                  /* RECV_CLOSE_ON_SERVER output */
    bool md_sent;                   /* initial metadata was posted */
    grpc_slice details;             /* status message being sent */
    bool has_details;               /* details holds a ref */
    grpc_byte_buffer *sending;      /* the message in flight */
    uint32_t sending_rows;          /* rows in it */
    size_t sending_bytes;           /* its size */
    grpc_byte_buffer *ahead;        /* the next message, encoded */
    uint32_t ahead_rows;            /* rows in it */
    size_t ahead_bytes;             /* its size */
    uint64_t next_row;              /* first row not yet encoded */
    uint64_t seq;                   /* EmbeddingChunk.seq of the last */
    int chunk_rows;                 /* rows per chunk */
} s_call_t;

struct _ef_pullserver_t {
    ef_loadgen_opts_t data;    /* the rows served */
    grpc_completion_queue *cq; /* the server's queue */
    grpc_server *server;       /* the server */
    void *method;              /* registered GetEmbeddings */
    int port;                  /* bound port */
    pthread_t thread;          /* polls cq */
    bool thread_started;       /* thread was created */
    s_tag_t shutdown_tag;      /* S_TAG_SHUTDOWN */
    atomic_bool stopping;      /* destroy began: accept no more */
    /* owned by the thread */
    s_call_t *calls;    /* accepted calls not yet freed */
    int accepting;      /* accept requests outstanding */
    bool shutdown_done; /* the shutdown tag came back */
    /* counters, read by any thread */
    atomic_uint_least64_t calls_n;   /* calls accepted */
    atomic_uint_least64_t refused;   /* answered INVALID_ARGUMENT */
    atomic_uint_least64_t completed; /* ended with status OK */
    atomic_uint_least64_t chunks;    /* messages sent */
    atomic_uint_least64_t rows;      /* rows sent */
    atomic_uint_least64_t bytes;     /* bytes sent */
    atomic_uint_least64_t encode_ns; /* time spent encoding */
};

/* Monotonic nanoseconds. */
static uint64_t
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* --- calls --------------------------------------------------------------- */

/* Asks gRPC for the next GetEmbeddings call. Returns 0, or -1 when gRPC
   refused the request (no completion will come). */
static int
s_accept_next (ef_pullserver_t *self)
{
    s_call_t *c = (s_call_t *) calloc (1, sizeof *c);
    if (!c)
        return -1;
    c->owner = self;
    grpc_metadata_array_init (&c->request_md);
    c->accept_tag = (s_tag_t){S_TAG_ACCEPT, c};
    c->close_tag = (s_tag_t){S_TAG_CLOSE, c};
    c->send_tag = (s_tag_t){S_TAG_SEND, c};
    c->status_tag = (s_tag_t){S_TAG_STATUS, c};
    grpc_call_error rc = grpc_server_request_registered_call (
        self->server, self->method, &c->call, &c->deadline, &c->request_md,
        &c->request, self->cq, self->cq, &c->accept_tag);
    if (rc != GRPC_CALL_OK) {
        grpc_metadata_array_destroy (&c->request_md);
        free (c);
        return -1;
    }
    self->accepting++;
    return 0;
}

/* Frees a call none of whose batches is in flight; unlinks it. */
static void
s_call_free (s_call_t *c)
{
    s_call_t **p = &c->owner->calls;
    while (*p && *p != c)
        p = &(*p)->next;
    if (*p)
        *p = c->next;
    if (c->request)
        grpc_byte_buffer_destroy (c->request);
    if (c->sending)
        grpc_byte_buffer_destroy (c->sending);
    if (c->ahead)
        grpc_byte_buffer_destroy (c->ahead);
    if (c->has_details)
        grpc_slice_unref (c->details);
    if (c->call)
        grpc_call_unref (c->call);
    grpc_metadata_array_destroy (&c->request_md);
    free (c);
}

/* Drops one reference; frees the call at zero. */
static void
s_call_unref (s_call_t *c)
{
    if (--c->refs == 0)
        s_call_free (c);
}

/* Encodes the call's next chunk into c->ahead (none when every row is
   encoded). The bytes are the load generator's for those rows, plus the
   resume token: the decimal number of the row after the chunk. Returns
   0, -1 when out of memory. */
static int
s_encode_ahead (s_call_t *c)
{
    ef_pullserver_t *self = c->owner;
    if (c->next_row >= self->data.rows)
        return 0;
    uint64_t left = self->data.rows - c->next_row;
    int count = left < (uint64_t) c->chunk_rows ? (int) left : c->chunk_rows;
    uint64_t t0 = s_now_ns ();
    size_t size;
    uint8_t *data = ef_loadgen_encode_chunk (&self->data, c->next_row, count,
                                             c->seq + 1, &size);
    char token[24];
    int tlen = snprintf (token, sizeof token, "%" PRIu64,
                         c->next_row + (uint64_t) count);
    /* EmbeddingChunk.resume_token (field 3) appended: protobuf takes
       fields in any order. Under 128 bytes, its length is one byte. */
    uint8_t *grown =
        data ? (uint8_t *) realloc (data, size + 2 + (size_t) tlen) : NULL;
    if (!grown) {
        free (data);
        return -1;
    }
    grown[size++] = 0x1a;
    grown[size++] = (uint8_t) tlen;
    memcpy (grown + size, token, (size_t) tlen);
    size += (size_t) tlen;
    grpc_slice slice = grpc_slice_new (grown, size, free);
    c->ahead = grpc_raw_byte_buffer_create (&slice, 1);
    grpc_slice_unref (slice);
    c->ahead_rows = (uint32_t) count;
    c->ahead_bytes = size;
    c->seq++;
    c->next_row += (uint64_t) count;
    atomic_fetch_add (&self->encode_ns, s_now_ns () - t0);
    return 0;
}

/* Ends the call with code and text (initial metadata too if not sent
   yet). On a refused batch the call is cancelled; RECV_CLOSE frees it. */
static void
s_call_finish (s_call_t *c, grpc_status_code code, const char *text)
{
    grpc_op ops[2];
    memset (ops, 0, sizeof ops);
    int n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = true;
    }
    c->details = grpc_slice_from_copied_string (text);
    c->has_details = true;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->details;
    n++;
    /* counted before the batch: the client may see the status before
       start_batch returns */
    atomic_uint_least64_t *counter =
        code == GRPC_STATUS_OK                 ? &c->owner->completed
        : code == GRPC_STATUS_INVALID_ARGUMENT ? &c->owner->refused
                                               : NULL;
    if (counter)
        atomic_fetch_add (counter, 1);
    if (grpc_call_start_batch (c->call, ops, (size_t) n, &c->status_tag, NULL)
        != GRPC_CALL_OK) {
        if (counter)
            atomic_fetch_sub (counter, 1);
        grpc_call_cancel (c->call, NULL);
        return;
    }
    c->refs++;
}

/* Puts the encoded chunk on the wire (initial metadata first if not sent
   yet) and encodes the one after it meanwhile; with nothing left, ends
   the call OK. */
static void
s_call_send (s_call_t *c)
{
    if (!c->ahead) {
        s_call_finish (c, GRPC_STATUS_OK, "");
        return;
    }
    grpc_op ops[2];
    memset (ops, 0, sizeof ops);
    int n = 0;
    if (!c->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->md_sent = true;
    }
    c->sending = c->ahead;
    c->sending_rows = c->ahead_rows;
    c->sending_bytes = c->ahead_bytes;
    c->ahead = NULL;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->sending;
    n++;
    if (grpc_call_start_batch (c->call, ops, (size_t) n, &c->send_tag, NULL)
        != GRPC_CALL_OK) {
        grpc_call_cancel (c->call, NULL);
        return;
    }
    c->refs++;
    if (s_encode_ahead (c) != 0)
        /* the message in flight completes; then the call ends INTERNAL */
        c->next_row = UINT64_MAX;
}

/* Parses the call's RequestParams into c->next_row and c->chunk_rows.
   Returns 0, or -1 with why (the call is then refused). */
static int
s_call_parse (s_call_t *c, char *why, size_t whylen)
{
    ef_pullserver_t *self = c->owner;
    zframe_t *frame = c->request ? ef_grpc_message_frame (c->request) : NULL;
    Embedflow__V1__RequestParams *p =
        frame ? embedflow__v1__request_params__unpack (
            NULL, zframe_size (frame), zframe_data (frame))
              : NULL;
    zframe_destroy (&frame);
    if (!p) {
        snprintf (why, whylen, "the request is not a RequestParams");
        return -1;
    }
    int rc = 0;
    const char *token = p->resume_token ? p->resume_token : "";
    uint64_t first = 0;
    if (*token) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull (token, &end, 10);
        if (*token < '0' || *token > '9' || *end || errno
            || v > self->data.rows) {
            snprintf (why, whylen,
                      "resume_token '%.64s' is not a row number from 0 to "
                      "%" PRIu64,
                      token, self->data.rows);
            rc = -1;
        }
        first = v;
    }
    if (rc == 0 && p->n_filter > 0) {
        snprintf (why, whylen,
                  "filter is not supported by the bench's server (got %zu "
                  "key(s))",
                  p->n_filter);
        rc = -1;
    }
    if (rc == 0) {
        ef_loadgen_opts_t g = self->data;
        g.chunk_rows = p->chunk_size > 1000000 ? 1000000 : (int) p->chunk_size;
        c->chunk_rows = ef_loadgen_chunk_rows (&g);
        c->next_row = first;
    }
    embedflow__v1__request_params__free_unpacked (p, NULL);
    return rc;
}

/* A call arrived (ok) or an accept request came back unused (!ok). */
static void
s_on_accept (ef_pullserver_t *self, s_call_t *c, bool ok)
{
    self->accepting--;
    if (!ok) {
        if (c->request)
            grpc_byte_buffer_destroy (c->request);
        grpc_metadata_array_destroy (&c->request_md);
        free (c);
        return;
    }
    if (!atomic_load (&self->stopping))
        s_accept_next (self);
    atomic_fetch_add (&self->calls_n, 1);
    c->next = self->calls;
    self->calls = c;

    grpc_op op;
    memset (&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch (c->call, &op, 1, &c->close_tag, NULL)
        != GRPC_CALL_OK) {
        grpc_call_cancel (c->call, NULL);
        s_call_free (c);
        return;
    }
    c->refs++;
    if (atomic_load (&self->stopping)) {
        /* matched as the server went away */
        grpc_call_cancel (c->call, NULL);
        return;
    }
    char why[200];
    if (s_call_parse (c, why, sizeof why) != 0) {
        s_call_finish (c, GRPC_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    if (s_encode_ahead (c) != 0) {
        s_call_finish (c, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    s_call_send (c);
}

/* A SEND_MESSAGE completed: count it, send the next or end the call. */
static void
s_on_send (s_call_t *c, bool ok)
{
    ef_pullserver_t *self = c->owner;
    grpc_byte_buffer_destroy (c->sending);
    c->sending = NULL;
    if (ok) {
        atomic_fetch_add (&self->chunks, 1);
        atomic_fetch_add (&self->rows, c->sending_rows);
        atomic_fetch_add (&self->bytes, c->sending_bytes);
        if (c->next_row == UINT64_MAX)
            s_call_finish (c, GRPC_STATUS_INTERNAL, "out of memory");
        else
            s_call_send (c);
    }
    /* else the call is broken or cancelled: RECV_CLOSE ends it */
    s_call_unref (c);
}

/* Routes one completion. */
static void
s_dispatch (ef_pullserver_t *self, const grpc_event *ev)
{
    s_tag_t *tag = (s_tag_t *) ev->tag;
    bool ok = ev->success != 0;
    switch (tag->kind) {
    case S_TAG_ACCEPT:
        s_on_accept (self, (s_call_t *) tag->obj, ok);
        break;
    case S_TAG_CLOSE:
    case S_TAG_STATUS:
        s_call_unref ((s_call_t *) tag->obj);
        break;
    case S_TAG_SEND:
        s_on_send ((s_call_t *) tag->obj, ok);
        break;
    case S_TAG_SHUTDOWN:
        self->shutdown_done = true;
        break;
    }
}

/* The server's thread: handles completions until the server has shut
   down and every call and accept request is accounted for. */
static void *
s_run (void *arg)
{
    ef_pullserver_t *self = (ef_pullserver_t *) arg;
    while (!self->shutdown_done || self->calls || self->accepting) {
        grpc_event ev = grpc_completion_queue_next (
            self->cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            s_dispatch (self, &ev);
        else if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break; /* not reached: the queue is shut down after this */
    }
    return NULL;
}

/* --- the server ---------------------------------------------------------- */

ef_pullserver_t *
ef_pullserver_new (const ef_loadgen_opts_t *data, const char *listen, char *err,
                   size_t errlen)
{
    if (!data || data->dim <= 0) {
        snprintf (err, errlen, "pull server: a dimension is needed");
        return NULL;
    }
    ef_pullserver_t *self = (ef_pullserver_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, errlen, "pull server: out of memory");
        return NULL;
    }
    self->data = *data;
    self->data.target = NULL;
    self->data.source = NULL;
    self->shutdown_tag = (s_tag_t){S_TAG_SHUTDOWN, self};
    grpc_init ();
    grpc_arg args[1];
    memset (args, 0, sizeof args);
    /* a bound port is ours alone, as the receiver's is */
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *) GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0;
    grpc_channel_args channel_args = {1, args};
    self->cq = grpc_completion_queue_create_for_next (NULL);
    self->server = grpc_server_create (&channel_args, NULL);
    grpc_server_register_completion_queue (self->server, self->cq, NULL);
    self->method = grpc_server_register_method (
        self->server, S_METHOD, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
        0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create ();
    self->port = grpc_server_add_http2_port (self->server, listen, creds);
    grpc_server_credentials_release (creds);
    if (self->port <= 0) {
        snprintf (err, errlen, "pull server: cannot listen on %s", listen);
        ef_pullserver_destroy (&self);
        return NULL;
    }
    grpc_server_start (self->server);
    if (s_accept_next (self) != 0) {
        snprintf (err, errlen, "pull server: cannot accept calls");
        ef_pullserver_destroy (&self);
        return NULL;
    }
    if (pthread_create (&self->thread, NULL, s_run, self) != 0) {
        snprintf (err, errlen, "pull server: cannot start its thread");
        ef_pullserver_destroy (&self);
        return NULL;
    }
    self->thread_started = true;
    return self;
}

void
ef_pullserver_destroy (ef_pullserver_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_pullserver_t *self = *self_p;
    *self_p = NULL;
    atomic_store (&self->stopping, true);
    if (self->port > 0) {
        /* no grace period: the bench is over with the server, and an
           open stream would hold the shutdown up */
        grpc_server_shutdown_and_notify (self->server, self->cq,
                                         &self->shutdown_tag);
        grpc_server_cancel_all_calls (self->server);
        if (self->thread_started)
            pthread_join (self->thread, NULL);
        else
            s_run (self); /* failed before the thread: drain here */
    }
    grpc_server_destroy (self->server);
    ef_grpc_cq_destroy (self->cq); /* nothing is left on it */
    grpc_shutdown ();
    free (self);
}

int
ef_pullserver_port (const ef_pullserver_t *self)
{
    return self->port;
}

void
ef_pullserver_stats (const ef_pullserver_t *self, ef_pullserver_stats_t *out)
{
    ef_pullserver_t *s = (ef_pullserver_t *) self; /* atomics are read-only */
    out->calls = atomic_load (&s->calls_n);
    out->refused = atomic_load (&s->refused);
    out->completed = atomic_load (&s->completed);
    out->chunks_sent = atomic_load (&s->chunks);
    out->rows_sent = atomic_load (&s->rows);
    out->bytes_sent = atomic_load (&s->bytes);
    out->encode_seconds = (double) atomic_load (&s->encode_ns) / 1e9;
}
