/*  runner.c — runs the EF_TEST functions linked into ef-unit.

    ef-unit --list            names, one a line
    ef-unit [-v] NAME...      runs those (all when none), exit 1 on failure
*/
#include "ef_test.h"

#include <time.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_TESTS 512

static struct {
    const char *name;
    ef_test_fn *fn;
} s_tests[MAX_TESTS];
static int s_count;
static int s_failures;
static const char *s_current;
static char s_schema[128];
bool ef_test_verbose;

void
ef_test_register (const char *name, ef_test_fn *fn)
{
    if (s_count < MAX_TESTS) {
        s_tests[s_count].name = name;
        s_tests[s_count].fn = fn;
        s_count++;
    }
}

void
ef_test_fail (const char *file, int line, const char *expr)
{
    fprintf (stderr, "FAIL %s: %s:%d: %s\n", s_current, file, line, expr);
    s_failures++;
}

const char *
ef_test_conninfo (void)
{
    const char *c = getenv ("EF_TEST_DATABASE");
    return c ? c : "";
}

const char *
ef_test_schema (void)
{
    return s_schema;
}

static int
s_run (int i)
{
    int before = s_failures;
    s_current = s_tests[i].name;
    snprintf (s_schema, sizeof s_schema, "t_%s_%d", s_tests[i].name,
              (int) getpid ());
    s_tests[i].fn ();
    int failed = s_failures - before;
    printf ("%s %s\n", failed ? "FAIL" : "ok  ", s_tests[i].name);
    return failed;
}

int
main (int argc, char **argv)
{
    int first = 1;
    if (argc > 1 && strcmp (argv[1], "--list") == 0) {
        for (int i = 0; i < s_count; i++)
            printf ("%s\n", s_tests[i].name);
        return 0;
    }
    if (argc > 1 && strcmp (argv[1], "-v") == 0) {
        ef_test_verbose = true;
        first = 2;
    }
    int ran = 0;
    for (int i = 0; i < s_count; i++) {
        bool wanted = first >= argc;
        for (int a = first; a < argc && !wanted; a++)
            wanted = strcmp (argv[a], s_tests[i].name) == 0;
        if (wanted) {
            s_run (i);
            ran++;
        }
    }
    if (ran == 0) {
        fprintf (stderr, "ef-unit: no test matched\n");
        return 2;
    }
    return s_failures ? 1 : 0;
}

int64_t
ef_test_utc (int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t) timegm (&tm);
}
