/*  log.h — leveled logging tagged with the calling actor's name.

    Lines go to stderr as
      2026-11-26T06:48:24.123Z INFO  db-writer[2]: connected to host=/tmp port=5432
    The name is thread-local: the runtime sets it for each actor thread, so
    actor code never passes it. Thread-safe; one write(2) per line.
*/
#ifndef EF_LOG_H
#define EF_LOG_H

#include <stdarg.h>

typedef enum {
    EF_LOG_ERROR = 0,
    EF_LOG_WARN = 1,
    EF_LOG_INFO = 2,
    EF_LOG_DEBUG = 3,
} ef_log_level_t;

/* Sets the process-wide threshold; lines above it are dropped. */
void ef_log_set_level (ef_log_level_t level);
ef_log_level_t ef_log_level (void);

/* Names the calling thread in every line it logs (copied, max 63 chars). */
void ef_log_set_name (const char *name);

void ef_log (ef_log_level_t level, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
void ef_vlog (ef_log_level_t level, const char *fmt, va_list args);

#define ef_error(...) ef_log (EF_LOG_ERROR, __VA_ARGS__)
#define ef_warn(...)  ef_log (EF_LOG_WARN, __VA_ARGS__)
#define ef_info(...)  ef_log (EF_LOG_INFO, __VA_ARGS__)
#define ef_debug(...)                                                          \
    do {                                                                       \
        if (ef_log_level () >= EF_LOG_DEBUG)                                   \
            ef_log (EF_LOG_DEBUG, __VA_ARGS__);                                \
    } while (0)

#endif
