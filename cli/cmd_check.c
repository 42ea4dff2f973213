/*  cmd_check.c — `embedflow check`: validates a configuration and reaches
    what it names, without starting the pipeline.

    One line per check on stdout, "OK", "INFO" or "FAIL" and what was
    found. The exit code is the worst finding: 0 everything reachable, 1
    something unreachable (the database, the API server, a pull job's
    target, a link's peer, a port that cannot be bound), 2 the
    configuration itself is wrong (a bad key stops before any check; a
    schema made for another dim is found on the way). Every reach is
    bounded by --timeout.

    What a link end needs mirrors how the runtime opens its ports
    (runtime/actor.c s_open_ports): a consumer binds its link (each
    instance its own endpoint when the link is per-instance or the
    consumer runs several instances), a producer connects to every
    consumer instance.
*/
#include "cli/cli.h"
#include "pipeline/metrics_server.h"

#include "embedflow/address.h"
#include "embedflow/log.h"
#include "grpc/grpcmsg.h"
#include "jobs/job.h"
#include "postgres/citus.h"
#include "postgres/pg.h"
#include "postgres/schema.h"
#include "postgres/segments.h"
#include "runtime/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One run of the checks. */
typedef struct {
    ef_cli_t *cli;      /* the loaded configuration */
    int64_t timeout_ms; /* bound of every reach */
    int worst;          /* EF_EXIT_OK, EF_EXIT_FAIL or EF_EXIT_USAGE */
    int failed;         /* FAIL lines printed */
    int held[256];      /* listening sockets kept until the end, so two
                           ends of this process on one port collide */
    size_t n_held;      /* used entries */
    ef_metrics_server_t *metrics; /* likewise, the metrics endpoint */
} s_check_t;

/* Prints one finding. rc is what it means for the exit code: EF_EXIT_OK
   (an "OK" line), EF_EXIT_FAIL or EF_EXIT_USAGE (a "FAIL" line), or -1
   for information that decides nothing ("INFO"). */
static void s_report (s_check_t *c, int rc, const char *what, const char *fmt,
                      ...) __attribute__ ((format (printf, 4, 5)));

static void
s_report (s_check_t *c, int rc, const char *what, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (text, sizeof text, fmt, ap);
    va_end (ap);
    const char *tag = rc < 0 ? "INFO" : rc == EF_EXIT_OK ? "OK" : "FAIL";
    printf ("%-4s  %s: %s\n", tag, what, text);
    fflush (stdout);
    if (rc > 0) {
        c->failed++;
        if (rc == EF_EXIT_USAGE || c->worst == EF_EXIT_OK)
            c->worst = rc;
    }
}

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether HOST:PORT can be bound for listening now (as the runtime and
   gRPC would: SO_REUSEADDR, every address the host resolves to). The
   socket stays open in c->held until the checks end, so a second end of
   this process on the same port fails as it would in `run`. Returns 0,
   or -1 with why (cannot resolve, in use, not allowed). */
static int
s_can_bind (s_check_t *c, const char *address, char *why, size_t len)
{
    char host[256], port[16];
    if (ef_address_split (address, host, sizeof host, port, sizeof port) != 0) {
        snprintf (why, len, "'%s' is not HOST:PORT", address);
        return -1;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo (host[0] ? host : NULL, port, &hints, &ai);
    if (gai != 0) {
        snprintf (why, len, "cannot resolve '%s': %s", host,
                  gai_strerror (gai));
        return -1;
    }
    int rc = 0;
    for (struct addrinfo *a = ai; a && rc == 0; a = a->ai_next) {
        int fd = socket (a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                         a->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6)
            setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind (fd, a->ai_addr, a->ai_addrlen) != 0 || listen (fd, 1) != 0) {
            snprintf (why, len, "cannot listen on %s: %s", address,
                      strerror (errno));
            rc = -1;
        }
        if (rc == 0 && c->n_held < sizeof c->held / sizeof c->held[0])
            c->held[c->n_held++] = fd;
        else
            close (fd);
    }
    freeaddrinfo (ai);
    return rc;
}

/* Connects to HOST:PORT over TCP within timeout_ms, trying each address
   it resolves to. Returns 0 when one accepted, -1 with why (cannot
   resolve, refused, no answer in time). */
static int
s_can_connect (const char *address, int64_t timeout_ms, char *why, size_t len)
{
    char host[256], port[16];
    if (ef_address_split (address, host, sizeof host, port, sizeof port) != 0
        || !host[0]) {
        snprintf (why, len, "'%s' is not HOST:PORT", address);
        return -1;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo (host, port, &hints, &ai);
    if (gai != 0) {
        snprintf (why, len, "cannot resolve '%s': %s", host,
                  gai_strerror (gai));
        return -1;
    }
    int64_t deadline = s_now_ms () + timeout_ms;
    int rc = -1;
    snprintf (why, len, "no address");
    for (struct addrinfo *a = ai; a && rc != 0; a = a->ai_next) {
        int fd =
            socket (a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    a->ai_protocol);
        if (fd < 0)
            continue;
        int err = 0;
        if (connect (fd, a->ai_addr, a->ai_addrlen) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                struct pollfd p = {fd, POLLOUT, 0};
                int64_t left = deadline - s_now_ms ();
                int n = left > 0 ? poll (&p, 1, (int) left) : 0;
                socklen_t sl = sizeof err;
                if (n == 1)
                    getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                else
                    err = ETIMEDOUT;
            }
        }
        close (fd);
        if (err == 0)
            rc = 0;
        else if (err == ETIMEDOUT)
            snprintf (why, len, "no answer within %" PRId64 " ms", timeout_ms);
        else
            snprintf (why, len, "%s", strerror (err));
    }
    freeaddrinfo (ai);
    return rc;
}

/* Opens a gRPC channel to target (TLS with roots from tls_ca, or the
   system's, when tls) and waits until it is READY: for a TLS target that
   includes the handshake. Returns 0, -1 with why (cannot read tls_ca,
   no connection in time). */
static int
s_grpc_ready (const char *target, bool tls, const char *tls_ca,
              int64_t timeout_ms, char *why, size_t len)
{
    grpc_channel_credentials *creds;
    if (tls || tls_ca) {
        char *roots = NULL;
        if (tls_ca && !(roots = ef_grpc_read_pem (tls_ca))) {
            snprintf (why, len, "cannot read tls_ca %s: %s", tls_ca,
                      strerror (errno));
            return -1;
        }
        creds = grpc_ssl_credentials_create (roots, NULL, NULL, NULL);
        free (roots);
    }
    else
        creds = grpc_insecure_credentials_create ();
    grpc_channel *ch = grpc_channel_create (target, creds, NULL);
    grpc_channel_credentials_release (creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next (NULL);
    gpr_timespec deadline =
        gpr_time_add (gpr_now (GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis (timeout_ms, GPR_TIMESPAN));
    grpc_connectivity_state st = grpc_channel_check_connectivity_state (ch, 1);
    bool failed_once = false;
    while (st != GRPC_CHANNEL_READY && st != GRPC_CHANNEL_SHUTDOWN) {
        /* A failed attempt after the TCP connect worked is a handshake
           that will not work (TLS, or not HTTP/2): waiting for gRPC's
           backoff would only end the same way. */
        if (st == GRPC_CHANNEL_TRANSIENT_FAILURE && failed_once)
            break;
        failed_once = failed_once || st == GRPC_CHANNEL_TRANSIENT_FAILURE;
        grpc_channel_watch_connectivity_state (ch, st, deadline, cq, NULL);
        grpc_event ev = grpc_completion_queue_next (
            cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success)
            break; /* the deadline passed */
        st = grpc_channel_check_connectivity_state (ch, 1);
    }
    int rc = st == GRPC_CHANNEL_READY ? 0 : -1;
    if (rc != 0)
        snprintf (why, len, "no gRPC connection within %" PRId64 " ms%s",
                  timeout_ms,
                  tls || tls_ca ? " (is it serving TLS with a certificate "
                                  "these roots trust?)"
                                : " (is it a gRPC server without TLS?)");
    grpc_channel_destroy (ch);
    grpc_completion_queue_shutdown (cq);
    while (grpc_completion_queue_next (cq, gpr_inf_future (GPR_CLOCK_MONOTONIC),
                                       NULL)
               .type
           != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy (cq);
    return rc;
}

/* Reaches a gRPC server at target: TCP first (for a reason such as
   "connection refused"), then a gRPC channel. One report under what. */
static void
s_check_grpc (s_check_t *c, const char *what, const char *target, bool tls,
              const char *tls_ca)
{
    char why[512];
    int64_t start = s_now_ms ();
    /* A target with a scheme (dns:///, unix:, ipv4:) is left to gRPC. */
    bool plain = !strchr (target, '/') && strncmp (target, "unix:", 5) != 0
                 && strncmp (target, "ipv4:", 5) != 0
                 && strncmp (target, "ipv6:", 5) != 0;
    if (plain && s_can_connect (target, c->timeout_ms, why, sizeof why) != 0) {
        s_report (c, EF_EXIT_FAIL, what, "%s: %s", target, why);
        return;
    }
    int64_t left = c->timeout_ms - (s_now_ms () - start);
    if (s_grpc_ready (target, tls, tls_ca, left > 100 ? left : 100, why,
                      sizeof why)
        != 0) {
        s_report (c, EF_EXIT_FAIL, what, "%s: %s", target, why);
        return;
    }
    s_report (c, EF_EXIT_OK, what, "%s: gRPC connection ready%s", target,
              tls || tls_ca ? " (TLS)" : "");
}

/* The string option key of actor, NULL when unset or unknown. */
static const char *
s_actor_string (ef_cli_t *cli, const char *actor, const char *key)
{
    const ef_actor_def_t *def = ef_registry_find (cli->registry, actor);
    const ef_option_t *o = def ? ef_options_find (def->options, key) : NULL;
    const char *opts = ef_config_actor_options (cli->config, actor);
    if (!o || !opts || (o->type != EF_OPT_STRING && o->type != EF_OPT_SECRET))
        return NULL;
    const char *s;
    memcpy (&s, opts + o->offset, sizeof s);
    return s;
}

/* Whether any actor this process runs keeps a database connection
   (every one but the splitter). */
static bool
s_needs_database (const ef_cli_t *cli)
{
    for (size_t i = 0; i < ef_registry_size (cli->registry); i++) {
        const char *name = ef_registry_at (cli->registry, i)->name;
        if (strcmp (name, "splitter") != 0
            && ef_config_runs_here (cli->config, name))
            return true;
    }
    return false;
}

/* Runs a one-row query with text parameters; NULL after reporting a
   failure under what. */
static PGresult *
s_query (s_check_t *c, PGconn *conn, const char *what, const char *sql, int n,
         const char *const *params)
{
    PGresult *res = PQexecParams (conn, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) < 1) {
        char err[512];
        ef_pg_error (conn, res, NULL, err, sizeof err);
        s_report (c, EF_EXIT_FAIL, what, "%s", err);
        PQclear (res);
        return NULL;
    }
    return res;
}

/* A segmented schema's segments, as information: how many indexes a
   query reads and how many rows it scans exactly. */
static void
s_check_segments (s_check_t *c, PGconn *conn)
{
    const ef_globals_t *g = c->cli->globals;
    char err[512];
    int64_t waiting;
    if (ef_segments_enabled (conn, g->schema, err, sizeof err) != 1
        || ef_segments_unindexed (conn, g->schema, &waiting, err, sizeof err)
               != 0)
        return;
    PGresult *res = ef_pg_exec_schema (
        conn, g->schema,
        "SELECT count(*) FILTER (WHERE state = 'sealed'),"
        "  coalesce (sum (rows) FILTER (WHERE state = 'sealed'), 0)"
        " FROM %s.segment",
        0, NULL, "segments", err, sizeof err);
    if (!res)
        return;
    s_report (c, -1, "segments",
              "%s sealed with their index (%s rows), %" PRId64
              " rows scanned exactly until the index-sealer indexes them",
              PQgetvalue (res, 0, 0), PQgetvalue (res, 0, 1), waiting);
    PQclear (res);
}

/* The schema: its version against this build's, the dim it was made
   for, and whether `run` may create or upgrade it. */
static void
s_check_schema (s_check_t *c, PGconn *conn)
{
    const ef_globals_t *g = c->cli->globals;
    char what[160];
    snprintf (what, sizeof what, "schema \"%s\"", g->schema);
    const char *p[] = {g->schema};
    PGresult *res = s_query (
        c, conn, what,
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),"
        "  to_regclass (quote_ident ($1) || '.schema_version') IS NOT NULL,"
        "  to_regclass (quote_ident ($1) || '.setting') IS NOT NULL,"
        "  has_database_privilege (current_database (), 'CREATE'),"
        "  CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"
        "    THEN has_schema_privilege (quote_ident ($1), 'CREATE')"
        "  END",
        1, p);
    if (!res)
        return;
    bool has_schema = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    bool has_versions = strcmp (PQgetvalue (res, 0, 1), "t") == 0;
    bool has_setting = strcmp (PQgetvalue (res, 0, 2), "t") == 0;
    bool create_db = strcmp (PQgetvalue (res, 0, 3), "t") == 0;
    bool create_schema = strcmp (PQgetvalue (res, 0, 4), "t") == 0;
    PQclear (res);
    int latest = ef_schema_latest ();
    const char *user = PQuser (conn);
    if (!has_schema || !has_versions) {
        if (has_schema ? !create_schema : !create_db)
            s_report (c, EF_EXIT_FAIL, what,
                      "%s, and user %s may not create %s: create it for "
                      "embedflow, or grant CREATE",
                      has_schema ? "has no embedflow tables" : "does not exist",
                      user, has_schema ? "tables in it" : "schemas");
        else
            s_report (c, EF_EXIT_OK, what, "%s: `run` creates it (version %d)",
                      has_schema ? "has no embedflow tables yet"
                                 : "does not exist yet",
                      latest);
        return;
    }
    char *quoted = ef_pg_ident (conn, g->schema);
    char sql[512];
    snprintf (sql, sizeof sql,
              "SELECT coalesce (max (version), 0) FROM %s.schema_version",
              quoted ? quoted : "");
    res = quoted ? s_query (c, conn, what, sql, 0, NULL) : NULL;
    if (!res) {
        free (quoted);
        return;
    }
    int version = atoi (PQgetvalue (res, 0, 0));
    PQclear (res);
    char dim[32] = "", vector[160] = "", dist[32] = "none";
    if (has_setting) {
        snprintf (sql, sizeof sql,
                  "SELECT (SELECT value FROM %s.setting WHERE key = 'dim'),"
                  "  (SELECT value FROM %s.setting WHERE key = 'vector_type'),"
                  "  coalesce ((SELECT value FROM %s.setting"
                  "    WHERE key = 'distribution'), 'none')",
                  quoted, quoted, quoted);
        res = s_query (c, conn, what, sql, 0, NULL);
        if (!res) {
            free (quoted);
            return;
        }
        snprintf (dim, sizeof dim, "%s", PQgetvalue (res, 0, 0));
        snprintf (vector, sizeof vector, "%s", PQgetvalue (res, 0, 1));
        snprintf (dist, sizeof dist, "%s", PQgetvalue (res, 0, 2));
        PQclear (res);
    }
    free (quoted);
    if (version > latest) {
        s_report (c, EF_EXIT_FAIL, what,
                  "at version %d, but this embedflow knows versions up to "
                  "%d: upgrade embedflow",
                  version, latest);
        return;
    }
    char want[32];
    snprintf (want, sizeof want, "%" PRId64, g->dim);
    if (dim[0] && strcmp (dim, want) != 0) {
        s_report (c, EF_EXIT_USAGE, what,
                  "holds %s-dimension vectors but dim is %s: use another "
                  "schema, or the dim it was made for",
                  dim, want);
        return;
    }
    ef_schema_opts_t opts;
    ef_globals_schema_opts (g, &opts);
    ef_vector_type_t stored = strstr (vector, "halfvec(")  ? EF_VECTOR_HALFVEC
                              : strstr (vector, "vector(") ? EF_VECTOR_VECTOR
                                                           : EF_VECTOR_REAL;
    if (vector[0] && opts.vector_type != EF_VECTOR_AUTO
        && opts.vector_type != stored) {
        s_report (c, EF_EXIT_USAGE, what,
                  "stores vectors as %s but vector_type is %s: use another "
                  "schema, or vector_type %s",
                  vector, ef_vector_type_name (opts.vector_type),
                  ef_vector_type_name (stored));
        return;
    }
    if (strcmp (dist, ef_distribution_name (opts.distribution)) != 0) {
        s_report (c, EF_EXIT_USAGE, what,
                  "has distribution %s but distribution is %s: %s", dist,
                  ef_distribution_name (opts.distribution),
                  opts.distribution == EF_DIST_CITUS
                      ? "a start never converts a schema (docs/scaling.md "
                        "has the SQL that does), or use another schema"
                      : "set distribution: citus, or use another schema");
        return;
    }
    if (version < latest && !create_schema)
        s_report (c, EF_EXIT_FAIL, what,
                  "at version %d of %d, and user %s may not create tables "
                  "in it to upgrade it",
                  version, latest, user);
    else if (version < latest)
        s_report (c, EF_EXIT_OK, what,
                  "at version %d: `run` upgrades it to %d%s%s", version, latest,
                  vector[0] ? "; vectors stored as " : "", vector);
    else
        s_report (c, EF_EXIT_OK, what, "at version %d, this embedflow's%s%s",
                  version, vector[0] ? "; vectors stored as " : "", vector);
    char index[128], err[512];
    if (has_setting && version >= 1
        && ef_schema_index_drift (conn, g->schema, &opts.index, index,
                                  sizeof index, err, sizeof err)
               == 1) {
        char described[128];
        ef_index_describe (&opts.index, described, sizeof described);
        s_report (c, -1, "index",
                  "the schema's is %s, the configuration says %s: `embedflow "
                  "index --apply` rebuilds it (a start does not)",
                  index, described);
    }
    if (has_setting && version >= 1)
        s_check_segments (c, conn);
}

/* Whether pgvector is installed or could be: information, as no key
   asks for it (the first migration uses it when it can, real[] else). */
static void
s_check_pgvector (s_check_t *c, PGconn *conn)
{
    PGresult *res = s_query (
        c, conn, "pgvector",
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
        "  (SELECT default_version FROM pg_available_extensions"
        "    WHERE name = 'vector')",
        0, NULL);
    if (!res)
        return;
    if (!PQgetisnull (res, 0, 0))
        s_report (c, -1, "pgvector", "installed (version %s)",
                  PQgetvalue (res, 0, 0));
    else if (!PQgetisnull (res, 0, 1))
        s_report (c, -1, "pgvector",
                  "available (version %s), not installed: a new schema "
                  "creates it and stores vector(dim) when its user may",
                  PQgetvalue (res, 0, 1));
    else {
        /* only a schema still to be made needs it: an existing one keeps
           its type, and its schema line says which */
        const ef_globals_t *g = c->cli->globals;
        ef_schema_opts_t opts;
        ef_globals_schema_opts (g, &opts);
        if (opts.vector_type == EF_VECTOR_VECTOR
            || opts.vector_type == EF_VECTOR_HALFVEC)
            s_report (c, EF_EXIT_FAIL, "pgvector",
                      "not available in this database, and vector_type %s "
                      "needs it for a new schema (apt.postgresql.org: "
                      "postgresql-15-pgvector)",
                      g->vector_type);
        else
            s_report (c, -1, "pgvector",
                      "not available in this database: vectors are stored "
                      "as real[]%s",
                      opts.index.method != EF_INDEX_NONE
                          ? ", which index.method cannot index"
                          : "");
    }
    PQclear (res);
}

/* The Citus cluster when distribution is citus: that conn is its
   coordinator, and its nodes with the shards of the schema each holds
   (an inactive node fails the check: its shards cannot be written). */
static void
s_check_citus (s_check_t *c, PGconn *conn)
{
    const ef_globals_t *g = c->cli->globals;
    ef_schema_opts_t opts;
    ef_globals_schema_opts (g, &opts);
    if (opts.distribution != EF_DIST_CITUS)
        return;
    char err[1024], nodes[4096];
    if (ef_citus_check_coordinator (conn, err, sizeof err) != 0) {
        s_report (c, EF_EXIT_FAIL, "citus", "%s", err);
        return;
    }
    int n =
        ef_citus_nodes (conn, g->schema, nodes, sizeof nodes, err, sizeof err);
    if (n < 0) {
        s_report (c, EF_EXIT_FAIL, "citus", "%s", err);
        return;
    }
    int workers = 0;
    for (char *line = strtok (nodes, "\n"); line; line = strtok (NULL, "\n")) {
        bool inactive = strstr (line, " inactive,") != NULL;
        workers += strncmp (line, "worker ", 7) == 0;
        s_report (c, inactive ? EF_EXIT_FAIL : -1, "citus node", "%s", line);
    }
    if (workers == 0)
        s_report (c, EF_EXIT_FAIL, "citus",
                  "the coordinator has no workers: add them with "
                  "citus_add_node");
    else
        s_report (c, EF_EXIT_OK, "citus", "coordinator with %d worker%s",
                  workers, workers == 1 ? "" : "s");
}

/* The database: which one, can it be reached, then schema and pgvector. */
static void
s_check_database (s_check_t *c)
{
    ef_globals_t *g = c->cli->globals;
    const char *conninfo = g->database;
    const char *from = "database";
    if (!conninfo && getenv ("DATABASE_URL") && *getenv ("DATABASE_URL")) {
        conninfo = getenv ("DATABASE_URL");
        from = "DATABASE_URL";
    }
    else if (!conninfo
             && (getenv ("PGHOST") || getenv ("PGSERVICE")
                 || getenv ("PGDATABASE") || getenv ("PGPORT"))) {
        conninfo = "";
        from = "PG* variables";
    }
    if (!conninfo) {
        s_report (c, -1, "database",
                  "none configured (database, DATABASE_URL or PG* "
                  "variables): `run` starts a private PostgreSQL in %s",
                  g->data_dir ? g->data_dir : "./embedflow-data");
        return;
    }
    char shown[1024], why[256];
    if (ef_pg_redact (conninfo, shown, sizeof shown, why, sizeof why) != 0) {
        s_report (c, EF_EXIT_USAGE, "database", "%s: %s (from %s)", shown, why,
                  from);
        return;
    }
    char err[1024];
    PGconn *conn = ef_pg_connect (conninfo, "embedflow check", err, sizeof err);
    if (!conn) {
        s_report (c, EF_EXIT_FAIL, "database", "%s", err);
        return;
    }
    s_report (c, EF_EXIT_OK, "database",
              "%s%s%s: PostgreSQL %s, user %s, database %s",
              shown[0] ? shown : "(libpq defaults)",
              strcmp (from, "database") ? " from " : "",
              strcmp (from, "database") ? from : "",
              PQparameterStatus (conn, "server_version"), PQuser (conn),
              PQdb (conn));
    s_check_schema (c, conn);
    s_check_pgvector (c, conn);
    s_check_citus (c, conn);
    PQfinish (conn);
}

/* A tcp:// endpoint's address part: "tcp://[src;]HOST:PORT" -> HOST:PORT.
   NULL when ep is not tcp. */
static const char *
s_tcp_address (const char *ep)
{
    if (strncmp (ep, "tcp://", 6) != 0)
        return NULL;
    const char *semi = strchr (ep + 6, ';');
    return semi ? semi + 1 : ep + 6;
}

/* Every tcp end of the links this process opens: binds it can take,
   peers listening where it connects. */
static void
s_check_links (s_check_t *c)
{
    const ef_config_t *cfg = c->cli->config;
    for (size_t l = 0; l < ef_config_link_count (cfg); l++) {
        const char *link = ef_config_link_name (cfg, l);
        const ef_port_def_t *in = NULL;
        const ef_actor_def_t *consumer =
            ef_config_link_consumer (cfg, link, &in);
        if (!consumer)
            continue;
        int peers = ef_config_instances (cfg, consumer->name);
        bool binds = ef_config_runs_here (cfg, consumer->name);
        bool connects = false;
        for (size_t b = 0; b < ef_config_actor_count (cfg); b++) {
            const ef_actor_def_t *def = ef_config_actor_at (cfg, b);
            for (const ef_port_def_t *q = def->ports; q && q->name; q++) {
                const char *joined[16];
                size_t n =
                    ef_config_port_links (cfg, def->name, q->name, joined, 16);
                for (size_t k = 0; k < n && k < 16; k++)
                    if (q->dir == EF_PORT_OUT && strcmp (joined[k], link) == 0
                        && ef_config_runs_here (cfg, def->name))
                        connects = true;
            }
        }
        bool many = (in && in->per_instance) || peers > 1;
        for (int i = many ? 0 : -1; i < (many ? peers : 0); i++) {
            char ep[256], what[96], why[512];
            snprintf (what, sizeof what, "links.%s", link);
            if (binds
                && ef_config_link_endpoint (cfg, link, true, i, ep, sizeof ep)
                       == 0
                && s_tcp_address (ep)) {
                if (s_can_bind (c, s_tcp_address (ep), why, sizeof why) != 0)
                    s_report (c, EF_EXIT_FAIL, what, "%s", why);
                else
                    s_report (c, EF_EXIT_OK, what, "can bind %s", ep);
            }
            /* A peer this process binds itself is not up yet. */
            if (connects && !binds
                && ef_config_link_endpoint (cfg, link, false, i, ep, sizeof ep)
                       == 0
                && s_tcp_address (ep)) {
                if (s_can_connect (s_tcp_address (ep), c->timeout_ms, why,
                                   sizeof why)
                    != 0)
                    s_report (c, EF_EXIT_FAIL, what,
                              "no %s listening on %s: %s", consumer->name, ep,
                              why);
                else
                    s_report (c, EF_EXIT_OK, what, "%s listening on %s",
                              consumer->name, ep);
            }
        }
    }
}

/* The network ends this process would open: the gRPC listener, the
   metrics endpoint, the API server, the pull jobs' servers. */
static void
s_check_network (s_check_t *c)
{
    ef_cli_t *cli = c->cli;
    char why[512];
    if (ef_config_runs_here (cli->config, "grpc-receiver")) {
        const char *listen = s_actor_string (cli, "grpc-receiver", "listen");
        char host[256], port[16];
        if (listen
            && ef_address_split (listen, host, sizeof host, port, sizeof port)
                   != 0)
            s_report (c, -1, "grpc-receiver",
                      "listen %s is not HOST:PORT: left to gRPC", listen);
        else if (listen && s_can_bind (c, listen, why, sizeof why) != 0)
            s_report (c, EF_EXIT_FAIL, "grpc-receiver", "%s", why);
        else if (listen)
            s_report (c, EF_EXIT_OK, "grpc-receiver", "can listen on %s",
                      listen);
    }
    if (cli->globals->metrics && *cli->globals->metrics) {
        ef_metrics_server_t *m = ef_metrics_server_new (
            cli->globals->metrics, NULL, false, why, sizeof why);
        if (m)
            s_report (c, EF_EXIT_OK, "metrics", "can listen on %s",
                      cli->globals->metrics);
        else
            s_report (c, EF_EXIT_FAIL, "metrics", "%s", why);
        c->metrics = m;
    }
    const char *api = cli->globals->api_server;
    if (api && *api && ef_config_runs_here (cli->config, "cache-invalidator"))
        s_check_grpc (c, "api_server", api, false, NULL);
    if (!ef_config_runs_here (cli->config, "grpc-puller"))
        return;
    const char *name;
    const ef_job_t *job;
    for (size_t i = 0; (job = ef_config_section_entry (
                            cli->config, EF_JOBS_SECTION, i, &name));
         i++) {
        char what[96];
        snprintf (what, sizeof what, "jobs.%s", name);
        s_check_grpc (c, what, job->target, job->tls, job->tls_ca);
    }
}

int
ef_cmd_check (int argc, char **argv)
{
    static const ef_option_t timeout_row = {
        "timeout", EF_OPT_MS, "5s", 0, 1, 600000, "reach timeout"};
    s_check_t c = {.timeout_ms = 0};
    const ef_cli_flag_t flags[] = {
        {"timeout", "DURATION",
         "how long each reach may take (default 5s; the database: "
         "connect_timeout or PGCONNECT_TIMEOUT, else this)",
         NULL, &timeout_row, &c.timeout_ms},
        {NULL, NULL, NULL, NULL, NULL, NULL}};
    ef_cli_t cli;
    bool help;
    int rc = ef_cli_load (&cli, "check", argc, argv, flags, &help);
    if (rc != EF_EXIT_OK || help) {
        if (help) {
            printf (
                "usage: embedflow check [--config FILE] [--timeout "
                "DURATION] [options]\n\n"
                "Validates the configuration as `run` would, then reaches "
                "what it names,\nwithout starting the pipeline: the "
                "database (schema version, dim, pgvector),\nthe gRPC listen "
                "address and the metrics address (can they be bound?), "
                "the\nAPI server and every pull job's server (a gRPC "
                "connection), and every tcp\nlink end this process opens "
                "(can it bind? is a peer listening where it\nconnects?). "
                "Only what the actors of this process (`run`) use is "
                "reached.\nOne line per check: OK, INFO or FAIL and the "
                "reason.\n\n"
                "Exit codes: 0 everything reachable, 1 something "
                "unreachable, 2 bad configuration.\n\n"
                "  --timeout DURATION                       how long each "
                "reach may take (default 5s)\n");
            ef_cli_print_config_help (&cli);
        }
        ef_cli_close (&cli);
        return rc;
    }
    c.cli = &cli;
    /* libpq's own bound, unless the environment sets one. */
    char secs[32];
    snprintf (secs, sizeof secs, "%" PRId64, (c.timeout_ms + 999) / 1000);
    setenv ("PGCONNECT_TIMEOUT", secs, 0);

    size_t here = 0, total = ef_registry_size (cli.registry);
    for (size_t i = 0; i < total; i++)
        here += ef_config_runs_here (cli.config,
                                     ef_registry_at (cli.registry, i)->name);
    size_t jobs = ef_config_section_size (cli.config, EF_JOBS_SECTION);
    s_report (&c, EF_EXIT_OK, "config",
              "valid: %zu of %zu actors run here, %zu pull job%s", here, total,
              jobs, jobs == 1 ? "" : "s");
    char err[1024];
    if (ef_config_load_keys (cli.config, err, sizeof err) != 0)
        s_report (&c, EF_EXIT_USAGE, "curve", "%s", err);

    grpc_init ();
    if (s_needs_database (&cli))
        s_check_database (&c);
    s_check_network (&c);
    s_check_links (&c);
    grpc_shutdown ();
    for (size_t i = 0; i < c.n_held; i++)
        close (c.held[i]);
    ef_metrics_server_destroy (&c.metrics);

    if (c.worst == EF_EXIT_OK)
        printf ("all checks passed\n");
    else
        printf ("%d check%s failed: %s\n", c.failed, c.failed == 1 ? "" : "s",
                c.worst == EF_EXIT_USAGE ? "fix the configuration"
                                         : "something is not reachable");
    ef_cli_close (&cli);
    return c.worst;
}
