/*  citus_route.c — Citus' hash of a document_id and the shard map of a
    distributed schema. */
#include "postgres/citus_route.h"

#include "embedflow/actor.h"
#include "postgres/pg.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PostgreSQL's own lookup3 (src/common/hashfn.c), linked from
   libpgcommon_shlib.a of postgresql-server-dev (CMakeLists.txt): the
   function hashtext and so Citus use, so the two cannot drift apart.
   Its header needs the server's c.h, hence the declaration here (uint32
   is unsigned int there). */
extern unsigned int hash_bytes (const unsigned char *k, int keylen);

typedef struct {
    int32_t min; /* lowest hash in the shard's range */
    int32_t max; /* highest */
} s_range_t;

struct ef_citus_shards {
    s_range_t *ranges; /* by min, ascending */
    int n;             /* entries in ranges */
};

int32_t
ef_citus_hash_text (const char *text, size_t len)
{
    /* a document_id is at most max_document_id_bytes (1 MiB at most), far
       below INT_MAX */
    return (int32_t) hash_bytes ((const unsigned char *) text,
                                 len > INT_MAX ? INT_MAX : (int) len);
}

/* Reads an int32 written in decimal. Returns 0, -1 when text is not one. */
static int
s_parse_int32 (const char *text, int32_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll (text, &end, 10);
    if (errno || end == text || *end || v < INT32_MIN || v > INT32_MAX)
        return -1;
    *out = (int32_t) v;
    return 0;
}

ef_citus_shards_t *
ef_citus_shards_load (PGconn *conn, const char *schema, char *err,
                      size_t errlen)
{
    const char *params[] = {schema};
    /* partmethod 'h' is hash distribution; an append- or range-distributed
       table has ranges of another kind */
    PGresult *res = ef_pg_exec (
        conn,
        "SELECT p.partmethod, s.shardminvalue, s.shardmaxvalue"
        "  FROM pg_dist_partition p"
        "  JOIN pg_class c ON c.oid = p.logicalrelid"
        "  JOIN pg_namespace ns ON ns.oid = c.relnamespace"
        "  LEFT JOIN pg_dist_shard s ON s.logicalrelid = p.logicalrelid"
        " WHERE ns.nspname = $1 AND c.relname = 'chunk'"
        " ORDER BY s.shardminvalue::int",
        1, params, "reading the shards of chunk", err, errlen);
    if (!res)
        return NULL;
    int n = PQntuples (res);
    if (n == 0 || PQgetisnull (res, 0, 1)) {
        snprintf (err, errlen,
                  "schema \"%s\": chunk is not a distributed table with "
                  "shards on this Citus coordinator",
                  schema);
        PQclear (res);
        return NULL;
    }
    if (strcmp (PQgetvalue (res, 0, 0), "h") != 0) {
        snprintf (err, errlen,
                  "schema \"%s\": chunk is not distributed by hash "
                  "(partmethod %s)",
                  schema, PQgetvalue (res, 0, 0));
        PQclear (res);
        return NULL;
    }
    ef_citus_shards_t *self = calloc (1, sizeof *self);
    if (self)
        self->ranges = calloc ((size_t) n, sizeof *self->ranges);
    if (!self || !self->ranges) {
        snprintf (err, errlen, "reading the shards of chunk: out of memory");
        ef_citus_shards_destroy (&self);
        PQclear (res);
        return NULL;
    }
    for (int i = 0; i < n; i++, self->n++) {
        s_range_t *r = &self->ranges[i];
        if (s_parse_int32 (PQgetvalue (res, i, 1), &r->min) != 0
            || s_parse_int32 (PQgetvalue (res, i, 2), &r->max) != 0
            || r->min > r->max) {
            snprintf (err, errlen,
                      "schema \"%s\": a shard of chunk has the hash range "
                      "'%s'..'%s', not two ordered integers",
                      schema, PQgetvalue (res, i, 1), PQgetvalue (res, i, 2));
            ef_citus_shards_destroy (&self);
            PQclear (res);
            return NULL;
        }
    }
    PQclear (res);
    return self;
}

void
ef_citus_shards_destroy (ef_citus_shards_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free ((*self_p)->ranges);
    free (*self_p);
    *self_p = NULL;
}

int
ef_citus_shards_count (const ef_citus_shards_t *self)
{
    return self->n;
}

int
ef_citus_shards_index (const ef_citus_shards_t *self, const char *document_id)
{
    int32_t h = ef_citus_hash_text (document_id, strlen (document_id));
    /* the last range whose min <= h, if its max reaches h */
    int lo = 0, hi = self->n - 1, at = -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (self->ranges[mid].min <= h) {
            at = mid;
            lo = mid + 1;
        }
        else
            hi = mid - 1;
    }
    return at >= 0 && h <= self->ranges[at].max ? at : -1;
}

int
ef_citus_shards_route (const ef_citus_shards_t *self, const char *document_id,
                       int n)
{
    if (n <= 1)
        return 0;
    int at = ef_citus_shards_index (self, document_id);
    if (at < 0)
        return ef_route (document_id, n);
    if (n <= self->n)
        return at % n;
    /* More writers than shards: shard at has writers at, at + shards, ...
       below n, and its documents are spread over them by hash, so no
       writer is left without work and each still writes one shard. */
    int mine = (n - 1 - at) / self->n + 1;
    return at + self->n * ef_route (document_id, mine);
}
