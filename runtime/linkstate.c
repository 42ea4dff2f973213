/*  linkstate.c — who is connected to each tcp link end of this process.

    Every tcp socket an actor opens registers one link end per endpoint
    (the address it binds, or each address it connects to). Its socket
    monitor reports connections made and lost; the count is exported as
    embedflow_link_peers{link,endpoint}, a warning is logged when the last
    peer goes and when one comes back, and ef_links_unready tells /readyz
    which ends have had no peer for longer than links.NAME.peer_timeout.
    Besides, the process-wide state of linkstate.h (churn, peerless
    connections, the address that last lost its peer) that the receiver's
    re-sending watches; the log lines are the per-address ones.
    The count is of transport connections: a peer that fails the CURVE
    handshake counts only until it is refused (at once for a wrong key or
    no CURVE; a peer that says nothing is dropped by the handshake
    timeout).
*/
#include "internal.h"

#include "embedflow/linkstate.h"
#include "embedflow/log.h"
#include "embedflow/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct ef_link_end {
    char link[64];       /* the link's name */
    char endpoint[256];  /* bound or connected address */
    bool bind;           /* this end binds */
    int64_t timeout_ms;  /* peer_timeout; 0 = readiness ignores it */
    int peers;           /* connections now */
    bool ever;           /* had a peer since it opened */
    int64_t since_us;    /* monotonic: opened, or last peer gone */
    ef_gauge_t *gauge;   /* embedflow_link_peers{link,endpoint} */
    ef_link_end_t *next; /* in s_ends */
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static ef_link_end_t *s_ends; /* every open end of the process */

ef_link_end_t *
ef_link_end_new (const char *link, const char *endpoint, bool bind,
                 int64_t timeout_ms)
{
    ef_link_end_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    snprintf (self->link, sizeof self->link, "%s", link);
    snprintf (self->endpoint, sizeof self->endpoint, "%s", endpoint);
    self->bind = bind;
    self->timeout_ms = timeout_ms;
    self->since_us = ef_clock_mono_us ();
    self->gauge = ef_metrics_gauge_labeled (
        "embedflow_link_peers",
        "connections on a tcp link end of this process: peers connected to "
        "an address it binds, or 1 while its connection to a peer's address "
        "is up",
        (const char *const[]){"link", link, "endpoint", endpoint, NULL});
    ef_gauge_set (self->gauge, 0);
    pthread_mutex_lock (&s_lock);
    self->next = s_ends;
    s_ends = self;
    pthread_mutex_unlock (&s_lock);
    return self;
}

void
ef_link_end_destroy (ef_link_end_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_link_end_t *self = *self_p;
    pthread_mutex_lock (&s_lock);
    for (ef_link_end_t **p = &s_ends; *p; p = &(*p)->next)
        if (*p == self) {
            *p = self->next;
            break;
        }
    pthread_mutex_unlock (&s_lock);
    ef_gauge_set (self->gauge, 0);
    free (self);
    *self_p = NULL;
}

const char *
ef_link_end_endpoint (const ef_link_end_t *self)
{
    return self->endpoint;
}

void
ef_link_end_event (ef_link_end_t *self, int delta)
{
    pthread_mutex_lock (&s_lock);
    int before = self->peers;
    self->peers += delta;
    if (self->peers < 0)
        self->peers = 0;
    int now = self->peers;
    int64_t t = ef_clock_mono_us ();
    double away = (double) (t - self->since_us) / 1e6;
    bool again = self->ever;
    if (now == 0 && before > 0)
        self->since_us = t;
    if (now > 0)
        self->ever = true;
    pthread_mutex_unlock (&s_lock);
    ef_gauge_set (self->gauge, now);
    if (before > 0 && now == 0)
        ef_warn (self->bind ? "links.%s: the last peer connected to %s is gone"
                            : "links.%s: lost the connection to %s",
                 self->link, self->endpoint);
    else if (before == 0 && now > 0 && again)
        ef_warn (self->bind ? "links.%s: a peer is connected to %s again, "
                              "after %.1f s without one"
                            : "links.%s: connected to %s again, after %.1f s",
                 self->link, self->endpoint, away);
    else if (before == 0 && now > 0)
        ef_debug ("links.%s: %s %s", self->link,
                  self->bind ? "a first peer connected to" : "connected to",
                  self->endpoint);
}

int
ef_links_unready (char *why, size_t len)
{
    int n = 0;
    size_t used = 0;
    if (len)
        why[0] = 0;
    int64_t now = ef_clock_mono_us ();
    pthread_mutex_lock (&s_lock);
    for (const ef_link_end_t *e = s_ends; e; e = e->next) {
        if (e->peers > 0 || e->timeout_ms <= 0
            || now - e->since_us < e->timeout_ms * 1000)
            continue;
        n++;
        if (used < len) {
            int w = snprintf (why + used, len - used,
                              "links.%s: no peer %s %s for %.0f s "
                              "(peer_timeout %.0f s)\n",
                              e->link, e->bind ? "connected to" : "at",
                              e->endpoint, (double) (now - e->since_us) / 1e6,
                              (double) e->timeout_ms / 1e3);
            used += w > 0 ? (size_t) w : 0;
        }
    }
    pthread_mutex_unlock (&s_lock);
    return n;
}

/* --- the process-wide state (linkstate.h) ------------------------------ */

static ef_links_state_t s_state; /* guarded by s_lock */

void
ef_links_expect (void)
{
    pthread_mutex_lock (&s_lock);
    s_state.down++;
    pthread_mutex_unlock (&s_lock);
}

void
ef_links_peer_event (const char *link, const char *endpoint, bool outgoing,
                     bool up)
{
    pthread_mutex_lock (&s_lock);
    s_state.churn++;
    if (outgoing)
        s_state.down += up ? -1 : 1;
    if (s_state.down < 0)
        s_state.down = 0; /* a peer's second connection, say */
    /* name a connection this process makes first: that is the peer to
       bring back; an accepted one that went is only named when no such
       connection went before */
    if (!up && (outgoing || !s_state.lost[0]))
        snprintf (s_state.lost, sizeof s_state.lost, "links.%s %s", link,
                  endpoint ? endpoint : "?");
    pthread_mutex_unlock (&s_lock);
}

void
ef_links_state (ef_links_state_t *out)
{
    pthread_mutex_lock (&s_lock);
    *out = s_state;
    pthread_mutex_unlock (&s_lock);
}
