/*  pg.c — connecting to PostgreSQL and judging its errors. */
#include "postgres/pg.h"

#include "embedflow/actor.h"
#include "embedflow/log.h"
#include "pipeline/pipeline.h"
#include "postgres/schema.h"

#include <ctype.h>
#include <stdatomic.h>
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

/* How a setting's value may be shown. */
typedef enum {
    S_SHOW,   /* a keyword libpq knows and does not hide */
    S_SECRET, /* libpq hides it (dispchar '*'), or it may hold a conninfo */
    S_UNKNOWN /* not in libpq's table: an alias or a typo, value unseen */
} s_show_t;

/* One redaction in progress. */
typedef struct {
    const PQconninfoOption *table; /* libpq's keywords and how they show */
    s_out_t out;                   /* the redacted text */
    char note[160];                /* first thing libpq will not accept */
    bool refused;                  /* libpq would misread it: do not use */
} s_redactor_t;

/* Records why the string is not valid, unless a reason is already there. */
static void
s_note (s_redactor_t *r, const char *what, const char *key, size_t keylen)
{
    if (r->note[0])
        return;
    if (key)
        snprintf (r->note, sizeof r->note, "\"%.*s\" %s",
                  (int) (keylen > 64 ? 64 : keylen), key, what);
    else
        snprintf (r->note, sizeof r->note, "%s", what);
}

/* Classifies keyword key[0..len) by libpq's own table. dbname is shown
   unless its value looks like a connection string of its own, which may
   carry a password. */
static s_show_t
s_classify (const s_redactor_t *r, const char *key, size_t len,
            const char *value, size_t valuelen)
{
    for (const PQconninfoOption *o = r->table; o->keyword; o++) {
        if (strlen (o->keyword) != len || strncmp (o->keyword, key, len) != 0)
            continue;
        if (o->dispchar && strchr (o->dispchar, '*'))
            return S_SECRET;
        if (strcmp (o->keyword, "dbname") == 0
            && (memchr (value, '=', valuelen) || memchr (value, '@', valuelen)))
            return S_SECRET;
        return S_SHOW;
    }
    return S_UNKNOWN;
}

/* Writes one setting: the value as written when it may be shown, else
   "***". Records an unknown keyword as the reason libpq will refuse. */
static void
s_put_setting (s_redactor_t *r, const char *key, size_t keylen,
               const char *name, size_t namelen, const char *value,
               size_t valuelen)
{
    s_show_t show = s_classify (r, key, keylen, value, valuelen);
    if (show == S_UNKNOWN)
        s_note (r, "is not a libpq keyword", key, keylen);
    s_out_put (&r->out, name, namelen);
    s_out_puts (&r->out, "=");
    if (show == S_SHOW)
        s_out_put (&r->out, value, valuelen);
    else
        s_out_puts (&r->out, "***");
}

/* Decodes the %XX escapes of s[0..n) into out (NUL-terminated), as libpq
   does for URL parameter names. Returns the length, or -1 when an escape
   is bad or the result does not fit: the name is then treated as
   unknown. */
static int
s_uri_decode (const char *s, size_t n, char *out, size_t outlen)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            if (!isxdigit ((unsigned char) s[i + 1])
                || !isxdigit ((unsigned char) s[i + 2]))
                return -1;
            char hex[3] = {s[i + 1], s[i + 2], '\0'};
            c = (char) strtol (hex, NULL, 16);
            if (c == '\0')
                return -1;
            i += 2;
        }
        if (len + 1 >= outlen)
            return -1;
        out[len++] = c;
    }
    out[len] = '\0';
    return (int) len;
}

/* Redacts a postgresql:// URL: the password of user:password@ and every
   query parameter that libpq hides or does not know. libpq ends the user
   part at the first '@' or '/', so an unencoded '@' or '/' in a password
   would make it read part of the password as host, port or database name
   and print it in its errors: such a URL is refused, and everything
   before its last '@' is masked. */
static void
s_redact_uri (s_redactor_t *r, const char *s)
{
    const char *rest = strstr (s, "://") + 3;
    s_out_put (&r->out, s, (size_t) (rest - s));
    const char *query = strchr (rest, '?');
    const char *end = query ? query : rest + strlen (rest);
    const char *first_at = memchr (rest, '@', (size_t) (end - rest));
    const char *last_at = NULL;
    for (const char *p = rest; p < end; p++)
        if (*p == '@')
            last_at = p;
    if (first_at) {
        const char *slash = memchr (rest, '/', (size_t) (first_at - rest));
        if (first_at != last_at || slash) {
            r->refused = true;
            s_note (r,
                    "an unencoded '@' or '/' in the user name or password "
                    "of the URL (write them as %40 and %2F)",
                    NULL, 0);
        }
        const char *colon = memchr (rest, ':', (size_t) (last_at - rest));
        const char *user_end = colon ? colon : last_at;
        if (memchr (rest, '/', (size_t) (user_end - rest))
            || memchr (rest, '@', (size_t) (user_end - rest)))
            s_out_puts (&r->out, "***");
        else {
            s_out_put (&r->out, rest, (size_t) (user_end - rest));
            if (colon)
                s_out_puts (&r->out, ":***");
        }
        rest = last_at;
    }
    s_out_put (&r->out, rest, (size_t) (end - rest));
    if (!query)
        return;
    const char *p = query;
    while (*p) {
        s_out_put (&r->out, p, 1); /* '?' or '&' */
        p++;
        const char *amp = strchr (p, '&');
        const char *pend = amp ? amp : p + strlen (p);
        const char *eq = memchr (p, '=', (size_t) (pend - p));
        if (!eq) {
            s_note (r, "a URL parameter without '='", NULL, 0);
            s_out_puts (&r->out, "...");
            return;
        }
        char key[64];
        int keylen = s_uri_decode (p, (size_t) (eq - p), key, sizeof key);
        if (keylen < 0)
            keylen = snprintf (key, sizeof key, "%s", "?");
        s_put_setting (r, key, (size_t) keylen, p, (size_t) (eq - p), eq + 1,
                       (size_t) (pend - eq - 1));
        p = pend;
    }
}

/* Redacts a key/value conninfo, token by token, with libpq's quoting
   rules. A token libpq would reject ends the output with "..." so nothing
   after it can leak. PQconninfoParse decides whether the string is valid
   and which values are secret (ef_pg_redact); it cannot do this part:
   for a string it refuses it returns nothing to show or to name the bad
   keyword with, and it renames what it accepts (requiressl=1 comes back
   as sslmode=require), so the text shown would not be the text given. */
static void
s_redact_kv (s_redactor_t *r, const char *s)
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
            s_note (r, "a token that is not keyword=value", NULL, 0);
            s_out_puts (&r->out, first ? "..." : " ...");
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
                s_note (r, "a quote that is not closed", NULL, 0);
                if (!first)
                    s_out_puts (&r->out, " ");
                s_out_put (&r->out, key, keylen);
                s_out_puts (&r->out, "=*** ...");
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
        if (!first)
            s_out_puts (&r->out, " ");
        first = false;
        s_put_setting (r, key, keylen, key, keylen, value,
                       (size_t) (p - value));
    }
}

/* Copies libpq's parse error into r->note with everything between its
   first and last double quote (where libpq quotes the text it choked on,
   which may be a password) replaced by "...". */
static void
s_note_libpq (s_redactor_t *r, const char *msg)
{
    if (r->note[0] || !msg)
        return;
    size_t len = strcspn (msg, "\n");
    const char *open = memchr (msg, '"', len);
    const char *close = NULL;
    for (const char *p = msg; p < msg + len; p++)
        if (*p == '"')
            close = p;
    if (open && close > open)
        snprintf (r->note, sizeof r->note, "%.*s\"...\"%.*s",
                  (int) (open - msg), msg, (int) (msg + len - close - 1),
                  close + 1);
    else if (open)
        snprintf (r->note, sizeof r->note, "%.*s\"...", (int) (open - msg),
                  msg);
    else
        snprintf (r->note, sizeof r->note, "%.*s", (int) len, msg);
}

/* True when any value libpq would hide shows in out: the last guard
   against a string this redactor reads differently from libpq. Values
   shorter than 4 bytes are not looked for, they match too much. */
static bool
s_leaks (const PQconninfoOption *parsed, const char *out)
{
    for (const PQconninfoOption *o = parsed; o->keyword; o++)
        if (o->val && strlen (o->val) >= 4 && o->dispchar
            && strchr (o->dispchar, '*') && strstr (out, o->val))
            return true;
    return false;
}

int
ef_pg_redact (const char *conninfo, char *out, size_t outlen, char *why,
              size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    if (outlen)
        out[0] = '\0';
    s_redactor_t r = {.out = {out, outlen, 0}};
    if (!conninfo)
        return 0;
    bool uri = s_is_uri (conninfo);
    if (!uri && !strchr (conninfo, '=')) {
        s_out_puts (&r.out, conninfo); /* a bare database name */
        return 0;
    }
    /* libpq's own table says which keywords it hides (dispchar '*'):
       password and sslpassword today, any it adds tomorrow. */
    PQconninfoOption *table = PQconninfoParse ("", NULL);
    if (!table) {
        s_out_puts (&r.out, "***");
        if (why && whylen)
            snprintf (why, whylen, "out of memory");
        return -1;
    }
    r.table = table;
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse (conninfo, &perr);
    if (uri)
        s_redact_uri (&r, conninfo);
    else
        s_redact_kv (&r, conninfo);
    if (!parsed)
        s_note_libpq (&r, perr ? perr : "out of memory");
    if (parsed && s_leaks (parsed, out)) {
        r.out.len = 0;
        if (outlen)
            out[0] = '\0';
        s_out_puts (&r.out, uri ? "postgresql://***" : "***");
    }
    int rc = parsed && !r.refused ? 0 : -1;
    if (rc != 0 && why && whylen)
        snprintf (why, whylen, "%s", r.note);
    PQconninfoFree (parsed);
    PQconninfoFree (table);
    PQfreemem (perr);
    return rc;
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

/* Scrubs from msg every value in conninfo that its redaction hides:
   libpq echoes some values (a database name, a host) in its errors. */
static void
s_scrub_conninfo (char *msg, const char *conninfo)
{
    PQconninfoOption *parsed = PQconninfoParse (conninfo, NULL);
    if (!parsed)
        return;
    for (const PQconninfoOption *o = parsed; o->keyword; o++) {
        if (!o->val)
            continue;
        bool hidden = o->dispchar && strchr (o->dispchar, '*');
        if (strcmp (o->keyword, "dbname") == 0)
            hidden = strchr (o->val, '=') || strchr (o->val, '@');
        if (hidden)
            s_scrub (msg, o->val);
    }
    PQconninfoFree (parsed);
}

PGconn *
ef_pg_connect (const char *conninfo, const char *app_name, char *err,
               size_t errlen)
{
    if (!conninfo) {
        const char *url = getenv ("DATABASE_URL");
        conninfo = url && *url ? url : "";
    }
    /* A string libpq cannot parse is not handed to it: its parse errors
       quote the text they choke on, which may be a password. */
    char where[512], why[200];
    if (ef_pg_redact (conninfo, where, sizeof where, why, sizeof why) != 0) {
        if (err && errlen)
            snprintf (err, errlen,
                      "cannot connect to PostgreSQL (%s): the connection "
                      "string is not valid: %s",
                      where, why);
        return NULL;
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
        s_out_puts (&o, "cannot connect to PostgreSQL (");
        s_out_puts (&o, *where ? where : "libpq defaults");
        s_out_puts (&o, "): ");
        s_one_line (&o, conn ? PQerrorMessage (conn) : "out of memory");
        if (conn)
            s_scrub (err, PQpass (conn));
        s_scrub_conninfo (err, conninfo);
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
    /* A Citus coordinator passes on the loss of its connection to a
       worker (the worker restarting, say) as an internal error, XX000,
       with the worker's own words: worth retrying like our own
       connection's loss. */
    const char *msg =
        res ? PQresultErrorField (res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state && strcmp (state, "XX000") == 0 && msg
        && (strstr (msg, "terminating connection due to administrator")
            || strstr (msg, "server closed the connection unexpectedly")
            || strstr (msg, "failure on connection marked as essential")
            || strstr (msg, "connection to the remote node")))
        return EF_PG_TRANSIENT;
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

/* Warns, once per process, when the schema's ANN index is not the
   configured one: applying it rebuilds the index over every row, which
   is for an operator to start (embedflow index --apply), not a start. */
static void
s_report_index_drift (PGconn *conn, const char *schema,
                      const ef_index_opts_t *want)
{
    static atomic_bool reported;
    char stored[128], err[512], described[128];
    if (atomic_load (&reported)
        || ef_schema_index_drift (conn, schema, want, stored, sizeof stored,
                                  err, sizeof err)
               != 1
        || atomic_exchange (&reported, true))
        return;
    ef_index_describe (want, described, sizeof described);
    ef_warn_kv (EF_KV (EF_KV_STR ("schema", schema),
                       EF_KV_STR ("index", stored),
                       EF_KV_STR ("configured", described)),
                "schema \"%s\": the index is %s but the configuration says "
                "%s: not applied at start; `embedflow index --apply` "
                "(with this configuration) rebuilds it",
                schema, stored, described);
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
    ef_schema_opts_t opts;
    ef_globals_schema_opts (g, &opts);
    if (ef_schema_migrate_opts (conn, g->schema, &opts, err, sizeof err) != 0) {
        ef_actor_fail (actor, "%s", err);
        PQfinish (conn);
        return NULL;
    }
    s_report_index_drift (conn, g->schema, &opts.index);
    return conn;
}

/* Sets err from a failed result (or the connection's error). */
static void
s_failed (PGconn *conn, const PGresult *res, const char *what, char *err,
          size_t errlen)
{
    char state[6], msg[400];
    ef_pg_error (conn, res, state, msg, sizeof msg);
    snprintf (err, errlen, "%s: %s%s%s", what, state, *state ? " " : "", msg);
}

PGresult *
ef_pg_exec (PGconn *conn, const char *sql, int nparams,
            const char *const *params, const char *what, char *err,
            size_t errlen)
{
    PGresult *res =
        PQexecParams (conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus (res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    s_failed (conn, res, what, err, errlen);
    PQclear (res);
    return NULL;
}

int
ef_pg_script (PGconn *conn, const char *sql, const char *what, char *err,
              size_t errlen)
{
    PGresult *res = PQexec (conn, sql);
    ExecStatusType st = res ? PQresultStatus (res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear (res);
        return 0;
    }
    s_failed (conn, res, what, err, errlen);
    PQclear (res);
    return -1;
}

PGresult *
ef_pg_exec_schema (PGconn *conn, const char *schema, const char *sql_fmt,
                   int nparams, const char *const *params, const char *what,
                   char *err, size_t errlen)
{
    char *quoted = ef_pg_ident (conn, schema);
    char *sql = NULL;
    /* every %s in sql_fmt is the schema (unused arguments are ignored) */
    if (!quoted || asprintf (&sql, sql_fmt, quoted, quoted, quoted) < 0) {
        free (quoted);
        snprintf (err, errlen, "%s: out of memory", what);
        return NULL;
    }
    free (quoted);
    PGresult *res = ef_pg_exec (conn, sql, nparams, params, what, err, errlen);
    free (sql);
    return res;
}

void
ef_pg_array_put_text (ef_buf_t *t, const char *s)
{
    ef_buf_put (t, "\"", 1);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            ef_buf_put (t, "\\", 1);
        ef_buf_put (t, s, 1);
    }
    ef_buf_put (t, "\"", 1);
}
