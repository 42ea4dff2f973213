/*  Supervision with toy actors on real ZeroMQ sockets: a sink whose
    handle fails is destroyed and started again in place, gets the
    message it failed on first, and loses nothing queued meanwhile; past
    max_restarts, or with restart: never, the process stops. */
#include "ef_test.h"

#include "embedflow/metrics.h"
#include "embedflow/runtime.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define TOTAL 500

typedef struct {
    int64_t fail_at;    /* the message number whose handling fails */
    int64_t fail_times; /* how often it fails */
} s_opts_t;

static const ef_option_t s_opts[] = {
    {"fail_at", EF_OPT_INT, "100", offsetof (s_opts_t, fail_at), 0, 0, "n"},
    {"fail_times", EF_OPT_INT, "2", offsetof (s_opts_t, fail_times), 0, 0, "n"},
    EF_OPTION_END};
static const ef_option_t s_no_opts[] = {EF_OPTION_END};

static atomic_long s_received, s_fails, s_inits, s_destroys, s_stale;
static atomic_int s_seen[TOTAL];
static ef_runtime_t *s_rt;

typedef struct {
    int64_t next; /* next message number */
    int out;      /* port */
} s_source_t;

typedef struct {
    bool ready; /* set by init: a restarted instance has fresh state */
} s_sink_t;

static int
s_source_tick (ef_actor_t *a)
{
    s_source_t *s = ef_actor_state (a);
    while (s->next < TOTAL) {
        zmsg_t *msg = zmsg_new ();
        zmsg_addmem (msg, &s->next, sizeof s->next);
        int rc = ef_actor_try_send (a, s->out, 0, &msg);
        zmsg_destroy (&msg);
        if (rc == 0) {
            ef_actor_wake_in (a, 1); /* full while the sink restarts */
            return 0;
        }
        if (rc < 0)
            return -1;
        s->next++;
    }
    return 0;
}

static int
s_source_init (ef_actor_t *a)
{
    s_source_t *s = ef_actor_state (a);
    s->out = ef_actor_port (a, "out");
    ef_actor_wake_in (a, 0);
    return 0;
}

static int
s_sink_init (ef_actor_t *a)
{
    s_sink_t *s = ef_actor_state (a);
    if (s->ready)
        atomic_fetch_add (&s_stale, 1);
    s->ready = true;
    atomic_fetch_add (&s_inits, 1);
    return 0;
}

static int
s_sink_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    (void) port;
    const s_opts_t *o = ef_actor_options (a);
    int64_t n = -1;
    zframe_t *f = zmsg_first (*msg_p);
    if (f && zframe_size (f) == sizeof n)
        memcpy (&n, zframe_data (f), sizeof n);
    if (n < 0 || n >= TOTAL)
        return 0;
    if (n == o->fail_at && atomic_load (&s_fails) < o->fail_times) {
        atomic_fetch_add (&s_fails, 1);
        ef_actor_fail (a, "the moon is down");
        return -1; /* *msg_p left: given back */
    }
    atomic_fetch_add (&s_seen[n], 1);
    atomic_fetch_add (&s_received, 1);
    /* one producer, one link: the last number comes last, whatever was
       lost before it */
    if (n == TOTAL - 1)
        ef_runtime_stop (s_rt);
    return 0;
}

static void
s_sink_destroy (ef_actor_t *a)
{
    (void) a;
    atomic_fetch_add (&s_destroys, 1);
}

static const ef_port_def_t s_source_ports[] = {
    {"out", EF_PORT_OUT, "number", false, 4}, {NULL, 0, NULL, false, 0}};
static const ef_port_def_t s_sink_ports[] = {
    {"in", EF_PORT_IN, "number", false, 4}, {NULL, 0, NULL, false, 0}};

static const ef_actor_def_t s_source = {.name = "source",
                                        .summary = "makes numbers",
                                        .options = s_no_opts,
                                        .ports = s_source_ports,
                                        .flags = EF_ACTOR_SOURCE,
                                        .default_instances = 1,
                                        .state_size = sizeof (s_source_t),
                                        .init = s_source_init,
                                        .tick = s_source_tick};
static const ef_actor_def_t s_sink = {.name = "sink",
                                      .summary = "fails now and then",
                                      .options = s_opts,
                                      .options_size = sizeof (s_opts_t),
                                      .ports = s_sink_ports,
                                      .default_instances = 1,
                                      .state_size = sizeof (s_sink_t),
                                      .init = s_sink_init,
                                      .handle = s_sink_handle,
                                      .destroy = s_sink_destroy,
                                      .restart = true};

/* A configuration of the two actors with keys = values applied. */
static ef_config_t *
s_setup (ef_registry_t **reg, const char *const *kv)
{
    char err[256];
    *reg = ef_registry_new ();
    ef_registry_add (*reg, &s_source);
    ef_registry_add (*reg, &s_sink);
    ef_registry_add_link (*reg, "items", "source.out", "sink.in");
    atomic_store (&s_received, 0);
    atomic_store (&s_fails, 0);
    atomic_store (&s_inits, 0);
    atomic_store (&s_destroys, 0);
    atomic_store (&s_stale, 0);
    for (int i = 0; i < TOTAL; i++)
        atomic_store (&s_seen[i], 0);
    ef_config_t *c = ef_config_new (*reg, s_no_opts, 0, err, sizeof err);
    for (; c && kv && *kv; kv += 2)
        if (ef_config_set (c, kv[0], kv[1], err, sizeof err) != 0) {
            fprintf (stderr, "%s\n", err);
            ef_config_destroy (&c);
        }
    return c;
}

static uint64_t
s_restarts (void)
{
    return ef_counter_value (
        ef_metrics_counter ("embedflow_actor_restarts_total", "", "sink"));
}

EF_TEST (runtime_restarts_failed_actor)
{
    ef_registry_t *reg;
    ef_config_t *c = s_setup (
        &reg, (const char *const[]){"actors.sink.fail_times", "3", NULL});
    EF_REQUIRE (c);
    char err[256];
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    /* every message once, the failing one included, none twice */
    EF_CHECK (atomic_load (&s_received) == TOTAL);
    long once = 0;
    for (int i = 0; i < TOTAL; i++)
        once += atomic_load (&s_seen[i]) == 1;
    EF_CHECK (once == TOTAL);
    EF_CHECK (atomic_load (&s_fails) == 3);
    EF_CHECK (s_restarts () == 3);
    /* destroy, then init on new zeroed state, once per restart */
    EF_CHECK (atomic_load (&s_inits) == 4);
    EF_CHECK (atomic_load (&s_destroys) == 4);
    EF_CHECK (atomic_load (&s_stale) == 0);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_stops_after_max_restarts)
{
    ef_registry_t *reg;
    ef_config_t *c = s_setup (
        &reg, (const char *const[]){"actors.sink.fail_times", "3",
                                    "actors.sink.max_restarts", "2", NULL});
    EF_REQUIRE (c);
    char err[256];
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 1);
    EF_CHECK (atomic_load (&s_fails) == 3);
    EF_CHECK (s_restarts () == 2);
    EF_CHECK (atomic_load (&s_received) < TOTAL);
    EF_CHECK (atomic_load (&s_inits) == 3);
    EF_CHECK (atomic_load (&s_destroys) == 3);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}

EF_TEST (runtime_restart_never_stops)
{
    ef_registry_t *reg;
    ef_config_t *c = s_setup (
        &reg, (const char *const[]){"actors.sink.restart", "never", NULL});
    EF_REQUIRE (c);
    char err[256];
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 1);
    EF_CHECK (atomic_load (&s_fails) == 1);
    EF_CHECK (s_restarts () == 0);
    EF_CHECK (atomic_load (&s_inits) == 1);
    EF_CHECK (atomic_load (&s_destroys) == 1);
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}
