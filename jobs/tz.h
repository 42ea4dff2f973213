/*  tz.h — IANA time zones read from the system tz database, for cron jobs
    that run on local wall-clock time.

    ef_tz_load reads the compiled TZif file of a zone (RFC 8536, versions
    1 to 4) from $TZDIR or /usr/share/zoneinfo (Debian package tzdata) and
    keeps its transitions; instants after the last transition come from
    the POSIX TZ rule in the file's footer ("CET-1CEST,M3.5.0,M10.5.0/3"),
    so "slim" files work for every year. The process-wide TZ, tzset and
    localtime are never used: a loaded zone is immutable, and every
    function below may be called from any thread at once.

    Files with leap seconds ("right/...") are refused: embedflow's clock
    is POSIX time, which has none.
*/
#ifndef EF_TZ_H
#define EF_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct _ef_tz_t ef_tz_t;

/* Loads the zone `name` ("Europe/Berlin"). NULL, "", "UTC" and "Etc/UTC"
   give UTC without reading any file. Returns NULL with err set when the
   name is not a plain relative zone name ("../x", "/etc/x"), no such zone
   exists ("unknown time zone 'Mars/Olympus' (...)"), or the file is not a
   valid TZif file. The caller owns the result (ef_tz_destroy). */
ef_tz_t *ef_tz_load (const char *name, char *err, size_t errlen);

/* Frees the zone and sets *self_p to NULL; safe on NULL and twice. */
void ef_tz_destroy (ef_tz_t **self_p);

/* Seconds east of UTC of local time at the instant `utc` (Unix seconds):
   3600 for Berlin in winter, 19800 for Kolkata. NULL is UTC (0). */
int32_t ef_tz_offset (const ef_tz_t *self, int64_t utc);

/* The name the zone was loaded by ("UTC" for NULL/""; also for a NULL
   zone). Owned by the zone. */
const char *ef_tz_name (const ef_tz_t *self);

/* The first instant strictly after `utc` at which the UTC offset
   changes (a transition that changes only the abbreviation or the DST
   flag does not count); INT64_MAX when it never changes again. */
int64_t ef_tz_next_transition (const ef_tz_t *self, int64_t utc);

/* The last instant at or before `utc` at which the UTC offset changed
   (offset(T - 1) != offset(T)); INT64_MIN when there is none. */
int64_t ef_tz_prev_transition (const ef_tz_t *self, int64_t utc);

#endif
