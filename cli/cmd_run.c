/*  cmd_run.c — `embedflow run` and `embedflow graph`. */
#include "cli/cli.h"
#include "pipeline/metrics_server.h"

#include "embedflow/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    int db_rc = ef_cli_resolve_database (&cli, EF_CLI_DB_START_PRIVATE);
    if (db_rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return db_rc;
    }
    ef_metrics_server_t *metrics = NULL;
    rc = ef_cli_start_metrics (&cli, &metrics);
    if (rc != EF_EXIT_OK) {
        ef_cli_close (&cli);
        return rc;
    }
    ef_runtime_t *rt = ef_cli_start_runtime (&cli);
    if (!rt) {
        ef_metrics_server_destroy (&metrics);
        ef_cli_close (&cli);
        return EF_EXIT_FAIL;
    }
    ef_metrics_server_started (metrics, true);
    if (ef_metrics_server_control (metrics, rt, cli.globals->control_token)
        != 0)
        ef_warn ("out of memory: /control is off");
    ef_info ("ready");
    rc = ef_cli_wait_runtime (rt);
    ef_metrics_server_control (metrics, NULL, NULL);
    ef_runtime_destroy (&rt);
    ef_metrics_server_destroy (&metrics);
    ef_cli_close (&cli);
    return rc;
}

/* Pipes the DOT text of config through `dot -Tpng -o path`. Returns
   EF_EXIT_OK, or EF_EXIT_FAIL after saying why (no dot, dot failed). */
static int
s_draw_png (const ef_config_t *config, const char *path)
{
    if (system ("command -v dot >/dev/null 2>&1") != 0) {
        fprintf (stderr, "embedflow graph: --png needs dot, which is not "
                         "installed (apt-get install graphviz)\n");
        return EF_EXIT_FAIL;
    }
    /* the path goes to the shell quoted: ' becomes '\'' */
    size_t n = strlen (path);
    char *cmd = malloc (n * 4 + 64);
    if (!cmd)
        return EF_EXIT_FAIL;
    char *w = cmd + sprintf (cmd, "dot -Tpng -o '");
    for (const char *p = path; *p; p++)
        w += *p == '\'' ? sprintf (w, "'\\''") : sprintf (w, "%c", *p);
    strcpy (w, "'");
    FILE *dot = popen (cmd, "w");
    free (cmd);
    if (!dot) {
        fprintf (stderr, "embedflow graph: cannot run dot\n");
        return EF_EXIT_FAIL;
    }
    ef_config_print_dot (config, dot);
    if (pclose (dot) != 0) {
        fprintf (stderr, "embedflow graph: dot could not write %s\n", path);
        return EF_EXIT_FAIL;
    }
    return EF_EXIT_OK;
}

int
ef_cmd_graph (int argc, char **argv)
{
    char *png = NULL;
    const ef_cli_flag_t flags[] = {
        {"png", "FILE", "draw the graph into FILE with Graphviz's dot", &png,
         NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "graph", argc, argv, flags, &help);
    if (rc == EF_EXIT_OK && help) {
        printf ("usage: embedflow graph [--config FILE] [--png FILE] "
                "[options]\n\nPrints the topology (actors, instance "
                "counts, links and endpoints) as Graphviz DOT,\nwith a cluster "
                "per host when the configuration has hosts:, or draws it "
                "into a PNG with --png FILE (needs dot, Debian's "
                "graphviz).\n");
        ef_cli_print_config_help (&cli);
    }
    else if (rc == EF_EXIT_OK && png)
        rc = s_draw_png (cli.config, png);
    else if (rc == EF_EXIT_OK)
        ef_config_print_dot (cli.config, stdout);
    ef_cli_close (&cli);
    return rc;
}
