/*  curve.c — the ZAP handler: who may connect to the links this process
    binds with CURVE.

    libzmq asks the handler on inproc://zeromq.zap.01 about every CURVE
    client of every socket in the process (RFC 27). czmq's zauth answers
    the same questions from the same kind of directory, but says neither
    which socket nor which peer it refused; here every bound socket's ZAP
    domain is its link's name, so a refusal is counted per link and the
    log names the link, the peer's address and the key it offered. The
    allow-list is a czmq zcertstore on curve.clients: files added to or
    removed from the directory count from the next connection on.
*/
#include "internal.h"

#include "embedflow/log.h"
#include "embedflow/metrics.h"

#include <stdlib.h>
#include <string.h>

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"
/* A link's refusals are logged once per peer address, and at most every
   this often while the same peer keeps trying. */
#define S_LOG_EVERY_US (10 * 1000000)
#define S_MAX_DOMAINS  64

typedef struct {
    char link[64];     /* ZAP domain: the link's name */
    char address[64];  /* peer last logged */
    int64_t logged_us; /* when, monotonic */
    uint64_t quiet;    /* refusals not logged since */
} s_domain_t;

struct ef_zap {
    zsock_t *handler;                  /* REP on the ZAP endpoint */
    zcertstore_t *store;               /* the allow-list */
    char own[41];                      /* this process's public key */
    zactor_t *thread;                  /* runs s_zap_actor */
    s_domain_t domains[S_MAX_DOMAINS]; /* log state per link */
    size_t n_domains;                  /* used entries */
};

/* Counts and logs one refused peer of link, rate-limited per link. */
static void
s_refused (ef_zap_t *self, const char *link, const char *address,
           const char *key)
{
    ef_link_count_rejected (link, "key", 1);
    s_domain_t *d = NULL;
    for (size_t i = 0; i < self->n_domains && !d; i++)
        if (strcmp (self->domains[i].link, link) == 0)
            d = &self->domains[i];
    if (!d && self->n_domains < S_MAX_DOMAINS) {
        d = &self->domains[self->n_domains++];
        snprintf (d->link, sizeof d->link, "%s", link);
    }
    int64_t now = ef_clock_mono_us ();
    if (d && strcmp (d->address, address) == 0 && d->logged_us
        && now - d->logged_us < S_LOG_EVERY_US) {
        d->quiet++;
        return;
    }
    char more[64] = "";
    if (d && d->quiet)
        snprintf (more, sizeof more, " (and %llu refusals not logged)",
                  (unsigned long long) d->quiet);
    ef_warn ("links.%s: refused the peer at %s: its key %s is not in "
             "curve.clients%s",
             link, address, key, more);
    if (d) {
        snprintf (d->address, sizeof d->address, "%s", address);
        d->logged_us = now;
        d->quiet = 0;
    }
}

/* Answers one ZAP request: CURVE clients whose key is in the store pass,
   everything else is refused. A malformed request gets a 400 too. */
static void
s_answer (ef_zap_t *self)
{
    zmsg_t *req = zmsg_recv (self->handler);
    if (!req)
        return;
    char *version = zmsg_popstr (req);
    char *sequence = zmsg_popstr (req);
    char *domain = zmsg_popstr (req);
    char *address = zmsg_popstr (req);
    char *identity = zmsg_popstr (req);
    char *mechanism = zmsg_popstr (req);
    zframe_t *key = zmsg_pop (req);
    bool ok = false;
    char key_txt[41] = "(none)";
    if (version && strcmp (version, "1.0") == 0 && mechanism
        && strcmp (mechanism, "CURVE") == 0 && key && zframe_size (key) == 32
        && zmq_z85_encode (key_txt, zframe_data (key), 32))
        ok = strcmp (key_txt, self->own) == 0
             || zcertstore_lookup (self->store, key_txt) != NULL;
    if (!ok)
        s_refused (self, domain && *domain ? domain : "?",
                   address ? address : "?", key_txt);
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, "1.0");
    zmsg_addstr (reply, sequence ? sequence : "");
    zmsg_addstr (reply, ok ? "200" : "400");
    zmsg_addstr (reply, ok ? "OK" : "key not allowed");
    zmsg_addstr (reply, ok ? key_txt : "");
    zmsg_addmem (reply, NULL, 0); /* no metadata */
    zmsg_send (&reply, self->handler);
    zframe_destroy (&key);
    free (version);
    free (sequence);
    free (domain);
    free (address);
    free (identity);
    free (mechanism);
    zmsg_destroy (&req);
}

/* The handler's thread: answers requests until $TERM. */
static void
s_zap_actor (zsock_t *pipe, void *args)
{
    ef_zap_t *self = args;
    ef_log_set_name ("zap");
    zpoller_t *poller = zpoller_new (pipe, self->handler, NULL);
    zsock_signal (pipe, 0);
    while (poller) {
        void *which = zpoller_wait (poller, -1);
        if (which == self->handler)
            s_answer (self);
        else if (which == pipe) {
            char *cmd = zstr_recv (pipe);
            bool term = !cmd || strcmp (cmd, "$TERM") == 0;
            zstr_free (&cmd);
            if (term)
                break;
        }
        else if (zpoller_terminated (poller))
            break;
    }
    zpoller_destroy (&poller);
}

ef_zap_t *
ef_zap_new (const char *clients, zcert_t *own, char *err, size_t errlen)
{
    ef_zap_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    snprintf (self->own, sizeof self->own, "%s", zcert_public_txt (own));
    self->handler = zsock_new (ZMQ_REP);
    self->store = zcertstore_new (clients);
    if (!self->handler || !self->store) {
        snprintf (err, errlen, "out of memory");
        ef_zap_destroy (&self);
        return NULL;
    }
    /* Binding here, not in the thread, so a failure is reported. */
    if (zsock_bind (self->handler, S_ZAP_ENDPOINT) != 0) {
        snprintf (err, errlen, "cannot start the CURVE authenticator: %s",
                  zmq_strerror (zmq_errno ()));
        ef_zap_destroy (&self);
        return NULL;
    }
    self->thread = zactor_new (s_zap_actor, self);
    if (!self->thread) {
        snprintf (err, errlen, "cannot start a thread");
        ef_zap_destroy (&self);
        return NULL;
    }
    return self;
}

void
ef_zap_destroy (ef_zap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_zap_t *self = *self_p;
    zactor_destroy (&self->thread);
    zsock_destroy (&self->handler);
    zcertstore_destroy (&self->store);
    free (self);
    *self_p = NULL;
}

void
ef_link_count_rejected (const char *link, const char *reason, uint64_t n)
{
    ef_counter_add (
        ef_metrics_counter_labeled (
            "embedflow_link_rejected_peers_total",
            "peers refused on a link this process binds: reason key (CURVE "
            "key not in curve.clients) or handshake (failed the handshake)",
            (const char *const[]){"link", link, "reason", reason, NULL}),
        n);
}
