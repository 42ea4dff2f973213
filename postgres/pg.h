/*  pg.h — connecting to PostgreSQL and judging its errors.

    One place decides how embedflow opens a libpq connection (which
    defaults, which settings every session gets), how a connection string
    is shown to people (never with a secret), and which failures are
    worth retrying.
*/
#ifndef EF_PG_H
#define EF_PG_H

#include <libpq-fe.h>
#include <stddef.h>

#include "embedflow/buf.h"

typedef enum {
    EF_PG_TRANSIENT, /* retry later: connection, deadlock, resources */
    EF_PG_PERMANENT, /* the same statement will fail again: data, schema */
} ef_pg_class_t;

/* Opens a connection. conninfo is a libpq key/value string or a
   postgresql:// URL; NULL means DATABASE_URL when that is set, else (like
   "") libpq's defaults and PG* variables. Settings in conninfo win over
   the defaults added here: connect_timeout=5 (unless PGCONNECT_TIMEOUT is
   set), TCP keepalives (idle 30 s, interval 10 s, 3 probes) and app_name
   as fallback_application_name (so application_name in conninfo or
   PGAPPNAME wins); app_name may be NULL. client_encoding is always UTF8,
   as protobuf strings are. A conninfo ef_pg_redact refuses is not tried.
   Returns the connection, or NULL with err holding the reason and the
   redacted conninfo (never a secret). */
PGconn *ef_pg_connect (const char *conninfo, const char *app_name, char *err,
                       size_t errlen);

/* Copies conninfo to out as written, with the value of every keyword
   that libpq itself hides (its dispchar '*': password, sslpassword and
   any it adds) replaced by "***", in key/value form, in URL query
   parameters (names percent-decoded as libpq does) and in a URL's
   user:password@. The values of keywords libpq does not know (a typo
   such as passwd, or an alias) and of a dbname that looks like a
   connection string are masked too. Every message that shows a conninfo
   goes through here. NULL conninfo gives "", a string without '=' (a
   database name) is copied. Always terminates out (when outlen > 0).
   Returns 0 when libpq can use the string; -1 when it cannot parse it,
   or when it is a URL whose unencoded '@' or '/' would make libpq read
   part of a password as a host or database: the output then stops at
   the first token it cannot read ("...") and why (may be NULL) says what
   is wrong without quoting any value. */
int ef_pg_redact (const char *conninfo, char *out, size_t outlen, char *why,
                  size_t whylen);

/* Classifies a SQLSTATE. NULL or "" (no server error: the connection was
   lost) is transient, as are classes 08, 53, 58 and 57P01-57P03, 40001,
   40P01. Everything else (22 data, 23 constraints, 42 syntax or access,
   ...) is permanent. */
ef_pg_class_t ef_pg_classify (const char *sqlstate);

/* Classifies a failed result on conn: transient whenever the connection
   is gone, else by the result's SQLSTATE. res may be NULL. */
ef_pg_class_t ef_pg_classify_result (PGconn *conn, const PGresult *res);

/* Writes the error of res ("message: detail"), or the connection's error
   when res has none, into out on one line, cut to outlen. sqlstate (at
   least 6 bytes) receives the code, "" when there is none. Either out or
   sqlstate may be NULL. */
void ef_pg_error (PGconn *conn, const PGresult *res, char *sqlstate, char *out,
                  size_t outlen);

/* Quotes name as an SQL identifier into a heap string (free with free),
   NULL when out of memory or when name is not valid in the connection's
   encoding. */
char *ef_pg_ident (PGconn *conn, const char *name);

/* The database connection of an actor instance: connects to the
   pipeline's database as application "embedflow NAME" and brings the
   schema to the current version. On failure the reason (never a
   password) goes to ef_actor_fail and NULL is returned, so an init can
   simply return -1. The caller owns the connection (PQfinish). */
struct ef_actor;
PGconn *ef_pg_open_for_actor (struct ef_actor *actor);

/* Runs one statement with text params (nparams may be 0). Returns the
   result (the caller clears it), or NULL with err = "what: SQLSTATE
   message" when it failed. */
PGresult *ef_pg_exec (PGconn *conn, const char *sql, int nparams,
                      const char *const *params, const char *what, char *err,
                      size_t errlen);

/* Runs a script of statements (the simple protocol: no params; several
   statements outside an explicit transaction run as one). Returns 0, or
   -1 with err as ef_pg_exec says. */
int ef_pg_script (PGconn *conn, const char *sql, const char *what, char *err,
                  size_t errlen);

/* Runs sql_fmt, every "%s" in it standing for the quoted schema, with
   nparams text params. Returns the result (the caller clears it), or
   NULL with err = "what: SQLSTATE message" when it failed. */
PGresult *ef_pg_exec_schema (PGconn *conn, const char *schema,
                             const char *sql_fmt, int nparams,
                             const char *const *params, const char *what,
                             char *err, size_t errlen);

/* Appends s to t as a quoted element of a text array literal
   ("{\"a\",\"b\"}"), escaping quotes and backslashes. */
void ef_pg_array_put_text (ef_buf_t *t, const char *s);

#endif
