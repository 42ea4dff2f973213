/*  scheduler.c — starts pull jobs on their cron schedules.

    For every job of the config's `jobs:` section with a `schedule`, the
    scheduler finds the next slot (cron read in the job's time zone,
    jobs/cron.h, jobs/tz.h) and, when it is due, claims it in
    job_slot: the process whose claim goes in sends a RunRequest to the
    grpc-puller on link "runs"; a process that sees the slot taken leaves
    it. The puller answers every request with a RunEnded on "run-ends".

    No overlap: a slot that comes while the job's run is still going is
    skipped and logged. Misfire: slots that passed while no process ran
    the job (found from the latest claimed slot at start) are skipped, or,
    with `misfire: fire_once`, run once, not once per slot. A failed run
    is run again with backoff up to `run_retries` times; a run that did
    not start because another process holds the job is not retried.

    `run_now` names jobs to run once at start whatever their schedule
    (trigger 'manual'); `embedflow pull` runs that way. Drain stops new
    requests at once; the puller finishes what it runs.
*/
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embedflow/actor.h"
#include "embedflow/backoff.h"
#include "embedflow/log.h"
#include "pipeline/pipeline.h"
#include "embedflow/v1/pipeline.pb-c.h"
#include "postgres/jobrun.h"
#include "jobs/cron.h"
#include "jobs/job.h"
#include "postgres/pg.h"
#include "jobs/tz.h"

#define S_MAX_WAIT_MS 1000 /* look at the clock at least this often */

typedef struct {
    char *run_now; /* comma list of jobs to run once at start */
} s_options_t;

static const ef_option_t s_options[] = {
    {"run_now", EF_OPT_STRING, NULL, offsetof (s_options_t, run_now), 0, 0,
     "jobs to run once at start, NAME[,NAME...] (embedflow pull sets it)"},
    EF_OPTION_END};

/* One job as the scheduler sees it. */
typedef struct {
    const char *name;      /* borrowed from the config */
    const ef_job_t *job;   /* borrowed from the config */
    bool scheduled;        /* has a schedule */
    ef_cron_t cron;        /* the schedule */
    ef_tz_t *tz;           /* its time zone, owned */
    int64_t next_fire;     /* next slot, Unix seconds; -1 = none */
    bool running;          /* asked for, no RunEnded yet */
    bool run_now;          /* to be asked for once at start */
    ef_backoff_t retry;    /* between retried runs */
    int64_t rerun_at_us;   /* monotonic time of a retried run, 0 = none */
    ef_backoff_t claiming; /* between failed claims of a slot */
    int64_t claim_at_us;   /* monotonic time of the next claim, 0 = now */
} s_job_t;

typedef struct {
    ef_actor_t *actor;           /* the actor instance */
    const s_options_t *opts;     /* its options */
    const ef_globals_t *globals; /* schema, database */
    int runs_port;               /* OUT: runs */
    int ends_port;               /* IN: run-ends */
    PGconn *conn;                /* slot claims; only with schedules */
    s_job_t *jobs;               /* one per configured job */
    size_t n_jobs;               /* entries of jobs */
    bool draining;               /* no request goes out any more */
} s_scheduler_t;

/* Now, Unix seconds. */
static int64_t
s_now (void)
{
    return ef_clock_wall_us () / 1000000;
}

/* Sends a RunRequest for job. Returns 0, -1 when the link would not take
   it (logged). */
static int
s_ask (s_scheduler_t *self, s_job_t *job, const char *trigger, int64_t slot)
{
    Embedflow__V1__RunRequest r = EMBEDFLOW__V1__RUN_REQUEST__INIT;
    r.job = (char *) job->name;
    r.trigger = (char *) trigger;
    r.slot = slot;
    size_t size = embedflow__v1__run_request__get_packed_size (&r);
    zframe_t *frame = zframe_new (NULL, size);
    zmsg_t *msg = zmsg_new ();
    if (!frame || !msg) {
        zframe_destroy (&frame);
        zmsg_destroy (&msg);
        ef_error ("job %s: out of memory: not run", job->name);
        return -1;
    }
    embedflow__v1__run_request__pack (&r, zframe_data (frame));
    zmsg_append (msg, &frame);
    if (ef_actor_try_send (self->actor, self->runs_port, 0, &msg) != 1) {
        zmsg_destroy (&msg);
        ef_error ("job %s: the grpc-puller does not take requests: not run",
                  job->name);
        return -1;
    }
    job->running = true;
    return 0;
}

/* The latest slot of job in (after, now], -1 when none; *missed counts
   the slots in between (capped). */
static int64_t
s_latest_slot (const s_job_t *job, int64_t after, int64_t now, int64_t *missed)
{
    int64_t latest = -1;
    *missed = 0;
    for (int64_t t = ef_cron_next_tz (&job->cron, job->tz, after);
         t >= 0 && t <= now; t = ef_cron_next_tz (&job->cron, job->tz, t)) {
        latest = t;
        if (++*missed >= 1000000)
            break;
    }
    return latest;
}

/* Sets the job's first slot, applying its misfire policy to the slots
   missed while no process ran it. Returns 0, -1 with err. */
static int
s_first_slot (s_scheduler_t *self, s_job_t *job, char *err, size_t errlen)
{
    int64_t now = s_now (), last = -1, missed = 0;
    if (ef_job_last_slot (self->conn, self->globals->schema, job->name, &last,
                          err, errlen)
        != 0)
        return -1;
    int64_t latest = last >= 0 ? s_latest_slot (job, last, now, &missed) : -1;
    if (latest >= 0 && strcmp (job->job->misfire, "fire_once") == 0) {
        ef_info ("job %s: %" PRId64 " slot(s) missed: running once now",
                 job->name, missed);
        job->next_fire = latest;
        return 0;
    }
    if (latest >= 0)
        ef_info ("job %s: %" PRId64 " slot(s) missed: skipped", job->name,
                 missed);
    job->next_fire = ef_cron_next_tz (&job->cron, job->tz, now);
    return 0;
}

/* Runs one job's clock: a retried run, or a slot that is due (claimed in
   the database, so that one process runs it). */
static void
s_job_tick (s_scheduler_t *self, s_job_t *job, int64_t now)
{
    char err[512];
    if (job->running) {
        if (job->next_fire >= 0 && now >= job->next_fire) {
            ef_info ("job %s: slot %" PRId64 " skipped: the previous run is "
                     "still going",
                     job->name, job->next_fire);
            job->next_fire = ef_cron_next_tz (&job->cron, job->tz, now);
        }
        return;
    }
    if (job->rerun_at_us && ef_clock_mono_us () >= job->rerun_at_us) {
        job->rerun_at_us = 0;
        s_ask (self, job, "cron", -1);
        return;
    }
    if (job->next_fire < 0 || now < job->next_fire
        || ef_clock_mono_us () < job->claim_at_us)
        return;
    int64_t slot = job->next_fire;
    int claimed = ef_job_claim_slot (self->conn, self->globals->schema,
                                     job->name, slot, err, sizeof err);
    if (claimed < 0) {
        /* The database is away: keep the slot and claim it when it is
           back (once, like fire_once), trying again with backoff. */
        int64_t delay = ef_backoff_next (&job->claiming);
        ef_warn ("job %s: slot %" PRId64 " not claimed (trying again in "
                 "%" PRId64 " ms): %s",
                 job->name, slot, delay, err);
        job->claim_at_us = ef_clock_mono_us () + delay * 1000;
        if (PQstatus (self->conn) != CONNECTION_OK)
            PQreset (self->conn);
        return;
    }
    ef_backoff_reset (&job->claiming);
    job->claim_at_us = 0;
    job->next_fire = ef_cron_next_tz (&job->cron, job->tz, now);
    if (claimed == 0) {
        ef_debug ("job %s: slot %" PRId64 " runs elsewhere", job->name, slot);
        return;
    }
    s_ask (self, job, "cron", slot);
}

/* Milliseconds until the next thing any job has to do, capped. */
static int64_t
s_next_wake (const s_scheduler_t *self)
{
    int64_t wait = S_MAX_WAIT_MS;
    int64_t now_ms = ef_clock_wall_us () / 1000, mono = ef_clock_mono_us ();
    for (size_t i = 0; i < self->n_jobs; i++) {
        const s_job_t *job = &self->jobs[i];
        if (job->next_fire >= 0) {
            int64_t until = job->next_fire * 1000 - now_ms;
            if (job->claim_at_us) { /* a failed claim waits its backoff */
                int64_t retry = (job->claim_at_us - mono) / 1000;
                until = retry > until ? retry : until;
            }
            wait = until < wait ? until : wait;
        }
        if (job->rerun_at_us) {
            int64_t until = (job->rerun_at_us - mono) / 1000;
            wait = until < wait ? until : wait;
        }
    }
    return wait < 0 ? 0 : wait;
}

/* Reads the jobs, their schedules and time zones; applies misfire
   policies. Returns 0, -1 after ef_actor_fail. */
static int
s_init (ef_actor_t *actor)
{
    s_scheduler_t *self = ef_actor_state (actor);
    self->actor = actor;
    self->opts = ef_actor_options (actor);
    self->globals = ef_actor_globals (actor);
    self->runs_port = ef_actor_port (actor, "runs");
    self->ends_port = ef_actor_port (actor, "run-ends");
    assert (self->runs_port >= 0 && self->ends_port >= 0);
    const ef_config_t *config = ef_actor_config (actor);
    self->n_jobs = ef_config_section_size (config, EF_JOBS_SECTION);
    if (self->n_jobs == 0 && !(self->opts->run_now && *self->opts->run_now))
        return 0;
    if (ef_actor_instances (actor) > 1) {
        ef_actor_fail (actor, "runs one instance");
        return -1;
    }
    self->jobs = calloc (self->n_jobs ? self->n_jobs : 1, sizeof *self->jobs);
    if (!self->jobs) {
        ef_actor_fail (actor, "out of memory");
        return -1;
    }
    char err[512];
    bool any_schedule = false;
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_t *job = &self->jobs[i];
        job->job =
            ef_config_section_entry (config, EF_JOBS_SECTION, i, &job->name);
        job->next_fire = -1;
        job->scheduled = job->job->schedule && *job->job->schedule;
        any_schedule |= job->scheduled;
    }
    /* run_now names jobs once at start */
    char *list = self->opts->run_now ? strdup (self->opts->run_now) : NULL;
    char *save = NULL;
    for (char *t = list ? strtok_r (list, ", ", &save) : NULL; t;
         t = strtok_r (NULL, ", ", &save)) {
        s_job_t *job = NULL;
        for (size_t i = 0; i < self->n_jobs && !job; i++)
            if (strcmp (self->jobs[i].name, t) == 0)
                job = &self->jobs[i];
        if (!job) {
            ef_actor_fail (actor, "run_now: no job '%s' in the jobs section",
                           t);
            free (list);
            return -1;
        }
        job->run_now = true;
    }
    free (list);
    if (!any_schedule) {
        ef_actor_wake_in (actor, 0);
        return 0;
    }
    self->conn = ef_pg_open_for_actor (actor);
    if (!self->conn)
        return -1;
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_t *job = &self->jobs[i];
        if (!job->scheduled)
            continue;
        if (ef_cron_parse (job->job->schedule, &job->cron, err, sizeof err) != 0
            || !(job->tz = ef_tz_load (job->job->timezone, err, sizeof err))) {
            ef_actor_fail (actor, "job %s: %s", job->name, err);
            return -1;
        }
        job->retry =
            ef_backoff_make (job->job->run_retry_base, job->job->run_retry_cap,
                             (int) job->job->run_retries);
        job->claiming = ef_backoff_make (100, 5000, -1);
        if (s_first_slot (self, job, err, sizeof err) != 0) {
            ef_actor_fail (actor, "job %s: %s", job->name, err);
            return -1;
        }
        ef_info ("job %s: scheduled '%s' (%s), misfire %s", job->name,
                 job->job->schedule, ef_tz_name (job->tz), job->job->misfire);
    }
    ef_actor_wake_in (actor, 0);
    return 0;
}

/* Takes a RunEnded: the job may run again; a failed scheduled run is
   retried with backoff. */
static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    s_scheduler_t *self = ef_actor_state (actor);
    zframe_t *frame = port == self->ends_port ? zmsg_first (*msg_p) : NULL;
    Embedflow__V1__RunEnded *e =
        frame ? embedflow__v1__run_ended__unpack (NULL, zframe_size (frame),
                                                  zframe_data (frame))
              : NULL;
    zmsg_destroy (msg_p);
    if (!e) {
        ef_warn ("dropping a message on run-ends that is not a RunEnded");
        return 0;
    }
    s_job_t *job = NULL;
    for (size_t i = 0; i < self->n_jobs && !job; i++)
        if (strcmp (self->jobs[i].name, e->job) == 0)
            job = &self->jobs[i];
    if (job) {
        job->running = false;
        bool failed = strcmp (e->status, "failed") == 0;
        if (!job->scheduled || !failed)
            ef_backoff_reset (&job->retry);
        else if (!self->draining) {
            int64_t delay = ef_backoff_next (&job->retry);
            if (delay >= 0) {
                job->rerun_at_us = ef_clock_mono_us () + delay * 1000;
                ef_warn ("job %s: the run failed; retry %d of %" PRId64
                         " in %" PRId64 " ms",
                         job->name, job->retry.attempt, job->job->run_retries,
                         delay);
            }
            else {
                ef_backoff_reset (&job->retry);
                if (job->job->run_retries > 0)
                    ef_error ("job %s: retries spent; next try at the next "
                              "slot",
                              job->name);
            }
        }
        ef_actor_wake_in (actor, 0);
    }
    embedflow__v1__run_ended__free_unpacked (e, NULL);
    return 0;
}

/* Asks for the run_now jobs once, then keeps the schedules. */
static int
s_tick (ef_actor_t *actor)
{
    s_scheduler_t *self = ef_actor_state (actor);
    if (self->draining || ef_actor_stopping (actor))
        return 0;
    int64_t now = s_now ();
    bool scheduled = false;
    for (size_t i = 0; i < self->n_jobs; i++) {
        s_job_t *job = &self->jobs[i];
        if (job->run_now && !job->running) {
            job->run_now = false;
            s_ask (self, job, "manual", -1);
        }
        if (job->scheduled) {
            s_job_tick (self, job, now);
            scheduled = true;
        }
    }
    ef_actor_wake_in (actor, scheduled ? s_next_wake (self) : -1);
    return 0;
}

/* /control: "run JOB" asks for a run of JOB now (trigger "manual", as
   run_now does), unless one is running or the process is draining. */
static int
s_control (ef_actor_t *actor, const char *verb, const char *arg, char *reply,
           size_t len)
{
    s_scheduler_t *self = ef_actor_state (actor);
    if (strcmp (verb, "run") != 0)
        return 1;
    s_job_t *job = NULL;
    for (size_t i = 0; i < self->n_jobs && !job; i++)
        if (strcmp (self->jobs[i].name, arg) == 0)
            job = &self->jobs[i];
    if (!job) {
        snprintf (reply, len, "no job '%s' in the jobs section", arg);
        return 1;
    }
    if (self->draining) {
        snprintf (reply, len, "draining: no job is started any more");
        return -1;
    }
    if (job->running) {
        snprintf (reply, len, "job %s is running already", job->name);
        return -1;
    }
    if (s_ask (self, job, "manual", -1) != 0) {
        snprintf (reply, len, "job %s: the grpc-puller does not take requests",
                  job->name);
        return -1;
    }
    snprintf (reply, len, "job %s: run started", job->name);
    return 0;
}

/* Graceful stop: nothing new is asked for. */
static void
s_drain (ef_actor_t *actor)
{
    s_scheduler_t *self = ef_actor_state (actor);
    self->draining = true;
    ef_actor_drained (actor);
}

static void
s_destroy (ef_actor_t *actor)
{
    s_scheduler_t *self = ef_actor_state (actor);
    for (size_t i = 0; i < self->n_jobs; i++)
        ef_tz_destroy (&self->jobs[i].tz);
    PQfinish (self->conn);
    free (self->jobs);
}

static const ef_port_def_t s_ports[] = {
    {"runs", EF_PORT_OUT, "embedflow.v1.RunRequest", false, 1000},
    {"run-ends", EF_PORT_IN, "embedflow.v1.RunEnded", false, 1000},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

const ef_actor_def_t ef_scheduler_actor = {
    .name = "scheduler",
    .summary = "starts the config's pull jobs on their cron schedules (one "
               "process per slot, no overlap, misfire policy, retries)",
    .options = s_options,
    .options_size = sizeof (s_options_t),
    .state_size = sizeof (s_scheduler_t),
    .ports = s_ports,
    .flags = EF_ACTOR_SOURCE,
    .default_instances = 1,
    .init = s_init,
    .handle = s_handle,
    .tick = s_tick,
    .drain = s_drain,
    .destroy = s_destroy,
    .control = s_control,
};
