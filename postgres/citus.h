/*  citus.h — embedflow's tables distributed on a Citus cluster.

    With distribution citus (schema.h) the schema is made on the
    coordinator and its two data tables are distributed by document_id:
    chunk first, embedding colocated with it, so a document's chunks and
    their vectors share a shard and the foreign key between them, the
    upsert and the batch's transaction stay on one worker per document.
    Every other table (setting, schema_version, dead_letter, job_run,
    pull_piece, job_slot, invalidation_outbox) stays a plain table of the
    coordinator: each is small, is read and written only through the
    coordinator, and a reference table would make every dead letter and
    every checkpoint a two-phase commit on all workers, and fail while
    any one of them is down, which is when dead letters matter most. A
    batch's transaction writes both kinds; Citus commits it with two-phase
    commit across the coordinator and the workers it touched.
*/
#ifndef EF_CITUS_H
#define EF_CITUS_H

#include <libpq-fe.h>
#include <stddef.h>

/* Whether conn is the coordinator of a Citus cluster: the citus
   extension is installed in its database and this node is in its own
   metadata as the coordinator (citus_set_coordinator_host). Returns 0,
   or -1 with err saying what is missing and what to run. */
int ef_citus_check_coordinator (PGconn *conn, char *err, size_t errlen);

/* Distributes quoted.chunk by document_id and quoted.embedding colocated
   with it, inside the caller's transaction (the tables must be empty,
   as right after their creation). quoted is a quoted schema name.
   Returns 0, or -1 with err (the database's error with its SQLSTATE). */
int ef_citus_distribute (PGconn *conn, const char *quoted, char *err,
                         size_t errlen);

/* The cluster as the coordinator sees it, one line per node into out
   (NUL-terminated, cut at len): "<role> <host>:<port> <state>, <n>
   shards of <schema>". Returns the number of nodes, or -1 with err. */
int ef_citus_nodes (PGconn *conn, const char *schema, char *out, size_t len,
                    char *err, size_t errlen);

/* Sets up a writer's session on the coordinator: Citus keeps open
   between transactions up to one connection per shard of quoted.chunk
   to each worker (citus.max_cached_conns_per_worker, default 1), where
   it would otherwise open a connection (a new backend on the worker)
   for every shard a batch touches but one, in every transaction; that
   churn was most of the cluster's CPU per row (docs/scaling.md). With
   the splitter's routing by shard (citus_route.h) a writer touches only
   its own shards, so the writers together keep about one connection
   per shard. quoted is a quoted schema name. Returns the statement's
   result (TUPLES_OK when it worked; NULL when out of memory), which the
   caller judges and clears. */
PGresult *ef_citus_prepare_session (PGconn *conn, const char *quoted);

#endif
