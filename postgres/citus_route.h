/*  citus_route.h — which Citus shard a document's rows belong to,
    computed here, so that rows bound for the same shards travel together.

    Citus puts a row of a hash-distributed table on the shard whose hash
    range holds the hash of its distribution column: for text (our
    document_id) PostgreSQL's hashtext, which for a deterministic
    collation is hash_bytes (lookup3) over the value's bytes, as an
    int32. The ranges are read from the coordinator's pg_dist_shard for
    the schema's chunk table (embedding is colocated with it: same
    ranges). The splitter routes a document to writer (shard index) % N,
    so each writer's batches touch only its own shards and the
    coordinator's COPY opens fewer shard connections per batch.

    Routing is only about locality: the rows still go through the
    coordinator, which places each row itself. A map gone stale (shards
    split or moved after it was read) costs speed, never a row.
*/
#ifndef EF_CITUS_ROUTE_H
#define EF_CITUS_ROUTE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ef_citus_shards ef_citus_shards_t;

/* Citus' hash of a text distribution value of len bytes (as
   worker_hash ('...'::text) on the server). */
int32_t ef_citus_hash_text (const char *text, size_t len);

/* Reads the hash ranges of schema.chunk's shards from the coordinator
   conn. Returns the map, or NULL with err (the table is not distributed
   by hash, has no shards, a range is not an integer, the query failed,
   out of memory). */
ef_citus_shards_t *ef_citus_shards_load (PGconn *conn, const char *schema,
                                         char *err, size_t errlen);

/* Frees *self_p and sets it to NULL; safe on NULL. */
void ef_citus_shards_destroy (ef_citus_shards_t **self_p);

/* Shards in the map. */
int ef_citus_shards_count (const ef_citus_shards_t *self);

/* The index (0 .. count - 1, in hash order) of the shard whose range
   holds document_id's hash, -1 when no range does (a map with a gap). */
int ef_citus_shards_index (const ef_citus_shards_t *self,
                           const char *document_id);

/* The writer among n for document_id: its shard's index % n; with more
   writers than shards, one of the writers index, index + shards, ...
   (below n) by ef_route, so every writer gets a share of one shard;
   ef_route's when no shard holds document_id. */
int ef_citus_shards_route (const ef_citus_shards_t *self,
                           const char *document_id, int n);

#endif
