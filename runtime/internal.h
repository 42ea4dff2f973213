/*  internal.h — what the runtime's modules share and actors never see. */
#ifndef EF_RUNTIME_INTERNAL_H
#define EF_RUNTIME_INTERNAL_H

#include "embedflow/runtime.h"

/* Endpoint of `link` for instance `index` (-1 when not per-instance), in
   its bind form or its connect form. "{i}" in the configured endpoint is
   replaced by the index; a tcp endpoint of a per-instance link without
   "{i}" gets index added to its port. Returns 0, -1 when it does not fit. */
int ef_config_link_endpoint (const ef_config_t *self, const char *link,
                             bool bind, int index, char *out, size_t len);

/* The configured high-water mark of link, or port_default when unset. */
int ef_config_link_hwm (const ef_config_t *self, const char *link,
                        int port_default);

/* The actor whose IN port reads `link`, NULL when none is registered. */
const ef_actor_def_t *ef_config_link_consumer (const ef_config_t *self,
                                               const char *link,
                                               const ef_port_def_t **port);

const ef_registry_t *ef_config_registry (const ef_config_t *self);

/* Drain-idle time: how long a non-source actor's inputs must be quiet
   before it counts as drained. */
int64_t ef_config_drain_idle_ms (const ef_config_t *self);

#endif

/* --- actor instances (actor.c), driven by the runtime (runtime.c) ------ */

/* A not-yet-started instance of def. stop points at the runtime's hard
   stop flag. NULL when out of memory. */
ef_actor_t *ef_actor_new (ef_config_t *config, const ef_actor_def_t *def,
                          int index, const atomic_int *stop);
void ef_actor_destroy (ef_actor_t **self_p);

/* The zactor body. args is the ef_actor_t (borrowed). On the pipe it
   answers "READY" or "FAILED" + reason after init, "DRAINED" after a
   "$DRAIN", and "DIED" + reason when a handler fails. */
void ef_actor_thread (zsock_t *pipe, void *args);
