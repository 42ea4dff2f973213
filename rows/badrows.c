/*  badrows.c — per-upload tallies of bad rows and the limit on them. */
#include "rows/badrows.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_REASONS 8 /* distinct reasons kept per stream; the rest: "other" */

typedef struct {
    char code[32];  /* reason_code */
    uint64_t count; /* rows */
} s_reason_t;

typedef struct {
    uint64_t rows;                 /* rows counted */
    uint64_t bad;                  /* of which bad */
    bool ended;                    /* over the limit */
    int64_t last_us;               /* when last counted */
    size_t n_reasons;              /* used */
    s_reason_t reasons[S_REASONS]; /* by first appearance */
    uint64_t other;                /* bad rows of reasons not kept */
} s_stream_t;

struct ef_badrows {
    zhashx_t *streams;    /* "%016llx" stream id -> s_stream_t (owned) */
    uint64_t max_bad;     /* 0 = no limit */
    unsigned max_percent; /* share of bad rows, 0-100 */
};

static void
s_stream_free (void **item)
{
    free (*item);
    *item = NULL;
}

ef_badrows_t *
ef_badrows_new (uint64_t max_bad_rows, unsigned max_bad_percent)
{
    ef_badrows_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->streams = zhashx_new ();
    if (!self->streams) {
        free (self);
        return NULL;
    }
    zhashx_set_destructor (self->streams, s_stream_free);
    self->max_bad = max_bad_rows;
    self->max_percent = max_bad_percent > 100 ? 100 : max_bad_percent;
    return self;
}

void
ef_badrows_destroy (ef_badrows_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy (&(*self_p)->streams);
    free (*self_p);
    *self_p = NULL;
}

static void
s_key (uint64_t stream_id, char key[17])
{
    snprintf (key, 17, "%016" PRIx64, stream_id);
}

static s_stream_t *
s_find (ef_badrows_t *self, uint64_t stream_id)
{
    char key[17];
    s_key (stream_id, key);
    return (s_stream_t *) zhashx_lookup (self->streams, key);
}

bool
ef_badrows_count (ef_badrows_t *self, uint64_t stream_id,
                  const char *reason_code, int64_t now_us)
{
    s_stream_t *s = s_find (self, stream_id);
    if (!s) {
        s = calloc (1, sizeof *s);
        char key[17];
        s_key (stream_id, key);
        if (!s || zhashx_insert (self->streams, key, s) != 0) {
            free (s);
            return false;
        }
    }
    s->last_us = now_us;
    if (s->ended)
        return true;
    s->rows++;
    if (!reason_code)
        return false;
    s->bad++;
    size_t r = 0;
    while (r < s->n_reasons && strcmp (s->reasons[r].code, reason_code) != 0)
        r++;
    if (r < s->n_reasons)
        s->reasons[r].count++;
    else if (r < S_REASONS) {
        snprintf (s->reasons[r].code, sizeof s->reasons[r].code, "%s",
                  reason_code);
        s->reasons[r].count = 1;
        s->n_reasons++;
    }
    else
        s->other++;
    if (self->max_bad && s->bad > self->max_bad
        && s->bad * 100 > (uint64_t) self->max_percent * s->rows)
        s->ended = true;
    return s->ended;
}

bool
ef_badrows_ended (ef_badrows_t *self, uint64_t stream_id)
{
    s_stream_t *s = s_find (self, stream_id);
    return s && s->ended;
}

static int
s_by_count (const void *a, const void *b)
{
    const s_reason_t *x = a, *y = b;
    return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

void
ef_badrows_describe (ef_badrows_t *self, uint64_t stream_id, char *out,
                     size_t outlen)
{
    s_stream_t *s = s_find (self, stream_id);
    if (!s) {
        snprintf (out, outlen, "no rows counted");
        return;
    }
    s_reason_t sorted[S_REASONS];
    memcpy (sorted, s->reasons, sizeof sorted);
    qsort (sorted, s->n_reasons, sizeof sorted[0], s_by_count);
    size_t o = (size_t) snprintf (
        out, outlen,
        "%" PRIu64 " of %" PRIu64 " rows were bad (limit: more than %" PRIu64
        " and more than %u%%):",
        s->bad, s->rows, self->max_bad, self->max_percent);
    for (size_t r = 0; r < s->n_reasons && o < outlen; r++)
        o += (size_t) snprintf (out + o, outlen - o, "%s %s %" PRIu64,
                                r ? "," : "", sorted[r].code, sorted[r].count);
    if (s->other && o < outlen)
        snprintf (out + o, outlen - o, ", other %" PRIu64, s->other);
}

void
ef_badrows_forget (ef_badrows_t *self, int64_t older_than_us)
{
    zlistx_t *keys = zhashx_keys (self->streams);
    if (!keys)
        return;
    for (const char *k = zlistx_first (keys); k; k = zlistx_next (keys)) {
        s_stream_t *s = (s_stream_t *) zhashx_lookup (self->streams, k);
        if (s && s->last_us < older_than_us)
            zhashx_delete (self->streams, k);
    }
    zlistx_destroy (&keys);
}

size_t
ef_badrows_size (ef_badrows_t *self)
{
    return zhashx_size (self->streams);
}
