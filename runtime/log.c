/*  log.c — leveled, actor-tagged logging to stderr, as text or JSON. */
#include "embedflow/log.h"
#include "embedflow/utf8.h"

#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_LINE_MAX 2048

static atomic_int s_level = EF_LOG_INFO;
static atomic_int s_format = EF_LOG_FORMAT_TEXT;
static _Thread_local char s_name[64] = "embedflow";
static _Thread_local int s_instance = -1; /* N of "actor[N]", -1 = none */

static const char *s_level_names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
static const char *s_level_keys[] = {"error", "warn", "info", "debug"};

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
ef_log_set_format (ef_log_format_t format)
{
    atomic_store (&s_format, (int) format);
}

ef_log_format_t
ef_log_format (void)
{
    return (ef_log_format_t) atomic_load (&s_format);
}

int
ef_log_format_parse (const char *text, ef_log_format_t *format)
{
    if (text && strcmp (text, "text") == 0)
        *format = EF_LOG_FORMAT_TEXT;
    else if (text && strcmp (text, "json") == 0)
        *format = EF_LOG_FORMAT_JSON;
    else
        return -1;
    return 0;
}

void
ef_log_set_name (const char *name)
{
    snprintf (s_name, sizeof s_name, "%s", name ? name : "embedflow");
    s_instance = -1;
    /* "db-writer[2]": instance 2 */
    const char *open = strrchr (s_name, '[');
    size_t len = strlen (s_name);
    if (open && open > s_name && len >= 3 && s_name[len - 1] == ']') {
        char *end;
        long n = strtol (open + 1, &end, 10);
        if (end == s_name + len - 1 && end > open + 1 && n >= 0 && n < 1000000)
            s_instance = (int) n;
    }
}

/* Writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (now, UTC) into out (>= 64 bytes). */
static void
s_timestamp (char *out, size_t len)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r (&ts.tv_sec, &tm);
    snprintf (out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
              tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

/* One write per line so threads never interleave inside a line. */
static void
s_write (const char *line, size_t len)
{
    ssize_t rc = write (STDERR_FILENO, line, len);
    (void) rc;
}

/* A JSON string of text with every byte that is not valid UTF-8 replaced
   by U+FFFD: a log line must never be lost to a peer's bad bytes (or to
   a message cut inside a character), and jansson refuses invalid UTF-8.
   NULL when out of memory. */
static json_t *
s_json_text (const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *) text;
    size_t i = 0;
    while (i < len) {
        size_t k = ef_utf8_seq (p + i, len - i);
        if (k == 0)
            break;
        i += k;
    }
    if (i == len)
        return json_stringn (text, len);
    char *clean = malloc (len * 3 + 1); /* each bad byte: 3 bytes */
    if (!clean)
        return NULL;
    size_t o = 0;
    for (i = 0; i < len;) {
        size_t k = ef_utf8_seq (p + i, len - i);
        if (k == 0) {
            memcpy (clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
        else {
            memcpy (clean + o, text + i, k);
            o += k;
            i += k;
        }
    }
    json_t *s = json_stringn (clean, o);
    free (clean);
    return s;
}

/* The JSON value of one field; NULL when out of memory. */
static json_t *
s_json_field (const ef_kv_t *f)
{
    switch (f->type) {
    case EF_KV_TYPE_STR:
        return f->v.s ? s_json_text (f->v.s, strlen (f->v.s)) : json_null ();
    case EF_KV_TYPE_I64:
        return json_integer ((json_int_t) f->v.i);
    case EF_KV_TYPE_U64:
        /* json_int_t is signed 64-bit: larger counts are given as reals */
        return f->v.u <= (uint64_t) INT64_MAX
                   ? json_integer ((json_int_t) f->v.u)
                   : json_real ((double) f->v.u);
    case EF_KV_TYPE_F64:
        return isfinite (f->v.d) ? json_real (f->v.d) : json_null ();
    }
    return json_null ();
}

/* True for the keys every JSON line has of its own. */
static bool
s_reserved (const char *key)
{
    static const char *const keys[] = {"time", "level", "actor", "instance",
                                       "message"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp (key, keys[i]) == 0)
            return true;
    return false;
}

/* Builds the JSON object of one line. NULL when out of memory. */
static json_t *
s_json_line (ef_log_level_t level, const ef_kv_t *fields, const char *message,
             size_t len)
{
    char when[64];
    s_timestamp (when, sizeof when);
    json_t *o = json_object ();
    if (!o)
        return NULL;
    int rc = json_object_set_new (o, "time", json_string (when));
    rc |= json_object_set_new (o, "level", json_string (s_level_keys[level]));
    rc |=
        json_object_set_new (o, "actor", s_json_text (s_name, strlen (s_name)));
    if (s_instance >= 0)
        rc |= json_object_set_new (o, "instance", json_integer (s_instance));
    rc |= json_object_set_new (o, "message", s_json_text (message, len));
    for (const ef_kv_t *f = fields; f && f->key && rc == 0; f++) {
        char key[96];
        snprintf (key, sizeof key, "%s%s", s_reserved (f->key) ? "field." : "",
                  f->key);
        rc |= json_object_set_new (o, key, s_json_field (f));
    }
    if (rc != 0) {
        json_decref (o);
        return NULL;
    }
    return o;
}

/* Writes one JSON line; when it cannot be built (out of memory), a line
   that says so, still JSON, so a reader never meets a line it cannot
   parse. */
static void
s_emit_json (ef_log_level_t level, const ef_kv_t *fields, const char *message,
             size_t len)
{
    char buf[S_LINE_MAX * 2];
    json_t *o = s_json_line (level, fields, message, len);
    size_t n = o ? json_dumpb (o, buf, sizeof buf - 1,
                               JSON_COMPACT | JSON_PRESERVE_ORDER)
                 : 0;
    if (n > 0 && n < sizeof buf - 1) {
        buf[n++] = '\n';
        s_write (buf, n);
    }
    else if (n > 0) {
        /* longer than the buffer (many fields, escaped text) */
        char *big = json_dumps (o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t blen = big ? strlen (big) : 0;
        char *line = big ? realloc (big, blen + 2) : NULL;
        if (line) {
            line[blen] = '\n';
            s_write (line, blen + 1);
            free (line);
        }
        else {
            free (big);
            n = 0;
        }
    }
    if (n == 0) {
        static const char lost[] =
            "{\"level\":\"error\",\"message\":\"a log line was lost: out of "
            "memory\"}\n";
        s_write (lost, sizeof lost - 1);
    }
    json_decref (o);
}

void
ef_vlog_kv (ef_log_level_t level, const ef_kv_t *fields, const char *fmt,
            va_list args)
{
    if ((int) level > atomic_load (&s_level))
        return;
    char line[S_LINE_MAX];
    if (atomic_load (&s_format) == EF_LOG_FORMAT_JSON) {
        int m = vsnprintf (line, sizeof line, fmt, args);
        if (m < 0)
            return;
        size_t len = (size_t) m < sizeof line ? (size_t) m : sizeof line - 1;
        s_emit_json (level, fields, line, len);
        return;
    }
    char when[64];
    s_timestamp (when, sizeof when);
    int n = snprintf (line, sizeof line, "%s %s %s: ", when,
                      s_level_names[level], s_name);
    if (n < 0 || (size_t) n >= sizeof line)
        return;
    int m = vsnprintf (line + n, sizeof line - (size_t) n - 1, fmt, args);
    if (m < 0)
        return;
    size_t len = (size_t) n + (size_t) m;
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* truncated: keep the line whole */
    line[len++] = '\n';
    s_write (line, len);
}

void
ef_vlog (ef_log_level_t level, const char *fmt, va_list args)
{
    ef_vlog_kv (level, NULL, fmt, args);
}

void
ef_log (ef_log_level_t level, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    ef_vlog_kv (level, NULL, fmt, args);
    va_end (args);
}

void
ef_log_kv (ef_log_level_t level, const ef_kv_t *fields, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    ef_vlog_kv (level, fields, fmt, args);
    va_end (args);
}
