/*  grpc_puller.c — the pull source: a gRPC client of GetEmbeddings.

    With `target` set, the puller runs one job: it takes the job's lock in
    the database (two processes never run one job at once), marks runs of
    the job left 'running' by a dead process as 'abandoned', reads the
    job's committed position (pipeline/checkpoint.h) and records a new run
    in job_run. Then it calls GetEmbeddings with that resume token and
    forwards every chunk to the splitter exactly as grpc-receiver does,
    as [ChunkHeader][original bytes] on "chunks", with origin 1, its own
    sequence number and the chunk's resume token in the header. Writers
    and the DLQ record what they settle of each chunk in their own
    transactions and ack it on "pull-acks".

    Backpressure: one RECV_MESSAGE at a time, and the next only after the
    previous chunk went onto the link (ef_actor_try_send): a full pipeline
    stops reading, and HTTP/2 flow control stops the server.

    Failures: a broken stream (server gone, idle timeout, UNAVAILABLE, ...)
    is retried with backoff up to `retries` times, resuming after the last
    chunk forwarded. A message that is not an EmbeddingChunk fails the run
    at once (the server is wrong; retrying would get the same bytes); the
    position stays at the last good chunk. A run ends once the stream is
    over and every forwarded row is written or dead-lettered; its status,
    counts and position go to job_run.

    With `schedule` (a cron expression, pipeline/cron.h) the job runs on
    it instead of once at start: a due slot is claimed in job_slot (the
    process whose claim goes in runs it), a slot passing during a run is
    skipped and logged, slots missed while no process ran are skipped or
    fired once (`misfire`), and a failed run is run again with backoff up
    to `run_retries` times.

    Without `target` the actor is idle (a process that only serves
    uploads). Graceful stop cancels the call, waits for the rows already
    forwarded to settle and ends the run 'failed' ("stopped"): the next
    run resumes from the checkpoint.
*/
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/grpc_puller.h"
#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "embedflow/pipeline.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "pipeline/checkpoint.h"
#include "pipeline/cron.h"
#include "pipeline/grpcmsg.h"
#include "pipeline/pg.h"
#include "pipeline/schema.h"
#include "pipeline/uuid7.h"

#define S_METHOD       "/embedflow.v1.EmbeddingService/GetEmbeddings"
#define S_IDLE_WAIT_MS 5 /* next() deadline when nothing is pending */

/* --- options ------------------------------------------------------------ */

typedef struct {
    char *target;              /* HOST:PORT of the AI server; NULL = idle */
    char *source;              /* RequestParams.source */
    char *job;                 /* job name; NULL = source */
    int64_t chunk_size;        /* RequestParams.chunk_size */
    char *filter;              /* "k=v,k=v" -> RequestParams.filter */
    bool from_start;           /* ignore the checkpoint */
    char *trigger;             /* job_run.trigger: manual or cron */
    int64_t max_message_bytes; /* receive limit per message */
    int64_t deadline;          /* ms for the whole call; 0 = none */
    int64_t idle_timeout;      /* ms without a message before giving up */
    int64_t retries;           /* broken streams retried per run */
    int64_t retry_base;        /* first backoff ceiling, ms */
    int64_t retry_cap;         /* largest backoff ceiling, ms */
    int64_t heartbeat;         /* ms between job_run heartbeats */
    int64_t lock_timeout;      /* ms to wait for the job's lock */
    char *schedule;            /* cron expression; NULL = run once now */
    char *misfire;             /* skip or fire_once */
    int64_t run_retries;       /* failed scheduled runs retried */
    int64_t run_retry_base;    /* first backoff ceiling, ms */
    int64_t run_retry_cap;     /* largest backoff ceiling, ms */
    bool bdp_probe;            /* let HTTP/2 windows grow to the BDP */
    bool tls;                  /* speak TLS to the server */
    char *tls_ca;              /* PEM roots; NULL = system roots */
    char *auth_token;          /* sent as "authorization: Bearer" */
} s_options_t;

static const ef_option_t s_options[] = {
    {"target", EF_OPT_STRING, NULL, offsetof (s_options_t, target), 0, 0,
     "AI server to pull from, HOST:PORT (unset: the puller is idle)"},
    {"source", EF_OPT_STRING, "", offsetof (s_options_t, source), 0, 0,
     "RequestParams.source, also stored with the rows"},
    {"job", EF_OPT_STRING, NULL, offsetof (s_options_t, job), 0, 0,
     "job name: its runs share one checkpoint (default: the source)"},
    {"chunk_size", EF_OPT_INT, "256", offsetof (s_options_t, chunk_size), 1,
     1000000, "RequestParams.chunk_size: rows per streamed chunk"},
    {"filter", EF_OPT_STRING, NULL, offsetof (s_options_t, filter), 0, 0,
     "RequestParams.filter as KEY=VALUE[,KEY=VALUE...]"},
    {"from_start", EF_OPT_BOOL, "false", offsetof (s_options_t, from_start), 0,
     0, "ignore the job's checkpoint and pull everything"},
    {"trigger", EF_OPT_STRING, "manual", offsetof (s_options_t, trigger), 0, 0,
     "job_run.trigger of the run: manual or cron"},
    {"max_message_bytes", EF_OPT_SIZE, "64M",
     offsetof (s_options_t, max_message_bytes), 1024, INT32_MAX,
     "largest EmbeddingChunk accepted from the server"},
    {"deadline", EF_OPT_MS, "0", offsetof (s_options_t, deadline), 0,
     INT64_MAX / 2, "deadline of one GetEmbeddings call (0 = none)"},
    {"idle_timeout", EF_OPT_MS, "60s", offsetof (s_options_t, idle_timeout), 0,
     INT64_MAX / 2,
     "a stream silent this long is broken (and retried); 0 = never"},
    {"retries", EF_OPT_INT, "8", offsetof (s_options_t, retries), 0, 1000000,
     "broken streams resumed per run before the run fails"},
    {"retry_base", EF_OPT_MS, "200ms", offsetof (s_options_t, retry_base), 1,
     3600000, "first backoff ceiling before resuming a broken stream"},
    {"retry_cap", EF_OPT_MS, "5s", offsetof (s_options_t, retry_cap), 1,
     3600000, "largest backoff ceiling between resumptions"},
    {"heartbeat", EF_OPT_MS, "2s", offsetof (s_options_t, heartbeat), 10,
     3600000, "how often the run's heartbeat and counts are stored"},
    {"schedule", EF_OPT_STRING, NULL, offsetof (s_options_t, schedule), 0, 0,
     "cron expression in UTC (5 fields, or 6 with seconds first, or "
     "@hourly...): run the job on it instead of once at start"},
    {"misfire", EF_OPT_STRING, "skip", offsetof (s_options_t, misfire), 0, 0,
     "slots missed while no process ran: skip them, or fire_once"},
    {"run_retries", EF_OPT_INT, "0", offsetof (s_options_t, run_retries), 0,
     1000000, "a failed scheduled run is run again this often"},
    {"run_retry_base", EF_OPT_MS, "1s", offsetof (s_options_t, run_retry_base),
     1, 86400000, "first backoff ceiling before a failed run is retried"},
    {"run_retry_cap", EF_OPT_MS, "60s", offsetof (s_options_t, run_retry_cap),
     1, 86400000, "largest backoff ceiling between retried runs"},
    {"lock_timeout", EF_OPT_MS, "2s", offsetof (s_options_t, lock_timeout), 0,
     3600000,
     "how long to wait for the job's lock (a killed process's session "
     "takes a moment to go)"},
    {"bdp_probe", EF_OPT_BOOL, "false", offsetof (s_options_t, bdp_probe), 0, 0,
     "grow HTTP/2 windows to the bandwidth-delay product: faster over "
     "high-latency links, but reads that far ahead of the pipeline"},
    {"tls", EF_OPT_BOOL, "false", offsetof (s_options_t, tls), 0, 0,
     "connect with TLS"},
    {"tls_ca", EF_OPT_STRING, NULL, offsetof (s_options_t, tls_ca), 0, 0,
     "PEM file of the roots to trust (implies tls; default: system roots)"},
    {"auth_token", EF_OPT_SECRET, NULL, offsetof (s_options_t, auth_token), 0,
     0, "sent as metadata 'authorization: Bearer TOKEN'"},
    EF_OPTION_END};

/* --- state --------------------------------------------------------------- */

typedef enum {
    S_IDLE,     /* no target, or the run is over */
    S_CALLING,  /* a GetEmbeddings call is open */
    S_WAITING,  /* a broken stream waits for its retry */
    S_SETTLING, /* the stream is over: waiting for the last acks */
} s_phase_t;

typedef enum {
    S_TAG_START,  /* the send/metadata batch */
    S_TAG_RECV,   /* one RECV_MESSAGE */
    S_TAG_STATUS, /* RECV_STATUS_ON_CLIENT */
} s_tag_kind_t;

typedef struct s_call s_call_t;

typedef struct {
    s_tag_kind_t kind; /* which batch */
    s_call_t *call;    /* whose */
} s_tag_t;

/* One GetEmbeddings call (one per attempt). */
struct s_call {
    grpc_call *call;              /* ours, one ref */
    s_tag_t start_tag;            /* S_TAG_START */
    s_tag_t recv_tag;             /* S_TAG_RECV */
    s_tag_t status_tag;           /* S_TAG_STATUS */
    int refs;                     /* batches in flight */
    grpc_byte_buffer *request;    /* RequestParams being sent */
    grpc_byte_buffer *recv_buf;   /* target of RECV_MESSAGE */
    grpc_metadata auth_md;        /* authorization, when set */
    bool has_auth;                /* auth_md holds a ref */
    grpc_metadata_array initial;  /* server's initial metadata */
    grpc_metadata_array trailing; /* server's trailing metadata */
    grpc_status_code status;      /* final status */
    grpc_slice details;           /* its message */
    bool reading;                 /* a RECV_MESSAGE is in flight */
    bool eos;                     /* the server ended the stream */
    bool broken;                  /* a RECV_MESSAGE failed */
    bool has_status;              /* status came back */
    bool idle_expired;            /* we cancelled it for silence */
    char fatal[256];              /* a non-retryable problem found here */
};

typedef struct {
    ef_actor_t *actor;           /* the actor instance */
    const s_options_t *opts;     /* its options */
    const ef_globals_t *globals; /* schema, database */
    int chunks_port;             /* OUT: chunks */
    int acks_port;               /* IN: pull-acks */
    s_phase_t phase;             /* where the run is */
    bool grpc_up;                /* grpc_init was called */
    grpc_completion_queue *cq;   /* polled from tick */
    grpc_channel *channel;       /* to target */
    s_call_t *call;              /* the current attempt, or NULL */
    int calls_alive;             /* calls not yet freed */
    PGconn *conn;                /* job lock, job_run, empty chunks */
    const char *job;             /* opts->job or opts->source */
    char run_id[37];             /* this run's job_run.id */
    uint64_t stream_id;          /* what acks name */
    char *start_token;           /* where the run started */
    char *last_token;            /* token of the last chunk forwarded */
    uint64_t seq;                /* next chunk sequence of the run */
    uint64_t messages;           /* messages read in the run */
    uint64_t received;           /* rows forwarded (and pending) */
    uint64_t written;            /* rows acked as committed */
    uint64_t dead;               /* rows acked as dead-lettered */
    uint64_t calls;              /* attempts made */
    zmsg_t *pending;             /* chunk waiting for room on the link */
    ef_backoff_t backoff;        /* between attempts */
    int64_t retry_at_us;         /* monotonic time of the next attempt */
    int64_t last_msg_us;         /* monotonic time of the last message */
    int64_t next_beat_us;        /* monotonic time of the next heartbeat */
    int64_t started_us;          /* monotonic time of the first call */
    bool busy;                   /* the last poll found completions */
    bool draining;               /* stop asked */
    bool run_recorded;           /* its job_run row exists */
    bool locked;                 /* this session holds the job's lock */
    bool scheduled;              /* runs on cron, not once at start */
    ef_cron_t cron;              /* the schedule */
    int64_t next_fire;           /* next slot, Unix seconds */
    ef_backoff_t run_backoff;    /* between retried runs */
    int64_t rerun_at_us;         /* monotonic time of a retried run, 0 */
    bool finished;               /* the run's end is recorded */
    char error[512];             /* why the run failed, "" while fine */
} s_puller_t;

/* --- process-wide report hooks -------------------------------------------- */

static pthread_mutex_t s_hook_lock = PTHREAD_MUTEX_INITIALIZER;
static ef_pull_done_fn *s_done_fn;
static void *s_done_arg;
static uint64_t s_progress_received;
static uint64_t s_progress_settled;

void
ef_puller_on_done (ef_pull_done_fn *fn, void *arg)
{
    pthread_mutex_lock (&s_hook_lock);
    s_done_fn = fn;
    s_done_arg = arg;
    pthread_mutex_unlock (&s_hook_lock);
}

void
ef_puller_progress (uint64_t *received, uint64_t *settled)
{
    *received = __atomic_load_n (&s_progress_received, __ATOMIC_RELAXED);
    *settled = __atomic_load_n (&s_progress_settled, __ATOMIC_RELAXED);
}

/* Publishes the counters for ef_puller_progress. */
static void
s_publish (s_puller_t *self)
{
    __atomic_store_n (&s_progress_received, self->received, __ATOMIC_RELAXED);
    __atomic_store_n (&s_progress_settled, self->written + self->dead,
                      __ATOMIC_RELAXED);
}

/* --- calls --------------------------------------------------------------- */

/* Frees a call whose batches have all completed. */
static void
s_call_free (s_puller_t *self, s_call_t *c)
{
    if (self->call == c)
        self->call = NULL;
    if (c->request)
        grpc_byte_buffer_destroy (c->request);
    if (c->recv_buf)
        grpc_byte_buffer_destroy (c->recv_buf);
    if (c->has_auth)
        grpc_slice_unref (c->auth_md.value);
    grpc_slice_unref (c->details);
    grpc_metadata_array_destroy (&c->initial);
    grpc_metadata_array_destroy (&c->trailing);
    if (c->call)
        grpc_call_unref (c->call);
    free (c);
    self->calls_alive--;
}

/* Builds RequestParams for token into a byte buffer; NULL when out of
   memory or the filter is malformed (err says why). */
static grpc_byte_buffer *
s_request (s_puller_t *self, const char *token, char *err, size_t errlen)
{
    Embedflow__V1__RequestParams p = EMBEDFLOW__V1__REQUEST_PARAMS__INIT;
    p.source = self->opts->source ? self->opts->source : "";
    p.resume_token = (char *) (token ? token : "");
    p.chunk_size = (uint32_t) self->opts->chunk_size;
    Embedflow__V1__RequestParams__FilterEntry entries[32];
    Embedflow__V1__RequestParams__FilterEntry *ptrs[32];
    char *copy = self->opts->filter ? strdup (self->opts->filter) : NULL;
    size_t n = 0;
    char *save = NULL;
    for (char *kv = copy ? strtok_r (copy, ",", &save) : NULL; kv;
         kv = strtok_r (NULL, ",", &save)) {
        char *eq = strchr (kv, '=');
        if (!eq || eq == kv || n == 32) {
            snprintf (err, errlen,
                      "filter: '%s' is not KEY=VALUE (at most 32 pairs)", kv);
            free (copy);
            return NULL;
        }
        *eq = '\0';
        embedflow__v1__request_params__filter_entry__init (&entries[n]);
        entries[n].key = kv;
        entries[n].value = eq + 1;
        ptrs[n] = &entries[n];
        n++;
    }
    p.n_filter = n;
    p.filter = n ? ptrs : NULL;
    size_t size = embedflow__v1__request_params__get_packed_size (&p);
    grpc_slice slice = grpc_slice_malloc (size);
    embedflow__v1__request_params__pack (&p, GRPC_SLICE_START_PTR (slice));
    free (copy);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&slice, 1);
    grpc_slice_unref (slice);
    return bb;
}

/* Posts the next RECV_MESSAGE of the current call. */
static void
s_read (s_puller_t *self)
{
    s_call_t *c = self->call;
    if (!c || c->reading || c->eos || c->broken || self->pending || c->fatal[0]
        || (c->has_status && c->status != GRPC_STATUS_OK))
        return;
    grpc_op op;
    memset (&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    grpc_call_error rc =
        grpc_call_start_batch (c->call, &op, 1, &c->recv_tag, NULL);
    if (rc != GRPC_CALL_OK) {
        ef_warn ("cannot read: %s", grpc_call_error_to_string (rc));
        grpc_call_cancel (c->call, NULL);
        return;
    }
    c->reading = true;
    c->refs++;
}

/* Opens a GetEmbeddings call resuming after token. Returns 0, -1 with
   self->error set when it cannot even start. */
static int
s_call_start (s_puller_t *self, const char *token)
{
    char err[256] = "";
    s_call_t *c = calloc (1, sizeof *c);
    if (!c) {
        snprintf (self->error, sizeof self->error, "out of memory");
        return -1;
    }
    c->start_tag = (s_tag_t){S_TAG_START, c};
    c->recv_tag = (s_tag_t){S_TAG_RECV, c};
    c->status_tag = (s_tag_t){S_TAG_STATUS, c};
    c->details = grpc_empty_slice ();
    grpc_metadata_array_init (&c->initial);
    grpc_metadata_array_init (&c->trailing);
    self->calls_alive++;
    c->request = s_request (self, token, err, sizeof err);
    if (!c->request) {
        snprintf (self->error, sizeof self->error, "%s",
                  *err ? err : "out of memory");
        s_call_free (self, c);
        return -1;
    }
    gpr_timespec deadline = self->opts->deadline > 0
                                ? ef_grpc_deadline_ms (self->opts->deadline)
                                : gpr_inf_future (GPR_CLOCK_MONOTONIC);
    grpc_slice method = grpc_slice_from_static_string (S_METHOD);
    c->call =
        grpc_channel_create_call (self->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                  self->cq, method, NULL, deadline, NULL);
    grpc_op ops[4];
    memset (ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (self->opts->auth_token) {
        char bearer[1024];
        snprintf (bearer, sizeof bearer, "Bearer %s", self->opts->auth_token);
        c->auth_md.key = grpc_slice_from_static_string ("authorization");
        c->auth_md.value = grpc_slice_from_copied_string (bearer);
        c->has_auth = true;
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &c->auth_md;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial;
    grpc_call_error rc =
        grpc_call_start_batch (c->call, ops, 4, &c->start_tag, NULL);
    if (rc == GRPC_CALL_OK) {
        c->refs++;
        grpc_op st;
        memset (&st, 0, sizeof st);
        st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        st.data.recv_status_on_client.trailing_metadata = &c->trailing;
        st.data.recv_status_on_client.status = &c->status;
        st.data.recv_status_on_client.status_details = &c->details;
        rc = grpc_call_start_batch (c->call, &st, 1, &c->status_tag, NULL);
        if (rc == GRPC_CALL_OK)
            c->refs++;
        else
            grpc_call_cancel (c->call, NULL);
    }
    if (rc != GRPC_CALL_OK) {
        snprintf (self->error, sizeof self->error,
                  "cannot call GetEmbeddings: %s",
                  grpc_call_error_to_string (rc));
        if (c->refs == 0)
            s_call_free (self, c);
        return -1;
    }
    self->call = c;
    self->calls++;
    self->phase = S_CALLING;
    self->last_msg_us = ef_clock_mono_us ();
    ef_info ("job %s run %s: GetEmbeddings on %s, source '%s', %s%s%s",
             self->job, self->run_id, self->opts->target,
             self->opts->source ? self->opts->source : "",
             token && *token ? "resuming after token '" : "from the start",
             token && *token ? token : "", token && *token ? "'" : "");
    s_read (self);
    return 0;
}

/* --- the run ------------------------------------------------------------- */

/* Records the run's end and tells whoever waits. */
static void
s_finish (s_puller_t *self)
{
    if (self->finished)
        return;
    self->finished = true;
    self->phase = S_IDLE;
    const char *status = self->error[0] ? "failed" : "completed";
    char err[512];
    ef_pull_report_t rep;
    memset (&rep, 0, sizeof rep);
    int rc = -1;
    for (int attempt = 0; attempt < 3 && rc != 0; attempt++) {
        if (attempt > 0 && PQstatus (self->conn) != CONNECTION_OK)
            PQreset (self->conn);
        rc = ef_run_update (self->conn, self->globals->schema, self->run_id,
                            status, self->received, self->written, self->dead,
                            self->error[0] ? self->error : NULL, err,
                            sizeof err);
    }
    if (rc != 0)
        ef_error ("job %s run %s: cannot record the end of the run: %s",
                  self->job, self->run_id, err);
    char *pos = ef_run_position (self->conn, self->globals->schema,
                                 self->run_id, err, sizeof err);
    snprintf (rep.position, sizeof rep.position, "%s", pos ? pos : "?");
    free (pos);
    snprintf (rep.run_id, sizeof rep.run_id, "%s", self->run_id);
    snprintf (rep.job, sizeof rep.job, "%s", self->job);
    snprintf (rep.status, sizeof rep.status, "%s", status);
    snprintf (rep.start_token, sizeof rep.start_token, "%s",
              self->start_token ? self->start_token : "");
    snprintf (rep.error, sizeof rep.error, "%s", self->error);
    rep.received = self->received;
    rep.written = self->written;
    rep.dead = self->dead;
    rep.calls = self->calls;
    rep.seconds = (double) (ef_clock_mono_us () - self->started_us) / 1e6;
    if (self->error[0])
        ef_error ("job %s run %s failed after %" PRIu64 " rows (%" PRIu64
                  " written, %" PRIu64 " dead-lettered): %s; position '%s'",
                  self->job, self->run_id, self->received, self->written,
                  self->dead, self->error, rep.position);
    else
        ef_info ("job %s run %s completed in %.1f s: %" PRIu64
                 " rows received, %" PRIu64 " written, %" PRIu64
                 " dead-lettered; position '%s'",
                 self->job, self->run_id, rep.seconds, self->received,
                 self->written, self->dead, rep.position);
    pthread_mutex_lock (&s_hook_lock);
    ef_pull_done_fn *fn = s_done_fn;
    void *arg = s_done_arg;
    pthread_mutex_unlock (&s_hook_lock);
    if (fn)
        fn (&rep, arg);
    if (self->locked) {
        ef_job_unlock (self->conn, self->globals->schema, self->job);
        self->locked = false;
    }
    if (self->scheduled && !self->draining && self->error[0]) {
        int64_t delay = ef_backoff_next (&self->run_backoff);
        if (delay >= 0) {
            self->rerun_at_us = ef_clock_mono_us () + delay * 1000;
            ef_warn ("job %s: the run failed; retry %d of %" PRId64
                     " in %" PRId64 " ms",
                     self->job, self->run_backoff.attempt,
                     self->opts->run_retries, delay);
        }
        else {
            ef_backoff_reset (&self->run_backoff);
            if (self->opts->run_retries > 0)
                ef_error ("job %s: retries spent; next try at the next slot",
                          self->job);
        }
    }
    else if (self->scheduled)
        ef_backoff_reset (&self->run_backoff);
    if (self->draining)
        ef_actor_drained (self->actor);
}

/* Ends the run once the stream is over and every row is settled. */
static void
s_check_settled (s_puller_t *self)
{
    if (self->phase != S_SETTLING || self->pending || self->call)
        return;
    if (self->written + self->dead < self->received)
        return;
    s_finish (self);
}

static void s_call_maybe_end (s_puller_t *self, s_call_t *c);

/* Tries to hand the pending chunk to the link; reads on when it went. */
static void
s_flush (s_puller_t *self)
{
    if (!self->pending)
        return;
    int rc =
        ef_actor_try_send (self->actor, self->chunks_port, 0, &self->pending);
    if (rc == 0)
        return;
    if (rc < 0) {
        /* Its rows will never be acked: count them out of the run. */
        zmsg_destroy (&self->pending);
        if (!self->error[0])
            snprintf (self->error, sizeof self->error,
                      "cannot forward a chunk to the splitter");
        s_call_t *c = self->call;
        if (c) {
            c->broken = true; /* so that it ends, nothing more is read */
            grpc_call_cancel (c->call, NULL);
            s_call_maybe_end (self, c);
        }
        return;
    }
    s_read (self);
}

/* Takes one message off the wire: parse, stamp, forward. */
static void
s_on_message (s_puller_t *self, s_call_t *c, grpc_byte_buffer *buf)
{
    self->messages++;
    self->last_msg_us = ef_clock_mono_us ();
    zframe_t *body = ef_grpc_message_frame (buf);
    grpc_byte_buffer_destroy (buf);
    Embedflow__V1__EmbeddingChunk *chunk =
        body ? embedflow__v1__embedding_chunk__unpack (NULL, zframe_size (body),
                                                       zframe_data (body))
             : NULL;
    if (!chunk) {
        snprintf (c->fatal, sizeof c->fatal,
                  "message %" PRIu64 " from %s (%zu bytes, after chunk %" PRIu64
                  " of the run) is not a valid EmbeddingChunk",
                  self->messages, self->opts->target,
                  body ? zframe_size (body) : 0, self->seq);
        zframe_destroy (&body);
        grpc_call_cancel (c->call, NULL);
        return;
    }
    ef_backoff_reset (&self->backoff);
    char *token = strdup (chunk->resume_token ? chunk->resume_token : "");
    size_t rows = chunk->n_items;
    embedflow__v1__embedding_chunk__free_unpacked (chunk, NULL);
    if (!token || rows > UINT32_MAX) {
        snprintf (c->fatal, sizeof c->fatal, "%s",
                  token ? "too many items in one chunk" : "out of memory");
        free (token);
        zframe_destroy (&body);
        grpc_call_cancel (c->call, NULL);
        return;
    }
    uint64_t seq = self->seq++;
    if (rows == 0) {
        /* Nothing to write, nobody to ack it: complete it here. */
        char err[256];
        zframe_destroy (&body);
        if (ef_checkpoint_empty_chunk (self->conn, self->globals->schema,
                                       self->run_id, seq, token, err,
                                       sizeof err)
            != 0) {
            snprintf (c->fatal, sizeof c->fatal, "%s", err);
            free (token);
            grpc_call_cancel (c->call, NULL);
            return;
        }
        free (self->last_token);
        self->last_token = token;
        s_read (self);
        return;
    }
    Embedflow__V1__ChunkHeader header = EMBEDFLOW__V1__CHUNK_HEADER__INIT;
    header.stream_id = self->stream_id;
    header.job_id = self->run_id;
    header.seq = seq;
    header.source = self->opts->source ? self->opts->source : "";
    header.rows = (uint32_t) rows;
    header.received_us = ef_clock_wall_us ();
    header.resume_token = token;
    header.origin = EF_ORIGIN_PULL;
    size_t hsize = embedflow__v1__chunk_header__get_packed_size (&header);
    zframe_t *hframe = zframe_new (NULL, hsize);
    zmsg_t *msg = zmsg_new ();
    if (!hframe || !msg) {
        zframe_destroy (&hframe);
        zframe_destroy (&body);
        zmsg_destroy (&msg);
        free (token);
        snprintf (c->fatal, sizeof c->fatal, "out of memory");
        grpc_call_cancel (c->call, NULL);
        return;
    }
    embedflow__v1__chunk_header__pack (&header, zframe_data (hframe));
    zmsg_append (msg, &hframe);
    zmsg_append (msg, &body);
    free (self->last_token);
    self->last_token = token;
    self->received += rows;
    self->pending = msg;
    s_publish (self);
    s_flush (self);
}

/* True when a stream that ended with code may be resumed. */
static bool
s_retryable (grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_CANCELLED:
    case GRPC_STATUS_UNKNOWN:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
    case GRPC_STATUS_ABORTED:
    case GRPC_STATUS_INTERNAL:
    case GRPC_STATUS_UNAVAILABLE:
        return true;
    default:
        return false;
    }
}

/* The call is over (status in, no batch left but this one): decide what
   comes next. */
static void
s_on_call_end (s_puller_t *self, s_call_t *c)
{
    char why[400];
    snprintf (why, sizeof why, "GetEmbeddings ended %s: %.*s",
              ef_grpc_status_name (c->status),
              (int) GRPC_SLICE_LENGTH (c->details),
              (const char *) GRPC_SLICE_START_PTR (c->details));
    if (c->idle_expired)
        snprintf (why, sizeof why,
                  "no message from %.200s for %" PRId64 " ms (idle_timeout)",
                  self->opts->target, self->opts->idle_timeout);
    if (c->fatal[0]) {
        snprintf (self->error, sizeof self->error, "%s", c->fatal);
        self->phase = S_SETTLING;
        return;
    }
    if (self->draining) {
        if (!(c->status == GRPC_STATUS_OK && c->eos))
            snprintf (self->error, sizeof self->error,
                      "stopped before the stream ended");
        self->phase = S_SETTLING;
        return;
    }
    if (c->status == GRPC_STATUS_OK && c->eos) {
        self->phase = S_SETTLING;
        return;
    }
    int64_t delay = s_retryable (c->status) || c->idle_expired
                        ? ef_backoff_next (&self->backoff)
                        : -1;
    if (delay < 0) {
        snprintf (self->error, sizeof self->error, "%s%s", why,
                  s_retryable (c->status) ? " (retries exhausted)" : "");
        self->phase = S_SETTLING;
        return;
    }
    ef_warn ("job %s: %s; resuming in %" PRId64 " ms (retry %d of %" PRId64 ")",
             self->job, why, delay, self->backoff.attempt, self->opts->retries);
    self->phase = S_WAITING;
    self->retry_at_us = ef_clock_mono_us () + delay * 1000;
}

/* Ends the call when nothing of it is in flight and the stream is over
   (a status OK arrives before the last messages are read: read on). */
static void
s_call_maybe_end (s_puller_t *self, s_call_t *c)
{
    if (c->refs > 0 || !c->has_status)
        return;
    if (c->status == GRPC_STATUS_OK && !c->eos && !c->broken && !c->fatal[0]
        && !self->draining && self->call == c) {
        if (self->pending)
            return; /* s_flush reads on */
        s_read (self);
        if (c->refs > 0)
            return;
    }
    bool current = self->call == c;
    if (current)
        self->call = NULL;
    if (current)
        s_on_call_end (self, c);
    s_call_free (self, c);
}

/* Routes one completion. */
static void
s_dispatch (s_puller_t *self, grpc_event *ev)
{
    s_tag_t *tag = (s_tag_t *) ev->tag;
    s_call_t *c = tag->call;
    switch (tag->kind) {
    case S_TAG_START:
        break;
    case S_TAG_RECV: {
        c->reading = false;
        grpc_byte_buffer *buf = c->recv_buf;
        c->recv_buf = NULL;
        if (!ev->success)
            c->broken = true;
        else if (!buf)
            c->eos = true; /* the server ended the stream */
        if (buf && ev->success && !self->draining && !c->fatal[0])
            s_on_message (self, c, buf);
        else if (buf)
            grpc_byte_buffer_destroy (buf);
        break;
    }
    case S_TAG_STATUS:
        c->has_status = true;
        break;
    }
    assert (c->refs > 0);
    c->refs--;
    s_call_maybe_end (self, c);
}

/* Handles completions until none is ready, waiting at most wait_ms. */
static int
s_poll (s_puller_t *self, int64_t wait_ms)
{
    gpr_timespec deadline = ef_grpc_deadline_ms (wait_ms);
    int n = 0;
    while (n < 256) {
        grpc_event ev = grpc_completion_queue_next (self->cq, deadline, NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        s_dispatch (self, &ev);
        n++;
        deadline = gpr_inf_past (GPR_CLOCK_MONOTONIC);
    }
    return n;
}

/* --- actor callbacks ----------------------------------------------------- */

/* Reads a whole file into a NUL-terminated heap string, NULL on error. */
static char *
s_read_file (const char *path)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return NULL;
    char *data = NULL;
    size_t len = 0, n;
    char buf[4096];
    while ((n = fread (buf, 1, sizeof buf, f)) > 0) {
        char *grown = realloc (data, len + n + 1);
        if (!grown) {
            free (data);
            fclose (f);
            return NULL;
        }
        data = grown;
        memcpy (data + len, buf, n);
        len += n;
        data[len] = '\0';
    }
    fclose (f);
    return data;
}

/* Opens the channel to target (TLS when asked). Returns 0, -1 after
   ef_actor_fail. */
static int
s_channel (s_puller_t *self)
{
    grpc_channel_credentials *creds;
    if (self->opts->tls || self->opts->tls_ca) {
        char *roots = NULL;
        if (self->opts->tls_ca && !(roots = s_read_file (self->opts->tls_ca))) {
            ef_actor_fail (self->actor, "cannot read tls_ca %s: %s",
                           self->opts->tls_ca, strerror (errno));
            return -1;
        }
        creds = grpc_ssl_credentials_create (roots, NULL, NULL, NULL);
        free (roots);
    }
    else
        creds = grpc_insecure_credentials_create ();
    grpc_arg args[4];
    memset (args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *) GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int) self->opts->max_message_bytes;
    /* Reconnect about as fast as the run retries, not after gRPC's own
       (slower) schedule. */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *) GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[1].value.integer = (int) self->opts->retry_base;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *) GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[2].value.integer = (int) self->opts->retry_cap;
    /* Without BDP probing the window stays small: the server is held
       close to what the pipeline has taken (see grpc_receiver.c). */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *) GRPC_ARG_HTTP2_BDP_PROBE;
    args[3].value.integer = self->opts->bdp_probe ? 1 : 0;
    grpc_channel_args channel_args = {4, args};
    self->channel =
        grpc_channel_create (self->opts->target, creds, &channel_args);
    grpc_channel_credentials_release (creds);
    if (!self->channel) {
        ef_actor_fail (self->actor, "cannot create a channel to %s",
                       self->opts->target);
        return -1;
    }
    return 0;
}

/* Prepares a run: lock, stale runs, position, job_run row. Returns 1,
   0 when another process holds the job, -1 with err. */
static int
s_begin_run (s_puller_t *self, const char *trigger, int64_t slot, char *err,
             size_t errlen)
{
    const char *schema = self->globals->schema;
    int64_t give_up = ef_clock_mono_us () + self->opts->lock_timeout * 1000;
    int locked;
    while (
        (locked = ef_job_try_lock (self->conn, schema, self->job, err, errlen))
            == 0
        && ef_clock_mono_us () < give_up
        && ef_backoff_sleep (100, ef_actor_stop_flag (self->actor)) == 0)
        ;
    if (locked <= 0) {
        if (locked == 0)
            snprintf (err, errlen,
                      "job %s is already running in another process "
                      "(its lock is held in the database)",
                      self->job);
        return locked;
    }
    self->locked = true;
    int stale =
        ef_job_abandon_stale (self->conn, schema, self->job, err, errlen);
    if (stale < 0)
        return -1;
    if (stale > 0)
        ef_warn ("job %s: %d run(s) left running by a stopped process marked "
                 "abandoned",
                 self->job, stale);
    if (self->opts->from_start)
        self->start_token = strdup ("");
    else
        self->start_token =
            ef_job_position (self->conn, schema, self->job, err, errlen);
    if (!self->start_token)
        return -1;
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, self->run_id);
    if (ef_run_start (self->conn, schema, self->run_id, self->job, trigger,
                      self->start_token, slot, err, errlen)
        != 0)
        return -1;
    self->run_recorded = true;
    return 1;
}

/* Starts a run: forgets the last one, records the new one and calls the
   server. Returns 1, 0 when another process holds the job, -1 with err
   (the lock is given back). */
static int
s_start_run (s_puller_t *self, const char *trigger, int64_t slot, char *err,
             size_t errlen)
{
    assert (!self->call && !self->pending);
    free (self->start_token);
    free (self->last_token);
    self->start_token = self->last_token = NULL;
    self->seq = self->messages = self->calls = 0;
    self->received = self->written = self->dead = 0;
    self->error[0] = '\0';
    self->run_recorded = false;
    self->finished = false;
    self->phase = S_SETTLING;
    int rc = s_begin_run (self, trigger, slot, err, errlen);
    if (rc <= 0) {
        if (self->locked) {
            ef_job_unlock (self->conn, self->globals->schema, self->job);
            self->locked = false;
        }
        self->finished = true;
        self->phase = S_IDLE;
        return rc;
    }
    self->stream_id = (uint64_t) ef_clock_wall_us ();
    self->backoff =
        ef_backoff_make (self->opts->retry_base, self->opts->retry_cap,
                         (int) self->opts->retries);
    self->started_us = ef_clock_mono_us ();
    self->next_beat_us = self->started_us + self->opts->heartbeat * 1000;
    s_publish (self);
    if (s_call_start (self, self->start_token) != 0) {
        snprintf (err, errlen, "%s", self->error);
        self->phase = S_SETTLING; /* ends the run as failed */
        return -1;
    }
    return 1;
}

/* The latest slot of cron in (after, now], -1 when none; *missed counts
   the slots in between (capped). */
static int64_t
s_latest_slot (const ef_cron_t *cron, int64_t after, int64_t now,
               int64_t *missed)
{
    int64_t latest = -1;
    *missed = 0;
    for (int64_t t = ef_cron_next (cron, after); t >= 0 && t <= now;
         t = ef_cron_next (cron, t)) {
        latest = t;
        if (++*missed >= 1000000)
            break;
    }
    return latest;
}

/* Sets the first slot to wait for, applying the misfire policy to slots
   missed while no process ran the job. Returns 0, -1 with err. */
static int
s_schedule_start (s_puller_t *self, char *err, size_t errlen)
{
    int64_t now = ef_clock_wall_us () / 1000000, last = -1, missed = 0;
    if (ef_job_last_slot (self->conn, self->globals->schema, self->job, &last,
                          err, errlen)
        != 0)
        return -1;
    int64_t latest =
        last >= 0 ? s_latest_slot (&self->cron, last, now, &missed) : -1;
    bool fire_once = strcmp (self->opts->misfire, "fire_once") == 0;
    if (latest >= 0 && fire_once) {
        ef_info ("job %s: %" PRId64 " slot(s) missed: running once now",
                 self->job, missed);
        self->next_fire = latest;
    }
    else {
        if (latest >= 0)
            ef_info ("job %s: %" PRId64 " slot(s) missed: skipped", self->job,
                     missed);
        self->next_fire = ef_cron_next (&self->cron, now);
    }
    return 0;
}

/* Runs the schedule between runs: a retried run, or a slot that is due
   (claimed in the database, so that one process runs it). */
static void
s_schedule_tick (s_puller_t *self)
{
    int64_t now = ef_clock_wall_us () / 1000000;
    char err[1024];
    if (!self->finished) {
        if (self->next_fire >= 0 && now >= self->next_fire) {
            ef_info ("job %s: slot %" PRId64 " skipped: the previous run is "
                     "still running",
                     self->job, self->next_fire);
            self->next_fire = ef_cron_next (&self->cron, now);
        }
        return;
    }
    int64_t slot = -1;
    if (self->rerun_at_us && ef_clock_mono_us () >= self->rerun_at_us)
        self->rerun_at_us = 0;
    else if (self->next_fire >= 0 && now >= self->next_fire) {
        slot = self->next_fire;
        self->next_fire = ef_cron_next (&self->cron, now);
        int claimed = ef_job_claim_slot (self->conn, self->globals->schema,
                                         self->job, slot, err, sizeof err);
        if (claimed <= 0) {
            if (claimed < 0)
                ef_warn ("job %s: %s", self->job, err);
            else
                ef_debug ("job %s: slot %" PRId64 " runs elsewhere", self->job,
                          slot);
            return;
        }
    }
    else
        return;
    int rc = s_start_run (self, "cron", slot, err, sizeof err);
    if (rc == 0)
        ef_info ("job %s: not started: %s", self->job, err);
    else if (rc < 0 && !self->run_recorded)
        ef_error ("job %s: cannot start a run: %s", self->job, err);
}

/* Connects to the database and the server and starts the run. Returns 0,
   -1 after ef_actor_fail. */
static int
s_init (ef_actor_t *actor)
{
    s_puller_t *self = calloc (1, sizeof *self);
    if (!self) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    ef_actor_set_state (actor, self);
    self->actor = actor;
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    self->chunks_port = ef_actor_port (actor, "chunks");
    self->acks_port = ef_actor_port (actor, "acks");
    assert (self->chunks_port >= 0 && self->acks_port >= 0);
    self->phase = S_IDLE;
    if (!self->opts->target || !*self->opts->target)
        return 0; /* nothing to pull: serve uploads only */
    if (ef_actor_instances (actor) > 1) {
        ef_actor_fail (actor, "runs one instance per job");
        return -1;
    }
    self->job = self->opts->job && *self->opts->job ? self->opts->job
                                                    : self->opts->source;
    if (!self->job || !*self->job) {
        ef_actor_fail (actor, "needs a job name or a source");
        return -1;
    }
    const char *trigger = self->opts->trigger ? self->opts->trigger : "";
    if (strcmp (trigger, "manual") != 0 && strcmp (trigger, "cron") != 0) {
        ef_actor_fail (actor, "trigger '%s': must be manual or cron", trigger);
        return -1;
    }
    const char *misfire = self->opts->misfire ? self->opts->misfire : "";
    if (strcmp (misfire, "skip") != 0 && strcmp (misfire, "fire_once") != 0) {
        ef_actor_fail (actor, "misfire '%s': must be skip or fire_once",
                       misfire);
        return -1;
    }
    /* Settings first: a bad one must not leave a run behind. */
    char err[1024] = "";
    grpc_init ();
    self->grpc_up = true;
    self->cq = grpc_completion_queue_create_for_next (NULL);
    grpc_byte_buffer *probe = s_request (self, "", err, sizeof err);
    if (!probe) {
        ef_actor_fail (actor, "%s", *err ? err : "out of memory");
        return -1;
    }
    grpc_byte_buffer_destroy (probe);
    if (s_channel (self) != 0)
        return -1;
    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    if (self->opts->schedule && *self->opts->schedule) {
        if (ef_cron_parse (self->opts->schedule, &self->cron, err, sizeof err)
            != 0) {
            ef_actor_fail (actor, "schedule of job %s: %s", self->job, err);
            return -1;
        }
        self->scheduled = true;
        self->finished = true; /* no run yet */
        self->run_backoff = ef_backoff_make (self->opts->run_retry_base,
                                             self->opts->run_retry_cap,
                                             (int) self->opts->run_retries);
        if (s_schedule_start (self, err, sizeof err) != 0) {
            ef_actor_fail (actor, "%s", err);
            return -1;
        }
        ef_info ("job %s: scheduled '%s' (UTC), misfire %s", self->job,
                 self->opts->schedule, self->opts->misfire);
        ef_actor_wake_in (actor, 0);
        return 0;
    }
    const char *how = self->opts->trigger ? self->opts->trigger : "manual";
    if (s_start_run (self, how, -1, err, sizeof err) <= 0) {
        ef_actor_fail (actor, "%s", err);
        return -1;
    }
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* Takes an Ack: counts the rows settled for this run. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_puller_t *self = ef_actor_state (actor);
    zframe_t *frame = port == self->acks_port ? zmsg_first (*msg_p) : NULL;
    Embedflow__V1__Ack *ack =
        frame ? embedflow__v1__ack__unpack (NULL, zframe_size (frame),
                                            zframe_data (frame))
              : NULL;
    zmsg_destroy (msg_p);
    if (!ack) {
        ef_warn ("dropping a message on pull-acks that is not an Ack");
        return 0;
    }
    for (size_t i = 0; i < ack->n_tallies; i++) {
        const Embedflow__V1__StreamTally *t = ack->tallies[i];
        if (t->stream_id != self->stream_id || self->stream_id == 0) {
            ef_debug ("ack for unknown pull stream %" PRIu64 " ignored",
                      t->stream_id);
            continue;
        }
        self->written += t->written;
        self->dead += t->dead_lettered;
    }
    embedflow__v1__ack__free_unpacked (ack, NULL);
    s_publish (self);
    s_check_settled (self);
    return 0;
}

/* Runs the completion queue, retries, heartbeats and timeouts. */
static int
s_tick (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    if (!self->cq)
        return 0;
    s_flush (self);
    int64_t wait = self->busy ? 0 : self->pending ? 1 : S_IDLE_WAIT_MS;
    self->busy = s_poll (self, wait) > 0;
    s_flush (self);
    int64_t now = ef_clock_mono_us ();
    s_call_t *c = self->call;
    if (self->phase == S_CALLING && c && !c->idle_expired
        && self->opts->idle_timeout > 0 && !self->pending
        && now - self->last_msg_us > self->opts->idle_timeout * 1000) {
        c->idle_expired = true;
        grpc_call_cancel (c->call, NULL);
    }
    if (self->phase == S_WAITING && now >= self->retry_at_us) {
        const char *token =
            self->last_token ? self->last_token : self->start_token;
        if (s_call_start (self, token) != 0)
            self->phase = S_SETTLING;
    }
    if (!self->finished && now >= self->next_beat_us) {
        char err[512];
        if (ef_run_update (self->conn, self->globals->schema, self->run_id,
                           NULL, self->received, self->written, self->dead,
                           NULL, err, sizeof err)
            != 0) {
            ef_warn ("job %s: heartbeat not stored: %s", self->job, err);
            if (PQstatus (self->conn) != CONNECTION_OK)
                PQreset (self->conn);
        }
        self->next_beat_us = now + self->opts->heartbeat * 1000;
    }
    s_check_settled (self);
    if (self->scheduled && !self->draining && !ef_actor_stopping (actor))
        s_schedule_tick (self);
    if (ef_actor_stopping (actor) && !self->finished) {
        /* hard stop: what is in flight will not settle */
        if (!self->error[0])
            snprintf (self->error, sizeof self->error,
                      "stopped at once before the rows settled");
        if (self->call)
            grpc_call_cancel (self->call->call, NULL);
        zmsg_destroy (&self->pending);
        if (!self->call)
            s_finish (self);
    }
    bool quiet = self->finished && !self->calls_alive;
    /* between scheduled runs, look at the clock a few times a second */
    ef_actor_wake_in (actor, !quiet ? 0 : self->scheduled ? 100 : -1);
    return 0;
}

/* Graceful stop: cancel the call, let forwarded rows settle. */
static void
s_drain (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    bool idle = !self->cq || self->finished;
    self->draining = true; /* no scheduled run starts from now on */
    if (idle) {
        ef_actor_drained (actor);
        return;
    }
    if (self->call)
        grpc_call_cancel (self->call->call, NULL); /* ends in s_on_call_end */
    else if (self->phase == S_WAITING) {
        snprintf (self->error, sizeof self->error,
                  "stopped before the stream ended");
        self->phase = S_SETTLING;
    }
    ef_actor_wake_in (actor, 0);
}

/* Cancels what is left and frees everything. */
static void
s_destroy (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    if (!self)
        return;
    if (self->call)
        grpc_call_cancel (self->call->call, NULL);
    while (self->calls_alive > 0)
        s_poll (self, 100);
    if (self->run_recorded && !self->finished) {
        if (!self->error[0])
            snprintf (self->error, sizeof self->error, "stopped");
        s_finish (self);
    }
    zmsg_destroy (&self->pending);
    if (self->channel)
        grpc_channel_destroy (self->channel);
    if (self->cq) {
        grpc_completion_queue_shutdown (self->cq);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next (
                self->cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
            if (ev.type == GRPC_QUEUE_SHUTDOWN)
                break;
        }
        grpc_completion_queue_destroy (self->cq);
    }
    if (self->grpc_up)
        grpc_shutdown ();
    PQfinish (self->conn);
    free (self->start_token);
    free (self->last_token);
    free (self);
    ef_actor_set_state (actor, NULL);
}

int
ef_puller_check (ef_config_t *config, char *err, size_t errlen)
{
    const s_options_t *o = ef_config_actor_options (config, "grpc-puller");
    if (!o || !o->schedule || !*o->schedule)
        return 0;
    const char *job = o->job && *o->job ? o->job : o->source ? o->source : "";
    char why[256];
    ef_cron_t cron;
    if (!o->target || !*o->target) {
        snprintf (err, errlen,
                  "actors.grpc-puller.schedule: job %s has no target", job);
        return -1;
    }
    if (ef_cron_parse (o->schedule, &cron, why, sizeof why) != 0) {
        snprintf (err, errlen, "actors.grpc-puller.schedule: job %s: %s", job,
                  why);
        return -1;
    }
    if (!o->misfire
        || (strcmp (o->misfire, "skip") != 0
            && strcmp (o->misfire, "fire_once") != 0)) {
        snprintf (err, errlen,
                  "actors.grpc-puller.misfire: job %s: '%s' is not skip or "
                  "fire_once",
                  job, o->misfire ? o->misfire : "");
        return -1;
    }
    return 0;
}

static const ef_port_def_t s_ports[] = {
    {"chunks", EF_PORT_OUT, "chunks", false, 8},
    {"acks", EF_PORT_IN, "pull-acks", false, 10000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_grpc_puller_actor = {
    .name = "grpc-puller",
    .summary = "gRPC client of GetEmbeddings: pulls a job's stream, resuming "
               "from its committed checkpoint",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .ports = s_ports,
    .flags = EF_ACTOR_SOURCE,
    .default_instances = 1,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .drain = s_drain,
    .destroy = s_destroy,
};
