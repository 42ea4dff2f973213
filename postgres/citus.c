/*  citus.c — detecting a Citus coordinator, distributing the data tables
    and listing the cluster's nodes. */
#include "postgres/citus.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "postgres/pg.h"

int
ef_citus_check_coordinator (PGconn *conn, char *err, size_t errlen)
{
    PGresult *res = ef_pg_exec (conn,
                                "SELECT EXISTS (SELECT 1 FROM pg_extension"
                                "  WHERE extname = 'citus')",
                                0, NULL, "looking for Citus", err, errlen);
    if (!res)
        return -1;
    bool installed = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    PQclear (res);
    if (!installed) {
        snprintf (err, errlen,
                  "distribution citus: the citus extension is not installed "
                  "in database \"%s\" on %s: connect to the coordinator of a "
                  "Citus cluster (shared_preload_libraries = citus, CREATE "
                  "EXTENSION citus on every node), or use distribution none",
                  PQdb (conn), PQhost (conn));
        return -1;
    }
    /* group 0 is the coordinator; a worker has its own group id */
    res = ef_pg_exec (conn,
                      "SELECT EXISTS (SELECT 1 FROM pg_dist_node"
                      "  WHERE groupid = 0 AND noderole = 'primary'),"
                      "  (SELECT groupid FROM pg_dist_local_group)",
                      0, NULL, "reading Citus' nodes", err, errlen);
    if (!res)
        return -1;
    bool registered = strcmp (PQgetvalue (res, 0, 0), "t") == 0;
    int group = atoi (PQgetvalue (res, 0, 1));
    PQclear (res);
    if (group != 0) {
        snprintf (err, errlen,
                  "distribution citus: %s is Citus worker (group %d), not "
                  "the coordinator: the schema is made and migrated on the "
                  "coordinator",
                  PQhost (conn), group);
        return -1;
    }
    if (!registered) {
        snprintf (err, errlen,
                  "distribution citus: the coordinator is not in its own "
                  "metadata: run SELECT citus_set_coordinator_host "
                  "('<its host>', <port>) on it, then citus_add_node for "
                  "each worker");
        return -1;
    }
    return 0;
}

int
ef_citus_distribute (PGconn *conn, const char *quoted, char *err, size_t errlen)
{
    char chunk[300], embedding[300];
    snprintf (chunk, sizeof chunk, "%s.chunk", quoted);
    snprintf (embedding, sizeof embedding, "%s.embedding", quoted);
    /* Tables created earlier in this transaction are visible to this
       connection only: Citus must create their shards over it, one
       statement after the other, not over parallel connections. */
    PGresult *res = ef_pg_exec (
        conn, "SET LOCAL citus.multi_shard_modify_mode = 'sequential'", 0, NULL,
        "distributing the tables", err, errlen);
    if (!res)
        return -1;
    PQclear (res);
    const char *chunk_p[] = {chunk};
    res = ef_pg_exec (conn,
                      "SELECT create_distributed_table ($1::regclass,"
                      "  'document_id')",
                      1, chunk_p, "distributing chunk", err, errlen);
    if (!res)
        return -1;
    PQclear (res);
    const char *embedding_p[] = {embedding, chunk};
    res = ef_pg_exec (conn,
                      "SELECT create_distributed_table ($1::regclass,"
                      "  'document_id', colocate_with => $2)",
                      2, embedding_p, "distributing embedding", err, errlen);
    if (!res)
        return -1;
    PQclear (res);
    return 0;
}

int
ef_citus_nodes (PGconn *conn, const char *schema, char *out, size_t len,
                char *err, size_t errlen)
{
    if (len)
        out[0] = '\0';
    const char *params[] = {schema};
    PGresult *res = ef_pg_exec (
        conn,
        "SELECT CASE WHEN n.groupid = 0 THEN 'coordinator' ELSE 'worker' END,"
        "  n.nodename, n.nodeport,"
        "  CASE WHEN n.isactive THEN 'active' ELSE 'inactive' END,"
        "  (SELECT count (*) FROM pg_dist_shard s"
        "     JOIN pg_dist_placement p ON p.shardid = s.shardid"
        "     JOIN pg_class c ON c.oid = s.logicalrelid"
        "     JOIN pg_namespace ns ON ns.oid = c.relnamespace"
        "    WHERE p.groupid = n.groupid AND ns.nspname = $1)"
        " FROM pg_dist_node n WHERE n.noderole = 'primary'"
        " ORDER BY n.groupid, n.nodename, n.nodeport",
        1, params, "listing Citus' nodes", err, errlen);
    if (!res)
        return -1;
    int n = PQntuples (res);
    size_t used = 0;
    for (int i = 0; i < n && used < len; i++) {
        int w =
            snprintf (out + used, len - used, "%s %s:%s %s, %s shards of %s\n",
                      PQgetvalue (res, i, 0), PQgetvalue (res, i, 1),
                      PQgetvalue (res, i, 2), PQgetvalue (res, i, 3),
                      PQgetvalue (res, i, 4), schema);
        used += w > 0 ? (size_t) w : 0;
    }
    PQclear (res);
    return n;
}

PGresult *
ef_citus_prepare_session (PGconn *conn, const char *quoted)
{
    char chunk[300];
    snprintf (chunk, sizeof chunk, "%s.chunk", quoted);
    const char *params[] = {chunk};
    return PQexecParams (
        conn,
        "SELECT set_config ('citus.max_cached_conns_per_worker',"
        "  greatest ((SELECT count (*) FROM pg_dist_shard"
        "    WHERE logicalrelid = $1::regclass), 1)::text, false)",
        1, NULL, params, NULL, NULL, 0);
}
