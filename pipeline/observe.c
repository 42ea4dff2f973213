/*  observe.c — metrics recorded by the pipeline's actors (see observe.h). */
#include "pipeline/observe.h"

#include "embedflow/metrics.h"

ef_histogram_t *
ef_metrics_pipeline_latency (void)
{
    static ef_histogram_t *latency;
    ef_histogram_t *h = __atomic_load_n (&latency, __ATOMIC_ACQUIRE);
    if (!h) {
        h = ef_metrics_histogram (
            EF_METRIC_PIPELINE_LATENCY,
            "Seconds from a chunk's arrival at the gRPC receiver to its row's "
            "commit.",
            NULL);
        __atomic_store_n (&latency, h, __ATOMIC_RELEASE);
    }
    return h;
}

void
ef_observe_committed (ef_actor_t *actor, Embedflow__V1__Row *const *rows,
                      size_t n, int64_t elapsed_us)
{
    int64_t now = ef_clock_wall_us ();
    ef_histogram_t *e2e = ef_metrics_pipeline_latency ();
    int64_t covered = 0;
    /* the rows of one chunk share their received time and come in
       runs: one observation per run, not one per row (each is four
       atomic additions on lines every writer touches) */
    int64_t run_us = 0;
    uint64_t run = 0;
    for (size_t i = 0; i < n; i++) {
        covered += rows[i]->covers ? rows[i]->covers : 1;
        int64_t at = rows[i]->received_us;
        if (at <= 0)
            continue;
        if (run && at != run_us) {
            ef_histogram_observe_n (e2e, (double) (now - run_us) / 1e6, run);
            run = 0;
        }
        run_us = at;
        run++;
    }
    if (run)
        ef_histogram_observe_n (e2e, (double) (now - run_us) / 1e6, run);
    ef_actor_count (actor, EF_METRIC_ROWS_OUT, covered);
    ef_actor_count (actor, EF_METRIC_BATCHES, 1);
    ef_histogram_observe (
        ef_metrics_histogram (EF_METRIC_WRITER_COMMIT,
                              "Seconds one batch transaction took, "
                              "retries excluded.",
                              ef_actor_name (actor)),
        (double) elapsed_us / 1e6);
}
