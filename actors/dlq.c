/*  dlq.c — stores dead letters in <schema>.dead_letter and acks them.

    Ports
      dead  IN: messages of one or more frames, each a DeadLetter (from
            the splitter, the writers, any actor that gives up on a row)
      acks  OUT: an Ack per stored group, counting each letter's covers as
            dead_lettered for its stream (covers 0: a letter that settles
            no received row, e.g. a failed invalidation)

    Letters are gathered for up to flush_interval or flush_items, then
    stored in one COPY; only after the commit are they acked. When the
    database is unavailable the DLQ retries with backoff, without limit,
    and reads nothing meanwhile: producers block on a full queue rather
    than anything being dropped or acked early. A frame that is not a
    DeadLetter is stored too, as stage "dlq", reason_code "undecodable",
    with the frame as original.
*/
#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "embedflow/pipeline.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "pipeline/pg.h"
#include "pipeline/pgwrite.h"
#include "pipeline/schema.h"

typedef struct {
    int64_t flush_interval; /* ms a letter may wait for others */
    int64_t flush_items;    /* store at once when this many wait */
    int64_t retry_base;     /* first backoff ceiling, ms */
    int64_t retry_cap;      /* largest backoff ceiling, ms */
} s_options_t;

static const ef_option_t s_options[] = {
    {"flush_interval", EF_OPT_MS, "5ms", offsetof (s_options_t, flush_interval),
     0, 60000, "how long a dead letter may wait to be stored with others"},
    {"flush_items", EF_OPT_INT, "500", offsetof (s_options_t, flush_items), 1,
     1000000, "store at once when this many dead letters wait"},
    {"retry_base", EF_OPT_MS, "100ms", offsetof (s_options_t, retry_base), 1,
     3600000, "first backoff ceiling while the database is unavailable"},
    {"retry_cap", EF_OPT_MS, "5s", offsetof (s_options_t, retry_cap), 1,
     3600000, "largest backoff ceiling between retries"},
    EF_OPTION_END};

typedef struct {
    const s_options_t *opts;             /* borrowed from the runtime */
    const ef_globals_t *globals;         /* borrowed from the runtime */
    PGconn *conn;                        /* owned */
    int port_dead;                       /* IN */
    int port_acks;                       /* OUT */
    Embedflow__V1__DeadLetter **pending; /* unpacked, waiting to be stored */
    size_t n_pending;                    /* used */
    size_t cap_pending;                  /* allocated */
    uint64_t stored;                     /* letters stored, for the log */
} s_self_t;

/* Queues one letter (ownership passes). Returns 0, -1 out of memory. */
static int
s_push (s_self_t *self, Embedflow__V1__DeadLetter *letter)
{
    if (self->n_pending == self->cap_pending) {
        size_t cap = self->cap_pending ? self->cap_pending * 2 : 64;
        void *grown = realloc (self->pending, cap * sizeof *self->pending);
        if (!grown)
            return -1;
        self->pending = grown;
        self->cap_pending = cap;
    }
    self->pending[self->n_pending++] = letter;
    return 0;
}

/* A letter standing for a frame that does not parse, built by packing
   and unpacking so that it is freed like any other. NULL when out of
   memory. */
static Embedflow__V1__DeadLetter *
s_undecodable (zframe_t *frame)
{
    char reason[96];
    snprintf (reason, sizeof reason,
              "a frame of %zu bytes on the dead link is not a DeadLetter",
              zframe_size (frame));
    Embedflow__V1__DeadLetter dl = EMBEDFLOW__V1__DEAD_LETTER__INIT;
    dl.stage = "dlq";
    dl.reason_code = "undecodable";
    dl.reason = reason;
    dl.original.data = zframe_data (frame);
    dl.original.len = zframe_size (frame);
    size_t size = embedflow__v1__dead_letter__get_packed_size (&dl);
    uint8_t *buf = malloc (size);
    if (!buf)
        return NULL;
    embedflow__v1__dead_letter__pack (&dl, buf);
    Embedflow__V1__DeadLetter *copy =
        embedflow__v1__dead_letter__unpack (NULL, size, buf);
    free (buf);
    return copy;
}

/* Sends one Ack for the letters just stored, if any carried covers. */
static int
s_send_ack (ef_actor_t *actor, s_self_t *self)
{
    size_t n = 0;
    Embedflow__V1__StreamTally *tallies =
        calloc (self->n_pending, sizeof *tallies);
    Embedflow__V1__StreamTally **ptrs = calloc (self->n_pending, sizeof *ptrs);
    if (!tallies || !ptrs) {
        free (tallies);
        free (ptrs);
        ef_error ("out of memory building an ack");
        return -1;
    }
    for (size_t i = 0; i < self->n_pending; i++) {
        const Embedflow__V1__DeadLetter *d = self->pending[i];
        if (d->covers == 0)
            continue;
        size_t t = 0;
        while (t < n && tallies[t].stream_id != d->stream_id)
            t++;
        if (t == n) {
            embedflow__v1__stream_tally__init (&tallies[t]);
            tallies[t].stream_id = d->stream_id;
            ptrs[t] = &tallies[t];
            n++;
        }
        tallies[t].dead_lettered += d->covers;
    }
    int rc = 0;
    if (n > 0) {
        Embedflow__V1__Ack ack = EMBEDFLOW__V1__ACK__INIT;
        ack.n_tallies = n;
        ack.tallies = ptrs;
        ack.from = (char *) ef_actor_name (actor);
        zframe_t *frame =
            zframe_new (NULL, embedflow__v1__ack__get_packed_size (&ack));
        zmsg_t *msg = frame ? zmsg_new () : NULL;
        if (msg) {
            embedflow__v1__ack__pack (&ack, zframe_data (frame));
            zmsg_append (msg, &frame);
            rc = ef_actor_send (actor, self->port_acks, 0, &msg);
        }
        else {
            zframe_destroy (&frame);
            ef_error ("out of memory building an ack");
            rc = -1;
        }
    }
    free (tallies);
    free (ptrs);
    return rc;
}

/* Stores every pending letter, retrying until the database takes them
   (or a hard stop, or once when `once`), then acks them. Returns 0, -1
   when they could not be stored or acked (they stay pending). */
static int
s_flush (ef_actor_t *actor, s_self_t *self, bool once)
{
    if (self->n_pending == 0)
        return 0;
    ef_backoff_t backoff =
        ef_backoff_make (self->opts->retry_base, self->opts->retry_cap, -1);
    while (true) {
        ef_write_report_t rep;
        ef_write_status_t st =
            ef_pgwrite_dead_letters (self->conn, self->globals->schema,
                                     self->pending, self->n_pending, &rep);
        if (st == EF_WRITE_OK)
            break;
        int64_t delay = ef_backoff_next (&backoff);
        /* A permanent error here means the table itself is wrong (text
           is cleaned before it is sent): say so every time. */
        if (st == EF_WRITE_ERROR || backoff.attempt == 1)
            ef_error ("cannot store %zu dead letters (%s%s%s), retrying: %s",
                      self->n_pending, rep.reason_code,
                      *rep.sqlstate ? " " : "", rep.sqlstate, rep.message);
        if (once || ef_backoff_sleep (delay, ef_actor_stop_flag (actor)) != 0)
            return -1;
        if (PQstatus (self->conn) != CONNECTION_OK) {
            PQreset (self->conn);
            if (PQstatus (self->conn) == CONNECTION_OK)
                ef_info ("reconnected to the database");
        }
    }
    int rc = s_send_ack (actor, self);
    self->stored += self->n_pending;
    ef_debug ("stored %zu dead letters", self->n_pending);
    for (size_t i = 0; i < self->n_pending; i++)
        embedflow__v1__dead_letter__free_unpacked (self->pending[i], NULL);
    self->n_pending = 0;
    return rc;
}

/* --- actor callbacks ----------------------------------------------------- */

/* Connects and migrates the schema; on failure the reason goes to
   ef_actor_fail. */
static int
s_init (ef_actor_t *actor)
{
    s_self_t *self = calloc (1, sizeof *self);
    if (!self) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    ef_actor_set_state (actor, self);
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    self->port_dead = ef_actor_port (actor, "dead");
    self->port_acks = ef_actor_port (actor, "acks");
    assert (self->port_dead >= 0 && self->port_acks >= 0);

    char app[96], err[1024];
    snprintf (app, sizeof app, "embedflow %s", ef_actor_name (actor));
    self->conn = ef_pg_connect (self->globals->database, app, err, sizeof err);
    if (!self->conn) {
        ef_actor_fail (actor, "%s", err);
        return -1;
    }
    if (ef_schema_migrate (self->conn, self->globals->schema,
                           (int) self->globals->dim, err, sizeof err)
        != 0) {
        ef_actor_fail (actor, "%s", err);
        return -1;
    }
    return 0;
}

/* Queues the letters of one message; stores them when enough wait,
   else within flush_interval. Returns -1 only when out of memory. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_self_t *self = ef_actor_state (actor);
    if (port != self->port_dead) {
        zmsg_destroy (msg_p);
        return 0;
    }
    for (zframe_t *frame = zmsg_first (*msg_p); frame;
         frame = zmsg_next (*msg_p)) {
        Embedflow__V1__DeadLetter *letter = embedflow__v1__dead_letter__unpack (
            NULL, zframe_size (frame), zframe_data (frame));
        if (!letter) {
            ef_warn ("a %zu-byte frame is not a DeadLetter: stored as "
                     "undecodable",
                     zframe_size (frame));
            letter = s_undecodable (frame);
        }
        if (!letter || s_push (self, letter) != 0) {
            if (letter)
                embedflow__v1__dead_letter__free_unpacked (letter, NULL);
            ef_error ("out of memory queueing a dead letter");
            zmsg_destroy (msg_p);
            return -1;
        }
    }
    zmsg_destroy (msg_p);
    if (self->n_pending >= (size_t) self->opts->flush_items) {
        s_flush (actor, self, false);
        ef_actor_wake_in (actor, -1);
    }
    else if (self->n_pending > 0)
        ef_actor_wake_in (actor, self->opts->flush_interval);
    return 0;
}

/* The flush_interval passed: stores what waits. */
static int
s_tick (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    s_flush (actor, self, false);
    return 0;
}

/* Stores what still waits (once only after a hard stop), then releases
   everything. */
static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    if (!self)
        return;
    if (self->n_pending && self->conn) {
        /* One last try; after a hard stop nothing waits for more. */
        size_t n = self->n_pending;
        if (s_flush (actor, self, ef_actor_stopping (actor)) != 0
            && self->n_pending)
            ef_error ("%zu dead letters were not stored (their rows stay "
                      "unacknowledged)",
                      n);
    }
    if (self->stored)
        ef_info ("%" PRIu64 " dead letters stored", self->stored);
    for (size_t i = 0; i < self->n_pending; i++)
        embedflow__v1__dead_letter__free_unpacked (self->pending[i], NULL);
    free (self->pending);
    PQfinish (self->conn);
    free (self);
    ef_actor_set_state (actor, NULL);
}

static const ef_port_def_t s_ports[] = {
    {"dead", EF_PORT_IN, "dead", false, 10000},
    {"acks", EF_PORT_OUT, "acks", false, 10000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_dlq_actor = {
    .name = "dlq",
    .summary = "stores rows that cannot be written, with the reason",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .ports = s_ports,
    .flags = 0,
    .default_instances = 1,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .drain = NULL,
    .destroy = s_destroy,
};
