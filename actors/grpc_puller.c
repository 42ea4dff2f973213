/*  grpc_puller.c — the pull source: a gRPC client of GetEmbeddings.

    The puller runs the jobs of the config's `jobs:` section
    (jobs/job.h) when asked: a RunRequest on link "runs" (from the
    scheduler) names a job. Jobs run side by side, each at most once at a
    time in this process; the job's advisory lock in the database keeps
    two processes from running it at once. A run marks runs of the job
    left 'running' by a dead process 'abandoned', reads the job's
    committed position (postgres/checkpoint.h), records itself in
    job_run and calls GetEmbeddings with that resume token. It forwards
    every chunk to the splitter exactly as grpc-receiver does, as
    [ChunkHeader][original bytes] on "chunks", with origin 1, its own
    sequence number and the chunk's resume token in the header. Writers
    and the DLQ record what they settle of each chunk in their own
    transactions and ack it on "pull-acks". When a run is over, its
    status, counts and position go to job_run and a RunEnded to the
    scheduler on "run-ends".

    Backpressure: one RECV_MESSAGE per call at a time, and the next only
    after the previous chunk went onto the link (ef_actor_try_send): a
    full pipeline stops reading, and HTTP/2 flow control stops the server.

    Failures: a broken stream (server gone, idle timeout, UNAVAILABLE, ...)
    is resumed with backoff up to the job's `retries`, after the last
    chunk forwarded. A message that is not an EmbeddingChunk fails the run
    at once (the server is wrong; retrying would get the same bytes); the
    position stays at the last good chunk. A run ends once the stream is
    over and every forwarded row is written or dead-lettered.

    Waiting: a pump thread (grpc/cqpump.h) waits in gRPC's completion
    queue and hands completions to the actor's thread through a
    descriptor it watches, so the database work of a run (lock, job_run,
    heartbeats) never stops gRPC's I/O, and between runs, or while a
    stream is quiet, the actor sleeps until a completion, an ack, a
    request or the next of its runs' deadlines (idle timeout, retry,
    heartbeat; a lock held elsewhere is tried every S_LOCK_POLL_MS).

    Graceful stop cancels the calls, waits for the rows already forwarded
    to settle and ends the runs 'failed' ("stopped"): the next run
    resumes from the checkpoint. Without jobs the actor is idle.
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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/grpc_puller.h"
#include "embedflow/actor.h"
#include "embedflow/budget.h"
#include "embedflow/linkstate.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "pipeline/pipeline.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/checkpoint.h"
#include "postgres/jobrun.h"
#include "rows/chunkwire.h"
#include "grpc/cqpump.h"
#include "grpc/grpcmsg.h"
#include "jobs/job.h"
#include "jobs/jobmetrics.h"
#include "rows/linkwire.h"
#include "postgres/pg.h"
#include "postgres/schema.h"
#include "rows/streamkey.h"
#include "rows/uuid7.h"

/* The actor's name: sources stamp it in every chunk (reply_to), and
   acks come back on the link whose `to` names it. */
static const char s_name[] = "grpc-puller";

#define S_METHOD         "/embedflow.v1.EmbeddingService/GetEmbeddings"
#define S_RETRY_WAIT_MS  1   /* retry of a chunk waiting for the link */
#define S_BUDGET_WAIT_MS 5   /* look again at a budget others free */
#define S_LOCK_POLL_MS   100 /* between tries of a job's lock */

/* --- options ------------------------------------------------------------ */

typedef struct {
    int64_t heartbeat;    /* ms between job_run heartbeats */
    int64_t lock_timeout; /* ms to wait for a job's lock */
} s_options_t;

static const ef_option_t s_options[] = {
    {"heartbeat", EF_OPT_MS, "2s", offsetof (s_options_t, heartbeat), 10,
     3600000, "how often a run's heartbeat and counts are stored"},
    {"lock_timeout", EF_OPT_MS, "2s", offsetof (s_options_t, lock_timeout), 0,
     3600000,
     "how long a run waits for its job's lock (a killed process's session "
     "takes a moment to go)"},
    EF_OPTION_END};

/* --- state --------------------------------------------------------------- */

typedef enum {
    S_IDLE,     /* no run, or the run is over */
    S_LOCKING,  /* waiting for the job's lock */
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
typedef struct s_job s_job_t;
typedef struct s_puller s_puller_t;

typedef struct {
    s_tag_kind_t kind; /* which batch */
    s_call_t *call;    /* whose */
} s_tag_t;

/* One GetEmbeddings call (one per attempt). */
struct s_call {
    s_job_t *job;                 /* whose run */
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

/* One job of the config and its current run. */
struct s_job {
    s_puller_t *owner;               /* the actor's state */
    const char *name;                /* borrowed from the config */
    const ef_job_t *opts;            /* borrowed from the config */
    const char *source;              /* RequestParams.source */
    const ef_job_metrics_t *metrics; /* the job's series */
    grpc_channel *channel;           /* to opts->target, opened on first run */
    bool active;                     /* a run was asked for and is not over */
    s_phase_t phase;                 /* where the run is */
    char trigger[16];                /* job_run.trigger: cron or manual */
    int64_t slot;                    /* cron slot it runs for, -1 */
    int64_t lock_until_us;           /* S_LOCKING gives up at */
    s_call_t *call;                  /* the current attempt, or NULL */
    char run_id[37];                 /* this run's job_run.id */
    uint64_t stream_id;              /* what acks name */
    uint8_t key[EF_STREAM_KEY_LEN];  /* stream_key: what acks must carry */
    char *start_token;               /* where the run started */
    char *last_token;                /* token of the last chunk forwarded */
    uint64_t seq;                    /* next chunk sequence of the run */
    uint64_t messages;               /* messages read in the run */
    uint64_t received;               /* rows forwarded (and pending) */
    uint64_t written;                /* rows acked as committed */
    uint64_t dead;                   /* rows acked as dead-lettered */
    int64_t charged;                 /* budget its unsettled rows hold */
    int64_t reserved;                /* budget its posted read holds */
    bool budget_wait;                /* a read waits for the budget */
    int64_t last_ack_us;             /* monotonic time of the last ack */
    uint64_t churn_start;            /* link churn when the run began */
    uint64_t calls;                  /* attempts made */
    zmsg_t *pending;                 /* chunk waiting for room on the link */
    ef_backoff_t backoff;            /* between attempts */
    int64_t retry_at_us;             /* monotonic time of the next attempt */
    int64_t last_msg_us;             /* monotonic time of the last message */
    int64_t next_beat_us;            /* monotonic time of the next heartbeat */
    int64_t started_us;              /* monotonic time the run began */
    bool run_recorded;               /* its job_run row exists */
    bool locked;                     /* our session holds the job's lock */
    bool stopping;                   /* stop asked: end the run now */
    const char *stop_why;            /* its error then, static text */
    char error[512];                 /* why the run failed, "" while fine */
};

struct s_puller {
    ef_actor_t *actor;           /* the actor instance */
    ef_budget_t *budget;         /* the process's bytes in flight */
    const s_options_t *opts;     /* its options */
    const ef_globals_t *globals; /* schema, database */
    int chunks_port;             /* OUT: chunks */
    int acks_port;               /* IN: pull-acks */
    int runs_port;               /* IN: runs */
    int ends_port;               /* OUT: run-ends */
    bool grpc_up;                /* grpc_init was called */
    grpc_completion_queue *cq;   /* every call's */
    ef_cq_pump_t *pump;          /* waits on cq, hands events over */
    PGconn *conn;                /* job locks, job_run, empty chunks */
    s_job_t *jobs;               /* one per configured job */
    size_t n_jobs;               /* entries of jobs */
    int calls_alive;             /* calls not yet freed */
    bool draining;               /* stop asked: no run starts */
    bool drained;                /* ef_actor_drained was called */
};

/* --- what a program running the pipeline learns -------------------------- */

int
ef_pull_report_read (const zmsg_t *msg, ef_pull_report_t *report)
{
    zframe_t *frame = zmsg_first ((zmsg_t *) msg);
    Embedflow__V1__RunEnded *e =
        frame && zmsg_size ((zmsg_t *) msg) == 1
            ? embedflow__v1__run_ended__unpack (NULL, zframe_size (frame),
                                                zframe_data (frame))
            : NULL;
    if (!e)
        return -1;
    memset (report, 0, sizeof *report);
    snprintf (report->run_id, sizeof report->run_id, "%s", e->run_id);
    snprintf (report->job, sizeof report->job, "%s", e->job);
    snprintf (report->status, sizeof report->status, "%s",
              strcmp (e->status, "completed") == 0 ? e->status : "failed");
    snprintf (report->start_token, sizeof report->start_token, "%s",
              e->start_token);
    snprintf (report->position, sizeof report->position, "%s", e->position);
    snprintf (report->error, sizeof report->error, "%s", e->error);
    report->received = e->received;
    report->written = e->written;
    report->dead = e->dead_lettered;
    report->calls = e->calls;
    report->seconds = e->seconds;
    embedflow__v1__run_ended__free_unpacked (e, NULL);
    return 0;
}

void
ef_pull_progress (const char *job, uint64_t *received, uint64_t *settled)
{
    const ef_job_metrics_t *m = ef_job_metrics (job);
    *received = ef_counter_value (m->received);
    *settled =
        ef_counter_value (m->written) + ef_counter_value (m->dead_lettered);
}

/* --- calls --------------------------------------------------------------- */

/* Frees a call whose batches have all completed. */
static void
s_call_free (s_call_t *c)
{
    s_job_t *job = c->job;
    if (job->call == c)
        job->call = NULL;
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
    job->owner->calls_alive--;
}

/* Builds the job's RequestParams for token into a byte buffer; NULL when
   out of memory or the filter is malformed (err says why). */
static grpc_byte_buffer *
s_request (const s_job_t *job, const char *token, char *err, size_t errlen)
{
    Embedflow__V1__RequestParams p = EMBEDFLOW__V1__REQUEST_PARAMS__INIT;
    p.source = (char *) job->source;
    p.resume_token = (char *) (token ? token : "");
    p.chunk_size = (uint32_t) job->opts->chunk_size;
    Embedflow__V1__RequestParams__FilterEntry entries[EF_JOB_MAX_FILTERS];
    Embedflow__V1__RequestParams__FilterEntry *ptrs[EF_JOB_MAX_FILTERS];
    char *keys[EF_JOB_MAX_FILTERS], *values[EF_JOB_MAX_FILTERS];
    char *copy = job->opts->filter ? strdup (job->opts->filter) : NULL;
    if (job->opts->filter && !copy) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    int n = ef_job_filter_split (copy, keys, values, err, errlen);
    if (n < 0) {
        free (copy);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        embedflow__v1__request_params__filter_entry__init (&entries[i]);
        entries[i].key = keys[i];
        entries[i].value = values[i];
        ptrs[i] = &entries[i];
    }
    p.n_filter = (size_t) n;
    p.filter = n ? ptrs : NULL;
    size_t size = embedflow__v1__request_params__get_packed_size (&p);
    grpc_slice slice = grpc_slice_malloc (size);
    embedflow__v1__request_params__pack (&p, GRPC_SLICE_START_PTR (slice));
    free (copy);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create (&slice, 1);
    grpc_slice_unref (slice);
    return bb;
}

/* Posts the next RECV_MESSAGE of the job's current call. */
static void
s_read (s_job_t *job)
{
    s_call_t *c = job->call;
    if (!c || c->reading || c->eos || c->broken || job->pending || c->fatal[0]
        || (c->has_status && c->status != GRPC_STATUS_OK))
        return;
    /* as the receiver's reads: each reserves a whole message of the
       process's budget, and none is posted while it has no room */
    int64_t reserve = job->opts->max_message_bytes;
    if (!ef_budget_fits (job->owner->budget, reserve)) {
        if (!job->budget_wait)
            ef_budget_count_wait (job->owner->budget);
        job->budget_wait = true;
        return;
    }
    job->budget_wait = false;
    grpc_op op;
    memset (&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    grpc_call_error rc =
        grpc_call_start_batch (c->call, &op, 1, &c->recv_tag, NULL);
    if (rc != GRPC_CALL_OK) {
        ef_warn ("job %s: cannot read: %s", job->name,
                 grpc_call_error_to_string (rc));
        grpc_call_cancel (c->call, NULL);
        return;
    }
    c->reading = true;
    job->reserved = reserve;
    ef_budget_charge (job->owner->budget, reserve);
    c->refs++;
}

/* Opens a GetEmbeddings call resuming after token. Returns 0, -1 with
   job->error set when it cannot even start. */
static int
s_call_start (s_job_t *job, const char *token)
{
    s_puller_t *self = job->owner;
    char err[256] = "";
    s_call_t *c = calloc (1, sizeof *c);
    if (!c) {
        snprintf (job->error, sizeof job->error, "out of memory");
        return -1;
    }
    c->job = job;
    c->start_tag = (s_tag_t){S_TAG_START, c};
    c->recv_tag = (s_tag_t){S_TAG_RECV, c};
    c->status_tag = (s_tag_t){S_TAG_STATUS, c};
    c->details = grpc_empty_slice ();
    grpc_metadata_array_init (&c->initial);
    grpc_metadata_array_init (&c->trailing);
    self->calls_alive++;
    c->request = s_request (job, token, err, sizeof err);
    if (!c->request) {
        snprintf (job->error, sizeof job->error, "%s",
                  *err ? err : "out of memory");
        s_call_free (c);
        return -1;
    }
    gpr_timespec deadline = job->opts->deadline > 0
                                ? ef_grpc_deadline_ms (job->opts->deadline)
                                : gpr_inf_future (GPR_CLOCK_MONOTONIC);
    grpc_slice method = grpc_slice_from_static_string (S_METHOD);
    c->call =
        grpc_channel_create_call (job->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                  self->cq, method, NULL, deadline, NULL);
    grpc_op ops[4];
    memset (ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (job->opts->auth_token) {
        char bearer[1024];
        snprintf (bearer, sizeof bearer, "Bearer %s", job->opts->auth_token);
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
        snprintf (job->error, sizeof job->error,
                  "cannot call GetEmbeddings: %s",
                  grpc_call_error_to_string (rc));
        if (c->refs == 0)
            s_call_free (c);
        return -1;
    }
    job->call = c;
    job->calls++;
    job->phase = S_CALLING;
    job->last_msg_us = ef_clock_mono_us ();
    ef_info_kv (EF_KV (EF_KV_STR ("job_name", job->name),
                       EF_KV_STR ("job_id", job->run_id),
                       EF_KV_STR ("target", job->opts->target),
                       EF_KV_STR ("source", job->source)),
                "job %s run %s: GetEmbeddings on %s, source '%s', %s%s%s",
                job->name, job->run_id, job->opts->target, job->source,
                token && *token ? "resuming after token '" : "from the start",
                token && *token ? token : "", token && *token ? "'" : "");
    s_read (job);
    return 0;
}

/* --- the run ------------------------------------------------------------- */

/* Tells the scheduler how a requested run ended, and reports the same
   RunEnded to the program running the pipeline (ef_actor_report). The
   scheduler may be gone (stopping, or another process that is down): a
   full link drops the news rather than stall the pulls. */
static void
s_send_ended (s_job_t *job, const char *status, const ef_pull_report_t *rep)
{
    Embedflow__V1__RunEnded e = EMBEDFLOW__V1__RUN_ENDED__INIT;
    e.job = (char *) job->name;
    e.run_id = job->run_recorded ? job->run_id : "";
    e.status = (char *) status;
    e.error = job->error;
    e.received = job->received;
    e.written = job->written;
    e.dead_lettered = job->dead;
    e.calls = rep->calls;
    e.start_token = (char *) rep->start_token;
    e.position = (char *) rep->position;
    e.seconds = rep->seconds;
    size_t size = embedflow__v1__run_ended__get_packed_size (&e);
    zmsg_t *msgs[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        zframe_t *frame = zframe_new (NULL, size);
        msgs[i] = zmsg_new ();
        if (!frame || !msgs[i]) {
            zframe_destroy (&frame);
            zmsg_destroy (&msgs[0]);
            zmsg_destroy (&msgs[1]);
            ef_warn ("job %s: out of memory for the end of the run", job->name);
            return;
        }
        embedflow__v1__run_ended__pack (&e, zframe_data (frame));
        zmsg_append (msgs[i], &frame);
    }
    if (ef_actor_try_send (job->owner->actor, job->owner->ends_port, 0,
                           &msgs[0])
        != 1) {
        ef_debug ("job %s: the scheduler did not take the end of the run",
                  job->name);
        zmsg_destroy (&msgs[0]);
    }
    ef_actor_report (job->owner->actor, &msgs[1]);
}

/* Records the run's end, tells the scheduler and reports it to the
   program running the pipeline (ef_actor_report), and frees the
   job for its next run. status: completed or failed by job->error, or
   "busy" for a run that never began because the job runs elsewhere. */
static void
s_finish (s_job_t *job, const char *status)
{
    s_puller_t *self = job->owner;
    if (!job->active)
        return;
    if (!status)
        status = job->error[0] ? "failed" : "completed";
    const char *schema = self->globals->schema;
    char err[512];
    ef_pull_report_t rep;
    memset (&rep, 0, sizeof rep);
    if (job->run_recorded) {
        int rc = -1;
        for (int attempt = 0; attempt < 3 && rc != 0; attempt++) {
            if (attempt > 0 && PQstatus (self->conn) != CONNECTION_OK)
                PQreset (self->conn);
            rc = ef_run_update (self->conn, schema, job->run_id, status,
                                job->received, job->written, job->dead,
                                job->error[0] ? job->error : NULL, err,
                                sizeof err);
        }
        if (rc != 0)
            ef_error ("job %s run %s: cannot record the end of the run: %s",
                      job->name, job->run_id, err);
        char *pos =
            ef_run_position (self->conn, schema, job->run_id, err, sizeof err);
        snprintf (rep.position, sizeof rep.position, "%s", pos ? pos : "?");
        free (pos);
    }
    snprintf (rep.run_id, sizeof rep.run_id, "%s",
              job->run_recorded ? job->run_id : "");
    snprintf (rep.job, sizeof rep.job, "%s", job->name);
    snprintf (rep.status, sizeof rep.status, "%s",
              strcmp (status, "completed") == 0 ? status : "failed");
    snprintf (rep.start_token, sizeof rep.start_token, "%s",
              job->start_token ? job->start_token : "");
    snprintf (rep.error, sizeof rep.error, "%s", job->error);
    rep.received = job->received;
    rep.written = job->written;
    rep.dead = job->dead;
    rep.calls = job->calls;
    rep.seconds = (double) (ef_clock_mono_us () - job->started_us) / 1e6;
    if (!job->run_recorded)
        ef_info ("job %s: not run: %s", job->name, job->error);
    else if (job->error[0])
        ef_error_kv (EF_KV (EF_KV_STR ("job_name", job->name),
                            EF_KV_STR ("job_id", job->run_id),
                            EF_KV_F64 ("seconds", rep.seconds),
                            EF_KV_U64 ("rows_received", job->received),
                            EF_KV_U64 ("rows_written", job->written),
                            EF_KV_U64 ("rows_dead_lettered", job->dead),
                            EF_KV_STR ("position", rep.position)),
                     "job %s run %s failed after %" PRIu64 " rows (%" PRIu64
                     " written, %" PRIu64 " dead-lettered): %s; position '%s'",
                     job->name, job->run_id, job->received, job->written,
                     job->dead, job->error, rep.position);
    else
        ef_info_kv (EF_KV (EF_KV_STR ("job_name", job->name),
                           EF_KV_STR ("job_id", job->run_id),
                           EF_KV_F64 ("seconds", rep.seconds),
                           EF_KV_U64 ("rows_received", job->received),
                           EF_KV_U64 ("rows_written", job->written),
                           EF_KV_U64 ("rows_dead_lettered", job->dead),
                           EF_KV_STR ("position", rep.position)),
                    "job %s run %s completed in %.1f s: %" PRIu64
                    " rows received, %" PRIu64 " written, %" PRIu64
                    " dead-lettered; position '%s'",
                    job->name, job->run_id, rep.seconds, job->received,
                    job->written, job->dead, rep.position);
    if (job->run_recorded)
        ef_counter_add (strcmp (status, "completed") == 0
                            ? job->metrics->runs_completed
                            : job->metrics->runs_failed,
                        1);
    s_send_ended (job, status, &rep);
    if (job->locked) {
        ef_job_unlock (self->conn, schema, job->name);
        job->locked = false;
    }
    job->active = false;
    job->phase = S_IDLE;
    /* rows of a failed run may still be in the pipeline; they are bounded
       by the links' high-water marks */
    ef_budget_release (self->budget, job->charged);
    job->charged = 0;
}

/* Ends the run once the stream is over and every row is settled. */
static void
s_check_settled (s_job_t *job)
{
    if (!job->active || job->phase != S_SETTLING || job->pending || job->call)
        return;
    if (job->written + job->dead < job->received)
        return;
    s_finish (job, NULL);
}

static void s_call_maybe_end (s_call_t *c);

/* Tries to hand the job's pending chunk to the link; reads on when it
   went. */
static void
s_flush (s_job_t *job)
{
    if (!job->pending)
        return;
    int rc = ef_actor_try_send (job->owner->actor, job->owner->chunks_port, 0,
                                &job->pending);
    if (rc == 0)
        return;
    if (rc < 0) {
        /* Its rows will never be acked: count them out of the run. */
        zmsg_destroy (&job->pending);
        if (!job->error[0])
            snprintf (job->error, sizeof job->error,
                      "cannot forward a chunk to the splitter");
        s_call_t *c = job->call;
        if (c) {
            c->broken = true; /* so that it ends, nothing more is read */
            grpc_call_cancel (c->call, NULL);
            s_call_maybe_end (c);
        }
        return;
    }
    s_read (job);
}

/* Takes one message off the wire: parse, stamp, forward. */
static void
s_on_message (s_call_t *c, grpc_byte_buffer *buf)
{
    s_job_t *job = c->job;
    job->messages++;
    job->last_msg_us = ef_clock_mono_us ();
    zframe_t *body = ef_grpc_message_frame (buf);
    grpc_byte_buffer_destroy (buf);
    /* walked, not decoded: the splitter decodes one item at a time */
    ef_chunk_shape_t shape;
    char why[160] = "no message";
    if (!body
        || ef_chunk_scan (zframe_data (body), zframe_size (body), &shape, why,
                          sizeof why)
               != 0) {
        snprintf (c->fatal, sizeof c->fatal,
                  "message %" PRIu64 " from %s (%zu bytes, after chunk %" PRIu64
                  " of the run) is not a valid EmbeddingChunk: %s",
                  job->messages, job->opts->target,
                  body ? zframe_size (body) : 0, job->seq, why);
        zframe_destroy (&body);
        grpc_call_cancel (c->call, NULL);
        return;
    }
    ef_backoff_reset (&job->backoff);
    const char *token_bytes = (const char *) shape.resume_token.data;
    size_t token_len = shape.resume_token.len;
    if (!ef_text_valid (token_bytes ? token_bytes : "", token_len)) {
        snprintf (c->fatal, sizeof c->fatal,
                  "message %" PRIu64 " from %s: resume_token is not valid "
                  "UTF-8 or holds a NUL byte",
                  job->messages, job->opts->target);
        zframe_destroy (&body);
        grpc_call_cancel (c->call, NULL);
        return;
    }
    char *token = strndup (token_bytes ? token_bytes : "", token_len);
    size_t rows = shape.items;
    size_t body_size = zframe_size (body);
    if (!token || rows > UINT32_MAX) {
        snprintf (c->fatal, sizeof c->fatal, "%s",
                  token ? "too many items in one chunk" : "out of memory");
        free (token);
        zframe_destroy (&body);
        grpc_call_cancel (c->call, NULL);
        return;
    }
    uint64_t seq = job->seq++;
    if (rows == 0) {
        /* Nothing to write, nobody to ack it: complete it here. */
        char err[256];
        zframe_destroy (&body);
        if (ef_checkpoint_empty_chunk (job->owner->conn,
                                       job->owner->globals->schema, job->run_id,
                                       seq, token, err, sizeof err)
            != 0) {
            snprintf (c->fatal, sizeof c->fatal, "%s", err);
            free (token);
            grpc_call_cancel (c->call, NULL);
            return;
        }
        free (job->last_token);
        job->last_token = token;
        s_read (job);
        return;
    }
    Embedflow__V1__ChunkHeader header = EMBEDFLOW__V1__CHUNK_HEADER__INIT;
    header.stream_id = job->stream_id;
    header.stream_key = ef_stream_key_field (job->key);
    header.job_id = job->run_id;
    header.seq = seq;
    header.source = (char *) job->source;
    header.rows = (uint32_t) rows;
    header.received_us = ef_clock_wall_us ();
    header.resume_token = token;
    header.reply_to = (char *) s_name; /* acks come back here */
    header.checkpoint = true;
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
    free (job->last_token);
    job->last_token = token;
    int64_t charge = (int64_t) (body_size + shape.decoded_bytes);
    job->charged += charge;
    ef_budget_charge (job->owner->budget, charge);
    job->received += rows;
    ef_counter_add (job->metrics->received, rows);
    job->pending = msg;
    s_flush (job);
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

/* The job's current call is over: decide what comes next. */
static void
s_on_call_end (s_job_t *job, s_call_t *c)
{
    char why[400];
    snprintf (why, sizeof why, "GetEmbeddings ended %s: %.*s",
              ef_grpc_status_name (c->status),
              (int) GRPC_SLICE_LENGTH (c->details),
              (const char *) GRPC_SLICE_START_PTR (c->details));
    if (c->idle_expired)
        snprintf (why, sizeof why,
                  "no message from %.200s for %" PRId64 " ms (idle_timeout)",
                  job->opts->target, job->opts->idle_timeout);
    if (c->fatal[0]) {
        snprintf (job->error, sizeof job->error, "%s", c->fatal);
        job->phase = S_SETTLING;
        return;
    }
    if (job->owner->draining || job->stopping) {
        if (!(c->status == GRPC_STATUS_OK && c->eos))
            snprintf (job->error, sizeof job->error, "%s",
                      job->stopping ? job->stop_why
                                    : "stopped before the stream ended");
        job->phase = S_SETTLING;
        return;
    }
    if (c->status == GRPC_STATUS_OK && c->eos) {
        job->phase = S_SETTLING;
        return;
    }
    int64_t delay = s_retryable (c->status) || c->idle_expired
                        ? ef_backoff_next (&job->backoff)
                        : -1;
    if (delay < 0) {
        snprintf (job->error, sizeof job->error, "%s%s", why,
                  s_retryable (c->status) ? " (retries exhausted)" : "");
        job->phase = S_SETTLING;
        return;
    }
    ef_warn ("job %s: %s; resuming in %" PRId64 " ms (retry %d of %" PRId64 ")",
             job->name, why, delay, job->backoff.attempt, job->opts->retries);
    job->phase = S_WAITING;
    job->retry_at_us = ef_clock_mono_us () + delay * 1000;
}

/* Ends the call when nothing of it is in flight and the stream is over
   (a status OK arrives before the last messages are read: read on). */
static void
s_call_maybe_end (s_call_t *c)
{
    s_job_t *job = c->job;
    if (c->refs > 0 || !c->has_status)
        return;
    if (c->status == GRPC_STATUS_OK && !c->eos && !c->broken && !c->fatal[0]
        && !job->owner->draining && !job->stopping && job->call == c) {
        if (job->pending)
            return; /* s_flush reads on */
        s_read (job);
        if (c->refs > 0 || job->budget_wait)
            return; /* the tick reads on once the budget has room */
    }
    bool current = job->call == c;
    if (current) {
        job->call = NULL;
        s_on_call_end (job, c);
    }
    s_call_free (c);
}

/* Routes one completion. */
static void
s_dispatch (grpc_event *ev)
{
    s_tag_t *tag = (s_tag_t *) ev->tag;
    s_call_t *c = tag->call;
    switch (tag->kind) {
    case S_TAG_START:
        break;
    case S_TAG_RECV: {
        c->reading = false;
        ef_budget_release (c->job->owner->budget, c->job->reserved);
        c->job->reserved = 0;
        grpc_byte_buffer *buf = c->recv_buf;
        c->recv_buf = NULL;
        if (!ev->success)
            c->broken = true;
        else if (!buf)
            c->eos = true; /* the server ended the stream */
        if (buf && ev->success && !c->job->owner->draining && !c->job->stopping
            && !c->fatal[0])
            s_on_message (c, buf);
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
    s_call_maybe_end (c);
}

/* Handles the completions the pump holds until none is left (or 256),
   waiting at most wait_ms for the first. Returns how many. */
static int
s_poll (s_puller_t *self, int64_t wait_ms)
{
    int n = 0;
    while (n < 256) {
        grpc_event ev = ef_cq_pump_next (self->pump, wait_ms);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        s_dispatch (&ev);
        n++;
        wait_ms = 0;
    }
    return n;
}

/* The pump's descriptor is readable: take the completions (what is left
   over keeps it readable), then let tick follow up. Returns 0. */
static int
s_on_events (ef_actor_t *actor, int fd, void *arg)
{
    (void) fd;
    s_poll ((s_puller_t *) arg, 0);
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* --- starting a run ---------------------------------------------------- */

/* Opens the job's channel (TLS when asked) unless it is open. Returns 0,
   -1 with job->error set. */
static int
s_channel (s_job_t *job)
{
    if (job->channel)
        return 0;
    const ef_job_t *o = job->opts;
    grpc_channel_credentials *creds;
    if (o->tls || o->tls_ca) {
        char *roots = NULL;
        if (o->tls_ca && !(roots = ef_grpc_read_pem (o->tls_ca))) {
            snprintf (job->error, sizeof job->error,
                      "cannot read tls_ca %s: %s", o->tls_ca, strerror (errno));
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
    args[0].value.integer = (int) o->max_message_bytes;
    /* Reconnect about as fast as the run retries, not after gRPC's own
       (slower) schedule. */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *) GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[1].value.integer = (int) o->retry_base;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *) GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[2].value.integer = (int) o->retry_cap;
    /* Without BDP probing the window stays small: the server is held
       close to what the pipeline has taken (see grpc_receiver.c). */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *) GRPC_ARG_HTTP2_BDP_PROBE;
    args[3].value.integer = o->bdp_probe ? 1 : 0;
    grpc_channel_args channel_args = {4, args};
    job->channel = grpc_channel_create (o->target, creds, &channel_args);
    grpc_channel_credentials_release (creds);
    if (!job->channel) {
        snprintf (job->error, sizeof job->error,
                  "cannot create a channel to %s", o->target);
        return -1;
    }
    return 0;
}

/* With the job's lock held: marks stale runs abandoned, reads the
   position, records the run and calls the server. Returns 0, -1 with
   job->error (the run then ends as failed). */
static int
s_begin_run (s_job_t *job)
{
    s_puller_t *self = job->owner;
    const char *schema = self->globals->schema;
    char err[512];
    int stale =
        ef_job_abandon_stale (self->conn, schema, job->name, err, sizeof err);
    if (stale < 0)
        goto fail;
    if (stale > 0)
        ef_warn ("job %s: %d run(s) left running by a stopped process marked "
                 "abandoned",
                 job->name, stale);
    job->start_token =
        job->opts->from_start
            ? strdup ("")
            : ef_job_position (self->conn, schema, job->name, err, sizeof err);
    if (!job->start_token)
        goto fail;
    if (ef_stream_key_new (job->key) != 0) {
        snprintf (err, sizeof err, "no random bytes from the kernel");
        goto fail;
    }
    uint8_t id[16];
    ef_uuid7_generate (id);
    ef_uuid_format (id, job->run_id);
    if (ef_run_start (self->conn, schema, job->run_id, job->name, job->trigger,
                      job->start_token, job->slot, err, sizeof err)
        != 0)
        goto fail;
    job->run_recorded = true;
    job->stream_id = (uint64_t) ef_clock_wall_us ();
    job->backoff = ef_backoff_make (job->opts->retry_base, job->opts->retry_cap,
                                    (int) job->opts->retries);
    job->next_beat_us = ef_clock_mono_us () + self->opts->heartbeat * 1000;
    if (s_channel (job) != 0 || s_call_start (job, job->start_token) != 0)
        return -1;
    return 0;
fail:
    snprintf (job->error, sizeof job->error, "%s", err);
    return -1;
}

/* One try of the job's lock while the run waits for it; begins the run
   once it is ours, gives up (status busy) at lock_until_us. */
static void
s_try_lock (s_job_t *job)
{
    s_puller_t *self = job->owner;
    char err[512];
    int locked = ef_job_try_lock (self->conn, self->globals->schema, job->name,
                                  err, sizeof err);
    if (locked > 0) {
        job->locked = true;
        if (s_begin_run (job) != 0)
            job->phase = S_SETTLING; /* ends as failed */
        return;
    }
    if (locked < 0) {
        snprintf (job->error, sizeof job->error, "%s", err);
        if (PQstatus (self->conn) != CONNECTION_OK)
            PQreset (self->conn);
        s_finish (job, "failed");
    }
    else if (ef_clock_mono_us () >= job->lock_until_us) {
        snprintf (job->error, sizeof job->error,
                  "job %s is already running in another process (its lock "
                  "is held in the database)",
                  job->name);
        s_finish (job, "busy");
    }
}

/* Starts a requested run of job: its lock is tried from here on. */
static void
s_request_run (s_job_t *job, const char *trigger, int64_t slot)
{
    assert (!job->active && !job->call && !job->pending);
    free (job->start_token);
    free (job->last_token);
    job->start_token = job->last_token = NULL;
    job->seq = job->messages = job->calls = 0;
    job->received = job->written = job->dead = 0;
    ef_links_state_t links;
    ef_links_state (&links);
    job->churn_start = links.churn;
    job->last_ack_us = ef_clock_mono_us ();
    job->error[0] = '\0';
    job->run_recorded = false;
    job->stopping = false;
    job->active = true;
    snprintf (job->trigger, sizeof job->trigger, "%s", trigger);
    job->slot = slot;
    job->started_us = ef_clock_mono_us ();
    job->lock_until_us =
        job->started_us + job->owner->opts->lock_timeout * 1000;
    job->phase = S_LOCKING;
    s_try_lock (job);
}

/* --- actor callbacks ----------------------------------------------------- */

/* Finds a configured job by name. */
static s_job_t *
s_job (s_puller_t *self, const char *name)
{
    for (size_t i = 0; i < self->n_jobs; i++)
        if (strcmp (self->jobs[i].name, name) == 0)
            return &self->jobs[i];
    return NULL;
}

/* Knows the configured jobs and opens gRPC and the database when there
   are any. Returns 0, -1 after ef_actor_fail. */
static int
s_init (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    self->actor = actor;
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    /* the receiver sets the same limit when it runs in this process */
    self->budget = ef_budget_process ();
    ef_budget_set_limit (self->budget, self->globals->max_inflight_bytes);
    self->chunks_port = ef_actor_port (actor, "chunks");
    self->acks_port = ef_actor_port (actor, "acks");
    ef_acks_unknown_init (ef_actor_port_link (actor, self->acks_port));
    self->runs_port = ef_actor_port (actor, "runs");
    self->ends_port = ef_actor_port (actor, "run-ends");
    assert (self->chunks_port >= 0 && self->acks_port >= 0
            && self->runs_port >= 0 && self->ends_port >= 0);
    const ef_config_t *config = ef_actor_config (actor);
    self->n_jobs = ef_config_section_size (config, EF_JOBS_SECTION);
    if (self->n_jobs == 0)
        return 0; /* nothing to pull: serve uploads only */
    if (ef_actor_instances (actor) > 1) {
        ef_actor_fail (actor, "runs one instance (it runs every job)");
        return -1;
    }
    self->jobs = calloc (self->n_jobs, sizeof *self->jobs);
    if (!self->jobs) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_t *job = &self->jobs[i];
        job->owner = self;
        job->opts =
            ef_config_section_entry (config, EF_JOBS_SECTION, i, &job->name);
        job->source = ef_job_source (job->opts, job->name);
        job->metrics = ef_job_metrics (job->name);
        job->phase = S_IDLE;
    }
    grpc_init ();
    self->grpc_up = true;
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
    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    return 0;
}

/* Starts the run a RunRequest asks for. */
static void
s_on_run_request (s_puller_t *self, const Embedflow__V1__RunRequest *req)
{
    const char *trigger = req->trigger && *req->trigger ? req->trigger : "";
    s_job_t *job = req->job ? s_job (self, req->job) : NULL;
    if (!job) {
        ef_warn ("asked to run job '%s', which is not in this process's "
                 "jobs section",
                 req->job ? req->job : "");
        return;
    }
    if (strcmp (trigger, "cron") != 0 && strcmp (trigger, "manual") != 0) {
        ef_warn ("job %s: trigger '%s' is not cron or manual: not run",
                 job->name, trigger);
        return;
    }
    if (self->draining)
        return;
    if (job->active) {
        ef_info ("job %s: not started: a run is still going", job->name);
        return;
    }
    s_request_run (job, trigger, req->slot);
}

/* Takes an Ack (rows settled) or a RunRequest. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_puller_t *self = ef_actor_state (actor);
    zframe_t *frame = zmsg_first (*msg_p);
    if (port == self->runs_port) {
        Embedflow__V1__RunRequest *req =
            frame ? embedflow__v1__run_request__unpack (
                NULL, zframe_size (frame), zframe_data (frame))
                  : NULL;
        zmsg_destroy (msg_p);
        if (!req) {
            ef_warn ("dropping a message on runs that is not a RunRequest");
            return 0;
        }
        if (self->cq)
            s_on_run_request (self, req);
        else
            ef_warn ("asked to run job '%s', but this process has no jobs",
                     req->job);
        embedflow__v1__run_request__free_unpacked (req, NULL);
        ef_actor_wake_in (actor, 0);
        return 0;
    }
    char why[160] = "an empty message";
    Embedflow__V1__Ack *ack =
        frame ? ef_linkwire_ack (zframe_data (frame), zframe_size (frame), why,
                                 sizeof why)
              : NULL;
    zmsg_destroy (msg_p);
    if (!ack) {
        ef_warn ("dropping a message on %s: %s",
                 ef_actor_port_link (actor, self->acks_port), why);
        return 0;
    }
    for (size_t i = 0; i < ack->n_tallies; i++) {
        const Embedflow__V1__StreamTally *t = ack->tallies[i];
        s_job_t *job = NULL;
        for (size_t j = 0; j < self->n_jobs && !job; j++)
            if (self->jobs[j].active && self->jobs[j].stream_id == t->stream_id
                && t->stream_id != 0
                && ef_stream_key_match (self->jobs[j].key, t->stream_key))
                job = &self->jobs[j];
        if (!job) {
            ef_acks_unknown (ef_actor_port_link (actor, self->acks_port),
                             ack->from, t->stream_id,
                             t->written + t->dead_lettered);
            continue;
        }
        uint64_t settled = job->written + job->dead;
        ef_budget_release (self->budget,
                           ef_budget_share (&job->charged,
                                            job->received > settled
                                                ? job->received - settled
                                                : 0,
                                            t->written + t->dead_lettered));
        job->written += t->written;
        job->dead += t->dead_lettered;
        job->last_ack_us = ef_clock_mono_us ();
        ef_counter_add (job->metrics->written, t->written);
        ef_counter_add (job->metrics->dead_lettered, t->dead_lettered);
        s_check_settled (job);
    }
    embedflow__v1__ack__free_unpacked (ack, NULL);
    /* settled rows may free the budget a read waits for */
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* Advances one job: lock, retry, idle timeout, heartbeat, settling, and
   a hard stop. */
static void
s_job_tick (s_job_t *job, int64_t now)
{
    s_puller_t *self = job->owner;
    if (!job->active)
        return;
    s_flush (job);
    if (job->budget_wait) {
        s_read (job);
        if (!job->budget_wait)
            job->last_msg_us = now; /* the wait was ours, not the server's */
    }
    if (job->phase == S_LOCKING) {
        s_try_lock (job);
        return;
    }
    if (job->phase == S_SETTLING && job->opts->idle_timeout > 0
        && job->written + job->dead < job->received
        && now - job->last_ack_us > job->opts->idle_timeout * 1000) {
        /* rows lost with a peer on another host are not sent again for a
           pull: the run fails, and the next one resumes from the
           checkpoint, which only committed rows moved */
        ef_links_state_t links;
        ef_links_state (&links);
        if (links.churn != job->churn_start) {
            snprintf (job->error, sizeof job->error,
                      "%" PRIu64 " rows not settled for %" PRId64
                      " ms (idle_timeout) after %s lost its peer; the next "
                      "run resumes from the checkpoint",
                      job->received - job->written - job->dead,
                      job->opts->idle_timeout,
                      links.lost[0] ? links.lost : "a link");
            s_finish (job, NULL);
            return;
        }
    }
    s_call_t *c = job->call;
    if (job->phase == S_CALLING && c && !c->idle_expired
        && job->opts->idle_timeout > 0 && !job->pending && !job->budget_wait
        && now - job->last_msg_us > job->opts->idle_timeout * 1000) {
        c->idle_expired = true;
        grpc_call_cancel (c->call, NULL);
    }
    if (job->phase == S_WAITING && now >= job->retry_at_us) {
        const char *token =
            job->last_token ? job->last_token : job->start_token;
        if (s_call_start (job, token) != 0)
            job->phase = S_SETTLING;
    }
    if (job->run_recorded && now >= job->next_beat_us) {
        char err[512];
        if (ef_run_update (self->conn, self->globals->schema, job->run_id, NULL,
                           job->received, job->written, job->dead, NULL, err,
                           sizeof err)
            != 0) {
            ef_warn ("job %s: heartbeat not stored: %s", job->name, err);
            if (PQstatus (self->conn) != CONNECTION_OK)
                PQreset (self->conn);
        }
        job->next_beat_us = now + self->opts->heartbeat * 1000;
    }
    s_check_settled (job);
    if (job->active && ef_actor_stopping (self->actor)) {
        /* hard stop: what is in flight will not settle */
        if (!job->error[0])
            snprintf (job->error, sizeof job->error,
                      "stopped at once before the rows settled");
        if (job->call)
            grpc_call_cancel (job->call->call, NULL);
        zmsg_destroy (&job->pending);
        if (!job->call)
            s_finish (job, "failed");
    }
}

/* The earliest deadline of job's run, as monotonic µs, or -1 when only
   a completion or an ack can move it on. */
static int64_t
s_job_deadline (const s_job_t *job, int64_t now)
{
    if (!job->active)
        return -1;
    int64_t at = -1;
#define S_SOONER(t)                                                            \
    do {                                                                       \
        int64_t t_ = (t);                                                      \
        if (at < 0 || t_ < at)                                                 \
            at = t_;                                                           \
    } while (0)
    int64_t idle_us = job->opts->idle_timeout * 1000;
    if (job->pending)
        S_SOONER (now + S_RETRY_WAIT_MS * 1000);
    if (job->budget_wait)
        S_SOONER (now + S_BUDGET_WAIT_MS * 1000);
    if (job->phase == S_LOCKING)
        S_SOONER (now + S_LOCK_POLL_MS * 1000);
    if (job->phase == S_WAITING)
        S_SOONER (job->retry_at_us);
    if (job->phase == S_CALLING && job->call && !job->call->idle_expired
        && idle_us > 0)
        S_SOONER (job->last_msg_us + idle_us + 1);
    /* past idle_timeout the run fails only once a link lost its peer,
       which no event here announces: look again now and then */
    if (job->phase == S_SETTLING && idle_us > 0
        && job->written + job->dead < job->received)
        S_SOONER (job->last_ack_us + idle_us + 1 > now
                      ? job->last_ack_us + idle_us + 1
                      : now + S_LOCK_POLL_MS * 1000);
    if (job->run_recorded)
        S_SOONER (job->next_beat_us);
    if (ef_actor_stopping (job->owner->actor))
        S_SOONER (now + S_LOCK_POLL_MS * 1000);
#undef S_SOONER
    return at;
}

/* Every job's clockwork; then sleeps until the earliest deadline of a
   run (completions, acks and requests wake it sooner). */
static int
s_tick (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    if (!self->cq)
        return 0;
    bool active = false;
    for (size_t i = 0; i < self->n_jobs; i++)
        s_flush (&self->jobs[i]);
    int64_t now = ef_clock_mono_us ();
    int64_t at = -1;
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_tick (&self->jobs[i], now);
        active |= self->jobs[i].active;
        int64_t t = s_job_deadline (&self->jobs[i], now);
        if (t >= 0 && (at < 0 || t < at))
            at = t;
    }
    if (self->draining && !active && !self->drained) {
        self->drained = true;
        ef_actor_drained (actor);
    }
    ef_actor_wake_in (actor, at < 0      ? -1
                             : at <= now ? 0
                                         : (at - now + 999) / 1000);
    return 0;
}

/* Stops job's run as a drain does: the call is cancelled, the rows
   already forwarded settle, the run ends 'failed' with why as its error
   and the next one resumes from the checkpoint. */
static void
s_stop_run (s_job_t *job, const char *why)
{
    job->stopping = true;
    job->stop_why = why;
    if (job->phase == S_LOCKING || job->phase == S_WAITING)
        snprintf (job->error, sizeof job->error, "%s", why);
    if (job->phase == S_LOCKING)
        s_finish (job, "failed");
    else if (job->call)
        grpc_call_cancel (job->call->call, NULL); /* s_on_call_end */
    else if (job->phase == S_WAITING)
        job->phase = S_SETTLING;
    /* S_SETTLING: the stream is over, the run ends as it would */
}

/* Graceful stop: no new run; cancel the calls, let forwarded rows
   settle (s_tick reports drained when no run is left). */
static void
s_drain (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    self->draining = true;
    bool active = false;
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_t *job = &self->jobs[i];
        if (job->active && !job->stopping)
            s_stop_run (job, "stopped before the stream ended");
        active |= job->active;
    }
    if (!active) {
        self->drained = true;
        ef_actor_drained (actor);
        return;
    }
    ef_actor_wake_in (actor, 0);
}

/* /control: "stop JOB" ends the job's running run 'failed' with the
   error "stopped by request" once its forwarded rows have settled. */
static int
s_control (ef_actor_t *actor, const char *verb, const char *arg, char *reply,
           size_t len)
{
    s_puller_t *self = ef_actor_state (actor);
    if (strcmp (verb, "stop") != 0)
        return 1;
    s_job_t *job = NULL;
    for (size_t i = 0; i < self->n_jobs && !job; i++)
        if (strcmp (self->jobs[i].name, arg) == 0)
            job = &self->jobs[i];
    if (!job) {
        snprintf (reply, len, "no job '%s' in the jobs section", arg);
        return 1;
    }
    if (!job->active) {
        snprintf (reply, len, "job %s is not running", job->name);
        return -1;
    }
    if (!job->stopping) {
        ef_info ("job %s: stopping run %s by request", job->name, job->run_id);
        s_stop_run (job, "stopped by request");
    }
    snprintf (reply, len, "job %s: run %s stopping", job->name, job->run_id);
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* Cancels what is left, records unfinished runs and frees everything. */
static void
s_destroy (ef_actor_t *actor)
{
    s_puller_t *self = ef_actor_state (actor);
    for (size_t i = 0; i < self->n_jobs; i++)
        if (self->jobs[i].call)
            grpc_call_cancel (self->jobs[i].call->call, NULL);
    while (self->calls_alive > 0)
        s_poll (self, 100);
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_t *job = &self->jobs[i];
        if (job->active) {
            if (!job->error[0])
                snprintf (job->error, sizeof job->error, "stopped");
            s_finish (job, "failed");
        }
        zmsg_destroy (&job->pending);
        if (job->channel)
            grpc_channel_destroy (job->channel);
        free (job->start_token);
        free (job->last_token);
    }
    if (self->pump) {
        ef_actor_unwatch_fd (actor, ef_cq_pump_fd (self->pump));
        ef_cq_pump_destroy (&self->pump); /* no call is left */
        grpc_completion_queue_destroy (self->cq);
    }
    else
        ef_grpc_cq_destroy (self->cq);
    if (self->grpc_up)
        grpc_shutdown ();
    PQfinish (self->conn);
    free (self->jobs);
}

static const ef_port_def_t s_ports[] = {
    {"chunks", EF_PORT_OUT, "embedflow.v1.ChunkHeader", false, 8},
    {"acks", EF_PORT_IN, "embedflow.v1.Ack", false, 10000},
    {"runs", EF_PORT_IN, "embedflow.v1.RunRequest", false, 1000},
    {"run-ends", EF_PORT_OUT, "embedflow.v1.RunEnded", false, 1000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_grpc_puller_actor = {
    .name = s_name,
    .summary = "gRPC client of GetEmbeddings: runs the jobs the scheduler "
               "asks for, resuming each from its committed checkpoint",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_puller_t),
    .ports = s_ports,
    .flags = EF_ACTOR_SOURCE,
    .default_instances = 1,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .drain = s_drain,
    .destroy = s_destroy,
    .control = s_control,
};
