/*  observe.h — what the pipeline's actors record about rows they settle.

    One call per event keeps the edits in the actors to a line: the
    counters of the actor instance (metrics.h), the writer's commit
    latency histogram and the pipeline's end-to-end latency histogram.
*/
#ifndef EF_OBSERVE_H
#define EF_OBSERVE_H

#include <stddef.h>
#include <stdint.h>

#include "embedflow/actor.h"
#include "embedflow/metrics.h"
#include "embedflow/v1/pipeline.pb-c.h"

/* End-to-end latency: chunk received by the gRPC receiver → its row
   committed. Writers observe it for every committed row. */
#define EF_METRIC_PIPELINE_LATENCY "embedflow_pipeline_latency_seconds"
/* That histogram, created on first call; NULL only when out of memory
   (updates accept NULL). */
ef_histogram_t *ef_metrics_pipeline_latency (void);

/* Per-writer histogram of the wall time of one batch transaction. */
#define EF_METRIC_WRITER_COMMIT "embedflow_writer_commit_seconds"

/* A writer committed rows[0..n) in elapsed_us: counts rows out (with
   their covers) and a batch, observes the commit time and, for every
   row, the time since its chunk was received (Row.received_us; rows
   without it are skipped). */
void ef_observe_committed (ef_actor_t *actor, Embedflow__V1__Row *const *rows,
                           size_t n, int64_t elapsed_us);

#endif
