/*  The actor runtime with toy actors on real ZeroMQ sockets: ready
    handshake, failure reporting, per-instance routing, backpressure and
    drain. */
#include "ef_test.h"

#include "embedflow/runtime.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TOTAL 2000

typedef struct {
    int64_t count;   /* messages to produce */
    int64_t sink_us; /* per-message work in the sink */
    bool fail_init;  /* make the sink's init fail */
    bool stuck;      /* the sink never says it has drained */
} s_opts_t;

static const ef_option_t s_source_opts[] = {
    {"count", EF_OPT_INT, "2000", offsetof (s_opts_t, count), 0, 0, "n"},
    EF_OPTION_END};
static const ef_option_t s_sink_opts[] = {
    {"sink_us", EF_OPT_INT, "0", offsetof (s_opts_t, sink_us), 0, 0, "µs"},
    {"fail_init", EF_OPT_BOOL, "false", offsetof (s_opts_t, fail_init), 0, 0,
     "x"},
    {"stuck", EF_OPT_BOOL, "false", offsetof (s_opts_t, stuck), 0, 0, "x"},
    EF_OPTION_END};

static atomic_long s_sent, s_received, s_max_gap, s_full_hits;
static atomic_long s_per_sink[4];
static atomic_int s_drain_order[8], s_drain_seq;
static ef_runtime_t *s_rt;
static pthread_t s_sink_thread[4]; /* each sink's thread, set by init */

typedef struct {
    int64_t next; /* next message number */
    int out;      /* port */
    zmsg_t *held; /* a message the full link refused */
} s_source_t;

static int
s_source_init (ef_actor_t *a)
{
    s_source_t *s = calloc (1, sizeof *s);
    s->out = ef_actor_port (a, "out");
    ef_actor_set_state (a, s);
    ef_actor_wake_in (a, 0);
    return 0;
}

static int
s_source_tick (ef_actor_t *a)
{
    s_source_t *s = ef_actor_state (a);
    const s_opts_t *o = ef_actor_options (a);
    while (s->next < o->count) {
        if (!s->held) {
            s->held = zmsg_new ();
            zmsg_addmem (s->held, &s->next, sizeof s->next);
        }
        int64_t key = s->next;
        int rc = ef_actor_try_send (
            a, s->out, (int) (key % ef_actor_port_width (a, s->out)), &s->held);
        if (rc == 0) {
            atomic_fetch_add (&s_full_hits, 1);
            ef_actor_wake_in (a, 1);
            return 0;
        }
        if (rc < 0)
            return -1;
        s->next++;
        long gap =
            atomic_fetch_add (&s_sent, 1) + 1 - atomic_load (&s_received);
        long max = atomic_load (&s_max_gap);
        while (gap > max
               && !atomic_compare_exchange_weak (&s_max_gap, &max, gap))
            ;
    }
    return 0;
}

static void
s_source_drain (ef_actor_t *a)
{
    atomic_store (&s_drain_order[atomic_fetch_add (&s_drain_seq, 1)], 1);
    ef_actor_drained (a);
}

static void
s_source_destroy (ef_actor_t *a)
{
    s_source_t *s = ef_actor_state (a);
    if (s) {
        zmsg_destroy (&s->held);
        free (s);
    }
}

static int
s_sink_init (ef_actor_t *a)
{
    s_sink_thread[ef_actor_index (a)] = pthread_self ();
    const s_opts_t *o = ef_actor_options (a);
    if (o->fail_init) {
        ef_actor_fail (a, "cannot reach the moon");
        return -1;
    }
    return 0;
}

static int
s_sink_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    (void) port;
    (void) msg_p;
    const s_opts_t *o = ef_actor_options (a);
    if (o->sink_us)
        usleep ((useconds_t) o->sink_us);
    atomic_fetch_add (&s_per_sink[ef_actor_index (a)], 1);
    if (atomic_fetch_add (&s_received, 1) + 1 == TOTAL)
        ef_runtime_stop (s_rt);
    return 0;
}

static void
s_sink_drain (ef_actor_t *a)
{
    atomic_store (&s_drain_order[atomic_fetch_add (&s_drain_seq, 1)], 2);
    const s_opts_t *o = ef_actor_options (a);
    if (!o->stuck)
        ef_actor_drained (a);
}

/* "echo ARG" answers "NAME ARG" when run on the sink's own thread. */
static int
s_sink_control (ef_actor_t *a, const char *verb, const char *arg, char *reply,
                size_t len)
{
    if (strcmp (verb, "echo") != 0)
        return 1;
    if (!pthread_equal (pthread_self (), s_sink_thread[ef_actor_index (a)])) {
        snprintf (reply, len, "not on the actor's thread");
        return -1;
    }
    snprintf (reply, len, "%s %s", ef_actor_name (a), arg);
    return 0;
}

static const ef_port_def_t s_source_ports[] = {
    {"out", EF_PORT_OUT, "number", false, 2}, {NULL, 0, NULL, false, 0}};
static const ef_port_def_t s_sink_ports[] = {
    {"in", EF_PORT_IN, "number", true, 2}, {NULL, 0, NULL, false, 0}};

static const ef_actor_def_t s_source = {.name = "source",
                                        .summary = "makes numbers",
                                        .options = s_source_opts,
                                        .options_size = sizeof (s_opts_t),
                                        .ports = s_source_ports,
                                        .flags = EF_ACTOR_SOURCE,
                                        .default_instances = 1,
                                        .init = s_source_init,
                                        .tick = s_source_tick,
                                        .drain = s_source_drain,
                                        .destroy = s_source_destroy};
static const ef_actor_def_t s_sink = {.name = "sink",
                                      .summary = "counts",
                                      .options = s_sink_opts,
                                      .options_size = sizeof (s_opts_t),
                                      .ports = s_sink_ports,
                                      .default_instances = 2,
                                      .init = s_sink_init,
                                      .handle = s_sink_handle,
                                      .drain = s_sink_drain,
                                      .control = s_sink_control};

static const ef_option_t s_no_globals[] = {EF_OPTION_END};

/* A registry of source and sink (sink first when sink_first: drain
   order must not depend on it) joined by link "items", and its config. */
static ef_config_t *
s_setup_ordered (ef_registry_t **reg, bool sink_first)
{
    char err[256];
    *reg = ef_registry_new ();
    if (sink_first)
        ef_registry_add (*reg, &s_sink);
    ef_registry_add (*reg, &s_source);
    ef_registry_add (*reg, &s_sink);
    EF_CHECK (ef_registry_add (*reg, &s_sink) == -1); /* names are unique */
    EF_CHECK (ef_registry_add_link (*reg, "items", "source.out", "sink.in")
              == 0);
    atomic_store (&s_sent, 0);
    atomic_store (&s_received, 0);
    atomic_store (&s_max_gap, 0);
    atomic_store (&s_full_hits, 0);
    atomic_store (&s_drain_seq, 0);
    for (int i = 0; i < 4; i++)
        atomic_store (&s_per_sink[i], 0);
    return ef_config_new (*reg, s_no_globals, 0, err, sizeof err);
}

static ef_config_t *
s_setup (ef_registry_t **reg)
{
    return s_setup_ordered (reg, false);
}

EF_TEST (runtime_drain_follows_the_graph)
{
    /* the sink registered first still drains after the source feeding it */
    ef_registry_t *reg;
    ef_config_t *c = s_setup_ordered (&reg, true);
    char err[256];
    EF_REQUIRE (ef_config_validate (c, err, sizeof err) == 0);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    EF_CHECK (atomic_load (&s_received) == TOTAL);
    EF_CHECK (atomic_load (&s_drain_seq) == 3);
    EF_CHECK (atomic_load (&s_drain_order[0]) == 1);
    EF_CHECK (atomic_load (&s_drain_order[1]) == 2);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_routes_and_drains)
{
    ef_registry_t *reg;
    ef_config_t *c = s_setup (&reg);
    char err[256];
    EF_REQUIRE (ef_config_validate (c, err, sizeof err) == 0);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    EF_CHECK (atomic_load (&s_received) == TOTAL);
    /* per-instance link: message k went to sink k % 2 */
    EF_CHECK (atomic_load (&s_per_sink[0]) == TOTAL / 2);
    EF_CHECK (atomic_load (&s_per_sink[1]) == TOTAL / 2);
    /* sources drain before the stages after them */
    EF_CHECK (atomic_load (&s_drain_seq) == 3);
    EF_CHECK (atomic_load (&s_drain_order[0]) == 1);
    EF_CHECK (atomic_load (&s_drain_order[1]) == 2);
    ef_runtime_destroy (&s_rt);
    EF_CHECK (s_rt == NULL);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_backpressure)
{
    /* A slow sink: the producer is held at the high-water marks instead
       of queueing everything. hwm 2 on each side of two links. */
    ef_registry_t *reg;
    ef_config_t *c = s_setup (&reg);
    char err[256];
    EF_REQUIRE (ef_config_set (c, "actors.sink.sink_us", "200", err, sizeof err)
                == 0);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    EF_CHECK (atomic_load (&s_received) == TOTAL);
    EF_CHECK (atomic_load (&s_full_hits) > 0);
    /* at most (sndhwm + rcvhwm) per sink link, plus one in each handler */
    if (ef_test_verbose)
        printf ("max in flight %ld\n", atomic_load (&s_max_gap));
    EF_CHECK (atomic_load (&s_max_gap) <= 2 * (2 + 2) + 2);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_control_runs_on_the_actor_thread)
{
    ef_registry_t *reg;
    ef_config_t *c = s_setup (&reg);
    char err[256], reply[128];
    EF_REQUIRE (ef_config_set (c, "actors.source.count", "0", err, sizeof err)
                == 0);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (
        ef_runtime_control (s_rt, "sink", "echo", "hi", reply, sizeof reply)
        == 0);
    EF_CHECK (strcmp (reply, "sink[0] hi") == 0);
    EF_CHECK (ef_runtime_control (s_rt, "sink[1]", "echo", "there", reply,
                                  sizeof reply)
              == 0);
    EF_CHECK (strcmp (reply, "sink[1] there") == 0);
    EF_CHECK (ef_runtime_control (s_rt, "sink", "fly", "", reply, sizeof reply)
              == 1);
    EF_CHECK (
        ef_runtime_control (s_rt, "source", "echo", "", reply, sizeof reply)
        == -2);
    EF_CHECK (strstr (reply, "takes no commands") != NULL);
    EF_CHECK (ef_runtime_control (s_rt, "moon", "echo", "", reply, sizeof reply)
              == -2);
    EF_CHECK (strstr (reply, "no actor 'moon'") != NULL);
    ef_runtime_stop (s_rt);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_reports_init_failure)
{
    ef_registry_t *reg;
    ef_config_t *c = s_setup (&reg);
    char err[256] = "";
    EF_REQUIRE (
        ef_config_set (c, "actors.sink.fail_init", "true", err, sizeof err)
        == 0);
    EF_REQUIRE (ef_config_set (c, "actors.source.count", "0", err, sizeof err)
                == 0);
    ef_runtime_t *rt = ef_runtime_new (c);
    EF_CHECK (ef_runtime_start (rt, err, sizeof err) == -1);
    EF_CHECK (strstr (err, "sink[0]") && strstr (err, "cannot reach the moon"));
    ef_runtime_destroy (&rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_second_signal_returns)
{
    /* A sink that never finishes draining, and two signals: the first
       starts the drain, the second must make ef_runtime_wait return
       EF_RUNTIME_HARD_STOP to this caller instead of ending the process
       (the library leaves that to the program). Both signals are pending
       on this thread before the wait; SIGINT and SIGTERM are distinct,
       so neither swallows the other, and the lower one is taken first. */
    ef_registry_t *reg;
    ef_config_t *c = s_setup (&reg);
    char err[256];
    EF_REQUIRE (ef_config_set (c, "actors.sink.stuck", "true", err, sizeof err)
                == 0);
    EF_REQUIRE (ef_config_set (c, "actors.source.count", "0", err, sizeof err)
                == 0);
    EF_REQUIRE (ef_config_set (c, "drain_timeout", "60s", err, sizeof err)
                == 0);
    sigset_t set, old;
    sigemptyset (&set);
    sigaddset (&set, SIGINT);
    sigaddset (&set, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &set, &old);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    pthread_kill (pthread_self (), SIGINT);
    pthread_kill (pthread_self (), SIGTERM);
    int64_t start = ef_clock_mono_us ();
    EF_CHECK (ef_runtime_wait (s_rt) == EF_RUNTIME_HARD_STOP);
    /* at once, not at drain_timeout */
    EF_CHECK (ef_clock_mono_us () - start < 30 * 1000000LL);
    EF_CHECK (atomic_load (&s_drain_seq) >= 1);
    /* the threads saw the hard stop and can be joined */
    ef_runtime_destroy (&s_rt);
    EF_CHECK (ef_signals_pending () == 0);
    pthread_sigmask (SIG_SETMASK, &old, NULL);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}
