/*  cqpump.h — a gRPC completion queue handed to an actor without polling.

    gRPC moves bytes only while some thread waits in
    grpc_completion_queue_next. A pump is that thread: it waits in next()
    with no deadline and queues every event it gets; an eventfd is
    readable exactly while events wait, so the actor that owns the queue
    watches it (ef_actor_watch_fd) and takes the events on its own
    thread, where all its call state lives. An idle actor and an idle
    queue then cost nothing, and whatever the actor does on its thread
    (SQL, a blocking send) no longer stops gRPC's I/O.

    The events a queue can hold are bounded by the operations posted on
    it, so the pump's queue is too.
*/
#ifndef EF_CQPUMP_H
#define EF_CQPUMP_H

#include <grpc/grpc.h>
#include <stdint.h>

typedef struct ef_cq_pump ef_cq_pump_t;

/* Starts the thread that waits on cq (borrowed: it must outlive the
   pump). Returns NULL with errno set when the thread or the eventfd
   cannot be made. */
ef_cq_pump_t *ef_cq_pump_new (grpc_completion_queue *cq);

/* The descriptor to watch: readable while an event waits. */
int ef_cq_pump_fd (const ef_cq_pump_t *self);

/* Takes the oldest waiting event, waiting at most wait_ms for one
   (0: not at all, < 0: until one comes). Returns it like
   grpc_completion_queue_next: GRPC_OP_COMPLETE, GRPC_QUEUE_TIMEOUT when
   none came in time, GRPC_QUEUE_SHUTDOWN (every time) once the queue
   was shut down and every event before that was taken. */
grpc_event ef_cq_pump_next (ef_cq_pump_t *self, int64_t wait_ms);

/* Shuts the queue down (grpc_completion_queue_shutdown), takes and
   drops what is still queued, joins the thread and frees the pump;
   NULLs *self_p. The caller then destroys the queue. Only for a queue
   whose operations have all completed (their tags would be dropped).
   Safe to call twice. */
void ef_cq_pump_destroy (ef_cq_pump_t **self_p);

#endif
