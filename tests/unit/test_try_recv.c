/*  ef_actor_try_recv: an actor gathers the messages queued on its input
    without blocking, and the runtime's counters still see every one. */
#include "ef_test.h"

#include "embedflow/metrics.h"
#include "embedflow/runtime.h"
#include "runtime/internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define TOTAL 600

static atomic_long s_received, s_gathered, s_bad_empty;
static ef_runtime_t *s_rt;

static int
s_feeder_init (ef_actor_t *a)
{
    ef_actor_wake_in (a, 0);
    return 0;
}

/* Sends every message at once; the link's high-water mark paces it. */
static int
s_feeder_tick (ef_actor_t *a)
{
    int out = ef_actor_port (a, "out");
    for (int64_t i = 0; i < TOTAL; i++) {
        zmsg_t *m = zmsg_new ();
        zmsg_addmem (m, &i, sizeof i);
        zmsg_addstr (m, "x"); /* two frames: they travel together */
        if (ef_actor_send (a, out, 0, &m) != 0)
            return -1;
    }
    return 0;
}

/* Handles one message slowly, then takes whatever queued meanwhile. */
static int
s_gatherer_handle (ef_actor_t *a, int port, zmsg_t **msg_p)
{
    EF_CHECK (zmsg_size (*msg_p) == 2);
    long n = 1;
    usleep (2000);
    zmsg_t *more = NULL;
    int rc;
    while ((rc = ef_actor_try_recv (a, port, &more)) == 1) {
        EF_CHECK (zmsg_size (more) == 2);
        zmsg_destroy (&more);
        n++;
        atomic_fetch_add (&s_gathered, 1);
    }
    if (rc != 0 || more != NULL)
        atomic_fetch_add (&s_bad_empty, 1);
    if (atomic_fetch_add (&s_received, n) + n == TOTAL)
        ef_runtime_stop (s_rt);
    return 0;
}

static const ef_port_def_t s_feeder_ports[] = {
    {"out", EF_PORT_OUT, "number", false, 50}, {NULL, 0, NULL, false, 0}};
static const ef_port_def_t s_gatherer_ports[] = {
    {"in", EF_PORT_IN, "number", false, 50}, {NULL, 0, NULL, false, 0}};
static const ef_option_t s_none[] = {EF_OPTION_END};

static const ef_actor_def_t s_feeder = {.name = "feeder",
                                        .summary = "sends numbers",
                                        .options = s_none,
                                        .ports = s_feeder_ports,
                                        .flags = EF_ACTOR_SOURCE,
                                        .default_instances = 1,
                                        .init = s_feeder_init,
                                        .tick = s_feeder_tick};
static const ef_actor_def_t s_gatherer = {.name = "gatherer",
                                          .summary = "gathers",
                                          .options = s_none,
                                          .ports = s_gatherer_ports,
                                          .default_instances = 1,
                                          .handle = s_gatherer_handle};

EF_TEST (runtime_try_recv_gathers_and_counts)
{
    char err[256];
    ef_registry_t *reg = ef_registry_new ();
    ef_registry_add (reg, &s_feeder);
    ef_registry_add (reg, &s_gatherer);
    ef_registry_add_link (reg, "gather", "feeder.out", "gatherer.in");
    ef_config_t *c = ef_config_new (reg, s_none, 0, err, sizeof err);
    EF_REQUIRE (c && ef_config_validate (c, err, sizeof err) == 0);
    s_rt = ef_runtime_new (c);
    EF_REQUIRE (ef_runtime_start (s_rt, err, sizeof err) == 0);
    EF_CHECK (ef_runtime_wait (s_rt) == 0);
    EF_CHECK (atomic_load (&s_received) == TOTAL);
    /* the slow handler let messages queue: most were gathered */
    EF_CHECK (atomic_load (&s_gathered) > TOTAL / 2);
    EF_CHECK (atomic_load (&s_bad_empty) == 0);
    /* the runtime counted the gathered messages in, frames and all */
    EF_CHECK (ef_counter_value (
                  ef_metrics_actor_series ("gatherer", EF_METRIC_MESSAGES_IN))
              == TOTAL);
    EF_CHECK (ef_counter_value (
                  ef_metrics_actor_series ("gatherer", EF_METRIC_BYTES_IN))
              == TOTAL * (sizeof (int64_t) + 1));
    ef_runtime_destroy (&s_rt);
    ef_config_destroy (&c);
    ef_registry_destroy (&reg);
}
