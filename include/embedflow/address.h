/*  address.h — HOST:PORT, the one way every part of embedflow reads it.

    Listen addresses, metrics endpoints, the peers `check` reaches and
    the hosts of tcp:// link endpoints are all "HOST:PORT" or
    "[V6]:PORT"; one function splits them so they agree on what is
    well-formed.
*/
#ifndef EF_ADDRESS_H
#define EF_ADDRESS_H

#include <stddef.h>

#include "embedflow/export.h"

EF_API_BEGIN

/* Splits "HOST:PORT" or "[V6]:PORT" into host (brackets removed) and
   port (digits only). An empty host or "*" gives "" (every address).
   Returns 0; -1 when address is not that shape (no port, a port that is
   not digits, an unbracketed IPv6 address, which is ambiguous) or a part
   does not fit its buffer. */
int ef_address_split (const char *address, char *host, size_t hostlen,
                      char *port, size_t portlen);

EF_API_END

#endif
