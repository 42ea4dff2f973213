/*  log.h — leveled logging tagged with the calling actor's name.

    Lines go to stderr, as text (the default)
      2026-11-26T06:48:24.123Z INFO  db-writer[2]: connected to host=/tmp port=5432
    or, after ef_log_set_format (EF_LOG_FORMAT_JSON), as one JSON object a
    line for Loki, Elasticsearch or journald:
      {"time":"2026-11-26T06:48:24.123Z","level":"info",
       "actor":"db-writer[2]","instance":2,
       "message":"connected to host=/tmp port=5432"}
    (actor as in the text line and in the metrics' actor label; instance
    only for an actor's numbered instance).
    The name is thread-local: the runtime sets it for each actor thread, so
    actor code never passes it. Thread-safe; one write(2) per line.

    A line can carry structured fields, which JSON lines add as keys of
    their own and text lines leave out (the message already says them):
      ef_info_kv (EF_KV (EF_KV_STR ("job_id", id), EF_KV_U64 ("rows", n)),
                  "upload %s: %" PRIu64 " rows", id, n);
*/
#ifndef EF_LOG_H
#define EF_LOG_H

#include <stdarg.h>
#include <stdint.h>

#include "embedflow/export.h"

EF_API_BEGIN

typedef enum {
    EF_LOG_ERROR = 0,
    EF_LOG_WARN = 1,
    EF_LOG_INFO = 2,
    EF_LOG_DEBUG = 3,
} ef_log_level_t;

typedef enum {
    EF_LOG_FORMAT_TEXT = 0, /* timestamp, level, name: message */
    EF_LOG_FORMAT_JSON = 1, /* one JSON object a line */
} ef_log_format_t;

typedef enum {
    EF_KV_TYPE_STR, /* v.s; NULL is written as null */
    EF_KV_TYPE_I64, /* v.i */
    EF_KV_TYPE_U64, /* v.u */
    EF_KV_TYPE_F64, /* v.d; NaN and infinities are written as null */
} ef_kv_type_t;

/* One structured field of a log line. Borrowed for the call only. */
typedef struct {
    const char *key;   /* JSON key; NULL ends a list */
    ef_kv_type_t type; /* which member of v holds the value */
    union {
        const char *s; /* EF_KV_TYPE_STR */
        int64_t i;     /* EF_KV_TYPE_I64 */
        uint64_t u;    /* EF_KV_TYPE_U64 */
        double d;      /* EF_KV_TYPE_F64 */
    } v;               /* the value */
} ef_kv_t;

#define EF_KV_STR(k, x)                                                        \
    ((ef_kv_t){.key = (k), .type = EF_KV_TYPE_STR, .v.s = (x)})
#define EF_KV_I64(k, x)                                                        \
    ((ef_kv_t){.key = (k), .type = EF_KV_TYPE_I64, .v.i = (int64_t) (x)})
#define EF_KV_U64(k, x)                                                        \
    ((ef_kv_t){.key = (k), .type = EF_KV_TYPE_U64, .v.u = (uint64_t) (x)})
#define EF_KV_F64(k, x)                                                        \
    ((ef_kv_t){.key = (k), .type = EF_KV_TYPE_F64, .v.d = (double) (x)})
/* A list of fields for ef_log_kv, ended for you. */
#define EF_KV(...) ((const ef_kv_t[]){__VA_ARGS__, {.key = NULL}})

/* Sets the process-wide threshold; lines above it are dropped. */
void ef_log_set_level (ef_log_level_t level);
ef_log_level_t ef_log_level (void);

/* Sets the process-wide line format (text until called). */
void ef_log_set_format (ef_log_format_t format);
ef_log_format_t ef_log_format (void);

/* Reads "text" or "json" into *format. Returns 0, -1 for anything else. */
int ef_log_format_parse (const char *text, ef_log_format_t *format);

/* Names the calling thread in every line it logs (copied, max 63 chars).
   A name "actor[N]" is an actor's instance N: JSON lines also give N as
   the key instance. */
void ef_log_set_name (const char *name);

void ef_log (ef_log_level_t level, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
void ef_vlog (ef_log_level_t level, const char *fmt, va_list args);

/* ef_log with structured fields (a list ended by a NULL key, see EF_KV;
   NULL for none). A field named like a key of the line itself (time,
   level, actor, instance, message) is written with a "field." prefix. */
void ef_log_kv (ef_log_level_t level, const ef_kv_t *fields, const char *fmt,
                ...) __attribute__ ((format (printf, 3, 4)));
void ef_vlog_kv (ef_log_level_t level, const ef_kv_t *fields, const char *fmt,
                 va_list args);

#define ef_error(...) ef_log (EF_LOG_ERROR, __VA_ARGS__)
#define ef_warn(...)  ef_log (EF_LOG_WARN, __VA_ARGS__)
#define ef_info(...)  ef_log (EF_LOG_INFO, __VA_ARGS__)
#define ef_debug(...)                                                          \
    do {                                                                       \
        if (ef_log_level () >= EF_LOG_DEBUG)                                   \
            ef_log (EF_LOG_DEBUG, __VA_ARGS__);                                \
    } while (0)

#define ef_error_kv(fields, ...) ef_log_kv (EF_LOG_ERROR, fields, __VA_ARGS__)
#define ef_warn_kv(fields, ...)  ef_log_kv (EF_LOG_WARN, fields, __VA_ARGS__)
#define ef_info_kv(fields, ...)  ef_log_kv (EF_LOG_INFO, fields, __VA_ARGS__)

EF_API_END

#endif
