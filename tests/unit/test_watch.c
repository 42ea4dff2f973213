/*  ef_actor_watch_fd and ef_wakeup_t on a running runtime: a watched
    descriptor's callback runs on the actor's thread when, and only
    when, the descriptor is readable; a wakeup signalled from another
    thread wakes the actor once; an unwatched descriptor is left alone.
    ef_actor_report: what actors report reaches the runtime's owner, in
    order, also from destroy. */
#include "ef_test.h"

#include "embedflow/runtime.h"

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long "nothing happens" is watched for. */
#define S_QUIET_MS 300

static int s_pipe[2];             /* test writes [1], the actor reads [0] */
static ef_wakeup_t *s_wakeup;     /* test signals, the actor clears */
static sem_t s_fired;             /* posted by every callback */
static atomic_int s_pipe_calls;   /* pipe callbacks */
static atomic_int s_wakeup_calls; /* wakeup callbacks */
static atomic_int s_last_byte;    /* last byte the pipe callback read */
static atomic_int s_raised;       /* clears that found it raised */
static atomic_int s_ticks;        /* ticks (none is asked for) */
static pthread_t s_init_thread;   /* the actor thread (init ran there) */

static int
s_on_pipe (ef_actor_t *a, int fd, void *arg)
{
    EF_CHECK (arg == &s_pipe);
    EF_CHECK (pthread_equal (pthread_self (), s_init_thread));
    char c = 0;
    ssize_t n = read (fd, &c, 1);
    EF_CHECK (n == 1);
    atomic_store (&s_last_byte, c);
    atomic_fetch_add (&s_pipe_calls, 1);
    if (c == 'u')
        ef_actor_unwatch_fd (a, fd);
    sem_post (&s_fired);
    return 0;
}

static int
s_on_wakeup (ef_actor_t *a, int fd, void *arg)
{
    (void) a;
    (void) arg;
    EF_CHECK (fd == ef_wakeup_fd (s_wakeup));
    if (ef_wakeup_clear (s_wakeup))
        atomic_fetch_add (&s_raised, 1);
    atomic_fetch_add (&s_wakeup_calls, 1);
    sem_post (&s_fired);
    return 0;
}

static int
s_init (ef_actor_t *a)
{
    s_init_thread = pthread_self ();
    errno = 0;
    EF_CHECK (ef_actor_watch_fd (a, -1, s_on_pipe, NULL) == -1
              && errno == EINVAL);
    EF_CHECK (ef_actor_watch_fd (a, s_pipe[0], NULL, NULL) == -1);
    /* watching twice replaces: one callback per readiness, not two */
    EF_CHECK (ef_actor_watch_fd (a, s_pipe[0], s_on_wakeup, NULL) == 0);
    EF_CHECK (ef_actor_watch_fd (a, s_pipe[0], s_on_pipe, &s_pipe) == 0);
    EF_CHECK (ef_actor_watch_fd (a, ef_wakeup_fd (s_wakeup), s_on_wakeup, NULL)
              == 0);
    return 0;
}

static int
s_tick (ef_actor_t *a)
{
    (void) a;
    atomic_fetch_add (&s_ticks, 1);
    return 0;
}

static void
s_drain (ef_actor_t *a)
{
    ef_actor_drained (a);
}

static const ef_actor_def_t s_watcher = {.name = "watcher",
                                         .summary = "waits on descriptors",
                                         .flags = EF_ACTOR_SOURCE,
                                         .default_instances = 1,
                                         .init = s_init,
                                         .tick = s_tick,
                                         .drain = s_drain};

static const ef_option_t s_no_globals[] = {EF_OPTION_END};

/* Waits for one callback for at most ms. Returns true when one came. */
static bool
s_wait_fired (int ms)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long) (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (sem_timedwait (&s_fired, &ts) != 0)
        if (errno != EINTR)
            return false;
    return true;
}

/* Starts the watcher in a runtime; the caller stops it. */
static ef_runtime_t *
s_start (ef_registry_t **reg, ef_config_t **config)
{
    char err[256];
    EF_CHECK (pipe2 (s_pipe, O_CLOEXEC) == 0);
    s_wakeup = ef_wakeup_new ();
    EF_CHECK (s_wakeup != NULL);
    sem_init (&s_fired, 0, 0);
    atomic_store (&s_pipe_calls, 0);
    atomic_store (&s_wakeup_calls, 0);
    atomic_store (&s_raised, 0);
    atomic_store (&s_ticks, 0);
    *reg = ef_registry_new ();
    ef_registry_add (*reg, &s_watcher);
    *config = ef_config_new (*reg, s_no_globals, 0, err, sizeof err);
    ef_runtime_t *rt = ef_runtime_new (*config);
    if (ef_runtime_start (rt, err, sizeof err) != 0) {
        ef_test_fail (__FILE__, __LINE__, err);
        ef_runtime_destroy (&rt);
    }
    return rt;
}

static void
s_finish (ef_registry_t **reg, ef_config_t **config)
{
    ef_config_destroy (config);
    ef_registry_destroy (reg);
    ef_wakeup_destroy (&s_wakeup);
    EF_CHECK (s_wakeup == NULL);
    ef_wakeup_destroy (&s_wakeup); /* twice is harmless */
    close (s_pipe[0]);
    close (s_pipe[1]);
    sem_destroy (&s_fired);
}

EF_TEST (runtime_watch_fd_fires_on_readiness)
{
    ef_registry_t *reg;
    ef_config_t *config;
    ef_runtime_t *rt = s_start (&reg, &config);
    EF_REQUIRE (rt);

    /* nothing readable: no callback, no tick, the thread sleeps */
    EF_CHECK (!s_wait_fired (S_QUIET_MS));
    EF_CHECK (atomic_load (&s_pipe_calls) == 0);
    EF_CHECK (atomic_load (&s_wakeup_calls) == 0);
    EF_CHECK (atomic_load (&s_ticks) == 0);

    /* one byte: one callback, which read it */
    EF_CHECK (write (s_pipe[1], "a", 1) == 1);
    EF_CHECK (s_wait_fired (10000));
    EF_CHECK (atomic_load (&s_pipe_calls) == 1);
    EF_CHECK (atomic_load (&s_last_byte) == 'a');
    EF_CHECK (!s_wait_fired (S_QUIET_MS)); /* read: not readable any more */
    EF_CHECK (atomic_load (&s_pipe_calls) == 1);

    /* level-triggered: two bytes at once are two callbacks */
    EF_CHECK (write (s_pipe[1], "bc", 2) == 2);
    EF_CHECK (s_wait_fired (10000) && s_wait_fired (10000));
    EF_CHECK (atomic_load (&s_pipe_calls) == 3);
    EF_CHECK (atomic_load (&s_last_byte) == 'c');

    /* signals before a clear collapse into one wakeup */
    ef_wakeup_signal (s_wakeup);
    ef_wakeup_signal (s_wakeup);
    ef_wakeup_signal (s_wakeup);
    EF_CHECK (s_wait_fired (10000));
    EF_CHECK (atomic_load (&s_raised) >= 1);
    /* a signal that came after a clear wakes it once more: at most 3 */
    int extra = 0;
    while (extra < 3 && s_wait_fired (S_QUIET_MS))
        extra++;
    EF_CHECK (extra < 3);
    int wakeups = atomic_load (&s_wakeup_calls);
    EF_CHECK (wakeups >= 1 && wakeups <= 3);
    EF_CHECK (atomic_load (&s_raised) == wakeups);
    EF_CHECK (atomic_load (&s_pipe_calls) == 3);

    /* 'u' makes the callback unwatch the pipe: the next byte stays */
    EF_CHECK (write (s_pipe[1], "u", 1) == 1);
    EF_CHECK (s_wait_fired (10000));
    EF_CHECK (write (s_pipe[1], "v", 1) == 1);
    EF_CHECK (!s_wait_fired (S_QUIET_MS));
    EF_CHECK (atomic_load (&s_pipe_calls) == 4);
    char c = 0;
    EF_CHECK (read (s_pipe[0], &c, 1) == 1 && c == 'v');
    EF_CHECK (atomic_load (&s_ticks) == 0);

    ef_runtime_stop (rt);
    EF_CHECK (ef_runtime_wait (rt) == 0);
    ef_runtime_destroy (&rt);
    s_finish (&reg, &config);
}

EF_TEST (runtime_wakeup_clear)
{
    ef_wakeup_t *w = ef_wakeup_new ();
    EF_REQUIRE (w);
    EF_CHECK (!ef_wakeup_clear (w)); /* never raised */
    ef_wakeup_signal (w);
    ef_wakeup_signal (w);
    EF_CHECK (ef_wakeup_clear (w));
    EF_CHECK (!ef_wakeup_clear (w)); /* one clear lowers every signal */
    ef_wakeup_destroy (&w);
    EF_CHECK (w == NULL);
}

/* --- reports to the program running the runtime ----------------------- */

static char s_reports[8][32]; /* "actor:text" in the order received */
static int s_n_reports;       /* entries of s_reports */

static void
s_report (ef_actor_t *a, const char *text)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, text);
    EF_CHECK (ef_actor_report (a, &msg) == 0);
    EF_CHECK (msg == NULL);
}

static int
s_reporter_init (ef_actor_t *a)
{
    s_report (a, "init");
    ef_actor_wake_in (a, 0);
    return 0;
}

static int
s_reporter_tick (ef_actor_t *a)
{
    s_report (a, "tick");
    return 0;
}

static void
s_reporter_destroy (ef_actor_t *a)
{
    s_report (a, "destroy"); /* after the runtime stopped waiting */
}

static void
s_on_report (const char *actor, zmsg_t **msg_p, void *arg)
{
    char *text = zmsg_popstr (*msg_p);
    if (s_n_reports < 8)
        snprintf (s_reports[s_n_reports++], sizeof s_reports[0], "%s:%s", actor,
                  text ? text : "?");
    free (text);
    if (text && strcmp (s_reports[s_n_reports - 1], "reporter:tick") == 0)
        ef_runtime_stop (arg);
}

static const ef_actor_def_t s_reporter = {.name = "reporter",
                                          .summary = "reports",
                                          .flags = EF_ACTOR_SOURCE,
                                          .default_instances = 1,
                                          .init = s_reporter_init,
                                          .tick = s_reporter_tick,
                                          .destroy = s_reporter_destroy};

EF_TEST (runtime_reports_reach_the_owner)
{
    char err[256];
    ef_registry_t *reg = ef_registry_new ();
    ef_registry_add (reg, &s_reporter);
    ef_config_t *config = ef_config_new (reg, s_no_globals, 0, err, sizeof err);
    EF_REQUIRE (config);
    ef_runtime_t *rt = ef_runtime_new (config);
    s_n_reports = 0;
    if (ef_runtime_start (rt, err, sizeof err) != 0) {
        ef_test_fail (__FILE__, __LINE__, err);
        ef_runtime_destroy (&rt);
        ef_config_destroy (&config);
        ef_registry_destroy (&reg);
        return;
    }
    /* reports sent before the function is set wait in the pipe */
    ef_runtime_on_report (rt, s_on_report, rt);
    EF_CHECK (ef_runtime_wait (rt) == 0);
    /* in order, the one destroy sent included: the runtime waits for it */
    EF_CHECK (s_n_reports == 3);
    EF_CHECK (strcmp (s_reports[0], "reporter:init") == 0);
    EF_CHECK (strcmp (s_reports[1], "reporter:tick") == 0);
    EF_CHECK (strcmp (s_reports[2], "reporter:destroy") == 0);
    ef_runtime_destroy (&rt);
    ef_config_destroy (&config);
    ef_registry_destroy (&reg);
}
