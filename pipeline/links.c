/*  links.c — the pipeline's default topology, and how big a message each
    link may carry.

    The default topology joins the built-in actors as the README draws
    them; the configuration may change any link's from and to, or add
    links (a transform between splitter and writers). Acks go back by the
    source named in each row (reply_to): db-writer.acks and dlq.acks join
    one link per source, and a new source joins them with its own link.

    A link's IN port refuses a frame over its ZMQ_MAXMSGSIZE before
    allocating it, so a peer (or a stranger on an insecure link) cannot
    make a process allocate whatever it announces. The defaults follow
    what the link carries, from the options that bound it; the operator
    can still set links.NAME.max_message.
*/
#include "pipeline/pipeline.h"
#include "jobs/job.h"

#include <string.h>

/* name, from (OUT ports), to (the IN port) */
static const char *const s_default_links[][3] = {
    {"chunks", "grpc-receiver.chunks, grpc-puller.chunks", "splitter.chunks"},
    {"batches", "splitter.batches", "db-writer.batches"},
    {"acks", "db-writer.acks, dlq.acks", "grpc-receiver.acks"},
    {"pull-acks", "db-writer.acks, dlq.acks", "grpc-puller.acks"},
    {"dead", "splitter.dead, db-writer.dead", "dlq.dead"},
    {"committed", "db-writer.committed", "cache-invalidator.committed"},
    {"runs", "scheduler.runs", "grpc-puller.runs"},
    {"run-ends", "grpc-puller.run-ends", "scheduler.run-ends"},
};

int
ef_pipeline_default_links (ef_registry_t *registry)
{
    for (size_t i = 0; i < sizeof s_default_links / sizeof s_default_links[0];
         i++)
        if (ef_registry_add_link (registry, s_default_links[i][0],
                                  s_default_links[i][1], s_default_links[i][2])
            != 0)
            return -1;
    return 0;
}

/* Room for the protobuf framing around the payload of one message. */
#define S_ENVELOPE ((int64_t) 64 << 10)
/* Acks, commits, job runs: a few tallies each. */
#define S_SMALL ((int64_t) 1 << 20)

/* An option of actor, or fallback when it cannot be read. */
static int64_t
s_option (const ef_config_t *config, const char *actor, const char *key,
          int64_t fallback)
{
    int64_t v;
    return ef_config_actor_option_int (config, actor, key, &v) == 0 ? v
                                                                    : fallback;
}

void
ef_pipeline_link_limits (ef_config_t *config)
{
    /* chunks: one gRPC message as received, by an upload or a pull. */
    int64_t chunk = s_option (config, "grpc-receiver", "max_message_bytes",
                              (int64_t) 64 << 20);
    const ef_job_t *job;
    for (size_t i = 0;
         (job = ef_config_section_entry (config, "jobs", i, NULL)); i++)
        if (job->max_message_bytes > chunk)
            chunk = job->max_message_bytes;
    /* batches: up to batch_bytes, overshot by at most one row of the
       largest size validation lets through. */
    const ef_globals_t *g = ef_config_globals (config);
    int64_t row =
        s_option (config, "splitter", "max_content_bytes", 1 << 20)
        + s_option (config, "splitter", "max_metadata_bytes", 64 << 10)
        + s_option (config, "splitter", "max_document_id_bytes", 1 << 10)
        + 4 * g->dim;
    int64_t batch =
        s_option (config, "splitter", "batch_bytes", (int64_t) 16 << 20) + row;
    /* By what a link carries, so a link the configuration adds (a
       transform's output) is sized like the one it stands beside. Dead
       letters carry the row as received, at most a whole chunk's
       message. */
    for (size_t i = 0; i < ef_config_link_count (config); i++) {
        const char *name = ef_config_link_name (config, i);
        const char *type = ef_config_link_type (config, name);
        int64_t max = S_SMALL;
        if (type && strcmp (type, "embedflow.v1.ChunkHeader") == 0)
            max = chunk + S_ENVELOPE;
        else if (type && strcmp (type, "embedflow.v1.RowBatch") == 0)
            max = batch + S_ENVELOPE;
        else if (type && strcmp (type, "embedflow.v1.DeadLetter") == 0)
            max = chunk + S_ENVELOPE;
        ef_config_link_set_default_max (config, name, max);
    }
}
