/*  indexreport.c — the index bench's table, JSON and drawing (see
    indexreport.h).
*/
#include "bench/indexreport.h"

#include "bench/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The runs of contender k at writer count index w. */
static const ef_indexload_result_t *
s_runs (const ef_indexreport_t *r, int k, int w)
{
    return r->results
           + ((size_t) k * (size_t) r->max_writers + (size_t) w)
                 * (size_t) r->max_runs;
}

/* Whether every contender was measured: the targets compare them. */
static bool
s_all_contenders (const ef_indexreport_t *b)
{
    for (int k = 0; k < EF_INDEXLOAD_KINDS; k++)
        if (!b->contender[k])
            return false;
    return true;
}

/* Ratio x / y, 0 when y is not positive. */
static double
s_ratio (double x, double y)
{
    return y > 0 ? x / y : 0;
}

void
ef_indexreport_print (const ef_indexreport_t *b, FILE *out)
{
    char index[128];
    ef_index_describe (b->index, index, sizeof index);
    fprintf (out,
             "\nembedflow bench: %llu rows x %d dims (%s vectors) into a "
             "table indexed %s, batch %d rows,\nmaintenance_work_mem %lld "
             "MB, median of %d run%s\n\n",
             (unsigned long long) b->rows, b->dim, b->vectors, index,
             b->batch_rows, (long long) (b->build_memory >> 20), b->runs,
             b->runs == 1 ? "" : "s");
    fprintf (out, "%-7s %-16s %8s %8s %8s %11s %9s %19s %19s %7s\n", "writers",
             "contender", "rows/s", "load s", "build s", "searchable",
             "indexed", "during p50/p95 ms", "at rest p50/p95 ms", "recall");
    for (int w = 0; w < b->n_writers; w++) {
        ef_indexload_result_t med[EF_INDEXLOAD_KINDS];
        for (int k = 0; k < EF_INDEXLOAD_KINDS; k++) {
            if (!b->contender[k])
                continue;
            ef_indexload_median (s_runs (b, k, w), b->runs, &med[k]);
            const ef_indexload_result_t *m = &med[k];
            char recall[16];
            if (m->recall < 0)
                snprintf (recall, sizeof recall, "n/a");
            else
                snprintf (recall, sizeof recall, "%.3f", m->recall);
            fprintf (out,
                     "%-7d %-16s %8.0f %8.1f %8.1f %9.1f s %7.1f s %9.1f / "
                     "%7.1f %9.1f / %7.1f %7s\n",
                     b->writers[w], ef_indexload_name (k), m->rows_s, m->load_s,
                     m->build_s, m->searchable_s, m->indexed_s,
                     m->during_p50 * 1e3, m->during_p95 * 1e3,
                     m->rest_p50 * 1e3, m->rest_p95 * 1e3, recall);
        }
        if (!s_all_contenders (b))
            continue;
        const ef_indexload_result_t *e = &med[EF_INDEXLOAD_EMBEDFLOW];
        double through =
            s_ratio (med[EF_INDEXLOAD_THROUGH].searchable_s, e->searchable_s);
        double build =
            s_ratio (med[EF_INDEXLOAD_BUILD].searchable_s, e->searchable_s);
        double p95 = s_ratio (e->during_p95, e->rest_p95);
        const ef_indexload_result_t *t = &med[EF_INDEXLOAD_THROUGH];
        fprintf (out,
                 "        targets: embedflow searchable %.2f x sooner than "
                 "through-index [>= 5 %s], %.2f x\n"
                 "                 sooner than load-then-build [>= 1.5 %s]; "
                 "query p95 during %.2f x at rest [<= 3 %s]\n"
                 "                 (through-index's own query p95 during: "
                 "%.2f x at rest)\n",
                 through, through >= 5 ? "met" : "MISSED", build,
                 build >= 1.5 ? "met" : "MISSED", p95,
                 p95 <= 3 ? "met" : "MISSED",
                 s_ratio (t->during_p95, t->rest_p95));
    }
    char rate[48] = "back to back";
    if (b->query_rate > 0)
        snprintf (rate, sizeof rate, "%lld a second",
                  (long long) b->query_rate);
    fprintf (out,
             "\nthrough-index: binary COPY into chunk + embedding with its ANN "
             "index made beforehand\n"
             "load-then-build: the same COPY into the table without the index, "
             "then CREATE INDEX\n"
             "embedflow: the pipeline (load generator -> gRPC -> PostgreSQL) "
             "with index.method as\n"
             "    configured; it counts as searchable once at most %lld rows "
             "await an index\n"
             "searchable, indexed: seconds from the load's start until every "
             "row is searchable, and\n"
             "    until an ANN index covers every row\n"
             "during: top-10 queries (ORDER BY vector %s $1 LIMIT 10), %s on "
             "their own\n"
             "    connection from the load's start until every row is indexed; "
             "at rest: %d queries\n"
             "    afterwards (embedflow: once merged to index.max_segments); "
             "recall: recall@10 of\n"
             "    the first %d of them against an exact search\n",
             (long long) b->searchable_rows,
             ef_indexload_operator (b->index->metric), rate, b->queries,
             b->queries < 50 ? b->queries : 50);
}

/* Writes the index bench's measurements as JSON. Returns 0 or -1. */
int
ef_indexreport_json (const ef_indexreport_t *b, const char *path,
                     const char *command)
{
    char index[128];
    ef_index_describe (b->index, index, sizeof index);
    json_t *writers = json_array ();
    json_t *results = json_array ();
    json_t *targets = json_array ();
    for (int w = 0; writers && w < b->n_writers; w++)
        json_array_append_new (writers, json_integer (b->writers[w]));
    for (int w = 0; results && targets && w < b->n_writers; w++) {
        ef_indexload_result_t med[EF_INDEXLOAD_KINDS];
        for (int k = 0; k < EF_INDEXLOAD_KINDS; k++) {
            if (!b->contender[k])
                continue;
            ef_indexload_median (s_runs (b, k, w), b->runs, &med[k]);
            json_t *runs = json_array ();
            for (int r = 0; runs && r < b->runs; r++)
                json_array_append_new (
                    runs, ef_indexload_json (&s_runs (b, k, w)[r]));
            json_array_append_new (
                results, json_pack ("{s:s, s:i, s:o, s:o}", "contender",
                                    ef_indexload_name (k), "writers",
                                    b->writers[w], "median",
                                    ef_indexload_json (&med[k]), "runs", runs));
        }
        if (!s_all_contenders (b))
            continue;
        const ef_indexload_result_t *e = &med[EF_INDEXLOAD_EMBEDFLOW];
        json_array_append_new (
            targets,
            json_pack (
                "{s:i, s:o, s:o, s:o, s:o}", "writers", b->writers[w],
                "searchable_vs_through_index",
                ef_report_real (s_ratio (med[EF_INDEXLOAD_THROUGH].searchable_s,
                                         e->searchable_s),
                                3),
                "searchable_vs_load_then_build",
                ef_report_real (s_ratio (med[EF_INDEXLOAD_BUILD].searchable_s,
                                         e->searchable_s),
                                3),
                "p95_during_vs_rest",
                ef_report_real (s_ratio (e->during_p95, e->rest_p95), 3),
                "through_index_p95_during_vs_rest",
                ef_report_real (s_ratio (med[EF_INDEXLOAD_THROUGH].during_p95,
                                         med[EF_INDEXLOAD_THROUGH].rest_p95),
                                3)));
    }
    json_t *cmd = json_string (command);
    json_t *doc = json_pack (
        "{s:o, s:{s:I, s:i, s:i, s:i, s:s, s:s, s:s, s:I, s:I, s:i, s:I, "
        "s:o}, "
        "s:o, s:o}",
        "command", cmd ? cmd : json_null (), "params", "rows",
        (json_int_t) b->rows, "dim", b->dim, "batch_rows", b->batch_rows,
        "runs", b->runs, "index", index, "vector_type", b->vector_type,
        "vectors", b->vectors, "build_memory_bytes",
        (json_int_t) b->build_memory, "searchable_rows",
        (json_int_t) b->searchable_rows, "queries", b->queries, "query_rate",
        (json_int_t) b->query_rate, "writers", writers, "results", results,
        "targets", targets);
    return ef_report_dump_json (doc, path);
}

/* The plot command of the third panel: one series of points per
   contender, read from the query log's tab-separated lines (its header
   skipped); log is the log's path as a gnuplot string. Returns a heap
   string, NULL when out of memory. */
static char *
s_timeline (const ef_indexreport_t *b, const char *log)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream (&text, &len);
    if (!m)
        return NULL;
    fputs ("set datafile separator '\\t'\n"
           "set xlabel 'seconds from the load''s start'\n"
           "set xtics norotate\n"
           "set ylabel 'query latency during the load, ms'\nplot ",
           m);
    const char *sep = "";
    for (int k = 0; k < EF_INDEXLOAD_KINDS; k++) {
        if (!b->contender[k])
            continue;
        fprintf (m,
                 "%s%s every ::1 using (strcol(1) eq '%s' && "
                 "strcol(4) eq 'during' ? $5 : 1/0):6 with points pt 7 "
                 "ps 0.3 title '%s'",
                 sep, log, ef_indexload_name (k), ef_indexload_name (k));
        sep = ", ";
    }
    fputs ("\n", m);
    if (fclose (m) != 0) {
        free (text);
        return NULL;
    }
    return text;
}

/* Draws, per contender and writer count, the time until searchable and
   indexed, and the query percentiles, into path (PNG). Returns 0, or -1
   when gnuplot fails, a path holds a newline or memory runs out. */
int
ef_indexreport_plot (const ef_indexreport_t *b, const char *path)
{
    int rc = -1;
    /* paths as gnuplot strings: a quote in a path ends none early */
    char *out = ef_report_gnuplot_string (path);
    char *log = b->query_log ? ef_report_gnuplot_string (b->query_log) : NULL;
    char *timeline = log ? s_timeline (b, log) : NULL;
    char *script = NULL;
    char data[EF_REPORT_DATA_PATH];
    FILE *d = NULL;
    if (!out || (b->query_log && !timeline) || !(d = ef_report_data (data)))
        goto done;
    fprintf (d, "# contender searchable_s indexed_s during_p50_ms "
                "during_p95_ms rest_p50_ms rest_p95_ms\n");
    for (int w = 0; w < b->n_writers; w++)
        for (int k = 0; k < EF_INDEXLOAD_KINDS; k++) {
            if (!b->contender[k])
                continue;
            ef_indexload_result_t m;
            ef_indexload_median (s_runs (b, k, w), b->runs, &m);
            fprintf (d, "\"%s, %d w\" %.3f %.3f %.3f %.3f %.3f %.3f\n",
                     ef_indexload_name (k), b->writers[w], m.searchable_s,
                     m.indexed_s, m.during_p50 * 1e3, m.during_p95 * 1e3,
                     m.rest_p50 * 1e3, m.rest_p95 * 1e3);
        }
    fclose (d);
    char index[128];
    ef_index_describe (b->index, index, sizeof index);
    if (asprintf (
            &script,
            "set terminal pngcairo size %d,480 noenhanced\n"
            "set output %s\n"
            "set multiplot layout 1,%d title 'embedflow bench: %llu rows x "
            "%d dims (%s vectors) into a table indexed %s, median of %d'\n"
            "set style data histograms\nset style histogram cluster gap 1\n"
            "set style fill solid 0.8 border -1\nset boxwidth 0.9\n"
            "set key above\nset grid ytics\nset yrange [0:*]\n"
            "set xtics rotate by -20\n"
            "set ylabel 'seconds from the load''s start'\n"
            "plot '%s' using 2:xtic(1) title 'every row searchable', '' "
            "using 3 title 'every row indexed'\n"
            "set ylabel 'top-10 query latency, ms'\n"
            "plot '%s' using 4:xtic(1) title 'p50 during', '' using 5 "
            "title 'p95 during', '' using 6 title 'p50 at rest', '' using 7 "
            "title 'p95 at rest'\n"
            "%s"
            "unset multiplot\n",
            timeline ? 1800 : 1200, out, timeline ? 3 : 2,
            (unsigned long long) b->rows, b->dim, b->vectors, index, b->runs,
            data, data, timeline ? timeline : "")
        < 0) {
        script = NULL;
        unlink (data);
        goto done;
    }
    rc = ef_report_gnuplot (script, data);
done:
    free (script);
    free (timeline);
    free (log);
    free (out);
    return rc;
}
