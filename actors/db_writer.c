/*  db_writer.c — writes row batches to PostgreSQL, one connection each.

    Ports
      batches  IN, one endpoint per instance: a RowBatch (one frame); the
               splitter routes each document to one writer, so its rows
               are written in arrival order
      acks     OUT: an Ack per batch, counting the rows committed (with
               their covers) per stream
      dead     OUT: DeadLetter frames (one message per settled group) for
               the rows the database refuses; the DLQ acks those

    Each batch is one transaction (postgres/pgwrite.c). A transient
    failure (connection lost, deadlock, server restarting) is retried
    with backoff after reconnecting; meanwhile this writer reads nothing,
    so its queue fills and backpressure reaches the source. A permanent
    failure caused by data (SQLSTATE classes 21, 22, 23, 54) is narrowed
    down by bisecting the batch: the halves are written separately until
    the rows the database refuses stand alone, and only those are
    dead-lettered. A permanent failure every row would hit (a missing
    table, a revoked privilege) is retried like an outage. When the retry
    budget of a batch (or part) is spent, its rows are dead-lettered as
    "retry_exhausted". Every row is settled exactly once: acked here as
    written (counting its covers), or sent to the DLQ, which acks it.

    Group commit (option adaptive): when batches are already queued
    behind the one that arrived, the writer takes them too (without
    waiting for any) and writes them as one transaction, up to a cap of
    rows that an AIMD controller (postgres/aimd.c) moves with the commit
    latency: one batch's worth more after a commit within
    adaptive_target, half after a slower one (or one that failed), never
    below one batch nor above adaptive_max_rows. With no backlog nothing
    is merged. A merged transaction is settled like one batch (bisect,
    retries, hooks, dead letters) and acked with the tallies of all its
    batches.

    A dead letter's `original` is the row as an embedflow.v1.Embedding
    (id as UUID text, metadata parsed back from metadata_json), so a
    replay can send it again as it came.

    Supervision: a writer is restarted by default (restart: always): all
    it holds between batches is its connection. Its handle fails only
    before it takes the batch, giving it back to the restarted instance.
    EMBEDFLOW_TEST_FAIL_WRITE=N:K (tests only, not in --help) makes the
    writers' handle fail K times in this process once N batches have been
    taken, as a handle that cannot go on would.
*/
#include <assert.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"
#include "pipeline/pipeline.h"
#include "embedflow/v1/embedding.pb-c.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/aimd.h"
#include "pipeline/observe.h"
#include "postgres/checkpoint.h"
#include "rows/linkwire.h"
#include "postgres/outbox.h"
#include "postgres/pg.h"
#include "postgres/pgwrite.h"
#include "postgres/schema.h"

/* How long a batch waits before it looks again whether the ANN indexes
   caught up (EF_WRITE_WAIT). */
#define S_BACKLOG_WAIT_MS 100

typedef struct {
    int64_t retry_base;        /* first backoff ceiling, ms */
    int64_t retry_cap;         /* largest backoff ceiling, ms */
    int64_t retry_budget;      /* retries of one batch (part); -1 = no limit */
    bool adaptive;             /* merge queued batches (group commit) */
    int64_t adaptive_target;   /* commit latency the cap aims under, ms */
    int64_t adaptive_max_rows; /* largest cap of a merged transaction */
} s_options_t;

static const ef_option_t s_options[] = {
    {"retry_base", EF_OPT_MS, "100ms", offsetof (s_options_t, retry_base), 1,
     3600000, "first backoff ceiling after a transient database error"},
    {"retry_cap", EF_OPT_MS, "5s", offsetof (s_options_t, retry_cap), 1,
     3600000, "largest backoff ceiling between retries"},
    {"retry_budget", EF_OPT_INT, "30", offsetof (s_options_t, retry_budget), -1,
     1000000,
     "retries of a batch before its rows go to the DLQ as retry_exhausted "
     "(-1 = retry forever)"},
    {"adaptive", EF_OPT_BOOL, "false", offsetof (s_options_t, adaptive), 0, 0,
     "merge batches already queued into one transaction, sized by AIMD on "
     "commit latency"},
    {"adaptive_target", EF_OPT_MS, "200ms",
     offsetof (s_options_t, adaptive_target), 1, 600000,
     "adaptive: commit latency under which the transaction cap grows by a "
     "batch (above it, it halves)"},
    {"adaptive_max_rows", EF_OPT_INT, "8000",
     offsetof (s_options_t, adaptive_max_rows), 1, 1000000,
     "adaptive: most rows a merged transaction gathers"},
    EF_OPTION_END};

typedef void s_free_fn_t (void *); /* frees a batch */

/* Rows written for one stream in the batch being settled. */
typedef struct {
    uint64_t stream_id;      /* receiver's stream */
    ProtobufCBinaryData key; /* its stream_key, borrowed from a row that
                                lives until the ack is sent */
    const char *reply_to;    /* the source its ack goes to, borrowed
                                like key */
    uint64_t chunk_seq;      /* chunk of the stream the rows came in */
    uint32_t attempt;        /* which sending of that chunk */
    uint64_t written;        /* received rows committed (covers) */
} s_tally_t;

typedef struct {
    const s_options_t *opts;     /* borrowed from the runtime */
    const ef_globals_t *globals; /* borrowed from the runtime */
    PGconn *conn;                /* owned */
    ef_pgwrite_t *writer;        /* owned, borrows conn */
    int port_batches;            /* IN */
    int port_acks;               /* OUT: acks, a link per source */
    int port_dead;               /* OUT */
    int port_committed;          /* OUT: wakes the cache-invalidator */
    ef_outbox_t *outbox;         /* owned; NULL without an API server */
    s_tally_t *tallies;          /* per stream, current batch */
    size_t n_tallies;            /* used */
    size_t cap_tallies;          /* allocated */
    uint64_t batch_dead;         /* rows dead-lettered in this batch */
    bool stopped;                /* a hard stop interrupted the batch */
    bool warned_no_source;       /* rows without reply_to were logged */
    uint64_t rows_written;       /* totals, for the log */
    uint64_t rows_dead;
    uint64_t transactions; /* batch transactions tried (bisect included) */
    uint64_t retries;      /* transient failures retried with backoff */
    bool backlogged;       /* waiting for the sealer (EF_WRITE_WAIT) */
    ef_aimd_t *aimd;       /* owned; NULL unless adaptive */
    Embedflow__V1__RowBatch **group; /* batches of this transaction */
    s_free_fn_t **group_free;        /* how each is freed */
    size_t n_group;                  /* used */
    size_t cap_group;                /* allocated */
    Embedflow__V1__Row **rows;       /* their rows, in arrival order */
    size_t cap_rows;                 /* allocated */
    int64_t commit_us;            /* latency of the last commit of the group */
    bool group_failed;            /* some attempt of this group failed */
    uint64_t merged;              /* transactions that merged several batches */
    uint64_t batches;             /* batches taken */
    ef_gauge_t *cap_gauge;        /* embedflow_writer_cap_rows */
    ef_counter_t *merged_counter; /* ..._merged_transactions_total */
    ef_counter_t *merged_batches; /* ..._merged_batches_total */
    ef_counter_t *index_wait;     /* ..._index_wait_seconds_total */
} s_self_t;

/* covers 0 is proto3's "unset": a row stands at least for itself. */
static uint32_t
s_covers (const Embedflow__V1__Row *row)
{
    return row->covers ? row->covers : 1;
}

/* --- dead letters -------------------------------------------------------- */

/* Sends rows[0..n) to the DLQ as one message of DeadLetter frames.
   Returns 0, -1 when the process is stopping hard or out of memory. */
static int
s_dead_letter (ef_actor_t *actor, s_self_t *self,
               Embedflow__V1__Row *const *rows, size_t n, const char *code,
               const char *sqlstate, const char *reason, uint32_t attempts)
{
    zmsg_t *msg = zmsg_new ();
    if (!msg)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const Embedflow__V1__Row *row = rows[i];
        bool lost = false;
        size_t olen = 0;
        uint8_t *orig = ef_linkwire_row_original (row, &olen, &lost);
        char *why = NULL;
        if (lost) {
            if (asprintf (&why,
                          "%s (metadata_json kept here, not in "
                          "original: %.2000s)",
                          reason, row->metadata_json)
                < 0)
                why = NULL;
        }
        Embedflow__V1__DeadLetter dl = EMBEDFLOW__V1__DEAD_LETTER__INIT;
        dl.stage = "write";
        dl.reason_code = (char *) code;
        dl.reason = why ? why : (char *) reason;
        dl.sqlstate = (char *) sqlstate;
        dl.attempts = attempts;
        dl.job_id = row->job_id;
        dl.source = row->source;
        dl.document_id = row->document_id;
        dl.original.data = orig;
        dl.original.len = orig ? olen : 0;
        dl.stream_id = row->stream_id;
        dl.stream_key = row->stream_key;
        dl.covers = s_covers (row);
        dl.chunk_seq = row->chunk_seq;
        dl.chunk_rows = row->chunk_rows;
        dl.resume_token = row->resume_token;
        dl.reply_to = row->reply_to;
        dl.checkpoint = row->checkpoint;
        dl.attempt = row->attempt;
        zframe_t *frame =
            orig ? zframe_new (
                NULL, embedflow__v1__dead_letter__get_packed_size (&dl))
                 : NULL;
        if (frame)
            embedflow__v1__dead_letter__pack (&dl, zframe_data (frame));
        free (orig);
        free (why);
        if (!frame) {
            zmsg_destroy (&msg);
            ef_error ("out of memory building dead letters");
            return -1;
        }
        zmsg_append (msg, &frame);
        self->batch_dead += dl.covers;
        ef_actor_count (actor, EF_METRIC_DEAD_LETTERED, dl.covers);
    }
    return ef_actor_send (actor, self->port_dead, 0, &msg);
}

/* --- settling a batch ---------------------------------------------------- */

/* True when two stream keys are the same bytes. */
static bool
s_same_key (ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len
           && (a.len == 0 || memcmp (a.data, b.data, a.len) == 0);
}

/* Counts rows[0..n) as written. Returns 0, -1 when out of memory. */
static int
s_count_written (s_self_t *self, Embedflow__V1__Row *const *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t t = 0;
        while (t < self->n_tallies
               && (self->tallies[t].stream_id != rows[i]->stream_id
                   || strcmp (self->tallies[t].reply_to, rows[i]->reply_to)
                   || self->tallies[t].chunk_seq != rows[i]->chunk_seq
                   || self->tallies[t].attempt != rows[i]->attempt
                   || !s_same_key (self->tallies[t].key, rows[i]->stream_key)))
            t++;
        if (t == self->n_tallies) {
            if (self->n_tallies == self->cap_tallies) {
                size_t cap = self->cap_tallies ? self->cap_tallies * 2 : 8;
                s_tally_t *grown = realloc (self->tallies, cap * sizeof *grown);
                if (!grown)
                    return -1;
                self->tallies = grown;
                self->cap_tallies = cap;
            }
            self->tallies[t] = (s_tally_t){
                rows[i]->stream_id, rows[i]->stream_key, rows[i]->reply_to,
                rows[i]->chunk_seq, rows[i]->attempt,    0};
            self->n_tallies++;
        }
        self->tallies[t].written += s_covers (rows[i]);
    }
    return 0;
}

/* True when a permanent failure can be blamed on some row's data, so
   that bisecting finds it: data exceptions (22), constraint violations
   (23), cardinality (21), too big (54), and rows pgwrite refused itself.
   Anything else (a missing table, a revoked privilege) fails every row
   alike and is retried like an outage instead, giving the operator the
   retry budget to fix it before rows go to the DLQ. */
static bool
s_row_specific (const ef_write_report_t *rep)
{
    const char *s = rep->sqlstate;
    if (!*s)
        return strcmp (rep->reason_code, "bad_row") == 0;
    return strncmp (s, "22", 2) == 0 || strncmp (s, "23", 2) == 0
           || strncmp (s, "21", 2) == 0 || strncmp (s, "54", 2) == 0;
}

/* Reconnects after a failure that left the connection broken. */
static void
s_reconnect (s_self_t *self)
{
    if (PQstatus (self->conn) == CONNECTION_OK)
        return;
    PQreset (self->conn);
    ef_actor_count_here (EF_METRIC_RECONNECTS,
                         PQstatus (self->conn) == CONNECTION_OK);
    if (PQstatus (self->conn) == CONNECTION_OK)
        ef_info ("reconnected to the database");
    else
        ef_debug ("reconnect failed: %s", PQerrorMessage (self->conn));
}

/* Writes rows[0..n), retrying transient failures and bisecting around
   permanent ones, until every row is committed or dead-lettered. tried
   is how many attempts already included these rows. Returns 0, -1 when
   a hard stop (or a failed send) interrupted it. */
static int
s_settle (ef_actor_t *actor, s_self_t *self, Embedflow__V1__Row *const *rows,
          size_t n, uint32_t tried)
{
    ef_backoff_t backoff =
        ef_backoff_make (self->opts->retry_base, self->opts->retry_cap,
                         (int) self->opts->retry_budget);
    while (true) {
        ef_write_report_t rep;
        ef_write_status_t st = ef_pgwrite_batch (self->writer, rows, n, &rep);
        if (st == EF_WRITE_WAIT) {
            /* The sealer is behind: hold the batch (and so, through the
               links, the sources) without spending the retry budget. */
            if (!self->backlogged)
                ef_info ("waiting for ANN indexes: %s (the index-sealer "
                         "builds them; in a split deployment a host must run "
                         "it)",
                         rep.message);
            self->backlogged = true;
            ef_counter_add (self->index_wait,
                            (uint64_t) S_BACKLOG_WAIT_MS * 1000000);
            if (ef_backoff_sleep (S_BACKLOG_WAIT_MS, ef_actor_stop_flag (actor))
                != 0) {
                self->stopped = true;
                return -1;
            }
            continue;
        }
        if (self->backlogged)
            ef_info ("ANN indexes caught up: writing again");
        self->backlogged = false;
        tried++;
        ef_actor_count (actor, EF_METRIC_ERRORS, st != EF_WRITE_OK);
        self->transactions++;
        self->group_failed |= st != EF_WRITE_OK;
        if (st == EF_WRITE_OK) {
            self->commit_us = rep.elapsed_us;
            ef_observe_committed (actor, rows, n, rep.elapsed_us);
            if (s_count_written (self, rows, n) != 0) {
                ef_error ("out of memory counting acks");
                return -1;
            }
            return 0;
        }
        if (st == EF_WRITE_ERROR && s_row_specific (&rep)) {
            if (n == 1) {
                ef_warn_kv (
                    EF_KV (EF_KV_STR ("document_id", rows[0]->document_id),
                           EF_KV_U64 ("chunk_index", rows[0]->chunk_index),
                           EF_KV_STR ("sqlstate", rep.sqlstate)),
                    "dead-lettering %s/%" PRIu32 ": %s%s%s",
                    rows[0]->document_id, rows[0]->chunk_index, rep.sqlstate,
                    *rep.sqlstate ? " " : "", rep.message);
                return s_dead_letter (actor, self, rows, 1, rep.reason_code,
                                      rep.sqlstate, rep.message, tried);
            }
            ef_debug ("%zu rows refused (%s %s): bisecting", n, rep.sqlstate,
                      rep.message);
            size_t half = n / 2;
            if (s_settle (actor, self, rows, half, tried) != 0)
                return -1;
            return s_settle (actor, self, rows + half, n - half, tried);
        }
        int64_t delay = ef_backoff_next (&backoff);
        if (delay < 0) {
            s_reconnect (self); /* for the batches after this one */
            ef_error_kv (
                EF_KV (EF_KV_U64 ("rows", n), EF_KV_U64 ("attempts", tried)),
                "giving up on %zu rows after %" PRIu32
                " attempts, sending them to the DLQ: %s",
                n, tried, rep.message);
            char reason[sizeof rep.message + 64];
            snprintf (reason, sizeof reason,
                      "gave up after %" PRIu32 " attempts: %.500s", tried,
                      rep.message);
            return s_dead_letter (actor, self, rows, n, "retry_exhausted",
                                  rep.sqlstate, reason, tried);
        }
        self->retries++;
        /* Loud on the first failure, quiet while it goes on. */
        if (st == EF_WRITE_ERROR)
            ef_error ("write of %zu rows refused (%s%s%s), retry %d in %" PRId64
                      " ms: %s",
                      n, rep.reason_code, *rep.sqlstate ? " " : "",
                      rep.sqlstate, backoff.attempt, delay, rep.message);
        else if (backoff.attempt == 1)
            ef_warn ("write of %zu rows failed (%s%s%s), retrying: %s", n,
                     rep.reason_code, *rep.sqlstate ? " " : "", rep.sqlstate,
                     rep.message);
        else
            ef_debug ("retry %d in %" PRId64 " ms: %s", backoff.attempt, delay,
                      rep.message);
        ef_actor_count (actor, EF_METRIC_RETRIES, 1);
        if (ef_backoff_sleep (delay, ef_actor_stop_flag (actor)) != 0) {
            self->stopped = true;
            return -1;
        }
        s_reconnect (self);
    }
}

/* Sends the Ack of the batch just settled for the streams of the source
   reply_to, if it wrote anything for them, on the link of the acks port
   that leads to that source. An ack no link leads to is logged and
   dropped (the rows are committed; only the source does not hear). */
static int
s_send_ack_to (ef_actor_t *actor, s_self_t *self, const char *reply_to)
{
    ef_ack_builder_t b = {0};
    bool oom = false;
    for (size_t i = 0; i < self->n_tallies && !oom; i++) {
        const s_tally_t *x = &self->tallies[i];
        if (strcmp (x->reply_to, reply_to) != 0)
            continue;
        Embedflow__V1__StreamTally *t =
            ef_ack_tally (&b, x->stream_id, x->chunk_seq, x->attempt, x->key);
        if (t)
            t->written += x->written;
        oom = !t;
    }
    if (b.n == 0 && !oom)
        return 0;
    zmsg_t *msg = ef_ack_message (&b, ef_actor_name (actor));
    if (oom)
        zmsg_destroy (&msg);
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
        return 0;
    }
    return rc;
}

/* Sends the Acks of the batch just settled, one per source; rows that
   name no source (reply_to empty) are acknowledged to no one. */
static int
s_send_ack (ef_actor_t *actor, s_self_t *self)
{
    for (size_t i = 0; i < self->n_tallies; i++) {
        bool sent = !*self->tallies[i].reply_to;
        /* only a splitter of an older embedflow (no reply_to on the
           wire) sends such rows: their source never hears of them */
        if (sent && !self->warned_no_source) {
            ef_warn ("rows of stream %llu name no source to acknowledge "
                     "(reply_to): is a host upstream running an older "
                     "embedflow? their acks are not sent",
                     (unsigned long long) self->tallies[i].stream_id);
            self->warned_no_source = true;
        }
        for (size_t j = 0; j < i && !sent; j++)
            sent = strcmp (self->tallies[j].reply_to, self->tallies[i].reply_to)
                   == 0;
        if (!sent && s_send_ack_to (actor, self, self->tallies[i].reply_to))
            return -1;
    }
    return 0;
}

/* --- actor callbacks ----------------------------------------------------- */

/* Connects, migrates the schema and sets up the writer; on failure the
   reason (never a password) goes to ef_actor_fail. */
static int
s_init (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    self->port_batches = ef_actor_port (actor, "batches");
    self->port_acks = ef_actor_port (actor, "acks");
    self->port_dead = ef_actor_port (actor, "dead");
    assert (self->port_batches >= 0 && self->port_acks >= 0
            && self->port_dead >= 0);

    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    const char *schema = self->globals->schema;
    int dim = (int) self->globals->dim;
    self->writer = ef_pgwrite_new (self->conn, schema, dim);
    if (!self->writer) {
        ef_actor_fail (actor, "cannot set up the writer for schema \"%s\"",
                       schema);
        return -1;
    }
    ef_pgwrite_set_backlog_limit (self->writer,
                                  self->globals->index_max_unindexed_rows);
    /* Pull checkpoints commit with the rows they count. */
    if (ef_pgwrite_add_hook (self->writer, ef_checkpoint_rows_hook,
                             (void *) schema)
        != 0) {
        ef_actor_fail (actor, "too many write hooks");
        return -1;
    }
    /* Changed document ids commit with their rows, for the
       cache-invalidator; only when there is an API server to tell. */
    self->port_committed = ef_actor_port (actor, "committed");
    if (self->globals->api_server && *self->globals->api_server
        && (!(self->outbox = ef_outbox_new (schema))
            || ef_pgwrite_add_hook (self->writer, ef_outbox_hook, self->outbox)
                   != 0)) {
        ef_actor_fail (actor, "cannot set up the invalidation outbox");
        return -1;
    }
    const char *name = ef_actor_name (actor);
    self->index_wait = ef_metrics_seconds_labeled (
        "embedflow_writer_index_wait_seconds_total",
        "time batches waited because too many rows lacked their ANN index "
        "(index.max_unindexed_rows)",
        (const char *const[]){"actor", ef_actor_name (actor), NULL});
    self->merged_counter = ef_metrics_counter (
        "embedflow_writer_merged_transactions_total",
        "Transactions that merged several queued batches (adaptive).", name);
    self->merged_batches = ef_metrics_counter (
        "embedflow_writer_merged_batches_total",
        "Batches written in merged transactions (adaptive).", name);
    if (self->opts->adaptive) {
        /* The step starts at one row and follows the batches seen. */
        self->aimd = ef_aimd_new ((double) self->opts->adaptive_target / 1e3, 1,
                                  (size_t) self->opts->adaptive_max_rows);
        if (!self->aimd) {
            ef_actor_fail (actor, "out of memory");
            return -1;
        }
        self->cap_gauge = ef_metrics_gauge (
            "embedflow_writer_cap_rows",
            "Rows a merged transaction may gather now (adaptive, AIMD).", name);
        ef_gauge_set (self->cap_gauge, (int64_t) ef_aimd_cap (self->aimd));
    }
    ef_info ("writing to database %s on %s:%s as %s, schema %s",
             PQdb (self->conn), PQhost (self->conn), PQport (self->conn),
             PQuser (self->conn), schema);
    return 0;
}

static void
s_free_unpacked (void *batch)
{
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
}

/* Unpacks a RowBatch message (or takes the batch a splitter in this
   process handed over as an object) and destroys the message; *free_fn
   gets how the batch is freed. NULL (logged) when it is not one: nobody
   can be acked for it, so its streams stay open and the client sees no
   result. */
static Embedflow__V1__RowBatch *
s_unpack (ef_actor_t *actor, int port, zmsg_t **msg_p, s_free_fn_t **free_fn)
{
    Embedflow__V1__RowBatch *batch =
        ef_actor_local_take (actor, port, *msg_p, free_fn);
    if (batch) {
        zmsg_destroy (msg_p);
        return batch;
    }
    *free_fn = s_free_unpacked;
    zframe_t *frame = zmsg_first (*msg_p);
    char why[128] = "an empty message";
    batch = frame ? ef_linkwire_row_batch (zframe_data (frame),
                                           zframe_size (frame), why, sizeof why)
                  : NULL;
    if (!batch)
        ef_error ("dropping a message of %zu frames: %s", zmsg_size (*msg_p),
                  why);
    zmsg_destroy (msg_p);
    return batch;
}

/* Adds batch to the group being gathered, its rows after the rows so far
   (*n of them, updated). Returns 0, -1 when out of memory (nothing
   added). */
static int
s_group_add (s_self_t *self, Embedflow__V1__RowBatch *batch,
             s_free_fn_t *free_fn, size_t *n)
{
    if (self->n_group == self->cap_group) {
        size_t cap = self->cap_group ? self->cap_group * 2 : 8;
        void *grown = realloc (self->group, cap * sizeof *self->group);
        if (!grown)
            return -1;
        self->group = grown;
        grown = realloc (self->group_free, cap * sizeof *self->group_free);
        if (!grown)
            return -1;
        self->group_free = grown;
        self->cap_group = cap;
    }
    if (*n + batch->n_rows > self->cap_rows) {
        size_t cap = self->cap_rows ? self->cap_rows : 1024;
        while (cap < *n + batch->n_rows)
            cap *= 2;
        void *grown = realloc (self->rows, cap * sizeof *self->rows);
        if (!grown)
            return -1;
        self->rows = grown;
        self->cap_rows = cap;
    }
    self->group_free[self->n_group] = free_fn;
    self->group[self->n_group++] = batch;
    memcpy (self->rows + *n, batch->rows, batch->n_rows * sizeof *self->rows);
    *n += batch->n_rows;
    return 0;
}

/* Wakes the cache-invalidator when the transactions just settled added
   document ids to the outbox. */
static void
s_wake_invalidator (ef_actor_t *actor, s_self_t *self)
{
    uint64_t outboxed = self->outbox ? ef_outbox_take_added (self->outbox) : 0;
    if (!outboxed)
        return;
    /* A hint only: when the link is full the invalidator is awake. */
    Embedflow__V1__Committed c = EMBEDFLOW__V1__COMMITTED__INIT;
    c.from = (char *) ef_actor_name (actor);
    c.documents = outboxed > UINT32_MAX ? UINT32_MAX : (uint32_t) outboxed;
    zmsg_t *wake = zmsg_new ();
    zframe_t *f =
        zframe_new (NULL, embedflow__v1__committed__get_packed_size (&c));
    if (wake && f) {
        embedflow__v1__committed__pack (&c, zframe_data (f));
        zmsg_append (wake, &f);
        if (ef_actor_try_send (actor, self->port_committed, 0, &wake) != 1)
            zmsg_destroy (&wake);
    }
    zframe_destroy (&f);
    zmsg_destroy (&wake);
}

/* Settles rows[0..n), the rows of batches[0..nb), as one transaction
   (bisected when a row is refused), acks them, feeds the controller and
   frees the batches (each with frees[i]). A group that cannot be settled now (hard stop)
   stays unacked: the upstream re-sends it. */
static void
s_write (ef_actor_t *actor, s_self_t *self, Embedflow__V1__Row *const *rows,
         size_t n, Embedflow__V1__RowBatch **batches, s_free_fn_t *const *frees,
         size_t nb)
{
    self->n_tallies = 0;
    self->batch_dead = 0;
    self->group_failed = false;
    self->commit_us = 0;
    self->batches += nb;
    ef_actor_count (actor, EF_METRIC_ROWS_IN, (int64_t) n);
    int rc = s_settle (actor, self, rows, n, 0);
    if (rc == 0)
        rc = s_send_ack (actor, self);
    uint64_t written = 0;
    for (size_t i = 0; i < self->n_tallies; i++)
        written += self->tallies[i].written;
    self->rows_written += written;
    self->rows_dead += self->batch_dead;
    uint64_t first = batches[0]->batch_id;
    char what[64];
    if (nb > 1)
        snprintf (what, sizeof what, "batches %" PRIu64 "+%zu merged", first,
                  nb - 1);
    else
        snprintf (what, sizeof what, "batch %" PRIu64, first);
    if (self->batch_dead)
        ef_info_kv (EF_KV (EF_KV_U64 ("rows_written", written),
                           EF_KV_U64 ("rows_dead_lettered", self->batch_dead)),
                    "%s: %" PRIu64 " rows written, %" PRIu64 " dead-lettered",
                    what, written, self->batch_dead);
    else
        ef_debug ("%s: %" PRIu64 " rows written", what, written);
    if (rc != 0 && !self->stopped && !ef_actor_stopping (actor))
        ef_error ("%s left unsettled", what);
    if (nb > 1) {
        self->merged++;
        ef_counter_add (self->merged_counter, 1);
        ef_counter_add (self->merged_batches, nb);
    }
    if (self->aimd && rc == 0) {
        /* A failure (a bisected poison row, a retry) counts as slow: the
           next transactions are smaller, so redoing one costs less. */
        double latency = self->group_failed
                             ? (double) self->opts->adaptive_target * 2e-3 + 1
                             : (double) self->commit_us / 1e6;
        ef_gauge_set (self->cap_gauge,
                      (int64_t) ef_aimd_observe (self->aimd, latency));
    }
    for (size_t i = 0; i < nb; i++)
        frees[i](batches[i]);
    s_wake_invalidator (actor, self);
}

/* Batches taken by the writers of this process, and the failures
   EMBEDFLOW_TEST_FAIL_WRITE injected so far: process-wide, because a
   restarted instance starts with new state. */
static atomic_long s_fault_batches, s_fault_done;

/* True when EMBEDFLOW_TEST_FAIL_WRITE=N:K asks this call to fail: the
   K calls after the first N batches. Logged with ef_actor_fail. */
static bool
s_fault (ef_actor_t *actor)
{
    const char *spec = getenv ("EMBEDFLOW_TEST_FAIL_WRITE");
    long after, times;
    char tail;
    if (!spec || sscanf (spec, "%ld:%ld%c", &after, &times, &tail) != 2)
        return false;
    if (atomic_load (&s_fault_batches) < after)
        return false;
    long k = atomic_fetch_add (&s_fault_done, 1) + 1;
    if (k > times)
        return false;
    ef_actor_fail (actor,
                   "injected failure %ld of %ld (EMBEDFLOW_TEST_FAIL_WRITE)", k,
                   times);
    return true;
}

/* Settles one RowBatch, with the batches queued behind it when
   adaptive, and acks them. Returns 0: a batch that cannot be settled now
   stays unacked, the writer goes on; -1 only for an injected failure,
   with the batch left in *msg_p for the restarted writer. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_self_t *self = ef_actor_state (actor);
    if (port != self->port_batches) {
        zmsg_destroy (msg_p);
        return 0;
    }
    if (s_fault (actor))
        return -1;
    atomic_fetch_add (&s_fault_batches, 1);
    s_free_fn_t *free_batch = NULL;
    Embedflow__V1__RowBatch *batch = s_unpack (actor, port, msg_p, &free_batch);
    if (!batch)
        return 0;
    size_t n = 0;
    self->n_group = 0;
    if (!self->aimd || s_group_add (self, batch, free_batch, &n) != 0) {
        s_write (actor, self, batch->rows, batch->n_rows, &batch, &free_batch,
                 1);
        return 0;
    }
    /* Take what is already queued, never wait for more: with no backlog
       the batch goes alone and latency stays low. */
    ef_aimd_set_step (self->aimd, batch->n_rows ? batch->n_rows : 1);
    size_t cap = ef_aimd_cap (self->aimd);
    while (n < cap) {
        zmsg_t *msg = NULL;
        if (ef_actor_try_recv (actor, self->port_batches, &msg) != 1)
            break;
        s_free_fn_t *free_next = NULL;
        Embedflow__V1__RowBatch *next =
            s_unpack (actor, port, &msg, &free_next);
        if (!next)
            continue;
        if (s_group_add (self, next, free_next, &n) != 0) {
            /* Out of memory: what is gathered goes, then this one. */
            s_write (actor, self, self->rows, n, self->group, self->group_free,
                     self->n_group);
            self->n_group = 0;
            s_write (actor, self, next->rows, next->n_rows, &next, &free_next,
                     1);
            return 0;
        }
        ef_aimd_set_step (self->aimd, next->n_rows ? next->n_rows : 1);
    }
    s_write (actor, self, self->rows, n, self->group, self->group_free,
             self->n_group);
    self->n_group = 0;
    return 0;
}

/* Logs the totals and releases the connection. */
static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    if (self->rows_written || self->rows_dead)
        ef_info_kv (EF_KV (EF_KV_U64 ("rows_written", self->rows_written),
                           EF_KV_U64 ("rows_dead_lettered", self->rows_dead),
                           EF_KV_U64 ("transactions", self->transactions),
                           EF_KV_U64 ("retries", self->retries),
                           EF_KV_U64 ("batches", self->batches)),
                    "%" PRIu64 " rows written, %" PRIu64
                    " dead-lettered, %" PRIu64 " transactions, %" PRIu64
                    " retries, %" PRIu64 " batches, %" PRIu64
                    " merged transactions",
                    self->rows_written, self->rows_dead, self->transactions,
                    self->retries, self->batches, self->merged);
    ef_aimd_destroy (&self->aimd);
    free (self->group);
    free (self->group_free);
    free (self->rows);
    ef_pgwrite_destroy (&self->writer);
    ef_outbox_destroy (&self->outbox);
    PQfinish (self->conn);
    free (self->tallies);
}

static const ef_port_def_t s_ports[] = {
    {"batches", EF_PORT_IN, "embedflow.v1.RowBatch", true, 4},
    {"acks", EF_PORT_OUT, "embedflow.v1.Ack", false, 10000},
    {"dead", EF_PORT_OUT, "embedflow.v1.DeadLetter", false, 10000},
    {"committed", EF_PORT_OUT, "embedflow.v1.Committed", false, 1000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_db_writer_actor = {
    .name = "db-writer",
    .summary = "writes row batches to PostgreSQL (one connection each)",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_self_t),
    .ports = s_ports,
    .flags = 0,
    .default_instances = 2,
    .init = s_init,
    .handle = s_handle,
    .tick = NULL,
    .drain = NULL,
    .destroy = s_destroy,
    .restart = true,
};
