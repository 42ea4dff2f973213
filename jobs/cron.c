/*  cron.c — parsing cron expressions and finding the next firing time. */
#include "jobs/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One field's rules. */
typedef struct {
    const char *name;         /* for errors */
    int lo, hi;               /* accepted numbers */
    const char *const *names; /* names for lo, lo+1, ... or NULL */
} s_field_t;

static const char *const s_month_names[] = {"jan", "feb", "mar", "apr", "may",
                                            "jun", "jul", "aug", "sep", "oct",
                                            "nov", "dec", NULL};
static const char *const s_day_names[] = {"sun", "mon", "tue", "wed",
                                          "thu", "fri", "sat", NULL};

static const s_field_t s_fields[] = {
    {"second", 0, 59, NULL},         {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},           {"day of month", 1, 31, NULL},
    {"month", 1, 12, s_month_names}, {"day of week", 0, 7, s_day_names},
};

/* Reads a number or a name at *p. Returns 0, -1 when there is neither. */
static int
s_value (const char **p, const s_field_t *f, int *out)
{
    const char *s = *p;
    if (isdigit ((unsigned char) *s)) {
        long v = 0;
        while (isdigit ((unsigned char) *s) && v < 1000)
            v = v * 10 + (*s++ - '0');
        *out = (int) v;
        *p = s;
        return 0;
    }
    for (int i = 0; f->names && f->names[i]; i++)
        if (strncasecmp (s, f->names[i], 3) == 0
            && !isalpha ((unsigned char) s[3])) {
            *out = f->lo + i;
            *p = s + 3;
            return 0;
        }
    return -1;
}

/* Parses one field (text [s, end)) into the bit set *bits. Returns 0 or
   -1 with err. */
static int
s_parse_field (const char *s, const char *end, int index, int shown,
               uint64_t *bits, bool *any, char *err, size_t errlen)
{
    const s_field_t *f = &s_fields[index];
    *bits = 0;
    *any = end - s == 1 && *s == '*';
    char text[64];
    snprintf (text, sizeof text, "%.*s", (int) (end - s), s);
    while (s < end) {
        const char *item = s;
        int a = f->lo, b = f->hi, step = 1;
        if (*s == '*')
            s++;
        else {
            if (s_value (&s, f, &a) != 0)
                goto bad;
            b = a;
            if (*s == '-') {
                s++;
                if (s_value (&s, f, &b) != 0)
                    goto bad;
            }
        }
        if (*s == '/') {
            s++;
            if (!isdigit ((unsigned char) *s))
                goto bad;
            step = 0;
            while (isdigit ((unsigned char) *s) && step < 1000)
                step = step * 10 + (*s++ - '0');
            if (step == 0) {
                snprintf (err, errlen, "field %d (%s): step 0 in '%s'", shown,
                          f->name, text);
                return -1;
            }
            if (item[0] != '*' && b == a)
                b = f->hi; /* "5/15" means 5-hi/15 */
        }
        if (s < end && *s != ',')
            goto bad;
        if (a < f->lo || a > f->hi || b < f->lo || b > f->hi) {
            snprintf (err, errlen, "field %d (%s): %d is out of range %d-%d",
                      shown, f->name, a < f->lo || a > f->hi ? a : b, f->lo,
                      f->hi);
            return -1;
        }
        if (a > b) {
            snprintf (err, errlen, "field %d (%s): range %d-%d runs backwards",
                      shown, f->name, a, b);
            return -1;
        }
        for (int v = a; v <= b; v += step)
            *bits |= (uint64_t) 1 << v;
        if (s < end)
            s++; /* the comma */
        if (s == end && end[-1] == ',')
            goto bad;
    }
    if (*bits == 0)
        goto bad;
    return 0;
bad:
    snprintf (err, errlen, "field %d (%s): cannot read '%s'", shown, f->name,
              text);
    return -1;
}

int
ef_cron_parse (const char *expr, ef_cron_t *out, char *err, size_t errlen)
{
    static const struct {
        const char *alias;
        const char *expr;
    } aliases[] = {
        {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
        {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
        {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    memset (out, 0, sizeof *out);
    if (!expr)
        expr = "";
    while (isspace ((unsigned char) *expr))
        expr++;
    if (*expr == '@') {
        size_t i;
        for (i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
            if (strcasecmp (expr, aliases[i].alias) == 0)
                break;
        if (i == sizeof aliases / sizeof aliases[0]) {
            snprintf (err, errlen,
                      "unknown alias '%.40s' (@yearly, @annually, @monthly, "
                      "@weekly, @daily, @midnight, @hourly)",
                      expr);
            return -1;
        }
        expr = aliases[i].expr;
    }
    const char *start[7], *end[7];
    int n = 0;
    for (const char *p = expr; *p;) {
        while (isspace ((unsigned char) *p))
            p++;
        if (!*p)
            break;
        if (n == 6) {
            snprintf (err, errlen, "too many fields (5, or 6 with seconds)");
            return -1;
        }
        start[n] = p;
        while (*p && !isspace ((unsigned char) *p))
            p++;
        end[n++] = p;
    }
    if (n < 5) {
        snprintf (err, errlen,
                  "%d field%s: need 5 (minute hour day-of-month month "
                  "day-of-week), or 6 with seconds first",
                  n, n == 1 ? "" : "s");
        return -1;
    }
    int first = n == 6 ? 0 : 1; /* index in s_fields of the first given */
    uint64_t bits[6] = {1, 0, 0, 0, 0, 0};
    bool any[6] = {false};
    for (int i = 0; i < n; i++)
        if (s_parse_field (start[i], end[i], first + i, i + 1, &bits[first + i],
                           &any[first + i], err, errlen)
            != 0)
            return -1;
    out->seconds = bits[0];
    out->minutes = bits[1];
    out->hours = (uint32_t) bits[2];
    out->days = (uint32_t) bits[3];
    out->months = (uint16_t) bits[4];
    /* 7 is Sunday too */
    out->weekdays = (uint8_t) ((bits[5] | bits[5] >> 7) & 0x7F);
    out->days_any = any[3];
    out->weekdays_any = any[5];
    /* as in cronie: such jobs run at least hourly whatever the clock does */
    out->wildcard = *start[1 - first] == '*' || *start[2 - first] == '*';
    return 0;
}

/* True when the day of tm fires. */
static bool
s_day_matches (const ef_cron_t *c, const struct tm *tm)
{
    bool dom = (c->days >> tm->tm_mday) & 1;
    bool dow = (c->weekdays >> tm->tm_wday) & 1;
    if (c->days_any && c->weekdays_any)
        return true;
    if (c->days_any)
        return dow;
    if (c->weekdays_any)
        return dom;
    return dom || dow;
}

int64_t
ef_cron_next (const ef_cron_t *c, int64_t after)
{
    time_t t = (time_t) after + 1;
    time_t limit = t + (time_t) 5 * 366 * 86400;
    struct tm tm;
    while (t < limit) {
        gmtime_r (&t, &tm);
        if (!((c->months >> (tm.tm_mon + 1)) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        }
        else if (!s_day_matches (c, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        }
        else if (!((c->hours >> tm.tm_hour) & 1)) {
            tm.tm_hour++;
            tm.tm_min = tm.tm_sec = 0;
        }
        else if (!((c->minutes >> tm.tm_min) & 1)) {
            tm.tm_min++;
            tm.tm_sec = 0;
        }
        else if (!((c->seconds >> tm.tm_sec) & 1))
            tm.tm_sec++;
        else
            return (int64_t) t;
        t = timegm (&tm); /* normalizes the overflowing field */
    }
    return -1;
}

int64_t
ef_cron_next_tz (const ef_cron_t *c, const ef_tz_t *tz, int64_t after)
{
    if (!tz)
        return ef_cron_next (c, after);
    const int64_t horizon = (int64_t) 5 * 366 * 86400;
    if (after < -((int64_t) 1 << 50) || after > (int64_t) 1 << 50)
        return -1; /* some 35 million years: beyond any useful calendar */
    /* Walk the spans of constant UTC offset from after + 1 on. In a span
       [start, end) with offset off, wall time w happens at UTC w - off;
       ef_cron_next on wall times (read as UTC) finds the candidates. */
    int64_t u = after + 1;
    while (u <= after + horizon) {
        int64_t start = ef_tz_prev_transition (tz, u);
        int64_t end = ef_tz_next_transition (tz, u);
        int32_t off = ef_tz_offset (tz, u);
        int32_t before =
            start == INT64_MIN ? off : ef_tz_offset (tz, start - 1);
        if (u == start && before < off && !c->wildcard) {
            /* jump forward: wall times [start + before, start + off) never
               happen; a job due in there fires as the clock jumps */
            int64_t n = ef_cron_next (c, start + before - 1);
            if (n != -1 && n < start + off)
                return start;
        }
        /* jump back: wall times [start + off, start + before) were shown
           before start already; a fixed-time job does not fire again */
        int64_t from = u + off - 1;
        if (before > off && !c->wildcard && from < start + before - 1)
            from = start + before - 1;
        int64_t n = ef_cron_next (c, from);
        if (n == -1)
            return -1;
        if (end == INT64_MAX || n < end + off)
            return n - off;
        u = end;
    }
    return -1;
}
