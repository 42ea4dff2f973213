/*  inflight.c — the unsettled chunks of one upload. */
#include "rows/inflight.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t seq;     /* ChunkHeader.seq */
    uint32_t rows;    /* rows it holds */
    uint32_t attempt; /* the attempt being counted */
    uint64_t written; /* rows of that attempt written */
    uint64_t dead;    /* rows of that attempt dead-lettered */
    int64_t charge;   /* budget bytes */
    zframe_t *body;   /* EmbeddingChunk bytes, or NULL */
    int64_t sent_us;  /* last sent, monotonic */
    uint64_t churn;   /* link churn when last sent */
    bool due;         /* to be sent again */
} s_chunk_t;

struct ef_inflight {
    s_chunk_t *chunks; /* chunks[head..n) are held, in send order */
    size_t head;       /* first held */
    size_t n;          /* end of the used part */
    size_t cap;        /* allocated */
    size_t next_due;   /* where ef_inflight_next_due looks first */
    bool keep_bytes;   /* bodies are kept for re-sending */
    int64_t charged;   /* sum of the held chunks' charges */
};

ef_inflight_t *
ef_inflight_new (bool keep_bytes)
{
    ef_inflight_t *self = calloc (1, sizeof *self);
    if (self)
        self->keep_bytes = keep_bytes;
    return self;
}

void
ef_inflight_destroy (ef_inflight_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_inflight_t *self = *self_p;
    for (size_t i = self->head; i < self->n; i++)
        zframe_destroy (&self->chunks[i].body);
    free (self->chunks);
    free (self);
    *self_p = NULL;
}

int
ef_inflight_add (ef_inflight_t *self, uint64_t seq, uint32_t rows,
                 int64_t charge, zframe_t *body, int64_t now_us, uint64_t churn,
                 bool due)
{
    if (self->head > 0 && self->head == self->n)
        self->head = self->n = self->next_due = 0;
    if (self->n == self->cap) {
        if (self->head > 0) {
            /* slide the held part down before growing */
            memmove (self->chunks, self->chunks + self->head,
                     (self->n - self->head) * sizeof *self->chunks);
            self->n -= self->head;
            self->next_due -= self->next_due >= self->head ? self->head : 0;
            self->head = 0;
        }
        if (self->n == self->cap) {
            size_t cap = self->cap ? self->cap * 2 : 8;
            s_chunk_t *grown = realloc (self->chunks, cap * sizeof *grown);
            if (!grown)
                return -1;
            self->chunks = grown;
            self->cap = cap;
        }
    }
    zframe_t *copy = NULL;
    if (self->keep_bytes && body && !(copy = zframe_dup (body)))
        return -1;
    self->chunks[self->n++] =
        (s_chunk_t){seq, rows, 0, 0, 0, charge, copy, now_us, churn, due};
    self->charged += charge;
    return 0;
}

/* Drops settled chunks from the head. */
static int64_t
s_pop_settled (ef_inflight_t *self)
{
    int64_t released = 0;
    while (self->head < self->n) {
        s_chunk_t *c = &self->chunks[self->head];
        if (c->due || c->written + c->dead < c->rows)
            break;
        released += c->charge;
        self->charged -= c->charge;
        zframe_destroy (&c->body);
        self->head++;
    }
    if (self->next_due < self->head)
        self->next_due = self->head;
    return released;
}

void
ef_inflight_settle (ef_inflight_t *self, uint64_t seq, uint32_t attempt,
                    uint64_t written, uint64_t dead, ef_settle_t *out)
{
    memset (out, 0, sizeof *out);
    for (size_t i = self->head; i < self->n; i++) {
        s_chunk_t *c = &self->chunks[i];
        if (c->seq != seq)
            continue;
        if (c->attempt != attempt || c->due)
            return; /* an earlier sending: its rows are being sent again */
        c->written += written;
        c->dead += dead;
        out->written = written;
        out->dead = dead;
        break;
    }
    out->released = s_pop_settled (self);
}

size_t
ef_inflight_restart (ef_inflight_t *self, ef_settle_t *out)
{
    memset (out, 0, sizeof *out);
    if (!self->keep_bytes)
        return 0;
    for (size_t i = self->head; i < self->n; i++) {
        s_chunk_t *c = &self->chunks[i];
        out->written += c->written;
        out->dead += c->dead;
        c->written = c->dead = 0;
        if (!c->due)
            c->attempt++;
        c->due = true;
    }
    self->next_due = self->head;
    return self->n - self->head;
}

int
ef_inflight_next_due (ef_inflight_t *self, uint64_t *seq, uint32_t *attempt,
                      uint32_t *rows, zframe_t **body, int64_t now_us,
                      uint64_t churn)
{
    for (size_t i = self->next_due; i < self->n; i++) {
        s_chunk_t *c = &self->chunks[i];
        if (!c->due)
            continue;
        zframe_t *copy = c->body ? zframe_dup (c->body) : NULL;
        if (c->body && !copy)
            return -1;
        c->due = false;
        c->sent_us = now_us;
        c->churn = churn;
        *seq = c->seq;
        *attempt = c->attempt;
        *rows = c->rows;
        *body = copy;
        self->next_due = i + 1;
        return 1;
    }
    self->next_due = self->n;
    return 0;
}

bool
ef_inflight_empty (const ef_inflight_t *self)
{
    return self->head == self->n;
}

bool
ef_inflight_oldest (const ef_inflight_t *self, int64_t *sent_us,
                    uint64_t *churn)
{
    if (self->head == self->n)
        return false;
    *sent_us = self->chunks[self->head].sent_us;
    *churn = self->chunks[self->head].churn;
    return true;
}

int64_t
ef_inflight_charged (const ef_inflight_t *self)
{
    return self->charged;
}

size_t
ef_inflight_count (const ef_inflight_t *self)
{
    return self->n - self->head;
}
