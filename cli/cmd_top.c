/*  cmd_top.c — `embedflow top`: a live view of a running embedflow, read
    from its metrics endpoint (`--metrics HOST:PORT` of that process).

    Every interval it scrapes /metrics and shows one line per actor
    instance: rows in and out (totals and rates over the interval),
    messages, rows in flight, errors, retries and dead-lettered rows, and
    the pipeline's latency. On a terminal the view is redrawn in place;
    otherwise each scrape is printed as plain lines.
*/
#include "cli/cli.h"

#include "embedflow/actor.h"
#include "embedflow/address.h"
#include "embedflow/buf.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_ACTORS 64

/* The columns, by the metric each reads (embedflow_actor_<name>). */
enum {
    S_ROWS_IN,
    S_ROWS_OUT,
    S_MSG_IN,
    S_MSG_OUT,
    S_IN_FLIGHT,
    S_ERRORS,
    S_RETRIES,
    S_DEAD,
    S_FIELDS
};
static const char *s_fields[S_FIELDS] = {
    "rows_in_total",      "rows_out_total",     "messages_in_total",
    "messages_out_total", "in_flight_rows",     "errors_total",
    "retries_total",      "dead_lettered_total"};

typedef struct {
    char name[80];          /* actor instance */
    double value[S_FIELDS]; /* latest sample of each column */
} s_actor_t;

typedef struct {
    s_actor_t actors[S_MAX_ACTORS]; /* in order of first appearance */
    int n;                          /* used */
    double latency_count;           /* pipeline latency histogram */
    double latency_sum;
    double rss; /* process gauges */
    double cpu;
    int64_t at_us; /* when scraped (monotonic) */
} s_snapshot_t;

/* The instance named actor in snap, added when new (NULL when full). */
static s_actor_t *
s_actor (s_snapshot_t *snap, const char *actor)
{
    for (int i = 0; i < snap->n; i++)
        if (strcmp (snap->actors[i].name, actor) == 0)
            return &snap->actors[i];
    if (snap->n == S_MAX_ACTORS)
        return NULL;
    s_actor_t *a = &snap->actors[snap->n++];
    memset (a, 0, sizeof *a);
    snprintf (a->name, sizeof a->name, "%s", actor);
    return a;
}

/* Reads the samples of a Prometheus text body into snap. */
static void
s_parse (char *text, s_snapshot_t *snap)
{
    for (char *line = strtok (text, "\n"); line; line = strtok (NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *space = strrchr (line, ' ');
        if (!space)
            continue;
        *space = 0;
        double value = strtod (space + 1, NULL);
        char *brace = strchr (line, '{');
        char actor[80] = "";
        if (brace) {
            *brace = 0;
            char *a = strstr (brace + 1, "actor=\"");
            if (a) {
                a += 7;
                size_t n = strcspn (a, "\"");
                snprintf (actor, sizeof actor, "%.*s", (int) n, a);
            }
        }
        if (strcmp (line, "embedflow_pipeline_latency_seconds_count") == 0)
            snap->latency_count = value;
        else if (strcmp (line, "embedflow_pipeline_latency_seconds_sum") == 0)
            snap->latency_sum = value;
        else if (strcmp (line, "embedflow_process_resident_memory_bytes") == 0)
            snap->rss = value;
        else if (strcmp (line, "embedflow_process_cpu_seconds_total") == 0)
            snap->cpu = value;
        else if (actor[0] && strncmp (line, "embedflow_actor_", 16) == 0)
            for (int f = 0; f < S_FIELDS; f++)
                if (strcmp (line + 16, s_fields[f]) == 0) {
                    s_actor_t *a = s_actor (snap, actor);
                    if (a)
                        a->value[f] = value;
                }
    }
}

/* Scrapes once into snap. Returns 0, or -1 with err set. */
static int
s_scrape (const char *host, const char *port, s_snapshot_t *snap, char *err,
          size_t errlen)
{
    memset (snap, 0, sizeof *snap);
    char *body = NULL;
    int status = ef_cli_http (host, port, "GET", "/metrics", NULL, 5, &body,
                              err, errlen);
    if (status != 200) {
        if (status > 0)
            snprintf (err, errlen,
                      "%s:%s did not answer /metrics with 200 (is it "
                      "embedflow's --metrics address?)",
                      host, port);
        free (body);
        return -1;
    }
    snap->at_us = ef_clock_mono_us ();
    s_parse (body, snap);
    free (body);
    return 0;
}

/* The same instance in an earlier snapshot, or NULL. */
static const s_actor_t *
s_before (const s_snapshot_t *prev, const char *name)
{
    for (int i = 0; prev && i < prev->n; i++)
        if (strcmp (prev->actors[i].name, name) == 0)
            return &prev->actors[i];
    return NULL;
}

/* Prints one frame: rates against prev (none on the first frame). */
static void
s_print (FILE *out, const char *address, const s_snapshot_t *now,
         const s_snapshot_t *prev)
{
    double dt = prev ? (double) (now->at_us - prev->at_us) / 1e6 : 0;
    double lat = prev && now->latency_count > prev->latency_count
                     ? (now->latency_sum - prev->latency_sum)
                           / (now->latency_count - prev->latency_count)
                 : now->latency_count > 0
                     ? now->latency_sum / now->latency_count
                     : 0;
    fprintf (out,
             "embedflow top  %s   RSS %.0f MB   CPU %.1f s   mean latency "
             "%.1f ms\n",
             address, now->rss / 1048576.0, now->cpu, lat * 1e3);
    fprintf (out, "%-20s %11s %9s %11s %9s %8s %8s %9s %7s %7s %7s\n", "ACTOR",
             "ROWS IN", "IN/s", "ROWS OUT", "OUT/s", "MSG IN/s", "MSG OUT/s",
             "IN-FLIGHT", "ERRORS", "RETRIES", "DEAD");
    for (int i = 0; i < now->n; i++) {
        const s_actor_t *a = &now->actors[i];
        const s_actor_t *b = s_before (prev, a->name);
        double rate[S_FIELDS] = {0};
        for (int f = 0; f < S_FIELDS && b && dt > 0; f++)
            rate[f] = (a->value[f] - b->value[f]) / dt;
        fprintf (out,
                 "%-20s %11.0f %9.0f %11.0f %9.0f %8.0f %8.0f %9.0f %7.0f "
                 "%7.0f %7.0f\n",
                 a->name, a->value[S_ROWS_IN], rate[S_ROWS_IN],
                 a->value[S_ROWS_OUT], rate[S_ROWS_OUT], rate[S_MSG_IN],
                 rate[S_MSG_OUT], a->value[S_IN_FLIGHT], a->value[S_ERRORS],
                 a->value[S_RETRIES], a->value[S_DEAD]);
    }
    fflush (out);
}

int
ef_cmd_top (int argc, char **argv)
{
    static const ef_option_t count_row = {"count", EF_OPT_INT, NULL,       0,
                                          1,       INT64_MAX,  "refreshes"};
    char *interval = NULL, *once = NULL;
    int64_t count = 0;
    const ef_cli_flag_t flags[] = {
        {"interval", "SECONDS", "time between refreshes (default 1)", &interval,
         NULL, NULL},
        {"count", "N", "stop after N refreshes (default: until interrupted)",
         NULL, &count_row, &count},
        {"once", NULL, "print one view (totals, no rates) and exit", &once,
         NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "top", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf ("usage: embedflow top --metrics HOST:PORT [--interval S] "
                    "[--once]\n\nShows a running embedflow's actors live, "
                    "read from its metrics endpoint\n(the --metrics address "
                    "that process serves, or `metrics:` in --config).\n\ntop "
                    "options:\n");
            ef_cli_print_flags (flags);
        }
        ef_cli_close (&cli);
        return rc;
    }
    const char *address = cli.globals->metrics;
    /* Seconds, fractions allowed ("0.2"): a bare number means seconds
       here, where a duration key would read it as milliseconds. */
    char *end = NULL;
    double every = interval ? strtod (interval, &end) : 1.0;
    if (interval && (end == interval || *end))
        every = -1; /* not a number: rejected below */
    long frames = once ? 1 : count ? (long) count : -1;
    char host[256], port[16];
    const char *bad = NULL;
    if (!address
        || ef_address_split (address, host, sizeof host, port, sizeof port)
               != 0)
        bad = "--metrics HOST:PORT (the endpoint of the embedflow to watch) "
              "is required";
    else if (!(every >= 0.1 && every <= 3600))
        bad = "--interval must be 0.1 to 3600 seconds";
    if (bad) {
        fprintf (stderr, "embedflow top: %s\n", bad);
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    if (strcmp (host, "0.0.0.0") == 0 || !host[0])
        snprintf (host, sizeof host, "127.0.0.1");

    bool tty = isatty (STDOUT_FILENO);
    s_snapshot_t *snaps = calloc (2, sizeof *snaps);
    char err[512];
    if (!snaps) {
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    rc = EF_EXIT_OK;
    int cur = 0;
    bool have_prev = false;
    for (long frame = 0; frames < 0 || frame < frames; frame++) {
        if (frame > 0) {
            struct timespec ts = {(time_t) every,
                                  (long) (fmod (every, 1.0) * 1e9)};
            nanosleep (&ts, NULL);
        }
        if (s_scrape (host, port, &snaps[cur], err, sizeof err) != 0) {
            fprintf (stderr, "embedflow top: %s\n", err);
            rc = EF_EXIT_FAIL;
            break;
        }
        if (tty)
            printf ("\033[H\033[J");
        else if (frame > 0)
            printf ("\n");
        s_print (stdout, address, &snaps[cur],
                 have_prev ? &snaps[1 - cur] : NULL);
        have_prev = true;
        cur = 1 - cur;
    }
    free (snaps);
    ef_cli_close (&cli);
    return rc;
}
