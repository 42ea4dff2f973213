/*  common.c — configuration loading and database choice for every command. */
#include "cli/cli.h"

#include "embedflow/address.h"
#include "embedflow/log.h"
#include "jobs/job.h"
#include "pipeline/metrics_server.h"
#include "postgres/pg.h"

#include <arpa/inet.h>
#include <grpc/support/log.h>
#include <netinet/in.h>
#include <netdb.h>
#include <sys/time.h>
#include <errno.h>
#include "embedflow/buf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define EF_SYSTEM_DATA_DIR "/var/lib/embedflow"

/* Short flags for the keys people set most. */
static const struct {
    const char *flag; /* without dashes */
    const char *path; /* config path */
    const char *help;
} s_aliases[] = {
    {"listen", "actors.grpc-receiver.listen", "gRPC listen address HOST:PORT"},
    {"writers", "actors.db-writer.instances",
     "database writers = PostgreSQL connections"},
    {"batch-rows", "actors.splitter.batch_rows", "rows per transaction"},
    {"database", "database", "PostgreSQL conninfo or postgresql:// URL"},
    {"dim", "dim", "vector dimension"},
    {"schema", "schema", "schema for embedflow's tables"},
    {"data-dir", "data_dir", "directory of the private PostgreSQL"},
    {"api-server", "api_server", "API server HOST:PORT to invalidate caches"},
};

/* gRPC core's own messages, as lines of the JSON log: gRPC writes them
   to stderr in a format of its own, which a JSON reader cannot parse. */
static void
s_grpc_log (gpr_log_func_args *args)
{
    ef_log_level_t level =
        args->severity == GPR_LOG_SEVERITY_ERROR  ? EF_LOG_ERROR
        : args->severity == GPR_LOG_SEVERITY_INFO ? EF_LOG_INFO
                                                  : EF_LOG_DEBUG;
    ef_log_kv (level,
               EF_KV (EF_KV_STR ("component", "grpc"),
                      EF_KV_STR ("file", args->file),
                      EF_KV_I64 ("line", args->line)),
               "%s", args->message);
}

/* Applies log_format. Returns EF_EXIT_OK, or EF_EXIT_USAGE after saying
   why. */
static int
s_apply_log_format (ef_cli_t *cli, const char *command)
{
    ef_log_format_t format;
    if (ef_log_format_parse (cli->globals->log_format, &format) != 0) {
        fprintf (stderr,
                 "embedflow %s: config log_format: '%s' is not text or "
                 "json\n",
                 command,
                 cli->globals->log_format ? cli->globals->log_format : "");
        return EF_EXIT_USAGE;
    }
    ef_log_set_format (format);
    if (format == EF_LOG_FORMAT_JSON)
        gpr_set_log_function (s_grpc_log);
    return EF_EXIT_OK;
}

static const char *
s_alias (const char *flag)
{
    for (size_t i = 0; i < sizeof s_aliases / sizeof s_aliases[0]; i++)
        if (strcmp (s_aliases[i].flag, flag) == 0)
            return s_aliases[i].path;
    return NULL;
}

int
ef_cli_flag_parse (const ef_cli_flag_t *f, const char *command,
                   const char *text)
{
    /* The row as a table of its own, keyed by the flag, whose field is
       *number itself. */
    ef_option_t table[] = {*f->typed, EF_OPTION_END};
    table[0].key = f->name;
    table[0].offset = 0;
    char err[512];
    if (ef_options_set (table, f->number, f->name, text, err, sizeof err)
        != 0) {
        fprintf (stderr, "embedflow %s: --%s: %s\n", command, f->name, err);
        return EF_EXIT_USAGE;
    }
    return EF_EXIT_OK;
}

int
ef_cli_load (ef_cli_t *cli, const char *command, int argc, char **argv,
             const ef_cli_flag_t *extra, bool *help)
{
    return ef_cli_load_prepared (cli, command, argc, argv, extra, help, NULL,
                                 NULL);
}

/* Whether --metrics means something to command: the address it serves
   (run, demo, pull), checks (check), reads (top, ctl) or prints (config).
   Elsewhere the flag would be taken and ignored. */
static bool
s_serves_metrics (const char *command)
{
    static const char *const uses[] = {"run", "demo",   "pull", "check",
                                       "top", "config", "ctl"};
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++)
        if (strcmp (command, uses[i]) == 0)
            return true;
    return false;
}

int
ef_cli_load_prepared (ef_cli_t *cli, const char *command, int argc, char **argv,
                      const ef_cli_flag_t *extra, bool *help,
                      ef_cli_prepare_fn *prepare, void *arg)
{
    char err[1024];
    memset (cli, 0, sizeof *cli);
    *help = false;
    cli->registry = ef_registry_new ();
    if (!cli->registry || ef_register_builtin_actors (cli->registry) != 0) {
        fprintf (stderr, "embedflow: cannot register actors\n");
        return EF_EXIT_FAIL;
    }
    cli->config = ef_config_new (cli->registry, ef_globals_options,
                                 sizeof (ef_globals_t), err, sizeof err);
    if (!cli->config) {
        fprintf (stderr, "embedflow: %s\n", err);
        return EF_EXIT_FAIL;
    }
    ef_config_enable_plugins (cli->config, cli->registry);
    if (ef_jobs_declare (cli->config, err, sizeof err) != 0) {
        fprintf (stderr, "embedflow: %s\n", err);
        return EF_EXIT_FAIL;
    }
    cli->globals = ef_config_globals (cli->config);
    for (const ef_cli_flag_t *f = extra; f && f->name; f++)
        if (f->typed && f->typed->default_value
            && ef_cli_flag_parse (f, command, f->typed->default_value)
                   != EF_EXIT_OK)
            return EF_EXIT_FAIL; /* a programming error in the table */

    /* --help wins over whatever else is wrong on the line: a config file
       that does not load is then only mentioned. */
    bool help_asked = false;
    for (int i = 1; i < argc; i++)
        if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0)
            help_asked = true;
        else if (strcmp (argv[i], "--config") == 0)
            i++;

    /* The file first, so flags override it wherever they stand. */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (strcmp (argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strncmp (argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        else if (strcmp (argv[i], "--config") == 0) {
            fprintf (stderr, "embedflow %s: --config needs a FILE\n", command);
            return EF_EXIT_USAGE;
        }
        if (path && ef_config_load_file (cli->config, path, err, sizeof err)) {
            fprintf (stderr, "embedflow %s: config %s\n", command, err);
            if (help_asked) {
                *help = true;
                return EF_EXIT_OK;
            }
            return EF_EXIT_USAGE;
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp (arg, "--help") == 0 || strcmp (arg, "-h") == 0) {
            *help = true;
            return EF_EXIT_OK;
        }
        if (strcmp (arg, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp (arg, "--config=", 9) == 0)
            continue;
        if (strcmp (arg, "--verbose") == 0 || strcmp (arg, "-v") == 0) {
            ef_config_set (cli->config, "verbose", "true", err, sizeof err);
            continue;
        }
        if (strncmp (arg, "--", 2) != 0) {
            fprintf (stderr, "embedflow %s: unexpected argument '%s'\n",
                     command, arg);
            return EF_EXIT_USAGE;
        }
        char name[256];
        const char *value = NULL;
        const char *eq = strchr (arg + 2, '=');
        if (eq) {
            snprintf (name, sizeof name, "%.*s", (int) (eq - arg - 2), arg + 2);
            value = eq + 1;
        }
        else {
            snprintf (name, sizeof name, "%s", arg + 2);
        }
        const ef_cli_flag_t *own = NULL;
        for (const ef_cli_flag_t *f = extra; f && f->name; f++)
            if (strcmp (f->name, name) == 0)
                own = f;
        bool is_switch = own && !own->metavar;
        if (!value && !is_switch) {
            if (i + 1 >= argc) {
                fprintf (stderr, "embedflow %s: --%s needs a value\n", command,
                         name);
                return EF_EXIT_USAGE;
            }
            value = argv[++i];
        }
        if (own && own->typed) {
            int rc = ef_cli_flag_parse (own, command, value);
            if (rc != EF_EXIT_OK)
                return rc;
            continue;
        }
        if (own) {
            *own->value = is_switch ? (char *) "1" : (char *) value;
            continue;
        }
        if (strcmp (name, "metrics") == 0 && !s_serves_metrics (command)) {
            fprintf (stderr,
                     "embedflow %s: --metrics: this command serves no "
                     "metrics endpoint (run, demo and pull do; top and ctl "
                     "read one)\n",
                     command);
            return EF_EXIT_USAGE;
        }
        const char *path = s_alias (name);
        if (ef_config_set (cli->config, path ? path : name, value, err,
                           sizeof err)
            != 0) {
            fprintf (stderr, "embedflow %s: --%s: %s\n", command, name, err);
            return EF_EXIT_USAGE;
        }
    }
    int format_rc = s_apply_log_format (cli, command);
    if (format_rc != EF_EXIT_OK)
        return format_rc;
    if (prepare) {
        int rc = prepare (cli, arg);
        if (rc != EF_EXIT_OK)
            return rc;
    }
    ef_pipeline_link_limits (cli->config);
    if (ef_globals_check (cli->globals, err, sizeof err) != 0) {
        fprintf (stderr, "embedflow %s: config %s\n", command, err);
        return EF_EXIT_USAGE;
    }
    if (ef_config_validate (cli->config, err, sizeof err) != 0) {
        fprintf (stderr, "embedflow %s: config %s\n", command, err);
        return EF_EXIT_USAGE;
    }
    /* Only the commands that open links read key files: graph, jobs and
       top work on a configuration whose secret this user cannot read. */
    static const char *const opens_links[] = {"run", "demo", "pull", "bench",
                                              "dlq"};
    for (size_t i = 0; i < sizeof opens_links / sizeof opens_links[0]; i++)
        if (strcmp (command, opens_links[i]) == 0
            && ef_config_load_keys (cli->config, err, sizeof err) != 0) {
            fprintf (stderr, "embedflow %s: config %s\n", command, err);
            return EF_EXIT_USAGE;
        }
    ef_log_set_level (cli->globals->verbose ? EF_LOG_DEBUG : EF_LOG_INFO);
    return EF_EXIT_OK;
}

void
ef_cli_print_config_help (ef_cli_t *cli)
{
    printf ("\ncommon options:\n");
    printf ("  %-40s %s\n", "--config FILE", "YAML configuration file");
    for (size_t i = 0; i < sizeof s_aliases / sizeof s_aliases[0]; i++) {
        char flag[64];
        snprintf (flag, sizeof flag, "--%s VALUE", s_aliases[i].flag);
        printf ("  %-40s %s (= %s)\n", flag, s_aliases[i].help,
                s_aliases[i].path);
    }
    printf ("  %-40s %s\n", "--verbose, -v", "log debug detail");
    printf ("\nglobal keys (flag --KEY VALUE, or KEY: in the config file):\n"
            "  (a key's '_' and '-' are the same: the config file writes "
            "max_inflight_bytes,\n"
            "  --help shows --max-inflight-bytes, and both spellings work "
            "in either place)\n");
    ef_options_print_help (ef_globals_options, "", stdout);
    const ef_registry_t *reg = cli->registry;
    for (size_t i = 0; i < ef_registry_size (reg); i++) {
        const ef_actor_def_t *def = ef_registry_at (reg, i);
        char prefix[96];
        snprintf (prefix, sizeof prefix, "actors.%s.", def->name);
        printf ("\n%s — %s:\n", def->name, def->summary);
        printf ("  --%-38s %s (default: %d)\n", "actors.NAME.instances N",
                "instances of this actor", def->default_instances);
        printf ("  --%-38s %s (default: %s)\n",
                "actors.NAME.restart always|never",
                "restart a failed instance in place, or stop the process",
                def->restart ? "always" : "never");
        printf ("  --%-38s %s (default: 5)\n", "actors.NAME.max_restarts N",
                "restarts within restart_window; one more failure stops "
                "the process (exit 1)");
        printf ("  --%-38s %s (default: 60s)\n",
                "actors.NAME.restart_window DURATION",
                "how long a failure counts against max_restarts");
        ef_options_print_help (def->options, prefix, stdout);
    }
    printf ("\npull jobs: one entry each under `jobs:` in the config file, "
            "or flags --jobs.NAME.KEY VALUE:\n");
    ef_options_print_help (ef_job_options, "jobs.NAME.", stdout);
    printf ("\nplugins: [FILE.so, ...]       shared objects whose actors "
            "(entry point %s)\n"
            "                             join the pipeline by links\n",
            EF_PLUGIN_ENTRY);
    printf ("\nlinks, FROM -> TO as configured (the default unless changed; a "
            "new NAME adds a link):\n");
    for (size_t i = 0; i < ef_config_link_count (cli->config); i++) {
        const char *name = ef_config_link_name (cli->config, i);
        const char *from = NULL, *to = NULL,
                   *type = ef_config_link_type (cli->config, name);
        ef_config_link_ends (cli->config, name, &from, &to);
        printf ("  %-10s %s -> %s (%s)\n", name, from ? from : "?",
                to ? to : "?", type ? type : "?");
    }
    printf (
        "keys\n"
        "  links.NAME.from            OUT ports that write it, "
        "ACTOR.PORT[, ...]\n"
        "  links.NAME.to              the IN port that reads it, "
        "ACTOR.PORT (same type)\n"
        "  links.NAME.endpoint        what producers connect to (default "
        "inproc://NAME,\n"
        "                             per-instance links inproc://NAME-{i})\n"
        "  links.NAME.bind            what the consumer binds (default: "
        "endpoint)\n"
        "  links.NAME.hwm             messages that may wait on the link\n"
        "  links.NAME.max_message     largest message accepted (default "
        "from what the link\n"
        "                             carries: batches batch_bytes + one "
        "row, acks 1M)\n"
        "  links.NAME.server_key      public key file (or Z85 key) of the "
        "host that binds it\n"
        "  links.NAME.insecure        true: tcp without CURVE off "
        "loopback (logged)\n"
        "  links.NAME.peer_timeout    /readyz fails when a tcp end of "
        "the link has had no\n"
        "                             peer this long (default 30s, 0 = "
        "never)\n"
        "  {host} in an endpoint      the address of the host running "
        "the consuming\n"
        "                             instance (hosts.NAME.address)\n"
        "\nruntime (top-level keys, or flags --KEY VALUE):\n"
        "  drain_idle                 an actor without a drain callback has "
        "drained once\n"
        "                             its inputs were idle this long "
        "(default 200ms)\n"
        "  drain_timeout              on SIGTERM, what has not drained "
        "after this is\n"
        "                             stopped and the exit code is 1 "
        "(default 60s)\n"
        "  plugins                    shared objects of actors built outside "
        "the tree,\n"
        "                             a list (README: Adding an actor)\n"
        "\nplacement (several hosts, one topology):\n"
        "  run                        actors this process runs; "
        "db-writer:0-1 runs\n"
        "                             only instances 0 and 1\n"
        "  hosts.NAME.address         address of host NAME ({host} in "
        "endpoints)\n"
        "  hosts.NAME.run             what host NAME runs (every "
        "instance on one host)\n"
        "  hosts.NAME.key             public key file of host NAME: "
        "the server key of\n"
        "                             the links it binds\n"
        "  host                       which entry of hosts this process "
        "is (its run list\n"
        "                             applies unless run is given)\n"
        "\nCURVE keys (tcp links off loopback need them; embedflow keygen "
        "makes a pair):\n"
        "  curve.key                  this process's secret key file "
        "(NAME.key_secret)\n"
        "  curve.clients              directory of the public key files "
        "allowed to connect\n"
        "                             to the tcp links this process "
        "binds\n");
}

/* True when dir holds a private server's cluster (run or demo made it). */
static bool
s_private_exists (const char *dir)
{
    char path[4096];
    snprintf (path, sizeof path, "%s/pgdata/PG_VERSION", dir);
    return access (path, F_OK) == 0;
}

/* True when one of the variables libpq reads to choose a server or to log
   in is set: libpq's defaults then name the database (its socket
   directory, the user's name as database), as they would for psql. */
static bool
s_libpq_env (void)
{
    static const char *const vars[] = {
        "PGHOST",     "PGHOSTADDR", "PGPORT",    "PGDATABASE",   "PGUSER",
        "PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv (vars[i]))
            return true;
    return false;
}

/* Sets the database key; a value it refuses is a usage error. */
static int
s_set_database (ef_cli_t *cli, const char *conninfo)
{
    char err[2048];
    if (ef_config_set (cli->config, "database", conninfo, err, sizeof err)
        != 0) {
        ef_error ("database: %s", err);
        return EF_EXIT_USAGE;
    }
    return EF_EXIT_OK;
}

int
ef_cli_resolve_database (ef_cli_t *cli, ef_cli_db_t mode)
{
    char err[2048];
    if (cli->globals->database)
        return EF_EXIT_OK;
    const char *url = getenv ("DATABASE_URL");
    if (url && *url)
        return s_set_database (cli, url);
    if (s_libpq_env ())
        return s_set_database (cli, "");
    char conninfo[1024];
    const char *dir = cli->globals->data_dir;
    bool automatic = !dir;
    if (automatic)
        dir = "embedflow-data";
    if (mode == EF_CLI_DB_EXISTING) {
        /* Reading a private server that was never made would show an
           empty database as if it were the real one. */
        if (automatic && !s_private_exists (dir) && geteuid () == 0
            && s_private_exists (EF_SYSTEM_DATA_DIR))
            dir = EF_SYSTEM_DATA_DIR;
        if (!s_private_exists (dir)) {
            ef_error ("no database configured (database, DATABASE_URL or "
                      "libpq's PG* variables), and no private PostgreSQL in "
                      "%s: give --database, or --data-dir of the private "
                      "server `run` or `demo` made",
                      dir);
            return EF_EXIT_USAGE;
        }
    }
    ef_info ("no database configured: %s a private PostgreSQL in %s",
             mode == EF_CLI_DB_EXISTING ? "using" : "starting", dir);
    cli->pgserver =
        ef_pgserver_start (dir, conninfo, sizeof conninfo, err, sizeof err);
    if (!cli->pgserver && automatic && geteuid () == 0
        && mode == EF_CLI_DB_START_PRIVATE) {
        /* As root the server runs as user postgres, which cannot pass
           through a private home such as /root: use the system place. */
        ef_info ("%s; using %s instead", err, EF_SYSTEM_DATA_DIR);
        dir = EF_SYSTEM_DATA_DIR;
        cli->pgserver =
            ef_pgserver_start (dir, conninfo, sizeof conninfo, err, sizeof err);
    }
    if (!cli->pgserver) {
        ef_error ("cannot start the private PostgreSQL: %s", err);
        return EF_EXIT_FAIL;
    }
    char shown[1024];
    ef_pg_redact (conninfo, shown, sizeof shown, NULL, 0);
    ef_info ("private PostgreSQL ready: psql \"%s\"", shown);
    if (ef_config_set (cli->config, "data_dir", dir, err, sizeof err) != 0) {
        ef_error ("data_dir: %s", err);
        return EF_EXIT_FAIL;
    }
    return s_set_database (cli, conninfo);
}

ef_runtime_t *
ef_cli_start_runtime (ef_cli_t *cli)
{
    ef_runtime_t *rt = ef_runtime_new (cli->config);
    if (!rt) {
        ef_error ("out of memory");
        return NULL;
    }
    char err[2048];
    if (ef_runtime_start (rt, err, sizeof err) != 0) {
        ef_error ("cannot start: %s", err);
        ef_runtime_destroy (&rt);
        return NULL;
    }
    return rt;
}

int
ef_cli_wait_runtime (ef_runtime_t *rt)
{
    int rc = ef_runtime_wait (rt);
    if (rc == EF_RUNTIME_HARD_STOP)
        _exit (EF_EXIT_FAIL);
    return rc;
}

/* A free loopback TCP port, -1 when none can be had. (Another process
   may take it before it is bound; the receiver then fails to start with
   "cannot listen".) */
static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl (INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (bind (fd, (struct sockaddr *) &a, sizeof a) == 0
        && getsockname (fd, (struct sockaddr *) &a, &len) == 0)
        port = ntohs (a.sin_port);
    close (fd);
    return port;
}

ef_runtime_t *
ef_cli_start_here (ef_cli_t *cli, ef_cli_jobs_t jobs, char *listen,
                   size_t listenlen)
{
    char err[512];
    const char *job;
    for (size_t i = 0;
         ef_config_section_entry (cli->config, EF_JOBS_SECTION, i, &job); i++) {
        char key[300];
        snprintf (key, sizeof key, "%s.%s.schedule", EF_JOBS_SECTION, job);
        if (ef_config_set (cli->config, key, "", err, sizeof err) != 0) {
            ef_error ("cannot unschedule job %s: %s", job, err);
            return NULL;
        }
    }
    if (jobs == EF_CLI_JOBS_NONE
        && ef_config_set (cli->config, "actors.scheduler.run_now", "", err,
                          sizeof err)
               != 0) {
        ef_error ("cannot clear actors.scheduler.run_now: %s", err);
        return NULL;
    }
    if (listen) {
        int port = s_free_port ();
        if (port < 0) {
            ef_error ("no free loopback port for the pipeline");
            return NULL;
        }
        snprintf (listen, listenlen, "127.0.0.1:%d", port);
        if (ef_config_set (cli->config, "actors.grpc-receiver.listen", listen,
                           err, sizeof err)
            != 0) {
            ef_error ("cannot set the receiver's address: %s", err);
            return NULL;
        }
    }
    return ef_cli_start_runtime (cli);
}

void
ef_cli_close (ef_cli_t *cli)
{
    ef_config_destroy (&cli->config);
    ef_registry_destroy (&cli->registry);
    ef_pgserver_stop (&cli->pgserver);
}

int
ef_cli_start_metrics (ef_cli_t *cli, ef_metrics_server_t **server)
{
    *server = NULL;
    const char *address = cli->globals->metrics;
    if (!address || !*address)
        return EF_EXIT_OK;
    char host[256], port[16], err[512];
    if (ef_address_split (address, host, sizeof host, port, sizeof port) != 0) {
        ef_error ("metrics: '%s' is not HOST:PORT", address);
        return EF_EXIT_USAGE;
    }
    *server = ef_metrics_server_new (
        address, cli->globals->database,
        ef_config_runs_here (cli->config, "grpc-receiver"), err, sizeof err);
    if (!*server) {
        ef_error ("%s", err);
        return EF_EXIT_FAIL;
    }
    ef_info ("metrics on http://%s%s%s:%d/metrics (and /healthz, /readyz)",
             strchr (host, ':') ? "[" : "", host[0] ? host : "0.0.0.0",
             strchr (host, ':') ? "]" : "", ef_metrics_server_port (*server));
    return EF_EXIT_OK;
}

int
ef_cli_http (const char *host, const char *port, const char *method,
             const char *path, const char *token, int timeout_s, char **body,
             char *err, size_t errlen)
{
    *body = NULL;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo (host, port, &hints, &ai);
    if (gai != 0) {
        snprintf (err, errlen, "cannot resolve %s: %s", host,
                  gai_strerror (gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket (a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect (fd, a->ai_addr, a->ai_addrlen) != 0) {
            close (fd);
            fd = -1;
        }
    }
    freeaddrinfo (ai);
    if (fd < 0) {
        snprintf (err, errlen, "cannot connect to %s:%s: %s", host, port,
                  strerror (errno));
        return -1;
    }
    struct timeval tv = {timeout_s, 0};
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[1024];
    int n = snprintf (req, sizeof req,
                      "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\n"
                      "%s%s%s\r\n",
                      method, path, host, token ? "Authorization: Bearer " : "",
                      token ? token : "", token ? "\r\n" : "");
    if (n < 0 || (size_t) n >= sizeof req) {
        close (fd);
        snprintf (err, errlen, "the request does not fit (a name too long)");
        return -1;
    }
    if (write (fd, req, (size_t) n) != n) {
        snprintf (err, errlen, "cannot send the request: %s", strerror (errno));
        close (fd);
        return -1;
    }
    ef_buf_t page = {0};
    ssize_t r = 0;
    while (ef_buf_reserve (&page, 65536) == 0
           && (r = read (fd, page.data + page.len, 65536)) > 0)
        page.len += (size_t) r;
    int read_errno = errno;
    close (fd);
    if (!page.failed)
        page.data[page.len] = '\0'; /* read wrote past the last NUL */
    char *buf = ef_buf_take (&page, NULL);
    if (!buf) {
        snprintf (err, errlen, "cannot read the answer: out of memory");
        return -1;
    }
    char *end = strstr (buf, "\r\n\r\n");
    int status = 0;
    if (strncmp (buf, "HTTP/1.", 7) != 0 || !end
        || sscanf (buf + 8, " %d", &status) != 1) {
        snprintf (err, errlen, "%s:%s gave no HTTP answer%s%s", host, port,
                  r < 0 ? ": " : "", r < 0 ? strerror (read_errno) : "");
        free (buf);
        return -1;
    }
    memmove (buf, end + 4, strlen (end + 4) + 1);
    *body = buf;
    return status;
}

void
ef_cli_print_flags (const ef_cli_flag_t *flags)
{
    int name_w = 0, meta_w = 0;
    for (const ef_cli_flag_t *f = flags; f && f->name; f++) {
        int n = (int) strlen (f->name);
        int m = f->metavar ? (int) strlen (f->metavar) : 0;
        name_w = n > name_w ? n : name_w;
        meta_w = m > meta_w ? m : meta_w;
    }
    for (const ef_cli_flag_t *f = flags; f && f->name; f++)
        printf ("  --%-*s %-*s %s\n", name_w, f->name, meta_w,
                f->metavar ? f->metavar : "", f->description);
}
