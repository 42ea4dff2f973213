/*  dlq.c — stores dead letters in <schema>.dead_letter and acks them.

    Ports
      dead  IN: messages of one or more frames, each a DeadLetter (from
            the splitter, the writers, any actor that gives up on a row)
      acks  OUT: an Ack per stored group, counting each letter's covers as
            dead_lettered for its stream (covers 0: a letter that settles
            no received row, e.g. a failed invalidation); a letter with
            reason_code EF_DEAD_STREAM_ENDED also tells the receiver to end
            the upload, with the letter's reason

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
#include "embedflow/metrics.h"
#include "pipeline/pipeline.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "rows/badrows.h"
#include "postgres/checkpoint.h"
#include "rows/linkwire.h"
#include "postgres/pg.h"
#include "postgres/pgwrite.h"
#include "postgres/schema.h"
#include "rows/spool.h"

#include <unistd.h>

typedef struct {
    int64_t flush_interval; /* ms a letter may wait for others */
    int64_t flush_items;    /* store at once when this many wait */
    int64_t retry_base;     /* first backoff ceiling, ms */
    int64_t retry_cap;      /* largest backoff ceiling, ms */
    char *spool;            /* file for letters while the database is away */
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
    {"spool", EF_OPT_STRING, NULL, offsetof (s_options_t, spool), 0, 0,
     "file that keeps dead letters while the database is unreachable "
     "(default: dlq-SCHEMA.spool in data_dir, else the working directory)"},
    EF_OPTION_END};

typedef struct {
    const s_options_t *opts;             /* borrowed from the runtime */
    const ef_globals_t *globals;         /* borrowed from the runtime */
    PGconn *conn;                        /* owned */
    int port_dead;                       /* IN */
    int port_acks;                       /* OUT: acks, a link per source */
    Embedflow__V1__DeadLetter **pending; /* unpacked, waiting to be stored */
    size_t n_pending;                    /* used */
    size_t cap_pending;                  /* allocated */
    uint64_t stored;                     /* letters stored, for the log */
    char *spool_path;                    /* heap */
    ef_spool_t *spool;           /* open while it holds letters, else NULL */
    ef_backoff_t import_backoff; /* between imports that failed */
    int64_t import_delay;        /* ms until the next import try */
    uint64_t spooled;            /* letters written to the spool */
    uint64_t imported;           /* spooled letters stored later */
    uint64_t store_failures;     /* failed attempts to store */
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

/* Sends one Ack for the letters just stored whose source is reply_to,
   if any carried covers, on the link of the acks port that leads to
   that source. An ack no link leads to is logged and dropped (the
   letters are stored; only the source does not hear). */
static int
s_send_ack_to (ef_actor_t *actor, s_self_t *self, const char *reply_to)
{
    ef_ack_builder_t b = {0};
    for (size_t i = 0; i < self->n_pending; i++) {
        const Embedflow__V1__DeadLetter *d = self->pending[i];
        bool ends = d->reason_code
                    && strcmp (d->reason_code, EF_DEAD_STREAM_ENDED) == 0;
        if ((d->covers == 0 && !ends) || strcmp (d->reply_to, reply_to) != 0)
            continue;
        /* the key and the reason live as long as pending */
        Embedflow__V1__StreamTally *t = ef_ack_tally (
            &b, d->stream_id, d->chunk_seq, d->attempt, d->stream_key);
        if (!t) {
            ef_ack_builder_clear (&b);
            ef_error ("out of memory building an ack");
            return -1;
        }
        t->dead_lettered += d->covers;
        if (ends)
            t->ended = d->reason;
    }
    if (b.n == 0)
        return 0;
    zmsg_t *msg = ef_ack_message (&b, ef_actor_name (actor));
    if (!msg) {
        ef_error ("out of memory building an ack");
        return -1;
    }
    int rc = ef_actor_send_to (actor, self->port_acks, reply_to, &msg);
    if (rc == -2) {
        ef_warn ("acks for '%s': no link of port acks leads to it (add it "
                 "to an ack link's to); dropped",
                 reply_to);
        zmsg_destroy (&msg);
        rc = 0;
    }
    return rc;
}

/* Sends the Acks of the letters just stored, one per source. Letters
   with no source (imported from the spool after a restart: their
   streams are gone) are acknowledged to no one. */
static int
s_send_ack (ef_actor_t *actor, s_self_t *self)
{
    for (size_t i = 0; i < self->n_pending; i++) {
        const char *to = self->pending[i]->reply_to;
        bool sent = !*to;
        for (size_t j = 0; j < i && !sent; j++)
            sent = strcmp (self->pending[j]->reply_to, to) == 0;
        if (!sent && s_send_ack_to (actor, self, to) != 0)
            return -1;
    }
    return 0;
}

/* Runs one statement outside of pgwrite; fills rep on failure. */
static ef_write_status_t
s_command (PGconn *conn, const char *sql, ef_write_report_t *rep)
{
    PGresult *res = PQexec (conn, sql);
    ef_write_status_t st = EF_WRITE_OK;
    if (PQresultStatus (res) != PGRES_COMMAND_OK
        || (strcmp (sql, "COMMIT") == 0
            && strcmp (PQcmdStatus (res), "COMMIT") != 0)) {
        ef_pg_class_t cls = ef_pg_classify_result (conn, res);
        ef_pg_error (conn, res, rep->sqlstate, rep->message,
                     sizeof rep->message);
        snprintf (rep->reason_code, sizeof rep->reason_code, "%s",
                  cls == EF_PG_TRANSIENT ? "db_unavailable" : "db_rejected");
        st = cls == EF_PG_TRANSIENT ? EF_WRITE_RETRY : EF_WRITE_ERROR;
    }
    PQclear (res);
    return st;
}

/* Stores the pending letters; when some come from a pull, in one
   transaction with the checkpoint pieces they settle. */
static ef_write_status_t
s_store (s_self_t *self, ef_write_report_t *rep)
{
    bool pull = false;
    for (size_t i = 0; i < self->n_pending && !pull; i++)
        pull = self->pending[i]->checkpoint;
    if (!pull)
        return ef_pgwrite_dead_letters (self->conn, self->globals->schema,
                                        self->pending, self->n_pending, rep);
    memset (rep, 0, sizeof *rep);
    ef_write_status_t st = s_command (self->conn, "BEGIN", rep);
    if (st == EF_WRITE_OK)
        st = ef_pgwrite_dead_letters (self->conn, self->globals->schema,
                                      self->pending, self->n_pending, rep);
    if (st == EF_WRITE_OK)
        st = ef_checkpoint_dead_letters (self->conn, self->globals->schema,
                                         self->pending, self->n_pending, rep);
    if (st == EF_WRITE_OK)
        st = s_command (self->conn, "COMMIT", rep);
    if (st != EF_WRITE_OK && PQstatus (self->conn) == CONNECTION_OK
        && PQtransactionStatus (self->conn) != PQTRANS_IDLE) {
        PGresult *res = PQexec (self->conn, "ROLLBACK");
        PQclear (res);
    }
    return st;
}

/* True while letters wait in the spool. */
static bool
s_spooled (const s_self_t *self)
{
    return self->spool && ef_spool_count (self->spool) > 0;
}

/* Appends the pending letters to the spool (opening it first). Returns
   0 once they are on disk, -1 when the spool cannot take them. */
static int
s_spool_pending (s_self_t *self)
{
    char err[1024];
    if (!self->spool
        && !(self->spool = ef_spool_open (self->spool_path, err, sizeof err))) {
        ef_error ("%s", err);
        return -1;
    }
    if (ef_spool_append_letters (self->spool, self->pending, self->n_pending,
                                 err, sizeof err)
        != 0) {
        ef_error ("%s", err);
        return -1;
    }
    if (ef_spool_count (self->spool) == self->n_pending)
        ef_warn ("database unreachable: dead letters go to the spool %s "
                 "until it is back",
                 self->spool_path);
    self->spooled += self->n_pending;
    self->import_delay = ef_backoff_next (&self->import_backoff);
    return 0;
}

/* Stores the spooled letters, flush_items at a time, each group marked
   consumed in the spool once committed; removes the spool when it is
   empty. Returns 0 (also when nothing was spooled), -1 when the database
   did not take them (the rest stays spooled). */
static int
s_import (s_self_t *self)
{
    size_t total = 0;
    char err[1024];
    while (s_spooled (self)) {
        Embedflow__V1__DeadLetter **letters = NULL;
        size_t n = 0, skipped = 0;
        if (ef_spool_load_letters (self->spool,
                                   (size_t) self->opts->flush_items, &letters,
                                   &n, &skipped, err, sizeof err)
            != 0) {
            ef_error ("%s", err);
            return -1;
        }
        /* s_store works on the pending array: lend it these letters. */
        Embedflow__V1__DeadLetter **saved = self->pending;
        size_t saved_n = self->n_pending;
        self->pending = letters;
        self->n_pending = n;
        ef_write_report_t rep;
        memset (&rep, 0, sizeof rep);
        ef_write_status_t st = n ? s_store (self, &rep) : EF_WRITE_OK;
        self->pending = saved;
        self->n_pending = saved_n;
        for (size_t i = 0; i < n; i++)
            embedflow__v1__dead_letter__free_unpacked (letters[i], NULL);
        free (letters);
        if (st != EF_WRITE_OK) {
            self->store_failures++;
            self->import_delay = ef_backoff_next (&self->import_backoff);
            if (PQstatus (self->conn) != CONNECTION_OK)
                PQreset (self->conn);
            ef_debug ("spool import failed, next in %" PRId64 " ms: %s",
                      self->import_delay, rep.message);
            return -1;
        }
        if (skipped)
            ef_error ("spool %s: %zu records are not dead letters: dropped",
                      self->spool_path, skipped);
        /* A crash right here imports this group again: a duplicate, not
           a loss. */
        if (ef_spool_consume (self->spool, n + skipped, err, sizeof err) != 0) {
            ef_error ("%s", err);
            return -1;
        }
        self->imported += n;
        total += n;
    }
    if (self->spool) {
        ef_spool_close (&self->spool);
        unlink (self->spool_path);
    }
    ef_backoff_reset (&self->import_backoff);
    if (total)
        ef_info ("imported %zu dead letters from the spool", total);
    return 0;
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
        /* Spooled letters are stored first, in their order; while they
           cannot be, new ones join them in the spool. */
        bool away = s_spooled (self) && s_import (self) != 0;
        ef_write_status_t st = away ? EF_WRITE_RETRY : s_store (self, &rep);
        if (st == EF_WRITE_OK)
            break;
        if (away) {
            memset (&rep, 0, sizeof rep);
            snprintf (rep.reason_code, sizeof rep.reason_code,
                      "db_unavailable");
            snprintf (rep.message, sizeof rep.message,
                      "the spooled letters cannot be imported yet");
        }
        else
            self->store_failures++;
        /* Unreachable twice in a row: keep them on local disk and ack,
           rather than holding every producer back. */
        if (st == EF_WRITE_RETRY && (away || once || backoff.attempt > 0)
            && s_spool_pending (self) == 0)
            break;
        int64_t delay = ef_backoff_next (&backoff);
        ef_actor_count (actor, EF_METRIC_ERRORS, 1);
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
    /* Counted before the ack: once a client hears its rows were
       dead-lettered, a scrape must count them. */
    self->stored += self->n_pending;
    ef_actor_count (actor, EF_METRIC_DEAD_LETTERED, (int64_t) self->n_pending);
    int rc = s_send_ack (actor, self);
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
    s_self_t *self = ef_actor_state (actor);
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    self->port_dead = ef_actor_port (actor, "dead");
    self->port_acks = ef_actor_port (actor, "acks");
    assert (self->port_dead >= 0 && self->port_acks >= 0);

    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    self->import_backoff =
        ef_backoff_make (self->opts->retry_base, self->opts->retry_cap, -1);
    const char *dir = self->globals->data_dir ? self->globals->data_dir : ".";
    if (self->opts->spool && *self->opts->spool)
        self->spool_path = strdup (self->opts->spool);
    else if (asprintf (&self->spool_path, "%s/dlq-%s.spool", dir,
                       self->globals->schema)
             < 0)
        self->spool_path = NULL;
    if (!self->spool_path) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    /* Letters an earlier run had to spool: store them now. */
    if (access (self->spool_path, F_OK) == 0) {
        char err[1024];
        self->spool = ef_spool_open (self->spool_path, err, sizeof err);
        if (!self->spool)
            ef_error ("%s: its dead letters are not imported", err);
        else {
            if (ef_spool_dropped (self->spool))
                ef_warn ("spool %s: cut %" PRIu64 " bytes of a torn last "
                         "record (never acknowledged)",
                         self->spool_path, ef_spool_dropped (self->spool));
            ef_info ("spool %s holds %zu dead letters from an earlier run",
                     self->spool_path, ef_spool_count (self->spool));
            if (s_import (self) != 0)
                ef_actor_wake_in (actor, self->import_delay);
            else if (self->spool) {
                ef_spool_close (&self->spool);
                unlink (self->spool_path);
            }
        }
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
        bool undecodable = false;
        Embedflow__V1__DeadLetter *letter = ef_linkwire_dead_letter (
            zframe_data (frame), zframe_size (frame), &undecodable);
        if (undecodable)
            ef_warn ("a %zu-byte frame is not a DeadLetter: stored as "
                     "undecodable",
                     zframe_size (frame));
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
        ef_actor_wake_in (actor, s_spooled (self) ? self->import_delay : -1);
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
    if (self->n_pending == 0 && s_spooled (self) && s_import (self) != 0)
        ef_actor_wake_in (actor, self->import_delay);
    else if (s_spooled (self))
        ef_actor_wake_in (actor, self->import_delay);
    return 0;
}

/* Stores what still waits (once only after a hard stop), then releases
   everything. */
static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    if (self->n_pending && self->conn) {
        /* One last try; after a hard stop nothing waits for more. */
        size_t n = self->n_pending;
        if (s_flush (actor, self, ef_actor_stopping (actor)) != 0
            && self->n_pending)
            ef_error ("%zu dead letters were not stored (their rows stay "
                      "unacknowledged)",
                      n);
    }
    if (self->stored || self->spooled || self->store_failures)
        ef_info_kv (EF_KV (EF_KV_U64 ("dead_letters", self->stored),
                           EF_KV_U64 ("spooled", self->spooled),
                           EF_KV_U64 ("imported", self->imported)),
                    "%" PRIu64 " dead letters stored (%" PRIu64
                    " through the spool, %" PRIu64 " imported), %" PRIu64
                    " failed store attempts",
                    self->stored, self->spooled, self->imported,
                    self->store_failures);
    if (s_spooled (self))
        ef_warn ("%zu dead letters stay in the spool %s until the next start",
                 ef_spool_count (self->spool), self->spool_path);
    ef_spool_close (&self->spool);
    free (self->spool_path);
    for (size_t i = 0; i < self->n_pending; i++)
        embedflow__v1__dead_letter__free_unpacked (self->pending[i], NULL);
    free (self->pending);
    PQfinish (self->conn);
}

static const ef_port_def_t s_ports[] = {
    {"dead", EF_PORT_IN, "embedflow.v1.DeadLetter", false, 10000},
    {"acks", EF_PORT_OUT, "embedflow.v1.Ack", false, 10000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_dlq_actor = {
    .name = "dlq",
    .summary = "stores rows that cannot be written, with the reason",
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
