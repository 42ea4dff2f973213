/*  pipeline.h — the embedding-ingest pipeline built on the runtime.

    The application's global settings (top-level config keys shared by all
    actors), the registration of the built-in actors and their default
    topology.
*/
#ifndef EF_PIPELINE_H
#define EF_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "embedflow/runtime.h"
#include "postgres/schema.h"

typedef struct {
    char *database; /* libpq conninfo or URL; NULL = PG* / DATABASE_URL,
                            else a private server */
    char *schema;   /* schema holding the tables */
    int64_t dim;    /* vector dimension every row must have */
    char *data_dir; /* where a private PostgreSQL lives */
    char *metrics;  /* HOST:PORT of the HTTP metrics endpoint, NULL = none */
    char *control_token; /* bearer token of /control, NULL = none */
    bool verbose;
    char *log_format; /* "text" or "json" (log.h) */

    char *api_server;           /* CacheService HOST:PORT; NULL or "" = none */
    int64_t max_inflight_bytes; /* the process's budget (budget.h) */
    char *vector_type;          /* auto, vector, halfvec or real */
    char *index_method;         /* index.method: none, hnsw, ivfflat */
    char *index_metric;         /* index.metric: cosine, l2, ip */
    int64_t index_m;            /* index.m (hnsw) */
    int64_t index_ef_construction;    /* index.ef_construction (hnsw) */
    int64_t index_lists;              /* index.lists (ivfflat) */
    bool index_segments;              /* index.segments */
    int64_t index_seal_rows;          /* index.seal_rows */
    int64_t index_seal_idle;          /* index.seal_idle, ms */
    int64_t index_max_segments;       /* index.max_segments */
    int64_t index_max_unindexed_rows; /* index.max_unindexed_rows */
    int64_t index_build_memory;       /* index.build_memory, bytes */
    char *distribution;               /* none or citus (schema.h) */
} ef_globals_t;

extern const ef_option_t ef_globals_options[];

/* Checks the globals that the option table cannot (a word from a set,
   limits between keys). Returns 0, or -1 with err naming the key. */
int ef_globals_check (const ef_globals_t *g, char *err, size_t errlen);

/* What the schema's migrations need of the globals (checked ones). */
void ef_globals_schema_opts (const ef_globals_t *g, ef_schema_opts_t *opts);

/* What `embedflow config` shows of a secret (an ef_config_show_fn): the
   database conninfo as ef_pg_redact shows it (host and names, never a
   password); -1 for every other secret, which is then masked whole. */
int ef_globals_show_secret (const char *path, const char *value, char *out,
                            size_t len);

/* Sets each link's default largest message (ZMQ_MAXMSGSIZE) from the
   message type it carries: row batches from splitter.batch_bytes and the
   row limits, chunks and dead letters from the gRPC message limits, 1 MiB
   for acks and the other small messages. Call once the options and the
   links are final. */
void ef_pipeline_link_limits (ef_config_t *config);

/* Registers every built-in actor (the ef_builtin_actor lines of
   CMakeLists.txt: the build generates this function and the externs)
   and the default topology. Returns 0 or -1 (duplicate name). */
int ef_register_builtin_actors (ef_registry_t *registry);

/* Adds the default topology, the links of today's pipeline
   (pipeline/links.c), to registry. Returns 0 or -1. */
int ef_pipeline_default_links (ef_registry_t *registry);

#endif
