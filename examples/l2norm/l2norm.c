/*  l2norm.c — an out-of-tree actor: scales every vector of the row-batch
    stream to unit length (L2 norm 1), for cosine search by inner product.

    Built as a shared object and named in the configuration, it sits
    between the splitter and the writers without a change to either:

      plugins: [/usr/lib/embedflow/libl2norm.so]
      links:
        batches:    { to: l2norm.in }                       # was db-writer.batches
        normalized: { from: l2norm.out, to: db-writer.batches }

    Routing. Its `in` port is per instance, so the splitter routes each
    row to l2norm[ef_route (document_id, N)] as it would to a writer; each
    instance routes the rows it normalised to db-writer[ef_route
    (document_id, M)], the writer the splitter would have picked without
    the transform. Every document therefore takes one path and is written
    by one writer in arrival order, whatever N and M are; with N = M a
    batch passes whole, otherwise it is split by writer. Acknowledgements
    need nothing from it: rows carry their source (reply_to) and the
    writers answer it directly.

    A zero vector has no direction: it is passed on as it is (it is a
    valid row, and dead-lettering it would lose a row the client sent);
    `zero_vectors` counts them in the log when the actor stops.

    A message that is not a RowBatch cannot come from the splitter: it is
    logged and dropped (its rows were never acknowledged, so the upload
    does not claim them).
*/
#include <embedflow/actor.h>
#include <embedflow/log.h>
#include <embedflow/runtime.h>

#include "embedflow/v1/pipeline.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int port_in;           /* IN: row batches from the splitter */
    int port_out;          /* OUT: row batches, one socket per writer */
    uint64_t rows;         /* rows normalised */
    uint64_t zero_vectors; /* rows passed on as they were */
} s_self_t;

static int
s_init (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    self->port_in = ef_actor_port (actor, "in");
    self->port_out = ef_actor_port (actor, "out");
    if (self->port_in < 0 || self->port_out < 0) {
        ef_actor_fail (actor, "ports in and out are missing");
        return -1;
    }
    return 0;
}

/* Scales v[0..n) to unit length in place. Returns false (v unchanged)
   for a zero vector. The sum is taken in double: 768 squares of floats
   lose nothing that matters there. */
static bool
s_normalise (float *v, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double) v[i] * v[i];
    if (sum == 0)
        return false;
    double scale = 1 / sqrt (sum);
    for (size_t i = 0; i < n; i++)
        v[i] = (float) (v[i] * scale);
    return true;
}

/* Sends rows[0..n) of batch as one RowBatch to writer `to`. Returns 0,
   -1 when out of memory or stopping. */
static int
s_send (ef_actor_t *actor, s_self_t *self, uint64_t batch_id,
        Embedflow__V1__Row **rows, size_t n, int to)
{
    Embedflow__V1__RowBatch out = EMBEDFLOW__V1__ROW_BATCH__INIT;
    out.batch_id = batch_id;
    out.n_rows = n;
    out.rows = rows;
    zframe_t *frame =
        zframe_new (NULL, embedflow__v1__row_batch__get_packed_size (&out));
    zmsg_t *msg = frame ? zmsg_new () : NULL;
    if (!msg) {
        zframe_destroy (&frame);
        ef_error ("out of memory sending a batch");
        return -1;
    }
    embedflow__v1__row_batch__pack (&out, zframe_data (frame));
    zmsg_append (msg, &frame);
    return ef_actor_send (actor, self->port_out, to, &msg);
}

static int
s_handle (ef_actor_t *actor, int port, zmsg_t **msg_p)
{
    (void) port;
    s_self_t *self = ef_actor_state (actor);
    zframe_t *frame = zmsg_first (*msg_p);
    Embedflow__V1__RowBatch *batch =
        frame ? embedflow__v1__row_batch__unpack (NULL, zframe_size (frame),
                                                  zframe_data (frame))
              : NULL;
    if (!batch) {
        ef_warn ("a message that is not a RowBatch: dropped");
        return 0;
    }
    for (size_t i = 0; i < batch->n_rows; i++) {
        Embedflow__V1__Row *row = batch->rows[i];
        if (s_normalise (row->vector, row->n_vector))
            self->rows++;
        else
            self->zero_vectors++;
    }
    int writers = ef_actor_port_width (actor, self->port_out);
    int rc = 0;
    if (writers <= 1)
        rc = s_send (actor, self, batch->batch_id, batch->rows, batch->n_rows,
                     0);
    else {
        /* Rows for writer w, in their order in the batch. */
        Embedflow__V1__Row **part = calloc (batch->n_rows + 1, sizeof *part);
        if (!part) {
            ef_error ("out of memory splitting a batch");
            rc = -1;
        }
        for (int w = 0; part && rc == 0 && w < writers; w++) {
            size_t n = 0;
            for (size_t i = 0; i < batch->n_rows; i++)
                if (ef_route (batch->rows[i]->document_id, writers) == w)
                    part[n++] = batch->rows[i];
            if (n > 0)
                rc = s_send (actor, self, batch->batch_id, part, n, w);
        }
        free (part);
    }
    embedflow__v1__row_batch__free_unpacked (batch, NULL);
    return rc;
}

static void
s_destroy (ef_actor_t *actor)
{
    s_self_t *self = ef_actor_state (actor);
    ef_info ("%llu rows normalised, %llu zero vectors passed as they were",
             (unsigned long long) self->rows,
             (unsigned long long) self->zero_vectors);
}

static const ef_option_t s_options[] = {EF_OPTION_END};

static const ef_port_def_t s_ports[] = {
    {"in", EF_PORT_IN, "embedflow.v1.RowBatch", true, 4},
    {"out", EF_PORT_OUT, "embedflow.v1.RowBatch", false, 4},
    {NULL, EF_PORT_IN, NULL, false, 0},
};

static const ef_actor_def_t s_l2norm = {
    .name = "l2norm",
    .summary = "scales every vector to unit length (L2)",
    .options = s_options,
    .options_size = 0,
    .ports = s_ports,
    .flags = 0,
    .default_instances = 1,
    .state_size = sizeof (s_self_t),
    .init = s_init,
    .handle = s_handle,
    .destroy = s_destroy,
};

/* The entry point embedflow calls when it loads this object (plugins:). */
ef_plugin_register_fn ef_plugin_register;

int
ef_plugin_register (ef_registry_t *registry, char *err, size_t errlen)
{
    if (ef_registry_add (registry, &s_l2norm) != 0) {
        snprintf (err, errlen, "an actor named %s is registered already",
                  s_l2norm.name);
        return -1;
    }
    return 0;
}
