/*  linkstate.c — how the tcp links of this process fare (linkstate.h). */
#include "embedflow/linkstate.h"

#include "embedflow/log.h"
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
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
    if (!up)
        ef_warn ("links.%s: the peer of %s went away; what it had not "
                 "settled will be sent again when it is back",
                 link, endpoint ? endpoint : "?");
    else if (outgoing)
        ef_info ("links.%s: connected to %s", link, endpoint ? endpoint : "?");
}

void
ef_links_state (ef_links_state_t *out)
{
    pthread_mutex_lock (&s_lock);
    *out = s_state;
    pthread_mutex_unlock (&s_lock);
}
