/*  linkstate.h — how the tcp links of this process fare.

    ZeroMQ reconnects by itself, but what was queued for a peer that went
    away, or was inside it, is gone. Actors that must not lose work (the
    gRPC receiver keeps what it sent until it is settled) watch this
    state: a change of `churn` means some peer went or came, so anything
    unsettled may have been lost and should be sent again; `down` says
    whether a connection this process makes has no peer right now.
*/
#ifndef EF_LINKSTATE_H
#define EF_LINKSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "embedflow/export.h"

EF_API_BEGIN

typedef struct {
    uint64_t churn; /* peers that went or came, since start */
    int down;       /* tcp connections this process makes, peerless now */
    char lost[192]; /* "links.NAME ENDPOINT" that last lost its peer */
} ef_links_state_t;

/* The state now. Never fails. */
void ef_links_state (ef_links_state_t *out);

EF_API_END

#endif
