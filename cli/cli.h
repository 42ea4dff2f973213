/*  cli.h — what the subcommands of the embedflow binary share. */
#ifndef EF_CLI_H
#define EF_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "embedflow/options.h"
#include "testkit/pgserver.h"
#include "pipeline/pipeline.h"

enum { EF_EXIT_OK = 0, EF_EXIT_FAIL = 1, EF_EXIT_USAGE = 2 };

/* A flag a subcommand handles itself (before the config flags). A numeric
   flag is typed like a config key: it names a row of an option table
   (INT, SIZE or MS, with its bounds) and its value is parsed by the same
   loader into *number, so `--rows 10k` means what the row's type says or
   exits 2 naming the flag. */
typedef struct {
    const char *name;         /* without dashes: "rows" */
    const char *metavar;      /* "N"; NULL for a switch */
    const char *description;  /* one line for --help */
    char **value;             /* text flag: where it goes (borrowed argv) */
    const ef_option_t *typed; /* numeric flag: its type and bounds */
    int64_t *number;          /* numeric flag: where the parsed value goes */
} ef_cli_flag_t;

/* Parses text for the numeric flag f into *f->number with the option
   loader. Returns EF_EXIT_OK, or EF_EXIT_USAGE after printing
   "embedflow COMMAND: --NAME: why". */
int ef_cli_flag_parse (const ef_cli_flag_t *f, const char *command,
                       const char *text);

/* The loaded configuration of one command. */
typedef struct {
    ef_registry_t *registry; /* owned */
    ef_config_t *config;     /* owned */
    ef_globals_t *globals;   /* inside config */
    ef_pgserver_t *pgserver; /* owned; a private server we started */
} ef_cli_t;

/* Loads --config FILE, then applies every flag in order: the command's
   own (extra, terminated by a NULL name), aliases (--listen, --writers,
   --batch-rows, --database, --dim, --schema, --data-dir, --verbose) and
   any config key as --KEY VALUE, --KEY=VALUE or --actors.NAME.KEY VALUE.
   Prints the error and returns EF_EXIT_USAGE on a bad flag or key,
   EF_EXIT_OK with *help set when --help was asked for. */
int ef_cli_load (ef_cli_t *cli, const char *command, int argc, char **argv,
                 const ef_cli_flag_t *extra, bool *help);

/* Turns a command's own flags into config keys; returns EF_EXIT_OK, or
   EF_EXIT_USAGE after printing why. */
typedef int (ef_cli_prepare_fn) (ef_cli_t *cli, void *arg);

/* ef_cli_load, calling prepare(cli, arg) after the flags are read and
   before the configuration is validated (not with --help). */
int ef_cli_load_prepared (ef_cli_t *cli, const char *command, int argc,
                          char **argv, const ef_cli_flag_t *extra, bool *help,
                          ef_cli_prepare_fn *prepare, void *arg);

/* Prints a command's own flags (NULL-name terminated), one a line,
   "  --NAME METAVAR description", in columns. */
void ef_cli_print_flags (const ef_cli_flag_t *flags);

/* Prints the shared flag help (aliases and every config key). */
void ef_cli_print_config_help (ef_cli_t *cli);

/* What a command does with no database configured. */
typedef enum {
    EF_CLI_DB_START_PRIVATE, /* start a private server, made when needed
                                (run, demo, bench) */
    EF_CLI_DB_EXISTING,      /* use a private server only when one was made
                                before in data_dir (pull, dlq, jobs, index:
                                they work on what run stored) */
} ef_cli_db_t;

/* Picks the database: the configured one, else DATABASE_URL, else libpq's
   defaults when one of its connection variables is set (PGHOST,
   PGHOSTADDR, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGPASSFILE,
   PGSERVICE, PGSERVICEFILE), else the private server in data_dir as mode
   says. Returns EF_EXIT_OK, EF_EXIT_USAGE when no database is configured
   and mode does not make one (or the value is refused), EF_EXIT_FAIL when
   the private server cannot start; the reason printed. */
int ef_cli_resolve_database (ef_cli_t *cli, ef_cli_db_t mode);

/* One HTTP/1.0 request to host:port (an embedflow's metrics endpoint:
   /metrics for top, /control for ctl), with `Authorization: Bearer token`
   when token is not NULL, waiting at most timeout_s for the answer.
   Returns the status with the body in *body (heap, caller frees), or -1
   with err set when it cannot connect or the answer is not HTTP. */
int ef_cli_http (const char *host, const char *port, const char *method,
                 const char *path, const char *token, int timeout_s,
                 char **body, char *err, size_t errlen);

/* Frees everything and stops a private server. */
void ef_cli_close (ef_cli_t *cli);

/* Starts the runtime for cli's config. Returns the runtime, or NULL after
   printing the reason. */
ef_runtime_t *ef_cli_start_runtime (ef_cli_t *cli);

/* Waits for the runtime (ef_runtime_wait) and returns its result, 0 or 1.
   A second signal ends the process here with exit 1, as promised to the
   user: the actors may be blocked, and nothing else should run. */
int ef_cli_wait_runtime (ef_runtime_t *rt);

/* What a pipeline run inside a command (demo, pull, bench, dlq replay)
   does with the config's pull jobs. Such a run is not the deployment:
   the schedules of the config file never fire in it. */
typedef enum {
    EF_CLI_JOBS_NONE,    /* no job runs: schedules and run_now cleared */
    EF_CLI_JOBS_RUN_NOW, /* only the jobs of actors.scheduler.run_now (the
                            caller sets it), once; schedules cleared */
} ef_cli_jobs_t;

/* Starts the pipeline in this process for a command that feeds it
   itself: clears the config's job schedules (and run_now unless jobs is
   EF_CLI_JOBS_RUN_NOW), and when listen is not NULL puts the gRPC
   receiver on a free loopback port, whose HOST:PORT it writes to listen
   (listenlen bytes), so the run never competes with a running `embedflow
   run` for its port. Returns the started runtime (stop, wait and destroy
   it as with ef_cli_start_runtime), or NULL after logging why: no free
   port, a key that cannot be set, or the runtime failing to start. */
ef_runtime_t *ef_cli_start_here (ef_cli_t *cli, ef_cli_jobs_t jobs,
                                 char *listen, size_t listenlen);

typedef struct ef_metrics_server ef_metrics_server_t;
/* Starts the endpoint when the command's config sets `metrics`, else
   leaves *server NULL. Returns EF_EXIT_OK, EF_EXIT_USAGE when the
   address is malformed, EF_EXIT_FAIL when it cannot be bound (logged). */
int ef_cli_start_metrics (ef_cli_t *cli, ef_metrics_server_t **server);

int ef_cmd_run (int argc, char **argv);
int ef_cmd_demo (int argc, char **argv);
int ef_cmd_graph (int argc, char **argv);
int ef_cmd_pull (int argc, char **argv);
int ef_cmd_jobs (int argc, char **argv);
int ef_cmd_bench (int argc, char **argv);
int ef_cmd_top (int argc, char **argv);
int ef_cmd_ctl (int argc, char **argv);
int ef_cmd_dlq (int argc, char **argv);
int ef_cmd_keygen (int argc, char **argv);
int ef_cmd_check (int argc, char **argv);
int ef_cmd_config (int argc, char **argv);
int ef_cmd_completion (int argc, char **argv);
int ef_cmd_index (int argc, char **argv);

/* One subcommand: its name, its entry point (argv[0] is the command's
   name) and what `embedflow help` says of it (lines joined by \n). */
typedef struct {
    const char *name;
    int (*run) (int argc, char **argv);
    const char *summary;
} ef_command_t;

/* Every command, in the order help lists them; ends with a NULL name. */
extern const ef_command_t ef_commands[];

#endif
