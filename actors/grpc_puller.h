/*  grpc_puller.h — what a command running one pull in-process learns from
    the grpc-puller actor (`embedflow pull`): progress while it runs and a
    report when the run ends.
*/
#ifndef EF_GRPC_PULLER_H
#define EF_GRPC_PULLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char run_id[37];       /* job_run.id */
    char job[256];         /* job name */
    char status[16];       /* "completed" or "failed" */
    uint64_t received;     /* rows taken from the server */
    uint64_t written;      /* rows committed */
    uint64_t dead;         /* rows dead-lettered */
    uint64_t calls;        /* GetEmbeddings calls made (1 + retries) */
    char start_token[256]; /* where the run started ("" = beginning) */
    char position[256];    /* committed position at the end */
    char error[512];       /* why it failed, "" when completed */
    double seconds;        /* first call to end of the run */
} ef_pull_report_t;

/* Called once on the puller's thread when a run has ended and every row
   it forwarded is settled (or the process is stopping hard). */
typedef void (ef_pull_done_fn) (const ef_pull_report_t *report, void *arg);

/* Registers the process-wide done callback (NULL to clear). */
void ef_puller_on_done (ef_pull_done_fn *fn, void *arg);

/* Rows received and settled (written + dead-lettered) so far by every
   pull run of this process; safe from any thread. */
void ef_puller_progress (uint64_t *received, uint64_t *settled);

#endif
