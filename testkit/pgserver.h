/*  pgserver.h — a private PostgreSQL for `embedflow run` and `demo`.

    When no database is configured, embedflow keeps its own PostgreSQL
    cluster under DATA_DIR:

      DATA_DIR/pgdata         the cluster (initdb'ed on first use)
      DATA_DIR/run            its unix socket directory (mode 0700)
      DATA_DIR/postgres.log   initdb and server output

    The server listens on its unix socket only (listen_addresses=''), so
    no TCP port can collide with another server and nobody off this host
    can reach it; port 5432 merely names the socket file. Connect by hand
    with  psql "host=DATA_DIR/run user=postgres dbname=postgres".

    The server is the first PostgreSQL on PATH (for an existing cluster,
    the first of its major version), else the newest (its own version's)
    in /usr/lib/postgresql/N/bin: a build with extensions such as
    pgvector is used by putting its bin directory first on PATH.

    A server already running on DATA_DIR (postmaster.pid naming a live
    process) is reused and left running on stop. PostgreSQL refuses to run
    as root: as root the cluster is owned by and run as the owner of an
    existing DATA_DIR/pgdata, else the `postgres` user.
*/
#ifndef EF_PGSERVER_H
#define EF_PGSERVER_H

#include <stddef.h>

typedef struct ef_pgserver ef_pgserver_t;

/* Starts (or finds already running) the private server for data_dir,
   creating and initializing the directory when needed, and waits until it
   accepts connections. Writes its libpq conninfo to conninfo_out, e.g.
   "host='/srv/ef/run' port=5432 user=postgres dbname=postgres".
   On error returns NULL with err saying what failed and, when the server
   itself failed, the tail of DATA_DIR/postgres.log. */
ef_pgserver_t *ef_pgserver_start (const char *data_dir, char *conninfo_out,
                                  size_t len, char *err, size_t errlen);

/* Stops the server with a fast shutdown (open sessions are rolled back,
   then a checkpoint is written) if this process started it, and frees
   the handle. A reused server is left running. Safe with NULL / twice. */
void ef_pgserver_stop (ef_pgserver_t **self_p);

#endif
