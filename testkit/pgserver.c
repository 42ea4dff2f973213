/*  pgserver.c — a private PostgreSQL for `embedflow run` and `demo`.

    The server is started by exec'ing `postgres` directly (fork, setsid,
    exec) rather than through `pg_ctl start`, because pg_ctl builds a
    /bin/sh command line from the data directory path; with our own
    argument vector no user path is ever seen by a shell. Readiness is
    PQping until the server accepts connections; stop is a fast shutdown
    (SIGINT, as `pg_ctl stop -m fast` sends) and a wait for the exit.

    Children are started with fork+exec rather than posix_spawn because,
    as root, they must drop to the cluster owner (setgroups, setgid,
    setuid) between the two. Only async-signal-safe calls run in the
    child, as the parent may already have threads.
*/
#include "testkit/pgserver.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "embedflow/log.h"

#define S_PORT 5432
/* Crash recovery replays up to max_wal_size of WAL: allow minutes. */
#define S_START_TIMEOUT_MS (300 * 1000)
/* A server found running may still be starting up or recovering. */
#define S_REUSE_TIMEOUT_MS (120 * 1000)
/* A fast shutdown writes a checkpoint; pg_ctl waits 60 s too. */
#define S_STOP_TIMEOUT_MS (60 * 1000)
#define S_MAX_GROUPS      64

struct ef_pgserver {
    pid_t pid;             /* postmaster we started; 0 when reused */
    char pgdata[PATH_MAX]; /* the cluster directory */
};

/* Who the server and initdb run as. */
typedef struct {
    bool switch_user;           /* we are root: drop to uid/gid in children */
    uid_t uid;                  /* cluster owner */
    gid_t gid;                  /* its primary group */
    gid_t groups[S_MAX_GROUPS]; /* its supplementary groups */
    int ngroups;                /* entries used in groups */
    char name[64];              /* user name, for messages */
} s_user_t;

/* What postmaster.pid says about a server on the cluster. */
typedef struct {
    pid_t pid;              /* postmaster process id */
    int port;               /* port number (names the socket) */
    char sockdir[PATH_MAX]; /* first unix socket directory */
    char status[16];        /* starting, ready, standby or stopping */
} s_pidfile_t;

/* Formats into err (always terminated). */
static void
s_errf (char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err, errlen, fmt, args);
    va_end (args);
}

/* Appends to err, truncating silently when full. */
static void
s_errcat (char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    size_t used = strlen (err);
    if (used + 1 >= errlen)
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (err + used, errlen - used, fmt, args);
    va_end (args);
}

/* Joins dir and name into out. Returns 0, -1 when it does not fit. */
static int
s_path (char *out, size_t len, const char *dir, const char *name)
{
    size_t dlen = strlen (dir), nlen = strlen (name);
    if (dlen + 1 + nlen >= len)
        return -1;
    memcpy (out, dir, dlen);
    out[dlen] = '/';
    memcpy (out + dlen + 1, name, nlen + 1);
    return 0;
}

/* Returns the milliseconds of a monotonic clock. */
static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms milliseconds (signals do not shorten it much). */
static void
s_sleep_ms (int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* True when dir/name is an executable regular file. */
static bool
s_is_exec (const char *dir, const char *name)
{
    char path[PATH_MAX];
    struct stat st;
    if (s_path (path, sizeof path, dir, name) < 0)
        return false;
    return stat (path, &st) == 0 && S_ISREG (st.st_mode)
           && access (path, X_OK) == 0;
}

/* True when dir holds both programs we run. */
static bool
s_is_bindir (const char *dir)
{
    return s_is_exec (dir, "initdb") && s_is_exec (dir, "postgres");
}

static pid_t s_spawn (char *const argv[], const s_user_t *user, int out_fd,
                      bool new_session, char *err, size_t errlen);
static int s_wait_exit (pid_t pid);

/* The major version of the server in bin directory dir, as its
   `postgres --version` says ("postgres (PostgreSQL) 15.8 ..."); -1 when
   it cannot be run or says something else. */
static long
s_bindir_major (const char *dir)
{
    char postgres[PATH_MAX], out[256] = "", err[256];
    int fd[2];
    if (s_path (postgres, sizeof postgres, dir, "postgres") != 0
        || pipe (fd) != 0)
        return -1;
    char *argv[] = {postgres, "--version", NULL};
    s_user_t self = {.switch_user = false};
    pid_t pid = s_spawn (argv, &self, fd[1], false, err, sizeof err);
    close (fd[1]);
    size_t used = 0;
    ssize_t n;
    while (pid > 0 && used + 1 < sizeof out
           && (n = read (fd[0], out + used, sizeof out - 1 - used)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        used += (size_t) n;
    }
    close (fd[0]);
    out[used] = '\0';
    if (pid <= 0 || s_wait_exit (pid) != 0)
        return -1;
    const char *v = strstr (out, "(PostgreSQL) ");
    return v ? strtol (v + 13, NULL, 10) : -1;
}

/* Finds the directory holding initdb and postgres: for an existing
   cluster, the binaries of its own major version (a cluster only runs
   under its own), first on PATH (a server built with extensions, such
   as pgvector, put there), then /usr/lib/postgresql/VERSION/bin; for a
   new one, the first on PATH, then the newest
   /usr/lib/postgresql/N/bin. Returns 0, or -1 with err when PostgreSQL
   is not installed. */
static int
s_find_bindir (const char *pgdata, char *out, size_t len, char *err,
               size_t errlen)
{
    char path[PATH_MAX];
    if (s_path (path, sizeof path, pgdata, "PG_VERSION") == 0) {
        FILE *f = fopen (path, "r");
        if (f) {
            char version[32] = "";
            if (fgets (version, sizeof version, f)) {
                version[strcspn (version, " \r\n")] = '\0';
                const char *env = getenv ("PATH");
                char *copy = env ? strdup (env) : NULL;
                char *save = NULL;
                for (char *dir = copy ? strtok_r (copy, ":", &save) : NULL; dir;
                     dir = strtok_r (NULL, ":", &save))
                    if (*dir == '/' && s_is_bindir (dir)
                        && s_bindir_major (dir) == strtol (version, NULL, 10)) {
                        snprintf (out, len, "%s", dir);
                        free (copy);
                        fclose (f);
                        return 0;
                    }
                free (copy);
                snprintf (out, len, "/usr/lib/postgresql/%s/bin", version);
                if (strchr (version, '/') == NULL && s_is_bindir (out)) {
                    fclose (f);
                    return 0;
                }
            }
            fclose (f);
        }
    }
    const char *env = getenv ("PATH");
    if (env) {
        char *copy = strdup (env);
        if (!copy) {
            s_errf (err, errlen, "out of memory");
            return -1;
        }
        char *save = NULL;
        for (char *dir = strtok_r (copy, ":", &save); dir;
             dir = strtok_r (NULL, ":", &save)) {
            if (*dir == '/' && s_is_bindir (dir)) {
                snprintf (out, len, "%s", dir);
                free (copy);
                return 0;
            }
        }
        free (copy);
    }
    long best = -1;
    DIR *d = opendir ("/usr/lib/postgresql");
    if (d) {
        struct dirent *entry;
        while ((entry = readdir (d)) != NULL) {
            char *end = NULL;
            long version = strtol (entry->d_name, &end, 10);
            if (end == entry->d_name || *end != '\0' || version <= best)
                continue;
            char dir[PATH_MAX];
            snprintf (dir, sizeof dir, "/usr/lib/postgresql/%ld/bin", version);
            if (s_is_bindir (dir)) {
                best = version;
                snprintf (out, len, "%s", dir);
            }
        }
        closedir (d);
    }
    if (best >= 0)
        return 0;
    s_errf (err, errlen,
            "no PostgreSQL server found (initdb and postgres, on PATH or in "
            "/usr/lib/postgresql/*/bin): install it with "
            "`apt-get install postgresql`, or pass --database");
    return -1;
}

/* Creates path and its missing parents with mode. Returns 0 or -1. */
static int
s_mkdirs (const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf (buf, sizeof buf, "%s", path) >= (int) sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir (buf, mode) == -1 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir (buf, mode) == -1 && errno != EEXIST)
        return -1;
    return 0;
}

/* True when dir exists and holds no entry. */
static bool
s_dir_is_empty (const char *dir)
{
    DIR *d = opendir (dir);
    if (!d)
        return false;
    bool empty = true;
    struct dirent *entry;
    while (empty && (entry = readdir (d)) != NULL)
        empty = strcmp (entry->d_name, ".") == 0
                || strcmp (entry->d_name, "..") == 0;
    closedir (d);
    return empty;
}

/* Fills user from a passwd entry. */
static void
s_user_from_passwd (s_user_t *user, const struct passwd *pw)
{
    user->uid = pw->pw_uid;
    user->gid = pw->pw_gid;
    snprintf (user->name, sizeof user->name, "%s", pw->pw_name);
    int n = S_MAX_GROUPS;
    if (getgrouplist (pw->pw_name, pw->pw_gid, user->groups, &n) == -1) {
        user->groups[0] = pw->pw_gid; /* too many: keep the primary */
        n = 1;
    }
    user->ngroups = n;
}

/* Decides who runs the cluster. As a normal user: ourselves. As root
   (which PostgreSQL refuses): the owner of an existing cluster directory,
   else the `postgres` account. Returns 0, or -1 with err. */
static int
s_resolve_user (const char *pgdata, s_user_t *user, char *err, size_t errlen)
{
    memset (user, 0, sizeof *user);
    if (geteuid () != 0) {
        user->uid = geteuid ();
        user->gid = getegid ();
        struct passwd *pw = getpwuid (user->uid);
        snprintf (user->name, sizeof user->name, "%s",
                  pw ? pw->pw_name : "(this user)");
        return 0;
    }
    user->switch_user = true;
    struct stat st;
    if (stat (pgdata, &st) == 0 && st.st_uid != 0) {
        struct passwd *pw = getpwuid (st.st_uid);
        if (pw)
            s_user_from_passwd (user, pw);
        else {
            user->uid = st.st_uid;
            user->gid = st.st_gid;
            user->groups[0] = st.st_gid;
            user->ngroups = 1;
            snprintf (user->name, sizeof user->name, "uid %u",
                      (unsigned) st.st_uid);
        }
        return 0;
    }
    struct passwd *pw = getpwnam ("postgres");
    if (!pw || pw->pw_uid == 0) {
        s_errf (err, errlen,
                "PostgreSQL refuses to run as root and there is no "
                "'postgres' user to run it as: run embedflow as a normal "
                "user, create that user, or pass --database");
        return -1;
    }
    s_user_from_passwd (user, pw);
    return 0;
}

/* Writes a message to fd 2 from a forked child (async-signal-safe). */
static void
s_child_say (const char *a, const char *b)
{
    ssize_t rc = write (STDERR_FILENO, a, strlen (a));
    rc = write (STDERR_FILENO, b, strlen (b));
    rc = write (STDERR_FILENO, "\n", 1);
    (void) rc;
}

/* In a forked child: drops to the cluster owner. Returns 0 or -1. */
static int
s_child_become (const s_user_t *user)
{
    if (!user->switch_user)
        return 0;
    if (setgroups ((size_t) user->ngroups, user->groups) == -1
        || setgid (user->gid) == -1 || setuid (user->uid) == -1)
        return -1;
    return 0;
}

/* The environment for a child: ours without systemd's notification
   variables. PostgreSQL is built with sd_notify: given NOTIFY_SOCKET it
   would announce READY=1 and STOPPING=1 of its own on embedflow's socket.
   The strings are borrowed from environ; NULL when out of memory. */
static char **
s_child_env (void)
{
    static const char *const drop[] = {
        "NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="};
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc (n + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool keep = true;
        for (size_t d = 0; d < sizeof drop / sizeof drop[0]; d++)
            if (strncmp (environ[i], drop[d], strlen (drop[d])) == 0)
                keep = false;
        if (keep)
            env[k++] = environ[i];
    }
    return env;
}

/* Starts argv[0] (an absolute path) with stdin from /dev/null, stdout and
   stderr on out_fd, default signal handling, no inherited descriptors,
   in / and, when new_session, in a session of its own (so a Ctrl-C at
   the terminal does not reach it). Returns the pid, or -1 with err. */
static pid_t
s_spawn (char *const argv[], const s_user_t *user, int out_fd, bool new_session,
         char *err, size_t errlen)
{
    char **env = s_child_env ();
    if (!env) {
        s_errf (err, errlen, "cannot start %s: out of memory", argv[0]);
        return -1;
    }
    pid_t pid = fork ();
    if (pid == -1) {
        s_errf (err, errlen, "cannot start %s: %s", argv[0], strerror (errno));
        free (env);
        return -1;
    }
    if (pid > 0) {
        free (env);
        return pid;
    }

    /* Child. */
    sigset_t none;
    sigemptyset (&none);
    sigprocmask (SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset (&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction (sig, &dfl, NULL); /* fails harmlessly for KILL etc. */
    if (new_session)
        setsid ();
    int null_fd = open ("/dev/null", O_RDONLY);
    if (null_fd >= 0 && null_fd != STDIN_FILENO) {
        dup2 (null_fd, STDIN_FILENO);
        close (null_fd);
    }
    if (out_fd >= 0) {
        dup2 (out_fd, STDOUT_FILENO);
        dup2 (out_fd, STDERR_FILENO);
    }
    if (close_range (3, ~0U, 0) == -1)
        for (int fd = 3; fd < 1024; fd++)
            close (fd);
    if (chdir ("/") == -1) {
        s_child_say ("embedflow: cannot chdir to / for ", argv[0]);
        _exit (126);
    }
    if (s_child_become (user) == -1) {
        s_child_say ("embedflow: cannot switch user for ", argv[0]);
        _exit (126);
    }
    execve (argv[0], argv, env);
    s_child_say ("embedflow: cannot execute ", argv[0]);
    _exit (127);
}

/* Waits for a child and returns its exit code (128+N when killed by
   signal N), -1 when it cannot be waited for. */
static int
s_wait_exit (pid_t pid)
{
    int status;
    while (waitpid (pid, &status, 0) == -1) {
        if (errno != EINTR)
            return -1;
    }
    if (WIFEXITED (status))
        return WEXITSTATUS (status);
    return WIFSIGNALED (status) ? 128 + WTERMSIG (status) : -1;
}

/* True when the cluster owner can reach path with mode (R_OK|W_OK|X_OK):
   every parent directory must grant it search permission. */
static bool
s_user_can_access (const s_user_t *user, const char *path, int mode)
{
    if (!user->switch_user)
        return access (path, mode) == 0;
    pid_t pid = fork ();
    if (pid == -1)
        return true; /* cannot check; the server will tell */
    if (pid == 0) {
        if (s_child_become (user) == -1)
            _exit (2);
        _exit (access (path, mode) == 0 ? 0 : 1);
    }
    return s_wait_exit (pid) == 0;
}

/* Appends the last lines of the log file to err. */
static void
s_append_log_tail (char *err, size_t errlen, const char *log_path)
{
    int fd = open (log_path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return;
    char buf[1600];
    off_t size = lseek (fd, 0, SEEK_END);
    off_t from =
        size > (off_t) sizeof buf - 1 ? size - (off_t) sizeof buf + 1 : 0;
    ssize_t n = size > 0 ? pread (fd, buf, sizeof buf - 1, from) : 0;
    close (fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *start = buf;
    if (from > 0) { /* skip the cut first line */
        char *nl = strchr (buf, '\n');
        start = nl ? nl + 1 : buf;
    }
    /* The last few lines say why; older ones are earlier runs. */
    int lines = 0;
    for (char *p = start; *p; p++)
        lines += *p == '\n';
    s_errcat (err, errlen, "\n%s ends with:", log_path);
    char *save = NULL;
    for (char *line = strtok_r (start, "\n", &save); line;
         line = strtok_r (NULL, "\n", &save))
        if (lines-- <= 8)
            s_errcat (err, errlen, "\n    %s", line);
}

/* Reads postmaster.pid: pid (line 1), port (4), socket directory (5),
   status (8).
   Returns 1 when it names a live PostgreSQL process, 0 when there is no
   file or it is stale (the pid is gone, or now belongs to a process that
   is not postgres, as after a reboot). */
static int
s_read_pidfile (const char *pgdata, s_pidfile_t *info)
{
    memset (info, 0, sizeof *info);
    char path[PATH_MAX];
    if (s_path (path, sizeof path, pgdata, "postmaster.pid") < 0)
        return 0;
    FILE *f = fopen (path, "r");
    if (!f)
        return 0;
    char line[PATH_MAX + 2];
    for (int i = 1; i <= 8 && fgets (line, sizeof line, f); i++) {
        line[strcspn (line, "\r\n")] = '\0';
        if (i == 1)
            info->pid = (pid_t) strtol (line, NULL, 10);
        else if (i == 4)
            info->port = (int) strtol (line, NULL, 10);
        else if (i == 5) {
            size_t n = strlen (line);
            if (n >= sizeof info->sockdir)
                n = 0; /* cannot be a usable socket path */
            memcpy (info->sockdir, line, n);
            info->sockdir[n] = '\0';
        }
        else if (i == 8)
            snprintf (info->status, sizeof info->status, "%.15s", line);
    }
    fclose (f);
    if (info->pid <= 0)
        return 0;
    if (kill (info->pid, 0) == -1 && errno == ESRCH)
        return 0;
    char comm_path[64], comm[32] = "";
    snprintf (comm_path, sizeof comm_path, "/proc/%d/comm", (int) info->pid);
    f = fopen (comm_path, "r");
    if (f) {
        if (fgets (comm, sizeof comm, f))
            comm[strcspn (comm, "\n")] = '\0';
        fclose (f);
        if (strcmp (comm, "postgres") != 0 && strcmp (comm, "postmaster") != 0)
            return 0;
    }
    return 1;
}

/* Writes a libpq conninfo for a unix socket directory, quoting the path
   so that spaces and quotes in it survive. Returns 0, -1 if too long. */
static int
s_make_conninfo (char *out, size_t len, const char *sockdir, int port)
{
    char quoted[2 * PATH_MAX + 3];
    size_t q = 0;
    quoted[q++] = '\'';
    for (const char *p = sockdir; *p; p++) {
        if (*p == '\'' || *p == '\\')
            quoted[q++] = '\\';
        quoted[q++] = *p;
    }
    quoted[q++] = '\'';
    quoted[q] = '\0';
    int n = snprintf (out, len, "host=%s port=%d user=postgres dbname=postgres",
                      quoted, port);
    return n < 0 || (size_t) n >= len ? -1 : 0;
}

/* Polls the server until it accepts connections. child > 0 is our own
   postmaster (its exit ends the wait), other > 0 a server we found (its
   disappearance ends the wait). Returns 0 when ready, 1 when the process
   went away (*status has its exit code for a child), -1 on time out. */
static int
s_wait_ready (const char *pgdata, const char *conninfo, pid_t child,
              pid_t other, int timeout_ms, int *status)
{
    char ping[PATH_MAX * 2 + 128];
    snprintf (ping, sizeof ping, "%s connect_timeout=2", conninfo);
    int64_t deadline = s_now_ms () + timeout_ms;
    int delay = 20;
    while (true) {
        /* Ping only once postmaster.pid no longer says "starting": each
           early attempt would log a FATAL line in the server log. */
        s_pidfile_t info;
        bool starting = s_read_pidfile (pgdata, &info) == 1
                        && strncmp (info.status, "starting", 8) == 0;
        if (!starting && PQping (ping) == PQPING_OK)
            return 0;
        if (child > 0) {
            int st;
            pid_t rc = waitpid (child, &st, WNOHANG);
            if (rc == child) {
                *status =
                    WIFEXITED (st) ? WEXITSTATUS (st) : 128 + WTERMSIG (st);
                return 1;
            }
            if (rc == -1 && errno == ECHILD) {
                *status = -1;
                return 1;
            }
        }
        if (other > 0 && kill (other, 0) == -1 && errno == ESRCH)
            return 1;
        if (s_now_ms () >= deadline)
            return -1;
        s_sleep_ms (delay);
        if (delay < 200)
            delay *= 2;
    }
}

/* Appends embedflow's settings to a new cluster's postgresql.conf, where
   an operator can still change them. Returns 0 or -1 with err. */
static int
s_write_settings (const char *pgdata, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (s_path (path, sizeof path, pgdata, "postgresql.conf") < 0) {
        s_errf (err, errlen, "%s: path too long", pgdata);
        return -1;
    }
    FILE *f = fopen (path, "a");
    if (!f) {
        s_errf (err, errlen, "cannot open %s: %s", path, strerror (errno));
        return -1;
    }
    /* Bulk ingest writes a lot of WAL: fewer forced checkpoints and more
       cache than the tiny defaults. fsync stays on: this is user data. */
    fputs ("\n# Set by embedflow when it created this cluster (edit freely).\n"
           "max_wal_size = 2GB\n"
           "shared_buffers = 256MB\n",
           f);
    if (fclose (f) != 0) {
        s_errf (err, errlen, "cannot write %s: %s", path, strerror (errno));
        return -1;
    }
    return 0;
}

/* Waits for a server that is already running on the cluster and fills
   conninfo. Returns 0, 1 when it went away meanwhile, -1 with err. */
static int
s_reuse (const char *pgdata, const s_pidfile_t *info, char *conninfo,
         size_t len, char *err, size_t errlen)
{
    if (info->sockdir[0] != '/') {
        s_errf (err, errlen,
                "PostgreSQL (pid %d) already runs on %s without a unix "
                "socket; stop it or pass --database",
                (int) info->pid, pgdata);
        return -1;
    }
    if (s_make_conninfo (conninfo, len, info->sockdir, info->port) < 0) {
        s_errf (err, errlen, "conninfo buffer too small");
        return -1;
    }
    int status = 0;
    int rc = s_wait_ready (pgdata, conninfo, 0, info->pid, S_REUSE_TIMEOUT_MS,
                           &status);
    if (rc == -1)
        s_errf (err, errlen,
                "PostgreSQL (pid %d) runs on %s but does not accept "
                "connections at %s",
                (int) info->pid, pgdata, info->sockdir);
    return rc;
}

ef_pgserver_t *
ef_pgserver_start (const char *data_dir, char *conninfo_out, size_t len,
                   char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!data_dir || !*data_dir) {
        s_errf (err, errlen,
                "no data directory given for the private "
                "PostgreSQL (--data-dir)");
        return NULL;
    }
    /* As root the cluster owner must be able to pass through data_dir. */
    mode_t dir_mode = geteuid () == 0 ? 0755 : 0700;
    if (s_mkdirs (data_dir, dir_mode) == -1) {
        s_errf (err, errlen, "cannot create data directory %s: %s", data_dir,
                strerror (errno));
        return NULL;
    }
    char base[PATH_MAX];
    if (!realpath (data_dir, base)) {
        s_errf (err, errlen, "%s: %s", data_dir, strerror (errno));
        return NULL;
    }
    ef_pgserver_t *self = calloc (1, sizeof *self);
    if (!self) {
        s_errf (err, errlen, "out of memory");
        return NULL;
    }
    int log_fd = -1;
    char rundir[PATH_MAX], log_path[PATH_MAX];
    if (s_path (self->pgdata, sizeof self->pgdata, base, "pgdata") < 0
        || s_path (rundir, sizeof rundir, base, "run") < 0
        || s_path (log_path, sizeof log_path, base, "postgres.log") < 0) {
        s_errf (err, errlen, "%s: path too long", base);
        goto failed;
    }
    /* The socket path must fit in sockaddr_un. */
    struct sockaddr_un addr;
    if (strlen (rundir) + strlen ("/.s.PGSQL.5432") >= sizeof addr.sun_path) {
        s_errf (err, errlen,
                "data directory path %s is too long for a unix socket "
                "(at most %zu characters): pass a shorter --data-dir",
                base, sizeof addr.sun_path - strlen ("/run/.s.PGSQL.5432") - 1);
        goto failed;
    }

    /* A server left running (by an earlier run killed before it could
       stop it, or by another embedflow on the same directory): reuse it. */
    s_pidfile_t info;
    if (s_read_pidfile (self->pgdata, &info) == 1) {
        int rc = s_reuse (self->pgdata, &info, conninfo_out, len, err, errlen);
        if (rc == 0) {
            ef_info ("using the PostgreSQL already running on %s (pid %d)",
                     self->pgdata, (int) info.pid);
            return self;
        }
        if (rc == -1)
            goto failed;
        /* It exited meanwhile: start our own. */
    }

    s_user_t user;
    char bindir[PATH_MAX];
    if (s_resolve_user (self->pgdata, &user, err, errlen) == -1
        || s_find_bindir (self->pgdata, bindir, sizeof bindir, err, errlen)
               == -1)
        goto failed;

    if (mkdir (self->pgdata, 0700) == -1 && errno != EEXIST) {
        s_errf (err, errlen, "cannot create %s: %s", self->pgdata,
                strerror (errno));
        goto failed;
    }
    if (mkdir (rundir, 0700) == -1 && errno != EEXIST) {
        s_errf (err, errlen, "cannot create %s: %s", rundir, strerror (errno));
        goto failed;
    }
    /* Trust authentication is safe only because no one but the cluster
       owner (and root) can enter the socket directory. */
    if (chmod (rundir, 0700) == -1) {
        s_errf (err, errlen, "cannot chmod %s: %s", rundir, strerror (errno));
        goto failed;
    }
    if (user.switch_user) {
        struct stat st;
        if (stat (self->pgdata, &st) == 0 && st.st_uid == 0
            && chown (self->pgdata, user.uid, user.gid) == -1) {
            s_errf (err, errlen, "cannot chown %s to %s: %s", self->pgdata,
                    user.name, strerror (errno));
            goto failed;
        }
        if (chown (rundir, user.uid, user.gid) == -1) {
            s_errf (err, errlen, "cannot chown %s to %s: %s", rundir, user.name,
                    strerror (errno));
            goto failed;
        }
        if (!s_user_can_access (&user, self->pgdata, R_OK | W_OK | X_OK)
            || !s_user_can_access (&user, rundir, R_OK | W_OK | X_OK)) {
            s_errf (err, errlen,
                    "PostgreSQL refuses to run as root, so it runs as user "
                    "'%s', who cannot reach %s (every parent directory "
                    "needs o+x, and e.g. /root is 0700): pass "
                    "--data-dir with a path that user can reach, such as "
                    "--data-dir /var/lib/embedflow",
                    user.name, self->pgdata);
            goto failed;
        }
    }
    log_fd = open (log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd == -1) {
        s_errf (err, errlen, "cannot open %s: %s", log_path, strerror (errno));
        goto failed;
    }

    char version_file[PATH_MAX];
    s_path (version_file, sizeof version_file, self->pgdata, "PG_VERSION");
    if (access (version_file, F_OK) != 0) {
        if (!s_dir_is_empty (self->pgdata)) {
            s_errf (err, errlen,
                    "%s exists, is not empty, and is not a PostgreSQL data "
                    "directory (no PG_VERSION): move it away or pass "
                    "another --data-dir",
                    self->pgdata);
            goto failed;
        }
        ef_info ("creating a private PostgreSQL cluster in %s (as %s)",
                 self->pgdata, user.name);
        char initdb[PATH_MAX];
        s_path (initdb, sizeof initdb, bindir, "initdb");
        /* Trust is safe behind the 0700 socket directory. The C locale
           with UTF-8 needs no system locale installed and sorts by code
           point, which is all the stored text needs. fsync stays on. */
        char *argv[] = {
            initdb,  "-D", self->pgdata, "-U",         "postgres", "-A",
            "trust", "-E", "UTF8",       "--locale=C", NULL,
        };
        pid_t pid = s_spawn (argv, &user, log_fd, false, err, errlen);
        if (pid == -1)
            goto failed;
        int code = s_wait_exit (pid);
        if (code != 0) {
            s_errf (err, errlen, "initdb of %s failed (exit %d)", self->pgdata,
                    code);
            s_append_log_tail (err, errlen, log_path);
            goto failed;
        }
        if (s_write_settings (self->pgdata, err, errlen) == -1)
            goto failed;
    }

    char postgres[PATH_MAX];
    s_path (postgres, sizeof postgres, bindir, "postgres");
    /* Socket directories are a list: quote ours, doubling quotes. */
    char sockopt[2 * PATH_MAX + 64];
    size_t o = (size_t) snprintf (sockopt, sizeof sockopt,
                                  "unix_socket_directories=\"");
    for (const char *p = rundir; *p && o < sizeof sockopt - 3; p++) {
        if (*p == '"')
            sockopt[o++] = '"';
        sockopt[o++] = *p;
    }
    sockopt[o++] = '"';
    sockopt[o] = '\0';
    char portopt[32];
    snprintf (portopt, sizeof portopt, "port=%d", S_PORT);
    char *argv[] = {
        postgres,
        "-D",
        self->pgdata,
        "-c",
        portopt,
        "-c",
        "listen_addresses=", /* unix socket only: no TCP at all */
        "-c",
        sockopt,
        NULL,
    };
    self->pid = s_spawn (argv, &user, log_fd, true, err, errlen);
    if (self->pid == -1) {
        self->pid = 0;
        goto failed;
    }
    if (s_make_conninfo (conninfo_out, len, rundir, S_PORT) < 0) {
        s_errf (err, errlen, "conninfo buffer too small");
        goto failed;
    }
    int status = 0;
    int rc = s_wait_ready (self->pgdata, conninfo_out, self->pid, 0,
                           S_START_TIMEOUT_MS, &status);
    if (rc == 1) {
        self->pid = 0; /* reaped */
        /* Lost a race with another embedflow starting the same cluster? */
        if (s_read_pidfile (self->pgdata, &info) == 1
            && s_reuse (self->pgdata, &info, conninfo_out, len, err, errlen)
                   == 0) {
            ef_info ("using the PostgreSQL already running on %s (pid %d)",
                     self->pgdata, (int) info.pid);
            close (log_fd);
            return self;
        }
        s_errf (err, errlen,
                "PostgreSQL on %s exited during start-up (exit "
                "%d)",
                self->pgdata, status);
        s_append_log_tail (err, errlen, log_path);
        goto failed;
    }
    if (rc == -1) {
        s_errf (err, errlen,
                "PostgreSQL on %s did not accept connections "
                "within %d s",
                self->pgdata, S_START_TIMEOUT_MS / 1000);
        s_append_log_tail (err, errlen, log_path);
        goto failed;
    }
    close (log_fd);
    ef_info ("private PostgreSQL ready (pid %d), socket in %s", (int) self->pid,
             rundir);
    return self;

failed:
    if (log_fd >= 0)
        close (log_fd);
    ef_pgserver_stop (&self);
    return NULL;
}

/* Waits up to timeout_ms for our child to exit. Returns true if it did. */
static bool
s_reap_within (pid_t pid, int timeout_ms)
{
    int64_t deadline = s_now_ms () + timeout_ms;
    int delay = 10;
    while (true) {
        int st;
        pid_t rc = waitpid (pid, &st, WNOHANG);
        if (rc == pid || (rc == -1 && errno == ECHILD))
            return true;
        if (s_now_ms () >= deadline)
            return false;
        s_sleep_ms (delay);
        if (delay < 200)
            delay *= 2;
    }
}

void
ef_pgserver_stop (ef_pgserver_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_pgserver_t *self = *self_p;
    if (self->pid > 0) {
        /* SIGINT is PostgreSQL's fast shutdown: roll back sessions, write
           a checkpoint, exit. SIGQUIT (immediate) only if that hangs. */
        kill (self->pid, SIGINT);
        if (s_reap_within (self->pid, S_STOP_TIMEOUT_MS))
            ef_info ("private PostgreSQL stopped");
        else {
            ef_warn ("PostgreSQL (pid %d) did not stop within %d s: "
                     "stopping it immediately",
                     (int) self->pid, S_STOP_TIMEOUT_MS / 1000);
            kill (self->pid, SIGQUIT);
            if (!s_reap_within (self->pid, 10000)) {
                kill (self->pid, SIGKILL);
                s_reap_within (self->pid, 10000);
            }
        }
    }
    free (self);
    *self_p = NULL;
}
