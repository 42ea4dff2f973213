/*  pullserver.h — a built-in GetEmbeddings server for `embedflow bench`:
    the pull side of the load generator.

    It serves the load generator's synthetic rows (testkit/loadgen.h: the same
    options give the same bytes) to any GetEmbeddings call: rows
    [resume_token, rows) in chunks of RequestParams.chunk_size rows (0 =
    256, never more than ~4 MB a message), each chunk's resume_token the
    decimal number of the next row. A malformed request, a resume_token
    that is not a row number in [0, rows], or a filter gets
    INVALID_ARGUMENT.

    The server runs on its own thread with its own completion queue. It
    sends one message at a time and the next only when the previous one
    has been taken by the transport, so a slow reader holds it back
    through HTTP/2 flow control. The next chunk is encoded while the
    current one is on the wire.
*/
#ifndef EF_PULLSERVER_H
#define EF_PULLSERVER_H

#include "testkit/loadgen.h"

#include <stddef.h>
#include <stdint.h>

typedef struct _ef_pullserver_t ef_pullserver_t;

/* What a server has done so far; counters only grow. */
typedef struct {
    uint64_t calls;        /* GetEmbeddings calls accepted */
    uint64_t refused;      /* of them, answered INVALID_ARGUMENT */
    uint64_t completed;    /* of them, answered with status OK */
    uint64_t chunks_sent;  /* messages taken by the transport */
    uint64_t rows_sent;    /* rows in them */
    uint64_t bytes_sent;   /* bytes in them */
    double encode_seconds; /* time spent encoding chunks */
} ef_pullserver_stats_t;

/* Starts a server of data's rows (rows, dim, rows_per_document, seed are
   used; data is copied, data->source and target are not kept) listening
   on listen ("127.0.0.1:0" picks a free port). Returns the server, or
   NULL with err when it cannot listen or start its thread. */
ef_pullserver_t *ef_pullserver_new (const ef_loadgen_opts_t *data,
                                    const char *listen, char *err,
                                    size_t errlen);

/* Stops the server: refuses new calls, cancels those still open, waits
   for every completion, frees everything and NULLs *self_p. Safe on
   NULL. */
void ef_pullserver_destroy (ef_pullserver_t **self_p);

/* The port the server listens on. */
int ef_pullserver_port (const ef_pullserver_t *self);

/* Copies the server's counters into out; safe from any thread. */
void ef_pullserver_stats (const ef_pullserver_t *self,
                          ef_pullserver_stats_t *out);

#endif
