/*  runtime.c — starts the actors of one process, waits, drains, stops.

    Start: every instance is started at once (so N writers connect to the
    database in parallel), then each one's READY/FAILED answer is
    collected; one failure stops the rest and is reported.
    Stop: actors are drained in the order of the graph the links make
    (ef_config_drain_order): sources first, each stop taking new work and
    finishing what is in flight, then every actor once all that feed it
    have drained, and so on downstream. A second signal makes
    ef_runtime_wait return at once; the library never ends the process
    itself.
    Under systemd (Type=notify) the runtime says READY=1 once every actor
    is ready, STOPPING=1 when the drain begins, and pings the watchdog from
    its loop while it waits and drains (notify.c).
*/
#include "internal.h"

#include "embedflow/log.h"

#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const ef_actor_def_t *def; /* borrowed */
    ef_actor_t *actor;         /* owned; outlives its thread */
    zactor_t *thread;          /* owned */
    bool ready;                /* said READY */
    bool drained;              /* said DRAINED */
} s_instance_t;

struct ef_runtime {
    ef_config_t *config;       /* borrowed */
    s_instance_t *inst;        /* every instance that runs here */
    size_t n;                  /* entries in inst */
    atomic_int hard_stop;      /* raised on the second signal */
    atomic_int stop_requested; /* ef_runtime_stop was called */
    bool failed;               /* an actor died */
    ef_zap_t *zap;             /* CURVE allow-list, when this process has
                                  keys; outlives the actors' sockets */
    int64_t watchdog_us;       /* between WATCHDOG=1 pings; 0 = none */
    int64_t watchdog_last_us;  /* monotonic time of the last ping */
    ef_report_fn *report_fn;   /* gets the actors' reports, or NULL */
    void *report_arg;          /* its argument */
};

void
ef_signals_init (void)
{
    /* Blocked here, before any thread exists, so every thread gRPC and
       czmq start inherits the mask and the signals reach only
       ef_runtime_wait. Reset to default first: an ignored signal is never
       delivered, not even to sigtimedwait. */
    signal (SIGINT, SIG_DFL);
    signal (SIGTERM, SIG_DFL);
    signal (SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGINT);
    sigaddset (&set, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &set, NULL);
    zsys_handler_set (NULL);
}

ef_runtime_t *
ef_runtime_new (ef_config_t *config)
{
    ef_runtime_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = config;
    const ef_registry_t *reg = ef_config_registry (config);
    size_t total = 0;
    for (size_t i = 0; i < ef_registry_size (reg); i++) {
        const ef_actor_def_t *def = ef_registry_at (reg, i);
        for (int k = 0; k < ef_config_instances (config, def->name); k++)
            total += ef_config_instance_runs_here (config, def->name, k);
    }
    self->inst = calloc (total ? total : 1, sizeof *self->inst);
    if (!self->inst) {
        free (self);
        return NULL;
    }
    for (size_t i = 0; i < ef_registry_size (reg); i++) {
        const ef_actor_def_t *def = ef_registry_at (reg, i);
        if (!ef_config_runs_here (config, def->name))
            continue;
        for (int k = 0; k < ef_config_instances (config, def->name); k++) {
            if (!ef_config_instance_runs_here (config, def->name, k))
                continue;
            s_instance_t *in = &self->inst[self->n++];
            in->def = def;
            in->actor = ef_actor_new (config, def, k, &self->hard_stop);
            if (!in->actor) {
                ef_runtime_destroy (&self);
                return NULL;
            }
        }
    }
    return self;
}

/* Stops every started thread (reverse order) and frees the instances. */
static void
s_stop_all (ef_runtime_t *self)
{
    for (size_t i = self->n; i-- > 0;)
        zactor_destroy (&self->inst[i].thread);
}

void
ef_runtime_destroy (ef_runtime_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_runtime_t *self = *self_p;
    s_stop_all (self);
    ef_zap_destroy (&self->zap);
    for (size_t i = 0; i < self->n; i++)
        ef_actor_destroy (&self->inst[i].actor);
    free (self->inst);
    free (self);
    *self_p = NULL;
}

int
ef_runtime_start (ef_runtime_t *self, char *err, size_t errlen)
{
    /* The handler must answer before the first CURVE socket binds: libzmq
       lets every client in when no handler is there. */
    if (ef_config_cert (self->config) && ef_config_curve_clients (self->config)
        && !self->zap) {
        self->zap = ef_zap_new (ef_config_curve_clients (self->config),
                                ef_config_cert (self->config), err, errlen);
        if (!self->zap)
            return -1;
    }
    ef_config_warn_insecure (self->config);
    for (size_t i = 0; i < self->n; i++) {
        self->inst[i].thread =
            zactor_new (ef_actor_thread, self->inst[i].actor);
        if (!self->inst[i].thread) {
            snprintf (err, errlen, "%s: cannot start a thread",
                      ef_actor_name (self->inst[i].actor));
            s_stop_all (self);
            return -1;
        }
    }
    int rc = 0;
    for (size_t i = 0; i < self->n; i++) {
        /* Each init bounds its own waiting (connect timeouts), so this
           blocks only as long as the slowest actor takes to say why. */
        zmsg_t *msg = zmsg_recv (self->inst[i].thread);
        char *status = msg ? zmsg_popstr (msg) : NULL;
        char *reason = msg ? zmsg_popstr (msg) : NULL;
        if (status && strcmp (status, "READY") == 0)
            self->inst[i].ready = true;
        else if (rc == 0) {
            snprintf (err, errlen, "%s: %s",
                      ef_actor_name (self->inst[i].actor),
                      reason ? reason : "did not start");
            rc = -1;
        }
        free (status);
        free (reason);
        zmsg_destroy (&msg);
    }
    if (rc != 0) {
        s_stop_all (self);
        return rc;
    }
    ef_notify_ready ();
    self->watchdog_us = ef_notify_watchdog_interval_us ();
    if (self->watchdog_us > 0) {
        ef_notify_watchdog ();
        self->watchdog_last_us = ef_clock_mono_us ();
        ef_debug ("systemd watchdog: a ping every %" PRId64 " ms",
                  self->watchdog_us / 1000);
    }
    return 0;
}

void
ef_runtime_stop (ef_runtime_t *self)
{
    atomic_store (&self->stop_requested, 1);
}

/* Reads one pipe message from instance i and records what it says (a
   report goes to the report function). Returns true when the instance
   said STOPPED or its pipe failed. */
static bool
s_read_pipe (ef_runtime_t *self, size_t i)
{
    zmsg_t *msg = zmsg_recv (self->inst[i].thread);
    char *what = msg ? zmsg_popstr (msg) : NULL;
    char *reason = msg ? zmsg_popstr (msg) : NULL;
    const char *name = ef_actor_name (self->inst[i].actor);
    bool stopped = !msg || (what && strcmp (what, "STOPPED") == 0);
    if (what && strcmp (what, "REPORT") == 0) {
        if (self->report_fn)
            self->report_fn (name, &msg, self->report_arg);
    }
    else if (what && strcmp (what, "STOPPED") == 0)
        ef_debug ("%s stopped", name);
    else if (what && strcmp (what, "DRAINED") == 0) {
        self->inst[i].drained = true;
        ef_debug ("%s drained", name);
    }
    else if (what && strcmp (what, "DIED") == 0) {
        ef_error ("%s stopped: %s", name, reason ? reason : "unknown");
        self->failed = true;
        self->inst[i].drained = true; /* nothing more will come from it */
    }
    else if (what)
        ef_warn ("%s said '%s'", name, what);
    free (what);
    free (reason);
    zmsg_destroy (&msg);
    return stopped;
}

int
ef_runtime_control (ef_runtime_t *self, const char *actor, const char *verb,
                    const char *arg, char *reply, size_t len)
{
    int rc = -2;
    bool found = false;
    char one[512];
    if (len)
        *reply = 0;
    for (size_t i = 0; i < self->n; i++) {
        const char *name = ef_actor_name (self->inst[i].actor);
        if (strcmp (self->inst[i].def->name, actor) != 0
            && strcmp (name, actor) != 0)
            continue;
        int r = ef_actor_control (self->inst[i].actor, verb, arg, one,
                                  sizeof one, EF_CONTROL_TIMEOUT_MS);
        if (!found || (rc == 0 && r != 0)) {
            rc = r;
            snprintf (reply, len, "%s", one);
        }
        found = true;
    }
    if (!found)
        snprintf (reply, len, "no actor '%s' runs in this process", actor);
    return rc;
}

void
ef_runtime_on_report (ef_runtime_t *self, ef_report_fn *fn, void *arg)
{
    self->report_fn = fn;
    self->report_arg = arg;
}

/* Asks every instance (reverse order) to leave its loop and run destroy,
   reading what it reports meanwhile, until it says STOPPED. */
static void
s_stop_reading (ef_runtime_t *self)
{
    for (size_t i = self->n; i-- > 0;) {
        if (!self->inst[i].thread || zstr_send (self->inst[i].thread, "$STOP"))
            continue;
        while (!s_read_pipe (self, i))
            ;
    }
}

int
ef_signals_pending (void)
{
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGINT);
    sigaddset (&set, SIGTERM);
    struct timespec zero = {0, 0};
    int sig = sigtimedwait (&set, NULL, &zero);
    return sig > 0 ? sig : 0;
}

/* Polls every pipe for up to timeout ms (less when the watchdog is due
   sooner) and pings the watchdog when it is due. Returns a signal number
   when one arrived, else 0. */
static int
s_watch (ef_runtime_t *self, int timeout)
{
    if (self->watchdog_us > 0) {
        int64_t due_ms =
            (self->watchdog_last_us + self->watchdog_us - ef_clock_mono_us ())
            / 1000;
        if (due_ms < timeout)
            timeout = due_ms > 0 ? (int) due_ms : 0;
    }
    zpoller_t *poller = zpoller_new (NULL);
    for (size_t i = 0; i < self->n; i++)
        if (self->inst[i].thread)
            zpoller_add (poller, self->inst[i].thread);
    void *which = zpoller_wait (poller, timeout);
    for (size_t i = 0; which && i < self->n; i++)
        if (which == (void *) self->inst[i].thread)
            s_read_pipe (self, i);
    zpoller_destroy (&poller);
    if (self->watchdog_us > 0) {
        int64_t now = ef_clock_mono_us ();
        if (now - self->watchdog_last_us >= self->watchdog_us) {
            ef_notify_watchdog ();
            self->watchdog_last_us = now;
        }
    }
    return ef_signals_pending ();
}

int
ef_runtime_wait (ef_runtime_t *self)
{
    int sig = 0;
    while (!sig && !self->failed && !atomic_load (&self->stop_requested))
        sig = s_watch (self, 100);
    if (sig)
        ef_info ("%s: draining (a second signal stops at once)",
                 strsignal (sig));
    else if (self->failed)
        ef_error ("an actor failed: stopping");
    ef_notify_stopping ();

    size_t n_defs = ef_config_actor_count (self->config);
    size_t *order = calloc (n_defs ? n_defs : 1, sizeof *order);
    if (order)
        ef_config_drain_order (self->config, order);
    int64_t deadline =
        ef_clock_mono_us () + ef_config_drain_timeout_ms (self->config) * 1000;
    bool timed_out = false;
    for (size_t d = 0; d < n_defs && !self->failed && !timed_out; d++) {
        const ef_actor_def_t *def =
            ef_config_actor_at (self->config, order ? order[d] : d);
        bool any = false;
        for (size_t i = 0; i < self->n; i++)
            if (self->inst[i].def == def) {
                zstr_send (self->inst[i].thread, "$DRAIN");
                any = true;
            }
        while (any) {
            any = false;
            for (size_t i = 0; i < self->n; i++)
                if (self->inst[i].def == def && !self->inst[i].drained)
                    any = true;
            if (!any || self->failed)
                break;
            if (ef_clock_mono_us () >= deadline) {
                ef_error ("drain_timeout (%lld ms) passed before %s drained "
                          "(a peer it waits for may be gone): stopping; its "
                          "unfinished work is not acknowledged",
                          (long long) ef_config_drain_timeout_ms (self->config),
                          def->name);
                timed_out = true;
                break;
            }
            if (s_watch (self, 100)) {
                /* The threads are told to stop but not joined: one may
                   be blocked in a call that takes long to return, and
                   the program asked to stop at once. Ending the process
                   is its caller's decision. */
                ef_error ("second signal: stopping now, work in flight is "
                          "not acknowledged");
                atomic_store (&self->hard_stop, 1);
                free (order);
                return EF_RUNTIME_HARD_STOP;
            }
        }
    }
    free (order);
    self->hard_stop = 1;
    s_stop_reading (self);
    s_stop_all (self);
    ef_info ("stopped%s", self->failed ? " after a failure"
                          : timed_out  ? " at drain_timeout"
                                       : "");
    return self->failed || timed_out ? 1 : 0;
}
