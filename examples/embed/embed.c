/*  embed.c — a program that embeds the embedflow runtime.

    Three actors of its own, none from the embedflow tree:

      numbers ──numbers──> square ×N ──squares──> total

    `numbers` (a source) sends 1..count, each to one `square` instance
    chosen by the number; each `square` passes on its square; `total`
    adds them up and stops the runtime once it has them all. main checks
    the sum against n(n+1)(2n+1)/6 and exits 0 only when it matches.

      embed [CONFIG.yaml] [KEY=VALUE...]     (keys as in the file:
                                              count=500 actors.square.instances=4)

    Exits 0 on the right sum, 1 when the runtime failed or the sum is
    wrong, 2 on a bad configuration (naming the key).
*/
#include <embedflow/actor.h>
#include <embedflow/log.h>
#include <embedflow/runtime.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the application's top-level keys ----------------------------------- */

typedef struct {
    int64_t count; /* numbers to send */
} s_globals_t;

static const ef_option_t s_globals_table[] = {
    {"count", EF_OPT_INT, "1000", offsetof (s_globals_t, count), 1, 1000000,
     "how many numbers flow through"},
    EF_OPTION_END};

/* --- numbers: the source ------------------------------------------------ */

typedef struct {
    int out;      /* the OUT port "out" */
    int64_t next; /* next number to send */
} s_numbers_t;

static int
s_numbers_init (ef_actor_t *self)
{
    s_numbers_t *st = ef_actor_state (self);
    st->out = ef_actor_port (self, "out");
    st->next = 1;
    ef_actor_wake_in (self, 0);
    return 0;
}

/* Sends the numbers; ef_actor_send blocks while the link is full, which
   is the backpressure from slow squares. Returns -1 when a send fails
   (the process is stopping hard). */
static int
s_numbers_tick (ef_actor_t *self)
{
    s_numbers_t *st = ef_actor_state (self);
    const s_globals_t *g = ef_actor_globals (self);
    int width = ef_actor_port_width (self, st->out);
    for (; st->next <= g->count; st->next++) {
        zmsg_t *msg = zmsg_new ();
        zmsg_addmem (msg, &st->next, sizeof st->next);
        if (ef_actor_send (self, st->out, (int) (st->next % width), &msg) != 0)
            return -1;
    }
    ef_info ("sent %" PRId64 " numbers", g->count);
    return 0;
}

static void
s_numbers_drain (ef_actor_t *self)
{
    ef_actor_drained (self);
}

static const ef_port_def_t s_numbers_ports[] = {
    {"out", EF_PORT_OUT, "int64", true, 64}, {NULL, 0, NULL, false, 0}};

static const ef_option_t s_no_options[] = {EF_OPTION_END};

static const ef_actor_def_t s_numbers = {
    .name = "numbers",
    .summary = "sends 1..count",
    .options = s_no_options,
    .ports = s_numbers_ports,
    .flags = EF_ACTOR_SOURCE,
    .default_instances = 1,
    .state_size = sizeof (s_numbers_t),
    .init = s_numbers_init,
    .tick = s_numbers_tick,
    .drain = s_numbers_drain,
};

/* --- square: a transform with several instances -------------------------- */

typedef struct {
    int out; /* the OUT port "out", looked up once */
} s_square_t;

static int
s_square_init (ef_actor_t *self)
{
    s_square_t *st = ef_actor_state (self);
    st->out = ef_actor_port (self, "out");
    return 0;
}

static int
s_square_handle (ef_actor_t *self, int port, zmsg_t **msg_p)
{
    (void) port;
    const s_square_t *st = ef_actor_state (self);
    zframe_t *f = zmsg_first (*msg_p);
    int64_t n;
    if (!f || zframe_size (f) != sizeof n) {
        /* Not one of ours: dropped, and said so; the others go on. */
        ef_warn ("a message of %zu bytes is not a number: dropped",
                 f ? zframe_size (f) : 0);
        zmsg_destroy (msg_p);
        return 0;
    }
    memcpy (&n, zframe_data (f), sizeof n);
    n *= n;
    memcpy (zframe_data (f), &n, sizeof n);
    /* The message goes on: ef_actor_send takes it and NULLs *msg_p. */
    return ef_actor_send (self, st->out, 0, msg_p);
}

static const ef_port_def_t s_square_ports[] = {
    {"in", EF_PORT_IN, "int64", true, 64},
    {"out", EF_PORT_OUT, "int64", false, 64},
    {NULL, 0, NULL, false, 0}};

static const ef_actor_def_t s_square = {
    .name = "square",
    .summary = "squares each number",
    .options = s_no_options,
    .ports = s_square_ports,
    .default_instances = 2,
    .state_size = sizeof (s_square_t),
    .init = s_square_init,
    .handle = s_square_handle,
};

/* --- total: the sink ----------------------------------------------------- */

/* What total found, read by main after ef_runtime_wait returned. */
static atomic_int_fast64_t s_sum, s_seen;
/* The runtime total stops; set before it starts. */
static ef_runtime_t *s_runtime;

typedef struct {
    int64_t report_every; /* log progress every this many numbers; 0 = never */
} s_total_opts_t;

static const ef_option_t s_total_table[] = {
    {"report_every", EF_OPT_INT, "0", offsetof (s_total_opts_t, report_every),
     0, 0, "log the running total every this many numbers (0: never)"},
    EF_OPTION_END};

static int
s_total_handle (ef_actor_t *self, int port, zmsg_t **msg_p)
{
    (void) port;
    const s_total_opts_t *o = ef_actor_options (self);
    const s_globals_t *g = ef_actor_globals (self);
    zframe_t *f = zmsg_first (*msg_p);
    int64_t n = 0;
    if (f && zframe_size (f) == sizeof n)
        memcpy (&n, zframe_data (f), sizeof n);
    zmsg_destroy (msg_p);
    atomic_fetch_add (&s_sum, n);
    int64_t seen = atomic_fetch_add (&s_seen, 1) + 1;
    if (o->report_every && seen % o->report_every == 0)
        ef_info ("%" PRId64 " squares so far", seen);
    if (seen == g->count)
        ef_runtime_stop (s_runtime);
    return 0;
}

static const ef_port_def_t s_total_ports[] = {
    {"in", EF_PORT_IN, "int64", false, 64}, {NULL, 0, NULL, false, 0}};

static const ef_actor_def_t s_total = {
    .name = "total",
    .summary = "adds the squares up",
    .options = s_total_table,
    .options_size = sizeof (s_total_opts_t),
    .ports = s_total_ports,
    .default_instances = 1,
    .handle = s_total_handle,
};

/* --- main ---------------------------------------------------------------- */

int
main (int argc, char **argv)
{
    ef_signals_init ();
    char err[1024];
    int rc = 2;
    ef_registry_t *registry = ef_registry_new ();
    ef_config_t *config = NULL;
    ef_runtime_t *runtime = NULL;
    if (!registry || ef_registry_add (registry, &s_numbers) != 0
        || ef_registry_add (registry, &s_square) != 0
        || ef_registry_add (registry, &s_total) != 0
        /* the default topology; links.NAME.from / to may change it */
        || ef_registry_add_link (registry, "numbers", "numbers.out",
                                 "square.in")
               != 0
        || ef_registry_add_link (registry, "squares", "square.out", "total.in")
               != 0) {
        fprintf (stderr, "embed: cannot register the actors\n");
        goto done;
    }
    config = ef_config_new (registry, s_globals_table, sizeof (s_globals_t),
                            err, sizeof err);
    if (!config) {
        fprintf (stderr, "embed: %s\n", err);
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        char *eq = strchr (argv[i], '=');
        int bad;
        if (eq) {
            *eq = '\0';
            bad = ef_config_set (config, argv[i], eq + 1, err, sizeof err);
        }
        else
            bad = ef_config_load_file (config, argv[i], err, sizeof err);
        if (bad) {
            fprintf (stderr, "embed: %s\n", err);
            goto done;
        }
    }
    if (ef_config_validate (config, err, sizeof err) != 0) {
        fprintf (stderr, "embed: %s\n", err);
        goto done;
    }
    rc = 1;
    runtime = s_runtime = ef_runtime_new (config);
    if (!runtime) {
        fprintf (stderr, "embed: out of memory\n");
        goto done;
    }
    if (ef_runtime_start (runtime, err, sizeof err) != 0) {
        fprintf (stderr, "embed: cannot start: %s\n", err);
        goto done;
    }
    int wait = ef_runtime_wait (runtime);
    if (wait == EF_RUNTIME_HARD_STOP)
        _Exit (1); /* asked twice to stop: do not wait for the actors */
    const s_globals_t *g = ef_config_globals (config);
    int64_t n = g->count, want = n * (n + 1) * (2 * n + 1) / 6;
    printf ("embed: %" PRId64 " numbers through %d squares, sum of squares "
            "%" PRId64 " (expected %" PRId64 ")\n",
            (int64_t) atomic_load (&s_seen),
            ef_config_instances (config, "square"),
            (int64_t) atomic_load (&s_sum), want);
    rc = wait == 0 && atomic_load (&s_sum) == want && atomic_load (&s_seen) == n
             ? 0
             : 1;
done:
    ef_runtime_destroy (&runtime);
    ef_config_destroy (&config);
    ef_registry_destroy (&registry);
    return rc;
}
