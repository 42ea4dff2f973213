/*  cmd_config.c — `embedflow config`: the effective configuration as
    YAML, defaults included, secrets masked. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>

int
ef_cmd_config (int argc, char **argv)
{
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "config", argc, argv, NULL, &help);
    if (rc == EF_EXIT_OK && help) {
        printf ("usage: embedflow config [--config FILE] [options]\n\n"
                "Prints the configuration the other commands would use, as "
                "YAML: the file with\nits ${VAR}s replaced, then the flags, "
                "every key with its default filled in.\nAn unset key is a "
                "comment. Secrets are masked: the database's password (as\n"
                "\"***\"; host, user and names stay), every token whole. "
                "Without a database key\nit shows DATABASE_URL, or \"\" when "
                "libpq's PG* variables choose it. The output\nis a valid "
                "--config file (with secrets masked, give them again).\n"
                "Exit codes: 0 ok, 2 bad configuration.\n");
        ef_cli_print_config_help (&cli);
    }
    else if (rc == EF_EXIT_OK) {
        /* What run would connect to, short of starting a private server. */
        const char *url = getenv ("DATABASE_URL");
        char err[256];
        if (!cli.globals->database && url && *url)
            ef_config_set (cli.config, "database", url, err, sizeof err);
        else if (!cli.globals->database
                 && (getenv ("PGHOST") || getenv ("PGSERVICE")
                     || getenv ("PGDATABASE") || getenv ("PGPORT")))
            ef_config_set (cli.config, "database", "", err, sizeof err);
        printf ("# embedflow configuration: defaults included, secrets "
                "masked\n");
        ef_config_print (cli.config, stdout, ef_globals_show_secret);
    }
    ef_cli_close (&cli);
    return rc;
}
