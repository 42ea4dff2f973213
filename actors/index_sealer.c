/*  index_sealer.c — keeps a segmented embedding table's ANN indexes.

    With index.segments (postgres/segments.h), writers load new rows into
    an unindexed growing segment at the speed of a plain load, and this
    actor does the indexing in the background: it seals the growing
    segment once it holds index.seal_rows rows (or has been idle with
    rows for index.seal_idle), builds the sealed segment's index with one
    bulk CREATE INDEX CONCURRENTLY, and merges the smallest sealed
    segments while there are more than index.max_segments. Writers wait
    while more than index.max_unindexed_rows rows lack an index, which
    bounds what a query scans exactly.

    One instance per process; of all processes on one schema, one works
    (a session lock) and the others stand by and take over when its
    connection goes. On a schema that is not segmented it does nothing.
    A database error is logged and the step tried again with backoff
    after reconnecting: nothing a step leaves half-done is lost, the next
    one finishes or drops it. A build may take minutes: a stop waits for
    it (a second signal does not).
*/
#include <stdio.h>
#include <stdlib.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"
#include "pipeline/pipeline.h"
#include "postgres/pg.h"
#include "postgres/segments.h"

#define S_MAX_BUILDERS 6 /* within EF_ACTOR_MAX_WATCHES */
/* the longest pause between looks while nothing comes or builds */
#define S_IDLE_MAX_MS 1000

typedef struct {
    int64_t check_every;   /* ms between looks at the growing segment */
    int64_t builders;      /* connections that build indexes at once */
    int64_t build_workers; /* parallel workers of each build */
} s_options_t;

static const ef_option_t s_options[] = {
    {"check_every", EF_OPT_MS, "100ms", offsetof (s_options_t, check_every), 10,
     3600000,
     "how often the growing segment is counted (a full one is sealed "
     "within this); while no rows come and nothing builds, the looks "
     "thin out to one a second"},
    {"builders", EF_OPT_INT, "2", offsetof (s_options_t, builders), 1,
     S_MAX_BUILDERS,
     "index builds and merges run at once, each on its own connection "
     "(and a server core, and index.build_memory)"},
    {"build_workers", EF_OPT_INT, "1", offsetof (s_options_t, build_workers),
     -1, 64,
     "parallel workers PostgreSQL may add to each build and merge "
     "(max_parallel_maintenance_workers; -1: the server's setting): each "
     "is one more process beside the builders, taking cores from "
     "queries during a load (0 leaves queries the most and indexes "
     "slowest)"},
    EF_OPTION_END};

typedef struct s_self s_self_t;

/* What a builder's watch callback needs. */
typedef struct {
    s_self_t *self; /* the actor's state */
    int index;      /* which builder */
    int watched;    /* descriptor watched while it builds, or -1 */
} s_builder_t;

struct s_self {
    const s_options_t *opts;           /* borrowed */
    PGconn *conn;                      /* owned: counts and rotates */
    PGconn *build[S_MAX_BUILDERS];     /* owned: builds and merges */
    s_builder_t watch[S_MAX_BUILDERS]; /* per builder */
    int n_builders;                    /* entries of build and watch */
    ef_sealer_t *sealer;               /* NULL when not segmented */
    ef_backoff_t backoff;              /* after a failed step */
    bool failing;                      /* the last step failed */
    ef_gauge_t *waiting;               /* rows without their index */
    ef_gauge_t *sealed;                /* sealed segments */
    ef_histogram_t *builds;            /* seconds of each build */
    ef_histogram_t *merges;            /* seconds of each merge */
    int64_t wait_ms;                   /* until the next step when idle */
    int64_t last_waiting;              /* stats.waiting at the last step */
};

static int
s_init (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    self->opts = ef_actor_options (actor);
    const ef_globals_t *g = ef_actor_globals (actor);
    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    char err[512];
    int segmented =
        ef_segments_enabled (self->conn, g->schema, err, sizeof err);
    if (segmented < 0) {
        ef_actor_fail (actor, "%s", err);
        return -1;
    }
    if (!segmented) {
        ef_debug ("schema \"%s\" is not segmented: nothing to seal", g->schema);
        PQfinish (self->conn);
        self->conn = NULL;
        return 0;
    }
    ef_segments_opts_t opts = {
        .seal_rows = g->index_seal_rows,
        .seal_idle_ms = g->index_seal_idle,
        .max_segments = g->index_max_segments,
        .max_unindexed_rows = g->index_max_unindexed_rows,
        .build_memory = g->index_build_memory,
        .build_workers = (int) self->opts->build_workers,
        .dim = (int) g->dim,
    };
    self->n_builders = (int) self->opts->builders;
    for (int i = 0; i < self->n_builders; i++) {
        self->watch[i] = (s_builder_t){.self = self, .index = i, .watched = -1};
        if (!(self->build[i] = ef_pg_open_for_actor (actor)))
            return -1;
    }
    self->sealer = ef_sealer_new (self->conn, self->build, self->n_builders,
                                  g->schema, &opts);
    if (!self->sealer) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    self->backoff = ef_backoff_make (100, 30000, -1);
    const char *name = ef_actor_name (actor);
    self->waiting = ef_metrics_gauge (
        "embedflow_index_unindexed_rows",
        "rows of the segmented embedding table without their ANN index yet "
        "(growing segment and segments waiting for or in a build)",
        name);
    self->sealed = ef_metrics_gauge (
        "embedflow_index_sealed_segments",
        "sealed segments, each with its own ANN index a query reads", name);
    self->builds =
        ef_metrics_histogram ("embedflow_index_build_seconds",
                              "time of one sealed segment's index build", name);
    self->merges = ef_metrics_histogram (
        "embedflow_index_merge_seconds",
        "time of one merge of two sealed segments (copy, index, swap)", name);
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* What a step or poll did: logged, and the next look scheduled. */
static void s_after (ef_actor_t *actor, s_self_t *self, int rc,
                     ef_seal_step_t did, const char *detail, const char *err);

static int
s_on_readable (ef_actor_t *actor, int fd, void *arg)
{
    (void) fd;
    s_builder_t *b = arg;
    ef_seal_step_t did;
    char detail[256], err[1024];
    int rc = ef_sealer_poll (b->self->sealer, b->index, &did, detail,
                             sizeof detail, err, sizeof err);
    s_after (actor, b->self, rc, did, detail, err);
    return 0;
}

static void
s_after (ef_actor_t *actor, s_self_t *self, int rc, ef_seal_step_t did,
         const char *detail, const char *err)
{
    for (int i = 0; i < self->n_builders; i++) {
        s_builder_t *b = &self->watch[i];
        int fd = ef_sealer_fd (self->sealer, i);
        if (fd == b->watched)
            continue;
        if (b->watched >= 0)
            ef_actor_unwatch_fd (actor, b->watched);
        b->watched = -1;
        if (fd >= 0 && ef_actor_watch_fd (actor, fd, s_on_readable, b) == 0)
            b->watched = fd;
    }
    if (rc != 0) {
        int64_t delay = ef_backoff_next (&self->backoff);
        if (!self->failing)
            ef_warn ("sealing: %s (retrying)", err);
        else
            ef_debug ("sealing: %s (retry in %lld ms)", err, (long long) delay);
        self->failing = true;
        ef_actor_wake_in (actor, delay);
        return;
    }
    if (self->failing)
        ef_info ("sealing works again");
    self->failing = false;
    self->backoff = ef_backoff_make (100, 30000, -1);
    ef_seal_stats_t stats;
    ef_sealer_stats (self->sealer, &stats);
    ef_gauge_set (self->waiting, stats.waiting);
    ef_gauge_set (self->sealed, stats.sealed);
    if (did == EF_SEAL_BUILT)
        ef_histogram_observe (self->builds, stats.seconds);
    else if (did == EF_SEAL_MERGED)
        ef_histogram_observe (self->merges, stats.seconds);
    if (did == EF_SEAL_STARTED)
        ef_debug ("%s", detail);
    else if (did != EF_SEAL_NOTHING)
        ef_info ("%s", detail);
    /* after work there may be more (a build after a rotation); while a
       build runs the growing segment is still counted and rotated on
       the other connection. With no rows coming and nothing building,
       the looks thin out to one per S_IDLE_MAX_MS (each is a few
       queries on the server); a new row brings the pace back. */
    bool busy = false;
    for (int i = 0; i < self->n_builders; i++)
        busy |= ef_sealer_fd (self->sealer, i) >= 0;
    bool idle =
        did == EF_SEAL_NOTHING && !busy && stats.waiting == self->last_waiting;
    self->last_waiting = stats.waiting;
    self->wait_ms = !idle ? self->opts->check_every
                    : self->wait_ms * 2 < S_IDLE_MAX_MS ? self->wait_ms * 2
                                                        : S_IDLE_MAX_MS;
    if (self->wait_ms < self->opts->check_every)
        self->wait_ms = self->opts->check_every;
    ef_actor_wake_in (actor, did != EF_SEAL_NOTHING && did != EF_SEAL_STARTED
                                 ? 0
                                 : self->wait_ms);
}

static int
s_tick (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    if (!self->sealer)
        return 0;
    if (PQstatus (self->conn) != CONNECTION_OK)
        PQreset (self->conn);
    ef_seal_step_t did;
    char detail[256], err[1024];
    int rc = ef_sealer_step (self->sealer, &did, detail, sizeof detail, err,
                             sizeof err);
    s_after (actor, self, rc, did, detail, err);
    return 0;
}

/* Nothing flows through the sealer: it is drained at once, and keeps
   sealing while the writers drain (they may be waiting for it). */
static void
s_drain (ef_actor_t *actor)
{
    ef_actor_drained (actor);
}

static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    /* a stop does not wait for a build of minutes: the next sealer
       starts it again */
    if (self->sealer)
        ef_sealer_cancel (self->sealer);
    ef_sealer_destroy (&self->sealer);
    for (int i = 0; i < self->n_builders; i++)
        PQfinish (self->build[i]);
    PQfinish (self->conn);
}

static const ef_port_def_t s_ports[] = {
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_index_sealer_actor = {
    .name = "index-sealer",
    .summary = "seals the growing segment of a segmented embedding table and "
               "builds and merges the ANN indexes of sealed ones",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_self_t),
    .ports = s_ports,
    .default_instances = 1,
    .init = s_init,
    .tick = s_tick,
    .drain = s_drain,
    .destroy = s_destroy,
    .restart = true,
};
