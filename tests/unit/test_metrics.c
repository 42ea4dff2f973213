/*  test_metrics.c — the metrics registry: counters, gauges, histogram
    quantiles and buckets, labels and the Prometheus text. */
#include "ef_test.h"

#include "embedflow/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

EF_TEST (metrics_counters_and_gauges)
{
    ef_counter_t *c = ef_metrics_counter ("t_things_total", "Things.", "a[0]");
    EF_REQUIRE (c);
    EF_CHECK (ef_metrics_counter ("t_things_total", "other help", "a[0]") == c);
    EF_CHECK (ef_metrics_counter ("t_things_total", NULL, "a[1]") != c);
    ef_counter_add (c, 5);
    ef_counter_add (c, 2);
    EF_CHECK (ef_counter_value (c) == 7);
    ef_counter_add (NULL, 1); /* no-op, no crash */
    ef_gauge_t *g = ef_metrics_gauge ("t_level", "Level.", NULL);
    ef_gauge_add (g, 10);
    ef_gauge_add (g, -3);
    EF_CHECK (ef_gauge_value (g) == 7);
    ef_gauge_set (g, -1);
    EF_CHECK (ef_gauge_value (g) == -1);
    EF_CHECK (ef_metrics_gauge_sum ("t_level") == -1);
    EF_CHECK (ef_metrics_exists ("t_level"));
    EF_CHECK (!ef_metrics_exists ("t_nothing"));
}

EF_TEST (metrics_seconds_counter_shows_seconds)
{
    ef_counter_t *c =
        ef_metrics_seconds_labeled ("t_waited_seconds_total", "Waited.",
                                    (const char *const[]){"link", "l", NULL});
    EF_REQUIRE (c);
    ef_counter_add (c, 1500000000); /* 1.5 s in nanoseconds */
    ef_counter_add (c, 250000);
    EF_CHECK (ef_counter_value (c) == 1500250000);
    char *text = ef_metrics_render (NULL);
    EF_REQUIRE (text);
    EF_CHECK (strstr (text, "# TYPE t_waited_seconds_total counter\n"));
    EF_CHECK (strstr (text, "t_waited_seconds_total{link=\"l\"} 1.500250\n"));
    free (text);
    ef_metrics_reset ();
    EF_CHECK (ef_counter_value (c) == 0);
}

EF_TEST (metrics_histogram_quantiles)
{
    ef_histogram_t *h = ef_metrics_histogram ("t_wait_seconds", "Wait.", NULL);
    EF_REQUIRE (h);
    EF_CHECK (ef_histogram_quantile (h, 0.5) == 0);
    /* 1 ms .. 1000 ms, one each */
    for (int i = 1; i <= 1000; i++)
        ef_histogram_observe (h, i / 1000.0);
    EF_CHECK (ef_histogram_count (h) == 1000);
    EF_CHECK (fabs (ef_histogram_sum (h) - 500.5) < 0.01);
    double p50 = ef_histogram_quantile (h, 0.50);
    double p99 = ef_histogram_quantile (h, 0.99);
    /* within the fine buckets' 9% */
    EF_CHECK (p50 >= 0.500 && p50 <= 0.500 * 1.1);
    EF_CHECK (p99 >= 0.990 && p99 <= 0.990 * 1.1);
    EF_CHECK (ef_histogram_quantile (h, 1.0) >= 1.0);
    ef_histogram_observe (h, -5); /* a clock step counts as 0 */
    EF_CHECK (ef_histogram_count (h) == 1001);
}

/* n observations at once count as n single ones, quantiles included. */
EF_TEST (metrics_histogram_observe_n)
{
    ef_histogram_t *one =
        ef_metrics_histogram ("t_one_seconds", "One by one.", NULL);
    ef_histogram_t *many =
        ef_metrics_histogram ("t_many_seconds", "At once.", NULL);
    EF_REQUIRE (one && many);
    for (int i = 0; i < 300; i++)
        ef_histogram_observe (one, 0.004);
    for (int i = 0; i < 100; i++)
        ef_histogram_observe (one, 2.0);
    ef_histogram_observe_n (many, 0.004, 300);
    ef_histogram_observe_n (many, 2.0, 100);
    ef_histogram_observe_n (many, 7.0, 0); /* nothing */
    EF_CHECK (ef_histogram_count (many) == 400);
    EF_CHECK (fabs (ef_histogram_sum (many) - ef_histogram_sum (one)) < 1e-6);
    EF_CHECK (ef_histogram_quantile (many, 0.5)
              == ef_histogram_quantile (one, 0.5));
    EF_CHECK (ef_histogram_quantile (many, 0.99)
              == ef_histogram_quantile (one, 0.99));
    EF_CHECK (ef_histogram_quantile (many, 0.99) >= 2.0);
}

EF_TEST (metrics_render_prometheus_text)
{
    ef_counter_add (
        ef_metrics_counter ("t_render_total", "Rendered \"x\".", "w\"eird\\"),
        3);
    ef_histogram_t *h = ef_metrics_histogram ("t_render_seconds", "R.", "x");
    ef_histogram_observe (h, 0.002);
    ef_histogram_observe (h, 0.2);
    ef_histogram_observe (h, 100); /* above every bound: only +Inf */
    size_t len;
    char *text = ef_metrics_render (&len);
    EF_REQUIRE (text);
    EF_CHECK (strlen (text) == len);
    EF_CHECK (strstr (text, "# TYPE t_render_total counter\n"));
    EF_CHECK (strstr (text, "t_render_total{actor=\"w\\\"eird\\\\\"} 3\n"));
    EF_CHECK (strstr (text, "# TYPE t_render_seconds histogram\n"));
    EF_CHECK (
        strstr (text, "t_render_seconds_bucket{actor=\"x\",le=\"0.001\"} 0\n"));
    EF_CHECK (strstr (
        text, "t_render_seconds_bucket{actor=\"x\",le=\"0.0025\"} 1\n"));
    EF_CHECK (
        strstr (text, "t_render_seconds_bucket{actor=\"x\",le=\"0.25\"} 2\n"));
    EF_CHECK (
        strstr (text, "t_render_seconds_bucket{actor=\"x\",le=\"60\"} 2\n"));
    EF_CHECK (
        strstr (text, "t_render_seconds_bucket{actor=\"x\",le=\"+Inf\"} 3\n"));
    EF_CHECK (strstr (text, "t_render_seconds_count{actor=\"x\"} 3\n"));
    EF_CHECK (strstr (text, "embedflow_process_resident_memory_bytes "));
    EF_CHECK (strstr (text, "embedflow_process_cpu_seconds_total "));
    /* one HELP per name even with several series */
    ef_counter_add (ef_metrics_counter ("t_render_total", NULL, "y"), 1);
    free (text);
    text = ef_metrics_render (NULL);
    EF_REQUIRE (text);
    char *first = strstr (text, "# HELP t_render_total");
    EF_CHECK (first && !strstr (first + 1, "# HELP t_render_total"));
    free (text);
    ef_metrics_reset ();
    EF_CHECK (ef_histogram_count (h) == 0);
    EF_CHECK (ef_histogram_quantile (h, 0.5) == 0);
}

static void *
s_adder (void *arg)
{
    ef_histogram_t *h = arg;
    ef_counter_t *c = ef_metrics_counter ("t_race_total", "Race.", NULL);
    for (int i = 0; i < 100000; i++) {
        ef_counter_add (c, 1);
        ef_histogram_observe (h, 0.001);
    }
    return NULL;
}

EF_TEST (metrics_updates_from_threads_add_up)
{
    ef_histogram_t *h = ef_metrics_histogram ("t_race_seconds", "Race.", NULL);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create (&t[i], NULL, s_adder, h);
    for (int i = 0; i < 4; i++)
        pthread_join (t[i], NULL);
    EF_CHECK (ef_counter_value (ef_metrics_counter ("t_race_total", NULL, NULL))
              == 400000);
    EF_CHECK (ef_histogram_count (h) == 400000);
}

EF_TEST (metrics_label_values_are_escaped)
{
    /* backslash, double quote and newline escaped; a byte that is not
       UTF-8 shown as '?'; valid UTF-8 kept */
    ef_counter_t *c = ef_metrics_counter_labeled (
        "t_escape_total", "Help with \\ and\nnewline.",
        (const char *const[]){"job_name", "a\\b\"c\nd\xff\xc3\xa9", "status",
                              "ok", NULL});
    EF_REQUIRE (c);
    ef_counter_add (c, 4);
    /* the same label set is the same series; another order is not */
    EF_CHECK (ef_metrics_counter_labeled (
                  "t_escape_total", NULL,
                  (const char *const[]){"job_name", "a\\b\"c\nd\xff\xc3\xa9",
                                        "status", "ok", NULL})
              == c);
    EF_CHECK (ef_metrics_counter_labeled (
                  "t_escape_total", NULL,
                  (const char *const[]){"job_name", "x", "status", "ok", NULL})
              != c);
    /* the one-label constructor and the labeled one meet */
    ef_counter_t *a = ef_metrics_counter ("t_escape_total", NULL, "n\"1");
    EF_CHECK (ef_metrics_counter_labeled (
                  "t_escape_total", NULL,
                  (const char *const[]){"actor", "n\"1", NULL})
              == a);
    EF_CHECK (ef_metrics_counter_labeled ("t_escape_total", NULL, NULL)
              == ef_metrics_counter ("t_escape_total", NULL, NULL));
    ef_histogram_observe (
        ef_metrics_histogram_labeled ("t_escape_seconds", "E.",
                                      (const char *const[]){"k", "v", NULL}),
        0.001);
    char *text = ef_metrics_render (NULL);
    EF_REQUIRE (text);
    EF_CHECK (
        strstr (text, "# HELP t_escape_total Help with \\\\ and\\nnewline.\n"));
    EF_CHECK (strstr (text, "t_escape_total{job_name=\"a\\\\b\\\"c\\nd?\xc3\xa9"
                            "\",status=\"ok\"} 4\n"));
    EF_CHECK (strstr (text, "t_escape_total{actor=\"n\\\"1\"} 0\n"));
    EF_CHECK (
        strstr (text, "t_escape_seconds_bucket{k=\"v\",le=\"0.001\"} 1\n"));
    EF_CHECK (strstr (text, "t_escape_seconds_count{k=\"v\"} 1\n"));
    /* no raw newline inside any sample line: every line is a comment or
       name{...} value */
    for (char *line = strtok (text, "\n"); line; line = strtok (NULL, "\n"))
        EF_CHECK (line[0] == '#' || strchr (line, ' '));
    free (text);
}
