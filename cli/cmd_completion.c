/*  cmd_completion.c — `embedflow completion bash`: a bash completion
    script for commands, flags and config keys.

    The script is printed from the same tables the binary parses with: the
    command table (ef_commands), the built-in actors' option tables and the
    globals. Flags a command takes are read from that command's --help at
    completion time (once per shell and command), so a flag added to a
    command's table is completed without regenerating anything.
*/
#include "cli/cli.h"

#include "jobs/job.h"

#include <stdio.h>
#include <string.h>

/* Prints the keys of table whose values are booleans as flag names
   (--PREFIXkey, '_' written '-' as --help shows them). */
static void
s_print_bool_flags (const ef_option_t *table, const char *prefix)
{
    for (const ef_option_t *o = table; o && o->key; o++) {
        if (o->type != EF_OPT_BOOL)
            continue;
        printf (" --%s", prefix);
        for (const char *c = o->key; *c; c++)
            putchar (*c == '_' ? '-' : *c);
    }
}

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: embedflow completion bash\n"
             "\n"
             "Prints a bash completion script for commands, their flags and "
             "every config key.\n"
             "Load it in the current shell:   source <(embedflow completion "
             "bash)\n"
             "or install it for every shell:  embedflow completion bash > "
             "/etc/bash_completion.d/embedflow\n");
}

int
ef_cmd_completion (int argc, char **argv)
{
    if (argc == 2
        && (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0)) {
        s_usage (stdout);
        return EF_EXIT_OK;
    }
    if (argc != 2 || strcmp (argv[1], "bash") != 0) {
        fprintf (stderr, "embedflow completion: expected the shell: bash\n\n");
        s_usage (stderr);
        return EF_EXIT_USAGE;
    }
    ef_registry_t *registry = ef_registry_new ();
    if (!registry || ef_register_builtin_actors (registry) != 0) {
        fprintf (stderr, "embedflow completion: cannot register the actors\n");
        ef_registry_destroy (&registry);
        return EF_EXIT_FAIL;
    }
    printf ("# bash completion for embedflow (embedflow completion bash)\n"
            "_embedflow_commands='");
    for (const ef_command_t *c = ef_commands; c->name; c++)
        printf ("%s%s", c == ef_commands ? "" : " ", c->name);
    printf ("'\n_embedflow_dlq_actions='ls show replay purge'\n"
            "_embedflow_ctl_actions='status pause resume run stop'\n"
            "_embedflow_bool_flags='");
    s_print_bool_flags (ef_globals_options, "");
    s_print_bool_flags (ef_job_options, "jobs.NAME.");
    for (size_t i = 0; i < ef_registry_size (registry); i++) {
        const ef_actor_def_t *def = ef_registry_at (registry, i);
        char prefix[96];
        snprintf (prefix, sizeof prefix, "actors.%s.", def->name);
        s_print_bool_flags (def->options, prefix);
    }
    /* the keys every actor has, shown once as actors.NAME.KEY in --help */
    printf ("'\n_embedflow_instances='");
    static const char *const every[] = {"instances", "restart", "max_restarts",
                                        "restart_window"};
    for (size_t i = 0; i < ef_registry_size (registry); i++)
        for (size_t k = 0; k < sizeof every / sizeof every[0]; k++)
            printf ("%s--actors.%s.%s", i || k ? " " : "",
                    ef_registry_at (registry, i)->name, every[k]);
    printf (
        "'\n"
        "declare -gA _embedflow_flag_cache\n"
        "\n"
        "# The flags of one command, from its --help (cached per shell).\n"
        "_embedflow_flags() {\n"
        "    local cmd=$1\n"
        "    if [[ -z ${_embedflow_flag_cache[$cmd]+set} ]]; then\n"
        "        "
        "_embedflow_flag_cache[$cmd]=\"$(\"${_embedflow_bin:-embedflow}\""
        " \"$cmd\" --help 2>/dev/null \\\n"
        "            | grep -oE '^ +--[a-z][a-z0-9._-]*' | tr -d ' ' "
        "| grep -v NAME) $_embedflow_instances\"\n"
        "    fi\n"
        "    printf '%%s' \"${_embedflow_flag_cache[$cmd]}\"\n"
        "}\n"
        "\n"
        "_embedflow() {\n"
        "    local cur=${COMP_WORDS[COMP_CWORD]}\n"
        "    local prev=${COMP_WORDS[COMP_CWORD-1]}\n"
        "    _embedflow_bin=${COMP_WORDS[0]}\n"
        "    COMPREPLY=()\n"
        "    if (( COMP_CWORD == 1 )); then\n"
        "        COMPREPLY=($(compgen -W \"$_embedflow_commands\" -- "
        "\"$cur\"))\n"
        "        return\n"
        "    fi\n"
        "    local cmd=${COMP_WORDS[1]}\n"
        "    case $prev in\n"
        "    --config|--json|--plot|--png|--out|--data-dir|--curve.key|"
        "--curve.clients)\n"
        "        COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
        "    --log-format)\n"
        "        COMPREPLY=($(compgen -W 'text json' -- \"$cur\")); return ;;\n"
        "    esac\n"
        "    local key=$prev\n"
        "    [[ $key == --jobs.*.* ]] && key=--jobs.NAME.${key#--jobs.*.}\n"
        "    if [[ \" $_embedflow_bool_flags \" == *\" $key \"* "
        "&& $key != --verbose ]]; then\n"
        "        COMPREPLY=($(compgen -W 'true false' -- \"$cur\")); return\n"
        "    fi\n"
        "    if [[ $cmd == dlq && $COMP_CWORD == 2 && $cur != -* ]]; then\n"
        "        COMPREPLY=($(compgen -W \"$_embedflow_dlq_actions\" -- "
        "\"$cur\")); return\n"
        "    fi\n"
        "    if [[ $cmd == ctl && $COMP_CWORD == 2 && $cur != -* ]]; then\n"
        "        COMPREPLY=($(compgen -W \"$_embedflow_ctl_actions\" -- "
        "\"$cur\")); return\n"
        "    fi\n"
        "    if [[ $cmd == completion && $COMP_CWORD == 2 ]]; then\n"
        "        COMPREPLY=($(compgen -W bash -- \"$cur\")); return\n"
        "    fi\n"
        "    if [[ $cur == -* ]]; then\n"
        "        COMPREPLY=($(compgen -W \"$(_embedflow_flags \"$cmd\")\" -- "
        "\"$cur\"))\n"
        "    fi\n"
        "}\n"
        "complete -o default -F _embedflow embedflow\n");
    ef_registry_destroy (&registry);
    return EF_EXIT_OK;
}
