/*  HOST:PORT splitting: what every listener, peer and link end shares. */
#include "ef_test.h"

#include "embedflow/address.h"

#include <string.h>

EF_TEST (address_split)
{
    char host[64], port[8];
    EF_CHECK (ef_address_split ("127.0.0.1:50051", host, sizeof host, port,
                                sizeof port)
              == 0);
    EF_CHECK (strcmp (host, "127.0.0.1") == 0 && strcmp (port, "50051") == 0);
    EF_CHECK (
        ef_address_split ("[::1]:9464", host, sizeof host, port, sizeof port)
        == 0);
    EF_CHECK (strcmp (host, "::1") == 0 && strcmp (port, "9464") == 0);
    EF_CHECK (ef_address_split ("*:80", host, sizeof host, port, sizeof port)
              == 0);
    EF_CHECK (host[0] == 0 && strcmp (port, "80") == 0);
    EF_CHECK (ef_address_split (":80", host, sizeof host, port, sizeof port)
              == 0);
    EF_CHECK (host[0] == 0);
    /* malformed: no port, a port that is not digits, unbracketed v6 */
    const char *bad[] = {"localhost", "host:",          "host:http",
                         "::1:80",    "host:123456789", NULL};
    for (int i = 0; bad[i]; i++)
        EF_CHECK (
            ef_address_split (bad[i], host, sizeof host, port, sizeof port)
            == -1);
    EF_CHECK (ef_address_split (NULL, host, sizeof host, port, sizeof port)
              == -1);
    /* a host that does not fit */
    char small[4];
    EF_CHECK (ef_address_split ("example.org:1", small, sizeof small, port,
                                sizeof port)
              == -1);
}
