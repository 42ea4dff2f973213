/*  log.c — leveled, actor-tagged logging to stderr. */
#include "embedflow/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int s_level = EF_LOG_INFO;
static _Thread_local char s_name[64] = "embedflow";

static const char *s_level_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

void
ef_log_set_level (ef_log_level_t level)
{
    atomic_store (&s_level, (int) level);
}

ef_log_level_t
ef_log_level (void)
{
    return (ef_log_level_t) atomic_load (&s_level);
}

void
ef_log_set_name (const char *name)
{
    snprintf (s_name, sizeof s_name, "%s", name ? name : "embedflow");
}

void
ef_vlog (ef_log_level_t level, const char *fmt, va_list args)
{
    if ((int) level > atomic_load (&s_level))
        return;
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r (&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf (
        line, sizeof line,
        "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        ts.tv_nsec / 1000000, s_level_names[level], s_name);
    if (n < 0 || (size_t) n >= sizeof line)
        return;
    int m = vsnprintf (line + n, sizeof line - (size_t) n - 1, fmt, args);
    if (m < 0)
        return;
    size_t len = (size_t) n + (size_t) m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep the line whole */
    line[len++] = '\n';
    /* One write per line so threads never interleave inside a line. */
    ssize_t rc = write (STDERR_FILENO, line, len);
    (void) rc;
}

void
ef_log (ef_log_level_t level, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    ef_vlog (level, fmt, args);
    va_end (args);
}
