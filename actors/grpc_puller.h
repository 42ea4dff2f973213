/*  grpc_puller.h — what a command running pulls in-process (`embedflow
    pull`, `bench`) learns from the grpc-puller actor, without sharing
    its state: the end of each run as a report (a RunEnded, sent with
    ef_actor_report, which the command's ef_runtime_on_report function
    receives), and progress from the job's series in the metrics
    registry.
*/
#ifndef EF_GRPC_PULLER_H
#define EF_GRPC_PULLER_H

#include <czmq.h>
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

/* Reads a grpc-puller report (one RunEnded frame) into *report; the
   puller sends one when a run has ended and every row it forwarded is
   settled (or the process is stopping hard). Returns 0, -1 when msg is
   not such a report (*report untouched). */
int ef_pull_report_read (const zmsg_t *msg, ef_pull_report_t *report);

/* Rows received and settled (written + dead-lettered) so far by pull
   runs of job in this process, from its embedflow_job_* counters.
   Any thread. */
void ef_pull_progress (const char *job, uint64_t *received, uint64_t *settled);

#endif
