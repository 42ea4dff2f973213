/*  actor.c — one actor instance: its sockets, its loop, its API. */
#include "internal.h"

#include "embedflow/log.h"
#include "embedflow/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <xxhash.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define EF_MAX_PORTS 16
/* Blocking sends wake this often to look at the stop flag. */
#define EF_SEND_SLICE_MS 100

/* A tcp peer whose host is gone without a reset (power, network) is
   dropped after this long: TCP keepalive probes an idle connection
   (first after EF_KEEPALIVE_IDLE_S, then every EF_KEEPALIVE_INTVL_S,
   EF_KEEPALIVE_CNT unanswered), and data unacknowledged for
   EF_TCP_MAXRT_MS ends a busy one. Not ZMTP heartbeats: with libzmq
   4.3.4 and CURVE, after a heartbeating peer was killed a PULL socket
   reported a message that a read then waited for forever (the receiver
   stopped answering gRPC, a DLQ never drained). */
#define EF_KEEPALIVE_IDLE_S  5
#define EF_KEEPALIVE_INTVL_S 2
#define EF_KEEPALIVE_CNT     3
#define EF_TCP_MAXRT_MS      10000

/* Handshake failures of one link are logged at most this often. */
#define EF_HANDSHAKE_LOG_US (10 * 1000000)

typedef struct {
    ef_link_end_t *end; /* owned: the peer count of one address */
    int w;              /* the socket it belongs to */
} s_end_t;

/* The connections of a port in one state, oldest first: each its fd and
   the socket (w) it belongs to. */
typedef struct {
    struct {
        int fd; /* the connection's descriptor, as monitor events give it */
        int w;  /* its socket */
    } * at;     /* owned */
    int n, cap; /* used and allocated entries */
} s_fds_t;

/* Appends a connection; out of memory, it is not recorded (its events
   are then those of an unknown connection: ignored). */
static void
s_fds_push (s_fds_t *set, int fd, int w)
{
    if (set->n == set->cap) {
        int cap = set->cap ? 2 * set->cap : 8;
        void *grown = realloc (set->at, (size_t) cap * sizeof *set->at);
        if (!grown)
            return;
        set->at = grown;
        set->cap = cap;
    }
    set->at[set->n].fd = fd;
    set->at[set->n++].w = w;
}

/* Removes the oldest connection of socket w (fd -1: any) or the one
   with descriptor fd; returns its fd, -1 when there is none. */
static int
s_fds_take (s_fds_t *set, int w, int fd)
{
    for (int i = 0; i < set->n; i++)
        if (fd >= 0 ? set->at[i].fd == fd : set->at[i].w == w) {
            int found = set->at[i].fd;
            memmove (set->at + i, set->at + i + 1,
                     (size_t) (set->n - i - 1) * sizeof *set->at);
            set->n--;
            return found;
        }
    return -1;
}

static void
s_fds_clear (s_fds_t *set)
{
    free (set->at);
    *set = (s_fds_t){0};
}

/* One lane: a port's sockets on one link. An IN port has one lane; an
   OUT port one per link its `from` names (replies: a lane per source). */
typedef struct {
    const ef_port_def_t *def; /* borrowed from the actor definition */
    const char *link;         /* the link, borrowed from the config */
    int def_port;             /* index of def in the definition's ports */
    zsock_t **socks;          /* width sockets (OUT) or one (IN) */
    zsock_t **mons;           /* each tcp socket's event monitor, or NULL */
    int *peers;               /* each socket's connected peers (monitored) */
    int width;                /* see ef_actor_port_width */
    bool paused;              /* IN: removed from the poller */
    int64_t warned_us;        /* last handshake failure logged, monotonic */
    uint64_t quiet;           /* failures not logged since */
    s_end_t *ends;            /* tcp addresses bound or connected */
    int n_ends;               /* used entries */
    s_fds_t shaking;          /* connections before their handshake */
    s_fds_t live;             /* connections whose handshake succeeded */
    ef_gauge_t *queued;       /* embedflow_link_queued{link} */
    ef_counter_t *blocked;    /* OUT: embedflow_link_blocked_seconds_total */
    int64_t full_since_us;    /* OUT: try_send refused since, 0 = not */
} s_port_t;

/* What one entry of the poll set stands for. */
typedef enum {
    S_ITEM_PIPE,    /* the runtime's pipe */
    S_ITEM_PORT,    /* an IN port's socket */
    S_ITEM_MONITOR, /* a socket monitor */
    S_ITEM_WATCH,   /* a watched descriptor */
    S_ITEM_CONTROL, /* a command from another thread is waiting */
} s_item_kind_t;

typedef struct {
    s_item_kind_t kind; /* what it is */
    int a;              /* port, or watch slot */
    int b;              /* socket of the port (monitors) */
} s_item_t;

typedef struct {
    int fd;             /* watched descriptor, -1 = free slot */
    ef_actor_fd_fn *fn; /* called when fd is readable */
    void *arg;          /* fn's argument */
} s_watch_t;

struct ef_wakeup {
    int fd; /* eventfd: readable while raised */
};

/* The mailbox of ef_actor_control: one command at a time. The buffers
   live here, not in the caller, so a caller that gave up waiting leaves
   nothing dangling; the next caller waits until the instance answered. */
typedef struct {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* signalled when answered or freed */
    ef_wakeup_t *wake;    /* raised when a command is waiting */
    bool busy;            /* a command is in the mailbox */
    bool asked;           /* it waits for the instance */
    bool abandoned;       /* its caller gave up: the instance frees it */
    char verb[64];        /* the command */
    char arg[256];        /* its argument */
    char reply[512];      /* the answer */
    int rc;               /* the callback's result */
} s_control_t;

struct ef_actor {
    const ef_actor_def_t *def; /* borrowed */
    ef_config_t *config;       /* borrowed */
    char name[80];             /* "db-writer[2]" */
    int index;                 /* 0-based instance number */
    int instances;             /* instances of this actor in the topology */
    void *state; /* def->state_size bytes, or ef_actor_set_state's */
    s_port_t ports[EF_MAX_PORTS]; /* lanes, in definition order */
    int n_ports;                  /* used entries */
    int lane_first[EF_MAX_PORTS]; /* definition port -> its first lane */
    int lane_count[EF_MAX_PORTS]; /* definition port -> its lanes */
    int n_defs;                   /* ports in the definition */
    zsock_t *pipe;                /* to the runtime, borrowed from zactor */
    zmq_pollitem_t *items;        /* poll set: pipe, unpaused IN ports,
                                      monitors, watched descriptors */
    s_item_t *item_of;            /* what each entry of items is */
    int n_items;                  /* entries of items */
    int cap_items;                /* allocated entries */
    bool set_changed;             /* items must be rebuilt */
    s_watch_t watches[EF_ACTOR_MAX_WATCHES]; /* watched descriptors */
    int64_t wake_at_us;            /* monotonic tick deadline, -1 = none */
    int64_t last_input_us;         /* last message on an IN port */
    char fail[1024];               /* why init failed */
    bool inited;                   /* init ran: destroy is due */
    zmsg_t *pending;               /* the message a failed handle gave back */
    int pending_port;              /* the IN lane it came from */
    ef_restarts_t restarts;        /* policy and recent failures */
    ef_counter_t *restart_counter; /* embedflow_actor_restarts_total */
    bool draining;                 /* $DRAIN received */
    bool drained;                  /* DRAINED sent */
    bool terminated;               /* leave the loop */
    bool stop_asked;               /* left it on $STOP: answer STOPPED */
    bool ready;                    /* READY or FAILED was sent */
    zlist_t *early;                /* reports made before that, in order */
    const atomic_int *stop;        /* runtime's hard-stop flag */
    s_control_t *control;          /* commands, when def->control is set */
};

int
ef_route (const char *key, int n)
{
    if (n <= 1 || !key)
        return 0;
    return (int) (XXH64 (key, strlen (key), 0) % (uint64_t) n);
}

int64_t
ef_clock_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
ef_clock_wall_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* NULL when out of memory or out of descriptors. */
static s_control_t *
s_control_new (void)
{
    s_control_t *c = calloc (1, sizeof *c);
    pthread_condattr_t attr;
    if (!c || pthread_condattr_init (&attr) != 0) {
        free (c);
        return NULL;
    }
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    bool ok = pthread_cond_init (&c->cond, &attr) == 0;
    pthread_condattr_destroy (&attr);
    if (!ok || pthread_mutex_init (&c->lock, NULL) != 0
        || !(c->wake = ef_wakeup_new ())) {
        if (ok)
            pthread_cond_destroy (&c->cond);
        free (c);
        return NULL;
    }
    return c;
}

static void
s_control_destroy (s_control_t **c_p)
{
    if (!*c_p)
        return;
    ef_wakeup_destroy (&(*c_p)->wake);
    pthread_cond_destroy (&(*c_p)->cond);
    pthread_mutex_destroy (&(*c_p)->lock);
    free (*c_p);
    *c_p = NULL;
}

int
ef_actor_control (ef_actor_t *self, const char *verb, const char *arg,
                  char *reply, size_t len, int64_t timeout_ms)
{
    s_control_t *c = self->control;
    if (len)
        *reply = 0;
    if (!c) {
        snprintf (reply, len, "%s takes no commands", self->name);
        return -2;
    }
    struct timespec until;
    clock_gettime (CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    int rc = -3;
    pthread_mutex_lock (&c->lock);
    while (c->busy)
        if (pthread_cond_timedwait (&c->cond, &c->lock, &until) != 0)
            break;
    if (!c->busy) {
        c->busy = c->asked = true;
        c->abandoned = false;
        snprintf (c->verb, sizeof c->verb, "%s", verb);
        snprintf (c->arg, sizeof c->arg, "%s", arg ? arg : "");
        ef_wakeup_signal (c->wake);
        while (c->asked)
            if (pthread_cond_timedwait (&c->cond, &c->lock, &until) != 0)
                break;
        if (c->asked)
            c->abandoned = true; /* the instance frees the mailbox */
        else {
            rc = c->rc;
            snprintf (reply, len, "%s", c->reply);
            c->busy = false;
            pthread_cond_broadcast (&c->cond);
        }
    }
    pthread_mutex_unlock (&c->lock);
    if (rc == -3)
        snprintf (reply, len, "%s did not answer within %lld ms", self->name,
                  (long long) timeout_ms);
    return rc;
}

/* Runs the waiting command, if any, on the instance's thread. */
static void
s_control_serve (ef_actor_t *self)
{
    s_control_t *c = self->control;
    ef_wakeup_clear (c->wake);
    char verb[sizeof c->verb], arg[sizeof c->arg], reply[sizeof c->reply];
    pthread_mutex_lock (&c->lock);
    bool asked = c->asked;
    memcpy (verb, c->verb, sizeof verb);
    memcpy (arg, c->arg, sizeof arg);
    pthread_mutex_unlock (&c->lock);
    if (!asked)
        return;
    *reply = 0;
    int rc = self->def->control (self, verb, arg, reply, sizeof reply);
    pthread_mutex_lock (&c->lock);
    memcpy (c->reply, reply, sizeof reply);
    c->rc = rc;
    c->asked = false;
    if (c->abandoned)
        c->busy = false;
    pthread_cond_broadcast (&c->cond);
    pthread_mutex_unlock (&c->lock);
}

ef_actor_t *
ef_actor_new (ef_config_t *config, const ef_actor_def_t *def, int index,
              const atomic_int *stop)
{
    ef_actor_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->def = def;
    self->config = config;
    self->index = index;
    self->instances = ef_config_instances (config, def->name);
    self->wake_at_us = -1;
    self->stop = stop;
    self->restarts = ef_config_restarts (config, def->name);
    for (int i = 0; i < EF_ACTOR_MAX_WATCHES; i++)
        self->watches[i].fd = -1;
    self->set_changed = true;
    if (def->control && !(self->control = s_control_new ())) {
        free (self);
        return NULL;
    }
    if (self->instances > 1)
        snprintf (self->name, sizeof self->name, "%s[%d]", def->name, index);
    else
        snprintf (self->name, sizeof self->name, "%s", def->name);
    return self;
}

static void
s_close_ports (ef_actor_t *self)
{
    for (int p = 0; p < self->n_ports; p++) {
        for (int i = 0; i < self->ports[p].width; i++) {
            if (self->ports[p].mons && self->ports[p].mons[i]) {
                zmq_socket_monitor (zsock_resolve (self->ports[p].socks[i]),
                                    NULL, 0);
                zsock_destroy (&self->ports[p].mons[i]);
            }
            zsock_destroy (&self->ports[p].socks[i]);
        }
        free (self->ports[p].socks);
        free (self->ports[p].mons);
        free (self->ports[p].peers);
        s_fds_clear (&self->ports[p].shaking);
        s_fds_clear (&self->ports[p].live);
        for (int e = 0; e < self->ports[p].n_ends; e++)
            ef_link_end_destroy (&self->ports[p].ends[e].end);
        free (self->ports[p].ends);
        self->ports[p].ends = NULL;
        self->ports[p].n_ends = 0;
        self->ports[p].socks = NULL;
        self->ports[p].mons = NULL;
        self->ports[p].peers = NULL;
        self->ports[p].width = 0;
    }
    self->n_ports = 0;
}

void
ef_actor_destroy (ef_actor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_close_ports (*self_p);
    zmsg_destroy (&(*self_p)->pending);
    zmsg_t *msg;
    while ((*self_p)->early && (msg = zlist_pop ((*self_p)->early)))
        zmsg_destroy (&msg);
    zlist_destroy (&(*self_p)->early);
    free ((*self_p)->items);
    free ((*self_p)->item_of);
    s_control_destroy (&(*self_p)->control);
    free (*self_p);
    *self_p = NULL;
}

/* Starts a monitor on socket w of port: handshake failures of its peers
   (bind) or of its own attempts (connect) arrive on a PAIR socket the
   actor polls. Returns 0, or -1 with self->fail set. */
static int
s_monitor (ef_actor_t *self, s_port_t *port, int w, bool bind)
{
    char ep[96];
    snprintf (ep, sizeof ep, "inproc://ef-monitor-%p-%d", (void *) port, w);
    int events =
        ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
        | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_DISCONNECTED
        | (bind ? ZMQ_EVENT_ACCEPTED
                : ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_CONNECTED);
    if (zmq_socket_monitor (zsock_resolve (port->socks[w]), ep, events) != 0
        || !(port->mons[w] = zsock_new_pair (NULL))
        || zsock_connect (port->mons[w], "%s", ep) != 0) {
        snprintf (self->fail, sizeof self->fail,
                  "links.%s: cannot monitor the socket: %s", port->link,
                  zmq_strerror (zmq_errno ()));
        return -1;
    }
    return 0;
}

/* Prepares a tcp socket of link before it binds or connects: CURVE as
   server (this process's key pair, the link's name as ZAP domain, so
   refusals are counted per link) or as client (the binding side's public
   key), unless the link is insecure or this end has no keys (loopback:
   ef_config_validate refused every other case). Returns 0, or -1 with
   self->fail set. */
static int
s_secure (ef_actor_t *self, s_port_t *port, int w, bool bind, int idx)
{
    const char *link = port->link;
    zsock_t *s = port->socks[w];
    zcert_t *cert = ef_config_cert (self->config);
    const char *server_key =
        ef_config_link_server_key (self->config, link, idx);
    if (!ef_config_link_insecure (self->config, link)) {
        if (bind && cert) {
            zcert_apply (cert, zsock_resolve (s));
            zsock_set_curve_server (s, 1);
            zsock_set_zap_domain (s, link);
        }
        else if (!bind && server_key) {
            if (!cert) {
                snprintf (self->fail, sizeof self->fail,
                          "links.%s.server_key: needs curve.key", link);
                return -1;
            }
            zcert_apply (cert, zsock_resolve (s));
            zsock_set_curve_serverkey (s, server_key);
        }
    }
    /* A host that dies without closing its connections (power, network)
       sends no reset: keepalive and the retransmission limit find it, so
       that its link counts as peerless and what it held is sent again
       once it is back. */
    zsock_set_tcp_keepalive (s, 1);
    zsock_set_tcp_keepalive_idle (s, EF_KEEPALIVE_IDLE_S);
    zsock_set_tcp_keepalive_intvl (s, EF_KEEPALIVE_INTVL_S);
    zsock_set_tcp_keepalive_cnt (s, EF_KEEPALIVE_CNT);
    zsock_set_tcp_maxrt (s, EF_TCP_MAXRT_MS);
    if (bind) {
        ef_link_count_rejected (link, "key", 0);
        ef_link_count_rejected (link, "handshake", 0);
    }
    return s_monitor (self, port, w, bind);
}

/* Registers a tcp address of socket w of port for peer counting.
   Returns 0, -1 when out of memory. */
static int
s_add_end (ef_actor_t *self, s_port_t *port, int w, const char *ep, bool bind)
{
    s_end_t *grown =
        realloc (port->ends, (size_t) (port->n_ends + 1) * sizeof *grown);
    if (!grown)
        return -1;
    port->ends = grown;
    ef_link_end_t *end = ef_link_end_new (
        port->link, ep, bind,
        ef_config_link_peer_timeout (self->config, port->link));
    if (!end)
        return -1;
    port->ends[port->n_ends++] = (s_end_t){end, w};
    return 0;
}

/* Counts a connection made or lost on socket w of port: on the end of
   that address (a socket connecting to several has one per address),
   else the socket's first. */
static void
s_peer_event (s_port_t *port, int w, const char *where, int delta)
{
    s_end_t *found = NULL;
    for (int e = 0; e < port->n_ends; e++)
        if (port->ends[e].w == w
            && (!found
                || (where
                    && strcmp (ef_link_end_endpoint (port->ends[e].end), where)
                           == 0)))
            found = &port->ends[e];
    if (found)
        ef_link_end_event (found->end, delta);
}

/* Reads one event from monitor w of port: connections made and lost
   are counted per address; a peer that failed the handshake on a bound
   link is counted as rejected; a handshake of this end that failed is
   logged, both at most every EF_HANDSHAKE_LOG_US per port. */
static void
s_monitor_event (s_port_t *port, int w)
{
    if (!(zsock_events (port->mons[w]) & ZMQ_POLLIN))
        return; /* a stale wake-up, see s_input */
    zmsg_t *msg = zmsg_recv (port->mons[w]);
    zframe_t *head = msg ? zmsg_first (msg) : NULL;
    char *where =
        msg && zmsg_next (msg) ? zframe_strdup (zmsg_last (msg)) : NULL;
    uint16_t event = 0;
    uint32_t fd = 0;
    if (head && zframe_size (head) == 6) {
        memcpy (&event, zframe_data (head), 2);
        memcpy (&fd, zframe_data (head) + 2, 4);
    }
    /* A peer is a connection whose handshake succeeded. One refused by
       CURVE or ZAP (a foreign host probing a bound port) is accepted and
       disconnected too, but must neither count as a peer nor look like
       one that went away (the receiver would re-send what it sent).
       Accepted and disconnected events carry the connection's fd, a
       handshake's success does not: it is taken to be the oldest
       connection still shaking hands. Two handshakes ending out of order
       while one fails can swap the two; the cost is one connection
       counted wrong until it closes, erring towards a peer that went. */
    bool peer_event = false;
    if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED)
        s_fds_push (&port->shaking, (int) fd, w);
    else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        s_fds_push (&port->live, s_fds_take (&port->shaking, w, -1), w);
        peer_event = true;
    }
    else if (event == ZMQ_EVENT_DISCONNECTED) {
        peer_event = s_fds_take (&port->live, w, (int) fd) >= 0;
        if (!peer_event)
            s_fds_take (&port->shaking, w, (int) fd);
    }
    if (event == ZMQ_EVENT_ACCEPTED || event == ZMQ_EVENT_CONNECTED
        || (event == ZMQ_EVENT_DISCONNECTED && !peer_event)) {
        free (where);
        zmsg_destroy (&msg);
        return;
    }
    if (peer_event) {
        /* the socket's peers (which writers can take a batch), the churn
           the receiver's re-sending watches, then the count of this
           address (metrics, the log, /readyz) */
        bool up = event != ZMQ_EVENT_DISCONNECTED;
        if (port->peers && (up || port->peers[w] > 0))
            port->peers[w] += up ? 1 : -1;
        ef_links_peer_event (port->link, where, port->def->dir == EF_PORT_OUT,
                             event != ZMQ_EVENT_DISCONNECTED);
        s_peer_event (port, w, where, event == ZMQ_EVENT_DISCONNECTED ? -1 : 1);
        free (where);
        zmsg_destroy (&msg);
        return;
    }
    if (head && zframe_size (head) == 6) {
        uint32_t value;
        memcpy (&value, zframe_data (head) + 2, 4);
        bool bind = port->def->dir == EF_PORT_IN;
        const char *why = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                              ? "the peer refused our key"
                          : value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                              ? "one side uses CURVE and the other does not"
                          : value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
                              ? "CURVE keys do not match (a wrong server_key)"
                          : event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
                              ? "the connection failed during the handshake"
                              : "a malformed handshake";
        if (bind)
            ef_link_count_rejected (port->link, "handshake", 1);
        else
            ef_counter_add (
                ef_metrics_counter_labeled (
                    "embedflow_link_handshake_failures_total",
                    "handshakes of this process's connections that failed "
                    "(the peer refused our key, keys do not match)",
                    (const char *const[]){"link", port->link, NULL}),
                1);
        int64_t now = ef_clock_mono_us ();
        if (port->warned_us && now - port->warned_us < EF_HANDSHAKE_LOG_US)
            port->quiet++;
        else {
            char more[64] = "";
            if (port->quiet)
                snprintf (more, sizeof more, " (and %llu not logged)",
                          (unsigned long long) port->quiet);
            ef_warn ("links.%s: %s %s failed the handshake: %s%s", port->link,
                     bind ? "a peer of" : "connecting to", where ? where : "?",
                     why, more);
            port->warned_us = now;
            port->quiet = 0;
        }
    }
    free (where);
    zmsg_destroy (&msg);
}

/* The port and socket index of monitor sock, or -1. */
static int
s_find_monitor (ef_actor_t *self, void *sock, int *w)
{
    for (int p = 0; p < self->n_ports; p++)
        for (int i = 0; self->ports[p].mons && i < self->ports[p].width; i++)
            if (self->ports[p].mons[i] == sock) {
                *w = i;
                return p;
            }
    return -1;
}

static int s_open_lane (ef_actor_t *self, const ef_port_def_t *pd, int d,
                        const char *link);

/* Opens every port, a lane per link it joins: IN ports bind, OUT ports
   connect. Returns 0, or -1 with self->fail set. */
static int
s_open_ports (ef_actor_t *self)
{
    int d = 0;
    for (const ef_port_def_t *pd = self->def->ports; pd && pd->name;
         pd++, d++) {
        const char *links[EF_MAX_PORTS];
        size_t n = ef_config_port_links (self->config, self->def->name,
                                         pd->name, links, EF_MAX_PORTS);
        if (d == EF_MAX_PORTS || n > EF_MAX_PORTS
            || self->n_ports + (int) n > EF_MAX_PORTS) {
            snprintf (self->fail, sizeof self->fail,
                      "too many ports or links (at most %d)", EF_MAX_PORTS);
            return -1;
        }
        /* ef_config_validate refuses both; a program that starts a
           runtime without it gets an OUT port that sends nowhere (-1) */
        if (pd->dir == EF_PORT_IN && n != 1) {
            snprintf (self->fail, sizeof self->fail,
                      "links: port %s.%s is read by %zu links (one is needed)",
                      self->def->name, pd->name, n);
            return -1;
        }
        self->lane_first[d] = self->n_ports;
        self->lane_count[d] = (int) n;
        self->n_defs = d + 1;
        for (size_t k = 0; k < n; k++)
            if (s_open_lane (self, pd, d, links[k]) != 0)
                return -1;
    }
    return 0;
}

/* Opens the lane of port pd (index d) on link: an IN port binds, an OUT
   port connects. Returns 0, or -1 with self->fail set. */
static int
s_open_lane (ef_actor_t *self, const ef_port_def_t *pd, int d, const char *link)
{
    s_port_t *port = &self->ports[self->n_ports++];
    port->def = pd;
    port->link = link;
    port->def_port = d;
    port->queued = ef_metrics_gauge_labeled (
        "embedflow_link_queued",
        "messages this process's producers sent on the link minus those "
        "its consumers received (sum over processes for a link that "
        "crosses them)",
        (const char *const[]){"link", link, NULL});
    if (pd->dir == EF_PORT_OUT)
        port->blocked = ef_metrics_seconds_labeled (
            "embedflow_link_blocked_seconds_total",
            "time an actor waited to send on the link because it was full",
            (const char *const[]){"link", link, "actor", self->name, NULL});
    int hwm = ef_config_link_hwm (self->config, link, pd->hwm);
    char ep[256];
    if (pd->dir == EF_PORT_IN) {
        port->width = 1;
        port->socks = calloc (1, sizeof (zsock_t *));
        if (!port->socks)
            return -1;
        /* Several instances on a shared link each bind their own
           endpoint; the producer's PUSH connects to all of them. */
        int idx = pd->per_instance || self->instances > 1 ? self->index : -1;
        if (ef_config_link_endpoint (self->config, link, true, idx, ep,
                                     sizeof ep)
            != 0) {
            snprintf (self->fail, sizeof self->fail,
                      "links.%s: cannot derive endpoint %d", link, idx);
            return -1;
        }
        zsock_t *s = zsock_new (ZMQ_PULL);
        port->mons = calloc (1, sizeof (zsock_t *));
        port->peers = calloc (1, sizeof (int));
        if (!s || !port->mons || !port->peers) {
            zsock_destroy (&s);
            return -1;
        }
        zsock_set_rcvhwm (s, hwm);
        /* A peer announcing a bigger frame is disconnected before
           anything is allocated for it. */
        int64_t max = ef_config_link_max_message (self->config, link);
        zmq_setsockopt (zsock_resolve (s), ZMQ_MAXMSGSIZE, &max, sizeof max);
        port->socks[0] = s;
        if (strncmp (ep, "tcp://", 6) == 0
            && s_secure (self, port, 0, true, idx) != 0)
            return -1;
        if (zsock_bind (s, "%s", ep) < 0) {
            snprintf (self->fail, sizeof self->fail,
                      "links.%s: cannot bind %s: %s", link, ep,
                      zmq_strerror (zmq_errno ()));
            return -1;
        }
        if (strncmp (ep, "tcp://", 6) == 0
            && s_add_end (self, port, 0, ep, true) != 0)
            return -1;
        ef_debug ("port %s bound %s (hwm %d)", pd->name, ep, hwm);
        return 0;
    }
    const ef_port_def_t *in = NULL;
    const ef_actor_def_t *consumer =
        ef_config_link_consumer (self->config, link, &in);
    int peers =
        consumer ? ef_config_instances (self->config, consumer->name) : 1;
    bool fan = in && in->per_instance;
    port->width = fan ? peers : 1;
    port->socks = calloc ((size_t) port->width, sizeof (zsock_t *));
    port->mons = calloc ((size_t) port->width, sizeof (zsock_t *));
    port->peers = calloc ((size_t) port->width, sizeof (int));
    if (!port->socks || !port->mons || !port->peers)
        return -1;
    for (int w = 0; w < port->width; w++) {
        zsock_t *s = zsock_new (ZMQ_PUSH);
        if (!s)
            return -1;
        port->socks[w] = s;
        zsock_set_sndhwm (s, hwm);
        zsock_set_sndtimeo (s, EF_SEND_SLICE_MS);
        int first = fan ? w : (peers > 1 ? 0 : -1);
        int last = fan ? w : (peers > 1 ? peers - 1 : -1);
        for (int idx = first; idx <= last; idx++) {
            if (ef_config_link_endpoint (self->config, link, false, idx, ep,
                                         sizeof ep)
                != 0) {
                snprintf (self->fail, sizeof self->fail,
                          "links.%s: cannot derive endpoint %d", link, idx);
                return -1;
            }
            if (idx == first && strncmp (ep, "tcp://", 6) == 0
                && s_secure (self, port, w, false, idx) != 0)
                return -1;
            if (strncmp (ep, "tcp://", 6) == 0)
                ef_links_expect (); /* peerless until it connects */
            if (zsock_connect (s, "%s", ep) < 0) {
                snprintf (self->fail, sizeof self->fail,
                          "links.%s: cannot connect %s: %s", link, ep,
                          zmq_strerror (zmq_errno ()));
                return -1;
            }
            if (strncmp (ep, "tcp://", 6) == 0
                && s_add_end (self, port, w, ep, false) != 0)
                return -1;
            ef_debug ("port %s connected %s (hwm %d)", pd->name, ep, hwm);
        }
    }
    return 0;
}

/* Sends msg's frames on sock. The first frame decides: with dontwait it
   returns 0 at once when the link is full; blocking, it waits in slices
   until sent or the hard-stop flag rises (-1). Once the first frame is in,
   ZeroMQ takes the rest of a multipart message atomically. Destroys the
   message only when it returns 1. Frames go out by reference
   (ZFRAME_REUSE shares the buffer, counted): a batch of rows is not
   copied on each hop, and a send refused while the link is full leaves
   the message whole for the next try. */
static int
s_send (ef_actor_t *self, s_port_t *port, zsock_t *sock, zmsg_t **msg_p,
        bool dontwait)
{
    zmsg_t *msg = *msg_p;
    size_t n = zmsg_size (msg);
    zframe_t *f = zmsg_first (msg);
    for (size_t i = 0; f; i++, f = zmsg_next (msg)) {
        int flags = ZFRAME_REUSE | (i + 1 < n ? ZFRAME_MORE : 0)
                    | (i == 0 && dontwait ? ZFRAME_DONTWAIT : 0);
        zframe_t *each = f; /* zframe_send keeps it with ZFRAME_REUSE */
        while (zframe_send (&each, sock, flags) < 0) {
            if (zmq_errno () == EAGAIN && i == 0 && dontwait)
                return 0;
            if (zmq_errno () == EAGAIN && !*self->stop)
                continue;
            if (i > 0)
                zmsg_destroy (msg_p); /* half a message cannot be kept */
            return -1;
        }
    }
    ef_actor_count_message (self, false, msg);
    ef_gauge_add (port->queued, 1);
    zmsg_destroy (msg_p);
    return 1;
}

/* The first lane of definition port `port`, -1 when there is none. */
static int
s_lane (const ef_actor_t *self, int port)
{
    return port >= 0 && port < self->n_defs && self->lane_count[port] > 0
               ? self->lane_first[port]
               : -1;
}

static zsock_t *
s_out_sock (ef_actor_t *self, int port, int to)
{
    if (port < 0 || port >= self->n_ports
        || self->ports[port].def->dir != EF_PORT_OUT)
        return NULL;
    s_port_t *p = &self->ports[port];
    if (to < 0 || to >= p->width)
        return NULL;
    return p->socks[to];
}

/* Reads every pending event of this actor's socket monitors. */
static void
s_drain_monitors (ef_actor_t *self)
{
    for (int p = 0; p < self->n_ports; p++)
        for (int w = 0; self->ports[p].mons && w < self->ports[p].width; w++)
            while (self->ports[p].mons[w]
                   && (zsock_events (self->ports[p].mons[w]) & ZMQ_POLLIN))
                s_monitor_event (&self->ports[p], w);
}

/* Sends, waiting in slices while the link is full. The actor's monitors
   are read meanwhile, so peers that go or come are seen even while it
   waits; with hold, a full link whose tcp peer is gone returns 1 and
   leaves *msg_p to the caller. Returns 0 sent, 1 held, -1 when stopping
   hard or the socket failed (message destroyed). */
static int
s_send_wait (ef_actor_t *self, int port, int to, zmsg_t **msg_p, bool hold)
{
    zsock_t *sock = s_out_sock (self, port, to);
    assert (sock);
    s_port_t *p = &self->ports[port];
    zsock_t *mon = p->mons ? p->mons[to] : NULL;
    int64_t blocked_us = 0; /* last time the wait was counted */
    int rc;
    for (;;) {
        int sent = s_send (self, p, sock, msg_p, true);
        if (sent == 1) {
            rc = 0;
            break;
        }
        if (sent < 0 || *self->stop) {
            zmsg_destroy (msg_p);
            rc = -1;
            break;
        }
        /* counted slice by slice, so a scrape sees a wait still going */
        int64_t now = ef_clock_mono_us ();
        if (blocked_us)
            ef_counter_add (p->blocked, (uint64_t) (now - blocked_us) * 1000);
        blocked_us = now;
        s_drain_monitors (self);
        if (hold && mon && p->peers && p->peers[to] == 0) {
            rc = 1;
            break;
        }
        zmq_pollitem_t items[2] = {
            {zsock_resolve (sock), 0, ZMQ_POLLOUT, 0},
            {mon ? zsock_resolve (mon) : NULL, 0, ZMQ_POLLIN, 0}};
        zmq_poll (items, mon ? 2 : 1, EF_SEND_SLICE_MS);
    }
    if (blocked_us)
        ef_counter_add (p->blocked,
                        (uint64_t) (ef_clock_mono_us () - blocked_us) * 1000);
    return rc;
}

int
ef_actor_send (ef_actor_t *self, int port, int to, zmsg_t **msg_p)
{
    int lane = s_lane (self, port);
    if (lane < 0) {
        ef_error ("port %d joins no link: message dropped", port);
        zmsg_destroy (msg_p);
        return -1;
    }
    return s_send_wait (self, lane, to, msg_p, false) == 0 ? 0 : -1;
}

int
ef_actor_send_to (ef_actor_t *self, int port, const char *actor, zmsg_t **msg_p)
{
    int first = s_lane (self, port);
    for (int k = 0; first >= 0 && k < self->lane_count[port]; k++) {
        const ef_actor_def_t *peer = ef_config_link_consumer (
            self->config, self->ports[first + k].link, NULL);
        if (peer && actor && strcmp (peer->name, actor) == 0)
            return s_send_wait (self, first + k, 0, msg_p, false) == 0 ? 0 : -1;
    }
    return -2;
}

const char *
ef_actor_port_link (const ef_actor_t *self, int port)
{
    int lane = s_lane (self, port);
    return lane >= 0 ? self->ports[lane].link : NULL;
}

const char *
ef_actor_port_peer (const ef_actor_t *self, int port)
{
    int lane = s_lane (self, port);
    const ef_actor_def_t *peer = lane >= 0 ? ef_config_link_consumer (
                                     self->config, self->ports[lane].link, NULL)
                                           : NULL;
    return peer ? peer->name : NULL;
}

int
ef_actor_send_or_hold (ef_actor_t *self, int port, int to, zmsg_t **msg_p)
{
    return s_send_wait (self, s_lane (self, port), to, msg_p, true);
}

int
ef_actor_try_send (ef_actor_t *self, int port, int to, zmsg_t **msg_p)
{
    int lane = s_lane (self, port);
    zsock_t *sock = s_out_sock (self, lane, to);
    assert (sock);
    s_port_t *p = &self->ports[lane];
    int rc = s_send (self, p, sock, msg_p, true);
    /* An actor that does not wait on a full link (it stops reading its
       own input instead) is blocked from the first refusal to the next
       send that goes through, counted at each try. */
    int64_t now = ef_clock_mono_us ();
    if (p->full_since_us)
        ef_counter_add (p->blocked, (uint64_t) (now - p->full_since_us) * 1000);
    p->full_since_us = rc == 0 ? now : 0;
    return rc;
}

/* What a local message carries: ZeroMQ owns the box from the send on
   and calls s_local_free when the last reference goes, taken or not. */
typedef struct {
    uint64_t magic;           /* EF_LOCAL_MAGIC */
    void *ptr;                /* the object; NULL once taken */
    void (*free_fn) (void *); /* frees ptr when nobody took it */
} s_local_t;

#define EF_LOCAL_MAGIC 0x65666c6f63616c31ull /* "eflocal1" */

static void
s_local_free (void *data, void *hint)
{
    (void) hint;
    s_local_t *box = data;
    if (box->ptr && box->free_fn)
        box->free_fn (box->ptr);
    free (box);
}

int
ef_actor_send_local (ef_actor_t *self, int port, int to, void *ptr,
                     void (*free_fn) (void *))
{
    int lane = s_lane (self, port);
    zsock_t *sock = lane >= 0 ? s_out_sock (self, lane, to) : NULL;
    const char *link = lane >= 0 ? self->ports[lane].link : NULL;
    bool remote = link && ef_config_link_crosses_hosts (self->config, link);
    if (!sock || remote) {
        ef_error ("port %d %s: an object cannot be sent there, dropped", port,
                  remote ? "leads to another process"
                         : "has no such consumer or joins no link");
        if (free_fn)
            free_fn (ptr);
        return -1;
    }
    s_local_t *box = malloc (sizeof *box);
    if (!box) {
        if (free_fn)
            free_fn (ptr);
        return -1;
    }
    *box = (s_local_t){EF_LOCAL_MAGIC, ptr, free_fn};
    zmq_msg_t part;
    /* zero-copy: the frame's bytes are the box, freed by ZeroMQ */
    if (zmq_msg_init_data (&part, box, sizeof *box, s_local_free, NULL) != 0) {
        s_local_free (box, NULL);
        return -1;
    }
    void *handle = zsock_resolve (sock);
    s_port_t *p = &self->ports[lane];
    int64_t blocked_us = 0; /* last time the wait was counted */
    int rc = 0;
    while (zmq_msg_send (&part, handle, ZMQ_DONTWAIT) < 0) {
        if (zmq_errno () != EAGAIN || *self->stop) {
            zmq_msg_close (&part); /* frees the box and the object */
            rc = -1;
            break;
        }
        /* blocked on a full link like ef_actor_send, counted per slice */
        int64_t now = ef_clock_mono_us ();
        if (blocked_us)
            ef_counter_add (p->blocked, (uint64_t) (now - blocked_us) * 1000);
        blocked_us = now;
        zmq_pollitem_t item = {handle, 0, ZMQ_POLLOUT, 0};
        zmq_poll (&item, 1, EF_SEND_SLICE_MS);
    }
    if (blocked_us)
        ef_counter_add (p->blocked,
                        (uint64_t) (ef_clock_mono_us () - blocked_us) * 1000);
    if (rc != 0)
        return rc;
    ef_gauge_add (p->queued, 1);
    ef_actor_count (self, EF_METRIC_MESSAGES_OUT, 1);
    ef_actor_count (self, EF_METRIC_BYTES_OUT, (int64_t) sizeof (s_local_t));
    return 0;
}

void *
ef_actor_local_take (ef_actor_t *self, int port, zmsg_t *msg,
                     void (**free_fn) (void *))
{
    int lane = s_lane (self, port);
    if (lane < 0 || self->ports[lane].def->dir != EF_PORT_IN || !msg
        || zmsg_size (msg) != 1)
        return NULL;
    const char *link = self->ports[lane].link;
    zframe_t *f = zmsg_first (msg);
    if (zframe_size (f) != sizeof (s_local_t))
        return NULL;
    if (!link || ef_config_link_crosses_hosts (self->config, link))
        return NULL;
    /* On a link within the process the frame is the sender's box itself
       (ZeroMQ passes it by reference), so its address is the box's. */
    s_local_t *box = (s_local_t *) zframe_data (f);
    if (box->magic != EF_LOCAL_MAGIC || !box->ptr)
        return NULL;
    void *ptr = box->ptr;
    box->ptr = NULL;
    if (free_fn)
        *free_fn = box->free_fn;
    return ptr;
}

int
ef_actor_try_recv (ef_actor_t *self, int port, zmsg_t **msg_p)
{
    assert (msg_p);
    port = s_lane (self, port);
    assert (port >= 0 && port < self->n_ports
            && self->ports[port].def->dir == EF_PORT_IN);
    *msg_p = NULL;
    zsock_t *sock = self->ports[port].socks[0];
    /* POLLIN promises a whole message (ZeroMQ delivers its frames
       together), so the read below does not block. */
    if (!(zsock_events (sock) & ZMQ_POLLIN))
        return 0;
    zmsg_t *msg = zmsg_recv (sock);
    if (!msg)
        return -1;
    self->last_input_us = ef_clock_mono_us ();
    ef_actor_count_message (self, true, msg);
    ef_gauge_add (self->ports[port].queued, -1);
    *msg_p = msg;
    return 1;
}

const char *
ef_actor_name (const ef_actor_t *self)
{
    return self->name;
}

int
ef_actor_index (const ef_actor_t *self)
{
    return self->index;
}

int
ef_actor_instances (const ef_actor_t *self)
{
    return self->instances;
}

const void *
ef_actor_options (const ef_actor_t *self)
{
    return ef_config_actor_options (self->config, self->def->name);
}

const void *
ef_actor_globals (const ef_actor_t *self)
{
    return ef_config_globals (self->config);
}

const ef_config_t *
ef_actor_config (const ef_actor_t *self)
{
    return self->config;
}

void *
ef_actor_state (const ef_actor_t *self)
{
    return self->state;
}

void
ef_actor_set_state (ef_actor_t *self, void *state)
{
    self->state = state;
}

int
ef_actor_port (const ef_actor_t *self, const char *name)
{
    int i = 0;
    for (const ef_port_def_t *p = self->def->ports; p && p->name; p++, i++)
        if (strcmp (p->name, name) == 0)
            return i;
    return -1;
}

int
ef_actor_port_width (const ef_actor_t *self, int port)
{
    port = s_lane (self, port);
    return port >= 0 ? self->ports[port].width : 0;
}

void
ef_actor_pause (ef_actor_t *self, int port, bool paused)
{
    port = s_lane (self, port);
    if (port < 0 || port >= self->n_ports
        || self->ports[port].def->dir != EF_PORT_IN
        || self->ports[port].paused == paused)
        return;
    self->ports[port].paused = paused;
    self->set_changed = true;
}

int
ef_actor_watch_fd (ef_actor_t *self, int fd, ef_actor_fd_fn *fn, void *arg)
{
    if (fd < 0 || !fn) {
        errno = EINVAL;
        return -1;
    }
    int slot = -1;
    for (int i = 0; i < EF_ACTOR_MAX_WATCHES; i++) {
        if (self->watches[i].fd == fd) {
            slot = i;
            break;
        }
        if (slot < 0 && self->watches[i].fd < 0)
            slot = i;
    }
    if (slot < 0) {
        errno = ENOSPC;
        return -1;
    }
    self->watches[slot] = (s_watch_t){fd, fn, arg};
    self->set_changed = true;
    return 0;
}

void
ef_actor_unwatch_fd (ef_actor_t *self, int fd)
{
    for (int i = 0; i < EF_ACTOR_MAX_WATCHES; i++)
        if (fd >= 0 && self->watches[i].fd == fd) {
            self->watches[i] = (s_watch_t){-1, NULL, NULL};
            self->set_changed = true;
        }
}

ef_wakeup_t *
ef_wakeup_new (void)
{
    ef_wakeup_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->fd < 0) {
        int err = errno;
        free (self);
        errno = err;
        return NULL;
    }
    return self;
}

void
ef_wakeup_destroy (ef_wakeup_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    close ((*self_p)->fd);
    free (*self_p);
    *self_p = NULL;
}

int
ef_wakeup_fd (const ef_wakeup_t *self)
{
    return self->fd;
}

void
ef_wakeup_signal (ef_wakeup_t *self)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is near its maximum: it is raised anyway */
    while (write (self->fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

bool
ef_wakeup_clear (ef_wakeup_t *self)
{
    uint64_t count = 0;
    ssize_t n;
    while ((n = read (self->fd, &count, sizeof count)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t) sizeof count && count > 0;
}

void
ef_actor_wake_in (ef_actor_t *self, int64_t ms)
{
    self->wake_at_us = ms < 0 ? -1 : ef_clock_mono_us () + ms * 1000;
}

void
ef_actor_fail (ef_actor_t *self, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->fail, sizeof self->fail, fmt, args);
    va_end (args);
}

int
ef_actor_report (ef_actor_t *self, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    *msg_p = NULL;
    if (!msg)
        return -1;
    if (zmsg_pushstr (msg, self->name) != 0
        || zmsg_pushstr (msg, "REPORT") != 0) {
        zmsg_destroy (&msg);
        return -1;
    }
    /* the runtime's first word from an instance must be READY or FAILED:
       what init reports goes after it */
    if (!self->ready) {
        if ((!self->early && !(self->early = zlist_new ()))
            || zlist_append (self->early, msg) != 0) {
            zmsg_destroy (&msg);
            return -1;
        }
        return 0;
    }
    if (zmsg_send (&msg, self->pipe) != 0) {
        zmsg_destroy (&msg);
        return -1;
    }
    return 0;
}

/* Marks READY or FAILED sent and sends the reports made before. */
static void
s_send_early (ef_actor_t *self)
{
    self->ready = true;
    zmsg_t *msg;
    while (self->early && (msg = zlist_pop (self->early)))
        if (zmsg_send (&msg, self->pipe) != 0)
            zmsg_destroy (&msg);
    zlist_destroy (&self->early);
}

void
ef_actor_drained (ef_actor_t *self)
{
    if (self->draining && !self->drained) {
        self->drained = true;
        zstr_send (self->pipe, "DRAINED");
    }
}

bool
ef_actor_stopping (const ef_actor_t *self)
{
    return *self->stop != 0;
}

const atomic_int *
ef_actor_stop_flag (const ef_actor_t *self)
{
    return self->stop;
}

/* Handles one command from the runtime. live: an instance is running
   (else a $DRAIN is only remembered, for the restarted instance). */
static void
s_command (ef_actor_t *self, bool live)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *cmd = zmsg_popstr (msg);
    if (!cmd)
        ef_warn ("empty command on the pipe");
    else if (strcmp (cmd, "$TERM") == 0)
        self->terminated = true;
    else if (strcmp (cmd, "$STOP") == 0)
        self->terminated = self->stop_asked = true;
    else if (strcmp (cmd, "$DRAIN") == 0 && !self->draining) {
        self->draining = true;
        self->last_input_us = ef_clock_mono_us ();
        if (live && self->def->drain)
            self->def->drain (self);
    }
    else if (strcmp (cmd, "$DRAIN") != 0)
        ef_warn ("unknown command '%s' ignored", cmd);
    free (cmd);
    zmsg_destroy (&msg); /* leftover frames never poison the next read */
}

/* Gives msg (taken) to handle. A handle that fails and leaves the
   message gives it back: it is kept for the restarted instance. Returns
   what handle returned. */
static int
s_deliver (ef_actor_t *self, int port, zmsg_t *msg)
{
    int rc = self->def->handle
                 ? self->def->handle (self, self->ports[port].def_port, &msg)
                 : 0;
    if (rc != 0 && msg) {
        zmsg_destroy (&self->pending);
        self->pending = msg;
        self->pending_port = port;
    }
    else
        zmsg_destroy (&msg);
    return rc;
}

/* Receives one message from the IN port sock and gives it to handle.
   Returns what handle returned (0 for anything else). */
static int
s_input (ef_actor_t *self, zsock_t *sock)
{
    int w, mon = s_find_monitor (self, sock, &w);
    if (mon >= 0) {
        s_monitor_event (&self->ports[mon], w);
        return 0;
    }
    int port = -1;
    for (int p = 0; p < self->n_ports; p++)
        if (self->ports[p].def->dir == EF_PORT_IN
            && self->ports[p].socks[0] == sock)
            port = p;
    /* The poller's word can be stale: when the peer whose message made
       the socket readable is gone by now (killed, its pipe torn down),
       a blocking read would wait for the next message from anyone, and
       the actor would stop turning (its ticks, its gRPC queue, $DRAIN).
       ZMQ_EVENTS is current: read only what is really there. */
    if (!(zsock_events (sock) & ZMQ_POLLIN))
        return 0;
    zmsg_t *msg = zmsg_recv (sock);
    if (!msg || port < 0) {
        zmsg_destroy (&msg);
        return 0;
    }
    self->last_input_us = ef_clock_mono_us ();
    ef_actor_count_message (self, true, msg);
    ef_gauge_add (self->ports[port].queued, -1);
    return s_deliver (self, port, msg);
}

/* Makes the instance's state and runs init. Returns 0, or -1 with
   self->fail set. */
static int
s_init_instance (ef_actor_t *self)
{
    self->wake_at_us = -1;
    if (self->def->state_size
        && !(self->state = calloc (1, self->def->state_size))) {
        snprintf (self->fail, sizeof self->fail, "out of memory");
        return -1;
    }
    self->inited = true;
    if (self->def->init && self->def->init (self) != 0) {
        if (!*self->fail)
            snprintf (self->fail, sizeof self->fail, "init failed");
        return -1;
    }
    return 0;
}

/* Runs destroy when init ran and frees the runtime's state. */
static void
s_destroy_instance (ef_actor_t *self)
{
    if (self->inited && self->def->destroy)
        self->def->destroy (self);
    self->inited = false;
    if (self->def->state_size)
        free (self->state);
    self->state = NULL;
    /* what it watched was its own, closed by its destroy */
    for (int i = 0; i < EF_ACTOR_MAX_WATCHES; i++)
        self->watches[i] = (s_watch_t){-1, NULL, NULL};
    self->set_changed = true;
}

/* Waits ms before a restart while answering the pipe: $DRAIN is
   remembered for the new instance, $TERM or a hard stop ends the wait.
   Returns 0 when the time passed, -1 when the actor must stop. */
static int
s_restart_wait (ef_actor_t *self, int64_t ms)
{
    int64_t until = ef_clock_mono_us () + ms * 1000;
    while (!self->terminated && !*self->stop) {
        int64_t left = (until - ef_clock_mono_us () + 999) / 1000;
        if (left <= 0)
            return 0;
        /* the hard-stop flag has no socket: look at it every 100 ms */
        zmq_pollitem_t item = {zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0};
        if (zmq_poll (&item, 1, left < 100 ? (long) left : 100) > 0)
            s_command (self, false);
    }
    return -1;
}

/* The instance failed (why, unless it said more with ef_actor_fail):
   destroys it and, as its policy allows, starts it again after a
   backoff, its sockets untouched, then hands it the message the failed
   handle gave back. A restart whose init fails or whose first message
   fails again counts as one more failure. Returns 0 with the instance
   running, -1 when it must stop: DIED went to the runtime (the policy
   refused a restart) or the process is stopping. */
static int
s_recover (ef_actor_t *self, const char *why)
{
    for (;;) {
        char reason[sizeof self->fail];
        snprintf (reason, sizeof reason, "%s", *self->fail ? self->fail : why);
        *self->fail = 0;
        s_destroy_instance (self);
        int64_t delay =
            ef_restarts_failed (&self->restarts, ef_clock_mono_us () / 1000);
        int count = ef_restarts_count (&self->restarts);
        const ef_restarts_t *r = &self->restarts;
        if (delay < 0) {
            char died[sizeof reason + 160];
            if (!r->restart)
                snprintf (died, sizeof died, "%s (restart: never)", reason);
            else
                snprintf (died, sizeof died,
                          "failed %d times within restart_window %lld ms "
                          "(max_restarts %d): %s",
                          count, (long long) r->window_ms, r->max_restarts,
                          reason);
            zstr_sendx (self->pipe, "DIED", died, NULL);
            return -1;
        }
        ef_counter_add (self->restart_counter, 1);
        ef_warn ("failed: %s; restarting in %lld ms (restart %d of at most %d "
                 "within restart_window %lld ms)",
                 reason, (long long) delay, count, r->max_restarts,
                 (long long) r->window_ms);
        if (s_restart_wait (self, delay) != 0)
            return -1;
        /* the new instance starts as the first did: reading every input */
        for (int p = 0; p < self->n_ports; p++)
            if (self->ports[p].def->dir == EF_PORT_IN
                && self->ports[p].paused) {
                self->ports[p].paused = false;
                self->set_changed = true;
            }
        if (s_init_instance (self) != 0) {
            why = "init failed";
            continue;
        }
        ef_info ("restarted%s",
                 self->pending ? ", handing it the message it failed on" : "");
        if (self->draining && self->def->drain)
            self->def->drain (self);
        if (!self->pending)
            return 0;
        zmsg_t *msg = self->pending;
        self->pending = NULL;
        if (s_deliver (self, self->pending_port, msg) == 0)
            return 0;
        why = "a message handler failed";
    }
}

/* Makes room for n poll entries. Returns 0, -1 out of memory. */
static int
s_items_reserve (ef_actor_t *self, int n)
{
    if (n <= self->cap_items)
        return 0;
    zmq_pollitem_t *items = realloc (self->items, (size_t) n * sizeof *items);
    if (!items)
        return -1;
    self->items = items;
    s_item_t *of = realloc (self->item_of, (size_t) n * sizeof *of);
    if (!of)
        return -1;
    self->item_of = of;
    self->cap_items = n;
    return 0;
}

/* Appends one entry to the poll set (room was reserved). */
static void
s_items_add (ef_actor_t *self, void *sock, int fd, s_item_t what)
{
    self->items[self->n_items] = (zmq_pollitem_t){sock, fd, ZMQ_POLLIN, 0};
    self->item_of[self->n_items++] = what;
}

/* Rebuilds the poll set: the pipe first (commands come before data),
   then the unpaused IN ports, the monitors and the watched descriptors.
   Returns 0, -1 out of memory. */
static int
s_items_rebuild (ef_actor_t *self)
{
    int n = 2 + EF_ACTOR_MAX_WATCHES;
    for (int p = 0; p < self->n_ports; p++)
        n += 1 + self->ports[p].width;
    if (s_items_reserve (self, n) != 0)
        return -1;
    self->n_items = 0;
    s_items_add (self, zsock_resolve (self->pipe), 0,
                 (s_item_t){S_ITEM_PIPE, 0, 0});
    if (self->control)
        s_items_add (self, NULL, ef_wakeup_fd (self->control->wake),
                     (s_item_t){S_ITEM_CONTROL, 0, 0});
    for (int p = 0; p < self->n_ports; p++)
        if (self->ports[p].def->dir == EF_PORT_IN && !self->ports[p].paused)
            s_items_add (self, zsock_resolve (self->ports[p].socks[0]), 0,
                         (s_item_t){S_ITEM_PORT, p, 0});
    for (int p = 0; p < self->n_ports; p++)
        for (int w = 0; self->ports[p].mons && w < self->ports[p].width; w++)
            if (self->ports[p].mons[w])
                s_items_add (self, zsock_resolve (self->ports[p].mons[w]), 0,
                             (s_item_t){S_ITEM_MONITOR, p, w});
    for (int i = 0; i < EF_ACTOR_MAX_WATCHES; i++)
        if (self->watches[i].fd >= 0)
            s_items_add (self, NULL, self->watches[i].fd,
                         (s_item_t){S_ITEM_WATCH, i, 0});
    self->set_changed = false;
    return 0;
}

/* Serves every entry zmq_poll found readable, in poll-set order. Stops
   early when a callback changed the set (its later entries may be gone:
   what is still readable shows again at the next poll) or the loop must
   end. Returns 0, or -1 with *why when a handler or a watch callback
   failed. */
static int
s_serve (ef_actor_t *self, const char **why)
{
    for (int i = 0; i < self->n_items && !self->terminated; i++) {
        if (!(self->items[i].revents & ZMQ_POLLIN))
            continue;
        s_item_t what = self->item_of[i];
        if (what.kind == S_ITEM_PIPE)
            s_command (self, true);
        else if (what.kind == S_ITEM_PORT) {
            if (s_input (self, self->ports[what.a].socks[0]) != 0) {
                *why = "a message handler failed";
                return -1;
            }
        }
        else if (what.kind == S_ITEM_MONITOR)
            s_monitor_event (&self->ports[what.a], what.b);
        else if (what.kind == S_ITEM_CONTROL)
            s_control_serve (self);
        else {
            s_watch_t w = self->watches[what.a];
            if (w.fd >= 0 && w.fn (self, w.fd, w.arg) != 0) {
                *why = "a watched descriptor's callback failed";
                return -1;
            }
        }
        if (self->set_changed)
            break;
    }
    return 0;
}

void
ef_actor_thread (zsock_t *pipe, void *args)
{
    ef_actor_t *self = args;
    self->pipe = pipe;
    ef_log_set_name (self->name);
    ef_actor_metrics_init (self);
    self->restart_counter = ef_metrics_counter (
        "embedflow_actor_restarts_total",
        "Times the instance failed and was started again.", self->name);
    zsock_signal (pipe, 0);

    if (s_open_ports (self) != 0) {
        if (!*self->fail)
            snprintf (self->fail, sizeof self->fail, "out of memory");
    }
    else
        s_init_instance (self);
    if (*self->fail) {
        zstr_sendx (pipe, "FAILED", self->fail, NULL);
        self->terminated = true;
    }
    else
        zstr_send (pipe, "READY");
    s_send_early (self);

    int64_t idle_us = ef_config_drain_idle_ms (self->config) * 1000;
    while (!self->terminated) {
        if (self->set_changed && s_items_rebuild (self) != 0) {
            zstr_sendx (pipe, "DIED", "out of memory", NULL);
            break;
        }
        int64_t now = ef_clock_mono_us ();
        int64_t timeout = -1;
        if (self->wake_at_us >= 0)
            timeout = self->wake_at_us > now
                          ? (self->wake_at_us - now + 999) / 1000
                          : 0;
        if (self->draining && !self->drained && !self->def->drain
            && (timeout < 0 || timeout > 50))
            timeout = 50;
        if (*self->stop && (timeout < 0 || timeout > 100))
            timeout = 100;
        int ready = zmq_poll (self->items, self->n_items, (long) timeout);
        if (ready < 0 && zmq_errno () == ETERM)
            break;
        const char *why = NULL;
        if (ready > 0 && s_serve (self, &why) != 0
            && s_recover (self, why) != 0)
            break;
        now = ef_clock_mono_us ();
        if (self->wake_at_us >= 0 && now >= self->wake_at_us) {
            self->wake_at_us = -1;
            if (self->def->tick && self->def->tick (self) != 0
                && s_recover (self, "tick failed") != 0)
                break;
        }
        if (self->draining && !self->drained && !self->def->drain
            && now - self->last_input_us >= idle_us)
            ef_actor_drained (self);
    }
    s_destroy_instance (self);
    s_close_ports (self);
    /* Asked to stop, it says so once destroy is done, so that the runtime
       reads what destroy reported before it collects the thread; a DIED
       actor answers $STOP the same way. Then it waits for $TERM. */
    if (self->stop_asked) {
        zstr_send (pipe, "STOPPED");
        self->terminated = false;
    }
    while (!self->terminated) {
        char *cmd = zstr_recv (pipe);
        if (!cmd || strcmp (cmd, "$TERM") == 0)
            self->terminated = true;
        else if (strcmp (cmd, "$STOP") == 0)
            zstr_send (pipe, "STOPPED");
        zstr_free (&cmd);
    }
}
