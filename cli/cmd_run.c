/*  cmd_run.c — `embedflow run` and `embedflow graph`. */
#include "cli/cli.h"

#include "embedflow/log.h"

#include <stdio.h>

int
ef_cmd_run (int argc, char **argv)
{
    ef_signals_init ();
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "run", argc, argv, NULL, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf ("usage: embedflow run [--config FILE] [options]\n\n"
                    "Runs the actors this process is configured for (all of "
                    "them by default) until\nSIGINT or SIGTERM, then drains: "
                    "streams in flight are finished and\nacknowledged before "
                    "it exits 0. A second signal exits at once.\n");
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    if (ef_cli_resolve_database (&cli) != 0) {
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    ef_runtime_t *rt = ef_cli_start_runtime (&cli);
    if (!rt) {
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    ef_info ("ready");
    rc = ef_runtime_wait (rt);
    ef_runtime_destroy (&rt);
    ef_cli_close (&cli);
    return rc;
}

int
ef_cmd_graph (int argc, char **argv)
{
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "graph", argc, argv, NULL, &help);
    if (rc == EF_EXIT_OK && help) {
        printf ("usage: embedflow graph [--config FILE] [options] | dot -Tpng "
                "-o topology.png\n\nPrints the topology (actors, instance "
                "counts, links and endpoints) as Graphviz DOT.\n");
        ef_cli_print_config_help (&cli);
    }
    else if (rc == EF_EXIT_OK)
        ef_config_print_dot (cli.config, stdout);
    ef_cli_close (&cli);
    return rc;
}
