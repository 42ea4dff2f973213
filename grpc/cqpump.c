/*  cqpump.c — a thread in grpc_completion_queue_next, feeding an actor. */
#include "grpc/cqpump.h"

#include "embedflow/actor.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ef_cq_pump {
    grpc_completion_queue *cq; /* borrowed */
    pthread_t thread;          /* waits in next() */
    pthread_mutex_t lock;      /* guards what follows */
    pthread_cond_t cond;       /* signalled when an event is queued */
    grpc_event *ring;          /* queued events */
    size_t cap;                /* entries of ring */
    size_t head;               /* index of the oldest */
    size_t count;              /* events queued */
    bool shut;                 /* the queue reported GRPC_QUEUE_SHUTDOWN */
    ef_wakeup_t *ready;        /* raised while count > 0 */
};

/* Appends ev; the ring grows as needed. Returns 0, -1 out of memory
   (the caller retries: losing a tag would leak its call). */
static int
s_push (ef_cq_pump_t *self, grpc_event ev)
{
    if (self->count == self->cap) {
        size_t cap = self->cap ? 2 * self->cap : 64;
        grpc_event *ring = malloc (cap * sizeof *ring);
        if (!ring)
            return -1;
        for (size_t i = 0; i < self->count; i++)
            ring[i] = self->ring[(self->head + i) % self->cap];
        free (self->ring);
        self->ring = ring;
        self->cap = cap;
        self->head = 0;
    }
    self->ring[(self->head + self->count) % self->cap] = ev;
    self->count++;
    return 0;
}

/* The pump's thread: next() without deadline until the queue is shut
   down. */
static void *
s_run (void *arg)
{
    ef_cq_pump_t *self = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next (
            self->cq, gpr_inf_future (GPR_CLOCK_MONOTONIC), NULL);
        pthread_mutex_lock (&self->lock);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            self->shut = true;
        else if (ev.type == GRPC_OP_COMPLETE) {
            while (s_push (self, ev) != 0) {
                pthread_mutex_unlock (&self->lock);
                struct timespec ms = {0, 1000000};
                nanosleep (&ms, NULL);
                pthread_mutex_lock (&self->lock);
            }
        }
        /* raised when the ring stops being empty; ef_cq_pump_next
           lowers it when it empties it, under the same lock */
        if ((ev.type == GRPC_OP_COMPLETE && self->count == 1) || self->shut)
            ef_wakeup_signal (self->ready);
        pthread_cond_broadcast (&self->cond);
        bool shut = self->shut;
        pthread_mutex_unlock (&self->lock);
        if (shut)
            return NULL;
    }
}

ef_cq_pump_t *
ef_cq_pump_new (grpc_completion_queue *cq)
{
    ef_cq_pump_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->cq = cq;
    pthread_mutex_init (&self->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&self->cond, &attr);
    pthread_condattr_destroy (&attr);
    self->ready = ef_wakeup_new ();
    int err =
        self->ready ? pthread_create (&self->thread, NULL, s_run, self) : errno;
    if (err != 0) {
        ef_wakeup_destroy (&self->ready);
        pthread_cond_destroy (&self->cond);
        pthread_mutex_destroy (&self->lock);
        free (self);
        errno = err;
        return NULL;
    }
    return self;
}

int
ef_cq_pump_fd (const ef_cq_pump_t *self)
{
    return ef_wakeup_fd (self->ready);
}

grpc_event
ef_cq_pump_next (ef_cq_pump_t *self, int64_t wait_ms)
{
    grpc_event ev;
    memset (&ev, 0, sizeof ev);
    struct timespec until;
    clock_gettime (CLOCK_MONOTONIC, &until);
    if (wait_ms > 0) {
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (long) (wait_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock (&self->lock);
    while (self->count == 0 && !self->shut && wait_ms != 0) {
        if (wait_ms < 0)
            pthread_cond_wait (&self->cond, &self->lock);
        else if (pthread_cond_timedwait (&self->cond, &self->lock, &until)
                 == ETIMEDOUT)
            break;
    }
    if (self->count > 0) {
        ev = self->ring[self->head];
        self->head = (self->head + 1) % self->cap;
        self->count--;
    }
    else
        ev.type = self->shut ? GRPC_QUEUE_SHUTDOWN : GRPC_QUEUE_TIMEOUT;
    /* readable exactly while something is left to take */
    if (self->count == 0 && !self->shut)
        ef_wakeup_clear (self->ready);
    pthread_mutex_unlock (&self->lock);
    return ev;
}

void
ef_cq_pump_destroy (ef_cq_pump_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_cq_pump_t *self = *self_p;
    grpc_completion_queue_shutdown (self->cq);
    pthread_join (self->thread, NULL);
    ef_wakeup_destroy (&self->ready);
    pthread_cond_destroy (&self->cond);
    pthread_mutex_destroy (&self->lock);
    free (self->ring);
    free (self);
    *self_p = NULL;
}
