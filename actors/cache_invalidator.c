/*  cache_invalidator.c — tells the API server which documents changed.

    Ports
      committed  IN: Committed hints from the db-writers ("the outbox has
                 new rows"); the data itself is in the outbox table

    The writers insert the ids of documents whose rows changed into
    <schema>.invalidation_outbox in the same transaction as the rows
    (postgres/outbox.c), so an id exists exactly when its change is
    committed. This actor reads the outbox at start, every `poll` while
    idle, and whenever a hint arrives; it waits `window` (or until `max_ids` ids are announced) to
    gather more, then calls embedflow.v1.CacheService/Invalidate with the
    ids of one source at a time, and deletes the outbox rows only after
    the call succeeded. While the API server is unavailable it retries
    with backoff; after `retry_budget` failed calls of one group it moves
    those ids to dead_letter (stage "invalidate") in one statement and
    goes on with the next. A crash at any point leaves undelivered ids in
    the outbox for the next start; an id may be sent twice, never lost.

    With no api_server configured the writers write no outbox rows and
    this actor idles.
*/
#include <assert.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "pipeline/pipeline.h"
#include "embedflow/v1/cache.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "grpc/grpcmsg.h"
#include "postgres/outbox.h"
#include "postgres/pg.h"
#include "postgres/schema.h"

#define S_METHOD "/embedflow.v1.CacheService/Invalidate"

typedef struct {
    int64_t window;       /* ms to gather ids after a hint */
    int64_t max_ids;      /* ids per call; reached: call at once */
    int64_t timeout;      /* deadline of one call, ms */
    int64_t retry_base;   /* first backoff ceiling, ms */
    int64_t retry_cap;    /* largest backoff ceiling, ms */
    int64_t retry_budget; /* failed calls of one group before the DLQ */
    int64_t poll;         /* ms between looks at an idle outbox */
} s_options_t;

static const ef_option_t s_options[] = {
    {"window", EF_OPT_MS, "100ms", offsetof (s_options_t, window), 0, 60000,
     "how long committed ids are gathered before one Invalidate call"},
    {"max_ids", EF_OPT_INT, "500", offsetof (s_options_t, max_ids), 1, 100000,
     "document ids per Invalidate call; this many waiting: call at once"},
    {"timeout", EF_OPT_MS, "5s", offsetof (s_options_t, timeout), 1, 600000,
     "deadline of one Invalidate call"},
    {"retry_base", EF_OPT_MS, "100ms", offsetof (s_options_t, retry_base), 1,
     3600000, "first backoff ceiling while the API server is unavailable"},
    {"retry_cap", EF_OPT_MS, "5s", offsetof (s_options_t, retry_cap), 1,
     3600000, "largest backoff ceiling between retries"},
    {"retry_budget", EF_OPT_INT, "30", offsetof (s_options_t, retry_budget), -1,
     1000000, "failed calls before the ids go to the DLQ (-1 = retry forever)"},
    {"poll", EF_OPT_MS, "5s", offsetof (s_options_t, poll), 10, 3600000,
     "how often an idle outbox is read anyway (ids from another process, "
     "a replay, a lost hint)"},
    EF_OPTION_END};

typedef struct {
    const s_options_t *opts;     /* borrowed from the runtime */
    const ef_globals_t *globals; /* borrowed from the runtime */
    bool active;                 /* an API server is configured */
    PGconn *conn;                /* owned */
    ef_outbox_t *outbox;         /* owned */
    grpc_channel *channel;       /* owned */
    grpc_completion_queue *cq;   /* owned, for pluck */
    bool grpc_up;                /* grpc_init was called */
    int port_committed;          /* IN */
    ef_backoff_t api_backoff;    /* failed calls of the current group */
    ef_backoff_t db_backoff;     /* database unavailable */
    bool waiting;                /* a tick is due (window or backoff) */
    bool backing_off;            /* that tick is a retry: do not hurry it */
    uint64_t announced;          /* ids hinted since the last drain */
    /* Counters (one place; metrics read these). */
    uint64_t calls;       /* Invalidate calls that succeeded */
    uint64_t ids_sent;    /* document ids delivered */
    uint64_t retries;     /* failed calls retried */
    uint64_t ids_dead;    /* ids moved to dead_letter */
    uint64_t db_failures; /* outbox reads or deletes that failed */
} s_self_t;

/* Calls Invalidate with ids[0..n) of source. Returns 0 when the server
   answered OK, -1 with err saying why (status and details). */
static int
s_call (s_self_t *self, const char *source, char **ids, size_t n, char *err,
        size_t errlen)
{
    Embedflow__V1__InvalidateRequest req =
        EMBEDFLOW__V1__INVALIDATE_REQUEST__INIT;
    req.n_document_ids = n;
    req.document_ids = ids;
    req.source = (char *) source;
    size_t size = embedflow__v1__invalidate_request__get_packed_size (&req);
    grpc_slice payload = grpc_slice_malloc (size);
    embedflow__v1__invalidate_request__pack (&req,
                                             GRPC_SLICE_START_PTR (payload));
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create (&payload, 1);
    grpc_slice_unref (payload);

    gpr_timespec deadline =
        gpr_time_add (gpr_now (GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis (self->opts->timeout, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_static_string (S_METHOD);
    grpc_call *call =
        grpc_channel_create_call (self->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                  self->cq, method, NULL, deadline, NULL);
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init (&initial_md);
    grpc_metadata_array_init (&trailing_md);
    grpc_byte_buffer *reply = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice ();
    const char *error_string = NULL;

    grpc_op ops[6];
    memset (ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &reply;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    int rc = -1;
    void *tag = self;
    if (!call
        || grpc_call_start_batch (call, ops, 6, tag, NULL) != GRPC_CALL_OK)
        snprintf (err, errlen, "cannot start the call");
    else {
        /* The call's own deadline ends it; the queue is only ours. */
        grpc_event ev = grpc_completion_queue_pluck (
            self->cq, tag, gpr_inf_future (GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success)
            snprintf (err, errlen, "the call did not complete");
        else if (status != GRPC_STATUS_OK)
            snprintf (err, errlen, "%s: %.*s", ef_grpc_status_name (status),
                      (int) GRPC_SLICE_LENGTH (details),
                      (const char *) GRPC_SLICE_START_PTR (details));
        else
            rc = 0;
    }
    if (reply)
        grpc_byte_buffer_destroy (reply);
    grpc_byte_buffer_destroy (send);
    grpc_slice_unref (details);
    gpr_free ((void *) error_string);
    grpc_metadata_array_destroy (&initial_md);
    grpc_metadata_array_destroy (&trailing_md);
    if (call)
        grpc_call_unref (call);
    return rc;
}

/* Reconnects after a database failure and schedules the next try. */
static void
s_db_failed (ef_actor_t *actor, s_self_t *self, const char *err)
{
    self->db_failures++;
    int64_t delay = ef_backoff_next (&self->db_backoff);
    if (self->db_backoff.attempt == 1)
        ef_warn ("%s; retrying", err);
    else
        ef_debug ("%s; retry in %" PRId64 " ms", err, delay);
    if (PQstatus (self->conn) != CONNECTION_OK) {
        PQreset (self->conn);
        if (PQstatus (self->conn) == CONNECTION_OK)
            ef_info ("reconnected to the database");
    }
    self->waiting = self->backing_off = true;
    ef_actor_wake_in (actor, delay);
}

/* Delivers the outbox, group by group, until it is empty or a call
   fails (then a retry is scheduled). Always returns 0. */
static int
s_drain (ef_actor_t *actor, s_self_t *self)
{
    self->waiting = self->backing_off = false;
    self->announced = 0;
    /* Bounded, so hints and a stop are looked at between rounds. */
    for (int round = 0; round < 64; round++) {
        ef_outbox_batch_t batch;
        char err[1024];
        int got = ef_outbox_fetch (self->outbox, self->conn,
                                   (size_t) self->opts->max_ids, &batch, err,
                                   sizeof err);
        if (got < 0) {
            s_db_failed (actor, self, err);
            return 0;
        }
        ef_backoff_reset (&self->db_backoff);
        if (got == 0) {
            ef_actor_wake_in (actor, self->opts->poll);
            return 0;
        }
        char why[512];
        if (s_call (self, batch.source, batch.document_ids, batch.n_ids, why,
                    sizeof why)
            == 0) {
            self->calls++;
            self->ids_sent += batch.n_ids;
            ef_backoff_reset (&self->api_backoff);
            ef_debug ("invalidated %zu documents (source '%s')", batch.n_ids,
                      batch.source);
            if (ef_outbox_delete (self->outbox, self->conn, &batch, err,
                                  sizeof err)
                != 0) {
                /* They were delivered; a re-send later is harmless. */
                ef_outbox_batch_clear (&batch);
                s_db_failed (actor, self, err);
                return 0;
            }
            ef_outbox_batch_clear (&batch);
            continue;
        }
        int64_t delay = ef_backoff_next (&self->api_backoff);
        if (delay >= 0) {
            self->retries++;
            if (self->api_backoff.attempt == 1)
                ef_warn ("Invalidate on %s failed (%s): retrying",
                         self->globals->api_server, why);
            else
                ef_debug ("Invalidate retry %d in %" PRId64 " ms: %s",
                          self->api_backoff.attempt, delay, why);
            ef_outbox_batch_clear (&batch);
            self->waiting = self->backing_off = true;
            ef_actor_wake_in (actor, delay);
            return 0;
        }
        uint32_t attempts = (uint32_t) self->api_backoff.attempt + 1;
        char reason[700];
        snprintf (reason, sizeof reason,
                  "Invalidate on %s failed %" PRIu32 " times: %s",
                  self->globals->api_server, attempts, why);
        if (ef_outbox_dead_letter (self->outbox, self->conn, &batch, reason,
                                   attempts, err, sizeof err)
            != 0) {
            ef_outbox_batch_clear (&batch);
            s_db_failed (actor, self, err);
            return 0;
        }
        ef_error_kv (EF_KV (EF_KV_U64 ("documents", batch.n_ids),
                            EF_KV_U64 ("attempts", attempts)),
                     "gave up on %zu document ids after %" PRIu32
                     " calls: moved to dead_letter (%s)",
                     batch.n_ids, attempts, why);
        self->ids_dead += batch.n_ids;
        ef_backoff_reset (&self->api_backoff);
        ef_outbox_batch_clear (&batch);
    }
    self->waiting = true;
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* --- actor callbacks ----------------------------------------------------- */

/* With an API server: connects to the database and opens the channel,
   then drains what an earlier run left. Without: idles. */
static int
s_init (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    self->port_committed = ef_actor_port (actor, "committed");
    assert (self->port_committed >= 0);
    const char *target = self->globals->api_server;
    if (!target || !*target) {
        ef_debug ("no api_server configured: nothing to invalidate");
        return 0;
    }
    self->active = true;
    self->api_backoff =
        ef_backoff_make (self->opts->retry_base, self->opts->retry_cap,
                         (int) self->opts->retry_budget);
    self->db_backoff =
        ef_backoff_make (self->opts->retry_base, self->opts->retry_cap, -1);

    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    self->outbox = ef_outbox_new (self->globals->schema);
    if (!self->outbox) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    grpc_init ();
    self->grpc_up = true;
    /* Reconnect quickly once the API server is back: the channel's own
       backoff would otherwise keep failing calls for up to two minutes
       after it returned. */
    grpc_arg args[3];
    memset (args, 0, sizeof args);
    const char *keys[] = {GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                          GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                          GRPC_ARG_MAX_RECONNECT_BACKOFF_MS};
    int values[] = {
        100, 100,
        (int) (self->opts->retry_cap < 1000 ? 1000 : self->opts->retry_cap)};
    for (int i = 0; i < 3; i++) {
        args[i].type = GRPC_ARG_INTEGER;
        args[i].key = (char *) keys[i];
        args[i].value.integer = values[i];
    }
    grpc_channel_args channel_args = {3, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create ();
    self->channel = grpc_channel_create (target, creds, &channel_args);
    grpc_channel_credentials_release (creds);
    self->cq = grpc_completion_queue_create_for_pluck (NULL);
    if (!self->channel || !self->cq) {
        ef_actor_fail (actor, "cannot open a channel to %s", target);
        return -1;
    }
    ef_info ("invalidating caches on %s (window %" PRId64 " ms, up to %" PRId64
             " ids a call)",
             target, self->opts->window, self->opts->max_ids);
    self->waiting = true;
    ef_actor_wake_in (actor, 0); /* what an earlier run left */
    return 0;
}

/* A writer committed outbox rows: drain after the window, or at once
   when enough ids are announced. Always returns 0. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_self_t *self = ef_actor_state (actor);
    zframe_t *frame = zmsg_first (*msg_p);
    Embedflow__V1__Committed *c =
        port == self->port_committed && frame
            ? embedflow__v1__committed__unpack (NULL, zframe_size (frame),
                                                zframe_data (frame))
            : NULL;
    zmsg_destroy (msg_p);
    if (!self->active) {
        if (c)
            embedflow__v1__committed__free_unpacked (c, NULL);
        return 0;
    }
    /* A hint that does not parse still means "look". */
    self->announced += c ? c->documents : 1;
    if (c)
        embedflow__v1__committed__free_unpacked (c, NULL);
    if (self->backing_off)
        return 0; /* the retry comes when it is due */
    if (self->announced >= (uint64_t) self->opts->max_ids) {
        self->waiting = true;
        ef_actor_wake_in (actor, 0);
    }
    else if (!self->waiting) {
        self->waiting = true;
        ef_actor_wake_in (actor, self->opts->window);
    }
    return 0;
}

/* The window or a backoff passed: deliver what the outbox holds. */
static int
s_tick (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    if (!self->active)
        return 0;
    return s_drain (actor, self);
}

/* Logs the counters and releases everything. Undelivered ids stay in
   the outbox for the next start. */
static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    if (self->active)
        ef_info_kv (
            EF_KV (EF_KV_U64 ("calls", self->calls),
                   EF_KV_U64 ("documents", self->ids_sent),
                   EF_KV_U64 ("retries", self->retries),
                   EF_KV_U64 ("documents_dead_lettered", self->ids_dead)),
            "%" PRIu64 " Invalidate calls, %" PRIu64
            " document ids delivered, %" PRIu64 " retries, %" PRIu64
            " ids dead-lettered",
            self->calls, self->ids_sent, self->retries, self->ids_dead);
    if (self->channel)
        grpc_channel_destroy (self->channel);
    if (self->cq) {
        grpc_completion_queue_shutdown (self->cq);
        grpc_completion_queue_destroy (self->cq);
    }
    if (self->grpc_up)
        grpc_shutdown ();
    ef_outbox_destroy (&self->outbox);
    PQfinish (self->conn);
}

static const ef_port_def_t s_ports[] = {
    {"committed", EF_PORT_IN, "embedflow.v1.Committed", false, 1000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_cache_invalidator_actor = {
    .name = "cache-invalidator",
    .summary = "sends the ids of changed documents to the API server's "
               "CacheService (from the outbox)",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_self_t),
    .ports = s_ports,
    .flags = 0,
    .default_instances = 1,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .drain = NULL,
    .destroy = s_destroy,
};
