/*  address.c — splitting HOST:PORT. */
#include "embedflow/address.h"

#include <stdio.h>
#include <string.h>

int
ef_address_split (const char *address, char *host, size_t hostlen, char *port,
                  size_t portlen)
{
    const char *colon = address ? strrchr (address, ':') : NULL;
    if (!colon || !colon[1] || strlen (colon + 1) >= portlen
        || strspn (colon + 1, "0123456789") != strlen (colon + 1))
        return -1;
    const char *h = address;
    size_t n = (size_t) (colon - address);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    else if (memchr (h, ':', n))
        return -1;
    if (n >= hostlen)
        return -1;
    memcpy (host, h, n);
    host[n] = 0;
    if (strcmp (host, "*") == 0)
        host[0] = 0;
    snprintf (port, portlen, "%s", colon + 1);
    return 0;
}
