/*  pg.c — connecting to PostgreSQL and judging its errors. */
#include "pipeline/pg.h"

#include "embedflow/actor.h"
#include "embedflow/log.h"
#include "embedflow/pipeline.h"
#include "pipeline/schema.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A bounded output cursor: writes what fits, always NUL-terminated. */
typedef struct {
    char *buf;   /* destination */
    size_t size; /* its capacity */
    size_t len;  /* bytes written so far (excluding NUL) */
} s_out_t;

/* Appends n bytes of s, cutting at the end of the buffer. */
static void
s_out_put (s_out_t *o, const char *s, size_t n)
{
    if (o->size == 0)
        return;
    size_t room = o->size - 1 - o->len;
    if (n > room)
        n = room;
    memcpy (o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

/* Appends a C string, cutting at the end of the buffer. */
static void
s_out_puts (s_out_t *o, const char *s)
{
    s_out_put (o, s, strlen (s));
}

/* True for the URL forms libpq accepts. */
static bool
s_is_uri (const char *s)
{
    return strncmp (s, "postgresql://", 13) == 0
           || strncmp (s, "postgres://", 11) == 0;
}

/* Redacts a postgresql:// URL: the password of user:password@ and any
   password= query parameter. */
static void
s_redact_uri (const char *s, s_out_t *o)
{
    const char *rest = strstr (s, "://") + 3;
    s_out_put (o, s, (size_t) (rest - s));
    const char *query = strchr (rest, '?');
    const char *end = query ? query : rest + strlen (rest);
    /* The last '@' before the query ends the credentials. libpq stops at
       the first one, but a password holding an unencoded '@' or '/' must
       not leak either, so this masks generously. */
    const char *at = NULL;
    for (const char *p = rest; p < end; p++)
        if (*p == '@')
            at = p;
    if (at) {
        const char *colon = memchr (rest, ':', (size_t) (at - rest));
        if (colon) {
            s_out_put (o, rest, (size_t) (colon - rest));
            s_out_puts (o, ":***");
            s_out_put (o, at, (size_t) (end - at));
        }
        else
            s_out_put (o, rest, (size_t) (end - rest));
    }
    else
        s_out_put (o, rest, (size_t) (end - rest));
    if (!query)
        return;
    const char *p = query;
    while (*p) {
        s_out_put (o, p, 1); /* '?' or '&' */
        p++;
        const char *amp = strchr (p, '&');
        const char *pend = amp ? amp : p + strlen (p);
        const char *eq = memchr (p, '=', (size_t) (pend - p));
        if (eq && eq - p == 8 && strncmp (p, "password", 8) == 0) {
            s_out_puts (o, "password=***");
        }
        else
            s_out_put (o, p, (size_t) (pend - p));
        p = pend;
    }
}

/* Redacts a key/value conninfo, token by token. A malformed token ends
   the output with "..." so nothing after it can leak. */
static void
s_redact_kv (const char *s, s_out_t *o)
{
    const char *p = s;
    bool first = true;
    while (*p) {
        while (isspace ((unsigned char) *p))
            p++;
        if (!*p)
            break;
        const char *key = p;
        while (*p && *p != '=' && !isspace ((unsigned char) *p))
            p++;
        size_t keylen = (size_t) (p - key);
        while (isspace ((unsigned char) *p))
            p++;
        if (*p != '=' || keylen == 0) {
            s_out_puts (o, first ? "..." : " ...");
            return;
        }
        p++;
        while (isspace ((unsigned char) *p))
            p++;
        const char *value = p;
        bool quoted = *p == '\'';
        if (quoted) {
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
            if (*p != '\'') {
                s_out_puts (o, first ? "..." : " ...");
                return;
            }
            p++;
        }
        else {
            while (*p && !isspace ((unsigned char) *p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        size_t valuelen = (size_t) (p - value);
        if (!first)
            s_out_puts (o, " ");
        first = false;
        s_out_put (o, key, keylen);
        s_out_puts (o, "=");
        bool secret = keylen == 8 && strncmp (key, "password", 8) == 0;
        /* dbname may itself hold a whole conninfo or URL with a password */
        if (keylen == 6 && strncmp (key, "dbname", 6) == 0) {
            for (size_t i = 0; i < valuelen && !secret; i++)
                secret = value[i] == '=' || value[i] == '@';
        }
        if (secret)
            s_out_puts (o, "***");
        else
            s_out_put (o, value, valuelen);
    }
}

void
ef_pg_redact (const char *conninfo, char *out, size_t outlen)
{
    s_out_t o = {out, outlen, 0};
    if (outlen == 0)
        return;
    out[0] = '\0';
    if (!conninfo)
        return;
    if (s_is_uri (conninfo))
        s_redact_uri (conninfo, &o);
    else if (strchr (conninfo, '='))
        s_redact_kv (conninfo, &o);
    else
        s_out_puts (&o, conninfo); /* a bare database name */
}

/* Replaces every occurrence of secret in s (in place) with "***". */
static void
s_scrub (char *s, const char *secret)
{
    size_t n = secret ? strlen (secret) : 0;
    if (n == 0)
        return;
    char *hit;
    while ((hit = strstr (s, secret)) != NULL) {
        size_t tail = strlen (hit + n);
        size_t mask = n < 3 ? n : 3;
        memset (hit, '*', mask);
        memmove (hit + mask, hit + n, tail + 1);
    }
}

/* Copies a libpq message onto one line: newlines become "; ". */
static void
s_one_line (s_out_t *o, const char *msg)
{
    const char *p = msg;
    bool wrote = false;
    while (*p) {
        const char *nl = strchr (p, '\n');
        size_t n = nl ? (size_t) (nl - p) : strlen (p);
        if (n > 0) {
            if (wrote)
                s_out_puts (o, "; ");
            s_out_put (o, p, n);
            wrote = true;
        }
        p += n;
        while (*p == '\n' || *p == '\t' || *p == ' ')
            p++;
    }
}

/* Server notices ("schema exists, skipping") go to the debug log instead
   of libpq's default, stderr. */
static void
s_notice (void *arg, const char *message)
{
    (void) arg;
    size_t len = strlen (message);
    while (len && message[len - 1] == '\n')
        len--;
    ef_debug ("postgres: %.*s", (int) len, message);
}

PGconn *
ef_pg_connect (const char *conninfo, const char *app_name, char *err,
               size_t errlen)
{
    if (!conninfo) {
        const char *url = getenv ("DATABASE_URL");
        conninfo = url && *url ? url : "";
    }
    /* Defaults go before the expanded conninfo so that it overrides
       them; the encoding goes after it because protobuf strings are
       UTF-8 whatever the environment says. */
    const char *keys[12];
    const char *values[12];
    int n = 0;
    const char *timeout = getenv ("PGCONNECT_TIMEOUT");
    if (!timeout || !*timeout) {
        keys[n] = "connect_timeout";
        values[n++] = "5";
    }
    keys[n] = "keepalives_idle";
    values[n++] = "30";
    keys[n] = "keepalives_interval";
    values[n++] = "10";
    keys[n] = "keepalives_count";
    values[n++] = "3";
    if (app_name && *app_name) {
        keys[n] = "fallback_application_name";
        values[n++] = app_name;
    }
    keys[n] = "dbname";
    values[n++] = conninfo;
    keys[n] = "client_encoding";
    values[n++] = "UTF8";
    keys[n] = NULL;
    values[n] = NULL;

    PGconn *conn = PQconnectdbParams (keys, values, 1);
    if (conn && PQstatus (conn) == CONNECTION_OK) {
        PQsetNoticeProcessor (conn, s_notice, NULL);
        return conn;
    }

    if (err && errlen) {
        s_out_t o = {err, errlen, 0};
        err[0] = '\0';
        char where[512];
        ef_pg_redact (conninfo, where, sizeof where);
        s_out_puts (&o, "cannot connect to PostgreSQL (");
        s_out_puts (&o, *where ? where : "libpq defaults");
        s_out_puts (&o, "): ");
        s_one_line (&o, conn ? PQerrorMessage (conn) : "out of memory");
        if (conn)
            s_scrub (err, PQpass (conn));
    }
    PQfinish (conn);
    return NULL;
}

ef_pg_class_t
ef_pg_classify (const char *sqlstate)
{
    if (!sqlstate || !*sqlstate)
        return EF_PG_TRANSIENT;
    if (strncmp (sqlstate, "08", 2) == 0     /* connection exception */
        || strncmp (sqlstate, "53", 2) == 0  /* insufficient resources */
        || strncmp (sqlstate, "58", 2) == 0) /* system error (I/O) */
        return EF_PG_TRANSIENT;
    static const char *const transient[] = {
        "57P01", /* admin_shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now (starting up, recovering) */
        "40001", /* serialization_failure */
        "40P01", /* deadlock_detected */
    };
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (strcmp (sqlstate, transient[i]) == 0)
            return EF_PG_TRANSIENT;
    return EF_PG_PERMANENT;
}

ef_pg_class_t
ef_pg_classify_result (PGconn *conn, const PGresult *res)
{
    if (!conn || PQstatus (conn) != CONNECTION_OK)
        return EF_PG_TRANSIENT;
    const char *state = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE) : NULL;
    return ef_pg_classify (state);
}

void
ef_pg_error (PGconn *conn, const PGresult *res, char *sqlstate, char *out,
             size_t outlen)
{
    const char *state = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate)
        snprintf (sqlstate, 6, "%s", state ? state : "");
    if (!out || outlen == 0)
        return;
    s_out_t o = {out, outlen, 0};
    out[0] = '\0';
    const char *primary =
        res ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (primary) {
        s_one_line (&o, primary);
        const char *detail = PQresultErrorField (res, PG_DIAG_MESSAGE_DETAIL);
        if (detail) {
            s_out_puts (&o, ": ");
            s_one_line (&o, detail);
        }
    }
    else {
        const char *msg = res ? PQresultErrorMessage (res) : "";
        if (!msg || !*msg)
            msg = conn ? PQerrorMessage (conn) : "";
        if (!msg || !*msg)
            msg = "unknown error (no message from libpq)";
        s_one_line (&o, msg);
    }
}

char *
ef_pg_ident (PGconn *conn, const char *name)
{
    char *quoted = PQescapeIdentifier (conn, name, strlen (name));
    if (!quoted)
        return NULL;
    char *copy = strdup (quoted);
    PQfreemem (quoted);
    return copy;
}

PGconn *
ef_pg_open_for_actor (ef_actor_t *actor)
{
    const ef_globals_t *g = ef_actor_globals (actor);
    char app[96], err[1024];
    snprintf (app, sizeof app, "embedflow %s", ef_actor_name (actor));
    PGconn *conn = ef_pg_connect (g->database, app, err, sizeof err);
    if (!conn) {
        ef_actor_fail (actor, "%s", err);
        return NULL;
    }
    if (ef_schema_migrate (conn, g->schema, (int) g->dim, err, sizeof err)
        != 0) {
        ef_actor_fail (actor, "%s", err);
        PQfinish (conn);
        return NULL;
    }
    return conn;
}
