/*  metrics.h — process-wide counters, gauges and histograms.

    One registry per process holds every series: a metric name, its help
    text and its labels: actor="<instance>" for the per-instance series
    (none for process-wide ones), or any label set given as name, value
    pairs (ef_metrics_counter_labeled). Series are created on first use
    and live until the process
    ends; updates are atomic adds, so actors update them from their own
    threads without a lock. ef_metrics_render writes the whole registry in
    the Prometheus text format (0.0.4), with the process's resident memory
    and CPU time added, which is what `--metrics HOST:PORT` serves.

    Histograms measure seconds. Each keeps the Prometheus buckets it
    exposes (0.5 ms … 60 s) and, for ef_histogram_quantile, a finer
    log-scale set (8 buckets per doubling from 1 µs: quantiles within ~9%).
*/
#ifndef EF_METRICS_H
#define EF_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embedflow/export.h"
#include "embedflow/actor.h"

EF_API_BEGIN

typedef struct ef_counter ef_counter_t;
typedef struct ef_gauge ef_gauge_t;
typedef struct ef_histogram ef_histogram_t;

/* The series name{actor="actor"} (no label when actor is NULL), created
   on first call; later calls return the same series and ignore help. A
   name used before with another type is a programming error (assert).
   NULL only when out of memory; every update function accepts NULL and
   does nothing, so callers need no checks. */
ef_counter_t *ef_metrics_counter (const char *name, const char *help,
                                  const char *actor);
ef_gauge_t *ef_metrics_gauge (const char *name, const char *help,
                              const char *actor);
ef_histogram_t *ef_metrics_histogram (const char *name, const char *help,
                                      const char *actor);

/* The series name{l1="v1",l2="v2",...}: labels holds label name, value
   pairs and ends with a NULL name, e.g.
     (const char *const[]){"job_name", job, "status", "failed", NULL}
   (NULL or {NULL} for no labels). Values may hold any text: backslash,
   double quote and newline are escaped as the text format wants, a byte
   that is not UTF-8 shows as '?'. Label names must match
   [a-zA-Z_][a-zA-Z0-9_]*, not start with "__", and not be "le" on a
   histogram (assert). Same sharing, NULL and type rules as above; the
   label order is part of the series' identity. Every label value makes
   a series that lives until the process ends: callers bound how many
   distinct values they use. */
ef_counter_t *ef_metrics_counter_labeled (const char *name, const char *help,
                                          const char *const *labels);
ef_gauge_t *ef_metrics_gauge_labeled (const char *name, const char *help,
                                      const char *const *labels);
ef_histogram_t *ef_metrics_histogram_labeled (const char *name,
                                              const char *help,
                                              const char *const *labels);

/* A counter of time: callers add nanoseconds, the page shows seconds
   (name should end in _seconds_total). Same labels, sharing and NULL
   rules as ef_metrics_counter_labeled; ef_counter_value gives
   nanoseconds. */
ef_counter_t *ef_metrics_seconds_labeled (const char *name, const char *help,
                                          const char *const *labels);

void ef_counter_add (ef_counter_t *self, uint64_t n);
uint64_t ef_counter_value (const ef_counter_t *self);

void ef_gauge_set (ef_gauge_t *self, int64_t value);
void ef_gauge_add (ef_gauge_t *self, int64_t delta);
int64_t ef_gauge_value (const ef_gauge_t *self);

/* Records one observation of seconds (negative counts as 0). */
void ef_histogram_observe (ef_histogram_t *self, double seconds);
/* Records n observations of the same seconds at the cost of one. */
void ef_histogram_observe_n (ef_histogram_t *self, double seconds, uint64_t n);
uint64_t ef_histogram_count (const ef_histogram_t *self);
/* Sum of the observations, seconds. */
double ef_histogram_sum (const ef_histogram_t *self);
/* The q-quantile (0 < q <= 1) of the observations in seconds, from the
   fine buckets (upper bound of the bucket holding it); 0 when empty. */
double ef_histogram_quantile (const ef_histogram_t *self, double q);

/* Sum of every series of the gauge name (0 when none exists). */
int64_t ef_metrics_gauge_sum (const char *name);
/* True when some series of name exists. */
bool ef_metrics_exists (const char *name);

/* Sets every series back to zero (the bench, between runs). Series stay
   valid. */
void ef_metrics_reset (void);

/* The registry as Prometheus text, with embedflow_process_* series. A
   heap string (length in *len when not NULL) the caller frees; NULL when
   out of memory. */
char *ef_metrics_render (size_t *len);

/* Resident set size of this process now, and its peak, in bytes (0 when
   /proc cannot be read). */
uint64_t ef_process_rss_bytes (void);
uint64_t ef_process_peak_rss_bytes (void);
/* User + system CPU seconds this process used so far. */
double ef_process_cpu_seconds (void);

/* --- what every actor instance counts ---------------------------------

   The runtime counts messages and bytes in and out of every instance;
   actors count the rest with one call where it happens. Exposed as
   embedflow_actor_<name>{actor="<instance>"}. */
typedef enum {
    EF_METRIC_MESSAGES_IN,   /* counter: messages read from IN ports */
    EF_METRIC_MESSAGES_OUT,  /* counter: messages sent on OUT ports */
    EF_METRIC_BYTES_IN,      /* counter: their bytes */
    EF_METRIC_BYTES_OUT,     /* counter */
    EF_METRIC_ROWS_IN,       /* counter: rows taken in */
    EF_METRIC_ROWS_OUT,      /* counter: rows passed on or written */
    EF_METRIC_BATCHES,       /* counter: batches made or written */
    EF_METRIC_ERRORS,        /* counter: failures seen (any kind) */
    EF_METRIC_RETRIES,       /* counter: retried operations */
    EF_METRIC_DEAD_LETTERED, /* counter: rows sent to / stored in the DLQ */
    EF_METRIC_RECONNECTS,    /* counter: database reconnections */
    EF_METRIC_IN_FLIGHT,     /* gauge: rows accepted, not yet settled */
    EF_METRIC_LISTENING,     /* gauge: 1 while accepting outside input */
    EF_METRIC_ACTOR_COUNT
} ef_actor_metric_t;

/* Adds n to one of this instance's counters (or to its gauge). */
void ef_actor_count (ef_actor_t *self, ef_actor_metric_t metric, int64_t n);
/* Adds n to a counter of the instance running on the calling thread (each
   instance has its own); for helpers that have no ef_actor_t at hand.
   Does nothing on a thread that runs no actor. */
void ef_actor_count_here (ef_actor_metric_t metric, int64_t n);

/* Sets a gauge of this instance. */
void ef_actor_gauge (ef_actor_t *self, ef_actor_metric_t metric, int64_t value);

EF_API_END

#endif
