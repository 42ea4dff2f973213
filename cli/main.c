/*  main.c — the embedflow binary: one command per subcommand.

    ef_commands is the one list of commands: the usage text, dispatch and
    the bash completion script (cmd_completion.c) are all made from it.
*/
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static int s_cmd_help (int argc, char **argv);
static int s_cmd_version (int argc, char **argv);

const ef_command_t ef_commands[] = {
    {"run", ef_cmd_run,
     "run the pipeline: gRPC receiver, scheduled pull jobs, splitter,\n"
     "N database writers, DLQ, cache invalidator"},
    {"demo", ef_cmd_demo,
     "stream a synthetic data set (141,897 x 768) through the pipeline\n"
     "on a private PostgreSQL and print a summary"},
    {"graph", ef_cmd_graph,
     "print the configured topology as Graphviz DOT (--png FILE)"},
    {"pull", ef_cmd_pull,
     "pull one job now from an AI server (GetEmbeddings), resuming\n"
     "from its committed checkpoint"},
    {"jobs", ef_cmd_jobs,
     "list recent job runs (--schedule: when jobs run next)"},
    {"bench", ef_cmd_bench,
     "measure the pipeline against COPY, staged-upsert and row-at-a-time\n"
     "baselines on the same tables and rows"},
    {"top", ef_cmd_top,
     "live view of a running embedflow's actors (reads its --metrics)"},
    {"ctl", ef_cmd_ctl,
     "control a running embedflow through its --metrics endpoint:\n"
     "status, pause, resume, run JOB, stop JOB"},
    {"dlq", ef_cmd_dlq, "list, show, replay and purge dead letters"},
    {"keygen", ef_cmd_keygen,
     "make a CURVE key pair for tcp:// links between hosts"},
    {"check", ef_cmd_check,
     "validate the configuration and reach what it names (database,\n"
     "schema, API server, pull job servers, link peers) without running"},
    {"config", ef_cmd_config,
     "print the effective configuration as YAML, defaults included,\n"
     "secrets masked"},
    {"index", ef_cmd_index,
     "show the schema's ANN index (pgvector) against the configured\n"
     "one; --apply rebuilds it as configured"},
    {"completion", ef_cmd_completion,
     "print a bash completion script: source <(embedflow completion bash)"},
    {"version", s_cmd_version, "print the version"},
    {"help", s_cmd_help,
     "this text; `embedflow COMMAND --help` for a command's options"},
    {NULL, NULL, NULL},
};

static void
s_usage (FILE *out)
{
    fprintf (out, "embedflow — stream embeddings from gRPC into PostgreSQL, "
                  "fast and without loss\n"
                  "\n"
                  "usage: embedflow COMMAND [options]\n"
                  "\n"
                  "commands:\n");
    for (const ef_command_t *c = ef_commands; c->name; c++) {
        fprintf (out, "  %-11s", c->name);
        for (const char *s = c->summary; *s; s++) {
            fputc (*s, out);
            if (*s == '\n')
                fprintf (out, "  %-11s", "");
        }
        fputc ('\n', out);
    }
    fprintf (out, "\n"
                  "With no database configured (--database, DATABASE_URL or "
                  "libpq's PG* variables),\n"
                  "run, demo and bench start a private PostgreSQL under "
                  "--data-dir;\n"
                  "pull, dlq, jobs and index use it only when it exists "
                  "(else exit 2).\n"
                  "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or "
                  "configuration.\n");
}

static int
s_cmd_help (int argc, char **argv)
{
    (void) argc;
    (void) argv;
    s_usage (stdout);
    return EF_EXIT_OK;
}

static int
s_cmd_version (int argc, char **argv)
{
    (void) argc;
    (void) argv;
    printf ("embedflow %s\n", EF_VERSION);
    return EF_EXIT_OK;
}

int
main (int argc, char **argv)
{
    if (argc < 2) {
        s_usage (stderr);
        return EF_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp (cmd, "--help") == 0 || strcmp (cmd, "-h") == 0)
        cmd = "help";
    if (strcmp (cmd, "--version") == 0)
        cmd = "version";
    for (const ef_command_t *c = ef_commands; c->name; c++)
        if (strcmp (cmd, c->name) == 0)
            return c->run (argc - 1, argv + 1);
    fprintf (stderr, "embedflow: unknown command '%s'\n\n", cmd);
    s_usage (stderr);
    return EF_EXIT_USAGE;
}
