/*  tz.c — TZif files (RFC 8536) and POSIX TZ rules, read without the C
    library's process-wide time zone state. */
#include "jobs/tz.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_MAX_FILE    (512 * 1024) /* real zone files are under 4 KiB */
#define S_MAX_NAME    255          /* longest zone name accepted */
#define S_DEFAULT_DIR "/usr/share/zoneinfo"
/* 400 Gregorian years are 146097 days, a whole number of weeks: a POSIX
   rule gives the same offset at t and t + S_CYCLE, so rule arithmetic is
   done on t reduced into one cycle either side of 1970 and never
   overflows, whatever t is. */
#define S_CYCLE ((int64_t) 146097 * 86400)

/* A day of the year in a POSIX TZ rule, and the local time on it. */
typedef struct {
    char kind;    /* 'J' Jn (1-365, Feb 29 never counted), 'D' n (0-365), 'M' */
    int day;      /* J and D: the day number; M: the weekday 0-6, Sunday 0 */
    int month;    /* M: 1-12 */
    int week;     /* M: 1-5, 5 meaning the last such weekday */
    int32_t time; /* seconds after local midnight, -167 h to 167 h */
} s_date_t;

/* A POSIX TZ rule, e.g. "CET-1CEST,M3.5.0,M10.5.0/3". */
typedef struct {
    int32_t std_off; /* standard time, seconds east of UTC */
    int32_t dst_off; /* daylight time, seconds east of UTC */
    bool has_dst;    /* false: std_off all year */
    s_date_t start;  /* daylight time begins (given in standard time) */
    s_date_t end;    /* daylight time ends (given in daylight time) */
} s_rule_t;

struct _ef_tz_t {
    char *name;        /* the name it was loaded by */
    size_t count;      /* number of transitions */
    int64_t *times;    /* transition instants, strictly ascending */
    uint8_t *types;    /* the type in effect from times[i] on */
    size_t type_count; /* number of local time types, at least 1 */
    int32_t *offsets;  /* seconds east of UTC of each type */
    bool has_rule;     /* the footer rule gives times after the last one */
    s_rule_t rule;     /* that rule */
};

/* --- calendar arithmetic (proleptic Gregorian, days since 1970-01-01) -- */

/* True when y is a leap year. */
static bool
s_leap (int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to January 1 of year y (y >= 1). */
static int64_t
s_year_start (int64_t y)
{
    int64_t p = y - 1;
    return 365 * p + p / 4 - p / 100 + p / 400 - 719162;
}

/* a / b rounded down (b > 0). */
static int64_t
s_floor_div (int64_t a, int64_t b)
{
    return a / b - (a % b < 0);
}

/* The year holding day `days` (within a few thousand years of 1970). */
static int64_t
s_year_of (int64_t days)
{
    int64_t y = 1970 + days / 366;
    while (s_year_start (y) > days)
        y--;
    while (s_year_start (y + 1) <= days)
        y++;
    return y;
}

/* The day (since 1970-01-01) that date d names in year y. */
static int64_t
s_date_day (const s_date_t *d, int64_t y)
{
    static const int before[12] = {0,   31,  59,  90,  120, 151,
                                   181, 212, 243, 273, 304, 334};
    static const int length[12] = {31, 28, 31, 30, 31, 30,
                                   31, 31, 30, 31, 30, 31};
    int64_t first = s_year_start (y);
    bool leap = s_leap (y);
    if (d->kind == 'J')
        return first + d->day - 1 + (leap && d->day >= 60);
    if (d->kind == 'D')
        return first + d->day;
    int64_t month_first = first + before[d->month - 1] + (leap && d->month > 2);
    int month_length = length[d->month - 1] + (leap && d->month == 2);
    int wday = (int) ((month_first % 7 + 7 + 4) % 7); /* 1970-01-01: Thu */
    int64_t day = month_first + (d->day - wday + 7) % 7 + (d->week - 1) * 7;
    if (day >= month_first + month_length)
        day -= 7; /* week 5: the last one */
    return day;
}

/* --- POSIX TZ rules ------------------------------------------------------ */

/* Splits t into *base + r, *base a multiple of S_CYCLE, |r| < S_CYCLE;
   returns r. Truncation toward zero keeps |*base| <= |t|: no overflow. */
static int64_t
s_reduce (int64_t t, int64_t *base)
{
    int64_t r = t % S_CYCLE;
    *base = t - r;
    return r;
}

/* The two changes of rule in year y in time order: at[i] (reduced
   seconds) and whether daylight time holds from then on. */
static void
s_rule_events (const s_rule_t *rule, int64_t y, int64_t at[2], bool dst[2])
{
    int64_t on =
        s_date_day (&rule->start, y) * 86400 + rule->start.time - rule->std_off;
    int64_t off =
        s_date_day (&rule->end, y) * 86400 + rule->end.time - rule->dst_off;
    bool on_first = on <= off;
    at[0] = on_first ? on : off;
    dst[0] = on_first;
    at[1] = on_first ? off : on;
    dst[1] = !on_first;
}

/* The offset rule gives at r (a reduced instant). */
static int32_t
s_rule_offset_at (const s_rule_t *rule, int64_t r)
{
    if (!rule->has_dst)
        return rule->std_off;
    int64_t y = s_year_of (s_floor_div (r, 86400));
    int64_t best = INT64_MIN;
    bool dst = false;
    /* The latest change at or before r; /time may move a change a week
       into the next year, so look two years back. Ties go to the later
       year ("0/0,J365/25": daylight time all year). */
    for (int64_t year = y - 2; year <= y + 1; year++) {
        int64_t at[2];
        bool state[2];
        s_rule_events (rule, year, at, state);
        for (int i = 0; i < 2; i++)
            if (at[i] <= r && at[i] >= best) {
                best = at[i];
                dst = state[i];
            }
    }
    return dst ? rule->dst_off : rule->std_off;
}

/* The offset rule gives at instant t. */
static int32_t
s_rule_offset (const s_rule_t *rule, int64_t t)
{
    int64_t base;
    return s_rule_offset_at (rule, s_reduce (t, &base));
}

/* True when the offset of rule changes at reduced instant r. */
static bool
s_rule_changes_at (const s_rule_t *rule, int64_t r)
{
    return s_rule_offset_at (rule, r - 1) != s_rule_offset_at (rule, r);
}

/* The first change of rule's offset strictly after t; INT64_MAX if none. */
static int64_t
s_rule_next (const s_rule_t *rule, int64_t t)
{
    if (!rule->has_dst)
        return INT64_MAX;
    int64_t base, r = s_reduce (t, &base);
    int64_t y = s_year_of (s_floor_div (r, 86400));
    int64_t best = INT64_MAX;
    for (int64_t year = y - 1; year <= y + 2; year++) {
        int64_t at[2];
        bool state[2];
        s_rule_events (rule, year, at, state);
        for (int i = 0; i < 2; i++)
            if (at[i] > r && at[i] < best && s_rule_changes_at (rule, at[i]))
                best = at[i];
    }
    int64_t out;
    if (best == INT64_MAX || __builtin_add_overflow (best, base, &out))
        return INT64_MAX;
    return out;
}

/* The last change of rule's offset at or before t; INT64_MIN if none. */
static int64_t
s_rule_prev (const s_rule_t *rule, int64_t t)
{
    if (!rule->has_dst)
        return INT64_MIN;
    int64_t base, r = s_reduce (t, &base);
    int64_t y = s_year_of (s_floor_div (r, 86400));
    int64_t best = INT64_MIN;
    for (int64_t year = y - 2; year <= y + 1; year++) {
        int64_t at[2];
        bool state[2];
        s_rule_events (rule, year, at, state);
        for (int i = 0; i < 2; i++)
            if (at[i] <= r && at[i] > best && s_rule_changes_at (rule, at[i]))
                best = at[i];
    }
    int64_t out;
    if (best == INT64_MIN || __builtin_add_overflow (best, base, &out))
        return INT64_MIN;
    return out;
}

/* Reads a zone abbreviation at *p: 3+ letters, or <...> of letters,
   digits, '+' and '-'. Returns 0, or -1 when there is none. */
static int
s_tzs_name (const char **p)
{
    const char *s = *p;
    size_t n = 0;
    if (*s == '<') {
        for (s++; isalnum ((unsigned char) *s) || *s == '+' || *s == '-'; s++)
            n++;
        if (*s++ != '>')
            return -1;
    }
    else
        for (; isalpha ((unsigned char) *s); s++)
            n++;
    if (n < 3)
        return -1;
    *p = s;
    return 0;
}

/* Reads an unsigned number of at most 3 digits at *p. Returns 0 or -1. */
static int
s_tzs_int (const char **p, int *out)
{
    const char *s = *p;
    int v = 0, digits = 0;
    while (isdigit ((unsigned char) *s)) {
        if (++digits > 3)
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    if (digits == 0)
        return -1;
    *out = v;
    *p = s;
    return 0;
}

/* Reads [+-]hh[:mm[:ss]] at *p, hours at most max_hours, into seconds.
   Returns 0 or -1. */
static int
s_tzs_time (const char **p, int max_hours, int32_t *out)
{
    const char *s = *p;
    int sign = 1, part[3] = {0, 0, 0};
    if (*s == '+' || *s == '-')
        sign = *s++ == '-' ? -1 : 1;
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*s != ':')
                break;
            s++;
        }
        if (s_tzs_int (&s, &part[i]) != 0)
            return -1;
    }
    if (part[0] > max_hours || part[1] > 59 || part[2] > 59)
        return -1;
    *out = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
    *p = s;
    return 0;
}

/* Reads a rule date (Jn, n or Mm.w.d) with its optional /time at *p.
   Returns 0 or -1. */
static int
s_tzs_date (const char **p, s_date_t *d)
{
    const char *s = *p;
    memset (d, 0, sizeof *d);
    if (*s == 'J') {
        s++;
        d->kind = 'J';
        if (s_tzs_int (&s, &d->day) != 0 || d->day < 1 || d->day > 365)
            return -1;
    }
    else if (*s == 'M') {
        s++;
        d->kind = 'M';
        if (s_tzs_int (&s, &d->month) != 0 || d->month < 1 || d->month > 12
            || *s++ != '.' || s_tzs_int (&s, &d->week) != 0 || d->week < 1
            || d->week > 5 || *s++ != '.' || s_tzs_int (&s, &d->day) != 0
            || d->day > 6)
            return -1;
    }
    else {
        d->kind = 'D';
        if (s_tzs_int (&s, &d->day) != 0 || d->day > 365)
            return -1;
    }
    d->time = 2 * 3600;
    if (*s == '/') {
        s++;
        /* RFC 8536 allows -167 to 167 hours, beyond POSIX's 0-24 */
        if (s_tzs_time (&s, 167, &d->time) != 0)
            return -1;
    }
    *p = s;
    return 0;
}

/* Parses the POSIX TZ string s into rule. Returns 0, or -1 when it is
   malformed or has daylight time without a rule (TZif footers always
   give one). */
static int
s_tzs_parse (const char *s, s_rule_t *rule)
{
    memset (rule, 0, sizeof *rule);
    int32_t west;
    if (s_tzs_name (&s) != 0 || s_tzs_time (&s, 24, &west) != 0)
        return -1;
    rule->std_off = -west; /* POSIX counts west of Greenwich */
    if (*s == '\0')
        return 0;
    if (s_tzs_name (&s) != 0)
        return -1;
    rule->has_dst = true;
    rule->dst_off = rule->std_off + 3600;
    if (*s != ',' && *s != '\0') {
        if (s_tzs_time (&s, 24, &west) != 0)
            return -1;
        rule->dst_off = -west;
    }
    if (*s != ',')
        return -1;
    s++;
    if (s_tzs_date (&s, &rule->start) != 0 || *s != ',')
        return -1;
    s++;
    if (s_tzs_date (&s, &rule->end) != 0 || *s != '\0')
        return -1;
    return 0;
}

/* --- TZif files ---------------------------------------------------------- */

/* The counts of one TZif header. */
typedef struct {
    uint32_t isut;  /* UT/local indicators */
    uint32_t isstd; /* standard/wall indicators */
    uint32_t leap;  /* leap second records */
    uint32_t time;  /* transitions */
    uint32_t type;  /* local time types */
    uint32_t chars; /* bytes of abbreviations */
} s_counts_t;

/* A big-endian 32-bit number. */
static uint32_t
s_be32 (const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8
           | p[3];
}

/* A big-endian 64-bit two's complement number. */
static int64_t
s_be64 (const uint8_t *p)
{
    uint64_t u = (uint64_t) s_be32 (p) << 32 | s_be32 (p + 4);
    int64_t v;
    memcpy (&v, &u, sizeof v);
    return v;
}

/* Reads the header at data + at. Returns NULL, or what is wrong. */
static const char *
s_header (const uint8_t *data, size_t size, size_t at, s_counts_t *c,
          uint8_t *version)
{
    if (size - at < 44)
        return "truncated header";
    const uint8_t *h = data + at;
    if (memcmp (h, "TZif", 4) != 0)
        return "not a TZif file (bad magic)";
    *version = h[4];
    c->isut = s_be32 (h + 20);
    c->isstd = s_be32 (h + 24);
    c->leap = s_be32 (h + 28);
    c->time = s_be32 (h + 32);
    c->type = s_be32 (h + 36);
    c->chars = s_be32 (h + 40);
    if (c->isut > S_MAX_FILE || c->isstd > S_MAX_FILE || c->leap > S_MAX_FILE
        || c->time > S_MAX_FILE || c->type > S_MAX_FILE
        || c->chars > S_MAX_FILE)
        return "truncated data (counts exceed the file)";
    return NULL;
}

/* Bytes of the data block that c describes, with times of tsize bytes. */
static size_t
s_block_size (const s_counts_t *c, size_t tsize)
{
    return c->time * tsize + c->time + c->type * 6 + c->chars
           + c->leap * (tsize + 4) + c->isstd + c->isut;
}

/* Fills self from the TZif image. Returns 0, or -1 with err naming path
   and what is wrong. */
static int
s_parse (ef_tz_t *self, const uint8_t *data, size_t size, const char *path,
         char *err, size_t errlen)
{
    const char *why;
    s_counts_t c;
    uint8_t version;
    if ((why = s_header (data, size, 0, &c, &version)) != NULL)
        goto corrupt;
    why = "unknown TZif version";
    if (version != 0 && version < '2')
        goto corrupt;
    size_t at = 44, tsize = 4;
    size_t block = s_block_size (&c, 4);
    why = "truncated data";
    if (size - at < block)
        goto corrupt;
    if (version >= '2') {
        /* skip the 32-bit data: the 64-bit block and the footer follow */
        at += block;
        if ((why = s_header (data, size, at, &c, &version)) != NULL)
            goto corrupt;
        at += 44;
        tsize = 8;
        block = s_block_size (&c, 8);
        why = "truncated data";
        if (size - at < block)
            goto corrupt;
    }
    why = "bad counts";
    if (c.type == 0 || c.type > 256 || c.chars == 0
        || (c.isstd != 0 && c.isstd != c.type)
        || (c.isut != 0 && c.isut != c.type))
        goto corrupt;
    if (c.leap != 0) {
        snprintf (err, errlen,
                  "time zone file %s has leap seconds, which embedflow does "
                  "not support (use the zone outside right/)",
                  path);
        return -1;
    }
    const uint8_t *times = data + at;
    const uint8_t *index = times + c.time * tsize;
    const uint8_t *info = index + c.time;
    self->count = c.time;
    self->type_count = c.type;
    self->times = calloc (c.time + 1, sizeof *self->times);
    self->types = calloc (c.time + 1, sizeof *self->types);
    self->offsets = calloc (c.type, sizeof *self->offsets);
    if (!self->times || !self->types || !self->offsets) {
        snprintf (err, errlen, "out of memory reading %s", path);
        return -1;
    }
    for (size_t i = 0; i < c.time; i++) {
        self->times[i] = tsize == 8 ? s_be64 (times + 8 * i)
                                    : (int32_t) s_be32 (times + 4 * i);
        self->types[i] = index[i];
        why = "transition times out of order";
        if (i > 0 && self->times[i] <= self->times[i - 1])
            goto corrupt;
        why = "transition to an undefined type";
        if (index[i] >= c.type)
            goto corrupt;
    }
    for (size_t i = 0; i < c.type; i++) {
        const uint8_t *ti = info + 6 * i;
        int32_t utoff = (int32_t) s_be32 (ti);
        why = "bad local time type";
        if (utoff < -89999 || utoff > 93599 || ti[4] > 1 || ti[5] >= c.chars)
            goto corrupt;
        self->offsets[i] = utoff;
    }
    at += block;
    if (tsize == 8) {
        why = "truncated (no footer)";
        if (at >= size || data[at] != '\n')
            goto corrupt;
        const uint8_t *text = data + at + 1;
        const uint8_t *nl = memchr (text, '\n', size - at - 1);
        why = "truncated footer";
        if (!nl)
            goto corrupt;
        size_t len = (size_t) (nl - text);
        char rule[256];
        why = "footer too long";
        if (len >= sizeof rule)
            goto corrupt;
        memcpy (rule, text, len);
        rule[len] = '\0';
        if (len > 0) { /* empty: no rule, the last type holds */
            if (s_tzs_parse (rule, &self->rule) != 0) {
                snprintf (err, errlen,
                          "corrupt time zone file %s: bad TZ rule '%s' in "
                          "footer",
                          path, rule);
                return -1;
            }
            self->has_rule = true;
        }
    }
    return 0;
corrupt:
    snprintf (err, errlen, "corrupt time zone file %s: %s", path, why);
    return -1;
}

/* True when name is a relative path of plain components: none empty or
   starting with '.', only the characters IANA names use. */
static bool
s_name_ok (const char *name)
{
    size_t len = strlen (name);
    if (len == 0 || len > S_MAX_NAME)
        return false;
    const char *component = name;
    for (const char *p = name;; p++) {
        if (*p == '/' || *p == '\0') {
            if (p == component || *component == '.')
                return false;
            if (*p == '\0')
                return true;
            component = p + 1;
        }
        else if (!isalnum ((unsigned char) *p) && !strchr ("-+_.", *p))
            return false;
    }
}

/* Reads the whole file at path into *data (caller frees). Returns 0, or
   -1 with err. */
static int
s_read_file (const char *name, const char *path, uint8_t **data, size_t *size,
             char *err, size_t errlen)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            snprintf (err, errlen,
                      "unknown time zone '%s' (no file %s; is the tzdata "
                      "package installed?)",
                      name, path);
        else
            snprintf (err, errlen, "cannot open time zone file %s: %s", path,
                      strerror (errno));
        return -1;
    }
    struct stat st;
    if (fstat (fd, &st) != 0 || !S_ISREG (st.st_mode)) {
        snprintf (err, errlen, "unknown time zone '%s' (%s is not a zone file)",
                  name, path);
        close (fd);
        return -1;
    }
    if (st.st_size > S_MAX_FILE) {
        snprintf (err, errlen, "corrupt time zone file %s: too large", path);
        close (fd);
        return -1;
    }
    *data = malloc ((size_t) st.st_size + 1);
    *size = 0;
    while (*data && *size < (size_t) st.st_size) {
        ssize_t n = read (fd, *data + *size, (size_t) st.st_size - *size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf (err, errlen, "cannot read time zone file %s: %s", path,
                      strerror (errno));
            free (*data);
            *data = NULL;
            close (fd);
            return -1;
        }
        if (n == 0)
            break; /* shrank meanwhile: the parser sees what is there */
        *size += (size_t) n;
    }
    close (fd);
    if (!*data) {
        snprintf (err, errlen, "out of memory reading %s", path);
        return -1;
    }
    return 0;
}

ef_tz_t *
ef_tz_load (const char *name, char *err, size_t errlen)
{
    bool utc = !name || !*name || strcmp (name, "UTC") == 0
               || strcmp (name, "Etc/UTC") == 0;
    if (!utc && !s_name_ok (name)) {
        snprintf (err, errlen,
                  "invalid time zone name '%.80s': expected an IANA name like "
                  "Europe/Berlin",
                  name);
        return NULL;
    }
    ef_tz_t *self = calloc (1, sizeof *self);
    if (!self
        || !(self->name = strdup (utc && !(name && *name) ? "UTC" : name))) {
        snprintf (err, errlen, "out of memory");
        free (self);
        return NULL;
    }
    if (utc) {
        self->type_count = 1;
        self->offsets = calloc (1, sizeof *self->offsets);
        if (!self->offsets) {
            snprintf (err, errlen, "out of memory");
            ef_tz_destroy (&self);
        }
        return self;
    }
    const char *dir = getenv ("TZDIR");
    if (!dir || !*dir)
        dir = S_DEFAULT_DIR;
    char path[PATH_MAX];
    if ((size_t) snprintf (path, sizeof path, "%s/%s", dir, name)
        >= sizeof path) {
        snprintf (err, errlen, "unknown time zone '%s' (path too long)", name);
        ef_tz_destroy (&self);
        return NULL;
    }
    uint8_t *data = NULL;
    size_t size = 0;
    if (s_read_file (name, path, &data, &size, err, errlen) != 0
        || s_parse (self, data, size, path, err, errlen) != 0)
        ef_tz_destroy (&self);
    free (data);
    return self;
}

void
ef_tz_destroy (ef_tz_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ef_tz_t *self = *self_p;
    free (self->name);
    free (self->times);
    free (self->types);
    free (self->offsets);
    free (self);
    *self_p = NULL;
}

const char *
ef_tz_name (const ef_tz_t *self)
{
    return self ? self->name : "UTC";
}

/* How many transitions of self are at or before t. */
static size_t
s_count_upto (const ef_tz_t *self, int64_t t)
{
    size_t lo = 0, hi = self->count; /* the answer is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (self->times[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int32_t
ef_tz_offset (const ef_tz_t *self, int64_t utc)
{
    if (!self)
        return 0;
    size_t n = s_count_upto (self, utc);
    if (n == self->count && self->has_rule)
        return s_rule_offset (&self->rule, utc);
    if (n == 0)
        return self->offsets[0]; /* before the first: type 0 (RFC 8536) */
    return self->offsets[self->types[n - 1]];
}

/* True when the offset of self changes at t. */
static bool
s_changes_at (const ef_tz_t *self, int64_t t)
{
    return t != INT64_MIN
           && ef_tz_offset (self, t - 1) != ef_tz_offset (self, t);
}

int64_t
ef_tz_next_transition (const ef_tz_t *self, int64_t utc)
{
    if (!self)
        return INT64_MAX;
    for (size_t i = s_count_upto (self, utc); i < self->count; i++)
        if (s_changes_at (self, self->times[i]))
            return self->times[i];
    if (!self->has_rule)
        return INT64_MAX;
    /* the rule holds only after the last transition */
    int64_t from = utc;
    if (self->count > 0 && from < self->times[self->count - 1])
        from = self->times[self->count - 1];
    return s_rule_next (&self->rule, from);
}

int64_t
ef_tz_prev_transition (const ef_tz_t *self, int64_t utc)
{
    if (!self)
        return INT64_MIN;
    int64_t last = self->count > 0 ? self->times[self->count - 1] : INT64_MIN;
    if (self->has_rule && (self->count == 0 || utc > last)) {
        int64_t t = s_rule_prev (&self->rule, utc);
        if (t != INT64_MIN && (self->count == 0 || t > last))
            return t;
    }
    for (size_t n = s_count_upto (self, utc); n > 0; n--)
        if (s_changes_at (self, self->times[n - 1]))
            return self->times[n - 1];
    return INT64_MIN;
}
