/*  cron.h — cron expressions for scheduled pull jobs (UTC or a tz.h zone).

    Five fields: minute hour day-of-month month day-of-week, each `*`, a
    number, a range `a-b`, a step `a-b/n` (or `*` followed by `/n` for
    the whole range), or a comma list of those; months and weekdays also
    by name (jan..dec, sun..sat; 0 and 7 are Sunday). A sixth field in
    front gives seconds (for tests and sub-minute jobs). Aliases: @yearly (@annually), @monthly, @weekly,
    @daily (@midnight), @hourly. When both day fields are restricted, a
    day matching either one fires (as in Vixie cron). The grpc-puller
    runs its job on one (actors.grpc-puller.schedule).
*/
#ifndef EF_CRON_H
#define EF_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jobs/tz.h"

typedef struct {
    uint64_t seconds;  /* bit s set: fires at second s (only 0 with 5 fields) */
    uint64_t minutes;  /* bit m: minute m, 0-59 */
    uint32_t hours;    /* bit h: hour h, 0-23 */
    uint32_t days;     /* bit d: day of month d, 1-31 */
    uint16_t months;   /* bit m: month m, 1-12 */
    uint8_t weekdays;  /* bit w: weekday w, 0-6 with Sunday 0 */
    bool days_any;     /* day of month was '*' */
    bool weekdays_any; /* day of week was '*' */
    bool wildcard;     /* minute or hour field starts with '*' (see below) */
} ef_cron_t;

/* Parses expr into out. Returns 0, or -1 with err naming the field and
   the reason ("field 2 (hour): 24 is out of range 0-23"). */
int ef_cron_parse (const char *expr, ef_cron_t *out, char *err, size_t errlen);

/* The first time (Unix seconds, UTC) strictly after `after` at which
   cron fires; -1 when none within about five years (e.g. February 30). */
int64_t ef_cron_next (const ef_cron_t *cron, int64_t after);

/* The first instant (Unix seconds) strictly after `after` at which cron
   fires on the local wall clock of tz; tz NULL is UTC (= ef_cron_next).
   Same -1 as ef_cron_next. Around daylight-saving changes it behaves as
   cronie does:
   - wall times skipped by a jump forward (02:30 when 02:00 becomes
     03:00): a job due in the gap fires once, at the first instant after
     the jump (03:00 new time);
   - wall times repeated by a jump back (02:30 twice when 03:00 becomes
     02:00): a job fires once, at the first occurrence.
   Jobs whose minute or hour field starts with '*' (cron->wildcard: every
   minute, every 15 minutes written with a star, "* 2 * * *", @hourly) run
   on the clock's rhythm instead: they fire in both passes of a repeated
   hour and not for skipped wall times, so they never pause or bunch up.
   Thread-safe (tz is only read). */
int64_t ef_cron_next_tz (const ef_cron_t *cron, const ef_tz_t *tz,
                         int64_t after);

#endif
