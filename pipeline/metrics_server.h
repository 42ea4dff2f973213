/*  metrics_server.h — the HTTP endpoint of a running embedflow.

    Served by libmicrohttpd on its own thread:
      /metrics  the metrics registry in Prometheus text format (metrics.h)
      /healthz  200 "ok" while the process serves requests at all
      /readyz   200 "ready" when the database answers and the gRPC
                receiver accepts connections, else 503 naming what is
                not ready; checks are cached for a second, so a probe
                storm costs the database nothing
      /control  commands to the running pipeline (ef_metrics_server_control):
                GET status; POST pause, resume (the grpc-receiver),
                jobs/NAME/run (the scheduler), jobs/NAME/stop (the
                grpc-puller). 200 done, 404 unknown path or job, 409
                refused now (job not running, draining), 503 that actor
                does not run here, 504 it did not answer in time; 401
                without the right "Authorization: Bearer TOKEN" when a
                token is set; 403 when the endpoint is not bound to
                loopback and no token is set
*/
#ifndef EF_METRICS_SERVER_H
#define EF_METRICS_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "embedflow/runtime.h"

typedef struct ef_metrics_server ef_metrics_server_t;

/* Listens on address "HOST:PORT" (port 0 picks a free one). database is
   the libpq conninfo to probe (NULL or "" = libpq defaults);
   need_listener says a gRPC receiver runs in this process, so ready
   requires it to listen. Returns NULL with err set when the address is
   malformed or cannot be bound. */
ef_metrics_server_t *ef_metrics_server_new (const char *address,
                                            const char *database,
                                            bool need_listener, char *err,
                                            size_t errlen);

/* Tells whether every actor has started: until then /readyz answers 503
   "starting". */
void ef_metrics_server_started (ef_metrics_server_t *self, bool started);

/* Lets /control send commands to rt (NULL: no more; waits for a command
   running, so call it with NULL before ef_runtime_destroy). token (NULL
   or "" for none) is what /control then requires as a bearer token.
   Returns 0, -1 out of memory. */
int ef_metrics_server_control (ef_metrics_server_t *self, ef_runtime_t *rt,
                               const char *token);

/* Stops serving and frees; NULLs *self_p, safe twice. */
void ef_metrics_server_destroy (ef_metrics_server_t **self_p);

/* The port it listens on. */
int ef_metrics_server_port (const ef_metrics_server_t *self);

/* For commands that end on their own (demo, pull): logs that the work
   is done and keeps serving, with the final counts, until SIGINT or
   SIGTERM arrives (needs ef_signals_init, which blocks both). Flushes
   stdout first so a summary is out before the wait. */
void ef_metrics_server_linger (ef_metrics_server_t *self);

#endif
