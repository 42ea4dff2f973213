/*  cmd_index.c — `embedflow index`: the schema's ANN index against the
    configured one (index.*), and with --apply the rebuild that makes it
    so. A start never rebuilds an index (it may take minutes over many
    rows): it only warns, and this command is how the change is made. */
#include "cli/cli.h"

#include "embedflow/log.h"
#include "postgres/pg.h"
#include "postgres/schema.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static double
s_seconds (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

int
ef_cmd_index (int argc, char **argv)
{
    char *apply = NULL, *rebuild = NULL;
    const ef_cli_flag_t flags[] = {
        {"apply", NULL,
         "rebuild the index as configured (built beside the old one, which "
         "serves queries until the swap)",
         &apply, NULL, NULL},
        {"rebuild", NULL,
         "with --apply: rebuild even when it is as configured (IVFFlat "
         "learns its lists from the rows there when it is built, and a new "
         "schema's is built empty)",
         &rebuild, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "index", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf ("usage: embedflow index [--apply [--rebuild]] "
                    "[--config FILE] "
                    "[--index.method M] ...\n\n"
                    "Shows the schema's ANN index (pgvector) and the "
                    "configured one (index.*);\nwith --apply, rebuilds it "
                    "as configured.\n\nindex options:\n");
            ef_cli_print_flags (flags);
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    if (rebuild && !apply) {
        fprintf (stderr, "embedflow index: --rebuild goes with --apply\n");
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_EXISTING);
    if (db_rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return db_rc;
    }
    char err[1024];
    PGconn *conn = ef_pg_connect (cli.globals->database, "embedflow index", err,
                                  sizeof err);
    ef_schema_opts_t opts;
    ef_globals_schema_opts (cli.globals, &opts);
    if (!conn
        || ef_schema_migrate_opts (conn, cli.globals->schema, &opts, err,
                                   sizeof err)
               != 0) {
        fprintf (stderr, "embedflow index: %s\n", err);
        PQfinish (conn);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    char stored[128], described[128];
    ef_index_describe (&opts.index, described, sizeof described);
    int drift = ef_schema_index_drift (conn, cli.globals->schema, &opts.index,
                                       stored, sizeof stored, err, sizeof err);
    if (drift < 0) {
        fprintf (stderr, "embedflow index: %s\n", err);
        rc = EF_EXIT_FAIL;
    }
    else if (!apply) {
        printf ("schema %s: index %s\nconfigured: %s\n", cli.globals->schema,
                stored, described);
        if (drift)
            printf ("differs: `embedflow index --apply` (with this "
                    "configuration) rebuilds it\n");
    }
    else if (!drift && !rebuild)
        printf ("schema %s: index %s, as configured: nothing to do\n",
                cli.globals->schema, stored);
    else {
        ef_info ("schema %s: rebuilding the index: %s -> %s",
                 cli.globals->schema, stored, described);
        double started = s_seconds ();
        if (ef_schema_index_apply (conn, cli.globals->schema, &opts.index, err,
                                   sizeof err)
            != 0) {
            fprintf (stderr, "embedflow index: %s\n", err);
            rc = EF_EXIT_FAIL;
        }
        else
            printf ("schema %s: index %s -> %s (%.1f s)\n", cli.globals->schema,
                    stored, described, s_seconds () - started);
    }
    PQfinish (conn);
    ef_cli_close (&cli);
    return rc;
}
