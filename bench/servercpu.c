/*  servercpu.c — the server's CPU time from /proc: see servercpu.h. */
#include "bench/servercpu.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parent pid and CPU ticks (utime, stime, cutime, cstime) of pid from
   /proc/PID/stat. Returns 0, -1 when it cannot be read. */
static int
s_proc_stat (int pid, int *ppid, unsigned long long t[4])
{
    char path[64], buf[1024];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf[n] = 0;
    char *p = strrchr (buf, ')');
    if (!p
        || sscanf (p + 2,
                   "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                   "%llu %llu",
                   ppid, &t[0], &t[1], &t[2], &t[3])
               != 5)
        return -1;
    return 0;
}

/* User + system CPU seconds of process pid from /proc, -1 when it cannot
   be read (not on this host, gone). */
static double
s_proc_cpu (int pid)
{
    char path[64], buf[64];
    /* a remote server's pid may exist here too, as another program */
    snprintf (path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    bool postgres =
        fgets (buf, sizeof buf, f) && strncmp (buf, "postgres", 8) == 0;
    fclose (f);
    int ppid;
    unsigned long long t[4];
    if (!postgres || s_proc_stat (pid, &ppid, t) != 0)
        return -1;
    return (double) (t[0] + t[1]) / (double) sysconf (_SC_CLK_TCK);
}

/* CPU seconds of a whole server: its postmaster pm, the children it has
   reaped (cutime, cstime: every connection that ended) and those alive.
   -1 when pm cannot be read. */
static double
s_server_cpu (int pm)
{
    int ppid;
    unsigned long long t[4];
    if (s_proc_cpu (pm) < 0 || s_proc_stat (pm, &ppid, t) != 0)
        return -1;
    unsigned long long ticks = t[0] + t[1] + t[2] + t[3];
    DIR *d = opendir ("/proc");
    struct dirent *e;
    while (d && (e = readdir (d))) {
        int pid = atoi (e->d_name);
        if (pid > 0 && s_proc_stat (pid, &ppid, t) == 0 && ppid == pm)
            ticks += t[0] + t[1];
    }
    if (d)
        closedir (d);
    return (double) ticks / (double) sysconf (_SC_CLK_TCK);
}

/* The postmaster of the local postgres process pid, -1 when pid is not
   a postgres process here or its parent is not one. */
static int
s_postmaster_of (int pid)
{
    int ppid;
    unsigned long long t[4];
    if (s_proc_cpu (pid) < 0 || s_proc_stat (pid, &ppid, t) != 0
        || s_proc_cpu (ppid) < 0)
        return -1;
    return ppid;
}

/* Whether a Citus node name is this host: a socket directory or a
   loopback address. */
static bool
s_local_node (const char *name)
{
    return name[0] == '/' || strcmp (name, "localhost") == 0
           || strncmp (name, "127.", 4) == 0 || strcmp (name, "::1") == 0;
}

/* With Citus, the figure must count the workers too (they do
   most of the work): finds the postmaster of the coordinator (through
   our backend) and of every worker (through its checkpointer, a child
   that lives as long as the server: run_command_on_workers' backends
   may be gone before /proc is read),
   when every node is on this host; otherwise pg cpu s is n/a and the
   legend says which node is elsewhere. */
void
ef_servercpu_init (ef_servercpu_t *self, PGconn *monitor, const char *appname,
                   bool citus)
{
    memset (self, 0, sizeof *self);
    self->monitor = monitor;
    snprintf (self->appname, sizeof self->appname, "%s", appname);
    snprintf (self->note, sizeof self->note,
              "the PostgreSQL server's processes");
    if (!citus)
        return;
    self->n_nodes = -1;
    int pm = s_postmaster_of (PQbackendPID (self->monitor));
    if (pm < 0) {
        snprintf (self->note, sizeof self->note,
                  "n/a: the Citus coordinator is not on this host");
        return;
    }
    PGresult *res =
        PQexec (self->monitor,
                "SELECT nodename, nodeport, success, result"
                " FROM run_command_on_workers ('SELECT pid FROM"
                "   pg_stat_activity WHERE backend_type = ''checkpointer''')"
                " ORDER BY 1, 2");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        snprintf (self->note, sizeof self->note,
                  "n/a: cannot reach the Citus workers: %s",
                  PQerrorMessage (self->monitor));
        self->note[strcspn (self->note, "\n")] = '\0';
        PQclear (res);
        return;
    }
    int n = 0;
    self->node_pm[n++] = pm;
    for (int i = 0; i < PQntuples (res); i++) {
        const char *host = PQgetvalue (res, i, 0);
        int wpm =
            strcmp (PQgetvalue (res, i, 2), "t") == 0 && s_local_node (host)
                ? s_postmaster_of (atoi (PQgetvalue (res, i, 3)))
                : -1;
        if (wpm < 0 || n == EF_SERVERCPU_MAX_NODES) {
            snprintf (self->note, sizeof self->note,
                      "n/a: Citus worker %s:%s is not on this host (pg cpu "
                      "s counts a cluster only when every node is here)",
                      host, PQgetvalue (res, i, 1));
            PQclear (res);
            return;
        }
        self->node_pm[n++] = wpm;
    }
    PQclear (res);
    self->n_nodes = n;
    snprintf (self->note, sizeof self->note,
              "every process of the Citus coordinator's and its %d "
              "workers' servers (other clients' sessions included)",
              n - 1);
}

/* Reads the CPU time of the server's background processes and of our
   own sessions (application_name); with a Citus cluster on this host,
   of every node's whole server. */
void
ef_servercpu_read (const ef_servercpu_t *self, ef_servercpu_sample_t *out)
{
    memset (out, 0, sizeof *out);
    if (self->n_nodes != 0) {
        out->ok = self->n_nodes > 0;
        for (int i = 0; i < self->n_nodes; i++) {
            out->pid[out->n] = self->node_pm[i];
            out->seconds[out->n] = s_server_cpu (self->node_pm[i]);
            out->ok = out->ok && out->seconds[out->n++] >= 0;
        }
        return;
    }
    const char *params[1] = {self->appname};
    PGresult *res = PQexecParams (
        self->monitor,
        "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid ()"
        " AND (application_name = $1 OR backend_type <> 'client backend')",
        1, NULL, params, NULL, NULL, 0);
    if (!res || PQresultStatus (res) != PGRES_TUPLES_OK) {
        PQclear (res);
        return;
    }
    /* Our own backend tells whether the server runs on this host (a
       remote one gives no figure rather than a wrong one). Here, a
       listed process that cannot be read has ended since the list: a
       session or a parallel worker. Counting that as remote lost the
       whole figure now and then. */
    out->ok = s_proc_cpu (PQbackendPID (self->monitor)) >= 0;
    for (int i = 0;
         out->ok && i < PQntuples (res) && out->n < EF_SERVERCPU_MAX_PIDS;
         i++) {
        int pid = atoi (PQgetvalue (res, i, 0));
        double s = s_proc_cpu (pid);
        if (s < 0)
            continue;
        out->pid[out->n] = pid;
        out->seconds[out->n++] = s;
    }
    PQclear (res);
}

/* CPU the server spent between two readings, -1 when unknown. */
double
ef_servercpu_diff (const ef_servercpu_sample_t *before,
                   const ef_servercpu_sample_t *after)
{
    if (!before->ok || !after->ok)
        return -1;
    double total = 0;
    for (int i = 0; i < after->n; i++) {
        double was = 0;
        for (int j = 0; j < before->n; j++)
            if (before->pid[j] == after->pid[i])
                was = before->seconds[j];
        total += after->seconds[i] - was;
    }
    return total;
}
