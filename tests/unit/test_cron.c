/*  test_cron.c — cron expressions: fields, aliases, errors, next times. */
#include "ef_test.h"

#include <string.h>
#include <time.h>

#include "jobs/cron.h"

/* The next firing of expr after t, or -2 when expr does not parse. */
static int64_t
s_next (const char *expr, int64_t t)
{
    ef_cron_t c;
    char err[200];
    if (ef_cron_parse (expr, &c, err, sizeof err) != 0) {
        fprintf (stderr, "%s: %s\n", expr, err);
        return -2;
    }
    return ef_cron_next (&c, t);
}

EF_TEST (cron_fields_and_next)
{
    int64_t t = ef_test_utc (2026, 11, 26, 7, 58, 30); /* a Thursday */
    EF_CHECK (s_next ("* * * * *", t) == ef_test_utc (2026, 11, 26, 7, 59, 0));
    EF_CHECK (s_next ("*/15 * * * *", t)
              == ef_test_utc (2026, 11, 26, 8, 0, 0));
    EF_CHECK (s_next ("5,10 9-17/4 * * *", t)
              == ef_test_utc (2026, 11, 26, 9, 5, 0));
    EF_CHECK (s_next ("0 0 1 jan *", t) == ef_test_utc (2027, 1, 1, 0, 0, 0));
    EF_CHECK (s_next ("30 6 * * MON-fri", t)
              == ef_test_utc (2026, 11, 27, 6, 30, 0));
    EF_CHECK (s_next ("0 12 * * 7", t) == ef_test_utc (2026, 11, 29, 12, 0, 0));
    EF_CHECK (s_next ("0 12 * * sun", t)
              == ef_test_utc (2026, 11, 29, 12, 0, 0));
    /* both day fields restricted: either one fires */
    EF_CHECK (s_next ("0 0 1 * 6", t) == ef_test_utc (2026, 11, 28, 0, 0, 0));
    /* six fields: seconds first */
    EF_CHECK (s_next ("* * * * * *", t) == t + 1);
    EF_CHECK (s_next ("*/20 * * * * *", t)
              == ef_test_utc (2026, 11, 26, 7, 58, 40));
    /* leap day */
    EF_CHECK (s_next ("0 0 29 2 *", t) == ef_test_utc (2028, 2, 29, 0, 0, 0));
    /* never */
    EF_CHECK (s_next ("0 0 30 2 *", t) == -1);
}

EF_TEST (cron_aliases)
{
    int64_t t = ef_test_utc (2026, 11, 26, 7, 58, 30);
    EF_CHECK (s_next ("@hourly", t) == ef_test_utc (2026, 11, 26, 8, 0, 0));
    EF_CHECK (s_next ("@daily", t) == ef_test_utc (2026, 11, 27, 0, 0, 0));
    EF_CHECK (s_next ("@midnight", t) == ef_test_utc (2026, 11, 27, 0, 0, 0));
    EF_CHECK (s_next ("@weekly", t) == ef_test_utc (2026, 11, 29, 0, 0, 0));
    EF_CHECK (s_next ("@monthly", t) == ef_test_utc (2026, 12, 1, 0, 0, 0));
    EF_CHECK (s_next ("@yearly", t) == ef_test_utc (2027, 1, 1, 0, 0, 0));
    EF_CHECK (s_next ("@annually", t) == ef_test_utc (2027, 1, 1, 0, 0, 0));
}

/* True when expr is refused with an error containing want. */
static bool
s_refused (const char *expr, const char *want)
{
    ef_cron_t c;
    char err[200] = "";
    if (ef_cron_parse (expr, &c, err, sizeof err) == 0) {
        fprintf (stderr, "'%s' was accepted\n", expr);
        return false;
    }
    if (!strstr (err, want)) {
        fprintf (stderr, "'%s': '%s' does not say '%s'\n", expr, err, want);
        return false;
    }
    return true;
}

EF_TEST (cron_invalid)
{
    EF_CHECK (s_refused ("", "0 fields"));
    EF_CHECK (s_refused ("* * * *", "4 fields"));
    EF_CHECK (s_refused ("* * * * * * *", "too many fields"));
    EF_CHECK (s_refused ("60 * * * *", "field 1 (minute): 60 is out of range"));
    EF_CHECK (s_refused ("* 24 * * *", "field 2 (hour): 24 is out of range"));
    EF_CHECK (s_refused ("* * 0 * *", "field 3 (day of month)"));
    EF_CHECK (s_refused ("* * * 13 *", "field 4 (month)"));
    EF_CHECK (s_refused ("* * * * 8", "field 5 (day of week)"));
    EF_CHECK (s_refused ("* * * foo *", "field 4 (month): cannot read 'foo'"));
    EF_CHECK (s_refused ("*/0 * * * *", "step 0"));
    EF_CHECK (s_refused ("5-1 * * * *", "runs backwards"));
    EF_CHECK (s_refused ("1, * * * *", "cannot read '1,'"));
    EF_CHECK (s_refused ("1-x * * * *", "cannot read"));
    EF_CHECK (s_refused ("61 * * * * *", "field 1 (second)"));
    EF_CHECK (s_refused ("@often", "unknown alias"));
}
