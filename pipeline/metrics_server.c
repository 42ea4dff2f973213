/*  metrics_server.c — /metrics, /healthz and /readyz over libmicrohttpd
    (see metrics_server.h).
*/
#include "pipeline/metrics_server.h"

#include "embedflow/address.h"
#include "embedflow/log.h"

#include "embedflow/actor.h"
#include "embedflow/runtime.h"
#include "embedflow/metrics.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_READY_CACHE_US 1000000 /* how long a readiness answer holds */

struct ef_metrics_server {
    struct MHD_Daemon *daemon; /* the HTTP server */
    int port;                  /* bound port */
    char *database;            /* conninfo to probe, owned */
    bool need_listener;        /* a gRPC receiver runs here */
    atomic_bool started;       /* every actor started */
    pthread_mutex_t lock;      /* guards the cached answer */
    int64_t checked_us;        /* when it was made, 0 = never */
    bool ready;                /* the cached answer */
    char why[1024];            /* what is not ready */
    bool loopback;             /* bound to a loopback address */
    pthread_mutex_t control;   /* held while a command runs; guards rt */
    ef_runtime_t *rt;          /* commands go to it; NULL = not running */
    char *token;               /* control_token, owned; NULL = none */
};

/* Refreshes the cached readiness when it is older than the cache time. */
static void
s_check (ef_metrics_server_t *self, bool *ready, char *why, size_t whylen)
{
    pthread_mutex_lock (&self->lock);
    int64_t now = ef_clock_mono_us ();
    if (self->checked_us == 0 || now - self->checked_us >= S_READY_CACHE_US) {
        /* PQping opens no session: it only asks whether the server would
           accept one */
        PGPing ping = PQping (self->database);
        /* the receiver raises embedflow_actor_listening once its port is
           bound and lowers it when it stops accepting (drain) */
        bool grpc = !self->need_listener
                    || ef_metrics_gauge_sum ("embedflow_actor_listening") > 0;
        bool started = atomic_load (&self->started);
        /* a tcp link end with no peer for longer than its peer_timeout:
           work for (or from) the host behind it cannot flow */
        char links[768];
        bool linked = ef_links_unready (links, sizeof links) == 0;
        self->ready = ping == PQPING_OK && grpc && started && linked;
        snprintf (self->why, sizeof self->why, "%s%s%s%s",
                  started ? "" : "starting\n",
                  ping == PQPING_OK ? "" : "database not reachable\n",
                  grpc ? "" : "gRPC receiver not listening\n", links);
        self->checked_us = ef_clock_mono_us ();
    }
    *ready = self->ready;
    snprintf (why, whylen, "%s", self->why);
    pthread_mutex_unlock (&self->lock);
}

/* Queues a text response (copied). */
static enum MHD_Result
s_reply (struct MHD_Connection *conn, unsigned status, const char *type,
         const char *text, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer (
        len, (void *) text, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header (resp, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response (conn, status, resp);
    MHD_destroy_response (resp);
    return rc;
}

/* True when the request's "Authorization: Bearer T" names the token
   (compared in constant time, so its bytes cannot be guessed one by one
   from response times). */
static bool
s_token_ok (struct MHD_Connection *conn, const char *token)
{
    const char *auth =
        MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncmp (auth, "Bearer ", 7) != 0)
        return false;
    const char *given = auth + 7;
    size_t n = strlen (token), m = strlen (given);
    unsigned char diff = n != m;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char) token[i] ^ (unsigned char) given[i < m ? i : 0];
    return diff == 0;
}

/* Answers /control/...: checks who may, maps the path to a command of
   an actor and its result to a status (see metrics_server.h). */
static enum MHD_Result
s_control (ef_metrics_server_t *self, struct MHD_Connection *conn,
           const char *url, const char *method)
{
    const char *type = "text/plain; charset=utf-8";
    char text[640];
    if (!self->token && !self->loopback) {
        const char *no = "control is off: the endpoint is not on loopback "
                         "and no control_token is set\n";
        return s_reply (conn, MHD_HTTP_FORBIDDEN, type, no, strlen (no));
    }
    if (self->token && !s_token_ok (conn, self->token)) {
        const char *no = "missing or wrong bearer token\n";
        struct MHD_Response *resp = MHD_create_response_from_buffer (
            strlen (no), (void *) no, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header (resp, "Content-Type", type);
        MHD_add_response_header (resp, "WWW-Authenticate", "Bearer");
        enum MHD_Result rc =
            MHD_queue_response (conn, MHD_HTTP_UNAUTHORIZED, resp);
        MHD_destroy_response (resp);
        return rc;
    }
    const char *actor = NULL, *verb = NULL;
    char job[256] = "";
    bool get = strcmp (method, "GET") == 0 || strcmp (method, "HEAD") == 0;
    const char *rest = url + strlen ("/control/");
    if (strcmp (rest, "status") == 0)
        actor = "grpc-receiver", verb = "status";
    else if (strcmp (rest, "pause") == 0 || strcmp (rest, "resume") == 0)
        actor = "grpc-receiver", verb = rest;
    else if (strncmp (rest, "jobs/", 5) == 0) {
        const char *slash = strrchr (rest + 5, '/');
        size_t n = slash ? (size_t) (slash - (rest + 5)) : 0;
        if (slash && n > 0 && n < sizeof job
            && (strcmp (slash, "/run") == 0 || strcmp (slash, "/stop") == 0)) {
            memcpy (job, rest + 5, n);
            job[n] = 0;
            bool run = strcmp (slash, "/run") == 0;
            actor = run ? "scheduler" : "grpc-puller";
            verb = run ? "run" : "stop";
        }
    }
    if (!actor) {
        snprintf (text, sizeof text,
                  "not found: GET /control/status; POST /control/pause, "
                  "/control/resume, /control/jobs/NAME/run, "
                  "/control/jobs/NAME/stop\n");
        return s_reply (conn, MHD_HTTP_NOT_FOUND, type, text, strlen (text));
    }
    if (get != (strcmp (verb, "status") == 0)) {
        snprintf (text, sizeof text, "%s only\n", get ? "POST" : "GET");
        return s_reply (conn, MHD_HTTP_METHOD_NOT_ALLOWED, type, text,
                        strlen (text));
    }
    char reply[512];
    int rc = -2;
    pthread_mutex_lock (&self->control);
    if (self->rt)
        rc = ef_runtime_control (self->rt, actor, verb, job, reply,
                                 sizeof reply);
    else
        snprintf (reply, sizeof reply,
                  "the pipeline is not running (starting or stopping)");
    pthread_mutex_unlock (&self->control);
    unsigned status = rc == 0    ? MHD_HTTP_OK
                      : rc == 1  ? MHD_HTTP_NOT_FOUND
                      : rc == -1 ? MHD_HTTP_CONFLICT
                      : rc == -3 ? MHD_HTTP_GATEWAY_TIMEOUT
                                 : MHD_HTTP_SERVICE_UNAVAILABLE;
    if (rc == 0 && strcmp (verb, "status") == 0)
        snprintf (text, sizeof text, "ingest: %s\n", reply);
    else
        snprintf (text, sizeof text, "%s\n", reply);
    if (rc != 0 || strcmp (verb, "status") != 0)
        ef_info ("control: %s %s: %s", method, url, reply);
    return s_reply (conn, status, type, text, strlen (text));
}

/* Answers one request. */
static enum MHD_Result
s_request (void *cls, struct MHD_Connection *conn, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **req_cls)
{
    (void) version;
    (void) upload_data;
    ef_metrics_server_t *self = cls;
    if (!*req_cls) { /* the first call only announces the request */
        *req_cls = (void *) 1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    const char *text_type = "text/plain; charset=utf-8";
    if (strncmp (url, "/control/", 9) == 0)
        return s_control (self, conn, url, method);
    if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
        return s_reply (conn, MHD_HTTP_METHOD_NOT_ALLOWED, text_type,
                        "GET only\n", 9);
    if (strcmp (url, "/metrics") == 0) {
        size_t len;
        char *text = ef_metrics_render (&len);
        if (!text)
            return s_reply (conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text_type,
                            "out of memory\n", 14);
        enum MHD_Result rc =
            s_reply (conn, MHD_HTTP_OK, "text/plain; version=0.0.4", text, len);
        free (text);
        return rc;
    }
    if (strcmp (url, "/healthz") == 0)
        return s_reply (conn, MHD_HTTP_OK, text_type, "ok\n", 3);
    if (strcmp (url, "/readyz") == 0) {
        bool ready;
        char why[1024];
        s_check (self, &ready, why, sizeof why);
        if (ready)
            return s_reply (conn, MHD_HTTP_OK, text_type, "ready\n", 6);
        return s_reply (conn, MHD_HTTP_SERVICE_UNAVAILABLE, text_type, why,
                        strlen (why));
    }
    return s_reply (conn, MHD_HTTP_NOT_FOUND, text_type,
                    "not found: /metrics, /healthz, /readyz\n", 39);
}

ef_metrics_server_t *
ef_metrics_server_new (const char *address, const char *database,
                       bool need_listener, char *err, size_t errlen)
{
    char host[256], port[16];
    if (!address
        || ef_address_split (address, host, sizeof host, port, sizeof port)) {
        snprintf (err, errlen, "metrics: '%s' is not HOST:PORT",
                  address ? address : "");
        return NULL;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo (host[0] ? host : NULL, port, &hints, &ai);
    if (gai != 0) {
        snprintf (err, errlen, "metrics: cannot resolve '%s': %s", address,
                  gai_strerror (gai));
        return NULL;
    }
    ef_metrics_server_t *self = calloc (1, sizeof *self);
    if (!self) {
        freeaddrinfo (ai);
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init (&self->lock, NULL);
    pthread_mutex_init (&self->control, NULL);
    if (ai->ai_family == AF_INET)
        self->loopback =
            (ntohl (((struct sockaddr_in *) ai->ai_addr)->sin_addr.s_addr)
             >> 24)
            == 127;
    else if (ai->ai_family == AF_INET6)
        self->loopback = IN6_IS_ADDR_LOOPBACK (
            &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr);
    self->database = strdup (database ? database : "");
    self->need_listener = need_listener;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    self->daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_request, self,
                                     MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                     MHD_OPTION_CONNECTION_TIMEOUT,
                                     (unsigned) 10, MHD_OPTION_END);
    freeaddrinfo (ai);
    if (!self->daemon || !self->database) {
        snprintf (err, errlen, "metrics: cannot listen on %s", address);
        ef_metrics_server_destroy (&self);
        return NULL;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info (self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : atoi (port);
    return self;
}

void
ef_metrics_server_started (ef_metrics_server_t *self, bool started)
{
    if (!self)
        return;
    atomic_store (&self->started, started);
    pthread_mutex_lock (&self->lock);
    self->checked_us = 0; /* answer from the new state at once */
    pthread_mutex_unlock (&self->lock);
}

int
ef_metrics_server_control (ef_metrics_server_t *self, ef_runtime_t *rt,
                           const char *token)
{
    if (!self)
        return 0;
    char *copy = token && *token ? strdup (token) : NULL;
    if (token && *token && !copy)
        return -1;
    pthread_mutex_lock (&self->control); /* waits for a command running */
    self->rt = rt;
    free (self->token);
    self->token = copy;
    pthread_mutex_unlock (&self->control);
    return 0;
}

void
ef_metrics_server_destroy (ef_metrics_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_metrics_server_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon (self->daemon);
    pthread_mutex_destroy (&self->lock);
    pthread_mutex_destroy (&self->control);
    free (self->token);
    free (self->database);
    free (self);
    *self_p = NULL;
}

int
ef_metrics_server_port (const ef_metrics_server_t *self)
{
    return self->port;
}

void
ef_metrics_server_linger (ef_metrics_server_t *self)
{
    fflush (stdout);
    ef_info ("done; serving metrics on port %d until SIGINT or SIGTERM",
             self ? ef_metrics_server_port (self) : 0);
    /* both are blocked in every thread (ef_signals_init): sigwait takes
       the next one */
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGINT);
    sigaddset (&set, SIGTERM);
    int sig;
    sigwait (&set, &sig);
}
