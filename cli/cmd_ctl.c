/*  cmd_ctl.c — `embedflow ctl`: commands to a running embedflow through
    its metrics endpoint's /control (pipeline/metrics_server.h).

    One HTTP/1.0 request on a plain socket, no client library: the answer
    is one line of text. Exit 0 when the endpoint did it, 1 when it
    refused (unknown job, job not running, wrong token, unreachable), 2
    on a usage error (unknown command, missing job name).
*/
#include "cli/cli.h"

#include "embedflow/address.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
ef_cmd_ctl (int argc, char **argv)
{
    char *token = NULL;
    const ef_cli_flag_t flags[] = {
        {"token", "TOKEN",
         "bearer token of /control (default: control_token of --config, "
         "else $EMBEDFLOW_CONTROL_TOKEN)",
         &token, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    /* the words (pause, run JOB, ...) go apart; the flags to the loader */
    char *words[3] = {NULL, NULL, NULL};
    int n_words = 0, n_flags = 1;
    char **rest = calloc ((size_t) argc + 1, sizeof *rest);
    if (!rest)
        return EF_EXIT_FAIL;
    rest[0] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strncmp (argv[i], "--", 2) == 0) {
            rest[n_flags++] = argv[i];
            bool alone = strchr (argv[i], '=') || !strcmp (argv[i], "--help")
                         || !strcmp (argv[i], "--verbose");
            if (!alone && i + 1 < argc)
                rest[n_flags++] = argv[++i];
        }
        else if (n_words < 3)
            words[n_words++] = argv[i];
        else
            n_words++;
    }
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "ctl", n_flags, rest, flags, &help);
    free (rest);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf (
                "usage: embedflow ctl [--metrics HOST:PORT] [--token T] "
                "COMMAND\n\n"
                "Sends a command to a running embedflow through its metrics "
                "endpoint\n(/control; the --metrics address that process "
                "serves, or `metrics:` in\n--config).\n\n"
                "commands:\n"
                "  status     whether ingest is paused, uploads open\n"
                "  pause      stop reading uploads (clients wait on flow "
                "control)\n"
                "  resume     read them again\n"
                "  run JOB    start a run of pull job JOB now\n"
                "  stop JOB   stop JOB's running run (it ends 'failed', "
                "\"stopped by request\";\n"
                "             the next run resumes from its checkpoint)\n\n"
                "Exit 0 done, 1 refused or unreachable, 2 usage.\n\n"
                "ctl options:\n");
            ef_cli_print_flags (flags);
        }
        ef_cli_close (&cli);
        return rc;
    }
    const char *verb = words[0];
    bool job_verb = verb && (!strcmp (verb, "run") || !strcmp (verb, "stop"));
    bool plain = verb
                 && (!strcmp (verb, "status") || !strcmp (verb, "pause")
                     || !strcmp (verb, "resume"));
    const char *address = cli.globals->metrics;
    char host[256], port[16], path[512];
    const char *bad = NULL;
    if (!verb)
        bad = "a command is required: status, pause, resume, run JOB, stop JOB";
    else if (!job_verb && !plain)
        bad = "unknown command (status, pause, resume, run JOB, stop JOB)";
    else if (job_verb && (n_words != 2 || !*words[1] || strchr (words[1], '/')))
        bad = "run and stop take one job name";
    else if (plain && n_words != 1)
        bad = "status, pause and resume take no argument";
    else if (!address
             || ef_address_split (address, host, sizeof host, port, sizeof port)
                    != 0)
        bad = "--metrics HOST:PORT (the endpoint of the embedflow to "
              "control) is required";
    if (bad) {
        fprintf (stderr, "embedflow ctl: %s%s%s\n",
                 verb && !job_verb && !plain ? verb : "",
                 verb && !job_verb && !plain ? ": " : "", bad);
        ef_cli_close (&cli);
        return EF_EXIT_USAGE;
    }
    if (strcmp (host, "0.0.0.0") == 0 || !host[0])
        snprintf (host, sizeof host, "127.0.0.1");
    if (job_verb)
        snprintf (path, sizeof path, "/control/jobs/%s/%s", words[1], verb);
    else
        snprintf (path, sizeof path, "/control/%s", verb);
    if (!token)
        token = cli.globals->control_token;
    if (!token || !*token)
        token = getenv ("EMBEDFLOW_CONTROL_TOKEN");
    if (token && !*token)
        token = NULL;
    char err[512];
    char *body = NULL;
    /* the endpoint waits EF_CONTROL_TIMEOUT_MS for an actor at most */
    int status = ef_cli_http (
        host, port, strcmp (verb, "status") ? "POST" : "GET", path, token,
        EF_CONTROL_TIMEOUT_MS / 1000 + 5, &body, err, sizeof err);
    if (status < 0) {
        fprintf (stderr, "embedflow ctl: %s\n", err);
        rc = EF_EXIT_FAIL;
    }
    else if (status == 200) {
        fputs (body, stdout);
        rc = EF_EXIT_OK;
    }
    else {
        fprintf (stderr, "embedflow ctl: %s (HTTP %d)\n", body, status);
        rc = EF_EXIT_FAIL;
    }
    free (body);
    ef_cli_close (&cli);
    return rc;
}
