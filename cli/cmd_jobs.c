/*  cmd_jobs.c — `embedflow jobs`: the recent runs of pull jobs and
    uploads, from <schema>.job_run, as a table or as JSON; with
    --schedule, when the configured jobs run next.
*/
#include "cli/cli.h"

#include "embedflow/log.h"
#include "jobs/cron.h"
#include "jobs/job.h"
#include "postgres/pg.h"
#include "jobs/tz.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_NEXT_SLOTS 3 /* slots --schedule shows per job */

/* Formats Unix seconds t shifted by offset as "YYYY-MM-DD HH:MM". */
static void
s_format_time (int64_t t, int32_t offset, char *out, size_t len)
{
    time_t shifted = (time_t) (t + offset);
    struct tm tm;
    gmtime_r (&shifted, &tm);
    strftime (out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Prints each configured job's schedule and its next slots, in the job's
   zone and in UTC. Needs no database. Returns EF_EXIT_OK. */
static int
s_print_schedule (const ef_cli_t *cli)
{
    const char *name;
    const ef_job_t *job;
    int64_t now = ef_clock_wall_us () / 1000000;
    size_t shown = 0;
    for (size_t i = 0; (job = ef_config_section_entry (
                            cli->config, EF_JOBS_SECTION, i, &name));
         i++, shown++) {
        if (!job->schedule || !*job->schedule) {
            printf ("%s: no schedule (embedflow pull --job %s runs it)\n", name,
                    name);
            continue;
        }
        /* the config was validated: expression and zone are good */
        ef_cron_t cron;
        char err[256];
        ef_tz_t *tz = ef_tz_load (job->timezone, err, sizeof err);
        if (ef_cron_parse (job->schedule, &cron, err, sizeof err) != 0 || !tz) {
            ef_tz_destroy (&tz);
            continue;
        }
        printf ("%s: '%s' in %s, misfire %s\n", name, job->schedule,
                ef_tz_name (tz), job->misfire);
        int64_t t = now;
        for (int k = 0; k < S_NEXT_SLOTS; k++) {
            t = ef_cron_next_tz (&cron, tz, t);
            if (t < 0) {
                printf ("  (no slot within five years)\n");
                break;
            }
            char local[32], utc[32];
            s_format_time (t, ef_tz_offset (tz, t), local, sizeof local);
            s_format_time (t, 0, utc, sizeof utc);
            printf ("  next %s %s  (%s UTC)\n", local, ef_tz_name (tz), utc);
        }
        ef_tz_destroy (&tz);
    }
    if (!shown)
        printf ("(no jobs in the configuration)\n");
    return EF_EXIT_OK;
}

static const char *s_columns[] = {"id",
                                  "job",
                                  "trigger",
                                  "status",
                                  "started_at",
                                  "finished_at",
                                  "heartbeat_at",
                                  "rows_received",
                                  "rows_written",
                                  "rows_dead_lettered",
                                  "last_resume_token",
                                  "error"};
#define S_NCOLS (sizeof s_columns / sizeof s_columns[0])

/* Prints res as a JSON array of objects, keys in column order (numbers
   for the counters, null for NULL). Returns 0, -1 when out of memory or
   a value is not UTF-8 (nothing printed then). */
static int
s_print_json (PGresult *res)
{
    json_t *runs = json_array ();
    int rc = runs ? 0 : -1;
    for (int r = 0; rc == 0 && r < PQntuples (res); r++) {
        json_t *run = json_object ();
        rc = json_array_append_new (runs, run);
        for (int c = 0; rc == 0 && c < (int) S_NCOLS; c++) {
            const char *v = PQgetvalue (res, r, c);
            json_t *j = PQgetisnull (res, r, c) ? json_null ()
                        : c >= 7 && c <= 9
                            ? json_integer (strtoll (v, NULL, 10))
                            : json_string (v);
            rc = json_object_set_new (run, s_columns[c], j);
        }
    }
    char *text = rc == 0 ? json_dumps (runs, JSON_PRESERVE_ORDER) : NULL;
    if (text)
        printf ("%s\n", text);
    free (text);
    json_decref (runs);
    return text ? 0 : -1;
}

/* Prints res as an aligned table. */
static void
s_print_table (PGresult *res)
{
    printf ("%-36s  %-20s  %-7s  %-9s  %-19s  %9s  %9s  %6s  %s\n", "RUN",
            "JOB", "TRIGGER", "STATUS", "STARTED (UTC)", "RECEIVED", "WRITTEN",
            "DEAD", "POSITION / ERROR");
    for (int r = 0; r < PQntuples (res); r++) {
        const char *error = PQgetvalue (res, r, 11);
        const char *position = PQgetvalue (res, r, 10);
        /* a running run has neither yet: how long ago it was last seen
           alive tells a stuck or killed one from a live one */
        const char *note = *error      ? error
                           : *position ? position
                                       : PQgetvalue (res, r, 12);
        printf ("%-36s  %-20.20s  %-7s  %-9s  %-19.19s  %9s  %9s  %6s  %s\n",
                PQgetvalue (res, r, 0), PQgetvalue (res, r, 1),
                PQgetvalue (res, r, 2), PQgetvalue (res, r, 3),
                PQgetvalue (res, r, 4), PQgetvalue (res, r, 7),
                PQgetvalue (res, r, 8), PQgetvalue (res, r, 9), note);
    }
    if (PQntuples (res) == 0)
        printf ("(no runs)\n");
}

int
ef_cmd_jobs (int argc, char **argv)
{
    static const ef_option_t limit_row = {"limit", EF_OPT_INT, "20",          0,
                                          1,       1000000,    "runs to show"};
    char *json = NULL, *job = NULL, *schedule = NULL;
    int64_t limit = 0;
    const ef_cli_flag_t flags[] = {
        {"json", NULL, "print JSON instead of a table", &json, NULL, NULL},
        {"schedule", NULL,
         "print when the configured jobs (--config) run next, no database "
         "needed",
         &schedule, NULL, NULL},
        {"limit", "N", "runs to show, newest first (default 20)", NULL,
         &limit_row, &limit},
        {"job", "NAME", "only the runs of this job", &job, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "jobs", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf ("usage: embedflow jobs [--json] [--limit N] [--job NAME] "
                    "[--database CONNINFO]\n"
                    "       embedflow jobs --schedule --config FILE\n\n"
                    "Lists recent runs of pull jobs and uploads "
                    "(embedflow.job_run),\nor when the configured jobs run "
                    "next.\n\njobs options:\n");
            ef_cli_print_flags (flags);
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    if (schedule) {
        rc = s_print_schedule (&cli);
        ef_cli_close (&cli);
        return rc;
    }
    long n = (long) limit;
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_EXISTING);
    if (db_rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return db_rc;
    }
    char err[1024];
    PGconn *conn = ef_pg_connect (cli.globals->database, "embedflow jobs", err,
                                  sizeof err);
    if (!conn) {
        fprintf (stderr, "embedflow jobs: %s\n", err);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    char *schema = ef_pg_ident (conn, cli.globals->schema);
    char *sql = NULL;
    char nbuf[24];
    snprintf (nbuf, sizeof nbuf, "%ld", n);
    const char *params[] = {nbuf, job ? job : ""};
    const char *reg[] = {cli.globals->schema};
    PGresult *res = PQexecParams (
        conn, "SELECT to_regclass (quote_ident ($1) || '.job_run') IS NOT NULL",
        1, NULL, reg, NULL, NULL, 0);
    bool exists = PQresultStatus (res) == PGRES_TUPLES_OK
                  && strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    PQclear (res);
    res = NULL;
    rc = EF_EXIT_OK;
    if (!exists) {
        if (json)
            printf ("[]\n");
        else
            printf ("(no runs: schema %s has no job_run table yet)\n",
                    cli.globals->schema);
    }
    else if (!schema
             || asprintf (&sql,
                          "SELECT id, job, trigger, status,"
                          " to_char (started_at AT TIME ZONE 'UTC',"
                          "   'YYYY-MM-DD HH24:MI:SS'),"
                          " finished_at, heartbeat_at, rows_received,"
                          " rows_written, rows_dead_lettered,"
                          " coalesce (last_resume_token, ''),"
                          " coalesce (error, ''),"
                          " CASE WHEN status = 'running' THEN 'heartbeat '"
                          "   || round (extract (epoch FROM clock_timestamp ()"
                          "      - heartbeat_at))::bigint || ' s ago' END"
                          " FROM %s.job_run WHERE ($2 = '' OR job = $2)"
                          " ORDER BY started_at DESC, id DESC LIMIT $1::int",
                          schema)
                    < 0) {
        sql = NULL;
        fprintf (stderr, "embedflow jobs: out of memory\n");
        rc = EF_EXIT_FAIL;
    }
    else {
        res = PQexecParams (conn, sql, 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus (res) != PGRES_TUPLES_OK) {
            ef_pg_error (conn, res, NULL, err, sizeof err);
            fprintf (stderr, "embedflow jobs: %s\n", err);
            rc = EF_EXIT_FAIL;
        }
        else if (!json)
            s_print_table (res);
        else if (s_print_json (res) != 0) {
            fprintf (stderr, "embedflow jobs: cannot print the runs as JSON\n");
            rc = EF_EXIT_FAIL;
        }
        PQclear (res);
    }
    free (sql);
    free (schema);
    PQfinish (conn);
    ef_cli_close (&cli);
    return rc;
}
