/*  globals.c — the pipeline's top-level configuration keys. */
#include "pipeline/pipeline.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "postgres/pg.h"

const ef_option_t ef_globals_options[] = {
    {"database", EF_OPT_SECRET, NULL, offsetof (ef_globals_t, database), 0, 0,
     "PostgreSQL conninfo or URL; unset = PG* variables or DATABASE_URL, "
     "else a private server"},
    {"schema", EF_OPT_STRING, "embedflow", offsetof (ef_globals_t, schema), 0,
     0, "schema that holds embedflow's tables"},
    {"dim", EF_OPT_INT, "768", offsetof (ef_globals_t, dim), 1, 65535,
     "dimension every vector must have"},
    {"data_dir", EF_OPT_STRING, NULL, offsetof (ef_globals_t, data_dir), 0, 0,
     "directory of the private PostgreSQL (default ./embedflow-data; as "
     "root, /var/lib/embedflow when user postgres cannot reach the working "
     "directory)"},
    {"api_server", EF_OPT_STRING, NULL, offsetof (ef_globals_t, api_server), 0,
     0,
     "HOST:PORT of the API server's CacheService; set, writers record "
     "changed document ids in an outbox that the cache-invalidator sends "
     "there"},
    {"metrics", EF_OPT_STRING, NULL, offsetof (ef_globals_t, metrics), 0, 0,
     "HOST:PORT to serve /metrics (Prometheus), /healthz, /readyz and "
     "/control on; unset = no endpoint"},
    {"control_token", EF_OPT_SECRET, NULL,
     offsetof (ef_globals_t, control_token), 0, 0,
     "bearer token /control requires when the metrics endpoint is bound "
     "to a non-loopback address (unset: control is refused there; on "
     "loopback it is open, and the token is required when set)"},
    {"max_inflight_bytes", EF_OPT_SIZE, "256M",
     offsetof (ef_globals_t, max_inflight_bytes), (int64_t) 1 << 20,
     (int64_t) 1 << 40,
     "bytes of received rows the process holds before they are settled "
     "(messages, decoded rows, queued batches, dead letters); sources stop "
     "reading while it is spent. Peak memory is about this plus a fixed "
     "overhead (README: Memory)"},
    {"vector_type", EF_OPT_STRING, "auto", offsetof (ef_globals_t, vector_type),
     0, 0,
     "column type of the vectors, fixed when the schema is made: auto "
     "(pgvector's vector when the extension is installed or can be "
     "created, else real), vector, halfvec (pgvector, 2 bytes an "
     "element) or real (real[])"},
    {"index.method", EF_OPT_STRING, "none",
     offsetof (ef_globals_t, index_method), 0, 0,
     "ANN index on the vectors (pgvector): none, hnsw or ivfflat. Made "
     "with a new schema; a change on an existing one is reported at start "
     "and applied by `embedflow index --apply`"},
    {"index.metric", EF_OPT_STRING, "cosine",
     offsetof (ef_globals_t, index_metric), 0, 0,
     "distance the index serves: cosine (<=>), l2 (<->) or ip (<#>)"},
    {"index.m", EF_OPT_INT, "16", offsetof (ef_globals_t, index_m), 2, 100,
     "hnsw: links per node"},
    {"index.ef_construction", EF_OPT_INT, "64",
     offsetof (ef_globals_t, index_ef_construction), 4, 1000,
     "hnsw: candidates kept while building (at least 2 x index.m)"},
    {"index.lists", EF_OPT_INT, "100", offsetof (ef_globals_t, index_lists), 1,
     32768, "ivfflat: inverted lists (rows / 1000 is a start)"},
    {"index.segments", EF_OPT_BOOL, "true",
     offsetof (ef_globals_t, index_segments), 0, 0,
     "with an index, load new rows into an unindexed growing segment that "
     "queries scan exactly, and index it in the background once sealed "
     "(docs/pgvector.md); fixed when the schema is made"},
    {"index.seal_rows", EF_OPT_INT, "10000",
     offsetof (ef_globals_t, index_seal_rows), 100, 100000000,
     "segments: seal the growing segment at this many rows (each sealed "
     "segment is one more index scan for every query; smaller ones index "
     "faster a row)"},
    {"index.seal_idle", EF_OPT_MS, "30s",
     offsetof (ef_globals_t, index_seal_idle), 100, 86400000,
     "segments: ... or when it holds rows and got none for this long"},
    {"index.max_segments", EF_OPT_INT, "4",
     offsetof (ef_globals_t, index_max_segments), 1, 1000,
     "segments: merge the smallest sealed segments beyond this many, in "
     "one rebuild as far as index.build_memory holds their graph (each "
     "segment is one more index a query reads); while a load keeps the "
     "builders busy, merges wait up to 4 x this many"},
    {"index.max_unindexed_rows", EF_OPT_INT, "13000",
     offsetof (ef_globals_t, index_max_unindexed_rows), 0, INT64_MAX,
     "segments: writers wait while more rows than this await their index, "
     "so queries never scan more (0 = never wait); a little over seal_rows "
     "keeps one build running, about 3 x keeps two"},
    {"index.build_memory", EF_OPT_SIZE, "512M",
     offsetof (ef_globals_t, index_build_memory), 1 << 20, (int64_t) 1 << 40,
     "maintenance_work_mem of index builds: an HNSW graph larger than this "
     "builds several times slower"},
    {"distribution", EF_OPT_STRING, "none",
     offsetof (ef_globals_t, distribution), 0, 0,
     "where chunk and embedding live, fixed when the schema is made: none "
     "(one PostgreSQL) or citus (distributed by document_id on the Citus "
     "cluster whose coordinator `database` names; docs/scaling.md)"},
    {"verbose", EF_OPT_BOOL, "false", offsetof (ef_globals_t, verbose), 0, 0,
     "log debug detail"},
    {"log_format", EF_OPT_STRING, "text", offsetof (ef_globals_t, log_format),
     0, 0,
     "text, or json: one JSON object a line (time, level, actor, message "
     "and the line's fields) for Loki, Elasticsearch or journald"},
    EF_OPTION_END};

int
ef_globals_show_secret (const char *path, const char *value, char *out,
                        size_t len)
{
    if (strcmp (path, "database") != 0)
        return -1;
    ef_pg_redact (value, out, len, NULL, 0);
    return 0;
}

int
ef_globals_check (const ef_globals_t *g, char *err, size_t errlen)
{
    ef_vector_type_t type;
    if (ef_vector_type_parse (g->vector_type, &type) != 0) {
        snprintf (err, errlen,
                  "vector_type: '%s' is not auto, vector, halfvec or real",
                  g->vector_type ? g->vector_type : "");
        return -1;
    }
    if ((type == EF_VECTOR_VECTOR || type == EF_VECTOR_HALFVEC)
        && g->dim > EF_VECTOR_MAX_DIM) {
        snprintf (err, errlen,
                  "vector_type: %s holds at most %d dimensions, dim is %" PRId64
                  ": use vector_type real",
                  g->vector_type, EF_VECTOR_MAX_DIM, g->dim);
        return -1;
    }
    ef_index_opts_t ix;
    if (ef_index_method_parse (g->index_method, &ix.method) != 0) {
        snprintf (err, errlen,
                  "index.method: '%s' is not none, hnsw or ivfflat",
                  g->index_method ? g->index_method : "");
        return -1;
    }
    if (ef_index_metric_parse (g->index_metric, &ix.metric) != 0) {
        snprintf (err, errlen, "index.metric: '%s' is not cosine, l2 or ip",
                  g->index_metric ? g->index_metric : "");
        return -1;
    }
    if (ix.method == EF_INDEX_HNSW
        && g->index_ef_construction < 2 * g->index_m) {
        snprintf (err, errlen,
                  "index.ef_construction: %" PRId64
                  " is less than 2 x index.m (%" PRId64 "), which pgvector "
                  "refuses",
                  g->index_ef_construction, g->index_m);
        return -1;
    }
    ef_distribution_t dist;
    if (ef_distribution_parse (g->distribution, &dist) != 0) {
        snprintf (err, errlen, "distribution: '%s' is not none or citus",
                  g->distribution ? g->distribution : "");
        return -1;
    }
    if (dist == EF_DIST_CITUS && ix.method != EF_INDEX_NONE
        && g->index_segments) {
        snprintf (err, errlen,
                  "index.segments: segmented loading is off on Citus (each "
                  "shard is indexed on its own, already small): set "
                  "index.segments: false with distribution citus");
        return -1;
    }
    /* auto is judged when the schema is made: it may become real[] */
    char why[256];
    if (type != EF_VECTOR_AUTO
        && ef_index_fits (&ix, type, (int) g->dim, why, sizeof why) != 0) {
        snprintf (err, errlen, "%s", why);
        return -1;
    }
    return 0;
}

void
ef_globals_schema_opts (const ef_globals_t *g, ef_schema_opts_t *opts)
{
    memset (opts, 0, sizeof *opts);
    opts->dim = (int) g->dim;
    if (ef_vector_type_parse (g->vector_type, &opts->vector_type) != 0)
        opts->vector_type = EF_VECTOR_AUTO;
    if (ef_index_method_parse (g->index_method, &opts->index.method) != 0)
        opts->index.method = EF_INDEX_NONE;
    if (ef_index_metric_parse (g->index_metric, &opts->index.metric) != 0)
        opts->index.metric = EF_METRIC_COSINE;
    opts->index.m = (int) g->index_m;
    opts->index.ef_construction = (int) g->index_ef_construction;
    opts->index.lists = (int) g->index_lists;
    opts->segmented = g->index_segments;
    if (ef_distribution_parse (g->distribution, &opts->distribution) != 0)
        opts->distribution = EF_DIST_NONE;
}
