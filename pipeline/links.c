/*  links.c — how big a message each link of the pipeline may carry.

    A link's IN port refuses a frame over its ZMQ_MAXMSGSIZE before
    allocating it, so a peer (or a stranger on an insecure link) cannot
    make a process allocate whatever it announces. The defaults follow
    what the link carries, from the options that bound it; the operator
    can still set links.NAME.max_message.
*/
#include "pipeline/pipeline.h"
#include "jobs/job.h"

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
    ef_config_link_set_default_max (config, "chunks", chunk + S_ENVELOPE);
    ef_config_link_set_default_max (config, "batches", batch + S_ENVELOPE);
    /* dead: one dead letter carries the row as received, at most a whole
       chunk's message. */
    ef_config_link_set_default_max (config, "dead", chunk + S_ENVELOPE);
    const char *small[] = {"acks", "pull-acks", "committed", "runs",
                           "run-ends"};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        ef_config_link_set_default_max (config, small[i], S_SMALL);
}
