/*  servercpu.h — the CPU time the PostgreSQL server spends on a bench
    step, read from /proc when the server runs on this host.

    One server: its background processes and the sessions whose
    application_name is the bench's own (other clients' are not
    counted). A Citus cluster: every process of every node's server,
    when every node is on this host. Anywhere else there is no figure,
    rather than a wrong one, and the note says why.
*/
#ifndef EF_SERVERCPU_H
#define EF_SERVERCPU_H

#include <libpq-fe.h>
#include <stdbool.h>

#define EF_SERVERCPU_MAX_PIDS  256
#define EF_SERVERCPU_MAX_NODES 64

/* What is read, and how. */
typedef struct {
    PGconn *monitor;                     /* borrowed */
    char appname[64];                    /* our sessions' name */
    int node_pm[EF_SERVERCPU_MAX_NODES]; /* Citus: each node's postmaster */
    int n_nodes;    /* 0 = one server, -1 = a node elsewhere (no figure) */
    char note[256]; /* what is counted, for the report's legend */
} ef_servercpu_t;

/* One reading: CPU seconds of each process counted. */
typedef struct {
    int pid[EF_SERVERCPU_MAX_PIDS];
    double seconds[EF_SERVERCPU_MAX_PIDS];
    int n;   /* used */
    bool ok; /* every process was readable here */
} ef_servercpu_sample_t;

/* Sets up the readings of the server monitor is connected to, whose
   sessions are named appname. With citus (the configured distribution)
   it finds every node's postmaster; a node it cannot find here leaves
   n_nodes -1 and the note says which. */
void ef_servercpu_init (ef_servercpu_t *self, PGconn *monitor,
                        const char *appname, bool citus);

/* Reads the CPU time of what self counts into *out; out->ok is false
   when some of it cannot be read here. */
void ef_servercpu_read (const ef_servercpu_t *self, ef_servercpu_sample_t *out);

/* CPU seconds spent between two readings, -1 when either is not ok. */
double ef_servercpu_diff (const ef_servercpu_sample_t *before,
                          const ef_servercpu_sample_t *after);

#endif
