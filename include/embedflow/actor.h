/*  actor.h — how an actor is defined and what it may do.

    An actor is a named definition: its options table, its ports (the
    sockets it reads and writes), and callbacks. The runtime runs each
    instance in its own thread with its own sockets; instances share
    nothing and talk only through ZeroMQ PUSH/PULL links, so the same code
    runs in one process (inproc:// endpoints) or across hosts (tcp://).

    Lifecycle of one instance, all on its thread:
      init      open connections; on failure call ef_actor_fail and return
                -1: at start, ef_runtime_start stops what started and
                returns -1 with the reason (a restart's init: see
                Supervision)
      handle    one message arrived on an input port (ownership passes)
      tick      the deadline set with ef_actor_wake_in passed
      (watch)   a file descriptor given to ef_actor_watch_fd is readable
      drain     the process is stopping gracefully: finish in-flight work,
                then call ef_actor_drained (sources are drained first, then
                every actor after all actors that feed it)
      destroy   release everything init made; called exactly once after
                each init, even when init failed (the runtime waits for
                the last: reports it sends reach ef_runtime_on_report)

    Supervision. When handle or tick returns -1 after a successful start,
    the instance failed: the runtime calls destroy, waits a backoff and
    calls init again on the same thread, with its sockets kept open (what
    is queued on its input stays there, producers just wait) — as long as
    its policy allows (actors.NAME.restart, max_restarts, restart_window;
    the default is the definition's restart flag). A restart whose init
    fails counts as one more failure. Otherwise ef_runtime_wait stops
    every actor and returns 1 (embedflow exits 1), the log naming the
    instance and the count. What was in the instance's hands:
    a handle that returns -1 and leaves *msg_p in place gives the message
    back: the restarted instance gets it again, first. Anything the
    handler took (*msg_p set to NULL, ef_actor_try_recv) or state it held
    is gone with the instance, so a handler settles (acks, dead-letters)
    what it took before it fails, or it must not fail. Only failures the
    actor reports are supervised: a crash of the process is not.

    Messages are zmsg_t of protobuf frames (proto/embedflow/v1/pipeline.proto).

    Waiting, not polling: an instance's thread sleeps in one poll on its
    pipe, its IN ports and the descriptors it watches, until one of them
    is readable or its tick is due. An actor that gets work from a
    library with its own loop or threads (gRPC's completion queue, a
    database connection) watches that library's descriptor, or has the
    library's thread signal an ef_wakeup_t it watches; it never needs a
    short tick to look for work.
*/
#ifndef EF_ACTOR_H
#define EF_ACTOR_H

#include <czmq.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "embedflow/export.h"
#include "embedflow/options.h"

EF_API_BEGIN

typedef struct ef_actor ef_actor_t;

typedef enum {
    EF_PORT_IN,  /* PULL: binds its endpoint */
    EF_PORT_OUT, /* PUSH: connects to the endpoint of the link */
} ef_port_dir_t;

/* A port is a name, a direction and the type of message it carries (the
   protobuf message name, "embedflow.v1.RowBatch"). Which port joins which
   is the configuration's business (links.NAME.from / to, runtime.h): an
   actor never names its peers. */
typedef struct {
    const char *name;  /* port name, unique within the actor */
    ef_port_dir_t dir; /* IN or OUT */
    const char *type;  /* message type: only a port of the same type joins */
    /* IN: each instance binds its own endpoint ("{i}" = instance index).
       OUT: one socket per instance of the link's consumer, so the actor
       picks the destination (ef_actor_send's `to`). */
    bool per_instance;
    int hwm; /* default high-water mark (messages) */
} ef_port_def_t;

/* Takes data from outside: drained first; links into a source (replies
   such as acks) do not count when the runtime orders the drain. */
#define EF_ACTOR_SOURCE 0x1

typedef struct ef_actor_def {
    const char *name;           /* "db-writer": config section, log tag */
    const char *summary;        /* one line for --help and `graph` */
    const ef_option_t *options; /* settings, EF_OPTION_END-terminated */
    size_t options_size;        /* sizeof the struct options fill */
    const ef_port_def_t *ports; /* ports, terminated by a NULL name */
    unsigned flags;             /* EF_ACTOR_SOURCE */
    int default_instances;      /* when the config says nothing */
    size_t state_size;          /* > 0: the runtime callocs this many bytes of
                          state (ef_actor_state) before init and frees
                          them after destroy; destroy frees what the
                          state points to */

    /* Optional: checks the options as a whole before anything starts
       (keys that need each other). Returns 0, or -1 with why = "KEY:
       reason"; ef_config_validate then fails naming actors.NAME.KEY. */
    int (*check) (const void *options, char *why, size_t len);
    int (*init) (ef_actor_t *self);
    /* Returns 0; -1: this instance failed (logged; restarted or the
       process stops, see Supervision). Leaving *msg_p when failing hands
       the message to the restarted instance. */
    int (*handle) (ef_actor_t *self, int port, zmsg_t **msg_p);
    /* Returns 0; -1 fails the instance as handle does. */
    int (*tick) (ef_actor_t *self);
    /* Optional. Without it the instance counts as drained once its inputs
       have been idle for the runtime's drain-idle time. */
    void (*drain) (ef_actor_t *self);
    void (*destroy) (ef_actor_t *self);
    bool restart; /* default of actors.NAME.restart: true = always */
    /* Optional: a command from another thread (ef_runtime_control: the
       HTTP endpoint's /control), run on the instance's own thread between
       messages. Writes a one-line answer into reply (len bytes). Returns
       0 done; 1 the verb or its argument is unknown here; -1 known but
       refused now (reply says why). Must not block: the caller waits
       EF_CONTROL_TIMEOUT_MS at most. */
    int (*control) (ef_actor_t *self, const char *verb, const char *arg,
                    char *reply, size_t len);
} ef_actor_def_t;

/* --- for actor code ------------------------------------------------- */

/* "db-writer[2]" */
const char *ef_actor_name (const ef_actor_t *self);
int ef_actor_index (const ef_actor_t *self);
int ef_actor_instances (const ef_actor_t *self);

/* This actor's options struct, filled by the loader (read-only). */
const void *ef_actor_options (const ef_actor_t *self);
/* The application's global options struct (read-only). */
const void *ef_actor_globals (const ef_actor_t *self);
/* The whole configuration (read-only while the runtime runs): for the
   application's sections, ef_config_section_entry. */
const struct ef_config *ef_actor_config (const ef_actor_t *self);

/* Private state: the runtime's zeroed state_size bytes, or whatever the
   actor stored with ef_actor_set_state (then the actor owns it). */
void *ef_actor_state (const ef_actor_t *self);
void ef_actor_set_state (ef_actor_t *self, void *state);

/* Port index by name, or -1. Look ports up once in init. */
int ef_actor_port (const ef_actor_t *self, const char *name);
/* Sockets behind an OUT port: consumer instance count when per_instance,
   else 1 (of its first link, when several links leave the port). */
int ef_actor_port_width (const ef_actor_t *self, int port);

/* The name of the (first) link port joins, as the configuration calls
   it, NULL when none: for log lines and metrics that name the link. */
const char *ef_actor_port_link (const ef_actor_t *self, int port);

/* The actor (definition name) consuming the first link that leaves OUT
   port, NULL when none. */
const char *ef_actor_port_peer (const ef_actor_t *self, int port);

/* Sends on an OUT port to consumer `to` (0 unless per_instance). Blocks
   while the link is at its high-water mark: that is backpressure. Takes
   ownership of *msg_p and NULLs it. Returns 0, or -1 when the process is
   stopping hard or the socket failed (message destroyed). */
int ef_actor_send (ef_actor_t *self, int port, int to, zmsg_t **msg_p);

/* Sends on the link of OUT port `port` whose consumer is the actor named
   `actor`: how a reply (an ack, say) finds the source named in the
   message it answers, when the configuration joins the port to one link
   per source. Blocks like ef_actor_send. Returns 0 sent, -1 as
   ef_actor_send (message destroyed), -2 when no link of the port leads
   to that actor (*msg_p untouched: the caller logs and drops it). */
int ef_actor_send_to (ef_actor_t *self, int port, const char *actor,
                      zmsg_t **msg_p);

/* Like ef_actor_send, but when the link is full because its tcp peer is
   gone (not just slow) it returns 1 without sending: *msg_p stays the
   caller's, who may hold it or drop it, so that one lost peer does not
   stop what goes to the others. Returns 0 sent, 1 held back, -1 as
   ef_actor_send. */
int ef_actor_send_or_hold (ef_actor_t *self, int port, int to, zmsg_t **msg_p);

/* Like ef_actor_send but never blocks. Returns 1 when sent (ownership
   taken), 0 when the link is full (*msg_p untouched, try again later),
   -1 on a socket error (*msg_p untouched). */
int ef_actor_try_send (ef_actor_t *self, int port, int to, zmsg_t **msg_p);

/* Sends the object ptr itself, not its bytes, to consumer `to` of an OUT
   port whose link stays in this process: what a producer uses when the
   consumer is an actor it knows, to skip encoding and decoding. The
   receiver gets ptr back with ef_actor_local_take. free_fn frees ptr when
   nobody takes it (the link closes with it queued, the process stops).
   Blocks like ef_actor_send. Returns 0; -1 when the link crosses hosts
   (an address means nothing in another process: refused and logged),
   when stopping hard or the socket failed. On -1 ptr is freed. */
int ef_actor_send_local (ef_actor_t *self, int port, int to, void *ptr,
                         void (*free_fn) (void *));

/* The object a message sent by ef_actor_send_local carries, taken from
   it (the message can then be destroyed as usual), or NULL when msg is
   not such a message. With free_fn, *free_fn gets the function the
   producer gave to free it: the object is the caller's now, to free with
   that. On an IN port whose link crosses hosts it is always NULL: an
   address sent from elsewhere is never believed. */
void *ef_actor_local_take (ef_actor_t *self, int port, zmsg_t *msg,
                           void (**free_fn) (void *));

/* Takes the next message waiting on an IN port without blocking, for an
   actor that wants to gather what has queued up (a writer merging
   batches into one transaction). Returns 1 with the message in *msg_p
   (the caller owns it and destroys it: it does not go through handle),
   0 when nothing is waiting (*msg_p NULL), -1 on a socket error. Works on
   a paused port too. Counted in the instance's messages and bytes in
   like any message the runtime delivers. */
int ef_actor_try_recv (ef_actor_t *self, int port, zmsg_t **msg_p);

/* Stops or resumes reading an IN port (its queue then fills and its
   producers block). */
void ef_actor_pause (ef_actor_t *self, int port, bool paused);

/* Calls tick in ms milliseconds (0 = as soon as the loop turns, -1 = no
   tick). The latest call wins. */
void ef_actor_wake_in (ef_actor_t *self, int64_t ms);

/* Called on the actor's thread when a watched descriptor is readable.
   The descriptor is watched level-triggered: while it stays readable
   the callback is called again each time the loop turns, so read (or
   clear) what made it readable. Returns 0; -1 fails this instance as a
   failing handle does (see Supervision). Watches end with the instance:
   a restarted one watches again in its init. */
typedef int (ef_actor_fd_fn) (ef_actor_t *self, int fd, void *arg);

/* Watches fd (any pollable descriptor: eventfd, pipe, socket) from now
   on; fn(self, fd, arg) runs whenever it is readable. Watching an fd
   again replaces its callback. The actor still owns fd and closes it,
   after ef_actor_unwatch_fd or in destroy. Returns 0, or -1 with errno
   EINVAL (fd < 0 or no fn) or ENOSPC (EF_ACTOR_MAX_WATCHES already). */
#define EF_ACTOR_MAX_WATCHES 8
int ef_actor_watch_fd (ef_actor_t *self, int fd, ef_actor_fd_fn *fn, void *arg);

/* Stops watching fd; nothing when it was not watched. */
void ef_actor_unwatch_fd (ef_actor_t *self, int fd);

/* A wakeup: an event another thread raises and an actor waits for, as an
   eventfd. The actor watches ef_wakeup_fd; any thread (or a signal
   handler) calls ef_wakeup_signal; the callback calls ef_wakeup_clear
   before it looks for the work, so a signal raised meanwhile wakes it
   once more rather than being lost. Signals raised before a clear
   collapse into one wakeup. */
typedef struct ef_wakeup ef_wakeup_t;

/* Returns a new, unsignalled wakeup, or NULL with errno set (no memory,
   or the process is out of descriptors). */
ef_wakeup_t *ef_wakeup_new (void);
/* Closes its descriptor (unwatch it first) and frees it; NULLs *self_p.
   Safe to call twice. */
void ef_wakeup_destroy (ef_wakeup_t **self_p);
/* The descriptor to watch: readable while signalled. */
int ef_wakeup_fd (const ef_wakeup_t *self);
/* Raises the wakeup; never blocks, never fails. Any thread. */
void ef_wakeup_signal (ef_wakeup_t *self);
/* Lowers it. Returns true when it was raised. */
bool ef_wakeup_clear (ef_wakeup_t *self);

/* Hands msg to the program running the runtime: its report function
   (ef_runtime_on_report) gets it on the thread in ef_runtime_wait, with
   this instance's name, after whatever this instance reported before.
   For what a program embedding a pipeline wants to learn from it (a
   command printing how a run ended), without state shared between
   threads. Reports sent from destroy arrive too (not after a hard stop:
   ef_runtime_wait returned at once); without a report function they
   are dropped. Takes ownership of *msg_p and NULLs it.
   Returns 0, -1 when the pipe failed (message destroyed). */
int ef_actor_report (ef_actor_t *self, zmsg_t **msg_p);

/* Records why init (or a failing handle or tick) failed: at start
   ef_runtime_start returns it in its err; while running it is logged
   with the failure. */
void ef_actor_fail (ef_actor_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

/* Tells the runtime this instance has finished draining. */
void ef_actor_drained (ef_actor_t *self);

/* True once the process is stopping hard (second signal): leave loops. */
bool ef_actor_stopping (const ef_actor_t *self);

/* Nonzero once a hard stop began; for ef_backoff_sleep. */
const atomic_int *ef_actor_stop_flag (const ef_actor_t *self);

/* Which of n destinations key goes to: XXH64 (key, seed 0) % n, 0 when
   n <= 1. The splitter routes rows to writers by document_id with it, so
   a transform that sits in between and routes its output with it keeps
   each document on one writer. */
int ef_route (const char *key, int n);

/* Monotonic and wall clocks in microseconds. */
int64_t ef_clock_mono_us (void);
int64_t ef_clock_wall_us (void);

EF_API_END

#endif
