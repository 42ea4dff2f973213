/*  report.c — medians, JSON numbers and files, gnuplot (see report.h).
*/
#include "bench/report.h"

#include "embedflow/log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

double
ef_report_median (double *v, int n)
{
    qsort (v, (size_t) n, sizeof *v, s_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double
ef_report_quantile (double *v, int n, double q)
{
    if (n == 0)
        return 0;
    qsort (v, (size_t) n, sizeof *v, s_cmp_double);
    int rank = (int) (q * n + 0.999999);
    rank = rank < 1 ? 1 : rank > n ? n : rank;
    return v[rank - 1];
}

json_t *
ef_report_real (double x, int places)
{
    double scale = pow (10, places);
    return json_real (isfinite (x) ? round (x * scale) / scale : 0);
}

int
ef_report_dump_json (json_t *doc, const char *path)
{
    int rc = doc ? json_dump_file (doc, path,
                                   JSON_INDENT (2) | JSON_PRESERVE_ORDER
                                       | JSON_REAL_PRECISION (15))
                 : -1;
    if (rc != 0)
        ef_error ("cannot write %s%s", path, doc ? "" : ": out of memory");
    json_decref (doc);
    return rc;
}

bool
ef_report_have_gnuplot (void)
{
    return system ("command -v gnuplot >/dev/null 2>&1") == 0;
}

FILE *
ef_report_data (char path[EF_REPORT_DATA_PATH])
{
    snprintf (path, EF_REPORT_DATA_PATH, "/tmp/embedflow-bench-XXXXXX");
    int fd = mkstemp (path);
    if (fd < 0)
        return NULL;
    FILE *d = fdopen (fd, "w");
    if (!d) {
        close (fd);
        unlink (path);
    }
    return d;
}

char *
ef_report_gnuplot_string (const char *text)
{
    if (strchr (text, '\n'))
        return NULL;
    size_t quotes = 0;
    for (const char *p = text; *p; p++)
        quotes += *p == '\'';
    char *out = malloc (strlen (text) + quotes + 3);
    if (!out)
        return NULL;
    char *o = out;
    *o++ = '\'';
    for (const char *p = text; *p; p++) {
        *o++ = *p;
        if (*p == '\'')
            *o++ = '\'';
    }
    *o++ = '\'';
    *o = '\0';
    return out;
}

int
ef_report_gnuplot (const char *script, const char *data)
{
    FILE *g = popen ("gnuplot", "w");
    int rc = -1;
    if (g) {
        fputs (script, g);
        rc = pclose (g) == 0 ? 0 : -1;
    }
    unlink (data);
    return rc;
}
