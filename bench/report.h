/*  report.h — what every `embedflow bench` report is made with: medians,
    measurements as JSON numbers and files, gnuplot drawings.
*/
#ifndef EF_REPORT_H
#define EF_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* The median of n (>= 1) values; sorts v. */
double ef_report_median (double *v, int n);

/* The q-quantile (0 < q <= 1) of n values by nearest rank, 0 when n
   is 0; sorts v. */
double ef_report_quantile (double *v, int n, double q);

/* x rounded to `places` decimals as a JSON number (0 when x is not
   finite): a measurement is written no finer than it was taken. NULL
   when out of memory. */
json_t *ef_report_real (double x, int places);

/* Writes doc (its reference taken) to path as indented JSON, keys in
   the order they were set. Returns 0, -1 (logged) when doc is NULL (out
   of memory building it) or the file cannot be written. */
int ef_report_dump_json (json_t *doc, const char *path);

/* True when gnuplot can be run. */
bool ef_report_have_gnuplot (void);

/* Bytes of the path ef_report_data writes. */
#define EF_REPORT_DATA_PATH 32

/* Opens a new temporary file for a drawing's data, its name in path.
   Returns the stream (the caller closes it), NULL when none can be made. */
FILE *ef_report_data (char path[EF_REPORT_DATA_PATH]);

/* text as a gnuplot single-quoted string, quotes included: a quote in
   it doubled, the one escape such a string has. Returns a heap string
   (the caller frees it), NULL when out of memory or when text holds a
   newline, which no gnuplot string literal can carry. */
char *ef_report_gnuplot_string (const char *text);

/* Runs gnuplot on script, then removes the data file. Returns 0, or -1
   when gnuplot cannot be started or fails. */
int ef_report_gnuplot (const char *script, const char *data);

#endif
