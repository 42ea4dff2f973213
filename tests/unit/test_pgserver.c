/*  test_pgserver.c — the private PostgreSQL of `embedflow run` / `demo`. */
#include "ef_test.h"

/* The module under test, compiled in (static helpers and all). */
#include "testkit/pgserver.c"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A fresh directory under /tmp that the server's user can reach. */
static void
s_tempdir (char *out, size_t len)
{
    snprintf (out, len, "/tmp/ef-pgserver-XXXXXX");
    if (mkdtemp (out))
        chmod (out, 0755);
    else
        out[0] = '\0';
}

/* Removes dir and everything in it. */
static void
s_rmtree (const char *dir)
{
    char *argv[] = {"rm", "-rf", (char *) dir, NULL};
    pid_t pid = fork ();
    if (pid == 0) {
        execvp ("rm", argv);
        _exit (127);
    }
    int status;
    waitpid (pid, &status, 0);
}

/* True when a query over conninfo answers. */
static bool
s_answers (const char *conninfo)
{
    PGconn *conn = PQconnectdb (conninfo);
    bool ok = PQstatus (conn) == CONNECTION_OK;
    if (ok) {
        PGresult *res = PQexec (conn, "SELECT 1");
        ok = PQresultStatus (res) == PGRES_TUPLES_OK;
        PQclear (res);
    }
    PQfinish (conn);
    return ok;
}

EF_TEST (pgserver_start_reuse_stop)
{
    char base[64], data[128], conninfo[1024], again[1024], err[2048];
    s_tempdir (base, sizeof base);
    EF_REQUIRE (base[0]);
    snprintf (data, sizeof data, "%s/data", base);

    /* First start: initdb, then the server. */
    ef_pgserver_t *first =
        ef_pgserver_start (data, conninfo, sizeof conninfo, err, sizeof err);
    if (!first)
        fprintf (stderr, "%s\n", err);
    EF_REQUIRE (first);
    EF_CHECK (strstr (conninfo, "/run'") != NULL);
    EF_CHECK (s_answers (conninfo));

    /* A second start on the same directory finds it running. */
    ef_pgserver_t *second =
        ef_pgserver_start (data, again, sizeof again, err, sizeof err);
    EF_REQUIRE (second);
    EF_CHECK (strcmp (conninfo, again) == 0);
    ef_pgserver_stop (&second);
    EF_CHECK (second == NULL);
    EF_CHECK (s_answers (conninfo)); /* the reuser did not stop it */

    ef_pgserver_stop (&first);
    ef_pgserver_stop (&first);
    EF_CHECK (!s_answers (conninfo));
    char pidfile[256];
    snprintf (pidfile, sizeof pidfile, "%s/pgdata/postmaster.pid", data);
    EF_CHECK (access (pidfile, F_OK) != 0);

    /* Restart on the existing cluster keeps its data. */
    first =
        ef_pgserver_start (data, conninfo, sizeof conninfo, err, sizeof err);
    EF_REQUIRE (first);
    EF_CHECK (s_answers (conninfo));
    ef_pgserver_stop (&first);
    s_rmtree (base);
}

EF_TEST (pgserver_refuses_bad_directories)
{
    char base[64], data[512], conninfo[1024], err[2048];
    s_tempdir (base, sizeof base);
    EF_REQUIRE (base[0]);

    /* Too long for a unix socket path. */
    snprintf (data, sizeof data, "%s/%0100d", base, 0);
    EF_CHECK (
        ef_pgserver_start (data, conninfo, sizeof conninfo, err, sizeof err)
        == NULL);
    EF_CHECK (strstr (err, "too long") != NULL);

    /* pgdata that holds something else. */
    snprintf (data, sizeof data, "%s/other", base);
    char stray[600];
    snprintf (stray, sizeof stray, "%s/pgdata", data);
    mkdir (data, 0755);
    mkdir (stray, 0700);
    snprintf (stray, sizeof stray, "%s/pgdata/file", data);
    FILE *f = fopen (stray, "w");
    if (f)
        fclose (f);
    EF_CHECK (
        ef_pgserver_start (data, conninfo, sizeof conninfo, err, sizeof err)
        == NULL);
    EF_CHECK (strstr (err, "PG_VERSION") != NULL);

    /* As root the server's user must reach the directory. */
    if (geteuid () == 0) {
        snprintf (data, sizeof data, "%s/closed", base);
        mkdir (data, 0700);
        snprintf (stray, sizeof stray, "%s/inner", data);
        EF_CHECK (ef_pgserver_start (stray, conninfo, sizeof conninfo, err,
                                     sizeof err)
                  == NULL);
        EF_CHECK (strstr (err, "--data-dir") != NULL);
    }
    EF_CHECK (
        ef_pgserver_start (NULL, conninfo, sizeof conninfo, err, sizeof err)
        == NULL);
    s_rmtree (base);
}
