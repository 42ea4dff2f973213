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
     "HOST:PORT to serve /metrics (Prometheus), /healthz and /readyz on; "
     "unset = no endpoint"},
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
    return 0;
}

void
ef_globals_schema_opts (const ef_globals_t *g, ef_schema_opts_t *opts)
{
    memset (opts, 0, sizeof *opts);
    opts->dim = (int) g->dim;
    if (ef_vector_type_parse (g->vector_type, &opts->vector_type) != 0)
        opts->vector_type = EF_VECTOR_AUTO;
}
