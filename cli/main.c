/*  main.c — the embedflow binary: one command per subcommand. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static void
s_usage (FILE *out)
{
    fprintf (
        out,
        "embedflow — stream embeddings from gRPC into PostgreSQL, fast and "
        "without loss\n"
        "\n"
        "usage: embedflow COMMAND [options]\n"
        "\n"
        "commands:\n"
        "  run     run the pipeline: gRPC receiver, scheduled pull jobs, "
        "splitter,\n"
        "          N database writers, DLQ, cache invalidator\n"
        "  demo    stream a synthetic data set (141,897 x 768) through the "
        "pipeline\n"
        "          on a private PostgreSQL and print a summary\n"
        "  graph   print the configured topology as Graphviz DOT (--png FILE)\n"
        "  pull    pull one job now from an AI server (GetEmbeddings), "
        "resuming\n"
        "          from its committed checkpoint\n"
        "  jobs    list recent job runs (--schedule: when jobs run next)\n"
        "  bench   measure the pipeline against COPY, staged-upsert and "
        "row-at-a-time\n"
        "          baselines on the same tables and rows\n"
        "  top     live view of a running embedflow's actors (reads its "
        "--metrics)\n"
        "  dlq     list, show, replay and purge dead letters\n"
        "  keygen  make a CURVE key pair for tcp:// links between hosts\n"
        "  check   validate the configuration and reach what it names "
        "(database,\n"
        "          schema, API server, pull job servers, link peers) "
        "without running\n"
        "  config  print the effective configuration as YAML, defaults "
        "included,\n"
        "          secrets masked\n"
        "  help    this text; `embedflow COMMAND --help` for a command's "
        "options\n"
        "\n"
        "With no database configured (--database, DATABASE_URL or PG* "
        "variables),\n"
        "the commands that need one start a private PostgreSQL under "
        "--data-dir.\n"
        "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.\n");
}

int
main (int argc, char **argv)
{
    if (argc < 2) {
        s_usage (stderr);
        return EF_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp (cmd, "run") == 0)
        return ef_cmd_run (argc - 1, argv + 1);
    if (strcmp (cmd, "demo") == 0)
        return ef_cmd_demo (argc - 1, argv + 1);
    if (strcmp (cmd, "graph") == 0)
        return ef_cmd_graph (argc - 1, argv + 1);
    if (strcmp (cmd, "pull") == 0)
        return ef_cmd_pull (argc - 1, argv + 1);
    if (strcmp (cmd, "jobs") == 0)
        return ef_cmd_jobs (argc - 1, argv + 1);
    if (strcmp (cmd, "bench") == 0)
        return ef_cmd_bench (argc - 1, argv + 1);
    if (strcmp (cmd, "top") == 0)
        return ef_cmd_top (argc - 1, argv + 1);
    if (strcmp (cmd, "dlq") == 0)
        return ef_cmd_dlq (argc - 1, argv + 1);
    if (strcmp (cmd, "keygen") == 0)
        return ef_cmd_keygen (argc - 1, argv + 1);
    if (strcmp (cmd, "check") == 0)
        return ef_cmd_check (argc - 1, argv + 1);
    if (strcmp (cmd, "config") == 0)
        return ef_cmd_config (argc - 1, argv + 1);
    if (strcmp (cmd, "help") == 0 || strcmp (cmd, "--help") == 0
        || strcmp (cmd, "-h") == 0) {
        s_usage (stdout);
        return EF_EXIT_OK;
    }
    if (strcmp (cmd, "version") == 0 || strcmp (cmd, "--version") == 0) {
        printf ("embedflow 0.1.0\n");
        return EF_EXIT_OK;
    }
    fprintf (stderr, "embedflow: unknown command '%s'\n\n", cmd);
    s_usage (stderr);
    return EF_EXIT_USAGE;
}
