/*  grpc_receiver.c — the push source: a gRPC server for UploadEmbeddings.

    Each upload (a client-streaming call) becomes a stream with its own
    stream_id and UUIDv7 job_id. Every EmbeddingChunk read from it is
    walked on its bytes (rows/chunkwire.h) to check that it parses and
    what decoding it would cost, never decoded here, then stamped with a
    ChunkHeader and forwarded on the "chunks" link as [header, original
    bytes]. Acks from the writers and
    the DLQ count rows back in; once the client has half-closed and every
    received row is written or dead-lettered, the call is answered with an
    UploadResult. The reply is an acknowledgement, not a receipt.

    Backpressure: at most one RECV_MESSAGE is in flight per call, and the
    next one is posted only after the previous chunk went out on the link.
    A full link therefore stops reading, and HTTP/2 flow control stops the
    client.

    Waiting: gRPC moves bytes only while some thread is inside
    grpc_completion_queue_next, so a pump thread (grpc/cqpump.h) waits
    there without deadline and hands each completion to the actor's
    thread through a descriptor the actor watches. Every call's state,
    the links and the database work (job_run rows, heartbeats) stay on
    the actor's thread; a slow statement there holds up completions and
    acks, never gRPC's I/O (pings, flow control, other connections). An
    idle receiver sleeps: it wakes for a completion, an ack, or the next
    of its own deadlines (idle uploads, heartbeats, drain_timeout); only
    a chunk waiting for room on a full link, or a read waiting for the
    memory budget, is retried every few milliseconds.

    Concurrency: an upload takes one of max_streams places with its
    first message (or its end, if it sends none); beyond them uploads are
    refused at once with RESOURCE_EXHAUSTED rather than queued, so a
    client learns it should retry instead of waiting silently. Calls that
    send nothing hold no place and are ended after idle_timeout
    (DEADLINE_EXCEEDED); one connection may open streams_per_connection
    calls, and keepalive pings close connections of vanished clients.
    Methods other than UploadEmbeddings (GetEmbeddings is the pull side's
    business, not served here) are answered UNIMPLEMENTED.

    Errors: a message that does not parse ends the call with
    INVALID_ARGUMENT at once; rows of earlier chunks were already forwarded
    and still go through the pipeline, but their acks find no stream and
    are dropped. A message over max_message_bytes is refused by gRPC itself
    (the client sees RESOURCE_EXHAUSTED), and so is one whose decoded size
    would pass max_decoded_bytes, from its bytes. A client that cancels or
    disconnects loses its unforwarded chunk; it got no UploadResult, so it
    knows to send again (writes are idempotent).

    Memory: HTTP/2 BDP probing is off unless bdp_probe is set. With it,
    gRPC grows each connection's window to the bandwidth-delay product and
    reads that far ahead of the pipeline (tens of MB per upload on a fast
    link), which would make memory grow with the number of uploads.

    Security: with tls_cert and tls_key the server speaks TLS only; with
    auth_token every upload must carry "authorization: Bearer TOKEN" or is
    answered UNAUTHENTICATED.

    Graceful stop (drain): no new calls; open uploads may finish until
    drain_timeout, then they are cancelled (clients see UNAVAILABLE);
    drained once the server has shut down and every stream is gone.

    History: each accepted upload has a job_run row (trigger 'upload',
    job = its source). Every heartbeat, one statement stores the heartbeat
    and counts of all uploads in progress; a thread of the runlog marks
    'abandoned' the uploads, of any process, whose heartbeat is older than
    stale_after, i.e. those of killed processes (uploads hold no lock).
*/
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "embedflow/actor.h"
#include "embedflow/budget.h"
#include "embedflow/linkstate.h"
#include "embedflow/address.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"
#include "pipeline/pipeline.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/runlog.h"
#include "rows/chunkwire.h"
#include "grpc/cqpump.h"
#include "grpc/grpcmsg.h"
#include "rows/inflight.h"
#include "jobs/jobmetrics.h"
#include "rows/linkwire.h"
#include "rows/streamkey.h"
#include "rows/uuid7.h"

/* The actor's name: sources stamp it in every chunk (reply_to), and
   acks come back on the link whose `to` names it. */
static const char s_name[] = "grpc-receiver";

#define S_UPLOAD_METHOD   "/embedflow.v1.EmbeddingService/UploadEmbeddings"
#define S_SOURCE_KEY      "embedflow-source"
#define S_SOURCE_MAX      255     /* longest source name taken from metadata */
#define S_EVENT_BUDGET    256     /* completions handled per wakeup */
#define S_RETRY_WAIT_MS   1       /* retry of a chunk waiting for the link */
#define S_BUDGET_WAIT_MS  5       /* look again at a budget others free */
#define S_LINKS_WAIT_MS   100     /* look at link peers while chunks held */
#define S_RESEND_DELAY_US 1000000 /* quiet links before re-sending */

/* --- options ------------------------------------------------------------ */

typedef struct {
    char *listen;              /* HOST:PORT the server binds */
    int64_t max_message_bytes; /* receive limit per message */
    int64_t max_decoded_bytes; /* limit per message once decoded; 0 auto */
    int64_t max_streams;       /* concurrent uploads accepted */
    int64_t idle_timeout;      /* ms a client may send nothing; 0 never */
    int64_t first_timeout;     /* ms a new call may hold a read others need */
    int64_t delivery_timeout;  /* ms rows may stay unsettled, a peer gone */
    int64_t streams_per_conn;  /* HTTP/2 streams one connection may open */
    int64_t keepalive;         /* ms between HTTP/2 pings to idle clients */
    int64_t keepalive_timeout; /* ms a ping may go unanswered */
    int64_t drain_timeout;     /* ms open uploads get on graceful stop */
    char *default_source;      /* source without embedflow-source metadata */
    bool bdp_probe;            /* let HTTP/2 windows grow to the BDP */
    char *tls_cert;            /* PEM certificate chain file, or NULL */
    char *tls_key;             /* PEM private key file, or NULL */
    char *auth_token;          /* bearer token uploads must carry, or NULL */
    int64_t heartbeat;         /* ms between job_run heartbeats of uploads */
    int64_t stale_after;       /* ms without heartbeat = abandoned; 0 auto */
} s_options_t;

static const ef_option_t s_options[] = {
    {"listen", EF_OPT_STRING, "0.0.0.0:50051", offsetof (s_options_t, listen),
     0, 0, "address of the gRPC server, HOST:PORT (port 0 picks a free one)"},
    {"max_message_bytes", EF_OPT_SIZE, "16M",
     offsetof (s_options_t, max_message_bytes), 1024, INT32_MAX,
     "largest EmbeddingChunk accepted (larger: RESOURCE_EXHAUSTED)"},
    {"max_decoded_bytes", EF_OPT_SIZE, "0",
     offsetof (s_options_t, max_decoded_bytes), 0, (int64_t) 1 << 40,
     "largest EmbeddingChunk once decoded (rows, text, vectors), checked "
     "on its bytes before decoding (larger: RESOURCE_EXHAUSTED); "
     "0 = 2 x max_message_bytes"},
    {"max_streams", EF_OPT_INT, "64", offsetof (s_options_t, max_streams), 1,
     1000000,
     "concurrent uploads; beyond it calls get RESOURCE_EXHAUSTED (an "
     "upload takes a place with its first message)"},
    {"idle_timeout", EF_OPT_MS, "60s", offsetof (s_options_t, idle_timeout), 0,
     86400000,
     "an upload that sends nothing for this long is ended with "
     "DEADLINE_EXCEEDED; 0 = never"},
    {"delivery_timeout", EF_OPT_MS, "60s",
     offsetof (s_options_t, delivery_timeout), 100, 86400000,
     "when links cross hosts: an upload whose rows stay unsettled this "
     "long while a peer is gone (or went since they were sent) ends with "
     "UNAVAILABLE naming the link"},
    {"first_message_timeout", EF_OPT_MS, "10s",
     offsetof (s_options_t, first_timeout), 10, 3600000,
     "while uploads wait for max_inflight_bytes, a new call that has sent "
     "no message for this long gives its place up (RESOURCE_EXHAUSTED)"},
    {"streams_per_connection", EF_OPT_INT, "16",
     offsetof (s_options_t, streams_per_conn), 1, 1000000,
     "HTTP/2 streams (calls) one client connection may have open at once"},
    {"keepalive", EF_OPT_MS, "60s", offsetof (s_options_t, keepalive), 1000,
     86400000,
     "HTTP/2 ping interval on a quiet connection, to find clients that "
     "are gone"},
    {"keepalive_timeout", EF_OPT_MS, "20s",
     offsetof (s_options_t, keepalive_timeout), 1000, 3600000,
     "a connection whose ping is not answered within this is closed"},
    {"drain_timeout", EF_OPT_MS, "30s", offsetof (s_options_t, drain_timeout),
     0, 86400000,
     "on graceful stop, uploads still open after this are cancelled"},
    {"default_source", EF_OPT_STRING, "upload",
     offsetof (s_options_t, default_source), 0, 0,
     "source of rows whose upload sends no embedflow-source metadata"},
    {"bdp_probe", EF_OPT_BOOL, "false", offsetof (s_options_t, bdp_probe), 0, 0,
     "grow HTTP/2 windows to the bandwidth-delay product: faster over "
     "high-latency links, but each upload may buffer tens of MB"},
    {"tls_cert", EF_OPT_STRING, NULL, offsetof (s_options_t, tls_cert), 0, 0,
     "PEM certificate chain file: serve TLS (needs tls_key)"},
    {"tls_key", EF_OPT_STRING, NULL, offsetof (s_options_t, tls_key), 0, 0,
     "PEM private key file of tls_cert"},
    {"auth_token", EF_OPT_SECRET, NULL, offsetof (s_options_t, auth_token), 0,
     0, "uploads must send metadata 'authorization: Bearer TOKEN'"},
    {"heartbeat", EF_OPT_MS, "2s", offsetof (s_options_t, heartbeat), 10,
     3600000,
     "how often the job_run heartbeat and counts of uploads in "
     "progress are stored"},
    {"stale_after", EF_OPT_MS, "0", offsetof (s_options_t, stale_after), 0,
     86400000,
     "an upload whose heartbeat is older is marked abandoned (its "
     "process is gone); 0 = 5 x heartbeat; at least 2 x heartbeat"},
    EF_OPTION_END};

/* --- tags ---------------------------------------------------------------- */

/* Every completion-queue tag points at one of these, embedded in the
   object it belongs to, so one dispatcher finds both kind and owner. */
typedef enum {
    S_TAG_ACCEPT,   /* request_registered_call for an upload came back */
    S_TAG_RECV,     /* RECV_MESSAGE of an upload */
    S_TAG_CLOSE,    /* RECV_CLOSE_ON_SERVER of an upload */
    S_TAG_REPLY,    /* the final status batch of an upload */
    S_TAG_OTHER,    /* request_call for an unregistered method came back */
    S_TAG_REFUSED,  /* the UNIMPLEMENTED batch of such a call finished */
    S_TAG_SHUTDOWN, /* grpc_server_shutdown_and_notify completed */
} s_tag_kind_t;

typedef struct {
    s_tag_kind_t kind; /* what completed */
    void *obj;         /* the stream, the other-call, or the receiver */
} s_tag_t;

typedef struct s_receiver s_receiver_t;

/* --- one upload ---------------------------------------------------------- */

typedef struct s_stream {
    s_receiver_t *owner;            /* receiver this stream belongs to */
    struct s_stream *next;          /* list of accepted streams */
    grpc_call *call;                /* the gRPC call (one ref, ours) */
    gpr_timespec deadline;          /* client deadline, unused but required */
    grpc_metadata_array request_md; /* client initial metadata */
    s_tag_t accept_tag;             /* S_TAG_ACCEPT */
    s_tag_t recv_tag;               /* S_TAG_RECV */
    s_tag_t close_tag;              /* S_TAG_CLOSE */
    s_tag_t reply_tag;              /* S_TAG_REPLY */
    int refs;                       /* batches in flight */
    grpc_byte_buffer *recv_buf;     /* target of RECV_MESSAGE */
    int cancelled;                  /* set by RECV_CLOSE_ON_SERVER */
    grpc_byte_buffer *reply_buf;    /* UploadResult being sent */
    grpc_slice reply_details;       /* status message being sent */
    bool has_details;               /* reply_details holds a ref */

    uint64_t stream_id;             /* unique in the process */
    uint8_t key[EF_STREAM_KEY_LEN]; /* stream_key: acks must carry it */
    char job_id[37];                /* UUIDv7 text */
    char *source;                   /* rows' source */
    bool admitted;                  /* holds a place among max_streams */
    bool refused;                   /* refused: no token, or over max_streams */
    bool reading;                   /* a RECV_MESSAGE is in flight */
    bool half_closed;               /* client finished sending */
    bool logged;                    /* its job_run row is open */
    bool replied;                   /* the final status batch was posted */
    bool closed;                    /* RECV_CLOSE_ON_SERVER came back */
    zmsg_t *pending;                /* chunk waiting for room on the link */
    uint64_t messages;              /* messages read */
    uint64_t bytes;                 /* bytes read */
    uint64_t last_seq;              /* seq of the last good chunk */
    uint64_t received;              /* rows forwarded (and pending) */
    uint64_t written;               /* rows acked as committed */
    uint64_t dead;                  /* rows acked as dead-lettered */
    int64_t started_us;             /* monotonic time of accept */
    int64_t read_us;     /* monotonic time the pending read was posted */
    ef_inflight_t *held; /* chunks sent, not settled (admitted only) */
    bool resending;      /* sending its held chunks again */
    int64_t reserved;    /* bytes of the budget its posted read holds */
    bool budget_wait;    /* a read waits for the budget */
    char *peer;          /* client address, for logs */

    const ef_job_metrics_t *job; /* its per-job series, set on accept */
} s_stream_t;

/* --- a call to a method not served here ---------------------------------- */

typedef struct {
    s_receiver_t *owner;            /* receiver */
    grpc_call *call;                /* the call (one ref, ours) */
    grpc_call_details details;      /* method and host */
    grpc_metadata_array request_md; /* client metadata, ignored */
    s_tag_t request_tag;            /* S_TAG_OTHER */
    s_tag_t refused_tag;            /* S_TAG_REFUSED */
    int cancelled;                  /* RECV_CLOSE_ON_SERVER output */
    grpc_slice message;             /* status message */
} s_other_t;

/* --- the actor's state --------------------------------------------------- */

/* The chunks a finished stream still holds: its rows are in the
   pipeline until their acks come, and so is their share of the budget. */
typedef struct s_orphan {
    struct s_orphan *next;          /* list */
    uint64_t stream_id;             /* whose acks settle it */
    uint8_t key[EF_STREAM_KEY_LEN]; /* with this stream_key */
    ef_inflight_t *held;            /* its unsettled chunks */
} s_orphan_t;

struct s_receiver {
    ef_actor_t *actor;            /* the actor instance */
    ef_budget_t *budget;          /* the process's bytes in flight */
    int n_budget_waits;           /* streams whose read waits for it */
    s_orphan_t *orphans;          /* chunks of streams already freed */
    bool resend;                  /* links cross hosts: keep chunks to resend */
    uint64_t churn_seen;          /* link churn last acted on */
    int64_t resend_at_us;         /* when to send held chunks again; 0 none */
    int64_t publish_at_us;        /* next update of the gauges below */
    ef_gauge_t *unsettled_chunks; /* embedflow_receiver_unsettled_chunks */
    ef_gauge_t *unsettled_bytes;  /* embedflow_receiver_unsettled_bytes */
    ef_gauge_t *oldest_ms;        /* embedflow_receiver_oldest_unsettled_ms */
    ef_counter_t *resent;         /* embedflow_receiver_resent_chunks_total */
    const s_options_t *opts;      /* its options */
    int chunks_port;              /* OUT: chunks */
    int acks_port;                /* IN: acks */
    bool grpc_up;                 /* grpc_init was called */
    grpc_completion_queue *cq;    /* the one queue */
    ef_cq_pump_t *pump;           /* waits on cq, hands events over */
    grpc_server *server;          /* the server */
    void *upload_method;          /* registered UploadEmbeddings */
    int others;                   /* s_other_t alive (pending one included) */
    s_stream_t *streams;          /* accepted streams not yet freed */
    int n_pending;                /* streams with a chunk waiting */
    unsigned rotation;            /* fairness among pending streams */
    bool started;                 /* grpc_server_start was called */
    bool shown_held;              /* last gauges showed chunks held */
    bool shutdown_started;        /* grpc_server_shutdown_and_notify called */
    bool shutdown_done;           /* its tag came back */
    bool cancelled_all;           /* grpc_server_cancel_all_calls called */
    bool draining;                /* drain began */
    bool drained;                 /* ef_actor_drained was called */
    bool paused;                  /* /control/pause: post no reads */
    ef_gauge_t *paused_gauge;     /* embedflow_receiver_paused */
    int64_t drain_deadline_us;    /* monotonic time to cancel stragglers */
    ef_runlog_t *runlog;          /* job_run rows of uploads */
    int64_t stale_ms;             /* stale_after, resolved */
    int64_t max_decoded;          /* max_decoded_bytes, resolved */
    int64_t next_beat_us;         /* monotonic time of the next heartbeat */
    s_tag_t shutdown_tag;         /* S_TAG_SHUTDOWN */
};

/* stream ids start at the wall clock in µs so they do not repeat across
   restarts of the process; they are guessable: what an ack must also
   know is the stream's random key (pipeline.proto) */
static uint64_t s_next_stream_id;

/* Returns a process-unique stream id; never fails. */
static uint64_t
s_new_stream_id (void)
{
    uint64_t zero = 0;
    uint64_t start = (uint64_t) ef_clock_wall_us ();
    __atomic_compare_exchange_n (&s_next_stream_id, &zero, start, false,
                                 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return __atomic_add_fetch (&s_next_stream_id, 1, __ATOMIC_SEQ_CST);
}

/* --- streams ------------------------------------------------------------- */

/* Allocates an accept slot and asks gRPC for the next upload. Returns 0,
   -1 when gRPC refused the request (logged; no completion will come). */
static int
s_accept_next (s_receiver_t *self)
{
    s_stream_t *stream = (s_stream_t *) calloc (1, sizeof *stream);
    if (!stream || ef_stream_key_new (stream->key) != 0) {
        ef_error ("%s accepting uploads",
                  stream ? "no random bytes from the kernel" : "out of memory");
        free (stream);
        return -1;
    }
    stream->owner = self;
    grpc_metadata_array_init (&stream->request_md);
    stream->accept_tag = (s_tag_t){S_TAG_ACCEPT, stream};
    stream->recv_tag = (s_tag_t){S_TAG_RECV, stream};
    stream->close_tag = (s_tag_t){S_TAG_CLOSE, stream};
    stream->reply_tag = (s_tag_t){S_TAG_REPLY, stream};
    grpc_call_error rc = grpc_server_request_registered_call (
        self->server, self->upload_method, &stream->call, &stream->deadline,
        &stream->request_md, NULL, self->cq, self->cq, &stream->accept_tag);
    if (rc != GRPC_CALL_OK) {
        ef_error ("cannot accept uploads: %s", grpc_call_error_to_string (rc));
        grpc_metadata_array_destroy (&stream->request_md);
        free (stream);
        return -1;
    }
    return 0;
}

/* Hands the chunks a stream being freed still holds to the orphan list,
   settled as their acks come. Out of memory: released now (the rows are
   bounded by the links' high-water marks). */
static void
s_stream_keep_held (s_stream_t *stream)
{
    s_receiver_t *self = stream->owner;
    if (!stream->held)
        return;
    s_orphan_t *o =
        ef_inflight_empty (stream->held) ? NULL : calloc (1, sizeof *o);
    if (!o) {
        ef_budget_release (self->budget, ef_inflight_charged (stream->held));
        ef_inflight_destroy (&stream->held);
        return;
    }
    *o = (s_orphan_t){self->orphans, stream->stream_id, {0}, stream->held};
    memcpy (o->key, stream->key, sizeof o->key);
    stream->held = NULL;
    self->orphans = o;
}

/* Settles a tally of a freed stream. True when stream_id was an
   orphan's. */
static bool
s_orphan_settle (s_receiver_t *self, const Embedflow__V1__StreamTally *t)
{
    for (s_orphan_t **p = &self->orphans; *p; p = &(*p)->next) {
        s_orphan_t *o = *p;
        if (o->stream_id != t->stream_id
            || !ef_stream_key_match (o->key, t->stream_key))
            continue;
        ef_settle_t done;
        ef_inflight_settle (o->held, t->chunk_seq, t->attempt, t->written,
                            t->dead_lettered, &done);
        ef_budget_release (self->budget, done.released);
        if (ef_inflight_empty (o->held)) {
            *p = o->next;
            ef_inflight_destroy (&o->held);
            free (o);
        }
        return true;
    }
    return false;
}

/* Gives up every orphan: after a peer went away their rows may never be
   acked, and their clients got no UploadResult, so they send again. */
static void
s_orphans_release (s_receiver_t *self)
{
    while (self->orphans) {
        s_orphan_t *o = self->orphans;
        self->orphans = o->next;
        ef_budget_release (self->budget, ef_inflight_charged (o->held));
        ef_inflight_destroy (&o->held);
        free (o);
    }
}

/* Frees a stream whose batches have all completed; unlinks it. */
static void
s_stream_free (s_stream_t *stream)
{
    s_receiver_t *self = stream->owner;
    s_stream_t **p = &self->streams;
    while (*p && *p != stream)
        p = &(*p)->next;
    if (*p)
        *p = stream->next;
    if (stream->budget_wait)
        self->n_budget_waits--;
    s_stream_keep_held (stream);
    if (stream->pending) {
        zmsg_destroy (&stream->pending);
        self->n_pending--;
    }
    if (stream->recv_buf)
        grpc_byte_buffer_destroy (stream->recv_buf);
    if (stream->reply_buf)
        grpc_byte_buffer_destroy (stream->reply_buf);
    if (stream->has_details)
        grpc_slice_unref (stream->reply_details);
    if (stream->call)
        grpc_call_unref (stream->call);
    grpc_metadata_array_destroy (&stream->request_md);
    free (stream->source);
    free (stream->peer);
    free (stream);
}

/* Drops one batch reference; frees the stream at zero. */
static void
s_stream_unref (s_stream_t *stream)
{
    assert (stream->refs > 0);
    if (--stream->refs == 0)
        s_stream_free (stream);
}

/* Ends the call with a status (and the UploadResult when OK). Does
   nothing if a reply was already posted or the call is gone. */
static void
s_stream_reply (s_stream_t *stream, grpc_status_code code, const char *text)
{
    if (stream->replied || stream->closed)
        return;
    stream->replied = true;
    if (stream->logged) {
        stream->logged = false;
        ef_counter_add (code == GRPC_STATUS_OK ? stream->job->runs_completed
                                               : stream->job->runs_failed,
                        1);
        ef_runlog_end (stream->owner->runlog, stream->job_id,
                       code == GRPC_STATUS_OK ? "completed" : "failed",
                       stream->received, stream->written, stream->dead,
                       code == GRPC_STATUS_OK ? NULL : text);
    }

    grpc_op ops[3];
    memset (ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (code == GRPC_STATUS_OK) {
        Embedflow__V1__UploadResult result = EMBEDFLOW__V1__UPLOAD_RESULT__INIT;
        result.received = stream->received;
        result.written = stream->written;
        result.dead_lettered = stream->dead;
        result.job_id = stream->job_id;
        result.message = (char *) text;
        size_t size = embedflow__v1__upload_result__get_packed_size (&result);
        grpc_slice slice = grpc_slice_malloc (size);
        embedflow__v1__upload_result__pack (&result,
                                            GRPC_SLICE_START_PTR (slice));
        stream->reply_buf = grpc_raw_byte_buffer_create (&slice, 1);
        grpc_slice_unref (slice);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = stream->reply_buf;
        n++;
    }
    stream->reply_details = grpc_slice_from_copied_string (text);
    stream->has_details = true;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &stream->reply_details;
    n++;
    grpc_call_error rc =
        grpc_call_start_batch (stream->call, ops, n, &stream->reply_tag, NULL);
    if (rc != GRPC_CALL_OK) {
        ef_warn ("stream %" PRIu64 ": cannot send status: %s",
                 stream->stream_id, grpc_call_error_to_string (rc));
        grpc_call_cancel (stream->call, NULL);
        return;
    }
    stream->refs++;
}

/* Posts the next RECV_MESSAGE. On failure the call is cancelled. */
static void
s_stream_read (s_stream_t *stream)
{
    s_receiver_t *self = stream->owner;
    if (stream->reading || stream->half_closed || stream->replied
        || stream->closed || stream->pending || stream->budget_wait
        || stream->resending || self->paused)
        return;
    /* A posted read lets gRPC take in a whole message, up to
       max_message_bytes, before we see it: each read reserves that much,
       so what gRPC holds is in the budget too, and every call stops
       reading until acks give bytes back. A call that holds a read but
       sends nothing is ended after first_message_timeout while others
       wait (s_end_idle), so idle calls cannot keep real uploads out. */
    int64_t reserve = self->opts->max_message_bytes;
    if (!ef_budget_fits (self->budget, reserve)) {
        stream->budget_wait = true;
        stream->owner->n_budget_waits++;
        ef_budget_count_wait (stream->owner->budget);
        return;
    }
    grpc_op op;
    memset (&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &stream->recv_buf;
    grpc_call_error rc =
        grpc_call_start_batch (stream->call, &op, 1, &stream->recv_tag, NULL);
    if (rc != GRPC_CALL_OK) {
        ef_warn ("stream %" PRIu64 ": cannot read: %s", stream->stream_id,
                 grpc_call_error_to_string (rc));
        grpc_call_cancel (stream->call, NULL);
        return;
    }
    stream->reading = true;
    stream->reserved = reserve;
    ef_budget_charge (self->budget, stream->reserved);
    stream->read_us = ef_clock_mono_us ();
    stream->refs++;
}

/* Replies OK once the client is done and every row is settled. */
static void
s_stream_check_done (s_stream_t *stream)
{
    if (!stream->half_closed || stream->pending || stream->replied
        || stream->closed || stream->resending)
        return;
    uint64_t settled = stream->written + stream->dead;
    if (settled < stream->received)
        return;
    if (settled > stream->received)
        ef_warn ("stream %" PRIu64 ": %" PRIu64 " rows settled, %" PRIu64
                 " received",
                 stream->stream_id, settled, stream->received);
    char text[160];
    snprintf (text, sizeof text,
              "%" PRIu64 " rows received, %" PRIu64 " written, %" PRIu64
              " dead-lettered",
              stream->received, stream->written, stream->dead);
    double secs = (double) (ef_clock_mono_us () - stream->started_us) / 1e6;
    ef_info_kv (EF_KV (EF_KV_STR ("job_id", stream->job_id),
                       EF_KV_STR ("source", stream->source),
                       EF_KV_STR ("peer", stream->peer),
                       EF_KV_F64 ("seconds", secs),
                       EF_KV_U64 ("rows_received", stream->received),
                       EF_KV_U64 ("rows_written", stream->written),
                       EF_KV_U64 ("rows_dead_lettered", stream->dead)),
                "upload %s (source %s, from %s) done in %.1f s: %s",
                stream->job_id, stream->source, stream->peer, secs, text);
    s_stream_reply (stream, GRPC_STATUS_OK, text);
}

/* The message forwarded for a chunk: [ChunkHeader, body]. Takes body.
   NULL when out of memory. */
static zmsg_t *
s_chunk_message (s_stream_t *stream, uint64_t seq, uint32_t rows,
                 uint32_t attempt, zframe_t **body)
{
    Embedflow__V1__ChunkHeader header = EMBEDFLOW__V1__CHUNK_HEADER__INIT;
    header.stream_id = stream->stream_id;
    header.stream_key = ef_stream_key_field (stream->key);
    header.job_id = stream->job_id;
    header.seq = seq;
    header.source = stream->source;
    header.rows = rows;
    header.received_us = ef_clock_wall_us ();
    header.attempt = attempt;
    header.reply_to = (char *) s_name; /* acks come back here */
    header.limit_bad_rows = true;      /* it ends a stream with too many */
    size_t hsize = embedflow__v1__chunk_header__get_packed_size (&header);
    zframe_t *hframe = zframe_new (NULL, hsize);
    zmsg_t *msg = zmsg_new ();
    if (!hframe || !msg || !*body) {
        zframe_destroy (&hframe);
        zframe_destroy (body);
        zmsg_destroy (&msg);
        return NULL;
    }
    embedflow__v1__chunk_header__pack (&header, zframe_data (hframe));
    zmsg_append (msg, &hframe);
    zmsg_append (msg, body);
    return msg;
}

/* Puts the held chunks that are due again on the link, in order, until
   the link is full (s_flush_pending goes on from there) or none is left;
   then reading goes on. */
static void
s_stream_feed (s_stream_t *stream)
{
    s_receiver_t *self = stream->owner;
    while (stream->resending && !stream->pending && !stream->replied
           && !stream->closed) {
        uint64_t seq;
        uint32_t attempt, rows;
        zframe_t *body = NULL;
        ef_links_state_t links;
        ef_links_state (&links);
        int rc = ef_inflight_next_due (stream->held, &seq, &attempt, &rows,
                                       &body, ef_clock_mono_us (), links.churn);
        if (rc == 0) {
            stream->resending = false;
            s_stream_read (stream);
            s_stream_check_done (stream);
            return;
        }
        zmsg_t *msg =
            rc > 0 ? s_chunk_message (stream, seq, rows, attempt, &body) : NULL;
        if (!msg) {
            s_stream_reply (stream, GRPC_STATUS_INTERNAL, "out of memory");
            return;
        }
        stream->pending = msg;
        self->n_pending++;
        int sent = ef_actor_try_send (self->actor, self->chunks_port, 0,
                                      &stream->pending);
        if (sent == 0)
            return;
        self->n_pending--;
        if (sent < 0) {
            zmsg_destroy (&stream->pending);
            s_stream_reply (stream, GRPC_STATUS_UNAVAILABLE,
                            "embedflow cannot forward chunks right now");
            return;
        }
    }
}

/* Tries to hand the pending chunk to the link; on success reads on.
   Returns 1 sent, 0 link full, -1 failed (the call is ended). */
static int
s_stream_flush (s_stream_t *stream)
{
    s_receiver_t *self = stream->owner;
    if (!stream->pending)
        return 1;
    int rc =
        ef_actor_try_send (self->actor, self->chunks_port, 0, &stream->pending);
    if (rc == 0)
        return 0;
    self->n_pending--;
    if (rc < 0) {
        zmsg_destroy (&stream->pending);
        ef_error ("stream %" PRIu64 ": cannot forward a chunk",
                  stream->stream_id);
        s_stream_reply (stream, GRPC_STATUS_UNAVAILABLE,
                        "embedflow cannot forward chunks right now");
        return -1;
    }
    if (stream->resending)
        s_stream_feed (stream);
    else
        s_stream_read (stream);
    return 1;
}

/* Takes one message off the wire: parse, stamp, forward. */
static void
s_stream_on_message (s_stream_t *stream, grpc_byte_buffer *buf)
{
    s_receiver_t *self = stream->owner;
    uint64_t offset = stream->bytes;
    stream->messages++;

    zframe_t *body = ef_grpc_message_frame (buf);
    grpc_byte_buffer_destroy (buf);
    if (!body) {
        s_stream_reply (stream, GRPC_STATUS_INTERNAL,
                        "cannot read the message");
        return;
    }
    size_t size = zframe_size (body);
    byte *dst = zframe_data (body);
    stream->bytes += size;

    /* The bytes are walked, not decoded: what decoding would cost is
       known before anything is allocated for it. */
    ef_chunk_shape_t shape;
    char why[160];
    if (ef_chunk_scan (dst, size, &shape, why, sizeof why) != 0) {
        char text[320];
        snprintf (text, sizeof text,
                  "message %" PRIu64 " of the stream (%zu bytes at byte "
                  "offset %" PRIu64 ", after seq %" PRIu64
                  ") is not a valid EmbeddingChunk: %s",
                  stream->messages, size, offset, stream->last_seq, why);
        ef_warn ("stream %" PRIu64 " (job %s): %s", stream->stream_id,
                 stream->job_id, text);
        zframe_destroy (&body);
        s_stream_reply (stream, GRPC_STATUS_INVALID_ARGUMENT, text);
        return;
    }
    if ((int64_t) shape.decoded_bytes > self->max_decoded) {
        char text[320];
        snprintf (text, sizeof text,
                  "message %" PRIu64 " of the stream (%zu bytes, %zu items) "
                  "would take %zu bytes decoded; the limit is %" PRId64
                  " (max_decoded_bytes)",
                  stream->messages, size, shape.items, shape.decoded_bytes,
                  self->max_decoded);
        ef_warn ("stream %" PRIu64 " (job %s) from %s: %s", stream->stream_id,
                 stream->job_id, stream->peer, text);
        zframe_destroy (&body);
        s_stream_reply (stream, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
        return;
    }
    size_t rows = shape.items;
    stream->last_seq = shape.seq;
    /* the client's seq is only for messages to people: chunks are counted
       by their position in the stream, which no client can repeat */
    uint64_t seq = stream->messages;
    if (rows == 0 || rows > UINT32_MAX) {
        /* nothing to write (or more rows than a header can count, which no
           message under the size limit can hold) */
        zframe_destroy (&body);
        if (rows) {
            s_stream_reply (stream, GRPC_STATUS_INVALID_ARGUMENT,
                            "too many items in one chunk");
            return;
        }
        s_stream_read (stream);
        return;
    }

    /* what this message may hold while its rows are in the pipeline:
       its bytes, and its rows decoded (in batches, queues, the DLQ) */
    int64_t charge = (int64_t) (size + shape.decoded_bytes);
    ef_links_state_t links;
    ef_links_state (&links);
    /* while held chunks are sent again, a new one goes after them */
    if (ef_inflight_add (stream->held, seq, (uint32_t) rows, charge, body,
                         ef_clock_mono_us (), links.churn, stream->resending)
        != 0) {
        zframe_destroy (&body);
        s_stream_reply (stream, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    ef_budget_charge (self->budget, charge);
    stream->received += rows;
    ef_counter_add (stream->job->received, rows);
    ef_actor_count (self->actor, EF_METRIC_ROWS_IN, (int64_t) rows);
    ef_actor_count (self->actor, EF_METRIC_IN_FLIGHT, (int64_t) rows);
    if (stream->resending) {
        zframe_destroy (&body);
        s_stream_feed (stream);
        return;
    }
    zmsg_t *msg = s_chunk_message (stream, seq, (uint32_t) rows, 0, &body);
    if (!msg) {
        s_stream_reply (stream, GRPC_STATUS_INTERNAL, "out of memory");
        return;
    }
    stream->pending = msg;
    self->n_pending++;
    s_stream_flush (stream);
}

/* Copies the source named by the client's metadata, else the default. */
static char *
s_stream_source (s_stream_t *stream, const char *fallback)
{
    for (size_t i = 0; i < stream->request_md.count; i++) {
        grpc_metadata *md = &stream->request_md.metadata[i];
        if (grpc_slice_str_cmp (md->key, S_SOURCE_KEY) != 0)
            continue;
        size_t len = GRPC_SLICE_LENGTH (md->value);
        if (len == 0)
            break;
        if (len > S_SOURCE_MAX)
            len = S_SOURCE_MAX;
        return strndup ((const char *) GRPC_SLICE_START_PTR (md->value), len);
    }
    return strdup (fallback ? fallback : "");
}

/* True when the call carries "authorization: Bearer TOKEN". The compare
   takes the same time wherever the first difference is. */
static bool
s_authorized (s_stream_t *stream, const char *token)
{
    static const char prefix[] = "Bearer ";
    size_t want = strlen (prefix) + strlen (token);
    for (size_t i = 0; i < stream->request_md.count; i++) {
        grpc_metadata *md = &stream->request_md.metadata[i];
        if (grpc_slice_str_cmp (md->key, "authorization") != 0)
            continue;
        size_t len = GRPC_SLICE_LENGTH (md->value);
        const unsigned char *v = GRPC_SLICE_START_PTR (md->value);
        if (len != want)
            return false;
        size_t plen = sizeof prefix - 1;
        unsigned diff = 0;
        for (size_t k = 0; k < len; k++) {
            unsigned char c =
                (unsigned char) (k < plen ? prefix[k] : token[k - plen]);
            diff |= (unsigned) (v[k] ^ c);
        }
        return diff == 0;
    }
    return false;
}

/* Counts streams that hold a place among max_streams. */
static int
s_active_streams (s_receiver_t *self)
{
    int n = 0;
    for (s_stream_t *s = self->streams; s; s = s->next)
        if (s->admitted)
            n++;
    return n;
}

/* Gives an upload its place once it sends its first message (or ends
   without one), so connections that open calls and send nothing hold
   none. Returns false when it was refused (over max_streams). */
static bool
s_stream_admit (s_stream_t *stream)
{
    s_receiver_t *self = stream->owner;
    if (stream->admitted)
        return true;
    if (stream->refused)
        return false;
    if (s_active_streams (self) >= self->opts->max_streams) {
        char text[128];
        snprintf (text, sizeof text,
                  "too many concurrent uploads (max_streams=%" PRId64
                  "); retry later",
                  self->opts->max_streams);
        ef_warn ("refusing an upload from %s: %s", stream->peer, text);
        stream->refused = true;
        s_stream_reply (stream, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
        return false;
    }
    stream->held = ef_inflight_new (self->resend);
    if (!stream->held) {
        stream->refused = true;
        s_stream_reply (stream, GRPC_STATUS_INTERNAL, "out of memory");
        return false;
    }
    stream->admitted = true;
    ef_debug ("upload %s (stream %" PRIu64 ", source %s) from %s",
              stream->job_id, stream->stream_id, stream->source, stream->peer);
    /* per-job series only for uploads let in: a caller without the token
       cannot add series */
    stream->job = ef_job_metrics (stream->source);
    ef_runlog_start (self->runlog, stream->job_id, stream->source, "upload");
    /* the heartbeat clock stands still while no upload is logged (the
       receiver sleeps): the first one restarts it */
    bool beating = false;
    for (s_stream_t *s = self->streams; s; s = s->next)
        beating = beating || s->logged;
    if (!beating)
        self->next_beat_us = ef_clock_mono_us () + self->opts->heartbeat * 1000;
    stream->logged = true;
    return true;
}

/* A new upload arrived: set it up and start its two chains. */
static void
s_on_accept (s_receiver_t *self, s_stream_t *stream, bool ok)
{
    if (!ok) {
        /* the server is shutting down: the request came back unused */
        grpc_metadata_array_destroy (&stream->request_md);
        free (stream);
        return;
    }
    if (!self->shutdown_started)
        s_accept_next (self);

    stream->stream_id = s_new_stream_id ();
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, stream->job_id);
    stream->source = s_stream_source (stream, self->opts->default_source);
    char *peer = grpc_call_get_peer (stream->call);
    stream->peer = strdup (peer ? peer : "?");
    gpr_free (peer);
    stream->started_us = ef_clock_mono_us ();
    stream->next = self->streams;
    self->streams = stream;

    /* RECV_CLOSE_ON_SERVER in its own batch: it reports cancellation and
       keeps the stream alive until gRPC is done with the call */
    grpc_op op;
    memset (&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &stream->cancelled;
    grpc_call_error rc =
        grpc_call_start_batch (stream->call, &op, 1, &stream->close_tag, NULL);
    if (rc != GRPC_CALL_OK) {
        ef_error ("stream %" PRIu64 ": cannot watch the call: %s",
                  stream->stream_id, grpc_call_error_to_string (rc));
        grpc_call_cancel (stream->call, NULL);
        stream->closed = true;
        s_stream_free (stream);
        return;
    }
    stream->refs++;

    if (self->cancelled_all) {
        /* matched just as the server went away */
        stream->refused = true;
        grpc_call_cancel (stream->call, NULL);
        return;
    }
    const char *token = self->opts->auth_token;
    if (token && !s_authorized (stream, token)) {
        stream->refused = true;
        ef_warn ("refusing an upload from %s: missing or wrong bearer token",
                 stream->peer);
        s_stream_reply (stream, GRPC_STATUS_UNAUTHENTICATED,
                        "missing or wrong bearer token");
        return;
    }
    ef_debug ("call %" PRIu64 " from %s: waiting for its first message",
              stream->stream_id, stream->peer);
    s_stream_read (stream);
}

/* A RECV_MESSAGE completed. */
static void
s_on_recv (s_stream_t *stream, bool ok)
{
    stream->reading = false;
    ef_budget_release (stream->owner->budget, stream->reserved);
    stream->reserved = 0;
    grpc_byte_buffer *buf = stream->recv_buf;
    stream->recv_buf = NULL;
    if (!ok) {
        /* cancelled, broken, or a message over the limit: gRPC has ended
           the call with the right status, RECV_CLOSE tells the rest */
        ef_debug ("stream %" PRIu64 ": read failed", stream->stream_id);
        if (buf)
            grpc_byte_buffer_destroy (buf);
    }
    else if (!buf) {
        stream->half_closed = true;
        if (s_stream_admit (stream))
            s_stream_check_done (stream);
    }
    else if (stream->replied || stream->closed || !s_stream_admit (stream))
        grpc_byte_buffer_destroy (buf);
    else
        s_stream_on_message (stream, buf);
    s_stream_unref (stream);
}

/* RECV_CLOSE_ON_SERVER completed: the call is over for gRPC. */
static void
s_on_close (s_stream_t *stream)
{
    stream->closed = true;
    if ((!stream->replied || stream->cancelled) && !stream->refused)
        ef_info_kv (EF_KV (EF_KV_STR ("job_id", stream->job_id),
                           EF_KV_STR ("peer", stream->peer),
                           EF_KV_U64 ("rows_received", stream->received)),
                    "upload %s (from %s) cancelled after %" PRIu64
                    " rows; those forwarded are still written, "
                    "unacknowledged",
                    stream->job_id, stream->peer, stream->received);
    if (stream->logged) {
        stream->logged = false;
        ef_counter_add (stream->job->runs_failed, 1);
        ef_runlog_end (stream->owner->runlog, stream->job_id, "failed",
                       stream->received, stream->written, stream->dead,
                       "the client cancelled or disconnected");
    }
    if (stream->pending) {
        zmsg_destroy (&stream->pending);
        stream->owner->n_pending--;
    }
    s_stream_unref (stream);
}

/* --- calls to other methods ---------------------------------------------- */

/* Asks gRPC for the next call to an unregistered method. Returns 0 or
   -1 (logged). */
static int
s_other_next (s_receiver_t *self)
{
    s_other_t *other = (s_other_t *) calloc (1, sizeof *other);
    if (!other)
        return -1;
    other->owner = self;
    grpc_call_details_init (&other->details);
    grpc_metadata_array_init (&other->request_md);
    other->request_tag = (s_tag_t){S_TAG_OTHER, other};
    other->refused_tag = (s_tag_t){S_TAG_REFUSED, other};
    grpc_call_error rc = grpc_server_request_call (
        self->server, &other->call, &other->details, &other->request_md,
        self->cq, self->cq, &other->request_tag);
    if (rc != GRPC_CALL_OK) {
        ef_error ("cannot accept calls: %s", grpc_call_error_to_string (rc));
        grpc_call_details_destroy (&other->details);
        grpc_metadata_array_destroy (&other->request_md);
        free (other);
        return -1;
    }
    self->others++;
    return 0;
}

/* Frees a finished other-call. */
static void
s_other_free (s_other_t *other)
{
    other->owner->others--;
    if (other->call)
        grpc_call_unref (other->call);
    grpc_call_details_destroy (&other->details);
    grpc_metadata_array_destroy (&other->request_md);
    free (other);
}

/* A call to some other method arrived: answer UNIMPLEMENTED. */
static void
s_on_other (s_receiver_t *self, s_other_t *other, bool ok)
{
    if (!ok) {
        s_other_free (other);
        return;
    }
    if (!self->shutdown_started)
        s_other_next (self);

    char text[300];
    snprintf (text, sizeof text, "method %.*s is not served by embedflow",
              (int) GRPC_SLICE_LENGTH (other->details.method),
              (const char *) GRPC_SLICE_START_PTR (other->details.method));
    ef_debug ("%s", text);
    other->message = grpc_slice_from_copied_string (text);
    grpc_op ops[3];
    memset (ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &other->cancelled;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[2].data.send_status_from_server.status_details = &other->message;
    grpc_call_error rc =
        grpc_call_start_batch (other->call, ops, 3, &other->refused_tag, NULL);
    if (rc != GRPC_CALL_OK) {
        ef_warn ("cannot refuse a call: %s", grpc_call_error_to_string (rc));
        grpc_call_cancel (other->call, NULL);
        grpc_slice_unref (other->message);
        s_other_free (other);
    }
}

/* The UNIMPLEMENTED answer is done. */
static void
s_on_refused (s_other_t *other)
{
    grpc_slice_unref (other->message);
    s_other_free (other);
}

/* --- the completion queue ------------------------------------------------ */

/* Routes one completion to its owner. */
static void
s_dispatch (s_receiver_t *self, grpc_event *ev)
{
    s_tag_t *tag = (s_tag_t *) ev->tag;
    bool ok = ev->success != 0;
    switch (tag->kind) {
    case S_TAG_ACCEPT:
        s_on_accept (self, (s_stream_t *) tag->obj, ok);
        break;
    case S_TAG_RECV:
        s_on_recv ((s_stream_t *) tag->obj, ok);
        break;
    case S_TAG_CLOSE:
        s_on_close ((s_stream_t *) tag->obj);
        break;
    case S_TAG_REPLY: {
        s_stream_t *stream = (s_stream_t *) tag->obj;
        if (!ok)
            ef_debug ("stream %" PRIu64 ": reply not delivered",
                      stream->stream_id);
        s_stream_unref (stream);
        break;
    }
    case S_TAG_OTHER:
        s_on_other (self, (s_other_t *) tag->obj, ok);
        break;
    case S_TAG_REFUSED:
        s_on_refused ((s_other_t *) tag->obj);
        break;
    case S_TAG_SHUTDOWN:
        self->shutdown_done = true;
        break;
    }
}

/* Handles completions the pump holds until none is left or the budget
   is spent, waiting at most wait_ms for the first. Returns how many. */
static int
s_poll (s_receiver_t *self, int64_t wait_ms)
{
    int n = 0;
    while (n < S_EVENT_BUDGET) {
        grpc_event ev = ef_cq_pump_next (self->pump, wait_ms);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        s_dispatch (self, &ev);
        n++;
        wait_ms = 0;
    }
    return n;
}

/* The pump's descriptor is readable: take the completions (what is left
   over the budget keeps it readable), then let tick follow up. Returns
   0. */
static int
s_on_events (ef_actor_t *actor, int fd, void *arg)
{
    (void) fd;
    s_poll ((s_receiver_t *) arg, 0);
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* Retries the chunks waiting for room on the link. The starting stream
   rotates so that no upload starves the others when the link is full. */
static void
s_flush_pending (s_receiver_t *self)
{
    if (self->n_pending == 0)
        return;
    int skip = (int) (self->rotation++ % (unsigned) self->n_pending);
    for (int pass = 0; pass < 2; pass++) {
        int index = 0;
        for (s_stream_t *s = self->streams; s; s = s->next) {
            if (!s->pending)
                continue;
            bool mine = pass == 0 ? index >= skip : index < skip;
            index++;
            if (mine && s_stream_flush (s) == 0)
                return; /* the link is full: the others would fail too */
        }
    }
}

/* --- upload history ------------------------------------------------------ */

/* Every heartbeat stores the heartbeat and counts of all uploads in
   progress in one statement (uploads of dead processes are marked by the
   runlog's sweeper thread). Never stops the data: failures are only
   logged. */
static void
s_history_tick (s_receiver_t *self)
{
    int64_t now = ef_clock_mono_us ();
    if (now >= self->next_beat_us) {
        self->next_beat_us = now + self->opts->heartbeat * 1000;
        size_t n = 0;
        for (s_stream_t *s = self->streams; s; s = s->next)
            n += s->logged;
        ef_run_counts_t *runs =
            n ? (ef_run_counts_t *) calloc (n, sizeof *runs) : NULL;
        if (n && !runs)
            ef_warn ("job history: out of memory for %zu heartbeats", n);
        if (runs) {
            size_t i = 0;
            for (s_stream_t *s = self->streams; s; s = s->next)
                if (s->logged)
                    runs[i++] = (ef_run_counts_t){s->job_id, s->received,
                                                  s->written, s->dead};
            ef_runlog_beat (self->runlog, runs, n);
            free (runs);
        }
    }
}

/* --- actor callbacks ----------------------------------------------------- */

/* stale_after, resolved: 0 means 5 x heartbeat. */
static int64_t
s_stale_ms (const s_options_t *opts)
{
    return opts->stale_after ? opts->stale_after : 5 * opts->heartbeat;
}

/* Settings that need each other, checked before anything starts. */
static int
s_check (const void *options, char *why, size_t len)
{
    const s_options_t *opts = options;
    if (!opts->tls_cert != !opts->tls_key) {
        snprintf (why, len, "%s: tls_cert and tls_key must be set together",
                  opts->tls_cert ? "tls_key" : "tls_cert");
        return -1;
    }
    if (s_stale_ms (opts) < 2 * opts->heartbeat) {
        snprintf (why, len,
                  "stale_after: %" PRId64 " ms must be at least twice "
                  "heartbeat (%" PRId64 " ms), or live uploads would be "
                  "marked abandoned",
                  s_stale_ms (opts), opts->heartbeat);
        return -1;
    }
    return 0;
}

/* Server credentials: TLS from tls_cert/tls_key, else plaintext. Returns
   NULL after ef_actor_fail when the files cannot be used. */
static grpc_server_credentials *
s_credentials (ef_actor_t *actor, const s_options_t *opts)
{
    if (!opts->tls_cert && !opts->tls_key)
        return grpc_insecure_server_credentials_create ();
    char *cert = ef_grpc_read_pem (opts->tls_cert);
    if (!cert) {
        ef_actor_fail (actor, "cannot read tls_cert %s: %s", opts->tls_cert,
                       strerror (errno));
        return NULL;
    }
    char *key = ef_grpc_read_pem (opts->tls_key);
    if (!key) {
        ef_actor_fail (actor, "cannot read tls_key %s: %s", opts->tls_key,
                       strerror (errno));
        free (cert);
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex (
        NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    /* gRPC copies the PEM text; wipe the key from our memory anyway */
    explicit_bzero (key, strlen (key));
    free (key);
    free (cert);
    if (!creds)
        ef_actor_fail (actor, "cannot use tls_cert %s with tls_key %s",
                       opts->tls_cert, opts->tls_key);
    return creds;
}

/* Starts the gRPC server. Returns 0, or -1 after ef_actor_fail. */
static int
s_init (ef_actor_t *actor)
{
    s_receiver_t *self = ef_actor_state (actor);
    self->actor = actor;
    self->opts = (const s_options_t *) ef_actor_options (actor);
    /* a restarted receiver reads again: pausing is not remembered */
    self->paused_gauge = ef_metrics_gauge (
        "embedflow_receiver_paused",
        "1 while ingest is paused (POST /control/pause): uploads are not read",
        ef_actor_name (actor));
    ef_gauge_set (self->paused_gauge, 0);
    self->shutdown_tag = (s_tag_t){S_TAG_SHUTDOWN, self};
    self->chunks_port = ef_actor_port (actor, "chunks");
    self->acks_port = ef_actor_port (actor, "acks");
    assert (self->chunks_port >= 0 && self->acks_port >= 0);
    ef_acks_unknown_init (ef_actor_port_link (actor, self->acks_port));
    const ef_globals_t *globals = ef_actor_globals (actor);
    ef_schema_opts_t schema_opts;
    ef_globals_schema_opts (globals, &schema_opts);
    self->runlog =
        ef_runlog_new (globals->database, globals->schema, &schema_opts);
    /* 5 beats (10 s): a live receiver is late only while a beat fails
       (held up to statement_timeout, 2 s, or connect_timeout, 5 s), so
       one hiccup does not get its uploads marked; if the database keeps
       failing its beats they may be, and the next beat that gets through
       makes them 'running' again. A killed one is marked within
       2 x stale_after. */
    self->stale_ms = s_stale_ms (self->opts);
    /* rows sent across hosts can be lost with a peer: keep every chunk
       until it is settled, to send it again */
    const ef_config_t *config = ef_actor_config (actor);
    /* any link that carries rows or their acks may: by what it
       carries, so a transform's link counts too */
    static const char *const rows_types[] = {
        "embedflow.v1.ChunkHeader", "embedflow.v1.RowBatch",
        "embedflow.v1.DeadLetter", "embedflow.v1.Ack"};
    for (size_t i = 0; i < ef_config_link_count (config); i++) {
        const char *name = ef_config_link_name (config, i);
        const char *type = ef_config_link_type (config, name);
        for (size_t t = 0; type && t < 4; t++)
            self->resend = self->resend
                           || (strcmp (type, rows_types[t]) == 0
                               && ef_config_link_crosses_hosts (config, name));
    }
    if (self->resend) {
        self->unsettled_chunks = ef_metrics_gauge (
            "embedflow_receiver_unsettled_chunks",
            "chunks sent across hosts whose rows are not all settled", NULL);
        self->unsettled_bytes = ef_metrics_gauge (
            "embedflow_receiver_unsettled_bytes",
            "budget bytes of those chunks (kept to be sent again)", NULL);
        self->oldest_ms = ef_metrics_gauge (
            "embedflow_receiver_oldest_unsettled_ms",
            "how long the oldest of them has waited since it was sent", NULL);
        self->resent = ef_metrics_counter (
            "embedflow_receiver_resent_chunks_total",
            "chunks sent again after a peer went away", NULL);
    }
    self->budget = ef_budget_process ();
    ef_budget_set_limit (self->budget, globals->max_inflight_bytes);
    self->max_decoded = self->opts->max_decoded_bytes
                            ? self->opts->max_decoded_bytes
                            : 2 * self->opts->max_message_bytes;
    self->next_beat_us = ef_clock_mono_us () + self->opts->heartbeat * 1000;
    /* uploads hold no lock: a live receiver's heartbeat is the only sign
       of life, so any process may mark the uploads of a dead one, now and
       every stale_after */
    if (self->runlog
        && ef_runlog_sweep_start (self->runlog, self->stale_ms, self->stale_ms)
               != 0)
        ef_warn ("cannot start the sweep for stale uploads: %s",
                 strerror (errno));

    grpc_init ();
    self->grpc_up = true;

    grpc_arg args[8];
    memset (args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *) GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int) self->opts->max_message_bytes;
    /* gRPC sets SO_REUSEPORT by default, which would let a second
       process bind the same port silently instead of failing */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *) GRPC_ARG_ALLOW_REUSEPORT;
    args[1].value.integer = 0;
    /* BDP probing lets the transport read ahead up to the estimated
       bandwidth-delay product, per connection: tens of MB each on a fast
       link, whatever the pipeline's backpressure. Off, the window stays
       small and memory stays bounded; measured on loopback that still
       carries ~130k rows/s of 768 floats, ~15k at 10 ms RTT. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *) GRPC_ARG_HTTP2_BDP_PROBE;
    args[2].value.integer = self->opts->bdp_probe ? 1 : 0;
    /* One connection cannot open calls without end; idle ones are also
       ended by idle_timeout, and pings find clients that vanished
       without closing their connection. */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *) GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[3].value.integer = (int) self->opts->streams_per_conn;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = (char *) GRPC_ARG_KEEPALIVE_TIME_MS;
    args[4].value.integer = (int) self->opts->keepalive;
    args[5].type = GRPC_ARG_INTEGER;
    args[5].key = (char *) GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
    args[5].value.integer = (int) self->opts->keepalive_timeout;
    /* pings also go to connections without a call: a client that opened
       one and vanished still costs a socket */
    args[6].type = GRPC_ARG_INTEGER;
    args[6].key = (char *) GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS;
    args[6].value.integer = 1;
    args[7].type = GRPC_ARG_INTEGER;
    args[7].key = (char *) GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA;
    args[7].value.integer = 0;
    grpc_channel_args channel_args = {8, args};

    self->cq = grpc_completion_queue_create_for_next (NULL);
    self->pump = ef_cq_pump_new (self->cq);
    if (!self->pump
        || ef_actor_watch_fd (actor, ef_cq_pump_fd (self->pump), s_on_events,
                              self)
               != 0) {
        ef_actor_fail (actor, "cannot wait on gRPC's completion queue: %s",
                       strerror (errno));
        return -1;
    }
    self->server = grpc_server_create (&channel_args, NULL);
    grpc_server_register_completion_queue (self->server, self->cq, NULL);
    self->upload_method = grpc_server_register_method (
        self->server, S_UPLOAD_METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    const char *listen = self->opts->listen ? self->opts->listen : "";
    grpc_server_credentials *creds = s_credentials (actor, self->opts);
    if (!creds)
        return -1;
    int port = grpc_server_add_http2_port (self->server, listen, creds);
    grpc_server_credentials_release (creds);
    if (port <= 0) {
        if (self->opts->tls_cert)
            ef_actor_fail (actor,
                           "cannot listen on %s (with tls_cert %s, "
                           "tls_key %s)",
                           listen, self->opts->tls_cert, self->opts->tls_key);
        else
            ef_actor_fail (actor, "cannot listen on %s", listen);
        return -1;
    }
    grpc_server_start (self->server);
    self->started = true;
    if (s_accept_next (self) || s_other_next (self)) {
        ef_actor_fail (actor, "cannot accept calls on %s", listen);
        return -1;
    }
    char host[256] = "", given_port[16];
    ef_address_split (listen, host, sizeof host, given_port, sizeof given_port);
    bool v6 = strchr (host, ':') != NULL;
    ef_info ("listening on %s%s%s:%d", v6 ? "[" : "",
             host[0] ? host : "0.0.0.0", v6 ? "]" : "", port);
    ef_actor_gauge (actor, EF_METRIC_LISTENING, 1);
    if (self->opts->tls_cert)
        ef_info ("TLS with %s%s", self->opts->tls_cert,
                 self->opts->auth_token ? ", bearer token required" : "");
    else if (self->opts->auth_token)
        ef_warn ("bearer token required but sent in clear text: set tls_cert "
                 "and tls_key");
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* Takes an Ack: adds its tallies to the matching streams. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_receiver_t *self = (s_receiver_t *) ef_actor_state (actor);
    if (port != self->acks_port) {
        zmsg_destroy (msg_p);
        return 0;
    }
    zframe_t *frame = zmsg_first (*msg_p);
    char why[160] = "no frame";
    Embedflow__V1__Ack *ack =
        frame ? ef_linkwire_ack (zframe_data (frame), zframe_size (frame), why,
                                 sizeof why)
              : NULL;
    if (!ack) {
        ef_warn ("dropping an ack: %s", why);
        zmsg_destroy (msg_p);
        return 0;
    }
    for (size_t i = 0; i < ack->n_tallies; i++) {
        Embedflow__V1__StreamTally *t = ack->tallies[i];
        s_stream_t *stream = self->streams;
        while (stream
               && (stream->stream_id != t->stream_id || !stream->admitted
                   || !ef_stream_key_match (stream->key, t->stream_key)))
            stream = stream->next;
        if (!stream && s_orphan_settle (self, t))
            continue;
        if (!stream) {
            ef_acks_unknown (ef_actor_port_link (actor, self->acks_port),
                             ack->from, t->stream_id,
                             t->written + t->dead_lettered);
            continue;
        }
        /* counted per chunk and attempt: a tally of a chunk that was
           sent again since counts nothing */
        ef_settle_t done;
        ef_inflight_settle (stream->held, t->chunk_seq, t->attempt, t->written,
                            t->dead_lettered, &done);
        ef_budget_release (self->budget, done.released);
        stream->written += done.written;
        stream->dead += done.dead;
        ef_counter_add (stream->job->written, done.written);
        ef_counter_add (stream->job->dead_lettered, done.dead);
        ef_actor_count (self->actor, EF_METRIC_ROWS_OUT,
                        (int64_t) done.written);
        ef_actor_count (self->actor, EF_METRIC_IN_FLIGHT,
                        -(int64_t) (done.written + done.dead));
        if (t->ended && *t->ended && !stream->replied) {
            ef_warn_kv (EF_KV (EF_KV_STR ("job_id", stream->job_id),
                               EF_KV_STR ("peer", stream->peer)),
                        "upload %s from %s ended: %s", stream->job_id,
                        stream->peer, t->ended);
            s_stream_reply (stream, GRPC_STATUS_INVALID_ARGUMENT, t->ended);
        }
        s_stream_check_done (stream);
    }
    embedflow__v1__ack__free_unpacked (ack, NULL);
    zmsg_destroy (msg_p);
    /* settled rows may free the budget or the link, finish an upload */
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* When links cross hosts: after a peer went or came (and every
   connection has its peer again), every upload sends the chunks it holds
   again, in order, as new attempts; an upload whose oldest chunk stays
   unsettled for delivery_timeout while a peer is missing, or went since
   it was sent, ends UNAVAILABLE naming the link. Uploads already over
   hold nothing worth re-sending: their clients send again. */
static void
s_check_links (s_receiver_t *self)
{
    if (!self->resend)
        return;
    ef_links_state_t links;
    ef_links_state (&links);
    int64_t now = ef_clock_mono_us ();
    if (links.churn != self->churn_seen) {
        self->churn_seen = links.churn;
        /* a peer that comes back usually does so with a burst of events:
           wait for the last of them */
        self->resend_at_us = now + S_RESEND_DELAY_US;
        s_orphans_release (self);
    }
    bool resend =
        self->resend_at_us && now >= self->resend_at_us && links.down == 0;
    if (resend)
        self->resend_at_us = 0;
    for (s_stream_t *s = self->streams; s; s = s->next) {
        if (!s->admitted || !s->held || s->replied || s->closed)
            continue;
        ef_settle_t back;
        size_t due = resend ? ef_inflight_restart (s->held, &back) : 0;
        if (due) {
            s->written -= back.written;
            s->dead -= back.dead;
            ef_actor_count (self->actor, EF_METRIC_IN_FLIGHT,
                            (int64_t) (back.written + back.dead));
            ef_actor_count (self->actor, EF_METRIC_RETRIES, (int64_t) due);
            ef_counter_add (self->resent, due);
            ef_info ("upload %s: sending %zu unsettled chunk(s) again",
                     s->job_id, due);
            s->resending = true;
            if (!s->pending)
                s_stream_feed (s);
            continue;
        }
        int64_t sent_us;
        uint64_t churn;
        if (!ef_inflight_oldest (s->held, &sent_us, &churn)
            || now - sent_us < self->opts->delivery_timeout * 1000
            || (links.down == 0 && churn == links.churn))
            continue;
        char text[320];
        snprintf (text, sizeof text,
                  "rows not settled within %" PRId64
                  " ms (delivery_timeout): %s%s; %" PRIu64 " of %" PRIu64
                  " rows settled, send again",
                  self->opts->delivery_timeout,
                  links.lost[0] ? links.lost : "a link",
                  links.down ? " has no peer" : " lost its peer",
                  s->written + s->dead, s->received);
        ef_warn ("upload %s from %s: %s", s->job_id, s->peer, text);
        s_stream_reply (s, GRPC_STATUS_UNAVAILABLE, text);
    }
}

/* When links cross hosts: how much this receiver holds unsettled (chunks,
   their budget bytes, the age of the oldest), twice a second. */
static void
s_publish_unsettled (s_receiver_t *self)
{
    int64_t now = ef_clock_mono_us ();
    if (!self->resend || now < self->publish_at_us)
        return;
    self->publish_at_us = now + 500000;
    int64_t chunks = 0, bytes = 0, oldest_us = now;
    for (s_stream_t *s = self->streams; s; s = s->next) {
        int64_t sent;
        uint64_t churn;
        if (!s->held)
            continue;
        chunks += (int64_t) ef_inflight_count (s->held);
        bytes += ef_inflight_charged (s->held);
        if (ef_inflight_oldest (s->held, &sent, &churn) && sent < oldest_us)
            oldest_us = sent;
    }
    ef_gauge_set (self->unsettled_chunks, chunks);
    ef_gauge_set (self->unsettled_bytes, bytes);
    ef_gauge_set (self->oldest_ms, (now - oldest_us) / 1000);
    self->shown_held = chunks > 0;
}

/* Once acks gave bytes back, streams waiting for the budget read again,
   starting after the last one resumed so that none is always last. */
static void
s_resume_budget_waits (s_receiver_t *self)
{
    if (self->n_budget_waits == 0
        || !ef_budget_fits (self->budget, self->opts->max_message_bytes))
        return;
    int skip = (int) (self->rotation++ % (unsigned) self->n_budget_waits);
    for (int pass = 0; pass < 2; pass++) {
        int index = 0;
        for (s_stream_t *s = self->streams; s; s = s->next) {
            if (!s->budget_wait)
                continue;
            bool mine = pass == 0 ? index >= skip : index < skip;
            index++;
            if (!mine)
                continue;
            s->budget_wait = false;
            self->n_budget_waits--;
            s_stream_read (s);
            if (!ef_budget_fits (self->budget, self->opts->max_message_bytes))
                return;
        }
    }
}

/* Ends the uploads whose client has sent nothing for idle_timeout while
   a read waited for it (a stream held back by backpressure is not idle:
   it is not reading). */
static void
s_end_idle (s_receiver_t *self)
{
    int64_t limit = self->opts->idle_timeout;
    int64_t now = ef_clock_mono_us ();
    for (s_stream_t *s = self->streams; s; s = s->next) {
        if (self->n_budget_waits > 0 && s->reading && !s->admitted
            && !s->replied && !s->closed
            && now - s->read_us >= self->opts->first_timeout * 1000) {
            char text[200];
            snprintf (text, sizeof text,
                      "embedflow is busy (max_inflight_bytes) and this call "
                      "sent no message within %" PRId64
                      " ms (first_message_timeout); retry",
                      self->opts->first_timeout);
            ef_debug ("call %" PRIu64 " from %s: %s", s->stream_id, s->peer,
                      text);
            s_stream_reply (s, GRPC_STATUS_RESOURCE_EXHAUSTED, text);
            continue;
        }
        if (limit <= 0)
            continue;
        if (!s->reading || s->replied || s->closed
            || now - s->read_us < limit * 1000)
            continue;
        char text[160];
        snprintf (text, sizeof text,
                  "no message for %" PRId64 " ms (idle_timeout); %" PRIu64
                  " rows were received before",
                  limit, s->received);
        ef_warn_kv (EF_KV (EF_KV_STR ("job_id", s->job_id),
                           EF_KV_STR ("peer", s->peer),
                           EF_KV_U64 ("rows_received", s->received)),
                    "upload %s from %s: %s", s->job_id, s->peer, text);
        ef_actor_count (self->actor, EF_METRIC_ERRORS, 1);
        s_stream_reply (s, GRPC_STATUS_DEADLINE_EXCEEDED, text);
    }
}

/* The earliest of this receiver's own deadlines, as monotonic µs, or -1
   when it has none and may sleep until a completion or an ack. */
static int64_t
s_next_deadline (s_receiver_t *self, int64_t now)
{
    int64_t at = -1;
#define S_SOONER(t)                                                            \
    do {                                                                       \
        int64_t t_ = (t);                                                      \
        if (at < 0 || t_ < at)                                                 \
            at = t_;                                                           \
    } while (0)
    if (self->n_pending)
        S_SOONER (now + S_RETRY_WAIT_MS * 1000);
    if (self->n_budget_waits)
        S_SOONER (now + S_BUDGET_WAIT_MS * 1000);
    for (s_stream_t *s = self->streams; s; s = s->next) {
        if (s->logged)
            S_SOONER (self->next_beat_us);
        if (!s->reading || s->replied || s->closed)
            continue;
        if (self->n_budget_waits > 0 && !s->admitted)
            S_SOONER (s->read_us + self->opts->first_timeout * 1000);
        if (self->opts->idle_timeout > 0)
            S_SOONER (s->read_us + self->opts->idle_timeout * 1000);
    }
    if (self->resend && (self->streams || self->orphans))
        S_SOONER (now + S_LINKS_WAIT_MS * 1000);
    if (self->resend && (self->streams || self->orphans || self->shown_held))
        S_SOONER (self->publish_at_us);
    if (self->resend_at_us)
        S_SOONER (self->resend_at_us);
    if (self->draining && !self->cancelled_all && self->streams)
        S_SOONER (self->drain_deadline_us);
#undef S_SOONER
    return at;
}

/* Retries pending chunks, keeps the clocks (heartbeats, idle uploads,
   links, drain) and sleeps until the next of them. Completions and acks
   come through s_on_events and s_handle, which call it at once. Always
   returns 0. */
static int
s_tick (ef_actor_t *actor)
{
    s_receiver_t *self = (s_receiver_t *) ef_actor_state (actor);
    s_flush_pending (self);
    s_history_tick (self);
    s_end_idle (self);
    s_check_links (self);
    s_publish_unsettled (self);
    s_resume_budget_waits (self);

    if (self->draining && !self->drained) {
        if (!self->cancelled_all && self->streams
            && ef_clock_mono_us () >= self->drain_deadline_us) {
            ef_warn ("cancelling %d upload(s) still open after drain_timeout",
                     s_active_streams (self));
            grpc_server_cancel_all_calls (self->server);
            self->cancelled_all = true;
        }
        if (self->shutdown_done && !self->streams && self->others == 0) {
            self->drained = true;
            ef_actor_drained (actor);
        }
    }
    int64_t now = ef_clock_mono_us ();
    int64_t at = s_next_deadline (self, now);
    ef_actor_wake_in (actor, at < 0      ? -1
                             : at <= now ? 0
                                         : (at - now + 999) / 1000);
    return 0;
}

/* Pauses or resumes reading every upload. Paused, no RECV_MESSAGE is
   posted: a read already posted still brings its one message in, then
   HTTP/2 flow control holds the client; new calls are accepted and wait
   the same way, and idle_timeout does not run for them (nothing is
   being read). */
static void
s_set_paused (s_receiver_t *self, bool paused)
{
    if (self->paused == paused)
        return;
    self->paused = paused;
    ef_gauge_set (self->paused_gauge, paused);
    ef_info ("ingest %s",
             paused ? "paused: no upload is read until resumed" : "resumed");
    if (!paused)
        for (s_stream_t *s = self->streams; s; s = s->next)
            s_stream_read (s);
    ef_actor_wake_in (self->actor, 0);
}

/* /control: pause, resume, status. */
static int
s_control (ef_actor_t *actor, const char *verb, const char *arg, char *reply,
           size_t len)
{
    (void) arg;
    s_receiver_t *self = (s_receiver_t *) ef_actor_state (actor);
    bool status = strcmp (verb, "status") == 0;
    if (!status && strcmp (verb, "pause") != 0 && strcmp (verb, "resume") != 0)
        return 1;
    if (!status && self->draining) {
        snprintf (reply, len, "draining: uploads are read until they end");
        return -1;
    }
    if (!status)
        s_set_paused (self, strcmp (verb, "pause") == 0);
    snprintf (reply, len, "%s, %d upload(s) open",
              self->paused ? "paused" : "running", s_active_streams (self));
    return 0;
}

/* Graceful stop: refuse new calls, let open uploads finish. */
static void
s_drain (ef_actor_t *actor)
{
    s_receiver_t *self = (s_receiver_t *) ef_actor_state (actor);
    if (self->draining)
        return;
    self->draining = true;
    ef_actor_gauge (actor, EF_METRIC_LISTENING, 0);
    if (self->paused) { /* a paused upload could only be cancelled */
        ef_info ("draining: reading the paused uploads again");
        s_set_paused (self, false);
    }
    /* calls that never sent a message have nothing to finish */
    for (s_stream_t *s = self->streams; s; s = s->next)
        if (!s->admitted && !s->replied && !s->closed)
            s_stream_reply (s, GRPC_STATUS_UNAVAILABLE,
                            "embedflow is shutting down; retry");
    self->drain_deadline_us =
        ef_clock_mono_us () + self->opts->drain_timeout * 1000;
    int open = s_active_streams (self);
    if (open)
        ef_info ("draining: %d upload(s) open, waiting up to %" PRId64 " ms",
                 open, self->opts->drain_timeout);
    if (!self->shutdown_started) {
        self->shutdown_started = true;
        grpc_server_shutdown_and_notify (self->server, self->cq,
                                         &self->shutdown_tag);
    }
    ef_actor_wake_in (actor, 0);
}

/* Stops the server, cancels what is left, frees everything. */
static void
s_destroy (ef_actor_t *actor)
{
    s_receiver_t *self = (s_receiver_t *) ef_actor_state (actor);
    if (self->server && !self->started)
        /* no listener, no call: nothing to shut down */
        grpc_server_destroy (self->server);
    else if (self->server) {
        if (!self->shutdown_started) {
            self->shutdown_started = true;
            grpc_server_shutdown_and_notify (self->server, self->cq,
                                             &self->shutdown_tag);
        }
        self->cancelled_all = true;
        grpc_server_cancel_all_calls (self->server);
        /* Every outstanding tag must come back before the server can go;
           after cancel_all_calls that is prompt */
        int64_t warn_at = ef_clock_mono_us () + 5000000;
        while (!self->shutdown_done || self->streams || self->others) {
            s_poll (self, 100);
            if (ef_clock_mono_us () > warn_at) {
                ef_warn ("still waiting for gRPC calls to end");
                warn_at = ef_clock_mono_us () + 5000000;
            }
        }
        grpc_server_destroy (self->server);
    }
    if (self->pump) {
        ef_actor_unwatch_fd (actor, ef_cq_pump_fd (self->pump));
        grpc_completion_queue_shutdown (self->cq);
        for (;;) {
            grpc_event ev = ef_cq_pump_next (self->pump, -1);
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
            if (ev.type == GRPC_OP_COMPLETE)
                s_dispatch (self, &ev);
        }
        ef_cq_pump_destroy (&self->pump);
        grpc_completion_queue_destroy (self->cq);
    }
    else
        ef_grpc_cq_destroy (self->cq);
    self->cq = NULL;
    if (self->grpc_up)
        grpc_shutdown ();
    /* the budget is the process's: give back what this instance held */
    s_orphans_release (self);
    ef_runlog_destroy (&self->runlog);
}

static const ef_port_def_t s_ports[] = {
    {"chunks", EF_PORT_OUT, "embedflow.v1.ChunkHeader", false, 8},
    {"acks", EF_PORT_IN, "embedflow.v1.Ack", false, 10000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_grpc_receiver_actor = {
    .name = s_name,
    .summary = "gRPC server for UploadEmbeddings: stamps chunks, answers "
               "when every row is settled",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_receiver_t),
    .ports = s_ports,
    .flags = EF_ACTOR_SOURCE,
    .default_instances = 1,
    .check = s_check,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .drain = s_drain,
    .destroy = s_destroy,
    .control = s_control,
};
