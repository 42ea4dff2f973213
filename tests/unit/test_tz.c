/*  test_tz.c — time zones from TZif files, checked against glibc, and
    cron schedules on local wall-clock time across DST changes.

    glibc's localtime_r with TZ set is the oracle here; the library never
    touches TZ (it is multi-threaded), a test process may. */
#include "ef_test.h"

#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobs/cron.h"
#include "jobs/tz.h"

#define S_1970 ((int64_t) 0)
#define S_2100 ((int64_t) 4102444800) /* 2100-01-01 00:00 UTC */

/* Makes glibc's local time the zone (or POSIX TZ string) tz. */
static void
s_oracle_set (const char *tz)
{
    setenv ("TZ", tz, 1);
    tzset ();
}

/* glibc's offset at t in the zone set by s_oracle_set. */
static int32_t
s_oracle (int64_t t)
{
    time_t tt = (time_t) t;
    struct tm tm;
    localtime_r (&tt, &tm);
    return (int32_t) tm.tm_gmtoff;
}

/* Leaves no TZ or TZDIR behind for the next test of this process. */
static void
s_env_reset (void)
{
    unsetenv ("TZ");
    unsetenv ("TZDIR");
    tzset ();
}

/* Loads name, printing the error when it fails. */
static ef_tz_t *
s_load (const char *name)
{
    char err[300] = "";
    ef_tz_t *tz = ef_tz_load (name, err, sizeof err);
    if (!tz)
        fprintf (stderr, "ef_tz_load (%s): %s\n", name, err);
    return tz;
}

/* True when loading name fails with an error containing want. */
static bool
s_refused (const char *name, const char *want)
{
    char err[300] = "";
    ef_tz_t *tz = ef_tz_load (name, err, sizeof err);
    if (tz) {
        fprintf (stderr, "'%s' was loaded\n", name);
        ef_tz_destroy (&tz);
        return false;
    }
    if (!strstr (err, want)) {
        fprintf (stderr, "'%s': '%s' does not say '%s'\n", name, err, want);
        return false;
    }
    return true;
}

/* Compares tz with the oracle (already set) over 1970-2100: one instant
   a day at a drifting time of day, and both sides of every transition.
   Returns the number of disagreements; *changes gets the transitions. */
static int
s_compare (const ef_tz_t *tz, const char *label, int *changes)
{
    int bad = 0;
    for (int64_t i = 0, t = S_1970; t < S_2100; i++) {
        t = S_1970 + i * 86400 + (i * 3607) % 86400;
        if (ef_tz_offset (tz, t) != s_oracle (t) && bad++ < 5)
            fprintf (stderr, "%s at %lld: %d, libc says %d\n", label,
                     (long long) t, ef_tz_offset (tz, t), s_oracle (t));
    }
    *changes = 0;
    int64_t prev = S_1970;
    for (int64_t t = ef_tz_next_transition (tz, S_1970); t < S_2100;
         t = ef_tz_next_transition (tz, t)) {
        int64_t mid = prev + (t - prev) / 2;
        if (ef_tz_offset (tz, t - 1) != s_oracle (t - 1)
            || ef_tz_offset (tz, t) != s_oracle (t)
            || s_oracle (t - 1) == s_oracle (t)
            || ef_tz_offset (tz, mid) != s_oracle (mid)
            || ef_tz_prev_transition (tz, t) != t
            || ef_tz_prev_transition (tz, t + 3600) != t
            || ef_tz_prev_transition (tz, t - 1) >= t) {
            if (bad++ < 5)
                fprintf (stderr, "%s: transition at %lld disagrees\n", label,
                         (long long) t);
        }
        prev = t;
        (*changes)++;
    }
    return bad;
}

EF_TEST (tz_offsets_match_libc)
{
    static const struct {
        const char *name;
        int min_changes; /* transitions 1970-2100 at least */
    } zones[] = {
        {"Europe/Berlin", 200},    {"America/New_York", 250},
        {"Asia/Kolkata", 0},       {"Australia/Lord_Howe", 230},
        {"Pacific/Chatham", 230},  {"America/Sao_Paulo", 60},
        {"America/Nuuk", 200},     {"Asia/Jerusalem", 200},
        {"America/Santiago", 200}, {"Etc/GMT+5", 0},
    };
    s_env_reset ();
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
        ef_tz_t *tz = s_load (zones[z].name);
        EF_REQUIRE (tz);
        EF_CHECK (strcmp (ef_tz_name (tz), zones[z].name) == 0);
        s_oracle_set (zones[z].name);
        int changes = 0;
        EF_CHECK (s_compare (tz, zones[z].name, &changes) == 0);
        if (changes < zones[z].min_changes)
            fprintf (stderr, "%s: %d transitions\n", zones[z].name, changes);
        EF_CHECK (changes >= zones[z].min_changes);
        ef_tz_destroy (&tz);
        EF_CHECK (tz == NULL);
        ef_tz_destroy (&tz);
    }
    /* spot checks, far past the last transition of a fat file (2037):
       only the footer rule can answer these */
    ef_tz_t *berlin = s_load ("Europe/Berlin");
    ef_tz_t *kolkata = s_load ("Asia/Kolkata");
    ef_tz_t *howe = s_load ("Australia/Lord_Howe");
    ef_tz_t *chatham = s_load ("Pacific/Chatham");
    ef_tz_t *sao = s_load ("America/Sao_Paulo");
    EF_REQUIRE (berlin && kolkata && howe && chatham && sao);
    EF_CHECK (ef_tz_offset (berlin, ef_test_utc (2090, 1, 15, 12, 0, 0))
              == 3600);
    EF_CHECK (ef_tz_offset (berlin, ef_test_utc (2090, 7, 15, 12, 0, 0))
              == 7200);
    /* 2090-03-26 is the last Sunday of March: 01:00 UTC */
    EF_CHECK (ef_tz_offset (berlin, ef_test_utc (2090, 3, 26, 0, 59, 59))
              == 3600);
    EF_CHECK (ef_tz_offset (berlin, ef_test_utc (2090, 3, 26, 1, 0, 0))
              == 7200);
    EF_CHECK (ef_tz_next_transition (berlin, ef_test_utc (2090, 3, 1, 0, 0, 0))
              == ef_test_utc (2090, 3, 26, 1, 0, 0));
    EF_CHECK (ef_tz_offset (kolkata, ef_test_utc (2090, 7, 1, 0, 0, 0))
              == 19800);
    EF_CHECK (ef_tz_next_transition (kolkata, 0) == INT64_MAX);
    EF_CHECK (ef_tz_offset (howe, ef_test_utc (2090, 1, 1, 0, 0, 0)) == 39600);
    EF_CHECK (ef_tz_offset (howe, ef_test_utc (2090, 7, 1, 0, 0, 0)) == 37800);
    EF_CHECK (ef_tz_offset (chatham, ef_test_utc (2090, 7, 1, 0, 0, 0))
              == 45900);
    EF_CHECK (ef_tz_offset (chatham, ef_test_utc (2090, 1, 1, 0, 0, 0))
              == 49500);
    /* Brazil kept DST until 2019 */
    EF_CHECK (ef_tz_offset (sao, ef_test_utc (2018, 12, 15, 0, 0, 0)) == -7200);
    EF_CHECK (ef_tz_offset (sao, ef_test_utc (2020, 12, 15, 0, 0, 0))
              == -10800);
    EF_CHECK (ef_tz_offset (sao, ef_test_utc (2090, 12, 15, 0, 0, 0))
              == -10800);
    EF_CHECK (ef_tz_next_transition (sao, ef_test_utc (2020, 1, 1, 0, 0, 0))
              == INT64_MAX);
    /* extreme instants stay defined */
    EF_CHECK (ef_tz_offset (berlin, INT64_MAX) == 3600
              || ef_tz_offset (berlin, INT64_MAX) == 7200);
    EF_CHECK (ef_tz_next_transition (berlin, INT64_MAX - 1) == INT64_MAX);
    EF_CHECK (ef_tz_prev_transition (berlin, INT64_MIN) == INT64_MIN);
    ef_tz_destroy (&berlin);
    ef_tz_destroy (&kolkata);
    ef_tz_destroy (&howe);
    ef_tz_destroy (&chatham);
    ef_tz_destroy (&sao);
    s_env_reset ();
}

/* --- files written by the tests ------------------------------------------ */

static char s_dir[256]; /* the temporary TZDIR */

/* Removes one entry of the temporary tree (nftw callback). */
static int
s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st, (void) flag, (void) ftw;
    return remove (path);
}

/* Makes a fresh temporary directory, sets TZDIR to it. */
static bool
s_dir_new (void)
{
    const char *tmp = getenv ("TMPDIR");
    snprintf (s_dir, sizeof s_dir, "%s/ef-tz-XXXXXX",
              tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp (s_dir))
        return false;
    setenv ("TZDIR", s_dir, 1);
    return true;
}

/* Deletes the temporary directory and everything in it. */
static void
s_dir_destroy (void)
{
    nftw (s_dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    s_env_reset ();
}

/* Writes size bytes as zone `name` under the temporary TZDIR. */
static bool
s_put (const char *name, const void *data, size_t size)
{
    char path[512];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    char *slash = strrchr (path, '/');
    if (slash > path + strlen (s_dir)) { /* one level of subdirectory */
        *slash = '\0';
        mkdir (path, 0755);
        *slash = '/';
    }
    FILE *f = fopen (path, "wb");
    if (!f)
        return false;
    bool ok = fwrite (data, 1, size, f) == size;
    return fclose (f) == 0 && ok;
}

/* Reads a whole file into *data (malloc'd). Returns its size, 0 on error. */
static size_t
s_slurp (const char *path, unsigned char **data)
{
    FILE *f = fopen (path, "rb");
    *data = NULL;
    if (!f)
        return 0;
    *data = malloc (1 << 16);
    size_t n = *data ? fread (*data, 1, 1 << 16, f) : 0;
    fclose (f);
    return n;
}

/* A growing byte buffer. */
typedef struct {
    unsigned char bytes[1 << 16]; /* the content */
    size_t size;                  /* bytes used */
} s_buf_t;

/* Appends n big-endian bytes of v. */
static void
s_be (s_buf_t *b, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--)
        b->bytes[b->size++] = (unsigned char) (v >> (8 * i));
}

/* A zone to write: transitions, types and a footer. */
typedef struct {
    char version;          /* 0, '2', '3' or '4' */
    size_t count;          /* transitions */
    const int64_t *times;  /* their instants */
    const uint8_t *index;  /* their types */
    size_t types;          /* local time types */
    const int32_t *offset; /* their offsets */
    const char *footer;    /* TZ string (versions 2+) */
    uint32_t leaps;        /* leap second records to claim */
} s_zone_t;

/* Appends one header and data block of z with times of tsize bytes. */
static void
s_block (s_buf_t *b, const s_zone_t *z, int tsize)
{
    memcpy (b->bytes + b->size, "TZif", 4);
    b->size += 4;
    b->bytes[b->size++] = (unsigned char) z->version;
    memset (b->bytes + b->size, 0, 15);
    b->size += 15;
    s_be (b, 0, 4);        /* isutcnt */
    s_be (b, 0, 4);        /* isstdcnt */
    s_be (b, z->leaps, 4); /* leapcnt */
    s_be (b, z->count, 4); /* timecnt */
    s_be (b, z->types, 4); /* typecnt */
    s_be (b, 4, 4);        /* charcnt: "ZZZ\0" */
    for (size_t i = 0; i < z->count; i++)
        s_be (b, (uint64_t) z->times[i], tsize);
    for (size_t i = 0; i < z->count; i++)
        b->bytes[b->size++] = z->index[i];
    for (size_t i = 0; i < z->types; i++) {
        s_be (b, (uint32_t) z->offset[i], 4);
        b->bytes[b->size++] = 0;
        b->bytes[b->size++] = 0;
    }
    memcpy (b->bytes + b->size, "ZZZ", 4);
    b->size += 4;
    for (uint32_t i = 0; i < z->leaps; i++) {
        s_be (b, 0, tsize); /* when */
        s_be (b, 1, 4);     /* correction */
    }
}

/* Writes z as TZif zone `name` under the temporary TZDIR. */
static bool
s_put_zone (const char *name, const s_zone_t *z)
{
    static s_buf_t b;
    b.size = 0;
    s_block (&b, z, 4);
    if (z->version) {
        s_block (&b, z, 8);
        b.bytes[b.size++] = '\n';
        size_t n = strlen (z->footer);
        memcpy (b.bytes + b.size, z->footer, n);
        b.size += n;
        b.bytes[b.size++] = '\n';
    }
    return s_put (name, b.bytes, b.size);
}

/* Writes a zone made of the footer rule alone. */
static bool
s_put_rule (const char *name, const char *footer)
{
    int32_t off = 0;
    s_zone_t z = {'2', 0, NULL, NULL, 1, &off, footer, 0};
    return s_put_zone (name, &z);
}

EF_TEST (tz_footer_forms)
{
    /* each one a zone with no transitions: the rule gives every instant;
       glibc reads the same string from TZ */
    static const char *const rules[] = {
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "<+0530>-5:30",
        "<-0330>3:30",
        "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
        "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", /* negative /time */
        "IST-2IDT,M3.4.4/26,M10.5.0",      /* /time past 24 h */
        "<-04>4<-03>,M9.1.6/24,M4.1.6/24", /* southern hemisphere */
        "XST3XDT,J60/2,J300/2",            /* Jn: Feb 29 never counted */
        "XST3XDT,59/2,300/2",              /* n: zero-based, counted */
        "XST-1:30XDT-2:15:30,M3.1.0/-50,M10.5.0/100",
        "EST5EDT,M3.2.0,M11.1.0",
        "AAA+10BBB+9,M4.5.6/1:02:03,M9.5.0/0",
    };
    EF_REQUIRE (s_dir_new ());
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        char name[32];
        snprintf (name, sizeof name, "Rule/%zu", i);
        EF_REQUIRE (s_put_rule (name, rules[i]));
        ef_tz_t *tz = s_load (name);
        EF_CHECK (tz != NULL);
        if (!tz)
            continue;
        s_oracle_set (rules[i]);
        int changes;
        EF_CHECK (s_compare (tz, rules[i], &changes) == 0);
        EF_CHECK (changes == (strchr (rules[i], ',') ? 260 : 0));
        ef_tz_destroy (&tz);
    }
    /* daylight time all year (RFC 8536 example): never a change */
    EF_REQUIRE (s_put_rule ("Rule/allyear", "EST5EDT,0/0,J365/25"));
    ef_tz_t *tz = s_load ("Rule/allyear");
    EF_REQUIRE (tz);
    for (int64_t t = S_1970; t < S_2100; t += 86400 * 7 + 3599)
        EF_CHECK (ef_tz_offset (tz, t) == -4 * 3600);
    EF_CHECK (ef_tz_offset (tz, ef_test_utc (2030, 1, 1, 4, 59, 59))
              == -4 * 3600);
    EF_CHECK (ef_tz_offset (tz, ef_test_utc (2030, 1, 1, 5, 0, 0))
              == -4 * 3600);
    EF_CHECK (ef_tz_next_transition (tz, 0) == INT64_MAX);
    EF_CHECK (ef_tz_prev_transition (tz, 0) == INT64_MIN);
    ef_tz_destroy (&tz);
    /* malformed footers fail the load, naming the rule */
    static const char *const bad[] = {
        "CET",                          /* no offset */
        "CE-1",                         /* name too short */
        "CET-25",                       /* offset out of range */
        "CET-1CEST",                    /* daylight time without a rule */
        "CET-1CEST,M3.5.0",             /* no end */
        "CET-1CEST,M13.5.0,M10.5.0",    /* month 13 */
        "CET-1CEST,M3.6.0,M10.5.0",     /* week 6 */
        "CET-1CEST,M3.5.7,M10.5.0",     /* weekday 7 */
        "CET-1CEST,J0,J365",            /* J starts at 1 */
        "CET-1CEST,366,J365",           /* n ends at 365 */
        "CET-1CEST,M3.5.0/168,M10.5.0", /* /time beyond 167 h */
        "<+05-5",                       /* unterminated <name> */
        "CET-1x",                       /* trailing junk */
        "CET-1:60",                     /* minutes 60 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EF_REQUIRE (s_put_rule ("Rule/bad", bad[i]));
        char want[80];
        snprintf (want, sizeof want, "bad TZ rule '%s' in footer", bad[i]);
        EF_CHECK (s_refused ("Rule/bad", want));
    }
    s_dir_destroy ();
}

/* Reads the four-byte big-endian number at p. */
static uint32_t
s_get32 (const unsigned char *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8
           | p[3];
}

EF_TEST (tz_version1_and_slim_files)
{
    s_env_reset ();
    ef_tz_t *real = s_load ("Europe/Berlin");
    EF_REQUIRE (real);
    unsigned char *data;
    size_t size = s_slurp ("/usr/share/zoneinfo/Europe/Berlin", &data);
    EF_REQUIRE (size > 44 && data[4] >= '2');
    EF_REQUIRE (s_dir_new ());

    /* version 1: only the 32-bit block, no footer; the last type holds
       after the last transition (2037) */
    size_t v1 = 44 + s_get32 (data + 32) * 5 + s_get32 (data + 36) * 6
                + s_get32 (data + 40) + s_get32 (data + 28) * 8
                + s_get32 (data + 24) + s_get32 (data + 20);
    EF_REQUIRE (v1 < size);
    data[4] = 0;
    EF_REQUIRE (s_put ("V1/Berlin", data, v1));
    ef_tz_t *tz = s_load ("V1/Berlin");
    EF_REQUIRE (tz);
    int bad = 0;
    for (int64_t t = S_1970; t < ef_test_utc (2037, 12, 31, 0, 0, 0);
         t += 86400 + 61)
        bad += ef_tz_offset (tz, t) != ef_tz_offset (real, t);
    EF_CHECK (bad == 0);
    EF_CHECK (ef_tz_offset (tz, ef_test_utc (2090, 7, 15, 12, 0, 0)) == 3600);
    EF_CHECK (ef_tz_next_transition (tz, ef_test_utc (2038, 1, 1, 0, 0, 0))
              == INT64_MAX);
    ef_tz_destroy (&tz);
    free (data);

    /* "slim" (zic -b slim): transitions only while the rules changed,
       here up to 1996; everything after comes from the footer */
    int64_t times[64];
    uint8_t index[64];
    int32_t offsets[2] = {3600, 7200};
    size_t n = 0;
    for (int64_t t = ef_tz_next_transition (real, S_1970);
         t < ef_test_utc (1997, 1, 1, 0, 0, 0);
         t = ef_tz_next_transition (real, t)) {
        EF_REQUIRE (n < 64);
        times[n] = t;
        index[n++] = ef_tz_offset (real, t) == 7200;
    }
    EF_CHECK (n > 30);
    s_zone_t slim = {
        '3', n, times, index, 2, offsets, "CET-1CEST,M3.5.0,M10.5.0/3", 0};
    EF_REQUIRE (s_put_zone ("Slim/Berlin", &slim));
    tz = s_load ("Slim/Berlin");
    EF_REQUIRE (tz);
    unsetenv ("TZDIR");
    s_oracle_set ("Europe/Berlin");
    int changes;
    EF_CHECK (s_compare (tz, "Slim/Berlin", &changes) == 0);
    EF_CHECK (changes > 200);
    ef_tz_destroy (&tz);

    /* an empty footer means no rule: the last type holds */
    setenv ("TZDIR", s_dir, 1);
    int64_t one = 1000;
    uint8_t to_one = 1;
    s_zone_t norule = {'2', 1, &one, &to_one, 2, offsets, "", 0};
    EF_REQUIRE (s_put_zone ("Etc/NoRule", &norule));
    tz = s_load ("Etc/NoRule");
    EF_REQUIRE (tz);
    EF_CHECK (ef_tz_offset (tz, 999) == 3600);
    EF_CHECK (ef_tz_offset (tz, 1000) == 7200);
    EF_CHECK (ef_tz_offset (tz, ef_test_utc (2090, 1, 1, 0, 0, 0)) == 7200);
    EF_CHECK (ef_tz_next_transition (tz, 0) == 1000);
    EF_CHECK (ef_tz_next_transition (tz, 1000) == INT64_MAX);
    EF_CHECK (ef_tz_prev_transition (tz, 5000) == 1000);
    EF_CHECK (ef_tz_prev_transition (tz, 999) == INT64_MIN);
    ef_tz_destroy (&tz);

    /* the footer rule holds only after the last transition: here one in
       winter 2000 that changes nothing */
    int64_t winter = ef_test_utc (2000, 1, 15, 0, 0, 0);
    int32_t same[2] = {3600, 3600};
    s_zone_t late = {
        '2', 1, &winter, &to_one, 2, same, "CET-1CEST,M3.5.0,M10.5.0/3", 0};
    EF_REQUIRE (s_put_zone ("Etc/Late", &late));
    tz = s_load ("Etc/Late");
    EF_REQUIRE (tz);
    EF_CHECK (ef_tz_offset (tz, ef_test_utc (1999, 7, 1, 0, 0, 0)) == 3600);
    EF_CHECK (ef_tz_offset (tz, ef_test_utc (2000, 7, 1, 0, 0, 0)) == 7200);
    EF_CHECK (ef_tz_next_transition (tz, ef_test_utc (1999, 1, 1, 0, 0, 0))
              == ef_test_utc (2000, 3, 26, 1, 0, 0));
    EF_CHECK (ef_tz_prev_transition (tz, ef_test_utc (2000, 2, 1, 0, 0, 0))
              == INT64_MIN);
    EF_CHECK (ef_tz_prev_transition (tz, ef_test_utc (2000, 4, 1, 0, 0, 0))
              == ef_test_utc (2000, 3, 26, 1, 0, 0));
    ef_tz_destroy (&tz);
    ef_tz_destroy (&real);
    s_dir_destroy ();
}

EF_TEST (tz_errors)
{
    s_env_reset ();
    EF_CHECK (s_refused ("Mars/Olympus", "unknown time zone 'Mars/Olympus'"));
    EF_CHECK (
        s_refused ("../etc/passwd", "invalid time zone name '../etc/passwd'"));
    EF_CHECK (s_refused ("/etc/passwd", "invalid time zone name"));
    EF_CHECK (s_refused ("Europe/../Europe/Berlin", "invalid time zone name"));
    EF_CHECK (s_refused ("Europe//Berlin", "invalid time zone name"));
    EF_CHECK (s_refused ("Europe/Berlin/", "invalid time zone name"));
    EF_CHECK (s_refused ("./Europe/Berlin", "invalid time zone name"));
    EF_CHECK (s_refused ("Europe/Berlin;rm", "invalid time zone name"));
    EF_CHECK (
        s_refused ("Europe", "(/usr/share/zoneinfo/Europe is not a zone"));

    /* UTC needs no file: it loads with TZDIR pointing at an empty dir */
    EF_REQUIRE (s_dir_new ());
    EF_CHECK (s_refused ("Europe/Berlin", "unknown time zone 'Europe/Berlin'"));
    static const char *const utc[] = {NULL, "", "UTC", "Etc/UTC"};
    for (size_t i = 0; i < 4; i++) {
        ef_tz_t *tz = s_load (utc[i]);
        EF_CHECK (tz != NULL);
        EF_CHECK (ef_tz_offset (tz, ef_test_utc (2026, 7, 1, 0, 0, 0)) == 0);
        EF_CHECK (ef_tz_next_transition (tz, 0) == INT64_MAX);
        EF_CHECK (strcmp (ef_tz_name (tz), i < 2 ? "UTC" : utc[i]) == 0);
        ef_tz_destroy (&tz);
    }
    EF_CHECK (ef_tz_offset (NULL, 12345) == 0);
    EF_CHECK (strcmp (ef_tz_name (NULL), "UTC") == 0);
    ef_tz_destroy (NULL);

    /* TZDIR is where zones come from */
    unsigned char *data;
    size_t size = s_slurp ("/usr/share/zoneinfo/Asia/Kolkata", &data);
    EF_REQUIRE (size > 0);
    EF_REQUIRE (s_put ("Test/Zone", data, size));
    ef_tz_t *tz = s_load ("Test/Zone");
    EF_CHECK (tz
              && ef_tz_offset (tz, ef_test_utc (2026, 1, 1, 0, 0, 0)) == 19800);
    ef_tz_destroy (&tz);

    /* corrupt files */
    EF_REQUIRE (s_put ("Bad/Text", "# just text\n", 12));
    EF_CHECK (s_refused ("Bad/Text", "truncated header"));
    memcpy (data, "TZjf", 4);
    EF_REQUIRE (s_put ("Bad/Magic", data, size));
    EF_CHECK (s_refused ("Bad/Magic", "not a TZif file"));
    memcpy (data, "TZif1", 5);
    EF_REQUIRE (s_put ("Bad/Version", data, size));
    EF_CHECK (s_refused ("Bad/Version", "unknown TZif version"));
    free (data);

    int64_t times[3] = {100, 50, 200};
    uint8_t index[3] = {1, 0, 1};
    int32_t offsets[2] = {3600, 7200};
    s_zone_t z = {'2', 3, times, index, 2, offsets, "", 0};
    EF_REQUIRE (s_put_zone ("Bad/Order", &z));
    EF_CHECK (s_refused ("Bad/Order", "transition times out of order"));
    times[1] = 150;
    index[2] = 2;
    EF_REQUIRE (s_put_zone ("Bad/Index", &z));
    EF_CHECK (s_refused ("Bad/Index", "transition to an undefined type"));
    index[2] = 1;
    offsets[1] = 100000;
    EF_REQUIRE (s_put_zone ("Bad/Offset", &z));
    EF_CHECK (s_refused ("Bad/Offset", "bad local time type"));
    offsets[1] = 7200;
    z.leaps = 1;
    EF_REQUIRE (s_put_zone ("Bad/Leap", &z));
    EF_CHECK (s_refused ("Bad/Leap", "has leap seconds"));
    z.leaps = 0;
    z.count = 0;
    z.types = 0;
    EF_REQUIRE (s_put_zone ("Bad/NoTypes", &z));
    EF_CHECK (s_refused ("Bad/NoTypes", "bad counts"));
    z.types = 2;
    EF_REQUIRE (s_put_zone ("Good/Zone", &z));
    tz = s_load ("Good/Zone"); /* the same file, fixed, loads */
    EF_CHECK (tz != NULL);
    ef_tz_destroy (&tz);
    s_dir_destroy ();
}

EF_TEST (tz_truncated_files)
{
    /* every proper prefix of a real file is refused as corrupt */
    unsigned char *data;
    size_t size = s_slurp ("/usr/share/zoneinfo/Europe/Berlin", &data);
    EF_REQUIRE (size > 1000);
    EF_REQUIRE (s_dir_new ());
    char want[512];
    snprintf (want, sizeof want,
              "corrupt time zone file %s/Cut/Berlin: ", s_dir);
    int loaded = 0, unclear = 0;
    for (size_t n = 0; n < size; n++) {
        EF_REQUIRE (s_put ("Cut/Berlin", data, n));
        char err[600] = "";
        ef_tz_t *tz = ef_tz_load ("Cut/Berlin", err, sizeof err);
        if (tz) {
            if (loaded++ < 3)
                fprintf (stderr, "a prefix of %zu bytes loaded\n", n);
            ef_tz_destroy (&tz);
        }
        else if (!strstr (err, want) && unclear++ < 3)
            fprintf (stderr, "prefix %zu: %s\n", n, err);
    }
    EF_CHECK (loaded == 0);
    EF_CHECK (unclear == 0);
    EF_REQUIRE (s_put ("Cut/Berlin", data, size));
    ef_tz_t *tz = s_load ("Cut/Berlin");
    EF_CHECK (tz != NULL);
    ef_tz_destroy (&tz);
    free (data);
    s_dir_destroy ();
}

/* --- cron on local time -------------------------------------------------- */

/* The firings of expr in zone after t, n of them, into out. */
static bool
s_fires (const char *expr, const char *zone, int64_t t, int64_t *out, int n)
{
    ef_cron_t c;
    char err[200];
    if (ef_cron_parse (expr, &c, err, sizeof err) != 0) {
        fprintf (stderr, "%s: %s\n", expr, err);
        return false;
    }
    ef_tz_t *tz = s_load (zone);
    if (!tz)
        return false;
    for (int i = 0; i < n; i++)
        t = out[i] = ef_cron_next_tz (&c, tz, t);
    ef_tz_destroy (&tz);
    return true;
}

EF_TEST (cron_tz_berlin_dst)
{
    s_env_reset ();
    int64_t f[8];
    /* 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:00 does
       not exist, the job fires once as the clock jumps */
    EF_REQUIRE (s_fires ("0 2 * * *", "Europe/Berlin",
                         ef_test_utc (2026, 3, 27, 12, 0, 0), f, 3));
    EF_CHECK (f[0] == ef_test_utc (2026, 3, 28, 1, 0, 0)); /* 02:00 CET */
    EF_CHECK (f[1] == ef_test_utc (2026, 3, 29, 1, 0, 0)); /* 03:00 CEST */
    EF_CHECK (f[2] == ef_test_utc (2026, 3, 30, 0, 0, 0)); /* 02:00 CEST */
    EF_REQUIRE (s_fires ("30 2 * * *", "Europe/Berlin",
                         ef_test_utc (2026, 3, 28, 12, 0, 0), f, 2));
    EF_CHECK (f[0] == ef_test_utc (2026, 3, 29, 1, 0, 0));
    EF_CHECK (f[1] == ef_test_utc (2026, 3, 30, 0, 30, 0));
    /* a job at 03:00 that day and the gap job fire at one instant */
    EF_REQUIRE (s_fires ("0 2,3 * * *", "Europe/Berlin",
                         ef_test_utc (2026, 3, 28, 12, 0, 0), f, 2));
    EF_CHECK (f[0] == ef_test_utc (2026, 3, 29, 1, 0, 0));
    EF_CHECK (f[1] == ef_test_utc (2026, 3, 30, 0, 0, 0));

    /* 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:00 happens
       twice, the job fires at the first */
    EF_REQUIRE (s_fires ("0 2 * * *", "Europe/Berlin",
                         ef_test_utc (2026, 10, 24, 12, 0, 0), f, 2));
    EF_CHECK (f[0] == ef_test_utc (2026, 10, 25, 0, 0, 0)); /* 02:00 CEST */
    EF_CHECK (f[1] == ef_test_utc (2026, 10, 26, 1, 0, 0)); /* 02:00 CET */
    EF_REQUIRE (s_fires ("30 2 * * *", "Europe/Berlin",
                         ef_test_utc (2026, 10, 25, 1, 10, 0), f, 1));
    EF_CHECK (f[0] == ef_test_utc (2026, 10, 26, 1, 30, 0)); /* not 02:30 CET */

    /* every 30 minutes: the real-time rhythm goes on through both */
    EF_REQUIRE (s_fires ("*/30 * * * *", "Europe/Berlin",
                         ef_test_utc (2026, 10, 24, 23, 45, 0), f, 5));
    for (int i = 0; i < 5; i++)
        EF_CHECK (f[i] == ef_test_utc (2026, 10, 25, 0, 0, 0) + i * 1800);
    EF_REQUIRE (s_fires ("*/30 * * * *", "Europe/Berlin",
                         ef_test_utc (2026, 3, 29, 0, 15, 0), f, 3));
    for (int i = 0; i < 3; i++)
        EF_CHECK (f[i] == ef_test_utc (2026, 3, 29, 0, 30, 0) + i * 1800);

    /* a whole year of "0 2 * * *": once a day, 365 times */
    ef_cron_t c;
    char err[200];
    EF_REQUIRE (ef_cron_parse ("0 2 * * *", &c, err, sizeof err) == 0);
    ef_tz_t *tz = s_load ("Europe/Berlin");
    EF_REQUIRE (tz);
    int count = 0;
    int64_t last_day = -1;
    for (int64_t t = ef_test_utc (2026, 1, 1, 0, 0, 0);;) {
        t = ef_cron_next_tz (&c, tz, t);
        if (t >= ef_test_utc (2027, 1, 1, 0, 0, 0) || t < 0)
            break;
        int64_t local = t + ef_tz_offset (tz, t);
        int64_t day = local / 86400;
        int64_t second = local % 86400;
        EF_CHECK (day > last_day);
        EF_CHECK (
            second == 2 * 3600
            || (second == 3 * 3600 && t == ef_test_utc (2026, 3, 29, 1, 0, 0)));
        last_day = day;
        count++;
    }
    EF_CHECK (count == 365);
    ef_tz_destroy (&tz);
}

EF_TEST (cron_tz_new_york_and_kolkata)
{
    s_env_reset ();
    int64_t f[6];
    /* weekdays 09:30 New York; DST begins Sunday 2026-03-08 */
    EF_REQUIRE (s_fires ("30 9 * * 1-5", "America/New_York",
                         ef_test_utc (2026, 3, 5, 0, 0, 0), f, 4));
    EF_CHECK (f[0] == ef_test_utc (2026, 3, 5, 14, 30, 0)); /* Thu, EST */
    EF_CHECK (f[1] == ef_test_utc (2026, 3, 6, 14, 30, 0)); /* Fri, EST */
    EF_CHECK (f[2] == ef_test_utc (2026, 3, 9, 13, 30, 0)); /* Mon, EDT */
    EF_CHECK (f[3] == ef_test_utc (2026, 3, 10, 13, 30, 0));
    /* DST ends Sunday 2026-11-01 */
    EF_REQUIRE (s_fires ("30 9 * * 1-5", "America/New_York",
                         ef_test_utc (2026, 10, 30, 0, 0, 0), f, 2));
    EF_CHECK (f[0] == ef_test_utc (2026, 10, 30, 13, 30, 0)); /* Fri, EDT */
    EF_CHECK (f[1] == ef_test_utc (2026, 11, 2, 14, 30, 0));  /* Mon, EST */
    /* a job in the gap (02:30 on 2026-03-08) fires at 03:00 EDT */
    EF_REQUIRE (s_fires ("30 2 * * *", "America/New_York",
                         ef_test_utc (2026, 3, 7, 12, 0, 0), f, 2));
    EF_CHECK (f[0] == ef_test_utc (2026, 3, 8, 7, 0, 0));
    EF_CHECK (f[1] == ef_test_utc (2026, 3, 9, 6, 30, 0));

    /* Kolkata is UTC+05:30: hours begin at half past in UTC */
    EF_REQUIRE (s_fires ("@hourly", "Asia/Kolkata",
                         ef_test_utc (2026, 11, 26, 7, 58, 30), f, 3));
    EF_CHECK (f[0] == ef_test_utc (2026, 11, 26, 8, 30, 0));
    EF_CHECK (f[1] == ef_test_utc (2026, 11, 26, 9, 30, 0));
    EF_CHECK (f[2] == ef_test_utc (2026, 11, 26, 10, 30, 0));
    EF_REQUIRE (s_fires ("0 9 * * *", "Asia/Kolkata",
                         ef_test_utc (2026, 11, 26, 7, 58, 30), f, 1));
    EF_CHECK (f[0] == ef_test_utc (2026, 11, 27, 3, 30, 0));
    /* Lord Howe's 30-minute DST: 02:00 becomes 02:30 on 2026-10-04 */
    EF_REQUIRE (s_fires ("15 2 * * *", "Australia/Lord_Howe",
                         ef_test_utc (2026, 10, 3, 0, 0, 0), f, 2));
    EF_CHECK (f[0] == ef_test_utc (2026, 10, 3, 15, 30, 0)); /* 02:30 +11 */
    EF_CHECK (f[1] == ef_test_utc (2026, 10, 4, 15, 15, 0)); /* 02:15 +11 */
}

/* A random cron expression from a few shapes of each field. */
static void
s_random_expr (char *out, size_t size, unsigned *seed)
{
    static const char *const minute[] = {"*",       "0",  "*/7", "5,35",
                                         "10-20/5", "59", "0-30"};
    static const char *const hour[] = {"*",   "2",  "*/3", "0,12",
                                       "1-4", "23", "9-17"};
    static const char *const dom[] = {"*",    "1",    "15", "29",
                                      "1-10", "*/10", "31"};
    static const char *const month[] = {"*",   "3", "10",   "jan-jun",
                                        "*/2", "2", "11,12"};
    static const char *const dow[] = {"*", "0", "1-5", "sat,sun",
                                      "3", "*", "*"};
    snprintf (out, size, "%s %s %s %s %s", minute[rand_r (seed) % 7],
              hour[rand_r (seed) % 7], dom[rand_r (seed) % 7],
              month[rand_r (seed) % 7], dow[rand_r (seed) % 7]);
}

EF_TEST (cron_tz_null_and_fixed_offsets)
{
    s_env_reset ();
    ef_tz_t *utc = s_load ("UTC");
    ef_tz_t *gmt = s_load ("Etc/GMT"); /* read from its file */
    ef_tz_t *kolkata = s_load ("Asia/Kolkata");
    EF_REQUIRE (utc && gmt && kolkata);
    unsigned seed = 20261126;
    int differ = 0;
    for (int i = 0; i < 3000; i++) {
        char expr[100];
        s_random_expr (expr, sizeof expr, &seed);
        ef_cron_t c;
        char err[200];
        EF_REQUIRE (ef_cron_parse (expr, &c, err, sizeof err) == 0);
        int64_t t = ef_test_utc (1990, 1, 1, 0, 0, 0)
                    + (int64_t) (rand_r (&seed) % 36500) * 86400
                    + rand_r (&seed) % 86400;
        int64_t want = ef_cron_next (&c, t);
        bool same = ef_cron_next_tz (&c, NULL, t) == want
                    && ef_cron_next_tz (&c, utc, t) == want
                    && ef_cron_next_tz (&c, gmt, t) == want;
        /* no DST in India since 1945: a plain shift of the wall clock */
        int64_t local = ef_cron_next (&c, t + 19800);
        same = same
               && ef_cron_next_tz (&c, kolkata, t)
                      == (local == -1 ? -1 : local - 19800);
        if (!same && differ++ < 5)
            fprintf (stderr, "'%s' after %lld differs\n", expr, (long long) t);
    }
    EF_CHECK (differ == 0);
    ef_tz_destroy (&utc);
    ef_tz_destroy (&gmt);
    ef_tz_destroy (&kolkata);
}

/* True when the wall time w (seconds, read as UTC) matches c; written
   apart from cron.c on purpose. */
static bool
s_matches (const ef_cron_t *c, int64_t w)
{
    time_t tt = (time_t) w;
    struct tm tm;
    gmtime_r (&tt, &tm);
    bool dom = (c->days >> tm.tm_mday) & 1,
         dow = (c->weekdays >> tm.tm_wday) & 1;
    bool day = c->days_any && c->weekdays_any ? true
               : c->days_any                  ? dow
               : c->weekdays_any              ? dom
                                              : dom || dow;
    return day && ((c->months >> (tm.tm_mon + 1)) & 1)
           && ((c->hours >> tm.tm_hour) & 1) && ((c->minutes >> tm.tm_min) & 1)
           && ((c->seconds >> tm.tm_sec) & 1);
}

/* The wall time (read as UTC) glibc shows at t in the oracle's zone. */
static int64_t
s_wall (int64_t t)
{
    return t + s_oracle (t);
}

EF_TEST (cron_tz_dst_against_minute_scan)
{
    /* Around every DST change of 2026 and 2095 (footer rules) in zones of
       every kind, ef_cron_next_tz must give exactly the firings of a
       minute-by-minute walk of glibc's wall clock under the documented
       rule: a wall time fires the first time the clock shows it (any
       time, for jobs with '*' in minute or hour); a jump forward fires a
       fixed-time job due in the skipped wall times, once. */
    static const char *const zones[] = {
        "Europe/Berlin",   "America/New_York", "Australia/Lord_Howe",
        "Pacific/Chatham", "America/Santiago", "America/Nuuk",
        "Asia/Jerusalem",
    };
    static const struct {
        const char *expr;
        bool wildcard; /* minute or hour field starts with '*' */
    } exprs[] = {
        {"0 2 * * *", false},     {"30 2 * * *", false},
        {"0 3 * * *", false},     {"59 1 * * *", false},
        {"15,45 2 * * *", false}, {"0,30 0-4 * * *", false},
        {"45 2 * * *", false},    {"0 0 * * *", false},
        {"30 23 * * *", false},   {"0 1 * * 0", false},
        {"*/15 * * * *", true},   {"@hourly", true},
        {"* 2 * * *", true},      {"*/20 1-3 * * *", true},
        {"0 */2 * * *", true},
    };
    const int nexprs = sizeof exprs / sizeof exprs[0];
    static int64_t wall[60 * 60 + 1];
    int changes = 0, mismatches = 0;
    for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++) {
        s_oracle_set (zones[z]);
        ef_tz_t *tz = s_load (zones[z]);
        EF_REQUIRE (tz);
        static const int years[] = {2026, 2095};
        for (int y = 0; y < 2; y++) {
            int64_t from = ef_test_utc (years[y], 1, 1, 0, 0, 0);
            int64_t to = ef_test_utc (years[y] + 1, 1, 1, 0, 0, 0);
            for (int64_t tr = ef_tz_next_transition (tz, from); tr < to;
                 tr = ef_tz_next_transition (tz, tr)) {
                changes++;
                int64_t u0 = tr - 30 * 3600, minutes = 60 * 60;
                for (int64_t m = 0; m <= minutes; m++)
                    wall[m] = s_wall (u0 + (m - 1) * 60);
                for (int e = 0; e < nexprs; e++) {
                    ef_cron_t c;
                    char err[200];
                    EF_REQUIRE (
                        ef_cron_parse (exprs[e].expr, &c, err, sizeof err)
                        == 0);
                    EF_CHECK (c.wildcard == exprs[e].wildcard);
                    int64_t got = ef_cron_next_tz (&c, tz, u0 - 1);
                    int64_t high = wall[0]; /* the latest wall time shown */
                    for (int64_t m = 1; m <= minutes; m++) {
                        int64_t u = u0 + (m - 1) * 60, w = wall[m];
                        bool fire = s_matches (&c, w)
                                    && (w > high || exprs[e].wildcard);
                        if (!exprs[e].wildcard)
                            for (int64_t s = high + 60; s < w; s += 60)
                                fire = fire || s_matches (&c, s);
                        if (w > high)
                            high = w;
                        if (!fire)
                            continue;
                        if (got != u && mismatches++ < 8)
                            fprintf (stderr,
                                     "%s '%s': scan fires at %lld, "
                                     "ef_cron_next_tz at %lld\n",
                                     zones[z], exprs[e].expr, (long long) u,
                                     (long long) got);
                        got = ef_cron_next_tz (&c, tz, u);
                    }
                    if (got < u0 + (minutes - 1) * 60 && mismatches++ < 8)
                        fprintf (stderr, "%s '%s': extra firing at %lld\n",
                                 zones[z], exprs[e].expr, (long long) got);
                }
            }
        }
        ef_tz_destroy (&tz);
    }
    EF_CHECK (changes >= 26);
    EF_CHECK (mismatches == 0);
    s_env_reset ();
}
