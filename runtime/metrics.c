/*  metrics.c — the process-wide metrics registry (see metrics.h).

    Series are allocated once and never freed (the registry's array keeps
    them reachable), so a pointer handed out stays valid for the life of
    the process and updates need no lock: counters and gauges are atomic
    integers, a histogram is an array of atomic bucket counters plus an
    atomic sum in nanoseconds. Only creating a series and rendering take
    the registry's mutex.
*/
#include "embedflow/metrics.h"
#include "embedflow/buf.h"
#include "embedflow/utf8.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* S_SECONDS is a counter of nanoseconds shown as seconds. */
typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM, S_SECONDS } s_type_t;

/* The buckets a histogram exposes, in seconds. */
static const double s_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                  0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                  5,      10,    30,     60};
#define S_BOUNDS (sizeof s_bounds / sizeof s_bounds[0])
/* Fine buckets: 8 per doubling from 1 µs to 2^32 µs (~70 min). */
#define S_FINE_STEPS 8
#define S_FINE       (32 * S_FINE_STEPS + 1)

struct ef_counter {
    atomic_uint_least64_t value; /* total */
};

struct ef_gauge {
    atomic_int_least64_t value; /* current */
};

struct ef_histogram {
    atomic_uint_least64_t count;            /* observations */
    atomic_uint_least64_t sum_ns;           /* their sum, nanoseconds */
    atomic_uint_least64_t bucket[S_BOUNDS]; /* not cumulative */
    atomic_uint_least64_t fine[S_FINE];     /* for quantiles */
};

typedef struct {
    s_type_t type; /* which of the three */
    char *name;    /* metric name */
    char *help;    /* HELP text */
    char *labels;  /* rendered, escaped: a="x",b="y"; NULL for none */
    void *metric;  /* ef_counter_t / ef_gauge_t / ef_histogram_t */
} s_series_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_series_t **s_series; /* every series, in creation order */
static size_t s_n_series;     /* used */
static size_t s_cap_series;   /* allocated */

/* True when name is a valid Prometheus label name that we may use. */
static bool
s_label_name_ok (const char *name)
{
    if (!name || !*name || strncmp (name, "__", 2) == 0)
        return false;
    for (const char *p = name; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (p > name && *p >= '0' && *p <= '9')))
            return false;
    return true;
}

/* Writes value escaped as the text format wants (backslash, double quote
   and newline; a byte that is not valid UTF-8 becomes '?', since one such
   byte makes a scraper reject the whole page) into out when not NULL.
   Returns the length written (or needed). */
static size_t
s_escape (char *out, const char *value)
{
    size_t n = 0;
    const unsigned char *p = (const unsigned char *) value;
    const unsigned char *end = p + strlen (value);
    while (*p) {
        size_t len = ef_utf8_seq (p, (size_t) (end - p));
        const char *esc = *p == '\\'   ? "\\\\"
                          : *p == '"'  ? "\\\""
                          : *p == '\n' ? "\\n"
                          : len == 0   ? "?"
                                       : NULL;
        if (esc) {
            if (out)
                memcpy (out + n, esc, strlen (esc));
            n += strlen (esc);
            p += len ? len : 1;
        }
        else {
            if (out)
                memcpy (out + n, p, len);
            n += len;
            p += len;
        }
    }
    return n;
}

/* The label set of name, value pairs (NULL-terminated; NULL or empty for
   none) rendered as a="x",b="y" into a heap string, *text NULL for none.
   Returns 0, -1 when out of memory. A bad or reserved label name is a
   programming error (assert; -1 without asserts). */
static int
s_labels_text (s_type_t type, const char *const *labels, char **text)
{
    *text = NULL;
    size_t size = 0, pairs = 0;
    for (; labels && labels[pairs * 2]; pairs++) {
        const char *lname = labels[pairs * 2];
        const char *value = labels[pairs * 2 + 1];
        bool ok = s_label_name_ok (lname) && value
                  && (type != S_HISTOGRAM || strcmp (lname, "le") != 0);
        assert (ok);
        if (!ok) /* without asserts: no series, not a page scrapers reject */
            return -1;
        size += strlen (lname) + 4 + s_escape (NULL, value);
    }
    if (pairs == 0)
        return 0;
    char *t = malloc (size + 1);
    if (!t)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < pairs; i++) {
        n += (size_t) sprintf (t + n, "%s%s=\"", i ? "," : "", labels[i * 2]);
        n += s_escape (t + n, labels[i * 2 + 1]);
        t[n++] = '"';
    }
    t[n] = 0;
    *text = t;
    return 0;
}

/* Finds or creates the series of name with the label pairs labels (see
   s_labels_text) under the lock. NULL when out of memory. */
static void *
s_get (s_type_t type, const char *name, const char *help,
       const char *const *labels)
{
    char *a;
    if (s_labels_text (type, labels, &a) != 0)
        return NULL;
    pthread_mutex_lock (&s_lock);
    void *found = NULL;
    for (size_t i = 0; i < s_n_series && !found; i++) {
        s_series_t *s = s_series[i];
        if (strcmp (s->name, name) != 0)
            continue;
        assert (s->type == type);
        if ((!a && !s->labels)
            || (a && s->labels && strcmp (a, s->labels) == 0))
            found = s->metric;
    }
    if (!found && s_n_series == s_cap_series) {
        size_t cap = s_cap_series ? s_cap_series * 2 : 64;
        s_series_t **grown = realloc (s_series, cap * sizeof *grown);
        if (grown) {
            s_series = grown;
            s_cap_series = cap;
        }
    }
    if (!found && s_n_series < s_cap_series) {
        size_t size = type == S_COUNTER || type == S_SECONDS
                          ? sizeof (ef_counter_t)
                      : type == S_GAUGE ? sizeof (ef_gauge_t)
                                        : sizeof (ef_histogram_t);
        s_series_t *s = calloc (1, sizeof *s);
        void *metric = calloc (1, size);
        char *n = strdup (name), *h = strdup (help ? help : "");
        if (s && metric && n && h) {
            *s = (s_series_t){type, n, h, a, metric};
            s_series[s_n_series++] = s;
            found = metric;
            a = NULL; /* the series owns it */
        }
        else {
            free (s);
            free (metric);
            free (n);
            free (h);
        }
    }
    pthread_mutex_unlock (&s_lock);
    free (a);
    return found;
}

/* The label pairs of an actor="<actor>" series (none when actor is
   NULL), in pairs (room for three pointers). */
static const char *const *
s_actor_labels (const char *actor, const char *pairs[3])
{
    if (!actor)
        return NULL;
    pairs[0] = "actor";
    pairs[1] = actor;
    pairs[2] = NULL;
    return pairs;
}

ef_counter_t *
ef_metrics_counter (const char *name, const char *help, const char *actor)
{
    const char *pairs[3];
    return s_get (S_COUNTER, name, help, s_actor_labels (actor, pairs));
}

ef_gauge_t *
ef_metrics_gauge (const char *name, const char *help, const char *actor)
{
    const char *pairs[3];
    return s_get (S_GAUGE, name, help, s_actor_labels (actor, pairs));
}

ef_histogram_t *
ef_metrics_histogram (const char *name, const char *help, const char *actor)
{
    const char *pairs[3];
    return s_get (S_HISTOGRAM, name, help, s_actor_labels (actor, pairs));
}

ef_counter_t *
ef_metrics_counter_labeled (const char *name, const char *help,
                            const char *const *labels)
{
    return s_get (S_COUNTER, name, help, labels);
}

ef_gauge_t *
ef_metrics_gauge_labeled (const char *name, const char *help,
                          const char *const *labels)
{
    return s_get (S_GAUGE, name, help, labels);
}

ef_counter_t *
ef_metrics_seconds_labeled (const char *name, const char *help,
                            const char *const *labels)
{
    return s_get (S_SECONDS, name, help, labels);
}

ef_histogram_t *
ef_metrics_histogram_labeled (const char *name, const char *help,
                              const char *const *labels)
{
    return s_get (S_HISTOGRAM, name, help, labels);
}

void
ef_counter_add (ef_counter_t *self, uint64_t n)
{
    if (self)
        atomic_fetch_add_explicit (&self->value, n, memory_order_relaxed);
}

uint64_t
ef_counter_value (const ef_counter_t *self)
{
    return self ? atomic_load ((atomic_uint_least64_t *) &self->value) : 0;
}

void
ef_gauge_set (ef_gauge_t *self, int64_t value)
{
    if (self)
        atomic_store_explicit (&self->value, value, memory_order_relaxed);
}

void
ef_gauge_add (ef_gauge_t *self, int64_t delta)
{
    if (self)
        atomic_fetch_add_explicit (&self->value, delta, memory_order_relaxed);
}

int64_t
ef_gauge_value (const ef_gauge_t *self)
{
    return self ? atomic_load ((atomic_int_least64_t *) &self->value) : 0;
}

/* Fine bucket of a value in microseconds: 0 for <= 1 µs, then 8 per
   doubling, the last one open-ended. */
static size_t
s_fine_index (double us)
{
    if (us <= 1)
        return 0;
    double i = ceil (log2 (us) * S_FINE_STEPS);
    return i >= S_FINE - 1 ? S_FINE - 1 : (size_t) i;
}

void
ef_histogram_observe (ef_histogram_t *self, double seconds)
{
    ef_histogram_observe_n (self, seconds, 1);
}

void
ef_histogram_observe_n (ef_histogram_t *self, double seconds, uint64_t n)
{
    if (!self || n == 0)
        return;
    if (!(seconds > 0)) /* negative (clock step) and NaN count as 0 */
        seconds = 0;
    size_t b = 0;
    while (b < S_BOUNDS && seconds > s_bounds[b])
        b++;
    if (b < S_BOUNDS)
        atomic_fetch_add_explicit (&self->bucket[b], n, memory_order_relaxed);
    atomic_fetch_add_explicit (&self->fine[s_fine_index (seconds * 1e6)], n,
                               memory_order_relaxed);
    atomic_fetch_add_explicit (&self->sum_ns, n * (uint64_t) (seconds * 1e9),
                               memory_order_relaxed);
    atomic_fetch_add_explicit (&self->count, n, memory_order_relaxed);
}

uint64_t
ef_histogram_count (const ef_histogram_t *self)
{
    return self ? atomic_load ((atomic_uint_least64_t *) &self->count) : 0;
}

double
ef_histogram_sum (const ef_histogram_t *self)
{
    return self ? (double) atomic_load ((atomic_uint_least64_t *) &self->sum_ns)
                      / 1e9
                : 0;
}

double
ef_histogram_quantile (const ef_histogram_t *self, double q)
{
    if (!self)
        return 0;
    uint64_t fine[S_FINE], total = 0;
    for (size_t i = 0; i < S_FINE; i++) {
        fine[i] = atomic_load ((atomic_uint_least64_t *) &self->fine[i]);
        total += fine[i];
    }
    if (total == 0)
        return 0;
    double rank = ceil (q * (double) total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    size_t i = 0;
    for (; i < S_FINE; i++) {
        seen += fine[i];
        if ((double) seen >= rank)
            break;
    }
    if (i >= S_FINE)
        i = S_FINE - 1;
    return exp2 ((double) i / S_FINE_STEPS) / 1e6;
}

int64_t
ef_metrics_gauge_sum (const char *name)
{
    int64_t sum = 0;
    pthread_mutex_lock (&s_lock);
    for (size_t i = 0; i < s_n_series; i++)
        if (s_series[i]->type == S_GAUGE
            && strcmp (s_series[i]->name, name) == 0)
            sum += ef_gauge_value (s_series[i]->metric);
    pthread_mutex_unlock (&s_lock);
    return sum;
}

bool
ef_metrics_exists (const char *name)
{
    bool found = false;
    pthread_mutex_lock (&s_lock);
    for (size_t i = 0; i < s_n_series && !found; i++)
        found = strcmp (s_series[i]->name, name) == 0;
    pthread_mutex_unlock (&s_lock);
    return found;
}

void
ef_metrics_reset (void)
{
    pthread_mutex_lock (&s_lock);
    for (size_t i = 0; i < s_n_series; i++) {
        s_series_t *s = s_series[i];
        if (s->type == S_COUNTER || s->type == S_SECONDS)
            atomic_store (&((ef_counter_t *) s->metric)->value, 0);
        else if (s->type == S_GAUGE)
            atomic_store (&((ef_gauge_t *) s->metric)->value, 0);
        else {
            ef_histogram_t *h = s->metric;
            atomic_store (&h->count, 0);
            atomic_store (&h->sum_ns, 0);
            for (size_t b = 0; b < S_BOUNDS; b++)
                atomic_store (&h->bucket[b], 0);
            for (size_t b = 0; b < S_FINE; b++)
                atomic_store (&h->fine[b], 0);
        }
    }
    pthread_mutex_unlock (&s_lock);
}

/* --- process ------------------------------------------------------------ */

/* A "Name:  N kB" line of /proc/self/status, in bytes; 0 when missing. */
static uint64_t
s_status_kb (const char *field)
{
    FILE *f = fopen ("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t flen = strlen (field);
    uint64_t kb = 0;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, field, flen) == 0 && line[flen] == ':') {
            kb = strtoull (line + flen + 1, NULL, 10);
            break;
        }
    fclose (f);
    return kb * 1024;
}

uint64_t
ef_process_rss_bytes (void)
{
    return s_status_kb ("VmRSS");
}

uint64_t
ef_process_peak_rss_bytes (void)
{
    return s_status_kb ("VmHWM");
}

double
ef_process_cpu_seconds (void)
{
    struct rusage ru;
    if (getrusage (RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
           + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

/* --- rendering ---------------------------------------------------------- */

/* Appends {labels,extra} (the series' labels are escaped already);
   nothing when there are neither. */
static void
s_label (ef_buf_t *t, const char *labels, const char *extra)
{
    if (!labels && !extra)
        return;
    ef_buf_printf (t, "{%s%s%s}", labels ? labels : "",
                   labels && extra ? "," : "", extra ? extra : "");
}

/* Appends HELP text with backslash and newline escaped. */
static void
s_help (ef_buf_t *t, const char *help)
{
    for (const char *p = help; *p; p++)
        if (*p == '\\')
            ef_buf_printf (t, "\\\\");
        else if (*p == '\n')
            ef_buf_printf (t, "\\n");
        else
            ef_buf_printf (t, "%c", *p);
}

/* Writes one series' samples. */
static void
s_render_series (ef_buf_t *t, const s_series_t *s)
{
    if (s->type != S_HISTOGRAM) {
        ef_buf_printf (t, "%s", s->name);
        s_label (t, s->labels, NULL);
        if (s->type == S_SECONDS)
            ef_buf_printf (t, " %.6f\n",
                           (double) ef_counter_value (s->metric) / 1e9);
        else if (s->type == S_COUNTER)
            ef_buf_printf (t, " %llu\n",
                           (unsigned long long) ef_counter_value (s->metric));
        else
            ef_buf_printf (t, " %lld\n",
                           (long long) ef_gauge_value (s->metric));
        return;
    }
    const ef_histogram_t *h = s->metric;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < S_BOUNDS; b++) {
        cumulative += atomic_load ((atomic_uint_least64_t *) &h->bucket[b]);
        char le[48];
        snprintf (le, sizeof le, "le=\"%g\"", s_bounds[b]);
        ef_buf_printf (t, "%s_bucket", s->name);
        s_label (t, s->labels, le);
        ef_buf_printf (t, " %llu\n", (unsigned long long) cumulative);
    }
    /* count last, so +Inf is never below a finite bucket read earlier */
    uint64_t count = ef_histogram_count (h);
    if (count < cumulative)
        count = cumulative;
    ef_buf_printf (t, "%s_bucket", s->name);
    s_label (t, s->labels, "le=\"+Inf\"");
    ef_buf_printf (t, " %llu\n%s_sum", (unsigned long long) count, s->name);
    s_label (t, s->labels, NULL);
    ef_buf_printf (t, " %.9f\n%s_count", ef_histogram_sum (h), s->name);
    s_label (t, s->labels, NULL);
    ef_buf_printf (t, " %llu\n", (unsigned long long) count);
}

/* qsort order of series indices: by name, then by creation. Called under
   the lock. */
static int
s_by_name (const void *a, const void *b)
{
    size_t i = *(const size_t *) a, j = *(const size_t *) b;
    int c = strcmp (s_series[i]->name, s_series[j]->name);
    return c ? c : (i > j) - (i < j);
}

char *
ef_metrics_render (size_t *len)
{
    ef_buf_t t = {0};
    pthread_mutex_lock (&s_lock);
    /* Series of one name are grouped under one HELP/TYPE header: sorted
       by name (then creation), which stays fast with thousands of
       series (per-job ones). */
    size_t *order = malloc ((s_n_series ? s_n_series : 1) * sizeof *order);
    if (!order)
        t.failed = true;
    for (size_t i = 0; i < s_n_series && order; i++)
        order[i] = i;
    if (order)
        qsort (order, s_n_series, sizeof *order, s_by_name);
    for (size_t k = 0; k < s_n_series && order; k++) {
        const s_series_t *s = s_series[order[k]];
        if (k == 0 || strcmp (s_series[order[k - 1]]->name, s->name) != 0) {
            static const char *types[] = {"counter", "gauge", "histogram",
                                          "counter"};
            ef_buf_printf (&t, "# HELP %s ", s->name);
            s_help (&t, s->help);
            ef_buf_printf (&t, "\n# TYPE %s %s\n", s->name, types[s->type]);
        }
        s_render_series (&t, s);
    }
    pthread_mutex_unlock (&s_lock);
    free (order);
    ef_buf_printf (
        &t,
        "# HELP embedflow_process_resident_memory_bytes Resident set "
        "size of the embedflow process.\n"
        "# TYPE embedflow_process_resident_memory_bytes gauge\n"
        "embedflow_process_resident_memory_bytes %llu\n"
        "# HELP embedflow_process_cpu_seconds_total User and system CPU "
        "time of the embedflow process.\n"
        "# TYPE embedflow_process_cpu_seconds_total counter\n"
        "embedflow_process_cpu_seconds_total %.3f\n",
        (unsigned long long) ef_process_rss_bytes (),
        ef_process_cpu_seconds ());
    return ef_buf_take (&t, len);
}

/* --- per actor instance --------------------------------------------------- */

static const struct {
    const char *name; /* after embedflow_actor_ */
    const char *help;
} s_actor_metrics[EF_METRIC_ACTOR_COUNT] = {
    {"messages_in_total", "Messages read from the instance's input ports."},
    {"messages_out_total", "Messages sent on the instance's output ports."},
    {"bytes_in_total", "Bytes of the messages read."},
    {"bytes_out_total", "Bytes of the messages sent."},
    {"rows_in_total", "Rows the instance took in."},
    {"rows_out_total", "Rows the instance passed on or wrote."},
    {"batches_total", "Batches the instance made or wrote."},
    {"errors_total", "Failures the instance met."},
    {"retries_total", "Operations the instance retried."},
    {"dead_lettered_total", "Rows sent to or stored in the dead-letter queue."},
    {"reconnects_total", "Database reconnections."},
    {"in_flight_rows", "Rows accepted and not yet settled."},
    {"listening", "1 while the instance accepts input from outside."},
};

void *
ef_metrics_actor_series (const char *actor, ef_actor_metric_t metric)
{
    assert (metric >= 0 && metric < EF_METRIC_ACTOR_COUNT);
    char name[96];
    snprintf (name, sizeof name, "embedflow_actor_%s",
              s_actor_metrics[metric].name);
    if (metric == EF_METRIC_IN_FLIGHT || metric == EF_METRIC_LISTENING)
        return ef_metrics_gauge (name, s_actor_metrics[metric].help, actor);
    return ef_metrics_counter (name, s_actor_metrics[metric].help, actor);
}

/* Each actor instance runs on its own thread: a thread-local cache of
   its series makes an update a short compare and an atomic add. */
static _Thread_local char t_actor[80];
static _Thread_local void *t_series[EF_METRIC_ACTOR_COUNT];

/* The series of metric for the instance named actor. */
static void *
s_actor_series (const char *actor, ef_actor_metric_t metric)
{
    if (strncmp (t_actor, actor, sizeof t_actor) != 0) {
        memset (t_series, 0, sizeof t_series);
        snprintf (t_actor, sizeof t_actor, "%s", actor);
    }
    if (!t_series[metric])
        t_series[metric] = ef_metrics_actor_series (actor, metric);
    return t_series[metric];
}

void
ef_actor_count (ef_actor_t *self, ef_actor_metric_t metric, int64_t n)
{
    void *series = s_actor_series (ef_actor_name (self), metric);
    if (metric == EF_METRIC_IN_FLIGHT || metric == EF_METRIC_LISTENING)
        ef_gauge_add (series, n);
    else if (n > 0)
        ef_counter_add (series, (uint64_t) n);
}

void
ef_actor_count_here (ef_actor_metric_t metric, int64_t n)
{
    if (t_actor[0] && n > 0 && metric != EF_METRIC_IN_FLIGHT
        && metric != EF_METRIC_LISTENING)
        ef_counter_add (s_actor_series (t_actor, metric), (uint64_t) n);
}

void
ef_actor_metrics_init (ef_actor_t *self)
{
    for (int m = 0; m < EF_METRIC_ACTOR_COUNT; m++)
        s_actor_series (ef_actor_name (self), (ef_actor_metric_t) m);
}

void
ef_actor_count_message (ef_actor_t *self, bool in, zmsg_t *msg)
{
    ef_actor_count (self, in ? EF_METRIC_MESSAGES_IN : EF_METRIC_MESSAGES_OUT,
                    1);
    ef_actor_count (self, in ? EF_METRIC_BYTES_IN : EF_METRIC_BYTES_OUT,
                    (int64_t) zmsg_content_size (msg));
}

void
ef_actor_gauge (ef_actor_t *self, ef_actor_metric_t metric, int64_t value)
{
    if (metric == EF_METRIC_IN_FLIGHT || metric == EF_METRIC_LISTENING)
        ef_gauge_set (s_actor_series (ef_actor_name (self), metric), value);
}
