/*  internal.h — what the runtime's modules share and actors never see. */
#ifndef EF_RUNTIME_INTERNAL_H
#define EF_RUNTIME_INTERNAL_H

#include "embedflow/backoff.h"
#include "embedflow/metrics.h"
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

const ef_registry_t *ef_config_registry (const ef_config_t *self);

/* The links that port of actor joins (OUT: every link whose from names
   it; IN: the link whose to names it), their names (borrowed) in
   links[0..max); returns how many there are. */
size_t ef_config_port_links (const ef_config_t *self, const char *actor,
                             const char *port, const char **links, size_t max);

/* The actors of the configuration (the registry's, plugins included). */
size_t ef_config_actor_count (const ef_config_t *self);
const ef_actor_def_t *ef_config_actor_at (const ef_config_t *self, size_t i);

/* The order to drain actors in, as indexes of ef_config_actor_at into
   order (ef_config_actor_count entries): sources first, then each actor
   after every actor that feeds it (links into sources, the replies, do
   not count; a cycle is broken in registration order). Returns the
   count. */
size_t ef_config_drain_order (const ef_config_t *self, size_t *order);

/* This process's CURVE key pair (curve.key) once ef_config_load_keys has
   read it, else NULL. Borrowed. */
zcert_t *ef_config_cert (const ef_config_t *self);

/* The directory of allowed client keys (curve.clients), or NULL. */
const char *ef_config_curve_clients (const ef_config_t *self);

/* The Z85 public key a connecting end of link expects of the side that
   binds instance index (-1: the only one) of its consumer:
   links.NAME.server_key (read by ef_config_load_keys), else the key of
   the host that runs that instance (hosts.NAME.key), else this process's
   own when it binds the link itself with CURVE, else NULL. */
const char *ef_config_link_server_key (const ef_config_t *self,
                                       const char *link, int index);

/* links.NAME.insecure: tcp without CURVE on this link. */
bool ef_config_link_insecure (const ef_config_t *self, const char *link);

/* Largest message an IN port of link accepts (ZMQ_MAXMSGSIZE): the
   configured one, else the application's default, else
   EF_LINK_MAX_DEFAULT. */
int64_t ef_config_link_max_message (const ef_config_t *self, const char *link);

/* Logs a warning for every tcp link end this process opens without CURVE
   because the link says insecure. */
void ef_config_warn_insecure (const ef_config_t *self);

/* Drain-idle time: how long a non-source actor's inputs must be quiet
   before it counts as drained. */
int64_t ef_config_drain_idle_ms (const ef_config_t *self);
/* How long a drain may take in all (key drain_timeout, default 60 s):
   past it the runtime stops every actor, and what could not finish (a
   peer that is gone, say) is not acknowledged. */
int64_t ef_config_drain_timeout_ms (const ef_config_t *self);

/* Runs verb on instance self's thread (see ef_runtime_control) and
   waits for its answer at most timeout_ms. Returns the callback's
   result, -2 when the actor takes no commands, -3 on timeout. */
int ef_actor_control (ef_actor_t *self, const char *verb, const char *arg,
                      char *reply, size_t len, int64_t timeout_ms);

/* --- restart policy (restarts.c) -------------------------------------- */

/* Most restarts a window may allow (actors.NAME.max_restarts). */
#define EF_RESTARTS_MAX 100
/* Backoff before a restart: the first ceiling and the largest. */
#define EF_RESTART_BASE_MS 100
#define EF_RESTART_CAP_MS  10000

typedef struct {
    bool restart;      /* actors.NAME.restart: always (else never) */
    int max_restarts;  /* failures a window may hold and still restart */
    int64_t window_ms; /* actors.NAME.restart_window */
    int64_t times[EF_RESTARTS_MAX + 1]; /* recent failures, ms, oldest first */
    int n;                              /* used entries of times */
    ef_backoff_t backoff;               /* delay before each restart */
} ef_restarts_t;

/* A policy with no failure recorded. max_restarts is clamped to
   [0, EF_RESTARTS_MAX]. */
ef_restarts_t ef_restarts_make (bool restart, int max_restarts,
                                int64_t window_ms);

/* Records a failure at now_ms (monotonic). Returns the delay in ms before
   the instance is started again, or -1 when it must not be: the policy is
   never, or this failure makes more than max_restarts failures within
   window_ms. */
int64_t ef_restarts_failed (ef_restarts_t *self, int64_t now_ms);

/* Failures within the window, counting the last one recorded. */
int ef_restarts_count (const ef_restarts_t *self);

/* The restart policy of actor: actors.NAME.restart (the definition's
   restart flag when not given), max_restarts and restart_window. */
ef_restarts_t ef_config_restarts (const ef_config_t *self, const char *actor);

#endif

/* --- CURVE (curve.c) --------------------------------------------------- */

typedef struct ef_zap ef_zap_t;

/* Starts the process's ZAP handler: CURVE clients whose public key is a
   file in the directory clients may connect to what this process binds;
   so may this process's own key (own: its actors connect to the links it
   binds); the others are refused, counted and logged per link (the
   socket's ZAP domain names the link). NULL with err when the handler cannot bind
   (another one runs in this process) or out of memory. */
ef_zap_t *ef_zap_new (const char *clients, zcert_t *own, char *err,
                      size_t errlen);
void ef_zap_destroy (ef_zap_t **self_p);

/* Adds n to embedflow_link_rejected_peers_total{link, reason}
   (0 creates the series). */
void ef_link_count_rejected (const char *link, const char *reason, uint64_t n);

/* Link state (linkstate.c): a tcp connection this process makes starts
   peerless; monitors report each peer that came (up) or went. outgoing
   tells a connection this process makes from one it accepted. */
void ef_links_expect (void);
void ef_links_peer_event (const char *link, const char *endpoint, bool outgoing,
                          bool up);

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

/* --- systemd notification (notify.c) ------------------------------------ */

/* READY=1: every actor of the process has started. */
void ef_notify_ready (void);

/* STOPPING=1: the process drains. */
void ef_notify_stopping (void);

/* Microseconds between two WATCHDOG=1 pings (half the unit's
   WatchdogSec=), 0 when no watchdog is set for this process. */
int64_t ef_notify_watchdog_interval_us (void);

/* WATCHDOG=1: the runtime's loop is alive. */
void ef_notify_watchdog (void);

/* --- link peers (linkstate.c) ------------------------------------------ */

typedef struct ef_link_end ef_link_end_t;

/* Registers one tcp end of link at endpoint (bind: an address this
   process binds; else one it connects to), with no peer yet, and its
   embedflow_link_peers series. timeout_ms: links.NAME.peer_timeout. NULL
   when out of memory. */
ef_link_end_t *ef_link_end_new (const char *link, const char *endpoint,
                                bool bind, int64_t timeout_ms);
/* Unregisters and frees the end. */
void ef_link_end_destroy (ef_link_end_t **self_p);
/* The endpoint it was registered with. */
const char *ef_link_end_endpoint (const ef_link_end_t *self);
/* A connection came (+1) or went (-1); warns when the last peer goes and
   when one comes back after that. */
void ef_link_end_event (ef_link_end_t *self, int delta);

/* --- per-instance series (metrics.c), kept by the runtime ------------- */

/* Creates every series of the instance at zero, so an idle instance is
   listed too; the runtime calls it when the instance's thread starts. */
void ef_actor_metrics_init (ef_actor_t *self);

/* Counts one message (and its bytes) into or out of the instance; the
   runtime calls it for every message. */
void ef_actor_count_message (ef_actor_t *self, bool in, zmsg_t *msg);

/* The series behind an instance's metric, by instance name; created on
   first use (NULL when out of memory). For the runtime and tests. */
void *ef_metrics_actor_series (const char *actor, ef_actor_metric_t metric);
