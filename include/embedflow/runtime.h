/*  runtime.h — registry, topology and process lifecycle.

    ef_registry_t   the actor definitions this binary knows
    ef_config_t     one loaded configuration: globals, per-actor options,
                    instance counts, which actors run here, link endpoints
    ef_runtime_t    the running actors of one process
*/
#ifndef EF_RUNTIME_H
#define EF_RUNTIME_H

#include <stdbool.h>
#include <stdio.h>

#include "embedflow/export.h"
#include "embedflow/actor.h"
#include "embedflow/options.h"

EF_API_BEGIN

/* --- registry ------------------------------------------------------- */

typedef struct ef_registry ef_registry_t;

ef_registry_t *ef_registry_new (void);
void ef_registry_destroy (ef_registry_t **self_p);
/* Registers a definition (borrowed, must outlive the registry). Returns 0,
   -1 when the name is taken. */
int ef_registry_add (ef_registry_t *self, const ef_actor_def_t *def);
const ef_actor_def_t *ef_registry_find (const ef_registry_t *self,
                                        const char *name);
size_t ef_registry_size (const ef_registry_t *self);
const ef_actor_def_t *ef_registry_at (const ef_registry_t *self, size_t i);

/* Adds a link to the default topology every configuration made from this
   registry starts with (strings borrowed, must outlive the registry):
   from is a comma list of OUT ports, "actor.port, actor.port", to the one
   IN port, "actor.port". The configuration may change both
   (links.NAME.from / to). Returns 0, -1 when the name is taken or there
   is no room. */
int ef_registry_add_link (ef_registry_t *self, const char *name,
                          const char *from, const char *to);
/* Default link i: its name, producers and consumer; -1 past the end. */
int ef_registry_link_at (const ef_registry_t *self, size_t i, const char **name,
                         const char **from, const char **to);

/* Loads the shared object at path (dlopen) and calls its entry point,
   EF_PLUGIN_ENTRY, which registers the actors it exports. The object
   stays loaded for the life of the process. Returns 0, or -1 with err
   naming the file and dlerror() or what the entry said. */
int ef_registry_load_plugin (ef_registry_t *self, const char *path, char *err,
                             size_t errlen);

/* The symbol an out-of-tree actor's shared object exports:
     int ef_plugin_register (ef_registry_t *registry, char *err,
                             size_t errlen);
   registering its definitions with ef_registry_add (and, if it likes,
   default links with ef_registry_add_link). It returns 0, or -1 with err
   saying why. */
#define EF_PLUGIN_ENTRY "ef_plugin_register"
typedef int (ef_plugin_register_fn) (ef_registry_t *registry, char *err,
                                     size_t errlen);

/* --- configuration -------------------------------------------------- */

typedef struct ef_config ef_config_t;

/* A configuration with every default applied, the registry's default
   links included. globals/globals_size describe the application's
   top-level keys. NULL on a table error (message in err). */
ef_config_t *ef_config_new (const ef_registry_t *registry,
                            const ef_option_t *globals, size_t globals_size,
                            char *err, size_t errlen);
void ef_config_destroy (ef_config_t **self_p);

/* Lets the key `plugins` (a list of shared objects) load out-of-tree
   actors into registry, the one the configuration was made from, and
   adds them to the configuration. Without this call `plugins` is an
   unknown key. */
void ef_config_enable_plugins (ef_config_t *self, ef_registry_t *registry);

/* Reads a YAML file over the current values (its `plugins` first, so
   that the rest may name their actors). Returns 0, or -1 with err naming
   the file, line, key and reason. */
int ef_config_load_file (ef_config_t *self, const char *path, char *err,
                         size_t errlen);

/* Sets one key by its dotted path:
     KEY                      a global (dim, database, …)
     actors.NAME.KEY          an actor option
     actors.NAME.instances    how many instances
     links.NAME.from          the OUT ports the link joins, comma list of
                              ACTOR.PORT (several producers may share one)
     links.NAME.to            the IN port that reads it, ACTOR.PORT
     links.NAME.endpoint|bind|hwm|server_key|insecure|max_message
     plugins                  comma list of shared objects to load
                              (ef_config_enable_plugins)
     curve.key|clients        this process's CURVE key pair, allowed keys
     run                      comma list of the actors this process runs;
                              NAME:A-B runs only instances A to B
     hosts.NAME.address|run|key   placement: each host's address ({host}
                              in an endpoint), actors and public key
     host                     which entry of hosts this process is (its
                              run list applies unless run is given)
     SECTION.NAME.KEY         KEY of entry NAME of a section (jobs.nightly.
                              schedule), the entry made on first mention
   Returns 0, or -1 with err naming the key and the reason. */
int ef_config_set (ef_config_t *self, const char *path, const char *value,
                   char *err, size_t errlen);

/* Checks one entry of a section as a whole (what a single key cannot
   tell: a required key, a key that names a file). Returns 0, or -1 with
   why = "KEY: reason". */
typedef int (ef_entry_check_fn) (const char *name, const void *entry, char *why,
                                 size_t len);

/* Declares a top-level section of named entries, `SECTION: {NAME: {KEY:
   VALUE...}...}`, each entry filled from table (defaults first) like an
   actor's options: the application's list of jobs, say. Entry names are
   1 to 63 of [A-Za-z0-9_-]; at most 256 entries. check (may be NULL)
   runs on every entry in ef_config_validate. Call before loading.
   Returns 0, -1 with err when declared twice or out of room. */
int ef_config_add_section (ef_config_t *self, const char *section,
                           const ef_option_t *table, size_t entry_size,
                           ef_entry_check_fn *check, char *err, size_t errlen);
/* How many entries a section has (0 for an unknown section). */
size_t ef_config_section_size (const ef_config_t *self, const char *section);
/* Entry i of a section in the order first named, its name in *name
   (borrowed, when name is not NULL); NULL past the end. */
void *ef_config_section_entry (const ef_config_t *self, const char *section,
                               size_t i, const char **name);
/* The entry called name, NULL when there is none. */
void *ef_config_section_find (const ef_config_t *self, const char *section,
                              const char *name);

/* Checks the whole: every link joins existing OUT ports (from) to one
   existing IN port (to) of the same message type, every IN port has a
   link and every OUT port joins one, endpoints are well formed, every actor running here accepts its
   options (ef_actor_def_t.check) and every section entry passes its
   section's check. Returns 0 or -1 with err naming the key. */
int ef_config_validate (ef_config_t *self, char *err, size_t errlen);

/* Reads the CURVE key files the configuration names: curve.key (this
   process's secret key file), curve.clients (a directory of public key
   files, every file in it must be one) and each links.NAME.server_key (a
   public key file, or the key itself as 40 characters of Z85). Call
   before ef_runtime_start in a process that opens its links; commands
   that only look at a configuration need not. Returns 0, or -1 with err
   naming the key and why (unreadable, not a key file, no secret key). */
int ef_config_load_keys (ef_config_t *self, char *err, size_t errlen);

/* The largest message an IN port of a link accepts when neither the
   application nor links.NAME.max_message says otherwise: 64 MiB. */
#define EF_LINK_MAX_DEFAULT ((int64_t) 64 << 20)

/* Links of the topology: how many, and the name of link i (NULL past
   the end). */
size_t ef_config_link_count (const ef_config_t *self);
const char *ef_config_link_name (const ef_config_t *self, size_t i);
/* The actor whose IN port reads link (its `to`), and that port in *port
   (when port is not NULL); NULL when `to` names no IN port. */
const ef_actor_def_t *ef_config_link_consumer (const ef_config_t *self,
                                               const char *link,
                                               const ef_port_def_t **port);
/* The link's producers (links.NAME.from, a comma list) and consumer
   (links.NAME.to) as configured, NULL when unset. Returns 0, -1 for an
   unknown link. */
int ef_config_link_ends (const ef_config_t *self, const char *link,
                         const char **from, const char **to);
/* The message type link carries (its consumer port's), NULL when its
   `to` names no port. */
const char *ef_config_link_type (const ef_config_t *self, const char *link);

/* Sets the application's default ZMQ_MAXMSGSIZE for link (bytes, sized
   from what the link carries); links.NAME.max_message overrides it. An
   unknown link is ignored. */
void ef_config_link_set_default_max (ef_config_t *self, const char *link,
                                     int64_t bytes);

/* Reads an actor's numeric option (INT, SIZE or MS) by key into *out.
   Returns 0, -1 for an unknown actor or key or another type. */
int ef_config_actor_option_int (const ef_config_t *self, const char *actor,
                                const char *key, int64_t *out);

void *ef_config_globals (ef_config_t *self);
/* An actor's options struct, NULL for an unknown actor. */
void *ef_config_actor_options (ef_config_t *self, const char *actor);
int ef_config_instances (const ef_config_t *self, const char *actor);
/* True when this process runs some instance of actor. */
bool ef_config_runs_here (const ef_config_t *self, const char *actor);
/* True when link joins processes (a tcp:// endpoint), where what is
   queued for a peer that goes away is lost. */
bool ef_config_link_crosses_hosts (const ef_config_t *self, const char *link);
/* True when this process runs instance index of actor (run: NAME:A-B,
   or its host's entry in hosts:). */
bool ef_config_instance_runs_here (const ef_config_t *self, const char *actor,
                                   int index);

/* Writes the topology as Graphviz DOT. */
void ef_config_print_dot (const ef_config_t *self, FILE *out);
/* Says what of a secret's value may be shown: writes the value with its
   secret parts masked into out (len bytes) and returns 0, or returns -1
   to have it masked whole. path is the key's dotted path ("database",
   "jobs.NAME.auth_token"). */
typedef int (ef_config_show_fn) (const char *path, const char *value, char *out,
                                 size_t len);

/* Writes the whole configuration as YAML that ef_config_load_file reads
   back to the same values: every key, defaults included, in the units
   the loader takes (16M, 20ms); an unset key as a comment. The value of
   every EF_OPT_SECRET option is "***" unless show (may be NULL) says
   what of it may be shown. */
void ef_config_print (const ef_config_t *self, FILE *out,
                      ef_config_show_fn *show);

/* --- process -------------------------------------------------------- */

/* Blocks SIGINT and SIGTERM in the calling thread (and every thread it
   starts later) and stops czmq from installing handlers. Call first thing
   in main, before gRPC or czmq start threads. */
void ef_signals_init (void);

/* Takes a pending SIGINT or SIGTERM and returns its number, 0 when none
   is pending. Never blocks. */
int ef_signals_pending (void);

typedef struct ef_runtime ef_runtime_t;

/* Borrows config and registry for its whole life. */
ef_runtime_t *ef_runtime_new (ef_config_t *config);
void ef_runtime_destroy (ef_runtime_t **self_p);

/* Starts every actor that runs here and waits for each to be ready.
   Returns 0; -1 with err ("db-writer[0]: cannot connect …") after
   stopping whatever had started. */
int ef_runtime_start (ef_runtime_t *self, char *err, size_t errlen);

/* What ef_runtime_wait returns when a second signal came while draining. */
#define EF_RUNTIME_HARD_STOP (-1)

/* Runs until SIGINT/SIGTERM, ef_runtime_stop, or an actor failing; then
   drains (sources first) and stops every actor. Returns 0 after a clean
   drain, 1 after an actor failed or drain_timeout passed.
   A second signal during the drain returns EF_RUNTIME_HARD_STOP at once:
   every actor has been told to stop (ef_actor_stopping) but their threads
   may still run, so work in flight is not acknowledged. The caller then
   ends the process (_exit), or calls ef_runtime_destroy, which waits for
   each thread to notice. */
int ef_runtime_wait (ef_runtime_t *self);

/* Asks ef_runtime_wait to drain and return (any thread). */
void ef_runtime_stop (ef_runtime_t *self);

/* Receives the reports of actors (ef_actor_report): actor is the
   instance's name, *msg_p its message, which fn may take (NULLing it)
   or leave to be destroyed. Runs on the thread in ef_runtime_wait; it
   may call ef_runtime_stop. */
typedef void (ef_report_fn) (const char *actor, zmsg_t **msg_p, void *arg);

/* Sets the report function (NULL: reports are dropped). Call before
   ef_runtime_wait; reports sent earlier wait for it. */
void ef_runtime_on_report (ef_runtime_t *self, ef_report_fn *fn, void *arg);

/* How long ef_runtime_control waits for an instance to answer. */
#define EF_CONTROL_TIMEOUT_MS 5000

/* Sends the command verb (with arg, "" for none) to every instance of
   actor (a definition name, or one instance's name, "db-writer[1]")
   running in this process; each runs its control callback on its own
   thread. Any thread; calls are serialized per instance. The answer of
   the first instance that did not return 0 (else the first's) is
   written into reply. Returns what the callbacks returned (0 done, 1
   unknown verb or argument, -1 refused), or: -2 no such actor runs here
   or it takes no commands; -3 an instance did not answer within
   EF_CONTROL_TIMEOUT_MS (restarting, or stuck). */
int ef_runtime_control (ef_runtime_t *self, const char *actor, const char *verb,
                        const char *arg, char *reply, size_t len);

/* How many tcp link ends of this process have had no peer for longer
   than their links.NAME.peer_timeout, with a line per end (which link,
   which address, for how long) written into why. Any thread. */
int ef_links_unready (char *why, size_t len);

/* links.NAME.peer_timeout in ms (0: a link end without a peer does not
   make the process unready). */
int64_t ef_config_link_peer_timeout (const ef_config_t *self, const char *link);

EF_API_END

#endif
